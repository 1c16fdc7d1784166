//! OCSP stapling: a `.ocsp` file beside a certificate (HAProxy's `site.pem.ocsp`), a real
//! OCSP response made by `openssl ocsp` for a CA made by openssl, is stapled to a client
//! asking for status; no file, no staple; the file is re-read on reload; a malformed one,
//! or one about another certificate, fails the load (and a reload keeps the old one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use l7_support::*;
use lb::config::model::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, then a leaf `name` of serial `serial` (hex) signed by it, as `name.pem`
/// (leaf, CA, key); the leaf alone as `name.crt`.
fn leaf(dir: &Path, name: &str, serial: &str) -> PathBuf {
    if !dir.join("ca.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=OCSP Test CA",
                "-days",
                "2",
            ],
        );
    }
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName=DNS:{name}\n"),
    )
    .unwrap();
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("0x{serial}"),
            "-days",
            "1",
            "-out",
            &crt,
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    let pem = dir.join(format!("{name}.pem"));
    let mut all = std::fs::read(dir.join(&crt)).unwrap();
    all.extend(std::fs::read(dir.join("ca.pem")).unwrap());
    all.extend(std::fs::read(dir.join(&key)).unwrap());
    std::fs::write(&pem, all).unwrap();
    pem
}

/// A signed OCSP response from the CA about `crt` (status `V`alid or `R`evoked), its DER.
fn ocsp_response(dir: &Path, crt: &str, serial: &str, status: char) -> Vec<u8> {
    let revoked = if status == 'R' { "260101000000Z" } else { "" };
    std::fs::write(
        dir.join("index.txt"),
        format!(
            "{status}\t301231235959Z\t{revoked}\t{}\tunknown\t/CN=x\n",
            serial.to_uppercase()
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            crt,
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
    );
    openssl(
        dir,
        &[
            "ocsp",
            "-index",
            "index.txt",
            "-rsigner",
            "ca.pem",
            "-rkey",
            "ca.key",
            "-CA",
            "ca.pem",
            "-reqin",
            "req.der",
            "-respout",
            "resp.der",
            "-ndays",
            "1",
        ],
    );
    std::fs::read(dir.join("resp.der")).unwrap()
}

/// Accepts any certificate, recording the stapled OCSP response.
#[derive(Debug)]
struct Recording(AcceptAny, Arc<Mutex<Option<Vec<u8>>>>);

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.1.lock().unwrap() = Some(ocsp.to_vec());
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The OCSP response stapled in a handshake with SNI `sni` (empty: none), TLS 1.3 or 1.2.
async fn stapled(addr: SocketAddr, sni: &str, tls13: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let seen = Arc::new(Mutex::new(None));
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Recording(AcceptAny(provider), seen.clone())))
        .with_no_client_auth();
    tokio::time::timeout(T, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
    })
    .await
    .expect("handshake in time");
    seen.lock().unwrap().take().expect("certificate verified")
}

fn cfg(certs: Vec<PathBuf>, s: SocketAddr) -> Config {
    web_bind_to(tls_bind("127.0.0.1:0", certs, &["http/1.1"]), s)
}

#[tokio::test]
async fn the_ocsp_file_is_stapled_and_reloaded() {
    let dir = TempDir::new("ocsp");
    let s = echo("s").await;
    let site = leaf(&dir.0, "ocsp.test", "1234");
    let plain = leaf(&dir.0, "plain.test", "5678");
    let good = ocsp_response(&dir.0, "ocsp.test.crt", "1234", 'V');
    let ocsp_path = dir.0.join("ocsp.test.pem.ocsp");
    std::fs::write(&ocsp_path, &good).unwrap();
    let certs = vec![site.clone(), plain.clone()];
    let (h, _reg) = start(cfg(certs.clone(), s.addr));
    let fe = addr_of(&h, "web");
    for tls13 in [true, false] {
        assert_eq!(stapled(fe, "ocsp.test", tls13).await, good, "tls13 {tls13}");
        assert!(stapled(fe, "plain.test", tls13).await.is_empty());
    }
    // A reload re-reads the file: now a response saying the certificate is revoked.
    let revoked = ocsp_response(&dir.0, "ocsp.test.crt", "1234", 'R');
    assert_ne!(revoked, good);
    std::fs::write(&ocsp_path, &revoked).unwrap();
    h.reload(Arc::new(cfg(certs.clone(), s.addr))).unwrap();
    assert_eq!(stapled(fe, "ocsp.test", true).await, revoked);

    // A malformed file, or a response about another certificate, fails the reload; the
    // running configuration keeps stapling what it had.
    let other = ocsp_response(&dir.0, "plain.test.crt", "5678", 'V');
    for (bytes, what) in [
        (b"not an OCSP response".to_vec(), "not a DER OCSP response"),
        (
            revoked[..revoked.len() - 1].to_vec(),
            "not a DER OCSP response",
        ),
        (
            other,
            "no single response for this certificate's serial number",
        ),
    ] {
        std::fs::write(&ocsp_path, &bytes).unwrap();
        let err = h
            .reload(Arc::new(cfg(certs.clone(), s.addr)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ocsp.test.pem.ocsp"), "{err}");
        assert!(err.contains(what), "{err}");
        assert_eq!(stapled(fe, "ocsp.test", true).await, revoked);
    }
    // An unreadable one (a directory) too.
    std::fs::remove_file(&ocsp_path).unwrap();
    std::fs::create_dir(&ocsp_path).unwrap();
    let err = h
        .reload(Arc::new(cfg(certs.clone(), s.addr)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
    // Removed: no staple after a reload.
    std::fs::remove_dir(&ocsp_path).unwrap();
    h.reload(Arc::new(cfg(certs, s.addr))).unwrap();
    assert!(stapled(fe, "ocsp.test", true).await.is_empty());
}

/// OpenSSL's client asking for status (`s_client -status`) gets the response too.
#[tokio::test]
async fn openssl_client_gets_the_staple() {
    let dir = TempDir::new("ocsp-openssl");
    let s = echo("s").await;
    let site = leaf(&dir.0, "ocsp.test", "abcd");
    let good = ocsp_response(&dir.0, "ocsp.test.crt", "abcd", 'V');
    std::fs::write(dir.0.join("ocsp.test.pem.ocsp"), &good).unwrap();
    let (h, _reg) = start(cfg(vec![site], s.addr));
    let fe = addr_of(&h, "web");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &fe.to_string(),
                "-servername",
                "ocsp.test",
                "-status",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OCSP Response Status: successful"), "{text}");
    assert!(text.contains("Cert Status: good"), "{text}");
}
