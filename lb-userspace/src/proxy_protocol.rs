//! The PROXY protocol (HAProxy's, versions 1 and 2): read from clients on binds with
//! `accept-proxy`, whose addresses then stand for the connection's (`src`, `dst`, logs,
//! X-Forwarded-For), and written to servers with `send-proxy` / `send-proxy-v2`.
//!
//! Reading takes exactly the header off the stream (never application bytes): version 2
//! is length-prefixed; a version 1 line is peeked until its CRLF. TLVs of version 2 are
//! skipped; `LOCAL` and `UNKNOWN` keep the connection's own addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Version 2's signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 line is at most this long, CRLF included.
const V1_MAX: usize = 107;
/// Version 2 address blocks (with TLVs) larger than this are refused.
const V2_MAX_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY protocol header (the bind has accept-proxy)")]
    NotProxy,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("connection closed inside the PROXY protocol header")]
    Closed,
    #[error("no complete PROXY protocol header in time")]
    Timeout,
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

/// Which header a server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// Reads a PROXY header from `stream` within `limit`. `Ok(Some((src, dst)))`: the client
/// and the address it connected to, as the sender saw them; `Ok(None)`: a `LOCAL` (v2) or
/// `UNKNOWN` (v1) header, the connection's own addresses stand.
pub async fn read_header(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<Option<(SocketAddr, SocketAddr)>, ProxyError> {
    match tokio::time::timeout(limit, read_header_inner(stream)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout),
    }
}

async fn read_header_inner(
    stream: &mut TcpStream,
) -> Result<Option<(SocketAddr, SocketAddr)>, ProxyError> {
    let io = |e: std::io::Error| ProxyError::Io(e.to_string());
    let mut buf = [0u8; V1_MAX];
    loop {
        let n = stream.peek(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let got = &buf[..n];
        // Decide as soon as the bytes seen rule one version in or out.
        let v2_prefix = got.len().min(V2_SIG.len());
        let maybe_v2 = got[..v2_prefix] == V2_SIG[..v2_prefix];
        let maybe_v1 = got[..got.len().min(6)] == b"PROXY "[..got.len().min(6)];
        if !maybe_v1 && !maybe_v2 {
            return Err(ProxyError::NotProxy);
        }
        if maybe_v2 && got.len() >= 16 {
            let len = usize::from(u16::from_be_bytes([got[14], got[15]]));
            if len > V2_MAX_LEN {
                return Err(ProxyError::Malformed("version 2 address block too long"));
            }
            let mut head = [0u8; 16];
            stream.read_exact(&mut head).await.map_err(io)?;
            let mut rest = vec![0u8; len];
            stream.read_exact(&mut rest).await.map_err(io)?;
            return parse_v2(&head, &rest);
        }
        if maybe_v1 && let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
            let mut line = vec![0u8; end + 2];
            stream.read_exact(&mut line).await.map_err(io)?;
            return parse_v1(&line[..end]);
        }
        if maybe_v1 && got.len() >= V1_MAX {
            return Err(ProxyError::Malformed("version 1 line without CRLF"));
        }
        // Only part of the header has arrived: look again shortly (peeking does not wait
        // for more than one byte).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT` or `PROXY UNKNOWN …` (without the CRLF).
pub fn parse_v1(line: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, ProxyError> {
    let bad = ProxyError::Malformed;
    let text = std::str::from_utf8(line).map_err(|_| bad("version 1 line is not text"))?;
    let mut w = text.split(' ');
    if w.next() != Some("PROXY") {
        return Err(ProxyError::NotProxy);
    }
    let fam = w.next().ok_or(bad("version 1 line without protocol"))?;
    if fam == "UNKNOWN" {
        return Ok(None);
    }
    let v6 = match fam {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(bad("version 1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut next = || w.next().ok_or(bad("version 1 line with missing fields"));
    let (s, d, sp, dp) = (next()?, next()?, next()?, next()?);
    let ip = |t: &str| -> Result<IpAddr, ProxyError> {
        let a: IpAddr = t.parse().map_err(|_| bad("version 1 address"))?;
        if a.is_ipv6() != v6 {
            return Err(bad("version 1 address of the wrong family"));
        }
        Ok(a)
    };
    let port = |t: &str| -> Result<u16, ProxyError> {
        if t.is_empty() || (t.len() > 1 && t.starts_with('0')) {
            return Err(bad("version 1 port"));
        }
        t.parse().map_err(|_| bad("version 1 port"))
    };
    if w.next().is_some() {
        return Err(bad("version 1 line with extra fields"));
    }
    Ok(Some((
        SocketAddr::new(ip(s)?, port(sp)?),
        SocketAddr::new(ip(d)?, port(dp)?),
    )))
}

/// A version 2 header: its 16 fixed bytes and the address block (TLVs ignored).
pub fn parse_v2(
    head: &[u8; 16],
    block: &[u8],
) -> Result<Option<(SocketAddr, SocketAddr)>, ProxyError> {
    let bad = ProxyError::Malformed;
    if head[..12] != V2_SIG {
        return Err(ProxyError::NotProxy);
    }
    if head[12] >> 4 != 2 {
        return Err(bad("version 2 header of another version"));
    }
    match head[12] & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => return Err(bad("version 2 command is neither LOCAL nor PROXY")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match head[13] {
        // TCP (or UDP) over IPv4.
        0x11 | 0x12 => {
            if block.len() < 12 {
                return Err(bad("version 2 IPv4 block too short"));
            }
            let s = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            let d = Ipv4Addr::new(block[4], block[5], block[6], block[7]);
            Ok(Some((
                SocketAddr::new(s.into(), port(&block[8..])),
                SocketAddr::new(d.into(), port(&block[10..])),
            )))
        }
        0x21 | 0x22 => {
            if block.len() < 36 {
                return Err(bad("version 2 IPv6 block too short"));
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&block[..16]);
            d.copy_from_slice(&block[16..32]);
            Ok(Some((
                SocketAddr::new(Ipv6Addr::from(s).into(), port(&block[32..])),
                SocketAddr::new(Ipv6Addr::from(d).into(), port(&block[34..])),
            )))
        }
        // AF_UNSPEC, or unix sockets: the connection's addresses stand.
        _ => Ok(None),
    }
}

/// The header telling a server that `src` connected to `dst`. Mixed families are sent as
/// IPv6 (IPv4 as IPv4-mapped), as HAProxy does.
pub fn encode(version: ProxyVersion, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (s, d) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(as_v6(s)), IpAddr::V6(as_v6(d))),
    };
    match version {
        ProxyVersion::V1 => {
            let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {fam} {s} {d} {} {}\r\n", src.port(), dst.port()).into_bytes()
        }
        ProxyVersion::V2 => {
            let mut out = Vec::with_capacity(52);
            out.extend_from_slice(&V2_SIG);
            out.push(0x21);
            match (s, d) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                _ => {
                    out.push(0x21);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&as_v6(s).octets());
                    out.extend_from_slice(&as_v6(d).octets());
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
            out
        }
    }
}

/// The header of a health check to a server with `send-proxy`: version 1 names the check
/// connection's own addresses, version 2 says `LOCAL` (the connection is the proxy's own).
pub fn encode_check(version: ProxyVersion, local: SocketAddr, server: SocketAddr) -> Vec<u8> {
    match version {
        ProxyVersion::V1 => encode(ProxyVersion::V1, local, server),
        ProxyVersion::V2 => {
            let mut out = Vec::with_capacity(16);
            out.extend_from_slice(&V2_SIG);
            out.extend_from_slice(&[0x20, 0x00, 0, 0]);
            out
        }
    }
}

fn as_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn v1_lines() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443"),
            Ok(Some((sa("192.0.2.1:56324"), sa("198.51.100.2:443"))))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 80"),
            Ok(Some((sa("[2001:db8::1]:1"), sa("[2001:db8::2]:80"))))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN"), Ok(None));
        assert_eq!(parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2"), Ok(None));
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324"[..],
            b"PROXY TCP4 192.0.2.1 2001:db8::2 1 2",
            b"PROXY TCP5 192.0.2.1 198.51.100.2 1 2",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 99999",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3",
        ] {
            assert!(
                matches!(parse_v1(bad), Err(ProxyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_v1(b"GET / HTTP/1.1"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn encode_then_parse_both_versions() {
        for (s, d) in [
            ("192.0.2.1:1234", "198.51.100.2:443"),
            ("[2001:db8::1]:1", "[2001:db8::2]:80"),
        ] {
            let (s, d) = (sa(s), sa(d));
            let v1 = encode(ProxyVersion::V1, s, d);
            assert!(v1.ends_with(b"\r\n"));
            assert_eq!(parse_v1(&v1[..v1.len() - 2]), Ok(Some((s, d))));
            let v2 = encode(ProxyVersion::V2, s, d);
            let mut head = [0u8; 16];
            head.copy_from_slice(&v2[..16]);
            assert_eq!(
                usize::from(u16::from_be_bytes([head[14], head[15]])),
                v2.len() - 16
            );
            assert_eq!(parse_v2(&head, &v2[16..]), Ok(Some((s, d))));
        }
        // Mixed families go as IPv6 with the IPv4 address mapped.
        let v1 = encode(ProxyVersion::V1, sa("192.0.2.1:5"), sa("[2001:db8::2]:80"));
        assert_eq!(v1, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 5 80\r\n");
    }

    #[test]
    fn v2_local_unspec_and_tlvs() {
        let mut local = [0u8; 16];
        local[..12].copy_from_slice(&V2_SIG);
        local[12] = 0x20;
        assert_eq!(parse_v2(&local, &[]), Ok(None));
        let mut unspec = local;
        unspec[12] = 0x21;
        assert_eq!(parse_v2(&unspec, &[]), Ok(None));
        // IPv4 with a TLV after the addresses (AWS NLB adds some): ignored.
        let mut head = unspec;
        head[13] = 0x11;
        let mut block = vec![192, 0, 2, 1, 198, 51, 100, 2, 0, 80, 1, 187];
        block.extend_from_slice(&[0x04, 0, 1, 0]);
        assert_eq!(
            parse_v2(&head, &block),
            Ok(Some((sa("192.0.2.1:80"), sa("198.51.100.2:443"))))
        );
        assert!(matches!(
            parse_v2(&head, &block[..8]),
            Err(ProxyError::Malformed(_))
        ));
        let mut v3 = head;
        v3[12] = 0x31;
        assert!(matches!(
            parse_v2(&v3, &block),
            Err(ProxyError::Malformed(_))
        ));
    }
}
