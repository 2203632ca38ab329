//! `tartape upload` and `restore --from s3://` against a real S3 server (rclone's
//! `serve s3`) started on 127.0.0.1, through a proxy that injects the faults: killed
//! runs resumed, dropped connections, 5xx and `SlowDown`, stalls, bad credentials, a
//! missing bucket, an endpoint that is not there, a source that changes mid-upload.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::s3::{ACCESS_KEY, Action, Proxy, Rule, S3Server, SECRET_KEY, Seen, can_serve_s3};
use common::*;

const MIB: usize = 1 << 20;

/// A tree of about 27 MiB (eleven files of 2.5 MiB, and small ones) recorded, a server
/// with bucket `bkt`, and a proxy in front of it.
struct Env {
    dir: tempfile::TempDir,
    server: S3Server,
    proxy: Proxy,
    tape: Vec<u8>,
}

impl Env {
    fn new(rclone: &Path) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("big")).unwrap();
        fs::create_dir_all(src.join("small/deep")).unwrap();
        let mut rng = Rng::new(7);
        for i in 0..11 {
            let data: Vec<u8> = (0..5 * MIB / 2).map(|_| rng.next() as u8).collect();
            fs::write(src.join(format!("big/{i:02}.bin")), data).unwrap();
        }
        for i in 0..40 {
            fs::write(
                src.join(format!("small/{i:02}.txt")),
                format!("small file {i}\n"),
            )
            .unwrap();
        }
        fs::write(src.join("small/deep/note.txt"), b"deep\n").unwrap();
        std::os::unix::fs::symlink("../small/00.txt", src.join("big/link")).unwrap();
        let server = S3Server::start(rclone, &["bkt"]);
        let proxy = Proxy::start(server.addr);
        let env = Env {
            dir,
            server,
            proxy,
            tape: Vec::new(),
        };
        let out = env.run(&["record", "src", "--catalog", "cat.db"]);
        assert_success(&out, "record");
        let tape = env.stream();
        Env { tape, ..env }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn stream(&self) -> Vec<u8> {
        let out = self.run(&["stream", "src", "--catalog", "cat.db", "-o", "tape.tar"]);
        assert_success(&out, "stream");
        fs::read(self.path("tape.tar")).unwrap()
    }

    /// `tartape ARGS` with the test's keys in the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = tartape();
        c.args(args)
            .current_dir(self.dir.path())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("TARTAPE_S3_TIMEOUT", "3")
            .env("HOME", self.dir.path())
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_SESSION_TOKEN");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// `tartape upload src s3://bkt/KEY` through the proxy, with `extra` arguments.
    fn upload_command(&self, key: &str, extra: &[&str]) -> Command {
        let url = format!("s3://bkt/{key}");
        let endpoint = self.proxy.endpoint();
        let mut args = vec![
            "upload",
            "src",
            url.as_str(),
            "--catalog",
            "cat.db",
            "--endpoint",
            endpoint.as_str(),
        ];
        if !extra.contains(&"--part-size") {
            args.extend(["--part-size", "5M"]);
        }
        args.extend_from_slice(extra);
        self.command(&args)
    }

    /// Starts an upload of KEY, one part at a time, whose first request `matches` picks
    /// is held by the proxy; returns once it is.
    fn held_upload(&self, key: &str, matches: fn(&Seen) -> bool) -> std::process::Child {
        self.proxy.rule(Rule::new(1, Action::Hold, matches));
        let child = self
            .upload_command(key, &["--jobs", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.proxy.wait_held();
        child
    }

    fn upload(&self, key: &str, extra: &[&str]) -> Output {
        run(&mut self.upload_command(key, extra))
    }

    fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.server.object("bkt", key)
    }

    /// The files beside the catalog whose names end with `suffix`: `.json` for states
    /// (`.done` for the records of completed objects, `.lock` for locks).
    fn uploads_files(&self, suffix: &str) -> Vec<String> {
        fs::read_dir(self.path("uploads"))
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state files beside the catalog.
    fn states(&self) -> Vec<String> {
        self.uploads_files(".json")
    }
}

/// Part numbers of the UploadParts among `seen`, sorted, once each.
fn parts(seen: &[Seen]) -> Vec<u32> {
    let mut p: Vec<u32> = seen
        .iter()
        .filter(|s| s.is_part())
        .filter_map(|s| s.part)
        .collect();
    p.sort_unstable();
    p.dedup();
    p
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn an_upload_is_the_stream_and_a_second_run_sends_nothing() {
    let Some(rclone) = can_serve_s3("an_upload_is_the_stream_and_a_second_run_sends_nothing")
    else {
        return;
    };
    let env = Env::new(&rclone);
    let out = env.upload("photos.tar", &["--json"]);
    assert_success(&out, "upload");
    assert_eq!(
        env.object("photos.tar").unwrap(),
        env.tape,
        "the object is the stream"
    );
    let summary = json(&out);
    let parts_count = env.tape.len().div_ceil(5 * MIB) as u64;
    assert_eq!(summary["bucket"], "bkt");
    assert_eq!(summary["key"], "photos.tar");
    assert_eq!(summary["size"], env.tape.len() as u64);
    assert_eq!(summary["parts"], parts_count);
    assert_eq!(summary["parts_reused"], 0);
    assert_eq!(summary["bytes_sent"], env.tape.len() as u64);
    assert!(summary["upload_id"].is_string() && summary["seconds"].is_number());
    assert!(
        summary["etag"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{parts_count}"))
    );
    // Fixed-size parts, all equal but the last.
    let seen = env.proxy.take_seen();
    let mut sizes: Vec<(u32, usize)> = seen
        .iter()
        .filter(|s| s.is_part())
        .map(|s| (s.part.unwrap(), s.body_len))
        .collect();
    sizes.sort_unstable();
    let last = sizes.pop().unwrap();
    assert!(sizes.iter().all(|&(_, s)| s == 5 * MIB), "{sizes:?}");
    assert_eq!(last.1, env.tape.len() - sizes.len() * 5 * MIB);
    assert_eq!(parts(&seen).len() as u64, parts_count);
    // Every request says its length: S3 refuses chunked ones.
    assert!(!seen.iter().any(|s| s.chunked), "{seen:?}");
    assert!(
        env.states().is_empty(),
        "the state goes with a completed upload"
    );
    assert_eq!(
        env.uploads_files(".done").len(),
        1,
        "a record of what was completed"
    );
    // Again: the object is there with this tape's size and fingerprint; nothing is sent.
    let out = env.upload("photos.tar", &[]);
    assert_success(&out, "upload again");
    assert!(
        stdout(&out).contains("already uploaded"),
        "{}",
        stdout(&out)
    );
    let seen = env.proxy.take_seen();
    assert!(seen.iter().all(|s| s.method == "HEAD"), "{seen:?}");
    // -q: nothing at all.
    let out = env.upload("photos.tar", &["-q"]);
    assert_success(&out, "upload -q");
    assert_eq!((stdout(&out).as_str(), stderr(&out).as_str()), ("", ""));
    // A tape that fits one part is one PUT, checked the same way.
    let out = env.upload("one.tar", &["--part-size", "64M", "--json"]);
    assert_success(&out, "upload in one PUT");
    assert_eq!(env.object("one.tar").unwrap(), env.tape);
    assert_eq!(json(&out)["parts"], 1);
    let seen = env.proxy.take_seen();
    assert_eq!(
        seen.iter().filter(|s| s.method == "PUT").count(),
        1,
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.is_create()));
}

/// Killed (SIGKILL) at four points — before any part, between parts, after the server
/// stored a part but before the state heard of it, before completion — the next run sends
/// only the parts the server lacks, and the object is the stream.
#[test]
fn a_killed_upload_resumes_with_only_the_missing_parts() {
    let Some(rclone) = can_serve_s3("a_killed_upload_resumes_with_only_the_missing_parts") else {
        return;
    };
    let env = Env::new(&rclone);
    let count = env.tape.len().div_ceil(5 * MIB) as u32;
    let all: Vec<u32> = (1..=count).collect();
    type Point = (&'static str, Action, fn(&Seen) -> bool, Vec<u32>);
    let points: Vec<Point> = vec![
        (
            "before any part",
            Action::Hold,
            |s| s.is_part(),
            all.clone(),
        ),
        (
            "between parts",
            Action::Hold,
            |s| s.part == Some(3),
            (3..=count).collect(),
        ),
        (
            "part 4 stored, its state line not written",
            Action::HoldAnswer,
            |s| s.part == Some(4),
            (5..=count).collect(),
        ),
        (
            "before completion",
            Action::Hold,
            |s| s.is_complete(),
            vec![],
        ),
    ];
    for (i, (what, action, matches, missing)) in points.into_iter().enumerate() {
        let key = format!("killed-{i}.tar");
        env.proxy.rearm();
        env.proxy.rule(Rule::new(1, action, matches));
        let mut child = env
            .upload_command(&key, &["--jobs", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        env.proxy.wait_held();
        child.kill().unwrap();
        child.wait().unwrap();
        env.proxy.release();
        assert!(env.object(&key).is_none(), "{what}: completed?");
        assert!(!env.states().is_empty(), "{what}: no state kept");
        env.proxy.take_seen();
        let out = env.upload(&key, &["--jobs", "1", "--json"]);
        assert_success(&out, &format!("{what}: resumed upload"));
        let seen = env.proxy.take_seen();
        assert_eq!(parts(&seen), missing, "{what}: parts sent again");
        assert!(
            !seen.iter().any(|s| s.is_create()),
            "{what}: a new upload started"
        );
        assert_eq!(env.object(&key).unwrap(), env.tape, "{what}: the object");
        let summary = json(&out);
        assert_eq!(
            summary["parts_reused"],
            u64::from(count) - missing.len() as u64,
            "{what}"
        );
        assert_eq!(
            summary["bytes_sent"].as_u64().unwrap(),
            missing
                .iter()
                .map(|&n| if n == count {
                    env.tape.len() - (count as usize - 1) * 5 * MIB
                } else {
                    5 * MIB
                } as u64)
                .sum::<u64>(),
            "{what}"
        );
        assert!(env.states().is_empty(), "{what}: state left");
    }
}

/// Ctrl-C (SIGINT): no new part starts, the state is kept, exit 130 with how to resume.
#[test]
fn ctrl_c_keeps_the_parts_and_says_how_to_resume() {
    let Some(rclone) = can_serve_s3("ctrl_c_keeps_the_parts_and_says_how_to_resume") else {
        return;
    };
    let env = Env::new(&rclone);
    let child = env.held_upload("int.tar", |s| s.part == Some(2));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    env.proxy.release();
    let out = wait_output(child, "upload interrupted");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("interrupted") && err.contains("resume with: "),
        "{err}"
    );
    assert!(err.contains("int.tar"), "{err}");
    assert!(!err.contains(SECRET_KEY));
    assert_eq!(env.states().len(), 1);
    assert!(env.object("int.tar").is_none());
    let out = env.upload("int.tar", &["--jobs", "1", "--json"]);
    assert_success(&out, "resumed after Ctrl-C");
    assert_eq!(json(&out)["parts_reused"], 1);
    assert_eq!(env.object("int.tar").unwrap(), env.tape);
}

#[test]
fn one_part_at_a_time_or_eight_make_the_same_object() {
    let Some(rclone) = can_serve_s3("one_part_at_a_time_or_eight_make_the_same_object") else {
        return;
    };
    let env = Env::new(&rclone);
    for jobs in ["1", "8"] {
        let key = format!("jobs-{jobs}.tar");
        assert_success(
            &env.upload(&key, &["--jobs", jobs]),
            &format!("--jobs {jobs}"),
        );
        assert_eq!(env.object(&key).unwrap(), env.tape, "--jobs {jobs}");
    }
}

/// Failures that are not the user's are survived: 503 SlowDown, 500s, a connection
/// dropped mid-part, a server that stops answering (a timeout).
#[test]
fn failures_of_the_server_and_the_network_are_retried() {
    let Some(rclone) = can_serve_s3("failures_of_the_server_and_the_network_are_retried") else {
        return;
    };
    let env = Env::new(&rclone);
    let p = &env.proxy;
    p.rule(Rule::new(1, Action::Fail(500, "InternalError"), |s| {
        s.is_create()
    }));
    p.rule(Rule::new(2, Action::Fail(503, "SlowDown"), |s| {
        s.part == Some(1)
    }));
    p.rule(Rule::new(1, Action::DropMidBody, |s| s.part == Some(2)));
    p.rule(Rule::new(1, Action::Stall(Duration::from_secs(6)), |s| {
        s.part == Some(3)
    }));
    p.rule(Rule::new(1, Action::Fail(429, "TooManyRequests"), |s| {
        s.part == Some(4)
    }));
    p.rule(Rule::new(1, Action::Fail(503, "ServiceUnavailable"), |s| {
        s.is_complete()
    }));
    let out = env.upload("faults.tar", &["--jobs", "2"]);
    assert_success(&out, "upload through faults");
    assert_eq!(env.object("faults.tar").unwrap(), env.tape);
    let seen = p.take_seen();
    let tries = |n: u32| seen.iter().filter(|s| s.part == Some(n)).count();
    assert_eq!(tries(1), 3, "SlowDown twice, then stored");
    assert!(tries(2) >= 2 && tries(3) >= 2 && tries(4) >= 2);
    assert_eq!(seen.iter().filter(|s| s.is_complete()).count(), 2);
    // Retries are no error: nothing on stderr; with -v they are logged, and no secret.
    assert_eq!(stderr(&out), "");
    // A peer that stops answering is given up after 3 silent tries, however many are
    // left (SPEC §9: about 3 minutes with the 60 s timeout; 3 s here).
    p.rule(Rule::new(10, Action::Stall(Duration::from_secs(8)), |_| {
        true
    }));
    let out = env.upload("silent.tar", &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stopped answering, 3 times"), "{err}");
    assert_eq!(p.take_seen().len(), 3, "{err}");
    p.release();
    p.rearm();
    // An endpoint down when the upload starts, up a moment later: the upload waits for
    // it and succeeds.
    let late = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut child = env
        .command(&[
            "upload",
            "src",
            "s3://bkt/late.tar",
            "--catalog",
            "cat.db",
            "--endpoint",
            &format!("http://{late}"),
            "--part-size",
            "5M",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    assert!(first.contains("cannot reach the endpoint"), "{first}");
    let _late_proxy = Proxy::start_on(late, env.server.addr);
    let status = wait_exit(
        &mut child,
        Duration::from_secs(120),
        "an upload whose endpoint came up late",
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(status.success(), "{first}{rest}");
    assert_eq!(env.object("late.tar").unwrap(), env.tape);
    p.rule(Rule::new(1, Action::Fail(503, "SlowDown"), |s| {
        s.part == Some(1)
    }));
    let out = env.upload("faults-v.tar", &["-v"]);
    assert_success(&out, "upload -v through a fault");
    let err = stderr(&out);
    assert!(
        err.contains("SlowDown") && err.contains("try 2 of 10"),
        "{err}"
    );
    assert!(!err.contains(SECRET_KEY), "{err}");
}

/// What is the user's to mend is one line, at once, naming the endpoint, the bucket and
/// the S3 error code; the secret never shows, whatever the verbosity.
#[test]
fn the_users_mistakes_are_one_line_at_once() {
    let Some(rclone) = can_serve_s3("the_users_mistakes_are_one_line_at_once") else {
        return;
    };
    let env = Env::new(&rclone);
    let endpoint = env.proxy.endpoint();
    let cases: [(&str, &str, &str, &str); 3] = [
        ("bkt", "NOTTHEKEY0000001", SECRET_KEY, "InvalidAccessKeyId"),
        (
            "bkt",
            ACCESS_KEY,
            "not-the-secret-0123456789",
            "SignatureDoesNotMatch",
        ),
        ("nobucket", ACCESS_KEY, SECRET_KEY, "NoSuchBucket"),
    ];
    for (bucket, key, secret, code) in cases {
        let url = format!("s3://{bucket}/x.tar");
        let out = run(env
            .command(&[
                "-vv",
                "upload",
                "src",
                &url,
                "--catalog",
                "cat.db",
                "--endpoint",
                &endpoint,
            ])
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret));
        assert_eq!(out.status.code(), Some(1), "{code}: {}", stderr(&out));
        let err = stderr(&out);
        let last = err.trim_end().lines().last().unwrap();
        assert!(last.starts_with("error: "), "{err}");
        for part in [endpoint.as_str(), &format!("bucket {bucket}"), code] {
            assert!(last.contains(part), "{code}: {part:?} missing from {last}");
        }
        assert!(
            !err.contains(secret) && !stdout(&out).contains(secret),
            "{code}: secret shown"
        );
        assert!(
            !err.contains("X-Amz-Signature"),
            "{code}: a signed URL shown"
        );
        // (A HEAD's answer has no body: one GET asks for the error's code.)
        let seen = env.proxy.take_seen();
        assert!(seen.len() <= 2, "{code}: tried again: {seen:?}");
    }
    // An endpoint where nothing listens: tried again like any connection error (said
    // once, as a warning), then one line naming it. (The waits are scaled down here.)
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let nowhere = format!("http://{closed}");
    let args = [
        "upload",
        "src",
        "s3://bkt/x.tar",
        "--catalog",
        "cat.db",
        "--endpoint",
        &nowhere,
    ];
    let out = run(env.command(&args).env("TARTAPE_S3_BACKOFF_SCALE", "0.001"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("cannot reach the endpoint") && lines[0].contains("trying again"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("error: ")
            && lines[1].contains(&nowhere)
            && lines[1].contains("bucket bkt")
            && lines[1].contains("connection refused"),
        "{err}"
    );
    // With -q, the error alone.
    let mut quiet = vec!["-q"];
    quiet.extend(args);
    let out = run(env.command(&quiet).env("TARTAPE_S3_BACKOFF_SCALE", "0.001"));
    assert_one_line_error(&out, 1, &nowhere);
    // No keys at all: says where it looked.
    let out = run(env
        .command(&[
            "upload",
            "src",
            "s3://bkt/x.tar",
            "--catalog",
            "cat.db",
            "--endpoint",
            &endpoint,
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY"));
    assert_one_line_error(&out, 1, "AWS_ACCESS_KEY_ID");
    // Keys from ~/.aws/credentials and the endpoint from ~/.aws/config, by profile.
    fs::create_dir_all(env.path(".aws")).unwrap();
    fs::write(
        env.path(".aws/credentials"),
        format!("[t]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    fs::write(
        env.path(".aws/config"),
        format!("[profile t]\nendpoint_url = {endpoint}\n"),
    )
    .unwrap();
    let out = run(env
        .command(&[
            "upload",
            "src",
            "s3://bkt/profile.tar",
            "--catalog",
            "cat.db",
            "--profile",
            "t",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY"));
    assert_success(&out, "upload with --profile");
    assert_eq!(env.object("profile.tar").unwrap(), env.tape);
    // Part sizes S3 refuses, and too many parts, name what works.
    // A size out of S3's range is a usage error, found before the store is asked.
    let out = env.upload("x.tar", &["--part-size", "4M"]);
    assert_one_line_error(&out, 2, "5 MiB");
    let out = env.upload("x.tar", &["--part-size", "6G"]);
    assert_one_line_error(&out, 2, "5 GiB");
}

/// A source file changed after recording stops the upload with the integrity error;
/// no object is completed, the confirmed parts and the state stay; `--abort` ends it.
#[test]
fn a_changed_source_stops_the_upload_and_abort_cleans_up() {
    let Some(rclone) = can_serve_s3("a_changed_source_stops_the_upload_and_abort_cleans_up") else {
        return;
    };
    let env = Env::new(&rclone);
    let child = env.held_upload("changed.tar", |s| s.part == Some(2));
    // A file of a later part: same size, new bytes (its ctime moves).
    // (Written in place: a truncating write could be seen as a size change.)
    let victim = env.path("src/big/09.bin");
    let data = fs::read(&victim).unwrap();
    let file = fs::OpenOptions::new().write(true).open(&victim).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, &[data[100] ^ 0xff], 100).unwrap();
    drop(file);
    env.proxy.release();
    let out = wait_output(child, "upload of a changed source");
    let line = assert_one_line_error(&out, 1, "integrity error: src/big/09.bin");
    assert!(line.contains("ctime"), "{line}");
    assert!(
        env.object("changed.tar").is_none(),
        "a wrong object was completed"
    );
    assert_eq!(env.states().len(), 1, "the state is kept");
    env.proxy.take_seen();
    let out = env.upload("changed.tar", &["--abort"]);
    assert_success(&out, "--abort");
    assert!(stdout(&out).contains("aborted upload"), "{}", stdout(&out));
    let seen = env.proxy.take_seen();
    assert!(seen.iter().any(|s| s.method == "DELETE"), "{seen:?}");
    assert!(env.states().is_empty());
    let out = env.upload("changed.tar", &["--abort"]);
    assert_success(&out, "--abort again");
    assert!(
        stdout(&out).contains("no unfinished upload"),
        "{}",
        stdout(&out)
    );
}

/// `--volume-size`: one object per volume (named as SPEC §8) and the catalog copy; a
/// second run sends nothing; `restore --from s3://bkt/PREFIX/` of one file, a directory
/// and everything, fetching only what holds them.
#[test]
fn volumes_go_up_once_and_restore_from_the_bucket() {
    let Some(rclone) = can_serve_s3("volumes_go_up_once_and_restore_from_the_bucket") else {
        return;
    };
    let env = Env::new(&rclone);
    let out = env.upload("vols/", &["--volume-size", "6M", "--json"]);
    assert_success(&out, "volumes");
    let listed = env.run(&[
        "volumes",
        "src",
        "--catalog",
        "cat.db",
        "--volume-size",
        "6M",
        "--json",
    ]);
    let names: Vec<String> = stdout(&listed)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut joined = Vec::new();
    for name in &names {
        joined.extend(
            env.object(&format!("vols/{name}"))
                .unwrap_or_else(|| panic!("{name} missing")),
        );
    }
    assert_eq!(joined, env.tape, "the volumes are the tape");
    let fp8 = &names[0][4..12];
    let copy = env
        .object(&format!("vols/src_{fp8}.tartape"))
        .expect("the catalog copy");
    assert_eq!(copy, fs::read(env.path("cat.db")).unwrap());
    assert_eq!(stdout(&out).lines().count(), names.len() + 1);
    env.proxy.take_seen();
    let out = env.upload("vols/", &["--volume-size", "6M"]);
    assert_success(&out, "volumes again");
    let seen = env.proxy.take_seen();
    assert!(
        seen.iter().all(|s| s.method == "HEAD"),
        "sent again: {seen:?}"
    );

    let endpoint = env.proxy.endpoint();
    let restore = |what: &[&str], dest: &str| -> Vec<Seen> {
        env.proxy.take_seen();
        let mut args = vec![
            "restore",
            "cat.db",
            "--from",
            "s3://bkt/vols/",
            "--endpoint",
            endpoint.as_str(),
            "-C",
            dest,
        ];
        args.extend_from_slice(what);
        assert_success(&env.run(&args), &format!("restore {what:?}"));
        env.proxy.take_seen()
    };
    let seen = restore(&["src/small/07.txt"], "one");
    assert_eq!(
        fs::read(env.path("one/src/small/07.txt")).unwrap(),
        b"small file 7\n"
    );
    assert!(seen.len() <= 3, "{seen:?}");
    assert_eq!(
        seen.iter().filter(|s| s.method == "GET").count(),
        1,
        "{seen:?}"
    );
    restore(&["src/small"], "dir");
    assert_same_tree(&env.path("src/small"), &env.path("dir/src/small"));
    assert!(!env.path("dir/src/big").exists());
    restore(&[], "all");
    assert_same_tree(&env.path("src"), &env.path("all/src"));
}

/// `restore --from s3://BUCKET/KEY` of one small file of a tape in one object is one small
/// request; of everything, the tree.
#[test]
fn restoring_one_file_from_an_object_is_one_small_request() {
    let Some(rclone) = can_serve_s3("restoring_one_file_from_an_object_is_one_small_request")
    else {
        return;
    };
    let env = Env::new(&rclone);
    assert_success(&env.upload("whole.tar", &[]), "upload");
    let endpoint = env.proxy.endpoint();
    env.proxy.take_seen();
    let out = env.run(&[
        "restore",
        "cat.db",
        "--from",
        "s3://bkt/whole.tar",
        "--endpoint",
        &endpoint,
        "src/small/deep/note.txt",
        "-C",
        "one",
    ]);
    assert_success(&out, "restore one file");
    assert_eq!(
        fs::read(env.path("one/src/small/deep/note.txt")).unwrap(),
        b"deep\n"
    );
    let seen = env.proxy.take_seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let range = seen[0].range.clone().unwrap();
    let (a, b) = range.trim_start_matches("bytes=").split_once('-').unwrap();
    let len = b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1;
    assert!(len <= 1536, "{range}");
    let out = env.run(&[
        "restore",
        "cat.db",
        "--from",
        "s3://bkt/whole.tar",
        "--endpoint",
        &endpoint,
        "-C",
        "all",
    ]);
    assert_success(&out, "restore all");
    assert_same_tree(&env.path("src"), &env.path("all/src"));
    // Another tape's object, and a missing one: refused before anything is written.
    let out = env.run(&[
        "restore",
        "cat.db",
        "--from",
        "s3://bkt/nope.tar",
        "--endpoint",
        &endpoint,
        "-C",
        "none",
    ]);
    assert_one_line_error(&out, 1, "NoSuchKey");
    assert!(!env.path("none/src").exists());
}

/// Another S3 implementation, moto's: the object is the stream, a killed upload resumes
/// with only the missing parts, one file is restored with one request.
#[test]
fn moto_takes_the_same_uploads() {
    let Some(rclone) = can_serve_s3("moto_takes_the_same_uploads") else {
        return;
    };
    let Some(moto_server) = common::s3::can_serve_moto("moto_takes_the_same_uploads") else {
        return;
    };
    let env = Env::new(&rclone);
    let moto = common::s3::MotoServer::start(&moto_server, &["mbkt"]);
    let proxy = Proxy::start(moto.addr);
    let endpoint = proxy.endpoint();
    let upload = |extra: &[&str]| {
        let mut args = vec![
            "upload",
            "src",
            "s3://mbkt/m.tar",
            "--catalog",
            "cat.db",
            "--endpoint",
            &endpoint,
            "--part-size",
            "5M",
            "--jobs",
            "1",
        ];
        args.extend_from_slice(extra);
        env.command(&args)
    };
    proxy.rule(Rule::new(1, Action::Hold, |s| s.part == Some(3)));
    let mut child = upload(&[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    proxy.wait_held();
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.release();
    proxy.take_seen();
    let out = run(&mut upload(&["--json"]));
    assert_success(&out, "resumed upload to moto");
    let count = env.tape.len().div_ceil(5 * MIB) as u32;
    assert_eq!(parts(&proxy.take_seen()), (3..=count).collect::<Vec<_>>());
    assert_eq!(moto.object("mbkt", "m.tar").unwrap(), env.tape);
    let out = run(&mut upload(&[]));
    assert!(
        stdout(&out).contains("already uploaded"),
        "{}",
        stdout(&out)
    );
    proxy.take_seen();
    let out = env.run(&[
        "restore",
        "cat.db",
        "--from",
        "s3://mbkt/m.tar",
        "--endpoint",
        &endpoint,
        "src/small/03.txt",
        "-C",
        "from-moto",
    ]);
    assert_success(&out, "restore from moto");
    assert_eq!(
        fs::read(env.path("from-moto/src/small/03.txt")).unwrap(),
        b"small file 3\n"
    );
    assert_eq!(proxy.take_seen().len(), 1);
}

/// Files, symlinks and directories of `a` are in `b` with the same content and targets.
fn assert_same_tree(a: &Path, b: &Path) {
    for entry in walk(a) {
        let rel = entry.strip_prefix(a).unwrap();
        let other = b.join(rel);
        let meta = fs::symlink_metadata(&entry).unwrap();
        let theirs =
            fs::symlink_metadata(&other).unwrap_or_else(|e| panic!("{}: {e}", other.display()));
        assert_eq!(meta.file_type(), theirs.file_type(), "{}", rel.display());
        if meta.is_file() {
            assert_eq!(
                fs::read(&entry).unwrap(),
                fs::read(&other).unwrap(),
                "{}",
                rel.display()
            );
        } else if meta.is_symlink() {
            assert_eq!(
                fs::read_link(&entry).unwrap(),
                fs::read_link(&other).unwrap()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n == ".tartape") {
            continue;
        }
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
