//! The typed, validated configuration: what `config::load` produces and every other part of
//! lb consumes. `defaults` are already folded into each frontend and backend, host names are
//! resolved, durations parsed and ACL conditions compiled. Nothing downstream parses strings.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::acl::{AclSet, Condition};

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from.
    pub source: PathBuf,
    pub global: Global,
    /// The XDP tier; `None` means every `mode tcp` frontend runs in userspace.
    pub dataplane: Option<Dataplane>,
    /// `[announce]`: VIPs put on a dummy interface for a BGP daemon to export.
    pub announce: Option<Announce>,
    /// In file order.
    pub frontends: Vec<Frontend>,
    /// In file order.
    pub backends: Vec<Backend>,
    /// `[resolvers.NAME]` sections, in file order.
    pub resolvers: Vec<Resolvers>,
    /// `[cache.NAME]` sections, in file order.
    pub caches: Vec<CacheSpec>,
}

/// `[cache.NAME]`: an HTTP cache (HAProxy's `cache` section), used by `http-request
/// cache-use NAME` and `http-response cache-store NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub name: String,
    /// `total-max-size` (written in MiB, as HAProxy's), in bytes: headers and bodies of
    /// every entry together.
    pub total_max_size: u64,
    /// `max-object-size` in bytes (default: a 256th of `total-max-size`).
    pub max_object_size: u64,
    /// `max-age` in seconds (default 60): no entry stays fresh longer.
    pub max_age: u32,
    /// `process-vary on`: responses with `Vary` (on accept-encoding, referer, origin) are
    /// stored, one entry per variant; off (the default), never.
    pub process_vary: bool,
    /// `max-secondary-entries` (default 10): variants per URL.
    pub max_secondary_entries: usize,
}

/// `compression …` lines of a proxy (HAProxy's; `br` and `zstd` beyond it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compression {
    /// `algo`, in the order written.
    pub algos: Vec<CompAlgo>,
    /// `type`: Content-Type prefixes (ASCII case ignored); empty: every type.
    pub types: Vec<String>,
    /// `offload`: Accept-Encoding is removed from requests to the servers.
    pub offload: bool,
    /// `minsize-res`: a response whose Content-Length is below it goes as it is.
    pub min_size: u64,
}

/// The `minsize-res` of a `compression` without one.
pub const DEFAULT_COMPRESSION_MIN_SIZE: u64 = 256;

/// A `compression algo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompAlgo {
    /// No coding (HAProxy's debugging algorithm): the response goes as it is, chunked.
    Identity,
    Gzip,
    /// zlib-wrapped deflate.
    Deflate,
    /// Deflate without the zlib wrapper, announced as `deflate`.
    RawDeflate,
    /// Brotli (`br`), beyond HAProxy.
    Br,
    /// Zstandard (`zstd`), beyond HAProxy.
    Zstd,
}

impl CompAlgo {
    /// `(config name, algorithm)`.
    pub const ALL: [(&'static str, CompAlgo); 6] = [
        ("identity", CompAlgo::Identity),
        ("gzip", CompAlgo::Gzip),
        ("deflate", CompAlgo::Deflate),
        ("raw-deflate", CompAlgo::RawDeflate),
        ("br", CompAlgo::Br),
        ("zstd", CompAlgo::Zstd),
    ];

    /// The Accept-Encoding / Content-Encoding token (`None`: identity has none).
    pub fn token(self) -> Option<&'static str> {
        match self {
            CompAlgo::Identity => None,
            CompAlgo::Gzip => Some("gzip"),
            CompAlgo::Deflate | CompAlgo::RawDeflate => Some("deflate"),
            CompAlgo::Br => Some("br"),
            CompAlgo::Zstd => Some("zstd"),
        }
    }
}

/// `[global]`.
#[derive(Debug, Clone)]
pub struct Global {
    /// Admin listener (`/stats`, `/stats.json`, `/metrics`, `/healthz`, runtime API).
    pub admin: SocketAddr,
    /// Bearer token the admin API requires; mandatory when `admin` is not loopback.
    pub admin_token: Option<String>,
    /// Host names (besides the listener's own address) that state-changing admin requests
    /// may carry in `Host` and `Origin`.
    pub admin_hosts: Vec<String>,
    /// `stats socket` lines: HAProxy's runtime CLI on unix sockets.
    pub stats_sockets: Vec<StatsSocket>,
    /// `log` targets (HAProxy's global `log` lines), for proxies' `log global`.
    pub log: Vec<crate::syslog::LogTarget>,
    pub log_format: LogFormat,
    /// L7 worker threads; `None` = one per core.
    pub threads: Option<usize>,
    /// CPU binding of the L7 worker threads (HAProxy's `cpu-map`); `None` = unbound.
    pub cpu_map: Option<CpuMap>,
    /// Seed of the L4 packet hash and the Maglev permutation, shared by every node.
    pub hash_seed: u32,
    /// Sessions kept for TLS resumption by session ID (HAProxy's `tune.ssl.cachesize`);
    /// 0 disables the cache.
    pub ssl_cache_size: usize,
    /// HAProxy's global `maxconn`: concurrent client connections over every userspace
    /// listener; at the limit lb stops accepting. `None` = unlimited.
    pub maxconn: Option<u32>,
    /// HAProxy's process settings: identity, chroot, pidfile, `ulimit-n`,
    /// `hard-stop-after`.
    pub process: Process,
}

/// A user or group: by name (looked up when `lb run` starts) or by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ident {
    Name(String),
    Id(u32),
}

/// `[global]` process settings (HAProxy's `user`/`uid`, `group`/`gid`, `chroot`,
/// `pidfile`, `ulimit-n`, `hard-stop-after`). `lb run` applies them; see `crate::process`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Run as this user once listeners are bound and XDP is loaded.
    pub user: Option<Ident>,
    /// Run with this group (default: the user's primary group).
    pub group: Option<Ident>,
    /// `chroot` into this directory after loading.
    pub chroot: Option<PathBuf>,
    /// Written with lb's PID at start, removed at exit.
    pub pidfile: Option<PathBuf>,
    /// The open-files limit (soft and hard) set at start.
    pub ulimit_n: Option<u64>,
    /// On SIGTERM, connections still open after this are closed.
    pub hard_stop_after: std::time::Duration,
}

/// lb's drain limit without `hard_stop_after`.
pub const DEFAULT_HARD_STOP_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for Process {
    fn default() -> Self {
        Process {
            user: None,
            group: None,
            chroot: None,
            pidfile: None,
            ulimit_n: None,
            hard_stop_after: DEFAULT_HARD_STOP_AFTER,
        }
    }
}

/// `stats socket PATH [mode OCTAL] [level user|operator|admin]` (HAProxy's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSocket {
    pub path: PathBuf,
    /// Permission bits of the socket file; `None` leaves the umask's.
    pub mode: Option<u32>,
    pub level: CliLevel,
}

/// What a stats socket session may do (HAProxy's CLI levels, lowest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CliLevel {
    /// Read-only commands that show no sensitive data.
    User,
    /// Also `show sess` and other operational reads (HAProxy's default).
    Operator,
    /// Also commands that change state.
    Admin,
}

impl CliLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            CliLevel::User => "user",
            CliLevel::Operator => "operator",
            CliLevel::Admin => "admin",
        }
    }
}

/// Parses the words after `stats socket` (HAProxy's syntax; lb takes unix paths with `mode`
/// and `level`). `Err((word index, message))`.
pub fn parse_stats_socket(words: &[&str]) -> Result<StatsSocket, (usize, String)> {
    let Some(path) = words.first() else {
        return Err((0, "expected a socket path".to_owned()));
    };
    if path.contains('@') || path.parse::<std::net::SocketAddr>().is_ok() || path.starts_with(':') {
        return Err((
            0,
            format!(
                "`{path}`: lb's stats socket is a unix socket path; the TCP admin API is `admin`"
            ),
        ));
    }
    let mut out = StatsSocket {
        path: PathBuf::from(path),
        mode: None,
        level: CliLevel::Operator,
    };
    let mut i = 1;
    while i < words.len() {
        let value = words.get(i + 1).copied();
        match (words[i], value) {
            ("mode", Some(v)) => match u32::from_str_radix(v, 8) {
                Ok(m) if m <= 0o777 => out.mode = Some(m),
                _ => {
                    return Err((
                        i + 1,
                        format!("`mode {v}`: expected octal permissions, e.g. 600"),
                    ));
                }
            },
            ("level", Some(v)) => {
                out.level = match v {
                    "user" => CliLevel::User,
                    "operator" => CliLevel::Operator,
                    "admin" => CliLevel::Admin,
                    _ => {
                        return Err((
                            i + 1,
                            format!("`level {v}`: expected user, operator or admin"),
                        ));
                    }
                }
            }
            ("mode" | "level", None) => {
                return Err((i, format!("`{}` needs a value", words[i])));
            }
            (other, _) => {
                return Err((
                    i,
                    format!(
                        "`{other}` is not supported on a stats socket (supported: mode, level)"
                    ),
                ));
            }
        }
        i += 2;
    }
    Ok(out)
}

/// The stats page a frontend serves itself (HAProxy's `stats enable|uri|realm|auth|refresh|
/// hide-version`), with lb's HTML page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsPage {
    /// Requests whose path (with query) starts with it get the page.
    pub uri: String,
    /// Basic authentication realm.
    pub realm: String,
    /// `user:password` pairs; empty = no authentication.
    pub auth: Vec<(String, String)>,
    /// Refresh interval of the page; `None` = lb's default.
    pub refresh: Option<Duration>,
    /// Leave lb's version out of the page.
    pub hide_version: bool,
}

impl Default for StatsPage {
    /// HAProxy's defaults: `/haproxy?stats`, realm `HAProxy Statistics`.
    fn default() -> Self {
        Self {
            uri: "/haproxy?stats".to_owned(),
            realm: "HAProxy Statistics".to_owned(),
            auth: Vec::new(),
            refresh: None,
            hide_version: false,
        }
    }
}

/// Applies one `stats …` line (the words after `stats`) to `page`. `Err((word index,
/// message))`; the words lb does not take (`admin`, `scope`, `show-*`) are errors.
pub fn stats_line(page: &mut StatsPage, words: &[&str]) -> Result<(), (usize, String)> {
    let arg = |i: usize| {
        words.get(i).copied().ok_or_else(|| {
            (
                i.saturating_sub(1),
                format!("`stats {}` needs a value", words[0]),
            )
        })
    };
    match words.first().copied() {
        Some("enable") if words.len() == 1 => {}
        Some("hide-version") if words.len() == 1 => page.hide_version = true,
        Some("uri") => {
            let u = arg(1)?;
            if !u.starts_with('/') {
                return Err((
                    1,
                    format!("`stats uri {u}`: expected a path starting with /"),
                ));
            }
            page.uri = u.to_owned();
        }
        Some("realm") => {
            arg(1)?;
            page.realm = words.get(1..).unwrap_or_default().join(" ");
        }
        Some("auth") => {
            let a = arg(1)?;
            let Some((u, p)) = a.split_once(':') else {
                return Err((1, format!("`stats auth {a}`: expected user:password")));
            };
            page.auth.push((u.to_owned(), p.to_owned()));
        }
        Some("refresh") => {
            let t = arg(1)?;
            page.refresh = Some(crate::config::directives::parse_duration(t).map_err(|e| (1, e))?);
        }
        Some(w @ ("enable" | "hide-version")) => {
            return Err((1, format!("`stats {w}` takes no further words")));
        }
        Some(w) => {
            return Err((
                0,
                format!(
                    "`stats {w}` is not supported (supported: enable, uri, realm, auth, refresh, \
                     hide-version; the admin API changes servers)"
                ),
            ));
        }
        None => {
            return Err((
                0,
                "expected a stats setting, e.g. \"uri /stats\"".to_owned(),
            ));
        }
    }
    Ok(())
}

/// Which CPU each L7 worker thread is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuMap {
    /// Worker `i` on the `i`-th CPU lb may run on (wrapping), like nginx's
    /// `worker_cpu_affinity auto` or HAProxy's `cpu-map auto:1/1-N 0-(N-1)`.
    Auto,
    /// Worker `i` on CPU `list[i % len]`.
    List(Vec<usize>),
}

impl CpuMap {
    /// The CPU of worker `worker`, given the CPUs the process may run on (ascending).
    pub fn cpu_for(&self, worker: usize, allowed: &[usize]) -> Option<usize> {
        let list = match self {
            CpuMap::Auto => allowed,
            CpuMap::List(l) => l,
        };
        list.get(worker % list.len().max(1)).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Haproxy,
    Json,
}

/// Default `[dataplane] flood_rate`: Katran's `MAX_CONN_RATE` (new flows per second per CPU).
pub const DEFAULT_FLOOD_RATE: u32 = 125_000;

/// `[dataplane]`.
#[derive(Debug, Clone)]
pub struct Dataplane {
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub conntrack_size: u32,
    /// Percent of `conntrack_size` above which lb warns that a flow table is filling
    /// (`conntrack_warn`, default 90).
    pub conntrack_warn: u8,
    /// New flows per second per CPU above which new flows are forwarded without a
    /// flow-table entry (flood mode, `flood_rate`, default [`DEFAULT_FLOOD_RATE`]; 0 = off).
    pub flood_rate: u32,
    pub maglev_table_size: u32,
    /// Globally denied source networks.
    pub deny_src: Vec<IpNet>,
    /// bpffs directory for pinned maps (default `/sys/fs/bpf/lb/<config file stem>`).
    pub pin_path: PathBuf,
}

/// `[announce]`: lb keeps each VIP it serves (with at least one backend UP) as a /32 or
/// /128 on a dummy interface it owns; a BGP daemon (BIRD 2, FRR) exports that interface's
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The dummy interface (default `lb-vips`).
    pub interface: String,
    /// The kind of interface lb creates (`dummy`; `ifb` on kernels without the dummy driver).
    pub kind: AnnounceKind,
    /// The frontends whose VIPs are announced; `None` = every frontend with a bind on a
    /// specific (not wildcard, not loopback) address.
    pub frontends: Option<Vec<String>>,
}

/// Whether a bind address is a VIP `[announce]` may put on its interface: not a wildcard,
/// loopback, multicast or link-local address.
pub fn announceable(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || link_local)
}

/// The kind of the `[announce]` interface: a device that is always up, holds addresses
/// and carries no traffic of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceKind {
    Dummy,
    /// Intermediate Functional Block: for kernels built without `CONFIG_DUMMY`.
    Ifb,
}

impl AnnounceKind {
    /// The name `ip link add … type KIND` and `ip -d link` use.
    pub const fn as_str(self) -> &'static str {
        match self {
            AnnounceKind::Dummy => "dummy",
            AnnounceKind::Ifb => "ifb",
        }
    }
}

/// The default `[announce] interface`.
pub const DEFAULT_ANNOUNCE_INTERFACE: &str = "lb-vips";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Generic,
    /// Native, else generic with a warning.
    Auto,
}

/// An IP network (CIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Http,
}

/// Which tier serves a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The XDP program (`mode tcp` with `[dataplane]` and no content inspection).
    Xdp,
    /// The userspace proxy.
    Userspace,
}

/// HAProxy timeouts; `None` = not set (infinite in HAProxy, warned about by `lb check`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub client: Option<Duration>,
    pub connect: Option<Duration>,
    pub server: Option<Duration>,
    pub http_request: Option<Duration>,
    pub http_keep_alive: Option<Duration>,
    pub queue: Option<Duration>,
    pub tunnel: Option<Duration>,
    pub check: Option<Duration>,
}

/// `[frontend.NAME]` (and the frontend half of a `listen`).
#[derive(Debug, Clone)]
pub struct Frontend {
    pub name: String,
    pub mode: Mode,
    pub tier: Tier,
    pub binds: Vec<Bind>,
    /// Named ACLs, compiled.
    pub acls: AclSet,
    /// `http-request` rules in order.
    pub http_request: Vec<HttpRule>,
    /// `http-response` rules in order (after the backend's).
    pub http_response: Vec<HttpRule>,
    /// `http-after-response` rules in order (after the backend's).
    pub http_after_response: Vec<HttpRule>,
    /// `tcp-request` rules in order (userspace `mode tcp`).
    pub tcp_request: Vec<TcpRequestRule>,
    /// `tcp-request inspect-delay`.
    pub inspect_delay: Option<Duration>,
    /// `use_backend` rules in order; the first match wins.
    pub use_backend: Vec<UseBackend>,
    pub default_backend: Option<String>,
    pub timeouts: Timeouts,
    /// `option forwardfor`.
    pub forwardfor: bool,
    /// Max concurrent client connections; `None` = unlimited.
    pub maxconn: Option<u32>,
    /// Per-frontend denied / allowed sources (XDP tier and userspace alike).
    pub deny_src: Vec<IpNet>,
    pub allow_src: Vec<IpNet>,
    /// `errorfile CODE PATH`: raw HTTP responses, read at load.
    pub errorfiles: BTreeMap<u16, Vec<u8>>,
    /// `stats …`: the stats page this frontend serves; `None` = none.
    pub stats: Option<StatsPage>,
    /// Header limits (431 / 400 when exceeded).
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Emit access logs.
    pub log: bool,
    /// Where access-log lines go; empty: lb's own log (stderr).
    pub log_targets: Vec<crate::syslog::LogTarget>,
    /// `option dontlognull`: no log line for a `mode tcp` session whose client sent nothing.
    pub dontlognull: bool,
    /// `compression …`; `None`: none configured here.
    pub compression: Option<Compression>,
    /// `stick-table …`: the table named after this frontend.
    pub stick_table: Option<StickTableSpec>,
}

/// `stick-table type T [len N] size S [expire E] [nopurge] [store D,…]`: a table of the
/// section that declares it, named after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickTableSpec {
    pub key: StickKey,
    /// The most entries it holds.
    pub size: usize,
    /// An entry not updated for this long goes; `None`: never (then `nopurge` or eviction
    /// of the oldest makes room).
    pub expire: Option<Duration>,
    /// A full table refuses new entries instead of evicting the oldest.
    pub nopurge: bool,
    /// The data types stored, with the period of each rate.
    pub store: Vec<(crate::acl::StkData, Option<Duration>)>,
}

/// A stick table's key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickKey {
    Ip,
    Ipv6,
    Integer,
    /// `string [len N]` (default 32): longer keys are cut.
    String(usize),
    /// `binary [len N]` (default 32): shorter keys are padded with zeros.
    Binary(usize),
}

/// One `bind` line.
#[derive(Debug, Clone)]
pub struct Bind {
    /// `*:80` becomes `0.0.0.0:80`; `[::]:80` for IPv6.
    pub addr: SocketAddr,
    pub tls: Option<BindTls>,
    /// `accept-proxy`: every connection starts with a PROXY protocol header (v1 or v2),
    /// whose addresses stand for the client's.
    pub accept_proxy: bool,
    /// The line as written, for messages.
    pub text: String,
}

/// `ssl crt PEM [crt PEM…] alpn LIST` on a bind line.
#[derive(Debug, Clone, Default)]
pub struct BindTls {
    /// PEM files, each holding a certificate chain and its private key. The first is the
    /// default when SNI matches none.
    pub certs: Vec<PathBuf>,
    /// ALPN protocols in preference order; default `["h2", "http/1.1"]`.
    pub alpn: Vec<String>,
    /// `tls-ticket-keys FILE`: HAProxy's ticket key file (else an in-process rotating key).
    pub ticket_keys: Option<PathBuf>,
    /// `no-tls-tickets`: no stateless tickets (the session cache still resumes).
    pub no_tickets: bool,
    /// `strict-sni`: a handshake whose SNI matches no certificate is refused (no default).
    pub strict_sni: bool,
    /// `strict-alpn` (lb's extension): a client whose ALPN list has nothing in common with
    /// `alpn` is refused (`no_application_protocol`) instead of served without ALPN.
    pub strict_alpn: bool,
    /// `verify`: whether client certificates are requested and required.
    pub verify: ClientVerify,
    /// `ca-file`: CAs client certificates must chain to, named to clients in the request.
    pub ca_file: Option<PathBuf>,
    /// `ca-verify-file`: more CAs trusted, not named to clients.
    pub ca_verify_file: Option<PathBuf>,
    /// `crl-file`: revocation lists; with one, every certificate of the chain needs an
    /// answer (OpenSSL's `CRL_CHECK_ALL`, as HAProxy sets it).
    pub crl_file: Option<PathBuf>,
    /// `ssl-min-ver`, `ssl-max-ver` (default: TLS 1.2 to 1.3).
    pub min_version: Option<crate::tls_policy::TlsVersion>,
    pub max_version: Option<crate::tls_policy::TlsVersion>,
    /// `ciphersuites` (TLS 1.3) and `ciphers` (TLS 1.2) in preference order; empty: the
    /// defaults.
    pub ciphersuites: Vec<rustls::CipherSuite>,
    pub ciphers: Vec<rustls::CipherSuite>,
    /// `curves`: the key exchange groups in preference order; empty: the provider's.
    pub curves: Vec<rustls::NamedGroup>,
    /// `prefer-client-ciphers`: the client's order picks the suite (else the bind's, as
    /// HAProxy).
    pub prefer_client_ciphers: bool,
    /// The entries of the bind's `crt-list` files, after its `crt` certificates.
    pub crt_list: Vec<CrtEntry>,
}

/// One line of a `crt-list` file.
#[derive(Debug, Clone, Default)]
pub struct CrtEntry {
    /// The PEM file (certificate chain and key).
    pub cert: PathBuf,
    /// SNI filters, lower case: names (wildcards allowed) that replace the certificate's
    /// own for the choice by SNI; `!name` removes one of its names.
    pub filters: Vec<String>,
    /// The bind's settings with the entry's `[options]` applied, when it has any.
    pub tls: Option<Box<BindTls>>,
}

/// `verify` on an `ssl` bind (HAProxy's), about client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientVerify {
    /// Not requested (the default).
    #[default]
    None,
    /// Requested; a client without one is served, one that sends one must pass.
    Optional,
    /// Requested; a handshake without a valid one fails.
    Required,
}

/// What the config compiles once and keeps: log-format strings and regexes.
pub trait Compile: Sized + Clone {
    type Error: Clone;
    fn compile(text: &str) -> Result<Self, Self::Error>;
}

impl Compile for crate::acl::FormatString {
    type Error = crate::acl::AclError;
    fn compile(text: &str) -> Result<Self, Self::Error> {
        crate::acl::FormatString::compile(text)
    }
}

impl Compile for crate::acl::SampleExpr {
    type Error = crate::acl::AclError;
    fn compile(text: &str) -> Result<Self, Self::Error> {
        crate::acl::SampleExpr::compile(text)
    }
}

impl Compile for regex::Regex {
    type Error = regex::Error;
    fn compile(text: &str) -> Result<Self, Self::Error> {
        regex::Regex::new(text)
    }
}

/// A value of the config that is compiled (a format or a regex): its text, and the compiled
/// form, made once by the loader (which reports a bad one at its position) and kept for the
/// proxy, never compiled again. Equal when the texts are; built from a `&str` (e.g. in
/// tests) it compiles on first use.
#[derive(Clone)]
pub struct Compiled<T: Compile> {
    text: String,
    compiled: std::sync::OnceLock<Result<T, T::Error>>,
}

/// A log-format string: header value, redirect target, replacement, body, backend name.
pub type Fmt = Compiled<crate::acl::FormatString>;
/// A regular expression (`replace-path`, `replace-header`, `replace-value`).
pub type Re = Compiled<regex::Regex>;
/// A sample expression (the key of `track-sc`).
pub type Smp = Compiled<crate::acl::SampleExpr>;

impl<T: Compile> Compiled<T> {
    /// A value compiled already from `text`.
    pub fn compiled_from(text: String, value: T) -> Self {
        let compiled = std::sync::OnceLock::new();
        let _ = compiled.set(Ok(value));
        Self { text, compiled }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it holds its compiled form already.
    pub fn is_compiled(&self) -> bool {
        self.compiled.get().is_some()
    }

    /// The compiled form (compiled here only if nothing compiled it before).
    pub fn compiled(&self) -> Result<&T, &T::Error> {
        self.compiled
            .get_or_init(|| T::compile(&self.text))
            .as_ref()
    }
}

impl<T: Compile> From<&str> for Compiled<T> {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

impl<T: Compile> From<String> for Compiled<T> {
    fn from(text: String) -> Self {
        Self {
            text,
            compiled: std::sync::OnceLock::new(),
        }
    }
}

impl<T: Compile> PartialEq for Compiled<T> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<T: Compile> Eq for Compiled<T> {}

impl<T: Compile> std::fmt::Debug for Compiled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

/// An `http-request` or `http-response` rule.
#[derive(Debug, Clone)]
pub struct HttpRule {
    pub action: HttpAction,
    pub cond: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAction {
    Allow,
    Deny {
        status: u16,
    },
    Redirect(Redirect),
    SetHeader {
        name: String,
        value: Fmt,
    },
    AddHeader {
        name: String,
        value: Fmt,
    },
    DelHeader {
        name: String,
    },
    /// `set-status N [reason TEXT]` (`http-response` only).
    SetStatus {
        status: u16,
        reason: Option<String>,
    },
    /// `set-path FMT` (request only): the path, the query kept.
    SetPath {
        value: Fmt,
    },
    /// `set-query FMT` (request only): the query (empty: none).
    SetQuery {
        value: Fmt,
    },
    /// `replace-path REGEX FMT` (request only): a path the regex matches becomes FMT, with
    /// `\1`…`\9` standing for the regex's groups.
    ReplacePath {
        regex: Re,
        replace: Fmt,
    },
    /// `replace-header NAME REGEX FMT` (each whole value) or `replace-value NAME REGEX FMT`
    /// (each comma-separated value): a value the regex matches becomes FMT, with groups.
    ReplaceHeader {
        name: String,
        regex: Re,
        replace: Fmt,
        each_value: bool,
    },
    /// `return [status N] [content-type TYPE] [string TEXT | lf-string FMT] [hdr NAME FMT]…`
    /// (request only): answered by lb, the request goes nowhere.
    Return(HttpReturn),
    /// `track-scN KEY [table T]` (request only): the entry of KEY in table T (default: the
    /// section's own) is tracked by the request in slot N.
    TrackSc {
        slot: usize,
        key: Smp,
        table: Option<String>,
    },
    /// `sc-inc-gpc0(N)`: adds one to gpc0 (and gpc0_rate) of the entry tracked in slot N.
    ScIncGpc0 {
        slot: usize,
    },
    /// `sc-set-gpt0(N) VALUE`: sets gpt0 of the entry tracked in slot N.
    ScSetGpt0 {
        slot: usize,
        value: i64,
    },
    /// `set-var(scope.name) EXPR` (request only): the variable takes the expression's
    /// value (an expression without one leaves it as it was).
    SetVar {
        scope: crate::acl::Scope,
        name: String,
        expr: Smp,
    },
    /// `unset-var(scope.name)` (request only).
    UnsetVar {
        scope: crate::acl::Scope,
        name: String,
    },
    /// `set-method FMT` (request only).
    SetMethod {
        value: Fmt,
    },
    /// `set-uri FMT` (request only): the whole request target.
    SetUri {
        value: Fmt,
    },
    /// `cache-use NAME` (request only): a fresh entry of the cache answers the request.
    CacheUse(String),
    /// `cache-store NAME` (response only): the response is stored in the cache if it may be.
    CacheStore(String),
}

impl HttpAction {
    /// The log-format strings of the action (header values, targets, replacements, bodies).
    pub fn formats(&self) -> Vec<&Fmt> {
        match self {
            HttpAction::SetHeader { value, .. }
            | HttpAction::AddHeader { value, .. }
            | HttpAction::SetPath { value }
            | HttpAction::SetQuery { value }
            | HttpAction::SetMethod { value }
            | HttpAction::SetUri { value } => vec![value],
            HttpAction::Redirect(r) => vec![&r.target],
            HttpAction::ReplacePath { replace, .. } | HttpAction::ReplaceHeader { replace, .. } => {
                vec![replace]
            }
            HttpAction::Return(r) => r
                .body
                .iter()
                .chain(r.headers.iter().map(|(_, v)| v))
                .collect(),
            HttpAction::Allow
            | HttpAction::Deny { .. }
            | HttpAction::DelHeader { .. }
            | HttpAction::SetStatus { .. }
            | HttpAction::TrackSc { .. }
            | HttpAction::ScIncGpc0 { .. }
            | HttpAction::ScSetGpt0 { .. }
            | HttpAction::SetVar { .. }
            | HttpAction::UnsetVar { .. } => Vec::new(),
            HttpAction::CacheUse(_) | HttpAction::CacheStore(_) => Vec::new(),
        }
    }
}

/// `http-request return`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReturn {
    /// Default 200.
    pub status: u16,
    pub content_type: Option<String>,
    /// The body as a log-format string (`string`'s text with its `%` escaped).
    pub body: Option<Fmt>,
    /// `hdr NAME FMT`, in order.
    pub headers: Vec<(String, Fmt)>,
}

/// `http-request redirect location|prefix|scheme TARGET [code N] [drop-query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub kind: RedirectKind,
    pub target: Fmt,
    /// 301, 302 (default), 303, 307 or 308.
    pub code: u16,
    pub drop_query: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    Location,
    Prefix,
    Scheme,
}

/// A `tcp-request` rule (userspace `mode tcp`).
#[derive(Debug, Clone)]
pub struct TcpRequestRule {
    pub action: TcpAction,
    pub cond: Option<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpAction {
    /// `tcp-request content accept`.
    Accept,
    /// `tcp-request content reject` / `tcp-request connection reject`.
    Reject,
}

/// `use_backend NAME if|unless COND`.
#[derive(Debug, Clone)]
pub struct UseBackend {
    /// The backend name, a log-format string (HAProxy's dynamic use_backend).
    pub backend: Fmt,
    pub cond: Condition,
}

/// `[backend.NAME]` (and the backend half of a `listen`).
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub mode: Mode,
    pub balance: Balance,
    pub cookie: Option<CookieSpec>,
    /// Health-check settings for servers marked `check`.
    pub check: CheckSpec,
    pub servers: Vec<Server>,
    pub timeouts: Timeouts,
    /// `retries` (default 3).
    pub retries: u32,
    /// `option redispatch`: retry on another server.
    pub redispatch: bool,
    pub forwardfor: bool,
    /// `http-request` rules evaluated in the backend.
    pub http_request: Vec<HttpRule>,
    /// `http-response` rules evaluated in the backend (before the frontend's).
    pub http_response: Vec<HttpRule>,
    /// `http-after-response` rules of the backend (before the frontend's).
    pub http_after_response: Vec<HttpRule>,
    /// `tcp-request content` rules of a `mode tcp` backend, evaluated once it is chosen.
    pub tcp_request: Vec<TcpRequestRule>,
    /// The backend's `tcp-request inspect-delay`.
    pub inspect_delay: Option<Duration>,
    pub acls: AclSet,
    pub errorfiles: BTreeMap<u16, Vec<u8>>,
    /// `stick-table …`: the table named after this backend.
    pub stick_table: Option<StickTableSpec>,
    /// The backend's `log` targets (`global` expanded): where its servers' health
    /// changes are logged, as HAProxy logs them.
    pub log_targets: Vec<crate::syslog::LogTarget>,
    /// `option log-health-checks`: every check result that moves a server's health is
    /// logged too, not only the UP/DOWN changes.
    pub log_health_checks: bool,
    /// `compression …` (its algorithms and types win over the frontend's).
    pub compression: Option<Compression>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    Source,
    Random,
    /// `uri [whole]`: a consistent hash of the path (with `whole`, path and query);
    /// `mode http` only.
    Uri {
        whole: bool,
    },
}

/// `cookie NAME insert [indirect] [nocache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSpec {
    pub name: String,
    pub indirect: bool,
    pub nocache: bool,
}

/// One `server` line.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    /// The address as written (`server1:7210`), for messages and re-resolution on reload.
    pub host: String,
    /// Resolved at load.
    pub addr: SocketAddr,
    /// `check`: health-checked. Without it the server is always considered UP.
    pub check: bool,
    /// 0..=256, default 1. Weight 0 takes no new traffic.
    pub weight: u32,
    pub backup: bool,
    /// `cookie VALUE`; default the server name.
    pub cookie: Option<String>,
    pub maxconn: Option<u32>,
    /// `disabled`: starts in MAINT.
    pub disabled: bool,
    /// `proto h2`: HTTP/2 toward the server (HAProxy's `proto`); default HTTP/1.1.
    pub proto: ServerProto,
    /// `ssl`: TLS toward the server.
    pub tls: Option<ServerTls>,
    /// `send-proxy` / `send-proxy-v2`: each connection starts with a PROXY protocol header
    /// naming the client (such connections are not shared between clients).
    pub send_proxy: Option<crate::proxy_protocol::ProxyVersion>,
    /// `on-marked-down shutdown-sessions`: when the server goes DOWN or into MAINT, its
    /// established XDP flows are removed (re-picked, so another server resets them).
    /// Without it they keep going to the server until they end (HAProxy's default).
    pub shutdown_on_down: bool,
    /// `on-marked-up shutdown-backup-sessions`: when this (non-backup) server comes UP,
    /// the established XDP flows of the backend's backup servers are removed.
    pub shutdown_backups_on_up: bool,
    /// `resolvers NAME`: the address follows DNS at run time (`lb::discovery`).
    pub resolve: Option<ServerResolve>,
    /// No address yet (`init-addr none`, or DNS gave none past `hold valid`): the server
    /// is in MAINT, is not checked and takes no traffic; `addr` has only the port.
    pub unresolved: bool,
}

/// A server's DNS discovery: `resolvers NAME [resolve-prefer ipv4|ipv6]` (and every
/// server of a `server-template`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerResolve {
    /// The `[resolvers.NAME]` section.
    pub resolvers: String,
    /// The name queried (the server line's host, without the port).
    pub fqdn: String,
    pub port: u16,
    /// `resolve-prefer`: the family queried first (HAProxy's default: IPv6).
    pub prefer: AddrFamily,
}

/// An address family, for `resolve-prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrFamily {
    V4,
    V6,
}

/// `[resolvers.NAME]` (HAProxy's `resolvers` section): the name servers and timers of DNS
/// discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolvers {
    pub name: String,
    /// `nameserver NAME ADDR:PORT`, in file order; queries go to all of them.
    pub nameservers: Vec<(String, SocketAddr)>,
    pub hold: Hold,
    /// `resolve_retries`: queries sent before a resolution counts as failed (default 3).
    pub resolve_retries: u32,
    /// `timeout resolve`: between two resolutions of a name (default 1s).
    pub timeout_resolve: Duration,
    /// `timeout retry`: the wait for an answer before the next retry (default 1s).
    pub timeout_retry: Duration,
    /// `accepted_payload_size`: the EDNS0 UDP payload announced (512..=65535, default 512).
    pub accepted_payload_size: u16,
}

/// `hold STATUS PERIOD` (HAProxy's defaults: valid 10s, obsolete 0s, the others 30s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// A failed resolution keeps the last good addresses while the last valid answer is
    /// younger than this; after it the servers go to MAINT.
    pub valid: Duration,
    pub nx: Duration,
    pub other: Duration,
    pub refused: Duration,
    pub timeout: Duration,
    /// How long an address that left the answer keeps its server.
    pub obsolete: Duration,
}

impl Default for Hold {
    fn default() -> Self {
        let s30 = Duration::from_secs(30);
        Self {
            valid: Duration::from_secs(10),
            nx: s30,
            other: s30,
            refused: s30,
            timeout: s30,
            obsolete: Duration::ZERO,
        }
    }
}

impl Resolvers {
    /// A section with HAProxy's defaults and no name server.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            nameservers: Vec::new(),
            hold: Hold::default(),
            resolve_retries: 3,
            timeout_resolve: Duration::from_secs(1),
            timeout_retry: Duration::from_secs(1),
            accepted_payload_size: 512,
        }
    }
}

/// `ssl [verify none|required] [ca-file PATH] [sni str(NAME)]` on a server line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `verify required` (HAProxy's default): the certificate must chain to `ca_file`.
    pub verify: bool,
    /// `ca-file PATH`, resolved against the config's directory.
    pub ca_file: Option<PathBuf>,
    /// `sni str(NAME)`: sent, and checked against the certificate under `verify
    /// required`; without it no SNI is sent and no name checked (HAProxy).
    pub sni: Option<String>,
}

impl Server {
    /// A server with HAProxy's defaults: weight 1, not checked, no backup, cookie,
    /// maxconn or proto.
    pub fn new(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.to_owned(),
            host: addr.to_string(),
            addr,
            check: false,
            weight: 1,
            backup: false,
            cookie: None,
            maxconn: None,
            disabled: false,
            proto: ServerProto::Http1,
            tls: None,
            send_proxy: None,
            shutdown_on_down: false,
            shutdown_backups_on_up: false,
            resolve: None,
            unresolved: false,
        }
    }
}

/// The protocol an HTTP backend speaks to a server (HAProxy's server `proto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerProto {
    /// HTTP/1.1 with pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (h2c, as gRPC servers speak it): one
    /// multiplexed connection per server and worker thread.
    Http2,
}

/// Health-check settings (HAProxy defaults: inter 2s, rise 2, fall 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Default: `timeout check`, else the interval.
    pub timeout: Duration,
    pub kind: CheckKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// Connect only.
    Tcp,
    /// `http = "GET /healthz"`; `expect` is an inclusive status range (default 200..=399).
    Http {
        method: String,
        path: String,
        host: Option<String>,
        expect: (u16, u16),
    },
    /// A TLS handshake (no certificate verification), with optional SNI.
    Tls { sni: Option<String> },
}

impl Default for CheckSpec {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            timeout: Duration::from_secs(2),
            kind: CheckKind::Tcp,
        }
    }
}

impl Config {
    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The `[resolvers]` section named `name`.
    pub fn resolvers(&self, name: &str) -> Option<&Resolvers> {
        self.resolvers.iter().find(|r| r.name == name)
    }
}
