//! ICMP and ICMPv6 errors (destination unreachable incl. fragmentation needed, packet too
//! big, time exceeded) about balanced flows (never about a client's direct flow to a
//! backend: [`about_unbalanced`]), translated in both directions so PMTU
//! discovery and traceroute work through the balancer:
//!
//! * about a forwarded packet (client → backend), on its way back to the client: the quoted
//!   packet's destination (backend) becomes the VIP, and an outer source equal to the backend
//!   becomes the VIP;
//! * about a reply (VIP → client), on its way to the VIP: the flow table says which backend
//!   sent it; the quoted source and the outer destination become that backend.
//!
//! Fixed: outer IPv4 header checksum, quoted IPv4 header checksum, quoted TCP/UDP checksum
//! when it lies inside the quote (zero IPv4 UDP checksums stay zero), and the ICMP checksum
//! (for ICMPv6 including the pseudo-header).

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::generated::bpf_xdp_adjust_tail;
use aya_ebpf::programs::XdpContext;
use lb_common::types::{PROTO_TCP, PROTO_UDP, Reason, ReverseKey, VipKey};

use crate::csum::{self, Delta};
use crate::flow;
use crate::maps::{LB_REVERSE, LB_VIPS};
use crate::nat::{Side, addr_offset, update_csum, write_addr};
use crate::parse::{
    ICMP_HLEN, IPV4_HLEN, IPV6_HLEN, Ipv4Hdr, Ipv6Hdr, PROTO_ICMPV6, Packet, TCP_CSUM_OFF,
    UDP_CSUM_OFF, ptr_at,
};

/// What the caller does next.
pub enum Outcome {
    /// Translated; forward the packet (`Packet` describes the rewritten outer header).
    Forward { vip_id: u32, backend_id: u32 },
    /// Leave the packet to the kernel, counted under this reason.
    Pass(Reason),
    /// A reply was built in place; return this action.
    Sent(u32),
    /// Drop the packet.
    Drop,
}

#[inline(always)]
fn is_error(v6: bool, ty: u8) -> bool {
    if v6 {
        // Destination unreachable, packet too big, time exceeded.
        ty == 1 || ty == 2 || ty == 3
    } else {
        // Destination unreachable (incl. fragmentation needed), time exceeded.
        ty == 3 || ty == 11
    }
}

/// The addresses and ports of the packet an ICMP error quotes.
struct Quote {
    proto: u8,
    src: [u32; 4],
    dst: [u32; 4],
    sport: u16,
    dport: u16,
}

/// The quoted packet of ICMP error `p` (IP header without options and at least 8 bytes
/// of TCP/UDP, inside the outer IP packet), as [`handle`] reads it.
#[inline(always)]
fn quote(ctx: &XdpContext, p: &Packet) -> Option<Quote> {
    let ty = ptr_at::<u8>(ctx, p.l4())?;
    // SAFETY: bounds checked by `ptr_at`.
    if !is_error(p.v6, unsafe { *ty }) {
        return None;
    }
    let il3 = p.l4() + ICMP_HLEN;
    let (proto, src, dst, il4) = if p.v6 {
        let h = ptr_at::<Ipv6Hdr>(ctx, il3)?;
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        (h.nexthdr, h.saddr, h.daddr, il3 + IPV6_HLEN)
    } else {
        let h = ptr_at::<Ipv4Hdr>(ctx, il3)?;
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        if h.version_ihl != 0x45 {
            return None;
        }
        (
            h.proto,
            [h.saddr, 0, 0, 0],
            [h.daddr, 0, 0, 0],
            il3 + IPV4_HLEN,
        )
    };
    if (proto != PROTO_TCP && proto != PROTO_UDP) || il4 + 8 > p.l3 + p.ip_len as usize {
        return None;
    }
    let ports = ptr_at::<[u16; 2]>(ctx, il4)?;
    // SAFETY: bounds checked by `ptr_at`.
    let ports = unsafe { *ports };
    Some(Quote {
        proto,
        src,
        dst,
        sport: ports[0],
        dport: ports[1],
    })
}

/// True when ICMP error `p` quotes a packet sent to a backend endpoint (client → backend)
/// of a flow that was not balanced through the backend's VIP ([`flow::balanced_reply`]
/// on the reply tuple): a client reaching the backend directly through the balancer, whose
/// errors must reach it as the router sent them.
///
/// A BPF function of its own, called before [`handle`] rather than from it: the chain
/// `lb_xdp → handle → balanced_reply` exceeds the verifier's 512-byte stack bound.
#[inline(never)]
pub fn about_unbalanced(ctx: &XdpContext, p: &Packet) -> bool {
    // One volatile read keeps `ctx` a context pointer. With plain loads only, LLVM passes
    // the packet bounds in as 32-bit scalars instead (argument promotion), and the
    // verifier refuses the pointer arithmetic that widening them needs.
    // SAFETY: reads a field of the program's context.
    let _ = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*ctx.ctx).data)) };
    let Some(q) = quote(ctx, p) else {
        return false;
    };
    let rkey = ReverseKey {
        addr: q.dst,
        port: q.dport,
        proto: q.proto,
        family: p.family,
    };
    let Some(rv) = LB_REVERSE.get_ptr(rkey) else {
        return false;
    };
    // SAFETY: map value pointer from a successful lookup.
    let rv = flow::reply_vip(
        unsafe { &*rv },
        &q.dst,
        q.dport,
        &q.src,
        q.sport,
        q.proto,
        p.family,
    );
    // The reply tuple (backend → client) of the quoted packet.
    let reply = Packet {
        l3: 0,
        v6: p.v6,
        tcp_flags: 0,
        family: p.family,
        proto: q.proto,
        src: q.dst,
        dst: q.src,
        sport: q.dport,
        dport: q.sport,
        _pad: [0; 2],
        ip_len: 0,
    };
    rv.family == p.family && !flow::balanced_reply(&reply, rv)
}

/// Handles an ICMP/ICMPv6 packet `p` (already parsed, source not local, not denied, and
/// not [`about_unbalanced`]). It reads the quote itself rather than through [`quote`]:
/// with a `Quote` in its frame, this function alone needed 424 bytes of stack, and its
/// result reached the caller as a stack pointer the verifier refuses.
///
/// A separate BPF function, as is [`crate::forward::forward`] after it: each has a big
/// frame, and the verifier bounds the combined stack of a call chain.
#[inline(never)]
pub fn handle(ctx: &XdpContext, p: &mut Packet) -> Outcome {
    let Some(ty) = ptr_at::<u8>(ctx, p.l4()) else {
        return Outcome::Pass(Reason::PassTruncated);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let ty = unsafe { *ty };
    if !is_error(p.v6, ty) {
        return Outcome::Pass(Reason::PassNotBalanced);
    }
    let il3 = p.l4() + ICMP_HLEN;
    // The quoted packet: IP header (no options) and at least 8 bytes of TCP/UDP.
    let (iproto, isrc, idst, il4) = if p.v6 {
        let Some(h) = ptr_at::<Ipv6Hdr>(ctx, il3) else {
            return Outcome::Pass(Reason::PassUnsupportedIcmp);
        };
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        (h.nexthdr, h.saddr, h.daddr, il3 + IPV6_HLEN)
    } else {
        let Some(h) = ptr_at::<Ipv4Hdr>(ctx, il3) else {
            return Outcome::Pass(Reason::PassUnsupportedIcmp);
        };
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        if h.version_ihl != 0x45 {
            return Outcome::Pass(Reason::PassUnsupportedIcmp);
        }
        (
            h.proto,
            [h.saddr, 0, 0, 0],
            [h.daddr, 0, 0, 0],
            il3 + IPV4_HLEN,
        )
    };
    if iproto != PROTO_TCP && iproto != PROTO_UDP {
        return Outcome::Pass(Reason::PassUnsupportedIcmp);
    }
    // Everything read below must lie inside the IP packet, not in Ethernet padding.
    let ip_end = p.l3 + p.ip_len as usize;
    if il4 + 8 > ip_end {
        return Outcome::Pass(Reason::PassUnsupportedIcmp);
    }
    let Some(ports) = ptr_at::<[u16; 4]>(ctx, il4) else {
        return Outcome::Pass(Reason::PassUnsupportedIcmp);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let ports = unsafe { *ports };
    let (isport, idport) = (ports[0], ports[1]);

    // Which direction: the quoted destination is a backend, or the quoted source a VIP.
    let rkey = ReverseKey {
        addr: idst,
        port: idport,
        proto: iproto,
        family: p.family,
    };
    let (inner_side, new_inner, new_port, outer_side, new_outer, vip_id, backend_id) =
        if let Some(rv) = LB_REVERSE.get_ptr(rkey) {
            // SAFETY: map value pointer from a successful lookup.
            let rv = flow::reply_vip(
                unsafe { &*rv },
                &idst,
                idport,
                &isrc,
                isport,
                iproto,
                p.family,
            );
            if rv.family != p.family {
                return Outcome::Pass(Reason::PassUnsupportedIcmp);
            }
            // The outer source is rewritten only when the backend itself reported the error.
            let outer = if p.src == idst { Some(Side::Src) } else { None };
            (
                Side::Dst,
                rv.vip_addr,
                rv.vip_port,
                outer,
                rv.vip_addr,
                rv.vip_id,
                rv.backend_id,
            )
        } else {
            let vkey = VipKey {
                addr: isrc,
                port: isport,
                proto: iproto,
                family: p.family,
            };
            let Some(vip) = LB_VIPS.get_ptr(vkey) else {
                return Outcome::Pass(Reason::PassNotBalanced);
            };
            // SAFETY: map value pointer from a successful lookup.
            let vip = unsafe { &*vip };
            // The client's packets of this flow, as the balancer received them.
            let client = Packet {
                l3: 0,
                v6: p.v6,
                tcp_flags: 0,
                family: p.family,
                proto: iproto,
                src: idst,
                dst: isrc,
                sport: idport,
                dport: isport,
                _pad: [0; 2],
                ip_len: 0,
            };
            // The tracked backend, else the one the Maglev table picks for this flow (a
            // restarted or second balancer node without the flow entry agrees); no entry
            // is recorded for an error message.
            let Some(choice) = flow::choose(&client, vip) else {
                return Outcome::Pass(Reason::PassNotBalanced);
            };
            let (vip_id, backend_id, b) = (vip.vip_id, choice.backend_id, choice.backend);
            if b.family != p.family {
                return Outcome::Pass(Reason::PassUnsupportedIcmp);
            }
            (
                Side::Src,
                b.addr,
                b.port,
                Some(Side::Dst),
                b.addr,
                vip_id,
                backend_id,
            )
        };

    // Check every bound before the first write.
    let il4_csum = if iproto == PROTO_TCP {
        il4 + TCP_CSUM_OFF
    } else {
        il4 + UDP_CSUM_OFF
    };
    // Quoted only when it lies inside the IP packet; `update_csum` checks the frame bounds.
    let has_l4_csum = il4_csum + 2 <= ip_end;
    if ptr_at::<[u16; 2]>(ctx, p.l4()).is_none() {
        return Outcome::Pass(Reason::PassTruncated);
    }

    let old_inner = match inner_side {
        Side::Src => isrc,
        Side::Dst => idst,
    };
    let old_port = match inner_side {
        Side::Src => isport,
        Side::Dst => idport,
    };
    let mut d_addr = Delta::new();
    d_addr.addr(&old_inner, &new_inner, p.v6);
    let mut d_icmp = d_addr;
    d_icmp.u16(old_port, new_port);

    // Quoted address and port.
    if write_addr(ctx, il3 + addr_offset(p.v6, inner_side), &new_inner, p.v6).is_none() {
        return Outcome::Pass(Reason::PassTruncated);
    }
    let port_off = match inner_side {
        Side::Src => il4,
        Side::Dst => il4 + 2,
    };
    if let Some(pp) = ptr_at::<u16>(ctx, port_off) {
        // SAFETY: bounds checked by `ptr_at`.
        unsafe { *pp = new_port };
    }
    // Quoted IPv4 header checksum.
    if !p.v6
        && let Some((o, n)) = update_csum(ctx, il3 + 10, d_addr, false)
    {
        d_icmp.u16(o, n);
    }
    // Quoted L4 checksum, when quoted.
    if has_l4_csum {
        let mut d_l4 = d_addr;
        d_l4.u16(old_port, new_port);
        if let Some((o, n)) = update_csum(ctx, il4_csum, d_l4, iproto == PROTO_UDP && !p.v6) {
            d_icmp.u16(o, n);
        }
    }
    // Outer header.
    if let Some(side) = outer_side {
        let old = match side {
            Side::Src => p.src,
            Side::Dst => p.dst,
        };
        let mut d_outer = Delta::new();
        d_outer.addr(&old, &new_outer, p.v6);
        if write_addr(ctx, p.l3 + addr_offset(p.v6, side), &new_outer, p.v6).is_some() {
            if p.v6 {
                // ICMPv6 checksums cover the pseudo-header.
                d_icmp.merge(d_outer);
            } else {
                let _ = update_csum(ctx, p.l3 + 10, d_outer, false);
            }
            match side {
                Side::Src => p.src = new_outer,
                Side::Dst => p.dst = new_outer,
            }
        }
    }
    let _ = update_csum(ctx, p.l4() + 2, d_icmp, false);
    Outcome::Forward { vip_id, backend_id }
}

/// True when an IPv4 packet has Don't Fragment set.
#[inline(always)]
pub fn dont_fragment(ctx: &XdpContext, p: &Packet) -> bool {
    match ptr_at::<[u8; 2]>(ctx, p.l3 + 6) {
        // SAFETY: bounds checked by `ptr_at`.
        Some(f) => (unsafe { (*f)[0] } & 0x40) != 0,
        None => false,
    }
}

/// Sum of `N` 16-bit words of the packet at `off` (raw order), read in place.
#[inline(always)]
fn sum_packet<const N: usize>(ctx: &XdpContext, off: usize) -> Option<u32> {
    let w = ptr_at::<[u16; N]>(ctx, off)?;
    let mut s = 0u32;
    let mut i = 0;
    while i < N {
        // SAFETY: bounds checked by `ptr_at`.
        s += u32::from(unsafe { (*w)[i] });
        i += 1;
    }
    Some(s)
}

/// Copies `W` 32-bit words from `from` to `to` (non-overlapping) inside the packet, through
/// registers only (the program's stack is nearly full).
#[inline(always)]
fn copy_packet<const W: usize>(ctx: &XdpContext, from: usize, to: usize) -> Option<()> {
    let src = ptr_at::<[u32; W]>(ctx, from)?;
    let dst = ptr_at::<[u32; W]>(ctx, to)?;
    let mut i = 0;
    while i < W {
        // SAFETY: bounds checked by `ptr_at`.
        unsafe { (*dst)[i] = (*src)[i] };
        i += 1;
    }
    Some(())
}

/// Shrinks the frame to `l3 + 2 * quote` bytes, keeping its first `l3 + quote` bytes, then
/// moves the quote (the IP header and 8 bytes at `l3`) to `l3 + quote`, making room for the
/// new IP and ICMP headers, which are exactly `quote` bytes long too; swaps the MACs.
#[inline(always)]
fn make_room<const W: usize>(ctx: &XdpContext, l3: usize) -> Result<(), Outcome> {
    let quote = W * 4;
    let new_len = l3 + 2 * quote;
    let cur = ctx.data_end() - ctx.data();
    if cur < new_len {
        return Err(Outcome::Pass(Reason::PassFibFailed));
    }
    // SAFETY: helper call on the context; every packet pointer is re-derived afterwards.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len as i32 - cur as i32) } != 0 {
        return Err(Outcome::Pass(Reason::PassFibFailed));
    }
    copy_packet::<W>(ctx, l3, l3 + quote).ok_or(Outcome::Drop)?;
    let eth = ptr_at::<[u16; 6]>(ctx, 0).ok_or(Outcome::Drop)?;
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        let e = &mut *eth;
        let (a, b, c) = (e[0], e[1], e[2]);
        e[0] = e[3];
        e[1] = e[4];
        e[2] = e[5];
        e[3] = a;
        e[4] = b;
        e[5] = c;
    }
    Ok(())
}

/// Answers an IPv4 packet that is too big for the next hop (the FIB said FRAG_NEEDED and DF
/// is set) with ICMP "fragmentation needed" (type 3 code 4, next-hop `mtu`) to its source,
/// from `from` (the VIP), quoting the packet as received: IP header and 8 bytes. The kernel
/// cannot do this for us, since it only ever sees the translated packet, which the sender
/// would not recognise. The frame is rebuilt in place (`bpf_xdp_adjust_tail`, Linux 4.18+)
/// and sent back out the ingress interface.
#[inline(always)]
pub fn too_big_v4(ctx: &XdpContext, p: &Packet, from: u32, mtu: u16) -> Outcome {
    const QUOTE: usize = IPV4_HLEN + 8;
    let l3 = p.l3;
    let to = p.src[0];
    if let Err(o) = make_room::<{ QUOTE / 4 }>(ctx, l3) {
        return o;
    }
    let (Some(ip), Some(icmp)) = (
        ptr_at::<Ipv4Hdr>(ctx, l3),
        ptr_at::<[u16; 4]>(ctx, l3 + IPV4_HLEN),
    ) else {
        return Outcome::Drop;
    };
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        let h = &mut *ip;
        h.version_ihl = 0x45;
        h.tos = 0;
        h.tot_len = ((IPV4_HLEN + ICMP_HLEN + QUOTE) as u16).to_be();
        h.id = 0;
        h.frag_off = 0x4000u16.to_be(); // DF
        h.ttl = 64;
        h.proto = 1;
        h.check = 0;
        h.saddr = from;
        h.daddr = to;
        let m = &mut *icmp;
        m[0] = u16::from_ne_bytes([3, 4]);
        m[1] = 0;
        m[2] = 0;
        m[3] = mtu.to_be();
    }
    // One step at a time, each with its own early return: the verifier must never see a
    // sum computed from a failed read.
    let Some(s_ip) = sum_packet::<{ IPV4_HLEN / 2 }>(ctx, l3) else {
        return Outcome::Drop;
    };
    if update_field(ctx, l3 + 10, csum::finish(s_ip)).is_none() {
        return Outcome::Drop;
    }
    let Some(s_icmp) = sum_packet::<{ (ICMP_HLEN + QUOTE) / 2 }>(ctx, l3 + IPV4_HLEN) else {
        return Outcome::Drop;
    };
    if update_field(ctx, l3 + IPV4_HLEN + 2, csum::finish(s_icmp)).is_none() {
        return Outcome::Drop;
    }
    Outcome::Sent(xdp_action::XDP_TX)
}

/// IPv6 counterpart of [`too_big_v4`]: ICMPv6 "packet too big" (type 2, `mtu`) to the
/// packet's source, from `from` (the VIP), quoting its IPv6 header and 8 bytes (enough for
/// the sender to find its socket). IPv6 routers never fragment, so this is sent whenever
/// the next hop's MTU is too small.
#[inline(always)]
pub fn too_big_v6(ctx: &XdpContext, p: &Packet, from: &[u32; 4], mtu: u16) -> Outcome {
    const QUOTE: usize = IPV6_HLEN + 8;
    let l3 = p.l3;
    let to = p.src;
    if let Err(o) = make_room::<{ QUOTE / 4 }>(ctx, l3) {
        return o;
    }
    let plen = (ICMP_HLEN + QUOTE) as u16;
    let (Some(ip), Some(icmp)) = (
        ptr_at::<Ipv6Hdr>(ctx, l3),
        ptr_at::<[u16; 4]>(ctx, l3 + IPV6_HLEN),
    ) else {
        return Outcome::Drop;
    };
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        let h = &mut *ip;
        h.vtc_flow = 0x6000_0000u32.to_be();
        h.payload_len = plen.to_be();
        h.nexthdr = PROTO_ICMPV6;
        h.hop_limit = 64;
        h.saddr = *from;
        h.daddr = to;
        let m = &mut *icmp;
        m[0] = u16::from_ne_bytes([2, 0]);
        m[1] = 0;
        m[2] = 0;
        m[3] = mtu.to_be();
    }
    // Pseudo-header: both addresses (in the new header), length and next header.
    let pseudo = u32::from(plen.to_be()) + u32::from(u16::from_ne_bytes([0, PROTO_ICMPV6]));
    let Some(s_addrs) = sum_packet::<16>(ctx, l3 + 8) else {
        return Outcome::Drop;
    };
    let Some(s_icmp) = sum_packet::<{ (ICMP_HLEN + QUOTE) / 2 }>(ctx, l3 + IPV6_HLEN) else {
        return Outcome::Drop;
    };
    let c = csum::finish(s_addrs + pseudo + s_icmp);
    if update_field(ctx, l3 + IPV6_HLEN + 2, c).is_none() {
        return Outcome::Drop;
    }
    Outcome::Sent(xdp_action::XDP_TX)
}

/// Writes a raw 16-bit value at `off`.
#[inline(always)]
fn update_field(ctx: &XdpContext, off: usize, v: u16) -> Option<()> {
    let f = ptr_at::<u16>(ctx, off)?;
    // SAFETY: bounds checked by `ptr_at`.
    unsafe { *f = v };
    Some(())
}
