//! HTTP/1.1 toward servers, without I/O: the request head lb sends, the response head it
//! reads (with its body framing and whether the connection can be reused), and the chunked
//! transfer-coding decoder.
//!
//! Framing follows RFC 9112 §6: no body for `HEAD`, 1xx, 204 and 304; `Transfer-Encoding`
//! whose last coding is `chunked` wins over `Content-Length` (and the connection is then
//! not reused); differing `Content-Length`s are an error; anything else reads until close.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Most header lines accepted in a server's response head (HAProxy's `tune.http.maxhdr`
/// default is 101, hyper's client 100).
pub const MAX_RESPONSE_HEADERS: usize = 101;
/// Largest response head (status line and headers) accepted.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("response head: {0}")]
    Parse(httparse::Error),
    #[error("response head larger than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    #[error("response head: invalid header {0:?}")]
    Header(String),
    #[error("response head: conflicting Content-Length values")]
    ContentLength,
    #[error("response head: chunked applied more than once")]
    TransferEncoding,
    #[error("chunked body: invalid chunk size line")]
    ChunkSize,
    #[error("chunked body: missing CRLF after chunk data")]
    ChunkCrlf,
    #[error("chunked body: line longer than {MAX_CHUNK_LINE} bytes")]
    ChunkLine,
}

impl CodecError {
    /// The bytes read were no valid response head (rather than a broken body).
    pub fn in_head(&self) -> bool {
        matches!(
            self,
            Self::Parse(_) | Self::HeadTooLarge | Self::Header(_) | Self::ContentLength
        )
    }
}

/// How the request body is framed toward the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes, sent as they come.
    Length,
    /// `Transfer-Encoding: chunked` (a body of unknown length, e.g. from an h2 client).
    Chunked,
}

/// Appends the request line and headers (`head.headers` already stripped of hop-by-hop
/// fields) to `out`. `Transfer-Encoding: chunked` is added for [`ReqFraming::Chunked`].
pub fn encode_request_head(
    method: &Method,
    target: &str,
    version: Version,
    headers: &HeaderMap,
    framing: ReqFraming,
    out: &mut Vec<u8>,
) {
    out.reserve(method.as_str().len() + target.len() + fields_len(headers) + 64);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    push_fields(headers, out);
    if framing == ReqFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Room kept before the data of a chunk being gathered for its size line.
pub const CHUNK_HEADROOM: usize = 18;

/// Starts gathering one chunk of a request body in `out`: its data goes after
/// [`CHUNK_HEADROOM`] bytes, where [`finish_chunk`] puts the size line.
pub fn start_chunk(out: &mut Vec<u8>) {
    out.clear();
    out.resize(CHUNK_HEADROOM, 0);
}

/// Ends the chunk [`start_chunk`] began (none when no data was gathered): writes its size
/// line into the headroom and the CRLF after the data. Returns where the wire bytes start.
pub fn finish_chunk(out: &mut Vec<u8>) -> usize {
    let n = out.len().saturating_sub(CHUNK_HEADROOM);
    if n == 0 {
        out.truncate(CHUNK_HEADROOM);
        return CHUNK_HEADROOM;
    }
    // The size line right before the data.
    let mut line = [0u8; CHUNK_HEADROOM];
    let i = chunk_size_line(n, &mut line);
    out[i..CHUNK_HEADROOM].copy_from_slice(&line[i..]);
    out.extend_from_slice(b"\r\n");
    i
}

/// Writes the size line of a chunk of `n` bytes (hex, CRLF; without the formatting
/// machinery) at the end of `line`. Returns where it starts.
pub fn chunk_size_line(n: usize, line: &mut [u8; CHUNK_HEADROOM]) -> usize {
    let mut i = CHUNK_HEADROOM - 2;
    line[i..].copy_from_slice(b"\r\n");
    let mut m = n;
    loop {
        i -= 1;
        line[i] = b"0123456789abcdef"[m & 0xf];
        m >>= 4;
        if m == 0 {
            break;
        }
    }
    i
}

/// Appends the last chunk and the trailer section of a chunked request body.
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailers {
        push_fields(t, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// The bytes `fields` take on the wire (`name: value` and CRLF each).
pub fn fields_len(fields: &HeaderMap) -> usize {
    fields
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// Appends `fields`, one `name: value` line each.
pub fn push_fields(fields: &HeaderMap, out: &mut Vec<u8>) {
    for (k, v) in fields {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespFraming {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// Without the connection-specific fields (Connection and the fields it names,
    /// Keep-Alive, Proxy-Connection, TE, Transfer-Encoding; Upgrade except on a 101).
    pub headers: HeaderMap,
    pub framing: RespFraming,
    /// The connection may carry another request once this response is read.
    pub keep_alive: bool,
    /// A 101, or a 2xx to CONNECT: the connection becomes a tunnel right after the head.
    pub tunnel: bool,
}

impl ResponseHead {
    /// A 1xx other than 101: interim, the final response follows on the same connection.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete, read more. On
/// success the head's bytes are split off `buf` (header values share them, uncopied) and
/// `buf` starts at the body.
pub fn parse_response_head(
    buf: &mut BytesMut,
    request_method: &Method,
) -> Result<Option<ResponseHead>, CodecError> {
    // Offsets (name, value) of each header into the head, taken while `buf` is borrowed.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_RESPONSE_HEADERS];
    let (len, code, minor, count) = {
        // Left uninitialised: httparse only hands back the headers it filled.
        let mut hdrs = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut hdrs)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > MAX_RESPONSE_HEAD {
                    Err(CodecError::HeadTooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(e) => return Err(CodecError::Parse(e)),
        };
        if len > MAX_RESPONSE_HEAD {
            return Err(CodecError::HeadTooLarge);
        }
        let base = buf.as_ptr() as usize;
        let mut count = 0;
        for (h, span) in res.headers.iter().zip(spans.iter_mut()) {
            let n = h.name.as_ptr() as usize - base;
            let v = h.value.as_ptr() as usize - base;
            *span = (
                n as u32,
                (n + h.name.len()) as u32,
                v as u32,
                (v + h.value.len()) as u32,
            );
            count += 1;
        }
        (len, res.code.unwrap_or(0), res.version.unwrap_or(1), count)
    };
    let head = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| CodecError::Parse(httparse::Error::Status))?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };

    let mut headers = HeaderMap::with_capacity(count);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut chunked_seen = false;
    let mut close = version == Version::HTTP_10;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    // Fields named by Connection, to drop once all are in (rare: no allocation otherwise).
    let mut named: Vec<HeaderName> = Vec::new();
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name_bytes = &head[ns as usize..ne as usize];
        let name = HeaderName::from_bytes(name_bytes)
            .map_err(|_| CodecError::Header(String::from_utf8_lossy(name_bytes).into_owned()))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| CodecError::Header(name.as_str().to_owned()))?;
        if name == header::CONTENT_LENGTH {
            let n = parse_content_length(value.as_bytes()).ok_or(CodecError::ContentLength)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(CodecError::ContentLength);
            }
            content_length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            has_te = true;
            // Only the last coding decides; a later header line overrides earlier ones.
            // `chunked` twice, over all lines, is an error (HAProxy: 502).
            for t in value.as_bytes().split(|&b| b == b',') {
                let is_chunked = t.trim_ascii().eq_ignore_ascii_case(b"chunked");
                if is_chunked && chunked_seen {
                    return Err(CodecError::TransferEncoding);
                }
                chunked_seen |= is_chunked;
            }
            chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            continue;
        } else if name == header::CONNECTION {
            for t in value.as_bytes().split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else if !t.eq_ignore_ascii_case(b"upgrade")
                    && let Ok(n) = HeaderName::from_bytes(t)
                {
                    named.push(n);
                }
            }
            continue;
        } else if is_connection_specific(&name, switching) {
            continue;
        }
        headers.append(name, value);
    }
    for n in named {
        headers.remove(n);
    }

    // A 2xx to CONNECT makes the connection a tunnel right after the head (RFC 9112 §6.3).
    let tunnel = switching || (request_method == Method::CONNECT && status.is_success());
    if tunnel && content_length.is_some() {
        // RFC 9110 §9.3.6: such a response has no framing, and a recipient ignores any
        // Content-Length in it (hyper would refuse to send it on to the client, leaving
        // it with no status at all).
        headers.remove(header::CONTENT_LENGTH);
    }
    let bodyless = request_method == Method::HEAD
        || tunnel
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodyless {
        RespFraming::Length(0)
    } else if has_te {
        // Both present: a smuggling attempt or a broken server; never reuse (RFC 9112 §6.3),
        // and the Content-Length does not go on to the client (HAProxy removes it).
        if content_length.is_some() {
            close = true;
            headers.remove(header::CONTENT_LENGTH);
        }
        if chunked {
            RespFraming::Chunked
        } else {
            RespFraming::Close
        }
    } else if let Some(n) = content_length {
        RespFraming::Length(n)
    } else {
        RespFraming::Close
    };
    if framing == RespFraming::Close || tunnel {
        close = true;
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive: !close,
        tunnel,
    }))
}

/// Connection-specific fields (RFC 9110 §7.6.1), never forwarded in either direction;
/// Connection comes first. Upgrade is one too, except where an upgrade goes through.
/// `Trailer` is end to end: it announces the trailer fields of a chunked body.
pub const CONNECTION_SPECIFIC: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
];

fn is_connection_specific(name: &HeaderName, switching: bool) -> bool {
    (name == header::UPGRADE && !switching) || CONNECTION_SPECIFIC.contains(name)
}

/// A Content-Length value: digits, or a comma-separated list of equal values (HAProxy
/// accepts `5, 5`, as hyper did). `None`: invalid.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    // `Content-Length: 5, 5` (a merged repeat) is accepted when all values agree.
    let mut out: Option<u64> = None;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// What the chunked decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(Bytes),
    /// One trailer field line (without its CRLF), after the last chunk.
    Trailer(BytesMut),
    /// The buffer holds no complete element: read more.
    NeedMore,
    /// The last chunk and trailers were read; the body is complete.
    End,
}

/// Decodes a chunked body incrementally from the connection's read buffer. Chunk
/// extensions are dropped; trailer field lines are handed out one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkedDecoder {
    #[default]
    Size,
    Data(u64),
    DataCrlf,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        *self == ChunkedDecoder::Done
    }

    /// Takes the next piece of the body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, CodecError> {
        loop {
            if let ChunkedDecoder::Data(left) = *self {
                if buf.is_empty() {
                    return Ok(Chunk::NeedMore);
                }
                let n = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(n).freeze();
                self.took(left, n);
                return Ok(Chunk::Data(data));
            }
            if let Some(c) = self.step(buf)? {
                return Ok(c);
            }
        }
    }

    /// Takes the data of as many consecutive chunks as `buf` holds, up to about `max`
    /// bytes, as one piece: the cost per byte stays flat whatever the chunk size (a million
    /// 1-byte chunks are a million small copies into one buffer, not a million pieces).
    /// Returns the data gathered (`None`: none) and what stopped the gathering.
    pub fn gather(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<(Option<Bytes>, Gather), CodecError> {
        // A large first piece goes out uncopied; the rest is copied into `out`.
        let mut first: Option<Bytes> = None;
        let mut out = BytesMut::new();
        let stop = loop {
            let have = first.as_ref().map_or(0, Bytes::len) + out.len();
            if let ChunkedDecoder::Data(left) = *self {
                if buf.is_empty() {
                    break Gather::NeedMore;
                }
                if have >= max {
                    break Gather::Full;
                }
                let n = (buf.len() as u64).min(left) as usize;
                if have == 0 && n >= GATHER_UNCOPIED {
                    first = Some(buf.split_to(n).freeze());
                } else {
                    if let Some(f) = first.take() {
                        out.reserve(f.len() + n);
                        out.extend_from_slice(&f);
                    }
                    out.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                }
                self.took(left, n);
                continue;
            }
            match self.step(buf)? {
                None => {}
                Some(Chunk::NeedMore) => break Gather::NeedMore,
                Some(Chunk::End) => break Gather::End,
                Some(Chunk::Trailer(l)) => break Gather::Trailer(l),
                // (`step` hands out no data.)
                Some(Chunk::Data(d)) => out.extend_from_slice(&d),
            }
        };
        let data = match first {
            Some(f) => Some(f),
            None if out.is_empty() => None,
            None => Some(out.freeze()),
        };
        Ok((data, stop))
    }

    /// `n` of the `left` bytes of the current chunk were taken.
    fn took(&mut self, left: u64, n: usize) {
        *self = if n as u64 == left {
            ChunkedDecoder::DataCrlf
        } else {
            ChunkedDecoder::Data(left - n as u64)
        };
    }

    /// One framing element out of `buf` (a size line, the line end after a chunk's data,
    /// a trailer line). `None`: the state moved on, go on.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, CodecError> {
        match *self {
            ChunkedDecoder::Size => {
                // Parsed in place: no buffer handle per chunk.
                let Some((len, with_end)) = line_end(buf)? else {
                    return Ok(Some(Chunk::NeedMore));
                };
                let n = chunk_size(&buf[..len])?;
                buf.advance(with_end);
                *self = if n == 0 {
                    ChunkedDecoder::Trailers
                } else {
                    ChunkedDecoder::Data(n)
                };
                Ok(None)
            }
            // (The callers take data themselves.)
            ChunkedDecoder::Data(_) => Ok(None),
            ChunkedDecoder::DataCrlf => {
                // CRLF, or a bare LF as HAProxy accepts it.
                match buf.first() {
                    None => Ok(Some(Chunk::NeedMore)),
                    Some(b'\n') => {
                        buf.advance(1);
                        *self = ChunkedDecoder::Size;
                        Ok(None)
                    }
                    Some(b'\r') if buf.len() < 2 => Ok(Some(Chunk::NeedMore)),
                    Some(b'\r') if buf[1] == b'\n' => {
                        buf.advance(2);
                        *self = ChunkedDecoder::Size;
                        Ok(None)
                    }
                    Some(_) => Err(CodecError::ChunkCrlf),
                }
            }
            ChunkedDecoder::Trailers => {
                let Some(line) = take_line(buf)? else {
                    return Ok(Some(Chunk::NeedMore));
                };
                if line.is_empty() {
                    *self = ChunkedDecoder::Done;
                    return Ok(Some(Chunk::End));
                }
                Ok(Some(Chunk::Trailer(line)))
            }
            ChunkedDecoder::Done => Ok(Some(Chunk::End)),
        }
    }
}

/// Why [`ChunkedDecoder::gather`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Gather {
    /// The buffer holds no complete element: read more.
    NeedMore,
    /// The size asked for was reached; the buffer may hold more.
    Full,
    /// One trailer field line (without its line end).
    Trailer(BytesMut),
    /// The last chunk and its trailers were read.
    End,
}

/// A chunk's data at least this large, when it starts a gathered piece, is handed out
/// without a copy.
const GATHER_UNCOPIED: usize = 4096;

/// Adds a trailer line (`name: value`) to `trailers`, at most [`MAX_RESPONSE_HEADERS`]
/// fields; a malformed or forbidden line is dropped (framing and hop-by-hop fields never
/// travel as trailers).
pub fn add_trailer(line: &[u8], trailers: &mut HeaderMap) {
    if trailers.len() >= MAX_RESPONSE_HEADERS {
        return;
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return;
    };
    let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(line[..colon].trim_ascii()),
        HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
    ) else {
        return;
    };
    if [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TRAILER,
        header::HOST,
    ]
    .contains(&name)
    {
        return;
    }
    trailers.append(name, value);
}

/// Splits one CRLF-terminated line (without the CRLF) off `buf`.
/// The size on a chunk-size line (extensions after `;` ignored; CR already removed).
fn chunk_size(line: &[u8]) -> Result<u64, CodecError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() {
        return Err(CodecError::ChunkSize);
    }
    // HAProxy's limit: leading zeros are fine, a size of 2^52 or more is not (so that no
    // language that holds integers in doubles downstream misreads it).
    let mut n = 0u64;
    for &d in digits {
        let v = (d as char).to_digit(16).ok_or(CodecError::ChunkSize)?;
        n = (n << 4) | u64::from(v);
        if n >= 1 << 52 {
            return Err(CodecError::ChunkSize);
        }
    }
    Ok(n)
}

/// Checks the first chunk-size line of a chunked body when it is already in `buf` (it
/// usually comes with the head): a server whose body is broken from its first byte gets a
/// 502 instead of a response cut before anything was sent, as HAProxy answers.
pub fn check_first_chunk(buf: &[u8]) -> Result<(), CodecError> {
    match line_end(buf)? {
        Some((len, _)) => chunk_size(&buf[..len]).map(|_| ()),
        None => Ok(()),
    }
}

/// Where the line at the start of `buf` ends: its length without CRLF (or LF) and with it.
/// `None`: no complete line yet.
fn line_end(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => Ok(Some((i - usize::from(i > 0 && buf[i - 1] == b'\r'), i + 1))),
        None if buf.len() > MAX_CHUNK_LINE => Err(CodecError::ChunkLine),
        None => Ok(None),
    }
}

fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
    let Some((len, with_end)) = line_end(buf)? else {
        return Ok(None);
    };
    let mut line = buf.split_to(with_end);
    line.truncate(len);
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, method: Method) -> Result<Option<(ResponseHead, BytesMut)>, CodecError> {
        let mut b = BytesMut::from(raw.as_bytes());
        parse_response_head(&mut b, &method).map(|o| o.map(|h| (h, b)))
    }

    #[test]
    fn request_head_and_chunks() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.append("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_request_head(
            &Method::POST,
            "/p?q=1",
            Version::HTTP_11,
            &h,
            ReqFraming::Chunked,
            &mut out,
        );
        assert_eq!(
            out,
            b"POST /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        out.clear();
        start_chunk(&mut out);
        out.extend_from_slice(&[b'x'; 26]);
        let start = finish_chunk(&mut out);
        out.drain(..start);
        assert!(out.starts_with(b"1a\r\nxx"));
        assert!(out.ends_with(b"x\r\n"));
        out.clear();
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        encode_last_chunk(Some(&t), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\n\r\n");
    }

    #[test]
    fn content_length_response_keeps_body_in_buffer() {
        let (h, rest) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Id: a\r\n\r\nhello",
            Method::GET,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, RespFraming::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-id"], "a");
        assert_eq!(&rest[..], b"hello");
    }

    #[test]
    fn partial_head_asks_for_more_and_oversized_fails() {
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
                .expect("ok")
                .is_none()
        );
        let big = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(
            parse(&big, Method::GET).err(),
            Some(CodecError::HeadTooLarge)
        );
        assert!(matches!(
            parse("HTTP/1.1 2x0 OK\r\n\r\n", Method::GET),
            Err(CodecError::Parse(_))
        ));
    }

    #[test]
    fn framing_rules() {
        let f = |raw: &str, m: Method| {
            let (h, _) = parse(raw, m).expect("ok").expect("complete");
            (h.framing, h.keep_alive)
        };
        // HEAD, 204 and 304 have no body whatever the headers say.
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                Method::HEAD
            ),
            (RespFraming::Length(0), true)
        );
        assert_eq!(
            f(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                Method::GET
            ),
            (RespFraming::Length(0), true)
        );
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
            (RespFraming::Length(0), true)
        );
        // Chunked wins over Content-Length, and such a connection is not reused.
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Method::GET
            ),
            (RespFraming::Chunked, false)
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::GET
            ),
            (RespFraming::Chunked, true)
        );
        // A transfer coding not ending in chunked, or no length at all: read until close.
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Method::GET
            ),
            (RespFraming::Close, false)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\n\r\n", Method::GET),
            (RespFraming::Close, false)
        );
        // Connection: close; HTTP/1.0 closes unless keep-alive.
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                Method::GET
            ),
            (RespFraming::Length(0), false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET),
            (RespFraming::Length(0), false)
        );
        assert_eq!(
            f(
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n",
                Method::GET
            ),
            (RespFraming::Length(0), true)
        );
        // 101 hands the connection over.
        assert_eq!(
            f(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Method::GET
            ),
            (RespFraming::Length(0), false)
        );
        // So does a 2xx to CONNECT, whatever its headers say; a refusal has a body.
        assert_eq!(
            f(
                "HTTP/1.1 200 Connection established\r\nContent-Length: 5\r\n\r\n",
                Method::CONNECT
            ),
            (RespFraming::Length(0), false)
        );
        assert_eq!(
            f(
                "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 5\r\n\r\n",
                Method::CONNECT
            ),
            (RespFraming::Length(5), true)
        );
    }

    /// As HAProxy 2.6 treats a server's Transfer-Encoding: `chunked` twice is a broken
    /// response (502), and a Content-Length beside it does not reach the client.
    #[test]
    fn response_transfer_encoding_like_haproxy() {
        for raw in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                parse(raw, Method::GET).err(),
                Some(CodecError::TransferEncoding),
                "{raw}"
            );
        }
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(h.framing, RespFraming::Chunked);
        assert!(!h.keep_alive);
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        // A coding after chunked: the body runs until close, as HAProxy reads it.
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            Method::GET,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(h.framing, RespFraming::Close);
    }

    #[test]
    fn first_chunk_line_is_checked_when_present() {
        assert!(check_first_chunk(b"").is_ok(), "nothing yet");
        assert!(check_first_chunk(b"1f").is_ok(), "line not complete yet");
        assert!(check_first_chunk(b"5;ext=1\r\nhello").is_ok());
        assert!(check_first_chunk(b"zz\r\nok").is_err());
        assert!(check_first_chunk(b"\r\n").is_err());
        assert!(
            check_first_chunk(&[b'1'; 5000]).is_err(),
            "no end of line in sight"
        );
    }

    #[test]
    fn connection_specific_fields_are_dropped() {
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
             X-Hop: 1\r\nUpgrade: h2c\r\nTE: trailers\r\nProxy-Connection: x\r\n\
             Transfer-Encoding: chunked\r\nServer: s\r\nTrailer: X-Sum\r\n\r\n",
            Method::GET,
        )
        .expect("ok")
        .expect("complete");
        let mut names: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["server", "trailer"]);
        assert_eq!(h.framing, RespFraming::Chunked);
        assert!(h.keep_alive);
        // A 101 keeps its Upgrade.
        let (h, _) = parse(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            Method::GET,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(h.headers["upgrade"], "websocket");
        assert!(!h.headers.contains_key("connection"));
    }

    #[test]
    fn content_length_conflicts_are_errors() {
        assert_eq!(
            parse(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                Method::GET
            )
            .err(),
            Some(CodecError::ContentLength)
        );
        assert_eq!(
            parse(
                "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
                Method::GET
            )
            .err(),
            Some(CodecError::ContentLength)
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", Method::GET).err(),
            Some(CodecError::ContentLength)
        );
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
            Method::GET,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(h.framing, RespFraming::Length(3));
    }

    #[test]
    fn interim_responses() {
        let (h, rest) = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            Method::POST,
        )
        .expect("ok")
        .expect("complete");
        assert!(h.is_interim());
        assert!(rest.starts_with(b"HTTP/1.1 200"));
    }

    #[test]
    fn chunked_decoding_across_reads() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        // Feed the body one byte at a time: the decoder must never lose or invent bytes.
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = HeaderMap::new();
        let mut ended_at = None;
        for (i, &b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            loop {
                match dec.decode(&mut buf).expect("valid") {
                    Chunk::Data(d) => body.extend_from_slice(&d),
                    Chunk::Trailer(l) => add_trailer(&l, &mut trailers),
                    Chunk::NeedMore => break,
                    Chunk::End => {
                        ended_at.get_or_insert(i);
                        break;
                    }
                }
            }
            if ended_at.is_some() {
                break;
            }
        }
        assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
        assert_eq!(trailers.len(), 1);
        assert_eq!(trailers["x-t"], "1");
        assert!(dec.is_done());
        assert_eq!(ended_at, Some(wire.len() - 5));
        // Whole at once: the bytes after the body stay in the buffer.
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&wire[..]);
        let mut n = 0;
        loop {
            match dec.decode(&mut buf).expect("valid") {
                Chunk::Data(d) => n += d.len(),
                Chunk::Trailer(_) => {}
                _ => break,
            }
        }
        assert_eq!(n, 31);
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn trailer_lines() {
        let mut t = HeaderMap::new();
        add_trailer(b"Grpc-Status: 0", &mut t);
        add_trailer(b"x-sum:  abc ", &mut t);
        add_trailer(b"no colon", &mut t);
        add_trailer(b"bad name: 1", &mut t);
        add_trailer(b"Content-Length: 5", &mut t);
        add_trailer(b"Transfer-Encoding: chunked", &mut t);
        assert_eq!(t.len(), 2);
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(t["x-sum"], "abc");
        for i in 0..200 {
            add_trailer(format!("x-{i}: v").as_bytes(), &mut t);
        }
        assert_eq!(t.len(), MAX_RESPONSE_HEADERS);
    }

    #[test]
    fn chunked_errors() {
        let bad = |s: &[u8]| {
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::from(s);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Chunk::Data(_) | Chunk::Trailer(_)) => continue,
                    Ok(other) => return Ok(other),
                    Err(e) => return Err(e),
                }
            }
        };
        assert_eq!(bad(b"zz\r\n"), Err(CodecError::ChunkSize));
        assert_eq!(bad(b"\r\n"), Err(CodecError::ChunkSize));
        assert_eq!(bad(b"1234567890abcdef\r\n"), Err(CodecError::ChunkSize));
        assert_eq!(bad(b"3\r\nabcXY"), Err(CodecError::ChunkCrlf));
        assert_eq!(bad(&[b'1'; MAX_CHUNK_LINE + 1]), Err(CodecError::ChunkLine));
        assert_eq!(bad(b"3\r\nab"), Ok(Chunk::NeedMore));
    }
}
