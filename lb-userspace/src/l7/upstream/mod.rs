//! Upstream HTTP: connections to servers (connect with `timeout connect`), their idle
//! pools, and the exchange of one request and response on a connection, run inside the
//! request's own task. HTTP/1.1 is lb's own codec; servers marked `proto h2` get HTTP/2
//! through hyper's client ([`h2`]).
//!
//! There is no connection task and no channel between the request and its connection: the
//! request future writes the head and body itself and reads the response head, and the
//! response body reads the socket as the client side consumes it, then puts the connection
//! back into its pool. [`codec`] holds the wire format, [`exchange`] the I/O, [`pool`] the
//! idle lists.

pub mod codec;
pub mod exchange;
pub mod h2;
pub mod pool;
pub mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::state::Counters;

pub use exchange::{ExchangeError, ResponseBody};
pub use pool::{Pool, set_worker};
pub use stream::{UpStream, UpstreamTls};

/// Bytes reserved in a connection's read buffer before each read.
const READ_SIZE: usize = 8 * 1024;

/// Makes room for the next read into a connection's read buffer.
pub(crate) fn reserve_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out")]
    ConnectTimeout { addr: SocketAddr },
    /// The TLS handshake with a server marked `ssl` failed (certificate, protocol).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The server accepted the connection but not an HTTP/2 handshake (`proto h2`).
    #[error("HTTP/2 handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

/// An inactivity limit on a body (`timeout server` on a response body, `timeout client`
/// on an upload): it expires when the body waits longer than the limit with no progress.
/// The clock is read, and the timer created, only once the body has to wait.
#[derive(Debug)]
pub(crate) struct IdleLimit {
    limit: Option<Duration>,
    since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleLimit {
    pub(crate) fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            since: None,
            sleep: None,
        }
    }

    /// The body moved: the next wait starts a new period.
    pub(crate) fn reset(&mut self) {
        self.since = None;
    }

    /// For a body that has to wait: whether the limit has passed since the wait began
    /// (if not, `cx` is woken when it does).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(d) = self.limit else {
            return false;
        };
        let due = *self.since.get_or_insert_with(Instant::now) + d;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.deadline() != due {
            sleep.as_mut().reset(due);
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// The counters a request updates (frontend, backend, server), bundled to clone once.
#[derive(Debug)]
pub struct CountersRef {
    pub frontend: Arc<Counters>,
    pub backend: Arc<crate::state::BackendState>,
    pub server: Arc<crate::state::ServerState>,
}

impl CountersRef {
    fn add(&self, field: fn(&Counters) -> &AtomicU64, n: u64) {
        for c in [
            &*self.frontend,
            &self.backend.counters,
            &self.server.counters,
        ] {
            field(c).fetch_add(n, Ordering::Relaxed);
        }
    }
    pub fn add_in(&self, n: u64) {
        self.add(|c| &c.bytes_in, n);
    }
    pub fn add_out(&self, n: u64) {
        self.add(|c| &c.bytes_out, n);
    }
}

/// An HTTP/1.1 connection to a server, between exchanges or during one.
#[derive(Debug)]
pub struct UpConn {
    pub(crate) stream: UpStream,
    /// Bytes read and not yet consumed (empty between exchanges).
    pub(crate) rbuf: BytesMut,
    /// The encoded request head, then the chunk framing of a request body (reused from one
    /// request to the next).
    pub(crate) wbuf: Vec<u8>,
}

impl UpConn {
    fn new(stream: UpStream) -> Self {
        Self {
            stream,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
        }
    }

    /// Whether an idle connection is still open with nothing unread (checked without
    /// waiting; the read goes into the empty buffer: any byte means it is unusable).
    fn is_idle_and_open(&mut self) -> bool {
        self.stream.is_idle_and_open(&mut self.rbuf)
    }

    /// The stream and any bytes already read past the response head (a tunnel's start).
    pub fn into_parts(self) -> (UpStream, BytesMut) {
        (self.stream, self.rbuf)
    }
}

/// A connection ready for one request.
#[derive(Debug)]
pub struct Conn {
    pub conn: UpConn,
    /// Taken from the idle pool (the server may have closed it meanwhile).
    pub reused: bool,
}

/// Opens a new connection to `addr`: the PROXY protocol header `proxy` first when given
/// (`send-proxy`), then the TLS handshake when `tls` is; all within `timeout` (`timeout
/// connect`).
pub async fn connect(
    addr: SocketAddr,
    timeout: Option<Duration>,
    tls: Option<&UpstreamTls>,
    proxy: Option<&[u8]>,
) -> Result<Conn, UpstreamError> {
    let open = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        if let Some(header) = proxy {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, header)
                .await
                .map_err(|source| UpstreamError::Connect { addr, source })?;
        }
        match tls {
            None => Ok(UpStream::Tcp(tcp)),
            Some(t) => t
                .handshake(tcp)
                .await
                .map_err(|source| UpstreamError::Tls { addr, source }),
        }
    };
    let stream = match timeout {
        Some(t) => tokio::time::timeout(t, open)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout { addr })??,
        None => open.await?,
    };
    Ok(Conn {
        conn: UpConn::new(stream),
        reused: false,
    })
}
