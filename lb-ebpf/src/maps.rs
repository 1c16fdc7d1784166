//! Every map of the data path. Keys and values come from `lb_common::types`; maps are
//! declared `pinned` so the loader places them under bpffs and a restarted `lb` reuses them
//! (flows, tables and counters survive a control-plane restart).
//!
//! Sizes declared here are defaults: the loader overrides `LB_FLOWS` (conntrack size) and
//! `LB_MAGLEV` (`MAX_VIPS * 2 * maglev_size`) at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use lb_common::maps::{
    DEFAULT_CONNTRACK_SIZE, DEFAULT_MAGLEV_SIZE, MAX_BACKENDS, MAX_FILTER_RULES, MAX_LOCAL_ADDRS,
    MAX_REPLY_HOPS, MAX_TX_PORTS, MAX_VIPS, VIP_PORT_WORDS,
};
use lb_common::types::{
    Backend, FilterKeyV4, FilterKeyV6, FloodWindow, FlowKey, FlowKeyV4, FlowValue, GlobalConfig,
    LocalAddrKey, NextHop, Reason, ReplyHopKey, ReverseKey, ReverseValue, VipInfo, VipKey, VipSlot,
};

/// Global settings (index 0).
#[map(name = "LB_CONFIG")]
pub static LB_CONFIG: Array<GlobalConfig> = Array::pinned(1, 0);

/// VIP (address, port, protocol) → settings.
#[map(name = "LB_VIPS")]
pub static LB_VIPS: HashMap<VipKey, VipInfo> = HashMap::pinned(MAX_VIPS, 0);

/// VIP id → (VIP key, settings), mirrored from `LB_VIPS` by userspace: established
/// flows find their VIP here by the id their entry records (see `VipSlot`).
#[map(name = "LB_VIP_SLOTS")]
pub static LB_VIP_SLOTS: Array<VipSlot> = Array::pinned(MAX_VIPS, 0);

/// Ports (host order) some VIP uses, one bit each: a hint that a packet may belong to
/// an established flow, so the flow table is looked up before `LB_VIPS`.
#[map(name = "LB_VIP_PORTS")]
pub static LB_VIP_PORTS: Array<u32> = Array::pinned(VIP_PORT_WORDS, 0);

/// Maglev tables: two per VIP (double buffer), `maglev_size` backend ids each.
#[map(name = "LB_MAGLEV")]
pub static LB_MAGLEV: Array<u32> = Array::pinned(MAX_VIPS * 2 * DEFAULT_MAGLEV_SIZE, 0);

/// Backend id → endpoint and state.
#[map(name = "LB_BACKENDS")]
pub static LB_BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

/// Connection tracking of IPv6 flows: client 5-tuple → chosen backend (LRU).
#[map(name = "LB_FLOWS")]
pub static LB_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(DEFAULT_CONNTRACK_SIZE, 0);

/// Connection tracking of IPv4 flows, with a 16-byte key (see `FlowKeyV4`).
#[map(name = "LB_FLOWS_V4")]
pub static LB_FLOWS_V4: LruHashMap<FlowKeyV4, FlowValue> =
    LruHashMap::pinned(DEFAULT_CONNTRACK_SIZE, 0);

/// Backend endpoint → VIP, for stateless reverse NAT.
#[map(name = "LB_REVERSE")]
pub static LB_REVERSE: HashMap<ReverseKey, ReverseValue> = HashMap::pinned(MAX_BACKENDS, 0);

/// Reply 5-tuple (backend → client) → VIP, recorded at flow creation for backends that
/// serve several VIPs (`REVERSE_F_SHARED`), where `LB_REVERSE` alone is ambiguous.
#[map(name = "LB_REPLY_FLOWS")]
pub static LB_REPLY_FLOWS: LruHashMap<FlowKey, ReverseValue> =
    LruHashMap::pinned(DEFAULT_CONNTRACK_SIZE, 0);

/// Reverse next-hop cache: (client, VIP) → the FIB's answer for replies to that client.
#[map(name = "LB_REPLY_HOPS")]
pub static LB_REPLY_HOPS: LruHashMap<ReplyHopKey, NextHop> = LruHashMap::pinned(MAX_REPLY_HOPS, 0);

/// Addresses of the balancer host: never translated.
#[map(name = "LB_LOCAL_ADDRS")]
pub static LB_LOCAL_ADDRS: HashMap<LocalAddrKey, u32> = HashMap::pinned(MAX_LOCAL_ADDRS, 0);

/// IPv4 source filter (scope, address) → `FILTER_DENY` / `FILTER_ALLOW`.
#[map(name = "LB_FILTER_V4")]
pub static LB_FILTER_V4: LpmTrie<FilterKeyV4, u32> = LpmTrie::pinned(MAX_FILTER_RULES, 0);

/// IPv6 source filter.
#[map(name = "LB_FILTER_V6")]
pub static LB_FILTER_V6: LpmTrie<FilterKeyV6, u32> = LpmTrie::pinned(MAX_FILTER_RULES, 0);

/// Interfaces redirect may target, keyed by ifindex.
#[map(name = "LB_TX_PORTS")]
pub static LB_TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_TX_PORTS, 0);

/// Per-CPU packet counters, one slot per [`Reason`].
#[map(name = "LB_REASON_STATS")]
pub static LB_REASON_STATS: PerCpuArray<u64> = PerCpuArray::pinned(Reason::COUNT, 0);

/// Per-CPU traffic counters per VIP id.
#[map(name = "LB_VIP_STATS")]
pub static LB_VIP_STATS: PerCpuArray<lb_common::types::TrafficCounters> =
    PerCpuArray::pinned(MAX_VIPS, 0);

/// Per-CPU count, per VIP id, of TCP packets without SYN that missed the flow table.
#[map(name = "LB_VIP_MISSES")]
pub static LB_VIP_MISSES: PerCpuArray<u64> = PerCpuArray::pinned(MAX_VIPS, 0);

/// Per-CPU traffic counters per backend id.
#[map(name = "LB_BACKEND_STATS")]
pub static LB_BACKEND_STATS: PerCpuArray<lb_common::types::TrafficCounters> =
    PerCpuArray::pinned(MAX_BACKENDS, 0);

/// Next-hop cache lease (index 0); see `FlowValue` and `NextHopLease`.
#[map(name = "LB_NH_GEN")]
pub static LB_NH_GEN: Array<lb_common::types::NextHopLease> = Array::pinned(1, 0);

/// Backend id → the next hop of new flows to that backend (see `names::BACKEND_HOPS`).
#[map(name = "LB_BACKEND_HOPS")]
pub static LB_BACKEND_HOPS: Array<NextHop> = Array::pinned(MAX_BACKENDS, 0);

/// Per-CPU flood-mode window (index 0), see `GlobalConfig::flood_rate`.
#[map(name = "LB_FLOOD")]
pub static LB_FLOOD: PerCpuArray<FloodWindow> = PerCpuArray::pinned(1, 0);
