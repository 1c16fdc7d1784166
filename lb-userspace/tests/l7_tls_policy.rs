//! TLS policy per bind: a client whose ALPN list has nothing in common with the bind's is
//! served without ALPN (as HAProxy), `ssl-min-ver` / `ssl-max-ver`, `ciphersuites`,
//! `ciphers` and the server's order unless `prefer-client-ciphers`; rustls clients on
//! loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::sync::Arc;

use l7_support::*;
use lb::config::model::*;
use lb::tls_policy::TlsVersion;
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What a handshake gave: version, suite, ALPN; or the error.
type Outcome = Result<(ProtocolVersion, CipherSuite, Option<Vec<u8>>), String>;

/// Connects with these versions (empty: both), suites in this order (empty: the
/// provider's) and ALPN list, then sends one HTTP/1.1 request and reads the answer.
async fn hello(
    addr: SocketAddr,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: &[CipherSuite],
    alpn: &[&str],
) -> Outcome {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !suites.is_empty() {
        let all = provider.cipher_suites.clone();
        provider.cipher_suites = suites
            .iter()
            .map(|s| *all.iter().find(|a| a.suite() == *s).unwrap())
            .collect();
    }
    let provider = Arc::new(provider);
    let versions = if versions.is_empty() {
        rustls::DEFAULT_VERSIONS
    } else {
        versions
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"GET /p HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        assert!(
            out.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let c = tls.get_ref().1;
        Ok((
            c.protocol_version().unwrap(),
            c.negotiated_cipher_suite().unwrap().suite(),
            c.alpn_protocol().map(<[u8]>::to_vec),
        ))
    })
    .await
    .expect("in time")
}

async fn serve(tune: impl FnOnce(&mut BindTls)) -> ((lb::l7::L7Handle, Echo, TempDir), SocketAddr) {
    let dir = TempDir::new("policy");
    let s = echo("s").await;
    let (pem, _) = make_cert(&dir.0, "a.test");
    let mut b = tls_bind("127.0.0.1:0", vec![pem], &["h2", "http/1.1"]);
    tune(b.tls.as_mut().unwrap());
    let cfg = config(
        vec![frontend("web", vec![b], Some("be"))],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("s", s.addr)],
        )],
    );
    let (h, _reg) = start(cfg);
    let addr = addr_of(&h, "web");
    ((h, s, dir), addr)
}

const V12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
const V13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

#[tokio::test]
async fn alpn_mismatch_is_served_without_alpn() {
    let (_keep, fe) = serve(|_| {}).await;
    let (_, _, alpn) = hello(fe, &[], &[], &["spdy/3", "http/1.0"]).await.unwrap();
    assert_eq!(alpn, None, "served, without ALPN");
    let (_, _, alpn) = hello(fe, &[], &[], &["spdy/3", "http/1.1"]).await.unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (_, _, alpn) = hello(fe, &[], &[], &[]).await.unwrap();
    assert_eq!(alpn, None);
}

#[tokio::test]
async fn min_and_max_versions() {
    let (_keep, fe) = serve(|t| t.min_version = Some(TlsVersion::Tls13)).await;
    assert_eq!(
        hello(fe, &[], &[], &[]).await.unwrap().0,
        ProtocolVersion::TLSv1_3
    );
    let e = hello(fe, V12, &[], &[]).await.unwrap_err();
    assert!(e.contains("alert") || e.contains("version"), "{e}");

    let (_keep, fe) = serve(|t| t.max_version = Some(TlsVersion::Tls12)).await;
    assert_eq!(
        hello(fe, &[], &[], &[]).await.unwrap().0,
        ProtocolVersion::TLSv1_2
    );
    assert!(hello(fe, V13, &[], &[]).await.is_err());
}

#[tokio::test]
async fn cipher_suites_in_the_binds_order_unless_the_client_is_preferred() {
    let chacha = CipherSuite::TLS13_CHACHA20_POLY1305_SHA256;
    let aes128 = CipherSuite::TLS13_AES_128_GCM_SHA256;
    let ecdsa128 = CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    let ecdsa256 = CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;
    let (_keep, fe) = serve(|t| {
        t.ciphersuites = vec![chacha, aes128];
        t.ciphers = vec![ecdsa256];
    })
    .await;
    // The client prefers AES-128; the bind's order wins (HAProxy's default).
    let client_order = [aes128, chacha, ecdsa128, ecdsa256];
    assert_eq!(hello(fe, V13, &client_order, &[]).await.unwrap().1, chacha);
    assert_eq!(
        hello(fe, V12, &client_order, &[]).await.unwrap().1,
        ecdsa256
    );
    // A suite the bind does not list is refused.
    assert!(
        hello(fe, V13, &[CipherSuite::TLS13_AES_256_GCM_SHA384], &[])
            .await
            .is_err()
    );
    assert!(hello(fe, V12, &[ecdsa128], &[]).await.is_err());

    let (_keep, fe) = serve(|t| {
        t.ciphersuites = vec![chacha, aes128];
        t.prefer_client_ciphers = true;
    })
    .await;
    assert_eq!(hello(fe, V13, &client_order, &[]).await.unwrap().1, aes128);
}
