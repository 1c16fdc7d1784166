//! HAProxy log-format strings, as taken by `http-request set-header` / `add-header` values:
//! literal text with `%[FETCH[,CONVERTER]]` sample expressions and `%%` for a percent sign,
//! e.g. `%[src]`, `"host=%[req.hdr(host)] sni=%[ssl_fc_sni,lower]"`.
//!
//! Compiled once, at load, into literal and sample parts; expanding one for a request only
//! runs the fetches (the same ones the ACL engine has, with the same arguments) and appends
//! their text. As in HAProxy:
//! - in this (sample fetch) context `hdr()` / `req.hdr()` give the last value of the header
//!   (unless an occurrence is given), `cook()` the last cookie of that name, `url_param()`
//!   the first parameter; integers and booleans are written in decimal (`ssl_fc` is `0` or
//!   `1`), addresses in their usual notation;
//! - a fetch with no value (a header that is not there, `ssl_fc_sni` without TLS) adds
//!   nothing;
//! - a `%` that starts neither `%[` nor `%%` is an error (HAProxy: "use '%%'"), so is a
//!   missing `]`; a `]` outside an expression is literal text.
//!
//! The log-format variables known when the request arrives are taken too: `%ci` / `%cp`
//! (client address and port, as `%[src]` / `%[src_port]`), `%fi` / `%fp` (the address and
//! port the client connected to), `%HM` (method), `%HU` (URI), `%HP` (path).
//!
//! Not supported (errors at load): the other log-format variables, such as `%T` or `%ST`,
//! whose values exist only once the response is known, `%{+Q}` flags, and converters other
//! than `lower` / `upper` (which, as in HAProxy, apply to the text of any fetch).

use super::AclError;
use super::AclInput;
use super::expr::{Case, Fetch, MatchMethod, Sample, parse_fetch, with_str};
use super::lex::Token;

/// A compiled log-format string.
#[derive(Debug, Clone)]
pub struct FormatString {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(Box<str>),
    Sample {
        fetch: Fetch,
        conv: Option<Case>,
        /// Keep the last value the fetch yields (else the first).
        last: bool,
    },
}

fn err(message: impl Into<String>, offset: usize) -> AclError {
    AclError {
        message: message.into(),
        offset,
    }
}

/// The end of the sample expression that starts at `from` (the byte after `%[`): the first
/// `]` outside parentheses, as HAProxy reads `%[req.hdr(a]b)]`.
fn expr_end(text: &str, from: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate().skip(from) {
        match b {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b']' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// The log-format variables that have a request-time value, as HAProxy defines them.
const VARIABLES: &str = "'%ci', '%cp', '%fi', '%fp', '%HM', '%HU', '%HP'";

/// The fetch behind a log-format variable (`ci` for `%ci`).
fn variable(name: &str) -> Option<Fetch> {
    Some(match name {
        "ci" => Fetch::Src,
        "cp" => Fetch::SrcPort,
        "fi" => Fetch::Dst,
        "fp" => Fetch::DstPort,
        "HM" => Fetch::Method,
        "HU" => Fetch::Url,
        "HP" => Fetch::Path,
        _ => return None,
    })
}

impl FormatString {
    /// Compiles `text` (already unquoted). Errors carry the byte offset in `text`.
    pub fn compile(text: &str) -> Result<FormatString, AclError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < bytes.len() {
            let Some(rel) = text[i..].find('%') else {
                lit.push_str(&text[i..]);
                break;
            };
            let at = i + rel;
            lit.push_str(&text[i..at]);
            match bytes.get(at + 1) {
                Some(b'%') => {
                    lit.push('%');
                    i = at + 2;
                }
                Some(b'[') => {
                    let start = at + 2;
                    let Some(end) = expr_end(text, start) else {
                        return Err(err(format!("missing ']' after '{}'", &text[at..]), at));
                    };
                    let expr = &text[start..end];
                    if expr.trim().is_empty() {
                        return Err(err("empty sample expression '%[]'", at));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit).into_boxed_str()));
                    }
                    parts.push(Self::sample(expr, start)?);
                    i = end + 1;
                }
                None => {
                    return Err(err(
                        "truncated text after '%' (write '%%' for a percent sign)",
                        at,
                    ));
                }
                Some(_) => {
                    let var: String = text[at + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '{' || *c == '+')
                        .collect();
                    if let Some(fetch) = variable(&var) {
                        if !lit.is_empty() {
                            parts.push(Part::Lit(std::mem::take(&mut lit).into_boxed_str()));
                        }
                        parts.push(Part::Sample {
                            fetch,
                            conv: None,
                            last: false,
                        });
                        i = at + 1 + var.len();
                        continue;
                    }
                    let message = if var.is_empty() {
                        "a '%' must start '%[...]'; write '%%' for a percent sign".to_string()
                    } else {
                        format!(
                            "log-format variable '%{var}' is not supported (only {VARIABLES}, \
                             '%[FETCH]' sample expressions, e.g. '%[src]', and '%%')"
                        )
                    };
                    return Err(err(message, at));
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into_boxed_str()));
        }
        Ok(FormatString { parts })
    }

    /// One `%[...]` expression: a fetch the ACL engine knows (its matching-method variants
    /// such as `path_beg` are ACL keywords, not fetches) and an optional case converter.
    fn sample(expr: &str, offset: usize) -> Result<Part, AclError> {
        // A case converter applies to the text of any fetch here (HAProxy casts integers
        // and addresses to strings for it); the ACL engine takes it on string fetches only.
        let (expr, case) = match expr.rsplit_once(',') {
            Some((fetch, "lower")) => (fetch, Some(Case::Lower)),
            Some((fetch, "upper")) => (fetch, Some(Case::Upper)),
            _ => (expr, None),
        };
        let tok = Token {
            text: expr.to_owned(),
            start: offset,
        };
        let (fetch, method, _, conv) = parse_fetch(&tok)?;
        let conv = case.or(conv);
        if !matches!(
            method,
            MatchMethod::Str | MatchMethod::Int | MatchMethod::Ip | MatchMethod::Bool
        ) {
            let name = expr.split(['(', ',']).next().unwrap_or(expr);
            return Err(err(
                format!("unknown fetch method '{name}' (an ACL keyword, not a sample fetch)"),
                offset,
            ));
        }
        let (fetch, last) = Self::sample_context(fetch);
        Ok(Part::Sample { fetch, conv, last })
    }

    /// HAProxy's sample-fetch context: the last header value unless one is named, the
    /// last cookie of the name.
    fn sample_context(fetch: Fetch) -> (Fetch, bool) {
        match fetch {
            Fetch::Conv(inner, convs) => {
                let (inner, last) = Self::sample_context(*inner);
                (Fetch::Conv(Box::new(inner), convs), last)
            }
            Fetch::Hdr { name, occ: 0 } => (Fetch::Hdr { name, occ: -1 }, false),
            Fetch::HdrVal { name, occ: 0 } => (Fetch::HdrVal { name, occ: -1 }, false),
            Fetch::Res(inner) => (Fetch::Res(Box::new(Self::sample_context(*inner).0)), false),
            f @ Fetch::Cook { .. } => (f, true),
            f => (f, false),
        }
    }

    /// A response fetch (`%[status]`, `%[res.hdr(…)]`) the string uses, if any: request
    /// rules cannot.
    pub fn response_fetch(&self) -> Option<&'static str> {
        self.parts.iter().find_map(|p| match p {
            Part::Sample { fetch, .. } => fetch.response_keyword(),
            Part::Lit(_) => None,
        })
    }

    /// The text when there is no sample expression (`%%` already turned into `%`).
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The literal parts, for validating them once.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Lit(s) => Some(&**s),
            Part::Sample { .. } => None,
        })
    }

    /// Appends the expansion for one request to `out`.
    pub fn expand(&self, input: &dyn AclInput, out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Sample { fetch, conv, last } => {
                    let mark = out.len();
                    fetch.for_each(input, &mut |sample| {
                        out.truncate(mark);
                        with_str(sample, |t| {
                            out.push_str(t);
                            true
                        });
                        !*last
                    });
                    match conv {
                        Some(Case::Lower) => out[mark..].make_ascii_lowercase(),
                        Some(Case::Upper) => out[mark..].make_ascii_uppercase(),
                        None => {}
                    }
                }
            }
        }
    }
}

/// One sample expression on its own (`src`, `req.hdr(x-user),lower`), as in `track-sc0 KEY`:
/// the fetches and converters of a `%[...]`, with the same sample-fetch context (the last
/// value of a header).
#[derive(Debug, Clone)]
pub struct SampleExpr {
    fetch: Fetch,
    conv: Option<Case>,
    last: bool,
}

/// The value of a [`SampleExpr`] for one input (booleans are integers, as HAProxy casts
/// them for a table key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleValue {
    Int(i64),
    Ip(std::net::IpAddr),
    Str(String),
}

impl SampleValue {
    /// The value as a borrowed sample.
    pub(crate) fn as_sample(&self) -> Sample<'_> {
        match self {
            SampleValue::Int(i) => Sample::Int(*i),
            SampleValue::Ip(ip) => Sample::Ip(*ip),
            SampleValue::Str(s) => Sample::Str(s),
        }
    }

    /// A sample, owned (booleans as integers).
    pub(crate) fn from_sample(s: Sample<'_>) -> SampleValue {
        match s {
            Sample::Int(i) => SampleValue::Int(i),
            Sample::Bool(b) => SampleValue::Int(i64::from(b)),
            Sample::Ip(ip) => SampleValue::Ip(ip),
            Sample::Str(t) => SampleValue::Str(t.to_owned()),
        }
    }
}

impl SampleExpr {
    /// Compiles `text`; errors carry the byte offset in `text`.
    pub fn compile(text: &str) -> Result<SampleExpr, AclError> {
        if text.trim().is_empty() {
            return Err(err("empty sample expression", 0));
        }
        match FormatString::sample(text, 0)? {
            Part::Sample { fetch, conv, last } => Ok(SampleExpr { fetch, conv, last }),
            Part::Lit(_) => Err(err("not a sample expression", 0)),
        }
    }

    /// The sample for one input; `None` when the fetch has no value.
    pub fn eval(&self, input: &dyn AclInput) -> Option<SampleValue> {
        let mut out = None;
        self.fetch.for_each(input, &mut |s| {
            out = Some(SampleValue::from_sample(s));
            !self.last
        });
        let v = out?;
        let Some(c) = self.conv else {
            return Some(v);
        };
        let mut t = match v {
            SampleValue::Str(t) => t,
            SampleValue::Int(i) => i.to_string(),
            SampleValue::Ip(ip) => ip.to_string(),
        };
        match c {
            Case::Lower => t.make_ascii_lowercase(),
            Case::Upper => t.make_ascii_uppercase(),
        }
        Some(SampleValue::Str(t))
    }

    /// The stick table a stick-table fetch of the expression names, if any.
    pub fn stick_table(&self) -> Option<&str> {
        self.fetch.stick_table()
    }
}
