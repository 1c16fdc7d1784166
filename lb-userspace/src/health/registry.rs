//! Building the registry's contents from a configuration, at start and on reload, so that
//! servers which survive a reload keep their live state.
//!
//! A server survives when its backend, name, address, `backup` and `check` flags are
//! unchanged: its `ServerState` (status, counters, last check) is carried over as is. Its
//! weight is reset to the configured one, as a HAProxy reload does. Backend and frontend
//! counters are carried over by name. Call [`sync_registry`] first, then
//! `HealthHandle::apply`, which re-publishes every server's status (new servers start UP,
//! `disabled` ones in MAINT).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::config::model::Config;
use crate::state::{BackendState, Counters, Registry, ServerState};

use super::{Target, targets};

/// Rebuilds `registry` for `config` (see the module docs).
pub fn sync_registry(registry: &Registry, config: &Config) {
    plan_registry(registry, config).publish(registry);
}

/// What [`sync_registry`] would make of `registry` for `config`, computed without changing
/// it: a caller that builds on the new states and may still fail publishes only on success.
pub fn plan_registry(registry: &Registry, config: &Config) -> RegistryPlan {
    let backends: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    let frontends: Vec<&str> = config.frontends.iter().map(|f| f.name.as_str()).collect();
    plan_targets(registry, &backends, &targets(config), &frontends)
}

/// A registry's next contents (see [`plan_registry`]).
#[derive(Debug)]
pub struct RegistryPlan {
    backends: HashMap<String, Arc<BackendState>>,
    frontends: HashMap<String, Arc<Counters>>,
    /// (backend, server, configured weight), set once the sets are installed.
    weights: Vec<(String, String, u32)>,
}

impl RegistryPlan {
    pub fn backend(&self, name: &str) -> Option<Arc<BackendState>> {
        self.backends.get(name).cloned()
    }

    pub fn frontend(&self, name: &str) -> Option<Arc<Counters>> {
        self.frontends.get(name).cloned()
    }

    /// Installs the plan in `registry` and resets the weights to the configured ones.
    pub fn publish(self, registry: &Registry) {
        registry.replace(self.backends, self.frontends);
        for (backend, server, weight) in self.weights {
            if let Err(e) = registry.set_weight(&backend, &server, weight) {
                tracing::warn!("server {backend}/{server}: {e}");
            }
        }
    }
}

/// Cumulative counters of `from` in a fresh `Counters`.
fn copy_counters(from: &Counters) -> Counters {
    let to = Counters::default();
    let copy = |a: &std::sync::atomic::AtomicU64, b: &std::sync::atomic::AtomicU64| {
        b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
    };
    // Not `active_conns`: connections in flight decrement the object they incremented.
    copy(&from.total_conns, &to.total_conns);
    copy(&from.requests, &to.requests);
    copy(&from.bytes_in, &to.bytes_in);
    copy(&from.bytes_out, &to.bytes_out);
    copy(&from.errors, &to.errors);
    for (a, b) in from.responses.iter().zip(&to.responses) {
        copy(a, b);
    }
    to
}

/// [`sync_registry`] on explicit lists: every backend name (servers or not), every server,
/// every frontend name.
pub fn sync_registry_targets(
    registry: &Registry,
    backends: &[&str],
    servers: &[Target],
    frontends: &[&str],
) {
    plan_targets(registry, backends, servers, frontends).publish(registry);
}

fn plan_targets(
    registry: &Registry,
    backends: &[&str],
    servers: &[Target],
    frontends: &[&str],
) -> RegistryPlan {
    let old_backends = registry.backends();
    let old_frontends = registry.frontends();

    let mut new_backends = HashMap::with_capacity(backends.len());
    for &name in backends {
        let old = old_backends.get(name);
        let servers: Vec<Arc<ServerState>> = servers
            .iter()
            .filter(|t| t.backend == name)
            .map(|t| {
                old.and_then(|b| b.server(&t.server))
                    .filter(|s| s.addr == t.addr && s.backup == t.backup && s.checked == t.check)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(ServerState::new(
                            &t.server, t.addr, t.weight, t.backup, t.check,
                        ))
                    })
            })
            .collect();
        // Unchanged backend: keep the very same object (counters stay exact).
        let same = old.filter(|b| {
            b.servers.len() == servers.len()
                && b.servers
                    .iter()
                    .zip(&servers)
                    .all(|(x, y)| Arc::ptr_eq(x, y))
        });
        let backend = match same {
            Some(b) => b.clone(),
            None => Arc::new(BackendState {
                name: name.to_owned(),
                servers,
                counters: old.map(|b| copy_counters(&b.counters)).unwrap_or_default(),
            }),
        };
        new_backends.insert(name.to_owned(), backend);
    }
    let new_frontends = frontends
        .iter()
        .map(|&name| {
            let c = old_frontends.get(name).cloned().unwrap_or_default();
            (name.to_owned(), c)
        })
        .collect();
    RegistryPlan {
        backends: new_backends,
        frontends: new_frontends,
        weights: servers
            .iter()
            .map(|t| (t.backend.clone(), t.server.clone(), t.weight))
            .collect(),
    }
}
