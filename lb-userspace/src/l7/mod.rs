//! The userspace tier: listeners, TLS termination, ACLs, routing, balancing, sticky
//! cookies, upstream pools, and userspace `mode tcp`.

pub mod acl;
pub mod sni;
