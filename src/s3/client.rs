//! A blocking client of one bucket of an S3-compatible store: rusty-s3 signs the requests
//! (presigned URLs, SigV4; the payload is not signed, `Content-MD5` protects it), ureq
//! sends them, quick-xml reads the answers (`xml`). Every request has connect and read
//! timeouts and is tried again on failures that are not the user's fault
//! ([`super::retry`]); errors name the endpoint, the bucket and the S3 error code, and
//! never a URL (a presigned one holds a signature, and maybe a session token).
//!
//! [`ObjectStore`] is what the upload and the restore need of a store: this client is one;
//! tests of their logic use another.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::config::Settings;
use super::retry::{self, MAX_TRIES, Verdict};
use super::xml;
use crate::error::{Error, Result};

/// How long a presigned request stays valid (it is signed again for each try; the
/// server checks it when the request starts). rclone refuses longer ones.
const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// Waiting for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Waiting for any one read or write on a connection, unless `TARTAPE_S3_TIMEOUT` says
/// otherwise (in seconds): a peer that stops answering is then a timeout, never a hang.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Tries of one request that end with the peer silent for the whole I/O timeout, at most:
/// with the 60 s timeout, a peer that accepts and never answers is given up in about
/// 3 minutes (SPEC §9), however many tries are left.
const STALLS: u32 = 3;

/// Bytes of an XML answer read at most.
const ANSWER_LIMIT: u64 = 4 << 20;

/// What an object in the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, quotes removed.
    pub etag: String,
    /// Its `x-amz-meta-*` metadata, names lower-case and without the prefix.
    pub meta: HashMap<String, String>,
}

/// A part of a multipart upload that the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Its number, from 1.
    pub number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, quotes removed (the MD5 of its bytes, in hex, on most stores).
    pub etag: String,
}

/// The bytes of a request, sent again on each try.
pub enum Payload<'a> {
    /// Held in memory.
    Bytes(&'a [u8]),
    /// `len` bytes that `open` reads from their start each time it is called; when a read
    /// fails for a reason that is not the network's (the tape changed), the reader puts
    /// the error in `failed` and the request fails with it, untried again.
    Stream {
        /// How many bytes `open`'s readers give.
        len: u64,
        /// A reader of the bytes from their start.
        open: &'a (dyn Fn() -> Box<dyn Read + 'a> + Sync),
        /// Where a reader leaves an error that ends the request.
        failed: &'a Mutex<Option<Error>>,
    },
}

impl Payload<'_> {
    /// How many bytes.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Stream { len, .. } => *len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn failure(&self) -> Option<Error> {
        match self {
            Payload::Bytes(_) => None,
            Payload::Stream { failed, .. } => failed.lock().ok()?.take(),
        }
    }
}

/// An object's content type and `x-amz-meta-*` metadata.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// `Content-Type`.
    pub content_type: String,
    /// Metadata names (without `x-amz-meta-`, lower-case) and values.
    pub meta: Vec<(String, String)>,
}

impl Metadata {
    fn headers(&self) -> Vec<(String, String)> {
        let mut out = vec![("content-type".to_string(), self.content_type.clone())];
        for (k, v) in &self.meta {
            out.push((format!("x-amz-meta-{k}"), v.clone()));
        }
        out
    }
}

/// What the upload and the restore need of an object store (one bucket).
pub trait ObjectStore: Sync {
    /// `ENDPOINT, bucket BUCKET`, for messages.
    fn describe(&self) -> String;
    /// The object at `key`; `None` when there is none.
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;
    /// Writes `payload` to `key` in one request, checked by the server against `md5`;
    /// returns the ETag.
    fn put(
        &self,
        key: &str,
        payload: &Payload<'_>,
        md5: &[u8; 16],
        meta: &Metadata,
    ) -> Result<String>;
    /// Starts a multipart upload to `key`; returns its upload id.
    fn create_upload(&self, key: &str, meta: &Metadata) -> Result<String>;
    /// Sends part `number` (from 1), checked by the server against `md5`; returns its ETag.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        payload: &Payload<'_>,
        md5: &[u8; 16],
    ) -> Result<String>;
    /// Every part the server holds (all pages of ListParts), by number; `None` when the
    /// upload is gone (`NoSuchUpload`).
    fn list_parts(&self, key: &str, upload_id: &str) -> Result<Option<Vec<PartInfo>>>;
    /// Completes the upload with these ETags, part 1 first; returns the object's ETag.
    fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<String>;
    /// Aborts the upload; `false` when it was already gone.
    fn abort(&self, key: &str, upload_id: &str) -> Result<bool>;
    /// Reads bytes `[start, end)` of the object at `key`, handing them to `sink` in order;
    /// returns what the answer says of the object (its whole size, from `Content-Range`,
    /// its ETag and metadata). With `expect_etag`, or once a first answer gave an ETag,
    /// an answer with another ETag (the object was replaced meanwhile) is an error
    /// (`PreconditionFailed`) before any of its bytes is read: never bytes of two objects.
    /// (Compared here rather than sent as `If-Match`, which a weak or missing ETag, or a
    /// proxy's, would turn into refusals of the right object.)
    fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        expect_etag: Option<&str>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<ObjectInfo>;
}

/// One bucket of an S3-compatible store.
pub struct Client {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Option<Credentials>,
    endpoint: String,
    /// Set once any answer came: before, a connection that fails says the endpoint may
    /// be wrong or down (once, as a warning, and as the error if every try fails).
    reached: AtomicBool,
    /// Whether "cannot reach the endpoint; trying again" was said.
    warned_unreached: AtomicBool,
    /// Every wait between tries is multiplied by this (`TARTAPE_S3_BACKOFF_SCALE`, for
    /// tests that give up on a closed port without waiting a minute; 1 otherwise).
    backoff_scale: f64,
    /// Set by the caller (Ctrl-C): no new try starts, waits end.
    stop: Arc<AtomicBool>,
    /// Requests sent (tries included), and bytes of payload sent by tries that succeeded.
    requests: AtomicU64,
}

/// How one try went wrong.
enum Fail {
    /// Worth another try, after a wait: why, for the log.
    Transient(String),
    /// A read or write that made no progress for the I/O timeout: the peer stopped
    /// answering. Tried again, but [`STALLS`] of them in one request give up.
    Stalled(String),
    /// No connection to an endpoint that has not answered yet in this run: down, or
    /// wrong. Tried again like any connection error; when every try fails, this error
    /// (naming the endpoint) is the one said.
    Unreached(Box<Error>, String),
    /// Not worth another.
    Final(Error),
}

/// What came back from one try.
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Client {
    /// A client of `bucket` with `settings`; `stop` ends waits and stops new tries.
    pub fn new(settings: &Settings, bucket: &str, stop: Arc<AtomicBool>) -> Result<Client> {
        let url: url::Url = settings.endpoint.parse().map_err(|e| {
            Error::Usage(format!("endpoint {}: not a URL ({e})", settings.endpoint))
        })?;
        // A name that is not a host name (dots break TLS certificates) is path-style.
        let dns_safe = bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let style = if settings.path_style || !dns_safe {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket_handle = Bucket::new(url, style, bucket.to_string(), settings.region.clone())
            .map_err(|e| {
                Error::Usage(format!(
                    "bucket {bucket:?} at {}: cannot be addressed ({e})",
                    settings.endpoint
                ))
            })?;
        let credentials = settings.keys.as_ref().map(|k| match &k.session_token {
            Some(token) => Credentials::new_with_token(
                k.access_key_id.clone(),
                k.secret_access_key.expose(),
                token.expose(),
            ),
            None => Credentials::new(k.access_key_id.clone(), k.secret_access_key.expose()),
        });
        let io_timeout = std::env::var("TARTAPE_S3_TIMEOUT")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map_or(IO_TIMEOUT, Duration::from_secs_f64);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(io_timeout))
            .timeout_per_write(Some(io_timeout))
            .user_agent(concat!("tartape/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client {
            agent,
            bucket: bucket_handle,
            credentials,
            endpoint: settings.endpoint.clone(),
            reached: AtomicBool::new(false),
            warned_unreached: AtomicBool::new(false),
            backoff_scale: std::env::var("TARTAPE_S3_BACKOFF_SCALE")
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| (0.0..=1.0).contains(s))
                .unwrap_or(1.0),
            stop,
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent so far, every try counted.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn remote(&self, status: u16, code: &str, message: &str) -> Error {
        Error::Remote {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.name().to_string(),
            code: code.to_string(),
            status,
            message: message.to_string(),
        }
    }

    /// Classifies a transport error of one try.
    fn transport(&self, e: ureq::Error) -> Fail {
        use ureq::Error as E;
        let connecting = match &e {
            E::HostNotFound | E::ConnectionFailed | E::Tls(_) => true,
            E::Timeout(t) => matches!(
                t,
                ureq::Timeout::Connect | ureq::Timeout::Resolve | ureq::Timeout::SendRequest
            ),
            E::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ),
            _ => false,
        };
        // Never the error's own text for the URL-bearing kinds: the URL is presigned.
        let why = match &e {
            E::HostNotFound => "host not found".to_string(),
            E::ConnectionFailed => "cannot connect".to_string(),
            E::Timeout(t) => format!("timed out ({t:?})"),
            E::Io(io) => io.to_string(),
            E::Tls(t) => format!("TLS: {t}"),
            E::BadUri(_) | E::Http(_) => "the request cannot be made (a bad URL)".to_string(),
            other => format!("{other}"),
        };
        if connecting && !self.reached.load(Ordering::Relaxed) {
            let code = match &e {
                E::HostNotFound => "host not found",
                E::Timeout(_) => "connect timed out",
                E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    "connection refused"
                }
                _ => "unreachable",
            };
            let error = self.remote(0, code, &format!("cannot reach the endpoint ({why})"));
            return Fail::Unreached(Box::new(error), why);
        }
        let stalled = matches!(
            &e,
            E::Timeout(ureq::Timeout::PerRead | ureq::Timeout::PerWrite)
        ) || matches!(&e, E::Io(io) if io.kind() == std::io::ErrorKind::TimedOut);
        if stalled {
            Fail::Stalled(why)
        } else {
            Fail::Transient(why)
        }
    }

    /// The error of an answer with an error status.
    fn refused(&self, answer: &Answer) -> Fail {
        let (code, message) = match xml::error_of(&answer.body) {
            Some(e) => (e.code, e.message.unwrap_or_default()),
            None => (status_code_name(answer.status).to_string(), String::new()),
        };
        match retry::verdict(answer.status, &code) {
            Verdict::Transient => Fail::Transient(format!("{} {code}", answer.status)),
            Verdict::Final => Fail::Final(self.remote(answer.status, &code, &message)),
        }
    }

    /// Signs `action` for one try.
    fn sign<'a>(&self, action: &impl S3Action<'a>) -> String {
        action.sign(SIGNED_FOR).to_string()
    }

    /// One try: `method` to `url` with `headers` and `payload`.
    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        payload: Option<&Payload<'_>>,
    ) -> std::result::Result<Answer, Fail> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let sent = match payload {
            None => builder
                .body(())
                .map_err(|e| Fail::Final(Error::Usage(format!("bad request header: {e}"))))
                .and_then(|r| self.agent.run(r).map_err(|e| self.transport(e))),
            Some(Payload::Bytes(bytes)) => builder
                .header("content-length", bytes.len().to_string())
                .body(*bytes)
                .map_err(|e| Fail::Final(Error::Usage(format!("bad request header: {e}"))))
                .and_then(|r| self.agent.run(r).map_err(|e| self.transport(e))),
            Some(p @ Payload::Stream { len, open, .. }) => {
                let mut reader = open();
                let result = builder
                    .header("content-length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map_err(|e| Fail::Final(Error::Usage(format!("bad request header: {e}"))))
                    .and_then(|r| self.agent.run(r).map_err(|e| self.transport(e)));
                if let Some(failed) = p.failure() {
                    return Err(Fail::Final(failed));
                }
                result
            }
        };
        let mut response = sent?;
        self.reached.store(true, Ordering::Relaxed);
        let status = response.status().as_u16();
        let body = if method == "HEAD" {
            String::new()
        } else {
            response
                .body_mut()
                .with_config()
                .limit(ANSWER_LIMIT)
                .read_to_string()
                .map_err(|e| self.transport(e))?
        };
        log::debug!("{method} {} -> {status}", path_of(url));
        Ok(Answer {
            status,
            headers: response.headers().clone(),
            body,
        })
    }

    /// Tries `attempt` until it succeeds, fails for good, or [`MAX_TRIES`] tries failed.
    fn with_retries<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        let (mut tries, mut stalls) = (0, 0);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            tries += 1;
            let mut unreached = None;
            let why = match attempt() {
                Ok(value) => return Ok(value),
                Err(Fail::Final(e)) => return Err(e),
                Err(Fail::Transient(why)) => why,
                Err(Fail::Stalled(why)) => {
                    stalls += 1;
                    if stalls >= STALLS {
                        return Err(self.remote(
                            0,
                            "timed out",
                            &format!(
                                "{what}: the endpoint stopped answering, {stalls} times ({why})"
                            ),
                        ));
                    }
                    why
                }
                Err(Fail::Unreached(error, why)) => {
                    if !self.warned_unreached.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "{}: cannot reach the endpoint ({why}); trying again, for up to \
                             about 3 minutes",
                            self.endpoint
                        );
                    }
                    unreached = Some(*error);
                    why
                }
            };
            let Some(wait) = retry::backoff(tries + 1, random_fraction()) else {
                return Err(unreached.unwrap_or_else(|| {
                    self.remote(
                        0,
                        "gave up",
                        &format!("{what} failed {MAX_TRIES} times, the last: {why}"),
                    )
                }));
            };
            let wait = wait.mul_f64(self.backoff_scale);
            // Not the user's to act on: said with -v.
            log::info!(
                "{}: {what}: {why}; try {} of {MAX_TRIES} in {:.1} s",
                self.describe(),
                tries + 1,
                wait.as_secs_f64()
            );
            self.sleep(wait);
        }
    }

    /// Sleeps `wait`, or less when stopped.
    fn sleep(&self, wait: Duration) {
        let until = std::time::Instant::now() + wait;
        while !self.stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// One try of an action that succeeds with 2xx.
    fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        payload: Option<&Payload<'_>>,
    ) -> std::result::Result<Answer, Fail> {
        let answer = self.send_once(method, url, headers, payload)?;
        if (200..300).contains(&answer.status) {
            // A 200 may still carry an error (CompleteMultipartUpload).
            if let Some(e) = xml::error_of(&answer.body) {
                let message = e.message.unwrap_or_default();
                // Only the codes that say "try again" are tried again.
                return match retry::verdict(400, &e.code) {
                    Verdict::Transient => {
                        Err(Fail::Transient(format!("{} {}", answer.status, e.code)))
                    }
                    Verdict::Final => {
                        Err(Fail::Final(self.remote(answer.status, &e.code, &message)))
                    }
                };
            }
            return Ok(answer);
        }
        Err(self.refused(&answer))
    }
}

/// The URL's path, for logs (never its query: it holds the signature).
fn path_of(url: &str) -> &str {
    url.split('?').next().unwrap_or_default()
}

/// A name for an error status with no S3 error document (a HEAD's answer has no body).
fn status_code_name(status: u16) -> &'static str {
    match status {
        301 => "PermanentRedirect (another region?)",
        400 => "BadRequest",
        403 => "AccessDenied",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        412 => "PreconditionFailed",
        416 => "InvalidRange",
        429 => "TooManyRequests",
        500 => "InternalError",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ => "HTTPError",
    }
}

/// Uniform in `[0, 1)`, from the kernel (jitter needs no more).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// An ETag without its quotes (and a weak prefix).
pub fn bare_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

fn md5_header(md5: &[u8; 16]) -> (String, String) {
    use base64::Engine;
    (
        "content-md5".to_string(),
        base64::engine::general_purpose::STANDARD.encode(md5),
    )
}

impl ObjectStore for Client {
    fn describe(&self) -> String {
        format!("{}, bucket {}", self.endpoint, self.bucket.name())
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.with_retries("HEAD", || {
            let action = self.bucket.head_object(self.credentials.as_ref(), key);
            let answer = self.send_once("HEAD", &self.sign(&action), &[], None)?;
            match answer.status {
                // A HEAD's error has no body: a GET of the same key says which it is
                // (NoSuchKey, or NoSuchBucket, InvalidAccessKeyId, …).
                400..=499 => {
                    let action = self.bucket.get_object(self.credentials.as_ref(), key);
                    let range = [("range".to_string(), "bytes=0-0".to_string())];
                    let answer = self.send_once("GET", &self.sign(&action), &range, None)?;
                    let code = xml::error_of(&answer.body).map(|e| e.code);
                    match answer.status {
                        404 if code.as_deref() != Some("NoSuchBucket") => Ok(None),
                        200..=299 => Err(Fail::Transient("HEAD and GET disagree".into())),
                        _ => Err(self.refused(&answer)),
                    }
                }
                200..=299 => {
                    let header = |name: &str| {
                        answer
                            .headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let size = header("content-length")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let meta = meta_of(&answer.headers);
                    Ok(Some(ObjectInfo {
                        size,
                        etag: bare_etag(&header("etag").unwrap_or_default()),
                        meta,
                    }))
                }
                _ => Err(self.refused(&answer)),
            }
        })
    }

    fn put(
        &self,
        key: &str,
        payload: &Payload<'_>,
        md5: &[u8; 16],
        meta: &Metadata,
    ) -> Result<String> {
        let mut headers = meta.headers();
        headers.push(md5_header(md5));
        self.with_retries("PUT", || {
            let mut action = self.bucket.put_object(self.credentials.as_ref(), key);
            for (k, v) in &headers {
                action.headers_mut().insert(k.clone(), v.clone());
            }
            let answer = self.call("PUT", &self.sign(&action), &headers, Some(payload))?;
            Ok(etag_of(&answer))
        })
    }

    fn create_upload(&self, key: &str, meta: &Metadata) -> Result<String> {
        let mut headers = meta.headers();
        headers.sort();
        self.with_retries("CreateMultipartUpload", || {
            // Signed by rusty-s3's signer, but with `?uploads=` as aws-cli sends it:
            // its own action says `?uploads=1`, which some servers (moto) refuse.
            let url = self.bucket.object_url(key);
            let query = [("uploads", "")];
            let url = match &self.credentials {
                Some(c) => rusty_s3::signing::sign(
                    &jiff::Timestamp::now(),
                    rusty_s3::Method::Post,
                    url,
                    c.key(),
                    c.secret(),
                    c.token(),
                    self.bucket.region(),
                    SIGNED_FOR.as_secs(),
                    query.into_iter(),
                    headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ),
                None => {
                    let mut url = url;
                    url.set_query(Some("uploads="));
                    url
                }
            };
            // An empty body, said so: without a length ureq would send it chunked, which
            // S3 does not take.
            let empty = Payload::Bytes(&[]);
            let answer = self.call("POST", url.as_str(), &headers, Some(&empty))?;
            match xml::parse::<xml::InitiateXml>(&answer.body) {
                Some(init) if !init.upload_id.is_empty() => Ok(init.upload_id),
                _ => Err(Fail::Final(self.remote(
                    answer.status,
                    "MalformedAnswer",
                    "CreateMultipartUpload answered without an UploadId",
                ))),
            }
        })
    }

    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        payload: &Payload<'_>,
        md5: &[u8; 16],
    ) -> Result<String> {
        let number16 = u16::try_from(number)
            .map_err(|_| Error::Usage(format!("part number {number} is over 10,000")))?;
        let headers = vec![md5_header(md5)];
        self.with_retries(&format!("part {number}"), || {
            let mut action =
                self.bucket
                    .upload_part(self.credentials.as_ref(), key, number16, upload_id);
            action
                .headers_mut()
                .insert(headers[0].0.clone(), headers[0].1.clone());
            let answer = self.call("PUT", &self.sign(&action), &headers, Some(payload))?;
            Ok(etag_of(&answer))
        })
    }

    fn list_parts(&self, key: &str, upload_id: &str) -> Result<Option<Vec<PartInfo>>> {
        let mut parts: Vec<PartInfo> = Vec::new();
        let mut marker: Option<u32> = None;
        // Each page's marker is fed back as the server gave it: AWS's is the last part
        // listed, rclone's the next one to list; parts are kept once by number.
        for _ in 0..=10_000 {
            let page = self.with_retries("ListParts", || {
                let mut action = self
                    .bucket
                    .list_parts(self.credentials.as_ref(), key, upload_id);
                if let Some(m) = marker {
                    action.set_part_number_marker(m.min(u16::MAX as u32) as u16);
                }
                let answer = self.send_once("GET", &self.sign(&action), &[], None)?;
                if answer.status == 404
                    && xml::error_of(&answer.body).is_some_and(|e| e.code == "NoSuchUpload")
                {
                    return Ok(None);
                }
                if !(200..300).contains(&answer.status) {
                    return Err(self.refused(&answer));
                }
                match xml::parse::<xml::ListPartsXml>(&answer.body) {
                    Some(page) => Ok(Some(page)),
                    None => Err(Fail::Final(self.remote(
                        answer.status,
                        "MalformedAnswer",
                        "ListParts answered with something that is not a part list",
                    ))),
                }
            })?;
            let Some(page) = page else {
                return Ok(None);
            };
            for p in page.parts {
                if !parts.iter().any(|q| q.number == p.number) {
                    parts.push(PartInfo {
                        number: p.number,
                        size: p.size,
                        etag: bare_etag(&p.etag),
                    });
                }
            }
            match (page.is_truncated, page.next_marker) {
                (Some(true), Some(next)) if Some(next) != marker && next > 0 => {
                    marker = Some(next);
                }
                (Some(true), _) => {
                    return Err(self.remote(
                        200,
                        "MalformedAnswer",
                        "ListParts said there is more but gave no new marker",
                    ));
                }
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(Some(parts))
    }

    fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<String> {
        self.with_retries("CompleteMultipartUpload", || {
            let quoted: Vec<String> = etags.iter().map(|e| format!("\"{e}\"")).collect();
            let action = self.bucket.complete_multipart_upload(
                self.credentials.as_ref(),
                key,
                upload_id,
                quoted.iter().map(String::as_str),
            );
            let url = self.sign(&action);
            let body = action.body();
            let answer = self.call("POST", &url, &[], Some(&Payload::Bytes(body.as_bytes())))?;
            Ok(xml::parse::<xml::CompleteXml>(&answer.body)
                .and_then(|c| c.etag)
                .map(|e| bare_etag(&e))
                .unwrap_or_else(|| etag_of(&answer)))
        })
    }

    fn abort(&self, key: &str, upload_id: &str) -> Result<bool> {
        self.with_retries("AbortMultipartUpload", || {
            let action =
                self.bucket
                    .abort_multipart_upload(self.credentials.as_ref(), key, upload_id);
            let answer = self.send_once("DELETE", &self.sign(&action), &[], None)?;
            match answer.status {
                200..=299 => Ok(true),
                404 => Ok(false),
                _ => Err(self.refused(&answer)),
            }
        })
    }

    fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        expect_etag: Option<&str>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<ObjectInfo> {
        let mut at = start;
        let mut sink_error: Option<Error> = None;
        let mut info: Option<ObjectInfo> = None;
        let mut expect: Option<String> = expect_etag.filter(|e| !e.is_empty()).map(str::to_string);
        // A connection that breaks mid-body is asked again for what is left.
        self.with_retries("GET", || {
            if at >= end {
                return Ok(());
            }
            let action = self.bucket.get_object(self.credentials.as_ref(), key);
            let url = self.sign(&action);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let request = ureq::http::Request::builder()
                .method("GET")
                .uri(&url)
                .header("range", format!("bytes={at}-{}", end - 1))
                .body(())
                .map_err(|e| Fail::Final(Error::Usage(format!("bad request header: {e}"))))?;
            let mut response = self.agent.run(request).map_err(|e| self.transport(e))?;
            self.reached.store(true, Ordering::Relaxed);
            let status = response.status().as_u16();
            log::debug!("GET {} bytes={at}-{} -> {status}", path_of(&url), end - 1);
            if !(200..300).contains(&status) {
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(ANSWER_LIMIT)
                    .read_to_string()
                    .unwrap_or_default();
                return Err(self.refused(&Answer {
                    status,
                    headers: response.headers().clone(),
                    body,
                }));
            }
            // 206, or a 200 whose Content-Range says it is the range asked (rclone); a
            // 200 with the whole object is refused rather than read from its start.
            let range = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let wanted = format!("bytes {at}-{}/", end - 1);
            let Some(size) = range
                .strip_prefix(&wanted)
                .and_then(|total| total.parse::<u64>().ok())
            else {
                return Err(Fail::Final(self.remote(
                    status,
                    "InvalidRange",
                    &format!("asked for bytes {at}-{} and got {range:?}", end - 1),
                )));
            };
            let etag = bare_etag(
                response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default(),
            );
            match &expect {
                Some(want) if !etag.is_empty() && etag != *want => {
                    return Err(Fail::Final(self.remote(
                        status,
                        "PreconditionFailed",
                        &format!("the object changed: ETag {etag}, was {want}"),
                    )));
                }
                Some(_) => {}
                None if !etag.is_empty() => expect = Some(etag.clone()),
                None => {}
            }
            info.get_or_insert_with(|| ObjectInfo {
                size,
                etag,
                meta: meta_of(response.headers()),
            });
            let mut reader = response.into_body().into_reader();
            let mut buf = vec![0u8; (end - at).min(1 << 20) as usize];
            while at < end {
                let want = buf.len().min((end - at) as usize);
                let n = match reader.read(&mut buf[..want]) {
                    Ok(0) => return Err(Fail::Transient("the body ended early".into())),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        return Err(Fail::Stalled(e.to_string()));
                    }
                    Err(e) => return Err(Fail::Transient(e.to_string())),
                };
                if let Err(e) = sink(&buf[..n]) {
                    sink_error = Some(e);
                    return Err(Fail::Final(Error::Interrupted));
                }
                at += n as u64;
            }
            Ok(())
        })
        .map_err(|e| sink_error.take().unwrap_or(e))?;
        info.ok_or_else(|| Error::Usage("an empty range was asked for".into()))
    }
}

/// The `x-amz-meta-*` headers of an answer, names without the prefix.
fn meta_of(headers: &ureq::http::HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().strip_prefix("x-amz-meta-")?;
            Some((name.to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

/// The ETag header of an answer, quotes removed.
fn etag_of(answer: &Answer) -> String {
    bare_etag(
        answer
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_their_quotes_and_urls_their_queries() {
        assert_eq!(bare_etag("\"abc\""), "abc");
        assert_eq!(bare_etag("W/\"abc-3\""), "abc-3");
        assert_eq!(bare_etag("abc"), "abc");
        assert_eq!(
            path_of("http://h:9/b/k?X-Amz-Signature=secret&X-Amz-Security-Token=t"),
            "http://h:9/b/k"
        );
        let r = random_fraction();
        assert!((0.0..1.0).contains(&r));
    }
}
