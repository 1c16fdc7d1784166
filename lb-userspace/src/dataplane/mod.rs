//! The XDP tier's userspace side, and the only code that touches BPF maps: loading the
//! embedded object, pinning its maps, attaching to interfaces ([`loader`]), typed map reads
//! and writes ([`maps::Dataplane`]), turning a configuration into map contents
//! ([`apply`]), following live state changes ([`sync`]), keeping the data path's next-hop
//! cache honest ([`nexthop`]) and reporting counters to the admin API ([`stats`]).
//!
//! Kernel requirements: BPF with BTF, XDP (native driver support, else generic/SKB mode),
//! LPM tries, LRU hashes, `DEVMAP_HASH` (Linux 5.4+), `bpf_fib_lookup`, bpffs mounted at
//! `/sys/fs/bpf`, and CAP_BPF + CAP_NET_ADMIN (or root). Maglev tables are written with
//! `BPF_MAP_UPDATE_BATCH` (Linux 5.6+; per-entry updates otherwise). IP forwarding must be
//! enabled for `bpf_fib_lookup` to return a next hop.

pub mod apply;
pub mod loader;
pub mod maps;
pub mod nexthop;
pub mod stats;
pub mod sync;

pub use apply::{
    ApplyError, ApplySummary, Running, apply, ifindex, local_addresses, register_tx_ports, start,
    stop, sync_local_addrs,
};
pub use loader::{
    Attachment, DataplaneError, LoadOptions, PinnedAttachment, attach, attach_pinned,
    detach_pinned, load,
};
pub use maps::{Dataplane, FilterRule, MapsError};
pub use sync::{SyncError, apply_now, follow};
