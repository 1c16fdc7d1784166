//! The memory of one cache: entries by URL (and by variant, for `Vary`) in shards, each
//! under its own short lock, so lookups on different URLs never wait on each other; an
//! LRU order per shard; one byte budget for the whole cache (`total-max-size`), reserved
//! before an entry goes in and freed by evicting the least recently used entries; and the
//! fills in progress, so that concurrent misses on one URL go to the server once.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::Notify;

use crate::state::CacheCounters;

/// Shards per cache: enough that workers on different URLs rarely meet on one lock.
const SHARDS: usize = 64;

/// A URL's key: its hash and its bytes (compared on a hit, so a hash collision is a miss).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub hash: u64,
    pub bytes: Box<[u8]>,
}

fn hasher() -> std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher> {
    std::hash::BuildHasherDefault::default()
}

/// A stable hash of some byte strings.
pub fn hash_parts(parts: &[&[u8]]) -> u64 {
    let mut h = hasher().build_hasher();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    h.finish()
}

impl Key {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            hash: hash_parts(&[&bytes]),
            bytes: bytes.into_boxed_slice(),
        }
    }
}

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    pub status: StatusCode,
    /// As the response was when stored (without `Age`).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which request fields the response varies on ([`super::VARY_ACCEPT_ENCODING`], …).
    pub vary: u8,
    /// When it was stored.
    pub stored: Instant,
    /// Fresh until.
    pub expires: Instant,
    /// The `Age` the server gave, in seconds.
    pub age: u64,
    pub etag: Option<HeaderValue>,
    /// `Last-Modified`, else `Date`, else when it was stored (If-Modified-Since).
    pub last_modified: SystemTime,
}

impl Entry {
    /// What the entry counts against `total-max-size`.
    pub fn size(&self, key: &Key) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + headers + key.bytes.len() + 128) as u64
    }
}

/// A fill in progress: the first miss on a URL goes to the server, later ones wait here.
#[derive(Debug, Default)]
pub struct Fill {
    notify: Notify,
    done: AtomicBool,
}

impl Fill {
    /// Waits until the fill ends (stored or given up), at most `limit`.
    pub async fn wait(&self, limit: std::time::Duration) {
        let n = self.notify.notified();
        let mut n = std::pin::pin!(n);
        n.as_mut().enable();
        if self.done.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(limit, n).await;
    }
}

/// The right to fill a URL: dropping it ends the fill and wakes the waiters.
#[derive(Debug)]
pub struct FillToken {
    store: Arc<Store>,
    hash: u64,
    fill: Arc<Fill>,
}

impl Drop for FillToken {
    fn drop(&mut self) {
        {
            let mut sh = self.store.shard(self.hash);
            if sh
                .filling
                .get(&self.hash)
                .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
            {
                sh.filling.remove(&self.hash);
            }
        }
        self.fill.done.store(true, Ordering::Release);
        self.fill.notify.notify_waiters();
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Arc<Entry>),
    /// Not there; with the fill token when this request is the one to fill it.
    Miss(Option<FillToken>),
    /// Not there, and another request is filling it: wait for it, then look again.
    Busy(Arc<Fill>),
}

struct Variant {
    secondary: u64,
    entry: Arc<Entry>,
    size: u64,
    tick: u64,
}

struct Slot {
    key: Box<[u8]>,
    variants: Vec<Variant>,
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Slot>,
    /// tick (of the whole cache) → (primary hash, secondary hash): the least recently
    /// used first.
    lru: BTreeMap<u64, (u64, u64)>,
    filling: HashMap<u64, Arc<Fill>>,
}

impl Shard {
    /// Removes one variant; returns its size.
    fn remove(&mut self, primary: u64, secondary: u64) -> Option<u64> {
        let slot = self.map.get_mut(&primary)?;
        let i = slot
            .variants
            .iter()
            .position(|v| v.secondary == secondary)?;
        let v = slot.variants.swap_remove(i);
        self.lru.remove(&v.tick);
        if slot.variants.is_empty() {
            self.map.remove(&primary);
        }
        Some(v.size)
    }
}

/// The entries of one cache.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    /// Use order across shards, so eviction can find the least recently used of all.
    tick: AtomicU64,
    total: u64,
    max_variants: usize,
    pub counters: Arc<CacheCounters>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("total", &self.total).finish()
    }
}

impl Store {
    pub fn new(total: u64, max_variants: usize, counters: Arc<CacheCounters>) -> Arc<Self> {
        counters.capacity.store(total, Ordering::Relaxed);
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            tick: AtomicU64::new(0),
            total,
            max_variants: max_variants.max(1),
            counters,
        })
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        let m = &self.shards[(hash as usize) % SHARDS];
        // A panic while holding a shard cannot leave it inconsistent in a way that matters
        // more than losing the cache: keep serving.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `key` up for a request that `matches(vary, secondary)` of a stored variant (its
    /// entry's `Vary` fields and variant key) tells it may be served. A miss makes the caller the filler unless another request fills
    /// it already (then [`Lookup::Busy`], or a plain miss when `may_wait` is false).
    pub fn lookup(
        self: &Arc<Self>,
        key: &Key,
        matches: &dyn Fn(u8, u64) -> bool,
        now: Instant,
        may_wait: bool,
    ) -> Lookup {
        let mut sh = self.shard(key.hash);
        let mut expired = None;
        if let Some(slot) = sh.map.get(&key.hash)
            && *slot.key == *key.bytes
            && let Some(first) = slot.variants.first()
        {
            let vary = first.entry.vary;
            if let Some(v) = slot.variants.iter().find(|v| matches(vary, v.secondary)) {
                let sec = v.secondary;
                if v.entry.expires > now {
                    let (old, entry) = (v.tick, v.entry.clone());
                    let tick = self.next_tick();
                    sh.lru.remove(&old);
                    sh.lru.insert(tick, (key.hash, sec));
                    if let Some(v) = sh
                        .map
                        .get_mut(&key.hash)
                        .and_then(|s| s.variants.iter_mut().find(|v| v.secondary == sec))
                    {
                        v.tick = tick;
                    }
                    return Lookup::Hit(entry);
                }
                expired = Some(sec);
            }
        }
        if let Some(sec) = expired
            && let Some(size) = sh.remove(key.hash, sec)
        {
            self.freed(size);
        }
        if let Some(f) = sh.filling.get(&key.hash) {
            return if may_wait {
                Lookup::Busy(f.clone())
            } else {
                Lookup::Miss(None)
            };
        }
        let fill = Arc::new(Fill::default());
        sh.filling.insert(key.hash, fill.clone());
        Lookup::Miss(Some(FillToken {
            store: self.clone(),
            hash: key.hash,
            fill,
        }))
    }

    fn freed(&self, size: u64) {
        self.counters.bytes_used.fetch_sub(size, Ordering::Relaxed);
        self.counters.entries.fetch_sub(1, Ordering::Relaxed);
    }

    /// Stores `entry` as the variant `secondary` of `key`, making room by evicting the
    /// least recently used entries. `false`: not stored (too large, or the URL has
    /// `max-secondary-entries` other variants already).
    pub fn insert(&self, key: &Key, secondary: u64, entry: Entry) -> bool {
        let size = entry.size(key);
        if size > self.total {
            return false;
        }
        // Reserve first, then evict until the reservation fits: concurrent inserts never
        // take the cache over its budget together.
        let used = self.counters.bytes_used.fetch_add(size, Ordering::AcqRel) + size;
        if used > self.total {
            self.evict(used - self.total);
        }
        let entry = Arc::new(entry);
        let mut sh = self.shard(key.hash);
        let tick = self.next_tick();
        let vary = entry.vary;
        let max_variants = self.max_variants;
        let mut replaced: Vec<(u64, u64)> = Vec::new();
        let stored = {
            let slot = sh.map.entry(key.hash).or_insert_with(|| Slot {
                key: key.bytes.clone(),
                variants: Vec::new(),
            });
            if *slot.key != *key.bytes
                || slot.variants.first().is_some_and(|v| v.entry.vary != vary)
            {
                // Another URL on this hash, or the server changed its Vary: start over.
                for v in slot.variants.drain(..) {
                    replaced.push((v.tick, v.size));
                }
                slot.key = key.bytes.clone();
            }
            if let Some(i) = slot.variants.iter().position(|v| v.secondary == secondary) {
                let v = slot.variants.swap_remove(i);
                replaced.push((v.tick, v.size));
            }
            if slot.variants.len() >= max_variants {
                false
            } else {
                slot.variants.push(Variant {
                    secondary,
                    entry,
                    size,
                    tick,
                });
                true
            }
        };
        for (t, s) in &replaced {
            sh.lru.remove(t);
            self.freed(*s);
        }
        if stored {
            sh.lru.insert(tick, (key.hash, secondary));
            self.counters.entries.fetch_add(1, Ordering::Relaxed);
            self.counters.stores.fetch_add(1, Ordering::Relaxed);
        } else {
            if sh.map.get(&key.hash).is_some_and(|s| s.variants.is_empty()) {
                sh.map.remove(&key.hash);
            }
            self.counters.bytes_used.fetch_sub(size, Ordering::Relaxed);
        }
        stored
    }

    /// Evicts at least `need` bytes, the least recently used entries of the whole cache
    /// first (each shard's oldest is compared; one lock at a time).
    fn evict(&self, need: u64) {
        let mut freed = 0;
        while freed < need {
            let oldest = (0..SHARDS)
                .filter_map(|i| {
                    let sh = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
                    sh.lru.first_key_value().map(|(t, _)| (*t, i))
                })
                .min();
            let Some((_, i)) = oldest else {
                return;
            };
            let mut sh = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
            let Some((_, (p, s))) = sh.lru.pop_first() else {
                continue;
            };
            if let Some(size) = sh.remove(p, s) {
                freed += size;
                self.freed(size);
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes every variant of `key` (a successful unsafe request on the URL).
    pub fn invalidate(&self, key: &Key) {
        let mut sh = self.shard(key.hash);
        let Some(slot) = sh.map.get(&key.hash) else {
            return;
        };
        if *slot.key != *key.bytes {
            return;
        }
        let secs: Vec<u64> = slot.variants.iter().map(|v| v.secondary).collect();
        for s in secs {
            if let Some(size) = sh.remove(key.hash, s) {
                self.freed(size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(body: usize, vary: u8) -> Entry {
        let now = Instant::now();
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            vary,
            stored: now,
            expires: now + Duration::from_secs(60),
            age: 0,
            etag: None,
            last_modified: SystemTime::now(),
        }
    }

    fn key(s: &str) -> Key {
        Key::new(s.as_bytes().to_vec())
    }

    fn hit(st: &Arc<Store>, k: &Key) -> bool {
        matches!(
            st.lookup(k, &|_, s| s == 0, Instant::now(), false),
            Lookup::Hit(_)
        )
    }

    #[test]
    fn bounded_by_total_with_lru_eviction() {
        let c = Arc::new(CacheCounters::default());
        let st = Store::new(10_000, 10, c.clone());
        for i in 0..4 {
            assert!(st.insert(&key(&format!("/{i}")), 0, entry(2000, 0)));
        }
        // touch /0 so that /1 is the least recently used
        assert!(hit(&st, &key("/0")));
        assert!(st.insert(&key("/4"), 0, entry(2000, 0)));
        assert!(st.insert(&key("/5"), 0, entry(2000, 0)));
        assert!(c.bytes_used.load(Ordering::Relaxed) <= 10_000);
        assert!(c.evictions.load(Ordering::Relaxed) >= 1);
        assert!(hit(&st, &key("/5")));
        // LRU over the whole cache: /1 and /2 went, /0 (touched), /3, /4, /5 stay.
        assert!(hit(&st, &key("/4")));
        assert!(hit(&st, &key("/0")));
        assert!(hit(&st, &key("/3")));
        assert!(!hit(&st, &key("/1")));
        assert!(!hit(&st, &key("/2")));
        let entries = c.entries.load(Ordering::Relaxed);
        assert!(entries <= 4, "{entries}");
        assert!(
            !st.insert(&key("/big"), 0, entry(20_000, 0)),
            "larger than the cache"
        );
    }

    #[test]
    fn lru_order_in_one_shard() {
        // Keys forced into one shard by brute force: the least recently used goes first.
        let c = Arc::new(CacheCounters::default());
        let st = Store::new(7_500, 10, c.clone());
        let mut same = Vec::new();
        let mut i = 0;
        while same.len() < 4 {
            let k = key(&format!("/k{i}"));
            if (k.hash as usize).is_multiple_of(SHARDS) {
                same.push(k);
            }
            i += 1;
        }
        for k in &same[..3] {
            assert!(st.insert(k, 0, entry(2000, 0)));
        }
        assert!(hit(&st, &same[0]));
        assert!(st.insert(&same[3], 0, entry(2000, 0)));
        assert!(hit(&st, &same[0]), "recently used: kept");
        assert!(!hit(&st, &same[1]), "least recently used: evicted");
        assert!(hit(&st, &same[2]));
        assert!(hit(&st, &same[3]));
    }

    #[test]
    fn one_filler_per_url_and_variants() {
        let c = Arc::new(CacheCounters::default());
        let st = Store::new(1 << 20, 2, c);
        let k = key("/a");
        let Lookup::Miss(Some(token)) = st.lookup(&k, &|_, s| s == 0, Instant::now(), true) else {
            panic!("first miss fills");
        };
        let Lookup::Busy(fill) = st.lookup(&k, &|_, s| s == 0, Instant::now(), true) else {
            panic!("second waits");
        };
        assert!(matches!(
            st.lookup(&k, &|_, s| s == 0, Instant::now(), false),
            Lookup::Miss(None)
        ));
        drop(token);
        assert!(fill.done.load(Ordering::Acquire));
        // variants: two fit, a third is refused
        assert!(st.insert(&k, 1, entry(10, 1)));
        assert!(st.insert(&k, 2, entry(10, 1)));
        assert!(!st.insert(&k, 3, entry(10, 1)));
        assert!(matches!(
            st.lookup(&k, &|_, s| s == 2, Instant::now(), false),
            Lookup::Hit(_)
        ));
        assert!(!matches!(
            st.lookup(&k, &|_, s| s == 3, Instant::now(), false),
            Lookup::Hit(_)
        ));
        st.invalidate(&k);
        assert!(!matches!(
            st.lookup(&k, &|_, s| s == 2, Instant::now(), false),
            Lookup::Hit(_)
        ));
    }

    #[test]
    fn expired_entries_miss() {
        let c = Arc::new(CacheCounters::default());
        let st = Store::new(1 << 20, 2, c.clone());
        let k = key("/e");
        let mut e = entry(10, 0);
        e.expires = Instant::now();
        assert!(st.insert(&k, 0, e));
        assert!(!hit(&st, &k));
        assert_eq!(c.entries.load(Ordering::Relaxed), 0);
    }
}
