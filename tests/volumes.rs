//! Volumes and restore (SPEC §8), driving the real binary: the volumes are windows of the
//! tape, and `restore` rebuilds files from just the volumes that hold them, refusing
//! missing, foreign and damaged volumes before it writes anything, and never writing
//! outside its destination.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::{Digest, Sha256};

mod common;
use common::*;

/// A temporary directory with `photos/` (the source), its catalog `cat.db` beside it, the
/// whole tape `tape.tar`, and room for volumes and restores.
struct Env {
    dir: tempfile::TempDir,
    tape: Vec<u8>,
    fingerprint: String,
}

impl Env {
    fn new(record_args: &[&str]) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("tartape-volumes-")
            .tempdir()
            .unwrap();
        build_tree(&dir.path().join("photos"));
        let mut env = Env {
            dir,
            tape: Vec::new(),
            fingerprint: String::new(),
        };
        let mut args = vec!["record", "photos", "--catalog", "cat.db"];
        args.extend_from_slice(record_args);
        let out = env.run(&args);
        assert_success(&out, "record");
        env.fingerprint = stdout(&out)
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint: "))
            .unwrap()
            .to_string();
        assert_success(&env.cat(&["stream", "-o", "tape.tar"]), "stream");
        env.tape = fs::read(env.path("tape.tar")).unwrap();
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Output {
        run(tartape().args(args).current_dir(self.dir.path()))
    }

    /// `tartape CMD photos --catalog cat.db ARGS`.
    fn cat(&self, args: &[&str]) -> Output {
        let mut all = vec![args[0], "photos", "--catalog", "cat.db"];
        all.extend_from_slice(&args[1..]);
        self.run(&all)
    }

    /// `tartape volumes --json`: (part, name, start, end, first_entry, last_entry).
    fn volumes(&self, size: &str) -> Vec<serde_json::Value> {
        let out = self.cat(&["volumes", "--volume-size", size, "--json"]);
        assert_success(&out, "volumes");
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Writes every volume of `size` into folder `to` with `stream --volume K`; returns
    /// their names in order.
    fn write_volumes(&self, size: &str, to: &str) -> Vec<String> {
        fs::create_dir_all(self.path(to)).unwrap();
        let mut names = Vec::new();
        for v in self.volumes(size) {
            let name = v["name"].as_str().unwrap().to_string();
            let part = v["part"].as_u64().unwrap().to_string();
            let out = format!("{to}/{name}");
            let o = self.cat(&[
                "stream",
                "--volume-size",
                size,
                "--volume",
                &part,
                "-o",
                &out,
            ]);
            assert_success(&o, "stream --volume");
            names.push(name);
        }
        names
    }

    /// `tartape restore cat.db --from FROM ARGS`.
    fn restore(&self, from: &str, args: &[&str]) -> Output {
        let mut all = vec!["restore", "cat.db", "--from", from];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `tartape locate PATH --volume-size SIZE --json`, parsed.
    fn locate(&self, path: &str, size: &str) -> serde_json::Value {
        let o = self.cat(&["locate", path, "--volume-size", size, "--json"]);
        assert_success(&o, "locate --json");
        serde_json::from_str(stdout(&o).trim()).unwrap()
    }

    /// DEST/PATH holds the bytes of the source's PATH.
    fn assert_restored(&self, dest: &str, path: &str) {
        let got = fs::read(self.path(&format!("{dest}/{path}")))
            .unwrap_or_else(|e| panic!("{dest}/{path}: {e}"));
        assert!(
            got == fs::read(self.path(path)).unwrap(),
            "{dest}/{path} differs"
        );
    }

    fn fp8(&self) -> &str {
        &self.fingerprint[..8]
    }
}

/// Files of every interesting size, nested directories, a symlink, an empty directory,
/// a read-only directory, executable bits, distinct nanosecond mtimes.
fn build_tree(root: &Path) {
    let mut rng = Rng::new(7);
    let files: &[(&str, usize, u32)] = &[
        ("a.txt", 6, 0o755),
        ("empty", 0, 0o644),
        ("2024/jan/x.jpg", 100 * 1024, 0o644),
        ("2024/jan/y.jpg", 513, 0o600),
        ("2024/feb/big.bin", 300 * 1024 + 17, 0o644),
        ("docs/readme.md", 1000, 0o644),
        ("ro/inner.txt", 10, 0o644),
        ("zz-last.bin", 40 * 1024, 0o700),
    ];
    for (i, (rel, len, mode)) in files.iter().enumerate() {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, rng.bytes(*len)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        set_mtime(&p, 1_600_000_000 + i as i64 * 1000, 123_456_789 + i as i64);
    }
    fs::create_dir(root.join("emptydir")).unwrap();
    symlink("../a.txt", root.join("docs/link")).unwrap();
    set_mtime(&root.join("docs/link"), 1_650_000_000, 5);
    for (i, d) in ["2024/jan", "2024/feb", "2024", "docs", "emptydir", "ro", ""]
        .iter()
        .enumerate()
    {
        set_mtime(
            &root.join(d),
            1_700_000_000 + i as i64,
            999_000_000 + i as i64,
        );
    }
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
}

/// What restore must reproduce of one path: kind, mode as the tape holds it, mtime (ns),
/// content digest or link target.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    data: String,
}

/// Every path under `root` (inclusive, `.tartape` left out), as the tape describes it.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let mtime = (meta.mtime(), meta.mtime_nsec());
        let (kind, data) = if meta.file_type().is_symlink() {
            ("symlink", fs::read_link(&p).unwrap().display().to_string())
        } else if meta.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                if e.file_name() != ".tartape" {
                    todo.push(e.path());
                }
            }
            ("dir", String::new())
        } else {
            ("file", hex(&Sha256::digest(fs::read(&p).unwrap())))
        };
        let mode = if kind == "symlink" {
            0o777
        } else {
            meta.mode() & 0o7777
        };
        let node = Node {
            kind,
            mode,
            mtime,
            data,
        };
        out.insert(rel, node);
    }
    out
}

/// The source as the tape holds it (modes normalised), restricted to `under`.
fn expected(root: &Path, under: &str) -> BTreeMap<PathBuf, Node> {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| p.starts_with(under))
        .map(|(p, n)| {
            let mode = match n.kind {
                "dir" => 0o755,
                "symlink" => 0o777,
                _ if n.mode & 0o111 != 0 => 0o755,
                _ => 0o644,
            };
            (p, Node { mode, ..n })
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_same(expected: &BTreeMap<PathBuf, Node>, got: &BTreeMap<PathBuf, Node>) {
    for (p, want) in expected {
        match got.get(p) {
            Some(have) => assert_eq!(have, want, "{}", p.display()),
            None => panic!("{} was not restored", p.display()),
        }
    }
    for p in got.keys() {
        assert!(expected.contains_key(p), "{} should not exist", p.display());
    }
}

/// Every file (any kind) under `dir`, relative.
fn listing(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    snapshot(dir)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------
// The layout
// ---------------------------------------------------------------------------------------

#[test]
fn volumes_are_windows_that_concatenate_to_the_tape() {
    let env = Env::new(&[]);
    let total = env.tape.len() as u64;
    let listed = stdout(&env.cat(&["ls", "--json"]));
    let last_line = listed.lines().last().unwrap();
    let last_entry = serde_json::from_str::<serde_json::Value>(last_line).unwrap()["path"].clone();
    for size in ["512", "1536", "64K", &total.to_string(), "1G"] {
        let s = tartape::volume::parse_size(size, "x").unwrap();
        let vols = env.volumes(size);
        let n = total.div_ceil(s);
        assert_eq!(vols.len() as u64, n, "size {size}");
        let width = n.to_string().len().max(3);
        let mut joined = Vec::new();
        for (i, v) in vols.iter().enumerate() {
            let k = i as u64 + 1;
            assert_eq!(v["part"], k);
            assert_eq!(v["start"], (k - 1) * s);
            assert_eq!(v["end"], (k * s).min(total));
            assert_eq!(
                v["name"],
                format!("photos_{}.tar.{k:0width$}", env.fp8()),
                "size {size}"
            );
            // Only volumes inside the footer touch no entry; one that reaches the footer
            // still names the entries it holds.
            let in_footer = v["start"].as_u64().unwrap() >= total - 1024;
            assert_eq!(v["first_entry"].is_null(), in_footer, "{v}");
            assert_eq!(v["last_entry"].is_null(), in_footer, "{v}");
            if !in_footer && v["end"].as_u64().unwrap() > total - 1024 {
                assert_eq!(v["last_entry"], last_entry, "{v}");
            }
        }
        assert_eq!(vols[0]["first_entry"], "photos");
        let names = env.write_volumes(size, &format!("v{size}"));
        for name in &names {
            joined.extend(fs::read(env.path(&format!("v{size}/{name}"))).unwrap());
        }
        assert_eq!(
            hex(&Sha256::digest(&joined)),
            hex(&Sha256::digest(&env.tape)),
            "volumes of {size} joined"
        );
    }
    // Templates.
    let out = env.cat(&[
        "volumes",
        "--volume-size",
        "64K",
        "--volume-name",
        "{name}-{part}of{total}-{fingerprint:.4}",
    ]);
    assert_success(&out, "volumes --volume-name");
    let first = stdout(&out).lines().next().unwrap().to_string();
    assert!(
        first.contains(&format!(
            "photos-1of{}-{}",
            total.div_ceil(65536),
            &env.fp8()[..4]
        )),
        "{first}"
    );
}

#[test]
fn sizes_and_parts_are_checked_with_one_line() {
    let env = Env::new(&[]);
    let o = env.cat(&["volumes", "--volume-size", "1000"]);
    assert_one_line_error(&o, 2, "512 or 1024");
    let o = env.cat(&["volumes", "--volume-size", "2Q"]);
    assert_one_line_error(&o, 2, "2Q");
    let o = env.cat(&["volumes", "--volume-size", "0"]);
    assert_one_line_error(&o, 2, "at least 512");
    let o = env.cat(&["volumes"]);
    assert_one_line_error(&o, 1, "--volume-size");
    let n = env.volumes("64K").len();
    for bad in ["0", &(n + 1).to_string()] {
        let o = env.cat(&["stream", "--volume-size", "64K", "--volume", bad, "-o", "x"]);
        assert_one_line_error(&o, 1, &format!("1 to {n}"));
    }
    let o = env.cat(&["stream", "--volume-size", "64K", "-o", "x"]);
    assert_one_line_error(&o, 1, "--volume K");
    let o = env.cat(&["stream", "--volume", "1", "-o", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let o = env.cat(&["volumes", "--volume-size", "64K", "--volume-name", "{name}"]);
    assert_one_line_error(&o, 1, "{pindex}");
}

/// `stream --volume K --offset N` resumes inside the volume, like any range.
#[test]
fn a_volume_resumes_from_an_offset_inside_it() {
    let env = Env::new(&[]);
    let o = env.cat(&[
        "stream",
        "--volume-size",
        "64K",
        "--volume",
        "3",
        "--offset",
        "1000",
        "-o",
        "part",
    ]);
    assert_success(&o, "stream --volume --offset");
    let got = fs::read(env.path("part")).unwrap();
    assert_eq!(got, env.tape[2 * 65536 + 1000..3 * 65536]);
}

/// `locate --volume-size` names the volumes, offsets and lengths that hold an entry's
/// header and content: reading them back gives the file.
#[test]
fn locate_points_at_the_bytes_of_an_entry_in_its_volumes() {
    let env = Env::new(&[]);
    let names = env.write_volumes("4K", "v");
    assert!(names.len() > 100);
    let v = env.locate("photos/2024/feb/big.bin", "4K");
    let mut content = Vec::new();
    for s in v["slices"].as_array().unwrap() {
        assert_eq!(s["source_offset"], content.len() as u64);
        let name = s["name"].as_str().unwrap();
        assert_eq!(name, names[s["part"].as_u64().unwrap() as usize - 1]);
        let vol = fs::read(env.path(&format!("v/{name}"))).unwrap();
        let at = s["volume_offset"].as_u64().unwrap() as usize;
        content.extend_from_slice(&vol[at..at + s["length"].as_u64().unwrap() as usize]);
    }
    assert_eq!(
        content,
        fs::read(env.path("photos/2024/feb/big.bin")).unwrap()
    );
    let header = &v["header_slices"][0];
    let vol = fs::read(env.path(&format!("v/{}", header["name"].as_str().unwrap()))).unwrap();
    let at = header["volume_offset"].as_u64().unwrap() as usize;
    assert_eq!(&vol[at + 257..at + 262], b"ustar");
    let text = stdout(&env.cat(&["locate", "photos/2024/feb/big.bin", "--volume-size", "4K"]));
    assert!(text.contains(&names[1]), "{text}");
}

// ---------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------

/// Delete every volume that does not hold the file: restore still gives the exact file,
/// mode and mtime, having opened only the volumes that hold it.
#[test]
fn one_file_is_restored_from_only_the_volumes_that_hold_it() {
    let env = Env::new(&[]);
    let names = env.write_volumes("4K", "v");
    let v = env.locate("photos/2024/jan/x.jpg", "4K");
    let mut keep: Vec<String> = v["header_slices"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["slices"].as_array().unwrap())
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    keep.dedup();
    for name in &names {
        if !keep.contains(name) {
            fs::remove_file(env.path(&format!("v/{name}"))).unwrap();
        }
    }
    let o = env.restore("v", &["photos/2024/jan/x.jpg", "-C", "out"]);
    assert_success(&o, "restore");
    assert!(
        stdout(&o).contains(&format!(
            "reading {} of {} volumes",
            keep.len(),
            names.len()
        )),
        "{}",
        stdout(&o)
    );
    let src = env.path("photos/2024/jan/x.jpg");
    let got = env.path("out/photos/2024/jan/x.jpg");
    assert_eq!(fs::read(&got).unwrap(), fs::read(&src).unwrap());
    assert_eq!(fs::metadata(&got).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(mtime_of(&got), mtime_of(&src));
    assert_eq!(
        listing(&env.path("out")),
        [
            "photos",
            "photos/2024",
            "photos/2024/jan",
            "photos/2024/jan/x.jpg"
        ]
        .map(PathBuf::from)
    );
}

/// Every needed volume that is missing is named, all at once, and nothing is written.
#[test]
fn every_missing_volume_is_named_before_anything_is_written() {
    let env = Env::new(&[]);
    let names = env.write_volumes("4K", "v");
    // (The last volume holds the footer only, which no entry needs.)
    let gone = [&names[3], &names[40], &names[names.len() - 2]];
    for name in gone {
        fs::remove_file(env.path(&format!("v/{name}"))).unwrap();
    }
    let o = env.restore("v", &["-C", "out"]);
    let line = assert_one_line_error(&o, 1, "3 needed volumes are missing");
    for name in gone {
        assert!(line.contains(name.as_str()), "{line}");
    }
    assert!(!env.path("out").exists(), "something was written");
    // A file that needs none of them restores.
    let o = env.restore("v", &["photos/a.txt", "-C", "out"]);
    assert_success(&o, "restore of a file in the volumes left");
}

/// The part holding the header of `path` when cut into volumes of `size`.
fn header_part(env: &Env, path: &str, size: &str) -> u64 {
    env.locate(path, size)["header_slices"][0]["part"]
        .as_u64()
        .unwrap()
}

/// A volume overwritten with other bytes, a cut one, and a volume of another tape are
/// refused by name before anything is written. (Without recorded digests a volume is
/// checked by its size and the headers in it: one that holds only file content is
/// checked by the digests of `record --hash`, see below.)
#[test]
fn foreign_damaged_and_cut_volumes_are_refused_by_name() {
    let env = Env::new(&[]);
    let names = env.write_volumes("4K", "v");
    let part = header_part(&env, "photos/docs/readme.md", "4K");
    let name = &names[part as usize - 1];
    let victim = env.path(&format!("v/{name}"));
    let original = fs::read(&victim).unwrap();
    fs::write(&victim, Rng::new(99).bytes(original.len())).unwrap();
    let o = env.restore("v", &["-C", "out"]);
    let line = assert_one_line_error(&o, 1, name);
    assert!(
        line.contains("byte") && line.contains("not the catalog's"),
        "{line}"
    );
    assert!(!env.path("out").exists(), "something was written");

    // The same part of another tape (same size, other headers).
    let other = tempfile::tempdir().unwrap();
    let src = other.path().join("photos");
    build_tree(&src);
    fs::write(src.join("docs/readme.md"), b"another tape").unwrap();
    assert_success(&run(tartape().arg("record").arg(&src)), "record other");
    assert_success(
        &run(tartape()
            .args([
                "stream",
                "--volume-size",
                "4K",
                "--volume",
                &part.to_string(),
                "-o",
            ])
            .arg(&victim)
            .arg(&src)),
        "stream other",
    );
    assert_eq!(fs::metadata(&victim).unwrap().len(), original.len() as u64);
    let o = env.restore("v", &["-C", "out"]);
    assert_one_line_error(&o, 1, name);
    assert!(!env.path("out").exists(), "something was written");

    // Cut short.
    fs::write(&victim, &original[..1000]).unwrap();
    let o = env.restore("v", &["-C", "out"]);
    let line = assert_one_line_error(&o, 1, name);
    assert!(line.contains("1000 bytes"), "{line}");
    fs::write(&victim, &original).unwrap();
    assert_success(&env.restore("v", &["-C", "out"]), "restore once repaired");
}

/// With digests recorded, content damage inside a file (where no header lies) is found
/// and named; the damaged file is not left behind.
#[test]
fn content_is_checked_against_recorded_digests() {
    let env = Env::new(&["--hash", "sha256"]);
    let names = env.write_volumes("4K", "v");
    let v = env.locate("photos/2024/feb/big.bin", "4K");
    let middle = &v["slices"][10];
    let name = middle["name"].as_str().unwrap();
    let path = env.path(&format!("v/{name}"));
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let o = env.restore("v", &["photos/2024/feb/big.bin", "-C", "out"]);
    let line = assert_one_line_error(&o, 1, "not the recorded one");
    assert!(line.contains("big.bin"), "{line}");
    assert!(!env.path("out/photos/2024/feb/big.bin").exists());
    assert!(
        listing(&env.path("out/photos/2024/feb")).is_empty(),
        "a temporary file was left"
    );
    assert!(names.iter().any(|n| n == name));
}

/// Everything, and a subtree, from volumes and from one archive: the same tree as the
/// source, entry by entry (kind, mode, mtime to the nanosecond, content, link target),
/// directory modes and mtimes included (a read-only directory too).
#[test]
fn restores_of_everything_and_of_a_subtree_equal_the_source() {
    let env = Env::new(&[]);
    env.write_volumes("64K", "v");
    let source = env.path("photos");

    let o = env.restore("v", &["-C", "all"]);
    assert_success(&o, "restore all");
    assert_same(&expected(&source, ""), &snapshot(&env.path("all/photos")));

    let o = env.restore("v", &["photos/2024/", "photos/docs", "-C", "sub"]);
    assert_success(&o, "restore subtrees");
    let mut want = expected(&source, "2024");
    want.extend(expected(&source, "docs"));
    let got = snapshot(&env.path("sub/photos"));
    let got_below: BTreeMap<PathBuf, Node> = got
        .into_iter()
        .filter(|(p, _)| !p.as_os_str().is_empty())
        .collect();
    assert_same(&want, &got_below);
    // `photos/2024.txt`-like neighbours are not part of `photos/2024`.
    assert!(!env.path("sub/photos/a.txt").exists());

    let o = env.restore("tape.tar", &["-C", "whole"]);
    assert_success(&o, "restore --from archive.tar");
    assert!(stdout(&o).contains("from one archive"), "{}", stdout(&o));
    assert_same(&expected(&source, ""), &snapshot(&env.path("whole/photos")));

    let o = env.restore("v", &["photos/nope", "photos/zz", "-C", "x"]);
    let line = assert_one_line_error(&o, 1, "photos/nope, photos/zz");
    assert!(line.contains("not in the tape"), "{line}");
}

/// Existing files are kept without --force (and said so), replaced with it.
#[test]
fn existing_files_are_kept_unless_forced() {
    let env = Env::new(&[]);
    env.write_volumes("64K", "v");
    fs::create_dir_all(env.path("out/photos")).unwrap();
    fs::write(env.path("out/photos/a.txt"), b"mine").unwrap();
    let o = env.restore("v", &["photos/a.txt", "photos/empty", "-C", "out"]);
    assert_success(&o, "restore");
    assert!(
        stderr(&o).contains("kept 1 existing file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(env.path("out/photos/a.txt")).unwrap(), b"mine");
    assert!(env.path("out/photos/empty").exists());
    let o = env.restore("v", &["photos/a.txt", "--force", "-C", "out"]);
    assert_success(&o, "restore --force");
    env.assert_restored("out", "photos/a.txt");
    // A DEST that is a file, a catalog that does not exist: one line each.
    let o = env.restore("v", &["-C", "out/photos/a.txt"]);
    assert_one_line_error(&o, 1, "out/photos/a.txt: exists and is not a directory");
    let o = env.run(&["restore", "nope.db", "--from", "v"]);
    assert_one_line_error(&o, 1, "nope.db: no such catalog file");
}

/// Nothing is written outside DEST: a catalog row whose path climbs out is refused by the
/// catalog's self-check before anything is written, and a symlink inside DEST is never
/// followed.
#[test]
fn nothing_is_written_outside_dest() {
    let env = Env::new(&[]);
    env.write_volumes("64K", "v");
    // A row rewritten to `photos/../../escape`, with a valid row checksum.
    fs::copy(env.path("cat.db"), env.path("evil.db")).unwrap();
    let catalog = tartape::catalog::Catalog::open(&env.path("evil.db")).unwrap();
    let mut e = catalog.find(b"photos/empty").unwrap().unwrap();
    drop(catalog);
    e.rel_path = b"../../escape".to_vec();
    e.arc_path = b"photos/../../escape".to_vec();
    let conn = rusqlite::Connection::open(env.path("evil.db")).unwrap();
    conn.execute(
        "UPDATE entries SET rel_path = ?1, arc_path = ?2, crc = ?3 WHERE ordinal = ?4",
        rusqlite::params![
            e.rel_path,
            e.arc_path,
            tartape::catalog::row_crc(&e),
            e.ordinal.0 as i64
        ],
    )
    .unwrap();
    drop(conn);
    fs::create_dir(env.path("deep")).unwrap();
    let o = run(tartape()
        .args(["restore", "evil.db", "--from", "v", "-C", "deep/dest"])
        .current_dir(env.dir.path()));
    assert_one_line_error(&o, 1, "corrupted catalog");
    assert!(!env.path("escape").exists() && !env.path("deep/escape").exists());
    assert!(!env.path("deep/dest").exists(), "something was written");

    // DEST/photos is a symlink to a folder elsewhere: refused, nothing lands there.
    fs::create_dir_all(env.path("elsewhere")).unwrap();
    fs::create_dir_all(env.path("dest")).unwrap();
    symlink(env.path("elsewhere"), env.path("dest/photos")).unwrap();
    let o = env.restore("v", &["-C", "dest"]);
    assert_one_line_error(&o, 1, "symlink");
    assert!(listing(&env.path("elsewhere")).is_empty());
    let o = env.restore("v", &["photos/2024/jan/x.jpg", "-C", "dest"]);
    assert_one_line_error(&o, 1, "symlink");
    assert!(listing(&env.path("elsewhere")).is_empty());
}

/// A lone volume whose name and size fit two volume sizes (the second of two, or the
/// second of many smaller ones) is told apart by its bytes: the footer is where one size
/// puts it. Restore then names the volume that is missing, and restores once it is back.
#[test]
fn a_lone_volume_tells_the_volume_size_by_its_bytes() {
    let env = Env::new(&[]);
    let total = env.tape.len() as u64;
    // Two volumes, the second being the footer's 1024 bytes: alone, `.002` of 1024 bytes
    // is also the second of volumes of 1024 bytes.
    let size = (total - 1024).to_string();
    let names = env.write_volumes(&size, "v");
    assert_eq!(names.len(), 2);
    fs::rename(env.path(&format!("v/{}", names[0])), env.path(&names[0])).unwrap();
    let o = env.restore("v", &["photos/zz-last.bin", "-C", "out"]);
    let line = assert_one_line_error(&o, 1, "1 needed volume is missing");
    assert!(line.contains(&names[0]), "{line}");
    assert!(!env.path("out").exists());
    let o = env.restore(
        "v",
        &["photos/zz-last.bin", "--volume-size", &size, "-C", "out"],
    );
    assert_one_line_error(&o, 1, &names[0]);
    fs::rename(env.path(&names[0]), env.path(&format!("v/{}", names[0]))).unwrap();
    let o = env.restore("v", &["photos/zz-last.bin", "-C", "out"]);
    assert_success(&o, "restore");
    env.assert_restored("out", "photos/zz-last.bin");
}

/// The volume holding a file in the middle of the tape, alone in its folder (every other
/// deleted), is enough: its size is told from its name, size and bytes.
#[test]
fn a_middle_volume_alone_is_enough() {
    let env = Env::new(&[]);
    let names = env.write_volumes("64K", "v");
    let part = header_part(&env, "photos/docs/readme.md", "64K");
    for (i, name) in names.iter().enumerate() {
        if i as u64 + 1 != part {
            fs::remove_file(env.path(&format!("v/{name}"))).unwrap();
        }
    }
    let o = env.restore("v", &["photos/docs/readme.md", "-C", "out"]);
    assert_success(&o, "restore");
    assert!(stdout(&o).contains(&format!("reading 1 of {} volumes", names.len())));
    env.assert_restored("out", "photos/docs/readme.md");
}
