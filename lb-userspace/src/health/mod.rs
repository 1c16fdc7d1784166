//! Health checks: one task per checked server, HAProxy's rise/fall state machine, and the
//! administrative state (READY / DRAIN / MAINT) set through the runtime API.
//!
//! Every decision is written to the [`Registry`] at once (`Registry::set_status`), which
//! notifies the data plane and the L7 pools; there is no batching. Transitions are logged the
//! way HAProxy logs them.
//!
//! Usage, at start and on every reload (after `Registry::replace` with the new backends):
//!
//! ```no_run
//! # async fn f(cfg: lb::config::model::Config, reg: std::sync::Arc<lb::state::Registry>) {
//! let health = lb::health::HealthHandle::new(reg.clone());
//! health.apply(&cfg).expect("valid check settings");
//! // … on reload, with the new config:
//! health.apply(&cfg).expect("valid check settings");
//! // … on shutdown:
//! health.stop();
//! # }
//! ```
//!
//! Servers that survive a reload (same backend, name and address) keep their health counter,
//! administrative state, last check result and histograms.

pub mod check;
pub mod machine;
pub mod registry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::task::JoinHandle;

use crate::config::model::{CheckSpec, Config};
use crate::state::{Registry, ServerStatus, StateError};

pub use check::{CheckOutcome, CheckStatus, Checker};
pub use machine::{AdminState, HealthMachine, InitState, OpState, Transition};
pub use registry::{RegistryPlan, plan_registry, sync_registry, sync_registry_targets};

/// Errors of the health module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("invalid HTTP health check request: {0}")]
    BadHttpCheck(String),
    #[error("invalid TLS health check SNI name: {0}")]
    BadSni(String),
    #[error("TLS health check setup failed: {0}")]
    Tls(String),
    #[error("health checks must be started from within a tokio runtime")]
    NoRuntime,
    #[error("backend {backend}: log target: {reason}")]
    Log { backend: String, reason: String },
}

/// Where a backend's health changes are logged (its `log` targets), as HAProxy logs them.
#[derive(Debug)]
pub struct HealthLog {
    logger: crate::syslog::Logger,
    /// `option log-health-checks`.
    checks: bool,
}

/// Syslog severities of HAProxy's health messages.
const LOG_EMERG: u8 = 0;
const LOG_ALERT: u8 = 1;
const LOG_NOTICE: u8 = 5;

/// The health logs of `config`'s backends that have `log` targets.
fn health_logs(config: &Config) -> Result<HashMap<String, Arc<HealthLog>>, HealthError> {
    let mut out = HashMap::new();
    for b in config.backends.iter().filter(|b| !b.log_targets.is_empty()) {
        let logger = crate::syslog::Logger::new(&b.log_targets).map_err(|e| HealthError::Log {
            backend: b.name.clone(),
            reason: e.to_string(),
        })?;
        out.insert(
            b.name.clone(),
            Arc::new(HealthLog {
                logger,
                checks: b.log_health_checks,
            }),
        );
    }
    Ok(out)
}

/// Upper bounds (seconds) of the check-duration histogram buckets.
pub const CHECK_DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A lock-free histogram of check durations.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; CHECK_DURATION_BUCKETS.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of a [`DurationHistogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`, ending with `(+Inf, count)`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl DurationHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = CHECK_DURATION_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(CHECK_DURATION_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = CHECK_DURATION_BUCKETS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            buckets.push((le, cumulative));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            // The +Inf bucket is the count, whatever raced in between.
            count: cumulative,
        }
    }
}

/// What the admin API shows about one server's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckInfo {
    pub checked: bool,
    pub admin: AdminState,
    pub op: OpState,
    pub effective: ServerStatus,
    /// "UP", "UP 2/3", "DOWN 1/2", … (HAProxy's stats wording); "no check" if unchecked.
    pub progress: String,
    pub rise: u32,
    pub fall: u32,
    pub health: u32,
    pub interval: Duration,
    pub last: Option<CheckOutcome>,
    /// When the last check finished.
    pub last_at: Option<SystemTime>,
    pub checks: u64,
    pub failures: u64,
    /// Transitions from UP to DOWN (HAProxy's `chkdown`).
    pub up_down: u64,
    pub durations: HistogramSnapshot,
}

#[derive(Debug)]
struct Mutable {
    machine: HealthMachine,
    checked: bool,
    spec: CheckSpec,
    last: Option<CheckOutcome>,
    last_at: Option<SystemTime>,
    /// The backend's log targets, if it has any.
    log: Option<Arc<HealthLog>>,
    /// `on-marked-down shutdown-sessions`.
    shutdown_on_down: bool,
}

/// Health of one server: its state machine, admin state, last result and counters.
#[derive(Debug)]
pub struct ServerHealth {
    pub backend: String,
    pub server: String,
    pub addr: SocketAddr,
    state: Mutex<Mutable>,
    pub durations: DurationHistogram,
    checks: AtomicU64,
    failures: AtomicU64,
    up_down: AtomicU64,
    /// The weight in the configuration (for `set weight N%`); 0 when unknown.
    configured_weight: AtomicU32,
}

fn effective_of(m: &Mutable) -> ServerStatus {
    if m.checked {
        m.machine.effective()
    } else {
        match m.machine.admin() {
            AdminState::Maint => ServerStatus::Maint,
            AdminState::Drain => ServerStatus::Drain,
            AdminState::Ready => ServerStatus::Up,
        }
    }
}

impl ServerHealth {
    fn new(backend: &str, server: &str, addr: SocketAddr, checked: bool, spec: &CheckSpec) -> Self {
        Self {
            backend: backend.to_owned(),
            server: server.to_owned(),
            addr,
            state: Mutex::new(Mutable {
                machine: HealthMachine::new(spec.rise, spec.fall, InitState::Up),
                checked,
                spec: spec.clone(),
                last: None,
                last_at: None,
                log: None,
                shutdown_on_down: false,
            }),
            durations: DurationHistogram::default(),
            checks: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            up_down: AtomicU64::new(0),
            configured_weight: AtomicU32::new(0),
        }
    }

    /// The weight the configuration gives this server (0 when not known).
    pub fn configured_weight(&self) -> u32 {
        self.configured_weight.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Mutable> {
        // A panic while holding this lock cannot leave the data inconsistent (plain values).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status this server should have in the registry.
    pub fn effective(&self) -> ServerStatus {
        effective_of(&self.lock())
    }

    pub fn info(&self) -> CheckInfo {
        let m = self.lock();
        CheckInfo {
            checked: m.checked,
            admin: m.machine.admin(),
            op: if m.checked {
                m.machine.op_state()
            } else {
                OpState::Up
            },
            effective: effective_of(&m),
            progress: if m.checked {
                m.machine.progress()
            } else {
                "no check".to_owned()
            },
            rise: m.machine.rise(),
            fall: m.machine.fall(),
            health: m.machine.health(),
            interval: m.spec.interval,
            last: m.last.clone(),
            last_at: m.last_at,
            checks: self.checks.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            up_down: self.up_down.load(Ordering::Relaxed),
            durations: self.durations.snapshot(),
        }
    }

    /// Writes the effective status to the registry (under the lock, so concurrent check
    /// results and admin changes are published in order).
    fn publish(&self, m: &Mutable, registry: &Registry) -> ServerStatus {
        let status = effective_of(m);
        if let Err(e) = registry.set_status(&self.backend, &self.server, status) {
            tracing::debug!(
                "health: cannot publish {}/{}: {e}",
                self.backend,
                self.server
            );
        }
        status
    }

    /// Feeds one check result: state machine, counters, registry, logs.
    pub fn record(&self, outcome: &CheckOutcome, registry: &Registry) {
        self.durations.observe(outcome.duration);
        self.checks.fetch_add(1, Ordering::Relaxed);
        if !outcome.passed() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(srv) = registry
            .backend(&self.backend)
            .and_then(|b| b.server(&self.server).cloned())
        {
            let us = u64::try_from(outcome.duration.as_micros()).unwrap_or(u64::MAX);
            srv.last_check_us.store(us.max(1), Ordering::Relaxed);
        }
        let (transition, admin, progress, log, shutdown) = {
            let mut m = self.lock();
            let before = m.machine.health();
            let transition = m.machine.record(outcome.passed());
            m.last = Some(outcome.clone());
            m.last_at = Some(SystemTime::now());
            self.publish(&m, registry);
            // `option log-health-checks`: each result that moves the health counter.
            if let Some(log) = m.log.as_ref().filter(|l| l.checks)
                && m.machine.health() != before
                && m.machine.admin() != AdminState::Maint
            {
                log.logger.send(
                    LOG_NOTICE,
                    &format!(
                        "Health check for server {}/{} {}, {}, status: {}.",
                        self.backend,
                        self.server,
                        if outcome.passed() {
                            "succeeded"
                        } else {
                            "failed"
                        },
                        outcome.describe(),
                        m.machine.status_text()
                    ),
                );
            }
            (
                transition,
                m.machine.admin(),
                m.machine.progress(),
                m.log.clone(),
                m.shutdown_on_down,
            )
        };
        let Some(t) = transition else { return };
        if t.to == OpState::Down {
            self.up_down.fetch_add(1, Ordering::Relaxed);
            if shutdown {
                self.shut_down(registry);
            }
        }
        self.log_transition(t, admin, outcome, &progress, registry, log.as_deref());
    }

    /// `on-marked-down shutdown-sessions`: ends the server's sessions in both tiers.
    fn shut_down(&self, registry: &Registry) {
        if let Err(e) = registry.shutdown_sessions(&self.backend, &self.server) {
            tracing::debug!(
                "health: shutdown sessions {}/{}: {e}",
                self.backend,
                self.server
            );
        }
    }

    fn log_transition(
        &self,
        t: Transition,
        admin: AdminState,
        outcome: &CheckOutcome,
        progress: &str,
        registry: &Registry,
        log: Option<&HealthLog>,
    ) {
        let (be, sv) = (&self.backend, &self.server);
        // To the backend's log targets as HAProxy words it: the reason is on the check's
        // own line with `log-health-checks`, else on this one.
        let syslog = |level: u8, head: &str, rest: &str| {
            if let Some(l) = log {
                let reason = if l.checks {
                    String::new()
                } else {
                    format!(", {}", outcome.describe())
                };
                l.logger.send(level, &format!("{head}{reason}.{rest}"));
            }
        };
        if admin == AdminState::Maint {
            tracing::info!(
                "Health check for server {be}/{sv} {}, {}, status: {progress} (server is in maintenance)",
                if outcome.passed() {
                    "succeeded"
                } else {
                    "failed"
                },
                outcome.describe(),
            );
            return;
        }
        let (active, backup, sessions) = registry
            .backend(be)
            .map(|b| {
                let usable = |backup: bool| {
                    b.servers
                        .iter()
                        .filter(|s| s.backup == backup && s.status().is_usable())
                        .count()
                };
                let sessions = b
                    .server(sv)
                    .map(|s| s.counters.active_conns.load(Ordering::Relaxed))
                    .unwrap_or(0);
                (usable(false), usable(true), sessions)
            })
            .unwrap_or((0, 0, 0));
        match t.to {
            OpState::Down => {
                let rest = format!(
                    " {active} active and {backup} backup servers left. {sessions} sessions \
                     active, 0 requeued, 0 remaining in queue."
                );
                tracing::warn!("Server {be}/{sv} is DOWN, {}.{rest}", outcome.describe());
                syslog(LOG_ALERT, &format!("Server {be}/{sv} is DOWN"), &rest);
                if active == 0 && backup == 0 {
                    tracing::error!("backend {be} has no server available!");
                    if let Some(l) = log {
                        l.logger
                            .send(LOG_EMERG, &format!("backend {be} has no server available!"));
                    }
                }
            }
            OpState::Up => {
                let rest = format!(
                    " {active} active and {backup} backup servers online. 0 sessions \
                     requeued, 0 total in queue."
                );
                tracing::warn!("Server {be}/{sv} is UP, {}.{rest}", outcome.describe());
                syslog(LOG_NOTICE, &format!("Server {be}/{sv} is UP"), &rest);
            }
        }
    }
}

/// One server as the health service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub backend: String,
    pub server: String,
    pub addr: SocketAddr,
    /// Health-checked (`check` on the server line).
    pub check: bool,
    /// `disabled`: starts in MAINT.
    pub disabled: bool,
    /// Configured weight (0..=256).
    pub weight: u32,
    pub backup: bool,
    /// The backend's check settings.
    pub spec: CheckSpec,
    /// `send-proxy[-v2]`: checks open with a PROXY header too (HAProxy does so when the
    /// check goes to the traffic port, which lb's always do).
    pub send_proxy: Option<crate::proxy_protocol::ProxyVersion>,
    /// `on-marked-down shutdown-sessions`: going DOWN or into MAINT ends the server's
    /// established sessions (`Registry::shutdown_sessions`).
    pub shutdown_on_down: bool,
}

/// Every server of `config`, in order.
pub fn targets(config: &Config) -> Vec<Target> {
    config
        .backends
        .iter()
        .flat_map(|b| {
            b.servers.iter().map(move |s| Target {
                backend: b.name.clone(),
                server: s.name.clone(),
                addr: s.addr,
                // A server without an address (DNS discovery) is in MAINT, unchecked.
                check: s.check && !s.unresolved,
                disabled: s.disabled || s.unresolved,
                weight: s.weight,
                backup: s.backup,
                spec: b.check.clone(),
                send_proxy: s.send_proxy,
                shutdown_on_down: s.shutdown_on_down,
            })
        })
        .collect()
}

#[derive(Debug, Default)]
struct Inner {
    servers: HashMap<(String, String), Arc<ServerHealth>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The health-check service: owns the per-server state and the check tasks.
#[derive(Debug)]
pub struct HealthHandle {
    registry: Arc<Registry>,
    inner: Mutex<Inner>,
}

impl HealthHandle {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adopts `config`: stops the running checks, carries over the state of servers that
    /// survive, publishes every server's status to the registry and starts one check task
    /// per server marked `check`. Call it after `Registry::replace`. On error nothing
    /// changes.
    pub fn apply(&self, config: &Config) -> Result<(), HealthError> {
        self.apply_logged(&targets(config), &health_logs(config)?)
    }

    /// [`HealthHandle::apply`] on an explicit server list (health changes go to lb's own
    /// log only).
    pub fn apply_targets(&self, targets: &[Target]) -> Result<(), HealthError> {
        self.apply_logged(targets, &HashMap::new())
    }

    fn apply_logged(
        &self,
        targets: &[Target],
        logs: &HashMap<String, Arc<HealthLog>>,
    ) -> Result<(), HealthError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| HealthError::NoRuntime)?;
        // Prepare everything fallible first.
        let mut checkers = Vec::new();
        for t in targets.iter().filter(|t| t.check) {
            checkers.push((t, Checker::new(t.addr, &t.spec)?.send_proxy(t.send_proxy)));
        }

        let mut inner = self.lock();
        for task in inner.tasks.drain(..) {
            task.abort();
        }
        let mut old = std::mem::take(&mut inner.servers);
        for t in targets {
            let key = (t.backend.clone(), t.server.clone());
            let entry = match old.remove(&key) {
                Some(e) if e.addr == t.addr => {
                    {
                        let mut m = e.lock();
                        m.machine.set_params(t.spec.rise, t.spec.fall);
                        m.checked = t.check;
                        m.spec = t.spec.clone();
                        m.shutdown_on_down = t.shutdown_on_down;
                    }
                    e
                }
                _ => {
                    let e = ServerHealth::new(&t.backend, &t.server, t.addr, t.check, &t.spec);
                    e.lock().shutdown_on_down = t.shutdown_on_down;
                    if t.disabled {
                        e.lock().machine.set_admin(AdminState::Maint);
                    }
                    Arc::new(e)
                }
            };
            entry.configured_weight.store(t.weight, Ordering::Relaxed);
            {
                let mut m = entry.lock();
                m.log = logs.get(&t.backend).cloned();
                entry.publish(&m, &self.registry);
            }
            inner.servers.insert(key, entry);
        }
        for (t, checker) in checkers {
            let key = (t.backend.clone(), t.server.clone());
            let Some(sh) = inner.servers.get(&key).cloned() else {
                continue;
            };
            let registry = self.registry.clone();
            inner
                .tasks
                .push(rt.spawn(check_loop(sh, checker, t.spec.interval, registry)));
        }
        tracing::debug!(
            "health: {} servers, {} checked",
            inner.servers.len(),
            inner.tasks.len()
        );
        Ok(())
    }

    /// Stops every check task (state is kept; `apply` restarts them).
    pub fn stop(&self) {
        for t in self.lock().tasks.drain(..) {
            t.abort();
        }
    }

    /// Number of running check tasks.
    pub fn running_checks(&self) -> usize {
        self.lock()
            .tasks
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }

    /// One server's health, if known.
    pub fn server(&self, backend: &str, server: &str) -> Option<Arc<ServerHealth>> {
        self.lock()
            .servers
            .get(&(backend.to_owned(), server.to_owned()))
            .cloned()
    }

    /// Every server's health, keyed by `(backend, server)`.
    pub fn servers(&self) -> HashMap<(String, String), Arc<ServerHealth>> {
        self.lock().servers.clone()
    }

    /// HAProxy's `set server BACKEND/SERVER state ready|drain|maint`. Returns the new
    /// effective status, already published to the registry.
    pub fn set_admin(
        &self,
        backend: &str,
        server: &str,
        admin: AdminState,
    ) -> Result<ServerStatus, HealthError> {
        let b = self
            .registry
            .backend(backend)
            .ok_or_else(|| StateError::NoBackend(backend.to_owned()))?;
        let srv = b.server(server).ok_or_else(|| StateError::NoServer {
            backend: backend.to_owned(),
            server: server.to_owned(),
        })?;
        let entry = {
            let mut inner = self.lock();
            let key = (backend.to_owned(), server.to_owned());
            inner
                .servers
                .entry(key)
                .or_insert_with(|| {
                    // Known to the registry but never applied: an unchecked server.
                    Arc::new(ServerHealth::new(
                        backend,
                        server,
                        srv.addr,
                        false,
                        &CheckSpec::default(),
                    ))
                })
                .clone()
        };
        let mut m = entry.lock();
        let before = m.machine.admin();
        m.machine.set_admin(admin);
        let status = entry.publish(&m, &self.registry);
        let shutdown = m.shutdown_on_down && admin == AdminState::Maint && before != admin;
        drop(m);
        if shutdown {
            entry.shut_down(&self.registry);
        }
        if before != admin {
            tracing::warn!(
                "Server {backend}/{server} state changed from {} to {} by the runtime API \
                 (now {})",
                before.as_str(),
                admin.as_str(),
                status.as_str()
            );
        }
        Ok(status)
    }
}

impl Drop for HealthHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Jitter before a server's first check, so checks don't all fire at once.
fn start_jitter(interval: Duration) -> Duration {
    let max = interval.min(Duration::from_secs(1)) / 4;
    let max_us = u64::try_from(max.as_micros()).unwrap_or(0);
    if max_us == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::rng().random_range(0..=max_us))
}

async fn check_loop(
    sh: Arc<ServerHealth>,
    checker: Checker,
    interval: Duration,
    registry: Arc<Registry>,
) {
    let interval = interval.max(Duration::from_millis(10));
    tokio::time::sleep(start_jitter(interval)).await;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = checker.run().await;
        sh.record(&outcome, &registry);
        tokio::time::sleep_until(started + interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(3));
        let at_5ms = s.buckets.iter().find(|b| b.0 == 0.005).map(|b| b.1);
        assert_eq!(at_5ms, Some(2));
        assert!((s.sum_seconds - 20.0033).abs() < 1e-6, "{}", s.sum_seconds);
    }

    #[test]
    fn jitter_is_bounded() {
        for _ in 0..100 {
            assert!(start_jitter(Duration::from_secs(2)) <= Duration::from_millis(250));
        }
        assert_eq!(start_jitter(Duration::ZERO), Duration::ZERO);
    }
}
