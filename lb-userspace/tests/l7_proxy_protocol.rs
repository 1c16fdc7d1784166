//! The PROXY protocol over real sockets: `accept-proxy` binds take the client's address
//! from the header (ACLs, X-Forwarded-For) and drop connections without one;
//! `send-proxy` / `send-proxy-v2` servers get the header first on every connection (HTTP:
//! never pooled across clients; userspace TCP; health checks). Loopback only; bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use l7_support::*;
use lb::acl::AclSet;
use lb::config::model::*;
use lb::proxy_protocol::ProxyVersion;

/// A server that expects a PROXY header (v1 line or v2 block, kept raw per connection),
/// then answers one HTTP/1.1 request per connection with `name` and closes; in `tcp`
/// mode it echoes bytes instead.
struct ProxyServer {
    addr: SocketAddr,
    headers: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_proxy_header(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut first = [0u8; 16];
    s.read_exact(&mut first[..5]).await.ok()?;
    if &first[..5] == b"PROXY" {
        let mut line = first[..5].to_vec();
        while !line.ends_with(b"\r\n") && line.len() < 108 {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.ok()?;
            line.push(b[0]);
        }
        return Some(line);
    }
    s.read_exact(&mut first[5..]).await.ok()?;
    let len = usize::from(u16::from_be_bytes([first[14], first[15]]));
    let mut block = vec![0u8; len];
    s.read_exact(&mut block).await.ok()?;
    let mut all = first.to_vec();
    all.extend_from_slice(&block);
    Some(all)
}

async fn proxy_server(name: &'static str, tcp: bool) -> ProxyServer {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let headers = Arc::new(Mutex::new(Vec::new()));
    let h = headers.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let Some(header) = read_proxy_header(&mut s).await else {
                    return;
                };
                h.lock().unwrap().push(header);
                let mut buf = vec![0u8; 4096];
                if tcp {
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("{name}\n{}", String::from_utf8_lossy(&got));
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                // Keep-alive offered, but lb must not reuse a connection that named
                // another client: wait for it to close.
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            });
        }
    });
    ProxyServer {
        addr,
        headers,
        task,
    }
}

async fn exchange(addr: SocketAddr, prefix: &[u8], rest: &[u8]) -> String {
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut all = prefix.to_vec();
        all.extend_from_slice(rest);
        s.write_all(&all).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("exchange timed out")
}

#[tokio::test]
async fn accept_proxy_sets_the_client_and_send_proxy_names_it() {
    let srv = proxy_server("pp", false).await;
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.binds[0].accept_proxy = true;
    fe.forwardfor = true;
    let none = AclSet::default();
    fe.http_request = vec![HttpRule {
        action: HttpAction::Deny { status: 403 },
        cond: Some(cond("if { src 198.51.100.0/24 }", &none)),
    }];
    let be = backend(
        "be",
        Balance::RoundRobin,
        vec![Server {
            send_proxy: Some(ProxyVersion::V1),
            ..server("p", srv.addr)
        }],
    );
    let (h, _reg) = start(config(vec![fe], vec![be]));
    let addr = addr_of(&h, "web");
    let req = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

    // v1 from a client at 203.0.113.7: X-Forwarded-For and the server's PROXY line name it.
    let out = exchange(addr, b"PROXY TCP4 203.0.113.7 192.0.2.10 5555 80\r\n", req).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("x-forwarded-for: 203.0.113.7"), "{out}");
    let line = String::from_utf8(srv.headers.lock().unwrap()[0].clone()).unwrap();
    assert_eq!(line, "PROXY TCP4 203.0.113.7 192.0.2.10 5555 80\r\n");

    // v2 works too, and ACLs see the address it carries.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 9, 192, 0, 2, 10, 0x30, 0x39, 0, 80]);
    let out = exchange(addr, &v2, req).await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");

    // No header on an accept-proxy bind: closed without an answer.
    let out = exchange(addr, b"", req).await;
    assert!(out.is_empty(), "{out}");

    // Two requests of one client connection: two server connections, each with its header
    // (a connection that named a client is never pooled).
    let before = srv.headers.lock().unwrap().len();
    let two = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let out = exchange(addr, b"PROXY TCP4 203.0.113.8 192.0.2.10 6000 80\r\n", two).await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    let headers = srv.headers.lock().unwrap();
    assert_eq!(headers.len(), before + 2);
    assert!(
        headers[before..]
            .iter()
            .all(|h| h.starts_with(b"PROXY TCP4 203.0.113.8 "))
    );
}

#[tokio::test]
async fn tcp_mode_relays_the_client_in_a_v2_header() {
    let srv = proxy_server("pt", true).await;
    let mut fe = frontend("t", vec![bind("127.0.0.1:0")], Some("be"));
    fe.mode = Mode::Tcp;
    fe.binds[0].accept_proxy = true;
    let mut be = backend(
        "be",
        Balance::RoundRobin,
        vec![Server {
            send_proxy: Some(ProxyVersion::V2),
            ..server("p", srv.addr)
        }],
    );
    be.mode = Mode::Tcp;
    let (h, _reg) = start(config(vec![fe], vec![be]));
    let addr = addr_of(&h, "t");
    let out = tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 443\r\nping")
            .await
            .unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        buf
    })
    .await
    .unwrap();
    assert_eq!(&out, b"ping");
    let header = srv.headers.lock().unwrap()[0].clone();
    let mut expect = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    expect.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    expect.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    expect.extend_from_slice(&4242u16.to_be_bytes());
    expect.extend_from_slice(&443u16.to_be_bytes());
    assert_eq!(header, expect);
}

/// Health checks of a `send-proxy` server open with the header too (the server would
/// refuse them otherwise): v1 names the check connection, v2 says LOCAL.
#[tokio::test]
async fn health_checks_send_the_header() {
    let srv = proxy_server("hc", false).await;
    for (v, prefix) in [
        (ProxyVersion::V1, &b"PROXY TCP4 127.0.0.1 127.0.0.1 "[..]),
        (
            ProxyVersion::V2,
            &b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"[..],
        ),
    ] {
        let before = srv.headers.lock().unwrap().len();
        let checker = lb::health::check::Checker::new(
            srv.addr,
            &CheckSpec {
                kind: CheckKind::Http {
                    method: "GET".into(),
                    path: "/health".into(),
                    host: None,
                    expect: (200, 399),
                },
                ..CheckSpec::default()
            },
        )
        .unwrap()
        .send_proxy(Some(v));
        let outcome = checker.run().await;
        assert_eq!(outcome.code, Some(200), "{outcome:?}");
        let headers = srv.headers.lock().unwrap();
        assert_eq!(headers.len(), before + 1);
        assert!(headers[before].starts_with(prefix), "{:?}", headers[before]);
    }
}
