//! VIP announcement (`[announce]`): lb keeps every VIP it serves, while at least one of its
//! frontend's backends has a server UP, as a /32 or /128 on a dummy interface it owns (the
//! anycast-healthchecker / GLB pattern). A BGP daemon on the node (BIRD 2's `direct`
//! protocol on that interface, or FRR's `redistribute connected`) exports those addresses
//! to the routers; lb never speaks BGP itself.
//!
//! The interface is created at start with every address a previous (crashed) lb left on
//! it removed; it follows the registry's change notifications (the ones `dataplane::sync`
//! follows) and the live config, and is deleted when lb stops, so every VIP is withdrawn.
//! The interface and addresses are managed with iproute2's `ip`; its errors are reported
//! with the command line and `ip`'s own message.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::model::{AnnounceKind, Config, announceable};
use crate::state::Registry;

/// Errors managing the announce interface.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("running `{cmd}` (is iproute2 installed?): {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Ip { cmd: String, stderr: String },
    #[error("`{cmd}` printed what lb cannot read: {msg}")]
    Output { cmd: String, msg: String },
    #[error(
        "interface `{iface}` exists and is not a {want} interface (it is {kind}): [announce] needs an interface of its own, which lb creates"
    )]
    WrongKind {
        iface: String,
        want: &'static str,
        kind: String,
    },
    #[error("the announce task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The VIPs that should be on the interface now: the specific bind addresses of every
/// announced frontend that has no backend at all (it answers by itself) or a backend with
/// a usable server (HAProxy's `nbsrv > 0`). A `use_backend` whose name is dynamic counts
/// every backend.
pub fn wanted(config: &Config, registry: &Registry) -> BTreeSet<IpAddr> {
    let Some(a) = &config.announce else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for fe in &config.frontends {
        if let Some(names) = &a.frontends
            && !names.contains(&fe.name)
        {
            continue;
        }
        let mut backends: BTreeSet<&str> = fe.default_backend.iter().map(String::as_str).collect();
        for u in &fe.use_backend {
            match u.backend.compiled().ok().and_then(|f| f.as_literal()) {
                Some(name) => {
                    backends.insert(name);
                }
                // A dynamic name (`%[…]`) may pick any backend.
                None => backends.extend(config.backends.iter().map(|b| b.name.as_str())),
            }
        }
        let up = backends.is_empty()
            || backends
                .iter()
                .any(|b| registry.backend(b).is_some_and(|b| b.nbsrv() > 0));
        if up {
            out.extend(
                fe.binds
                    .iter()
                    .map(|b| b.addr.ip())
                    .filter(|ip| announceable(*ip)),
            );
        }
    }
    out
}

fn ip(args: &[&str]) -> Result<String, AnnounceError> {
    let cmd = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| AnnounceError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(AnnounceError::Ip {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(args: &[&str]) -> Result<serde_json::Value, AnnounceError> {
    let text = ip(args)?;
    serde_json::from_str(&text).map_err(|e| AnnounceError::Output {
        cmd: format!("ip {}", args.join(" ")),
        msg: e.to_string(),
    })
}

/// The interface's kind (`dummy`, `veth`…; empty for a plain device), or `None` when it
/// does not exist.
fn link_kind(iface: &str) -> Result<Option<String>, AnnounceError> {
    // Asked of `ip`, not /sys/class/net: /sys shows the namespace it was mounted in, which
    // need not be lb's network namespace.
    let v = match json(&["-j", "-d", "link", "show", "dev", iface]) {
        Ok(v) => v,
        Err(AnnounceError::Ip { stderr, .. }) if stderr.contains("does not exist") => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(Some(
        v.get(0)
            .and_then(|l| l.get("linkinfo"))
            .and_then(|l| l.get("info_kind"))
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_owned(),
    ))
}

/// The addresses on `iface` other than link-local ones.
pub fn addresses(iface: &str) -> Result<BTreeSet<IpAddr>, AnnounceError> {
    let v = json(&["-j", "addr", "show", "dev", iface])?;
    let mut out = BTreeSet::new();
    let infos = v
        .get(0)
        .and_then(|l| l.get("addr_info"))
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    for info in infos {
        if let Some(ip) = info
            .get("local")
            .and_then(|l| l.as_str())
            .and_then(|l| l.parse::<IpAddr>().ok())
            && announceable(ip)
        {
            out.insert(ip);
        }
    }
    Ok(out)
}

fn prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// Creates `iface` as a `kind` interface (or takes over the one a previous lb left),
/// removes every address on it and sets it up. Another kind of interface of that name is
/// an error: lb deletes this interface when it stops.
pub fn prepare(iface: &str, kind: AnnounceKind) -> Result<(), AnnounceError> {
    match link_kind(iface)? {
        None => {
            ip(&["link", "add", iface, "type", kind.as_str()])?;
        }
        Some(k) if k == kind.as_str() => {
            let stale = addresses(iface)?;
            if !stale.is_empty() {
                tracing::warn!(
                    "announce: removing {} stale address(es) from {iface} (left by a previous lb)",
                    stale.len()
                );
            }
            for a in stale {
                ip(&["addr", "del", &prefix(a), "dev", iface])?;
            }
        }
        Some(k) => {
            return Err(AnnounceError::WrongKind {
                iface: iface.to_owned(),
                want: kind.as_str(),
                kind: if k.is_empty() {
                    "a physical or loopback device".to_owned()
                } else {
                    format!("`{k}`")
                },
            });
        }
    }
    ip(&["link", "set", iface, "up"])?;
    Ok(())
}

/// Deletes `iface` (every VIP on it is withdrawn) when it is of `kind`; a missing
/// interface is not an error.
pub fn remove(iface: &str, kind: AnnounceKind) -> Result<(), AnnounceError> {
    if link_kind(iface)?.as_deref() == Some(kind.as_str()) {
        // Addresses first: a routing daemon sees each one go (BIRD 2 has been seen to keep
        // exporting the routes of an interface deleted with its addresses on).
        converge(iface, &BTreeSet::new())?;
        ip(&["link", "del", iface])?;
    }
    Ok(())
}

/// Makes the addresses of `iface` exactly `want`; returns (added, removed).
pub fn converge(iface: &str, want: &BTreeSet<IpAddr>) -> Result<(usize, usize), AnnounceError> {
    let have = addresses(iface)?;
    let mut added = 0;
    let mut removed = 0;
    for a in want.difference(&have) {
        let p = prefix(*a);
        let mut args = vec!["addr", "add", p.as_str(), "dev", iface];
        if a.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)?;
        added += 1;
    }
    for a in have.difference(want) {
        ip(&["addr", "del", &prefix(*a), "dev", iface])?;
        removed += 1;
    }
    Ok((added, removed))
}

/// The announcer while lb runs: which interface it owns now.
#[derive(Debug)]
pub struct Announcer {
    iface: Option<(String, AnnounceKind)>,
}

impl Announcer {
    /// Prepares the interface of `config`'s `[announce]` (nothing without one). Nothing is
    /// announced yet: [`Announcer::follow`] adds the VIPs whose backends are UP.
    pub fn start(config: &Config) -> Result<Self, AnnounceError> {
        let iface = config
            .announce
            .as_ref()
            .map(|a| (a.interface.clone(), a.kind));
        if let Some((i, kind)) = &iface {
            prepare(i, *kind)?;
            tracing::info!("announce: VIPs go on {} interface {i}", kind.as_str());
        }
        Ok(Self { iface })
    }

    /// One step: follow a changed `[announce]` (a reload may add, rename or remove it),
    /// then converge the interface on the wanted VIPs.
    fn step(&mut self, config: &Config, registry: &Registry) -> Result<(), AnnounceError> {
        let iface = config
            .announce
            .as_ref()
            .map(|a| (a.interface.clone(), a.kind));
        if iface != self.iface {
            if let Some((old, kind)) = self.iface.take() {
                remove(&old, kind)?;
                tracing::info!("announce: removed {old} (changed by reload)");
            }
            if let Some((new, kind)) = &iface {
                prepare(new, *kind)?;
            }
            self.iface = iface;
        }
        if let Some((i, _)) = &self.iface {
            let want = wanted(config, registry);
            let (added, removed) = converge(i, &want)?;
            if added + removed > 0 {
                tracing::info!(
                    added,
                    removed,
                    announced = want.len(),
                    "announce: VIPs on {i} updated"
                );
            }
        }
        Ok(())
    }

    /// Follows the registry until `shutdown` turns true (or its sender is dropped), then
    /// deletes the interface, withdrawing every VIP. The registry is subscribed to when this
    /// is called and a first step runs at once. A failed step is logged and retried at the
    /// next change. Await the returned future's task to know the withdrawal is done.
    pub fn follow(
        self,
        config: impl Fn() -> Arc<Config> + Send + 'static,
        registry: Arc<Registry>,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut changes = registry.subscribe();
        changes.mark_changed();
        let mut me = self;
        async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let cfg = config();
                        let reg = Arc::clone(&registry);
                        let r = tokio::task::spawn_blocking(move || {
                            let r = me.step(&cfg, &reg);
                            (me, r)
                        })
                        .await;
                        match r {
                            Ok((back, r)) => {
                                me = back;
                                if let Err(e) = r {
                                    tracing::error!("announce: {e}");
                                }
                            }
                            Err(e) => {
                                tracing::error!("announce: {e}");
                                return;
                            }
                        }
                    }
                    r = shutdown.changed() => {
                        if r.is_err() || *shutdown.borrow() {
                            break;
                        }
                    }
                }
            }
            if let Some((i, kind)) = me.iface.take() {
                match tokio::task::spawn_blocking(move || remove(&i, kind).map(|()| i)).await {
                    Ok(Ok(i)) => tracing::info!("announce: deleted {i}: every VIP withdrawn"),
                    Ok(Err(e)) => tracing::error!("announce: withdrawing: {e}"),
                    Err(e) => tracing::error!("announce: withdrawing: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, load_str};
    use crate::state::ServerStatus;
    use std::path::Path;

    fn cfg(announce: &str) -> Config {
        let text = format!(
            "[announce]\n{announce}\n[defaults]\nmode = \"tcp\"\ntimeout = {{ client = \"5s\", connect = \"5s\", server = \"5s\" }}\n\
             [frontend.a]\nbind = [\"192.0.2.10:80\", \"[2001:db8::10]:80\"]\ndefault_backend = \"pa\"\n\
             [frontend.b]\nbind = \"192.0.2.11:80\"\ndefault_backend = \"pb\"\n\
             [frontend.any]\nbind = \"*:8080\"\ndefault_backend = \"pb\"\n\
             [backend.pa]\nserver = [\"s1 10.0.0.1:80\", \"s2 10.0.0.2:80\"]\n\
             [backend.pb]\nserver = \"s1 10.0.0.3:80\"\n"
        );
        match load_str(Path::new("t.toml"), &text, &LoadOptions::default()) {
            Ok((c, _)) => c,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    #[test]
    fn a_vip_is_wanted_while_one_backend_server_is_up() {
        let c = cfg("");
        let reg = Registry::new();
        crate::health::sync_registry(&reg, &c);
        assert_eq!(
            wanted(&c, &reg),
            ips(&["192.0.2.10", "2001:db8::10", "192.0.2.11"]),
            "wildcard binds are not VIPs"
        );
        reg.set_status("pa", "s1", ServerStatus::Down).expect("s1");
        assert!(wanted(&c, &reg).contains(&"192.0.2.10".parse().expect("ip")));
        reg.set_status("pa", "s2", ServerStatus::Maint).expect("s2");
        assert_eq!(wanted(&c, &reg), ips(&["192.0.2.11"]));
        reg.set_status("pa", "s2", ServerStatus::Up).expect("s2");
        assert_eq!(wanted(&c, &reg).len(), 3);
    }

    #[test]
    fn frontends_restricts_what_is_announced() {
        let c = cfg("frontends = [\"b\"]");
        let reg = Registry::new();
        crate::health::sync_registry(&reg, &c);
        assert_eq!(wanted(&c, &reg), ips(&["192.0.2.11"]));
        assert_eq!(
            c.announce.as_ref().map(|a| a.interface.as_str()),
            Some("lb-vips")
        );
    }

    #[test]
    fn bad_announce_sections_are_errors_naming_the_key() {
        let base = "[defaults]\nmode = \"tcp\"\ntimeout = { client = \"5s\", connect = \"5s\", server = \"5s\" }\n\
                    [frontend.a]\nbind = \"192.0.2.10:80\"\ndefault_backend = \"pa\"\n\
                    [frontend.any]\nbind = \"*:8080\"\ndefault_backend = \"pa\"\n\
                    [backend.pa]\nserver = \"s1 10.0.0.1:80\"\n";
        for (announce, path, says) in [
            (
                "interface = \"lo\"",
                "announce.interface",
                "cannot be the announce interface",
            ),
            (
                "interface = \"a/b\"",
                "announce.interface",
                "not a valid interface name",
            ),
            (
                "interface = \"sixteen-chars-xx\"",
                "announce.interface",
                "1 to 15",
            ),
            ("kind = \"dumy\"", "announce.kind", "unknown interface kind"),
            (
                "frontends = [\"b\"]",
                "announce.frontends[0]",
                "no frontend or listen named `b`",
            ),
            (
                "frontends = [\"any\"]",
                "announce.frontends[0]",
                "binds no specific address",
            ),
        ] {
            let text = format!("[announce]\n{announce}\n{base}");
            let errs = match load_str(Path::new("t.toml"), &text, &LoadOptions::default()) {
                Ok(_) => panic!("`{announce}` loaded"),
                Err(e) => e
                    .errors()
                    .map(|d| format!("{}: {}", d.path, d.message))
                    .collect::<Vec<_>>(),
            };
            assert!(
                errs.iter().any(|e| e.starts_with(path) && e.contains(says)),
                "`{announce}`: {errs:?}"
            );
        }
    }
}
