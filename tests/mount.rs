//! Real FUSE mounts driving the real `tartape` binary: every byte read through the
//! mount must be the byte `tartape stream` writes, whatever tool reads it and however.
//!
//! Each test mounts under its own temporary directory and unmounts in `Drop` (with a
//! lazy-unmount fallback), and every wait has a timeout. When FUSE or a needed tool is
//! missing the test prints a loud SKIP — or fails, when `TARTAPE_REQUIRE_TOOLS=1` (or
//! `CI=true`) says the machine must have them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

mod common;
use common::*;

/// True when FUSE and `tools` are usable (and `fusermount3` for a user who is not
/// root); otherwise a loud SKIP, or a failure when tools are required.
fn can_mount(test: &str, tools: &[&str]) -> bool {
    let fusermount: &[&str] = if is_root() { &[] } else { &["fusermount3"] };
    let all: Vec<&str> = tools.iter().chain(fusermount).copied().collect();
    can_run(
        test,
        Needs {
            fuse: true,
            tools: &all,
            ..Needs::default()
        },
    )
}

// ---------------------------------------------------------------------------------------
// The source tree
// ---------------------------------------------------------------------------------------

/// Sizes around block boundaries, one mid-size and one multi-MiB file.
const FILES: &[(&str, usize)] = &[
    ("empty", 0),
    ("one", 1),
    ("a/block-minus-one", 511),
    ("a/block", 512),
    ("a/block-plus-one", 513),
    ("a/b/hundred-k.bin", 100 * 1024),
    ("big.bin", 3 * 1024 * 1024),
    ("z/last.txt", 7),
];

/// A temporary directory holding the source tree `tree/`, its recorded tape and the
/// bytes `tartape stream` writes for it, plus an empty mount point `mnt/`.
struct Fixture {
    dir: tempfile::TempDir,
    stream: Arc<Vec<u8>>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    /// The tree of [`FILES`] and what `extra` adds to it (given the source directory).
    fn with(extra: impl FnOnce(&Path)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Fixture {
            dir,
            stream: Arc::new(Vec::new()),
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for (rel, size) in FILES {
            let path = fixture.source().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, rng.bytes(*size)).unwrap();
        }
        fs::create_dir_all(fixture.source().join("empty-dir")).unwrap();
        symlink("a/block", fixture.source().join("link")).unwrap();
        extra(&fixture.source());
        fs::create_dir(fixture.mnt_path()).unwrap();

        let record = run(tartape().arg("record").arg(fixture.source()));
        assert_success(&record, "tartape record");
        let stream_path = fixture.dir.path().join("stream.tar");
        let stream = run(tartape()
            .arg("stream")
            .arg(fixture.source())
            .arg("-o")
            .arg(&stream_path));
        assert_success(&stream, "tartape stream");
        Fixture {
            stream: Arc::new(fs::read(&stream_path).unwrap()),
            ..fixture
        }
    }

    fn source(&self) -> PathBuf {
        self.dir.path().join("tree")
    }

    /// The mount point, canonical (as the mount table shows it).
    fn mnt(&self) -> PathBuf {
        self.mnt_path()
            .canonicalize()
            .unwrap_or_else(|_| self.mnt_path())
    }

    fn mnt_path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn archive(&self) -> PathBuf {
        self.mnt_path().join("archive.tar")
    }

    /// `tartape mount tree mnt ARGS…`, logs kept inside the temporary directory.
    fn mount_command(&self, args: &[&str]) -> Command {
        let mut command = tartape();
        command
            .arg("mount")
            .arg(self.source())
            .arg(self.mnt_path())
            .args(args)
            .env("XDG_STATE_HOME", self.dir.path());
        command
    }

    /// Mounts in the background and returns the guard that unmounts it.
    fn mount(&self, args: &[&str]) -> Mounted {
        Mounted::new(&self.source(), &self.mnt_path(), self.dir.path(), args)
    }

    /// Start offset and size of the entry `arc_path` in the stream.
    fn entry(&self, arc_path: &str) -> (u64, u64) {
        entry_in(&self.stream, arc_path)
    }
}

/// Start offset and size of the entry `arc_path` in `stream` (a tiny ustar walk).
fn entry_in(stream: &[u8], arc_path: &str) -> (u64, u64) {
    let mut offset = 0usize;
    while offset + 512 <= stream.len() && stream[offset] != 0 {
        let header = &stream[offset..offset + 512];
        let field = |range: std::ops::Range<usize>| {
            let bytes = &header[range];
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        };
        let (name, prefix) = (field(0..100), field(345..500));
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let size = u64::from_str_radix(field(124..136).trim(), 8).unwrap();
        if path.trim_end_matches('/') == arc_path {
            return (offset as u64, size);
        }
        offset += 512 + (size as usize).div_ceil(512) * 512;
    }
    panic!("{arc_path} not in the stream");
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn expected_range(stream: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = (offset as usize).min(stream.len());
    let end = start.saturating_add(len).min(stream.len());
    &stream[start..end]
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn sha256_stat_and_tar_straight_from_the_mount() {
    if !can_mount(
        "sha256_stat_and_tar_straight_from_the_mount",
        &["tar", "sha256sum"],
    ) {
        return;
    }
    let fx = Fixture::new();
    let _mounted = fx.mount(&[]);

    let names: Vec<String> = fs::read_dir(fx.mnt_path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["archive.tar"]);
    let meta = fs::metadata(fx.archive()).unwrap();
    assert_eq!(meta.len(), fx.stream.len() as u64);
    assert_eq!(meta.mode() & 0o7777, 0o444);
    assert!(meta.is_file());
    // SAFETY: getuid cannot fail.
    assert_eq!(meta.uid(), rustix::process::getuid().as_raw());
    let dir_meta = fs::metadata(fx.mnt_path()).unwrap();
    assert_eq!(dir_meta.mode() & 0o7777, 0o555);
    let age = SystemTime::now()
        .duration_since(meta.modified().unwrap())
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(600),
        "mtime is not the recording time"
    );

    let sha = run(Command::new("sha256sum").arg(fx.archive()));
    assert_success(&sha, "sha256sum");
    let printed = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        printed.split_whitespace().next(),
        Some(sha256_hex(&fx.stream).as_str())
    );

    let list = run(Command::new("tar").arg("-tf").arg(fx.archive()));
    assert_success(&list, "tar -tf");
    let listing = String::from_utf8_lossy(&list.stdout);
    for (rel, _) in FILES {
        assert!(
            listing.lines().any(|line| line == format!("tree/{rel}")),
            "{rel} missing in {listing}"
        );
    }

    let out = fx.dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let extract = run(Command::new("tar")
        .arg("-xf")
        .arg(fx.archive())
        .arg("-C")
        .arg(&out));
    assert_success(&extract, "tar -xf");
    for (rel, _) in FILES {
        assert_eq!(
            fs::read(out.join("tree").join(rel)).unwrap(),
            fs::read(fx.source().join(rel)).unwrap(),
            "{rel} differs after extraction"
        );
    }
    assert_eq!(
        fs::read_link(out.join("tree/link")).unwrap(),
        Path::new("a/block")
    );
    assert!(out.join("tree/empty-dir").is_dir());
}

#[test]
fn random_preads_and_dd_match_the_stream() {
    if !can_mount("random_preads_and_dd_match_the_stream", &["dd"]) {
        return;
    }
    let fx = Fixture::new();
    let _mounted = fx.mount(&[]);
    preads_and_dd_match_the_stream(&fx);
}

/// Long entries (SPEC §1 "Long entries (PAX)"): a 3,000-byte path, one over `PATH_MAX`,
/// a 255-byte name, a name that is not UTF-8, a 900-byte symlink target. The mount serves their `x`
/// headers and records as the stream does: the same sha256, the same bytes from any
/// offset, inside the records too.
#[test]
fn long_entries_read_through_the_mount_as_streamed() {
    if !can_mount(
        "long_entries_read_through_the_mount_as_streamed",
        &["sha256sum", "dd"],
    ) {
        return;
    }
    let fx = Fixture::with(|src| {
        let mut deep = src.join("deep");
        while deep.as_os_str().len() < src.as_os_str().len() + 3000 {
            deep.push("d".repeat(99));
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("file"), b"at the bottom\n").unwrap();
        fs::write(src.join("n".repeat(255)), b"long name\n").unwrap();
        use std::os::unix::ffi::OsStrExt;
        let binary = std::ffi::OsStr::from_bytes(b"\xff\xfe-long-name-that-is-not-utf8-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        fs::write(src.join(binary), b"binary\n").unwrap();
        symlink("t/".repeat(450), src.join("far")).unwrap();
        // longer than PATH_MAX: opened one directory at a time
        make_deep_file(src, 25, b"5,000 bytes down\n");
    });
    // The stream has them, each behind an `x` header.
    let x_headers: Vec<u64> = (0..fx.stream.len() / 512)
        .map(|block| block * 512)
        .filter(|&at| fx.stream[at..at + 14] == *b"././@PaxHeader" && fx.stream[at + 156] == b'x')
        .map(|at| at as u64)
        .collect();
    assert!(x_headers.len() >= 5, "{} x headers", x_headers.len());
    let _mounted = fx.mount(&[]);
    let sha = run(Command::new("sha256sum").arg(fx.archive()));
    assert_success(&sha, "sha256sum");
    assert_eq!(
        String::from_utf8_lossy(&sha.stdout)
            .split_whitespace()
            .next(),
        Some(sha256_hex(&fx.stream).as_str())
    );
    let file = File::open(fx.archive()).unwrap();
    for &at in &x_headers {
        for (offset, len) in [
            (at, 512),
            (at + 100, 1000),
            (at + 517, 3),
            (at + 1023, 4096),
        ] {
            let mut buf = vec![0u8; len];
            let n = file.read_at(&mut buf, offset).unwrap();
            assert_eq!(
                &buf[..n],
                expected_range(&fx.stream, offset, len),
                "pread({offset}, {len})"
            );
        }
    }
    preads_and_dd_match_the_stream(&fx);
}

/// With `--direct-io` every read goes to the server, unaligned and of any size, and the
/// kernel caches nothing; mmap still works (Linux 6.6+).
#[test]
fn direct_io_reads_match_the_stream_and_are_not_cached() {
    if !can_mount(
        "direct_io_reads_match_the_stream_and_are_not_cached",
        &["dd"],
    ) {
        return;
    }
    let fx = Fixture::new();
    {
        let _mounted = fx.mount(&["--direct-io"]);
        preads_and_dd_match_the_stream(&fx);
        if kernel_at_least(6, 6) {
            mmap_sees_the_stream(&fx);
        } else {
            eprintln!(
                "SKIP mmap of a --direct-io mount: needs Linux 6.6 (FUSE_DIRECT_IO_ALLOW_MMAP)"
            );
        }
        let Some(cached) = cached_pages_after_reading(&fx) else {
            return;
        };
        assert_eq!(cached, 0, "--direct-io: the reads were cached");
    }
    // The default keeps what was read in the page cache, which the same check sees.
    let _mounted = fx.mount(&[]);
    let cached = cached_pages_after_reading(&fx).expect("cachestat worked above");
    assert!(cached > 0, "default mount: the reads were not cached");
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// Reads the whole mounted file through one descriptor, then asks the kernel how many of
/// its pages are in the page cache (`cachestat(2)`, Linux 6.5+, on that same descriptor:
/// opening the file again could drop them). `None` (a loud skip) where the kernel lacks
/// cachestat, unless tools are required.
fn cached_pages_after_reading(fx: &Fixture) -> Option<u64> {
    /// `struct cachestat_range` and `struct cachestat` of <linux/mman.h>.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct CacheStat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// Its number on every architecture but alpha (the libc crate does not have it yet).
    const SYS_CACHESTAT: libc::c_long = 451;
    let archive = fx.archive();
    let len = fx.stream.len();
    let stat = timed("read, then cachestat", move || {
        let mut file = File::open(&archive).unwrap();
        let mut bytes = Vec::with_capacity(len);
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len(), len);
        let range = Range {
            off: 0,
            len: len as u64,
        };
        let mut stat = CacheStat::default();
        // SAFETY: cachestat(fd, range, out, flags) with valid pointers to the structs it
        // reads and fills.
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                &range as *const Range,
                &mut stat as *mut CacheStat,
                0,
            )
        };
        if rc == 0 {
            Ok(stat.nr_cache)
        } else {
            Err(io::Error::last_os_error())
        }
    });
    match stat {
        Ok(pages) => Some(pages),
        Err(err) if err.raw_os_error() == Some(libc::ENOSYS) && !tools_required() => {
            eprintln!("SKIP page-cache check: cachestat(2) needs Linux 6.5 ({err})");
            None
        }
        Err(err) => panic!("cachestat: {err}"),
    }
}

fn preads_and_dd_match_the_stream(fx: &Fixture) {
    let archive = fx.archive();
    let stream = Arc::clone(&fx.stream);
    let (big_offset, _) = fx.entry("tree/big.bin");

    timed("random preads", move || {
        let total = stream.len() as u64;
        let file = File::open(&archive).unwrap();
        let mut rng = Rng(42);
        let mut buf = vec![0u8; 1 << 20];
        for round in 0..400 {
            let offset = match round % 4 {
                // Anywhere.
                0 => rng.below(total),
                // Just around an entry (block) boundary.
                1 => (rng.below(total / 512) * 512).saturating_sub(rng.below(8)),
                // Into the footer and past the end.
                2 => total - 1100 + rng.below(1200),
                // Inside the big file, far from the start.
                _ => big_offset + rng.below(3 << 20),
            };
            // Log-uniform sizes from 1 B to 1 MiB.
            let len = (1usize << rng.below(21)).min(1 << 20);
            let len = (len + rng.below(len as u64) as usize).clamp(1, 1 << 20);
            let mut filled = 0;
            while filled < len {
                let read = file
                    .read_at(&mut buf[filled..len], offset + filled as u64)
                    .unwrap_or_else(|err| panic!("pread({offset}, {len}): {err}"));
                if read == 0 {
                    break;
                }
                filled += read;
            }
            assert_eq!(
                &buf[..filled],
                expected_range(&stream, offset, len),
                "pread({offset}, {len}) differs from the stream"
            );
        }
        let mut byte = [0u8; 1];
        assert_eq!(
            file.read_at(&mut byte, total).unwrap(),
            0,
            "read at the end"
        );
        assert_eq!(
            file.read_at(&mut byte, total + 4096).unwrap(),
            0,
            "read past the end"
        );
    });

    let blocks = fx.stream.len() as u64 / 512;
    for skip in [0, 1, 2, blocks / 3, blocks / 2, blocks - 3, blocks - 1] {
        let dd = run(Command::new("dd")
            .arg(format!("if={}", fx.archive().display()))
            .arg("bs=512")
            .arg(format!("skip={skip}"))
            .arg("count=1")
            .arg("status=none"));
        assert_success(&dd, "dd");
        assert_eq!(
            dd.stdout,
            expected_range(&fx.stream, skip * 512, 512),
            "dd skip={skip}"
        );
    }
}

#[test]
fn mmap_readers_see_the_stream() {
    if !can_mount("mmap_readers_see_the_stream", &[]) {
        return;
    }
    let fx = Fixture::new();
    let _mounted = fx.mount(&[]);
    mmap_sees_the_stream(&fx);
}

fn mmap_sees_the_stream(fx: &Fixture) {
    let archive = fx.archive();
    let stream = Arc::clone(&fx.stream);
    timed("mmap", move || {
        let file = File::open(&archive).unwrap();
        let len = stream.len();
        // SAFETY: a shared read-only mapping of a file we keep open; unmapped below.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(
            mapped,
            libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        // SAFETY: the mapping is `len` readable bytes until munmap.
        let bytes = unsafe { std::slice::from_raw_parts(mapped as *const u8, len) };
        let same = bytes == stream.as_slice();
        // SAFETY: unmaps exactly what was mapped.
        unsafe { libc::munmap(mapped, len) };
        assert!(same, "mmap of the mounted file differs from the stream");
    });
}

#[test]
fn cut_copy_finished_by_rsync_append_verify_equals_the_stream() {
    if !can_mount(
        "cut_copy_finished_by_rsync_append_verify_equals_the_stream",
        &["rsync"],
    ) {
        return;
    }
    let fx = Fixture::new();
    let _mounted = fx.mount(&[]);
    let copy = fx.dir.path().join("copy.tar");
    let third = fx.stream.len() / 3;
    let head = read_path_range(&fx.archive(), 0, third).unwrap();
    fs::write(&copy, &head).unwrap();

    let rsync = run(Command::new("rsync")
        .arg("--append-verify")
        .arg(fx.archive())
        .arg(&copy));
    assert_success(&rsync, "rsync --append-verify");
    let copied = fs::read(&copy).unwrap();
    assert_eq!(copied.len(), fx.stream.len());
    assert!(
        copied == *fx.stream,
        "rsync-finished copy differs from the stream"
    );
}

#[test]
fn four_concurrent_readers_reassemble_the_stream() {
    if !can_mount("four_concurrent_readers_reassemble_the_stream", &[]) {
        return;
    }
    let fx = Fixture::new();
    let _mounted = fx.mount(&[]);
    let archive = fx.archive();
    let stream = Arc::clone(&fx.stream);
    timed("concurrent readers", move || {
        let total = stream.len();
        let quarter = total.div_ceil(4);
        let readers: Vec<_> = (0..4)
            .map(|index| {
                let archive = archive.clone();
                thread::spawn(move || {
                    let start = index * quarter;
                    let len = quarter.min(total.saturating_sub(start));
                    // Sequential 64 KiB reads, like a copying tool.
                    let file = File::open(&archive).unwrap();
                    let mut out = Vec::with_capacity(len);
                    let mut chunk = vec![0u8; 64 * 1024];
                    while out.len() < len {
                        let want = chunk.len().min(len - out.len());
                        let at = (start + out.len()) as u64;
                        let read = file.read_at(&mut chunk[..want], at).unwrap();
                        assert!(read > 0, "unexpected end at {at}");
                        out.extend_from_slice(&chunk[..read]);
                    }
                    out
                })
            })
            .collect();
        let mut joined = Vec::with_capacity(total);
        for reader in readers {
            joined.extend(reader.join().unwrap());
        }
        assert!(
            joined == *stream,
            "reassembled quarters differ from the stream"
        );
    });
}

#[test]
fn writes_fail_and_unknown_names_are_missing() {
    if !can_mount("writes_fail_and_unknown_names_are_missing", &[]) {
        return;
    }
    let fx = Fixture::new();
    let _mounted = fx.mount(&[]);
    let archive = fx.archive();
    let mnt = fx.mnt_path();

    let refused = |what: &str, result: io::Result<()>| {
        let err = result.expect_err(&format!("{what} succeeded on the read-only mount"));
        let code = err.raw_os_error();
        assert!(
            matches!(code, Some(libc::EROFS | libc::EACCES | libc::EPERM)),
            "{what}: unexpected error {err}"
        );
    };
    refused("create", File::create(mnt.join("new")).map(drop));
    refused(
        "open for writing",
        OpenOptions::new().write(true).open(&archive).map(drop),
    );
    refused(
        "open for appending",
        OpenOptions::new().append(true).open(&archive).map(drop),
    );
    refused(
        "truncate",
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&archive)
            .map(drop),
    );
    refused("rename", fs::rename(&archive, mnt.join("renamed.tar")));
    refused("delete", fs::remove_file(&archive));
    refused("mkdir", fs::create_dir(mnt.join("dir")));
    refused("symlink", symlink("archive.tar", mnt.join("link")));
    refused("hard link", fs::hard_link(&archive, mnt.join("hard")));
    refused(
        "chmod",
        fs::set_permissions(
            &archive,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        ),
    );
    refused(
        "write through a read-only handle",
        File::open(&archive)
            .and_then(|mut file| file.write_all(b"x"))
            .map_err(|err| {
                // Writing to a read-only descriptor is EBADF; count it as refused.
                if err.raw_os_error() == Some(libc::EBADF) {
                    io::Error::from_raw_os_error(libc::EACCES)
                } else {
                    err
                }
            }),
    );

    let missing = fs::metadata(mnt.join("nope.tar")).unwrap_err();
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    // The tape is still intact and readable after all that.
    assert_eq!(fs::read(&archive).unwrap(), *fx.stream);
}

#[test]
fn changed_source_fails_reads_with_eio_and_quick_verify_refuses() {
    if !can_mount(
        "changed_source_fails_reads_with_eio_and_quick_verify_refuses",
        &[],
    ) {
        return;
    }
    let fx = Fixture::new();
    let (big_offset, big_size) = fx.entry("tree/big.bin");
    // Same size, new content and mtime.
    let big = fx.source().join("big.bin");
    let mut content = fs::read(&big).unwrap();
    for byte in &mut content[..4096] {
        *byte = !*byte;
    }
    fs::write(&big, &content).unwrap();
    let file = File::options().write(true).open(&big).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(100))
        .unwrap();
    drop(file);

    {
        let mounted = fx.mount(&["--verify", "none"]);
        let archive = fx.archive();
        let stream = Arc::clone(&fx.stream);
        let (first, changed) = timed("reads of a changed tape", move || {
            (
                read_path_range(&archive, 0, 512),
                read_path_range(&archive, big_offset + 512 + big_size / 2, 4096),
            )
        });
        assert_eq!(
            first.unwrap(),
            stream[..512],
            "the first header must still read"
        );
        let err = changed.expect_err("reading a changed file must fail");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        let log = fs::read_to_string(mounted.log()).unwrap();
        assert!(
            log.contains("big.bin"),
            "the log must name the changed file:\n{log}"
        );
    }
    assert!(!is_mounted(&fx.mnt()));

    for verify in [&["--verify", "quick"][..], &[]] {
        let refused = run(&mut fx.mount_command(verify));
        let stderr = assert_one_line_error(&refused, 1, "");
        assert!(stderr.contains("big.bin"), "must name the file: {stderr}");
        assert!(!is_mounted(&fx.mnt()), "nothing may be mounted");
    }
}

#[test]
fn umount_cleans_live_and_killed_mounts() {
    if !can_mount("umount_cleans_live_and_killed_mounts", &[]) {
        return;
    }
    let fx = Fixture::new();
    let mnt = fx.mnt();

    let mounted = fx.mount(&[]);
    let pid = mounted.pid();
    let umount = run(tartape().arg("umount").arg(fx.mnt_path()));
    assert_success(&umount, "tartape umount");
    assert!(!is_mounted(&mnt));
    // The serving process exits once unmounted.
    // SAFETY: kill with signal 0 only probes for existence.
    wait_until("the serving process exits", || {
        rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap()).is_err()
    });
    drop(mounted);

    let mounted = fx.mount(&[]);
    let pid = mounted.pid();
    // SAFETY: the pid was printed by the mount we just made.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_until("the killed mount goes stale", || {
        fs::metadata(fx.mnt_path()).is_err_and(|err| err.raw_os_error() == Some(libc::ENOTCONN))
    });
    assert!(is_mounted(&mnt));
    let umount = run(tartape().arg("umount").arg(fx.mnt_path()));
    assert_success(&umount, "tartape umount of a stale mount");
    assert!(!is_mounted(&mnt));
    assert!(fs::read_dir(fx.mnt_path()).unwrap().next().is_none());
    drop(mounted);

    // The mount point is usable again.
    let again = fx.mount(&[]);
    assert_eq!(fs::read(fx.archive()).unwrap(), *fx.stream);
    drop(again);
    assert!(!is_mounted(&mnt));

    let not_mounted = run(tartape().arg("umount").arg(fx.mnt_path()));
    assert_one_line_error(&not_mounted, 1, "");
}

#[test]
fn foreground_mount_unmounts_on_sigterm_and_sigint() {
    if !can_mount("foreground_mount_unmounts_on_sigterm_and_sigint", &[]) {
        return;
    }
    let fx = Fixture::new();
    let mnt = fx.mnt();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let child = fx
            .mount_command(&["--foreground"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Unmounts even if an assertion below fails.
        let _guard = Mounted {
            mnt: mnt.clone(),
            stdout: String::new(),
        };
        wait_until("the foreground mount is up", || is_mounted(&mnt));
        let archive = fx.archive();
        let head = timed("read from the foreground mount", move || {
            read_path_range(&archive, 0, 1024).unwrap()
        });
        assert_eq!(head, fx.stream[..1024]);
        // SAFETY: signals the child we spawned.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let output = wait_output(child, "tartape mount --foreground");
        assert_success(&output, "foreground mount after a signal");
        assert!(!is_mounted(&mnt), "signal {signal} left the mount behind");
    }
}

/// `tartape mount SOURCE MNT ARGS…` with its logs under `dir`.
fn run_mount_args(dir: &Path, source: &Path, mnt: &Path, args: &[&str]) -> std::process::Output {
    run(tartape()
        .arg("mount")
        .arg(source)
        .arg(mnt)
        .args(args)
        .env("XDG_STATE_HOME", dir))
}

#[test]
fn pre_mount_errors_are_one_line_and_mount_nothing() {
    if !can_mount("pre_mount_errors_are_one_line_and_mount_nothing", &[]) {
        return;
    }
    let fx = Fixture::new();
    let dir = fx.dir.path();
    let run = |source: &Path, mnt: &Path| run_mount_args(dir, source, mnt, &[]);

    let cases: [(&str, PathBuf, PathBuf, &str); 5] = [
        (
            "missing source",
            dir.join("nope"),
            fx.mnt_path(),
            "does not exist",
        ),
        (
            "source is a file",
            fx.source().join("one"),
            fx.mnt_path(),
            "not a directory",
        ),
        (
            "missing mount point",
            fx.source(),
            dir.join("no-mnt"),
            "does not exist",
        ),
        (
            "mount point is a file",
            fx.source(),
            fx.source().join("one"),
            "not a directory",
        ),
        (
            "non-empty mount point",
            fx.source(),
            fx.source(),
            "not empty",
        ),
    ];
    for (what, source, mnt, expected) in cases {
        let output = run(&source, &mnt);
        let stderr = assert_one_line_error(&output, 1, "");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        if let Ok(canonical) = mnt.canonicalize() {
            assert!(!is_mounted(&canonical), "{what}: something got mounted");
        }
    }

    // Usage errors: found before any process is started, so no log either.
    for (args, code, said) in [
        (&["--name", "a/b"][..], 1, "--name"),
        (&["--threads", "0"][..], 2, "--threads"),
    ] {
        let output = run_mount_args(dir, &fx.source(), &fx.mnt_path(), args);
        assert_one_line_error(&output, code, said);
        assert!(!is_mounted(&fx.mnt()), "{args:?}: something got mounted");
        let logs = dir.join("tartape");
        let left = fs::read_dir(&logs).map_or(0, |d| d.count());
        assert_eq!(left, 0, "{args:?} left a log in {}", logs.display());
    }

    let mounted = fx.mount(&[]);
    let output = run(&fx.source(), &fx.mnt_path());
    let stderr = assert_one_line_error(&output, 1, "");
    assert!(stderr.contains("already a mount point"), "{stderr}");
    // The first mount is untouched.
    assert_eq!(fs::read(fx.archive()).unwrap(), *fx.stream);
    drop(mounted);
    assert!(!is_mounted(&fx.mnt()));

    // Last, as it changes the source: a mount point inside the source would be recorded.
    let inner = fx.source().join("inner-mnt");
    fs::create_dir(&inner).unwrap();
    let output = run(&fx.source(), &inner);
    let stderr = assert_one_line_error(&output, 1, "");
    assert!(stderr.contains("inside the source"), "{stderr}");
    assert!(!is_mounted(&inner.canonicalize().unwrap()));
}

#[test]
fn unrecorded_source_is_recorded_then_mounted_with_catalog_and_name() {
    if !can_mount(
        "unrecorded_source_is_recorded_then_mounted_with_catalog_and_name",
        &[],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fresh");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("sub/file.txt"), b"recorded on first mount\n").unwrap();
    let catalog = dir.path().join("elsewhere.db");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();

    // Relative paths: the background process must not depend on our working directory.
    let output = run(tartape()
        .current_dir(dir.path())
        .args(["mount", "fresh", "mnt", "--catalog", "elsewhere.db"])
        .args(["--name", "fresh.tar"])
        .env("XDG_STATE_HOME", dir.path()));
    let _mounted = Mounted {
        mnt: mnt.canonicalize().unwrap(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    };
    assert_success(&output, "mount of an unrecorded source");
    assert!(catalog.is_file(), "no catalog was recorded at --catalog");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("fingerprint"),
        "the recording summary is printed: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    let stream_path = dir.path().join("s.tar");
    let stream = run(tartape()
        .arg("stream")
        .arg(&source)
        .arg("--catalog")
        .arg(&catalog)
        .arg("-o")
        .arg(&stream_path));
    assert_success(&stream, "tartape stream");
    let names: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["fresh.tar"]);
    assert_eq!(
        fs::read(mnt.join("fresh.tar")).unwrap(),
        fs::read(stream_path).unwrap()
    );
}

/// With `--volume-size` the mount holds exactly the volume files (mode 0444, their sizes,
/// their bytes) and the catalog copy; `cat MNT/*.tar.* | tar -x` restores the tree; a
/// `cp -r` or `rsync -a` of the mount is everything `tartape restore` needs.
#[test]
fn a_volume_mount_holds_the_volumes_and_the_catalog_copy() {
    if !can_mount(
        "a_volume_mount_holds_the_volumes_and_the_catalog_copy",
        &["tar", "sh", "cat", "cp", "rsync"],
    ) {
        return;
    }
    let fx = Fixture::new();
    let info = run(tartape().arg("info").arg(fx.source()).arg("--json"));
    assert_success(&info, "info");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let fp8 = info["fingerprint"].as_str().unwrap()[..8].to_string();
    let _mounted = fx.mount(&["--volume-size", "256K"]);

    let size = 256 * 1024u64;
    let total = fx.stream.len() as u64;
    let n = total.div_ceil(size);
    assert!(n > 2, "the tree gives several volumes");
    let mut names: Vec<String> = fs::read_dir(fx.mnt_path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (1..=n).map(|k| format!("tree_{fp8}.tar.{k:03}")).collect();
    expected.push(format!("tree_{fp8}.tartape"));
    expected.sort();
    assert_eq!(names, expected);
    for k in 1..=n {
        let path = fx.mnt_path().join(format!("tree_{fp8}.tar.{k:03}"));
        let meta = fs::metadata(&path).unwrap();
        let (start, end) = ((k - 1) * size, (k * size).min(total));
        assert_eq!(meta.len(), end - start, "size of volume {k}");
        assert_eq!(meta.mode() & 0o7777, 0o444);
        assert!(
            fs::read(&path).unwrap() == fx.stream[start as usize..end as usize],
            "bytes of volume {k}"
        );
    }
    let copy = fx.mnt_path().join(format!("tree_{fp8}.tartape"));
    assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o7777, 0o444);
    assert_eq!(
        fs::read(&copy).unwrap(),
        fs::read(fx.source().join(".tartape/index.db")).unwrap()
    );
    assert!(File::create(fx.mnt_path().join("new")).is_err());

    // The volumes are a plain tar once concatenated.
    let out = fx.dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let extract = run(Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\"/*.tar.* | tar -xf - -C \"$2\"")
        .arg("sh")
        .arg(fx.mnt_path())
        .arg(&out));
    assert_success(&extract, "cat volumes | tar -x");
    let same_tree = |root: &Path| {
        for (rel, _) in FILES {
            assert_eq!(
                fs::read(root.join(rel)).unwrap(),
                fs::read(fx.source().join(rel)).unwrap(),
                "{rel} differs in {}",
                root.display()
            );
        }
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            Path::new("a/block")
        );
        assert!(root.join("empty-dir").is_dir());
    };
    same_tree(&out.join("tree"));

    // Upload the mount (cp -r, rsync -a), delete the source, restore from the copy.
    let up = fx.dir.path().join("up");
    let cp = run(Command::new("cp")
        .arg("-r")
        .arg(fx.mnt_path().join("."))
        .arg(&up));
    assert_success(&cp, "cp -r");
    let up2 = fx.dir.path().join("up2");
    let rsync = run(Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", fx.mnt_path().display()))
        .arg(&up2));
    assert_success(&rsync, "rsync -a");
    for name in &names {
        assert!(
            fs::read(up2.join(name)).unwrap() == fs::read(up.join(name)).unwrap(),
            "{name}: rsync and cp differ"
        );
    }
    let restored = fx.dir.path().join("restored");
    let restore = run(tartape()
        .arg("restore")
        .arg(up.join(format!("tree_{fp8}.tartape")))
        .arg("--from")
        .arg(&up2)
        .arg("-C")
        .arg(&restored));
    assert_success(&restore, "restore from the uploaded mount");
    same_tree(&restored.join("tree"));
}

/// Descriptors of process `pid` that lead into `dir`.
fn fds_into(pid: i32, dir: &Path) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| {
        fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .count()
    })
}

/// The log says the server reads ahead.
fn reads_ahead(mounted: &Mounted) -> bool {
    fs::read_to_string(mounted.log()).is_ok_and(|log| log.contains("reading the files ahead"))
}

/// Reading the mount in order reads the files ahead of the reader (as a cold cache turns
/// on, here forced by `TARTAPE_PREFETCH=always`); random reads do not. With 3,000 files
/// ahead the server holds a bounded number of descriptors, and a file changed after it was
/// read ahead fails its reads with EIO while everything before it reads as the stream.
#[test]
fn sequential_reads_of_the_mount_read_ahead_and_random_ones_do_not() {
    if !can_mount(
        "sequential_reads_of_the_mount_read_ahead_and_random_ones_do_not",
        &[],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt) = (dir.path().join("tree"), dir.path().join("mnt"));
    let mut rng = Rng(59);
    for i in 0..3000 {
        let path = src.join(format!("d{:02}/f{i:05}", i % 30));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, rng.bytes(1 + (i * 37) % 9000)).unwrap();
    }
    let last = src.join("zz-last");
    fs::write(&last, rng.bytes(100_000)).unwrap();
    fs::create_dir(&mnt).unwrap();
    assert_success(&run(tartape().arg("record").arg(&src)), "tartape record");
    let stream_path = dir.path().join("stream.tar");
    assert_success(
        &run(tartape()
            .arg("stream")
            .arg(&src)
            .arg("-o")
            .arg(&stream_path)),
        "tartape stream",
    );
    let stream = fs::read(&stream_path).unwrap();
    let (last_offset, last_size) = entry_in(&stream, "tree/zz-last");

    // Every read reaches the server (--direct-io: no page cache, no kernel readahead).
    let mounted = Mounted::with_env(
        &src,
        &mnt,
        dir.path(),
        &["--direct-io"],
        &[
            ("TARTAPE_PREFETCH", "always"),
            ("RUST_LOG", "warn,tartape::readahead=debug"),
        ],
    );
    let archive = mounted.mnt.join("archive.tar");
    let file = File::open(&archive).unwrap();
    // Random 4 KiB reads: at distinct multiples of 8 KiB, so that none ends where another
    // starts.
    let pages = stream.len() as u64 / 8192;
    let mut offsets: Vec<u64> = (0..pages).map(|p| p * 8192).collect();
    for i in (1..offsets.len()).rev() {
        offsets.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for &offset in offsets.iter().take(300) {
        let read = read_range(&file, offset, 4096).unwrap();
        assert!(read == expected_range(&stream, offset, 4096), "at {offset}");
    }
    thread::sleep(Duration::from_millis(100));
    assert!(
        !reads_ahead(&mounted),
        "random reads started the read-ahead"
    );

    // In order, 64 KiB at a time, up to the middle of the tape.
    let middle = stream.len() as u64 / 2;
    let mut at = 0;
    while at < middle {
        let read = read_range(&file, at, 64 << 10).unwrap();
        assert!(read == expected_range(&stream, at, 64 << 10), "at {at}");
        at += read.len() as u64;
    }
    wait_until("the server to read ahead", || reads_ahead(&mounted));
    // The reader pauses; the read-ahead runs on to the end of the tape (1,500 files).
    let pid = mounted.pid();
    let mut most = 0;
    for _ in 0..50 {
        most = most.max(fds_into(pid, &src));
        thread::sleep(Duration::from_millis(4));
    }
    // The server's cache of open files (64) and one file and one directory per
    // read-ahead thread (8): not 1,500 files.
    assert!(
        most <= 80,
        "{most} descriptors into the source, 1,500 files ahead"
    );

    // Changed after it was (probably) read ahead; same size, mtime put back.
    let mtime = mtime_of(&last);
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .write_all_at(b"changed", 50_000)
        .unwrap();
    set_mtime(&last, mtime.0, mtime.1);
    let content = last_offset + 512;
    let failed = loop {
        match read_range(&file, at, 64 << 10) {
            Ok(read) => {
                assert!(read == expected_range(&stream, at, 64 << 10), "at {at}");
                assert!(!read.is_empty(), "the whole tape read, the change not seen");
                at += read.len() as u64;
            }
            Err(err) => break (at, err),
        }
    };
    assert_eq!(failed.1.raw_os_error(), Some(libc::EIO), "{}", failed.1);
    assert!(
        failed.0 + (64 << 10) > content && failed.0 < content + last_size,
        "the read at {} failed, zz-last's content is at {content}",
        failed.0
    );
    let log = fs::read_to_string(mounted.log()).unwrap();
    assert!(
        log.contains("zz-last"),
        "the log must name the file:\n{log}"
    );
}

/// A background mount logs into `$XDG_STATE_HOME/tartape` (mode 0700), its log created
/// with mode 0600; at most 20 logs are kept; a clean unmount removes the log; a symlink
/// in place of the directory is never written through (the log goes elsewhere).
#[test]
fn logs_live_in_the_state_directory_and_go_with_a_clean_unmount() {
    use std::os::unix::fs::PermissionsExt;
    if !can_mount(
        "logs_live_in_the_state_directory_and_go_with_a_clean_unmount",
        &[],
    ) {
        return;
    }
    let fx = Fixture::new();
    let logs = fx.dir.path().join("tartape");
    fs::create_dir(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
    for i in 0..25 {
        let old = logs.join(format!("old-{i:02}.log"));
        fs::write(&old, b"old\n").unwrap();
        set_mtime(&old, 1_000_000 + i, 0);
    }
    let mounted = fx.mount(&[]);
    let log = mounted.log();
    assert_eq!(log.parent(), Some(logs.as_path()), "{}", log.display());
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&logs), 0o700, "the log directory");
    assert_eq!(mode(&log), 0o600, "the log");
    let kept: Vec<_> = fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(kept.len(), 20, "{kept:?}");
    assert!(kept.contains(&"old-24.log".to_string()) && !kept.contains(&"old-05.log".into()));
    let pid = mounted.pid();
    assert_eq!(fs::read(fx.archive()).unwrap(), *fx.stream);
    drop(mounted);
    wait_until("the server to end", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(
        !log.exists(),
        "a clean unmount leaves its log {}",
        log.display()
    );

    // A symlink where the directory should be is never followed: the mount still works,
    // logging in a private directory under TMPDIR, and says why, once.
    let elsewhere = fx.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::remove_dir_all(&logs).unwrap();
    symlink(&elsewhere, &logs).unwrap();
    let tmp = fx.dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let out = run(fx
        .mount_command(&[])
        .env("TMPDIR", &tmp)
        .env_remove("XDG_RUNTIME_DIR"));
    let mounted = Mounted {
        mnt: fx.mnt(),
        stdout: stdout(&out),
    };
    assert_success(&out, "mount with a symlink where the log directory goes");
    let warning = stderr(&out);
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(
        warning.starts_with("warning: cannot keep logs in ")
            && warning.contains(&format!(
                "{} (not a directory (a symlink?))",
                logs.display()
            ))
            && warning.contains("--log FILE"),
        "{warning}"
    );
    let private = tmp.join(format!("tartape-{}", rustix::process::getuid().as_raw()));
    let log = mounted.log();
    assert_eq!(log.parent(), Some(private.as_path()), "{}", log.display());
    assert_eq!(mode(&private), 0o700, "the private log directory");
    assert_eq!(fs::read(fx.archive()).unwrap(), *fx.stream);
    drop(mounted);
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// The mount table shows the canonical source directory and the type `fuse.tartape`, as
/// `findmnt`, `mount` and `df` read it.
#[test]
fn the_mount_table_names_the_source_and_fuse_tartape() {
    if !can_mount(
        "the_mount_table_names_the_source_and_fuse_tartape",
        &["findmnt"],
    ) {
        return;
    }
    let fx = Fixture::new();
    let mounted = fx.mount(&[]);
    let out = run(Command::new("findmnt")
        .args(["-no", "SOURCE,FSTYPE"])
        .arg(&mounted.mnt));
    assert_success(&out, "findmnt");
    let source = fx.source().canonicalize().unwrap();
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        [source.to_str().unwrap(), "fuse.tartape"]
    );
}

/// `tartape mounts --json` lists a mount with its source, catalog, fingerprint, serving
/// pid and log (JSON Lines), and forgets it once unmounted.
#[test]
fn mounts_lists_a_mount_and_forgets_it_when_unmounted() {
    if !can_mount("mounts_lists_a_mount_and_forgets_it_when_unmounted", &[]) {
        return;
    }
    let fx = Fixture::new();
    let listed = |mnt: &Path| -> Vec<serde_json::Value> {
        let out = run(tartape().args(["mounts", "--json"]));
        assert_success(&out, "tartape mounts --json");
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["mountpoint"] == mnt.to_str().unwrap())
            .collect()
    };
    let mounted = fx.mount(&[]);
    let info = run(tartape().arg("info").arg(fx.source()).arg("--json"));
    let info: serde_json::Value = serde_json::from_str(&stdout(&info)).unwrap();
    let found = listed(&mounted.mnt);
    assert_eq!(found.len(), 1, "{found:?}");
    let m = &found[0];
    assert_eq!(
        m["source"],
        fx.source().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(m["fingerprint"], info["fingerprint"]);
    assert_eq!(m["catalog"], info["catalog"]);
    assert_eq!(m["pid"], mounted.pid());
    assert_eq!(m["log"], mounted.log().to_str().unwrap());
    let text = stdout(&run(tartape().arg("mounts")));
    assert!(text.contains(&format!("pid {}", mounted.pid())), "{text}");
    let mnt = mounted.mnt.clone();
    drop(mounted);
    assert!(listed(&mnt).is_empty(), "an unmounted tape is still listed");
}

/// `-o` takes the mount's options sshfs-style; mount(8)'s own (`rw`, `dev`, `suid`, which
/// mount(8) and mount.fuse3 add) change nothing, the mount stays read-only; an unknown
/// option is refused by name before anything is started.
/// Waits until the logs in `dir` are gone (a clean unmount without a warning removes its
/// log); on a timeout, says what the logs that stayed hold.
fn wait_until_logs_go(dir: &Path) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let left: Vec<PathBuf> = fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let held: Vec<String> = left
                .iter()
                .map(|p| {
                    format!(
                        "{}:\n{}",
                        p.display(),
                        fs::read_to_string(p).unwrap_or_default()
                    )
                })
                .collect();
            panic!("the log of a clean unmount stayed:\n{}", held.join("\n"));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn dash_o_options_set_the_mount_and_unknown_ones_are_refused() {
    if !can_mount(
        "dash_o_options_set_the_mount_and_unknown_ones_are_refused",
        &["findmnt"],
    ) {
        return;
    }
    let fx = Fixture::new();
    let catalog = fx.source().join(".tartape/index.db");
    let options = format!(
        "rw,dev,suid,ro,nodev,nosuid,noexec,auto,noauto,user,users,nofail,_netdev,defaults,\
         x-systemd.automount,x-gvfs-hide,allow_other,name=x.tar,verify=quick,threads=2,\
         catalog={}",
        catalog.display()
    );
    let mounted = fx.mount(&["-o", &options, "-o", "direct_io,noatime"]);
    let tape = mounted.mnt.join("x.tar");
    assert_eq!(fs::read(&tape).unwrap(), *fx.stream);
    let out = run(Command::new("findmnt")
        .args(["-no", "OPTIONS"])
        .arg(&mounted.mnt));
    let mount_options = stdout(&out);
    assert!(
        mount_options.split(',').any(|o| o.trim() == "ro"),
        "not read-only: {mount_options}"
    );
    assert!(mount_options.contains("allow_other"), "{mount_options}");
    let err = OpenOptions::new().write(true).open(&tape).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    drop(mounted);
    let logs = fx.dir.path().join("tartape");
    let logs_left = || fs::read_dir(&logs).map_or(0, |d| d.count());
    wait_until_logs_go(&logs);

    // log=FILE (mode 0600, kept), debug, volume_size=SIZE.
    let log = fx.dir.path().join("my.log");
    let option = format!("log={},debug,volume_size=1M", log.display());
    let mounted = fx.mount(&["-o", &option]);
    assert_eq!(mounted.log(), log);
    let names: Vec<String> = fs::read_dir(&mounted.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.len() >= 4,
        "volumes of 1 MiB and the catalog copy: {names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with(".tartape")), "{names:?}");
    drop(mounted);
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(&log).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG"), "-o debug: {logged}");

    for (option, said) in [
        ("bogus", "-o bogus: unknown mount option"),
        ("threads=0", "-o threads=0: threads is a number"),
        (
            "verify=maybe",
            "-o verify=maybe: verify is quick, full or none",
        ),
    ] {
        let out = run(&mut fx.mount_command(&["-o", option]));
        assert_one_line_error(&out, 1, said);
        assert!(!is_mounted(&fx.mnt()), "{option}: something was mounted");
    }
    assert_eq!(
        logs_left(),
        0,
        "refused mounts left logs in {}",
        logs.display()
    );
}

/// Removes the temporary `tartape` that mount.fuse3 finds on root's default PATH.
struct OnRootPath(PathBuf);

impl Drop for OnRootPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// mount(8) with `-t fuse.tartape` runs `tartape SOURCE MOUNTPOINT -o OPTS` through
/// mount.fuse3 (which runs /bin/sh with the default PATH: the test puts a temporary
/// `tartape` link in /usr/local/sbin); the system `umount` takes it down.
#[test]
fn mount_8_mounts_type_fuse_tartape_and_umount_takes_it_down() {
    if !can_run(
        "mount_8_mounts_type_fuse_tartape_and_umount_takes_it_down",
        Needs {
            fuse: true,
            root: true,
            tools: &["mount", "umount", "mount.fuse3", "findmnt"],
        },
    ) {
        return;
    }
    let link = PathBuf::from("/usr/local/sbin/tartape");
    assert!(
        fs::symlink_metadata(&link).is_err(),
        "{} exists: this test would replace it",
        link.display()
    );
    fs::create_dir_all("/usr/local/sbin").unwrap();
    symlink(bin(), &link).unwrap();
    let _link = OnRootPath(link);
    let fx = Fixture::new();
    let mnt = fx.mnt();
    let catalog = fx.source().join(".tartape/index.db");
    let out = run(Command::new("mount")
        .args(["-t", "fuse.tartape"])
        .arg(fx.source())
        .arg(&mnt)
        .arg("-o")
        .arg(format!("catalog={},verify=quick", catalog.display()))
        .env("XDG_STATE_HOME", fx.dir.path()));
    assert_success(&out, "mount -t fuse.tartape");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            unmount_quietly(&self.0);
        }
    }
    let _unmount = Unmount(mnt.clone());
    let table = stdout(&run(Command::new("findmnt")
        .args(["-no", "SOURCE,FSTYPE"])
        .arg(&mnt)));
    let source = fx.source().canonicalize().unwrap();
    assert_eq!(
        table.split_whitespace().collect::<Vec<_>>(),
        [source.to_str().unwrap(), "fuse.tartape"]
    );
    assert_eq!(fs::read(mnt.join("archive.tar")).unwrap(), *fx.stream);
    let out = run(Command::new("umount").arg(&mnt));
    assert_success(&out, "umount");
    wait_until("the mount to go", || !is_mounted(&mnt));
}

/// Another user's `tartape umount` of root's mount says why it cannot, and leaves it.
#[test]
fn umount_by_another_user_says_it_is_not_theirs() {
    use std::os::unix::fs::PermissionsExt;
    if !can_run(
        "umount_by_another_user_says_it_is_not_theirs",
        Needs {
            fuse: true,
            root: true,
            tools: &["setpriv"],
        },
    ) {
        return;
    }
    let fx = Fixture::new();
    fs::set_permissions(fx.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mounted = fx.mount(&[]);
    let out = as_nobody(
        fx.dir.path(),
        &[],
        &["umount", mounted.mnt.to_str().unwrap()],
    );
    assert_one_line_error(
        &out,
        1,
        "cannot unmount: not the owner of this mount (uid 0",
    );
    assert!(is_mounted(&mounted.mnt), "the mount went");
}

/// `-q` on `mount` (which records first, mounts, and says where and how) and on `umount`:
/// nothing on standard output or error; the mount works all the same.
#[test]
fn quiet_mount_and_umount_print_nothing() {
    if !can_mount("quiet_mount_and_umount_print_nothing", &[]) {
        return;
    }
    let fx = Fixture::new();
    // A source with no catalog yet: the recording summary is silenced too.
    let fresh = fx.dir.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    fs::write(fresh.join("a.txt"), b"quiet\n").unwrap();
    let catalog = fx.dir.path().join("fresh.db");
    let out = run(tartape()
        .arg("-q")
        .arg("mount")
        .arg(&fresh)
        .arg(fx.mnt_path())
        .arg("--catalog")
        .arg(&catalog)
        .env("XDG_STATE_HOME", fx.dir.path()));
    let mounted = Mounted {
        mnt: fx.mnt(),
        stdout: stdout(&out),
    };
    assert_success(&out, "tartape -q mount");
    assert_eq!((stdout(&out).as_str(), stderr(&out).as_str()), ("", ""));
    assert!(catalog.is_file(), "recorded first");
    let expected = run(tartape()
        .args(["stream"])
        .arg(&fresh)
        .arg("--catalog")
        .arg(&catalog));
    assert_eq!(
        fs::read(mounted.mnt.join("archive.tar")).unwrap(),
        expected.stdout
    );
    let out = run(tartape().arg("-q").arg("umount").arg(&mounted.mnt));
    assert_success(&out, "tartape -q umount");
    assert_eq!((stdout(&out).as_str(), stderr(&out).as_str()), ("", ""));
    wait_until("the mount to go", || !is_mounted(&mounted.mnt));
}
