//! Stage 1: what is decided from the request head alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use http::Request;
use http::header::{self, HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::respond::{self, Responding};
use super::rules::{self, Flow, RuleCtx};
use super::{
    ConnCtx, Guard, HandleFuture, NOSRV, ReqInput, done, error_page, forward, guarded,
    protocol_reject,
};
use crate::l7::h1::body::ReqBody;
use crate::l7::log::LogRecord;
use crate::l7::runtime::{BackendRt, FrontendRt};
use crate::l7::{cache, compress};

/// Stage 1 of a request: the limits, the frontend's rules, the backend choice and the
/// backend's rules; what passes goes on to [`forward`] (boxed).
pub(super) fn prepare(
    ctx: Arc<ConnCtx>,
    fe: Arc<FrontendRt>,
    req: Request<ReqBody>,
) -> HandleFuture {
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
            termination: *b"--",
            conns: Default::default(),
        }));
    }

    // Limits (hyper enforces the raw buffer size; these are the configured ones).
    // HAProxy's `tune.http.maxhdr` counts the request line: at most `max_headers - 1` fields.
    if head.headers.len() >= fe.max_headers {
        return done(protocol_reject(
            error_page(&fe, None, 400, guard),
            head.version,
        ));
    }
    let hbytes = crate::l7::upstream::codec::fields_len(&head.headers);
    // Over the limit: 400, as HAProxy answers a request larger than its buffer.
    if hbytes > fe.max_header_bytes {
        return done(protocol_reject(
            error_page(&fe, None, 400, guard),
            head.version,
        ));
    }

    if head.version <= http::Version::HTTP_11 {
        // Framing and Host as HAProxy's HTTP/1 parser checks them: a security boundary
        // (a rule may read one copy of Host while the server reads another).
        if let Some(code) = transfer_encoding_reject(&head.headers) {
            return done(protocol_reject(
                error_page(&fe, None, code, guard),
                head.version,
            ));
        }
        match repeated_host(&head.headers) {
            Hosts::Single => {}
            Hosts::Conflict => {
                return done(protocol_reject(
                    error_page(&fe, None, 400, guard),
                    head.version,
                ));
            }
            // Copies of one value are one Host, as HAProxy forwards it.
            Hosts::Repeated(v) => {
                head.headers.insert(header::HOST, v);
            }
        }
    }

    // An HTTP/1 absolute-form target names the host itself: a Host header that names
    // another one gets 400, as HAProxy answers (ACLs and routing read Host).
    if head.version <= http::Version::HTTP_11
        && let Some(a) = head.uri.authority()
        && let Some(h) = head.headers.get(header::HOST)
        && !same_authority(head.uri.scheme_str(), a.as_str().as_bytes(), h.as_bytes())
    {
        return done(protocol_reject(
            error_page(&fe, None, 400, guard),
            head.version,
        ));
    }

    // HTTP/2 carries the host in :authority; HAProxy exposes it as Host. When both are
    // present and differ, :authority wins (RFC 9113 §8.3.1, as HAProxy does): ACLs and the
    // server see the same value.
    if let Some(a) = head.uri.authority()
        && (head.version == http::Version::HTTP_2 || !head.headers.contains_key(header::HOST))
        && head
            .headers
            .get(header::HOST)
            .is_none_or(|h| h.as_bytes() != a.as_str().as_bytes())
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        head.headers.insert(header::HOST, v);
    }

    let rc = RuleCtx {
        ctx: &ctx,
        fe: &fe,
        be: None,
    };
    let flow = rules::request_rules(&fe.rules, &mut head, &rc);
    guard.track_from(&head, hbytes);
    if let Flow::Stop(r) = flow {
        return done(guarded(*r, guard));
    }
    if let Some(page) = &fe.stats
        && let Some(a) = crate::l7::stats_page::answer(page, &head)
    {
        return done(super::stats_response(&fe, page, a, guard));
    }

    let be = {
        let input = ReqInput::request(&head, &ctx, &fe);
        fe.pick_backend(&input)
    };
    let Some(be) = be else {
        return done(error_page(&fe, None, 503, guard));
    };
    guard.set_backend(&be);

    let rc = RuleCtx {
        ctx: &ctx,
        fe: &fe,
        be: Some(&be),
    };
    let flow = rules::request_rules(&be.rules, &mut head, &rc);
    guard.track_from(&head, hbytes);
    if let Flow::Stop(r) = flow {
        return done(guarded(*r, guard));
    }

    // `cache-use`: a fresh entry answers here; a URL another request is filling waits.
    let mut busy = None;
    if let Some(cache::UseMark(c)) = head.extensions.remove::<cache::UseMark>() {
        if !cache::lookupable(&head) {
            cache::bypass(&c, &mut head);
        } else {
            match cache::lookup(&c, &mut head, true) {
                Ok(Some(e)) => return done(hit(&ctx, &fe, &be, head, &c, &e, guard)),
                Ok(None) => {}
                Err(fill) => busy = Some((c, fill)),
            }
        }
    }

    futures_util::future::Either::Right(Box::pin(async move {
        if let Some((c, fill)) = busy {
            fill.wait(be.timeouts.server.unwrap_or(FILL_WAIT)).await;
            if let Ok(Some(e)) = cache::lookup(&c, &mut head, false) {
                return Ok(hit(&ctx, &fe, &be, head, &c, &e, guard));
            }
        }
        negotiate(&fe, &be, &mut head);
        Ok(forward::forward(ctx, fe, be, head, body, guard).await)
    }))
}

/// A cache hit's response (`res.cache_hit` true for the response rules).
fn hit(
    ctx: &ConnCtx,
    fe: &FrontendRt,
    be: &BackendRt,
    mut head: http::request::Parts,
    c: &cache::Cache,
    e: &cache::store::Entry,
    guard: Guard,
) -> http::Response<super::RespBody> {
    negotiate(fe, be, &mut head);
    head.extensions.insert(cache::HitMark(c.name.clone()));
    let r = Responding {
        fe,
        be,
        req: &head,
        ctx,
    };
    respond::from_cache(&r, e, guard)
}

/// How long a miss waits for another request's fill of the URL without `timeout server`.
const FILL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `compression`: the algorithm for the response, chosen from the request (once the
/// request rules ran, as HAProxy's filter sees it); with `offload` the server does not
/// see Accept-Encoding.
fn negotiate(fe: &FrontendRt, be: &BackendRt, head: &mut http::request::Parts) {
    let s = compress::Settings {
        fe: fe.compression.as_ref(),
        be: be.compression.as_ref(),
    };
    if s.any()
        && let Some(a) = compress::negotiate(s, &mut head.headers)
    {
        head.extensions.insert(compress::Negotiated(a));
    }
}

/// What the Host fields of a request say.
enum Hosts {
    /// None or one.
    Single,
    /// Several copies of one value (ASCII case aside): that value.
    Repeated(HeaderValue),
    /// Several different values: HAProxy's 400.
    Conflict,
}

fn repeated_host(headers: &HeaderMap) -> Hosts {
    let mut all = headers.get_all(header::HOST).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return Hosts::Single;
    };
    let first_bytes = first.as_bytes().trim_ascii();
    if headers
        .get_all(header::HOST)
        .iter()
        .all(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(first_bytes))
    {
        Hosts::Repeated(first.clone())
    } else {
        Hosts::Conflict
    }
}

/// A status for a request whose Transfer-Encoding HAProxy 2.6 refuses, as lb's HTTP/1
/// codec reads it ([`crate::l7::h1::TransferEncoding`]): `chunked` twice or a coding
/// after it 400, a coding before a final `chunked` 422 (`identity, chunked` with or
/// without Content-Length included: a server that honours Content-Length would frame the
/// message differently).
fn transfer_encoding_reject(headers: &HeaderMap) -> Option<u16> {
    let mut te = crate::l7::h1::TransferEncoding::default();
    let r = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .try_for_each(|v| te.add(v.as_bytes()))
        .and_then(|()| te.finish());
    r.err().map(|e| e.status())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::http::test_headers as headers;

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

    /// As HAProxy 2.6.12 answers (checked by the differential test).
    #[test]
    fn transfer_encoding_and_host_like_haproxy() {
        let te = |v: &[(&'static str, &'static str)]| transfer_encoding_reject(&headers(v));
        assert_eq!(te(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(te(&[("transfer-encoding", "Chunked")]), None);
        assert_eq!(te(&[("transfer-encoding", "identity, chunked")]), Some(422));
        assert_eq!(te(&[("transfer-encoding", "gzip, chunked")]), Some(422));
        assert_eq!(te(&[("transfer-encoding", "chunked, chunked")]), Some(400));
        assert_eq!(te(&[("transfer-encoding", "chunked, gzip")]), Some(400));
        assert_eq!(
            te(&[("transfer-encoding", "chunked, gzip, chunked")]),
            Some(400)
        );
        assert_eq!(te(&[("transfer-encoding", "gzip")]), Some(400));
        assert_eq!(
            te(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]),
            Some(400)
        );
        assert_eq!(te(&[]), None);
        let hosts = |v: &[(&'static str, &'static str)]| repeated_host(&headers(v));
        assert!(matches!(hosts(&[("host", "a")]), Hosts::Single));
        assert!(matches!(hosts(&[]), Hosts::Single));
        assert!(matches!(
            hosts(&[("host", "a"), ("host", "A")]),
            Hosts::Repeated(v) if v == "a"
        ));
        assert!(matches!(
            hosts(&[("host", "a"), ("host", "b")]),
            Hosts::Conflict
        ));
        assert!(matches!(
            hosts(&[("host", "a"), ("host", "a:80")]),
            Hosts::Conflict
        ));
        assert!(matches!(
            hosts(&[("host", "a"), ("host", "")]),
            Hosts::Conflict
        ));
    }
}
