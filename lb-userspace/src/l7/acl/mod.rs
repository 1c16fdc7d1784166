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

use std::net::IpAddr;

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
}

/// Named ACLs of one proxy section.
#[derive(Debug, Clone, Default)]
pub struct AclSet {}

/// A compiled `if`/`unless` condition.
#[derive(Debug, Clone)]
pub struct Condition {}

/// An ACL or condition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AclError {
    pub message: String,
    /// Byte offset in the text given to `define` / `compile`.
    pub offset: usize,
}

impl AclSet {
    /// Defines (or extends, OR'd) a named ACL from one `acl` line without the keyword.
    pub fn define(&mut self, line: &str) -> Result<(), AclError> {
        Err(AclError {
            message: format!("ACL engine not built yet: {line}"),
            offset: 0,
        })
    }
}

impl Condition {
    /// Compiles `if …` / `unless …` against the named ACLs of `acls`.
    pub fn compile(text: &str, _acls: &AclSet) -> Result<Condition, AclError> {
        Err(AclError {
            message: format!("ACL engine not built yet: {text}"),
            offset: 0,
        })
    }

    /// Evaluates the condition for one request.
    pub fn eval(&self, _input: &dyn AclInput) -> bool {
        false
    }
}
