//! `sync_registry_targets`: what a reload keeps and what it resets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use lb::config::model::CheckSpec;
use lb::health::{Target, sync_registry_targets};
use lb::state::{Registry, ServerStatus};

fn t(backend: &str, server: &str, addr: &str, weight: u32, backup: bool) -> Target {
    Target {
        backend: backend.into(),
        server: server.into(),
        addr: addr.parse::<SocketAddr>().expect("addr"),
        check: true,
        disabled: false,
        weight,
        backup,
        spec: CheckSpec::default(),
        send_proxy: None,
        shutdown_on_down: false,
    }
}

#[test]
fn reload_keeps_surviving_servers_and_resets_weights() {
    let reg = Registry::new();
    sync_registry_targets(
        &reg,
        &["app", "empty"],
        &[
            t("app", "s1", "127.0.0.1:1001", 2, false),
            t("app", "s2", "127.0.0.1:1002", 1, false),
            t("app", "s3", "127.0.0.1:1003", 1, false),
        ],
        &["web"],
    );
    assert!(
        reg.backend("empty").is_some(),
        "backends without servers exist"
    );
    let app = reg.backend("app").expect("app");
    let names: Vec<&str> = app.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s1", "s2", "s3"], "configuration order");
    assert_eq!(app.server("s1").map(|s| s.weight()), Some(2));

    // Live state accumulates.
    reg.set_status("app", "s1", ServerStatus::Down).expect("s1");
    reg.set_weight("app", "s1", 9).expect("s1");
    let s1 = app.server("s1").cloned().expect("s1");
    s1.counters.requests.store(5, Ordering::Relaxed);
    app.counters.requests.store(50, Ordering::Relaxed);
    app.counters.active_conns.store(3, Ordering::Relaxed);
    let web = reg.frontend("web").expect("web");
    web.requests.store(77, Ordering::Relaxed);

    // Identical reload: the very same objects.
    sync_registry_targets(
        &reg,
        &["app", "empty"],
        &[
            t("app", "s1", "127.0.0.1:1001", 2, false),
            t("app", "s2", "127.0.0.1:1002", 1, false),
            t("app", "s3", "127.0.0.1:1003", 1, false),
        ],
        &["web"],
    );
    let app2 = reg.backend("app").expect("app");
    assert!(Arc::ptr_eq(&app, &app2));
    assert_eq!(s1.weight(), 2, "weight back to the configured one");
    assert_eq!(s1.status(), ServerStatus::Down, "status survives");

    // s2 moves, s3 becomes backup, s4 appears, frontend web stays, api appears.
    sync_registry_targets(
        &reg,
        &["app", "api"],
        &[
            t("app", "s1", "127.0.0.1:1001", 3, false),
            t("app", "s2", "127.0.0.1:2002", 1, false),
            t("app", "s3", "127.0.0.1:1003", 1, true),
            t("app", "s4", "127.0.0.1:1004", 1, false),
        ],
        &["web", "admin"],
    );
    let app3 = reg.backend("app").expect("app");
    assert!(!Arc::ptr_eq(&app, &app3));
    let s1b = app3.server("s1").cloned().expect("s1");
    assert!(Arc::ptr_eq(&s1, &s1b), "s1 carried over");
    assert_eq!(s1b.counters.requests.load(Ordering::Relaxed), 5);
    assert_eq!(s1b.status(), ServerStatus::Down);
    assert_eq!(s1b.weight(), 3);
    assert_eq!(app3.server("s2").map(|s| s.addr.port()), Some(2002));
    assert_eq!(
        app3.server("s2").map(|s| s.status()),
        Some(ServerStatus::Up)
    );
    assert_eq!(app3.server("s3").map(|s| s.backup), Some(true));
    assert!(app3.server("s4").is_some());
    assert_eq!(
        app3.counters.requests.load(Ordering::Relaxed),
        50,
        "cumulative kept"
    );
    assert_eq!(
        app3.counters.active_conns.load(Ordering::Relaxed),
        0,
        "in-flight connections stay on the old object"
    );
    assert!(reg.backend("empty").is_none());
    assert!(reg.backend("api").is_some());
    let web2 = reg.frontend("web").expect("web");
    assert!(Arc::ptr_eq(&web, &web2));
    assert!(reg.frontend("admin").is_some());
}
