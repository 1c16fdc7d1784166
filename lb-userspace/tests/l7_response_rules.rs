//! `http-response` rules over real sockets: the backend's rules run before the
//! frontend's, `allow` ends only its own section's list, `set-header`/`add-header` values
//! may use response fetches, `set-status` changes the status and its reason phrase, and
//! `deny` replaces the server's response with an error page. Loopback only; bounded waits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use l7_support::*;
use lb::acl::AclSet;
use lb::config::model::*;

fn rule(action: HttpAction, cond: Option<lb::acl::Condition>) -> HttpRule {
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

/// Request rewrites and `return`, as HAProxy: `replace-path` and `replace-header` replace
/// the whole matched value with the template (groups `\1`…), `replace-value` works per
/// comma-separated value, `set-path` keeps the query, `set-query ""` drops it, later
/// rules and `use_backend` see the rewritten request, and `return` answers without a
/// server.
#[tokio::test]
async fn request_rewrites_and_return() {
    let app = echo("app").await;
    let other = echo("other").await;
    let none = AclSet::default();
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    let act = |a: HttpAction, c: Option<&str>| rule(a, c.map(|c| cond(c, &none)));
    fe.http_request = vec![
        act(
            HttpAction::Return(HttpReturn {
                status: 200,
                content_type: Some("text/plain".into()),
                body: Some("pong from %[src] for %[path]".into()),
                headers: vec![("X-Ret".into(), "yes".into())],
            }),
            Some("if { path /ping }"),
        ),
        act(
            HttpAction::Return(HttpReturn {
                status: 204,
                content_type: None,
                body: None,
                headers: Vec::new(),
            }),
            Some("if { path /empty }"),
        ),
        act(
            HttpAction::ReplacePath {
                regex: "^/api/(v[0-9]+)/(.*)".into(),
                replace: "/\\2/\\1".into(),
            },
            None,
        ),
        act(
            HttpAction::SetPath {
                value: "/new%[path]".into(),
            },
            Some("if { path_beg /old/ }"),
        ),
        act(
            HttpAction::SetQuery {
                value: "from=%[src]".into(),
            },
            Some("if { path_beg /q/ }"),
        ),
        act(
            HttpAction::SetQuery { value: "".into() },
            Some("if { path_beg /noq/ }"),
        ),
        act(
            HttpAction::SetPath {
                value: "/bad path".into(),
            },
            Some("if { path /broken }"),
        ),
        act(
            HttpAction::ReplaceHeader {
                name: "X-Agent".into(),
                regex: "^curl/([0-9.]+)$".into(),
                replace: "curl-\\1 via %[dst_port,lower]".into(),
                each_value: false,
            },
            None,
        ),
        act(
            HttpAction::ReplaceHeader {
                name: "X-List".into(),
                regex: "^a$".into(),
                replace: "z".into(),
                each_value: true,
            },
            None,
        ),
    ];
    fe.http_response = vec![act(
        HttpAction::ReplaceHeader {
            name: "X-Server".into(),
            regex: "^(.*)$".into(),
            replace: "srv-\\1".into(),
            each_value: false,
        },
        None,
    )];
    // The rewritten path routes: /new/… goes to `other`.
    fe.use_backend = vec![UseBackend {
        backend: "other".into(),
        cond: cond("if { path_beg /new/ }", &none),
    }];
    let (h, _reg) = start(config(
        vec![fe],
        vec![
            backend("be", Balance::RoundRobin, vec![server("a", app.addr)]),
            backend("other", Balance::RoundRobin, vec![server("o", other.addr)]),
        ],
    ));
    let addr = addr_of(&h, "web");
    let port = addr.port().to_string();
    let line = |r: &Resp| r.body.lines().nth(1).unwrap_or("").to_owned();

    let r = get(addr, "/api/v2/items/7?x=1", &[]).await;
    assert_eq!(line(&r), "GET /items/7/v2?x=1", "{}", r.body);
    assert_eq!(r.header("x-server").as_deref(), Some("srv-app"));
    let r = get(addr, "/old/page?keep=1", &[]).await;
    assert_eq!(r.server(), "other", "use_backend sees the new path");
    assert_eq!(line(&r), "GET /new/old/page?keep=1");
    let r = get(addr, "/q/x?old=1", &[]).await;
    assert_eq!(line(&r), "GET /q/x?from=127.0.0.1");
    let r = get(addr, "/noq/x?old=1", &[]).await;
    assert_eq!(
        line(&r),
        "GET /noq/x?",
        "an empty query keeps its `?` (HAProxy)"
    );
    let r = get(addr, "/broken", &[]).await;
    assert_eq!(
        r.status, 500,
        "a rewrite to an invalid target fails the request"
    );
    let r = get(
        addr,
        "/h",
        &[("X-Agent", "curl/8.1"), ("X-List", "a, b, a")],
    )
    .await;
    assert_eq!(r.saw("x-agent"), vec![format!("curl-8.1 via {port}")]);
    assert_eq!(r.saw("x-list"), vec!["z, b,z"], "HAProxy's spacing");
    let r = get(addr, "/h", &[("X-Agent", "wget/1")]).await;
    assert_eq!(r.saw("x-agent"), vec!["wget/1"], "no match: unchanged");

    let r = get(addr, "/ping", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "pong from 127.0.0.1 for /ping");
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(r.header("x-ret").as_deref(), Some("yes"));
    assert!(r.header("x-server").is_none(), "no server involved");
    let r = get(addr, "/empty", &[]).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 5);
}

/// `http-after-response` applies to every response: a server's, lb's error pages, its
/// redirects and `return`s; the backend's rules only when the request reached it, before
/// the frontend's; `set-status` and its reason work there too.
#[tokio::test]
async fn after_response_rules_apply_to_every_response() {
    let app = echo("app").await;
    let none = AclSet::default();
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.http_request = vec![
        rule(
            HttpAction::Deny { status: 403 },
            Some(cond("if { path_beg /admin }", &none)),
        ),
        rule(
            HttpAction::Redirect(Redirect {
                kind: RedirectKind::Location,
                target: "/new".into(),
                code: 302,
                drop_query: false,
            }),
            Some(cond("if { path /old }", &none)),
        ),
        rule(
            HttpAction::Return(HttpReturn {
                status: 200,
                content_type: Some("text/plain".into()),
                body: Some("ok".into()),
                headers: Vec::new(),
            }),
            Some(cond("if { path /ping }", &none)),
        ),
    ];
    fe.use_backend = vec![UseBackend {
        backend: "empty".into(),
        cond: cond("if { path_beg /empty }", &none),
    }];
    fe.http_after_response = vec![
        rule(set("Strict-Transport-Security", "max-age=600"), None),
        rule(set("X-Seen", "%[res.hdr(x-be)]fe"), None),
        rule(
            HttpAction::SetStatus {
                status: 503,
                reason: Some("Try Later".into()),
            },
            Some(cond("if { status 503 }", &none)),
        ),
    ];
    let mut be = backend("be", Balance::RoundRobin, vec![server("a", app.addr)]);
    be.http_after_response = vec![rule(set("X-Be", "be-"), None)];
    let empty = backend("empty", Balance::RoundRobin, Vec::new());
    let (h, _reg) = start(config(vec![fe], vec![be, empty]));
    let addr = addr_of(&h, "web");
    let hsts = |r: &Resp| r.header("strict-transport-security");

    let r = get(addr, "/", &[]).await;
    assert_eq!((r.status, r.server()), (200, "app"));
    assert_eq!(hsts(&r).as_deref(), Some("max-age=600"));
    assert_eq!(
        r.header("x-seen").as_deref(),
        Some("be-fe"),
        "backend first"
    );
    for (path, status) in [
        ("/admin", 403),
        ("/old", 302),
        ("/ping", 200),
        ("/empty", 503),
    ] {
        let r = get(addr, path, &[]).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(hsts(&r).as_deref(), Some("max-age=600"), "{path}");
    }
    // lb's 403 never reached the backend: only the frontend's rules.
    let r = get(addr, "/admin", &[]).await;
    assert_eq!(r.header("x-seen").as_deref(), Some("fe"));
    let out = raw(
        addr,
        b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 503 Try Later\r\n"), "{out}");
}
