//! The SQLite catalog: the only module that speaks SQL. The schema and its version live
//! here and nowhere else.
//!
//! A catalog is a promise about every byte of a tape, so nothing in it is taken on trust
//! (SPEC §2, "catalog self-check"): every row carries a CRC-32 of all its fields, the
//! tape-wide facts carry one over all of them, and the offset table's sizes one of their
//! own; each is checked when read, before anything is served from it. A field stored twice
//! (whole-second and nanosecond mtime, header mode and disk mode, a row's size and the
//! layout's) must agree. CRC-32 detects every error of one or two flipped bits in such
//! short records, so a flipped bit anywhere is refused (or lands where nothing reads it),
//! never a different tape.
//!
//! An opened catalog serves the file it opened: every SQLite connection of its pool reads
//! that same file (checked by device, inode and the catalog's random id), so a catalog
//! recorded again, or replaced, while a mount serves it never changes a byte it serves.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::entry::{Entry, Kind, Ordinal, normalised_mode, python_mtime};
use crate::error::{Error, Result};
use crate::header::pax_records;
use crate::layout::{OffsetTable, footprint_checked};

/// Version of the schema below. A catalog of any other version is refused.
pub const FORMAT_VERSION: u32 = 3;

/// Marks the file as a tartape catalog (`PRAGMA application_id`, "TTAP").
const APPLICATION_ID: i32 = 0x5454_4150;

/// SQLite connections an opened catalog keeps at most (one per concurrent reader).
const MAX_CONNECTIONS: usize = 16;

/// The schema of a catalog. Used to make [`TEMPLATE`], and to check it.
#[cfg(test)]
const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE entries (
    ordinal      INTEGER PRIMARY KEY,
    arc_path     BLOB NOT NULL,
    rel_path     BLOB NOT NULL,
    kind         INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    mode         INTEGER NOT NULL,
    disk_mode    INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    gid          INTEGER NOT NULL,
    uname        BLOB NOT NULL,
    gname        BLOB NOT NULL,
    mtime        INTEGER NOT NULL,
    mtime_sec    INTEGER NOT NULL,
    mtime_nsec   INTEGER NOT NULL,
    ctime_sec    INTEGER NOT NULL,
    ctime_nsec   INTEGER NOT NULL,
    link_target  BLOB NOT NULL,
    start_offset INTEGER NOT NULL,
    digest       TEXT,
    -- Length of the records of the entry's PAX `x` header, 0 when it has none.
    pax_size     INTEGER NOT NULL,
    -- CRC-32 of every field above (`row_crc`).
    crc          INTEGER NOT NULL
);
-- Every entry's size, u64 little-endian, in tape order, and the ordinal and pax_size of
-- every long entry (u64 little-endian pairs): the offset table is rebuilt from them on
-- open without reading the rows.
CREATE TABLE layout (
    id    INTEGER PRIMARY KEY CHECK (id = 0),
    sizes BLOB NOT NULL,
    long  BLOB NOT NULL
);
";

/// An empty catalog: [`SCHEMA`] and the pragmas of [`create_schema`], no rows. Every new
/// catalog starts as a copy of it instead of running the DDL, which cost 0.1–0.2 ms of
/// each `record`: a tenth of recording a tree of a handful of files.
/// `template_is_the_schema` checks it against `SCHEMA`; after a schema change, rewrite it
/// with `TARTAPE_WRITE_TEMPLATE=1 cargo test --lib template_is_the_schema` (that run still
/// compares the old, compiled-in copy and fails; the next one compiles the new copy).
const TEMPLATE: &[u8] = include_bytes!("catalog_template.db");

/// Creates the schema in an empty database (how [`TEMPLATE`] was made).
#[cfg(test)]
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = OFF; PRAGMA page_size = 4096;
         PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {FORMAT_VERSION};
         {SCHEMA}"
    ))
}

const ENTRY_COLUMNS: &str = "ordinal, arc_path, rel_path, kind, size, mode, disk_mode, uid, gid, \
     uname, gname, mtime, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec, link_target, \
     start_offset, digest, pax_size, crc";

pub use crate::digest::{HashAlgo, hex};

/// Tape-wide facts stored with the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeMeta {
    /// SHA-256 (lower-case hex) of every entry's `arc_path|size|mtime` in tape order
    /// (SPEC §1): the Python tartape's definition, kept.
    pub fingerprint: String,
    /// Bytes of the whole tape: every entry's footprint plus the 1024-byte footer.
    pub total_size: u64,
    /// Entries on the tape, the root directory included.
    pub entry_count: u64,
    /// Content bytes of the regular files, without headers or padding.
    pub data_size: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Canonical source path at recording time.
    pub source_root: PathBuf,
    /// Device and inode of the recorded root directory: a tape is bound to it.
    pub root_dev: u64,
    /// Inode of the recorded root directory (see `root_dev`).
    pub root_ino: u64,
    /// The root entry's arc_path, which starts every other one: the final component of
    /// the source path, or `--arc-root NAME`. Raw bytes, maybe not UTF-8.
    pub arc_root: Vec<u8>,
    /// Owners and modes were anonymised (uid/gid 0, `root`, normalised modes), SPEC §1.
    pub anonymize: bool,
    /// The `--exclude` globs the recording honoured, in the order given.
    pub excludes: Vec<String>,
    /// Algorithm of the per-file content digests (`record --hash`), if any were stored.
    pub hash: Option<HashAlgo>,
    /// Unreadable paths were skipped (`--skip-unreadable`) instead of failing.
    pub skip_unreadable: bool,
    /// Random, unique to this catalog file (32 hex digits): tells two recordings apart.
    pub catalog_id: String,
}

impl TapeMeta {
    /// The stored form: `(key, value)` pairs, without the CRCs.
    fn pairs(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("format_version", FORMAT_VERSION.to_string()),
            ("fingerprint", self.fingerprint.clone()),
            ("total_size", self.total_size.to_string()),
            ("entry_count", self.entry_count.to_string()),
            ("data_size", self.data_size.to_string()),
            ("created_at", self.created_at.to_string()),
            ("source_root", hex(self.source_root.as_os_str().as_bytes())),
            ("root_dev", self.root_dev.to_string()),
            ("root_ino", self.root_ino.to_string()),
            ("arc_root", hex(&self.arc_root)),
            ("anonymize", self.anonymize.to_string()),
            ("excludes", self.excludes.join("\n")),
            ("hash", self.hash.map_or("none", HashAlgo::name).to_string()),
            ("skip_unreadable", self.skip_unreadable.to_string()),
            ("catalog_id", self.catalog_id.clone()),
        ])
    }
}

/// A new random catalog id (kernel randomness, `getrandom`).
pub fn new_catalog_id() -> Result<String> {
    let mut id = [0u8; 16];
    let mut filled = 0;
    while filled < id.len() {
        match rustix::rand::getrandom(&mut id[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::io("getrandom", e.into())),
        }
    }
    Ok(hex(&id))
}

/// CRC-32 of one row: every field, each length-prefixed, so that no two different rows
/// serialise alike. The fields are laid out in one buffer and hashed at once (the SIMD
/// path of `crc32fast` needs more than a few bytes per call).
pub fn row_crc(e: &Entry) -> u32 {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        let int = |buf: &mut Vec<u8>, v: u64| buf.extend_from_slice(&v.to_le_bytes());
        let bytes = |buf: &mut Vec<u8>, b: &[u8]| {
            buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
            buf.extend_from_slice(b);
        };
        int(buf, e.ordinal.0);
        bytes(buf, &e.arc_path);
        bytes(buf, &e.rel_path);
        int(buf, e.kind.code() as u64);
        int(buf, e.size);
        int(buf, u64::from(e.mode));
        int(buf, u64::from(e.disk_mode));
        int(buf, e.uid);
        int(buf, e.gid);
        bytes(buf, &e.uname);
        bytes(buf, &e.gname);
        for v in [
            e.mtime,
            e.mtime_sec,
            e.mtime_nsec,
            e.ctime_sec,
            e.ctime_nsec,
        ] {
            int(buf, v as u64);
        }
        bytes(buf, &e.link_target);
        int(buf, e.start_offset);
        match &e.digest {
            Some(d) => bytes(buf, d.as_bytes()),
            None => int(buf, u64::MAX),
        }
        int(buf, e.pax_size);
        crc32fast::hash(buf)
    })
}

/// CRC-32 of the layout: the sizes, then the long entries.
fn layout_crc(sizes: &[u8], long: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(sizes);
    h.update(long);
    h.finalize()
}

/// CRC-32 of the tape-wide pairs, in key order.
fn meta_crc<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (k, v) in pairs {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    h.finalize()
}

/// Reads an SQLite failure: only a malformed file or content is a corrupted catalog;
/// anything else (permissions, I/O, …) says nothing about the content.
fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| {
        use rusqlite::ErrorCode as C;
        let corrupt = match &e {
            rusqlite::Error::SqliteFailure(f, _) => matches!(
                f.code,
                // SQLITE_ERROR: a statement of this schema failed (no such table or
                // column), so the schema is not the one this tartape writes.
                C::DatabaseCorrupt | C::NotADatabase | C::Unknown | C::TooBig | C::TypeMismatch
            ),
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..)
            | rusqlite::Error::QueryReturnedNoRows => true,
            _ => false,
        };
        if corrupt {
            Error::corrupt(path, e.to_string())
        } else {
            Error::Sqlite {
                path: path.to_path_buf(),
                source: Box::new(e),
            }
        }
    }
}

/// Has SQLite start without lookaside buffers and without a bulk page-cache allocation.
/// At start-up SQLite writes into every slot of both: about 30 fresh memory pages of the
/// roughly 210 that `tartape record` of a few files touches in all, each a page fault,
/// for caches that the catalog's few statements do not need.
///
/// Process-wide, and only effective before SQLite's first use in the process (later,
/// SQLite refuses the settings and nothing changes).
///
/// # Safety
///
/// `sqlite3_config` is not thread-safe: no other thread may use SQLite while this runs.
/// Call it before starting threads, as `main` does.
pub unsafe fn configure_sqlite() {
    use rusqlite::ffi::{SQLITE_CONFIG_LOOKASIDE, SQLITE_CONFIG_PAGECACHE, sqlite3_config};
    use std::ffi::{c_int, c_void};
    // SAFETY: these are the argument lists sqlite3_config takes for these options (slot
    // size and count; buffer, slot size and count). Before sqlite3_initialize it only
    // stores them; after it, it returns SQLITE_MISUSE and changes nothing. The caller
    // guarantees that no other thread uses SQLite meanwhile.
    unsafe {
        sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0 as c_int, 0 as c_int);
        sqlite3_config(
            SQLITE_CONFIG_PAGECACHE,
            std::ptr::null_mut::<c_void>(),
            0 as c_int,
            0 as c_int,
        );
    }
}

/// Fills a new, empty file with an empty catalog (the caller created it, exclusively).
pub fn write_template(file: &mut File) -> std::io::Result<()> {
    use std::io::Write as _;
    file.write_all(TEMPLATE)
}

/// Writes a new catalog file (the caller renames it into place).
pub struct CatalogWriter {
    conn: Connection,
    path: PathBuf,
    sizes: Vec<u8>,
    long: Vec<u8>,
}

impl CatalogWriter {
    /// Opens the file at `path`, which [`write_template`] filled, to write rows into.
    pub fn create(path: &Path) -> Result<CatalogWriter> {
        let wrap = |e: rusqlite::Error| Error::io(path, std::io::Error::other(e.to_string()));
        // (No SQLITE_OPEN_NOFOLLOW: it lstats every component of the path, and the
        // recorder checks after writing that SQLite wrote the very file it created.)
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(wrap)?;
        // The file is private until renamed into place and fsync'd by the caller, so a
        // journal buys nothing.
        // Exclusive locking: the lock is taken once, not around every statement.
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = OFF; \
             PRAGMA synchronous = OFF; BEGIN;",
        )
        .map_err(wrap)?;
        Ok(CatalogWriter {
            conn,
            path: path.to_path_buf(),
            sizes: Vec::new(),
            long: Vec::new(),
        })
    }

    fn wrap(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |e| Error::io(&self.path, std::io::Error::other(e.to_string()))
    }

    /// Appends entries; they must come in tape order with their final offsets.
    pub fn insert<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "INSERT INTO entries ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
                 ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
            ))
            .map_err(self.wrap())?;
        for e in entries {
            self.sizes.extend_from_slice(&e.size.to_le_bytes());
            if e.pax_size != 0 {
                self.long.extend_from_slice(&e.ordinal.0.to_le_bytes());
                self.long.extend_from_slice(&e.pax_size.to_le_bytes());
            }
            stmt.execute(params![
                e.ordinal.0 as i64,
                e.arc_path,
                e.rel_path,
                e.kind.code(),
                e.size as i64,
                e.mode,
                e.disk_mode,
                e.uid as i64,
                e.gid as i64,
                e.uname,
                e.gname,
                e.mtime,
                e.mtime_sec,
                e.mtime_nsec,
                e.ctime_sec,
                e.ctime_nsec,
                e.link_target,
                e.start_offset as i64,
                e.digest,
                e.pax_size as i64,
                row_crc(e),
            ])
            .map_err(|e| Error::io(&self.path, std::io::Error::other(e.to_string())))?;
        }
        Ok(())
    }

    /// Writes the tape-wide facts, commits and closes the file.
    pub fn finish(self, meta: &TapeMeta) -> Result<()> {
        let mut pairs = meta.pairs();
        pairs.insert(
            "layout_crc",
            layout_crc(&self.sizes, &self.long).to_string(),
        );
        let crc = meta_crc(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        pairs.insert("meta_crc", crc.to_string());
        {
            let mut stmt = self
                .conn
                .prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")
                .map_err(self.wrap())?;
            for (k, v) in &pairs {
                stmt.execute(params![k, v]).map_err(self.wrap())?;
            }
            self.conn
                .execute(
                    "INSERT INTO layout (id, sizes, long) VALUES (0, ?1, ?2)",
                    [&self.sizes, &self.long],
                )
                .map_err(self.wrap())?;
        }
        self.conn.execute_batch("COMMIT;").map_err(self.wrap())?;
        let path = self.path.clone();
        self.conn
            .close()
            .map_err(|(_, e)| Error::io(&path, std::io::Error::other(e.to_string())))
    }
}

/// The connections of an opened catalog.
struct Pool {
    idle: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Connection>,
    /// Connections opened (idle or lent; and the one being opened).
    open: usize,
    /// The catalog's path no longer leads to the opened file: no new connection.
    closed: bool,
}

thread_local! {
    /// Whether this thread holds a connection already: a nested request must not wait
    /// for one to come back.
    static HOLDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// An opened, validated catalog. Entry rows are fetched on demand; only the offset table
/// is held in memory. Safe to share between threads: each caller borrows a connection
/// from a small pool.
pub struct Catalog {
    path: PathBuf,
    /// The opened file: it pins the inode, which every connection must read.
    file: File,
    meta: TapeMeta,
    offsets: OffsetTable,
    pool: Pool,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

/// Opens the catalog file for reading, refusing anything but a regular file before
/// opening it (a FIFO would block, a device could act on the open).
fn open_regular(path: &Path) -> Result<File> {
    let st = match std::fs::metadata(path) {
        Ok(st) => st,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::CatalogMissing(path.to_path_buf()));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let unreadable = |problem: String| Error::CatalogUnreadable {
        path: path.to_path_buf(),
        problem,
    };
    if !st.is_file() {
        return Err(unreadable(format!(
            "not a regular file (it is {})",
            crate::source::describe_mode(st.mode())
        )));
    }
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let opened = file.metadata().map_err(|e| Error::io(path, e))?;
    // The same device and inode as the regular file just examined: it is that file.
    if (opened.dev(), opened.ino()) != (st.dev(), st.ino()) {
        return Err(unreadable("replaced while being opened".into()));
    }
    Ok(file)
}

/// The `file:` URI SQLite opens `path` with: read-only and immutable (a catalog is never
/// written in place; without locks and journal checks a read costs no extra syscalls).
fn sqlite_uri(path: &Path) -> String {
    use std::fmt::Write as _;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    uri
}

fn connect(path: &Path) -> Result<Connection> {
    Connection::open_with_flags(
        sqlite_uri(path),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(sql_err(path))
}

impl Catalog {
    /// Opens the catalog at `path` and validates what every read depends on: the
    /// version, the metadata, and the offset table (rebuilt from the stored sizes, so the
    /// offsets are prefix sums of footprints by construction, and checked against the
    /// entry count, data size and total size). Reading the table is O(entries) in memory
    /// but does not touch the rows, so resuming a million-entry tape stays cheap.
    ///
    /// Rows are checked when fetched ([`Catalog::entry`]), before anything is served from
    /// them; a full pass ([`Catalog::for_each_from`] from the first entry, as `verify`,
    /// `ls` and the mount's start-up do) also checks that they are contiguous and in tape
    /// order.
    pub fn open(path: &Path) -> Result<Catalog> {
        let file = open_regular(path)?;
        let conn = connect(path)?;
        let (meta, layout_crc) = read_meta(&conn, path)?;
        let offsets = read_layout(&conn, path, &meta, layout_crc)?;
        let catalog = Catalog {
            path: path.to_path_buf(),
            file,
            meta,
            offsets,
            pool: Pool {
                idle: Mutex::new(PoolState {
                    idle: vec![conn],
                    open: 1,
                    closed: false,
                }),
                returned: Condvar::new(),
            },
        };
        // The connection opened the path, which may have led elsewhere by then.
        if !catalog.path_leads_to_file() {
            return Err(Error::CatalogUnreadable {
                path: path.to_path_buf(),
                problem: "replaced while being opened".into(),
            });
        }
        Ok(catalog)
    }

    /// The path the catalog was opened from, as given (which may since lead elsewhere;
    /// [`file`](Self::file) is what is read).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The catalog file as opened (the inode every connection reads).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The tape-wide facts, checked against their CRC when the catalog was opened.
    pub fn meta(&self) -> &TapeMeta {
        &self.meta
    }

    /// Every entry's start offset, held in memory: what resolves a tape offset to an
    /// entry without touching SQLite.
    pub fn offsets(&self) -> &OffsetTable {
        &self.offsets
    }

    /// Whether the catalog's path still leads to the file this catalog opened.
    fn path_leads_to_file(&self) -> bool {
        match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }

    /// A new connection to the opened file, or `None` once its path leads elsewhere (the
    /// catalog was recorded again or replaced): then only the existing ones serve.
    fn connect_more(&self) -> Option<Connection> {
        let conn = connect(&self.path).ok()?;
        let id: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'catalog_id'", [], |r| {
                r.get(0)
            })
            .ok();
        // Checked after connecting: the path may have been swapped while it connected.
        (id.as_deref() == Some(self.meta.catalog_id.as_str()) && self.path_leads_to_file())
            .then_some(conn)
    }

    fn lock_pool(&self) -> MutexGuard<'_, PoolState> {
        self.pool.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let nested = HOLDING.with(|h| h.replace(true));
        let conn = self.take_conn(nested);
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                HOLDING.with(|h| h.set(nested));
                return Err(e);
            }
        };
        let out = f(&conn);
        HOLDING.with(|h| h.set(nested));
        self.lock_pool().idle.push(conn);
        self.pool.returned.notify_one();
        out
    }

    fn take_conn(&self, nested: bool) -> Result<Connection> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(c) = pool.idle.pop() {
                return Ok(c);
            }
            if !pool.closed && pool.open < MAX_CONNECTIONS {
                pool.open += 1;
                drop(pool);
                let more = self.connect_more();
                pool = self.lock_pool();
                match more {
                    Some(c) => return Ok(c),
                    // From now on the connections there are serve; `open` no longer
                    // matters.
                    None => pool.closed = true,
                }
                continue;
            }
            if nested {
                return Err(Error::CatalogUnreadable {
                    path: self.path.clone(),
                    problem: "replaced while in use, and no connection to the opened file \
                              is free"
                        .into(),
                });
            }
            pool = self
                .pool
                .returned
                .wait(pool)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Fetches one entry row, checked.
    pub fn entry(&self, ordinal: Ordinal) -> Result<Entry> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM entries WHERE ordinal = ?1"
                ))
                .map_err(sql_err(&self.path))?;
            let entry = stmt
                .query_row([ordinal.0 as i64], row_to_entry)
                .optional()
                .map_err(sql_err(&self.path))?
                .ok_or_else(|| {
                    Error::corrupt(&self.path, format!("entry {} missing", ordinal.0))
                })?;
            self.check_row(&entry)?;
            if entry.0.ordinal != ordinal {
                return Err(Error::corrupt(
                    &self.path,
                    format!(
                        "entry {} is stored as entry {}",
                        ordinal.0, entry.0.ordinal.0
                    ),
                ));
            }
            Ok(entry.0)
        })
    }

    /// Checks one row read from the catalog: its CRC first, then every field.
    fn check_row(&self, (e, crc): &(Entry, u32)) -> Result<()> {
        if row_crc(e) != *crc {
            return Err(Error::corrupt(
                &self.path,
                format!("entry {}: checksum mismatch", e.ordinal.0),
            ));
        }
        self.check_fields(e)
            .map_err(|what| Error::corrupt(&self.path, format!("entry {}: {what}", e.ordinal.0)))
    }

    /// Checks a row's fields against the offset table, the tape-wide facts and the rules
    /// every recorded entry obeys.
    fn check_fields(&self, e: &Entry) -> std::result::Result<(), String> {
        let i = e.ordinal;
        if i.0 >= self.offsets.len() as u64 {
            return Err("beyond the entry count".into());
        }
        if e.kind != Kind::File && e.size != 0 {
            return Err(format!("impossible size {} for a {}", e.size, e.kind));
        }
        if e.pax_size != self.offsets.pax_size(i)
            || e.pax_size != pax_records(&e.arc_path, e.kind, &e.link_target).len() as u64
        {
            return Err(format!(
                "{} bytes of PAX records are not those of its path and target",
                e.pax_size
            ));
        }
        let (start, end) = (self.offsets.start(i), self.offsets.end(i));
        if e.start_offset != start || footprint_checked(e.pax_size, e.size) != Some(end - start) {
            return Err(format!(
                "start offset {} and size {} are not the prefix sum of footprints ({start}, {} bytes)",
                e.start_offset,
                e.size,
                end - start
            ));
        }
        check_rel_path(&e.rel_path)?;
        // Every header field must fit as recording guaranteed.
        const OCTAL7: u64 = 0o7777777;
        if e.uid > OCTAL7 || e.gid > OCTAL7 {
            return Err("uid or gid does not fit its header field".into());
        }
        if e.disk_mode > 0o7777 {
            return Err(format!(
                "mode {:o} is more than permission bits",
                e.disk_mode
            ));
        }
        if e.mode != normalised_mode(e.kind, e.disk_mode, self.meta.anonymize) {
            return Err(format!(
                "header mode {:04o} is not the mode of disk mode {:04o}",
                e.mode, e.disk_mode
            ));
        }
        if e.uname.len() > 31 || e.gname.len() > 31 {
            return Err("a user or group name does not fit its header field".into());
        }
        if (e.kind == Kind::Symlink) == e.link_target.is_empty() {
            return Err("a symlink without target, or a target on a non-symlink".into());
        }
        if self.meta.anonymize
            && (e.uid, e.gid, e.uname.as_slice(), e.gname.as_slice()) != (0, 0, b"root", b"root")
        {
            return Err("owner is not root:root on an anonymised tape".into());
        }
        for (what, nsec) in [("mtime", e.mtime_nsec), ("ctime", e.ctime_nsec)] {
            if !(0..1_000_000_000).contains(&nsec) {
                return Err(format!("{what} nanoseconds {nsec} out of range"));
            }
        }
        if e.mtime != python_mtime(e.mtime_sec, e.mtime_nsec) {
            return Err(format!(
                "mtime {} is not the whole seconds of {}.{:09}",
                e.mtime, e.mtime_sec, e.mtime_nsec
            ));
        }
        if e.kind != Kind::File && (e.ctime_sec, e.ctime_nsec) != (0, 0) {
            return Err(format!("a ctime on a {}", e.kind));
        }
        let digest_ok = match (&e.digest, self.meta.hash) {
            (None, None) => true,
            (None, Some(_)) => e.kind != Kind::File,
            (Some(d), Some(algo)) => {
                e.kind == Kind::File
                    && d.len() == algo.hex_len()
                    && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            }
            (Some(_), None) => false,
        };
        if !digest_ok {
            return Err("digest does not match the tape's hash option".into());
        }
        let root = &self.meta.arc_root;
        let arc_ok = if e.rel_path.is_empty() {
            e.arc_path == *root && e.kind == Kind::Dir && i.0 == 0
        } else {
            e.arc_path.len() == root.len() + 1 + e.rel_path.len()
                && e.arc_path.starts_with(root)
                && e.arc_path[root.len()] == b'/'
                && e.arc_path.ends_with(&e.rel_path)
        };
        if !arc_ok {
            return Err("arc path does not match its relative path".into());
        }
        Ok(())
    }

    /// Calls `f` for each entry from `first` on, in tape order, until it returns `false`.
    /// `f` must not call back into the catalog from the same thread.
    pub fn for_each_from(
        &self,
        first: Ordinal,
        mut f: impl FnMut(Entry) -> Result<bool>,
    ) -> Result<()> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM entries WHERE ordinal >= ?1 ORDER BY ordinal"
                ))
                .map_err(sql_err(&self.path))?;
            let mut rows = stmt.query([first.0 as i64]).map_err(sql_err(&self.path))?;
            let mut expected = first.0;
            let mut prev_arc: Vec<u8> = Vec::new();
            while let Some(row) = rows.next().map_err(sql_err(&self.path))? {
                let row = row_to_entry(row).map_err(sql_err(&self.path))?;
                self.check_row(&row)?;
                let entry = row.0;
                if entry.ordinal.0 != expected {
                    return Err(Error::corrupt(
                        &self.path,
                        format!("entry {expected} missing"),
                    ));
                }
                // (The first row compares with the empty path: any arc path is greater.)
                if entry.arc_path <= prev_arc {
                    return Err(Error::corrupt(
                        &self.path,
                        format!("entry {expected}: entries are not in tape order"),
                    ));
                }
                expected += 1;
                prev_arc.clone_from(&entry.arc_path);
                if !f(entry)? {
                    return Ok(());
                }
            }
            if expected != self.offsets.len() as u64 {
                return Err(Error::corrupt(
                    &self.path,
                    format!("entry {expected} missing"),
                ));
            }
            Ok(())
        })
    }

    /// The first ordinal whose arc path is not less than `key` (the entry count when every
    /// arc path is less): a binary search in tape order. Entries under a directory `d` are
    /// the ordinals from `lower_bound("d/")` to `lower_bound("d0")` (`0` follows `/`).
    pub fn lower_bound(&self, key: &[u8]) -> Result<Ordinal> {
        let (mut lo, mut hi) = (0u64, self.offsets.len() as u64);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(Ordinal(mid))?.arc_path.as_slice() < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(Ordinal(lo))
    }

    /// Finds an entry by arc path. Tape order is memcmp order of arc paths, so this is a
    /// binary search over ordinals; no index is needed.
    pub fn find(&self, arc_path: &[u8]) -> Result<Option<Entry>> {
        let (mut lo, mut hi) = (0u64, self.offsets.len() as u64);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.entry(Ordinal(mid))?;
            match e.arc_path.as_slice().cmp(arc_path) {
                std::cmp::Ordering::Equal => return Ok(Some(e)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }
}

/// A column holding a non-negative integer.
fn get_u64(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))
}

/// A row as stored, with its CRC.
fn row_to_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Entry, u32)> {
    let kind_code: i64 = row.get(3)?;
    let kind = Kind::from_code(kind_code).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Integer,
            format!("unknown entry kind {kind_code}").into(),
        )
    })?;
    let entry = Entry {
        ordinal: Ordinal(get_u64(row, 0)?),
        arc_path: row.get(1)?,
        rel_path: row.get(2)?,
        kind,
        size: get_u64(row, 4)?,
        mode: row.get(5)?,
        disk_mode: row.get(6)?,
        uid: get_u64(row, 7)?,
        gid: get_u64(row, 8)?,
        uname: row.get(9)?,
        gname: row.get(10)?,
        mtime: row.get(11)?,
        mtime_sec: row.get(12)?,
        mtime_nsec: row.get(13)?,
        ctime_sec: row.get(14)?,
        ctime_nsec: row.get(15)?,
        link_target: row.get(16)?,
        start_offset: get_u64(row, 17)?,
        digest: row.get(18)?,
        pax_size: get_u64(row, 19)?,
    };
    Ok((entry, row.get(20)?))
}

/// The tape-wide facts, and the CRC of the layout's sizes.
fn read_meta(conn: &Connection, path: &Path) -> Result<(TapeMeta, u64)> {
    let corrupt = |what: String| Error::corrupt(path, what);
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql_err(path))?;
    if app_id != APPLICATION_ID {
        return Err(corrupt("not a tartape catalog".into()));
    }
    let mut map = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT key, value FROM meta")
            .map_err(sql_err(path))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql_err(path))?;
        for row in rows {
            let (k, v) = row.map_err(sql_err(path))?;
            map.insert(k, v);
        }
    }
    // The version first: a catalog of another version has other keys.
    let version = map
        .get("format_version")
        .ok_or_else(|| corrupt("metadata `format_version` missing".into()))?;
    if version != &FORMAT_VERSION.to_string() {
        return Err(corrupt(format!(
            "unknown format version {version} (this tartape reads {FORMAT_VERSION}; record \
             the tape again)"
        )));
    }
    let stored_crc = map
        .remove("meta_crc")
        .ok_or_else(|| corrupt("metadata `meta_crc` missing".into()))?;
    if meta_crc(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))).to_string() != stored_crc {
        return Err(corrupt("metadata checksum mismatch".into()));
    }
    let get = |key: &str| -> Result<&String> {
        map.get(key)
            .ok_or_else(|| corrupt(format!("metadata `{key}` missing")))
    };
    let num = |key: &str| -> Result<u64> {
        get(key)?
            .parse::<u64>()
            .map_err(|_| corrupt(format!("metadata `{key}` is not a number")))
    };
    let flag = |key: &str| -> Result<bool> {
        match get(key)?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(corrupt(format!("metadata `{key}` is `{other}`"))),
        }
    };
    let is_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let fingerprint = get("fingerprint")?.clone();
    if !is_hex(&fingerprint, 64) {
        return Err(corrupt("malformed fingerprint".into()));
    }
    let catalog_id = get("catalog_id")?.clone();
    if !is_hex(&catalog_id, 32) {
        return Err(corrupt("malformed catalog id".into()));
    }
    let hash = match get("hash")?.as_str() {
        "none" => None,
        other => {
            Some(HashAlgo::parse(other).ok_or_else(|| corrupt(format!("unknown hash `{other}`")))?)
        }
    };
    let excludes = get("excludes")?;
    let created_at = get("created_at")?
        .parse::<i64>()
        .map_err(|_| corrupt("metadata `created_at` is not a number".into()))?;
    let source_root =
        unhex(get("source_root")?).ok_or_else(|| corrupt("malformed source_root".into()))?;
    let meta = TapeMeta {
        fingerprint,
        total_size: num("total_size")?,
        entry_count: num("entry_count")?,
        data_size: num("data_size")?,
        created_at,
        source_root: PathBuf::from(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(source_root),
        ),
        root_dev: num("root_dev")?,
        root_ino: num("root_ino")?,
        arc_root: unhex(get("arc_root")?).ok_or_else(|| corrupt("malformed arc_root".into()))?,
        anonymize: flag("anonymize")?,
        excludes: if excludes.is_empty() {
            Vec::new()
        } else {
            excludes.split('\n').map(str::to_owned).collect()
        },
        hash,
        skip_unreadable: flag("skip_unreadable")?,
        catalog_id,
    };
    let layout_crc = num("layout_crc")?;
    if meta.arc_root.is_empty()
        || meta.arc_root == b"."
        || meta.arc_root == b".."
        || meta.arc_root.contains(&b'/')
        || meta.arc_root.contains(&0)
    {
        return Err(corrupt("malformed arc_root".into()));
    }
    // Keys this version does not write would be ignored; refuse them instead.
    let known = meta.pairs();
    if let Some(extra) = map
        .keys()
        .find(|k| k.as_str() != "layout_crc" && !known.contains_key(k.as_str()))
    {
        return Err(corrupt(format!("unknown metadata `{extra}`")));
    }
    Ok((meta, layout_crc))
}

/// Rebuilds the offset table from the stored sizes and checks it against the metadata.
fn read_layout(
    conn: &Connection,
    path: &Path,
    meta: &TapeMeta,
    layout_crc: u64,
) -> Result<OffsetTable> {
    let (sizes, long): (Vec<u8>, Vec<u8>) = conn
        .query_row("SELECT sizes, long FROM layout WHERE id = 0", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(sql_err(path))?
        .ok_or_else(|| Error::corrupt(path, "layout missing"))?;
    if u64::from(self::layout_crc(&sizes, &long)) != layout_crc {
        return Err(Error::corrupt(path, "layout checksum mismatch"));
    }
    if sizes.len() as u64 != meta.entry_count.saturating_mul(8) {
        return Err(Error::corrupt(
            path,
            format!(
                "{} entries in the layout, metadata says {}",
                sizes.len() / 8,
                meta.entry_count
            ),
        ));
    }
    let sizes = || {
        sizes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
    };
    if !long.len().is_multiple_of(16) {
        return Err(Error::corrupt(path, "long entries of the layout cut short"));
    }
    let long = long
        .chunks_exact(16)
        .map(|c| {
            let (o, n) = c.split_at(8);
            let le = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8-byte half"));
            (le(o), le(n))
        })
        .collect();
    let table = OffsetTable::from_sizes(sizes(), long).ok_or_else(|| {
        Error::corrupt(
            path,
            "the layout is no tape (long entries out of order or range, or more than 2^64 bytes)",
        )
    })?;
    if table.total_size() != meta.total_size {
        return Err(Error::corrupt(
            path,
            format!(
                "total size {} is not the prefix sum of footprints ({})",
                meta.total_size,
                table.total_size()
            ),
        ));
    }
    // Only files have sizes, so the sizes add up to the data size (no overflow: their
    // footprints did not).
    let data_size: u64 = sizes().sum();
    if data_size != meta.data_size {
        return Err(Error::corrupt(
            path,
            format!(
                "data size {} is not the sum of the entries' sizes ({data_size})",
                meta.data_size
            ),
        ));
    }
    let rows = conn
        .query_row(
            "SELECT coalesce(max(ordinal) + 1, 0) FROM entries",
            [],
            |r| get_u64(r, 0),
        )
        .map_err(sql_err(path))?;
    if rows != meta.entry_count {
        return Err(Error::corrupt(
            path,
            format!("{rows} entries, metadata says {}", meta.entry_count),
        ));
    }
    Ok(table)
}

/// A stored relative path must stay inside the root: not absolute, no `.`/`..`
/// components, no empty components, no NUL.
fn check_rel_path(rel: &[u8]) -> std::result::Result<(), String> {
    if rel.is_empty() {
        return Ok(());
    }
    if rel.contains(&0) {
        return Err("relative path contains NUL".into());
    }
    if rel[0] == b'/' {
        return Err("relative path is absolute".into());
    }
    for comp in rel.split(|&b| b == b'/') {
        match comp {
            b"" => return Err("relative path has an empty component".into()),
            b"." | b".." => return Err("relative path escapes the root (`.` or `..`)".into()),
            _ => {}
        }
    }
    Ok(())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            let pair = s.get(i..i + 2)?;
            pair.bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                .then(|| u8::from_str_radix(pair, 16).ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::footprint;

    #[test]
    fn rel_path_checks() {
        assert!(check_rel_path(b"a/b").is_ok());
        assert!(check_rel_path(b"").is_ok());
        assert!(check_rel_path(b"a/.b/c..").is_ok());
        assert!(check_rel_path(b"/etc/passwd").is_err());
        assert!(check_rel_path(b"a/../../x").is_err());
        assert!(check_rel_path(b"..").is_err());
        assert!(check_rel_path(b"a//b").is_err());
        assert!(check_rel_path(b"a/").is_err());
        assert!(check_rel_path(b"./a").is_err());
        assert!(check_rel_path(b"a\0b").is_err());
    }

    /// What a catalog's schema is: its objects and the pragmas `Catalog::open` checks.
    fn describe(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut out: Vec<String> = conn
            .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
            .unwrap()
            .query_map([], |r| {
                Ok(format!(
                    "{}|{}|{}|{}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?.unwrap_or_default()
                ))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for pragma in [
            "application_id",
            "user_version",
            "page_size",
            "integrity_check",
        ] {
            let v: String = conn
                .query_row(&format!("PRAGMA {pragma}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                        .map(|v| format!("{v:?}"))
                })
                .unwrap();
            out.push(format!("{pragma} = {v}"));
        }
        out
    }

    #[test]
    fn template_is_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        create_schema(&Connection::open(&fresh).unwrap()).unwrap();
        if std::env::var_os("TARTAPE_WRITE_TEMPLATE").is_some() {
            let dest = concat!(env!("CARGO_MANIFEST_DIR"), "/src/catalog_template.db");
            std::fs::copy(&fresh, dest).unwrap();
        }
        let from_template = dir.path().join("template.db");
        write_template(&mut File::create(&from_template).unwrap()).unwrap();
        assert_eq!(
            describe(&from_template),
            describe(&fresh),
            "src/catalog_template.db is not SCHEMA: rewrite it with \
             TARTAPE_WRITE_TEMPLATE=1 cargo test --lib template_is_the_schema"
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(b"\x00\xffab"), "00ff6162");
        assert_eq!(unhex("00ff6162").unwrap(), b"\x00\xffab");
        assert!(unhex("abc").is_none());
        assert!(unhex("0G").is_none());
        // Only the lower-case form the writer produces.
        assert!(unhex("FF").is_none());
        assert!(unhex("+1").is_none());
    }

    /// A valid entry of a tape rooted at `r` (anonymised, no hash).
    fn entry(ordinal: u64, rel: &str, kind: Kind, size: u64) -> Entry {
        let arc = if rel.is_empty() {
            b"r".to_vec()
        } else {
            format!("r/{rel}").into_bytes()
        };
        Entry {
            ordinal: Ordinal(ordinal),
            arc_path: arc,
            rel_path: rel.as_bytes().to_vec(),
            kind,
            size,
            mode: normalised_mode(kind, 0o600, true),
            disk_mode: 0o600,
            uid: 0,
            gid: 0,
            uname: b"root".to_vec(),
            gname: b"root".to_vec(),
            mtime: 1_700_000_000,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 250_000_000,
            ctime_sec: if kind == Kind::File { 1_700_000_001 } else { 0 },
            ctime_nsec: if kind == Kind::File { 1 } else { 0 },
            link_target: if kind == Kind::Symlink {
                b"t".to_vec()
            } else {
                Vec::new()
            },
            pax_size: 0,
            start_offset: 0,
            digest: None,
        }
    }

    /// A footprint, also of sizes whose footprint does not fit.
    fn footprint_or_max(e: &Entry) -> u64 {
        footprint_checked(e.pax_size, e.size).unwrap_or(u64::MAX)
    }

    /// The usual rows: the root, a file, a symlink, a directory.
    fn rows() -> Vec<Entry> {
        vec![
            entry(0, "", Kind::Dir, 0),
            entry(1, "a", Kind::File, 700),
            entry(2, "b", Kind::Symlink, 0),
            entry(3, "c", Kind::Dir, 0),
        ]
    }

    fn meta_for(rows: &[Entry]) -> TapeMeta {
        let data = rows.iter().fold(0u64, |a, e| a.wrapping_add(e.size));
        let end = rows
            .iter()
            .fold(0u64, |a, e| a.wrapping_add(footprint_or_max(e)));
        TapeMeta {
            fingerprint: "ab".repeat(32),
            total_size: end + 1024,
            entry_count: rows.len() as u64,
            data_size: data,
            created_at: 1_700_000_100,
            source_root: PathBuf::from("/src/r"),
            root_dev: 1,
            root_ino: 2,
            arc_root: b"r".to_vec(),
            anonymize: true,
            excludes: vec!["*.tmp".into(), "x y".into()],
            hash: None,
            skip_unreadable: false,
            catalog_id: new_catalog_id().unwrap(),
        }
    }

    /// Writes `rows` (offsets assigned in order) and `meta` as a catalog.
    fn write(dir: &Path, name: &str, mut rows: Vec<Entry>, meta: &TapeMeta) -> PathBuf {
        let path = dir.join(name);
        write_template(&mut File::create(&path).unwrap()).unwrap();
        let mut offset = 0u64;
        for e in rows.iter_mut() {
            e.start_offset = offset;
            offset = offset.wrapping_add(footprint_or_max(e));
        }
        let mut w = CatalogWriter::create(&path).unwrap();
        w.insert(rows.iter()).unwrap();
        w.finish(meta).unwrap();
        path
    }

    fn fixture() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let rows = rows();
        let path = write(dir.path(), "c.db", rows.clone(), &meta_for(&rows));
        let catalog = Catalog::open(&path).unwrap();
        (dir, catalog)
    }

    fn problem(dir: &Path, rows: Vec<Entry>, meta: &TapeMeta) -> String {
        let path = write(dir, "p.db", rows, meta);
        let out = Catalog::open(&path).and_then(|c| c.for_each_from(Ordinal(0), |_| Ok(true)));
        let _ = std::fs::remove_file(&path);
        match out {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_written_catalog_reads_back_as_written() {
        let (_dir, c) = fixture();
        let mut expected = rows();
        let mut offset = 0;
        for e in expected.iter_mut() {
            e.start_offset = offset;
            offset += footprint(e.pax_size, e.size);
        }
        let mut got = Vec::new();
        c.for_each_from(Ordinal(0), |e| {
            got.push(e);
            Ok(true)
        })
        .unwrap();
        assert_eq!(got, expected);
        assert_eq!(c.entry(Ordinal(2)).unwrap(), expected[2]);
        assert_eq!(c.find(b"r/c").unwrap().unwrap(), expected[3]);
        assert_eq!(c.find(b"r/bb").unwrap(), None);
        assert_eq!(c.meta().excludes, ["*.tmp", "x y"]);
        assert_eq!(c.meta().source_root, Path::new("/src/r"));
        // From the middle, and stopping early.
        let mut seen = Vec::new();
        c.for_each_from(Ordinal(1), |e| {
            seen.push(e.ordinal.0);
            Ok(e.ordinal.0 < 2)
        })
        .unwrap();
        assert_eq!(seen, [1, 2]);
        assert!(c.entry(Ordinal(4)).is_err());
    }

    #[test]
    fn every_field_rule_has_its_edge() {
        let (_dir, c) = fixture();
        let base = |i: usize| {
            let mut e = rows()[i].clone();
            e.start_offset = c.offsets().start(Ordinal(i as u64));
            e
        };
        for i in 0..4 {
            assert_eq!(c.check_fields(&base(i)), Ok(()), "row {i}");
        }
        let refused = |e: Entry| c.check_fields(&e).is_err();
        let file = || base(1);
        let with = |f: &dyn Fn(&mut Entry)| {
            let mut e = file();
            f(&mut e);
            e
        };
        // Ordinals and offsets.
        assert!(refused(with(&|e| e.ordinal = Ordinal(4))));
        assert!(refused(with(&|e| e.start_offset += 512)));
        assert!(refused(with(&|e| e.size = 1100)));
        assert!(refused(with(&|e| e.size = 1)));
        // Sizes of 513..=1024 have the same footprint as 700: all agree with the layout.
        assert_eq!(c.check_fields(&with(&|e| e.size = 1024)), Ok(()));
        assert!(refused(with(&|e| e.size = 1025)));
        assert!(refused(with(&|e| e.size = u64::MAX)));
        let mut dir = base(3);
        dir.size = 1;
        assert!(refused(dir));
        // Paths.
        assert!(refused(with(&|e| e.rel_path = b"../a".to_vec())));
        assert!(refused(with(&|e| e.arc_path = b"r/b".to_vec())));
        assert!(refused(with(&|e| e.arc_path = b"rr/a".to_vec())));
        assert!(refused(with(&|e| e.arc_path = b"s/a".to_vec())));
        assert!(refused(with(&|e| e.arc_path = b"r-a".to_vec())));
        assert!(refused(with(&|e| e.arc_path = b"r/ab".to_vec())));
        let mut root = base(0);
        root.arc_path = b"s".to_vec();
        assert!(refused(root.clone()));
        root.arc_path = b"r".to_vec();
        root.kind = Kind::File;
        root.mode = 0o644;
        root.ctime_sec = 1;
        assert!(refused(root));
        let mut not_root = base(3);
        not_root.rel_path.clear();
        not_root.arc_path = b"r".to_vec();
        assert!(refused(not_root));
        // Owners and names (anonymised tape).
        assert!(refused(with(&|e| e.uid = 1)));
        assert!(refused(with(&|e| e.gid = 1)));
        assert!(refused(with(&|e| e.uname = b"evil".to_vec())));
        assert!(refused(with(&|e| e.gname = b"evil".to_vec())));
        // Modes: header and disk mode must agree.
        assert!(refused(with(&|e| e.mode = 0o755)));
        assert!(refused(with(&|e| e.disk_mode = 0o700)));
        assert_eq!(
            c.check_fields(&with(&|e| e.disk_mode = 0o7666)),
            Ok(()),
            "set-id and sticky bits without execute still make 0644"
        );
        assert!(refused(with(&|e| e.disk_mode = 0o10600)));
        assert_eq!(
            c.check_fields(&with(&|e| {
                e.disk_mode = 0o7777;
                e.mode = 0o755;
            })),
            Ok(())
        );
        assert!(refused(with(&|e| {
            e.disk_mode = 0o10000;
            e.mode = 0o644;
        })));
        // Times.
        assert_eq!(c.check_fields(&with(&|e| e.mtime_nsec = 0)), Ok(()));
        assert!(refused(with(&|e| e.mtime_nsec = -1)));
        assert!(refused(with(&|e| e.mtime_nsec = 1_000_000_000)));
        assert_eq!(
            c.check_fields(&with(&|e| e.ctime_nsec = 999_999_999)),
            Ok(())
        );
        assert_eq!(c.check_fields(&with(&|e| e.ctime_nsec = 0)), Ok(()));
        assert!(refused(with(&|e| e.ctime_nsec = -1)));
        assert!(refused(with(&|e| e.ctime_nsec = 1_000_000_000)));
        assert!(refused(with(&|e| e.mtime += 1)));
        assert!(refused(with(&|e| e.mtime_sec += 1)));
        // (whole seconds of 999_999_999 ns round up, as Python's do)
        assert!(refused(with(&|e| e.mtime_nsec = 999_999_999)));
        assert_eq!(
            c.check_fields(&with(&|e| {
                e.mtime_nsec = 999_999_999;
                e.mtime += 1;
            })),
            Ok(())
        );
        let mut dir = base(3);
        dir.ctime_nsec = 1;
        assert!(refused(dir.clone()));
        dir.ctime_nsec = 0;
        dir.ctime_sec = 1;
        assert!(refused(dir));
        // Symlink targets (one over 100 bytes needs PAX records: see the next test).
        let mut link = base(2);
        link.link_target = vec![b'x'; 100];
        assert_eq!(c.check_fields(&link), Ok(()));
        link.link_target.push(b'x');
        assert!(refused(link.clone()));
        link.link_target.clear();
        assert!(refused(link));
        assert!(refused(with(&|e| e.link_target = b"t".to_vec())));
        // Digests on a tape without --hash.
        assert!(refused(with(&|e| e.digest = Some("00".repeat(16)))));
    }

    /// A long entry's `pax_size` is the length of the records its path and target make,
    /// in its row and in the layout alike; anything else is refused.
    #[test]
    fn long_entries_are_checked_against_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let long_rows = || {
            let mut rows = rows();
            rows[2].link_target = vec![b't'; 150];
            rows[2].pax_size =
                pax_records(b"r/b", Kind::Symlink, &rows[2].link_target).len() as u64;
            rows[3].arc_path = format!("r/{}", "c".repeat(200)).into_bytes();
            rows[3].rel_path = "c".repeat(200).into_bytes();
            rows[3].pax_size = pax_records(&rows[3].arc_path, Kind::Dir, b"").len() as u64;
            assert!(rows[2].pax_size > 0 && rows[3].pax_size > 0);
            rows
        };
        let rows = long_rows();
        assert_eq!(problem(dir.path(), rows.clone(), &meta_for(&rows)), "");
        let path = write(dir.path(), "long.db", rows.clone(), &meta_for(&rows));
        let c = Catalog::open(&path).unwrap();
        assert_eq!(
            c.offsets().long_entries(),
            &[(2, rows[2].pax_size), (3, rows[3].pax_size)]
        );
        assert_eq!(c.entry(Ordinal(3)).unwrap().pax_size, rows[3].pax_size);
        let base = |i: usize| c.entry(Ordinal(i as u64)).unwrap();
        for i in 0..4 {
            assert_eq!(c.check_fields(&base(i)), Ok(()), "row {i}");
        }
        let refused = |e: Entry| c.check_fields(&e).is_err();
        let mut e = base(2);
        e.pax_size += 1;
        assert!(refused(e));
        let mut e = base(2);
        e.link_target[149] = b'u';
        assert_eq!(
            c.check_fields(&e),
            Ok(()),
            "the same length, the same records"
        );
        e.link_target.push(b'u');
        assert!(refused(e), "a longer target makes longer records");
        let mut e = base(1);
        e.pax_size = 20;
        assert!(refused(e), "a short entry has no records");
        // Written whole with records that do not match: refused when the row is read.
        let mut wrong = long_rows();
        wrong[2].pax_size += 5;
        let err = problem(dir.path(), wrong.clone(), &meta_for(&wrong));
        assert!(err.contains("PAX records"), "{err}");
        let mut missing = long_rows();
        missing[3].pax_size = 0;
        let err = problem(dir.path(), missing.clone(), &meta_for(&missing));
        assert!(err.contains("PAX records"), "{err}");
    }

    #[test]
    fn header_fields_must_fit_on_a_tape_with_owners() {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = rows();
        for e in rows.iter_mut() {
            e.mode = e.disk_mode;
            e.uid = 0o7777777;
            e.gid = 0o7777777;
            e.uname = vec![b'u'; 31];
            e.gname = vec![b'g'; 31];
        }
        let mut meta = meta_for(&rows);
        meta.anonymize = false;
        let path = write(dir.path(), "c.db", rows.clone(), &meta);
        let c = Catalog::open(&path).unwrap();
        let base = c.entry(Ordinal(1)).unwrap();
        let refused = |f: &dyn Fn(&mut Entry)| {
            let mut e = base.clone();
            f(&mut e);
            c.check_fields(&e).is_err()
        };
        assert_eq!(c.check_fields(&base), Ok(()));
        assert!(refused(&|e| e.uid += 1));
        assert!(refused(&|e| e.gid += 1));
        assert!(refused(&|e| e.uname.push(b'u')));
        assert!(refused(&|e| e.gname.push(b'g')));
        // Without anonymisation the header mode is the disk mode.
        assert!(refused(&|e| e.mode = 0o644));
        assert!(!refused(&|e| {
            e.mode = 0o4755;
            e.disk_mode = 0o4755;
        }));
    }

    #[test]
    fn digests_follow_the_hash_option() {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = rows();
        rows[1].digest = Some("0f".repeat(16));
        let mut meta = meta_for(&rows);
        meta.hash = Some(HashAlgo::Md5);
        let path = write(dir.path(), "c.db", rows, &meta);
        let c = Catalog::open(&path).unwrap();
        let file = c.entry(Ordinal(1)).unwrap();
        let dir_row = c.entry(Ordinal(3)).unwrap();
        assert_eq!(c.check_fields(&file), Ok(()));
        assert_eq!(c.check_fields(&dir_row), Ok(()));
        let refused = |e: &Entry, digest: Option<String>| {
            let mut e = e.clone();
            e.digest = digest;
            c.check_fields(&e).is_err()
        };
        assert!(refused(&file, None));
        assert!(refused(&file, Some("0f".repeat(32))));
        assert!(refused(&file, Some("0F".repeat(16))));
        assert!(refused(&file, Some("0g".repeat(16))));
        assert!(refused(&dir_row, Some("0f".repeat(16))));
        assert!(!refused(&file, Some("9a".repeat(16))));
    }

    #[test]
    fn rows_out_of_order_missing_or_moved_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(problem(d, rows(), &meta_for(&rows())), "");
        // Swapped paths: each row is valid on its own.
        let mut swapped = rows();
        swapped[1].rel_path = b"c".to_vec();
        swapped[1].arc_path = b"r/c".to_vec();
        swapped[3].rel_path = b"a".to_vec();
        swapped[3].arc_path = b"r/a".to_vec();
        assert!(problem(d, swapped, &meta_for(&rows())).contains("tape order"));
        // The same path twice.
        let mut twice = rows();
        twice[3].rel_path = b"b".to_vec();
        twice[3].arc_path = b"r/b".to_vec();
        assert!(problem(d, twice, &meta_for(&rows())).contains("tape order"));
        // A gap.
        let mut gap = rows();
        gap[2].ordinal = Ordinal(9);
        let out = problem(d, gap, &meta_for(&rows()));
        assert!(
            out.contains("entry 2 missing") || out.contains("entries"),
            "{out}"
        );
        // One row fewer than the layout says: written with four sizes, three rows.
        let path = write(d, "short.db", rows(), &meta_for(&rows()));
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM entries WHERE ordinal = 3", [])
            .unwrap();
        drop(conn);
        let err = Catalog::open(&path).unwrap_err().to_string();
        assert!(err.contains("3 entries, metadata says 4"), "{err}");
    }

    #[test]
    fn a_pass_that_stops_early_ends_early_and_a_full_one_checks_the_end() {
        let (dir, c) = fixture();
        let mut n = 0;
        c.for_each_from(Ordinal(0), |_| {
            n += 1;
            Ok(false)
        })
        .unwrap();
        assert_eq!(n, 1);
        // A last row gone from the middle of a pass: the pass notices.
        let path = c.path().to_path_buf();
        drop(c);
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM entries WHERE ordinal = 3", [])
            .unwrap();
        conn.execute(
            "INSERT INTO entries SELECT 3 + 0 * ordinal, arc_path, rel_path, kind, size, \
             mode, disk_mode, uid, gid, uname, gname, mtime, mtime_sec, mtime_nsec, ctime_sec, \
             ctime_nsec, link_target, start_offset, digest, pax_size, crc FROM entries WHERE ordinal = 2",
            [],
        )
        .unwrap();
        drop(conn);
        let c = Catalog::open(&path).unwrap();
        let err = c
            .for_each_from(Ordinal(0), |_| Ok(true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        drop(dir);
    }

    /// Sets a metadata value and the CRC over all of them, as a careful forger would.
    fn set_meta(path: &Path, key: &str, value: &str) {
        let conn = Connection::open(path).unwrap();
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )
        .unwrap();
        drop(conn);
        seal_meta(path);
    }

    /// Recomputes the metadata CRC over what is there.
    fn seal_meta(path: &Path) {
        let conn = Connection::open(path).unwrap();
        let pairs: Vec<(String, String)> = conn
            .prepare("SELECT key, value FROM meta WHERE key != 'meta_crc' ORDER BY key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let crc = meta_crc(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'meta_crc'",
            [crc.to_string()],
        )
        .unwrap();
    }

    #[test]
    fn metadata_is_checked_whole_and_each_value() {
        let dir = tempfile::tempdir().unwrap();
        let rows = rows();
        let meta = meta_for(&rows);
        let fresh = || {
            let p = write(dir.path(), "m.db", rows.clone(), &meta);
            (p.clone(), move || {
                Catalog::open(&p).map(|_| ()).map_err(|e| e.to_string())
            })
        };
        // Any change without the CRC.
        let (p, open) = fresh();
        Connection::open(&p)
            .unwrap()
            .execute("UPDATE meta SET value = '1' WHERE key = 'created_at'", [])
            .unwrap();
        assert!(open().unwrap_err().contains("metadata checksum mismatch"));
        std::fs::remove_file(&p).unwrap();
        let (p, open) = fresh();
        Connection::open(&p)
            .unwrap()
            .execute("DELETE FROM meta WHERE key = 'meta_crc'", [])
            .unwrap();
        assert!(open().unwrap_err().contains("`meta_crc` missing"));
        std::fs::remove_file(&p).unwrap();
        // Values that no writer writes, even with a matching CRC.
        for (key, value, why) in [
            ("format_version", "1", "unknown format version 1"),
            ("fingerprint", &"AB".repeat(32), "malformed fingerprint"),
            ("fingerprint", &"ab".repeat(31), "malformed fingerprint"),
            ("catalog_id", "00", "malformed catalog id"),
            ("catalog_id", &"0G".repeat(16), "malformed catalog id"),
            ("hash", "crc", "unknown hash"),
            ("anonymize", "yes", "`anonymize` is `yes`"),
            ("skip_unreadable", "1", "`skip_unreadable` is `1`"),
            ("total_size", "-1", "`total_size` is not a number"),
            ("entry_count", "x", "`entry_count` is not a number"),
            ("root_dev", "", "`root_dev` is not a number"),
            ("created_at", "1.5", "`created_at` is not a number"),
            ("arc_root", "2f", "malformed arc_root"),
            ("arc_root", "", "malformed arc_root"),
            ("arc_root", "7200", "malformed arc_root"),
            ("arc_root", "2e2e", "malformed arc_root"),
            ("arc_root", "7", "malformed arc_root"),
            ("source_root", "z", "malformed source_root"),
            ("surprise", "1", "unknown metadata `surprise`"),
            ("data_size", "699", "data size 699 is not the sum"),
            ("total_size", "4608", "not the prefix sum of footprints"),
            (
                "entry_count",
                "5",
                "4 entries in the layout, metadata says 5",
            ),
            ("layout_crc", "1", "layout checksum mismatch"),
        ] {
            let (p, open) = fresh();
            set_meta(&p, key, value);
            let err = open().expect_err(key);
            assert!(err.contains(why), "{key}={value}: {err}");
            std::fs::remove_file(&p).unwrap();
        }
        // A key's absence.
        for key in [
            "fingerprint",
            "hash",
            "excludes",
            "layout_crc",
            "format_version",
        ] {
            let (p, open) = fresh();
            Connection::open(&p)
                .unwrap()
                .execute("DELETE FROM meta WHERE key = ?1", [key])
                .unwrap();
            seal_meta(&p);
            let err = open().expect_err(key);
            assert!(err.contains(&format!("`{key}` missing")), "{key}: {err}");
            std::fs::remove_file(&p).unwrap();
        }
        // Empty excludes read back as none; the other values as written.
        let (p, _) = fresh();
        set_meta(&p, "excludes", "");
        assert!(Catalog::open(&p).unwrap().meta().excludes.is_empty());
        std::fs::remove_file(&p).unwrap();
        let (p, _) = fresh();
        set_meta(&p, "anonymize", "false");
        set_meta(&p, "skip_unreadable", "true");
        set_meta(&p, "hash", "sha256");
        let c = Catalog::open(&p).unwrap();
        assert!(!c.meta().anonymize && c.meta().skip_unreadable);
        assert_eq!(c.meta().hash, Some(HashAlgo::Sha256));
        assert_eq!(
            c.meta(),
            &TapeMeta {
                anonymize: false,
                skip_unreadable: true,
                hash: Some(HashAlgo::Sha256),
                ..meta.clone()
            }
        );
        // And a catalog of another program.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(
            Catalog::open(&other)
                .unwrap_err()
                .to_string()
                .contains("not a tartape catalog")
        );
    }

    #[test]
    fn sizes_are_checked_against_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut huge = rows();
        huge[1].size = u64::MAX - 100;
        let mut meta = meta_for(&rows());
        meta.data_size = huge[1].size;
        let out = problem(dir.path(), huge, &meta);
        assert!(out.contains("more than 2^64"), "{out}");
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| Catalog::open(p).unwrap_err().to_string();
        assert!(err(dir.path()).contains("not a regular file (it is a directory)"));
        let fifo = dir.path().join("f.db");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        assert!(err(&fifo).contains("not a regular file (it is a FIFO)"));
        assert!(err(Path::new("/dev/null")).contains("it is a character device"));
        assert!(err(&dir.path().join("none.db")).contains("no catalog found"));
        let not_dir = Catalog::open(Path::new("/dev/null/x.db")).unwrap_err();
        assert!(matches!(not_dir, Error::Io { .. }), "{not_dir}");
        assert!(not_dir.to_string().contains("Not a directory"));
        let garbage = dir.path().join("g.db");
        std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
        assert!(err(&garbage).contains("corrupted catalog"));
        let empty = dir.path().join("e.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(err(&empty).contains("corrupted catalog"));
    }

    #[test]
    fn a_replaced_catalog_is_never_read_by_an_opened_one() {
        let (dir, c) = fixture();
        let path = c.path().to_path_buf();
        let before = c.entry(Ordinal(1)).unwrap();
        assert!(c.connect_more().is_some());
        // Recorded again: the same tape, another catalog file renamed over it.
        let mut other = rows();
        other[1].mtime_nsec = 0;
        let new = write(dir.path(), "new.db", other.clone(), &meta_for(&other));
        std::fs::rename(&new, &path).unwrap();
        assert!(c.connect_more().is_none());
        assert_eq!(c.entry(Ordinal(1)).unwrap(), before);
        // A nested use cannot wait for the one connection: it fails, never reads the new.
        let nested = c.for_each_from(Ordinal(0), |_| {
            c.entry(Ordinal(1))?;
            Ok(true)
        });
        assert!(
            nested
                .unwrap_err()
                .to_string()
                .contains("replaced while in use")
        );
        // Threads wait for the connection instead.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert_eq!(c.entry(Ordinal(1)).unwrap(), before);
                    }
                });
            }
        });
        // A copy of the very catalog renamed over it: the same id, another file.
        let (dir2, c2) = fixture();
        let copy = dir2.path().join("copy.db");
        std::fs::copy(c2.path(), &copy).unwrap();
        assert!(c2.connect_more().is_some());
        std::fs::rename(&copy, c2.path()).unwrap();
        assert!(c2.connect_more().is_none());
        assert!(format!("{c2:?}").contains("c.db"));
        drop((dir2, c2));
        // The same path swapped back in: a catalog id tells them apart.
        let mut same_rows = rows();
        same_rows[1].mtime_nsec = 250_000_000;
        let twin = write(
            dir.path(),
            "twin.db",
            same_rows.clone(),
            &meta_for(&same_rows),
        );
        std::fs::rename(&twin, &path).unwrap();
        let (_d2, c2) = fixture();
        assert!(c2.connect_more().is_some());
        drop(c);
    }

    #[test]
    fn the_pool_holds_at_most_sixteen_connections_and_lends_each_to_one_caller() {
        let (_dir, c) = fixture();
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let holding = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..MAX_CONNECTIONS + 4 {
                s.spawn(|| {
                    c.with_conn(|_| {
                        let now = holding.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        // Hold it until sixteen callers hold one each (or two seconds).
                        let start = std::time::Instant::now();
                        while holding.load(SeqCst) < MAX_CONNECTIONS
                            && start.elapsed() < std::time::Duration::from_secs(2)
                        {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        holding.fetch_sub(1, SeqCst);
                        Ok(())
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(most.into_inner(), MAX_CONNECTIONS);
        assert_eq!(c.lock_pool().idle.len(), MAX_CONNECTIONS);
    }

    #[test]
    fn sql_errors_say_what_happened() {
        let path = Path::new("/x.db");
        let corrupt = |e| match sql_err(path)(e) {
            Error::CatalogCorrupt { .. } => true,
            Error::Sqlite { .. } => false,
            other => panic!("{other:?}"),
        };
        let failure = |code| {
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("m".into()))
        };
        assert!(corrupt(failure(rusqlite::ffi::SQLITE_CORRUPT)));
        assert!(corrupt(failure(rusqlite::ffi::SQLITE_NOTADB)));
        assert!(corrupt(failure(rusqlite::ffi::SQLITE_ERROR)));
        assert!(corrupt(rusqlite::Error::IntegralValueOutOfRange(0, -1)));
        assert!(!corrupt(failure(rusqlite::ffi::SQLITE_CANTOPEN)));
        assert!(!corrupt(failure(rusqlite::ffi::SQLITE_IOERR)));
        assert!(!corrupt(failure(rusqlite::ffi::SQLITE_PERM)));
        assert!(!corrupt(rusqlite::Error::InvalidQuery));
    }

    #[test]
    fn uris_escape_what_sqlite_would_read() {
        assert_eq!(
            sqlite_uri(Path::new("/a b/c?d#e%f.db")),
            "file:/a%20b/c%3Fd%23e%25f.db?mode=ro&immutable=1"
        );
        assert_eq!(
            sqlite_uri(Path::new("rel/x_y-z~.db")),
            "file:rel/x_y-z~.db?mode=ro&immutable=1"
        );
    }

    #[test]
    fn crcs_cover_every_field() {
        let mut e = entry(1, "a", Kind::File, 700);
        e.digest = Some("ab".into());
        let base = row_crc(&e);
        type Change = Box<dyn Fn(&mut Entry)>;
        let changed: Vec<Change> = vec![
            Box::new(|e| e.ordinal = Ordinal(2)),
            Box::new(|e| e.arc_path.push(b'x')),
            Box::new(|e| e.rel_path.push(b'x')),
            Box::new(|e| e.kind = Kind::Dir),
            Box::new(|e| e.size += 1),
            Box::new(|e| e.mode ^= 1),
            Box::new(|e| e.disk_mode ^= 1),
            Box::new(|e| e.uid += 1),
            Box::new(|e| e.gid += 1),
            Box::new(|e| e.uname.push(b'x')),
            Box::new(|e| e.gname.push(b'x')),
            Box::new(|e| e.mtime += 1),
            Box::new(|e| e.mtime_sec += 1),
            Box::new(|e| e.mtime_nsec += 1),
            Box::new(|e| e.ctime_sec += 1),
            Box::new(|e| e.ctime_nsec += 1),
            Box::new(|e| e.link_target.push(b'x')),
            Box::new(|e| e.start_offset += 1),
            Box::new(|e| e.digest = None),
            Box::new(|e| e.digest = Some("ac".into())),
            // Bytes moved from one field to the next.
            Box::new(|e| {
                e.arc_path.push(b'a');
                e.rel_path.remove(0);
            }),
        ];
        for (i, change) in changed.iter().enumerate() {
            let mut c = e.clone();
            change(&mut c);
            assert_ne!(row_crc(&c), base, "change {i}");
        }
        assert_ne!(
            meta_crc([("a", "bc")]),
            meta_crc([("ab", "c")]),
            "keys and values are delimited"
        );
        assert_ne!(new_catalog_id().unwrap(), new_catalog_id().unwrap());
        assert_eq!(new_catalog_id().unwrap().len(), 32);
    }
}
