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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::catalog::{Catalog, TapeMeta};
use crate::digest::{ContentHasher, HashAlgo, hex};
use crate::entry::{Entry, Kind, Ordinal, normalised_mode};
use crate::error::{Error, Result};
use crate::header::{BLOCK, Header};
use crate::layout::{Part, Position, padding};
use crate::source::{canonical_source, default_catalog, open_beneath, open_root, readable};
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

/// An integrity error about `entry`.
fn broken(entry: &Entry, change: impl Into<String>) -> Error {
    Error::Integrity {
        path: entry.display_path(),
        change: change.into(),
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

    /// Checks the root entry against the source root: before any byte of a stream, at any
    /// offset, and before a mount serves.
    pub fn check_root(&self) -> Result<()> {
        let root = self.catalog.entry(Ordinal(0))?;
        self.check_entry(&root).map_err(Error::from)
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
        let header = self.header(&entry)?;
        let cached = Arc::new(CachedEntry { entry, header });
        *lock(slot) = Some(Arc::clone(&cached));
        Ok(cached)
    }

    fn header(&self, entry: &Entry) -> Result<Header> {
        Header::for_entry(entry).map_err(|p| {
            Error::corrupt(
                self.catalog.path(),
                format!("{}: {p}", entry.display_path()),
            )
        })
    }

    /// Reads tape bytes `[offset, offset + buf.len())` into `buf`; returns how many were
    /// read (fewer only at the end of the tape). Every entry the range touches is checked
    /// against the snapshot, and content after it was read; a mismatch is an
    /// [`Error::Integrity`] and then nothing of `buf` may be used.
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
            let mut read_content_bytes = false;
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
    fn checked_source(&self, entry: &Entry) -> Result<Option<Arc<File>>> {
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
                let st = rustix::fs::statat(
                    &self.root_fd,
                    entry.rel_path.as_slice(),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map(|st| Observed::of(&st))
                .map_err(|e| open_error(entry, e.into()))?;
                if (st.dev, st.ino) != (open.dev, open.ino) {
                    return Err(broken(entry, "replaced by another file"));
                }
                if let Some(change) = compare(entry, &st, self.meta().anonymize) {
                    return Err(broken(entry, change));
                }
                return Ok(Some(Arc::clone(&open.file)));
            }
        }
        let f = self.open_file(entry)?;
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
    /// in `parent` from one file to the next: the files of a directory follow each other in
    /// tape order, so each open resolves one name, not the whole path). No symlink is
    /// followed, in the directory's path or at the file. The descriptor is not checked
    /// here: the player checks it after reading, before handing anything on.
    fn open_file_in(&self, parent: &mut ParentDir, entry: &Entry) -> Result<File> {
        let (dir_rel, name) = match entry.rel_path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&entry.rel_path[..i], &entry.rel_path[i + 1..]),
            None => (&[][..], entry.rel_path.as_slice()),
        };
        let dir = match &parent.fd {
            Some(fd) if parent.rel == dir_rel => fd,
            _ => {
                parent.fd = None;
                let fd = open_beneath(
                    self.root_fd.as_fd(),
                    dir_rel,
                    OFlags::PATH | OFlags::DIRECTORY,
                )
                .map_err(|e| open_error(entry, e))?;
                parent.rel.clear();
                parent.rel.extend_from_slice(dir_rel);
                parent.fd.insert(fd)
            }
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, name, flags, Mode::empty())
            .map_err(|e| open_error(entry, e.into()))?;
        Ok(File::from(fd))
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

    /// A player over this tape.
    pub fn player(&self) -> TapePlayer<'_> {
        TapePlayer {
            tape: self,
            md5: true,
            content_ranges: None,
        }
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
fn compare_digest(
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
fn check_not_grown(entry: &Entry, f: &File, anonymize: bool) -> Result<()> {
    let mut one = [0u8; 1];
    let past_end = f.read_at(&mut one, entry.size).unwrap_or(0);
    if past_end > 0 {
        return Err(grew(entry));
    }
    check_open_file(entry, f, anonymize)
}

fn grew(entry: &Entry) -> Error {
    broken(
        entry,
        format!("file grew past {} bytes while being read", entry.size),
    )
}

/// The open descriptor (`fstat`) must still match the snapshot.
fn check_open_file(entry: &Entry, f: &File, anonymize: bool) -> Result<()> {
    let st = fstat(f).map_err(|e| broken(entry, e.to_string()))?;
    match compare(entry, &st, anonymize) {
        Some(change) => Err(broken(entry, change)),
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

/// Writes `len` content bytes of `entry`, from `offset` in `src` (opened and checked by
/// the player), to the regular file `dst` at its current position, which must be its end.
/// `copy_file_range` copies at call time, inside the kernel; the source is checked after
/// it, and if it changed, `dst` is cut back to where it was, so that what it holds is
/// still a correct prefix of the tape. Where `copy_file_range` cannot serve (another
/// kind of output, `O_APPEND`, a filesystem without it), the bytes go through a buffer,
/// each chunk checked before it is written. A source that ends early is an integrity
/// error (the file shrank).
pub fn copy_content(
    entry: &Entry,
    src: &File,
    offset: u64,
    len: u64,
    dst: BorrowedFd<'_>,
    anonymize: bool,
) -> Result<()> {
    let out_err = |e: io::Error| Error::io("<output>", e);
    let start = rustix::fs::seek(dst, rustix::fs::SeekFrom::Current(0)).ok();
    let at_end = start.is_some_and(|pos| {
        rustix::fs::fstat(dst).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
                && st.st_size as u64 == pos
        })
    });
    let mut off = offset;
    let mut left = len;
    if let (true, Some(start)) = (at_end, start) {
        while left > 0 {
            let chunk = left.min(1 << 30) as usize;
            let mut from = off;
            match rustix::fs::copy_file_range(src, Some(&mut from), dst, None, chunk) {
                Ok(0) => {
                    let _ = rustix::fs::ftruncate(dst, start);
                    let _ = rustix::fs::seek(dst, rustix::fs::SeekFrom::Start(start));
                    return Err(broken(
                        entry,
                        format!("file shrank: read ended at {off} of {} bytes", entry.size),
                    ));
                }
                Ok(n) => {
                    off += n as u64;
                    left -= n as u64;
                }
                Err(rustix::io::Errno::INTR) => {}
                // Not supported between these two: copy through a buffer instead.
                Err(
                    rustix::io::Errno::INVAL
                    | rustix::io::Errno::XDEV
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::BADF,
                ) if off == offset => break,
                Err(e) => return Err(out_err(e.into())),
            }
        }
        if left == 0 {
            // Check after the copy: a change during it means the copy may hold changed
            // bytes; cut them off.
            if let Err(e) = check_open_file(entry, src, anonymize) {
                let _ = rustix::fs::ftruncate(dst, start);
                let _ = rustix::fs::seek(dst, rustix::fs::SeekFrom::Start(start));
                return Err(e);
            }
            return Ok(());
        }
    }
    let mut buf = vec![0u8; (left.min(1 << 20)) as usize];
    while left > 0 {
        let n = buf.len().min(left as usize);
        read_content(src, entry, off, &mut buf[..n])?;
        check_open_file(entry, src, anonymize)?;
        write_all_fd(dst, &buf[..n]).map_err(out_err)?;
        off += n as u64;
        left -= n as u64;
    }
    Ok(())
}

fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
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
    /// the footer). Content bytes were checked against the snapshot after they were read.
    Data(&'a [u8]),
    /// With [`TapePlayer::content_ranges`]: the next `len` tape bytes are the content of
    /// `entry` from `offset` in `file` (opened and checked against the snapshot). The sink
    /// must deliver all of them, checked: [`copy_content`] does it into a regular file.
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

/// The directory of the file the player opened last.
#[derive(Default)]
struct ParentDir {
    rel: Vec<u8>,
    fd: Option<OwnedFd>,
}

/// A read of `f` failed: if the file is no longer the snapshot's (a FIFO, a directory
/// swapped in), that is the better explanation.
fn explain(entry: &Entry, f: &File, anonymize: bool, read_error: Error) -> Error {
    match check_open_file(entry, f, anonymize) {
        Err(changed) => changed,
        Ok(()) => read_error,
    }
}

/// Streams a byte range of a tape as events. Resuming costs one binary search.
pub struct TapePlayer<'t> {
    tape: &'t Tape,
    md5: bool,
    content_ranges: Option<u64>,
}

/// Bytes read from a source file at a time by the player.
const PLAY_CHUNK: usize = 1 << 20;

impl TapePlayer<'_> {
    /// Whether to compute MD5s for `FileEnd` (costly on large files; on by default).
    pub fn md5(mut self, yes: bool) -> Self {
        self.md5 = yes;
        self
    }

    /// Emit file content of at least `min_len` bytes as [`Event::Content`] ranges of the
    /// open source file instead of bytes, so that a sink writing to a regular file can
    /// copy them inside the kernel (`copy_file_range`). Smaller content is cheaper to copy
    /// into the sink's buffer than to hand over with syscalls of its own. Only where no
    /// digest is computed: hashing needs the bytes.
    pub fn content_ranges(mut self, min_len: Option<u64>) -> Self {
        self.content_ranges = min_len;
        self
    }

    /// Plays bytes `[start, start + len)` (to the end when `len` is `None`), calling
    /// `sink` for every event. Stops at the first error, from the tape or the sink;
    /// everything emitted before it is a correct prefix. The root entry is checked first,
    /// whatever the offset.
    pub fn play(
        &self,
        start: u64,
        len: Option<u64>,
        sink: impl FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut out = EventOut {
            buf: vec![0u8; PLAY_CHUNK + 1],
            sink,
        };
        self.play_to(start, len, &mut out)
    }

    /// As [`TapePlayer::play`], but the tape is read on a second thread while `sink` runs
    /// on this one: a stream into a pipe reads the next files while the last bytes are
    /// written. `Data` events come in chunks of up to 1 MiB, into which the content was
    /// read (and checked) directly; `FileStart`, `FileEnd` and `TapeCompleted` come in
    /// their places between them only when `events` is set (each costs a copy of the
    /// entry). With [`TapePlayer::content_ranges`], `Content` events come too (the entry
    /// copied, the file's descriptor duplicated).
    pub fn play_ahead(
        &self,
        start: u64,
        len: Option<u64>,
        events: bool,
        mut sink: impl FnMut(Event<'_>) -> Result<()>,
    ) -> Result<()> {
        std::thread::scope(|scope| {
            // Two chunks in flight: one being written, one being filled.
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Chunk>(2);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let reader = std::thread::Builder::new()
                .name("tape-reader".into())
                .spawn_scoped(scope, move || {
                    let mut out = ChunkOut {
                        chunk: Chunk::new(Vec::new(), FIRST_CHUNK),
                        full: full_tx,
                        empty: empty_rx,
                        events,
                    };
                    let played = self.play_to(start, len, &mut out);
                    // What was read before an error is a correct prefix: it goes too.
                    let sent = out.send();
                    played.and(sent)
                })
                .map_err(|e| Error::io("<tape reader>", e))?;
            let mut delivered = Ok(());
            for chunk in full_rx.iter() {
                delivered = chunk.deliver(&mut sink);
                let _ = empty_tx.send(chunk.bytes);
                if delivered.is_err() {
                    break;
                }
            }
            // Ends the reader if it is still sending.
            drop(full_rx);
            let played = reader
                .join()
                .unwrap_or_else(|_| Err(Error::io("<tape reader>", io::Error::other("panicked"))));
            // The sink's error first: the reader's is then only "the sink stopped".
            delivered.and(played)
        })
    }

    /// Plays into `out`: the body of [`TapePlayer::play`] and [`TapePlayer::play_ahead`].
    fn play_to(&self, start: u64, len: Option<u64>, out: &mut impl Out) -> Result<()> {
        let tape = self.tape;
        let total = tape.total_size();
        if start > total {
            return Err(Error::Usage(format!(
                "offset {start} is past the end of the tape ({total} bytes)"
            )));
        }
        let end = len.map_or(total, |l| start.saturating_add(l).min(total));
        let offsets = tape.catalog.offsets();
        // From the start, the root entry is the first one played and checked.
        if start > 0 {
            tape.check_root()?;
        }
        let mut pos = start;
        let mut parent = ParentDir::default();
        if let Some(first) = offsets.entry_at(pos).filter(|_| pos < end) {
            tape.catalog.for_each_from(first, |entry| {
                pos = self.play_entry(&entry, pos, end, &mut parent, out)?;
                Ok(pos < end && pos < offsets.footer_start())
            })?;
        }
        if pos < end {
            let zeros = [0u8; 1024];
            let from = (pos - offsets.footer_start()) as usize;
            let to = (end - offsets.footer_start()) as usize;
            out.bytes(&zeros[from..to])?;
            pos = end;
        }
        if pos == total && end == total {
            out.event(Event::TapeCompleted { total_size: total })?;
        }
        Ok(())
    }

    /// Emits the part of `entry` in `[pos, end)`; returns the new position.
    fn play_entry(
        &self,
        entry: &Entry,
        pos: u64,
        end: u64,
        parent: &mut ParentDir,
        out: &mut impl Out,
    ) -> Result<u64> {
        let tape = self.tape;
        let anonymize = tape.meta().anonymize;
        let entry_end = entry.end_offset();
        let stop = end.min(entry_end);
        let resumed = pos > entry.start_offset;
        // A file is checked (fstat) after its content is read, before any of it is handed
        // on; one whose content is not read here is checked before leaving.
        let file = if entry.kind == Kind::File {
            Some(tape.open_file_in(parent, entry)?)
        } else {
            tape.check_entry(entry).map_err(Error::from)?;
            None
        };
        out.event(Event::FileStart {
            entry,
            start_offset: entry.start_offset,
            resumed,
        })?;
        let header = tape.header(entry)?;
        let content_start = entry.start_offset + BLOCK;
        let content_end = content_start + entry.size;
        let mut at = pos;
        if at < content_start.min(stop) {
            let h = &header.as_bytes()[(at - entry.start_offset) as usize..];
            let n = h.len().min((stop - at) as usize);
            out.bytes(&h[..n])?;
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
            let read_end = content_end.min(stop);
            let len = read_end.saturating_sub(at);
            let needs_bytes = hasher.is_some() || recorded.is_some();
            if !needs_bytes && self.content_ranges.is_some_and(|min| len > 0 && len >= min) {
                out.event(Event::Content {
                    entry,
                    file: f,
                    offset: at - content_start,
                    len,
                })?;
                at += len;
            }
            // Whether the read that reached the content's end also looked past it.
            let mut probed_end = false;
            while at < read_end {
                let left = (read_end - at) as usize;
                let room = out.room(left.min(PLAY_CHUNK) + 1)?;
                let n = left.min(room.len());
                // The last read of a file read to its end asks for one byte more when
                // there is room: getting it means the file grew, and the separate read
                // that checks for that (one per file) is saved.
                let probe = at + n as u64 == content_end && room.len() > n;
                let read = read_content_probing(
                    f,
                    entry,
                    at - content_start,
                    &mut room[..n + usize::from(probe)],
                    n,
                )
                .map_err(|e| explain(entry, f, anonymize, e))?;
                // Check after read, before write: these bytes leave only if the file is
                // still the snapshot's.
                check_open_file(entry, f, anonymize)?;
                if probe {
                    if read > n {
                        return Err(grew(entry));
                    }
                    probed_end = true;
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&room[..n]);
                }
                if let Some((_, _, h)) = recorded.as_mut() {
                    h.update(&room[..n]);
                }
                out.commit(n)?;
                at += n as u64;
            }
            if at == content_end {
                if !probed_end {
                    check_not_grown(entry, f, anonymize)?;
                }
                if let Some((expected, algo, h)) = recorded.take() {
                    compare_digest(entry, algo, expected, h)?;
                }
            } else if pos >= content_end || stop <= content_start {
                // No content of it in this range: its metadata still has to match.
                check_open_file(entry, f, anonymize)?;
            }
        }
        if at < stop {
            let zeros = [0u8; 512];
            out.bytes(&zeros[..(stop - at) as usize])?;
            at = stop;
        }
        if at == entry_end {
            out.event(Event::FileEnd {
                entry,
                end_offset: entry_end,
                md5: hasher.map(|h| hex(&h.finalize())),
            })?;
        }
        Ok(at)
    }
}

/// Where the player puts what it plays.
trait Out {
    /// Tape bytes that need no checking (headers, padding, the footer).
    fn bytes(&mut self, bytes: &[u8]) -> Result<()>;
    /// A buffer for up to `want` content bytes (at least one byte, maybe fewer than
    /// `want`) to be read into.
    fn room(&mut self, want: usize) -> Result<&mut [u8]>;
    /// The first `n` bytes of the last room are tape bytes, checked: hand them on.
    fn commit(&mut self, n: usize) -> Result<()>;
    /// Any other event.
    fn event(&mut self, event: Event<'_>) -> Result<()>;
}

/// [`TapePlayer::play`]'s output: every event to the callback, content read into a
/// buffer of its own.
struct EventOut<F> {
    buf: Vec<u8>,
    sink: F,
}

impl<F: FnMut(Event<'_>) -> Result<()>> Out for EventOut<F> {
    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        (self.sink)(Event::Data(bytes))
    }

    fn room(&mut self, want: usize) -> Result<&mut [u8]> {
        let n = want.min(self.buf.len());
        Ok(&mut self.buf[..n])
    }

    fn commit(&mut self, n: usize) -> Result<()> {
        (self.sink)(Event::Data(&self.buf[..n]))
    }

    fn event(&mut self, event: Event<'_>) -> Result<()> {
        (self.sink)(event)
    }
}

/// Bytes of a chunk [`TapePlayer::play_ahead`] hands over, at most.
const CHUNK: usize = 1 << 20;
/// Bytes of the first chunk: the first bytes reach the reader without waiting for a
/// whole chunk to be read (a resumed upload, `| head -c`); each next chunk is twice as
/// large, up to [`CHUNK`].
const FIRST_CHUNK: usize = 64 << 10;

/// Tape bytes, and the events that come between them (at their byte positions).
struct Chunk {
    bytes: Vec<u8>,
    /// How much of `bytes` this chunk may fill.
    limit: usize,
    filled: usize,
    marks: Vec<(usize, Mark)>,
}

/// An event of a chunk, owned.
enum Mark {
    Start {
        entry: Entry,
        start_offset: u64,
        resumed: bool,
    },
    End {
        entry: Entry,
        end_offset: u64,
        md5: Option<String>,
    },
    Completed {
        total_size: u64,
    },
    Content {
        entry: Entry,
        file: File,
        offset: u64,
        len: u64,
    },
}

impl Chunk {
    fn new(mut bytes: Vec<u8>, limit: usize) -> Chunk {
        bytes.resize(CHUNK, 0);
        Chunk {
            bytes,
            limit,
            filled: 0,
            marks: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.filled == 0 && self.marks.is_empty()
    }

    /// Hands the chunk's bytes and events to `sink`, in order.
    fn deliver(&self, sink: &mut impl FnMut(Event<'_>) -> Result<()>) -> Result<()> {
        let mut at = 0;
        for (pos, mark) in &self.marks {
            if *pos > at {
                sink(Event::Data(&self.bytes[at..*pos]))?;
                at = *pos;
            }
            sink(match mark {
                Mark::Start {
                    entry,
                    start_offset,
                    resumed,
                } => Event::FileStart {
                    entry,
                    start_offset: *start_offset,
                    resumed: *resumed,
                },
                Mark::End {
                    entry,
                    end_offset,
                    md5,
                } => Event::FileEnd {
                    entry,
                    end_offset: *end_offset,
                    md5: md5.clone(),
                },
                Mark::Completed { total_size } => Event::TapeCompleted {
                    total_size: *total_size,
                },
                Mark::Content {
                    entry,
                    file,
                    offset,
                    len,
                } => Event::Content {
                    entry,
                    file,
                    offset: *offset,
                    len: *len,
                },
            })?;
        }
        if self.filled > at {
            sink(Event::Data(&self.bytes[at..self.filled]))?;
        }
        Ok(())
    }
}

/// [`TapePlayer::play_ahead`]'s output, on the reading thread: fills chunks and sends
/// them to the thread that writes.
struct ChunkOut {
    chunk: Chunk,
    full: std::sync::mpsc::SyncSender<Chunk>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    events: bool,
}

impl ChunkOut {
    /// Sends the current chunk (if it holds anything) and starts another.
    fn send(&mut self) -> Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let spare = self.empty.try_recv().unwrap_or_default();
        let limit = (self.chunk.limit * 2).min(CHUNK);
        let full = std::mem::replace(&mut self.chunk, Chunk::new(spare, limit));
        self.full
            .send(full)
            .map_err(|_| Error::io("<output>", io::Error::other("the writer stopped")))
    }
}

impl Out for ChunkOut {
    fn bytes(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            if self.chunk.filled == self.chunk.limit {
                self.send()?;
            }
            let n = bytes.len().min(self.chunk.limit - self.chunk.filled);
            self.chunk.bytes[self.chunk.filled..self.chunk.filled + n].copy_from_slice(&bytes[..n]);
            self.chunk.filled += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn room(&mut self, want: usize) -> Result<&mut [u8]> {
        // Less than a quarter of a chunk left for a large read: a fresh chunk takes it.
        let left = self.chunk.limit - self.chunk.filled;
        if left < 2 || (left < want && left < self.chunk.limit / 4) {
            self.send()?;
        }
        let end = self.chunk.limit.min(self.chunk.filled + want);
        Ok(&mut self.chunk.bytes[self.chunk.filled..end])
    }

    fn commit(&mut self, n: usize) -> Result<()> {
        self.chunk.filled += n;
        Ok(())
    }

    fn event(&mut self, event: Event<'_>) -> Result<()> {
        if let Event::Content {
            entry,
            file,
            offset,
            len,
        } = event
        {
            let file = file
                .try_clone()
                .map_err(|e| broken(entry, format!("cannot be opened: {e}")))?;
            self.chunk.marks.push((
                self.chunk.filled,
                Mark::Content {
                    entry: entry.clone(),
                    file,
                    offset,
                    len,
                },
            ));
            return Ok(());
        }
        if !self.events {
            return Ok(());
        }
        let mark = match event {
            Event::FileStart {
                entry,
                start_offset,
                resumed,
            } => Mark::Start {
                entry: entry.clone(),
                start_offset,
                resumed,
            },
            Event::FileEnd {
                entry,
                end_offset,
                md5,
            } => Mark::End {
                entry: entry.clone(),
                end_offset,
                md5,
            },
            Event::TapeCompleted { total_size } => Mark::Completed { total_size },
            Event::Data(_) | Event::Content { .. } => unreachable!("not events of play_to"),
        };
        self.chunk.marks.push((self.chunk.filled, mark));
        Ok(())
    }
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

    /// What a player emitted: bytes, and events by name with their entry's path.
    fn played(
        run: impl FnOnce(&mut dyn FnMut(Event<'_>) -> Result<()>) -> Result<()>,
    ) -> (Vec<u8>, Vec<String>, Result<()>) {
        let mut bytes = Vec::new();
        let mut events = Vec::new();
        let result = run(&mut |e| {
            match e {
                Event::Data(b) => bytes.extend_from_slice(b),
                Event::FileStart { entry, resumed, .. } => {
                    events.push(format!("start {} {resumed}", entry.display_path()))
                }
                Event::FileEnd { entry, md5, .. } => {
                    events.push(format!("end {} {md5:?}", entry.display_path()))
                }
                Event::TapeCompleted { total_size } => events.push(format!("done {total_size}")),
                Event::Content { .. } => events.push("content".into()),
            }
            Ok(())
        });
        (bytes, events, result)
    }

    fn recorded_tree() -> (tempfile::TempDir, Tape) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        for i in 0..50u32 {
            std::fs::write(
                src.join(format!("d/f{i:02}")),
                vec![i as u8; i as usize * 700],
            )
            .unwrap();
        }
        let big: Vec<u8> = (0..(3 << 20) + 123u32)
            .map(|i| ((i * 31) >> 7) as u8)
            .collect();
        std::fs::write(src.join("big"), big).unwrap();
        crate::record::TapeRecorder::new(&src)
            .catalog(Some(dir.path().join("c.db")))
            .commit()
            .unwrap();
        let tape = Tape::open(&src, dir.path().join("c.db")).unwrap();
        (dir, tape)
    }

    #[test]
    fn playing_ahead_gives_the_bytes_and_events_of_playing() {
        let (_dir, tape) = recorded_tree();
        let total = tape.total_size();
        for (start, len) in [
            (0, None),
            (1000, Some(5_000_000)),
            (total - 1500, None),
            (700_000, Some(1)),
        ] {
            let plain = played(|sink| tape.player().play(start, len, sink));
            let ahead = played(|sink| tape.player().play_ahead(start, len, true, sink));
            assert!(plain.2.is_ok() && ahead.2.is_ok());
            assert_eq!(plain.0, ahead.0, "bytes from {start}");
            assert_eq!(plain.1, ahead.1, "events from {start}");
            let quiet = played(|sink| tape.player().play_ahead(start, len, false, sink));
            assert_eq!(quiet.0, plain.0);
            assert!(quiet.1.is_empty());
        }
        // Content ranges come through, in their place.
        let ranges = played(|sink| {
            tape.player()
                .md5(false)
                .content_ranges(Some(1 << 20))
                .play_ahead(0, None, false, sink)
        });
        assert_eq!(ranges.1, ["content"]);
    }

    #[test]
    fn playing_ahead_stops_at_the_first_error_with_a_correct_prefix() {
        let (dir, tape) = recorded_tree();
        let whole = played(|sink| tape.player().play(0, None, sink)).0;
        // The sink fails: its error, and nothing more is asked of it.
        let mut calls = 0;
        let failed = tape.player().play_ahead(0, None, false, |_| {
            calls += 1;
            Err(Error::Usage("sink full".into()))
        });
        assert_eq!(failed.unwrap_err().to_string(), "sink full");
        assert_eq!(calls, 1);
        // The source changes: what was delivered is a prefix, then the tape's error.
        std::fs::write(dir.path().join("src/d/f30"), b"changed").unwrap();
        let (bytes, _, result) = played(|sink| tape.player().play_ahead(0, None, true, sink));
        assert!(result.unwrap_err().to_string().contains("src/d/f30"));
        assert!(whole.starts_with(&bytes) && bytes.len() < whole.len());
        assert!(
            bytes.len() as u64 > 3 << 20,
            "the prefix before it was delivered"
        );
    }

    #[test]
    fn targets_are_compared_as_bytes() {
        let mut e = entry(Kind::Symlink);
        e.link_target = b"a".to_vec();
        assert_eq!(compare_target(&e, b"a"), None);
        assert!(compare_target(&e, b"b").unwrap().contains("a → b"));
    }
}
