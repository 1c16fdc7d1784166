//! HTTP response compression, as HAProxy 2.6's `compression` filter decides it, with
//! `br` and `zstd` beside its `gzip`, `deflate` and `raw-deflate`:
//!
//! - [`negotiate`] (request side, after the request rules): the algorithm from the
//!   client's `Accept-Encoding` (the highest q-value; `*` takes the last configured
//!   algorithm, as HAProxy's list order gives), none for old `Mozilla/4` agents;
//!   `compression offload` removes `Accept-Encoding` toward the server.
//! - [`response`] (response side, after the response rules): only an HTTP/1.1-or-later
//!   exchange, not HEAD, status 200 to 203, a body with a known end, no
//!   `Content-Encoding`, no `Cache-Control: no-transform`, a valid single `ETag`, a listed
//!   (non-multipart) `Content-Type`, and no `Content-Length` below `minsize-res`. Then
//!   `Content-Length` goes, `Content-Encoding` and `Vary: Accept-Encoding` are added and a
//!   strong `ETag` is weakened.
//! - [`Encoder`]: a streaming [`BodyFilter`]: each chunk is compressed and flushed as it
//!   comes, nothing of the body is held back.
//!
//! Levels: gzip and deflate at 1 (HAProxy's default `tune.comp.maxlevel`), brotli at 1,
//! zstd at 1: the cheapest setting of each, for a proxy that compresses on the fly.

use std::io::Write;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::config::model::{CompAlgo, Compression};
use crate::l7::http::filter::{BodyFilter, FilterError};

/// The algorithm chosen for a request (kept in its extensions until the response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated(pub CompAlgo);

/// The compression settings that apply to a request: the backend's algorithms and types
/// win over the frontend's, `offload` from either (HAProxy).
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub fe: Option<&'a Compression>,
    pub be: Option<&'a Compression>,
}

impl<'a> Settings<'a> {
    pub fn any(&self) -> bool {
        self.fe.is_some() || self.be.is_some()
    }

    fn algos(&self) -> &'a [CompAlgo] {
        match (self.be, self.fe) {
            (Some(b), _) if !b.algos.is_empty() => &b.algos,
            (_, Some(f)) => &f.algos,
            _ => &[],
        }
    }

    fn types(&self) -> &'a [String] {
        match (self.be, self.fe) {
            (Some(b), _) if !b.types.is_empty() => &b.types,
            (_, Some(f)) => &f.types,
            _ => &[],
        }
    }

    fn offload(&self) -> bool {
        self.be.is_some_and(|c| c.offload) || self.fe.is_some_and(|c| c.offload)
    }

    fn min_size(&self) -> u64 {
        match (self.be, self.fe) {
            (Some(b), _) => b.min_size,
            (_, Some(f)) => f.min_size,
            _ => 0,
        }
    }
}

/// HAProxy's q-value: 0 to 1000.
fn qvalue(s: &str) -> u32 {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole = match int {
        "1" => return 1000,
        "0" | "" => 0,
        _ => return 0,
    };
    let mut v = whole;
    let mut scale = 100;
    for c in frac.chars().take(3) {
        match c.to_digit(10) {
            Some(d) => {
                v += d * scale;
                scale /= 10;
            }
            None => break,
        }
    }
    v
}

/// HAProxy's check for old agents that announce gzip but break on it: `Mozilla/4`
/// unless MSIE 6 with SV1, or MSIE 7 and later.
fn broken_agent(ua: &[u8]) -> bool {
    if ua.len() < 9 || &ua[..9] != b"Mozilla/4" {
        return false;
    }
    if ua.len() < 31 || &ua[25..30] != b"MSIE " || ua[30] < b'6' {
        return true;
    }
    ua[30] == b'6' && (ua.len() < 54 || &ua[51..54] != b"SV1")
}

/// The codings of a request's `Accept-Encoding` fields with their weights in thousandths
/// (1000 without `q=`), in order.
pub fn accept_encoding(headers: &HeaderMap) -> impl Iterator<Item = (&str, u32)> {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(1000, qvalue);
            (!token.is_empty()).then_some((token, q))
        })
}

/// Request side: the algorithm for this request, if any; with `offload`, the request's
/// `Accept-Encoding` fields are removed once one is chosen.
pub fn negotiate(s: Settings<'_>, headers: &mut HeaderMap) -> Option<CompAlgo> {
    let algos = s.algos();
    if algos.is_empty() {
        return None;
    }
    if headers
        .get(header::USER_AGENT)
        .is_some_and(|ua| broken_agent(ua.as_bytes()))
    {
        return None;
    }
    let mut best: Option<CompAlgo> = None;
    let mut best_q = 0;
    for (token, q) in accept_encoding(headers) {
        if q <= best_q {
            continue;
        }
        // HAProxy keeps its algorithms in reverse order of configuration: `*` takes the
        // last one written.
        let found = algos
            .iter()
            .rev()
            .find(|a| token == "*" || a.token().is_some_and(|t| t.eq_ignore_ascii_case(token)));
        if let Some(a) = found {
            best = Some(*a);
            best_q = q;
        }
    }
    if best.is_some() {
        if s.offload() {
            headers.remove(header::ACCEPT_ENCODING);
        }
        return best;
    }
    // identity needs no header.
    algos.iter().find(|a| **a == CompAlgo::Identity).copied()
}

/// The response as [`response`] judges it.
pub struct ResponseFacts<'a> {
    pub method: &'a Method,
    pub req_version: Version,
    pub status: StatusCode,
    /// The body's end is known (length, chunked or HTTP/2 framing), and it may have one.
    pub framed: bool,
}

/// Whether an `ETag` value is a valid entity tag (`"…"` or `W/"…"`).
fn etag_valid(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    let v = v.strip_prefix(b"W/").unwrap_or(v);
    v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"'
}

/// Response side: whether to compress, and if so the headers rewritten for it and the
/// encoder for the body.
pub fn response(
    s: Settings<'_>,
    algo: Option<CompAlgo>,
    f: &ResponseFacts<'_>,
    headers: &mut HeaderMap,
) -> Option<Encoder> {
    let algo = algo?;
    if f.req_version < Version::HTTP_11 || f.method == Method::HEAD || !f.framed {
        return None;
    }
    if !matches!(f.status.as_u16(), 200..=203) {
        return None;
    }
    if headers.contains_key(header::CONTENT_ENCODING) {
        return None;
    }
    let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes()
            .split(|&c| c == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    });
    if no_transform {
        return None;
    }
    let mut etags = headers.get_all(header::ETAG).iter();
    if let Some(e) = etags.next()
        && (!etag_valid(e.as_bytes()) || etags.next().is_some())
    {
        return None;
    }
    let types = s.types();
    match headers.get(header::CONTENT_TYPE) {
        Some(ct) => {
            let ct = ct.as_bytes();
            if ct.len() >= 9 && ct[..9].eq_ignore_ascii_case(b"multipart") {
                return None;
            }
            if !types.is_empty()
                && !types.iter().any(|t| {
                    ct.len() >= t.len() && ct[..t.len()].eq_ignore_ascii_case(t.as_bytes())
                })
            {
                return None;
            }
        }
        None if !types.is_empty() => return None,
        None => {}
    }
    let min = s.min_size();
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && len < min
    {
        return None;
    }
    let enc = Encoder::new(algo);
    headers.remove(header::CONTENT_LENGTH);
    if let Some(t) = algo.token() {
        headers.append(header::CONTENT_ENCODING, HeaderValue::from_static(t));
    }
    headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Some(e) = headers.get(header::ETAG)
        && !e.as_bytes().starts_with(b"W/")
    {
        let mut w = Vec::with_capacity(e.len() + 2);
        w.extend_from_slice(b"W/");
        w.extend_from_slice(e.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&w) {
            headers.insert(header::ETAG, v);
        }
    }
    Some(enc)
}

/// The compressor of one response body, writing into a buffer drained after each chunk.
pub enum Encoder {
    Identity,
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    RawDeflate(flate2::write::DeflateEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    /// Finished (or failed): passes nothing more.
    Done,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Identity => "identity",
            Encoder::Gzip(_) => "gzip",
            Encoder::Deflate(_) => "deflate",
            Encoder::RawDeflate(_) => "raw-deflate",
            Encoder::Br(_) => "br",
            Encoder::Zstd(_) => "zstd",
            Encoder::Done => "done",
        })
    }
}

impl Encoder {
    pub fn new(algo: CompAlgo) -> Self {
        let level = flate2::Compression::new(1);
        match algo {
            CompAlgo::Identity => Encoder::Identity,
            CompAlgo::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), level)),
            CompAlgo::Deflate => {
                Encoder::Deflate(flate2::write::ZlibEncoder::new(Vec::new(), level))
            }
            CompAlgo::RawDeflate => {
                Encoder::RawDeflate(flate2::write::DeflateEncoder::new(Vec::new(), level))
            }
            // Quality 1, a 4 MiB window (lgwin 22): brotli's fast setting.
            CompAlgo::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                1,
                22,
            ))),
            CompAlgo::Zstd => match zstd::stream::write::Encoder::new(Vec::new(), 1) {
                Ok(e) => Encoder::Zstd(e),
                // (Only an allocation failure inside libzstd: send the body as it is.)
                Err(_) => Encoder::Identity,
            },
        }
    }

    /// What the encoder produced so far, taken out of its buffer.
    fn drain(&mut self) -> Bytes {
        let buf = match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Deflate(e) => e.get_mut(),
            Encoder::RawDeflate(e) => e.get_mut(),
            Encoder::Br(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
            Encoder::Identity | Encoder::Done => return Bytes::new(),
        };
        Bytes::from(std::mem::take(buf))
    }

    fn write_flush(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let w: &mut dyn Write = match self {
            Encoder::Gzip(e) => e,
            Encoder::Deflate(e) => e,
            Encoder::RawDeflate(e) => e,
            Encoder::Br(e) => e.as_mut(),
            Encoder::Zstd(e) => e,
            Encoder::Identity | Encoder::Done => return Ok(()),
        };
        w.write_all(chunk)?;
        w.flush()
    }
}

impl BodyFilter for Encoder {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, FilterError> {
        if matches!(self, Encoder::Identity) {
            return Ok(chunk);
        }
        if chunk.is_empty() {
            return Ok(chunk);
        }
        self.write_flush(&chunk).map_err(FilterError::Compress)?;
        Ok(self.drain())
    }

    fn end(&mut self) -> Result<Bytes, FilterError> {
        let out = match std::mem::replace(self, Encoder::Done) {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Deflate(e) => e.finish(),
            Encoder::RawDeflate(e) => e.finish(),
            Encoder::Br(mut e) => e.flush().map(|_| e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Identity | Encoder::Done => return Ok(Bytes::new()),
        };
        out.map(Bytes::from).map_err(FilterError::Compress)
    }

    fn keeps_length(&self) -> bool {
        matches!(self, Encoder::Identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::http::test_headers as res;
    use std::io::Read;

    fn comp(algos: &[CompAlgo], types: &[&str], offload: bool) -> Compression {
        Compression {
            algos: algos.to_vec(),
            types: types.iter().map(|s| s.to_string()).collect(),
            offload,
            min_size: 0,
        }
    }

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(v).expect("v"),
        );
        h
    }

    /// As HAProxy 2.6.12 answered `compression algo gzip deflate` (probed by hand, and in
    /// the differential test).
    #[test]
    fn negotiation_like_haproxy() {
        let c = comp(&[CompAlgo::Gzip, CompAlgo::Deflate], &[], false);
        let s = Settings {
            fe: Some(&c),
            be: None,
        };
        let pick = |v: &str| negotiate(s, &mut ae(v));
        assert_eq!(pick("gzip"), Some(CompAlgo::Gzip));
        assert_eq!(pick("deflate"), Some(CompAlgo::Deflate));
        assert_eq!(pick("gzip;q=0.5, deflate"), Some(CompAlgo::Deflate));
        assert_eq!(pick("deflate, gzip"), Some(CompAlgo::Deflate));
        assert_eq!(pick("*"), Some(CompAlgo::Deflate));
        assert_eq!(pick("br"), None);
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick("GZIP"), Some(CompAlgo::Gzip));
        assert_eq!(pick("gzip;q=0.3, deflate;q=0.2"), Some(CompAlgo::Gzip));
        assert_eq!(negotiate(s, &mut HeaderMap::new()), None);
        let mut h = ae("gzip");
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("Mozilla/4.0 (compatible; MSIE 5.5; Windows 98)"),
        );
        assert_eq!(negotiate(s, &mut h), None);
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 5.1)"),
        );
        assert_eq!(negotiate(s, &mut h), Some(CompAlgo::Gzip));
    }

    #[test]
    fn offload_and_backend_priority() {
        let fe = comp(&[CompAlgo::Gzip], &[], false);
        let be = comp(&[CompAlgo::Br, CompAlgo::Zstd], &[], true);
        let s = Settings {
            fe: Some(&fe),
            be: Some(&be),
        };
        let mut h = ae("gzip, zstd");
        assert_eq!(negotiate(s, &mut h), Some(CompAlgo::Zstd));
        assert!(
            !h.contains_key(header::ACCEPT_ENCODING),
            "offload removes it"
        );
        let mut h = ae("gzip");
        assert_eq!(negotiate(s, &mut h), None);
        assert!(
            h.contains_key(header::ACCEPT_ENCODING),
            "kept when none chosen"
        );
        let id = comp(&[CompAlgo::Identity], &[], false);
        let s = Settings {
            fe: Some(&id),
            be: None,
        };
        assert_eq!(
            negotiate(s, &mut HeaderMap::new()),
            Some(CompAlgo::Identity)
        );
    }

    fn facts(status: u16) -> ResponseFacts<'static> {
        ResponseFacts {
            method: &Method::GET,
            req_version: Version::HTTP_11,
            status: StatusCode::from_u16(status).expect("status"),
            framed: true,
        }
    }

    #[test]
    fn response_rules_like_haproxy() {
        let c = comp(&[CompAlgo::Gzip], &["text/plain", "text/html"], false);
        let s = Settings {
            fe: Some(&c),
            be: None,
        };
        let g = Some(CompAlgo::Gzip);
        let mut h = res(&[
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", "1200"),
            ("etag", "\"v1\""),
        ]);
        assert!(response(s, g, &facts(200), &mut h).is_some());
        assert_eq!(h.get("content-encoding").expect("ce"), "gzip");
        assert_eq!(h.get("vary").expect("vary"), "Accept-Encoding");
        assert_eq!(h.get("etag").expect("etag"), "W/\"v1\"");
        assert!(!h.contains_key("content-length"));
        // never twice, nor for encoded, ranged, no-transform, unlisted or multipart bodies
        for (status, hdrs) in [
            (206, vec![("content-type", "text/plain")]),
            (304, vec![("content-type", "text/plain")]),
            (
                200,
                vec![("content-type", "text/plain"), ("content-encoding", "br")],
            ),
            (
                200,
                vec![
                    ("content-type", "text/plain"),
                    ("cache-control", "public, no-transform"),
                ],
            ),
            (200, vec![("content-type", "image/png")]),
            (200, vec![]),
            (200, vec![("content-type", "multipart/mixed")]),
            (200, vec![("content-type", "text/plain"), ("etag", "bad")]),
        ] {
            let mut h = res(&hdrs);
            assert!(
                response(s, g, &facts(status), &mut h).is_none(),
                "{status} {hdrs:?}"
            );
            assert!(!h.contains_key("vary"));
        }
        let mut h = res(&[("content-type", "text/plain")]);
        let head = ResponseFacts {
            method: &Method::HEAD,
            ..facts(200)
        };
        assert!(response(s, g, &head, &mut h).is_none());
        let old = ResponseFacts {
            req_version: Version::HTTP_10,
            ..facts(200)
        };
        assert!(response(s, g, &old, &mut h).is_none());
        // tiny bodies stay as they are
        let small = Compression {
            min_size: 256,
            ..c.clone()
        };
        let s2 = Settings {
            fe: Some(&small),
            be: None,
        };
        let mut h = res(&[("content-type", "text/plain"), ("content-length", "20")]);
        assert!(response(s2, g, &facts(200), &mut h).is_none());
        assert!(response(s, None, &facts(200), &mut h).is_none());
    }

    fn roundtrip(algo: CompAlgo, decode: impl Fn(&[u8]) -> Vec<u8>) {
        let mut e = Encoder::new(algo);
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {} of the body\n", i % 97).into_bytes())
            .collect();
        let mut out = Vec::new();
        for chunk in text.chunks(7000) {
            let b = e.data(Bytes::copy_from_slice(chunk)).expect("data");
            // streaming: every chunk gives output at once (flushed)
            assert!(!b.is_empty(), "{algo:?}");
            out.extend_from_slice(&b);
        }
        out.extend_from_slice(&e.end().expect("end"));
        assert!(out.len() < text.len() / 4, "{algo:?}: {}", out.len());
        assert_eq!(decode(&out), text, "{algo:?}");
    }

    #[test]
    fn encoders_stream_and_round_trip() {
        roundtrip(CompAlgo::Gzip, |b| {
            let mut v = Vec::new();
            flate2::read::GzDecoder::new(b)
                .read_to_end(&mut v)
                .expect("gz");
            v
        });
        roundtrip(CompAlgo::Deflate, |b| {
            let mut v = Vec::new();
            flate2::read::ZlibDecoder::new(b)
                .read_to_end(&mut v)
                .expect("zlib");
            v
        });
        roundtrip(CompAlgo::RawDeflate, |b| {
            let mut v = Vec::new();
            flate2::read::DeflateDecoder::new(b)
                .read_to_end(&mut v)
                .expect("deflate");
            v
        });
        roundtrip(CompAlgo::Br, |b| {
            let mut v = Vec::new();
            brotli::Decompressor::new(b, 4096)
                .read_to_end(&mut v)
                .expect("br");
            v
        });
        roundtrip(CompAlgo::Zstd, |b| {
            zstd::stream::decode_all(b).expect("zstd")
        });
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("1"), 1000);
        assert_eq!(qvalue("0"), 0);
        assert_eq!(qvalue("0.5"), 500);
        assert_eq!(qvalue("0.123"), 123);
        assert_eq!(qvalue("0.05"), 50);
        assert_eq!(qvalue("x"), 0);
    }
}
