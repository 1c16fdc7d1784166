//! TLS toward servers (`ssl` on server lines): `verify none`; `verify required` against a
//! `ca-file`, checking the name only with `sni str(NAME)` (HAProxy without `verifyhost`);
//! failed handshakes retried and redispatched like refused connections; pooled TLS
//! connections reused; uploads; HTTP/2 over TLS with ALPN `h2`. Loopback only; bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use l7_support::*;
use lb::config::model::*;

/// A TLS identity-echo server (l7_support's echo behind TLS with `cert`); HTTP/2 when
/// `h2` (ALPN `h2` only). Records the SNI of each handshake.
struct TlsServer {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_server(name: &'static str, cert_pem: &std::path::Path, h2: bool) -> TlsServer {
    let pem = std::fs::read(cert_pem).unwrap();
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .unwrap()
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let sni = Arc::new(Mutex::new(Vec::new()));
    let (hs, sn) = (handshakes.clone(), sni.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, hs, sn) = (acceptor.clone(), hs.clone(), sn.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                hs.fetch_add(1, Ordering::SeqCst);
                let (_, conn) = tls.get_ref();
                sn.lock()
                    .unwrap()
                    .push(conn.server_name().map(str::to_owned));
                let alpn_h2 = conn.alpn_protocol() == Some(b"h2");
                let svc = hyper::service::service_fn(move |req| echo_handle(Arc::from(name), req));
                if alpn_h2 {
                    let _ = hyper::server::conn::http2::Builder::new(executor())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
            });
        }
    });
    TlsServer {
        addr,
        handshakes,
        sni,
        task,
    }
}

fn tls_server_line(name: &str, addr: SocketAddr, tls: ServerTls) -> Server {
    Server {
        tls: Some(tls),
        ..server(name, addr)
    }
}

fn verify_none() -> ServerTls {
    ServerTls {
        verify: false,
        ca_file: None,
        sni: None,
    }
}

#[tokio::test]
async fn verify_none_pools_tls_connections_and_uploads() {
    let dir = TempDir::new("tlsup");
    let (cert, _) = make_cert(&dir.0, "backend.test");
    let s = tls_server("tls-a", &cert, false).await;
    let mut cfg = config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![tls_server_line("a", s.addr, verify_none())],
        )],
    );
    cfg.global.threads = Some(1);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    for _ in 0..5 {
        let r = get(fe, "/x?y=1", &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.server(), "tls-a");
    }
    // Pooled and reused: one handshake for five requests; no SNI without `sni`.
    assert_eq!(s.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(s.sni.lock().unwrap().clone(), vec![None]);
    let r = post(fe, "/up", vec![9u8; 200 * 1024], true).await;
    assert!(r.body.contains("body-len: 204800"), "{}", r.body);
    let r = post(fe, "/up", vec![9u8; 70_000], false).await;
    assert!(r.body.contains("body-len: 70000"), "{}", r.body);
}

#[tokio::test]
async fn verify_required_checks_the_chain_and_the_sni_name() {
    let dir = TempDir::new("tlsver");
    let (cert, _) = make_cert(&dir.0, "backend.test");
    let (other, _) = make_cert(&dir.0, "other.test");
    let s = tls_server("tls-v", &cert, false).await;
    let start_with = |tls: ServerTls| {
        let mut be = backend(
            "be",
            Balance::RoundRobin,
            vec![tls_server_line("a", s.addr, tls)],
        );
        be.retries = 0;
        start(config(
            vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
            vec![be],
        ))
    };
    let required = |ca: &std::path::Path, sni: Option<&str>| ServerTls {
        verify: true,
        ca_file: Some(ca.to_path_buf()),
        sni: sni.map(str::to_owned),
    };

    // The right CA and name: SNI sent and checked.
    let (h, _reg) = start_with(required(&cert, Some("backend.test")));
    let r = get(addr_of(&h, "web"), "/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        s.sni
            .lock()
            .unwrap()
            .contains(&Some("backend.test".to_owned()))
    );
    drop(h);

    // The right CA, no `sni`: the chain is checked, not the name (HAProxy).
    let (h, _reg) = start_with(required(&cert, None));
    assert_eq!(get(addr_of(&h, "web"), "/", &[]).await.status, 200);
    drop(h);

    // Another CA, or a name the certificate does not carry: the handshake fails like a
    // refused connection (503 after the retries), counted as a server error.
    for tls in [
        required(&other, Some("backend.test")),
        required(&cert, Some("wrong.test")),
    ] {
        let (h, reg) = start_with(tls);
        let r = get(addr_of(&h, "web"), "/", &[]).await;
        assert_eq!(r.status, 503, "{r:?}");
        let errors = reg
            .backend("be")
            .unwrap()
            .server("a")
            .unwrap()
            .counters
            .errors
            .load(Ordering::Relaxed);
        assert!(errors > 0);
    }
}

#[tokio::test]
async fn http2_over_tls_with_alpn() {
    let dir = TempDir::new("tlsh2");
    let (cert, _) = make_cert(&dir.0, "grpc.test");
    let s = tls_server("tls-h2", &cert, true).await;
    let srv = Server {
        proto: ServerProto::Http2,
        ..tls_server_line(
            "a",
            s.addr,
            ServerTls {
                verify: true,
                ca_file: Some(cert.clone()),
                sni: Some("grpc.test".into()),
            },
        )
    };
    let mut cfg = config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend("be", Balance::RoundRobin, vec![srv])],
    );
    cfg.global.threads = Some(1);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    for _ in 0..3 {
        let r = get(fe, "/g", &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.server(), "tls-h2");
    }
    assert_eq!(
        s.handshakes.load(Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
}

/// `mode tcp` originates TLS too: plain bytes in, TLS to the server (here an HTTPS server
/// answering the HTTP request relayed through).
#[tokio::test]
async fn tcp_mode_originates_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("tlstcp");
    let (cert, _) = make_cert(&dir.0, "backend.test");
    let s = tls_server("tls-tcp", &cert, false).await;
    let mut fe = frontend("t", vec![bind("127.0.0.1:0")], Some("be"));
    fe.mode = Mode::Tcp;
    let mut be = backend(
        "be",
        Balance::RoundRobin,
        vec![tls_server_line(
            "a",
            s.addr,
            ServerTls {
                verify: true,
                ca_file: Some(cert.clone()),
                sni: Some("backend.test".into()),
            },
        )],
    );
    be.mode = Mode::Tcp;
    let (h, _reg) = start(config(vec![fe], vec![be]));
    let out = tokio::time::timeout(T, async {
        let mut c = tokio::net::TcpStream::connect(addr_of(&h, "t"))
            .await
            .unwrap();
        c.write_all(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("tls-tcp\nGET /raw"), "{out}");
    assert_eq!(
        s.sni.lock().unwrap().clone(),
        vec![Some("backend.test".to_owned())]
    );
}
