use super::*;
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    header_bytes: 8192,
    headers: 101,
};

fn parse(raw: &[u8]) -> Result<RequestHead, RequestError> {
    let mut b = BytesMut::from(raw);
    match parse_request(&mut b, LIMITS) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(raw)),
        Err(e) => Err(e),
    }
}

fn status(raw: &[u8]) -> u16 {
    parse(raw).map_or_else(|e| e.status(), |_| 200)
}

/// A whole request (head and body) through the codec: the head, the body, the trailers
/// and what is left in the buffer.
fn request(raw: &[u8]) -> Result<(RequestHead, Vec<u8>, Option<HeaderMap>, BytesMut), String> {
    let mut b = BytesMut::from(raw);
    let head = parse_request(&mut b, LIMITS)
        .map_err(|e| e.to_string())?
        .ok_or("incomplete head")?;
    let mut dec = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    let mut trailers = None;
    loop {
        match dec.decode(&mut b, 64 * 1024).map_err(|e| e.to_string())? {
            BodyEvent::Data(d) => body.extend_from_slice(&d),
            BodyEvent::Trailers(t) => {
                trailers = Some(t);
                break;
            }
            BodyEvent::End => break,
            BodyEvent::NeedMore => return Err("incomplete body".into()),
        }
    }
    Ok((head, body, trailers, b))
}

/// Each case as HAProxy 2.6.12 answered it (200: accepted and forwarded); probed with the
/// same bytes, and the security-relevant ones in the differential test.
#[test]
fn framing_statuses_match_haproxy() {
    let cases: &[(&str, &[u8], u16)] = &[
        ("TE chunked, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        ("TE chunked, gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip, chunked\r\n\r\n", 400),
        ("TE chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 422),
        ("TE gzip then chunked lines", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 422),
        ("TE chunked, gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("TE gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("TE identity, chunked + CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\nContent-Length: 5\r\n\r\n", 422),
        ("TE identity, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 422),
        ("TE empty token", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", 422),
        ("TE trailing comma", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, \r\n\r\n", 200),
        ("TE Chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", 200),
        ("HTTP/1.0 chunked", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 200),
        ("CL.TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 200),
        ("TE.CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 200),
        ("CL twice equal", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 200),
        ("CL twice different", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        ("CL 3, 4", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400),
        ("CL +3", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400),
        ("CL -3", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n", 400),
        ("CL empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
        ("CL overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
        ("CL blanks", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  3 \r\n\r\n", 200),
        ("CL hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", 400),
        ("bare LF", b"GET / HTTP/1.1\nHost: a\nConnection: close\n\n", 200),
        ("bare LF mixed", b"GET / HTTP/1.1\r\nHost: a\nConnection: close\r\n\r\n", 200),
        ("CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400),
        ("space before the colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400),
        ("empty field name", b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
        ("lower-case version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n", 200),
        ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", 200),
        ("absolute form", b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("asterisk form", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("authority form", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 200),
        ("leading empty lines", b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("tab in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\tc\r\n\r\n", 200),
        ("8-bit byte in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\xffc\r\n\r\n", 200),
        ("8-bit byte in the target", b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("space in the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("fragment", b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("fragment after a query", b"GET /a?x#f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        // Where lb is stricter than HAProxy (docs/migrating-from-haproxy.md): HAProxy
        // forwards these.
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400),
        ("CL 3, 3", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 400),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400),
        ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
    ];
    for (name, raw, want) in cases {
        assert_eq!(status(raw), *want, "{name}");
    }
}

#[test]
fn framing_and_connection_decisions() {
    let h = parse(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .expect("accepted");
    assert_eq!(h.framing, BodyFraming::Chunked);
    assert!(
        !h.keep_alive,
        "a request with both framings closes the connection"
    );
    assert!(!h.parts.headers.contains_key(header::CONTENT_LENGTH));
    assert!(h.parts.headers.contains_key(header::TRANSFER_ENCODING));

    let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").expect("ok");
    assert_eq!(h.framing, BodyFraming::None);
    assert!(h.keep_alive);
    let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n")
        .expect("ok");
    assert_eq!(h.framing, BodyFraming::Length(3));
    let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").expect("ok");
    assert!(!h.keep_alive);
    let h =
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, Close\r\n\r\n").expect("ok");
    assert!(!h.keep_alive);
    let h = parse(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").expect("ok");
    assert!(!h.keep_alive, "HTTP/1.0 closes by default");
    assert_eq!(h.parts.version, Version::HTTP_10);
    let h = parse(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").expect("ok");
    assert!(h.keep_alive);
    let h = parse(b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").expect("ok");
    assert_eq!(h.framing, BodyFraming::Chunked);

    let h =
        parse(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n")
            .expect("ok");
    assert!(h.expect_continue);
    let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").expect("ok");
    assert!(!h.expect_continue, "no body, nothing to wait for");

    let h =
        parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .expect("ok");
    assert!(h.upgrade);
    let h =
        parse(b"GET /ws HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .expect("ok");
    assert!(!h.upgrade, "no upgrade in HTTP/1.0");
    let h = parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").expect("ok");
    assert!(!h.upgrade, "Upgrade without the Connection token");

    let h = parse(b"GET http://a.example:8080/p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\n\r\n")
        .expect("ok");
    assert_eq!(
        h.parts.uri.authority().map(|a| a.as_str()),
        Some("a.example:8080")
    );
    assert_eq!(
        h.parts.uri.path_and_query().map(|p| p.as_str()),
        Some("/p?q=1")
    );
    let h = parse(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n").expect("ok");
    assert_eq!(h.parts.method, Method::CONNECT);
    assert_eq!(
        h.parts.uri.authority().map(|a| a.as_str()),
        Some("a.example:443")
    );
}

#[test]
fn head_fields_share_the_buffer_and_keep_their_order() {
    let raw = b"GET /p HTTP/1.1\r\nHost: a\r\nX-B: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\nrest";
    let mut b = BytesMut::from(&raw[..]);
    let h = parse_request(&mut b, LIMITS)
        .expect("ok")
        .expect("complete");
    assert_eq!(&b[..], b"rest");
    assert_eq!(h.wire_len, raw.len() - 4);
    let xb: Vec<_> = h.parts.headers.get_all("x-b").iter().collect();
    assert_eq!(xb, ["1", "3"]);
    assert_eq!(h.parts.headers["x-a"], "2");
    assert_eq!(h.parts.uri.path(), "/p");
}

#[test]
fn limits_keep_the_400() {
    // max_headers counts the request line: 101 allows 100 fields.
    let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        raw.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    let mut ok = raw.clone();
    ok.extend_from_slice(b"\r\n");
    assert_eq!(status(&ok), 200);
    raw.extend_from_slice(b"x-last: v\r\n\r\n");
    assert_eq!(parse(&raw).err(), Some(RequestError::TooManyHeaders));
    // A larger limit takes its arrays from the heap.
    let big = Limits {
        header_bytes: 64 * 1024,
        headers: 300,
    };
    let mut b = BytesMut::from(&raw[..]);
    assert!(parse_request(&mut b, big).expect("ok").is_some());

    // Field bytes over max_header_bytes.
    let small = Limits {
        header_bytes: 64,
        headers: 101,
    };
    let raw = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "a".repeat(80));
    let mut b = BytesMut::from(raw.as_bytes());
    assert_eq!(
        parse_request(&mut b, small).err(),
        Some(RequestError::HeaderBytes)
    );
    // A head that does not end within the buffer limit.
    let raw = format!("GET / HTTP/1.1\r\nX-A: {}", "a".repeat(9000));
    let mut b = BytesMut::from(raw.as_bytes());
    assert_eq!(
        parse_request(&mut b, small).err(),
        Some(RequestError::TooLarge)
    );
    let raw = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
    let mut b = BytesMut::from(raw.as_bytes());
    assert_eq!(
        parse_request(&mut b, small).err(),
        Some(RequestError::TooLarge)
    );
    // Just under: still waits for more.
    let raw = format!("GET / HTTP/1.1\r\nX-A: {}", "a".repeat(100));
    let mut b = BytesMut::from(raw.as_bytes());
    assert!(parse_request(&mut b, small).expect("ok").is_none());
}

#[test]
fn half_closed_heads() {
    assert_eq!(at_eof(b""), None);
    assert_eq!(at_eof(b"\r\n"), None);
    assert_eq!(at_eof(b"GET / HTT"), Some(RequestError::Truncated));
    assert_eq!(
        at_eof(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b"),
        Some(RequestError::Truncated)
    );
}

#[test]
fn bodies_chunked_and_with_length() {
    let (h, body, trailers, rest) = request(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          3;ext=1\r\nabc\r\n0000000000000002\r\nde\r\n1\nf\n0\r\nX-Sum: 9\r\nContent-Length: 1\r\n\r\nNEXT",
    )
    .expect("valid");
    assert_eq!(h.framing, BodyFraming::Chunked);
    assert_eq!(body, b"abcdef");
    let t = trailers.expect("trailers");
    assert_eq!(t.len(), 1, "framing fields never travel as trailers");
    assert_eq!(t["x-sum"], "9");
    assert_eq!(&rest[..], b"NEXT");

    let (_, body, trailers, rest) =
        request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET").expect("valid");
    assert_eq!(body, b"hello");
    assert!(trailers.is_none());
    assert_eq!(&rest[..], b"GET");

    for bad in [
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
    ] {
        assert!(request(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

/// A million 1-byte chunks come out in few pieces: the work per chunk is a size line and
/// a one-byte copy, not a piece handed up the stack (#19 item 12).
#[test]
fn tiny_chunks_are_gathered() {
    let n = 1_000_000;
    let mut wire = Vec::with_capacity(n * 6 + 5);
    for _ in 0..n {
        wire.extend_from_slice(b"1\r\nx\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut buf = BytesMut::from(&wire[..]);
    let mut dec = BodyDecoder::new(BodyFraming::Chunked);
    let (mut total, mut pieces) = (0usize, 0usize);
    let t0 = std::time::Instant::now();
    loop {
        match dec.decode(&mut buf, 64 * 1024).expect("valid") {
            BodyEvent::Data(d) => {
                total += d.len();
                pieces += 1;
            }
            BodyEvent::End => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(total, n);
    assert!(pieces <= n / (64 * 1024) + 2, "{pieces} pieces");
    // Generous even for an unoptimised build on a busy machine (hyper's path took seconds).
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn response_heads() {
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("1"));
    let mut out = Vec::new();
    encode_response_head(
        StatusCode::OK,
        None,
        &h,
        ResponseFraming::Length(12345),
        ConnectionField::None,
        &mut out,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 12345\r\n\r\n"
    );
    out.clear();
    encode_response_head(
        StatusCode::from_u16(299).expect("status"),
        Some(&b"Custom"[..]),
        &HeaderMap::new(),
        ResponseFraming::Chunked,
        ConnectionField::for_response(Version::HTTP_11, false),
        &mut out,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 299 Custom\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    out.clear();
    let mut h = HeaderMap::new();
    h.insert("link", HeaderValue::from_static("</a.css>; rel=preload"));
    encode_response_head(
        StatusCode::from_u16(103).expect("status"),
        None,
        &h,
        ResponseFraming::Raw,
        ConnectionField::None,
        &mut out,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
    );
    out.clear();
    encode_response_head(
        StatusCode::OK,
        None,
        &HeaderMap::new(),
        ResponseFraming::Length(0),
        ConnectionField::for_response(Version::HTTP_10, true),
        &mut out,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"
    );
    out.clear();
    for (n, want) in [
        (1usize, &b"1\r\n"[..]),
        (26, b"1a\r\n"),
        (0x10000, b"10000\r\n"),
    ] {
        out.clear();
        encode_chunk_head(n, &mut out);
        assert_eq!(out, want);
    }
}

// The reference model for the property tests: requests as generated, and their bytes.

#[derive(Debug, Clone, PartialEq, Eq)]
enum GenBody {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>, Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GenRequest {
    method: &'static str,
    path: String,
    fields: Vec<(String, String)>,
    body: GenBody,
    lf_only: bool,
}

/// What the codec is expected to report for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

impl GenRequest {
    fn wire(&self) -> Vec<u8> {
        let eol: &[u8] = if self.lf_only { b"\n" } else { b"\r\n" };
        let mut out = format!("{} {} HTTP/1.1", self.method, self.path).into_bytes();
        out.extend_from_slice(eol);
        for (k, v) in &self.fields {
            out.extend_from_slice(format!("{k}: {v}").as_bytes());
            out.extend_from_slice(eol);
        }
        match &self.body {
            GenBody::None => {}
            GenBody::Length(b) => {
                out.extend_from_slice(format!("Content-Length: {}", b.len()).as_bytes());
                out.extend_from_slice(eol);
            }
            GenBody::Chunked(..) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked");
                out.extend_from_slice(eol);
            }
        }
        out.extend_from_slice(eol);
        match &self.body {
            GenBody::None => {}
            GenBody::Length(b) => out.extend_from_slice(b),
            GenBody::Chunked(chunks, trailers) => {
                for c in chunks {
                    out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
                    out.extend_from_slice(eol);
                    out.extend_from_slice(c);
                    out.extend_from_slice(eol);
                }
                out.extend_from_slice(b"0");
                out.extend_from_slice(eol);
                for (k, v) in trailers {
                    out.extend_from_slice(format!("{k}: {v}").as_bytes());
                    out.extend_from_slice(eol);
                }
                out.extend_from_slice(eol);
            }
        }
        out
    }

    fn seen(&self) -> Seen {
        let (body, trailers) = match &self.body {
            GenBody::None => (Vec::new(), Vec::new()),
            GenBody::Length(b) => (b.clone(), Vec::new()),
            GenBody::Chunked(c, t) => (c.concat(), t.clone()),
        };
        Seen {
            method: self.method.to_owned(),
            path: self.path.clone(),
            fields: self.fields.clone(),
            body,
            trailers,
        }
    }
}

fn gen_request() -> impl Strategy<Value = GenRequest> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]);
    let path = "/[a-z0-9]{0,12}(\\?[a-z=&]{0,8})?";
    // Distinct names (a header map groups the values of one name).
    let fields = prop::collection::btree_map("x-[a-z]{1,6}", "[a-z][a-zA-Z0-9 ]{0,12}[a-z]", 0..6)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    let chunk = prop::collection::vec(any::<u8>(), 1..40);
    let body = prop_oneof![
        Just(GenBody::None),
        prop::collection::vec(any::<u8>(), 1..200).prop_map(GenBody::Length),
        (
            prop::collection::vec(chunk, 0..8),
            prop::collection::btree_map("x-t[a-z]{1,4}", "[a-z0-9]{1,6}", 0..3)
                .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        )
            .prop_map(|(c, t)| GenBody::Chunked(c, t)),
    ];
    (method, path, fields, body, any::<bool>()).prop_map(|(method, path, fields, body, lf_only)| {
        GenRequest {
            method,
            path,
            fields,
            body,
            lf_only,
        }
    })
}

/// How a stream went through the codec: the requests it delimited, and how it stopped.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    requests: Vec<Seen>,
    /// The error that ended the stream, if one did.
    error: Option<String>,
    /// Bytes left undelimited at the end (and 1 for a request not finished).
    left: usize,
}

/// Feeds `wire` to the codec in pieces cut at `cuts`, as a connection would read it.
fn run(wire: &[u8], cuts: &[usize]) -> Run {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut at = 0;
    let mut requests = Vec::new();
    let mut current: Option<(Seen, BodyDecoder)> = None;
    for p in points {
        buf.extend_from_slice(&wire[at..p]);
        at = p;
        loop {
            if current.is_none() {
                match parse_request(&mut buf, LIMITS) {
                    Ok(Some(h)) => {
                        let seen = Seen {
                            method: h.parts.method.as_str().to_owned(),
                            path: h.parts.uri.to_string(),
                            fields: h
                                .parts
                                .headers
                                .iter()
                                .filter(|(k, _)| {
                                    *k != header::CONTENT_LENGTH && *k != header::TRANSFER_ENCODING
                                })
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned())
                                })
                                .collect(),
                            body: Vec::new(),
                            trailers: Vec::new(),
                        };
                        current = Some((seen, BodyDecoder::new(h.framing)));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Run {
                            requests,
                            error: Some(e.to_string()),
                            // (The connection closes: what is left does not matter.)
                            left: 0,
                        };
                    }
                }
            }
            let Some((seen, dec)) = current.as_mut() else {
                break;
            };
            match dec.decode(&mut buf, 100) {
                Ok(BodyEvent::Data(d)) => seen.body.extend_from_slice(&d),
                Ok(BodyEvent::NeedMore) => break,
                Ok(BodyEvent::End) => {
                    requests.extend(current.take().map(|(s, _)| s));
                }
                Ok(BodyEvent::Trailers(t)) => {
                    seen.trailers = t
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
                        .collect();
                    requests.extend(current.take().map(|(s, _)| s));
                }
                Err(e) => {
                    return Run {
                        requests,
                        error: Some(e.to_string()),
                        left: 0,
                    };
                }
            }
        }
    }
    Run {
        requests,
        error: None,
        left: buf.len() + current.map_or(0, |_| 1),
    }
}

/// The generated fields, in the codec's (lower-case) spelling.
fn lower(mut s: Seen) -> Seen {
    for f in &mut s.fields {
        f.0 = f.0.to_ascii_lowercase();
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Pipelined requests, cut anywhere, come out as generated: the same boundaries,
    /// heads, bodies and trailers, nothing left over.
    #[test]
    fn pipelined_requests_split_anywhere(
        reqs in prop::collection::vec(gen_request(), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let wire: Vec<u8> = reqs.iter().flat_map(GenRequest::wire).collect();
        let got = run(&wire, &cuts);
        let want: Vec<Seen> = reqs.iter().map(|r| lower(r.seen())).collect();
        prop_assert_eq!(got.error, None);
        prop_assert_eq!(got.left, 0);
        prop_assert_eq!(got.requests, want);
    }

    /// Byte by byte gives what one read gives.
    #[test]
    fn byte_by_byte_is_the_same(reqs in prop::collection::vec(gen_request(), 1..3)) {
        let wire: Vec<u8> = reqs.iter().flat_map(GenRequest::wire).collect();
        let cuts: Vec<usize> = (0..wire.len()).collect();
        prop_assert_eq!(run(&wire, &cuts), run(&wire, &[]));
    }

    /// Random bytes, and valid streams with bytes changed: never a panic, the same outcome
    /// however the bytes arrive, and every request wholly before the first changed byte
    /// comes out as generated.
    #[test]
    fn mutated_streams(
        reqs in prop::collection::vec(gen_request(), 1..4),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        noise in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        prop_assert_eq!(run(&noise, &cuts), run(&noise, &[]));
        let clean: Vec<Vec<u8>> = reqs.iter().map(GenRequest::wire).collect();
        let mut wire: Vec<u8> = clean.concat();
        let mut first = usize::MAX;
        for (at, b) in flips {
            let at = at % wire.len();
            if wire[at] != b {
                wire[at] = b;
                first = first.min(at);
            }
        }
        let whole = run(&wire, &[]);
        prop_assert_eq!(&run(&wire, &cuts), &whole);
        let mut end = 0;
        let mut intact = 0;
        for c in &clean {
            end += c.len();
            if end <= first {
                intact += 1;
            }
        }
        let want: Vec<Seen> = reqs.iter().take(intact).map(|r| lower(r.seen())).collect();
        prop_assert!(whole.requests.len() >= intact, "{:?}", whole);
        prop_assert_eq!(&whole.requests[..intact], &want[..]);
    }
}
