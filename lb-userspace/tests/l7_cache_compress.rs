//! `cache` and `compression` over real sockets, for HTTP/1.1 and HTTP/2 clients: hits with
//! `Age` and `res.cache_hit`, 304s, HEAD from a cached GET, what is never stored
//! (Set-Cookie, private, too large), one server request for a stampede, counters in the
//! registry; compressed bodies that decode to the server's, streamed chunk by chunk, and
//! left alone when the client does not ask. Loopback only; bounded waits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use l7_support::*;
use lb::acl::AclSet;
use lb::config::model::*;
use tokio::net::{TcpListener, TcpStream};

type Hits = Arc<Mutex<HashMap<String, usize>>>;

fn text(n: usize) -> String {
    (0..n)
        .map(|i| format!("line {} of the text\n", i % 50))
        .collect()
}

type RespBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: String) -> RespBody {
    http_body_util::Full::new(Bytes::from(s)).boxed()
}

/// An origin whose paths say how to answer; counts requests per path.
async fn origin() -> (SocketAddr, Hits) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits: Hits = Arc::default();
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let h = h.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let n = {
                            let mut m = h.lock().unwrap();
                            let e = m.entry(path.clone()).or_insert(0);
                            *e += 1;
                            *e
                        };
                        let ae = req
                            .headers()
                            .get("accept-encoding")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let mut r = Response::builder()
                            .header("content-type", "text/plain")
                            .header("x-n", n.to_string())
                            .header("x-saw-ae", ae.clone());
                        let body = match path.as_str() {
                            "/etag" => {
                                r = r
                                    .header("cache-control", "max-age=60")
                                    .header("etag", "\"v1\"")
                                    .header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")
                                    .header("age", "5");
                                full(text(100))
                            }
                            "/cookie" => {
                                r = r
                                    .header("cache-control", "max-age=60")
                                    .header("set-cookie", "session=1");
                                full(text(100))
                            }
                            "/private" => {
                                r = r.header("cache-control", "private, max-age=60");
                                full(text(100))
                            }
                            "/big" => {
                                r = r.header("cache-control", "max-age=60");
                                full(text(5000))
                            }
                            "/slow" => {
                                tokio::time::sleep(Duration::from_millis(400)).await;
                                r = r.header("cache-control", "max-age=60");
                                full(text(100))
                            }
                            "/vary" => {
                                r = r
                                    .header("cache-control", "max-age=60")
                                    .header("vary", "accept-encoding");
                                // Variants differ by their coding (the cache keys them
                                // by it, as HAProxy 2.6).
                                if ae.contains("gzip") {
                                    r = r.header("content-encoding", "gzip");
                                }
                                full(format!("variant for [{ae}] {}", text(20)))
                            }
                            "/encoded" => {
                                r = r.header("content-encoding", "br");
                                full(text(100))
                            }
                            "/stream" => {
                                // Two chunks 600 ms apart (chunked).
                                let (tx, rx) = tokio::sync::mpsc::channel::<
                                    Result<Frame<Bytes>, Infallible>,
                                >(2);
                                tokio::spawn(async move {
                                    let _ = tx.send(Ok(Frame::data(Bytes::from(text(200))))).await;
                                    tokio::time::sleep(Duration::from_millis(600)).await;
                                    let _ = tx.send(Ok(Frame::data(Bytes::from(text(200))))).await;
                                });
                                let s = tokio_stream_from(rx);
                                BodyExt::boxed(StreamBody::new(s))
                            }
                            _ => full(text(100)),
                        };
                        Ok::<_, Infallible>(r.body(body).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// A receiver as a stream of frames.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn hits(h: &Hits, path: &str) -> usize {
    h.lock().unwrap().get(path).copied().unwrap_or(0)
}

fn rule(action: HttpAction, cond: Option<lb::acl::Condition>) -> HttpRule {
    HttpRule { action, cond }
}

fn cache_config(origin: SocketAddr) -> Config {
    let none = AclSet::default();
    let mut be = backend("be", Balance::RoundRobin, vec![server("s", origin)]);
    be.http_request = vec![rule(HttpAction::CacheUse("c1".into()), None)];
    be.http_response = vec![
        rule(HttpAction::CacheStore("c1".into()), None),
        rule(
            HttpAction::SetHeader {
                name: "X-Cache".into(),
                value: "%[res.cache_hit]-%[res.cache_name]".into(),
            },
            None,
        ),
        rule(
            HttpAction::AddHeader {
                name: "X-Hit".into(),
                value: "yes".into(),
            },
            Some(cond("if { res.cache_hit }", &none)),
        ),
    ];
    let fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    let mut cfg = config(vec![fe], vec![be]);
    cfg.caches = vec![CacheSpec {
        name: "c1".into(),
        total_max_size: 1 << 20,
        max_object_size: 16 * 1024,
        max_age: 240,
        process_vary: true,
        max_secondary_entries: 10,
    }];
    cfg
}

/// One HTTP/2 (prior knowledge) request.
async fn get_h2(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let (mut r, b) = get_h2_bytes(addr, path, headers).await;
    r.body = String::from_utf8_lossy(&b).into_owned();
    r
}

/// One HTTP/2 (prior knowledge) request, the raw body bytes.
async fn get_h2_bytes(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Resp, Bytes) {
    tokio::time::timeout(T, async {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .unwrap();
        tokio::spawn(conn);
        let uri = format!("http://test.local{path}");
        let r = tx
            .send_request(empty_request(Request::builder(), "GET", &uri, headers))
            .await
            .unwrap();
        collect_bytes(r).await
    })
    .await
    .expect("h2 request timed out")
}

/// One HTTP/1.1 request, the raw body bytes.
async fn get_raw(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Resp, Vec<u8>) {
    let (r, b) = request_bytes(addr, "GET", path, headers).await;
    (r, b.to_vec())
}

#[tokio::test]
async fn cache_hits_validation_and_head() {
    let (o, h) = origin().await;
    let (lb, reg) = start(cache_config(o));
    let addr = addr_of(&lb, "web");

    let first = get(addr, "/etag", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache").as_deref(), Some("0-"));
    assert!(first.header("x-hit").is_none());
    let hit = get(addr, "/etag", &[]).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hits(&h, "/etag"), 1, "the second came from the cache");
    assert_eq!(hit.body, first.body);
    assert_eq!(hit.header("x-n").as_deref(), Some("1"));
    assert_eq!(hit.header("x-cache").as_deref(), Some("1-c1"));
    assert_eq!(hit.header("x-hit").as_deref(), Some("yes"));
    // the server's Age (5) plus the time in the cache
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((5..=7).contains(&age), "{age}");

    // validation: 304 without a body
    for (k, v) in [
        ("if-none-match", "\"v1\""),
        ("if-none-match", "W/\"v1\""),
        ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ] {
        let r = get(addr, "/etag", &[(k, v)]).await;
        assert_eq!(r.status, 304, "{k}: {v}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag").as_deref(), Some("\"v1\""));
    }
    let r = get(addr, "/etag", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, first.body);

    // HEAD from the cached GET: the head, no body
    let r = head(addr, "/etag").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length").as_deref(),
        Some(first.body.len().to_string().as_str())
    );
    assert_eq!(r.header("x-cache").as_deref(), Some("1-c1"));

    // HTTP/2 clients are served from the same entry
    let r = get_h2(addr, "/etag", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, first.body);
    assert_eq!(r.header("x-cache").as_deref(), Some("1-c1"));
    assert_eq!(hits(&h, "/etag"), 1);

    // requests that must not be answered from the cache
    let r = get(addr, "/etag", &[("cache-control", "no-cache")]).await;
    assert_eq!(r.header("x-cache").as_deref(), Some("0-"));
    let r = get(addr, "/etag", &[("authorization", "Basic eDp5")]).await;
    assert_eq!(r.header("x-cache").as_deref(), Some("0-"));
    assert_eq!(hits(&h, "/etag"), 3);

    let counters = reg.caches();
    let (name, c) = &counters[0];
    assert_eq!(name, "c1");
    // a hit, three 304s, a 200 for another tag, HEAD, HTTP/2; no-cache and
    // Authorization are no lookups
    assert_eq!(c.hits.load(Ordering::Relaxed), 7);
    assert_eq!(c.misses.load(Ordering::Relaxed), 1);
    assert_eq!(c.lookups.load(Ordering::Relaxed), 8);
    // the no-cache request's response replaced the entry (HAProxy stores it too)
    assert_eq!(c.stores.load(Ordering::Relaxed), 2);
    assert_eq!(c.entries.load(Ordering::Relaxed), 1);
    assert!(c.bytes_served.load(Ordering::Relaxed) > 0);
    assert!(c.bytes_used.load(Ordering::Relaxed) > 0);
}

/// HEAD on a fresh connection.
async fn head(addr: SocketAddr, path: &str) -> Resp {
    let (mut r, b) = request_bytes(addr, "HEAD", path, &[]).await;
    r.body = String::from_utf8_lossy(&b).into_owned();
    r
}

#[tokio::test]
async fn what_is_never_stored_and_vary() {
    let (o, h) = origin().await;
    let (lb, _reg) = start(cache_config(o));
    let addr = addr_of(&lb, "web");
    for path in ["/cookie", "/private", "/big"] {
        for _ in 0..2 {
            let r = get(addr, path, &[]).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-cache").as_deref(), Some("0-"), "{path}");
        }
        assert_eq!(hits(&h, path), 2, "{path} went to the server each time");
    }
    // Vary: one entry per coding of the response; a request gets the variant whose codings
    // it accepts (order and q=0 do not matter)
    let a = get(addr, "/vary", &[("accept-encoding", "gzip, br")]).await;
    let b = get(addr, "/vary", &[("accept-encoding", "identity")]).await;
    assert_eq!(hits(&h, "/vary"), 2);
    let a2 = get(addr, "/vary", &[("accept-encoding", "br,gzip")]).await;
    let b2 = get(addr, "/vary", &[("accept-encoding", "identity")]).await;
    assert_eq!(hits(&h, "/vary"), 2);
    assert_eq!(a2.body, a.body);
    assert_eq!(b2.body, b.body);
    assert_ne!(a.body, b.body);
}

#[tokio::test]
async fn a_stampede_goes_to_the_server_once() {
    let (o, h) = origin().await;
    let (lb, reg) = start(cache_config(o));
    let addr = addr_of(&lb, "web");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let proto_h2 = i % 2 == 0;
        tasks.push(tokio::spawn(async move {
            if proto_h2 {
                get_h2(addr, "/slow", &[]).await
            } else {
                get(addr, "/slow", &[]).await
            }
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.body);
    }
    assert_eq!(
        hits(&h, "/slow"),
        1,
        "one request filled it, the others waited"
    );
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let c = &reg.caches()[0].1;
    assert_eq!(c.misses.load(Ordering::Relaxed), 1);
    assert_eq!(c.hits.load(Ordering::Relaxed), 19);
}

fn gunzip(b: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut s)
        .unwrap();
    s
}

fn compress_config(origin: SocketAddr, algos: &[CompAlgo]) -> Config {
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.compression = Some(Compression {
        algos: algos.to_vec(),
        types: vec!["text/plain".into()],
        offload: false,
        min_size: DEFAULT_COMPRESSION_MIN_SIZE,
    });
    let be = backend("be", Balance::RoundRobin, vec![server("s", origin)]);
    config(vec![fe], vec![be])
}

#[tokio::test]
async fn compression_negotiates_and_decodes() {
    let (o, _h) = origin().await;
    let (lb, _reg) = start(compress_config(
        o,
        &[
            CompAlgo::Gzip,
            CompAlgo::Deflate,
            CompAlgo::Br,
            CompAlgo::Zstd,
        ],
    ));
    let addr = addr_of(&lb, "web");
    let plain = text(100);

    let (r, body) = get_raw(addr, "/", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    assert!(r.header("content-length").is_none());
    assert_eq!(gunzip(&body), plain);
    // without offload the server saw the client's Accept-Encoding
    assert_eq!(r.header("x-saw-ae").as_deref(), Some("gzip"));

    let (r, body) = get_raw(addr, "/", &[("accept-encoding", "br")]).await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("br"));
    let mut s = String::new();
    brotli::Decompressor::new(&body[..], 4096)
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, plain);

    let (r, body) = get_raw(addr, "/", &[("accept-encoding", "zstd;q=0.9, gzip;q=0.5")]).await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("zstd"));
    assert_eq!(
        String::from_utf8(zstd::stream::decode_all(&body[..]).unwrap()).unwrap(),
        plain
    );

    // not asked, or already encoded: as the server sent it
    let (r, body) = get_raw(addr, "/", &[]).await;
    assert!(r.header("content-encoding").is_none());
    assert_eq!(String::from_utf8(body).unwrap(), plain);
    let (r, _) = get_raw(addr, "/encoded", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("br"));
    assert!(r.header("vary").is_none());

    // HTTP/2 client
    let (r, b) = get_h2_bytes(addr, "/", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(gunzip(&b), plain);
}

#[tokio::test]
async fn compression_streams_chunk_by_chunk() {
    let (o, _h) = origin().await;
    let (lb, _reg) = start(compress_config(o, &[CompAlgo::Gzip]));
    let addr = addr_of(&lb, "web");
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let t0 = Instant::now();
    let resp = tx
        .send_request(
            Request::get("/stream")
                .header("host", "test.local")
                .header("accept-encoding", "gzip")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut first_at = None;
    while let Some(f) = tokio::time::timeout(T, body.frame()).await.unwrap() {
        if let Ok(d) = f.unwrap().into_data() {
            if !d.is_empty() && first_at.is_none() {
                first_at = Some(t0.elapsed());
            }
            got.extend_from_slice(&d);
        }
    }
    let first_at = first_at.unwrap();
    assert!(
        first_at < Duration::from_millis(500),
        "the first chunk came compressed before the server sent the second: {first_at:?}"
    );
    assert_eq!(gunzip(&got), format!("{}{}", text(200), text(200)));
}

#[tokio::test]
async fn cached_responses_are_compressed_too() {
    let (o, h) = origin().await;
    let mut cfg = cache_config(o);
    cfg.frontends[0].compression = Some(Compression {
        algos: vec![CompAlgo::Gzip],
        types: Vec::new(),
        offload: true,
        min_size: 0,
    });
    let (lb, _reg) = start(cfg);
    let addr = addr_of(&lb, "web");
    let (plain, body) = get_raw(addr, "/etag", &[]).await;
    assert!(plain.header("content-encoding").is_none());
    let (r, gz) = get_raw(addr, "/etag", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("x-cache").as_deref(), Some("1-c1"));
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("etag").as_deref(), Some("W/\"v1\""));
    assert_eq!(gunzip(&gz).as_bytes(), &body[..]);
    assert_eq!(hits(&h, "/etag"), 1);
    // offload: the server never sees Accept-Encoding
    let (r, _) = get_raw(addr, "/other", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("x-saw-ae").as_deref(), Some(""));
}
