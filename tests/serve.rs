//! `tartape serve` with real clients, against a server each test starts on 127.0.0.1
//! with port 0: curl (resume, ranges), wget -c, aria2c -x 8, rclone's `http` remote,
//! Python's `http.client` reading a multipart answer; RFC 9110's edge cases of ranges and
//! conditionals; a source changed mid-body; slow and hung-up clients; SIGTERM.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

/// A recorded tree: a 24 MiB file, a few of 1-3 MiB, 200 small ones, a symlink.
struct Tree {
    dir: tempfile::TempDir,
    tape: Vec<u8>,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("photos");
        fs::create_dir_all(src.join("small")).unwrap();
        let mut rng = Rng::new(11);
        let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.next() as u8).collect() };
        fs::write(src.join("big.bin"), bytes(24 * MIB)).unwrap();
        for i in 0..4 {
            fs::write(src.join(format!("mid-{i}.bin")), bytes((i + 1) * 700_000)).unwrap();
        }
        for i in 0..200 {
            fs::write(
                src.join(format!("small/{i:03}.txt")),
                format!("small {i}\n"),
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
        let out = run(tartape()
            .args(["record", "photos", "--catalog", "cat.db"])
            .current_dir(dir.path()));
        assert_success(&out, "record");
        let out = run(tartape()
            .args(["stream", "photos", "--catalog", "cat.db", "-o", "tape.tar"])
            .current_dir(dir.path()));
        assert_success(&out, "stream");
        let tape = fs::read(dir.path().join("tape.tar")).unwrap();
        Tree { dir, tape }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `tartape serve photos --catalog cat.db --listen 127.0.0.1:0 EXTRA…`.
    fn serve(&self, extra: &[&str]) -> Server {
        Server::start(self.dir.path(), &["photos", "--catalog", "cat.db"], extra)
    }
}

/// A `tartape serve` process, killed (by pid) when dropped.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    /// What it prints after its URL line (kept open: the server's stdout is a pipe).
    _lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(dir: &Path, args: &[&str], extra: &[&str]) -> Server {
        let mut child = tartape()
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("tartape serve printed no URL within {TIMEOUT:?}")
        });
        // The URL is the first line, alone.
        let url = first
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .filter(|host| !host.contains(['/', ' ']))
            .unwrap_or_else(|| panic!("first line: {first:?}"));
        let addr = url.parse().unwrap();
        Server {
            child: Some(child),
            addr,
            _lines: lines,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Open descriptors of the server process.
    fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the raw request `head` (CRLFs added), the
/// status, the headers (lower-case names), the body (to EOF or Content-Length).
fn exchange(addr: SocketAddr, head: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let request = format!(
        "{}\r\nHost: test\r\nConnection: close\r\n\r\n",
        head.replace('\n', "\r\n")
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    parse_answer(&all)
}

fn parse_answer(all: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(all)));
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, all[split + 4..].to_vec())
}

/// `tartape serve photos --catalog cat.db --listen LISTEN` in `dir`, and the first line
/// it printed; its standard output is closed after that line (a reader gone).
fn spawn_serve(dir: &Path, listen: &str, stderr: Stdio) -> (Child, String) {
    let mut child = tartape()
        .args(["serve", "photos", "--catalog", "cat.db", "--listen", listen])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (child, first)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn tool(test: &str, tools: &[&str]) -> bool {
    can_run(
        test,
        Needs {
            tools,
            ..Needs::default()
        },
    )
}

#[test]
fn downloads_with_curl_wget_and_aria2c_are_the_tape() {
    if !tool(
        "downloads_with_curl_wget_and_aria2c_are_the_tape",
        &["curl", "wget", "aria2c"],
    ) {
        return;
    }
    let tree = Tree::new();
    let server = tree.serve(&[]);
    let url = server.url("/photos.tar");
    let out_dir = tree.path("dl");
    fs::create_dir(&out_dir).unwrap();
    // curl, whole; then cut short and finished with -C -.
    let whole = out_dir.join("curl.tar");
    assert_success(
        &run(Command::new("curl")
            .args(["-sSf", "-o"])
            .arg(&whole)
            .arg(&url)),
        "curl",
    );
    assert_eq!(fs::read(&whole).unwrap(), tree.tape);
    let cut = out_dir.join("cut.tar");
    fs::write(&cut, &tree.tape[..3 * MIB + 17]).unwrap();
    assert_success(
        &run(Command::new("curl")
            .args(["-sSf", "-C", "-", "-o"])
            .arg(&cut)
            .arg(&url)),
        "curl -C -",
    );
    assert_eq!(fs::read(&cut).unwrap(), tree.tape);
    // A complete file: 416 with Content-Range: bytes */SIZE, which curl takes as done.
    let out = run(Command::new("curl")
        .args(["-sS", "-C", "-", "-o"])
        .arg(&cut)
        .arg(&url));
    assert_success(&out, "curl -C - of a complete file");
    assert_eq!(fs::read(&cut).unwrap(), tree.tape);
    // wget -c.
    let w = out_dir.join("wget.tar");
    fs::write(&w, &tree.tape[..MIB]).unwrap();
    assert_success(
        &run(Command::new("wget")
            .args(["-q", "-c", "-O"])
            .arg(&w)
            .arg(&url)),
        "wget -c",
    );
    assert_eq!(fs::read(&w).unwrap(), tree.tape);
    let out = run(Command::new("wget")
        .args(["-q", "-c", "-O"])
        .arg(&w)
        .arg(&url));
    assert_success(&out, "wget -c of a complete file");
    assert_eq!(fs::read(&w).unwrap(), tree.tape);
    // aria2c, 8 connections, 8 segments: each segment a range, each connection hung up
    // when its segment is done.
    let out = run(Command::new("aria2c")
        .args([
            "-q",
            "-x",
            "8",
            "-s",
            "8",
            "-k",
            "1M",
            "--allow-overwrite=true",
            "-d",
        ])
        .arg(&out_dir)
        .args(["-o", "aria.tar"])
        .arg(&url));
    assert_success(&out, "aria2c -x 8 -s 8");
    assert_eq!(fs::read(out_dir.join("aria.tar")).unwrap(), tree.tape);
}

#[test]
fn curl_ranges_and_python_read_multipart_answers() {
    if !tool(
        "curl_ranges_and_python_read_multipart_answers",
        &["curl", "python3"],
    ) {
        return;
    }
    let tree = Tree::new();
    let server = tree.serve(&[]);
    let url = server.url("/photos.tar");
    let t = &tree.tape;
    let size = t.len();
    // curl --range with one range: 206 and the bytes.
    let out = run(Command::new("curl")
        .args(["-sSf", "--range", "1000-1999"])
        .arg(&url));
    assert_success(&out, "curl --range");
    assert_eq!(out.stdout, &t[1000..2000]);
    // Several: multipart/byteranges, which Python's email parser splits as any MIME body.
    let script = r#"
import http.client, sys, email, email.policy
host, port, path, ranges = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = http.client.HTTPConnection(host, port, timeout=60)
c.request("GET", path, headers={"Range": "bytes=" + ranges})
r = c.getresponse()
body = r.read()
assert r.status == 206, r.status
assert int(r.getheader("Content-Length")) == len(body)
ctype = r.getheader("Content-Type")
msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP)
assert msg.is_multipart(), ctype
for part in msg.iter_parts():
    print(part["Content-Range"], part.get_payload(decode=True).hex())
"#;
    fs::write(tree.path("multi.py"), script).unwrap();
    let out = run(Command::new("python3")
        .arg(tree.path("multi.py"))
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .arg("/photos.tar")
        .arg(format!("0-99,5000-5099,-100,{}-", size - 50)));
    assert_success(&out, "python http.client");
    let parts: Vec<(String, String)> = stdout(&out)
        .lines()
        .map(|l| {
            let (range, hex) = l.rsplit_once(' ').unwrap();
            (range.to_string(), hex.to_string())
        })
        .collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    // The suffix and the open range overlap: merged.
    assert_eq!(
        parts,
        vec![
            (format!("bytes 0-99/{size}"), hex(&t[..100])),
            (format!("bytes 5000-5099/{size}"), hex(&t[5000..5100])),
            (
                format!("bytes {}-{}/{size}", size - 100, size - 1),
                hex(&t[size - 100..])
            ),
        ]
    );
    // curl with several ranges writes the multipart body as it is.
    let out = run(Command::new("curl")
        .args(["-sSf", "--range", "0-0,10-10"])
        .arg(&url));
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("Content-Range: bytes 0-0/") && body.contains("Content-Range: bytes 10-10/"),
        "{body}"
    );
}

/// RFC 9110's edge cases, on the wire.
#[test]
fn ranges_conditionals_methods_and_paths_follow_rfc_9110() {
    let tree = Tree::new();
    let server = tree.serve(&[]);
    let t = &tree.tape;
    let size = t.len() as u64;
    let get = |extra: &str| exchange(server.addr, &format!("GET /photos.tar HTTP/1.1{extra}"));
    let (status, h, body) = get("");
    assert_eq!(status, 200);
    assert_eq!(body, *t);
    assert_eq!(
        header(&h, "content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
    assert_eq!(header(&h, "content-type"), Some("application/x-tar"));
    assert!(header(&h, "content-encoding").is_none());
    let etag = header(&h, "etag").unwrap().to_string();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "a strong ETag: {etag}"
    );
    let last_modified = header(&h, "last-modified").unwrap().to_string();
    assert_eq!(
        header(&h, "content-disposition"),
        Some("attachment; filename=\"photos.tar\"; filename*=UTF-8''photos.tar")
    );
    let range = |r: &str| get(&format!("\nRange: bytes={r}"));
    let (status, h, body) = range(&format!("-{}", size * 10));
    assert_eq!(
        (status, body.as_slice()),
        (206, &t[..]),
        "suffix longer than the file"
    );
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes 0-{}/{size}", size - 1).as_str())
    );
    let (status, _, body) = range("0-0");
    assert_eq!((status, body.as_slice()), (206, &t[..1]));
    let (status, h, body) = range(&format!("{size}-"));
    assert_eq!((status, body.len()), (416, 0), "start past the end");
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    let (status, _, body) = range("0-10,5-20,8-30");
    assert_eq!(
        (status, body.as_slice()),
        (206, &t[..31]),
        "overlapping: merged"
    );
    // (1,000 of them fit the 8 KiB a head may have.)
    let thousand: Vec<String> = (0..1000)
        .map(|i| format!("{}-{}", i % 10, i % 10))
        .collect();
    let (status, _, body) = range(&thousand.join(","));
    assert_eq!(
        (status, body.len() as u64),
        (200, size),
        "1,000 ranges: ignored, not amplified"
    );
    let (status, _, body) = range("abc");
    assert_eq!((status, body.len() as u64), (200, size));
    // If-Range: the ETag or the date → 206; anything else → 200 whole.
    let (status, _, body) = get(&format!("\nRange: bytes=10-19\nIf-Range: {etag}"));
    assert_eq!((status, body.as_slice()), (206, &t[10..20]));
    let (status, _, _) = get(&format!("\nRange: bytes=10-19\nIf-Range: {last_modified}"));
    assert_eq!(status, 206);
    let (status, _, body) = get("\nRange: bytes=10-19\nIf-Range: \"something-else\"");
    assert_eq!((status, body.len() as u64), (200, size));
    let (status, _, body) = get("\nRange: bytes=10-19\nIf-Range: garbage");
    assert_eq!(
        (status, body.len() as u64),
        (200, size),
        "an If-Range that is neither an ETag nor a date cannot match"
    );
    // 304s.
    let (status, h, body) = get(&format!("\nIf-None-Match: {etag}"));
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(header(&h, "etag"), Some(etag.as_str()));
    let (status, _, _) = get(&format!("\nIf-Modified-Since: {last_modified}"));
    assert_eq!(status, 304);
    let (status, _, _) = get("\nIf-None-Match: \"other\"");
    assert_eq!(status, 200);
    // If-Match and If-Unmodified-Since (a resuming client's guard): 412 when they fail,
    // and a date that is not exactly Last-Modified does not stand for it in If-Range.
    let (status, _, body) = get("\nIf-Match: \"other\"\nRange: bytes=0-9");
    assert_eq!((status, body.len()), (412, 0));
    let (status, _, body) = get(&format!("\nIf-Match: {etag}\nRange: bytes=0-9"));
    assert_eq!((status, body.as_slice()), (206, &t[..10]));
    let (status, _, _) = get("\nIf-Unmodified-Since: Thu, 01 Jan 1970 00:00:01 GMT");
    assert_eq!(status, 412);
    let (status, _, _) = get("\nRange: bytes=10-19\nIf-Range: Fri, 31 Dec 9999 23:59:59 GMT");
    assert_eq!(status, 200, "If-Range with a later date: the whole file");
    // HEAD: GET's headers, no body.
    let (status, h, body) = exchange(server.addr, "HEAD /photos.tar HTTP/1.1\nRange: bytes=5-9");
    assert_eq!((status, body.len()), (206, 0));
    assert_eq!(header(&h, "content-length"), Some("5"));
    let (status, h, body) = exchange(server.addr, "HEAD /photos.tar HTTP/1.1");
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(
        header(&h, "content-length"),
        Some(size.to_string().as_str())
    );
    // Other methods: 405 with Allow; other paths, encoded `..` among them: 404.
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let (status, h, _) = exchange(
            server.addr,
            &format!("{method} /photos.tar HTTP/1.1\nContent-Length: 0"),
        );
        assert_eq!(status, 405, "{method}");
        assert_eq!(header(&h, "allow"), Some("GET, HEAD"), "{method}");
    }
    for path in [
        "/nope.tar",
        "/photos.tar/x",
        "/../photos.tar",
        "/%2e%2e/etc/passwd",
        "/%2E%2E%2Fetc%2Fpasswd",
        "/..%2fphotos.tar",
        "//photos.tar",
        "/photos.tar%00",
    ] {
        let (status, _, _) = exchange(server.addr, &format!("GET {path} HTTP/1.1"));
        assert_eq!(status, 404, "{path}");
    }
    // A request without Host is answered, HTTP/1.0's and HTTP/1.1's alike (one origin,
    // no virtual hosts: nothing to choose by it).
    for head in [
        "GET /photos.tar HTTP/1.1\r\nRange: bytes=0-0\r\nConnection: close\r\n\r\n",
        "GET /photos.tar HTTP/1.0\r\nRange: bytes=0-0\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let (status, _, body) = parse_answer(&all);
        assert_eq!((status, body.as_slice()), (206, &t[..1]), "{head:?}");
    }
    // HEAD of an error answer: its GET's headers, Content-Length included.
    for method in ["GET", "HEAD"] {
        let (status, h, _) = exchange(server.addr, &format!("{method} /nope.tar HTTP/1.1"));
        assert_eq!(status, 404, "{method}");
        assert_eq!(header(&h, "content-length"), Some("13"), "{method}");
    }
    // A head over 8 KiB is refused: 414 for a long request line, 431 for long or many
    // header fields, however far past 8 KiB.
    let long = "x".repeat(9000);
    let (status, _, _) = exchange(
        server.addr,
        &format!("GET /photos.tar HTTP/1.1\nX-Long: {long}"),
    );
    assert_eq!(status, 431, "a 9,000-byte field");
    let (status, _, _) = exchange(server.addr, &format!("GET /{long} HTTP/1.1"));
    assert_eq!(status, 414, "a 9,000-byte request target");
    let (status, _, _) = exchange(server.addr, &format!("GET /photos.tar?{long} HTTP/1.1"));
    assert_eq!(status, 414, "a 9,000-byte query");
    // Past hyper's 64 KiB buffer the server stops reading: the answer is 431 and the
    // connection is closed (the request asks to keep it), or a reset when the unread rest
    // of the head made the close a RST; never a file.
    let huge = format!(
        "GET /photos.tar HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "x".repeat(100_000)
    );
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = s.write_all(huge.as_bytes());
    let mut all = Vec::new();
    match s.read_to_end(&mut all) {
        Ok(_) => assert!(
            all.starts_with(b"HTTP/1.1 431 "),
            "{:?}",
            String::from_utf8_lossy(&all)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let many: String = (0..150).map(|i| format!("\nX-{i}: 1")).collect();
    let (status, _, _) = exchange(server.addr, &format!("GET /photos.tar HTTP/1.1{many}"));
    assert_eq!(status, 431, "150 fields");
    let (status, _, _) = exchange(server.addr, "HEAD /photos.tar HTTP/1.1");
    assert_eq!(status, 200, "still serving after the refusals");
    // The index: relative links (HTML), or JSON.
    let (status, h, body) = exchange(server.addr, "GET / HTTP/1.1");
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&body).contains("<a href=\"photos.tar\">"));
    assert_eq!(header(&h, "vary"), Some("Accept"));
    let (_, h, body) = exchange(server.addr, "GET / HTTP/1.1\nAccept: application/json");
    assert_eq!(header(&h, "content-type"), Some("application/json"));
    assert_eq!(header(&h, "vary"), Some("Accept"));
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["name"], "photos.tar");
    assert_eq!(list[0]["size"], size);
    // Negotiated by quality: JSON refused, or ranked below HTML, gets the page.
    for accept in [
        "application/json;q=0, text/html",
        "text/html, application/json;q=0.5",
    ] {
        let (_, h, _) = exchange(server.addr, &format!("GET / HTTP/1.1\nAccept: {accept}"));
        assert!(
            header(&h, "content-type").unwrap().starts_with("text/html"),
            "{accept}"
        );
    }
}

/// With --volume-size: each volume and the catalog copy; rclone's http remote lists,
/// copies and checks them.
#[test]
fn volumes_and_the_catalog_copy_through_rclone_http() {
    let Some(rclone) = common::s3::can_serve_s3("volumes_and_the_catalog_copy_through_rclone_http")
    else {
        return;
    };
    let tree = Tree::new();
    let server = tree.serve(&["--volume-size", "8M"]);
    let base = server.url("/");
    let rc = |args: &[&str]| {
        run(Command::new(&rclone)
            .args(args)
            .args(["--config", "/dev/null", "--http-url", &base]))
    };
    let out = rc(&["lsf", ":http:"]);
    assert_success(&out, "rclone lsf");
    let names: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let volumes: Vec<&String> = names.iter().filter(|n| n.contains(".tar.")).collect();
    assert_eq!(
        volumes.len(),
        tree.tape.len().div_ceil(8 * MIB),
        "{names:?}"
    );
    assert!(names.contains(&"photos.tar".to_string()));
    assert!(names.iter().any(|n| n.ends_with(".tartape")), "{names:?}");
    let dest = tree.path("copied");
    assert_success(
        &rc(&["copy", ":http:", dest.to_str().unwrap()]),
        "rclone copy",
    );
    assert_success(
        &rc(&["check", ":http:", dest.to_str().unwrap(), "--size-only"]),
        "rclone check",
    );
    assert_eq!(fs::read(dest.join("photos.tar")).unwrap(), tree.tape);
    let mut joined = Vec::new();
    let mut sorted = volumes.clone();
    sorted.sort();
    for v in sorted {
        joined.extend(fs::read(dest.join(v)).unwrap());
    }
    assert_eq!(joined, tree.tape, "the volumes are the tape");
    let copy = names.iter().find(|n| n.ends_with(".tartape")).unwrap();
    assert_eq!(
        fs::read(dest.join(copy)).unwrap(),
        fs::read(tree.path("cat.db")).unwrap()
    );
    // The copied volumes and catalog restore the tree.
    let out = run(tartape()
        .args(["restore"])
        .arg(dest.join(copy))
        .arg("--from")
        .arg(&dest)
        .arg("-C")
        .arg(tree.path("restored")));
    assert_success(&out, "restore from the downloaded volumes");
    assert_eq!(
        fs::read(tree.path("restored/photos/big.bin")).unwrap(),
        fs::read(tree.path("photos/big.bin")).unwrap()
    );
}

/// A source changed while a body is being sent: the connection is closed short of
/// Content-Length (never a complete wrong file), and the tape then answers 409 naming it.
#[test]
fn a_source_changed_mid_body_cuts_the_answer_short_then_409() {
    let tree = Tree::new();
    let server = tree.serve(&[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /photos.tar HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 64 << 10];
    s.read_exact(&mut got).unwrap();
    // The last bytes of big.bin change (same size, its ctime moves) while the answer is
    // being sent; the server has read at most a few MiB ahead.
    // (Written in place: a truncating write could be seen as a size change.)
    let big = tree.path("photos/big.bin");
    let data = fs::read(&big).unwrap();
    let n = data.len();
    let file = fs::OpenOptions::new().write(true).open(&big).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, &[data[n - 10] ^ 0xff], (n - 10) as u64).unwrap();
    drop(file);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    got.extend(rest);
    let (status, h, body) = parse_answer(&got);
    assert_eq!(status, 200);
    let length: usize = header(&h, "content-length").unwrap().parse().unwrap();
    assert!(
        body.len() < length,
        "a complete body after a change: {} of {length}",
        body.len()
    );
    assert_eq!(
        body,
        tree.tape[..body.len()],
        "what came is a correct prefix"
    );
    let (status, _, body) = exchange(server.addr, "GET /photos.tar HTTP/1.1\nRange: bytes=0-10");
    assert_eq!(status, 409);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("photos/big.bin") && text.contains("ctime"),
        "{text}"
    );
}

/// Slow-loris connections are dropped after 10 s while a normal client still downloads;
/// 200 clients hanging up mid-body leave no descriptor behind.
#[test]
fn slow_and_vanishing_clients_cost_nothing() {
    if !tool("slow_and_vanishing_clients_cost_nothing", &["curl"]) {
        return;
    }
    let tree = Tree::new();
    let server = tree.serve(&[]);
    // 20 connections that send a request head one byte every 2 s.
    let lorises: Vec<thread::JoinHandle<Duration>> = (0..20)
        .map(|_| {
            let addr = server.addr;
            thread::spawn(move || {
                let started = Instant::now();
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                for b in b"GET /photos.tar HTTP/1.1\r\nX-Slow: ".iter().cycle() {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    let mut one = [0u8; 1];
                    match s.read(&mut one) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                    thread::sleep(Duration::from_millis(1800));
                    if started.elapsed() > Duration::from_secs(40) {
                        break;
                    }
                }
                started.elapsed()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    // Meanwhile a normal client downloads the whole tape.
    let out = run(Command::new("curl")
        .args(["-sSf"])
        .arg(server.url("/photos.tar")));
    assert_success(&out, "curl while slow-loris connections are open");
    assert_eq!(out.stdout, tree.tape);
    for l in lorises {
        let held = l.join().unwrap();
        assert!(
            held < Duration::from_secs(20),
            "a slow-loris connection lasted {held:?}"
        );
        assert!(held >= Duration::from_secs(9), "closed too early: {held:?}");
    }
    // 200 clients that read a little of the whole tape and hang up. (The tape keeps a
    // bounded cache of open source files: the count to come back to is the one after a
    // whole download.)
    let before = server.fds();
    let clients: Vec<thread::JoinHandle<()>> = (0..200)
        .map(|_| {
            let addr = server.addr;
            thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                s.write_all(b"GET /photos.tar HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                let mut some = [0u8; 4096];
                s.read_exact(&mut some).unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    wait_until("the server's descriptors to go back", || {
        server.fds() <= before
    });
    // Still serving.
    let (status, _, body) = exchange(server.addr, "GET /photos.tar HTTP/1.1\nRange: bytes=0-99");
    assert_eq!((status, body.as_slice()), (206, &tree.tape[..100]));
}

/// SIGTERM with a download in flight: no new connection, the download finishes, exit 0.
#[test]
fn sigterm_lets_the_download_in_flight_finish() {
    let tree = Tree::new();
    let mut server = tree.serve(&[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /photos.tar HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 1 << 20];
    s.read_exact(&mut got).unwrap();
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    got.extend(rest);
    let (status, _, body) = parse_answer(&got);
    assert_eq!(status, 200);
    assert_eq!(body, tree.tape, "the download in flight finished");
    let mut child = server.child.take().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(15), "serve after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(server.addr).is_err(), "still accepting");
}

/// The URL is the first line, alone, even with -q (a script that asked for port 0 needs
/// it); -q prints nothing else. A reader of standard output gone after that line (`| head
/// -n 1`) does not stop the server.
#[test]
fn the_url_comes_alone_even_with_quiet_and_a_gone_reader_does_not_stop_it() {
    let tree = Tree::new();
    let mut server = tree.serve(&["-q"]);
    let (status, _, _) = exchange(server.addr, "HEAD /photos.tar HTTP/1.1");
    assert_eq!(status, 200);
    let mut child = server.child.take().unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = wait_exit(
        &mut child,
        Duration::from_secs(15),
        "serve -q after SIGTERM",
    );
    assert_eq!(status.code(), Some(0));
    // The reader thread ends at EOF: every line after the URL has arrived by now.
    let after: Vec<String> = server
        ._lines
        .recv_timeout(TIMEOUT)
        .into_iter()
        .chain(server._lines.try_iter())
        .collect();
    assert!(after.is_empty(), "-q printed more than the URL: {after:?}");

    // Without -q: the URL, then each file's; the reader hangs up after the first line.
    let (mut child, first) = spawn_serve(tree.dir.path(), "127.0.0.1:0", Stdio::null());
    let addr: SocketAddr = first
        .trim_end()
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .parse()
        .unwrap();
    let (status, _, body) = exchange(addr, "GET /photos.tar HTTP/1.1\nRange: bytes=0-99");
    assert_eq!((status, body.as_slice()), (206, &tree.tape[..100]));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(running, "the server ended when its reader did");
}

/// --auth-file: Basic users or a bearer token; 401 with a challenge otherwise; the index
/// too. A non-loopback address without it is warned about.
#[test]
fn auth_file_guards_everything() {
    if !tool("auth_file_guards_everything", &["curl"]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tree = Tree::new();
    let users = tree.path("users");
    fs::write(&users, "alice:wonder land\n").unwrap();
    fs::set_permissions(&users, fs::Permissions::from_mode(0o600)).unwrap();
    let server = tree.serve(&["--auth-file", users.to_str().unwrap()]);
    let url = server.url("/photos.tar");
    for path in ["/photos.tar", "/"] {
        let (status, h, _) = exchange(server.addr, &format!("GET {path} HTTP/1.1"));
        assert_eq!(status, 401, "{path}");
        assert!(header(&h, "www-authenticate").unwrap().starts_with("Basic"));
    }
    let out = run(Command::new("curl")
        .args(["-sSf", "-u", "alice:wonder land"])
        .arg(&url));
    assert_success(&out, "curl -u");
    assert_eq!(out.stdout, tree.tape);
    let out = run(Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "alice:wrong",
        ])
        .arg(&url));
    assert_eq!(stdout(&out), "401");
    drop(server);
    let token = tree.path("token");
    fs::write(&token, "s3cr3t-token\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let server = tree.serve(&["--auth-file", token.to_str().unwrap()]);
    let (status, _, _) = exchange(
        server.addr,
        "GET /photos.tar HTTP/1.1\nAuthorization: Bearer s3cr3t-token\nRange: bytes=0-0",
    );
    assert_eq!(status, 206);
    let (status, _, _) = exchange(
        server.addr,
        "GET /photos.tar HTTP/1.1\nAuthorization: Bearer nope",
    );
    assert_eq!(status, 401);
}

/// The index and names of several tapes; a taken port and a missing catalog are one line.
#[test]
fn several_tapes_and_errors_before_serving() {
    let tree = Tree::new();
    let other = tree.path("music");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("song.ogg"), b"la la la").unwrap();
    assert_success(
        &run(tartape()
            .args(["record", "music"])
            .current_dir(tree.dir.path())),
        "record",
    );
    let server = Server::start(
        tree.dir.path(),
        &[
            "photos",
            "music",
            "--catalog",
            "cat.db",
            "--catalog",
            "music/.tartape/index.db",
        ],
        &[],
    );
    let (_, _, body) = exchange(server.addr, "GET / HTTP/1.1");
    let index = String::from_utf8_lossy(&body);
    assert!(
        index.contains("href=\"photos.tar\"") && index.contains("href=\"music.tar\""),
        "{index}"
    );
    let (status, _, body) = exchange(server.addr, "GET /music.tar HTTP/1.1");
    assert_eq!(status, 200);
    assert_eq!(&body[..6], b"music/");
    let taken = server.addr.to_string();
    let out = run(tartape()
        .args(["serve", "photos", "--catalog", "cat.db", "--listen", &taken])
        .current_dir(tree.dir.path()));
    assert_one_line_error(&out, 1, "cannot listen");
    let out = run(tartape()
        .args(["serve", "nowhere"])
        .current_dir(tree.dir.path()));
    assert_one_line_error(&out, 1, "nowhere");
    let out = run(tartape()
        .args(["serve", "photos", "music", "--catalog", "cat.db"])
        .current_dir(tree.dir.path()));
    assert_one_line_error(&out, 1, "one --catalog for each DIR");
}

/// Reads one answer (head and a body of its Content-Length) from a keep-alive connection.
fn read_one_answer(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let (_, h, _) = parse_answer(&got);
            let length: usize = header(&h, "content-length").unwrap().parse().unwrap();
            if got.len() >= end + 4 + length {
                assert_eq!(got.len(), end + 4 + length, "more than one answer");
                return got[end + 4..].to_vec();
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the whole answer");
        got.extend_from_slice(&buf[..n]);
    }
}

/// An idle keep-alive connection stays open well past the 10 s a request head gets, and
/// is closed after 60 s.
#[test]
fn idle_keep_alive_connections_are_closed_after_60_s() {
    let tree = Tree::new();
    let server = tree.serve(&[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /photos.tar HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99\r\n\r\n")
        .unwrap();
    assert_eq!(read_one_answer(&mut s), tree.tape[..100]);
    let idle_since = Instant::now();
    // Idle: nothing comes, and the connection is open 20 s on.
    let mut buf = [0u8; 16];
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    match s.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!(
            "an idle keep-alive connection ended early: {other:?} after {:?}",
            idle_since.elapsed()
        ),
    }
    // Still usable.
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /photos.tar HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n")
        .unwrap();
    assert_eq!(read_one_answer(&mut s), tree.tape[..10]);
    let idle_since = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(75))).unwrap();
    let n = s.read(&mut buf).unwrap_or(0);
    let waited = idle_since.elapsed();
    assert_eq!(n, 0, "bytes on an idle connection");
    assert!(
        waited >= Duration::from_secs(55) && waited < Duration::from_secs(70),
        "closed after {waited:?}"
    );
}

/// No request byte sequence makes it panic or stop serving others: garbage, broken
/// request lines, absurd ranges and validators, invalid encodings, huge numbers.
#[test]
fn no_input_makes_it_stop_serving() {
    let tree = Tree::new();
    let server = tree.serve(&[]);
    let mut rng = Rng::new(99);
    let mut cases: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nRange: bytes=99999999999999999999999-\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nRange: bytes=-99999999999999999999999\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nRange: bytes=5-4,3-2,1-0\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nRange: bytes=,,,,,,,,,,,,,\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nIf-Range: \xff\xfe\r\nRange: bytes=0-1\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nIf-None-Match: \"\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nIf-Modified-Since: yesterday\r\n\r\n".to_vec(),
        b"GET /%ff%fe%00 HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /%%%% HTTP/1.1\r\n\r\n".to_vec(),
        b"GET http://evil/photos.tar HTTP/1.1\r\n\r\n".to_vec(),
        b"GET * HTTP/1.1\r\n\r\n".to_vec(),
        b"CONNECT photos.tar:443 HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"GET /photos.tar HTTP/1.1\r\nAccept: application/json\r\nAccept: text/html\r\n\r\n"
            .to_vec(),
        b"GET / HTTP/1.1\r\nAccept: \x80\x81\r\n\r\n".to_vec(),
        format!("GET /photos.tar HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(200)).into_bytes(),
    ];
    for _ in 0..60 {
        let n = rng.below(3000) as usize;
        cases.push((0..n).map(|_| rng.next() as u8).collect());
    }
    for case in &cases {
        let Ok(mut s) = TcpStream::connect(server.addr) else {
            panic!("the server stopped accepting");
        };
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = s.write_all(case);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // A client gone mid-answer makes a write fail with EPIPE, and `writev` raise SIGPIPE:
    // the server lives on (aria2c hangs up after every segment).
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::PIPE).unwrap();
    let (status, _, body) = exchange(server.addr, "GET /photos.tar HTTP/1.1\nRange: bytes=0-99");
    assert_eq!((status, body.as_slice()), (206, &tree.tape[..100]));
    let mut server = server;
    let mut child = server.child.take().unwrap();
    assert!(child.try_wait().unwrap().is_none(), "the server ended");
    let _ = child.kill();
    let _ = child.wait();
}

/// A non-loopback address without --auth-file serves, and says so once.
#[test]
fn serving_the_network_without_auth_is_warned_about() {
    let tree = Tree::new();
    let (mut child, first) = spawn_serve(tree.dir.path(), "0.0.0.0:0", Stdio::piped());
    assert!(first.starts_with("http://0.0.0.0:"), "{first}");
    let _ = child.kill();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with("warning: serving 0.0.0.0:") && warnings[0].contains("--auth-file"),
        "{err}"
    );
}
