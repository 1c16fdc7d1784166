//! The checkers against real loopback servers: accepting, refusing, hanging, HTTP 200/500,
//! garbage, TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb::config::model::{CheckKind, CheckSpec};
use lb::health::{CheckStatus, Checker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

fn spec(kind: CheckKind, timeout_ms: u64) -> CheckSpec {
    CheckSpec {
        interval: Duration::from_millis(100),
        rise: 2,
        fall: 3,
        timeout: Duration::from_millis(timeout_ms),
        kind,
    }
}

fn http(path: &str, host: Option<&str>, expect: (u16, u16)) -> CheckKind {
    CheckKind::Http {
        method: "GET".into(),
        path: path.into(),
        host: host.map(str::to_owned),
        expect,
    }
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// Accepts connections and keeps them open, saying nothing.
async fn silent_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    a
}

/// Answers every connection with `response` after reading the request head; the request
/// head is sent on `seen` (first connection only).
async fn http_server(response: &'static str) -> (SocketAddr, oneshot::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
            }
            let _ = s.write_all(response.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (a, rx)
}

/// Writes `banner` as soon as a connection is accepted, then closes it.
async fn banner_server(banner: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(banner.as_bytes()).await;
            let _ = s.shutdown().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    a
}

#[tokio::test]
async fn tcp_accepting_is_l4ok() {
    let a = silent_server().await;
    let c = Checker::new(a, &spec(CheckKind::Tcp, 1000)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L4Ok, "{o:?}");
    assert!(o.passed());
    assert!(o.duration < Duration::from_secs(1));
}

#[tokio::test]
async fn tcp_refused_is_l4con() {
    let a = closed_port().await;
    let c = Checker::new(a, &spec(CheckKind::Tcp, 1000)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L4Con, "{o:?}");
    assert_eq!(o.info.as_deref(), Some("Connection refused"));
    assert!(!o.passed());
    assert!(
        o.describe().starts_with(
            "reason: Layer4 connection problem, info: \"Connection refused\", check duration: "
        ),
        "{}",
        o.describe()
    );
}

#[tokio::test]
async fn tcp_connect_that_hangs_times_out() {
    // A listener with a full accept queue drops further SYNs: connect() hangs.
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let a = sock.local_addr().expect("addr");
    let _listener = sock.listen(0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(a)).await
        {
            fillers.push(s);
        }
    }
    let c = Checker::new(a, &spec(CheckKind::Tcp, 300)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L4Tout, "{o:?}");
    assert!(o.duration >= Duration::from_millis(290), "{o:?}");
    assert!(o.duration < Duration::from_millis(1000), "{o:?}");
}

#[tokio::test]
async fn http_200_is_l7ok_and_request_is_well_formed() {
    let (a, seen) =
        http_server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
    let c = Checker::new(
        a,
        &spec(http("/healthz", Some("app.example"), (200, 399)), 1000),
    )
    .expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L7Ok, "{o:?}");
    assert_eq!(o.code, Some(200));
    let req = seen.await.expect("request");
    assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("\r\nHost: app.example\r\n"), "{req}");
    assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
}

#[tokio::test]
async fn http_without_host_sends_the_address() {
    let (a, seen) = http_server("HTTP/1.0 204 No Content\r\n\r\n").await;
    let c = Checker::new(a, &spec(http("/", None, (200, 399)), 1000)).expect("checker");
    let o = c.run().await;
    assert_eq!((o.status, o.code), (CheckStatus::L7Ok, Some(204)), "{o:?}");
    let req = seen.await.expect("request");
    assert!(req.contains(&format!("\r\nHost: {a}\r\n")), "{req}");
}

#[tokio::test]
async fn http_500_is_l7sts() {
    let (a, _) =
        http_server("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
    let c = Checker::new(a, &spec(http("/", None, (200, 399)), 1000)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L7Sts, "{o:?}");
    assert_eq!(o.code, Some(500));
    assert_eq!(o.info.as_deref(), Some("Internal Server Error"));
    assert!(
        o.describe()
            .starts_with("reason: Layer7 wrong status, code: 500, info: \"Internal Server Error\""),
        "{}",
        o.describe()
    );
}

#[tokio::test]
async fn http_expect_range_is_inclusive_and_exact() {
    let (a, _) = http_server("HTTP/1.1 301 Moved Permanently\r\nContent-Length: 0\r\n\r\n").await;
    let strict = Checker::new(a, &spec(http("/", None, (200, 200)), 1000)).expect("checker");
    assert_eq!(strict.run().await.status, CheckStatus::L7Sts);
    let loose = Checker::new(a, &spec(http("/", None, (200, 301)), 1000)).expect("checker");
    assert_eq!(loose.run().await.status, CheckStatus::L7Ok);
}

#[tokio::test]
async fn http_hanging_server_is_l7tout() {
    let a = silent_server().await;
    let c = Checker::new(a, &spec(http("/", None, (200, 399)), 300)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L7Tout, "{o:?}");
    assert!(o.duration >= Duration::from_millis(290), "{o:?}");
    assert!(o.duration < Duration::from_millis(1000), "{o:?}");
}

#[tokio::test]
async fn http_garbage_or_empty_is_l7rsp() {
    let (a, _) = http_server("SSH-2.0-OpenSSH_9.6\r\n").await;
    let c = Checker::new(a, &spec(http("/", None, (200, 399)), 1000)).expect("checker");
    assert_eq!(c.run().await.status, CheckStatus::L7Rsp);
    let (a, _) = http_server("").await;
    let c = Checker::new(a, &spec(http("/", None, (200, 399)), 1000)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L7Rsp, "{o:?}");
}

#[tokio::test]
async fn http_refused_is_l4con() {
    let a = closed_port().await;
    let c = Checker::new(a, &spec(http("/", None, (200, 399)), 1000)).expect("checker");
    assert_eq!(c.run().await.status, CheckStatus::L4Con);
}

/// A TLS server with a fresh self-signed certificate; reports the SNI it received.
async fn tls_server() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec!["backend.test".to_owned()]).expect("cert");
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tx.send(tls.get_ref().1.server_name().map(str::to_owned));
                    let mut buf = [0u8; 64];
                    let _ = tls.read(&mut buf).await;
                }
            });
        }
    });
    (a, rx)
}

#[tokio::test]
async fn tls_handshake_is_l6ok_with_sni() {
    let (a, mut sni) = tls_server().await;
    let c = Checker::new(
        a,
        &spec(
            CheckKind::Tls {
                sni: Some("backend.test".into()),
            },
            2000,
        ),
    )
    .expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L6Ok, "{o:?}");
    assert_eq!(
        sni.recv().await.expect("sni"),
        Some("backend.test".to_owned())
    );
}

#[tokio::test]
async fn tls_without_sni_sends_none() {
    let (a, mut sni) = tls_server().await;
    let c = Checker::new(a, &spec(CheckKind::Tls { sni: None }, 2000)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L6Ok, "{o:?}");
    assert_eq!(sni.recv().await.expect("sni"), None);
}

#[tokio::test]
async fn tls_against_plain_http_is_l6rsp() {
    let a = banner_server("HTTP/1.1 400 Bad Request\r\n\r\n").await;
    let c = Checker::new(a, &spec(CheckKind::Tls { sni: None }, 2000)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L6Rsp, "{o:?}");
    assert!(o.info.is_some());
}

#[tokio::test]
async fn tls_hanging_server_is_l6tout() {
    let a = silent_server().await;
    let c = Checker::new(a, &spec(CheckKind::Tls { sni: None }, 300)).expect("checker");
    let o = c.run().await;
    assert_eq!(o.status, CheckStatus::L6Tout, "{o:?}");
}

#[tokio::test]
async fn bad_sni_is_rejected_at_setup() {
    let a = closed_port().await;
    let r = Checker::new(
        a,
        &spec(
            CheckKind::Tls {
                sni: Some("not a name".into()),
            },
            100,
        ),
    );
    assert!(r.is_err());
}
