//! The idle connections of one server: per-worker shards (each worker reuses the
//! connections it opened, their I/O being registered with its runtime, like HAProxy's
//! per-thread idle lists), bounded in count and age.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Conn, UpConn};

/// Idle connections older than this are not reused: below the common server keep-alive
/// timeouts (Apache, Node: 5 s), so a request rarely races the server closing an idle
/// connection (HAProxy's `pool-purge-delay` is 5 s too).
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);
/// At most this many idle connections are kept per server and worker.
const MAX_IDLE: usize = 64;
/// Idle-connection shards per pool: one per worker up to this many workers (beyond, workers
/// share shards, and a connection may be driven from a worker other than the one whose
/// reactor it is registered with: correct, but slower).
pub(crate) const SHARDS: usize = 128;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(SHARDS - 1) };
}

/// Marks the current thread as L7 worker `id` (picks its pool shard).
pub fn set_worker(id: usize) {
    WORKER.with(|w| w.set(id % SHARDS));
}

/// The current worker's shard index (below [`SHARDS`]).
pub(crate) fn worker_shard() -> usize {
    WORKER.with(|w| w.get())
}

type IdleList = Mutex<Vec<(UpConn, Instant)>>;

/// The idle connections of one server.
#[derive(Debug)]
pub struct Pool {
    shards: Box<[IdleList; SHARDS]>,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            shards: Box::new(std::array::from_fn(|_| Mutex::new(Vec::new()))),
        }
    }
}

impl Pool {
    fn shard(&self) -> &IdleList {
        &self.shards[worker_shard()]
    }

    /// The most recently used idle connection that is young enough. With `probe`, the
    /// socket is first checked for a close or stray bytes from the server (one system call
    /// when the poller has seen activity on it); without, a request that finds it closed is
    /// expected to be replayed by the caller.
    pub fn take_idle(&self, probe: bool) -> Option<Conn> {
        loop {
            let (mut conn, since) = match self.shard().lock() {
                Ok(mut v) => v.pop(),
                Err(_) => None,
            }?;
            if since.elapsed() > MAX_IDLE_AGE || (probe && !conn.is_idle_and_open()) {
                continue;
            }
            return Some(Conn { conn, reused: true });
        }
    }

    /// Keeps a connection whose exchange completed cleanly, for the next request.
    pub fn put(&self, conn: UpConn) {
        if !conn.rbuf.is_empty() {
            // Bytes beyond the response: the server is out of step; never reuse.
            return;
        }
        if let Ok(mut v) = self.shard().lock()
            && v.len() < MAX_IDLE
        {
            v.push((conn, Instant::now()));
        }
    }

    /// Drops every idle connection (server went away).
    pub fn clear(&self) {
        for s in self.shards.iter() {
            if let Ok(mut v) = s.lock() {
                v.clear();
            }
        }
    }
}
