//! The HTTP/1 client connection on lb's own codec: request heads read and parsed from a
//! buffer taken from the worker's pool only once bytes arrive (an idle connection holds
//! none), the request body fed to the request path as it asks for it (`Expect:
//! 100-continue` answered then), responses written with their framing (one write for a
//! head and a body piece that is ready), keep-alive and HTTP/1.0 rules, pipelining, and
//! the hand-over to a tunnel after a 101 or a 2xx to CONNECT.

use std::io::IoSlice;
use std::pin::pin;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::body::{self, BodyTx, Piece, ReqBody, ReqBodyError, Want};
use super::{
    BodyDecoder, BodyEvent, BodyFraming, ConnectionField, Limits, RequestError, RequestHead,
    ResponseFraming,
};
use crate::l7::http::{self as path, ConnCtx, RespBody};
use crate::l7::runtime::FrontendRt;

/// Read buffers are taken from the worker's pool at this size.
const READ_BUF: usize = 16 * 1024;
/// Buffers kept in a worker's pool at most.
const POOL_MAX: usize = 256;
/// Largest piece of a request body handed over at once.
const PIECE_MAX: usize = 64 * 1024;
/// A body piece up to this size is copied next to its head (one write); a larger one
/// goes out uncopied beside it (one `writev`).
const COPY_MAX: usize = 8 * 1024;

/// Client connections that own a read or write buffer now (across workers).
static BUFFERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many HTTP/1 client connections own a read or write buffer now: those with a
/// request being read or served, or pipelined bytes waiting. An idle keep-alive
/// connection owns none (its buffers went back to the pool or were let go).
pub fn buffered_connections() -> usize {
    BUFFERED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A connection's place in [`BUFFERED`]: counted while it owns a buffer.
#[derive(Debug, Default)]
struct Holding(bool);

impl Holding {
    fn set(&mut self, on: bool) {
        use std::sync::atomic::Ordering;
        if self.0 != on {
            self.0 = on;
            if on {
                BUFFERED.fetch_add(1, Ordering::Relaxed);
            } else {
                BUFFERED.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.set(false);
    }
}

thread_local! {
    /// The worker's spare read buffers.
    static POOL: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A read buffer from the worker's pool (or a new one).
fn take_buf() -> BytesMut {
    let b = POOL.with(|p| p.borrow_mut().pop());
    let mut b = b.unwrap_or_default();
    // (Reclaims its space in place once the heads that shared it are gone.)
    b.reserve(READ_BUF);
    b
}

/// Gives an empty read buffer back to the worker's pool.
fn give_buf(b: BytesMut) {
    if b.capacity() < READ_BUF || !b.is_empty() {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

/// A stream a tunnel takes over.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// The client connection after a 101 or a 2xx to CONNECT, with the bytes the client sent
/// after its request head.
pub struct Upgraded {
    pub io: Box<dyn ClientStream>,
    pub early: Bytes,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded").finish_non_exhaustive()
    }
}

/// In a request's extensions: where its connection goes if the response makes a tunnel.
#[derive(Debug, Clone)]
pub struct H1Upgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl H1Upgrade {
    /// Takes the receiving end (once).
    pub fn take(&self) -> Option<oneshot::Receiver<Upgraded>> {
        match self.0.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

/// Interim responses a request may have waiting to be written to the client (the
/// server's reading waits while this many are).
const INTERIM_MAX: usize = 4;

/// A server's interim response head (1xx but 101), to be relayed to the client.
#[derive(Debug)]
pub struct InterimHead {
    status: StatusCode,
    headers: HeaderMap,
}

/// In a request's extensions: where the server's interim responses go to be written to
/// the HTTP/1 client before the final one (HAProxy 2.6 forwards them, 103 Early Hints
/// among them, to HTTP/1.1 and HTTP/1.0 clients alike).
#[derive(Debug, Clone)]
pub struct Interim(mpsc::Sender<InterimHead>);

impl Interim {
    /// Hands an interim response to the client connection (waits while it has
    /// [`INTERIM_MAX`] unwritten; dropped if the client connection is gone).
    pub async fn relay(&self, status: StatusCode, headers: HeaderMap) {
        let _ = self.0.send(InterimHead { status, headers }).await;
    }
}

/// Runs until `shutdown` flips (never, if its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What became of a connection after a response.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    KeepAlive,
    Close,
    Tunnel,
}

/// What the response is written for.
struct ReqInfo {
    method: Method,
    version: Version,
    keep_alive: bool,
    /// `TE: trailers`: the client takes trailer fields (those the response's `Trailer`
    /// field announces, hyper's rule and HTTP/1's).
    trailers: bool,
}

/// Serves an HTTP/1 client connection until it closes, fails, or becomes a tunnel.
pub async fn serve<I>(
    io: I,
    ctx: Arc<ConnCtx>,
    fe: &FrontendRt,
    shutdown: &mut watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = Limits {
        header_bytes: fe.max_header_bytes,
        headers: fe.max_headers,
    };
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = BytesMut::new();
    let mut holding = Holding::default();
    let mut wbuf: Vec<u8> = Vec::new();
    let (interim_tx, mut interim_rx) = mpsc::channel(INTERIM_MAX);
    loop {
        let head = match read_head(&mut rd, &mut buf, &mut holding, limits, shutdown).await {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(peer = %ctx.src, error = %e, "request refused");
                refuse(&mut wr, fe, &e).await;
                break;
            }
        };
        let RequestHead {
            mut parts,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
            ..
        } = head;
        let info = ReqInfo {
            method: parts.method.clone(),
            version: parts.version,
            keep_alive: keep_alive && !*shutdown.borrow(),
            trailers: te_trailers(&parts.headers),
        };
        let (body, mut pump) = match framing {
            BodyFraming::None => (ReqBody::Empty, None),
            f => {
                let length = match f {
                    BodyFraming::Length(n) => Some(n),
                    _ => None,
                };
                let (b, tx) = body::channel(length);
                let pump = Pump {
                    dec: BodyDecoder::new(f),
                    tx,
                    expect: expect_continue,
                    asked: false,
                    done: false,
                    broken: false,
                };
                (ReqBody::H1(b), Some(pump))
            }
        };
        let upgrade_tx = (upgrade || info.method == Method::CONNECT).then(|| {
            let (tx, rx) = oneshot::channel();
            parts
                .extensions
                .insert(H1Upgrade(Arc::new(Mutex::new(Some(rx)))));
            tx
        });
        parts.extensions.insert(Interim(interim_tx.clone()));
        let fut = path::handle(ctx.clone(), Request::from_parts(parts, body));
        let io = Io {
            rd: &mut rd,
            buf: &mut buf,
            wr: &mut wr,
            interim: &mut interim_rx,
        };
        let Some(resp) = run_handler(fut, pump.as_mut(), io).await else {
            break;
        };
        let outcome = {
            let mut w = pin!(write_response(resp, &info, &mut wr, &mut wbuf));
            loop {
                match &mut pump {
                    Some(p) if !p.done => {
                        tokio::select! {
                            biased;
                            r = &mut w => break r,
                            _ = p.step(&mut rd, &mut buf, true) => {}
                        }
                    }
                    _ => break w.await,
                }
            }
        };
        let unread = pump.as_ref().is_some_and(|p| !p.done || p.broken);
        match outcome {
            Ok(Outcome::Tunnel) => {
                if let Some(tx) = upgrade_tx {
                    let early = buf.split().freeze();
                    let io = rd.unsplit(wr);
                    let _ = tx.send(Upgraded {
                        io: Box::new(io),
                        early,
                    });
                }
                return;
            }
            Ok(Outcome::KeepAlive) if !unread && !*shutdown.borrow() => {}
            Ok(_) | Err(_) => break,
        }
        drop(pump);
        // Done with this message: an empty buffer goes back to the pool, and the write
        // buffer is let go (a connection between requests holds neither).
        if buf.is_empty() {
            give_buf(std::mem::take(&mut buf));
        }
        wbuf = Vec::new();
        holding.set(buf.capacity() > 0);
    }
    let _ = wr.shutdown().await;
}

/// Whether a request's TE asks for trailers.
fn te_trailers(h: &HeaderMap) -> bool {
    h.get_all(header::TE).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// Reads until a request head is parsed. `Ok(None)`: the connection ended (or shutdown
/// came) between requests. An idle connection waits for its first bytes in a small
/// buffer of its own and takes a pooled one when they come.
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    holding: &mut Holding,
    limits: Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<RequestHead>, RequestError> {
    loop {
        if !buf.is_empty() {
            if let Some(h) = super::parse_request(buf, limits)? {
                return Ok(Some(h));
            }
        } else {
            if *shutdown.borrow() {
                return Ok(None);
            }
            let mut first = [0u8; 256];
            let n = tokio::select! {
                r = rd.read(&mut first) => r,
                _ = stopped(shutdown) => return Ok(None),
            };
            match n {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => {
                    if buf.capacity() < READ_BUF {
                        *buf = take_buf();
                        holding.set(true);
                    }
                    buf.extend_from_slice(&first[..n]);
                }
            }
            continue;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUF);
        }
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => {
                return match super::at_eof(buf) {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            Ok(_) => {}
        }
    }
}

/// Answers a refused request head with the frontend's page for its status; the connection
/// closes after it.
async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, fe: &FrontendRt, e: &RequestError) {
    let page: Bytes = match e.status() {
        400 => fe.errors.conn_pages().bad_request,
        code => {
            let c = fe.errors.get(code);
            let mut h = HeaderMap::new();
            for (k, v) in &c.headers {
                if k != header::CONTENT_LENGTH && k != header::CONNECTION {
                    h.append(k.clone(), v.clone());
                }
            }
            let mut out = Vec::new();
            super::encode_response_head(
                c.status,
                None,
                &h,
                ResponseFraming::Length(c.body.len() as u64),
                ConnectionField::Close,
                &mut out,
            );
            out.extend_from_slice(&c.body);
            Bytes::from(out)
        }
    };
    let _ = wr.write_all(&page).await;
    let _ = wr.flush().await;
}

/// The client connection as [`run_handler`] uses it.
struct Io<'a, R, W> {
    rd: &'a mut R,
    buf: &'a mut BytesMut,
    wr: &'a mut W,
    interim: &'a mut mpsc::Receiver<InterimHead>,
}

/// What happened while the request path ran.
enum Event {
    Body(Step),
    Interim(InterimHead),
}

/// Runs the request path until its response, feeding it the request body as it asks and
/// writing the server's interim responses as they come. `None`: the connection failed
/// meanwhile.
async fn run_handler<R, W>(
    fut: path::HandleFuture,
    mut pump: Option<&mut Pump>,
    io: Io<'_, R, W>,
) -> Option<Response<RespBody>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Io {
        rd,
        buf,
        wr,
        interim,
    } = io;
    let mut fut = pin!(fut);
    // A `100 Continue` went out (lb's own, or the server's relayed): not a second one.
    let mut continued = false;
    let mut resp = None;
    loop {
        let event = if resp.is_some() {
            // Interim responses the server sent before the final one, not written yet.
            match interim.try_recv() {
                Ok(h) => Event::Interim(h),
                Err(_) => return resp,
            }
        } else {
            let feeding = pump.as_deref().is_some_and(|p| !p.done);
            let step = async {
                match pump.as_deref_mut() {
                    Some(p) => p.step(rd, buf, false).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                r = &mut fut => {
                    resp = Some(r.ok()?);
                    continue;
                }
                Some(h) = interim.recv() => Event::Interim(h),
                s = step, if feeding => Event::Body(s),
            }
        };
        let head = match event {
            Event::Body(Step::Continue) => {
                // The body is asked for and the client waits for the go-ahead.
                continued = true;
                InterimHead {
                    status: StatusCode::CONTINUE,
                    headers: HeaderMap::new(),
                }
            }
            Event::Body(Step::Fed) => continue,
            Event::Interim(h) if h.status == StatusCode::CONTINUE => {
                if std::mem::replace(&mut continued, true) {
                    continue;
                }
                if let Some(p) = pump.as_deref_mut() {
                    p.expect = false;
                }
                h
            }
            Event::Interim(h) => h,
        };
        write_interim(wr, &head).await.ok()?;
    }
}

/// Writes an interim response head to the client.
async fn write_interim<W: AsyncWrite + Unpin>(wr: &mut W, h: &InterimHead) -> std::io::Result<()> {
    let mut out = Vec::new();
    super::encode_response_head(
        h.status,
        None,
        &h.headers,
        ResponseFraming::Raw,
        ConnectionField::None,
        &mut out,
    );
    wr.write_all(&out).await?;
    wr.flush().await
}

/// Feeds a request body from the connection's read buffer.
struct Pump {
    dec: BodyDecoder,
    tx: BodyTx,
    /// `Expect: 100-continue`, not answered yet.
    expect: bool,
    /// The body was asked for at least once.
    asked: bool,
    /// Nothing more is read for this body (complete, failed, or abandoned).
    done: bool,
    /// The body was malformed or cut: the connection cannot carry another request.
    broken: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// A piece went to the body (or the body was abandoned).
    Fed,
    /// Write `100 Continue` now.
    Continue,
}

impl Pump {
    /// Waits for the body to ask, then hands it the next piece (reading from the client
    /// when the buffer holds none). Cancel-safe: nothing is lost when dropped at an await.
    /// `responding`: the response has started, so no `100 Continue` goes out any more.
    async fn step<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        responding: bool,
    ) -> Step {
        let want = std::future::poll_fn(|cx| self.tx.poll_want(cx)).await;
        if want == Want::Dropped {
            self.done = true;
            return Step::Fed;
        }
        if self.expect && !self.asked && !responding && buf.is_empty() {
            self.asked = true;
            self.expect = false;
            return Step::Continue;
        }
        self.asked = true;
        loop {
            match self.dec.decode(buf, PIECE_MAX) {
                Ok(BodyEvent::Data(d)) => {
                    let last = self.dec.is_done();
                    self.done = last;
                    self.tx.send(Some(Piece::Data(d)), last);
                    return Step::Fed;
                }
                Ok(BodyEvent::Trailers(t)) => {
                    self.done = true;
                    self.tx.send(Some(Piece::Trailers(t)), true);
                    return Step::Fed;
                }
                Ok(BodyEvent::End) => {
                    self.done = true;
                    self.tx.send(None, true);
                    return Step::Fed;
                }
                Ok(BodyEvent::NeedMore) => {
                    if buf.capacity() - buf.len() < 1024 {
                        buf.reserve(READ_BUF);
                    }
                    match rd.read_buf(buf).await {
                        Ok(0) | Err(_) => {
                            self.fail(ReqBodyError::Closed);
                            return Step::Fed;
                        }
                        Ok(_) => {}
                    }
                }
                Err(e) => {
                    self.fail(ReqBodyError::Chunked(e));
                    return Step::Fed;
                }
            }
        }
    }

    fn fail(&mut self, e: ReqBodyError) {
        self.done = true;
        self.broken = true;
        self.tx.send(Some(Piece::Error(e)), true);
    }
}

/// How the response body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// Not at all (HEAD, 1xx, 204, 304, a tunnel's head).
    Nothing,
    /// As it comes: delimited by a Content-Length, or by the close.
    Raw,
    Chunked,
}

/// Writes a response: the head (with the first piece of the body when it is ready), then
/// the body with its framing.
async fn write_response<W: AsyncWrite + Unpin>(
    resp: Response<RespBody>,
    req: &ReqInfo,
    wr: &mut W,
    wbuf: &mut Vec<u8>,
) -> std::io::Result<Outcome> {
    let (mut parts, body) = resp.into_parts();
    let status = parts.status;
    let tunnel = status == StatusCode::SWITCHING_PROTOCOLS
        || (req.method == Method::CONNECT && status.is_success());
    let bodyless = req.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut close = !req.keep_alive;
    if let Some(v) = parts.headers.remove(header::CONNECTION) {
        close |= v
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
    }
    parts.headers.remove(header::TRANSFER_ENCODING);
    let (framing, out) = if tunnel || bodyless {
        (ResponseFraming::Raw, Out::Nothing)
    } else if parts.headers.contains_key(header::CONTENT_LENGTH) {
        (ResponseFraming::Raw, Out::Raw)
    } else if let Some(n) = body.size_hint().exact() {
        (ResponseFraming::Length(n), Out::Raw)
    } else if req.version == Version::HTTP_11 {
        (ResponseFraming::Chunked, Out::Chunked)
    } else {
        // An HTTP/1.0 client: the body runs until the close.
        close = true;
        (ResponseFraming::Raw, Out::Raw)
    };
    let conn_field = if status == StatusCode::SWITCHING_PROTOCOLS {
        ConnectionField::Upgrade
    } else if tunnel {
        ConnectionField::None
    } else {
        ConnectionField::for_response(req.version, !close)
    };
    // Trailer fields go to clients that asked, and only those the response announced.
    let announced: Vec<HeaderName> = if out == Out::Chunked && req.trailers {
        parts
            .headers
            .get_all(header::TRAILER)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .collect()
    } else {
        Vec::new()
    };
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes());
    wbuf.clear();
    super::encode_response_head(status, reason, &parts.headers, framing, conn_field, wbuf);
    drop(parts);

    let mut head_pending = true;
    let mut failed = false;
    // The body (with the request's guard) is let go as soon as it has given its last
    // frame, before that frame is written: the request ends (its server slot, counts and
    // log) when the response is complete, not when the client has read it, as on hyper.
    let mut body = Some(body);
    while let Some(b) = body.as_mut() {
        let frame = if head_pending {
            match b.frame().now_or_never() {
                Some(f) => f,
                None => {
                    write_all_v(wr, wbuf, &[], &[]).await?;
                    wr.flush().await?;
                    wbuf.clear();
                    head_pending = false;
                    b.frame().await
                }
            }
        } else {
            b.frame().await
        };
        let frame = match frame {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed");
                failed = true;
                break;
            }
        };
        if body.as_ref().is_some_and(Body::is_end_stream) {
            body = None;
        }
        let trailers = match frame.into_data() {
            Ok(d) => {
                if out == Out::Nothing || d.is_empty() {
                    continue;
                }
                if out == Out::Chunked {
                    super::encode_chunk_head(d.len(), wbuf);
                }
                let tail: &[u8] = if out == Out::Chunked { b"\r\n" } else { b"" };
                if d.len() <= COPY_MAX {
                    wbuf.extend_from_slice(&d);
                    wbuf.extend_from_slice(tail);
                    write_all_v(wr, wbuf, &[], &[]).await?;
                } else {
                    write_all_v(wr, wbuf, &d, tail).await?;
                }
                wr.flush().await?;
                wbuf.clear();
                head_pending = false;
                continue;
            }
            Err(f) => f.into_trailers().ok(),
        };
        if let Some(t) = trailers
            && out == Out::Chunked
        {
            let mut kept = HeaderMap::new();
            for (k, v) in &t {
                if announced.contains(k) {
                    kept.append(k.clone(), v.clone());
                }
            }
            crate::l7::upstream::codec::encode_last_chunk(Some(&kept), wbuf);
            drop(body);
            write_all_v(wr, wbuf, &[], &[]).await?;
            wr.flush().await?;
            wbuf.clear();
            return Ok(if close {
                Outcome::Close
            } else {
                Outcome::KeepAlive
            });
        }
    }
    // The request ends here at the latest (its guard counts and logs it).
    drop(body);
    if out == Out::Chunked && !failed {
        crate::l7::upstream::codec::encode_last_chunk(None, wbuf);
    }
    if !wbuf.is_empty() {
        write_all_v(wr, wbuf, &[], &[]).await?;
    }
    wr.flush().await?;
    wbuf.clear();
    Ok(if failed {
        Outcome::Close
    } else if tunnel {
        Outcome::Tunnel
    } else if close {
        Outcome::Close
    } else {
        Outcome::KeepAlive
    })
}

/// Writes all of `a`, `b` and `c`, in one `writev` when the socket takes it.
async fn write_all_v<W: AsyncWrite + Unpin>(
    wr: &mut W,
    a: &[u8],
    b: &[u8],
    c: &[u8],
) -> std::io::Result<()> {
    let mut slices = [IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)];
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = wr.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Where a tunnel gets the client's connection: from hyper (HTTP/2 and detected
/// connections) or from lb's HTTP/1 loop once the response head is out.
pub enum ClientUpgrade {
    Hyper(hyper::upgrade::OnUpgrade),
    H1(oneshot::Receiver<Upgraded>),
}

impl std::fmt::Debug for ClientUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientUpgrade").finish_non_exhaustive()
    }
}

impl ClientUpgrade {
    /// The upgrade of a request (taken out of its extensions).
    pub fn of(head: &mut http::request::Parts) -> Self {
        if let Some(rx) = head.extensions.get::<H1Upgrade>().and_then(H1Upgrade::take) {
            return ClientUpgrade::H1(rx);
        }
        let mut tmp = Request::new(());
        std::mem::swap(tmp.extensions_mut(), &mut head.extensions);
        let on = hyper::upgrade::on(&mut tmp);
        std::mem::swap(tmp.extensions_mut(), &mut head.extensions);
        ClientUpgrade::Hyper(on)
    }

    /// The client's stream once the response head is out, and what the client sent after
    /// its request head.
    pub async fn into_stream(self) -> Result<(Box<dyn ClientStream>, Bytes), String> {
        match self {
            ClientUpgrade::Hyper(on) => match on.await {
                Ok(u) => Ok((
                    Box::new(hyper_util::rt::TokioIo::new(u)) as Box<dyn ClientStream>,
                    Bytes::new(),
                )),
                Err(e) => Err(e.to_string()),
            },
            ClientUpgrade::H1(rx) => match rx.await {
                Ok(u) => Ok((u.io, u.early)),
                Err(_) => Err("the client connection ended".to_owned()),
            },
        }
    }
}
