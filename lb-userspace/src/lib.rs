//! lb: an edge load balancer. This library is the `lb` binary's body; `main.rs` is only the
//! command-line edge.
//!
//! Control plane: [`config`], [`health`], [`admin`], [`dataplane`] (the only code that
//! touches BPF maps). Data paths: the XDP program (crate `lb-ebpf`) and [`l7`].

pub mod admin;
pub mod config;
pub mod dataplane;
pub mod ebpf_object;
pub mod health;
pub mod l7;
pub mod logging;
pub mod runtime;
pub mod state;
pub mod tls_client;
