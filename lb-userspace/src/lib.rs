//! lb: an edge load balancer. This library is the `lb` binary's body; `main.rs` is only the
//! command-line edge.
//!
//! Layers, each importing only from the ones above it:
//! - leaves: [`acl`] (HAProxy's expression language: ACLs, fetches, converters,
//!   log-format), [`syslog`] (log targets), [`proxy_protocol`], [`tls_client`],
//!   [`tls_keys`], [`tls_policy`], [`cpus`];
//! - [`config`]: schema, validation, HAProxy import; [`logging`];
//! - shared state: [`state`], [`health::registry`], [`stick`] (stick tables);
//! - control plane: [`runtime`], [`health`], [`discovery`] (DNS), [`admin`], [`announce`],
//!   [`dataplane`] (the only code that touches BPF maps); data paths: the XDP program (crate
//!   `lb-ebpf`) and [`l7`].

pub mod acl;
pub mod admin;
pub mod announce;
pub mod config;
pub mod cpus;
pub mod dataplane;
pub mod discovery;
pub mod ebpf_object;
pub mod health;
pub mod l7;
pub mod logging;
pub mod process;
pub mod proxy_protocol;
pub mod runtime;
pub mod state;
pub mod stick;
pub mod syslog;
pub mod tls_client;
pub mod tls_keys;
pub mod tls_policy;
