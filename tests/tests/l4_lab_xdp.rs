//! End to end through the XDP tier: real TCP and UDP from a client host, through an lb host
//! running `lb_xdp` (native mode) on all of its veths, to backend hosts whose default route
//! is the lb host. Configured with the public dataplane API (`apply` for the TCP VIP, the
//! `udp@` bind for the UDP VIP). Needs root and `ethtool`.
//!
//! Topology:
//! ```text
//! client 10.0.0.2 ─ eth0 [lb 10.0.0.1 | 10.1.0.1] eth1 ─ b1 10.1.0.10
//!   fd00::2                            [10.2.0.1] eth2 ─ b2 10.2.0.10
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use lb::config::model::{
    Backend as CfgBackend, Balance, Bind, CheckSpec, Config, Dataplane as CfgDataplane, Frontend,
    Global, LogFormat, Mode, Server, Tier, Timeouts, XdpMode,
};
use lb::dataplane::maps::vip_key;
use lb::dataplane::{self, Attachment};
use lb::state::Registry;
use lb_common::maps::DEFAULT_MAGLEV_SIZE;
use lb_common::types::{PROTO_TCP, PROTO_UDP, Reason};
use lb_tests::lab::{Host, Lab};
use lb_tests::require_root;
use nix::sched::{CloneFlags, setns};

const SEED: u32 = 7;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

fn server(name: &str, addr: &str) -> Server {
    Server::new(name, sa(addr))
}

fn config(pin: PathBuf) -> Config {
    let fe = |name: &str, bind: &str, be: &str| Frontend {
        name: name.into(),
        mode: Mode::Tcp,
        tier: Tier::Xdp,
        binds: vec![Bind {
            addr: sa(bind.trim_start_matches("udp@")),
            accept_proxy: false,
            tls: None,
            text: bind.into(),
        }],
        acls: Default::default(),
        http_request: vec![],
        http_response: vec![],
        http_after_response: vec![],
        tcp_request: vec![],
        inspect_delay: None,
        use_backend: vec![],
        default_backend: Some(be.into()),
        timeouts: Timeouts::default(),
        forwardfor: false,
        maxconn: None,
        deny_src: vec![],
        allow_src: vec![],
        errorfiles: Default::default(),
        stats: None,
        max_header_bytes: 16384,
        max_headers: 100,
        log: false,
        log_targets: Vec::new(),
        dontlognull: false,
        stick_table: None,
        compression: None,
    };
    let be = |name: &str, servers: Vec<Server>| CfgBackend {
        name: name.into(),
        mode: Mode::Tcp,
        balance: Balance::RoundRobin,
        cookie: None,
        check: CheckSpec::default(),
        servers,
        timeouts: Timeouts::default(),
        retries: 3,
        redispatch: false,
        forwardfor: false,
        http_request: vec![],
        http_response: vec![],
        http_after_response: vec![],
        tcp_request: vec![],
        inspect_delay: None,
        acls: Default::default(),
        errorfiles: Default::default(),
        stick_table: None,
        log_targets: Vec::new(),
        log_health_checks: false,
        compression: None,
    };
    Config {
        source: PathBuf::from("lab.toml"),
        global: Global {
            admin: sa("127.0.0.1:9100"),
            admin_token: None,
            admin_hosts: Vec::new(),
            stats_sockets: Vec::new(),
            log: Vec::new(),
            log_format: LogFormat::Haproxy,
            threads: None,
            cpu_map: None,
            hash_seed: SEED,
            ssl_cache_size: lb::config::DEFAULT_SSL_CACHE_SIZE,
            maxconn: None,
            process: Default::default(),
        },
        dataplane: Some(CfgDataplane {
            interfaces: vec!["eth0".into(), "eth1".into(), "eth2".into()],
            xdp_mode: XdpMode::Native,
            conntrack_size: 4096,
            conntrack_warn: 90,
            flood_rate: lb::config::model::DEFAULT_FLOOD_RATE,
            maglev_table_size: DEFAULT_MAGLEV_SIZE,
            deny_src: vec![],
            pin_path: pin,
        }),
        announce: None,
        resolvers: Vec::new(),
        frontends: vec![
            fe("edge", "203.0.113.10:80", "pool"),
            fe("edge6", "[2001:db8::10]:80", "pool6"),
            fe("dns", "udp@203.0.113.10:53", "dns"),
        ],
        backends: vec![
            be("dns", vec![server("b2", "10.2.0.10:5353")]),
            be(
                "pool",
                vec![
                    server("b1", "10.1.0.10:8080"),
                    server("b2", "10.2.0.10:8080"),
                ],
            ),
            be(
                "pool6",
                vec![
                    server("b1", "[fd01::10]:8080"),
                    server("b2", "[fd02::10]:8080"),
                ],
            ),
        ],
        caches: Vec::new(),
    }
}

fn registry_for(cfg: &Config) -> Registry {
    let reg = Registry::new();
    lb::health::sync_registry(&reg, cfg);
    reg
}

/// A line-echo TCP server prefixing replies with `tag`.
fn serve_tcp(listener: TcpListener, tag: &'static str) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let Ok(read_half) = conn.try_clone() else {
                    return;
                };
                let mut lines = BufReader::new(read_half);
                let mut line = String::new();
                while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if conn.write_all(format!("{tag}:{line}").as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
}

/// A UDP echo server prefixing replies with `tag`.
fn serve_udp(sock: UdpSocket, tag: &'static str) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut reply = format!("{tag}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&reply, from);
        }
    });
}

fn ethtool(host: &Host, args: &[&str]) {
    host.exec("ethtool", args)
        .expect("ethtool (apt-get install ethtool)");
}

#[test]
fn tcp_and_udp_through_xdp() {
    require_root!();
    let mut lab = Lab::new();
    let c = lab.add_host("client").expect("host");
    let lb = lab.add_host("lb").expect("host");
    let b1 = lab.add_host("b1").expect("host");
    let b2 = lab.add_host("b2").expect("host");
    lab.link(&c, "eth0", &lb, "eth0").expect("link");
    lab.link(&lb, "eth1", &b1, "eth0").expect("link");
    lab.link(&lb, "eth2", &b2, "eth0").expect("link");
    c.addr("eth0", "10.0.0.2/24").expect("addr");
    c.addr("eth0", "fd00::2/64").expect("addr");
    c.route("default", "10.0.0.1").expect("route");
    c.route("default", "fd00::1").expect("route");
    lb.addr("eth0", "10.0.0.1/24").expect("addr");
    lb.addr("eth0", "fd00::1/64").expect("addr");
    lb.addr("eth1", "10.1.0.1/24").expect("addr");
    lb.addr("eth1", "fd01::1/64").expect("addr");
    lb.addr("eth2", "10.2.0.1/24").expect("addr");
    lb.addr("eth2", "fd02::1/64").expect("addr");
    lb.enable_forwarding().expect("forwarding");
    for (b, n) in [(&b1, 1), (&b2, 2)] {
        b.addr("eth0", &format!("10.{n}.0.10/24")).expect("addr");
        b.addr("eth0", &format!("fd0{n}::10/64")).expect("addr");
        b.route("default", &format!("10.{n}.0.1")).expect("route");
        b.route("default", &format!("fd0{n}::1")).expect("route");
    }
    // Local sockets' checksums must be complete when XDP sees them; peers of redirected
    // frames need GRO (or an XDP program) to accept them.
    for h in [&c, &b1, &b2] {
        ethtool(h, &["-K", "eth0", "tx", "off"]);
        ethtool(h, &["-K", "eth0", "gro", "on"]);
    }
    for i in ["eth0", "eth1", "eth2"] {
        ethtool(&lb, &["-K", i, "gro", "on"]);
    }

    // Servers.
    serve_tcp(b1.tcp_listen(sa("10.1.0.10:8080")).expect("listen"), "b1");
    serve_tcp(b2.tcp_listen(sa("10.2.0.10:8080")).expect("listen"), "b2");
    serve_tcp(b1.tcp_listen(sa("[fd01::10]:8080")).expect("listen"), "b1");
    serve_tcp(b2.tcp_listen(sa("[fd02::10]:8080")).expect("listen"), "b2");
    serve_udp(b2.udp_bind(sa("10.2.0.10:5353")).expect("bind"), "b2");

    // The balancer: this thread enters the lb namespace, loads, applies and attaches.
    let ns = File::open(format!("/run/netns/{}", lb.netns)).expect("netns");
    setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/lbtest-lab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pin_dir);
    struct RmPin(PathBuf);
    impl Drop for RmPin {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmPin(pin_dir.clone());
    let cfg = config(pin_dir.clone());
    let reg = registry_for(&cfg);
    let running = dataplane::start(&cfg, &reg).expect("start the XDP tier");
    assert_eq!(running.summary.vips, 3);
    assert_eq!(running.tx_ports.len(), 3);
    assert!(
        running
            .attachments
            .iter()
            .all(|a| a.mode == Some(Attachment::Native))
    );
    let dataplane::Running { dp, .. } = running;

    let udp_vip = sa("203.0.113.10:53");

    // TCP, IPv4 and IPv6: many connections, every one answered, both backends used.
    for vip in [sa("203.0.113.10:80"), sa("[2001:db8::10]:80")] {
        let mut by_backend: BTreeMap<String, u32> = BTreeMap::new();
        for i in 0..24 {
            let mut s = c
                .tcp_connect(vip, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {i} to {vip}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            assert_eq!(s.peer_addr().expect("peer"), vip);
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            for round in 0..3 {
                s.write_all(format!("hello {i} {round}\n").as_bytes())
                    .expect("write");
                let mut line = String::new();
                r.read_line(&mut line)
                    .unwrap_or_else(|e| panic!("reply {i} via {vip}: {e}"));
                let (tag, rest) = line.split_once(':').expect("tagged reply");
                assert_eq!(rest, format!("hello {i} {round}\n"));
                if round == 0 {
                    *by_backend.entry(tag.to_owned()).or_default() += 1;
                }
            }
        }
        assert_eq!(
            by_backend.len(),
            2,
            "{vip}: both backends serve: {by_backend:?}"
        );
        let info = dp
            .vip(&vip_key(vip, PROTO_TCP))
            .expect("vip")
            .expect("configured");
        let counters = dp.vip_counters(info.vip_id).expect("counters");
        assert!(counters.new_flows >= 24, "{vip}: {counters:?}");
        eprintln!("{vip}: {by_backend:?} {counters:?}");
    }

    // UDP: the reply comes from the VIP (the socket is connected to it).
    let sock = c.udp_bind(sa("10.0.0.2:0")).expect("bind");
    sock.connect(udp_vip).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut got = None;
    for _ in 0..5 {
        sock.send(b"ping").expect("send");
        let mut buf = [0u8; 64];
        if let Ok(n) = sock.recv(&mut buf) {
            got = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(got.as_deref(), Some(&b"b2:ping"[..]), "UDP through the VIP");
    let info = dp
        .vip(&vip_key(udp_vip, PROTO_UDP))
        .expect("vip")
        .expect("UDP VIP configured");
    assert!(dp.vip_counters(info.vip_id).expect("counters").new_flows >= 1);

    let reasons: Vec<(Reason, u64)> = dp.reason_counters().expect("counters");
    eprintln!("reasons: {reasons:?}");
    let get = |r: Reason| {
        reasons
            .iter()
            .find(|(x, _)| *x == r)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    assert!(get(Reason::ReverseNat) > 0);
    assert!(
        get(Reason::ForwardRedirect) > 0,
        "the fast path redirected packets"
    );

    // The next-hop cache: `start` ran the rtnetlink watcher, which holds a live lease and
    // bumps the generation when a neighbour changes (established flows then look up again).
    let lease = dp.nexthop_lease().expect("lease");
    assert_ne!(lease.generation, 0, "the watcher is on");
    lb.ip(&[
        "neigh",
        "replace",
        "10.1.0.99",
        "lladdr",
        "02:00:00:00:99:99",
        "dev",
        "eth1",
    ])
    .expect("neigh");
    let t = std::time::Instant::now();
    loop {
        let now = dp.nexthop_lease().expect("lease");
        if now.generation != lease.generation {
            assert!(now.expires_ns > lease.expires_ns || now.expires_ns > 0);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "no new generation after a neighbour change"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Restart with the data plane left attached (`--keep-dataplane`): an established
    // connection keeps working while no lb process exists, and after a new start that
    // reuses the pinned maps and links.
    let vip = sa("203.0.113.10:80");
    let mut conn = c.tcp_connect(vip, Duration::from_secs(5)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut exchange = |msg: &str| -> String {
        conn.write_all(format!("{msg}\n").as_bytes())
            .expect("write");
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{msg}: {e}"));
        let (tag, rest) = line.split_once(':').expect("tagged reply");
        assert_eq!(rest, format!("{msg}\n"));
        tag.to_owned()
    };
    let first = exchange("before");
    drop(dp); // every fd of this "process" closes; the pins keep XDP and the maps
    assert_eq!(exchange("while lb is down"), first);
    let running = dataplane::start(&cfg, &reg).expect("restart");
    assert!(
        running.attachments.iter().all(|a| a.mode.is_none()),
        "pinned links reused"
    );
    assert_eq!(running.summary.writes, 0, "{:?}", running.summary);
    assert_eq!(exchange("after restart"), first);
    // A normal stop detaches; the connection then has no balancer any more.
    drop(running);
    dataplane::stop(&cfg, false).expect("stop");
    let out = lb.ip(&["link", "show", "eth0"]).expect("ip link");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "XDP detached"
    );
}
