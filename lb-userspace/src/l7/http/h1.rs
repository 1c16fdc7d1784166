//! Stage 3 toward an HTTP/1.1 server: lb's own client on a pooled or new connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::forward::{Attempt, Failure};
use super::{Guard, with_server_timeout};
use crate::l7::h1::body::ReqBody;
use crate::l7::h1::conn::Interim;
use crate::l7::upstream::codec::{self, ReqFraming, ResponseHead};
use crate::l7::upstream::exchange::UploadTimeouts;
use crate::l7::upstream::{self, Conn, CountersRef, ExchangeError, UpConn};

/// Sends the request on an idle pooled connection, else a new one (always new with
/// `send-proxy`: such a connection is its client's, as in HAProxy), and reads the
/// response head. A pooled connection the server had closed is replaced by a new one
/// when nothing of the request was consumed, or when it is replayable. Returns the
/// head, the connection (its body is read from it) and whether the request went out
/// whole.
pub(super) async fn exchange(
    a: &Attempt<'_>,
    body: &mut Option<ReqBody>,
    counters: &Arc<CountersRef>,
    guard: &mut Guard,
    conn_started: Option<Instant>,
) -> Result<(ResponseHead, UpConn, bool), Failure> {
    let Attempt {
        ctx,
        srv,
        req,
        client_timeout,
        t,
    } = *a;
    // New connections are boxed: their (large) handshake state would otherwise sit in
    // every request's future, which is moved into its box on each request.
    let proxy_header = srv
        .send_proxy
        .map(|v| crate::proxy_protocol::encode(v, ctx.src, ctx.local));
    let connect = || {
        Box::pin(upstream::connect(
            srv.addr,
            t.connect,
            srv.tls.as_deref(),
            proxy_header.as_deref(),
        ))
    };
    let pooled = match &proxy_header {
        None => srv.pool.take_idle(!req.replayable),
        Some(_) => None,
    };
    let mut conn = match pooled {
        Some(c) => Ok(c),
        None => connect().await,
    };
    loop {
        let mut c: Conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(server = %srv.name, error = %e, "connect failed");
                srv.state.counters.errors.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::Connect);
            }
        };
        guard.connected(conn_started);
        c.conn.wbuf.clear();
        codec::encode_request_head(
            &req.head.method,
            req.target,
            req.version,
            &req.head.headers,
            req.framing,
            &mut c.conn.wbuf,
        );
        let timeouts = UploadTimeouts {
            client: client_timeout,
            server: t.server,
        };
        let sent = upstream::exchange::send(
            &mut c.conn,
            &req.head.method,
            body,
            req.framing,
            counters,
            timeouts,
            req.head.extensions.get::<Interim>(),
        );
        let res = match t.server {
            // A body brings its own per-side timeouts (see `exchange::send`).
            Some(d) if req.framing == ReqFraming::Empty => {
                match with_server_timeout(ctx, sent, d).await {
                    Some(r) => r,
                    None => return Err(Failure::Timeout),
                }
            }
            _ => sent.await,
        };
        match res {
            Ok((mut h, complete)) => {
                // An HTTP/1.0 request asked for no keep-alive.
                h.keep_alive &= req.version != http::Version::HTTP_10;
                return Ok((h, c.conn, complete));
            }
            Err(ExchangeError::NotSent(_)) if c.reused => {}
            Err(ExchangeError::Closed) if c.reused && req.replayable => {
                tracing::debug!(server = %srv.name, "replaying on a fresh connection");
            }
            // Bytes that are no response head on a reused connection were left there
            // before this request (e.g. a body after a HEAD response): the connection is
            // dropped and the request replayed.
            Err(ExchangeError::Codec(e)) if c.reused && req.replayable && e.in_head() => {
                tracing::debug!(server = %srv.name, error = %e, "stray bytes on a reused connection; replaying on a fresh one");
            }
            Err(e) => {
                let f = Failure::of_exchange(&e);
                if f == Failure::Upstream {
                    tracing::debug!(server = %srv.name, error = %e, "upstream request failed");
                    srv.state.counters.errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    // The client's own body was malformed, cut or too slow, or the
                    // server too slow: HAProxy's 400, 408, 504.
                    tracing::debug!(error = %e, "request failed");
                }
                return Err(f);
            }
        }
        conn = connect().await;
    }
}
