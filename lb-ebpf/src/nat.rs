//! Address and port rewriting with incremental checksum updates (IPv4 header, TCP, UDP
//! including the IPv4 zero-checksum case, and the IPv6 pseudo-header).

use aya_ebpf::programs::XdpContext;
use lb_common::types::{PROTO_TCP, PROTO_UDP};

use crate::csum::{self, Delta};
use crate::parse::{Packet, TCP_CSUM_OFF, UDP_CSUM_OFF, ptr_at};

/// Which end of the packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// Offset of the source or destination address from the start of the IP header.
#[inline(always)]
pub fn addr_offset(v6: bool, side: Side) -> usize {
    match (v6, side) {
        (false, Side::Src) => 12,
        (false, Side::Dst) => 16,
        (true, Side::Src) => 8,
        (true, Side::Dst) => 24,
    }
}

/// Writes an address (4 or 16 bytes) at `off`. `None` if out of bounds.
#[inline(always)]
pub fn write_addr(ctx: &XdpContext, off: usize, addr: &[u32; 4], v6: bool) -> Option<()> {
    if v6 {
        let a: *mut [u32; 4] = ptr_at(ctx, off)?;
        // SAFETY: bounds checked by `ptr_at`.
        unsafe { *a = *addr };
    } else {
        let a: *mut u32 = ptr_at(ctx, off)?;
        // SAFETY: bounds checked by `ptr_at`.
        unsafe { *a = addr[0] };
    }
    Some(())
}

/// Updates the 16-bit checksum at `off` for delta `d`; `udp4` selects the IPv4 UDP rule
/// (zero stays zero). Returns the (old, new) checksum for callers that fold the change into
/// an enclosing checksum (ICMP), or `None` when out of bounds.
#[inline(always)]
pub fn update_csum(ctx: &XdpContext, off: usize, d: Delta, udp4: bool) -> Option<(u16, u16)> {
    let c: *mut u16 = ptr_at(ctx, off)?;
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        let old = *c;
        let new = if udp4 {
            csum::apply_udp4(old, d)
        } else {
            csum::apply(old, d)
        };
        *c = new;
        Some((old, new))
    }
}

/// Rewrites the source or destination address and port of a parsed TCP/UDP packet, keeping
/// every checksum valid, and updates `p` to match. `None` (nothing written) when the packet
/// is not TCP/UDP or a header is out of bounds.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    p: &mut Packet,
    side: Side,
    addr: &[u32; 4],
    port: u16,
) -> Option<()> {
    let (old_addr, old_port) = match side {
        Side::Src => (p.src, p.sport),
        Side::Dst => (p.dst, p.dport),
    };
    let csum_off = match p.proto {
        PROTO_TCP => p.l4() + TCP_CSUM_OFF,
        PROTO_UDP => p.l4() + UDP_CSUM_OFF,
        _ => return None,
    };
    // Check every bound before the first write, so a failure leaves the packet untouched.
    ptr_at::<u16>(ctx, csum_off)?;
    ptr_at::<[u16; 2]>(ctx, p.l4())?;
    if p.v6 {
        ptr_at::<[u32; 10]>(ctx, p.l3)?;
    } else {
        ptr_at::<[u32; 5]>(ctx, p.l3)?;
    }

    let mut d_addr = Delta::new();
    d_addr.addr(&old_addr, addr, p.v6);
    write_addr(ctx, p.l3 + addr_offset(p.v6, side), addr, p.v6)?;
    if !p.v6 {
        update_csum(ctx, p.l3 + 10, d_addr, false)?;
    }

    let port_off = match side {
        Side::Src => p.l4(),
        Side::Dst => p.l4() + 2,
    };
    let pp: *mut u16 = ptr_at(ctx, port_off)?;
    // SAFETY: bounds checked by `ptr_at`.
    unsafe { *pp = port };
    let mut d_l4 = d_addr;
    d_l4.u16(old_port, port);
    update_csum(ctx, csum_off, d_l4, p.proto == PROTO_UDP && !p.v6)?;

    match side {
        Side::Src => {
            p.src = *addr;
            p.sport = port;
        }
        Side::Dst => {
            p.dst = *addr;
            p.dport = port;
        }
    }
    Some(())
}
