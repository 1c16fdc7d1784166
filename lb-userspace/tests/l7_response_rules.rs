//! `http-response` rules over real sockets: the backend's rules run before the
//! frontend's, `allow` ends only its own section's list, `set-header`/`add-header` values
//! may use response fetches, `set-status` changes the status and its reason phrase, and
//! `deny` replaces the server's response with an error page. Loopback only; bounded waits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use l7_support::*;
use lb::config::model::*;
use lb::l7::acl::AclSet;

fn rule(action: HttpAction, cond: Option<lb::l7::acl::Condition>) -> HttpRule {
    HttpRule { action, cond }
}

fn set(name: &str, value: &str) -> HttpAction {
    HttpAction::SetHeader {
        name: name.into(),
        value: value.into(),
    }
}

#[tokio::test]
async fn response_rules_rewrite_deny_and_run_backend_first() {
    let app = echo("app").await;
    let none = AclSet::default();
    let mut be = backend("be", Balance::RoundRobin, vec![server("a", app.addr)]);
    acl(&mut be.acls, "server_error status ge 500");
    be.http_response = vec![
        rule(set("X-Be-Order", "backend"), None),
        rule(
            HttpAction::SetStatus {
                status: 503,
                reason: Some("Backend Down".into()),
            },
            Some(cond("if server_error", &be.acls)),
        ),
        rule(
            HttpAction::Deny { status: 502 },
            Some(cond("if { res.hdr(cache-control) -m sub secret }", &none)),
        ),
        rule(HttpAction::Allow, Some(cond("if { path_beg /raw }", &none))),
        rule(
            HttpAction::AddHeader {
                name: "X-After-Allow".into(),
                value: "1".into(),
            },
            None,
        ),
    ];
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.http_response = vec![
        rule(set("Strict-Transport-Security", "max-age=31536000"), None),
        rule(
            HttpAction::DelHeader {
                name: "X-Server".into(),
            },
            None,
        ),
        // The backend's rules ran first: their header is there to read.
        rule(set("X-Order", "%[res.hdr(x-be-order)]-frontend"), None),
        rule(set("X-Status", "%[status]"), None),
    ];
    let (h, reg) = start(config(vec![fe], vec![be]));
    let addr = addr_of(&h, "web");

    let r = get(addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.server(), "app");
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    assert!(r.header("x-server").is_none(), "{:?}", r.headers);
    assert_eq!(r.header("x-order").as_deref(), Some("backend-frontend"));
    assert_eq!(r.header("x-after-allow").as_deref(), Some("1"));
    assert_eq!(r.header("x-status").as_deref(), Some("200"));

    // A 502 from the server becomes 503 with its own reason phrase; the frontend's rules
    // see the new status; the body is the server's.
    let out = raw(
        addr,
        b"GET /?status=502 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 503 Backend Down\r\n"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("\r\nx-status: 503\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\n\r\napp\n"), "{out}");

    // Denied: the client gets the 502 page, nothing of the server's response.
    let r = get(addr, "/?cc=secret-data", &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.body.contains("502 Bad Gateway"), "{}", r.body);
    assert!(r.header("cache-control").as_deref() != Some("secret-data"));
    assert!(
        r.header("x-order").is_none(),
        "denied before the frontend's rules"
    );

    // `allow` in the backend ends the backend's list only.
    let r = get(addr, "/raw", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-after-allow").is_none());
    assert_eq!(r.header("x-order").as_deref(), Some("backend-frontend"));
    assert!(r.header("strict-transport-security").is_some());

    // Counters and logs see the status the client got.
    let be = reg.backend("be").unwrap();
    let fives = be.counters.responses[4].load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fives, 2, "the 503 and the denied 502");
}
