//! The XDP object built by `build.rs`, embedded in the binary.

/// The compiled `lb-ebpf` ELF object, 8-byte aligned as aya requires.
pub static LB_EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
