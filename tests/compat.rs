//! Compatibility tests: byte identity with the Python tartape 3.0.3, extraction with real tar
//! implementations, > 8 GiB files, random slices and stream events (SPEC §1 and §4).
//!
//! Tests that need an external tool (python3 + venv/pip, GNU tar, bsdtar, 7z) print a loud
//! `SKIP: <tool> missing` when it is absent, and fail instead when `TARTAPE_REQUIRE_TOOLS=1`.

mod common;
mod compat_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use compat_support::extract::*;
use compat_support::*;
use sha2::{Digest, Sha256};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tartape-compat-")
        .tempdir()
        .unwrap()
}

/// A recorded tree: `work/src/Tree-ß` with its catalog at `work/tartape.db` (outside the tree).
struct Recorded {
    _work: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    catalog: PathBuf,
    fingerprint: String,
}

fn record_tree(build: impl FnOnce(&Path) -> PathBuf) -> Recorded {
    let work_dir = tempdir();
    let work = work_dir.path().to_path_buf();
    let root = build(&work.join("src"));
    let catalog = work.join("tartape.db");
    let fingerprint = record(&root, &catalog);
    Recorded {
        _work: work_dir,
        work,
        root,
        catalog,
        fingerprint,
    }
}

fn full_tape(r: &Recorded) -> Vec<u8> {
    stream_to_file(&r.root, &r.catalog, None, None, &r.work.join("full.tar"))
}

/// The bytes are the model's tape (SPEC §1).
fn assert_tape_is_model(model: &Model, tape: &[u8]) {
    let expected = model.render_range(0, model.total);
    assert_same_tape("model (SPEC §1)", &expected, "tartape", tape);
}

/// Streams the whole tape; it and the fingerprint must be the model's.
fn full_tape_checked_against(model: &Model, r: &Recorded) -> Vec<u8> {
    let tape = full_tape(r);
    assert_tape_is_model(model, &tape);
    assert_eq!(
        r.fingerprint,
        model.fingerprint(),
        "fingerprint differs from SPEC §1 definition"
    );
    tape
}

// -------------------------------------------------------------------------------------------
// 1. Byte compatibility with the Python tartape 3.0.3
// -------------------------------------------------------------------------------------------

/// Records `root` with Python first (its catalog outside the tree), then with tartape, and
/// compares tape bytes and fingerprints.
fn python_compat(build: impl FnOnce(&Path) -> PathBuf) {
    let Some(python) = py_tartape() else { return };
    let work_dir = tempdir();
    let work = work_dir.path();
    let root = build(&work.join("src"));
    let (py_tape, py_fp) = python_reference(&python, &root, &work.join("python.db"), work);
    let rs_fp = record(&root, &work.join("tartape.db"));
    let rs_tape = stream_to_file(
        &root,
        &work.join("tartape.db"),
        None,
        None,
        &work.join("tartape.tar"),
    );
    assert_same_tape("python tartape 3.0.3", &py_tape, "tartape", &rs_tape);
    assert_eq!(
        rs_fp, py_fp,
        "fingerprints differ (tartape vs python) although the tapes are identical"
    );
}

#[test]
fn python_byte_compat_full_tree() {
    python_compat(build_compat_tree);
}

#[test]
fn python_byte_compat_escape_names_tree() {
    python_compat(|p| build_small_tree(p, 42));
}

/// More entries than one batch of the walk (512): the rows are then written by the
/// writer thread while the walk goes on, which smaller trees never start.
#[test]
fn python_byte_compat_more_entries_than_one_batch() {
    python_compat(build_tree_of_several_batches);
}

/// Python takes whole seconds as `int(st.st_mtime)` of a float, which rounds up to the next
/// second when the nanosecond part is within ~120 ns of it (e.g. .999999999). The tape must
/// still be byte-identical to Python's for such trees (SPEC §1 "Compatibility").
#[test]
fn python_byte_compat_mtime_nanoseconds_near_next_second() {
    python_compat(|parent| {
        let root = parent.join(ROOT_NAME);
        write_file(&root.join("ns999999999"), b"a\n", 0o644);
        write_file(&root.join("ns999999900"), b"b\n", 0o644);
        write_file(&root.join("ns999999000"), b"c\n", 0o644);
        fs::create_dir(root.join("dir999999999")).unwrap();
        symlink("ns999999999", &root.join("link999999999"));
        write_file(&root.join("max-octal-999999000"), b"d\n", 0o644);
        set_mtime(&root, 1_700_000_000, 999_999_950);
        set_mtime(&root.join("dir999999999"), 1_700_000_300, 999_999_999);
        set_mtime(&root.join("link999999999"), 1_700_000_400, 999_999_999);
        // near 8^11 − 1 a double is coarser (~1 µs): .999999 still rounds down there
        set_mtime(
            &root.join("max-octal-999999000"),
            8_589_934_590,
            999_999_000,
        );
        set_mtime(&root.join("ns999999999"), 1_700_000_000, 999_999_999);
        set_mtime(&root.join("ns999999900"), 1_700_000_100, 999_999_900);
        set_mtime(&root.join("ns999999000"), 1_700_000_200, 999_999_000);
        root
    });
}

// -------------------------------------------------------------------------------------------
// The tape against an independent model of SPEC §1 (no external tool needed)
// -------------------------------------------------------------------------------------------

#[test]
fn tape_matches_independent_model() {
    let r = record_tree(build_compat_tree);
    let model = Model::from_tree(&r.root);
    full_tape_checked_against(&model, &r);

    let out = tartape_ok(&[
        os("info"),
        os(&r.root),
        os("--catalog"),
        os(&r.catalog),
        os("--json"),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let info: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("info --json: {e}\n{text}"));
    for key in [
        "fingerprint",
        "total_size",
        "entry_count",
        "data_size",
        "created_at",
        "catalog",
        "source",
    ] {
        assert!(info.contains_key(key), "info --json lacks {key:?}: {text}");
    }
    assert_eq!(
        info["fingerprint"].as_str(),
        Some(model.fingerprint().as_str())
    );
    assert_eq!(info["total_size"].as_u64(), Some(model.total));
    assert_eq!(
        info["entry_count"].as_u64(),
        Some(model.entries.len() as u64)
    );
    assert_eq!(info["data_size"].as_u64(), Some(model.data_size()));
}

/// More entries than one batch of the walk (512): the rows are then written by the writer
/// thread, which smaller trees never start. Checked against the model, without Python.
#[test]
fn tape_of_several_batches_matches_independent_model() {
    let r = record_tree(build_tree_of_several_batches);
    let model = Model::from_tree(&r.root);
    assert!(
        model.entries.len() > 1024,
        "{} entries",
        model.entries.len()
    );
    full_tape_checked_against(&model, &r);
}

fn build_tree_of_several_batches(parent: &Path) -> PathBuf {
    let root = parent.join(ROOT_NAME);
    for d in 0..3 {
        for i in 0..450 {
            let body = format!("{d}/{i}\n");
            write_file(&root.join(format!("d{d}/f{i:03}")), body.as_bytes(), 0o644);
        }
        fs::create_dir_all(root.join(format!("d{d}.sub/empty"))).unwrap();
    }
    set_all_mtimes(&root, 1_700_000_000);
    root
}

// -------------------------------------------------------------------------------------------
// 2. Extraction with real tools
// -------------------------------------------------------------------------------------------

#[test]
fn extract_gnu_tar() {
    check_extraction(Tool::GnuTar, build_compat_tree);
}

#[test]
fn extract_bsdtar() {
    check_extraction(Tool::Bsdtar, build_compat_tree);
}

#[test]
fn extract_7z() {
    check_extraction(Tool::SevenZip, build_compat_tree);
}

#[test]
fn extract_python_tarfile() {
    check_extraction(Tool::PythonTarfile, build_compat_tree);
}

#[test]
fn extract_rust_tar_crate() {
    check_extraction(Tool::TarCrate, build_compat_tree);
}

// -------------------------------------------------------------------------------------------
// 3. A file over 8 GiB
// -------------------------------------------------------------------------------------------

const BIG: u64 = 9 * 1024 * 1024 * 1024;
const BIG_OCTAL_MAX: u64 = 0o77777777777; // 8 GiB − 1

/// `a.txt`, a sparse 9 GiB `big.bin` (made with set_len, like `truncate -s 9G`), `c.txt`.
fn build_big_tree(parent: &Path) -> PathBuf {
    let root = parent.join(ROOT_NAME);
    write_file(&root.join("a.txt"), b"before\n", 0o644);
    write_file(&root.join("c.txt"), b"after the big one\n", 0o644);
    let f = fs::File::create(root.join("big.bin")).unwrap();
    f.set_len(BIG).unwrap();
    drop(f);
    set_all_mtimes(&root, 1_650_000_000);
    root
}

/// The > 8 GiB tape against Python's: the bytes up to the end of the big file's header
/// (base-256 size) and from 1000 bytes before the end of its content to the end of the tape.
#[test]
fn python_byte_compat_file_over_8_gib() {
    let Some(python) = py_tartape() else { return };
    let work_dir = tempdir();
    let work = work_dir.path();
    let root = build_big_tree(&work.join("src"));
    let model = Model::from_tree(&root);
    let big = model.get("big.bin").clone();
    let (head_len, tail_start) = (big.offset + BLOCK, big.content_end() - 1000);
    let (py, py_fp) = python_reference_slices(
        &python,
        &root,
        &work.join("python.db"),
        work,
        &[(0, Some(head_len)), (tail_start, None)],
    );
    let catalog = work.join("tartape.db");
    let rs_fp = record(&root, &catalog);
    let head = stream_to_file(&root, &catalog, None, Some(head_len), &work.join("h.bin"));
    assert_same_tape("python tartape 3.0.3", &py[0], "tartape", &head);
    let tail = stream_to_file(&root, &catalog, Some(tail_start), None, &work.join("t.bin"));
    assert_same_slice("python tartape 3.0.3", &py[1], "tartape", &tail, tail_start);
    assert_eq!(rs_fp, py_fp, "fingerprints differ (tartape vs python)");
}

/// Sizes 8 GiB − 1 (the largest octal size) and 8 GiB (the smallest base-256 one): each header
/// against the model, and against Python's when it is available.
#[test]
fn size_boundary_around_8_gib() {
    let r = record_tree(|parent| {
        let root = parent.join(ROOT_NAME);
        fs::create_dir_all(&root).unwrap();
        for (name, len) in [("x-8g-minus-1", BIG_OCTAL_MAX), ("y-8g", BIG_OCTAL_MAX + 1)] {
            fs::File::create(root.join(name))
                .unwrap()
                .set_len(len)
                .unwrap();
        }
        write_file(&root.join("z.txt"), b"last\n", 0o644);
        set_all_mtimes(&root, 1_660_000_000);
        root
    });
    let model = Model::from_tree(&r.root);
    assert_eq!(r.fingerprint, model.fingerprint());
    let octal = model.get("x-8g-minus-1");
    let b256 = model.get("y-8g");
    let headers: Vec<(u64, Option<u64>)> = model
        .entries
        .iter()
        .map(|e| (e.offset, Some(BLOCK)))
        .collect();
    let ours: Vec<Vec<u8>> = headers
        .iter()
        .enumerate()
        .map(|(i, &(o, l))| {
            let p = r.work.join(format!("h{i}.bin"));
            stream_to_file(&r.root, &r.catalog, Some(o), l, &p)
        })
        .collect();
    for (e, h) in model.entries.iter().zip(&ours) {
        assert_same_slice(
            "model",
            &model.render_range(e.offset, e.offset + BLOCK),
            "tartape",
            h,
            e.offset,
        );
    }
    let idx = |e: &ModelEntry| model.entries.iter().position(|x| x.rel == e.rel).unwrap();
    assert_eq!(&ours[idx(octal)][124..136], b"77777777777\0");
    assert_eq!(ours[idx(b256)][124], 0x80);

    let Some(python) = py_tartape() else { return };
    let (py, py_fp) = python_reference_slices(
        &python,
        &r.root,
        &r.work.join("python.db"),
        &r.work,
        &headers,
    );
    for ((e, ours), py) in model.entries.iter().zip(&ours).zip(&py) {
        assert_same_slice("python tartape 3.0.3", py, "tartape", ours, e.offset);
    }
    assert_eq!(
        r.fingerprint, py_fp,
        "fingerprints differ (tartape vs python)"
    );
}

/// Small special cases against Python: an empty root, a root holding only empty things, and a
/// root given through a symlink and with a trailing `/.` (the arc root is the final component
/// of the canonical path in both).
#[test]
fn python_byte_compat_small_cases() {
    python_compat(|parent| {
        let root = parent.join("empty-root");
        fs::create_dir_all(&root).unwrap();
        set_mtime(&root, 1_600_000_000, 1);
        root
    });
    python_compat(|parent| {
        let root = parent.join("only empty things");
        write_file(&root.join("e"), b"", 0o600);
        fs::create_dir_all(root.join("E")).unwrap();
        set_all_mtimes(&root, 1_500_000_000);
        root
    });
    python_compat(|parent| {
        let real = parent.join("real-root");
        write_file(&real.join("f"), b"f\n", 0o644);
        set_all_mtimes(&real, 1_400_000_000);
        symlink("real-root", &parent.join("alias"));
        parent.join("alias").join(".")
    });
}

/// mtimes outside the 11-digit octal range are GNU base-256 (two's complement when negative),
/// and tar implementations read them back.
#[test]
fn out_of_range_mtimes_use_base256() {
    let times = [
        ("before-epoch", -1i64),
        ("year-1938", -1_000_000_000),
        ("first-beyond-octal", BIG_OCTAL_MAX as i64 + 1),
        ("year-2286", 10_000_000_000),
    ];
    let r = record_tree(|parent| {
        let root = parent.join(ROOT_NAME);
        for (name, _) in times {
            write_file(&root.join(name), name.as_bytes(), 0o644);
        }
        set_all_mtimes(&root, 1_600_000_000);
        for (name, t) in times {
            set_mtime(&root.join(name), t, 0);
        }
        root
    });
    let model = Model::from_tree(&r.root);
    for (name, t) in times {
        assert_eq!(model.get(name).mtime, t, "the filesystem did not keep {t}");
    }
    let tape = full_tape_checked_against(&model, &r);
    for (name, _) in times {
        assert_eq!(
            tape[model.get(name).offset as usize + 136] & 0x80,
            0x80,
            "{name}"
        );
    }
    if have_tool("python3") {
        let out = run_ok(
            Command::new("python3")
                .arg("-c")
                .arg("import sys, tarfile\nfor m in tarfile.open(sys.argv[1]): print(m.mtime, m.name)")
                .arg(r.work.join("full.tar")),
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for (name, t) in times {
            let line = format!("{t} {}/{name}", ROOT_NAME);
            assert!(
                text.lines().any(|l| l == line),
                "python tarfile lacks {line:?}:\n{text}"
            );
        }
    }
    if have_tool("GNU tar") {
        let out = run_ok(
            umask022("tar")
                .arg("--full-time")
                .arg("--quoting-style=literal")
                .arg("-tvf")
                .arg(r.work.join("full.tar"))
                .env("TZ", "UTC"),
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for (name, when) in [
            ("before-epoch", "1969-12-31 23:59:59"),
            ("year-1938", "1938-04-24 22:13:20"),
            ("year-2286", "2286-11-20 17:46:40"),
        ] {
            assert!(
                text.lines().any(|l| l.contains(when) && l.ends_with(name)),
                "GNU tar lists {name} without {when}:\n{text}"
            );
        }
    }
}

#[test]
fn file_over_8_gib_base256_size() {
    let r = record_tree(build_big_tree);
    let model = Model::from_tree(&r.root);
    let big = model.get("big.bin").clone();
    let after = model.get("c.txt").clone();
    assert_eq!(big.size, BIG);
    assert_eq!(r.fingerprint, model.fingerprint());

    // header region up to and including the big file's header
    let hdr_end = big.offset + BLOCK;
    let head = stream_to_file(
        &r.root,
        &r.catalog,
        Some(0),
        Some(hdr_end),
        &r.work.join("head.bin"),
    );
    assert_eq!(head.len() as u64, hdr_end);
    let h = &head[big.offset as usize..];
    assert_eq!(
        h[124],
        0x80,
        "size field of a > 8 GiB file must be GNU base-256:\n{}",
        describe_header(h)
    );
    let mut be = [0u8; 16];
    be[5..].copy_from_slice(&h[125..136]);
    assert_eq!(u128::from_be_bytes(be), BIG as u128, "base-256 size");
    assert_same_tape(
        "model",
        &model.render_range(0, hdr_end),
        "tartape --length",
        &head,
    );

    // near the end of the big file's content: zeros, then the next entry, then the footer
    let o = big.content_end() - 1000;
    let tail = stream_to_file(
        &r.root,
        &r.catalog,
        Some(o),
        Some(3000),
        &r.work.join("tail.bin"),
    );
    let expect_len = 3000.min(model.total - o);
    assert_eq!(
        tail.len() as u64,
        expect_len,
        "slice near the end of the big file"
    );
    assert!(
        tail[..1000].iter().all(|&b| b == 0),
        "content of a sparse file must be zeros"
    );
    let next = &tail[1000..1512];
    assert_eq!(
        header_path(next),
        after.arc_path,
        "header after the big file:\n{}",
        describe_header(next)
    );
    assert_eq!(
        tail,
        model.render_range(o, o + 3000),
        "slice near the end of the big file"
    );
    let last = stream_to_file(
        &r.root,
        &r.catalog,
        Some(model.total - 2048),
        None,
        &r.work.join("last.bin"),
    );
    assert_eq!(last, model.render_range(model.total - 2048, model.total));
    assert!(last[1024..].iter().all(|&b| b == 0), "footer");

    // events when resuming inside the big file
    let ev_path = r.work.join("events.jsonl");
    tartape_ok(&[
        os("stream"),
        os(&r.root),
        os("--catalog"),
        os(&r.catalog),
        os("--offset"),
        os(o.to_string()),
        os("--events"),
        os(&ev_path),
        os("-o"),
        os(r.work.join("resumed.bin")),
    ]);
    let events = read_events(&ev_path);
    let want = vec![
        Ev::Start(big.arc_str(), big.offset, true),
        Ev::End(big.arc_str(), big.end(), None),
        Ev::Start(after.arc_str(), after.offset, false),
        Ev::End(
            after.arc_str(),
            after.end(),
            Some(md5_hex(&model.content(&after))),
        ),
        Ev::Completed(model.total),
    ];
    assert_eq!(events, want, "events resuming inside the > 8 GiB file");

    // a sparse reconstruction of the whole tape, listed by GNU tar (which seeks over content)
    if have_tool("GNU tar") {
        let sparse = r.work.join("sparse.tar");
        fs::write(&sparse, &head).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&sparse)
            .unwrap()
            .set_len(big.content_end())
            .unwrap();
        let rest = stream_to_file(
            &r.root,
            &r.catalog,
            Some(big.content_end()),
            None,
            &r.work.join("rest.bin"),
        );
        append(&sparse, &rest);
        assert_eq!(fs::metadata(&sparse).unwrap().len(), model.total);
        let out = run_ok(
            umask022("tar")
                .arg("--quoting-style=literal")
                .arg("-tvf")
                .arg(&sparse),
        );
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.stderr.is_empty(),
            "GNU tar warned: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = listing
            .lines()
            .find(|l| l.ends_with(&big.arc_str()))
            .unwrap_or_else(|| panic!("big file not listed:\n{listing}"));
        assert!(
            line.contains(&BIG.to_string()),
            "GNU tar lists the wrong size: {line}"
        );
        assert!(
            listing.lines().last().unwrap().ends_with(&after.arc_str()),
            "listing:\n{listing}"
        );
        assert_eq!(
            listing.lines().count(),
            model.entries.len(),
            "listing:\n{listing}"
        );
    }
}

// -------------------------------------------------------------------------------------------
// 4. Random slices
// -------------------------------------------------------------------------------------------

#[test]
fn random_slices_equal_the_full_stream() {
    let r = record_tree(|p| build_small_tree(p, 7));
    let model = Model::from_tree(&r.root);
    let full = full_tape(&r);
    assert_tape_is_model(&model, &full);
    let total = full.len() as u64;
    let piped = stream_to_stdout(&r.root, &r.catalog, None, None);
    assert!(piped == full, "stream to stdout differs from stream -o");

    let mut rng = Rng::new(0x5eed_1234_abcd);
    let mut failures = Vec::new();
    for i in 0..50 {
        let offset = match i {
            0 => 0,
            1 => total - 1,
            2 => total - FOOTER,
            3 => 511,
            4 => 512,
            _ => rng.below(total),
        };
        let length = match rng.below(4) {
            0 => 1 + rng.below(16),
            1 => 1 + rng.below(4096),
            2 => 1 + rng.below(total / 2),
            _ => total - offset + rng.below(5000), // past the end: clamped
        };
        let got = if i % 2 == 0 {
            stream_to_file(
                &r.root,
                &r.catalog,
                Some(offset),
                Some(length),
                &r.work.join("slice.bin"),
            )
        } else {
            stream_to_stdout(&r.root, &r.catalog, Some(offset), Some(length))
        };
        let end = (offset + length).min(total);
        let want = &full[offset as usize..end as usize];
        if got != want {
            let d = got.iter().zip(want).position(|(a, b)| a != b);
            failures.push(format!(
                "--offset {offset} --length {length}: got {} bytes, want {} (first difference at slice byte {d:?})",
                got.len(),
                want.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "slices differ from the full stream:\n{}",
        failures.join("\n")
    );

    // a split into five ranges concatenates to the whole
    let mut cuts: Vec<u64> = (0..4).map(|_| 1 + rng.below(total - 1)).collect();
    cuts.push(0);
    cuts.sort();
    cuts.dedup();
    let mut joined = Vec::new();
    for (i, &c) in cuts.iter().enumerate() {
        let len = cuts.get(i + 1).map(|n| n - c);
        joined.extend(stream_to_file(
            &r.root,
            &r.catalog,
            Some(c),
            len,
            &r.work.join(format!("part{i}.bin")),
        ));
    }
    assert!(
        joined == full,
        "concatenation of ranges at {cuts:?} differs from the full stream"
    );
}

// -------------------------------------------------------------------------------------------
// 5. Events
// -------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Ev {
    Start(String, u64, bool),
    End(String, u64, Option<String>),
    Completed(u64),
}

fn parse_events(text: &str) -> Vec<Ev> {
    #[derive(serde::Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
    enum Line {
        FileStart {
            path: String,
            start_offset: u64,
            resumed: bool,
        },
        FileEnd {
            path: String,
            end_offset: u64,
            md5: Option<String>,
        },
        TapeCompleted {
            total_size: u64,
        },
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            match serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")) {
                Line::FileStart {
                    path,
                    start_offset,
                    resumed,
                } => Ev::Start(path, start_offset, resumed),
                Line::FileEnd {
                    path,
                    end_offset,
                    md5,
                } => Ev::End(path, end_offset, md5),
                Line::TapeCompleted { total_size } => Ev::Completed(total_size),
            }
        })
        .collect()
}

fn read_events(path: &Path) -> Vec<Ev> {
    parse_events(&fs::read_to_string(path).unwrap())
}

/// The events a stream from `offset` to the end must produce (SPEC §4: `resumed` when the
/// offset lies inside the entry; md5 only for regular files streamed whole).
fn expected_events(model: &Model, offset: u64) -> Vec<Ev> {
    let mut v = Vec::new();
    for e in &model.entries {
        if e.end() <= offset {
            continue;
        }
        let resumed = offset > e.offset;
        v.push(Ev::Start(e.arc_str(), e.offset, resumed));
        let md5 = (e.kind == Kind::File && !resumed).then(|| md5_hex(&model.content(e)));
        v.push(Ev::End(e.arc_str(), e.end(), md5));
    }
    v.push(Ev::Completed(model.total));
    v
}

fn stream_with_events(r: &Recorded, offset: Option<u64>, tag: &str) -> (Vec<u8>, Vec<Ev>) {
    let ev = r.work.join(format!("events-{tag}.jsonl"));
    let out = r.work.join(format!("out-{tag}.bin"));
    let mut args = vec![os("stream"), os(&r.root), os("--catalog"), os(&r.catalog)];
    if let Some(o) = offset {
        args.extend([os("--offset"), os(o.to_string())]);
    }
    args.extend([os("--events"), os(&ev), os("-o"), os(&out)]);
    tartape_ok(&args);
    (fs::read(&out).unwrap(), read_events(&ev))
}

#[test]
fn events_full_stream() {
    let r = record_tree(|p| build_small_tree(p, 99));
    let model = Model::from_tree(&r.root);
    let (bytes, events) = stream_with_events(&r, None, "full");
    assert_tape_is_model(&model, &bytes);
    let want = expected_events(&model, 0);
    assert_eq!(events, want, "events of a full stream");
    // explicit spot checks of the documented values
    let empty = model.get("empty");
    assert!(events.contains(&Ev::End(
        empty.arc_str(),
        empty.end(),
        Some("d41d8cd98f00b204e9800998ecf8427e".into())
    )));
    let weird = model.get("sub/deeper/ünï \"quoted\" \\ back\ttab.txt");
    assert!(
        events.contains(&Ev::Start(weird.arc_str(), weird.offset, false)),
        "JSON escaping of {:?}",
        weird.arc_str()
    );

    // `--events -` writes the same lines to stderr
    let out = tartape_ok(&[
        os("stream"),
        os(&r.root),
        os("--catalog"),
        os(&r.catalog),
        os("--events"),
        os("-"),
        os("-o"),
        os(r.work.join("stderr-events.bin")),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: String = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        parse_events(&lines),
        want,
        "events on stderr with --events -"
    );
}

#[test]
fn events_resumed_streams() {
    let r = record_tree(|p| build_small_tree(p, 1234));
    let model = Model::from_tree(&r.root);
    let file = model.get("data/file3.bin").clone(); // > 200 KB
    let dir = model.get("sub").clone();
    let next_after_file = model.entries[model
        .entries
        .iter()
        .position(|e| e.rel == file.rel)
        .unwrap()
        + 1]
    .clone();

    // inside a file's content: resumed, no md5 for it, md5 for the following files
    let o = file.content_start() + 1000;
    let (bytes, events) = stream_with_events(&r, Some(o), "content");
    assert_eq!(
        bytes,
        model.render_range(o, model.total),
        "bytes from --offset {o}"
    );
    assert_eq!(
        events,
        expected_events(&model, o),
        "events from --offset {o} (inside {})",
        file.arc_str()
    );

    // exactly at an entry's first byte (not resumed, md5 present), and inside a
    // directory's header
    for (o, what) in [
        (next_after_file.offset, "an entry boundary"),
        (dir.offset + 100, "inside a directory header"),
    ] {
        let (bytes, events) = stream_with_events(&r, Some(o), "boundary");
        assert_eq!(bytes, model.render_range(o, model.total));
        assert_eq!(
            events,
            expected_events(&model, o),
            "events from --offset {o} ({what})"
        );
    }

    // inside a file's header: resumed; its md5, if given at all, must be right
    let o = file.offset + 10;
    let (bytes, events) = stream_with_events(&r, Some(o), "header");
    assert_eq!(bytes, model.render_range(o, model.total));
    let mut want = expected_events(&model, o);
    if let (Some(Ev::End(_, _, Some(got))), Some(Ev::End(_, _, w))) =
        (events.get(1), want.get_mut(1))
    {
        assert_eq!(
            got,
            &md5_hex(&model.content(&file)),
            "md5 of a file resumed inside its header"
        );
        *w = Some(got.clone());
    }
    assert_eq!(
        events, want,
        "events from --offset {o} (inside a file header)"
    );

    // inside the footer: only tape_completed
    let o = model.total - 10;
    let (bytes, events) = stream_with_events(&r, Some(o), "footer");
    assert_eq!(bytes, vec![0u8; 10]);
    assert_eq!(
        events,
        vec![Ev::Completed(model.total)],
        "events from inside the footer"
    );
}

/// Sanity check of the test harness itself against the Python tartape's tapes (runs whenever
/// the reference is available): the independent model agrees with Python on the full tree.
#[test]
fn model_agrees_with_python() {
    let Some(python) = py_tartape() else { return };
    let work_dir = tempdir();
    let work = work_dir.path();
    let root = build_compat_tree(&work.join("src"));
    let (py_tape, py_fp) = python_reference(&python, &root, &work.join("python.db"), work);
    let model = Model::from_tree(&root);
    assert_same_tape(
        "model",
        &model.render_range(0, model.total),
        "python",
        &py_tape,
    );
    assert_eq!(model.fingerprint(), py_fp);
}

/// A deliberate difference: Python tartape drops every path with a component named
/// `.tartape` at any depth (`TAPE_METADATA_DIR in p.parts`), even with `exclude=[]`. SPEC §2
/// says tartape never drops user data it was not told to drop, and only `DIR/.tartape`
/// (where its own catalog lives) is ours; so nested `.tartape` directories and files are
/// recorded like any other name. Python's tape of such a tree is lossy, so it is not a
/// compatibility reference here; the tape must still follow SPEC §1 exactly.
#[test]
fn nested_dot_tartape_is_user_data() {
    let r = record_tree(|parent| {
        let root = parent.join(ROOT_NAME);
        write_file(&root.join("sub/.tartape/index.db"), b"not ours\n", 0o644);
        write_file(&root.join("sub/f"), b"f\n", 0o644);
        write_file(
            &root.join("deep/x/.tartape"),
            b"a file named .tartape\n",
            0o644,
        );
        write_file(&root.join("deep/x/y"), b"y\n", 0o644);
        set_all_mtimes(&root, 1_600_000_000);
        root
    });
    let tape = full_tape(&r);
    let names = tar_names(&tape);
    for kept in [
        "/sub/.tartape/",
        "/sub/.tartape/index.db",
        "/deep/x/.tartape",
    ] {
        assert!(
            names.iter().any(|n| n == &format!("{ROOT_NAME}{kept}")),
            "{kept} missing from {names:?}"
        );
    }
    let model = Model::from_tree(&r.root);
    assert_tape_is_model(&model, &tape);
}

/// Entry names of a tape, read with the Rust `tar` crate.
fn tar_names(tape: &[u8]) -> Vec<String> {
    tar::Archive::new(tape)
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

/// Paths are byte strings: non-UTF-8 names and symlink targets are kept as they are on disk,
/// extract byte-identically with GNU tar, and are written lossily in JSON events.
#[test]
fn non_utf8_names_kept_as_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let latin1 = OsStr::from_bytes(b"latin1-\xe9t\xe9.txt");
    let bad_dir = OsStr::from_bytes(b"dir-\xff");
    let r = record_tree(|parent| {
        let root = parent.join(ROOT_NAME);
        write_file(&root.join(latin1), b"latin-1 name\n", 0o644);
        write_file(&root.join(bad_dir).join("inner"), b"inner\n", 0o755);
        symlink(OsStr::from_bytes(b"\xfe-target"), &root.join("link"));
        set_all_mtimes(&root, 1_600_000_000);
        root
    });
    let model = Model::from_tree(&r.root);
    let (tape, events) = stream_with_events(&r, None, "non-utf8");
    assert_tape_is_model(&model, &tape);
    assert_eq!(r.fingerprint, model.fingerprint());
    let lossy = |e: &ModelEntry| String::from_utf8_lossy(&e.arc_path).into_owned();
    let starts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Ev::Start(p, _, _) => Some(p.as_str()),
            _ => None,
        })
        .collect();
    let want: Vec<String> = model.entries.iter().map(lossy).collect();
    assert_eq!(starts, want, "event paths must be the lossy arc paths");

    if have_tool("GNU tar") {
        let dest = r.work.join("x");
        fs::create_dir(&dest).unwrap();
        run_ok(
            umask022("tar")
                .arg("-xf")
                .arg(r.work.join("out-non-utf8.bin"))
                .arg("-C")
                .arg(&dest),
        );
        let report = diff_snapshots(&expected_snapshot(&model), &snapshot(&dest.join(ROOT_NAME)));
        assert!(report.is_empty(), "GNU tar extraction differs:\n{report}");
    }
}

// -------------------------------------------------------------------------------------------
// Volumes (SPEC §8): names, windows and bytes as the Python tartape 3.0.3 cuts them
// -------------------------------------------------------------------------------------------

/// One line of `tartape volumes … --json`.
struct OurVolume {
    part: u64,
    name: String,
    start: u64,
    end: u64,
    first_entry: Option<String>,
    last_entry: Option<String>,
}

/// `tartape volumes … --json`: every volume.
fn our_volumes(root: &Path, catalog: &Path, size: u64) -> Vec<OurVolume> {
    let out = tartape_ok(&[
        os("volumes"),
        os(root),
        os("--catalog"),
        os(catalog),
        os("--volume-size"),
        os(size.to_string()),
        os("--json"),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
            let entry = |k: &str| {
                assert!(v[k].is_null() || v[k].is_string(), "{k} in {line}");
                v[k].as_str().map(str::to_string)
            };
            assert_eq!(n("size"), n("end") - n("start"), "{line}");
            OurVolume {
                part: n("part"),
                name: v["name"].as_str().unwrap().to_string(),
                start: n("start"),
                end: n("end"),
                first_entry: entry("first_entry"),
                last_entry: entry("last_entry"),
            }
        })
        .collect()
}

/// `tartape volumes … --volume K --json`: the entries of volume K in the Python
/// manifest's form, `[arc_path, state, local start, local end, slice or null]`.
fn our_manifest(root: &Path, catalog: &Path, size: u64, part: u64) -> Vec<serde_json::Value> {
    let out = tartape_ok(&[
        os("volumes"),
        os(root),
        os("--catalog"),
        os(catalog),
        os("--volume-size"),
        os(size.to_string()),
        os("--volume"),
        os(part.to_string()),
        os("--json"),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["part"], part, "{line}");
            let slice = match &v["content"] {
                serde_json::Value::Null => serde_json::Value::Null,
                c => serde_json::json!([c["volume_offset"], c["length"], c["source_offset"]]),
            };
            serde_json::json!([
                v["path"],
                v["state"],
                v["volume_start"],
                v["volume_end"],
                slice
            ])
        })
        .collect()
}

/// For the same tree and volume size, the volume names, byte windows, volume bytes and
/// manifests are the Python tartape's `Tape.iter_volumes(size)`: at 512 bytes (headers
/// straddle volumes, and more than 1,000 volumes widen the part number to 4 digits), at
/// sizes that are not powers of two, with a short last volume, and at a size larger than
/// the tape (one volume that holds the footer and every entry).
#[test]
fn python_volume_parity() {
    let Some(python) = py_tartape() else { return };
    let work_dir = tempdir();
    let work = work_dir.path();
    let root = build_compat_tree(&work.join("src"));
    let big: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write_file(&root.join("zz-big.bin"), &big, 0o644);
    let sizes = [512u64, 1536, 5120, 64 * 1024, 1 << 30];
    let (py, py_fp) = python_volumes(&python, &root, work, &sizes);
    let catalog = work.join("tartape.db");
    let fp = record(&root, &catalog);
    assert_eq!(fp, py_fp, "fingerprints differ");
    let tape = stream_to_file(&root, &catalog, None, None, &work.join("tape.tar"));
    for size in sizes {
        let theirs: Vec<&PyVolume> = py.iter().filter(|v| v.size == size).collect();
        let ours = our_volumes(&root, &catalog, size);
        assert_eq!(ours.len(), theirs.len(), "volume count at size {size}");
        assert_eq!(ours.len() as u64, (tape.len() as u64).div_ceil(size));
        if size == 512 {
            assert!(
                ours.len() > 1000,
                "the tree must give more than 1,000 volumes"
            );
            assert!(ours[0].name.ends_with(".tar.0001"), "{}", ours[0].name);
        }
        for (v, p) in ours.iter().zip(&theirs) {
            let part = v.part;
            assert_eq!(
                (&v.name, v.start, v.end),
                (&p.name, p.start, p.end),
                "volume {part} at size {size}"
            );
            let window = &tape[v.start as usize..v.end as usize];
            assert_eq!(
                hex(&Sha256::digest(window)),
                p.sha256,
                "bytes of volume {part} ({}) at size {size}",
                v.name
            );
            // First and last entries: those of the Python manifest, `null` only for a
            // volume wholly inside the footer.
            let path =
                |e: Option<&serde_json::Value>| e.map(|e| e[0].as_str().unwrap().to_string());
            assert_eq!(
                (v.first_entry.clone(), v.last_entry.clone()),
                (path(p.entries.first()), path(p.entries.last())),
                "first and last entry of volume {part} at size {size}"
            );
            assert_eq!(
                v.first_entry.is_none(),
                v.start >= tape.len() as u64 - 1024,
                "volume {part} at size {size}"
            );
        }
        // The whole manifests (states, windows in the volume, content slices): of every
        // volume when there are few, else of the first, second, middle and last ones and
        // of those where an entry is a body or a tail.
        let n = ours.len() as u64;
        let mut parts: Vec<u64> = if n <= 64 {
            (1..=n).collect()
        } else {
            let crossing = theirs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.entries.iter().any(|e| e[1] == "body" || e[1] == "tail"));
            let mut parts: Vec<u64> = crossing.map(|(i, _)| i as u64 + 1).step_by(97).collect();
            parts.extend([1, 2, n.div_ceil(2), n]);
            parts
        };
        parts.sort();
        parts.dedup();
        for &k in &parts {
            assert_eq!(
                our_manifest(&root, &catalog, size, k),
                theirs[(k - 1) as usize].entries,
                "manifest of volume {k} at size {size}"
            );
        }
        // `stream --volume K` writes those bytes: first, second, middle and last.
        let mut parts = vec![1, 2.min(n), n.div_ceil(2), n];
        parts.dedup();
        for k in parts {
            let out = work.join(format!("vol-{size}-{k}"));
            tartape_ok(&[
                os("stream"),
                os(&root),
                os("--catalog"),
                os(&catalog),
                os("--volume-size"),
                os(size.to_string()),
                os("--volume"),
                os(k.to_string()),
                os("-o"),
                os(&out),
            ]);
            assert_eq!(
                hex(&Sha256::digest(fs::read(&out).unwrap())),
                theirs[(k - 1) as usize].sha256,
                "`stream --volume {k}` at size {size}"
            );
        }
    }
}
