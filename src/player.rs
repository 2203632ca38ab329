//! Playing a tape: a byte range turned into events (SPEC §4), read on the calling thread
//! or on a second one, and written to a file or a pipe.
//!
//! Content bytes are handed on only after the file they were read from was checked with
//! an `fstat` taken after the read; nothing of a source file is handed on by reference
//! (no `splice`), and what `copy_file_range` copied into a regular file is cut off again
//! if the check after it fails. Whatever was emitted before an error is a correct prefix.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use md5::{Digest, Md5};

use crate::digest::{ContentHasher, hex};
use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::header::Head;
use crate::layout::end_offset;
use crate::readahead::{Reach, ReadAhead};
use crate::source::ParentDir;
use crate::tape::{
    Tape, broken, check_not_grown, check_open_file, compare_digest, grew, read_content,
    read_content_probing,
};

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
        /// The entry about to be played, as the catalog recorded it.
        entry: &'a Entry,
        /// Tape offset of the entry's first byte (its first header), even when resumed.
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
        /// The regular file whose content this is.
        entry: &'a Entry,
        /// The source file, open and checked; read it at `offset`, not at its cursor.
        file: &'a File,
        /// Offset in `file` of the range's first byte.
        offset: u64,
        /// Bytes in the range, all of which the sink must deliver.
        len: u64,
    },
    /// After an entry's last byte.
    FileEnd {
        /// The entry just played.
        entry: &'a Entry,
        /// Tape offset one past the entry's padding: the next entry's start, or the footer's.
        end_offset: u64,
        /// MD5 of the content when the whole file was streamed in this run.
        md5: Option<String>,
    },
    /// After the footer's last byte: only when the range reaches the end of the tape.
    TapeCompleted {
        /// Bytes of the whole tape, footer included.
        total_size: u64,
    },
}

impl Event<'_> {
    /// The event as SPEC §4's JSON object (`file_start`, `file_end`, `tape_completed`;
    /// arc paths that are not UTF-8 lossily); `None` for `Data` and `Content`.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        Some(match self {
            Event::FileStart {
                entry,
                start_offset,
                resumed,
            } => serde_json::json!({
                "type": "file_start",
                "path": entry.display_path(),
                "start_offset": start_offset,
                "resumed": resumed,
            }),
            Event::FileEnd {
                entry,
                end_offset,
                md5,
            } => serde_json::json!({
                "type": "file_end",
                "path": entry.display_path(),
                "end_offset": end_offset,
                "md5": md5,
            }),
            Event::TapeCompleted { total_size } => {
                serde_json::json!({"type": "tape_completed", "total_size": total_size})
            }
            Event::Data(_) | Event::Content { .. } => return None,
        })
    }
}

/// Where `stream -o FILE --continue` goes on ([`Tape::continue_file`]).
#[derive(Debug)]
pub enum Continuation {
    /// FILE already holds the whole range.
    Complete,
    /// FILE, opened for writing at its end, holds the first `have` bytes of the range.
    From {
        /// FILE, positioned at its end.
        file: File,
        /// How many bytes of the range it holds.
        have: u64,
    },
}

impl Tape {
    /// Prepares to continue a copy of tape range `[start, end)` in the file at `path`, as
    /// `curl -C -` and `wget -c` do: its last 512 bytes (all of it when shorter) must equal
    /// the tape's bytes there. A missing file is created and holds nothing yet. A file
    /// that is longer than the range, or whose tail differs, is refused and left as it is.
    pub fn continue_file(&self, path: &Path, start: u64, end: u64) -> Result<Continuation> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let io_err = |e| Error::io(path, e);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "{}: --continue needs a regular file",
                path.display()
            )));
        }
        let have = meta.len();
        let want = end - start;
        if have > want {
            return Err(Error::Volume {
                path: path.to_path_buf(),
                problem: format!(
                    "cannot continue: it has {have} bytes, more than the {want} to write \
                     (not this tape, or another range of it)"
                ),
            });
        }
        let n = have.min(512);
        let mut theirs = vec![0u8; n as usize];
        file.read_exact_at(&mut theirs, have - n).map_err(io_err)?;
        let mut ours = vec![0u8; n as usize];
        let read = self.read_at(start + have - n, &mut ours)?;
        if read as u64 != n || theirs != ours {
            return Err(Error::Volume {
                path: path.to_path_buf(),
                problem: format!(
                    "cannot continue: its last {n} bytes are not the tape's bytes at offset {} \
                     (not this tape, or changed); the file was left as it is",
                    start + have - n
                ),
            });
        }
        if have == want {
            return Ok(Continuation::Complete);
        }
        file.seek(SeekFrom::Start(have)).map_err(io_err)?;
        Ok(Continuation::From { file, have })
    }
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
#[derive(Clone, Copy)]
pub struct TapePlayer<'t> {
    tape: &'t Tape,
    md5: bool,
    content_ranges: Option<u64>,
}

impl<'t> TapePlayer<'t> {
    /// A player of `tape`; also [`Tape::player`].
    pub fn new(tape: &'t Tape) -> TapePlayer<'t> {
        TapePlayer {
            tape,
            md5: true,
            content_ranges: None,
        }
    }
}

/// Output buffer of [`TapePlayer::write_to`]: large enough to batch many small entries
/// into one write; content ranges at least this long go to a regular file by
/// `copy_file_range` (smaller ones cost less to copy through the buffer).
const STREAM_BUFFER: usize = 128 << 10;

impl TapePlayer<'_> {
    /// Writes tape bytes `[start, start + len)` (to the end when `len` is `None`) to `out`,
    /// a regular file, a pipe or anything else that writes, named `name` in errors. The
    /// tape is read on a second thread while this one writes. Into a pipe, the pipe is
    /// grown so that tartape and its reader run side by side. Into a regular file (at its
    /// end), contents of 128 KiB and more are copied inside the kernel (`copy_file_range`)
    /// and checked after the copy.
    ///
    /// `observe` sees every event once its bytes were written: `Data` (the bytes written)
    /// and `Content` (a range copied) always, `FileStart`, `FileEnd` and `TapeCompleted`
    /// only with `events`. What was written before an error is a correct prefix of the
    /// tape, flushed.
    pub fn write_to<W: Write + AsFd>(
        &self,
        start: u64,
        len: Option<u64>,
        out: W,
        name: &Path,
        events: bool,
        mut observe: impl FnMut(&Event<'_>) -> Result<()>,
    ) -> Result<()> {
        let write_err = |e: io::Error| Error::io(name, e);
        let kind =
            rustix::fs::fstat(&out).map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode));
        if let Ok(rustix::fs::FileType::Fifo) = kind {
            // Best effort: the limit for users may be lower.
            let _ = rustix::pipe::fcntl_setpipe_size(&out, 1 << 20);
        }
        let regular = matches!(kind, Ok(rustix::fs::FileType::RegularFile));
        let anonymize = self.tape.meta().anonymize;
        let mut buf = BufWriter::with_capacity(STREAM_BUFFER, out);
        let player = TapePlayer {
            content_ranges: regular.then_some(STREAM_BUFFER as u64),
            ..*self
        };
        let played = player.play_ahead(start, len, events, |event| {
            match &event {
                Event::Content {
                    entry,
                    file,
                    offset,
                    len,
                } => {
                    // Everything before this range reaches the output first.
                    buf.flush().map_err(write_err)?;
                    copy_content(entry, file, *offset, *len, buf.get_ref().as_fd(), anonymize)?;
                }
                Event::Data(bytes) => buf.write_all(bytes).map_err(write_err)?,
                _ => {}
            }
            observe(&event)
        });
        let flushed = buf.flush().map_err(write_err);
        played.and(flushed)
    }
}

impl Tape {
    /// A player over this tape.
    pub fn player(&self) -> TapePlayer<'_> {
        TapePlayer::new(self)
    }
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
        self.play_to(start, len, &mut out, None)
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
        let ahead = &ReadAhead::new(Reach::Whole);
        ahead.start_run(start);
        let total = self.tape.total_size();
        let end = len.map_or(total, |l| start.saturating_add(l).min(total));
        std::thread::scope(|scope| {
            // On a cold cache, files ahead are asked of the disk early (see `readahead`).
            if !ahead.is_off() {
                let tape = self.tape;
                let _ = std::thread::Builder::new()
                    .name("tape-readahead".into())
                    .spawn_scoped(scope, move || tape.read_ahead(ahead, end));
            }
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
                    let played = self.play_to(start, len, &mut out, Some(ahead));
                    // What was read before an error is a correct prefix: it goes too.
                    let sent = out.send();
                    played.and(sent)
                })
                .map_err(|e| Error::io("<tape reader>", e))?;
            let mut delivered = Ok(());
            let mut written = start;
            for chunk in full_rx.iter() {
                delivered = chunk.deliver(&mut sink);
                written += chunk.filled as u64;
                ahead.advance(written);
                let _ = empty_tx.send(chunk.bytes);
                if delivered.is_err() {
                    break;
                }
            }
            // Ends the reader if it is still sending, and the read-ahead.
            drop(full_rx);
            ahead.finish();
            let played = reader
                .join()
                .unwrap_or_else(|_| Err(Error::io("<tape reader>", io::Error::other("panicked"))));
            // The sink's error first: the reader's is then only "the sink stopped".
            delivered.and(played)
        })
    }

    /// Plays into `out`: the body of [`TapePlayer::play`] and [`TapePlayer::play_ahead`].
    /// `ahead`, when given, hears when opening files finds the cache cold.
    fn play_to(
        &self,
        start: u64,
        len: Option<u64>,
        out: &mut impl Out,
        ahead: Option<&ReadAhead>,
    ) -> Result<()> {
        let tape = self.tape;
        let total = tape.total_size();
        if start > total {
            return Err(Error::Usage(format!(
                "offset {start} is past the end of the tape ({total} bytes)"
            )));
        }
        let end = len.map_or(total, |l| start.saturating_add(l).min(total));
        let offsets = tape.catalog().offsets();
        // From the start, the root entry is the first one played and checked.
        if start > 0 {
            tape.check_root()?;
        }
        let mut pos = start;
        let mut parent = ParentDir::default();
        if let Some(first) = offsets.entry_at(pos).filter(|_| pos < end) {
            tape.catalog().for_each_from(first, |entry| {
                pos = self.play_entry(&entry, pos, end, &mut parent, out, ahead)?;
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
        ahead: Option<&ReadAhead>,
    ) -> Result<u64> {
        let tape = self.tape;
        let anonymize = tape.meta().anonymize;
        let entry_end = end_offset(entry);
        let stop = end.min(entry_end);
        let resumed = pos > entry.start_offset;
        // A file is checked (fstat) after its content is read, before any of it is handed
        // on; one whose content is not read here is checked before leaving.
        let file = if entry.kind == Kind::File {
            let opening = std::time::Instant::now();
            let file = tape.open_file_in(parent, entry)?;
            if let Some(ahead) = ahead {
                ahead.opened(opening.elapsed());
            }
            Some(file)
        } else {
            tape.check_entry(entry).map_err(Error::from)?;
            None
        };
        out.event(Event::FileStart {
            entry,
            start_offset: entry.start_offset,
            resumed,
        })?;
        let head = Head::for_entry(entry);
        let content_start = entry.start_offset + head.byte_len();
        let content_end = content_start + entry.size;
        let mut at = pos;
        if at < content_start.min(stop) {
            let h = &head.as_bytes()[(at - entry.start_offset) as usize..];
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
                let reading = std::time::Instant::now();
                let read = read_content_probing(
                    f,
                    entry,
                    at - content_start,
                    &mut room[..n + usize::from(probe)],
                    n,
                )
                .map_err(|e| explain(entry, f, anonymize, e))?;
                if let Some(ahead) = ahead {
                    ahead.read(n, reading.elapsed());
                }
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
    use crate::tape::Tape;

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
}
