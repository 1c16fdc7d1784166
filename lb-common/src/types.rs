//! Map keys and values. All multi-byte address and port fields hold network byte order,
//! exactly as they appear in packets, so the data path copies them without swapping.
//! IPv4 addresses occupy word 0 of a `[u32; 4]`; the other words are zero.

/// Address family tags used in keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers lb balances.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// A VIP: the (address, port, protocol) a `mode tcp` frontend binds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Hash the client address only (`balance source`); otherwise the 5-tuple is hashed.
pub const VIP_F_HASH_SRC: u32 = 1 << 0;
/// The frontend has an allow-list: sources not in it are dropped.
pub const VIP_F_ALLOWLIST: u32 = 1 << 1;
/// The frontend has source-filter rules (deny or allow) under its scope: without this bit
/// the data path skips the per-VIP LPM lookup.
pub const VIP_F_FILTER: u32 = 1 << 2;
/// Some backend of the VIP also serves another VIP (`REVERSE_F_SHARED`): new flows record
/// their reply tuple. Without this bit the data path skips the reverse-map probe.
pub const VIP_F_SHARED_BACKEND: u32 = 1 << 3;

/// Per-VIP data-path settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipInfo {
    /// Index into the per-VIP arrays (Maglev tables, counters); `< MAX_VIPS`.
    pub vip_id: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
    /// Which of the VIP's two Maglev tables is live (0 or 1). Userspace fills the other one,
    /// then flips this field with one map update, so the data path never sees a half table.
    pub active_table: u32,
    /// Number of backends in the live table; 0 means "no backend", and new flows are dropped.
    pub backend_count: u32,
}

/// `LB_VIP_SLOTS[vip_id]`: the VIP that owns `vip_id` and its settings, a copy of its
/// `LB_VIPS` entry. Established flows name their VIP by id, so the data path reads this
/// array slot (no hash lookup) and checks that `key` is still the packet's destination: a
/// removed VIP's slot is cleared (all zero, which no packet matches) and a reused id names
/// another key, so neither keeps balancing old flows. New flows and re-picks use `LB_VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipSlot {
    pub key: VipKey,
    pub info: VipInfo,
}

/// Global data-path settings (single-entry array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Maglev table size M (prime). Table `t` of VIP `v` starts at `(v * 2 + t) * M`.
    pub maglev_size: u32,
    /// Seed mixed into every packet hash; shared by all nodes running one config.
    pub hash_seed: u32,
    /// `CFG_F_*` bits.
    pub flags: u32,
    /// Flood mode (Katran's): when one CPU sees more than this many new flows within a
    /// second, further new flows of that second are forwarded by the Maglev pick without
    /// a flow-table insert, so a flood from random sources cannot evict established
    /// flows. Per CPU; 0 turns flood mode off.
    pub flood_rate: u32,
}

/// The global deny list has IPv4 rules: without this bit the data path skips the global
/// IPv4 LPM lookup.
pub const CFG_F_GLOBAL_FILTER_V4: u32 = 1 << 0;
/// The global deny list has IPv6 rules.
pub const CFG_F_GLOBAL_FILTER_V6: u32 = 1 << 1;

/// Backend states as the data path sees them.
pub const BACKEND_UNUSED: u8 = 0;
/// Takes new flows (it is in the Maglev table) and keeps established ones.
pub const BACKEND_UP: u8 = 1;
/// Keeps established flows, takes no new ones (absent from the Maglev table).
pub const BACKEND_DRAIN: u8 = 2;
/// Down or in maintenance: its flows are re-picked.
pub const BACKEND_DOWN: u8 = 3;

/// A backend endpoint, indexed by backend id in an array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    /// `BACKEND_*`.
    pub state: u8,
}

/// Connection-tracking key: the client-side 5-tuple (destination is the VIP).
///
/// Laid out so that its last 20 bytes (`dst`, `dport`, `proto`, `family`) are a
/// [`VipKey`]: the data path keeps a packet's 5-tuple in this layout and looks up both
/// maps with keys taken in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    /// Network byte order.
    pub sport: u16,
    pub _pad: [u8; 2],
    pub dst: [u32; 4],
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
}

/// Connection-tracking key of an IPv4 flow (`LB_FLOWS_V4`): the same 5-tuple as
/// [`FlowKey`] in 16 bytes instead of 40, since the kernel hashes and compares the whole
/// key on every packet of an established flow. IPv6 flows keep [`FlowKey`] (`LB_FLOWS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyV4 {
    pub src: u32,
    pub dst: u32,
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKeyV4 {
    /// The IPv4 key of `k` (an IPv4 [`FlowKey`]: address word 0 only).
    pub const fn from_key(k: &FlowKey) -> Self {
        FlowKeyV4 {
            src: k.src[0],
            dst: k.dst[0],
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
            _pad: [0; 3],
        }
    }

    /// The family-neutral form of this key.
    pub const fn to_key(&self) -> FlowKey {
        FlowKey {
            src: [self.src, 0, 0, 0],
            dst: [self.dst, 0, 0, 0],
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }
}

/// Connection-tracking value, with the flow's cached next hop ([`NextHop`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub backend_id: u32,
    pub vip_id: u32,
    pub nh: NextHop,
}

/// A cached `bpf_fib_lookup` answer, so packets of an established flow (forward:
/// [`FlowValue::nh`]) or to a known client (reverse: `LB_REPLY_HOPS`) skip the lookup.
///
/// Valid only while `generation` equals the current next-hop generation (`LB_NH_GEN[0]`), which
/// userspace bumps on every route, rule, neighbour, address or link change netlink tells
/// it of; generation 0 means "no watcher is running", and disables the cache. It also
/// applies only to packets received on `ingress`, with the same TOS / flow info, and no
/// longer than `max_len` (the largest packet the route accepted: a bigger one is looked up
/// for its MTU check).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Next-hop generation the cache was filled in; 0 = empty.
    pub generation: u32,
    /// Ingress ifindex the cached lookup was made for.
    pub ingress: u32,
    /// Egress ifindex.
    pub ifindex: u32,
    /// Largest IP total length the route accepted (MTU check).
    pub max_len: u32,
    /// IPv4 TOS byte, or IPv6 flow info (network order), the lookup was made with.
    pub tos: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

/// One CPU's flood-mode window (`LB_FLOOD`, per CPU): new flows seen since `start_ns`
/// (`CLOCK_MONOTONIC_COARSE`), reset when a second has passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodWindow {
    pub start_ns: u64,
    pub new_flows: u64,
}

/// Reverse next-hop cache key (`LB_REPLY_HOPS`): a client, and the VIP its replies come
/// from (the source can matter to policy routing).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReplyHopKey {
    pub client: [u32; 4],
    pub vip_id: u32,
    /// `FAMILY_V4` / `FAMILY_V6`, widened so the key has no padding to zero.
    pub family: u32,
}

/// The next-hop cache lease (`LB_NH_GEN[0]`), written by userspace only. The data path
/// uses cached next hops only while `generation` is non-zero and the lease has not
/// expired, so a balancer whose netlink watcher stopped (lb exited, `--keep-dataplane`)
/// falls back to a FIB lookup per packet within a few seconds instead of trusting stale
/// next hops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHopLease {
    /// Bumped on every route, rule, neighbour, address or link change; 0 = cache off.
    pub generation: u32,
    pub _pad: u32,
    /// `CLOCK_MONOTONIC_COARSE` nanoseconds (the kernel's `ktime_get_coarse_ns`) after
    /// which the cache is off unless renewed.
    pub expires_ns: u64,
}

/// Reverse-NAT key: a backend endpoint as seen in its replies' source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReverseKey {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Reverse-NAT value: the VIP a backend's replies are rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseValue {
    pub vip_addr: [u32; 4],
    /// Network byte order.
    pub vip_port: u16,
    pub family: u8,
    /// `REVERSE_F_*` bits.
    pub flags: u8,
    pub vip_id: u32,
    pub backend_id: u32,
}

/// The backend endpoint serves several VIPs: its replies are matched against
/// `LB_REPLY_FLOWS` (recorded when a flow is created) before falling back to this entry's VIP.
pub const REVERSE_F_SHARED: u8 = 1 << 0;
/// In `LB_REPLY_FLOWS` only: the reply tuple belongs to a flow that went straight to the
/// backend through the balancer (not through a VIP); its replies are not translated.
pub const REVERSE_F_DIRECT: u8 = 1 << 1;

/// Key of the local-address set: addresses of the balancer host itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalAddrKey {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Source-filter LPM key data for IPv4: `scope` (0 = global, `vip_id + 1` = one frontend),
/// big-endian, then the address. The LPM prefix length is `32 + cidr_len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterKeyV4 {
    pub scope: [u8; 4],
    pub addr: [u8; 4],
}

/// Source-filter LPM key data for IPv6; see [`FilterKeyV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterKeyV6 {
    pub scope: [u8; 4],
    pub addr: [u8; 16],
}

/// Filter verdicts stored as LPM values.
pub const FILTER_DENY: u32 = 1;
pub const FILTER_ALLOW: u32 = 2;

/// Per-VIP and per-backend traffic counters (per-CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// Why a packet was passed, dropped or forwarded; index into the per-CPU reason counters.
///
/// `Pass*`, `Drop*`, `Forward*` and `IcmpTooBigSent` are verdicts: every packet `lb_xdp` sees
/// counts under exactly one of them. `ReverseNat` and `IcmpTranslated` count translations,
/// in addition to the translated packet's verdict.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    PassNotIp = 0,
    PassFragment = 1,
    PassIpOptions = 2,
    PassTruncated = 3,
    PassNotBalanced = 4,
    PassLocal = 5,
    PassNoNeighbour = 6,
    PassFibFailed = 7,
    PassUnsupportedIcmp = 8,
    DropDenied = 9,
    DropNoBackend = 10,
    DropTtlExceeded = 11,
    ForwardTx = 12,
    ForwardRedirect = 13,
    ReverseNat = 14,
    IcmpTranslated = 15,
    /// An ICMP "fragmentation needed" was sent back for a packet too big for the next hop.
    IcmpTooBigSent = 16,
    /// An 802.1Q/802.1ad-tagged frame: passed to the kernel, which delivers it to its VLAN
    /// interface (attach lb there to balance that VLAN).
    PassVlan = 17,
    /// An IPv4 header whose checksum is wrong (the kernel drops these too).
    DropBadIpChecksum = 18,
    /// A UDP length that disagrees with the IP packet's length.
    DropBadUdpLength = 19,
    /// A new flow forwarded without a flow-table entry because its CPU was in flood mode
    /// (`GlobalConfig::flood_rate` exceeded); counted in addition to the packet's verdict.
    FloodUntracked = 20,
}

impl Reason {
    /// Number of reasons; size of the reason counter array.
    pub const COUNT: u32 = 21;
    /// Every reason, in index order.
    pub const ALL: [Reason; Reason::COUNT as usize] = [
        Reason::PassNotIp,
        Reason::PassFragment,
        Reason::PassIpOptions,
        Reason::PassTruncated,
        Reason::PassNotBalanced,
        Reason::PassLocal,
        Reason::PassNoNeighbour,
        Reason::PassFibFailed,
        Reason::PassUnsupportedIcmp,
        Reason::DropDenied,
        Reason::DropNoBackend,
        Reason::DropTtlExceeded,
        Reason::ForwardTx,
        Reason::ForwardRedirect,
        Reason::ReverseNat,
        Reason::IcmpTranslated,
        Reason::IcmpTooBigSent,
        Reason::PassVlan,
        Reason::DropBadIpChecksum,
        Reason::DropBadUdpLength,
        Reason::FloodUntracked,
    ];

    /// Stable snake_case name used in metrics and `lb stats`.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassFragment => "pass_fragment",
            Reason::PassIpOptions => "pass_ip_options",
            Reason::PassTruncated => "pass_truncated",
            Reason::PassNotBalanced => "pass_not_balanced",
            Reason::PassLocal => "pass_local",
            Reason::PassNoNeighbour => "pass_no_neighbour",
            Reason::PassFibFailed => "pass_fib_failed",
            Reason::PassUnsupportedIcmp => "pass_unsupported_icmp",
            Reason::DropDenied => "drop_denied",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropTtlExceeded => "drop_ttl_exceeded",
            Reason::ForwardTx => "forward_tx",
            Reason::ForwardRedirect => "forward_redirect",
            Reason::ReverseNat => "reverse_nat",
            Reason::IcmpTranslated => "icmp_translated",
            Reason::IcmpTooBigSent => "icmp_too_big_sent",
            Reason::PassVlan => "pass_vlan",
            Reason::DropBadIpChecksum => "drop_bad_ip_checksum",
            Reason::DropBadUdpLength => "drop_bad_udp_length",
            Reason::FloodUntracked => "flood_untracked",
        }
    }
}

/// The frame the benchmark generator (`lb_bench_gen_*`, live-frame `BPF_PROG_RUN`) writes
/// over every packet before it runs: an IPv4/UDP frame's first 48 bytes, and the source
/// port range it cycles through. Bench-only; the balancer never reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchFrame {
    /// Ethernet + IPv4 (no options) + UDP headers and the first payload bytes.
    pub head: [u64; 6],
    /// First source port, host order.
    pub sport_base: u16,
    /// Number of source ports cycled through (flows); 0 keeps the template's port.
    pub flows: u16,
    /// Packets generated so far (the next packet uses `sport_base + sent % flows`).
    pub sent: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type is `#[repr(C)]`, `Copy`, has no implicit padding (explicit `_pad`
    // fields fill the gaps) and is valid for any bit pattern.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipInfo {}
    unsafe impl aya::Pod for VipSlot {}
    unsafe impl aya::Pod for GlobalConfig {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowKeyV4 {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for ReplyHopKey {}
    unsafe impl aya::Pod for ReverseKey {}
    unsafe impl aya::Pod for ReverseValue {}
    unsafe impl aya::Pod for LocalAddrKey {}
    unsafe impl aya::Pod for FilterKeyV4 {}
    unsafe impl aya::Pod for FilterKeyV6 {}
    unsafe impl aya::Pod for TrafficCounters {}
    unsafe impl aya::Pod for NextHopLease {}
    unsafe impl aya::Pod for FloodWindow {}
    unsafe impl aya::Pod for BenchFrame {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_flow_key_round_trips() {
        let k = FlowKey {
            src: [0x0200_000a, 0, 0, 0],
            sport: 0x4e20,
            _pad: [0; 2],
            dst: [0x0a71_00cb, 0, 0, 0],
            dport: 0x5000,
            proto: PROTO_TCP,
            family: FAMILY_V4,
        };
        let v4 = FlowKeyV4::from_key(&k);
        assert_eq!(core::mem::size_of::<FlowKeyV4>(), 16);
        assert_eq!(v4.to_key(), k);
    }
}
