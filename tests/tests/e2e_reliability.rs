//! Issue #19's reload and crash guarantees as regression tests, with real `lb run`
//! processes in the namespaced lab: 20 reloads that add and remove backends (XDP and L7)
//! under 200 long-lived L4 flows and keep-alive plus `Connection: close` L7 requests break
//! no flow and fail no request; `kill -9` of lb with `--keep-dataplane`, then a restart,
//! breaks no flow. The load is light: the flows send a line about once a second each, and
//! the L7 clients are bounded in count and time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_tests::l4env::{L4Env, VIP_PORT, VIP4};
use lb_tests::lbproc::LbProcess;
use lb_tests::require_root;
use lb_tests::servers::{ServerGuard, http_identity};
use lb_tests::topology::{LB_CLIENT_SIDE_V4, backend_v4};
use socket2::{Domain, Socket, Type};

const FLOWS: usize = 200;
const HTTP_PORT: u16 = 8000;
const WEB_PORT: u16 = 8090;

/// Sets the flag when dropped (panics included), so load threads stop and the lab goes.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn vip() -> SocketAddr {
    SocketAddr::new(VIP4.parse().expect("vip"), VIP_PORT)
}

fn web() -> SocketAddr {
    format!("{LB_CLIENT_SIDE_V4}:{WEB_PORT}")
        .parse()
        .expect("web addr")
}

/// `env.config(n)` plus an L7 frontend on the balancer's client-side address whose
/// backend has the HTTP servers of backends `1..=n`.
fn config(env: &L4Env, n: usize) -> String {
    let servers = (1..=n)
        .map(|i| format!("\"w{i} {}:{HTTP_PORT} check\"", backend_v4(i)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"{}
[frontend.web]
mode = "http"
bind = ["{}"]
default_backend = "web"

[backend.web]
mode = "http"
check = {{ interval = "200ms", rise = 2, fall = 2, timeout = "150ms" }}
server = [{servers}]
"#,
        env.config(n),
        web()
    )
}

fn start_http(env: &L4Env, n: usize) -> Vec<ServerGuard> {
    (1..=n)
        .map(|i| {
            let addr: SocketAddr = format!("{}:{HTTP_PORT}", backend_v4(i))
                .parse()
                .expect("addr");
            let l = env.lab.backends[i - 1].tcp_listen(addr).expect("listen");
            http_identity(l, &format!("w{i}"))
        })
        .collect()
}

fn start(env: &L4Env, n: usize, extra: &[&str]) -> LbProcess {
    let path = env.write_config(&config(env, n)).expect("config");
    LbProcess::start(
        &env.lab.lb,
        &path,
        lb_tests::l4env::ADMIN.parse().expect("admin"),
        extra,
    )
    .expect("lb run")
}

fn server_names(lb: &LbProcess, backend: &str) -> Vec<String> {
    let (code, body) = lb.get("/stats.json").expect("stats.json");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == backend))
        .and_then(|b| b["servers"].as_array())
        .map(|ss| {
            ss.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every server of `backend` reports UP (bounded).
fn wait_all_up(lb: &LbProcess, backend: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = lb.get("/stats.json").expect("stats.json");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let up = v["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["name"] == backend))
            .and_then(|b| b["servers"].as_array())
            .map_or(0, |ss| ss.iter().filter(|s| s["status"] == "UP").count());
        if up == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: {up} of {n} servers UP: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 200 L4 connections through the VIP from 40 source addresses, each with the backend
/// that greeted it.
fn open_flows(env: &L4Env) -> Vec<(TcpStream, String)> {
    let sources = env.lab.add_client_sources(40).expect("sources");
    (0..FLOWS)
        .map(|i| {
            env.connect(Some(sources[i % sources.len()]), vip())
                .expect("flow connect")
        })
        .collect()
}

/// Sends a line on every flow about once a second until `stop` (or `limit`); returns the
/// number of exchanges and the flows that broke (an error, or an answer from another
/// backend than the one that greeted the flow).
fn drive_flows(
    flows: Vec<(TcpStream, String)>,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut exchanges = 0u32;
        let mut broken = Vec::new();
        let mut alive: Vec<(TcpStream, String, usize)> =
            flows.into_iter().map(|(c, who)| (c, who, 0)).collect();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
            let round = Instant::now();
            let mut i = 0;
            while i < alive.len() {
                let (conn, who, n) = &mut alive[i];
                *n += 1;
                match L4Env::exchange(conn, &format!("ping{n}")) {
                    Ok(got) if got == *who => {
                        exchanges += 1;
                        i += 1;
                    }
                    other => {
                        broken.push(format!("flow {i} on {who}: {other:?}"));
                        alive.swap_remove(i);
                    }
                }
            }
            if let Some(rest) = Duration::from_secs(1).checked_sub(round.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        (exchanges, broken)
    })
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns (status, body).
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::Error::other("EOF in the head"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// L7 load from the client host until `stop`, at most `max` requests or `limit`: with
/// `keep_alive`, 20 requests per connection; otherwise one request per connection with
/// `Connection: close`. Returns (ok, failures).
fn drive_http(
    env: &Arc<L4Env>,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    max: u32,
    limit: Duration,
) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    let env = Arc::clone(env);
    std::thread::spawn(move || {
        let started = Instant::now();
        let (mut ok, mut failed) = (0u32, Vec::new());
        let per_conn = if keep_alive { 20 } else { 1 };
        while !stop.load(Ordering::Relaxed) && started.elapsed() < limit && ok < max {
            let conn = match env.lab.client.tcp_connect(web(), Duration::from_secs(3)) {
                Ok(c) => c,
                Err(e) => {
                    failed.push(format!("connect: {e}"));
                    continue;
                }
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let (Ok(mut w), mut r) = (conn.try_clone(), BufReader::new(conn)) else {
                failed.push("clone".into());
                continue;
            };
            for k in 0..per_conn {
                let close = if k + 1 == per_conn && !keep_alive {
                    "Connection: close\r\n"
                } else {
                    ""
                };
                let req = format!("GET /r{k} HTTP/1.1\r\nHost: web\r\n{close}\r\n");
                let res = w
                    .write_all(req.as_bytes())
                    .and_then(|()| read_response(&mut r));
                match res {
                    Ok((200, body)) if body.starts_with('w') => ok += 1,
                    other => {
                        failed.push(format!("request {k} (keep-alive {keep_alive}): {other:?}"));
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        (ok, failed)
    })
}

#[test]
fn twenty_reloads_adding_and_removing_backends_break_no_flow_and_fail_no_request() {
    require_root!();
    let env = Arc::new(L4Env::new(4).expect("lab"));
    let _http = start_http(&env, 4);
    let lb = start(&env, 3, &[]);
    wait_all_up(&lb, "pool4", 3);
    wait_all_up(&lb, "web", 3);

    let flows = open_flows(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopOnDrop(stop.clone());
    let limit = Duration::from_secs(90);
    let l4 = drive_flows(flows, stop.clone(), limit);
    let keep_alive = drive_http(&env, true, stop.clone(), 20_000, limit);
    let close = drive_http(&env, false, stop.clone(), 20_000, limit);
    std::thread::sleep(Duration::from_millis(1500));

    // b4 (L4) and w4 (L7) come and go: odd reloads add them, even ones remove them again.
    for reload in 1..=20 {
        let n = if reload % 2 == 1 { 4 } else { 3 };
        env.write_config(&config(&env, n)).expect("config");
        lb.signal(nix::sys::signal::Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server_names(&lb, "web").len() != n || server_names(&lb, "pool4").len() != n {
            assert!(
                Instant::now() < deadline,
                "reload {reload} did not apply: {}",
                lb.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if n == 4 {
            wait_all_up(&lb, "web", 4);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (exchanges, broken) = l4.join().expect("flow thread");
    let (ka_ok, ka_failed) = keep_alive.join().expect("keep-alive thread");
    let (close_ok, close_failed) = close.join().expect("close thread");
    eprintln!(
        "flows: {exchanges} exchanges, {} broken; keep-alive: {ka_ok} ok, {} failed; \
         close: {close_ok} ok, {} failed",
        broken.len(),
        ka_failed.len(),
        close_failed.len()
    );
    assert!(broken.is_empty(), "broken flows: {broken:?}");
    assert!(ka_failed.is_empty(), "keep-alive failures: {ka_failed:?}");
    assert!(close_failed.is_empty(), "close failures: {close_failed:?}");
    assert!(
        exchanges as usize >= FLOWS * 5,
        "only {exchanges} flow exchanges"
    );
    assert!(
        ka_ok > 100 && close_ok > 100,
        "too few requests: {ka_ok} / {close_ok}"
    );
}

#[test]
fn kill_9_with_keep_dataplane_then_restart_breaks_no_flow() {
    require_root!();
    let env = Arc::new(L4Env::new(3).expect("lab"));
    let mut lb = start(&env, 3, &["--keep-dataplane"]);
    wait_all_up(&lb, "pool4", 3);
    let flows = open_flows(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopOnDrop(stop.clone());
    let l4 = drive_flows(flows, stop.clone(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));

    lb.child.kill().expect("kill -9");
    let status = lb.child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    // lb is gone; the XDP program stays attached: flows keep flowing and new connections
    // are still balanced.
    std::thread::sleep(Duration::from_millis(2500));
    for i in 0..20 {
        let (_c, who) = env
            .connect(None, vip())
            .unwrap_or_else(|e| panic!("new connection {i} while lb is dead: {e}"));
        assert!(who.starts_with('b'), "{who}");
    }

    let lb2 = start(&env, 3, &["--keep-dataplane"]);
    wait_all_up(&lb2, "pool4", 3);
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let (exchanges, broken) = l4.join().expect("flow thread");
    eprintln!("flows: {exchanges} exchanges, {} broken", broken.len());
    assert!(broken.is_empty(), "broken flows: {broken:?}");
    assert!(
        exchanges as usize >= FLOWS * 4,
        "only {exchanges} flow exchanges"
    );
    for _ in 0..20 {
        let (_c, who) = env.connect(None, vip()).expect("connect after restart");
        assert!(who.starts_with('b'), "{who}");
    }
}

/// `env.config(n)` with a 1024-entry flow table and flood mode at `flood_rate`.
fn flood_config(env: &L4Env, n: usize, flood_rate: u32) -> String {
    let text = env.config(n);
    assert!(text.contains("conntrack_size = 65536"), "{text}");
    text.replace(
        "conntrack_size = 65536",
        &format!("conntrack_size = 1024\nflood_rate = {flood_rate}"),
    )
}

/// Sends up to `count` real TCP SYNs to `vip` from random sources in 198.18.0.0/15
/// (xorshift from `seed`) for at most `limit`, from the client's kernel: each socket binds
/// its non-local source (IP_TRANSPARENT), connects without blocking (the SYN leaves) and
/// is dropped in SYN-SENT (nothing more is sent; the SYN-ACKs find no route back).
/// Returns the number of SYNs sent.
fn syn_flood(env: &L4Env, count: u32, limit: Duration, seed: u32) -> u32 {
    let vip = vip();
    env.lab
        .client
        .within(move || {
            let started = Instant::now();
            let mut x = seed | 1;
            let mut sent = 0;
            while sent < count && started.elapsed() < limit {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let [a, b, c, d] = x.to_be_bytes();
                let port = 1024 + u16::from_be_bytes([d, a]) % 64000;
                let src = SocketAddr::from(([198, 18 | (a & 1), b, c], port));
                let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
                s.set_ip_transparent(true)?;
                if s.bind(&src.into()).is_err() {
                    continue; // the same random source twice in a row: skip it
                }
                s.set_nonblocking(true)?;
                match s.connect(&vip.into()) {
                    Ok(()) => sent += 1,
                    Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => sent += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok(sent)
        })
        .expect("SYN flood")
}

/// The value of the `/metrics` sample that starts with `series` (0 when absent).
fn metric(lb: &LbProcess, series: &str) -> f64 {
    let (code, body) = lb.get("/metrics").expect("metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Issue #19 item 3: a SYN flood from random sources, in flood mode, does not push
/// established flows out of a small flow table: 200 long-lived flows keep their backend
/// through the flood and a reload that adds a backend during it (an evicted flow would
/// be re-picked by the new Maglev table, and a quarter of them would land on the new
/// backend and break). The flows are opened before flood mode is configured (a reload
/// turns it on), so they are all tracked.
#[test]
fn syn_flood_from_random_sources_breaks_no_established_flow() {
    require_root!();
    let env = Arc::new(L4Env::new(4).expect("lab"));
    let admin = lb_tests::l4env::ADMIN.parse().expect("admin");
    let path = env
        .write_config(&flood_config(&env, 3, 125_000))
        .expect("config");
    let lb = LbProcess::start(&env.lab.lb, &path, admin, &[]).expect("lb run");
    wait_all_up(&lb, "pool4", 3);
    let flows = open_flows(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopOnDrop(stop.clone());
    let l4 = drive_flows(flows, stop.clone(), Duration::from_secs(60));
    // Flood mode: past 20 new flows per second per CPU, new flows are not tracked (at
    // most ~20 x 2 CPUs x 10 s of flood SYNs enter the 1024-entry table).
    env.write_config(&flood_config(&env, 3, 20))
        .expect("config");
    lb.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(1500));

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos());
    eprintln!("SYN flood seed {seed:#x}");
    let flooder = {
        let env = env.clone();
        std::thread::spawn(move || syn_flood(&env, 60_000, Duration::from_secs(8), seed))
    };
    // During the flood, a reload adds b4: tracked flows keep their backend.
    std::thread::sleep(Duration::from_secs(2));
    env.write_config(&flood_config(&env, 4, 20))
        .expect("config");
    lb.signal(nix::sys::signal::Signal::SIGHUP);
    wait_all_up(&lb, "pool4", 4);
    let sent = flooder.join().expect("flood thread");
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let (exchanges, broken) = l4.join().expect("flow thread");
    let untracked = metric(
        &lb,
        "lb_l4_packets_total{action=\"flood\",reason=\"untracked\"}",
    );
    eprintln!(
        "SYN flood: {sent} SYNs sent, {untracked} new flows untracked; flows: {exchanges} \
         exchanges, {} broken (seed {seed:#x})",
        broken.len()
    );
    assert!(sent >= 10_000, "only {sent} SYNs sent (seed {seed:#x})");
    assert!(
        untracked >= f64::from(sent) * 0.5,
        "{untracked} of {sent} flood SYNs untracked (seed {seed:#x})"
    );
    assert!(
        broken.is_empty(),
        "broken flows (seed {seed:#x}): {broken:?}"
    );
    assert!(
        exchanges as usize >= FLOWS * 5,
        "only {exchanges} flow exchanges"
    );
    // New connections still work, and reach the new backend too.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (_c, who) = env.connect(None, vip()).expect("connect after the flood");
        seen.insert(who);
    }
    assert!(seen.len() >= 3, "{seen:?}");
}
