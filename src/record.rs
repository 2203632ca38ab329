//! Recording: walk a directory, snapshot every entry, check ustar constraints, compute
//! offsets and the fingerprint, and write the catalog atomically (SPEC §2).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::catalog::{CatalogWriter, HashAlgo, TapeMeta, hex};
use crate::entry::{Entry, Kind, Ordinal, python_mtime};
use crate::error::{Error, Result};
use crate::header::{header_path, split_path};
use crate::layout::{FOOTER_LEN, footprint};

/// Name of the directory inside the source that holds the default catalog.
pub const CATALOG_DIR: &str = ".tartape";
/// File name of the default catalog.
pub const CATALOG_FILE: &str = "index.db";

/// The default catalog location for a source directory.
pub fn default_catalog(dir: &Path) -> PathBuf {
    dir.join(CATALOG_DIR).join(CATALOG_FILE)
}

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
    progress: Option<Box<dyn FnMut(u64)>>,
}

/// What a recording did.
#[derive(Debug, Clone)]
pub struct RecordSummary {
    pub fingerprint: String,
    pub catalog: PathBuf,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub data_size: u64,
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
            "entries: {} ({} files, {} directories, {} symlinks)",
            self.files + self.dirs + self.symlinks,
            self.files,
            self.dirs,
            self.symlinks
        )?;
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

    pub fn hash(mut self, algo: Option<HashAlgo>) -> Self {
        self.hash = algo;
        self
    }

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

    pub fn skip_unreadable(mut self, yes: bool) -> Self {
        self.skip_unreadable = yes;
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
        if arc_root.is_empty() || arc_root.contains(&b'/') || arc_root.contains(&0) {
            return Err(Error::Usage(format!(
                "--arc-root {:?}: must be a single non-empty path component",
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

        let catalog = match &self.catalog {
            Some(p) => absolute(p)?,
            None => {
                // Created before the walk so that it does not move the root's mtime later.
                let dir = root.join(CATALOG_DIR);
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Error::Usage(format!(
                            "{}: cannot create the catalog directory ({e}); \
                             use --catalog PATH to put the catalog elsewhere",
                            dir.display()
                        )));
                    }
                }
                root.join(CATALOG_DIR).join(CATALOG_FILE)
            }
        };
        // Writing the catalog changes its directory's mtime, which would break the tape
        // at once: only DIR/.tartape, which is never recorded, may hold it.
        if let Ok(rel) = catalog.strip_prefix(&root)
            && !(rel.starts_with(CATALOG_DIR) && rel != Path::new(CATALOG_DIR))
        {
            return Err(Error::Usage(format!(
                "{}: a catalog inside the recorded tree would change it; \
                 put it outside {} or in {}/{CATALOG_DIR}",
                catalog.display(),
                root.display(),
                root.display()
            )));
        }
        if catalog.exists() && !self.force {
            return Err(Error::CatalogExists(catalog));
        }
        let tmp = temp_path(&catalog);

        let parent = catalog.parent().unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::Usage(format!(
                "{}: the catalog's directory does not exist",
                parent.display()
            )));
        }
        let _ = fs::remove_file(&tmp);
        // From here on, any way out but success (an error, a panic) removes it.
        let tmp_guard = RemoveOnDrop(Some(&tmp));
        let started = std::time::Instant::now();
        // The walk emits entries in tape order; once a first batch is full, a second
        // thread numbers them, sums the offsets and fingerprint and writes the rows, so
        // writing the catalog overlaps with the walk instead of following it. A tree of
        // fewer entries is written after its walk, on this thread: starting a thread
        // would cost more than it overlaps.
        let mut walk = Walk {
            root: &root,
            patterns: &patterns,
            anonymize: self.anonymize,
            hash: self.hash,
            // The catalog may be put inside the tree with --catalog: never record it.
            skip_rel: [&catalog, &tmp]
                .iter()
                .filter_map(|p| p.strip_prefix(&root).ok())
                .map(|r| r.as_os_str().as_bytes().to_vec())
                .collect(),
            names: NameCache::default(),
            tmp: &tmp,
            writer: None,
            batch: Vec::with_capacity(BATCH),
            seen: 0,
            special: Vec::new(),
            unreadable: Vec::new(),
            violations: Vec::new(),
            progress: self.progress.take(),
        };
        let walked = walk.run(&arc_root);
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
                .unwrap_or_else(|_| Err(Error::io(&tmp, io::Error::other("writer panicked"))))
        });
        let Walk {
            batch,
            special,
            unreadable,
            violations,
            ..
        } = walk;
        let problem = if let Err(e) = walked {
            Some(e)
        } else if !violations.is_empty() {
            Some(Error::Constraints {
                count: violations.len(),
                report: violations.join("; "),
            })
        } else if !unreadable.is_empty() && !self.skip_unreadable {
            Some(Error::Unreadable {
                count: unreadable.len(),
                report: unreadable
                    .iter()
                    .map(|(p, why)| format!("{}: {why}", p.display()))
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        } else {
            None
        };
        let (written, problem) = match (threaded, problem) {
            (Some(written), problem) => (written, problem),
            // Nothing was written: the problem is the whole story.
            (None, Some(e)) => return Err(e),
            (None, None) => (write_rows(&tmp, [batch]), None),
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
        let meta = TapeMeta {
            fingerprint: rows.fingerprint.clone(),
            total_size: rows.end_offset + FOOTER_LEN,
            entry_count: rows.count,
            data_size: rows.data_size,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            source_root: root.clone(),
            arc_root,
            anonymize: self.anonymize,
            excludes: self.excludes.clone(),
            hash: self.hash,
        };
        seal(rows.writer, &meta, &tmp, &catalog)?;
        tmp_guard.keep();
        log::debug!("catalog in place in {:?}", started.elapsed());
        Ok(RecordSummary {
            fingerprint: meta.fingerprint,
            catalog,
            files: rows.files,
            dirs: rows.dirs,
            symlinks: rows.symlinks,
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
}

/// Numbers entries in arrival (tape) order, assigns offsets, computes the fingerprint and
/// inserts the rows into the new catalog.
fn write_rows(tmp: &Path, batches: impl IntoIterator<Item = Vec<Entry>>) -> Result<Rows> {
    let mut writer = CatalogWriter::create(tmp)?;
    let mut fp = Sha256::new();
    let (mut count, mut offset, mut data_size) = (0u64, 0u64, 0u64);
    let (mut files, mut dirs, mut symlinks) = (0, 0, 0);
    let mut numbers = String::new();
    for mut rows in batches {
        for e in rows.iter_mut() {
            e.ordinal = Ordinal(count);
            e.start_offset = offset;
            count += 1;
            offset += footprint(e.size);
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
    })
}

/// Finishes the catalog, fsyncs it and renames it over the target (SPEC §2): a crash
/// leaves the old catalog or the new one, never half of one.
///
/// The directory is not fsync'd: that would only make the rename itself durable, and a
/// crash that loses it leaves the previous catalog (or none), which the spec allows and
/// which `verify`/`stream` check against the tree like any other. It cost 0.15–0.2 ms, a
/// tenth of recording a tree of a few files.
fn seal(writer: CatalogWriter, meta: &TapeMeta, tmp: &Path, catalog: &Path) -> Result<()> {
    writer.finish(meta)?;
    fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(tmp, e))?;
    fs::rename(tmp, catalog).map_err(|e| Error::io(catalog, e))
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

/// The catalog path with its directory resolved (symlinks included), so that it can be
/// compared with the canonical source root.
fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    match (abs.parent().map(fs::canonicalize), abs.file_name()) {
        (Some(Ok(dir)), Some(name)) => Ok(dir.join(name)),
        _ => Ok(abs),
    }
}

fn temp_path(catalog: &Path) -> PathBuf {
    let mut name = catalog
        .file_name()
        .unwrap_or(OsStr::new("index.db"))
        .to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    catalog.with_file_name(name)
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
    let name_ptr = unsafe {
        if user {
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
        }
    };
    if name_ptr.is_null() {
        return id.to_string().into_bytes();
    }
    // SAFETY: getpw*/getgr*_r returned success, so the name points into `buf`, NUL-ended.
    unsafe { std::ffi::CStr::from_ptr(name_ptr) }
        .to_bytes()
        .to_vec()
}

/// Header mode of an object (SPEC §1, anonymisation).
pub fn normalised_mode(kind: Kind, disk_mode: u32, anonymize: bool) -> u32 {
    if !anonymize {
        return disk_mode;
    }
    match kind {
        Kind::Dir => 0o755,
        Kind::Symlink => 0o777,
        Kind::File if disk_mode & 0o111 != 0 => 0o755,
        Kind::File => 0o644,
    }
}

/// Whether the current process may read an object with these permissions (no syscall:
/// recording must stay as cheap as `find`). ACLs are not considered.
fn readable(meta: &fs::Metadata, need_exec: bool) -> bool {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // SAFETY: geteuid cannot fail.
    let euid = *EUID.get_or_init(|| unsafe { libc::geteuid() });
    if euid == 0 {
        return true;
    }
    let mode = meta.mode();
    let (r, x) = if meta.uid() == euid {
        (0o400, 0o100)
    } else if in_group(meta.gid()) {
        (0o040, 0o010)
    } else {
        (0o004, 0o001)
    };
    mode & r != 0 && (!need_exec || mode & x != 0)
}

fn in_group(gid: u32) -> bool {
    thread_local! {
        static GROUPS: Vec<u32> = {
            let mut groups = vec![0 as libc::gid_t; 256];
            let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
            groups.truncate(n.max(0) as usize);
            groups.push(unsafe { libc::getegid() });
            groups
        };
    }
    GROUPS.with(|g| g.contains(&gid))
}

/// Removes a file when dropped, unless told to keep it.
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl RemoveOnDrop<'_> {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// The thread writing a catalog's rows, and the channel that feeds it batches.
type RowWriter = (SyncSender<Vec<Entry>>, JoinHandle<Result<Rows>>);

struct Walk<'a> {
    root: &'a Path,
    patterns: &'a [glob::Pattern],
    anonymize: bool,
    hash: Option<HashAlgo>,
    /// Relative paths of the catalog and its temporary file when they are in the tree.
    skip_rel: Vec<Vec<u8>>,
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
    violations: Vec<String>,
    progress: Option<Box<dyn FnMut(u64)>>,
}

impl Walk<'_> {
    /// Whether to leave out the child `name` at relative path `rel`: the catalog's own
    /// files, or a match of an `--exclude` glob. Compared as bytes: this runs per entry.
    fn excluded(&self, rel: &[u8], name: &[u8]) -> bool {
        if rel == CATALOG_DIR.as_bytes() || self.skip_rel.iter().any(|s| s == rel) {
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

    /// Walks the tree and emits entries in tape order (memcmp order of arc paths) without
    /// a global sort. Within a directory, each child `c` is emitted at the position of the
    /// key `c`, and a child directory's contents at the key `c/`: every path below `c`
    /// starts with `c/`, so sorting these keys per directory gives exactly the global byte
    /// order (`d` < `d.txt` < `d/x`, because `.` < `/`).
    ///
    /// `std::fs::read_dir` entries are lstat'ed relative to their open directory
    /// (`fstatat`), as `find` does; `walkdir` lstats full paths, which cost 40%.
    fn run(&mut self, arc_root: &[u8]) -> Result<()> {
        let root = self.root;
        let root_meta = fs::symlink_metadata(root).map_err(|e| Error::Source {
            path: root.to_path_buf(),
            problem: e.to_string(),
        })?;
        if !readable(&root_meta, true) {
            return Err(Error::Source {
                path: root.to_path_buf(),
                problem: "permission denied".to_string(),
            });
        }
        if let Some(entry) = self.snapshot(root, b"", Kind::Dir, &root_meta, arc_root) {
            self.send(entry)?;
        }
        self.walk_dir(root, &[], arc_root)
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

    fn walk_dir(&mut self, dir: &Path, dir_rel: &[u8], arc_root: &[u8]) -> Result<()> {
        let read = match fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) if dir_rel.is_empty() => {
                return Err(Error::Source {
                    path: dir.to_path_buf(),
                    problem: e.to_string(),
                });
            }
            Err(e) => {
                self.unreadable.push((dir.to_path_buf(), e.to_string()));
                return Ok(());
            }
        };
        let mut children: Vec<(Vec<u8>, Kind, fs::Metadata)> = Vec::new();
        for dent in read {
            let dent = match dent {
                Ok(d) => d,
                Err(e) => {
                    self.unreadable.push((dir.to_path_buf(), e.to_string()));
                    break;
                }
            };
            let mut rel = Vec::with_capacity(dir_rel.len() + 1 + 16);
            if !dir_rel.is_empty() {
                rel.extend_from_slice(dir_rel);
                rel.push(b'/');
            }
            let name = dent.file_name();
            rel.extend_from_slice(name.as_bytes());
            if self.excluded(&rel, name.as_bytes()) {
                continue;
            }
            let root = self.root;
            let path = || root.join(OsStr::from_bytes(&rel));
            let meta = match dent.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.unreadable.push((path(), e.to_string()));
                    continue;
                }
            };
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                let what = if ft.is_socket() {
                    "socket"
                } else if ft.is_fifo() {
                    "fifo"
                } else if ft.is_block_device() {
                    "block device"
                } else {
                    "character device"
                };
                self.special.push((path(), what));
                continue;
            };
            if kind != Kind::Symlink && !readable(&meta, kind == Kind::Dir) {
                self.unreadable
                    .push((path(), "permission denied".to_string()));
                continue;
            }
            children.push((rel, kind, meta));
        }
        // (key, child index, is the subtree): `name` for the child, `name/` for its contents.
        let name_at = dir_rel.len() + usize::from(!dir_rel.is_empty());
        let mut keys: Vec<(&[u8], usize, bool)> = Vec::with_capacity(children.len() + 8);
        for (i, (rel, kind, _)) in children.iter().enumerate() {
            keys.push((&rel[name_at..], i, false));
            if *kind == Kind::Dir {
                keys.push((&rel[name_at..], i, true));
            }
        }
        keys.sort_unstable_by(|a, b| key_cmp(a.0, a.2, b.0, b.2));
        let order: Vec<(usize, bool)> = keys.into_iter().map(|(_, i, sub)| (i, sub)).collect();
        for (i, subtree) in order {
            let (rel, kind, meta) = &children[i];
            let path = self.root.join(OsStr::from_bytes(rel));
            if subtree {
                // A directory whose own entry could not be made (a violation) is still
                // walked, so that every violation below it is reported too.
                self.walk_dir(&path, rel, arc_root)?;
            } else if let Some(entry) = self.snapshot(&path, rel, *kind, meta, arc_root) {
                self.send(entry)?;
            }
        }
        Ok(())
    }

    /// Builds the entry of one object, or records why it cannot be one.
    fn snapshot(
        &mut self,
        path: &Path,
        rel: &[u8],
        kind: Kind,
        meta: &fs::Metadata,
        arc_root: &[u8],
    ) -> Option<Entry> {
        let rel_path = rel.to_vec();
        let mut arc_path = Vec::with_capacity(arc_root.len() + 1 + rel_path.len());
        arc_path.extend_from_slice(arc_root);
        if !rel_path.is_empty() {
            arc_path.push(b'/');
            arc_path.extend_from_slice(&rel_path);
        }
        let mut problems = Vec::new();
        if let Err(p) = split_path(&header_path(&arc_path, kind)) {
            problems.push(p.to_string());
        }
        let link_target = if kind == Kind::Symlink {
            match fs::read_link(path) {
                Ok(t) => {
                    let t = t.into_os_string().into_vec();
                    if t.len() > 100 {
                        problems.push(format!("symlink target is {} bytes (limit 100)", t.len()));
                    }
                    t
                }
                Err(e) => {
                    self.unreadable.push((path.to_path_buf(), e.to_string()));
                    return None;
                }
            }
        } else {
            Vec::new()
        };
        let (uname, gname) = if self.anonymize {
            (b"root".to_vec(), b"root".to_vec())
        } else {
            let (u, g) = (self.names.user(meta.uid()), self.names.group(meta.gid()));
            for (what, name) in [("user", &u), ("group", &g)] {
                if name.len() > 31 {
                    problems.push(format!("{what} name is {} bytes (limit 31)", name.len()));
                }
            }
            for (what, id) in [("uid", meta.uid()), ("gid", meta.gid())] {
                if id > 0o7777777 {
                    problems.push(format!("{what} {id} does not fit 7 octal digits"));
                }
            }
            (u, g)
        };
        if !problems.is_empty() {
            self.violations
                .push(format!("{}: {}", path.display(), problems.join(", ")));
            return None;
        }
        let size = if kind == Kind::File { meta.size() } else { 0 };
        let digest = match (self.hash, kind) {
            (Some(algo), Kind::File) => match digest_file(path, algo) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.unreadable.push((path.to_path_buf(), e.to_string()));
                    return None;
                }
            },
            _ => None,
        };
        let disk_mode = meta.mode() & 0o7777;
        let (anon, uid, gid) = (self.anonymize, meta.uid() as u64, meta.gid() as u64);
        Some(Entry {
            ordinal: Ordinal(0),
            arc_path,
            rel_path,
            kind,
            size,
            mode: normalised_mode(kind, disk_mode, anon),
            disk_mode,
            uid: if anon { 0 } else { uid },
            gid: if anon { 0 } else { gid },
            uname,
            gname,
            mtime: python_mtime(meta.mtime(), meta.mtime_nsec()),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            link_target,
            start_offset: 0,
            digest,
        })
    }
}

/// Compares `a` (followed by `/` when `a_slash`) with `b` (likewise) as bytes.
fn key_cmp(a: &[u8], a_slash: bool, b: &[u8], b_slash: bool) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then_with(|| {
        let rest_a = a[n..].iter().chain(if a_slash { &b"/"[..] } else { &[] });
        let rest_b = b[n..].iter().chain(if b_slash { &b"/"[..] } else { &[] });
        rest_a.cmp(rest_b)
    })
}

/// Digest of a whole file, lower-case hex.
pub fn digest_file(path: &Path, algo: HashAlgo) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
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

/// MD5 or SHA-256 behind one interface.
pub enum ContentHasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl ContentHasher {
    pub fn new(algo: HashAlgo) -> ContentHasher {
        match algo {
            HashAlgo::Md5 => ContentHasher::Md5(Md5::new()),
            HashAlgo::Sha256 => ContentHasher::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Md5(h) => h.update(data),
            ContentHasher::Sha256(h) => h.update(data),
        }
    }

    pub fn finish(self) -> String {
        match self {
            ContentHasher::Md5(h) => hex(&h.finalize()),
            ContentHasher::Sha256(h) => hex(&h.finalize()),
        }
    }
}

use std::os::unix::ffi::OsStringExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymised_modes() {
        assert_eq!(normalised_mode(Kind::File, 0o600, true), 0o644);
        assert_eq!(normalised_mode(Kind::File, 0o700, true), 0o755);
        assert_eq!(normalised_mode(Kind::File, 0o4711, false), 0o4711);
        assert_eq!(normalised_mode(Kind::Dir, 0o700, true), 0o755);
        assert_eq!(normalised_mode(Kind::Symlink, 0o777, true), 0o777);
    }

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

    #[test]
    fn temp_path_is_beside_target() {
        let t = temp_path(Path::new("/a/b/index.db"));
        assert_eq!(t.parent(), Some(Path::new("/a/b")));
        assert!(
            t.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("index.db.tmp-")
        );
    }
}
