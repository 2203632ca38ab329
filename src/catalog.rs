//! The SQLite catalog: the only module that speaks SQL. The schema and its version live
//! here and nowhere else.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::entry::{Entry, Kind, Ordinal};
use crate::error::{Error, Result};
use crate::header::BLOCK;
use crate::header::{header_path, split_path};
use crate::layout::{OffsetTable, padding};

/// Version of the schema below. A catalog of any other version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// Marks the file as a tartape catalog (`PRAGMA application_id`, "TTAP").
const APPLICATION_ID: i32 = 0x5454_4150;

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
    link_target  BLOB NOT NULL,
    start_offset INTEGER NOT NULL,
    digest       TEXT
);
-- Every entry's size, u64 little-endian, in tape order: the offset table is rebuilt
-- from it on open without reading the rows.
CREATE TABLE layout (id INTEGER PRIMARY KEY CHECK (id = 0), sizes BLOB NOT NULL);
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
     uname, gname, mtime, mtime_sec, mtime_nsec, link_target, start_offset, digest";

/// Content digest algorithms `--hash` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    Md5,
    Sha256,
}

impl HashAlgo {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha256 => "sha256",
        }
    }

    pub fn parse(s: &str) -> Option<HashAlgo> {
        match s {
            "md5" => Some(HashAlgo::Md5),
            "sha256" => Some(HashAlgo::Sha256),
            _ => None,
        }
    }
}

/// Tape-wide facts stored with the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeMeta {
    pub fingerprint: String,
    pub total_size: u64,
    pub entry_count: u64,
    pub data_size: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Canonical source path at recording time.
    pub source_root: PathBuf,
    pub arc_root: Vec<u8>,
    pub anonymize: bool,
    pub excludes: Vec<String>,
    pub hash: Option<HashAlgo>,
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::corrupt(path, e.to_string())
}

/// Has SQLite start without lookaside buffers and without a bulk page-cache allocation.
/// At start-up SQLite writes into every slot of both: about 30 fresh memory pages of the
/// roughly 210 that `tartape record` of a few files touches in all, each a page fault,
/// for caches that the catalog's few statements do not need.
///
/// Process-wide, and only effective before SQLite's first use in the process (later,
/// SQLite refuses the settings and nothing changes). `sqlite3_config` is not thread-safe:
/// call this before starting threads that may use SQLite, as `main` does.
pub fn configure_sqlite() {
    use rusqlite::ffi::{SQLITE_CONFIG_LOOKASIDE, SQLITE_CONFIG_PAGECACHE, sqlite3_config};
    use std::ffi::{c_int, c_void};
    // SAFETY: these are the argument lists sqlite3_config takes for these options (slot
    // size and count; buffer, slot size and count). Before sqlite3_initialize it only
    // stores them; after it, it returns SQLITE_MISUSE and changes nothing. The caller
    // runs it before other threads use SQLite.
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

/// Writes a new catalog file (the caller renames it into place).
pub struct CatalogWriter {
    conn: Connection,
    path: PathBuf,
    sizes: Vec<u8>,
}

impl CatalogWriter {
    /// Starts a new catalog at `path` (which must not exist) from the empty template.
    pub fn create(path: &Path) -> Result<CatalogWriter> {
        let io_err = |e| Error::io(path, e);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644) // as SQLite creates databases
            .open(path)
            .and_then(|mut f| f.write_all(TEMPLATE))
            .map_err(io_err)?;
        let wrap = |e: rusqlite::Error| Error::io(path, std::io::Error::other(e.to_string()));
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(wrap)?;
        // The file is private until renamed into place and fsync'd by the caller, so a
        // journal buys nothing.
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; BEGIN;")
            .map_err(wrap)?;
        Ok(CatalogWriter {
            conn,
            path: path.to_path_buf(),
            sizes: Vec::new(),
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
                "INSERT INTO entries ({ENTRY_COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ))
            .map_err(self.wrap())?;
        for e in entries {
            self.sizes.extend_from_slice(&e.size.to_le_bytes());
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
                e.link_target,
                e.start_offset as i64,
                e.digest,
            ])
            .map_err(|e| Error::io(&self.path, std::io::Error::other(e.to_string())))?;
        }
        Ok(())
    }

    /// Writes the tape-wide facts, commits and closes the file.
    pub fn finish(self, meta: &TapeMeta) -> Result<()> {
        let pairs: Vec<(&str, String)> = vec![
            ("format_version", FORMAT_VERSION.to_string()),
            ("fingerprint", meta.fingerprint.clone()),
            ("total_size", meta.total_size.to_string()),
            ("entry_count", meta.entry_count.to_string()),
            ("data_size", meta.data_size.to_string()),
            ("created_at", meta.created_at.to_string()),
            (
                "source_root",
                meta.source_root.to_string_lossy().into_owned(),
            ),
            ("arc_root", hex(&meta.arc_root)),
            ("anonymize", meta.anonymize.to_string()),
            ("excludes", meta.excludes.join("\n")),
            ("hash", meta.hash.map_or("none", HashAlgo::name).to_string()),
        ];
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
                    "INSERT INTO layout (id, sizes) VALUES (0, ?1)",
                    [&self.sizes],
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

/// An opened, validated catalog. Entry rows are fetched on demand; only the offset table
/// is held in memory. Safe to share between threads: each caller borrows a connection
/// from a small pool.
pub struct Catalog {
    path: PathBuf,
    meta: TapeMeta,
    offsets: OffsetTable,
    pool: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

impl Catalog {
    /// Opens the catalog at `path` and validates what every read depends on: the
    /// version, the metadata, and the offset table (rebuilt from the stored sizes, so the
    /// offsets are prefix sums of footprints by construction, and checked against the
    /// entry count and total size). Reading the table is O(entries) in memory but does
    /// not touch the rows, so resuming a million-entry tape stays cheap.
    ///
    /// Rows are checked against that table when fetched ([`Catalog::entry`]), before
    /// anything is served from them; a full pass ([`Catalog::for_each_from`] from the
    /// first entry, as `verify`, `ls` and the mount's start-up do) also checks that the
    /// rows are contiguous and in tape order.
    pub fn open(path: &Path) -> Result<Catalog> {
        if !path.exists() {
            return Err(Error::CatalogMissing(path.to_path_buf()));
        }
        let conn = open_read_only(path)?;
        let meta = read_meta(&conn, path)?;
        let offsets = read_layout(&conn, path, &meta)?;
        Ok(Catalog {
            path: path.to_path_buf(),
            meta,
            offsets,
            pool: Mutex::new(vec![conn]),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self) -> &TapeMeta {
        &self.meta
    }

    pub fn offsets(&self) -> &OffsetTable {
        &self.offsets
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_read_only(&self.path)?,
        };
        let out = f(&conn);
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 16 {
            pool.push(conn);
        }
        out
    }

    /// Fetches one entry row.
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
            Ok(entry)
        })
    }

    /// Checks one row against the offset table and the rules every stored path obeys.
    fn check_row(&self, e: &Entry) -> Result<()> {
        let bad =
            |what: String| Error::corrupt(&self.path, format!("entry {}: {what}", e.ordinal.0));
        let i = e.ordinal;
        if i.0 >= self.offsets.len() as u64 {
            return Err(bad("beyond the entry count".into()));
        }
        if e.kind != Kind::File && e.size != 0 {
            return Err(bad(format!("impossible size {} for a {}", e.size, e.kind)));
        }
        let (start, end) = (self.offsets.start(i), self.offsets.end(i));
        if e.start_offset != start
            || e.size.checked_add(BLOCK + padding(e.size)) != Some(end - start)
        {
            return Err(bad(format!(
                "start offset {} and size {} are not the prefix sum of footprints ({start}, {} bytes)",
                e.start_offset,
                e.size,
                end - start
            )));
        }
        check_rel_path(&e.rel_path).map_err(|p| bad(p.to_string()))?;
        // Every header field must fit as recording guaranteed.
        const OCTAL7: u64 = 0o7777777;
        if u64::from(e.mode) > OCTAL7 || e.uid > OCTAL7 || e.gid > OCTAL7 {
            return Err(bad("mode, uid or gid does not fit its header field".into()));
        }
        if e.uname.len() > 31 || e.gname.len() > 31 || e.link_target.len() > 100 {
            return Err(bad("a name does not fit its header field".into()));
        }
        if e.kind != Kind::Symlink && !e.link_target.is_empty() {
            return Err(bad("link target on a non-symlink".into()));
        }
        if self.meta.anonymize
            && (e.uid, e.gid, e.uname.as_slice(), e.gname.as_slice()) != (0, 0, b"root", b"root")
        {
            return Err(bad("owner is not root:root on an anonymised tape".into()));
        }
        let root = &self.meta.arc_root;
        let arc_ok = if e.rel_path.is_empty() {
            e.arc_path == *root
        } else {
            e.arc_path.len() == root.len() + 1 + e.rel_path.len()
                && e.arc_path.starts_with(root)
                && e.arc_path[root.len()] == b'/'
                && e.arc_path.ends_with(&e.rel_path)
        };
        if !arc_ok {
            return Err(bad("arc path does not match its relative path".into()));
        }
        if split_path(&header_path(&e.arc_path, e.kind)).is_err() {
            return Err(bad("path does not fit a ustar header".into()));
        }
        Ok(())
    }

    /// Calls `f` for each entry from `first` on, in tape order, until it returns `false`.
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
                let entry = row_to_entry(row).map_err(sql_err(&self.path))?;
                if entry.ordinal.0 != expected {
                    return Err(Error::corrupt(
                        &self.path,
                        format!("entry {expected} missing"),
                    ));
                }
                self.check_row(&entry)?;
                if expected > first.0 && entry.arc_path <= prev_arc {
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

fn open_read_only(path: &Path) -> Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(path))
}

fn row_to_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let kind_code: i64 = row.get(3)?;
    let kind = Kind::from_code(kind_code).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Integer,
            format!("unknown entry kind {kind_code}").into(),
        )
    })?;
    Ok(Entry {
        ordinal: Ordinal(row.get::<_, i64>(0)? as u64),
        arc_path: row.get(1)?,
        rel_path: row.get(2)?,
        kind,
        size: row.get::<_, i64>(4)? as u64,
        mode: row.get(5)?,
        disk_mode: row.get(6)?,
        uid: row.get::<_, i64>(7)? as u64,
        gid: row.get::<_, i64>(8)? as u64,
        uname: row.get(9)?,
        gname: row.get(10)?,
        mtime: row.get(11)?,
        mtime_sec: row.get(12)?,
        mtime_nsec: row.get(13)?,
        link_target: row.get(14)?,
        start_offset: row.get::<_, i64>(15)? as u64,
        digest: row.get(16)?,
    })
}

fn read_meta(conn: &Connection, path: &Path) -> Result<TapeMeta> {
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql_err(path))?;
    if app_id != APPLICATION_ID {
        return Err(Error::corrupt(path, "not a tartape catalog"));
    }
    let mut map = std::collections::HashMap::new();
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
    let get = |key: &str| -> Result<&String> {
        map.get(key)
            .ok_or_else(|| Error::corrupt(path, format!("metadata `{key}` missing")))
    };
    let num = |key: &str| -> Result<i64> {
        get(key)?
            .parse::<i64>()
            .map_err(|_| Error::corrupt(path, format!("metadata `{key}` is not a number")))
    };
    let version = num("format_version")?;
    if version != FORMAT_VERSION as i64 {
        return Err(Error::corrupt(
            path,
            format!("unknown format version {version} (this tartape reads {FORMAT_VERSION})"),
        ));
    }
    let fingerprint = get("fingerprint")?.clone();
    if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::corrupt(path, "malformed fingerprint"));
    }
    let hash = match get("hash")?.as_str() {
        "none" => None,
        other => Some(
            HashAlgo::parse(other)
                .ok_or_else(|| Error::corrupt(path, format!("unknown hash `{other}`")))?,
        ),
    };
    let excludes = get("excludes")?;
    Ok(TapeMeta {
        fingerprint,
        total_size: num("total_size")? as u64,
        entry_count: num("entry_count")? as u64,
        data_size: num("data_size")? as u64,
        created_at: num("created_at")?,
        source_root: PathBuf::from(get("source_root")?),
        arc_root: unhex(get("arc_root")?)
            .ok_or_else(|| Error::corrupt(path, "malformed arc_root"))?,
        anonymize: get("anonymize")? == "true",
        excludes: if excludes.is_empty() {
            Vec::new()
        } else {
            excludes.lines().map(str::to_owned).collect()
        },
        hash,
    })
}

/// Rebuilds the offset table from the stored sizes and checks it against the metadata.
fn read_layout(conn: &Connection, path: &Path, meta: &TapeMeta) -> Result<OffsetTable> {
    let sizes: Vec<u8> = conn
        .query_row("SELECT sizes FROM layout WHERE id = 0", [], |r| r.get(0))
        .optional()
        .map_err(sql_err(path))?
        .ok_or_else(|| Error::corrupt(path, "layout missing"))?;
    if sizes.len() as u64 != meta.entry_count * 8 {
        return Err(Error::corrupt(
            path,
            format!(
                "{} entries in the layout, metadata says {}",
                sizes.len() / 8,
                meta.entry_count
            ),
        ));
    }
    let table = OffsetTable::from_sizes(
        sizes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk"))),
    )
    .ok_or_else(|| Error::corrupt(path, "sizes add up to more than 2^64 bytes"))?;
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
    let rows: i64 = conn
        .query_row(
            "SELECT coalesce(max(ordinal) + 1, 0) FROM entries",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err(path))?;
    if rows as u64 != meta.entry_count {
        return Err(Error::corrupt(
            path,
            format!("{rows} entries, metadata says {}", meta.entry_count),
        ));
    }
    Ok(table)
}

/// A stored relative path must stay inside the root: not absolute, no `.`/`..`
/// components, no empty components, no NUL.
fn check_rel_path(rel: &[u8]) -> std::result::Result<(), &'static str> {
    if rel.is_empty() {
        return Ok(());
    }
    if rel.contains(&0) {
        return Err("relative path contains NUL");
    }
    if rel[0] == b'/' {
        return Err("relative path is absolute");
    }
    for comp in rel.split(|&b| b == b'/') {
        match comp {
            b"" => return Err("relative path has an empty component"),
            b"." | b".." => return Err("relative path escapes the root (`.` or `..`)"),
            _ => {}
        }
    }
    Ok(())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_path_checks() {
        assert!(check_rel_path(b"a/b").is_ok());
        assert!(check_rel_path(b"").is_ok());
        assert!(check_rel_path(b"/etc/passwd").is_err());
        assert!(check_rel_path(b"a/../../x").is_err());
        assert!(check_rel_path(b"..").is_err());
        assert!(check_rel_path(b"a//b").is_err());
        assert!(check_rel_path(b"./a").is_err());
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
            fs::copy(&fresh, dest).unwrap();
        }
        let from_template = dir.path().join("template.db");
        fs::write(&from_template, TEMPLATE).unwrap();
        assert_eq!(
            describe(&from_template),
            describe(&fresh),
            "src/catalog_template.db is not SCHEMA: rewrite it with \
             TARTAPE_WRITE_TEMPLATE=1 cargo test --lib template_is_the_schema"
        );
        // A writer starts from it, and never over an existing file.
        let written = dir.path().join("written.db");
        CatalogWriter::create(&written).unwrap();
        assert!(
            CatalogWriter::create(&written).is_err(),
            "an existing file is kept"
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(b"\x00\xffab"), "00ff6162");
        assert_eq!(unhex("00ff6162").unwrap(), b"\x00\xffab");
        assert!(unhex("abc").is_none());
    }
}
