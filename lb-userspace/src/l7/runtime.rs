//! The compiled, per-reload form of the config the proxy runs on: frontends with their rules
//! and resolved backends, backends with their servers, selectors, pools, queues and error
//! pages. Built once per (re)load; nothing here is parsed per request.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use tokio::sync::Semaphore;

use crate::acl::{AclInput, Condition, FormatString};
use crate::config::model::{
    Backend, Config, Fmt, Frontend, HttpAction, HttpRule, LogFormat, Mode, Re, RedirectKind,
    ServerProto, Tier, Timeouts,
};
use crate::l7::balance::{self, PickCtx, Selector};
use crate::l7::io::ConnPages;
use crate::l7::upstream::Pool;
use crate::l7::upstream::UpstreamTls;
use crate::l7::upstream::h2::H2Conns;
use crate::proxy_protocol::ProxyVersion;
use crate::state::{BackendState, Counters, Registry, ServerState, ServerStatus};
use crate::stick::{StickTable, Tables};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("frontend {frontend}: no backend named {backend}")]
    NoBackend { frontend: String, backend: String },
    #[error("{section}: invalid header in http-request rule: {what}")]
    Header { section: String, what: String },
    #[error("frontend {frontend}: use_backend `{name}`: {what}")]
    BackendName {
        frontend: String,
        name: String,
        what: String,
    },
    #[error("server {server}: TLS: {what}")]
    Tls { server: String, what: String },
    #[error("{section}: no stick table named {table}")]
    NoTable { section: String, table: String },
    #[error("{section}: no cache named {cache}")]
    NoCache { section: String, cache: String },
    #[error("{section}: {action} is not allowed in this kind of rule")]
    Misplaced { section: String, action: String },
    #[error("{section}: errorfile {code}: {what}")]
    ErrorFile {
        section: String,
        code: u16,
        what: String,
    },
    #[error("frontend {frontend}: {source}")]
    Log {
        frontend: String,
        source: crate::syslog::SyslogError,
    },
}

/// A prebuilt response (error page, errorfile).
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// HAProxy's built-in error pages plus `errorfile` overrides.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages {
    pages: HashMap<u16, Arc<Canned>>,
    /// The `errorfile`s as read (complete HTTP responses).
    raw: HashMap<u16, Bytes>,
    /// The pages written on the connection rather than through hyper.
    conn: ConnPages,
}

fn builtin(code: u16) -> (&'static str, &'static str) {
    match code {
        200 => ("OK", "Service ready."),
        400 => ("Bad request", "Your browser sent an invalid request."),
        401 => (
            "Unauthorized",
            "You need a valid user and password to access this content.",
        ),
        403 => ("Forbidden", "Request forbidden by administrative rules."),
        404 => ("Not Found", "The resource could not be found."),
        405 => (
            "Method Not Allowed",
            "A request was made of a resource using a request method not supported by that resource",
        ),
        407 => (
            "Unauthorized",
            "You need a valid user and password to access this content.",
        ),
        408 => (
            "Request Time-out",
            "Your browser didn't send a complete request in time.",
        ),
        410 => (
            "Gone",
            "The resource is no longer available and will not be available again.",
        ),
        413 => (
            "Payload Too Large",
            "The request entity exceeds the maximum allowed.",
        ),
        422 => (
            "Unprocessable Content",
            "The server cannot process the contained instructions.",
        ),
        425 => ("Too Early", "Your browser sent early data."),
        429 => (
            "Too Many Requests",
            "You have sent too many requests in a given amount of time.",
        ),
        431 => (
            "Request Header Fields Too Large",
            "Your browser sent a request with headers too large.",
        ),
        500 => (
            "Internal Server Error",
            "An internal server error occurred.",
        ),
        501 => (
            "Not Implemented",
            "The server does not support the functionality required to fulfill the request.",
        ),
        502 => (
            "Bad Gateway",
            "The server returned an invalid or incomplete response.",
        ),
        503 => (
            "Service Unavailable",
            "No server is available to handle this request.",
        ),
        504 => ("Gateway Time-out", "The server didn't respond in time."),
        _ => ("Error", "An error occurred."),
    }
}

/// HAProxy's built-in page for `code`: its reason phrase and HTML body.
fn builtin_body(code: u16) -> (&'static str, String) {
    let (reason, text) = builtin(code);
    let body = format!("<html><body><h1>{code} {reason}</h1>\n{text}\n</body></html>\n");
    (reason, body)
}

/// HAProxy's built-in page for `code` as it goes on the wire: a complete HTTP/1.1 response
/// that ends the connection.
pub fn builtin_wire(code: u16) -> Bytes {
    let (reason, body) = builtin_body(code);
    Bytes::from(format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-length: {}\r\ncache-control: no-cache\r\n\
         content-type: text/html\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn builtin_page(code: u16) -> Canned {
    let (_, body) = builtin_body(code);
    let mut headers = vec![(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html"),
    )];
    headers.push((
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    ));
    Canned {
        status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        headers,
        body: Bytes::from(body),
    }
}

/// Parses an `errorfile`: a raw HTTP/1 response.
fn parse_errorfile(raw: &[u8]) -> Result<Canned, String> {
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hdrs);
    let n = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("incomplete HTTP response".into()),
        Err(e) => return Err(e.to_string()),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or("bad status")?;
    let mut headers = Vec::new();
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| e.to_string())?;
        if name == http::header::CONTENT_LENGTH
            || name == http::header::CONNECTION
            || name == http::header::TRANSFER_ENCODING
        {
            continue;
        }
        let value = HeaderValue::from_bytes(h.value).map_err(|e| e.to_string())?;
        headers.push((name, value));
    }
    Ok(Canned {
        status,
        headers,
        body: Bytes::copy_from_slice(&raw[n..]),
    })
}

impl ErrorPages {
    fn build(section: &str, files: &BTreeMap<u16, Vec<u8>>) -> Result<Self, RuntimeError> {
        let mut pages = HashMap::new();
        let mut raw = HashMap::new();
        for code in [
            200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 431, 500, 501, 502, 503,
            504,
        ] {
            pages.insert(code, Arc::new(builtin_page(code)));
        }
        for (&code, raw_file) in files {
            let c = parse_errorfile(raw_file).map_err(|what| RuntimeError::ErrorFile {
                section: section.to_owned(),
                code,
                what,
            })?;
            pages.insert(code, Arc::new(c));
            raw.insert(code, Bytes::copy_from_slice(raw_file));
        }
        let wire = |code: u16| {
            raw.get(&code)
                .cloned()
                .unwrap_or_else(|| builtin_wire(code))
        };
        let conn = ConnPages {
            bad_request: wire(400),
            timeout: wire(408),
        };
        Ok(Self { pages, raw, conn })
    }

    /// The pages a client connection writes itself (`errorfile` as is, else built-in).
    pub fn conn_pages(&self) -> ConnPages {
        self.conn.clone()
    }

    /// The page for `code` (built-in, overridden by `errorfile`).
    pub fn get(&self, code: u16) -> Arc<Canned> {
        match self.pages.get(&code) {
            Some(c) => c.clone(),
            None => Arc::new(builtin_page(code)),
        }
    }

    /// Whether `errorfile` overrides `code`.
    pub fn has(&self, code: u16) -> bool {
        self.raw.contains_key(&code)
    }
}

/// A header action of a request or response rule, its names and values pre-parsed.
#[derive(Debug, Clone)]
pub enum HeaderAction {
    Set(HeaderName, HeaderFmt),
    Add(HeaderName, HeaderFmt),
    Del(HeaderName),
    /// `replace-header` (`each_value`: `replace-value`).
    Replace {
        name: HeaderName,
        re: Regex,
        replace: FormatString,
        each_value: bool,
    },
}

/// An `http-request` action with its header names and values pre-parsed.
#[derive(Debug, Clone)]
pub enum RequestAction {
    Allow,
    Deny(u16),
    Redirect {
        kind: RedirectKind,
        /// The `location`, `prefix` or `scheme` value: a log-format string.
        target: HeaderFmt,
        code: StatusCode,
        drop_query: bool,
    },
    Header(HeaderAction),
    SetPath(FormatString),
    SetQuery(FormatString),
    /// `replace-path REGEX FMT`.
    ReplacePath(Regex, FormatString),
    /// `http-request return` (boxed: rare, and rules are scanned per request).
    Return(Box<Reply>),
    /// `cache-use NAME`: looked up once the request rules are done.
    CacheUse(Arc<crate::l7::cache::Cache>),
    /// `track-scN KEY [table T]`, the table resolved.
    TrackSc {
        slot: usize,
        key: crate::acl::SampleExpr,
        table: Arc<StickTable>,
    },
    /// `sc-inc-gpc0(N)`.
    ScIncGpc0(usize),
    /// `sc-set-gpt0(N) VALUE`.
    ScSetGpt0(usize, i64),
    /// `set-var(scope.name) EXPR`.
    SetVar(crate::acl::Scope, Box<str>, crate::acl::SampleExpr),
    /// `unset-var(scope.name)`.
    UnsetVar(crate::acl::Scope, Box<str>),
    SetMethod(FormatString),
    SetUri(FormatString),
}

/// Variables of the `proc` scope (shared by every frontend, kept across reloads).
pub type ProcVars = std::sync::Mutex<HashMap<Box<str>, crate::acl::SampleValue>>;

/// An `http-response` or `http-after-response` action.
#[derive(Debug, Clone)]
pub enum ResponseAction {
    Allow,
    Deny(u16),
    Header(HeaderAction),
    /// `set-status N [reason TEXT]`.
    SetStatus(StatusCode, Option<hyper::ext::ReasonPhrase>),
    /// `cache-store NAME`: the response is stored if it may be.
    CacheStore(Arc<crate::l7::cache::Cache>),
}

/// The response of `http-request return`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Option<FormatString>,
    pub headers: Vec<(HeaderName, HeaderFmt)>,
}

/// A `set-header` / `add-header` value or a redirect target: a log-format string, pre-built
/// as a header value when it has no `%[...]`.
#[derive(Debug, Clone)]
pub enum HeaderFmt {
    Literal(HeaderValue),
    Format(FormatString),
}

impl HeaderFmt {
    /// The value for one request; `None` when the expansion is not a valid header value
    /// (HAProxy drops such a value: the action does nothing).
    pub fn value(&self, input: &dyn AclInput) -> Option<HeaderValue> {
        match self {
            HeaderFmt::Literal(v) => Some(v.clone()),
            HeaderFmt::Format(f) => {
                let mut out = String::new();
                f.expand(input, &mut out);
                HeaderValue::from_str(&out).ok()
            }
        }
    }
}

/// A rule: an action (request or response) and its condition.
#[derive(Debug, Clone)]
pub struct Rule<A> {
    pub action: A,
    pub cond: Option<Condition>,
}

pub type RequestRule = Rule<RequestAction>;
pub type ResponseRule = Rule<ResponseAction>;

/// Turns one section's rules into the proxy's form. Formats and regexes were compiled once
/// by the config loader (which reported bad ones with their position) and are taken from
/// the model, not compiled again.
struct Compiler<'a> {
    section: &'a str,
    /// The stick tables, and the name of the section's own one.
    tables: &'a Tables,
    own: &'a str,
    caches: &'a Caches,
}

/// The caches of a generation, by name.
pub type Caches = HashMap<String, Arc<crate::l7::cache::Cache>>;

/// What a generation's sections share: stick tables, caches and `proc.*` variables.
#[derive(Clone, Copy)]
struct Stores<'a> {
    tables: &'a Arc<Tables>,
    caches: &'a Caches,
    proc_vars: &'a Arc<ProcVars>,
}

impl Compiler<'_> {
    fn err(&self, v: &str, e: &dyn std::fmt::Display) -> RuntimeError {
        RuntimeError::Header {
            section: self.section.to_owned(),
            what: format!("{v}: {e}"),
        }
    }

    fn name(&self, n: &str) -> Result<HeaderName, RuntimeError> {
        HeaderName::from_bytes(n.as_bytes()).map_err(|e| self.err(n, &e))
    }

    fn value(&self, fmt: &Fmt) -> Result<HeaderFmt, RuntimeError> {
        let v = fmt.text();
        let f = self.format(fmt)?;
        if let Some(lit) = f.as_literal() {
            return HeaderValue::from_str(lit)
                .map(HeaderFmt::Literal)
                .map_err(|e| self.err(v, &e));
        }
        // Literal text that can never be part of a valid value is a config error.
        for lit in f.literals() {
            HeaderValue::from_str(lit).map_err(|e| self.err(v, &e))?;
        }
        Ok(HeaderFmt::Format(f))
    }

    fn format(&self, v: &Fmt) -> Result<FormatString, RuntimeError> {
        v.compiled().cloned().map_err(|e| self.err(v.text(), e))
    }

    fn regex(&self, re: &Re) -> Result<Regex, RuntimeError> {
        re.compiled().cloned().map_err(|e| self.err(re.text(), e))
    }

    fn status(&self, s: u16) -> Result<StatusCode, RuntimeError> {
        StatusCode::from_u16(s).map_err(|e| self.err(&s.to_string(), &e))
    }

    /// The header action `a` is, if it is one.
    fn header(&self, a: &HttpAction) -> Result<Option<HeaderAction>, RuntimeError> {
        Ok(Some(match a {
            HttpAction::SetHeader { name, value } => {
                HeaderAction::Set(self.name(name)?, self.value(value)?)
            }
            HttpAction::AddHeader { name, value } => {
                HeaderAction::Add(self.name(name)?, self.value(value)?)
            }
            HttpAction::DelHeader { name } => HeaderAction::Del(self.name(name)?),
            HttpAction::ReplaceHeader {
                name,
                regex,
                replace,
                each_value,
            } => HeaderAction::Replace {
                name: self.name(name)?,
                re: self.regex(regex)?,
                replace: self.format(replace)?,
                each_value: *each_value,
            },
            _ => return Ok(None),
        }))
    }

    fn cache(&self, name: &str) -> Result<Arc<crate::l7::cache::Cache>, RuntimeError> {
        self.caches
            .get(name)
            .cloned()
            .ok_or_else(|| RuntimeError::NoCache {
                section: self.section.to_owned(),
                cache: name.to_owned(),
            })
    }

    /// An action the config loader keeps out of this kind of rule.
    fn misplaced(&self, a: &HttpAction) -> RuntimeError {
        RuntimeError::Misplaced {
            section: self.section.to_owned(),
            action: format!("{a:?}"),
        }
    }

    fn request(&self, a: &HttpAction) -> Result<RequestAction, RuntimeError> {
        if let Some(h) = self.header(a)? {
            return Ok(RequestAction::Header(h));
        }
        Ok(match a {
            HttpAction::Allow => RequestAction::Allow,
            HttpAction::Deny { status } => RequestAction::Deny(*status),
            HttpAction::Redirect(rd) => RequestAction::Redirect {
                kind: rd.kind,
                target: self.value(&rd.target)?,
                code: StatusCode::from_u16(rd.code).unwrap_or(StatusCode::FOUND),
                drop_query: rd.drop_query,
            },
            HttpAction::SetPath { value } => RequestAction::SetPath(self.format(value)?),
            HttpAction::SetQuery { value } => RequestAction::SetQuery(self.format(value)?),
            HttpAction::ReplacePath { regex, replace } => {
                RequestAction::ReplacePath(self.regex(regex)?, self.format(replace)?)
            }
            HttpAction::Return(r) => RequestAction::Return(Box::new(Reply {
                status: self.status(r.status)?,
                content_type: r
                    .content_type
                    .as_deref()
                    .map(|t| HeaderValue::from_str(t).map_err(|e| self.err(t, &e)))
                    .transpose()?,
                body: r.body.as_ref().map(|b| self.format(b)).transpose()?,
                headers: r
                    .headers
                    .iter()
                    .map(|(n, v)| Ok((self.name(n)?, self.value(v)?)))
                    .collect::<Result<_, RuntimeError>>()?,
            })),
            HttpAction::TrackSc { slot, key, table } => {
                let name = table.as_deref().unwrap_or(self.own);
                let table =
                    self.tables
                        .get(name)
                        .cloned()
                        .ok_or_else(|| RuntimeError::NoTable {
                            section: self.section.to_owned(),
                            table: name.to_owned(),
                        })?;
                let key = key
                    .compiled()
                    .cloned()
                    .map_err(|e| self.err(key.text(), e))?;
                RequestAction::TrackSc {
                    slot: *slot,
                    key,
                    table,
                }
            }
            HttpAction::ScIncGpc0 { slot } => RequestAction::ScIncGpc0(*slot),
            HttpAction::ScSetGpt0 { slot, value } => RequestAction::ScSetGpt0(*slot, *value),
            HttpAction::SetVar { scope, name, expr } => RequestAction::SetVar(
                *scope,
                name.as_str().into(),
                expr.compiled()
                    .cloned()
                    .map_err(|e| self.err(expr.text(), e))?,
            ),
            HttpAction::UnsetVar { scope, name } => {
                RequestAction::UnsetVar(*scope, name.as_str().into())
            }
            HttpAction::SetMethod { value } => RequestAction::SetMethod(self.format(value)?),
            HttpAction::SetUri { value } => RequestAction::SetUri(self.format(value)?),
            HttpAction::CacheUse(name) => RequestAction::CacheUse(self.cache(name)?),
            HttpAction::SetStatus { .. }
            | HttpAction::SetHeader { .. }
            | HttpAction::AddHeader { .. }
            | HttpAction::DelHeader { .. }
            | HttpAction::ReplaceHeader { .. }
            | HttpAction::CacheStore(_) => return Err(self.misplaced(a)),
        })
    }

    fn response(&self, a: &HttpAction) -> Result<ResponseAction, RuntimeError> {
        if let Some(h) = self.header(a)? {
            return Ok(ResponseAction::Header(h));
        }
        Ok(match a {
            HttpAction::Allow => ResponseAction::Allow,
            HttpAction::Deny { status } => ResponseAction::Deny(*status),
            HttpAction::SetStatus { status, reason } => ResponseAction::SetStatus(
                self.status(*status)?,
                reason
                    .as_ref()
                    .map(|r| {
                        hyper::ext::ReasonPhrase::try_from(r.as_bytes())
                            .map_err(|e| self.err(r, &e))
                    })
                    .transpose()?,
            ),
            HttpAction::CacheStore(name) => ResponseAction::CacheStore(self.cache(name)?),
            _ => return Err(self.misplaced(a)),
        })
    }
}

fn compile_rules<A>(
    c: &Compiler<'_>,
    rules: &[HttpRule],
    action: impl Fn(&Compiler<'_>, &HttpAction) -> Result<A, RuntimeError>,
) -> Result<Vec<Rule<A>>, RuntimeError> {
    rules
        .iter()
        .map(|r| {
            Ok(Rule {
                action: action(c, &r.action)?,
                cond: r.cond.clone(),
            })
        })
        .collect()
}

/// A section's `http-request`, `http-response` and `http-after-response` rules.
type SectionRules = (Vec<RequestRule>, Vec<ResponseRule>, Vec<ResponseRule>);

/// A section's `http-request`, `http-response` and `http-after-response` rules, compiled.
fn section_rules(
    section: &str,
    own: &str,
    stores: Stores<'_>,
    lists: [&[HttpRule]; 3],
) -> Result<SectionRules, RuntimeError> {
    let c = Compiler {
        section,
        tables: stores.tables,
        own,
        caches: stores.caches,
    };
    Ok((
        compile_rules(&c, lists[0], |c, a| c.request(a))?,
        compile_rules(&c, lists[1], |c, a| c.response(a))?,
        compile_rules(&c, lists[2], |c, a| c.response(a))?,
    ))
}

/// One server of a backend.
#[derive(Debug)]
pub struct ServerRt {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub backup: bool,
    /// The value of the persistence cookie naming this server.
    pub cookie: Box<str>,
    pub state: Arc<ServerState>,
    pub pool: Arc<Pool>,
    /// `proto h2`: the server's HTTP/2 connections (then `pool` stays empty).
    pub h2: Option<Arc<H2Conns>>,
    /// `ssl`: TLS toward the server.
    pub tls: Option<Arc<UpstreamTls>>,
    /// `send-proxy[-v2]`: connections start with a PROXY header naming their client, so
    /// they are not pooled.
    pub send_proxy: Option<ProxyVersion>,
    /// The protocol options the connections were made with (a reload that changes them
    /// starts new pools).
    pub conn_spec: (
        ServerProto,
        Option<crate::config::model::ServerTls>,
        Option<ProxyVersion>,
    ),
    /// `maxconn`: a fair (FIFO) semaphore.
    pub queue: Option<Arc<Semaphore>>,
    pub maxconn: Option<u32>,
    /// Stable hash of the name, for consistent hashing.
    pub key: u64,
}

/// `cookie NAME insert [indirect] [nocache]`.
#[derive(Debug, Clone)]
pub struct CookieRt {
    pub name: Box<str>,
    pub indirect: bool,
    pub nocache: bool,
}

/// One backend.
#[derive(Debug)]
pub struct BackendRt {
    pub name: Arc<str>,
    pub mode: Mode,
    pub balance: crate::config::model::Balance,
    pub state: Arc<BackendState>,
    pub servers: Vec<Arc<ServerRt>>,
    pub selector: ArcSwap<Box<dyn Selector>>,
    pub rules: Vec<RequestRule>,
    /// `http-response` rules, run before the frontend's.
    pub response_rules: Vec<ResponseRule>,
    /// `http-after-response` rules, run before the frontend's.
    pub after_rules: Vec<ResponseRule>,
    pub errors: ErrorPages,
    pub cookie: Option<CookieRt>,
    pub timeouts: Timeouts,
    pub retries: u32,
    pub redispatch: bool,
    pub forwardfor: bool,
    /// `tcp-request content` rules of a `mode tcp` backend, run once it is chosen.
    pub tcp_rules: Vec<crate::config::model::TcpRequestRule>,
    pub inspect_delay: Option<std::time::Duration>,
    /// The backend's own stick table.
    pub table: Option<Arc<StickTable>>,
    /// `compression …` of the backend.
    pub compression: Option<crate::config::model::Compression>,
}

impl BackendRt {
    /// Rebuilds the selector from the live status and weights.
    pub fn rebuild(&self) {
        let members: Vec<_> = self
            .servers
            .iter()
            .map(|s| (s.state.clone(), s.backup, s.key))
            .collect();
        let sel = balance::build(self.balance, &members);
        self.selector.store(Arc::new(Box::new(ArcSel(sel))));
        for s in &self.servers {
            if !s.state.status().is_usable() {
                s.pool.clear();
                if let Some(h2) = &s.h2 {
                    h2.clear();
                }
            }
        }
    }

    /// Picks with the cached selector only.
    pub fn pick_cached(&self, ctx: &PickCtx, avoid: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.selector.load().pick(ctx, avoid)
    }

    /// Picks a server for a new request, skipping those `avoid` rejects. Falls back to a
    /// fresh snapshot when the cached selector is stale (a status changed a moment ago).
    pub fn pick(&self, ctx: &PickCtx, avoid: &dyn Fn(usize) -> bool) -> Option<usize> {
        if let Some(i) = self.selector.load().pick(ctx, avoid) {
            return Some(i);
        }
        let members: Vec<_> = self
            .servers
            .iter()
            .map(|s| (s.state.clone(), s.backup, s.key))
            .collect();
        balance::build(self.balance, &members).pick(ctx, avoid)
    }

    pub fn nbsrv(&self) -> u32 {
        self.state.nbsrv()
    }

    /// The server a persistence cookie value sends the request to: as HAProxy, the first
    /// server with that value that is not stopped (UP, or draining: persistent traffic
    /// stays), going on past stopped ones, since several servers may share a value (the
    /// seed's `cookie primary` on two servers). `None`: no such server is usable.
    pub fn by_cookie(&self, value: &[u8]) -> Option<usize> {
        self.servers.iter().position(|s| {
            let st = s.state.status();
            s.cookie.as_bytes() == value
                && (st.is_usable() || st == crate::state::ServerStatus::Drain)
        })
    }
}

#[derive(Debug)]
struct ArcSel(Arc<dyn Selector>);

impl Selector for ArcSel {
    fn pick(&self, ctx: &PickCtx, avoid: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.0.pick(ctx, avoid)
    }
}

/// One frontend.
#[derive(Debug)]
pub struct FrontendRt {
    pub name: Arc<str>,
    pub mode: Mode,
    pub rules: Vec<RequestRule>,
    /// `http-response` rules, run after the backend's.
    pub response_rules: Vec<ResponseRule>,
    /// `http-after-response` rules, run after the backend's.
    pub after_rules: Vec<ResponseRule>,
    /// Some `http-after-response` rule (the frontend's or a backend's) exists: responses
    /// take the path that applies them.
    pub after_response: bool,
    pub tcp_rules: Vec<crate::config::model::TcpRequestRule>,
    pub inspect_delay: Option<std::time::Duration>,
    pub use_backend: Vec<(BackendRef, Condition)>,
    pub default_backend: Option<Arc<BackendRt>>,
    pub backends: Arc<HashMap<String, Arc<BackendRt>>>,
    pub counters: Arc<Counters>,
    pub errors: ErrorPages,
    pub timeouts: Timeouts,
    pub forwardfor: bool,
    /// `maxconn` of the frontend and of the process (`[global] maxconn`).
    pub limits: ConnLimits,
    pub deny_src: Vec<crate::config::model::IpNet>,
    pub allow_src: Vec<crate::config::model::IpNet>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub log: bool,
    pub log_format: LogFormat,
    /// The `log` targets access-log lines go to (none: lb's own log).
    pub log_targets: crate::syslog::Logger,
    /// `option dontlognull`: `mode tcp` connections whose client sent nothing are not logged.
    pub dontlognull: bool,
    /// `stats …`: the stats page this frontend serves.
    pub stats: Option<crate::config::model::StatsPage>,
    /// Every stick table, and the frontend's own one.
    pub tables: Arc<Tables>,
    pub table: Option<Arc<StickTable>>,
    /// `proc.*` variables.
    pub proc_vars: Arc<ProcVars>,
    /// `compression …` of the frontend.
    pub compression: Option<crate::config::model::Compression>,
}

fn net_contains(n: &crate::config::model::IpNet, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => match (v6.to_ipv4_mapped(), n.addr) {
            (Some(v4), IpAddr::V4(_)) => IpAddr::V4(v4),
            _ => ip,
        },
        v4 => v4,
    };
    match (n.addr, ip) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let p = u32::from(n.prefix_len.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            (u32::from(a) & mask) == (u32::from(b) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let p = u32::from(n.prefix_len.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            (u128::from(a) & mask) == (u128::from(b) & mask)
        }
        _ => false,
    }
}

/// Where a `use_backend` rule sends a request.
#[derive(Debug, Clone)]
pub enum BackendRef {
    Static(Arc<BackendRt>),
    /// A log-format name (`use_backend be_%[req.hdr(host),lower]`), expanded per request;
    /// when it names no backend of the frontend's mode, the request goes to
    /// `default_backend` (later rules are not tried), as in HAProxy.
    Dynamic(FormatString),
}

impl FrontendRt {
    /// Whether a client address may connect (`deny_src` / `allow_src`).
    pub fn src_allowed(&self, ip: std::net::IpAddr) -> bool {
        if self.deny_src.iter().any(|n| net_contains(n, ip)) {
            return false;
        }
        self.allow_src.is_empty() || self.allow_src.iter().any(|n| net_contains(n, ip))
    }

    /// The backend of the first `use_backend` rule whose condition holds (if that rule's
    /// dynamic name resolves), else `default_backend`.
    pub fn pick_backend(&self, input: &dyn AclInput) -> Option<Arc<BackendRt>> {
        for (target, cond) in &self.use_backend {
            if !cond.eval(input) {
                continue;
            }
            match target {
                BackendRef::Static(b) => return Some(b.clone()),
                BackendRef::Dynamic(f) => {
                    let mut name = String::new();
                    f.expand(input, &mut name);
                    if let Some(b) = self.backends.get(&name).filter(|b| b.mode == self.mode) {
                        return Some(b.clone());
                    }
                    break;
                }
            }
        }
        self.default_backend.clone()
    }
}

/// Everything one config generation runs on.
#[derive(Debug)]
pub struct Runtime {
    pub frontends: HashMap<String, Arc<FrontendRt>>,
    pub backends: Arc<HashMap<String, Arc<BackendRt>>>,
    /// The stick tables (kept across reloads when unchanged).
    pub tables: Arc<Tables>,
    /// `[global] maxconn`, shared by every frontend's [`ConnLimits`].
    pub process_limit: Option<ConnLimit>,
    /// `proc.*` variables (kept across reloads).
    pub proc_vars: Arc<ProcVars>,
    /// The HTTP caches (kept across reloads when unchanged).
    pub caches: Caches,
}

/// A connection limit (`maxconn`): a FIFO semaphore of slots. A reload that keeps the
/// limit keeps the semaphore, so connections accepted before it still count.
#[derive(Debug, Clone)]
pub struct ConnLimit {
    max: u32,
    slots: Arc<Semaphore>,
}

impl ConnLimit {
    /// `old` when it has the limit `max`, else a new limiter (`None`: no limit).
    fn keep_or_new(old: Option<&ConnLimit>, max: Option<u32>) -> Option<ConnLimit> {
        let max = max?;
        match old {
            Some(o) if o.max == max => Some(o.clone()),
            _ => Some(ConnLimit {
                max,
                slots: Arc::new(Semaphore::new(max.max(1) as usize)),
            }),
        }
    }
}

/// The limits a listener's connections count against: the process's (`[global] maxconn`)
/// and their frontend's (`maxconn`). The accept loop waits for [`ConnLimits::room`] before
/// it accepts, so at a limit connections wait in the kernel's backlog, as HAProxy stops
/// accepting; each accepted connection holds its [`ConnSlots`] until it closes.
#[derive(Debug, Clone, Default)]
pub struct ConnLimits {
    pub process: Option<ConnLimit>,
    pub frontend: Option<ConnLimit>,
}

/// The slots one connection holds; dropping them frees them.
#[derive(Debug)]
pub struct ConnSlots {
    _held: [Option<tokio::sync::OwnedSemaphorePermit>; 2],
}

impl ConnLimits {
    fn each(&self) -> impl Iterator<Item = &ConnLimit> {
        self.process.iter().chain(self.frontend.iter())
    }

    /// Waits until every limit has a free slot, without taking one: the accept loop does not
    /// sit on a slot while no connection comes (each worker's socket has its own loop).
    pub async fn room(&self) {
        for l in self.each() {
            // The semaphores are never closed; a free slot is given back at once.
            drop(l.slots.acquire().await);
        }
    }

    /// Takes a slot of every limit, waiting for them in FIFO order.
    pub async fn take(&self) -> ConnSlots {
        let mut held = [None, None];
        for (i, l) in [&self.process, &self.frontend].into_iter().enumerate() {
            if let Some(l) = l {
                held[i] = l.slots.clone().acquire_owned().await.ok();
            }
        }
        ConnSlots { _held: held }
    }
}

impl Runtime {
    /// Puts the counters of this generation's caches in the registry (`/stats`,
    /// `/metrics`), sorted by name.
    pub fn publish_caches(&self, registry: &Registry) {
        let mut v: Vec<_> = self
            .caches
            .iter()
            .map(|(n, c)| (n.clone(), c.counters().clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        registry.set_caches(v);
    }
}

/// The registry's next contents for `config`, when they differ from what it holds
/// (standalone use of the L7 tier; under `lb run` the control plane has already synced it and
/// this is `None`). Servers marked `disabled` start in MAINT once it is published.
#[derive(Debug)]
pub struct RegistryUpdate {
    plan: crate::health::RegistryPlan,
    disabled: Vec<(String, String)>,
}

impl RegistryUpdate {
    fn plan(config: &Config, registry: &Registry) -> Option<Self> {
        let current = registry.backends();
        let in_step = config.backends.iter().all(|b| {
            current.get(&b.name).is_some_and(|e| {
                e.servers.len() == b.servers.len()
                    && e.servers
                        .iter()
                        .zip(&b.servers)
                        .all(|(s, c)| s.name == c.name && s.addr == c.addr)
            })
        });
        if in_step {
            return None;
        }
        let disabled = config
            .backends
            .iter()
            .flat_map(|b| {
                b.servers
                    .iter()
                    .filter(|s| s.disabled || s.unresolved)
                    .map(|s| (b.name.clone(), s.name.clone()))
            })
            .collect();
        Some(Self {
            plan: crate::health::plan_registry(registry, config),
            disabled,
        })
    }

    /// Installs the update.
    pub fn publish(self, registry: &Registry) {
        self.plan.publish(registry);
        for (b, s) in &self.disabled {
            let _ = registry.set_status(b, s, ServerStatus::Maint);
        }
    }
}

/// Where a build reads the shared states: the planned registry contents, else the registry.
struct States<'a> {
    registry: &'a Registry,
    update: Option<&'a RegistryUpdate>,
}

impl States<'_> {
    fn backend(&self, name: &str) -> Option<Arc<BackendState>> {
        match self.update {
            Some(u) => u.plan.backend(name),
            None => self.registry.backend(name),
        }
    }

    fn frontend(&self, name: &str) -> Option<Arc<Counters>> {
        match self.update {
            Some(u) => u.plan.frontend(name),
            None => self.registry.frontend(name),
        }
    }
}

fn build_backend(
    b: &Backend,
    states: &States<'_>,
    stores: Stores<'_>,
    old: Option<&Runtime>,
) -> Result<Arc<BackendRt>, RuntimeError> {
    let section = format!("backend {}", b.name);
    let tables = stores.tables;
    let (rules, response_rules, after_rules) = section_rules(
        &section,
        &b.name,
        stores,
        [&b.http_request, &b.http_response, &b.http_after_response],
    )?;
    let state = match states.backend(&b.name) {
        Some(s) => s,
        None => Arc::new(BackendState {
            name: b.name.clone(),
            servers: Vec::new(),
            counters: Counters::default(),
        }),
    };
    let old_be = old.and_then(|o| o.backends.get(&b.name));
    let servers = b
        .servers
        .iter()
        .map(|c| {
            let st = state
                .server(&c.name)
                .filter(|s| s.addr == c.addr)
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(ServerState::new(
                        &c.name, c.addr, c.weight, c.backup, c.check,
                    ))
                });
            let conn_spec = (c.proto, c.tls.clone(), c.send_proxy);
            let old_srv = old_be.and_then(|ob| {
                ob.servers
                    .iter()
                    .find(|s| *s.name == *c.name && s.addr == c.addr && s.conn_spec == conn_spec)
            });
            let tls = match (&c.tls, old_srv) {
                (None, _) => None,
                (Some(_), Some(o)) => o.tls.clone(),
                (Some(spec), None) => {
                    let alpn: &[&[u8]] = match c.proto {
                        ServerProto::Http2 => &[b"h2"],
                        ServerProto::Http1 => &[],
                    };
                    Some(Arc::new(
                        UpstreamTls::new(spec, c.addr.ip(), alpn).map_err(|e| {
                            RuntimeError::Tls {
                                server: format!("{}/{}", b.name, c.name),
                                what: e.to_string(),
                            }
                        })?,
                    ))
                }
            };
            let pool = old_srv.map(|s| s.pool.clone()).unwrap_or_default();
            let h2 = (c.proto == ServerProto::Http2).then(|| {
                old_srv
                    .and_then(|s| s.h2.clone())
                    .unwrap_or_else(|| Arc::new(H2Conns::new(c.addr, tls.clone())))
            });
            let queue = match (old_srv, c.maxconn) {
                (Some(o), Some(m)) if o.maxconn == Some(m) => o.queue.clone(),
                (_, Some(m)) => Some(Arc::new(Semaphore::new(m.max(1) as usize))),
                (_, None) => None,
            };
            Ok(Arc::new(ServerRt {
                name: Arc::from(c.name.as_str()),
                addr: c.addr,
                backup: c.backup,
                cookie: c.cookie.clone().unwrap_or_else(|| c.name.clone()).into(),
                state: st,
                pool,
                h2,
                tls,
                send_proxy: c.send_proxy,
                conn_spec,
                queue,
                maxconn: c.maxconn,
                key: balance::hash_bytes(c.name.as_bytes()),
            }))
        })
        .collect::<Result<Vec<_>, RuntimeError>>()?;
    let be = BackendRt {
        name: Arc::from(b.name.as_str()),
        mode: b.mode,
        balance: b.balance,
        state,
        servers,
        selector: ArcSwap::from_pointee(Box::new(ArcSel(balance::build(b.balance, &[])))),
        rules,
        response_rules,
        after_rules,
        errors: ErrorPages::build(&format!("backend {}", b.name), &b.errorfiles)?,
        cookie: b.cookie.as_ref().map(|c| CookieRt {
            name: c.name.clone().into(),
            indirect: c.indirect,
            nocache: c.nocache,
        }),
        timeouts: b.timeouts,
        retries: b.retries,
        redispatch: b.redispatch,
        forwardfor: b.forwardfor,
        tcp_rules: b.tcp_request.clone(),
        inspect_delay: b.inspect_delay,
        table: tables.get(&b.name).cloned(),
        compression: b.compression.clone(),
    };
    be.rebuild();
    Ok(Arc::new(be))
}

fn build_frontend(
    f: &Frontend,
    backends: &Arc<HashMap<String, Arc<BackendRt>>>,
    states: &States<'_>,
    log_format: LogFormat,
    stores: Stores<'_>,
    process_limit: &Option<ConnLimit>,
    old: Option<&Runtime>,
) -> Result<Arc<FrontendRt>, RuntimeError> {
    let section = format!("frontend {}", f.name);
    let tables = stores.tables;
    let (rules, response_rules, after_rules) = section_rules(
        &section,
        &f.name,
        stores,
        [&f.http_request, &f.http_response, &f.http_after_response],
    )?;
    let lookup = |name: &str| {
        backends
            .get(name)
            .cloned()
            .ok_or_else(|| RuntimeError::NoBackend {
                frontend: f.name.clone(),
                backend: name.to_owned(),
            })
    };
    let use_backend = f
        .use_backend
        .iter()
        .map(|u| {
            let name = u
                .backend
                .compiled()
                .cloned()
                .map_err(|e| RuntimeError::BackendName {
                    frontend: f.name.clone(),
                    name: u.backend.text().to_owned(),
                    what: e.to_string(),
                })?;
            let target = match name.as_literal() {
                Some(n) => BackendRef::Static(lookup(n)?),
                None => BackendRef::Dynamic(name),
            };
            Ok((target, u.cond.clone()))
        })
        .collect::<Result<Vec<_>, RuntimeError>>()?;
    let default_backend = f.default_backend.as_deref().map(lookup).transpose()?;
    let old_fe = old.and_then(|o| o.frontends.get(&f.name));
    let limits = ConnLimits {
        process: process_limit.clone(),
        frontend: ConnLimit::keep_or_new(
            old_fe.and_then(|o| o.limits.frontend.as_ref()),
            f.maxconn,
        ),
    };
    Ok(Arc::new(FrontendRt {
        name: Arc::from(f.name.as_str()),
        mode: f.mode,
        rules,
        response_rules,
        after_rules,
        after_response: !f.http_after_response.is_empty()
            || backends.values().any(|b| !b.after_rules.is_empty()),
        tcp_rules: f.tcp_request.clone(),
        inspect_delay: f.inspect_delay,
        use_backend,
        default_backend,
        backends: backends.clone(),
        counters: states
            .frontend(&f.name)
            .unwrap_or_else(|| Arc::new(Counters::default())),
        errors: ErrorPages::build(&format!("frontend {}", f.name), &f.errorfiles)?,
        timeouts: f.timeouts,
        forwardfor: f.forwardfor,
        limits,
        deny_src: f.deny_src.clone(),
        allow_src: f.allow_src.clone(),
        max_header_bytes: f.max_header_bytes,
        max_headers: f.max_headers,
        stats: f.stats.clone(),
        table: tables.get(&f.name).cloned(),
        tables: tables.clone(),
        proc_vars: stores.proc_vars.clone(),
        compression: f.compression.clone(),
        log: f.log,
        log_format,
        dontlognull: f.dontlognull,
        log_targets: crate::syslog::Logger::new(&f.log_targets).map_err(|source| {
            RuntimeError::Log {
                frontend: f.name.clone(),
                source,
            }
        })?,
    }))
}

/// A compiled generation and the registry update it was built on.
#[derive(Debug)]
pub struct Built {
    pub runtime: Runtime,
    /// To publish once the runtime is in place (`None`: the registry is in step already).
    pub registry: Option<RegistryUpdate>,
}

/// Compiles the userspace part of `config` against the registry's states as they will be
/// once [`Built::registry`] is published; the registry itself is not written, so a failed
/// build leaves nothing to undo.
pub fn build(
    config: &Config,
    registry: &Registry,
    old: Option<&Runtime>,
) -> Result<Built, RuntimeError> {
    let update = RegistryUpdate::plan(config, registry);
    let states = States {
        registry,
        update: update.as_ref(),
    };
    let tables = Arc::new(Tables::build(config, old.map(|o| &*o.tables)));
    let proc_vars = old.map(|o| o.proc_vars.clone()).unwrap_or_default();
    // A cache whose settings stay keeps its entries across the reload.
    let caches: Caches = config
        .caches
        .iter()
        .map(|spec| {
            let c = old
                .and_then(|o| o.caches.get(&spec.name))
                .filter(|c| c.spec == *spec)
                .cloned()
                .unwrap_or_else(|| crate::l7::cache::Cache::new(spec));
            (spec.name.clone(), c)
        })
        .collect();
    let mut backends = HashMap::new();
    let stores = Stores {
        tables: &tables,
        caches: &caches,
        proc_vars: &proc_vars,
    };
    for b in &config.backends {
        backends.insert(b.name.clone(), build_backend(b, &states, stores, old)?);
    }
    let backends = Arc::new(backends);
    let process_limit = ConnLimit::keep_or_new(
        old.and_then(|o| o.process_limit.as_ref()),
        config.global.maxconn,
    );
    let mut frontends = HashMap::new();
    for f in config
        .frontends
        .iter()
        .filter(|f| f.tier == Tier::Userspace)
    {
        frontends.insert(
            f.name.clone(),
            build_frontend(
                f,
                &backends,
                &states,
                config.global.log_format,
                stores,
                &process_limit,
                old,
            )?,
        );
    }
    Ok(Built {
        runtime: Runtime {
            frontends,
            backends,
            tables,
            process_limit,
            proc_vars,
            caches,
        },
        registry: update,
    })
}

/// What a registry change means for a runtime.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Statuses or weights moved: selectors were rebuilt.
    Rebuilt,
    /// The registry's backend set was replaced (control-plane reload): the runtime must be
    /// rebuilt from its config to pick up the new server states.
    Replaced,
}

impl Runtime {
    /// Reacts to a registry notification.
    pub fn on_registry_change(&self, registry: &Registry) -> Change {
        let current = registry.backends();
        for b in self.backends.values() {
            match current.get(&*b.name) {
                Some(s) if Arc::ptr_eq(s, &b.state) => {}
                _ => return Change::Replaced,
            }
        }
        for b in self.backends.values() {
            b.rebuild();
        }
        Change::Rebuilt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::tests::Req;

    /// The built-in pages on the wire are HAProxy's, byte for byte.
    #[test]
    fn builtin_wire_pages_are_haproxys() {
        assert_eq!(
            &builtin_wire(408)[..],
            &b"HTTP/1.1 408 Request Time-out\r\ncontent-length: 110\r\n\
cache-control: no-cache\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n\
<html><body><h1>408 Request Time-out</h1>\nYour browser didn't send a complete request in time.\n</body></html>\n"[..]
        );
        let pages = ErrorPages::build("frontend f", &BTreeMap::new()).expect("pages");
        let conn = pages.conn_pages();
        assert_eq!(conn.timeout, builtin_wire(408));
        assert_eq!(conn.bad_request, builtin_wire(400));
    }

    #[test]
    fn format_value_that_is_not_a_header_value_is_dropped() {
        let f = FormatString::compile("v=%[req.hdr(x-raw)]").expect("compiles");
        let fmt = HeaderFmt::Format(f);
        let ok = Req::get("/").hdr("x-raw", "fine");
        assert_eq!(fmt.value(&ok).expect("valid").to_str().ok(), Some("v=fine"));
        let bad = Req::get("/").hdr("x-raw", "a\u{1}b");
        assert!(fmt.value(&bad).is_none());
    }
}
