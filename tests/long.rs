//! Long entries (SPEC §1 "Long entries (PAX)"): header paths over 255 bytes or without a
//! ustar split, components up to 255 bytes, symlink targets over 100 bytes and names that
//! are not UTF-8 get one `x` header each, with a layout still fixed at recording time.
//! Checked byte for byte against the independent model and the SPEC's field list, through
//! every reader of offsets (ranges, events, ls, locate, volumes and restore), and by
//! extraction with GNU tar, bsdtar, 7-Zip, Python `tarfile` and the `tar` crate. (The mount
//! is checked in `tests/mount.rs`.)
//!
//! Tests that need an external tool print a loud `SKIP` when it is absent, and fail
//! instead when `TARTAPE_REQUIRE_TOOLS=1`.

mod common;
mod compat_support;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use compat_support::extract::*;
use compat_support::*;

/// The long tree recorded, its model, and its whole tape.
struct Long {
    _work: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    catalog: PathBuf,
    model: Model,
    tape: Vec<u8>,
}

impl Long {
    fn new() -> Long {
        let work_dir = tempfile::Builder::new()
            .prefix("tartape-long-")
            .tempdir()
            .unwrap();
        let work = work_dir.path().to_path_buf();
        let root = build_long_tree(&work.join("src"));
        let catalog = work.join("tartape.db");
        let fingerprint = record(&root, &catalog);
        let model = Model::from_tree(&root);
        assert_eq!(fingerprint, model.fingerprint(), "fingerprint (SPEC §1)");
        let tape = stream_to_file(&root, &catalog, None, None, &work.join("full.tar"));
        Long {
            _work: work_dir,
            work,
            root,
            catalog,
            model,
            tape,
        }
    }

    /// `tartape CMD ROOT --catalog CATALOG ARGS…`, which must succeed.
    fn run(&self, cmd: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec![os(cmd), os(&self.root), os("--catalog"), os(&self.catalog)];
        all.extend(args.iter().map(os));
        tartape_ok(&all)
    }

    fn long_entries(&self) -> Vec<&ModelEntry> {
        self.model
            .entries
            .iter()
            .filter(|e| !e.pax.is_empty())
            .collect()
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The tape is the model's, byte for byte; exactly the entries SPEC §1 calls long have an
/// `x` header, and the short ones around them are plain ustar.
#[test]
fn long_tree_is_the_model_byte_for_byte() {
    let t = Long::new();
    assert_same_tape(
        "model (SPEC §1)",
        &t.model.render_range(0, t.model.total),
        "tartape",
        &t.tape,
    );
    let has_pax = |rel: &str| !t.model.get(rel).pax.is_empty();
    for rel in [
        rel_of_arc_len("p256", 256),
        rel_of_arc_len("p1000", 1000),
        rel_of_arc_len("p3000", 3000),
        "f".repeat(101),
        format!("c255/{}", "g".repeat(255)),
        "D".repeat(101),
        "E".repeat(255),
        format!("{}/in", "E".repeat(255)),
        format!("empty/{}", "e".repeat(255)),
        format!(
            "ns/{}/{}/{}",
            "a".repeat(76),
            "b".repeat(79),
            "n".repeat(86)
        ),
        "links/t101".into(),
        "links/t900".into(),
        "bin/target".into(),
        format!("d255/{}/{}", "q".repeat(142), "w".repeat(99)),
    ] {
        assert!(has_pax(&rel), "{rel} must be a long entry");
    }
    let p255 = format!("p255/{}/{}", "m".repeat(142), "z".repeat(99));
    for rel in ["", "a.txt", "zz.txt", "links/short", "p256.after", &p255] {
        assert!(!has_pax(rel), "{rel} must be plain ustar");
    }
    // A 101-byte directory name sits whole in the prefix of its children's headers.
    assert!(!has_pax(&format!("{}/in", "D".repeat(101))));
    assert!(t.long_entries().len() >= 20, "{}", t.long_entries().len());
    let info: serde_json::Value =
        serde_json::from_slice(&t.run("info", &["--json"]).stdout).unwrap();
    assert_eq!(
        info["long_entries"].as_u64(),
        Some(t.long_entries().len() as u64)
    );
    assert_eq!(info["total_size"].as_u64(), Some(t.model.total));
}

fn octal(field: &[u8]) -> u64 {
    let digits: Vec<u8> = field.iter().copied().take_while(|&b| b != 0).collect();
    u64::from_str_radix(std::str::from_utf8(&digits).unwrap(), 8).unwrap()
}

/// Every `x` header and its records, field by field against SPEC §1 (not through the
/// model's encoder): name, mode, owner, size, mtime, typeflag, checksum, record lengths
/// and order, values, padding, and the entry's fallback ustar header after it.
#[test]
fn x_headers_and_records_follow_the_spec_field_by_field() {
    let t = Long::new();
    for e in t.long_entries() {
        let what = lossy(&e.arc_path);
        let at = e.offset as usize;
        let x = &t.tape[at..at + 512];
        assert_eq!(&x[..14], b"././@PaxHeader", "{what}");
        assert!(x[14..100].iter().all(|&b| b == 0), "{what}: name");
        assert_eq!(&x[100..108], b"0000644\0", "{what}: mode");
        assert_eq!(&x[108..116], b"0000000\0", "{what}: uid");
        assert_eq!(&x[116..124], b"0000000\0", "{what}: gid");
        assert_eq!(octal(&x[136..148]) as i64, e.mtime, "{what}: mtime");
        assert_eq!(x[156], b'x', "{what}: typeflag");
        assert!(x[157..257].iter().all(|&b| b == 0), "{what}: linkname");
        assert_eq!(&x[257..265], b"ustar\x0000", "{what}: magic");
        assert_eq!(&x[265..270], b"root\0", "{what}: uname");
        assert_eq!(&x[297..302], b"root\0", "{what}: gname");
        assert!(x[329..512].iter().all(|&b| b == 0), "{what}: dev, prefix");
        let mut copy = x.to_vec();
        copy[148..156].fill(b' ');
        let sum: u64 = copy.iter().map(|&b| b as u64).sum();
        assert_eq!(
            &x[148..156],
            format!("{sum:06o}\0 ").as_bytes(),
            "{what}: checksum"
        );

        let size = octal(&x[124..136]) as usize;
        let records = &t.tape[at + 512..at + 512 + size];
        let padded = size.div_ceil(512) * 512;
        assert!(
            t.tape[at + 512 + size..at + 512 + padded]
                .iter()
                .all(|&b| b == 0),
            "{what}: records padding"
        );
        let mut parsed = Vec::new();
        let mut r = records;
        while !r.is_empty() {
            let sp = r.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&r[..sp]).unwrap().parse().unwrap();
            assert_eq!(r[len - 1], b'\n', "{what}: record end");
            let eq = sp + r[sp..].iter().position(|&b| b == b'=').unwrap();
            parsed.push((lossy(&r[sp + 1..eq]), r[eq + 1..len - 1].to_vec()));
            r = &r[len..];
        }
        let path = model_header_path(e);
        let long_path = path.len() > 255 || split_path(&path).is_none();
        let long_target = e.target.len() > 100;
        let mut want = Vec::new();
        let binary = (long_path && std::str::from_utf8(&path).is_err())
            || (long_target && std::str::from_utf8(&e.target).is_err());
        if binary {
            want.push(("hdrcharset".to_string(), b"BINARY".to_vec()));
        }
        if long_target {
            want.push(("linkpath".to_string(), e.target.clone()));
        }
        if long_path {
            want.push(("path".to_string(), path.clone()));
        }
        assert_eq!(parsed, want, "{what}: records");

        // The entry's own header: a fallback name, the first 100 bytes of the target.
        let h = &t.tape[at + 512 + padded..at + 1024 + padded];
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec()
        };
        if long_path {
            assert_eq!(field(0..100), path[..100], "{what}: fallback name");
            assert!(h[345..500].iter().all(|&b| b == 0), "{what}: prefix");
        }
        if long_target {
            assert_eq!(
                field(157..257),
                e.target[..100],
                "{what}: fallback linkname"
            );
        }
        assert_eq!(
            (at + 1024 + padded) as u64,
            e.content_start(),
            "{what}: content follows the header"
        );
    }
}

#[test]
fn long_entries_extract_with_gnu_tar() {
    check_extraction(Tool::GnuTar, build_long_tree);
}

#[test]
fn long_entries_extract_with_bsdtar() {
    check_extraction(Tool::Bsdtar, build_long_tree);
}

#[test]
fn long_entries_extract_with_7z() {
    check_extraction(Tool::SevenZip, build_long_tree);
}

#[test]
fn long_entries_extract_with_python_tarfile() {
    check_extraction(Tool::PythonTarfile, build_long_tree);
}

#[test]
fn long_entries_extract_with_the_tar_crate() {
    check_extraction(Tool::TarCrate, build_long_tree);
}

/// `stream --offset N --length L` equals the same bytes of the whole tape, at every edge
/// of every long entry (inside its `x` header, its records, their padding, its header)
/// and at random offsets.
#[test]
fn ranges_from_anywhere_equal_the_full_tape() {
    let t = Long::new();
    let total = t.tape.len() as u64;
    assert_eq!(total, t.model.total);
    let mut starts = Vec::new();
    for e in t.long_entries() {
        let records = e.offset + 512;
        let size = octal(&t.tape[e.offset as usize + 124..e.offset as usize + 136]);
        starts.extend([
            e.offset,
            e.offset + 100,
            records,
            records + 1,
            // the last record byte, the first byte of their padding
            records + size - 1,
            records + size,
            e.header_start() - 1,
            e.header_start(),
            e.header_start() + 3,
        ]);
    }
    let mut rng = Rng::new(0x5eed_1009);
    for _ in 0..20 {
        starts.push(rng.below(total));
    }
    for (i, &start) in starts.iter().enumerate() {
        let len = match i % 3 {
            0 => 1,
            1 => 1 + rng.below(3000),
            _ => 1 + rng.below(70_000),
        }
        .min(total - start);
        let got = stream_to_stdout(&t.root, &t.catalog, Some(start), Some(len));
        let want = &t.tape[start as usize..(start + len) as usize];
        assert_same_slice("full tape", want, "stream --offset --length", &got, start);
    }
    // From inside a record to the end.
    let e = t.long_entries()[3];
    let got = stream_to_stdout(&t.root, &t.catalog, Some(e.offset + 700), None);
    assert_same_slice(
        "full tape",
        &t.tape[(e.offset + 700) as usize..],
        "stream --offset",
        &got,
        e.offset + 700,
    );
}

fn events(t: &Long, offset: u64) -> Vec<serde_json::Value> {
    let path = t.work.join(format!("events-{offset}.jsonl"));
    let out = t.work.join(format!("out-{offset}.tar"));
    t.run(
        "stream",
        &[
            "--offset",
            &offset.to_string(),
            "--events",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `file_start` of a long entry is at its `x` header, `file_end` after its padding; a
/// stream resumed inside its records starts it as resumed.
#[test]
fn events_of_a_long_entry_start_at_its_x_header() {
    let t = Long::new();
    let all = events(&t, 0);
    let starts: BTreeMap<String, (u64, bool)> = all
        .iter()
        .filter(|v| v["type"] == "file_start")
        .map(|v| {
            let p = v["path"].as_str().unwrap().to_string();
            (
                p,
                (
                    v["start_offset"].as_u64().unwrap(),
                    v["resumed"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    let ends: BTreeMap<String, u64> = all
        .iter()
        .filter(|v| v["type"] == "file_end")
        .map(|v| {
            (
                v["path"].as_str().unwrap().to_string(),
                v["end_offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(starts.len(), t.model.entries.len());
    for e in &t.model.entries {
        assert_eq!(starts[&e.arc_str()], (e.offset, false), "{}", e.arc_str());
        assert_eq!(ends[&e.arc_str()], e.end(), "{}", e.arc_str());
    }
    for e in t.long_entries().into_iter().take(4) {
        let inside = e.offset + 512 + 10;
        let resumed = events(&t, inside);
        let first = &resumed[0];
        assert_eq!(first["type"], "file_start");
        assert_eq!(first["path"], e.arc_str().as_str());
        assert_eq!(first["start_offset"].as_u64(), Some(e.offset));
        assert_eq!(first["resumed"], true);
    }
}

/// `ls` gives every entry's start (its `x` header) and end; `locate` shows the `x`
/// header's range, and says which part of a long entry covers a byte.
#[test]
fn ls_and_locate_know_the_x_header() {
    let t = Long::new();
    let out = t.run("ls", &["--json"]);
    let listed: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), t.model.entries.len());
    for (l, e) in listed.iter().zip(&t.model.entries) {
        assert_eq!(l["path"], e.arc_str().as_str());
        assert_eq!(
            l["start_offset"].as_u64(),
            Some(e.offset),
            "{}",
            e.arc_str()
        );
        assert_eq!(l["end_offset"].as_u64(), Some(e.end()), "{}", e.arc_str());
    }
    let e = t.model.get(&rel_of_arc_len("p1000", 1000));
    let arc = e.arc_str();
    let out = t.run("locate", &[&arc, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let range = |a: u64, b: u64| serde_json::json!([a, b]);
    assert_eq!(v["start_offset"].as_u64(), Some(e.offset));
    assert_eq!(v["pax"], range(e.offset, e.header_start()));
    assert_eq!(v["header"], range(e.header_start(), e.content_start()));
    assert_eq!(v["content"], range(e.content_start(), e.content_end()));
    assert_eq!(v["end_offset"].as_u64(), Some(e.end()));
    let text = String::from_utf8(t.run("locate", &[&arc]).stdout).unwrap();
    assert!(
        text.contains(&format!("pax:     [{}, {})", e.offset, e.header_start())),
        "{text}"
    );
    let short = t.model.get("a.txt");
    let v: serde_json::Value =
        serde_json::from_slice(&t.run("locate", &[&short.arc_str(), "--json"]).stdout).unwrap();
    assert_eq!(v["pax"], serde_json::Value::Null);
    for (at, part, within) in [
        (e.offset + 5, "pax header", 5),
        (e.offset + 512 + 7, "pax records", 7),
        (e.header_start() + 1, "header", 1),
        (e.content_start() + 2, "content", 2),
    ] {
        let out = t.run("locate", &["--offset", &at.to_string(), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["part"], part, "{at}");
        assert_eq!(v["offset_in_part"].as_u64(), Some(within), "{at}");
        assert_eq!(v["entry"]["path"], arc.as_str());
    }
}

/// `--strict-ustar` refuses the tree, naming every long entry at once (`-v` lists them
/// all), and writes no catalog.
#[test]
fn strict_ustar_lists_every_long_entry() {
    let t = Long::new();
    let catalog = t.work.join("strict.db");
    let out = tartape(&[
        os("record"),
        os(&t.root),
        os("--catalog"),
        os(&catalog),
        os("--strict-ustar"),
        os("-v"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // What the Python tartape refuses: a header path over 255 bytes, any component over
    // 100 bytes, no split; a symlink target over 100 bytes.
    let refused: Vec<&ModelEntry> = t
        .model
        .entries
        .iter()
        .filter(|e| {
            let path = model_header_path(e);
            path.len() > 255
                || path.split(|&b| b == b'/').any(|c| c.len() > 100)
                || split_path(&path).is_none()
                || e.target.len() > 100
        })
        .collect();
    assert!(
        refused.len() > t.long_entries().len(),
        "children of long names too"
    );
    assert!(
        err.contains(&format!(
            "error: {} path(s) cannot be written as ustar",
            refused.len()
        )),
        "{err}"
    );
    // `-v` logs each one as `<path>: <why>`: exactly these paths.
    let root = t.root.to_str().unwrap();
    let logged: std::collections::BTreeSet<String> = err
        .lines()
        .filter_map(|l| l.split_once(&format!("{root}/")))
        .filter_map(|(_, rest)| rest.rsplit_once(": ").map(|(p, _)| p.to_string()))
        .filter(|p| !p.contains("; "))
        .collect();
    let want: std::collections::BTreeSet<String> = refused
        .iter()
        .map(|e| lossy(e.rel.as_os_str().as_bytes()))
        .collect();
    assert_eq!(logged, want);
    assert!(!catalog.exists());
    // Without it, the same tree records, and says how many entries have a PAX header.
    let out = tartape_ok(&[
        os("record"),
        os(&t.root),
        os("--catalog"),
        os(&catalog),
        os("--json"),
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["long_entries"].as_u64(),
        Some(t.long_entries().len() as u64)
    );
    assert_eq!(summary["total_size"].as_u64(), Some(t.model.total));
}

/// Volumes cut anywhere through long entries, and a restore from them gives back the tree.
#[test]
fn volumes_and_restore_carry_long_entries() {
    let t = Long::new();
    let size = "4K";
    let out = t.run("volumes", &["--volume-size", size, "--json"]);
    let vols: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dir = t.work.join("vols");
    fs::create_dir(&dir).unwrap();
    let mut joined = Vec::new();
    for v in &vols {
        let file = dir.join(v["name"].as_str().unwrap());
        let part = v["part"].as_u64().unwrap().to_string();
        t.run(
            "stream",
            &[
                "--volume-size",
                size,
                "--volume",
                &part,
                "-o",
                file.to_str().unwrap(),
            ],
        );
        joined.extend(fs::read(&file).unwrap());
    }
    assert!(joined == t.tape, "the volumes joined are not the tape");
    let dest = t.work.join("restored");
    tartape_ok(&[
        os("restore"),
        os(&t.catalog),
        os("--from"),
        os(&dir),
        os("-C"),
        os(&dest),
    ]);
    let report = diff_snapshots(
        &expected_snapshot(&t.model),
        &snapshot(&dest.join(ROOT_NAME)),
    );
    assert!(report.is_empty(), "restored tree differs:\n{report}");
    // One long file alone; `locate` says which volumes hold its head and its content.
    let e = t.model.get(&rel_of_arc_len("p3000", 3000));
    let v: serde_json::Value = serde_json::from_slice(
        &t.run("locate", &[&e.arc_str(), "--volume-size", size, "--json"])
            .stdout,
    )
    .unwrap();
    let total = |key: &str| -> u64 {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["length"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        total("header_slices"),
        e.content_start() - e.offset,
        "x header, records, header"
    );
    assert_eq!(total("slices"), e.size);
    let first = &v["header_slices"][0];
    assert_eq!(
        first["volume_offset"].as_u64().unwrap() + (first["part"].as_u64().unwrap() - 1) * 4096,
        e.offset
    );
    let one = t.work.join("one");
    tartape_ok(&[
        os("restore"),
        os(&t.catalog),
        os("--from"),
        os(&dir),
        os(Path::new(&e.arc_str())),
        os("-C"),
        os(&one),
    ]);
    let back = fs::read(one.join(ROOT_NAME).join(&e.rel)).unwrap();
    assert_eq!(back, t.model.content(e));
}

/// A path longer than `PATH_MAX` (4,096 bytes), which no single system call takes: the
/// walk records it one directory at a time, and stream, verify and restore reach it the
/// same way.
#[test]
fn paths_over_path_max_are_recorded_streamed_and_restored() {
    use rustix::fs::{Mode, OFlags};
    let work = tempfile::Builder::new()
        .prefix("tartape-long-")
        .tempdir()
        .unwrap();
    let root = work.path().join("src").join(ROOT_NAME);
    fs::create_dir_all(&root).unwrap();
    let rel = common::make_deep_file(&root, 30, b"six kilobytes down\n");
    assert!(rel.len() > 6000);

    let catalog = work.path().join("deep.db");
    record(&root, &catalog);
    let tape = stream_to_file(&root, &catalog, None, None, &work.path().join("t.tar"));
    tartape_ok(&[os("verify"), os(&root), os("--catalog"), os(&catalog)]);
    let mut arc = format!("{ROOT_NAME}/").into_bytes();
    arc.extend_from_slice(&rel);
    let mut found = None;
    let mut a = tar::Archive::new(&tape[..]);
    for entry in a.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == arc.as_slice() {
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            found = Some((entry.raw_header_position(), content));
        }
    }
    let (header_at, content) = found.expect("the deepest file is in the tape");
    assert_eq!(content, b"six kilobytes down\n");
    // From inside its records to the end of the tape.
    let records = header_at - 1500;
    let got = stream_to_stdout(&root, &catalog, Some(records), None);
    assert_same_slice(
        "full tape",
        &tape[records as usize..],
        "stream --offset",
        &got,
        records,
    );
    let dest = work.path().join("restored");
    tartape_ok(&[
        os("restore"),
        os(&catalog),
        os("--from"),
        os(work.path().join("t.tar")),
        os("-C"),
        os(&dest),
    ]);
    let mut at = rustix::fs::open(
        dest.join(ROOT_NAME),
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    )
    .unwrap();
    let (dirs, name) = rel.split_at(rel.len() - b"deepest.txt".len());
    for comp in dirs.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        at = rustix::fs::openat(&at, comp, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .unwrap();
    }
    let back = rustix::fs::openat(&at, name, OFlags::RDONLY, Mode::empty()).unwrap();
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut File::from(back), &mut content).unwrap();
    assert_eq!(content, b"six kilobytes down\n");
}
