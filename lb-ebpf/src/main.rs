//! The lb XDP data path.
//!
//! Kernel requirements: XDP (native on the NIC driver, or generic), BTF, LPM tries,
//! LRU hashes, `bpf_fib_lookup` (Linux 4.18+), `DEVMAP_HASH` (Linux 5.4+) and
//! `bpf_ktime_get_coarse_ns` (Linux 5.11+, the next-hop cache's lease); forwarding
//! (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`) enabled on the balancer.
//! Loaded and attached by `lb run`; maps are pinned under bpffs by the loader.
//!
//! Modules are split by concern, as in Katran: [`maps`], [`parse`], [`csum`], [`filter`],
//! [`flow`] (conntrack and Maglev pick), [`second_chance`] (GLB Director's previous
//! backend per bucket), [`nat`], [`icmp`], [`forward`], [`stats`].
#![no_std]
#![no_main]

mod bench;
mod csum;
mod filter;
mod flow;
mod forward;
mod icmp;
mod maps;
mod nat;
mod parse;
mod second_chance;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::types::{
    FlowValue, LocalAddrKey, Reason, ReplyHopKey, ReverseKey, ReverseValue, VipInfo,
};

use crate::maps::{LB_LOCAL_ADDRS, LB_REPLY_HOPS, LB_REVERSE, LB_VIP_PORTS, LB_VIP_SLOTS, LB_VIPS};
use crate::nat::Side;
use crate::parse::{PROTO_ICMP, PROTO_ICMPV6, Packet};
use crate::stats::{count_reason, count_traffic};

#[inline(always)]
fn pass(reason: Reason) -> u32 {
    count_reason(reason);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn drop(reason: Reason) -> u32 {
    count_reason(reason);
    xdp_action::XDP_DROP
}

#[inline(always)]
fn is_local(addr: &[u32; 4], family: u8) -> bool {
    let key = LocalAddrKey {
        addr: *addr,
        family,
        _pad: [0; 3],
    };
    LB_LOCAL_ADDRS.get_ptr(key).is_some()
}

/// The balancer program. Packets it does not balance go to the kernel untouched.
#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    balance_packet(&ctx)
}

/// What [`lb_xdp`] does to one packet (also run by the bench generator in [`bench`]).
#[inline(always)]
fn balance_packet(ctx: &XdpContext) -> u32 {
    let Some(eth) = parse::ethernet(ctx) else {
        return pass(Reason::PassTruncated);
    };
    // Tagged frames go to the kernel untouched: redirected out of another interface they
    // would keep a tag that means nothing there (lb attached to the VLAN interface sees
    // them untagged, and balances them).
    if eth.offset_l3 != parse::ETH_HLEN {
        return pass(Reason::PassVlan);
    }
    let mut p = match parse::ip(ctx, &eth) {
        Ok(p) => p,
        Err(reason @ (Reason::DropBadIpChecksum | Reason::DropBadUdpLength)) => {
            return drop(reason);
        }
        Err(reason) => return pass(reason),
    };
    if p.proto == PROTO_ICMP || p.proto == PROTO_ICMPV6 {
        if let Some(action) = screen(&p) {
            return action;
        }
        return icmp_packet(ctx, &mut p);
    }
    l4_packet(ctx, &mut p)
}

/// Packets from the balancer's own addresses pass; globally denied sources drop. `None`
/// when the packet goes on.
#[inline(never)]
fn screen(p: &Packet) -> Option<u32> {
    if is_local(&p.src, p.family) {
        return Some(pass(Reason::PassLocal));
    }
    if filter::globally_denied_now(p) {
        return Some(drop(Reason::DropDenied));
    }
    None
}

/// TCP / UDP: to a VIP (balance), from a backend (reverse NAT), or not ours.
///
/// A packet to a port some VIP uses is first looked up in the flow table: an established
/// flow names its VIP by id, and `LB_VIP_SLOTS[id]` (an array slot, no hash lookup) gives
/// the VIP's settings once its key is checked against the packet, so a removed VIP (slot
/// cleared) or a reused id (another key) falls back to `LB_VIPS`.
#[inline(never)]
fn l4_packet(ctx: &XdpContext, p: &mut Packet) -> u32 {
    let vip_port = maybe_vip_port(p.dport);
    let mut entry = core::ptr::null_mut();
    if vip_port {
        entry = flow::entry_of(p);
        // Only a flow whose backend still takes it: a re-pick (backend DOWN) reads the
        // VIP's table settings from `LB_VIPS`, whose entries are replaced atomically (a
        // slot is rewritten in place).
        if flow::usable(entry, p).is_some()
            && let Some(vip) = slot_vip(p, entry)
        {
            return balance(ctx, p, vip, entry);
        }
    }
    if let Some(vip) = LB_VIPS.get_ptr(parse::vip_key(p)) {
        if !vip_port {
            entry = flow::entry_of(p);
        }
        // SAFETY: map value pointer from a successful lookup (no copy on the stack).
        return balance(ctx, p, unsafe { &*vip }, entry);
    }
    let mut verdict = 0;
    match not_vip(p, &mut verdict) {
        Some(rv) => reverse(ctx, p, rv),
        None => verdict,
    }
}

/// True when some VIP may use destination port `port` (network order); see `LB_VIP_PORTS`.
#[inline(always)]
fn maybe_vip_port(port: u16) -> bool {
    let port = u32::from(u16::from_be(port));
    match LB_VIP_PORTS.get(port >> 5) {
        Some(w) => w & (1 << (port & 31)) != 0,
        None => false,
    }
}

/// The settings of the VIP flow `entry` (non-null) was recorded for, when that VIP still
/// exists and is the packet's destination.
#[inline(always)]
fn slot_vip(p: &Packet, entry: *mut FlowValue) -> Option<&'static VipInfo> {
    // SAFETY: flow-table value pointer from a successful lookup.
    let id = unsafe { (*entry).vip_id };
    let slot = LB_VIP_SLOTS.get(id)?;
    let k = &slot.key;
    if k.addr == p.dst && k.port == p.dport && k.proto == p.proto && k.family == p.family {
        Some(&slot.info)
    } else {
        None
    }
}

/// TCP / UDP not to a VIP: a backend's reply to a balanced flow (its VIP, for
/// [`reverse`]) or not ours (`None`, the verdict in `verdict`). A separate frame from
/// [`l4_packet`] so the key below does not sit under the balancing path's stack, and
/// returning rather than calling [`reverse`] so that frame is not under the reverse path's
/// either: the chain `lb_xdp → l4_packet → not_vip → reverse` exceeded the verifier's
/// 512-byte bound. Not a `Result`: an enum of a pointer and a verdict reaches the verifier
/// as a plain scalar, which it refuses to dereference.
#[inline(never)]
fn not_vip(p: &mut Packet, verdict: &mut u32) -> Option<&'static ReverseValue> {
    if let Some(action) = screen(p) {
        *verdict = action;
        return None;
    }
    let rkey = ReverseKey {
        addr: p.src,
        port: p.sport,
        proto: p.proto,
        family: p.family,
    };
    if let Some(rv) = LB_REVERSE.get_ptr(rkey) {
        // SAFETY: map value pointer from a successful lookup (no copy on the stack).
        let rv = flow::reply_vip(
            unsafe { &*rv },
            &p.src,
            p.sport,
            &p.dst,
            p.dport,
            p.proto,
            p.family,
        );
        // Checked here, not in `reverse`: the call chains stay within the stack bound.
        if rv.family != p.family || !flow::balanced_reply(p, rv) {
            // Health-check answers to the balancer itself are counted as local.
            *verdict = if is_local(&p.dst, p.family) {
                pass(Reason::PassLocal)
            } else {
                pass(Reason::PassNotBalanced)
            };
            return None;
        }
        return Some(rv);
    }
    flow::record_direct(p);
    *verdict = pass(Reason::PassNotBalanced);
    None
}

// The paths above and below are separate BPF functions (`inline(never)`): the verifier
// bounds the *combined* stack of a call chain by 512 bytes, and each chain fits where
// everything inlined into `lb_xdp` did not.

/// Reverse direction: a backend's reply to a balanced flow ([`flow::balanced_reply`],
/// checked by the caller), translated back to its VIP `rv`. The next hop towards
/// the client comes from `LB_REPLY_HOPS` when it was cached in the current generation
/// (same rules as a flow's cache), else from the FIB, and is then cached. Replies to the
/// balancer's own addresses pass.
#[inline(never)]
fn reverse(ctx: &XdpContext, p: &mut Packet, rv: &'static ReverseValue) -> u32 {
    let nh_gen = forward::generation();
    let hop = if nh_gen != 0 {
        LB_REPLY_HOPS.get_ptr_mut(reply_hop_key(p, rv.vip_id))
    } else {
        None
    };
    if let Some(h) = hop
        && forward::cached(ctx, p, h, nh_gen)
    {
        if nat::rewrite(ctx, p, Side::Src, &rv.vip_addr, rv.vip_port).is_none() {
            return pass(Reason::PassTruncated);
        }
        count_reason(Reason::ReverseNat);
        count_traffic(rv.vip_id, rv.backend_id, u64::from(p.ip_len), false);
        return forward::send_cached(ctx, p, h);
    }
    // Replies to the balancer's own addresses (health checks) stay with the kernel. A
    // cached hop implies this check passed for this client in this generation (an address
    // change moves the generation on), so only this path makes it.
    if is_local(&p.dst, p.family) {
        return pass(Reason::PassLocal);
    }
    let route = match forward::lookup(ctx, p, &rv.vip_addr, rv.vip_port, &p.dst, p.dport) {
        Ok(route) => route,
        Err(action) => return action,
    };
    if let Some(mtu) = route.frag_needed()
        && (p.v6 || icmp::dont_fragment(ctx, p))
    {
        return too_big(ctx, p, &rv.vip_addr, mtu);
    }
    match hop {
        Some(h) => forward::remember(h, nh_gen, &route, p.ip_len),
        None => {
            if let Some(nh) = forward::hop_of(nh_gen, &route, p.ip_len) {
                // A full LRU evicts the oldest entry; a failed insert costs a lookup.
                let _ = LB_REPLY_HOPS.insert(reply_hop_key(p, rv.vip_id), nh, 0);
            }
        }
    }
    if nat::rewrite(ctx, p, Side::Src, &rv.vip_addr, rv.vip_port).is_none() {
        return pass(Reason::PassTruncated);
    }
    count_reason(Reason::ReverseNat);
    count_traffic(rv.vip_id, rv.backend_id, u64::from(p.ip_len), false);
    forward::transmit(ctx, p, &route)
}

/// The reverse next-hop cache key of reply `p` from VIP `vip_id`.
#[inline(always)]
fn reply_hop_key(p: &Packet, vip_id: u32) -> ReplyHopKey {
    ReplyHopKey {
        client: p.dst,
        vip_id,
        family: u32::from(p.family),
    }
}

/// ICMP / ICMPv6: errors about balanced flows are translated, the rest (errors about a
/// client's direct flow to a backend included) passes. Inlined:
/// its parts with big frames ([`icmp::handle`], [`forward::forward`]) are functions of
/// their own.
#[inline(always)]
fn icmp_packet(ctx: &XdpContext, p: &mut Packet) -> u32 {
    if is_local(&p.dst, p.family) {
        return pass(Reason::PassLocal);
    }
    if icmp::about_unbalanced(ctx, p) {
        return pass(Reason::PassNotBalanced);
    }
    match icmp::handle(ctx, p) {
        icmp::Outcome::Forward { vip_id, backend_id } => {
            count_reason(Reason::IcmpTranslated);
            count_traffic(vip_id, backend_id, u64::from(p.ip_len), false);
            forward::forward(ctx, p)
        }
        icmp::Outcome::Pass(reason) => pass(reason),
        icmp::Outcome::Sent(action) => action,
        icmp::Outcome::Drop => xdp_action::XDP_DROP,
    }
}

/// Forward direction: filter, pick, DNAT, forward. `entry`: the packet's flow entry
/// (null when it has none).
#[inline(never)]
fn balance(ctx: &XdpContext, p: &mut Packet, vip: &VipInfo, entry: *mut FlowValue) -> u32 {
    let tracked = flow::usable(entry, p);
    // Established flow whose next hop is cached for the current generation: no FIB
    // lookup, and no local-source check either: the cache was filled by the full path
    // below, which checked the source in this generation, and any address change on the
    // host (rtnetlink, or a `LB_LOCAL_ADDRS` rewrite) moves the generation on. The source
    // filters run again (rules may have been added since).
    let nh_gen = forward::generation();
    if let Some(t) = tracked
        && forward::cached(ctx, p, flow::hop(t.entry), nh_gen)
    {
        if filter::globally_denied_now(p) || filter::vip_denied(p, vip) {
            return drop(Reason::DropDenied);
        }
        let b = t.backend;
        if nat::rewrite(ctx, p, Side::Dst, &b.addr, b.port).is_none() {
            return pass(Reason::PassTruncated);
        }
        count_traffic(vip.vip_id, t.backend_id, u64::from(p.ip_len), false);
        return forward::send_cached(ctx, p, flow::hop(t.entry));
    }
    if let Some(action) = screen(p) {
        return action;
    }
    if filter::vip_denied(p, vip) {
        return drop(Reason::DropDenied);
    }
    let choice = match tracked {
        Some(t) => flow::Choice {
            backend_id: t.backend_id,
            backend: t.backend,
            new_flow: false,
            entry: t.entry,
        },
        None => match flow::pick(p, vip) {
            Some(c) => c,
            None => return drop(Reason::DropNoBackend),
        },
    };
    let b = choice.backend;
    if b.family != p.family {
        return drop(Reason::DropNoBackend);
    }
    let entry = choice.entry;
    // A new flow: the backend's cached next hop, when valid for this packet, spares the
    // FIB lookup (as an established flow's does); the flow entry gets a copy of it.
    let bhop = if choice.new_flow {
        if p.proto == lb_common::types::PROTO_TCP && p.tcp_flags & parse::TCP_SYN == 0 {
            stats::count_miss(vip.vip_id);
        }
        flow::backend_hop(choice.backend_id)
    } else {
        core::ptr::null_mut()
    };
    if !bhop.is_null() && forward::cached(ctx, p, bhop, nh_gen) {
        flow::track(p, vip, &choice, bhop, nh_gen);
        if nat::rewrite(ctx, p, Side::Dst, &b.addr, b.port).is_none() {
            return pass(Reason::PassTruncated);
        }
        count_traffic(vip.vip_id, choice.backend_id, u64::from(p.ip_len), true);
        return forward::send_cached(ctx, p, bhop);
    }
    let route = match forward::lookup(ctx, p, &p.src, p.sport, &b.addr, b.port) {
        Ok(route) => route,
        Err(action) => return action,
    };
    if !entry.is_null() {
        forward::remember(flow::hop(entry), nh_gen, &route, p.ip_len);
    } else if choice.new_flow {
        if !bhop.is_null() {
            forward::remember(bhop, nh_gen, &route, p.ip_len);
        }
        flow::track(p, vip, &choice, bhop, nh_gen);
    }
    if let Some(mtu) = route.frag_needed()
        && (p.v6 || icmp::dont_fragment(ctx, p))
    {
        return too_big(ctx, p, &p.dst, mtu);
    }
    if nat::rewrite(ctx, p, Side::Dst, &b.addr, b.port).is_none() {
        return pass(Reason::PassTruncated);
    }
    count_traffic(
        vip.vip_id,
        choice.backend_id,
        u64::from(p.ip_len),
        choice.new_flow,
    );
    forward::transmit(ctx, p, &route)
}

/// Sends ICMP "fragmentation needed" / ICMPv6 "packet too big" back, from `from`, for a
/// packet too big for the next hop.
#[inline(always)]
fn too_big(ctx: &XdpContext, p: &Packet, from: &[u32; 4], mtu: u16) -> u32 {
    let outcome = if p.v6 {
        icmp::too_big_v6(ctx, p, from, mtu)
    } else {
        icmp::too_big_v4(ctx, p, from[0], mtu)
    };
    match outcome {
        icmp::Outcome::Sent(action) => {
            count_reason(Reason::IcmpTooBigSent);
            action
        }
        icmp::Outcome::Pass(reason) => pass(reason),
        icmp::Outcome::Forward { .. } | icmp::Outcome::Drop => xdp_action::XDP_DROP,
    }
}

/// Passes every packet. Attached to veth peers so they accept redirected frames.
#[xdp]
pub fn lb_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
