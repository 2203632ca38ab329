//! Where a restore reads the tape's bytes: one whole archive or a folder of volume files
//! here, or one object or a prefix of volume objects in an object store (SPEC §8, §9).
//! The extraction asks for tape bytes and never knows which.
//!
//! From a store, only the needed ranges are fetched, with ranged GETs of at most
//! [`FETCH`] bytes, never past the end of the range being restored: one small file of a
//! large tape is one request. The first answer of each object must say the object's size
//! (its `Content-Range`) and, when it has it, the tape's fingerprint (its metadata).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::infer::{infer_remote_volumes, infer_volumes};
use super::{Place, READ_CHUNK, Restore};
use crate::catalog::Catalog;
use crate::digest::ContentHasher;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::s3::{FINGERPRINT_META, ObjectInfo, ObjectStore, S3Url, VOLUME_META};

use crate::volume::{NameTemplate, Volumes};

/// Bytes fetched from a store at most by one GET.
pub(super) const FETCH: u64 = 8 << 20;

/// Fetched windows kept at once (one per thread reading, at most 4).
const WINDOWS: usize = 4;

/// Where one piece of the tape is.
pub(super) enum Backing {
    /// A file here.
    Local(File),
    /// An object in the store, by key.
    Remote(String),
}

/// Where tape bytes come from: one whole archive, or volumes.
pub(super) struct Source<'a> {
    /// `--from`, for messages.
    place: String,
    kind: SourceKind,
    /// The tape's size.
    total: u64,
    /// The store, when the bytes are there.
    remote: Option<Remote<'a>>,
    /// Volume files (objects) opened so far.
    pub(super) opened: usize,
}

enum SourceKind {
    Archive(Backing),
    Volumes {
        volumes: Volumes,
        names: Namer,
        /// The needed volumes, opened (or found in the store).
        open: HashMap<u64, Backing>,
    },
}

/// Renders the volume names of one tape.
pub(super) struct Namer {
    pub(super) template: NameTemplate,
    pub(super) name: Vec<u8>,
    pub(super) fingerprint: String,
}

impl Namer {
    pub(super) fn name(&self, volumes: &Volumes, part: u64) -> Result<Vec<u8>> {
        self.template
            .render(&self.name, &self.fingerprint, volumes, part)
    }
}

pub(super) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// The store a restore reads from, and what was fetched of it.
struct Remote<'a> {
    store: &'a dyn ObjectStore,
    bucket: String,
    /// The tape ranges being restored, sorted: no fetch goes past the end of one.
    ranges: Vec<(u64, u64)>,
    fingerprint: String,
    /// Windows fetched lately: (key, offset in the object, bytes), the newest last.
    windows: Mutex<Vec<(String, u64, Vec<u8>)>>,
    /// Objects whose size and metadata were checked, with the ETag they had: an answer of
    /// a later GET with another ETag is refused, so an object replaced mid-restore is
    /// never mixed into it.
    checked: Mutex<HashMap<String, String>>,
    /// Requests sent, and bytes fetched.
    requests: AtomicU64,
    fetched: AtomicU64,
}

impl Remote<'_> {
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Checks what the store says of the object at `key` against what the tape says it
    /// is (`size`; a volume's `K/N`).
    fn check(&self, key: &str, info: &ObjectInfo, size: u64, volume: Option<&str>) -> Result<()> {
        let bad = |problem: String| Error::Volume {
            path: PathBuf::from(self.url(key)),
            problem,
        };
        if info.size != size {
            return Err(bad(format!(
                "{} bytes, but the tape says {size}: not this tape's, or cut",
                info.size
            )));
        }
        if let Some(fp) = info.meta.get(FINGERPRINT_META)
            && *fp != self.fingerprint
        {
            return Err(bad(format!(
                "the object is of tape {fp}, not {}",
                self.fingerprint
            )));
        }
        if let (Some(want), Some(got)) = (volume, info.meta.get(VOLUME_META))
            && got != want
        {
            return Err(bad(format!("it is volume {got}, not {want}")));
        }
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), info.etag.clone());
        Ok(())
    }

    /// Reads `buf.len()` bytes at `at` of the object at `key` (`size` bytes, which start
    /// at tape offset `tape_start`), from a window fetched before or fetched now.
    fn read(
        &self,
        key: &str,
        size: u64,
        tape_start: u64,
        volume: Option<&str>,
        at: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let end = at + buf.len() as u64;
        {
            let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, from, bytes)) = windows
                .iter()
                .rev()
                .find(|(k, from, b)| k == key && *from <= at && end <= from + b.len() as u64)
            {
                let i = (at - from) as usize;
                buf.copy_from_slice(&bytes[i..i + buf.len()]);
                return Ok(());
            }
        }
        // The needed range that holds these bytes bounds the fetch.
        let tape_at = tape_start + at;
        let range_end = self
            .ranges
            .iter()
            .find(|(s, e)| *s <= tape_at && tape_at < *e)
            .map_or(tape_start + size, |r| r.1);
        let stop = end
            .max((at + FETCH).min(range_end.saturating_sub(tape_start)))
            .min(size)
            .max(end);
        let known = self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        let mut bytes = Vec::with_capacity((stop - at) as usize);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let info = self
            .store
            .get_range(key, at, stop, known.as_deref(), &mut |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            })?;
        self.fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if known.is_none() {
            self.check(key, &info, size, volume)?;
        }
        buf.copy_from_slice(&bytes[..buf.len()]);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() == WINDOWS {
            windows.remove(0);
        }
        windows.push((key.to_string(), at, bytes));
        Ok(())
    }
}

impl<'a> Source<'a> {
    /// Opens what `request` reads from, for the tape ranges `ranges`: every needed volume
    /// present and of its size, or an error naming them all.
    pub(super) fn open(
        request: &Restore<'a>,
        catalog: &Catalog,
        ranges: &[(u64, u64)],
    ) -> Result<Source<'a>> {
        let meta = catalog.meta();
        let names = Namer {
            template: request.template.clone(),
            name: meta.arc_root.clone(),
            fingerprint: meta.fingerprint.clone(),
        };
        match &request.from {
            Place::Local(place) => Source::open_local(request, catalog, ranges, place, names),
            Place::Store { store, url } => {
                let mut sorted = ranges.to_vec();
                sorted.sort_unstable();
                let remote = Remote {
                    store: *store,
                    bucket: url.bucket.clone(),
                    ranges: sorted,
                    fingerprint: meta.fingerprint.clone(),
                    windows: Mutex::new(Vec::new()),
                    checked: Mutex::new(HashMap::new()),
                    requests: AtomicU64::new(0),
                    fetched: AtomicU64::new(0),
                };
                Source::open_remote(request, catalog, ranges, url, names, remote)
            }
        }
    }

    fn open_local(
        request: &Restore<'_>,
        catalog: &Catalog,
        ranges: &[(u64, u64)],
        place: &Path,
        names: Namer,
    ) -> Result<Source<'a>> {
        let meta = catalog.meta();
        let st = std::fs::metadata(place).map_err(|e| Error::io(place, e))?;
        let shown = place.display().to_string();
        if st.is_file() {
            let file = File::open(place).map_err(|e| Error::io(place, e))?;
            let len = file.metadata().map_err(|e| Error::io(place, e))?.len();
            if len != meta.total_size {
                return Err(Error::Volume {
                    path: place.to_path_buf(),
                    problem: format!(
                        "{len} bytes, but the tape {} is {} bytes: not its archive, or cut",
                        &meta.fingerprint[..8],
                        meta.total_size
                    ),
                });
            }
            return Ok(Source {
                place: shown,
                kind: SourceKind::Archive(Backing::Local(file)),
                total: meta.total_size,
                remote: None,
                opened: 1,
            });
        }
        if !st.is_dir() {
            return Err(Error::Usage(format!(
                "{}: --from takes a folder of volume files or one archive file",
                place.display()
            )));
        }
        let dir = rustix::fs::open(
            place,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(place, e.into()))?;
        let volumes = match request.volume_size {
            Some(size) => Volumes::new(size, meta.total_size)?,
            None => infer_volumes(place, catalog, &names)?,
        };
        let needed = needed_parts(&volumes, ranges);
        let mut missing = Vec::new();
        for &part in &needed {
            let name = names.name(&volumes, part)?;
            let (start, end) = volumes.window(part).expect("a needed part exists");
            match rustix::fs::statat(&dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Err(rustix::io::Errno::NOENT) => missing.push(lossy(&name)),
                Err(e) => return Err(Error::io(place.join(lossy(&name)), e.into())),
                Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => {
                    return Err(Error::Volume {
                        path: place.join(lossy(&name)),
                        problem: "not a regular file".into(),
                    });
                }
                Ok(st) if st.st_size as u64 != end - start => {
                    return Err(Error::Volume {
                        path: place.join(lossy(&name)),
                        problem: format!(
                            "{} bytes, but volume {part} of {} of this tape is {} bytes: \
                             not this tape's volume, or cut",
                            st.st_size,
                            volumes.count(),
                            end - start
                        ),
                    });
                }
                Ok(_) => {}
            }
        }
        if !missing.is_empty() {
            return Err(Error::MissingVolumes {
                place: place.to_path_buf(),
                names: missing,
            });
        }
        // Open them all now (and only them): then reads need no `&mut`, from any thread.
        let mut open = HashMap::with_capacity(needed.len());
        for &part in &needed {
            let name = names.name(&volumes, part)?;
            let path = place.join(lossy(&name));
            let fd = rustix::fs::openat(
                &dir,
                name.as_slice(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io(&path, e.into()))?;
            let file = File::from(fd);
            let st = file.metadata().map_err(|e| Error::io(&path, e))?;
            let (start, end) = volumes.window(part).expect("a needed part exists");
            if !st.is_file() || st.len() != end - start {
                return Err(Error::Volume {
                    path,
                    problem: "replaced while being opened".into(),
                });
            }
            open.insert(part, Backing::Local(file));
        }
        Ok(Source {
            place: shown,
            kind: SourceKind::Volumes {
                volumes,
                names,
                open,
            },
            total: meta.total_size,
            remote: None,
            opened: needed.len(),
        })
    }

    fn open_remote(
        request: &Restore<'_>,
        catalog: &Catalog,
        ranges: &[(u64, u64)],
        url: &S3Url,
        names: Namer,
        remote: Remote<'a>,
    ) -> Result<Source<'a>> {
        let total = catalog.meta().total_size;
        let shown = url.to_string();
        if !url.is_prefix() {
            // One object: its first GET says whether it is there and this tape's.
            return Ok(Source {
                place: shown,
                kind: SourceKind::Archive(Backing::Remote(url.key.clone())),
                total,
                remote: Some(remote),
                opened: 1,
            });
        }
        let volumes = match request.volume_size {
            Some(size) => Volumes::new(size, total)?,
            None => {
                remote.requests.fetch_add(1, Ordering::Relaxed);
                infer_remote_volumes(remote.store, url, total, &names)?
            }
        };
        // Every needed volume is there, of its size and this tape's, before anything is
        // written.
        let needed = needed_parts(&volumes, ranges);
        let mut missing = Vec::new();
        let mut open = HashMap::with_capacity(needed.len());
        for &part in &needed {
            let name = lossy(&names.name(&volumes, part)?);
            let key = url.child(&name);
            let (start, end) = volumes.window(part).expect("a needed part exists");
            remote.requests.fetch_add(1, Ordering::Relaxed);
            match remote.store.head(&key)? {
                None => missing.push(name),
                Some(info) => {
                    let k = format!("{part}/{}", volumes.count());
                    remote.check(&key, &info, end - start, Some(&k))?;
                    open.insert(part, Backing::Remote(key));
                }
            }
        }
        if !missing.is_empty() {
            return Err(Error::MissingVolumes {
                place: PathBuf::from(shown),
                names: missing,
            });
        }
        Ok(Source {
            place: shown,
            opened: needed.len(),
            kind: SourceKind::Volumes {
                volumes,
                names,
                open,
            },
            total,
            remote: Some(remote),
        })
    }

    /// Whether the bytes are in a store: each costs a request, so the restore reads each
    /// needed range once (headers are compared as it goes, not in a pass before).
    pub(super) fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Requests sent to the store and bytes fetched, for the summary.
    pub(super) fn fetched(&self) -> Option<(u64, u64)> {
        self.remote.as_ref().map(|r| {
            (
                r.requests.load(Ordering::Relaxed),
                r.fetched.load(Ordering::Relaxed),
            )
        })
    }

    pub(super) fn volume_count(&self) -> Option<u64> {
        match &self.kind {
            SourceKind::Archive(_) => None,
            SourceKind::Volumes { volumes, .. } => Some(volumes.count()),
        }
    }

    /// The file (or object) holding tape byte `offset`, and the offset inside it.
    pub(super) fn position(&self, offset: u64) -> (PathBuf, u64) {
        match &self.kind {
            SourceKind::Archive(_) => (PathBuf::from(&self.place), offset),
            SourceKind::Volumes { volumes, names, .. } => {
                let part = volumes.part_of(offset);
                let name = names
                    .name(volumes, part)
                    .map(|n| lossy(&n))
                    .unwrap_or_else(|_| format!("volume {part}"));
                (
                    Path::new(&self.place).join(name),
                    offset - (part - 1) * volumes.size(),
                )
            }
        }
    }

    /// The error for a header read back that is not the catalog's.
    pub(super) fn foreign(&self, offset: u64, e: &Entry) -> Error {
        let (path, at) = self.position(offset);
        let what = match &self.kind {
            SourceKind::Archive(_) => "archive".to_string(),
            SourceKind::Volumes { volumes, .. } => format!("volume {}", volumes.part_of(offset)),
        };
        Error::Volume {
            path,
            problem: format!(
                "byte {at}: the header of {} is not the catalog's: not this tape's {what}, \
                 or damaged",
                e.display_path()
            ),
        }
    }

    /// The pieces of tape range `[offset, offset + len)`: (part, offset in it, length,
    /// offset in the range). Only ranges whose volumes were found needed are asked for.
    fn pieces(&self, offset: u64, len: u64) -> Vec<(u64, u64, u64, u64)> {
        match &self.kind {
            SourceKind::Archive(_) => vec![(0, offset, len, 0)],
            SourceKind::Volumes { volumes, .. } => volumes
                .slices(offset, offset + len)
                .iter()
                .map(|s| (s.part, s.volume_offset, s.length, s.range_offset))
                .collect(),
        }
    }

    /// Where part `part` is (any part for an archive), its size, where it starts in the
    /// tape, and its path (or URL) for messages.
    fn backing(&self, part: u64) -> (&Backing, u64, u64, PathBuf) {
        match &self.kind {
            SourceKind::Archive(backing) => (backing, u64::MAX, 0, PathBuf::from(&self.place)),
            SourceKind::Volumes {
                volumes,
                names,
                open,
            } => {
                let name = names
                    .name(volumes, part)
                    .map(|n| lossy(&n))
                    .unwrap_or_default();
                let (start, end) = volumes.window(part).unwrap_or((0, 0));
                (
                    &open[&part],
                    end - start,
                    start,
                    Path::new(&self.place).join(name),
                )
            }
        }
    }

    /// Reads tape bytes `[offset, offset + buf.len())`.
    pub(super) fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        for (part, at, len, into) in self.pieces(offset, buf.len() as u64) {
            let (backing, size, start, path) = self.backing(part);
            let into = into as usize;
            let out = &mut buf[into..into + len as usize];
            match backing {
                Backing::Local(file) => file
                    .read_exact_at(out, at)
                    .map_err(|e| Error::io(path, e))?,
                Backing::Remote(key) => {
                    let remote = self.remote.as_ref().expect("a remote source");
                    let (size, volume) = match &self.kind {
                        SourceKind::Archive(_) => (self.total, None),
                        SourceKind::Volumes { volumes, .. } => {
                            (size, Some(format!("{part}/{}", volumes.count())))
                        }
                    };
                    remote.read(key, size, start, volume.as_deref(), at, out)?;
                }
            }
        }
        Ok(())
    }

    /// Copies tape bytes `[offset, offset + len)` to the end of `out` inside the kernel
    /// (`copy_file_range`). `Ok(false)` when it cannot (another filesystem, bytes in a
    /// store), before anything was copied.
    pub(super) fn copy_to(&self, offset: u64, len: u64, out: &File) -> Result<bool> {
        if self.is_remote() {
            return Ok(false);
        }
        let mut first = true;
        for (part, mut at, len, _) in self.pieces(offset, len) {
            let (Backing::Local(file), _, _, path) = self.backing(part) else {
                return Ok(false);
            };
            let end = at + len;
            while at < end {
                let want = (end - at).min(1 << 30) as usize;
                match rustix::fs::copy_file_range(file, Some(&mut at), out, None, want) {
                    Ok(0) => {
                        return Err(Error::Volume {
                            path,
                            problem: format!("ends before byte {end}: cut while restoring"),
                        });
                    }
                    Ok(_) => first = false,
                    Err(
                        rustix::io::Errno::XDEV
                        | rustix::io::Errno::INVAL
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::OPNOTSUPP,
                    ) if first => return Ok(false),
                    Err(e) => return Err(Error::io(path, e.into())),
                }
            }
        }
        Ok(true)
    }
}

/// The volumes that hold the tape ranges `ranges`.
fn needed_parts(volumes: &Volumes, ranges: &[(u64, u64)]) -> BTreeSet<u64> {
    let mut needed = BTreeSet::new();
    for &(start, end) in ranges {
        needed.extend(volumes.part_of(start)..=volumes.part_of(end - 1));
    }
    needed
}

/// Reads the needed ranges of the tape front to back through one buffer.
#[derive(Default)]
pub(super) struct SeqReader {
    buf: Vec<u8>,
    /// Tape offset of `buf[0]`.
    start: u64,
}

impl SeqReader {
    /// Up to `len` bytes (at least one) of the tape from `offset`, not reading past
    /// `limit` (the end of the needed range).
    fn bytes(&mut self, source: &Source<'_>, offset: u64, len: usize, limit: u64) -> Result<&[u8]> {
        let end = self.start + self.buf.len() as u64;
        if offset < self.start || offset >= end {
            let want = (limit.saturating_sub(offset)).min(READ_CHUNK as u64) as usize;
            let want = want.max(len.min(READ_CHUNK));
            self.buf.resize(want, 0);
            self.start = offset;
            source.read_exact_at(offset, &mut self.buf)?;
        }
        let at = (offset - self.start) as usize;
        let n = len.min(self.buf.len() - at);
        Ok(&self.buf[at..at + n])
    }

    /// Tape bytes `[from, to)` (`limit`: the end of the needed range they lie in) in
    /// chunks, each added to `hasher` and given to `sink`.
    pub(super) fn each_chunk(
        &mut self,
        source: &Source<'_>,
        (from, to, limit): (u64, u64, u64),
        hasher: &mut Option<ContentHasher>,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut pos = from;
        while pos < to {
            let want = (to - pos).min(READ_CHUNK as u64) as usize;
            let chunk = self.bytes(source, pos, want, limit)?;
            if let Some(h) = hasher.as_mut() {
                h.update(chunk);
            }
            sink(chunk)?;
            pos += chunk.len() as u64;
        }
        Ok(())
    }
}
