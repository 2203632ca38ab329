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

/// Why a header path does not fit a ustar header (it then needs a PAX `path` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// The header path is this many bytes, over ustar's 255.
    TooLong(usize),
    /// A component (the last one, or any for the Python rule) is this many bytes, over
    /// the 100 that `name` holds.
    ComponentTooLong(usize),
    /// No `/` leaves a prefix of at most 155 bytes and a non-empty name of at most 100.
    NoSplit,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathProblem::TooLong(n) => write!(f, "header path is {n} bytes (ustar limit 255)"),
            PathProblem::ComponentTooLong(n) => {
                write!(f, "a path component is {n} bytes (ustar limit 100)")
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

/// Splits a header path into `(name, prefix)` (SPEC §1): the whole path when it fits in
/// 100 bytes, otherwise at the right-most `/` that leaves a prefix ≤ 155 and a non-empty
/// name ≤ 100. A path over 255 bytes does not fit, whatever its split (the Python
/// tartape's limit: 155 + `/` + 100 would allow 256).
pub fn split_path(path: &[u8]) -> Result<(&[u8], &[u8]), PathProblem> {
    if path.len() > 255 {
        return Err(PathProblem::TooLong(path.len()));
    }
    if path.len() <= 100 {
        return Ok((path, &[]));
    }
    let split = path
        .iter()
        .enumerate()
        .rev()
        .filter(|&(_, &b)| b == b'/')
        .map(|(i, _)| (&path[i + 1..], &path[..i]))
        .find(|(name, prefix)| !name.is_empty() && name.len() <= 100 && prefix.len() <= 155);
    split.ok_or_else(|| {
        let leaf = path.strip_suffix(b"/").unwrap_or(path);
        let leaf = leaf.rsplit(|&b| b == b'/').next().unwrap_or(leaf);
        if leaf.len() > 100 {
            PathProblem::ComponentTooLong(leaf.len())
        } else {
            PathProblem::NoSplit
        }
    })
}

/// Why the Python tartape refuses a header path, which `record --strict-ustar` reports:
/// over 255 bytes, a component over 100 bytes (even one a ustar prefix could hold), or no
/// ustar split. Every entry this refuses is long, or lies below a directory that is.
pub fn python_path_problem(path: &[u8]) -> Option<PathProblem> {
    if path.len() > 255 {
        return Some(PathProblem::TooLong(path.len()));
    }
    if let Some(c) = path.split(|&b| b == b'/').find(|c| c.len() > 100) {
        return Some(PathProblem::ComponentTooLong(c.len()));
    }
    split_path(path).err()
}

/// Whether the header path of an entry splits into ustar's name and prefix, without
/// allocating (this runs for every entry recorded and every row read).
pub fn fits_ustar(arc_path: &[u8], kind: Kind) -> bool {
    if kind != Kind::Dir || arc_path.ends_with(b"/") {
        return split_path(arc_path).is_ok();
    }
    let mut buf = [0u8; 256];
    match buf.get_mut(..arc_path.len() + 1) {
        Some(with_slash) => {
            with_slash[..arc_path.len()].copy_from_slice(arc_path);
            with_slash[arc_path.len()] = b'/';
            split_path(with_slash).is_ok()
        }
        // Over 255 bytes with its slash: longer than any ustar path.
        None => false,
    }
}

/// Name of the `x` header of a long entry.
pub const PAX_NAME: &[u8] = b"././@PaxHeader";

/// The records of the `x` header that precedes a long entry (SPEC §1), in their order:
/// `hdrcharset=BINARY` when a value is not UTF-8, `linkpath` when the target is over 100
/// bytes, `path` when the header path does not fit ustar. Empty for other entries.
pub fn pax_records(arc_path: &[u8], kind: Kind, link_target: &[u8]) -> Vec<u8> {
    let path = (!fits_ustar(arc_path, kind)).then(|| header_path(arc_path, kind));
    let target = (link_target.len() > 100).then_some(link_target);
    if path.is_none() && target.is_none() {
        return Vec::new();
    }
    let binary = path
        .iter()
        .map(Vec::as_slice)
        .chain(target)
        .any(|v| std::str::from_utf8(v).is_err());
    let mut out = Vec::new();
    if binary {
        push_record(&mut out, b"hdrcharset", b"BINARY");
    }
    if let Some(t) = target {
        push_record(&mut out, b"linkpath", t);
    }
    if let Some(p) = &path {
        push_record(&mut out, b"path", p);
    }
    out
}

/// Appends `"<len> <key>=<value>\n"`, where `len` counts the whole record, its own
/// digits included.
fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // " key=value\n"
    let rest = key.len() + value.len() + 3;
    let mut len = rest;
    while len != rest + digits(len) {
        len = rest + digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// Every synthesised byte before an entry's content: its ustar header, preceded for a
/// long entry by the `x` header and its records padded to a block.
// The ustar header stays inline: the player builds one head per entry it plays, and a
// million small files must not cost a million allocations; only long entries allocate.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Head {
    /// The ustar header alone: every entry whose path and target fit it.
    Ustar(Header),
    /// `x` header, records, padding, ustar header.
    Pax(Box<[u8]>),
}

impl Head {
    /// The head of `entry`, made from its path and target alone (the catalog checks that
    /// its stored `pax_size` is the length of these records).
    pub fn for_entry(entry: &Entry) -> Head {
        let header = Header::for_entry(entry);
        let records = pax_records(&entry.arc_path, entry.kind, &entry.link_target);
        debug_assert_eq!(records.len() as u64, entry.pax_size, "{entry:?}");
        if records.is_empty() {
            return Head::Ustar(header);
        }
        let mut x = Header([0; 512]);
        x.set_bytes(0, 100, PAX_NAME);
        x.set_octal8(100, 0o644);
        x.set_octal8(108, 0);
        x.set_octal8(116, 0);
        x.set_number(124, records.len() as i128);
        x.set_number(136, entry.mtime as i128);
        x.0[156] = b'x';
        x.set_magic();
        x.set_bytes(265, 32, &entry.uname);
        x.set_bytes(297, 32, &entry.gname);
        x.set_checksum();
        let padded = records.len().next_multiple_of(BLOCK as usize);
        let mut bytes = Vec::with_capacity(2 * BLOCK as usize + padded);
        bytes.extend_from_slice(&x.0);
        bytes.extend_from_slice(&records);
        bytes.resize(BLOCK as usize + padded, 0);
        bytes.extend_from_slice(&header.0);
        Head::Pax(bytes.into_boxed_slice())
    }

    /// The bytes as they appear on the tape, from the entry's start offset.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Head::Ustar(h) => h.as_bytes(),
            Head::Pax(b) => b,
        }
    }

    /// Its length in bytes: 512, or 1,024 + the records padded to 512.
    pub fn byte_len(&self) -> u64 {
        self.as_bytes().len() as u64
    }
}

impl Header {
    /// Builds the ustar header of `entry`. A header path that does not fit ustar is cut to
    /// its first 100 bytes in `name`, a target over 100 bytes to its first 100 (SPEC §1:
    /// the full values are in the `x` header before it).
    pub fn for_entry(entry: &Entry) -> Header {
        let mut h = Header([0; 512]);
        let path = header_path(&entry.arc_path, entry.kind);
        let (name, prefix) = split_path(&path).unwrap_or((&path, &[]));
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
        h.set_magic();
        h.set_bytes(265, 32, &entry.uname);
        h.set_bytes(297, 32, &entry.gname);
        h.set_checksum();
        h
    }

    fn set_magic(&mut self) {
        self.0[257..263].copy_from_slice(b"ustar\0");
        self.0[263..265].copy_from_slice(b"00");
    }

    /// The 512 bytes as they appear on the tape, checksum included.
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
            pax_size: 0,
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
        let h = Header::for_entry(&entry(b"r/a", Kind::File, OCTAL11_MAX));
        assert_eq!(&h.0[124..136], b"77777777777\0");
        assert_eq!(h.size(), OCTAL11_MAX);
        let big = OCTAL11_MAX + 1;
        let h = Header::for_entry(&entry(b"r/a", Kind::File, big));
        assert_eq!(h.0[124], 0x80);
        assert_eq!(&h.0[125..128], &[0, 0, 0]);
        assert_eq!(&h.0[128..136], &big.to_be_bytes());
        assert_eq!(h.size(), big);
    }

    #[test]
    fn negative_mtime_is_twos_complement_base256() {
        let mut e = entry(b"r/a", Kind::File, 0);
        e.mtime = -1;
        let h = Header::for_entry(&e);
        assert_eq!(&h.0[136..148], &[0xff; 12]);
        e.mtime = 8i64.pow(11);
        let h = Header::for_entry(&e);
        assert_eq!(h.0[136], 0x80);
        assert_eq!(&h.0[140..148], &(8u64.pow(11)).to_be_bytes());
    }

    #[test]
    fn checksum_matches_definition() {
        let h = Header::for_entry(&entry(b"r/a.txt", Kind::File, 5));
        let mut copy = h.0;
        copy[148..156].fill(b' ');
        let sum: u64 = copy.iter().map(|&b| b as u64).sum();
        assert_eq!(h.checksum(), sum);
        assert_eq!(h.0[154], 0);
        assert_eq!(h.0[155], b' ');
    }

    #[test]
    fn directories_get_trailing_slash_and_typeflag() {
        let h = Header::for_entry(&entry(b"root/d", Kind::Dir, 0));
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
    fn split_refuses_what_does_not_fit() {
        let c101 = "c".repeat(101);
        assert_eq!(
            split_path(format!("r/{c101}").as_bytes()),
            Err(PathProblem::ComponentTooLong(101))
        );
        // A long component in the prefix is ustar: only the name is limited to 100. (The
        // Python tartape refuses it all the same.)
        let p = format!("r/{c101}/f");
        assert_eq!(
            split_path(p.as_bytes()),
            Ok((&b"f"[..], format!("r/{c101}").as_bytes()))
        );
        assert_eq!(
            python_path_problem(p.as_bytes()),
            Some(PathProblem::ComponentTooLong(101))
        );
        assert_eq!(python_path_problem(b"r/a/b"), None);
        // The edges: 100-byte components and 255-byte paths are fine.
        let c100 = "c".repeat(100);
        assert_eq!(python_path_problem(format!("r/{c100}/f").as_bytes()), None);
        let p255 = format!("{c100}/{}/{}", "b".repeat(53), "n".repeat(100));
        assert_eq!(p255.len(), 255);
        assert_eq!(python_path_problem(p255.as_bytes()), None);
        let p256 = format!("{}/{}", "p".repeat(155), "n".repeat(100));
        assert_eq!(
            python_path_problem(p256.as_bytes()),
            Some(PathProblem::TooLong(256))
        );
        let long = format!("{}/{}", "p".repeat(156), "n".repeat(10));
        assert_eq!(split_path(long.as_bytes()), Err(PathProblem::NoSplit));
        let c = "c".repeat(100);
        let too_long = format!("{c}/{c}/{c}");
        assert_eq!(
            split_path(too_long.as_bytes()),
            Err(PathProblem::TooLong(302))
        );
        // 155 + `/` + 100 = 256 bytes splits, but is over the 255 the Python tartape takes.
        let p256 = format!("{}/{}", "p".repeat(155), "n".repeat(100));
        assert_eq!(split_path(p256.as_bytes()), Err(PathProblem::TooLong(256)));
        let p255 = format!("{}/{}", "p".repeat(154), "n".repeat(100));
        assert!(split_path(p255.as_bytes()).is_ok());
        // prefix would be 160 bytes, name fits: no valid split
        let p = format!("{}/{}/{}", "a".repeat(80), "b".repeat(79), "n".repeat(90));
        assert_eq!(split_path(p.as_bytes()), Err(PathProblem::NoSplit));
        // a 100-byte directory leaf: trailing slash makes the name 101 bytes
        let d = header_path(format!("r/{c}").as_bytes(), Kind::Dir);
        assert_eq!(split_path(&d), Err(PathProblem::NoSplit));
    }

    #[test]
    fn fits_ustar_is_the_split_of_the_header_path() {
        let mut paths: Vec<Vec<u8>> = Vec::new();
        for len in [
            1usize, 99, 100, 101, 154, 155, 156, 200, 254, 255, 256, 257, 300,
        ] {
            paths.push(vec![b'a'; len]);
            // A slash every 50 bytes, and one just before the end.
            paths.push(
                (0..len)
                    .map(|i| if i % 50 == 49 { b'/' } else { b'a' })
                    .collect(),
            );
            let mut late = vec![b'a'; len];
            if len > 2 {
                late[len - 2] = b'/';
            }
            paths.push(late);
        }
        paths.push(b"r/dir/".to_vec());
        for p in &paths {
            for kind in [Kind::File, Kind::Dir, Kind::Symlink] {
                assert_eq!(
                    fits_ustar(p, kind),
                    split_path(&crate::header::header_path(p, kind)).is_ok(),
                    "{} bytes, {kind}",
                    p.len()
                );
            }
        }
    }

    /// Parses `"<len> <key>=<value>\n"` records back, checking every length.
    fn parse_records(mut r: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !r.is_empty() {
            let sp = r.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&r[..sp]).unwrap().parse().unwrap();
            let rec = &r[..len];
            assert_eq!(rec[len - 1], b'\n');
            let eq = rec.iter().position(|&b| b == b'=').unwrap();
            out.push((
                String::from_utf8(rec[sp + 1..eq].to_vec()).unwrap(),
                rec[eq + 1..len - 1].to_vec(),
            ));
            r = &r[len..];
        }
        out
    }

    #[test]
    fn record_lengths_count_their_own_digits() {
        // Around the points where the length gains a digit.
        for value_len in [
            0usize, 1, 2, 3, 4, 5, 6, 84, 85, 86, 87, 88, 989, 990, 991, 992, 9988, 9989, 9990,
        ] {
            let mut out = Vec::new();
            let value = vec![b'v'; value_len];
            push_record(&mut out, b"path", &value);
            let parsed = parse_records(&out);
            assert_eq!(parsed, vec![("path".to_string(), value)], "{value_len}");
        }
        let mut out = Vec::new();
        push_record(&mut out, b"path", b"a");
        assert_eq!(out, b"9 path=a\n");
        out.clear();
        // " path=" + 92 + "\n" = 99 bytes: with 2 digits 101, which has 3: 102.
        push_record(&mut out, b"path", &[b'x'; 92]);
        assert!(out.starts_with(b"102 path="), "{:?}", &out[..4]);
        assert_eq!(out.len(), 102);
    }

    #[test]
    fn only_long_entries_have_records_in_spec_order() {
        let short = entry(b"r/a", Kind::File, 3);
        assert!(pax_records(&short.arc_path, short.kind, &short.link_target).is_empty());
        assert_eq!(
            Head::for_entry(&short).as_bytes(),
            Header::for_entry(&short).0
        );
        let long_path = format!("r/{}", "n".repeat(300)).into_bytes();
        let target = vec![b't'; 101];
        let r = pax_records(&long_path, Kind::Symlink, &target);
        assert_eq!(
            parse_records(&r),
            vec![
                ("linkpath".to_string(), target.clone()),
                ("path".to_string(), long_path.clone())
            ]
        );
        // A directory's path record has its trailing slash.
        let r = pax_records(&long_path, Kind::Dir, b"");
        let mut with_slash = long_path.clone();
        with_slash.push(b'/');
        assert_eq!(parse_records(&r), vec![("path".to_string(), with_slash)]);
        // Not UTF-8: hdrcharset first; a target of exactly 100 bytes needs no record.
        let mut binary = format!("r/{}", "n".repeat(200)).into_bytes();
        binary.extend_from_slice(b"/\xff\xfe");
        let r = pax_records(&binary, Kind::Symlink, &[b't'; 100]);
        assert_eq!(
            parse_records(&r),
            vec![
                ("hdrcharset".to_string(), b"BINARY".to_vec()),
                ("path".to_string(), binary.clone())
            ]
        );
        // A non-UTF-8 path that fits: no records at all.
        assert!(pax_records(b"r/\xff", Kind::File, b"").is_empty());
    }

    #[test]
    fn the_x_header_and_the_fallback_header_byte_by_byte() {
        let mut e = entry(&[b"r/".as_slice(), &[b'n'; 300]].concat(), Kind::File, 5);
        e.mtime = 1_234_567_890;
        let records = pax_records(&e.arc_path, e.kind, &e.link_target);
        e.pax_size = records.len() as u64;
        let head = Head::for_entry(&e);
        let bytes = head.as_bytes();
        assert_eq!(head.byte_len(), 512 + 512 + 512);
        let x = Header(bytes[..512].try_into().unwrap());
        assert_eq!(x.field(0, 100), b"././@PaxHeader");
        assert_eq!(&bytes[100..108], b"0000644\0");
        assert_eq!(&bytes[108..124], b"0000000\x000000000\0");
        assert_eq!(x.size(), records.len() as u64);
        assert_eq!(&bytes[136..148], b"11145401322\0");
        assert_eq!(bytes[156], b'x');
        assert!(bytes[157..257].iter().all(|&b| b == 0));
        assert_eq!(&bytes[257..265], b"ustar\x0000");
        assert_eq!(x.field(265, 32), b"root");
        assert_eq!(x.field(297, 32), b"root");
        assert!(bytes[329..512].iter().all(|&b| b == 0));
        let mut copy = x.0;
        copy[148..156].fill(b' ');
        assert_eq!(x.checksum(), copy.iter().map(|&b| b as u64).sum::<u64>());
        assert_eq!(&bytes[512..512 + records.len()], records.as_slice());
        assert!(bytes[512 + records.len()..1024].iter().all(|&b| b == 0));
        // The entry's own header: the path's first 100 bytes, no prefix.
        let h = Header(bytes[1024..].try_into().unwrap());
        assert_eq!(h.field(0, 100), &e.arc_path[..100]);
        assert!(bytes[1024 + 345..1024 + 500].iter().all(|&b| b == 0));
        assert_eq!(h.size(), 5);
        assert_eq!(h.0[156], b'0');
        // With owners kept: the x header takes the entry's names, but owner ids 0.
        let mut owned = e.clone();
        (owned.uid, owned.gid) = (1000, 1001);
        (owned.uname, owned.gname) = (b"alice".to_vec(), b"staff".to_vec());
        let head = Head::for_entry(&owned);
        let x = Header(head.as_bytes()[..512].try_into().unwrap());
        assert_eq!(&x.0[108..124], b"0000000\x000000000\0");
        assert_eq!(x.field(265, 32), b"alice");
        assert_eq!(x.field(297, 32), b"staff");
        let h = Header(head.as_bytes()[1024..].try_into().unwrap());
        assert_eq!(&h.0[108..124], b"0001750\x000001751\0");
        // A long target: the first 100 bytes in linkname, the path as usual.
        let mut l = entry(b"r/l", Kind::Symlink, 0);
        l.link_target = vec![b't'; 900];
        l.pax_size = pax_records(&l.arc_path, l.kind, &l.link_target).len() as u64;
        let head = Head::for_entry(&l);
        assert_eq!(head.byte_len(), 512 + 1024 + 512);
        let h = Header(head.as_bytes()[1536..].try_into().unwrap());
        assert_eq!(h.field(0, 100), b"r/l");
        assert_eq!(h.field(157, 100), &[b't'; 100]);
    }

    #[test]
    fn symlink_target_in_linkname() {
        let mut e = entry(b"r/l", Kind::Symlink, 0);
        e.link_target = b"../target".to_vec();
        let h = Header::for_entry(&e);
        assert_eq!(h.field(157, 100), b"../target");
        assert_eq!(h.0[156], b'2');
    }
}
