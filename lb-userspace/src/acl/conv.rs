//! Converters after a fetch (`req.hdr(host),lower,map(/etc/lb/hosts.map,default)`), as
//! HAProxy 2.6's section 7.3.1 defines them: each takes the sample the one before it gave
//! and gives a new one (or none: the expression has no value). Map files are read when
//! the configuration is compiled, so a reload reads them again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use regex::{Regex, RegexBuilder};

use super::AclInput;
use super::expr::{NetPat, parse_net};
use super::format::SampleValue;

/// One converter with its arguments, compiled.
#[derive(Debug, Clone)]
pub(crate) enum Conv {
    Lower,
    Upper,
    Map(Arc<MapConv>),
    /// `word(index,delimiters[,count])`: empty words skipped.
    Word {
        index: i64,
        delims: Box<[u8]>,
        count: usize,
    },
    /// `field(index,delimiters[,count])`: empty fields count.
    Field {
        index: i64,
        delims: Box<[u8]>,
        count: usize,
    },
    /// `regsub(regex,subst[,flags])`.
    Regsub {
        re: Regex,
        subst: Box<str>,
        global: bool,
    },
    Base64,
    B64Dec,
    Length,
    /// `json([ascii|utf8|utf8s|utf8p|utf8ps])`.
    Json {
        ascii: bool,
    },
    /// `bytes(offset[,length])`.
    Bytes {
        offset: usize,
        length: Option<usize>,
    },
    /// `ipmask(mask4[,mask6])`.
    IpMask {
        v4: u32,
        v6: u128,
    },
    /// `concat([start][,var][,end])`.
    Concat {
        start: Box<str>,
        var: Option<(Box<str>, Box<str>)>,
        end: Box<str>,
    },
}

/// How a map matches its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapMatch {
    Str,
    Beg,
    End,
    Sub,
    Reg,
    Ip,
    Int,
}

/// What a map's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapOut {
    Str,
    Int,
    Ip,
}

/// A map file, compiled: its entries in file order (exact string and integer keys also
/// hashed), and the default.
#[derive(Debug)]
pub(crate) struct MapConv {
    how: MapMatch,
    out: MapOut,
    /// Exact keys (`map`/`map_str`, `map_int`): key → index of the first entry.
    exact: HashMap<String, usize>,
    /// Regexes (`map_reg`), in entry order.
    regs: Vec<Regex>,
    /// Networks (`map_ip`), in entry order.
    nets: Vec<NetPat>,
    keys: Vec<String>,
    values: Vec<SampleValue>,
    default: Option<SampleValue>,
}

fn out_value(out: MapOut, text: &str) -> Option<SampleValue> {
    Some(match out {
        MapOut::Str => SampleValue::Str(text.to_owned()),
        MapOut::Int => SampleValue::Int(text.trim().parse().ok()?),
        MapOut::Ip => SampleValue::Ip(text.trim().parse().ok()?),
    })
}

impl MapConv {
    /// Reads `file`: one `KEY VALUE` per line (the value is the rest of the line), blank
    /// lines and `#` lines skipped.
    fn load(
        how: MapMatch,
        out: MapOut,
        file: &str,
        default: Option<&str>,
    ) -> Result<MapConv, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("failed to open map file '{file}': {e}"))?;
        let default = match default {
            None => None,
            Some(d) => Some(out_value(out, d).ok_or_else(|| {
                format!("default value '{d}' of map '{file}' is not of the map's output type")
            })?),
        };
        let mut m = MapConv {
            how,
            out,
            exact: HashMap::new(),
            regs: Vec::new(),
            nets: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
            default,
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once([' ', '\t']) {
                Some((k, v)) => (k, v.trim()),
                None => (line, ""),
            };
            let at = || format!("at line {} of map file '{file}'", n + 1);
            let v = out_value(m.out, value)
                .ok_or_else(|| format!("value '{value}' is not of the map's type {}", at()))?;
            let i = m.keys.len();
            match how {
                MapMatch::Str => {
                    m.exact.entry(key.to_owned()).or_insert(i);
                }
                MapMatch::Int => {
                    let k: i64 = key
                        .parse()
                        .map_err(|_| format!("key '{key}' is not an integer {}", at()))?;
                    m.exact.entry(k.to_string()).or_insert(i);
                }
                MapMatch::Reg => m.regs.push(
                    RegexBuilder::new(key)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| format!("invalid regex '{key}' {}: {e}", at()))?,
                ),
                MapMatch::Ip => m.nets.push(
                    parse_net(key)
                        .ok_or_else(|| format!("'{key}' is not an address or network {}", at()))?,
                ),
                MapMatch::Beg | MapMatch::End | MapMatch::Sub => {}
            }
            m.keys.push(key.to_owned());
            m.values.push(v);
        }
        Ok(m)
    }

    /// The value for `sample` (HAProxy's lookup order: exact keys by hash, networks by
    /// longest prefix, the others first match in file order), else the default.
    fn lookup(&self, sample: &SampleValue) -> Option<SampleValue> {
        let text = match sample {
            SampleValue::Str(s) => s.clone(),
            SampleValue::Int(i) => i.to_string(),
            SampleValue::Ip(ip) => ip.to_string(),
        };
        let hit = match self.how {
            MapMatch::Str => self.exact.get(&text).copied(),
            MapMatch::Int => text
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(|k| self.exact.get(&k.to_string()).copied()),
            MapMatch::Beg => self.keys.iter().position(|k| text.starts_with(k.as_str())),
            MapMatch::End => self.keys.iter().position(|k| text.ends_with(k.as_str())),
            MapMatch::Sub => self.keys.iter().position(|k| text.contains(k.as_str())),
            MapMatch::Reg => self.regs.iter().position(|r| r.is_match(&text)),
            MapMatch::Ip => {
                let ip = match sample {
                    SampleValue::Ip(ip) => Some(*ip),
                    _ => text.parse::<IpAddr>().ok(),
                };
                ip.and_then(|ip| longest(&self.nets, ip))
            }
        };
        match hit {
            Some(i) => self.values.get(i).cloned(),
            None => self.default.clone(),
        }
    }

    pub(crate) fn out(&self) -> MapOut {
        self.out
    }
}

/// The index of the longest network of `nets` holding `ip`.
fn longest(nets: &[NetPat], ip: IpAddr) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, n) in nets.iter().enumerate() {
        let (hit, bits) = match (*n, ip) {
            (NetPat::V4 { addr, mask }, IpAddr::V4(a)) => {
                (u32::from(a) & mask == addr, mask.count_ones())
            }
            (NetPat::V4 { addr, mask }, IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(a) => (u32::from(a) & mask == addr, mask.count_ones()),
                None => (false, 0),
            },
            (NetPat::V6 { addr, mask }, IpAddr::V6(a)) => {
                (u128::from(a) & mask == addr, mask.count_ones())
            }
            (NetPat::V6 { addr, mask }, IpAddr::V4(a)) => (
                u128::from(a.to_ipv6_mapped()) & mask == addr,
                mask.count_ones(),
            ),
        };
        if hit && best.is_none_or(|(_, b)| bits > b) {
            best = Some((i, bits));
        }
    }
    best.map(|(i, _)| i)
}

/// What a converter's output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutType {
    Str,
    Int,
    Ip,
}

/// Splits a converter list (`lower,map(a,b),word(1,/)`) at the commas outside
/// parentheses.
pub(crate) fn split_list(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn delims(s: &str) -> Result<Box<[u8]>, String> {
    if s.is_empty() {
        return Err("needs at least one delimiter".into());
    }
    Ok(s.as_bytes().into())
}

fn int_arg(args: &[&str], i: usize, name: &str) -> Result<i64, String> {
    let a = args
        .get(i)
        .ok_or_else(|| format!("converter '{name}' needs argument {}", i + 1))?;
    a.trim()
        .parse()
        .map_err(|_| format!("converter '{name}': '{a}' is not an integer"))
}

/// The `map` converters' names: `map`, `map_str`, `map_beg`, … and the `_int`, `_ip`,
/// `_str` output variants (`map_ip_int`).
fn map_kind(name: &str) -> Option<(MapMatch, MapOut)> {
    let rest = name.strip_prefix("map")?;
    if rest.is_empty() {
        return Some((MapMatch::Str, MapOut::Str));
    }
    let rest = rest.strip_prefix('_')?;
    let (m, o) = match rest.split_once('_') {
        Some((m, o)) => (m, Some(o)),
        None => (rest, None),
    };
    let how = match m {
        "str" => MapMatch::Str,
        "beg" => MapMatch::Beg,
        "end" => MapMatch::End,
        "sub" => MapMatch::Sub,
        "reg" => MapMatch::Reg,
        "ip" => MapMatch::Ip,
        "int" => MapMatch::Int,
        _ => return None,
    };
    let out = match o {
        None | Some("str") => MapOut::Str,
        Some("int") => MapOut::Int,
        Some("ip") => MapOut::Ip,
        _ => return None,
    };
    Some((how, out))
}

/// The converters this engine has (for messages).
pub(crate) const NAMES: &str = "lower, upper, map, map_str, map_beg, map_end, map_sub, map_reg, map_ip, map_int (and their _int/_ip/_str outputs), word, field, regsub, base64, b64dec, length, json, bytes, ipmask, concat";

/// Parses one converter (`map(/etc/x.map,dflt)`).
pub(crate) fn parse(word: &str) -> Result<Conv, String> {
    let (name, args): (&str, Vec<&str>) = match word.split_once('(') {
        Some((n, rest)) => {
            let Some(inner) = rest.strip_suffix(')') else {
                return Err(format!("missing closing ')' after arguments to '{n}'"));
            };
            (n, inner.split(',').collect())
        }
        None => (word, Vec::new()),
    };
    let none = |c: Conv| {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(format!("converter '{name}' takes no argument"))
        }
    };
    if let Some((how, out)) = map_kind(name) {
        let file = args
            .first()
            .filter(|f| !f.is_empty())
            .ok_or_else(|| format!("converter '{name}' needs a map file"))?;
        if args.len() > 2 {
            return Err(format!("too many arguments to '{name}'"));
        }
        let m = MapConv::load(how, out, file, args.get(1).copied())?;
        return Ok(Conv::Map(Arc::new(m)));
    }
    Ok(match name {
        "lower" => none(Conv::Lower)?,
        "upper" => none(Conv::Upper)?,
        "base64" => none(Conv::Base64)?,
        "b64dec" => none(Conv::B64Dec)?,
        "length" => none(Conv::Length)?,
        "word" | "field" => {
            if !(2..=3).contains(&args.len()) {
                return Err(format!(
                    "converter '{name}' takes (index,delimiters[,count])"
                ));
            }
            let index = int_arg(&args, 0, name)?;
            if index == 0 {
                return Err(format!("converter '{name}': the index starts at 1 (or -1)"));
            }
            let d = delims(args[1]).map_err(|e| format!("converter '{name}' {e}"))?;
            let count = match args.get(2) {
                None => 1,
                Some(_) => usize::try_from(int_arg(&args, 2, name)?)
                    .map_err(|_| format!("converter '{name}': a negative count"))?,
            };
            if name == "word" {
                Conv::Word {
                    index,
                    delims: d,
                    count,
                }
            } else {
                Conv::Field {
                    index,
                    delims: d,
                    count,
                }
            }
        }
        "regsub" => {
            if !(2..=3).contains(&args.len()) {
                return Err("converter 'regsub' takes (regex,subst[,flags])".into());
            }
            let flags = args.get(2).copied().unwrap_or("");
            if let Some(bad) = flags.chars().find(|c| !matches!(c, 'i' | 'g')) {
                return Err(format!("converter 'regsub': unknown flag '{bad}' (i, g)"));
            }
            let re = RegexBuilder::new(args[0])
                .case_insensitive(flags.contains('i'))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("converter 'regsub': invalid regex '{}': {e}", args[0]))?;
            Conv::Regsub {
                re,
                subst: replacement(args[1]).into(),
                global: flags.contains('g'),
            }
        }
        "json" => match args.first().copied().unwrap_or("") {
            "" | "utf8" | "utf8s" | "utf8p" | "utf8ps" => Conv::Json { ascii: false },
            "ascii" => Conv::Json { ascii: true },
            other => return Err(format!("converter 'json': unknown mode '{other}'")),
        },
        "bytes" => {
            if !(1..=2).contains(&args.len()) {
                return Err("converter 'bytes' takes (offset[,length])".into());
            }
            let offset = usize::try_from(int_arg(&args, 0, name)?)
                .map_err(|_| "converter 'bytes': a negative offset".to_string())?;
            let length = match args.get(1) {
                None => None,
                Some(_) => Some(
                    usize::try_from(int_arg(&args, 1, name)?)
                        .map_err(|_| "converter 'bytes': a negative length".to_string())?,
                ),
            };
            Conv::Bytes { offset, length }
        }
        "ipmask" => {
            if !(1..=2).contains(&args.len()) {
                return Err("converter 'ipmask' takes (mask4[,mask6])".into());
            }
            let v4 = match parse_net(&format!("0.0.0.0/{}", args[0].trim())) {
                Some(NetPat::V4 { mask, .. }) => mask,
                _ => return Err(format!("converter 'ipmask': bad IPv4 mask '{}'", args[0])),
            };
            let v6 = match args.get(1) {
                None => u128::MAX,
                Some(m) => match parse_net(&format!("::/{}", m.trim())) {
                    Some(NetPat::V6 { mask, .. }) => mask,
                    _ => return Err(format!("converter 'ipmask': bad IPv6 mask '{m}'")),
                },
            };
            Conv::IpMask { v4, v6 }
        }
        "concat" => {
            if args.len() > 3 {
                return Err("converter 'concat' takes ([start][,var][,end])".into());
            }
            let var = match args.get(1).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                None => None,
                Some(v) => Some(super::vars::parse_name(v)?),
            };
            Conv::Concat {
                start: args.first().copied().unwrap_or("").into(),
                var: var.map(|(s, n)| (Box::from(s.name()), n.into())),
                end: args.get(2).copied().unwrap_or("").into(),
            }
        }
        _ => {
            return Err(format!(
                "converter '{name}' is not supported (supported: {NAMES})"
            ));
        }
    })
}

impl Conv {
    /// The output type for an input of type `t`.
    pub(crate) fn out_type(&self, t: OutType) -> OutType {
        match self {
            Conv::Map(m) => match m.out() {
                MapOut::Str => OutType::Str,
                MapOut::Int => OutType::Int,
                MapOut::Ip => OutType::Ip,
            },
            Conv::Length => OutType::Int,
            Conv::IpMask { .. } => OutType::Ip,
            Conv::Lower | Conv::Upper if t == OutType::Str => OutType::Str,
            _ => OutType::Str,
        }
    }

    /// The converted sample; `None`: no value.
    pub(crate) fn apply(&self, v: SampleValue, input: &dyn AclInput) -> Option<SampleValue> {
        let text = |v: SampleValue| match v {
            SampleValue::Str(s) => s,
            SampleValue::Int(i) => i.to_string(),
            SampleValue::Ip(ip) => ip.to_string(),
        };
        Some(match self {
            Conv::Lower => SampleValue::Str(text(v).to_ascii_lowercase()),
            Conv::Upper => SampleValue::Str(text(v).to_ascii_uppercase()),
            Conv::Map(m) => m.lookup(&v)?,
            Conv::Word {
                index,
                delims,
                count,
            } => SampleValue::Str(pick(&text(v), *index, delims, *count, true)?),
            Conv::Field {
                index,
                delims,
                count,
            } => SampleValue::Str(pick(&text(v), *index, delims, *count, false)?),
            Conv::Regsub { re, subst, global } => {
                let t = text(v);
                let out = if *global {
                    re.replace_all(&t, &**subst)
                } else {
                    re.replace(&t, &**subst)
                };
                SampleValue::Str(out.into_owned())
            }
            Conv::Base64 => {
                SampleValue::Str(base64::engine::general_purpose::STANDARD.encode(text(v)))
            }
            Conv::B64Dec => {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(text(v))
                    .ok()?;
                SampleValue::Str(String::from_utf8(b).ok()?)
            }
            Conv::Length => SampleValue::Int(i64::try_from(text(v).len()).unwrap_or(i64::MAX)),
            Conv::Json { ascii } => SampleValue::Str(json_escape(&text(v), *ascii)),
            Conv::Bytes { offset, length } => {
                let t = text(v);
                let b = t.as_bytes();
                if *offset > b.len() {
                    return None;
                }
                let end = length.map_or(b.len(), |l| (offset + l).min(b.len()));
                SampleValue::Str(String::from_utf8_lossy(&b[*offset..end]).into_owned())
            }
            Conv::IpMask { v4, v6 } => {
                let ip = match v {
                    SampleValue::Ip(ip) => ip,
                    other => text(other).parse().ok()?,
                };
                SampleValue::Ip(match ip {
                    IpAddr::V4(a) => IpAddr::from((u32::from(a) & v4).to_be_bytes()),
                    IpAddr::V6(a) => IpAddr::from((u128::from(a) & v6).to_be_bytes()),
                })
            }
            Conv::Concat { start, var, end } => {
                let mut t = text(v);
                t.push_str(start);
                if let Some((scope, name)) = var
                    && let Some(s) = super::vars::Scope::from_name(scope)
                    && let Some(val) = input.vars().and_then(|vs| vs.get(s, name))
                {
                    t.push_str(&text(val));
                }
                t.push_str(end);
                SampleValue::Str(t)
            }
        })
    }
}

/// HAProxy's substitution (`\\1` a group, `\\\\` a backslash) in the regex crate's
/// syntax (`${1}`, `$$` for a `$`).
fn replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// `word` (empty parts skipped) and `field` (empty parts count): `count` parts from the
/// `index`-th (1 the first, -1 the last), joined by the delimiter that separated them.
fn pick(s: &str, index: i64, delims: &[u8], count: usize, skip_empty: bool) -> Option<String> {
    // (start, end) of each part.
    let b = s.as_bytes();
    let mut parts: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for (i, c) in b.iter().enumerate() {
        if delims.contains(c) {
            parts.push((start, i));
            start = i + 1;
        }
    }
    parts.push((start, b.len()));
    if skip_empty {
        parts.retain(|(a, z)| a < z);
    }
    let n = parts.len() as i64;
    let first = if index > 0 { index - 1 } else { n + index };
    if first < 0 || first >= n {
        return None;
    }
    let first = first as usize;
    let last = if count == 0 {
        parts.len() - 1
    } else {
        (first + count - 1).min(parts.len() - 1)
    };
    let (a, _) = parts[first];
    let (_, z) = parts[last];
    Some(s[a..z].to_owned())
}

/// HAProxy's `json`: an ASCII string ready to put between JSON quotes. `ascii`: each
/// byte above 0x7f is a character of its own (`\u00XX`); else UTF-8 is decoded.
fn json_escape(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let esc = |c: char, out: &mut String| match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '/' => out.push_str("\\/"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x20 || !c.is_ascii() => {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
        c => out.push(c),
    };
    if ascii {
        for b in s.bytes() {
            esc(char::from(b), &mut out);
        }
    } else {
        for c in s.chars() {
            esc(c, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::tests::Req;

    fn conv(word: &str, v: &str) -> Option<SampleValue> {
        parse(word)
            .expect("parses")
            .apply(SampleValue::Str(v.into()), &Req::get("/"))
    }

    fn s(v: &str) -> Option<SampleValue> {
        Some(SampleValue::Str(v.into()))
    }

    #[test]
    fn word_and_field_like_haproxy() {
        assert_eq!(conv("word(2,/)", "/a//b/c"), s("b"));
        assert_eq!(conv("word(-1,/)", "/a//b/c"), s("c"));
        assert_eq!(conv("word(1,/,2)", "/a//b/c"), s("a//b"));
        assert_eq!(conv("field(3,/)", "/a//b/c"), s(""));
        assert_eq!(conv("field(4,/)", "/a//b/c"), s("b"));
        assert_eq!(conv("field(2,/,0)", "/a//b/c"), s("a//b/c"));
        assert_eq!(conv("word(9,/)", "/a"), None);
    }

    #[test]
    fn string_converters() {
        assert_eq!(conv("regsub(a+,X,g)", "caaab aa"), s("cXb X"));
        assert_eq!(
            conv("regsub(^/(v[0-9])/,/api/\\1/)", "/v2/x"),
            s("/api/v2/x")
        );
        assert_eq!(conv("base64", "hello"), s("aGVsbG8="));
        assert_eq!(conv("b64dec", "aGVsbG8="), s("hello"));
        assert_eq!(conv("bytes(1,3)", "abcdef"), s("bcd"));
        assert_eq!(conv("bytes(4)", "abcdef"), s("ef"));
        assert_eq!(conv("json", "a\"b\\c\n/"), s("a\\\"b\\\\c\\n\\/"));
        assert_eq!(conv("json(utf8)", "é"), s("\\u00e9"));
        assert_eq!(conv("json(ascii)", "é"), s("\\u00c3\\u00a9"));
        assert_eq!(conv("concat(<,,>)", "x"), s("x<>"));
        assert_eq!(conv("length", "abc"), Some(SampleValue::Int(3)));
        assert_eq!(
            conv("ipmask(24)", "192.0.2.77"),
            Some(SampleValue::Ip(
                "192.0.2.0".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
            ))
        );
        assert!(parse("nope").is_err());
        assert!(parse("word(0,/)").is_err());
        assert!(parse("regsub(a,b,x)").is_err());
    }

    #[test]
    fn maps_match_like_haproxy() {
        let dir = std::env::temp_dir().join(format!("lb-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("m.map");
        std::fs::write(
            &f,
            "# hosts\nwww.example.com be_www\napi.example.com   be_api\n/static be_static\n\n10.0.0.0/8 ten\n10.1.0.0/16 ten_one\n",
        )
        .expect("write");
        let f = f.to_string_lossy();
        assert_eq!(conv(&format!("map({f})"), "api.example.com"), s("be_api"));
        assert_eq!(conv(&format!("map({f})"), "nope"), None);
        assert_eq!(conv(&format!("map({f},dflt)"), "nope"), s("dflt"));
        assert_eq!(
            conv(&format!("map_beg({f})"), "/static/x.css"),
            s("be_static")
        );
        assert_eq!(
            conv(&format!("map_end({f})"), "x.api.example.com"),
            s("be_api")
        );
        assert_eq!(
            conv(&format!("map_sub({f})"), "-www.example.com-"),
            s("be_www")
        );
        assert_eq!(
            conv(&format!("map_reg({f})"), "wwwXexampleXcom"),
            s("be_www")
        );
        let ip = dir.join("ip.map");
        std::fs::write(&ip, "10.0.0.0/8 ten\n10.1.0.0/16 ten_one\n::1 local\n").expect("write");
        let ip = ip.to_string_lossy();
        assert_eq!(conv(&format!("map_ip({ip})"), "10.1.2.3"), s("ten_one"));
        assert_eq!(conv(&format!("map_ip({ip})"), "10.2.2.3"), s("ten"));
        assert_eq!(conv(&format!("map_ip({ip},x)"), "192.0.2.1"), s("x"));
        let n = dir.join("int.map");
        std::fs::write(&n, "1 100\n2 200\n").expect("write");
        let n = n.to_string_lossy();
        assert_eq!(
            conv(&format!("map_int_int({n},0)"), "2"),
            Some(SampleValue::Int(200))
        );
        assert_eq!(
            conv(&format!("map_int_int({n},0)"), "3"),
            Some(SampleValue::Int(0))
        );
        assert!(parse(&format!("map_int_int({n},zero)")).is_err());
        assert!(parse("map(/nonexistent/lb.map)").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
