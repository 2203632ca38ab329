//! What a multipart upload has done so far, kept beside the catalog (`uploads/` in the
//! catalog's directory) so that the next run goes on from there (SPEC §9).
//!
//! One file per destination (endpoint, bucket, key), JSON Lines: the first line says which
//! upload it is (upload id, part size, the tape's fingerprint, the window of the tape);
//! each next line is one part the server confirmed (number, size, MD5, ETag). The file
//! is created whole (written beside, synced, renamed) and a part's line is appended with
//! one `write` and synced before the part counts as done: a run killed at any moment
//! leaves the lines of confirmed parts, and at worst a cut last line, which is ignored
//! (that part is then found in the server's list, and checked, or sent again).
//!
//! Beside it: `… .done` says which object this catalog completed at the destination (its
//! ETag), so that a run after it knows the object without reading the tape; `… .lock` is
//! held (`flock`) by the one run at a time that works on the destination.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::error::{Error, Result};

/// Which upload a state file is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The format of the file (1).
    pub tartape_upload: u32,
    /// Where the object goes.
    pub endpoint: String,
    /// Its bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// The server's id of the multipart upload.
    pub upload_id: String,
    /// Bytes of every part but the last.
    pub part_size: u64,
    /// The tape's fingerprint.
    pub fingerprint: String,
    /// The object's size.
    pub size: u64,
    /// Where the object starts in the tape (a volume's window), or `catalog` for the
    /// catalog copy: the same key with other bytes is never resumed.
    pub source: String,
    /// The id of the catalog the parts were read from: with another one (a recording of
    /// the same fingerprint, whose bytes may differ), no part is kept unread.
    #[serde(default)]
    pub catalog_id: String,
}

/// A part the server confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    /// Its size.
    pub size: u64,
    /// The MD5 of its bytes.
    pub md5: [u8; 16],
    /// The ETag the server gave it (its MD5 on most stores; not with some encryptions):
    /// what CompleteMultipartUpload names it by.
    pub etag: String,
}

/// One line per confirmed part.
#[derive(Debug, Serialize, Deserialize)]
struct PartLine {
    part: u32,
    size: u64,
    md5: String,
    etag: String,
}

/// The state of one upload, its file open for appending.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    /// Which upload.
    pub header: Header,
    /// The parts confirmed so far, by number.
    pub parts: BTreeMap<u32, Confirmed>,
    file: File,
}

/// The state file of the destination (`endpoint`, `bucket`, `key`) in `dir`.
pub fn path_for(dir: &Path, endpoint: &str, bucket: &str, key: &str) -> PathBuf {
    let id = Sha256::digest(format!("{endpoint}\n{bucket}\n{key}").as_bytes());
    dir.join(format!("{}.json", &hex(&id)[..24]))
}

/// The state files of a destination that earlier runs superseded (`… .superseded-N.json`):
/// uploads of another recording or part size, left on the server.
pub fn superseded(path: &Path) -> Vec<PathBuf> {
    let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{stem}.superseded-");
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

impl State {
    /// The state at `path`: `None` when there is none; a file that is not one is an error
    /// naming it (it is never overwritten unread).
    pub fn load(path: &Path) -> Result<Option<State>> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let bad = |why: String| {
            Error::Usage(format!(
                "{}: not an upload state of tartape ({why}); remove it to start the upload anew",
                path.display()
            ))
        };
        // Lines as bytes: the offsets cut at are the file's.
        let mut lines = text.split_inclusive(|&b| b == b'\n');
        let first = lines.next().unwrap_or_default();
        let header: Header = first
            .strip_suffix(b"\n")
            .and_then(|line| serde_json::from_slice(line).ok())
            .ok_or_else(|| bad("its first line is not a header".into()))?;
        // Bytes of whole, valid lines: a cut or bad line, and what follows, is cut off
        // (a line appended after it would be lost with it).
        let mut valid = first.len();
        if header.tartape_upload != 1 {
            return Err(bad(format!("format {}", header.tartape_upload)));
        }
        let mut parts = BTreeMap::new();
        for line in lines {
            // Only whole lines count: a run killed mid-write leaves a cut last one.
            let Some(line) = line.strip_suffix(b"\n") else {
                break;
            };
            let Ok(p) = serde_json::from_slice::<PartLine>(line) else {
                break;
            };
            let Some(md5) = unhex16(&p.md5) else { break };
            valid += line.len() + 1;
            parts.insert(
                p.part,
                Confirmed {
                    size: p.size,
                    md5,
                    etag: p.etag,
                },
            );
        }
        let file = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if (valid as u64) < text.len() as u64 {
            file.set_len(valid as u64).map_err(|e| Error::io(path, e))?;
        }
        Ok(Some(State {
            path: path.to_path_buf(),
            header,
            parts,
            file,
        }))
    }

    /// A new state at `path` with `header` and no part: written beside, synced, renamed
    /// over whatever was there.
    pub fn create(path: &Path, header: Header) -> Result<State> {
        let dir = path.parent().unwrap_or(Path::new("."));
        ensure_dir(dir)?;
        let mut line = serde_json::to_string(&header)
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
        line.push('\n');
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
            std::process::id()
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let written = f
            .write_all(line.as_bytes())
            .and_then(|()| f.sync_all())
            .and_then(|()| fs::rename(&tmp, path))
            .and_then(|()| File::open(dir)?.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
        let file = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(State {
            path: path.to_path_buf(),
            header,
            parts: BTreeMap::new(),
            file,
        })
    }

    /// Records part `number` as confirmed: its line is on the disk when this returns.
    pub fn confirm(&mut self, number: u32, part: Confirmed) -> Result<()> {
        let mut line = serde_json::to_string(&PartLine {
            part: number,
            size: part.size,
            md5: hex(&part.md5),
            etag: part.etag.clone(),
        })
        .map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.parts.insert(number, part);
        Ok(())
    }

    /// Where the state is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file aside as superseded (another upload of the destination starts).
    pub fn supersede(self) -> Result<PathBuf> {
        let stem = self
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("state")
            .to_string();
        for n in 1.. {
            let aside = self
                .path
                .with_file_name(format!("{stem}.superseded-{n}.json"));
            if !aside.exists() {
                fs::rename(&self.path, &aside).map_err(|e| Error::io(&self.path, e))?;
                return Ok(aside);
            }
        }
        unreachable!("some number is free")
    }

    /// Removes the state: the upload is complete, or aborted.
    pub fn remove(self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }
}

/// What a run that completed an object at a destination left: which recording, and the
/// ETag the object then had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The catalog's id.
    pub catalog_id: String,
    /// The object's size.
    pub size: u64,
    /// Its ETag (quotes removed), as HEAD gave it after the upload.
    pub etag: String,
}

impl Done {
    /// The record beside the state file `state`.
    fn path(state: &Path) -> PathBuf {
        state.with_extension("done")
    }

    /// The record of the destination whose state file is `state`, if one is there and
    /// reads (a record that does not is no record: the object is then compared).
    pub fn load(state: &Path) -> Option<Done> {
        let text = fs::read(Done::path(state)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the record (beside, then renamed over the old one; not synced: a record
    /// lost to a crash only means the object is compared once more).
    pub fn save(&self, state: &Path) -> Result<()> {
        let path = Done::path(state);
        let dir = path.parent().unwrap_or(Path::new("."));
        ensure_dir(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("done"),
            std::process::id()
        ));
        let text =
            serde_json::to_vec(self).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&path, e));
        }
        Ok(())
    }
}

/// Takes the lock of the destination whose state file is `state`, for as long as the
/// returned file is open; `what` names the destination when another run holds it.
pub fn lock(state: &Path, what: &str) -> Result<File> {
    let path = state.with_extension("lock");
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Usage(format!(
            "{what}: another tartape upload of it from this catalog is running (it holds {}); \
             let it finish, or stop it and run again",
            path.display()
        ))),
        Err(e) => Err(Error::io(&path, e.into())),
    }
}

/// Creates the state directory (mode 0700) if missing.
fn ensure_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "{}: not a directory; the upload keeps its state there",
            dir.display()
        ))),
        Err(_) => {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(dir, e))
        }
    }
}

/// 32 hex digits as 16 bytes.
pub fn unhex16(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            tartape_upload: 1,
            endpoint: "http://127.0.0.1:1".into(),
            bucket: "b".into(),
            key: "k".into(),
            upload_id: "u-1".into(),
            part_size: 5 << 20,
            fingerprint: "ab".repeat(32),
            size: 12 << 20,
            source: "tape 0".into(),
            catalog_id: "c".repeat(32),
        }
    }

    #[test]
    fn confirmed_parts_survive_and_a_cut_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("uploads"), "http://e", "b", "k");
        assert!(State::load(&path).unwrap().is_none());
        let mut s = State::create(&path, header()).unwrap();
        let part = |n: u8| Confirmed {
            size: 5 << 20,
            md5: [n; 16],
            etag: format!("etag-{n}"),
        };
        s.confirm(2, part(2)).unwrap();
        s.confirm(1, part(1)).unwrap();
        drop(s);
        // A run killed while appending part 3's line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"part\":3,\"size\":2097152,\"md5\":\"0303")
            .unwrap();
        let mut s = State::load(&path).unwrap().unwrap();
        assert_eq!(s.header, header());
        assert_eq!(s.parts.keys().copied().collect::<Vec<_>>(), [1, 2]);
        // The cut line is gone: a part confirmed now is read back with the others.
        s.confirm(3, part(3)).unwrap();
        drop(s);
        // A line with bytes that are not UTF-8 (a disk's garbage): cut at the file's own
        // offset, and what is confirmed after it is read back.
        let whole = fs::read(&path).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let md5 = "04".repeat(16);
        f.write_all(format!("{{\"part\":4,\"size\":1,\"md5\":\"{md5}\",\"etag\":\"").as_bytes())
            .unwrap();
        f.write_all(b"\xff\xfe\"}\n{\"part\":5,").unwrap();
        let mut s = State::load(&path).unwrap().unwrap();
        assert_eq!(fs::read(&path).unwrap(), whole);
        s.confirm(4, part(4)).unwrap();
        drop(s);
        let s = State::load(&path).unwrap().unwrap();
        assert_eq!(s.parts.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(s.parts[&1].md5, [1; 16]);
        assert_eq!(s.parts[&2].etag, "etag-2");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Superseded: moved aside, found again.
        let aside = s.supersede().unwrap();
        assert!(!path.exists());
        assert_eq!(superseded(&path), vec![aside]);
        assert_eq!(unhex16(&"0f".repeat(16)), Some([15; 16]));
        assert_eq!(unhex16("xyz"), None);
    }

    #[test]
    fn a_file_that_is_not_a_state_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        fs::write(&path, b"hello\n").unwrap();
        let e = State::load(&path).unwrap_err().to_string();
        assert!(e.contains("not an upload state"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"hello\n");
    }
}
