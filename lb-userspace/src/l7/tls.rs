//! TLS termination: rustls with the aws-lc-rs provider, TLS 1.2 and 1.3 only, certificate
//! chosen by SNI among the bind's `crt` files (the first is the default), ALPN from the bind.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::model::BindTls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no certificate found")]
    NoCert { path: PathBuf },
    #[error("{path}: no private key found")]
    NoKey { path: PathBuf },
    #[error("{path}: unsupported private key: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{path}: certificate does not match its private key: {source}")]
    Mismatch {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("bind has no certificate")]
    Empty,
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// One loaded certificate with its chain and key, plus the leaf for name matching.
struct Loaded {
    key: Arc<CertifiedKey>,
    leaf: CertificateDer<'static>,
}

/// Picks a certificate by SNI; the first is the default.
struct SniResolver {
    certs: Vec<Loaded>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("certs", &self.certs.len())
            .finish()
    }
}

impl SniResolver {
    fn matches(leaf: &CertificateDer<'static>, name: &str) -> bool {
        let Ok(server_name) = ServerName::try_from(name) else {
            return false;
        };
        match webpki::EndEntityCert::try_from(leaf) {
            Ok(ee) => ee.verify_is_valid_for_subject_name(&server_name).is_ok(),
            Err(_) => false,
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name()
            && let Some(c) = self.certs.iter().find(|c| Self::matches(&c.leaf, name))
        {
            return Some(c.key.clone());
        }
        self.certs.first().map(|c| c.key.clone())
    }
}

fn load_pem(path: &Path) -> Result<Loaded, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    let mut key: Option<PrivateKeyDer<'static>> = None;
    for item in rustls_pemfile::read_all(&mut data.as_slice()) {
        let item = item.map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        match item {
            rustls_pemfile::Item::X509Certificate(c) => certs.push(c),
            rustls_pemfile::Item::Pkcs1Key(k) if key.is_none() => key = Some(k.into()),
            rustls_pemfile::Item::Pkcs8Key(k) if key.is_none() => key = Some(k.into()),
            rustls_pemfile::Item::Sec1Key(k) if key.is_none() => key = Some(k.into()),
            _ => {}
        }
    }
    let leaf = certs.first().cloned().ok_or_else(|| TlsError::NoCert {
        path: path.to_owned(),
    })?;
    let key = key.ok_or_else(|| TlsError::NoKey {
        path: path.to_owned(),
    })?;
    let signing = aws_lc_rs::sign::any_supported_type(&key).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|source| TlsError::Mismatch {
        path: path.to_owned(),
        source,
    })?;
    Ok(Loaded {
        key: Arc::new(ck),
        leaf,
    })
}

/// Builds the acceptor of one `ssl` bind (reads the PEM files now, never per connection).
pub fn acceptor(tls: &BindTls) -> Result<TlsAcceptor, TlsError> {
    if tls.certs.is_empty() {
        return Err(TlsError::Empty);
    }
    let certs = tls
        .certs
        .iter()
        .map(|p| load_pem(p))
        .collect::<Result<Vec<_>, _>>()?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    cfg.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// What the TLS layer tells the request: `ssl_fc`, `ssl_fc_sni`, ALPN.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub sni: Option<Box<str>>,
    pub h2: bool,
}
