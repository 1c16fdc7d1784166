//! HTTP/2 toward servers (`proto h2`, cleartext with prior knowledge, as gRPC servers
//! speak it): requests from HTTP/1.1 and h2 clients reach an h2c server as HTTP/2 streams
//! on one reused connection, bodies stream both ways, trailers come back (gRPC status),
//! and connect failures, `timeout server` and cookies behave as with HTTP/1.1 servers.
//! Loopback only; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use l7_support::*;
use lb::config::model::*;

/// An h2c server answering with its name, then what it saw: `version`, `authority`,
/// `path`, `body-bytes`, then every header as `name: value`. `/grpc` answers with the
/// trailer `grpc-status: 0`; `/slow` answers after 2 s.
struct H2Server {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn h2_server(name: &'static str) -> H2Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: Request<Incoming>| answer(name, req));
                let _ = hyper::server::conn::http2::Builder::new(executor())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    H2Server { addr, conns, task }
}

type Out =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn answer(name: &str, req: Request<Incoming>) -> Result<Response<Out>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut text = format!(
        "{name}\nversion: {:?}\nauthority: {}\npath: {}\nbody-bytes: {}\n",
        parts.version,
        parts.uri.authority().map_or("", |a| a.as_str()),
        parts.uri.path_and_query().map_or("", |p| p.as_str()),
        body.len()
    );
    for (k, v) in &parts.headers {
        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    let mut frames = vec![Ok(Frame::data(Bytes::from(text)))];
    match parts.uri.path() {
        "/grpc" => {
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            frames.push(Ok(Frame::trailers(t)));
        }
        "/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
        _ => {}
    }
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap())
}

fn h2(name: &str, addr: SocketAddr) -> Server {
    Server {
        proto: ServerProto::Http2,
        ..server(name, addr)
    }
}

fn line<'a>(r: &'a Resp, key: &str) -> Option<&'a str> {
    let p = format!("{key}: ");
    r.body.lines().find_map(|l| l.strip_prefix(p.as_str()))
}

#[tokio::test]
async fn http1_clients_reach_an_h2_server_over_one_reused_connection() {
    let s = h2_server("h2a").await;
    let mut be = backend("be", Balance::RoundRobin, vec![h2("a", s.addr)]);
    be.forwardfor = true;
    let mut cfg = config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![be],
    );
    // One worker: its one connection to the server carries every request.
    cfg.global.threads = Some(1);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    for i in 0..5 {
        let r = get(fe, &format!("/items?id={i}"), &[("x-trace", "t1")]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.server(), "h2a");
        assert_eq!(line(&r, "version"), Some("HTTP/2.0"));
        // Host became :authority, and is not sent twice.
        assert_eq!(line(&r, "authority"), Some("test.local"));
        assert!(r.saw("host").is_empty(), "{}", r.body);
        assert_eq!(line(&r, "path"), Some(format!("/items?id={i}").as_str()));
        assert_eq!(r.saw("x-trace"), vec!["t1"]);
        assert_eq!(r.saw("x-forwarded-for"), vec!["127.0.0.1"]);
        assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    }
    // Twenty more at once, from as many client connections: streams on that connection.
    let all = (0..20).map(|_| tokio::spawn(async move { get(fe, "/slow", &[]).await.status }));
    for r in futures_util::future::join_all(all).await {
        assert_eq!(r.unwrap(), 200);
    }
    assert_eq!(s.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn request_bodies_stream_to_an_h2_server() {
    let s = h2_server("h2a").await;
    let (h, _reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend("be", Balance::RoundRobin, vec![h2("a", s.addr)])],
    ));
    let fe = addr_of(&h, "web");
    // Beyond HTTP/2's default 64 KiB flow-control window, chunked and with a length.
    let r = post(fe, "/upload", vec![7u8; 300 * 1024], true).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(line(&r, "body-bytes"), Some("307200"));
    let r = post(fe, "/upload", vec![7u8; 100 * 1024], false).await;
    assert_eq!(line(&r, "body-bytes"), Some("102400"));
    assert_eq!(r.saw("content-length"), vec!["102400"]);
}

/// A gRPC-style exchange from an h2 client: `te: trailers` reaches the server and the
/// `grpc-status` trailer comes back.
#[tokio::test]
async fn grpc_trailers_pass_through_an_h2_server() {
    let s = h2_server("h2a").await;
    let (h, _reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend("be", Balance::RoundRobin, vec![h2("a", s.addr)])],
    ));
    let fe = addr_of(&h, "web");
    let body = tokio::time::timeout(T, async {
        let c = TcpStream::connect(fe).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http2::handshake(executor(), TokioIo::new(c))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::post("http://grpc.local/grpc")
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(http_body_util::Full::new(Bytes::from_static(
                b"\0\0\0\0\x02hi",
            )))
            .unwrap();
        let r = tx.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap()
    })
    .await
    .expect("gRPC exchange timed out");
    assert_eq!(
        body.trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    assert!(text.contains("\nte: trailers\n"), "{text}");
    assert!(text.contains("\nauthority: grpc.local\n"), "{text}");
    assert!(text.contains("\nbody-bytes: 7\n"), "{text}");
}

#[tokio::test]
async fn refused_h2_server_is_retried_on_another() {
    let s = h2_server("live").await;
    let dead = dead_addr().await;
    let mut be = backend(
        "be",
        Balance::RoundRobin,
        vec![h2("dead", dead), h2("live", s.addr)],
    );
    be.retries = 1;
    be.redispatch = true;
    let (h, reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![be],
    ));
    let fe = addr_of(&h, "web");
    for _ in 0..4 {
        let r = get(fe, "/", &[]).await;
        assert_eq!(r.status, 200, "no client-visible error");
        assert_eq!(r.server(), "live");
    }
    let st = reg.backend("be").unwrap();
    assert!(
        st.server("dead")
            .unwrap()
            .counters
            .errors
            .load(Ordering::Relaxed)
            > 0
    );
}

#[tokio::test]
async fn h2_server_timeout_and_sticky_cookie() {
    let s = h2_server("h2a").await;
    let mut be = backend("be", Balance::RoundRobin, vec![h2("a", s.addr)]);
    be.timeouts.server = Some(Duration::from_millis(300));
    be.cookie = Some(CookieSpec {
        name: "SRV".into(),
        indirect: true,
        nocache: false,
    });
    be.servers[0].cookie = Some("a".into());
    let (h, _reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![be],
    ));
    let fe = addr_of(&h, "web");
    let r = get(fe, "/", &[]).await;
    assert_eq!(r.header("set-cookie").as_deref(), Some("SRV=a; path=/"));
    // `indirect`: the server never sees lb's cookie, only the client's others.
    let r = get(fe, "/", &[("cookie", "SRV=a; theme=dark")]).await;
    assert!(r.header("set-cookie").is_none());
    assert_eq!(r.saw("cookie"), vec!["theme=dark"]);
    // No answer within timeout server: 504.
    let t0 = std::time::Instant::now();
    let r = get(fe, "/slow", &[]).await;
    assert_eq!(r.status, 504);
    assert!(
        t0.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
}

/// A server that does not speak HTTP/2 gets a clear 502, not a hang.
#[tokio::test]
async fn http1_only_server_behind_proto_h2_answers_502() {
    let a = echo("h1").await;
    let (h, _reg) = start(config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend("be", Balance::RoundRobin, vec![h2("a", a.addr)])],
    ));
    let fe = addr_of(&h, "web");
    let r = get(fe, "/", &[]).await;
    assert_eq!(r.status, 502, "{r:?}");
}

/// Upload timeouts per side toward an h2 server, as toward HTTP/1.1 ones: a client that
/// stalls in its body gets 408 after `timeout client`; a slow but steady upload that
/// outlasts `timeout server` is not cut.
#[tokio::test]
async fn h2_upload_timeouts_are_per_side() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = h2_server("h2a").await;
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.timeouts.client = Some(Duration::from_millis(300));
    let mut be = backend("be", Balance::RoundRobin, vec![h2("a", s.addr)]);
    be.timeouts.server = Some(Duration::from_millis(300));
    let (h, _reg) = start(config(vec![fe], vec![be]));
    let fe = addr_of(&h, "web");

    let t0 = std::time::Instant::now();
    let mut c = TcpStream::connect(fe).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    // 8 pieces 150 ms apart: 1.2 s in all, each within timeout client.
    let mut c = TcpStream::connect(fe).await.unwrap();
    c.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 80\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.write_all(&[b'x'; 10]).await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(out.contains("body-bytes: 80"), "{out:?}");
}
