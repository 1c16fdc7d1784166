//! Sending a rewritten packet on: `bpf_fib_lookup` (Linux 4.18+; forwarding must be enabled
//! on the ingress interface), TTL / hop-limit decrement, MAC rewrite, then `XDP_TX` when
//! the egress is the ingress interface, else a redirect through `LB_TX_PORTS` (a
//! `DEVMAP_HASH`, Linux 5.4+). When the neighbour is unknown the packet goes to the kernel,
//! which resolves it and forwards the already rewritten packet.

use aya_ebpf::bindings::{
    BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    bpf_fib_lookup as FibParams, xdp_action,
};
use aya_ebpf::helpers::generated::{bpf_fib_lookup, bpf_redirect};
use aya_ebpf::programs::XdpContext;
use lb_common::types::Reason;

use crate::csum::Delta;
use crate::maps::LB_TX_PORTS;
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

/// Routes and transmits `p`; returns the XDP action (counted by reason).
#[inline(always)]
pub fn forward(ctx: &XdpContext, p: &Packet) -> u32 {
    match lookup(ctx, p) {
        Ok(route) => transmit(ctx, p, &route),
        Err(action) => action,
    }
}

/// Looks up the next hop of `p` as it will leave: `p` carries the translated addresses
/// (the packet itself may still hold the original ones). `Err(action)` when the packet ends
/// here (TTL exhausted, truncated), already counted.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, p: &Packet) -> Result<Route, u32> {
    // SAFETY: all-zero is a valid `bpf_fib_lookup` (plain integers and unions of them).
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.l4_protocol = p.proto;
    params.sport = p.sport;
    params.dport = p.dport;
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
        params.__bindgen_anon_2.flowinfo = h.vtc_flow & u32::to_be(0x0fff_ffff);
        params.__bindgen_anon_3.ipv6_src = p.src;
        params.__bindgen_anon_4.ipv6_dst = p.dst;
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
        params.__bindgen_anon_2.tos = h.tos;
        params.__bindgen_anon_3.ipv4_src = p.src[0];
        params.__bindgen_anon_4.ipv4_dst = p.dst[0];
    }
    // SAFETY: helper call with the context and a stack buffer of the declared size.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    Ok(Route {
        rc,
        params,
        ingress,
    })
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
            m[..6].copy_from_slice(&params.dmac);
            m[6..].copy_from_slice(&params.smac);
        }
    }
    if params.ifindex == ingress {
        count_reason(Reason::ForwardTx);
        return xdp_action::XDP_TX;
    }
    count_reason(Reason::ForwardRedirect);
    match LB_TX_PORTS.redirect(params.ifindex, 0) {
        Ok(action) => action,
        // Not registered as a tx port: plain redirect by ifindex.
        // SAFETY: helper call with plain integers.
        Err(_) => unsafe { bpf_redirect(params.ifindex, 0) as u32 },
    }
}
