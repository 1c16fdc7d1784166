//! Bench-only programs, never attached by `lb`: the per-packet references
//! ([`lb_xdp_baseline_tx`], [`lb_xdp_floor_tx`]) and a packet generator for live-frame
//! `BPF_PROG_RUN` (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+). The kernel recycles its page-pool pages
//! without restoring their contents, so a program that rewrites packets (the balancer's
//! NAT, or the kernel stack after `XDP_PASS`) would see its own output on later runs. Both
//! generators therefore first write the `LB_BENCH_FRAME` template over the packet's first
//! 48 bytes and set the next source port, then hand the packet on: to the balancer
//! ([`lb_bench_gen_lb`]) or to the kernel stack ([`lb_bench_gen_pass`]). The copy costs
//! both paths the same. [`lb_bench_sink`] counts what comes out on the far side.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::types::{BenchFrame, PROTO_UDP};

use crate::parse::{ETH_HLEN, IPV4_HLEN};

/// The template (index 0). Not pinned: every load of the object gets its own.
#[map(name = "LB_BENCH_FRAME")]
static LB_BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);

/// Offset of the UDP source port in an IPv4 frame without options.
const SPORT_OFF: usize = ETH_HLEN + IPV4_HLEN;

/// Writes the template over the packet. `false` when there is no template or the packet
/// is shorter than it. A BPF function of its own, so its frame does not add to the
/// balancer's call chains (the verifier's 512-byte limit).
#[inline(never)]
fn write_template(ctx: &XdpContext) -> bool {
    let Some(t) = LB_BENCH_FRAME.get_ptr_mut(0) else {
        return false;
    };
    let start = ctx.data();
    if start + 48 > ctx.data_end() {
        return false;
    }
    // SAFETY: `t` is the map value of a successful lookup; the 48 packet bytes written
    // were bounds-checked against `data_end` above. Word stores: `BPF_PROG_RUN` places the
    // frame `XDP_PACKET_HEADROOM` (256) bytes into its buffer, so `start` is 8-byte
    // aligned (unaligned accessors would compile to byte loads and stores on this target).
    unsafe {
        let words = start as *mut u64;
        let head = &(*t).head;
        *words = head[0];
        *words.add(1) = head[1];
        *words.add(2) = head[2];
        *words.add(3) = head[3];
        *words.add(4) = head[4];
        *words.add(5) = head[5];
        let flows = u32::from((*t).flows);
        if flows != 0 {
            let sent = (*t).sent;
            let port = (*t).sport_base.wrapping_add((sent % flows) as u16);
            *((start + SPORT_OFF) as *mut u16) = port.to_be();
            (*t).sent = sent.wrapping_add(1);
        }
    }
    true
}

/// Generator → balancer: the template, then exactly what `lb_xdp` does.
#[xdp]
pub fn lb_bench_gen_lb(ctx: XdpContext) -> u32 {
    if !write_template(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    crate::balance_packet(&ctx)
}

/// Generator → kernel stack: the template, then `XDP_PASS`.
#[xdp]
pub fn lb_bench_gen_pass(ctx: XdpContext) -> u32 {
    if !write_template(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_PASS
}

/// Packets the sink dropped (index 0, per CPU). Not pinned.
#[map(name = "LB_BENCH_SINK")]
static LB_BENCH_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Counting sink, attached where the balanced packets leave the balancer host: IPv4 and
/// IPv6 UDP is counted and dropped, everything else passes.
#[xdp]
pub fn lb_bench_sink(ctx: XdpContext) -> u32 {
    let Some(eth) = crate::parse::ethernet(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match crate::parse::ip(&ctx, &eth) {
        Ok(p) if p.proto == PROTO_UDP => {
            if let Some(n) = LB_BENCH_SINK.get_ptr_mut(0) {
                // SAFETY: per-CPU slot, exclusive to this CPU while the program runs.
                unsafe { *n += 1 };
            }
            xdp_action::XDP_DROP
        }
        _ => xdp_action::XDP_PASS,
    }
}

/// Benchmark baseline: parse Ethernet, swap MACs, `XDP_TX`.
#[xdp]
pub fn lb_xdp_baseline_tx(ctx: XdpContext) -> u32 {
    match crate::parse::ethernet(&ctx) {
        Some(eth) => {
            crate::parse::swap_macs(&ctx, eth.offset_eth);
            xdp_action::XDP_TX
        }
        None => xdp_action::XDP_PASS,
    }
}

/// Benchmark reference only, never attached by `lb`: the floor of the established-flow
/// path in this design, i.e. parse Ethernet, IP and TCP/UDP, look the VIP up in
/// `LB_VIPS` and the flow in `LB_FLOWS` (the LRU conntrack), swap MACs, `XDP_TX`. No
/// filters, NAT, counters or next hop. Packets that are not an established flow to a VIP
/// pass.
#[xdp]
pub fn lb_xdp_floor_tx(ctx: XdpContext) -> u32 {
    let Some(eth) = crate::parse::ethernet(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Ok(p) = crate::parse::ip(&ctx, &eth) else {
        return xdp_action::XDP_PASS;
    };
    if crate::maps::LB_VIPS
        .get_ptr(crate::parse::vip_key(&p))
        .is_none()
        || crate::flow::entry_of(&p).is_null()
    {
        return xdp_action::XDP_PASS;
    }
    crate::parse::swap_macs(&ctx, eth.offset_eth);
    xdp_action::XDP_TX
}
