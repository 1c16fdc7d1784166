//! Certificate choice: by SNI (exact before wildcard, SAN and CN), then by what the client
//! can verify (RSA, ECDSA, Ed25519 for one name), the default certificate otherwise, and
//! `strict-sni`; rustls clients and OpenSSL's on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use l7_support::*;
use lb::config::model::*;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `names` (the first also the CN) with a key of `alg`,
/// written to `dir/file`; its DER.
fn cert(
    dir: &Path,
    file: &str,
    names: &[&str],
    alg: &'static rcgen::SignatureAlgorithm,
) -> (PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    let c = params.self_signed(&key).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, format!("{}{}", c.pem(), key.serialize_pem())).unwrap();
    (path, c.der().to_vec())
}

/// The provider's signature verification, cut down to `schemes` (all when empty): what
/// the client offers in its ClientHello.
fn offering(provider: &mut CryptoProvider, schemes: &[SignatureScheme]) {
    if schemes.is_empty() {
        return;
    }
    let base = provider.signature_verification_algorithms;
    let mapping: Vec<_> = base
        .mapping
        .iter()
        .filter(|(s, _)| schemes.contains(s))
        .copied()
        .collect();
    provider.signature_verification_algorithms = rustls::crypto::WebPkiSupportedAlgorithms {
        all: base.all,
        mapping: Box::leak(mapping.into_boxed_slice()),
    };
}

const RSA: &[SignatureScheme] = &[
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];
const ECDSA: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];
const ED25519: &[SignatureScheme] = &[SignatureScheme::ED25519];

/// Connects offering `schemes` (empty: all), with SNI `sni` (`None`: none sent), TLS 1.2
/// only with ECDHE-RSA suites when `tls12_rsa_suites`; the leaf the server sent, or the
/// handshake error.
async fn leaf(
    addr: SocketAddr,
    sni: Option<&str>,
    schemes: &[SignatureScheme],
    tls12_rsa_suites: bool,
) -> Result<Vec<u8>, String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if tls12_rsa_suites {
        provider.cipher_suites.retain(|s| {
            s.tls13().is_none()
                && s.usable_for_signature_algorithm(rustls::SignatureAlgorithm::RSA)
                && !s.usable_for_signature_algorithm(rustls::SignatureAlgorithm::ECDSA)
        });
        assert!(!provider.cipher_suites.is_empty());
    }
    offering(&mut provider, schemes);
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_rsa_suites {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("nosni.invalid").to_owned()).unwrap();
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
    })
    .await
    .expect("handshake in time")
}

async fn serve(certs: Vec<PathBuf>, strict: bool) -> (L7Handleish, SocketAddr) {
    let s = echo("s").await;
    let mut b = tls_bind("127.0.0.1:0", certs, &["http/1.1"]);
    b.tls.as_mut().unwrap().strict_sni = strict;
    let cfg = config(
        vec![frontend("web", vec![b], Some("be"))],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("s", s.addr)],
        )],
    );
    let (h, reg) = start(cfg);
    let addr = addr_of(&h, "web");
    ((h, reg, s), addr)
}

/// Keeps the instance, its registry and the backend alive for the test.
type L7Handleish = (lb::l7::L7Handle, Arc<lb::state::Registry>, Echo);

#[tokio::test]
async fn the_client_gets_a_certificate_it_can_verify() {
    let dir = TempDir::new("dual");
    let names = ["dual.test"];
    let (ec, ec_der) = cert(&dir.0, "ec.pem", &names, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (rsa, rsa_der) = cert(&dir.0, "rsa.pem", &names, &rcgen::PKCS_RSA_SHA256);
    let (ed, ed_der) = cert(&dir.0, "ed.pem", &names, &rcgen::PKCS_ED25519);
    let (_h, fe) = serve(vec![ec, rsa, ed], false).await;
    let sni = Some("dual.test");
    assert_eq!(
        leaf(fe, sni, &[], false).await.unwrap(),
        ec_der,
        "first wins"
    );
    assert_eq!(
        leaf(fe, sni, RSA, false).await.unwrap(),
        rsa_der,
        "RSA-only"
    );
    assert_eq!(leaf(fe, sni, ECDSA, false).await.unwrap(), ec_der);
    assert_eq!(leaf(fe, sni, ED25519, false).await.unwrap(), ed_der);
    // TLS 1.2 with only ECDHE-RSA suites: ECDSA signatures would do, the suites would not.
    assert_eq!(leaf(fe, sni, &[], true).await.unwrap(), rsa_der);
    // The default (no SNI, unknown SNI) is chosen the same way among the first
    // certificate and those with its names.
    assert_eq!(leaf(fe, None, RSA, false).await.unwrap(), rsa_der);
    assert_eq!(
        leaf(fe, Some("other.test"), &[], false).await.unwrap(),
        ec_der
    );
    assert_eq!(
        leaf(fe, Some("other.test"), ED25519, false).await.unwrap(),
        ed_der
    );
}

/// An RSA-only OpenSSL client (`-sigalgs`), TLS 1.3 and 1.2, gets the RSA certificate.
#[tokio::test]
async fn openssl_rsa_only_client_gets_the_rsa_certificate() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl not installed; skipped");
        return;
    }
    let dir = TempDir::new("dual-openssl");
    let names = ["dual.test"];
    let (ec, _) = cert(&dir.0, "ec.pem", &names, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (rsa, _) = cert(&dir.0, "rsa.pem", &names, &rcgen::PKCS_RSA_SHA256);
    let (_h, fe) = serve(vec![ec, rsa], false).await;
    for (version, sigalgs, want) in [
        ("-tls1_3", "RSA-PSS+SHA256", "Server public key is 2048 bit"),
        (
            "-tls1_2",
            "RSA+SHA256:RSA-PSS+SHA256",
            "Server public key is 2048 bit",
        ),
        ("-tls1_3", "ECDSA+SHA256", "Server public key is 256 bit"),
    ] {
        let out = tokio::time::timeout(
            T,
            tokio::process::Command::new("openssl")
                .args(["s_client", version, "-sigalgs", sigalgs])
                .args(["-servername", "dual.test", "-connect"])
                .arg(fe.to_string())
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(want),
            "{version} {sigalgs}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn exact_names_before_wildcards_and_cn() {
    let dir = TempDir::new("wild");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let (d, d_der) = cert(&dir.0, "default.pem", &["default.test"], alg);
    let (w, w_der) = cert(&dir.0, "wild.pem", &["*.w.test"], alg);
    let (x, x_der) = cert(&dir.0, "x.pem", &["x.w.test", "alt.test"], alg);
    let (_h, fe) = serve(vec![d, w, x], false).await;
    assert_eq!(leaf(fe, Some("x.w.test"), &[], false).await.unwrap(), x_der);
    assert_eq!(leaf(fe, Some("X.W.Test"), &[], false).await.unwrap(), x_der);
    assert_eq!(leaf(fe, Some("alt.test"), &[], false).await.unwrap(), x_der);
    assert_eq!(leaf(fe, Some("y.w.test"), &[], false).await.unwrap(), w_der);
    // A wildcard covers one label only.
    assert_eq!(
        leaf(fe, Some("a.y.w.test"), &[], false).await.unwrap(),
        d_der
    );
    assert_eq!(leaf(fe, Some("w.test"), &[], false).await.unwrap(), d_der);
}

#[tokio::test]
async fn strict_sni_refuses_what_matches_no_certificate() {
    let dir = TempDir::new("strict");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let (a, a_der) = cert(&dir.0, "a.pem", &["a.test"], alg);
    let (_h, fe) = serve(vec![a], true).await;
    assert_eq!(leaf(fe, Some("a.test"), &[], false).await.unwrap(), a_der);
    for sni in [None, Some("b.test")] {
        let e = leaf(fe, sni, &[], false).await.unwrap_err();
        assert!(e.contains("alert"), "{sni:?}: {e}");
    }
}

/// `crt DIRECTORY` loads every certificate file in it (HAProxy's companions `.key`,
/// `.ocsp`, … skipped) and SNI picks among them by their names; a loaded config, a live
/// listener, a client per name.
#[tokio::test]
async fn crt_directory_serves_each_certificate_by_its_names() {
    let dir = TempDir::new("crtdir");
    let certs = dir.0.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (_, der_a) = make_cert(&certs, "a.test");
    let (_, der_b) = make_cert(&certs, "b.test");
    std::fs::write(certs.join("a.test.pem.sctl"), b"not a certificate").unwrap();
    let e = echo("srv").await;
    let toml = format!(
        "[frontend.web]\nmode = \"http\"\nbind = [\"127.0.0.1:26101 ssl crt {}/\"]\n\
         timeout = {{ client = \"5s\" }}\ndefault_backend = \"be\"\n\
         [backend.be]\nmode = \"http\"\ntimeout = {{ connect = \"5s\", server = \"5s\" }}\n\
         server = [\"s1 {}\"]\n",
        certs.display(),
        e.addr
    );
    let (cfg, _) = lb::config::load_str(
        Path::new("dir.toml"),
        &toml,
        &lb::config::LoadOptions::default(),
    )
    .expect("loads");
    let tls = cfg.frontends[0].binds[0].tls.as_ref().expect("tls");
    assert_eq!(tls.certs.len(), 2, "{:?}", tls.certs);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let (_, leaf, r) = tls_get(fe, "b.test", &["http/1.1"]).await;
    assert_eq!(leaf, der_b);
    assert_eq!(r.status, 200);
    let (_, leaf, _) = tls_get(fe, "a.test", &["http/1.1"]).await;
    assert_eq!(leaf, der_a);

    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let bad = toml.replace(&certs.display().to_string(), &empty.display().to_string());
    let err = lb::config::load_str(
        Path::new("dir.toml"),
        &bad,
        &lb::config::LoadOptions::default(),
    )
    .expect_err("an empty crt directory is refused");
    assert!(err.to_string().contains("holds no certificate"), "{err}");
}
