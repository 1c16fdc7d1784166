//! Stage 4: the client's response from a server's: `http-response` rules, the persistence
//! cookie, the body relay, or a tunnel for upgrades and `CONNECT`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use super::filter::Chain;
use super::rules::{self, Flow, ResponseEdit, RuleCtx};
use super::{ConnCtx, Guard, RespBody, Src, error_page, guarded};
use crate::l7::h1::conn::ClientUpgrade;
use crate::l7::runtime::{BackendRt, FrontendRt, ServerRt};
use crate::l7::upstream::codec::{self, RespFraming, ResponseHead};
use crate::l7::upstream::{CountersRef, ResponseBody, UpConn};
use crate::l7::{cache, compress};

/// What a server's response is answered in: the request and where it went.
pub(super) struct Answering<'a> {
    pub fe: &'a FrontendRt,
    pub be: &'a BackendRt,
    pub srv: &'a Arc<ServerRt>,
    /// The request head as sent to the server (`http-response` conditions see it).
    pub req: &'a http::request::Parts,
    pub ctx: &'a ConnCtx,
    /// Set the persistence cookie naming the server.
    pub insert_cookie: bool,
}

/// A server's answer, by the protocol spoken to it.
pub(super) enum Answer {
    /// The response head, the connection (its body is read from it), and whether the
    /// request went out whole.
    H1(ResponseHead, UpConn, bool),
    H2(Response<Incoming>),
}

/// Stage 4: the client's response from a server's answer.
pub(super) fn respond(
    a: &Answering<'_>,
    answer: Answer,
    client_upgrade: Option<ClientUpgrade>,
    counters: Arc<CountersRef>,
    guard: Guard,
) -> Response<RespBody> {
    match answer {
        Answer::H1(r, up, complete) => {
            respond_h1(a, r, up, complete, client_upgrade, counters, guard)
        }
        Answer::H2(r) => super::h2::respond(a, r, counters, guard),
    }
}

impl Answering<'_> {
    /// The client's response head from the server's: `http-response` rules applied, the
    /// persistence cookie added, the final status counted and logged, and the body filters
    /// (the cache's store, compression) it gets. `framed`: the body's end is known
    /// (not read until the server closes). `Err(page)`: a rule denied the response; the
    /// client gets that error page instead.
    pub(super) fn client_head(
        &self,
        status: StatusCode,
        headers: HeaderMap,
        framed: bool,
        guard: &mut Guard,
        counters: &CountersRef,
    ) -> Result<(http::response::Parts, Chain), Box<Response<RespBody>>> {
        let cookie = self.insert_cookie.then_some(&**self.srv);
        let r = Responding {
            fe: self.fe,
            be: self.be,
            req: self.req,
            ctx: self.ctx,
        };
        r.head(status, headers, framed, cookie, guard, Some(counters))
    }
}

/// A response head on its way to the client, from a server or from a cache.
pub(super) struct Responding<'a> {
    pub fe: &'a FrontendRt,
    pub be: &'a BackendRt,
    pub req: &'a http::request::Parts,
    pub ctx: &'a ConnCtx,
}

impl Responding<'_> {
    /// See [`Answering::client_head`]; `cookie`: the server the persistence cookie names.
    fn head(
        &self,
        mut status: StatusCode,
        mut headers: HeaderMap,
        framed: bool,
        cookie: Option<&ServerRt>,
        guard: &mut Guard,
        counters: Option<&CountersRef>,
    ) -> Result<(http::response::Parts, Chain), Box<Response<RespBody>>> {
        let mut reason = None;
        let mut store = None;
        if !self.be.response_rules.is_empty() || !self.fe.response_rules.is_empty() {
            let mut res = ResponseEdit {
                status: &mut status,
                headers: &mut headers,
                reason: None,
                store: None,
            };
            let lists = [&self.be.response_rules[..], &self.fe.response_rules[..]];
            let rc = RuleCtx {
                ctx: self.ctx,
                fe: self.fe,
                be: Some(self.be),
            };
            if let Flow::Stop(denied) = rules::response_rules(lists, self.req, &rc, &mut res) {
                return Err(denied);
            }
            reason = res.reason;
            store = res.store;
        }
        guard.status(status.as_u16());
        if let Some(srv) = cookie {
            add_persistence_cookie(self.be, srv, &self.req.method, status, &mut headers);
        }
        let mut chain = Chain::default();
        if let Some(s) = store {
            chain.push(Box::new(s));
        }
        let settings = compress::Settings {
            fe: self.fe.compression.as_ref(),
            be: self.be.compression.as_ref(),
        };
        if settings.any() {
            let facts = compress::ResponseFacts {
                method: &self.req.method,
                req_version: self.req.version,
                status,
                framed,
            };
            let algo = self
                .req
                .extensions
                .get::<compress::Negotiated>()
                .map(|n| n.0);
            if let Some(enc) = compress::response(settings, algo, &facts, &mut headers) {
                chain.push(Box::new(enc));
            }
        }
        // The head counts in `bytes_out` as HAProxy counts it (status line, fields, the
        // empty line; the body is counted as it goes).
        if let Some(counters) = counters {
            let line = "HTTP/1.1 200 \r\n".len() + status.canonical_reason().map_or(0, str::len);
            counters.add_out((line + codec::fields_len(&headers) + 2) as u64);
        }
        let mut r = Response::new(());
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        if let Some(reason) = reason {
            r.extensions_mut().insert(reason);
        }
        Ok((r.into_parts().0, chain))
    }
}

/// The client's response from a cache entry: the entry's head (with `Age`, or a 304, see
/// [`cache::hit_response`]) through the response rules (`res.cache_hit` true) and
/// compression, as HAProxy answers from its cache; logged with the server `<CACHE>`.
pub(super) fn from_cache(
    r: &Responding<'_>,
    entry: &cache::store::Entry,
    mut guard: Guard,
) -> Response<RespBody> {
    let (status, headers, body) = cache::hit_response(entry, r.req);
    if let Some(l) = &mut guard.log {
        l.server = CACHE_SERVER.clone();
    }
    match r.head(status, headers, true, None, &mut guard, None) {
        Ok((mut parts, chain)) => {
            // (For http-after-response, which sees a copy of the request.)
            if let Some(m) = r.req.extensions.get::<cache::HitMark>() {
                parts.extensions.insert(m.clone());
            }
            let mut body = RespBody::full(body, None).with_filters(chain);
            body.guard = Some(guard);
            Response::from_parts(parts, body)
        }
        Err(denied) => guarded(*denied, guard),
    }
}

static CACHE_SERVER: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("<CACHE>"));

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

fn respond_h1(
    a: &Answering<'_>,
    head: ResponseHead,
    up: UpConn,
    complete: bool,
    client_upgrade: Option<ClientUpgrade>,
    counters: Arc<CountersRef>,
    mut guard: Guard,
) -> Response<RespBody> {
    // (The codec already left out the connection-specific fields.)
    let ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
        tunnel: is_tunnel,
    } = head;
    let framed =
        !is_tunnel && !matches!(framing, RespFraming::Close) && version >= http::Version::HTTP_11;
    let (parts, filters) = match a.client_head(status, headers, framed, &mut guard, &counters) {
        Ok(p) => p,
        // Denied: the server connection is closed, not pooled, as it is dropped.
        Err(denied) => return guarded(*denied, guard),
    };
    // The body reader takes the connection; a tunnel takes it whole.
    if is_tunnel {
        return tunnel(a.fe, a.be, parts, up, client_upgrade, counters, guard);
    }
    let keep_alive = keep_alive && a.srv.send_proxy.is_none();
    let body = ResponseBody::new(up, framing, keep_alive, complete, a.srv.pool.clone());
    let body = RespBody::upstream(Src::Up(body), guard, counters, a.be.timeouts.server)
        .with_filters(filters);
    Response::from_parts(parts, body)
}

/// A 101 from the server, or a 2xx to CONNECT: the client's and the server's connections
/// are joined, with `timeout tunnel` (else `timeout server`) as the idle limit.
fn tunnel(
    fe: &FrontendRt,
    be: &BackendRt,
    mut parts: http::response::Parts,
    up: UpConn,
    client_upgrade: Option<ClientUpgrade>,
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
    // From here `timeout tunnel` is the connection's limit (the tunnel copy's), not
    // `timeout client` on each write.
    guard
        .ctx
        .shared
        .tunnel
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut server, early) = up.into_parts();
    // `shutdown sessions` of the server ends the tunnel.
    let stop = guard.srv.as_ref().map(|s| s.state.shutdown_signal());
    tokio::spawn(async move {
        let (mut client, client_early) = match client_up.into_stream().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "client upgrade failed");
                return;
            }
        };
        // Whatever either side sent right after the heads goes first.
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        if !client_early.is_empty() && server.write_all(&client_early).await.is_err() {
            return;
        }
        let stop = async move {
            match stop {
                Some(s) => s.await,
                None => std::future::pending().await,
            }
        };
        let (a, b) = crate::l7::tcp::pipe_until(&mut client, &mut server, tunnel_idle, stop).await;
        counters.add_in(a + client_early.len() as u64);
        counters.add_out(b + early.len() as u64);
        drop(guard);
    });
    Response::from_parts(parts, RespBody::full(Bytes::new(), None))
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

#[cfg(test)]
mod tests {
    use super::*;

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
