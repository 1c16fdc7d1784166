//! Stick tables (HAProxy's `stick-table`): entries keyed by an address, an integer or a
//! string, each with the counters its table stores (`conn_cur`, `http_req_rate(10s)`,
//! `gpc0`, …), updated by the requests that track them (`track-sc0 src`) and read by the
//! `sc_*` / `src_*` / `table_*` fetches.
//!
//! Shared state: one [`Tables`] per config generation, built by the L7 runtime, that keeps
//! the tables of the previous generation whose definition did not change (a reload loses
//! no counts). A table is split in shards by key hash, each a small map under its own
//! lock, so workers updating different keys rarely meet; an entry's counters sit under the
//! entry's own lock (as HAProxy's per-entry lock). Totals are exact: every update of one
//! key goes to the one entry. Memory is bounded by `size`: a shard holds at most its share,
//! an expired entry is dropped when met, and a full shard evicts its least recently
//! updated entry no request is tracking (or refuses the new key with `nopurge`).
//!
//! Rates are HAProxy's `freq_ctr` over the configured period: the count of the current
//! period plus the previous period's count weighted by the part of the period still to
//! run, periods aligned on a process-wide clock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::acl::{SampleValue, StkData};
use crate::config::model::{Config, StickKey, StickTableSpec};

/// Milliseconds on the clock every table shares.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A table key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    V4(u32),
    V6(u128),
    Int(i64),
    Bytes(Box<[u8]>),
}

/// HAProxy's `freq_ctr`: events in the current period and the one before.
#[derive(Debug, Clone, Copy, Default)]
struct FreqCtr {
    /// Start of the current period (ms, a multiple of the period).
    tick: u64,
    curr: u64,
    prev: u64,
}

impl FreqCtr {
    /// Rotates to the period holding `now`.
    fn rotate(&mut self, now: u64, period: u64) {
        let start = now - now % period;
        if start == self.tick {
            return;
        }
        self.prev = if start - self.tick == period {
            self.curr
        } else {
            0
        };
        self.curr = 0;
        self.tick = start;
    }

    fn add(&mut self, now: u64, period: u64, n: u64) {
        self.rotate(now, period);
        self.curr = self.curr.saturating_add(n);
    }

    /// Events over the last period: the current count plus the previous one weighted by
    /// what remains of the current period.
    fn read(&self, now: u64, period: u64) -> u64 {
        let mut c = *self;
        c.rotate(now, period);
        let remain = period - (now - c.tick);
        c.curr + c.prev.saturating_mul(remain) / period
    }
}

/// Index of each plain counter in [`Data::vals`] and each rate in [`Data::rates`].
fn val_index(d: StkData) -> Option<usize> {
    Some(match d {
        StkData::ServerId => 0,
        StkData::Gpt0 => 1,
        StkData::Gpc0 => 2,
        StkData::ConnCnt => 3,
        StkData::ConnCur => 4,
        StkData::SessCnt => 5,
        StkData::HttpReqCnt => 6,
        StkData::HttpErrCnt => 7,
        StkData::BytesInCnt => 8,
        StkData::BytesOutCnt => 9,
        _ => return None,
    })
}

fn rate_index(d: StkData) -> Option<usize> {
    Some(match d {
        StkData::Gpc0Rate => 0,
        StkData::ConnRate => 1,
        StkData::SessRate => 2,
        StkData::HttpReqRate => 3,
        StkData::HttpErrRate => 4,
        StkData::BytesInRate => 5,
        StkData::BytesOutRate => 6,
        _ => return None,
    })
}

/// The counters of one entry.
#[derive(Debug, Default)]
struct Data {
    vals: [i64; 10],
    rates: [FreqCtr; 7],
    /// Last update (ms), for expiry and eviction.
    touched: u64,
}

/// One entry of a table.
#[derive(Debug)]
pub struct Entry {
    key: Key,
    data: Mutex<Data>,
}

/// One event on an entry: which counters it moves, by how much.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Tracking starts (HAProxy's `stream_start_counters`): conn_cnt, conn_rate, conn_cur.
    TrackStart,
    /// Tracking ends: conn_cur goes down.
    TrackEnd,
    /// An HTTP request: http_req_cnt, http_req_rate.
    HttpReq,
    /// A 4xx answer: http_err_cnt, http_err_rate.
    HttpErr,
    BytesIn(u64),
    BytesOut(u64),
    IncGpc0,
    SetGpt0(i64),
}

/// A stick table.
#[derive(Debug)]
pub struct StickTable {
    pub name: String,
    pub spec: StickTableSpec,
    /// The period (ms) of each stored rate; `None` where not stored.
    periods: [Option<u64>; 7],
    stored: Vec<StkData>,
    shards: Box<[Shard]>,
    shard_cap: usize,
    hasher: std::hash::RandomState,
}

const SHARDS: usize = 16;

/// One shard of a table: its share of the entries.
type Shard = Mutex<HashMap<Key, Arc<Entry>>>;

impl StickTable {
    pub fn new(name: &str, spec: &StickTableSpec) -> Self {
        // Small tables in one shard, so that tracked entries crowding a shard cannot
        // refuse keys while the table has room.
        let shards = (spec.size / 256).clamp(1, SHARDS);
        let mut periods = [None; 7];
        for (d, p) in &spec.store {
            if let (Some(i), Some(p)) = (rate_index(*d), p) {
                periods[i] = Some(u64::try_from(p.as_millis()).unwrap_or(u64::MAX).max(1));
            }
        }
        Self {
            name: name.to_owned(),
            spec: spec.clone(),
            periods,
            stored: spec.store.iter().map(|(d, _)| *d).collect(),
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_cap: spec.size.div_ceil(shards),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The most entries the table holds (the shards' shares, at least `size`).
    pub fn capacity(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    fn expire_ms(&self) -> Option<u64> {
        self.spec
            .expire
            .map(|e| u64::try_from(e.as_millis()).unwrap_or(u64::MAX))
    }

    fn shard(&self, key: &Key) -> &Shard {
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % self.shards.len()]
    }

    fn expired(&self, e: &Arc<Entry>, now: u64) -> bool {
        let Some(exp) = self.expire_ms() else {
            return false;
        };
        // A tracked entry lives on (HAProxy refreshes it while it is in use).
        Arc::strong_count(e) == 1 && {
            let touched = e.data.lock().map_or(0, |d| d.touched);
            now.saturating_sub(touched) >= exp
        }
    }

    /// The key a sample stands for in this table, converted as HAProxy casts samples to
    /// the table's type; `None`: no such key (an IPv6 address in an `ip` table).
    pub fn key_of(&self, v: &SampleValue) -> Option<Key> {
        let bytes = |b: &[u8], len: usize, pad: bool| {
            let mut b = b[..b.len().min(len)].to_vec();
            if pad {
                b.resize(len, 0);
            }
            Key::Bytes(b.into_boxed_slice())
        };
        let ip = |v: &SampleValue| match v {
            SampleValue::Ip(ip) => Some(*ip),
            SampleValue::Str(s) => s.parse().ok(),
            SampleValue::Int(i) => u32::try_from(*i)
                .ok()
                .map(|a| IpAddr::from(a.to_be_bytes())),
        };
        Some(match self.spec.key {
            StickKey::Ip => match ip(v)? {
                IpAddr::V4(a) => Key::V4(u32::from(a)),
                IpAddr::V6(a) => Key::V4(u32::from(a.to_ipv4_mapped()?)),
            },
            StickKey::Ipv6 => match ip(v)? {
                IpAddr::V4(a) => Key::V6(u128::from(a.to_ipv6_mapped())),
                IpAddr::V6(a) => Key::V6(u128::from(a)),
            },
            StickKey::Integer => match v {
                SampleValue::Int(i) => Key::Int(*i),
                SampleValue::Str(s) => Key::Int(s.trim().parse().ok()?),
                SampleValue::Ip(IpAddr::V4(a)) => Key::Int(i64::from(u32::from(*a))),
                SampleValue::Ip(IpAddr::V6(_)) => return None,
            },
            StickKey::String(len) => {
                let text = match v {
                    SampleValue::Str(s) => s.clone(),
                    SampleValue::Int(i) => i.to_string(),
                    SampleValue::Ip(ip) => ip.to_string(),
                };
                bytes(text.as_bytes(), len, false)
            }
            StickKey::Binary(len) => match v {
                SampleValue::Str(s) => bytes(s.as_bytes(), len, true),
                SampleValue::Int(i) => bytes(&i.to_be_bytes(), len, true),
                SampleValue::Ip(IpAddr::V4(a)) => bytes(&a.octets(), len, true),
                SampleValue::Ip(IpAddr::V6(a)) => bytes(&a.octets(), len, true),
            },
        })
    }

    /// The entry of `key`, if there is a live one.
    pub fn lookup(&self, key: &Key) -> Option<Arc<Entry>> {
        let now = now_ms();
        let mut shard = self.shard(key).lock().ok()?;
        let e = shard.get(key)?;
        if self.expired(e, now) {
            shard.remove(key);
            return None;
        }
        Some(e.clone())
    }

    /// The entry of `key`, created when there is none; `None` when the table is full of
    /// tracked entries (or full with `nopurge`).
    pub fn get_or_create(&self, key: Key) -> Option<Arc<Entry>> {
        let now = now_ms();
        let mut shard = self.shard(&key).lock().ok()?;
        if let Some(e) = shard.get(&key) {
            if !self.expired(e, now) {
                let e = e.clone();
                touch(&e, now);
                return Some(e);
            }
            shard.remove(&key);
        }
        if shard.len() >= self.shard_cap {
            shard.retain(|_, e| !self.expired(e, now));
        }
        if shard.len() >= self.shard_cap {
            if self.spec.nopurge {
                return None;
            }
            let oldest = shard
                .iter()
                .filter(|(_, e)| Arc::strong_count(e) == 1)
                .min_by_key(|(_, e)| e.data.lock().map_or(0, |d| d.touched))
                .map(|(k, _)| k.clone())?;
            shard.remove(&oldest);
        }
        let e = Arc::new(Entry {
            key: key.clone(),
            data: Mutex::new(Data {
                touched: now,
                ..Data::default()
            }),
        });
        shard.insert(key, e.clone());
        Some(e)
    }

    /// Applies `ev` to `e`.
    pub fn update(&self, e: &Entry, ev: Event) {
        let now = now_ms();
        let Ok(mut d) = e.data.lock() else { return };
        d.touched = now;
        let rate = |d: &mut Data, r: StkData, n: u64| {
            if let (Some(i), Some(p)) = (rate_index(r), rate_index(r).and_then(|i| self.periods[i]))
            {
                d.rates[i].add(now, p, n);
            }
        };
        let add = |d: &mut Data, v: StkData, n: i64| {
            if let Some(i) = val_index(v) {
                d.vals[i] = d.vals[i].saturating_add(n);
            }
        };
        match ev {
            Event::TrackStart => {
                add(&mut d, StkData::ConnCnt, 1);
                add(&mut d, StkData::ConnCur, 1);
                rate(&mut d, StkData::ConnRate, 1);
            }
            Event::TrackEnd => {
                let i = val_index(StkData::ConnCur).unwrap_or(0);
                d.vals[i] = (d.vals[i] - 1).max(0);
            }
            Event::HttpReq => {
                add(&mut d, StkData::HttpReqCnt, 1);
                rate(&mut d, StkData::HttpReqRate, 1);
            }
            Event::HttpErr => {
                add(&mut d, StkData::HttpErrCnt, 1);
                rate(&mut d, StkData::HttpErrRate, 1);
            }
            Event::BytesIn(n) => {
                add(
                    &mut d,
                    StkData::BytesInCnt,
                    i64::try_from(n).unwrap_or(i64::MAX),
                );
                rate(&mut d, StkData::BytesInRate, n);
            }
            Event::BytesOut(n) => {
                add(
                    &mut d,
                    StkData::BytesOutCnt,
                    i64::try_from(n).unwrap_or(i64::MAX),
                );
                rate(&mut d, StkData::BytesOutRate, n);
            }
            Event::IncGpc0 => {
                add(&mut d, StkData::Gpc0, 1);
                rate(&mut d, StkData::Gpc0Rate, 1);
            }
            Event::SetGpt0(v) => {
                if let Some(i) = val_index(StkData::Gpt0) {
                    d.vals[i] = v;
                }
            }
        }
    }

    /// A stored data type of `e`; `None` when the table does not store it.
    pub fn read(&self, e: &Entry, data: StkData) -> Option<i64> {
        if !self.stored.contains(&data) {
            return None;
        }
        let d = e.data.lock().ok()?;
        if let Some(i) = val_index(data) {
            return Some(d.vals[i]);
        }
        let i = rate_index(data)?;
        let p = self.periods[i]?;
        Some(i64::try_from(d.rates[i].read(now_ms(), p)).unwrap_or(i64::MAX))
    }

    /// What a fetch reads for `key` here: the stored value, 0 for a key with no entry,
    /// `None` when the table does not store that type.
    pub fn read_key(&self, key: Option<&Key>, data: StkData) -> Option<i64> {
        if !self.stored.contains(&data) {
            return None;
        }
        match key.and_then(|k| self.lookup(k)) {
            Some(e) => self.read(&e, data),
            None => Some(0),
        }
    }

    /// Entries in use (expired ones dropped first).
    pub fn used(&self) -> usize {
        let now = now_ms();
        self.shards
            .iter()
            .map(|s| match s.lock() {
                Ok(mut s) => {
                    s.retain(|_, e| !self.expired(e, now));
                    s.len()
                }
                Err(_) => 0,
            })
            .sum()
    }
}

fn touch(e: &Entry, now: u64) {
    if let Ok(mut d) = e.data.lock() {
        d.touched = now;
    }
}

impl Entry {
    /// The key of the entry.
    pub fn key(&self) -> &Key {
        &self.key
    }
}

/// An entry a request tracks (`track-scN`): counted in conn_cur until dropped.
#[derive(Debug)]
pub struct Tracked {
    pub table: Arc<StickTable>,
    pub entry: Arc<Entry>,
}

impl Tracked {
    /// Starts tracking `key` in `table` (HAProxy's `stream_track_stkctr` and, for an
    /// `http-request` rule, the request it counts); `None` when the table has no room.
    pub fn start(table: &Arc<StickTable>, key: Key) -> Option<Tracked> {
        let entry = table.get_or_create(key)?;
        table.update(&entry, Event::TrackStart);
        Some(Tracked {
            table: table.clone(),
            entry,
        })
    }

    pub fn update(&self, ev: Event) {
        self.table.update(&self.entry, ev);
    }

    pub fn read(&self, data: StkData) -> Option<i64> {
        self.table.read(&self.entry, data)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.table.update(&self.entry, Event::TrackEnd);
    }
}

/// Every stick table of one config generation, by name.
#[derive(Debug, Default)]
pub struct Tables {
    by_name: HashMap<String, Arc<StickTable>>,
}

impl Tables {
    /// The tables `config` declares; a table of `old` with the same name and definition is
    /// kept, with its entries.
    pub fn build(config: &Config, old: Option<&Tables>) -> Tables {
        let specs = config
            .frontends
            .iter()
            .map(|f| (&f.name, &f.stick_table))
            .chain(config.backends.iter().map(|b| (&b.name, &b.stick_table)));
        let mut by_name = HashMap::new();
        for (name, spec) in specs {
            let Some(spec) = spec else { continue };
            let t = match old.and_then(|o| o.by_name.get(name)) {
                Some(t) if t.spec == *spec => t.clone(),
                _ => Arc::new(StickTable::new(name, spec)),
            };
            by_name.insert(name.clone(), t);
        }
        Tables { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<StickTable>> {
        self.by_name.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(size: usize, store: &[(StkData, Option<u64>)]) -> StickTableSpec {
        StickTableSpec {
            key: StickKey::Ip,
            size,
            expire: Some(Duration::from_secs(30)),
            nopurge: false,
            store: store
                .iter()
                .map(|(d, p)| (*d, p.map(Duration::from_secs)))
                .collect(),
        }
    }

    #[test]
    fn freq_ctr_weights_the_previous_period() {
        let mut f = FreqCtr::default();
        let p = 10_000;
        for _ in 0..100 {
            f.add(10_000, p, 1);
        }
        assert_eq!(f.read(10_000, p), 100);
        assert_eq!(f.read(19_999, p), 100);
        // Half-way through the next period: half the previous one's count.
        assert_eq!(f.read(25_000, p), 50);
        f.add(25_000, p, 3);
        assert_eq!(f.read(25_000, p), 53);
        // Two periods on: nothing left.
        assert_eq!(f.read(40_000, p), 0);
    }

    #[test]
    fn keys_convert_like_haproxy() {
        let t = StickTable::new("t", &spec(10, &[]));
        let v4 = SampleValue::Ip("192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(t.key_of(&v4), Some(Key::V4(0xc000_0201)));
        let mapped = SampleValue::Ip(
            "::ffff:192.0.2.1"
                .parse()
                .unwrap_or(IpAddr::from([0u8; 16])),
        );
        assert_eq!(t.key_of(&mapped), Some(Key::V4(0xc000_0201)));
        let v6 = SampleValue::Ip("2001:db8::1".parse().unwrap_or(IpAddr::from([0u8; 16])));
        assert_eq!(t.key_of(&v6), None);
        let mut s = spec(10, &[]);
        s.key = StickKey::String(4);
        let t = StickTable::new("t", &s);
        assert_eq!(
            t.key_of(&SampleValue::Str("abcdef".into())),
            Some(Key::Bytes(b"abcd".to_vec().into_boxed_slice()))
        );
    }

    #[test]
    fn size_bounds_the_table_and_evicts_the_oldest_untracked() {
        let t = Arc::new(StickTable::new("t", &spec(32, &[(StkData::ConnCur, None)])));
        let held: Vec<Tracked> = (0..8u32)
            .filter_map(|i| Tracked::start(&t, Key::V4(i)))
            .collect();
        for i in 8..10_000u32 {
            assert!(t.get_or_create(Key::V4(i)).is_some());
        }
        assert!(t.used() <= t.capacity());
        assert!(t.capacity() >= 32 && t.capacity() < 48);
        // Tracked entries were never evicted.
        for h in &held {
            assert!(t.lookup(h.entry.key()).is_some());
            assert_eq!(h.read(StkData::ConnCur), Some(1));
        }
        let k = held[0].entry.key().clone();
        drop(held);
        assert_eq!(t.read_key(Some(&k), StkData::ConnCur), Some(0));
    }

    #[test]
    fn a_table_full_of_tracked_entries_refuses_new_keys() {
        let t = Arc::new(StickTable::new("t", &spec(2, &[])));
        let a = Tracked::start(&t, Key::V4(1));
        let b = Tracked::start(&t, Key::V4(2));
        assert!(a.is_some() && b.is_some());
        assert!(Tracked::start(&t, Key::V4(3)).is_none());
        drop(a);
        assert!(Tracked::start(&t, Key::V4(3)).is_some());
        assert!(t.lookup(&Key::V4(1)).is_none());
        assert!(t.lookup(&Key::V4(2)).is_some());
    }

    #[test]
    fn nopurge_refuses_new_keys_when_full() {
        let mut s = spec(1, &[]);
        s.nopurge = true;
        let t = StickTable::new("t", &s);
        assert!(t.get_or_create(Key::V4(1)).is_some());
        assert!(t.get_or_create(Key::V4(2)).is_none());
        assert!(t.get_or_create(Key::V4(1)).is_some());
    }

    #[test]
    fn counts_are_exact_across_threads() {
        let t = Arc::new(StickTable::new(
            "t",
            &spec(
                1000,
                &[
                    (StkData::HttpReqCnt, None),
                    (StkData::HttpReqRate, Some(60)),
                ],
            ),
        ));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        if let Some(e) = t.get_or_create(Key::V4(i % 10)) {
                            t.update(&e, Event::HttpReq);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            assert!(th.join().is_ok());
        }
        for k in 0..10 {
            assert_eq!(
                t.read_key(Some(&Key::V4(k)), StkData::HttpReqCnt),
                Some(400)
            );
        }
        assert_eq!(t.read_key(Some(&Key::V4(99)), StkData::HttpReqCnt), Some(0));
        assert_eq!(t.read_key(Some(&Key::V4(1)), StkData::Gpc0), None);
    }
}
