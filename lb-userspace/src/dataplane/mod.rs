//! The XDP tier's userspace side, and the only code that touches BPF maps: loading the
//! embedded object, pinning its maps, attaching to interfaces, and map reads and writes.
//!
//! Kernel requirements: BPF with BTF, XDP (native driver support, else generic/SKB mode),
//! bpffs mounted at `/sys/fs/bpf`, and CAP_BPF + CAP_NET_ADMIN (or root).

pub mod loader;

pub use loader::{Attachment, DataplaneError, LoadOptions, load, attach};
