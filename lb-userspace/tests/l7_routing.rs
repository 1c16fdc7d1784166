//! Routing, rules, balancing and reload over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use l7_support::*;
use lb::acl::AclSet;
use lb::config::model::*;
use lb::state::ServerStatus;

#[tokio::test]
async fn roundrobin_default_backend_and_identity() {
    let (a, b) = (echo("a").await, echo("b").await);
    let cfg = config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("all"))],
        vec![backend(
            "all",
            Balance::RoundRobin,
            vec![server("a", a.addr), server("b", b.addr)],
        )],
    );
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let mut seen = HashMap::new();
    for _ in 0..10 {
        let r = get(fe, "/x?y=1", &[("x-test", "1")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.saw("x-test"), vec!["1"]);
        assert!(r.body.contains("GET /x?y=1"), "{}", r.body);
        *seen.entry(r.server().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&5));
    assert_eq!(seen.get("b"), Some(&5));
    assert!(h.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn weights_backup_and_status_changes() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let mut sa = server("a", a.addr);
    sa.weight = 3;
    let mut sc = server("c", c.addr);
    sc.backup = true;
    let cfg = config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![sa, server("b", b.addr), sc],
        )],
    );
    let (h, reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let mut seen: HashMap<String, i32> = HashMap::new();
    for _ in 0..8 {
        *seen
            .entry(get(fe, "/", &[]).await.server().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&6));
    assert_eq!(seen.get("b"), Some(&2));
    assert_eq!(seen.get("c"), None, "backup unused while actives are UP");

    // A server going DOWN stops getting new requests within 100 ms.
    reg.set_status("be", "a", ServerStatus::Down).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..4 {
        assert_eq!(get(fe, "/", &[]).await.server(), "b");
    }
    // DRAIN and weight 0: no new traffic. All actives out → backup.
    reg.set_status("be", "b", ServerStatus::Drain).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert_eq!(get(fe, "/", &[]).await.server(), "c");
    }
    reg.set_status("be", "a", ServerStatus::Up).unwrap();
    reg.set_weight("be", "a", 0).unwrap();
    reg.set_status("be", "b", ServerStatus::Up).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert_eq!(get(fe, "/", &[]).await.server(), "b");
    }
    // Every server in MAINT → 503 with HAProxy's page.
    for s in ["a", "b", "c"] {
        reg.set_status("be", s, ServerStatus::Maint).unwrap();
    }
    let r = get(fe, "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("No server is available"), "{}", r.body);
    // Counters moved.
    let st = reg.backend("be").unwrap();
    assert!(
        st.server("a")
            .unwrap()
            .counters
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 6
    );
    assert!(
        reg.frontend("web")
            .unwrap()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 18
    );
}

#[tokio::test]
async fn source_balance_sticks_per_client_and_leastconn_random_work() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let servers = || {
        vec![
            server("a", a.addr),
            server("b", b.addr),
            server("c", c.addr),
        ]
    };
    let cfg = config(
        vec![
            frontend("src", vec![bind("127.0.0.1:0")], Some("bsrc")),
            frontend("lc", vec![bind("127.0.0.1:0")], Some("blc")),
            frontend("rnd", vec![bind("127.0.0.1:0")], Some("brnd")),
        ],
        vec![
            backend("bsrc", Balance::Source, servers()),
            backend("blc", Balance::LeastConn, servers()),
            backend("brnd", Balance::Random, servers()),
        ],
    );
    let (h, _reg) = start(cfg);
    let first = get(addr_of(&h, "src"), "/", &[]).await.server().to_owned();
    for _ in 0..5 {
        assert_eq!(get(addr_of(&h, "src"), "/", &[]).await.server(), first);
    }
    for fe in ["lc", "rnd"] {
        for _ in 0..6 {
            assert_eq!(get(addr_of(&h, fe), "/", &[]).await.status, 200);
        }
    }
}

/// `set-header` / `add-header` values are log-format strings: `%[...]` expands per request
/// with the ACL fetches, `%%` is a percent sign, a fetch without a value adds nothing.
#[tokio::test]
async fn header_values_expand_log_format() {
    let a = echo("a").await;
    let rule = |action| HttpRule { action, cond: None };
    let set = |name: &str, value: &str| {
        rule(HttpAction::SetHeader {
            name: name.into(),
            value: value.into(),
        })
    };
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.http_request = vec![
        set("X-Client", "%[src]"),
        set("X-Host", "%[req.hdr(host)]"),
        rule(HttpAction::AddHeader {
            name: "X-Mix".into(),
            value: "100%% %[method] %[path] to %[dst]:%[dst_port] sni=%[ssl_fc_sni]".into(),
        }),
        set("X-Lit", "plain %% text"),
    ];
    let mut be = backend("be", Balance::RoundRobin, vec![server("a", a.addr)]);
    be.http_request = vec![set("X-Be", "%[req.hdr(x-client)]/%[url_param(q)]")];
    let (h, _reg) = start(config(vec![fe], vec![be]));
    let addr = addr_of(&h, "web");
    let r = get(addr, "/p?q=7", &[("x-client", "spoofed")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.saw("x-client"), ["127.0.0.1"]);
    assert_eq!(r.saw("x-host"), ["test.local"]);
    assert_eq!(
        r.saw("x-mix"),
        [format!("100% GET /p to 127.0.0.1:{} sni=", addr.port())]
    );
    assert_eq!(r.saw("x-lit"), ["plain % text"]);
    // Backend rules run after the frontend's and see what they set.
    assert_eq!(r.saw("x-be"), ["127.0.0.1/7"]);
}

/// An error once a backend is chosen uses the backend's errorfile, else the frontend's
/// (HAProxy), not the built-in page.
#[tokio::test]
async fn frontend_errorfile_applies_when_the_backend_has_none() {
    const FE_503: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nfrontend page\n";
    const BE_503: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nbackend page\n";
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("empty"));
    fe.errorfiles = BTreeMap::from([(503, FE_503.to_vec())]);
    let mut fe2 = frontend("web2", vec![bind("127.0.0.1:0")], Some("empty2"));
    fe2.errorfiles = BTreeMap::from([(503, FE_503.to_vec())]);
    let mut be2 = backend("empty2", Balance::RoundRobin, vec![]);
    be2.errorfiles = BTreeMap::from([(503, BE_503.to_vec())]);
    let (h, _reg) = start(config(
        vec![fe, fe2],
        vec![backend("empty", Balance::RoundRobin, vec![]), be2],
    ));
    let r = get(addr_of(&h, "web"), "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "frontend page\n"));
    let r = get(addr_of(&h, "web2"), "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "backend page\n"));
}

#[tokio::test]
async fn rules_without_conditions_headers_deny_redirect() {
    let a = echo("a").await;
    let rule = |action| HttpRule { action, cond: None };
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.forwardfor = true;
    fe.http_request = vec![
        rule(HttpAction::SetHeader {
            name: "X-Set".into(),
            value: "one".into(),
        }),
        rule(HttpAction::AddHeader {
            name: "X-Add".into(),
            value: "two".into(),
        }),
        rule(HttpAction::DelHeader {
            name: "X-Remove".into(),
        }),
    ];
    let cfg = config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", a.addr)],
        )],
    );
    let (h, _reg) = start(cfg);
    let r = get(
        addr_of(&h, "web"),
        "/",
        &[
            ("x-set", "old"),
            ("x-add", "first"),
            ("x-remove", "gone"),
            ("x-forwarded-for", "10.9.9.9"),
        ],
    )
    .await;
    assert_eq!(r.saw("x-set"), vec!["one"]);
    assert_eq!(r.saw("x-add"), vec!["first", "two"]);
    assert!(r.saw("x-remove").is_empty());
    assert_eq!(r.saw("x-forwarded-for"), vec!["10.9.9.9", "127.0.0.1"]);
    assert_eq!(r.saw("x-forwarded-proto"), vec!["http"]);

    // deny with deny_status, and an errorfile for it.
    let mut fe = frontend("deny", vec![bind("127.0.0.1:0")], Some("be"));
    fe.http_request = vec![rule(HttpAction::Deny { status: 429 })];
    fe.errorfiles = BTreeMap::from([(
        429,
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nX-Custom: yes\r\n\r\nslow down\n"
            .to_vec(),
    )]);
    let mut fe2 = frontend("deny2", vec![bind("127.0.0.1:0")], Some("be"));
    fe2.http_request = vec![rule(HttpAction::Deny { status: 403 })];
    let mut fe3 = frontend("redir", vec![bind("127.0.0.1:0")], Some("be"));
    fe3.http_request = vec![rule(HttpAction::Redirect(Redirect {
        kind: RedirectKind::Prefix,
        target: "https://example.com".into(),
        code: 301,
        drop_query: false,
    }))];
    let mut fe4 = frontend("scheme", vec![bind("127.0.0.1:0")], Some("be"));
    fe4.http_request = vec![rule(HttpAction::Redirect(Redirect {
        kind: RedirectKind::Scheme,
        target: "https".into(),
        code: 302,
        drop_query: true,
    }))];
    let mut fe5 = frontend("loc", vec![bind("127.0.0.1:0")], Some("be"));
    fe5.http_request = vec![rule(HttpAction::Redirect(Redirect {
        kind: RedirectKind::Location,
        target: "/elsewhere".into(),
        code: 308,
        drop_query: false,
    }))];
    let nobe = frontend("nobe", vec![bind("127.0.0.1:0")], None);
    let cfg = config(
        vec![fe, fe2, fe3, fe4, fe5, nobe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", a.addr)],
        )],
    );
    h.reload(Arc::new(cfg)).unwrap();
    let r = get(addr_of(&h, "deny"), "/", &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body, "slow down\n");
    assert_eq!(r.header("x-custom").as_deref(), Some("yes"));
    let r = get(addr_of(&h, "deny2"), "/", &[]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("403 Forbidden"));
    let r = get(addr_of(&h, "redir"), "/p/q?x=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://example.com/p/q?x=1")
    );
    let r = get(addr_of(&h, "scheme"), "/p?x=1", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://test.local/p")
    );
    let r = get(addr_of(&h, "loc"), "/p", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location").as_deref(), Some("/elsewhere"));
    let r = get(addr_of(&h, "nobe"), "/", &[]).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn reload_keeps_listener_and_swaps_routing_ipv6() {
    let (a, b) = (echo("a").await, echo("b").await);
    let mk = |srv: &Echo, extra: bool| {
        let mut binds = vec![bind("127.0.0.1:0")];
        if extra {
            binds.push(bind("[::1]:0"));
        }
        config(
            vec![frontend("web", binds, Some("be"))],
            vec![backend(
                "be",
                Balance::RoundRobin,
                vec![server(&srv.name, srv.addr)],
            )],
        )
    };
    let (h, _reg) = start(mk(&a, false));
    let fe = addr_of(&h, "web");
    assert_eq!(get(fe, "/", &[]).await.server(), "a");
    h.reload(Arc::new(mk(&b, true))).unwrap();
    assert_eq!(h.local_addrs("web")[0], fe, "the same socket stays");
    assert_eq!(get(fe, "/", &[]).await.server(), "b");
    if let Some(v6) = h.local_addrs("web").into_iter().find(|a| a.is_ipv6()) {
        assert_eq!(get(v6, "/", &[]).await.server(), "b");
    }
    // A frontend removed → its listener closes.
    h.reload(Arc::new(config(
        vec![],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("b", b.addr)],
        )],
    )))
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(fe).await.is_err());
}

/// Each reload swaps the registry's backend set, which wakes the old runtime's registry
/// watch on another thread. That watch must not rebuild from its own (older) config once a
/// newer runtime has replaced it: that would undo the reload (registry and routing back to
/// the old config, as a CI run saw under `lb run`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_never_undone_by_the_old_runtime_watch() {
    let a = echo("a").await;
    let mk = |n: usize| {
        config(
            vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
            vec![backend(
                "be",
                Balance::RoundRobin,
                (0..n).map(|i| server(&format!("s{i}"), a.addr)).collect(),
            )],
        )
    };
    let (h, reg) = start(mk(1));
    let servers = |reg: &lb::state::Registry| reg.backend("be").map_or(0, |b| b.servers.len());
    for n in 2..=120 {
        h.reload(Arc::new(mk(n))).unwrap();
        assert_eq!(servers(&reg), n, "reload {n} applied");
        // Let the old runtime's watch run.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(servers(&reg), n, "reload {n} undone by an older runtime");
    }
    let fe = addr_of(&h, "web");
    assert_eq!(get(fe, "/", &[]).await.status, 200);
    assert!(h.shutdown(Duration::from_secs(2)).await);
}

/// A reload that fails (here: a bind on a port already taken) leaves the registry's backend
/// set exactly as it was, so the running routing keeps its server states.
#[tokio::test]
async fn failed_reload_leaves_the_registry_untouched() {
    let a = echo("a").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let mk = |n: usize, binds: Vec<Bind>| {
        config(
            vec![frontend("web", binds, Some("be"))],
            vec![backend(
                "be",
                Balance::RoundRobin,
                (0..n).map(|i| server(&format!("s{i}"), a.addr)).collect(),
            )],
        )
    };
    let (h, reg) = start(mk(1, vec![bind("127.0.0.1:0")]));
    let before = reg.backend("be").unwrap();
    let bad = mk(2, vec![bind("127.0.0.1:0"), bind(&taken_addr)]);
    assert!(
        h.reload(Arc::new(bad)).is_err(),
        "the taken port fails the reload"
    );
    let after = reg.backend("be").unwrap();
    assert!(
        Arc::ptr_eq(&before, &after),
        "registry backend set restored"
    );
    assert_eq!(after.servers.len(), 1);
    assert_eq!(get(addr_of(&h, "web"), "/", &[]).await.server(), "a");
    drop(taken);
    assert!(h.shutdown(Duration::from_secs(2)).await);
}

/// The seed's example: path_end routing, /admin denied, source stickiness. Needs the ACL
/// engine.
#[tokio::test]
async fn seed_example_routing() {
    let s: Vec<Echo> = futures_util::future::join_all(
        ["server2222", "server3333", "server4444", "server5555"].map(echo),
    )
    .await;
    let mut acls = AclSet::default();
    acl(&mut acls, "app1 path_end -i /app1");
    acl(&mut acls, "app2 path_end -i /app2");
    let mut fe = frontend(
        "httpsandhttp",
        vec![bind("127.0.0.1:0")],
        Some("allServers"),
    );
    fe.http_request = vec![HttpRule {
        action: HttpAction::Deny { status: 403 },
        cond: Some(cond("if { path -i -m beg /admin }", &acls)),
    }];
    fe.use_backend = vec![
        UseBackend {
            backend: "app1Server".into(),
            cond: cond("if app1", &acls),
        },
        UseBackend {
            backend: "app2Server".into(),
            cond: cond("if app2", &acls),
        },
    ];
    fe.acls = acls;
    let srv = |i: usize| server(&s[i].name, s[i].addr);
    let cfg = config(
        vec![fe],
        vec![
            backend("app1Server", Balance::Source, vec![srv(0), srv(1)]),
            backend("app2Server", Balance::RoundRobin, vec![srv(2), srv(3)]),
            backend(
                "allServers",
                Balance::RoundRobin,
                vec![srv(0), srv(1), srv(2), srv(3)],
            ),
        ],
    );
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "httpsandhttp");
    let first = get(fe, "/x/APP1", &[]).await.server().to_owned();
    assert!(first == "server2222" || first == "server3333", "{first}");
    for _ in 0..4 {
        assert_eq!(
            get(fe, "/y/app1", &[]).await.server(),
            first,
            "balance source sticks"
        );
    }
    for _ in 0..4 {
        let r = get(fe, "/z/app2", &[]).await;
        assert!(r.server() == "server4444" || r.server() == "server5555");
    }
    assert_eq!(get(fe, "/admin/panel", &[]).await.status, 403);
    assert_eq!(get(fe, "/ADMIN", &[]).await.status, 403);
    let mut all = std::collections::HashSet::new();
    for _ in 0..8 {
        all.insert(get(fe, "/other", &[]).await.server().to_owned());
    }
    assert_eq!(all.len(), 4);
}

/// `use_backend backup if is_down` with `nbsrv(primary) lt 1`. Needs the ACL engine.
#[tokio::test]
async fn backup_backend_switch_via_nbsrv() {
    let (p, b) = (echo("primary").await, echo("backup").await);
    let mut acls = AclSet::default();
    acl(&mut acls, "is_down nbsrv(www) lt 1");
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("www"));
    fe.use_backend = vec![UseBackend {
        backend: "www-backup".into(),
        cond: cond("if is_down", &acls),
    }];
    fe.acls = acls;
    let cfg = config(
        vec![fe],
        vec![
            backend("www", Balance::LeastConn, vec![server("p", p.addr)]),
            backend("www-backup", Balance::LeastConn, vec![server("b", b.addr)]),
        ],
    );
    let (h, reg) = start(cfg);
    let fe = addr_of(&h, "web");
    assert_eq!(get(fe, "/", &[]).await.server(), "primary");
    reg.set_status("www", "p", ServerStatus::Down).unwrap();
    assert_eq!(get(fe, "/", &[]).await.server(), "backup");
    reg.set_status("www", "p", ServerStatus::Up).unwrap();
    assert_eq!(get(fe, "/", &[]).await.server(), "primary");
}

/// The control plane replaces the registry's backend set (its own reload): the proxy follows
/// the new server states.
#[tokio::test]
async fn follows_registry_replacement() {
    let (a, b) = (echo("a").await, echo("b").await);
    let cfg = config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", a.addr), server("b", b.addr)],
        )],
    );
    let (h, reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let fresh = Arc::new(lb::state::BackendState {
        name: "be".into(),
        servers: vec![
            Arc::new(lb::state::ServerState::new("a", a.addr, 1, false, true)),
            Arc::new(lb::state::ServerState::new("b", b.addr, 1, false, true)),
        ],
        counters: Default::default(),
    });
    reg.replace(
        HashMap::from([("be".to_owned(), fresh)]),
        (*reg.frontends()).clone(),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    reg.set_status("be", "a", ServerStatus::Down).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..4 {
        assert_eq!(get(fe, "/", &[]).await.server(), "b");
    }
    let st = reg.backend("be").unwrap();
    assert!(
        st.server("b")
            .unwrap()
            .counters
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
}

/// Listening sockets in `/proc/net/tcp` on `port`.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "0A" && f[1].ends_with(&format!(":{port:04X}"))
        })
        .count()
}

/// Each worker accepts on its own socket of the bind (one `SO_REUSEPORT` group), every
/// socket serves, and a reload that keeps the bind keeps the sockets.
#[tokio::test]
async fn each_worker_listens_on_its_own_socket() {
    let a = echo("a").await;
    let mut cfg = web_to(a.addr);
    cfg.global.threads = Some(3);
    let cfg = std::sync::Arc::new(cfg);
    let reg = std::sync::Arc::new(lb::state::Registry::new());
    let h = lb::l7::L7::start(cfg.clone(), reg).expect("start");
    let fe = addr_of(&h, "web");
    assert_eq!(listening_sockets(fe.port()), 3);
    for _ in 0..30 {
        assert_eq!(get(fe, "/", &[]).await.status, 200);
    }
    h.reload(cfg).expect("reload");
    assert_eq!(listening_sockets(fe.port()), 3);
    assert_eq!(h.local_addrs("web"), vec![fe]);
    assert_eq!(get(fe, "/", &[]).await.status, 200);
}

/// `balance uri`: a path always reaches the same server (the query aside, unless
/// `whole`), different paths spread over the servers.
#[tokio::test]
async fn balance_uri_is_sticky_per_path() {
    let servers = [echo("u0").await, echo("u1").await, echo("u2").await];
    for whole in [false, true] {
        let be = backend(
            "be",
            Balance::Uri { whole },
            servers.iter().map(|s| server(&s.name, s.addr)).collect(),
        );
        let (h, _reg) = start(config(
            vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
            vec![be],
        ));
        let fe = addr_of(&h, "web");
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..30 {
            let path = format!("/assets/{i}.js");
            let first = get(fe, &format!("{path}?v=1"), &[])
                .await
                .server()
                .to_owned();
            let again = get(fe, &format!("{path}?v=2"), &[])
                .await
                .server()
                .to_owned();
            if whole {
                // Same path, other query: may differ; the same full URI may not.
                let same = get(fe, &format!("{path}?v=1"), &[])
                    .await
                    .server()
                    .to_owned();
                assert_eq!(first, same, "{path}?v=1");
            } else {
                assert_eq!(first, again, "{path}: the query does not count");
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 3, "30 paths use all three servers: {seen:?}");
    }
}

/// Compiling a generation writes nothing into the registry: the states it was built on are
/// published only when asked, and are then the very objects the runtime counts on.
#[tokio::test]
async fn build_publishes_the_registry_only_after_success() {
    let a = echo("a").await;
    let cfg = web_to(a.addr);
    let reg = lb::state::Registry::new();
    let built = lb::l7::runtime::build(&cfg, &reg, None).expect("builds");
    assert!(reg.backend("be").is_none(), "build wrote the registry");
    assert!(reg.frontend("web").is_none(), "build wrote the registry");
    built.registry.expect("an update").publish(&reg);
    let published = reg.backend("be").expect("published");
    assert!(Arc::ptr_eq(&published, &built.runtime.backends["be"].state));
    assert!(Arc::ptr_eq(
        &reg.frontend("web").expect("published"),
        &built.runtime.frontends["web"].counters
    ));
    // In step now: a second build has nothing to publish.
    let again = lb::l7::runtime::build(&cfg, &reg, Some(&built.runtime)).expect("builds");
    assert!(again.registry.is_none());
}

/// A reload that fails (here: a new bind on a port already taken) leaves the registry as it
/// was: the new backend is not in it and the old one keeps its state object.
#[tokio::test]
async fn failed_reload_publishes_no_new_backend_or_frontend() {
    let a = echo("a").await;
    let (h, reg) = start(web_to(a.addr));
    let before = reg.backend("be").expect("be");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let mut cfg = web_to(a.addr);
    cfg.frontends
        .push(frontend("other", vec![bind(&taken_addr)], Some("extra")));
    cfg.backends.push(backend(
        "extra",
        Balance::RoundRobin,
        vec![server("x", a.addr)],
    ));
    assert!(h.reload(Arc::new(cfg)).is_err());
    assert!(reg.backend("extra").is_none(), "failed reload published");
    assert!(reg.frontend("other").is_none(), "failed reload published");
    assert!(Arc::ptr_eq(&before, &reg.backend("be").expect("be")));
    let r = get(addr_of(&h, "web"), "/", &[]).await;
    assert_eq!(r.status, 200);
    drop(taken);
    assert!(h.shutdown(Duration::from_secs(2)).await);
}
