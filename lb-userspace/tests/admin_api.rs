//! The admin listener over loopback: pages, JSON, runtime API, reload, tokens, `lb stats`.

mod admin_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use admin_common::{get, lab, post, request};
use lb::admin::{AdminContext, AdminError, AdminServer, reload_fn};
use lb::state::{Registry, ServerStatus};
use serde_json::Value;

fn status(reg: &Registry, b: &str, s: &str) -> ServerStatus {
    reg.backend(b)
        .and_then(|be| be.server(s).map(|x| x.status()))
        .expect("server exists")
}

#[tokio::test]
async fn healthz_and_basic_routing() {
    let lab = lab(None).await;
    let r = get(lab.addr, "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = get(lab.addr, "/nope").await;
    assert_eq!(r.status, 404);
    let r = get(lab.addr, "/").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location").as_deref(), Some("/stats"));
    let r = post(lab.addr, "/stats.json", "").await;
    assert_eq!(r.status, 405);
    assert!(r.header("allow").is_some());
    let r = request(lab.addr, "HEAD", "/healthz", None, &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn stats_json_has_the_contract_fields() {
    let lab = lab(None).await;
    let r = get(lab.addr, "/stats.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let v: Value = serde_json::from_str(&r.body).expect("json");

    let web = &v["frontends"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["requests"], 42);
    assert_eq!(web["active_conns"], 2);
    assert_eq!(web["bytes_in"], 4096);

    let backends = v["backends"].as_array().expect("backends");
    let names: Vec<&str> = backends.iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, ["api", "app"], "sorted by name");
    let app = &backends[1];
    assert_eq!(app["status"], "UP");
    assert_eq!(app["active_servers"], 1);
    assert_eq!(app["backup_servers"], 1);
    let s1 = &app["servers"][0];
    assert_eq!(s1["name"], "s1");
    assert!(s1["addr"].as_str().expect("addr").starts_with("127.0.0.1:"));
    assert_eq!(s1["status"], "UP");
    assert_eq!(s1["weight"], 2);
    assert_eq!(s1["active_conns"], 3);
    assert_eq!(s1["total_conns"], 11);
    assert_eq!(s1["requests"], 7);
    assert_eq!(s1["bytes_in"], 1234);
    assert_eq!(s1["bytes_out"], 5678);
    assert_eq!(s1["responses"]["2xx"], 1);
    assert_eq!(s1["responses"]["5xx"], 1);
    assert_eq!(s1["checked"], true);
    assert_eq!(s1["check"]["status"], "L4OK");
    assert_eq!(s1["check"]["desc"], "Layer4 check passed");
    assert_eq!(s1["check"]["admin"], "ready");
    assert_eq!(app["servers"][1]["backup"], true);

    // L4 packets merged into the server, and the raw L4 snapshot.
    let a1 = &backends[0]["servers"][0];
    assert_eq!(a1["packets"], 900);
    assert_eq!(a1["new_flows"], 9);
    assert_eq!(v["l4"]["vips"][0]["vip"], "203.0.113.10:443");
    assert_eq!(v["l4"]["reasons"][0]["reason"], "deny_src");

    // And the typed form round-trips.
    let doc: lb::admin::StatsDoc = serde_json::from_str(&r.body).expect("typed");
    assert_eq!(doc.backends[1].servers[0].counters.requests, 7);
}

#[tokio::test]
async fn stats_page_is_html_with_refresh_and_colours() {
    let lab = lab(None).await;
    lab.health
        .set_admin("app", "s1", lb::health::AdminState::Drain)
        .expect("drain");
    let r = get(lab.addr, "/stats").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .expect("ct")
            .starts_with("text/html")
    );
    let b = &r.body;
    assert!(b.contains("<meta http-equiv=\"refresh\""), "auto refresh");
    assert!(b.contains("frontend web"));
    assert!(b.contains("backend app"));
    assert!(
        b.contains("<tr class=\"drain\"><td class=\"l\">s1</td>"),
        "{b}"
    );
    assert!(b.contains(">a1<"));
    assert!(b.contains("L4OK"));
    assert!(b.contains("203.0.113.10:443"));
}

#[tokio::test]
async fn runtime_api_sets_state() {
    let lab = lab(None).await;
    let reg = &lab.registry;
    let r = post(lab.addr, "/api/server/app/s1/state", "drain").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["status"], "DRAIN");
    assert_eq!(v["admin"], "drain");
    assert_eq!(status(reg, "app", "s1"), ServerStatus::Drain);

    let r = post(lab.addr, "/api/server/app/s1/state", "maint\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(status(reg, "app", "s1"), ServerStatus::Maint);

    let r = post(lab.addr, "/api/server/app/s1/state", "ready").await;
    assert_eq!(r.status, 200);
    assert_eq!(status(reg, "app", "s1"), ServerStatus::Up);

    // Unchecked servers too.
    let r = post(lab.addr, "/api/server/api/a1/state", "MAINT").await;
    assert_eq!(r.status, 200);
    assert_eq!(status(reg, "api", "a1"), ServerStatus::Maint);

    let r = get(lab.addr, "/api/server/api/a1").await;
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["status"], "MAINT");

    // Errors.
    let r = post(lab.addr, "/api/server/app/s1/state", "up").await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("expected ready, drain or maint"),
        "{}",
        r.body
    );
    assert_eq!(status(reg, "app", "s1"), ServerStatus::Up, "unchanged");
    let r = post(lab.addr, "/api/server/nope/s1/state", "drain").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no backend named nope"), "{}", r.body);
    let r = post(lab.addr, "/api/server/app/nope/state", "drain").await;
    assert_eq!(r.status, 404);
    let r = get(lab.addr, "/api/server/app/s1/state").await;
    assert_eq!(r.status, 405);
    let r = post(lab.addr, "/api/server/app/s1/colour", "red").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn runtime_api_sets_weight_and_notifies() {
    let lab = lab(None).await;
    let mut rx = lab.registry.subscribe();
    rx.borrow_and_update();
    let r = post(lab.addr, "/api/server/app/s1/weight", "17").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["weight"], 17);
    let w = lab
        .registry
        .backend("app")
        .and_then(|b| b.server("s1").map(|s| s.weight()));
    assert_eq!(w, Some(17));
    assert!(rx.has_changed().expect("alive"), "subscribers notified");

    // HAProxy's N%: relative to the configured weight (2).
    let r = post(lab.addr, "/api/server/app/s1/weight", "50%").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["weight"], 1);
    let r = post(lab.addr, "/api/server/app/s1/weight", "150%").await;
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["weight"], 3);

    for bad in ["", "abc", "-1", "300", "1.5", "%", "x%", "99999%"] {
        let r = post(lab.addr, "/api/server/app/s1/weight", bad).await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
    }
    let r = post(lab.addr, "/api/server/app/zz/weight", "1").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn reload_reports_success_and_error_text() {
    let registry = Arc::new(Registry::new());
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let ctx = AdminContext::new(registry).with_reload(reload_fn(move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Ok(())
            } else {
                Err("lb.toml:3:1: backend.x: unknown key \"colour\"".to_owned())
            }
        }
    }));
    let srv = AdminServer::bind("127.0.0.1:0".parse().expect("a"), None, ctx)
        .await
        .expect("bind");
    let addr = srv.local_addr();

    let r = get(addr, "/api/reload").await;
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["result"], "never");

    let r = post(addr, "/api/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["result"], "ok");

    let r = post(addr, "/api/reload", "").await;
    assert_eq!(r.status, 500);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["result"], "error");
    assert_eq!(v["error"], "lb.toml:3:1: backend.x: unknown key \"colour\"");

    let r = get(addr, "/api/reload").await;
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["result"], "error");
    assert!(v["time"].as_u64().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn reload_without_callback_is_501() {
    let ctx = AdminContext::new(Arc::new(Registry::new()));
    let srv = AdminServer::bind("127.0.0.1:0".parse().expect("a"), None, ctx)
        .await
        .expect("bind");
    let r = post(srv.local_addr(), "/api/reload", "").await;
    assert_eq!(r.status, 501);
}

#[tokio::test]
async fn non_loopback_without_token_is_refused() {
    let ctx = AdminContext::new(Arc::new(Registry::new()));
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let err = AdminServer::bind(addr.parse().expect("a"), None, ctx.clone())
            .await
            .expect_err("must refuse");
        assert!(matches!(err, AdminError::TokenRequired(_)), "{err}");
        assert!(err.to_string().contains("admin_token"), "{err}");
        // An empty token is no token.
        let err = AdminServer::bind(addr.parse().expect("a"), Some(String::new()), ctx.clone())
            .await
            .expect_err("must refuse");
        assert!(matches!(err, AdminError::TokenRequired(_)));
    }
    // With a token it starts (bound to all addresses; only loopback is used here).
    let srv = AdminServer::bind("0.0.0.0:0".parse().expect("a"), Some("s3cret".into()), ctx)
        .await
        .expect("starts with a token");
    let port = srv.local_addr().port();
    let local = format!("127.0.0.1:{port}").parse().expect("a");
    let r = get(local, "/healthz").await;
    assert_eq!(r.status, 401);
    let r = request(
        local,
        "GET",
        "/healthz",
        None,
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn token_is_required_on_every_request() {
    let lab = lab(Some("t0ken")).await;
    for (method, path) in [
        ("GET", "/stats"),
        ("GET", "/stats.json"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("POST", "/api/server/app/s1/state"),
        ("POST", "/api/reload"),
    ] {
        let r = request(lab.addr, method, path, Some("drain"), &[]).await;
        assert_eq!(r.status, 401, "{method} {path}");
        assert!(r.header("www-authenticate").is_some());
        let r = request(
            lab.addr,
            method,
            path,
            Some("drain"),
            &[("Authorization", "Bearer wrong")],
        )
        .await;
        assert_eq!(r.status, 401, "{method} {path} wrong token");
        let r = request(
            lab.addr,
            method,
            path,
            Some("drain"),
            &[("Authorization", "Basic dDBrZW4=")],
        )
        .await;
        assert_eq!(r.status, 401, "{method} {path} wrong scheme");
    }
    assert_eq!(
        status(&lab.registry, "app", "s1"),
        ServerStatus::Up,
        "nothing changed"
    );
    let r = request(
        lab.addr,
        "POST",
        "/api/server/app/s1/state",
        Some("drain"),
        &[("Authorization", "bearer t0ken")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Drain);
}

#[tokio::test]
async fn lb_stats_prints_a_table_or_json() {
    let lab = lab(Some("tok")).await;
    let addr = lab.addr;
    let (code, out) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let code = lb::admin::client::run_stats(addr, false, Some("tok"), &mut out);
        (code, String::from_utf8(out).expect("utf8"))
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}");
    let header = out
        .lines()
        .find(|l| l.starts_with("BACKEND"))
        .expect("backend header");
    assert!(header.contains("SERVER") && header.contains("STATUS") && header.contains("WEIGHT"));
    let s1 = out
        .lines()
        .find(|l| l.trim_start().starts_with("s1"))
        .expect("s1 row");
    assert!(s1.contains("UP") && s1.contains("L4OK"), "{s1}");
    // Columns align: STATUS starts at the same offset in the header and the rows.
    let col = header.find("STATUS").expect("col");
    let s1_line = out.lines().find(|l| l.contains("  s1")).expect("s1");
    assert_eq!(&s1_line[col..col + 2], "UP", "{out}");
    assert!(out.contains("FRONTEND") && out.contains("web"));

    let (code, out) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let code = lb::admin::client::run_stats(addr, true, Some("tok"), &mut out);
        (code, String::from_utf8(out).expect("utf8"))
    })
    .await
    .expect("join");
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(v["backends"][1]["servers"][0]["name"], "s1");

    // Wrong token and no server: exit 1.
    let code = tokio::task::spawn_blocking(move || {
        lb::admin::client::run_stats(addr, false, Some("bad"), &mut Vec::new())
    })
    .await
    .expect("join");
    assert_eq!(code, 1);
    drop(lab);
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = l.local_addr().expect("addr");
    drop(l);
    let code = tokio::task::spawn_blocking(move || {
        lb::admin::client::run_stats(dead, false, None, &mut Vec::new())
    })
    .await
    .expect("join");
    assert_eq!(code, 1);
}

#[tokio::test]
async fn stats_csv_uses_haproxy_columns() {
    let lab = lab(None).await;
    for path in ["/stats;csv", "/stats.csv"] {
        let r = get(lab.addr, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type")
                .expect("ct")
                .starts_with("text/csv")
        );
        let mut lines = r.body.lines();
        let header = lines.next().expect("header");
        assert!(
            header.starts_with("# pxname,svname,qcur,qmax,scur,"),
            "{header}"
        );
        let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
        let col = |name: &str| cols.iter().position(|c| *c == name).expect("column");
        assert_eq!(col("status"), 17);
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let row = |px: &str, sv: &str| {
            rows.iter()
                .find(|r| r[0] == px && r[1] == sv)
                .unwrap_or_else(|| panic!("row {px}/{sv}"))
        };
        let fe = row("web", "FRONTEND");
        assert_eq!(fe[col("status")], "OPEN");
        assert_eq!(fe[col("req_tot")], "42");
        let s1 = row("app", "s1");
        assert_eq!(s1[col("status")], "UP");
        assert_eq!(s1[col("weight")], "2");
        assert_eq!(s1[col("scur")], "3");
        assert_eq!(s1[col("check_status")], "L4OK");
        assert_eq!(s1[col("type")], "2");
        assert_eq!(row("app", "s2")[col("status")], "no check");
        assert_eq!(row("app", "s2")[col("bck")], "1");
        let be = row("app", "BACKEND");
        assert_eq!(be[col("status")], "UP");
        assert_eq!(be[col("type")], "1");
    }
}
