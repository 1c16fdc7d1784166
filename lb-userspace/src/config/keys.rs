//! The one key table: every key of every section. [`GLOBAL_KEYS`] and [`DATAPLANE_KEYS`]
//! generate the serde schema of `[global]` and `[dataplane]` and name the HAProxy keywords
//! `lb convert` turns into them; for proxy sections (`[defaults]`, `[frontend.X]`,
//! `[backend.X]`, `[listen.X]`) everything that knows a key derives from [`PROXY_KEYS`]:
//! - the TOML schema: the serde struct [`RawProxy`] is generated from the table, so an
//!   unknown key is refused with the table's keys as the suggestions;
//! - the section-placement checks ("`server` is not allowed in a [frontend]");
//! - `lb convert`: the HAProxy keywords each key is converted from, and where they may be;
//! - the reference-doc test (`tests/config_reference.rs`), through the loader's messages and
//!   through this table.
//!
//! Adding a proxy key is one line here, its parsing in the builder, and its row in
//! docs/config.md.

use serde::Deserialize;
use serde_spanned::Spanned;

use super::raw::{List, S, V};

/// A kind of proxy section.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Section {
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Defaults,
        Section::Frontend,
        Section::Backend,
        Section::Listen,
    ];

    fn bit(self) -> u8 {
        match self {
            Section::Defaults => D,
            Section::Frontend => F,
            Section::Backend => B,
            Section::Listen => L,
        }
    }

    /// How messages name it: `[defaults]`, `a [frontend]`, …
    pub fn described(self) -> &'static str {
        match self {
            Section::Defaults => "[defaults]",
            Section::Frontend => "a [frontend]",
            Section::Backend => "a [backend]",
            Section::Listen => "a [listen]",
        }
    }

    /// The TOML table name (and HAProxy's section keyword).
    pub fn name(self) -> &'static str {
        match self {
            Section::Defaults => "defaults",
            Section::Frontend => "frontend",
            Section::Backend => "backend",
            Section::Listen => "listen",
        }
    }
}

const D: u8 = 1;
const F: u8 = 2;
const B: u8 = 4;
const L: u8 = 8;
const ALL: u8 = D | F | B | L;

/// One key of a proxy section.
#[derive(Debug)]
pub struct ProxyKey {
    /// The TOML key.
    pub key: &'static str,
    places: u8,
    /// The HAProxy keywords `lb convert` turns into this key.
    pub haproxy: &'static [&'static str],
}

impl ProxyKey {
    /// Whether the key may be written in a section of this kind.
    pub fn allowed_in(&self, s: Section) -> bool {
        self.places & s.bit() != 0
    }

    /// Where the key belongs, for "not allowed in" messages.
    pub fn belongs(&self) -> String {
        let names: Vec<String> = [Section::Frontend, Section::Backend, Section::Listen]
            .into_iter()
            .filter(|s| self.allowed_in(*s))
            .map(|s| format!("[{}]", s.name()))
            .collect();
        match names.as_slice() {
            [] => "no section".to_string(),
            [one] => format!("a {one} section"),
            [init @ .., last] => format!("a {} or {last} section", init.join(", ")),
        }
    }
}

/// Generates [`RawProxy`] (the serde schema), [`PROXY_KEYS`] and `RawProxy::present` from
/// one list: `field: type, sections, [HAProxy keywords];`.
macro_rules! proxy_keys {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty, $places:expr, [$($hk:literal),*] ;)*) => {
        /// `[defaults]`, `[frontend.X]`, `[backend.X]`, `[listen.X]`: one key set; which
        /// keys a section may use is checked during validation (with a better message than
        /// "unknown").
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawProxy {
            $( $(#[$doc])* pub $field: Option<$ty>, )*
        }

        /// Every key of a proxy section, in the order of docs/config.md.
        pub const PROXY_KEYS: &[ProxyKey] = &[
            $( ProxyKey { key: stringify!($field), places: $places, haproxy: &[$($hk),*] }, )*
        ];

        impl RawProxy {
            /// Keys present in the section, with their positions.
            pub(crate) fn present(&self) -> Vec<(&'static str, usize)> {
                let mut v = Vec::new();
                $( if let Some(x) = &self.$field { v.push((stringify!($field), x.span().start)); } )*
                v
            }
        }
    };
}

proxy_keys! {
    mode: S, ALL, ["mode"];
    tier: S, F | L, [];
    bind: Spanned<List>, F | L, ["bind"];
    acl: Spanned<List>, F | B | L, ["acl"];
    http_request: Spanned<List>, F | B | L, ["http-request", "redirect"];
    http_response: Spanned<List>, F | B | L, ["http-response"];
    http_after_response: Spanned<List>, F | B | L, ["http-after-response"];
    tcp_request: Spanned<List>, F | B | L, ["tcp-request"];
    use_backend: Spanned<List>, F | L, ["use_backend"];
    default_backend: S, D | F | L, ["default_backend"];
    timeout: Spanned<List>, ALL, ["timeout", "contimeout", "clitimeout", "srvtimeout"];
    balance: S, D | B | L, ["balance", "hash-type"];
    cookie: Spanned<List>, D | B | L, ["cookie"];
    check: Spanned<List>, D | B | L, ["http-check", "default-server"];
    server: Spanned<List>, B | L, ["server"];
    server_template: Spanned<List>, B | L, ["server-template"];
    errorfile: Spanned<List>, ALL, ["errorfile"];
    option: Spanned<List>, ALL, ["option", "no"];
    retries: Spanned<i64>, D | B | L, ["retries"];
    maxconn: Spanned<i64>, D | F | L, ["maxconn"];
    deny_src: Spanned<List>, F | L, [];
    allow_src: Spanned<List>, F | L, [];
    log: V, ALL, ["log"];
    max_header_bytes: Spanned<i64>, F | L, [];
    max_headers: Spanned<i64>, F | L, [];
    stats: Spanned<List>, F | L, ["stats"];
    stick_table: S, F | B | L, ["stick-table"];
    compression: Spanned<List>, ALL, ["compression"];
    /// Rules `lb convert` could not carry over that restrict access: always an error, so
    /// the file cannot run until a person converts or deletes them.
    unconverted: Spanned<List>, ALL, [];
}

/// One key of `[global]` or `[dataplane]`.
#[derive(Debug)]
pub struct SectionKey {
    /// The TOML key.
    pub key: &'static str,
    /// The HAProxy `global` keywords `lb convert` turns into this key.
    pub haproxy: &'static [&'static str],
}

/// Generates a section's serde struct and its key table from one list:
/// `field: type, [HAProxy keywords];`.
macro_rules! section_keys {
    ($(#[$sm:meta])* $raw:ident, $(#[$tm:meta])* $table:ident: $( $field:ident : $ty:ty, [$($hk:literal),*] ;)*) => {
        $(#[$sm])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $raw {
            $( pub $field: Option<$ty>, )*
        }

        $(#[$tm])*
        pub const $table: &[SectionKey] = &[
            $( SectionKey { key: stringify!($field), haproxy: &[$($hk),*] }, )*
        ];
    };
}

section_keys! {
    /// `[global]`.
    RawGlobal,
    /// Every key of `[global]`, in the order of docs/config.md.
    GLOBAL_KEYS:
    admin: S, [];
    admin_token: S, [];
    admin_hosts: Spanned<List>, [];
    stats_socket: Spanned<List>, ["stats"];
    log: V, ["log"];
    log_format: S, [];
    threads: Spanned<i64>, ["nbthread"];
    cpu_map: V, ["cpu-map"];
    hash_seed: Spanned<i64>, [];
    ssl_cache_size: Spanned<i64>, ["tune.ssl.cachesize"];
    maxconn: Spanned<i64>, ["maxconn"];
    user: S, ["user"];
    uid: Spanned<i64>, ["uid"];
    group: S, ["group"];
    gid: Spanned<i64>, ["gid"];
    chroot: S, ["chroot"];
    pidfile: S, ["pidfile"];
    ulimit_n: Spanned<i64>, ["ulimit-n"];
    hard_stop_after: S, ["hard-stop-after"];
}

section_keys! {
    /// `[dataplane]`: the XDP tier.
    RawDataplane,
    /// Every key of `[dataplane]`, in the order of docs/config.md.
    DATAPLANE_KEYS:
    interfaces: Spanned<List>, [];
    xdp_mode: S, [];
    conntrack_size: Spanned<i64>, [];
    conntrack_warn: Spanned<i64>, [];
    flood_rate: Spanned<i64>, [];
    maglev_table_size: Spanned<i64>, [];
    deny_src: Spanned<List>, [];
    pin_path: S, [];
}

section_keys! {
    /// `[resolvers.NAME]`: DNS discovery (HAProxy's `resolvers` section).
    RawResolvers,
    /// Every key of `[resolvers.NAME]`, in the order of docs/config.md.
    RESOLVERS_KEYS:
    nameserver: Spanned<List>, ["nameserver"];
    hold: Spanned<List>, ["hold"];
    resolve_retries: Spanned<i64>, ["resolve_retries"];
    timeout: Spanned<List>, ["timeout"];
    accepted_payload_size: Spanned<i64>, ["accepted_payload_size"];
}

/// The `[resolvers.X]` key a HAProxy `resolvers` keyword converts into.
pub fn haproxy_resolvers_key(keyword: &str) -> Option<&'static SectionKey> {
    RESOLVERS_KEYS.iter().find(|k| k.haproxy.contains(&keyword))
}

section_keys! {
    /// `[cache.NAME]`: an HTTP cache (HAProxy's `cache` section).
    RawCache,
    /// Every key of `[cache.NAME]`, in the order of docs/config.md.
    CACHE_KEYS:
    total_max_size: Spanned<i64>, ["total-max-size"];
    max_object_size: Spanned<i64>, ["max-object-size"];
    max_age: Spanned<i64>, ["max-age"];
    process_vary: V, ["process-vary"];
    max_secondary_entries: Spanned<i64>, ["max-secondary-entries"];
}

/// The `[cache.NAME]` key a HAProxy `cache` section keyword converts into.
pub fn haproxy_cache_key(keyword: &str) -> Option<&'static SectionKey> {
    CACHE_KEYS.iter().find(|k| k.haproxy.contains(&keyword))
}

/// The `[global]` key a HAProxy `global` keyword converts into.
pub fn haproxy_global_key(keyword: &str) -> Option<&'static SectionKey> {
    GLOBAL_KEYS.iter().find(|k| k.haproxy.contains(&keyword))
}

/// Every HAProxy `global` keyword `lb convert` knows: converted (from the key table) or
/// named as unsupported.
pub fn known_global_keywords() -> impl Iterator<Item = &'static str> + Clone {
    GLOBAL_KEYS
        .iter()
        .flat_map(|k| k.haproxy.iter().copied())
        .chain(HAPROXY_GLOBAL_KNOWN.iter().copied())
}

/// The key of the table for `key`.
pub fn proxy_key(key: &str) -> Option<&'static ProxyKey> {
    PROXY_KEYS.iter().find(|k| k.key == key)
}

/// The key a HAProxy proxy keyword converts into.
pub fn haproxy_proxy_key(keyword: &str) -> Option<&'static ProxyKey> {
    PROXY_KEYS.iter().find(|k| k.haproxy.contains(&keyword))
}

/// HAProxy proxy keywords lb knows but does not support (`lb convert` names them in a
/// warning and keeps them as comments).
pub const HAPROXY_PROXY_UNSUPPORTED: &[&str] = &[
    "capture",
    "monitor-uri",
    "monitor",
    "reqadd",
    "rspadd",
    "reqrep",
    "rsprep",
    "reqdel",
    "rspdel",
    "reqirep",
    "unique-id-format",
    "unique-id-header",
    "hash-balance-factor",
    "fullconn",
    "http-reuse",
    "source",
    "dispatch",
    "persist",
    "stick",
    "filter",
    "email-alert",
    "description",
    "id",
    "disabled",
    "enabled",
    "errorloc",
    "errorloc302",
    "errorloc303",
    "errorfiles",
    "external-check",
    "tcp-check",
    "tcp-response",
    "rate-limit",
    "log-format",
    "log-format-sd",
    "error-log-format",
    "log-tag",
    "declare",
    "force-persist",
    "ignore-persist",
    "grace",
    "bind-process",
    "backlog",
    "max-keep-alive-queue",
    "http-send-name-header",
    "load-server-state-from-file",
    "server-state-file-name",
    "use-server",
    "use-fcgi-app",
    "http-error",
    "quic-initial",
    "max-session-srv-conns",
    "retry-on",
    "dynamic-cookie-key",
];

/// HAProxy `global` keywords lb knows but does not convert (named as unsupported); those
/// it converts are in [`GLOBAL_KEYS`].
pub const HAPROXY_GLOBAL_KNOWN: &[&str] = &[
    "daemon",
    "nbproc",
    "log-send-hostname",
    "log-tag",
    "ca-base",
    "crt-base",
    "lua-load",
    "master-worker",
    "spread-checks",
    "ssl-default-bind-ciphers",
    "ssl-default-bind-ciphersuites",
    "ssl-default-server-ciphers",
    "ssl-default-server-options",
    "ssl-server-verify",
    "tune.ssl.default-dh-param",
    "tune.bufsize",
    "tune.maxrewrite",
    "node",
    "description",
    "quiet",
    "zero-warning",
    "server-state-file",
    "server-state-base",
    "localpeer",
    "h1-case-adjust",
    "maxsslconn",
    "maxconnrate",
    "setenv",
    "presetenv",
    "unsetenv",
    "resetenv",
    "expose-experimental-directives",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_messages() {
        let server = proxy_key("server").expect("server");
        assert!(!server.allowed_in(Section::Frontend));
        assert_eq!(server.belongs(), "a [backend] or [listen] section");
        let acl = proxy_key("acl").expect("acl");
        assert!(!acl.allowed_in(Section::Defaults));
        assert_eq!(acl.belongs(), "a [frontend], [backend] or [listen] section");
        assert_eq!(
            haproxy_proxy_key("http-response").map(|k| k.key),
            Some("http_response")
        );
    }

    #[test]
    fn global_keywords_name_one_key() {
        for k in GLOBAL_KEYS {
            for w in k.haproxy {
                assert!(!HAPROXY_GLOBAL_KNOWN.contains(w), "`{w}` is both");
                assert_eq!(haproxy_global_key(w).map(|x| x.key), Some(k.key));
            }
        }
    }

    #[test]
    fn every_haproxy_keyword_names_one_key() {
        let mut seen = std::collections::HashSet::new();
        for k in PROXY_KEYS {
            for w in k.haproxy {
                assert!(seen.insert(*w), "`{w}` maps to two keys");
                assert!(!HAPROXY_PROXY_UNSUPPORTED.contains(w), "`{w}` is both");
            }
        }
    }
}
