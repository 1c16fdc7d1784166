//! Sending a rewritten packet on: `bpf_fib_lookup` (Linux 4.18+; forwarding must be enabled
//! on the ingress interface), TTL / hop-limit decrement, MAC rewrite, then `XDP_TX` when
//! the egress is the ingress interface, else a redirect through `LB_TX_PORTS` (a
//! `DEVMAP_HASH`, Linux 5.4+). When the neighbour is unknown the packet goes to the kernel,
//! which resolves it and forwards the already rewritten packet.
//!
//! Established flows skip the lookup: their flow entry caches the answer (egress ifindex,
//! MACs) per next-hop generation, valid while userspace's lease on `LB_NH_GEN` holds (see
//! `NextHop`); `bpf_ktime_get_coarse_ns` (Linux 5.11+) checks the lease. Replies cache
//! theirs per (client, VIP) in `LB_REPLY_HOPS`.

use aya_ebpf::bindings::{
    BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    bpf_fib_lookup as FibParams, xdp_action,
};
use aya_ebpf::helpers::generated::{bpf_fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect};
use aya_ebpf::programs::XdpContext;
use lb_common::types::{NextHop, Reason};

use crate::csum::Delta;
use crate::maps::{LB_NH_GEN, LB_TX_PORTS};
use crate::nat::update_csum;
use crate::parse::{Ipv4Hdr, Ipv6Hdr, Packet, ptr_at};
use crate::stats::count_reason;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The FIB's answer for a packet.
pub struct Route {
    pub rc: i64,
    pub params: FibParams,
    pub ingress: u32,
    /// IPv4 TOS byte or IPv6 flow info the lookup was made with.
    pub tos: u32,
}

/// The current next-hop generation; 0 when the cache is off (no watcher ever ran, or its
/// lease expired).
#[inline(always)]
pub fn generation() -> u32 {
    let Some(lease) = LB_NH_GEN.get(0) else {
        return 0;
    };
    if lease.generation == 0 {
        return 0;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now > lease.expires_ns {
        return 0;
    }
    lease.generation
}

/// The TTL / hop limit is above 1 and the TOS (IPv4) or flow info (IPv6) of `p`: what
/// the cache must match. `None` when the header is truncated or the packet would expire.
#[inline(always)]
fn ttl_and_tos(ctx: &XdpContext, p: &Packet) -> Option<u32> {
    if p.v6 {
        let h = ptr_at::<Ipv6Hdr>(ctx, p.l3)?;
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        if h.hop_limit <= 1 {
            return None;
        }
        Some(h.vtc_flow & u32::to_be(0x0fff_ffff))
    } else {
        let h = ptr_at::<Ipv4Hdr>(ctx, p.l3)?;
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        if h.ttl <= 1 {
            return None;
        }
        Some(u32::from(h.tos))
    }
}

/// True when the cached next hop `hop` is valid for `p` in generation `cur` (non-zero)
/// and the packet does not expire here; otherwise the caller does the full lookup. The
/// hop is read in place (no copy on the small BPF stack).
#[inline(always)]
pub fn cached(ctx: &XdpContext, p: &Packet, hop: *mut NextHop, cur: u32) -> bool {
    // SAFETY: `hop` points into a map value from a successful lookup.
    let h = unsafe { &*hop };
    // SAFETY: as above; a volatile read so the generation is checked before the fields.
    if cur == 0 || unsafe { core::ptr::read_volatile(&h.generation) } != cur {
        return false;
    }
    // SAFETY: reading the ingress ifindex from the context.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if h.ingress != ingress || p.ip_len > h.max_len {
        return false;
    }
    ttl_and_tos(ctx, p) == Some(h.tos)
}

/// Sends `p` (already rewritten) to the cached next hop `hop` (see [`cached`]).
#[inline(always)]
pub fn send_cached(ctx: &XdpContext, p: &Packet, hop: *mut NextHop) -> u32 {
    // SAFETY: `hop` points into a map value from a successful lookup.
    let h = unsafe { &*hop };
    send(ctx, p, &h.dmac, &h.smac, h.ifindex, h.ingress)
}

/// Records a successful lookup for `p` in `hop` (generation `cur`, non-zero).
#[inline(always)]
pub fn remember(hop: *mut NextHop, cur: u32, route: &Route, ip_len: u32) {
    if cur == 0 || route.rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return;
    }
    // SAFETY: `hop` points into a map value from a successful lookup. The generation is
    // cleared first and set last (volatile), so a reader on another CPU sees either the
    // old generation with old fields… or a mismatch, never a mix it trusts (x86 keeps
    // store order; elsewhere the worst case is one misdirected packet).
    unsafe {
        let h = &mut *hop;
        // Same generation and interfaces: the route that accepted the bigger packet is
        // still this one (a next-hop change comes with a new generation).
        let same = h.generation == cur
            && h.ingress == route.ingress
            && h.tos == route.tos
            && h.ifindex == route.params.ifindex;
        let max = if same && h.max_len > ip_len {
            h.max_len
        } else {
            ip_len
        };
        core::ptr::write_volatile(&mut h.generation, 0);
        h.ingress = route.ingress;
        h.ifindex = route.params.ifindex;
        h.max_len = max;
        h.tos = route.tos;
        h.dmac = route.params.dmac;
        h.smac = route.params.smac;
        core::ptr::write_volatile(&mut h.generation, cur);
    }
}

/// A new cache entry for a successful lookup (generation `cur`, non-zero); `None` when
/// there is nothing to cache.
#[inline(always)]
pub fn hop_of(cur: u32, route: &Route, ip_len: u32) -> Option<NextHop> {
    if cur == 0 || route.rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return None;
    }
    Some(NextHop {
        generation: cur,
        ingress: route.ingress,
        ifindex: route.params.ifindex,
        max_len: ip_len,
        tos: route.tos,
        dmac: route.params.dmac,
        smac: route.params.smac,
    })
}

impl Route {
    /// The egress MTU when the packet is too big for it.
    #[inline(always)]
    pub fn frag_needed(&self) -> Option<u16> {
        if self.rc == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) {
            // SAFETY: the kernel fills `mtu_result` on FRAG_NEEDED.
            Some(unsafe { self.params.__bindgen_anon_1.mtu_result })
        } else {
            None
        }
    }
}

/// Routes and transmits `p`; returns the XDP action (counted by reason). A separate BPF
/// function (used by the ICMP path only), see `icmp::handle`.
#[inline(never)]
pub fn forward(ctx: &XdpContext, p: &Packet) -> u32 {
    match lookup(ctx, p, &p.src, p.sport, &p.dst, p.dport) {
        Ok(route) => transmit(ctx, p, &route),
        Err(action) => action,
    }
}

/// Looks up the next hop of `p` as it will leave, with the translated endpoints `src`,
/// `sport`, `dst`, `dport` (the packet itself may still hold the original ones; passing
/// them spares a copy of the packet on the BPF stack). `Err(action)` when the packet ends
/// here (TTL exhausted, truncated), already counted.
#[inline(always)]
pub fn lookup(
    ctx: &XdpContext,
    p: &Packet,
    src: &[u32; 4],
    sport: u16,
    dst: &[u32; 4],
    dport: u16,
) -> Result<Route, u32> {
    let mut params = core::mem::MaybeUninit::<FibParams>::uninit();
    zero_words(params.as_mut_ptr());
    // SAFETY: all-zero (just written) is a valid `bpf_fib_lookup`: plain integers and
    // unions of them.
    let params = unsafe { params.assume_init_mut() };
    let tos;
    params.l4_protocol = p.proto;
    params.sport = sport;
    params.dport = dport;
    // SAFETY: reading the ingress ifindex from the context.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    params.ifindex = ingress;
    if p.v6 {
        let Some(h) = ptr_at::<Ipv6Hdr>(ctx, p.l3) else {
            count_reason(Reason::PassTruncated);
            return Err(xdp_action::XDP_PASS);
        };
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        if h.hop_limit <= 1 {
            count_reason(Reason::DropTtlExceeded);
            return Err(xdp_action::XDP_DROP);
        }
        params.family = AF_INET6;
        params.__bindgen_anon_1.tot_len = (p.ip_len - 40) as u16;
        tos = h.vtc_flow & u32::to_be(0x0fff_ffff);
        params.__bindgen_anon_2.flowinfo = tos;
        params.__bindgen_anon_3.ipv6_src = *src;
        params.__bindgen_anon_4.ipv6_dst = *dst;
    } else {
        let Some(h) = ptr_at::<Ipv4Hdr>(ctx, p.l3) else {
            count_reason(Reason::PassTruncated);
            return Err(xdp_action::XDP_PASS);
        };
        // SAFETY: bounds checked by `ptr_at`.
        let h = unsafe { &*h };
        if h.ttl <= 1 {
            count_reason(Reason::DropTtlExceeded);
            return Err(xdp_action::XDP_DROP);
        }
        params.family = AF_INET;
        params.__bindgen_anon_1.tot_len = p.ip_len as u16;
        tos = u32::from(h.tos);
        params.__bindgen_anon_2.tos = h.tos;
        params.__bindgen_anon_3.ipv4_src = src[0];
        params.__bindgen_anon_4.ipv4_dst = dst[0];
    }
    // SAFETY: helper call with the context and a stack buffer of the declared size.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    Ok(Route {
        rc,
        params: *params,
        ingress,
        tos,
    })
}

/// Zeroes `*v` with 32-bit volatile stores. `mem::zeroed` compiles to a `memset` call,
/// which this target runs as a byte loop in a BPF-to-BPF call (64 iterations for a
/// `bpf_fib_lookup`), and the compiler merges plain zero stores back into one.
#[inline(always)]
fn zero_words<T>(v: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(4) && align_of::<T>() >= 4) };
    let w = v.cast::<u32>();
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: in bounds of `*v` (size checked above), aligned for `u32`.
        unsafe { w.add(i).write_volatile(0) };
        i += 1;
    }
}

/// Sends the (rewritten) packet `p` along `route`: TTL / hop limit, MACs, `XDP_TX` or
/// redirect; the kernel gets it when the neighbour is unknown or the FIB said no.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, p: &Packet, route: &Route) -> u32 {
    let rc = route.rc;
    let params = &route.params;
    let ingress = route.ingress;
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        count_reason(Reason::PassNoNeighbour);
        return xdp_action::XDP_PASS;
    }
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        count_reason(Reason::PassFibFailed);
        return xdp_action::XDP_PASS;
    }
    send(ctx, p, &params.dmac, &params.smac, params.ifindex, ingress)
}

/// Sends the (rewritten) packet `p` to a resolved next hop: TTL / hop limit, MACs, then
/// `XDP_TX` when `ifindex` is the ingress interface, else a redirect.
#[inline(always)]
pub fn send(
    ctx: &XdpContext,
    p: &Packet,
    dmac: &[u8; 6],
    smac: &[u8; 6],
    ifindex: u32,
    ingress: u32,
) -> u32 {
    if p.v6 {
        if let Some(hl) = ptr_at::<u8>(ctx, p.l3 + 7) {
            // SAFETY: bounds checked by `ptr_at`.
            unsafe { *hl -= 1 };
        }
    } else if let Some(w) = ptr_at::<u16>(ctx, p.l3 + 8) {
        // The TTL shares a 16-bit word with the protocol.
        // SAFETY: bounds checked by `ptr_at`.
        unsafe {
            let old = *w;
            let mut b = old.to_ne_bytes();
            b[0] -= 1;
            let new = u16::from_ne_bytes(b);
            *w = new;
            let mut d = Delta::new();
            d.u16(old, new);
            let _ = update_csum(ctx, p.l3 + 10, d, false);
        }
    }
    if let Some(macs) = ptr_at::<[u8; 12]>(ctx, 0) {
        // SAFETY: bounds checked by `ptr_at`.
        unsafe {
            let m = &mut *macs;
            m[..6].copy_from_slice(dmac);
            m[6..].copy_from_slice(smac);
        }
    }
    if ifindex == ingress {
        count_reason(Reason::ForwardTx);
        return xdp_action::XDP_TX;
    }
    count_reason(Reason::ForwardRedirect);
    match LB_TX_PORTS.redirect(ifindex, 0) {
        Ok(action) => action,
        // Not registered as a tx port: plain redirect by ifindex.
        // SAFETY: helper call with plain integers.
        Err(_) => unsafe { bpf_redirect(ifindex, 0) as u32 },
    }
}
