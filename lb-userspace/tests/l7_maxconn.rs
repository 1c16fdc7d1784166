//! `maxconn`, the process's (`[global] maxconn`) and a frontend's: at the limit lb stops
//! accepting, the next client waits (in the kernel's backlog) and is served once a
//! connection closes. Real loopback sockets; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use l7_support::*;
use lb::config::model::*;

/// How long a connection that must not be served is watched.
const QUIET: Duration = Duration::from_millis(700);

/// Opens a connection and sends one keep-alive HTTP/1.1 request.
async fn open(addr: SocketAddr) -> TcpStream {
    let mut s = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    s
}

/// The first bytes the connection receives within `wait`, `None` if nothing came.
async fn first_bytes(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(_) => Some(String::new()),
        Err(_) => None,
    }
}

/// Asserts that `s` is answered with a 200 in time.
async fn served(s: &mut TcpStream, what: &str) {
    let got = first_bytes(s, T).await;
    assert!(
        got.as_deref()
            .is_some_and(|b| b.starts_with("HTTP/1.1 200")),
        "{what}: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_maxconn_counts_every_userspace_listener() {
    let echo = echo("a").await;
    let mut tcp_fe = frontend("tcp", vec![bind("127.0.0.1:0")], Some("tcpbe"));
    tcp_fe.mode = Mode::Tcp;
    let mut tcp_be = backend("tcpbe", Balance::RoundRobin, vec![server("a", echo.addr)]);
    tcp_be.mode = Mode::Tcp;
    let mut cfg = config(
        vec![
            frontend("web", vec![bind("127.0.0.1:0")], Some("be")),
            tcp_fe,
        ],
        vec![
            backend("be", Balance::RoundRobin, vec![server("a", echo.addr)]),
            tcp_be,
        ],
    );
    cfg.global.maxconn = Some(2);
    // Several workers, each with its own socket per bind: the limit is the process's.
    cfg.global.threads = Some(3);
    let (h, _reg) = start(cfg);
    let web = addr_of(&h, "web");
    let tcp = addr_of(&h, "tcp");

    // One connection on each frontend: both served, and kept open.
    let mut c1 = open(web).await;
    served(&mut c1, "first connection (http)").await;
    let mut c2 = open(tcp).await;
    served(&mut c2, "second connection (userspace tcp)").await;

    // The third, on either frontend, waits: the kernel completed its handshake, lb has
    // not accepted it.
    let mut c3 = open(web).await;
    assert_eq!(
        first_bytes(&mut c3, QUIET).await,
        None,
        "a third connection is not served while two are open"
    );
    let mut c4 = open(tcp).await;
    assert_eq!(
        first_bytes(&mut c4, QUIET).await,
        None,
        "nor a third one on the other frontend"
    );

    // One closes: exactly one of the waiting ones is served, then the other after the
    // next close.
    drop(c1);
    let (a, b) = tokio::join!(
        first_bytes(&mut c3, Duration::from_secs(3)),
        first_bytes(&mut c4, QUIET + Duration::from_secs(1))
    );
    let served_now = [&a, &b]
        .iter()
        .filter(|r| r.as_deref().is_some_and(|x| x.starts_with("HTTP/1.1 200")))
        .count();
    assert_eq!(served_now, 1, "one slot freed, one served: {a:?} {b:?}");
    drop(c2);
    let waiting = if a.is_some() { &mut c4 } else { &mut c3 };
    served(waiting, "the last waiting connection, after a second close").await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_maxconn_stops_accepting_until_one_closes() {
    let echo = echo("a").await;
    let mut cfg = web_to(echo.addr);
    cfg.frontends[0].maxconn = Some(1);
    cfg.global.threads = Some(2);
    let (h, _reg) = start(cfg);
    let web = addr_of(&h, "web");
    let mut c1 = open(web).await;
    served(&mut c1, "first").await;
    let mut c2 = open(web).await;
    assert_eq!(first_bytes(&mut c2, QUIET).await, None, "over maxconn 1");
    drop(c1);
    served(&mut c2, "after the first closed").await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_maxconn_nothing_waits() {
    let echo = echo("a").await;
    let mut cfg = web_to(echo.addr);
    cfg.global.threads = Some(2);
    let (h, _reg) = start(cfg);
    let web = addr_of(&h, "web");
    let mut open_conns = Vec::new();
    for i in 0..5 {
        let mut c = open(web).await;
        served(&mut c, &format!("connection {i}")).await;
        open_conns.push(c);
    }
    h.shutdown(Duration::from_secs(1)).await;
}
