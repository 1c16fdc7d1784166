//! Second chance, as GLB Director does it: every Maglev bucket also names the backend it
//! had before a change moved it away (written by the control plane, see
//! `lb_common::maglev::with_previous`).
//!
//! A TCP packet without SYN that has no flow entry belongs to a connection this node never
//! saw (another node balanced it, the node restarted, or its entry was evicted). When its
//! bucket left its previous backend because that server went out of service keeping its
//! flows (drained, DOWN or MAINT: `SLOT_SECOND_CHANCE`), and it still does, the
//! connection most likely lives there, so the packet goes to it instead of the bucket's
//! current backend. Replies from either backend count as balanced ([`names`]), so a node
//! whose own view of the servers differs (drained here, UP elsewhere) still translates
//! the replies of flows other nodes balanced.

use lb_common::maglev::{SLOT_SECOND_CHANCE, slot_current, slot_previous};
use lb_common::maps::MAX_BACKENDS;
use lb_common::types::{BACKEND_DRAIN, PROTO_TCP};

use crate::maps::LB_BACKENDS;
use crate::parse::{Packet, TCP_SYN};

/// The backend id Maglev table entry `slot` gives packet `p`, which has no flow entry.
#[inline(always)]
pub fn backend_for(slot: u32, p: &Packet) -> u32 {
    let prev = slot_previous(slot);
    if slot & SLOT_SECOND_CHANCE != 0
        && p.proto == PROTO_TCP
        && p.tcp_flags & TCP_SYN == 0
        && prev < MAX_BACKENDS
        && let Some(b) = LB_BACKENDS.get(prev)
        && b.state == BACKEND_DRAIN
    {
        return prev;
    }
    slot_current(slot)
}

/// True when `backend_id` is the current or the previous backend of table entry `slot`.
#[inline(always)]
pub fn names(slot: u32, backend_id: u32) -> bool {
    slot_current(slot) == backend_id || slot_previous(slot) == backend_id
}
