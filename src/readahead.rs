//! Reading ahead across files on a cold cache.
//!
//! A tape is read one file after another, and each read waits for the disk: on a cold
//! cache (a folder streamed once, straight from the disk) the disk then serves one request
//! at a time where it could serve many. Whoever reads the tape in order — the player, the
//! mount server while its reads are sequential — tells a [`ReadAhead`] where it is. Once
//! opens (or reads) show that the cache is cold, a dispatcher walks the catalog ahead of
//! that position and [`WORKERS`] threads open the files there and `posix_fadvise(WILLNEED)`
//! their content (all of it or its head, see [`Reach`]) in pieces of at most [`PIECE`]
//! bytes: at most [`AHEAD_PIECES`] pieces and [`AHEAD_BYTES`] tape bytes ahead of the
//! position, never past the end of the range being read.
//!
//! Why hints on descriptors opened by a few threads: opening a file reads its inode, which
//! waits for the disk too, so the opens must overlap, and one thread per open in flight is
//! the simplest way to get that with plain system calls. The content then goes to the page
//! cache, where the reader takes it from: no buffer of ours holds it (the memory of the
//! process does not grow with the window) and the reader's check-after-read is untouched.
//! Measured on the 100,000-file tree (623 MB) from a cold cache (`scripts/bench.sh`): the
//! stream took 1.45 s with these hints against 5.17 s without, ahead of 16 parallel `cat`s
//! (2.14 s), so a pool of threads reading into buffers, or io_uring (which also needs a
//! crate or unsafe code), had nothing left to win here.
//!
//! Only hints: nothing read here is handed on, and failures are ignored. While the cache
//! is warm it costs a sleeping thread.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread::Thread;
use std::time::Duration;

use std::os::fd::BorrowedFd;

use crate::catalog::Catalog;
use crate::entry::{Entry, Kind, Ordinal};
use crate::layout::content_start;
use crate::source::{ParentDir, open_in_parent};

/// An open (or a small read) served by the caches takes about a µs; one that waits for the
/// disk, tens of µs. Measured here on the 100,000-file tree, each open and read of the
/// stream timed: warm, the median was 0 µs and no 32 events in a row had more than 2 over
/// this; cold, the median was 24 µs, and 16 of 32 were over it by the 30th event. (A
/// count of slow events over the whole run, the first rule, also fired on warm runs, a
/// few preempted events at a time, and reading ahead on a warm cache costs a quarter.)
const SLOW: Duration = Duration::from_micros(20);
/// Bytes per second a read from the page cache copies, at the least.
const CACHE_RATE: u64 = 4 << 30;
/// Of the last 32 opens and reads, how many slow ones say the cache is cold.
const COLD_OF_32: u32 = 16;
/// Threads opening files ahead: opening reads the inode, which waits, so one thread would
/// ask for one file at a time.
const WORKERS: usize = 8;
/// Pieces handed to the workers beyond the reader's position, at most: small files are
/// many to a MiB, and a mount's reader has a few MiB of requests in flight. (Descriptors
/// are not held for them: each worker holds one, only for its `fadvise`.)
const AHEAD_PIECES: usize = 1024;
/// How far beyond the reader's position the workers may go, in tape bytes: the page cache
/// read ahead stays within this.
const AHEAD_BYTES: u64 = 64 << 20;
/// Bytes of content asked for at once: a small file whole, a large one piece by piece as
/// the reader moves on.
const PIECE: u64 = 2 << 20;
/// Catalog rows read at once (the connection is not held while waiting).
const BATCH: usize = 256;
/// How long the dispatcher sleeps when nobody wakes it.
const IDLE: Duration = Duration::from_millis(50);

/// `TARTAPE_PREFETCH`: `auto` (the default: once the cache is found cold), `always`
/// (e.g. for a network filesystem whose cached opens are slow too), `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    Always,
    Never,
}

impl Mode {
    fn from_env() -> Mode {
        match std::env::var("TARTAPE_PREFETCH").as_deref() {
            Ok("always") => Mode::Always,
            Ok("never") => Mode::Never,
            _ => Mode::Auto,
        }
    }
}

/// How much of each file is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// All of it, piece by piece as the reader moves on: the player reads a file with one
    /// request at a time, so only the kernel's readahead would otherwise be in flight.
    /// (Cold, the large tree streamed in 3.6 s with this, 4.7 s with `Heads`, 4.2 s with
    /// no hints at all.)
    Whole,
    /// Its first piece: the mount's server already has several requests of a large file in
    /// flight (the kernel's readahead of `archive.tar`, served by several threads), and
    /// hints on top of them only competed: cold, the large tree's `cat` took 3.6–4.0 s
    /// with this, 4.8–5.5 s with `Whole`, 4.1–4.7 s with no hints.
    Heads,
}

/// What a reader of the tape and the read-ahead threads share.
pub(crate) struct ReadAhead {
    mode: Mode,
    reach: Reach,
    /// Tape offset up to which the reader has read.
    position: AtomicU64,
    /// Bumped when the reader starts reading in order somewhere else; 0: not yet.
    run: AtomicU64,
    /// Reading is over: the threads end.
    done: AtomicBool,
    /// The cache was found cold: reading ahead is on (from now on).
    cold: AtomicBool,
    /// The last 32 opens and reads, one bit each (the newest lowest): set when it was slow.
    slow: AtomicU32,
    /// The dispatcher, to wake when there is something to do.
    dispatcher: OnceLock<Thread>,
    /// Tape ranges of the pieces handed out, in order.
    #[cfg(test)]
    asked: Mutex<Vec<(u64, u64)>>,
}

/// A range of a file's content to ask of the disk.
struct Piece {
    entry: Entry,
    from: u64,
    len: u64,
    /// Tape offset of the piece's end: once the reader is past it, it is not worth asking.
    end: u64,
}

/// How a walk of the catalog ended.
enum Walked {
    /// Reading is over.
    Done,
    /// The reader moved elsewhere: walk again from its position.
    Restart,
    /// Everything up to the end of the range was asked for.
    End,
}

impl ReadAhead {
    /// Idle until a run starts ([`ReadAhead::start_run`]) and the cache is found cold
    /// (or `TARTAPE_PREFETCH=always`).
    pub(crate) fn new(reach: Reach) -> ReadAhead {
        ReadAhead::with_mode(Mode::from_env(), reach)
    }

    fn with_mode(mode: Mode, reach: Reach) -> ReadAhead {
        ReadAhead {
            mode,
            reach,
            position: AtomicU64::new(0),
            run: AtomicU64::new(0),
            done: AtomicBool::new(false),
            cold: AtomicBool::new(mode == Mode::Always),
            slow: AtomicU32::new(0),
            dispatcher: OnceLock::new(),
            #[cfg(test)]
            asked: Mutex::new(Vec::new()),
        }
    }

    /// `TARTAPE_PREFETCH=never`: [`ReadAhead::serve`] returns at once.
    pub(crate) fn is_off(&self) -> bool {
        self.mode == Mode::Never
    }

    /// The reader opened a file in `took`: an inode read from the disk (not the cache)
    /// takes longer than [`SLOW`]; [`COLD_OF_32`] such of the last 32 opens and reads turn
    /// reading ahead on.
    pub(crate) fn opened(&self, took: Duration) {
        if self.cold.load(Ordering::Relaxed) {
            return;
        }
        let slow = u32::from(took > SLOW);
        let shift = |bits: u32| (bits << 1) | slow;
        let before = self
            .slow
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                Some(shift(bits))
            })
            .unwrap_or_else(|bits| bits);
        if shift(before).count_ones() >= COLD_OF_32 && !self.cold.swap(true, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// The reader read `len` bytes of content in `took`: slower than a copy from the page
    /// cache ([`SLOW`] plus [`CACHE_RATE`]) means they came from the disk. A tree of a few
    /// large files needs this signal: it has too few opens to show a cold cache.
    pub(crate) fn read(&self, len: usize, took: Duration) {
        let copy = Duration::from_nanos(len as u64 * 1_000_000_000 / CACHE_RATE);
        self.opened(took.saturating_sub(copy));
    }

    /// The reader starts reading in order at tape offset `at`.
    pub(crate) fn start_run(&self, at: u64) {
        self.position.store(at, Ordering::Release);
        self.run.fetch_add(1, Ordering::AcqRel);
        self.wake();
    }

    /// The reader has read up to tape offset `to`.
    pub(crate) fn advance(&self, to: u64) {
        self.position.fetch_max(to, Ordering::AcqRel);
        if self.cold.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    /// Reading is over: [`ReadAhead::serve`] returns soon.
    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.wake();
    }

    /// How many runs started, and the reader's position.
    #[cfg(test)]
    pub(crate) fn state(&self) -> (u64, u64) {
        (
            self.run.load(Ordering::Acquire),
            self.position.load(Ordering::Acquire),
        )
    }

    fn wake(&self) {
        if let Some(dispatcher) = self.dispatcher.get() {
            dispatcher.unpark();
        }
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Reads ahead in the tape of `catalog`, whose source root is `root`, never past tape
    /// offset `end`, until [`ReadAhead::finish`]: this thread dispatches, and starts the
    /// workers once the cache is found cold. (The tape hands over these two, through
    /// `Tape::read_ahead`: nothing here needs more of it.)
    pub(crate) fn serve(&self, catalog: &Catalog, root: BorrowedFd<'_>, end: u64) {
        if self.is_off() {
            return;
        }
        let _ = self.dispatcher.set(std::thread::current());
        while !(self.cold.load(Ordering::Acquire) && self.run.load(Ordering::Acquire) > 0) {
            if self.is_done() {
                return;
            }
            std::thread::park_timeout(IDLE);
        }
        log::debug!("reading the files ahead (the cache was found cold)");
        let (send, receive) = mpsc::sync_channel::<Piece>(AHEAD_PIECES);
        let receive = Mutex::new(receive);
        std::thread::scope(|scope| {
            for _ in 0..WORKERS {
                let receive = &receive;
                let spawned = std::thread::Builder::new()
                    .name("tape-readahead".into())
                    .spawn_scoped(scope, move || self.work(root, receive));
                if spawned.is_err() {
                    break;
                }
            }
            self.dispatch(catalog, end, &send);
            // Ends the workers.
            drop(send);
        });
    }

    /// Walks the catalog from the reader's position, again each time it moves elsewhere,
    /// until reading is over.
    fn dispatch(&self, catalog: &Catalog, end: u64, send: &mpsc::SyncSender<Piece>) {
        loop {
            let run = self.run.load(Ordering::Acquire);
            match self.walk(catalog, end, run, send) {
                Walked::Done => return,
                Walked::Restart => {}
                Walked::End => {
                    // Until the reader moves elsewhere.
                    while self.run.load(Ordering::Acquire) == run {
                        if self.is_done() {
                            return;
                        }
                        std::thread::park_timeout(IDLE);
                    }
                }
            }
        }
    }

    /// Hands out the pieces of content from the reader's position to `end`, each once
    /// there is room for it in the window.
    fn walk(
        &self,
        catalog: &Catalog,
        end: u64,
        run: u64,
        send: &mpsc::SyncSender<Piece>,
    ) -> Walked {
        let from = self.position.load(Ordering::Acquire);
        let Some(mut next) = catalog.offsets().entry_at(from) else {
            return Walked::End;
        };
        // Tape end offsets of the pieces handed out that the reader has not passed.
        let mut asked = VecDeque::with_capacity(AHEAD_PIECES);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            let read = catalog.for_each_from(next, |entry| {
                batch.push(entry);
                Ok(batch.len() < BATCH)
            });
            let Some(last) = batch.last().filter(|_| read.is_ok()) else {
                return Walked::End;
            };
            next = Ordinal(last.ordinal.0 + 1);
            for entry in batch.drain(..) {
                if entry.kind != Kind::File || entry.size == 0 {
                    if entry.start_offset >= end {
                        return Walked::End;
                    }
                    continue;
                }
                let content = content_start(&entry);
                let size = match self.reach {
                    Reach::Whole => entry.size,
                    Reach::Heads => entry.size.min(PIECE),
                };
                let mut at = 0;
                while at < size {
                    if content + at >= end {
                        return Walked::End;
                    }
                    let len = PIECE.min(size - at);
                    let piece_end = content + at + len;
                    // Until there is room in the window, or the reader is past the piece.
                    loop {
                        if self.is_done() {
                            return Walked::Done;
                        }
                        if self.run.load(Ordering::Acquire) != run {
                            return Walked::Restart;
                        }
                        let position = self.position.load(Ordering::Acquire);
                        if piece_end.saturating_add(AHEAD_BYTES) < position {
                            // Far behind the reader: the catalog rows between are not
                            // worth walking.
                            return Walked::Restart;
                        }
                        while asked.front().is_some_and(|&e| e <= position) {
                            asked.pop_front();
                        }
                        if piece_end <= position {
                            break;
                        }
                        if asked.len() < AHEAD_PIECES && content + at < position + AHEAD_BYTES {
                            asked.push_back(piece_end);
                            #[cfg(test)]
                            self.asked.lock().unwrap().push((content + at, piece_end));
                            let piece = Piece {
                                entry: entry.clone(),
                                from: at,
                                len,
                                end: piece_end,
                            };
                            if send.send(piece).is_err() {
                                return Walked::Done;
                            }
                            break;
                        }
                        std::thread::park_timeout(IDLE);
                    }
                    at += len;
                }
            }
        }
    }

    /// A worker: opens each file handed out and asks the kernel for the piece.
    fn work(&self, root: BorrowedFd<'_>, receive: &Mutex<mpsc::Receiver<Piece>>) {
        let mut parent = ParentDir::default();
        loop {
            let next = receive.lock().map(|r| r.recv());
            let Ok(Ok(piece)) = next else { break };
            if piece.end <= self.position.load(Ordering::Acquire) {
                continue;
            }
            if let Ok(file) = open_in_parent(root, &mut parent, &piece.entry.rel_path) {
                let _ = rustix::fs::fadvise(
                    &file,
                    piece.from,
                    NonZeroU64::new(piece.len),
                    rustix::fs::Advice::WillNeed,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::BLOCK;
    use crate::record::TapeRecorder;
    use crate::source::{default_catalog, open_root};
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::Instant;

    /// What `Tape::read_ahead` hands over: the catalog and the source root.
    struct Recorded {
        _dir: tempfile::TempDir,
        catalog: Catalog,
        root: OwnedFd,
    }

    impl Recorded {
        fn serve(&self, ahead: &ReadAhead, end: u64) {
            ahead.serve(&self.catalog, self.root.as_fd(), end);
        }

        fn total_size(&self) -> u64 {
            self.catalog.offsets().total_size()
        }
    }

    /// 1,500 small files, a large one and 100 small ones after it.
    fn recorded_tree() -> Recorded {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in ["a", "c"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        for i in 0..1500 {
            std::fs::write(src.join(format!("a/{i:04}")), [7u8; 100]).unwrap();
        }
        std::fs::write(src.join("b"), vec![1u8; (5 << 20) + 100]).unwrap();
        for i in 0..100 {
            std::fs::write(src.join(format!("c/{i:03}")), [9u8; 3000]).unwrap();
        }
        TapeRecorder::new(&src).commit().unwrap();
        let catalog = Catalog::open(&default_catalog(&src)).unwrap();
        let (root, _) = open_root(&src.canonicalize().unwrap()).unwrap();
        Recorded {
            _dir: dir,
            catalog,
            root,
        }
    }

    /// The pieces handed out, once no more come for a while.
    fn settled(ahead: &ReadAhead) -> Vec<(u64, u64)> {
        let start = Instant::now();
        let mut last = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let asked = ahead.asked.lock().unwrap().clone();
            if asked.len() == last || start.elapsed() > Duration::from_secs(10) {
                return asked;
            }
            last = asked.len();
        }
    }

    fn content_of(tape: &Recorded, arc_path: &[u8]) -> (u64, u64) {
        let entry = tape.catalog.find(arc_path).unwrap().unwrap();
        let start = content_start(&entry);
        (start, start + entry.size)
    }

    #[test]
    fn the_window_is_bounded_follows_the_reader_and_stops_at_the_end() {
        let tape = recorded_tree();
        let (big_start, big_end) = content_of(&tape, b"src/b");
        let (c0, _) = content_of(&tape, b"src/c/000");
        let (c50, _) = content_of(&tape, b"src/c/050");
        let end = c50 - BLOCK;
        for reach in [Reach::Whole, Reach::Heads] {
            let ahead = ReadAhead::with_mode(Mode::Always, reach);
            ahead.start_run(0);
            std::thread::scope(|scope| {
                scope.spawn(|| tape.serve(&ahead, end));
                // The reader does not move: the window fills, and stops.
                let asked = settled(&ahead);
                assert_eq!(asked.len(), AHEAD_PIECES, "{reach:?}");
                assert!(asked.windows(2).all(|w| w[0].1 <= w[1].0), "in tape order");
                // It moves to the large file: all of it is asked for (or its head), and
                // the files after it up to the end of the range, not beyond.
                ahead.advance(big_start);
                let asked = settled(&ahead);
                let big: Vec<_> = asked
                    .iter()
                    .filter(|p| p.0 >= big_start && p.1 <= big_end)
                    .collect();
                match reach {
                    Reach::Whole => {
                        assert_eq!(big.len(), 3);
                        assert_eq!((big[0].0, big[2].1), (big_start, big_end));
                    }
                    Reach::Heads => assert_eq!(*big, [&(big_start, big_start + PIECE)]),
                }
                let after: Vec<_> = asked.iter().filter(|p| p.0 >= c0).collect();
                assert_eq!(after.len(), 50, "{reach:?}: the files of c/ before the end");
                assert!(asked.iter().all(|p| p.0 < end), "past the end");
                ahead.finish();
            });
        }
    }

    #[test]
    fn the_cache_is_cold_when_16_of_the_last_32_events_waited() {
        let cold = |events: &[(usize, u64)]| {
            let ahead = ReadAhead::with_mode(Mode::Auto, Reach::Whole);
            for &(len, micros) in events {
                let took = Duration::from_micros(micros);
                match len {
                    0 => ahead.opened(took),
                    len => ahead.read(len, took),
                }
            }
            ahead.cold.load(Ordering::Acquire)
        };
        // Opens: exactly 20 µs is not slow; 15 slow of 32 is not enough, 16 is.
        assert!(!cold(&[(0, 20); 32]));
        assert!(!cold(&[[(0, 21)].repeat(15), [(0, 1)].repeat(17)].concat()));
        assert!(cold(&[[(0, 1)].repeat(16), [(0, 21)].repeat(16)].concat()));
        // Slow events long ago do not count.
        assert!(!cold(
            &[
                [(0, 90)].repeat(15),
                [(0, 1)].repeat(40),
                [(0, 90)].repeat(15)
            ]
            .concat()
        ));
        // Reads: 1 MiB in 200 µs is a copy from the page cache (244 µs allowed, plus 20);
        // in 2 ms it waited for the disk.
        assert!(!cold(&[(1 << 20, 200); 32]));
        assert!(!cold(&[(1 << 20, 260); 32]));
        assert!(cold(&[(1 << 20, 2000); 16]));
        assert!(
            cold(&[(1 << 20, 600); 16]),
            "1 MiB in 600 µs: slower than 4 GiB/s"
        );
        assert!(cold(&[(4096, 60); 16]));
    }

    #[test]
    fn nothing_is_asked_until_the_cache_is_found_cold() {
        let tape = recorded_tree();
        let ahead = ReadAhead::with_mode(Mode::Auto, Reach::Whole);
        ahead.start_run(0);
        std::thread::scope(|scope| {
            scope.spawn(|| tape.serve(&ahead, tape.total_size()));
            // Warm: fast events, and a few slow ones among them (a preempted thread).
            for i in 0..1000 {
                ahead.opened(Duration::from_micros(if i % 20 == 0 { 500 } else { 2 }));
                ahead.read(1 << 20, Duration::from_micros(200));
            }
            assert!(settled(&ahead).is_empty(), "asked with a warm cache");
            // Cold: half the events wait.
            for i in 0..32 {
                ahead.opened(Duration::from_micros(if i % 2 == 0 { 60 } else { 5 }));
            }
            assert_eq!(settled(&ahead).len(), AHEAD_PIECES);
            ahead.finish();
        });
        let never = ReadAhead::with_mode(Mode::Never, Reach::Whole);
        never.start_run(0);
        never.opened(Duration::from_secs(1));
        tape.serve(&never, tape.total_size());
    }
}
