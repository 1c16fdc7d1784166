//! Test packets: builders on top of `etherparse`, and checksum verifiers written from
//! scratch (RFC 1071 one's-complement sums over the whole header or pseudo-header), so
//! output checksums are never checked with the incremental code under test.

use std::net::IpAddr;

use etherparse::PacketBuilder;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// One's-complement sum of `data` folded to 16 bits (not inverted).
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut bytes = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
            bytes.extend_from_slice(&[0, proto]);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
            bytes.extend_from_slice(&(len as u32).to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed address families"),
    }
    u32::from(ones_complement_sum(&bytes, 0))
}

/// True when an IPv4 header's checksum is right.
pub fn ipv4_header_ok(header: &[u8]) -> bool {
    ones_complement_sum(header, 0) == 0xffff
}

/// Rewrites the checksum of the IPv4 header at `frame[l3..]` (IHL honoured), e.g. after a
/// test edited a header field.
pub fn set_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let sum = !ones_complement_sum(&frame[l3..l3 + ihl], 0);
    frame[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
}

/// True when the TCP, UDP or ICMPv6 checksum over `segment` (header and payload) is right
/// for the given pseudo-header. An IPv4 UDP checksum of zero means "none" and is accepted.
pub fn l4_checksum_ok(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> bool {
    if proto == 17 && src.is_ipv4() && segment.len() >= 8 && segment[6..8] == [0, 0] {
        return true;
    }
    let sum = ones_complement_sum(segment, pseudo_header_sum(src, dst, proto, segment.len()));
    sum == 0xffff
}

/// True when an ICMPv4 message checksum (no pseudo-header) is right.
pub fn icmpv4_checksum_ok(message: &[u8]) -> bool {
    ones_complement_sum(message, 0) == 0xffff
}

/// Checks every checksum in an Ethernet frame: IPv4 header, and TCP/UDP/ICMP/ICMPv6.
/// Returns a description of the first wrong one.
pub fn verify_frame_checksums(frame: &[u8]) -> Result<(), String> {
    let sliced = etherparse::SlicedPacket::from_ethernet(frame).map_err(|e| e.to_string())?;
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            if !ipv4_header_ok(h.slice()) {
                return Err("IPv4 header checksum".into());
            }
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.protocol().0,
                v4.payload().payload,
            )
        }
        Some(etherparse::NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload().ip_number.0,
                v6.payload().payload,
            )
        }
        _ => return Err("not IP".into()),
    };
    let ok = match proto {
        6 | 17 | 58 => l4_checksum_ok(src, dst, proto, l4),
        1 => icmpv4_checksum_ok(l4),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("checksum of protocol {proto}"))
    }
}

/// An Ethernet + IPv4/IPv6 + TCP frame with a valid checksum.
pub fn tcp_frame(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags_syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families"),
    };
    let mut tcp = ip.tcp(sport, dport, 1000, 65535);
    if flags_syn {
        tcp = tcp.syn();
    } else {
        tcp = tcp.ack(1);
    }
    let mut out = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut out, payload).expect("writing to a Vec");
    out
}

/// An Ethernet + IPv4/IPv6 + UDP frame with a valid checksum.
pub fn udp_frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families"),
    };
    let udp = ip.udp(sport, dport);
    let mut out = Vec::with_capacity(udp.size(payload.len()));
    udp.write(&mut out, payload).expect("writing to a Vec");
    out
}
