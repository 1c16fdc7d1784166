//! `hard_stop_after` and the soft stop of listeners a reload removes (HAProxy's old process
//! on reload): their idle connections are closed at once, a request in flight may finish
//! until `hard_stop_after`, then the connection is closed. Listeners a reload keeps are
//! not touched. Real loopback sockets; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use l7_support::*;
use lb::config::model::*;

fn cfg(frontend: &str, server: std::net::SocketAddr, hard: Duration) -> Config {
    let mut c = config(
        vec![l7_support::frontend(
            frontend,
            vec![bind("127.0.0.1:0")],
            Some("be"),
        )],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![l7_support::server("a", server)],
        )],
    );
    c.global.process.hard_stop_after = hard;
    c
}

/// Reads until EOF or an error; the bytes read and when it ended (`None`: not within `limit`).
async fn read_to_end(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let r = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        r.ok().map(|()| started.elapsed()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_closes_a_request_in_flight_after_hard_stop_after() {
    let echo = echo("a").await;
    let hard = Duration::from_millis(600);
    let (h, _reg) = start(cfg("old", echo.addr, hard));
    let addr = addr_of(&h, "old");
    let mut slow = TcpStream::connect(addr).await.unwrap();
    // The server answers after 8 s.
    slow.write_all(b"GET /?ms=8000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.reload(Arc::new(cfg("new", echo.addr, hard))).unwrap();
    let (got, ended) = read_to_end(&mut slow, Duration::from_secs(6)).await;
    let ended = ended.expect("closed before the server answered");
    assert!(
        ended >= Duration::from_millis(500) && ended < Duration::from_secs(4),
        "closed after {ended:?}: {got:?}"
    );
    assert!(!got.contains("200"), "{got:?}");
    // The new listener serves.
    assert_eq!(get(addr_of(&h, "new"), "/", &[]).await.status, 200);
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_closes_idle_keep_alive_connections_at_once() {
    let echo = echo("a").await;
    let (h, _reg) = start(cfg("old", echo.addr, Duration::from_secs(30)));
    let addr = addr_of(&h, "old");
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(T, c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    h.reload(Arc::new(cfg("new", echo.addr, Duration::from_secs(30))))
        .unwrap();
    let (_, ended) = read_to_end(&mut c, Duration::from_secs(3)).await;
    assert!(
        ended.is_some(),
        "an idle connection of a removed listener stays open"
    );
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_listener_lets_its_requests_finish_across_a_reload() {
    let echo = echo("a").await;
    let hard = Duration::from_millis(300);
    let (h, _reg) = start(cfg("web", echo.addr, hard));
    let addr = addr_of(&h, "web");
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /?ms=1500 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.reload(Arc::new(cfg("web", echo.addr, hard))).unwrap();
    let (got, ended) = read_to_end(&mut slow, T).await;
    assert!(ended.is_some(), "{got:?}");
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    h.shutdown(Duration::from_secs(1)).await;
}
