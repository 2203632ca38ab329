//! The filesystem: a thin translator from FUSE requests to [`Tape`] calls. A root
//! directory (inode 1) holds a single regular file (inode 2, `archive.tar` by default)
//! whose bytes are `tape.read_at(offset, …)`.
//!
//! The mount is read-only (`MS_RDONLY`): the kernel refuses writes, creates, renames,
//! links, attribute and xattr changes with EROFS before they reach this filesystem, so no
//! handler is written out to refuse them one by one.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
    SessionUnmounter,
};
use log::error;

use super::system::mount_entry;
use super::{CacheMode, DEFAULT_READAHEAD_KB, validate_name};
use crate::error::Result;
use crate::tape::Tape;

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
    pub(super) disarm: Arc<Mutex<Option<Disarm>>>,
}

/// fuser unmounts again when its session ends, even when the kernel has already removed
/// the mount (`tartape umount`), and then logs a spurious "Failed to umount filesystem".
/// At `destroy` — the end of the session — a mount that is verifiably gone has its
/// unmount handle consumed here, quietly, so that fuser has nothing left to undo.
pub(super) struct Disarm {
    pub(super) unmounter: SessionUnmounter,
    pub(super) mountpoint: PathBuf,
    pub(super) dev: (u32, u32),
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
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
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

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.check_access(ino, mask) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
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
}

/// A unix time in seconds as a `SystemTime` (also before 1970).
fn unix_time(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_NAME;
    use super::*;
    use crate::record::TapeRecorder;
    use std::fs;

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
        assert_eq!(file.uid, rustix::process::getuid().as_raw());
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
    fn unix_time_handles_negative_seconds() {
        assert_eq!(unix_time(0), UNIX_EPOCH);
        assert_eq!(unix_time(60), UNIX_EPOCH + Duration::from_secs(60));
        assert_eq!(unix_time(-60), UNIX_EPOCH - Duration::from_secs(60));
    }
}
