//! From the serde model to the validated [`Config`]: defaults inheritance, directive
//! parsing, cross-references, tiers, certificates, and every problem with its location.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use super::diag::{ConfigErrors, Diagnostic, Severity};
use super::directives::{self as d, Args, RuleSide, TcpLine};
use super::keys::{RawProxy, Section as Kind, proxy_key};
use super::model::*;
use super::raw::{Item, List, RawDataplane, RawFile, RawGlobal, S, V};
use super::source::{Problem, Source, Str, Tok, key_path_at, tokenize};
use super::suggest::hint;
use super::{DEFAULT_HASH_SEED, DEFAULT_SSL_CACHE_SIZE, LoadOptions};
use crate::acl::{AclSet, Condition, FormatString};

/// HAProxy's predefined ACLs.
const PREDEFINED_ACLS: &[&str] = &[
    "FALSE",
    "HTTP",
    "HTTP_1.0",
    "HTTP_1.1",
    "HTTP_2.0",
    "HTTP_3.0",
    "HTTP_CONTENT",
    "HTTP_URL_ABS",
    "HTTP_URL_SLASH",
    "HTTP_URL_STAR",
    "LOCALHOST",
    "METH_CONNECT",
    "METH_DELETE",
    "METH_GET",
    "METH_HEAD",
    "METH_OPTIONS",
    "METH_POST",
    "METH_PUT",
    "METH_TRACE",
    "RDP_COOKIE",
    "REQ_CONTENT",
    "TRUE",
    "WAIT_END",
];

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
    ("verify", K::Val("verify")),
    ("ca_file", K::Val("ca-file")),
    ("ca_verify_file", K::Val("ca-verify-file")),
    ("crl_file", K::Val("crl-file")),
    ("ssl_min_ver", K::Val("ssl-min-ver")),
    ("ssl_max_ver", K::Val("ssl-max-ver")),
    ("ciphersuites", K::Val("ciphersuites")),
    ("ciphers", K::Val("ciphers")),
    ("prefer_client_ciphers", K::Flag("prefer-client-ciphers")),
];
const SERVER: Spec = &[
    ("name", K::Pos),
    ("addr", K::Pos),
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
];
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
    maxconn: Option<u32>,
    check: CheckSpec,
    check_timeout_set: bool,
    cookie: Option<CookieSpec>,
    errorfiles: BTreeMap<u16, Vec<u8>>,
    default_backend: Option<(String, usize)>,
    max_header_bytes: usize,
    max_headers: usize,
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
            maxconn: None,
            check: CheckSpec::default(),
            check_timeout_set: false,
            cookie: None,
            errorfiles: BTreeMap::new(),
            default_backend: None,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

struct Builder<'a> {
    src: &'a Source,
    opts: &'a LoadOptions,
    diags: Vec<Diagnostic>,
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

    fn config(&mut self, raw: &RawFile) -> Config {
        let global = self.global(raw.global.as_ref());
        let dataplane = raw.dataplane.as_ref().map(|d| self.dataplane(d));
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
            frontends: fes.into_iter().map(|f| f.fe).collect(),
            backends: bes.into_iter().map(|b| b.be).collect(),
        }
    }

    // ---- [global] and [dataplane] ----

    fn global(&mut self, g: Option<&Spanned<RawGlobal>>) -> Global {
        let mut out = Global {
            admin: SocketAddr::from(([127, 0, 0, 1], 9100)),
            admin_token: None,
            admin_hosts: Vec::new(),
            log_format: LogFormat::Haproxy,
            threads: None,
            cpu_map: None,
            hash_seed: DEFAULT_HASH_SEED,
            ssl_cache_size: DEFAULT_SSL_CACHE_SIZE,
        };
        let Some(g) = g else { return out };
        let g = g.get_ref();
        if let Some(a) = &g.admin {
            let s = self.src.str(a);
            match a.get_ref().parse::<SocketAddr>() {
                Ok(addr) => out.admin = addr,
                Err(_) => self.err(
                    s.pos(0),
                    "global.admin",
                    format!(
                        "`{}` is not an address (expected IP:PORT, e.g. 127.0.0.1:9100)",
                        a.get_ref()
                    ),
                ),
            }
        }
        out.admin_token = g.admin_token.as_ref().map(|t| t.get_ref().clone());
        if let Some(t) = &g.admin_token
            && t.get_ref().trim().is_empty()
        {
            // `lb run` would take an empty token for none: refuse it here, as run does.
            self.err(
                t.span().start,
                "global.admin_token",
                "`admin_token` is empty: set a secret, or remove the key on a loopback `admin`",
            );
        }
        if !out.admin.ip().to_canonical().is_loopback()
            && out.admin_token.is_none()
            && let Some(a) = &g.admin
        {
            self.err(
                a.span().start,
                "global.admin",
                "a non-loopback admin address needs `admin_token`",
            );
        }
        if let Some(list) = &g.admin_hosts {
            for (i, span, item) in list.get_ref().items(&list.span()) {
                let path = item_path("global.admin_hosts", list.get_ref(), i);
                match item {
                    Item::Line(name) if valid_host_name(name) => {
                        out.admin_hosts.push(name.to_ascii_lowercase());
                    }
                    _ => self.err(
                        span.start,
                        &path,
                        "expected a host name without port, e.g. \"lb1.example.net\"",
                    ),
                }
            }
        }
        if let Some(f) = &g.log_format {
            match f.get_ref().as_str() {
                "haproxy" => out.log_format = LogFormat::Haproxy,
                "json" => out.log_format = LogFormat::Json,
                other => {
                    let h = hint(other, ["haproxy", "json"]);
                    self.err(
                        f.span().start,
                        "global.log_format",
                        format!(
                            "unknown log format `{other}` (expected \"haproxy\" or \"json\"){h}"
                        ),
                    );
                }
            }
        }
        if let Some(n) = self.int_in(&g.threads, "global.threads", 1..=1024usize) {
            out.threads = Some(n);
        }
        if let Some(n) = self.int_in(&g.hash_seed, "global.hash_seed", 0..=u32::MAX) {
            out.hash_seed = n;
        }
        if let Some(m) = &g.cpu_map {
            out.cpu_map = self.cpu_map(m);
        }
        if let Some(n) = self.int_in(
            &g.ssl_cache_size,
            "global.ssl_cache_size",
            0..=100_000_000usize,
        ) {
            out.ssl_cache_size = n;
        }
        out
    }

    /// `cpu_map = "auto"` or a list of CPU numbers, each one lb may run on here.
    fn cpu_map(&mut self, m: &V) -> Option<CpuMap> {
        const PATH: &str = "global.cpu_map";
        const EXPECTED: &str = "expected \"auto\" or a list of CPU numbers, e.g. [0, 1]";
        let at = m.span().start;
        match m.get_ref() {
            toml::Value::String(s) if s == "auto" => Some(CpuMap::Auto),
            toml::Value::Array(items) if !items.is_empty() => {
                let allowed = crate::cpus::allowed();
                let mut cpus = Vec::with_capacity(items.len());
                for item in items {
                    let cpu = item
                        .as_integer()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| *n < crate::cpus::MAX_CPUS);
                    let Some(cpu) = cpu else {
                        self.err(
                            at,
                            PATH,
                            format!("`{item}` is not a CPU number ({EXPECTED})"),
                        );
                        return None;
                    };
                    if !allowed.contains(&cpu) {
                        self.err(
                            at,
                            PATH,
                            format!(
                                "CPU {cpu} is not available to lb on this host (it may run on {})",
                                crate::cpus::describe(&allowed)
                            ),
                        );
                        return None;
                    }
                    cpus.push(cpu);
                }
                Some(CpuMap::List(cpus))
            }
            other => {
                self.err(at, PATH, format!("`{other}`: {EXPECTED}"));
                None
            }
        }
    }

    fn dataplane(&mut self, d: &Spanned<RawDataplane>) -> Dataplane {
        let dp = d.get_ref();
        let stem = self
            .src
            .path
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .chars()
                    .map(|c| {
                        if lb_common::maps::pin_name_char_ok(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "lb".to_string());
        let mut out = Dataplane {
            interfaces: Vec::new(),
            xdp_mode: XdpMode::Auto,
            conntrack_size: lb_common::maps::DEFAULT_CONNTRACK_SIZE,
            maglev_table_size: lb_common::maps::DEFAULT_MAGLEV_SIZE,
            deny_src: Vec::new(),
            pin_path: Path::new(lb_common::maps::DEFAULT_PIN_ROOT).join(stem),
        };
        match &dp.interfaces {
            None => self.err(
                d.span().start,
                "dataplane.interfaces",
                "missing `interfaces`: the XDP tier needs at least one network interface",
            ),
            Some(list) => {
                for (i, span, item) in list.get_ref().items(&list.span()) {
                    let path = item_path("dataplane.interfaces", list.get_ref(), i);
                    let Item::Line(name) = item else {
                        self.err(span.start, &path, "expected an interface name");
                        continue;
                    };
                    let s = self.src.str_at(name, span);
                    if out.interfaces.contains(name) {
                        self.err(
                            s.pos(0),
                            &path,
                            format!("interface `{name}` is listed twice"),
                        );
                        continue;
                    }
                    if !self.opts.interfaces.exists(name) {
                        let known = self.opts.interfaces.names();
                        let h = hint(name, known.iter().map(String::as_str));
                        self.err(
                            s.pos(0),
                            &path,
                            format!("network interface `{name}` does not exist{h}"),
                        );
                    }
                    out.interfaces.push(name.clone());
                }
                if out.interfaces.is_empty() && !list.get_ref().is_many() {
                    // a single string was handled above
                } else if out.interfaces.is_empty() {
                    self.err(
                        list.span().start,
                        "dataplane.interfaces",
                        "`interfaces` is empty: the XDP tier needs at least one network interface",
                    );
                }
            }
        }
        if let Some(m) = &dp.xdp_mode {
            out.xdp_mode = match m.get_ref().as_str() {
                "native" => XdpMode::Native,
                "generic" => XdpMode::Generic,
                "auto" => XdpMode::Auto,
                other => {
                    let h = hint(other, ["native", "generic", "auto"]);
                    self.err(
                        m.span().start,
                        "dataplane.xdp_mode",
                        format!("unknown xdp_mode `{other}` (expected native, generic or auto){h}"),
                    );
                    XdpMode::Auto
                }
            };
        }
        if let Some(n) = self.int_in(
            &dp.conntrack_size,
            "dataplane.conntrack_size",
            1024..=u32::MAX,
        ) {
            out.conntrack_size = n;
        }
        if let Some(m) = &dp.maglev_table_size {
            match u32::try_from(*m.get_ref()) {
                Ok(n) if is_prime(n) && n >= 251 => out.maglev_table_size = n,
                _ => self.err(
                    m.span().start,
                    "dataplane.maglev_table_size",
                    format!(
                        "maglev_table_size must be a prime of at least 251 (e.g. 65537), not {}",
                        m.get_ref()
                    ),
                ),
            }
        }
        if let Some(list) = &dp.deny_src {
            out.deny_src = self.cidrs(list, "dataplane.deny_src");
        }
        if let Some(p) = &dp.pin_path {
            let path = PathBuf::from(p.get_ref());
            if !path.is_absolute() {
                self.err(
                    p.span().start,
                    "dataplane.pin_path",
                    "pin_path must be an absolute path on a bpffs mount",
                );
            } else if let Some(problem) = pin_path_problem(&path) {
                self.err(p.span().start, "dataplane.pin_path", problem);
            }
            out.pin_path = path;
        }
        out
    }

    fn cidrs(&mut self, list: &Spanned<List>, key: &str) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, span, item) in list.get_ref().items(&list.span()) {
            let path = item_path(key, list.get_ref(), i);
            let Item::Line(text) = item else {
                self.err(
                    span.start,
                    &path,
                    "expected a network like \"192.0.2.0/24\"",
                );
                continue;
            };
            let s = self.src.str_at(text, span);
            let toks = match tokenize(&s) {
                Ok(t) => t,
                Err(p) => {
                    self.problem(p, &path);
                    continue;
                }
            };
            if toks.is_empty() {
                self.err(s.pos(0), &path, "empty network");
            }
            for t in &toks {
                match d::cidr(t) {
                    Ok(n) => out.push(n),
                    Err(p) => self.problem(p, &path),
                }
            }
        }
        out
    }

    // ---- directives ----

    /// Turns a list item into a directive (line syntax or table per `spec`).
    fn dir(
        &mut self,
        item: &Item,
        span: Range<usize>,
        spec: Spec,
        cond: bool,
        path: &str,
    ) -> Option<Dir> {
        match item {
            Item::Line(line) => {
                let s = self.src.str_at(line, span);
                let mut toks = match tokenize(&s) {
                    Ok(t) => t,
                    Err(p) => {
                        self.problem(p, path);
                        return None;
                    }
                };
                let text = Mapped::from_str(&s, 0);
                let mut end = s.pos(s.value.trim_end().len());
                let mut c = None;
                if cond
                    && let Some(i) = toks
                        .iter()
                        .position(|t| t.text == "if" || t.text == "unless")
                {
                    c = Some(Mapped::from_str(&s, toks[i].off));
                    end = toks[i].pos;
                    toks.truncate(i);
                }
                Some(Dir {
                    toks,
                    cond: c,
                    end,
                    text,
                })
            }
            Item::Table(fields) => self.table_dir(fields, span, spec, cond, path),
            Item::Other => {
                self.err(
                    span.start,
                    path,
                    "expected a string (HAProxy line syntax) or a table",
                );
                None
            }
        }
    }

    fn table_dir(
        &mut self,
        fields: &[(S, V)],
        span: Range<usize>,
        spec: Spec,
        cond: bool,
        path: &str,
    ) -> Option<Dir> {
        let mut ok = true;
        let mut allowed: Vec<&str> = spec.iter().map(|(k, _)| *k).collect();
        if cond {
            allowed.extend(["if", "unless"]);
        }
        for (k, _) in fields {
            if !allowed.contains(&k.get_ref().as_str()) {
                let h = hint(k.get_ref(), allowed.iter().copied());
                let msg = if h.is_empty() {
                    format!(
                        "unknown key `{}` (expected one of: {})",
                        k.get_ref(),
                        allowed.join(", ")
                    )
                } else {
                    format!("unknown key `{}`{h}", k.get_ref())
                };
                self.err(k.span().start, &format!("{path}.{}", k.get_ref()), msg);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let mut toks = Vec::new();
        let kw = |text: &str, pos: usize| Tok {
            text: text.to_string(),
            pos,
            off: 0,
        };
        for (key, kind) in spec {
            let Some((k, v)) = fields.iter().find(|(k, _)| k.get_ref() == key) else {
                continue;
            };
            let kpath = format!("{path}.{key}");
            let kpos = k.span().start;
            let vpos = v.span().start;
            let words =
                |b: &mut Self, val: &toml::Value, pos: usize, split: bool| -> Option<Vec<Tok>> {
                    match val {
                        toml::Value::String(s) => {
                            let st = b.src.str_at(s, pos..pos + s.len() + 2);
                            if split {
                                match tokenize(&st) {
                                    Ok(t) => Some(t),
                                    Err(p) => {
                                        b.problem(p, &kpath);
                                        None
                                    }
                                }
                            } else {
                                Some(vec![Tok {
                                    text: s.clone(),
                                    pos: st.pos(0),
                                    off: 0,
                                }])
                            }
                        }
                        toml::Value::Integer(n) => Some(vec![Tok {
                            text: n.to_string(),
                            pos,
                            off: 0,
                        }]),
                        toml::Value::Array(a) => {
                            let mut out = Vec::new();
                            for e in a {
                                match e {
                                    toml::Value::String(s) => out.push(Tok {
                                        text: s.clone(),
                                        pos,
                                        off: 0,
                                    }),
                                    toml::Value::Integer(n) => out.push(Tok {
                                        text: n.to_string(),
                                        pos,
                                        off: 0,
                                    }),
                                    _ => {
                                        b.err(pos, &kpath, "expected strings");
                                        return None;
                                    }
                                }
                            }
                            Some(out)
                        }
                        _ => {
                            b.err(pos, &kpath, "expected a string or a number");
                            None
                        }
                    }
                };
            match kind {
                K::Pos | K::Words => {
                    toks.extend(words(self, v.get_ref(), vpos, matches!(kind, K::Words))?);
                }
                K::Val(w) => {
                    toks.push(kw(w, kpos));
                    toks.extend(words(self, v.get_ref(), vpos, false)?);
                }
                K::Flag(w) => match v.get_ref() {
                    toml::Value::Boolean(true) => toks.push(kw(w, kpos)),
                    toml::Value::Boolean(false) => {}
                    _ => {
                        self.err(vpos, &kpath, format!("`{key}` must be true or false"));
                        return None;
                    }
                },
                K::Multi(w) => {
                    for t in words(self, v.get_ref(), vpos, false)? {
                        toks.push(kw(w, t.pos));
                        toks.push(t);
                    }
                }
                K::Joined(w) => {
                    let ws = words(self, v.get_ref(), vpos, false)?;
                    toks.push(kw(w, kpos));
                    if *w == "http" {
                        // "GET /healthz" → two words
                        for t in ws {
                            let st = self
                                .src
                                .str_at(&t.text, t.pos.saturating_sub(1)..t.pos + t.text.len() + 1);
                            match tokenize(&st) {
                                Ok(mut more) => toks.append(&mut more),
                                Err(p) => {
                                    self.problem(p, &kpath);
                                    return None;
                                }
                            }
                        }
                    } else {
                        let joined: Vec<String> = ws.iter().map(|t| t.text.clone()).collect();
                        toks.push(Tok {
                            text: joined.join(","),
                            pos: vpos,
                            off: 0,
                        });
                    }
                }
            }
        }
        let mut c = None;
        if cond {
            let ifs: Vec<&(S, V)> = fields
                .iter()
                .filter(|(k, _)| k.get_ref() == "if" || k.get_ref() == "unless")
                .collect();
            if ifs.len() > 1 {
                self.err(
                    ifs[1].0.span().start,
                    &format!("{path}.{}", ifs[1].0.get_ref()),
                    "use either `if` or `unless`, not both",
                );
                return None;
            }
            if let Some((k, v)) = ifs.first() {
                let toml::Value::String(s) = v.get_ref() else {
                    self.err(
                        v.span().start,
                        &format!("{path}.{}", k.get_ref()),
                        "a condition must be a string",
                    );
                    return None;
                };
                let st = self.src.str_at(s, v.span());
                let mut m = Mapped::default();
                m.push(k.get_ref(), k.span().start, false);
                m.segs.push((m.text.len() + 1, st.pos(0), st.linear()));
                m.text.push(' ');
                m.text.push_str(s);
                c = Some(m);
            }
        }
        let text = Mapped::from_toks(&toks);
        Some(Dir {
            toks,
            cond: c,
            end: span.start,
            text,
        })
    }

    /// An integer setting at `path` (its last component names it in the error) that must lie
    /// in `range`; `None` when absent or reported as out of range.
    fn int_in<T>(
        &mut self,
        v: &Option<Spanned<i64>>,
        path: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Option<T>
    where
        T: TryFrom<i64> + PartialOrd + std::fmt::Display,
    {
        let v = v.as_ref()?;
        match T::try_from(*v.get_ref()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                let key = path.rsplit('.').next().unwrap_or(path);
                self.err(
                    v.span().start,
                    path,
                    format!("{key} must be from {} to {}", range.start(), range.end()),
                );
                None
            }
        }
    }

    /// The items of list key `key` under `path` (one line, or a list of lines): index, the
    /// item's path (`path.key`, or `path.key[i]` in a list), span and item.
    fn items<'r>(
        &self,
        l: &'r Option<Spanned<List>>,
        path: &str,
        key: &str,
    ) -> Vec<(usize, String, Range<usize>, &'r Item)> {
        let Some(l) = l else {
            return Vec::new();
        };
        let many = l.get_ref().is_many();
        l.get_ref()
            .items(&l.span())
            .into_iter()
            .map(|(i, span, item)| {
                let ipath = if many {
                    format!("{path}.{key}[{i}]")
                } else {
                    format!("{path}.{key}")
                };
                (i, ipath, span, item)
            })
            .collect()
    }

    /// The items of `key` under `path` tokenized as directives of `spec` (`cond`: they may
    /// end in `if`/`unless`), with their paths; items that fail to tokenize are reported
    /// and skipped.
    fn dirs(
        &mut self,
        l: &Option<Spanned<List>>,
        path: &str,
        key: &str,
        spec: Spec,
        cond: bool,
    ) -> Vec<(String, Dir)> {
        let mut out = Vec::new();
        for (_, ipath, span, item) in self.items(l, path, key) {
            if let Some(dir) = self.dir(item, span, spec, cond, &ipath) {
                out.push((ipath, dir));
            }
        }
        out
    }

    /// Settings shared by every kind of section, on top of `base`.
    fn proxy_settings(&mut self, rp: &RawProxy, path: &str, kind: Kind, base: &Inherit) -> Inherit {
        let mut out = base.clone();
        // keys that do not belong in this kind of section
        for (key, pos) in rp.present() {
            if let Some(k) = proxy_key(key).filter(|k| !k.allowed_in(kind)) {
                let where_ = kind.described();
                self.err(
                    pos,
                    &format!("{path}.{key}"),
                    format!(
                        "`{key}` is not allowed in {where_}; it belongs in {}",
                        k.belongs()
                    ),
                );
            }
        }
        // Written by `lb convert` for a rule that restricts access and that it could not
        // carry over: never run without it, never run with it.
        for (_, ipath, span, item) in self.items(&rp.unconverted, path, "unconverted") {
            let what = match item {
                Item::Line(t) => format!(" ({t})"),
                _ => String::new(),
            };
            self.err(
                span.start,
                &ipath,
                format!(
                    "a rule that restricts access was not converted from HAProxy{what}: lb would let through what HAProxy refuses, so it does not run with this entry; write the rule in lb's terms (or decide to drop it) and delete the entry"
                ),
            );
        }
        if let Some(m) = &rp.mode {
            match m.get_ref().as_str() {
                "tcp" => out.mode = Mode::Tcp,
                "http" => out.mode = Mode::Http,
                other => {
                    let h = hint(other, ["tcp", "http"]);
                    self.err(
                        m.span().start,
                        &format!("{path}.mode"),
                        format!("unknown mode `{other}` (expected \"tcp\" or \"http\"){h}"),
                    );
                }
            }
        }
        for (_, ipath, span, item) in self.items(&rp.timeout, path, "timeout") {
            self.timeouts(item, span, &ipath, &mut out.timeouts);
        }
        if let Some(b) = &rp.balance
            && kind != Kind::Frontend
        {
            match d::balance(&self.src.str(b)) {
                Ok(x) => out.balance = x,
                Err(p) => self.problem(p, &format!("{path}.balance")),
            }
        }
        if let Some(n) = self.int_in(&rp.retries, &format!("{path}.retries"), 0..=100u32) {
            out.retries = n;
        }
        if let Some(n) = self.int_in(&rp.maxconn, &format!("{path}.maxconn"), 1..=u32::MAX) {
            out.maxconn = Some(n);
        }
        for (key, v, slot) in [
            (
                "max_header_bytes",
                &rp.max_header_bytes,
                &mut out.max_header_bytes,
            ),
            ("max_headers", &rp.max_headers, &mut out.max_headers),
        ] {
            if let Some(n) = self.int_in(v, &format!("{path}.{key}"), 1..=1usize << 20) {
                *slot = n;
            }
        }
        for (ipath, dir) in self.dirs(&rp.option, path, "option", LINE_ONLY, false) {
            self.option(&dir, &ipath, &mut out);
        }
        if let Some(l) = &rp.log {
            match l.get_ref() {
                toml::Value::Boolean(b) => out.log = *b,
                toml::Value::String(_) | toml::Value::Array(_) => out.log = true,
                _ => self.err(
                    l.span().start,
                    &format!("{path}.log"),
                    "log must be true, false, \"global\" or a list of log targets",
                ),
            }
        }
        for (ipath, dir) in self.dirs(&rp.errorfile, path, "errorfile", ERRORFILE, false) {
            if let Some((code, body)) = self.errorfile(&dir, &ipath) {
                out.errorfiles.insert(code, body);
            }
        }
        if let Some(db) = &rp.default_backend
            && matches!(kind, Kind::Defaults | Kind::Frontend | Kind::Listen)
        {
            out.default_backend = Some((db.get_ref().clone(), self.src.str(db).pos(0)));
        }
        if kind != Kind::Frontend {
            for (i, ipath, span, item) in self.items(&rp.cookie, path, "cookie") {
                if i > 0 {
                    self.err(span.start, &ipath, "only one cookie per backend");
                    continue;
                }
                let Some(dir) = self.dir(item, span, COOKIE, false, &ipath) else {
                    continue;
                };
                match d::cookie(&mut dir.args()) {
                    Ok(c) => out.cookie = Some(c),
                    Err(p) => self.problem(p, &ipath),
                }
            }
            let mut spec = out.check.clone();
            let mut set = out.check_timeout_set;
            for (ipath, dir) in self.dirs(&rp.check, path, "check", CHECK, false) {
                match d::check(&mut dir.args(), spec.clone()) {
                    Ok((s, t)) => {
                        spec = s;
                        set |= t;
                    }
                    Err(p) => self.problem(p, &ipath),
                }
            }
            out.check = spec;
            out.check_timeout_set = set;
        }
        out
    }

    fn option(&mut self, dir: &Dir, path: &str, out: &mut Inherit) {
        let mut args = dir.args();
        let Some(t) = args.next() else {
            self.err(dir.end, path, "empty option");
            return;
        };
        let (neg, name) = match t.text.as_str() {
            "no" => match args.next() {
                Some(n) => (true, n),
                None => {
                    self.err(t.pos, path, "`no` needs an option name");
                    return;
                }
            },
            _ => (false, t),
        };
        match name.text.as_str() {
            "forwardfor" => out.forwardfor = !neg,
            "redispatch" => out.redispatch = !neg,
            "httplog" | "tcplog" => out.log = !neg,
            "dontlognull" | "http-keep-alive" | "http-server-close" | "splice-auto" => {}
            "httpchk" => {
                self.err(
                    name.pos,
                    path,
                    "`option httpchk` is written `check = { http = \"GET /path\" }` in the backend",
                );
                return;
            }
            other => {
                let known = [
                    "forwardfor",
                    "redispatch",
                    "httplog",
                    "tcplog",
                    "dontlognull",
                    "http-keep-alive",
                    "http-server-close",
                    "httpchk",
                ];
                let h = hint(other, known);
                self.err(name.pos, path, format!("unsupported option `{other}`{h}"));
                return;
            }
        }
        if let Err(p) = args.done() {
            self.problem(p, path);
        }
    }

    fn timeouts(&mut self, item: &Item, span: Range<usize>, path: &str, t: &mut Timeouts) {
        let mut set =
            |b: &mut Self, name: &str, pos: usize, value: Result<Duration, Problem>, p: &str| {
                let slot = match name.replace('_', "-").as_str() {
                    "client" => &mut t.client,
                    "connect" => &mut t.connect,
                    "server" => &mut t.server,
                    "http-request" => &mut t.http_request,
                    "http-keep-alive" => &mut t.http_keep_alive,
                    "queue" => &mut t.queue,
                    "tunnel" => &mut t.tunnel,
                    "check" => &mut t.check,
                    other => {
                        let h = hint(other, d::TIMEOUT_NAMES.iter().copied());
                        b.err(pos, p, format!("unknown timeout `{other}`{h}"));
                        return;
                    }
                };
                match value {
                    Ok(v) => *slot = Some(v),
                    Err(pr) => b.problem(pr, p),
                }
            };
        match item {
            Item::Table(fields) => {
                for (k, v) in fields {
                    let kp = format!("{path}.{}", k.get_ref());
                    let val = match v.get_ref() {
                        toml::Value::String(s) => {
                            let st = self.src.str_at(s, v.span());
                            d::parse_duration(s).map_err(|m| Problem::new(st.pos(0), m))
                        }
                        toml::Value::Integer(n) if *n >= 0 => {
                            Ok(Duration::from_millis(n.unsigned_abs()))
                        }
                        _ => Err(Problem::new(
                            v.span().start,
                            "a timeout is a duration like \"5s\" or a number of milliseconds",
                        )),
                    };
                    set(self, k.get_ref(), k.span().start, val, &kp);
                }
            }
            _ => {
                let Some(dir) = self.dir(item, span, LINE_ONLY, false, path) else {
                    return;
                };
                let mut args = dir.args();
                let Ok(name) = args.want("timeout name") else {
                    self.err(dir.end, path, "missing timeout name");
                    return;
                };
                let val = args.want("duration").and_then(d::duration_tok);
                let val = val.and_then(|v| args.done().map(|_| v));
                set(self, &name.text, name.pos, val, path);
            }
        }
    }

    fn errorfile(&mut self, dir: &Dir, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut args = dir.args();
        let code_t = match args.want("status code") {
            Ok(t) => t,
            Err(p) => {
                self.problem(p, path);
                return None;
            }
        };
        let code: Option<u16> = code_t
            .text
            .parse()
            .ok()
            .filter(|c| d::ERRORFILE_CODES.contains(c));
        let Some(code) = code else {
            let list: Vec<String> = d::ERRORFILE_CODES.iter().map(u16::to_string).collect();
            self.err(
                code_t.pos,
                path,
                format!(
                    "errorfile status must be one of {}, not `{}`",
                    list.join(", "),
                    code_t.text
                ),
            );
            return None;
        };
        let p = match args.want("file path").and_then(|p| args.done().map(|_| p)) {
            Ok(p) => p,
            Err(pr) => {
                self.problem(pr, path);
                return None;
            }
        };
        let file = self.resolve_path(&p.text);
        match std::fs::read(&file) {
            Ok(body) => Some((code, body)),
            Err(e) => {
                self.err(
                    p.pos,
                    path,
                    format!("cannot read errorfile `{}`: {e}", p.text),
                );
                None
            }
        }
    }

    /// A server line's `ssl` options, checked as HAProxy checks them: `verify`, `ca-file`
    /// and `sni` need `ssl`; `verify required` (the default) needs a `ca-file`, which must
    /// hold certificates.
    fn server_tls(&mut self, line: &d::ServerLine, ipath: &str) -> Option<ServerTls> {
        let Some(ssl) = &line.ssl else {
            for (what, tok) in [
                ("verify", line.verify.as_ref().map(|(_, t)| t)),
                ("ca-file", line.ca_file.as_ref()),
                ("sni", line.sni.as_ref().map(|(_, t)| t)),
            ] {
                if let Some(t) = tok {
                    self.err(
                        t.pos,
                        ipath,
                        format!("`{what}` needs `ssl` on the server line"),
                    );
                }
            }
            return None;
        };
        let verify = line.verify.as_ref().is_none_or(|(v, _)| *v);
        let ca_file = line
            .ca_file
            .as_ref()
            .map(|t| (self.resolve_path(&t.text), t));
        if let Some((path, t)) = &ca_file
            && let Err(e) = crate::tls_client::load_roots(path)
        {
            self.err(t.pos, ipath, e.to_string());
            return None;
        }
        if verify && ca_file.is_none() {
            self.err(
                ssl.pos,
                ipath,
                format!(
                    "server `{}`: `ssl` verifies the server's certificate by default, but no \
                     `ca-file` is given: add `ca-file PATH`, or `verify none` where the network \
                     is trusted (HAProxy refuses this line too)",
                    line.name.text
                ),
            );
            return None;
        }
        Some(ServerTls {
            verify,
            ca_file: ca_file.map(|(p, _)| p),
            sni: line.sni.as_ref().map(|(n, _)| n.clone()),
        })
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        match &self.opts.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        }
    }

    /// A bind's `ca-file`, `ca-verify-file` or `crl-file`, resolved and read now so a bad
    /// one is reported at its place (the L7 tier reads it again when it starts or reloads).
    fn tls_file(&mut self, p: &Path, t: &Tok, path: &str, opt: &str) -> PathBuf {
        let resolved = self.resolve_path(&p.to_string_lossy());
        let checked = if opt == "crl-file" {
            crate::tls_client::load_crls(&resolved).map(drop)
        } else {
            crate::tls_client::load_roots(&resolved).map(drop)
        };
        if let Err(e) = checked {
            self.err(t.pos, path, format!("{opt} `{}`: {e}", t.text));
        }
        resolved
    }

    // ---- ACLs and conditions ----

    fn acls(
        &mut self,
        rp: &RawProxy,
        path: &str,
        acls: &mut AclSet,
        names: &mut Vec<String>,
        nbsrv: &mut Vec<(String, usize, String)>,
    ) {
        for (ipath, dir) in self.dirs(&rp.acl, path, "acl", ACL, false) {
            let Some(name) = dir.toks.first() else {
                self.err(dir.end, &ipath, "missing ACL name");
                continue;
            };
            if dir.toks.len() < 2 {
                self.err(
                    dir.end,
                    &ipath,
                    format!("missing fetch after ACL name `{}`", name.text),
                );
                continue;
            }
            if !name
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
            {
                self.err(
                    name.pos,
                    &ipath,
                    format!(
                        "invalid ACL name `{}`: use letters, digits, `-`, `_`, `.` and `:`",
                        name.text
                    ),
                );
                continue;
            }
            collect_nbsrv(&dir.toks[1..], &ipath, nbsrv);
            if !names.contains(&name.text) {
                names.push(name.text.clone());
            }
            if let Err(e) = acls.define(&dir.text.text) {
                self.err(dir.text.pos(e.offset), &ipath, e.message);
            }
        }
    }

    /// Checks ACL names in a condition, then compiles it.
    /// Compiles an `if`/`unless` condition; `response`: of an `http-response` rule, the
    /// only place response fetches (`status`, `res.hdr`) are available.
    #[allow(clippy::too_many_arguments)]
    fn condition(
        &mut self,
        cond: &Mapped,
        acls: &AclSet,
        names: &[String],
        path: &str,
        nbsrv: &mut Vec<(String, usize, String)>,
        response: bool,
    ) -> Option<Condition> {
        let mut ok = true;
        let mut depth = 0usize;
        let mut first = true;
        let split = match crate::acl::split_words(&cond.text, true) {
            Ok(s) => s,
            Err(e) => {
                self.err(cond.pos(e.offset), path, e.message);
                return None;
            }
        };
        let words: Vec<(usize, &str)> = split
            .words
            .iter()
            .map(|w| (w.start, w.text.as_str()))
            .collect();
        if words.len() < 2 {
            self.err(
                cond.pos(cond.text.len()),
                path,
                format!("missing condition after `{}`", cond.text.trim()),
            );
            return None;
        }
        let mut anon = Vec::new();
        for (off, w) in words {
            if first {
                first = false;
                continue;
            }
            let mut w = w;
            let mut off = off;
            if depth == 0 {
                let t = w.trim_start_matches('!');
                off += w.len() - t.len();
                w = t;
                if w.is_empty() {
                    continue;
                }
            }
            if let Some(rest) = w.strip_prefix('{') {
                depth += 1;
                w = rest;
                off += 1;
                if w.is_empty() {
                    continue;
                }
            }
            if depth > 0 {
                if let Some(rest) = w.strip_suffix('}') {
                    depth -= 1;
                    w = rest;
                }
                anon.push(Tok {
                    text: w.to_string(),
                    pos: cond.pos(off),
                    off: 0,
                });
                continue;
            }
            if matches!(w, "or" | "||" | "!" | "}") {
                continue;
            }
            let name = w.trim_start_matches('!');
            let noff = off + (w.len() - name.len());
            if names.iter().any(|n| n == name) || PREDEFINED_ACLS.contains(&name) {
                continue;
            }
            let h = hint(name, names.iter().map(String::as_str));
            self.err(cond.pos(noff), path, format!("undefined ACL `{name}`{h}"));
            ok = false;
        }
        collect_nbsrv(&anon, path, nbsrv);
        if !ok {
            return None;
        }
        match Condition::compile(&cond.text, acls) {
            Ok(c) => match c.response_fetch() {
                Some(kw) if !response => {
                    self.err(
                        cond.pos(0),
                        path,
                        format!(
                            "the condition uses `{kw}`, a response fetch: only http_response rules can"
                        ),
                    );
                    None
                }
                _ => Some(c),
            },
            Err(e) => {
                self.err(cond.pos(e.offset), path, e.message);
                None
            }
        }
    }

    // ---- sections ----

    fn backend(
        &mut self,
        name: &S,
        rp: &RawProxy,
        path: &str,
        st: &Inherit,
        kind: Kind,
    ) -> BeDraft {
        let mut servers: Vec<Server> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (ipath, dir) in self.dirs(&rp.server, path, "server", SERVER, false) {
            let line = match d::server(&mut dir.args()) {
                Ok(l) => l,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            if let Some(prev) = seen.insert(line.name.text.clone(), line.name.pos) {
                let (l, _) = self.src.line_col(prev);
                self.err(
                    line.name.pos,
                    &ipath,
                    format!(
                        "duplicate server name `{}` (already defined at line {l})",
                        line.name.text
                    ),
                );
                continue;
            }
            let addr = match (self.opts.resolver)(&line.host, line.port) {
                Ok(addrs) if !addrs.is_empty() => addrs[0],
                Ok(_) => {
                    self.err(
                        line.addr_tok.pos,
                        &ipath,
                        format!(
                            "server `{}`: host `{}` has no address",
                            line.name.text, line.host
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    self.err(
                        line.addr_tok.pos,
                        &ipath,
                        format!(
                            "server `{}`: cannot resolve `{}`: {e}",
                            line.name.text, line.host
                        ),
                    );
                    continue;
                }
            };
            let tls = self.server_tls(&line, &ipath);
            if let (Some((_, t)), Some((ServerProto::Http2, _))) = (&line.send_proxy, &line.proto) {
                self.err(
                    t.pos,
                    &ipath,
                    "`send-proxy` with `proto h2` is not supported: an HTTP/2 connection carries \
                     many clients' requests, a PROXY header names one",
                );
            }
            if let Some((ServerProto::Http2, tok)) = &line.proto
                && st.mode != Mode::Http
            {
                self.err(
                    tok.pos,
                    &ipath,
                    format!(
                        "server `{}`: `proto h2` needs `mode http` (a tcp backend relays bytes)",
                        line.name.text
                    ),
                );
            }
            if line.cookie.is_some() && st.cookie.is_none() {
                self.warn(
                    line.addr_tok.pos,
                    &ipath,
                    format!(
                        "server `{}` has a cookie but the backend has no `cookie` setting",
                        line.name.text
                    ),
                );
            }
            if st.mode == Mode::Http
                && let Some(t) = line
                    .shutdown_on_down
                    .as_ref()
                    .or(line.shutdown_backups_on_up.as_ref())
            {
                self.warn(
                    t.pos,
                    &ipath,
                    format!(
                        "server `{}`: `{}` acts on the XDP tier's flows only; the L7 tier \
                         lets sessions end by themselves",
                        line.name.text, t.text
                    ),
                );
            }
            servers.push(Server {
                name: line.name.text.clone(),
                host: line.addr_tok.text.clone(),
                addr,
                check: line.check,
                weight: line.weight,
                backup: line.backup,
                cookie: line
                    .cookie
                    .or_else(|| Some(line.name.text.clone()))
                    .filter(|_| st.cookie.is_some()),
                maxconn: line.maxconn,
                disabled: line.disabled,
                proto: line.proto.map_or(ServerProto::Http1, |(p, _)| p),
                tls,
                send_proxy: line.send_proxy.as_ref().map(|(v, _)| *v),
                shutdown_on_down: line.shutdown_on_down.is_some(),
                shutdown_backups_on_up: line.shutdown_backups_on_up.is_some(),
            });
        }
        let mut check = st.check.clone();
        if !st.check_timeout_set {
            check.timeout = st.timeouts.check.unwrap_or(check.interval);
        }
        if matches!(st.balance, Balance::Uri { .. }) && st.mode == Mode::Tcp {
            let at = rp
                .balance
                .as_ref()
                .map_or(name.span().start, |b| b.span().start);
            self.err(
                at,
                &format!("{path}.balance"),
                "balance uri needs mode http (a tcp backend has no URI)",
            );
        }
        if st.cookie.is_some()
            && st.mode == Mode::Tcp
            && let Some(c) = &rp.cookie
        {
            self.err(
                c.span().start,
                &format!("{path}.cookie"),
                "cookie persistence needs mode http",
            );
        }
        // A backend's own http-request rules and ACLs (a listen's go to its frontend).
        let mut acls = AclSet::default();
        let mut http_request = Vec::new();
        let mut http_response = Vec::new();
        let mut http_after_response = Vec::new();
        if kind == Kind::Backend {
            let mut names = Vec::new();
            let mut nbsrv = Vec::new();
            self.acls(rp, path, &mut acls, &mut names, &mut nbsrv);
            http_request = self.http_rules(
                rp,
                RuleSide::Request,
                path,
                &acls,
                &names,
                st.mode,
                &mut nbsrv,
            );
            http_response = self.http_rules(
                rp,
                RuleSide::Response,
                path,
                &acls,
                &names,
                st.mode,
                &mut nbsrv,
            );
            http_after_response = self.http_rules(
                rp,
                RuleSide::AfterResponse,
                path,
                &acls,
                &names,
                st.mode,
                &mut nbsrv,
            );
        }
        BeDraft {
            be: Backend {
                name: name.get_ref().clone(),
                mode: st.mode,
                balance: st.balance,
                cookie: st.cookie.clone(),
                check,
                servers,
                timeouts: st.timeouts,
                retries: st.retries,
                redispatch: st.redispatch,
                forwardfor: st.forwardfor,
                http_request,
                http_response,
                http_after_response,
                acls,
                errorfiles: st.errorfiles.clone(),
            },
            name_pos: name.span().start,
            path: path.to_string(),
            declared_servers: self.items(&rp.server, path, "server").len(),
        }
    }

    /// The `http_request` or `http_response` rules of a section.
    #[allow(clippy::too_many_arguments)]
    fn http_rules(
        &mut self,
        rp: &RawProxy,
        side: RuleSide,
        path: &str,
        acls: &AclSet,
        names: &[String],
        mode: Mode,
        nbsrv: &mut Vec<(String, usize, String)>,
    ) -> Vec<HttpRule> {
        let (list, key, spec) = match side {
            RuleSide::Request => (&rp.http_request, "http_request", HTTP_REQ),
            RuleSide::Response => (&rp.http_response, "http_response", HTTP_RES),
            RuleSide::AfterResponse => (&rp.http_after_response, "http_after_response", HTTP_RES),
        };
        let response = side != RuleSide::Request;
        let mut out = Vec::new();
        for (_, ipath, span, item) in self.items(list, path, key) {
            if mode == Mode::Tcp {
                self.err(span.start, &ipath, format!("{key} rules need mode http"));
                continue;
            }
            let at = span.start;
            let Some(dir) = self.dir(item, span, spec, true, &ipath) else {
                continue;
            };
            let action = match d::http_action(&mut dir.args(), side) {
                Ok(a) => a,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            if !response
                && let Some(kw) = action
                    .formats()
                    .into_iter()
                    .filter_map(|f| FormatString::compile(f).ok())
                    .find_map(|f| f.response_fetch())
            {
                self.err(
                    at,
                    &ipath,
                    format!("`%[{kw}…]` is a response fetch: only http_response rules can use it"),
                );
                continue;
            }
            let cond = match &dir.cond {
                Some(c) => match self.condition(c, acls, names, &ipath, nbsrv, response) {
                    Some(c) => Some(c),
                    None => continue,
                },
                None => None,
            };
            out.push(HttpRule { action, cond });
        }
        out
    }

    fn frontend(
        &mut self,
        name: &S,
        rp: &RawProxy,
        path: &str,
        st: &Inherit,
        kind: Kind,
        has_dp: bool,
    ) -> FeDraft {
        let mut refs = Vec::new();
        let mut nbsrv = Vec::new();
        // binds
        let mut binds = Vec::new();
        let mut bind_locs = Vec::new();
        let mut udp_binds = Vec::new();
        if rp.bind.is_none() {
            self.err(
                name.span().start,
                path,
                "no `bind`: a frontend needs at least one address to listen on",
            );
        }
        for (ipath, dir) in self.dirs(&rp.bind, path, "bind", BIND, false) {
            let line = match d::bind(&mut dir.args()) {
                Ok(l) => l,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            let tls = if line.ssl.is_some() {
                let mut certs = Vec::new();
                for (p, t) in &line.certs {
                    let resolved = self.resolve_path(&p.to_string_lossy());
                    if let Err(m) = check_pem(&resolved) {
                        self.err(t.pos, &ipath, format!("certificate `{}`: {m}", t.text));
                    }
                    certs.push(resolved);
                }
                if st.mode == Mode::Tcp && !has_dp {
                    // TLS termination in userspace mode tcp is fine.
                }
                let ticket_keys = line.ticket_keys.as_ref().map(|(p, t)| {
                    let resolved = self.resolve_path(&p.to_string_lossy());
                    if let Err(e) = crate::tls_keys::load(&resolved) {
                        self.err(t.pos, &ipath, format!("tls-ticket-keys `{}`: {e}", t.text));
                    }
                    resolved
                });
                Some(BindTls {
                    certs,
                    alpn: line
                        .alpn
                        .clone()
                        .unwrap_or_else(|| vec!["h2".into(), "http/1.1".into()]),
                    ticket_keys,
                    no_tickets: line.no_tls_tickets,
                    strict_sni: line.strict_sni,
                    verify: line.verify.as_ref().map_or(ClientVerify::None, |(v, _)| *v),
                    ca_file: line
                        .ca_file
                        .as_ref()
                        .map(|(p, t)| self.tls_file(p, t, &ipath, "ca-file")),
                    ca_verify_file: line
                        .ca_verify_file
                        .as_ref()
                        .map(|(p, t)| self.tls_file(p, t, &ipath, "ca-verify-file")),
                    crl_file: line
                        .crl_file
                        .as_ref()
                        .map(|(p, t)| self.tls_file(p, t, &ipath, "crl-file")),
                    min_version: line.min_version,
                    max_version: line.max_version,
                    ciphersuites: line.ciphersuites.clone(),
                    ciphers: line.ciphers.clone(),
                    prefer_client_ciphers: line.prefer_client_ciphers,
                })
            } else {
                if let Some(a) = &line.alpn {
                    let _ = a;
                    if let Some(t) = dir.toks.iter().find(|t| t.text == "alpn") {
                        self.err(
                            t.pos,
                            &ipath,
                            "`alpn` needs `ssl crt PEM` on the same bind line",
                        );
                    }
                }
                None
            };
            bind_locs.push((dir.toks.first().map_or(dir.end, |t| t.pos), ipath.clone()));
            udp_binds.push(line.udp);
            binds.push(Bind {
                addr: line.addr,
                tls,
                accept_proxy: line.accept_proxy,
                text: dir.text.text.clone(),
            });
        }
        // ACLs and rules
        let mut acls = AclSet::default();
        let mut names = Vec::new();
        self.acls(rp, path, &mut acls, &mut names, &mut nbsrv);
        let http_request = self.http_rules(
            rp,
            RuleSide::Request,
            path,
            &acls,
            &names,
            st.mode,
            &mut nbsrv,
        );
        let http_response = self.http_rules(
            rp,
            RuleSide::Response,
            path,
            &acls,
            &names,
            st.mode,
            &mut nbsrv,
        );
        let http_after_response = self.http_rules(
            rp,
            RuleSide::AfterResponse,
            path,
            &acls,
            &names,
            st.mode,
            &mut nbsrv,
        );
        let mut tcp_request = Vec::new();
        let mut inspect_delay = None;
        for (ipath, dir) in self.dirs(&rp.tcp_request, path, "tcp_request", TCP_REQ, true) {
            match d::tcp_request(&mut dir.args()) {
                Ok(TcpLine::InspectDelay(dl)) => {
                    if let Some(c) = &dir.cond {
                        self.err(c.pos(0), &ipath, "`inspect-delay` takes no condition");
                    }
                    inspect_delay = Some(dl);
                }
                Ok(TcpLine::Rule(action, _content)) => {
                    let cond = match &dir.cond {
                        Some(c) => {
                            match self.condition(c, &acls, &names, &ipath, &mut nbsrv, false) {
                                Some(c) => Some(c),
                                None => continue,
                            }
                        }
                        None => None,
                    };
                    tcp_request.push(TcpRequestRule { action, cond });
                }
                Err(p) => self.problem(p, &ipath),
            }
        }
        let mut use_backend = Vec::new();
        for (ipath, dir) in self.dirs(&rp.use_backend, path, "use_backend", USE_BACKEND, true) {
            let mut args = dir.args();
            let b = match args
                .want("backend name")
                .and_then(|b| args.done().map(|_| b))
            {
                Ok(b) => b,
                Err(p) => {
                    self.problem(p, &ipath);
                    continue;
                }
            };
            // A name with `%[...]` is a log-format string resolved per request (HAProxy's
            // dynamic use_backend): its syntax is checked here; a name it yields that is no
            // backend sends the request to default_backend.
            if b.text.contains('%') {
                match d::compile_format(b, "backend name") {
                    Ok(f) if f.as_literal().is_none() => {}
                    Ok(_) => refs.push((b.text.clone(), b.pos, ipath.clone())),
                    Err(p) => {
                        self.problem(p, &ipath);
                        continue;
                    }
                }
            } else {
                refs.push((b.text.clone(), b.pos, ipath.clone()));
            }
            let Some(c) = &dir.cond else {
                self.err(dir.end, &ipath, format!("use_backend `{}` has no `if`/`unless` condition; use `default_backend = \"{}\"` for the fallback", b.text, b.text));
                continue;
            };
            if let Some(cond) = self.condition(c, &acls, &names, &ipath, &mut nbsrv, false) {
                use_backend.push(UseBackend {
                    backend: b.text.clone(),
                    cond,
                });
            }
        }
        let own = rp.default_backend.is_some();
        let default_backend = match (&st.default_backend, kind) {
            // a listen section serves itself unless it names another default backend
            (_, Kind::Listen) if !own => Some(name.get_ref().clone()),
            (Some((n, pos)), _) => {
                let p = if own {
                    format!("{path}.default_backend")
                } else {
                    "defaults.default_backend".to_string()
                };
                refs.push((n.clone(), *pos, p));
                Some(n.clone())
            }
            (None, Kind::Listen) => Some(name.get_ref().clone()),
            (None, _) => None,
        };
        let deny_src = match &rp.deny_src {
            Some(l) => self.cidrs(l, &format!("{path}.deny_src")),
            None => Vec::new(),
        };
        let allow_src = match &rp.allow_src {
            Some(l) => self.cidrs(l, &format!("{path}.allow_src")),
            None => Vec::new(),
        };
        let tier_forced = match &rp.tier {
            None => None,
            Some(t) => match t.get_ref().as_str() {
                "auto" => None,
                "xdp" => Some((Tier::Xdp, t.span().start)),
                "userspace" => Some((Tier::Userspace, t.span().start)),
                other => {
                    let h = hint(other, ["auto", "xdp", "userspace"]);
                    self.err(t.span().start, &format!("{path}.tier"), format!("unknown tier `{other}` (expected \"auto\", \"xdp\" or \"userspace\"){h}"));
                    None
                }
            },
        };
        FeDraft {
            fe: Frontend {
                name: name.get_ref().clone(),
                mode: st.mode,
                tier: Tier::Userspace,
                binds,
                acls,
                http_request,
                http_response,
                http_after_response,
                tcp_request,
                inspect_delay,
                use_backend,
                default_backend,
                timeouts: st.timeouts,
                forwardfor: st.forwardfor,
                maxconn: st.maxconn,
                deny_src,
                allow_src,
                errorfiles: st.errorfiles.clone(),
                max_header_bytes: st.max_header_bytes,
                max_headers: st.max_headers,
                log: st.log,
            },
            name_pos: name.span().start,
            path: path.to_string(),
            tier_forced,
            maxconn_own: rp.maxconn.is_some(),
            bind_locs,
            udp_binds,
            refs,
            nbsrv,
        }
    }

    fn cross_checks(&mut self, fes: &mut [FeDraft], bes: &[BeDraft], dp: Option<&Dataplane>) {
        let be_names: Vec<&str> = bes.iter().map(|b| b.be.name.as_str()).collect();
        let mut bound: HashMap<(SocketAddr, bool), String> = HashMap::new();
        let mut used_by_userspace: Vec<String> = Vec::new();
        let mut referenced: Vec<String> = Vec::new();
        for f in fes.iter_mut() {
            // references
            for (b, pos, path) in f.refs.clone() {
                referenced.push(b.clone());
                match bes.iter().find(|x| x.be.name == b) {
                    None => {
                        let h = hint(&b, be_names.iter().copied());
                        self.err(pos, &path, format!("backend `{b}` is not defined{h}"));
                    }
                    Some(be) if be.be.mode != f.fe.mode => {
                        self.err(
                            pos,
                            &path,
                            format!(
                                "frontend `{}` is mode {} but backend `{b}` is mode {}",
                                f.fe.name,
                                mode_name(f.fe.mode),
                                mode_name(be.be.mode)
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            for (b, pos, path) in f.nbsrv.clone() {
                if !be_names.contains(&b.as_str()) {
                    let h = hint(&b, be_names.iter().copied());
                    self.err(
                        pos,
                        &path,
                        format!("backend `{b}` in nbsrv() is not defined{h}"),
                    );
                }
            }
            // tier
            let mut reasons = inspection_reasons(&f.fe);
            // What the default backend's servers need that XDP's NAT cannot do.
            let servers =
                f.fe.default_backend
                    .as_ref()
                    .and_then(|n| bes.iter().find(|b| &b.be.name == n))
                    .map_or(&[][..], |b| &b.be.servers[..]);
            if servers.iter().any(|s| s.send_proxy.is_some()) {
                reasons.push("the PROXY protocol toward servers (send-proxy)");
            }
            if servers.iter().any(|s| s.tls.is_some()) {
                reasons.push("TLS toward servers (ssl)");
            }
            f.fe.tier = match (f.fe.mode, dp, f.tier_forced) {
                (_, _, Some((Tier::Userspace, _))) => Tier::Userspace,
                (Mode::Http, _, Some((Tier::Xdp, pos))) => {
                    self.err(
                        pos,
                        &format!("{}.tier", f.path),
                        "tier \"xdp\" needs mode tcp: XDP does not look at HTTP",
                    );
                    Tier::Userspace
                }
                (Mode::Tcp, None, Some((Tier::Xdp, pos))) => {
                    self.err(
                        pos,
                        &format!("{}.tier", f.path),
                        "tier \"xdp\" needs a [dataplane] section",
                    );
                    Tier::Userspace
                }
                (Mode::Tcp, Some(_), forced) => {
                    if reasons.is_empty() {
                        Tier::Xdp
                    } else if let Some((_, pos)) = forced {
                        self.err(pos, &format!("{}.tier", f.path), format!("this frontend cannot be served by XDP: it needs {} (served in userspace when `tier` is \"auto\")", reasons.join(", ")));
                        Tier::Userspace
                    } else {
                        Tier::Userspace
                    }
                }
                _ => Tier::Userspace,
            };
            if f.fe.tier == Tier::Xdp {
                if f.udp_binds.iter().any(|u| *u)
                    && let Some(be) =
                        f.fe.default_backend
                            .as_ref()
                            .and_then(|n| bes.iter().find(|b| &b.be.name == n))
                {
                    for s in be.be.servers.iter().filter(|s| s.check) {
                        self.warn(
                            f.name_pos,
                            &f.path,
                            format!(
                                "server `{}/{}` serves a UDP VIP but is health-checked over TCP; it will be marked DOWN unless it also accepts TCP on {}",
                                be.be.name, s.name, s.addr
                            ),
                        );
                    }
                }
                if f.fe.default_backend.is_none() {
                    self.err(
                        f.name_pos,
                        &f.path,
                        "an XDP frontend needs `default_backend`",
                    );
                }
                if let Some(be) =
                    f.fe.default_backend
                        .as_ref()
                        .and_then(|n| bes.iter().find(|b| &b.be.name == n))
                    && be.be.balance == Balance::LeastConn
                {
                    self.warn(f.name_pos, &f.path, format!("backend `{}` uses leastconn, which XDP cannot do: flows are spread by Maglev hashing instead", be.be.name));
                }
                if f.maxconn_own {
                    self.warn(
                        f.name_pos,
                        &f.path,
                        "maxconn is not enforced by the XDP tier",
                    );
                }
            } else {
                used_by_userspace.extend(f.refs.iter().map(|r| r.0.clone()));
                if f.fe.timeouts.client.is_none() {
                    self.warn(f.name_pos, &f.path, "missing `timeout client` (clients may hold connections forever); set it here or in [defaults]");
                }
            }
            // duplicate binds
            for ((b, (pos, path)), udp) in f.fe.binds.iter().zip(&f.bind_locs).zip(&f.udp_binds) {
                if *udp && f.fe.tier != Tier::Xdp {
                    self.err(
                        *pos,
                        path,
                        "a `udp@` bind is a UDP VIP, served only by the XDP tier (mode tcp, a [dataplane] section, nothing to inspect)",
                    );
                }
                if let Some(other) = bound.insert((b.addr, *udp), f.fe.name.clone()) {
                    self.err(
                        *pos,
                        path,
                        format!("{} is already bound by frontend `{other}`", b.addr),
                    );
                }
            }
        }
        self.xdp_limits(fes, bes, dp);
        for be in bes {
            let only_xdp =
                referenced.contains(&be.be.name) && !used_by_userspace.contains(&be.be.name);
            if !only_xdp {
                let mut missing = Vec::new();
                if be.be.timeouts.connect.is_none() {
                    missing.push("`timeout connect`");
                }
                if be.be.timeouts.server.is_none() {
                    missing.push("`timeout server`");
                }
                if !missing.is_empty() {
                    self.warn(
                        be.name_pos,
                        &be.path,
                        format!(
                            "missing {}; set it here or in [defaults]",
                            missing.join(" and ")
                        ),
                    );
                }
            }
            if be.declared_servers == 0 {
                self.warn(
                    be.name_pos,
                    &be.path,
                    "backend has no server: requests to it get 503",
                );
            }
        }
    }
}

impl Builder<'_> {
    /// What the XDP maps can hold, and Maglev's balance guarantee.
    fn xdp_limits(&mut self, fes: &[FeDraft], bes: &[BeDraft], dp: Option<&Dataplane>) {
        use lb_common::maps::{MAX_BACKENDS, MAX_FILTER_RULES, MAX_VIPS};
        let Some(dp) = dp else { return };
        let xdp: Vec<&FeDraft> = fes.iter().filter(|f| f.fe.tier == Tier::Xdp).collect();
        let mut vips = 0usize;
        let mut endpoints: Vec<SocketAddr> = Vec::new();
        let mut rules = dp.deny_src.len();
        for f in &xdp {
            rules += f.fe.deny_src.len() + f.fe.allow_src.len();
            let be =
                f.fe.default_backend
                    .as_ref()
                    .and_then(|n| bes.iter().find(|b| &b.be.name == n));
            for (b, (pos, path)) in f.fe.binds.iter().zip(&f.bind_locs) {
                vips += 1;
                if vips == MAX_VIPS as usize + 1 {
                    self.err(
                        *pos,
                        path,
                        format!("too many XDP VIPs: the data path holds at most {MAX_VIPS}"),
                    );
                }
                if let Some(be) = be
                    && !be.be.servers.is_empty()
                    && be
                        .be
                        .servers
                        .iter()
                        .all(|s| s.addr.is_ipv4() != b.addr.is_ipv4())
                {
                    self.err(
                            *pos,
                            path,
                            format!(
                                "VIP {} and every server of backend `{}` are of different address families: XDP NAT cannot cross them",
                                b.addr, be.be.name
                            ),
                        );
                }
            }
            if let Some(be) = be {
                for s in &be.be.servers {
                    if !endpoints.contains(&s.addr) {
                        endpoints.push(s.addr);
                    }
                }
                let n = be.be.servers.len() as u64;
                if n > 0 && u64::from(dp.maglev_table_size) < 100 * n {
                    self.warn(
                        f.name_pos,
                        &f.path,
                        format!(
                            "maglev_table_size {} is less than 100 x the {n} servers of backend `{}`: balance may be off by more than 1%",
                            dp.maglev_table_size, be.be.name
                        ),
                    );
                }
            }
        }
        if endpoints.len() > MAX_BACKENDS as usize
            && let Some(f) = xdp.first()
        {
            self.err(
                f.name_pos,
                &f.path,
                format!(
                    "too many XDP backend servers ({}): the data path holds at most {MAX_BACKENDS}",
                    endpoints.len()
                ),
            );
        }
        if rules > MAX_FILTER_RULES as usize {
            self.err(
                0,
                "dataplane.deny_src",
                format!("too many source filter rules ({rules}): the data path holds at most {MAX_FILTER_RULES}"),
            );
        }
    }
}

fn inspection_reasons(fe: &Frontend) -> Vec<&'static str> {
    let mut r = Vec::new();
    if !fe.tcp_request.is_empty() || fe.inspect_delay.is_some() {
        r.push("tcp_request content inspection");
    }
    if !fe.use_backend.is_empty() {
        r.push("use_backend rules");
    }
    if fe.binds.iter().any(|b| b.tls.is_some()) {
        r.push("TLS termination (ssl)");
    }
    if fe.binds.iter().any(|b| b.accept_proxy) {
        r.push("the PROXY protocol from clients (accept-proxy)");
    }
    if fe.binds.iter().any(|b| b.addr.ip().is_unspecified()) {
        r.push("a specific VIP address (not `*`)");
    }
    r
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    }
}

/// A DNS name as a `Host` header carries it: letters, digits, `-` and `.`, no port.
fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn item_path(key: &str, l: &List, i: usize) -> String {
    if l.is_many() {
        format!("{key}[{i}]")
    } else {
        key.to_string()
    }
}

fn collect_nbsrv(toks: &[Tok], path: &str, out: &mut Vec<(String, usize, String)>) {
    for t in toks {
        if let Some(rest) = t.text.strip_prefix("nbsrv(")
            && let Some(name) = rest.strip_suffix(')')
        {
            out.push((name.to_string(), t.pos + 6, path.to_string()));
        }
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2u64;
    while i * i <= u64::from(n) {
        if u64::from(n) % i == 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// A PEM file must hold a certificate chain and a private key that match.
pub(crate) fn check_pem(path: &Path) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let data = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut rd = &data[..];
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    let mut key: Option<PrivateKeyDer<'static>> = None;
    for item in rustls_pemfile::read_all(&mut rd) {
        match item.map_err(|e| format!("invalid PEM: {e}"))? {
            rustls_pemfile::Item::X509Certificate(c) => certs.push(c),
            rustls_pemfile::Item::Pkcs1Key(k) => key = Some(k.into()),
            rustls_pemfile::Item::Pkcs8Key(k) => key = Some(k.into()),
            rustls_pemfile::Item::Sec1Key(k) => key = Some(k.into()),
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(
            "no certificate in the file (expected a PEM certificate chain and its private key)"
                .into(),
        );
    }
    let Some(key) = key else {
        return Err(
            "no private key in the file (expected a PEM certificate chain and its private key)"
                .into(),
        );
    };
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    let ck = rustls::sign::CertifiedKey::new(certs, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("the private key does not match the certificate".into())
        }
        Err(e) => Err(format!("invalid certificate: {e}")),
    }
}

/// Why bpffs would refuse the pin directory `path` (absolute), if it would: a `.` or `..`
/// component, or a dot in a name that lies on bpffs (the kernel reserves dotted names
/// there). Names above the bpffs mount point (e.g. a mount at `/run/lb.d/bpf`) may have
/// dots; a name is on bpffs when it is below a mounted bpffs, or below `/sys/fs/bpf`, where
/// lb mounts bpffs when it is missing.
fn pin_path_problem(path: &Path) -> Option<String> {
    use std::path::Component;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let bpf_mounts: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "bpf").then(|| PathBuf::from(point.replace("\\040", " ")))
        })
        .chain([PathBuf::from("/sys/fs/bpf")])
        .collect();
    let mut prefix = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir | Component::ParentDir => {
                return Some(format!(
                    "pin_path `{}` must not contain `.` or `..` components",
                    path.display()
                ));
            }
            Component::Normal(name) => {
                let on_bpffs = bpf_mounts.iter().any(|m| prefix.starts_with(m));
                prefix.push(name);
                let name = name.to_string_lossy();
                if on_bpffs && !lb_common::maps::bpffs_name_ok(&name) {
                    return Some(format!(
                        "pin_path `{}`: bpffs refuses the name `{name}` (names on bpffs \
                         cannot contain a dot); use e.g. `{}`",
                        path.display(),
                        name.replace('.', "_")
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => prefix.push(c),
        }
    }
    None
}
