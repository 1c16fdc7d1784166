//! One ACL expression: `FETCH [FLAGS] [OPERATOR] PATTERN…`, compiled.
//!
//! Semantics follow HAProxy's `parse_acl_expr` / pattern matching (configuration manual,
//! sections 7.1 to 7.4): flags only before the first pattern (`-i` affects the patterns
//! and `-f` files that follow it), `--` ends the flags, integer operators are sticky
//! (`lt 3 5` means `lt 3 or lt 5`), ranges `a:b`, `:b`, `a:` (also `a-b`), samples are
//! cast to the type the matching method needs.

use std::fmt::Write as _;
use std::net::IpAddr;

use regex::{Regex, RegexBuilder};

use super::conv::{self, Conv, OutType};
use super::format::SampleValue;
use super::lex::Token;
use super::stick::{self, StickFetch, StickSample};
use super::vars::{self, Scope};
use super::{AclError, AclInput};

/// What a fetch produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SampleType {
    Bool,
    Int,
    Ip,
    Str,
}

/// One extracted value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sample<'a> {
    Bool(bool),
    Int(i64),
    Ip(IpAddr),
    Str(&'a str),
}

/// Where the value comes from.
#[derive(Debug, Clone)]
pub(crate) enum Fetch {
    Path,
    Url,
    Query,
    Method,
    /// `hdr(name[,occ])`; `occ` 0 = every value, > 0 = n-th, < 0 = n-th from the last.
    Hdr {
        name: Box<str>,
        occ: i64,
    },
    HdrCnt {
        name: Box<str>,
    },
    HdrVal {
        name: Box<str>,
        occ: i64,
    },
    Src,
    SslFc,
    SslFcSni,
    ReqSslSni,
    Nbsrv {
        backend: Box<str>,
    },
    /// `cook(name)`: each value of cookie `name` in the `Cookie` headers.
    Cook {
        name: Box<str>,
    },
    CookCnt {
        name: Box<str>,
    },
    /// `url_param(name[,delim])`: each value of query parameter `name`.
    UrlParam {
        name: Box<str>,
        delim: u8,
    },
    Const(bool),
    ProtoHttp,
    ReqVer,
    Dst,
    DstPort,
    SrcPort,
    /// `status`: the response status (response rules only).
    Status,
    /// `res.cache_hit`: the response was built from a cache entry (response rules only).
    CacheHit,
    /// `res.cache_name`: the cache that built the response, else empty (response rules only).
    CacheName,
    /// A header fetch (`Hdr`, `HdrCnt`, `HdrVal`) over the response's headers (`res.hdr`,
    /// `shdr`, …; response rules only).
    Res(Box<Fetch>),
    /// `ssl_c_*`: the client certificate.
    SslC(SslC),
    /// `sc_*`, `src_*`, `table_*`: stick tables.
    Stick(StickFetch),
    /// `var(scope.name)`.
    Var {
        scope: Scope,
        name: Box<str>,
    },
    /// `str(TEXT)`, `int(N)`: a constant (HAProxy's constant fetches, e.g. for `set-var`).
    Lit(SampleValue),
    /// A fetch and the converters after it (other than a lone `lower` / `upper`).
    Conv(Box<Fetch>, Box<[Conv]>),
}

/// The `ssl_c_*` fetches.
#[derive(Debug, Clone)]
pub(crate) enum SslC {
    Used,
    Verify,
    /// `ssl_c_s_dn([entry[,occ]])` (`issuer`: `ssl_c_i_dn`).
    Dn {
        issuer: bool,
        entry: Option<Box<str>>,
        occ: i64,
    },
    Serial,
    Sha1,
    NotAfter,
}

/// How samples are compared with patterns (`-m …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchMethod {
    Found,
    Bool,
    Int,
    Ip,
    Len,
    Str,
    Beg,
    Sub,
    Dir,
    Dom,
    End,
    Reg,
}

impl MatchMethod {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "found" => Self::Found,
            "bool" => Self::Bool,
            "int" => Self::Int,
            "ip" => Self::Ip,
            "len" => Self::Len,
            "str" => Self::Str,
            "beg" => Self::Beg,
            "sub" => Self::Sub,
            "dir" => Self::Dir,
            "dom" => Self::Dom,
            "end" => Self::End,
            "reg" => Self::Reg,
            _ => return None,
        })
    }

    /// Whether a sample of type `t` can be cast to what this method needs.
    fn accepts(self, t: SampleType) -> bool {
        match self {
            Self::Found => true,
            Self::Bool => matches!(t, SampleType::Bool | SampleType::Int),
            Self::Int => t != SampleType::Ip,
            Self::Ip => matches!(t, SampleType::Ip | SampleType::Str),
            _ => true,
        }
    }

    fn is_int(self) -> bool {
        matches!(self, Self::Int | Self::Len)
    }
}

/// An integer pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntPat {
    Range { min: Option<i64>, max: Option<i64> },
    Ne(i64),
}

impl IntPat {
    fn matches(self, v: i64) -> bool {
        match self {
            Self::Range { min, max } => min.is_none_or(|m| m <= v) && max.is_none_or(|m| v <= m),
            Self::Ne(x) => v != x,
        }
    }
}

/// An address pattern (address already masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetPat {
    V4 { addr: u32, mask: u32 },
    V6 { addr: u128, mask: u128 },
}

/// A string pattern with its own case flag (`-i` is positional).
#[derive(Debug, Clone)]
pub(crate) struct StrPat {
    text: Box<str>,
    icase: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Patterns {
    /// `found` / `bool`: patterns are ignored, as in HAProxy.
    None,
    Int(Vec<IntPat>),
    Ip(Vec<NetPat>),
    Str(Vec<StrPat>),
    Reg(Vec<Regex>),
}

/// A compiled ACL expression.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    pub(crate) fetch: Fetch,
    pub(crate) method: MatchMethod,
    pub(crate) patterns: Patterns,
}

// ---------------------------------------------------------------------------------------
// Keywords
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Path,
    Url,
    Query,
    Method,
    Hdr,
    HdrCnt,
    HdrVal,
    Src,
    SslFc,
    SslFcSni,
    ReqSslSni,
    Nbsrv,
    Cook,
    CookCnt,
    UrlParam,
    True,
    False,
    ProtoHttp,
    ReqVer,
    Dst,
    DstPort,
    SrcPort,
    Status,
    CacheHit,
    CacheName,
    ResHdr,
    ResHdrCnt,
    ResHdrVal,
    SslCUsed,
    SslCVerify,
    SslCSDn,
    SslCIDn,
    SslCSerial,
    SslCSha1,
    SslCNotAfter,
}

/// `(keyword, kind, implied matching method)`.
const KEYWORDS: &[(&str, Kind, MatchMethod)] = {
    use Kind as K;
    use MatchMethod as M;
    &[
        ("path", K::Path, M::Str),
        ("path_beg", K::Path, M::Beg),
        ("path_dir", K::Path, M::Dir),
        ("path_dom", K::Path, M::Dom),
        ("path_end", K::Path, M::End),
        ("path_len", K::Path, M::Len),
        ("path_reg", K::Path, M::Reg),
        ("path_sub", K::Path, M::Sub),
        ("url", K::Url, M::Str),
        ("url_beg", K::Url, M::Beg),
        ("url_dir", K::Url, M::Dir),
        ("url_dom", K::Url, M::Dom),
        ("url_end", K::Url, M::End),
        ("url_len", K::Url, M::Len),
        ("url_reg", K::Url, M::Reg),
        ("url_sub", K::Url, M::Sub),
        ("query", K::Query, M::Str),
        ("method", K::Method, M::Str),
        ("hdr", K::Hdr, M::Str),
        ("hdr_beg", K::Hdr, M::Beg),
        ("hdr_dir", K::Hdr, M::Dir),
        ("hdr_dom", K::Hdr, M::Dom),
        ("hdr_end", K::Hdr, M::End),
        ("hdr_len", K::Hdr, M::Len),
        ("hdr_reg", K::Hdr, M::Reg),
        ("hdr_sub", K::Hdr, M::Sub),
        ("hdr_cnt", K::HdrCnt, M::Int),
        ("hdr_val", K::HdrVal, M::Int),
        ("req.hdr", K::Hdr, M::Str),
        ("req.hdr_cnt", K::HdrCnt, M::Int),
        ("req.hdr_val", K::HdrVal, M::Int),
        ("src", K::Src, M::Ip),
        ("ssl_fc", K::SslFc, M::Bool),
        ("ssl_fc_sni", K::SslFcSni, M::Str),
        ("ssl_fc_sni_end", K::SslFcSni, M::End),
        ("ssl_fc_sni_reg", K::SslFcSni, M::Reg),
        ("req.ssl_sni", K::ReqSslSni, M::Str),
        ("req_ssl_sni", K::ReqSslSni, M::Str),
        ("nbsrv", K::Nbsrv, M::Int),
        ("cook", K::Cook, M::Str),
        ("cook_beg", K::Cook, M::Beg),
        ("cook_dir", K::Cook, M::Dir),
        ("cook_dom", K::Cook, M::Dom),
        ("cook_end", K::Cook, M::End),
        ("cook_len", K::Cook, M::Len),
        ("cook_reg", K::Cook, M::Reg),
        ("cook_sub", K::Cook, M::Sub),
        ("req.cook", K::Cook, M::Str),
        ("cook_cnt", K::CookCnt, M::Int),
        ("req.cook_cnt", K::CookCnt, M::Int),
        ("url_param", K::UrlParam, M::Str),
        ("urlp", K::UrlParam, M::Str),
        ("urlp_reg", K::UrlParam, M::Reg),
        ("always_true", K::True, M::Bool),
        ("always_false", K::False, M::Bool),
        ("req.proto_http", K::ProtoHttp, M::Bool),
        ("req_proto_http", K::ProtoHttp, M::Bool),
        ("req.ver", K::ReqVer, M::Str),
        ("req_ver", K::ReqVer, M::Str),
        ("dst", K::Dst, M::Ip),
        ("dst_port", K::DstPort, M::Int),
        ("src_port", K::SrcPort, M::Int),
        ("status", K::Status, M::Int),
        ("res.cache_hit", K::CacheHit, M::Bool),
        ("res.cache_name", K::CacheName, M::Str),
        ("res.hdr", K::ResHdr, M::Str),
        ("res.hdr_cnt", K::ResHdrCnt, M::Int),
        ("res.hdr_val", K::ResHdrVal, M::Int),
        ("shdr", K::ResHdr, M::Str),
        ("shdr_beg", K::ResHdr, M::Beg),
        ("shdr_dir", K::ResHdr, M::Dir),
        ("shdr_dom", K::ResHdr, M::Dom),
        ("shdr_end", K::ResHdr, M::End),
        ("shdr_len", K::ResHdr, M::Len),
        ("shdr_reg", K::ResHdr, M::Reg),
        ("shdr_sub", K::ResHdr, M::Sub),
        ("shdr_cnt", K::ResHdrCnt, M::Int),
        ("shdr_val", K::ResHdrVal, M::Int),
        ("ssl_c_used", K::SslCUsed, M::Bool),
        ("ssl_c_verify", K::SslCVerify, M::Int),
        ("ssl_c_s_dn", K::SslCSDn, M::Str),
        ("ssl_c_i_dn", K::SslCIDn, M::Str),
        ("ssl_c_serial", K::SslCSerial, M::Str),
        ("ssl_c_sha1", K::SslCSha1, M::Str),
        ("ssl_c_notafter", K::SslCNotAfter, M::Str),
    ]
};

fn err(message: impl Into<String>, offset: usize) -> AclError {
    AclError {
        message: message.into(),
        offset,
    }
}

/// A parsed fetch: what it reads, its implied match method, its sample type and the case
/// converter after it.
pub(crate) type ParsedFetch = (Fetch, MatchMethod, SampleType, Option<Case>);

/// Parses `name(args)` into a fetch. `tok` is the whole word.
pub(crate) fn parse_fetch(tok: &Token) -> Result<ParsedFetch, AclError> {
    let word = tok.text.as_str();
    let name_end = word
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(word.len());
    let name = &word[..name_end];
    let rest = &word[name_end..];
    // A converter list after anything but a lone case converter: the fetch, then the
    // converters in order.
    if let Some((base, list)) = split_converters(word)
        && !matches!(list, "lower" | "upper")
        && !(list == "hex" && matches!(base, "ssl_c_serial" | "ssl_c_sha1"))
    {
        let inner = Token {
            text: base.to_owned(),
            start: tok.start,
        };
        let (fetch, method, t, case) = parse_fetch(&inner)?;
        let mut convs = Vec::new();
        let mut out = match t {
            SampleType::Int | SampleType::Bool => OutType::Int,
            SampleType::Ip => OutType::Ip,
            SampleType::Str => OutType::Str,
        };
        if let Some(c) = case {
            convs.push(match c {
                Case::Lower => Conv::Lower,
                Case::Upper => Conv::Upper,
            });
        }
        for (i, w) in conv::split_list(list).into_iter().enumerate() {
            // `ssl_c_serial,hex,…`: lb's value is hex already.
            if i == 0 && w == "hex" && matches!(base, "ssl_c_serial" | "ssl_c_sha1") {
                continue;
            }
            let c = conv::parse(w).map_err(|m| err(m, tok.start))?;
            out = c.out_type(out);
            convs.push(c);
        }
        let t = match out {
            OutType::Str => SampleType::Str,
            OutType::Int => SampleType::Int,
            OutType::Ip => SampleType::Ip,
        };
        // The implied match method of the fetch's keyword, if it fits what comes out.
        let method = if method.accepts(t) {
            method
        } else {
            MatchMethod::Str
        };
        return Ok((Fetch::Conv(Box::new(fetch), convs.into()), method, t, None));
    }
    if let Some(r) = parse_stick_fetch(tok, name, rest) {
        return r;
    }
    if name == "var" {
        let Some(inner) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) else {
            return Err(err(
                "fetch 'var' needs a variable: var(txn.name)",
                tok.start,
            ));
        };
        let (scope, vname) = vars::parse_name(inner.trim()).map_err(|m| err(m, tok.start))?;
        return Ok((
            Fetch::Var {
                scope,
                name: vname.into(),
            },
            MatchMethod::Str,
            SampleType::Str,
            None,
        ));
    }
    if name == "str" || name == "int" {
        let Some(inner) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) else {
            return Err(err(
                format!("fetch '{name}' needs its value: {name}(...)"),
                tok.start,
            ));
        };
        let (value, method, t) = if name == "str" {
            let v = SampleValue::Str(inner.to_owned());
            (v, MatchMethod::Str, SampleType::Str)
        } else {
            let n = inner.trim().parse::<i64>().map_err(|_| {
                err(
                    format!("fetch 'int' needs an integer, not '{inner}'"),
                    tok.start,
                )
            })?;
            (SampleValue::Int(n), MatchMethod::Int, SampleType::Int)
        };
        return Ok((Fetch::Lit(value), method, t, None));
    }
    let Some(&(_, kind, method)) = KEYWORDS.iter().find(|(k, _, _)| *k == name) else {
        return Err(err(format!("unknown fetch method '{name}'"), tok.start));
    };
    // Arguments.
    let (args, after): (Vec<&str>, &str) = if let Some(inner) = rest.strip_prefix('(') {
        let Some(close) = inner.find(')') else {
            return Err(err(
                format!("missing closing ')' after arguments to '{name}'"),
                tok.start,
            ));
        };
        (inner[..close].split(',').collect(), &inner[close + 1..])
    } else {
        (Vec::new(), rest)
    };
    // `ssl_c_serial` and `ssl_c_sha1` are binary in HAProxy, almost always written
    // `,hex`; lb gives their upper-case hex directly, so `,hex` leaves them as they are.
    let hex_already = matches!(kind, Kind::SslCSerial | Kind::SslCSha1);
    let conv = match after {
        "" => None,
        ",hex" if hex_already => None,
        ",lower" => Some(Case::Lower),
        ",upper" => Some(Case::Upper),
        _ if after.starts_with(',') => {
            return Err(err(
                format!(
                    "converter '{}' is not supported (only 'lower' and 'upper', and 'hex' after ssl_c_serial and ssl_c_sha1)",
                    &after[1..]
                ),
                tok.start,
            ));
        }
        _ => {
            return Err(err(
                format!("unexpected '{after}' after fetch '{name}'"),
                tok.start,
            ));
        }
    };
    let (fetch, method, t) = parse_fetch_args(tok, name, kind, method, &args)?;
    if conv.is_some() && t != SampleType::Str {
        return Err(err(
            format!("converter '{}' needs a string fetch", &after[1..]),
            tok.start,
        ));
    }
    Ok((fetch, method, t, conv))
}

/// `FETCH(ARGS),CONV…` split after the fetch: `(fetch, converters)`, when there are any.
fn split_converters(word: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (i, c) in word.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => return Some((&word[..i], &word[i + 1..])),
            _ => {}
        }
    }
    None
}

/// A stick-table fetch (`sc_http_req_rate(0)`, `src_conn_cur`, …), if `name` is one: an
/// integer sample (a boolean for `sc_tracked`), no converter.
fn parse_stick_fetch(tok: &Token, name: &str, rest: &str) -> Option<Result<ParsedFetch, AclError>> {
    let (args, after): (Vec<&str>, &str) = match rest.strip_prefix('(') {
        Some(inner) => match inner.find(')') {
            Some(close) => (inner[..close].split(',').collect(), &inner[close + 1..]),
            None => (Vec::new(), rest),
        },
        None => (Vec::new(), rest),
    };
    let f = match stick::parse(name, &args)? {
        Ok(f) => f,
        Err(m) => return Some(Err(err(m, tok.start))),
    };
    if !after.is_empty() {
        return Some(Err(err(
            format!("unexpected '{after}' after fetch '{name}'"),
            tok.start,
        )));
    }
    let (method, t) = match f {
        StickFetch::Tracked { .. } => (MatchMethod::Bool, SampleType::Bool),
        _ => (MatchMethod::Int, SampleType::Int),
    };
    Some(Ok((Fetch::Stick(f), method, t, None)))
}

/// Builds the fetch from its keyword and arguments.
fn parse_fetch_args(
    tok: &Token,
    name: &str,
    kind: Kind,
    method: MatchMethod,
    args: &[&str],
) -> Result<(Fetch, MatchMethod, SampleType), AclError> {
    let no_args = |fetch: Fetch, t: SampleType| {
        if args.is_empty() {
            Ok((fetch, method, t))
        } else {
            Err(err(format!("fetch '{name}' takes no argument"), tok.start))
        }
    };
    let header_name = || -> Result<Box<str>, AclError> {
        match args.first() {
            Some(h) if !h.is_empty() => Ok(h.to_ascii_lowercase().into_boxed_str()),
            _ => Err(err(
                format!("fetch '{name}' needs a header name"),
                tok.start,
            )),
        }
    };
    let occurrence = || -> Result<i64, AclError> {
        match args.get(1) {
            None => Ok(0),
            Some(o) => o.trim().parse::<i64>().map_err(|_| {
                err(
                    format!("invalid occurrence '{o}' in '{name}' (an integer is expected)"),
                    tok.start,
                )
            }),
        }
    };
    let at_most = |n: usize| {
        if args.len() > n {
            Err(err(format!("too many arguments to '{name}'"), tok.start))
        } else {
            Ok(())
        }
    };
    match kind {
        Kind::Path => no_args(Fetch::Path, SampleType::Str),
        Kind::Url => no_args(Fetch::Url, SampleType::Str),
        Kind::Query => no_args(Fetch::Query, SampleType::Str),
        Kind::Method => no_args(Fetch::Method, SampleType::Str),
        Kind::Src => no_args(Fetch::Src, SampleType::Ip),
        Kind::SslFc => no_args(Fetch::SslFc, SampleType::Bool),
        Kind::SslFcSni => no_args(Fetch::SslFcSni, SampleType::Str),
        Kind::ReqSslSni => no_args(Fetch::ReqSslSni, SampleType::Str),
        Kind::True => no_args(Fetch::Const(true), SampleType::Bool),
        Kind::False => no_args(Fetch::Const(false), SampleType::Bool),
        Kind::ProtoHttp => no_args(Fetch::ProtoHttp, SampleType::Bool),
        Kind::ReqVer => no_args(Fetch::ReqVer, SampleType::Str),
        Kind::Dst => no_args(Fetch::Dst, SampleType::Ip),
        Kind::DstPort => no_args(Fetch::DstPort, SampleType::Int),
        Kind::SrcPort => no_args(Fetch::SrcPort, SampleType::Int),
        Kind::Status => no_args(Fetch::Status, SampleType::Int),
        Kind::CacheHit => no_args(Fetch::CacheHit, SampleType::Bool),
        Kind::CacheName => no_args(Fetch::CacheName, SampleType::Str),
        Kind::SslCUsed => no_args(Fetch::SslC(SslC::Used), SampleType::Bool),
        Kind::SslCVerify => no_args(Fetch::SslC(SslC::Verify), SampleType::Int),
        Kind::SslCSerial => no_args(Fetch::SslC(SslC::Serial), SampleType::Str),
        Kind::SslCSha1 => no_args(Fetch::SslC(SslC::Sha1), SampleType::Str),
        Kind::SslCNotAfter => no_args(Fetch::SslC(SslC::NotAfter), SampleType::Str),
        Kind::SslCSDn | Kind::SslCIDn => {
            at_most(2)?;
            let entry = args
                .first()
                .map(|e| e.trim())
                .filter(|e| !e.is_empty())
                .map(Box::from);
            // HAProxy's default: the first occurrence.
            let occ = match args.get(1) {
                None => 1,
                Some(o) => o.trim().parse::<i64>().map_err(|_| {
                    err(
                        format!("invalid occurrence '{o}' in '{name}' (an integer is expected)"),
                        tok.start,
                    )
                })?,
            };
            let f = Fetch::SslC(SslC::Dn {
                issuer: kind == Kind::SslCIDn,
                entry,
                occ,
            });
            Ok((f, method, SampleType::Str))
        }
        Kind::ResHdr | Kind::ResHdrCnt | Kind::ResHdrVal => {
            let req_kind = match kind {
                Kind::ResHdr => Kind::Hdr,
                Kind::ResHdrCnt => Kind::HdrCnt,
                _ => Kind::HdrVal,
            };
            let (f, m, t) = parse_fetch_args(tok, name, req_kind, method, args)?;
            Ok((Fetch::Res(Box::new(f)), m, t))
        }
        Kind::Hdr => {
            at_most(2)?;
            let f = Fetch::Hdr {
                name: header_name()?,
                occ: occurrence()?,
            };
            Ok((f, method, SampleType::Str))
        }
        Kind::HdrVal => {
            at_most(2)?;
            let f = Fetch::HdrVal {
                name: header_name()?,
                occ: occurrence()?,
            };
            Ok((f, method, SampleType::Int))
        }
        Kind::HdrCnt => {
            at_most(1)?;
            let f = Fetch::HdrCnt {
                name: header_name()?,
            };
            Ok((f, method, SampleType::Int))
        }
        Kind::Cook | Kind::CookCnt => {
            at_most(1)?;
            let name: Box<str> = match args.first() {
                Some(n) if !n.is_empty() => (*n).into(),
                _ => {
                    return Err(err(
                        format!("fetch '{name}' needs a cookie name"),
                        tok.start,
                    ));
                }
            };
            if kind == Kind::Cook {
                Ok((Fetch::Cook { name }, method, SampleType::Str))
            } else {
                Ok((Fetch::CookCnt { name }, method, SampleType::Int))
            }
        }
        Kind::UrlParam => {
            at_most(2)?;
            let pname: Box<str> = match args.first() {
                Some(n) if !n.is_empty() => (*n).into(),
                _ => {
                    return Err(err(
                        format!("fetch '{name}' needs a parameter name"),
                        tok.start,
                    ));
                }
            };
            let delim = match args.get(1).map(|d| d.as_bytes()) {
                None => b'&',
                Some([d]) if d.is_ascii() => *d,
                Some(_) => {
                    return Err(err(
                        format!("the delimiter of '{name}' must be one ASCII character"),
                        tok.start,
                    ));
                }
            };
            Ok((
                Fetch::UrlParam { name: pname, delim },
                method,
                SampleType::Str,
            ))
        }
        Kind::Nbsrv => {
            at_most(1)?;
            match args.first() {
                Some(b) if !b.is_empty() => Ok((
                    Fetch::Nbsrv {
                        backend: (*b).into(),
                    },
                    method,
                    SampleType::Int,
                )),
                _ => Err(err("fetch 'nbsrv' needs a backend name", tok.start)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Parses one expression from `toks` (the fetch word first). `end` is the offset just past
/// the text, used for errors about missing words.
pub(crate) fn parse_expr(toks: &[Token], end: usize) -> Result<Expr, AclError> {
    let Some(first) = toks.first() else {
        return Err(err("missing fetch method", end));
    };
    let (fetch, mut method, sample_type, conv) = parse_fetch(first)?;

    // Flags.
    let mut icase = false;
    let mut i = 1;
    let mut loaded: Vec<(String, bool, usize)> = Vec::new(); // (file, icase, offset)
    while let Some(tok) = toks.get(i) {
        if !tok.text.starts_with('-') {
            break;
        }
        let arg = |j: usize| {
            toks.get(j)
                .ok_or_else(|| err(format!("missing argument after '{}'", tok.text), tok.start))
        };
        match tok.text.as_str() {
            "-i" => icase = true,
            "-n" => {}
            "-u" => {
                let a = arg(i + 1)?;
                if a.text.parse::<i64>().is_err() {
                    return Err(err("the argument of -u must be an integer", a.start));
                }
                i += 1;
            }
            "-m" => {
                let a = arg(i + 1)?;
                if !loaded.is_empty() {
                    return Err(err(
                        "'-m' must only be specified before patterns and files",
                        tok.start,
                    ));
                }
                let Some(m) = MatchMethod::from_name(&a.text) else {
                    let msg = if matches!(a.text.as_str(), "bin" | "regm") {
                        format!("matching method '{}' is not supported", a.text)
                    } else {
                        format!("unknown matching method '{}'", a.text)
                    };
                    return Err(err(msg, a.start));
                };
                if !m.accepts(sample_type) {
                    return Err(err(
                        format!(
                            "matching method '{}' cannot be used with fetch '{}'",
                            a.text, first.text
                        ),
                        a.start,
                    ));
                }
                method = m;
                i += 1;
            }
            "-f" => {
                let a = arg(i + 1)?;
                loaded.push((a.text.clone(), icase, a.start));
                i += 1;
            }
            "-M" => return Err(err("'-M' (map files) is not supported in ACLs", tok.start)),
            "--" => {
                i += 1;
                break;
            }
            other => {
                return Err(err(
                    format!(
                        "'{other}' is not a valid ACL option. Please use '--' before any \
                         pattern beginning with a '-'"
                    ),
                    tok.start,
                ));
            }
        }
        i += 1;
    }

    if conv.is_some() && method == MatchMethod::Reg {
        return Err(err(
            "regex matching after a 'lower'/'upper' converter is not supported; use '-i'",
            first.start,
        ));
    }
    let mut builder = PatternBuilder::new(method, conv);
    for (file, file_icase, offset) in &loaded {
        let content = std::fs::read_to_string(file).map_err(|e| {
            err(
                format!("failed to open pattern file '{file}': {e}"),
                *offset,
            )
        })?;
        for (lineno, line) in content.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            builder
                .push(line, *file_icase, *offset)
                .map_err(|e| AclError {
                    message: format!("{} at line {} of file '{file}'", e.message, lineno + 1),
                    offset: e.offset,
                })?;
        }
    }
    for tok in &toks[i..] {
        builder.push_word(tok, icase)?;
    }
    Ok(Expr {
        fetch,
        method,
        patterns: builder.finish(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A case converter applied to a string sample (`,lower` / `,upper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Lower,
    Upper,
}

struct PatternBuilder {
    method: MatchMethod,
    op: IntOp,
    patterns: Patterns,
    conv: Option<Case>,
}

impl PatternBuilder {
    fn new(method: MatchMethod, conv: Option<Case>) -> Self {
        let patterns = match method {
            MatchMethod::Found | MatchMethod::Bool => Patterns::None,
            MatchMethod::Int | MatchMethod::Len => Patterns::Int(Vec::new()),
            MatchMethod::Ip => Patterns::Ip(Vec::new()),
            MatchMethod::Reg => Patterns::Reg(Vec::new()),
            _ => Patterns::Str(Vec::new()),
        };
        Self {
            method,
            op: IntOp::Eq,
            patterns,
            conv,
        }
    }

    /// A pattern word from the line: integer operators are recognised here only.
    fn push_word(&mut self, tok: &Token, icase: bool) -> Result<(), AclError> {
        if self.method.is_int() {
            let op = match tok.text.as_str() {
                "eq" => Some(IntOp::Eq),
                "ne" => Some(IntOp::Ne),
                "gt" => Some(IntOp::Gt),
                "ge" => Some(IntOp::Ge),
                "lt" => Some(IntOp::Lt),
                "le" => Some(IntOp::Le),
                _ => None,
            };
            if let Some(op) = op {
                self.op = op;
                return Ok(());
            }
        }
        self.push(&tok.text, icase, tok.start)
    }

    fn push(&mut self, text: &str, icase: bool, offset: usize) -> Result<(), AclError> {
        match &mut self.patterns {
            Patterns::None => {}
            Patterns::Int(v) => v.push(parse_int_pattern(text, self.op, offset)?),
            Patterns::Ip(v) => v.push(parse_net(text).ok_or_else(|| {
                err(
                    format!("'{text}' is not a valid IPv4 or IPv6 address or network"),
                    offset,
                )
            })?),
            Patterns::Reg(v) => {
                let re = RegexBuilder::new(text)
                    .case_insensitive(icase)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        let detail = e.to_string();
                        let last = detail.lines().last().unwrap_or_default().trim().to_string();
                        err(format!("invalid regex '{text}': {last}"), offset)
                    })?;
                v.push(re);
            }
            Patterns::Str(v) => {
                // Comparing a case-converted sample with a pattern is comparing the raw
                // sample case-insensitively, provided the pattern could come out of the
                // converter at all; one that cannot is dropped (it would never match).
                let (icase, possible) = match self.conv {
                    None => (icase, true),
                    Some(Case::Lower) => {
                        (true, icase || !text.bytes().any(|b| b.is_ascii_uppercase()))
                    }
                    Some(Case::Upper) => {
                        (true, icase || !text.bytes().any(|b| b.is_ascii_lowercase()))
                    }
                };
                if possible {
                    v.push(StrPat {
                        text: text.into(),
                        icase,
                    });
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Patterns {
        self.patterns
    }
}

/// Parses an integer the way HAProxy's `strl2llrc` does: optional sign, digits only.
fn parse_i64(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    Some(if neg { -v } else { v })
}

fn parse_int_pattern(text: &str, op: IntOp, offset: usize) -> Result<IntPat, AclError> {
    let bad_range = || err(format!("'{text}' is not a valid number range"), offset);
    let sep = text.find([':', '-']);
    let Some(sep) = sep else {
        let v = parse_i64(text).ok_or_else(|| {
            err(
                format!("'{text}' is neither a number nor a supported operator"),
                offset,
            )
        })?;
        return Ok(match op {
            IntOp::Eq => IntPat::Range {
                min: Some(v),
                max: Some(v),
            },
            // HAProxy's parser recognises `ne` but has no case for it, so there it silently
            // acts as `eq`; here it means what it says (not equal).
            IntOp::Ne => IntPat::Ne(v),
            IntOp::Ge => IntPat::Range {
                min: Some(v),
                max: None,
            },
            IntOp::Gt => IntPat::Range {
                min: Some(v.saturating_add(1)),
                max: None,
            },
            IntOp::Le => IntPat::Range {
                min: None,
                max: Some(v),
            },
            IntOp::Lt => IntPat::Range {
                min: None,
                max: Some(v.saturating_sub(1)),
            },
        });
    };
    // A range (the operator does not apply, as in HAProxy).
    let (lo, hi) = (&text[..sep], &text[sep + 1..]);
    if lo.is_empty() && hi.is_empty() {
        return Err(bad_range());
    }
    let min = if lo.is_empty() {
        None
    } else {
        Some(parse_i64(lo).ok_or_else(bad_range)?)
    };
    let max = if hi.is_empty() {
        None
    } else {
        Some(parse_i64(hi).ok_or_else(bad_range)?)
    };
    if let (Some(a), Some(b)) = (min, max)
        && a > b
    {
        return Err(bad_range());
    }
    Ok(IntPat::Range { min, max })
}

/// `addr[/bits]` or `a.b.c.d/m.m.m.m`, IPv4 or IPv6.
pub(crate) fn parse_net(text: &str) -> Option<NetPat> {
    let (addr, mask) = match text.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (text, None),
    };
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => {
            let mask: u32 = match mask {
                None => u32::MAX,
                // Dotted masks may be non-contiguous, as in HAProxy.
                Some(m) if m.contains('.') => m.parse::<std::net::Ipv4Addr>().ok()?.into(),
                Some(m) => {
                    let bits: u32 = digits_only(m)?;
                    if bits > 32 {
                        return None;
                    }
                    u32::MAX.checked_shl(32 - bits).unwrap_or(0)
                }
            };
            Some(NetPat::V4 {
                addr: u32::from(a) & mask,
                mask,
            })
        }
        IpAddr::V6(a) => {
            let mask: u128 = match mask {
                None => u128::MAX,
                Some(m) => {
                    let bits: u32 = digits_only(m)?;
                    if bits > 128 {
                        return None;
                    }
                    u128::MAX.checked_shl(128 - bits).unwrap_or(0)
                }
            };
            Some(NetPat::V6 {
                addr: u128::from(a) & mask,
                mask,
            })
        }
    }
}

fn digits_only(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Evaluation (no parsing, no allocation)
// ---------------------------------------------------------------------------------------

impl Fetch {
    /// Calls `f` on each sample until it returns true; returns whether one did.
    pub(crate) fn for_each(
        &self,
        input: &dyn AclInput,
        f: &mut dyn FnMut(Sample<'_>) -> bool,
    ) -> bool {
        match self {
            Fetch::Path => f(Sample::Str(input.path())),
            Fetch::Url => f(Sample::Str(input.url())),
            Fetch::Query => match input.url().split_once('?') {
                Some((_, q)) => f(Sample::Str(q)),
                None => false,
            },
            Fetch::Method => f(Sample::Str(input.method())),
            Fetch::Hdr { name, occ } => {
                for_each_occurrence(input, name, *occ, &mut |v| f(Sample::Str(v)))
            }
            Fetch::HdrVal { name, occ } => {
                for_each_occurrence(input, name, *occ, &mut |v| match str_to_int(v) {
                    Some(n) => f(Sample::Int(n)),
                    None => false,
                })
            }
            Fetch::HdrCnt { name } => {
                let mut n: i64 = 0;
                input.any_header(name, &mut |_| {
                    n += 1;
                    false
                });
                f(Sample::Int(n))
            }
            Fetch::Src => f(Sample::Ip(input.src())),
            Fetch::SslFc => f(Sample::Bool(input.ssl_fc())),
            Fetch::SslFcSni => match input.ssl_fc_sni() {
                Some(s) => f(Sample::Str(s)),
                None => false,
            },
            Fetch::ReqSslSni => match input.req_ssl_sni() {
                Some(s) => f(Sample::Str(s)),
                None => false,
            },
            Fetch::Nbsrv { backend } => f(Sample::Int(i64::from(input.nbsrv(backend)))),
            Fetch::Cook { name } => input.any_header("cookie", &mut |v| {
                for_each_cookie(v, name, &mut |c| f(Sample::Str(c)))
            }),
            Fetch::CookCnt { name } => {
                let mut n: i64 = 0;
                input.any_header("cookie", &mut |v| {
                    for_each_cookie(v, name, &mut |_| {
                        n += 1;
                        false
                    })
                });
                f(Sample::Int(n))
            }
            Fetch::UrlParam { name, delim } => {
                let Some((_, query)) = input.url().split_once('?') else {
                    return false;
                };
                query.split(char::from(*delim)).any(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    k == &**name && f(Sample::Str(v))
                })
            }
            Fetch::Const(b) => f(Sample::Bool(*b)),
            Fetch::ProtoHttp => f(Sample::Bool(input.is_http())),
            Fetch::ReqVer => match input.http_version() {
                Some(v) => f(Sample::Str(v)),
                None => false,
            },
            Fetch::Dst => match input.dst() {
                Some(a) => f(Sample::Ip(a.ip())),
                None => false,
            },
            Fetch::DstPort => match input.dst() {
                Some(a) => f(Sample::Int(i64::from(a.port()))),
                None => false,
            },
            Fetch::SrcPort => match input.src_port() {
                Some(p) => f(Sample::Int(i64::from(p))),
                None => false,
            },
            Fetch::Status => match input.status() {
                Some(s) => f(Sample::Int(i64::from(s))),
                None => false,
            },
            // Always a sample in a response (HAProxy: false / empty when not from a cache).
            Fetch::CacheHit => {
                input.status().is_some() && f(Sample::Bool(input.cache_hit().is_some()))
            }
            Fetch::CacheName => {
                input.status().is_some() && f(Sample::Str(input.cache_hit().unwrap_or("")))
            }
            Fetch::Res(inner) => inner.for_each(&ResponseHeaders(input), f),
            Fetch::Stick(s) => match s.eval(input.stick(), input.src()) {
                Some(StickSample::Int(i)) => f(Sample::Int(i)),
                Some(StickSample::Bool(b)) => f(Sample::Bool(b)),
                None => false,
            },
            Fetch::Var { scope, name } => match input.vars().and_then(|v| v.get(*scope, name)) {
                Some(v) => f(v.as_sample()),
                None => false,
            },
            Fetch::Lit(v) => f(v.as_sample()),
            Fetch::Conv(inner, convs) => inner.for_each(input, &mut |s| {
                let mut v = Some(SampleValue::from_sample(s));
                for c in convs.iter() {
                    v = v.and_then(|v| c.apply(v, input));
                }
                match v {
                    Some(v) => f(v.as_sample()),
                    None => false,
                }
            }),
            Fetch::SslC(which) => {
                // No sample without TLS, as in HAProxy.
                if !input.ssl_fc() {
                    return false;
                }
                let cert = input.ssl_c();
                match which {
                    SslC::Used => f(Sample::Bool(cert.is_some())),
                    // A certificate that fails verification fails the handshake: every
                    // connection that reaches a rule verified fine (or sent none).
                    SslC::Verify => f(Sample::Int(0)),
                    _ => {
                        let Some(c) = cert else { return false };
                        let v = match which {
                            SslC::Dn { issuer, entry, occ } => {
                                let dn = if *issuer { &c.issuer } else { &c.subject };
                                match entry {
                                    None => Some(dn.oneline()),
                                    Some(e) => dn.entry(e, *occ),
                                }
                            }
                            SslC::Serial => Some(c.serial_hex.as_str()),
                            SslC::Sha1 => Some(c.sha1_hex.as_str()),
                            _ => Some(c.not_after.as_str()),
                        };
                        v.is_some_and(|s| f(Sample::Str(s)))
                    }
                }
            }
        }
    }

    /// The response fetch's keyword, if this is one (config validation: request rules
    /// cannot use them).
    pub(crate) fn response_keyword(&self) -> Option<&'static str> {
        match self {
            Fetch::Status => Some("status"),
            Fetch::CacheHit => Some("res.cache_hit"),
            Fetch::CacheName => Some("res.cache_name"),
            Fetch::Res(_) => Some("res.hdr"),
            Fetch::Conv(inner, _) => inner.response_keyword(),
            _ => None,
        }
    }

    /// The stick table a stick-table fetch names, if this is one that names one.
    pub(crate) fn stick_table(&self) -> Option<&str> {
        match self {
            Fetch::Stick(s) => s.table(),
            Fetch::Conv(inner, _) => inner.stick_table(),
            _ => None,
        }
    }

    /// Whether this is a stick-table fetch.
    pub(crate) fn is_stick(&self) -> bool {
        match self {
            Fetch::Stick(_) => true,
            Fetch::Conv(inner, _) => inner.is_stick(),
            _ => false,
        }
    }

    /// Whether this is a stick-table fetch that reads the section's own table.
    pub(crate) fn reads_own_stick_table(&self) -> bool {
        match self {
            Fetch::Stick(s) => s.reads_own_table(),
            Fetch::Conv(inner, _) => inner.reads_own_stick_table(),
            _ => false,
        }
    }

    /// The backend named by `nbsrv(…)`, if this is one.
    pub(crate) fn nbsrv_backend(&self) -> Option<&str> {
        match self {
            Fetch::Nbsrv { backend } => Some(backend),
            Fetch::Conv(inner, _) => inner.nbsrv_backend(),
            _ => None,
        }
    }
}

/// `input` with the response's headers in place of the request's, for `res.hdr` & co.
struct ResponseHeaders<'a>(&'a dyn AclInput);

impl AclInput for ResponseHeaders<'_> {
    fn path(&self) -> &str {
        self.0.path()
    }
    fn url(&self) -> &str {
        self.0.url()
    }
    fn method(&self) -> &str {
        self.0.method()
    }
    fn any_header(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0.any_response_header(name, f)
    }
    fn src(&self) -> std::net::IpAddr {
        self.0.src()
    }
    fn ssl_fc(&self) -> bool {
        self.0.ssl_fc()
    }
    fn ssl_fc_sni(&self) -> Option<&str> {
        self.0.ssl_fc_sni()
    }
    fn req_ssl_sni(&self) -> Option<&str> {
        self.0.req_ssl_sni()
    }
    fn nbsrv(&self, backend: &str) -> u32 {
        self.0.nbsrv(backend)
    }
    fn ssl_c(&self) -> Option<&crate::acl::ClientCert> {
        self.0.ssl_c()
    }
    fn stick(&self) -> Option<&dyn crate::acl::StickCounters> {
        self.0.stick()
    }
    fn vars(&self) -> Option<&dyn crate::acl::Vars> {
        self.0.vars()
    }
}

fn for_each_occurrence(
    input: &dyn AclInput,
    name: &str,
    occ: i64,
    f: &mut dyn FnMut(&str) -> bool,
) -> bool {
    if occ == 0 {
        return input.any_header(name, f);
    }
    let target = if occ > 0 {
        occ
    } else {
        let mut count: i64 = 0;
        input.any_header(name, &mut |_| {
            count += 1;
            false
        });
        let t = count + occ + 1;
        if t < 1 {
            return false;
        }
        t
    };
    let mut seen: i64 = 0;
    let mut hit = false;
    input.any_header(name, &mut |v| {
        seen += 1;
        if seen == target {
            hit = f(v);
            true
        } else {
            false
        }
    });
    hit
}

/// Calls `f` on the value of each `name=value` cookie in one `Cookie` header value.
fn for_each_cookie(header: &str, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
    header.split(';').any(|c| {
        let c = c.trim_matches([' ', '\t']);
        match c.split_once('=') {
            Some((k, v)) if k.trim_end() == name => f(v.trim_start()),
            _ => false,
        }
    })
}

/// HAProxy's string-to-integer cast: optional sign then leading digits; empty fails.
fn str_to_int(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let (neg, mut i) = match b[0] {
        b'-' => (true, 1),
        b'+' => (false, 1),
        _ => (false, 0),
    };
    let mut v: i64 = 0;
    while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        i += 1;
    }
    Some(if neg { -v } else { v })
}

/// A fixed buffer to render non-string samples as text without allocating.
struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

pub(crate) fn with_str(sample: Sample<'_>, f: impl FnOnce(&str) -> bool) -> bool {
    let mut s = StackStr {
        buf: [0; 64],
        len: 0,
    };
    let ok = match sample {
        Sample::Str(t) => return f(t),
        Sample::Int(i) => write!(s, "{i}"),
        Sample::Bool(b) => write!(s, "{}", u8::from(b)),
        Sample::Ip(ip) => write!(s, "{ip}"),
    };
    if ok.is_err() {
        return false;
    }
    match std::str::from_utf8(&s.buf[..s.len]) {
        Ok(t) => f(t),
        Err(_) => false,
    }
}

fn eq_bytes(a: &[u8], b: &[u8], icase: bool) -> bool {
    if icase {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn contains(hay: &str, needle: &str, icase: bool) -> bool {
    if needle.is_empty() {
        return true;
    }
    if !icase {
        return hay.contains(needle);
    }
    let n = needle.as_bytes();
    hay.as_bytes()
        .windows(n.len())
        .any(|w| w.eq_ignore_ascii_case(n))
}

/// HAProxy's word match: `pat`, stripped of delimiters at both ends, must appear in `s`
/// enclosed by delimiters or the ends of `s`.
fn match_word(s: &str, pat: &str, icase: bool, delims: &[u8]) -> bool {
    let is_delim = |c: u8| delims.contains(&c);
    let mut p = pat.as_bytes();
    while let Some((&c, rest)) = p.split_first() {
        if !is_delim(c) {
            break;
        }
        p = rest;
    }
    while let Some((&c, rest)) = p.split_last() {
        if !is_delim(c) {
            break;
        }
        p = rest;
    }
    let s = s.as_bytes();
    if p.is_empty() || p.len() > s.len() {
        return false;
    }
    let last = s.len() - p.len();
    let mut may_match = true;
    for c in 0..=last {
        if is_delim(s[c]) {
            may_match = true;
            continue;
        }
        if !may_match {
            continue;
        }
        if eq_bytes(&s[c..c + p.len()], p, icase) && (c == last || is_delim(s[c + p.len()])) {
            return true;
        }
        may_match = false;
    }
    false
}

fn v6_to_v4(a: u128) -> Option<u32> {
    // ::ffff:a.b.c.d
    if a >> 32 == 0xffff {
        return Some(a as u32);
    }
    // 6to4: 2002:AABB:CCDD::/48
    if a >> 112 == 0x2002 {
        return Some((a >> 80) as u32);
    }
    None
}

fn ip_matches(pats: &[NetPat], ip: IpAddr) -> bool {
    let (v4, v6) = match ip {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            (Some(a), (0xffffu128 << 32) | u128::from(a))
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            (v6_to_v4(a), a)
        }
    };
    pats.iter().any(|p| match *p {
        NetPat::V4 { addr, mask } => v4.is_some_and(|a| a & mask == addr),
        NetPat::V6 { addr, mask } => v6 & mask == addr,
    })
}

impl Expr {
    /// Whether any sample of the fetch matches any pattern.
    pub(crate) fn matches(&self, input: &dyn AclInput) -> bool {
        self.fetch
            .for_each(input, &mut |sample| self.match_sample(sample))
    }

    fn match_sample(&self, sample: Sample<'_>) -> bool {
        match (&self.patterns, self.method) {
            (_, MatchMethod::Found) => true,
            (_, MatchMethod::Bool) => match sample {
                Sample::Bool(b) => b,
                Sample::Int(i) => i != 0,
                _ => false,
            },
            (Patterns::Int(pats), MatchMethod::Len) => with_str(sample, |t| {
                let len = i64::try_from(t.len()).unwrap_or(i64::MAX);
                pats.iter().any(|p| p.matches(len))
            }),
            (Patterns::Int(pats), _) => {
                let v = match sample {
                    Sample::Int(i) => i,
                    Sample::Bool(b) => i64::from(b),
                    Sample::Str(s) => match str_to_int(s) {
                        Some(v) => v,
                        None => return false,
                    },
                    Sample::Ip(_) => return false,
                };
                pats.iter().any(|p| p.matches(v))
            }
            (Patterns::Ip(pats), _) => {
                let ip = match sample {
                    Sample::Ip(ip) => ip,
                    Sample::Str(s) => match s.parse::<IpAddr>() {
                        Ok(ip) => ip,
                        Err(_) => return false,
                    },
                    _ => return false,
                };
                ip_matches(pats, ip)
            }
            (Patterns::Reg(res), _) => with_str(sample, |t| res.iter().any(|r| r.is_match(t))),
            (Patterns::Str(pats), m) => with_str(sample, |t| {
                pats.iter().any(|p| {
                    let (pt, ic) = (p.text.as_bytes(), p.icase);
                    let tb = t.as_bytes();
                    match m {
                        MatchMethod::Str => eq_bytes(tb, pt, ic),
                        MatchMethod::Beg => {
                            tb.len() >= pt.len() && eq_bytes(&tb[..pt.len()], pt, ic)
                        }
                        MatchMethod::End => {
                            tb.len() >= pt.len() && eq_bytes(&tb[tb.len() - pt.len()..], pt, ic)
                        }
                        MatchMethod::Sub => contains(t, &p.text, ic),
                        MatchMethod::Dir => match_word(t, &p.text, ic, b"/?"),
                        MatchMethod::Dom => match_word(t, &p.text, ic, b"/?.:"),
                        _ => false,
                    }
                })
            }),
            (Patterns::None, _) => false,
        }
    }
}
