//! Turns a [`Config`] plus live server state into data-path map contents.
//!
//! `apply` computes what the maps should hold and writes only the differences, so reapplying
//! the same input writes nothing, established flows are untouched, and ids are stable: the
//! id assignment (VIP ids, backend ids) is reconstructed from the pinned maps themselves, so
//! a restarted `lb` keeps the ids its flows refer to.
//!
//! Mapping: every bind of a frontend with `tier == Tier::Xdp` is a VIP (TCP, or UDP when the
//! bind is written `udp@ADDR:PORT`, see [`bind_proto`]); the servers of its
//! `default_backend` are its backends (one backend id per distinct endpoint). Server status:
//! UP → state UP and in the Maglev table (weight > 0; backups only when no non-backup server
//! is); DRAIN, DOWN and MAINT → state DRAIN: new flows stop going to the server at once
//! (it leaves the table), established ones keep going to it until they end (HAProxy's
//! default, and Katran's). With `on-marked-down shutdown-sessions`, DOWN and MAINT → state
//! DOWN and the server's flow entries are removed as it goes down (its flows are re-picked;
//! the new server resets them). With `on-marked-up shutdown-backup-sessions`, a server
//! coming UP removes the flow entries of its backend's backup servers. A server removed by
//! a reload has its slot freed (state UNUSED): its flows are re-picked.
//! `balance source` sets `VIP_F_HASH_SRC`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use lb_common::maglev::{self, MaglevBackend};
use lb_common::maps::{MAX_BACKENDS, MAX_VIPS};
use lb_common::types::{
    BACKEND_DOWN, BACKEND_DRAIN, BACKEND_UNUSED, BACKEND_UP, Backend, CFG_F_GLOBAL_FILTER_V4,
    CFG_F_GLOBAL_FILTER_V6, GlobalConfig, PROTO_TCP, PROTO_UDP, REVERSE_F_SHARED, ReverseKey,
    ReverseValue, VIP_F_ALLOWLIST, VIP_F_FILTER, VIP_F_HASH_SRC, VIP_F_SHARED_BACKEND, VipInfo,
    VipKey,
};

use super::maps::{Dataplane, FilterRule, MapsError, backend_addr, backend_value, vip_key};
use crate::config::model::{Balance, Bind, Config, IpNet, Tier};
use crate::state::{Registry, ServerStatus};

/// Errors from applying a configuration to the data path.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("the configuration has no [dataplane] section")]
    NoDataplane,
    #[error(
        "maglev_table_size {configured} differs from the loaded data path's {loaded}; \
         restart lb without --keep-dataplane (or remove the pinned maps) to change it"
    )]
    MaglevSize { configured: u32, loaded: u32 },
    #[error("frontend {frontend}: bind {addr} is a wildcard; an XDP VIP needs a specific address")]
    WildcardVip { frontend: String, addr: SocketAddr },
    #[error("more than {MAX_VIPS} XDP VIPs")]
    TooManyVips,
    #[error("more than {MAX_BACKENDS} XDP backends")]
    TooManyBackends,
    #[error("Maglev table: {0}")]
    Maglev(maglev::MaglevError),
    #[error("reading local addresses: {0}")]
    LocalAddrs(std::io::Error),
    #[error("removing the pinned maps at {path}: {source}")]
    RemovePins {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error(transparent)]
    Loader(#[from] super::loader::DataplaneError),
}

/// What one `apply` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplySummary {
    pub vips: usize,
    pub backends: usize,
    /// Map updates and deletions performed (0 when nothing changed).
    pub writes: usize,
    /// Maglev tables rebuilt and flipped.
    pub tables_flipped: usize,
    /// Non-fatal problems (e.g. a server skipped for a VIP of the other address family).
    pub warnings: Vec<String>,
    /// Flow entries removed by `shutdown-sessions` / `shutdown-backup-sessions`.
    pub flows_shut: usize,
}

/// One VIP as the configuration wants it.
#[derive(Debug, Clone)]
struct WantedVip {
    key: VipKey,
    flags: u32,
    /// (endpoint, weight, in_table)
    members: Vec<(SocketAddr, u32, bool)>,
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

/// The IP protocol a bind balances: UDP when written `udp@ADDR:PORT`, else TCP.
pub fn bind_proto(bind: &Bind) -> u8 {
    let text = bind.text.trim_start();
    if text.len() >= 4 && text[..4].eq_ignore_ascii_case("udp@") {
        PROTO_UDP
    } else {
        PROTO_TCP
    }
}

/// The data-path state of a server: only `on-marked-down shutdown-sessions` makes DOWN
/// and MAINT drop established flows.
fn data_state(status: ServerStatus, shutdown_on_down: bool) -> u8 {
    match status {
        ServerStatus::Up => BACKEND_UP,
        ServerStatus::Drain => BACKEND_DRAIN,
        ServerStatus::Down | ServerStatus::Maint if shutdown_on_down => BACKEND_DOWN,
        ServerStatus::Down | ServerStatus::Maint => BACKEND_DRAIN,
    }
}

/// The `LB_REVERSE` key of backend endpoint `addr` for protocol `proto` (the same fields
/// as a VIP key).
fn reverse_key(addr: SocketAddr, proto: u8) -> ReverseKey {
    let VipKey {
        addr,
        port,
        proto,
        family,
    } = vip_key(addr, proto);
    ReverseKey {
        addr,
        port,
        proto,
        family,
    }
}

/// Preference when one endpoint appears with several states: UP > DRAIN > DOWN.
fn state_rank(s: u8) -> u8 {
    match s {
        BACKEND_UP => 3,
        BACKEND_DRAIN => 2,
        BACKEND_DOWN => 1,
        _ => 0,
    }
}

/// Applies `cfg` and the live state in `registry` to the data path. Idempotent.
pub fn apply(
    dp: &mut Dataplane,
    cfg: &Config,
    registry: &Registry,
) -> Result<ApplySummary, ApplyError> {
    let dpc = cfg.dataplane.as_ref().ok_or(ApplyError::NoDataplane)?;
    if dpc.maglev_table_size != dp.maglev_size() {
        return Err(ApplyError::MaglevSize {
            configured: dpc.maglev_table_size,
            loaded: dp.maglev_size(),
        });
    }
    let mut summary = ApplySummary::default();
    let m = dp.maglev_size();

    // 1. Global settings. The filter bits tell the data path whether the global deny list
    //    has rules of a family at all (it skips the LPM lookup otherwise); set from the
    //    wanted rules, so stale rules about to be removed (step 9) are already ignored.
    let mut flags = 0;
    for net in &dpc.deny_src {
        flags |= if net.addr.is_ipv4() {
            CFG_F_GLOBAL_FILTER_V4
        } else {
            CFG_F_GLOBAL_FILTER_V6
        };
    }
    let global = GlobalConfig {
        maglev_size: m,
        hash_seed: cfg.global.hash_seed,
        flags,
        flood_rate: dpc.flood_rate,
    };
    let seed_changed = dp.global_config()? != global;
    if seed_changed {
        dp.set_global_config(global)?;
        summary.writes += 1;
    }

    // 2. What the configuration wants.
    let mut wanted: Vec<WantedVip> = Vec::new();
    let mut endpoint_state: BTreeMap<SocketAddr, u8> = BTreeMap::new();
    // `on-marked-up shutdown-backup-sessions`: server endpoint → the backup endpoints of
    // its backend, whose flows go when it comes UP.
    let mut backups_of: BTreeMap<SocketAddr, BTreeSet<SocketAddr>> = BTreeMap::new();
    for fe in cfg.frontends.iter().filter(|f| f.tier == Tier::Xdp) {
        let backend = fe.default_backend.as_deref().and_then(|n| cfg.backend(n));
        let live = backend.and_then(|b| registry.backend(&b.name));
        for bind in &fe.binds {
            if bind.addr.ip().is_unspecified() {
                return Err(ApplyError::WildcardVip {
                    frontend: fe.name.clone(),
                    addr: bind.addr,
                });
            }
            let mut flags = 0;
            if !fe.allow_src.is_empty() {
                flags |= VIP_F_ALLOWLIST;
            }
            if !fe.allow_src.is_empty() || !fe.deny_src.is_empty() {
                flags |= VIP_F_FILTER;
            }
            let mut members = Vec::new();
            if let Some(b) = backend {
                if b.balance == Balance::Source {
                    flags |= VIP_F_HASH_SRC;
                }
                let mut rows = Vec::new();
                // A server without an address yet (DNS discovery) has nothing to map.
                for s in b.servers.iter().filter(|s| !s.unresolved) {
                    if s.addr.is_ipv4() != bind.addr.is_ipv4() {
                        // NAT cannot cross address families: the server does not serve
                        // this VIP (it may serve the frontend's other binds).
                        summary.warnings.push(format!(
                            "frontend {}: server {} ({}) is not reachable through VIP {} \
                             (different address family); skipped for that VIP",
                            fe.name, s.name, s.addr, bind.addr
                        ));
                        continue;
                    }
                    let (status, weight) = match live.as_ref().and_then(|l| l.server(&s.name)) {
                        Some(st) => (st.status(), st.weight()),
                        None if s.disabled => (ServerStatus::Maint, s.weight),
                        None => (ServerStatus::Up, s.weight),
                    };
                    rows.push((s.addr, status, weight, s.backup, s.shutdown_on_down));
                }
                for s in b
                    .servers
                    .iter()
                    .filter(|s| s.shutdown_backups_on_up && !s.backup)
                {
                    backups_of.entry(s.addr).or_default().extend(
                        b.servers
                            .iter()
                            .filter(|o| {
                                o.backup && !o.unresolved && o.addr.is_ipv4() == bind.addr.is_ipv4()
                            })
                            .map(|o| o.addr),
                    );
                }
                let any_primary = rows
                    .iter()
                    .any(|(_, st, w, backup, _)| *st == ServerStatus::Up && *w > 0 && !backup);
                for (addr, status, weight, backup, shutdown) in rows {
                    let in_table =
                        status == ServerStatus::Up && weight > 0 && (backup != any_primary);
                    let st = data_state(status, shutdown);
                    let e = endpoint_state.entry(addr).or_insert(st);
                    if state_rank(st) > state_rank(*e) {
                        *e = st;
                    }
                    members.push((addr, weight, in_table));
                }
            }
            wanted.push(WantedVip {
                key: vip_key(bind.addr, bind_proto(bind)),
                flags,
                members,
                deny: fe.deny_src.clone(),
                allow: fe.allow_src.clone(),
            });
        }
    }

    // 3. Stable ids, reconstructed from the maps.
    let current_backends = dp.backends()?;
    let mut backend_ids: HashMap<SocketAddr, u32> = current_backends
        .iter()
        .map(|(id, b)| (backend_addr(b), *id))
        .collect();
    let mut used: BTreeSet<u32> = current_backends.iter().map(|(id, _)| *id).collect();
    let mut next_hint = used.iter().next_back().map(|m| m + 1).unwrap_or(0);
    for addr in endpoint_state.keys() {
        if backend_ids.contains_key(addr) {
            continue;
        }
        let id = (0..MAX_BACKENDS)
            .map(|i| (next_hint + i) % MAX_BACKENDS)
            .find(|i| !used.contains(i))
            .ok_or(ApplyError::TooManyBackends)?;
        next_hint = id + 1;
        used.insert(id);
        backend_ids.insert(*addr, id);
        dp.reset_backend_counters(id)?;
    }

    let current_vips = dp.vips()?;
    let mut vip_ids: HashMap<VipKey, u32> =
        current_vips.iter().map(|(k, v)| (*k, v.vip_id)).collect();
    let mut used_vips: BTreeSet<u32> = current_vips.iter().map(|(_, v)| v.vip_id).collect();
    for w in &wanted {
        if vip_ids.contains_key(&w.key) {
            continue;
        }
        let id = (0..MAX_VIPS)
            .find(|i| !used_vips.contains(i))
            .ok_or(ApplyError::TooManyVips)?;
        used_vips.insert(id);
        vip_ids.insert(w.key, id);
        dp.reset_vip_counters(id)?;
    }

    // 4. Backends that are new or become UP first, so tables never point at an unwritten or
    //    not-yet-UP slot. Backends leaving service (UP → DRAIN/DOWN) are written after the
    //    tables without them are live (step 8), so no new flow is dropped in between.
    let mut leaving = Vec::new();
    let mut slot_moved = false;
    // Backend ids whose flows are shut once the new states are live (step 8).
    let mut shut: BTreeSet<u32> = BTreeSet::new();
    for (addr, state) in &endpoint_state {
        let id = backend_ids[addr];
        let want = backend_value(*addr, *state);
        let cur = dp.backend(id)?;
        if cur == want {
            continue;
        }
        let same_endpoint = backend_addr(&cur) == *addr && cur.state != BACKEND_UNUSED;
        if *state == BACKEND_DOWN && same_endpoint {
            // on-marked-down shutdown-sessions
            shut.insert(id);
        }
        if *state == BACKEND_UP
            && same_endpoint
            && let Some(backups) = backups_of.get(addr)
        {
            // on-marked-up shutdown-backup-sessions
            shut.extend(backups.iter().filter_map(|b| backend_ids.get(b).copied()));
        }
        if cur.state == BACKEND_UP && *state != BACKEND_UP && backend_addr(&cur) == *addr {
            leaving.push((id, want));
        } else {
            // A slot taking a new endpoint (first use, or reuse of a freed id that flows
            // may still name): their cached next hops belong to the old endpoint.
            slot_moved |= cur.addr != want.addr || cur.family != want.family;
            dp.set_backend(id, want)?;
            summary.writes += 1;
        }
    }
    summary.backends = endpoint_state.len();
    if slot_moved {
        dp.bump_nexthop_generation()?;
    }

    // 5. Filter rules, before any VIP that needs them is published.
    let mut rules = Vec::new();
    for net in &dpc.deny_src {
        rules.push(Dataplane::deny_rule(0, net.addr, net.prefix_len));
    }
    for w in &wanted {
        let scope = vip_ids[&w.key] + 1;
        for net in &w.deny {
            rules.push(Dataplane::deny_rule(scope, net.addr, net.prefix_len));
        }
        for net in &w.allow {
            rules.push(Dataplane::allow_rule(scope, net.addr, net.prefix_len));
        }
    }
    // Two VIPs of one frontend may carry the same rule under different scopes only.
    let rules: Vec<FilterRule> = rules
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    summary.writes += dp.add_filters(&rules)?;

    // 6. Reverse NAT: backend endpoint → VIP, before the VIPs (replies of the first
    //    flows, and the shared-backend flag the data path reads at flow creation).
    let mut reverse: HashMap<ReverseKey, ReverseValue> = HashMap::new();
    for w in &wanted {
        let vip_id = vip_ids[&w.key];
        for (addr, _, _) in &w.members {
            let k = reverse_key(*addr, w.key.proto);
            let v = ReverseValue {
                vip_addr: w.key.addr,
                vip_port: w.key.port,
                family: w.key.family,
                flags: 0,
                vip_id,
                backend_id: backend_ids[addr],
            };
            match reverse.get_mut(&k) {
                // Shared by several VIPs: the data path records each flow's VIP for its
                // replies; replies without a recorded flow go to the first VIP.
                Some(prev) if prev.vip_id != vip_id => prev.flags |= REVERSE_F_SHARED,
                Some(_) => {}
                None => {
                    reverse.insert(k, v);
                }
            }
        }
    }
    let current_reverse: HashMap<ReverseKey, ReverseValue> =
        dp.reverse_entries()?.into_iter().collect();
    for (k, v) in &reverse {
        if current_reverse.get(k) != Some(v) {
            dp.set_reverse(*k, *v)?;
            summary.writes += 1;
        }
    }

    // 7. Maglev tables and VIP settings. A bucket moving away from a server remembers it
    //    (second chance, as GLB Director): its replies stay balanced, and when it left
    //    keeping its flows (DRAIN, DOWN or MAINT without shutdown-sessions), TCP segments
    //    without a flow entry go to it.
    let states: HashMap<u32, u8> = endpoint_state
        .iter()
        .map(|(addr, st)| (backend_ids[addr], *st))
        .collect();
    for w in &wanted {
        let vip_id = vip_ids[&w.key];
        let mut members: Vec<MaglevBackend> = w
            .members
            .iter()
            .filter(|(_, _, in_table)| *in_table)
            .map(|(addr, weight, _)| {
                MaglevBackend::new(
                    backend_ids[addr],
                    *weight,
                    addr.to_string().as_bytes(),
                    cfg.global.hash_seed,
                    m,
                )
            })
            .collect();
        members.sort_unstable_by_key(|b| b.id);
        members.dedup_by_key(|b| b.id);
        let table = maglev::build_table(&members, m).map_err(ApplyError::Maglev)?;
        // A backend shared with another VIP: new flows record their reply tuple (the
        // data path skips that probe for VIPs without the bit).
        let shared = w.members.iter().any(|(addr, _, _)| {
            reverse
                .get(&reverse_key(*addr, w.key.proto))
                .is_some_and(|v| v.flags & REVERSE_F_SHARED != 0)
        });
        let current = dp.vip(&w.key)?;
        let old = match current {
            Some(cur) if cur.vip_id == vip_id => Some(dp.live_slots(&w.key)?),
            _ => None,
        };
        let table = maglev::with_previous(&table, old.as_deref(), |id| {
            states.get(&id).copied().unwrap_or(BACKEND_UNUSED)
        });
        let info = VipInfo {
            vip_id,
            flags: w.flags | if shared { VIP_F_SHARED_BACKEND } else { 0 },
            active_table: 0,
            backend_count: members.len() as u32,
        };
        let unchanged = match (current, &old) {
            (Some(cur), Some(old)) => {
                cur.flags == info.flags && cur.backend_count == info.backend_count && *old == table
            }
            _ => false,
        };
        if !unchanged {
            dp.publish_table(w.key, info, &table)?;
            summary.writes += 1 + table.len();
            summary.tables_flipped += 1;
        }
    }
    summary.vips = wanted.len();

    // 8. Backends leaving service, now that no live table picks them for new flows.
    for (id, want) in leaving {
        dp.set_backend(id, want)?;
        summary.writes += 1;
    }
    // Shut flows: DOWN backends are already out of every flow's way (their flows re-pick);
    // removing the entries also keeps idle flows from resuming when the server returns.
    summary.flows_shut = dp.remove_flows_of(&shut)?;
    summary.writes += summary.flows_shut;

    // 9. Stale filter rules (new ones were added before the VIPs were published).
    summary.writes += dp.set_filters(&rules)?;

    // 10. Removals: stale reverse entries, VIPs, then backends.
    for k in current_reverse.keys() {
        if !reverse.contains_key(k) {
            dp.remove_reverse(k)?;
            summary.writes += 1;
        }
    }
    let wanted_keys: std::collections::HashSet<VipKey> = wanted.iter().map(|w| w.key).collect();
    for (k, _) in &current_vips {
        if !wanted_keys.contains(k) {
            dp.remove_vip(k)?;
            summary.writes += 1;
        }
    }
    for (id, b) in &current_backends {
        if !endpoint_state.contains_key(&backend_addr(b)) {
            dp.set_backend(
                *id,
                Backend {
                    state: BACKEND_UNUSED,
                    ..Backend::default()
                },
            )?;
            summary.writes += 1;
        }
    }
    Ok(summary)
}

/// The runtime API's `shutdown sessions server B/S` in the data path: ends the tracked
/// flows of the servers at `endpoints`, so their next packets reach a server without that
/// connection, which resets it. A flow whose server has left its VIP's Maglev table (DRAIN,
/// DOWN, MAINT) loses its entry, as `on-marked-down shutdown-sessions` does: the re-pick
/// lands on another server. A flow whose server is still in the table would re-pick that
/// same server and carry on, so its entry is pointed at another server of the table
/// instead (next hop not cached). A VIP whose table holds no other server keeps such flows:
/// nothing in the path can reset them. Returns the number of flows ended.
pub fn shut_sessions(
    dp: &mut Dataplane,
    endpoints: &BTreeSet<SocketAddr>,
) -> Result<usize, ApplyError> {
    let ids: BTreeSet<u32> = dp
        .backends()?
        .into_iter()
        .filter(|(_, b)| b.state != BACKEND_UNUSED && endpoints.contains(&backend_addr(b)))
        .map(|(id, _)| id)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    // Buckets forget these servers as their previous backend: a second chance would send
    // the flows' next segments straight back to them.
    for (key, info) in dp.vips()? {
        let slots = dp.live_slots(&key)?;
        if slots
            .iter()
            .any(|s| ids.contains(&maglev::slot_previous(*s)))
        {
            let cleared: Vec<u32> = slots
                .iter()
                .map(|s| {
                    if ids.contains(&maglev::slot_previous(*s)) {
                        s & maglev::SLOT_ID_MASK
                    } else {
                        *s
                    }
                })
                .collect();
            dp.publish_table(key, info, &cleared)?;
        }
    }
    // Per VIP id: the live table's members, in table order.
    let mut tables: HashMap<u32, Vec<u32>> = HashMap::new();
    for (key, info) in dp.vips()? {
        let mut members = dp.live_table(&key)?;
        let mut seen = BTreeSet::new();
        members.retain(|id| seen.insert(*id));
        tables.insert(info.vip_id, members);
    }
    // Servers in no table: their flows are removed (the re-pick goes elsewhere).
    let out_of_table: BTreeSet<u32> = ids
        .iter()
        .copied()
        .filter(|id| !tables.values().any(|m| m.contains(id)))
        .collect();
    let mut ended = 0;
    for (key, v) in dp.flows()? {
        if !ids.contains(&v.backend_id) || out_of_table.contains(&v.backend_id) {
            continue;
        }
        let Some(members) = tables.get(&v.vip_id) else {
            continue;
        };
        if let Some(other) = members.iter().find(|id| !ids.contains(id)) {
            let moved = lb_common::types::FlowValue {
                backend_id: *other,
                vip_id: v.vip_id,
                ..Default::default()
            };
            dp.set_flow(key, moved)?;
            ended += 1;
        }
    }
    ended += dp.remove_flows_of(&out_of_table)?;
    Ok(ended)
}

/// Every address configured on this host's interfaces, in the calling thread's network
/// namespace (IPv4 and IPv6, including loopback and link-local).
pub fn local_addresses() -> Result<Vec<IpAddr>, ApplyError> {
    let mut out = Vec::new();
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| ApplyError::LocalAddrs(std::io::Error::from(e)))?;
    for ifa in addrs {
        let Some(a) = ifa.address else { continue };
        if let Some(sin) = a.as_sockaddr_in() {
            out.push(IpAddr::V4(sin.ip()));
        } else if let Some(sin6) = a.as_sockaddr_in6() {
            out.push(IpAddr::V6(sin6.ip()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Writes the host's addresses ([`local_addresses`]) plus `extra` to `LB_LOCAL_ADDRS`.
/// Returns the number of map writes. A change moves the next-hop generation on: cached
/// flows skip the local-source check, so they must take the full path once more.
pub fn sync_local_addrs(dp: &mut Dataplane, extra: &[IpAddr]) -> Result<usize, ApplyError> {
    let mut addrs = local_addresses()?;
    addrs.extend_from_slice(extra);
    let writes = dp.set_local_addrs(&addrs)?;
    if writes > 0 {
        dp.bump_nexthop_generation()?;
    }
    Ok(writes)
}

/// The ifindex of `iface` in the calling thread's network namespace.
pub fn ifindex(iface: &str) -> Result<u32, ApplyError> {
    let idx = nix::net::if_::if_nametoindex(iface)
        .map_err(|_| ApplyError::NoSuchInterface(iface.to_owned()))?;
    if idx == 0 {
        return Err(ApplyError::NoSuchInterface(iface.to_owned()));
    }
    Ok(idx)
}

/// Registers every interface in `ifaces` as a redirect target (`LB_TX_PORTS`).
pub fn register_tx_ports(dp: &mut Dataplane, ifaces: &[String]) -> Result<Vec<u32>, ApplyError> {
    let mut out = Vec::new();
    for i in ifaces {
        let idx = ifindex(i)?;
        dp.add_tx_port(idx)?;
        out.push(idx);
    }
    Ok(out)
}

/// A running XDP tier: the maps, and one pinned attachment per interface.
#[derive(Debug)]
pub struct Running {
    pub dp: Dataplane,
    /// One per configured interface; pinned, so they outlive the process unless
    /// [`stop`] detaches them.
    pub attachments: Vec<super::loader::PinnedAttachment>,
    /// ifindexes registered as redirect targets.
    pub tx_ports: Vec<u32>,
    pub summary: ApplySummary,
}

/// Brings the XDP tier up for `cfg` (which must have a `[dataplane]` section), in the calling
/// thread's network namespace: loads the object (reusing maps pinned at
/// `dataplane.pin_path`, so flows survive a restart), applies the configuration and live
/// state, records the host's addresses as local, registers every interface as a redirect
/// target and attaches `lb_xdp` to each in the configured mode through links pinned next to
/// the maps (a link left by a previous `lb --keep-dataplane` is reused: its program is
/// replaced atomically). Everything is written before the first attach, so the first packet
/// already sees a complete configuration.
pub fn start(cfg: &Config, registry: &Registry) -> Result<Running, ApplyError> {
    let dpc = cfg.dataplane.as_ref().ok_or(ApplyError::NoDataplane)?;
    for iface in &dpc.interfaces {
        ifindex(iface)?;
    }
    let ebpf = super::loader::load(&super::loader::LoadOptions {
        pin_dir: dpc.pin_path.clone(),
        conntrack_size: dpc.conntrack_size,
        maglev_table_size: dpc.maglev_table_size,
    })?;
    let mut dp = Dataplane::new(ebpf)?;
    // The next-hop cache follows route/neighbour changes; without a watcher it stays off.
    if let Err(e) = super::nexthop::watch(&dpc.pin_path) {
        tracing::warn!("next-hop cache disabled: {e}");
        dp.set_nexthop_lease(lb_common::types::NextHopLease::default())?;
    }
    let summary = apply(&mut dp, cfg, registry)?;
    sync_local_addrs(&mut dp, &[])?;
    let tx_ports = register_tx_ports(&mut dp, &dpc.interfaces)?;
    let mut attachments = Vec::new();
    for iface in &dpc.interfaces {
        attachments.push(super::loader::attach_pinned(
            dp.ebpf_mut(),
            lb_common::maps::programs::LB,
            iface,
            dpc.xdp_mode,
            &dpc.pin_path,
        )?);
    }
    Ok(Running {
        dp,
        attachments,
        tx_ports,
        summary,
    })
}

/// Detaches `lb_xdp` from every configured interface (the normal shutdown; skipped with
/// `--keep-dataplane`). With `remove_maps`, the pinned maps (flows, tables) go too.
pub fn stop(cfg: &Config, remove_maps: bool) -> Result<(), ApplyError> {
    let dpc = cfg.dataplane.as_ref().ok_or(ApplyError::NoDataplane)?;
    for iface in &dpc.interfaces {
        super::loader::detach_pinned(&dpc.pin_path, iface)?;
    }
    if remove_maps {
        std::fs::remove_dir_all(&dpc.pin_path).map_err(|source| ApplyError::RemovePins {
            path: dpc.pin_path.clone(),
            source,
        })?;
    }
    Ok(())
}
