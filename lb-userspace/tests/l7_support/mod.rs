//! Shared helpers for the L7 integration tests: identity-echo backends, config builders and
//! a small HTTP client. Loopback only; every wait is bounded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use lb::acl::{AclSet, Condition};
use lb::config::model::*;
use lb::l7::{L7, L7Handle};
use lb::state::Registry;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::Path;
use tokio_rustls::TlsConnector;

pub const T: Duration = Duration::from_secs(10);

/// A running identity-echo backend.
pub struct Echo {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers with its name on the first line, then every header it saw as `name: value`.
/// Query knobs: `status=N`, `cc=VALUE` (Cache-Control), `ms=N` (delay). `Upgrade`
/// requests get a 101 and a raw byte echo.
pub async fn echo(name: &str) -> Echo {
    echo_on(name, "127.0.0.1:0").await
}

pub async fn echo_on(name: &str, bind: &str) -> Echo {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let n: Arc<str> = Arc::from(name);
    let h = hits.clone();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let n = n.clone();
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let n = n.clone();
                    h.fetch_add(1, Ordering::SeqCst);
                    echo_handle(n, req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Echo {
        name: name.to_owned(),
        addr,
        hits,
        conns,
        task,
    }
}

pub async fn echo_handle(
    name: Arc<str>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let q = req.uri().query().unwrap_or("").to_owned();
    let get = |k: &str| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::to_owned)
    };
    if let Some(ms) = get("ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if req.headers().contains_key(hyper::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert(
            "upgrade",
            hyper::header::HeaderValue::from_static("websocket"),
        );
        r.headers_mut().insert(
            "connection",
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        return Ok(r);
    }
    let mut body = format!("{name}\n{} {}\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        body.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
    }
    let got = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(usize::MAX);
    body.push_str(&format!("body-len: {got}\n"));
    if let Some(n) = get("size").and_then(|v| v.parse::<usize>().ok()) {
        body.push_str(&"x".repeat(n));
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        "x-server",
        hyper::header::HeaderValue::from_str(&name).unwrap(),
    );
    if let Some(s) = get("status").and_then(|v| v.parse::<u16>().ok()) {
        *r.status_mut() = StatusCode::from_u16(s).unwrap();
    }
    if let Some(cc) = get("cc") {
        r.headers_mut().insert(
            "cache-control",
            hyper::header::HeaderValue::from_str(&cc).unwrap(),
        );
    }
    Ok(r)
}

/// A port nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

pub fn timeouts() -> Timeouts {
    Timeouts {
        client: Some(Duration::from_secs(20)),
        connect: Some(Duration::from_secs(2)),
        server: Some(Duration::from_secs(5)),
        http_request: Some(Duration::from_secs(5)),
        http_keep_alive: None,
        queue: Some(Duration::from_secs(2)),
        tunnel: Some(Duration::from_secs(10)),
        check: None,
    }
}

pub fn bind(addr: &str) -> Bind {
    Bind {
        addr: addr.parse().unwrap(),
        accept_proxy: false,
        tls: None,
        text: addr.to_owned(),
    }
}

pub fn tls_bind(addr: &str, certs: Vec<PathBuf>, alpn: &[&str]) -> Bind {
    Bind {
        addr: addr.parse().unwrap(),
        accept_proxy: false,
        tls: Some(BindTls {
            certs,
            alpn: alpn.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }),
        text: format!("{addr} ssl"),
    }
}

/// Frontend `web` with bind `b`, to backend `be` of the one server `s`.
pub fn web_bind_to(b: Bind, s: SocketAddr) -> Config {
    config(
        vec![frontend("web", vec![b], Some("be"))],
        vec![backend("be", Balance::RoundRobin, vec![server("s", s)])],
    )
}

pub fn frontend(name: &str, binds: Vec<Bind>, default_backend: Option<&str>) -> Frontend {
    Frontend {
        name: name.to_owned(),
        mode: Mode::Http,
        tier: Tier::Userspace,
        binds,
        acls: AclSet::default(),
        http_request: Vec::new(),
        http_response: Vec::new(),
        http_after_response: Vec::new(),
        tcp_request: Vec::new(),
        inspect_delay: None,
        use_backend: Vec::new(),
        default_backend: default_backend.map(str::to_owned),
        timeouts: timeouts(),
        forwardfor: false,
        maxconn: None,
        deny_src: Vec::new(),
        allow_src: Vec::new(),
        errorfiles: BTreeMap::new(),
        stats: None,
        max_header_bytes: 8192,
        max_headers: 100,
        log: true,
        log_targets: Vec::new(),
        dontlognull: false,
        stick_table: None,
        compression: None,
    }
}

pub fn server(name: &str, addr: SocketAddr) -> Server {
    Server::new(name, addr)
}

pub fn backend(name: &str, balance: Balance, servers: Vec<Server>) -> Backend {
    Backend {
        name: name.to_owned(),
        mode: Mode::Http,
        balance,
        cookie: None,
        check: CheckSpec::default(),
        servers,
        timeouts: timeouts(),
        retries: 3,
        redispatch: true,
        forwardfor: false,
        http_request: Vec::new(),
        http_response: Vec::new(),
        http_after_response: Vec::new(),
        tcp_request: Vec::new(),
        inspect_delay: None,
        acls: AclSet::default(),
        errorfiles: BTreeMap::new(),
        stick_table: None,
        log_targets: Vec::new(),
        log_health_checks: false,
        compression: None,
    }
}

pub fn config(frontends: Vec<Frontend>, backends: Vec<Backend>) -> Config {
    Config {
        source: PathBuf::from("test.toml"),
        global: Global {
            admin: "127.0.0.1:0".parse().unwrap(),
            admin_token: None,
            admin_hosts: Vec::new(),
            stats_sockets: Vec::new(),
            log: Vec::new(),
            log_format: LogFormat::Haproxy,
            threads: None,
            cpu_map: None,
            hash_seed: 0,
            ssl_cache_size: lb::config::DEFAULT_SSL_CACHE_SIZE,
            maxconn: None,
            process: Default::default(),
        },
        dataplane: None,
        announce: None,
        resolvers: Vec::new(),
        frontends,
        backends,
        caches: Vec::new(),
    }
}

/// Compiles a condition (needs the ACL engine).
pub fn cond(text: &str, acls: &AclSet) -> Condition {
    Condition::compile(text, acls).unwrap_or_else(|e| panic!("compile {text:?}: {e}"))
}

pub fn acl(set: &mut AclSet, line: &str) {
    set.define(line)
        .unwrap_or_else(|e| panic!("acl {line:?}: {e}"));
}

/// Frontend `web` on a loopback port, its default backend `be` with the one server `a`.
pub fn web_to(a: SocketAddr) -> Config {
    config(
        vec![frontend("web", vec![bind("127.0.0.1:0")], Some("be"))],
        vec![backend("be", Balance::RoundRobin, vec![server("a", a)])],
    )
}

pub fn start(cfg: Config) -> (L7Handle, Arc<Registry>) {
    let reg = Arc::new(Registry::new());
    let h = L7::start(Arc::new(cfg), reg.clone()).expect("start");
    (h, reg)
}

pub fn addr_of(h: &L7Handle, fe: &str) -> SocketAddr {
    h.local_addrs(fe)[0]
}

/// A response, flattened.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Resp {
    /// The backend that answered (first body line).
    pub fn server(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }
    /// A header the backend saw.
    pub fn saw(&self, name: &str) -> Vec<String> {
        let p = format!("{}: ", name.to_ascii_lowercase());
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix(&p).map(str::to_owned))
            .collect()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let (mut r, body) = request_bytes(addr, "GET", path, headers).await;
    r.body = String::from_utf8_lossy(&body).into_owned();
    r
}

/// One HTTP/1.1 request without a body on a fresh connection: the response (its `body`
/// left empty) and the body's bytes as they came.
pub async fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (Resp, Bytes) {
    tokio::time::timeout(T, async {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let b = Request::builder().header("host", "test.local");
        let r = tx
            .send_request(empty_request(b, method, path, headers))
            .await
            .unwrap();
        collect_bytes(r).await
    })
    .await
    .expect("request timed out")
}

/// `b` as a `method` request for `uri` with `headers` added and no body.
pub fn empty_request(
    mut b: hyper::http::request::Builder,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Request<Empty<Bytes>> {
    b = b.method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Empty::<Bytes>::new()).unwrap()
}

/// A response with its body's bytes (`Resp::body` left empty).
pub async fn collect_bytes(r: Response<Incoming>) -> (Resp, Bytes) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (
        Resp {
            status,
            headers,
            body: String::new(),
        },
        body,
    )
}

pub async fn collect(r: Response<Incoming>) -> Resp {
    let (mut resp, body) = collect_bytes(r).await;
    resp.body = String::from_utf8_lossy(&body).into_owned();
    resp
}

/// One HTTP/1.1 request with a body on a fresh connection.
pub async fn post(addr: SocketAddr, path: &str, body: Vec<u8>, chunked: bool) -> Resp {
    tokio::time::timeout(T, async {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let b = Request::post(path).header("host", "test.local");
        let r = if chunked {
            let chunks: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> = body
                .chunks(16 * 1024)
                .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
            tx.send_request(b.body(http_body_util::Either::Left(stream)).unwrap())
                .await
                .unwrap()
        } else {
            tx.send_request(
                b.body(http_body_util::Either::Right(Full::new(Bytes::from(body))))
                    .unwrap(),
            )
            .await
            .unwrap()
        };
        collect(r).await
    })
    .await
    .expect("request timed out")
}

/// Sends raw bytes and reads until the server closes (bounded).
pub async fn raw(addr: SocketAddr, data: &[u8]) -> String {
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(data).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("raw exchange timed out")
}

/// Sends raw bytes, closes the write side, reads until the server closes (bounded).
pub async fn raw_eof(addr: SocketAddr, data: &[u8]) -> String {
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(data).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("raw exchange timed out")
}

/// A server that answers its first connection's request with a body it never ends (1 GB
/// at most) and yields when the proxy stopped taking it.
pub async fn endless_body_server() -> (SocketAddr, tokio::task::JoinHandle<tokio::time::Instant>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut head = vec![0u8; 4096];
        let _ = s.read(&mut head).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n")
            .await;
        let piece = vec![0u8; 64 * 1024];
        for _ in 0..(1_000_000_000 / piece.len()) {
            if s.write_all(&piece).await.is_err() {
                break;
            }
        }
        tokio::time::Instant::now()
    });
    (addr, task)
}

pub fn executor() -> TokioExecutor {
    TokioExecutor::new()
}

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
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
pub fn make_cert(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
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
pub struct AcceptAny(pub Arc<rustls::crypto::CryptoProvider>);

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

pub fn connector(alpn: &[&str]) -> TlsConnector {
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
pub async fn tls_get(
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
