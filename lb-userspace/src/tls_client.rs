//! TLS toward servers, with rustls and the aws-lc-rs provider (TLS 1.2 and 1.3): the
//! configurations of health checks (`check … tls`: any certificate) and of servers with
//! `ssl` (`verify none`, or `verify required` against a `ca-file`, checking the name only
//! when `sni` gives one, as HAProxy does without `verifyhost`); and the PEM loaders of CA
//! and revocation-list files, which the client-certificate checks of `ssl` binds use too.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    #[error("TLS client setup: {0}")]
    Setup(#[from] rustls::Error),
    #[error("CA file {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("CRL file {path}: {why}")]
    CrlFile { path: String, why: String },
    #[error("certificate verifier: {0}")]
    Verifier(String),
}

/// How a server's certificate is checked.
#[derive(Debug, Clone)]
pub enum Verify {
    /// `verify none`: any certificate (the handshake's signatures are still checked).
    None,
    /// `verify required`: a chain to one of these roots; the name too when `check_name`.
    Roots {
        roots: Arc<RootCertStore>,
        check_name: bool,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration: `verify`, and ALPN protocols to offer (none: no ALPN).
pub fn client_config(
    verify: &Verify,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsClientError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::None => Arc::new(LenientVerifier::AnyCert(provider)),
        Verify::Roots { roots, check_name } => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider)
                .build()
                .map_err(|e| TlsClientError::Verifier(e.to_string()))?;
            if *check_name {
                inner
            } else {
                Arc::new(LenientVerifier::ChainOnly(inner))
            }
        }
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The certificates of a PEM file (`ca-file`); at least one.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsClientError> {
    let err = |why: String| TlsClientError::CaFile {
        path: path.display().to_string(),
        why,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut data.as_slice()) {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| err(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(roots)
}

/// The revocation lists of a PEM file (a bind's `crl-file`); at least one.
pub fn load_crls(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsClientError> {
    let err = |why: String| TlsClientError::CrlFile {
        path: path.display().to_string(),
        why,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let crls = rustls_pemfile::crls(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if crls.is_empty() {
        return Err(err("no PEM revocation list (X509 CRL) in it".into()));
    }
    Ok(crls)
}

/// The name a connection to `sni` (or, without one, to the server's address) is opened
/// for: an IP address makes rustls send no SNI, as HAProxy sends none without `sni`.
pub fn server_name(sni: Option<&str>, addr: std::net::IpAddr) -> ServerName<'static> {
    sni.and_then(|s| ServerName::try_from(s.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.into()))
}

/// The two ways lb checks a server's certificate less strictly than WebPKI with a name.
/// Signatures over the handshake are checked in both.
#[derive(Debug)]
enum LenientVerifier {
    /// Any certificate is accepted: health checks, which test that a TLS server answers,
    /// and servers with `verify none`.
    AnyCert(Arc<CryptoProvider>),
    /// `verify required` without a name to check (no `sni`): the chain must lead to a
    /// root of the `ca-file` and be valid now, whatever names the certificate carries
    /// (HAProxy without `verifyhost`).
    ChainOnly(Arc<WebPkiServerVerifier>),
}

impl ServerCertVerifier for LenientVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Self::ChainOnly(inner) = self else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self {
            Self::AnyCert(p) => rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &p.signature_verification_algorithms,
            ),
            Self::ChainOnly(inner) => inner.verify_tls12_signature(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self {
            Self::AnyCert(p) => rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &p.signature_verification_algorithms,
            ),
            Self::ChainOnly(inner) => inner.verify_tls13_signature(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self {
            Self::AnyCert(p) => p.signature_verification_algorithms.supported_schemes(),
            Self::ChainOnly(inner) => inner.supported_verify_schemes(),
        }
    }
}
