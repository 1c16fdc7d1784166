//! HAProxy ACL engine: parses `acl` lines and `if`/`unless` conditions once, at load, into a
//! compiled form that is evaluated per request without parsing.
//!
//! CONTRACT (owned by the ACL work; signatures below are what config and the proxy use):
//! - `AclSet::define(&mut self, line: &str) -> Result<(), AclError>` takes one `acl` line
//!   without the keyword: `NAME FETCH [FLAGS] PATTERN…`. Same-name lines are OR'd.
//! - `Condition::compile(text: &str, acls: &AclSet) -> Result<Condition, AclError>` takes
//!   `if …` or `unless …` (the keyword included).
//! - `Condition::eval(&self, input: &dyn AclInput) -> bool`.
//! - `AclError` carries `offset`: the byte offset in the given text where the problem is.
//!
//! What is supported (HAProxy configuration manual, section 7):
//! - Words are split like HAProxy's config parser: `"…"` (with `\` escapes), `'…'`,
//!   `\ `, `\xHH`; an unquoted `#` starts a comment. Offsets point at the word's first byte.
//! - Fetches: `path`, `url`, `query`, `method`, `hdr(name[,occ])` / `req.hdr`, `hdr_cnt`,
//!   `hdr_val`, `src`, `dst`, `dst_port`, `src_port`, `ssl_fc`, `ssl_fc_sni`,
//!   `req.ssl_sni` / `req_ssl_sni`, `nbsrv(backend)`, `always_true`, `always_false`,
//!   `req.proto_http`, `req.ver`, `cook(name)` / `req.cook`, `cook_cnt`,
//!   `url_param(name[,delim])` / `urlp`, the client certificate's `ssl_c_used`,
//!   `ssl_c_verify`, `ssl_c_s_dn([entry[,occ]])`, `ssl_c_i_dn(…)`, `ssl_c_serial`,
//!   `ssl_c_sha1` (both upper-case hex), `ssl_c_notafter` ([`AclInput::ssl_c`]); the
//!   stick-table fetches `sc_<data>(N[,table])`, `sc0_<data>…sc2_<data>([table])`,
//!   `src_<data>([table])` (`conn_cur`, `conn_cnt`, `conn_rate`, `http_req_rate`,
//!   `http_err_rate`, `bytes_in_rate`, `kbytes_in`, `get_gpc0`, `gpc0_rate`, `get_gpt0`, …),
//!   `sc_tracked`, `table_cnt`, `table_avl` ([`AclInput::stick`]); derived
//!   keywords `_beg _end _sub _reg _dir _dom _len` (`ssl_fc_sni_end`, `ssl_fc_sni_reg`);
//!   converters `,lower` and `,upper` (and `,hex` after `ssl_c_serial`/`ssl_c_sha1`, a
//!   no-op there).
//! - Flags (before the first pattern only, as in HAProxy): `-i` (for the patterns and `-f`
//!   files after it), `-m found|bool|int|ip|len|str|beg|sub|dir|dom|end|reg`, `-f FILE`,
//!   `-n`, `-u ID`, `--`. Any other word starting with `-` is an error.
//! - Integers: `eq ne gt ge lt le` (sticky for the following values), `a:b`, `a:`, `:b`.
//! - Addresses: IPv4 / IPv6 with `/bits` (or a dotted IPv4 mask); IPv4-mapped and 6to4
//!   IPv6 clients also match IPv4 patterns, IPv4 clients match `::ffff:…` patterns.
//! - Predefined ACLs: `TRUE FALSE LOCALHOST HTTP HTTP_1.0 HTTP_1.1 HTTP_2.0 HTTP_3.0
//!   METH_CONNECT METH_DELETE METH_GET METH_HEAD METH_OPTIONS METH_POST METH_PUT
//!   METH_TRACE HTTP_URL_ABS HTTP_URL_SLASH HTTP_URL_STAR HTTP_CONTENT`; a defined ACL of the
//!   same name wins.
//!
//! The same fetches expand in log-format strings (`%[src]` in `set-header` values), see
//! [`FormatString`].
//!
//! Evaluation walks the compiled tree: no parsing, no allocation (regexes are compiled at
//! load, case-insensitive comparisons use `eq_ignore_ascii_case`, non-string samples are
//! rendered into a stack buffer when a string match needs them).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

mod conv;
mod expr;
mod format;
mod lex;
mod stick;
#[cfg(test)]
pub(crate) mod tests;
mod vars;

use expr::{Expr, parse_expr};
pub use format::{FormatString, SampleExpr, SampleValue};
use lex::tokenize;
pub use lex::{Word, Words, split as split_words};
pub use stick::{StickCounters, StkData, TRACK_SLOTS};
pub use vars::{Scope, Vars, parse_name as parse_var_name};

/// What a condition can look at. The L7 proxy implements it over a request.
pub trait AclInput {
    /// The path, without the query string.
    fn path(&self) -> &str;
    /// The request target as received (path and query).
    fn url(&self) -> &str;
    fn method(&self) -> &str;
    /// Calls `f` on each value of header `name` (case-insensitive), comma-separated values
    /// split as HAProxy's `hdr()` does; stops early when `f` returns true. Returns whether any
    /// call returned true.
    fn any_header(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool;
    fn src(&self) -> IpAddr;
    /// TLS terminated on this connection.
    fn ssl_fc(&self) -> bool;
    /// SNI the client sent to the TLS listener.
    fn ssl_fc_sni(&self) -> Option<&str>;
    /// SNI from a ClientHello peeked in `mode tcp` (`req.ssl_sni`).
    fn req_ssl_sni(&self) -> Option<&str>;
    /// Usable servers in backend `name` (`nbsrv`).
    fn nbsrv(&self, backend: &str) -> u32;
    /// The request is HTTP (`req.proto_http`, predefined ACL `HTTP`). Defaults to true: the
    /// L7 tier evaluates conditions over HTTP requests; `mode tcp` inputs override it.
    fn is_http(&self) -> bool {
        true
    }
    /// The HTTP version as `1.0`, `1.1`, `2.0`, `3.0` (`req.ver`, predefined ACLs
    /// `HTTP_1.0` …). Defaults to unknown, which matches nothing.
    fn http_version(&self) -> Option<&str> {
        None
    }
    /// The local address the client connected to (`dst`, `dst_port`). Defaults to unknown,
    /// which matches nothing.
    fn dst(&self) -> Option<SocketAddr> {
        None
    }
    /// The client's source port (`src_port`). Defaults to unknown, which matches nothing.
    fn src_port(&self) -> Option<u16> {
        None
    }
    /// The response status (`status`), for `http-response` rules. Defaults to none (a
    /// request), which matches nothing.
    fn status(&self) -> Option<u16> {
        None
    }
    /// The name of the cache the response was built from (`res.cache_hit`,
    /// `res.cache_name`), for response rules. Defaults to none.
    fn cache_hit(&self) -> Option<&str> {
        None
    }
    /// [`AclInput::any_header`] over the response's headers (`res.hdr`, `shdr`, …), for
    /// `http-response` rules. Defaults to no headers.
    fn any_response_header(&self, _name: &str, _f: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
    /// The client certificate of the TLS connection (`ssl_c_*`). Defaults to none.
    fn ssl_c(&self) -> Option<&ClientCert> {
        None
    }
    /// The stick tables and the entries this request tracks (`sc_*`, `src_*`,
    /// `table_*`). Defaults to none: nothing tracked, no table.
    fn stick(&self) -> Option<&dyn StickCounters> {
        None
    }
    /// The variables this request sees (`var()`, `concat`). Defaults to none.
    fn vars(&self) -> Option<&dyn Vars> {
        None
    }
}

/// What the `ssl_c_*` fetches read: the certificate a TLS client presented (and the
/// handshake verified).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    pub subject: DistinguishedName,
    pub issuer: DistinguishedName,
    /// The serial number's bytes in upper-case hex (`ssl_c_serial,hex`).
    pub serial_hex: String,
    /// SHA-1 of the DER certificate in upper-case hex (`ssl_c_sha1,hex`).
    pub sha1_hex: String,
    /// notAfter as written in the certificate: `YYMMDDhhmmssZ` (UTCTime) or
    /// `YYYYMMDDhhmmssZ` (GeneralizedTime), as HAProxy gives it.
    pub not_after: String,
}

/// A certificate's subject or issuer: its attributes in order, as (short name, value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistinguishedName {
    entries: Vec<(String, String)>,
    oneline: String,
}

impl DistinguishedName {
    /// From `(short name, value)` pairs in certificate order (`CN`, `O`, `C`, … or the
    /// dotted OID when the attribute has no short name).
    pub fn new(entries: Vec<(String, String)>) -> Self {
        let oneline = entries.iter().map(|(k, v)| format!("/{k}={v}")).collect();
        Self { entries, oneline }
    }

    /// OpenSSL's one-line form, as HAProxy's `ssl_c_s_dn`: `/C=FR/O=Example/CN=client`.
    pub fn oneline(&self) -> &str {
        &self.oneline
    }

    /// The value of the `occ`-th `name` attribute (1 the first, -1 the last; the name is
    /// compared without case), as `ssl_c_s_dn(CN,occ)`.
    pub fn entry(&self, name: &str, occ: i64) -> Option<&str> {
        let mut matching = self
            .entries
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let v = match occ {
            0 => return None,
            n if n > 0 => matching.nth(usize::try_from(n - 1).ok()?),
            n => matching.rev().nth(usize::try_from(-n - 1).ok()?),
        };
        v.map(|(_, v)| v.as_str())
    }
}

/// One named (or anonymous) ACL: its expressions, OR'd.
#[derive(Debug, Clone)]
struct AclDef {
    name: String,
    exprs: Vec<Expr>,
}

impl AclDef {
    fn matches(&self, input: &dyn AclInput) -> bool {
        self.exprs.iter().any(|e| e.matches(input))
    }
}

/// Named ACLs of one proxy section.
#[derive(Debug, Clone, Default)]
pub struct AclSet {
    acls: HashMap<String, Arc<AclDef>>,
}

/// A compiled `if`/`unless` condition.
#[derive(Debug, Clone)]
pub struct Condition {
    unless: bool,
    /// OR of AND-suites.
    suites: Vec<Vec<Term>>,
}

#[derive(Debug, Clone)]
struct Term {
    neg: bool,
    acl: Arc<AclDef>,
}

/// An ACL or condition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AclError {
    pub message: String,
    /// Byte offset in the text given to `define` / `compile`.
    pub offset: usize,
}

/// Characters HAProxy allows in ACL names.
fn valid_acl_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// HAProxy's predefined ACLs that this engine can evaluate.
const PREDEFINED: &[(&str, &str)] = &[
    ("TRUE", "always_true"),
    ("FALSE", "always_false"),
    ("LOCALHOST", "src 127.0.0.1/8 ::1"),
    ("HTTP", "req.proto_http"),
    ("HTTP_1.0", "req.ver 1.0"),
    ("HTTP_1.1", "req.ver 1.1"),
    ("HTTP_2.0", "req.ver 2.0"),
    ("HTTP_3.0", "req.ver 3.0"),
    ("METH_CONNECT", "method CONNECT"),
    ("METH_DELETE", "method DELETE"),
    ("METH_GET", "method GET HEAD"),
    ("METH_HEAD", "method HEAD"),
    ("METH_OPTIONS", "method OPTIONS"),
    ("METH_POST", "method POST"),
    ("METH_PUT", "method PUT"),
    ("METH_TRACE", "method TRACE"),
    ("HTTP_URL_ABS", "url_reg ^[^/:]*://"),
    ("HTTP_URL_SLASH", "url_beg /"),
    ("HTTP_URL_STAR", "url *"),
    ("HTTP_CONTENT", "req.hdr_val(content-length) gt 0"),
];

/// Predefined in HAProxy but needing data this tier does not have.
const PREDEFINED_UNSUPPORTED: &[&str] = &["RDP_COOKIE", "REQ_CONTENT", "WAIT_END"];

/// The predefined ACLs, compiled once per process.
fn predefined(name: &str) -> Option<Arc<AclDef>> {
    static CACHE: OnceLock<HashMap<&'static str, Arc<AclDef>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        PREDEFINED
            .iter()
            .filter_map(|(n, text)| {
                let toks = tokenize(text).ok()?;
                let expr = parse_expr(&toks, text.len()).ok()?;
                Some((
                    *n,
                    Arc::new(AclDef {
                        name: (*n).to_string(),
                        exprs: vec![expr],
                    }),
                ))
            })
            .collect()
    });
    cache.get(name).cloned()
}

impl AclSet {
    /// Defines (or extends, OR'd) a named ACL from one `acl` line without the keyword.
    pub fn define(&mut self, line: &str) -> Result<(), AclError> {
        let toks = tokenize(line)?;
        let Some(name) = toks.first() else {
            return Err(AclError {
                message: "missing ACL name".into(),
                offset: line.len(),
            });
        };
        if name.text.is_empty() {
            return Err(AclError {
                message: "empty ACL name".into(),
                offset: name.start,
            });
        }
        if let Some(pos) = name.text.find(|c| !valid_acl_name_char(c)) {
            let bad = name.text[pos..].chars().next().unwrap_or('?');
            return Err(AclError {
                message: format!("invalid character in ACL name: '{bad}'"),
                offset: name.start,
            });
        }
        if toks.len() < 2 {
            return Err(AclError {
                message: format!("missing fetch method in ACL '{}'", name.text),
                offset: line.len(),
            });
        }
        let expr = parse_expr(&toks[1..], line.len())?;
        let def = self.acls.entry(name.text.clone()).or_insert_with(|| {
            Arc::new(AclDef {
                name: name.text.clone(),
                exprs: Vec::new(),
            })
        });
        // Conditions compiled earlier keep their snapshot.
        Arc::make_mut(def).exprs.push(expr);
        Ok(())
    }

    /// Whether an ACL of that name was defined (predefined ACLs excluded).
    pub fn contains(&self, name: &str) -> bool {
        self.acls.contains_key(name)
    }

    /// The names of the defined ACLs, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.acls.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Number of defined ACLs.
    pub fn len(&self) -> usize {
        self.acls.len()
    }

    /// No ACL defined.
    pub fn is_empty(&self) -> bool {
        self.acls.is_empty()
    }

    /// Evaluates the named ACL alone (defined or predefined); `None` if unknown.
    pub fn eval_named(&self, name: &str, input: &dyn AclInput) -> Option<bool> {
        match self.acls.get(name) {
            Some(def) => Some(def.matches(input)),
            None => predefined(name).map(|def| def.matches(input)),
        }
    }

    /// Backends named by `nbsrv(…)` in the defined ACLs (for config validation).
    pub fn nbsrv_backends(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .acls
            .values()
            .flat_map(|d| d.exprs.iter().filter_map(|e| e.fetch.nbsrv_backend()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn lookup(&self, word: &str, offset: usize) -> Result<Arc<AclDef>, AclError> {
        if let Some(def) = self.acls.get(word) {
            return Ok(Arc::clone(def));
        }
        if let Some(def) = predefined(word) {
            return Ok(def);
        }
        let message = if PREDEFINED_UNSUPPORTED.contains(&word) {
            format!("predefined ACL '{word}' is not supported")
        } else if word == "&&" || word.eq_ignore_ascii_case("and") {
            format!("no such ACL: '{word}' (AND is implicit: just juxtapose ACLs)")
        } else {
            format!("no such ACL: '{word}'")
        };
        Err(AclError { message, offset })
    }
}

impl Condition {
    /// Compiles `if …` / `unless …` against the named ACLs of `acls`.
    ///
    /// HAProxy's grammar: terms juxtaposed are AND'd, `or`/`||` separates OR'd groups (AND
    /// binds tighter), `!` (repeatable, attached or alone) negates the next term, and
    /// `{ FETCH [FLAGS] PATTERN… }` is an anonymous ACL. An empty condition, or an `or`
    /// with nothing on one side, is an error here (HAProxy silently ignores it).
    pub fn compile(text: &str, acls: &AclSet) -> Result<Condition, AclError> {
        let toks = tokenize(text)?;
        let Some(first) = toks.first() else {
            return Err(AclError {
                message: "missing 'if' or 'unless'".into(),
                offset: text.len(),
            });
        };
        let unless = match first.text.as_str() {
            "if" => false,
            "unless" => true,
            other => {
                return Err(AclError {
                    message: format!(
                        "conditions must start with either 'if' or 'unless', not '{other}'"
                    ),
                    offset: first.start,
                });
            }
        };
        let mut suites: Vec<Vec<Term>> = Vec::new();
        let mut cur: Vec<Term> = Vec::new();
        let mut neg = false;
        let mut i = 1;
        while i < toks.len() {
            let tok = &toks[i];
            let bangs = tok.text.bytes().take_while(|&b| b == b'!').count();
            if bangs % 2 == 1 {
                neg = !neg;
            }
            let word = &tok.text[bangs..];
            let word_at = tok.start + bangs;
            i += 1;
            if word.is_empty() {
                continue;
            }
            if word.eq_ignore_ascii_case("or") || word == "||" {
                if cur.is_empty() {
                    return Err(AclError {
                        message: format!("'{word}' without a condition before it"),
                        offset: word_at,
                    });
                }
                suites.push(std::mem::take(&mut cur));
                neg = false;
                continue;
            }
            let acl = if word == "{" {
                let Some(close) = toks[i..].iter().position(|t| t.text == "}") else {
                    return Err(AclError {
                        message: "missing closing '}' in condition".into(),
                        offset: word_at,
                    });
                };
                let inner = &toks[i..i + close];
                let end = toks[i + close].start;
                if inner.is_empty() {
                    return Err(AclError {
                        message: "empty anonymous ACL '{ }'".into(),
                        offset: word_at,
                    });
                }
                let expr = parse_expr(inner, end)?;
                i += close + 1;
                Arc::new(AclDef {
                    name: String::new(),
                    exprs: vec![expr],
                })
            } else if word == "}" {
                return Err(AclError {
                    message: "unexpected '}' in condition".into(),
                    offset: word_at,
                });
            } else if word.starts_with('{') || word.ends_with('}') {
                return Err(AclError {
                    message: format!(
                        "'{word}': braces of an anonymous ACL must be separated by spaces"
                    ),
                    offset: word_at,
                });
            } else {
                acls.lookup(word, word_at)?
            };
            cur.push(Term { neg, acl });
            neg = false;
        }
        if cur.is_empty() {
            let (message, offset) = if suites.is_empty() {
                (
                    format!("missing condition after '{}'", first.text),
                    text.len(),
                )
            } else {
                ("'or' without a condition after it".to_string(), text.len())
            };
            return Err(AclError { message, offset });
        }
        suites.push(cur);
        Ok(Condition { unless, suites })
    }

    /// Evaluates the condition for one request.
    pub fn eval(&self, input: &dyn AclInput) -> bool {
        let hit = self
            .suites
            .iter()
            .any(|suite| suite.iter().all(|t| t.acl.matches(input) != t.neg));
        hit != self.unless
    }

    /// Whether this is an `unless` condition.
    pub fn is_unless(&self) -> bool {
        self.unless
    }

    /// Names of the named ACLs the condition uses (anonymous ones excluded), in order.
    pub fn acl_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for t in self.suites.iter().flatten() {
            if !t.acl.name.is_empty() && !v.contains(&t.acl.name.as_str()) {
                v.push(&t.acl.name);
            }
        }
        v
    }

    /// A response fetch (`status`, `res.hdr`, …) the condition uses, if any: request rules
    /// cannot (HAProxy refuses them there too).
    pub fn response_fetch(&self) -> Option<&'static str> {
        self.suites
            .iter()
            .flatten()
            .flat_map(|t| t.acl.exprs.iter())
            .find_map(|e| e.fetch.response_keyword())
    }

    /// Stick tables named by `sc_*`, `src_*` or `table_*` fetches in the condition (for
    /// config validation).
    pub fn stick_tables(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .suites
            .iter()
            .flatten()
            .flat_map(|t| t.acl.exprs.iter().filter_map(|e| e.fetch.stick_table()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether the condition uses a stick-table fetch (`sc_*`, `src_*`, `table_*`).
    pub fn reads_stick(&self) -> bool {
        self.suites
            .iter()
            .flatten()
            .any(|t| t.acl.exprs.iter().any(|e| e.fetch.is_stick()))
    }

    /// Whether the condition reads the current section's own stick table (`src_*` or
    /// `table_*` without a table argument).
    pub fn uses_own_stick_table(&self) -> bool {
        self.suites
            .iter()
            .flatten()
            .any(|t| t.acl.exprs.iter().any(|e| e.fetch.reads_own_stick_table()))
    }

    /// Backends named by `nbsrv(…)` anywhere in the condition (for config validation).
    pub fn nbsrv_backends(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .suites
            .iter()
            .flatten()
            .flat_map(|t| t.acl.exprs.iter().filter_map(|e| e.fetch.nbsrv_backend()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}
