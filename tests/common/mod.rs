//! What the integration tests share: the binary under test, commands with a timeout,
//! one-line error checks, tools that must be present in CI, mounts that are always
//! unmounted.
//!
//! `TARTAPE_TEST_BIN` runs the tests against another build of `tartape` (say, an older
//! commit's, to see a regression test fail there).
#![allow(dead_code)] // each test file uses its own part of this

pub mod s3;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest any single command or wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The `tartape` binary under test.
pub fn bin() -> PathBuf {
    std::env::var_os("TARTAPE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tartape")))
}

/// A `tartape` command.
pub fn tartape() -> Command {
    Command::new(bin())
}

/// Whether missing tools fail tests instead of skipping them (`scripts/test.sh`, CI).
pub fn tools_required() -> bool {
    std::env::var("TARTAPE_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// What a test needs besides the binary.
#[derive(Default)]
pub struct Needs<'a> {
    pub fuse: bool,
    pub root: bool,
    pub tools: &'a [&'a str],
}

/// True when everything `needs` names is here; otherwise a loud SKIP, or a failure when
/// tools are required.
pub fn can_run(test: &str, needs: Needs<'_>) -> bool {
    let mut missing: Vec<String> = Vec::new();
    if needs.fuse && !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse".into());
    }
    if needs.root && !is_root() {
        missing.push("root".into());
    }
    missing.extend(
        needs
            .tools
            .iter()
            .filter(|tool| !on_path(tool))
            .map(|tool| tool.to_string()),
    );
    if missing.is_empty() {
        return true;
    }
    let message = format!("{test}: missing {}", missing.join(", "));
    if tools_required() {
        panic!("{message} (TARTAPE_REQUIRE_TOOLS=1 / CI=true: they are required)");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        io::stderr(),
        "\n!!!!!!!! SKIP {message} — this test did NOT run !!!!!!!!\n"
    );
    false
}

/// Says loudly that `test` checked nothing here, and why (a property of this machine,
/// not a missing tool: it never fails).
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(
        io::stderr(),
        "\n!!!!!!!! SKIP {test}: {why} — this test did NOT run !!!!!!!!\n"
    );
}

/// Runs `command` to completion with null stdin, killing it and failing the test after
/// [`TIMEOUT`].
pub fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{shown}: {err}"));
    wait_output(child, &shown)
}

/// Collects a child's output, killing it and failing the test after [`TIMEOUT`].
pub fn wait_output(mut child: Child, shown: &str) -> Output {
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|stream| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut buf);
            }
            buf
        })
    })
    .collect();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // What it said before it was stopped.
            let said: Vec<String> = readers
                .into_iter()
                .map(|r| String::from_utf8_lossy(&r.join().unwrap_or_default()).into_owned())
                .collect();
            panic!(
                "{shown}: timed out after {TIMEOUT:?}\nstdout: {}\nstderr: {}",
                said[0], said[1]
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let mut outputs = readers.into_iter().map(|r| r.join().unwrap());
    Output {
        status,
        stdout: outputs.next().unwrap(),
        stderr: outputs.next().unwrap(),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_success(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Exit status `code`, exactly one line on stderr starting with `error:` and holding
/// `must_contain`, no panic. Returns the line.
pub fn assert_one_line_error(o: &Output, code: i32, must_contain: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(
        err.contains(must_contain),
        "expected {must_contain:?} in: {err}"
    );
    err
}

/// Sets a path's atime and mtime without following a symlink.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// The binary under test, reachable by any user: a link to it (a copy across
/// filesystems) in `dir/.tartape-bin/`. The build's own `target/debug/` may not be:
/// a clone in root's home (`/root` is 0700) or in a `mktemp -d` folder is closed to others.
/// `dir` must be open to the user who runs it.
pub fn reachable_bin(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let place = dir.join(".tartape-bin");
    let exe = place.join("tartape");
    if !exe.exists() {
        fs::create_dir_all(&place).unwrap();
        fs::set_permissions(&place, fs::Permissions::from_mode(0o755)).unwrap();
        if fs::hard_link(bin(), &exe).is_err() {
            fs::copy(bin(), &exe)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin().display(), exe.display()));
        }
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    }
    exe
}

/// `tartape` in `dir` as uid/gid 65534 through `setpriv` (a copy of the binary it can
/// reach, see [`reachable_bin`]), with `extra` setpriv options (supplementary groups are
/// cleared unless `extra` sets them); background mount logs go to `dir`.
pub fn nobody_command(dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534"]);
    if !extra
        .iter()
        .any(|e| e.starts_with("--groups") || e.starts_with("--keep"))
    {
        c.arg("--clear-groups");
    }
    c.args(extra)
        .arg(reachable_bin(dir))
        .current_dir(dir)
        .env("XDG_STATE_HOME", dir);
    c
}

/// Runs `tartape ARGS` in `dir` as uid/gid 65534 (see [`nobody_command`]).
pub fn as_nobody(dir: &Path, extra: &[&str], args: &[&str]) -> Output {
    run(nobody_command(dir, extra).args(args))
}

/// `(seconds, nanoseconds)` of a path's mtime.
pub fn mtime_of(path: &Path) -> (i64, i64) {
    let st = rustix::fs::lstat(path).unwrap();
    #[allow(clippy::unnecessary_cast)]
    (st.st_mtime as i64, st.st_mtime_nsec as i64)
}

/// xorshift64*: deterministic bytes and choices without a `rand` dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Reads `len` bytes at `offset` (fewer at the end of the file).
pub fn read_range(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let read = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Reads `len` bytes at `offset` of the file at `path`.
pub fn read_path_range(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    read_range(&File::open(path)?, offset, len)
}

/// Runs `work` in a thread and fails the test if it has not finished within [`TIMEOUT`],
/// so that a hung mount fails the test (and the caller's guards still unmount).
pub fn timed<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let _ = sender.send(work());
    });
    match receiver.recv_timeout(TIMEOUT) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: timed out after {TIMEOUT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// True when `path` (canonical) is a mount point in this namespace.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// Waits at most `limit` for `child` to end; past it, kills it (by its pid: never left
/// running) and fails the test, saying `what` was awaited.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A mount point that is unmounted when dropped (by `tartape umount`, then lazily),
/// however the test ends.
pub struct Mounted {
    pub mnt: PathBuf,
    pub stdout: String,
}

impl Mounted {
    /// The pid of the serving process, as `tartape mount` printed it.
    pub fn pid(&self) -> i32 {
        self.stdout
            .lines()
            .find_map(|line| line.split("pid ").nth(1))
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {:?}", self.stdout))
    }

    /// The log file of the serving process, as `tartape mount` printed it.
    pub fn log(&self) -> PathBuf {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix("log: "))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no log path in {:?}", self.stdout))
    }

    /// Mounts `source` at `mnt` in the background with `args`; logs go to `logs`.
    pub fn new(source: &Path, mnt: &Path, logs: &Path, args: &[&str]) -> Mounted {
        Mounted::with_env(source, mnt, logs, args, &[])
    }

    /// As [`Mounted::new`], the mount (and its serving process) run with `env` too.
    pub fn with_env(
        source: &Path,
        mnt: &Path,
        logs: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Mounted {
        let output = run(tartape()
            .arg("mount")
            .arg(source)
            .arg(mnt)
            .args(args)
            .envs(env.iter().copied())
            .env("XDG_STATE_HOME", logs));
        let mnt = mnt.canonicalize().unwrap();
        let mounted = Mounted {
            mnt: mnt.clone(),
            stdout: stdout(&output),
        };
        assert_success(&output, "tartape mount");
        assert!(
            is_mounted(&mnt),
            "tartape mount returned, nothing is mounted"
        );
        mounted
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount_quietly(&self.mnt);
    }
}

pub fn unmount_quietly(mnt: &Path) {
    if !is_mounted(mnt) {
        return;
    }
    if let Ok(child) = tartape()
        .arg("umount")
        .arg(mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut child = child;
            let _ = sender.send(child.wait());
        });
        let _ = receiver.recv_timeout(Duration::from_secs(10));
    }
    if is_mounted(mnt) {
        let _ = Command::new("fusermount3").arg("-uz").arg(mnt).status();
    }
    if is_mounted(mnt) {
        let _ = Command::new("umount").arg("-l").arg(mnt).status();
    }
}

/// Creates `levels` nested directories of 203-byte names under `root`, one at a time
/// (relative to each other's descriptors: the whole path is longer than `PATH_MAX` from
/// 21 levels on, and no single system call takes it), and in the deepest a file
/// `deepest.txt` holding `content`; returns its path relative to `root`.
pub fn make_deep_file(root: &Path, levels: usize, content: &[u8]) -> Vec<u8> {
    use rustix::fs::{Mode, OFlags};
    let dir_flags = OFlags::DIRECTORY | OFlags::RDONLY;
    let mut dir = rustix::fs::open(root, dir_flags, Mode::empty()).unwrap();
    let mut rel = Vec::new();
    for i in 0..levels {
        let name = format!("{i:02}-{}", "d".repeat(200));
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(&dir, name.as_str(), dir_flags, Mode::empty()).unwrap();
        rel.extend_from_slice(name.as_bytes());
        rel.push(b'/');
    }
    let file = rustix::fs::openat(
        &dir,
        "deepest.txt",
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&file, content).unwrap();
    rel.extend_from_slice(b"deepest.txt");
    rel
}
