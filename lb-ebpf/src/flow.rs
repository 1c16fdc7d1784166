//! Connection tracking and the Maglev pick.
//!
//! A flow keeps its backend while that backend is UP or DRAIN; when it is DOWN (or the id
//! is unused) the flow is re-picked from the VIP's live Maglev table and the entry updated.

use lb_common::hash::{hash_flow, hash_src};
use lb_common::types::{
    BACKEND_DRAIN, BACKEND_UP, Backend, FlowKey, FlowKeyV4, FlowValue, GlobalConfig,
    REVERSE_F_SHARED, ReverseKey, ReverseValue, VIP_F_HASH_SRC, VipInfo,
};

use crate::maps::{
    LB_BACKENDS, LB_CONFIG, LB_FLOWS, LB_FLOWS_V4, LB_MAGLEV, LB_REPLY_FLOWS, LB_REVERSE,
};
use crate::parse::Packet;

/// The backend chosen for a packet.
pub struct Choice {
    pub backend_id: u32,
    /// The backend's slot, read in place (no copy on the small BPF stack).
    pub backend: &'static Backend,
    pub new_flow: bool,
    /// The flow entry of an established flow (its next-hop cache lives there); null for
    /// a new flow.
    pub entry: *mut FlowValue,
}

/// The IPv6 flow-table key of a packet in the forward direction: the packet's first
/// fields (see [`Packet`]), in place.
#[inline(always)]
pub fn key_of(p: &Packet) -> &FlowKey {
    // SAFETY: `Packet` is `repr(C)` and starts with the fields of `FlowKey`, in its
    // layout (checked at compile time in `parse`), padding included and zeroed.
    unsafe { &*(p as *const Packet).cast::<FlowKey>() }
}

/// The IPv4 flow-table key of a packet in the forward direction.
#[inline(always)]
pub fn key_v4(p: &Packet) -> FlowKeyV4 {
    // Built as four words: field by field, the zero padding costs a `memset` call.
    let [s0, s1] = p.sport.to_ne_bytes();
    let [d0, d1] = p.dport.to_ne_bytes();
    let words = [
        p.src[0],
        p.dst[0],
        u32::from_ne_bytes([s0, s1, d0, d1]),
        u32::from_ne_bytes([p.proto, 0, 0, 0]),
    ];
    // SAFETY: `FlowKeyV4` is `repr(C)`, 16 bytes of plain integers with 4-byte alignment:
    // src, dst, sport, dport, proto and zero padding, exactly the words above.
    unsafe { core::mem::transmute::<[u32; 4], FlowKeyV4>(words) }
}

/// The next-hop cache inside flow entry `entry` (a map value pointer from a successful
/// lookup).
#[inline(always)]
pub fn hop(entry: *mut FlowValue) -> *mut lb_common::types::NextHop {
    // SAFETY: only an address computation inside the value `entry` points to.
    unsafe { core::ptr::addr_of_mut!((*entry).nh) }
}

/// A flow entry whose backend still takes the flow's traffic (UP or DRAIN).
#[derive(Clone, Copy)]
pub struct Tracked {
    pub backend_id: u32,
    /// The backend's slot, read in place.
    pub backend: &'static Backend,
    /// The flow entry (its next-hop cache lives there).
    pub entry: *mut FlowValue,
}

/// The flow-table entry of a forward packet, if any (null when there is none).
#[inline(always)]
pub fn entry_of(p: &Packet) -> *mut FlowValue {
    let v = if p.v6 {
        LB_FLOWS.get_ptr_mut(key_of(p))
    } else {
        LB_FLOWS_V4.get_ptr_mut(key_v4(p))
    };
    v.unwrap_or(core::ptr::null_mut())
}

/// The flow's backend if it still takes established traffic; `entry` may be null.
#[inline(always)]
pub fn usable(entry: *mut FlowValue) -> Option<Tracked> {
    if entry.is_null() {
        return None;
    }
    // SAFETY: map value pointer from a successful lookup.
    let id = unsafe { (*entry).backend_id };
    let b = LB_BACKENDS.get(id)?;
    if b.state == BACKEND_UP || b.state == BACKEND_DRAIN {
        Some(Tracked {
            backend_id: id,
            backend: b,
            entry,
        })
    } else {
        None
    }
}

/// Looks up the flow of forward packet `p`; its backend if it still takes established
/// traffic.
#[inline(always)]
pub fn established(p: &Packet) -> Option<(u32, &'static Backend, *mut FlowValue)> {
    let t = usable(entry_of(p))?;
    Some((t.backend_id, t.backend, t.entry))
}

/// Chooses the backend for a forward packet of `vip`: the tracked one, else a Maglev pick
/// (recorded as a new flow when `record`). `None` when the VIP has no usable backend.
#[inline(always)]
pub fn choose(p: &Packet, vip: &VipInfo, record: bool) -> Option<Choice> {
    if let Some((backend_id, backend, entry)) = established(p) {
        return Some(Choice {
            backend_id,
            backend,
            new_flow: false,
            entry,
        });
    }
    pick(p, vip, record)
}

/// A Maglev pick for a packet of `vip` with no usable flow entry, recorded as a new flow
/// when `record`.
#[inline(always)]
pub fn pick(p: &Packet, vip: &VipInfo, record: bool) -> Option<Choice> {
    if vip.backend_count == 0 {
        return None;
    }
    let cfg: GlobalConfig = *LB_CONFIG.get(0)?;
    let m = cfg.maglev_size;
    if m == 0 {
        return None;
    }
    let h = if vip.flags & VIP_F_HASH_SRC != 0 {
        hash_src(&p.src, cfg.hash_seed)
    } else {
        hash_flow(&p.src, &p.dst, p.sport, p.dport, p.proto, cfg.hash_seed)
    };
    let table = vip
        .vip_id
        .wrapping_mul(2)
        .wrapping_add(vip.active_table & 1);
    let idx = table.wrapping_mul(m).wrapping_add(h % m);
    let backend_id = *LB_MAGLEV.get(idx)?;
    let backend = LB_BACKENDS.get(backend_id)?;
    if backend.state != BACKEND_UP {
        return None;
    }
    if record {
        let value = FlowValue {
            backend_id,
            vip_id: vip.vip_id,
            ..FlowValue::default()
        };
        // A full LRU evicts the oldest entry; an insert failure only costs stickiness.
        let _ = if p.v6 {
            LB_FLOWS.insert(key_of(p), value, 0)
        } else {
            LB_FLOWS_V4.insert(key_v4(p), value, 0)
        };
    }
    Some(Choice {
        backend_id,
        backend,
        new_flow: record,
        entry: core::ptr::null_mut(),
    })
}

/// For a new flow of `p` (still addressed to the VIP) to `backend`: when the backend serves
/// several VIPs, records which VIP its replies to this client must come from.
#[inline(always)]
pub fn record_reply(p: &Packet, vip_id: u32, backend_id: u32, backend: &Backend) {
    let rkey = ReverseKey {
        addr: backend.addr,
        port: backend.port,
        proto: p.proto,
        family: p.family,
    };
    let Some(rv) = LB_REVERSE.get_ptr(rkey) else {
        return;
    };
    // SAFETY: map value pointer from a successful lookup.
    if unsafe { (*rv).flags } & REVERSE_F_SHARED == 0 {
        return;
    }
    let key = FlowKey {
        src: backend.addr,
        dst: p.src,
        sport: backend.port,
        dport: p.sport,
        proto: p.proto,
        family: p.family,
        _pad: [0; 2],
    };
    let value = ReverseValue {
        vip_addr: p.dst,
        vip_port: p.dport,
        family: p.family,
        flags: 0,
        vip_id,
        backend_id,
    };
    let _ = LB_REPLY_FLOWS.insert(key, value, 0);
}

/// The VIP a reply (backend → client) is translated to: `rv` from `LB_REVERSE`, unless the
/// backend is shared by several VIPs and the flow recorded which one. Map values in
/// place, not copies (the reverse path's stack is tight).
#[inline(always)]
pub fn reply_vip(
    rv: &'static ReverseValue,
    backend: &[u32; 4],
    bport: u16,
    client: &[u32; 4],
    cport: u16,
    proto: u8,
    family: u8,
) -> &'static ReverseValue {
    if rv.flags & REVERSE_F_SHARED == 0 {
        return rv;
    }
    let key = FlowKey {
        src: *backend,
        dst: *client,
        sport: bport,
        dport: cport,
        proto,
        family,
        _pad: [0; 2],
    };
    match LB_REPLY_FLOWS.get_ptr(key) {
        // SAFETY: map value pointer from a successful lookup.
        Some(v) => unsafe { &*v },
        None => rv,
    }
}
