//! `lb run`: wires the control plane (config, live state, health checks, admin API) to the
//! two data paths (the XDP tier through [`crate::dataplane`], the userspace tier through
//! [`crate::l7`]) and owns the process lifecycle: SIGHUP or `POST /api/reload` reload,
//! SIGTERM/SIGINT drain and exit.
//!
//! A reload is all or nothing: the new file is loaded and validated first, then checked
//! against what cannot change without a restart; only then does anything live change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};

use crate::admin::cli::StatsSocketServer;
use crate::admin::{AdminContext, AdminServer, reload_fn};
use crate::config::model::Config;
use crate::dataplane::{self, Dataplane};
use crate::discovery::Discovery;
use crate::health::{HealthError, HealthHandle, sync_registry};
use crate::l7::{L7, L7Error, L7Handle};
use crate::state::Registry;

/// How often the host's own addresses are re-read for the XDP tier's local-address set.
const LOCAL_ADDRS_EVERY: Duration = Duration::from_secs(30);

/// Errors that stop `lb run` from starting.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("XDP tier: {0}")]
    Dataplane(#[from] dataplane::ApplyError),
    #[error("userspace tier: {0}")]
    L7(#[from] L7Error),
    #[error("health checks: {0}")]
    Health(#[from] HealthError),
    #[error("admin listener: {0}")]
    Admin(#[from] crate::admin::AdminError),
    #[error("announce: {0}")]
    Announce(#[from] crate::announce::AnnounceError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Process(#[from] crate::process::ProcessError),
    #[error(
        "[global] user/group with [announce]: announcing runs ip(8), which needs CAP_NET_ADMIN, \
         and lb drops every capability when it changes user"
    )]
    AnnounceUnprivileged,
}

/// `lb run` options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Leave XDP attached (its links stay pinned) when exiting.
    pub keep_dataplane: bool,
}

/// The XDP tier while lb runs.
struct Xdp {
    dp: Arc<Mutex<Dataplane>>,
    stop_follow: watch::Sender<bool>,
}

/// Everything a reload touches.
struct Live {
    path: PathBuf,
    /// The configuration as loaded; `config` is it with DNS discovery's addresses.
    base: ArcSwap<Config>,
    discovery: Mutex<Discovery>,
    config: Arc<ArcSwap<Config>>,
    registry: Arc<Registry>,
    health: Arc<HealthHandle>,
    l7: L7Handle,
    xdp: Option<Xdp>,
}

fn load(path: &Path) -> Result<Config, String> {
    match crate::config::load(path) {
        Ok((cfg, warnings)) => {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            Ok(cfg)
        }
        Err(errors) => Err(errors
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

/// What in `[global]` or `[dataplane]` cannot change without a restart.
fn restart_change(old: &Config, new: &Config) -> Option<&'static str> {
    if old.global.threads != new.global.threads {
        return Some("[global] threads");
    }
    if old.global.cpu_map != new.global.cpu_map {
        return Some("[global] cpu_map");
    }
    if old.global.admin != new.global.admin || old.global.admin_token != new.global.admin_token {
        return Some("[global] admin or admin_token");
    }
    if old.global.admin_hosts != new.global.admin_hosts {
        return Some("[global] admin_hosts");
    }
    if old.global.stats_sockets != new.global.stats_sockets {
        return Some("[global] stats_socket");
    }
    let (o, n) = (&old.global.process, &new.global.process);
    if (&o.user, &o.group, &o.chroot, &o.pidfile, o.ulimit_n)
        != (&n.user, &n.group, &n.chroot, &n.pidfile, n.ulimit_n)
    {
        return Some("[global] user, group, chroot, pidfile or ulimit_n");
    }
    match (&old.dataplane, &new.dataplane) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => Some("adding or removing [dataplane]"),
        (Some(o), Some(n)) => {
            if o.interfaces != n.interfaces || o.xdp_mode != n.xdp_mode {
                Some("[dataplane] interfaces or xdp_mode")
            } else if o.maglev_table_size != n.maglev_table_size
                || o.conntrack_size != n.conntrack_size
            {
                Some("[dataplane] table sizes")
            } else if o.pin_path != n.pin_path {
                Some("[dataplane] pin_path")
            } else {
                None
            }
        }
    }
}

/// Why a reload to `new` is refused because it would close every listener (as HAProxy's
/// new process refuses to start with no listener, so the old one keeps serving).
fn nothing_listening(new: &Config) -> Option<&'static str> {
    new.frontends.is_empty().then_some(
        "the new configuration has no frontend or listen section: it would close every \
         listener, so it is not applied",
    )
}

impl Live {
    /// Loads, validates and applies the file again. A bad file changes nothing.
    async fn reload(&self) -> Result<(), String> {
        let started = Instant::now();
        let result = self.try_reload().await;
        match &result {
            Ok(()) => tracing::info!(
                "reloaded {} in {} ms",
                self.path.display(),
                started.elapsed().as_millis()
            ),
            Err(e) => tracing::error!(
                "reload of {} rejected; the running configuration is unchanged:\n{e}",
                self.path.display()
            ),
        }
        result
    }

    async fn try_reload(&self) -> Result<(), String> {
        let path = self.path.clone();
        let new = tokio::task::spawn_blocking(move || load(&path))
            .await
            .map_err(|e| e.to_string())??;
        if let Some(why) = nothing_listening(&new) {
            return Err(why.to_owned());
        }
        let old = self.config.load_full();
        if let Some(what) = restart_change(&old, &new) {
            return Err(format!("changing {what} needs a restart of lb"));
        }
        // Servers that keep their name keep what DNS gave them (`init-addr last`).
        let discovery = Discovery::start(&new, Some(&self.lock_discovery()));
        let effective = Arc::new(discovery.overlay(&new));
        self.install(effective).await?;
        self.base.store(Arc::new(new));
        *self.lock_discovery() = discovery;
        Ok(())
    }

    fn lock_discovery(&self) -> std::sync::MutexGuard<'_, Discovery> {
        self.discovery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// DNS discovery changed an address: the loaded configuration with the new addresses
    /// goes through the same steps as a reload.
    async fn rediscover(&self) {
        let effective = Arc::new(self.lock_discovery().overlay(&self.base.load()));
        if let Err(e) = self.install(effective).await {
            tracing::error!("applying DNS discovery's addresses: {e}");
        }
    }

    /// Makes `new` (validated) the running configuration of both tiers.
    async fn install(&self, new: Arc<Config>) -> Result<(), String> {
        // L7 first: it binds new listeners, the step most likely to fail.
        self.l7.reload(new.clone()).map_err(|e| e.to_string())?;
        self.config.store(new.clone());
        sync_registry(&self.registry, &new);
        if let Err(e) = self.health.apply(&new) {
            tracing::error!("health checks after reload: {e}");
        }
        if let Some(xdp) = &self.xdp {
            // The follower re-applies on the registry change above; this makes the reload
            // synchronous so the caller knows the maps are written.
            dataplane::apply_now(&xdp.dp, new, &self.registry)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Runs lb until SIGTERM or SIGINT.
pub async fn run(config: Config, opts: RunOptions) -> Result<(), RunError> {
    // Looked up before anything starts, so a missing user stops lb at once.
    let identity = crate::process::identity(&config.global.process)?;
    if identity.is_some() && config.announce.is_some() {
        return Err(RunError::AnnounceUnprivileged);
    }
    let discovery = Discovery::start(&config, None);
    let base = ArcSwap::from_pointee(config.clone());
    let config = Arc::new(config);
    let shared = Arc::new(ArcSwap::new(config.clone()));
    let registry = Arc::new(Registry::new());
    sync_registry(&registry, &config);

    let xdp = match &config.dataplane {
        Some(_) => {
            let running = dataplane::start(&config, &registry)?;
            for a in &running.attachments {
                if a.mode == Some(dataplane::Attachment::Generic) {
                    let iface = &a.iface;
                    tracing::warn!(
                        "XDP on {iface} runs in generic (SKB) mode: no native driver support"
                    );
                }
            }
            tracing::info!(
                "XDP tier up: {} VIPs, {} backends",
                running.summary.vips,
                running.summary.backends
            );
            let dp = Arc::new(Mutex::new(running.dp));
            let (stop_follow, stopped) = watch::channel(false);
            let cfg = shared.clone();
            tokio::spawn(dataplane::follow(
                dp.clone(),
                move || cfg.load_full(),
                registry.clone(),
                Some(LOCAL_ADDRS_EVERY),
                stopped,
            ));
            Some(Xdp { dp, stop_follow })
        }
        None => None,
    };
    let health = Arc::new(HealthHandle::new(registry.clone()));
    health.apply(&config)?;
    let l7 = L7::start(config.clone(), registry.clone())?;
    // VIPs on the [announce] interface (a BGP daemon exports them); withdrawn first at exit.
    let (stop_announce, announce_stopped) = watch::channel(false);
    let announce_cfg = shared.clone();
    let announce = tokio::spawn(crate::announce::Announcer::start(&config)?.follow(
        move || announce_cfg.load_full(),
        registry.clone(),
        announce_stopped,
    ));

    let live = Arc::new(Live {
        path: opts.config.clone(),
        base,
        discovery: Mutex::new(discovery),
        config: shared.clone(),
        registry: registry.clone(),
        health: health.clone(),
        l7,
        xdp,
    });

    // The admin API asks the main loop to reload, so reloads never run concurrently.
    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Result<(), String>>>(4);
    let api_reload = reload_fn(move || {
        let tx = reload_tx.clone();
        async move {
            let (done, wait) = oneshot::channel();
            tx.send(done)
                .await
                .map_err(|_| "lb is shutting down".to_owned())?;
            wait.await
                .map_err(|_| "the reload was cancelled".to_owned())?
        }
    });
    let mut ctx = AdminContext::new(registry.clone())
        .with_health(health.clone())
        .with_reload(api_reload);
    if let Some(x) = &live.xdp {
        let cfg = shared.clone();
        ctx = ctx.with_l4(dataplane::stats::source(x.dp.clone(), move || {
            cfg.load_full()
        }));
    }
    let admin_ctx_reload = ctx.clone();
    // `stats uri` pages of frontends: lb's HTML page from the same counters.
    let page_ctx = ctx.clone();
    crate::l7::stats_page::set_renderer(Arc::new(move |page| {
        crate::admin::html::render_page(
            &crate::admin::stats::collect(&page_ctx),
            page.refresh,
            page.hide_version,
            false,
        )
    }));
    let stats_sockets = config
        .global
        .stats_sockets
        .iter()
        .map(|sock| StatsSocketServer::bind(sock, ctx.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let admin = AdminServer::start(&config.global, ctx).await?;
    // Everything is bound and loaded: the pidfile, then chroot and the identity change.
    let pidfile = config
        .global
        .process
        .pidfile
        .as_deref()
        .map(crate::process::Pidfile::create)
        .transpose()?;
    let pin_dirs: Vec<PathBuf> = config
        .dataplane
        .iter()
        .map(|d| d.pin_path.clone())
        .collect();
    crate::process::confine(config.global.process.chroot.as_deref(), identity, &pin_dirs)?;
    if let Some(id) = identity {
        tracing::info!("running as uid {} gid {}", id.uid, id.gid);
    }

    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    tracing::info!("lb running with {}", opts.config.display());
    let mut discovered = live.lock_discovery().subscribe();
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading {}", opts.config.display());
                let started = Instant::now();
                let result = live.reload().await;
                admin_ctx_reload.record_reload(&result, started.elapsed());
                discovered = live.lock_discovery().subscribe();
            }
            Some(done) = reload_rx.recv() => {
                let _ = done.send(live.reload().await);
                discovered = live.lock_discovery().subscribe();
            }
            Ok(()) = discovered.changed() => live.rediscover().await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = stop_announce.send(true);
    let _ = announce.await;
    // `hard-stop-after`: how long open connections may take to finish.
    let grace = live.config.load().global.process.hard_stop_after;
    tracing::info!(
        "stopping: draining L7 connections (up to {} ms)",
        grace.as_millis()
    );
    admin.shutdown();
    drop(stats_sockets);
    if !live.l7.shutdown(grace).await {
        tracing::info!(
            "connections still open after {} ms are closed",
            grace.as_millis()
        );
    }
    health.stop();
    if let Some(x) = &live.xdp {
        let _ = x.stop_follow.send(true);
        if opts.keep_dataplane {
            tracing::info!("--keep-dataplane: XDP stays attached; maps and links stay pinned");
        } else if let Err(e) = dataplane::stop(&live.config.load_full(), false) {
            tracing::error!("detaching XDP: {e}");
        }
    }
    drop(pidfile);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, load_str};

    fn cfg(global: &str) -> Config {
        let text = format!(
            "[global]\n{global}\n[defaults]\nmode = \"http\"\ntimeout = {{ client = \"5s\", connect = \"5s\", server = \"5s\" }}\n\
             [listen.l]\nbind = \"127.0.0.1:8080\"\nserver = \"s 127.0.0.1:80\"\n"
        );
        match load_str(Path::new("t.toml"), &text, &LoadOptions::default()) {
            Ok((c, _)) => c,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_config_without_frontends_is_not_applied() {
        assert_eq!(nothing_listening(&cfg("")), None);
        let empty = match load_str(Path::new("t.toml"), "[global]\n", &LoadOptions::default()) {
            Ok((c, _)) => c,
            Err(e) => panic!("{e:?}"),
        };
        assert!(
            nothing_listening(&empty).is_some_and(|w| w.contains("no frontend or listen section"))
        );
    }

    #[test]
    fn threads_and_cpu_map_need_a_restart() {
        let base = cfg("threads = 2");
        assert_eq!(restart_change(&base, &cfg("threads = 2")), None);
        assert_eq!(
            restart_change(&base, &cfg("threads = 3")),
            Some("[global] threads")
        );
        assert_eq!(
            restart_change(&base, &cfg("threads = 2\ncpu_map = \"auto\"")),
            Some("[global] cpu_map")
        );
        assert_eq!(
            restart_change(&base, &cfg("threads = 2\nadmin_token = \"t\"")),
            Some("[global] admin or admin_token"),
            "the admin listener keeps its address and token"
        );
        assert_eq!(
            restart_change(&base, &cfg("threads = 2\nadmin_hosts = [\"lb1\"]")),
            Some("[global] admin_hosts")
        );
        assert_eq!(
            restart_change(&base, &cfg("threads = 2\nstats_socket = \"/run/lb.sock\"")),
            Some("[global] stats_socket")
        );
        assert_eq!(
            restart_change(&base, &cfg("threads = 2\nuser = \"nobody\"")),
            Some("[global] user, group, chroot, pidfile or ulimit_n")
        );
        assert_eq!(
            restart_change(&base, &cfg("threads = 2\nulimit_n = 4096")),
            Some("[global] user, group, chroot, pidfile or ulimit_n")
        );
        assert_eq!(
            restart_change(
                &base,
                &cfg("threads = 2\nmaxconn = 10\nhard_stop_after = \"1s\"")
            ),
            None,
            "maxconn and hard_stop_after reload"
        );
        assert_eq!(
            restart_change(&base, &cfg("threads = 2\nlog_format = \"json\"")),
            None,
            "other [global] keys reload"
        );
    }
}
