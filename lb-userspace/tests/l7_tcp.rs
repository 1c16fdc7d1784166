//! Userspace `mode tcp`: plain proxying and TLS passthrough routed by SNI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use l7_support::*;
use lb::acl::AclSet;
use lb::config::model::*;

/// A raw TCP echo server that prefixes its name once.
async fn tcp_echo(name: &'static str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

fn tcp_frontend(name: &str, default_backend: &str) -> Frontend {
    let mut fe = frontend(name, vec![bind("127.0.0.1:0")], Some(default_backend));
    fe.mode = Mode::Tcp;
    fe
}

fn tcp_backend(name: &str, servers: Vec<Server>) -> Backend {
    let mut be = backend(name, Balance::RoundRobin, servers);
    be.mode = Mode::Tcp;
    be
}

/// Sends `ping` through the proxy at `fe` and expects server `a`'s echo.
async fn ping_through(fe: std::net::SocketAddr) {
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(fe).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"a\nping");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn plain_tcp_proxy_with_retry() {
    let (a, _ta) = tcp_echo("a").await;
    let dead = dead_addr().await;
    let mut be = tcp_backend("be", vec![server("dead", dead), server("a", a)]);
    be.retries = 1;
    let (h, reg) = start(config(vec![tcp_frontend("tcp", "be")], vec![be]));
    let fe = addr_of(&h, "tcp");
    for _ in 0..3 {
        ping_through(fe).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fe_c = reg.frontend("tcp").unwrap();
    assert!(fe_c.bytes_in.load(std::sync::atomic::Ordering::Relaxed) >= 12);
}

#[tokio::test]
async fn tcp_idle_timeout_closes() {
    let (a, _ta) = tcp_echo("a").await;
    let mut fe = tcp_frontend("tcp", "be");
    fe.timeouts.client = Some(Duration::from_millis(200));
    let mut be = tcp_backend("be", vec![server("a", a)]);
    be.timeouts.server = Some(Duration::from_millis(200));
    be.timeouts.tunnel = None;
    let (h, _reg) = start(config(vec![fe], vec![be]));
    let fe = addr_of(&h, "tcp");
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(fe).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        assert_eq!(out, b"a\n");
    })
    .await
    .expect("idle tunnel not closed");
}

/// An L7 TLS frontend standing in for a TLS server behind the passthrough.
fn tls_server(dir: &TempDir, name: &str, echo: &Echo) -> (Config, Vec<u8>) {
    let (p, der) = make_cert(&dir.0, name);
    let fe = frontend(
        &format!("tls-{name}"),
        vec![tls_bind("127.0.0.1:0", vec![p], &["http/1.1"])],
        Some("be"),
    );
    (
        config(
            vec![fe],
            vec![backend(
                "be",
                Balance::RoundRobin,
                vec![server(&echo.name, echo.addr)],
            )],
        ),
        der,
    )
}

#[tokio::test]
async fn tls_passthrough_keeps_end_to_end_tls() {
    let dir = TempDir::new("pass");
    let e = echo("inner").await;
    let (cfg, der) = tls_server(&dir, "a.test", &e);
    let (inner, _r) = start(cfg);
    let inner_addr = addr_of(&inner, "tls-a.test");
    let mut fe = tcp_frontend("pass", "tls");
    fe.inspect_delay = Some(Duration::from_secs(2));
    let (h, _reg) = start(config(
        vec![fe],
        vec![tcp_backend("tls", vec![server("t", inner_addr)])],
    ));
    let (_, leaf, r) = tls_get(addr_of(&h, "pass"), "a.test", &["http/1.1"]).await;
    assert_eq!(leaf, der, "the server's own certificate comes through");
    assert_eq!(r.server(), "inner");
}

/// `use_backend … if { req.ssl_sni -i b.test }` after `tcp-request inspect-delay`. Needs
/// the ACL engine.
#[tokio::test]
async fn tls_passthrough_routed_by_sni() {
    let dir = TempDir::new("sni");
    let (ea, eb) = (echo("inner-a").await, echo("inner-b").await);
    let (ca, da) = tls_server(&dir, "a.test", &ea);
    let (cb, db) = tls_server(&dir, "b.test", &eb);
    let (ia, _r1) = start(ca);
    let (ib, _r2) = start(cb);
    let mut acls = AclSet::default();
    acl(&mut acls, "to_b req.ssl_sni -i b.test");
    let mut fe = tcp_frontend("pass", "ta");
    fe.inspect_delay = Some(Duration::from_secs(2));
    fe.tcp_request = vec![TcpRequestRule {
        action: TcpAction::Accept,
        cond: Some(cond("if { req.ssl_sni -m found }", &acls)),
    }];
    fe.use_backend = vec![UseBackend {
        backend: "tb".into(),
        cond: cond("if to_b", &acls),
    }];
    fe.acls = acls;
    let (h, _reg) = start(config(
        vec![fe],
        vec![
            tcp_backend("ta", vec![server("a", addr_of(&ia, "tls-a.test"))]),
            tcp_backend("tb", vec![server("b", addr_of(&ib, "tls-b.test"))]),
        ],
    ));
    let fe = addr_of(&h, "pass");
    let (_, leaf, r) = tls_get(fe, "b.test", &["http/1.1"]).await;
    assert_eq!(leaf, db);
    assert_eq!(r.server(), "inner-b");
    let (_, leaf, r) = tls_get(fe, "a.test", &["http/1.1"]).await;
    assert_eq!(leaf, da);
    assert_eq!(r.server(), "inner-a");
}

/// `mode tcp` with `bind … ssl`: TLS terminated, plain TCP to the server.
#[tokio::test]
async fn tcp_mode_tls_termination() {
    let dir = TempDir::new("tcp-ssl");
    let (pem, der) = make_cert(&dir.0, "t.test");
    let (a, _ta) = tcp_echo("a").await;
    let mut fe = tcp_frontend("tcps", "be");
    fe.binds = vec![tls_bind("127.0.0.1:0", vec![pem], &[])];
    let (h, _reg) = start(config(
        vec![fe],
        vec![tcp_backend("be", vec![server("a", a)])],
    ));
    let fe = addr_of(&h, "tcps");
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(fe).await.unwrap();
        let mut tls = connector(&[])
            .connect(
                rustls::pki_types::ServerName::try_from("t.test").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
            der
        );
        tls.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 6];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"a\nping");
    })
    .await
    .unwrap();
}

/// A `mode tcp` backend whose one rule is `tcp-request content reject if !internal`,
/// `internal` being `src NET`.
fn guarded_backend(name: &str, server_addr: std::net::SocketAddr, net: &str) -> Backend {
    let mut be = tcp_backend(name, vec![server("a", server_addr)]);
    let mut acls = AclSet::default();
    acl(&mut acls, &format!("internal src {net}"));
    be.tcp_request = vec![TcpRequestRule {
        action: TcpAction::Reject,
        cond: Some(cond("if !internal", &acls)),
    }];
    be.acls = acls;
    be
}

/// `tcp-request content reject` in a `mode tcp` backend runs once the backend is chosen,
/// with the backend's ACLs: a client it matches is closed without reaching a server; a
/// backend whose rule does not match proxies as usual.
#[tokio::test]
async fn backend_tcp_request_content_rules() {
    let (a, _ta) = tcp_echo("a").await;
    let fe = tcp_frontend("tcp", "guarded");
    let guarded = guarded_backend("guarded", a, "10.0.0.0/8");
    let (h, reg) = start(config(vec![fe], vec![guarded]));
    let fe_addr = addr_of(&h, "tcp");
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(fe_addr).await.unwrap();
        let _ = s.write_all(b"ping").await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        assert_eq!(out, b"", "a rejected client gets nothing from the server");
    })
    .await
    .expect("rejected connection not closed");
    let be = reg.backend("guarded").unwrap();
    let srv = be.server("a").unwrap();
    assert_eq!(
        srv.counters
            .total_conns
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the server was never connected"
    );

    // The same backend with a rule that does not match the client proxies.
    let fe = tcp_frontend("tcp", "be");
    let be = guarded_backend("be", a, "127.0.0.0/8");
    let (h, _reg) = start(config(vec![fe], vec![be]));
    ping_through(addr_of(&h, "tcp")).await;
}
