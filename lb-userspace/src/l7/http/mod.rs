//! The `mode http` request path, as named stages:
//!
//! 1. [`prepare`]: limits, the `http-request` rules of the frontend, `use_backend`, the
//!    backend's rules; lb's own answers (denies, redirects, `return`) stop here.
//! 2. [`forward`]: pick a server (cookie persistence first), admit the request under the
//!    server's `maxconn` (its FIFO queue), and retry connect failures per `retries`.
//! 3. exchange: one attempt on the server's protocol, HTTP/1.1 ([`h1`]) or HTTP/2
//!    ([`h2`]); it fails with a typed [`forward::Failure`] that knows whether it may be
//!    retried.
//! 4. [`respond`]: `http-response` rules, the persistence cookie, the body relay or a
//!    tunnel (upgrades, `CONNECT`), counters and the access log.
//!
//! [`rules`] evaluates rule lists ([`rules::Flow`]); `http-after-response` wraps the whole.

pub(crate) mod filter;
mod forward;
mod h1;
mod h2;
mod prepare;
mod respond;
mod rules;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::acl::{AclInput, SampleValue, Scope, StkData};
use crate::l7::h1::body::ReqBody;
use crate::l7::io::ConnShared;
use crate::l7::log::{self, LogRecord};
use crate::l7::runtime::{BackendRt, Canned, FrontendRt, ResponseRule, ServerRt};
use crate::l7::tls::TlsInfo;
use crate::l7::upstream::{CountersRef, ExchangeError, IdleLimit, ResponseBody};
use crate::stick::{Event, StickTable, Tracked};
use rules::{ResponseEdit, RuleCtx};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("response body: {0}")]
    Body(#[from] ExchangeError),
    #[error("HTTP/2 response body: {0}")]
    Body2(hyper::Error),
    #[error("server timeout while reading the response body")]
    ServerTimeout,
    #[error("the server's sessions were shut down (shutdown sessions)")]
    Shutdown,
    #[error(transparent)]
    Filter(#[from] filter::FilterError),
}

static NOSRV: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("<NOSRV>"));

/// What a connection's requests share.
#[derive(Debug)]
pub struct ConnCtx {
    pub frontend: Arc<arc_swap::ArcSwap<FrontendRt>>,
    pub src: SocketAddr,
    /// The local address the client connected to (`dst`).
    pub local: SocketAddr,
    pub tls: Option<TlsInfo>,
    pub shared: Arc<ConnShared>,
    /// The `timeout server` timer, kept from one request to the next (see
    /// [`with_server_timeout`]).
    pub server_timer: std::sync::Mutex<Option<Pin<Box<Sleep>>>>,
    /// `sess.*` variables.
    pub sess_vars: std::sync::Mutex<HashMap<Box<str>, SampleValue>>,
}

/// Runs `fut` for at most `d` (`timeout server` while waiting for the response head);
/// `None`: timed out. The connection's timer is reused from one request to the next: moving
/// a registered timer's deadline later is one atomic update, where a fresh timer per
/// request is inserted into and removed from the timer wheel under its lock. A concurrent
/// h2 stream that finds it taken uses its own.
async fn with_server_timeout<F: Future>(ctx: &ConnCtx, fut: F, d: Duration) -> Option<F::Output> {
    let deadline = Instant::now() + d;
    let reused = match ctx.server_timer.lock() {
        Ok(mut t) => t.take(),
        Err(_) => None,
    };
    let mut timer = match reused {
        Some(mut t) => {
            t.as_mut().reset(deadline);
            t
        }
        None => Box::pin(tokio::time::sleep_until(deadline)),
    };
    let mut fut = std::pin::pin!(fut);
    // The future first, like `tokio::time::timeout`.
    let r = std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    if let Ok(mut t) = ctx.server_timer.lock() {
        *t = Some(timer);
    }
    r
}

/// The request as ACLs see it; for `http-response` rules, with the response's status and
/// headers (`status`, `res.hdr`).
struct ReqInput<'a> {
    head: &'a http::request::Parts,
    ctx: &'a ConnCtx,
    fe: &'a FrontendRt,
    res: Option<(StatusCode, &'a HeaderMap)>,
    /// The stick table of the section whose rules run (`src_*` without a table).
    own_table: Option<&'a Arc<StickTable>>,
}

impl<'a> ReqInput<'a> {
    fn request(head: &'a http::request::Parts, ctx: &'a ConnCtx, fe: &'a FrontendRt) -> Self {
        Self {
            head,
            ctx,
            fe,
            res: None,
            own_table: fe.table.as_ref(),
        }
    }

    fn track(&self) -> Option<&Track> {
        self.head.extensions.get::<Track>()
    }
}

/// A request's `txn.*`, `req.*` and `res.*` variables, in its extensions.
#[derive(Debug, Clone, Default)]
pub(super) struct TxnVars(pub HashMap<(Scope, Box<str>), SampleValue>);

impl crate::acl::Vars for ReqInput<'_> {
    fn get(&self, scope: Scope, name: &str) -> Option<SampleValue> {
        match scope {
            Scope::Proc => self.fe.proc_vars.lock().ok()?.get(name).cloned(),
            Scope::Sess => self.ctx.sess_vars.lock().ok()?.get(name).cloned(),
            Scope::Txn | Scope::Req | Scope::Res => self
                .head
                .extensions
                .get::<TxnVars>()?
                .0
                .get(&(scope, Box::from(name)))
                .cloned(),
        }
    }
}

/// The stick-table entries a request tracks (`track-sc0` … `track-sc2`), kept in the
/// request's extensions while rules run, then in its [`Guard`] until the response ends.
#[derive(Debug, Clone, Default)]
pub(super) struct Track(pub [Option<Arc<Tracked>>; crate::acl::TRACK_SLOTS]);

impl Track {
    /// Every tracked entry.
    fn each(&self) -> impl Iterator<Item = &Arc<Tracked>> {
        self.0.iter().flatten()
    }
}

impl crate::acl::StickCounters for ReqInput<'_> {
    fn sc(&self, slot: usize, table: Option<&str>, data: StkData) -> Option<i64> {
        let t = self.track()?.0.get(slot)?.as_ref()?;
        match table {
            None => t.read(data),
            Some(name) => self
                .fe
                .tables
                .get(name)?
                .read_key(Some(t.entry.key()), data),
        }
    }
    fn sc_tracked(&self, slot: usize, _table: Option<&str>) -> bool {
        self.track()
            .and_then(|t| t.0.get(slot))
            .is_some_and(Option::is_some)
    }
    fn src(&self, src: IpAddr, table: Option<&str>, data: StkData) -> Option<i64> {
        let t = match table {
            Some(name) => self.fe.tables.get(name)?,
            None => self.own_table?,
        };
        let key = t.key_of(&crate::acl::SampleValue::Ip(src));
        t.read_key(key.as_ref(), data)
    }
    fn table_usage(&self, table: Option<&str>) -> Option<(u64, u64)> {
        let t = match table {
            Some(name) => self.fe.tables.get(name)?,
            None => self.own_table?,
        };
        Some((t.used() as u64, t.spec.size as u64))
    }
}

/// Calls `f` on each comma-separated value of header `name` (HAProxy's `hdr()` split).
fn any_header_value(headers: &HeaderMap, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
    for v in headers.get_all(name) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(',') {
            if f(part.trim()) {
                return true;
            }
        }
    }
    false
}

impl AclInput for ReqInput<'_> {
    fn path(&self) -> &str {
        self.head.uri.path()
    }
    fn url(&self) -> &str {
        self.head
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    }
    fn method(&self) -> &str {
        self.head.method.as_str()
    }
    fn any_header(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        any_header_value(&self.head.headers, name, f)
    }
    fn src(&self) -> IpAddr {
        self.ctx.src.ip()
    }
    fn ssl_fc(&self) -> bool {
        self.ctx.tls.is_some()
    }
    fn ssl_fc_sni(&self) -> Option<&str> {
        self.ctx.tls.as_ref().and_then(|t| t.sni.as_deref())
    }
    fn ssl_c(&self) -> Option<&crate::acl::ClientCert> {
        self.ctx.tls.as_ref().and_then(|t| t.client_cert.as_deref())
    }
    fn req_ssl_sni(&self) -> Option<&str> {
        None
    }
    fn nbsrv(&self, backend: &str) -> u32 {
        self.fe.backends.get(backend).map_or(0, |b| b.nbsrv())
    }
    fn http_version(&self) -> Option<&str> {
        Some(match self.head.version {
            Version::HTTP_09 => "0.9",
            Version::HTTP_10 => "1.0",
            Version::HTTP_11 => "1.1",
            Version::HTTP_2 => "2.0",
            Version::HTTP_3 => "3.0",
            _ => return None,
        })
    }
    fn dst(&self) -> Option<SocketAddr> {
        Some(self.ctx.local)
    }
    fn src_port(&self) -> Option<u16> {
        Some(self.ctx.src.port())
    }
    fn status(&self) -> Option<u16> {
        self.res.map(|(s, _)| s.as_u16())
    }
    fn any_response_header(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.res.is_some_and(|(_, h)| any_header_value(h, name, f))
    }
    fn stick(&self) -> Option<&dyn crate::acl::StickCounters> {
        Some(self)
    }
    fn vars(&self) -> Option<&dyn crate::acl::Vars> {
        Some(self)
    }
    fn cache_hit(&self) -> Option<&str> {
        self.head
            .extensions
            .get::<crate::l7::cache::HitMark>()
            .map(|m| &*m.0)
    }
}

/// Tracks one request until its response finishes (or it is abandoned): in-flight counts,
/// the server's active connections, the `maxconn` slot, and the access log.
pub struct Guard {
    ctx: Arc<ConnCtx>,
    fe: Arc<FrontendRt>,
    be: Option<Arc<BackendRt>>,
    srv: Option<Arc<ServerRt>>,
    permit: Option<OwnedSemaphorePermit>,
    log: Option<Box<LogRecord>>,
    bytes: u64,
    /// The stick-table entries the request tracks, and the bytes the client sent
    /// (counted into them when the request ends).
    track: Option<Track>,
    bytes_in: u64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Guard {
    fn new(ctx: Arc<ConnCtx>, fe: Arc<FrontendRt>) -> Self {
        ctx.shared.heads.fetch_add(1, Ordering::AcqRel);
        ctx.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            ctx,
            fe,
            be: None,
            srv: None,
            permit: None,
            log: None,
            bytes: 0,
            track: None,
            bytes_in: 0,
        }
    }

    /// Takes over the entries the request's rules track. `head_bytes`: the size of the
    /// header fields; the request line and a declared body are added (`bytes_in`).
    fn track_from(&mut self, head: &http::request::Parts, head_bytes: usize) {
        let Some(t) = head.extensions.get::<Track>() else {
            return;
        };
        self.track = Some(t.clone());
        let body = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let line = head.method.as_str().len() + head.uri.to_string().len() + 12;
        self.bytes_in = (head_bytes + line) as u64 + body;
    }

    fn set_backend(&mut self, be: &Arc<BackendRt>) {
        if self.be.is_none() {
            be.state.counters.requests.fetch_add(1, Ordering::Relaxed);
            // A session of the backend, in its total as HAProxy counts it.
            be.state.counters.open_conn();
        }
        self.be = Some(be.clone());
        if let Some(l) = &mut self.log {
            l.backend = be.name.clone();
        }
    }

    fn set_server(&mut self, srv: &Arc<ServerRt>) {
        self.clear_server();
        srv.state.counters.open_conn();
        self.srv = Some(srv.clone());
        if let Some(l) = &mut self.log {
            l.server = srv.name.clone();
        }
    }

    /// The connection to the server is up (`since`: when it was asked for, if timed).
    fn connected(&mut self, since: Option<Instant>) {
        if let Some(l) = &mut self.log {
            l.t_connect_ms = since.map_or(0, |t0| t0.elapsed().as_millis() as i64);
        }
    }

    fn clear_server(&mut self) {
        if let Some(s) = self.srv.take() {
            s.state.counters.close_conn();
        }
    }

    fn status(&mut self, status: u16) {
        // HAProxy's `stream_inc_http_err_ctr`: a 4xx, the server's or lb's own (a deny).
        if (400..500).contains(&status)
            && let Some(t) = &self.track
        {
            t.each().for_each(|e| e.update(Event::HttpErr));
        }
        self.fe.counters.count_response(status);
        if let Some(be) = &self.be {
            be.state.counters.count_response(status);
        }
        if let Some(s) = &self.srv {
            s.state.counters.requests.fetch_add(1, Ordering::Relaxed);
            s.state.counters.count_response(status);
        }
        if let Some(l) = &mut self.log {
            l.status = status;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.permit.take();
        if let Some(l) = &mut self.log {
            l.conns = log::ConnCounts::now(
                &self.fe.counters,
                self.be.as_ref().map(|b| &b.state.counters),
                self.srv.as_ref().map(|s| &s.state.counters),
            );
        }
        self.clear_server();
        if let Some(be) = &self.be {
            be.state.counters.close_conn();
        }
        self.ctx.shared.request_done();
        if let Some(t) = self.track.take() {
            t.each().for_each(|e| {
                e.update(Event::BytesIn(self.bytes_in));
                e.update(Event::BytesOut(self.bytes));
            });
        }
        if let Some(mut l) = self.log.take() {
            l.bytes = self.bytes;
            if self.ctx.shared.write_timed_out.load(Ordering::Relaxed) {
                l.termination = *b"cD";
            }
            log::emit(&l, self.fe.log_format, &self.fe.log_targets);
        }
    }
}

enum Src {
    Full(Option<Bytes>),
    /// Read from the server connection, which goes back to its pool at the end.
    Up(ResponseBody),
    /// A stream of an HTTP/2 server connection (`proto h2`).
    H2(Incoming),
}

/// The response body toward the client.
pub struct RespBody {
    src: Src,
    guard: Option<Guard>,
    counters: Option<Arc<CountersRef>>,
    /// `timeout server` between body chunks.
    idle: IdleLimit,
    /// HTTP/2 client: the connection state that tracks bodies waiting on its window, and
    /// whether this one is counted there.
    h2_wait: Option<(Arc<ConnShared>, bool)>,
    /// `shutdown sessions` of the server, once the body first waits on it.
    stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Body filters (cache store, compression) over the bytes toward the client.
    filters: filter::Chain,
    /// Trailers held back while the filters' last bytes go out.
    trailers: Option<Frame<Bytes>>,
}

impl Drop for RespBody {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl std::fmt::Debug for RespBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespBody").finish_non_exhaustive()
    }
}

impl RespBody {
    fn full(b: Bytes, guard: Option<Guard>) -> Self {
        Self {
            src: Src::Full(if b.is_empty() { None } else { Some(b) }),
            guard,
            counters: None,
            idle: IdleLimit::new(None),
            h2_wait: None,
            stop: None,
            filters: filter::Chain::default(),
            trailers: None,
        }
    }

    /// The body with `filters` over it.
    pub(crate) fn with_filters(mut self, filters: filter::Chain) -> Self {
        self.filters = filters;
        self
    }

    /// True once the server's sessions are shut down (`shutdown sessions server`); waits on
    /// that (with `cx`) from the first call.
    fn shut_down(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stop.is_none() {
            let srv = self.guard.as_ref().and_then(|g| g.srv.as_ref());
            let Some(srv) = srv else { return false };
            self.stop = Some(Box::pin(srv.state.shutdown_signal()));
        }
        self.stop
            .as_mut()
            .is_some_and(|f| f.as_mut().poll(cx).is_ready())
    }

    /// HTTP/2: counts this body as waiting on the client (or not).
    fn set_waiting(&mut self, on: bool) {
        if let Some((shared, waiting)) = &mut self.h2_wait
            && *waiting != on
        {
            *waiting = on;
            if on {
                shared.h2_waiting.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.h2_waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The body of a server's response, under `timeout server` between chunks.
    fn upstream(
        src: Src,
        guard: Guard,
        counters: Arc<CountersRef>,
        idle: Option<Duration>,
    ) -> Self {
        let h2_wait = guard.ctx.shared.h2.load(Ordering::Relaxed).then(|| {
            guard.ctx.shared.h2_progress();
            (guard.ctx.shared.clone(), false)
        });
        let mut b = Self {
            src,
            guard: Some(guard),
            counters: Some(counters),
            idle: IdleLimit::new(idle),
            h2_wait,
            stop: None,
            filters: filter::Chain::default(),
            trailers: None,
        };
        // Until hyper first asks for data (a window of 0 keeps it from asking).
        b.set_waiting(true);
        b
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        if this.filters.is_empty() {
            return this.poll_src(cx);
        }
        // Through the filters: a chunk they keep back asks for the next one; their last
        // bytes go before the trailers, if any.
        loop {
            if let Some(t) = this.trailers.take() {
                return Poll::Ready(Some(Ok(t)));
            }
            if this.filters.ended() {
                return Poll::Ready(None);
            }
            let out = match std::task::ready!(this.poll_src(cx)) {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => this.filters.data(d),
                    Err(trailers) => {
                        this.trailers = Some(trailers);
                        this.filters.end()
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.filters.end(),
            };
            match out {
                Ok(b) if b.is_empty() => {}
                Ok(b) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.filters.ended() || self.trailers.is_some() {
            return false;
        }
        match &self.src {
            Src::Full(b) => b.is_none(),
            Src::Up(b) => b.is_end_stream(),
            Src::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if !self.filters.keeps_length() {
            return SizeHint::new();
        }
        match &self.src {
            Src::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Src::Full(None) => SizeHint::with_exact(0),
            Src::Up(b) => b
                .exact_len()
                .map_or_else(SizeHint::new, SizeHint::with_exact),
            Src::H2(b) => b.size_hint(),
        }
    }
}

impl RespBody {
    /// The next frame of the source (the server's body, or lb's own), counted.
    fn poll_src(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self;
        match &mut this.src {
            Src::Full(b) => {
                let r = b.take().map(|d| {
                    if let Some(g) = &mut this.guard {
                        g.bytes += d.len() as u64;
                    }
                    Ok(Frame::data(d))
                });
                if r.is_none() {
                    this.guard.take();
                }
                Poll::Ready(r)
            }
            Src::Up(_) | Src::H2(_) => {
                if let Some((shared, _)) = &this.h2_wait {
                    shared.h2_progress();
                }
                this.set_waiting(false);
                let polled = match &mut this.src {
                    Src::Up(inner) => inner.poll_frame(cx).map_err(HttpError::Body),
                    Src::H2(inner) => Pin::new(inner).poll_frame(cx).map_err(HttpError::Body2),
                    Src::Full(_) => Poll::Ready(None),
                };
                match polled {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            let n = d.len() as u64;
                            if let Some(g) = &mut this.guard {
                                g.bytes += n;
                            }
                            if let Some(c) = &this.counters {
                                c.add_out(n);
                            }
                        }
                        this.idle.reset();
                        // Handed over: the next ask waits on the client's window.
                        this.set_waiting(true);
                        Poll::Ready(Some(Ok(f)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => {
                        this.guard.take();
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        let err = if this.shut_down(cx) {
                            if let Some(l) = this.guard.as_mut().and_then(|g| g.log.as_mut()) {
                                // HAProxy's termination state: killed by the admin, data phase.
                                l.termination = *b"KD";
                            }
                            HttpError::Shutdown
                        } else if this.idle.poll_expired(cx) {
                            HttpError::ServerTimeout
                        } else {
                            return Poll::Pending;
                        };
                        if let Src::Up(inner) = &mut this.src {
                            inner.abort();
                        }
                        // (An HTTP/2 stream is reset when its body is dropped.)
                        this.src = Src::Full(None);
                        Poll::Ready(Some(Err(err)))
                    }
                }
            }
        }
    }
}

/// A canned response (error page, errorfile), not yet tied to its request.
fn canned(c: &Canned) -> Response<RespBody> {
    let mut r = Response::new(RespBody::full(c.body.clone(), None));
    *r.status_mut() = c.status;
    let h = r.headers_mut();
    for (k, v) in &c.headers {
        h.append(k.clone(), v.clone());
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(c.body.len()));
    r
}

/// An error page from the backend's errorfiles if set, else the frontend's.
fn page(fe: &FrontendRt, be: Option<&BackendRt>, code: u16) -> Response<RespBody> {
    let page = match be {
        Some(b) if b.errors.has(code) => b.errors.get(code),
        _ => fe.errors.get(code),
    };
    canned(&page)
}

/// A response lb answers itself, with the request's guard: its status counted and logged
/// when the body ends.
fn guarded(mut r: Response<RespBody>, mut guard: Guard) -> Response<RespBody> {
    guard.status(r.status().as_u16());
    if let Some(b) = r.body_mut().guard.replace(guard) {
        drop(b);
    }
    r
}

/// The frontend's own stats page (`stats uri`), its 401, or 503 without a renderer.
fn stats_response(
    fe: &FrontendRt,
    stats: &crate::config::model::StatsPage,
    a: crate::l7::stats_page::Answer,
    guard: Guard,
) -> Response<RespBody> {
    use crate::l7::stats_page::{Answer, challenge};
    match a {
        Answer::Page(html) => {
            let body = Bytes::from(html);
            let mut r = Response::new(RespBody::full(body.clone(), None));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            guarded(r, guard)
        }
        Answer::Unauthorized => {
            let mut r = page(fe, None, 401);
            if let Ok(v) = HeaderValue::from_str(&challenge(stats)) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            guarded(r, guard)
        }
        Answer::Unavailable => error_page(fe, None, 503, guard),
    }
}

/// [`page`] for the request `guard` stands for.
fn error_page(
    fe: &FrontendRt,
    be: Option<&BackendRt>,
    code: u16,
    guard: Guard,
) -> Response<RespBody> {
    guarded(page(fe, be, code), guard)
}

/// The future of one request: ready at once when rules or routing answer, else the boxed
/// forwarding state (kept out of line so hyper does not move a large future around).
pub type HandleFuture = futures_util::future::Either<
    std::future::Ready<Result<Response<RespBody>, Infallible>>,
    Pin<Box<dyn Future<Output = Result<Response<RespBody>, Infallible>> + Send>>,
>;

fn done(r: Response<RespBody>) -> HandleFuture {
    futures_util::future::Either::Left(std::future::ready(Ok(r)))
}

/// Serves one request.
pub fn handle(ctx: Arc<ConnCtx>, req: Request<ReqBody>) -> HandleFuture {
    let fe = ctx.frontend.load_full();
    if !fe.after_response {
        return prepare::prepare(ctx, fe, req);
    }
    // `http-after-response` applies to every response, lb's own included; its conditions
    // see the request as it arrived.
    let seen = request_copy(&req);
    match prepare::prepare(ctx.clone(), fe.clone(), req) {
        futures_util::future::Either::Left(ready) => match ready.into_inner() {
            Ok(r) => done(after_response(&fe, &seen, &ctx, r)),
            Err(never) => match never {},
        },
        futures_util::future::Either::Right(fut) => {
            futures_util::future::Either::Right(Box::pin(async move {
                let r = fut.await?;
                Ok(after_response(&fe, &seen, &ctx, r))
            }))
        }
    }
}

/// The request head without its body and extensions (for `http-after-response`).
fn request_copy<B>(req: &Request<B>) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r.into_parts().0
}

/// Marks a response to a request refused while parsing (over the limits, a Host that
/// contradicts the target or another Host, a Transfer-Encoding HAProxy refuses): HAProxy's
/// parser answers those before any rule, so `http-after-response` leaves them alone too
/// (checked against HAProxy 2.6), and closes the connection after them, as lb does (the
/// `Connection: close` makes the HTTP/1 connection close; HTTP/2 has no such field).
#[derive(Debug, Clone, Copy)]
struct ProtocolReject;

fn protocol_reject(mut r: Response<RespBody>, version: Version) -> Response<RespBody> {
    r.extensions_mut().insert(ProtocolReject);
    if version <= Version::HTTP_11 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Applies the `http-after-response` rules (the backend's, when the request reached one,
/// then the frontend's) to a response about to be sent.
fn after_response(
    fe: &FrontendRt,
    req: &http::request::Parts,
    ctx: &ConnCtx,
    r: Response<RespBody>,
) -> Response<RespBody> {
    if r.extensions().get::<ProtocolReject>().is_some() {
        return r;
    }
    // A response from a cache: `res.cache_hit` and `res.cache_name` say so here too.
    let with_hit;
    let req = match r.extensions().get::<crate::l7::cache::HitMark>() {
        Some(hit) => {
            let mut c = Request::new(());
            *c.method_mut() = req.method.clone();
            *c.uri_mut() = req.uri.clone();
            *c.version_mut() = req.version;
            *c.headers_mut() = req.headers.clone();
            c.extensions_mut().insert(hit.clone());
            with_hit = c.into_parts().0;
            &with_hit
        }
        None => req,
    };
    let be = r.body().guard.as_ref().and_then(|g| g.be.clone());
    let (mut parts, body) = r.into_parts();
    let none: &[ResponseRule] = &[];
    let lists = [
        be.as_ref().map_or(none, |b| &b.after_rules[..]),
        &fe.after_rules[..],
    ];
    let mut res = ResponseEdit {
        status: &mut parts.status,
        headers: &mut parts.headers,
        reason: None,
        store: None,
    };
    let rc = RuleCtx {
        ctx,
        fe,
        be: be.as_deref(),
    };
    // (`deny` is not an http-after-response action: nothing to refuse here.)
    let _ = rules::response_rules(lists, req, &rc, &mut res);
    if let Some(reason) = res.reason {
        parts.extensions.insert(reason);
    }
    Response::from_parts(parts, body)
}

/// A header map of `pairs`, in order (for the unit tests of the stages).
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}
