//! The 512-byte POSIX ustar header, byte for byte (SPEC §1). Pure: no I/O.

use crate::entry::{Entry, Kind};

/// Size of a tar block and of a header.
pub const BLOCK: u64 = 512;

/// Largest value an 11-digit octal field holds (8 GiB − 1 for sizes).
const OCTAL11_MAX: u64 = (1 << 33) - 1;

/// A complete ustar header.
#[derive(Clone, PartialEq, Eq)]
pub struct Header([u8; 512]);

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("name", &String::from_utf8_lossy(self.field(0, 100)))
            .finish()
    }
}

/// Why a path cannot be written into a ustar header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    TooLong(usize),
    ComponentTooLong(usize),
    NoSplit,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathProblem::TooLong(n) => write!(f, "header path is {n} bytes (ustar limit 255)"),
            PathProblem::ComponentTooLong(n) => {
                write!(f, "a path component is {n} bytes (limit 100)")
            }
            PathProblem::NoSplit => f.write_str(
                "path cannot be split into a ustar prefix (<= 155 bytes) and name (<= 100 bytes)",
            ),
        }
    }
}

/// The path written in the header: directories get a trailing `/`.
pub fn header_path(arc_path: &[u8], kind: Kind) -> Vec<u8> {
    let mut p = arc_path.to_vec();
    if kind == Kind::Dir && !p.ends_with(b"/") {
        p.push(b'/');
    }
    p
}

/// Splits a header path into `(name, prefix)`: the whole path when it fits in 100 bytes,
/// otherwise at the right-most `/` that leaves a prefix ≤ 155 and a non-empty name ≤ 100.
pub fn split_path(path: &[u8]) -> Result<(&[u8], &[u8]), PathProblem> {
    if path.len() > 255 {
        return Err(PathProblem::TooLong(path.len()));
    }
    if let Some(c) = path.split(|&b| b == b'/').find(|c| c.len() > 100) {
        return Err(PathProblem::ComponentTooLong(c.len()));
    }
    if path.len() <= 100 {
        return Ok((path, &[]));
    }
    path.iter()
        .enumerate()
        .rev()
        .filter(|&(_, &b)| b == b'/')
        .map(|(i, _)| (&path[i + 1..], &path[..i]))
        .find(|(name, prefix)| !name.is_empty() && name.len() <= 100 && prefix.len() <= 155)
        .ok_or(PathProblem::NoSplit)
}

impl Header {
    /// Builds the header of `entry`. The entry must have passed [`split_path`] (recording
    /// guarantees it); a path that does not split is a corrupted catalog.
    pub fn for_entry(entry: &Entry) -> Result<Header, PathProblem> {
        let mut h = Header([0; 512]);
        let path = header_path(&entry.arc_path, entry.kind);
        let (name, prefix) = split_path(&path)?;
        h.set_bytes(0, 100, name);
        h.set_bytes(345, 155, prefix);
        h.set_octal8(100, entry.mode as u64);
        h.set_octal8(108, entry.uid);
        h.set_octal8(116, entry.gid);
        h.set_number(124, entry.size as i128);
        h.set_number(136, entry.mtime as i128);
        h.0[156] = entry.kind.typeflag();
        if entry.kind == Kind::Symlink {
            h.set_bytes(157, 100, &entry.link_target);
        }
        h.0[257..263].copy_from_slice(b"ustar\0");
        h.0[263..265].copy_from_slice(b"00");
        h.set_bytes(265, 32, &entry.uname);
        h.set_bytes(297, 32, &entry.gname);
        h.set_checksum();
        Ok(h)
    }

    pub fn as_bytes(&self) -> &[u8; 512] {
        &self.0
    }

    fn field(&self, start: usize, len: usize) -> &[u8] {
        let f = &self.0[start..start + len];
        let end = f.iter().position(|&b| b == 0).unwrap_or(len);
        &f[..end]
    }

    fn set_bytes(&mut self, start: usize, width: usize, value: &[u8]) {
        let n = value.len().min(width);
        self.0[start..start + n].copy_from_slice(&value[..n]);
    }

    /// 7 octal digits and a NUL. Values that do not fit are rejected by recording.
    fn set_octal8(&mut self, start: usize, value: u64) {
        self.0[start..start + 8].copy_from_slice(&octal::<8>(value));
    }

    /// A 12-byte numeric field (size, mtime): octal when it fits, else GNU base-256.
    fn set_number(&mut self, start: usize, value: i128) {
        let field = if (0..=OCTAL11_MAX as i128).contains(&value) {
            octal::<12>(value as u64)
        } else {
            base256_12(value)
        };
        self.0[start..start + 12].copy_from_slice(&field);
    }

    fn set_checksum(&mut self) {
        self.0[148..156].fill(b' ');
        let sum: u64 = self.0.iter().map(|&b| b as u64).sum();
        // 6 octal digits + NUL, then a space.
        self.0[148..155].copy_from_slice(&octal::<7>(sum));
    }

    /// Reads the size field back (octal or base-256); for tests and `locate`.
    pub fn size(&self) -> u64 {
        let f = &self.0[124..136];
        if f[0] & 0x80 != 0 {
            f[1..].iter().fold(0u64, |acc, &b| (acc << 8) | b as u64)
        } else {
            parse_octal(f)
        }
    }

    /// Reads the checksum field back.
    pub fn checksum(&self) -> u64 {
        parse_octal(&self.0[148..156])
    }
}

/// Encodes `value` as `N - 1` zero-padded octal digits followed by NUL.
fn octal<const N: usize>(value: u64) -> [u8; N] {
    let mut out = [0u8; N];
    let mut v = value;
    for digit in out[..N - 1].iter_mut().rev() {
        *digit = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    debug_assert_eq!(v, 0, "value {value} does not fit {} octal digits", N - 1);
    out
}

/// GNU base-256 for a 12-byte field: first byte carries the marker bit, the rest the
/// value big-endian; negative values are two's complement (marker byte 0xff).
fn base256_12(value: i128) -> [u8; 12] {
    let mut out = [0u8; 12];
    let bytes = value.to_be_bytes(); // 16 bytes, two's complement
    out[1..].copy_from_slice(&bytes[5..]);
    out[0] = if value < 0 { 0xff } else { 0x80 };
    out
}

fn parse_octal(f: &[u8]) -> u64 {
    f.iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| (b'0'..=b'7').contains(&b))
        .fold(0u64, |acc, &b| acc * 8 + (b - b'0') as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Ordinal;

    fn entry(arc: &[u8], kind: Kind, size: u64) -> Entry {
        Entry {
            ordinal: Ordinal(0),
            arc_path: arc.to_vec(),
            rel_path: Vec::new(),
            kind,
            size,
            mode: 0o644,
            disk_mode: 0o644,
            uid: 0,
            gid: 0,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            mtime: 1_700_000_000,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 0,
            ctime_sec: 0,
            ctime_nsec: 0,
            link_target: Vec::new(),
            start_offset: 0,
            digest: None,
        }
    }

    #[test]
    fn octal_fields_are_padded_and_nul_terminated() {
        assert_eq!(&octal::<8>(0o644), b"0000644\0");
        assert_eq!(&octal::<12>(0), b"00000000000\0");
        assert_eq!(&octal::<12>(OCTAL11_MAX), b"77777777777\0");
    }

    #[test]
    fn size_switches_to_base256_above_8gib() {
        let h = Header::for_entry(&entry(b"r/a", Kind::File, OCTAL11_MAX)).unwrap();
        assert_eq!(&h.0[124..136], b"77777777777\0");
        assert_eq!(h.size(), OCTAL11_MAX);
        let big = OCTAL11_MAX + 1;
        let h = Header::for_entry(&entry(b"r/a", Kind::File, big)).unwrap();
        assert_eq!(h.0[124], 0x80);
        assert_eq!(&h.0[125..128], &[0, 0, 0]);
        assert_eq!(&h.0[128..136], &big.to_be_bytes());
        assert_eq!(h.size(), big);
    }

    #[test]
    fn negative_mtime_is_twos_complement_base256() {
        let mut e = entry(b"r/a", Kind::File, 0);
        e.mtime = -1;
        let h = Header::for_entry(&e).unwrap();
        assert_eq!(&h.0[136..148], &[0xff; 12]);
        e.mtime = 8i64.pow(11);
        let h = Header::for_entry(&e).unwrap();
        assert_eq!(h.0[136], 0x80);
        assert_eq!(&h.0[140..148], &(8u64.pow(11)).to_be_bytes());
    }

    #[test]
    fn checksum_matches_definition() {
        let h = Header::for_entry(&entry(b"r/a.txt", Kind::File, 5)).unwrap();
        let mut copy = h.0;
        copy[148..156].fill(b' ');
        let sum: u64 = copy.iter().map(|&b| b as u64).sum();
        assert_eq!(h.checksum(), sum);
        assert_eq!(h.0[154], 0);
        assert_eq!(h.0[155], b' ');
    }

    #[test]
    fn directories_get_trailing_slash_and_typeflag() {
        let h = Header::for_entry(&entry(b"root/d", Kind::Dir, 0)).unwrap();
        assert_eq!(h.field(0, 100), b"root/d/");
        assert_eq!(h.0[156], b'5');
        assert_eq!(&h.0[257..265], b"ustar\x0000");
    }

    #[test]
    fn split_uses_rightmost_valid_slash() {
        let a = "a".repeat(60);
        let path = format!("{a}/{a}/{a}");
        let (name, prefix) = split_path(path.as_bytes()).unwrap();
        assert_eq!(name, a.as_bytes());
        assert_eq!(prefix.len(), 121);
        // exactly 100 bytes: no split
        let p100 = "x".repeat(100);
        assert_eq!(
            split_path(p100.as_bytes()).unwrap(),
            (p100.as_bytes(), &b""[..])
        );
    }

    #[test]
    fn split_rejects_impossible_paths() {
        let c101 = "c".repeat(101);
        assert_eq!(
            split_path(format!("r/{c101}").as_bytes()),
            Err(PathProblem::ComponentTooLong(101))
        );
        let long = format!("{}/{}", "p".repeat(156), "n".repeat(10));
        assert_eq!(
            split_path(long.as_bytes()),
            Err(PathProblem::ComponentTooLong(156))
        );
        let c = "c".repeat(100);
        let too_long = format!("{c}/{c}/{c}");
        assert_eq!(
            split_path(too_long.as_bytes()),
            Err(PathProblem::TooLong(302))
        );
        // prefix would be 160 bytes, name fits: no valid split
        let p = format!("{}/{}/{}", "a".repeat(80), "b".repeat(79), "n".repeat(90));
        assert_eq!(split_path(p.as_bytes()), Err(PathProblem::NoSplit));
        // a 100-byte directory leaf: trailing slash makes the name 101 bytes
        let d = header_path(format!("r/{c}").as_bytes(), Kind::Dir);
        assert_eq!(split_path(&d), Err(PathProblem::NoSplit));
    }

    #[test]
    fn symlink_target_in_linkname() {
        let mut e = entry(b"r/l", Kind::Symlink, 0);
        e.link_target = b"../target".to_vec();
        let h = Header::for_entry(&e).unwrap();
        assert_eq!(h.field(157, 100), b"../target");
        assert_eq!(h.0[156], b'2');
    }
}
