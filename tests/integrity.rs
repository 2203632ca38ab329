//! The T0 promise tried the way attackers and careless users would (SPEC §2, §3): no
//! changed byte ever leaves tartape, nothing outside the source is ever read, nothing is
//! ever written through a symlink or over something that is not a catalog.
//!
//! Each test reproduces one hole with real processes: writers changing files during a
//! stream and during mount reads, symlink swaps, catalog edits through SQLite, FIFOs,
//! device nodes, a second `record --force` under a live mount.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A temporary directory holding a source tree `src/`; its catalog is `c.db` beside it.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let tree = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(tree.src()).unwrap();
        tree
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn src(&self) -> PathBuf {
        self.path("src")
    }

    fn catalog(&self) -> PathBuf {
        self.path("c.db")
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.src().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    /// `tartape CMD src --catalog c.db ARGS…`, run in the temporary directory.
    fn cmd(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = tartape();
        c.arg(cmd)
            .arg("src")
            .arg("--catalog")
            .arg("c.db")
            .args(args)
            .current_dir(self.dir.path());
        c
    }

    fn record(&self, args: &[&str]) {
        assert_success(&run(&mut self.cmd("record", args)), "tartape record");
    }

    /// The whole tape, through `-o`.
    fn tape(&self) -> Vec<u8> {
        let out = self.path("whole.tar");
        assert_success(
            &run(&mut self.cmd("stream", &["-o", out.to_str().unwrap()])),
            "tartape stream",
        );
        fs::read(out).unwrap()
    }

    /// `[start, end)` of an entry's content, from `tartape locate`.
    fn content(&self, arc_path: &str) -> (u64, u64) {
        let out = run(&mut self.cmd("locate", &[arc_path]));
        assert_success(&out, "tartape locate");
        let text = stdout(&out);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("content: ["))
            .unwrap_or_else(|| panic!("no content range in {text}"));
        let (a, b) = line.trim_end_matches(')').split_once(", ").unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    }
}

/// The failure of a stream: non-zero exit, one line naming the cause, and what it wrote
/// is a strict prefix of the tape.
fn assert_prefix_and_error(out: &Output, written: &[u8], good: &[u8], cause: &str) {
    assert_one_line_error(out, 1, cause);
    assert!(written.len() < good.len(), "the whole tape was written");
    if let Some(at) = written.iter().zip(good).position(|(a, b)| a != b) {
        panic!(
            "output differs from the tape at byte {at} (of {} written)",
            written.len()
        );
    }
}

fn pwrite(path: &Path, offset: u64, data: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
}

// ---------------------------------------------------------------------------------------
// 1. A file changed while the stream reads it.
// ---------------------------------------------------------------------------------------

const BIG: usize = 64 << 20;

/// A tree with one large file between small ones.
fn tree_with_big_file() -> Tree {
    let t = Tree::new();
    t.write("a.txt", b"before\n");
    t.write("big.bin", &Rng(7).bytes(BIG));
    t.write("z.txt", b"after\n");
    t
}

#[test]
fn stream_never_writes_bytes_of_a_file_changed_while_it_is_read() {
    type Change = fn(&Path);
    let changes: [(&str, Change); 2] = [
        // 4 KiB written in place far ahead of the reader.
        ("in place", |p| pwrite(p, 48 << 20, &[b'X'; 4096])),
        // Truncated and written again, same size, other bytes.
        ("rewritten", |p| fs::write(p, Rng(8).bytes(BIG)).unwrap()),
    ];
    for (how, change) in changes {
        for events in [false, true] {
            let t = tree_with_big_file();
            t.record(&[]);
            let good = t.tape();
            let args: &[&str] = if events {
                &["--events", "events.jsonl"]
            } else {
                &[]
            };
            let mut child = t
                .cmd("stream", args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = child.stdout.take().unwrap();
            let mut written = vec![0u8; 8 << 20];
            out.read_exact(&mut written).unwrap();
            // The stream is a few MiB into big.bin, the change is far ahead of it.
            change(&t.src().join("big.bin"));
            out.read_to_end(&mut written).unwrap();
            let output = wait_output(child, "tartape stream");
            println!("{how}, events {events}: {} bytes written", written.len());
            assert_prefix_and_error(&output, &written, &good, "integrity error: src/big.bin");
        }
    }
}

/// Descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `tartape stream` of `t`, reading ahead from the start, its output in a pipe.
fn stream_reading_ahead(t: &Tree) -> std::process::Child {
    t.cmd("stream", &[])
        .env("TARTAPE_PREFETCH", "always")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// With the files ahead asked of the disk early (`TARTAPE_PREFETCH=always`, what a cold
/// cache turns on), the stream keeps a bounded number of descriptors however many files
/// lie ahead, its bytes are the tape's, and a file changed after it was read ahead is
/// still caught: nothing of it is written, what was written is a correct prefix.
#[test]
fn files_read_ahead_keep_descriptors_bounded_and_changes_after_still_caught() {
    let t = Tree::new();
    let mut rng = Rng(31);
    for i in 0..3000 {
        t.write(
            &format!("d{:02}/f{i:05}", i % 30),
            &rng.bytes(1 + (i * 37) % 9000),
        );
    }
    t.write("zz-last", &rng.bytes(100_000));
    t.record(&[]);
    let good = t.tape();
    let whole = run(t.cmd("stream", &[]).env("TARTAPE_PREFETCH", "always"));
    assert_success(&whole, "stream with prefetching");
    assert!(whole.stdout == good, "prefetching changed the bytes");

    let mut child = stream_reading_ahead(&t);
    let mut out = child.stdout.take().unwrap();
    let mut written = vec![0u8; 256 << 10];
    out.read_exact(&mut written).unwrap();
    // The reader is blocked on the pipe; the prefetchers run ahead as far as they may.
    let mut most = 0;
    for _ in 0..50 {
        most = most.max(open_fds(child.id()));
        thread::sleep(Duration::from_millis(4));
    }
    // stdio, the catalog (file and connections), the reader's file and directory, and
    // at most one file and one directory per prefetching thread: not 3,000 files.
    assert!(
        most < 48,
        "{most} descriptors open while 3,000 files lie ahead"
    );
    // Changed after it was (probably) read ahead; same size, mtime put back.
    let last = t.src().join("zz-last");
    let mtime = mtime_of(&last);
    pwrite(&last, 50_000, b"changed");
    set_mtime(&last, mtime.0, mtime.1);
    out.read_to_end(&mut written).unwrap();
    let output = wait_output(child, "tartape stream");
    assert_prefix_and_error(&output, &written, &good, "integrity error: src/zz-last");
}

/// A tree of 100,000 files streams with the files ahead asked of the disk and a number of
/// descriptors that stays bounded all the way, with the bytes of a stream without it.
#[test]
fn a_stream_of_100000_files_read_ahead_keeps_its_descriptors_bounded() {
    let t = Tree::new();
    let mut rng = Rng(47);
    for i in 0..100_000 {
        t.write(
            &format!("d{:03}/f{i:06}", i % 200),
            &rng.bytes((i * 7919) % 700),
        );
    }
    t.record(&[]);
    let plain = run(t.cmd("stream", &[]).env("TARTAPE_PREFETCH", "never"));
    assert_success(&plain, "stream without reading ahead");

    let mut child = stream_reading_ahead(&t);
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                most = most.max(open_fds(pid));
                thread::sleep(Duration::from_millis(1));
            }
            most
        })
    };
    let mut out = child.stdout.take().unwrap();
    let mut streamed = Vec::with_capacity(plain.stdout.len());
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        streamed.extend_from_slice(&chunk[..n]);
        // Now and then the reader lags, and the read-ahead runs as far as it may.
        if streamed.len() % (16 << 20) < n {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let output = wait_output(child, "tartape stream");
    done.store(true, Ordering::Relaxed);
    let most = sampler.join().unwrap();
    assert_success(&output, "stream reading ahead");
    assert!(streamed == plain.stdout, "reading ahead changed the bytes");
    // As in the test above: stdio, the catalog, the reader's file and directory, one
    // file and one directory per read-ahead thread.
    assert!(
        most < 48,
        "{most} descriptors open, streaming 100,000 files"
    );
}

#[test]
fn stream_into_a_file_keeps_a_correct_prefix_when_the_source_changes_during_the_copy() {
    // `-o FILE` copies large contents inside the kernel; a writer that puts the mtime
    // back changes them during the copy.
    let mut failures = 0;
    for round in 0..4u64 {
        let t = tree_with_big_file();
        t.record(&[]);
        let good = t.tape();
        let big = t.src().join("big.bin");
        let mtime = mtime_of(&big);
        let stop = Arc::new(AtomicBool::new(false));
        let child = t
            .cmd("stream", &["-o", "out.tar"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let writer = {
            let (stop, big) = (Arc::clone(&stop), big.clone());
            thread::spawn(move || {
                let f = OpenOptions::new().write(true).open(&big).unwrap();
                let mut rng = Rng(round + 11);
                thread::sleep(Duration::from_millis(round * 3));
                while !stop.load(Ordering::Relaxed) {
                    let at = rng.below((BIG - 4096) as u64);
                    f.write_all_at(&[b'X'; 4096], at).unwrap();
                    set_mtime(&big, mtime.0, mtime.1);
                }
            })
        };
        let output = wait_output(child, "tartape stream -o");
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let written = fs::read(t.path("out.tar")).unwrap_or_default();
        if output.status.success() {
            assert_eq!(written, good, "round {round}: exit 0 with another tape");
        } else {
            failures += 1;
            assert_prefix_and_error(&output, &written, &good, "integrity error: src/big.bin");
        }
    }
    assert!(
        failures > 0,
        "the writer never changed the file during a stream"
    );
}

// ---------------------------------------------------------------------------------------
// 2. A change after tartape exited must not reach the reader of the pipe.
// ---------------------------------------------------------------------------------------

#[test]
fn a_change_after_the_stream_exited_never_reaches_the_pipe_reader() {
    let t = Tree::new();
    t.write("f.bin", &Rng(3).bytes(512 << 10));
    t.record(&[]);
    let good = t.tape();
    let mut child = t
        .cmd("stream", &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads yet: the whole tape (~0.5 MiB) sits in the (1 MiB) pipe.
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tartape did not finish");
        thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "tartape stream failed: {status}");
    let f = t.src().join("f.bin");
    let mtime = mtime_of(&f);
    pwrite(&f, 100 << 10, &[b'X'; 64 << 10]);
    set_mtime(&f, mtime.0, mtime.1);
    let mut read = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut read).unwrap();
    assert!(
        read == good,
        "the reader got bytes written after tartape exited 0"
    );
}

// ---------------------------------------------------------------------------------------
// 3. The mount must never serve bytes that were never in the snapshot.
// ---------------------------------------------------------------------------------------

/// Four readers read `target.bin` through the mount while a writer writes 1 MiB of `X`
/// into it and puts the bytes and the mtime back, in a loop. Returns (reads that gave
/// bytes of the snapshot, reads that failed, reads that gave other bytes).
fn readers_against_a_put_back_writer(direct_io: bool) -> (u64, u64, u64) {
    let t = Tree::new();
    let original = Rng(5).bytes(4 << 20);
    t.write("target.bin", &original);
    t.write("other.txt", b"other\n");
    t.record(&[]);
    let good = Arc::new(t.tape());
    let (start, end) = t.content("src/target.bin");
    fs::create_dir(t.path("mnt")).unwrap();
    let catalog = t.catalog();
    let mut args = vec!["--catalog", catalog.to_str().unwrap()];
    if direct_io {
        args.push("--direct-io");
    }
    let mounted = Mounted::new(&t.src(), &t.path("mnt"), t.dir.path(), &args);
    let archive = mounted.mnt.join("archive.tar");
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let readers: Vec<_> = (0..4u64)
        .map(|i| {
            let (archive, good, stop, counts) = (
                archive.clone(),
                Arc::clone(&good),
                Arc::clone(&stop),
                Arc::clone(&counts),
            );
            thread::spawn(move || {
                let f = File::open(&archive).unwrap();
                let mut rng = Rng(100 + i);
                while !stop.load(Ordering::Relaxed) {
                    let at = start + rng.below((end - start) >> 12) * 4096;
                    let len = ((end - at) as usize).min(256 << 10);
                    if !direct_io {
                        // Drop the cached pages, so that the read reaches the server.
                        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
                    }
                    let which = match read_range(&f, at, len) {
                        Ok(b) if b == good[at as usize..at as usize + len] => 0,
                        Ok(_) => 2,
                        Err(_) => 1,
                    };
                    counts[which].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let target = t.src().join("target.bin");
    let mtime = mtime_of(&target);
    let writer = OpenOptions::new().write(true).open(&target).unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        writer.write_all_at(&[b'X'; 1 << 20], 1 << 20).unwrap();
        writer
            .write_all_at(&original[1 << 20..2 << 20], 1 << 20)
            .unwrap();
        set_mtime(&target, mtime.0, mtime.1);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    drop(mounted);
    let c = |i: usize| counts[i].load(Ordering::Relaxed);
    (c(0), c(1), c(2))
}

#[test]
fn mount_never_serves_bytes_that_were_never_in_the_snapshot() {
    if !can_run(
        "mount_never_serves_bytes_that_were_never_in_the_snapshot",
        Needs {
            fuse: true,
            ..Needs::default()
        },
    ) {
        return;
    }
    for direct_io in [true, false] {
        let (good, failed, wrong) = readers_against_a_put_back_writer(direct_io);
        println!("direct_io {direct_io}: {good} good, {failed} EIO, {wrong} wrong");
        assert_eq!(wrong, 0, "direct_io {direct_io}: reads served other bytes");
        assert!(
            failed > 0,
            "direct_io {direct_io}: the change was never seen"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Recording the catalog again under a live mount.
// ---------------------------------------------------------------------------------------

#[test]
fn a_catalog_recorded_again_under_a_live_mount_never_mixes_two_tapes() {
    if !can_run(
        "a_catalog_recorded_again_under_a_live_mount_never_mixes_two_tapes",
        Needs {
            fuse: true,
            ..Needs::default()
        },
    ) {
        return;
    }
    let t = Tree::new();
    for i in 0..200u64 {
        t.write(&format!("f{i:03}.bin"), &Rng(i + 1).bytes(5000));
    }
    t.record(&[]);
    let old = Arc::new(t.tape());
    let (start, end) = (0, old.len() as u64 - 1024);
    fs::create_dir(t.path("mnt")).unwrap();
    let mounted = Mounted::new(
        &t.src(),
        &t.path("mnt"),
        t.dir.path(),
        &[
            "--catalog",
            t.catalog().to_str().unwrap(),
            "--direct-io",
            "--threads",
            "8",
        ],
    );
    let archive = mounted.mnt.join("archive.tar");
    // One read before anything changes: the server holds one connection to the catalog.
    let f = File::open(&archive).unwrap();
    read_range(&f, 0, 512).unwrap();
    // Other bytes, same sizes, other mtimes; recorded again into the same catalog.
    for i in 0..200u64 {
        t.write(&format!("f{i:03}.bin"), &Rng(i + 1000).bytes(5000));
    }
    t.record(&["--force"]);
    let new = t.tape();
    // Now many readers at once, over every file: the server needs more connections.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..8u64)
        .map(|i| {
            let (archive, stop) = (archive.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let f = File::open(&archive).unwrap();
                let mut rng = Rng(200 + i);
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let at = start + rng.below((end - start) >> 12) * 4096;
                    seen.push((at, read_range(&f, at, 4096).ok()));
                }
                seen
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (mut from_old, mut failed, mut from_new) = (0, 0, 0);
    for r in readers {
        for (at, got) in r.join().unwrap() {
            let range = at as usize..at as usize + 4096;
            match got {
                None => failed += 1,
                Some(b) if b == old[range.clone()] => from_old += 1,
                Some(b) if b == new[range] => from_new += 1,
                Some(_) => panic!("a read at {at} served bytes of neither tape"),
            }
        }
    }
    println!("{from_old} reads of the old tape, {failed} EIO, {from_new} of the new one");
    assert_eq!(
        from_new, 0,
        "the mounted tape served bytes of the new recording"
    );
    assert!(
        failed > 0,
        "the changed file was never read after the change"
    );
    drop(mounted);
}

// ---------------------------------------------------------------------------------------
// 5, 6. A tape is bound to the directory it was recorded from.
// ---------------------------------------------------------------------------------------

/// Records a tree whose files have the names, sizes and mtimes of those in `secret`,
/// swaps a symlink to `secret` in for the tree, and streams all but the root entry.
fn resume_into_a_swapped_root(secret: &Path, names: &[&str]) {
    let t = Tree::new();
    let mut secrets = Vec::new();
    for name in names {
        let real = secret.join(name);
        let meta = fs::metadata(&real).unwrap();
        t.write(name, &vec![b'.'; meta.len() as usize]);
        set_mtime(&t.src().join(name), meta.mtime(), meta.mtime_nsec());
        secrets.push(fs::read(&real).unwrap());
    }
    t.record(&[]);
    fs::rename(t.src(), t.path("src.moved")).unwrap();
    symlink(secret, t.src()).unwrap();
    for args in [
        &["--offset", "512"][..],
        &["--offset", "1024", "--length", "1536"],
    ] {
        let mut all = args.to_vec();
        all.extend(["-o", "o.tar"]);
        let _ = fs::remove_file(t.path("o.tar"));
        let out = run(&mut t.cmd("stream", &all));
        assert_one_line_error(&out, 1, "not the directory this tape was recorded from");
        let written = fs::read(t.path("o.tar")).unwrap_or_default();
        for s in &secrets {
            assert!(
                s.is_empty()
                    || !written
                        .windows(s.len().min(64))
                        .any(|w| w == &s[..s.len().min(64)]),
                "secret bytes were served"
            );
        }
    }
    // From the start too, and verify says why.
    let out = run(&mut t.cmd("stream", &["-o", "o.tar"]));
    assert_one_line_error(&out, 1, "not the directory this tape was recorded from");
    let out = run(&mut t.cmd("verify", &[]));
    assert_one_line_error(&out, 1, "not the directory this tape was recorded from");
}

#[test]
fn a_resumed_stream_of_a_swapped_root_reads_nothing_outside_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(
        secret.join("shadow"),
        b"root:$6$secret-hash:19000:0:99999:7:::\n",
    )
    .unwrap();
    resume_into_a_swapped_root(&secret, &["passwd", "shadow"]);
}

#[test]
fn a_resumed_stream_of_a_root_swapped_for_etc_never_reads_etc_shadow() {
    if !Path::new("/etc/shadow").exists() {
        skip(
            "a_resumed_stream_of_a_root_swapped_for_etc_never_reads_etc_shadow",
            "no /etc/shadow",
        );
        return;
    }
    if !can_run(
        "a_resumed_stream_of_a_root_swapped_for_etc_never_reads_etc_shadow",
        Needs {
            root: true,
            ..Needs::default()
        },
    ) {
        return;
    }
    resume_into_a_swapped_root(Path::new("/etc"), &["passwd", "shadow"]);
}

#[test]
fn a_catalog_used_on_a_twin_tree_is_refused() {
    let t = Tree::new();
    t.write("a.bin", &Rng(1).bytes(3000));
    t.write("d/b.bin", &Rng(2).bytes(70_000));
    t.record(&[]);
    let status = Command::new("cp")
        .arg("-a")
        .arg(t.src())
        .arg(t.path("twin"))
        .status()
        .unwrap();
    assert!(status.success());
    for rel in ["a.bin", "d/b.bin"] {
        let p = t.path("twin").join(rel);
        let mtime = mtime_of(&p);
        let inverted: Vec<u8> = fs::read(&p).unwrap().iter().map(|b| !b).collect();
        fs::write(&p, inverted).unwrap();
        set_mtime(&p, mtime.0, mtime.1);
    }
    for args in [&[][..], &["--offset", "1024"][..]] {
        let mut all = vec!["stream", "twin", "--catalog", "c.db", "-o", "o.tar"];
        all.extend_from_slice(args);
        let _ = fs::remove_file(t.path("o.tar"));
        let out = run(tartape().args(&all).current_dir(t.dir.path()));
        assert_one_line_error(&out, 1, "not the directory this tape was recorded from");
        assert!(fs::read(t.path("o.tar")).unwrap_or_default().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// 7. Catalog fields never reach the output unchecked.
// ---------------------------------------------------------------------------------------

fn small_tree() -> Tree {
    let t = Tree::new();
    t.write("a.txt", b"hello\n");
    t.write("d/x", &[b'x'; 600]);
    t.write("d/y.bin", &Rng(4).bytes(5000));
    t.write("e/f/g.bin", &Rng(6).bytes(70_000));
    symlink("a.txt", t.src().join("l")).unwrap();
    // Long entries (PAX headers): a 120-byte directory name, a 280-byte path, a
    // 150-byte symlink target.
    t.write(&format!("{}/long", "p".repeat(120)), b"in a long name\n");
    let q = "q".repeat(90);
    t.write(&format!("{q}/{q}/{q}/f"), &Rng(8).bytes(900));
    symlink("t".repeat(150), t.src().join("m")).unwrap();
    t
}

/// Streams with a tampered copy of the catalog: the stream must fail, and stop before
/// the first byte that would differ.
fn stream_with_edited_catalog(t: &Tree, good: &[u8], sql: &str) {
    fs::copy(t.catalog(), t.path("bad.db")).unwrap();
    let conn = rusqlite::Connection::open(t.path("bad.db")).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    let _ = fs::remove_file(t.path("o.tar"));
    let out = run(tartape()
        .args(["stream", "src", "--catalog", "bad.db", "-o", "o.tar"])
        .current_dir(t.dir.path()));
    let written = fs::read(t.path("o.tar")).unwrap_or_default();
    assert_prefix_and_error(&out, &written, good, "corrupted catalog");
}

#[test]
fn catalog_fields_never_reach_the_output_unchecked() {
    let t = small_tree();
    t.record(&[]);
    let good = t.tape();
    stream_with_edited_catalog(
        &t,
        &good,
        "UPDATE entries SET mtime = mtime + 1000 WHERE ordinal = 2",
    );
    stream_with_edited_catalog(&t, &good, "UPDATE entries SET mode = 511 WHERE ordinal = 1");
    stream_with_edited_catalog(
        &t,
        &good,
        "UPDATE entries SET link_target = CAST('/etc/passwd' AS BLOB) WHERE kind = 2",
    );
    // A long entry's record length, and the layout's copy of it.
    stream_with_edited_catalog(
        &t,
        &good,
        "UPDATE entries SET pax_size = pax_size + 512 WHERE pax_size > 0",
    );
    stream_with_edited_catalog(&t, &good, "UPDATE layout SET long = zeroblob(16)");
    // The owner's name on a tape that keeps owners.
    let owned = small_tree();
    owned.record(&["--no-anonymize"]);
    let good = owned.tape();
    stream_with_edited_catalog(
        &owned,
        &good,
        "UPDATE entries SET uname = CAST('evil' AS BLOB)",
    );
}

/// The bytes of the catalog's pages that hold the entries' rows (the cell content area
/// of the `entries` table's pages: where a flipped bit changes a value).
fn row_bytes(catalog: &Path) -> std::ops::Range<usize> {
    let conn = rusqlite::Connection::open(catalog).unwrap();
    let int =
        |sql: &str| -> usize { conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize };
    let root = int("SELECT rootpage FROM sqlite_master WHERE name = 'entries'");
    let page_size = int("PRAGMA page_size");
    let bytes = fs::read(catalog).unwrap();
    let page = (root - 1) * page_size;
    // A small tree's table is one leaf page; its cells fill it from the end.
    assert_eq!(bytes[page], 0x0d, "entries is not a single leaf page");
    let cells = u16::from_be_bytes([bytes[page + 5], bytes[page + 6]]) as usize;
    page + cells..page + page_size
}

#[test]
fn a_flipped_bit_in_the_catalog_is_refused_or_harmless() {
    let t = small_tree();
    t.record(&[]);
    let good = t.tape();
    let catalog = fs::read(t.catalog()).unwrap();
    let rows = row_bytes(&t.catalog());
    let mut rng = Rng(2026);
    let (mut refused, mut harmless) = (0, 0);
    for i in 0..80u64 {
        let mut flipped = catalog.clone();
        // Most flips where the rows are, some anywhere.
        let at = if i % 4 == 0 {
            rng.below(catalog.len() as u64) as usize
        } else {
            rows.start + rng.below(rows.len() as u64) as usize
        };
        flipped[at] ^= 1 << rng.below(8);
        fs::write(t.path("flip.db"), &flipped).unwrap();
        let _ = fs::remove_file(t.path("o.tar"));
        let out = run(tartape()
            .args(["stream", "src", "--catalog", "flip.db", "-o", "o.tar"])
            .current_dir(t.dir.path()));
        let written = fs::read(t.path("o.tar")).unwrap_or_default();
        if out.status.success() {
            assert!(written == good, "byte {at}: exit 0 with another tape");
            harmless += 1;
        } else {
            let err = stderr(&out);
            assert!(
                err.starts_with("error: ") && err.trim_end().lines().count() == 1,
                "byte {at}: {err}"
            );
            assert!(good.starts_with(&written), "byte {at}: not a prefix");
            refused += 1;
        }
    }
    println!("{refused} flips refused, {harmless} harmless");
    assert!(refused > 0);
}

#[test]
fn every_flipped_byte_of_the_rows_is_refused_or_harmless() {
    // Every byte where the rows are, one bit each, through the library: the tape read
    // whole is the good one, or an error.
    let t = small_tree();
    t.record(&[]);
    let good = t.tape();
    let catalog = fs::read(t.catalog()).unwrap();
    let rows = row_bytes(&t.catalog());
    let mut rng = Rng(77);
    let flip = t.path("flip.db");
    let mut refused = 0;
    for at in rows.clone() {
        let mut flipped = catalog.clone();
        flipped[at] ^= 1 << rng.below(8);
        fs::write(&flip, &flipped).unwrap();
        let read = tartape::Tape::open(t.src(), &flip).and_then(|tape| {
            let mut whole = vec![0u8; tape.total_size() as usize];
            let n = tape.read_at(0, &mut whole)?;
            whole.truncate(n);
            Ok(whole)
        });
        match read {
            Ok(tape) => assert!(tape == good, "byte {at}: another tape"),
            Err(_) => refused += 1,
        }
    }
    println!("{refused} of {} flips refused", rows.len());
}

#[test]
fn info_of_a_catalog_with_impossible_sizes_is_an_error_not_a_panic() {
    let t = small_tree();
    t.record(&[]);
    let conn = rusqlite::Connection::open(t.catalog()).unwrap();
    conn.execute(
        "UPDATE meta SET value = '99999999999' WHERE key = 'data_size'",
        [],
    )
    .unwrap();
    drop(conn);
    for cmd in ["info", "ls"] {
        let out = run(&mut t.cmd(cmd, &[]));
        assert_one_line_error(&out, 1, "corrupted catalog");
    }
}

// ---------------------------------------------------------------------------------------
// 8. Catalogs that are not regular files, and that cannot be read.
// ---------------------------------------------------------------------------------------

#[test]
fn a_fifo_device_or_directory_as_catalog_is_one_clear_error() {
    let t = small_tree();
    mkfifo(&t.path("f.db"));
    fs::create_dir(t.path("dir.db")).unwrap();
    for (catalog, what) in [
        ("f.db", "it is a FIFO"),
        ("dir.db", "it is a directory"),
        ("/dev/null", "it is a character device"),
    ] {
        for cmd in ["stream", "info", "ls"] {
            let out = run(tartape()
                .args([cmd, "src", "--catalog", catalog])
                .current_dir(t.dir.path()));
            assert_one_line_error(&out, 1, what);
        }
        let out = run(tartape()
            .args(["verify", "src", "--catalog", catalog])
            .current_dir(t.dir.path()));
        assert_one_line_error(&out, 2, what);
    }
}

/// A temporary directory that uid 65534 can use.
fn nobody_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn sqlite_failures_say_what_happened() {
    if !can_run(
        "sqlite_failures_say_what_happened",
        Needs {
            root: true,
            tools: &["setpriv"],
            ..Needs::default()
        },
    ) {
        return;
    }
    let dir = nobody_dir();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(tartape()
        .args(["record", "src", "--catalog", "c.db"])
        .current_dir(dir.path()));
    assert_success(&out, "record");
    fs::set_permissions(dir.path().join("c.db"), fs::Permissions::from_mode(0o000)).unwrap();
    for cmd in ["stream", "info"] {
        let out = as_nobody(dir.path(), &[], &[cmd, "src", "--catalog", "c.db"]);
        let err = assert_one_line_error(&out, 1, "Permission denied");
        assert!(!err.contains("corrupted"), "{err}");
    }
    let out = as_nobody(dir.path(), &[], &["verify", "src", "--catalog", "c.db"]);
    assert_one_line_error(&out, 2, "Permission denied");
}

// ---------------------------------------------------------------------------------------
// 9, 10, 11. What `record` writes, and where.
// ---------------------------------------------------------------------------------------

#[test]
fn record_force_replaces_only_a_regular_file() {
    let t = small_tree();
    let dir = t.path("targets");
    fs::create_dir(&dir).unwrap();
    mkfifo(&dir.join("fifo"));
    fs::create_dir(dir.join("dir")).unwrap();
    fs::write(dir.join("precious"), b"precious").unwrap();
    symlink(dir.join("precious"), dir.join("link")).unwrap();
    let mut targets = vec![
        ("fifo", "a FIFO"),
        ("dir", "a directory"),
        ("link", "a symlink"),
    ];
    let device = is_root()
        && rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .is_ok();
    if device {
        targets.push(("null", "a character device"));
    } else {
        assert!(
            !tools_required(),
            "cannot make a device node with mknod (needs root)"
        );
    }
    for (name, what) in targets {
        let path = dir.join(name);
        let before = fs::symlink_metadata(&path).unwrap();
        for force in [true, false] {
            let mut args = vec!["record", "src", "--catalog", path.to_str().unwrap()];
            if force {
                args.push("--force");
            }
            let out = run(tartape().args(&args).current_dir(t.dir.path()));
            assert_one_line_error(&out, 1, what);
            let after = fs::symlink_metadata(&path).unwrap();
            assert_eq!(after.file_type(), before.file_type(), "{name} was replaced");
            assert_eq!(after.ino(), before.ino(), "{name} was replaced");
        }
        let stray: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(stray.is_empty(), "temporary files left: {stray:?}");
    }
    assert_eq!(fs::read(dir.join("precious")).unwrap(), b"precious");
}

#[test]
fn dot_tartape_is_never_written_through_a_symlink() {
    let t = small_tree();
    let elsewhere = t.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, t.src().join(".tartape")).unwrap();
    let out = run(tartape().args(["record", "src"]).current_dir(t.dir.path()));
    assert_one_line_error(&out, 1, "src/.tartape: is a symlink");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    fs::write(elsewhere.join("index.db"), b"someone's database").unwrap();
    let out = run(tartape()
        .args(["record", "src", "--force"])
        .current_dir(t.dir.path()));
    assert_one_line_error(&out, 1, "src/.tartape: is a symlink");
    assert_eq!(
        fs::read(elsewhere.join("index.db")).unwrap(),
        b"someone's database"
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 1);
    // A regular file named .tartape is not a directory either.
    fs::remove_file(t.src().join(".tartape")).unwrap();
    fs::write(t.src().join(".tartape"), b"x").unwrap();
    let out = run(tartape().args(["record", "src"]).current_dir(t.dir.path()));
    assert_one_line_error(&out, 1, "src/.tartape: is a regular file, not a directory");
}

#[test]
fn temporaries_of_killed_recordings_are_removed_by_the_next_one() {
    let t = Tree::new();
    for d in 0..30 {
        for f in 0..1000 {
            t.write(&format!("d{d:02}/f{f:04}"), b"");
        }
    }
    let temps = |t: &Tree| -> Vec<String> {
        fs::read_dir(t.src().join(".tartape"))
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Killed while it writes: its temporary file stays behind.
    let mut child = tartape()
        .args(["record", "src"])
        .current_dir(t.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mark = format!(".tmp-{}", child.id());
    wait_until("the recording's temporary file appears", || {
        temps(&t).iter().any(|n| n.contains(&mark))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(temps(&t).len(), 1, "{:?}", temps(&t));
    let out = run(tartape().args(["record", "src"]).current_dir(t.dir.path()));
    assert_success(&out, "record after a killed recording");
    assert_eq!(temps(&t), Vec::<String>::new());
    assert!(t.src().join(".tartape/index.db").is_file());
}

// ---------------------------------------------------------------------------------------
// 12. Mounting as a user who is not root.
// ---------------------------------------------------------------------------------------

/// A tree, a catalog and a mount point that uid 65534 owns.
fn nobody_tree() -> (tempfile::TempDir, PathBuf) {
    let dir = nobody_dir();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"hello from nobody\n").unwrap();
    fs::create_dir(dir.path().join("mnt")).unwrap();
    fs::create_dir(dir.path().join("tmp")).unwrap();
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let out = as_nobody(dir.path(), &[], &["record", "src", "--catalog", "c.db"]);
    assert_success(&out, "record as nobody");
    let src = src.canonicalize().unwrap();
    (dir, src)
}

/// The homes a user who is not root may have: one whose `$XDG_STATE_HOME` works, a system
/// user's (`HOME=/nonexistent`, as `sudo -u nobody` gives), and root's still (`setpriv`,
/// `runuser -u` keep it). Each as the environment of `tartape mount`: what to set, and
/// what to take away. A log directory never decides whether a mount works.
fn homes(dir: &Path) -> [(&'static str, Vec<(&'static str, PathBuf)>); 3] {
    let tmp = dir.join("tmp");
    [
        (
            "XDG_STATE_HOME",
            vec![("XDG_STATE_HOME", dir.to_path_buf())],
        ),
        (
            "HOME=/nonexistent",
            vec![("HOME", "/nonexistent".into()), ("TMPDIR", tmp.clone())],
        ),
        (
            "HOME=/root",
            vec![("HOME", "/root".into()), ("TMPDIR", tmp)],
        ),
    ]
}

#[test]
fn a_user_without_access_to_dev_fuse_is_told_what_to_do() {
    if !can_run(
        "a_user_without_access_to_dev_fuse_is_told_what_to_do",
        Needs {
            fuse: true,
            root: true,
            tools: &["setpriv", "fusermount3"],
        },
    ) {
        return;
    }
    let mode = fs::metadata("/dev/fuse").unwrap().mode() & 0o777;
    if mode & 0o006 == 0o006 {
        // Everyone may open it here: the mount through fusermount3 simply works
        // (a_user_mounts_through_fusermount3 shows it).
        skip(
            "a_user_without_access_to_dev_fuse_is_told_what_to_do",
            "/dev/fuse is open to every user here",
        );
        return;
    }
    let (dir, _src) = nobody_tree();
    for (home, env) in homes(dir.path()) {
        let mut command = nobody_command(dir.path(), &[]);
        command
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .envs(env)
            .args(["mount", "src", "mnt", "--catalog", "c.db"]);
        let out = run(&mut command);
        let mnt = dir.path().join("mnt").canonicalize().unwrap();
        let mounted = is_mounted(&mnt);
        unmount_quietly(&mnt);
        assert!(!mounted, "{home}: something was mounted");
        // The one line is the cause, whatever the home; a warning about where the log
        // went may come before it.
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{home}: {err}");
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{home}: {err}");
        assert!(last.contains("/dev/fuse"), "{home}: {err}");
        assert!(last.contains("fusermount3"), "{home}: {err}");
        assert!(
            last.contains("give that user read and write access"),
            "{home}: {err}"
        );
        assert!(
            err.lines()
                .all(|l| l.starts_with("error: ") || l.starts_with("warning: ")),
            "{home}: {err}"
        );
    }
}

#[test]
fn a_user_mounts_through_fusermount3() {
    if !can_run(
        "a_user_mounts_through_fusermount3",
        Needs {
            fuse: true,
            root: true,
            tools: &[
                "setpriv",
                "fusermount3",
                "unshare",
                "mount",
                "sha256sum",
                "findmnt",
            ],
        },
    ) {
        return;
    }
    let (dir, src) = nobody_tree();
    let expected = {
        let out = run(tartape()
            .args(["stream", "src", "--catalog", "c.db", "-o", "whole.tar"])
            .current_dir(dir.path()));
        assert_success(&out, "stream");
        let out = run(Command::new("sha256sum").arg(dir.path().join("whole.tar")));
        stdout(&out).split_whitespace().next().unwrap().to_string()
    };
    let bin = reachable_bin(dir.path());
    for (home, env) in homes(dir.path()) {
        // In a mount namespace of its own, a /dev/fuse that the user may open is bound
        // over the real one (which stays as it is); every mount made there dies with the
        // namespace, even if the script fails half-way.
        let script = format!(
            r#"set -eu
cd {dir}
mknod fuse c 10 229 && chmod 0666 fuse && mount --bind fuse /dev/fuse
nobody() {{ setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }}
nobody {bin} mount {src} mnt --catalog c.db
trap 'nobody {bin} umount mnt || umount -l mnt' EXIT
findmnt -no SOURCE,FSTYPE {mnt}
nobody sha256sum mnt/archive.tar
nobody {bin} umount mnt
trap - EXIT
if grep -q ' {mnt} ' /proc/self/mounts; then echo still mounted; exit 1; fi
rm fuse
"#,
            dir = dir.path().display(),
            bin = bin.display(),
            src = src.display(),
            mnt = dir.path().join("mnt").canonicalize().unwrap().display(),
        );
        let out = run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .envs(env));
        assert_success(&out, &format!("{home}: mount, read and unmount as nobody"));
        let said = stdout(&out);
        assert!(said.contains(&expected), "{home}: {said}");
        // The mount table names the source and the type, for this user as for root.
        let table = format!("{} fuse.tartape", src.canonicalize().unwrap().display());
        assert!(said.contains(&table), "{home}: {said}");
        // Where the log went: the state directory, or else a private one in TMPDIR, and
        // the mount said why, once.
        let log = said
            .lines()
            .find_map(|l| l.strip_prefix("log: "))
            .unwrap_or_else(|| panic!("{home}: no log line in {said}"));
        let warnings = stderr(&out);
        if home == "XDG_STATE_HOME" {
            assert!(
                log.starts_with(&format!("{}/tartape/", dir.path().display())),
                "{log}"
            );
            assert!(warnings.is_empty(), "{home}: {warnings}");
        } else {
            let private = dir.path().join("tmp/tartape-65534");
            assert!(
                log.starts_with(&format!("{}/", private.display())),
                "{home}: {log}"
            );
            let mode = fs::metadata(&private).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{home}: the private log directory");
            assert_eq!(warnings.lines().count(), 1, "{home}: {warnings}");
            let wanted = if home == "HOME=/root" {
                "/root/.local/state/tartape"
            } else {
                "/nonexistent/.local/state/tartape"
            };
            assert!(
                warnings.starts_with("warning: cannot keep logs in ")
                    && warnings.contains(wanted)
                    && warnings.contains("--log FILE"),
                "{home}: {warnings}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 13. Readability beyond the permission bits.
// ---------------------------------------------------------------------------------------

/// A tree with a file readable by uid 65534 only through `how`.
fn record_as_nobody_through(how: &str, prepare: impl FnOnce(&Path), setpriv: &[&str]) {
    let dir = nobody_dir();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("open.txt"), b"anyone").unwrap();
    let secret = src.join("group.txt");
    fs::write(&secret, b"only through the group, ACL or capability").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    prepare(&secret);
    let out = as_nobody(dir.path(), setpriv, &["record", "src", "--catalog", "c.db"]);
    assert_success(&out, how);
    assert!(
        stdout(&out).contains("entries: 3 (2 files"),
        "{how}: {}",
        stdout(&out)
    );
}

#[test]
fn readable_files_are_recorded_whatever_makes_them_readable() {
    if !can_run(
        "readable_files_are_recorded_whatever_makes_them_readable",
        Needs {
            root: true,
            tools: &["setpriv", "setfacl"],
            ..Needs::default()
        },
    ) {
        return;
    }
    // The 301st supplementary group.
    let groups: Vec<String> = (1000..=1300).map(|g| g.to_string()).collect();
    let groups = format!("--groups={}", groups.join(","));
    record_as_nobody_through(
        "group 1300 of 301",
        |p| {
            rustix::fs::chown(p, None, Some(rustix::fs::Gid::from_raw(1300))).unwrap();
            fs::set_permissions(p, fs::Permissions::from_mode(0o640)).unwrap();
        },
        &[&groups],
    );
    record_as_nobody_through(
        "an ACL",
        |p| {
            fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
            let status = Command::new("setfacl")
                .args(["-m", "u:65534:r"])
                .arg(p)
                .status()
                .unwrap();
            assert!(status.success());
        },
        &[],
    );
    record_as_nobody_through(
        "CAP_DAC_READ_SEARCH",
        |p| fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap(),
        &[
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Signals while a foreground mount starts.
// ---------------------------------------------------------------------------------------

#[test]
fn a_signal_while_a_foreground_mount_starts_never_leaves_a_mount_behind() {
    if !can_run(
        "a_signal_while_a_foreground_mount_starts_never_leaves_a_mount_behind",
        Needs {
            fuse: true,
            ..Needs::default()
        },
    ) {
        return;
    }
    let t = small_tree();
    t.record(&[]);
    fs::create_dir(t.path("mnt")).unwrap();
    let mnt = t.path("mnt").canonicalize().unwrap();
    for round in 0..30u64 {
        let child = t
            .cmd("mount", &[])
            .arg("mnt")
            .args(["--foreground", "--verify", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        // Every other round: the signal as soon as the mount shows, between the mount
        // and the serving; the others at staggered times from the start.
        if round % 2 == 0 {
            let deadline = Instant::now() + TIMEOUT;
            while !is_mounted(&mnt) && Instant::now() < deadline {
                std::hint::spin_loop();
            }
        } else {
            thread::sleep(Duration::from_micros(round * 500));
        }
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = wait_output(child, "tartape mount --foreground");
        let left = is_mounted(&mnt);
        unmount_quietly(&mnt);
        assert!(!left, "round {round}: SIGTERM left a mount behind");
    }
}

// ---------------------------------------------------------------------------------------
// verify: every entry, added objects, exit statuses; the mount checks every entry.
// ---------------------------------------------------------------------------------------

#[test]
fn verify_names_every_change_and_says_why_it_could_not_check() {
    let t = small_tree();
    t.record(&[]);
    let out = run(&mut t.cmd("verify", &[]));
    assert_success(&out, "verify of an intact tape");
    assert!(stdout(&out).starts_with("ok: "));
    // Added objects are named, not only the directory whose mtime moved.
    t.write("d/new.txt", b"new");
    fs::create_dir_all(t.src().join("e/newdir/deeper")).unwrap();
    let out = run(&mut t.cmd("verify", &[]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout(&out);
    for line in [
        "src/d: mtime",
        "src/d/new.txt: added (file)",
        "src/e: mtime",
        "src/e/newdir: added (dir)",
    ] {
        assert!(report.contains(line), "{line:?} not in:\n{report}");
    }
    assert!(
        !report.contains("deeper"),
        "an added directory's contents: {report}"
    );
    // Could not check: exit status 2.
    let out = run(tartape()
        .args(["verify", "src", "--catalog", "none.db"])
        .current_dir(t.dir.path()));
    assert_one_line_error(&out, 2, "no catalog found");
    fs::write(t.path("junk.db"), vec![1u8; 4096]).unwrap();
    let out = run(tartape()
        .args(["verify", "src", "--catalog", "junk.db"])
        .current_dir(t.dir.path()));
    assert_one_line_error(&out, 2, "corrupted catalog");
}

#[test]
fn the_default_mount_check_sees_a_file_appended_to() {
    if !can_run(
        "the_default_mount_check_sees_a_file_appended_to",
        Needs {
            fuse: true,
            ..Needs::default()
        },
    ) {
        return;
    }
    let t = Tree::new();
    for i in 0..3000 {
        t.write(&format!("d{:02}/f{i:04}.txt", i / 100), b"x");
    }
    t.record(&[]);
    // Appended to: size, mtime and ctime move; its directory does not.
    let mut f = OpenOptions::new()
        .append(true)
        .open(t.src().join("d17/f1701.txt"))
        .unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    fs::create_dir(t.path("mnt")).unwrap();
    let out = run(tartape()
        .args(["mount", "src", "mnt", "--catalog", "c.db"])
        .env("XDG_STATE_HOME", t.dir.path())
        .current_dir(t.dir.path()));
    let mnt = t.path("mnt").canonicalize().unwrap();
    let mounted = is_mounted(&mnt);
    unmount_quietly(&mnt);
    assert!(!mounted, "mounted a tape whose source changed");
    assert_one_line_error(&out, 1, "src/d17/f1701.txt: size 1 → 9");
}
