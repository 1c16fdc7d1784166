//! Bounds-checked packet access and header parsing. A packet whose headers are truncated or
//! inconsistent is never rewritten: parsing fails with a pass reason instead.
//!
//! Supported: untagged Ethernet (a frame with an 802.1Q/802.1ad tag → `PassVlan`: the
//! kernel hands it to its VLAN interface; lb balances a VLAN when attached there); IPv4
//! without options (options → `PassIpOptions`, fragments → `PassFragment`, a wrong header
//! checksum → `DropBadIpChecksum`); IPv6 whose next header is TCP, UDP or ICMPv6 directly (a
//! fragment header → `PassFragment`, other extension headers → `PassNotBalanced`); a UDP
//! length other than the IP payload's → `DropBadUdpLength`. Trailing bytes after the IP
//! packet (Ethernet padding) are allowed.

use aya_ebpf::programs::XdpContext;
use lb_common::types::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP, Reason, VipKey};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
const IPV6_FRAGMENT: u8 = 44;

pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
pub const ICMP_HLEN: usize = 8;

/// Offset of the TCP checksum in the TCP header.
pub const TCP_CSUM_OFF: usize = 16;
/// TCP flag bits.
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
/// Offset of the UDP checksum in the UDP header.
pub const UDP_CSUM_OFF: usize = 6;

/// IPv4 header without options.
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// IPv6 fixed header.
#[repr(C)]
pub struct Ipv6Hdr {
    pub vtc_flow: u32,
    pub payload_len: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

/// Returns a pointer to `T` at `offset`, or `None` when it would cross `data_end`.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The Ethernet layer of a packet: where it starts and the EtherType after any VLAN tag.
pub struct Ethernet {
    pub offset_eth: usize,
    /// Offset of the L3 header.
    pub offset_l3: usize,
    /// EtherType of the L3 header, host order.
    pub ether_type: u16,
}

/// Parses Ethernet with at most one 802.1Q/802.1ad tag. `None` for truncated frames.
#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Option<Ethernet> {
    let proto: *const [u8; 2] = ptr_at(ctx, 12)?;
    // SAFETY: bounds checked by `ptr_at`.
    let mut ether_type = u16::from_be_bytes(unsafe { *proto });
    let mut offset_l3 = ETH_HLEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let inner: *const [u8; 2] = ptr_at(ctx, 16)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = u16::from_be_bytes(unsafe { *inner });
        offset_l3 += 4;
    }
    Some(Ethernet {
        offset_eth: 0,
        offset_l3,
        ether_type,
    })
}

/// Swaps source and destination MAC addresses, as three 16-bit words each (the Ethernet
/// header starts on an even offset; byte copies would compile to 24 single-byte moves).
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext, offset_eth: usize) {
    if let Some(macs) = ptr_at::<[u16; 6]>(ctx, offset_eth) {
        // SAFETY: bounds checked by `ptr_at`; XDP packet data is at least 2-byte aligned.
        unsafe {
            let m = &mut *macs;
            let (d0, d1, d2) = (m[0], m[1], m[2]);
            m[0] = m[3];
            m[1] = m[4];
            m[2] = m[5];
            m[3] = d0;
            m[4] = d1;
            m[5] = d2;
        }
    }
}

/// A parsed IP packet: the 5-tuple (raw network-order values) and layer offsets.
///
/// The first fields are laid out as a [`FlowKey`], and `dst` to `family` as a [`VipKey`],
/// so the packet itself holds its forward flow key (`flow::key_of`) and its VIP key
/// ([`vip_key`]), with no copies on the BPF stack; `_pad` stays zero.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Packet {
    pub src: [u32; 4],
    /// Zero for ICMP.
    pub sport: u16,
    pub _pad: [u8; 2],
    pub dst: [u32; 4],
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub l3: usize,
    pub v6: bool,
    /// TCP flags (byte 13 of the TCP header); 0 for UDP and ICMP.
    pub tcp_flags: u8,
    /// IP total length (IPv4 `tot_len`, IPv6 40 + payload length), host order.
    pub ip_len: u32,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(Packet, src) == offset_of!(FlowKey, src));
    assert!(offset_of!(Packet, sport) == offset_of!(FlowKey, sport));
    assert!(offset_of!(Packet, _pad) == offset_of!(FlowKey, _pad));
    assert!(offset_of!(Packet, dst) == offset_of!(FlowKey, dst));
    assert!(offset_of!(Packet, dport) == offset_of!(FlowKey, dport));
    assert!(offset_of!(Packet, proto) == offset_of!(FlowKey, proto));
    assert!(offset_of!(Packet, family) == offset_of!(FlowKey, family));
    assert!(size_of::<FlowKey>() == offset_of!(Packet, family) + 1);
    let v = offset_of!(Packet, dst);
    assert!(offset_of!(Packet, dport) - v == offset_of!(VipKey, port));
    assert!(offset_of!(Packet, proto) - v == offset_of!(VipKey, proto));
    assert!(offset_of!(Packet, family) - v == offset_of!(VipKey, family));
    assert!(size_of::<VipKey>() == offset_of!(Packet, family) + 1 - v);
};

impl Packet {
    /// Offset of the L4 header (IPv4 options and IPv6 extension headers are not balanced,
    /// so it follows the fixed IP header).
    #[inline(always)]
    pub fn l4(&self) -> usize {
        self.l3 + if self.v6 { IPV6_HLEN } else { IPV4_HLEN }
    }
}

/// The VIP key of a packet's destination, in place (see [`Packet`]).
#[inline(always)]
pub fn vip_key(p: &Packet) -> &VipKey {
    // SAFETY: `Packet` is `repr(C)` and holds the fields of `VipKey` from `dst` on, in its
    // layout (checked at compile time above), with no padding.
    unsafe { &*core::ptr::addr_of!(p.dst).cast::<VipKey>() }
}

/// True when the (option-less) IPv4 header's checksum is right: its ten 16-bit words sum
/// to 0xffff in ones' complement.
#[inline(always)]
fn ipv4_checksum_ok(h: &Ipv4Hdr) -> bool {
    // SAFETY: `Ipv4Hdr` is 20 bytes of plain integers, 2-byte aligned in the packet.
    let words = unsafe { &*(h as *const Ipv4Hdr).cast::<[u16; 10]>() };
    let mut sum: u32 = 0;
    for w in words {
        sum += u32::from(*w);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

/// Parses IPv4/IPv6 and the TCP/UDP/ICMP header after Ethernet. Anything that is not
/// balanced or not well-formed returns the reason it goes to the kernel.
#[inline(always)]
pub fn ip(ctx: &XdpContext, eth: &Ethernet) -> Result<Packet, Reason> {
    let l3 = eth.offset_l3;
    let end = ctx.data_end();
    let mut p = Packet {
        l3,
        v6: false,
        tcp_flags: 0,
        family: FAMILY_V4,
        proto: 0,
        src: [0; 4],
        dst: [0; 4],
        sport: 0,
        dport: 0,
        _pad: [0; 2],
        ip_len: 0,
    };
    if eth.ether_type == ETH_P_IP {
        let h: *const Ipv4Hdr = ptr_at(ctx, l3).ok_or(Reason::PassTruncated)?;
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        if h.version_ihl >> 4 != 4 {
            return Err(Reason::PassTruncated);
        }
        let ihl = h.version_ihl & 0x0f;
        if ihl > 5 {
            return Err(Reason::PassIpOptions);
        }
        if ihl < 5 {
            return Err(Reason::PassTruncated);
        }
        let tot = u16::from_be(h.tot_len) as usize;
        if tot < IPV4_HLEN || ctx.data() + l3 + tot > end {
            return Err(Reason::PassTruncated);
        }
        if !ipv4_checksum_ok(h) {
            return Err(Reason::DropBadIpChecksum);
        }
        // More-fragments flag or a non-zero offset.
        if u16::from_be(h.frag_off) & 0x3fff != 0 {
            return Err(Reason::PassFragment);
        }
        p.proto = h.proto;
        // Whole arrays: zeroing the upper words separately costs two `memset` calls (a byte
        // loop in a BPF-to-BPF call on this target).
        p.src = [h.saddr, 0, 0, 0];
        p.dst = [h.daddr, 0, 0, 0];
        p.ip_len = tot as u32;
    } else if eth.ether_type == ETH_P_IPV6 {
        let h: *const Ipv6Hdr = ptr_at(ctx, l3).ok_or(Reason::PassTruncated)?;
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        if (u32::from_be(h.vtc_flow) >> 28) != 6 {
            return Err(Reason::PassTruncated);
        }
        let plen = u16::from_be(h.payload_len) as usize;
        if ctx.data() + l3 + IPV6_HLEN + plen > end {
            return Err(Reason::PassTruncated);
        }
        if h.nexthdr == IPV6_FRAGMENT {
            return Err(Reason::PassFragment);
        }
        p.v6 = true;
        p.family = FAMILY_V6;
        p.proto = h.nexthdr;
        p.src = h.saddr;
        p.dst = h.daddr;
        p.ip_len = (IPV6_HLEN + plen) as u32;
    } else {
        return Err(Reason::PassNotIp);
    }
    let l4_len = p.ip_len as usize - (p.l4() - l3);
    match p.proto {
        PROTO_TCP => {
            let h: *const [u8; TCP_HLEN] = ptr_at(ctx, p.l4()).ok_or(Reason::PassTruncated)?;
            // SAFETY: bounds checked by `ptr_at`.
            let h = unsafe { &*h };
            let hlen = (h[12] >> 4) as usize * 4;
            if hlen < TCP_HLEN || hlen > l4_len {
                return Err(Reason::PassTruncated);
            }
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
            p.tcp_flags = h[13];
        }
        PROTO_UDP => {
            let ports: *const [u16; 4] = ptr_at(ctx, p.l4()).ok_or(Reason::PassTruncated)?;
            // SAFETY: bounds checked by `ptr_at`.
            let u = unsafe { *ports };
            let ulen = u16::from_be(u[2]) as usize;
            // The UDP length must be the IP payload's (the kernel would drop or trim a
            // datagram whose lengths disagree; forwarding it would pass that on).
            if ulen != l4_len || ulen < UDP_HLEN {
                return Err(Reason::DropBadUdpLength);
            }
            p.sport = u[0];
            p.dport = u[1];
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if (p.proto == PROTO_ICMP) == p.v6 {
                return Err(Reason::PassNotBalanced);
            }
            if l4_len < ICMP_HLEN || ptr_at::<[u8; ICMP_HLEN]>(ctx, p.l4()).is_none() {
                return Err(Reason::PassTruncated);
            }
        }
        _ => return Err(Reason::PassNotBalanced),
    }
    Ok(p)
}
