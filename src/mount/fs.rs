//! The filesystem: a thin translator from FUSE requests to [`Tape`] calls. A root
//! directory (inode 1) holds regular files (inodes 2, 3, …): either the single tape file
//! (`archive.tar` by default) whose bytes are `tape.read_at(offset, …)`, or, with volumes
//! (SPEC §8), one file per volume — a window of the tape — plus a read-only copy of the
//! catalog, so that copying the mount's content copies everything a restore needs.
//!
//! The mount is read-only (`MS_RDONLY`): the kernel refuses writes, creates, renames,
//! links, attribute and xattr changes with EROFS before they reach this filesystem, so no
//! handler is written out to refuse them one by one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use log::error;

use super::{CacheMode, DEFAULT_READAHEAD_KB, validate_name};
use crate::error::{Error, Result};
use crate::readahead::{Reach, ReadAhead};
use crate::tape::Tape;
use crate::volume::{NameTemplate, VolumeSet};

/// Inode of the root directory (fixed by FUSE).
const ROOT_INO: INodeNo = INodeNo::ROOT;
/// Inode of the first file; file i (0-based, in listing order) is inode `FIRST_INO + i`.
/// An inode is not a tape ordinal.
const FIRST_INO: u64 = 2;
/// Inode of the tape file when the mount holds only it.
#[cfg(test)]
const FILE_INO: INodeNo = INodeNo(FIRST_INO);

/// More volume files than this is a volume size chosen by mistake.
const MAX_VOLUMES: u64 = 1_000_000;

/// What the mount holds.
#[derive(Clone, Debug, Default)]
pub enum Layout {
    /// One file, the whole tape, with this name.
    #[default]
    Single,
    /// The tape's volumes (named by the template) and a copy of the catalog.
    Volumes {
        /// Bytes per volume, a multiple of 512 (SPEC §8); the last one may be shorter.
        size: u64,
        /// Names the volume files (`{name}_{fingerprint:.8}.tar.{pindex}` by default).
        template: NameTemplate,
    },
}

/// Where the bytes of a mounted file come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    /// Tape bytes from this offset on.
    Tape { start: u64 },
    /// The catalog file the tape was opened from.
    Catalog,
}

/// The last reads of the mount's tape, to tell a sequential reader from a random one.
#[derive(Default)]
struct Sequence {
    /// Their tape ranges, `[start, end)`; the oldest is replaced.
    recent: [(u64, u64); RECENT_READS],
    /// Where the next one goes in `recent`.
    slot: usize,
    /// One bit per read, the newest lowest: whether it touched one of the reads before it.
    touched: u8,
    /// Whether the reads are sequential now.
    sequential: bool,
}

/// Reads looked back at (the bits of [`Sequence::touched`]).
const RECENT_READS: usize = 8;
/// Of the last [`RECENT_READS`], how many must touch another for the reads to be sequential.
const SEQUENTIAL_READS: u32 = 4;

impl Drop for TapeFs {
    fn drop(&mut self) {
        self.readahead.finish();
    }
}

/// One file of the mount.
struct MountFile {
    name: OsString,
    content: Content,
    size: u64,
}

/// The catalog file as it was when mounted: a read of the copy that finds it otherwise
/// (written in place, which tartape never does) fails with EIO.
struct CatalogSnapshot {
    file: std::fs::File,
    stamp: (u64, i64, i64, i64, i64),
}

fn stamp(meta: &std::fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

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
    tape: Arc<Tape>,
    /// Files ahead asked of the disk while reads are sequential on a cold cache.
    readahead: Arc<ReadAhead>,
    /// The reads seen last, to tell sequential from random.
    sequence: Mutex<Sequence>,
    files: Vec<MountFile>,
    by_name: HashMap<OsString, usize>,
    catalog: Option<CatalogSnapshot>,
    root_attr: FileAttr,
    /// Attributes shared by every file (all but inode and size).
    file_attr: FileAttr,
    open_flags: FopenFlags,
}

impl TapeFs {
    /// A filesystem serving `tape` as the file `name`, owned by the current user.
    pub fn new(tape: Tape, name: &str, cache: CacheMode) -> Result<TapeFs> {
        TapeFs::with_layout(tape, name, &Layout::Single, cache)
    }

    /// A filesystem serving `tape` as `layout` says: the file `name`, or volume files
    /// and the catalog copy.
    pub fn with_layout(
        tape: Tape,
        name: &str,
        layout: &Layout,
        cache: CacheMode,
    ) -> Result<TapeFs> {
        validate_name(name)?;
        let total_size = tape.total_size();
        let mut files = Vec::new();
        let mut catalog = None;
        match layout {
            Layout::Single => files.push(MountFile {
                name: OsString::from(name),
                content: Content::Tape { start: 0 },
                size: total_size,
            }),
            Layout::Volumes { size, template } => {
                let set = VolumeSet::new(tape.meta(), *size, template.clone())?;
                let volumes = set.volumes();
                if volumes.count() > MAX_VOLUMES {
                    return Err(Error::Usage(format!(
                        "--volume-size {size} cuts this tape of {total_size} bytes into {} \
                         volumes; at most {MAX_VOLUMES} can be mounted (use a larger size)",
                        volumes.count()
                    )));
                }
                for part in 1..=volumes.count() {
                    let (start, end) = volumes.window(part).expect("a part of the tape");
                    files.push(MountFile {
                        name: OsString::from_vec(set.name(part)?),
                        content: Content::Tape { start },
                        size: end - start,
                    });
                }
                let file = tape
                    .catalog()
                    .file()
                    .try_clone()
                    .map_err(|e| Error::io(tape.catalog().path(), e))?;
                let opened = file
                    .metadata()
                    .map_err(|e| Error::io(tape.catalog().path(), e))?;
                files.push(MountFile {
                    name: OsString::from_vec(set.catalog_copy_name()),
                    content: Content::Catalog,
                    size: opened.len(),
                });
                catalog = Some(CatalogSnapshot {
                    file,
                    stamp: stamp(&opened),
                });
            }
        }
        let mut by_name = HashMap::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            if by_name.insert(f.name.clone(), i).is_some() {
                return Err(Error::Usage(format!(
                    "--volume-name gives two files the name {:?}",
                    f.name
                )));
            }
        }
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
        let file_attr = FileAttr {
            ino: INodeNo(FIRST_INO),
            size: 0,
            blocks: 0,
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
            tape: Arc::new(tape),
            readahead: Arc::new(ReadAhead::new(Reach::Heads)),
            sequence: Mutex::new(Sequence::default()),
            files,
            by_name,
            catalog,
            root_attr,
            file_attr,
            open_flags,
        })
    }

    /// The file with inode `ino`.
    fn file(&self, ino: INodeNo) -> Option<&MountFile> {
        let i = ino.0.checked_sub(FIRST_INO)?;
        self.files.get(usize::try_from(i).ok()?)
    }

    /// Attributes of the file with index `i`.
    fn attr_of(&self, i: usize) -> FileAttr {
        let size = self.files[i].size;
        FileAttr {
            ino: INodeNo(FIRST_INO + i as u64),
            size,
            blocks: size.div_ceil(512),
            ..self.file_attr
        }
    }

    /// Attributes of an inode.
    fn attr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        if ino == ROOT_INO {
            return Ok(self.root_attr);
        }
        self.file(ino)
            .map(|_| self.attr_of((ino.0 - FIRST_INO) as usize))
            .ok_or(Errno::ENOENT)
    }

    /// The entry `name` of directory `parent`.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        match parent {
            ROOT_INO => self
                .by_name
                .get(name)
                .map(|&i| self.attr_of(i))
                .ok_or(Errno::ENOENT),
            ino if self.file(ino).is_some() => Err(Errno::ENOTDIR),
            _ => Err(Errno::ENOENT),
        }
    }

    /// Open flags for the tape file, refusing anything but reading.
    fn open_file(&self, ino: INodeNo, flags: OpenFlags) -> Result<FopenFlags, Errno> {
        match ino {
            ROOT_INO => return Err(Errno::EISDIR),
            ino if self.file(ino).is_none() => return Err(Errno::ENOENT),
            _ => {}
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        Ok(self.open_flags)
    }

    /// The listing of a directory from position `from` on: (inode, kind, name), in
    /// readdir order (`.`, `..`, then the files).
    fn listing(
        &self,
        ino: INodeNo,
        from: usize,
    ) -> Result<impl Iterator<Item = (INodeNo, FileType, &OsStr)>, Errno> {
        match ino {
            ROOT_INO => {}
            ino if self.file(ino).is_some() => return Err(Errno::ENOTDIR),
            _ => return Err(Errno::ENOENT),
        }
        let dots = [
            (ROOT_INO, FileType::Directory, OsStr::new(".")),
            (ROOT_INO, FileType::Directory, OsStr::new("..")),
        ];
        let files = self.files.iter().enumerate().map(|(i, f)| {
            (
                INodeNo(FIRST_INO + i as u64),
                FileType::RegularFile,
                f.name.as_os_str(),
            )
        });
        Ok(dots.into_iter().chain(files).skip(from))
    }

    /// Fills `buf` with the tape bytes from `offset`; the length read is short only at the
    /// end of the tape. A tape error (integrity, I/O) is logged with its cause and becomes
    /// EIO: the kernel must never see a short or zero-filled read for a broken range.
    fn read_range(&self, ino: INodeNo, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let file = match ino {
            ROOT_INO => return Err(Errno::EISDIR),
            ino => self.file(ino).ok_or(Errno::ENOENT)?,
        };
        // Never past the end of this file (a volume is a window of the tape).
        let len = file.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..len];
        let read = match file.content {
            Content::Tape { start } => {
                self.note_read(start + offset, buf.len() as u64);
                self.tape
                    .read_at_with(start + offset, buf, Some(&self.readahead))
            }
            Content::Catalog => self.read_catalog(offset, buf),
        };
        match read {
            Ok(read) => Ok(read),
            Err(err) => {
                error!(
                    "read of {} bytes at offset {offset} of {}: {err}",
                    buf.len(),
                    file.name.to_string_lossy()
                );
                Err(Errno::EIO)
            }
        }
    }

    /// Tells the read-ahead where a sequential reader is. A read touches another when one
    /// ends where the other starts (the kernel's readahead sends a few at once, served by
    /// several threads, so they are not always seen in order); when [`SEQUENTIAL_READS`]
    /// of the last [`RECENT_READS`] did, the reads are sequential: the first such read
    /// starts a run there, each next one that touches another moves it on (the reads
    /// before it are being served: reading ahead of them is too late). Random reads touch nothing, so they do
    /// not trigger it; once the reads are no longer sequential, the read-ahead stops when
    /// its window is full.
    fn note_read(&self, at: u64, len: u64) {
        let end = at + len;
        let mut seq = self.sequence.lock().unwrap_or_else(|e| e.into_inner());
        // The latest start among this read and those it touches.
        let touched = seq
            .recent
            .iter()
            .filter(|&&(start, stop)| start < stop && (stop == at || start == end))
            .map(|&(start, _)| start.max(at))
            .max();
        let touches = touched.is_some();
        seq.touched = (seq.touched << 1) | u8::from(touches);
        let slot = seq.slot;
        seq.recent[slot] = (at, end);
        seq.slot = (slot + 1) % RECENT_READS;
        let was = seq.sequential;
        seq.sequential = seq.touched.count_ones() >= SEQUENTIAL_READS;
        match (was, seq.sequential) {
            (false, true) => self.readahead.start_run(touched.unwrap_or(at)),
            (true, true) if touches => self.readahead.advance(touched.unwrap_or(at)),
            _ => {}
        }
    }

    /// Bytes of the catalog copy: the catalog file as mounted, checked unchanged after the
    /// read.
    fn read_catalog(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let snapshot = self
            .catalog
            .as_ref()
            .expect("a volume mount has its catalog");
        let path = self.tape.catalog().path();
        let mut filled = 0;
        while filled < buf.len() {
            let n = snapshot
                .file
                .read_at(&mut buf[filled..], offset + filled as u64)
                .map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let now = snapshot.file.metadata().map_err(|e| Error::io(path, e))?;
        if stamp(&now) != snapshot.stamp || filled != buf.len() {
            return Err(Error::CatalogUnreadable {
                path: path.to_path_buf(),
                problem: "the catalog file was changed in place since it was mounted".into(),
            });
        }
        Ok(filled)
    }

    /// Length of a read request once clamped to the end of the file.
    fn clamp_len(&self, ino: INodeNo, offset: u64, size: u32) -> usize {
        let file_size = self.file(ino).map_or(0, |f| f.size);
        let remaining = file_size.saturating_sub(offset);
        // Bounded by `size`, a u32, so the cast cannot truncate.
        remaining.min(u64::from(size)) as usize
    }

    /// Answer to `access(2)`: reading and listing are allowed, writing never.
    fn check_access(&self, ino: INodeNo, mask: AccessFlags) -> Result<(), Errno> {
        self.attr(ino)?;
        if mask.contains(AccessFlags::W_OK) {
            return Err(Errno::EROFS);
        }
        if mask.contains(AccessFlags::X_OK) && ino != ROOT_INO {
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
        if !self.readahead.is_off() {
            let (tape, readahead) = (Arc::clone(&self.tape), Arc::clone(&self.readahead));
            // Only a hint: a mount without it serves the same bytes.
            let _ = std::thread::Builder::new()
                .name("tape-readahead".into())
                .spawn(move || tape.read_ahead(&readahead, tape.total_size()));
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.readahead.finish();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name) {
            Ok(attr) => reply.entry(&ATTR_TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Ok(attr) => reply.attr(&ATTR_TTL, &attr),
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
        let len = self.clamp_len(ino, offset, size);
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
        match self.listing(ino, 0) {
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
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        let entries = match self.listing(ino, from) {
            Ok(entries) => entries,
            Err(errno) => return reply.error(errno),
        };
        // The offset of an entry is the position of the one after it.
        for (index, (entry_ino, kind, name)) in entries.enumerate() {
            let next_offset = (from + index) as u64 + 1;
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
        let bytes: u64 = self.files.iter().map(|f| f.size).sum();
        let blocks = bytes.div_ceil(u64::from(block_size));
        let inodes = self.files.len() as u64 + 1;
        reply.statfs(blocks, 0, 0, inodes, 0, block_size, 255, block_size);
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
        // Only SEEK_DATA/SEEK_HOLE reach the filesystem; the files have no holes.
        let result = match (ino, self.file(ino).map(|f| f.size), whence) {
            (ROOT_INO, _, _) => Err(Errno::EISDIR),
            (_, None, _) => Err(Errno::ENOENT),
            (_, Some(_), _) if offset < 0 => Err(Errno::ENXIO),
            (_, Some(size), libc::SEEK_DATA) if (offset as u64) < size => Ok(offset),
            (_, Some(size), libc::SEEK_HOLE) if (offset as u64) < size => Ok(size as i64),
            (_, Some(_), libc::SEEK_DATA | libc::SEEK_HOLE) => Err(Errno::ENXIO),
            (_, Some(_), _) => Err(Errno::EINVAL),
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
        let names: Vec<&OsStr> = fs.listing(ROOT_INO, 0).unwrap().map(|e| e.2).collect();
        assert_eq!(names, [".", "..", "photos.tar"]);
        assert_eq!(fs.listing(ROOT_INO, 2).unwrap().count(), 1);
        assert!(matches!(fs.listing(FILE_INO, 0), Err(Errno::ENOTDIR)));
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
            let len = fs.clamp_len(FILE_INO, offset, size);
            assert_eq!(len as u64, u64::from(size).min(total - offset));
            let mut buf = vec![0u8; len];
            let read = fs.read_range(FILE_INO, offset, &mut buf).unwrap();
            assert_eq!(&buf[..read], &whole[offset as usize..offset as usize + len]);
        }
        assert_eq!(fs.clamp_len(FILE_INO, total + 10, 4096), 0);
        assert_eq!(
            fs.read_range(ROOT_INO, 0, &mut [0u8; 8]).unwrap_err(),
            Errno::EISDIR
        );
    }

    #[test]
    fn sequential_reads_start_the_read_ahead_and_random_ones_do_not() {
        let (_dir, fs) = tape_fs(DEFAULT_NAME, CacheMode::KeepCache);
        let read = |at: u64, len: usize| {
            let mut buf = vec![0u8; len];
            fs.read_range(FILE_INO, at, &mut buf).unwrap();
        };
        // Random reads: none ends where another starts.
        for at in [
            40_000, 512, 61_440, 7, 20_000, 33_333, 1_000, 50_000, 9_999, 70_000,
        ] {
            read(at, 100);
        }
        assert_eq!(fs.readahead.state().0, 0, "random reads started a run");
        // Sequential, though not seen in order (as the kernel's readahead sends them).
        for at in [1024, 0, 2048, 4096, 3072] {
            read(at, 1024);
            assert_eq!(
                fs.readahead.state().0,
                0,
                "four touching reads are not yet enough"
            );
        }
        read(5120, 1024);
        assert_eq!(
            fs.readahead.state(),
            (1, 5120),
            "a run starts at the latest read"
        );
        read(6144, 1024);
        read(8192, 1024);
        read(7168, 1024);
        assert_eq!(
            fs.readahead.state(),
            (1, 8192),
            "the run moves on with the reads"
        );
        // Random reads again: the run is left, and stays where it was.
        for at in [60_000, 100, 30_000, 15_000, 45_000, 2_500, 66_000, 25_000] {
            read(at, 100);
        }
        let (runs, position) = fs.readahead.state();
        assert_eq!(runs, 1);
        assert!(
            position < 60_000,
            "random reads moved the run to {position}"
        );
        // Sequential once more: a new run.
        for at in (20_480..).step_by(4096).take(6) {
            read(at, 4096);
        }
        assert_eq!(fs.readahead.state(), (2, 20_480 + 5 * 4096));
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
    fn a_volume_layout_holds_the_windows_and_the_catalog_copy() {
        let (dir, _fs) = tape_fs(DEFAULT_NAME, CacheMode::KeepCache);
        let tape = Tape::discover(dir.path().join("src")).unwrap();
        let total = tape.total_size();
        let mut whole = vec![0u8; total as usize];
        tape.read_at(0, &mut whole).unwrap();
        let catalog = fs::read(tape.catalog().path()).unwrap();
        let fp8 = tape.fingerprint()[..8].to_string();
        let layout = Layout::Volumes {
            size: 32 * 1024,
            template: NameTemplate::default(),
        };
        let fs = TapeFs::with_layout(tape, DEFAULT_NAME, &layout, CacheMode::KeepCache).unwrap();
        let names: Vec<String> = fs
            .listing(ROOT_INO, 2)
            .unwrap()
            .map(|e| e.2.to_string_lossy().into_owned())
            .collect();
        let n = total.div_ceil(32 * 1024) as usize;
        assert_eq!(names.len(), n + 1);
        assert_eq!(names[0], format!("src_{fp8}.tar.001"));
        assert_eq!(names[n], format!("src_{fp8}.tartape"));
        let mut joined = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let attr = fs.child(ROOT_INO, OsStr::new(name)).unwrap();
            assert_eq!(attr.ino, INodeNo(FIRST_INO + i as u64));
            assert_eq!(attr.perm, 0o444);
            let mut buf = vec![0u8; attr.size as usize + 100];
            let read = fs.read_range(attr.ino, 0, &mut buf).unwrap();
            assert_eq!(read as u64, attr.size, "{name}");
            if i < n {
                joined.extend_from_slice(&buf[..read]);
            } else {
                assert_eq!(&buf[..read], catalog.as_slice());
            }
        }
        assert_eq!(joined, whole);
        // A read past a volume's end stops at it, not at the tape's end.
        let second = INodeNo(FIRST_INO + 1);
        let mut buf = vec![0u8; 4096];
        let read = fs.read_range(second, 32 * 1024 - 100, &mut buf).unwrap();
        assert_eq!(read, 100);
        assert_eq!(fs.clamp_len(second, 32 * 1024 - 100, 4096), 100);
        assert_eq!(
            fs.attr(INodeNo(FIRST_INO + n as u64 + 1)).unwrap_err(),
            Errno::ENOENT
        );
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
