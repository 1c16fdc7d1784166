//! Sticky cookies, retries with redispatch, maxconn queueing, WebSocket tunnels, keep-alive
//! pooling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use l7_support::*;
use lb::config::model::*;
use lb::state::ServerStatus;

/// lb with frontend `web` on a loopback port and backend `be` (roundrobin) of one server
/// `s` at `addr`, both adjusted by `tune` first.
fn one_server_tuned(
    addr: std::net::SocketAddr,
    tune: impl FnOnce(&mut Frontend, &mut Backend),
) -> (lb::l7::L7Handle, std::sync::Arc<lb::state::Registry>) {
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    let mut be = backend("be", Balance::RoundRobin, vec![server("s", addr)]);
    tune(&mut fe, &mut be);
    start(config(vec![fe], vec![be]))
}

fn one_server(
    addr: std::net::SocketAddr,
) -> (lb::l7::L7Handle, std::sync::Arc<lb::state::Registry>) {
    one_server_tuned(addr, |_, _| {})
}

/// [`one_server`] with one worker thread, so that every request sees the same idle pool.
fn one_server_one_worker(
    addr: std::net::SocketAddr,
) -> (lb::l7::L7Handle, std::sync::Arc<lb::state::Registry>) {
    let mut cfg = config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend("be", Balance::RoundRobin, vec![server("s", addr)])],
    );
    cfg.global.threads = Some(1);
    start(cfg)
}

fn sticky(spec: CookieSpec, servers: Vec<Server>) -> Config {
    let mut be = backend("be", Balance::RoundRobin, servers);
    be.cookie = Some(spec);
    config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![be],
    )
}

fn cookie_of(r: &Resp) -> Option<String> {
    r.header("set-cookie")
}

#[tokio::test]
async fn cookie_insert_indirect_nocache() {
    let (a, b) = (echo("a").await, echo("b").await);
    let mut sa = server("a", a.addr);
    sa.cookie = Some("ca".into());
    let mut sb = server("b", b.addr);
    sb.cookie = Some("cb".into());
    let (h, reg) = start(sticky(
        CookieSpec {
            name: "SRV".into(),
            indirect: true,
            nocache: true,
        },
        vec![sa, sb],
    ));
    let fe = addr_of(&h, "web");

    // First response inserts the cookie. It carries no freshness information nor validator,
    // so no cache could store it: HAProxy adds no Cache-Control, nor does lb.
    let r = get(fe, "/", &[]).await;
    let first = r.server().to_owned();
    let want = format!("SRV=c{first}; path=/");
    assert_eq!(cookie_of(&r).as_deref(), Some(want.as_str()));
    assert_eq!(r.header("cache-control"), None);
    // A cacheable response (max-age) that gets a cookie is marked private.
    let r1 = get(fe, "/?cc=max-age=60", &[]).await;
    assert!(cookie_of(&r1).is_some());
    let cc: Vec<_> = r1.headers.get_all("cache-control").iter().collect();
    assert!(cc.iter().any(|v| *v == "private"), "{:?}", r1.headers);
    // A response the server marked non-cacheable gets no extra Cache-Control.
    let r2 = get(fe, "/?cc=no-store", &[]).await;
    assert!(cookie_of(&r2).is_some());
    assert_eq!(
        r2.headers.get_all("cache-control").iter().count(),
        1,
        "{:?}",
        r2.headers
    );

    // Later requests with the cookie stick, get no new cookie, and (indirect) the server
    // never sees it; other cookies pass.
    let cookie = format!("foo=1; SRV=c{first}; bar=2");
    for _ in 0..5 {
        let r = get(fe, "/", &[("cookie", &cookie)]).await;
        assert_eq!(r.server(), first);
        assert!(cookie_of(&r).is_none());
        assert_eq!(r.saw("cookie"), vec!["foo=1; bar=2"]);
    }
    // Unknown cookie value → balanced and reset.
    let r = get(fe, "/", &[("cookie", "SRV=zzz")]).await;
    assert!(cookie_of(&r).is_some());
    assert!(r.saw("cookie").is_empty());

    // The named server goes down → redispatch and a new cookie.
    reg.set_status("be", &first, ServerStatus::Down).unwrap();
    let r = get(fe, "/", &[("cookie", &cookie)]).await;
    assert_ne!(r.server(), first);
    let other = r.server().to_owned();
    assert_eq!(
        cookie_of(&r).as_deref(),
        Some(format!("SRV=c{other}; path=/").as_str())
    );
}

/// Servers may share a cookie value (the seed's `cookie primary` on sr1 and sr2): as in
/// HAProxy, the first one that is up takes the request, and when it is down the next one
/// with the same value does, with no new cookie; only when none is up is the request
/// redispatched (here to the one other server) with a new cookie.
#[tokio::test]
async fn servers_sharing_a_cookie_value_take_over_from_each_other() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let mut sa = server("a", a.addr);
    sa.cookie = Some("primary".into());
    let mut sb = server("b", b.addr);
    sb.cookie = Some("primary".into());
    let mut sc = server("c", c.addr);
    sc.cookie = Some("other".into());
    let (h, reg) = start(sticky(
        CookieSpec {
            name: "SRV".into(),
            indirect: true,
            nocache: true,
        },
        vec![sa, sb, sc],
    ));
    let fe = addr_of(&h, "web");
    let cookie = [("cookie", "SRV=primary")];
    for _ in 0..3 {
        let r = get(fe, "/", &cookie).await;
        assert_eq!(r.server(), "a", "the first server of the value");
        assert!(cookie_of(&r).is_none());
    }
    reg.set_status("be", "a", ServerStatus::Down).unwrap();
    for _ in 0..3 {
        let r = get(fe, "/", &cookie).await;
        assert_eq!(r.server(), "b", "the next server of the value");
        assert!(cookie_of(&r).is_none(), "the cookie is still valid");
    }
    reg.set_status("be", "b", ServerStatus::Down).unwrap();
    let r = get(fe, "/", &cookie).await;
    assert_eq!(r.server(), "c", "redispatched");
    assert_eq!(cookie_of(&r).as_deref(), Some("SRV=other; path=/"));
}

#[tokio::test]
async fn cookie_without_indirect_reaches_server() {
    let a = echo("a").await;
    let (h, _reg) = start(sticky(
        CookieSpec {
            name: "SRV".into(),
            indirect: false,
            nocache: false,
        },
        vec![server("a", a.addr)],
    ));
    let fe = addr_of(&h, "web");
    let r = get(fe, "/", &[]).await;
    assert_eq!(cookie_of(&r).as_deref(), Some("SRV=a; path=/"));
    assert!(r.header("cache-control").is_none());
    let r = get(fe, "/", &[("cookie", "SRV=a")]).await;
    assert_eq!(r.saw("cookie"), vec!["SRV=a"]);
    assert!(cookie_of(&r).is_none());
}

#[tokio::test]
async fn retry_on_refused_connection_redispatches() {
    let a = echo("a").await;
    let dead = dead_addr().await;
    let mut be = backend(
        "be",
        Balance::RoundRobin,
        vec![server("dead", dead), server("a", a.addr)],
    );
    // One retry: HAProxy's `option redispatch` sends the last retry to another server.
    be.retries = 1;
    be.redispatch = true;
    let (h, reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![be],
    ));
    let fe = addr_of(&h, "web");
    for _ in 0..6 {
        let r = get(fe, "/", &[]).await;
        assert_eq!(r.status, 200, "no client-visible error");
        assert_eq!(r.server(), "a");
    }
    let st = reg.backend("be").unwrap();
    assert!(
        st.server("dead")
            .unwrap()
            .counters
            .errors
            .load(Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test]
async fn all_servers_refuse_gives_503() {
    let dead = dead_addr().await;
    let mut be = backend("be", Balance::RoundRobin, vec![server("dead", dead)]);
    be.retries = 1;
    let (h, _reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![be],
    ));
    let r = get(addr_of(&h, "web"), "/", &[]).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn maxconn_queues_fifo_and_times_out() {
    let a = echo("a").await;
    let mut s = server("a", a.addr);
    s.maxconn = Some(1);
    let mut be = backend("be", Balance::RoundRobin, vec![s]);
    be.timeouts.queue = Some(Duration::from_millis(300));
    let (h, reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![be],
    ));
    let fe = addr_of(&h, "web");

    // Two requests of 100 ms each through a 1-slot server: the second queues, then runs.
    let t0 = Instant::now();
    let (r1, r2) = tokio::join!(get(fe, "/?ms=100", &[]), get(fe, "/?ms=100", &[]));
    assert_eq!((r1.status, r2.status), (200, 200));
    assert!(
        t0.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t0.elapsed()
    );

    // A request stuck in the queue longer than `timeout queue` gets 503.
    let slow = tokio::spawn(async move { get(fe, "/?ms=1000", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t1 = Instant::now();
    let r = get(fe, "/", &[]).await;
    assert_eq!(r.status, 503);
    let waited = t1.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(900),
        "{waited:?}"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    let st = reg.backend("be").unwrap();
    assert_eq!(
        st.server("a")
            .unwrap()
            .counters
            .active_conns
            .load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let a = echo("a").await;
    let (h, _reg) = one_server(a.addr);
    let fe = addr_of(&h, "web");
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(fe).await.unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 1024];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before 101");
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        for msg in [&b"hello"[..], b"binary\x00\x01\x02", b"bye"] {
            s.write_all(msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }
    })
    .await
    .expect("websocket timed out");
}

#[tokio::test]
async fn keep_alive_reuses_upstream_connections() {
    let a = echo("a").await;
    let (h, _reg) = one_server(a.addr);
    let fe = addr_of(&h, "web");
    // Many sequential requests over one client connection, and over fresh ones.
    let s = TcpStream::connect(fe).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..50 {
        let req = hyper::Request::get(format!("/k{i}"))
            .header("host", "x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let r = collect(tx.send_request(req).await.unwrap()).await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..20 {
        assert_eq!(get(fe, "/", &[]).await.status, 200);
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 70);
    let conns = a.conns.load(Ordering::SeqCst);
    assert!(conns <= 3, "upstream connections are pooled: {conns}");
}

#[tokio::test]
async fn server_timeout_gives_504() {
    let a = echo("a").await;
    let (h, _reg) = one_server_tuned(a.addr, |_, be| {
        be.timeouts.server = Some(Duration::from_millis(200))
    });
    let fe = addr_of(&h, "web");
    let t0 = Instant::now();
    let r = get(fe, "/?ms=1000", &[]).await;
    assert_eq!(r.status, 504);
    assert!(t0.elapsed() < Duration::from_millis(900));
    assert_eq!(get(fe, "/", &[]).await.status, 200);
}

/// `timeout server` on one keep-alive connection, whose timer is reused from request to
/// request: a slow request after fast ones, and after an earlier timeout, still gets 504 in
/// time, and fast ones after it are not cut short.
#[tokio::test]
async fn server_timeout_applies_to_every_request_of_a_connection() {
    let a = echo("a").await;
    let (h, _reg) = one_server_tuned(a.addr, |_, be| {
        be.timeouts.server = Some(Duration::from_millis(300))
    });
    let fe = addr_of(&h, "web");
    let s = TcpStream::connect(fe).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    for (path, want) in [
        ("/?ms=0", 200),
        ("/?ms=100", 200),
        ("/?ms=1000", 504),
        ("/?ms=200", 200),
        ("/?ms=1000", 504),
        ("/", 200),
    ] {
        if tx.ready().await.is_err() {
            // The proxy may close after an error page; go on on a fresh connection.
            let s = TcpStream::connect(fe).await.expect("connect");
            let (t, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                .await
                .expect("handshake");
            tokio::spawn(c);
            tx = t;
        }
        let req = hyper::Request::get(path)
            .header("host", "test.local")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let t0 = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
            .await
            .expect("answered")
            .expect("response");
        let status = collect(r).await.status;
        assert_eq!(status, want, "{path}");
        if want == 504 {
            let took = t0.elapsed();
            assert!(
                took >= Duration::from_millis(250) && took < Duration::from_millis(900),
                "{path}: {took:?}"
            );
        }
    }
}

#[tokio::test]
async fn request_and_response_bodies_stream() {
    let a = echo("a").await;
    let (h, reg) = one_server(a.addr);
    let fe = addr_of(&h, "web");
    let body = vec![7u8; 1 << 20];
    let r = post(fe, "/up", body.clone(), false).await;
    assert_eq!(r.saw("body-len"), vec!["1048576"]);
    let r = post(fe, "/up", body, true).await;
    assert_eq!(r.saw("body-len"), vec!["1048576"]);
    assert_eq!(r.saw("transfer-encoding"), vec!["chunked"]);
    let r = get(fe, "/down?size=3000000", &[]).await;
    assert!(r.body.len() > 3_000_000);
    let c = reg.frontend("web").unwrap();
    assert!(c.bytes_in.load(Ordering::Relaxed) >= 2 << 20);
    assert!(c.bytes_out.load(Ordering::Relaxed) >= 3_000_000);
}

/// Issue #13: `bytes_in`/`bytes_out` count the heads as well as the bodies (as HAProxy
/// counts them), and the backend counts its sessions in `total_conns` as its server does.
#[tokio::test]
async fn byte_counters_include_heads_and_backends_count_sessions() {
    let a = echo("a").await;
    let (h, reg) = one_server(a.addr);
    let fe = addr_of(&h, "web");
    let mut body_out = 0;
    for _ in 0..3 {
        let r = post(fe, "/up", b"hello world".to_vec(), false).await;
        assert_eq!(r.status, 200);
        body_out += r.body.len() as u64;
    }
    // Counted when the response ends, which is before the client has all of it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = reg.frontend("web").unwrap();
    let min_head_in = "POST /up HTTP/1.1\r\nhost: test.local\r\n\r\n".len() as u64;
    let min_head_out = "HTTP/1.1 200 OK\r\n\r\n".len() as u64;
    let bytes_in = c.bytes_in.load(Ordering::Relaxed);
    let bytes_out = c.bytes_out.load(Ordering::Relaxed);
    assert!(bytes_in >= 3 * (11 + min_head_in), "bytes_in {bytes_in}");
    assert!(
        bytes_out >= body_out + 3 * min_head_out,
        "bytes_out {bytes_out}"
    );
    let be = reg.backend("be").unwrap();
    assert_eq!(be.counters.total_conns.load(Ordering::Relaxed), 3);
    assert_eq!(be.counters.bytes_in.load(Ordering::Relaxed), bytes_in);
    let s = be.server("s").unwrap();
    assert_eq!(s.counters.total_conns.load(Ordering::Relaxed), 3);
    assert_eq!(be.counters.active_conns.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn full_servers_are_skipped_while_another_has_room() {
    let (a, b) = (echo("a").await, echo("b").await);
    let mut sa = server("a", a.addr);
    sa.maxconn = Some(1);
    let mut sb = server("b", b.addr);
    sb.maxconn = Some(1);
    let (h, _reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend("be", Balance::Source, vec![sa, sb])],
    ));
    let fe = addr_of(&h, "web");
    // `balance source` sends one client to one server; with it full the second
    // concurrent request goes to the other one instead of queueing.
    let t0 = Instant::now();
    let (r1, r2) = tokio::join!(get(fe, "/?ms=300", &[]), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        get(fe, "/?ms=300", &[]).await
    });
    assert_ne!(r1.server(), r2.server());
    assert!(
        t0.elapsed() < Duration::from_millis(550),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn h2_client_concurrent_streams() {
    // h2c (prior knowledge) on a plain bind: the auto builder detects the preface.
    let a = echo("a").await;
    let (h, _reg) = one_server(a.addr);
    let fe = addr_of(&h, "web");
    tokio::time::timeout(T, async {
        let s = TcpStream::connect(fe).await.unwrap();
        let (tx, conn) =
            hyper::client::conn::http2::handshake(executor(), hyper_util::rt::TokioIo::new(s))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let mut tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let req = hyper::Request::get(format!("http://h2.test/s{i}?ms=50"))
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                collect(tx.send_request(req).await.unwrap()).await
            }));
        }
        let t0 = Instant::now();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.saw("host"), vec!["h2.test"]);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "streams ran concurrently"
        );
    })
    .await
    .unwrap();
}

/// HTTP/2: when `:authority` and `host` differ, the server gets `:authority` (RFC 9113
/// §8.3.1, as HAProxy) and ACLs see the same value.
#[tokio::test]
async fn h2_authority_wins_over_host() {
    let (a, b) = (echo("a").await, echo("b").await);
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    let mut acls = lb::acl::AclSet::default();
    acl(&mut acls, "is_auth hdr(host) -i auth.test");
    fe.use_backend = vec![UseBackend {
        backend: "be_auth".into(),
        cond: cond("if is_auth", &acls),
    }];
    let (h, _reg) = start(config(
        vec![fe],
        vec![
            backend("be", Balance::RoundRobin, vec![server("a", a.addr)]),
            backend("be_auth", Balance::RoundRobin, vec![server("b", b.addr)]),
        ],
    ));
    let fe = addr_of(&h, "web");
    tokio::time::timeout(T, async {
        let s = TcpStream::connect(fe).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(executor(), hyper_util::rt::TokioIo::new(s))
                .await
                .unwrap();
        tokio::spawn(conn);
        for (uri, host, server) in [
            ("http://auth.test/x", Some("other.test"), "b"),
            ("http://auth.test/x", None, "b"),
            ("http://other.test/x", Some("auth.test"), "a"),
        ] {
            let mut req = hyper::Request::get(uri);
            if let Some(host) = host {
                req = req.header("host", host);
            }
            let req = req
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let r = collect(tx.send_request(req).await.unwrap()).await;
            assert_eq!(r.status, 200);
            let want = uri.trim_start_matches("http://").trim_end_matches("/x");
            assert_eq!(r.saw("host"), vec![want], "{uri} host {host:?}");
            assert_eq!(r.server(), server, "{uri} host {host:?}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn websocket_tunnel_times_out_when_idle() {
    let a = echo("a").await;
    let (h, _reg) = one_server_tuned(a.addr, |_, be| {
        be.timeouts.tunnel = Some(Duration::from_millis(300))
    });
    let fe = addr_of(&h, "web");
    let t0 = Instant::now();
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(fe).await.unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 101"));
    })
    .await
    .expect("idle tunnel not closed");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
}

/// A server that answers the first request of each connection and drops the connection on
/// the second one without answering (as if it closed an idle connection just as the proxy
/// reused it): a bodiless GET is replayed on a fresh connection, no client-visible error.
#[tokio::test]
async fn stale_reused_connection_is_replayed() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut n = 0;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    buf.clear();
                    n += 1;
                    if n > 1 {
                        return;
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                        .await;
                }
            });
        }
    });
    let (h, _reg) = one_server(addr);
    let fe = addr_of(&h, "web");
    // One client connection, so both requests are served by the same worker (and pool).
    let s = TcpStream::connect(fe).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = || {
        hyper::Request::get("/")
            .header("host", "x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(
        collect(tx.send_request(req()).await.unwrap()).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = collect(tx.send_request(req()).await.unwrap()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "ok\n");
    task.abort();
}

/// A scripted HTTP/1.1 server for the upstream codec: reads each request head (and a
/// `content-length` body unless the path is `/early`) and answers by path with raw bytes.
/// Returns its address and the number of connections it accepted.
async fn scripted_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conns.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    if head.starts_with("connect ") {
                        // A tunnel that echoes, announced with the target it was asked for
                        // (a `cl0.` target: with the `content-length: 0` some servers send).
                        let cl = if path.starts_with("cl0.") {
                            "content-length: 0\r\n"
                        } else {
                            ""
                        };
                        let ok = format!(
                            "HTTP/1.1 200 Connection established\r\nx-target: {path}\r\n{cl}\r\n"
                        );
                        if s.write_all(ok.as_bytes()).await.is_err() {
                            return;
                        }
                        let (mut r, mut w) = s.split();
                        let _ = w.write_all(&buf).await;
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        return;
                    }
                    if path == "/early" {
                        // Answers before reading the (large) body, then closes.
                        let _ = s
                            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return;
                    }
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < len {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    buf.drain(..len);
                    if path == "/version" {
                        // The request line's version, as the body.
                        let v = head.split_whitespace().nth(2).unwrap_or("").to_owned();
                        let resp =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{v}", v.len());
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    if path == "/hang" {
                        // Takes the whole body, never answers.
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        return;
                    }
                    let parts: Vec<&[u8]> = match path.as_str() {
                        "/chunked" => vec![
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                            b"lo\r\n6;ext=1\r\n world\r\n",
                            b"0\r\nX-Trailer: t\r\n\r\n",
                        ],
                        "/trailers" => vec![
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n2\r\nok\r\n",
                            b"0\r\nX-Checksum: abc\r\n\r\n",
                        ],
                        "/continue" => vec![
                            b"HTTP/1.1 100 Continue\r\n\r\n",
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                        ],
                        "/head" => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"],
                        // A server that wrongly sends a body after its HEAD response.
                        "/headbody" => {
                            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"oops\n"]
                        }
                        "/badchunk" => vec![
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
                        ],
                        "/close" => vec![b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"close"],
                        _ => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
                    };
                    for p in parts {
                        if s.write_all(p).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if path == "/close" {
                        return;
                    }
                    if path == "/once" {
                        // Keep-alive in the headers, yet closed shortly after: the proxy
                        // pools a connection that the server then closes.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, conns, task)
}

/// A server that sends a body after a HEAD response leaves stray bytes on the pooled
/// connection: the next requests must not see them as their response. A replayable
/// request that meets them is resent on a fresh connection (issue #13 item 4; before,
/// such a request got lb's 502); one that may not be replayed is sent on another
/// connection, the pooled one being probed first.
#[tokio::test]
async fn stray_bytes_after_head_do_not_reach_the_next_request() {
    let (addr, conns, task) = scripted_server().await;
    let (h, _reg) = one_server_one_worker(addr);
    let mut tx = one_client(addr_of(&h, "web")).await;
    for round in 0..3 {
        let r = collect(
            tx.send_request(request("HEAD", "/headbody", b""))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "round {round}: HEAD");
        // The stray body arrives after lb has pooled the connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..2 {
            let r = collect(tx.send_request(request("GET", "/", b"")).await.unwrap()).await;
            assert_eq!(r.status, 200, "round {round}, GET {i}: {r:?}");
            assert_eq!(r.body, "ok");
        }
        // A request that may not be replayed finds the stray bytes before it is sent.
        let r = collect(
            tx.send_request(request("HEAD", "/headbody", b""))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "round {round}: HEAD");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = collect(
            tx.send_request(request("POST", "/", b"data"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "round {round}, POST: {r:?}");
        assert_eq!(r.body, "ok");
    }
    // Each HEAD's connection was given up once its stray bytes showed (3 fresh ones at
    // least, beyond the first).
    assert!(
        conns.load(Ordering::SeqCst) >= 4,
        "{}",
        conns.load(Ordering::SeqCst)
    );
    task.abort();
}

/// One client connection to `fe`, so that every request runs on the same worker (and the
/// same idle pool).
async fn one_client(
    fe: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let s = TcpStream::connect(fe).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn request(
    method: &str,
    path: &str,
    body: &[u8],
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "x")
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .unwrap()
}

/// An HTTP/1.0 request without Host goes to the server as HTTP/1.0 (as HAProxy relays it;
/// as HTTP/1.1 it would be invalid without Host) on a connection not reused after it;
/// with Host it goes as HTTP/1.1.
#[tokio::test]
async fn http10_request_without_host_stays_http10_upstream() {
    let (addr, conns, task) = scripted_server().await;
    let (h, _reg) = one_server_one_worker(addr);
    let fe = addr_of(&h, "web");
    let out = raw(fe, b"GET /version HTTP/1.0\r\n\r\n").await;
    assert!(out.ends_with("\r\n\r\nhttp/1.0"), "{out:?}");
    let out = raw(fe, b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(out.ends_with("\r\n\r\nhttp/1.1"), "{out:?}");
    let out = raw(fe, b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(out.ends_with("\r\n\r\nhttp/1.1"), "{out:?}");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "the HTTP/1.0 exchange's connection is not reused; the HTTP/1.1 one is"
    );
    task.abort();
}

/// A chunked body broken from its first line (which came with the head) gives 502, as in
/// HAProxy, instead of a connection cut before the client got anything.
#[tokio::test]
async fn body_broken_from_the_start_gives_502() {
    let (addr, _conns, task) = scripted_server().await;
    let (h, _reg) = one_server(addr);
    let r = get(addr_of(&h, "web"), "/badchunk", &[]).await;
    assert_eq!(r.status, 502);
    task.abort();
}

/// CONNECT is forwarded with its authority-form target and, on a 2xx, both connections
/// become a tunnel (HAProxy's behaviour in HTTP mode).
#[tokio::test]
async fn connect_is_tunnelled() {
    let (addr, _conns, task) = scripted_server().await;
    let (h, _reg) = one_server(addr);
    let fe = addr_of(&h, "web");
    // The second server answers `200` with `content-length: 0` (RFC 9110 §9.3.6: ignored).
    for target in ["example.com:443", "cl0.example.com:443"] {
        tokio::time::timeout(T, async {
            let mut c = TcpStream::connect(fe).await.unwrap();
            let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            c.write_all(req.as_bytes()).await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                c.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head:?}");
            assert!(head.contains(&format!("x-target: {target}")), "{head:?}");
            for msg in [&b"ping"[..], b"through the tunnel"] {
                c.write_all(msg).await.unwrap();
                let mut back = vec![0u8; msg.len()];
                c.read_exact(&mut back).await.unwrap();
                assert_eq!(back, msg);
            }
        })
        .await
        .expect("CONNECT exchange timed out");
    }
    task.abort();
}

/// CONNECT over HTTP/2 (RFC 9113 §8.5): the client gets the server's 2xx and the stream
/// becomes the tunnel.
#[tokio::test]
async fn h2_connect_is_tunnelled() {
    let (addr, _conns, task) = scripted_server().await;
    let (h, _reg) = one_server(addr);
    let fe = addr_of(&h, "web");
    tokio::time::timeout(T, async {
        let s = TcpStream::connect(fe).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(executor(), hyper_util::rt::TokioIo::new(s))
                .await
                .unwrap();
        tokio::spawn(conn);
        for target in ["example.com:443", "cl0.example.com:443"] {
            let req = hyper::Request::builder()
                .method(hyper::Method::CONNECT)
                .uri(target)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let r = tx.send_request(req).await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-target"], target);
            let mut t = hyper_util::rt::TokioIo::new(hyper::upgrade::on(r).await.unwrap());
            for msg in [&b"ping"[..], b"through the tunnel"] {
                t.write_all(msg).await.unwrap();
                let mut back = vec![0u8; msg.len()];
                t.read_exact(&mut back).await.unwrap();
                assert_eq!(back, msg);
            }
        }
    })
    .await
    .expect("h2 CONNECT exchange timed out");
    task.abort();
}

#[tokio::test]
async fn upstream_framings_and_connection_reuse() {
    let (addr, conns, task) = scripted_server().await;
    let (h, _reg) = one_server(addr);
    let mut tx = one_client(addr_of(&h, "web")).await;
    let mut send = |m: &'static str, p: &'static str| {
        let f = tx.send_request(request(m, p, b""));
        async move { collect(f.await.unwrap()).await }
    };
    // Chunked, split across writes; extensions and trailers dropped, data intact.
    let r = send("GET", "/chunked").await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello world"));
    // Content-Length.
    let r = send("GET", "/").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    // An interim 100 is skipped; the final response follows.
    let r = send("GET", "/continue").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    // HEAD: no body whatever Content-Length says, and the header reaches the client.
    let r = send("HEAD", "/head").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(r.header("content-length").as_deref(), Some("1000"));
    // All of the above on one server connection.
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    // Delimited by the close: complete, and that connection is not reused.
    let r = send("GET", "/close").await;
    assert_eq!((r.status, r.body.as_str()), (200, "until close"));
    let r = send("GET", "/").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    task.abort();
}

/// A POST (not replayable) must not go out on a pooled connection the server has closed:
/// the pool checks it and opens a fresh one; no client-visible error.
#[tokio::test]
async fn pooled_connection_closed_by_server_is_not_used_for_a_post() {
    let (addr, conns, task) = scripted_server().await;
    let (h, _reg) = one_server(addr);
    let mut tx = one_client(addr_of(&h, "web")).await;
    let r = collect(tx.send_request(request("GET", "/once", b"")).await.unwrap()).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = collect(
        tx.send_request(request("POST", "/", b"payload"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    task.abort();
}

/// A server that answers before reading the request body: the client gets that answer.
#[tokio::test]
async fn early_response_ends_the_upload() {
    let (addr, _conns, task) = scripted_server().await;
    let (h, _reg) = one_server(addr);
    let r = post(addr_of(&h, "web"), "/early", vec![1u8; 8 << 20], false).await;
    assert_eq!(r.status, 413);
    task.abort();
}

/// Upload timeouts per side, as HAProxy: a client that stalls in its body gets 408 after
/// `timeout client`; a slow but steady upload outlasting `timeout server` is not cut; a
/// server that takes the body and never answers gets 504 after `timeout server`.
#[tokio::test]
async fn upload_timeouts_are_per_side() {
    let (addr, _conns, task) = scripted_server().await;
    let (h, _reg) = one_server_tuned(addr, |fe, be| {
        fe.timeouts.client = Some(Duration::from_millis(300));
        be.timeouts.server = Some(Duration::from_millis(300));
    });
    let fe = addr_of(&h, "web");

    // Stalls after 10 of 100 bytes.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(fe).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    // 8 chunks 150 ms apart: 1.2 s in all, each within timeout client; the server reads
    // along, so timeout server never runs out.
    let mut s = TcpStream::connect(fe).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 80\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"0123456789").await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");

    // The whole body goes out, no answer.
    let t0 = Instant::now();
    let r = post(fe, "/hang", vec![5u8; 1000], false).await;
    assert_eq!(r.status, 504);
    assert!(t0.elapsed() < Duration::from_secs(3));
    task.abort();
}

/// Trailer fields of a chunked response reach an HTTP/1.1 client that asked for them
/// (`TE: trailers`, announced by `Trailer`) and an h2 client.
#[tokio::test]
async fn response_trailers_are_forwarded() {
    use http_body_util::BodyExt;
    let (addr, _conns, task) = scripted_server().await;
    let (h, _reg) = one_server(addr);
    let fe = addr_of(&h, "web");
    let mut tx = one_client(fe).await;
    let mut req = request("GET", "/trailers", b"");
    req.headers_mut()
        .insert("te", http::HeaderValue::from_static("trailers"));
    let r = tx.send_request(req).await.unwrap();
    assert_eq!(r.headers()["trailer"], "X-Checksum");
    let body = r.into_body().collect().await.unwrap();
    assert_eq!(
        body.trailers()
            .and_then(|t| t.get("x-checksum"))
            .map(|v| v.as_bytes()),
        Some(&b"abc"[..])
    );
    assert_eq!(&body.to_bytes()[..], b"ok");

    let s = TcpStream::connect(fe).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(executor(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://x/trailers")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let body = h2
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        body.trailers()
            .and_then(|t| t.get("x-checksum"))
            .map(|v| v.as_bytes()),
        Some(&b"abc"[..])
    );
    assert_eq!(&body.to_bytes()[..], b"ok");
    task.abort();
}

/// Decodes a chunked body at the start of `b`: (data, number of chunks), or `None` when
/// it is not complete yet.
fn dechunk(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (mut data, mut chunks, mut at) = (Vec::new(), 0, 0);
    loop {
        let nl = b[at..].windows(2).position(|w| w == b"\r\n")?;
        let n = usize::from_str_radix(std::str::from_utf8(&b[at..at + nl]).ok()?, 16).ok()?;
        at += nl + 2;
        if n == 0 {
            return b[at..].starts_with(b"\r\n").then_some((data, chunks));
        }
        if b.len() < at + n + 2 {
            return None;
        }
        data.extend_from_slice(&b[at..at + n]);
        chunks += 1;
        at += n + 2;
    }
}

/// Chunk framing costs per chunk on neither side: 50,000 1-byte chunks of an upload
/// reach the server whole, gathered into far fewer chunks (as HAProxy re-chunks), and so
/// do 50,000 1-byte chunks of a response reaching the client (#19 item 12).
#[tokio::test]
async fn tiny_chunks_are_gathered_both_ways() {
    const N: usize = 50_000;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = vec![0u8; 64 * 1024];
                loop {
                    let n = s.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    if head.starts_with("post") {
                        let Some(got) = dechunk(&buf[end + 4..]) else {
                            continue;
                        };
                        *seen.lock().unwrap() = Some(got);
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                    } else {
                        let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
                        for _ in 0..N {
                            out.extend_from_slice(b"1\r\ny\r\n");
                        }
                        out.extend_from_slice(b"0\r\n\r\n");
                        let _ = s.write_all(&out).await;
                    }
                    return;
                }
            });
        }
    });
    let (h, _reg) = one_server(addr);
    let fe = addr_of(&h, "web");
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut req =
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..N {
            req.extend_from_slice(b"1\r\nx\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let out = raw(fe, &req).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
        let (data, chunks) = seen
            .lock()
            .unwrap()
            .take()
            .expect("the server got the body");
        assert_eq!(data, vec![b'x'; N]);
        assert!(chunks <= N / 10, "upload forwarded as {chunks} chunks");

        let mut s = TcpStream::connect(fe).await.unwrap();
        s.write_all(b"GET /down HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let (data, chunks) = dechunk(&out[end + 4..]).expect("a whole chunked body");
        assert_eq!(data, vec![b'y'; N]);
        assert!(chunks <= N / 10, "response relayed as {chunks} chunks");
    })
    .await
    .expect("tiny chunks timed out");
    task.abort();
}

/// A server that answers each request with `103 Early Hints` (and a `102`), and only
/// once told to (`go`), with the final `200`; a `POST` first gets the server's own
/// `100 Continue`, then is read whole.
async fn early_hints_server() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (go_tx, mut go) = tokio::sync::mpsc::channel::<()>(4);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            loop {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                    continue;
                };
                let post = buf.starts_with(b"POST");
                buf.drain(..end + 4);
                if post {
                    s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
                    while buf.len() < 4 {
                        let n = s.read(&mut tmp).await.unwrap();
                        assert!(n > 0, "the body came");
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    buf.drain(..4);
                }
                s.write_all(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n",
                )
                .await
                .unwrap();
                s.write_all(b"HTTP/1.1 102 Processing\r\n\r\n")
                    .await
                    .unwrap();
                if go.recv().await.is_none() {
                    return;
                }
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
        }
    });
    (addr, go_tx, task)
}

/// Reads from `s` until `out` ends with `end` (bounded by the caller's timeout).
async fn read_until(s: &mut TcpStream, out: &mut Vec<u8>, end: &[u8]) {
    let mut tmp = [0u8; 4096];
    while !out.ends_with(end) {
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(out));
        out.extend_from_slice(&tmp[..n]);
    }
}

/// Issue #13: a server's interim responses (103 Early Hints, 102) reach the HTTP/1
/// client as they come, before the final response, as HAProxy 2.6 forwards them (to
/// HTTP/1.0 clients too); a server's `100 Continue` after lb's own is not sent twice.
#[tokio::test]
async fn interim_responses_are_relayed_before_the_final_one() {
    const HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n";
    let (addr, go, task) = early_hints_server().await;
    let (h, _reg) = one_server(addr);
    let fe = addr_of(&h, "web");
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(fe).await.unwrap();
        for (round, version) in [(0, "1.1"), (1, "1.1"), (2, "1.0")] {
            let ka = if version == "1.0" {
                "Connection: keep-alive\r\n"
            } else {
                ""
            };
            let req = format!("GET /r{round} HTTP/{version}\r\nHost: x\r\n{ka}\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            // The hints arrive while the server still holds its final response back.
            let mut out = Vec::new();
            read_until(&mut s, &mut out, b"102 Processing\r\n\r\n").await;
            assert_eq!(out, HINTS, "round {round}");
            go.send(()).await.unwrap();
            out.clear();
            read_until(&mut s, &mut out, b"\r\n\r\nok").await;
            let text = String::from_utf8_lossy(&out).into_owned();
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n"),
                "round {round}: {text}"
            );
        }
        // Expect: 100-continue: one 100 (lb's, when the body is asked for), the server's
        // own is not repeated; then the hints and the final response.
        s.write_all(
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        read_until(&mut s, &mut out, b"100 Continue\r\n\r\n").await;
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"body").await.unwrap();
        out.clear();
        read_until(&mut s, &mut out, b"102 Processing\r\n\r\n").await;
        assert_eq!(out, HINTS);
        go.send(()).await.unwrap();
        out.clear();
        read_until(&mut s, &mut out, b"\r\n\r\nok").await;
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    })
    .await
    .expect("interim responses timed out");
    task.abort();
}
