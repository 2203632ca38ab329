//! `tartape upload` (SPEC §9): a tape, or each of its volumes, into an S3-compatible store
//! as objects byte-identical to `tartape stream`, resumable across runs.
//!
//! A multipart upload's parts are regenerated from the catalog, so an upload killed at
//! any moment goes on where the server's parts end: the state beside the catalog
//! ([`state`]) says which parts were confirmed, the server's part list (every page of
//! ListParts) is the truth it is reconciled with, and only what is missing is sent. Every
//! part is read through the tape's checks (SPEC §3) and carries its `Content-MD5`, which
//! the server checks; the object is then completed and looked at (HEAD: its size and the
//! tape's fingerprint in its metadata; the multipart ETag where the server uses that
//! scheme).
//!
//! The fingerprint (paths, sizes, whole-second mtimes) names a tree, not its bytes: a
//! file rewritten with its size and mtime kept records again to the same fingerprint and
//! other bytes. So the state keeps the catalog's id, a record beside it the ETag of the
//! object this catalog completed, and an object or a state of another recording is
//! believed only once its bytes are compared: the object's ETag with the tape's MD5 (or
//! multipart ETag), each part's with the part's.
//!
//! Memory does not grow with the part size: a part of up to [`BUFFERED`] bytes is read
//! into memory once; a larger one is read twice, once for its MD5 and once as it is sent.

pub mod plan;
pub mod state;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use md5::{Digest, Md5};

use crate::digest::hex;
use crate::error::{Error, Result};
use crate::s3::client::bare_etag;
use crate::s3::{Metadata, ObjectStore, Payload};
use crate::tape::Tape;
use crate::volume::VolumeSet;

pub use plan::Plan;
use state::{Confirmed, Header, State};

/// Parts up to this size are read into memory once; larger ones are streamed.
pub const BUFFERED: u64 = 16 << 20;

/// Bytes read from the tape at a time while streaming a part or hashing it.
const CHUNK: usize = 1 << 20;

pub use crate::s3::{FINGERPRINT_META, VOLUME_META};

/// Where an object's bytes come from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// Tape bytes from `start` on (the whole tape, or a volume's window).
    Tape {
        /// The tape.
        tape: &'a Tape,
        /// Its offset where the object starts.
        start: u64,
    },
    /// A file read as it is (the catalog copy, from the catalog's open descriptor: a
    /// catalog recorded again meanwhile is another file).
    File(&'a File),
}

impl Source<'_> {
    /// Reads bytes `[offset, offset + buf.len())` of the object, with every check of the
    /// tape.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            Source::Tape { tape, start } => {
                let n = tape.read_at(start + offset, buf)?;
                if n < buf.len() {
                    return Err(Error::Usage(format!(
                        "the tape ends at {} bytes, before the object does",
                        start + offset + n as u64
                    )));
                }
                Ok(())
            }
            Source::File(f) => f
                .read_exact_at(buf, offset)
                .map_err(|e| Error::io("<catalog copy>", e)),
        }
    }

    /// What a state says the bytes are, so that other bytes are never resumed.
    fn describe(&self) -> String {
        match self {
            Source::Tape { start, .. } => format!("tape {start}"),
            Source::File(_) => "catalog".into(),
        }
    }
}

/// One object to upload.
pub struct Object<'a> {
    /// Its key.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// Its bytes.
    pub source: Source<'a>,
    /// The tape's fingerprint, and a volume's `K/N` when it is one: in its metadata, and
    /// what an object already at the key must carry to count as this one.
    pub fingerprint: String,
    /// `K/N` for a volume.
    pub volume: Option<String>,
    /// The catalog's id: the fingerprint (paths, sizes, whole-second mtimes) does not say
    /// a tape's bytes (a file rewritten with its size and mtime kept), a recording does.
    pub catalog_id: String,
}

impl Object<'_> {
    fn metadata(&self) -> Metadata {
        let mut meta = vec![(FINGERPRINT_META.to_string(), self.fingerprint.clone())];
        if let Some(v) = &self.volume {
            meta.push((VOLUME_META.to_string(), v.clone()));
        }
        Metadata {
            content_type: match self.source {
                Source::Tape { .. } => "application/x-tar".into(),
                Source::File(_) => "application/vnd.sqlite3".into(),
            },
            meta,
        }
    }
}

/// What became of one object.
#[derive(Debug, Clone, Default)]
pub struct ObjectSummary {
    /// Its key.
    pub key: String,
    /// The multipart upload's id (`None` for one PUT, or nothing to do).
    pub upload_id: Option<String>,
    /// Its size.
    pub size: u64,
    /// Its parts.
    pub parts: u32,
    /// Parts the server already held from an earlier run.
    pub parts_reused: u32,
    /// Bytes sent by this run (parts that succeeded).
    pub bytes_sent: u64,
    /// The object's ETag.
    pub etag: String,
    /// It was already there (same size and fingerprint): nothing was sent.
    pub already: bool,
}

/// What an upload tells as it goes.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// An object starts: its key, size, parts, and bytes the server already held.
    Object {
        /// Its key.
        key: &'a str,
        /// Its size.
        size: u64,
        /// Its parts.
        parts: u32,
        /// Parts kept from an earlier run…
        reused_parts: u32,
        /// …and their bytes.
        reused: u64,
    },
    /// A part was confirmed (`bytes` sent).
    Part {
        /// Its size.
        bytes: u64,
    },
    /// An object was already there.
    Skipped {
        /// Its key.
        key: &'a str,
        /// Its size.
        size: u64,
    },
}

/// An upload into one bucket.
pub struct Uploader<'a> {
    /// The store (a client of the bucket).
    pub store: &'a dyn ObjectStore,
    /// The endpoint and bucket, which with the key name the state file.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// `--part-size`, or the default.
    pub part_size: Option<u64>,
    /// Parts in flight at once.
    pub jobs: usize,
    /// Where states are kept (`uploads/` beside the catalog).
    pub state_dir: PathBuf,
    /// Set on SIGINT/SIGTERM: no new part starts.
    pub stop: &'a AtomicBool,
    /// Hears of every object and part.
    pub progress: &'a (dyn Fn(Progress<'_>) + Sync),
    /// Warnings for the user (an older upload left on the server, …).
    pub warn: &'a (dyn Fn(String) + Sync),
}

impl Uploader<'_> {
    /// The state file of `key`.
    pub fn state_path(&self, key: &str) -> PathBuf {
        state::path_for(&self.state_dir, &self.endpoint, &self.bucket, key)
    }

    /// Uploads `object` (or finds it there already), going on from an earlier run's parts.
    pub fn upload(&self, object: &Object<'_>) -> Result<ObjectSummary> {
        let plan = Plan::new(object.size, self.part_size)?;
        let url = format!("s3://{}/{}", self.bucket, object.key);
        let path = self.state_path(&object.key);
        let _lock = state::lock(&path, &url)?;
        if let Some(info) = self.store.head(&object.key)?
            && self.is_this(object, &info)
            && self.holds_this(object, &plan, &path, &info)?
        {
            if let Some(old) = State::load(&path)? {
                // Completed by a run killed before it removed its state.
                old.remove()?;
            }
            (self.progress)(Progress::Skipped {
                key: &object.key,
                size: object.size,
            });
            return Ok(ObjectSummary {
                key: object.key.clone(),
                size: object.size,
                parts: plan.count(),
                etag: info.etag,
                already: true,
                ..ObjectSummary::default()
            });
        }
        if plan.single() {
            return self.put_whole(object, &plan, &url, &path);
        }
        let header = Header {
            tartape_upload: 1,
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            key: object.key.clone(),
            upload_id: String::new(),
            part_size: plan.part_size(),
            fingerprint: object.fingerprint.clone(),
            size: object.size,
            source: object.source.describe(),
            catalog_id: object.catalog_id.clone(),
        };
        // The state of an earlier run, if it is this very upload.
        let mut state = match State::load(&path)? {
            Some(old)
                if Header {
                    upload_id: old.header.upload_id.clone(),
                    catalog_id: old.header.catalog_id.clone(),
                    ..header.clone()
                } == old.header =>
            {
                Some(old)
            }
            Some(other) => {
                let (id, fp, size) = (
                    other.header.upload_id.clone(),
                    other.header.fingerprint.clone(),
                    other.header.part_size,
                );
                other.supersede()?;
                (self.warn)(format!(
                    "{url}: an unfinished upload of another recording or part size \
                     (fingerprint {}…, parts of {size} bytes) is left on the server as \
                     upload {id}; a new upload starts (`tartape upload … --abort` aborts \
                     both, or: aws s3api abort-multipart-upload --bucket {} --key {} \
                     --upload-id {id})",
                    &fp[..fp.len().min(8)],
                    self.bucket,
                    object.key
                ));
                None
            }
            None => None,
        };
        // What the server holds of it is the truth.
        let mut server_parts = Vec::new();
        if let Some(s) = state.take() {
            match self.store.list_parts(&object.key, &s.header.upload_id)? {
                Some(parts) => {
                    server_parts = parts;
                    state = Some(s);
                }
                None => {
                    (self.warn)(format!(
                        "{url}: upload {} is gone from the server (aborted, or expired); \
                         a new upload starts",
                        s.header.upload_id
                    ));
                    s.remove()?;
                }
            }
        }
        let mut state = match state {
            // Another recording of the same fingerprint: its bytes may differ (a mode, an
            // owner). The same upload goes on, but none of its parts is taken on the
            // state's word: each is read again and compared with the server's.
            Some(s) if s.header.catalog_id != object.catalog_id => {
                let upload_id = s.header.upload_id.clone();
                drop(s);
                State::create(
                    &path,
                    Header {
                        upload_id,
                        ..header
                    },
                )?
            }
            Some(s) => s,
            None => {
                let id = self.store.create_upload(&object.key, &object.metadata())?;
                State::create(
                    &path,
                    Header {
                        upload_id: id,
                        ..header
                    },
                )?
            }
        };
        let upload_id = state.header.upload_id.clone();
        let reused = self.reconcile(object, &plan, &mut state, &server_parts)?;
        let reused_count = reused.len() as u32;
        let reused_bytes: u64 = reused.iter().map(|&n| plan.size_of(n)).sum();
        (self.progress)(Progress::Object {
            key: &object.key,
            size: object.size,
            parts: plan.count(),
            reused_parts: reused_count,
            reused: reused_bytes,
        });
        let missing: Vec<u32> = (1..=plan.count())
            .filter(|n| !state.parts.contains_key(n))
            .collect();
        let sent = self.send_parts(object, &plan, &upload_id, &missing, state)?;
        let mut state = sent.state;
        // Every part is confirmed: complete, then look at what the server made of it.
        let md5s: Vec<[u8; 16]> = (1..=plan.count()).map(|n| state.parts[&n].md5).collect();
        let etags: Vec<String> = (1..=plan.count())
            .map(|n| state.parts[&n].etag.clone())
            .collect();
        // A store whose ETags are the parts' MD5s (most): every part's must be; one whose
        // ETags are not (SSE-KMS, SSE-C) leaves the bytes to Content-MD5.
        let md5_etags = state.parts.values().any(|c| c.etag == hex(&c.md5));
        if md5_etags && let Some((n, c)) = state.parts.iter().find(|(_, c)| c.etag != hex(&c.md5)) {
            return Err(Error::Object {
                url,
                problem: format!(
                    "part {n} was stored with ETag {}, but its bytes' MD5 is {}: the server \
                     holds other bytes than the tape's (abort with --abort and upload again)",
                    c.etag,
                    hex(&c.md5)
                ),
            });
        }
        let etag = match self.store.complete(&object.key, &upload_id, &etags) {
            Ok(etag) => etag,
            // Completed by a try whose answer was lost (the connection broke after the
            // server did it): the upload is gone, the object is there.
            Err(Error::Remote { code, .. }) if code == "NoSuchUpload" => {
                // Only an object whose ETag is the one these parts make is this one.
                match self.store.head(&object.key)? {
                    Some(info)
                        if self.is_this(object, &info)
                            && md5_etags
                            && info.etag == multipart_etag(&md5s) =>
                    {
                        info.etag
                    }
                    _ => {
                        return Err(Error::Object {
                            url,
                            problem: format!(
                                "upload {upload_id} vanished while it was being completed; \
                                 run again to upload anew"
                            ),
                        });
                    }
                }
            }
            Err(e) => return Err(e),
        };
        let expected = multipart_etag(&md5s);
        if md5_etags && is_multipart_etag(&etag) && etag != expected {
            return Err(Error::Object {
                url,
                problem: format!(
                    "completed with ETag {etag}, but its parts make {expected}: the server \
                     holds other bytes than the tape's"
                ),
            });
        }
        let info = self.check_object(object, &url, md5_etags.then_some(expected.as_str()))?;
        self.note_done(object, &path, &info)?;
        state.parts.clear();
        state.remove()?;
        Ok(ObjectSummary {
            key: object.key.clone(),
            upload_id: Some(upload_id),
            size: object.size,
            parts: plan.count(),
            parts_reused: reused_count,
            bytes_sent: sent.bytes,
            etag,
            already: false,
        })
    }

    /// Whether the object found at the key says it is this one: its size, the tape's
    /// fingerprint, and a volume's number.
    fn is_this(&self, object: &Object<'_>, info: &crate::s3::ObjectInfo) -> bool {
        info.size == object.size
            && info.meta.get(FINGERPRINT_META) == Some(&object.fingerprint)
            && info.meta.get(VOLUME_META) == object.volume.as_ref()
    }

    /// Whether the object found at the key (which says it is this one: `is_this`) holds
    /// this tape's bytes: this catalog completed it, as the record beside the state says
    /// (and its ETag is still the one it had then), or its ETag is the MD5 (or multipart
    /// ETag) of the bytes read now. An object of another recording of the same fingerprint
    /// whose ETag says nothing (SSE-KMS) is uploaded again.
    fn holds_this(
        &self,
        object: &Object<'_>,
        plan: &Plan,
        path: &std::path::Path,
        info: &crate::s3::ObjectInfo,
    ) -> Result<bool> {
        if let Some(done) = state::Done::load(path)
            && done.catalog_id == object.catalog_id
            && done.size == info.size
            && done.etag == info.etag
            && !info.etag.is_empty()
        {
            return Ok(true);
        }
        if self.same_bytes(object, plan, &info.etag)? {
            self.note_done(object, path, info)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Notes beside the state that this catalog's bytes are the object with this ETag.
    fn note_done(
        &self,
        object: &Object<'_>,
        path: &std::path::Path,
        info: &crate::s3::ObjectInfo,
    ) -> Result<()> {
        state::Done {
            catalog_id: object.catalog_id.clone(),
            size: info.size,
            etag: info.etag.clone(),
        }
        .save(path)
    }

    /// Whether the object's ETag says it holds these bytes: it is their MD5, or the
    /// multipart ETag of their parts of this plan's size. (Another recording of the same
    /// fingerprint: read here, compared; an ETag that is neither says nothing.)
    fn same_bytes(&self, object: &Object<'_>, plan: &Plan, etag: &str) -> Result<bool> {
        let reading = || {
            log::info!(
                "s3://{}/{}: an object of this fingerprint is there, not one this catalog \
                 completed: reading the tape to compare its bytes with its ETag",
                self.bucket,
                object.key
            );
        };
        if is_md5(etag) {
            reading();
            return Ok(hex(&md5_of(&object.source, 0, object.size, self.stop)?) == etag);
        }
        let Some((_, parts)) = etag.split_once('-') else {
            return Ok(false);
        };
        if !is_multipart_etag(etag) || parts != plan.count().to_string() {
            return Ok(false);
        }
        reading();
        let mut md5s = Vec::with_capacity(plan.count() as usize);
        for n in 1..=plan.count() {
            let (start, end) = plan.range(n);
            md5s.push(md5_of(&object.source, start, end, self.stop)?);
        }
        Ok(multipart_etag(&md5s) == etag)
    }

    /// After completion: HEAD must show the object's size and the fingerprint, and the
    /// multipart ETag when the server gives it there (and uses MD5 ETags: `multipart`).
    fn check_object(
        &self,
        object: &Object<'_>,
        url: &str,
        multipart: Option<&str>,
    ) -> Result<crate::s3::ObjectInfo> {
        let Some(info) = self.store.head(&object.key)? else {
            return Err(Error::Object {
                url: url.to_string(),
                problem: "not there after the upload completed".into(),
            });
        };
        if !self.is_this(object, &info) {
            return Err(Error::Object {
                url: url.to_string(),
                problem: format!(
                    "after the upload: {} bytes, fingerprint {:?}; the tape is {} bytes, \
                     fingerprint {}",
                    info.size,
                    info.meta.get(FINGERPRINT_META),
                    object.size,
                    object.fingerprint
                ),
            });
        }
        if let Some(multipart) = multipart
            && is_multipart_etag(&info.etag)
            && info.etag != multipart
        {
            return Err(Error::Object {
                url: url.to_string(),
                problem: format!("its ETag is {}, but its parts make {multipart}", info.etag),
            });
        }
        Ok(info)
    }

    /// Keeps every part the server holds that is this tape's (the state's MD5 and size, or
    /// read again and compared when the state lacks it); returns their numbers.
    fn reconcile(
        &self,
        object: &Object<'_>,
        plan: &Plan,
        state: &mut State,
        server: &[crate::s3::PartInfo],
    ) -> Result<Vec<u32>> {
        let mut kept = Vec::new();
        let mut known = std::mem::take(&mut state.parts);
        for p in server {
            if p.number == 0 || p.number > plan.count() || p.size != plan.size_of(p.number) {
                continue;
            }
            let md5 = match known.remove(&p.number) {
                // The part this state confirmed: same size, same ETag.
                Some(c) if c.size == p.size && c.etag == p.etag => Some(c.md5),
                // The server's part, which this run may not know: it counts when its
                // bytes are the tape's (its ETag is their MD5 on most stores).
                _ if is_md5(&p.etag) => {
                    let (start, end) = plan.range(p.number);
                    let md5 = md5_of(&object.source, start, end, self.stop)?;
                    (hex(&md5) == p.etag).then_some(md5)
                }
                _ => None,
            };
            if let Some(md5) = md5 {
                let part = Confirmed {
                    size: p.size,
                    md5,
                    etag: p.etag.clone(),
                };
                state.confirm(p.number, part)?;
                kept.push(p.number);
            }
        }
        Ok(kept)
    }

    /// Sends `parts` with [`Uploader::jobs`] in flight; each confirmed part goes into the
    /// state before it counts. Stops at the first error (no new part starts; parts in
    /// flight end), or when stopped.
    fn send_parts(
        &self,
        object: &Object<'_>,
        plan: &Plan,
        upload_id: &str,
        parts: &[u32],
        state: State,
    ) -> Result<Sent> {
        let next = AtomicU64::new(0);
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let state = Mutex::new(state);
        let sent = AtomicU64::new(0);
        let halt = AtomicBool::new(false);
        let jobs = self.jobs.clamp(1, parts.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| {
                    let mut buf = Vec::new();
                    loop {
                        if halt.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(&number) = parts.get(i) else { return };
                        let done = self.send_part(object, plan, upload_id, number, &mut buf);
                        let confirmed = done.and_then(|part| {
                            let size = part.size;
                            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                            s.confirm(number, part)?;
                            Ok(size)
                        });
                        match confirmed {
                            Ok(bytes) => {
                                sent.fetch_add(bytes, Ordering::Relaxed);
                                (self.progress)(Progress::Part { bytes });
                            }
                            Err(e) => {
                                halt.store(true, Ordering::Relaxed);
                                let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                                // The first cause, not what stopping did to the others.
                                if slot.is_none() || matches!(*slot, Some(Error::Interrupted)) {
                                    *slot = Some(e);
                                }
                                return;
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        if self.stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(Sent {
            state: state.into_inner().unwrap_or_else(|p| p.into_inner()),
            bytes: sent.into_inner(),
        })
    }

    /// Reads part `number` through the tape's checks and sends it with its MD5.
    fn send_part(
        &self,
        object: &Object<'_>,
        plan: &Plan,
        upload_id: &str,
        number: u32,
        buf: &mut Vec<u8>,
    ) -> Result<Confirmed> {
        let (start, end) = plan.range(number);
        let size = end - start;
        let mut etag = String::new();
        let md5 = self.with_payload(object, start, end, buf, |payload, md5| {
            etag = self
                .store
                .upload_part(&object.key, upload_id, number, payload, md5)?;
            Ok(())
        })?;
        Ok(Confirmed { size, md5, etag })
    }

    /// Hands the bytes `[start, end)` of the object, and their MD5, to `send`: from
    /// memory when they fit [`BUFFERED`], else as a stream read again (after a first pass
    /// for the MD5). Returns the MD5.
    fn with_payload(
        &self,
        object: &Object<'_>,
        start: u64,
        end: u64,
        buf: &mut Vec<u8>,
        send: impl FnOnce(&Payload<'_>, &[u8; 16]) -> Result<()>,
    ) -> Result<[u8; 16]> {
        let size = end - start;
        if size <= BUFFERED {
            buf.resize(size as usize, 0);
            for (i, chunk) in buf.chunks_mut(CHUNK).enumerate() {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                object
                    .source
                    .read_exact_at(start + (i * CHUNK) as u64, chunk)?;
            }
            let md5: [u8; 16] = Md5::digest(&buf[..]).into();
            send(&Payload::Bytes(buf), &md5)?;
            return Ok(md5);
        }
        let md5 = md5_of(&object.source, start, end, self.stop)?;
        let failed = Mutex::new(None);
        let open = || -> Box<dyn Read + '_> {
            Box::new(SourceReader {
                source: object.source,
                at: start,
                end,
                stop: self.stop,
                failed: &failed,
            })
        };
        send(
            &Payload::Stream {
                len: size,
                open: &open,
                failed: &failed,
            },
            &md5,
        )?;
        Ok(md5)
    }

    /// A small object (one part): one PUT with its MD5, then checked with HEAD.
    fn put_whole(
        &self,
        object: &Object<'_>,
        plan: &Plan,
        url: &str,
        path: &std::path::Path,
    ) -> Result<ObjectSummary> {
        (self.progress)(Progress::Object {
            key: &object.key,
            size: object.size,
            parts: 1,
            reused_parts: 0,
            reused: 0,
        });
        let mut buf = Vec::new();
        let mut etag = String::new();
        self.with_payload(object, 0, object.size, &mut buf, |payload, md5| {
            etag = self
                .store
                .put(&object.key, payload, md5, &object.metadata())?;
            Ok(())
        })?;
        // (An ETag that is not the MD5 is the server's way, SSE-KMS for one: the server
        // checked Content-MD5.)
        (self.progress)(Progress::Part { bytes: object.size });
        let info = self.check_object(object, url, None)?;
        self.note_done(object, path, &info)?;
        Ok(ObjectSummary {
            key: object.key.clone(),
            upload_id: None,
            size: object.size,
            parts: plan.count(),
            parts_reused: 0,
            bytes_sent: object.size,
            etag,
            already: false,
        })
    }

    /// Aborts the unfinished uploads of `key` that states of this tape's catalog name
    /// (the current one and superseded ones), on the server and here; returns their ids.
    pub fn abort(&self, key: &str) -> Result<Vec<String>> {
        let path = self.state_path(key);
        let _lock = state::lock(&path, &format!("s3://{}/{key}", self.bucket))?;
        let mut aborted = Vec::new();
        let mut paths = state::superseded(&path);
        paths.push(path);
        for p in paths {
            if let Some(s) = State::load(&p)? {
                let id = s.header.upload_id.clone();
                if !id.is_empty() {
                    self.store.abort(&s.header.key, &id)?;
                    aborted.push(id);
                }
                s.remove()?;
            }
        }
        Ok(aborted)
    }
}

/// What [`Uploader::send_parts`] hands back.
struct Sent {
    state: State,
    bytes: u64,
}

/// The object of a whole tape at `key`.
pub fn tape_object<'a>(tape: &'a Tape, key: String) -> Object<'a> {
    Object {
        key,
        size: tape.total_size(),
        source: Source::Tape { tape, start: 0 },
        fingerprint: tape.fingerprint().to_string(),
        volume: None,
        catalog_id: tape.meta().catalog_id.clone(),
    }
}

/// The objects of a tape cut into volumes: one per volume under the prefix `prefix`,
/// named as SPEC §8 names them, then the catalog copy.
pub fn volume_objects<'a>(
    tape: &'a Tape,
    set: &VolumeSet,
    prefix: &crate::s3::S3Url,
) -> Result<Vec<Object<'a>>> {
    let fingerprint = tape.fingerprint().to_string();
    let n = set.volumes().count();
    let mut out = Vec::with_capacity(n as usize + 1);
    for part in 1..=n {
        let (start, end) = set.volumes().window_of(part)?;
        let name = set.name(part)?;
        let name = String::from_utf8(name).map_err(|n| {
            Error::Usage(format!(
                "volume name {:?} is not UTF-8: an S3 key must be",
                String::from_utf8_lossy(n.as_bytes())
            ))
        })?;
        out.push(Object {
            key: prefix.child(&name),
            size: end - start,
            source: Source::Tape { tape, start },
            fingerprint: fingerprint.clone(),
            volume: Some(format!("{part}/{n}")),
            catalog_id: tape.meta().catalog_id.clone(),
        });
    }
    let catalog = tape.catalog().file();
    let size = catalog
        .metadata()
        .map_err(|e| Error::io(tape.catalog().path(), e))?
        .len();
    let name = String::from_utf8_lossy(&set.catalog_copy_name()).into_owned();
    out.push(Object {
        key: prefix.child(&name),
        size,
        source: Source::File(catalog),
        fingerprint,
        volume: Some("catalog".into()),
        catalog_id: tape.meta().catalog_id.clone(),
    });
    Ok(out)
}

/// Reads the object's bytes `[at, end)` through the checks of its source; an error that
/// is not the network's is left in `failed` (the request then fails with it).
struct SourceReader<'a> {
    source: Source<'a>,
    at: u64,
    end: u64,
    stop: &'a AtomicBool,
    failed: &'a Mutex<Option<Error>>,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let fail = |e: Error| {
            let message = e.to_string();
            if let Ok(mut slot) = self.failed.lock() {
                slot.get_or_insert(e);
            }
            std::io::Error::other(message)
        };
        if self.stop.load(Ordering::Relaxed) {
            return Err(fail(Error::Interrupted));
        }
        let n = buf.len().min(CHUNK).min((self.end - self.at) as usize);
        self.source
            .read_exact_at(self.at, &mut buf[..n])
            .map_err(fail)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The MD5 of the object's bytes `[start, end)`, read through the checks of its source.
fn md5_of(source: &Source<'_>, start: u64, end: u64, stop: &AtomicBool) -> Result<[u8; 16]> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK.min((end - start) as usize)];
    let mut at = start;
    while at < end {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let n = buf.len().min((end - at) as usize);
        source.read_exact_at(at, &mut buf[..n])?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize().into())
}

/// The ETag S3 gives a multipart object: the MD5 of its parts' MD5s, `-N`.
pub fn multipart_etag(md5s: &[[u8; 16]]) -> String {
    let mut hasher = Md5::new();
    for m in md5s {
        hasher.update(m);
    }
    format!("{}-{}", hex(&hasher.finalize()), md5s.len())
}

/// Whether an ETag is 32 hex digits (an MD5, as most stores give a part's).
fn is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether an ETag has the multipart form `<md5>-N`.
fn is_multipart_etag(etag: &str) -> bool {
    let etag = bare_etag(etag);
    etag.split_once('-')
        .is_some_and(|(m, n)| is_md5(m) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests;
