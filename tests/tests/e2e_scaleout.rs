//! Issue #14's lab: a client with 200 source addresses, a router running FRR (bgpd with
//! `maximum-paths`, BFD), three nodes each running lb (XDP, `[announce]`) and BIRD 2, and
//! four backends whose default route is ECMP over the nodes, so replies often return
//! through another node than the one that balanced the request (stateless reverse NAT).
//!
//! 200 long-lived TCP connections and 200 UDP flows send numbered lines that the backends
//! echo with their name. Asserted:
//! - flows spread over the three nodes, and replies of many come back through a node that
//!   has no state for them;
//! - `kill -9` of one node's lb and BIRD: the router drops its next hop through BFD within
//!   about a second, its flows move to the other nodes, which pick the same backends
//!   (shared seed, Maglev): none of the connections the dead node carried breaks, every
//!   line sent is answered, by the backend that answered before;
//! - the node back, then a graceful drain of another (its servers set to `drain` through
//!   the runtime API): withdrawn, flows move, no TCP segment is retransmitted and no UDP
//!   datagram is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use lb_tests::require_root;
use lb_tests::scaleout::{
    ADMIN, BACKEND_PORT, BACKENDS, FlowState, Flows, NODES, Node, ScaleLab, TCP_PORT, UDP_PORT,
    VIP, backend, node_be,
};

const FLOWS: usize = 200;
const PERIOD: Duration = Duration::from_millis(200);

fn lb_config(node: &Node) -> String {
    let servers = |port: u16, check: &str| {
        (1..=BACKENDS)
            .map(|j| format!("\"b{j} {}:{port}{check}\"", backend(j)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"[global]
admin = "{ADMIN}"

[dataplane]
interfaces = ["up0", "be0"]
xdp_mode = "native"
conntrack_size = 16384
pin_path = "{pin}"

[announce]
interface = "lb-vips"
kind = "{kind}"

[defaults]
mode = "tcp"
timeout = {{ client = "60s", connect = "1s", server = "60s" }}

[frontend.vip]
bind = "{VIP}:{TCP_PORT}"
default_backend = "pool"

[frontend.vipu]
bind = "udp@{VIP}:{UDP_PORT}"
default_backend = "poolu"

[backend.pool]
check = {{ interval = "500ms", rise = 1, fall = 2, timeout = "300ms" }}
server = [{tcp}]

[backend.poolu]
server = [{udp}]
"#,
        pin = node.pin_dir,
        kind = lb_tests::bgp::announce_kind(&node.host),
        tcp = servers(BACKEND_PORT, " check"),
        udp = servers(UDP_PORT, ""),
    )
}

/// The node (0-based) a backend's reply to `client:cport` leaves through (its ECMP pick).
fn reply_node(lab: &ScaleLab, client: IpAddr, cport: u16, b: usize) -> Option<usize> {
    let out = lab.backends[b]
        .ip(&[
            "-j",
            "route",
            "get",
            &client.to_string(),
            "from",
            &backend(b + 1),
            "ipproto",
            "tcp",
            "sport",
            &BACKEND_PORT.to_string(),
            "dport",
            &cport.to_string(),
        ])
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let gw = v[0]["gateway"].as_str()?.to_owned();
    (1..=NODES).position(|i| node_be(i) == gw)
}

type Carriers = BTreeMap<usize, BTreeSet<usize>>;

/// Which nodes (0-based) hold each TCP and UDP flow's forward entry now, by flow index.
fn carriers(lab: &ScaleLab, flows: &Flows) -> (Carriers, Carriers) {
    let (tcp, udp) = (flows.tcp_tuples(), flows.udp_tuples());
    let (mut t, mut u) = (Carriers::new(), Carriers::new());
    for i in 0..NODES {
        for (ip, port, proto) in lab.node_flows(i) {
            if proto == lb_common::types::PROTO_TCP {
                if let Some(k) = tcp.get(&(ip, port)) {
                    t.entry(*k).or_default().insert(i);
                }
            } else if let Some(k) = udp.get(&(ip, port)) {
                u.entry(*k).or_default().insert(i);
            }
        }
    }
    (t, u)
}

/// The one node holding each flow (panics when a flow is in several nodes' tables).
fn single(c: &Carriers) -> BTreeMap<usize, usize> {
    c.iter()
        .map(|(k, nodes)| {
            assert_eq!(
                nodes.len(),
                1,
                "flow {k} is in the tables of nodes {nodes:?}"
            );
            (*k, *nodes.iter().next().expect("one node"))
        })
        .collect()
}

fn broken(states: &BTreeMap<IpAddr, FlowState>) -> Vec<String> {
    states
        .iter()
        .filter_map(|(ip, s)| s.broken.as_ref().map(|why| format!("{ip}: {why}")))
        .collect()
}

/// Sequence numbers sent on a flow and never answered, in `from..=to`.
fn lost(s: &FlowState, from: u64, to: u64) -> u64 {
    (from..=to.min(s.sent))
        .filter(|q| !s.answered.contains(q))
        .count() as u64
}

fn udp_lost(flows: &Flows, from: u64, to: u64) -> u64 {
    flows.udp_states().values().map(|s| lost(s, from, to)).sum()
}

fn tcp_unanswered(flows: &Flows) -> Vec<String> {
    flows
        .tcp_states()
        .iter()
        .filter(|(_, s)| lost(s, 1, s.sent) > 0)
        .map(|(ip, s)| format!("{ip}: {} of {} unanswered", lost(s, 1, s.sent), s.sent))
        .collect()
}

/// Ticks the flows until the router's next hops for the VIP are `want`; returns the time
/// it took (bounded by `limit`).
fn tick_until_hops(lab: &ScaleLab, flows: &mut Flows, want: &[usize], limit: Duration) -> Duration {
    let want_set: std::collections::BTreeSet<IpAddr> = want
        .iter()
        .filter_map(|i| lb_tests::scaleout::node_up(i + 1).parse().ok())
        .collect();
    let start = Instant::now();
    let mut next = start;
    loop {
        if lab.hops() == want_set {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "the router's next hops stayed {:?}, expected {want_set:?}\n{}",
            lab.hops(),
            lab.frr.vtysh("show bfd peers brief").unwrap_or_default()
        );
        if Instant::now() >= next {
            flows.tick();
            next += PERIOD;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn flows_survive_kill_and_drain_of_a_node() {
    require_root!();
    let mut lab = ScaleLab::start(FLOWS, lb_config).expect("lab");
    let mut flows = Flows::open(&lab.client, FLOWS, true).expect("flows");
    flows.run(Duration::from_secs(2), PERIOD);
    flows.settle(Duration::from_secs(3));
    let tcp = flows.tcp_states();
    assert_eq!(tcp.len(), FLOWS);
    assert!(broken(&tcp).is_empty(), "{:?}", broken(&tcp));
    assert!(
        broken(&flows.udp_states()).is_empty(),
        "{:?}",
        broken(&flows.udp_states())
    );
    assert!(
        tcp_unanswered(&flows).is_empty(),
        "{:?}",
        tcp_unanswered(&flows)
    );
    assert_eq!(
        udp_lost(&flows, 1, flows_seq(&flows)),
        0,
        "UDP loss at steady state"
    );

    // Spread: every node balances some flows, and many replies return through a node
    // other than the one that balanced the request.
    let (tcp_at, udp_at) = carriers(&lab, &flows);
    let (tcp_at, udp_at) = (single(&tcp_at), single(&udp_at));
    assert_eq!(
        tcp_at.len(),
        FLOWS,
        "every TCP flow is in one node's flow table"
    );
    let mut per_node = [0usize; NODES];
    for i in tcp_at.values() {
        per_node[*i] += 1;
    }
    assert!(
        per_node.iter().all(|n| *n >= 20),
        "TCP flows per node: {per_node:?}"
    );
    let tuples = flows.tcp_tuples();
    let mut asymmetric = 0;
    for ((ip, port), k) in &tuples {
        let b = tcp[ip]
            .backend
            .trim_start_matches('b')
            .parse::<usize>()
            .expect("bN")
            - 1;
        if reply_node(&lab, *ip, *port, b).is_some_and(|r| Some(&r) != tcp_at.get(k)) {
            asymmetric += 1;
        }
    }
    assert!(
        asymmetric >= FLOWS / 4,
        "replies of {asymmetric} of {FLOWS} flows return through another node"
    );
    eprintln!("TCP flows per node {per_node:?}, {asymmetric} with replies through another node");

    // kill -9 of node 2's lb and BIRD.
    let dead = 1;
    let carried: Vec<usize> = tcp_at
        .iter()
        .filter(|(_, n)| **n == dead)
        .map(|(k, _)| *k)
        .collect();
    let carried_udp = udp_at.values().filter(|n| **n == dead).count();
    let before = flows_seq(&flows);
    lab.kill_node(dead);
    let took = tick_until_hops(&lab, &mut flows, &[0, 2], Duration::from_secs(5));
    eprintln!("kill -9: the router dropped the dead node after {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "BFD drops the dead node in ~1 s, not {took:?}"
    );
    flows.run(Duration::from_secs(3), PERIOD);
    flows.settle(Duration::from_secs(5));
    let tcp = flows.tcp_states();
    assert!(
        broken(&tcp).is_empty(),
        "TCP flows broke after kill -9: {:?}",
        broken(&tcp)
    );
    assert!(
        tcp_unanswered(&flows).is_empty(),
        "{:?}",
        tcp_unanswered(&flows)
    );
    let udp_broken = broken(&flows.udp_states());
    assert!(
        udp_broken.is_empty(),
        "UDP flows moved backend: {udp_broken:?}"
    );
    let (now_tcp, _) = carriers(&lab, &flows);
    let moved = carried
        .iter()
        .filter(|k| now_tcp.get(k).is_some_and(|n| n.iter().any(|i| *i != dead)))
        .count();
    assert_eq!(
        moved,
        carried.len(),
        "every flow the dead node carried is now balanced by another node"
    );
    let lost_kill = udp_lost(&flows, before + 1, flows_seq(&flows));
    eprintln!(
        "kill -9: {} TCP and {carried_udp} UDP flows moved off the dead node, none broke; {lost_kill} UDP datagrams lost",
        carried.len()
    );

    // The node comes back.
    lab.start_bird(dead).expect("BIRD again");
    let text = lb_config(&lab.nodes[dead]);
    lab.start_lb(dead, &text).expect("lb again");
    tick_until_hops(&lab, &mut flows, &[0, 1, 2], Duration::from_secs(20));
    flows.run(Duration::from_secs(1), PERIOD);
    flows.settle(Duration::from_secs(3));
    assert!(
        broken(&flows.tcp_states()).is_empty(),
        "{:?}",
        broken(&flows.tcp_states())
    );

    // Graceful drain of node 3: its servers to DRAIN, so it withdraws the VIP.
    let drained = 2;
    let retrans = lab.retransmits();
    let before = flows_seq(&flows);
    let lb = lab.nodes[drained].lb.as_ref().expect("lb on node 3");
    for pool in ["pool", "poolu"] {
        for j in 1..=BACKENDS {
            let (code, body) = lb
                .request("POST", &format!("/api/server/{pool}/b{j}/state"), "drain")
                .expect("runtime API");
            assert_eq!(code, 200, "{body}");
        }
    }
    let took = tick_until_hops(&lab, &mut flows, &[0, 1], Duration::from_secs(10));
    eprintln!("drain: withdrawn after {took:?}");
    flows.run(Duration::from_secs(2), PERIOD);
    flows.settle(Duration::from_secs(3));
    assert!(
        broken(&flows.tcp_states()).is_empty(),
        "{:?}",
        broken(&flows.tcp_states())
    );
    assert!(
        tcp_unanswered(&flows).is_empty(),
        "{:?}",
        tcp_unanswered(&flows)
    );
    let lost_drain = udp_lost(&flows, before + 1, flows_seq(&flows));
    let retrans_drain = lab.retransmits() - retrans;
    eprintln!("drain: {lost_drain} UDP datagrams lost, {retrans_drain} TCP segments retransmitted");
    assert_eq!(lost_drain, 0, "a graceful drain loses no UDP datagram");
    assert_eq!(retrans_drain, 0, "a graceful drain loses no TCP segment");

    // Item 5: the backend set changes, then flows move to nodes without state for them.
    // Node 3 serves again; server b1 of the TCP pool is drained on every node (its flows
    // stay, new ones avoid it); then node 1 dies. Its flows on b1 reach nodes whose Maglev
    // tables no longer hold b1: Maglev alone re-maps every one of them to another server
    // (which resets them); second chance sends them to b1.
    let lb = lab.nodes[drained].lb.as_ref().expect("lb on node 3");
    for pool in ["pool", "poolu"] {
        for j in 1..=BACKENDS {
            let (code, body) = lb
                .request("POST", &format!("/api/server/{pool}/b{j}/state"), "ready")
                .expect("runtime API");
            assert_eq!(code, 200, "{body}");
        }
    }
    tick_until_hops(&lab, &mut flows, &[0, 1, 2], Duration::from_secs(10));
    for n in &lab.nodes {
        let lb = n.lb.as_ref().expect("lb");
        let (code, body) = lb
            .request("POST", "/api/server/pool/b1/state", "drain")
            .expect("runtime API");
        assert_eq!(code, 200, "{body}");
    }
    flows.run(Duration::from_secs(1), PERIOD);
    flows.settle(Duration::from_secs(3));
    let (tcp_at, _) = carriers(&lab, &flows);
    let dead = 0;
    let states = flows.tcp_states();
    let tuples = flows.tcp_tuples();
    let on_b1_dead: Vec<IpAddr> = tuples
        .iter()
        .filter(|(_, k)| tcp_at.get(k).is_some_and(|n| n.contains(&dead)))
        .map(|((ip, _), _)| *ip)
        .filter(|ip| states[ip].backend == "b1")
        .collect();
    // Flows of b1 that no other node has state for (earlier moves left entries behind):
    // wherever ECMP moves them, Maglev alone re-maps them away from b1.
    let cold = tuples
        .iter()
        .filter(|((ip, _), k)| {
            states[ip].backend == "b1"
                && tcp_at
                    .get(k)
                    .is_some_and(|n| n.len() == 1 && n.contains(&dead))
        })
        .count();
    assert!(cold > 0, "node 1 alone carries some flows of b1");
    lab.kill_node(dead);
    tick_until_hops(&lab, &mut flows, &[1, 2], Duration::from_secs(5));
    flows.run(Duration::from_secs(3), PERIOD);
    flows.settle(Duration::from_secs(5));
    let states = flows.tcp_states();
    let broke: Vec<String> = on_b1_dead
        .iter()
        .filter_map(|ip| states[ip].broken.as_ref().map(|w| format!("{ip}: {w}")))
        .collect();
    eprintln!(
        "second chance: {} flows of the drained b1 moved off the dead node, {cold} of them \
         to nodes without state for them (Maglev alone re-maps those); {} broke",
        on_b1_dead.len(),
        broke.len()
    );
    assert!(
        broke.is_empty(),
        "flows of the drained server broke: {broke:?}"
    );
    // Flows of other servers: removing b1 from the tables also moves a few buckets between
    // the remaining servers (Maglev's disruption, not minimal), and second chance covers
    // only buckets that left a drained server: such a flow moved to a node without state
    // for it is reset. Counted, and bounded by that disruption.
    let others = broken(&states);
    let unanswered = |want_b1: bool| -> Vec<String> {
        tcp_unanswered(&flows)
            .into_iter()
            .filter(|l| {
                let ip = l.split(':').next().unwrap_or("");
                let b1 = states
                    .iter()
                    .any(|(a, s)| a.to_string() == ip && s.backend == "b1");
                b1 == want_b1 && !others.iter().any(|o| o.split(':').next() == Some(ip))
            })
            .collect()
    };
    // Second chance keeps every flow of the drained b1 going: none stalls either.
    let stalled_b1 = unanswered(true);
    assert!(stalled_b1.is_empty(), "{stalled_b1:?}");
    // A flow of another server in a moved bucket that reached a node without state for it
    // is lost: its new server resets it, or (when that reset returns through a node whose
    // stale entry names the old server, which therefore does not translate it) it stalls
    // until the client gives up. Both are Maglev's disruption, documented in
    // docs/architecture.md; counted together and bounded.
    let stalled = unanswered(false);
    for line in &stalled {
        let ip = line.split(':').next().unwrap_or("");
        if let Some(((_, port), _)) = tuples.iter().find(|((a, _), _)| a.to_string() == ip) {
            let held: Vec<String> = (0..NODES)
                .filter_map(|n| {
                    let b = lab.node_flow_backends(n);
                    let key = (ip.parse().ok()?, *port, lb_common::types::PROTO_TCP);
                    b.get(&key).map(|id| format!("node {n}: backend id {id}"))
                })
                .collect();
            eprintln!("stalled {line} ({held:?})");
        }
    }
    eprintln!(
        "Maglev disruption: {} of {} flows of other servers lost ({} reset, {} stalled)",
        others.len() + stalled.len(),
        states.values().filter(|s| s.backend != "b1").count(),
        others.len(),
        stalled.len()
    );
    assert!(
        others.len() + stalled.len() <= FLOWS / 20,
        "{others:?} {stalled:?}"
    );
    drop(flows);
}

/// The last sequence number sent.
fn flows_seq(flows: &Flows) -> u64 {
    flows
        .tcp_states()
        .values()
        .map(|s| s.sent)
        .max()
        .unwrap_or(0)
}
