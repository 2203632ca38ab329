//! An opened tape: integrity checks against the snapshot, the thread-safe random-access
//! reader, and the player that turns a byte range into events (SPEC §3, §4).
//!
//! The rules every byte obeys here:
//! * the tape is bound to the directory it was recorded from (device and inode of the
//!   root, checked when the tape is opened; the root entry too, before any byte);
//! * source files are opened beneath the root without following a symlink, and the open
//!   descriptor is compared with the snapshot;
//! * bytes read from a source file are handed on only after an `fstat` taken after the
//!   read still matches the snapshot, ctime included (a writer updates it before it
//!   changes any byte, and nobody can put it back);
//! * no page of a source file is ever handed to the reader by reference (no `splice`):
//!   a change made after the check, even after tartape exited, would reach the reader.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{Mode, OFlags};

use crate::catalog::{Catalog, TapeMeta};
use crate::digest::{ContentHasher, HashAlgo};
use crate::entry::{Entry, Kind, Ordinal, normalised_mode};
use crate::error::{Discrepancy, Error, Result};
use crate::header::{BLOCK, Head};
use crate::layout::{Part, Position, head_len, padding};
use crate::manifest::Manifest;
use crate::readahead::ReadAhead;
use crate::source::{
    ParentDir, canonical_source, default_catalog, open_beneath, open_in_parent, open_root,
    readable, stat_beneath,
};
use crate::walk::{Found, Observed, Visitor, Walker};

/// Direct-mapped cache sizes: bounded memory however many reads a mount serves.
const ENTRY_CACHE_SLOTS: usize = 4096;
const FD_CACHE_SLOTS: usize = 64;

/// How much of the tape `verify` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyLevel {
    /// Every directory and a sample of the other entries.
    Quick,
    /// Every entry's metadata, and every object added since recording.
    Full,
    /// As `Full`, and every file's content against the recorded digests.
    Deep,
}

/// An integrity error about `entry`.
pub(crate) fn broken(entry: &Entry, change: impl Into<String>) -> Error {
    Error::Integrity {
        path: entry.display_path(),
        change: change.into(),
    }
}

/// Where an entry lies in the tape: `[start, end)` ranges.
#[derive(Debug, Clone)]
pub struct EntryLayout {
    /// The catalog's row for the entry.
    pub entry: Entry,
    /// A long entry's `x` header and its records padded to a block (SPEC §1).
    pub pax: Option<(u64, u64)>,
    /// The ustar header.
    pub header: (u64, u64),
    /// The content, empty (`start == end`) for directories, symlinks and empty files.
    pub content: (u64, u64),
    /// The zeros up to the next 512-byte boundary, maybe empty.
    pub padding: (u64, u64),
}

impl EntryLayout {
    fn of(entry: Entry) -> EntryLayout {
        let start = entry.start_offset;
        let c = start + head_len(entry.pax_size);
        let h = c - BLOCK;
        let p = c + entry.size;
        let end = p + padding(entry.size);
        EntryLayout {
            pax: (h > start).then_some((start, h)),
            entry,
            header: (h, c),
            content: (c, p),
            padding: (p, end),
        }
    }

    /// Offset of the entry's first byte (its `x` header when it has one).
    pub fn start(&self) -> u64 {
        self.entry.start_offset
    }

    /// Offset one past its last byte.
    pub fn end(&self) -> u64 {
        self.padding.1
    }
}

/// How many entries of each kind a tape holds ([`Tape::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapeStats {
    /// Regular files.
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Entries with a PAX extended header (SPEC §1, long entries).
    pub long_entries: u64,
}

/// What covers one byte of the tape, with the entry row.
#[derive(Debug, Clone)]
pub enum Located {
    /// The byte belongs to an entry.
    Entry {
        /// Where every part of that entry lies, with its row.
        layout: Box<EntryLayout>,
        /// The part that holds the byte.
        part: Part,
        /// Bytes from the start of that part to the byte.
        offset_in_part: u64,
    },
    /// The byte is in the 1024-byte footer of zeros.
    Footer {
        /// Bytes from the footer's start to the byte (below 1024).
        offset_in_footer: u64,
    },
}

/// A verified descriptor of an entry, kept across reads, with what is needed to check
/// cheaply that the path still leads to it.
struct OpenFile {
    ordinal: Ordinal,
    file: Arc<File>,
    dev: u64,
    ino: u64,
}

struct CachedEntry {
    entry: Entry,
    head: Head,
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

    /// Opens from `catalog`, or from the default location when `None`, and binds the tape
    /// to `dir`: it must be the directory the tape was recorded from (same device and
    /// inode; SPEC §3). A copy, a twin or a symlink swapped in for it is refused.
    pub fn open_with(dir: &Path, catalog: Option<&Path>) -> Result<Tape> {
        let root = canonical_source(dir)?;
        let catalog_path = catalog.map_or_else(|| default_catalog(&root), Path::to_path_buf);
        let catalog = Catalog::open(&catalog_path)?;
        let (root_fd, root_stat) = open_root(&root)?;
        let st = Observed::of(&root_stat);
        let meta = catalog.meta();
        if (st.dev, st.ino) != (meta.root_dev, meta.root_ino) {
            return Err(Error::Integrity {
                path: root.display().to_string(),
                change: format!(
                    "not the directory this tape was recorded from ({}: device {} inode {}; \
                     this is device {} inode {})",
                    meta.source_root.display(),
                    meta.root_dev,
                    meta.root_ino,
                    st.dev,
                    st.ino
                ),
            });
        }
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

    /// The source directory, canonical: every entry is opened beneath it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The opened catalog, for entry rows and offsets.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The tape-wide facts the recording stored.
    pub fn meta(&self) -> &TapeMeta {
        self.catalog.meta()
    }

    /// SHA-256 (lower-case hex) of every entry's `arc_path|size|mtime` in tape order,
    /// SPEC §1: the same as the Python tartape's for the same tree.
    pub fn fingerprint(&self) -> &str {
        &self.meta().fingerprint
    }

    /// Bytes of the whole tape, footer included: one past the last valid offset.
    pub fn total_size(&self) -> u64 {
        self.catalog.offsets().total_size()
    }

    /// When the tape was recorded, in Unix seconds.
    pub fn created_at(&self) -> i64 {
        self.meta().created_at
    }

    /// Entries on the tape, the root included.
    pub fn entry_count(&self) -> u64 {
        self.catalog.offsets().len() as u64
    }

    /// Checks the root entry against the source root: before any byte of a stream, at any
    /// offset, and before a mount serves.
    pub fn check_root(&self) -> Result<()> {
        let root = self.catalog.entry(Ordinal(0))?;
        self.check_entry(&root).map_err(Error::from)
    }

    /// The entries of the tape window `[start, end)`, with their states in it (see
    /// [`Manifest`]).
    pub fn manifest(&self, start: u64, end: u64) -> Manifest {
        Manifest::new(self.catalog.offsets(), start, end)
    }

    /// Entries by kind, and how many are long (have a PAX header): one pass over the rows.
    pub fn stats(&self) -> Result<TapeStats> {
        let mut stats = TapeStats {
            long_entries: self.catalog.offsets().long_entries().len() as u64,
            ..TapeStats::default()
        };
        self.catalog.for_each_from(Ordinal(0), |e| {
            match e.kind {
                Kind::File => stats.files += 1,
                Kind::Dir => stats.dirs += 1,
                Kind::Symlink => stats.symlinks += 1,
            }
            Ok(true)
        })?;
        Ok(stats)
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
        let head = Head::for_entry(&entry);
        let cached = Arc::new(CachedEntry { entry, head });
        *lock(slot) = Some(Arc::clone(&cached));
        Ok(cached)
    }

    /// Reads tape bytes `[offset, offset + buf.len())` into `buf`; returns how many were
    /// read (fewer only at the end of the tape). Every entry the range touches is checked
    /// against the snapshot, and content after it was read; a mismatch is an
    /// [`Error::Integrity`] and then nothing of `buf` may be used.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_at_with(offset, buf, None)
    }

    /// [`Tape::read_at`], telling `ahead` how long opening files took (a cold cache).
    pub(crate) fn read_at_with(
        &self,
        offset: u64,
        buf: &mut [u8],
        ahead: Option<&ReadAhead>,
    ) -> Result<usize> {
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
            let file = self.checked_source(entry, ahead)?;
            let end = offsets.end(ordinal);
            let mut within = pos - entry.start_offset;
            let stop = filled + want.min((end - pos) as usize);
            let mut read_content_bytes = false;
            let head = cached.head.byte_len();
            while filled < stop {
                let out = &mut buf[filled..stop];
                let n = if within < head {
                    let h = &cached.head.as_bytes()[within as usize..];
                    let n = h.len().min(out.len());
                    out[..n].copy_from_slice(&h[..n]);
                    n
                } else if within < head + entry.size {
                    let at = within - head;
                    let n = out.len().min((entry.size - at) as usize);
                    let f = file.as_ref().expect("regular files are opened");
                    let reading = std::time::Instant::now();
                    read_content(f, entry, at, &mut out[..n])?;
                    if let Some(ahead) = ahead {
                        ahead.read(n, reading.elapsed());
                    }
                    read_content_bytes = true;
                    n
                } else {
                    out.fill(0);
                    out.len()
                };
                filled += n;
                within += n as u64;
            }
            if read_content_bytes {
                // Check after read: only bytes of the unchanged snapshot are handed on.
                let f = file.as_ref().expect("regular files are opened");
                check_open_file(entry, f, self.meta().anonymize)?;
            }
            pos = entry.start_offset + within;
        }
        Ok(filled)
    }

    /// Checks `entry` against the source; for a regular file returns the open descriptor
    /// (from the cache when possible, its path checked again with one `fstatat`).
    fn checked_source(
        &self,
        entry: &Entry,
        ahead: Option<&ReadAhead>,
    ) -> Result<Option<Arc<File>>> {
        if entry.kind != Kind::File {
            self.check_entry(entry).map_err(Error::from)?;
            return Ok(None);
        }
        let slot = &self.fds[entry.ordinal.0 as usize % FD_CACHE_SLOTS];
        {
            let cached = lock(slot);
            if let Some(open) = cached.as_ref().filter(|o| o.ordinal == entry.ordinal) {
                // The path must still lead to the same, unchanged file (a deleted or
                // replaced path fails here even though the descriptor lives).
                let st = stat_beneath(self.root_fd.as_fd(), &entry.rel_path)
                    .map(|st| Observed::of(&st))
                    .map_err(|e| open_error(entry, e))?;
                if (st.dev, st.ino) != (open.dev, open.ino) {
                    return Err(broken(entry, "replaced by another file"));
                }
                if let Some(change) = compare(entry, &st, self.meta().anonymize) {
                    return Err(broken(entry, change));
                }
                return Ok(Some(Arc::clone(&open.file)));
            }
        }
        let opening = std::time::Instant::now();
        let f = self.open_file(entry)?;
        if let Some(ahead) = ahead {
            ahead.opened(opening.elapsed());
        }
        let st = fstat(&f).map_err(|e| open_error(entry, e))?;
        let f = Arc::new(f);
        *lock(slot) = Some(OpenFile {
            ordinal: entry.ordinal,
            file: Arc::clone(&f),
            dev: st.dev,
            ino: st.ino,
        });
        Ok(Some(f))
    }

    /// Opens a regular file of the tape without following symlinks, beneath the root,
    /// and checks the open descriptor against the snapshot.
    pub fn open_file(&self, entry: &Entry) -> Result<File> {
        // O_NONBLOCK: a FIFO put where a file was must not block the open; it is then
        // refused by the type check. (No effect on reads of regular files.)
        let fd = open_beneath(
            self.root_fd.as_fd(),
            &entry.rel_path,
            OFlags::RDONLY | OFlags::NONBLOCK,
        )
        .map_err(|e| open_error(entry, e))?;
        let f = File::from(fd);
        check_open_file(entry, &f, self.meta().anonymize)?;
        Ok(f)
    }

    /// Opens a regular file of the tape for the player, relative to its directory (held
    /// in `parent` from one file to the next, see [`open_in_parent`]). No symlink is
    /// followed. The descriptor is not checked here: the player checks it after reading,
    /// before handing anything on.
    pub(crate) fn open_file_in(&self, parent: &mut ParentDir, entry: &Entry) -> Result<File> {
        open_in_parent(self.root_fd.as_fd(), parent, &entry.rel_path)
            .map(File::from)
            .map_err(|e| open_error(entry, e))
    }

    /// Reads ahead of a reader of this tape (see [`ReadAhead`]), never past tape offset
    /// `end`, until [`ReadAhead::finish`].
    pub(crate) fn read_ahead(&self, ahead: &ReadAhead, end: u64) {
        ahead.serve(&self.catalog, self.root_fd.as_fd(), end);
    }

    /// Compares one entry's metadata with the source (no content read).
    pub fn check_entry(&self, entry: &Entry) -> std::result::Result<(), Discrepancy> {
        let discrepancy = |change: String| Discrepancy {
            arc_path: entry.display_path(),
            change,
        };
        let path_fd = open_beneath(self.root_fd.as_fd(), &entry.rel_path, OFlags::PATH).map_err(
            |e| match e.raw_os_error() {
                Some(libc::ENOENT) => discrepancy("missing".into()),
                Some(libc::ELOOP) | Some(libc::EXDEV) => {
                    discrepancy("a parent directory was replaced by a symlink".into())
                }
                _ => discrepancy(format!("cannot be opened: {e}")),
            },
        )?;
        let st = fstat(&path_fd).map_err(|e| discrepancy(e.to_string()))?;
        if let Some(change) = compare(entry, &st, self.meta().anonymize) {
            return Err(discrepancy(change));
        }
        if entry.kind == Kind::Symlink {
            let target = rustix::fs::readlinkat(&path_fd, c"", Vec::new())
                .map_err(|e| discrepancy(io::Error::from(e).to_string()))?
                .into_bytes();
            if let Some(change) = compare_target(entry, &target) {
                return Err(discrepancy(change));
            }
        }
        Ok(())
    }

    /// Checks the tape against its source and returns every discrepancy found.
    ///
    /// `Full` and `Deep` walk the source the way recording does (directory descriptors,
    /// tape order) beside the catalog's rows, so that they cost about what recording
    /// costs and also name every object added since. `Quick` looks up every directory and
    /// a sample of about a thousand other entries, path by path.
    pub fn verify(&self, level: VerifyLevel) -> Result<Vec<Discrepancy>> {
        let deep = level == VerifyLevel::Deep;
        if deep && self.meta().hash.is_none() {
            return Err(Error::Usage(
                "verify --deep needs content digests: record with --hash md5|sha256".into(),
            ));
        }
        if level == VerifyLevel::Quick {
            return self.verify_sample();
        }
        let patterns = self
            .meta()
            .excludes
            .iter()
            .map(|g| {
                glob::Pattern::new(g)
                    .map_err(|e| Error::corrupt(self.catalog.path(), format!("exclude {g:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let root_stat =
            rustix::fs::fstat(&self.root_fd).map_err(|e| Error::io(&self.root, e.into()))?;
        std::thread::scope(|scope| {
            // The rows come from a second thread while this one walks.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Entry>>>(16);
            let catalog = &self.catalog;
            scope.spawn(move || {
                let mut batch = Vec::with_capacity(512);
                let read = catalog.for_each_from(Ordinal(0), |mut e| {
                    // What the comparison does not need is freed here, on the thread
                    // that allocated it: glibc frees memory of another thread slowly,
                    // and the walking thread is the one that bounds `verify`.
                    e.arc_path = Vec::new();
                    e.uname = Vec::new();
                    e.gname = Vec::new();
                    batch.push(e);
                    if batch.len() == 512 {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(512));
                        // The walk stopped early: so do we.
                        return Ok(tx.send(Ok(full)).is_ok());
                    }
                    Ok(true)
                });
                let _ = tx.send(read.map(|()| batch));
            });
            let mut checker = Checker {
                tape: self,
                rows: rx,
                pending: Vec::new().into_iter().peekable(),
                deep,
                found: Vec::new(),
                unlistable: Vec::new(),
            };
            let walker = Walker {
                patterns: &patterns,
            };
            walker.run(self.root_fd.as_fd(), &root_stat, &mut checker)?;
            while let Some(row) = checker.next_row()? {
                checker.missing(&row);
            }
            Ok(checker.found)
        })
    }

    /// `Quick`: every directory, and about a thousand other entries spread evenly.
    fn verify_sample(&self) -> Result<Vec<Discrepancy>> {
        let mut found = Vec::new();
        let count = self.entry_count().max(1);
        let stride = (count / 1000).max(1);
        self.catalog.for_each_from(Ordinal(0), |entry| {
            let sampled = entry.kind == Kind::Dir
                || entry.ordinal.0 % stride == 0
                || entry.ordinal.0 + 1 == count;
            if sampled && let Err(d) = self.check_entry(&entry) {
                found.push(d);
            }
            Ok(true)
        })?;
        Ok(found)
    }
}

/// `verify`'s side of the walk: merges the objects found with the catalog's rows, both in
/// tape order.
struct Checker<'t> {
    tape: &'t Tape,
    rows: std::sync::mpsc::Receiver<Result<Vec<Entry>>>,
    pending: std::iter::Peekable<std::vec::IntoIter<Entry>>,
    deep: bool,
    found: Vec<Discrepancy>,
    /// Relative paths of directories that could not be listed: their rows are not
    /// reported missing one by one.
    unlistable: Vec<Vec<u8>>,
}

impl Checker<'_> {
    fn peek_row(&mut self) -> Result<Option<&Entry>> {
        while self.pending.peek().is_none() {
            match self.rows.recv() {
                Ok(batch) => self.pending = batch?.into_iter().peekable(),
                Err(_) => return Ok(None),
            }
        }
        Ok(self.pending.peek())
    }

    fn next_row(&mut self) -> Result<Option<Entry>> {
        self.peek_row()?;
        Ok(self.pending.next())
    }

    fn arc_path(&self, rel: &[u8]) -> String {
        let mut p = self.tape.meta().arc_root.clone();
        if !rel.is_empty() {
            p.push(b'/');
            p.extend_from_slice(rel);
        }
        String::from_utf8_lossy(&p).into_owned()
    }

    fn push(&mut self, arc_path: String, change: impl Into<String>) {
        self.found.push(Discrepancy {
            arc_path,
            change: change.into(),
        });
    }

    fn missing(&mut self, row: &Entry) {
        let below_unlistable = self.unlistable.iter().any(|d| {
            d.is_empty()
                || (row.rel_path.starts_with(d) && row.rel_path.get(d.len()) == Some(&b'/'))
        });
        if !below_unlistable {
            self.push(self.arc_path(&row.rel_path), "missing");
        }
    }

    fn added(&mut self, found: &Found<'_>) -> bool {
        let would_be_skipped = self.tape.meta().skip_unreadable
            && found.kind != Kind::Symlink
            && !readable(found.dir, found.name, found.stat, found.kind == Kind::Dir);
        if !would_be_skipped {
            let what = format!("added ({})", found.kind);
            self.push(self.arc_path(found.rel), what);
        }
        false
    }

    /// Compares the recorded `row` with the object found at its path. (Rows reach the
    /// checker without their arc path: it is the root's name and the relative path.)
    fn matched(&mut self, row: &Entry, found: &Found<'_>) -> Result<bool> {
        let anonymize = self.tape.meta().anonymize;
        if let Some(change) = compare(row, &Observed::of(found.stat), anonymize) {
            self.push(self.arc_path(&row.rel_path), change);
            // A directory that changed is still walked: what changed in it is named too.
            return Ok(row.kind == Kind::Dir && found.kind == Kind::Dir);
        }
        match row.kind {
            Kind::Dir => return Ok(true),
            Kind::Symlink => match rustix::fs::readlinkat(found.dir, found.name, Vec::new()) {
                Ok(target) => {
                    if let Some(change) = compare_target(row, target.as_bytes()) {
                        self.push(self.arc_path(&row.rel_path), change);
                    }
                }
                Err(e) => self.push(
                    self.arc_path(&row.rel_path),
                    format!("cannot be read: {}", io::Error::from(e)),
                ),
            },
            Kind::File if self.deep => {
                if let Err(e) = self.check_digest(row, found) {
                    let change = match e {
                        Error::Integrity { change, .. } => change,
                        other => other.to_string(),
                    };
                    self.push(self.arc_path(&row.rel_path), change);
                }
            }
            Kind::File => {}
        }
        Ok(false)
    }

    /// Re-reads a file and compares it with its recorded digest.
    fn check_digest(&self, entry: &Entry, found: &Found<'_>) -> Result<()> {
        let (Some(algo), Some(expected)) = (self.tape.meta().hash, entry.digest.as_ref()) else {
            return Ok(());
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(found.dir, found.name, flags, Mode::empty())
            .map_err(|e| open_error(entry, e.into()))?;
        let f = File::from(fd);
        let anonymize = self.tape.meta().anonymize;
        check_open_file(entry, &f, anonymize)?;
        let mut hasher = ContentHasher::new(algo);
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < entry.size {
            let n = buf.len().min((entry.size - at) as usize);
            read_content(&f, entry, at, &mut buf[..n])?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        check_not_grown(entry, &f, anonymize)?;
        compare_digest(entry, algo, expected, hasher)
    }
}

impl Visitor for Checker<'_> {
    fn object(&mut self, found: &Found<'_>) -> Result<bool> {
        loop {
            let Some(row) = self.peek_row()? else {
                return Ok(self.added(found));
            };
            match row.rel_path.as_slice().cmp(found.rel) {
                std::cmp::Ordering::Less => {
                    let row = self.next_row()?.expect("peeked");
                    self.missing(&row);
                }
                std::cmp::Ordering::Equal => {
                    let row = self.next_row()?.expect("peeked");
                    return self.matched(&row, found);
                }
                std::cmp::Ordering::Greater => return Ok(self.added(found)),
            }
        }
    }

    fn special(&mut self, _rel: &[u8], _what: &'static str) {
        // Never recorded: a new one shows as its directory's new mtime.
    }

    fn failed(&mut self, rel: &[u8], listing: bool, err: io::Error) -> Result<()> {
        if listing {
            self.unlistable.push(rel.to_vec());
            self.push(self.arc_path(rel), format!("cannot be listed: {err}"));
        } else if err.kind() != io::ErrorKind::NotFound {
            // (Gone since it was listed: a recorded one is reported missing.)
            self.push(self.arc_path(rel), format!("cannot be examined: {err}"));
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fstat(fd: impl AsFd) -> io::Result<Observed> {
    Ok(Observed::of(&rustix::fs::fstat(fd)?))
}

/// Reads exactly `buf.len()` content bytes at `at`; fewer means the file shrank.
pub(crate) fn read_content(f: &File, entry: &Entry, at: u64, buf: &mut [u8]) -> Result<()> {
    read_content_probing(f, entry, at, buf, buf.len()).map(|_| ())
}

/// Reads at least `len` content bytes at `at` into `buf`, and more if the file has them
/// and `buf` room for them; returns how many it read. Fewer than `len` means the file
/// shrank.
pub(crate) fn read_content_probing(
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
                return Err(broken(
                    entry,
                    format!(
                        "file shrank: read ended at {} of {} bytes",
                        at + done as u64,
                        entry.size
                    ),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(broken(entry, format!("read failed: {e}"))),
        }
    }
    Ok(done)
}

/// The digest of what was read must be the one recorded.
pub(crate) fn compare_digest(
    entry: &Entry,
    algo: HashAlgo,
    expected: &str,
    hasher: ContentHasher,
) -> Result<()> {
    let got = hasher.finish();
    if got != expected {
        return Err(broken(
            entry,
            format!("content {} {expected} → {got}", algo.name()),
        ));
    }
    Ok(())
}

/// After a whole file was read: nothing past its recorded size, metadata unchanged.
pub(crate) fn check_not_grown(entry: &Entry, f: &File, anonymize: bool) -> Result<()> {
    let mut one = [0u8; 1];
    let past_end = f.read_at(&mut one, entry.size).unwrap_or(0);
    if past_end > 0 {
        return Err(grew(entry));
    }
    check_open_file(entry, f, anonymize)
}

pub(crate) fn grew(entry: &Entry) -> Error {
    broken(
        entry,
        format!("file grew past {} bytes while being read", entry.size),
    )
}

/// The open descriptor (`fstat`) must still match the snapshot.
pub(crate) fn check_open_file(entry: &Entry, f: &File, anonymize: bool) -> Result<()> {
    let st = fstat(f).map_err(|e| broken(entry, e.to_string()))?;
    match compare(entry, &st, anonymize) {
        Some(change) => Err(broken(entry, change)),
        None => Ok(()),
    }
}

pub(crate) fn open_error(entry: &Entry, e: io::Error) -> Error {
    let change = match e.raw_os_error() {
        Some(libc::ENOENT) => "missing".to_string(),
        Some(libc::ELOOP) => "replaced by a symlink".to_string(),
        Some(libc::EXDEV) => "path leaves the source root".to_string(),
        _ => format!("cannot be opened: {e}"),
    };
    broken(entry, change)
}

/// Describes how `st` differs from the snapshot of `entry`, if it does.
fn compare(entry: &Entry, st: &Observed, anonymize: bool) -> Option<String> {
    if st.kind != Some(entry.kind) {
        return Some(format!("type {} → {}", entry.kind.name(), st.kind_name));
    }
    let mut changes = Vec::new();
    let file = entry.kind == Kind::File;
    if file && st.size != entry.size {
        changes.push(format!("size {} → {}", entry.size, st.size));
    }
    if st.mtime != (entry.mtime_sec, entry.mtime_nsec) {
        changes.push(format!(
            "mtime {}.{:09} → {}.{:09}",
            entry.mtime_sec, entry.mtime_nsec, st.mtime.0, st.mtime.1
        ));
    }
    let mode = normalised_mode(entry.kind, st.perm, anonymize);
    if mode != entry.mode {
        changes.push(format!("mode {:04o} → {mode:04o}", entry.mode));
    }
    if !anonymize && (st.uid, st.gid) != (entry.uid, entry.gid) {
        changes.push(format!(
            "owner {}:{} → {}:{}",
            entry.uid, entry.gid, st.uid, st.gid
        ));
    }
    if file && st.ctime != (entry.ctime_sec, entry.ctime_nsec) {
        changes.push(format!(
            "ctime {}.{:09} → {}.{:09} (changed since recording)",
            entry.ctime_sec, entry.ctime_nsec, st.ctime.0, st.ctime.1
        ));
    }
    (!changes.is_empty()).then(|| changes.join(", "))
}

fn compare_target(entry: &Entry, target: &[u8]) -> Option<String> {
    (target != entry.link_target.as_slice()).then(|| {
        format!(
            "symlink target {} → {}",
            String::from_utf8_lossy(&entry.link_target),
            String::from_utf8_lossy(target)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind) -> Entry {
        Entry {
            ordinal: Ordinal(1),
            arc_path: b"r/x".to_vec(),
            rel_path: b"x".to_vec(),
            kind,
            size: if kind == Kind::File { 10 } else { 0 },
            mode: normalised_mode(kind, 0o644, true),
            disk_mode: 0o644,
            uid: 0,
            gid: 0,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            mtime: 100,
            mtime_sec: 100,
            mtime_nsec: 5,
            ctime_sec: if kind == Kind::File { 200 } else { 0 },
            ctime_nsec: if kind == Kind::File { 6 } else { 0 },
            link_target: Vec::new(),
            pax_size: 0,
            start_offset: 512,
            digest: None,
        }
    }

    fn observed(e: &Entry) -> Observed {
        Observed {
            kind: Some(e.kind),
            kind_name: e.kind.name(),
            size: e.size,
            mtime: (e.mtime_sec, e.mtime_nsec),
            ctime: (e.ctime_sec, e.ctime_nsec),
            perm: e.disk_mode,
            uid: 1000,
            gid: 1000,
            dev: 1,
            ino: 2,
        }
    }

    #[test]
    fn compare_names_every_change() {
        let e = entry(Kind::File);
        let same = observed(&e);
        assert_eq!(compare(&e, &same, true), None);
        let with = |f: &dyn Fn(&mut Observed)| {
            let mut st = same;
            f(&mut st);
            compare(&e, &st, true).unwrap_or_default()
        };
        assert!(with(&|s| s.size = 11).contains("size 10 → 11"));
        assert!(with(&|s| s.mtime.1 = 6).contains("mtime"));
        assert!(with(&|s| s.ctime.1 = 7).contains("ctime"));
        assert!(with(&|s| s.perm = 0o755).contains("mode 0644 → 0755"));
        // An execute-less chmod is invisible in an anonymised header, but not its ctime.
        assert_eq!(with(&|s| s.perm = 0o600), "");
        assert!(
            with(&|s| {
                s.kind = None;
                s.kind_name = "fifo";
            })
            .contains("type file → fifo")
        );
        // Owners count only without anonymisation.
        let mut owned = e.clone();
        owned.mode = 0o644;
        owned.uid = 1000;
        owned.gid = 1000;
        assert_eq!(compare(&owned, &same, false), None);
        let mut other = same;
        other.uid = 0;
        assert!(compare(&owned, &other, false).unwrap().contains("owner"));
        // Directories have no size or ctime to compare.
        let d = entry(Kind::Dir);
        let mut st = observed(&d);
        st.ctime = (999, 9);
        st.size = 4096;
        assert_eq!(compare(&d, &st, true), None);
    }

    #[test]
    fn targets_are_compared_as_bytes() {
        let mut e = entry(Kind::Symlink);
        e.link_target = b"a".to_vec();
        assert_eq!(compare_target(&e, b"a"), None);
        assert!(compare_target(&e, b"b").unwrap().contains("a → b"));
    }
}
