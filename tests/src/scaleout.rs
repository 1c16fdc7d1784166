//! The scale-out lab (issue #14): a client with many source addresses, a router running FRR
//! (zebra, bfdd, bgpd with `maximum-paths` and BFD), three lb nodes each running `lb`
//! (XDP, `[announce]`) and BIRD 2, and four backends whose default route is ECMP over the
//! nodes, so a flow's replies often come back through another node than its requests.
//!
//! ```text
//!  client ── (c0)router(uplink) ── [uplink bridge] ── (up0)n1, n2, n3(be0) ── [backend bridge] ── b1..b4
//!  10.70.0.0/16                 10.71.0.0/24                                10.72.0.0/24
//! ```
//! - client 10.70.0.2 and sources 10.70.1.x; router 10.70.0.1 / 10.71.0.1 (AS 65000);
//! - node i: 10.71.0.(10+i) up, 10.72.0.i towards the backends (AS 65001, all nodes);
//! - backend j: 10.72.0.(20+j), default route ECMP via 10.72.0.1-3 (L4 hash);
//! - the VIP 198.51.100.10 (TCP 80 and UDP 5300) is announced by every node whose lb
//!   serves it with a backend UP.
//!
//! Both bridges live in one switch host, so a node that dies leaves the router's and the
//! backends' links up: the router notices through BFD, not through a carrier change.
//!
//! [`Flows`] drives long-lived TCP connections and UDP flows from the client, each from a
//! source address of its own, with one thread and non-blocking sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bgp::{Frr, bird_conf, bird_status, frr_conf, nexthops, start_bird};
use crate::lab::{Host, Lab, LabError, Result};
use crate::lbproc::LbProcess;
use crate::servers::{ServerGuard, tcp_identity, udp_identity};

pub const VIP: &str = "198.51.100.10";
pub const VIP_PREFIX: &str = "198.51.100.10/32";
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 5300;
pub const BACKEND_PORT: u16 = 8000;
pub const ROUTER_UP: &str = "10.71.0.1";
pub const ADMIN: &str = "127.0.0.1:9100";
const ANNOUNCE_IFACE: &str = "lb-vips";
pub const NODES: usize = 3;
pub const BACKENDS: usize = 4;

/// Node `i`'s (1-based) address towards the router.
pub fn node_up(i: usize) -> String {
    format!("10.71.0.{}", 10 + i)
}

/// Node `i`'s address towards the backends (the backends' ECMP next hops).
pub fn node_be(i: usize) -> String {
    format!("10.72.0.{i}")
}

/// Backend `j`'s (1-based) address.
pub fn backend(j: usize) -> String {
    format!("10.72.0.{}", 20 + j)
}

/// Client source address `k` (0-based; up to 250).
pub fn source(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        70,
        1 + (k / 250) as u8,
        1 + (k % 250) as u8,
    ))
}

fn io_err(ns: &str) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        ns: ns.to_owned(),
        source,
    }
}

/// One lb node: its host, its lb (None while stopped or killed) and its BIRD.
#[derive(Debug)]
pub struct Node {
    pub host: Host,
    pub lb: Option<LbProcess>,
    pub bird_pid: Option<u32>,
    pub config: PathBuf,
    pub pin_dir: String,
}

/// The built and running lab.
#[derive(Debug)]
pub struct ScaleLab {
    pub dir: PathBuf,
    pub client: Host,
    pub router: Host,
    pub frr: Frr,
    pub nodes: Vec<Node>,
    pub backends: Vec<Host>,
    pub servers: Vec<ServerGuard>,
    // Dropped last: the namespaces and every process the lab spawned go with it.
    pub lab: Lab,
}

fn ethtool(host: &Host, args: &[&str]) -> Result<()> {
    host.exec("ethtool", args).map(|_| ())
}

impl ScaleLab {
    /// Builds the topology with `sources` client source addresses, starts FRR, the
    /// backends' servers, BIRD and lb (with `lb_config(node)` as its config) on every
    /// node, and waits (bounded) until every BGP session is up and every node announces
    /// the VIP.
    pub fn start(sources: usize, lb_config: impl Fn(&Node) -> String) -> Result<Self> {
        let mut lab = Lab::new();
        let dir = std::env::temp_dir().join(format!("{}-scale", lab.id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err("tmp"))?;
        let client = lab.add_host("client")?;
        let router = lab.add_host("router")?;
        let sw = lab.add_host("sw")?;
        for br in ["brup", "brbe"] {
            sw.ip(&["link", "add", br, "type", "bridge"])?;
            sw.ip(&["link", "set", br, "up"])?;
        }
        lab.link(&client, "eth0", &router, "c0")?;
        lab.link(&router, "uplink", &sw, "router")?;
        sw.ip(&["link", "set", "router", "master", "brup"])?;
        client.addr("eth0", "10.70.0.2/16")?;
        client.route("default", "10.70.0.1")?;
        for k in 0..sources {
            client.addr("eth0", &format!("{}/16", source(k)))?;
        }
        ethtool(&client, &["-K", "eth0", "tx", "off"])?;
        router.addr("c0", "10.70.0.1/16")?;
        router.addr("uplink", &format!("{ROUTER_UP}/24"))?;
        router.enable_forwarding()?;
        router.sysctl("net.ipv4.fib_multipath_hash_policy=1")?;

        let mut nodes = Vec::new();
        for i in 1..=NODES {
            let n = lab.add_host(&format!("n{i}"))?;
            let (up_port, be_port) = (format!("n{i}up"), format!("n{i}be"));
            lab.link(&n, "up0", &sw, &up_port)?;
            lab.link(&n, "be0", &sw, &be_port)?;
            sw.ip(&["link", "set", &up_port, "master", "brup"])?;
            sw.ip(&["link", "set", &be_port, "master", "brbe"])?;
            // XDP redirects into these veths: GRO gives their peers the NAPI context.
            ethtool(&sw, &["-K", &up_port, "gro", "on"])?;
            ethtool(&sw, &["-K", &be_port, "gro", "on"])?;
            ethtool(&n, &["-K", "up0", "gro", "on"])?;
            ethtool(&n, &["-K", "be0", "gro", "on"])?;
            n.addr("up0", &format!("{}/24", node_up(i)))?;
            n.addr("be0", &format!("{}/24", node_be(i)))?;
            n.route("default", ROUTER_UP)?;
            n.enable_forwarding()?;
            n.sysctl("net.ipv4.conf.all.rp_filter=0")?;
            n.sysctl("net.ipv4.conf.default.rp_filter=0")?;
            nodes.push(Node {
                config: dir.join(format!("lb-n{i}.toml")),
                pin_dir: format!("/sys/fs/bpf/{}-n{i}", lab.id()),
                host: n,
                lb: None,
                bird_pid: None,
            });
        }
        let hops: Vec<String> = (1..=NODES)
            .flat_map(|i| ["nexthop".to_owned(), "via".to_owned(), node_be(i)])
            .collect();
        let mut backends = Vec::new();
        for j in 1..=BACKENDS {
            let b = lab.add_host(&format!("b{j}"))?;
            let port = format!("b{j}");
            lab.link(&b, "eth0", &sw, &port)?;
            sw.ip(&["link", "set", &port, "master", "brbe"])?;
            ethtool(&sw, &["-K", &port, "gro", "on"])?;
            ethtool(&b, &["-K", "eth0", "tx", "off"])?;
            b.addr("eth0", &format!("{}/24", backend(j)))?;
            // Replies leave by ECMP over the nodes, hashed on ports too.
            b.sysctl("net.ipv4.fib_multipath_hash_policy=1")?;
            let mut args: Vec<&str> = vec!["route", "add", "default"];
            args.extend(hops.iter().map(String::as_str));
            b.ip(&args)?;
            backends.push(b);
        }
        let mut servers = Vec::new();
        for (j, b) in backends.iter().enumerate() {
            let name = format!("b{}", j + 1);
            let ip: IpAddr = backend(j + 1)
                .parse()
                .map_err(|_| LabError::NoHost(backend(j + 1)))?;
            servers.push(tcp_identity(
                b.tcp_listen(SocketAddr::new(ip, BACKEND_PORT))?,
                &name,
            ));
            servers.push(udp_identity(
                b.udp_bind(SocketAddr::new(ip, UDP_PORT))?,
                &name,
            ));
        }

        let neighbors: Vec<(String, u32)> = (1..=NODES).map(|i| (node_up(i), 65001)).collect();
        let nb: Vec<(&str, u32)> = neighbors.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        let frr = Frr::start(
            &lab,
            &router,
            &dir.join("frr"),
            &frr_conf(ROUTER_UP, 65000, &nb),
        )?;
        let mut this = ScaleLab {
            dir,
            client,
            router,
            frr,
            nodes,
            backends,
            servers,
            lab,
        };
        for i in 0..NODES {
            this.start_bird(i)?;
        }
        let all: BTreeSet<String> = (1..=NODES).map(node_up).collect();
        if let Err(last) = crate::bgp::wait_for(Duration::from_secs(30), || {
            let e = this.frr.established();
            (e == all, format!("{e:?}"))
        }) {
            return Err(LabError::Command {
                cmd: "BGP sessions".into(),
                stderr: format!(
                    "not established: {last}\n{}\n{}",
                    this.frr.vtysh("show bgp summary").unwrap_or_default(),
                    bird_status(&this.nodes[0].host, &this.dir)
                ),
            });
        }
        for i in 0..NODES {
            let text = lb_config(&this.nodes[i]);
            this.start_lb(i, &text)?;
        }
        this.wait_hops(&(0..NODES).collect::<Vec<_>>(), Duration::from_secs(20))
            .map_err(|last| LabError::Command {
                cmd: "announce".into(),
                stderr: format!("the router's next hops stayed {last}"),
            })?;
        Ok(this)
    }

    /// Starts (again) BIRD on node `i` (0-based).
    pub fn start_bird(&mut self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let conf = bird_conf(
            &node_up(i + 1),
            65001,
            ROUTER_UP,
            65000,
            ANNOUNCE_IFACE,
            &self.dir.join(format!("bird-{}.log", n.host.name)),
        );
        let pid = start_bird(&self.lab, &n.host, &self.dir, &conf)?;
        self.nodes[i].bird_pid = Some(pid);
        Ok(())
    }

    /// Writes `text` as node `i`'s config and starts lb there.
    pub fn start_lb(&mut self, i: usize, text: &str) -> Result<()> {
        let n = &self.nodes[i];
        std::fs::write(&n.config, text).map_err(io_err("tmp"))?;
        let admin: SocketAddr = ADMIN.parse().map_err(|_| LabError::NoHost(ADMIN.into()))?;
        let lb = LbProcess::start(&n.host, &n.config, admin, &[])?;
        self.nodes[i].lb = Some(lb);
        Ok(())
    }

    /// `kill -9` of node `i`'s lb and BIRD together. The XDP program stays attached (its
    /// links are pinned), as after any crash of lb.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut lb) = self.nodes[i].lb.take() {
            let _ = lb.child.kill();
            let _ = lb.child.wait();
        }
        if let Some(pid) = self.nodes[i].bird_pid.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The router's next hops for the VIP.
    pub fn hops(&self) -> BTreeSet<IpAddr> {
        nexthops(&self.router, VIP_PREFIX)
    }

    /// Waits until the router's next hops for the VIP are exactly `nodes` (0-based);
    /// returns how long it took.
    pub fn wait_hops(
        &self,
        nodes: &[usize],
        limit: Duration,
    ) -> std::result::Result<Duration, String> {
        let want: BTreeSet<IpAddr> = nodes
            .iter()
            .filter_map(|i| node_up(i + 1).parse().ok())
            .collect();
        crate::bgp::wait_for(limit, || {
            let now = self.hops();
            (now == want, format!("{now:?}"))
        })
    }

    /// The forward flows (client address, client port, protocol) in node `i`'s pinned flow
    /// table whose destination is the VIP.
    pub fn node_flows(&self, i: usize) -> BTreeSet<(IpAddr, u16, u8)> {
        self.node_flow_backends(i).into_keys().collect()
    }

    /// Node `i`'s forward entries of VIP flows: (client address, port, protocol) → backend id.
    pub fn node_flow_backends(&self, i: usize) -> BTreeMap<(IpAddr, u16, u8), u32> {
        let path = Path::new(&self.nodes[i].pin_dir).join("LB_FLOWS_V4");
        let mut out = BTreeMap::new();
        let Ok(data) = aya::maps::MapData::from_pin(&path) else {
            return out;
        };
        let map = aya::maps::Map::LruHashMap(data);
        let Ok(flows) = aya::maps::HashMap::<
            _,
            lb_common::types::FlowKeyV4,
            lb_common::types::FlowValue,
        >::try_from(&map) else {
            return out;
        };
        let vip = u32::from_ne_bytes(VIP.parse::<Ipv4Addr>().map_or([0; 4], |a| a.octets()));
        for (k, v) in flows.iter().flatten() {
            if k.dst == vip {
                let src = Ipv4Addr::from(k.src.to_ne_bytes());
                out.insert(
                    (IpAddr::V4(src), u16::from_be(k.sport), k.proto),
                    v.backend_id,
                );
            }
        }
        out
    }

    /// `cat /proc/net/snmp` field `field` of protocol line `proto` (e.g. `Tcp`,
    /// `RetransSegs`) in `host`.
    pub fn snmp(host: &Host, proto: &str, field: &str) -> u64 {
        let Ok(out) = host.exec("cat", &["/proc/net/snmp"]) else {
            return 0;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let prefix = format!("{proto}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return 0;
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == field)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    }

    /// TCP segments retransmitted by the client and every backend so far.
    pub fn retransmits(&self) -> u64 {
        std::iter::once(&self.client)
            .chain(&self.backends)
            .map(|h| Self::snmp(h, "Tcp", "RetransSegs"))
            .sum()
    }
}

impl Drop for ScaleLab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.lb.take();
        }
        for n in &self.nodes {
            let _ = std::fs::remove_dir_all(&n.pin_dir);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What became of one flow.
#[derive(Debug, Clone, Default)]
pub struct FlowState {
    /// The backend that answers it (from its first reply).
    pub backend: String,
    /// Sequence numbers sent / answered.
    pub sent: u64,
    pub answered: BTreeSet<u64>,
    /// Why it broke (a reset, EOF, another backend answering), if it did.
    pub broken: Option<String>,
}

struct TcpFlow {
    conn: TcpStream,
    buf: Vec<u8>,
    state: FlowState,
}

struct UdpFlow {
    sock: UdpSocket,
    state: FlowState,
}

/// Long-lived flows from the client to the VIP: `n` TCP connections and `n` UDP flows,
/// flow `k` from [`source`]`(k)`. Each [`Flows::tick`] sends one numbered line on every
/// flow and reads what came back; the backends' identity servers answer `NAME:SEQ`.
pub struct Flows {
    tcp: Vec<TcpFlow>,
    udp: Vec<UdpFlow>,
    seq: u64,
}

impl Flows {
    /// Opens the flows (TCP: connected, greeted by a backend).
    pub fn open(client: &Host, n: usize, udp: bool) -> Result<Self> {
        let vip: IpAddr = VIP.parse().map_err(|_| LabError::NoHost(VIP.into()))?;
        let mut tcp = Vec::new();
        for k in 0..n {
            let conn = client.tcp_connect_from(
                source(k),
                SocketAddr::new(vip, TCP_PORT),
                Duration::from_secs(3),
            )?;
            conn.set_nonblocking(true).map_err(io_err("client"))?;
            tcp.push(TcpFlow {
                conn,
                buf: Vec::new(),
                state: FlowState::default(),
            });
        }
        let mut udps = Vec::new();
        if udp {
            for k in 0..n {
                let sock = client.udp_bind(SocketAddr::new(source(k), 0))?;
                sock.connect(SocketAddr::new(vip, UDP_PORT))
                    .map_err(io_err("client"))?;
                sock.set_nonblocking(true).map_err(io_err("client"))?;
                udps.push(UdpFlow {
                    sock,
                    state: FlowState::default(),
                });
            }
        }
        let mut flows = Flows {
            tcp,
            udp: udps,
            seq: 0,
        };
        // The TCP greeting names the backend.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && flows
                .tcp
                .iter()
                .any(|f| f.state.backend.is_empty() && f.state.broken.is_none())
        {
            flows.read();
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(flows)
    }

    /// Sends sequence number `seq` on every unbroken flow, then reads.
    pub fn tick(&mut self) {
        self.seq += 1;
        let line = format!("{}\n", self.seq);
        for f in &mut self.tcp {
            if f.state.broken.is_some() {
                continue;
            }
            match f.conn.write_all(line.as_bytes()) {
                Ok(()) => f.state.sent = self.seq,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => f.state.broken = Some(format!("write: {e}")),
            }
        }
        for f in &mut self.udp {
            match f.sock.send(self.seq.to_string().as_bytes()) {
                Ok(_) => f.state.sent = self.seq,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // ICMP errors surface on the next call of a connected socket.
                Err(e) => f.state.broken = Some(format!("send: {e}")),
            }
        }
        self.read();
    }

    /// Reads every reply available now.
    pub fn read(&mut self) {
        let mut chunk = [0u8; 4096];
        for f in &mut self.tcp {
            if f.state.broken.is_some() {
                continue;
            }
            loop {
                match f.conn.read(&mut chunk) {
                    Ok(0) => {
                        f.state.broken = Some("EOF".into());
                        break;
                    }
                    Ok(n) => f.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        f.state.broken = Some(format!("read: {e}"));
                        break;
                    }
                }
            }
            while let Some(at) = f.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = f.buf.drain(..=at).collect();
                let line = String::from_utf8_lossy(&line).trim().to_owned();
                note(&mut f.state, &line);
            }
        }
        for f in &mut self.udp {
            loop {
                match f.sock.recv(&mut chunk) {
                    Ok(n) => {
                        let line = String::from_utf8_lossy(&chunk[..n]).into_owned();
                        note(&mut f.state, &line);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        f.state.broken.get_or_insert(format!("recv: {e}"));
                        break;
                    }
                }
            }
        }
    }

    /// Ticks every `period` for `total`.
    pub fn run(&mut self, total: Duration, period: Duration) {
        let end = Instant::now() + total;
        while Instant::now() < end {
            let next = Instant::now() + period;
            self.tick();
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }

    /// Reads (bounded by `limit`) until every unbroken flow has an answer to the last
    /// sequence number sent.
    pub fn settle(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.read();
            let pending = self
                .tcp
                .iter()
                .map(|f| &f.state)
                .chain(self.udp.iter().map(|f| &f.state))
                .any(|s| s.broken.is_none() && s.sent > 0 && !s.answered.contains(&s.sent));
            if !pending {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCP flows' states, by client source address.
    pub fn tcp_states(&self) -> BTreeMap<IpAddr, FlowState> {
        self.tcp
            .iter()
            .filter_map(|f| Some((f.conn.local_addr().ok()?.ip(), f.state.clone())))
            .collect()
    }

    /// The client ports of the TCP flows, by source address (to match flow-table entries).
    pub fn tcp_tuples(&self) -> BTreeMap<(IpAddr, u16), usize> {
        self.tcp
            .iter()
            .enumerate()
            .filter_map(|(k, f)| {
                let a = f.conn.local_addr().ok()?;
                Some(((a.ip(), a.port()), k))
            })
            .collect()
    }

    /// The UDP flows' states, by client source address.
    pub fn udp_states(&self) -> BTreeMap<IpAddr, FlowState> {
        self.udp
            .iter()
            .filter_map(|f| Some((f.sock.local_addr().ok()?.ip(), f.state.clone())))
            .collect()
    }

    /// The UDP flows' client tuples.
    pub fn udp_tuples(&self) -> BTreeMap<(IpAddr, u16), usize> {
        self.udp
            .iter()
            .enumerate()
            .filter_map(|(k, f)| {
                let a = f.sock.local_addr().ok()?;
                Some(((a.ip(), a.port()), k))
            })
            .collect()
    }
}

/// Records reply `line` (`NAME:SEQ`, or the TCP greeting `NAME`) on a flow.
fn note(state: &mut FlowState, line: &str) {
    let (name, seq) = match line.split_once(':') {
        Some((n, s)) => (n, s.trim().parse::<u64>().ok()),
        None => (line, None),
    };
    if state.backend.is_empty() {
        state.backend = name.to_owned();
    } else if state.backend != name {
        state
            .broken
            .get_or_insert(format!("answered by {name}, not {}", state.backend));
    }
    if let Some(s) = seq {
        state.answered.insert(s);
    }
}
