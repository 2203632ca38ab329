//! The source directory: where it is, how it is opened, how paths below it are opened
//! without ever following a symlink, and who may read what in it.

use std::ffi::CStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Access, AtFlags, Mode, OFlags, ResolveFlags, Stat};

use crate::error::{Error, Result};

/// Name of the directory inside the source that holds the default catalog. It is never
/// part of the tape.
pub const CATALOG_DIR: &str = ".tartape";
/// File name of the default catalog.
pub const CATALOG_FILE: &str = "index.db";

/// The default catalog location for a source directory.
pub fn default_catalog(dir: &Path) -> PathBuf {
    dir.join(CATALOG_DIR).join(CATALOG_FILE)
}

/// Resolves the source directory, with one clear error when it is missing or not a
/// directory.
pub fn canonical_source(dir: &Path) -> Result<PathBuf> {
    let root = fs::canonicalize(dir).map_err(|e| Error::Source {
        path: dir.to_path_buf(),
        problem: match e.kind() {
            io::ErrorKind::NotFound => "source does not exist".to_string(),
            _ => e.to_string(),
        },
    })?;
    if !root.is_dir() {
        return Err(Error::Source {
            path: dir.to_path_buf(),
            problem: "source is not a directory".to_string(),
        });
    }
    Ok(root)
}

/// "a symlink", "a FIFO", … of an `st_mode`, for messages.
pub fn describe_mode(mode: u32) -> &'static str {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::Symlink => "a symlink",
        rustix::fs::FileType::Directory => "a directory",
        rustix::fs::FileType::Fifo => "a FIFO",
        rustix::fs::FileType::Socket => "a socket",
        rustix::fs::FileType::CharacterDevice => "a character device",
        rustix::fs::FileType::BlockDevice => "a block device",
        rustix::fs::FileType::RegularFile => "a regular file",
        _ => "an unknown kind of file",
    }
}

/// Opens the (canonical) source root and lstats it through the descriptor.
pub fn open_root(root: &Path) -> Result<(OwnedFd, Stat)> {
    let source_err = |e: rustix::io::Errno| Error::Source {
        path: root.to_path_buf(),
        problem: io::Error::from(e).to_string(),
    };
    let fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(source_err)?;
    let st = rustix::fs::fstat(&fd).map_err(source_err)?;
    Ok((fd, st))
}

/// Opens `rel` beneath the directory `root` without following any symlink on the way and
/// without leaving it (openat2 with RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH). On kernels
/// without openat2 (before 5.6), and for paths of `PATH_MAX` (4,096) bytes or more, which
/// a tape records (the walk goes one directory at a time) but no single system call takes,
/// walks the components one `openat(O_NOFOLLOW)` at a time. `rel` is a relative path of
/// normal components (the catalog checks every stored one); empty means the root itself.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat2(
        root,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
    ) {
        Err(rustix::io::Errno::NOSYS) => open_by_components(root, rel, flags),
        Err(rustix::io::Errno::NAMETOOLONG) if rel.len() >= PATH_MAX => {
            open_by_components(root, rel, flags)
        }
        other => Ok(other?),
    }
}

/// The longest path a system call takes, its NUL included.
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// `lstat` of `rel` beneath `root`: one `fstatat` (which follows no symlink at the end; the
/// caller compares device and inode with a descriptor it opened without following any),
/// or, for a path too long for one system call, one in its directory opened as
/// [`open_beneath`] does.
pub fn stat_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<Stat> {
    if rel.len() < PATH_MAX {
        return Ok(rustix::fs::statat(root, rel, AtFlags::SYMLINK_NOFOLLOW)?);
    }
    let (dir_rel, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[][..], rel),
    };
    let dir = open_beneath(root, dir_rel, OFlags::PATH | OFlags::DIRECTORY)?;
    Ok(rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The fallback of [`open_beneath`]: every intermediate component is opened as a
/// directory with `O_NOFOLLOW`, relative to the previous one; `..` is refused.
pub(crate) fn open_by_components(
    root: BorrowedFd<'_>,
    rel: &[u8],
    flags: OFlags,
) -> io::Result<OwnedFd> {
    let mut components = rel.split(|&b| b == b'/').peekable();
    let mut dir: Option<OwnedFd> = None;
    while let Some(comp) = components.next() {
        if comp.is_empty() || comp == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path leaves the source root",
            ));
        }
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        if components.peek().is_none() {
            return Ok(rustix::fs::openat(
                at,
                comp,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        }
        dir = Some(rustix::fs::openat(
            at,
            comp,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"))
}

/// The directory of the file opened last by [`open_in_parent`], kept open from one file to
/// the next: the files of a directory follow each other in tape order, so each open
/// resolves one name, not the whole path.
#[derive(Default)]
pub(crate) struct ParentDir {
    rel: Vec<u8>,
    fd: Option<OwnedFd>,
}

/// Opens the regular file `rel` beneath `root` for reading, relative to its directory
/// (held in `parent`, opened as [`open_beneath`] opens). No symlink is followed, in the
/// directory's path or at the file; the descriptor is not compared with anything here.
pub(crate) fn open_in_parent(
    root: BorrowedFd<'_>,
    parent: &mut ParentDir,
    rel: &[u8],
) -> io::Result<OwnedFd> {
    let (dir_rel, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[][..], rel),
    };
    let dir = match &parent.fd {
        Some(fd) if parent.rel == dir_rel => fd,
        _ => {
            parent.fd = None;
            let fd = open_beneath(root, dir_rel, OFlags::PATH | OFlags::DIRECTORY)?;
            parent.rel.clear();
            parent.rel.extend_from_slice(dir_rel);
            parent.fd.insert(fd)
        }
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// Whether this process may read the object `name` in `dir`, lstat'ed as `st` (and, for
/// a directory, search it). The permission bits answer without a syscall, which keeps
/// recording as cheap as `find`; when they say no, the kernel has the last word
/// (`faccessat` with the effective ids: ACLs, capabilities such as CAP_DAC_READ_SEARCH,
/// and any number of supplementary groups).
pub fn readable(dir: BorrowedFd<'_>, name: &CStr, st: &Stat, directory: bool) -> bool {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let euid = *EUID.get_or_init(|| rustix::process::geteuid().as_raw());
    if euid == 0 {
        return true;
    }
    let mode = st.st_mode;
    let (r, x) = if st.st_uid == euid {
        (0o400, 0o100)
    } else if in_group(st.st_gid) {
        (0o040, 0o010)
    } else {
        (0o004, 0o001)
    };
    if mode & r != 0 && (!directory || mode & x != 0) {
        return true;
    }
    let access = if directory {
        Access::READ_OK | Access::EXEC_OK
    } else {
        Access::READ_OK
    };
    rustix::fs::accessat(
        dir,
        name,
        access,
        AtFlags::EACCESS | AtFlags::SYMLINK_NOFOLLOW,
    )
    .is_ok()
}

/// Whether `gid` is the effective group or one of the supplementary groups (all of them:
/// the list is read whole, however long).
fn in_group(gid: u32) -> bool {
    thread_local! {
        static GROUPS: Vec<u32> = {
            let mut groups: Vec<u32> = rustix::process::getgroups()
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.as_raw())
                .collect();
            groups.push(rustix::process::getegid().as_raw());
            groups
        };
    }
    GROUPS.with(|g| g.contains(&gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn components_fallback_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("real")).unwrap();
        fs::write(root.join("real/f"), b"in").unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"out").unwrap();
        symlink(&outside, root.join("link")).unwrap();
        symlink("real/f", root.join("flink")).unwrap();
        let (root_fd, _) = open_root(&root).unwrap();
        let read = |rel: &[u8]| {
            open_by_components(root_fd.as_fd(), rel, OFlags::RDONLY).map(|fd| {
                let mut s = String::new();
                io::Read::read_to_string(&mut fs::File::from(fd), &mut s).unwrap();
                s
            })
        };
        assert_eq!(read(b"real/f").unwrap(), "in");
        // An intermediate symlink, a final symlink, `..`: all refused.
        assert!(read(b"link/f").is_err());
        assert!(read(b"flink").is_err());
        assert!(read(b"real/../real/f").is_err());
        assert!(read(b"real//f").is_err());
        // openat2 agrees.
        assert!(open_beneath(root_fd.as_fd(), b"link/f", OFlags::RDONLY).is_err());
        assert!(open_beneath(root_fd.as_fd(), b"real/f", OFlags::RDONLY).is_ok());
    }
}
