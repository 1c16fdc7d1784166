//! The admin listener (`global.admin`, default `127.0.0.1:9100`): HTTP/1.1 on hyper.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/stats` | HTML page like HAProxy's, auto-refreshing |
//! | GET | `/stats;csv`, `/stats.csv` | HAProxy's CSV stats (columns 0–48) |
//! | GET | `/stats.json` | [`stats::StatsDoc`] |
//! | GET | `/metrics` | Prometheus text exposition |
//! | GET | `/healthz` | `200 ok` |
//! | GET | `/api/server/{backend}/{server}` | one server's JSON |
//! | POST | `/api/server/{backend}/{server}/state` | body `ready`, `drain` or `maint` |
//! | POST | `/api/server/{backend}/{server}/weight` | body `N` (0..=256) or `N%` of the configured weight |
//! | POST | `/api/server/{backend}/{server}/shutdown-sessions` | ends the server's established sessions (HAProxy's `shutdown sessions server`) |
//! | POST | `/api/reload` | runs the reload callback; 200 or 500 with the error text |
//! | GET | `/api/reload` | the last reload's result |
//!
//! Unknown backend or server: 404. Malformed body: 400. A non-loopback address requires
//! `global.admin_token`; when a token is set every request must carry
//! `Authorization: Bearer TOKEN` (else 401).
//!
//! Requests that change something (every method but GET and HEAD) must not be forgeable by
//! a web page the operator's browser opens, so they are refused with 403 unless
//! - `Host` names this listener: the address the connection reached (`localhost` too on
//!   loopback) or a name of `global.admin_hosts`, with the listener's port (DNS rebinding
//!   sends the attacker's name);
//! - `Origin`, when sent, is that same `http://` origin (`Sec-Fetch-Site`, when sent, is
//!   `same-origin` or `none`);
//! - and the request carries a header no cross-site form or `fetch` without preflight can
//!   send: [`ADMIN_HEADER`], a `Content-Type` other than the three CORS-safelisted ones, or
//!   the bearer token.

pub mod cli;
pub mod client;
pub mod csv;
pub mod html;
pub mod l4;
pub mod prometheus;
pub mod stats;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::model::Global;
use crate::health::{AdminState, HealthError, HealthHandle};
use crate::state::{Registry, ServerStatus, StateError};

pub use l4::{L4BackendStats, L4FlowTable, L4ReasonStats, L4Snapshot, L4Stats, L4VipStats};
pub use stats::StatsDoc;

/// The custom header that marks a state-changing request as not cross-site
/// (`curl -H 'X-LB-Admin: 1' -d drain …`).
pub const ADMIN_HEADER: &str = "x-lb-admin";

/// Errors of the admin module (listener and `lb stats` client).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin listener {0} is not a loopback address: set global.admin_token to expose it \
         (every request will then need \"Authorization: Bearer <token>\")"
    )]
    TokenRequired(SocketAddr),
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("stats socket {}: {source}", path.display())]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API at {addr}: {what}")]
    Protocol { addr: SocketAddr, what: String },
    #[error("admin API at {addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
}

/// The reload callback: validates and applies the configuration file again.
pub type ReloadFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Wraps an async closure as a [`ReloadFn`].
pub fn reload_fn<F, Fut>(f: F) -> ReloadFn
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// The outcome of the last `POST /api/reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResult {
    /// `ok`, `error`, or `never` (no reload requested through the API yet).
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix time (seconds) when it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// What the admin API reads and acts on.
#[derive(Clone)]
pub struct AdminContext {
    pub registry: Arc<Registry>,
    /// Health checks: check details on the stats page, admin states. Without it the runtime
    /// API writes states straight to the registry.
    pub health: Option<Arc<HealthHandle>>,
    /// L4 counters from the data plane.
    pub l4: Option<Arc<dyn L4Stats>>,
    pub reload: Option<ReloadFn>,
    started: Instant,
    last_reload: Arc<Mutex<ReloadResult>>,
    reload_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminContext")
            .field("health", &self.health.is_some())
            .field("l4", &self.l4.is_some())
            .field("reload", &self.reload.is_some())
            .finish()
    }
}

impl AdminContext {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            health: None,
            l4: None,
            reload: None,
            started: Instant::now(),
            last_reload: Arc::new(Mutex::new(ReloadResult {
                result: "never".to_owned(),
                error: None,
                time: None,
                duration_ms: None,
            })),
            reload_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn with_health(mut self, health: Arc<HealthHandle>) -> Self {
        self.health = Some(health);
        self
    }

    pub fn with_l4(mut self, l4: Arc<dyn L4Stats>) -> Self {
        self.l4 = Some(l4);
        self
    }

    pub fn with_reload(mut self, reload: ReloadFn) -> Self {
        self.reload = Some(reload);
        self
    }

    /// The last reload result.
    pub fn last_reload(&self) -> ReloadResult {
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a reload done outside the API (SIGHUP), so `GET /api/reload` reports it.
    pub fn record_reload(&self, result: &Result<(), String>, took: Duration) {
        let r = ReloadResult {
            result: if result.is_ok() { "ok" } else { "error" }.to_owned(),
            error: result.as_ref().err().cloned(),
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
            duration_ms: Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX)),
        };
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = r;
    }
}

/// A running admin listener; stops when dropped or on [`AdminServer::shutdown`].
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Whether `addr` is loopback (IPv4-mapped IPv6 included).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

impl AdminServer {
    /// Binds `global.admin` with `global.admin_token` and `global.admin_hosts`.
    pub async fn start(global: &Global, ctx: AdminContext) -> Result<Self, AdminError> {
        Self::bind_with_hosts(
            global.admin,
            global.admin_token.clone(),
            global.admin_hosts.clone(),
            ctx,
        )
        .await
    }

    /// Binds `addr` (port 0 picks one). Refuses a non-loopback address without a token.
    pub async fn bind(
        addr: SocketAddr,
        token: Option<String>,
        ctx: AdminContext,
    ) -> Result<Self, AdminError> {
        Self::bind_with_hosts(addr, token, Vec::new(), ctx).await
    }

    /// [`AdminServer::bind`], also accepting `hosts` (names without port) in `Host` and
    /// `Origin` of state-changing requests.
    pub async fn bind_with_hosts(
        addr: SocketAddr,
        token: Option<String>,
        hosts: Vec<String>,
        ctx: AdminContext,
    ) -> Result<Self, AdminError> {
        let token = token.filter(|t| !t.is_empty());
        if token.is_none() && !is_loopback(&addr) {
            return Err(AdminError::TokenRequired(addr));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| AdminError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            ctx,
            token: token.map(|t| t.into_bytes()),
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        });
        let task = tokio::spawn(accept_loop(listener, shared));
        tracing::info!("admin API listening on http://{local_addr}/stats");
        Ok(Self { local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting (connections in flight are dropped).
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    ctx: AdminContext,
    token: Option<Vec<u8>>,
    /// `global.admin_hosts`, lowercased.
    hosts: Vec<String>,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("admin API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Reap finished connection tasks.
        while conns.try_join_next().is_some() {}
        // The address this connection reached: what a legitimate `Host` names.
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("admin API: connection from {peer}: {e}");
                continue;
            }
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, local, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(true);
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!("admin API: connection from {peer}: {e}");
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let mut s = body.into();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    respond(status, "text/plain; charset=utf-8", s)
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    match serde_json::to_vec_pretty(v) {
        Ok(mut b) => {
            b.push(b'\n');
            respond(status, "application/json", b)
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Constant-time comparison of the bearer token.
fn authorized(req: &Request<Incoming>, token: &[u8]) -> bool {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let v = v.as_bytes();
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let given = v[7..].trim_ascii();
    if given.len() != token.len() {
        return false;
    }
    given
        .iter()
        .zip(token)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The `host[:port]` authorities a same-site request to `local` may name: the address the
/// connection reached, `localhost` and the other loopback spellings on loopback, and the
/// configured names; the port is the listener's (and may be left out when it is 80).
fn authority_ok(authority: &str, local: SocketAddr, hosts: &[String]) -> bool {
    let authority = authority.trim().to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        // `[v6]` alone has colons inside the brackets only.
        Some((h, p)) if !p.contains(']') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => return false,
        },
        _ => (authority.as_str(), 80),
    };
    if port != local.port() {
        return false;
    }
    let ip = local.ip().to_canonical();
    let mut names = vec![match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }];
    if let std::net::IpAddr::V6(v6) = local.ip() {
        names.push(format!("[{v6}]"));
    }
    if ip.is_loopback() {
        names.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
    }
    names.iter().chain(hosts).any(|n| *n == host)
}

/// Whether a CORS-safelisted `Content-Type` (one a cross-site form or a `fetch` without
/// preflight may send).
fn simple_content_type(v: &HeaderValue) -> bool {
    let Ok(v) = v.to_str() else { return false };
    let media = v.split(';').next().unwrap_or_default().trim();
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
    .iter()
    .any(|m| media.eq_ignore_ascii_case(m))
}

/// Refuses a state-changing request a foreign web page could have sent (see the module
/// documentation); `Err` says why.
fn not_cross_site(
    headers: &http::HeaderMap,
    local: SocketAddr,
    hosts: &[String],
    has_token: bool,
) -> Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("no Host header")?;
    if !authority_ok(host, local, hosts) {
        return Err(format!(
            "Host `{host}` is not this admin listener ({local}, or a name in global.admin_hosts)"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or_default();
        let same = o
            .strip_prefix("http://")
            .is_some_and(|a| !a.contains('/') && authority_ok(a, local, hosts));
        if !same {
            return Err(format!("cross-site request (Origin `{o}`)"));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(format!(
            "cross-site request (Sec-Fetch-Site `{}`)",
            String::from_utf8_lossy(site.as_bytes())
        ));
    }
    let marked = has_token
        || headers.contains_key(ADMIN_HEADER)
        || headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| !simple_content_type(ct));
    if !marked {
        return Err(format!(
            "a state-changing request needs the header `{ADMIN_HEADER}: 1` (or a Content-Type \
             other than text/plain, application/x-www-form-urlencoded and multipart/form-data)"
        ));
    }
    Ok(())
}

/// Decodes `%XX` escapes of one path segment.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn read_body(req: Request<Incoming>) -> Result<String, ApiErr> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".to_owned(),
            )
        })?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "request body is not UTF-8".to_owned(),
        )
    })
}

/// An API error: status and message.
type ApiErr = (StatusCode, String);

fn err_resp((status, msg): ApiErr) -> Resp {
    text(status, msg)
}

fn state_error(e: &StateError) -> ApiErr {
    match e {
        StateError::NoBackend(_) | StateError::NoServer { .. } => {
            (StatusCode::NOT_FOUND, e.to_string())
        }
        StateError::Weight(_) => (StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn handle(shared: &Shared, local: SocketAddr, req: Request<Incoming>) -> Resp {
    if let Some(token) = &shared.token
        && !authorized(&req, token)
    {
        let mut r = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lb admin\""),
        );
        return r;
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        && let Err(why) =
            not_cross_site(req.headers(), local, &shared.hosts, shared.token.is_some())
    {
        tracing::warn!(
            "admin API: refused {} {}: {why}",
            req.method(),
            req.uri().path()
        );
        return text(StatusCode::FORBIDDEN, format!("refused: {why}"));
    }
    let ctx = &shared.ctx;
    let path = req.uri().path().to_owned();
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path.as_str() {
        "/" => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let mut r = text(StatusCode::FOUND, "see /stats");
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/stats"));
            r
        }
        "/healthz" => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            text(StatusCode::OK, "ok")
        }
        "/stats" => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let doc = stats::collect(ctx);
            respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                html::render(&doc),
            )
        }
        "/stats;csv" | "/stats.csv" => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let doc = stats::collect(ctx);
            respond(StatusCode::OK, "text/csv; charset=utf-8", csv::render(&doc))
        }
        "/stats.json" => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            json(StatusCode::OK, &stats::collect(ctx))
        }
        "/metrics" => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let doc = stats::collect(ctx);
            respond(
                StatusCode::OK,
                prometheus::CONTENT_TYPE,
                prometheus::render(&doc),
            )
        }
        "/api/reload" => match *req.method() {
            Method::GET | Method::HEAD => json(StatusCode::OK, &ctx.last_reload()),
            Method::POST => reload(ctx).await,
            _ => method_not_allowed("GET, HEAD, POST"),
        },
        p if p.starts_with("/api/server/") => server_api(ctx, req, p).await,
        _ => text(StatusCode::NOT_FOUND, format!("no such page: {path}")),
    }
}

async fn reload(ctx: &AdminContext) -> Resp {
    let Some(f) = ctx.reload.clone() else {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "reload is not available in this process",
        );
    };
    // One reload at a time; a second request waits for the first.
    let _guard = ctx.reload_lock.lock().await;
    let start = Instant::now();
    let result = f().await;
    ctx.record_reload(&result, start.elapsed());
    match &result {
        Ok(()) => tracing::info!("reload requested through the admin API: done"),
        Err(e) => tracing::warn!("reload requested through the admin API failed: {e}"),
    }
    let status = if result.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    json(status, &ctx.last_reload())
}

/// One server's state as the runtime API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerApiState {
    pub backend: String,
    pub server: String,
    pub status: String,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    pub weight: u32,
}

fn server_state(ctx: &AdminContext, backend: &str, server: &str) -> Result<ServerApiState, ApiErr> {
    let b = ctx
        .registry
        .backend(backend)
        .ok_or_else(|| state_error(&StateError::NoBackend(backend.to_owned())))?;
    let s = b.server(server).ok_or_else(|| {
        state_error(&StateError::NoServer {
            backend: backend.to_owned(),
            server: server.to_owned(),
        })
    })?;
    let status = s.status();
    let admin = ctx
        .health
        .as_ref()
        .and_then(|h| h.server(backend, server))
        .map(|h| h.info().admin)
        .unwrap_or(match status {
            ServerStatus::Maint => AdminState::Maint,
            ServerStatus::Drain => AdminState::Drain,
            _ => AdminState::Ready,
        });
    Ok(ServerApiState {
        backend: backend.to_owned(),
        server: server.to_owned(),
        status: status.as_str().to_owned(),
        admin: admin.as_str().to_owned(),
        weight: s.weight(),
    })
}

async fn server_api(ctx: &AdminContext, req: Request<Incoming>, path: &str) -> Resp {
    let rest = path.trim_start_matches("/api/server/");
    let parts: Vec<&str> = rest.split('/').collect();
    let decoded: Option<Vec<String>> = parts.iter().map(|p| percent_decode(p)).collect();
    let Some(parts) = decoded else {
        return text(StatusCode::BAD_REQUEST, "malformed path");
    };
    match parts.as_slice() {
        [backend, server] => {
            if !matches!(*req.method(), Method::GET | Method::HEAD) {
                return method_not_allowed("GET, HEAD");
            }
            match server_state(ctx, backend, server) {
                Ok(s) => json(StatusCode::OK, &s),
                Err(e) => err_resp(e),
            }
        }
        [backend, server, action] if action == "shutdown-sessions" => {
            if *req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            match ctx.registry.shutdown_sessions(backend, server) {
                Ok(()) => {
                    tracing::warn!(
                        "Server {backend}/{server}: sessions shut down by the admin API"
                    );
                    match server_state(ctx, backend, server) {
                        Ok(s) => json(StatusCode::OK, &s),
                        Err(e) => err_resp(e),
                    }
                }
                Err(e) => err_resp(state_error(&e)),
            }
        }
        [backend, server, action] if action == "state" || action == "weight" => {
            if *req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            // 404 before looking at the body.
            if let Err(e) = server_state(ctx, backend, server) {
                return err_resp(e);
            }
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return err_resp(e),
            };
            let result = if action == "state" {
                set_state(ctx, backend, server, &body)
            } else {
                set_weight(ctx, backend, server, &body)
            };
            match result.and_then(|()| server_state(ctx, backend, server)) {
                Ok(s) => json(StatusCode::OK, &s),
                Err(e) => err_resp(e),
            }
        }
        _ => text(StatusCode::NOT_FOUND, format!("no such page: {path}")),
    }
}

fn set_state(ctx: &AdminContext, backend: &str, server: &str, body: &str) -> Result<(), ApiErr> {
    let Some(admin) = AdminState::parse(body) else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "bad state {:?}: expected ready, drain or maint",
                body.trim()
            ),
        ));
    };
    apply_admin(ctx, backend, server, admin)
}

/// Puts a server in `admin` state (through the health checker when there is one), for the
/// HTTP API and the stats socket.
pub(crate) fn apply_admin(
    ctx: &AdminContext,
    backend: &str,
    server: &str,
    admin: AdminState,
) -> Result<(), ApiErr> {
    match &ctx.health {
        Some(h) => h
            .set_admin(backend, server, admin)
            .map(|_| ())
            .map_err(|e| match e {
                HealthError::State(se) => state_error(&se),
                other => (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
            }),
        None => {
            let status = match admin {
                AdminState::Ready => ServerStatus::Up,
                AdminState::Drain => ServerStatus::Drain,
                AdminState::Maint => ServerStatus::Maint,
            };
            ctx.registry
                .set_status(backend, server, status)
                .map(|_| ())
                .map_err(|e| state_error(&e))
        }
    }
}

/// Why a weight was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightError {
    /// Not `N` or `N%`.
    Syntax,
    /// `N%` of a server whose configured weight is unknown.
    NoConfigured,
}

/// `N`, or HAProxy's `N%` of the configured weight. The range (0..=256) is the registry's
/// to check.
pub(crate) fn parse_weight(
    ctx: &AdminContext,
    backend: &str,
    server: &str,
    text: &str,
) -> Result<u32, WeightError> {
    let w = text.trim();
    match w.strip_suffix('%') {
        Some(pct) => {
            let pct: u64 = pct.trim().parse().map_err(|_| WeightError::Syntax)?;
            let configured = ctx
                .health
                .as_ref()
                .and_then(|h| h.server(backend, server))
                .map(|h| h.configured_weight())
                .filter(|w| *w > 0)
                .ok_or(WeightError::NoConfigured)?;
            u32::try_from(u64::from(configured) * pct / 100).map_err(|_| WeightError::Syntax)
        }
        None => w.parse::<u32>().map_err(|_| WeightError::Syntax),
    }
}

/// Sets a server's weight and logs the change as HAProxy does.
pub(crate) fn apply_weight(
    ctx: &AdminContext,
    backend: &str,
    server: &str,
    weight: u32,
    by: &str,
) -> Result<(), StateError> {
    let before = ctx
        .registry
        .backend(backend)
        .and_then(|b| b.server(server).map(|s| s.weight()));
    ctx.registry.set_weight(backend, server, weight)?;
    if let Some(before) = before
        && before != weight
    {
        tracing::warn!(
            "Server {backend}/{server} weight changed from {before} to {weight} by {by}"
        );
    }
    Ok(())
}

fn set_weight(ctx: &AdminContext, backend: &str, server: &str, body: &str) -> Result<(), ApiErr> {
    let w = body.trim();
    let weight = parse_weight(ctx, backend, server, w).map_err(|e| match e {
        WeightError::Syntax => (
            StatusCode::BAD_REQUEST,
            format!(
                "bad weight {w:?}: expected an integer 0..=256, or N% of the configured weight"
            ),
        ),
        WeightError::NoConfigured => (
            StatusCode::BAD_REQUEST,
            format!("{backend}/{server}: configured weight unknown, give an absolute weight"),
        ),
    })?;
    apply_weight(ctx, backend, server, weight, "the runtime API").map_err(|e| state_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }

    #[test]
    fn loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(is_loopback(&a("127.0.0.1:9100")));
        assert!(is_loopback(&a("127.3.2.1:9100")));
        assert!(is_loopback(&a("[::1]:9100")));
        assert!(is_loopback(&a("[::ffff:127.0.0.1]:9100")));
        assert!(!is_loopback(&a("0.0.0.0:9100")));
        assert!(!is_loopback(&a("[::]:9100")));
        assert!(!is_loopback(&a("10.0.0.1:9100")));
    }
}
