//! The check scheduler end to end: real servers on loopback, the registry, admin states,
//! reloads, logs.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb::config::model::{CheckKind, CheckSpec, LogFormat};
use lb::health::{AdminState, HealthHandle, Target};
use lb::state::{Registry, ServerStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP server whose answer (200 or 503) is switched by a flag.
struct Switch {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
}

async fn switch_server(healthy: bool) -> Switch {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let flag = Arc::new(AtomicBool::new(healthy));
    let f = flag.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let f = f.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp: &[u8] = if f.load(Ordering::SeqCst) {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                };
                let _ = s.write_all(resp).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Switch {
        addr,
        healthy: flag,
    }
}

fn http_spec(interval_ms: u64, rise: u32, fall: u32) -> CheckSpec {
    CheckSpec {
        interval: Duration::from_millis(interval_ms),
        rise,
        fall,
        timeout: Duration::from_millis(500),
        kind: CheckKind::Http {
            method: "GET".into(),
            path: "/health".into(),
            host: None,
            expect: (200, 399),
        },
    }
}

fn target(backend: &str, server: &str, addr: SocketAddr, spec: &CheckSpec) -> Target {
    Target {
        backend: backend.into(),
        server: server.into(),
        addr,
        check: true,
        disabled: false,
        weight: 1,
        backup: false,
        spec: spec.clone(),
        send_proxy: None,
        shutdown_on_down: false,
    }
}

fn registry_with(servers: &[(&str, &str, SocketAddr)]) -> Arc<Registry> {
    let reg = Arc::new(Registry::new());
    fill(&reg, servers);
    reg
}

/// Rebuilds the registry contents the way a reload does (surviving servers carried over).
fn fill(reg: &Registry, servers: &[(&str, &str, SocketAddr)]) {
    let spec = CheckSpec::default();
    let targets: Vec<Target> = servers
        .iter()
        .map(|(b, s, a)| target(b, s, *a, &spec))
        .collect();
    let mut backends: Vec<&str> = servers.iter().map(|(b, _, _)| *b).collect();
    backends.dedup();
    lb::health::sync_registry_targets(reg, &backends, &targets, &[]);
}

fn status(reg: &Registry, b: &str, s: &str) -> ServerStatus {
    reg.backend(b)
        .and_then(|be| be.server(s).map(|x| x.status()))
        .expect("server exists")
}

async fn wait_for(reg: &Registry, b: &str, s: &str, want: ServerStatus, within: Duration) {
    let deadline = Instant::now() + within;
    while status(reg, b, s) != want {
        assert!(
            Instant::now() < deadline,
            "{b}/{s} did not become {want:?} within {within:?} (is {:?})",
            status(reg, b, s)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn down_after_fall_failures_and_up_after_rise_successes() {
    let srv = switch_server(true).await;
    let reg = registry_with(&[("be", "s1", srv.addr)]);
    let health = HealthHandle::new(reg.clone());
    let spec = http_spec(50, 2, 3);
    health
        .apply_targets(&[target("be", "s1", srv.addr, &spec)])
        .expect("apply");
    assert_eq!(health.running_checks(), 1);
    // Let a few checks pass: fully up.
    let sh = health.server("be", "s1").expect("known");
    let deadline = Instant::now() + Duration::from_secs(3);
    while sh.info().checks < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status(&reg, "be", "s1"), ServerStatus::Up);
    assert_eq!(sh.info().progress, "UP");

    // Fail: fall = 3 checks at 50 ms.
    srv.healthy.store(false, Ordering::SeqCst);
    let t0 = Instant::now();
    wait_for(&reg, "be", "s1", ServerStatus::Down, Duration::from_secs(3)).await;
    let took = t0.elapsed();
    let info = sh.info();
    assert!(info.failures >= 3, "{info:?}");
    assert!(
        took >= Duration::from_millis(90),
        "went DOWN after {took:?}: fewer than fall=3 checks"
    );
    assert_eq!(info.last.as_ref().map(|o| o.code), Some(Some(503)));
    assert_eq!(info.up_down, 1);

    // Recover: rise = 2.
    srv.healthy.store(true, Ordering::SeqCst);
    wait_for(&reg, "be", "s1", ServerStatus::Up, Duration::from_secs(3)).await;
    // last_check_us is recorded in the registry.
    let s = reg
        .backend("be")
        .and_then(|b| b.server("s1").cloned())
        .expect("s1");
    assert!(s.last_check_us.load(Ordering::Relaxed) > 0);
    health.stop();
    assert_eq!(health.running_checks(), 0);
}

#[tokio::test]
async fn registry_change_follows_the_deciding_check_within_100ms() {
    let srv = switch_server(true).await;
    let reg = registry_with(&[("be", "s1", srv.addr)]);
    let health = HealthHandle::new(reg.clone());
    // fall = 1: the first failed check decides.
    let spec = http_spec(30, 1, 1);
    health
        .apply_targets(&[target("be", "s1", srv.addr, &spec)])
        .expect("apply");
    let sh = health.server("be", "s1").expect("known");
    let mut rx = reg.subscribe();
    rx.borrow_and_update();
    srv.healthy.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            rx.changed().await.expect("registry alive");
            if status(&reg, "be", "s1") == ServerStatus::Down {
                break;
            }
        }
    })
    .await
    .expect("notified");
    let noticed = std::time::SystemTime::now();
    let decided = sh.info().last_at.expect("a check ran");
    let lag = noticed.duration_since(decided).unwrap_or_default();
    assert!(lag < Duration::from_millis(100), "notification lag {lag:?}");
}

#[tokio::test]
async fn unreachable_server_goes_down_on_first_failure() {
    // HAProxy's default init-state: UP, but the first failed check marks it DOWN.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = l.local_addr().expect("addr");
    drop(l);
    let reg = registry_with(&[("be", "s1", dead)]);
    let health = HealthHandle::new(reg.clone());
    let mut spec = http_spec(1000, 2, 3);
    spec.kind = CheckKind::Tcp;
    health
        .apply_targets(&[target("be", "s1", dead, &spec)])
        .expect("apply");
    assert_eq!(status(&reg, "be", "s1"), ServerStatus::Up, "starts UP");
    wait_for(
        &reg,
        "be",
        "s1",
        ServerStatus::Down,
        Duration::from_millis(800),
    )
    .await;
    let info = health.server("be", "s1").expect("known").info();
    assert_eq!(info.checks, 1, "one check was enough");
}

#[tokio::test]
async fn maint_and_drain_are_not_overridden_by_checks() {
    let srv = switch_server(true).await;
    let reg = registry_with(&[("be", "s1", srv.addr)]);
    let health = HealthHandle::new(reg.clone());
    let spec = http_spec(30, 2, 2);
    health
        .apply_targets(&[target("be", "s1", srv.addr, &spec)])
        .expect("apply");
    let sh = health.server("be", "s1").expect("known");

    assert_eq!(
        health.set_admin("be", "s1", AdminState::Maint),
        Ok(ServerStatus::Maint)
    );
    assert_eq!(status(&reg, "be", "s1"), ServerStatus::Maint);
    srv.healthy.store(false, Ordering::SeqCst);
    let before = sh.info().checks;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let info = sh.info();
    assert!(info.checks >= before + 3, "checks keep running in MAINT");
    assert_eq!(info.op, lb::health::OpState::Down, "and keep recording");
    assert_eq!(status(&reg, "be", "s1"), ServerStatus::Maint);

    // MAINT → READY follows the last check results.
    assert_eq!(
        health.set_admin("be", "s1", AdminState::Ready),
        Ok(ServerStatus::Down)
    );
    srv.healthy.store(true, Ordering::SeqCst);
    wait_for(&reg, "be", "s1", ServerStatus::Up, Duration::from_secs(3)).await;

    // DRAIN survives passing checks.
    health
        .set_admin("be", "s1", AdminState::Drain)
        .expect("drain");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(status(&reg, "be", "s1"), ServerStatus::Drain);

    // Unknown names.
    assert!(health.set_admin("nope", "s1", AdminState::Ready).is_err());
    assert!(health.set_admin("be", "nope", AdminState::Ready).is_err());
}

#[tokio::test]
async fn reload_keeps_state_of_surviving_servers() {
    let a = switch_server(false).await;
    let b = switch_server(true).await;
    let reg = registry_with(&[("be", "a", a.addr)]);
    let health = HealthHandle::new(reg.clone());
    let spec = http_spec(30, 3, 1);
    health
        .apply_targets(&[target("be", "a", a.addr, &spec)])
        .expect("apply");
    wait_for(&reg, "be", "a", ServerStatus::Down, Duration::from_secs(2)).await;
    health
        .set_admin("be", "a", AdminState::Drain)
        .expect("drain");
    let checks_before = health.server("be", "a").expect("a").info().checks;

    // Reload: "a" survives, "b" is new. The registry is rebuilt first, carrying "a" over.
    let servers = [("be", "a", a.addr), ("be", "b", b.addr)];
    fill(&reg, &servers);
    health
        .apply_targets(&[
            target("be", "a", a.addr, &spec),
            target("be", "b", b.addr, &spec),
        ])
        .expect("reload");
    assert_eq!(health.running_checks(), 2);
    let info = health.server("be", "a").expect("a").info();
    assert!(info.checks >= checks_before, "history kept");
    assert_eq!(info.admin, AdminState::Drain, "admin state kept");
    assert_eq!(
        status(&reg, "be", "a"),
        ServerStatus::Down,
        "still DOWN after reload"
    );
    assert_eq!(status(&reg, "be", "b"), ServerStatus::Up);

    // Even if the reload created a fresh ServerState, the status is re-published.
    let reg2 = registry_with(&servers);
    let health2 = HealthHandle::new(reg2.clone());
    health2
        .apply_targets(&[target("be", "a", a.addr, &spec)])
        .expect("apply");
    assert_eq!(
        status(&reg2, "be", "a"),
        ServerStatus::Up,
        "fresh handle starts UP"
    );
    drop(health2);

    // Reload removing "a": its task stops.
    fill(&reg, &[("be", "b", b.addr)]);
    health
        .apply_targets(&[target("be", "b", b.addr, &spec)])
        .expect("reload");
    assert_eq!(health.running_checks(), 1);
    assert!(health.server("be", "a").is_none());
}

#[tokio::test]
async fn disabled_server_starts_in_maint_and_unchecked_follows_admin_only() {
    let srv = switch_server(false).await;
    let reg = registry_with(&[("be", "d", srv.addr), ("be", "u", srv.addr)]);
    let health = HealthHandle::new(reg.clone());
    let spec = http_spec(30, 1, 1);
    let mut d = target("be", "d", srv.addr, &spec);
    d.disabled = true;
    let mut u = target("be", "u", srv.addr, &spec);
    u.check = false;
    health.apply_targets(&[d, u]).expect("apply");
    assert_eq!(health.running_checks(), 1);
    assert_eq!(status(&reg, "be", "d"), ServerStatus::Maint);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        status(&reg, "be", "u"),
        ServerStatus::Up,
        "unchecked stays UP"
    );
    assert_eq!(
        health.set_admin("be", "u", AdminState::Drain),
        Ok(ServerStatus::Drain)
    );
    assert_eq!(
        health.server("be", "u").expect("u").info().progress,
        "no check"
    );
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn transitions_are_logged_like_haproxy() {
    let buf = Buf::default();
    let sub =
        lb::logging::subscriber(LogFormat::Haproxy, Some("info"), buf.clone()).expect("subscriber");
    let _guard = tracing::subscriber::set_default(sub);

    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = l.local_addr().expect("addr");
    drop(l);
    let reg = registry_with(&[("be", "s1", dead)]);
    let health = HealthHandle::new(reg.clone());
    let mut spec = http_spec(1000, 2, 3);
    spec.kind = CheckKind::Tcp;
    health
        .apply_targets(&[target("be", "s1", dead, &spec)])
        .expect("apply");
    wait_for(&reg, "be", "s1", ServerStatus::Down, Duration::from_secs(2)).await;
    let out = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
    assert!(
        out.contains(
            "[WARNING]  (".to_owned().as_str()
        ) && out.contains(
            "Server be/s1 is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: "
        ),
        "{out}"
    );
    assert!(out.contains("0 active and 0 backup servers left."), "{out}");
    assert!(
        out.contains("[ALERT]") && out.contains("backend be has no server available!"),
        "{out}"
    );
}
