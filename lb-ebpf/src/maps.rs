//! Every map of the data path. Keys and values come from `lb_common::types`; maps are
//! declared `pinned` so the loader places them under bpffs and a restarted `lb` reuses them.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::types::Reason;

/// Per-CPU packet counters, one slot per [`Reason`].
#[map(name = "LB_REASON_STATS")]
static LB_REASON_STATS: PerCpuArray<u64> = PerCpuArray::pinned(Reason::COUNT, 0);

/// Counts one packet under `reason`.
#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(slot) = LB_REASON_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot; no other context on this CPU runs concurrently in XDP.
        unsafe { *slot += 1 };
    }
}
