//! The FUSE front end: a read-only filesystem holding one file, the tape.
//!
//! This is the only module that speaks `fuser`. It translates kernel requests into calls
//! on [`Tape`] and tape errors into errnos; it knows nothing of headers, offsets or the
//! catalog. The mount contains a root directory (inode 1) and a single regular file
//! (inode 2, `archive.tar` by default) whose bytes are `tape.read_at(offset, …)`.
//!
//! Besides the filesystem itself the module owns the plumbing around a mount that has to
//! know about the kernel: pre-mount checks ([`check_mountpoint`], [`check_fuse_available`]),
//! serving until unmounted with a clean unmount on SIGINT/SIGTERM/SIGHUP ([`mount`],
//! [`MountSession::run`]), and [`unmount`], which also clears a stale mount whose serving
//! process died.
//!
//! ```no_run
//! use std::path::Path;
//! use tartape::mount::{self, MountOptions};
//! use tartape::tape::Tape;
//!
//! let tape = Tape::discover(Path::new("photos"))?;
//! let mountpoint = mount::check_mountpoint(Path::new("/mnt/photos"))?;
//! mount::check_fuse_available(false)?;
//! // Blocks until `tartape umount /mnt/photos`, Ctrl-C or SIGTERM.
//! mount::mount(tape, &mountpoint, &MountOptions::default())?.run()?;
//! # Ok::<(), tartape::Error>(())
//! ```

use std::cell::RefCell;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Config, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, MountOption, OpenAccMode,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    Session, SessionACL, SessionUnmounter, TimeOrNow, WriteFlags,
};
use log::{debug, error, info, warn};

use crate::error::{Error, Result};
use crate::tape::Tape;

/// Name of the single file in the mount unless `--name` says otherwise.
pub const DEFAULT_NAME: &str = "archive.tar";

/// Request-serving threads when the caller does not choose.
pub const DEFAULT_THREADS: usize = 4;

/// Readahead set on the mount, in KiB. The kernel offers FUSE 128 KiB at INIT and fuser
/// cannot raise it past that offer; root can raise it afterwards through sysfs. Measured
/// with `cat` of a 2 GiB tape of large files: 2.5 GB/s at 128 KiB, 3.4 GB/s at 1 MiB,
/// 3.7 GB/s at 2 MiB, no better above (two 1 MiB requests in flight is enough).
pub const DEFAULT_READAHEAD_KB: u32 = 2048;

/// Inode of the root directory (fixed by FUSE).
const ROOT_INO: INodeNo = INodeNo::ROOT;
/// Inode of the tape file. An inode is not a tape ordinal: there is exactly one file.
const FILE_INO: INodeNo = INodeNo(2);

/// Attributes never change while the tape is intact, so the kernel may keep them.
const ATTR_TTL: Duration = Duration::from_secs(3600);

/// `st_blksize` of the tape file. `cat`, `cp` and friends size their buffers from it
/// (coreutils uses it when it is a power of two above 128 KiB); 1 MiB matches the largest
/// request fuser negotiates, so one `read(2)` can be one FUSE request.
const FILE_BLKSIZE: u32 = 1 << 20;

/// How the kernel may cache the tape file's pages.
///
/// Measured on a 2-core virtual machine (first `cat`/`dd` after mounting, source in the
/// page cache): `DirectIo` wins only for large sequential reads of large files (`cat` of a
/// 4 GiB tape 4.0–4.7 GB/s against 1.3–3.7 GB/s: there, filling fresh page-cache pages
/// is the bound, as for any writer of the page cache); it loses 3–5× for smaller reads
/// (`dd bs=10k` 0.4 vs 2.2 GB/s, `tar -xf`'s 10 KiB records), and 2× on a tape of small
/// files (0.4 vs 0.74 GB/s: one request in flight instead of readahead's several), and
/// re-reads are never cached. Hence `KeepCache` by default, `DirectIo` on request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Page cache, kept across opens (`FOPEN_KEEP_CACHE`): the content is immutable while
    /// the tape is intact. Re-reads and `mmap` are served by the kernel.
    #[default]
    KeepCache,
    /// Every `read(2)` goes to the tape (`FOPEN_DIRECT_IO`): no readahead, no cache.
    DirectIo,
}

/// How to mount a tape.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Name of the single file in the mount.
    pub name: String,
    /// Let every user access the mount (`allow_other`; non-root mounters need
    /// `user_allow_other` in `/etc/fuse.conf`).
    pub allow_other: bool,
    /// Threads serving kernel requests (at least 1).
    pub threads: usize,
    /// Page cache policy of the tape file.
    pub cache: CacheMode,
    /// Readahead to set on the mount through `/sys/class/bdi/…/read_ahead_kb`, best effort
    /// (it needs root); `None` keeps the kernel's default.
    pub readahead_kb: Option<u32>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            name: DEFAULT_NAME.to_string(),
            allow_other: false,
            threads: DEFAULT_THREADS,
            cache: CacheMode::default(),
            readahead_kb: Some(DEFAULT_READAHEAD_KB),
        }
    }
}

/// The filesystem: a thin translator from FUSE requests to [`Tape`] calls.
///
/// Every handler is a plain method returning `Result<_, Errno>` plus a one-line reply, so
/// the logic can be tested without a kernel.
pub struct TapeFs {
    tape: Tape,
    name: OsString,
    root_attr: FileAttr,
    file_attr: FileAttr,
    open_flags: FopenFlags,
    /// Set once mounted; see [`Disarm`].
    disarm: Arc<Mutex<Option<Disarm>>>,
}

/// fuser unmounts again when its session ends, even when the kernel has already removed
/// the mount (`tartape umount`), and then logs a spurious "Failed to umount filesystem".
/// At `destroy` — the end of the session — a mount that is verifiably gone has its
/// unmount handle consumed here, quietly, so that fuser has nothing left to undo.
struct Disarm {
    unmounter: SessionUnmounter,
    mountpoint: PathBuf,
    dev: (u32, u32),
}

impl Disarm {
    fn run(mut self) {
        let still_ours = mount_entry(&self.mountpoint)
            .is_some_and(|entry| (entry.dev_major, entry.dev_minor) == self.dev);
        if !still_ours {
            // The mount is gone, so this only drops fuser's handle (its umount fails).
            let _ = self.unmounter.unmount();
        }
    }
}

impl TapeFs {
    /// A filesystem serving `tape` as the file `name`, owned by the current user.
    pub fn new(tape: Tape, name: &str, cache: CacheMode) -> Result<TapeFs> {
        validate_name(name)?;
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let recorded = unix_time(tape.created_at());
        let root_attr = FileAttr {
            ino: ROOT_INO,
            size: 0,
            blocks: 0,
            atime: recorded,
            mtime: recorded,
            ctime: recorded,
            crtime: recorded,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        let total_size = tape.total_size();
        let file_attr = FileAttr {
            ino: FILE_INO,
            size: total_size,
            blocks: total_size.div_ceil(512),
            kind: FileType::RegularFile,
            perm: 0o444,
            nlink: 1,
            blksize: FILE_BLKSIZE,
            ..root_attr
        };
        let open_flags = match cache {
            CacheMode::KeepCache => FopenFlags::FOPEN_KEEP_CACHE,
            CacheMode::DirectIo => FopenFlags::FOPEN_DIRECT_IO,
        } | FopenFlags::FOPEN_NOFLUSH;
        Ok(TapeFs {
            tape,
            name: OsString::from(name),
            root_attr,
            file_attr,
            open_flags,
            disarm: Arc::new(Mutex::new(None)),
        })
    }

    /// Attributes of an inode.
    fn attr(&self, ino: INodeNo) -> Result<&FileAttr, Errno> {
        match ino {
            ROOT_INO => Ok(&self.root_attr),
            FILE_INO => Ok(&self.file_attr),
            _ => Err(Errno::ENOENT),
        }
    }

    /// The entry `name` of directory `parent`.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<&FileAttr, Errno> {
        match parent {
            ROOT_INO if name == self.name => Ok(&self.file_attr),
            ROOT_INO => Err(Errno::ENOENT),
            FILE_INO => Err(Errno::ENOTDIR),
            _ => Err(Errno::ENOENT),
        }
    }

    /// Open flags for the tape file, refusing anything but reading.
    fn open_file(&self, ino: INodeNo, flags: OpenFlags) -> Result<FopenFlags, Errno> {
        match ino {
            FILE_INO => {}
            ROOT_INO => return Err(Errno::EISDIR),
            _ => return Err(Errno::ENOENT),
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        Ok(self.open_flags)
    }

    /// The listing of a directory: (inode, kind, name), in readdir order.
    fn listing(&self, ino: INodeNo) -> Result<[(INodeNo, FileType, &OsStr); 3], Errno> {
        match ino {
            ROOT_INO => Ok([
                (ROOT_INO, FileType::Directory, OsStr::new(".")),
                (ROOT_INO, FileType::Directory, OsStr::new("..")),
                (FILE_INO, FileType::RegularFile, self.name.as_os_str()),
            ]),
            FILE_INO => Err(Errno::ENOTDIR),
            _ => Err(Errno::ENOENT),
        }
    }

    /// Fills `buf` with the tape bytes from `offset`; the length read is short only at the
    /// end of the tape. A tape error (integrity, I/O) is logged with its cause and becomes
    /// EIO: the kernel must never see a short or zero-filled read for a broken range.
    fn read_range(&self, ino: INodeNo, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        match ino {
            FILE_INO => {}
            ROOT_INO => return Err(Errno::EISDIR),
            _ => return Err(Errno::ENOENT),
        }
        match self.tape.read_at(offset, buf) {
            Ok(len) => Ok(len),
            Err(err) => {
                error!(
                    "read of {} bytes at offset {offset} of {}: {err}",
                    buf.len(),
                    self.name.to_string_lossy()
                );
                Err(Errno::EIO)
            }
        }
    }

    /// Length of a read request once clamped to the end of the tape.
    fn clamp_len(&self, offset: u64, size: u32) -> usize {
        let remaining = self.file_attr.size.saturating_sub(offset);
        // Bounded by `size`, a u32, so the cast cannot truncate.
        remaining.min(u64::from(size)) as usize
    }

    /// Answer to `access(2)`: reading and listing are allowed, writing never.
    fn check_access(&self, ino: INodeNo, mask: AccessFlags) -> Result<(), Errno> {
        self.attr(ino)?;
        if mask.contains(AccessFlags::W_OK) {
            return Err(Errno::EROFS);
        }
        if mask.contains(AccessFlags::X_OK) && ino == FILE_INO {
            return Err(Errno::EACCES);
        }
        Ok(())
    }
}

thread_local! {
    /// One read buffer per serving thread, grown to the largest request seen (1 MiB with
    /// the sizes fuser negotiates) and reused, so the read path does not allocate.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's read buffer, at least `len` bytes long.
fn with_read_buf<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0);
        }
        f(&mut buf[..len])
    })
}

/// Every write-like request gets the same answer: this filesystem is read-only.
const READ_ONLY: Errno = Errno::EROFS;

impl Filesystem for TapeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Ask for 1 MiB of readahead; the kernel caps it at what it offered at INIT.
        if let Err(max) = config.set_max_readahead(DEFAULT_READAHEAD_KB * 1024) {
            let _ = config.set_max_readahead(max);
        }
        // mmap of a FOPEN_DIRECT_IO file (kernel 6.6+); page-cache opens need nothing.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // Room for the kernel to keep every serving thread busy with readahead.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn destroy(&mut self) {
        let disarm = self.disarm.lock().ok().and_then(|mut slot| slot.take());
        if let Some(disarm) = disarm {
            disarm.run();
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name) {
            Ok(attr) => reply.entry(&ATTR_TTL, attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Ok(attr) => reply.attr(&ATTR_TTL, attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(READ_ONLY);
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(Errno::EINVAL);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(READ_ONLY);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(READ_ONLY);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(READ_ONLY);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(READ_ONLY);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(READ_ONLY);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(READ_ONLY);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(READ_ONLY);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_file(ino, flags) {
            Ok(open_flags) => reply.opened(FileHandle(0), open_flags),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let len = self.clamp_len(offset, size);
        with_read_buf(len, |buf| match self.read_range(ino, offset, buf) {
            Ok(read) => reply.data(&buf[..read]),
            Err(errno) => reply.error(errno),
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(READ_ONLY);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever buffered for writing.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.listing(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.listing(ino) {
            Ok(entries) => entries,
            Err(errno) => return reply.error(errno),
        };
        // The offset of an entry is the position of the one after it.
        for (index, (entry_ino, kind, name)) in entries.into_iter().enumerate() {
            let next_offset = index as u64 + 1;
            if next_offset <= offset {
                continue;
            }
            if reply.add(entry_ino, next_offset, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let block_size: u32 = 4096;
        let blocks = self.file_attr.size.div_ceil(u64::from(block_size));
        reply.statfs(blocks, 0, 0, 2, 0, block_size, 255, block_size);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(READ_ONLY);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        match self.attr(ino) {
            Ok(_) => reply.error(Errno::NO_XATTR),
            Err(errno) => reply.error(errno),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.attr(ino) {
            Ok(_) if size == 0 => reply.size(0),
            Ok(_) => reply.data(&[]),
            Err(errno) => reply.error(errno),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(READ_ONLY);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.check_access(ino, mask) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(READ_ONLY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(READ_ONLY);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // Only SEEK_DATA/SEEK_HOLE reach the filesystem; the tape has no holes.
        let size = self.file_attr.size;
        let result = match (ino, whence) {
            (FILE_INO, _) if offset < 0 => Err(Errno::ENXIO),
            (FILE_INO, libc::SEEK_DATA) if (offset as u64) < size => Ok(offset),
            (FILE_INO, libc::SEEK_HOLE) if (offset as u64) < size => Ok(size as i64),
            (FILE_INO, libc::SEEK_DATA | libc::SEEK_HOLE) => Err(Errno::ENXIO),
            (FILE_INO, _) => Err(Errno::EINVAL),
            (ROOT_INO, _) => Err(Errno::EISDIR),
            _ => Err(Errno::ENOENT),
        };
        match result {
            Ok(position) => reply.offset(position),
            Err(errno) => reply.error(errno),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The kernel only sends this when the destination is in this filesystem.
        reply.error(READ_ONLY);
    }
}

/// A tape mounted and ready to be served: the mount exists, requests queue in the kernel
/// until [`MountSession::run`] starts answering them.
///
/// From the moment [`mount`] is called until `run` returns, SIGINT, SIGTERM and SIGHUP
/// unmount the filesystem instead of ending the process, so that no signal can leave a
/// stale mount behind (one arriving before the mount exists unmounts it as soon as it
/// does).
pub struct MountSession {
    session: Session<TapeFs>,
    mountpoint: PathBuf,
    signals: signal_hook::iterator::Handle,
    watcher: thread::JoinHandle<()>,
    /// Unmounts a mount made through `fusermount3` if the session never runs.
    guard: Option<FusermountGuard>,
}

/// How a mount is taken down.
enum Unmounter {
    /// fuser made the mount itself (root): its handle unmounts.
    Fuser(SessionUnmounter),
    /// `fusermount3` made it: `fusermount3 -u` takes it down.
    Fusermount(PathBuf),
}

impl Unmounter {
    fn unmount(&mut self) -> io::Result<()> {
        match self {
            Unmounter::Fuser(u) => u.unmount(),
            Unmounter::Fusermount(path) => fusermount(path, false),
        }
    }
}

/// Detaches a `fusermount3` mount when dropped, unless disarmed.
struct FusermountGuard(Option<PathBuf>);

impl FusermountGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for FusermountGuard {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fusermount(path, true);
        }
    }
}

/// The signals that unmount a served tape.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Mounts `tape` read-only at `mountpoint` (which should have passed
/// [`check_mountpoint`]) and returns once the kernel has accepted the mount. Call
/// [`MountSession::run`] to serve it.
///
/// As root the mount is made directly; any other user mounts through `fusermount3`
/// (setuid), which opens `/dev/fuse` and mounts on the user's behalf.
pub fn mount(tape: Tape, mountpoint: &Path, options: &MountOptions) -> Result<MountSession> {
    let mountpoint = resolve_mountpoint(mountpoint)?;
    // First of all: from here on a signal unmounts instead of killing the process.
    let mut signals = signal_hook::iterator::Signals::new(STOP_SIGNALS)
        .map_err(|err| Error::Mount(format!("cannot handle signals: {err}")))?;
    let fs = TapeFs::new(tape, &options.name, options.cache)?;
    let disarm_slot = Arc::clone(&fs.disarm);
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
        MountOption::FSName("tartape".to_string()),
        MountOption::Subtype("tartape".to_string()),
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    let cannot_mount = |err: io::Error| {
        Error::Mount(format!(
            "{}: cannot mount: {}",
            mountpoint.display(),
            one_line(&err.to_string())
        ))
    };
    let (mut session, unmounter, guard) = if is_root() {
        let mut session = Session::new(fs, &mountpoint, &config).map_err(cannot_mount)?;
        let unmounter = Unmounter::Fuser(session.unmount_callable());
        (session, unmounter, None)
    } else {
        let device = fusermount_mount(&mountpoint, &config.mount_options, options.allow_other)
            .map_err(|err| {
                Error::Mount(format!("{}: cannot mount: {err}", mountpoint.display()))
            })?;
        let guard = FusermountGuard(Some(mountpoint.clone()));
        let session = Session::from_fd(fs, device, config.acl, config).map_err(cannot_mount)?;
        (
            session,
            Unmounter::Fusermount(mountpoint.clone()),
            Some(guard),
        )
    };
    info!(
        "mounted at {} ({} threads, {:?})",
        mountpoint.display(),
        options.threads.max(1),
        options.cache
    );
    let handle = signals.handle();
    let watcher = {
        let mountpoint = mountpoint.clone();
        let mut unmounter = unmounter;
        thread::Builder::new()
            .name("tartape-signals".to_string())
            // Runs until `run` closes the handle (the iterator must outlive that: closing
            // writes to it).
            .spawn(move || {
                for signal in signals.forever() {
                    info!("signal {signal}: unmounting {}", mountpoint.display());
                    unmount_on_signal(&mut unmounter, &mountpoint);
                }
            })
            .map_err(|err| Error::Mount(format!("cannot start the signal watcher: {err}")))?
    };
    // mountinfo, unlike a stat of the mount point, asks nothing of the not yet serving
    // filesystem.
    match mount_entry(&mountpoint) {
        Some(entry) => {
            if let Some(readahead_kb) = options.readahead_kb {
                raise_readahead(&entry, readahead_kb);
            }
            if guard.is_none()
                && let Ok(mut slot) = disarm_slot.lock()
            {
                *slot = Some(Disarm {
                    unmounter: session.unmount_callable(),
                    mountpoint: mountpoint.clone(),
                    dev: (entry.dev_major, entry.dev_minor),
                });
            }
        }
        None => warn!(
            "{}: mounted but not listed in mountinfo",
            mountpoint.display()
        ),
    }
    Ok(MountSession {
        session,
        mountpoint,
        signals: handle,
        watcher,
        guard,
    })
}

impl MountSession {
    /// The canonical mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Serves requests until the filesystem is unmounted — by `tartape umount`, by
    /// `fusermount3 -u`, or by SIGINT, SIGTERM or SIGHUP, which unmount it cleanly.
    pub fn run(self) -> Result<()> {
        let MountSession {
            session,
            mountpoint,
            signals,
            watcher,
            guard,
        } = self;
        let result = session.run();
        // The mount is gone: nothing is left for the guard to detach.
        if let Some(guard) = guard {
            guard.disarm();
        }
        signals.close();
        let _ = watcher.join();
        info!("unmounted {}", mountpoint.display());
        result.map_err(|err| {
            Error::Mount(format!(
                "{}: serving the mount failed: {}",
                mountpoint.display(),
                one_line(&err.to_string())
            ))
        })
    }
}

/// Mounts `tape` at `mountpoint` and serves it in the calling thread until it is
/// unmounted; see [`mount`] and [`MountSession::run`].
pub fn mount_foreground(tape: Tape, mountpoint: &Path, options: &MountOptions) -> Result<()> {
    mount(tape, mountpoint, options)?.run()
}

/// Unmounts after a signal; a busy mount (a process still has the file open) is detached
/// so that it disappears now, its open files served until they are closed.
fn unmount_on_signal(unmounter: &mut Unmounter, mountpoint: &Path) {
    if let Err(err) = unmounter.unmount() {
        warn!(
            "unmounting {}: {err}; detaching it lazily (open files are served until closed)",
            mountpoint.display()
        );
        if let Err(err) = detach(mountpoint) {
            error!("{err}");
        }
    }
}

/// Mounts through `fusermount3`, which opens `/dev/fuse`, mounts it at `mountpoint`
/// and hands the open device back over a socket (`_FUSE_COMMFD`), as libfuse does.
fn fusermount_mount(
    mountpoint: &Path,
    options: &[MountOption],
    allow_other: bool,
) -> std::result::Result<OwnedFd, String> {
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    let program = find_fusermount().ok_or_else(|| {
        "fusermount3 is not installed, and only root may mount without it (install the \
         fuse3 package)"
            .to_string()
    })?;
    let mut opts: Vec<String> = options.iter().map(fusermount_option).collect();
    if allow_other {
        opts.push("allow_other".to_string());
    }
    let (ours, theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
    let theirs_fd = theirs.as_raw_fd();
    let mut command = Command::new(&program);
    command
        .arg("-o")
        .arg(opts.join(","))
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure only clears FD_CLOEXEC of a descriptor this process owns (the
    // child inherits it), with one fcntl: async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let fd = std::os::fd::BorrowedFd::borrow_raw(theirs_fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    drop(theirs);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = rustix::net::recvmsg(
        &ours,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    );
    let device = received.ok().and_then(|_| {
        control.drain().find_map(|message| match message {
            rustix::net::RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
    });
    drop(ours);
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    match device {
        Some(device) => Ok(device),
        None => {
            let said = one_line(&String::from_utf8_lossy(&output.stderr));
            Err(if said.contains("/dev/fuse") {
                format!("{said} ({})", dev_fuse_hint())
            } else if said.contains("user_allow_other") {
                format!(
                    "{said} (--allow-other needs the line `user_allow_other` in /etc/fuse.conf \
                     for a user who is not root)"
                )
            } else if said.is_empty() {
                format!("{} failed ({})", program.display(), output.status)
            } else {
                said
            })
        }
    }
}

/// What to do when `/dev/fuse` cannot be opened by a user who is not root.
fn dev_fuse_hint() -> String {
    let (mode, owner) = fs::metadata("/dev/fuse").map_or((0, 0), |m| (m.mode() & 0o7777, m.uid()));
    format!(
        "/dev/fuse is mode {mode:04o}, owner uid {owner}, and fusermount3 opens it as the user \
         who mounts: give that user read and write access to /dev/fuse (most systems make it \
         0666) or mount as root"
    )
}

/// A mount option as `fusermount3 -o` spells it.
fn fusermount_option(option: &MountOption) -> String {
    match option {
        MountOption::RO => "ro".into(),
        MountOption::NoAtime => "noatime".into(),
        MountOption::NoDev => "nodev".into(),
        MountOption::NoSuid => "nosuid".into(),
        MountOption::DefaultPermissions => "default_permissions".into(),
        MountOption::FSName(name) => format!("fsname={name}"),
        MountOption::Subtype(name) => format!("subtype={name}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Raises the readahead of the FUSE mount `entry` through sysfs. Best effort:
/// writing there needs root, and the mount works without it.
fn raise_readahead(entry: &MountEntry, readahead_kb: u32) {
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        entry.dev_major, entry.dev_minor
    );
    match fs::write(&knob, readahead_kb.to_string()) {
        Ok(()) => debug!("readahead: {knob} = {readahead_kb}"),
        Err(err) => debug!("readahead: cannot write {knob}: {err}"),
    }
}

/// Checks that `mountpoint` can take a mount: it exists, is a directory, is not already a
/// mount point (live or stale) and is empty. Returns its canonical path.
pub fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf> {
    let shown = mountpoint.display();
    let metadata = match fs::metadata(mountpoint) {
        Ok(metadata) => metadata,
        Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(Error::Mount(format!(
                "{shown}: a dead mount is still attached here (transport endpoint is not \
                 connected); run `tartape umount {shown}` first"
            )));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Mount(format!("{shown}: mount point does not exist")));
        }
        Err(err) => return Err(Error::io(mountpoint, err)),
    };
    if !metadata.is_dir() {
        return Err(Error::Mount(format!(
            "{shown}: mount point is not a directory"
        )));
    }
    let canonical = mountpoint
        .canonicalize()
        .map_err(|err| Error::io(mountpoint, err))?;
    if is_mount_point(&canonical)? {
        return Err(Error::Mount(format!(
            "{shown}: already a mount point (unmount it first, e.g. `tartape umount {shown}`)"
        )));
    }
    let mut entries = fs::read_dir(&canonical).map_err(|err| Error::io(mountpoint, err))?;
    if entries.next().is_some() {
        return Err(Error::Mount(format!("{shown}: mount point is not empty")));
    }
    Ok(canonical)
}

/// Checks that this process can mount a FUSE filesystem: `/dev/fuse` exists; root opens
/// it and mounts directly; any other user mounts through `fusermount3` (setuid), which
/// must be installed. With `allow_other`, a non-root user also needs `user_allow_other`
/// in `/etc/fuse.conf`. Each failure names its cause and what to do.
pub fn check_fuse_available(allow_other: bool) -> Result<()> {
    match fs::metadata("/dev/fuse") {
        Ok(metadata) if metadata.file_type().is_char_device() => {}
        Ok(_) => {
            return Err(Error::Mount(
                "/dev/fuse: not a character device; FUSE is unavailable".to_string(),
            ));
        }
        Err(_) => {
            return Err(Error::Mount(
                "/dev/fuse: not found; FUSE is unavailable (load it with `modprobe fuse`, \
                 or give the container the device)"
                    .to_string(),
            ));
        }
    }
    let device = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    if is_root() {
        return device.map(drop).map_err(|err| {
            Error::Mount(format!(
                "/dev/fuse: cannot be opened ({err}); FUSE is unavailable"
            ))
        });
    }
    if find_fusermount().is_none() {
        let why = match device {
            Err(err) => format!(
                "/dev/fuse cannot be opened by this user ({err}; {}) and fusermount3, which \
                 mounts for users, is not installed",
                dev_fuse_hint()
            ),
            Ok(_) => "fusermount3 is not installed, and only root may mount without it".to_string(),
        };
        return Err(Error::Mount(format!(
            "cannot mount as a user who is not root: {why}; install the fuse3 package \
             (or mount as root)"
        )));
    }
    if allow_other && !user_allow_other_enabled() {
        return Err(Error::Mount(
            "--allow-other: /etc/fuse.conf must contain the line `user_allow_other` for a \
             non-root user to use it"
                .to_string(),
        ));
    }
    Ok(())
}

/// True when `/etc/fuse.conf` enables `user_allow_other`.
fn user_allow_other_enabled() -> bool {
    fs::read_to_string("/etc/fuse.conf").is_ok_and(|conf| {
        conf.lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .any(|line| line == "user_allow_other")
    })
}

/// True when `path` (canonical, or at least absolute) is the mount point of some mount.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    match read_mountinfo() {
        Ok(entries) => Ok(entries.iter().any(|entry| entry.mount_point == path)),
        // Without /proc, a mount point is a directory on another device than its parent.
        Err(_) => {
            let Some(parent) = path.parent() else {
                return Ok(true);
            };
            let dev = fs::symlink_metadata(path).map_err(|err| Error::io(path, err))?;
            let parent_dev = fs::metadata(parent).map_err(|err| Error::io(parent, err))?;
            Ok(dev.dev() != parent_dev.dev())
        }
    }
}

/// Unmounts the FUSE mount at `mountpoint`: a live one (its serving process then exits)
/// or a stale one whose process died ("Transport endpoint is not connected").
///
/// A live mount that is busy (a process has the file open) is refused; a stale busy one
/// is detached lazily, since nobody can be served by it any more.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let path = resolve_mountpoint(mountpoint)?;
    let shown = mountpoint.display();
    let Some(entry) = mount_entry(&path) else {
        return Err(Error::Mount(format!("{shown}: not mounted")));
    };
    if !entry.fs_type.starts_with("fuse") {
        return Err(Error::Mount(format!(
            "{shown}: not a FUSE mount (it is {}); not unmounting it",
            entry.fs_type
        )));
    }
    let result = if is_root() {
        umount_syscall(&path, 0)
    } else {
        fusermount(&path, false)
    };
    if let Err(err) = result {
        if is_stale(&path) {
            debug!("{}: stale mount, detaching: {err}", path.display());
            detach(&path)?;
        } else if err.raw_os_error() == Some(libc::EBUSY) || err.to_string().contains("busy") {
            return Err(Error::Mount(format!(
                "{shown}: mount point is busy (a process is still using it); close it and retry"
            )));
        } else {
            return Err(Error::Mount(format!(
                "{shown}: cannot unmount: {}",
                one_line(&err.to_string())
            )));
        }
    }
    if mount_entry(&path).is_some_and(|after| after.mount_id == entry.mount_id) {
        return Err(Error::Mount(format!(
            "{shown}: still mounted after unmounting"
        )));
    }
    Ok(())
}

/// Detaches the mount at `path` now (`MNT_DETACH`, or `fusermount3 -uz`): it disappears
/// from the namespace at once and is destroyed when its last user goes away.
fn detach(path: &Path) -> Result<()> {
    let result = if is_root() {
        umount_syscall(path, libc::MNT_DETACH)
    } else {
        fusermount(path, true)
    };
    result.map_err(|err| {
        Error::Mount(format!(
            "{}: cannot detach the mount: {}",
            path.display(),
            one_line(&err.to_string())
        ))
    })
}

/// True when the mount at `path` no longer has a serving process.
fn is_stale(path: &Path) -> bool {
    matches!(fs::metadata(path), Err(err) if err.raw_os_error() == Some(libc::ENOTCONN))
}

fn umount_syscall(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn fusermount(path: &Path, lazy: bool) -> io::Result<()> {
    let program = find_fusermount().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "fusermount3 not found (install the fuse3 package)",
        )
    })?;
    let mut command = Command::new(program);
    command.arg("-u").arg("-q");
    if lazy {
        command.arg("-z");
    }
    let output = command.arg("--").arg(path).stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

/// `fusermount3` (or the older `fusermount`) found on PATH or in the usual places.
fn find_fusermount() -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback = [PathBuf::from("/usr/bin"), PathBuf::from("/bin")];
    ["fusermount3", "fusermount"].iter().find_map(|name| {
        path_dirs
            .iter()
            .chain(fallback.iter())
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Absolute, symlink-free form of a mount point, also for a stale mount whose own
/// `stat` fails: then the parent is resolved and the last component appended.
fn resolve_mountpoint(mountpoint: &Path) -> Result<PathBuf> {
    match mountpoint.canonicalize() {
        Ok(path) => Ok(path),
        Err(err) => {
            let absolute =
                std::path::absolute(mountpoint).map_err(|_| Error::io(mountpoint, err))?;
            let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
                return Err(Error::Mount(format!(
                    "{}: not a usable mount point",
                    mountpoint.display()
                )));
            };
            let parent = parent
                .canonicalize()
                .map_err(|err| Error::io(parent, err))?;
            Ok(parent.join(name))
        }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    mount_id: u64,
    dev_major: u32,
    dev_minor: u32,
    mount_point: PathBuf,
    fs_type: String,
}

/// The most recent mount on `path` (the one visible there), if any.
fn mount_entry(path: &Path) -> Option<MountEntry> {
    read_mountinfo()
        .ok()?
        .into_iter()
        .rev()
        .find(|entry| entry.mount_point == path)
}

fn read_mountinfo() -> io::Result<Vec<MountEntry>> {
    let text = fs::read("/proc/self/mountinfo")?;
    Ok(text
        .split(|&byte| byte == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect())
}

/// Parses `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let mut fields = line.split(|&byte| byte == b' ');
    let mount_id = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let _parent_id = fields.next()?;
    let dev = std::str::from_utf8(fields.next()?).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let _root = fields.next()?;
    let mount_point = PathBuf::from(OsString::from_vec(unescape_mountinfo(fields.next()?)));
    // Optional fields end with a lone "-", then comes the filesystem type.
    let fs_type = fields.skip_while(|field| *field != b"-").nth(1)?;
    Some(MountEntry {
        mount_id,
        dev_major: major.parse().ok()?,
        dev_minor: minor.parse().ok()?,
        mount_point,
        fs_type: String::from_utf8_lossy(fs_type).into_owned(),
    })
}

/// Undoes the kernel's `\ooo` octal escaping of spaces, tabs, newlines and backslashes.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut index = 0;
    while index < field.len() {
        let octal = field.get(index + 1..index + 4);
        if field[index] == b'\\'
            && let Some(digits) = octal
            && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, digit| acc * 8 + u32::from(digit - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                index += 4;
                continue;
            }
        }
        out.push(field[index]);
        index += 1;
    }
    out
}

/// The file name must be a single path component.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255
    {
        return Err(Error::Usage(format!(
            "--name {name:?}: must be a single file name (no '/', not '.' or '..', at most 255 bytes)"
        )));
    }
    Ok(())
}

/// A unix time in seconds as a `SystemTime` (also before 1970).
fn unix_time(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

/// Error messages from the system may span lines; ours are one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TapeRecorder;

    /// A recorded tree with a few files, and the filesystem over it.
    fn tape_fs(name: &str, cache: CacheMode) -> (tempfile::TempDir, TapeFs) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("a.txt"), b"hello\n").unwrap();
        fs::write(src.join("d/big"), vec![7u8; 70_000]).unwrap();
        TapeRecorder::new(&src).commit().unwrap();
        let tape = Tape::discover(&src).unwrap();
        (dir, TapeFs::new(tape, name, cache).unwrap())
    }

    #[test]
    fn attributes_describe_a_read_only_file_owned_by_the_mounter() {
        let (_dir, fs) = tape_fs(DEFAULT_NAME, CacheMode::KeepCache);
        let root = fs.attr(ROOT_INO).unwrap();
        assert_eq!(
            (root.kind, root.perm, root.nlink),
            (FileType::Directory, 0o555, 2)
        );
        let file = fs.attr(FILE_INO).unwrap();
        assert_eq!(file.kind, FileType::RegularFile);
        assert_eq!(file.perm, 0o444);
        assert_eq!(file.size, fs.tape.total_size());
        assert_eq!(file.mtime, unix_time(fs.tape.created_at()));
        // SAFETY: getuid cannot fail.
        assert_eq!(file.uid, unsafe { libc::getuid() });
        assert_eq!(fs.attr(INodeNo(3)).unwrap_err(), Errno::ENOENT);
    }

    #[test]
    fn lookup_and_listing_know_only_the_one_name() {
        let (_dir, fs) = tape_fs("photos.tar", CacheMode::KeepCache);
        assert_eq!(
            fs.child(ROOT_INO, OsStr::new("photos.tar")).unwrap().ino,
            FILE_INO
        );
        assert_eq!(
            fs.child(ROOT_INO, OsStr::new("archive.tar")).unwrap_err(),
            Errno::ENOENT
        );
        assert_eq!(
            fs.child(FILE_INO, OsStr::new("x")).unwrap_err(),
            Errno::ENOTDIR
        );
        let names: Vec<&OsStr> = fs.listing(ROOT_INO).unwrap().iter().map(|e| e.2).collect();
        assert_eq!(names, [".", "..", "photos.tar"]);
        assert_eq!(fs.listing(FILE_INO).unwrap_err(), Errno::ENOTDIR);
    }

    #[test]
    fn open_refuses_writing_and_sets_the_cache_policy() {
        let (_dir, fs) = tape_fs(DEFAULT_NAME, CacheMode::KeepCache);
        let flags = fs.open_file(FILE_INO, OpenFlags(libc::O_RDONLY)).unwrap();
        assert!(flags.contains(FopenFlags::FOPEN_KEEP_CACHE));
        assert!(!flags.contains(FopenFlags::FOPEN_DIRECT_IO));
        for write in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
            assert_eq!(
                fs.open_file(FILE_INO, OpenFlags(write)).unwrap_err(),
                Errno::EROFS
            );
        }
        assert_eq!(
            fs.open_file(ROOT_INO, OpenFlags(0)).unwrap_err(),
            Errno::EISDIR
        );
        assert_eq!(
            fs.check_access(FILE_INO, AccessFlags::W_OK).unwrap_err(),
            Errno::EROFS
        );
        assert!(fs.check_access(FILE_INO, AccessFlags::R_OK).is_ok());

        let (_dir, direct) = tape_fs(DEFAULT_NAME, CacheMode::DirectIo);
        let flags = direct
            .open_file(FILE_INO, OpenFlags(libc::O_RDONLY))
            .unwrap();
        assert!(flags.contains(FopenFlags::FOPEN_DIRECT_IO));
    }

    #[test]
    fn reads_are_the_tape_bytes_clamped_at_the_end() {
        let (_dir, fs) = tape_fs(DEFAULT_NAME, CacheMode::KeepCache);
        let total = fs.tape.total_size();
        let mut whole = vec![0u8; total as usize];
        assert_eq!(fs.tape.read_at(0, &mut whole).unwrap(), whole.len());

        for (offset, size) in [(0, 512), (500, 30), (total - 1500, 1 << 20), (total, 4096)] {
            let len = fs.clamp_len(offset, size);
            assert_eq!(len as u64, u64::from(size).min(total - offset));
            let mut buf = vec![0u8; len];
            let read = fs.read_range(FILE_INO, offset, &mut buf).unwrap();
            assert_eq!(&buf[..read], &whole[offset as usize..offset as usize + len]);
        }
        assert_eq!(fs.clamp_len(total + 10, 4096), 0);
        assert_eq!(
            fs.read_range(ROOT_INO, 0, &mut [0u8; 8]).unwrap_err(),
            Errno::EISDIR
        );
    }

    #[test]
    fn a_changed_source_reads_as_eio_elsewhere_intact() {
        let (dir, fs) = tape_fs(DEFAULT_NAME, CacheMode::KeepCache);
        let big = dir.path().join("src/d/big");
        fs::write(&big, vec![8u8; 70_000]).unwrap();
        let file = fs::File::options().write(true).open(&big).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        let total = fs.tape.total_size();
        let mut buf = vec![0u8; total as usize];
        assert_eq!(
            fs.read_range(FILE_INO, 0, &mut buf).unwrap_err(),
            Errno::EIO
        );
        // The root's header does not touch the changed file.
        assert_eq!(fs.read_range(FILE_INO, 0, &mut buf[..512]).unwrap(), 512);
    }

    #[test]
    fn bad_names_are_refused() {
        let (dir, _fs) = tape_fs(DEFAULT_NAME, CacheMode::KeepCache);
        let tape = Tape::discover(dir.path().join("src")).unwrap();
        assert!(TapeFs::new(tape, "a/b", CacheMode::KeepCache).is_err());
    }

    #[test]
    fn parses_mountinfo_lines() {
        let line = b"36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw";
        let entry = parse_mountinfo_line(line).unwrap();
        assert_eq!(entry.mount_id, 36);
        assert_eq!((entry.dev_major, entry.dev_minor), (98, 0));
        assert_eq!(entry.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(entry.fs_type, "ext3");

        let fuse = b"612 29 0:77 / /tmp/m rw,nosuid,nodev,relatime - fuse tartape rw,user_id=0";
        let entry = parse_mountinfo_line(fuse).unwrap();
        assert_eq!((entry.dev_major, entry.dev_minor), (0, 77));
        assert_eq!(entry.fs_type, "fuse");

        assert_eq!(parse_mountinfo_line(b""), None);
        assert_eq!(parse_mountinfo_line(b"garbage"), None);
    }

    #[test]
    fn unescapes_octal_sequences_only() {
        assert_eq!(
            unescape_mountinfo(b"a\\040b\\011c\\012d\\134e"),
            b"a b\tc\nd\\e"
        );
        assert_eq!(unescape_mountinfo(b"tail\\"), b"tail\\");
        assert_eq!(unescape_mountinfo(b"\\9ab"), b"\\9ab");
        assert_eq!(unescape_mountinfo(b"\\777"), b"\\777");
    }

    #[test]
    fn root_is_a_mount_point_and_tmp_subdir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = std::env::temp_dir().join(format!("tartape-mp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let canonical = dir.canonicalize().unwrap();
        assert!(!is_mount_point(&canonical).unwrap());
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn names_must_be_one_component() {
        assert!(validate_name("archive.tar").is_ok());
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unix_time_handles_negative_seconds() {
        assert_eq!(unix_time(0), UNIX_EPOCH);
        assert_eq!(unix_time(60), UNIX_EPOCH + Duration::from_secs(60));
        assert_eq!(unix_time(-60), UNIX_EPOCH - Duration::from_secs(60));
    }

    #[test]
    fn mountpoint_checks_name_the_problem() {
        let base = std::env::temp_dir().join(format!("tartape-mpc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("full")).unwrap();
        fs::write(base.join("full/x"), b"x").unwrap();
        fs::write(base.join("file"), b"x").unwrap();
        fs::create_dir_all(base.join("empty")).unwrap();

        let message = |path: &str| check_mountpoint(&base.join(path)).unwrap_err().to_string();
        assert!(message("missing").contains("does not exist"));
        assert!(message("file").contains("not a directory"));
        assert!(message("full").contains("not empty"));
        assert!(
            check_mountpoint(Path::new("/"))
                .unwrap_err()
                .to_string()
                .contains("already a mount point")
        );
        assert_eq!(
            check_mountpoint(&base.join("empty")).unwrap(),
            base.join("empty").canonicalize().unwrap()
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
