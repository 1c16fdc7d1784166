//! Protection: slowloris (408), oversized and too many headers, malformed requests,
//! source filtering. Never a crash or a hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use l7_support::*;
use lb::config::model::*;

async fn proxy(tune: impl FnOnce(&mut Frontend)) -> (lb::l7::L7Handle, Echo) {
    let a = echo("a").await;
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    tune(&mut fe);
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", a.addr)],
        )],
    ));
    (h, a)
}

#[tokio::test]
async fn slowloris_gets_408_and_close() {
    let (h, a) = proxy(|fe| fe.timeouts.http_request = Some(Duration::from_millis(300))).await;
    let fe = addr_of(&h, "web");
    let t0 = Instant::now();
    let out = tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(fe).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        // Trickle a header byte every 100 ms: never completes in time.
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if t0.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("slowloris connection was not closed");
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // An idle connection that never sends anything also gets the 408 (HAProxy without
    // `option http-ignore-probes`).
    let out = raw(fe, b"").await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");

    // A normal request on the same listener is unaffected.
    assert_eq!(get(fe, "/", &[]).await.status, 200);
}

/// With `errorfile 408`, the slow client gets that file, byte for byte, instead of the
/// built-in page: on a head that never completes, on a connection that sends nothing, and
/// on a second head that stalls after a complete exchange.
#[tokio::test]
async fn slowloris_gets_the_errorfile_408() {
    const PAGE: &[u8] = b"HTTP/1.0 408 Custom Timeout\r\nCache-Control: no-cache\r\n\
Content-Type: text/plain\r\n\r\ncustom 408 page\n";
    let (h, a) = proxy(|fe| {
        fe.timeouts.http_request = Some(Duration::from_millis(300));
        fe.errorfiles = BTreeMap::from([(408, PAGE.to_vec())]);
    })
    .await;
    let fe = addr_of(&h, "web");
    for sent in [&b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a"[..], b""] {
        let out = raw(fe, sent).await;
        assert_eq!(
            out.as_bytes(),
            PAGE,
            "after {:?}",
            String::from_utf8_lossy(sent)
        );
    }
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let out = tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(fe).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"GET / HT").await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("stalled second request was not answered");
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(out.ends_with(std::str::from_utf8(PAGE).unwrap()), "{out:?}");
    assert_eq!(out.matches("HTTP/1.").count(), 2, "{out:?}");
}

#[tokio::test]
async fn keep_alive_idle_is_closed_silently() {
    let (h, _a) = proxy(|fe| fe.timeouts.http_request = Some(Duration::from_millis(300))).await;
    let fe = addr_of(&h, "web");
    let out = raw(fe, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(
        out.matches("HTTP/1.1").count(),
        1,
        "no 408 after a complete exchange: {out}"
    );
}

/// The idle timer after a response starts when the response finishes, also when the
/// request took longer than the timer itself, and closes the connection in time.
#[tokio::test]
async fn keep_alive_idle_timer_starts_when_the_response_finishes() {
    let (h, _a) = proxy(|fe| fe.timeouts.http_request = Some(Duration::from_millis(300))).await;
    let fe = addr_of(&h, "web");
    for delay_ms in [0u64, 700] {
        let mut s = TcpStream::connect(fe).await.expect("connect");
        let req = format!("GET /?ms={delay_ms} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut answered = None;
        let closed = tokio::time::timeout(T, async {
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return Instant::now();
                }
                out.extend_from_slice(&buf[..n]);
                if answered.is_none() && out.windows(4).any(|w| w == b"\r\n\r\n") {
                    answered = Some(Instant::now());
                }
            }
        })
        .await
        .expect("idle connection was not closed");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{delay_ms}: {text}");
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "{delay_ms}: {text}");
        let idle = closed - answered.expect("response head");
        assert!(
            idle >= Duration::from_millis(250) && idle < Duration::from_millis(900),
            "{delay_ms}: closed {idle:?} after the response"
        );
    }
}

#[tokio::test]
async fn oversized_and_too_many_headers_get_400() {
    let (h, a) = proxy(|fe| {
        fe.max_header_bytes = 1024;
        fe.max_headers = 10;
    })
    .await;
    let fe = addr_of(&h, "web");
    let big = "x".repeat(2000);
    let r = get(fe, "/", &[("x-big", &big)]).await;
    assert_eq!(
        r.status, 400,
        "HAProxy answers 400 to a request over its buffer"
    );
    // Far beyond the buffer: hyper's own limit, the same page.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "y".repeat(64 * 1024)
    );
    let out = raw(fe, huge.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad request"), "{out:?}");
    // A URI too long for the parser, the same.
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(70 * 1024));
    let out = raw(fe, long_uri.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad request"), "{out:?}");
    let many: Vec<(String, String)> = (0..20).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = get(fe, "/", &many).await;
    assert_eq!(r.status, 400);
    // The limit counts the request line (HAProxy's maxhdr): host + 9 fields fail.
    assert_eq!(get(fe, "/", &many[..9]).await.status, 400);
    // Beyond 100 fields the parser answers before lb's check, with the same page.
    let lots: String = (0..120).map(|i| format!("h{i}:1\r\n")).collect();
    let out = raw(
        fe,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{lots}\r\n").as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 Bad request"), "{out:?}");
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Host + 8 fields pass.
    assert_eq!(get(fe, "/", &many[..8]).await.status, 200);
    assert_eq!(get(fe, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn malformed_requests_get_400_never_a_hang() {
    let (h, _a) = proxy(|_| {}).await;
    let fe = addr_of(&h, "web");
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"\x16\x03\x01\x00\x05hello",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let out = raw(fe, bad).await;
        assert!(
            out.is_empty() || out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.1 200"),
            "{:?} -> {out:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // Half a request then EOF.
    let out = raw_eof(fe, b"GET / HT").await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out:?}");
    assert_eq!(get(fe, "/", &[]).await.status, 200);
}

/// A request head hyper cannot parse, or one over the parser's buffer, gets HAProxy's 400
/// page, or the frontend's `errorfile 400` byte for byte (not hyper's bare 400 or 431);
/// also on a keep-alive connection after a good exchange.
#[tokio::test]
async fn rejected_request_heads_get_the_400_page() {
    let (h, a) = proxy(|_| {}).await;
    let fe = addr_of(&h, "web");
    let out = raw(fe, b"GET / HTTP/1.1\r\nHost x\r\n\r\n").await;
    assert_eq!(
        out,
        "HTTP/1.1 400 Bad request\r\ncontent-length: 90\r\ncache-control: no-cache\r\n\
         content-type: text/html\r\nconnection: close\r\n\r\n<html><body><h1>400 Bad request</h1>\n\
         Your browser sent an invalid request.\n</body></html>\n",
        "HAProxy's built-in 400"
    );
    drop(h);

    const PAGE_400: &[u8] =
        b"HTTP/1.0 400 Custom Bad\r\nContent-Type: text/plain\r\n\r\nbad request\n";
    let (h, a2) = proxy(|fe| {
        fe.errorfiles = BTreeMap::from([(400, PAGE_400.to_vec())]);
    })
    .await;
    let fe = addr_of(&h, "web");
    for bad in [&b"GARBAGE\r\n\r\n"[..], b"GET / HTTP/1.1\r\nHost x\r\n\r\n"] {
        let out = raw(fe, bad).await;
        assert_eq!(
            out.as_bytes(),
            PAGE_400,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "y".repeat(64 * 1024)
    );
    assert_eq!(raw(fe, huge.as_bytes()).await.as_bytes(), PAGE_400);
    // A good exchange, then a bad head on the same connection.
    let out = raw(
        fe,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost x\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(
        out.ends_with(std::str::from_utf8(PAGE_400).unwrap()),
        "the second head gets the errorfile: {out:?}"
    );
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        a2.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the good request reached the server"
    );
    assert_eq!(get(fe, "/", &[]).await.status, 200);
}

/// An absolute-form target whose Host header names another host gets 400, as in HAProxy;
/// the same host (ASCII case and the scheme's default port aside) is served.
#[tokio::test]
async fn absolute_form_target_and_host_must_agree() {
    let (h, a) = proxy(|_| {}).await;
    let fe = addr_of(&h, "web");
    for (target, host, want) in [
        ("http://a.example/x", "A.Example:80", "HTTP/1.1 200"),
        ("https://a.example/x", "a.example:443", "HTTP/1.1 200"),
        ("http://a.example:8080/x", "a.example", "HTTP/1.1 400"),
        ("http://a.example/x", "b.example", "HTTP/1.1 400"),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let out = raw(fe, req.as_bytes()).await;
        assert!(out.starts_with(want), "{target} / {host} -> {out:?}");
    }
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// After the 400 for an absolute-form target whose Host names another host, the
/// connection is closed (HAProxy does): a request pipelined behind it is not served.
#[tokio::test]
async fn absolute_form_mismatch_closes_the_connection() {
    let (h, a) = proxy(|_| {}).await;
    let fe = addr_of(&h, "web");
    let out = raw(
        fe,
        b"GET http://x.example/ HTTP/1.1\r\nHost: y.example\r\n\r\n\
          GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    assert!(out.contains("connection: close"), "{out:?}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out:?}");
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Refused as HAProxy 2.6 refuses them (a security boundary: a rule must read what the
/// server reads), each answered and the connection closed, nothing reaching the server:
/// two different Host values (400), a Transfer-Encoding other than `chunked` (422, with or
/// without Content-Length), `chunked` twice (400), a `#fragment` in the target (400), and a
/// request head cut by the client's half-close (400, not a silent close).
#[tokio::test]
async fn requests_haproxy_refuses_are_refused() {
    let (h, a) = proxy(|_| {}).await;
    let fe = addr_of(&h, "web");
    for (req, want) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], "HTTP/1.1 400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a:80\r\n\r\n", "HTTP/1.1 400"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 422",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 422",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400"),
        (b"\r\nGET /a?q#f HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400"),
    ] {
        let out = raw(fe, req).await;
        assert!(out.starts_with(want), "{:?} -> {out:?}", String::from_utf8_lossy(req));
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "closed after: {out:?}");
    }
    for cut in [&b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b"[..], b"GET / HTT"] {
        let out = raw_eof(fe, cut).await;
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{:?} -> {out:?}",
            String::from_utf8_lossy(cut)
        );
    }
    // A fragment split over two writes is seen too.
    let mut s = TcpStream::connect(fe).await.unwrap();
    s.write_all(b"GET /a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"#b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("closed")
        .unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "none reached the server"
    );

    // What HAProxy accepts still passes: repeated identical Host values go as one, `#` in
    // a header value or after the request line is no fragment, keep-alive requests are
    // checked each (also after one with a body).
    let out = raw(
        fe,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: A\r\nX-T: #1\r\n\r\n\
          POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n#ab\
          GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 3, "{out:?}");
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(get(fe, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn denied_sources_are_dropped() {
    let (h, _a) = proxy(|fe| {
        fe.deny_src = vec![IpNet {
            addr: "127.0.0.0".parse().unwrap(),
            prefix_len: 8,
        }]
    })
    .await;
    let out = raw(addr_of(&h, "web"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.is_empty(), "{out}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let (h, _a) = proxy(|_| {}).await;
    let fe = addr_of(&h, "web");
    let inflight = tokio::spawn(async move { get(fe, "/?ms=300", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = h.shutdown(Duration::from_secs(3)).await;
    assert_eq!(inflight.await.unwrap().status, 200);
    assert!(drained);
    assert!(TcpStream::connect(fe).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn frontend_maxconn_holds_extra_connections() {
    let (h, _a) = proxy(|fe| fe.maxconn = Some(1)).await;
    let fe = addr_of(&h, "web");
    // The first connection holds the only slot; a second one waits until it closes.
    let mut first = TcpStream::connect(fe).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let second = tokio::spawn(async move { get(fe, "/", &[]).await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "second connection must wait for a slot"
    );
    drop(first);
    assert_eq!(tokio::time::timeout(T, second).await.unwrap().unwrap(), 200);
}

/// An HTTP/2 peer that floods PING (and SETTINGS) frames and never reads its answers is cut
/// off once lb's writes to it have waited `timeout client` (#19 item 11; HAProxy resets
/// such a peer too).
#[tokio::test]
async fn h2_flood_without_reading_is_cut_off() {
    let (h, _a) = proxy(|fe| fe.timeouts.client = Some(Duration::from_secs(1))).await;
    let fe = addr_of(&h, "web");
    let mut s = TcpStream::connect(fe).await.unwrap();
    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    flood.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    let mut batch = Vec::new();
    for i in 0..1000u64 {
        batch.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]); // PING
        batch.extend_from_slice(&i.to_be_bytes());
        batch.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    }
    let t0 = Instant::now();
    s.write_all(&flood).await.unwrap();
    // Bounded: 20 s of flooding at most; lb must have closed well before.
    let cut = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if s.write_all(&batch).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "still accepting the flood after 20 s");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "cut off after {:?}",
        t0.elapsed()
    );
}

/// An HTTP/2 client that keeps its flow-control window shut (initial window 0, never a
/// WINDOW_UPDATE) on a large response is cut off within `timeout client`, and with it
/// lb's connection to the server (#19 item 11).
#[tokio::test]
async fn h2_zero_window_is_cut_off() {
    let (addr, upstream) = endless_body_server().await;
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.timeouts.client = Some(Duration::from_secs(1));
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend("be", Balance::RoundRobin, vec![server("a", addr)])],
    ));
    let fe = addr_of(&h, "web");
    let s = TcpStream::connect(fe).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(executor())
        .initial_stream_window_size(0)
        .handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    let t0 = Instant::now();
    let req = hyper::Request::get("http://x/big")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .expect("response head")
        .unwrap();
    assert_eq!(r.status(), 200);
    // The body is never read; the window stays shut.
    server_side_cut(upstream, t0).await;
    // The client's connection ends too.
    tokio::time::timeout(Duration::from_secs(5), conn_task)
        .await
        .expect("client connection closed")
        .unwrap()
        .ok();
    drop(r);
}

/// Over TLS too: a client that asks for a large body and never reads is cut off within
/// `timeout client` (the write bound sits above the TLS stream), and with it lb's server
/// connection.
#[tokio::test]
async fn tls_client_that_does_not_read_is_cut_off() {
    let (addr, upstream) = endless_body_server().await;
    let dir = TempDir::new("slowtls");
    let (cert, _) = make_cert(&dir.0, "slow.test");
    let mut fe = frontend(
        "web",
        vec![tls_bind("127.0.0.1:0", vec![cert], &["http/1.1"])],
        Some("be"),
    );
    fe.timeouts.client = Some(Duration::from_secs(1));
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend("be", Balance::RoundRobin, vec![server("a", addr)])],
    ));
    let fe = addr_of(&h, "web");
    // A small receive buffer: lb's writes stall sooner (the debug build encrypts slowly).
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = sock.connect(fe).await.unwrap();
    let mut tls = connector(&["http/1.1"])
        .connect(
            rustls::pki_types::ServerName::try_from("slow.test".to_owned()).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    tls.write_all(b"GET /big HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    // Never read.
    server_side_cut(upstream, t0).await;
    drop(tls);
}

/// Waits for [`endless_body_server`] to be cut off by lb: within 10 s of `t0` (the tests'
/// `timeout client` is 1 s; the socket buffers take a moment to fill).
async fn server_side_cut(upstream: tokio::task::JoinHandle<tokio::time::Instant>, t0: Instant) {
    let cut = tokio::time::timeout(Duration::from_secs(15), upstream)
        .await
        .expect("lb closed its server connection")
        .unwrap()
        .into_std();
    let took = cut.duration_since(t0);
    assert!(
        took < Duration::from_secs(8),
        "server side cut after {took:?}"
    );
}
