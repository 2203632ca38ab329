//! What the catalog knows about one recorded object.

use std::fmt;

/// Position of an entry in tape order (0 = the root). Not an inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ordinal(pub u64);

/// The kinds of objects a tape records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (typeflag `0`); hard links are recorded as independent files.
    File,
    /// A directory (typeflag `5`), written with a trailing `/` in its header path.
    Dir,
    /// A symbolic link (typeflag `2`), never followed; its target is in the header.
    Symlink,
}

impl Kind {
    /// The stable code stored in the catalog.
    pub fn code(self) -> i64 {
        match self {
            Kind::File => 0,
            Kind::Dir => 5,
            Kind::Symlink => 2,
        }
    }

    /// Inverse of [`Kind::code`].
    pub fn from_code(code: i64) -> Option<Kind> {
        match code {
            0 => Some(Kind::File),
            5 => Some(Kind::Dir),
            2 => Some(Kind::Symlink),
            _ => None,
        }
    }

    /// The ustar typeflag byte.
    pub fn typeflag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Dir => b'5',
            Kind::Symlink => b'2',
        }
    }

    /// The word listings and JSON use: `file`, `dir`, `symlink`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One recorded object: everything needed to synthesise its header and to check that the
/// source still matches the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in tape order; the root is 0.
    pub ordinal: Ordinal,
    /// `<root name>/<relative path>`, raw bytes.
    pub arc_path: Vec<u8>,
    /// Path relative to the source root (empty for the root itself), raw bytes.
    pub rel_path: Vec<u8>,
    /// File, directory or symlink: decides the typeflag and whether content follows.
    pub kind: Kind,
    /// Content size in bytes (0 for directories and symlinks).
    pub size: u64,
    /// Mode written in the header (normalised when anonymised).
    pub mode: u32,
    /// Raw permission bits found on disk (`st_mode & 0o7777`), for integrity checks.
    pub disk_mode: u32,
    /// Owner id written in the header: 0 when anonymised, else the real one (which the
    /// integrity check then compares too).
    pub uid: u64,
    /// Group id written in the header, as `uid`.
    pub gid: u64,
    /// Owner name written in the header (at most 31 bytes): `root` when anonymised.
    pub uname: Vec<u8>,
    /// Group name written in the header, as `uname`.
    pub gname: Vec<u8>,
    /// Whole seconds written in the header (Python's `int(st_mtime)`).
    pub mtime: i64,
    /// Exact modification time for integrity: seconds and nanoseconds from lstat.
    pub mtime_sec: i64,
    /// Nanoseconds part of the exact modification time (see `mtime_sec`).
    pub mtime_nsec: i64,
    /// Exact inode change time of a regular file (zero for other kinds). Users cannot set
    /// it, so a write whose mtime was put back still shows here.
    pub ctime_sec: i64,
    /// Nanoseconds part of the exact inode change time (see `ctime_sec`).
    pub ctime_nsec: i64,
    /// Symlink target, raw bytes (empty for other kinds).
    pub link_target: Vec<u8>,
    /// Length of the records of the PAX `x` header before the entry (SPEC §1 "Long
    /// entries"); 0 when its path and target fit ustar and it has none.
    pub pax_size: u64,
    /// Offset of the entry's header in the tape.
    pub start_offset: u64,
    /// Optional content digest (lower-case hex).
    pub digest: Option<String>,
}

impl Entry {
    /// The arc path for humans (non-UTF-8 bytes replaced).
    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.arc_path).into_owned()
    }

    /// A regular file `r/x` of `size` bytes at `start_offset`, anonymised, for unit tests.
    #[cfg(test)]
    pub(crate) fn sample_file(size: u64, start_offset: u64) -> Entry {
        Entry {
            ordinal: Ordinal(1),
            arc_path: b"r/x".to_vec(),
            rel_path: b"x".to_vec(),
            kind: Kind::File,
            size,
            mode: 0o644,
            disk_mode: 0o644,
            uid: 0,
            gid: 0,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            mtime: 100,
            mtime_sec: 100,
            mtime_nsec: 0,
            ctime_sec: 100,
            ctime_nsec: 0,
            link_target: Vec::new(),
            pax_size: 0,
            start_offset,
            digest: None,
        }
    }
}

/// Header mode of an object (SPEC §1, anonymisation): with anonymisation, 0755 for
/// directories, 0777 for symlinks, 0755 or 0644 for files depending on any execute bit;
/// without, the permission bits as found.
pub fn normalised_mode(kind: Kind, disk_mode: u32, anonymize: bool) -> u32 {
    if !anonymize {
        return disk_mode;
    }
    match kind {
        Kind::Dir => 0o755,
        Kind::Symlink => 0o777,
        Kind::File if disk_mode & 0o111 != 0 => 0o755,
        Kind::File => 0o644,
    }
}

/// Python tartape's whole-second mtime: `int(st.st_mtime)`, where CPython builds the float
/// as `sec + nsec * 1e-9`. Rounding of that double can carry into the next second, and
/// `int()` truncates toward zero; both are kept for byte compatibility.
pub fn python_mtime(sec: i64, nsec: i64) -> i64 {
    let f = sec as f64 + nsec as f64 * 1e-9;
    f.trunc() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_mtime_matches_cpython_rounding() {
        assert_eq!(python_mtime(1_700_000_000, 0), 1_700_000_000);
        assert_eq!(python_mtime(1_700_000_000, 500_000_000), 1_700_000_000);
        // The double nearest 1700000000.999999999 is 1700000001.0.
        assert_eq!(python_mtime(1_700_000_000, 999_999_999), 1_700_000_001);
        assert_eq!(python_mtime(-2, 500_000_000), -1);
    }

    #[test]
    fn anonymised_modes() {
        assert_eq!(normalised_mode(Kind::File, 0o600, true), 0o644);
        assert_eq!(normalised_mode(Kind::File, 0o700, true), 0o755);
        assert_eq!(normalised_mode(Kind::File, 0o601, true), 0o755);
        assert_eq!(normalised_mode(Kind::File, 0o4711, false), 0o4711);
        assert_eq!(normalised_mode(Kind::Dir, 0o700, true), 0o755);
        assert_eq!(normalised_mode(Kind::Symlink, 0o777, true), 0o777);
    }

    #[test]
    fn kind_codes_round_trip() {
        for k in [Kind::File, Kind::Dir, Kind::Symlink] {
            assert_eq!(Kind::from_code(k.code()), Some(k));
        }
        assert_eq!(Kind::from_code(7), None);
    }
}
