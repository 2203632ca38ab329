//! The HTTP server: hyper 1 (HTTP/1.1) on a small tokio runtime.
//!
//! * Tape reads block (`pread`, `fstat`): each chunk of a body is read on a blocking
//!   thread (at most [`Options::threads`] at once), one chunk ahead of what is being
//!   sent, so a response holds at most two chunks ([`CHUNK`]) however large the range, and
//!   a client that stops reading stops the reads. Source pages are never spliced into the
//!   socket (SPEC §3): bytes are read, checked, then written.
//! * A read that finds the source changed ends the body with an error: hyper closes the
//!   connection short of `Content-Length`, so no client keeps a wrong file as complete;
//!   the tape then answers 409.
//! * Connections are bounded ([`Options::max_connections`]; more wait in the backlog).
//!   A new connection's request head must arrive within [`Options::header_timeout`], as
//!   must a later one from its first byte (slow-loris); an idle keep-alive connection is
//!   closed after [`Options::idle_timeout`], a write that makes no progress for as long
//!   ends it too;
//!   a head over 8 KiB is refused: 414 when its request line is, else 431.
//! * On SIGINT or SIGTERM the server stops accepting, lets the responses in flight finish
//!   for up to [`Options::drain`], and returns.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use headers::{AcceptRanges, ContentLength, ContentRange, HeaderMapExt, LastModified};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use super::http::{self as semantics, Answer, Piece, Representation};
use super::{Auth, Served, ServedFile};
use crate::error::{Error, Result};

/// Bytes read from the tape at a time for a body.
pub const CHUNK: usize = 256 << 10;

/// How many bytes of a request head hyper reads before it answers 431 by itself: past
/// [`semantics::MAX_HEAD`], so that heads up to this size get 414 or 431 by what is long.
const HEAD_BUFFER: usize = 64 << 10;

/// Limits of the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Threads reading the tape at once.
    pub threads: usize,
    /// From a connection's opening (or, on a kept-alive one, a request's first byte) to
    /// the request's whole head.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request.
    pub idle_timeout: Duration,
    /// A write to a client that makes no progress.
    pub write_timeout: Duration,
    /// How long responses in flight may go on after SIGINT or SIGTERM.
    pub drain: Duration,
    /// Credentials every request must carry.
    pub auth: Option<Auth>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 1024,
            threads: 32,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            drain: Duration::from_secs(10),
            auth: None,
        }
    }
}

/// Serves `served` on `listener` until `stop` completes (or SIGINT/SIGTERM with
/// `signals`), then drains. Blocks; runs its own runtime.
pub fn serve(
    served: Served,
    listener: std::net::TcpListener,
    options: Options,
    signals: bool,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
        .max_blocking_threads(options.threads.max(1))
        .thread_name("tartape-serve")
        .enable_all()
        .build()
        .map_err(|e| Error::io("<runtime>", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("<listener>", e))?;
    let served = Arc::new(served);
    let served_here = Arc::clone(&served);
    let result = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| Error::io("<listener>", e))?;
        let stop: Pin<Box<dyn Future<Output = ()> + Send>> = if signals {
            Box::pin(stop_signal())
        } else {
            Box::pin(std::future::pending())
        };
        accept_loop(served_here, listener, options, stop).await
    });
    let started = Instant::now();
    runtime.shutdown_timeout(Duration::from_secs(1));
    log::debug!("runtime stopped in {:?}", started.elapsed());
    let started = Instant::now();
    drop(served);
    log::debug!("tapes closed in {:?}", started.elapsed());
    result
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

async fn accept_loop(
    served: Arc<Served>,
    listener: tokio::net::TcpListener,
    options: Options,
    mut stop: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let options = Arc::new(options);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("never closed"),
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, a connection reset before accept: not fatal.
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let phase = Arc::new(Phase::new());
        let io = TimedIo::new(stream, Arc::clone(&phase), &options);
        let service = {
            let (served, options, phase) = (
                Arc::clone(&served),
                Arc::clone(&options),
                Arc::clone(&phase),
            );
            hyper::service::service_fn(move |request| {
                phase.set(Phase::REQUEST);
                let answer = respond(&request, &served, &options, &phase, peer);
                std::future::ready(Ok::<_, Infallible>(answer))
            })
        };
        let connection = hyper::server::conn::http1::Builder::new()
            // Larger than the 8 KiB a head may hold, so that `route` can tell a long
            // request line (414) from too many header bytes (431).
            .max_buf_size(HEAD_BUFFER)
            .max_headers(100)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("{peer}: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    log::info!(
        "stopping: no new connection; responses in flight get {:?}",
        options.drain
    );
    if tokio::time::timeout(options.drain, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!(
            "stopped with responses still in flight after {:?}",
            options.drain
        );
    }
    Ok(())
}

/// Where a connection is: waiting for a request, reading its head, or answering it.
struct Phase {
    state: AtomicU8,
    /// When the current phase started.
    since: Mutex<Instant>,
    /// The reader that found nothing to read while a request was being answered: woken
    /// when the answer is done, so that the idle timer starts.
    reader: Mutex<Option<std::task::Waker>>,
}

impl Phase {
    const IDLE: u8 = 0;
    const HEAD: u8 = 1;
    const REQUEST: u8 = 2;

    /// A new connection: its first request head is due within the head timeout (a
    /// connection that sends nothing is a slow-loris too).
    fn new() -> Phase {
        Phase {
            state: AtomicU8::new(Phase::HEAD),
            since: Mutex::new(Instant::now()),
            reader: Mutex::new(None),
        }
    }

    fn set(&self, state: u8) {
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.state.store(state, Ordering::Release);
        if state == Phase::IDLE
            && let Some(reader) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            reader.wake();
        }
    }

    /// Wakes `waker` when the phase turns idle.
    fn wake_when_idle(&self, waker: &std::task::Waker) {
        *self.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
    }

    fn get(&self) -> (u8, Instant) {
        (
            self.state.load(Ordering::Acquire),
            *self.since.lock().unwrap_or_else(|p| p.into_inner()),
        )
    }
}

/// A connection with the server's timeouts: of an idle connection, of a request head
/// once its first byte came, of a write that makes no progress.
struct TimedIo {
    inner: tokio::net::TcpStream,
    phase: Arc<Phase>,
    header_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
    read_timer: Pin<Box<tokio::time::Sleep>>,
    write_timer: Pin<Box<tokio::time::Sleep>>,
    /// Since when writes have been pending.
    write_stuck: Option<Instant>,
}

impl TimedIo {
    fn new(inner: tokio::net::TcpStream, phase: Arc<Phase>, options: &Options) -> TimedIo {
        let far = tokio::time::Instant::now() + Duration::from_secs(86400);
        TimedIo {
            inner,
            phase,
            header_timeout: options.header_timeout,
            idle_timeout: options.idle_timeout,
            write_timeout: options.write_timeout,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            write_stuck: None,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase.get().0 == Phase::IDLE {
                    this.phase.set(Phase::HEAD);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (state, since) = this.phase.get();
                let limit = match state {
                    Phase::IDLE => this.idle_timeout,
                    Phase::HEAD => this.header_timeout,
                    _ => {
                        this.phase.wake_when_idle(cx.waker());
                        // (The answer may have ended just now.)
                        if this.phase.get().0 == Phase::IDLE {
                            cx.waker().wake_by_ref();
                        }
                        return Poll::Pending;
                    }
                };
                this.read_timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(since + limit));
                if this.read_timer.as_mut().poll(cx).is_ready() {
                    let what = if state == Phase::IDLE {
                        "idle keep-alive connection"
                    } else {
                        "request head not received in time"
                    };
                    return Poll::Ready(Err(timed_out(what)));
                }
                Poll::Pending
            }
        }
    }
}

impl TimedIo {
    /// What a write did: progress resets the write timer; a write pending for
    /// [`Options::write_timeout`] is an error.
    fn after_write(
        &mut self,
        written: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if written.is_ready() {
            self.write_stuck = None;
            return written;
        }
        let since = *self.write_stuck.get_or_insert_with(Instant::now);
        self.write_timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(since + self.write_timeout));
        if self.write_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(timed_out("the client stopped reading")));
        }
        Poll::Pending
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        this.after_write(written, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body: pieces of text and of the file, the file's read one chunk ahead on
/// a blocking thread. Dropped (sent, or abandoned by a client that hung up), it puts the
/// connection back to idle.
pub struct TapeBody {
    served: Arc<Served>,
    file: Option<ServedFile>,
    pieces: std::collections::VecDeque<Piece>,
    /// The next chunk being read: its length, and the read.
    reading: Option<JoinHandle<Result<Bytes>>>,
    left: u64,
    phase: Option<Arc<Phase>>,
    peer: SocketAddr,
}

impl TapeBody {
    fn empty(served: &Arc<Served>, phase: &Arc<Phase>, peer: SocketAddr) -> TapeBody {
        TapeBody::new(served, None, Vec::new(), phase, peer)
    }

    fn text(served: &Arc<Served>, text: String, phase: &Arc<Phase>, peer: SocketAddr) -> TapeBody {
        TapeBody::new(
            served,
            None,
            vec![Piece::Text(text.into_bytes())],
            phase,
            peer,
        )
    }

    fn new(
        served: &Arc<Served>,
        file: Option<ServedFile>,
        pieces: Vec<Piece>,
        phase: &Arc<Phase>,
        peer: SocketAddr,
    ) -> TapeBody {
        TapeBody {
            served: Arc::clone(served),
            file,
            left: semantics::body_len(&pieces),
            pieces: pieces.into(),
            reading: None,
            phase: Some(Arc::clone(phase)),
            peer,
        }
    }

    /// Starts reading the next chunk of the file piece in front, if it is one.
    fn read_ahead(&mut self) {
        if self.reading.is_some() {
            return;
        }
        let Some(Piece::File(range)) = self.pieces.front_mut() else {
            return;
        };
        let (start, end) = (*range.start(), *range.end());
        let len = (end - start + 1).min(CHUNK as u64);
        if start + len > end {
            self.pieces.pop_front();
        } else {
            *range = start + len..=end;
        }
        let served = Arc::clone(&self.served);
        let file = self.file.clone().expect("a file piece has a file");
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len as usize];
            served.read(&file, start, &mut buf)?;
            Ok(Bytes::from(buf))
        }));
    }
}

impl Drop for TapeBody {
    fn drop(&mut self) {
        if let Some(reading) = self.reading.take() {
            reading.abort();
        }
        if let Some(phase) = self.phase.take() {
            phase.set(Phase::IDLE);
        }
    }
}

impl Body for TapeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.reading.is_none() {
            match this.pieces.front() {
                None => return Poll::Ready(None),
                Some(Piece::Text(_)) => {
                    let Some(Piece::Text(text)) = this.pieces.pop_front() else {
                        unreachable!()
                    };
                    this.left -= text.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))));
                }
                Some(Piece::File(_)) => this.read_ahead(),
            }
        }
        let reading = this.reading.as_mut().expect("a read was started");
        let read = match Pin::new(reading).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(read) => read,
        };
        this.reading = None;
        match read {
            Ok(Ok(bytes)) => {
                this.left -= bytes.len() as u64;
                // The next chunk is read while this one is sent.
                this.read_ahead();
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Ok(Err(e)) => {
                // Short of Content-Length: the client never keeps this as complete.
                let name = this.file.as_ref().map_or("", |f| f.name.as_str());
                log::error!("{}: /{name}: {e}; the response is cut short", this.peer);
                this.pieces.clear();
                Poll::Ready(Some(Err(io::Error::other(e.to_string()))))
            }
            Err(e) => Poll::Ready(Some(Err(io::Error::other(e.to_string())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// The answer to one request.
fn respond(
    request: &Request<Incoming>,
    served: &Arc<Served>,
    options: &Options,
    phase: &Arc<Phase>,
    peer: SocketAddr,
) -> Response<TapeBody> {
    let answer = route(request, served, options, phase, peer);
    log::info!(
        "{peer} {} {} -> {}",
        request.method(),
        request.uri().path(),
        answer.status().as_u16()
    );
    answer
}

fn route(
    request: &Request<Incoming>,
    served: &Arc<Served>,
    options: &Options,
    phase: &Arc<Phase>,
    peer: SocketAddr,
) -> Response<TapeBody> {
    let plain = |status: StatusCode, text: String| {
        let text = text + "\n";
        let len = text.len() as u64;
        let mut r = Response::new(TapeBody::text(served, text, phase, peer));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // Said here, not left to hyper: a HEAD gets it too.
        r.headers_mut().typed_insert(ContentLength(len));
        r
    };
    let target = request.uri().to_string(); // the origin or absolute form, as sent
    if let Some(status) = semantics::head_too_large(request.method(), &target, request.headers()) {
        // Closed after the answer, as hyper closes after its own 431: what else such a
        // client sends is not worth reading.
        let mut r = plain(
            status,
            status.canonical_reason().unwrap_or("too large").into(),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if let Some(auth) = &options.auth {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !auth.allows(given) {
            let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required".into());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(auth.challenge()),
            );
            return r;
        }
    }
    let head = request.method() == Method::HEAD;
    if !(head || request.method() == Method::GET) {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD".into());
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = request.uri().path();
    let mut response = if path == "/" {
        index(request, served, phase, peer)
    } else {
        match semantics::file_name(path).and_then(|name| served.find(&name).cloned()) {
            None => plain(StatusCode::NOT_FOUND, "no such file".into()),
            Some(file) => match served.broken(&file) {
                Some(why) => plain(StatusCode::CONFLICT, why),
                None => file_response(request, served, file, phase, peer),
            },
        }
    };
    if head {
        // The headers a GET would have, Content-Length included; no body.
        *response.body_mut() = TapeBody::empty(served, phase, peer);
    }
    response
}

/// `/`: links to every file (HTML), or their list (JSON on `Accept: application/json`).
fn index(
    request: &Request<Incoming>,
    served: &Arc<Served>,
    phase: &Arc<Phase>,
    peer: SocketAddr,
) -> Response<TapeBody> {
    let accept: Vec<&str> = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|a| a.to_str().ok())
        .collect();
    let wants_json =
        semantics::prefers_json((!accept.is_empty()).then(|| accept.join(",")).as_deref());
    let (text, content_type) = if wants_json {
        let files: Vec<serde_json::Value> = served
            .files()
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name,
                    "url": format!("/{}", semantics::percent_encode(&f.name)),
                    "size": f.size,
                    "etag": etag_text(&f.etag),
                    "last_modified": f.modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                    "content_type": f.content_type,
                })
            })
            .collect();
        (
            format!("{}\n", serde_json::Value::from(files)),
            "application/json",
        )
    } else {
        let mut html = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>tartape</title></head>\n\
             <body>\n<h1>tartape</h1>\n<ul>\n",
        );
        for f in served.files() {
            html.push_str(&format!(
                "<li><a href=\"{}\">{}</a> {} bytes</li>\n",
                semantics::percent_encode(&f.name),
                escape_html(&f.name),
                f.size
            ));
        }
        html.push_str("</ul>\n</body></html>\n");
        (html, "text/html; charset=utf-8")
    };
    let len = text.len() as u64;
    let mut r = Response::new(TapeBody::text(served, text, phase, peer));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r.headers_mut().typed_insert(ContentLength(len));
    r
}

/// An ETag as its header says it.
fn etag_text(etag: &headers::ETag) -> String {
    let mut h = http::HeaderMap::new();
    h.typed_insert(etag.clone());
    h.get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A GET of a tape, volume or catalog copy: 200, 206 (one range, or several as
/// `multipart/byteranges`), 304 or 416.
fn file_response(
    request: &Request<Incoming>,
    served: &Arc<Served>,
    file: ServedFile,
    phase: &Arc<Phase>,
    peer: SocketAddr,
) -> Response<TapeBody> {
    let rep = Representation {
        size: file.size,
        etag: file.etag.clone(),
        modified: file.modified,
    };
    let answer = semantics::answer(request.headers(), &rep);
    let mut headers = http::HeaderMap::new();
    headers.typed_insert(file.etag.clone());
    headers.typed_insert(LastModified::from(file.modified));
    headers.typed_insert(AcceptRanges::bytes());
    if let Ok(v) = HeaderValue::from_str(&semantics::content_disposition(&file.name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    let content_type = HeaderValue::from_static(file.content_type);
    let size = file.size;
    let (status, pieces) = match answer {
        Answer::NotModified => (StatusCode::NOT_MODIFIED, None),
        Answer::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, Some(Vec::new())),
        Answer::Unsatisfiable => {
            headers.typed_insert(ContentRange::unsatisfied_bytes(size));
            (StatusCode::RANGE_NOT_SATISFIABLE, Some(Vec::new()))
        }
        Answer::Full => {
            headers.insert(header::CONTENT_TYPE, content_type);
            let whole = if size == 0 {
                Vec::new()
            } else {
                vec![Piece::File(0..=size - 1)]
            };
            (StatusCode::OK, Some(whole))
        }
        Answer::Partial(a, b) => {
            headers.insert(header::CONTENT_TYPE, content_type);
            if let Ok(range) = ContentRange::bytes(a..=b, size) {
                headers.typed_insert(range);
            }
            (StatusCode::PARTIAL_CONTENT, Some(vec![Piece::File(a..=b)]))
        }
        Answer::Multipart(ranges) => {
            let boundary = boundary();
            let pieces = semantics::multipart_body(&ranges, size, file.content_type, &boundary);
            if let Ok(v) =
                HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            {
                headers.insert(header::CONTENT_TYPE, v);
            }
            (StatusCode::PARTIAL_CONTENT, Some(pieces))
        }
    };
    let pieces = pieces.unwrap_or_default();
    if status != StatusCode::NOT_MODIFIED {
        headers.typed_insert(ContentLength(semantics::body_len(&pieces)));
    }
    let mut r = Response::new(TapeBody::new(served, Some(file), pieces, phase, peer));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// A multipart boundary: 24 random hex digits (bytes of the tape cannot be foreseen).
fn boundary() -> String {
    let mut bytes = [0u8; 12];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    format!("tartape-{}", crate::digest::hex(&bytes))
}
