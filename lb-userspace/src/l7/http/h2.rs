//! Stage 3 toward an HTTP/2 server (`proto h2`), and its response toward the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::forward::{Attempt, Failure};
use super::respond::Answering;
use super::{Guard, RespBody, Src, guarded};
use crate::l7::h1::body::ReqBody;
use crate::l7::upstream::CountersRef;
use crate::l7::upstream::h2::{H2Conns, RequestBody, Upload};

/// One request to an HTTP/2 server (`proto h2`): a stream on this worker's connection to
/// it, the body streamed as the client sends it. Until the response head, `timeout server`
/// runs from the request's last progress, except while the upload waits for the client
/// (that is `timeout client`'s, applied by the body): as HAProxy, each side its own limit.
pub(super) async fn exchange(
    a: &Attempt<'_>,
    h2: &H2Conns,
    body: &mut Option<ReqBody>,
    counters: &Arc<CountersRef>,
) -> Result<Response<Incoming>, Failure> {
    let Attempt {
        srv,
        req,
        client_timeout,
        t,
        ..
    } = *a;
    let mut may_replay = req.replayable;
    loop {
        let (mut tx, reused) = match h2.sender(t.connect).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(server = %srv.name, error = %e, "connect failed");
                srv.state.counters.errors.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::Connect);
            }
        };
        let upload = Upload::new();
        let b = RequestBody::new(
            body.take(),
            counters.clone(),
            client_timeout,
            upload.clone(),
        );
        let request = request(req.head, srv.addr, b);
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
                            return Err(Failure::Timeout);
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
        if let Some(fault) = upload.fault() {
            return Err(Failure::Client(fault));
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
        return Err(Failure::Upstream);
    }
}

/// The HTTP/2 form of a request: `:authority` from Host (else the absolute target, else
/// the server's address), `:scheme` http (the server connection is cleartext), `:path` the
/// origin form; the connection-specific fields were removed already.
fn request(
    head: &http::request::Parts,
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
    let mut r = Request::new(body);
    *r.method_mut() = head.method.clone();
    *r.uri_mut() = uri.build().unwrap_or_else(|_| head.uri.clone());
    *r.version_mut() = Version::HTTP_2;
    *r.headers_mut() = headers;
    r
}

/// The response of an HTTP/2 server toward the client.
pub(super) fn respond(
    a: &Answering<'_>,
    resp: Response<Incoming>,
    counters: Arc<CountersRef>,
    mut guard: Guard,
) -> Response<RespBody> {
    let (parts, body) = resp.into_parts();
    let (parts, filters) =
        match a.client_head(parts.status, parts.headers, true, &mut guard, &counters) {
            Ok(p) => p,
            // Denied: the stream is reset as its body is dropped.
            Err(denied) => return guarded(*denied, guard),
        };
    let body = RespBody::upstream(Src::H2(body), guard, counters, a.be.timeouts.server)
        .with_filters(filters);
    Response::from_parts(parts, body)
}
