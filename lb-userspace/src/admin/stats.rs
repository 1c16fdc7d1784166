//! The `/stats.json` document: one snapshot of frontends, backends, servers, check results
//! and L4 counters. `/stats` (HTML), `/metrics` and `lb stats` all render this same snapshot.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::health::{CheckInfo, HistogramSnapshot};
use crate::state::{BackendState, Counters, ServerState};

use super::AdminContext;
use super::l4::{L4BackendStats, L4Snapshot};

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsDoc {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// Sorted by name.
    pub frontends: Vec<FrontendStats>,
    /// Sorted by name; servers in configuration order.
    pub backends: Vec<BackendStats>,
    /// XDP counters, when the data plane provides them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4: Option<L4Snapshot>,
    /// Why L4 counters are missing, when the data plane failed to provide them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4_error: Option<String>,
    /// The L7 tier's HTTP caches, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<CacheStats>,
}

/// Counters of one `[cache.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    pub name: String,
    pub lookups: u64,
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub evictions: u64,
    /// Body bytes served from the cache.
    pub bytes_served: u64,
    /// Bytes the entries take now, and the most they may (`total-max-size`).
    pub bytes_used: u64,
    pub capacity: u64,
    pub entries: u64,
}

impl From<(&String, &crate::state::CacheCounters)> for CacheStats {
    fn from((name, c): (&String, &crate::state::CacheCounters)) -> Self {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Self {
            name: name.clone(),
            lookups: g(&c.lookups),
            hits: g(&c.hits),
            misses: g(&c.misses),
            stores: g(&c.stores),
            evictions: g(&c.evictions),
            bytes_served: g(&c.bytes_served),
            bytes_used: g(&c.bytes_used),
            capacity: g(&c.capacity),
            entries: g(&c.entries),
        }
    }
}

/// Traffic counters of a frontend, backend or server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterStats {
    /// Current connections (HAProxy's `scur`).
    pub active_conns: u64,
    /// Cumulative connections (`stot`).
    pub total_conns: u64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub errors: u64,
    pub responses: ResponseStats,
}

/// Responses by status class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseStats {
    #[serde(rename = "1xx")]
    pub r1xx: u64,
    #[serde(rename = "2xx")]
    pub r2xx: u64,
    #[serde(rename = "3xx")]
    pub r3xx: u64,
    #[serde(rename = "4xx")]
    pub r4xx: u64,
    #[serde(rename = "5xx")]
    pub r5xx: u64,
    pub other: u64,
}

impl ResponseStats {
    /// `(label, value)` pairs in order.
    pub fn classes(&self) -> [(&'static str, u64); 6] {
        [
            ("1xx", self.r1xx),
            ("2xx", self.r2xx),
            ("3xx", self.r3xx),
            ("4xx", self.r4xx),
            ("5xx", self.r5xx),
            ("other", self.other),
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrontendStats {
    pub name: String,
    #[serde(flatten)]
    pub counters: CounterStats,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    pub name: String,
    /// `UP` when at least one server (active or backup) takes traffic, else `DOWN`.
    pub status: String,
    /// Usable non-backup servers.
    pub active_servers: u32,
    /// Usable backup servers.
    pub backup_servers: u32,
    #[serde(flatten)]
    pub counters: CounterStats,
    pub servers: Vec<ServerStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    pub name: String,
    pub addr: String,
    /// `UP`, `DOWN`, `DRAIN` or `MAINT`.
    pub status: String,
    pub weight: u32,
    pub backup: bool,
    pub checked: bool,
    #[serde(flatten)]
    pub counters: CounterStats,
    /// L4 packets through the XDP tier (present when the data plane reports this server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_flows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckStats>,
}

/// Health-check details of one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckStats {
    /// Administrative state: `ready`, `drain` or `maint`.
    pub admin: String,
    /// HAProxy wording of the check progress: `UP`, `UP 2/3`, `DOWN 1/2`, `no check`.
    pub progress: String,
    /// Last check status code (`L4OK`, `L4CON`, `L7STS`, … `INI` before the first).
    pub status: String,
    /// Its description (`Layer4 connection problem`).
    pub desc: String,
    /// HTTP status of the last HTTP check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// Duration of the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Seconds since the last check finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_age_s: Option<f64>,
    pub rise: u32,
    pub fall: u32,
    pub health: u32,
    pub interval_ms: u64,
    pub checks: u64,
    pub failures: u64,
    /// UP → DOWN transitions.
    pub up_down: u64,
    #[serde(skip)]
    pub durations: Option<HistogramSnapshot>,
}

impl BackendStats {
    /// The summed weight of the servers that are UP (HAProxy's backend `weight` column).
    pub fn up_weight(&self) -> u32 {
        self.servers
            .iter()
            .filter(|s| s.status == "UP")
            .map(|s| s.weight)
            .sum()
    }
}

impl From<&Counters> for CounterStats {
    fn from(c: &Counters) -> Self {
        let r = |i: usize| c.responses[i].load(Ordering::Relaxed);
        Self {
            active_conns: c.active_conns.load(Ordering::Relaxed),
            total_conns: c.total_conns.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            responses: ResponseStats {
                r1xx: r(0),
                r2xx: r(1),
                r3xx: r(2),
                r4xx: r(3),
                r5xx: r(4),
                other: r(5),
            },
        }
    }
}

impl From<&CheckInfo> for CheckStats {
    fn from(i: &CheckInfo) -> Self {
        let last = i.last.as_ref();
        Self {
            admin: i.admin.as_str().to_owned(),
            progress: i.progress.clone(),
            status: last
                .map(|o| o.status.code())
                .unwrap_or(crate::health::CheckStatus::Init.code())
                .to_owned(),
            desc: last
                .map(|o| o.status.reason())
                .unwrap_or(crate::health::CheckStatus::Init.reason())
                .to_owned(),
            code: last.and_then(|o| o.code),
            info: last.and_then(|o| o.info.clone()),
            duration_ms: last.map(|o| o.duration.as_secs_f64() * 1000.0),
            last_check_age_s: i.last_at.map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or(Duration::ZERO)
                    .as_secs_f64()
            }),
            rise: i.rise,
            fall: i.fall,
            health: i.health,
            interval_ms: u64::try_from(i.interval.as_millis()).unwrap_or(u64::MAX),
            checks: i.checks,
            failures: i.failures,
            up_down: i.up_down,
            durations: Some(i.durations.clone()),
        }
    }
}

fn server_stats(
    backend: &str,
    s: &ServerState,
    ctx: &AdminContext,
    l4: &HashMap<(&str, &str), &L4BackendStats>,
) -> ServerStats {
    let check = ctx
        .health
        .as_ref()
        .and_then(|h| h.server(backend, &s.name))
        .map(|h| CheckStats::from(&h.info()));
    let l4s = l4.get(&(backend, s.name.as_str()));
    ServerStats {
        name: s.name.clone(),
        addr: s.addr.to_string(),
        status: s.status().as_str().to_owned(),
        weight: s.weight(),
        backup: s.backup,
        checked: s.checked,
        counters: CounterStats::from(&s.counters),
        packets: l4s.map(|x| x.packets),
        l4_bytes: l4s.map(|x| x.bytes),
        new_flows: l4s.map(|x| x.new_flows),
        check,
    }
}

fn backend_stats(
    b: &BackendState,
    ctx: &AdminContext,
    l4: &HashMap<(&str, &str), &L4BackendStats>,
) -> BackendStats {
    let usable = |backup: bool| {
        b.servers
            .iter()
            .filter(|s| s.backup == backup && s.status().is_usable())
            .count() as u32
    };
    let (active, backup) = (usable(false), usable(true));
    BackendStats {
        name: b.name.clone(),
        status: if active + backup > 0 { "UP" } else { "DOWN" }.to_owned(),
        active_servers: active,
        backup_servers: backup,
        counters: CounterStats::from(&b.counters),
        servers: b
            .servers
            .iter()
            .map(|s| server_stats(&b.name, s, ctx, l4))
            .collect(),
    }
}

/// Takes a snapshot of everything.
pub fn collect(ctx: &AdminContext) -> StatsDoc {
    let (l4, l4_error) = match ctx.l4.as_ref().map(|l| l.snapshot()) {
        None => (None, None),
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let l4_by_server: HashMap<(&str, &str), &L4BackendStats> = l4
        .iter()
        .flat_map(|s| s.backends.iter())
        .map(|b| ((b.backend.as_str(), b.server.as_str()), b))
        .collect();

    let mut frontends: Vec<FrontendStats> = ctx
        .registry
        .frontends()
        .iter()
        .map(|(name, c)| FrontendStats {
            name: name.clone(),
            counters: CounterStats::from(c.as_ref()),
        })
        .collect();
    frontends.sort_by(|a, b| a.name.cmp(&b.name));

    let backends_map = ctx.registry.backends();
    let mut names: Vec<&String> = backends_map.keys().collect();
    names.sort();
    let backends = names
        .into_iter()
        .filter_map(|n| backends_map.get(n))
        .map(|b| backend_stats(b, ctx, &l4_by_server))
        .collect();

    StatsDoc {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_seconds: ctx.started.elapsed().as_secs(),
        frontends,
        backends,
        l4,
        l4_error,
        caches: ctx
            .registry
            .caches()
            .iter()
            .map(|(n, c)| CacheStats::from((n, c.as_ref())))
            .collect(),
    }
}
