//! lb: an edge load balancer. This library is the `lb` binary's body; `main.rs` is only the
//! command-line edge.

pub mod ebpf_object;
