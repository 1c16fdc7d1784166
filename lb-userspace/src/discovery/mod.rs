//! DNS service discovery (HAProxy's `resolvers`): servers with `resolvers NAME` (and the
//! servers of a `server-template`) follow their name's A/AAAA records at run time.
//!
//! One task per resolution group (the servers of one backend that share a name, port,
//! section and preferred family) resolves the name every `timeout resolve`
//! ([`dns::resolve`]). Each server keeps its address while the answer still holds it; the
//! others take the answer's addresses no server of the group uses (HAProxy's default of no
//! duplicate address in a backend); a server left without one goes to MAINT. A failed
//! resolution changes nothing while the last valid answer is younger than `hold valid`
//! (the address the server started with counts as one); after that, the group's servers
//! go to MAINT until an answer comes.
//!
//! Discovery never writes to the data paths: [`Discovery::overlay`] gives the loaded
//! configuration with the discovered addresses, and `runtime` installs it through the same
//! steps as a reload (registry, health checks, the L7 runtime swap, the XDP map sync).

pub mod dns;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::model::{AddrFamily, Config, Resolvers, ServerResolve};

/// Why a resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("DNS socket: {0}")]
    Io(#[source] std::io::Error),
    #[error("`{name}` is not a valid DNS name: {why}")]
    Name { name: String, why: String },
    #[error("encoding the DNS query: {0}")]
    Encode(String),
    #[error("malformed DNS response from {0}")]
    Malformed(SocketAddr),
    #[error("DNS NX status")]
    NxDomain,
    #[error("DNS refused status")]
    Refused,
    #[error("DNS timeout status")]
    Timeout,
    #[error("DNS error status {0}")]
    Rcode(String),
    #[error("DNS no expected record")]
    NoAddress,
}

/// The servers of one backend that resolve one name the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    backend: String,
    resolvers: String,
    fqdn: String,
    port: u16,
    prefer: AddrFamily,
}

impl GroupKey {
    fn of(backend: &str, r: &ServerResolve) -> Self {
        Self {
            backend: backend.to_owned(),
            resolvers: r.resolvers.clone(),
            fqdn: r.fqdn.to_ascii_lowercase(),
            port: r.port,
            prefer: r.prefer,
        }
    }
}

#[derive(Debug, Clone)]
struct Group {
    /// Server names, in config order.
    servers: Vec<String>,
    /// Each server's address (`None`: in MAINT, waiting for DNS).
    addrs: Vec<Option<SocketAddr>>,
    /// When the last valid answer came (or discovery started).
    last_valid: Instant,
    /// When each address was last in an answer (for `hold obsolete`).
    seen: HashMap<IpAddr, Instant>,
    /// Whether this group's addresses were set by DNS (else they are the loaded ones).
    resolved: bool,
}

type Groups = HashMap<GroupKey, Group>;

/// The running discovery of one configuration.
#[derive(Debug)]
pub struct Discovery {
    groups: Arc<Mutex<Groups>>,
    tasks: Vec<JoinHandle<()>>,
    /// Subscribed before the tasks start: its clones see every change since.
    changes: watch::Receiver<u64>,
}

fn lock(g: &Mutex<Groups>) -> MutexGuard<'_, Groups> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

fn groups_of(config: &Config) -> Groups {
    let now = Instant::now();
    let mut out: Groups = HashMap::new();
    for b in &config.backends {
        for s in &b.servers {
            let Some(r) = &s.resolve else {
                continue;
            };
            let key = GroupKey::of(&b.name, r);
            let g = out.entry(key).or_insert_with(|| Group {
                servers: Vec::new(),
                addrs: Vec::new(),
                last_valid: now,
                seen: HashMap::new(),
                resolved: false,
            });
            g.servers.push(s.name.clone());
            g.addrs.push((!s.unresolved).then_some(s.addr));
        }
    }
    out
}

impl Discovery {
    /// Starts resolving every discovered server of `config` (none: no task). With
    /// `previous` (a reload), a group that is still there keeps what DNS gave it
    /// (`init-addr last`), server by server.
    pub fn start(config: &Config, previous: Option<&Discovery>) -> Self {
        let mut groups = groups_of(config);
        if let Some(prev) = previous {
            let old = lock(&prev.groups);
            for (k, g) in &mut groups {
                let Some(o) = old.get(k).filter(|o| o.resolved) else {
                    continue;
                };
                for (name, addr) in g.servers.iter().zip(g.addrs.iter_mut()) {
                    if let Some(i) = o.servers.iter().position(|n| n == name) {
                        *addr = o.addrs[i];
                    }
                }
                g.last_valid = o.last_valid;
                g.seen = o.seen.clone();
                g.resolved = true;
            }
        }
        let keys: Vec<GroupKey> = groups.keys().cloned().collect();
        let groups = Arc::new(Mutex::new(groups));
        let (tx, changes) = watch::channel(0u64);
        let mut tasks = Vec::new();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for key in keys {
                let Some(r) = config.resolvers(&key.resolvers).cloned() else {
                    continue;
                };
                tasks.push(rt.spawn(run_group(key, r, groups.clone(), tx.clone())));
            }
        }
        Self {
            groups,
            tasks,
            changes,
        }
    }

    /// Changes whenever a server's discovered address changes; a change that came before
    /// the call (since [`Discovery::start`]) is seen too.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Whether any server of the configuration is discovered.
    pub fn is_active(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// `base` with every discovered server at its current address (or without one).
    pub fn overlay(&self, base: &Config) -> Config {
        let mut cfg = base.clone();
        let groups = lock(&self.groups);
        for b in &mut cfg.backends {
            for s in &mut b.servers {
                let Some(r) = &s.resolve else {
                    continue;
                };
                let key = GroupKey::of(&b.name, r);
                let Some(g) = groups.get(&key).filter(|g| g.resolved) else {
                    continue;
                };
                let Some(i) = g.servers.iter().position(|n| *n == s.name) else {
                    continue;
                };
                match g.addrs[i] {
                    Some(a) => {
                        s.addr = a;
                        s.unresolved = false;
                    }
                    None => {
                        s.addr = SocketAddr::new(s.addr.ip(), r.port);
                        s.unresolved = true;
                    }
                }
            }
        }
        cfg
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn run_group(
    key: GroupKey,
    r: Resolvers,
    groups: Arc<Mutex<Groups>>,
    changes: watch::Sender<u64>,
) {
    loop {
        let outcome = dns::resolve(&r, &key.fqdn, key.prefer).await;
        let changed = {
            let mut all = lock(&groups);
            match all.get_mut(&key) {
                Some(g) => update(&key, g, &r, outcome, Instant::now()),
                None => return,
            }
        };
        if changed {
            changes.send_modify(|v| *v = v.wrapping_add(1));
        }
        dns::pause(r.timeout_resolve).await;
    }
}

/// Applies one resolution outcome to a group; whether any address changed.
fn update(
    key: &GroupKey,
    g: &mut Group,
    r: &Resolvers,
    outcome: Result<Vec<IpAddr>, DiscoveryError>,
    now: Instant,
) -> bool {
    let before = g.addrs.clone();
    let was_resolved = g.resolved;
    match outcome {
        Ok(ips) => {
            g.last_valid = now;
            g.resolved = true;
            for ip in &ips {
                g.seen.insert(*ip, now);
            }
            let hold = r.hold.obsolete;
            g.seen
                .retain(|ip, t| ips.contains(ip) || now.duration_since(*t) < hold);
            // Kept: a server's address still answered (or within `hold obsolete`).
            let mut used: Vec<IpAddr> = Vec::new();
            for a in g.addrs.iter_mut() {
                match a {
                    Some(sa) if g.seen.contains_key(&sa.ip()) && !used.contains(&sa.ip()) => {
                        used.push(sa.ip());
                    }
                    _ => *a = None,
                }
            }
            let mut free = ips.iter().filter(|ip| !used.contains(ip));
            for a in g.addrs.iter_mut().filter(|a| a.is_none()) {
                *a = free.next().map(|ip| SocketAddr::new(*ip, key.port));
            }
            for (name, (old, new)) in g.servers.iter().zip(before.iter().zip(&g.addrs)) {
                match (old, new) {
                    (Some(o), Some(n)) if o != n => tracing::warn!(
                        "{}/{name} changed its IP from {} to {} by DNS discovery",
                        key.backend,
                        o.ip(),
                        n.ip()
                    ),
                    (None, Some(n)) => {
                        tracing::warn!("{}/{name} got IP {} by DNS discovery", key.backend, n.ip())
                    }
                    (Some(_), None) => tracing::warn!(
                        "Server {}/{name} is going DOWN for maintenance (No IP for server)",
                        key.backend
                    ),
                    _ => {}
                }
            }
        }
        Err(e) => {
            tracing::debug!("resolving {} for backend {}: {e}", key.fqdn, key.backend);
            if now.duration_since(g.last_valid) < r.hold.valid {
                return false;
            }
            g.resolved = true;
            for (name, a) in g.servers.iter().zip(g.addrs.iter_mut()) {
                if a.take().is_some() {
                    tracing::warn!(
                        "Server {}/{name} is going DOWN for maintenance ({e})",
                        key.backend
                    );
                }
            }
        }
    }
    g.addrs != before || (g.resolved && !was_resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn group(addrs: &[Option<&str>]) -> (GroupKey, Group) {
        let key = GroupKey {
            backend: "b".into(),
            resolvers: "dns".into(),
            fqdn: "app.test".into(),
            port: 80,
            prefer: AddrFamily::V4,
        };
        let g = Group {
            servers: (1..=addrs.len()).map(|i| format!("s{i}")).collect(),
            addrs: addrs
                .iter()
                .map(|a| a.map(|a| SocketAddr::new(a.parse().expect("ip"), 80)))
                .collect(),
            last_valid: Instant::now(),
            seen: HashMap::new(),
            resolved: false,
        };
        (key, g)
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|a| a.parse().expect("ip")).collect()
    }

    fn shown(g: &Group) -> Vec<Option<String>> {
        g.addrs
            .iter()
            .map(|a| a.map(|a| a.ip().to_string()))
            .collect()
    }

    #[test]
    fn servers_keep_answered_addresses_and_share_the_rest() {
        let r = Resolvers::new("dns");
        let (k, mut g) = group(&[Some("10.0.0.2"), None, None]);
        let now = Instant::now();
        assert!(update(
            &k,
            &mut g,
            &r,
            Ok(ips(&["10.0.0.1", "10.0.0.2"])),
            now
        ));
        assert_eq!(
            shown(&g),
            [Some("10.0.0.2".into()), Some("10.0.0.1".into()), None]
        );
        // 10.0.0.1 leaves the answer, 10.0.0.3 and .4 come: s1 keeps .2.
        let r2 = ips(&["10.0.0.3", "10.0.0.2", "10.0.0.4"]);
        assert!(update(&k, &mut g, &r, Ok(r2), now));
        assert_eq!(
            shown(&g),
            [
                Some("10.0.0.2".into()),
                Some("10.0.0.3".into()),
                Some("10.0.0.4".into())
            ]
        );
        assert!(!update(
            &k,
            &mut g,
            &r,
            Ok(ips(&["10.0.0.4", "10.0.0.3", "10.0.0.2"])),
            now
        ));
    }

    #[test]
    fn a_failure_keeps_addresses_for_hold_valid_then_maint() {
        let mut r = Resolvers::new("dns");
        r.hold.valid = Duration::from_secs(10);
        let (k, mut g) = group(&[Some("10.0.0.1")]);
        let t0 = Instant::now();
        assert!(update(&k, &mut g, &r, Ok(ips(&["10.0.0.1"])), t0));
        let t5 = t0 + Duration::from_secs(5);
        assert!(!update(&k, &mut g, &r, Err(DiscoveryError::Timeout), t5));
        assert_eq!(shown(&g), [Some("10.0.0.1".into())]);
        let t11 = t0 + Duration::from_secs(11);
        assert!(update(&k, &mut g, &r, Err(DiscoveryError::NxDomain), t11));
        assert_eq!(shown(&g), [None]);
        assert!(update(&k, &mut g, &r, Ok(ips(&["10.0.0.9"])), t11));
        assert_eq!(shown(&g), [Some("10.0.0.9".into())]);
    }
}
