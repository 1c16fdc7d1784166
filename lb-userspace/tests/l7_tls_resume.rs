//! TLS session resumption: stateless tickets (TLS 1.3 and 1.2), HAProxy's
//! `tls-ticket-keys` file shared by two instances and kept over reloads, and the session
//! cache sized by `global.ssl_cache_size`, with real rustls clients on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use futures_util::StreamExt;
use l7_support::*;
use lb::config::model::*;
use rustls::client::{Resumption, Tls12Resumption};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Other clients' full handshakes between a client's first connection and its return.
const OTHERS: usize = 1000;

/// A client configuration: TLS 1.3 or 1.2 only, with its own session store (`None`: no
/// resumption at all).
fn client(v13: bool, resumption: Option<Tls12Resumption>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let version = if v13 {
        &rustls::version::TLS13
    } else {
        &rustls::version::TLS12
    };
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = match resumption {
        Some(r) => Resumption::in_memory_sessions(64).tls12_resumption(r),
        None => Resumption::disabled(),
    };
    Arc::new(cfg)
}

/// One request over a new connection (read to the end, so TLS 1.3 tickets, which follow
/// the handshake, are received); how the handshake went and the version.
async fn visit(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> (HandshakeKind, ProtocolVersion) {
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(cfg.clone())
            .connect(ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /r HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200"), "{out:?}");
        let c = tls.get_ref().1;
        (c.handshake_kind().unwrap(), c.protocol_version().unwrap())
    })
    .await
    .expect("visit in time")
}

/// `OTHERS` full handshakes of fresh clients, a few at a time.
async fn crowd(addr: SocketAddr, v13: bool) {
    let cfg = client(v13, None);
    let kinds: Vec<_> = futures_util::stream::iter(0..OTHERS)
        .map(|_| visit(addr, &cfg))
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(kinds.iter().all(|(k, _)| *k == HandshakeKind::Full));
}

/// A TLS frontend with `dir`'s certificate for a.test (made on first use), then `tune`.
fn tls_cfg(dir: &TempDir, be: SocketAddr, tune: impl FnOnce(&mut BindTls)) -> Config {
    let pem = dir.0.join("a.test.pem");
    if !pem.exists() {
        make_cert(&dir.0, "a.test");
    }
    let mut b = tls_bind("127.0.0.1:0", vec![pem], &["http/1.1"]);
    tune(b.tls.as_mut().unwrap());
    config(
        vec![frontend("web", vec![b], Some("be"))],
        vec![backend("be", Balance::RoundRobin, vec![server("s", be)])],
    )
}

/// Writes a HAProxy key file of `n` 80-byte keys, key `i` filled with `seed + i`.
fn key_file(path: &Path, seed: u8, n: u8) {
    let lines: Vec<String> = (0..n)
        .map(|i| base64::engine::general_purpose::STANDARD.encode([seed + i; 80]))
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn tls13_tickets_resume_after_a_thousand_other_clients() {
    let dir = TempDir::new("resume13");
    let s = echo("s").await;
    let (h, _reg) = start(tls_cfg(&dir, s.addr, |_| {}));
    let fe = addr_of(&h, "web");
    let me = client(true, Some(Tls12Resumption::SessionIdOrTickets));
    assert_eq!(
        visit(fe, &me).await,
        (HandshakeKind::Full, ProtocolVersion::TLSv1_3)
    );
    crowd(fe, true).await;
    assert_eq!(
        visit(fe, &me).await,
        (HandshakeKind::Resumed, ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn tls12_tickets_resume() {
    let dir = TempDir::new("resume12t");
    let s = echo("s").await;
    // The cache disabled: only a ticket can resume.
    let mut cfg = tls_cfg(&dir, s.addr, |_| {});
    cfg.global.ssl_cache_size = 0;
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let me = client(false, Some(Tls12Resumption::SessionIdOrTickets));
    assert_eq!(
        visit(fe, &me).await,
        (HandshakeKind::Full, ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        visit(fe, &me).await,
        (HandshakeKind::Resumed, ProtocolVersion::TLSv1_2)
    );
    // Session IDs alone find no cache.
    let ids = client(false, Some(Tls12Resumption::SessionIdOnly));
    visit(fe, &ids).await;
    assert_eq!(visit(fe, &ids).await.0, HandshakeKind::Full);
}

/// TLS 1.2 session IDs live in the cache: the default size (HAProxy's 20000) keeps a
/// session over a thousand others; a smaller configured size has evicted it.
#[tokio::test]
async fn session_cache_is_sized_from_config() {
    let dir = TempDir::new("resume-cache");
    let s = echo("s").await;
    for (size, want) in [
        (lb::config::DEFAULT_SSL_CACHE_SIZE, HandshakeKind::Resumed),
        (500, HandshakeKind::Full),
    ] {
        let mut cfg = tls_cfg(&dir, s.addr, |t| t.no_tickets = true);
        cfg.global.ssl_cache_size = size;
        let (h, _reg) = start(cfg);
        let fe = addr_of(&h, "web");
        let me = client(false, Some(Tls12Resumption::SessionIdOnly));
        assert_eq!(visit(fe, &me).await.0, HandshakeKind::Full);
        assert_eq!(visit(fe, &me).await.0, HandshakeKind::Resumed);
        crowd(fe, false).await;
        assert_eq!(visit(fe, &me).await.0, want, "cache of {size}");
    }
}

/// `no-tls-tickets` on TLS 1.3: sessions resume from the cache (stateful tickets).
#[tokio::test]
async fn tls13_without_tickets_resumes_from_the_cache() {
    let dir = TempDir::new("resume13c");
    let s = echo("s").await;
    let (h, _reg) = start(tls_cfg(&dir, s.addr, |t| t.no_tickets = true));
    let fe = addr_of(&h, "web");
    let me = client(true, Some(Tls12Resumption::SessionIdOrTickets));
    visit(fe, &me).await;
    assert_eq!(visit(fe, &me).await.0, HandshakeKind::Resumed);
}

/// Two instances given one key file resume each other's sessions (two nodes behind
/// ECMP); without the file, they cannot.
#[tokio::test]
async fn a_key_file_is_shared_by_two_instances() {
    let dir = TempDir::new("resume-nodes");
    let s = echo("s").await;
    let keys: PathBuf = dir.0.join("tickets.key");
    key_file(&keys, 1, 3);
    for (file, want) in [(true, HandshakeKind::Resumed), (false, HandshakeKind::Full)] {
        let tune = |t: &mut BindTls| t.ticket_keys = file.then(|| keys.clone());
        let (a, _ra) = start(tls_cfg(&dir, s.addr, tune));
        let (b, _rb) = start(tls_cfg(&dir, s.addr, tune));
        for v13 in [true, false] {
            let me = client(v13, Some(Tls12Resumption::SessionIdOrTickets));
            assert_eq!(visit(addr_of(&a, "web"), &me).await.0, HandshakeKind::Full);
            assert_eq!(
                visit(addr_of(&b, "web"), &me).await.0,
                want,
                "file {file}, TLS 1.3 {v13}"
            );
        }
    }
}

/// Sessions survive reloads: with a key file (also after a key is appended, which rotates
/// the keys), and with the in-process key; the TLS 1.2 cache too.
#[tokio::test]
async fn sessions_survive_a_reload() {
    let dir = TempDir::new("resume-reload");
    let (s, t) = (echo("s").await, echo("t").await);
    let keys: PathBuf = dir.0.join("tickets.key");
    key_file(&keys, 10, 3);
    for file in [true, false] {
        let tune = |tl: &mut BindTls| tl.ticket_keys = file.then(|| keys.clone());
        let (h, _reg) = start(tls_cfg(&dir, s.addr, tune));
        let fe = addr_of(&h, "web");
        let v13 = client(true, Some(Tls12Resumption::SessionIdOrTickets));
        let ids = client(false, Some(Tls12Resumption::SessionIdOnly));
        assert_eq!(visit(fe, &v13).await.0, HandshakeKind::Full);
        assert_eq!(visit(fe, &ids).await.0, HandshakeKind::Full);
        // A reload that changes the backend; the bind stays.
        h.reload(Arc::new(tls_cfg(&dir, t.addr, tune))).unwrap();
        assert_eq!(addr_of(&h, "web"), fe);
        assert_eq!(
            visit(fe, &v13).await.0,
            HandshakeKind::Resumed,
            "file {file}"
        );
        assert_eq!(
            visit(fe, &ids).await.0,
            HandshakeKind::Resumed,
            "file {file}"
        );
        if file {
            // Rotation: a fourth key appended; tickets of the old encrypting key open.
            let fresh = client(true, Some(Tls12Resumption::SessionIdOrTickets));
            assert_eq!(visit(fe, &fresh).await.0, HandshakeKind::Full);
            key_file(&keys, 10, 4);
            h.reload(Arc::new(tls_cfg(&dir, t.addr, tune))).unwrap();
            assert_eq!(visit(fe, &fresh).await.0, HandshakeKind::Resumed);
            // Three more keys: the old ones are gone, tickets sealed with them are not
            // accepted any more (a full handshake, not an error).
            let old = client(true, Some(Tls12Resumption::SessionIdOrTickets));
            assert_eq!(visit(fe, &old).await.0, HandshakeKind::Full);
            key_file(&keys, 10, 7);
            h.reload(Arc::new(tls_cfg(&dir, t.addr, tune))).unwrap();
            assert_eq!(visit(fe, &old).await.0, HandshakeKind::Full);
        }
    }
}
