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

#[tokio::test]
async fn access_log_lines() {
    let cap = Capture::default();
    let c2 = cap.clone();
    tracing_subscriber::fmt()
        .with_writer(move || c2.clone())
        .with_ansi(false)
        .with_target(true)
        .with_max_level(tracing::Level::INFO)
        .init();
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
    let mut line = String::new();
    for _ in 0..50 {
        let text = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
        if let Some(l) = text.lines().find(|l| l.contains("lb::access")) {
            line = l.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(line.contains(" web be/a 0/"), "{line}");
    assert!(line.contains(" 200 "), "{line}");
    assert!(line.ends_with("\"GET /logged?q=1 HTTP/1.1\""), "{line}");
}
