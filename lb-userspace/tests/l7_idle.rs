//! Idle keep-alive HTTP/1 connections own no buffers (issue #13 item 2): their read
//! buffer goes back to the worker's pool and their write buffer is let go once a
//! response is done. Alone in its file: the count it reads is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use l7_support::*;
use lb::l7::h1::conn::buffered_connections;

/// Clients kept open at once.
const N: usize = 40;

/// Reads one response (its head and Content-Length body) from `s`; its status.
async fn response(s: &mut TcpStream) -> u16 {
    let mut out = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if out.len() >= end + 4 + len {
                assert_eq!(out.len(), end + 4 + len, "one response at a time");
                return head[9..12].parse().unwrap();
            }
        }
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&tmp[..n]);
    }
}

/// Waits (bounded) until `buffered_connections()` is `want`; the last value seen.
async fn settle(want: usize) -> usize {
    for _ in 0..100 {
        if buffered_connections() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    buffered_connections()
}

#[tokio::test]
async fn idle_keep_alive_connections_hold_no_buffers() {
    let a = echo("a").await;
    let (h, _reg) = start(web_to(a.addr));
    let fe = addr_of(&h, "web");
    tokio::time::timeout(T, async {
        let mut clients = Vec::new();
        for _ in 0..N {
            clients.push(TcpStream::connect(fe).await.unwrap());
        }
        // Connected, nothing sent yet: no buffer.
        assert_eq!(settle(0).await, 0);
        for round in 0..2 {
            // N requests the server holds for 400 ms: each connection owns its buffers.
            for c in &mut clients {
                c.write_all(b"GET /?ms=400 HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
            }
            assert_eq!(settle(N).await, N, "round {round}: requests in flight");
            for c in &mut clients {
                assert_eq!(response(c).await, 200, "round {round}");
            }
            // All N still open and idle between requests: none owns a buffer.
            assert_eq!(settle(0).await, 0, "round {round}: idle keep-alive clients");
        }
        // A pipelined second request waits in its connection's buffer: that one is held.
        let c = &mut clients[0];
        c.write_all(b"GET /?ms=200 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(settle(1).await, 1);
        assert_eq!(response(c).await, 200);
        assert_eq!(response(c).await, 200);
        assert_eq!(settle(0).await, 0);
        drop(clients);
    })
    .await
    .expect("idle buffers test timed out");
}
