//! Writing entries under DEST: relative to a descriptor of it, never following a symlink,
//! each file under a temporary name renamed when whole, directories' modes and mtimes set
//! last.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};

use super::RestoreSummary;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::source::open_beneath;

/// An arc path's parent (under DEST) and name.
pub(super) fn split(arc_path: &[u8]) -> (&[u8], &[u8]) {
    match arc_path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&arc_path[..i], &arc_path[i + 1..]),
        None => (&b""[..], arc_path),
    }
}

/// A file or symlink for a writer thread: its content read and checked.
pub(super) struct Job {
    pub(super) entry: Entry,
    pub(super) content: Vec<u8>,
    pub(super) look: bool,
}

/// The path of entry `e` under DEST, for messages.
pub(super) fn out_path(dest: &Path, e: &Entry) -> PathBuf {
    dest.join(std::ffi::OsStr::from_bytes(&e.arc_path))
}

fn timestamps(e: &Entry) -> Timestamps {
    let mtime = Timespec {
        tv_sec: e.mtime_sec,
        tv_nsec: e.mtime_nsec as _,
    };
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

/// Writes entries under DEST.
pub(super) struct Extractor<'a> {
    pub(super) dest: &'a Path,
    pub(super) dest_fd: BorrowedFd<'a>,
    pub(super) force: bool,
    /// The last parent directory used: its path under DEST and a descriptor.
    pub(super) parent: Option<(Vec<u8>, OwnedFd)>,
    /// Directories restored: path under DEST, mode, entry (for the mtime), set last.
    pub(super) dirs: Vec<(Vec<u8>, u32, Timestamps)>,
    pub(super) summary: RestoreSummary,
    pub(super) tmp_counter: u64,
    pub(super) pid: u32,
    /// Which thread this is (temporary names differ between threads).
    pub(super) worker: usize,
    /// Directories (paths under DEST) this restore created: nothing else is in them.
    pub(super) created: std::collections::HashSet<Vec<u8>>,
    /// The process's umask.
    pub(super) umask: u32,
    /// Whether to try `O_TMPFILE` (until the filesystem says it cannot).
    pub(super) unnamed: bool,
}

/// What [`Extractor::write_unnamed`] did.
enum Unnamed<F> {
    Done,
    /// The filesystem has no `O_TMPFILE`: the content writer, unused.
    Unsupported(F),
}

impl Extractor<'_> {
    /// Extracts `e`; `content` writes a regular file's bytes. `look` says whether
    /// something may already be in the way (not in a directory this restore created).
    pub(super) fn entry(
        &mut self,
        e: &Entry,
        look: bool,
        content: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<()> {
        let path = out_path(self.dest, e);
        let (parent_rel, name) = split(&e.arc_path);
        if self.parent.as_ref().is_none_or(|(p, _)| p != parent_rel) {
            let fd = self.open_dir(parent_rel)?;
            self.parent = Some((parent_rel.to_vec(), fd));
        }
        let (cached, parent) = self.parent.take().expect("just set");
        let result = self.entry_in(&parent, look, name, e, &path, content);
        self.parent = Some((cached, parent));
        result
    }

    /// [`Extractor::entry`] in the open directory `parent`.
    fn entry_in(
        &mut self,
        parent: &OwnedFd,
        look: bool,
        name: &[u8],
        e: &Entry,
        path: &Path,
        content: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<()> {
        let io_err = |err: rustix::io::Errno| Error::io(path, err.into());
        let existing = |parent: &OwnedFd| -> Result<Option<FileType>> {
            match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
                Err(rustix::io::Errno::NOENT) => Ok(None),
                Err(err) => Err(io_err(err)),
            }
        };
        if e.kind == Kind::Dir {
            // Owner-writable until the end, whatever the recorded mode.
            match rustix::fs::mkdirat(parent, name, Mode::RWXU) {
                Ok(()) => {
                    self.created.insert(e.arc_path.clone());
                }
                Err(rustix::io::Errno::EXIST) => match existing(parent)? {
                    Some(FileType::Directory) => {}
                    Some(FileType::Symlink) if !self.force => {
                        return Err(Error::io(
                            path,
                            io::Error::other(
                                "is a symlink where the tape has a directory: restore never \
                                 writes through one (--force replaces it)",
                            ),
                        ));
                    }
                    Some(_) if !self.force => {
                        return Err(Error::io(
                            path,
                            io::Error::other("exists and is not a directory (--force replaces it)"),
                        ));
                    }
                    _ => {
                        rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(io_err)?;
                        rustix::fs::mkdirat(parent, name, Mode::RWXU).map_err(io_err)?;
                        self.created.insert(e.arc_path.clone());
                    }
                },
                Err(err) => return Err(io_err(err)),
            }
            self.dirs.push((e.arc_path.clone(), e.mode, timestamps(e)));
            self.summary.dirs += 1;
            return Ok(());
        }
        // In a directory this restore created, nothing can be in the way (and the rename
        // below never replaces without --force anyway): no need to look.
        if look {
            match existing(parent)? {
                Some(FileType::Directory) => {
                    return Err(Error::io(
                        path,
                        io::Error::other(format!("is a directory; the tape has a {} here", e.kind)),
                    ));
                }
                Some(_) if !self.force => {
                    self.summary.kept.push(path.display().to_string());
                    return Ok(());
                }
                _ => {}
            }
        }
        if e.kind == Kind::File && !self.force && self.unnamed {
            match self.write_unnamed(parent, name, e, path, content)? {
                Unnamed::Done => return Ok(()),
                Unnamed::Unsupported(back) => {
                    self.unnamed = false;
                    return self.entry_in(parent, false, name, e, path, back);
                }
            }
        }
        let tmp = self.temp_name();
        match e.kind {
            Kind::Symlink => {
                rustix::fs::symlinkat(e.link_target.as_slice(), parent, tmp.as_slice())
                    .map_err(io_err)?;
                let done = rustix::fs::utimensat(
                    parent,
                    tmp.as_slice(),
                    &timestamps(e),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(io_err);
                if let Err(err) = done {
                    let _ = rustix::fs::unlinkat(parent, tmp.as_slice(), AtFlags::empty());
                    return Err(err);
                }
            }
            Kind::File => {
                // Created with its final mode when the umask leaves it whole (one fchmod
                // less per file), else fixed after writing.
                let direct = e.mode & self.umask == 0;
                let create_mode = if direct { e.mode } else { 0o600 };
                let fd = rustix::fs::openat(
                    parent,
                    tmp.as_slice(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(create_mode),
                )
                .map_err(io_err)?;
                let mut file = File::from(fd);
                let written = content(&mut file).and_then(|()| {
                    if !direct {
                        rustix::fs::fchmod(&file, Mode::from_raw_mode(e.mode)).map_err(io_err)?;
                    }
                    rustix::fs::futimens(&file, &timestamps(e)).map_err(io_err)
                });
                if let Err(err) = written {
                    let _ = rustix::fs::unlinkat(parent, tmp.as_slice(), AtFlags::empty());
                    return Err(err);
                }
            }
            Kind::Dir => unreachable!("handled above"),
        }
        let flags = if self.force {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        match rustix::fs::renameat_with(parent, tmp.as_slice(), parent, name, flags) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                // Appeared since it was looked for: kept, as any existing file.
                let _ = rustix::fs::unlinkat(parent, tmp.as_slice(), AtFlags::empty());
                self.summary.kept.push(path.display().to_string());
                return Ok(());
            }
            Err(err) => {
                let _ = rustix::fs::unlinkat(parent, tmp.as_slice(), AtFlags::empty());
                return Err(io_err(err));
            }
        }
        if e.kind == Kind::File {
            self.summary.files += 1;
            self.summary.bytes += e.size;
        } else {
            self.summary.symlinks += 1;
        }
        Ok(())
    }

    /// Writes a new file as an unnamed inode (`O_TMPFILE`) and links it in under `name`
    /// once complete: as atomic as a temporary name and a rename, one directory operation
    /// less, and nothing to clean up after a crash. A name taken meanwhile is kept
    /// (`linkat` never replaces). Filesystems without `O_TMPFILE` hand `content` back.
    fn write_unnamed<F: FnOnce(&mut File) -> Result<()>>(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        e: &Entry,
        path: &Path,
        content: F,
    ) -> Result<Unnamed<F>> {
        let io_err = |err: rustix::io::Errno| Error::io(path, err.into());
        let direct = e.mode & self.umask == 0;
        let create_mode = if direct { e.mode } else { 0o600 };
        let fd = match rustix::fs::openat(
            parent,
            c".",
            OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(create_mode),
        ) {
            Ok(fd) => fd,
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => return Ok(Unnamed::Unsupported(content)),
            Err(err) => return Err(io_err(err)),
        };
        let mut file = File::from(fd);
        content(&mut file)?;
        if !direct {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(e.mode)).map_err(io_err)?;
        }
        rustix::fs::futimens(&file, &timestamps(e)).map_err(io_err)?;
        let linked = match rustix::fs::linkat(&file, c"", parent, name, AtFlags::EMPTY_PATH) {
            // Linking a descriptor by AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; without
            // it, through its /proc/self/fd link.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM) => {
                let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
                rustix::fs::linkat(
                    rustix::fs::CWD,
                    proc_path.as_str(),
                    parent,
                    name,
                    AtFlags::SYMLINK_FOLLOW,
                )
            }
            other => other,
        };
        match linked {
            Ok(()) => {
                self.summary.files += 1;
                self.summary.bytes += e.size;
            }
            Err(rustix::io::Errno::EXIST) => self.summary.kept.push(path.display().to_string()),
            Err(err) => return Err(io_err(err)),
        }
        Ok(Unnamed::Done)
    }

    /// A fresh temporary name (the create is O_EXCL, so a clash is an error, not a loss).
    fn temp_name(&mut self) -> Vec<u8> {
        self.tmp_counter += 1;
        format!(
            ".tartape-restore-{}-{}-{}.tmp",
            self.pid, self.worker, self.tmp_counter
        )
        .into_bytes()
    }

    /// The directory `rel` under DEST (created, with its parents, when missing), opened
    /// without following symlinks.
    fn open_dir(&self, rel: &[u8]) -> Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let shown = |upto: &[u8]| self.dest.join(std::ffi::OsStr::from_bytes(upto));
        let refuse = |upto: &[u8], err: io::Error| -> Error {
            let why = match err.raw_os_error() {
                Some(libc::ELOOP) => io::Error::other(
                    "is a symlink (or leads through one): restore never writes through a symlink",
                ),
                Some(libc::ENOTDIR) => io::Error::other("is not a directory"),
                Some(libc::EXDEV) => io::Error::other("leads outside the destination"),
                _ => err,
            };
            Error::io(shown(upto), why)
        };
        match open_beneath(self.dest_fd, rel, flags) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(refuse(rel, e)),
        }
        // Create the missing components one by one, each beneath the previous.
        let mut at: Option<OwnedFd> = None;
        let mut upto = 0usize;
        for comp in rel.split(|&b| b == b'/') {
            upto += comp.len();
            let base = at.as_ref().map_or(self.dest_fd, |d| d.as_fd());
            match rustix::fs::mkdirat(base, comp, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(Error::io(shown(&rel[..upto]), e.into())),
            }
            let fd = open_beneath(base, comp, flags).map_err(|e| refuse(&rel[..upto], e))?;
            at = Some(fd);
            upto += 1;
        }
        at.ok_or_else(|| Error::Usage("empty directory path".into()))
    }

    /// Modes and mtimes of the restored directories, deepest first (tape order puts a
    /// directory before everything under it).
    pub(super) fn finish(&mut self) -> Result<()> {
        self.parent = None;
        for (rel, mode, times) in self.dirs.iter().rev() {
            let path = self.dest.join(std::ffi::OsStr::from_bytes(rel));
            let fd = open_beneath(self.dest_fd, rel, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| Error::io(&path, e))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode))
                .and_then(|()| rustix::fs::futimens(&fd, times))
                .map_err(|e| Error::io(&path, e.into()))?;
        }
        Ok(())
    }
}
