//! TLS termination: rustls with the aws-lc-rs provider, TLS 1.2 and 1.3 only, certificate
//! chosen by SNI and by what the client can verify among the bind's `crt` files
//! ([`SniResolver`]), ALPN from the bind, resumption from [`crate::l7::tls_resume`].
//!
//! [`Acceptor::accept`] hands out a [`ServerStream`], which writes every record rustls
//! queues as soon as it exists: an alert or a TLS 1.3 key update produced while the
//! connection only reads (a refused TLS 1.2 renegotiation gets its `no_renegotiation` alert
//! at once, as from HAProxy), not at the next write or the idle timeout.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use rustls::server::WebPkiClientVerifier;

use crate::acl::{ClientCert, DistinguishedName};
use crate::config::model::{BindTls, ClientVerify};
use crate::l7::tls_resume::{ResumeError, Sessions};
use crate::tls_client::{TlsClientError, load_crls, load_roots};
use crate::tls_policy::TlsVersion;

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
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Files(#[from] TlsClientError),
    #[error("`verify` needs a `ca-file`")]
    NoCaFile,
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("cipher suite {0} is not available")]
    Suite(String),
    #[error("curve {0} is not available")]
    Curve(String),
    #[error("{path}: cannot load OCSP response: {reason}")]
    Ocsp { path: PathBuf, reason: String },
}

/// One loaded certificate with its chain and key, and the names it serves (lower case;
/// `*.example.com` for a wildcard).
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    /// Which of the bind's handshake configurations serves it (0: the bind's own; a
    /// `crt-list` entry with options has its own).
    group: usize,
}

/// Picks a certificate as HAProxy does: by SNI (an exact name before a wildcard), then,
/// among the certificates for that name, the first the client can verify (its signature
/// algorithms: RSA, ECDSA, Ed25519; for a TLS 1.2-only client also its cipher suites).
/// Without a match, the default: the first certificate, or one with the same names the
/// client can verify, unless `strict-sni` refuses the handshake.
struct SniResolver {
    certs: Vec<Loaded>,
    exact: HashMap<String, Vec<usize>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Vec<usize>>,
    /// The first certificate and those with its names.
    default: Vec<usize>,
    strict: bool,
    /// The TLS 1.2 suites offered, to check what a TLS 1.2 client can use.
    suites: Vec<SupportedCipherSuite>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("certs", &self.certs.len())
            .field("strict", &self.strict)
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    fn new(certs: Vec<Loaded>, strict: bool, suites: Vec<SupportedCipherSuite>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                let (map, key) = match n.strip_prefix("*.") {
                    Some(rest) => (&mut wildcard, rest),
                    None => (&mut exact, n.as_str()),
                };
                let list = map.entry(key.to_owned()).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
        let default = match certs.first() {
            Some(first) => (0..certs.len())
                .filter(|&i| i == 0 || certs[i].names == first.names)
                .collect(),
            None => Vec::new(),
        };
        Self {
            certs,
            exact,
            wildcard,
            default,
            strict,
            suites,
        }
    }

    /// The certificates for `name`: exact ones, else wildcards.
    fn candidates(&self, name: &str) -> Option<&[usize]> {
        let name = name.to_ascii_lowercase();
        if let Some(l) = self.exact.get(&name) {
            return Some(l);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).map(Vec::as_slice)
    }

    /// Whether the client can verify `key`'s signatures (and, speaking only TLS 1.2,
    /// agree on a suite for its kind of key).
    fn usable(&self, key: &CertifiedKey, hello: &ClientHello<'_>) -> bool {
        if key.key.choose_scheme(hello.signature_schemes()).is_none() {
            return false;
        }
        let offered = hello.cipher_suites();
        let tls13 = offered.iter().any(|s| {
            self.suites
                .iter()
                .any(|o| o.suite() == *s && o.tls13().is_some())
        });
        tls13
            || self.suites.iter().any(|o| {
                o.tls13().is_none()
                    && offered.contains(&o.suite())
                    && o.usable_for_signature_algorithm(key.key.algorithm())
            })
    }

    fn pick(&self, list: &[usize], hello: &ClientHello<'_>) -> Option<usize> {
        let first = *list.first()?;
        Some(
            list.iter()
                .copied()
                .find(|&i| self.usable(&self.certs[i].key, hello))
                .unwrap_or(first),
        )
    }

    /// The certificate for this ClientHello, by index.
    fn choose(&self, hello: &ClientHello<'_>) -> Option<usize> {
        if let Some(list) = hello.server_name().and_then(|n| self.candidates(n)) {
            return self.pick(list, hello);
        }
        if self.strict {
            return None;
        }
        self.pick(&self.default, hello)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(&hello).map(|i| self.certs[i].key.clone())
    }
}

/// The DNS names of a leaf: its subjectAltName DNS entries and its subject CNs (HAProxy
/// indexes both), lower case.
fn cert_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            add(s);
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for g in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = g {
                add(d);
            }
        }
    }
    names
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
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_owned(),
        });
    }
    let key = key.ok_or_else(|| TlsError::NoKey {
        path: path.to_owned(),
    })?;
    let signing = aws_lc_rs::sign::any_supported_type(&key).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })?;
    let names = cert_names(&certs[0]);
    let ocsp = load_ocsp(path, &certs[0])?;
    let mut ck = CertifiedKey::new(certs, signing);
    ck.ocsp = ocsp;
    ck.keys_match().map_err(|source| TlsError::Mismatch {
        path: path.to_owned(),
        source,
    })?;
    Ok(Loaded {
        key: Arc::new(ck),
        names,
        group: 0,
    })
}

/// The OCSP response stapled with the certificate at `cert_path`: the DER file beside it
/// named `cert_path` + `.ocsp` (HAProxy's convention), `None` without such a file. As
/// HAProxy, a file that is there but unreadable, not a successful basic OCSP response, or
/// not about this certificate (no single response for its serial number) fails the load.
fn load_ocsp(cert_path: &Path, leaf: &CertificateDer<'_>) -> Result<Option<Vec<u8>>, TlsError> {
    let mut name = cert_path.as_os_str().to_owned();
    name.push(".ocsp");
    let path = PathBuf::from(name);
    let der = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TlsError::Read { path, source }),
    };
    let serial = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, c)| c.raw_serial().to_vec())
        .map_err(|e| TlsError::Ocsp {
            path: path.clone(),
            reason: format!("certificate does not parse: {e}"),
        })?;
    check_ocsp(&der, &serial).map_err(|reason| TlsError::Ocsp {
        path: path.clone(),
        reason: reason.to_owned(),
    })?;
    Ok(Some(der))
}

/// Splits the DER element at the start of `data` with tag `tag`: (its contents, the rest).
fn der_take(data: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let bad = "not a DER OCSP response";
    match data {
        [t, rest @ ..] if *t == tag => {
            let (len, rest) = match rest {
                [l, rest @ ..] if *l < 0x80 => (usize::from(*l), rest),
                [l, rest @ ..] if (0x81..=0x84).contains(l) => {
                    let n = usize::from(*l - 0x80);
                    if rest.len() < n {
                        return Err(bad);
                    }
                    let len = rest[..n]
                        .iter()
                        .fold(0usize, |a, b| (a << 8) | usize::from(*b));
                    (len, &rest[n..])
                }
                _ => return Err(bad),
            };
            if rest.len() < len {
                return Err(bad);
            }
            Ok(rest.split_at(len))
        }
        _ => Err(bad),
    }
}

/// Checks `der` is a successful basic OCSP response (RFC 6960) with a single response for
/// the certificate of serial number `serial` (its DER integer contents).
fn check_ocsp(der: &[u8], serial: &[u8]) -> Result<(), &'static str> {
    const SEQ: u8 = 0x30;
    /// id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1.
    const BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
    let (resp, rest) = der_take(der, SEQ)?;
    if !rest.is_empty() {
        return Err("trailing data after the OCSP response");
    }
    let (status, resp) = der_take(resp, 0x0a)?;
    if status != [0] {
        return Err("the OCSP response status is not successful");
    }
    let (bytes, _) = der_take(resp, 0xa0).map_err(|_| "the OCSP response has no body")?;
    let (bytes, _) = der_take(bytes, SEQ)?;
    let (kind, bytes) = der_take(bytes, 0x06)?;
    if kind != BASIC {
        return Err("not a basic OCSP response");
    }
    let (basic, _) = der_take(bytes, 0x04)?;
    let (basic, _) = der_take(basic, SEQ)?;
    let (mut tbs, _) = der_take(basic, SEQ)?;
    if let Ok((_, r)) = der_take(tbs, 0xa0) {
        tbs = r;
    }
    let tbs = der_take(tbs, 0xa1)
        .or_else(|_| der_take(tbs, 0xa2))
        .map(|(_, r)| r)?;
    let (_, tbs) = der_take(tbs, 0x18)?;
    let (mut responses, _) = der_take(tbs, SEQ)?;
    while !responses.is_empty() {
        let (single, rest) = der_take(responses, SEQ)?;
        responses = rest;
        let (id, _) = der_take(single, SEQ)?;
        let (_, id) = der_take(id, SEQ)?;
        let (_, id) = der_take(id, 0x04)?;
        let (_, id) = der_take(id, 0x04)?;
        let (sn, _) = der_take(id, 0x02)?;
        if sn == serial {
            return Ok(());
        }
    }
    Err("no single response for this certificate's serial number")
}

/// The TLS side of one `ssl` bind.
#[derive(Clone)]
pub struct Acceptor {
    /// The bind's handshake configuration, then one per `crt-list` entry with options.
    groups: Vec<Group>,
    resolver: Arc<SniResolver>,
}

/// One handshake configuration.
#[derive(Clone)]
struct Group {
    config: Arc<ServerConfig>,
    /// The same without ALPN, for a client whose ALPN list has nothing in common with
    /// the bind's (served without ALPN, as HAProxy does, rather than refused); `None` when
    /// the bind has no ALPN list or has `strict-alpn` (rustls then refuses the handshake).
    without_alpn: Option<Arc<ServerConfig>>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Runs the server handshake on an accepted connection.
    pub async fn accept<IO>(&self, stream: IO) -> io::Result<ServerStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let config = {
            let hello = start.client_hello();
            let group = self
                .resolver
                .choose(&hello)
                .and_then(|i| self.groups.get(self.resolver.certs[i].group))
                .unwrap_or(&self.groups[0]);
            let ours = &group.config.alpn_protocols;
            let mismatch = hello
                .alpn()
                .is_some_and(|mut offered| !offered.any(|p| ours.iter().any(|o| o == p)));
            match &group.without_alpn {
                Some(plain) if mismatch => plain.clone(),
                _ => group.config.clone(),
            }
        };
        let inner = start.into_stream(config).await?;
        Ok(ServerStream { inner })
    }
}

/// A client connection after its handshake. Reading writes out whatever rustls queued
/// while processing the records read (alerts, key updates), so no record waits for the
/// application's next write.
pub struct ServerStream<IO = TcpStream> {
    inner: tokio_rustls::server::TlsStream<IO>,
}

impl<IO> fmt::Debug for ServerStream<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStream").finish_non_exhaustive()
    }
}

impl<IO> ServerStream<IO> {
    /// The rustls connection: SNI, ALPN, version, peer certificates.
    pub fn connection(&self) -> &ServerConnection {
        self.inner.get_ref().1
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ServerStream<IO> {
    /// Writes the records rustls has queued. A socket that is full registers the waker
    /// for writability (this task is polled again); an error shows at the next read or
    /// write, so it is not reported here.
    fn write_queued(&mut self, cx: &mut Context<'_>) {
        if self.inner.get_ref().1.wants_write() {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        // Also when the read is pending: the records it consumed may have produced an
        // answer (tokio-rustls only writes on a write or a flush).
        this.write_queued(cx);
        r
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Builds the acceptor of one `ssl` bind (reads the PEM and key files now, never per
/// connection). Resumption state comes from `sessions`, which outlives reloads; the
/// session cache holds `cache_size` sessions.
pub fn acceptor(
    tls: &BindTls,
    sessions: &Sessions,
    cache_size: usize,
) -> Result<Acceptor, TlsError> {
    if tls.certs.is_empty() && tls.crt_list.is_empty() {
        return Err(TlsError::Empty);
    }
    let mut certs = tls
        .certs
        .iter()
        .map(|p| load_pem(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut groups: Vec<&BindTls> = vec![tls];
    for e in &tls.crt_list {
        let mut l = load_pem(&e.cert)?;
        if let Some(t) = &e.tls {
            groups.push(t);
            l.group = groups.len() - 1;
        }
        let (neg, pos): (Vec<&String>, Vec<&String>) =
            e.filters.iter().partition(|f| f.starts_with('!'));
        if !pos.is_empty() {
            l.names = pos.into_iter().cloned().collect();
        }
        l.names.retain(|n| !neg.iter().any(|x| x[1..] == *n));
        certs.push(l);
    }
    let suites = cipher_suites(tls, &aws_lc_rs::default_provider().cipher_suites)?;
    let resolver = Arc::new(SniResolver::new(certs, tls.strict_sni, suites));
    let groups = groups
        .into_iter()
        .map(|g| group(g, &resolver, sessions, cache_size))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Acceptor { groups, resolver })
}

/// The handshake configuration of `tls`'s settings, choosing certificates with `resolver`.
fn group(
    tls: &BindTls,
    resolver: &Arc<SniResolver>,
    sessions: &Sessions,
    cache_size: usize,
) -> Result<Group, TlsError> {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites = cipher_suites(tls, &provider.cipher_suites)?;
    if !tls.curves.is_empty() {
        let all = std::mem::take(&mut provider.kx_groups);
        for c in &tls.curves {
            let g = all
                .iter()
                .find(|g| g.name() == *c)
                .ok_or_else(|| TlsError::Curve(format!("{c:?}")))?;
            provider.kx_groups.push(*g);
        }
    }
    let provider = Arc::new(provider);
    let verifier = client_verifier(tls, &provider)?;
    let (min, max) = (
        tls.min_version.unwrap_or(TlsVersion::Tls12),
        tls.max_version.unwrap_or(TlsVersion::Tls13),
    );
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls13, &rustls::version::TLS13),
        (TlsVersion::Tls12, &rustls::version::TLS12),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder =
        ServerConfig::builder_with_provider(provider).with_protocol_versions(&versions)?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(resolver.clone());
    cfg.session_storage = sessions.cache(cache_size);
    if !tls.no_tickets {
        cfg.ticketer = sessions.ticketer(tls.ticket_keys.as_deref())?;
    }
    // HAProxy's default: the server's order picks the suite.
    cfg.ignore_client_order = !tls.prefer_client_ciphers;
    let without_alpn = (!tls.alpn.is_empty() && !tls.strict_alpn).then(|| Arc::new(cfg.clone()));
    cfg.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Group {
        config: Arc::new(cfg),
        without_alpn,
    })
}

/// The bind's suites in its order: `ciphersuites` for TLS 1.3, `ciphers` for TLS 1.2,
/// each defaulting to the provider's.
fn cipher_suites(
    tls: &BindTls,
    all: &[SupportedCipherSuite],
) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let pick = |wanted: &[rustls::CipherSuite], tls13: bool| {
        if wanted.is_empty() {
            return Ok(all
                .iter()
                .filter(|s| s.tls13().is_some() == tls13)
                .copied()
                .collect::<Vec<_>>());
        }
        wanted
            .iter()
            .map(|w| {
                all.iter()
                    .find(|s| s.suite() == *w)
                    .copied()
                    .ok_or_else(|| TlsError::Suite(format!("{w:?}")))
            })
            .collect()
    };
    let mut out = pick(&tls.ciphersuites, true)?;
    out.extend(pick(&tls.ciphers, false)?);
    Ok(out)
}

/// What the TLS layer tells the request: `ssl_fc`, `ssl_fc_sni`, ALPN, `ssl_c_*`.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub sni: Option<Box<str>>,
    pub h2: bool,
    /// The client certificate the handshake verified (`verify optional|required`).
    pub client_cert: Option<Arc<ClientCert>>,
}

impl TlsInfo {
    /// From an established connection; `h2` when ALPN chose it.
    pub fn of(conn: &ServerConnection, h2: bool) -> Self {
        Self {
            sni: conn.server_name().map(Box::from),
            h2,
            client_cert: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(client_cert)
                .map(Arc::new),
        }
    }
}

/// OpenSSL's short names of the usual DN attributes (what HAProxy prints); others are
/// written as their dotted OID, as OpenSSL does.
const DN_SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.42", "GN"),
    ("2.5.4.43", "initials"),
    ("2.5.4.46", "dnQualifier"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
];

/// What the `ssl_c_*` fetches read from a client's leaf certificate.
fn client_cert(der: &CertificateDer<'_>) -> Option<ClientCert> {
    use std::fmt::Write as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let hex = |b: &[u8]| {
        b.iter()
            .fold(String::with_capacity(b.len() * 2), |mut s, x| {
                let _ = write!(s, "{x:02X}");
                s
            })
    };
    let dn = |name: &x509_parser::x509::X509Name<'_>| {
        let entries = name
            .iter_attributes()
            .map(|a| {
                let oid = a.attr_type().to_id_string();
                let key = DN_SHORT_NAMES
                    .iter()
                    .find(|(o, _)| *o == oid)
                    .map_or(oid, |(_, sn)| (*sn).to_owned());
                let value = a.as_str().map_or_else(
                    |_| String::from_utf8_lossy(a.as_slice()).into_owned(),
                    str::to_owned,
                );
                (key, value)
            })
            .collect();
        DistinguishedName::new(entries)
    };
    let t = cert.validity().not_after.to_datetime();
    let year = if t.year() > 2049 {
        format!("{:04}", t.year())
    } else {
        format!("{:02}", t.year() % 100)
    };
    let not_after = format!(
        "{year}{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let sha1 = ::aws_lc_rs::digest::digest(&::aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    Some(ClientCert {
        subject: dn(cert.subject()),
        issuer: dn(cert.issuer()),
        serial_hex: hex(cert.raw_serial()),
        sha1_hex: hex(sha1.as_ref()),
        not_after,
    })
}

/// The client-certificate verifier of a bind with `verify optional|required`: chains to
/// `ca-file` (named to clients) or `ca-verify-file` (not named), checked against
/// `crl-file` when given (every certificate of the chain, as HAProxy's CRL_CHECK_ALL).
fn client_verifier(
    tls: &BindTls,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    if tls.verify == ClientVerify::None {
        return Ok(None);
    }
    let ca = tls.ca_file.as_deref().ok_or(TlsError::NoCaFile)?;
    let mut roots = load_roots(ca)?;
    let hints = roots.subjects();
    if let Some(more) = &tls.ca_verify_file {
        roots.roots.extend(load_roots(more)?.roots);
    }
    let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .clear_root_hint_subjects()
        .add_root_hint_subjects(hints);
    if let Some(crl) = &tls.crl_file {
        b = b.with_crls(load_crls(crl)?);
    }
    if tls.verify == ClientVerify::Optional {
        b = b.allow_unauthenticated();
    }
    Ok(Some(
        b.build().map_err(|e| TlsError::Verifier(e.to_string()))?,
    ))
}
