//! HTTP/2 toward servers marked `proto h2` (HAProxy's server `proto h2`): cleartext with
//! prior knowledge (h2c), as gRPC servers speak it. Each worker thread keeps one
//! multiplexed connection per server, opened on first use with `timeout connect` and
//! replaced when it closes; requests are streams on it. The client's body streams to the
//! server as it arrives, under `timeout client` between pieces; trailers pass both ways.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::pool::{SHARDS, worker_shard};
use super::{CountersRef, IdleLimit, UpstreamError, UpstreamTls};

/// A sender on one server's HTTP/2 connection.
pub type Sender = SendRequest<RequestBody>;

/// The HTTP/2 connections of one server, one per worker thread (a connection's I/O is
/// registered with the runtime of the worker that opened it).
#[derive(Debug)]
pub struct H2Conns {
    addr: SocketAddr,
    /// `ssl`: TLS offering ALPN `h2`.
    tls: Option<Arc<UpstreamTls>>,
    shards: Box<[Mutex<Option<Sender>>; SHARDS]>,
}

impl H2Conns {
    pub fn new(addr: SocketAddr, tls: Option<Arc<UpstreamTls>>) -> Self {
        Self {
            addr,
            tls,
            shards: Box::new(std::array::from_fn(|_| Mutex::new(None))),
        }
    }

    /// This worker's open connection, if any (`true`: reused), else a new one, opened
    /// within `connect_timeout` and handshaken (the handshake counts as part of the
    /// connect: a server that does not speak HTTP/2 fails like a refused connection).
    pub async fn sender(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<(Sender, bool), UpstreamError> {
        let slot = &self.shards[worker_shard()];
        if let Ok(s) = slot.lock()
            && let Some(tx) = s.as_ref().filter(|tx| !tx.is_closed())
        {
            return Ok((tx.clone(), true));
        }
        let addr = self.addr;
        let open = async {
            let conn = super::connect(addr, None, self.tls.as_deref(), None).await?;
            let (stream, _) = conn.conn.into_parts();
            let (tx, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|source| UpstreamError::Handshake { addr, source })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%addr, error = %e, "HTTP/2 server connection ended");
                }
            });
            Ok::<_, UpstreamError>(tx)
        };
        let tx = match connect_timeout {
            Some(t) => tokio::time::timeout(t, open)
                .await
                .map_err(|_| UpstreamError::ConnectTimeout { addr })??,
            None => open.await?,
        };
        if let Ok(mut s) = slot.lock() {
            *s = Some(tx.clone());
        }
        Ok((tx, false))
    }

    /// Drops this worker's connection (it failed under a request).
    pub fn drop_current(&self) {
        if let Ok(mut s) = self.shards[worker_shard()].lock() {
            s.take();
        }
    }

    /// Drops every connection (the server went away); streams in flight finish on theirs.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            if let Ok(mut s) = s.lock() {
                s.take();
            }
        }
    }
}

/// What the client's side of an upload did, shared between the request body (which
/// records it) and the request (which turns a failed stream into the right answer).
#[derive(Debug)]
pub struct Upload {
    /// `FAULT_*`.
    fault: AtomicU8,
    /// The body last found the client with nothing to send (its limit is `timeout
    /// client`); otherwise it is sent, or waits for the server to take it.
    waiting_on_client: AtomicBool,
    /// Last time the client's body moved, in milliseconds since `base`.
    active_ms: AtomicU64,
    base: Instant,
}

const FAULT_NONE: u8 = 0;
const FAULT_TIMEOUT: u8 = 1;
const FAULT_BODY: u8 = 2;

/// The client's part in a failed exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// `timeout client` passed between two pieces of the body (HAProxy: 408).
    Timeout,
    /// The body was malformed or cut (HAProxy: 400).
    Body,
}

impl Upload {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            fault: AtomicU8::new(FAULT_NONE),
            waiting_on_client: AtomicBool::new(false),
            active_ms: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    pub fn fault(&self) -> Option<ClientFault> {
        match self.fault.load(Ordering::Acquire) {
            FAULT_TIMEOUT => Some(ClientFault::Timeout),
            FAULT_BODY => Some(ClientFault::Body),
            _ => None,
        }
    }

    /// Whether the upload waits for the client (not for the server).
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Acquire)
    }

    /// When the client's body last moved (the request's start until then).
    pub fn last_active(&self) -> Instant {
        self.base + Duration::from_millis(self.active_ms.load(Ordering::Acquire))
    }

    fn touch(&self) {
        self.waiting_on_client.store(false, Ordering::Release);
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.active_ms.store(ms, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("client request body: {0}")]
    Client(crate::l7::h1::body::ReqBodyError),
    #[error("client sent no request body data within timeout client")]
    Timeout,
}

/// The client's request body on its way to an HTTP/2 server: counted, and cut when the
/// client pauses longer than `timeout client`.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<crate::l7::h1::body::ReqBody>,
    counters: Arc<CountersRef>,
    idle: IdleLimit,
    upload: Arc<Upload>,
}

impl RequestBody {
    /// `inner`: the client's body (`None`: no body).
    pub fn new(
        inner: Option<crate::l7::h1::body::ReqBody>,
        counters: Arc<CountersRef>,
        client_timeout: Option<Duration>,
        upload: Arc<Upload>,
    ) -> Self {
        Self {
            inner: inner.filter(|b| !b.is_end_stream()),
            counters,
            idle: IdleLimit::new(client_timeout),
            upload,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.counters.add_in(d.len() as u64);
                }
                this.idle.reset();
                this.upload.touch();
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.upload.fault.store(FAULT_BODY, Ordering::Release);
                this.inner = None;
                Poll::Ready(Some(Err(RequestBodyError::Client(e))))
            }
            Poll::Ready(None) => {
                this.inner = None;
                this.upload.touch();
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.upload.waiting_on_client.store(true, Ordering::Release);
                if this.idle.poll_expired(cx) {
                    this.upload.fault.store(FAULT_TIMEOUT, Ordering::Release);
                    this.inner = None;
                    return Poll::Ready(Some(Err(RequestBodyError::Timeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
