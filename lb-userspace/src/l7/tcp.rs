//! Userspace `mode tcp`: plain TCP proxying with inactivity timeouts, and TLS passthrough
//! routed by the SNI of a peeked ClientHello (`tcp-request inspect-delay`, `req.ssl_sni`).
//! Also the bidirectional copy used by WebSocket tunnels.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::Counters;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::acl::AclInput;
use crate::config::model::TcpAction;
use crate::l7::balance::PickCtx;
use crate::l7::runtime::FrontendRt;
use crate::l7::tls::TlsInfo;
use crate::l7::upstream;

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("rejected by tcp-request rule")]
    Rejected,
    #[error("no backend")]
    NoBackend,
    #[error("no server available")]
    NoServer,
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Connect(#[from] upstream::UpstreamError),
}

/// Activity shared by both sides of a tunnel.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    bytes: [AtomicU64; 2],
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

struct Act<'a, T> {
    inner: &'a mut T,
    act: &'a Activity,
    side: usize,
}

impl<T: AsyncRead + Unpin> AsyncRead for Act<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.act.touch();
            this.act.bytes[this.side].fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Act<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Copies both ways until both sides close or nothing moves for `idle`. Returns the bytes
/// read from `a` and from `b`.
pub async fn pipe<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    pipe_until(a, b, idle, std::future::pending()).await
}

/// [`pipe`] that also stops when `stop` resolves (`shutdown sessions` of the server: the
/// caller then drops both connections).
pub async fn pipe_until<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let act = Activity {
        epoch: Instant::now(),
        last_ms: AtomicU64::new(0),
        bytes: [AtomicU64::new(0), AtomicU64::new(0)],
    };
    {
        let mut aa = Act {
            inner: a,
            act: &act,
            side: 0,
        };
        let mut bb = Act {
            inner: b,
            act: &act,
            side: 1,
        };
        let copy = tokio::io::copy_bidirectional(&mut aa, &mut bb);
        let watchdog = async {
            let Some(idle) = idle else {
                return std::future::pending().await;
            };
            loop {
                let last = Duration::from_millis(act.last_ms.load(Ordering::Relaxed));
                let due = act.epoch + last + idle;
                if Instant::now() >= due {
                    return;
                }
                tokio::time::sleep_until(due).await;
            }
        };
        tokio::select! {
            _ = copy => {}
            () = watchdog => {}
            () = stop => {}
        }
    }
    (
        act.bytes[0].load(Ordering::Relaxed),
        act.bytes[1].load(Ordering::Relaxed),
    )
}

/// Result of looking at the first bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// A TLS ClientHello that is not complete yet.
    NeedMore,
    /// Not a TLS handshake.
    NotTls,
    /// A complete ClientHello, with its SNI if any.
    Hello(Option<String>),
}

/// Parses the SNI of a TLS ClientHello (`l7::sni`).
pub fn peek_sni(buf: &[u8]) -> Peek {
    match crate::l7::sni::peek_sni(buf) {
        crate::l7::sni::SniPeek::Incomplete => Peek::NeedMore,
        crate::l7::sni::SniPeek::NotTls => Peek::NotTls,
        crate::l7::sni::SniPeek::Sni(s) => Peek::Hello(s),
    }
}

#[derive(Clone, Copy)]
struct TcpInput<'a> {
    src: IpAddr,
    tls: Option<&'a TlsInfo>,
    /// Client port and the local address it connected to (`src_port`, `dst`).
    src_port: u16,
    local: SocketAddr,
    sni: Option<&'a str>,
    fe: &'a FrontendRt,
}

impl AclInput for TcpInput<'_> {
    fn path(&self) -> &str {
        ""
    }
    fn url(&self) -> &str {
        ""
    }
    fn method(&self) -> &str {
        ""
    }
    fn any_header(&self, _name: &str, _f: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
    fn src(&self) -> IpAddr {
        self.src
    }
    fn ssl_fc(&self) -> bool {
        self.tls.is_some()
    }
    fn ssl_fc_sni(&self) -> Option<&str> {
        self.tls.and_then(|t| t.sni.as_deref())
    }
    fn ssl_c(&self) -> Option<&crate::acl::ClientCert> {
        self.tls.and_then(|t| t.client_cert.as_deref())
    }
    fn req_ssl_sni(&self) -> Option<&str> {
        self.sni
    }
    fn nbsrv(&self, backend: &str) -> u32 {
        self.fe.backends.get(backend).map_or(0, |b| b.nbsrv())
    }
    fn is_http(&self) -> bool {
        false
    }
    fn dst(&self) -> Option<SocketAddr> {
        Some(self.local)
    }
    fn src_port(&self) -> Option<u16> {
        Some(self.src_port)
    }
}

/// Reads the client's first bytes into `buf` until a TLS ClientHello (its SNI), bytes
/// that are not TLS, 64 KiB, or `delay`: `tcp-request inspect-delay`.
async fn inspect<S>(
    client: &mut S,
    buf: &mut Vec<u8>,
    delay: Duration,
) -> Result<Option<String>, TcpError>
where
    S: AsyncRead + Unpin,
{
    let deadline = Instant::now() + delay;
    let mut chunk = [0u8; 4096];
    loop {
        match peek_sni(buf) {
            Peek::Hello(s) => return Ok(s),
            Peek::NotTls if !buf.is_empty() => return Ok(None),
            _ => {}
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => return Ok(None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Whether `tcp-request` rules reject the connection (the first rule that matches decides).
fn rejects(rules: &[crate::config::model::TcpRequestRule], input: &TcpInput<'_>) -> bool {
    for rule in rules {
        if rule.cond.as_ref().is_none_or(|c| c.eval(input)) {
            return rule.action == TcpAction::Reject;
        }
    }
    false
}

/// Serves one `mode tcp` client connection.
/// `tls` is set when this listener terminated TLS (`bind … ssl` in `mode tcp`); there is no
/// ClientHello to peek then.
pub async fn serve<S>(
    fe: Arc<FrontendRt>,
    mut client: S,
    src: SocketAddr,
    local: SocketAddr,
    tls: Option<TlsInfo>,
) -> Result<(), TcpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut sni: Option<String> = None;
    if let (Some(delay), None) = (fe.inspect_delay, &tls) {
        sni = inspect(&mut client, &mut buf, delay).await?;
    }
    let input = TcpInput {
        src: src.ip(),
        tls: tls.as_ref(),
        src_port: src.port(),
        local,
        sni: sni.as_deref(),
        fe: &fe,
    };
    if rejects(&fe.tcp_rules, &input) {
        return Err(TcpError::Rejected);
    }
    let be = fe.pick_backend(&input).ok_or(TcpError::NoBackend)?;
    // The backend's own `tcp-request content` rules, as HAProxy runs them after switching
    // (its inspect-delay applies when the frontend did not wait already).
    if !be.tcp_rules.is_empty() {
        let mut late = None;
        if let (Some(delay), None, None) = (be.inspect_delay, fe.inspect_delay, &tls) {
            late = inspect(&mut client, &mut buf, delay).await?;
        }
        let input = TcpInput {
            sni: late.as_deref().or(input.sni),
            ..input
        };
        if rejects(&be.tcp_rules, &input) {
            return Err(TcpError::Rejected);
        }
    }
    be.state.counters.requests.fetch_add(1, Ordering::Relaxed);
    be.state
        .counters
        .active_conns
        .fetch_add(1, Ordering::Relaxed);
    let _be_guard = Active(&be.state.counters);

    let ctx = PickCtx::client(src.ip());
    let t = be.timeouts;
    let started = Instant::now();
    let wall = std::time::SystemTime::now();
    let mut avoid: u128 = 0;
    let mut attempts = 0;
    let mut sticky: Option<usize> = None;
    let (srv, mut upstream) = loop {
        let a = avoid;
        let idx = match sticky {
            Some(i) => i,
            None => be
                .pick(&ctx, &|i| i < 128 && (a >> i) & 1 == 1)
                .or_else(|| {
                    if a != 0 {
                        be.pick(&ctx, &|_| false)
                    } else {
                        None
                    }
                })
                .ok_or(TcpError::NoServer)?,
        };
        let srv = be.servers[idx].clone();
        // The same connect as HTTP's: `send-proxy` header first, then `ssl`'s handshake,
        // all within `timeout connect`.
        let header = srv
            .send_proxy
            .map(|v| crate::proxy_protocol::encode(v, src, local));
        let res = upstream::connect(srv.addr, t.connect, srv.tls.as_deref(), header.as_deref())
            .await
            .map(|c| c.conn.into_parts().0);
        match res {
            Ok(s) => break (srv, s),
            Err(e) => {
                srv.state.counters.errors.fetch_add(1, Ordering::Relaxed);
                attempts += 1;
                if attempts > be.retries {
                    return Err(e.into());
                }
                if be.redispatch && attempts == be.retries {
                    // The last retry goes elsewhere.
                    if idx < 128 {
                        avoid |= 1 << idx;
                    }
                    sticky = None;
                } else {
                    sticky = Some(idx);
                    let pause = t
                        .connect
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    };
    srv.state.counters.open_conn();
    let _srv_guard = Active(&srv.state.counters);
    let sent_first = buf.len();
    if !buf.is_empty() {
        upstream.write_all(&buf).await?;
        fe.counters
            .bytes_in
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
    }
    let idle = t.tunnel.or(match (fe.timeouts.client, t.server) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    });
    let t_connect_ms = started.elapsed().as_millis() as i64;
    let (up, down) = pipe_until(
        &mut client,
        &mut upstream,
        idle,
        srv.state.shutdown_signal(),
    )
    .await;
    if fe.log && !(fe.dontlognull && sent_first == 0 && up == 0) {
        crate::l7::log::emit_tcp(
            &crate::l7::log::TcpRecord {
                wall,
                src,
                frontend: &fe.name,
                backend: &be.name,
                server: &srv.name,
                t_connect_ms,
                t_total_ms: started.elapsed().as_millis() as i64,
                bytes_out: down,
                retries: attempts,
                conns: crate::l7::log::ConnCounts::now(
                    &fe.counters,
                    Some(&be.state.counters),
                    Some(&srv.state.counters),
                ),
            },
            fe.log_format,
            &fe.log_targets,
        );
    }
    fe.counters.bytes_in.fetch_add(up, Ordering::Relaxed);
    fe.counters.bytes_out.fetch_add(down, Ordering::Relaxed);
    be.state.counters.bytes_in.fetch_add(up, Ordering::Relaxed);
    be.state
        .counters
        .bytes_out
        .fetch_add(down, Ordering::Relaxed);
    srv.state.counters.bytes_in.fetch_add(up, Ordering::Relaxed);
    srv.state
        .counters
        .bytes_out
        .fetch_add(down, Ordering::Relaxed);
    Ok(())
}

/// Takes a connection out of its counters' active gauge when dropped.
struct Active<'a>(&'a Counters);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.close_conn();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: &str) -> Vec<u8> {
        let mut ext = Vec::new();
        let name = sni.as_bytes();
        ext.extend_from_slice(&[0, 0]);
        let l = name.len() + 5;
        ext.extend_from_slice(&(l as u16).to_be_bytes());
        ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        ext.extend_from_slice(name);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn sni_peek() {
        let h = hello("Example.COM");
        assert_eq!(peek_sni(&h), Peek::Hello(Some("Example.COM".into())));
        assert_eq!(peek_sni(&h[..20]), Peek::NeedMore);
        assert_eq!(peek_sni(b"GET / HTTP/1.1\r\n"), Peek::NotTls);
        assert_eq!(peek_sni(&[]), Peek::NeedMore);
    }
}
