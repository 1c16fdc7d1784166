//! Source filtering with the two LPM tries. Keys are `(scope, address)`: scope 0 holds the
//! global deny list, scope `vip_id + 1` one frontend's deny and allow entries; the longest
//! match wins, and its value says deny or allow.

use aya_ebpf::maps::lpm_trie::Key;
use lb_common::types::{
    CFG_F_GLOBAL_FILTER_V4, CFG_F_GLOBAL_FILTER_V6, FILTER_ALLOW, FILTER_DENY, FilterKeyV4,
    FilterKeyV6, VIP_F_ALLOWLIST, VIP_F_FILTER, VipInfo,
};

use crate::maps::{LB_CONFIG, LB_FILTER_V4, LB_FILTER_V6};
use crate::parse::Packet;

#[inline(always)]
fn lookup(p: &Packet, scope: u32) -> Option<u32> {
    let scope = scope.to_be_bytes();
    if p.v6 {
        let mut addr = [0u8; 16];
        addr[0..4].copy_from_slice(&p.src[0].to_ne_bytes());
        addr[4..8].copy_from_slice(&p.src[1].to_ne_bytes());
        addr[8..12].copy_from_slice(&p.src[2].to_ne_bytes());
        addr[12..16].copy_from_slice(&p.src[3].to_ne_bytes());
        let key = Key::new(32 + 128, FilterKeyV6 { scope, addr });
        LB_FILTER_V6.get(&key).copied()
    } else {
        let key = Key::new(
            32 + 32,
            FilterKeyV4 {
                scope,
                addr: p.src[0].to_ne_bytes(),
            },
        );
        LB_FILTER_V4.get(&key).copied()
    }
}

/// True when the source is in the global deny list. `cfg_flags` (`CFG_F_*`) says whether
/// the list has rules of the packet's family; without any, no lookup is made.
#[inline(always)]
pub fn globally_denied(p: &Packet, cfg_flags: u32) -> bool {
    let bit = if p.v6 {
        CFG_F_GLOBAL_FILTER_V6
    } else {
        CFG_F_GLOBAL_FILTER_V4
    };
    if cfg_flags & bit == 0 {
        return false;
    }
    lookup(p, 0) == Some(FILTER_DENY)
}

/// [`globally_denied`] with the flags read from `LB_CONFIG`.
#[inline(always)]
pub fn globally_denied_now(p: &Packet) -> bool {
    let flags = match LB_CONFIG.get(0) {
        Some(c) => c.flags,
        None => 0,
    };
    globally_denied(p, flags)
}

/// True when the frontend of `vip` refuses the source: denied, or not allowed when the
/// frontend has an allow-list. Frontends without rules (`VIP_F_FILTER` clear) cost nothing.
#[inline(always)]
pub fn vip_denied(p: &Packet, vip: &VipInfo) -> bool {
    if vip.flags & (VIP_F_FILTER | VIP_F_ALLOWLIST) == 0 {
        return false;
    }
    match lookup(p, vip.vip_id.wrapping_add(1)) {
        Some(FILTER_DENY) => true,
        Some(FILTER_ALLOW) => false,
        _ => vip.flags & VIP_F_ALLOWLIST != 0,
    }
}
