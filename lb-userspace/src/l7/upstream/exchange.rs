//! One request and response on an upstream connection: the head and body written from the
//! request's task, the response head read (interim 1xx relayed to the client, or skipped
//! where it cannot take them), and the response body
//! read from the socket as the client consumes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{
    self, Chunk, ChunkedDecoder, CodecError, ReqFraming, RespFraming, ResponseHead,
};
use super::{CountersRef, Pool, UpConn, UpStream, reserve_read};
use crate::l7::h1::body::{ReqBody, ReqBodyError};
use crate::l7::h1::conn::Interim;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The request head could not be written: nothing reached the server, and the request
    /// (its body untouched) can go out again on another connection.
    #[error("sending the request head: {0}")]
    NotSent(std::io::Error),
    /// The server closed (or reset) the connection before any byte of a response.
    #[error("server closed the connection before responding")]
    Closed,
    #[error("server connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("server response: {0}")]
    Codec(#[from] CodecError),
    #[error("client request body: {0}")]
    ClientBody(ReqBodyError),
    /// `timeout client` passed while waiting for the next piece of the request body.
    #[error("client sent no request body data within timeout client")]
    ClientTimeout,
    /// `timeout server` passed while the server did not take the body or did not answer.
    #[error("server did not read the request body or answer within timeout server")]
    ServerTimeout,
}

/// The inactivity limits of an upload: `timeout client` on the client's body, `timeout
/// server` on writes to the server and then on its answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadTimeouts {
    pub client: Option<Duration>,
    pub server: Option<Duration>,
}

/// `fut`, failing with `err` when `limit` passes first.
async fn within<F: Future>(
    limit: Option<Duration>,
    fut: F,
    err: ExchangeError,
) -> Result<F::Output, ExchangeError> {
    match limit {
        Some(d) => tokio::time::timeout(d, fut).await.map_err(|_| err),
        None => Ok(fut.await),
    }
}

/// Sends the request whose head is encoded in `conn.wbuf` (then its body, framed as
/// `framing`) and reads the response head. A response that arrives before the body is
/// sent ends the upload; the connection is then not reused. Without a body the caller
/// applies `timeout server`; with one, `timeouts` apply here, per side (HAProxy: a slow
/// client is the client's timeout, a server not reading or answering the server's).
/// `interim`: where the server's interim responses go (HTTP/1 clients).
pub async fn send(
    conn: &mut UpConn,
    method: &Method,
    body: &mut Option<ReqBody>,
    framing: ReqFraming,
    counters: &CountersRef,
    timeouts: UploadTimeouts,
    interim: Option<&Interim>,
) -> Result<(ResponseHead, bool), ExchangeError> {
    // (The flush pushes out what TLS still holds; a no-op on plain TCP.)
    let head = async {
        conn.stream.write_all(&conn.wbuf).await?;
        conn.stream.flush().await
    };
    head.await.map_err(ExchangeError::NotSent)?;
    let Some(b) = body.take().filter(|_| framing != ReqFraming::Empty) else {
        let head = read_head(&mut conn.stream, &mut conn.rbuf, method, interim).await?;
        return Ok((head, true));
    };
    // Boxed: the upload's state only weighs on requests that have a body.
    let how = Upload {
        method,
        framing,
        counters,
        timeouts,
        interim,
    };
    Box::pin(upload_and_read(conn, b, how)).await
}

/// Consecutive chunks of a response body gathered into one frame at most.
const GATHER_MAX: usize = 64 * 1024;

/// Pending upload data below this size waits one more turn for more (and a piece of a
/// Content-Length body at least this large is written uncopied).
const COALESCE_SMALL: usize = 4 * 1024;
/// Upload data gathered into one write at most (then written, whatever else is ready).
const COALESCE_MAX: usize = 64 * 1024;

/// Sends the body while watching for the response head.
async fn upload_and_read(
    conn: &mut UpConn,
    b: ReqBody,
    how: Upload<'_>,
) -> Result<(ResponseHead, bool), ExchangeError> {
    let (wbuf, rbuf) = (&mut conn.wbuf, &mut conn.rbuf);
    match &mut conn.stream {
        UpStream::Tcp(s) => {
            let (rd, wr) = s.split();
            upload_and_read_on(rd, wr, rbuf, wbuf, b, how).await
        }
        UpStream::Tls(s) => {
            let (rd, wr) = tokio::io::split(&mut **s);
            upload_and_read_on(rd, wr, rbuf, wbuf, b, how).await
        }
    }
}

/// How an upload goes: the request's method and framing, counters, timeouts, and where
/// interim responses go.
struct Upload<'a> {
    method: &'a Method,
    framing: ReqFraming,
    counters: &'a CountersRef,
    timeouts: UploadTimeouts,
    interim: Option<&'a Interim>,
}

/// [`upload_and_read`] on the two halves of a connection.
async fn upload_and_read_on<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    rbuf: &mut bytes::BytesMut,
    wbuf: &mut Vec<u8>,
    mut b: ReqBody,
    how: Upload<'_>,
) -> Result<(ResponseHead, bool), ExchangeError> {
    let Upload {
        method,
        framing,
        counters,
        timeouts,
        interim,
    } = how;
    let mut upload = std::pin::pin!(async move {
        let mut trailers = None;
        let (client_t, server_t) = (timeouts.client, timeouts.server);
        let chunked = framing == ReqFraming::Chunked;
        let mut ended = false;
        while !ended {
            // The next piece of the body, within `timeout client`.
            let Some(frame) = within(client_t, b.frame(), ExchangeError::ClientTimeout).await?
            else {
                break;
            };
            // A large piece of a Content-Length body goes out as it is, uncopied.
            let mut whole: Option<Bytes> = None;
            if chunked {
                codec::start_chunk(wbuf);
            } else {
                wbuf.clear();
            }
            let base = wbuf.len();
            match frame.map_err(ExchangeError::ClientBody)?.into_data() {
                Ok(d) if !chunked && d.len() >= COALESCE_SMALL => whole = Some(d),
                Ok(d) => wbuf.extend_from_slice(&d),
                Err(f) => {
                    trailers = f.into_trailers().ok();
                    ended = true;
                }
            }
            // Then whatever else is ready, into the same write (and the same chunk): hyper
            // hands over one chunk of the client's per turn of its connection loop, and a
            // write per chunk would cost a system call per chunk (a million 1-byte chunks:
            // a million writes). One more turn is given while the pending data is small.
            let mut yielded = false;
            while whole.is_none() && !ended && wbuf.len() - base < COALESCE_MAX {
                let small = wbuf.len() - base < COALESCE_SMALL;
                let next = std::future::poll_fn(|cx| match Pin::new(&mut b).poll_frame(cx) {
                    Poll::Ready(f) => Poll::Ready(Some(f)),
                    Poll::Pending if !yielded && small => {
                        yielded = true;
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Poll::Pending => Poll::Ready(None),
                })
                .await;
                match next {
                    None => break,
                    Some(None) => ended = true,
                    Some(Some(f)) => {
                        yielded = false;
                        match f.map_err(ExchangeError::ClientBody)?.into_data() {
                            Ok(d) => wbuf.extend_from_slice(&d),
                            Err(f) => {
                                trailers = f.into_trailers().ok();
                                ended = true;
                            }
                        }
                    }
                }
            }
            // Counted once per write, not per piece.
            let got = whole.as_ref().map_or(wbuf.len() - base, |d| d.len());
            counters.add_in(got as u64);
            let start = if chunked {
                let start = codec::finish_chunk(wbuf);
                if ended {
                    codec::encode_last_chunk(trailers.as_ref(), wbuf);
                }
                start
            } else {
                0
            };
            let out: &[u8] = match &whole {
                Some(d) => d,
                None => &wbuf[start..],
            };
            if out.is_empty() {
                continue;
            }
            let write = async {
                wr.write_all(out).await?;
                wr.flush().await
            };
            within(server_t, write, ExchangeError::ServerTimeout).await??;
        }
        if !ended && chunked {
            wbuf.clear();
            codec::encode_last_chunk(trailers.as_ref(), wbuf);
            let write = async {
                wr.write_all(wbuf).await?;
                wr.flush().await
            };
            within(server_t, write, ExchangeError::ServerTimeout).await??;
        }
        Ok::<(), ExchangeError>(())
    });
    let mut response = std::pin::pin!(read_head(&mut rd, rbuf, method, interim));
    let mut uploading = true;
    let mut uploaded = false;
    // `timeout server` on the answer, from the end of the upload.
    let mut answer_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = response.as_mut().poll(cx) {
            // Early (e.g. 413) or after the body: either way the exchange is decided.
            return Poll::Ready(r.map(|h| (h, uploaded)));
        }
        if uploading && let Poll::Ready(r) = upload.as_mut().poll(cx) {
            uploading = false;
            match r {
                Ok(()) => uploaded = true,
                // The client's body failed or stalled: the server got a truncated request.
                Err(e @ (ExchangeError::ClientBody(_) | ExchangeError::ClientTimeout)) => {
                    return Poll::Ready(Err(e));
                }
                // The server stopped reading: its response may still come.
                Err(e) => tracing::debug!(error = %e, "request body not fully sent"),
            }
            answer_timer = timeouts.server.map(|d| Box::pin(tokio::time::sleep(d)));
        }
        if let Some(t) = answer_timer.as_mut()
            && t.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(ExchangeError::ServerTimeout));
        }
        Poll::Pending
    })
    .await
}

/// Reads until a final response head is parsed; bytes after it stay in `rbuf`. Interim
/// responses before it (1xx but 101) go to `interim`, as HAProxy forwards them.
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut bytes::BytesMut,
    method: &Method,
    interim: Option<&Interim>,
) -> Result<ResponseHead, ExchangeError> {
    let mut received = false;
    loop {
        if !rbuf.is_empty() {
            received = true;
            if let Some(head) = codec::parse_response_head(rbuf, method)? {
                if head.is_interim() {
                    if let Some(i) = interim {
                        i.relay(head.status, head.headers).await;
                    }
                    continue;
                }
                if head.framing == codec::RespFraming::Chunked {
                    codec::check_first_chunk(rbuf)?;
                }
                return Ok(head);
            }
        }
        reserve_read(rbuf);
        match rd.read_buf(rbuf).await {
            Ok(0) if !received => return Err(ExchangeError::Closed),
            Ok(0) => {
                return Err(ExchangeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(_) => {}
            Err(e)
                if !received
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Err(ExchangeError::Closed);
            }
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
}

#[derive(Debug)]
enum State {
    /// Bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until EOF.
    Close,
    Done,
}

/// A response body read straight from the server connection. When the last byte has been
/// read the connection goes back to `pool` (if the response allows keep-alive), before
/// the client side has even written it out.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<UpConn>,
    state: State,
    /// Decoded ahead of time to see whether the body ends with it.
    pending: Option<Bytes>,
    /// Trailer fields of a chunked body, handed out after the data (boxed: rare, and the
    /// body sits in every response).
    trailers: Option<Box<HeaderMap>>,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl ResponseBody {
    /// The body framed as `framing`, read from `conn`; `keep_alive`: the response lets the
    /// connection carry another request; `reusable`: the request went out whole.
    pub fn new(
        conn: UpConn,
        framing: RespFraming,
        keep_alive: bool,
        reusable: bool,
        pool: Arc<Pool>,
    ) -> Self {
        let state = match framing {
            RespFraming::Length(n) => State::Length(n),
            RespFraming::Chunked => State::Chunked(ChunkedDecoder::default()),
            RespFraming::Close => State::Close,
        };
        let mut b = Self {
            conn: Some(conn),
            state,
            pending: None,
            trailers: None,
            keep_alive: keep_alive && reusable,
            pool,
        };
        if matches!(b.state, State::Length(0)) {
            b.finish();
        }
        b
    }

    /// The body has been read entirely.
    pub fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && self.pending.is_none() && self.trailers.is_none()
    }

    /// Bytes still to come, when the server said.
    pub fn exact_len(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(self.pending.as_ref().map_or(0, |p| p.len() as u64)),
            _ => None,
        }
    }

    /// Ends the body without pooling the connection (closed; after a timeout, an error or a
    /// close-delimited body).
    pub fn abort(&mut self) {
        self.conn = None;
        self.state = State::Done;
        self.pending = None;
        self.trailers = None;
    }

    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(c) = self.conn.take()
            && self.keep_alive
        {
            self.pool.put(c);
        }
    }

    /// The next piece of the body (data, then the trailers of a chunked body if the server
    /// sent any); `None` once complete.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        if let Some(p) = self.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if matches!(self.state, State::Done) {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let n = (conn.rbuf.len() as u64).min(*left);
                        let data = conn.rbuf.split_to(n as usize).freeze();
                        *left -= n;
                        if *left == 0 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(dec) => {
                    // Decode as far as the buffer goes: the end is looked for behind the
                    // data, so the body ends (and the connection is pooled) with its last
                    // data; trailer lines are collected for the last frame.
                    // Small chunks in a row go out as one frame (copied together): a frame
                    // per chunk costs the client side a frame's work for each.
                    let mut data: Option<Bytes> = None;
                    let mut gathered: Option<bytes::BytesMut> = None;
                    let mut ended = false;
                    loop {
                        match dec.decode(&mut conn.rbuf) {
                            Ok(Chunk::Data(d)) => {
                                let have = data.as_ref().map_or(0, |x| x.len())
                                    + gathered.as_ref().map_or(0, |g| g.len());
                                if have == 0 {
                                    data = Some(d);
                                } else if have + d.len() <= GATHER_MAX {
                                    let g = gathered.get_or_insert_with(|| {
                                        let mut g = bytes::BytesMut::with_capacity(
                                            (have + d.len() + conn.rbuf.len()).min(GATHER_MAX),
                                        );
                                        if let Some(first) = data.take() {
                                            g.extend_from_slice(&first);
                                        }
                                        g
                                    });
                                    g.extend_from_slice(&d);
                                } else {
                                    self.pending = Some(d);
                                    break;
                                }
                            }
                            Ok(Chunk::Trailer(line)) => {
                                codec::add_trailer(&line, self.trailers.get_or_insert_default())
                            }
                            Ok(Chunk::End) => {
                                ended = true;
                                break;
                            }
                            Ok(Chunk::NeedMore) => break,
                            Err(e) => {
                                self.abort();
                                return Poll::Ready(Some(Err(e.into())));
                            }
                        }
                    }
                    if ended {
                        self.finish();
                    }
                    if let Some(g) = gathered {
                        return Poll::Ready(Some(Ok(Frame::data(g.freeze()))));
                    }
                    if let Some(d) = data {
                        return Poll::Ready(Some(Ok(Frame::data(d))));
                    }
                    if ended {
                        return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))));
                    }
                }
                State::Close => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // Need more bytes from the server.
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            reserve_read(&mut conn.rbuf);
            let read = ready!(poll_read_buf(conn, cx));
            if matches!(read, Ok(n) if n > 0) {
                continue;
            }
            // EOF ends a close-delimited body; anywhere else it, or an error, truncates it.
            let close_delimited = matches!(self.state, State::Close);
            self.abort();
            return match read {
                Ok(_) if close_delimited => Poll::Ready(None),
                Ok(_) => Poll::Ready(Some(Err(ExchangeError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                )))),
                Err(e) => Poll::Ready(Some(Err(ExchangeError::Io(e)))),
            };
        }
    }
}

/// One read into the connection's buffer.
fn poll_read_buf(conn: &mut UpConn, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    conn.stream.poll_read_buf(cx, &mut conn.rbuf)
}
