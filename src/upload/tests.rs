//! The upload's logic against a store in memory: what is sent, kept and completed across
//! runs. (Real servers, real faults and killed processes: `tests/upload.rs`.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::TapeRecorder;
use crate::s3::{ObjectInfo, PartInfo};

const MIB: u64 = 1 << 20;

/// An upload in progress: its key, metadata and parts.
type Pending = (String, Metadata, BTreeMap<u32, Vec<u8>>);

/// An object store in memory that logs every call and fails the calls it is told to.
#[derive(Default)]
struct MemoryStore {
    objects: Mutex<HashMap<String, (Vec<u8>, Metadata)>>,
    /// The ETags of objects put or completed (others': their MD5).
    multipart_etags: Mutex<HashMap<String, String>>,
    uploads: Mutex<HashMap<String, Pending>>,
    calls: Mutex<Vec<String>>,
    /// Calls (as logged) that fail once, with a final error.
    fail: Mutex<Vec<String>>,
    next_id: Mutex<u32>,
    /// ETags that are not the parts' MD5s (as with SSE-KMS): `opaque-MD5`.
    opaque: bool,
}

impl MemoryStore {
    /// The ETag of a part of these bytes.
    fn etag(&self, bytes: &[u8]) -> String {
        let md5 = hex(&Md5::digest(bytes));
        if self.opaque {
            format!("opaque-{md5}")
        } else {
            md5
        }
    }

    /// The ETag of an object whose MD5 (or multipart ETag) is `etag`.
    fn etag_of_object(&self, etag: String) -> String {
        if self.opaque {
            format!("opaque-{etag}")
        } else {
            etag
        }
    }

    fn log(&self, call: String) -> Result<()> {
        self.calls.lock().unwrap().push(call.clone());
        let mut fail = self.fail.lock().unwrap();
        if let Some(i) = fail.iter().position(|f| *f == call) {
            fail.remove(i);
            return Err(Error::Remote {
                endpoint: "mem".into(),
                bucket: "b".into(),
                code: "Injected".into(),
                status: 500,
                message: call,
            });
        }
        Ok(())
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn bytes(payload: &Payload<'_>) -> Result<Vec<u8>> {
        match payload {
            Payload::Bytes(b) => Ok(b.to_vec()),
            Payload::Stream { open, failed, .. } => {
                let mut out = Vec::new();
                let read = open().read_to_end(&mut out);
                if let Some(e) = failed.lock().unwrap().take() {
                    return Err(e);
                }
                read.map_err(|e| Error::io("<payload>", e))?;
                Ok(out)
            }
        }
    }
}

impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.log(format!("head {key}"))?;
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|(b, m)| ObjectInfo {
                size: b.len() as u64,
                etag: self
                    .multipart_etags
                    .lock()
                    .unwrap()
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| hex(&Md5::digest(b))),
                meta: m.meta.iter().cloned().collect(),
            }))
    }

    fn put(
        &self,
        key: &str,
        payload: &Payload<'_>,
        md5: &[u8; 16],
        meta: &Metadata,
    ) -> Result<String> {
        self.log(format!("put {key}"))?;
        let bytes = Self::bytes(payload)?;
        assert_eq!(&Md5::digest(&bytes)[..], md5, "Content-MD5");
        self.objects
            .lock()
            .unwrap()
            .insert(key.into(), (bytes, meta.clone()));
        let etag = self.etag_of_object(hex(md5));
        self.multipart_etags
            .lock()
            .unwrap()
            .insert(key.into(), etag.clone());
        Ok(etag)
    }

    fn create_upload(&self, key: &str, meta: &Metadata) -> Result<String> {
        self.log(format!("create {key}"))?;
        let mut n = self.next_id.lock().unwrap();
        *n += 1;
        let id = format!("up-{n}");
        self.uploads
            .lock()
            .unwrap()
            .insert(id.clone(), (key.into(), meta.clone(), BTreeMap::new()));
        Ok(id)
    }

    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        payload: &Payload<'_>,
        md5: &[u8; 16],
    ) -> Result<String> {
        self.log(format!("part {number}"))?;
        let bytes = Self::bytes(payload)?;
        assert_eq!(
            &Md5::digest(&bytes)[..],
            md5,
            "Content-MD5 of part {number}"
        );
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads.get_mut(upload_id).expect("a live upload");
        assert_eq!(upload.0, key);
        let etag = self.etag(&bytes);
        upload.2.insert(number, bytes);
        Ok(etag)
    }

    fn list_parts(&self, _key: &str, upload_id: &str) -> Result<Option<Vec<PartInfo>>> {
        self.log("list".into())?;
        Ok(self.uploads.lock().unwrap().get(upload_id).map(|u| {
            u.2.iter()
                .map(|(&number, b)| PartInfo {
                    number,
                    size: b.len() as u64,
                    etag: self.etag(b),
                })
                .collect()
        }))
    }

    fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<String> {
        self.log(format!("complete {key}"))?;
        let (k, meta, parts) = self.uploads.lock().unwrap().remove(upload_id).unwrap();
        assert_eq!(k, key);
        let md5s: Vec<[u8; 16]> = parts.values().map(|b| Md5::digest(b).into()).collect();
        for (n, (etag, bytes)) in etags.iter().zip(parts.values()).enumerate() {
            assert_eq!(*etag, self.etag(bytes), "ETag of part {}", n + 1);
        }
        let whole: Vec<u8> = parts.into_values().flatten().collect();
        self.objects
            .lock()
            .unwrap()
            .insert(key.into(), (whole, meta));
        let etag = self.etag_of_object(multipart_etag(&md5s));
        self.multipart_etags
            .lock()
            .unwrap()
            .insert(key.into(), etag.clone());
        Ok(etag)
    }

    fn abort(&self, _key: &str, upload_id: &str) -> Result<bool> {
        self.log(format!("abort {upload_id}"))?;
        Ok(self.uploads.lock().unwrap().remove(upload_id).is_some())
    }

    fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        _expect_etag: Option<&str>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<ObjectInfo> {
        let objects = self.objects.lock().unwrap();
        let (bytes, meta) = &objects[key];
        sink(&bytes[start as usize..end as usize])?;
        Ok(ObjectInfo {
            size: bytes.len() as u64,
            etag: hex(&Md5::digest(bytes)),
            meta: meta.meta.iter().cloned().collect(),
        })
    }
}

/// A recorded tree of about 13 MiB: three parts of 5 MiB.
fn tape() -> (tempfile::TempDir, Tape, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let big: Vec<u8> = (0..12 * MIB as u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("d/{i}")), vec![i as u8; 3000]).unwrap();
    }
    TapeRecorder::new(&src).commit().unwrap();
    let tape = Tape::discover(&src).unwrap();
    let mut bytes = vec![0u8; tape.total_size() as usize];
    tape.read_at(0, &mut bytes).unwrap();
    (dir, tape, bytes)
}

struct Run<'a> {
    store: &'a MemoryStore,
    dir: PathBuf,
    part_size: u64,
    warnings: Mutex<Vec<String>>,
}

impl<'a> Run<'a> {
    /// A run against `store` that keeps its states under `dir`, with parts of 5 MiB.
    fn new(store: &'a MemoryStore, dir: &tempfile::TempDir) -> Run<'a> {
        Run {
            store,
            dir: dir.path().join("uploads"),
            part_size: 5 * MIB,
            warnings: Mutex::new(Vec::new()),
        }
    }

    fn upload(&self, tape: &Tape) -> Result<ObjectSummary> {
        let stop = AtomicBool::new(false);
        let warn = |w: String| self.warnings.lock().unwrap().push(w);
        let uploader = Uploader {
            store: self.store,
            endpoint: "mem".into(),
            bucket: "b".into(),
            part_size: Some(self.part_size),
            jobs: 2,
            state_dir: self.dir.clone(),
            stop: &stop,
            progress: &|_| {},
            warn: &warn,
        };
        uploader.upload(&tape_object(tape, "k.tar".into()))
    }
}

fn sent_parts(calls: &[String]) -> Vec<String> {
    let mut parts: Vec<String> = calls
        .iter()
        .filter(|c| c.starts_with("part"))
        .cloned()
        .collect();
    parts.sort();
    parts
}

#[test]
fn an_interrupted_upload_sends_only_what_the_server_lacks() {
    let (dir, tape, bytes) = tape();
    let store = MemoryStore::default();
    let run = Run::new(&store, &dir);
    // Part 2 fails for good: parts 1 and 3 may be confirmed, the object is not made.
    store.fail.lock().unwrap().push("part 2".into());
    assert!(run.upload(&tape).is_err());
    assert!(store.objects.lock().unwrap().is_empty());
    let first = store.calls();
    assert!(first.contains(&"create k.tar".to_string()), "{first:?}");
    let confirmed_before: Vec<u32> = {
        let s = State::load(&run.dir.join(state::path_for(&run.dir, "mem", "b", "k.tar")))
            .unwrap()
            .unwrap();
        s.parts.keys().copied().collect()
    };
    assert!(!confirmed_before.contains(&2));
    // The next run lists the server's parts and sends only the others.
    let summary = run.upload(&tape).unwrap();
    let second = store.calls();
    assert!(
        !second.iter().any(|c| c.starts_with("create")),
        "{second:?}"
    );
    assert!(second.contains(&"list".to_string()));
    let resent = sent_parts(&second);
    for n in &confirmed_before {
        assert!(
            !resent.contains(&format!("part {n}")),
            "part {n} sent again: {second:?}"
        );
    }
    assert!(resent.contains(&"part 2".to_string()));
    assert_eq!(summary.parts, 3);
    assert_eq!(summary.parts_reused as usize, confirmed_before.len());
    assert_eq!(store.objects.lock().unwrap()["k.tar"].0, bytes);
    assert!(
        !state::path_for(&run.dir, "mem", "b", "k.tar").exists(),
        "state removed"
    );
    // Done: a third run finds the object and sends nothing.
    let again = run.upload(&tape).unwrap();
    assert!(again.already);
    assert_eq!(store.calls(), vec!["head k.tar".to_string()]);
}

#[test]
fn a_part_the_state_lacks_is_compared_not_resent_and_a_lost_upload_starts_anew() {
    let (dir, tape, bytes) = tape();
    let store = MemoryStore::default();
    let run = Run::new(&store, &dir);
    store.fail.lock().unwrap().push("complete k.tar".into());
    assert!(run.upload(&tape).is_err());
    store.calls();
    // Killed between the server's answer and the state's line: the line is missing.
    let path = state::path_for(&run.dir, "mem", "b", "k.tar");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains("\"part\":3")).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let summary = run.upload(&tape).unwrap();
    let calls = store.calls();
    assert!(sent_parts(&calls).is_empty(), "{calls:?}");
    assert_eq!(summary.parts_reused, 3);
    assert_eq!(store.objects.lock().unwrap()["k.tar"].0, bytes);

    // An upload the server lost (aborted, expired): a new one, said once.
    store.objects.lock().unwrap().clear();
    store.fail.lock().unwrap().push("part 3".into());
    assert!(run.upload(&tape).is_err());
    store.uploads.lock().unwrap().clear();
    store.calls();
    run.upload(&tape).unwrap();
    let calls = store.calls();
    assert!(calls.contains(&"create k.tar".to_string()), "{calls:?}");
    assert_eq!(sent_parts(&calls).len(), 3);
    assert!(
        run.warnings
            .lock()
            .unwrap()
            .iter()
            .any(|w| w.contains("gone from the server")),
        "{:?}",
        run.warnings.lock().unwrap()
    );
    assert_eq!(store.objects.lock().unwrap()["k.tar"].0, bytes);
}

/// `tape`'s tree recorded again, after big.bin's first byte is changed and its mtime put
/// back (or unchanged): the same fingerprint (paths, sizes, mtimes), other bytes (at the
/// start of part 1).
fn record_again(dir: &tempfile::TempDir, first_byte: Option<u8>) -> (Tape, Vec<u8>) {
    use std::io::Write;
    let src = dir.path().join("src");
    if let Some(b) = first_byte {
        let path = src.join("big.bin");
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all(&[b]).unwrap();
        file.set_modified(mtime).unwrap();
    }
    TapeRecorder::new(&src).force(true).commit().unwrap();
    let tape = Tape::discover(&src).unwrap();
    let mut bytes = vec![0u8; tape.total_size() as usize];
    tape.read_at(0, &mut bytes).unwrap();
    (tape, bytes)
}

/// The fingerprint does not say the bytes: an object (or an unfinished upload) of another
/// recording counts only if its bytes are this tape's.
#[test]
fn another_recording_of_the_same_fingerprint_is_compared_not_trusted() {
    let (dir, tape, first) = tape();
    let store = MemoryStore::default();
    let run = Run::new(&store, &dir);
    run.upload(&tape).unwrap();
    let (changed, bytes) = record_again(&dir, Some(7));
    assert_eq!(changed.fingerprint(), tape.fingerprint());
    assert!(bytes != first, "the bytes changed");
    let summary = run.upload(&changed).unwrap();
    assert!(!summary.already);
    assert!(store.objects.lock().unwrap()["k.tar"].0 == bytes);
    // Recorded again, unchanged: the object's multipart ETag says it holds these bytes.
    let (same, again) = record_again(&dir, None);
    assert!(again == bytes);
    store.calls();
    assert!(run.upload(&same).unwrap().already);
    assert_eq!(store.calls(), ["head k.tar"]);

    // An unfinished upload of one recording goes on under another, but its parts are read
    // again and compared: part 1 (where big.bin's first byte changed) is sent again.
    store.objects.lock().unwrap().clear();
    store.fail.lock().unwrap().push("part 3".into());
    assert!(run.upload(&same).is_err());
    let before = sent_parts(&store.calls());
    assert!(before.contains(&"part 1".to_string()), "{before:?}");
    let (changed, bytes) = record_again(&dir, Some(8));
    assert_eq!(changed.fingerprint(), tape.fingerprint());
    run.upload(&changed).unwrap();
    let calls = store.calls();
    assert!(!calls.iter().any(|c| c.starts_with("create")), "{calls:?}");
    let resent = sent_parts(&calls);
    assert!(resent.contains(&"part 1".to_string()), "{calls:?}");
    assert!(resent.contains(&"part 3".to_string()), "{calls:?}");
    assert!(store.objects.lock().unwrap()["k.tar"].0 == bytes);
}

/// A completed object is known again by the record its run left (without reading the
/// tape), else by its ETag compared with the tape's bytes; where the ETag says nothing
/// (SSE-KMS) and there is no record, it is uploaded again.
#[test]
fn a_completed_object_is_known_by_its_record_or_its_etag() {
    let (dir, tape, bytes) = tape();
    for opaque in [false, true] {
        let store = MemoryStore {
            opaque,
            ..MemoryStore::default()
        };
        let run = Run::new(&store, &dir);
        run.upload(&tape).unwrap();
        store.calls();
        let record = state::path_for(&run.dir, "mem", "b", "k.tar").with_extension("done");
        assert!(record.exists());
        assert!(run.upload(&tape).unwrap().already);
        assert_eq!(store.calls(), ["head k.tar"]);
        std::fs::remove_file(&record).unwrap();
        let again = run.upload(&tape).unwrap();
        assert_eq!(again.already, !opaque, "opaque ETags: {opaque}");
        let calls = store.calls();
        assert_eq!(
            sent_parts(&calls).len(),
            if opaque { 3 } else { 0 },
            "{calls:?}"
        );
        assert!(record.exists(), "the record is made again");
        assert!(store.objects.lock().unwrap()["k.tar"].0 == bytes);
        // A record of another ETag (the object was replaced since) is no record.
        std::fs::write(
            &record,
            std::fs::read_to_string(&record)
                .unwrap()
                .replace("\"etag\":\"", "\"etag\":\"x"),
        )
        .unwrap();
        assert_eq!(run.upload(&tape).unwrap().already, !opaque);
    }
}

/// One run at a time works on a destination.
#[test]
fn a_second_run_on_the_same_destination_stops() {
    let (dir, tape, _) = tape();
    let store = MemoryStore::default();
    let run = Run::new(&store, &dir);
    let path = state::path_for(&run.dir, "mem", "b", "k.tar");
    let held = state::lock(&path, "s3://b/k.tar").unwrap();
    let e = run.upload(&tape).unwrap_err().to_string();
    assert!(e.contains("s3://b/k.tar: another tartape upload"), "{e}");
    assert!(store.calls().is_empty());
    drop(held);
    run.upload(&tape).unwrap();
}

#[test]
fn a_state_of_another_part_size_is_never_reused_and_abort_ends_both() {
    let (dir, tape, _) = tape();
    let store = MemoryStore::default();
    let mut run = Run::new(&store, &dir);
    store.fail.lock().unwrap().push("part 2".into());
    assert!(run.upload(&tape).is_err());
    run.part_size = 6 * MIB;
    store.fail.lock().unwrap().push("part 1".into());
    assert!(run.upload(&tape).is_err());
    let warned = run.warnings.lock().unwrap().join("\n");
    assert!(
        warned.contains("upload up-1") && warned.contains("--abort"),
        "{warned}"
    );
    assert_eq!(store.uploads.lock().unwrap().len(), 2);
    let stop = AtomicBool::new(false);
    let uploader = Uploader {
        store: &store,
        endpoint: "mem".into(),
        bucket: "b".into(),
        part_size: None,
        jobs: 1,
        state_dir: run.dir.clone(),
        stop: &stop,
        progress: &|_| {},
        warn: &|_| {},
    };
    let mut aborted = uploader.abort("k.tar").unwrap();
    aborted.sort();
    assert_eq!(aborted, ["up-1", "up-2"]);
    assert!(store.uploads.lock().unwrap().is_empty());
    assert!(uploader.abort("k.tar").unwrap().is_empty());
    let states = std::fs::read_dir(&run.dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("json".as_ref()))
        .count();
    assert_eq!(states, 0);
}

/// Parts whose ETag is not their MD5 (SSE-KMS, SSE-C): kept across runs by their ETag,
/// and completed with it.
#[test]
fn parts_with_opaque_etags_are_kept_by_their_etag() {
    let (dir, tape, bytes) = tape();
    let store = MemoryStore {
        opaque: true,
        ..MemoryStore::default()
    };
    let run = Run::new(&store, &dir);
    store.fail.lock().unwrap().push("part 3".into());
    assert!(run.upload(&tape).is_err());
    store.calls();
    let summary = run.upload(&tape).unwrap();
    let calls = store.calls();
    assert_eq!(sent_parts(&calls), ["part 3"], "{calls:?}");
    assert_eq!(summary.parts_reused, 2);
    assert_eq!(store.objects.lock().unwrap()["k.tar"].0, bytes);
}

#[test]
fn multipart_etags_are_the_md5_of_the_md5s() {
    // Two parts "a" and "b": md5(md5("a") ‖ md5("b")), "-2".
    let md5s = [Md5::digest(b"a").into(), Md5::digest(b"b").into()];
    let mut joined = Vec::new();
    joined.extend_from_slice(&Md5::digest(b"a"));
    joined.extend_from_slice(&Md5::digest(b"b"));
    assert_eq!(
        multipart_etag(&md5s),
        format!("{}-2", hex(&Md5::digest(&joined)))
    );
    assert!(is_multipart_etag(&multipart_etag(&md5s)));
    assert!(!is_multipart_etag(&hex(&Md5::digest(b"a"))));
    assert!(is_md5(&hex(&Md5::digest(b"a"))) && !is_md5("xyz"));
}
