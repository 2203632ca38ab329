//! Shared helpers for `tests/compat.rs`: running the binary and external tools, the Python
//! reference harness, generated trees, and an independent model of the tape format (SPEC §1)
//! used both as an oracle and for readable failure reports. Also used by `tests/long.rs`.

#![allow(dead_code)] // each test file uses its own part of this

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use md5::{Digest, Md5};
use sha2::Sha256;

pub mod extract;

pub const BLOCK: u64 = 512;
pub const FOOTER: u64 = 1024;

// ---------------------------------------------------------------------------------------------
// Running things
// ---------------------------------------------------------------------------------------------

/// The `tartape` binary under test (`TARTAPE_TEST_BIN` for another build, as in
/// `tests/common`).
pub fn bin() -> PathBuf {
    std::env::var_os("TARTAPE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tartape")))
}

pub fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

/// Runs `tartape ARGS`, returns the raw output.
pub fn tartape(args: &[OsString]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn tartape")
}

/// Runs `tartape ARGS` and panics with full diagnostics unless it exits 0.
pub fn tartape_ok(args: &[OsString]) -> Output {
    let out = tartape(args);
    if !out.status.success() {
        panic!(
            "tartape {:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// `tartape record DIR --catalog CAT` → the fingerprint printed on stdout.
pub fn record(dir: &Path, catalog: &Path) -> String {
    let out = tartape_ok(&[os("record"), os(dir), os("--catalog"), os(catalog)]);
    parse_fingerprint(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_fingerprint(stdout: &str) -> String {
    for line in stdout.lines() {
        if let Some(rest) = line.trim().strip_prefix("fingerprint:") {
            let fp = rest.trim().to_string();
            assert!(
                fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
                "malformed fingerprint line {line:?}"
            );
            return fp;
        }
    }
    panic!("no `fingerprint: <hex>` line in record output:\n{stdout}");
}

/// `tartape stream DIR --catalog CAT [--offset O] [--length L] -o OUT` → the bytes written.
pub fn stream_to_file(
    dir: &Path,
    catalog: &Path,
    offset: Option<u64>,
    length: Option<u64>,
    out: &Path,
) -> Vec<u8> {
    let mut args = vec![os("stream"), os(dir), os("--catalog"), os(catalog)];
    if let Some(o) = offset {
        args.extend([os("--offset"), os(o.to_string())]);
    }
    if let Some(l) = length {
        args.extend([os("--length"), os(l.to_string())]);
    }
    args.extend([os("-o"), os(out)]);
    tartape_ok(&args);
    fs::read(out).expect("read stream output")
}

/// Same as [`stream_to_file`] but the bytes come from stdout (a pipe).
pub fn stream_to_stdout(
    dir: &Path,
    catalog: &Path,
    offset: Option<u64>,
    length: Option<u64>,
) -> Vec<u8> {
    let mut args = vec![os("stream"), os(dir), os("--catalog"), os(catalog)];
    if let Some(o) = offset {
        args.extend([os("--offset"), os(o.to_string())]);
    }
    if let Some(l) = length {
        args.extend([os("--length"), os(l.to_string())]);
    }
    tartape_ok(&args).stdout
}

/// Runs a command under `umask 022` (so permission restoring does not depend on the caller's
/// umask; anonymised modes never carry group/other write bits, so 022 changes nothing).
pub fn umask022(program: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(program)
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tool availability
// ---------------------------------------------------------------------------------------------

pub use crate::common::{Rng, mkfifo, set_mtime, tools_required};

/// Fails when tools are required (CI), otherwise prints a loud SKIP and returns false.
pub fn missing_tool(tool: &str, why: &str) -> bool {
    if tools_required() {
        panic!("required tool missing: {tool} ({why}); TARTAPE_REQUIRE_TOOLS=1 is set");
    }
    // straight to fd 2: the test harness captures eprintln! but not io::stderr()
    let _ = writeln!(
        std::io::stderr(),
        "\n**************** SKIP: {tool} missing ({why}) ****************\n"
    );
    false
}

fn probe(program: &str, args: &[&str], must_contain: Option<&str>) -> Result<(), String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Err(e) => Err(format!("cannot run `{program}`: {e}")),
        Ok(o) if !o.status.success() => Err(format!(
            "`{program} {}` exited with {}",
            args.join(" "),
            o.status
        )),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            match must_contain {
                Some(s) if !text.contains(s) => Err(format!(
                    "`{program}` is not {s}: {}",
                    text.lines().next().unwrap_or("")
                )),
                _ => Ok(()),
            }
        }
    }
}

/// Checks a tool; true when usable. See [`missing_tool`] for the missing case.
pub fn have_tool(tool: &str) -> bool {
    let r = match tool {
        "GNU tar" => probe("tar", &["--version"], Some("GNU tar")),
        "bsdtar" => probe("bsdtar", &["--version"], Some("libarchive")),
        "7z" => probe("7z", &["i"], None),
        "python3" => probe("python3", &["-c", "import tarfile"], None),
        other => panic!("unknown tool {other}"),
    };
    match r {
        Ok(()) => true,
        Err(why) => missing_tool(tool, &why),
    }
}

// ---------------------------------------------------------------------------------------------
// The Python reference (tartape 3.0.3 from PyPI in a virtualenv)
// ---------------------------------------------------------------------------------------------

pub const PY_TARTAPE_VERSION: &str = "3.0.3";

const PY_RECORD: &str = r#"import sys, tartape
t = tartape.record(sys.argv[1], catalog_path=sys.argv[2], exclude=[])
data = t.as_file().read()
open(sys.argv[3], "wb").write(data); print(t.fingerprint)
"#;

fn py_check_version(python: &Path) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-c", "import tartape; print(tartape.__version__)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && v == PY_TARTAPE_VERSION {
        Ok(())
    } else {
        Err(format!(
            "{} does not provide tartape {PY_TARTAPE_VERSION} (got {v:?}; {})",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn create_venv(dir: &Path) -> Result<PathBuf, String> {
    let python = dir.join("bin").join("python");
    let ok_marker = dir.join(".tartape-ok");
    if ok_marker.exists() && py_check_version(&python).is_ok() {
        return Ok(python);
    }
    let _ = fs::remove_dir_all(dir);
    let out = Command::new("python3")
        .args([OsStr::new("-m"), OsStr::new("venv"), dir.as_os_str()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 -m venv failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("tartape=={PY_TARTAPE_VERSION}"),
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip install tartape=={PY_TARTAPE_VERSION} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    py_check_version(&python)?;
    fs::write(&ok_marker, b"ok\n").map_err(|e| e.to_string())?;
    Ok(python)
}

/// The interpreter of a virtualenv that has tartape 3.0.3, created once per machine under
/// `target/py-tartape-venv` (a file lock serialises concurrent test processes, a OnceLock
/// concurrent tests in this process). `TARTAPE_PY_TARTAPE=/path/to/python` uses an existing
/// interpreter instead.
pub fn py_tartape() -> Option<PathBuf> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = VENV.get_or_init(|| {
        if let Some(p) = std::env::var_os("TARTAPE_PY_TARTAPE") {
            let p = PathBuf::from(p);
            return py_check_version(&p).map(|_| p);
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .to_path_buf();
        fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        let lock = File::create(target.join("py-tartape-venv.lock")).map_err(|e| e.to_string())?;
        lock.lock().map_err(|e| format!("lock: {e}"))?;
        let r = create_venv(&target.join("py-tartape-venv"));
        let _ = lock.unlock();
        r
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            missing_tool("python3 venv + pip install tartape==3.0.3", why);
            None
        }
    }
}

/// Records DIR with the Python tartape (catalog CAT, which must lie outside DIR) and returns
/// (tape bytes, fingerprint).
pub fn python_reference(
    python: &Path,
    dir: &Path,
    catalog: &Path,
    work: &Path,
) -> (Vec<u8>, String) {
    let script = work.join("py_record.py");
    fs::write(&script, PY_RECORD).unwrap();
    let tape = work.join("python.tar");
    let out = run_ok(
        Command::new(python)
            .arg(&script)
            .arg(dir)
            .arg(catalog)
            .arg(&tape)
            .stdin(Stdio::null()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fp = stdout.lines().last().unwrap_or("").trim().to_string();
    assert_eq!(fp.len(), 64, "python printed no fingerprint: {stdout:?}");
    (fs::read(&tape).unwrap(), fp)
}

const PY_VOLUMES: &str = r#"import sys, os, json, hashlib, tartape
t = tartape.record(sys.argv[1], exclude=[])
def lossy(p):
    return os.fsencode(p).decode("utf-8", "replace")
for size in sys.argv[2:]:
    for v in t.iter_volumes(int(size)):
        with v:
            data = v.read()
        entries = [
            [lossy(e.info.arc_path), e.state.value, e.local_window.start, e.local_window.end,
             None if e.slice is None else
             [e.slice.volume_offset, e.slice.volume_length, e.slice.source_offset]]
            for e in v.manifest.entries
        ]
        print(json.dumps({"size": int(size), "name": v.name, "start": v.start_offset,
                          "end": v.end_offset, "sha256": hashlib.sha256(data).hexdigest(),
                          "entries": entries}))
print(t.fingerprint)
"#;

/// One volume as the Python tartape cuts it.
pub struct PyVolume {
    /// The volume size it was cut with.
    pub size: u64,
    pub name: String,
    pub start: u64,
    pub end: u64,
    /// Of the volume's bytes.
    pub sha256: String,
    /// Its manifest: `[arc_path, state, local start, local end, [volume_offset, length,
    /// source_offset] or null]` for every entry overlapping it.
    pub entries: Vec<serde_json::Value>,
}

/// Records DIR with the Python tartape (its default catalog, `<DIR>.tartape` beside DIR,
/// whose stem — the root name — names the volumes) and lists `Tape.iter_volumes(size)`
/// for every size, with the sha256 of each volume's bytes and its manifest. Returns them
/// and the fingerprint.
pub fn python_volumes(
    python: &Path,
    dir: &Path,
    work: &Path,
    sizes: &[u64],
) -> (Vec<PyVolume>, String) {
    let script = work.join("py_volumes.py");
    fs::write(&script, PY_VOLUMES).unwrap();
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(dir);
    for size in sizes {
        cmd.arg(size.to_string());
    }
    let out = run_ok(cmd.stdin(Stdio::null()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    let fp = lines.pop().unwrap_or("").trim().to_string();
    assert_eq!(fp.len(), 64, "python printed no fingerprint: {stdout:?}");
    let volumes = lines
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("unexpected python line {line:?}: {e}"));
            let n = |k: &str| v[k].as_u64().unwrap();
            let text = |k: &str| v[k].as_str().unwrap().to_string();
            PyVolume {
                size: n("size"),
                name: text("name"),
                start: n("start"),
                end: n("end"),
                sha256: text("sha256"),
                entries: v["entries"].as_array().unwrap().clone(),
            }
        })
        .collect();
    (volumes, fp)
}

const PY_RECORD_SLICES: &str = r#"import sys, tartape
t = tartape.record(sys.argv[1], catalog_path=sys.argv[2], exclude=[])
for i, spec in enumerate(sys.argv[4:]):
    o, l = spec.split(":")
    o, l = int(o), (int(l) if l else None)
    buf = bytearray()
    g = t.play(start_offset=o)
    for chunk in g:
        buf += chunk
        if l is not None and len(buf) >= l:
            break
    g.close()
    open(f"{sys.argv[3]}.{i}", "wb").write(bytes(buf if l is None else buf[:l]))
print(t.fingerprint)
"#;

/// Like [`python_reference`], but returns only the slices `(offset, Some(len) | None = to the
/// end)` of Python's tape (via `Tape.play(start_offset)`, stopped early), so that huge sparse
/// files are never streamed whole.
pub fn python_reference_slices(
    python: &Path,
    dir: &Path,
    catalog: &Path,
    work: &Path,
    slices: &[(u64, Option<u64>)],
) -> (Vec<Vec<u8>>, String) {
    let script = work.join("py_record_slices.py");
    fs::write(&script, PY_RECORD_SLICES).unwrap();
    let out_base = work.join("python-slice");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(dir).arg(catalog).arg(&out_base);
    for (o, l) in slices {
        cmd.arg(format!(
            "{o}:{}",
            l.map(|l| l.to_string()).unwrap_or_default()
        ));
    }
    let out = run_ok(cmd.stdin(Stdio::null()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fp = stdout.lines().last().unwrap_or("").trim().to_string();
    assert_eq!(fp.len(), 64, "python printed no fingerprint: {stdout:?}");
    let parts = (0..slices.len())
        .map(|i| fs::read(format!("{}.{i}", out_base.display())).unwrap())
        .collect();
    (parts, fp)
}

/// Panics with a hex dump of both sides unless the slice at tape offset `at` is identical.
pub fn assert_same_slice(label_a: &str, a: &[u8], label_b: &str, b: &[u8], at: u64) {
    if a == b {
        return;
    }
    let d = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = d - d % 16;
    let show = |t: &[u8], o: &[u8]| {
        let w = &t[from.min(t.len())..(from + 256).min(t.len())];
        let ow = &o[from.min(o.len())..(from + 256).min(o.len())];
        hexdump(w, at + from as u64, Some(ow))
    };
    panic!(
        "slice at tape offset {at}: {label_a} has {} bytes, {label_b} has {}; first difference \
         at tape offset {}\n--- {label_a} ---\n{}--- {label_b} ---\n{}",
        a.len(),
        b.len(),
        at + d as u64,
        show(a, b),
        show(b, a),
    );
}

// ---------------------------------------------------------------------------------------------
// Files, times, PRNG
// ---------------------------------------------------------------------------------------------

pub fn write_file(path: &Path, content: &[u8], mode: u32) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn symlink(target: impl AsRef<OsStr>, path: &Path) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    std::os::unix::fs::symlink(target.as_ref(), path).unwrap();
}

/// Every path below and including `root` (no symlink following), deepest first.
pub fn all_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            let mut kids: Vec<PathBuf> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            kids.sort();
            out.extend(kids);
        }
        i += 1;
    }
    out.reverse();
    out
}

/// Gives every path under `root` a distinct explicit mtime with a non-zero nanosecond part
/// (never within 120 ns of the next second, where Python's float st_mtime rounds up).
pub fn set_all_mtimes(root: &Path, base: i64) {
    for (i, p) in all_paths(root).iter().enumerate() {
        let i = i as i64;
        set_mtime(p, base + i * 7919, (i * 123_456_789 + 1) % 999_000_000);
    }
}

pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        write!(s, "{x:02x}").unwrap();
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Generated trees
// ---------------------------------------------------------------------------------------------

/// The name of the root of generated trees (non-ASCII on purpose; 7 bytes in UTF-8).
pub const ROOT_NAME: &str = "Tree-ß";

/// Builds the compatibility tree under `parent/Tree-ß` and returns its path. It holds every
/// case the brief lists, plus special files that both implementations must skip.
pub fn build_compat_tree(parent: &Path) -> PathBuf {
    let root = parent.join(ROOT_NAME);
    fs::create_dir_all(&root).unwrap();
    assert_eq!(ROOT_NAME.len() + 1, 8);
    let f = |rel: &str| root.join(rel);
    let mut rng = Rng::new(0x7a27_a9e5);

    // memcmp order differs from depth-first order: D < d < d-z < d.txt < d/x < d0
    write_file(&f("D/upper.txt"), b"UPPER\n", 0o644);
    write_file(&f("d/x"), b"x in d\n", 0o644);
    write_file(&f("d.txt"), b"d dot txt\n", 0o644);
    write_file(&f("d-z"), b"dash\n", 0o644);
    write_file(&f("d0"), b"zero\n", 0o644);

    // sizes around block boundaries
    for n in [0usize, 1, 511, 512, 513, 1024 * 1024 + 1] {
        write_file(&f(&format!("sizes/{n}")), &rng.bytes(n), 0o644);
    }
    write_file(&f("empty.txt"), b"", 0o644);

    // modes: anonymised to 0755 when any x bit is set, else 0644
    write_file(&f("modes/exec.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write_file(&f("modes/user_x"), b"u\n", 0o700);
    write_file(&f("modes/group_x"), b"g\n", 0o610);
    write_file(&f("modes/other_x"), b"o\n", 0o601);
    write_file(&f("modes/plain_600"), b"p\n", 0o600);
    write_file(&f("modes/world_rw"), b"w\n", 0o666);
    write_file(&f("modes/read_only"), b"r\n", 0o444);
    write_file(&f("modes/setuid"), b"s\n", 0o4755);
    fs::create_dir_all(f("modes/private_dir")).unwrap();
    write_file(&f("modes/private_dir/inside"), b"i\n", 0o644);
    fs::set_permissions(f("modes/private_dir"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(f("modes/sticky_dir")).unwrap();
    fs::set_permissions(f("modes/sticky_dir"), fs::Permissions::from_mode(0o1777)).unwrap();

    // empty directories
    fs::create_dir_all(f("empty_dir")).unwrap();
    fs::create_dir_all(f("nested/empty/leaf")).unwrap();

    // symlinks: to a file, to a directory, dangling, absolute, non-ASCII, 100-byte target
    symlink("../d.txt", &f("links/to_file"));
    symlink("../d", &f("links/to_dir"));
    symlink("does/not/exist", &f("links/dangling"));
    symlink("/nonexistent/tartape/absolute", &f("links/absolute"));
    symlink("../grüße.txt", &f("links/ünïcödé"));
    symlink("t".repeat(100), &f("links/target100"));
    symlink(".", &f("links/self"));
    symlink("d", &f("dirlink"));

    // non-ASCII names
    write_file(&f("grüße.txt"), "Grüße aus Köln\n".as_bytes(), 0o644);
    write_file(&f("日本語/ファイル.txt"), "日本語\n".as_bytes(), 0o644);
    write_file(&f("emoji-😀.txt"), "😀\n".as_bytes(), 0o644);
    write_file(&f("café/naïve.md"), b"# naive\n", 0o644);
    write_file(&f("with space.txt"), b"space\n", 0o644);

    // a 100-byte path component (a file: Python limits directory leaves to 99 bytes)
    write_file(
        &f(&format!("long/{}", "a".repeat(100))),
        b"hundred\n",
        0o644,
    );
    // a file whose arc path is exactly 100 bytes (no split) and a directory whose header
    // path is 101 bytes because of its trailing slash (split needed)
    write_file(
        &f(&format!("exact100/{}", "e".repeat(83))),
        b"exactly 100\n",
        0o644,
    );
    fs::create_dir_all(f(&format!("dir100/{}", "f".repeat(85)))).unwrap();
    // a deep path split at its last slash
    let mut deep = String::from("deep");
    for i in 0..6 {
        deep.push_str(&format!("/segment-{i:02}-xxxxxxxxxx"));
    }
    write_file(&f(&format!("{deep}/final-file-name.txt")), b"deep\n", 0o644);
    // the right-most slash leaves a prefix > 155 bytes: the split must move one slash left
    let split2 = format!(
        "split2/{}/{}/{}/{}",
        "a".repeat(90),
        "b".repeat(40),
        "c".repeat(30),
        "d".repeat(40)
    );
    assert_eq!(8 + split2.len(), 218);
    write_file(&f(&split2), b"split left\n", 0o644);
    // a 255-byte arc path: prefix of exactly 155 bytes, name of 99
    let max255 = format!(
        "max255/{}/{}/{}",
        "m".repeat(90),
        "n".repeat(49),
        "z".repeat(99)
    );
    assert_eq!(8 + max255.len(), 255);
    write_file(&f(&max255), b"two five five\n", 0o644);

    // a hard link is recorded as an independent regular file
    fs::hard_link(f("sizes/513"), f("hardlink")).unwrap();

    // special files are skipped by both implementations
    write_file(&f("special/regular.txt"), b"regular\n", 0o644);
    mkfifo(&f("special/fifo"));
    drop(std::os::unix::net::UnixListener::bind(f("special/sock")).unwrap());

    set_all_mtimes(&root, 1_600_000_000);
    // edge mtimes: the epoch, whole seconds, past 2038, the largest 11-digit octal value
    set_mtime(&f("d0"), 0, 0);
    set_mtime(&f("d-z"), 1_650_000_000, 0);
    set_mtime(&f("modes/read_only"), 2_147_483_648, 5);
    set_mtime(&f("empty.txt"), 8_589_934_591, 0);
    root
}

/// A relative path under `dir` whose arc path (`Tree-ß/` + it) is `arc_len` bytes, made of
/// 59-byte directories and a final name of at least 20 bytes.
pub fn rel_of_arc_len(dir: &str, arc_len: usize) -> String {
    let mut rel = format!("{dir}/");
    let base = ROOT_NAME.len() + 1;
    let mut i = 0;
    while base + rel.len() + 60 + 20 < arc_len {
        rel.push_str(&format!("{:x<59}/", format!("seg{i}-")));
        i += 1;
    }
    let name = arc_len - base - rel.len();
    rel.push_str(&format!("{:n<name$}", "name-"));
    assert_eq!(base + rel.len(), arc_len);
    rel
}

/// The long-entries tree of SPEC §1 "Long entries (PAX)", with short entries around every
/// long one: header paths of 256, 1,000 and 3,000 bytes (and directories on the way whose
/// own paths are long), single components of 101 and 255 bytes (files and directories), a
/// path of at most 255 bytes with no valid ustar split, symlink targets of 101 and 900
/// bytes, a symlink with both a long path and a long target, long names that are not
/// UTF-8 (a file, and a symlink's target).
pub fn build_long_tree(parent: &Path) -> PathBuf {
    let root = parent.join(ROOT_NAME);
    fs::create_dir_all(&root).unwrap();
    let f = |rel: &str| root.join(rel);
    let mut rng = Rng::new(0x1009_cafe);
    write_file(&f("a.txt"), b"first\n", 0o644);
    for (dir, len, size) in [
        ("p256", 256, 700),
        ("p1000", 1000, 5000),
        ("p3000", 3000, 1),
    ] {
        let rel = rel_of_arc_len(dir, len);
        write_file(&f(&rel), &rng.bytes(size), 0o644);
        // a short sibling after it, and one before it in a long directory
        let parent = Path::new(&rel)
            .parent()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        write_file(&f(&format!("{parent}/0")), b"short name, long dir\n", 0o755);
        write_file(&f(&format!("{dir}.after")), b"after\n", 0o644);
    }
    // components of 101 and 255 bytes: files and directories
    write_file(&f(&"f".repeat(101)), &rng.bytes(513), 0o755);
    write_file(&f(&format!("c255/{}", "g".repeat(255))), b"255\n", 0o644);
    write_file(&f(&format!("{}/in", "D".repeat(101))), b"in D\n", 0o644);
    write_file(&f(&format!("{}/in", "E".repeat(255))), b"in E\n", 0o644);
    fs::create_dir_all(f(&format!("empty/{}", "e".repeat(255)))).unwrap();
    // 255 bytes that split (prefix 155, name 99): plain ustar; a directory of 255 bytes,
    // 256 with its slash: long
    let p255 = format!("p255/{}/{}", "m".repeat(142), "z".repeat(99));
    assert_eq!(ROOT_NAME.len() + 1 + p255.len(), 255);
    write_file(&f(&p255), b"two five five\n", 0o644);
    let d255 = format!("d255/{}/{}", "q".repeat(142), "w".repeat(99));
    write_file(
        &f(&format!("{d255}/f")),
        b"in a 255-byte directory\n",
        0o644,
    );
    // at most 255 bytes, but no slash leaves a prefix <= 155 and a name <= 100
    let nosplit = format!(
        "ns/{}/{}/{}",
        "a".repeat(76),
        "b".repeat(79),
        "n".repeat(86)
    );
    assert_eq!(ROOT_NAME.len() + 1 + nosplit.len(), 254);
    write_file(&f(&nosplit), b"no split\n", 0o644);
    // symlink targets over 100 bytes (dangling and not)
    fs::create_dir_all(f("links")).unwrap();
    symlink("t".repeat(101), &f("links/t101"));
    let target900: String = (0..90).map(|i| format!("../dir{i:04}")).collect();
    assert_eq!(target900.len(), 900);
    symlink(&target900, &f("links/t900"));
    symlink("../a.txt", &f("links/short"));
    let long_dir = Path::new(&rel_of_arc_len("p1000", 1000))
        .parent()
        .unwrap()
        .to_path_buf();
    symlink("x".repeat(150), &root.join(&long_dir).join("both"));
    // names that are not UTF-8
    let mut bin = b"bin/\xff\xfe-".to_vec();
    bin.extend_from_slice("n".repeat(120).as_bytes());
    write_file(&root.join(OsStr::from_bytes(&bin)), b"binary name\n", 0o644);
    let mut bin_target = b"\xff".repeat(3);
    bin_target.extend_from_slice("t".repeat(120).as_bytes());
    symlink(OsStr::from_bytes(&bin_target), &f("bin/target"));
    write_file(&f("zz.txt"), b"last\n", 0o644);
    set_all_mtimes(&root, 1_650_000_000);
    root
}

/// A smaller tree for slice and event tests, including names that need JSON escaping.
pub fn build_small_tree(parent: &Path, seed: u64) -> PathBuf {
    let root = parent.join(ROOT_NAME);
    let mut rng = Rng::new(seed);
    let f = |rel: &str| root.join(rel);
    fs::create_dir_all(&root).unwrap();
    write_file(&f("a.txt"), b"alpha\n", 0o644);
    write_file(&f("empty"), b"", 0o644);
    write_file(&f("exec"), b"#!/bin/sh\n", 0o755);
    for (i, n) in [700usize, 4096, 65_537, 200_000, 1_000].iter().enumerate() {
        let n = n + rng.below(300) as usize;
        write_file(&f(&format!("data/file{i}.bin")), &rng.bytes(n), 0o644);
    }
    write_file(
        &f("sub/deeper/ünï \"quoted\" \\ back\ttab.txt"),
        b"escape me\n",
        0o644,
    );
    write_file(&f("sub/z.txt"), &rng.bytes(3000), 0o644);
    write_file(
        &f("sub/new\nline\u{1}ctl.txt"),
        b"control characters\n",
        0o644,
    );
    fs::create_dir_all(f("sub/emptydir")).unwrap();
    symlink("../a.txt", &f("sub/link"));
    symlink("nowhere", &f("dangling"));
    set_all_mtimes(&root, 1_700_000_000);
    root
}

// ---------------------------------------------------------------------------------------------
// Independent model of the tape (SPEC §1)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub arc_path: Vec<u8>,
    /// Path relative to the root (empty for the root).
    pub rel: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub target: Vec<u8>,
    pub offset: u64,
    /// A long entry's `x` header and records padded to 512 (SPEC §1), else empty.
    pub pax: Vec<u8>,
}

impl ModelEntry {
    pub fn footprint(&self) -> u64 {
        self.pax.len() as u64 + BLOCK + self.size + (BLOCK - self.size % BLOCK) % BLOCK
    }
    pub fn end(&self) -> u64 {
        self.offset + self.footprint()
    }
    /// Offset of the entry's ustar header (after its `x` header, if any).
    pub fn header_start(&self) -> u64 {
        self.offset + self.pax.len() as u64
    }
    pub fn content_start(&self) -> u64 {
        self.header_start() + BLOCK
    }
    pub fn content_end(&self) -> u64 {
        self.content_start() + self.size
    }
    pub fn arc_str(&self) -> String {
        String::from_utf8_lossy(&self.arc_path).into_owned()
    }
}

pub struct Model {
    pub root: PathBuf,
    pub entries: Vec<ModelEntry>,
    pub total: u64,
}

impl Model {
    /// Builds the expected (anonymised) tape of `root` from lstat() data.
    pub fn from_tree(root: &Path) -> Model {
        let root = root.canonicalize().unwrap();
        let root_name = root.file_name().unwrap().as_bytes().to_vec();
        let mut entries = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let full = if rel.as_os_str().is_empty() {
                root.clone()
            } else {
                root.join(&rel)
            };
            let md = fs::symlink_metadata(&full).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                continue; // FIFO, socket, device: not recorded
            };
            let mut arc_path = root_name.clone();
            if !rel.as_os_str().is_empty() {
                arc_path.push(b'/');
                arc_path.extend_from_slice(rel.as_os_str().as_bytes());
            }
            let mode = match kind {
                Kind::Dir => 0o755,
                Kind::Symlink => 0o777,
                Kind::File if md.mode() & 0o111 != 0 => 0o755,
                Kind::File => 0o644,
            };
            let target = if kind == Kind::Symlink {
                fs::read_link(&full).unwrap().into_os_string().into_vec()
            } else {
                Vec::new()
            };
            entries.push(ModelEntry {
                arc_path,
                rel: rel.clone(),
                kind,
                size: if kind == Kind::File { md.len() } else { 0 },
                mode,
                mtime: md.mtime(),
                target,
                offset: 0,
                pax: Vec::new(),
            });
            if kind == Kind::Dir {
                for e in fs::read_dir(&full).unwrap() {
                    stack.push(rel.join(e.unwrap().file_name()));
                }
            }
        }
        entries.sort_by(|a, b| a.arc_path.cmp(&b.arc_path));
        let mut off = 0;
        for e in &mut entries {
            e.pax = encode_pax(e);
            e.offset = off;
            off += e.footprint();
        }
        Model {
            root,
            entries,
            total: off + FOOTER,
        }
    }

    pub fn data_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    pub fn get(&self, rel: &str) -> &ModelEntry {
        self.entries
            .iter()
            .find(|e| e.rel == Path::new(rel))
            .unwrap_or_else(|| panic!("no entry {rel:?} in model"))
    }

    /// SHA-256 over `<arc_path>|<size>|<mtime>` in tape order.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for e in &self.entries {
            h.update(&e.arc_path);
            h.update(format!("|{}|{}", e.size, e.mtime).as_bytes());
        }
        hex(&h.finalize())
    }

    pub fn content(&self, e: &ModelEntry) -> Vec<u8> {
        assert_eq!(e.kind, Kind::File);
        fs::read(self.root.join(&e.rel)).unwrap()
    }

    /// The expected bytes `[start, min(end, total))` of the tape. Only the overlapping part of
    /// each file is read, so huge sparse files are cheap.
    pub fn render_range(&self, start: u64, end: u64) -> Vec<u8> {
        let end = end.min(self.total);
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        if start >= end {
            return out;
        }
        let first = self.entries.partition_point(|e| e.end() <= start);
        for e in &self.entries[first..] {
            if e.offset >= end {
                break;
            }
            // x header and records of a long entry, then the header
            push_overlap(&mut out, start, end, e.offset, &e.pax);
            let h = encode_header(e);
            push_overlap(&mut out, start, end, e.header_start(), &h);
            // content
            let (cs, ce) = (e.content_start(), e.content_end());
            let (a, b) = (start.max(cs), end.min(ce));
            if a < b {
                let mut file = File::open(self.root.join(&e.rel)).unwrap();
                file.seek(SeekFrom::Start(a - cs)).unwrap();
                let mut buf = vec![0u8; (b - a) as usize];
                file.read_exact(&mut buf).unwrap();
                out.extend_from_slice(&buf);
            }
            // padding
            let (a, b) = (start.max(ce), end.min(e.end()));
            if a < b {
                out.resize(out.len() + (b - a) as usize, 0);
            }
        }
        let fs_ = self.total - FOOTER;
        let (a, b) = (start.max(fs_), end);
        if a < b {
            out.resize(out.len() + (b - a) as usize, 0);
        }
        assert_eq!(out.len() as u64, end - start);
        out
    }
}

fn push_overlap(out: &mut Vec<u8>, start: u64, end: u64, at: u64, bytes: &[u8]) {
    let (a, b) = (start.max(at), end.min(at + bytes.len() as u64));
    if a < b {
        out.extend_from_slice(&bytes[(a - at) as usize..(b - at) as usize]);
    }
}

fn put(h: &mut [u8; 512], at: usize, width: usize, v: &[u8]) {
    assert!(
        v.len() <= width,
        "field at {at} overflows: {} > {width}",
        v.len()
    );
    h[at..at + v.len()].copy_from_slice(v);
}

fn put_octal(h: &mut [u8; 512], at: usize, width: usize, v: u64) {
    let s = format!("{:0w$o}\0", v, w = width - 1);
    put(h, at, width, s.as_bytes());
}

/// A GNU base-256 number field: big-endian two's complement with the top bit set.
fn put_base256(h: &mut [u8; 512], at: usize, width: usize, v: i64) {
    let mut field = vec![if v < 0 { 0xff } else { 0 }; width];
    let be = v.to_be_bytes();
    field[width - 8..].copy_from_slice(&be);
    field[0] |= 0x80;
    put(h, at, width, &field);
}

/// `(name, prefix)` by SPEC §1: right-most slash with prefix ≤ 155 and 1..=100 name bytes;
/// `None` when the path does not fit ustar (over 255 bytes, or no such slash).
pub fn split_path(p: &[u8]) -> Option<(&[u8], &[u8])> {
    if p.len() > 255 {
        return None;
    }
    if p.len() <= 100 {
        return Some((p, &[]));
    }
    for i in (0..p.len()).rev() {
        if p[i] == b'/' {
            let (prefix, name) = (&p[..i], &p[i + 1..]);
            if !name.is_empty() && name.len() <= 100 && prefix.len() <= 155 {
                return Some((name, prefix));
            }
        }
    }
    None
}

/// The path in an entry's header: directories end with `/`.
pub fn model_header_path(e: &ModelEntry) -> Vec<u8> {
    let mut path = e.arc_path.clone();
    if e.kind == Kind::Dir {
        path.push(b'/');
    }
    path
}

/// One PAX record: `"<len> <key>=<value>\n"`, `len` counting the whole record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 1 + key.len() + 1 + value.len() + 1;
    // The smallest length whose decimal digits plus the body are that length.
    let len = (1..)
        .find(|&n: &usize| n.to_string().len() + body == n)
        .unwrap();
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

/// The `x` header and its records padded to 512 for a long entry (SPEC §1 "Long
/// entries"), or nothing.
pub fn encode_pax(e: &ModelEntry) -> Vec<u8> {
    let path = model_header_path(e);
    let long_path = split_path(&path).is_none();
    let long_target = e.target.len() > 100;
    if !long_path && !long_target {
        return Vec::new();
    }
    let mut values: Vec<(&str, &[u8])> = Vec::new();
    if long_target {
        values.push(("linkpath", &e.target));
    }
    if long_path {
        values.push(("path", &path));
    }
    let mut records = Vec::new();
    if values.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
        records.extend(pax_record("hdrcharset", b"BINARY"));
    }
    for (k, v) in values {
        records.extend(pax_record(k, v));
    }
    let mut h = [0u8; 512];
    put(&mut h, 0, 100, b"././@PaxHeader");
    put_octal(&mut h, 100, 8, 0o644);
    put_octal(&mut h, 108, 8, 0);
    put_octal(&mut h, 116, 8, 0);
    put_octal(&mut h, 124, 12, records.len() as u64);
    put_mtime(&mut h, e.mtime);
    h[156] = b'x';
    put(&mut h, 257, 6, b"ustar\0");
    put(&mut h, 263, 2, b"00");
    put(&mut h, 265, 32, b"root");
    put(&mut h, 297, 32, b"root");
    put_checksum(&mut h);
    let mut out = h.to_vec();
    out.extend_from_slice(&records);
    out.resize(512 + records.len().div_ceil(512) * 512, 0);
    out
}

fn put_mtime(h: &mut [u8; 512], mtime: i64) {
    if (0..=0o77777777777).contains(&mtime) {
        put_octal(h, 136, 12, mtime as u64);
    } else {
        put_base256(h, 136, 12, mtime);
    }
}

fn put_checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    put(h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
}

pub fn encode_header(e: &ModelEntry) -> [u8; 512] {
    let mut h = [0u8; 512];
    let path = model_header_path(e);
    // A path that does not fit: its first 100 bytes, no prefix (the `x` header has it all).
    let (name, prefix) = split_path(&path).unwrap_or_else(|| (&path[..100], &[]));
    put(&mut h, 0, 100, name);
    put_octal(&mut h, 100, 8, e.mode as u64);
    put_octal(&mut h, 108, 8, 0);
    put_octal(&mut h, 116, 8, 0);
    if e.size <= 0o77777777777 {
        put_octal(&mut h, 124, 12, e.size);
    } else {
        put_base256(&mut h, 124, 12, e.size as i64);
    }
    put_mtime(&mut h, e.mtime);
    h[156] = match e.kind {
        Kind::File => b'0',
        Kind::Dir => b'5',
        Kind::Symlink => b'2',
    };
    put(&mut h, 157, 100, &e.target[..e.target.len().min(100)]);
    put(&mut h, 257, 6, b"ustar\0");
    put(&mut h, 263, 2, b"00");
    put(&mut h, 265, 32, b"root");
    put(&mut h, 297, 32, b"root");
    put(&mut h, 345, 155, prefix);
    put_checksum(&mut h);
    h
}

// ---------------------------------------------------------------------------------------------
// Parsing tapes (for diagnostics and checks)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ParsedEntry {
    pub offset: u64,
    pub path: Vec<u8>,
    pub size: u64,
    pub typeflag: u8,
}

fn cstr(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

pub fn parse_number(f: &[u8]) -> i128 {
    if f[0] & 0x80 != 0 {
        let neg = f[0] & 0x40 != 0;
        let mut v: i128 = if neg { -1 } else { 0 };
        for (i, &b) in f.iter().enumerate() {
            let b = if i == 0 {
                if neg { b } else { b & 0x7f }
            } else {
                b
            };
            v = (v << 8) | b as i128;
        }
        v
    } else {
        let s = String::from_utf8_lossy(cstr(f)).trim().to_string();
        i128::from_str_radix(if s.is_empty() { "0" } else { &s }, 8).unwrap_or(-1)
    }
}

pub fn header_path(h: &[u8]) -> Vec<u8> {
    let name = cstr(&h[0..100]);
    let prefix = cstr(&h[345..500]);
    if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    }
}

/// Walks the headers of a tape (stops at the first all-zero block or at the end).
pub fn parse_tape(t: &[u8]) -> Vec<ParsedEntry> {
    let mut v = Vec::new();
    let mut off = 0usize;
    while off + 512 <= t.len() {
        let h = &t[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let size = parse_number(&h[124..136]).max(0) as u64;
        let typeflag = h[156];
        let data = if typeflag == b'0' || typeflag == 0 || typeflag == b'x' {
            size
        } else {
            0
        };
        v.push(ParsedEntry {
            offset: off as u64,
            path: header_path(h),
            size,
            typeflag,
        });
        off += 512 + (data + (512 - data % 512) % 512) as usize;
    }
    v
}

pub fn describe_header(h: &[u8]) -> String {
    // a field as a string, trailing NULs summarised
    let s = |r: std::ops::Range<usize>| {
        let f = &h[r];
        let keep = f.len() - f.iter().rev().take_while(|&&b| b == 0).count();
        let text = format!("{:?}", String::from_utf8_lossy(&f[..keep]));
        match f.len() - keep {
            0 => text,
            n => format!("{text}+{n}NUL"),
        }
    };
    let stored_sum = parse_number(&h[148..156]);
    let mut c = h.to_vec();
    c[148..156].fill(b' ');
    let real_sum: u64 = c.iter().map(|&b| b as u64).sum();
    format!(
        "  name     {}\n  mode     {}\n  uid/gid  {} {}\n  size     {} (= {})\n  mtime    {} (= {})\n  chksum   {} (stored {stored_sum}, computed {real_sum})\n  type     {:?}\n  linkname {}\n  magic    {} version {}\n  uname    {} gname {}\n  dev      {} {}\n  prefix   {}\n  tail     {}",
        s(0..100),
        s(100..108),
        s(108..116),
        s(116..124),
        s(124..136),
        parse_number(&h[124..136]),
        s(136..148),
        parse_number(&h[136..148]),
        s(148..156),
        h[156] as char,
        s(157..257),
        s(257..263),
        s(263..265),
        s(265..297),
        s(297..329),
        s(329..337),
        s(337..345),
        s(345..500),
        s(500..512),
    )
}

pub fn hexdump(b: &[u8], base: u64, other: Option<&[u8]>) -> String {
    let mut s = String::new();
    for (i, chunk) in b.chunks(16).enumerate() {
        let row_off = i * 16;
        let differs = other.is_some_and(|o| {
            chunk
                .iter()
                .enumerate()
                .any(|(j, &x)| o.get(row_off + j) != Some(&x))
        });
        write!(
            s,
            "{} {:08x}  ",
            if differs { '*' } else { ' ' },
            base + row_off as u64
        )
        .unwrap();
        for j in 0..16 {
            match chunk.get(j) {
                Some(x) => write!(s, "{x:02x} ").unwrap(),
                None => s.push_str("   "),
            }
        }
        s.push(' ');
        for &x in chunk {
            s.push(if (0x20..0x7f).contains(&x) {
                x as char
            } else {
                '.'
            });
        }
        s.push('\n');
    }
    s
}

/// Panics with a detailed report (first differing byte, the 512-byte header blocks of the entry
/// containing it in hex from both sides, decoded fields, and entry-list differences) unless
/// `a == b`.
pub fn assert_same_tape(label_a: &str, a: &[u8], label_b: &str, b: &[u8]) {
    if a == b {
        return;
    }
    let mut r = String::new();
    writeln!(
        r,
        "tapes differ: {label_a} has {} bytes, {label_b} has {} bytes",
        a.len(),
        b.len()
    )
    .unwrap();
    let d = a
        .iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    writeln!(r, "first differing byte offset: {d}").unwrap();
    let pa = parse_tape(a);
    let pb = parse_tape(b);
    let containing = |p: &[ParsedEntry]| p.iter().rev().find(|e| e.offset as usize <= d).cloned();
    if let Some(e) = containing(&pa) {
        let h = e.offset as usize;
        writeln!(
            r,
            "in {label_a}'s entry {:?} (header at {h}, byte {} of the entry)",
            String::from_utf8_lossy(&e.path),
            d - h
        )
        .unwrap();
        let block = |t: &[u8]| t.get(h..(h + 512).min(t.len())).unwrap_or(&[]).to_vec();
        let (ba, bb) = (block(a), block(b));
        writeln!(
            r,
            "--- {label_a}: 512 bytes at {h} ---\n{}",
            hexdump(&ba, h as u64, Some(&bb))
        )
        .unwrap();
        writeln!(
            r,
            "--- {label_b}: 512 bytes at {h} ---\n{}",
            hexdump(&bb, h as u64, Some(&ba))
        )
        .unwrap();
        if ba.len() == 512 {
            writeln!(
                r,
                "--- {label_a} header fields ---\n{}",
                describe_header(&ba)
            )
            .unwrap();
        }
        if bb.len() == 512 {
            writeln!(
                r,
                "--- {label_b} header fields (same offset) ---\n{}",
                describe_header(&bb)
            )
            .unwrap();
        }
    }
    let la: Vec<String> = pa
        .iter()
        .map(|e| {
            format!(
                "{:>10} {} {:>8} {}",
                e.offset,
                e.typeflag as char,
                e.size,
                String::from_utf8_lossy(&e.path)
            )
        })
        .collect();
    let lb: Vec<String> = pb
        .iter()
        .map(|e| {
            format!(
                "{:>10} {} {:>8} {}",
                e.offset,
                e.typeflag as char,
                e.size,
                String::from_utf8_lossy(&e.path)
            )
        })
        .collect();
    if la != lb {
        writeln!(
            r,
            "entry lists differ ({} vs {} entries); first differences:",
            la.len(),
            lb.len()
        )
        .unwrap();
        let mut shown = 0;
        for i in 0..la.len().max(lb.len()) {
            let (x, y) = (la.get(i), lb.get(i));
            if x != y {
                writeln!(
                    r,
                    "  {label_a}: {}\n  {label_b}: {}",
                    x.map_or("-", |s| s),
                    y.map_or("-", |s| s)
                )
                .unwrap();
                shown += 1;
                if shown == 8 {
                    break;
                }
            }
        }
    } else {
        writeln!(
            r,
            "entry lists (offset, type, size, path) are identical; {} entries",
            la.len()
        )
        .unwrap();
    }
    panic!("{r}");
}

// ---------------------------------------------------------------------------------------------
// Snapshots of extracted trees
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        md5: String,
        size: u64,
        mtime: i64,
    },
    Symlink {
        target: PathBuf,
    },
}

/// lstat()-based snapshot of a tree (keyed by relative path, specials skipped).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut m = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md = fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let node = if ft.is_dir() {
            for e in fs::read_dir(&full).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            Node::Dir {
                mode: md.mode() & 0o7777,
            }
        } else if ft.is_file() {
            Node::File {
                mode: md.mode() & 0o7777,
                md5: md5_hex(&fs::read(&full).unwrap()),
                size: md.len(),
                mtime: md.mtime(),
            }
        } else if ft.is_symlink() {
            Node::Symlink {
                target: fs::read_link(&full).unwrap(),
            }
        } else {
            continue;
        };
        m.insert(rel, node);
    }
    m
}

/// What an extraction of the model must produce (anonymised modes).
pub fn expected_snapshot(model: &Model) -> BTreeMap<PathBuf, Node> {
    let mut m = BTreeMap::new();
    for e in &model.entries {
        let node = match e.kind {
            Kind::Dir => Node::Dir { mode: e.mode },
            Kind::File => Node::File {
                mode: e.mode,
                md5: md5_hex(&model.content(e)),
                size: e.size,
                mtime: e.mtime,
            },
            Kind::Symlink => Node::Symlink {
                target: PathBuf::from(OsString::from_vec(e.target.clone())),
            },
        };
        m.insert(e.rel.clone(), node);
    }
    m
}

/// Writes `data` to `path` (helper for building synthetic archives).
pub fn append(path: &Path, data: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}
