//! Connection tracking and the Maglev pick.
//!
//! A flow keeps its backend while that backend is UP or DRAIN (a TCP SYN reusing the tuple
//! of a flow on a DRAIN backend is a new connection, and re-picked); when it is DOWN (or the
//! id is unused) the flow is re-picked from the VIP's live Maglev table and the entry
//! updated.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;
use lb_common::hash::{hash_flow, hash_src};
use lb_common::types::{
    BACKEND_DRAIN, BACKEND_UP, Backend, FlowKey, FlowKeyV4, FlowValue, GlobalConfig, NextHop,
    REVERSE_F_DIRECT, REVERSE_F_SHARED, Reason, ReverseKey, ReverseValue, VIP_F_HASH_SRC,
    VIP_F_SHARED_BACKEND, VipInfo,
};

use crate::maps::{
    LB_BACKEND_HOPS, LB_BACKENDS, LB_CONFIG, LB_FLOOD, LB_FLOWS, LB_FLOWS_V4, LB_MAGLEV,
    LB_REPLY_FLOWS, LB_REVERSE, LB_VIP_SLOTS,
};
use crate::parse::{Packet, TCP_ACK, TCP_SYN};
use crate::second_chance;
use crate::stats::count_reason;
use lb_common::maglev::slot_current;

/// The backend chosen for a packet.
pub struct Choice {
    pub backend_id: u32,
    /// The backend's slot, read in place (no copy on the small BPF stack).
    pub backend: &'static Backend,
    pub new_flow: bool,
    /// The flow entry of an established flow (its next-hop cache lives there); null for
    /// a new flow (`new_flow`: no usable entry, recorded by [`track`]).
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

/// The flow-table entry of a forward packet, if any (null when there is none). A TCP SYN
/// without ACK opens a new connection: as in Katran, it is not looked up (null) but picked
/// by Maglev and tracked anew, so a new flow costs no flow-table probe. A retransmitted
/// SYN gets the same backend while the backend set stays.
#[inline(always)]
pub fn entry_of(p: &Packet) -> *mut FlowValue {
    if p.proto == lb_common::types::PROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return core::ptr::null_mut();
    }
    let v = if p.v6 {
        LB_FLOWS.get_ptr_mut(key_of(p))
    } else {
        LB_FLOWS_V4.get_ptr_mut(key_v4(p))
    };
    v.unwrap_or(core::ptr::null_mut())
}

/// The flow's backend if it still takes packet `p` of the flow; `entry` may be null. A
/// DRAIN backend (drained, DOWN or MAINT) keeps established flows but not a TCP SYN that
/// reuses a tracked tuple: that is a new connection, which a server out of service must
/// not get.
#[inline(always)]
pub fn usable(entry: *mut FlowValue, p: &Packet) -> Option<Tracked> {
    if entry.is_null() {
        return None;
    }
    // SAFETY: map value pointer from a successful lookup.
    let id = unsafe { (*entry).backend_id };
    let b = LB_BACKENDS.get(id)?;
    if b.state == BACKEND_UP
        || (b.state == BACKEND_DRAIN && p.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN)
    {
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
    let t = usable(entry_of(p), p)?;
    Some((t.backend_id, t.backend, t.entry))
}

/// Chooses the backend for a forward packet of `vip`: the tracked one, else a Maglev pick
/// (not recorded). `None` when the VIP has no usable backend.
#[inline(always)]
pub fn choose(p: &Packet, vip: &VipInfo) -> Option<Choice> {
    if let Some((backend_id, backend, entry)) = established(p) {
        return Some(Choice {
            backend_id,
            backend,
            new_flow: false,
            entry,
        });
    }
    pick(p, vip)
}

/// A Maglev pick for a packet of `vip` with no usable flow entry; [`track`] records it.
#[inline(always)]
pub fn pick(p: &Packet, vip: &VipInfo) -> Option<Choice> {
    if vip.backend_count == 0 {
        return None;
    }
    let slot = maglev_slot(vip, &p.src, &p.dst, p.sport, p.dport, p.proto)?;
    let backend_id = second_chance::backend_for(slot, p);
    let backend = LB_BACKENDS.get(backend_id)?;
    // The bucket's previous backend keeps its flows out of service (`backend_for`).
    if backend.state != BACKEND_UP && backend_id == slot_current(slot) {
        return None;
    }
    Some(Choice {
        backend_id,
        backend,
        new_flow: true,
        entry: core::ptr::null_mut(),
    })
}

/// The next hop cached for new flows to backend `id` (`LB_BACKEND_HOPS`), null when `id`
/// is out of range. Read and written under the flows' rules ([`crate::forward::cached`],
/// [`crate::forward::remember`]): valid for one generation, ingress interface and TOS.
/// The FIB is asked with the first client's source; a route that depends on the client's
/// source (a policy rule on `from`) is therefore not followed per client for the first
/// packet of a flow (docs/operations.md).
#[inline(always)]
pub fn backend_hop(id: u32) -> *mut NextHop {
    LB_BACKEND_HOPS.get_ptr_mut(id).unwrap_or_default()
}

/// True when this CPU is in flood mode: it has seen more than `GlobalConfig::flood_rate`
/// new flows (this one counted) since its window opened, less than a second ago.
/// Katran's `is_under_flood`, on the coarse clock.
#[inline(always)]
fn flooding() -> bool {
    let rate = match LB_CONFIG.get(0) {
        Some(cfg) => cfg.flood_rate,
        None => 0,
    };
    if rate == 0 {
        return false;
    }
    let Some(w) = LB_FLOOD.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: per-CPU slot, exclusive to this CPU while the program runs.
    unsafe {
        if now.wrapping_sub((*w).start_ns) > FLOOD_WINDOW_NS {
            (*w).start_ns = now;
            (*w).new_flows = 1;
            return false;
        }
        (*w).new_flows += 1;
        (*w).new_flows > u64::from(rate)
    }
}

/// One second: the flood-mode window.
const FLOOD_WINDOW_NS: u64 = 1_000_000_000;

/// Records new flow `p` of `vip` to the backend of `choice`: its flow entry, holding
/// a copy of the backend's next hop `hop` when that is valid for generation `nh_gen` (so
/// the flow's next packets skip the FIB), and its reply tuple when the VIP shares a
/// backend with another VIP. In flood mode ([`flooding`]) nothing is recorded (counted
/// as `FloodUntracked`): the flow's next packets miss the table and are picked by Maglev
/// again, which gives the same backend while the backend set stays, and a flood of new
/// sources cannot evict established flows from the LRU. A BPF function of its own (one
/// copy for both call sites, and its value off the caller's frame: the balancing chain
/// is close to the verifier's 512-byte stack bound).
#[inline(never)]
// Keys and values are passed as references into the scratch map: by value, they would be
// copied onto the stack.
#[allow(clippy::needless_borrows_for_generic_args)]
pub fn track(p: &Packet, vip: &VipInfo, choice: &Choice, hop: *const NextHop, nh_gen: u32) {
    let Some(s) = LB_FLOW_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, exclusive to this CPU while the program runs.
    let s = unsafe { &mut *s };
    // The hop is copied first, so `hop` and `nh_gen` are dead across the calls below
    // (fewer spills: this frame sits on top of the balancing chain's).
    s.value.nh.generation = 0;
    if !hop.is_null() && nh_gen != 0 {
        // SAFETY: `hop` points into a map value from a successful lookup. The generation
        // is read (volatile) before and after the copy: a writer clears it first and sets
        // it last (see `forward::remember`), so a copy taken while it wrote is discarded.
        unsafe {
            let g = core::ptr::addr_of!((*hop).generation);
            if core::ptr::read_volatile(g) == nh_gen {
                s.value.nh = *hop;
                if core::ptr::read_volatile(g) != nh_gen {
                    s.value.nh.generation = 0;
                }
            }
        }
    }
    if flooding() {
        count_reason(Reason::FloodUntracked);
        return;
    }
    s.value.backend_id = choice.backend_id;
    s.value.vip_id = vip.vip_id;
    // A full LRU evicts the oldest entry; an insert failure only costs stickiness. The
    // value is passed in place (a map value), not copied onto the stack.
    let _ = if p.v6 {
        LB_FLOWS.insert(key_of(p), &s.value, 0)
    } else {
        s.key_v4 = key_v4(p);
        LB_FLOWS_V4.insert(&s.key_v4, &s.value, 0)
    };
    if vip.flags & VIP_F_SHARED_BACKEND != 0 {
        record_reply(p, vip.vip_id, choice.backend_id, choice.backend, s);
    }
}

/// Per-CPU scratch space of [`track`]: the values it inserts, built in place so they do
/// not sit on the BPF stack (the balancing chain is close to the 512-byte bound).
#[repr(C)]
pub struct Scratch {
    value: FlowValue,
    key_v4: FlowKeyV4,
    rkey: ReverseKey,
    reply_key: FlowKey,
    reply: ReverseValue,
}

/// [`Scratch`] (index 0). Not pinned: nothing survives a packet.
#[map(name = "LB_FLOW_SCRATCH")]
static LB_FLOW_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The entry of VIP `vip`'s live Maglev table for the forward 5-tuple
/// `src:sport → dst:dport` (the same hash on every node sharing the seed): its current and
/// previous backend ([`second_chance`]).
#[inline(always)]
fn maglev_slot(
    vip: &VipInfo,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    proto: u8,
) -> Option<u32> {
    let cfg: GlobalConfig = *LB_CONFIG.get(0)?;
    let m = cfg.maglev_size;
    if m == 0 {
        return None;
    }
    let h = if vip.flags & VIP_F_HASH_SRC != 0 {
        hash_src(src, cfg.hash_seed)
    } else {
        hash_flow(src, dst, sport, dport, proto, cfg.hash_seed)
    };
    let table = vip
        .vip_id
        .wrapping_mul(2)
        .wrapping_add(vip.active_table & 1);
    let idx = table.wrapping_mul(m).wrapping_add(h % m);
    LB_MAGLEV.get(idx).copied()
}

/// True when reply `p` (backend → client) from the backend `rv` names belongs to a flow
/// balanced through `rv`'s VIP, so it is translated; replies of flows that never went
/// through a VIP (a client reaching the backend directly, through the balancer as its
/// gateway) pass untouched. In order:
/// 1. the flow table holds the reconstructed forward tuple (client → VIP): balanced when
///    its backend is this one (every flow this node balanced, also after an lb restart:
///    the table is pinned);
/// 2. the reply tuple was seen going straight to the backend ([`record_direct`]): not
///    balanced;
/// 3. otherwise the VIP's Maglev table decides: balanced when its bucket for the forward
///    tuple names this backend, as current or previous backend ([`second_chance`]) (a flow
///    another node balanced, whose replies come back through this one, or whose entry was
///    evicted; also while this node has the backend drained and others do not).
#[inline(never)]
pub fn balanced_reply(p: &Packet, rv: &ReverseValue) -> bool {
    let entry = if p.v6 {
        let key = FlowKey {
            src: p.dst,
            sport: p.dport,
            _pad: [0; 2],
            dst: rv.vip_addr,
            dport: rv.vip_port,
            proto: p.proto,
            family: p.family,
        };
        LB_FLOWS.get_ptr(key)
    } else {
        let key = FlowKeyV4 {
            src: p.dst[0],
            dst: rv.vip_addr[0],
            sport: p.dport,
            dport: rv.vip_port,
            proto: p.proto,
            _pad: [0; 3],
        };
        LB_FLOWS_V4.get_ptr(key)
    };
    if let Some(e) = entry {
        // SAFETY: map value pointer from a successful lookup.
        return unsafe { (*e).backend_id } == rv.backend_id;
    }
    // The reply's own 5-tuple is the key of `LB_REPLY_FLOWS`.
    if let Some(r) = LB_REPLY_FLOWS.get_ptr(key_of(p)) {
        // SAFETY: map value pointer from a successful lookup.
        return unsafe { (*r).flags } & REVERSE_F_DIRECT == 0;
    }
    let Some(slot) = LB_VIP_SLOTS.get(rv.vip_id) else {
        return false;
    };
    let k = &slot.key;
    if k.addr != rv.vip_addr || k.port != rv.vip_port || k.proto != p.proto {
        return false;
    }
    // Compared through a defined value: with `== Some(id)` LLVM reads the payload of a
    // `None` (undefined) into a register the lookup's call clobbered, and the verifier
    // refuses the program ("R3 !read_ok"). `u32::MAX` names no backend, as current or
    // previous.
    let entry = maglev_slot(
        &slot.info,
        &p.dst,
        &rv.vip_addr,
        p.dport,
        rv.vip_port,
        p.proto,
    )
    .unwrap_or(u32::MAX);
    second_chance::names(entry, rv.backend_id)
}

/// The `LB_REVERSE` key of backend endpoint `addr:port` for forward packet `p`'s protocol.
#[inline(always)]
fn backend_key(addr: &[u32; 4], port: u16, p: &Packet) -> ReverseKey {
    ReverseKey {
        addr: *addr,
        port,
        proto: p.proto,
        family: p.family,
    }
}

/// The reply tuple (backend `addr:port` → client) of forward packet `p`, the key of
/// `LB_REPLY_FLOWS`.
#[inline(always)]
fn reply_key(addr: &[u32; 4], port: u16, p: &Packet) -> FlowKey {
    FlowKey {
        src: *addr,
        sport: port,
        _pad: [0; 2],
        dst: p.src,
        dport: p.sport,
        proto: p.proto,
        family: p.family,
    }
}

/// Forward packet `p`, not to a VIP and not from a backend: when it goes to a backend
/// endpoint (a client reaching the backend directly through the balancer), records its
/// reply tuple as direct, so [`balanced_reply`] lets the backend's answers pass untouched.
#[inline(never)]
pub fn record_direct(p: &Packet) {
    if LB_REVERSE
        .get_ptr(backend_key(&p.dst, p.dport, p))
        .is_none()
    {
        return;
    }
    let key = reply_key(&p.dst, p.dport, p);
    if LB_REPLY_FLOWS.get_ptr(key).is_some() {
        return;
    }
    let value = ReverseValue {
        flags: REVERSE_F_DIRECT,
        family: p.family,
        ..ReverseValue::default()
    };
    // A full LRU evicts the oldest entry.
    let _ = LB_REPLY_FLOWS.insert(key, value, 0);
}

/// For a new flow of `p` (still addressed to the VIP) to `backend`: when the backend serves
/// several VIPs, records which VIP its replies to this client must come from.
#[inline(always)]
#[allow(clippy::needless_borrows_for_generic_args)]
fn record_reply(p: &Packet, vip_id: u32, backend_id: u32, backend: &Backend, s: &mut Scratch) {
    // Keys and value are written field by field into the scratch slot: a struct literal
    // is built on the stack first.
    s.rkey.addr = backend.addr;
    s.rkey.port = backend.port;
    s.rkey.proto = p.proto;
    s.rkey.family = p.family;
    let Some(rv) = LB_REVERSE.get_ptr(&s.rkey) else {
        return;
    };
    // SAFETY: map value pointer from a successful lookup.
    if unsafe { (*rv).flags } & REVERSE_F_SHARED == 0 {
        return;
    }
    let k = &mut s.reply_key;
    k.src = backend.addr;
    k.sport = backend.port;
    k._pad = [0; 2];
    k.dst = p.src;
    k.dport = p.sport;
    k.proto = p.proto;
    k.family = p.family;
    let v = &mut s.reply;
    v.vip_addr = p.dst;
    v.vip_port = p.dport;
    v.family = p.family;
    v.flags = 0;
    v.vip_id = vip_id;
    v.backend_id = backend_id;
    let _ = LB_REPLY_FLOWS.insert(&s.reply_key, &s.reply, 0);
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
        // SAFETY: map value pointer from a successful lookup. Direct-flow records
        // ([`record_direct`]) name no VIP.
        Some(v) if unsafe { (*v).flags } & REVERSE_F_DIRECT == 0 => unsafe { &*v },
        _ => rv,
    }
}
