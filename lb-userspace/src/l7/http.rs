//! The `mode http` request path: limits, `http-request` rules, `use_backend`, sticky
//! cookies, server selection with queueing and retries, forwarding over pooled upstream
//! connections, WebSocket tunnels, counters and access logs.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::acl::AclInput;
use crate::config::model::RedirectKind;
use crate::l7::balance::PickCtx;
use crate::l7::io::ConnShared;
use crate::l7::log::{self, LogRecord};
use crate::l7::runtime::{Action, BackendRt, Canned, FrontendRt, Rule, ServerRt};
use crate::l7::tls::TlsInfo;
use crate::l7::upstream::codec::{self, ReqFraming, ResponseHead};
use crate::l7::upstream::exchange::UploadTimeouts;
use crate::l7::upstream::h2::{ClientFault, H2Conns, RequestBody, Upload};
use crate::l7::upstream::{
    self, Conn, CountersRef, ExchangeError, IdleLimit, ResponseBody, UpConn,
};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("response body: {0}")]
    Body(#[from] ExchangeError),
    #[error("HTTP/2 response body: {0}")]
    Body2(hyper::Error),
    #[error("server timeout while reading the response body")]
    ServerTimeout,
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
}

impl<'a> ReqInput<'a> {
    fn request(head: &'a http::request::Parts, ctx: &'a ConnCtx, fe: &'a FrontendRt) -> Self {
        Self {
            head,
            ctx,
            fe,
            res: None,
        }
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
        }
    }

    fn set_backend(&mut self, be: &Arc<BackendRt>) {
        if self.be.is_none() {
            be.state.counters.requests.fetch_add(1, Ordering::Relaxed);
            be.state
                .counters
                .active_conns
                .fetch_add(1, Ordering::Relaxed);
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

    fn clear_server(&mut self) {
        if let Some(s) = self.srv.take() {
            s.state.counters.close_conn();
        }
    }

    fn status(&mut self, status: u16) {
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
        self.clear_server();
        if let Some(be) = &self.be {
            be.state.counters.close_conn();
        }
        self.ctx.shared.request_done();
        if let Some(mut l) = self.log.take() {
            l.bytes = self.bytes;
            log::emit(&l, self.fe.log_format);
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
        }
    }

    /// The body of a server's response, under `timeout server` between chunks.
    fn upstream(
        src: Src,
        guard: Guard,
        counters: Arc<CountersRef>,
        idle: Option<Duration>,
    ) -> Self {
        Self {
            src,
            guard: Some(guard),
            counters: Some(counters),
            idle: IdleLimit::new(idle),
        }
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
                        Poll::Ready(Some(Ok(f)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => {
                        this.guard.take();
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        if !this.idle.poll_expired(cx) {
                            return Poll::Pending;
                        }
                        if let Src::Up(inner) = &mut this.src {
                            inner.abort();
                        }
                        // (An HTTP/2 stream is reset when its body is dropped.)
                        this.src = Src::Full(None);
                        Poll::Ready(Some(Err(HttpError::ServerTimeout)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.src {
            Src::Full(b) => b.is_none(),
            Src::Up(b) => b.is_end_stream(),
            Src::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
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

/// A canned response (error page, errorfile).
fn canned(c: &Canned, mut guard: Guard) -> Response<RespBody> {
    guard.status(c.status.as_u16());
    let mut r = Response::new(RespBody::full(c.body.clone(), None));
    *r.status_mut() = c.status;
    let h = r.headers_mut();
    for (k, v) in &c.headers {
        h.append(k.clone(), v.clone());
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(c.body.len()));
    if let Some(b) = r.body_mut().guard.replace(guard) {
        drop(b);
    }
    r
}

/// An error page from the backend's errorfiles if set, else the frontend's.
fn error_page(
    fe: &FrontendRt,
    be: Option<&BackendRt>,
    code: u16,
    guard: Guard,
) -> Response<RespBody> {
    let page = match be {
        Some(b) if b.errors.has(code) => b.errors.get(code),
        _ => fe.errors.get(code),
    };
    canned(&page, guard)
}

enum Flow {
    Respond(u16),
    /// A response lb writes itself (a redirect, `return`).
    Reply(Box<Response<RespBody>>),
}

/// Evaluates `http-request` rules in order; `allow` stops the list.
fn apply_rules(
    rules: &[Rule],
    head: &mut http::request::Parts,
    ctx: &ConnCtx,
    fe: &FrontendRt,
) -> Result<(), Flow> {
    for rule in rules {
        if let Some(cond) = &rule.cond {
            let input = ReqInput::request(head, ctx, fe);
            if !cond.eval(&input) {
                continue;
            }
        }
        match &rule.action {
            Action::Allow => return Ok(()),
            Action::Deny(status) => return Err(Flow::Respond(*status)),
            Action::Redirect {
                kind,
                target,
                code,
                drop_query,
            } => {
                // An expansion that is no header value: no Location (HAProxy writes the
                // bytes as they come).
                let target = target.value(&ReqInput::request(head, ctx, fe));
                let loc = target.map(|t| redirect_location(*kind, &t, *drop_query, head, ctx));
                let mut r = Response::new(RespBody::full(Bytes::new(), None));
                *r.status_mut() = *code;
                let h = r.headers_mut();
                if let Some(Ok(v)) = loc.map(HeaderValue::from_maybe_shared) {
                    h.insert(header::LOCATION, v);
                }
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                // As HAProxy: temporary redirects must not be cached; permanent ones may.
                if matches!(code.as_u16(), 302 | 303 | 307) {
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                }
                return Err(Flow::Reply(Box::new(r)));
            }
            a @ (Action::SetHeader(..)
            | Action::AddHeader(..)
            | Action::DelHeader(_)
            | Action::ReplaceHeader { .. }) => {
                if let Some(edit) = HeaderEdit::of(a, &ReqInput::request(head, ctx, fe)) {
                    edit.apply(&mut head.headers);
                }
            }
            Action::SetPath(f) => {
                let path = expand(f, &ReqInput::request(head, ctx, fe));
                let query = head.uri.query().map(str::to_owned);
                set_target(head, &path, query.as_deref())?;
            }
            Action::SetQuery(f) => {
                let query = expand(f, &ReqInput::request(head, ctx, fe));
                let path = head.uri.path().to_owned();
                // An empty result leaves `?` with nothing after it, as in HAProxy.
                set_target(head, &path, Some(query.as_str()))?;
            }
            Action::ReplacePath(re, f) => {
                let template = expand(f, &ReqInput::request(head, ctx, fe));
                if let Some(c) = re.captures(head.uri.path()) {
                    let path = with_groups(&template, &c);
                    let query = head.uri.query().map(str::to_owned);
                    set_target(head, &path, query.as_deref())?;
                }
            }
            Action::Return(reply) => {
                let r = reply_response(reply, &ReqInput::request(head, ctx, fe));
                return Err(Flow::Reply(Box::new(r)));
            }
            // A response action (the config loader keeps it out of request rules).
            Action::SetStatus(..) => {}
        }
    }
    Ok(())
}

/// A header action of a request or response rule, its value expanded for one message:
/// computed while the rule's input borrows the message, applied once it no longer does.
enum HeaderEdit<'a> {
    Set(&'a HeaderName, HeaderValue),
    Add(&'a HeaderName, HeaderValue),
    Del(&'a HeaderName),
    Replace {
        name: &'a HeaderName,
        re: &'a regex::Regex,
        template: String,
        each_value: bool,
    },
}

impl<'a> HeaderEdit<'a> {
    /// The edit `action` makes for `input`; `None` for a value that expands to no valid
    /// header value (HAProxy skips the action then) or an action on no header.
    fn of(action: &'a Action, input: &dyn AclInput) -> Option<Self> {
        Some(match action {
            Action::SetHeader(n, v) => HeaderEdit::Set(n, v.value(input)?),
            Action::AddHeader(n, v) => HeaderEdit::Add(n, v.value(input)?),
            Action::DelHeader(n) => HeaderEdit::Del(n),
            Action::ReplaceHeader {
                name,
                re,
                replace,
                each_value,
            } => HeaderEdit::Replace {
                name,
                re,
                template: expand(replace, input),
                each_value: *each_value,
            },
            _ => return None,
        })
    }

    fn apply(self, headers: &mut HeaderMap) {
        match self {
            HeaderEdit::Set(n, v) => {
                headers.insert(n.clone(), v);
            }
            HeaderEdit::Add(n, v) => {
                headers.append(n.clone(), v);
            }
            HeaderEdit::Del(n) => {
                headers.remove(n);
            }
            HeaderEdit::Replace {
                name,
                re,
                template,
                each_value,
            } => replace_values(headers, name, re, &template, each_value),
        }
    }
}

/// A log-format string's text for one request.
fn expand(f: &crate::acl::FormatString, input: &dyn AclInput) -> String {
    let mut out = String::new();
    f.expand(input, &mut out);
    out
}

/// `template` with `\1`…`\9` (and `\0`, the whole match) replaced by the groups of `caps`,
/// as HAProxy's replace actions do; a group that did not take part is empty.
fn with_groups(template: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(d) = chars.peek().and_then(|d| d.to_digit(10))
        {
            chars.next();
            out.push_str(caps.get(d as usize).map_or("", |m| m.as_str()));
            continue;
        }
        out.push(c);
    }
    out
}

/// Puts a new path (and query) in the request target, keeping an absolute form's scheme and
/// authority. A result that is no valid target fails the request with 500, as HAProxy's
/// strict mode fails a rewrite.
fn set_target(
    head: &mut http::request::Parts,
    path: &str,
    query: Option<&str>,
) -> Result<(), Flow> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = std::mem::take(&mut head.uri).into_parts();
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(pq.as_str()).map_err(|_| Flow::Respond(500))?);
    head.uri = http::Uri::from_parts(parts).map_err(|_| Flow::Respond(500))?;
    Ok(())
}

/// `replace-header` (each whole value) and `replace-value` (each comma-separated value):
/// a value `re` matches becomes `template` with the groups filled in (HAProxy replaces the
/// whole value, not only the matched part). A result that is no valid value keeps the old.
/// Checked against HAProxy 2.6 by the differential test.
fn replace_values(
    headers: &mut HeaderMap,
    name: &HeaderName,
    re: &regex::Regex,
    template: &str,
    each_value: bool,
) {
    let replace = |s: &str| match re.captures(s) {
        Some(c) => with_groups(template, &c),
        None => s.to_owned(),
    };
    let mut changed = false;
    let values: Vec<HeaderValue> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            let Ok(s) = v.to_str() else {
                return v.clone();
            };
            let out = if each_value {
                // HAProxy's rewrite: a replaced element loses the blanks around it, the
                // others stay as written (`a, b, a` → `z, b,z`).
                s.split(',')
                    .map(|part| match re.captures(part.trim()) {
                        Some(c) => with_groups(template, &c),
                        None => part.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                replace(s)
            };
            if out == s {
                return v.clone();
            }
            match HeaderValue::from_str(&out) {
                Ok(nv) => {
                    changed = true;
                    nv
                }
                Err(_) => v.clone(),
            }
        })
        .collect();
    if changed {
        headers.remove(name);
        for v in values {
            headers.append(name.clone(), v);
        }
    }
}

/// The response of `http-request return`.
fn reply_response(reply: &crate::l7::runtime::Reply, input: &dyn AclInput) -> Response<RespBody> {
    let body = reply
        .body
        .as_ref()
        .map(|f| Bytes::from(expand(f, input)))
        .unwrap_or_default();
    let mut r = Response::new(RespBody::full(body, None));
    *r.status_mut() = reply.status;
    let h = r.headers_mut();
    if let Some(t) = &reply.content_type {
        h.insert(header::CONTENT_TYPE, t.clone());
    }
    for (n, v) in &reply.headers {
        if let Some(v) = v.value(input) {
            h.append(n.clone(), v);
        }
    }
    r
}

/// A server's response head as `http-response` rules change it.
struct ResponseEdit<'a> {
    status: &'a mut StatusCode,
    headers: &'a mut HeaderMap,
    reason: Option<hyper::ext::ReasonPhrase>,
}

/// Evaluates response rules (`http-response` on a server's response, `http-after-response`
/// on any) over a response head: `lists` in order, the backend's then the frontend's
/// (HAProxy's order); `allow` ends its own list. `Err(status)`: a `deny`, the client gets
/// that error page in place of the response.
fn apply_response_rules(
    lists: [&[Rule]; 2],
    fe: &FrontendRt,
    head: &http::request::Parts,
    ctx: &ConnCtx,
    res: &mut ResponseEdit<'_>,
) -> Result<(), u16> {
    for rules in lists {
        for rule in rules.iter() {
            let input = ReqInput {
                res: Some((*res.status, &*res.headers)),
                ..ReqInput::request(head, ctx, fe)
            };
            if let Some(cond) = &rule.cond
                && !cond.eval(&input)
            {
                continue;
            }
            match &rule.action {
                Action::Allow => break,
                Action::Deny(status) => return Err(*status),
                a @ (Action::SetHeader(..)
                | Action::AddHeader(..)
                | Action::DelHeader(_)
                | Action::ReplaceHeader { .. }) => {
                    if let Some(edit) = HeaderEdit::of(a, &input) {
                        edit.apply(res.headers);
                    }
                }
                Action::SetStatus(code, reason) => {
                    *res.status = *code;
                    res.reason = reason.clone();
                }
                // Request actions (the config loader keeps them out of response rules).
                Action::Redirect { .. }
                | Action::SetPath(_)
                | Action::SetQuery(_)
                | Action::ReplacePath(..)
                | Action::Return(_) => {}
            }
        }
    }
    Ok(())
}

/// The Location of a redirect whose (expanded) target is `target`.
fn redirect_location(
    kind: RedirectKind,
    target: &HeaderValue,
    drop_query: bool,
    head: &http::request::Parts,
    ctx: &ConnCtx,
) -> Bytes {
    let target = target.as_bytes();
    let path = head.uri.path();
    let query = if drop_query { None } else { head.uri.query() };
    let mut out = Vec::with_capacity(target.len() + path.len() + 32);
    match kind {
        RedirectKind::Location => return Bytes::copy_from_slice(target),
        RedirectKind::Prefix => {
            if target != b"/" {
                out.extend_from_slice(target);
            }
        }
        RedirectKind::Scheme => {
            out.extend_from_slice(target);
            out.extend_from_slice(b"://");
            let host = head
                .headers
                .get(header::HOST)
                .map(|h| h.as_bytes())
                .or_else(|| head.uri.authority().map(|a| a.as_str().as_bytes()))
                .unwrap_or(b"");
            // Changing scheme drops an explicit default port of the old one.
            let host = match (
                ctx.tls.is_some(),
                host.strip_suffix(b":443"),
                host.strip_suffix(b":80"),
            ) {
                (true, Some(h), _) => h,
                (false, _, Some(h)) => h,
                _ => host,
            };
            out.extend_from_slice(host);
        }
    }
    out.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    Bytes::from(out)
}

/// Whether a request target's authority and its Host header name the same host and port,
/// as HAProxy compares them: ASCII case ignored, the scheme's default port (80 for http,
/// 443 for https) the same as none.
fn same_authority(scheme: Option<&str>, authority: &[u8], host: &[u8]) -> bool {
    let default_port: &[u8] = match scheme {
        Some(s) if s.eq_ignore_ascii_case("https") => b":443",
        _ => b":80",
    };
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    let host = host.trim_ascii();
    let host = host.strip_suffix(default_port).unwrap_or(host);
    authority.eq_ignore_ascii_case(host)
}

/// Finds cookie `name` in the request's Cookie headers.
fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for v in headers.get_all(header::COOKIE) {
        for crumb in v.as_bytes().split(|&c| c == b';') {
            let crumb = crumb.trim_ascii();
            if let Some(rest) = crumb.strip_prefix(name.as_bytes())
                && let Some(val) = rest.strip_prefix(b"=")
            {
                return Some(val.trim_ascii());
            }
        }
    }
    None
}

/// Removes cookie `name` from the Cookie headers (`indirect`).
fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let vals: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    headers.remove(header::COOKIE);
    for v in vals {
        let kept: Vec<&[u8]> = v
            .as_bytes()
            .split(|&c| c == b';')
            .map(|c| c.trim_ascii())
            .filter(|c| {
                let ours = c.starts_with(name.as_bytes()) && c.get(name.len()) == Some(&b'=');
                !c.is_empty() && !ours
            })
            .collect();
        if kept.is_empty() {
            continue;
        }
        if let Ok(nv) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
            headers.append(header::COOKIE, nv);
        }
    }
}

/// Whether HAProxy would consider the response cacheable (for `cookie … nocache`): a GET
/// or HEAD request, a status cacheable by default (RFC 7231 6.1) or `public`, no
/// `Cache-Control: private|no-cache|no-store|max-age=0|s-maxage=0` nor `Pragma: no-cache`,
/// and freshness information or a validator.
fn cacheable(method: &Method, status: StatusCode, h: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    let mut ok = matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 404 | 405 | 410 | 414 | 501
    );
    for v in h.get_all(header::PRAGMA) {
        if v.as_bytes().eq_ignore_ascii_case(b"no-cache") {
            return false;
        }
    }
    // HAProxy (http_check_response_for_cacheability): a response is only worth marking
    // private when a cache could store it, which needs freshness information
    // (max-age, s-maxage, Expires) or a validator (ETag, Last-Modified).
    let mut freshness = false;
    for v in h.get_all(header::CACHE_CONTROL) {
        let Ok(s) = v.to_str() else { continue };
        for d in s.split(',') {
            let d = d.trim().to_ascii_lowercase();
            if d == "private"
                || d.starts_with("no-cache")
                || d == "no-store"
                || d == "max-age=0"
                || d == "s-maxage=0"
            {
                return false;
            }
            if d == "public" {
                ok = true;
            }
            if d.starts_with("max-age=") || d.starts_with("s-maxage=") {
                freshness = true;
            }
        }
    }
    freshness |= h.contains_key(header::EXPIRES);
    let validator = h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED);
    ok && (freshness || validator)
}

/// Removes the connection-specific fields ([`codec::CONNECTION_SPECIFIC`], the fields
/// Connection names, and Upgrade unless `keep_upgrade`) from a request going upstream.
/// Returns whether the removed TE asked for trailers.
fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) -> bool {
    // One pass over the few names present, then only the removals that find something
    // (hashing every hop-by-hop name for a removal costs more than the whole scan).
    const UPGRADE_BIT: u8 = 1 << 7;
    let mut present = 0u8;
    for k in h.keys() {
        if let Some(i) = codec::CONNECTION_SPECIFIC.iter().position(|n| n == k) {
            present |= 1 << i;
        } else if !keep_upgrade && k == header::UPGRADE {
            present |= UPGRADE_BIT;
        }
    }
    if present == 0 {
        return false;
    }
    let te_bit = codec::CONNECTION_SPECIFIC
        .iter()
        .position(|n| n == header::TE)
        .map_or(0, |i| 1u8 << i);
    let te_trailers = present & te_bit != 0
        && h.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    // Headers named by Connection (the list's first) are hop-by-hop too.
    if present & 1 != 0 {
        let mut named: Vec<HeaderName> = Vec::new();
        for v in h.get_all(header::CONNECTION) {
            if let Ok(s) = v.to_str() {
                for t in s.split(',') {
                    let t = t.trim();
                    // `keep-alive` (the usual token) is removed below anyway: skip it
                    // without allocating a header name for it.
                    if t.eq_ignore_ascii_case("keep-alive") {
                        continue;
                    }
                    if let Ok(n) = HeaderName::from_bytes(t.as_bytes())
                        && !(keep_upgrade && n == header::UPGRADE)
                    {
                        named.push(n);
                    }
                }
            }
        }
        for n in named {
            h.remove(n);
        }
    }
    for (i, n) in codec::CONNECTION_SPECIFIC.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if present & UPGRADE_BIT != 0 {
        h.remove(header::UPGRADE);
    }
    te_trailers
}

fn is_upgrade(head: &http::request::Parts) -> bool {
    head.version == Version::HTTP_11
        && head.headers.contains_key(header::UPGRADE)
        && head.headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
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
pub fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> HandleFuture {
    let fe = ctx.frontend.load_full();
    if !fe.after_response {
        return handle_request(ctx, fe, req);
    }
    // `http-after-response` applies to every response, lb's own included; its conditions
    // see the request as it arrived.
    let seen = request_copy(&req);
    match handle_request(ctx.clone(), fe.clone(), req) {
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
fn request_copy(req: &Request<Incoming>) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r.into_parts().0
}

/// Marks a response to a request refused while parsing (over the limits, a Host that
/// contradicts the target): HAProxy's parser answers those before any rule, so
/// `http-after-response` leaves them alone too (checked against HAProxy 2.6).
#[derive(Debug, Clone, Copy)]
struct ProtocolReject;

fn protocol_reject(mut r: Response<RespBody>) -> Response<RespBody> {
    r.extensions_mut().insert(ProtocolReject);
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
    let be = r.body().guard.as_ref().and_then(|g| g.be.clone());
    let (mut parts, body) = r.into_parts();
    let none: &[Rule] = &[];
    let lists = [
        be.as_ref().map_or(none, |b| &b.after_rules[..]),
        &fe.after_rules[..],
    ];
    let mut res = ResponseEdit {
        status: &mut parts.status,
        headers: &mut parts.headers,
        reason: None,
    };
    // (`deny` is not an http-after-response action: nothing to refuse here.)
    let _ = apply_response_rules(lists, fe, req, ctx, &mut res);
    if let Some(reason) = res.reason {
        parts.extensions.insert(reason);
    }
    Response::from_parts(parts, body)
}

/// [`handle`] without `http-after-response`.
fn handle_request(ctx: Arc<ConnCtx>, fe: Arc<FrontendRt>, req: Request<Incoming>) -> HandleFuture {
    let mut guard = Guard::new(ctx.clone(), fe.clone());
    fe.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (mut head, body) = req.into_parts();
    if fe.log {
        guard.log = Some(Box::new(LogRecord {
            start: Instant::now(),
            wall: SystemTime::now(),
            src: ctx.src,
            frontend: fe.name.clone(),
            tls: ctx.tls.is_some(),
            backend: NOSRV.clone(),
            server: NOSRV.clone(),
            method: head.method.clone(),
            uri: head.uri.clone(),
            version: head.version,
            status: 0,
            bytes: 0,
            retries: 0,
            t_wait_ms: 0,
            t_connect_ms: -1,
            t_response_ms: -1,
        }));
    }

    // Limits (hyper enforces the raw buffer size; these are the configured ones).
    // HAProxy's `tune.http.maxhdr` counts the request line: at most `max_headers - 1` fields.
    if head.headers.len() >= fe.max_headers {
        return done(protocol_reject(error_page(&fe, None, 400, guard)));
    }
    let hbytes: usize = head
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    // Over the limit: 400, as HAProxy answers a request larger than its buffer.
    if hbytes > fe.max_header_bytes {
        return done(protocol_reject(error_page(&fe, None, 400, guard)));
    }

    // An HTTP/1 absolute-form target names the host itself: a Host header that names
    // another one gets 400, as HAProxy answers (ACLs and routing read Host).
    if head.version <= http::Version::HTTP_11
        && let Some(a) = head.uri.authority()
        && let Some(h) = head.headers.get(header::HOST)
        && !same_authority(head.uri.scheme_str(), a.as_str().as_bytes(), h.as_bytes())
    {
        return done(protocol_reject(error_page(&fe, None, 400, guard)));
    }

    // HTTP/2 carries the host in :authority; HAProxy exposes it as Host.
    if !head.headers.contains_key(header::HOST)
        && let Some(a) = head.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        head.headers.insert(header::HOST, v);
    }

    match apply_rules(&fe.rules, &mut head, &ctx, &fe) {
        Ok(()) => {}
        Err(Flow::Respond(code)) => return done(error_page(&fe, None, code, guard)),
        Err(Flow::Reply(mut r)) => {
            guard.status(r.status().as_u16());
            r.body_mut().guard = Some(guard);
            return done(*r);
        }
    }

    let be = {
        let input = ReqInput::request(&head, &ctx, &fe);
        fe.pick_backend(&input)
    };
    let Some(be) = be else {
        return done(error_page(&fe, None, 503, guard));
    };
    guard.set_backend(&be);

    match apply_rules(&be.rules, &mut head, &ctx, &fe) {
        Ok(()) => {}
        Err(Flow::Respond(code)) => return done(error_page(&fe, Some(&be), code, guard)),
        Err(Flow::Reply(mut r)) => {
            guard.status(r.status().as_u16());
            r.body_mut().guard = Some(guard);
            return done(*r);
        }
    }

    futures_util::future::Either::Right(Box::pin(async move {
        Ok(forward(ctx, fe, be, head, body, guard).await)
    }))
}

/// Picks a server (cookie persistence first), connects with queueing and retries, and
/// relays the exchange.
async fn forward(
    ctx: Arc<ConnCtx>,
    fe: Arc<FrontendRt>,
    be: Arc<BackendRt>,
    mut head: http::request::Parts,
    body: Incoming,
    mut guard: Guard,
) -> Response<RespBody> {
    // `balance uri`: the key is the path (with `whole`, path and query), as in HAProxy.
    let pick_ctx = match be.balance {
        crate::config::model::Balance::Uri { whole } => {
            let key = if whole {
                head.uri.path_and_query().map_or("/", |p| p.as_str())
            } else {
                head.uri.path()
            };
            PickCtx {
                src: ctx.src.ip(),
                key: Some(crate::l7::balance::hash_bytes(key.as_bytes())),
            }
        }
        _ => PickCtx::client(ctx.src.ip()),
    };

    // Persistence cookie.
    let mut chosen: Option<usize> = None;
    let mut insert_cookie = false;
    if let Some(ck) = &be.cookie {
        if let Some(v) = find_cookie(&head.headers, &ck.name) {
            chosen = be.by_cookie(v);
        }
        if chosen.is_none() {
            insert_cookie = true;
        }
        if ck.indirect {
            strip_cookie(&mut head.headers, &ck.name);
        }
    }

    // Request rewriting toward the server.
    let upgrade = is_upgrade(&head);
    // CONNECT: a 2xx from the server turns both connections into a tunnel, as an upgrade.
    let connect = head.method == Method::CONNECT;
    let client_upgrade = if upgrade || connect {
        let mut tmp = Request::new(());
        std::mem::swap(tmp.extensions_mut(), &mut head.extensions);
        let on = hyper::upgrade::on(&mut tmp);
        std::mem::swap(tmp.extensions_mut(), &mut head.extensions);
        Some(on)
    } else {
        None
    };
    // (An HTTP/2 server gets `te: trailers` when the client asked for trailers: gRPC.)
    let te_trailers = strip_hop_by_hop(&mut head.headers, upgrade);
    if upgrade {
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if fe.forwardfor || be.forwardfor {
        let ip = ctx.src.ip();
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
            head.headers
                .append(HeaderName::from_static("x-forwarded-for"), v);
        }
        head.headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(if ctx.tls.is_some() { "https" } else { "http" }),
        );
    }
    // Origin form toward the server, whatever form the client used; CONNECT keeps its
    // authority form (`host:port`).
    let target = match (connect, head.uri.authority()) {
        (true, Some(a)) => a.as_str(),
        _ => head.uri.path_and_query().map_or("/", |p| p.as_str()),
    };
    // HTTP/1.1 toward the server, except for an HTTP/1.0 request without Host, which would
    // become an invalid HTTP/1.1 one: it goes as HTTP/1.0, as HAProxy relays it, on a
    // connection not reused after it.
    let upstream_version =
        if head.version == http::Version::HTTP_10 && !head.headers.contains_key(header::HOST) {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        };
    let method = head.method.clone();
    let framing = if body.is_end_stream() {
        ReqFraming::Empty
    } else if head.headers.contains_key(header::CONTENT_LENGTH) {
        ReqFraming::Length
    } else {
        ReqFraming::Chunked
    };
    // May go out again on a fresh connection if a pooled one turns out closed (RFC 9110
    // §9.2.2); other requests get pooled connections checked for a close first.
    let replayable = framing == ReqFraming::Empty && method.is_idempotent();

    let t = be.timeouts;
    let mut avoid: u128 = 0;
    let mut attempts: u32 = 0;
    let mut body = Some(body);
    // Phase timings are only read by the access log.
    let timing = guard.log.is_some();
    let started = timing.then(Instant::now);
    loop {
        let idx = match chosen {
            Some(i) => i,
            None => {
                let a = avoid;
                let failed = |i: usize| i < 128 && (a >> i) & 1 == 1;
                // Servers at their maxconn are skipped while another has room (HAProxy);
                // when all are full the request queues on the one the algorithm picks.
                let full = |i: usize| {
                    be.servers[i]
                        .queue
                        .as_ref()
                        .is_some_and(|q| q.available_permits() == 0)
                };
                let found = be
                    .pick_cached(&pick_ctx, &|i| failed(i) || full(i))
                    .or_else(|| be.pick(&pick_ctx, &failed))
                    .or_else(|| {
                        // Every usable server failed once: try them again rather than give up.
                        if a != 0 {
                            be.pick(&pick_ctx, &|_| false)
                        } else {
                            None
                        }
                    });
                match found {
                    Some(i) => i,
                    None => return error_page(&fe, Some(&be), 503, guard),
                }
            }
        };
        let srv = be.servers[idx].clone();
        guard.set_server(&srv);
        if srv.h2.is_some() && client_upgrade.is_some() {
            // HTTP/2 has no Upgrade; RFC 8441's extended CONNECT is not spoken to servers.
            tracing::debug!(server = %srv.name, "upgrade or CONNECT toward an HTTP/2 server");
            return error_page(&fe, Some(&be), 502, guard);
        }

        // maxconn: wait in FIFO order, up to `timeout queue` (else `timeout connect`).
        if let Some(q) = &srv.queue {
            let qt = t.queue.or(t.connect);
            let acquire = q.clone().acquire_owned();
            let permit = match qt {
                Some(d) => match tokio::time::timeout(d, acquire).await {
                    Ok(Ok(p)) => p,
                    _ => return error_page(&fe, Some(&be), 503, guard),
                },
                None => match acquire.await {
                    Ok(p) => p,
                    Err(_) => return error_page(&fe, Some(&be), 503, guard),
                },
            };
            guard.permit = Some(permit);
        }
        if let (Some(l), Some(t0)) = (&mut guard.log, started) {
            l.t_wait_ms = t0.elapsed().as_millis() as i64;
        }

        let counters = Arc::new(CountersRef {
            frontend: fe.counters.clone(),
            backend: be.state.clone(),
            server: srv.state.clone(),
        });

        let conn_started = timing.then(Instant::now);
        let resp = if let Some(h2) = &srv.h2 {
            let h2_req = H2Req {
                head: &head,
                te_trailers,
                replayable,
                client_timeout: fe.timeouts.client,
            };
            match Box::pin(exchange_h2(&srv, h2, h2_req, &mut body, &counters, t)).await {
                Ok(r) => {
                    if let Some(l) = &mut guard.log {
                        l.t_connect_ms =
                            conn_started.map_or(0, |t0| t0.elapsed().as_millis() as i64);
                    }
                    Ok(Answer::H2(r))
                }
                Err(H2Fail::Connect) => Err(true),
                Err(H2Fail::Page(code)) => return error_page(&fe, Some(&be), code, guard),
            }
        } else {
            // Connection: an idle pooled one, else a new one (always new with `send-proxy`:
            // such a connection is its client's, as in HAProxy).
            // New connections are boxed: their (large) handshake state would otherwise sit in
            // every request's future, which is moved into its box on each request.
            let proxy_header = srv
                .send_proxy
                .map(|v| crate::proxy_protocol::encode(v, ctx.src, ctx.local));
            let pooled = match &proxy_header {
                None => srv.pool.take_idle(!replayable),
                Some(_) => None,
            };
            let mut conn = match pooled {
                Some(c) => Ok(c),
                None => {
                    Box::pin(upstream::connect(
                        srv.addr,
                        t.connect,
                        srv.tls.as_deref(),
                        proxy_header.as_deref(),
                    ))
                    .await
                }
            };
            loop {
                let mut c: Conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(server = %srv.name, error = %e, "connect failed");
                        srv.state.counters.errors.fetch_add(1, Ordering::Relaxed);
                        break Err(true);
                    }
                };
                if let Some(l) = &mut guard.log {
                    l.t_connect_ms = conn_started.map_or(0, |t0| t0.elapsed().as_millis() as i64);
                }
                c.conn.wbuf.clear();
                codec::encode_request_head(
                    &method,
                    target,
                    upstream_version,
                    &head.headers,
                    framing,
                    &mut c.conn.wbuf,
                );
                let timeouts = UploadTimeouts {
                    client: fe.timeouts.client,
                    server: t.server,
                };
                let sent = upstream::exchange::send(
                    &mut c.conn,
                    &method,
                    &mut body,
                    framing,
                    &counters,
                    timeouts,
                );
                let res = match t.server {
                    // A body brings its own per-side timeouts (see `exchange::send`).
                    Some(d) if framing == ReqFraming::Empty => {
                        match with_server_timeout(&ctx, sent, d).await {
                            Some(r) => r,
                            None => return error_page(&fe, Some(&be), 504, guard),
                        }
                    }
                    _ => sent.await,
                };
                match res {
                    Ok((mut h, complete)) => {
                        // An HTTP/1.0 request asked for no keep-alive.
                        h.keep_alive &= upstream_version != http::Version::HTTP_10;
                        break Ok(Answer::H1(h, c.conn, complete));
                    }
                    // A pooled connection the server had closed: the request goes out again on
                    // a fresh one when nothing of it was consumed, or when it is replayable.
                    Err(ExchangeError::NotSent(_)) if c.reused => {}
                    Err(ExchangeError::Closed) if c.reused && replayable => {
                        tracing::debug!(server = %srv.name, "replaying on a fresh connection");
                    }
                    Err(ExchangeError::ServerTimeout) => {
                        return error_page(&fe, Some(&be), 504, guard);
                    }
                    // HAProxy: a client too slow with its body gets 408.
                    Err(ExchangeError::ClientTimeout) => {
                        return error_page(&fe, Some(&be), 408, guard);
                    }
                    // The client's own body was malformed or cut: its fault, HAProxy's 400.
                    Err(ExchangeError::ClientBody(e)) => {
                        tracing::debug!(error = %e, "client request body failed");
                        return error_page(&fe, Some(&be), 400, guard);
                    }
                    Err(e) => {
                        tracing::debug!(server = %srv.name, error = %e, "upstream request failed");
                        srv.state.counters.errors.fetch_add(1, Ordering::Relaxed);
                        break Err(false);
                    }
                }
                conn = Box::pin(upstream::connect(
                    srv.addr,
                    t.connect,
                    srv.tls.as_deref(),
                    proxy_header.as_deref(),
                ))
                .await;
            }
        };
        let answer = match resp {
            Err(true) => {
                // Connect failure: retry, redispatching to another server.
                attempts += 1;
                if let Some(l) = &mut guard.log {
                    l.retries = attempts;
                }
                guard.permit.take();
                if attempts > be.retries {
                    return error_page(&fe, Some(&be), 503, guard);
                }
                if be.redispatch && attempts == be.retries {
                    // `option redispatch`: the last retry goes to another server, breaking
                    // cookie persistence (a new cookie is set).
                    if idx < 128 {
                        avoid |= 1 << idx;
                    }
                    chosen = None;
                    insert_cookie = be.cookie.is_some();
                } else {
                    // Retry the same server after HAProxy's turn-around delay.
                    chosen = Some(idx);
                    let pause = t
                        .connect
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1));
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
            Err(false) => return error_page(&fe, Some(&be), 502, guard),
            Ok(a) => a,
        };
        if let (Some(l), Some(t0)) = (&mut guard.log, started) {
            l.t_response_ms = t0.elapsed().as_millis() as i64;
        }
        let answering = Answering {
            fe: &fe,
            be: &be,
            srv: &srv,
            req: &head,
            ctx: &ctx,
            insert_cookie,
        };
        return match answer {
            Answer::H1(r, up, complete) => {
                respond(&answering, r, up, complete, client_upgrade, counters, guard)
            }
            Answer::H2(r) => respond_h2(&answering, r, counters, guard),
        };
    }
}

/// A server's answer, by the protocol spoken to it.
enum Answer {
    /// The response head, the connection (its body is read from it), and whether the
    /// request went out whole.
    H1(ResponseHead, UpConn, bool),
    H2(Response<Incoming>),
}

/// The request as an HTTP/2 server gets it.
struct H2Req<'a> {
    head: &'a http::request::Parts,
    te_trailers: bool,
    /// May go out again on a fresh connection when a reused one turns out closed.
    replayable: bool,
    client_timeout: Option<Duration>,
}

/// Why an exchange with an HTTP/2 server gave no response.
enum H2Fail {
    /// No connection (or no HTTP/2 handshake): retried like a refused connection.
    Connect,
    /// The answer the client gets instead.
    Page(u16),
}

/// One request to an HTTP/2 server (`proto h2`): a stream on this worker's connection to
/// it, the body streamed as the client sends it. Until the response head, `timeout server`
/// runs from the request's last progress, except while the upload waits for the client
/// (that is `timeout client`'s, applied by the body): as HAProxy, each side its own limit.
async fn exchange_h2(
    srv: &ServerRt,
    h2: &H2Conns,
    req: H2Req<'_>,
    body: &mut Option<Incoming>,
    counters: &Arc<CountersRef>,
    t: crate::config::model::Timeouts,
) -> Result<Response<Incoming>, H2Fail> {
    let mut may_replay = req.replayable;
    loop {
        let (mut tx, reused) = match h2.sender(t.connect).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(server = %srv.name, error = %e, "connect failed");
                srv.state.counters.errors.fetch_add(1, Ordering::Relaxed);
                return Err(H2Fail::Connect);
            }
        };
        let upload = Upload::new();
        let b = RequestBody::new(
            body.take(),
            counters.clone(),
            req.client_timeout,
            upload.clone(),
        );
        let request = h2_request(req.head, req.te_trailers, srv.addr, b);
        let sent = async {
            tx.ready().await?;
            tx.send_request(request).await
        };
        let res = match t.server {
            Some(d) => {
                let mut sent = std::pin::pin!(sent);
                loop {
                    let due = if upload.waiting_on_client() {
                        Instant::now() + d
                    } else {
                        upload.last_active() + d
                    };
                    match tokio::time::timeout_at(due, sent.as_mut()).await {
                        Ok(r) => break r,
                        Err(_)
                            if !upload.waiting_on_client()
                                && upload.last_active() + d <= Instant::now() =>
                        {
                            return Err(H2Fail::Page(504));
                        }
                        Err(_) => {}
                    }
                }
            }
            None => sent.await,
        };
        let e = match res {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        match upload.fault() {
            Some(ClientFault::Timeout) => return Err(H2Fail::Page(408)),
            Some(ClientFault::Body) => return Err(H2Fail::Page(400)),
            None => {}
        }
        if reused && may_replay {
            // The connection closed under the request (e.g. the server's GOAWAY): once more
            // on a fresh one.
            tracing::debug!(server = %srv.name, error = %e, "replaying on a fresh HTTP/2 connection");
            h2.drop_current();
            may_replay = false;
            continue;
        }
        tracing::debug!(server = %srv.name, error = %e, "HTTP/2 request failed");
        srv.state.counters.errors.fetch_add(1, Ordering::Relaxed);
        return Err(H2Fail::Page(502));
    }
}

/// The HTTP/2 form of a request: `:authority` from Host (else the absolute target, else
/// the server's address), `:scheme` http (the server connection is cleartext), `:path` the
/// origin form; the connection-specific fields were removed already.
fn h2_request(
    head: &http::request::Parts,
    te_trailers: bool,
    server: SocketAddr,
    body: RequestBody,
) -> Request<RequestBody> {
    let mut headers = head.headers.clone();
    let host = headers.remove(header::HOST);
    let authority = host
        .as_ref()
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .or_else(|| head.uri.authority().cloned())
        .or_else(|| http::uri::Authority::try_from(server.to_string()).ok());
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut uri = http::Uri::builder().scheme("http").path_and_query(path);
    if let Some(a) = authority {
        uri = uri.authority(a);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let mut r = Request::new(body);
    *r.method_mut() = head.method.clone();
    *r.uri_mut() = uri.build().unwrap_or_else(|_| head.uri.clone());
    *r.version_mut() = Version::HTTP_2;
    *r.headers_mut() = headers;
    r
}

/// The response of an HTTP/2 server toward the client.
fn respond_h2(
    a: &Answering<'_>,
    resp: Response<Incoming>,
    counters: Arc<CountersRef>,
    mut guard: Guard,
) -> Response<RespBody> {
    let (parts, body) = resp.into_parts();
    let parts = match a.client_head(parts.status, parts.headers, &mut guard) {
        Ok(p) => p,
        // Denied: the stream is reset as its body is dropped.
        Err(code) => return error_page(a.fe, Some(a.be), code, guard),
    };
    let body = RespBody::upstream(Src::H2(body), guard, counters, a.be.timeouts.server);
    Response::from_parts(parts, body)
}

/// What a server's response is answered in: the request and where it went.
struct Answering<'a> {
    fe: &'a FrontendRt,
    be: &'a BackendRt,
    srv: &'a Arc<ServerRt>,
    /// The request head as sent to the server (`http-response` conditions see it).
    req: &'a http::request::Parts,
    ctx: &'a ConnCtx,
    /// Set the persistence cookie naming the server.
    insert_cookie: bool,
}

impl Answering<'_> {
    /// The client's response head from the server's: `http-response` rules applied, the
    /// persistence cookie added, the final status counted and logged. `Err(code)`: a rule
    /// denied the response; the client gets that error page instead.
    fn client_head(
        &self,
        mut status: StatusCode,
        mut headers: HeaderMap,
        guard: &mut Guard,
    ) -> Result<http::response::Parts, u16> {
        let mut reason = None;
        if !self.be.response_rules.is_empty() || !self.fe.response_rules.is_empty() {
            let mut res = ResponseEdit {
                status: &mut status,
                headers: &mut headers,
                reason: None,
            };
            let lists = [&self.be.response_rules[..], &self.fe.response_rules[..]];
            apply_response_rules(lists, self.fe, self.req, self.ctx, &mut res)?;
            reason = res.reason;
        }
        guard.status(status.as_u16());
        if self.insert_cookie {
            add_persistence_cookie(self.be, self.srv, &self.req.method, status, &mut headers);
        }
        let mut r = Response::new(());
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        if let Some(reason) = reason {
            r.extensions_mut().insert(reason);
        }
        Ok(r.into_parts().0)
    }
}

/// `cookie NAME insert`: names the server that answered (`NAME=value; path=/`), marked
/// private for caches under `nocache` when the response is cacheable.
fn add_persistence_cookie(
    be: &BackendRt,
    srv: &ServerRt,
    method: &Method,
    status: StatusCode,
    headers: &mut HeaderMap,
) {
    let Some(ck) = &be.cookie else {
        return;
    };
    let mut v = Vec::with_capacity(ck.name.len() + srv.cookie.len() + 10);
    v.extend_from_slice(ck.name.as_bytes());
    v.push(b'=');
    v.extend_from_slice(srv.cookie.as_bytes());
    v.extend_from_slice(b"; path=/");
    if let Ok(hv) = HeaderValue::from_bytes(&v) {
        let nocache = ck.nocache && cacheable(method, status, headers);
        headers.append(header::SET_COOKIE, hv);
        if nocache {
            headers.append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        }
    }
}

fn respond(
    a: &Answering<'_>,
    head: ResponseHead,
    up: UpConn,
    complete: bool,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    counters: Arc<CountersRef>,
    mut guard: Guard,
) -> Response<RespBody> {
    // (The codec already left out the connection-specific fields.)
    let ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
        tunnel: is_tunnel,
        ..
    } = head;
    let parts = match a.client_head(status, headers, &mut guard) {
        Ok(p) => p,
        // Denied: the server connection is closed, not pooled, as it is dropped.
        Err(code) => return error_page(a.fe, Some(a.be), code, guard),
    };
    // The body reader takes the connection; a tunnel takes it whole.
    if is_tunnel {
        return tunnel(a.fe, a.be, parts, up, client_upgrade, counters, guard);
    }
    let keep_alive = keep_alive && a.srv.send_proxy.is_none();
    let body = ResponseBody::new(up, framing, keep_alive, complete, a.srv.pool.clone());
    let body = RespBody::upstream(Src::Up(body), guard, counters, a.be.timeouts.server);
    Response::from_parts(parts, body)
}

/// A 101 from the server, or a 2xx to CONNECT: the client's and the server's connections
/// are joined, with `timeout tunnel` (else `timeout server`) as the idle limit.
fn tunnel(
    fe: &FrontendRt,
    be: &BackendRt,
    mut parts: http::response::Parts,
    up: UpConn,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    counters: Arc<CountersRef>,
    guard: Guard,
) -> Response<RespBody> {
    let Some(client_up) = client_upgrade else {
        return error_page(fe, Some(be), 502, guard);
    };
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let tunnel_idle = be.timeouts.tunnel.or(be.timeouts.server);
    let (mut server, early) = up.into_parts();
    tokio::spawn(async move {
        let client = match client_up.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "client upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        // Whatever the server sent right after its 101 head goes first.
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        let (a, b) = crate::l7::tcp::pipe(&mut client, &mut server, tunnel_idle).await;
        counters.add_in(a);
        counters.add_out(b + early.len() as u64);
        drop(guard);
    });
    Response::from_parts(parts, RespBody::full(Bytes::new(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_and_host_compare_like_haproxy() {
        let http = Some("http");
        assert!(same_authority(http, b"a.example", b"A.Example"));
        assert!(same_authority(http, b"a.example:80", b"a.example"));
        assert!(same_authority(http, b"a.example", b" a.example:80 "));
        assert!(same_authority(
            Some("https"),
            b"a.example",
            b"a.example:443"
        ));
        assert!(!same_authority(
            Some("https"),
            b"a.example",
            b"a.example:80"
        ));
        assert!(!same_authority(http, b"a.example:8080", b"a.example"));
        assert!(!same_authority(http, b"a.example", b"b.example"));
    }

    #[test]
    fn cookie_find_and_strip() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; SRV=s2; SRVX=9"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("SRV=zz"));
        assert_eq!(find_cookie(&h, "SRV"), Some(&b"s2"[..]));
        strip_cookie(&mut h, "SRV");
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, vec!["a=1; SRVX=9"]);
    }

    #[test]
    fn cacheability() {
        // HAProxy 2.6, observed: no freshness and no validator → nothing a cache could store.
        let mut h = HeaderMap::new();
        assert!(!cacheable(&Method::GET, StatusCode::OK, &h));
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert!(cacheable(&Method::GET, StatusCode::OK, &h));
        assert!(!cacheable(&Method::POST, StatusCode::OK, &h));
        assert!(!cacheable(&Method::GET, StatusCode::FOUND, &h));
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        assert!(cacheable(&Method::GET, StatusCode::OK, &h));
        h.insert(header::EXPIRES, HeaderValue::from_static("0"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        assert!(cacheable(&Method::GET, StatusCode::FOUND, &h));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert!(!cacheable(&Method::GET, StatusCode::OK, &h));
        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        assert!(!cacheable(&Method::GET, StatusCode::OK, &h));
    }
}
