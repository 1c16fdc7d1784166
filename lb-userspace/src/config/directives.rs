//! Parsers for HAProxy directive lines (and the tables that stand for them), each working
//! on located words so that a problem points at the exact column.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::model::{
    AddrFamily, Balance, CheckKind, CheckSpec, ClientVerify, CompAlgo, Compression, CookieSpec,
    Fmt, HttpAction, HttpReturn, IpNet, Re, Redirect, RedirectKind, ServerProto, Smp, StickKey,
    StickTableSpec, TcpAction,
};
use super::source::{Problem, Str, Tok};
use super::suggest::hint;
use crate::acl::FormatString;
use crate::proxy_protocol::ProxyVersion;
use crate::tls_policy::{self, TlsVersion};

/// Parses a HAProxy duration: a bare number is milliseconds; units `us ms s m h d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "invalid duration `{text}`: expected a number with an optional unit (us, ms, s, m, h, d)"
        ));
    }
    let (num, unit) = text.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
    let per: (u64, u64) = match unit {
        "" | "ms" => (n, 1_000_000),
        "us" => (n, 1_000),
        "s" => (n, 1_000_000_000),
        "m" => (n, 60_000_000_000),
        "h" => (n, 3_600_000_000_000),
        "d" => (n, 86_400_000_000_000),
        _ => {
            return Err(format!(
                "invalid duration `{text}`: unknown unit `{unit}` (expected us, ms, s, m, h or d)"
            ));
        }
    };
    per.0
        .checked_mul(per.1)
        .map(Duration::from_nanos)
        .ok_or_else(|| format!("invalid duration `{text}`: too large"))
}

/// Words of one directive, with the position just past its end (for "missing …").
#[derive(Debug, Clone)]
pub(crate) struct Args<'a> {
    pub toks: &'a [Tok],
    pub i: usize,
    pub end: usize,
}

impl<'a> Args<'a> {
    pub fn new(toks: &'a [Tok], end: usize) -> Self {
        Self { toks, i: 0, end }
    }

    pub fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.i)
    }

    pub fn next(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.i);
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    /// The next word, or "missing WHAT" at the end of the directive.
    pub fn want(&mut self, what: &str) -> Result<&'a Tok, Problem> {
        self.next()
            .ok_or_else(|| Problem::new(self.end, format!("missing {what}")))
    }

    /// Value of option `opt` (the word after it).
    pub fn value_of(&mut self, opt: &Tok) -> Result<&'a Tok, Problem> {
        self.next()
            .ok_or_else(|| Problem::new(opt.pos, format!("`{}` needs a value", opt.text)))
    }

    /// `opt`'s value, which must be one of the keywords of `choices`: what it means, and
    /// the value's token.
    pub fn keyword_of<T: Copy>(
        &mut self,
        opt: &Tok,
        choices: &[(&str, T)],
    ) -> Result<(T, &'a Tok), Problem> {
        let v = self.value_of(opt)?;
        let meaning = keyword(&opt.text, &v.text, choices).map_err(|m| Problem::new(v.pos, m))?;
        Ok((meaning, v))
    }

    pub fn done(&self) -> Result<(), Problem> {
        match self.peek() {
            Some(t) => Err(Problem::new(t.pos, format!("unexpected `{}`", t.text))),
            None => Ok(()),
        }
    }
}

/// What `value`, the value of option `opt`, means among `choices`; else a message naming
/// the keywords allowed.
pub(crate) fn keyword<T: Copy>(opt: &str, value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, meaning)) = choices.iter().find(|(k, _)| *k == value) {
        return Ok(*meaning);
    }
    let mut allowed = String::new();
    for (i, (k, _)) in choices.iter().enumerate() {
        if i > 0 {
            allowed.push_str(if i + 1 == choices.len() { " or " } else { ", " });
        }
        allowed.push_str(&format!("`{k}`"));
    }
    Err(format!("`{opt} {value}`: expected {allowed}"))
}

/// `verify none|optional|required` of a bind (and of a crt-list entry).
pub(crate) const CLIENT_VERIFY: [(&str, ClientVerify); 3] = [
    ("none", ClientVerify::None),
    ("optional", ClientVerify::Optional),
    ("required", ClientVerify::Required),
];

pub(crate) fn duration_tok(t: &Tok) -> Result<Duration, Problem> {
    parse_duration(&t.text).map_err(|m| Problem::new(t.pos, m))
}

pub(crate) fn number<T: std::str::FromStr>(
    t: &Tok,
    what: &str,
    min: u64,
    max: u64,
) -> Result<T, Problem> {
    let err = || {
        Problem::new(
            t.pos,
            format!(
                "{what} must be a number from {min} to {max}, not `{}`",
                t.text
            ),
        )
    };
    let n: u64 = t.text.parse().map_err(|_| err())?;
    if n < min || n > max {
        return Err(err());
    }
    t.text.parse().map_err(|_| err())
}

/// `*:80`, `:80`, `1.2.3.4:80`, `[::]:443`, `[2001:db8::1]:80`.
pub(crate) fn bind_addr(t: &Tok) -> Result<SocketAddr, Problem> {
    let (host, port, port_off) = split_host_port(t)?;
    let ip: IpAddr = match host {
        "" | "*" | "0.0.0.0" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        h => h.parse().map_err(|_| {
            Problem::new(
                t.pos,
                format!("`{h}` is not an IP address (bind takes `*`, an IPv4 address or a bracketed IPv6 address)"),
            )
        })?,
    };
    let port = port_number(t, port, port_off)?;
    Ok(SocketAddr::new(ip, port))
}

/// HAProxy's address prefixes on a bind: `tcp@`, `tcp4@`, `tcp6@`, `ipv4@`, `ipv6@` change
/// nothing here (the address says its family); `udp@`, `udp4@`, `udp6@` make a UDP VIP.
/// Returns the address token without its prefix (positions kept exact) and whether it is UDP.
pub(crate) fn strip_address_prefix(t: &Tok) -> (Tok, bool) {
    const PREFIXES: &[(&str, bool)] = &[
        ("tcp@", false),
        ("tcp4@", false),
        ("tcp6@", false),
        ("ipv4@", false),
        ("ipv6@", false),
        ("udp@", true),
        ("udp4@", true),
        ("udp6@", true),
    ];
    for (prefix, udp) in PREFIXES {
        // `get`: the word may hold multibyte characters where a prefix would end.
        if t.text.len() > prefix.len()
            && t.text
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        {
            let mut rest = t.clone();
            rest.text = t.text[prefix.len()..].to_owned();
            rest.pos += prefix.len();
            rest.off += prefix.len();
            return (rest, *udp);
        }
    }
    (t.clone(), false)
}

/// Splits `host:port` / `[v6]:port`; returns host, port text and the port's byte offset.
pub(crate) fn split_host_port(t: &Tok) -> Result<(&str, &str, usize), Problem> {
    let s = t.text.as_str();
    if let Some(rest) = s.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err(Problem::new(t.pos, format!("missing `]` in `{s}`")));
        };
        let host = &rest[..close];
        let after = &rest[close + 1..];
        let Some(port) = after.strip_prefix(':') else {
            return Err(Problem::new(
                t.pos + close + 2,
                format!("missing port after `[{host}]` (write `[{host}]:PORT`)"),
            ));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(Problem::new(
                t.pos + 1,
                format!("`{host}` is not an IPv6 address"),
            ));
        }
        return Ok((host, port, close + 3));
    }
    if s.matches(':').count() > 1 {
        return Err(Problem::new(
            t.pos,
            format!(
                "IPv6 addresses must be written in brackets, e.g. `[2001:db8::1]:80`, not `{s}`"
            ),
        ));
    }
    match s.rfind(':') {
        Some(i) => Ok((&s[..i], &s[i + 1..], i + 1)),
        None => Err(Problem::new(
            t.pos + s.len(),
            format!("missing port in `{s}` (write HOST:PORT)"),
        )),
    }
}

fn port_number(t: &Tok, port: &str, off: usize) -> Result<u16, Problem> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ if port.contains('-') => Err(Problem::new(
            t.pos + off,
            format!("port ranges are not supported: `{port}`"),
        )),
        _ => Err(Problem::new(
            t.pos + off,
            format!("invalid port `{port}` (expected 1 to 65535)"),
        )),
    }
}

/// A parsed `bind` line (certificates not read yet).
#[derive(Debug)]
pub(crate) struct BindLine {
    pub addr: SocketAddr,
    /// Written `udp@ADDR:PORT` (a UDP VIP; XDP tier only).
    pub udp: bool,
    pub ssl: Option<Tok>,
    pub certs: Vec<(PathBuf, Tok)>,
    pub alpn: Option<Vec<String>>,
    /// `accept-proxy`.
    pub accept_proxy: bool,
    /// `tls-ticket-keys FILE`, `no-tls-tickets`.
    pub ticket_keys: Option<(PathBuf, Tok)>,
    pub no_tls_tickets: bool,
    /// `strict-sni`.
    pub strict_sni: bool,
    /// `strict-alpn` (lb's extension).
    pub strict_alpn: bool,
    /// `verify none|optional|required` (client certificates), with its token.
    pub verify: Option<(ClientVerify, Tok)>,
    /// `ca-file`, `ca-verify-file`, `crl-file`.
    pub ca_file: Option<(PathBuf, Tok)>,
    pub ca_verify_file: Option<(PathBuf, Tok)>,
    pub crl_file: Option<(PathBuf, Tok)>,
    /// `ssl-min-ver`, `ssl-max-ver`, `ciphersuites`, `ciphers`, `prefer-client-ciphers`
    /// (the first token of any of them, for "needs ssl").
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    pub ciphersuites: Vec<rustls::CipherSuite>,
    pub ciphers: Vec<rustls::CipherSuite>,
    pub curves: Vec<rustls::NamedGroup>,
    pub prefer_client_ciphers: bool,
    pub policy_tok: Option<Tok>,
    /// `crt-list FILE`, each with its value's token.
    pub crt_lists: Vec<(PathBuf, Tok)>,
}

const BIND_OPTS: &[&str] = &[
    "tls-ticket-keys",
    "no-tls-tickets",
    "strict-sni",
    "strict-alpn",
    "verify",
    "ca-file",
    "ca-verify-file",
    "crl-file",
    "crt-list",
    "ssl-min-ver",
    "ssl-max-ver",
    "ciphersuites",
    "ciphers",
    "curves",
    "prefer-client-ciphers",
    "accept-proxy",
    "ssl",
    "crt",
    "alpn",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "v4v6",
    "v6only",
];

pub(crate) fn bind(args: &mut Args) -> Result<BindLine, Problem> {
    let a = args.want("address")?;
    let (a, udp) = strip_address_prefix(a);
    let addr = bind_addr(&a)?;
    let mut line = BindLine {
        addr,
        udp,
        ssl: None,
        certs: Vec::new(),
        alpn: None,
        accept_proxy: false,
        ticket_keys: None,
        no_tls_tickets: false,
        strict_sni: false,
        strict_alpn: false,
        verify: None,
        ca_file: None,
        ca_verify_file: None,
        crl_file: None,
        min_version: None,
        max_version: None,
        ciphersuites: Vec::new(),
        ciphers: Vec::new(),
        curves: Vec::new(),
        prefer_client_ciphers: false,
        policy_tok: None,
        crt_lists: Vec::new(),
    };
    while let Some(t) = args.next() {
        match t.text.as_str() {
            "ssl" => line.ssl = Some(t.clone()),
            "accept-proxy" => line.accept_proxy = true,
            "no-tls-tickets" => line.no_tls_tickets = true,
            "strict-sni" => line.strict_sni = true,
            "strict-alpn" => line.strict_alpn = true,
            "verify" => {
                let (mode, v) = args.keyword_of(t, &CLIENT_VERIFY)?;
                line.verify = Some((mode, v.clone()));
            }
            "crt-list" => {
                let v = args.value_of(t)?;
                line.crt_lists.push((PathBuf::from(&v.text), v.clone()));
            }
            "prefer-client-ciphers" => {
                line.prefer_client_ciphers = true;
                line.policy_tok.get_or_insert_with(|| t.clone());
            }
            "ssl-min-ver" | "ssl-max-ver" | "ciphersuites" | "ciphers" | "curves" => {
                let v = args.value_of(t)?;
                let bad = |e: tls_policy::PolicyError| {
                    Problem::new(v.pos, format!("`{} {}`: {e}", t.text, v.text))
                };
                match t.text.as_str() {
                    "ssl-min-ver" => {
                        line.min_version = Some(tls_policy::version(&v.text).map_err(bad)?)
                    }
                    "ssl-max-ver" => {
                        line.max_version = Some(tls_policy::version(&v.text).map_err(bad)?)
                    }
                    "ciphersuites" => {
                        line.ciphersuites = tls_policy::tls13_suites(&v.text).map_err(bad)?
                    }
                    "curves" => line.curves = tls_policy::curves(&v.text).map_err(bad)?,
                    _ => line.ciphers = tls_policy::tls12_suites(&v.text).map_err(bad)?,
                }
                line.policy_tok.get_or_insert_with(|| t.clone());
                if let (Some(min), Some(max)) = (line.min_version, line.max_version)
                    && min > max
                {
                    return Err(Problem::new(t.pos, "`ssl-min-ver` is above `ssl-max-ver`"));
                }
            }
            "ca-file" | "ca-verify-file" | "crl-file" => {
                let v = args.value_of(t)?;
                let slot = match t.text.as_str() {
                    "ca-file" => &mut line.ca_file,
                    "ca-verify-file" => &mut line.ca_verify_file,
                    _ => &mut line.crl_file,
                };
                *slot = Some((PathBuf::from(&v.text), v.clone()));
            }
            "tls-ticket-keys" => {
                let v = args.value_of(t)?;
                line.ticket_keys = Some((PathBuf::from(&v.text), v.clone()));
            }
            "crt" => {
                let v = args.value_of(t)?;
                line.certs.push((PathBuf::from(&v.text), v.clone()));
            }
            "alpn" => {
                let v = args.value_of(t)?;
                let list: Vec<String> = v.text.split(',').map(|p| p.trim().to_string()).collect();
                if let Some(bad) = list.iter().find(|p| p.is_empty()) {
                    return Err(Problem::new(
                        v.pos,
                        format!("empty protocol in alpn list `{}`{bad}", v.text),
                    ));
                }
                line.alpn = Some(list);
            }
            "no-sslv3" | "no-tlsv10" | "no-tlsv11" | "v4v6" | "v6only" => {}
            "npn" => {
                return Err(Problem::new(
                    t.pos,
                    "`npn` is not supported (obsolete); use `alpn h2,http/1.1`",
                ));
            }
            other => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "unknown bind option `{other}`{}",
                        hint(other, BIND_OPTS.iter().copied())
                    ),
                ));
            }
        }
    }
    if let (None, Some((_, t))) = (&line.ssl, line.certs.first()) {
        return Err(Problem::new(
            t.pos,
            "`crt` needs `ssl` on the same bind line",
        ));
    }
    if line.ssl.is_none() {
        let tls_only = [
            ("tls-ticket-keys", line.ticket_keys.as_ref().map(|(_, t)| t)),
            ("verify", line.verify.as_ref().map(|(_, t)| t)),
            ("ca-file", line.ca_file.as_ref().map(|(_, t)| t)),
            (
                "ca-verify-file",
                line.ca_verify_file.as_ref().map(|(_, t)| t),
            ),
            ("crl-file", line.crl_file.as_ref().map(|(_, t)| t)),
            ("crt-list", line.crt_lists.first().map(|(_, t)| t)),
            (
                line.policy_tok.as_ref().map_or("", |t| t.text.as_str()),
                line.policy_tok.as_ref(),
            ),
        ];
        if let Some((opt, Some(t))) = tls_only.into_iter().find(|(_, t)| t.is_some()) {
            return Err(Problem::new(
                t.pos,
                format!("`{opt}` needs `ssl` on the same bind line"),
            ));
        }
    }
    if let (Some((mode, t)), None) = (&line.verify, &line.ca_file)
        && *mode != ClientVerify::None
    {
        // HAProxy refuses it too: nothing to verify client certificates against.
        return Err(Problem::new(
            t.pos,
            format!("`verify {}` needs `ca-file` on the same bind line", t.text),
        ));
    }
    if let (Some(s), true) = (
        &line.ssl,
        line.certs.is_empty() && line.crt_lists.is_empty(),
    ) {
        return Err(Problem::new(s.pos, "`ssl` needs at least one `crt PEM`"));
    }
    Ok(line)
}

/// A parsed `server` line (address not resolved yet).
#[derive(Debug)]
pub(crate) struct ServerLine {
    pub name: Tok,
    pub host: String,
    pub port: u16,
    pub addr_tok: Tok,
    pub check: bool,
    pub weight: u32,
    pub backup: bool,
    pub cookie: Option<String>,
    pub maxconn: Option<u32>,
    pub disabled: bool,
    /// `proto h1|h2`, with the value's token for messages.
    pub proto: Option<(ServerProto, Tok)>,
    /// `ssl` (its token), `verify none|required`, `ca-file`, `sni str(NAME)`.
    pub ssl: Option<Tok>,
    pub verify: Option<(bool, Tok)>,
    pub ca_file: Option<Tok>,
    pub sni: Option<(String, Tok)>,
    /// `send-proxy` or `send-proxy-v2`, with its token.
    pub send_proxy: Option<(ProxyVersion, Tok)>,
    /// `on-marked-down shutdown-sessions`, with the option's token.
    pub shutdown_on_down: Option<Tok>,
    /// `on-marked-up shutdown-backup-sessions`, with the option's token.
    pub shutdown_backups_on_up: Option<Tok>,
    /// `resolvers NAME`: the name's token.
    pub resolvers: Option<Tok>,
    /// `resolve-prefer ipv4|ipv6`.
    pub resolve_prefer: Option<AddrFamily>,
    /// `init-addr METHOD[,METHOD…]`, with the value's token.
    pub init_addr: Option<(Vec<InitAddr>, Tok)>,
}

/// One method of `init-addr`, tried in order at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitAddr {
    /// The address the running lb has for the server (on reload; nothing at start, as
    /// HAProxy without a server-state file).
    Last,
    /// The system resolver (getaddrinfo).
    Libc,
    /// Start without an address, in MAINT until DNS gives one.
    None,
    /// A fixed address.
    Ip(IpAddr),
}

/// `server-template PREFIX NUM|LOW-HIGH FQDN:PORT [options]`, parsed.
#[derive(Debug)]
pub(crate) struct TemplateLine {
    pub prefix: Tok,
    /// The numbers appended to the prefix.
    pub ids: std::ops::RangeInclusive<u32>,
    /// The shared rest of the line (its name is the prefix).
    pub server: ServerLine,
}

/// Most servers a `server-template` line may declare.
pub(crate) const MAX_TEMPLATE_SERVERS: u32 = 4096;

const SERVER_OPTS: &[&str] = &[
    "check",
    "weight",
    "backup",
    "cookie",
    "maxconn",
    "disabled",
    "enabled",
    "proto",
    "ssl",
    "verify",
    "ca-file",
    "sni",
    "send-proxy",
    "send-proxy-v2",
    "on-marked-down",
    "on-marked-up",
    "resolvers",
    "resolve-prefer",
    "init-addr",
];

pub(crate) fn server(args: &mut Args) -> Result<ServerLine, Problem> {
    let name = args.want("server name")?.clone();
    server_rest(name, args)
}

pub(crate) fn server_template(args: &mut Args) -> Result<TemplateLine, Problem> {
    let prefix = args.want("server-template prefix")?.clone();
    let n = args.want("server-template number (NUM or LOW-HIGH)")?;
    let bad = || {
        Problem::new(
            n.pos,
            format!(
                "server-template number `{}` is not NUM or LOW-HIGH (1 to {MAX_TEMPLATE_SERVERS} servers)",
                n.text
            ),
        )
    };
    let ids = match n.text.split_once('-') {
        Some((lo, hi)) => {
            let lo: u32 = lo.parse().map_err(|_| bad())?;
            let hi: u32 = hi.parse().map_err(|_| bad())?;
            lo..=hi
        }
        None => 1..=n.text.parse::<u32>().map_err(|_| bad())?,
    };
    let count = ids.end().saturating_sub(*ids.start()).saturating_add(1);
    if ids.is_empty() || count > MAX_TEMPLATE_SERVERS {
        return Err(bad());
    }
    let server = server_rest(prefix.clone(), args)?;
    Ok(TemplateLine {
        prefix,
        ids,
        server,
    })
}

fn init_addr(t: &Tok) -> Result<Vec<InitAddr>, Problem> {
    let mut out = Vec::new();
    for m in t.text.split(',') {
        out.push(match m {
            "last" => InitAddr::Last,
            "libc" => InitAddr::Libc,
            "none" => InitAddr::None,
            ip => InitAddr::Ip(ip.parse().map_err(|_| {
                Problem::new(
                    t.pos,
                    format!("init-addr `{ip}` is not last, libc, none or an IP address"),
                )
            })?),
        });
    }
    Ok(out)
}

fn server_rest(name: Tok, args: &mut Args) -> Result<ServerLine, Problem> {
    let a = args.want("server address (HOST:PORT)")?.clone();
    let (host, port, off) = split_host_port(&a)?;
    if host.is_empty() || host == "*" {
        return Err(Problem::new(
            a.pos,
            format!("missing host in server address `{}`", a.text),
        ));
    }
    let port = port_number(&a, port, off)?;
    let mut s = ServerLine {
        name,
        host: host.to_string(),
        port,
        addr_tok: a.clone(),
        check: false,
        weight: 1,
        backup: false,
        cookie: None,
        maxconn: None,
        disabled: false,
        proto: None,
        ssl: None,
        verify: None,
        ca_file: None,
        sni: None,
        send_proxy: None,
        shutdown_on_down: None,
        shutdown_backups_on_up: None,
        resolvers: None,
        resolve_prefer: None,
        init_addr: None,
    };
    while let Some(t) = args.next() {
        match t.text.as_str() {
            "check" => s.check = true,
            "resolvers" => s.resolvers = Some(args.value_of(t)?.clone()),
            "resolve-prefer" => {
                let choices = [("ipv4", AddrFamily::V4), ("ipv6", AddrFamily::V6)];
                s.resolve_prefer = Some(args.keyword_of(t, &choices)?.0);
            }
            "init-addr" => {
                let v = args.value_of(t)?;
                s.init_addr = Some((init_addr(v)?, v.clone()));
            }
            "backup" => s.backup = true,
            "disabled" => s.disabled = true,
            "enabled" => s.disabled = false,
            "weight" => s.weight = number(args.value_of(t)?, "weight", 0, 256)?,
            "maxconn" => {
                s.maxconn = Some(number(
                    args.value_of(t)?,
                    "maxconn",
                    1,
                    u64::from(u32::MAX),
                )?)
            }
            "cookie" => s.cookie = Some(args.value_of(t)?.text.clone()),
            "proto" => {
                let choices = [("h1", ServerProto::Http1), ("h2", ServerProto::Http2)];
                let (p, v) = args.keyword_of(t, &choices)?;
                s.proto = Some((p, v.clone()));
            }
            "ssl" => s.ssl = Some(t.clone()),
            "send-proxy" => s.send_proxy = Some((ProxyVersion::V1, t.clone())),
            "send-proxy-v2" => s.send_proxy = Some((ProxyVersion::V2, t.clone())),
            "verify" => {
                let (required, _) = args.keyword_of(t, &[("none", false), ("required", true)])?;
                s.verify = Some((required, t.clone()));
            }
            "ca-file" => s.ca_file = Some(args.value_of(t)?.clone()),
            // HAProxy's only actions for these two (`mark-backup-down`, its other
            // on-marked-down action, applies to tracked servers, which lb does not have).
            "on-marked-down" | "on-marked-up" => {
                let v = args.value_of(t)?;
                let (want, slot) = if t.text == "on-marked-down" {
                    ("shutdown-sessions", &mut s.shutdown_on_down)
                } else {
                    ("shutdown-backup-sessions", &mut s.shutdown_backups_on_up)
                };
                if v.text != want {
                    return Err(Problem::new(
                        v.pos,
                        format!("`{}` takes `{want}`, not `{}`", t.text, v.text),
                    ));
                }
                *slot = Some(t.clone());
            }
            "sni" => {
                let v = args.value_of(t)?;
                let name = v
                    .text
                    .strip_prefix("str(")
                    .and_then(|r| r.strip_suffix(')'))
                    .filter(|n| !n.is_empty() && !n.contains([',', '(', ')']));
                let Some(name) = name else {
                    return Err(Problem::new(
                        v.pos,
                        format!(
                            "sni `{}`: only a fixed name, `sni str(NAME)`, is supported",
                            v.text
                        ),
                    ));
                };
                s.sni = Some((name.to_owned(), v.clone()));
            }
            "inter" | "rise" | "fall" | "port" | "addr" => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "per-server `{}` is not supported; set it in the backend's `check` table",
                        t.text
                    ),
                ));
            }
            other => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "unknown server option `{other}`{}",
                        hint(other, SERVER_OPTS.iter().copied())
                    ),
                ));
            }
        }
    }
    Ok(s)
}

pub(crate) const BALANCES: &[&str] = &["roundrobin", "leastconn", "source", "random", "uri"];

pub(crate) fn balance(s: &Str) -> Result<Balance, Problem> {
    let v = s.value.trim();
    if let Some(opts) = v
        .strip_prefix("uri")
        .filter(|r| r.is_empty() || r.starts_with(' '))
    {
        let mut whole = false;
        for o in opts.split_whitespace() {
            match o {
                "whole" => whole = true,
                other => {
                    return Err(Problem::new(
                        s.pos(0),
                        format!("balance uri: option `{other}` is not supported (only `whole`)"),
                    ));
                }
            }
        }
        return Ok(Balance::Uri { whole });
    }
    match v {
        "roundrobin" => Ok(Balance::RoundRobin),
        "leastconn" => Ok(Balance::LeastConn),
        "source" => Ok(Balance::Source),
        "random" => Ok(Balance::Random),
        other => Err(Problem::new(
            s.pos(0),
            format!(
                "unknown balance algorithm `{other}`{}",
                match hint(other, BALANCES.iter().copied()) {
                    h if h.is_empty() =>
                        " (supported: roundrobin, leastconn, source, random, uri)".to_string(),
                    h => h,
                }
            ),
        )),
    }
}

/// `NAME insert [indirect] [nocache]`.
pub(crate) fn cookie(args: &mut Args) -> Result<CookieSpec, Problem> {
    let name = args.want("cookie name")?;
    let mut spec = CookieSpec {
        name: name.text.clone(),
        indirect: false,
        nocache: false,
    };
    let mut insert = false;
    while let Some(t) = args.next() {
        match t.text.as_str() {
            "insert" => insert = true,
            "indirect" => spec.indirect = true,
            "nocache" => spec.nocache = true,
            "rewrite" | "prefix" | "preserve" | "httponly" | "secure" | "domain" | "maxidle"
            | "maxlife" | "postonly" | "dynamic" | "attr" => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "cookie mode `{}` is not supported (only `insert [indirect] [nocache]`)",
                        t.text
                    ),
                ));
            }
            other => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "unknown cookie option `{other}`{}",
                        hint(other, ["insert", "indirect", "nocache"])
                    ),
                ));
            }
        }
    }
    if !insert {
        return Err(Problem::new(
            args.end,
            "missing `insert` (only `cookie NAME insert [indirect] [nocache]` is supported)",
        ));
    }
    Ok(spec)
}

const CHECK_OPTS: &[&str] = &[
    "inter", "interval", "rise", "fall", "timeout", "http", "host", "expect", "tls", "sni", "tcp",
];

/// `inter 2s rise 2 fall 3 timeout 1s http GET /healthz host H expect 200-399 | tls [sni S]`.
/// Returns the spec and whether a timeout was given.
pub(crate) fn check(args: &mut Args, mut spec: CheckSpec) -> Result<(CheckSpec, bool), Problem> {
    let mut timeout_set = false;
    let mut host = None;
    let mut expect = None;
    let mut sni = None;
    while let Some(t) = args.next() {
        match t.text.as_str() {
            "inter" | "interval" => {
                spec.interval = duration_tok(args.value_of(t)?)?;
                if spec.interval.is_zero() {
                    return Err(Problem::new(t.pos, "check interval must be greater than 0"));
                }
            }
            "rise" => spec.rise = number(args.value_of(t)?, "rise", 1, 1000)?,
            "fall" => spec.fall = number(args.value_of(t)?, "fall", 1, 1000)?,
            "timeout" => {
                spec.timeout = duration_tok(args.value_of(t)?)?;
                timeout_set = true;
            }
            "tcp" => spec.kind = CheckKind::Tcp,
            "tls" => spec.kind = CheckKind::Tls { sni: None },
            "sni" => sni = Some(args.value_of(t)?.text.clone()),
            "host" => host = Some(args.value_of(t)?.text.clone()),
            "expect" => {
                let v = args.value_of(t)?;
                let bad = || {
                    Problem::new(
                        v.pos,
                        format!(
                            "`expect` takes a status or a range like 200-399, not `{}`",
                            v.text
                        ),
                    )
                };
                let (lo, hi) = v.text.split_once('-').unwrap_or((&v.text, &v.text));
                let lo: u16 = lo.parse().map_err(|_| bad())?;
                let hi: u16 = hi.parse().map_err(|_| bad())?;
                if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
                    return Err(bad());
                }
                expect = Some((lo, hi));
            }
            "http" => {
                let first = args.value_of(t)?;
                let (method, path) = if first.text.starts_with('/') {
                    ("GET".to_string(), first.text.clone())
                } else {
                    let p = args.want("health-check path after the method")?;
                    if !p.text.starts_with('/') {
                        return Err(Problem::new(
                            p.pos,
                            format!("health-check path must start with `/`, not `{}`", p.text),
                        ));
                    }
                    (first.text.to_ascii_uppercase(), p.text.clone())
                };
                spec.kind = CheckKind::Http {
                    method,
                    path,
                    host: None,
                    expect: (200, 399),
                };
            }
            other => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "unknown check setting `{other}`{}",
                        hint(other, CHECK_OPTS.iter().copied())
                    ),
                ));
            }
        }
    }
    match &mut spec.kind {
        CheckKind::Http {
            host: h, expect: e, ..
        } => {
            if host.is_some() {
                *h = host;
            }
            if let Some(x) = expect {
                *e = x;
            }
        }
        CheckKind::Tls { sni: s } => *s = sni,
        CheckKind::Tcp => {}
    }
    Ok((spec, timeout_set))
}

/// The `http-request` action (the condition is split off by the caller).
/// A log-format string argument (header value, redirect target, dynamic backend name),
/// compiled to check it, so that a bad one is reported at its position; the L7 runtime
/// compiles the text again.
pub(crate) fn compile_format(t: &Tok, what: &str) -> Result<FormatString, Problem> {
    FormatString::compile(&t.text)
        .map_err(|e| Problem::new(t.pos, format!("{what} `{}`: {}", t.text, e.message)))
}

/// [`compile_format`]: the text with its compiled form, kept for the proxy.
fn log_format(t: &Tok, what: &str) -> Result<Fmt, Problem> {
    compile_format(t, what).map(|f| Fmt::compiled_from(t.text.clone(), f))
}

/// Which rule list an action is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleSide {
    Request,
    Response,
    /// `http-after-response`: every response, lb's own included.
    AfterResponse,
}

impl RuleSide {
    /// The TOML key of the rule list.
    pub(crate) fn key(self) -> &'static str {
        match self {
            RuleSide::Request => "http_request",
            RuleSide::Response => "http_response",
            RuleSide::AfterResponse => "http_after_response",
        }
    }

    pub(crate) fn keyword(self) -> &'static str {
        match self {
            RuleSide::Request => "http-request",
            RuleSide::Response => "http-response",
            RuleSide::AfterResponse => "http-after-response",
        }
    }

    pub(crate) fn actions(self) -> &'static [&'static str] {
        match self {
            RuleSide::Request => &[
                "allow",
                "deny",
                "redirect",
                "return",
                "set-header",
                "add-header",
                "del-header",
                "replace-header",
                "replace-value",
                "set-path",
                "set-query",
                "replace-path",
                "track-sc0",
                "track-sc1",
                "track-sc2",
                "sc-inc-gpc0(0)",
                "sc-inc-gpc0(1)",
                "sc-inc-gpc0(2)",
                "sc-set-gpt0(0)",
                "sc-set-gpt0(1)",
                "sc-set-gpt0(2)",
                "set-method",
                "set-uri",
                "cache-use",
            ],
            RuleSide::Response => &[
                "allow",
                "deny",
                "set-header",
                "add-header",
                "del-header",
                "replace-header",
                "replace-value",
                "set-status",
                "cache-store",
            ],
            RuleSide::AfterResponse => &[
                "allow",
                "set-header",
                "add-header",
                "del-header",
                "replace-header",
                "replace-value",
                "set-status",
            ],
        }
    }
}

/// One `http-request` or `http-response` action with its arguments (the condition is
/// split off already).
pub(crate) fn http_action(args: &mut Args, side: RuleSide) -> Result<HttpAction, Problem> {
    let actions = side.actions();
    let a = args.want(&format!("action ({})", actions.join(", ")))?;
    // `set-var(scope.name) EXPR` / `unset-var(scope.name)`: the variable is in the word.
    if side == RuleSide::Request
        && let Some((verb, var)) = a
            .text
            .strip_suffix(')')
            .and_then(|t| t.split_once('('))
            .filter(|(v, _)| matches!(*v, "set-var" | "unset-var"))
    {
        let (scope, name) =
            crate::acl::parse_var_name(var).map_err(|m| Problem::new(a.pos + verb.len() + 1, m))?;
        if verb == "unset-var" {
            args.done()?;
            return Ok(HttpAction::UnsetVar { scope, name });
        }
        let e = args.want("expression (a fetch and converters, e.g. `req.hdr(host),lower`)")?;
        let expr = crate::acl::SampleExpr::compile(&e.text)
            .map(|x| Smp::compiled_from(e.text.clone(), x))
            .map_err(|x| Problem::new(e.pos + x.offset, x.message))?;
        args.done()?;
        return Ok(HttpAction::SetVar { scope, name, expr });
    }
    let other = match side {
        RuleSide::Request => RuleSide::Response,
        RuleSide::Response | RuleSide::AfterResponse => RuleSide::Request,
    };
    if !actions.contains(&a.text.as_str()) && other.actions().contains(&a.text.as_str()) {
        return Err(Problem::new(
            a.pos,
            format!(
                "`{}` is an {} action, not an {} one",
                a.text,
                other.keyword(),
                side.keyword()
            ),
        ));
    }
    if !actions.contains(&a.text.as_str()) {
        return Err(Problem::new(
            a.pos,
            format!(
                "unsupported {} action `{}`{}",
                side.keyword(),
                a.text,
                match hint(&a.text, actions.iter().copied()) {
                    h if h.is_empty() => format!(" (supported: {})", actions.join(", ")),
                    h => h,
                }
            ),
        ));
    }
    let action = match a.text.as_str() {
        "allow" => {
            // HAProxy: `allow` takes no argument (`allow deny …` is an error, not `allow`).
            args.done()?;
            HttpAction::Allow
        }
        "deny" => {
            // HAProxy: a denied request gets 403, a denied response becomes a 502.
            let mut status = match side {
                RuleSide::Request => 403,
                RuleSide::Response | RuleSide::AfterResponse => 502,
            };
            while let Some(t) = args.next() {
                match t.text.as_str() {
                    "deny_status" => status = number(args.value_of(t)?, "deny_status", 200, 599)?,
                    other => {
                        return Err(Problem::new(
                            t.pos,
                            format!(
                                "unexpected `{other}` after deny{}",
                                hint(other, ["deny_status"])
                            ),
                        ));
                    }
                }
            }
            HttpAction::Deny { status }
        }
        "redirect" => {
            let k = args.want("redirect type (location, prefix or scheme)")?;
            let kind = match k.text.as_str() {
                "location" => RedirectKind::Location,
                "prefix" => RedirectKind::Prefix,
                "scheme" => RedirectKind::Scheme,
                other => {
                    return Err(Problem::new(
                        k.pos,
                        format!(
                            "unknown redirect type `{other}` (expected location, prefix or scheme){}",
                            hint(other, ["location", "prefix", "scheme"])
                        ),
                    ));
                }
            };
            // A log-format string, like header values (HAProxy's `http-request redirect`).
            let target = log_format(args.want("redirect target")?, "redirect target")?;
            let mut r = Redirect {
                kind,
                target,
                code: 302,
                drop_query: false,
            };
            while let Some(t) = args.next() {
                match t.text.as_str() {
                    "code" => {
                        let v = args.value_of(t)?;
                        r.code = match v.text.as_str() {
                            "301" => 301,
                            "302" => 302,
                            "303" => 303,
                            "307" => 307,
                            "308" => 308,
                            _ => {
                                return Err(Problem::new(
                                    v.pos,
                                    format!(
                                        "redirect code must be 301, 302, 303, 307 or 308, not `{}`",
                                        v.text
                                    ),
                                ));
                            }
                        };
                    }
                    "drop-query" => r.drop_query = true,
                    other => {
                        return Err(Problem::new(
                            t.pos,
                            format!(
                                "unknown redirect option `{other}`{}",
                                hint(other, ["code", "drop-query"])
                            ),
                        ));
                    }
                }
            }
            HttpAction::Redirect(r)
        }
        "set-header" | "add-header" => {
            let name = args.want("header name")?.text.clone();
            let value = log_format(args.want("header value")?, "header value")?;
            args.done()?;
            if a.text == "set-header" {
                HttpAction::SetHeader { name, value }
            } else {
                HttpAction::AddHeader { name, value }
            }
        }
        "del-header" => {
            let name = args.want("header name")?.text.clone();
            args.done()?;
            HttpAction::DelHeader { name }
        }
        "set-path" | "set-query" | "set-method" | "set-uri" => {
            let t = args.want(a.text.trim_start_matches("set-"))?;
            if t.text.is_empty() {
                // HAProxy: "expects exactly 1 argument <format>".
                return Err(Problem::new(
                    t.pos,
                    format!("{} needs a non-empty format", a.text),
                ));
            }
            let value = log_format(t, "value")?;
            args.done()?;
            match a.text.as_str() {
                "set-path" => HttpAction::SetPath { value },
                "set-query" => HttpAction::SetQuery { value },
                "set-method" => HttpAction::SetMethod { value },
                _ => HttpAction::SetUri { value },
            }
        }
        "replace-path" => {
            let regex = regex_arg(args.want("regex")?)?;
            let replace = log_format(args.want("replacement")?, "replacement")?;
            args.done()?;
            HttpAction::ReplacePath { regex, replace }
        }
        "replace-header" | "replace-value" => {
            let name = args.want("header name")?.text.clone();
            let regex = regex_arg(args.want("regex")?)?;
            let replace = log_format(args.want("replacement")?, "replacement")?;
            args.done()?;
            HttpAction::ReplaceHeader {
                name,
                regex,
                replace,
                each_value: a.text == "replace-value",
            }
        }
        "return" => HttpAction::Return(http_return(args)?),
        "track-sc0" | "track-sc1" | "track-sc2" => {
            let slot = usize::from(a.text.as_bytes()[8] - b'0');
            let k = args.want("key (a sample expression such as `src`)")?;
            let key = crate::acl::SampleExpr::compile(&k.text)
                .map(|e| Smp::compiled_from(k.text.clone(), e))
                .map_err(|e| Problem::new(k.pos + e.offset, e.message))?;
            let mut table = None;
            while let Some(t) = args.next() {
                match t.text.as_str() {
                    "table" => table = Some(args.value_of(t)?.text.clone()),
                    other => {
                        return Err(Problem::new(
                            t.pos,
                            format!(
                                "unexpected `{other}` after {}{}",
                                a.text,
                                hint(other, ["table"])
                            ),
                        ));
                    }
                }
            }
            HttpAction::TrackSc { slot, key, table }
        }
        "sc-inc-gpc0(0)" | "sc-inc-gpc0(1)" | "sc-inc-gpc0(2)" => {
            let slot = usize::from(a.text.as_bytes()[12] - b'0');
            args.done()?;
            HttpAction::ScIncGpc0 { slot }
        }
        "sc-set-gpt0(0)" | "sc-set-gpt0(1)" | "sc-set-gpt0(2)" => {
            let slot = usize::from(a.text.as_bytes()[12] - b'0');
            let v = args.want("value (an integer)")?;
            let value = v.text.parse::<i64>().map_err(|_| {
                Problem::new(
                    v.pos,
                    format!("sc-set-gpt0 takes an integer value, not `{}`", v.text),
                )
            })?;
            args.done()?;
            HttpAction::ScSetGpt0 { slot, value }
        }
        "cache-use" | "cache-store" => {
            let name = args.want("cache name")?.text.clone();
            args.done()?;
            if a.text == "cache-use" {
                HttpAction::CacheUse(name)
            } else {
                HttpAction::CacheStore(name)
            }
        }
        "set-status" => {
            let status = number(args.want("status code")?, "status", 100, 999)?;
            let mut reason = None;
            while let Some(t) = args.next() {
                match t.text.as_str() {
                    "reason" => {
                        let r = args.value_of(t)?;
                        if hyper::ext::ReasonPhrase::try_from(r.text.as_bytes()).is_err() {
                            return Err(Problem::new(
                                r.pos,
                                format!(
                                    "reason `{}` is no valid reason phrase (visible ASCII, spaces and tabs)",
                                    r.text
                                ),
                            ));
                        }
                        reason = Some(r.text.clone());
                    }
                    other => {
                        return Err(Problem::new(
                            t.pos,
                            format!(
                                "unexpected `{other}` after set-status{}",
                                hint(other, ["reason"])
                            ),
                        ));
                    }
                }
            }
            HttpAction::SetStatus { status, reason }
        }
        other => {
            return Err(Problem::new(
                a.pos,
                format!("unsupported {} action `{other}`", side.keyword()),
            ));
        }
    };
    Ok(action)
}

/// One `compression` line (without the keyword) added to `c`: `algo ALGO…`, `type
/// TYPE…`, `offload`, `direction response`, `minsize-res SIZE` (HAProxy 2.6's words, with
/// 2.8's `algo-res`/`type-res`/`direction` and 3.2's `minsize-res`; `br` and `zstd` beyond
/// HAProxy's algorithms).
pub(crate) fn compression(args: &mut Args, c: &mut Compression) -> Result<(), Problem> {
    const WORDS: [&str; 7] = [
        "algo",
        "algo-res",
        "type",
        "type-res",
        "offload",
        "direction",
        "minsize-res",
    ];
    let w = args.want("`algo`, `type`, `offload`, `direction` or `minsize-res`")?;
    match w.text.as_str() {
        "algo" | "algo-res" => {
            let mut any = false;
            while let Some(t) = args.next() {
                any = true;
                let Some((_, a)) = CompAlgo::ALL.iter().find(|(n, _)| *n == t.text) else {
                    let names: Vec<&str> = CompAlgo::ALL.iter().map(|(n, _)| *n).collect();
                    return Err(Problem::new(
                        t.pos,
                        format!(
                            "unknown compression algorithm `{}` (supported: {}){}",
                            t.text,
                            names.join(", "),
                            hint(&t.text, names.iter().copied())
                        ),
                    ));
                };
                if !c.algos.contains(a) {
                    c.algos.push(*a);
                }
            }
            if !any {
                return Err(Problem::new(w.pos, "`algo` needs at least one algorithm"));
            }
        }
        "type" | "type-res" => {
            let mut any = false;
            while let Some(t) = args.next() {
                any = true;
                c.types.push(t.text.clone());
            }
            if !any {
                return Err(Problem::new(w.pos, "`type` needs at least one MIME type"));
            }
        }
        "offload" => {
            args.done()?;
            c.offload = true;
        }
        "direction" => {
            let d = args.want("direction (response)")?;
            match d.text.as_str() {
                "response" => {}
                "request" | "both" => {
                    return Err(Problem::new(
                        d.pos,
                        format!("`direction {}`: lb compresses responses only", d.text),
                    ));
                }
                other => {
                    return Err(Problem::new(
                        d.pos,
                        format!(
                            "unknown direction `{other}` (expected response){}",
                            hint(other, ["response", "request", "both"])
                        ),
                    ));
                }
            }
            args.done()?;
        }
        "minsize-res" => {
            let t = args.want("size in bytes")?;
            c.min_size = size_bytes(t)?;
            args.done()?;
        }
        other => {
            return Err(Problem::new(
                w.pos,
                format!(
                    "unknown compression keyword `{other}` (supported: {}){}",
                    WORDS.join(", "),
                    hint(other, WORDS)
                ),
            ));
        }
    }
    Ok(())
}

/// A size in bytes, with HAProxy's optional `k`, `m` or `g` suffix (powers of 1024).
pub(crate) fn size_bytes(t: &Tok) -> Result<u64, Problem> {
    let s = t.text.as_str();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| {
            Problem::new(
                t.pos,
                format!("`{s}` is no size (a number of bytes, optionally with k, m or g)"),
            )
        })
}

/// A regular expression argument, compiled here once and kept for the proxy.
fn regex_arg(t: &Tok) -> Result<Re, Problem> {
    regex::Regex::new(&t.text)
        .map(|re| Re::compiled_from(t.text.clone(), re))
        .map_err(|e| {
            let text = e.to_string();
            let why = text.lines().last().unwrap_or("invalid").trim().to_owned();
            Problem::new(t.pos, format!("regex `{}`: {why}", t.text))
        })
}

/// `return [status N] [content-type TYPE] [string TEXT | lf-string FMT] [hdr NAME FMT]…`.
fn http_return(args: &mut Args) -> Result<HttpReturn, Problem> {
    let mut r = HttpReturn {
        status: 200,
        content_type: None,
        body: None,
        headers: Vec::new(),
    };
    let mut body_tok: Option<&Tok> = None;
    while let Some(t) = args.next() {
        match t.text.as_str() {
            "status" => r.status = number(args.value_of(t)?, "status", 200, 599)?,
            "content-type" => r.content_type = Some(args.value_of(t)?.text.clone()),
            "string" | "lf-string" if body_tok.is_some() => {
                return Err(Problem::new(
                    t.pos,
                    "only one body (`string` or `lf-string`)",
                ));
            }
            "string" => {
                body_tok = Some(t);
                let v = args.value_of(t)?;
                let text = v.text.replace('%', "%%");
                let f = FormatString::compile(&text)
                    .map_err(|e| Problem::new(v.pos, format!("string: {}", e.message)))?;
                r.body = Some(Fmt::compiled_from(text, f));
            }
            "lf-string" => {
                body_tok = Some(t);
                r.body = Some(log_format(args.value_of(t)?, "lf-string")?);
            }
            "hdr" => {
                let name = args.value_of(t)?.text.clone();
                let value = log_format(args.want("header value")?, "header value")?;
                r.headers.push((name, value));
            }
            "file" | "lf-file" | "errorfile" | "errorfiles" | "default-errorfiles" => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "`return {}` is not supported (use `string` or `lf-string`)",
                        t.text
                    ),
                ));
            }
            other => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "unexpected `{other}` in return{}",
                        hint(
                            other,
                            ["status", "content-type", "string", "lf-string", "hdr"]
                        )
                    ),
                ));
            }
        }
    }
    if let (Some(t), None) = (body_tok, &r.content_type) {
        return Err(Problem::new(
            t.pos,
            "a `return` body needs a `content-type` (as in HAProxy)",
        ));
    }
    Ok(r)
}

/// A `tcp-request` line: `inspect-delay D` or `content|connection accept|reject`.
pub(crate) enum TcpLine {
    InspectDelay(Duration),
    Rule(TcpAction, bool),
}

pub(crate) fn tcp_request(args: &mut Args) -> Result<TcpLine, Problem> {
    let k = args.want("`inspect-delay` or `content`")?;
    match k.text.as_str() {
        "inspect-delay" => {
            let d = duration_tok(args.value_of(k)?)?;
            args.done()?;
            Ok(TcpLine::InspectDelay(d))
        }
        "content" | "connection" => {
            let a = args.want("`accept` or `reject`")?;
            let action = match a.text.as_str() {
                "accept" => TcpAction::Accept,
                "reject" => TcpAction::Reject,
                other => {
                    return Err(Problem::new(
                        a.pos,
                        format!(
                            "unsupported tcp-request action `{other}` (supported: accept, reject){}",
                            hint(other, ["accept", "reject"])
                        ),
                    ));
                }
            };
            args.done()?;
            Ok(TcpLine::Rule(action, k.text == "content"))
        }
        other => Err(Problem::new(
            k.pos,
            format!(
                "unsupported tcp-request rule `{other}` (supported: inspect-delay, content, connection){}",
                hint(other, ["inspect-delay", "content", "connection"])
            ),
        )),
    }
}

/// `192.0.2.0/24`, `2001:db8::/32`, or a single address.
pub(crate) fn cidr(t: &Tok) -> Result<IpNet, Problem> {
    let (a, p) = match t.text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (t.text.as_str(), None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| Problem::new(t.pos, format!("`{a}` is not an IP address")))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match p {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(Problem::new(
                    t.pos + a.len() + 1,
                    format!("invalid prefix length `{p}` (0 to {max})"),
                ));
            }
        },
    };
    Ok(IpNet {
        addr: mask(addr, prefix_len),
        prefix_len,
    })
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// HAProxy's `errorfile` status codes.
pub(crate) const ERRORFILE_CODES: &[u16] = &[
    200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 431, 500, 501, 502, 503, 504,
];

pub(crate) const TIMEOUT_NAMES: &[&str] = &[
    "client",
    "connect",
    "server",
    "http-request",
    "http-keep-alive",
    "queue",
    "tunnel",
    "check",
];

/// HAProxy's size: a number with an optional `k`, `m` or `g` (powers of 1024).
fn size_tok(t: &Tok, what: &str) -> Result<usize, Problem> {
    let bad = || {
        Problem::new(
            t.pos,
            format!(
                "{what} must be a number with an optional k, m or g, not `{}`",
                t.text
            ),
        )
    };
    let (num, mult) = match t.text.as_bytes().last() {
        Some(b'k' | b'K') => (&t.text[..t.text.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&t.text[..t.text.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&t.text[..t.text.len() - 1], 1 << 30),
        _ => (t.text.as_str(), 1),
    };
    let n: usize = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

/// `stick-table type ip|ipv6|integer|string [len N]|binary [len N] size S [expire E]
/// [nopurge] [store D[,D…]]…`, as HAProxy 2.6 reads it.
pub(crate) fn stick_table(args: &mut Args) -> Result<StickTableSpec, Problem> {
    let mut key = None;
    let mut size = None;
    let mut expire = None;
    let mut nopurge = false;
    let mut store: Vec<(crate::acl::StkData, Option<Duration>)> = Vec::new();
    const OPTIONS: [&str; 5] = ["type", "size", "expire", "nopurge", "store"];
    while let Some(t) = args.next() {
        match t.text.as_str() {
            "type" => {
                let v = args.value_of(t)?;
                let len = |args: &mut Args| -> Result<usize, Problem> {
                    match args.peek() {
                        Some(l) if l.text == "len" => {
                            args.next();
                            number(args.value_of(l)?, "len", 1, 65535)
                        }
                        _ => Ok(32),
                    }
                };
                key = Some(match v.text.as_str() {
                    "ip" => StickKey::Ip,
                    "ipv6" => StickKey::Ipv6,
                    "integer" => StickKey::Integer,
                    "string" => StickKey::String(len(args)?),
                    "binary" => StickKey::Binary(len(args)?),
                    other => {
                        return Err(Problem::new(
                            v.pos,
                            format!(
                                "unknown stick-table type `{other}` (expected ip, ipv6, integer, string or binary){}",
                                hint(other, ["ip", "ipv6", "integer", "string", "binary"])
                            ),
                        ));
                    }
                });
            }
            "size" => {
                let n = size_tok(args.value_of(t)?, "size")?;
                if n == 0 {
                    return Err(Problem::new(t.pos, "a stick-table needs a size above 0"));
                }
                size = Some(n);
            }
            "expire" => expire = Some(duration_tok(args.value_of(t)?)?),
            "nopurge" => nopurge = true,
            "store" => {
                let v = args.value_of(t)?;
                let mut at = v.pos;
                for item in v.text.split(',') {
                    let (name, period) = match item.split_once('(') {
                        Some((n, rest)) => (n, Some(rest.strip_suffix(')').unwrap_or(rest))),
                        None => (item, None),
                    };
                    let Some(data) = crate::acl::StkData::from_name(name) else {
                        let names = crate::acl::StkData::ALL.map(|d| d.name());
                        return Err(Problem::new(
                            at,
                            format!(
                                "unsupported stick-table data type `{name}`{}",
                                match hint(name, names) {
                                    h if h.is_empty() =>
                                        format!(" (supported: {})", names.join(", ")),
                                    h => h,
                                }
                            ),
                        ));
                    };
                    let period = match (data.is_rate(), period) {
                        (true, Some(p)) => {
                            Some(parse_duration(p).map_err(|m| Problem::new(at, m))?)
                        }
                        (true, None) => {
                            return Err(Problem::new(
                                at,
                                format!("`{name}` needs a period, e.g. `{name}(10s)`"),
                            ));
                        }
                        (false, Some(_)) => {
                            return Err(Problem::new(at, format!("`{name}` takes no period")));
                        }
                        (false, None) => None,
                    };
                    if period.is_some_and(|p| p.is_zero()) {
                        return Err(Problem::new(
                            at,
                            format!("the period of `{name}` must be above 0"),
                        ));
                    }
                    store.retain(|(d, _)| *d != data);
                    store.push((data, period));
                    at += item.len() + 1;
                }
            }
            other => {
                return Err(Problem::new(
                    t.pos,
                    format!(
                        "unknown stick-table option `{other}`{}",
                        hint(other, OPTIONS)
                    ),
                ));
            }
        }
    }
    let key = key.ok_or_else(|| Problem::new(args.end, "stick-table needs `type`"))?;
    let size = size.ok_or_else(|| Problem::new(args.end, "stick-table needs `size`"))?;
    Ok(StickTableSpec {
        key,
        size,
        expire,
        nopurge,
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("150us"), Ok(Duration::from_micros(150)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(
            parse_duration("20x"),
            Err("invalid duration `20x`: unknown unit `x` (expected us, ms, s, m, h or d)".into())
        );
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
        assert!(parse_duration("9999999999999d").is_err());
    }

    fn tok(s: &str) -> Tok {
        Tok {
            text: s.into(),
            pos: 100,
            off: 0,
        }
    }

    #[test]
    fn bind_addresses() {
        let ok = |s: &str| bind_addr(&tok(s)).map(|a| a.to_string()).map_err(|p| p.msg);
        assert_eq!(ok("*:80").as_deref(), Ok("0.0.0.0:80"));
        assert_eq!(ok(":8080").as_deref(), Ok("0.0.0.0:8080"));
        assert_eq!(ok("[::]:443").as_deref(), Ok("[::]:443"));
        assert_eq!(ok("1.2.3.4:80").as_deref(), Ok("1.2.3.4:80"));
        assert_eq!(ok("[2001:db8::1]:80").as_deref(), Ok("[2001:db8::1]:80"));
        assert!(ok("2001:db8::1:80").is_err());
        assert!(ok("*:0").is_err());
        assert!(ok("*:80-81").is_err());
        assert!(ok("*").is_err());
        let p = bind_addr(&tok("1.2.3.4:99999")).expect_err("bad port");
        assert_eq!(p.pos, 108);
    }

    #[test]
    fn cidrs() {
        let net = cidr(&tok("192.0.2.7/24")).expect("cidr");
        assert_eq!(net.addr.to_string(), "192.0.2.0");
        assert_eq!(net.prefix_len, 24);
        assert_eq!(cidr(&tok("2001:db8::1")).expect("v6").prefix_len, 128);
        assert!(cidr(&tok("10.0.0.0/33")).is_err());
    }
}
