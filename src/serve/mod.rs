//! `tartape serve` (SPEC §10): tapes over HTTP, read-only, with the Range, If-Range and
//! ETag semantics that let any client resume a download.
//!
//! * [`Served`] is what is served: each tape as `NAME.tar`, and with volumes each volume
//!   and the catalog copy; every byte is read through the tape's checks (SPEC §3).
//! * [`http`] decides, from the request's headers and the file's size, ETag and date,
//!   which answer a request gets: pure functions.
//! * `server` is the I/O: hyper on a small tokio runtime, tape reads on blocking threads
//!   with bounded buffers, timeouts against slow and idle clients, a bound on connections,
//!   and a graceful stop.

pub mod auth;
pub mod http;
mod server;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use headers::ETag;

use crate::error::{Error, Result};
use crate::tape::Tape;
use crate::volume::{NameTemplate, VolumeSet};

pub use auth::Auth;
pub use server::{Options, serve};

/// The content type of tapes and volumes.
pub const TAR_TYPE: &str = "application/x-tar";

/// Where a served file's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Tape bytes from `start` on (the whole tape, or a volume).
    Tape {
        /// The tape offset of the file's first byte.
        start: u64,
    },
    /// The catalog copy (`NAME_FP8.tartape`), from the catalog's open descriptor.
    Catalog,
}

/// One file the server serves.
#[derive(Debug, Clone)]
pub struct ServedFile {
    /// Its name: the path is `/NAME`.
    pub name: String,
    /// Which tape it is of.
    pub tape: usize,
    /// Where its bytes are.
    pub content: Content,
    /// Its size in bytes.
    pub size: u64,
    /// Its strong ETag: the tape's fingerprint and catalog id (a recording of the same
    /// tree with other modes or owners has the same fingerprint but other bytes), and the
    /// volume.
    pub etag: ETag,
    /// The recording time.
    pub modified: SystemTime,
    /// `application/x-tar`, or SQLite's for the catalog copy.
    pub content_type: &'static str,
}

/// A tape being served, and whether one of its files was found changed.
struct ServedTape {
    tape: Tape,
    /// Set when a read found the source changed: later requests get 409 with it.
    broken: Mutex<Option<String>>,
}

/// Every tape served, and their files.
pub struct Served {
    tapes: Vec<ServedTape>,
    files: Vec<ServedFile>,
    by_name: HashMap<String, usize>,
}

impl Served {
    /// The files of `tapes`: `NAME.tar` for each, and with `volumes` (a size and a name
    /// template) each volume and the catalog copy. Two files of one name are refused.
    pub fn new(tapes: Vec<Tape>, volumes: Option<(u64, NameTemplate)>) -> Result<Served> {
        let mut files = Vec::new();
        for (i, tape) in tapes.iter().enumerate() {
            let meta = tape.meta();
            let root = String::from_utf8_lossy(&meta.arc_root).into_owned();
            let modified = UNIX_EPOCH + Duration::from_secs(meta.created_at.max(0) as u64);
            let tag = |what: &str| -> Result<ETag> {
                format!(
                    "\"{}-{}{what}\"",
                    &meta.fingerprint[..meta.fingerprint.len().min(32)],
                    &meta.catalog_id[..meta.catalog_id.len().min(16)]
                )
                .parse()
                .map_err(|_| Error::corrupt(tape.catalog().path(), "a catalog id that is not hex"))
            };
            files.push(ServedFile {
                name: format!("{root}.tar"),
                tape: i,
                content: Content::Tape { start: 0 },
                size: tape.total_size(),
                etag: tag("")?,
                modified,
                content_type: TAR_TYPE,
            });
            if let Some((size, template)) = &volumes {
                let set = VolumeSet::new(meta, *size, template.clone())?;
                let count = set.volumes().count();
                for part in 1..=count {
                    let (start, end) = set.volumes().window_of(part)?;
                    files.push(ServedFile {
                        name: set.display_name(part)?,
                        tape: i,
                        content: Content::Tape { start },
                        size: end - start,
                        etag: tag(&format!("-{size}-{part}"))?,
                        modified,
                        content_type: TAR_TYPE,
                    });
                }
                let size = tape
                    .catalog()
                    .file()
                    .metadata()
                    .map_err(|e| Error::io(tape.catalog().path(), e))?
                    .len();
                files.push(ServedFile {
                    name: String::from_utf8_lossy(&set.catalog_copy_name()).into_owned(),
                    tape: i,
                    content: Content::Catalog,
                    size,
                    etag: tag("-catalog")?,
                    modified,
                    content_type: "application/vnd.sqlite3",
                });
            }
        }
        let mut by_name = HashMap::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            if let Some(other) = by_name.insert(f.name.clone(), i) {
                let root = |i: usize| tapes[files[i].tape].root().display().to_string();
                return Err(Error::Usage(format!(
                    "two files would be served as /{}: of {} and of {} (tapes with the same \
                     root name; record one with --arc-root NAME)",
                    f.name,
                    root(other),
                    root(i)
                )));
            }
        }
        Ok(Served {
            tapes: tapes
                .into_iter()
                .map(|tape| ServedTape {
                    tape,
                    broken: Mutex::new(None),
                })
                .collect(),
            files,
            by_name,
        })
    }

    /// Every file served, in the order of the index.
    pub fn files(&self) -> &[ServedFile] {
        &self.files
    }

    /// The file named `name`.
    pub fn find(&self, name: &str) -> Option<&ServedFile> {
        self.by_name.get(name).map(|&i| &self.files[i])
    }

    /// Why the tape of `file` is no longer served (a source found changed), if it is not.
    pub fn broken(&self, file: &ServedFile) -> Option<String> {
        if file.content == Content::Catalog {
            return None;
        }
        self.tapes[file.tape]
            .broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads bytes `[offset, offset + buf.len())` of `file` through every check of the
    /// tape. A source found changed marks the tape: later requests get 409.
    pub fn read(&self, file: &ServedFile, offset: u64, buf: &mut [u8]) -> Result<()> {
        let served = &self.tapes[file.tape];
        let read = match file.content {
            Content::Tape { start } => served.tape.read_at(start + offset, buf),
            Content::Catalog => read_file(served.tape.catalog().file(), offset, buf),
        };
        match read {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => Err(Error::Usage(format!(
                "{}: ends at byte {}, before its size",
                file.name,
                offset + n as u64
            ))),
            Err(e) => {
                if matches!(e, Error::Integrity { .. }) {
                    let mut broken = served.broken.lock().unwrap_or_else(|p| p.into_inner());
                    broken.get_or_insert_with(|| e.to_string());
                }
                Err(e)
            }
        }
    }
}

fn read_file(f: &File, offset: u64, buf: &mut [u8]) -> Result<usize> {
    f.read_exact_at(buf, offset)
        .map(|()| buf.len())
        .map_err(|e| Error::io("<catalog copy>", e))
}
