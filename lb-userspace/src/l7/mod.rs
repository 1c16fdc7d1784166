//! The userspace tier: listeners, TLS termination, ACLs, routing, balancing, sticky
//! cookies, upstream pools, and userspace `mode tcp`.
//!
//! [`L7::start`] binds every userspace frontend of a config; [`L7Handle::reload`] swaps the
//! compiled routing and pools atomically (listeners whose bind stays keep their socket),
//! [`L7Handle::shutdown`] stops accepting and drains. Connections are served by
//! `global.threads` worker threads (default one per core, like HAProxy's `nbthread`), each a
//! single-threaded tokio runtime accepting on its own socket of every bind (one
//! `SO_REUSEPORT` group per bind, so the kernel spreads connections) and keeping its own idle
//! upstream connections; the caller's runtime only runs reloads and the registry watch.
//! With `global.cpu_map`, each worker is bound to one CPU ([`cpus`]).
//!
//! Layout: [`runtime`] compiles a config generation (rules, resolved backends, selectors,
//! pools, queues, error pages); [`http`] is the per-request path in named stages (prepare,
//! forward: pick and admit, exchange over HTTP/1 or HTTP/2, respond); [`upstream`] the pooled
//! HTTP/1.1 connections to servers; [`balance`] the selectors; [`tls`] certificate choice by
//! SNI; [`io`] the client-side timeouts (`timeout http-request` → 408, `timeout client`);
//! [`tcp`] userspace `mode tcp` and the tunnel copy; [`log`] access logs.
//!
//! HAProxy semantics kept, and the few deliberate differences:
//! - `retries`: connect failures are retried on the same server after
//!   min(`timeout connect`, 1 s); with `option redispatch` the last retry goes to another
//!   server (HAProxy's default redispatch interval), resetting the persistence cookie.
//! - A server at its `maxconn` is skipped while another usable server has room; when all
//!   are full the request waits in the chosen server's FIFO queue up to `timeout queue`
//!   (else `timeout connect`), then gets 503.
//! - Cookie persistence keeps sending to a DRAIN server (HAProxy's drain), never to DOWN or
//!   MAINT ones; weight 0 and DRAIN take no new (non-persistent) traffic.
//! - `balance source` is a weighted rendezvous hash of the client address over the usable
//!   servers (consistent: removing a server moves only its clients), like `hash-type
//!   consistent` rather than HAProxy's default map-based hash.
//! - `timeout http-request` answers 408 and closes, also for a connection that sent nothing
//!   (HAProxy without `option http-ignore-probes`); an idle keep-alive connection is closed
//!   silently. The 408 is the frontend's `errorfile 408`, sent as is, when there is one
//!   (HAProxy's H1 mux sent its built-in page for errors it detects itself, as 2.6 still
//!   does; haproxy#3032 treated that as a bug, fixed upstream).
//!   Header bytes over `max_header_bytes` get 400, as HAProxy answers a request larger than
//!   its buffer; `max_headers` counts the request line like `tune.http.maxhdr` (default
//!   101: 100 fields) and more get 400. A head hyper rejects (unparseable, over its buffer,
//!   more than 100 fields under a limit of 101 or less, a URI too long for it) gets 400 too:
//!   hyper writes its own bare 400/431/414, which [`io::ClientIo`] recognises and replaces
//!   with the frontend's `errorfile 400`, else HAProxy's built-in page.
//! - The client protocol is fixed before hyper starts: TLS by ALPN (`h2` or `http/1.1`;
//!   no ALPN: detected from the first bytes), plain binds by peeking for the h2 preface.
//!   Each protocol's connection is boxed, so an idle connection only holds its own state
//!   (hyper's 8 KiB read and write buffers, about 16 KiB in all).
//! - Upstream connections are HTTP/1.1 (like HAProxy without `proto h2` on servers),
//!   driven by lb's own client inside the request's task ([`upstream`]);
//!   `X-Forwarded-Proto` is added together with `option forwardfor`. An HTTP/1.0 request
//!   without Host goes as HTTP/1.0 (as HTTP/1.1 it would be invalid). Upgrades (101) and
//!   `CONNECT` (forwarded in authority form; a 2xx) join both connections into a tunnel.
//! - While a request body is forwarded, `timeout client` limits the client's pauses (408)
//!   and `timeout server` the server's (not taking the body, or not answering once it is
//!   sent: 504), as HAProxy's per-side timeouts; a slow but steady upload is not cut.
//! - Trailer fields of chunked responses reach h2 clients, and HTTP/1.1 clients that sent
//!   `TE: trailers` (hyper's rule: only the fields the response's `Trailer` announces).
//! - `set-header`/`add-header` values and redirect targets are log-format strings:
//!   `%[FETCH]` expands with the ACL engine's fetches (`%[src]`, `%[req.hdr(host)]`,
//!   `%[ssl_fc_sni]` …), the request-time variables `%ci %cp %fi %fp %HM %HU %HP` too, `%%`
//!   is a percent sign; other variables are rejected at load. A fetch without a value
//!   expands to nothing; an expansion that is not a valid header value skips the action
//!   for that request (HAProxy drops it). See [`crate::acl::FormatString`].
//! - An HTTP/1 absolute-form target (`GET http://host/path`) whose Host header names
//!   another host gets 400, as in HAProxy (case and the default port aside). For such
//!   targets `url`, `%HU` and `%HP` give the origin form (`/path?query`), where HAProxy
//!   gives the target as received.

pub mod balance;
pub mod cache;
pub mod compress;
pub mod h1;
pub mod http;
pub mod io;
pub mod log;
pub mod runtime;
pub mod sni;
pub mod stats_page;
pub mod tcp;
pub mod tls;
pub mod tls_resume;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::config::model::{Config, Mode, Tier};
use crate::state::Registry;
use crate::{cpus, proxy_protocol};
use runtime::{FrontendRt, Runtime, RuntimeError};
use tls::{TlsError, TlsInfo};

#[derive(Debug, thiserror::Error)]
pub enum L7Error {
    #[error("frontend {frontend}: bind {bind}: {source}")]
    Bind {
        frontend: String,
        bind: String,
        source: std::io::Error,
    },
    #[error("frontend {frontend}: bind {bind}: {source}")]
    Tls {
        frontend: String,
        bind: String,
        source: Box<TlsError>,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the L7 tier is shut down")]
    Shutdown,
    #[error("cannot start an L7 worker thread: {0}")]
    Thread(std::io::Error),
}

/// What a listener's connections read at accept time; swapped on reload.
struct ListenerShared {
    fe: Arc<ArcSwap<FrontendRt>>,
    tls: ArcSwapOption<tls::Acceptor>,
    /// `accept-proxy` on the bind.
    accept_proxy: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ListenerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerShared")
            .field("tls", &self.tls.load().is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Listener {
    frontend: String,
    cfg_addr: SocketAddr,
    local: SocketAddr,
    shared: Arc<ListenerShared>,
    stop: watch::Sender<bool>,
}

/// What accept loops and connections need from the tier (shared with the workers, which
/// must not keep [`Inner`] alive).
#[derive(Debug)]
struct ConnControl {
    shutdown: watch::Sender<bool>,
    /// Every connection task holds a clone; all dropped = drained.
    drain_tx: Mutex<Option<mpsc::Sender<()>>>,
    /// `hard_stop_after` in milliseconds: how long a connection may go on once its
    /// listener stopped (removed by a reload, or lb stopping).
    hard_stop_ms: std::sync::atomic::AtomicU64,
}

impl ConnControl {
    fn hard_stop_after(&self) -> Duration {
        Duration::from_millis(self.hard_stop_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Work sent to a worker thread.
#[derive(Debug)]
enum WorkerCmd {
    /// Accept on this listening socket (the worker's own in the bind's `SO_REUSEPORT`
    /// group) until `stop` flips.
    Listen {
        sock: std::net::TcpListener,
        shared: Arc<ListenerShared>,
        stop: watch::Receiver<bool>,
    },
}

#[derive(Debug)]
struct Inner {
    registry: Arc<Registry>,
    runtime: ArcSwapOption<Runtime>,
    listeners: Mutex<Vec<Listener>>,
    control: Arc<ConnControl>,
    drain_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
    /// One per worker thread; dropping them ends the workers.
    workers: Vec<tokio::sync::mpsc::UnboundedSender<WorkerCmd>>,
    /// TLS tickets and session cache, kept across reloads.
    tls_sessions: tls_resume::Sessions,
}

/// The userspace tier.
#[derive(Debug)]
pub struct L7;

/// A running userspace tier.
#[derive(Debug, Clone)]
pub struct L7Handle {
    inner: Arc<Inner>,
}

impl L7 {
    /// Binds every userspace frontend of `config` and starts serving on
    /// `global.threads` worker threads (default: one per core), each a single-threaded
    /// runtime with its own socket on every bind, like HAProxy's `nbthread`, bound to a CPU
    /// when `global.cpu_map` says so. Must be called within a tokio runtime, which runs the
    /// control side (reloads, registry watch).
    pub fn start(config: Arc<Config>, registry: Arc<Registry>) -> Result<L7Handle, L7Error> {
        let (drain_tx, drain_rx) = mpsc::channel(1);
        let control = Arc::new(ConnControl {
            shutdown: watch::channel(false).0,
            drain_tx: Mutex::new(Some(drain_tx)),
            hard_stop_ms: std::sync::atomic::AtomicU64::new(0),
        });
        let n = config
            .global
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let allowed = cpus::allowed();
        let mut workers = Vec::with_capacity(n);
        for id in 0..n {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let control = control.clone();
            let cpu = config
                .global
                .cpu_map
                .as_ref()
                .and_then(|m| m.cpu_for(id, &allowed));
            std::thread::Builder::new()
                .name(format!("lb-l7-{id}"))
                .spawn(move || worker(id, cpu, rx, control))
                .map_err(L7Error::Thread)?;
            workers.push(tx);
        }
        let handle = L7Handle {
            inner: Arc::new(Inner {
                registry,
                runtime: ArcSwapOption::empty(),
                listeners: Mutex::new(Vec::new()),
                control,
                drain_rx: tokio::sync::Mutex::new(drain_rx),
                workers,
                tls_sessions: tls_resume::Sessions::default(),
            }),
        };
        handle.reload(config)?;
        Ok(handle)
    }
}

/// A worker thread: a single-threaded runtime serving the listeners it is given.
fn worker(
    id: usize,
    cpu: Option<usize>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<WorkerCmd>,
    control: Arc<ConnControl>,
) {
    upstream::set_worker(id);
    if let Some(cpu) = cpu
        && let Err(e) = cpus::bind_current_thread(cpu)
    {
        tracing::warn!(worker = id, cpu, error = %e, "cannot bind the worker to its CPU");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot build the worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                WorkerCmd::Listen { sock, shared, stop } => match TcpListener::from_std(sock) {
                    Ok(l) => {
                        tokio::spawn(accept_loop(l, shared, stop, control.clone()));
                    }
                    Err(e) => tracing::error!(worker = id, error = %e, "listener"),
                },
            }
        }
    });
}

/// One listening socket per worker on `addr`, in one `SO_REUSEPORT` group: the kernel
/// spreads new connections over the workers by their addresses (as nginx's `reuseport`),
/// so no worker takes every connection of a burst, and only one worker wakes per
/// connection. Port 0 binds the first and gives its port to the others.
fn bind_sockets(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let sock = bind_socket(at)?;
        at = sock.local_addr()?;
        out.push(sock);
    }
    Ok(out)
}

fn bind_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

impl L7Handle {
    /// Applies a new config: listeners whose bind stays keep their socket and switch to the
    /// new routing; new binds are opened; removed ones stop accepting and ask their
    /// connections to finish, closing them after `hard_stop_after`. On error nothing
    /// changes.
    pub fn reload(&self, new: Arc<Config>) -> Result<(), L7Error> {
        self.apply(new, None)
    }

    /// [`Self::reload`], serialised on the listener lock. With `only_if_current`, does
    /// nothing unless that runtime is still the live one: a rebuild asked for by an old
    /// runtime's registry watch must not undo a reload that has replaced it meanwhile.
    /// The registry is only written once everything fallible has succeeded.
    fn apply(
        &self,
        new: Arc<Config>,
        only_if_current: Option<&Arc<Runtime>>,
    ) -> Result<(), L7Error> {
        if *self.inner.control.shutdown.borrow() {
            return Err(L7Error::Shutdown);
        }
        let mut listeners = match self.inner.listeners.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let old = self.inner.runtime.load_full();
        if let Some(expected) = only_if_current
            && !old.as_ref().is_some_and(|c| Arc::ptr_eq(c, expected))
        {
            return Ok(());
        }
        self.apply_locked(&new, old.as_deref(), &mut listeners)
    }

    fn apply_locked(
        &self,
        new: &Arc<Config>,
        old: Option<&Runtime>,
        listeners: &mut Vec<Listener>,
    ) -> Result<(), L7Error> {
        let built = runtime::build(new, &self.inner.registry, old)?;
        let rt = Arc::new(built.runtime);

        // Prepare everything fallible first.
        struct Plan {
            frontend: String,
            existing: Option<usize>,
            cfg_addr: SocketAddr,
            fe: Arc<FrontendRt>,
            tls: Option<Arc<tls::Acceptor>>,
            accept_proxy: bool,
            fresh: Option<Vec<std::net::TcpListener>>,
        }
        let mut plans = Vec::new();
        let mut claimed = vec![false; listeners.len()];
        for f in new.frontends.iter().filter(|f| f.tier == Tier::Userspace) {
            let Some(fe) = rt.frontends.get(&f.name) else {
                continue;
            };
            for b in &f.binds {
                let tls = match (&b.tls, f.mode) {
                    (Some(t), _) => Some(Arc::new(
                        tls::acceptor(t, &self.inner.tls_sessions, new.global.ssl_cache_size)
                            .map_err(|source| L7Error::Tls {
                                frontend: f.name.clone(),
                                bind: b.text.clone(),
                                source: Box::new(source),
                            })?,
                    )),
                    _ => None,
                };
                // A bind that stays keeps its socket. Port 0 means "any port", so such a
                // bind only matches the same frontend's.
                let existing = listeners.iter().enumerate().position(|(i, l)| {
                    !claimed[i]
                        && l.cfg_addr == b.addr
                        && (b.addr.port() != 0 || l.frontend == f.name)
                });
                if let Some(i) = existing {
                    claimed[i] = true;
                }
                let fresh = if existing.is_some() {
                    None
                } else {
                    Some(
                        bind_sockets(b.addr, self.inner.workers.len()).map_err(|source| {
                            L7Error::Bind {
                                frontend: f.name.clone(),
                                bind: b.text.clone(),
                                source,
                            }
                        })?,
                    )
                };
                plans.push(Plan {
                    frontend: f.name.clone(),
                    existing,
                    cfg_addr: b.addr,
                    fe: fe.clone(),
                    tls,
                    accept_proxy: b.accept_proxy,
                    fresh,
                });
            }
        }

        // Commit: the registry states the runtime was built on first, then the runtime.
        if let Some(update) = built.registry {
            update.publish(&self.inner.registry);
        }
        self.inner.runtime.store(Some(rt.clone()));
        self.inner.control.hard_stop_ms.store(
            u64::try_from(new.global.process.hard_stop_after.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        rt.publish_caches(&self.inner.registry);
        watch_registry(&rt, &self.inner, new);
        let mut old: Vec<Option<Listener>> = listeners.drain(..).map(Some).collect();
        let mut kept = Vec::new();
        for p in plans {
            if let Some(l) = p.existing.and_then(|i| old[i].take()) {
                l.shared.fe.store(p.fe);
                l.shared.tls.store(p.tls);
                l.shared
                    .accept_proxy
                    .store(p.accept_proxy, std::sync::atomic::Ordering::Relaxed);
                kept.push(Listener {
                    frontend: p.frontend,
                    ..l
                });
            } else if let Some(socks) = p.fresh {
                let local = socks
                    .first()
                    .and_then(|s| s.local_addr().ok())
                    .unwrap_or(p.cfg_addr);
                let shared = Arc::new(ListenerShared {
                    fe: Arc::new(ArcSwap::new(p.fe)),
                    tls: ArcSwapOption::new(p.tls),
                    accept_proxy: p.accept_proxy.into(),
                });
                let (stop, _) = watch::channel(false);
                for (w, sock) in self.inner.workers.iter().zip(socks) {
                    let _ = w.send(WorkerCmd::Listen {
                        sock,
                        shared: shared.clone(),
                        stop: stop.subscribe(),
                    });
                }
                tracing::info!(frontend = %p.frontend, addr = %local, "listening");
                kept.push(Listener {
                    frontend: p.frontend,
                    cfg_addr: p.cfg_addr,
                    local,
                    shared,
                    stop,
                });
            }
        }
        for l in old.into_iter().flatten() {
            tracing::info!(frontend = %l.frontend, addr = %l.local, "closing listener");
            let _ = l.stop.send(true);
        }
        *listeners = kept;
        Ok(())
    }

    /// The addresses a frontend actually listens on (ports resolved when bound to `:0`).
    pub fn local_addrs(&self, frontend: &str) -> Vec<SocketAddr> {
        match self.inner.listeners.lock() {
            Ok(l) => l
                .iter()
                .filter(|l| l.frontend == frontend)
                .map(|l| l.local)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Stops accepting, asks every connection to finish (HTTP/1 closes after the current
    /// response, h2 sends GOAWAY), and waits up to `grace` for them. Returns whether every
    /// connection finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        {
            let mut listeners = match self.inner.listeners.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            for l in listeners.drain(..) {
                let _ = l.stop.send(true);
            }
        }
        let _ = self.inner.control.shutdown.send(true);
        if let Ok(mut tx) = self.inner.control.drain_tx.lock() {
            tx.take();
        }
        let mut rx = self.inner.drain_rx.lock().await;
        tokio::time::timeout(grace, rx.recv()).await.is_ok()
    }
}

/// Rebuilds the selectors of `rt` on every registry change (status, weight), until `rt` is
/// replaced. When the control plane swaps the registry's backend set, the runtime is
/// rebuilt from `config` so it follows the new server states.
fn watch_registry(rt: &Arc<Runtime>, inner: &Arc<Inner>, config: &Arc<Config>) {
    let weak_rt = Arc::downgrade(rt);
    let weak_inner = Arc::downgrade(inner);
    let config = config.clone();
    let mut rx = inner.registry.subscribe();
    rx.mark_unchanged();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let (Some(rt), Some(inner)) = (weak_rt.upgrade(), weak_inner.upgrade()) else {
                break;
            };
            let current = inner.runtime.load();
            if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &rt)) {
                break;
            }
            drop(current);
            if rt.on_registry_change(&inner.registry) == runtime::Change::Replaced {
                let handle = L7Handle { inner };
                if let Err(e) = handle.apply(config.clone(), Some(&rt)) {
                    tracing::warn!(error = %e, "rebuilding after a registry swap failed");
                }
                break;
            }
        }
    });
}

async fn accept_loop(
    sock: TcpListener,
    shared: Arc<ListenerShared>,
    mut stop: watch::Receiver<bool>,
    inner: Arc<ConnControl>,
) {
    if *stop.borrow() {
        return;
    }
    loop {
        // `maxconn` (the frontend's, the process's): at a limit, stop accepting until a
        // connection closes; new ones wait in the kernel's backlog, as in HAProxy.
        let limits = shared.fe.load().limits.clone();
        tokio::select! {
            _ = stop.changed() => break,
            () = limits.room() => {}
        }
        tokio::select! {
            _ = stop.changed() => break,
            r = sock.accept() => match r {
                Ok((stream, src)) => {
                    let token = match inner.drain_tx.lock() {
                        Ok(t) => t.clone(),
                        Err(_) => None,
                    };
                    let Some(token) = token else { break };
                    // Another worker may have taken the last slot meanwhile: this
                    // connection waits for one, and this loop accepts nothing else.
                    let limits = shared.fe.load().limits.clone();
                    let slots = tokio::select! {
                        _ = stop.changed() => break,
                        s = limits.take() => s,
                    };
                    let shared = shared.clone();
                    // The listener's stop (a reload removed it, or lb stops) asks the
                    // connection to finish, as HAProxy's soft stop; `hard_stop_after`
                    // later it is closed.
                    let stopped = stop.clone();
                    let control = inner.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = serve_conn(stream, src, shared, stopped.clone()) => {}
                            () = hard_stop(stopped, &control) => {
                                tracing::debug!(%src, "connection closed: hard_stop_after");
                            }
                        }
                        drop(slots);
                        drop(token);
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// Returns `hard_stop_after` after `stop` flips.
async fn hard_stop(mut stop: watch::Receiver<bool>, control: &ConnControl) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() && !*stop.borrow() {
            std::future::pending::<()>().await;
        }
    }
    tokio::time::sleep(control.hard_stop_after()).await;
}

/// Decrements the frontend's active connection gauge.
struct ActiveConn(Arc<crate::state::Counters>);

impl Drop for ActiveConn {
    fn drop(&mut self) {
        self.0.close_conn();
        crate::l7::log::PROCESS_CONNS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn serve_conn(
    mut stream: TcpStream,
    mut src: SocketAddr,
    shared: Arc<ListenerShared>,
    shutdown: watch::Receiver<bool>,
) {
    let fe = shared.fe.load_full();
    if !fe.src_allowed(src.ip()) {
        return;
    }
    fe.counters.open_conn();
    crate::l7::log::PROCESS_CONNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _active = ActiveConn(fe.counters.clone());
    let _ = stream.set_nodelay(true);
    let mut local = stream.local_addr().unwrap_or(src);
    // `accept-proxy`: the addresses in the PROXY header stand for the connection's (after
    // `deny_src`/`allow_src`, which, like HAProxy's `tcp-request connection` rules, see
    // the peer itself).
    if shared
        .accept_proxy
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        let limit = fe
            .timeouts
            .http_request
            .or(fe.timeouts.client)
            .unwrap_or(Duration::from_secs(30));
        match proxy_protocol::read_header(&mut stream, limit).await {
            Ok(Some((s, d))) => (src, local) = (s, d),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(peer = %src, error = %e, "connection closed");
                return;
            }
        }
    }
    match fe.mode {
        Mode::Tcp => Box::pin(serve_tcp(fe, stream, src, local, &shared)).await,
        Mode::Http => {
            let conn_shared = Arc::new(io::ConnShared::default());
            let t = io::IoTimeouts {
                http_request: fe.timeouts.http_request,
                keep_alive: fe.timeouts.http_keep_alive,
                client: fe.timeouts.client,
            };
            match shared.tls.load_full() {
                Some(acc) => {
                    Box::pin(serve_https(
                        acc,
                        stream,
                        src,
                        local,
                        &shared,
                        conn_shared,
                        t,
                        &fe,
                        shutdown,
                    ))
                    .await
                }
                None => {
                    let mut shutdown = shutdown;
                    let ctx = Arc::new(http::ConnCtx {
                        frontend: shared.fe.clone(),
                        src,
                        local,
                        tls: None,
                        shared: conn_shared.clone(),
                        server_timer: Default::default(),
                        sess_vars: Default::default(),
                    });
                    let io =
                        io::ClientIo::new(stream, conn_shared, t, true, fe.errors.conn_pages());
                    let wait = t.http_request.or(t.client);
                    let Some(proto) = sniff_plain(io.get_ref(), wait, &mut shutdown).await else {
                        return;
                    };
                    serve_http(io, proto, ctx, &fe, shutdown).await;
                }
            }
        }
    }
}

/// Userspace `mode tcp`, with or without TLS termination.
async fn serve_tcp(
    fe: Arc<FrontendRt>,
    stream: TcpStream,
    src: SocketAddr,
    local: SocketAddr,
    shared: &ListenerShared,
) {
    let r = match shared.tls.load_full() {
        None => tcp::serve(fe, stream, src, local, None).await,
        Some(acc) => {
            let hs_timeout = fe.timeouts.client.unwrap_or(Duration::from_secs(30));
            match tokio::time::timeout(hs_timeout, acc.accept(stream)).await {
                Ok(Ok(s)) => {
                    let sc = s.connection();
                    let info = TlsInfo::of(sc, false);
                    tcp::serve(fe, s, src, local, Some(info)).await
                }
                Ok(Err(e)) => Err(e.into()),
                Err(_) => return,
            }
        }
    };
    if let Err(e) = r {
        tracing::debug!(%src, error = %e, "tcp session ended");
    }
}

/// HTTPS: the handshake, then HTTP with the protocol ALPN chose (h2, http/1.1, or detected
/// from the first bytes when the client sent no ALPN).
#[allow(clippy::too_many_arguments)]
async fn serve_https(
    acc: Arc<tls::Acceptor>,
    stream: TcpStream,
    src: SocketAddr,
    local: SocketAddr,
    shared: &ListenerShared,
    conn_shared: Arc<io::ConnShared>,
    t: io::IoTimeouts,
    fe: &FrontendRt,
    shutdown: watch::Receiver<bool>,
) {
    let hs_timeout = fe
        .timeouts
        .http_request
        .or(fe.timeouts.client)
        .unwrap_or(Duration::from_secs(30));
    let s = match tokio::time::timeout(hs_timeout, acc.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%src, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let sc = s.connection();
    let proto = match sc.alpn_protocol() {
        Some(b"h2") => Proto::H2,
        Some(b"http/1.1") => Proto::H1,
        _ => Proto::Auto,
    };
    let info = TlsInfo::of(sc, proto == Proto::H2);
    let h1 = !info.h2;
    let ctx = Arc::new(http::ConnCtx {
        frontend: shared.fe.clone(),
        src,
        local,
        tls: Some(info),
        shared: conn_shared.clone(),
        server_timer: Default::default(),
        sess_vars: Default::default(),
    });
    serve_http(
        io::ClientIo::new(s, conn_shared, t, h1, fe.errors.conn_pages()),
        proto,
        ctx,
        fe,
        shutdown,
    )
    .await;
}

/// The protocol a client connection is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
    /// Not known yet: hyper-util's detector reads the first bytes.
    Auto,
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Picks the protocol of a plain connection from its first bytes, without consuming them,
/// so hyper reads the whole head at once into one buffer. A partial h2 preface is left to
/// the auto-detector. `None`: shutdown came first.
async fn sniff_plain(
    stream: &TcpStream,
    wait: Option<Duration>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Proto> {
    let peek = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        match stream.peek(&mut buf).await {
            Ok(n) if n > 0 && buf[..n] == H2_PREFACE[..n] => {
                if n == H2_PREFACE.len() {
                    Proto::H2
                } else {
                    Proto::Auto
                }
            }
            // EOF, errors and anything else: HTTP/1 (which ends or answers it).
            _ => Proto::H1,
        }
    };
    let timed = async {
        match wait {
            // Nothing in time: the HTTP/1 path answers 408 (its deadline has passed).
            Some(w) => tokio::time::timeout(w, peek).await.unwrap_or(Proto::H1),
            None => peek.await,
        }
    };
    if *shutdown.borrow() {
        return None;
    }
    tokio::select! {
        p = timed => Some(p),
        _ = shutdown.changed() => None,
    }
}

/// The header-field limit given to hyper's HTTP/1 parser for a frontend's `max_headers`.
/// lb's own check answers 400 from `max_headers - 1` fields (HAProxy's count includes the
/// request line); hyper's limit sits above it so that check decides, except that it is
/// capped at hyper's inline 100 for the default and smaller limits (above 100, hyper
/// allocates two header arrays per request): there, more than 100 fields get hyper's 431.
fn hyper_max_headers(max_headers: usize) -> usize {
    const HYPER_INLINE: usize = 100;
    if max_headers <= HYPER_INLINE + 1 {
        HYPER_INLINE
    } else {
        max_headers.saturating_add(64)
    }
}

/// Serves one client connection with `proto`. Each protocol's connection is boxed, so an
/// idle connection's task only holds the state of the protocol it speaks.
async fn serve_http<I>(
    io: I,
    proto: Proto,
    ctx: Arc<http::ConnCtx>,
    fe: &FrontendRt,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let max_buf = fe.max_header_bytes.saturating_add(4096).max(8192);
    let max_headers = hyper_max_headers(fe.max_headers);
    let max_list = u32::try_from(fe.max_header_bytes).unwrap_or(u32::MAX);
    let h1_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        http::handle(ctx.clone(), req.map(h1::body::ReqBody::Hyper))
    });
    let io = TokioIo::new(io);
    match proto {
        Proto::H1 => {
            // lb's own HTTP/1 codec.
            drop(svc);
            Box::pin(h1::conn::serve(io.into_inner(), h1_ctx, fe, &mut shutdown)).await;
        }
        Proto::H2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new()).max_header_list_size(max_list);
            let conn = Box::pin(b.serve_connection(io, svc));
            drive(conn, |c| c.graceful_shutdown(), &mut shutdown).await;
        }
        Proto::Auto => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .max_buf_size(max_buf)
                .max_headers(max_headers)
                .writev(false);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(max_list);
            let conn = Box::pin(builder.serve_connection_with_upgrades(io, svc));
            drive(conn, |c| c.graceful_shutdown(), &mut shutdown).await;
        }
    }
}

/// Runs a connection to its end; on shutdown, asks it to finish gracefully and waits.
async fn drive<C, E>(
    mut conn: Pin<Box<C>>,
    mut graceful: impl FnMut(Pin<&mut C>),
    shutdown: &mut watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if *shutdown.borrow() {
        graceful(conn.as_mut());
    }
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "client connection ended");
            }
        }
        _ = shutdown.changed() => {
            graceful(conn.as_mut());
            let _ = conn.await;
        }
    }
}
