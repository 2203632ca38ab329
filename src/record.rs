//! Recording: walk a directory, snapshot every entry, check ustar constraints, compute
//! offsets and the fingerprint, and write the catalog atomically (SPEC §2).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags};
use sha2::{Digest, Sha256};

use crate::catalog::{self, CatalogWriter, TapeMeta};
use crate::digest::{ContentHasher, HashAlgo, hex};
use crate::entry::{Entry, Kind, Ordinal, normalised_mode, python_mtime};
use crate::error::{Error, Result};
use crate::header::{header_path, pax_records, python_path_problem};
use crate::layout::{FOOTER_LEN, footprint};
use crate::source::{
    CATALOG_DIR, CATALOG_FILE, canonical_source, describe_mode, open_root, readable,
};
use crate::text::counted;
use crate::walk::{Found, Observed, Visitor, Walker};

/// Records a directory into a catalog.
///
/// ```no_run
/// let summary = tartape::TapeRecorder::new("photos").exclude("*.tmp").commit()?;
/// println!("{}", summary.fingerprint);
/// # Ok::<(), tartape::Error>(())
/// ```
pub struct TapeRecorder {
    dir: PathBuf,
    catalog: Option<PathBuf>,
    excludes: Vec<String>,
    hash: Option<HashAlgo>,
    anonymize: bool,
    arc_root: Option<Vec<u8>>,
    force: bool,
    skip_unreadable: bool,
    strict_ustar: bool,
    progress: Option<Box<dyn FnMut(u64)>>,
}

/// What a recording did.
#[derive(Debug, Clone)]
pub struct RecordSummary {
    /// The new tape's fingerprint (SPEC §1): what
    /// [`Tape::fingerprint`](crate::Tape::fingerprint) returns once the tape is opened.
    pub fingerprint: String,
    /// Where the catalog was written.
    pub catalog: PathBuf,
    /// Regular files recorded.
    pub files: u64,
    /// Directories recorded, the root included.
    pub dirs: u64,
    /// Symbolic links recorded.
    pub symlinks: u64,
    /// Entries with a PAX extended header (SPEC §1 "Long entries").
    pub long_entries: u64,
    /// Content bytes of the regular files.
    pub data_size: u64,
    /// Bytes of the whole tape: footprints plus the 1024-byte footer.
    pub total_size: u64,
    /// Sockets, FIFOs and devices, which tapes do not hold: `(path, kind)`.
    pub skipped_special: Vec<(PathBuf, &'static str)>,
    /// Unreadable paths skipped under `--skip-unreadable`.
    pub skipped_unreadable: Vec<(PathBuf, String)>,
}

impl fmt::Display for RecordSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fingerprint: {}", self.fingerprint)?;
        writeln!(f, "catalog: {}", self.catalog.display())?;
        writeln!(
            f,
            "entries: {} ({}, {}, {})",
            self.files + self.dirs + self.symlinks,
            counted(self.files, "file", "files"),
            counted(self.dirs, "directory", "directories"),
            counted(self.symlinks, "symlink", "symlinks"),
        )?;
        if self.long_entries > 0 {
            writeln!(
                f,
                "long entries: {} (path or target too long for ustar: a PAX header each)",
                self.long_entries
            )?;
        }
        writeln!(f, "data bytes: {}", self.data_size)?;
        write!(f, "tape size: {}", self.total_size)?;
        if !self.skipped_special.is_empty() {
            write!(
                f,
                "\nskipped {} special file(s):",
                self.skipped_special.len()
            )?;
            for (p, kind) in &self.skipped_special {
                write!(f, "\n  {kind}: {}", p.display())?;
            }
        }
        if !self.skipped_unreadable.is_empty() {
            write!(
                f,
                "\nskipped {} unreadable path(s):",
                self.skipped_unreadable.len()
            )?;
            for (p, why) in &self.skipped_unreadable {
                write!(f, "\n  {}: {why}", p.display())?;
            }
        }
        Ok(())
    }
}

impl TapeRecorder {
    /// A recorder of the directory `dir` with the defaults of `tartape record`:
    /// anonymised, no exclusions, no content digests, catalog in `DIR/.tartape/index.db`.
    /// Nothing happens until [`commit`](Self::commit).
    pub fn new(dir: impl AsRef<Path>) -> TapeRecorder {
        TapeRecorder {
            dir: dir.as_ref().to_path_buf(),
            catalog: None,
            excludes: Vec::new(),
            hash: None,
            anonymize: true,
            arc_root: None,
            force: false,
            skip_unreadable: false,
            strict_ustar: false,
            progress: None,
        }
    }

    /// Where to write the catalog (default `DIR/.tartape/index.db`).
    pub fn catalog(mut self, path: Option<PathBuf>) -> Self {
        self.catalog = path;
        self
    }

    /// Adds a glob matched against each relative path and each file name.
    pub fn exclude(mut self, glob: impl Into<String>) -> Self {
        self.excludes.push(glob.into());
        self
    }

    /// Reads every file while recording and stores its digest (`--hash`), which
    /// `verify --deep`, `stream` and `restore` then check. `None` (the default) reads no
    /// content.
    pub fn hash(mut self, algo: Option<HashAlgo>) -> Self {
        self.hash = algo;
        self
    }

    /// Whether headers get uid/gid 0, `root` and normalised modes (the default, SPEC §1)
    /// or the real owners, names and permission bits (`--no-anonymize`).
    pub fn anonymize(mut self, yes: bool) -> Self {
        self.anonymize = yes;
        self
    }

    /// Overrides the root name used in arc paths.
    pub fn arc_root(mut self, name: Option<Vec<u8>>) -> Self {
        self.arc_root = name;
        self
    }

    /// Replace an existing catalog.
    pub fn force(mut self, yes: bool) -> Self {
        self.force = yes;
        self
    }

    /// Leave unreadable files and directories out, listed in
    /// [`RecordSummary::skipped_unreadable`], instead of failing the whole recording.
    pub fn skip_unreadable(mut self, yes: bool) -> Self {
        self.skip_unreadable = yes;
        self
    }

    /// Refuse what the Python tartape refuses instead of giving it a PAX extended header:
    /// a header path over 255 bytes, with a component over 100 bytes or with no ustar
    /// split, a symlink target over 100 bytes. All are reported at once and no catalog is
    /// written.
    pub fn strict_ustar(mut self, yes: bool) -> Self {
        self.strict_ustar = yes;
        self
    }

    /// Called with the number of entries seen so far, every few thousand entries.
    pub fn on_progress(mut self, f: impl FnMut(u64) + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Walks, checks and writes the catalog. Nothing is written unless all checks pass.
    pub fn commit(mut self) -> Result<RecordSummary> {
        let root = canonical_source(&self.dir)?;
        let arc_root = match self.arc_root.take() {
            Some(name) => name,
            None => root
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{}: the root has no name; give one with --arc-root",
                        root.display()
                    ))
                })?,
        };
        if arc_root.is_empty()
            || arc_root == b"."
            || arc_root == b".."
            || arc_root.contains(&b'/')
            || arc_root.contains(&0)
        {
            return Err(Error::Usage(format!(
                "--arc-root {:?}: must be a single non-empty path component, not `.` or `..`",
                String::from_utf8_lossy(&arc_root)
            )));
        }
        let patterns = self
            .excludes
            .iter()
            .map(|g| {
                glob::Pattern::new(g).map_err(|e| Error::Usage(format!("--exclude {g:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let (root_fd, _) = open_root(&root)?;
        // Before the walk, so that creating DIR/.tartape does not move the root's mtime
        // after it was recorded.
        let target = CatalogTarget::locate(&root, root_fd.as_fd(), self.catalog.as_deref())?;
        let root_stat = rustix::fs::fstat(&root_fd).map_err(|e| Error::io(&root, e.into()))?;
        target.check_existing(self.force)?;
        target.remove_stale_temps();
        let tmp = target.create_temp()?;
        let started = std::time::Instant::now();
        // The walk emits entries in tape order; once a first batch is full, a second
        // thread numbers them, sums the offsets and fingerprint and writes the rows, so
        // writing the catalog overlaps with the walk instead of following it. A tree of
        // fewer entries is written after its walk, on this thread: starting a thread
        // would cost more than it overlaps.
        let mut walk = Walk {
            root: &root,
            arc_root: &arc_root,
            anonymize: self.anonymize,
            hash: self.hash,
            strict_ustar: self.strict_ustar,
            names: NameCache::default(),
            tmp: &tmp.path,
            writer: None,
            batch: Vec::with_capacity(BATCH),
            seen: 0,
            special: Vec::new(),
            unreadable: Vec::new(),
            violations: Vec::new(),
            progress: self.progress.take(),
        };
        let walker = Walker {
            patterns: &patterns,
        };
        let walked = walker.run(root_fd.as_fd(), &root_stat, &mut walk);
        // The writer thread, if the walk started one, ends once its channel closes.
        let threaded = walk.writer.take().map(|(tx, writer)| {
            let last = std::mem::take(&mut walk.batch);
            if walked.is_ok() {
                // A send fails only if the writer stopped; its join says why.
                let _ = tx.send(last);
            }
            drop(tx);
            writer
                .join()
                .unwrap_or_else(|_| Err(Error::io(&tmp.path, io::Error::other("writer panicked"))))
        });
        let Walk {
            batch,
            special,
            mut unreadable,
            violations,
            ..
        } = walk;
        for (path, why) in violations.iter().chain(&unreadable) {
            log::info!("{}: {why}", path.display());
        }
        let problem = if let Err(e) = walked {
            Some(e)
        } else if !violations.is_empty() {
            Some(Error::Constraints(violations))
        } else if !unreadable.is_empty() && !self.skip_unreadable {
            Some(Error::Unreadable(std::mem::take(&mut unreadable)))
        } else {
            None
        };
        let (written, problem) = match (threaded, problem) {
            (Some(written), problem) => (written, problem),
            // Nothing was written: the problem is the whole story.
            (None, Some(e)) => return Err(e),
            (None, None) => (write_rows(&tmp.path, [batch]), None),
        };
        log::debug!("walked and wrote rows in {:?}", started.elapsed());
        // A writer failure comes first: it is also why the walk stopped, if it did. In the
        // default location it usually means DIR is not writable. (A tree of less than a
        // batch, whose rows are only written once the walk found nothing wrong, reports
        // what the walk found first; the writer's failure, if any, comes on the next try.)
        let written = written.map_err(|e| match (&self.catalog, e) {
            (None, Error::Io { path, source }) => Error::Usage(format!(
                "{}: cannot write the catalog ({source}); \
                 use --catalog PATH to put the catalog elsewhere",
                path.display()
            )),
            (_, e) => e,
        });
        let rows = match (written, problem) {
            (Ok(rows), None) => rows,
            (Err(e), _) | (Ok(_), Some(e)) => return Err(e),
        };
        let observed_root = Observed::of(&root_stat);
        let meta = TapeMeta {
            fingerprint: rows.fingerprint.clone(),
            total_size: rows.end_offset + FOOTER_LEN,
            entry_count: rows.count,
            data_size: rows.data_size,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            source_root: root.clone(),
            root_dev: observed_root.dev,
            root_ino: observed_root.ino,
            arc_root,
            anonymize: self.anonymize,
            excludes: self.excludes.clone(),
            hash: self.hash,
            skip_unreadable: self.skip_unreadable,
            catalog_id: catalog::new_catalog_id()?,
        };
        tmp.seal(rows.writer, &meta, self.force)?;
        log::debug!("catalog in place in {:?}", started.elapsed());
        Ok(RecordSummary {
            fingerprint: meta.fingerprint,
            catalog: target.path,
            files: rows.files,
            dirs: rows.dirs,
            symlinks: rows.symlinks,
            long_entries: rows.long_entries,
            data_size: rows.data_size,
            total_size: meta.total_size,
            skipped_special: special,
            skipped_unreadable: unreadable,
        })
    }
}

/// Entries per message from the walk to the writer.
const BATCH: usize = 512;

/// What the row writer produced.
struct Rows {
    writer: CatalogWriter,
    fingerprint: String,
    count: u64,
    end_offset: u64,
    data_size: u64,
    files: u64,
    dirs: u64,
    symlinks: u64,
    long_entries: u64,
}

/// Numbers entries in arrival (tape) order, assigns offsets, computes the fingerprint and
/// inserts the rows into the new catalog.
fn write_rows(tmp: &Path, batches: impl IntoIterator<Item = Vec<Entry>>) -> Result<Rows> {
    let mut writer = CatalogWriter::create(tmp)?;
    let mut fp = Sha256::new();
    let (mut count, mut offset, mut data_size) = (0u64, 0u64, 0u64);
    let (mut files, mut dirs, mut symlinks, mut long_entries) = (0, 0, 0, 0);
    let mut numbers = String::new();
    for mut rows in batches {
        for e in rows.iter_mut() {
            e.ordinal = Ordinal(count);
            e.start_offset = offset;
            count += 1;
            offset += footprint(e.pax_size, e.size);
            long_entries += u64::from(e.pax_size > 0);
            fp.update(&e.arc_path);
            numbers.clear();
            use std::fmt::Write as _;
            let _ = write!(numbers, "|{}|{}", e.size, e.mtime);
            fp.update(numbers.as_bytes());
            match e.kind {
                Kind::File => {
                    files += 1;
                    data_size += e.size;
                }
                Kind::Dir => dirs += 1,
                Kind::Symlink => symlinks += 1,
            }
        }
        writer.insert(rows.iter())?;
    }
    Ok(Rows {
        writer,
        fingerprint: hex(&fp.finalize()),
        count,
        end_offset: offset,
        data_size,
        files,
        dirs,
        symlinks,
        long_entries,
    })
}

/// Where the catalog goes: its directory, held open (every later step works relative to
/// that descriptor, so no symlink swapped in on the way is followed), and its name.
struct CatalogTarget {
    /// The catalog's path, for messages and the summary.
    path: PathBuf,
    dir: OwnedFd,
    dir_path: PathBuf,
    name: OsString,
    /// The default location (in the source), not a `--catalog` path.
    default: bool,
}

impl CatalogTarget {
    /// The default `DIR/.tartape/index.db`, created (the directory) if needed, or the
    /// `--catalog` path. `DIR/.tartape` must be a real directory.
    fn locate(
        root: &Path,
        root_fd: BorrowedFd<'_>,
        catalog: Option<&Path>,
    ) -> Result<CatalogTarget> {
        let Some(p) = catalog else {
            let dir_path = root.join(CATALOG_DIR);
            match rustix::fs::mkdirat(root_fd, CATALOG_DIR, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => {
                    return Err(Error::Usage(format!(
                        "{}: cannot create the catalog directory ({}); \
                         use --catalog PATH to put the catalog elsewhere",
                        dir_path.display(),
                        io::Error::from(e)
                    )));
                }
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let dir =
                rustix::fs::openat(root_fd, CATALOG_DIR, flags, Mode::empty()).map_err(|e| {
                    match rustix::fs::statat(root_fd, CATALOG_DIR, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                            Error::Usage(format!(
                                "{}: is {}, not a directory; the catalog is never written through \
                             it (remove it, or use --catalog PATH)",
                                dir_path.display(),
                                describe_mode(st.st_mode)
                            ))
                        }
                        _ => Error::io(&dir_path, e.into()),
                    }
                })?;
            return Ok(CatalogTarget {
                path: dir_path.join(CATALOG_FILE),
                dir,
                dir_path,
                name: OsString::from(CATALOG_FILE),
                default: true,
            });
        };
        let path = absolute(p)?;
        // Writing the catalog changes its directory's mtime, which would break the tape
        // at once: only DIR/.tartape, which is never recorded, may hold it.
        if let Ok(rel) = path.strip_prefix(root)
            && !(rel.starts_with(CATALOG_DIR) && rel != Path::new(CATALOG_DIR))
        {
            return Err(Error::Usage(format!(
                "{}: a catalog inside the recorded tree would change it; \
                 put it outside {} or in {}/{CATALOG_DIR}",
                path.display(),
                root.display(),
                root.display()
            )));
        }
        let (Some(dir_path), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::Usage(format!(
                "{}: not a file path for the catalog",
                p.display()
            )));
        };
        let dir = rustix::fs::open(
            dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => Error::Usage(format!(
                "{}: the catalog's directory does not exist",
                dir_path.display()
            )),
            e => Error::io(dir_path, e.into()),
        })?;
        Ok(CatalogTarget {
            dir_path: dir_path.to_path_buf(),
            name: name.to_os_string(),
            path,
            dir,
            default: false,
        })
    }

    /// An existing catalog is replaced only with `--force`, and only if it is a regular
    /// file: never a device, FIFO, socket, directory or symlink.
    fn check_existing(&self, force: bool) -> Result<()> {
        match rustix::fs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io(&self.path, e.into())),
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => {
                Err(Error::Usage(format!(
                    "{}: is {}, not a catalog; refusing to replace it (--force replaces only \
                     a regular file)",
                    self.path.display(),
                    describe_mode(st.st_mode)
                )))
            }
            Ok(_) if !force => Err(Error::CatalogExists(self.path.clone())),
            Ok(_) => Ok(()),
        }
    }

    /// The prefix of this catalog's temporary files.
    fn temp_prefix(&self) -> Vec<u8> {
        let mut prefix = self.name.as_bytes().to_vec();
        prefix.extend_from_slice(b".tmp-");
        prefix
    }

    /// Removes the temporary files that killed recordings of this catalog left: a live
    /// recording holds an exclusive `flock` on its file from the moment it creates it, and
    /// its pid (in the name) is alive.
    fn remove_stale_temps(&self) {
        let prefix = self.temp_prefix();
        let Ok(listing) = rustix::fs::Dir::read_from(&self.dir) else {
            return;
        };
        for dent in listing.flatten() {
            let name = dent.file_name();
            let Some(rest) = name.to_bytes().strip_prefix(prefix.as_slice()) else {
                continue;
            };
            let pid = std::str::from_utf8(rest)
                .ok()
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw);
            // A pid that still runs may be between creating its file and locking it.
            if pid.is_some_and(|p| rustix::process::test_kill_process(p).is_ok()) {
                continue;
            }
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let Ok(fd) = rustix::fs::openat(&self.dir, name, flags, Mode::empty()) else {
                continue;
            };
            let regular = rustix::fs::fstat(&fd)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
            if regular
                && rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok()
                && rustix::fs::unlinkat(&self.dir, name, AtFlags::empty()).is_ok()
            {
                log::info!(
                    "removed {}, left by a recording that did not finish",
                    self.dir_path
                        .join(OsStr::from_bytes(name.to_bytes()))
                        .display()
                );
            }
        }
    }

    /// Creates this recording's temporary file beside the catalog: a unique name, created
    /// exclusively, locked at once, holding an empty catalog.
    fn create_temp(&self) -> Result<TempCatalog<'_>> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..100 {
            let mut name = self.temp_prefix();
            let id = catalog::new_catalog_id()?;
            name.extend_from_slice(format!("{}-{}", std::process::id(), &id[..16]).as_bytes());
            let path = self.dir_path.join(OsStr::from_bytes(&name));
            let name = CString::new(name)
                .map_err(|_| Error::io(&path, io::ErrorKind::InvalidInput.into()))?;
            let fd = match rustix::fs::openat(&self.dir, &name, flags, Mode::from_raw_mode(0o644)) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(self.unwritable(&path, e.into())),
            };
            let mut tmp = TempCatalog {
                target: self,
                name,
                path,
                file: fs::File::from(fd),
                kept: false,
            };
            rustix::fs::flock(&tmp.file, FlockOperation::NonBlockingLockExclusive)
                .map_err(|e| Error::io(&tmp.path, e.into()))?;
            catalog::write_template(&mut tmp.file).map_err(|e| Error::io(&tmp.path, e))?;
            return Ok(tmp);
        }
        Err(Error::io(
            &self.path,
            io::Error::other("no unique temporary name beside it"),
        ))
    }

    /// A write failure in the catalog's directory: in the default location, usually a
    /// source the user may not write to.
    fn unwritable(&self, path: &Path, e: io::Error) -> Error {
        if self.default {
            Error::Usage(format!(
                "{}: cannot write the catalog ({e}); use --catalog PATH to put the catalog \
                 elsewhere",
                path.display()
            ))
        } else {
            Error::io(path, e)
        }
    }
}

/// The temporary file a recording writes; removed when dropped, unless sealed.
struct TempCatalog<'a> {
    target: &'a CatalogTarget,
    name: CString,
    path: PathBuf,
    file: fs::File,
    kept: bool,
}

impl TempCatalog<'_> {
    /// Finishes the catalog, fsyncs it and renames it over the target (SPEC §2): a crash
    /// leaves the old catalog or the new one, never half of one.
    ///
    /// The directory is not fsync'd: that would only make the rename itself durable, and a
    /// crash that loses it leaves the previous catalog (or none), which the spec allows and
    /// which `verify`/`stream` check against the tree like any other. It cost 0.15–0.2 ms, a
    /// tenth of recording a tree of a few files.
    fn seal(mut self, writer: CatalogWriter, meta: &TapeMeta, force: bool) -> Result<()> {
        writer.finish(meta)?;
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        // What SQLite wrote by path must be the file this recording created and locked.
        let ours = rustix::fs::fstat(&self.file).map_err(|e| Error::io(&self.path, e.into()))?;
        let there = rustix::fs::statat(&self.target.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io(&self.path, e.into()))?;
        if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino) {
            return Err(Error::io(
                &self.path,
                io::Error::other("replaced while the catalog was being written"),
            ));
        }
        let t = self.target;
        // Checked again: something may have appeared there during the walk.
        t.check_existing(force)?;
        let renamed = if force {
            rustix::fs::renameat(&t.dir, &self.name, &t.dir, &t.name)
        } else {
            match rustix::fs::renameat_with(
                &t.dir,
                &self.name,
                &t.dir,
                &t.name,
                RenameFlags::NOREPLACE,
            ) {
                // A filesystem without RENAME_NOREPLACE: the check above has to do.
                Err(rustix::io::Errno::INVAL) => {
                    rustix::fs::renameat(&t.dir, &self.name, &t.dir, &t.name)
                }
                Err(rustix::io::Errno::EXIST) => return Err(Error::CatalogExists(t.path.clone())),
                other => other,
            }
        };
        renamed.map_err(|e| Error::io(&t.path, e.into()))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for TempCatalog<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let _ = rustix::fs::unlinkat(&self.target.dir, &self.name, AtFlags::empty());
        }
    }
}

/// The catalog path with its directory resolved (symlinks included), so that it can be
/// compared with the canonical source root.
fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    match (abs.parent().map(fs::canonicalize), abs.file_name()) {
        (Some(Ok(dir)), Some(name)) => Ok(dir.join(name)),
        _ => Ok(abs),
    }
}

/// The thread writing a catalog's rows, and the channel that feeds it batches.
type RowWriter = (SyncSender<Vec<Entry>>, JoinHandle<Result<Rows>>);

/// The recording's side of the walk: snapshots every object into an entry and sends the
/// entries, in tape order, to the row writer.
struct Walk<'a> {
    root: &'a Path,
    arc_root: &'a [u8],
    anonymize: bool,
    hash: Option<HashAlgo>,
    /// Refuse long entries (`--strict-ustar`) instead of giving them an `x` header.
    strict_ustar: bool,
    names: NameCache,
    /// The new catalog's temporary file.
    tmp: &'a Path,
    /// The thread writing rows and where to send them, in tape order; started by the
    /// first full batch.
    writer: Option<RowWriter>,
    /// Entries not sent yet: sending one at a time costs a wake-up of the writer each.
    batch: Vec<Entry>,
    seen: u64,
    special: Vec<(PathBuf, &'static str)>,
    unreadable: Vec<(PathBuf, String)>,
    violations: Vec<(PathBuf, String)>,
    progress: Option<Box<dyn FnMut(u64)>>,
}

impl Visitor for Walk<'_> {
    fn object(&mut self, found: &Found<'_>) -> Result<bool> {
        let is_dir = found.kind == Kind::Dir;
        if found.kind != Kind::Symlink && !readable(found.dir, found.name, found.stat, is_dir) {
            if found.rel.is_empty() {
                return Err(Error::Source {
                    path: self.root.to_path_buf(),
                    problem: "permission denied".to_string(),
                });
            }
            let path = self.path(found.rel);
            self.unreadable
                .push((path, "permission denied".to_string()));
            return Ok(false);
        }
        if let Some(entry) = self.snapshot(found) {
            self.send(entry)?;
        }
        // A directory whose own entry could not be made (a violation) is still walked, so
        // that every violation below it is reported too.
        Ok(is_dir)
    }

    fn special(&mut self, rel: &[u8], what: &'static str) {
        let path = self.path(rel);
        self.special.push((path, what));
    }

    fn failed(&mut self, rel: &[u8], listing: bool, err: io::Error) -> Result<()> {
        if rel.is_empty() && listing {
            return Err(Error::Source {
                path: self.root.to_path_buf(),
                problem: err.to_string(),
            });
        }
        let path = self.path(rel);
        self.unreadable.push((path, err.to_string()));
        Ok(())
    }
}

impl Walk<'_> {
    fn path(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    fn send(&mut self, entry: Entry) -> Result<()> {
        self.seen += 1;
        if self.seen.is_multiple_of(4096)
            && let Some(p) = self.progress.as_mut()
        {
            p(self.seen);
        }
        self.batch.push(entry);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends a full batch to the writer thread, starting it the first time.
    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let tx = match &self.writer {
            Some((tx, _)) => tx,
            None => {
                // Sixteen batches in flight keep the walk from waiting on the writer.
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(16);
                let tmp = self.tmp.to_path_buf();
                let writer = std::thread::Builder::new()
                    .name("catalog-writer".to_string())
                    .spawn(move || write_rows(&tmp, rx))
                    .map_err(|e| Error::io(self.tmp, e))?;
                &self.writer.insert((tx, writer)).0
            }
        };
        tx.send(batch)
            .map_err(|_| Error::io(self.root, io::Error::other("catalog writer stopped")))
    }

    /// Builds the entry of one object, or records why it cannot be one.
    fn snapshot(&mut self, found: &Found<'_>) -> Option<Entry> {
        let kind = found.kind;
        let rel_path = found.rel.to_vec();
        let mut arc_path = Vec::with_capacity(self.arc_root.len() + 1 + rel_path.len());
        arc_path.extend_from_slice(self.arc_root);
        if !rel_path.is_empty() {
            arc_path.push(b'/');
            arc_path.extend_from_slice(&rel_path);
        }
        let mut problems = Vec::new();
        if self.strict_ustar
            && let Some(p) = python_path_problem(&header_path(&arc_path, kind))
        {
            problems.push(p.to_string());
        }
        let link_target = if kind == Kind::Symlink {
            match rustix::fs::readlinkat(found.dir, found.name, Vec::new()) {
                Ok(t) => {
                    let t = t.into_bytes();
                    if self.strict_ustar && t.len() > 100 {
                        problems.push(format!("symlink target is {} bytes (limit 100)", t.len()));
                    }
                    t
                }
                Err(e) => {
                    let path = self.path(found.rel);
                    self.unreadable.push((path, io::Error::from(e).to_string()));
                    return None;
                }
            }
        } else {
            Vec::new()
        };
        let st = Observed::of(found.stat);
        let (uname, gname) = if self.anonymize {
            (b"root".to_vec(), b"root".to_vec())
        } else {
            let (u, g) = (
                self.names.user(st.uid as u32),
                self.names.group(st.gid as u32),
            );
            for (what, name) in [("user", &u), ("group", &g)] {
                if name.len() > 31 {
                    problems.push(format!("{what} name is {} bytes (limit 31)", name.len()));
                }
            }
            for (what, id) in [("uid", st.uid), ("gid", st.gid)] {
                if id > 0o7777777 {
                    problems.push(format!("{what} {id} does not fit 7 octal digits"));
                }
            }
            (u, g)
        };
        if !problems.is_empty() {
            let path = self.path(found.rel);
            self.violations.push((path, problems.join(", ")));
            return None;
        }
        let file = kind == Kind::File;
        let digest = match (self.hash, file) {
            (Some(algo), true) => match digest_found(found, algo) {
                Ok(d) => Some(d),
                Err(e) => {
                    let path = self.path(found.rel);
                    self.unreadable.push((path, e.to_string()));
                    return None;
                }
            },
            _ => None,
        };
        let anon = self.anonymize;
        let pax_size = pax_records(&arc_path, kind, &link_target).len() as u64;
        Some(Entry {
            ordinal: Ordinal(0),
            arc_path,
            rel_path,
            kind,
            size: if file { st.size } else { 0 },
            mode: normalised_mode(kind, st.perm, anon),
            disk_mode: st.perm,
            uid: if anon { 0 } else { st.uid },
            gid: if anon { 0 } else { st.gid },
            uname,
            gname,
            mtime: python_mtime(st.mtime.0, st.mtime.1),
            mtime_sec: st.mtime.0,
            mtime_nsec: st.mtime.1,
            ctime_sec: if file { st.ctime.0 } else { 0 },
            ctime_nsec: if file { st.ctime.1 } else { 0 },
            link_target,
            pax_size,
            start_offset: 0,
            digest,
        })
    }
}

/// Digest of the whole content of a file the walk found, read through a descriptor
/// opened beside it without following a symlink, and checked to be the object lstat'ed.
fn digest_found(found: &Found<'_>, algo: HashAlgo) -> io::Result<String> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(found.dir, found.name, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if (st.st_dev, st.st_ino) != (found.stat.st_dev, found.stat.st_ino) {
        return Err(io::Error::other("replaced while being recorded"));
    }
    let mut f = fs::File::from(fd);
    let mut hasher = ContentHasher::new(algo);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// uid/gid → name lookups, cached (only used without anonymisation).
#[derive(Default)]
struct NameCache {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl NameCache {
    fn user(&mut self, uid: u32) -> Vec<u8> {
        self.users
            .entry(uid)
            .or_insert_with(|| lookup_name(uid, true))
            .clone()
    }

    fn group(&mut self, gid: u32) -> Vec<u8> {
        self.groups
            .entry(gid)
            .or_insert_with(|| lookup_name(gid, false))
            .clone()
    }
}

/// The user or group name of an id, or the id in decimal when the system has none (as
/// the Python tartape does).
fn lookup_name(id: u32, user: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: getpwuid_r/getgrgid_r write only into `pw`/`gr`, `out` and `buf` (whose
    // length they are given); on success `out` is non-null and the name they point to
    // lies in `buf`, NUL-terminated, and is copied out before `buf` is dropped.
    let name = unsafe {
        let name_ptr = if user {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut out: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwuid_r(id, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out);
            if rc == 0 && !out.is_null() {
                pw.pw_name
            } else {
                std::ptr::null_mut()
            }
        } else {
            let mut gr: libc::group = std::mem::zeroed();
            let mut out: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrgid_r(id, &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out);
            if rc == 0 && !out.is_null() {
                gr.gr_name
            } else {
                std::ptr::null_mut()
            }
        };
        (!name_ptr.is_null()).then(|| std::ffi::CStr::from_ptr(name_ptr).to_bytes().to_vec())
    };
    name.unwrap_or_else(|| id.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small tree and a recorder for it, catalog outside the tree.
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("a.txt"), b"hello\n").unwrap();
        fs::write(src.join("d/b"), vec![7u8; 2000]).unwrap();
        let cat = dir.path().join("c.db");
        (dir, src, cat)
    }

    fn temps(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn two_recorders_in_one_process_keep_their_own_temporary_files() {
        let (dir, src, cat) = tree();
        TapeRecorder::new(&src)
            .catalog(Some(cat.clone()))
            .commit()
            .unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (src, cat) = (src.clone(), cat.clone());
                std::thread::spawn(move || {
                    TapeRecorder::new(&src)
                        .catalog(Some(cat))
                        .force(true)
                        .commit()
                        .map(|s| s.fingerprint)
                })
            })
            .collect();
        let fingerprints: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("every recorder succeeds"))
            .collect();
        assert!(fingerprints.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(temps(dir.path()), Vec::<String>::new());
        crate::catalog::Catalog::open(&cat).unwrap();
    }

    #[test]
    fn stale_temporaries_go_live_and_locked_ones_stay() {
        let (dir, src, cat) = tree();
        // A dead pid (never a running process: pid_max is far below it) and a name of
        // the old scheme.
        let dead = dir.path().join("c.db.tmp-2147483600-00");
        fs::write(&dead, b"left over").unwrap();
        let old = dir.path().join("c.db.tmp-2147483601");
        fs::write(&old, b"left over").unwrap();
        // A live recording elsewhere in this process: our pid, locked.
        let live = dir
            .path()
            .join(format!("c.db.tmp-{}-live", std::process::id()));
        let live_file = fs::File::create(&live).unwrap();
        rustix::fs::flock(&live_file, FlockOperation::NonBlockingLockExclusive).unwrap();
        // Unrelated files stay.
        fs::write(dir.path().join("other.db.tmp-1-x"), b"x").unwrap();
        TapeRecorder::new(&src).catalog(Some(cat)).commit().unwrap();
        let mut left = temps(dir.path());
        left.sort();
        assert_eq!(
            left,
            [
                format!("c.db.tmp-{}-live", std::process::id()),
                "other.db.tmp-1-x".to_string()
            ]
        );
    }
}
