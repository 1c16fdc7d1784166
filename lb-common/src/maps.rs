//! Map names, limits and flag bits: the contract between the XDP program and the loader.

/// Directory under bpffs where lb pins its maps; one sub-directory per instance name.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/lb";

/// True when bpffs accepts `name` as a file or directory name. The kernel reserves names
/// containing a dot (`bpf_lookup` in `kernel/bpf/inode.c` answers `EPERM`), so a pin
/// directory such as `/sys/fs/bpf/lb/lb.prod` cannot be created.
pub fn bpffs_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains('.') && !name.contains('/')
}

/// True for the characters lb keeps when it names a default pin directory after a config
/// file's stem; every other character (a dot above all) becomes `_` (`lb.prod` → `lb_prod`).
pub const fn pin_name_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Most VIPs (address, port, protocol) one instance serves.
pub const MAX_VIPS: u32 = 64;
/// Most backends (distinct server endpoints) across all VIPs.
pub const MAX_BACKENDS: u32 = 4096;
/// Entries of the reverse next-hop cache (clients × VIPs; an evicted entry costs one FIB
/// lookup).
pub const MAX_REPLY_HOPS: u32 = 65536;
/// Default Maglev table size: a prime, so every skip value generates a full permutation.
pub const DEFAULT_MAGLEV_SIZE: u32 = 65537;
/// Default number of tracked flows (LRU).
pub const DEFAULT_CONNTRACK_SIZE: u32 = 262_144;
/// Entries in each source-filter LPM trie.
pub const MAX_FILTER_RULES: u32 = 16_384;
/// Local addresses of the balancer host that are never translated.
pub const MAX_LOCAL_ADDRS: u32 = 256;
/// Words of the VIP port bitmap (`names::VIP_PORTS`).
pub const VIP_PORT_WORDS: u32 = 65_536 / 32;
/// Interfaces the program may redirect to.
pub const MAX_TX_PORTS: u32 = 64;

/// Map names, as they appear in the object file and under the pin directory.
pub mod names {
    pub const CONFIG: &str = "LB_CONFIG";
    pub const VIPS: &str = "LB_VIPS";
    /// VIP id → (VIP key, settings), a copy of `VIPS` read by established flows.
    pub const VIP_SLOTS: &str = "LB_VIP_SLOTS";
    /// Bitmap of the ports (host order) some VIP uses: bit `port % 32` of word `port / 32`.
    /// Only a hint for the data path (a clear bit means "look the VIP up first").
    pub const VIP_PORTS: &str = "LB_VIP_PORTS";
    pub const MAGLEV: &str = "LB_MAGLEV";
    pub const BACKENDS: &str = "LB_BACKENDS";
    /// IPv6 flows (`FlowKey`); IPv4 flows are in `FLOWS_V4` (`FlowKeyV4`). Both LRU,
    /// each sized to the conntrack size.
    pub const FLOWS: &str = "LB_FLOWS";
    pub const FLOWS_V4: &str = "LB_FLOWS_V4";
    pub const REVERSE: &str = "LB_REVERSE";
    /// Reply 5-tuple (backend → client) → VIP, for backends shared by several VIPs (LRU,
    /// sized like `FLOWS`).
    pub const REPLY_FLOWS: &str = "LB_REPLY_FLOWS";
    /// Reverse next-hop cache: (client, VIP) → `NextHop` (LRU, `MAX_REPLY_HOPS`).
    pub const REPLY_HOPS: &str = "LB_REPLY_HOPS";
    pub const LOCAL_ADDRS: &str = "LB_LOCAL_ADDRS";
    pub const FILTER_V4: &str = "LB_FILTER_V4";
    pub const FILTER_V6: &str = "LB_FILTER_V6";
    pub const TX_PORTS: &str = "LB_TX_PORTS";
    pub const REASON_STATS: &str = "LB_REASON_STATS";
    pub const VIP_STATS: &str = "LB_VIP_STATS";
    pub const BACKEND_STATS: &str = "LB_BACKEND_STATS";
    /// Per-CPU u64 per VIP id: TCP packets without SYN that found no flow entry (evicted
    /// flows, or flows balanced by another node), re-picked through Maglev.
    pub const VIP_MISSES: &str = "LB_VIP_MISSES";
    /// Next-hop generation (single u32): bumped by userspace on route/neighbour/link
    /// changes; flows cache their next hop per generation (0 disables the cache).
    pub const NH_GEN: &str = "LB_NH_GEN";
    /// Backend id → `NextHop`: the FIB's answer for new flows to that backend, under the
    /// flows' cache rules (generation, ingress, TOS, length), copied into each new flow.
    pub const BACKEND_HOPS: &str = "LB_BACKEND_HOPS";
    /// Per-CPU `FloodWindow` (one entry): new flows in the current second (flood mode).
    pub const FLOOD: &str = "LB_FLOOD";
    /// Bench-only, not pinned: the generator's frame template ([`crate::types::BenchFrame`]).
    pub const BENCH_FRAME: &str = "LB_BENCH_FRAME";
    /// Bench-only, not pinned: per-CPU count of packets the sink dropped.
    pub const BENCH_SINK: &str = "LB_BENCH_SINK";
}

/// Program names in the object file.
pub mod programs {
    /// The balancer.
    pub const LB: &str = "lb_xdp";
    /// Passes every packet; prepares veth peers for redirected frames.
    pub const PASS: &str = "lb_xdp_pass";
    /// Minimal parse-and-`XDP_TX` program, the baseline for per-packet cost benchmarks.
    pub const BASELINE_TX: &str = "lb_xdp_baseline_tx";
    /// Bench-only live-frame generator: writes the `LB_BENCH_FRAME` template over the
    /// packet, then runs the balancer on it.
    pub const BENCH_GEN_LB: &str = "lb_bench_gen_lb";
    /// Bench-only live-frame generator: writes the template, then `XDP_PASS` (the kernel
    /// stack handles the packet: forwarding, nftables).
    pub const BENCH_GEN_PASS: &str = "lb_bench_gen_pass";
    /// Bench-only counting sink: UDP is counted (`LB_BENCH_SINK`) and dropped.
    pub const BENCH_SINK: &str = "lb_bench_sink";
    /// Benchmark reference only: parse, `LB_VIPS` and `LB_FLOWS` lookups, `XDP_TX`; the
    /// floor of the established-flow path with a VIP hash and an LRU flow table.
    pub const FLOOR_TX: &str = "lb_xdp_floor_tx";
}
