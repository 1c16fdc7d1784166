//! Host-side stub so `lb-ebpf` can be a build-dependency of `lb-userspace`; the XDP
//! program itself is the `lb-ebpf` binary target (`src/main.rs`).
#![no_std]
