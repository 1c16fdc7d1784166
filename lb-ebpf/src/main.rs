//! The lb XDP data path.
//!
//! Kernel requirements: XDP (native on the NIC driver, or generic), BTF, and
//! `bpf_fib_lookup` (Linux 4.18+). Loaded and attached by `lb run`; maps are pinned under
//! bpffs by the loader. Modules are split by concern, as in Katran: `maps`, `parse`,
//! `csum`, and the programs here.
#![no_std]
#![no_main]

mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::types::Reason;

/// The balancer program. Packets it does not balance go to the kernel untouched.
#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let reason = match parse::ethernet(&ctx) {
        Some(eth) if eth.offset_l3 > 0 && eth.ether_type == parse::ETH_P_IP => {
            Reason::PassNotBalanced
        }
        Some(eth) if eth.ether_type == parse::ETH_P_IPV6 => Reason::PassNotBalanced,
        Some(_) => Reason::PassNotIp,
        None => Reason::PassTruncated,
    };
    maps::count_reason(reason);
    xdp_action::XDP_PASS
}

/// Passes every packet. Attached to veth peers so they accept redirected frames.
#[xdp]
pub fn lb_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark baseline: parse Ethernet and IP, swap MACs, `XDP_TX`.
#[xdp]
pub fn lb_xdp_baseline_tx(ctx: XdpContext) -> u32 {
    match parse::ethernet(&ctx) {
        Some(eth) => {
            parse::swap_macs(&ctx, eth.offset_eth);
            xdp_action::XDP_TX
        }
        None => xdp_action::XDP_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
