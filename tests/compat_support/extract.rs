//! Extraction of a recorded tree by real tar implementations (SPEC §1 "Compatibility"):
//! GNU tar, bsdtar, 7-Zip, Python's `tarfile` and the Rust `tar` crate each unpack the
//! tape, and the result must be the source tree: structure, contents, symlink targets,
//! anonymised modes (and file mtimes where the tool restores them). The tools that list
//! must list exactly the tape's entries, in tape order.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// One tar implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    GnuTar,
    Bsdtar,
    SevenZip,
    PythonTarfile,
    TarCrate,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::GnuTar => "GNU tar",
            Tool::Bsdtar => "bsdtar",
            Tool::SevenZip => "7z",
            Tool::PythonTarfile => "python3",
            Tool::TarCrate => "rust tar crate",
        }
    }

    /// Whether it can run here (a loud skip, or a failure under `TARTAPE_REQUIRE_TOOLS=1`,
    /// when it cannot).
    fn available(self) -> bool {
        self == Tool::TarCrate || have_tool(self.name())
    }

    /// The mtime a file recorded with mtime 0 (the epoch) gets: the `tar` crate
    /// deliberately writes 1 instead of 0; everyone else restores 0.
    fn epoch_mtime_becomes(self) -> i64 {
        i64::from(self == Tool::TarCrate)
    }

    /// 7-Zip >= 25 rewrites an absolute symlink target `/x` to `<output dir>/x` (a
    /// deliberate 7-Zip policy, ip7z/7zip#149); older versions keep it. Either form is
    /// accepted then.
    fn rebases_absolute_links(self) -> bool {
        self == Tool::SevenZip
    }

    /// Unpacks `tape` into the empty directory `dest` (and lists it, where the tool lists).
    fn extract(self, tape: &Path, dest: &Path) {
        match self {
            Tool::GnuTar => {
                // Trees have mtimes in the future on purpose (2038, 2242).
                run_quiet(
                    umask022("tar")
                        .arg("--no-same-owner")
                        .arg("--warning=no-timestamp")
                        .arg("-xf")
                        .arg(tape)
                        .arg("-C")
                        .arg(dest),
                    "GNU tar",
                );
                assert_lists_tape_order(
                    umask022("tar")
                        .arg("--quoting-style=literal")
                        .arg("-tf")
                        .arg(tape),
                    "GNU tar -t",
                    tape,
                );
            }
            Tool::Bsdtar => {
                run_quiet(
                    umask022("bsdtar").arg("-xf").arg(tape).arg("-C").arg(dest),
                    "bsdtar",
                );
                assert_lists_tape_order(umask022("bsdtar").arg("-tf").arg(tape), "bsdtar -t", tape);
            }
            Tool::SevenZip => extract_7z(tape, dest),
            Tool::PythonTarfile => {
                let out = run_ok(
                    umask022("python3")
                        .arg("-c")
                        .arg(PY_EXTRACT)
                        .arg(tape)
                        .arg(dest),
                );
                assert!(
                    out.stderr.is_empty(),
                    "python tarfile warned: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Tool::TarCrate => {
                let mut a = tar::Archive::new(fs::File::open(tape).unwrap());
                a.set_mask(0o022);
                a.unpack(dest).unwrap();
                // and list it: every entry parses, paths and sizes as in the model
                let mut a = tar::Archive::new(fs::File::open(tape).unwrap());
                let listed: Vec<Vec<u8>> = a
                    .entries()
                    .unwrap()
                    .map(|e| e.unwrap().path_bytes().into_owned())
                    .collect();
                let model = Model::from_tree(&tape.parent().unwrap().join("src").join(ROOT_NAME));
                assert_same_listing("tar crate", &listed, &model_listing(&model));
            }
        }
    }
}

const PY_EXTRACT: &str = r#"import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    try:
        t.extractall(sys.argv[2], filter="tar")
    except TypeError:
        t.extractall(sys.argv[2])
"#;

/// 7-Zip restores contents, symlinks, file mtimes and permission bits; it applies the
/// process umask to the stored modes (checked under umask 022, which leaves anonymised
/// modes unchanged), and 7-Zip >= 25 rebases absolute symlink targets under the output
/// directory. 7-Zip >= 25 refuses by default to create symlinks whose target contains `..`
/// or is `.` ("Dangerous link path was ignored", exit 2) whatever the archive; `-snld`
/// lifts that policy, so it is passed when the installed 7z knows it.
fn extract_7z(tape: &Path, dest: &Path) {
    let seven = |extra: &[&str]| {
        run(umask022("7z")
            .arg("x")
            .arg("-y")
            .arg("-bd")
            .args(extra)
            .arg(format!("-o{}", dest.display()))
            .arg(tape))
    };
    let mut out = seven(&["-snld"]);
    if out.status.code() == Some(7) {
        // command-line error: an older 7z (p7zip 16.02) without -snld and without the policy
        out = seven(&[]);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "7z failed with {}:\n{text}\n{err}",
        out.status
    );
    assert!(
        text.contains("Everything is Ok"),
        "7z output:\n{text}\n{err}"
    );
    assert!(
        !text.to_lowercase().contains("warning"),
        "7z warned:\n{text}\n{err}"
    );
}

/// Records the tree `build` makes (its root named [`ROOT_NAME`]), streams it, lets `tool`
/// unpack it into an empty directory, and compares the result with the source tree.
pub fn check_extraction(tool: Tool, build: impl FnOnce(&Path) -> PathBuf) {
    if !tool.available() {
        return;
    }
    let work_dir = tempfile::Builder::new()
        .prefix("tartape-extract-")
        .tempdir()
        .unwrap();
    let work = work_dir.path();
    let root = build(&work.join("src"));
    let catalog = work.join("tartape.db");
    record(&root, &catalog);
    let model = Model::from_tree(&root);
    let tape = work.join("tape.tar");
    stream_to_file(&root, &catalog, None, None, &tape);
    let dest = work.join(format!("extract-{}", tool.name().replace(' ', "_")));
    fs::create_dir(&dest).unwrap();
    tool.extract(&tape, &dest);

    let top: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        top,
        vec![std::ffi::OsString::from(ROOT_NAME)],
        "{tool:?}: unexpected top level"
    );

    let mut expected = expected_snapshot(&model);
    for n in expected.values_mut() {
        if let Node::File {
            mtime: mtime @ 0, ..
        } = n
        {
            *mtime = tool.epoch_mtime_becomes();
        }
    }
    let mut got = snapshot(&dest.join(ROOT_NAME));
    if tool.rebases_absolute_links() {
        let base = dest.canonicalize().unwrap();
        for (p, n) in got.iter_mut() {
            if let (Node::Symlink { target }, Some(Node::Symlink { target: want })) =
                (&mut *n, expected.get(p))
                && want.is_absolute()
                && let Ok(rest) = target.strip_prefix(&base)
                && Path::new("/").join(rest) == *want
            {
                *target = want.clone();
            }
        }
    }
    let report = diff_snapshots(&expected, &got);
    assert!(
        report.is_empty(),
        "{tool:?}: extracted tree differs from the source:\n{report}"
    );
}

pub fn diff_snapshots(expected: &BTreeMap<PathBuf, Node>, got: &BTreeMap<PathBuf, Node>) -> String {
    let mut r = String::new();
    for (p, e) in expected {
        match got.get(p) {
            None => r.push_str(&format!("  missing  {}: expected {e:?}\n", p.display())),
            Some(g) if g != e => r.push_str(&format!(
                "  differs  {}:\n    expected {e:?}\n    got      {g:?}\n",
                p.display()
            )),
            _ => {}
        }
    }
    for (p, g) in got {
        if !expected.contains_key(p) {
            r.push_str(&format!("  extra    {}: {g:?}\n", p.display()));
        }
    }
    r
}

/// The header paths (dirs with a trailing slash) in tape order, as raw bytes.
pub fn model_listing(model: &Model) -> Vec<Vec<u8>> {
    model.entries.iter().map(model_header_path).collect()
}

/// What GNU tar (1.34, Debian 12's) says of a POSIX `hdrcharset` record, a keyword it does
/// not know: it then keeps the name's bytes as they are, which is what BINARY asks for.
/// The one warning a tool may give (the extraction is checked all the same).
const GNU_TAR_HDRCHARSET: &str = "tar: Ignoring unknown extended header keyword 'hdrcharset'";

/// Runs `cmd`, which must succeed without a word on stderr (but GNU tar's line about
/// `hdrcharset`).
pub fn run_quiet(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = run_ok(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().all(|line| line == GNU_TAR_HDRCHARSET),
        "{what} warned: {stderr}"
    );
    out
}

/// `cmd` lists the tape: quietly, and exactly the model's entries in tape order (one per
/// line, raw bytes).
fn assert_lists_tape_order(cmd: &mut Command, what: &str, tape: &Path) {
    let out = run_quiet(cmd, what);
    let mut listed: Vec<Vec<u8>> = out
        .stdout
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(listed.pop(), Some(Vec::new()), "{what}: no final newline");
    let model = Model::from_tree(&tape.parent().unwrap().join("src").join(ROOT_NAME));
    assert_same_listing(what, &listed, &model_listing(&model));
}

/// `name` as bsdtar lists it: bytes that are not UTF-8 as `\ooo`.
fn octal_escaped(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in name.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        }
    }
    out
}

/// A listing is the tape's entries in tape order (a name that is not UTF-8 may be shown
/// escaped, as bsdtar does); on failure, says where the two first differ.
fn assert_same_listing(what: &str, listed: &[Vec<u8>], want: &[Vec<u8>]) {
    let same = |got: &Vec<u8>, want: &Vec<u8>| got == want || *got == octal_escaped(want);
    let first_difference =
        (0..listed.len().max(want.len())).find(|&i| match (listed.get(i), want.get(i)) {
            (Some(g), Some(w)) => !same(g, w),
            _ => true,
        });
    if let Some(i) = first_difference {
        let show = |v: Option<&Vec<u8>>| v.map(|p| String::from_utf8_lossy(p).into_owned());
        panic!(
            "{what} listing: {} names, the tape has {}; first difference at {i}:\n  listed {:?}\n  tape   {:?}",
            listed.len(),
            want.len(),
            show(listed.get(i)),
            show(want.get(i))
        );
    }
}
