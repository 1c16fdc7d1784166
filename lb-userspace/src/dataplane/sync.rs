//! Keeping the data path in step with the live state: re-apply the configuration whenever
//! the registry reports a status, weight or backend-set change, and refresh the host's local
//! addresses now and then (they change with DHCP, VRRP, operators…).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::apply::{self, ApplyError, ApplySummary};
use super::maps::Dataplane;
use crate::config::model::Config;
use crate::state::Registry;

/// Errors from a sync step.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the dataplane lock is poisoned (a previous map update panicked)")]
    Poisoned,
    #[error("the apply task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Applies `config` and `registry` to `dp` once, on a blocking thread (a Maglev table flip
/// writes `M` map entries).
pub async fn apply_now(
    dp: &Arc<Mutex<Dataplane>>,
    config: Arc<Config>,
    registry: &Arc<Registry>,
) -> Result<ApplySummary, SyncError> {
    let dp = Arc::clone(dp);
    let registry = Arc::clone(registry);
    tokio::task::spawn_blocking(move || {
        let mut dp = dp.lock().map_err(|_| SyncError::Poisoned)?;
        Ok(apply::apply(&mut dp, &config, &registry)?)
    })
    .await?
}

/// Each server's `shutdown sessions` generation the data path last acted on, by
/// (backend, server).
type ShutdownSeen = std::collections::HashMap<(String, String), u64>;

/// The endpoints of servers whose `shutdown sessions` generation moved since `seen`
/// (updated). A server `seen` does not know starts at generation 0.
fn shutdown_requests(
    registry: &Registry,
    seen: &mut ShutdownSeen,
) -> std::collections::BTreeSet<std::net::SocketAddr> {
    let mut out = std::collections::BTreeSet::new();
    for (bname, b) in registry.backends().iter() {
        for s in &b.servers {
            let g = s.shutdown_generation();
            let last = seen.insert((bname.clone(), s.name.clone()), g);
            if last.unwrap_or(0) != g {
                out.insert(s.addr);
            }
        }
    }
    out
}

/// How often the flow tables' occupancy is sampled (`/metrics`, `lb stats`, the warning).
pub const OCCUPANCY_EVERY: Duration = Duration::from_secs(10);

/// At most one "flow table filling" warning per this period while it stays above.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Samples the flow tables' occupancy into `dp` (for the stats) and warns, at most once per
/// [`WARN_EVERY`], when a table holds more than `warn_percent` of its capacity.
pub fn sample(
    dp: &mut Dataplane,
    warn_percent: u8,
    warned: &Mutex<Option<std::time::Instant>>,
) -> Result<(), SyncError> {
    let occ = dp.sample_occupancy().map_err(ApplyError::from)?;
    let fullest = occ.v4.max(occ.v6);
    if occ.capacity == 0 || fullest * 100 <= u64::from(warn_percent) * occ.capacity {
        return Ok(());
    }
    let mut last = warned.lock().map_err(|_| SyncError::Poisoned)?;
    if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
        return Ok(());
    }
    *last = Some(std::time::Instant::now());
    tracing::warn!(
        ipv4 = occ.v4,
        ipv6 = occ.v6,
        capacity = occ.capacity,
        "flow table above {warn_percent}% of conntrack_size: the oldest flows are being \
         evicted (raise [dataplane] conntrack_size; see docs/operations.md)"
    );
    Ok(())
}

/// Follows the registry until `shutdown` turns true (or its sender is dropped): every change
/// re-applies the configuration returned by `config` (read at each change, so a reload only
/// has to swap it and touch the registry). The registry is subscribed to when this is
/// called (not when the future is first polled) and one catch-up apply runs first, so no
/// change is missed. With `local_addrs_every`, the host's addresses are re-read at that
/// period (in the runtime's network namespace). Failed steps are logged and retried at the
/// next change; the previous map contents stay in force meanwhile.
pub fn follow(
    dp: Arc<Mutex<Dataplane>>,
    config: impl Fn() -> Arc<Config>,
    registry: Arc<Registry>,
    local_addrs_every: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> {
    let mut changes = registry.subscribe();
    changes.mark_changed();
    // Requests made before this data path started are not replayed.
    let mut shutdown_seen = ShutdownSeen::new();
    shutdown_requests(&registry, &mut shutdown_seen);
    async move {
        let mut tick =
            tokio::time::interval(local_addrs_every.unwrap_or(Duration::from_secs(3600)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut occupancy_tick = tokio::time::interval(OCCUPANCY_EVERY);
        occupancy_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let warned: Arc<Mutex<Option<std::time::Instant>>> = Arc::new(Mutex::new(None));
        loop {
            tokio::select! {
                _ = occupancy_tick.tick() => {
                    let dp = Arc::clone(&dp);
                    let warn = config()
                        .dataplane
                        .as_ref()
                        .map_or(90, |d| d.conntrack_warn);
                    let warned = Arc::clone(&warned);
                    let r = tokio::task::spawn_blocking(move || -> Result<(), SyncError> {
                        let mut dp = dp.lock().map_err(|_| SyncError::Poisoned)?;
                        sample(&mut dp, warn, &warned)
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!("sampling the flow tables failed: {e}"),
                        Err(e) => tracing::warn!("sampling the flow tables failed: {e}"),
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    match apply_now(&dp, config(), &registry).await {
                        Ok(s) if s.writes > 0 => tracing::info!(
                            writes = s.writes,
                            tables = s.tables_flipped,
                            flows_shut = s.flows_shut,
                            "data path updated"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::error!("data path update failed: {e}"),
                    }
                    let shut = shutdown_requests(&registry, &mut shutdown_seen);
                    if !shut.is_empty() {
                        let dp = Arc::clone(&dp);
                        let r = tokio::task::spawn_blocking(move || -> Result<usize, SyncError> {
                            let mut dp = dp.lock().map_err(|_| SyncError::Poisoned)?;
                            Ok(apply::shut_sessions(&mut dp, &shut)?)
                        })
                        .await;
                        match r {
                            Ok(Ok(n)) => tracing::info!(flows = n, "shutdown sessions: flows ended"),
                            Ok(Err(e)) => tracing::error!("shutdown sessions failed: {e}"),
                            Err(e) => tracing::error!("shutdown sessions failed: {e}"),
                        }
                    }
                }
                _ = tick.tick(), if local_addrs_every.is_some() => {
                    let dp = Arc::clone(&dp);
                    let r = tokio::task::spawn_blocking(move || -> Result<usize, SyncError> {
                        let mut dp = dp.lock().map_err(|_| SyncError::Poisoned)?;
                        Ok(apply::sync_local_addrs(&mut dp, &[])?)
                    })
                    .await;
                    match r {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!("refreshing local addresses failed: {e}"),
                        Err(e) => tracing::error!("refreshing local addresses failed: {e}"),
                    }
                }
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
