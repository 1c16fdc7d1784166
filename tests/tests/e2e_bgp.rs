//! VIP announcement through real BGP daemons (issue #14 item 1): a router running FRR
//! (zebra, bfdd, bgpd with `maximum-paths` and BFD), two lb nodes each running lb (same
//! config, `[announce]`) and BIRD 2 (the `direct` protocol on lb's interface, BFD), one
//! backend reachable from both nodes, and a client behind the router.
//!
//! Asserted: the VIP route appears at the router only once lb announces it, with one ECMP
//! next hop per node; client connections reach the backend through either node; a node
//! whose backend goes DOWN withdraws (and announces again when it comes back UP), and so
//! does one drained through the runtime API; SIGTERM withdraws; after `kill -9` of lb
//! alone BIRD keeps exporting the address, and the unit's `ExecStopPost` command withdraws
//! it; a restarted lb removes stale addresses; `kill -9` of lb and BIRD together loses
//! the next hop through BFD.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lb_tests::bgp::{
    Frr, announce_kind, bird_conf, bird_status, frr_conf, nexthops, start_bird, wait_for,
};
use lb_tests::lab::{Host, Lab};
use lb_tests::lbproc::LbProcess;
use lb_tests::require_root;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const VIP: &str = "198.51.100.10";
const VIP_PREFIX: &str = "198.51.100.10/32";
const BACKEND: &str = "10.60.0.10";
const N1: &str = "10.51.1.2";
const N2: &str = "10.51.2.2";
const IFACE: &str = "lb-vips";
const WAIT: Duration = Duration::from_secs(20);

fn hops(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

#[track_caller]
fn expect_hops(router: &Host, want: &[&str], what: &str) -> Duration {
    let want = hops(want);
    match wait_for(WAIT, || {
        let now = nexthops(router, VIP_PREFIX);
        (now == want, format!("{now:?}"))
    }) {
        Ok(d) => d,
        Err(last) => {
            panic!("{what}: the router's next hops for {VIP} stayed {last}, expected {want:?}")
        }
    }
}

fn lb_config(kind: &str) -> String {
    format!(
        r#"[global]
admin = "127.0.0.1:9100"

[announce]
interface = "{IFACE}"
kind = "{kind}"

[defaults]
mode = "tcp"
timeout = {{ client = "5s", connect = "1s", server = "5s" }}

[frontend.vip]
bind = "{VIP}:80"
default_backend = "pool"

[backend.pool]
check = {{ interval = "200ms", rise = 1, fall = 2, timeout = "200ms" }}
server = "be {BACKEND}:8000 check"
"#
    )
}

/// The addresses on `iface` in `host` (none when the interface is missing).
fn iface_addrs(host: &Host, iface: &str) -> Option<BTreeSet<String>> {
    let out = host.ip(&["-j", "addr", "show", "dev", iface]).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["scope"] != "link")
            .filter_map(|a| a["local"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// The `ExecStopPost=` command of packaging/lb.service, as words (without systemd's `-`).
fn exec_stop_post() -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/lb.service");
    let text = std::fs::read_to_string(&unit).expect("packaging/lb.service");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStopPost="))
        .expect("lb.service has an ExecStopPost= line");
    line.trim_start_matches('-')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A backend that answers each connection with the address it came from (which node).
fn peer_echo(listener: TcpListener, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, peer)) => {
                    let _ = c.write_all(format!("{}\n", peer.ip()).as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

struct StopOnDrop(Arc<AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn vip_announced_through_bird_and_frr_with_ecmp_and_withdrawn() {
    require_root!();
    let mut lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("{}-bgp", lab.id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let router = lab.add_host("router").expect("router");
    let n1 = lab.add_host("n1").expect("n1");
    let n2 = lab.add_host("n2").expect("n2");
    let be = lab.add_host("be").expect("be");
    let client = lab.add_host("client").expect("client");
    lab.link(&router, "n1", &n1, "up0").expect("link");
    lab.link(&router, "n2", &n2, "up0").expect("link");
    lab.link(&router, "client", &client, "eth0").expect("link");
    lab.link(&n1, "be0", &be, "n1").expect("link");
    lab.link(&n2, "be0", &be, "n2").expect("link");
    router.addr("n1", "10.51.1.1/24").expect("addr");
    router.addr("n2", "10.51.2.1/24").expect("addr");
    router.addr("client", "10.53.0.1/24").expect("addr");
    router.enable_forwarding().expect("forwarding");
    // ECMP by 5-tuple, so one client's connections spread over both nodes.
    router
        .sysctl("net.ipv4.fib_multipath_hash_policy=1")
        .expect("hash policy");
    client.addr("eth0", "10.53.0.2/24").expect("addr");
    client.route("default", "10.53.0.1").expect("route");
    be.addr("lo", &format!("{BACKEND}/32")).expect("addr");
    be.addr("n1", "10.52.1.2/24").expect("addr");
    be.addr("n2", "10.52.2.2/24").expect("addr");
    for (n, up, bel, bep) in [
        (&n1, "10.51.1.2/24", "10.52.1.1/24", "10.52.1.2"),
        (&n2, "10.51.2.2/24", "10.52.2.1/24", "10.52.2.2"),
    ] {
        n.addr("up0", up).expect("addr");
        n.addr("be0", bel).expect("addr");
        n.route(&format!("{BACKEND}/32"), bep).expect("route");
        let gw = if up.starts_with("10.51.1") {
            "10.51.1.1"
        } else {
            "10.51.2.1"
        };
        n.route("default", gw).expect("route");
        // lb binds the VIP before it is on the announce interface.
        n.sysctl("net.ipv4.ip_nonlocal_bind=1")
            .expect("nonlocal bind");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let listener = be
        .tcp_listen(SocketAddr::new(BACKEND.parse().expect("ip"), 8000))
        .expect("backend listen");
    let _backend = peer_echo(listener, stop.clone());

    let frr = Frr::start(
        &lab,
        &router,
        &dir.join("frr"),
        &frr_conf("10.51.0.1", 65000, &[(N1, 65001), (N2, 65001)]),
    )
    .expect("FRR");
    let kind = announce_kind(&n1);
    let mut bird_pids = Vec::new();
    for (n, id, nb) in [(&n1, N1, "10.51.1.1"), (&n2, N2, "10.51.2.1")] {
        let conf = bird_conf(
            id,
            65001,
            nb,
            65000,
            IFACE,
            &dir.join(format!("bird-{}.log", n.name)),
        );
        bird_pids.push(start_bird(&lab, n, &dir, &conf).expect("BIRD"));
    }
    let both: BTreeSet<String> = [N1, N2].iter().map(|s| s.to_string()).collect();
    if let Err(last) = wait_for(WAIT, || {
        let e = frr.established();
        (e == both, format!("{e:?}"))
    }) {
        panic!(
            "BGP sessions not established: {last}\n{}\n{}",
            frr.vtysh("show bgp summary").unwrap_or_default(),
            bird_status(&n1, &dir)
        );
    }
    // Sessions up, nothing announced: no route, and the client cannot reach the VIP.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        nexthops(&router, VIP_PREFIX).is_empty(),
        "nothing announces the VIP before lb runs"
    );
    let vip = SocketAddr::new(VIP.parse().expect("ip"), 80);
    assert!(
        client.tcp_connect(vip, Duration::from_millis(500)).is_err(),
        "the VIP is unreachable before it is announced"
    );

    let config = dir.join("lb.toml");
    std::fs::write(&config, lb_config(kind)).expect("config");
    let admin: SocketAddr = "127.0.0.1:9100".parse().expect("admin");
    let lb1 = LbProcess::start(&n1, &config, admin, &[]).expect("lb on n1");
    // The same config on n2 (a file of its own, so each lb logs next to its own).
    std::fs::write(dir.join("lb2.toml"), lb_config(kind)).expect("config");
    let mut lb2 = LbProcess::start(&n2, &dir.join("lb2.toml"), admin, &[]).expect("lb on n2");
    expect_hops(&router, &[N1, N2], "both nodes announce");

    // Traffic: client → router (ECMP) → either node → backend.
    let mut via = BTreeSet::new();
    for _ in 0..32 {
        let c = client
            .tcp_connect(vip, Duration::from_secs(2))
            .expect("connect to the VIP");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut line = String::new();
        BufReader::new(c)
            .read_line(&mut line)
            .expect("backend answers");
        via.insert(line.trim().to_owned());
    }
    assert_eq!(
        via,
        ["10.52.1.1", "10.52.2.1"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "connections to the VIP reached the backend through both nodes"
    );

    // n1's only backend goes DOWN (its link to the backend fails): n1 withdraws.
    n1.ip(&["link", "set", "be0", "down"]).expect("link down");
    expect_hops(
        &router,
        &[N2],
        "a node whose backends are all DOWN withdraws",
    );
    assert_eq!(iface_addrs(&n1, IFACE), Some(BTreeSet::new()));
    n1.ip(&["link", "set", "be0", "up"]).expect("link up");
    // The kernel dropped the route through the link while it was down.
    n1.route(&format!("{BACKEND}/32"), "10.52.1.2")
        .expect("route");
    expect_hops(&router, &[N1, N2], "the backend UP again: announced again");

    // Draining the node through the runtime API (its servers to DRAIN) withdraws it too.
    let (code, body) = lb1
        .request("POST", "/api/server/pool/be/state", "drain")
        .expect("runtime API");
    assert_eq!(code, 200, "{body}");
    expect_hops(
        &router,
        &[N2],
        "a node drained by the runtime API withdraws",
    );
    let (code, body) = lb1
        .request("POST", "/api/server/pool/be/state", "ready")
        .expect("runtime API");
    assert_eq!(code, 200, "{body}");
    expect_hops(&router, &[N1, N2], "ready again: announced again");

    // SIGTERM withdraws, and the interface is gone.
    let st = lb1.stop();
    assert!(st.is_some_and(|s| s.success()), "lb exits 0 on SIGTERM");
    if wait_for(WAIT, || {
        let h = nexthops(&router, VIP_PREFIX);
        (h == hops(&[N2]), format!("{h:?}"))
    })
    .is_err()
    {
        panic!(
            "SIGTERM: {:?}\n{}\n{}\n{:?}",
            nexthops(&router, VIP_PREFIX),
            frr.vtysh("show ip bgp").unwrap_or_default(),
            std::process::Command::new("birdc")
                .arg("-s")
                .arg(dir.join("bird-n1.ctl"))
                .args(["show", "route", "all"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
            n1.ip(&["addr"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        );
    }
    assert_eq!(iface_addrs(&n1, IFACE), None, "lb deleted its interface");
    let mut lb1 = LbProcess::start(&n1, &config, admin, &[]).expect("lb on n1 again");
    expect_hops(&router, &[N1, N2], "restarted lb announces again");

    // kill -9 of lb alone: the address stays on the interface, so BIRD keeps exporting it
    // (this is what ExecStopPost is for) …
    let _ = lb1.child.kill();
    let _ = lb1.child.wait();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        nexthops(&router, VIP_PREFIX),
        hops(&[N1, N2]),
        "a killed lb's address stays exported until something removes it"
    );
    // … and the unit's ExecStopPost command, which systemd runs after any exit, withdraws.
    let cmd = exec_stop_post();
    let args: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
    n1.exec(&cmd[0], &args).expect("ExecStopPost command");
    expect_hops(&router, &[N2], "ExecStopPost withdraws after a crash");

    // A restarted lb removes addresses a previous one left (a VIP no longer configured).
    let _ = lb2.child.kill();
    let _ = lb2.child.wait();
    n2.addr(IFACE, "198.51.100.99/32").expect("stale address");
    assert!(
        wait_for(WAIT, || {
            let h = nexthops(&router, "198.51.100.99/32");
            (!h.is_empty(), format!("{h:?}"))
        })
        .is_ok(),
        "BIRD exports whatever is on the interface"
    );
    lb2 = LbProcess::start(&n2, &dir.join("lb2.toml"), admin, &[]).expect("lb on n2 again");
    let _lb1 = LbProcess::start(&n1, &config, admin, &[]).expect("lb on n1 again");
    expect_hops(&router, &[N1, N2], "both announce again");
    assert_eq!(
        iface_addrs(&n2, IFACE),
        Some([VIP.to_string()].into_iter().collect()),
        "the stale address is gone from the interface"
    );
    assert!(
        wait_for(WAIT, || {
            let h = nexthops(&router, "198.51.100.99/32");
            (h.is_empty(), format!("{h:?}"))
        })
        .is_ok(),
        "the stale address is withdrawn"
    );

    // kill -9 of a whole node (lb and its BIRD): the router drops the next hop (BFD, or the
    // BGP hold time at worst).
    let _ = lb2.child.kill();
    let _ = lb2.child.wait();
    let _ = kill(Pid::from_raw(bird_pids[1] as i32), Signal::SIGKILL);
    let took = expect_hops(&router, &[N1], "a dead node's next hop goes");
    assert!(
        took < Duration::from_secs(3),
        "within BFD detection or the 3 s hold time, not {took:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
