//! Live state shared by the control plane and both data paths: each server's status and
//! weight (written by health checks and the runtime API) and its traffic counters (written
//! by the L7 proxy, read by the admin API). Updates are lock-free atomics; the set of
//! backends is swapped whole with `ArcSwap` on reload. Subscribers learn about status and
//! weight changes through a `watch` channel so they can rebuild pools and Maglev tables.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::watch;

/// A server's administrative and health status, as HAProxy names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ServerStatus {
    Up = 0,
    Down = 1,
    /// Keeps existing connections and flows, gets no new ones.
    Drain = 2,
    /// Administratively out of service.
    Maint = 3,
}

impl ServerStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Up => "UP",
            ServerStatus::Down => "DOWN",
            ServerStatus::Drain => "DRAIN",
            ServerStatus::Maint => "MAINT",
        }
    }

    const fn from_u8(v: u8) -> Self {
        match v {
            0 => ServerStatus::Up,
            1 => ServerStatus::Down,
            2 => ServerStatus::Drain,
            _ => ServerStatus::Maint,
        }
    }

    /// Takes new connections.
    pub const fn is_usable(self) -> bool {
        matches!(self, ServerStatus::Up)
    }
}

/// Counters of one server or frontend.
#[derive(Debug, Default)]
pub struct Counters {
    pub active_conns: AtomicU64,
    pub total_conns: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors: AtomicU64,
    /// Responses by class: 1xx..5xx, then "other".
    pub responses: [AtomicU64; 6],
}

impl Counters {
    /// Counts a connection that opens: in the total and in the active gauge.
    pub fn open_conn(&self) {
        self.total_conns.fetch_add(1, Ordering::Relaxed);
        self.active_conns.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a connection out of the active gauge.
    pub fn close_conn(&self) {
        self.active_conns.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records a response status.
    pub fn count_response(&self, status: u16) {
        let idx = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        self.responses[idx].fetch_add(1, Ordering::Relaxed);
    }
}

/// Live state of one server.
#[derive(Debug)]
pub struct ServerState {
    pub name: String,
    pub addr: SocketAddr,
    pub backup: bool,
    pub checked: bool,
    status: AtomicU8,
    weight: AtomicU32,
    pub counters: Counters,
    /// Duration of the last health check, in microseconds (0 = none yet).
    pub last_check_us: AtomicU64,
    /// `shutdown sessions`: a generation bumped to end the server's established sessions
    /// (L7 sessions wait on it, the data path compares it with the last one it acted on).
    shutdown: watch::Sender<u64>,
}

impl ServerState {
    pub fn new(name: &str, addr: SocketAddr, weight: u32, backup: bool, checked: bool) -> Self {
        Self {
            name: name.to_owned(),
            addr,
            backup,
            checked,
            status: AtomicU8::new(ServerStatus::Up as u8),
            weight: AtomicU32::new(weight),
            counters: Counters::default(),
            last_check_us: AtomicU64::new(0),
            shutdown: watch::channel(0).0,
        }
    }

    /// How many times `shutdown sessions` was asked for this server.
    pub fn shutdown_generation(&self) -> u64 {
        *self.shutdown.borrow()
    }

    /// Resolves at the next `shutdown sessions` of this server (never, once the server is
    /// gone from every registry). Subscribed when called, so a session calls it when it
    /// attaches to the server.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn status(&self) -> ServerStatus {
        ServerStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Acquire)
    }
}

/// Live state of one backend.
#[derive(Debug)]
pub struct BackendState {
    pub name: String,
    pub servers: Vec<Arc<ServerState>>,
    pub counters: Counters,
}

impl BackendState {
    /// Usable servers, as HAProxy's `nbsrv()` counts them.
    pub fn nbsrv(&self) -> u32 {
        self.servers
            .iter()
            .filter(|s| s.status().is_usable())
            .count() as u32
    }

    pub fn server(&self, name: &str) -> Option<&Arc<ServerState>> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// Counters of one HTTP cache (`[cache.NAME]`).
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Requests looked up (`cache-use` on a request that may be served from a cache).
    pub lookups: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Responses stored.
    pub stores: AtomicU64,
    /// Entries removed to make room.
    pub evictions: AtomicU64,
    /// Body bytes served from the cache.
    pub bytes_served: AtomicU64,
    /// Bytes the entries take now (headers, bodies, keys).
    pub bytes_used: AtomicU64,
    /// Entries now.
    pub entries: AtomicU64,
    /// `total-max-size` in bytes.
    pub capacity: AtomicU64,
}

/// Every backend's live state, plus a change notification.
#[derive(Debug)]
pub struct Registry {
    backends: ArcSwap<HashMap<String, Arc<BackendState>>>,
    frontends: ArcSwap<HashMap<String, Arc<Counters>>>,
    /// The L7 tier's caches, by name.
    caches: ArcSwap<Vec<(String, Arc<CacheCounters>)>>,
    changes: watch::Sender<u64>,
}

/// Errors from runtime state changes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("no backend named {0}")]
    NoBackend(String),
    #[error("backend {backend} has no server named {server}")]
    NoServer { backend: String, server: String },
    #[error("weight {0} is out of range 0..=256")]
    Weight(u32),
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            backends: ArcSwap::from_pointee(HashMap::new()),
            frontends: ArcSwap::from_pointee(HashMap::new()),
            caches: ArcSwap::from_pointee(Vec::new()),
            changes: watch::channel(0).0,
        }
    }

    /// Replaces the backend set (reload). Servers that keep their name and address should be
    /// carried over by the caller so their status and counters survive.
    pub fn replace(
        &self,
        backends: HashMap<String, Arc<BackendState>>,
        frontends: HashMap<String, Arc<Counters>>,
    ) {
        self.backends.store(Arc::new(backends));
        self.frontends.store(Arc::new(frontends));
        self.notify();
    }

    pub fn backends(&self) -> Arc<HashMap<String, Arc<BackendState>>> {
        self.backends.load_full()
    }

    pub fn backend(&self, name: &str) -> Option<Arc<BackendState>> {
        self.backends.load().get(name).cloned()
    }

    pub fn frontend(&self, name: &str) -> Option<Arc<Counters>> {
        self.frontends.load().get(name).cloned()
    }

    pub fn frontends(&self) -> Arc<HashMap<String, Arc<Counters>>> {
        self.frontends.load_full()
    }

    /// The caches the L7 tier runs (set with each of its generations).
    pub fn set_caches(&self, caches: Vec<(String, Arc<CacheCounters>)>) {
        self.caches.store(Arc::new(caches));
    }

    pub fn caches(&self) -> Arc<Vec<(String, Arc<CacheCounters>)>> {
        self.caches.load_full()
    }

    fn find(&self, backend: &str, server: &str) -> Result<Arc<ServerState>, StateError> {
        let b = self
            .backend(backend)
            .ok_or_else(|| StateError::NoBackend(backend.to_owned()))?;
        b.server(server)
            .cloned()
            .ok_or_else(|| StateError::NoServer {
                backend: backend.to_owned(),
                server: server.to_owned(),
            })
    }

    /// Sets a server's status; subscribers are told when it changed.
    pub fn set_status(
        &self,
        backend: &str,
        server: &str,
        status: ServerStatus,
    ) -> Result<bool, StateError> {
        let s = self.find(backend, server)?;
        let old = s.status.swap(status as u8, Ordering::AcqRel);
        let changed = old != status as u8;
        if changed {
            self.notify();
        }
        Ok(changed)
    }

    /// Sets a server's weight (0..=256).
    pub fn set_weight(&self, backend: &str, server: &str, weight: u32) -> Result<bool, StateError> {
        if weight > 256 {
            return Err(StateError::Weight(weight));
        }
        let s = self.find(backend, server)?;
        let changed = s.weight.swap(weight, Ordering::AcqRel) != weight;
        if changed {
            self.notify();
        }
        Ok(changed)
    }

    /// `shutdown sessions server B/S`: ends the server's established sessions, in L7 (its
    /// client connections) and in the data path (its tracked flows).
    pub fn shutdown_sessions(&self, backend: &str, server: &str) -> Result<(), StateError> {
        let s = self.find(backend, server)?;
        s.shutdown.send_modify(|g| *g = g.wrapping_add(1));
        self.notify();
        Ok(())
    }

    /// A receiver that changes whenever any status, weight or the backend set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}
