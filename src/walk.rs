//! The walk of a source tree in tape order, on directory descriptors. Recording and
//! `verify` share it, so that both see the tree the same way.
//!
//! Every directory is opened relative to its parent's descriptor without following a
//! symlink (`openat(O_NOFOLLOW | O_DIRECTORY)`), checked to be the directory that was
//! lstat'ed a moment before, and its children are lstat'ed relative to it (`fstatat`), as
//! `find` does. Nothing is resolved from the root again, and a symlink swapped in for a
//! directory after it was seen is never followed.
//!
//! Measured on 100,000 small files (warm cache): this walk and `find -printf` take about
//! the same time; `walkdir`, which lstats every full path from the root, took 40% more,
//! and kept each directory's open handle for longer.
//!
//! Entries come out in tape order (memcmp order of archive paths) without a global sort:
//! within a directory each child `c` is visited at the key `c`, and a child directory's
//! contents at the key `c/`. Every path below `c` starts with `c/`, so sorting these keys
//! per directory gives exactly the global byte order (`d` < `d.txt` < `d/x`, because
//! `.` < `/`).

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Stat};

use crate::entry::Kind;
use crate::error::Result;
use crate::source::CATALOG_DIR;

/// One object the walk found.
pub struct Found<'a> {
    /// Path relative to the root (empty for the root itself).
    pub rel: &'a [u8],
    /// The directory that holds it (for the root: the root itself, with `name` = `.`).
    pub dir: BorrowedFd<'a>,
    /// Its name in `dir`.
    pub name: &'a CStr,
    /// File, directory or symlink (special files go to [`Visitor::special`] instead).
    pub kind: Kind,
    /// lstat of the object, taken relative to `dir`.
    pub stat: &'a Stat,
}

/// What a walk reports to.
pub trait Visitor {
    /// An object, in tape order. For a directory, return whether to walk into it.
    fn object(&mut self, found: &Found<'_>) -> Result<bool>;

    /// A socket, FIFO or device, which tapes do not hold.
    fn special(&mut self, rel: &[u8], what: &'static str);

    /// A child that could not be lstat'ed (`listing` false), or a directory that could not
    /// be opened or listed (`listing` true).
    fn failed(&mut self, rel: &[u8], listing: bool, err: io::Error) -> Result<()>;
}

/// Which paths a walk leaves out.
pub struct Walker<'a> {
    /// `--exclude` globs, matched against each relative path and each file name.
    pub patterns: &'a [glob::Pattern],
}

/// A child of a directory being listed; its name is `names[name]` (NUL included) of the
/// directory's name arena.
struct Child {
    name: std::ops::Range<usize>,
    kind: Kind,
    stat: Stat,
}

/// Bytes `getdents` fills at a time.
const DIRENT_BUF: usize = 32 << 10;

impl Walker<'_> {
    /// Visits the root (lstat'ed as `root_stat`) and, if the visitor says so, everything
    /// below it.
    pub fn run(&self, root: BorrowedFd<'_>, root_stat: &Stat, v: &mut impl Visitor) -> Result<()> {
        let found = Found {
            rel: b"",
            dir: root,
            name: c".",
            kind: Kind::Dir,
            stat: root_stat,
        };
        if !v.object(&found)? {
            return Ok(());
        }
        // A descriptor of its own: reading a directory moves the offset that every
        // descriptor duplicated from the same open shares.
        match open_dir(root, c".", root_stat) {
            Ok(fd) => {
                let mut dirents = vec![MaybeUninit::uninit(); DIRENT_BUF];
                self.walk_dir(fd, &mut Vec::with_capacity(256), &mut dirents, v)
            }
            Err(e) => v.failed(b"", true, e),
        }
    }

    /// Whether to leave out the child at `rel` named `name`: `DIR/.tartape` (the only place
    /// in the tree a catalog may be), or a match of an `--exclude` glob. Compared as bytes:
    /// this runs per entry.
    fn excluded(&self, rel: &[u8], name: &[u8]) -> bool {
        if rel == CATALOG_DIR.as_bytes() {
            return true;
        }
        if self.patterns.is_empty() {
            return false;
        }
        let rel_s = String::from_utf8_lossy(rel);
        let name = String::from_utf8_lossy(name);
        self.patterns
            .iter()
            .any(|p| p.matches(&rel_s) || p.matches(&name))
    }

    /// Walks the directory open as `fd`, whose relative path is `rel` (on return, `rel`
    /// is as it was: one buffer serves the whole walk, as does `dirents`).
    ///
    /// A directory's names go to one arena, not an allocation each: the walk does about
    /// nothing else per entry but the `fstatat`.
    fn walk_dir(
        &self,
        fd: OwnedFd,
        rel: &mut Vec<u8>,
        dirents: &mut [MaybeUninit<u8>],
        v: &mut impl Visitor,
    ) -> Result<()> {
        let mut names: Vec<u8> = Vec::new();
        let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
        let mut listing = RawDir::new(&fd, dirents);
        while let Some(dent) = listing.next() {
            match dent {
                Ok(d) => {
                    let name = d.file_name().to_bytes_with_nul();
                    if name != b".\0" && name != b"..\0" {
                        let start = names.len();
                        names.extend_from_slice(name);
                        spans.push(start..names.len());
                    }
                }
                Err(e) => {
                    v.failed(rel, true, e.into())?;
                    break;
                }
            }
        }
        let dir = fd.as_fd();
        let name_of = |span: &std::ops::Range<usize>| {
            CStr::from_bytes_with_nul(&names[span.clone()]).expect("one NUL, at the end")
        };
        let dir_len = rel.len();
        let mut children: Vec<Child> = Vec::with_capacity(spans.len());
        for span in spans {
            let name = name_of(&span);
            push_name(rel, dir_len, name.to_bytes());
            if self.excluded(rel, name.to_bytes()) {
                continue;
            }
            let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) => {
                    v.failed(rel, false, e.into())?;
                    continue;
                }
            };
            let kind = match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => Kind::Dir,
                FileType::RegularFile => Kind::File,
                FileType::Symlink => Kind::Symlink,
                other => {
                    v.special(rel, special_name(other));
                    continue;
                }
            };
            children.push(Child {
                name: span,
                kind,
                stat,
            });
        }
        // (key, child index, is the subtree): `name` for the child, `name/` for its contents.
        let mut keys: Vec<(&[u8], usize, bool)> = Vec::with_capacity(children.len() + 8);
        for (i, c) in children.iter().enumerate() {
            let name = name_of(&c.name).to_bytes();
            keys.push((name, i, false));
            if c.kind == Kind::Dir {
                keys.push((name, i, true));
            }
        }
        keys.sort_unstable_by(|a, b| key_cmp(a.0, a.2, b.0, b.2));
        let order: Vec<(usize, bool)> = keys.into_iter().map(|(_, i, sub)| (i, sub)).collect();
        let mut descend = vec![false; children.len()];
        for (i, subtree) in order {
            let child = &children[i];
            let name = name_of(&child.name);
            push_name(rel, dir_len, name.to_bytes());
            if !subtree {
                descend[i] = v.object(&Found {
                    rel,
                    dir,
                    name,
                    kind: child.kind,
                    stat: &child.stat,
                })? && child.kind == Kind::Dir;
            } else if descend[i] {
                match open_dir(dir, name, &child.stat) {
                    Ok(fd) => self.walk_dir(fd, rel, dirents, v)?,
                    Err(e) => v.failed(rel, true, e)?,
                }
            }
        }
        rel.truncate(dir_len);
        Ok(())
    }
}

/// Sets `rel` to its first `dir_len` bytes (a directory's path) joined with `name`.
fn push_name(rel: &mut Vec<u8>, dir_len: usize, name: &[u8]) {
    rel.truncate(dir_len);
    if dir_len > 0 {
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
}

/// How a walk names an object that is not a directory, file or symlink.
fn special_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Socket => "socket",
        FileType::Fifo => "fifo",
        FileType::BlockDevice => "block device",
        _ => "character device",
    }
}

/// Opens the directory `name` in `dir` without following a symlink, and checks that it is
/// the object lstat'ed as `seen` (not one swapped in since).
fn open_dir(dir: BorrowedFd<'_>, name: &CStr, seen: &Stat) -> io::Result<OwnedFd> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino) {
        return Err(io::Error::other(
            "replaced by another directory while walking",
        ));
    }
    Ok(fd)
}

/// Compares `a` (followed by `/` when `a_slash`) with `b` (likewise) as bytes.
pub(crate) fn key_cmp(a: &[u8], a_slash: bool, b: &[u8], b_slash: bool) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then_with(|| {
        let rest_a = a[n..].iter().chain(if a_slash { &b"/"[..] } else { &[] });
        let rest_b = b[n..].iter().chain(if b_slash { &b"/"[..] } else { &[] });
        rest_a.cmp(rest_b)
    })
}

/// The parts of an lstat that a tape records and checks, in portable types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// `None` for sockets, FIFOs and devices.
    pub kind: Option<Kind>,
    /// Name of the kind for messages (`fifo`, `device`, …).
    pub kind_name: &'static str,
    /// `st_size` in bytes (recorded as 0 for anything but a regular file).
    pub size: u64,
    /// Modification time, `(seconds, nanoseconds)`.
    pub mtime: (i64, i64),
    /// Inode change time, `(seconds, nanoseconds)`: what betrays a write whose mtime was
    /// put back.
    pub ctime: (i64, i64),
    /// Permission bits (`st_mode & 0o7777`).
    pub perm: u32,
    /// Owner id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Device of the filesystem holding the object; with `ino`, what binds a tape to
    /// its root directory.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl Observed {
    /// The parts of `st` a tape cares about.
    // The field types of `struct stat` differ between architectures; on some of them
    // these casts convert nothing.
    #[allow(clippy::unnecessary_cast)]
    pub fn of(st: &Stat) -> Observed {
        let (kind, kind_name) = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => (Some(Kind::File), "file"),
            FileType::Directory => (Some(Kind::Dir), "dir"),
            FileType::Symlink => (Some(Kind::Symlink), "symlink"),
            FileType::Fifo => (None, "fifo"),
            FileType::Socket => (None, "socket"),
            _ => (None, "device"),
        };
        Observed {
            kind,
            kind_name,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            perm: st.st_mode as u32 & 0o7777,
            uid: st.st_uid as u64,
            gid: st.st_gid as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_keys_give_memcmp_order_of_paths() {
        use std::cmp::Ordering::*;
        // `d.txt` < `d/…` but `d` < `d.txt`
        assert_eq!(key_cmp(b"d", false, b"d.txt", false), Less);
        assert_eq!(key_cmp(b"d.txt", false, b"d", true), Less);
        assert_eq!(key_cmp(b"d", false, b"d", true), Less);
        assert_eq!(key_cmp(b"D", false, b"d", false), Less);
        assert_eq!(key_cmp(b"d", true, b"d0", false), Less);
        assert_eq!(key_cmp(b"d-", false, b"d", true), Less);
    }
}
