//! From the serde model to the validated [`Config`]: defaults inheritance, directive
//! parsing, cross-references, tiers, certificates, and every problem with its location.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use super::diag::{ConfigErrors, Diagnostic, Severity};
use super::directives::{self as d, Args, RuleSide, TcpLine};
use super::keys::{RawCache, RawDataplane, RawGlobal};
use super::keys::{RawProxy, Section as Kind, proxy_key};
use super::model::*;
use super::raw::{Item, List, RawFile, S, V};
use super::source::{Problem, Source, Str, Tok, key_path_at, tokenize};
use super::suggest::hint;
use super::{DEFAULT_HASH_SEED, DEFAULT_SSL_CACHE_SIZE, LoadOptions};
use crate::acl::{AclSet, Condition};

mod acl;
mod announce;
mod backend;
mod cache;
mod cross;
mod dirs;
mod frontend;
mod global;
mod log;
mod proxy;
mod resolvers;
mod stick;
mod tier;
mod tls;

pub(crate) use tls::check_pem;

pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 16_384;
pub(crate) const DEFAULT_MAX_HEADERS: usize = 101;

pub(crate) fn build(
    src: &Source,
    opts: &LoadOptions,
) -> Result<(Config, Vec<Diagnostic>), ConfigErrors> {
    let raw: RawFile = match toml::from_str(&src.text) {
        Ok(r) => r,
        Err(e) => {
            return Err(ConfigErrors {
                diagnostics: vec![parse_error(src, &e)],
            });
        }
    };
    let mut b = Builder {
        src,
        opts,
        diags: Vec::new(),
        global_log: Vec::new(),
        stick_refs: Vec::new(),
        resolver_names: Vec::new(),
    };
    let cfg = b.config(&raw);
    let mut diags = b.diags;
    diags.sort_by_key(|d| (d.line, d.col));
    if diags.iter().any(Diagnostic::is_error) {
        Err(ConfigErrors { diagnostics: diags })
    } else {
        Ok((cfg, diags))
    }
}

/// A TOML syntax or schema error, with unknown keys turned into "did you mean".
fn parse_error(src: &Source, e: &toml::de::Error) -> Diagnostic {
    let pos = e.span().map_or(0, |s| s.start);
    let msg = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let msg = match msg.strip_prefix("unknown field `") {
        Some(rest) => {
            let (name, rest) = rest.split_once('`').unwrap_or((rest, ""));
            let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
            let h = hint(name, expected.iter().copied());
            if h.is_empty() {
                format!(
                    "unknown key `{name}` (expected one of: {})",
                    expected.join(", ")
                )
            } else {
                format!("unknown key `{name}`{h}")
            }
        }
        None => match msg
            .strip_prefix("invalid type: ")
            .and_then(|r| r.split_once(", expected "))
        {
            Some((found, expected)) => {
                let expected = match expected {
                    "i64" | "u64" | "u32" | "usize" => "an integer",
                    "a boolean" | "bool" => "true or false",
                    e if e.starts_with("struct ") || e.starts_with("a table") => "a table",
                    e => e,
                };
                format!("expected {expected}, found {found}")
            }
            None => msg,
        },
    };
    let path = key_path_at(&src.text, pos);
    src.diag(Severity::Error, pos, &path, msg)
}

/// Text with a map from its byte offsets to source positions (a line, or words joined
/// from a table).
#[derive(Debug, Clone, Default)]
pub(crate) struct Mapped {
    pub text: String,
    /// (offset in `text`, source position, whether following characters map one to one)
    segs: Vec<(usize, usize, bool)>,
}

impl Mapped {
    fn from_str(s: &Str, from: usize) -> Self {
        let linear = s.linear();
        Self {
            text: s.value.get(from..).unwrap_or("").to_string(),
            segs: vec![(0, s.pos(from), linear)],
        }
    }

    fn push(&mut self, text: &str, pos: usize, linear: bool) {
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.segs.push((self.text.len(), pos, linear));
        self.text.push_str(text);
    }

    pub fn pos(&self, off: usize) -> usize {
        let seg = self
            .segs
            .iter()
            .rev()
            .find(|(o, _, _)| *o <= off)
            .or(self.segs.first());
        match seg {
            Some(&(o, p, true)) => p + (off - o.min(off)),
            Some(&(_, p, false)) => p,
            None => 0,
        }
    }

    fn from_toks(toks: &[Tok]) -> Self {
        let mut m = Self::default();
        for t in toks {
            if t.text.contains(char::is_whitespace) || t.text.is_empty() {
                m.push(
                    &format!("\"{}\"", t.text.replace('"', "\\\"")),
                    t.pos,
                    false,
                );
            } else {
                m.push(&t.text, t.pos, true);
            }
        }
        m
    }
}

/// One directive: its words, its `if`/`unless` condition, where it ends, and its full text.
#[derive(Debug)]
struct Dir {
    toks: Vec<Tok>,
    cond: Option<Mapped>,
    end: usize,
    text: Mapped,
}

impl Dir {
    fn args(&self) -> Args<'_> {
        Args::new(&self.toks, self.end)
    }
}

#[derive(Clone, Copy)]
enum K {
    /// One word, the value itself.
    Pos,
    /// The value split into words.
    Words,
    /// `keyword VALUE`.
    Val(&'static str),
    /// `keyword` when true.
    Flag(&'static str),
    /// `keyword V` for each element.
    Multi(&'static str),
    /// `keyword a,b,c`.
    Joined(&'static str),
}

type Spec = &'static [(&'static str, K)];

const BIND: Spec = &[
    ("addr", K::Pos),
    ("accept_proxy", K::Flag("accept-proxy")),
    ("ssl", K::Flag("ssl")),
    ("crt", K::Multi("crt")),
    ("alpn", K::Joined("alpn")),
    ("tls_ticket_keys", K::Val("tls-ticket-keys")),
    ("no_tls_tickets", K::Flag("no-tls-tickets")),
    ("strict_sni", K::Flag("strict-sni")),
    ("strict_alpn", K::Flag("strict-alpn")),
    ("verify", K::Val("verify")),
    ("ca_file", K::Val("ca-file")),
    ("ca_verify_file", K::Val("ca-verify-file")),
    ("crl_file", K::Val("crl-file")),
    ("crt_list", K::Multi("crt-list")),
    ("ssl_min_ver", K::Val("ssl-min-ver")),
    ("ssl_max_ver", K::Val("ssl-max-ver")),
    ("ciphersuites", K::Val("ciphersuites")),
    ("ciphers", K::Val("ciphers")),
    ("curves", K::Val("curves")),
    ("prefer_client_ciphers", K::Flag("prefer-client-ciphers")),
];
/// A server line's options, after its leading words (`server` and `server-template`).
macro_rules! server_spec {
    ($($head:expr),*) => {
        &[$($head,)*
    ("check", K::Flag("check")),
    ("weight", K::Val("weight")),
    ("backup", K::Flag("backup")),
    ("cookie", K::Val("cookie")),
    ("maxconn", K::Val("maxconn")),
    ("disabled", K::Flag("disabled")),
    ("proto", K::Val("proto")),
    ("ssl", K::Flag("ssl")),
    ("send_proxy", K::Flag("send-proxy")),
    ("send_proxy_v2", K::Flag("send-proxy-v2")),
    ("verify", K::Val("verify")),
    ("ca_file", K::Val("ca-file")),
    ("sni", K::Val("sni")),
    ("on_marked_down", K::Val("on-marked-down")),
    ("on_marked_up", K::Val("on-marked-up")),
    ("resolvers", K::Val("resolvers")),
    ("resolve_prefer", K::Val("resolve-prefer")),
    ("init_addr", K::Joined("init-addr")),
        ]
    };
}
const SERVER: Spec = server_spec!(("name", K::Pos), ("addr", K::Pos));
const SERVER_TEMPLATE: Spec = server_spec!(("prefix", K::Pos), ("num", K::Pos), ("addr", K::Pos));
const ACL: Spec = &[
    ("name", K::Pos),
    ("fetch", K::Words),
    ("flags", K::Words),
    ("values", K::Pos),
];
const HTTP_REQ: Spec = &[
    ("action", K::Pos),
    ("name", K::Pos),
    ("regex", K::Pos),
    ("replace", K::Pos),
    ("value", K::Pos),
    ("key", K::Pos),
    ("deny_status", K::Val("deny_status")),
    ("location", K::Val("location")),
    ("prefix", K::Val("prefix")),
    ("scheme", K::Val("scheme")),
    ("code", K::Val("code")),
    ("drop_query", K::Flag("drop-query")),
    ("status", K::Val("status")),
    ("content_type", K::Val("content-type")),
    ("string", K::Val("string")),
    ("lf_string", K::Val("lf-string")),
    ("table", K::Val("table")),
];
const HTTP_RES: Spec = &[
    ("action", K::Pos),
    ("name", K::Pos),
    ("regex", K::Pos),
    ("replace", K::Pos),
    ("value", K::Pos),
    ("status", K::Pos),
    ("deny_status", K::Val("deny_status")),
    ("reason", K::Val("reason")),
];
const TCP_REQ: Spec = &[
    ("action", K::Words),
    ("inspect_delay", K::Val("inspect-delay")),
];
const USE_BACKEND: Spec = &[("backend", K::Pos)];
const ERRORFILE: Spec = &[("code", K::Pos), ("path", K::Pos)];
const COOKIE: Spec = &[
    ("name", K::Pos),
    ("insert", K::Flag("insert")),
    ("indirect", K::Flag("indirect")),
    ("nocache", K::Flag("nocache")),
];
const CHECK: Spec = &[
    ("interval", K::Val("inter")),
    ("inter", K::Val("inter")),
    ("rise", K::Val("rise")),
    ("fall", K::Val("fall")),
    ("timeout", K::Val("timeout")),
    ("http", K::Joined("http")),
    ("host", K::Val("host")),
    ("expect", K::Val("expect")),
    ("tls", K::Flag("tls")),
    ("sni", K::Val("sni")),
];
/// Directives written only as a line (`option`, a `timeout` line): no table form.
const LINE_ONLY: Spec = &[];

/// What `defaults` gives every proxy.
#[derive(Debug, Clone)]
struct Inherit {
    mode: Mode,
    timeouts: Timeouts,
    balance: Balance,
    retries: u32,
    forwardfor: bool,
    redispatch: bool,
    log: bool,
    /// `log` targets (`global` already expanded).
    log_targets: Vec<crate::syslog::LogTarget>,
    /// `option dontlognull`.
    dontlognull: bool,
    /// `option log-health-checks`.
    log_health_checks: bool,
    maxconn: Option<u32>,
    check: CheckSpec,
    check_timeout_set: bool,
    cookie: Option<CookieSpec>,
    errorfiles: BTreeMap<u16, Vec<u8>>,
    default_backend: Option<(String, usize)>,
    max_header_bytes: usize,
    max_headers: usize,
    compression: Option<Compression>,
}

impl Default for Inherit {
    fn default() -> Self {
        Self {
            mode: Mode::Tcp,
            timeouts: Timeouts::default(),
            balance: Balance::RoundRobin,
            retries: 3,
            forwardfor: false,
            redispatch: false,
            log: false,
            log_targets: Vec::new(),
            dontlognull: false,
            log_health_checks: false,
            maxconn: None,
            check: CheckSpec::default(),
            check_timeout_set: false,
            cookie: None,
            errorfiles: BTreeMap::new(),
            default_backend: None,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            compression: None,
        }
    }
}

struct Builder<'a> {
    src: &'a Source,
    opts: &'a LoadOptions,
    diags: Vec<Diagnostic>,
    /// `[global] log`, for `log global` in proxies.
    global_log: Vec<crate::syslog::LogTarget>,
    /// (table, position, key path) of each stick table a rule names.
    stick_refs: Vec<(String, usize, String)>,
    /// `[resolvers.X]` names, for servers' `resolvers X`.
    resolver_names: Vec<String>,
}

/// A frontend before cross-checks.
struct FeDraft {
    fe: Frontend,
    name_pos: usize,
    path: String,
    tier_forced: Option<(Tier, usize)>,
    /// `maxconn` set in the section itself (not inherited).
    maxconn_own: bool,
    /// (position, key path) of each bind, in `fe.binds` order.
    bind_locs: Vec<(usize, String)>,
    /// Whether each bind is `udp@` (a UDP VIP), in `fe.binds` order.
    udp_binds: Vec<bool>,
    /// (backend, position, key path) for every reference.
    refs: Vec<(String, usize, String)>,
    /// `nbsrv(NAME)` references in ACLs.
    nbsrv: Vec<(String, usize, String)>,
}

struct BeDraft {
    be: Backend,
    /// `server` items written (some may have failed).
    declared_servers: usize,
    name_pos: usize,
    path: String,
}

impl<'a> Builder<'a> {
    fn err(&mut self, pos: usize, path: &str, msg: impl Into<String>) {
        let d = self.src.diag(Severity::Error, pos, path, msg.into());
        self.diags.push(d);
    }

    fn warn(&mut self, pos: usize, path: &str, msg: impl Into<String>) {
        let d = self.src.diag(Severity::Warning, pos, path, msg.into());
        self.diags.push(d);
    }

    fn problem(&mut self, p: Problem, path: &str) {
        self.err(p.pos, path, p.msg);
    }

    /// The words of the config string `s`; one the HAProxy word splitter refuses is
    /// reported at `path` and gives `None`.
    fn words(&mut self, s: &Str, path: &str) -> Option<Vec<Tok>> {
        tokenize(s).map_err(|p| self.problem(p, path)).ok()
    }

    fn config(&mut self, raw: &RawFile) -> Config {
        let global = self.global(raw.global.as_ref());
        let dataplane = raw.dataplane.as_ref().map(|d| self.dataplane(d));
        let resolvers = self.resolvers_sections(raw);
        self.resolver_names = resolvers.iter().map(|r| r.name.clone()).collect();
        let inherit = match &raw.defaults {
            Some(d) => {
                self.proxy_settings(d.get_ref(), "defaults", Kind::Defaults, &Inherit::default())
            }
            None => Inherit::default(),
        };

        // Names: frontends and listens share one namespace, backends and listens another.
        let mut fe_names: HashMap<String, usize> = HashMap::new();
        let mut be_names: HashMap<String, usize> = HashMap::new();
        let mut sections: Vec<(Kind, &S, &RawProxy)> = Vec::new();
        for (k, v) in &raw.frontend.0 {
            sections.push((Kind::Frontend, k, v.get_ref()));
        }
        for (k, v) in &raw.listen.0 {
            sections.push((Kind::Listen, k, v.get_ref()));
        }
        for (k, v) in &raw.backend.0 {
            sections.push((Kind::Backend, k, v.get_ref()));
        }
        sections.sort_by_key(|(_, k, _)| k.span().start);
        for (kind, name, _) in &sections {
            let pos = name.span().start;
            let n = name.get_ref();
            let path = format!("{}.{}", kind.name(), n);
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
            {
                self.err(
                    pos,
                    &path,
                    format!("invalid name `{n}`: use letters, digits, `-`, `_`, `.` and `:`"),
                );
            }
            if matches!(kind, Kind::Frontend | Kind::Listen)
                && let Some(prev) = fe_names.insert(n.clone(), pos)
            {
                let (l, _) = self.src.line_col(prev);
                self.err(pos, &path, format!("duplicate name `{n}`: a frontend or listen section with this name is already defined at line {l}"));
            }
            if matches!(kind, Kind::Backend | Kind::Listen)
                && let Some(prev) = be_names.insert(n.clone(), pos)
            {
                let (l, _) = self.src.line_col(prev);
                self.err(pos, &path, format!("duplicate name `{n}`: a backend or listen section with this name is already defined at line {l}"));
            }
        }

        let caches = self.caches(&raw.cache);

        let mut fes: Vec<FeDraft> = Vec::new();
        let mut bes: Vec<BeDraft> = Vec::new();
        for (kind, name, rp) in &sections {
            let path = format!("{}.{}", kind.name(), name.get_ref());
            let settings = self.proxy_settings(rp, &path, *kind, &inherit);
            if matches!(kind, Kind::Backend | Kind::Listen) {
                let be = self.backend(name, rp, &path, &settings, *kind);
                bes.push(be);
            }
            if matches!(kind, Kind::Frontend | Kind::Listen) {
                let fe = self.frontend(name, rp, &path, &settings, *kind, dataplane.is_some());
                fes.push(fe);
            }
        }

        self.cross_checks(&mut fes, &bes, dataplane.as_ref());
        self.check_stick_tables(&fes, &bes);
        self.cache_refs(&fes, &bes, &caches);
        let announce = raw
            .announce
            .as_ref()
            .map(|a| self.announce(a, &fes, dataplane.as_ref()));

        if fes.is_empty() {
            self.warn(
                0,
                "",
                "no frontend or listen section: nothing will accept traffic",
            );
        }

        Config {
            source: self.src.path.clone(),
            global,
            dataplane,
            announce,
            frontends: fes.into_iter().map(|f| f.fe).collect(),
            backends: bes.into_iter().map(|b| b.be).collect(),
            resolvers,
            caches,
        }
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    }
}

fn item_path(key: &str, l: &List, i: usize) -> String {
    if l.is_many() {
        format!("{key}[{i}]")
    } else {
        key.to_string()
    }
}
