//! L4 end to end: `lb run` with XDP on the balancer host, real TCP and UDP from a client
//! host to VIPs, backends answering with their identity.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lb_tests::l4env::{DENIED_SRC, IO, L4Env, SRC_VIP_PORT, UDP_PORT, VIP_PORT, VIP4, VIP6};
use lb_tests::require_root;

fn vip(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(addr.parse().expect("vip"), port)
}

fn status_of(stats: &serde_json::Value, backend: &str, server: &str) -> Option<String> {
    stats["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == backend)?["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == server)
        .and_then(|s| s["status"].as_str().map(str::to_owned))
}

fn stats(lb: &lb_tests::lbproc::LbProcess) -> serde_json::Value {
    let (code, body) = lb.get("/stats.json").expect("stats.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("stats.json is JSON")
}

#[test]
fn sources_spread_evenly_and_stick_under_balance_source() {
    require_root!();
    let env = L4Env::new(3).expect("lab");
    let sources = env.lab.add_client_sources(240).expect("client sources");
    let lb = env.start_lb(3, &[]).expect("lb run");

    let mut per_backend: BTreeMap<String, u32> = BTreeMap::new();
    for src in &sources {
        let (_conn, who) = env
            .connect(Some(*src), vip(VIP4, VIP_PORT))
            .expect("connect via VIP");
        *per_backend.entry(who).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 3, "all backends used: {per_backend:?}");
    for (b, n) in &per_backend {
        assert!(
            (60..=100).contains(n),
            "backend {b} got {n} of 240 (even is 80 ± 25%)"
        );
    }

    // balance source: the same source always lands on the same backend.
    for src in sources.iter().take(20) {
        let (_c, first) = env
            .connect(Some(*src), vip(VIP4, SRC_VIP_PORT))
            .expect("connect");
        for _ in 0..3 {
            let (_c, again) = env
                .connect(Some(*src), vip(VIP4, SRC_VIP_PORT))
                .expect("connect");
            assert_eq!(again, first, "source {src} moved");
        }
    }
    drop(lb);
}

#[test]
fn ipv6_and_udp_vips_work_and_denied_sources_get_nothing() {
    require_root!();
    let env = L4Env::new(3).expect("lab");
    let denied: IpAddr = DENIED_SRC.parse().expect("addr");
    env.lab
        .client
        .addr("eth0", &format!("{DENIED_SRC}/16"))
        .expect("denied source addr");
    let lb = env.start_lb(3, &[]).expect("lb run");

    let (_c, who) = env.connect(None, vip(VIP6, VIP_PORT)).expect("IPv6 VIP");
    assert!(who.starts_with('b'), "IPv6 VIP answered by {who}");

    let udp = env
        .lab
        .client
        .udp_bind("10.101.0.2:0".parse().expect("addr"))
        .expect("udp socket");
    udp.set_read_timeout(Some(IO)).expect("timeout");
    udp.send_to(b"hello", vip(VIP4, UDP_PORT)).expect("send");
    let mut buf = [0u8; 256];
    let got = udp.recv_from(&mut buf).ok();
    let Some((n, from)) = got else {
        let (_, metrics) = lb.get("/metrics").unwrap_or_default();
        let l4: Vec<&str> = metrics.lines().filter(|l| l.starts_with("lb_l4")).collect();
        let dump = |m: &str| {
            std::process::Command::new("bpftool")
                .args([
                    "-j",
                    "map",
                    "dump",
                    "pinned",
                    &format!("{}/{m}", env.pin_dir),
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        panic!(
            "no UDP reply through the VIP; L4 counters:\n{}\nVIPS {}\nBACKENDS {}",
            l4.join("\n"),
            dump("LB_VIPS"),
            dump("LB_BACKENDS").chars().take(3000).collect::<String>()
        );
    };
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        reply.starts_with('b') && reply.ends_with(":hello"),
        "{reply}"
    );
    assert_eq!(from, vip(VIP4, UDP_PORT), "reply comes from the VIP");

    let denied_try = env.connect(Some(denied), vip(VIP4, VIP_PORT));
    assert!(
        denied_try.is_err(),
        "a denied source must not reach a backend"
    );
}

#[test]
fn down_backend_gets_no_new_connections_and_comes_back() {
    require_root!();
    let mut env = L4Env::new(3).expect("lab");
    let sources = env.lab.add_client_sources(60).expect("sources");
    let lb = env.start_lb(3, &[]).expect("lb run");

    env.stop_backend(2);
    let killed = Instant::now();
    // The bound: fall (2) × interval (200 ms) + 1 s after the kill.
    let bound = killed + Duration::from_millis(2 * 200 + 1000);
    loop {
        if status_of(&stats(&lb), "pool4", "b2").as_deref() == Some("DOWN") {
            break;
        }
        assert!(
            Instant::now() < bound,
            "b2 not DOWN in time: {}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // From the bound on, no new connection may reach b2.
    std::thread::sleep(bound.saturating_duration_since(Instant::now()));
    for src in &sources {
        let (_c, who) = env
            .connect(Some(*src), vip(VIP4, VIP_PORT))
            .expect("connect");
        assert_ne!(who, "b2", "a DOWN backend got a new connection");
    }

    env.start_backend(2).expect("restart b2");
    let deadline = Instant::now() + Duration::from_secs(3);
    while status_of(&stats(&lb), "pool4", "b2").as_deref() != Some("UP") {
        assert!(
            Instant::now() < deadline,
            "b2 not UP again after rise checks"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut seen_b2 = false;
    for src in &sources {
        let (_c, who) = env
            .connect(Some(*src), vip(VIP4, VIP_PORT))
            .expect("connect");
        seen_b2 |= who == "b2";
    }
    assert!(seen_b2, "b2 takes new connections again");
}

#[test]
fn established_connection_survives_adding_a_backend_and_restarting_lb() {
    require_root!();
    let env = L4Env::new(4).expect("lab");
    let lb = env.start_lb(3, &["--keep-dataplane"]).expect("lb run");
    let (mut conn, first) = env.connect(None, vip(VIP4, VIP_PORT)).expect("connect");
    assert_eq!(L4Env::exchange(&mut conn, "one").expect("exchange"), first);

    // Reload with a fourth backend.
    env.write_config(&env.config(4)).expect("config");
    lb.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(&stats(&lb), "pool4", "b4").is_none() {
        assert!(
            Instant::now() < deadline,
            "reload did not add b4: {}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        L4Env::exchange(&mut conn, "two").expect("after reload"),
        first
    );

    // Restart lb, leaving the data plane attached.
    let status = lb.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "lb exits cleanly on SIGTERM"
    );
    assert_eq!(
        L4Env::exchange(&mut conn, "three").expect("while lb is down"),
        first
    );
    let _lb2 = env.start_lb(4, &[]).expect("lb restarted");
    assert_eq!(
        L4Env::exchange(&mut conn, "four").expect("after restart"),
        first
    );
}

/// Issue #14 item 4: bpffs refuses dotted names, so the default pin directory of
/// `lb.test.toml` must not be `/sys/fs/bpf/lb/lb.test`; lb mounts bpffs when it is missing;
/// `lb check` refuses an explicit `pin_path` bpffs would refuse.
#[test]
fn dotted_config_name_starts_the_xdp_tier_and_bpffs_is_mounted_when_missing() {
    require_root!();
    let env = L4Env::new(2).expect("lab");
    // The config without its `pin_path` line: the default comes from the file name.
    let text: String = env
        .config(2)
        .lines()
        .filter(|l| !l.starts_with("pin_path"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = env.write_config_as("lb.test.toml", &text).expect("config");
    let check = |path: &std::path::Path| {
        env.lab
            .lb
            .net_command(
                &lb_tests::lbproc::lb_binary().to_string_lossy(),
                &["check", "-c", &path.to_string_lossy()],
            )
            .output()
            .expect("lb check")
    };
    let out = check(&path);
    assert!(
        out.status.success(),
        "lb check accepts lb.test.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let admin: SocketAddr = lb_tests::l4env::ADMIN.parse().expect("admin");
    let lb = lb_tests::lbproc::LbProcess::start_without_bpffs(&env.lab.lb, &path, admin, &[])
        .expect("lb run from lb.test.toml without bpffs mounted");
    assert!(
        lb.log_text().contains("mounted bpffs at /sys/fs/bpf"),
        "{}",
        lb.log_text()
    );
    let pins = format!("/proc/{}/root/sys/fs/bpf/lb/lb_test", lb.child.id());
    assert!(
        std::path::Path::new(&pins).join("LB_FLOWS_V4").exists(),
        "maps pinned under /sys/fs/bpf/lb/lb_test in lb's mount namespace"
    );
    // The VIP is no local address: only the XDP tier answers it.
    for _ in 0..5 {
        let (mut conn, who) = env.connect(None, vip(VIP4, VIP_PORT)).expect("VIP");
        assert!(who.starts_with('b'), "greeted by a backend: {who}");
        assert_eq!(L4Env::exchange(&mut conn, "hi").expect("exchange"), who);
    }
    drop(lb);

    // An explicit pin_path with a dotted name on bpffs is refused by `lb check`.
    let bad = text.replace(
        "[dataplane]\n",
        "[dataplane]\npin_path = \"/sys/fs/bpf/lb/lb.prod\"\n",
    );
    let bad_path = env.write_config_as("bad.toml", &bad).expect("config");
    let out = check(&bad_path);
    let stdout =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("dataplane.pin_path")
            && stdout.contains("bpffs refuses the name `lb.prod`"),
        "{stdout}"
    );
}

/// Makes backend `b` unable to answer the balancer's own address (a blackhole route for
/// it): health checks from lb fail, while balanced traffic (to the clients' addresses,
/// through lb as the gateway) still flows.
fn drop_checks(b: &lb_tests::lab::Host, on: bool) {
    let verb = if on { "add" } else { "del" };
    b.ip(&["route", verb, "blackhole", "10.102.0.1/32"])
        .expect("blackhole route");
}

fn wait_status(lb: &lb_tests::lbproc::LbProcess, server: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(&stats(lb), "pool4", server).as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{server} not {want} in time: {}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue #19 item 1: a check-only outage (checks dropped, data path fine) breaks none of
/// the server's established flows; with `on-marked-down shutdown-sessions` they are reset.
#[test]
fn check_only_outage_keeps_established_flows_unless_shutdown_sessions() {
    require_root!();
    let env = L4Env::new(3).expect("lab");
    let sources = env.lab.add_client_sources(45).expect("sources");
    let b1 = env.lab.backends[0].clone();
    for shutdown in [false, true] {
        // Only pool4 is checked, so b1's DOWN is one event and one data path update.
        let mut text = env
            .config(3)
            .replace("]:8080 check\"", "]:8080\"")
            .replace(":8081 check\"", ":8081\"");
        if shutdown {
            text = text.replace(
                ":8080 check\"",
                ":8080 check on-marked-down shutdown-sessions\"",
            );
        }
        let path = env.write_config(&text).expect("config");
        let admin: SocketAddr = lb_tests::l4env::ADMIN.parse().expect("admin");
        let lb =
            lb_tests::lbproc::LbProcess::start(&env.lab.lb, &path, admin, &[]).expect("lb run");
        wait_status(&lb, "b1", "UP");
        let mut conns = Vec::new();
        for src in &sources {
            let (c, who) = env
                .connect(Some(*src), vip(VIP4, VIP_PORT))
                .expect("connect");
            conns.push((c, who));
        }
        let on_b1 = conns.iter().filter(|(_, w)| w == "b1").count();
        assert!(on_b1 >= 3, "b1 holds some of the 45 flows: {on_b1}");

        drop_checks(&b1, true);
        wait_status(&lb, "b1", "DOWN");
        // The registry says DOWN; wait for the data path to follow (the update logged
        // after the health check's DOWN line).
        let deadline = Instant::now() + Duration::from_secs(5);
        let shut = loop {
            let log = lb.log_text();
            // Whole lines only (the log may be read while a line is being written), after
            // the health check's DOWN line, of an update that flipped a Maglev table.
            let whole = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
            let updates: Vec<&str> = whole
                .find("Server pool4/b1 is DOWN")
                .map(|at| {
                    whole[at..]
                        .lines()
                        .filter(|l| l.contains("data path updated"))
                        .collect()
                })
                .unwrap_or_default();
            let flipped = updates
                .iter()
                .any(|l| l.contains("tables=") && !l.contains("tables=0"));
            if flipped {
                break updates
                    .iter()
                    .filter_map(|l| l.split("flows_shut=").nth(1))
                    .filter_map(|v| v.split_whitespace().next()?.parse::<usize>().ok())
                    .sum::<usize>();
            }
            assert!(Instant::now() < deadline, "no data path update: {log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        if shutdown {
            assert!(shut >= on_b1, "flows shut: {shut}: {}", lb.log_text());
        } else {
            assert_eq!(shut, 0, "{}", lb.log_text());
        }
        let mut broken_b1 = 0;
        for (c, who) in &mut conns {
            match L4Env::exchange(c, "still there?") {
                Ok(reply) if reply == *who => {}
                _ if who == "b1" => broken_b1 += 1,
                other => panic!("a flow on {who} broke: {other:?}"),
            }
        }
        if shutdown {
            assert_eq!(
                broken_b1, on_b1,
                "shutdown-sessions resets every established flow of b1"
            );
        } else {
            assert_eq!(broken_b1, 0, "a check-only outage breaks no flow of b1");
        }
        // New flows avoid the DOWN server.
        for src in sources.iter().take(15) {
            let (_c, who) = env
                .connect(Some(*src), vip(VIP4, VIP_PORT))
                .expect("connect");
            assert_ne!(who, "b1", "a DOWN server got a new flow: {}", lb.log_text());
        }
        drop_checks(&b1, false);
        drop(conns);
        let _ = lb.stop();
    }
}

/// `echo "$line" | socat stdio unix:PATH`.
fn cli(path: &std::path::Path, line: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("stats socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// Waits for the data path's "shutdown sessions" line number `n` (1-based) and returns
/// the flows it ended.
fn wait_flows_ended(lb: &lb_tests::lbproc::LbProcess, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = lb.log_text();
        let whole = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
        let lines: Vec<&str> = whole
            .lines()
            .filter(|l| l.contains("shutdown sessions: flows ended"))
            .collect();
        if let Some(l) = lines.get(n - 1) {
            return l
                .split("flows=")
                .nth(1)
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
        }
        assert!(Instant::now() < deadline, "no shutdown line {n}: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue #19 item 1: the runtime API's "shutdown sessions" for a server ends its
/// established XDP flows (the next segment of each is reset), through the stats socket
/// for a server still UP (its flows are pointed at another server, which resets them) and
/// through the admin API for a server in MAINT (its flows are removed and re-picked);
/// flows of the other servers carry on.
#[test]
fn shutdown_sessions_resets_the_servers_flows() {
    require_root!();
    let env = L4Env::new(3).expect("lab");
    let sources = env.lab.add_client_sources(45).expect("sources");
    let sock = env.dir.join("admin.sock");
    let text = env.config(3).replacen(
        "[global]\n",
        &format!(
            "[global]\nstats_socket = \"{} level admin\"\n",
            sock.display()
        ),
        1,
    );
    let path = env.write_config(&text).expect("config");
    let admin: SocketAddr = lb_tests::l4env::ADMIN.parse().expect("admin");
    let lb = lb_tests::lbproc::LbProcess::start(&env.lab.lb, &path, admin, &[]).expect("lb run");
    for b in ["b1", "b2", "b3"] {
        wait_status(&lb, b, "UP");
    }
    let mut conns = Vec::new();
    for src in &sources {
        conns.push(
            env.connect(Some(*src), vip(VIP4, VIP_PORT))
                .expect("connect"),
        );
    }
    let on = |n: &str| conns.iter().filter(|(_, w)| w == n).count();
    let (on_b1, on_b2) = (on("b1"), on("b2"));
    assert!(
        on_b1 >= 3 && on_b2 >= 3,
        "flows per server: {on_b1} {on_b2}"
    );

    // b1 is UP: the stats socket command.
    assert_eq!(cli(&sock, "shutdown sessions server pool4/b1"), "\n");
    let ended = wait_flows_ended(&lb, 1);
    assert!(ended >= on_b1, "flows ended: {ended}: {}", lb.log_text());
    let check = |conns: &mut Vec<(std::net::TcpStream, String)>, gone: &str| {
        let mut broken = 0;
        conns.retain_mut(|(c, who)| match L4Env::exchange(c, "still there?") {
            Ok(reply) if reply == *who => true,
            _ if who == gone => {
                broken += 1;
                false
            }
            other => panic!("a flow on {who} broke: {other:?}"),
        });
        broken
    };
    assert_eq!(check(&mut conns, "b1"), on_b1, "every flow of b1 is reset");
    // b1 still takes new flows (it is UP).
    let mut b1_new = 0;
    for src in sources.iter().take(30) {
        let (_c, who) = env
            .connect(Some(*src), vip(VIP4, VIP_PORT))
            .expect("connect");
        b1_new += usize::from(who == "b1");
    }
    assert!(b1_new > 0, "b1 gets new flows after shutdown sessions");

    // b2 in MAINT keeps its flows; the admin API then ends them.
    let (code, body) = lb
        .request("POST", "/api/server/pool4/b2/state", "maint")
        .expect("maint");
    assert_eq!(code, 200, "{body}");
    wait_status(&lb, "b2", "MAINT");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(check(&mut conns, "b2"), 0, "MAINT keeps the flows of b2");
    let (code, body) = lb
        .request("POST", "/api/server/pool4/b2/shutdown-sessions", "")
        .expect("shutdown-sessions");
    assert_eq!(code, 200, "{body}");
    let ended = wait_flows_ended(&lb, 2);
    assert!(ended >= on_b2, "flows ended: {ended}: {}", lb.log_text());
    assert_eq!(check(&mut conns, "b2"), on_b2, "every flow of b2 is reset");
    assert!(
        conns.iter().all(|(_, w)| w == "b3") && !conns.is_empty(),
        "b3's flows remain"
    );
    let (code, _) = lb
        .request("POST", "/api/server/pool4/nope/shutdown-sessions", "")
        .expect("404");
    assert_eq!(code, 404);
}

/// Issue #14 item 3: while lb runs, a client reaching a backend directly through the
/// balancer (its gateway) gets untranslated replies, in both families, while VIP flows to
/// the same backends are still translated.
#[test]
fn clients_reach_backends_directly_through_the_balancer() {
    require_root!();
    let env = L4Env::new(3).expect("lab");
    let lb = env.start_lb(3, &[]).expect("lb run");
    for round in 0..8 {
        for i in 1..=3 {
            for addr in [
                format!("{}:{VIP_PORT}", lb_tests::topology::backend_v4(i)),
                format!("[{}]:{VIP_PORT}", lb_tests::topology::backend_v6(i)),
            ] {
                let to: SocketAddr = addr.parse().expect("addr");
                let (mut conn, who) = env
                    .connect(None, to)
                    .unwrap_or_else(|e| panic!("direct {to} (round {round}): {e}"));
                assert_eq!(who, format!("b{i}"), "greeted by the backend itself");
                assert_eq!(L4Env::exchange(&mut conn, "hi").expect("exchange"), who);
            }
        }
        // The VIPs still balance onto those same backends.
        for v in [vip(VIP4, VIP_PORT), vip(VIP6, VIP_PORT)] {
            let (mut conn, who) = env.connect(None, v).expect("VIP");
            assert!(who.starts_with('b'), "{who}");
            assert_eq!(L4Env::exchange(&mut conn, "hi").expect("exchange"), who);
        }
    }
    let (code, metrics) = lb.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("reverse_nat"), "{metrics}");
}
