//! The admin API cannot be driven cross-site (issue #19 item 15): state-changing requests
//! from a foreign web page (cross-site form or `fetch`, DNS rebinding) are refused, the
//! legitimate clients (`lb::admin::client`, curl with the header, same-origin pages) pass,
//! and `lb check` refuses what `lb run` refuses about the listener.

mod admin_common;

use std::path::Path;
use std::process::Command;

use admin_common::{get, lab, post, request};
use lb::admin::{AdminContext, AdminServer};
use lb::config::{LoadOptions, load_str};
use lb::state::{Registry, ServerStatus};

fn status(reg: &Registry, b: &str, s: &str) -> ServerStatus {
    reg.backend(b)
        .and_then(|be| be.server(s).map(|x| x.status()))
        .expect("server exists")
}

const STATE: &str = "/api/server/app/s1/state";

#[tokio::test]
async fn cross_site_form_post_is_refused() {
    let lab = lab(None).await;
    // What a foreign page's <form enctype="text/plain"> or no-cors fetch sends.
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("maint"),
        &[
            ("Host", "evil.example"),
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Host `evil.example`"), "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Up);

    // The same with this listener's Host: the Origin gives it away.
    let host = lab.addr.to_string();
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("maint"),
        &[
            ("Host", &host),
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
            ("X-LB-Admin", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body
            .contains("cross-site request (Origin `http://evil.example`)"),
        "{}",
        r.body
    );
    // A sandboxed page sends `Origin: null`.
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("maint"),
        &[("Origin", "null"), ("X-LB-Admin", "1")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // An origin on another port of the same host is another origin.
    let other_port = format!("http://127.0.0.1:{}", lab.addr.port().wrapping_add(1));
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("maint"),
        &[("Origin", &other_port), ("X-LB-Admin", "1")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Browsers that send Fetch metadata say so even without Origin.
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("maint"),
        &[("Sec-Fetch-Site", "cross-site"), ("X-LB-Admin", "1")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Sec-Fetch-Site"), "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Up);
}

#[tokio::test]
async fn dns_rebinding_host_is_refused() {
    let lab = lab(None).await;
    // The attacker's name resolves to 127.0.0.1: the browser sends its name, and the page is
    // same-origin with itself, so no Origin is foreign. Host is what tells.
    let port = lab.addr.port();
    for host in [
        format!("rebind.evil.example:{port}"),
        "rebind.evil.example".to_owned(),
        format!("127.0.0.1.evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
    ] {
        for path in [STATE, "/api/server/app/s1/weight", "/api/reload"] {
            let body = if path.ends_with("weight") {
                "0"
            } else {
                "maint"
            };
            let r = request(
                lab.addr,
                "POST",
                path,
                Some(body),
                &[
                    ("Host", &host),
                    ("Origin", &format!("http://{host}")),
                    ("Content-Type", "application/json"),
                ],
            )
            .await;
            assert_eq!(r.status, 403, "{host} {path}: {}", r.body);
        }
    }
    let r = request(lab.addr, "POST", STATE, Some("maint"), &[("Host", "")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Up);
    let w = lab
        .registry
        .backend("app")
        .and_then(|b| b.server("s1").map(|s| s.weight()));
    assert_eq!(w, Some(2), "weight unchanged");
}

#[tokio::test]
async fn simple_requests_need_the_custom_header() {
    let lab = lab(None).await;
    for ct in [
        None,
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        let r = request(lab.addr, "POST", STATE, Some("drain"), &headers).await;
        assert_eq!(r.status, 403, "{ct:?}: {}", r.body);
        assert!(r.body.contains("x-lb-admin: 1"), "{}", r.body);
    }
    let r = request(lab.addr, "POST", "/api/reload", Some(""), &[]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Up);
}

#[tokio::test]
async fn legitimate_clients_pass() {
    let lab = lab(None).await;
    let port = lab.addr.port();
    // curl -H 'X-LB-Admin: 1' -d drain (form content type plus the header).
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("drain"),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-LB-Admin", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Drain);
    // A non-simple content type (needs a CORS preflight, which the API never grants).
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("maint"),
        &[("Content-Type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Maint);
    // The stats page itself (same origin), and `localhost` on a loopback listener.
    let same = format!("http://127.0.0.1:{port}");
    let localhost = format!("localhost:{port}");
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("ready"),
        &[
            ("Host", &localhost),
            ("Origin", &format!("http://{localhost}")),
            ("Sec-Fetch-Site", "same-origin"),
            ("X-LB-Admin", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        lab.addr,
        "POST",
        STATE,
        Some("drain"),
        &[("Origin", &same), ("X-LB-Admin", "1")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Drain);
    // The test helper's legitimate path, and reads from anywhere.
    let r = post(lab.addr, "/api/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        lab.addr,
        "GET",
        "/stats.json",
        None,
        &[("Host", "evil.example"), ("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(r.status, 200, "GETs change nothing and stay open");
    assert_eq!(get(lab.addr, "/healthz").await.status, 200);

    // The blocking client `lb` uses.
    let addr = lab.addr;
    let (code, body) = tokio::task::spawn_blocking(move || {
        lb::admin::client::send(addr, "POST", STATE, "ready", None).expect("send")
    })
    .await
    .expect("join");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Up);
}

#[tokio::test]
async fn configured_names_are_accepted() {
    let lab = lab(None).await;
    let srv = AdminServer::bind_with_hosts(
        "127.0.0.1:0".parse().expect("a"),
        None,
        vec!["LB1.example.net".into()],
        lab.ctx.clone(),
    )
    .await
    .expect("bind");
    let addr = srv.local_addr();
    let host = format!("lb1.example.net:{}", addr.port());
    let r = request(
        addr,
        "POST",
        STATE,
        Some("maint"),
        &[
            ("Host", &host),
            ("Origin", &format!("http://{host}")),
            ("X-LB-Admin", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Maint);
    let r = request(
        addr,
        "POST",
        STATE,
        Some("ready"),
        &[
            ("Host", &format!("lb2.example.net:{}", addr.port())),
            ("X-LB-Admin", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Maint);
}

#[tokio::test]
async fn token_listener_still_checks_host_and_origin() {
    let ctx = AdminContext::new(std::sync::Arc::new(Registry::new()))
        .with_reload(lb::admin::reload_fn(|| async { Ok(()) }));
    let srv = AdminServer::bind("127.0.0.1:0".parse().expect("a"), Some("tok".into()), ctx)
        .await
        .expect("bind");
    let addr = srv.local_addr();
    let auth = ("Authorization", "Bearer tok");
    // The token marks the request as not a simple one: no custom header needed.
    let r = request(addr, "POST", "/api/reload", Some(""), &[auth]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        addr,
        "POST",
        "/api/reload",
        Some(""),
        &[auth, ("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = request(
        addr,
        "POST",
        "/api/reload",
        Some(""),
        &[auth, ("Host", "evil.example")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

fn load(text: &str) -> Result<lb::config::model::Config, Vec<String>> {
    load_str(Path::new("t.toml"), text, &LoadOptions::default())
        .map(|(c, _)| c)
        .map_err(|e| {
            e.diagnostics
                .iter()
                .map(ToString::to_string)
                .filter(|d| !d.contains(": warning: "))
                .collect()
        })
}

#[test]
fn config_admin_keys() {
    let c = load("[global]\nadmin_hosts = [\"LB1.example.net\", \"lb\"]\n").expect("loads");
    assert_eq!(c.global.admin_hosts, ["lb1.example.net", "lb"]);
    let c = load("[global]\nadmin_hosts = \"lb1\"\n").expect("one string");
    assert_eq!(c.global.admin_hosts, ["lb1"]);
    let e = load("[global]\nadmin_hosts = [\"lb1:9100\"]\n").expect_err("port");
    assert_eq!(
        e,
        [
            "t.toml:2:16: global.admin_hosts[0]: expected a host name without port, e.g. \"lb1.example.net\""
        ]
    );
    // An empty token is refused everywhere: lb run would take it for none.
    for admin in ["127.0.0.1:9100", "0.0.0.0:9100"] {
        let e = load(&format!(
            "[global]\nadmin = \"{admin}\"\nadmin_token = \"\"\n"
        ))
        .expect_err("empty token");
        assert!(
            e.iter().any(|l| l
                == "t.toml:3:15: global.admin_token: `admin_token` is empty: set a secret, or remove the key on a loopback `admin`"),
            "{e:?}"
        );
    }
    // IPv4-mapped loopback is loopback for check as for run.
    load("[global]\nadmin = \"[::ffff:127.0.0.1]:9100\"\n").expect("mapped loopback");
}

/// `lb check` and `lb run` refuse the same listener settings, with the same words.
#[test]
fn check_and_run_agree() {
    let dir = std::env::temp_dir().join(format!("lb-admin-agree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let lb = env!("CARGO_BIN_EXE_lb");
    for (name, global) in [
        ("empty", "admin = \"0.0.0.0:19100\"\nadmin_token = \"\""),
        ("blank", "admin = \"127.0.0.1:19100\"\nadmin_token = \"  \""),
        ("none", "admin = \"[::]:19100\""),
    ] {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[global]\n{global}\n[defaults]\nmode = \"http\"\n\
                 timeout = {{ client = \"5s\", connect = \"5s\", server = \"5s\" }}\n\
                 [listen.l]\nbind = \"127.0.0.1:0\"\nserver = \"s 127.0.0.1:9\"\n"
            ),
        )
        .expect("write");
        let check = Command::new(lb)
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("lb check");
        let run = Command::new(lb)
            .args(["run", "-c"])
            .arg(&path)
            .output()
            .expect("lb run");
        assert!(!check.status.success(), "{name}: lb check accepted it");
        assert!(!run.status.success(), "{name}: lb run accepted it");
        let out = String::from_utf8_lossy(&check.stdout).into_owned()
            + &String::from_utf8_lossy(&check.stderr);
        let err = String::from_utf8_lossy(&run.stderr).into_owned();
        let line = out
            .lines()
            .find(|l| l.contains("admin"))
            .unwrap_or_else(|| panic!("{name}: {out}"));
        assert!(
            err.contains(line),
            "{name}: run says {err:?}, check {line:?}"
        );
        assert!(err.contains("nothing was started"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
