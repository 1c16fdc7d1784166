//! Definitions shared by the XDP program (`lb-ebpf`) and userspace (`lb`).
//!
//! Every BPF map key and value is defined here once, `#[repr(C)]` and padded explicitly so
//! the kernel, the eBPF object and userspace agree byte for byte. With the `user` feature the
//! types also implement [`aya::Pod`] so userspace can read and write the maps. The Maglev table
//! builder lives here too: it is pure and `no_std`, so the exact code the control plane runs is
//! what the host tests exercise.
#![no_std]

#[cfg(feature = "user")]
extern crate alloc;

pub mod hash;
pub mod maglev;
pub mod maps;
pub mod types;
