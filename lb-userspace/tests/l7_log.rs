//! Access logs: HAProxy httplog lines (and tcplog for `mode tcp`) through `tracing`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use l7_support::*;
use lb::config::model::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's log capture (one subscriber for all the tests of this file).
fn capture() -> Capture {
    static CAP: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAP.get_or_init(|| {
        let cap = Capture::default();
        let c2 = cap.clone();
        tracing_subscriber::fmt()
            .with_writer(move || c2.clone())
            .with_ansi(false)
            .with_target(true)
            .with_max_level(tracing::Level::INFO)
            .init();
        cap
    })
    .clone()
}

/// The first access-log line containing `needle` (waits a little for it).
async fn log_line(cap: &Capture, needle: &str) -> String {
    for _ in 0..100 {
        let text = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
        if let Some(l) = text
            .lines()
            .find(|l| l.contains("lb::access") && l.contains(needle))
        {
            return l.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    String::new()
}

/// `timeout client` bounds writes to the client: one that asks for a large body and
/// never reads is cut off (both its connection and lb's to the server) within the
/// timeout, and logged with HAProxy's termination state `cD` (#19 item 11).
#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cap = capture();
    let (addr, upstream) = endless_body_server().await;
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.timeouts.client = Some(Duration::from_secs(1));
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend("be", Balance::RoundRobin, vec![server("a", addr)])],
    ));
    let fe = addr_of(&h, "web");
    let mut c = tokio::net::TcpStream::connect(fe).await.unwrap();
    let t0 = std::time::Instant::now();
    c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: wait for lb to give up on the server side.
    let cut = tokio::time::timeout(Duration::from_secs(10), upstream)
        .await
        .expect("lb closed its server connection")
        .unwrap();
    let took = cut.into_std().duration_since(t0);
    assert!(
        took < Duration::from_secs(6),
        "server side closed after {took:?}"
    );
    // The client's connection is closed too: reading it comes to an end, short of the body.
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n as u64,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "client connection still open");
    assert!(got < 1_000_000_000, "{got}");
    let line = log_line(&cap, "GET /big").await;
    assert!(line.contains(" cD-- "), "{line}");
}

#[tokio::test]
async fn access_log_lines() {
    let cap = capture();
    let a = echo("a").await;
    let (h, _reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", a.addr)],
        )],
    ));
    let fe = addr_of(&h, "web");
    assert_eq!(get(fe, "/logged?q=1", &[]).await.status, 200);
    let line = log_line(&cap, "GET /logged").await;
    assert!(line.contains(" web be/a 0/"), "{line}");
    assert!(line.contains(" 200 "), "{line}");
    assert!(line.ends_with("\"GET /logged?q=1 HTTP/1.1\""), "{line}");
}

/// The httplog line's `%ac/%fc/%bc/%sc` are the connection counts when it is written, the
/// logged session included: two idle client connections and the request's own make the
/// frontend's 3, the request is the backend's and the server's only session.
#[tokio::test]
async fn access_log_counts_connections() {
    let cap = capture();
    let a = echo("a").await;
    let (h, _reg) = start(config(
        vec![frontend("cnt", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", a.addr)],
        )],
    ));
    let fe = addr_of(&h, "cnt");
    let _idle1 = tokio::net::TcpStream::connect(fe).await.unwrap();
    let _idle2 = tokio::net::TcpStream::connect(fe).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(fe, "/counted", &[]).await.status, 200);
    let line = log_line(&cap, "GET /counted").await;
    // `... 200 BYTES - - ---- ac/fc/bc/sc/retries 0/0 "GET ..."`
    let counts = line
        .split(" ---- ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default();
    let n: Vec<u64> = counts.split('/').filter_map(|x| x.parse().ok()).collect();
    assert_eq!(n.len(), 5, "{line}");
    // (The process count spans this file's other tests, which run alongside.)
    assert!(n[0] >= 3, "actconn {line}");
    assert_eq!(
        &n[1..],
        &[3, 1, 1, 0],
        "feconn/beconn/srv_conn/retries {line}"
    );
}
