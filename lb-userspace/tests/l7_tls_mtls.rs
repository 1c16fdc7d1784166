//! Client certificates on an `ssl` bind: `verify required|optional` against a `ca-file`,
//! a `crl-file`, and the `ssl_c_*` fetches in ACLs and in `set-header` values, with real
//! certificates (rcgen) and rustls clients on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use l7_support::*;
use lb::acl::AclSet;
use lb::config::model::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A CA, written to `dir/NAME.pem` (certificate only).
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name
        .push(DnType::OrganizationName, "Example");
    p.distinguished_name.push(DnType::CommonName, name);
    let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.join(format!("{}.pem", name.replace(' ', "_")));
    std::fs::write(&pem, issuer.pem()).unwrap();
    Ca { issuer, pem }
}

/// A client certificate `cn` with `serial`, valid until 2030-01-02, signed by `ca`.
fn client_cert(
    ca: &Ca,
    cn: &str,
    serial: &[u8],
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CountryName, "FR");
    p.distinguished_name
        .push(DnType::OrganizationName, "Clients");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.not_after = rcgen::date_time_ymd(2030, 1, 2);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
}

/// One GET over TLS, with a client certificate or none; the response, or the error of the
/// handshake or of the exchange (a refused certificate shows in either, by TLS version).
async fn get_with(
    addr: SocketAddr,
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Resp, String> {
    get_full(addr, "a.test", &[], cert).await.map(|(r, _, _)| r)
}

/// [`get_with`] for SNI `sni` offering `alpn`; also the leaf the server sent and the ALPN
/// it chose.
async fn get_full(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&str],
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<(Resp, Vec<u8>, Option<Vec<u8>>), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)));
    let mut cfg = match cert {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let c = tls.get_ref().1;
        let leaf = c.peer_certificates().unwrap()[0].to_vec();
        let proto = c.alpn_protocol().map(<[u8]>::to_vec);
        let req = Request::get("/m")
            .header("host", sni)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = if proto.as_deref() == Some(b"h2") {
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(executor(), TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("http: {e}"))?;
            tokio::spawn(conn);
            tx.send_request(req).await
        } else {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("http: {e}"))?;
            tokio::spawn(conn);
            tx.send_request(req).await
        }
        .map_err(|e| format!("request: {e}"))?;
        Ok((collect(resp).await, leaf, proto))
    })
    .await
    .expect("in time")
}

const HEADERS: &[(&str, &str)] = &[
    ("X-SSL-Client-DN", "%[ssl_c_s_dn]"),
    ("X-SSL-Client-CN", "%[ssl_c_s_dn(cn)]"),
    ("X-SSL-Issuer", "%[ssl_c_i_dn]"),
    ("X-SSL-Serial", "%[ssl_c_serial,hex]"),
    ("X-SSL-SHA1", "%[ssl_c_sha1,hex]"),
    ("X-SSL-Not-After", "%[ssl_c_notafter]"),
    ("X-SSL-Used", "%[ssl_c_used]"),
    ("X-SSL-Verify", "%[ssl_c_verify]"),
];

/// A frontend with `verify`, `ca-file` (and `crl-file`), the `ssl_c_*` headers, and the
/// ACL `ops` (`ssl_c_s_dn(CN) ops.test`) routing to backend `ops`.
fn mtls_config(
    dir: &TempDir,
    verify: ClientVerify,
    ca: &Ca,
    crl: Option<PathBuf>,
    s: SocketAddr,
    t: SocketAddr,
) -> Config {
    let (pa, _) = make_cert(&dir.0, "a.test");
    let mut b = tls_bind("127.0.0.1:0", vec![pa], &["http/1.1"]);
    let tls = b.tls.as_mut().unwrap();
    tls.verify = verify;
    tls.ca_file = Some(ca.pem.clone());
    tls.crl_file = crl;
    let mut fe = frontend("web", vec![b], Some("be"));
    fe.http_request = HEADERS
        .iter()
        .map(|(n, v)| HttpRule {
            action: HttpAction::SetHeader {
                name: (*n).into(),
                value: (*v).into(),
            },
            cond: None,
        })
        .collect();
    let mut acls = AclSet::default();
    acl(&mut acls, "ops ssl_c_s_dn(CN) ops.test");
    fe.use_backend = vec![UseBackend {
        backend: "ops".into(),
        cond: cond("if ops", &acls),
    }];
    fe.acls = acls;
    config(
        vec![fe],
        vec![
            backend("be", Balance::RoundRobin, vec![server("s", s)]),
            backend("ops", Balance::RoundRobin, vec![server("t", t)]),
        ],
    )
}

fn sha1_hex(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

#[tokio::test]
async fn verify_required_and_the_client_certificate_fetches() {
    let dir = TempDir::new("mtls-req");
    let (s, t) = (echo("s").await, echo("t").await);
    let root = ca(&dir.0, "Root CA");
    let other = ca(&dir.0, "Other CA");
    let cfg = mtls_config(&dir, ClientVerify::Required, &root, None, s.addr, t.addr);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");

    let (chain, key) = client_cert(&root, "client.test", &[0x01, 0x02, 0xab]);
    let sha1 = sha1_hex(&chain[0]);
    let r = get_with(fe, Some((chain, key))).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.server(), "s");
    assert_eq!(
        r.saw("x-ssl-client-dn"),
        ["/CN=client.test/C=FR/O=Clients"],
        "the certificate's order (rcgen writes its default CN first)"
    );
    assert_eq!(r.saw("x-ssl-client-cn"), ["client.test"]);
    assert_eq!(r.saw("x-ssl-issuer"), ["/CN=Root CA/O=Example"]);
    assert_eq!(r.saw("x-ssl-serial"), ["0102AB"]);
    assert_eq!(r.saw("x-ssl-sha1"), [sha1]);
    assert_eq!(r.saw("x-ssl-not-after"), ["300102000000Z"]);
    assert_eq!(r.saw("x-ssl-used"), ["1"]);
    assert_eq!(r.saw("x-ssl-verify"), ["0"]);

    // The ACL on the subject's CN routes.
    let r = get_with(fe, Some(client_cert(&root, "ops.test", &[7])))
        .await
        .unwrap();
    assert_eq!(r.server(), "t");

    // No certificate, or one from another CA: refused.
    let e = get_with(fe, None).await.unwrap_err();
    assert!(e.contains("alert") || e.contains("request"), "{e}");
    let e = get_with(fe, Some(client_cert(&other, "client.test", &[1])))
        .await
        .unwrap_err();
    assert!(e.contains("alert") || e.contains("request"), "{e}");
}

#[tokio::test]
async fn verify_optional_serves_clients_without_a_certificate() {
    let dir = TempDir::new("mtls-opt");
    let (s, t) = (echo("s").await, echo("t").await);
    let root = ca(&dir.0, "Root CA");
    let other = ca(&dir.0, "Other CA");
    let cfg = mtls_config(&dir, ClientVerify::Optional, &root, None, s.addr, t.addr);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");

    let r = get_with(fe, None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.saw("x-ssl-used"), ["0"]);
    assert_eq!(r.saw("x-ssl-verify"), ["0"]);
    // A fetch without a value sets nothing.
    assert!(
        r.saw("x-ssl-client-dn").iter().all(String::is_empty),
        "{:?}",
        r.body
    );

    let r = get_with(fe, Some(client_cert(&root, "client.test", &[5])))
        .await
        .unwrap();
    assert_eq!(r.saw("x-ssl-used"), ["1"]);
    assert_eq!(r.saw("x-ssl-client-cn"), ["client.test"]);

    // A certificate that is sent must still verify (HAProxy: whatever `verify` says).
    let e = get_with(fe, Some(client_cert(&other, "client.test", &[1])))
        .await
        .unwrap_err();
    assert!(e.contains("alert") || e.contains("request"), "{e}");
}

#[tokio::test]
async fn crl_file_refuses_revoked_certificates() {
    let dir = TempDir::new("mtls-crl");
    let (s, t) = (echo("s").await, echo("t").await);
    let root = ca(&dir.0, "Root CA");
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2090, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: SerialNumber::from_slice(&[0x66]),
            revocation_time: rcgen::date_time_ymd(2024, 6, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&root.issuer)
    .unwrap();
    let crl_path = dir.0.join("root.crl");
    std::fs::write(&crl_path, crl.pem().unwrap()).unwrap();
    let cfg = mtls_config(
        &dir,
        ClientVerify::Required,
        &root,
        Some(crl_path),
        s.addr,
        t.addr,
    );
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let r = get_with(fe, Some(client_cert(&root, "good.test", &[0x65])))
        .await
        .unwrap();
    assert_eq!(r.saw("x-ssl-client-cn"), ["good.test"]);
    let e = get_with(fe, Some(client_cert(&root, "revoked.test", &[0x66])))
        .await
        .unwrap_err();
    assert!(e.contains("alert") || e.contains("request"), "{e}");
}

/// Kills the HAProxy it holds when dropped.
struct Haproxy(std::process::Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same `ssl_c_*` headers from HAProxy 2.6 and from lb, for one client certificate:
/// the differential test of the client-certificate fetches.
#[tokio::test]
async fn client_certificate_headers_match_haproxy() {
    if std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("haproxy not installed; skipped");
        return;
    }
    let dir = TempDir::new("mtls-diff");
    let (s, t) = (echo("s").await, echo("t").await);
    let root = ca(&dir.0, "Root CA");
    let cfg = mtls_config(&dir, ClientVerify::Required, &root, None, s.addr, t.addr);
    let pem = cfg.frontends[0].binds[0].tls.as_ref().unwrap().certs[0].clone();
    let (h, _reg) = start(cfg);
    let lb_addr = addr_of(&h, "web");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let headers: String = HEADERS
        .iter()
        .map(|(n, v)| format!("    http-request set-header {n} {v}\n"))
        .collect();
    let hcfg = format!(
        "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind 127.0.0.1:{port} ssl crt {} verify required ca-file {}\n{headers}    default_backend be\n\
backend be\n    server s {}\n",
        pem.display(),
        root.pem.display(),
        s.addr
    );
    let hfile = dir.0.join("haproxy.cfg");
    std::fs::write(&hfile, hcfg).unwrap();
    let _hp = Haproxy(
        std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&hfile)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let hp_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(hp_addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "haproxy did not start");

    let (chain, key) = client_cert(&root, "client.test", &[0x0f, 0x42]);
    let key2 = key.clone_key();
    let from_lb = get_with(lb_addr, Some((chain.clone(), key))).await.unwrap();
    let from_hp = get_with(hp_addr, Some((chain, key2))).await.unwrap();
    assert_eq!(from_hp.status, 200, "{}", from_hp.body);
    for (name, _) in HEADERS {
        let n = name.to_ascii_lowercase();
        assert_eq!(from_lb.saw(&n), from_hp.saw(&n), "{name}");
        assert!(!from_hp.saw(&n).is_empty(), "{name}");
    }
}

/// A `crt-list` (HAProxy's format, read by the config loader): SNI filters replace a
/// certificate's names, `!name` removes one, `[options]` apply to the connections that pick
/// the entry (client certificates required, another ALPN list), other names keep the bind's.
#[tokio::test]
async fn crt_list_filters_and_per_entry_options() {
    let dir = TempDir::new("crt-list");
    let s = echo("s").await;
    let root = ca(&dir.0, "Root CA");
    let (_, d_der) = make_cert(&dir.0, "default.test");
    let (_, a_der) = make_cert(&dir.0, "a.test");
    let (_, c_der) = make_cert(&dir.0, "c.test");
    // b's certificate names b.test and x.b.test.
    let bkey = KeyPair::generate().unwrap();
    let bcert = CertificateParams::new(vec!["b.test".to_owned(), "x.b.test".to_owned()])
        .unwrap()
        .self_signed(&bkey)
        .unwrap();
    std::fs::write(
        dir.0.join("b.pem"),
        format!("{}{}", bcert.pem(), bkey.serialize_pem()),
    )
    .unwrap();
    let b_der = bcert.der().to_vec();
    std::fs::write(
        dir.0.join("list.txt"),
        "# entries\na.test.pem alias.test\nb.pem !x.b.test\n\
c.test.pem [verify required ca-file Root_CA.pem alpn http/1.1] c.test\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = format!(
        "[defaults]\nmode = \"http\"\ntimeout = {{ client = \"5s\", connect = \"5s\", server = \"5s\" }}\n\
[frontend.web]\nbind = [\"127.0.0.1:{port} ssl crt default.test.pem crt-list list.txt alpn h2,http/1.1\"]\n\
default_backend = \"be\"\n[backend.be]\nserver = [\"s {}\"]\n",
        s.addr
    );
    let file = dir.0.join("lb.toml");
    std::fs::write(&file, toml).unwrap();
    let opts = lb::config::LoadOptions {
        base_dir: Some(dir.0.clone()),
        ..Default::default()
    };
    let (cfg, _) = lb::config::load_with(&file, &opts).unwrap_or_else(|e| panic!("{e}"));
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let leaf =
        |sni: &'static str| async move { get_full(fe, sni, &["h2", "http/1.1"], None).await };
    assert_eq!(leaf("alias.test").await.unwrap().1, a_der, "a filter");
    assert_eq!(
        leaf("a.test").await.unwrap().1,
        d_der,
        "filters replace the certificate's names"
    );
    assert_eq!(leaf("b.test").await.unwrap().1, b_der);
    assert_eq!(leaf("x.b.test").await.unwrap().1, d_der, "!x.b.test");
    let (_, l, proto) = leaf("default.test").await.unwrap();
    assert_eq!((l, proto.as_deref()), (d_der.clone(), Some(&b"h2"[..])));
    // c.test: client certificates required, ALPN http/1.1 only.
    let e = leaf("c.test").await.unwrap_err();
    assert!(e.contains("alert") || e.contains("request"), "{e}");
    let (r, l, proto) = get_full(
        fe,
        "c.test",
        &["h2", "http/1.1"],
        Some(client_cert(&root, "client.test", &[9])),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(l, c_der);
    assert_eq!(proto.as_deref(), Some(&b"http/1.1"[..]));
}
