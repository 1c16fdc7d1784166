//! Peeks the SNI out of a TLS ClientHello without consuming it (`req.ssl_sni` in
//! `mode tcp`, and certificate selection before the handshake).
//!
//! [`peek_sni`] looks at the bytes received so far. It never panics, allocates at most the
//! ClientHello itself (bounded by [`MAX_CLIENT_HELLO`]), and answers:
//! - [`SniPeek::Incomplete`]: could be a ClientHello, read more (and retry with all bytes);
//! - [`SniPeek::NotTls`]: not a TLS handshake, or a malformed / oversized ClientHello;
//! - [`SniPeek::Sni`]: a complete ClientHello, with its `host_name` if it carries one.
//!
//! A ClientHello split over several TLS records is reassembled.

/// Largest ClientHello accepted (handshake body). Real ones are well under 4 KiB, even
/// with post-quantum key shares.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Largest TLS plaintext record fragment (RFC 8446 §5.1), with RFC 5246's slack.
const MAX_RECORD: usize = 16384 + 2048;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// What the peeked bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniPeek {
    /// More bytes are needed to decide.
    Incomplete,
    /// Not a TLS ClientHello (or a malformed one).
    NotTls,
    /// A complete ClientHello; the SNI host name if present and well-formed.
    Sni(Option<String>),
}

/// Parses the TLS ClientHello at the start of `buf` (a prefix of the client's stream).
pub fn peek_sni(buf: &[u8]) -> SniPeek {
    match reassemble(buf) {
        Ok(body) => match parse_client_hello(&body) {
            Some(sni) => SniPeek::Sni(sni),
            None => SniPeek::NotTls,
        },
        Err(e) => e,
    }
}

/// Collects the ClientHello handshake message (header included) from the records at the
/// start of `buf`.
fn reassemble(buf: &[u8]) -> Result<Vec<u8>, SniPeek> {
    let mut msg: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    loop {
        // Record header: type(1) version(2) length(2); checked byte by byte so garbage is
        // rejected as early as possible.
        let hdr = &buf[pos.min(buf.len())..];
        match hdr.first() {
            None => return Err(SniPeek::Incomplete),
            Some(&CONTENT_HANDSHAKE) => {}
            Some(_) => return Err(SniPeek::NotTls),
        }
        match hdr.get(1) {
            None => return Err(SniPeek::Incomplete),
            Some(3) => {}
            Some(_) => return Err(SniPeek::NotTls),
        }
        match hdr.get(2) {
            None => return Err(SniPeek::Incomplete),
            Some(0..=4) => {}
            Some(_) => return Err(SniPeek::NotTls),
        }
        let (Some(&l0), Some(&l1)) = (hdr.get(3), hdr.get(4)) else {
            return Err(SniPeek::Incomplete);
        };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        if len == 0 || len > MAX_RECORD {
            return Err(SniPeek::NotTls);
        }
        let start = pos + 5;
        let avail = buf.len().saturating_sub(start);
        let take = avail.min(len);
        msg.extend_from_slice(&buf[start..start + take]);

        // Check the handshake header as soon as it is there.
        if let Some(&t) = msg.first()
            && t != HANDSHAKE_CLIENT_HELLO
        {
            return Err(SniPeek::NotTls);
        }
        if msg.len() >= 4 {
            let body_len =
                (usize::from(msg[1]) << 16) | (usize::from(msg[2]) << 8) | usize::from(msg[3]);
            if body_len > MAX_CLIENT_HELLO {
                return Err(SniPeek::NotTls);
            }
            let total = 4 + body_len;
            if msg.len() >= total {
                msg.truncate(total);
                return Ok(msg);
            }
        }
        if take < len {
            return Err(SniPeek::Incomplete);
        }
        // The record is complete but the message is not: it continues in the next record.
        pos = start + len;
        if msg.len() > MAX_CLIENT_HELLO + 4 {
            return Err(SniPeek::NotTls);
        }
    }
}

/// A bounds-checked reader.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.bytes(n)
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u16()?);
        Some(Reader {
            buf: self.bytes(n)?,
        })
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// `None` when malformed; `Some(None)` when well-formed without a usable host name.
fn parse_client_hello(msg: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { buf: msg.get(4..)? };
    let _legacy_version = r.u16()?;
    let _random = r.bytes(32)?;
    let session_id = r.vec8()?;
    if session_id.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.buf.is_empty() || suites.buf.len() % 2 != 0 {
        return None;
    }
    let compression = r.vec8()?;
    if compression.is_empty() {
        return None;
    }
    if r.is_empty() {
        // No extensions (SSLv3 / old TLS clients).
        return Some(None);
    }
    let mut exts = r.vec16()?;
    if !r.is_empty() {
        return None;
    }
    let mut sni = None;
    let mut seen_sni = false;
    while !exts.is_empty() {
        let ty = exts.u16()?;
        let mut body = exts.vec16()?;
        if ty != EXT_SERVER_NAME {
            continue;
        }
        if seen_sni {
            // Duplicate extensions are illegal (RFC 8446 §4.2).
            return None;
        }
        seen_sni = true;
        let mut list = body.vec16()?;
        if !body.is_empty() {
            return None;
        }
        while !list.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?.buf;
            if name_type == NAME_TYPE_HOST && sni.is_none() {
                sni = host_name(name);
            }
        }
    }
    Some(sni)
}

/// A host name as sent: ASCII letters, digits, `-`, `.`, `_`; anything else is ignored.
fn host_name(b: &[u8]) -> Option<String> {
    if b.is_empty()
        || b.len() > 255
        || !b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        return None;
    }
    std::str::from_utf8(b).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    use super::*;

    fn config(enable_sni: bool) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        cfg.enable_sni = enable_sni;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    /// The first flight of a real rustls client.
    fn client_hello(name: &str, enable_sni: bool) -> Vec<u8> {
        let server = ServerName::try_from(name.to_string()).expect("server name");
        let mut conn = ClientConnection::new(config(enable_sni), server).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    /// Re-frames one handshake message over records of at most `chunk` bytes.
    fn fragment(hello: &[u8], chunk: usize) -> Vec<u8> {
        let len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        let msg = &hello[5..5 + len];
        let mut out = Vec::new();
        for part in msg.chunks(chunk) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn real_rustls_client_hello() {
        let hello = client_hello("api.example.com", true);
        assert_eq!(
            peek_sni(&hello),
            SniPeek::Sni(Some("api.example.com".into()))
        );
    }

    #[test]
    fn tls12_only_client_hello() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("tls12")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let server = ServerName::try_from("legacy.example.com").expect("name");
        let mut conn = ClientConnection::new(Arc::new(cfg), server).expect("client");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("write_tls");
        assert_eq!(
            peek_sni(&out),
            SniPeek::Sni(Some("legacy.example.com".into()))
        );
    }

    #[test]
    fn trailing_bytes_after_hello_are_ignored() {
        let mut hello = client_hello("a.example", true);
        hello.extend_from_slice(b"\x17\x03\x03garbage");
        assert_eq!(peek_sni(&hello), SniPeek::Sni(Some("a.example".into())));
    }

    #[test]
    fn no_sni_when_disabled_or_ip() {
        assert_eq!(
            peek_sni(&client_hello("example.com", false)),
            SniPeek::Sni(None)
        );
        // Clients never send SNI for an IP address.
        assert_eq!(
            peek_sni(&client_hello("192.0.2.7", true)),
            SniPeek::Sni(None)
        );
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let hello = client_hello("truncated.example.org", true);
        for n in 0..hello.len() {
            assert_eq!(
                peek_sni(&hello[..n]),
                SniPeek::Incomplete,
                "prefix of {n} bytes"
            );
        }
        assert!(matches!(peek_sni(&hello), SniPeek::Sni(Some(_))));
    }

    #[test]
    fn hello_split_over_records() {
        let hello = client_hello("split.example.net", true);
        for chunk in [1, 7, 50, 100, 300] {
            let framed = fragment(&hello, chunk);
            assert_eq!(
                peek_sni(&framed),
                SniPeek::Sni(Some("split.example.net".into())),
                "records of {chunk}"
            );
            for n in 0..framed.len() {
                assert_eq!(
                    peek_sni(&framed[..n]),
                    SniPeek::Incomplete,
                    "chunk {chunk} n {n}"
                );
            }
        }
    }

    #[test]
    fn not_tls() {
        assert_eq!(peek_sni(b"GET / HTTP/1.1\r\n"), SniPeek::NotTls);
        assert_eq!(peek_sni(b"G"), SniPeek::NotTls);
        assert_eq!(peek_sni(b"SSH-2.0-OpenSSH_9.6\r\n"), SniPeek::NotTls);
        assert_eq!(peek_sni(&[22, 2]), SniPeek::NotTls);
        assert_eq!(peek_sni(&[22, 3, 9]), SniPeek::NotTls);
        // Zero-length and oversized records.
        assert_eq!(peek_sni(&[22, 3, 1, 0, 0]), SniPeek::NotTls);
        assert_eq!(peek_sni(&[22, 3, 1, 0xff, 0xff]), SniPeek::NotTls);
        // A handshake that is not a ClientHello (ServerHello = 2).
        assert_eq!(peek_sni(&[22, 3, 3, 0, 4, 2, 0, 0, 0]), SniPeek::NotTls);
        // Application data.
        assert_eq!(peek_sni(&[23, 3, 3, 0, 1, 0]), SniPeek::NotTls);
        // Oversized ClientHello length.
        assert_eq!(
            peek_sni(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
            SniPeek::NotTls
        );
        // An SSLv2-compatible hello is not supported.
        assert_eq!(peek_sni(&[0x80, 0x2e, 1, 3, 1]), SniPeek::NotTls);
    }

    #[test]
    fn empty_is_incomplete() {
        assert_eq!(peek_sni(&[]), SniPeek::Incomplete);
        assert_eq!(peek_sni(&[22]), SniPeek::Incomplete);
        assert_eq!(peek_sni(&[22, 3, 1, 1, 0]), SniPeek::Incomplete);
    }

    #[test]
    fn corrupted_hellos_never_panic() {
        let hello = client_hello("fuzz.example.com", true);
        // Flip every byte (one at a time) to several values; the parser must stay total.
        for i in 0..hello.len() {
            for v in [0x00u8, 0x01, 0x7f, 0x80, 0xff, hello[i].wrapping_add(1)] {
                let mut h = hello.clone();
                h[i] = v;
                let _ = peek_sni(&h);
                let _ = peek_sni(&h[..h.len() / 2]);
            }
        }
        // Pseudo-random garbage behind a valid record header.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let len = (x % 600) as usize;
            let mut buf = vec![22u8, 3, 1, (len >> 8) as u8, len as u8, 1];
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            let _ = peek_sni(&buf);
        }
    }

    #[test]
    fn handcrafted_hello_edge_cases() {
        // Builds a minimal ClientHello with the given extensions block (None = absent).
        fn build(exts: Option<Vec<u8>>) -> Vec<u8> {
            let mut body = vec![3, 3];
            body.extend_from_slice(&[0u8; 32]);
            body.push(0); // session id
            body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
            body.extend_from_slice(&[1, 0]); // null compression
            if let Some(e) = exts {
                body.extend_from_slice(&(e.len() as u16).to_be_bytes());
                body.extend_from_slice(&e);
            }
            let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
            msg.extend_from_slice(&body);
            let mut rec = vec![22, 3, 1];
            rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            rec.extend_from_slice(&msg);
            rec
        }
        fn sni_ext(names: &[(u8, &[u8])]) -> Vec<u8> {
            let mut list = Vec::new();
            for (t, n) in names {
                list.push(*t);
                list.extend_from_slice(&(n.len() as u16).to_be_bytes());
                list.extend_from_slice(n);
            }
            let mut body = (list.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(&list);
            let mut ext = vec![0, 0];
            ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
            ext.extend_from_slice(&body);
            ext
        }
        assert_eq!(peek_sni(&build(None)), SniPeek::Sni(None));
        assert_eq!(peek_sni(&build(Some(vec![]))), SniPeek::Sni(None));
        assert_eq!(
            peek_sni(&build(Some(sni_ext(&[(0, b"host.example")])))),
            SniPeek::Sni(Some("host.example".into()))
        );
        // Unknown name types are skipped; the first host_name wins.
        assert_eq!(
            peek_sni(&build(Some(sni_ext(&[
                (7, b"x"),
                (0, b"b.example"),
                (0, b"c")
            ])))),
            SniPeek::Sni(Some("b.example".into()))
        );
        // A name with bytes a host name cannot have is not reported.
        assert_eq!(
            peek_sni(&build(Some(sni_ext(&[(0, b"bad\0name")])))),
            SniPeek::Sni(None)
        );
        // Two SNI extensions are malformed.
        let mut two = sni_ext(&[(0, b"a")]);
        two.extend_from_slice(&sni_ext(&[(0, b"b")]));
        assert_eq!(peek_sni(&build(Some(two))), SniPeek::NotTls);
        // An extension length running past the block is malformed.
        assert_eq!(peek_sni(&build(Some(vec![0, 0, 0, 9, 0]))), SniPeek::NotTls);
    }
}
