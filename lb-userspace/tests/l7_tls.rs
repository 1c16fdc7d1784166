//! TLS termination: ALPN (h2, http/1.1) and certificate choice by SNI, with a rustls client
//! and with curl when it is installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use l7_support::*;
use lb::config::model::*;
use lb::l7::acl::AclSet;

/// A temp dir removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "lb-l7-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a self-signed cert+key PEM for `name`; returns its path and DER.
fn make_cert(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    (path, cert.der().to_vec())
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector(alpn: &[&str]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// Connects with `sni` and `alpn`; returns (negotiated ALPN, leaf DER, response).
async fn tls_get(
    addr: std::net::SocketAddr,
    sni: &str,
    alpn: &[&str],
) -> (Option<Vec<u8>>, Vec<u8>, Resp) {
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector(alpn)
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        let (_, c) = tls.get_ref();
        let proto = c.alpn_protocol().map(<[u8]>::to_vec);
        let leaf = c.peer_certificates().unwrap()[0].to_vec();
        let req = Request::get(format!("https://{sni}/tls"))
            .header("host", sni)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = if proto.as_deref() == Some(b"h2") {
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(executor(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            collect(tx.send_request(req).await.unwrap()).await
        } else {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut parts, body) = req.into_parts();
            parts.uri = "/tls".parse().unwrap();
            collect(
                tx.send_request(Request::from_parts(parts, body))
                    .await
                    .unwrap(),
            )
            .await
        };
        (proto, leaf, resp)
    })
    .await
    .expect("TLS exchange timed out")
}

fn tls_config(dir: &TempDir, backend_addr: std::net::SocketAddr) -> (Config, Vec<u8>, Vec<u8>) {
    let (pa, da) = make_cert(&dir.0, "a.test");
    let (pb, db) = make_cert(&dir.0, "b.test");
    let mut fe = frontend(
        "web",
        vec![tls_bind("127.0.0.1:0", vec![pa, pb], &["h2", "http/1.1"])],
        Some("be"),
    );
    fe.forwardfor = true;
    let cfg = config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("s", backend_addr)],
        )],
    );
    (cfg, da, db)
}

#[tokio::test]
async fn alpn_and_sni_pick_protocol_and_certificate() {
    let dir = TempDir::new("tls");
    let s = echo("s").await;
    let (cfg, da, db) = tls_config(&dir, s.addr);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");

    let (proto, leaf, r) = tls_get(fe, "b.test", &["h2", "http/1.1"]).await;
    assert_eq!(proto.as_deref(), Some(&b"h2"[..]));
    assert_eq!(leaf, db, "SNI b.test picks b's certificate");
    assert_eq!(r.status, 200);
    assert_eq!(r.server(), "s");
    assert_eq!(r.saw("x-forwarded-proto"), vec!["https"]);
    assert_eq!(r.saw("host"), vec!["b.test"]);
    assert!(
        r.body.contains("GET /tls"),
        "origin-form toward the server: {}",
        r.body
    );

    let (proto, leaf, r) = tls_get(fe, "a.test", &["http/1.1"]).await;
    assert_eq!(proto.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(leaf, da);
    assert_eq!(r.status, 200);

    let (_, leaf, _) = tls_get(fe, "unknown.test", &["h2"]).await;
    assert_eq!(leaf, da, "the first certificate is the default");
}

#[tokio::test]
async fn curl_negotiates_h2_and_http11() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed; skipped");
        return;
    }
    let dir = TempDir::new("curl");
    let s = echo("s").await;
    let (cfg, _, _) = tls_config(&dir, s.addr);
    let (h, _reg) = start(cfg);
    let port = addr_of(&h, "web").port();
    for (flag, want, name) in [("--http2", "2", "b.test"), ("--http1.1", "1.1", "a.test")] {
        let out = tokio::time::timeout(
            T,
            tokio::process::Command::new("curl")
                .args([
                    "-sk",
                    "-v",
                    flag,
                    "--max-time",
                    "5",
                    "--resolve",
                    &format!("{name}:{port}:127.0.0.1"),
                    "-w",
                    "\n%{http_version}",
                    &format!("https://{name}:{port}/curl"),
                ])
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.starts_with("s\n"), "{stdout}\n{stderr}");
        assert_eq!(stdout.lines().last(), Some(want), "{stdout}");
        assert!(stderr.contains(&format!("CN={name}")), "{stderr}");
    }
}

/// `ssl_fc` / `ssl_fc_sni` reach the ACLs. Needs the ACL engine.
#[tokio::test]
async fn ssl_fc_sni_routes() {
    let dir = TempDir::new("sni-acl");
    let (s, t) = (echo("s").await, echo("t").await);
    let (mut cfg, _, _) = tls_config(&dir, s.addr);
    let mut acls = AclSet::default();
    acl(&mut acls, "is_b ssl_fc_sni b.test");
    let fe = &mut cfg.frontends[0];
    fe.http_request = vec![HttpRequestRule {
        action: HttpAction::SetHeader {
            name: "X-SSL".into(),
            value: "yes".into(),
        },
        cond: Some(cond("if { ssl_fc }", &acls)),
    }];
    fe.use_backend = vec![UseBackend {
        backend: "bb".into(),
        cond: cond("if is_b", &acls),
    }];
    fe.acls = acls;
    cfg.backends.push(backend(
        "bb",
        Balance::RoundRobin,
        vec![server("t", t.addr)],
    ));
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let (_, _, r) = tls_get(fe, "b.test", &["h2"]).await;
    assert_eq!(r.server(), "t");
    assert_eq!(r.saw("x-ssl"), vec!["yes"]);
    let (_, _, r) = tls_get(fe, "a.test", &["http/1.1"]).await;
    assert_eq!(r.server(), "s");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
