//! Upstream connections: a per-server pool of idle HTTP/1.1 keep-alive connections, connect
//! with `timeout connect`, and the request body wrapper that counts bytes toward the server.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::state::Counters;

/// Idle connections older than this are not reused: below the common server keep-alive
/// timeouts (Apache, Node: 5 s), so a request rarely races the server closing an idle
/// connection (HAProxy's `pool-purge-delay` is 5 s too).
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);
/// A request sent on a connection idle for longer than this is kept for one replay, in case
/// the server closed the connection as the request went out.
pub const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);
/// At most this many idle connections are kept per server.
const MAX_IDLE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out")]
    ConnectTimeout { addr: SocketAddr },
    #[error("handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

/// The request body sent upstream: the client's body, counted.
#[derive(Debug)]
pub struct UpBody {
    inner: Option<Incoming>,
    counters: Arc<CountersRef>,
}

/// The counters a body updates (frontend, backend, server), bundled to clone once.
#[derive(Debug)]
pub struct CountersRef {
    pub frontend: Arc<Counters>,
    pub backend: Arc<crate::state::BackendState>,
    pub server: Arc<crate::state::ServerState>,
}

impl CountersRef {
    pub fn add_in(&self, n: u64) {
        self.frontend.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.backend
            .counters
            .bytes_in
            .fetch_add(n, Ordering::Relaxed);
        self.server
            .counters
            .bytes_in
            .fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_out(&self, n: u64) {
        self.frontend.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.backend
            .counters
            .bytes_out
            .fetch_add(n, Ordering::Relaxed);
        self.server
            .counters
            .bytes_out
            .fetch_add(n, Ordering::Relaxed);
    }
}

impl UpBody {
    pub fn new(inner: Option<Incoming>, counters: Arc<CountersRef>) -> Self {
        Self { inner, counters }
    }
}

impl UpBody {
    /// The client body back (a request that never reached the server).
    pub fn into_inner(self) -> Option<Incoming> {
        self.inner
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            this.counters.add_in(d.len() as u64);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// A connection ready for one request.
#[derive(Debug)]
pub struct Conn {
    pub tx: SendRequest<UpBody>,
    /// Taken from the idle pool (may have been closed by the server meanwhile).
    pub reused: bool,
    /// How long it sat idle in the pool.
    pub idle: Duration,
}

/// Idle-connection shards per pool: each worker thread reuses the connections it opened
/// (their I/O runs on its runtime), like HAProxy's per-thread idle lists.
const SHARDS: usize = 16;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(SHARDS - 1) };
}

/// Marks the current thread as L7 worker `id` (picks its pool shard).
pub fn set_worker(id: usize) {
    WORKER.with(|w| w.set(id % SHARDS));
}

type IdleList = Mutex<Vec<(SendRequest<UpBody>, Instant)>>;

/// The idle connections of one server.
#[derive(Debug, Default)]
pub struct Pool {
    shards: [IdleList; SHARDS],
}

impl Pool {
    /// An idle connection, if one is still usable.
    fn shard(&self) -> &IdleList {
        &self.shards[WORKER.with(|w| w.get())]
    }

    pub async fn take_idle(&self) -> Option<Conn> {
        loop {
            let item = match self.shard().lock() {
                Ok(mut v) => v.pop(),
                Err(_) => None,
            }?;
            let (mut tx, since) = item;
            let idle = since.elapsed();
            if tx.is_closed() || idle > MAX_IDLE_AGE {
                continue;
            }
            if !tx.is_ready() {
                // The previous response just finished and the connection task has not
                // caught up yet: it becomes ready (or closed) as soon as it runs.
                if tx.ready().await.is_err() {
                    continue;
                }
            }
            return Some(Conn {
                tx,
                reused: true,
                idle,
            });
        }
    }

    /// Returns a connection whose exchange completed.
    pub fn put(&self, tx: SendRequest<UpBody>) {
        if tx.is_closed() {
            return;
        }
        if let Ok(mut v) = self.shard().lock()
            && v.len() < MAX_IDLE
        {
            v.push((tx, Instant::now()));
        }
    }

    /// Drops every idle connection (server went away).
    pub fn clear(&self) {
        for s in &self.shards {
            if let Ok(mut v) = s.lock() {
                v.clear();
            }
        }
    }
}

/// Opens a new connection to `addr` (HTTP/1.1, upgrades allowed).
pub async fn connect(addr: SocketAddr, timeout: Option<Duration>) -> Result<Conn, UpstreamError> {
    let fut = TcpStream::connect(addr);
    let stream = match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => return Err(UpstreamError::ConnectTimeout { addr }),
        },
        None => fut.await,
    }
    .map_err(|source| UpstreamError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(Conn {
        tx,
        reused: false,
        idle: Duration::ZERO,
    })
}
