//! The XDP tier's counters, as the admin API consumes them. The data-plane owner implements
//! [`L4Stats`] (reading the per-CPU BPF maps and summing over CPUs); the admin API calls it on
//! every `/stats`, `/stats.json` and `/metrics` request.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A source of L4 (XDP) counters. Implementations must be cheap enough to call per scrape.
pub trait L4Stats: Send + Sync {
    /// Current totals (monotonic counters, summed over CPUs). An error is reported on the
    /// stats page and in `/metrics` as `lb_l4_stats_up 0`, never as a failed request.
    fn snapshot(&self) -> Result<L4Snapshot, String>;
}

impl<F> L4Stats for F
where
    F: Fn() -> Result<L4Snapshot, String> + Send + Sync,
{
    fn snapshot(&self) -> Result<L4Snapshot, String> {
        self()
    }
}

/// Every L4 counter at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4Snapshot {
    /// Per VIP (`bind` address of a `tcp` frontend served by XDP).
    #[serde(default)]
    pub vips: Vec<L4VipStats>,
    /// Per backend server reached through a VIP.
    #[serde(default)]
    pub backends: Vec<L4BackendStats>,
    /// Packets dropped or passed to the kernel, by reason.
    #[serde(default)]
    pub reasons: Vec<L4ReasonStats>,
    /// The flow tables' occupancy at the last periodic sample (none before the first).
    #[serde(default)]
    pub flow_table: Option<L4FlowTable>,
}

/// Entries in the LRU flow tables (one per address family, each `capacity` entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4FlowTable {
    pub v4: u64,
    pub v6: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4VipStats {
    pub frontend: String,
    pub vip: SocketAddr,
    /// `tcp` or `udp`.
    pub proto: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Flow-table entries of this VIP at the last occupancy sample.
    #[serde(default)]
    pub flows: u64,
    /// TCP packets without SYN that found no flow entry (evicted flows, or flows another
    /// node balanced), re-picked through Maglev.
    #[serde(default)]
    pub non_syn_misses: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4BackendStats {
    pub backend: String,
    pub server: String,
    pub addr: SocketAddr,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4ReasonStats {
    /// `drop` or `pass`.
    pub action: String,
    /// E.g. `deny_src`, `fragment`, `ipv4_options`, `not_ip`, `no_backend`.
    pub reason: String,
    pub packets: u64,
}
