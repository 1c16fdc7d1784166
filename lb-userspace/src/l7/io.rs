//! The client connection's I/O wrapper: `timeout http-request` (a client that does not
//! finish sending its request headers in time gets HAProxy's 408, or the frontend's
//! `errorfile 408` as is, and the connection is closed, which stops slowloris) and `timeout client` / `timeout http-keep-alive`
//! (an idle connection is closed). The request handler tells it when a request head has
//! been received and when a response has finished, through [`ConnShared`]. It also swaps
//! hyper's own bare answers to a head it rejects (400, 431, 414) for the frontend's 400.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::l7::upstream::IdleLimit;

/// Errors of this module (none escape: timeouts end the stream).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("client timeout")]
    Timeout,
}

/// The responses a client connection writes itself, each a complete HTTP/1 response after
/// which the connection closes: the frontend's `errorfile` as is, else HAProxy's built-in
/// page ([`crate::l7::runtime::ErrorPages::conn_pages`]).
#[derive(Debug, Clone, Default)]
pub struct ConnPages {
    /// For a request head hyper rejects: unparseable, over its buffer or header count, or
    /// a URI too long (HAProxy answers all of these 400; hyper's own bare 400, 431 and 414
    /// are replaced).
    pub bad_request: Bytes,
    /// For `timeout http-request`.
    pub timeout: Bytes,
}

/// The start of the answers hyper's HTTP/1 server writes by itself when it rejects a
/// request head (no request reached lb; an empty body; the connection closes after it).
const HYPER_ERRORS: [&[u8]; 3] = [
    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n",
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n",
    b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n",
];

/// State shared between the I/O wrapper and the request handler of one connection.
#[derive(Debug)]
pub struct ConnShared {
    /// Request heads received so far.
    pub heads: AtomicU64,
    /// Requests whose response has not finished yet.
    pub in_flight: AtomicUsize,
    /// When the last response finished (nanoseconds since `base`): where the idle
    /// and next-head timers start. The reader is not woken for it (that cost a poll of
    /// the whole connection per request): while busy, its timer checks back after the
    /// shortest of those timers, which cannot be later than either deadline.
    pub done_at: AtomicU64,
    /// A write to the client stalled longer than `timeout client` and the connection was
    /// ended (the access log says `cD`, as HAProxy).
    pub write_timed_out: std::sync::atomic::AtomicBool,
    /// The connection became a tunnel: `timeout tunnel` governs it (in the tunnel copy),
    /// not `timeout client`.
    pub tunnel: std::sync::atomic::AtomicBool,
    /// The client speaks HTTP/2.
    pub h2: std::sync::atomic::AtomicBool,
    /// HTTP/2: response bodies that handed data to the stream (or have a head out and no
    /// data asked for yet) and wait for hyper to ask for more, which it does once the
    /// client's flow-control window has room.
    pub h2_waiting: AtomicUsize,
    /// HTTP/2: when a response body was last asked for data (nanoseconds since `base`).
    h2_progress: AtomicU64,
    base: Instant,
}

impl Default for ConnShared {
    fn default() -> Self {
        Self {
            heads: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            done_at: AtomicU64::new(0),
            write_timed_out: Default::default(),
            tunnel: Default::default(),
            h2: Default::default(),
            h2_waiting: AtomicUsize::new(0),
            h2_progress: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl ConnShared {
    /// A request finished. Only the last one in flight reads the clock (a connection's
    /// requests all run on its worker thread, so none starts or ends in between).
    pub fn request_done(&self) {
        if self.in_flight.load(Ordering::Acquire) == 1 {
            let since = Instant::now().saturating_duration_since(self.base);
            let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
            self.done_at.fetch_max(nanos, Ordering::AcqRel);
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// HTTP/2: a response body was asked for data just now.
    pub fn h2_progress(&self) {
        let since = Instant::now().saturating_duration_since(self.base);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.h2_progress.store(nanos, Ordering::Relaxed);
    }

    /// HTTP/2: whether response bodies wait on the client and none has been asked for
    /// data within `limit` (a zero window the client never opens).
    fn h2_stalled(&self, limit: Duration, now: Instant) -> bool {
        self.h2_waiting.load(Ordering::Relaxed) > 0
            && self.base + Duration::from_nanos(self.h2_progress.load(Ordering::Relaxed)) + limit
                <= now
    }

    /// When the last response finished.
    fn done_at(&self) -> Instant {
        self.base + Duration::from_nanos(self.done_at.load(Ordering::Acquire))
    }
}

/// Timeouts applied by [`ClientIo`].
#[derive(Debug, Clone, Copy, Default)]
pub struct IoTimeouts {
    pub http_request: Option<Duration>,
    pub keep_alive: Option<Duration>,
    pub client: Option<Duration>,
}

#[derive(Debug, PartialEq, Eq)]
enum HeadState {
    /// Waiting for the first request head (408 on timeout, even with no data); bytes
    /// received so far.
    First { got: u64 },
    /// Waiting for a later head; bytes received so far.
    Next { got: u64 },
    /// A request is being served.
    Busy,
}

/// Wraps the client stream (plain TCP or TLS).
pub struct ClientIo<T> {
    inner: T,
    shared: std::sync::Arc<ConnShared>,
    t: IoTimeouts,
    /// HTTP/1 head timing enforced by us (off for h2, which has its own framing).
    http1: bool,
    sniffed: bool,
    head: HeadState,
    heads_seen: u64,
    head_deadline: Option<Instant>,
    last_activity: Instant,
    /// While a request is in flight: when to look at the state again (see
    /// [`ConnShared::done_at`]).
    busy_check: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// The deadline the timer was last polled for and found pending: polling it again
    /// for the same deadline is skipped (the connection is always polled by one task,
    /// whose waker the timer keeps).
    armed_for: Option<Instant>,
    pages: ConnPages,
    /// A page of `pages` being written, and how much of it is.
    writing: Option<(Bytes, usize)>,
    /// hyper's own error answer was replaced: what hyper writes after it is dropped.
    replaced: bool,
    /// HTTP/1, between requests: the request line of the next head has not ended yet (its
    /// target is checked for a fragment, which hyper would drop silently).
    line_open: bool,
    /// `timeout client` on writes: a client that does not read (a full socket buffer, on
    /// HTTP/1, HTTP/2 or TLS alike) is cut off once a write has waited that long.
    write_idle: IdleLimit,
    /// Bytes came while a request was served: the next head may have begun then, so its
    /// request line is not known to start at the next read.
    read_while_busy: bool,
    closed: bool,
}

impl<T> std::fmt::Debug for ClientIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIo")
            .field("head", &self.head)
            .finish()
    }
}

impl<T> ClientIo<T> {
    pub fn new(
        inner: T,
        shared: std::sync::Arc<ConnShared>,
        t: IoTimeouts,
        http1: bool,
        pages: ConnPages,
    ) -> Self {
        let now = Instant::now();
        if !http1 {
            shared.h2.store(true, Ordering::Relaxed);
        }
        let head_deadline = t.http_request.map(|d| now + d);
        let first = head_deadline.or(t.client.map(|d| now + d)).unwrap_or(now);
        Self {
            inner,
            shared,
            t,
            http1,
            sniffed: !http1,
            head: HeadState::First { got: 0 },
            heads_seen: 0,
            head_deadline,
            last_activity: now,
            busy_check: None,
            armed_for: None,
            timer: Box::pin(tokio::time::sleep_until(first)),
            pages,
            writing: None,
            replaced: false,
            line_open: http1,
            write_idle: IdleLimit::new(t.client),
            read_while_busy: false,
            closed: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Whether a request is being served.
    fn busy(&self) -> bool {
        self.head == HeadState::Busy || self.shared.in_flight.load(Ordering::Acquire) != 0
    }

    /// While busy, how long after the last activity to look at the state again: the
    /// shortest timer that starts when the response finishes.
    fn recheck_after(&self) -> Option<Duration> {
        let idle = self.t.keep_alive.or(self.t.client);
        let head = if self.http1 {
            self.t.http_request
        } else {
            None
        };
        match (idle, head) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest deadline that currently applies (while busy: the check-back time).
    fn deadline(&self) -> Option<Instant> {
        let idle = if self.shared.in_flight.load(Ordering::Acquire) == 0 {
            let idle_t = match self.head {
                HeadState::Next { .. } => self.t.keep_alive.or(self.t.client),
                _ => self.t.client,
            };
            idle_t.map(|d| self.last_activity + d)
        } else {
            self.busy_check
        };
        let head = if self.http1 && self.head != HeadState::Busy {
            self.head_deadline
        } else {
            None
        };
        match (idle, head) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn sync_head_state(&mut self) {
        let heads = self.shared.heads.load(Ordering::Acquire);
        if heads != self.heads_seen {
            self.heads_seen = heads;
            self.head = HeadState::Busy;
            self.head_deadline = None;
        }
        if self.head == HeadState::Busy && self.shared.in_flight.load(Ordering::Acquire) == 0 {
            self.head = HeadState::Next { got: 0 };
            self.line_open = self.http1 && !self.read_while_busy;
            self.read_while_busy = false;
            let done = self.shared.done_at();
            self.last_activity = done;
            self.head_deadline = self.t.http_request.map(|d| done + d);
            self.busy_check = None;
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> ClientIo<T> {
    /// Writes the page being written, if any; Ready when done (or failed).
    fn poll_write_page(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some((page, off)) = &mut self.writing {
            let Some(rest) = page.get(*off..).filter(|r| !r.is_empty()) else {
                self.writing = None;
                break;
            };
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(n)) if n > 0 => *off += n,
                Poll::Ready(_) => self.writing = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
        Poll::Ready(())
    }

    /// Whether `data`, written by hyper, is its own answer to a request head it could not
    /// parse; if so, the frontend's page for that code is written in its place. Only
    /// HTTP/1, only while no request is being served.
    fn replace_hyper_error(&mut self, data: &[u8]) -> bool {
        if !self.http1 || self.busy() {
            return false;
        }
        if !HYPER_ERRORS.iter().any(|e| data.starts_with(e)) {
            return false;
        }
        self.writing = Some((self.pages.bad_request.clone(), 0));
        self.replaced = true;
        true
    }

    /// Bytes of a request head received while no request is served (HTTP/1).
    fn partial_head(&self) -> u64 {
        match self.head {
            HeadState::First { got } | HeadState::Next { got } => got,
            HeadState::Busy => 0,
        }
    }

    /// Ends the connection with the 400 page, as HAProxy answers a request it cannot
    /// parse: what hyper got so far is taken back (`buf` cut to `keep`), hyper sees the
    /// end of the stream at a message boundary and closes quietly after the page.
    fn refuse(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        keep: usize,
    ) -> Poll<io::Result<()>> {
        buf.set_filled(keep);
        self.writing = Some((self.pages.bad_request.clone(), 0));
        self.closed = true;
        if self.poll_write_page(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// After a write to the client made progress (`n > 0`) or had to wait: whether it has
    /// waited past `timeout client`, which ends the connection (both sides: dropping the
    /// response drops the server connection).
    fn write_expired(&mut self, cx: &mut Context<'_>, progress: Poll<usize>) -> bool {
        match progress {
            Poll::Ready(n) if n > 0 => {
                self.write_idle.reset();
                false
            }
            Poll::Ready(_) => false,
            Poll::Pending => {
                if self.shared.tunnel.load(Ordering::Relaxed) || !self.write_idle.poll_expired(cx) {
                    return false;
                }
                self.shared.write_timed_out.store(true, Ordering::Relaxed);
                self.closed = true;
                true
            }
        }
    }

    /// Checks the timers; Ready(()) means the connection must end now.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.busy_check.is_none() && self.busy() {
            // The request head arrived at the last activity, and the response cannot
            // finish before it: the check-back time is not later than any deadline.
            self.busy_check = self.recheck_after().map(|d| self.last_activity + d);
        }
        loop {
            let Some(deadline) = self.deadline() else {
                return Poll::Pending;
            };
            if self.armed_for == Some(deadline) && !self.timer.is_elapsed() {
                return Poll::Pending;
            }
            // Lazy timer: only move it earlier; a late deadline is re-checked when it fires.
            if deadline < self.timer.deadline() || self.timer.is_elapsed() {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                self.armed_for = Some(deadline);
                return Poll::Pending;
            }
            self.armed_for = None;
            // Fired: is it really past the (possibly moved) deadline?
            let now = Instant::now();
            if self.busy() {
                // HTTP/2 streams held by a window the client keeps shut: as a write the
                // client does not take, `timeout client` ends the connection.
                if !self.http1
                    && let Some(limit) = self.t.client
                    && self.shared.h2_stalled(limit, now)
                {
                    self.shared.write_timed_out.store(true, Ordering::Relaxed);
                    self.closed = true;
                    return Poll::Ready(());
                }
                // Only the check-back time: still serving, look again later.
                self.busy_check = self.recheck_after().map(|d| now + d);
                continue;
            }
            if self.deadline().is_some_and(|d| d <= now) {
                let head_expired = self.http1
                    && self.head != HeadState::Busy
                    && self.head_deadline.is_some_and(|d| d <= now);
                let send_408 = head_expired
                    && match self.head {
                        HeadState::First { .. } => true,
                        HeadState::Next { got } => got > 0,
                        HeadState::Busy => false,
                    };
                if send_408 {
                    self.writing = Some((self.pages.timeout.clone(), 0));
                }
                self.closed = true;
                return Poll::Ready(());
            }
        }
    }
}

/// Scans `data`, the next bytes of a request head, for a `#` in its request line; clears
/// `line_open` once the line has ended (empty lines before it, which HAProxy skips, do not
/// end it).
fn request_line_has_fragment(data: &[u8], line_open: &mut bool) -> bool {
    let mut rest = data;
    loop {
        let (line, more) = match rest.iter().position(|&c| c == b'\n') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if line.contains(&b'#') {
            return true;
        }
        match more {
            None => return false,
            // A bare CRLF: still before the request line.
            Some(m) if line.is_empty() || line == b"\r" => rest = m,
            Some(_) => {
                *line_open = false;
                return false;
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            if this.poll_write_page(cx).is_pending() {
                return Poll::Pending;
            }
            return Poll::Ready(Ok(()));
        }
        this.sync_head_state();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    // Activity only counts while no request is in flight (the idle timers
                    // restart from the end of the last response anyway).
                    if this.shared.in_flight.load(Ordering::Acquire) == 0 {
                        this.last_activity = Instant::now();
                    }
                    if !this.sniffed {
                        this.sniffed = true;
                        if buf.filled()[before..].starts_with(b"PRI * HTTP/2") {
                            this.http1 = false;
                            this.shared.h2.store(true, Ordering::Relaxed);
                        }
                    }
                    match &mut this.head {
                        HeadState::First { got } | HeadState::Next { got } => *got += n as u64,
                        HeadState::Busy => this.read_while_busy = true,
                    }
                    if this.line_open
                        && this.http1
                        && !this.busy()
                        && request_line_has_fragment(&buf.filled()[before..], &mut this.line_open)
                    {
                        // HAProxy: 400 for a `#` in the target (RFC 9112 has none there).
                        return this.refuse(cx, buf, before);
                    }
                } else if this.http1 && !this.busy() && this.partial_head() > 0 {
                    // The client ended (or half-closed) inside a request head: HAProxy
                    // answers 400 rather than closing silently.
                    return this.refuse(cx, buf, before);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.poll_timers(cx).is_ready() {
                    if this.poll_write_page(cx).is_pending() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

/// How much a write did, for [`ClientIo::write_expired`] (an error ends the write anyway).
fn written(r: &Poll<io::Result<usize>>) -> Poll<usize> {
    match r {
        Poll::Ready(Ok(n)) => Poll::Ready(*n),
        Poll::Ready(Err(_)) => Poll::Ready(0),
        Poll::Pending => Poll::Pending,
    }
}

fn write_timeout() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, IoError::Timeout)
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(write_timeout()));
        }
        if this.replaced || this.replace_hyper_error(data) {
            // hyper's bytes are taken as written; the page goes out on flush.
            let _ = this.poll_write_page(cx);
            return Poll::Ready(Ok(data.len()));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if this.write_expired(cx, written(&r)) {
            return Poll::Ready(Err(write_timeout()));
        }
        if let Poll::Ready(Ok(n)) = r
            && n > 0
            && this.shared.in_flight.load(Ordering::Acquire) == 0
        {
            this.last_activity = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(write_timeout()));
        }
        if this.replaced || bufs.first().is_some_and(|b| this.replace_hyper_error(b)) {
            let _ = this.poll_write_page(cx);
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if this.write_expired(cx, written(&r)) {
            return Poll::Ready(Err(write_timeout()));
        }
        if let Poll::Ready(Ok(n)) = r
            && n > 0
            && this.shared.in_flight.load(Ordering::Acquire) == 0
        {
            this.last_activity = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_write_page(cx).is_pending() {
            return Poll::Pending;
        }
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        // (A TLS stream flushes its buffered records here.)
        let progress = match &r {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(0),
        };
        if this.write_expired(cx, progress) {
            return Poll::Ready(Err(write_timeout()));
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_write_page(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
