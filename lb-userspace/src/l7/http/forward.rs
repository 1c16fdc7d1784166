//! Stages 2 and 3: pick a server (cookie persistence first), admit the request under the
//! server's `maxconn`, exchange with it over its protocol ([`super::h1`], [`super::h2`]),
//! retrying what a [`Failure`] says may be retried, then hand the answer to
//! [`super::respond`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, Version};
use hyper::body::Body;
use tokio::time::Instant;

use super::respond::{self, Answer, Answering};
use super::{ConnCtx, Guard, RespBody, error_page, h1, h2};
use crate::config::model::Timeouts;
use crate::l7::balance::PickCtx;
use crate::l7::h1::body::ReqBody;
use crate::l7::h1::conn::ClientUpgrade;
use crate::l7::runtime::{BackendRt, FrontendRt, ServerRt};
use crate::l7::upstream::codec::{self, ReqFraming};
use crate::l7::upstream::h2::ClientFault;
use crate::l7::upstream::{CountersRef, ExchangeError};

/// Why one attempt at a server gave no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// No connection (refused, `timeout connect`, TLS or HTTP/2 handshake): retried per
    /// `retries`, the last time elsewhere with `option redispatch`; in the end 503.
    Connect,
    /// The server failed the exchange (closed, reset, a malformed response): 502.
    Upstream,
    /// `timeout server` passed: 504.
    Timeout,
    /// The client's part failed: its body too slow (408) or malformed or cut (400).
    Client(ClientFault),
}

impl Failure {
    /// Whether the request may go out again (nothing of it reached a server).
    pub(super) fn retryable(self) -> bool {
        matches!(self, Failure::Connect)
    }

    /// The status the client gets when the failure is final.
    pub(super) fn status(self) -> u16 {
        match self {
            Failure::Connect => 503,
            Failure::Upstream => 502,
            Failure::Timeout => 504,
            Failure::Client(ClientFault::Timeout) => 408,
            Failure::Client(ClientFault::Body) => 400,
        }
    }

    /// An HTTP/1 exchange's error, when it is final (not a closed pooled connection).
    pub(super) fn of_exchange(e: &ExchangeError) -> Self {
        match e {
            ExchangeError::ServerTimeout => Failure::Timeout,
            ExchangeError::ClientTimeout => Failure::Client(ClientFault::Timeout),
            ExchangeError::ClientBody(_) => Failure::Client(ClientFault::Body),
            ExchangeError::NotSent(_)
            | ExchangeError::Closed
            | ExchangeError::Io(_)
            | ExchangeError::Codec(_) => Failure::Upstream,
        }
    }
}

/// The request as it goes to a server, fixed before the first attempt.
pub(super) struct Outbound<'a> {
    pub head: &'a http::request::Parts,
    /// The HTTP/1 request target: origin form, or authority form for `CONNECT`.
    pub target: &'a str,
    /// HTTP/1.1, or HTTP/1.0 for an HTTP/1.0 request without Host.
    pub version: Version,
    pub framing: ReqFraming,
    /// May go out again on a fresh connection if a pooled one turns out closed (RFC 9110
    /// §9.2.2).
    pub replayable: bool,
}

/// One attempt at a server, as its protocol's exchange ([`super::h1`], [`super::h2`])
/// makes it.
#[derive(Clone, Copy)]
pub(super) struct Attempt<'a> {
    pub ctx: &'a ConnCtx,
    pub srv: &'a ServerRt,
    pub req: &'a Outbound<'a>,
    pub client_timeout: Option<Duration>,
    pub t: Timeouts,
}

/// The server choice so far: a persistence cookie's server, and whether the response sets
/// the cookie.
struct Sticky {
    chosen: Option<usize>,
    insert_cookie: bool,
}

/// `balance uri`: the key is the path (with `whole`, path and query), as in HAProxy.
fn pick_ctx(be: &BackendRt, head: &http::request::Parts, ctx: &ConnCtx) -> PickCtx {
    match be.balance {
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
    }
}

/// The persistence cookie's server, if the request names a usable one (`indirect`: the
/// cookie is taken out of the request).
fn persistence(be: &BackendRt, headers: &mut HeaderMap) -> Sticky {
    let mut sticky = Sticky {
        chosen: None,
        insert_cookie: false,
    };
    if let Some(ck) = &be.cookie {
        if let Some(v) = find_cookie(headers, &ck.name) {
            sticky.chosen = be.by_cookie(v);
        }
        sticky.insert_cookie = sticky.chosen.is_none();
        if ck.indirect {
            strip_cookie(headers, &ck.name);
        }
    }
    sticky
}

/// A server for the next attempt: servers at their maxconn are skipped while another has
/// room (HAProxy); when all are full the request queues on the one the algorithm picks.
/// `avoid`: the servers that failed (redispatch).
fn pick(be: &BackendRt, pick_ctx: &PickCtx, avoid: u128) -> Option<usize> {
    let failed = |i: usize| i < 128 && (avoid >> i) & 1 == 1;
    let full = |i: usize| {
        be.servers[i]
            .queue
            .as_ref()
            .is_some_and(|q| q.available_permits() == 0)
    };
    be.pick_cached(pick_ctx, &|i| failed(i) || full(i))
        .or_else(|| be.pick(pick_ctx, &failed))
        .or_else(|| {
            // Every usable server failed once: try them again rather than give up.
            if avoid != 0 {
                be.pick(pick_ctx, &|_| false)
            } else {
                None
            }
        })
}

/// `maxconn`: waits in the server's FIFO queue, up to `timeout queue` (else `timeout
/// connect`); the permit is held by the request's guard. `false`: no room in time (503).
async fn admit(srv: &ServerRt, be: &BackendRt, guard: &mut Guard) -> bool {
    let Some(q) = &srv.queue else {
        return true;
    };
    let t = be.timeouts;
    let acquire = q.clone().acquire_owned();
    let permit = match t.queue.or(t.connect) {
        Some(d) => match tokio::time::timeout(d, acquire).await {
            Ok(Ok(p)) => p,
            _ => return false,
        },
        None => match acquire.await {
            Ok(p) => p,
            Err(_) => return false,
        },
    };
    guard.permit = Some(permit);
    true
}

/// Rewrites the request toward the server: the connection-specific fields go (an
/// upgrade's `Connection: upgrade` stays), `option forwardfor` adds X-Forwarded-For and
/// X-Forwarded-Proto. Returns whether the client asked for trailers.
fn rewrite(
    head: &mut http::request::Parts,
    upgrade: bool,
    forwardfor: bool,
    ctx: &ConnCtx,
) -> bool {
    let te_trailers = strip_hop_by_hop(&mut head.headers, upgrade);
    if upgrade {
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if forwardfor {
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
    te_trailers
}

/// Stages 2 to 4 of a request that passed [`super::prepare`].
pub(super) async fn forward(
    ctx: Arc<ConnCtx>,
    fe: Arc<FrontendRt>,
    be: Arc<BackendRt>,
    mut head: http::request::Parts,
    body: ReqBody,
    mut guard: Guard,
) -> Response<RespBody> {
    let pick_ctx = pick_ctx(&be, &head, &ctx);
    let mut sticky = persistence(&be, &mut head.headers);

    let upgrade = is_upgrade(&head);
    // CONNECT: a 2xx from the server turns both connections into a tunnel, as an upgrade.
    let connect = head.method == Method::CONNECT;
    let client_upgrade = (upgrade || connect).then(|| ClientUpgrade::of(&mut head));
    let te_trailers = rewrite(&mut head, upgrade, fe.forwardfor || be.forwardfor, &ctx);
    if te_trailers {
        // Of the client's TE, `trailers` goes on (HAProxy sends `te: trailers`; gRPC
        // servers need it).
        head.headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let framing = if body.is_end_stream() {
        ReqFraming::Empty
    } else if head.headers.contains_key(header::CONTENT_LENGTH) {
        ReqFraming::Length
    } else {
        ReqFraming::Chunked
    };
    let head = &head;
    let out = Outbound {
        head,
        // Origin form toward the server, whatever form the client used; CONNECT keeps its
        // authority form (`host:port`).
        target: match (connect, head.uri.authority()) {
            (true, Some(a)) => a.as_str(),
            _ => head.uri.path_and_query().map_or("/", |p| p.as_str()),
        },
        // HTTP/1.1 toward the server, except for an HTTP/1.0 request without Host, which
        // would become an invalid HTTP/1.1 one: it goes as HTTP/1.0, as HAProxy relays it,
        // on a connection not reused after it.
        version: if head.version == Version::HTTP_10 && !head.headers.contains_key(header::HOST) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        },
        framing,
        // Other requests get pooled connections checked for a close first.
        replayable: framing == ReqFraming::Empty && head.method.is_idempotent(),
    };

    let mut avoid: u128 = 0;
    let mut attempts: u32 = 0;
    let mut body = Some(body);
    // Phase timings are only read by the access log.
    let started = guard.log.is_some().then(Instant::now);
    loop {
        let Some(idx) = sticky.chosen.or_else(|| pick(&be, &pick_ctx, avoid)) else {
            return error_page(&fe, Some(&be), 503, guard);
        };
        let srv = be.servers[idx].clone();
        guard.set_server(&srv);
        if srv.h2.is_some() && client_upgrade.is_some() {
            // HTTP/2 has no Upgrade; RFC 8441's extended CONNECT is not spoken to servers.
            tracing::debug!(server = %srv.name, "upgrade or CONNECT toward an HTTP/2 server");
            return error_page(&fe, Some(&be), 502, guard);
        }
        if !admit(&srv, &be, &mut guard).await {
            return error_page(&fe, Some(&be), 503, guard);
        }
        if let (Some(l), Some(t0)) = (&mut guard.log, started) {
            l.t_wait_ms = t0.elapsed().as_millis() as i64;
        }

        let counters = Arc::new(CountersRef {
            frontend: fe.counters.clone(),
            backend: be.state.clone(),
            server: srv.state.clone(),
        });
        let conn_started = started.map(|_| Instant::now());
        let attempt = Attempt {
            ctx: &ctx,
            srv: &srv,
            req: &out,
            client_timeout: fe.timeouts.client,
            t: be.timeouts,
        };
        let answer = match &srv.h2 {
            Some(conns) => {
                let r = Box::pin(h2::exchange(&attempt, conns, &mut body, &counters)).await;
                if r.is_ok() {
                    guard.connected(conn_started);
                }
                r.map(Answer::H2)
            }
            None => h1::exchange(&attempt, &mut body, &counters, &mut guard, conn_started)
                .await
                .map(|(h, up, complete)| Answer::H1(h, up, complete)),
        };
        match answer {
            Ok(answer) => {
                // The request head counts in `bytes_in` as HAProxy counts it (its body is
                // counted as it goes).
                counters.add_in(request_head_len(&out));
                if let (Some(l), Some(t0)) = (&mut guard.log, started) {
                    l.t_response_ms = t0.elapsed().as_millis() as i64;
                }
                let answering = Answering {
                    fe: &fe,
                    be: &be,
                    srv: &srv,
                    req: head,
                    ctx: &ctx,
                    insert_cookie: sticky.insert_cookie,
                };
                return respond::respond(&answering, answer, client_upgrade, counters, guard);
            }
            Err(f) if f.retryable() => {}
            Err(f) => return error_page(&fe, Some(&be), f.status(), guard),
        }
        // Retry (a connect failure), redispatching to another server.
        attempts += 1;
        if let Some(l) = &mut guard.log {
            l.retries = attempts;
        }
        guard.permit.take();
        if attempts > be.retries {
            return error_page(&fe, Some(&be), Failure::Connect.status(), guard);
        }
        if be.redispatch && attempts == be.retries {
            // `option redispatch`: the last retry goes to another server, breaking cookie
            // persistence (a new cookie is set).
            if idx < 128 {
                avoid |= 1 << idx;
            }
            sticky.chosen = None;
            sticky.insert_cookie = be.cookie.is_some();
        } else {
            // Retry the same server after HAProxy's turn-around delay.
            sticky.chosen = Some(idx);
            let pause = be
                .timeouts
                .connect
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::time::sleep(pause).await;
        }
    }
}

/// The size of the request head as it goes to the server (request line, fields, the
/// empty line).
fn request_head_len(out: &Outbound<'_>) -> u64 {
    let line = out.head.method.as_str().len() + 1 + out.target.len() + " HTTP/1.1\r\n".len();
    (line + codec::fields_len(&out.head.headers) + 2) as u64
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn failures_know_their_retry_and_status() {
        assert!(Failure::Connect.retryable());
        for f in [
            Failure::Upstream,
            Failure::Timeout,
            Failure::Client(ClientFault::Timeout),
            Failure::Client(ClientFault::Body),
        ] {
            assert!(!f.retryable(), "{f:?}");
        }
        assert_eq!(Failure::Upstream.status(), 502);
        assert_eq!(Failure::Timeout.status(), 504);
        assert_eq!(Failure::Client(ClientFault::Timeout).status(), 408);
        assert_eq!(Failure::Client(ClientFault::Body).status(), 400);
    }
}
