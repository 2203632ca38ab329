//! An opened tape: integrity checks against the snapshot, the thread-safe random-access
//! reader, and the player that turns a byte range into events (SPEC §3, §4).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};

use crate::catalog::{Catalog, HashAlgo, TapeMeta, hex};
use crate::entry::{Entry, Kind, Ordinal};
use crate::error::{Error, Result};
use crate::header::{BLOCK, Header};
use crate::layout::{Part, Position, padding};
use crate::record::{ContentHasher, canonical_source, default_catalog, normalised_mode};

/// Direct-mapped cache sizes: bounded memory however many reads a mount serves.
const ENTRY_CACHE_SLOTS: usize = 4096;
const FD_CACHE_SLOTS: usize = 64;

/// How much of the tape `verify` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyLevel {
    /// Every directory and a sample of the other entries.
    Quick,
    /// Every entry's metadata.
    Full,
    /// Every entry's metadata and every file's content against the recorded digests.
    Deep,
}

/// One way in which the source no longer matches the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    pub arc_path: String,
    pub change: String,
}

impl std::fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.arc_path, self.change)
    }
}

impl From<Discrepancy> for Error {
    fn from(d: Discrepancy) -> Error {
        Error::Integrity {
            path: d.arc_path,
            change: d.change,
        }
    }
}

/// Where an entry lies in the tape.
#[derive(Debug, Clone)]
pub struct EntryLayout {
    pub entry: Entry,
    pub header: (u64, u64),
    pub content: (u64, u64),
    pub padding: (u64, u64),
}

impl EntryLayout {
    fn of(entry: Entry) -> EntryLayout {
        let h = entry.start_offset;
        let c = h + BLOCK;
        let p = c + entry.size;
        let end = p + padding(entry.size);
        EntryLayout {
            entry,
            header: (h, c),
            content: (c, p),
            padding: (p, end),
        }
    }
}

/// What covers one byte of the tape, with the entry row.
#[derive(Debug, Clone)]
pub enum Located {
    Entry {
        layout: Box<EntryLayout>,
        part: Part,
        offset_in_part: u64,
    },
    Footer {
        offset_in_footer: u64,
    },
}

/// A verified descriptor of an entry, kept across reads, with what is needed to check
/// cheaply that the path still leads to it.
struct OpenFile {
    ordinal: Ordinal,
    file: Arc<File>,
    rel: CString,
    dev: u64,
    ino: u64,
}

struct CachedEntry {
    entry: Entry,
    header: Header,
}

/// A recorded tape bound to its source directory.
///
/// `read_at` may be called from many threads at once.
pub struct Tape {
    root: PathBuf,
    root_fd: OwnedFd,
    catalog: Catalog,
    entries: Vec<Mutex<Option<Arc<CachedEntry>>>>,
    fds: Vec<Mutex<Option<OpenFile>>>,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("root", &self.root)
            .field("catalog", &self.catalog.path())
            .finish()
    }
}

impl Tape {
    /// Opens the tape of `dir` from its default catalog (`DIR/.tartape/index.db`).
    pub fn discover(dir: impl AsRef<Path>) -> Result<Tape> {
        Tape::open_with(dir.as_ref(), None)
    }

    /// Opens the tape of `dir` from the catalog at `catalog`.
    pub fn open(dir: impl AsRef<Path>, catalog: impl AsRef<Path>) -> Result<Tape> {
        Tape::open_with(dir.as_ref(), Some(catalog.as_ref()))
    }

    /// Opens from `catalog`, or from the default location when `None`.
    pub fn open_with(dir: &Path, catalog: Option<&Path>) -> Result<Tape> {
        let root = canonical_source(dir)?;
        let catalog_path = catalog.map_or_else(|| default_catalog(&root), Path::to_path_buf);
        let catalog = Catalog::open(&catalog_path)?;
        let c_root = CString::new(root.as_os_str().as_bytes()).map_err(|_| {
            Error::io(
                &root,
                io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"),
            )
        })?;
        // SAFETY: plain syscall on a valid C string; the fd is owned below.
        let fd = unsafe {
            libc::open(
                c_root.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::io(&root, io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by open and is owned by nobody else.
        let root_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Tape {
            root,
            root_fd,
            catalog,
            entries: (0..ENTRY_CACHE_SLOTS).map(|_| Mutex::new(None)).collect(),
            fds: (0..FD_CACHE_SLOTS).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Whether a catalog exists for `dir` at `catalog` (or the default location).
    pub fn catalog_exists(dir: &Path, catalog: Option<&Path>) -> bool {
        match catalog {
            Some(c) => c.exists(),
            None => default_catalog(dir).exists(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn meta(&self) -> &TapeMeta {
        self.catalog.meta()
    }

    pub fn fingerprint(&self) -> &str {
        &self.meta().fingerprint
    }

    pub fn total_size(&self) -> u64 {
        self.catalog.offsets().total_size()
    }

    pub fn created_at(&self) -> i64 {
        self.meta().created_at
    }

    pub fn entry_count(&self) -> u64 {
        self.catalog.offsets().len() as u64
    }

    /// Which entry (and which part of it) covers byte `offset`.
    pub fn locate(&self, offset: u64) -> Result<Located> {
        let offsets = self.catalog.offsets();
        let total = self.total_size();
        if offset >= total {
            return Err(Error::Usage(format!(
                "offset {offset} is past the end of the tape ({total} bytes)"
            )));
        }
        let Some(ordinal) = offsets.entry_at(offset) else {
            return Ok(Located::Footer {
                offset_in_footer: offset - offsets.footer_start(),
            });
        };
        // The offset table holds no sizes: the row gives this entry's.
        let entry = self.catalog.entry(ordinal)?;
        let size = entry.size;
        match offsets.position(offset, |_| size) {
            Some(Position::Entry {
                part,
                offset_in_part,
                ..
            }) => Ok(Located::Entry {
                layout: Box::new(EntryLayout::of(entry)),
                part,
                offset_in_part,
            }),
            _ => unreachable!("offset {offset} lies inside entry {}", ordinal.0),
        }
    }

    /// Where the entry with this arc path lies.
    pub fn locate_path(&self, arc_path: &[u8]) -> Result<Option<EntryLayout>> {
        let trimmed = arc_path.strip_suffix(b"/").unwrap_or(arc_path);
        Ok(self.catalog.find(trimmed)?.map(EntryLayout::of))
    }

    fn cached_entry(&self, ordinal: Ordinal) -> Result<Arc<CachedEntry>> {
        let slot = &self.entries[ordinal.0 as usize % ENTRY_CACHE_SLOTS];
        if let Some(c) = lock(slot).as_ref().filter(|c| c.entry.ordinal == ordinal) {
            return Ok(Arc::clone(c));
        }
        let entry = self.catalog.entry(ordinal)?;
        let header = Header::for_entry(&entry).map_err(|p| {
            Error::corrupt(
                self.catalog.path(),
                format!("{}: {p}", entry.display_path()),
            )
        })?;
        let cached = Arc::new(CachedEntry { entry, header });
        *lock(slot) = Some(Arc::clone(&cached));
        Ok(cached)
    }

    /// Reads tape bytes `[offset, offset + buf.len())` into `buf`; returns how many were
    /// read (fewer only at the end of the tape). Every entry the range touches is checked
    /// against the snapshot first; a mismatch is an [`Error::Integrity`].
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let total = self.total_size();
        let offsets = self.catalog.offsets();
        let mut pos = offset;
        let mut filled = 0usize;
        while filled < buf.len() && pos < total {
            let want = buf.len() - filled;
            let Some(ordinal) = offsets.entry_at(pos) else {
                let n = want.min((total - pos) as usize);
                buf[filled..filled + n].fill(0);
                filled += n;
                pos += n as u64;
                continue;
            };
            let cached = self.cached_entry(ordinal)?;
            let entry = &cached.entry;
            let file = self.checked_source(entry)?;
            let end = offsets.end(ordinal);
            let mut within = pos - entry.start_offset;
            let stop = filled + want.min((end - pos) as usize);
            while filled < stop {
                let out = &mut buf[filled..stop];
                let n = if within < BLOCK {
                    let h = &cached.header.as_bytes()[within as usize..];
                    let n = h.len().min(out.len());
                    out[..n].copy_from_slice(&h[..n]);
                    n
                } else if within < BLOCK + entry.size {
                    let at = within - BLOCK;
                    let n = out.len().min((entry.size - at) as usize);
                    let f = file.as_ref().expect("regular files are opened");
                    read_content(f, entry, at, &mut out[..n])?;
                    n
                } else {
                    out.fill(0);
                    out.len()
                };
                filled += n;
                within += n as u64;
            }
            pos = entry.start_offset + within;
        }
        Ok(filled)
    }

    /// Checks `entry` against the source; for a regular file returns the open descriptor
    /// (from the cache when possible, re-checked with `fstat`).
    fn checked_source(&self, entry: &Entry) -> Result<Option<Arc<File>>> {
        if entry.kind != Kind::File {
            self.check_entry(entry).map_err(Error::from)?;
            return Ok(None);
        }
        let slot = &self.fds[entry.ordinal.0 as usize % FD_CACHE_SLOTS];
        {
            let cached = lock(slot);
            if let Some(open) = cached.as_ref().filter(|o| o.ordinal == entry.ordinal) {
                // One lstat of the path: it must still be the same, unchanged file (a
                // deleted or replaced path fails here even though the descriptor lives).
                let st = fstatat_nofollow(self.root_fd.as_raw_fd(), &open.rel)
                    .map_err(|e| open_error(entry, e))?;
                if (st.st_dev, st.st_ino) != (open.dev, open.ino) {
                    return Err(Error::Integrity {
                        path: entry.display_path(),
                        change: "replaced by another file".into(),
                    });
                }
                if let Some(change) = compare(entry, &st, self.meta().anonymize) {
                    return Err(Error::Integrity {
                        path: entry.display_path(),
                        change,
                    });
                }
                return Ok(Some(Arc::clone(&open.file)));
            }
        }
        let f = self.open_file(entry)?;
        let st = fstat(f.as_raw_fd()).map_err(|e| open_error(entry, e))?;
        let rel = CString::new(entry.rel_path.clone())
            .map_err(|_| open_error(entry, io::Error::from(io::ErrorKind::InvalidInput)))?;
        let f = Arc::new(f);
        *lock(slot) = Some(OpenFile {
            ordinal: entry.ordinal,
            file: Arc::clone(&f),
            rel,
            dev: st.st_dev,
            ino: st.st_ino,
        });
        Ok(Some(f))
    }

    /// Opens a regular file of the tape without following symlinks, beneath the root,
    /// and checks the open descriptor against the snapshot.
    pub fn open_file(&self, entry: &Entry) -> Result<File> {
        // O_NONBLOCK: a FIFO put where a file was must not block the open; it is then
        // refused by the type check. (No effect on reads of regular files.)
        let flags = libc::O_RDONLY | libc::O_NONBLOCK;
        let f = open_beneath(self.root_fd.as_raw_fd(), &entry.rel_path, flags)
            .map_err(|e| open_error(entry, e))?;
        check_open_file(entry, &f, self.meta().anonymize)?;
        Ok(f)
    }

    /// Compares one entry's metadata with the source (no content read).
    pub fn check_entry(&self, entry: &Entry) -> std::result::Result<(), Discrepancy> {
        let discrepancy = |change: String| Discrepancy {
            arc_path: entry.display_path(),
            change,
        };
        let path_fd = open_beneath(
            self.root_fd.as_raw_fd(),
            &entry.rel_path,
            libc::O_PATH | libc::O_NOFOLLOW,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => discrepancy("missing".into()),
            Some(libc::ELOOP) | Some(libc::EXDEV) => {
                discrepancy("a parent directory was replaced by a symlink".into())
            }
            _ => discrepancy(format!("cannot be opened: {e}")),
        })?;
        let st = fstat(path_fd.as_raw_fd()).map_err(|e| discrepancy(e.to_string()))?;
        if let Some(change) = compare(entry, &st, self.meta().anonymize) {
            return Err(discrepancy(change));
        }
        if entry.kind == Kind::Symlink {
            let target =
                readlink_fd(path_fd.as_raw_fd()).map_err(|e| discrepancy(e.to_string()))?;
            if target != entry.link_target {
                return Err(discrepancy(format!(
                    "symlink target {} → {}",
                    String::from_utf8_lossy(&entry.link_target),
                    String::from_utf8_lossy(&target)
                )));
            }
        }
        Ok(())
    }

    /// Checks the tape against its source and returns every discrepancy found.
    pub fn verify(&self, level: VerifyLevel) -> Result<Vec<Discrepancy>> {
        let mut found = Vec::new();
        let count = self.entry_count().max(1);
        // Quick: all directories plus about 1000 evenly spread other entries.
        let stride = (count / 1000).max(1);
        let deep = level == VerifyLevel::Deep;
        if deep && self.meta().hash.is_none() {
            return Err(Error::Usage(
                "verify --deep needs content digests: record with --hash md5|sha256".into(),
            ));
        }
        self.catalog.for_each_from(Ordinal(0), |entry| {
            let sampled = level != VerifyLevel::Quick
                || entry.kind == Kind::Dir
                || entry.ordinal.0 % stride == 0
                || entry.ordinal.0 + 1 == count;
            if !sampled {
                return Ok(true);
            }
            match self.check_entry(&entry) {
                Err(d) => found.push(d),
                Ok(()) if deep && entry.kind == Kind::File => {
                    if let Err(e) = self.check_digest(&entry) {
                        found.push(match e {
                            Error::Integrity { path, change } => Discrepancy {
                                arc_path: path,
                                change,
                            },
                            other => Discrepancy {
                                arc_path: entry.display_path(),
                                change: other.to_string(),
                            },
                        });
                    }
                }
                Ok(()) => {}
            }
            Ok(true)
        })?;
        Ok(found)
    }

    fn check_digest(&self, entry: &Entry) -> Result<()> {
        let (Some(algo), Some(expected)) = (self.meta().hash, entry.digest.as_ref()) else {
            return Ok(());
        };
        let f = self.open_file(entry)?;
        let mut hasher = ContentHasher::new(algo);
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < entry.size {
            let n = buf.len().min((entry.size - at) as usize);
            read_content(&f, entry, at, &mut buf[..n])?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        check_not_grown(entry, &f, self.meta().anonymize)?;
        compare_digest(entry, algo, expected, hasher)
    }

    /// A player over this tape.
    pub fn player(&self) -> TapePlayer<'_> {
        TapePlayer {
            tape: self,
            md5: true,
            content_ranges: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads exactly `buf.len()` content bytes at `at`; fewer means the file shrank.
fn read_content(f: &File, entry: &Entry, at: u64, buf: &mut [u8]) -> Result<()> {
    read_content_probing(f, entry, at, buf, buf.len()).map(|_| ())
}

/// Reads at least `len` content bytes at `at` into `buf`, and more if the file has them
/// and `buf` room for them; returns how many it read. Fewer than `len` means the file
/// shrank.
fn read_content_probing(
    f: &File,
    entry: &Entry,
    at: u64,
    buf: &mut [u8],
    len: usize,
) -> Result<usize> {
    let mut done = 0;
    while done < len {
        match f.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => {
                return Err(Discrepancy {
                    arc_path: entry.display_path(),
                    change: format!(
                        "file shrank: read ended at {} of {} bytes",
                        at + done as u64,
                        entry.size
                    ),
                }
                .into());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Integrity {
                    path: entry.display_path(),
                    change: format!("read failed: {e}"),
                });
            }
        }
    }
    Ok(done)
}

/// The digest of what was read must be the one recorded.
fn compare_digest(
    entry: &Entry,
    algo: HashAlgo,
    expected: &str,
    hasher: ContentHasher,
) -> Result<()> {
    let got = hasher.finish();
    if got != expected {
        return Err(Discrepancy {
            arc_path: entry.display_path(),
            change: format!("content {} {expected} → {got}", algo.name()),
        }
        .into());
    }
    Ok(())
}

/// After a whole file was read: nothing past its recorded size, metadata unchanged.
fn check_not_grown(entry: &Entry, f: &File, anonymize: bool) -> Result<()> {
    let mut one = [0u8; 1];
    let past_end = f.read_at(&mut one, entry.size).unwrap_or(0);
    check_end_and_metadata(entry, f, anonymize, past_end)
}

/// `past_end` bytes were read past the recorded size of a whole file read: any means the
/// file grew. Then its metadata must not have changed either.
fn check_end_and_metadata(entry: &Entry, f: &File, anonymize: bool, past_end: usize) -> Result<()> {
    if past_end > 0 {
        return Err(Discrepancy {
            arc_path: entry.display_path(),
            change: format!("file grew past {} bytes while being read", entry.size),
        }
        .into());
    }
    check_open_file(entry, f, anonymize)
}

fn check_open_file(entry: &Entry, f: &File, anonymize: bool) -> Result<()> {
    let st = fstat(f.as_raw_fd()).map_err(|e| Error::Integrity {
        path: entry.display_path(),
        change: e.to_string(),
    })?;
    match compare(entry, &st, anonymize) {
        Some(change) => Err(Error::Integrity {
            path: entry.display_path(),
            change,
        }),
        None => Ok(()),
    }
}

fn open_error(entry: &Entry, e: io::Error) -> Error {
    let change = match e.raw_os_error() {
        Some(libc::ENOENT) => "missing".to_string(),
        Some(libc::ELOOP) => "replaced by a symlink".to_string(),
        Some(libc::EXDEV) => "path leaves the source root".to_string(),
        _ => format!("cannot be opened: {e}"),
    };
    Error::Integrity {
        path: entry.display_path(),
        change,
    }
}

fn kind_of(st: &libc::stat) -> &'static str {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "device",
    }
}

/// Describes how `st` differs from the snapshot of `entry`, if it does.
fn compare(entry: &Entry, st: &libc::stat, anonymize: bool) -> Option<String> {
    let kind = kind_of(st);
    if kind != entry.kind.name() {
        return Some(format!("type {} → {kind}", entry.kind.name()));
    }
    let mut changes = Vec::new();
    if entry.kind == Kind::File && st.st_size as u64 != entry.size {
        changes.push(format!("size {} → {}", entry.size, st.st_size));
    }
    if (st.st_mtime, st.st_mtime_nsec) != (entry.mtime_sec, entry.mtime_nsec) {
        changes.push(format!(
            "mtime {}.{:09} → {}.{:09}",
            entry.mtime_sec, entry.mtime_nsec, st.st_mtime, st.st_mtime_nsec
        ));
    }
    let mode = normalised_mode(entry.kind, st.st_mode & 0o7777, anonymize);
    if mode != entry.mode {
        changes.push(format!("mode {:04o} → {mode:04o}", entry.mode));
    }
    if !anonymize && (st.st_uid as u64, st.st_gid as u64) != (entry.uid, entry.gid) {
        changes.push(format!(
            "owner {}:{} → {}:{}",
            entry.uid, entry.gid, st.st_uid, st.st_gid
        ));
    }
    (!changes.is_empty()).then(|| changes.join(", "))
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter; fd is a live descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstatat_nofollow(dir: RawFd, rel: &CString) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter; `rel` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatat(dir, rel.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an empty path with an O_PATH descriptor reads the link itself.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Opens `rel` beneath the directory `root` without following any symlink on the way
/// (openat2 with RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH). On kernels without openat2,
/// falls back to openat with O_NOFOLLOW on the last component.
fn open_beneath(root: RawFd, rel: &[u8], flags: i32) -> io::Result<File> {
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    let c = CString::new(rel)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: open_how is plain data; all-zero is its neutral value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;
    // SAFETY: valid C string and open_how; the returned fd is owned by the File.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    } as i32;
    let fd = if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        unsafe { libc::openat(root, c.as_ptr(), flags) }
    } else {
        fd
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// How [`copy_content`] can move bytes to its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// A pipe: `splice` moves page-cache pages without copying them.
    Pipe,
    /// A regular file: `copy_file_range` copies inside the kernel.
    File,
    /// Anything else: `pread` + `write`.
    Other,
}

impl Sink {
    /// Classifies an open descriptor.
    pub fn of(fd: RawFd) -> Sink {
        match fstat(fd).map(|st| st.st_mode & libc::S_IFMT) {
            Ok(libc::S_IFIFO) => Sink::Pipe,
            Ok(libc::S_IFREG) => Sink::File,
            _ => Sink::Other,
        }
    }
}

/// Writes `len` content bytes of `entry`, from `offset` in `src`, to the descriptor `dst`
/// (at its current position) without passing them through user space where the kernel
/// allows. A source that ends early is an integrity error (the file shrank).
pub fn copy_content(
    entry: &Entry,
    src: &File,
    offset: u64,
    len: u64,
    dst: RawFd,
    sink: Sink,
) -> Result<()> {
    let mut off = offset as libc::loff_t;
    let mut left = len;
    let mut mode = sink;
    let mut buf = Vec::new();
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        // SAFETY: plain syscalls on live descriptors; `off` is ours.
        let n = match mode {
            Sink::Pipe => unsafe {
                libc::splice(
                    src.as_raw_fd(),
                    &mut off,
                    dst,
                    std::ptr::null_mut(),
                    chunk,
                    libc::SPLICE_F_MOVE,
                )
            },
            Sink::File => unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off,
                    dst,
                    std::ptr::null_mut(),
                    chunk,
                    0,
                )
            },
            Sink::Other => {
                if buf.is_empty() {
                    buf = vec![0u8; 1 << 20];
                }
                let n = buf.len().min(left as usize);
                read_content(src, entry, off as u64, &mut buf[..n])?;
                write_all_fd(dst, &buf[..n]).map_err(|e| Error::io("<output>", e))?;
                off += n as i64;
                n as isize
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not supported between these two: fall back to copying.
                // (EBADF: an O_APPEND output refuses copy_file_range.)
                Some(
                    libc::EINVAL | libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF,
                ) if mode != Sink::Other => {
                    mode = Sink::Other;
                    continue;
                }
                _ => return Err(Error::io("<output>", e)),
            }
        }
        if n == 0 {
            return Err(Discrepancy {
                arc_path: entry.display_path(),
                change: format!("file shrank: read ended at {} of {} bytes", off, entry.size),
            }
            .into());
        }
        left -= n as u64;
    }
    Ok(())
}

fn write_all_fd(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes from a valid slice to a live descriptor.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// One thing the player emits.
#[derive(Debug)]
pub enum Event<'a> {
    /// Before any byte of an entry.
    FileStart {
        entry: &'a Entry,
        start_offset: u64,
        /// The range starts inside this entry.
        resumed: bool,
    },
    /// Bytes of the tape, in order (header, content, padding of the current entry, or
    /// the footer).
    Data(&'a [u8]),
    /// With [`TapePlayer::content_ranges`]: the next `len` tape bytes are the content of
    /// `entry` from `offset` in `file` (already checked against the snapshot). The sink
    /// must deliver all of them; [`copy_content`] does it and detects a shrunk file.
    Content {
        entry: &'a Entry,
        file: &'a File,
        offset: u64,
        len: u64,
    },
    /// After an entry's last byte.
    FileEnd {
        entry: &'a Entry,
        end_offset: u64,
        /// MD5 of the content when the whole file was streamed in this run.
        md5: Option<String>,
    },
    /// After the footer's last byte.
    TapeCompleted { total_size: u64 },
}

/// Streams a byte range of a tape as events. Resuming costs one binary search.
pub struct TapePlayer<'t> {
    tape: &'t Tape,
    md5: bool,
    content_ranges: Option<u64>,
}

impl TapePlayer<'_> {
    /// Whether to compute MD5s for `FileEnd` (costly on large files; on by default).
    pub fn md5(mut self, yes: bool) -> Self {
        self.md5 = yes;
        self
    }

    /// Emit file content of at least `min_len` bytes as [`Event::Content`] ranges of the
    /// open source file instead of bytes, so that the sink can move them without a copy
    /// through user space (splice, copy_file_range). Smaller content is cheaper to copy
    /// into the sink's buffer than to hand over with syscalls of its own. Only where no
    /// MD5 is computed: hashing needs the bytes.
    pub fn content_ranges(mut self, min_len: Option<u64>) -> Self {
        self.content_ranges = min_len;
        self
    }

    /// Plays bytes `[start, start + len)` (to the end when `len` is `None`), calling
    /// `sink` for every event. Stops at the first error, from the tape or the sink;
    /// everything emitted before it is a correct prefix.
    pub fn play(
        &self,
        start: u64,
        len: Option<u64>,
        mut sink: impl FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        let tape = self.tape;
        let total = tape.total_size();
        if start > total {
            return Err(Error::Usage(format!(
                "offset {start} is past the end of the tape ({total} bytes)"
            )));
        }
        let end = len.map_or(total, |l| start.saturating_add(l).min(total));
        let offsets = tape.catalog.offsets();
        let mut pos = start;
        let mut buf = vec![0u8; 1 << 20];
        if let Some(first) = offsets.entry_at(pos).filter(|_| pos < end) {
            tape.catalog.for_each_from(first, |entry| {
                pos = self.play_entry(&entry, pos, end, &mut buf, &mut sink)?;
                Ok(pos < end && pos < offsets.footer_start())
            })?;
        }
        if pos < end {
            let zeros = [0u8; 1024];
            let from = (pos - offsets.footer_start()) as usize;
            let to = (end - offsets.footer_start()) as usize;
            sink(Event::Data(&zeros[from..to]))?;
            pos = end;
        }
        if pos == total && end == total {
            sink(Event::TapeCompleted { total_size: total })?;
        }
        Ok(())
    }

    /// Emits the part of `entry` in `[pos, end)`; returns the new position.
    fn play_entry(
        &self,
        entry: &Entry,
        pos: u64,
        end: u64,
        buf: &mut [u8],
        sink: &mut impl FnMut(Event<'_>) -> Result<()>,
    ) -> Result<u64> {
        let tape = self.tape;
        let entry_end = entry.end_offset();
        let stop = end.min(entry_end);
        let resumed = pos > entry.start_offset;
        let file = if entry.kind == Kind::File {
            Some(tape.open_file(entry)?)
        } else {
            tape.check_entry(entry).map_err(Error::from)?;
            None
        };
        sink(Event::FileStart {
            entry,
            start_offset: entry.start_offset,
            resumed,
        })?;
        let header = Header::for_entry(entry).map_err(|p| {
            Error::corrupt(
                tape.catalog.path(),
                format!("{}: {p}", entry.display_path()),
            )
        })?;
        let content_start = entry.start_offset + BLOCK;
        let content_end = content_start + entry.size;
        let mut at = pos;
        if at < content_start.min(stop) {
            let h = &header.as_bytes()[(at - entry.start_offset) as usize..];
            let n = h.len().min((stop - at) as usize);
            sink(Event::Data(&h[..n]))?;
            at += n as u64;
        }
        let mut hasher = (self.md5 && !resumed && entry.kind == Kind::File).then(Md5::new);
        // With `record --hash`, a file streamed whole is checked against its digest.
        let mut recorded = match (&entry.digest, tape.meta().hash) {
            (Some(d), Some(algo)) if !resumed && entry.kind == Kind::File => {
                Some((d, algo, ContentHasher::new(algo)))
            }
            _ => None,
        };
        if let Some(f) = &file {
            let len = content_end.min(stop).saturating_sub(at);
            let needs_bytes = hasher.is_some() || recorded.is_some();
            if !needs_bytes && self.content_ranges.is_some_and(|min| len > 0 && len >= min) {
                sink(Event::Content {
                    entry,
                    file: f,
                    offset: at - content_start,
                    len,
                })?;
                at += len;
            }
            // What was read past the end of the content, when the last read asked for it.
            let mut past_end = None;
            while at < content_end.min(stop) {
                let n = buf.len().min((content_end.min(stop) - at) as usize);
                // The last read of a file read to its end asks for one byte more when the
                // buffer has room: getting it means the file grew, and the separate read
                // that checks for that (one per file) is saved.
                let probe = at + n as u64 == content_end && n < buf.len();
                let read = read_content_probing(
                    f,
                    entry,
                    at - content_start,
                    &mut buf[..n + usize::from(probe)],
                    n,
                )?;
                if probe {
                    past_end = Some(read - n);
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                if let Some((_, _, h)) = recorded.as_mut() {
                    h.update(&buf[..n]);
                }
                sink(Event::Data(&buf[..n]))?;
                at += n as u64;
            }
            if at == content_end {
                let anonymize = tape.meta().anonymize;
                match past_end {
                    Some(past_end) => check_end_and_metadata(entry, f, anonymize, past_end)?,
                    None => check_not_grown(entry, f, anonymize)?,
                }
                if let Some((expected, algo, h)) = recorded.take() {
                    compare_digest(entry, algo, expected, h)?;
                }
            }
        }
        if at < stop {
            let zeros = [0u8; 512];
            sink(Event::Data(&zeros[..(stop - at) as usize]))?;
            at = stop;
        }
        if at == entry_end {
            sink(Event::FileEnd {
                entry,
                end_offset: entry_end,
                md5: hasher.map(|h| hex(&h.finalize())),
            })?;
        }
        Ok(at)
    }
}
