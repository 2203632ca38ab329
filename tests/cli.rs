//! Drives the real `tartape` binary the way a user does: recording, integrity failures,
//! bad input, corrupted catalogs, inspection commands.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// A temporary source tree plus a catalog path outside it.
struct TestEnv {
    dir: tempfile::TempDir,
}

impl TestEnv {
    fn new() -> TestEnv {
        let env = TestEnv {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(env.src()).unwrap();
        env
    }

    /// A small tree with files around block boundaries, a symlink and nested dirs.
    fn with_tree() -> TestEnv {
        let env = TestEnv::new();
        env.write("a.txt", b"hello\n");
        env.write("d/x", &vec![b'x'; 600]);
        env.write("d/y", &vec![b'y'; 5000]);
        env.write("d.txt", b"");
        env.write(
            "e/f/g.bin",
            &(0..70_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
        );
        symlink("a.txt", env.src().join("l")).unwrap();
        env
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn catalog(&self) -> PathBuf {
        self.dir.path().join("cat.db")
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.src().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        run(tartape().args(args).current_dir(self.dir.path()))
    }

    /// Runs with `--catalog` pointing outside the tree.
    fn run_cat(&self, cmd: &str, extra: &[&str]) -> Output {
        let mut args = vec![cmd, "src", "--catalog", "cat.db"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn record(&self) -> String {
        let out = self.run_cat("record", &[]);
        assert_ok(&out);
        stdout(&out)
    }

    fn stream(&self) -> Vec<u8> {
        let out = self.run_cat("stream", &["-o", "out.tar"]);
        assert_ok(&out);
        fs::read(self.dir.path().join("out.tar")).unwrap()
    }
}

fn assert_ok(o: &Output) {
    assert_success(o, "tartape");
}

#[test]
fn record_prints_summary_and_refuses_to_overwrite() {
    let env = TestEnv::with_tree();
    let out = env.record();
    assert!(out.contains("fingerprint: "), "{out}");
    assert!(
        out.contains("entries: 10 (5 files, 4 directories, 1 symlink)"),
        "{out}"
    );
    let again = env.run_cat("record", &[]);
    assert_one_line_error(&again, 1, "use --force");
    assert_ok(&env.run_cat("record", &["--force"]));
}

#[test]
fn default_catalog_lives_in_dot_tartape_and_is_not_on_the_tape() {
    let env = TestEnv::with_tree();
    assert_ok(&env.run(&["record", "src"]));
    assert!(env.src().join(".tartape/index.db").is_file());
    // Creating .tartape before the walk keeps the root's mtime as recorded.
    let verify = env.run(&["verify", "src"]);
    assert_ok(&verify);
    let ls = stdout(&env.run(&["ls", "src"]));
    assert!(!ls.contains(".tartape"), "{ls}");
    let tar = env.run(&["stream", "src", "-o", "t.tar"]);
    assert_ok(&tar);
    // The tape holds exactly the entries `ls` lists, none of them under .tartape.
    let names = tar_names(&fs::read(env.dir.path().join("t.tar")).unwrap());
    assert!(names.iter().all(|n| !n.contains(".tartape")), "{names:?}");
    let listed: Vec<String> = ls
        .lines()
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .collect();
    assert_eq!(names, listed);
    assert_eq!(names.len(), 10);
}

/// The entry names of a tape (ustar name and prefix, directories without their `/`).
fn tar_names(tape: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0;
    while at + 512 <= tape.len() && tape[at] != 0 {
        let h = &tape[at..at + 512];
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            String::from_utf8_lossy(&f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())])
                .into_owned()
        };
        let (name, prefix) = (field(0..100), field(345..500));
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        names.push(path.trim_end_matches('/').to_string());
        let size = u64::from_str_radix(field(124..136).trim(), 8).unwrap() as usize;
        at += 512 + size.div_ceil(512) * 512;
    }
    names
}

#[test]
fn stream_ranges_join_to_the_whole() {
    let env = TestEnv::with_tree();
    env.record();
    let full = env.stream();
    let total = full.len() as u64;
    let cuts = [
        0,
        1,
        511,
        512,
        1000,
        4097,
        total / 2,
        total - 1025,
        total - 1,
        total,
    ];
    let mut joined = Vec::new();
    for w in cuts.windows(2) {
        let (o, l) = (w[0].to_string(), (w[1] - w[0]).to_string());
        let out = env.run_cat("stream", &["--offset", &o, "--length", &l, "-o", "part"]);
        assert_ok(&out);
        joined.extend(fs::read(env.dir.path().join("part")).unwrap());
    }
    assert_eq!(joined.len(), full.len());
    assert!(joined == full, "ranges do not join to the full stream");
}

#[test]
fn offsets_out_of_range_are_refused() {
    let env = TestEnv::with_tree();
    env.record();
    let total = env.stream().len();
    let out = env.run_cat("stream", &["--offset", &(total + 1).to_string(), "-o", "x"]);
    assert_one_line_error(&out, 1, "past the end");
    let out = env.run_cat("locate", &["--offset", &total.to_string()]);
    assert_one_line_error(&out, 1, "past the end");
    let out = env.run_cat("stream", &["--offset", "-5"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    let out = env.run_cat("stream", &["--offset", "1M"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "1M is past the end of this tape"
    );
    let out = env.run_cat("stream", &["--length", "2Q"]);
    assert_one_line_error(&out, 2, "unknown suffix");
}

#[test]
fn offsets_and_lengths_take_binary_suffixes() {
    let env = TestEnv::with_tree();
    env.record();
    let tape = env.stream();
    assert!(tape.len() > 2048, "the tape is {} bytes", tape.len());
    let out = env.run_cat(
        "stream",
        &["--offset", "1K", "--length", "1k", "-o", "k.tar"],
    );
    assert_ok(&out);
    let k = fs::read(env.dir.path().join("k.tar")).unwrap();
    assert!(k == tape[1024..2048], "--offset 1K --length 1k");
    let by_suffix = stdout(&env.run_cat("locate", &["--offset", "2K"]));
    let by_number = stdout(&env.run_cat("locate", &["--offset", "2048"]));
    assert!(
        !by_suffix.is_empty() && by_suffix == by_number,
        "{by_suffix}"
    );
}

#[test]
fn bad_sources_give_one_line() {
    let env = TestEnv::new();
    let out = env.run(&["record", "nope"]);
    assert_one_line_error(&out, 1, "nope: source does not exist");
    fs::write(env.dir.path().join("file"), b"x").unwrap();
    let out = env.run(&["record", "file"]);
    assert_one_line_error(&out, 1, "file: source is not a directory");
    let out = env.run(&["stream", "src", "-o", "x"]);
    assert_one_line_error(&out, 1, "no catalog found");
    // verify: 2 when the tape could not be checked at all (SPEC §3).
    let out = env.run(&["verify", "src"]);
    assert_one_line_error(&out, 2, "no catalog found");
}

/// Neither the catalog nor its temporary file is there.
fn assert_no_catalog_written(env: &TestEnv) {
    assert!(!env.catalog().exists());
    let left: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains("cat.db"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `--strict-ustar`: every entry that would need a PAX header is listed, nothing written;
/// without it the same tree records.
#[test]
fn strict_ustar_reports_every_long_entry_and_writes_nothing() {
    let env = TestEnv::new();
    env.write(&"c".repeat(101), b"1");
    env.write(
        &format!("{}/{}/{}", "a".repeat(80), "b".repeat(79), "n".repeat(90)),
        b"2",
    );
    symlink("t".repeat(101), env.src().join("longlink")).unwrap();
    env.write("fine.txt", b"ok");
    let out = env.run_cat("record", &["--strict-ustar"]);
    assert_one_line_error(&out, 1, "3 path(s) cannot be written as ustar");
    let err = stderr(&out);
    assert!(err.contains(&"c".repeat(101)), "{err}");
    assert!(err.contains(&"n".repeat(90)), "{err}");
    assert!(
        err.contains("longlink: symlink target is 101 bytes"),
        "{err}"
    );
    assert_no_catalog_written(&env);
    assert_success(&env.run_cat("record", &[]), "record without --strict-ustar");
}

/// The same with more entries than one batch of the walk (512), the violation last in
/// tape order: the rows are by then being written by the writer thread, and the
/// half-written temporary file must go too.
#[test]
fn late_violation_in_a_tree_of_several_batches_leaves_nothing() {
    let env = TestEnv::new();
    for i in 0..1200 {
        env.write(&format!("d/f{i:04}"), b"x");
    }
    env.write(&format!("z/{}", "c".repeat(101)), b"1");
    let out = env.run_cat("record", &["--strict-ustar"]);
    assert_one_line_error(&out, 1, "1 path(s) cannot be written as ustar");
    assert_no_catalog_written(&env);
}

#[test]
fn catalog_inside_the_tree_is_refused_unless_in_dot_tartape() {
    let env = TestEnv::with_tree();
    let out = env.run(&["record", "src", "--catalog", "src/d/my.db"]);
    assert_one_line_error(
        &out,
        1,
        "a catalog inside the recorded tree would change it",
    );
    assert!(!env.src().join("d/my.db").exists());
    let out = env.run(&["record", "src", "--catalog", "src/.tartape"]);
    assert_one_line_error(
        &out,
        1,
        "a catalog inside the recorded tree would change it",
    );
    fs::create_dir(env.src().join(".tartape")).unwrap();
    assert_ok(&env.run(&["record", "src", "--catalog", "src/.tartape/other.db"]));
    assert_ok(&env.run(&["verify", "src", "--catalog", "src/.tartape/other.db"]));
}

#[test]
fn special_files_are_skipped_and_listed() {
    let env = TestEnv::with_tree();
    let fifo = env.src().join("pipe");
    mkfifo(&fifo);
    let out = env.record();
    assert!(out.contains("skipped 1 special file(s)"), "{out}");
    assert!(out.contains("fifo: ") && out.contains("pipe"), "{out}");
    let ls = stdout(&env.run_cat("ls", &[]));
    assert!(!ls.contains("pipe"), "{ls}");
}

#[test]
fn excludes_drop_files_and_subtrees() {
    let env = TestEnv::with_tree();
    let out = env.run_cat("record", &["--exclude", "*.txt", "--exclude", "e"]);
    assert_ok(&out);
    let ls = stdout(&env.run_cat("ls", &[]));
    assert!(!ls.contains("a.txt") && !ls.contains("src/e"), "{ls}");
    assert!(ls.contains("src/d/x"), "{ls}");
}

#[test]
fn non_utf8_names_are_kept_as_bytes() {
    let env = TestEnv::new();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(env.src().join(name), b"latin-1").unwrap();
    env.record();
    let tape = env.stream();
    let mut ar = tar::Archive::new(&tape[..]);
    let names: Vec<Vec<u8>> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    assert!(names.contains(&b"src/caf\xe9.txt".to_vec()), "{names:?}");
}

#[test]
fn sigpipe_ends_quietly() {
    let env = TestEnv::with_tree();
    env.record();
    let mut child = tartape()
        .args(["stream", "src", "--catalog", "cat.db"])
        .current_dir(env.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is dropped here: the writer gets SIGPIPE.
    let out = child.wait_with_output().unwrap();
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    assert_eq!(&first[..3], b"src");
}

#[test]
fn info_ls_locate_describe_the_tape() {
    let env = TestEnv::with_tree();
    env.record();
    let total = env.stream().len();
    let info = stdout(&env.run_cat("info", &["--json"]));
    for key in [
        "fingerprint",
        "total_size",
        "entry_count",
        "data_size",
        "created_at",
        "catalog",
        "source",
    ] {
        assert!(
            info.contains(&format!("\"{key}\":")),
            "{key} missing: {info}"
        );
    }
    assert!(info.contains(&format!("\"total_size\":{total}")), "{info}");
    // Text: counts with their nouns, the recording time in ISO 8601 (UTC).
    let text = stdout(&env.run_cat("info", &[]));
    assert!(
        text.contains("entries: 10 (5 files, 4 directories, 1 symlink)"),
        "{text}"
    );
    let created = text
        .lines()
        .find_map(|l| l.strip_prefix("created at: "))
        .unwrap_or_else(|| panic!("no creation time: {text}"));
    let (date, time) = created
        .split_once('T')
        .unwrap_or_else(|| panic!("{created}"));
    assert!(
        date.len() == 10 && time.len() == 9 && time.ends_with('Z') && date.starts_with("20"),
        "not ISO 8601 UTC: {created}"
    );
    let ls = stdout(&env.run_cat("ls", &[]));
    assert_eq!(ls.lines().count(), 10);
    // memcmp order: d < d.txt < d/x
    let order: Vec<&str> = ls.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    let pos = |p: &str| order.iter().position(|x| *x == p).unwrap();
    assert!(
        pos("src/d") < pos("src/d.txt") && pos("src/d.txt") < pos("src/d/x"),
        "{order:?}"
    );
    // Neither a path nor an offset: a usage error from the argument parser.
    assert_eq!(env.run_cat("locate", &[]).status.code(), Some(2));
    let loc = env.run(&["locate", "src", "src/d/y", "--catalog", "cat.db"]);
    assert_ok(&loc);
    let text = stdout(&loc);
    assert!(text.contains("content: ["), "{text}");
    let content_start: u64 = text
        .lines()
        .find(|l| l.starts_with("content:"))
        .and_then(|l| l.split(['[', ',']).nth(1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let by_offset =
        stdout(&env.run_cat("locate", &["--offset", &(content_start + 10).to_string()]));
    assert!(
        by_offset.contains("content of src/d/y, byte 10"),
        "{by_offset}"
    );
    let missing = env.run(&["locate", "src", "src/zzz", "--catalog", "cat.db"]);
    assert_one_line_error(&missing, 1, "src/zzz: no such entry");
}

/// One way of changing the source after recording.
struct Mutation {
    name: &'static str,
    /// The first broken entry in tape order: the stream stops there.
    path: &'static str,
    /// The changed object itself, which `verify` must name too.
    changed: &'static str,
    apply: fn(&Path),
}

fn mutations() -> Vec<Mutation> {
    vec![
        Mutation {
            name: "modify",
            path: "src/d/y",
            changed: "src/d/y",
            apply: |src| {
                fs::write(src.join("d/y"), vec![b'z'; 5000]).unwrap();
                set_mtime(&src.join("d/y"), 1_800_000_000, 0);
            },
        },
        Mutation {
            name: "delete",
            // Removing a child moves the directory's mtime, and `d` comes first.
            path: "src/d",
            changed: "src/d/y: missing",
            apply: |src| fs::remove_file(src.join("d/y")).unwrap(),
        },
        Mutation {
            name: "truncate",
            path: "src/e/f/g.bin",
            changed: "src/e/f/g.bin: size 70000 → 100",
            apply: |src| {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(src.join("e/f/g.bin"))
                    .unwrap();
                f.set_len(100).unwrap();
            },
        },
        Mutation {
            name: "chmod",
            path: "src/d/x",
            changed: "src/d/x: mode 0644 → 0755",
            apply: |src| {
                fs::set_permissions(src.join("d/x"), fs::Permissions::from_mode(0o755)).unwrap()
            },
        },
        Mutation {
            name: "symlink",
            path: "src/e/f",
            changed: "src/e/f/g.bin: type file → symlink",
            apply: |src| {
                let p = src.join("e/f/g.bin");
                fs::remove_file(&p).unwrap();
                symlink("/etc/passwd", &p).unwrap();
            },
        },
        Mutation {
            name: "add",
            path: "src/e",
            changed: "src/e: mtime",
            apply: |src| fs::write(src.join("e/new.txt"), b"new").unwrap(),
        },
    ]
}

#[test]
fn changes_after_recording_break_stream_and_verify() {
    for m in mutations() {
        let env = TestEnv::with_tree();
        env.record();
        let good = env.stream();
        assert_ok(&env.run_cat("verify", &[]));
        (m.apply)(&env.src());

        let out = env.run_cat("stream", &["-o", "bad.tar"]);
        assert_one_line_error(&out, 1, &format!("integrity error: {}", m.path));
        let prefix = fs::read(env.dir.path().join("bad.tar")).unwrap();
        assert!(prefix.len() < good.len(), "{}: whole tape written", m.name);
        assert!(
            good.starts_with(&prefix),
            "{}: output is not a prefix of the tape",
            m.name
        );

        let verify = env.run_cat("verify", &[]);
        assert_eq!(verify.status.code(), Some(1), "{}: verify passed", m.name);
        let report = stdout(&verify);
        assert!(
            report.contains(m.path),
            "{}: verify report: {report}",
            m.name
        );
        assert!(
            report.contains(m.changed),
            "{}: verify report: {report}",
            m.name
        );
    }
}

#[test]
fn mtime_with_nanoseconds_is_checked_exactly() {
    let env = TestEnv::with_tree();
    set_mtime(&env.src().join("a.txt"), 1_700_000_000, 123_456_789);
    env.record();
    set_mtime(&env.src().join("a.txt"), 1_700_000_000, 123_456_790);
    let verify = env.run_cat("verify", &[]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        stdout(&verify).contains("src/a.txt: mtime 1700000000.123456789 → 1700000000.123456790")
    );
}

/// Puts `digest` in the catalog row of `arc_path`, with a matching row checksum: what a
/// file whose bytes rotted on disk (same size, mtime and ctime) looks like to tartape.
fn forge_digest(catalog: &Path, arc_path: &[u8], digest: &str) {
    let c = tartape::catalog::Catalog::open(catalog).unwrap();
    let mut e = c.find(arc_path).unwrap().unwrap();
    drop(c);
    e.digest = Some(digest.to_string());
    let conn = rusqlite::Connection::open(catalog).unwrap();
    conn.execute(
        "UPDATE entries SET digest = ?1, crc = ?2 WHERE ordinal = ?3",
        rusqlite::params![digest, tartape::catalog::row_crc(&e), e.ordinal.0 as i64],
    )
    .unwrap();
}

#[test]
fn deep_verify_compares_digests() {
    let env = TestEnv::with_tree();
    set_mtime(&env.src().join("a.txt"), 1_700_000_000, 0);
    assert_ok(&env.run_cat("record", &["--hash", "sha256"]));
    assert_ok(&env.run_cat("verify", &["--deep"]));
    // Bytes that differ from the digest while every piece of metadata matches (rot on
    // disk): only --deep can see it.
    forge_digest(&env.catalog(), b"src/a.txt", &"0".repeat(64));
    assert_ok(&env.run_cat("verify", &[]));
    let deep = env.run_cat("verify", &["--deep"]);
    assert_eq!(deep.status.code(), Some(1));
    assert!(
        stdout(&deep).contains(&format!("src/a.txt: content sha256 {} →", "0".repeat(64))),
        "{}",
        stdout(&deep)
    );
    // Same size and mtime, other bytes written: the ctime says so, with or without --deep.
    fs::write(env.src().join("a.txt"), b"HELLO\n").unwrap();
    set_mtime(&env.src().join("a.txt"), 1_700_000_000, 0);
    let plain = env.run_cat("verify", &[]);
    assert_eq!(plain.status.code(), Some(1));
    assert!(
        stdout(&plain).contains("src/a.txt: ctime"),
        "{}",
        stdout(&plain)
    );
}

/// Applies `sql` to a copy of the catalog; returns what `verify` and `stream` said.
fn tamper(env: &TestEnv, sql: &str) -> (Output, Output) {
    fs::copy(env.catalog(), env.dir.path().join("bad.db")).unwrap();
    let conn = rusqlite::Connection::open(env.dir.path().join("bad.db")).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    let _ = fs::remove_file(env.dir.path().join("x.tar"));
    (
        env.run(&["verify", "src", "--catalog", "bad.db"]),
        env.run(&["stream", "src", "--catalog", "bad.db", "-o", "x.tar"]),
    )
}

#[test]
fn tampered_catalogs_are_refused() {
    let env = TestEnv::with_tree();
    env.record();
    let good = env.stream();
    // (sql, expected error, first byte that must not be served)
    let cases = [
        (
            "UPDATE entries SET start_offset = start_offset + 512 WHERE ordinal = 3",
            "entry 3: checksum mismatch",
            3,
        ),
        (
            "UPDATE entries SET size = size + 600 WHERE ordinal = 1",
            "entry 1: checksum mismatch",
            1,
        ),
        (
            "UPDATE layout SET sizes = zeroblob(length(sizes))",
            "layout checksum mismatch",
            0,
        ),
        (
            "UPDATE entries SET rel_path = CAST('../../etc/passwd' AS BLOB) WHERE ordinal = 2",
            "entry 2: checksum mismatch",
            2,
        ),
        (
            "UPDATE entries SET rel_path = CAST('/etc/passwd' AS BLOB) WHERE ordinal = 2",
            "entry 2: checksum mismatch",
            2,
        ),
        (
            "UPDATE entries SET arc_path = CAST('other/a.txt' AS BLOB) WHERE ordinal = 1",
            "entry 1: checksum mismatch",
            1,
        ),
        (
            "UPDATE meta SET value = '99' WHERE key = 'format_version'",
            "unknown format version 99",
            0,
        ),
        (
            "DELETE FROM entries WHERE ordinal = 9",
            "entries, metadata says",
            0,
        ),
        (
            "DELETE FROM entries WHERE ordinal = 4",
            "entry 4 missing",
            4,
        ),
        (
            "UPDATE meta SET value = '1' WHERE key = 'total_size'",
            "metadata checksum mismatch",
            0,
        ),
        (
            "DELETE FROM meta WHERE key = 'fingerprint'",
            "metadata checksum mismatch",
            0,
        ),
        (
            "UPDATE entries SET kind = 9 WHERE ordinal = 1",
            "unknown entry kind",
            1,
        ),
        (
            "UPDATE entries SET uid = 1099511627776 WHERE ordinal = 1",
            "entry 1: checksum mismatch",
            1,
        ),
        (
            "UPDATE entries SET uname = CAST('x' AS BLOB) WHERE ordinal = 1",
            "entry 1: checksum mismatch",
            1,
        ),
        (
            "UPDATE entries SET mtime = mtime + 1000 WHERE ordinal = 3",
            "entry 3: checksum mismatch",
            3,
        ),
        (
            "UPDATE entries SET digest = 'x' WHERE ordinal = 3",
            "entry 3: checksum mismatch",
            3,
        ),
        (
            "UPDATE entries SET crc = crc + 1 WHERE ordinal = 2",
            "entry 2: checksum mismatch",
            2,
        ),
        (
            "UPDATE entries SET size = -1 WHERE ordinal = 1",
            "out of range",
            1,
        ),
    ];
    // Ten sizes of 2^63 - 1: their sum cannot be a tape.
    let overflow = format!(
        "UPDATE layout SET sizes = x'{}'",
        "ffffffffffffff7f".repeat(10)
    );
    let cases = cases
        .iter()
        .copied()
        .chain([(overflow.as_str(), "layout checksum mismatch", 0)]);
    let starts: Vec<u64> = stdout(&env.run_cat("ls", &[]))
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    for (sql, expect, bad_entry) in cases {
        let (verify, stream) = tamper(&env, sql);
        // The tape could not be checked: exit status 2.
        assert_one_line_error(&verify, 2, expect);
        assert_one_line_error(&stream, 1, expect);
        // Rows are checked when fetched: what was written stops before the bad entry.
        let written = fs::read(env.dir.path().join("x.tar")).unwrap_or_default();
        assert!(
            written.len() as u64 <= starts[bad_entry],
            "{sql}: served past the bad entry"
        );
        assert!(
            good.starts_with(&written),
            "{sql}: output is not a prefix of the tape"
        );
    }
}

#[test]
fn garbage_and_truncated_catalogs_are_refused() {
    let env = TestEnv::with_tree();
    env.record();
    let bytes = fs::read(env.catalog()).unwrap();
    fs::write(env.dir.path().join("trunc.db"), &bytes[..bytes.len() / 2]).unwrap();
    fs::write(env.dir.path().join("junk.db"), vec![0x5a; 8192]).unwrap();
    fs::write(env.dir.path().join("empty.db"), b"").unwrap();
    for name in ["trunc.db", "junk.db", "empty.db"] {
        let out = env.run(&["verify", "src", "--catalog", name]);
        assert_one_line_error(&out, 2, "corrupted catalog");
        let out = env.run(&["stream", "src", "--catalog", name, "-o", "x.tar"]);
        assert_one_line_error(&out, 1, "corrupted catalog");
    }
}

/// Runs tartape as an unprivileged user (root reads everything, so the permission checks
/// can only be seen from another uid); the tree is made world-accessible for that.
fn run_as_nobody(env: &TestEnv, args: &[&str]) -> Output {
    if is_root() {
        as_nobody(env.dir.path(), &[], args)
    } else {
        run(tartape().args(args).current_dir(env.dir.path()))
    }
}

#[test]
fn unreadable_inputs_are_reported_all_at_once() {
    let env = TestEnv::with_tree();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    for dir in ["src", "src/d", "src/e", "src/e/f"] {
        fs::set_permissions(env.dir.path().join(dir), fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::set_permissions(env.src().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(env.src().join("e/f"), fs::Permissions::from_mode(0o700)).unwrap();
    let out = run_as_nobody(&env, &["record", "src", "--catalog", "cat.db"]);
    assert_one_line_error(&out, 1, "2 unreadable path(s), no catalog written");
    let err = stderr(&out);
    assert!(err.contains("src/a.txt: permission denied"), "{err}");
    assert!(err.contains("src/e/f: permission denied"), "{err}");
    assert!(!env.catalog().exists());

    let out = run_as_nobody(
        &env,
        &["record", "src", "--catalog", "cat.db", "--skip-unreadable"],
    );
    assert_ok(&out);
    let summary = stdout(&out);
    assert!(
        summary.contains("skipped 2 unreadable path(s)"),
        "{summary}"
    );
    let ls = stdout(&env.run_cat("ls", &[]));
    assert!(!ls.contains("a.txt") && !ls.contains("src/e/f"), "{ls}");
    assert!(ls.contains("src/d/x"), "{ls}");
}

#[test]
fn stream_to_append_only_and_device_outputs() {
    let env = TestEnv::with_tree();
    env.record();
    let full = env.stream();
    // An O_APPEND file refuses copy_file_range: the stream falls back to copying.
    let path = env.dir.path().join("appended.tar");
    fs::write(&path, b"").unwrap();
    let f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    let out = tartape()
        .args(["stream", "src", "--catalog", "cat.db"])
        .current_dir(env.dir.path())
        .stdout(f)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(fs::read(&path).unwrap() == full, "appended stream differs");
    // A character device: neither a pipe nor a regular file. The whole tape goes
    // through (its events say so, with the same MD5s as a stream into a file).
    let events_of = |out: Stdio, name: &str| {
        let out = tartape()
            .args(["stream", "src", "--catalog", "cat.db", "--events", name])
            .current_dir(env.dir.path())
            .stdout(out)
            .output()
            .unwrap();
        assert_ok(&out);
        fs::read_to_string(env.dir.path().join(name)).unwrap()
    };
    let to_null = events_of(fs::File::create("/dev/null").unwrap().into(), "null.jsonl");
    let to_file = events_of(
        fs::File::create(env.dir.path().join("f.tar"))
            .unwrap()
            .into(),
        "file.jsonl",
    );
    assert_eq!(to_null, to_file);
    assert!(
        to_null.trim_end().ends_with(&format!(
            r#"{{"type":"tape_completed","total_size":{}}}"#,
            full.len()
        )),
        "{to_null}"
    );
    assert_eq!(to_null.matches(r#""md5":""#).count(), 5, "{to_null}");
}

/// Large content is copied by copy_file_range into files and read ahead into chunks for
/// pipes; every kind of output and every cut through it gives the same bytes.
#[test]
fn large_content_is_the_same_through_every_output() {
    let env = TestEnv::with_tree();
    env.write(
        "big/one.bin",
        &(0..1_500_001u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    env.write("big/two.bin", &vec![7u8; 300_000]);
    env.record();
    let to_file = env.stream();
    let to_pipe = env.run_cat("stream", &[]);
    assert_ok(&to_pipe);
    assert!(to_pipe.stdout == to_file, "pipe and file outputs differ");
    let mut ar = tar::Archive::new(&to_file[..]);
    let big = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path_bytes().ends_with(b"one.bin"))
        .map(|e| e.raw_file_position())
        .unwrap();
    for (o, l) in [
        (big - 512, 4096),
        (big + 1000, 1_000_000),
        (big + 1_499_000, 700_000),
    ] {
        let (os, ls) = (o.to_string(), l.to_string());
        let piped = env.run_cat("stream", &["--offset", &os, "--length", &ls]);
        assert_ok(&piped);
        let expect = &to_file[o as usize..((o + l) as usize).min(to_file.len())];
        assert!(piped.stdout == expect, "pipe slice at {o} differs");
        assert_ok(&env.run_cat("stream", &["--offset", &os, "--length", &ls, "-o", "slice"]));
        assert!(
            fs::read(env.dir.path().join("slice")).unwrap() == expect,
            "file slice at {o} differs"
        );
    }
}

#[test]
fn binary_is_never_written_to_a_terminal() {
    let env = TestEnv::with_tree();
    env.record();
    // `script` (util-linux) gives the command a pseudo-terminal as standard output.
    let cmd = format!("{} stream src --catalog cat.db", bin().display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: refusing to write a binary tape to a terminal"),
        "{text}"
    );
    assert!(
        !text.contains("ustar"),
        "tape bytes reached the terminal: {text}"
    );
}

#[test]
fn a_fifo_in_place_of_a_file_fails_at_once() {
    let env = TestEnv::with_tree();
    env.record();
    let d = env.src().join("d");
    let (sec, nsec) = mtime_of(&d);
    fs::remove_file(d.join("x")).unwrap();
    mkfifo(&d.join("x"));
    // Put the directory's mtime back so the stream gets as far as opening the FIFO.
    set_mtime(&d, sec, nsec);
    let mut child = tartape()
        .args(["stream", "src", "--catalog", "cat.db", "-o", "x.tar"])
        .current_dir(env.dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("stream hangs on a FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_one_line_error(&out, 1, "integrity error: src/d/x: type file → fifo");
}

#[test]
fn stream_checks_recorded_digests_of_whole_files() {
    let env = TestEnv::with_tree();
    set_mtime(&env.src().join("a.txt"), 1_700_000_000, 0);
    assert_ok(&env.run_cat("record", &["--hash", "md5"]));
    let good = env.stream();
    // The bytes no longer hash to the digest, all metadata the same: only the digest can
    // tell.
    forge_digest(&env.catalog(), b"src/a.txt", &"0".repeat(32));
    let out = env.run_cat("stream", &["-o", "bad.tar"]);
    assert_one_line_error(&out, 1, "integrity error: src/a.txt: content md5");
    let written = fs::read(env.dir.path().join("bad.tar")).unwrap();
    assert!(written.len() < good.len());
    assert!(good.starts_with(&written));
    // A resumed stream cannot hash the whole file and does not claim to.
    let out = env.run_cat("stream", &["--offset", "1000", "-o", "tail.tar"]);
    assert_ok(&out);
    // Other bytes with the mtime put back: the ctime stops the stream before they leave.
    forge_digest(
        &env.catalog(),
        b"src/a.txt",
        &tartape::digest::hex(&md5_of(b"hello\n")),
    );
    fs::write(env.src().join("a.txt"), b"HELLO\n").unwrap();
    set_mtime(&env.src().join("a.txt"), 1_700_000_000, 0);
    let out = env.run_cat("stream", &["-o", "bad.tar"]);
    assert_one_line_error(&out, 1, "integrity error: src/a.txt: ctime");
    let written = fs::read(env.dir.path().join("bad.tar")).unwrap();
    assert!(good.starts_with(&written) && written.len() < good.len());
}

fn md5_of(data: &[u8]) -> Vec<u8> {
    use md5::Digest as _;
    md5::Md5::digest(data).to_vec()
}

#[test]
fn reader_notices_a_deleted_file_behind_a_cached_descriptor() {
    let env = TestEnv::with_tree();
    env.record();
    let tape = tartape::Tape::open(env.src(), env.catalog()).unwrap();
    let layout = tape.locate_path(b"src/a.txt").unwrap().unwrap();
    let mut buf = [0u8; 6];
    assert_eq!(tape.read_at(layout.content.0, &mut buf).unwrap(), 6);
    assert_eq!(&buf, b"hello\n");
    fs::remove_file(env.src().join("a.txt")).unwrap();
    let err = tape.read_at(layout.content.0, &mut buf).unwrap_err();
    assert!(err.to_string().contains("src/a.txt: missing"), "{err}");
}

#[test]
fn unwritable_source_points_to_catalog_option() {
    let env = TestEnv::with_tree();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    // The source itself is read-only for this user: .tartape cannot be created.
    let out = run_as_nobody(&env, &["record", "src"]);
    assert_one_line_error(&out, 1, "use --catalog PATH");
    // .tartape exists but is not writable: the catalog file cannot be created.
    fs::create_dir(env.src().join(".tartape")).unwrap();
    let out = run_as_nobody(&env, &["record", "src"]);
    assert_one_line_error(&out, 1, "use --catalog PATH");
    let out = run_as_nobody(&env, &["record", "src", "--catalog", "cat.db"]);
    assert_ok(&out);
}

/// `stream -o FILE --continue` resumes a cut copy at its size (as `curl -C -`), refuses a
/// file whose last bytes are not the tape's (leaving it untouched) and leaves a complete
/// one as it is.
#[test]
fn continue_completes_a_cut_file_and_refuses_a_foreign_one() {
    let env = TestEnv::with_tree();
    env.record();
    let tape = env.stream();
    let path = env.dir.path().join("copy.tar");
    let cont = || env.run_cat("stream", &["-o", "copy.tar", "--continue"]);
    for cut in [0, 1, 511, 512, 1000, tape.len() - 1] {
        fs::write(&path, &tape[..cut]).unwrap();
        assert_ok(&cont());
        assert!(fs::read(&path).unwrap() == tape, "continued from {cut}");
    }
    // Complete: nothing written.
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = cont();
    assert_ok(&out);
    assert!(
        stderr(&out).contains("already complete"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
    // Not the tape's bytes: refused, the file untouched.
    let mut foreign = tape[..3000].to_vec();
    foreign[2990] ^= 1;
    fs::write(&path, &foreign).unwrap();
    assert_one_line_error(&cont(), 1, "cannot continue: its last 512 bytes");
    assert!(
        fs::read(&path).unwrap() == foreign,
        "a refused file was changed"
    );
    let mut long = tape.clone();
    long.extend_from_slice(b"more");
    fs::write(&path, &long).unwrap();
    assert_one_line_error(&cont(), 1, "more than the");
    assert!(fs::read(&path).unwrap() == long);
    // Missing: written whole. Without -o, or with --offset: a usage error.
    fs::remove_file(&path).unwrap();
    assert_ok(&cont());
    assert!(fs::read(&path).unwrap() == tape);
    assert_eq!(
        env.run_cat("stream", &["--continue"]).status.code(),
        Some(2)
    );
    let both = env.run_cat("stream", &["-o", "copy.tar", "--continue", "--offset", "5"]);
    assert_eq!(both.status.code(), Some(2));
}

/// `tartape completions SHELL` and `tartape man` cover every subcommand.
#[test]
fn completions_and_man_page_mention_every_subcommand() {
    let env = TestEnv::new();
    let help = stdout(&env.run(&["--help"]));
    // The subcommands as `--help` lists them (two spaces, a name, spaces, a description).
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    for expected in ["record", "stream", "mount", "umount", "completions", "man"] {
        assert!(
            subcommands.contains(&expected),
            "{expected} not in {subcommands:?}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        assert_ok(&out);
        let script = stdout(&out);
        for name in &subcommands {
            assert!(script.contains(name), "{shell} completions miss {name}");
        }
        assert!(
            script.contains("continue"),
            "{shell}: stream's options missing"
        );
    }
    let bash = env.run(&["completions", "bash"]);
    let path = env.dir.path().join("tartape.bash");
    fs::write(&path, &bash.stdout).unwrap();
    let checked = run(Command::new("bash").arg("-n").arg(&path));
    assert_success(&checked, "bash -n of the completion script");
    let man = env.run(&["man"]);
    assert_ok(&man);
    let page = stdout(&man);
    assert!(page.contains(".TH tartape 1"), "not a man page");
    for name in &subcommands {
        let entry = format!("tartape\\-{name}(1)");
        assert!(page.contains(&entry), "the man page misses {entry}");
    }
    assert_eq!(env.run(&["completions", "tcsh"]).status.code(), Some(2));
}

/// A long list in a one-line error shows the first ten and how many more; `-v` logs
/// every one.
#[test]
fn long_lists_in_one_line_errors_are_cut_and_v_lists_them_all() {
    let env = TestEnv::new();
    let src = env.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        fs::write(src.join(format!("{i:02}{}", "n".repeat(120))), b"x").unwrap();
    }
    let out = env.run(&["record", "src", "--strict-ustar"]);
    let line = assert_one_line_error(&out, 1, "12 path(s) cannot be written as ustar");
    assert!(
        line.contains("; … and 2 more (-v lists them all)"),
        "{line}"
    );
    assert_eq!(line.matches("(ustar limit 100)").count(), 10, "{line}");
    let verbose = env.run(&["record", "src", "-v", "--strict-ustar"]);
    let logged = stderr(&verbose);
    for i in 0..12 {
        assert!(
            logged.contains(&format!("src/{i:02}{}", "n".repeat(120))),
            "-v must list {i:02}…: {logged}"
        );
    }
}

/// On a terminal (a pseudo-terminal made by `script`), `stream` and `record` show
/// progress and `record` its summary; `-q` silences both.
#[test]
fn quiet_silences_progress_on_a_terminal() {
    if !can_run(
        "quiet_silences_progress_on_a_terminal",
        Needs {
            tools: &["script"],
            ..Needs::default()
        },
    ) {
        return;
    }
    let env = TestEnv::with_tree();
    env.record();
    let on_a_terminal = |args: &str| {
        let command = format!("{} {args}", bin().display());
        let out = run(Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(env.dir.path()));
        assert_success(&out, &command);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_a_terminal("stream src --catalog cat.db -o t.tar");
    assert!(
        shown.contains("B/s"),
        "no progress on a terminal: {shown:?}"
    );
    assert_eq!(on_a_terminal("stream src --catalog cat.db -o t.tar -q"), "");
    assert_eq!(on_a_terminal("-q stream src --catalog cat.db -o t.tar"), "");
    let recorded = on_a_terminal("record src --catalog cat.db --force");
    assert!(recorded.contains("fingerprint: "), "{recorded:?}");
    assert_eq!(
        on_a_terminal("record src --catalog cat.db --force --quiet"),
        ""
    );
}

/// mount(8)'s helper form is tried only for a path; a misspelt subcommand stays a usage
/// error about it.
#[test]
fn a_misspelt_subcommand_is_not_taken_for_a_mount() {
    let env = TestEnv::with_tree();
    let out = env.run(&["strem", "src"]);
    assert_one_line_error(&out, 2, "unrecognized subcommand 'strem'");
    // A path first: `tartape SOURCE MOUNTPOINT`, here refused as a mount (no such source).
    let out = env.run(&["./missing", "mnt", "-o", "ro"]);
    assert_one_line_error(&out, 1, "missing: source does not exist");
}

/// Every subcommand's `--help` describes every argument and shows examples and the exit
/// statuses.
#[test]
fn every_help_has_examples_exit_statuses_and_described_arguments() {
    let env = TestEnv::new();
    let top = stdout(&env.run(&["--help"]));
    assert!(top.contains("Exit status"), "{top}");
    let subcommands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect();
    assert!(subcommands.len() >= 12, "{subcommands:?}");
    for name in &subcommands {
        let out = env.run(&[name, "--help"]);
        assert_ok(&out);
        let help = stdout(&out);
        assert!(
            help.contains("Examples:"),
            "{name} --help has no example:\n{help}"
        );
        assert!(
            help.contains("Exit status"),
            "{name} --help has no exit status:\n{help}"
        );
        // A described argument has text after its name, on its line or the next (the
        // long form).
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with('<') {
                continue;
            }
            let same = line
                .trim()
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            let next = lines.get(i + 1).is_some_and(|l| !l.trim().is_empty());
            assert!(same || next, "{name}: undescribed argument: {line:?}");
        }
    }
}

/// `--json` on record, verify, info and ls: objects (lines for lists) that serde_json reads.
#[test]
fn json_outputs_parse() {
    use serde_json::Value;
    let env = TestEnv::with_tree();
    let parse = |out: &Output| -> Value {
        serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
    };
    let recorded = parse(&env.run_cat("record", &["--json"]));
    assert_eq!(recorded["entry_count"], 10);
    assert_eq!(recorded["symlinks"], 1);
    let fingerprint = recorded["fingerprint"].as_str().unwrap().to_string();
    let info = parse(&env.run_cat("info", &["--json"]));
    assert_eq!(info["fingerprint"], fingerprint.as_str());
    assert_eq!(info["total_size"], env.stream().len() as u64);
    let verified = parse(&env.run_cat("verify", &["--json"]));
    assert_eq!(verified["intact"], true);
    assert_eq!(verified["discrepancies"].as_array().unwrap().len(), 0);
    fs::write(env.src().join("new.txt"), b"new").unwrap();
    let out = env.run_cat("verify", &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let verified = parse(&out);
    assert_eq!(verified["intact"], false);
    let changes = verified["discrepancies"].as_array().unwrap();
    assert!(
        changes.iter().any(|d| d["path"] == "src/new.txt"),
        "{changes:?}"
    );
    let ls = stdout(&env.run_cat("ls", &["--json"]));
    let entries: Vec<Value> = ls
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 10);
    assert!(
        entries
            .iter()
            .all(|e| e["path"].is_string() && e["end_offset"].is_u64())
    );
}

/// `-q` means nothing on success, on every command: no summary, listing, note or
/// warning on standard output or error (the tape bytes `stream` writes to standard
/// output are still written); failures still say why, in one line.
#[test]
fn quiet_commands_print_nothing_on_success() {
    let env = TestEnv::with_tree();
    let silent = |args: &[&str]| {
        let mut all = vec!["-q"];
        all.extend_from_slice(args);
        let out = env.run(&all);
        assert_ok(&out);
        assert_eq!(
            (stdout(&out).as_str(), stderr(&out).as_str()),
            ("", ""),
            "tartape {all:?} said something"
        );
    };
    let cat = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd, "src", "--catalog", "cat.db"];
        args.extend_from_slice(extra);
        silent(&args)
    };
    cat("record", &[]);
    cat("record", &["--json", "--force"]);
    cat("stream", &["-o", "q.tar"]);
    // Complete already: the note about it is success output too.
    cat("stream", &["-o", "q.tar", "--continue"]);
    for cmd in ["verify", "info", "ls"] {
        cat(cmd, &[]);
        cat(cmd, &["--json"]);
    }
    cat("locate", &["src/a.txt"]);
    cat("locate", &["--offset", "0", "--json"]);
    cat("volumes", &["--volume-size", "4K"]);
    cat(
        "volumes",
        &["--volume-size", "4K", "--volume", "1", "--json"],
    );
    silent(&["restore", "cat.db", "--from", "q.tar", "-C", "restored"]);
    // Kept files (no --force) are a warning, silenced too; the files are kept.
    silent(&["restore", "cat.db", "--from", "q.tar", "-C", "restored"]);
    assert_eq!(
        fs::read(env.dir.path().join("restored/src/a.txt")).unwrap(),
        b"hello\n"
    );
    silent(&["mounts"]);
    // The bytes asked for are not a message.
    let out = env.run(&["-q", "stream", "src", "--catalog", "cat.db"]);
    assert_ok(&out);
    assert_eq!(out.stdout, fs::read(env.dir.path().join("q.tar")).unwrap());
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // Without -q, the same commands do speak.
    assert!(!stdout(&env.run_cat("verify", &[])).is_empty());
    // A failure is still one line.
    fs::write(env.src().join("new.txt"), b"new").unwrap();
    let out = env.run(&["-q", "verify", "src", "--catalog", "cat.db"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
}
