//! Per-CPU counters: per reason, per VIP and per backend. Per-CPU slots need no atomics:
//! XDP runs with preemption disabled, so nothing else on this CPU touches the slot meanwhile.

use lb_common::types::Reason;

use crate::maps::{LB_BACKEND_STATS, LB_REASON_STATS, LB_VIP_MISSES, LB_VIP_STATS};

/// Counts one packet under `reason`.
#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(slot) = LB_REASON_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, exclusive to this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Adds one packet of `bytes` (and a new flow when `new_flow`) to VIP `vip_id` and
/// backend `backend_id`.
#[inline(always)]
pub fn count_traffic(vip_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    let nf = new_flow as u64;
    if let Some(c) = LB_VIP_STATS.get_ptr_mut(vip_id) {
        // SAFETY: per-CPU slot, exclusive to this CPU while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += nf;
        }
    }
    if let Some(c) = LB_BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: as above.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += nf;
        }
    }
}

/// Counts a TCP packet that is no SYN yet found no flow entry at VIP `vip_id` (an evicted
/// flow, or one another node balanced): it was re-picked through Maglev.
#[inline(always)]
pub fn count_miss(vip_id: u32) {
    if let Some(slot) = LB_VIP_MISSES.get_ptr_mut(vip_id) {
        // SAFETY: per-CPU slot, exclusive to this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}
