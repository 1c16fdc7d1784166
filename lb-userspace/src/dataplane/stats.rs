//! The XDP tier's counters in the admin API's terms: [`snapshot`] reads the per-CPU maps
//! (summed over CPUs) and names every VIP and backend after the configuration, and
//! [`source`] wraps that as the [`L4Stats`] the admin API polls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use lb_common::types::{PROTO_UDP, Reason};

use super::apply::bind_proto;
use super::maps::{Dataplane, MapsError, vip_key};
use crate::admin::{L4BackendStats, L4FlowTable, L4ReasonStats, L4Snapshot, L4Stats, L4VipStats};
use crate::config::model::{Config, Tier};

/// `drop`, `pass`, `forward`, `flood` or `translate`, and the reason without that prefix.
pub fn reason_parts(r: Reason) -> (&'static str, &'static str) {
    let name = r.name();
    if r == Reason::IcmpTooBigSent {
        return ("reply", "icmp_too_big");
    }
    match name.split_once('_') {
        Some(("pass", rest)) => ("pass", rest),
        Some(("drop", rest)) => ("drop", rest),
        Some(("forward", rest)) => ("forward", rest),
        Some(("flood", rest)) => ("flood", rest),
        _ => ("translate", name),
    }
}

/// Every L4 counter, named after `cfg`.
pub fn snapshot(dp: &Dataplane, cfg: &Config) -> Result<L4Snapshot, MapsError> {
    let mut out = L4Snapshot::default();
    for fe in cfg.frontends.iter().filter(|f| f.tier == Tier::Xdp) {
        for bind in &fe.binds {
            let proto = bind_proto(bind);
            let Some(info) = dp.vip(&vip_key(bind.addr, proto))? else {
                continue;
            };
            let c = dp.vip_counters(info.vip_id)?;
            out.vips.push(L4VipStats {
                frontend: fe.name.clone(),
                vip: bind.addr,
                proto: if proto == PROTO_UDP { "udp" } else { "tcp" }.to_owned(),
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
                flows: dp
                    .occupancy()
                    .and_then(|o| o.per_vip.get(&info.vip_id).copied())
                    .unwrap_or(0),
                non_syn_misses: dp.vip_misses(info.vip_id)?,
            });
        }
    }
    let by_addr: HashMap<SocketAddr, _> = dp.backend_traffic()?.into_iter().collect();
    for fe in cfg.frontends.iter().filter(|f| f.tier == Tier::Xdp) {
        let Some(b) = fe.default_backend.as_deref().and_then(|n| cfg.backend(n)) else {
            continue;
        };
        for s in &b.servers {
            let Some(c) = by_addr.get(&s.addr) else {
                continue;
            };
            if out
                .backends
                .iter()
                .any(|x| x.backend == b.name && x.server == s.name)
            {
                continue;
            }
            out.backends.push(L4BackendStats {
                backend: b.name.clone(),
                server: s.name.clone(),
                addr: s.addr,
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
            });
        }
    }
    out.flow_table = dp.occupancy().map(|o| L4FlowTable {
        v4: o.v4,
        v6: o.v6,
        capacity: o.capacity,
    });
    for (r, packets) in dp.reason_counters()? {
        let (action, reason) = reason_parts(r);
        out.reasons.push(L4ReasonStats {
            action: action.to_owned(),
            reason: reason.to_owned(),
            packets,
        });
    }
    Ok(out)
}

/// An [`L4Stats`] for the admin API: each call reads the maps under the lock and names
/// the counters after the configuration `config` returns at that moment.
pub fn source(
    dp: Arc<Mutex<Dataplane>>,
    config: impl Fn() -> Arc<Config> + Send + Sync + 'static,
) -> Arc<dyn L4Stats> {
    Arc::new(move || -> Result<L4Snapshot, String> {
        let cfg = config();
        let dp = dp
            .lock()
            .map_err(|_| "the dataplane lock is poisoned".to_owned())?;
        snapshot(&dp, &cfg).map_err(|e| e.to_string())
    })
}
