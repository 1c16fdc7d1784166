//! lb's own HTTP/1 codec toward clients, without I/O: request heads parsed with `httparse`
//! straight from the connection's read buffer into lb's request representation
//! ([`http::request::Parts`], header values sharing the buffer's bytes, uncopied), the
//! body framing decided as HAProxy 2.6's HTTP/1 parser decides it, request bodies decoded
//! at a flat cost per byte whatever the chunk size, and response heads encoded into one
//! buffer (one write per message).
//!
//! Framing rules (checked against HAProxy 2.6.12, see the unit tests and the differential
//! test):
//! - `Transfer-Encoding` is read as HAProxy reads it, over all its field lines: `chunked`
//!   twice, or any coding after `chunked`, is 400; a last coding other than `chunked` is
//!   400; a coding before a final `chunked` (`gzip, chunked`, `identity, chunked`, an empty
//!   token) is 422. HTTP/1.0 requests may be chunked.
//! - `Transfer-Encoding` and `Content-Length` together: chunked wins, the Content-Length
//!   field is removed, and the connection closes after the response (no request after a
//!   smuggling attempt is read).
//! - `Content-Length`: digits only (no sign, no `0x`, blanks around allowed), equal values
//!   on several lines; anything else is 400, a comma-separated list too (`5, 5`, which
//!   HAProxy merges: lb is stricter).
//! - Chunk sizes: hexadecimal below 2^52 (leading zeros allowed), extensions ignored, CRLF
//!   or bare LF line ends; trailers are kept (framing fields among them dropped).
//! - What `httparse` refuses is 400: obs-fold, NUL or a lone CR in a value, a space before
//!   the colon, versions other than HTTP/1.0 and 1.1, a target with bytes outside the URI
//!   grammar; a `#fragment` in the target is 400 too (as HAProxy answers). Leading empty
//!   lines are skipped, bare LF line ends accepted (as HAProxy).
//! - Keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection:
//!   keep-alive`.

pub mod body;
pub mod conn;
#[cfg(test)]
mod tests;

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::l7::upstream::codec::{self as up, ChunkedDecoder, CodecError, Gather};

/// The request-head limits of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max_header_bytes`: the header fields' size, counted as name + value + 4 each; more
    /// is 400, as HAProxy answers a request larger than its buffer.
    pub header_bytes: usize,
    /// `max_headers`: counts the request line like HAProxy's `tune.http.maxhdr`, so at
    /// most `max_headers - 1` fields.
    pub headers: usize,
}

impl Limits {
    /// The most bytes a head may take in the read buffer (request line and line ends
    /// included) before it is refused.
    pub fn max_head(&self) -> usize {
        self.header_bytes.saturating_add(4096).max(8192)
    }

    fn max_fields(&self) -> usize {
        self.headers.saturating_sub(1)
    }
}

/// Why a request head was refused. Every one closes the connection after its answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("request head: {0}")]
    Parse(httparse::Error),
    #[error("request head larger than the buffer")]
    TooLarge,
    #[error("request head: more header fields than max_headers allows")]
    TooManyHeaders,
    #[error("request head: header fields larger than max_header_bytes")]
    HeaderBytes,
    #[error("request head: invalid method")]
    Method,
    #[error("request head: invalid request target")]
    Target,
    #[error("request head: invalid header field {0:?}")]
    Header(String),
    #[error("request head: invalid or conflicting Content-Length")]
    ContentLength,
    #[error("request head: invalid Transfer-Encoding")]
    TransferEncoding,
    #[error("request head: a transfer coding other than chunked")]
    TransferCoding,
    #[error("the client closed the connection in the middle of a request head")]
    Truncated,
}

impl RequestError {
    /// HAProxy's answer: 422 for a transfer coding it does not implement, else 400.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::TransferCoding => 422,
            _ => 400,
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes (never 0).
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and header fields as received (a Content-Length beside a
    /// Transfer-Encoding removed).
    pub parts: http::request::Parts,
    pub framing: BodyFraming,
    /// The client keeps the connection open after the response.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a request with a body.
    pub expect_continue: bool,
    /// An HTTP/1.1 `Connection: upgrade` with an `Upgrade` field.
    pub upgrade: bool,
    /// Bytes the head took on the wire (counted in `bytes_in`).
    pub wire_len: usize,
}

/// Header fields kept inline for the default `max_headers` (HAProxy's 101, the request
/// line included); a larger limit takes its arrays from the heap.
const INLINE_FIELDS: usize = 100;

/// Offsets (name start, name end, value start, value end) of one field into the head.
type Span = (u32, u32, u32, u32);

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete, read more. On
/// success the head's bytes are split off `buf`, which then starts at the body (or the
/// next pipelined request).
pub fn parse_request(
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<Option<RequestHead>, RequestError> {
    if limits.max_fields() <= INLINE_FIELDS {
        let mut spans = [(0u32, 0u32, 0u32, 0u32); INLINE_FIELDS];
        parse_with(buf, limits, &mut spans)
    } else {
        let mut spans = vec![(0u32, 0u32, 0u32, 0u32); limits.max_fields()];
        parse_with(buf, limits, &mut spans)
    }
}

/// The answer to a head cut by the client's half-close: what is left in `buf` when the
/// client stops sending. `None`: nothing (or only empty lines) was pending, the
/// connection just ends; else HAProxy's 400.
pub fn at_eof(buf: &[u8]) -> Option<RequestError> {
    if buf.iter().all(|&b| b == b'\r' || b == b'\n') {
        None
    } else {
        Some(RequestError::Truncated)
    }
}

fn parse_with(
    buf: &mut BytesMut,
    limits: Limits,
    spans: &mut [Span],
) -> Result<Option<RequestHead>, RequestError> {
    let max_head = limits.max_head();
    let fields = limits.max_fields();
    let (len, method_span, target_span, minor, count) = {
        // Left uninitialised: httparse only hands back the fields it filled.
        let mut inline;
        let mut heap;
        let hdrs: &mut [MaybeUninit<httparse::Header<'_>>] = if fields <= INLINE_FIELDS {
            inline = [const { MaybeUninit::uninit() }; INLINE_FIELDS];
            &mut inline[..fields]
        } else {
            heap = Vec::with_capacity(fields);
            heap.resize_with(fields, MaybeUninit::uninit);
            &mut heap[..]
        };
        let mut req = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, buf, hdrs)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > max_head {
                    Err(RequestError::TooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
            Err(e) => return Err(RequestError::Parse(e)),
        };
        if len > max_head {
            return Err(RequestError::TooLarge);
        }
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| {
            let at = s.as_ptr() as usize - base;
            (at as u32, (at + s.len()) as u32)
        };
        let method_span = span(req.method.unwrap_or_default().as_bytes());
        let target_span = span(req.path.unwrap_or_default().as_bytes());
        let mut count = 0;
        for (h, slot) in req.headers.iter().zip(spans.iter_mut()) {
            let (ns, ne) = span(h.name.as_bytes());
            let (vs, ve) = span(h.value);
            *slot = (ns, ne, vs, ve);
            count += 1;
        }
        (
            len,
            method_span,
            target_span,
            req.version.unwrap_or(1),
            count,
        )
    };
    let head = buf.split_to(len).freeze();
    let method = Method::from_bytes(&head[method_span.0 as usize..method_span.1 as usize])
        .map_err(|_| RequestError::Method)?;
    let target = head.slice(target_span.0 as usize..target_span.1 as usize);
    if target.contains(&b'#') {
        return Err(RequestError::Target);
    }
    let uri = Uri::from_maybe_shared(target).map_err(|_| RequestError::Target)?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };

    let mut headers = HeaderMap::with_capacity(count);
    let mut f = Fields::default();
    let mut field_bytes = 0usize;
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name_bytes = &head[ns as usize..ne as usize];
        let name = HeaderName::from_bytes(name_bytes)
            .map_err(|_| RequestError::Header(String::from_utf8_lossy(name_bytes).into_owned()))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| RequestError::Header(name.as_str().to_owned()))?;
        field_bytes += name.as_str().len() + value.len() + 4;
        f.see(&name, value.as_bytes())?;
        headers.append(name, value);
    }
    if field_bytes > limits.header_bytes {
        return Err(RequestError::HeaderBytes);
    }

    let mut keep_alive = if version == Version::HTTP_10 {
        f.keep_alive && !f.close
    } else {
        !f.close
    };
    let framing = if f.te.finish()? {
        if f.content_length.is_some() {
            // Both: chunked wins, and nothing after this request is read (HAProxy).
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        BodyFraming::Chunked
    } else {
        match f.content_length {
            None | Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    let upgrade = version == Version::HTTP_11 && f.upgrade_token && f.upgrade_field;
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue: f.expect_continue && framing != BodyFraming::None,
        upgrade,
        wire_len: len,
    }))
}

/// A request's `Transfer-Encoding` as HAProxy's `h1_parse_xfer_enc_header` reads it, over
/// every field line ([`TransferEncoding::add`] each value, then
/// [`TransferEncoding::finish`]).
#[derive(Debug, Default)]
pub struct TransferEncoding {
    seen: bool,
    /// `chunked` was seen (a second one is an error).
    chunked: bool,
    /// The last coding so far is `chunked`.
    last_chunked: bool,
    /// A coding other than `chunked` came before it.
    other: bool,
}

impl TransferEncoding {
    /// One field line's value.
    pub fn add(&mut self, v: &[u8]) -> Result<(), RequestError> {
        self.seen = true;
        // A trailing comma leaves no token (HAProxy skips the delimiter).
        let v = v.trim_ascii();
        let v = v.strip_suffix(b",").unwrap_or(v);
        for word in v.split(|&b| b == b',') {
            let word = word.trim_ascii();
            // An empty token (`, chunked`) counts as a coding of its own, as in HAProxy.
            self.last_chunked = false;
            if word.eq_ignore_ascii_case(b"chunked") {
                if self.chunked {
                    return Err(RequestError::TransferEncoding);
                }
                self.chunked = true;
                self.last_chunked = true;
            } else {
                if self.chunked {
                    return Err(RequestError::TransferEncoding);
                }
                self.other = true;
            }
        }
        Ok(())
    }

    /// After every line: whether the body is chunked (`false`: no Transfer-Encoding).
    /// A last coding other than `chunked` is 400, a coding before it 422.
    pub fn finish(&self) -> Result<bool, RequestError> {
        if !self.seen {
            return Ok(false);
        }
        if !self.last_chunked {
            return Err(RequestError::TransferEncoding);
        }
        if self.other {
            return Err(RequestError::TransferCoding);
        }
        Ok(true)
    }
}

/// What the header fields say about framing and the connection.
#[derive(Debug, Default)]
struct Fields {
    content_length: Option<u64>,
    te: TransferEncoding,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade_field: bool,
    expect_continue: bool,
}

impl Fields {
    fn see(&mut self, name: &HeaderName, v: &[u8]) -> Result<(), RequestError> {
        if name == header::CONTENT_LENGTH {
            // One value per line: `5, 5` is refused (HAProxy merges it; lb stays as strict
            // as it was, see docs/migrating-from-haproxy.md).
            if v.contains(&b',') {
                return Err(RequestError::ContentLength);
            }
            let n = up::parse_content_length(v).ok_or(RequestError::ContentLength)?;
            if self.content_length.is_some_and(|c| c != n) {
                return Err(RequestError::ContentLength);
            }
            self.content_length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            self.te.add(v)?;
        } else if name == header::CONNECTION {
            for t in v.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    self.upgrade_token = true;
                }
            }
        } else if name == header::UPGRADE {
            self.upgrade_field = true;
        } else if name == header::EXPECT {
            self.expect_continue |= v.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }
}

/// What [`BodyDecoder::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyEvent {
    Data(Bytes),
    /// The trailer fields of a chunked body; the body is complete.
    Trailers(HeaderMap),
    /// The buffer holds no complete element: read more.
    NeedMore,
    /// The body is complete (without trailers).
    End,
}

/// Decodes a request body from the connection's read buffer. Data comes out in pieces of
/// up to the size asked for, as many chunks as the buffer holds gathered into one.
#[derive(Debug)]
pub enum BodyDecoder {
    Length(u64),
    Chunked {
        dec: ChunkedDecoder,
        trailers: Option<HeaderMap>,
    },
    Done,
}

impl BodyDecoder {
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::None | BodyFraming::Length(0) => BodyDecoder::Done,
            BodyFraming::Length(n) => BodyDecoder::Length(n),
            BodyFraming::Chunked => BodyDecoder::Chunked {
                dec: ChunkedDecoder::default(),
                trailers: None,
            },
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// The bytes still expected, when the framing says (Content-Length).
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length(n) => Some(*n),
            BodyDecoder::Done => Some(0),
            BodyDecoder::Chunked { .. } => None,
        }
    }

    /// The next piece of the body out of `buf`, at most about `max` bytes of data.
    pub fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<BodyEvent, CodecError> {
        match self {
            BodyDecoder::Done => Ok(BodyEvent::End),
            BodyDecoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(BodyEvent::NeedMore);
                }
                let n = (buf.len() as u64).min(*left).min(max.max(1) as u64) as usize;
                let data = buf.split_to(n).freeze();
                *left -= n as u64;
                if *left == 0 {
                    *self = BodyDecoder::Done;
                }
                Ok(BodyEvent::Data(data))
            }
            BodyDecoder::Chunked { dec, trailers } => loop {
                let (data, stop) = dec.gather(buf, max.max(1))?;
                match stop {
                    Gather::Trailer(line) => {
                        up::add_trailer(&line, trailers.get_or_insert_with(HeaderMap::new));
                        if let Some(d) = data {
                            return Ok(BodyEvent::Data(d));
                        }
                    }
                    Gather::End => {
                        if let Some(d) = data {
                            // The end is seen again on the next call.
                            return Ok(BodyEvent::Data(d));
                        }
                        let t = trailers.take().filter(|t| !t.is_empty());
                        *self = BodyDecoder::Done;
                        return Ok(t.map_or(BodyEvent::End, BodyEvent::Trailers));
                    }
                    Gather::NeedMore | Gather::Full => {
                        return Ok(data.map_or(BodyEvent::NeedMore, BodyEvent::Data));
                    }
                }
            },
        }
    }
}

/// How a response body is framed toward the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// `Content-Length: n` is written.
    Length(u64),
    /// `Transfer-Encoding: chunked` is written.
    Chunked,
    /// No framing field is written: a response without a body (1xx, 204, 304, a HEAD
    /// response whose fields are sent as they are), a tunnel, or a body until close.
    Raw,
}

/// Appends a response head to `out`: the status line (HTTP/1.1; `reason`, else the
/// status's canonical one), the fields (without framing and connection fields, which the
/// caller left out), the framing field, and `Connection: close` when the connection ends
/// after this response (`Connection: keep-alive` for an HTTP/1.0 client that keeps it).
pub fn encode_response_head(
    status: StatusCode,
    reason: Option<&[u8]>,
    headers: &HeaderMap,
    framing: ResponseFraming,
    connection: ConnectionField,
    out: &mut Vec<u8>,
) {
    out.reserve(up::fields_len(headers) + 96);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        reason
            .or_else(|| status.canonical_reason().map(str::as_bytes))
            .unwrap_or_default(),
    );
    out.extend_from_slice(b"\r\n");
    up::push_fields(headers, out);
    match framing {
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(n, out);
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::Raw => {}
    }
    match connection {
        ConnectionField::None => {}
        ConnectionField::Close => out.extend_from_slice(b"connection: close\r\n"),
        ConnectionField::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
        ConnectionField::Upgrade => out.extend_from_slice(b"connection: upgrade\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Connection` field of a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionField {
    /// None: an HTTP/1.1 client keeps the connection.
    None,
    /// The connection closes after this response.
    Close,
    /// An HTTP/1.0 client keeps the connection.
    KeepAlive,
    /// A 101: the connection switches protocols.
    Upgrade,
}

impl ConnectionField {
    /// The field for a response to `head`'s client: kept open or not.
    pub fn for_response(version: Version, keep_alive: bool) -> Self {
        match (keep_alive, version) {
            (false, _) => ConnectionField::Close,
            (true, Version::HTTP_10) => ConnectionField::KeepAlive,
            (true, _) => ConnectionField::None,
        }
    }
}

/// Appends the head of a chunk of `n` bytes (its size line) to `out`.
pub fn encode_chunk_head(n: usize, out: &mut Vec<u8>) {
    let mut line = [0u8; up::CHUNK_HEADROOM];
    let start = up::chunk_size_line(n, &mut line);
    out.extend_from_slice(&line[start..]);
}

fn push_decimal(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut m = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
