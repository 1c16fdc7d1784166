//! Control plane end to end with the XDP tier: reloads under traffic, a rejected reload, and
//! draining a server through the runtime API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lb_tests::l4env::{L4Env, VIP_PORT, VIP4};
use lb_tests::lbproc::LbProcess;
use lb_tests::require_root;

/// Sets the flag when dropped (panics included).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn vip() -> SocketAddr {
    SocketAddr::new(VIP4.parse().expect("vip"), VIP_PORT)
}

fn servers_of(lb: &LbProcess, backend: &str) -> Vec<(String, String)> {
    let (code, body) = lb.get("/stats.json").expect("stats.json");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == backend))
        .and_then(|b| b["servers"].as_array())
        .map(|ss| {
            ss.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_owned(),
                        s["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn reload_adding_a_backend_under_traffic_fails_no_connection() {
    require_root!();
    let env = Arc::new(L4Env::new(4).expect("lab"));
    let sources = env.lab.add_client_sources(40).expect("sources");
    let lb = env.start_lb(3, &[]).expect("lb run");

    let stop = Arc::new(AtomicBool::new(false));
    // Stops the traffic thread even when an assertion below fails, so the lab is dropped.
    let _stop_on_exit = StopOnDrop(stop.clone());
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let traffic = {
        let (env, stop, ok, failed, sources) = (
            env.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            sources.clone(),
        );
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                match env.connect(Some(sources[i % sources.len()]), vip()) {
                    Ok((_c, who)) if who.starts_with('b') => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    env.write_config(&env.config(4)).expect("config with b4");
    lb.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !servers_of(&lb, "pool4").iter().any(|(n, _)| n == "b4") {
        assert!(
            Instant::now() < deadline,
            "reload did not add b4: {}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    traffic.join().expect("traffic thread");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 50, "only {ok} connections made");
    assert_eq!(
        failed,
        0,
        "{failed} of {} connections failed across the reload",
        ok + failed
    );

    // b4 takes its share of new connections after the reload.
    let mut b4 = 0;
    for src in &sources {
        let (_c, who) = env.connect(Some(*src), vip()).expect("connect");
        b4 += u32::from(who == "b4");
    }
    assert!(b4 > 0, "b4 received no new connection after the reload");
}

#[test]
fn broken_reload_keeps_the_old_config_and_reports_the_error() {
    require_root!();
    let env = L4Env::new(3).expect("lab");
    let lb = env.start_lb(3, &[]).expect("lb run");
    let good = env.config(3);
    let broken = good.replacen(
        "server = [\"b1 ",
        "server = [\"b1 no-such-host.invalid:1 ",
        1,
    );
    assert_ne!(broken, good);
    env.write_config(&broken).expect("broken config");

    // Through the API: 500 with the loader's FILE:LINE:COL message.
    let (code, body) = lb
        .request("POST", "/api/reload", "")
        .expect("POST /api/reload");
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("lb.toml:"),
        "error names the file and line: {body}"
    );
    // Through SIGHUP: logged, recorded, nothing changes.
    // Through SIGHUP: logged, recorded, nothing changes. The API's rejection above already
    // recorded an error, so wait for the SIGHUP's own log line.
    let before = lb.log_text().matches("rejected").count();
    lb.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lb.log_text().matches("rejected").count() <= before {
        assert!(
            Instant::now() < deadline,
            "SIGHUP reload not rejected: {}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) = lb.get("/api/reload").expect("GET /api/reload");
    assert_eq!(code, 200);
    assert!(body.contains("\"error\""), "{body}");

    assert_eq!(servers_of(&lb, "pool4").len(), 3, "the old backends stay");
    for _ in 0..10 {
        let (_c, who) = env.connect(None, vip()).expect("old config keeps serving");
        assert!(who.starts_with('b'));
    }
}

#[test]
fn draining_a_server_keeps_its_connection_and_sends_new_ones_elsewhere() {
    require_root!();
    let env = L4Env::new(3).expect("lab");
    let sources = env.lab.add_client_sources(60).expect("sources");
    let lb = env.start_lb(3, &[]).expect("lb run");
    let (mut conn, who) = env.connect(None, vip()).expect("connect");

    let (code, body) = lb
        .request("POST", &format!("/api/server/pool4/{who}/state"), "drain")
        .expect("set drain");
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while servers_of(&lb, "pool4")
        .iter()
        .find(|(n, _)| *n == who)
        .map(|(_, s)| s.as_str())
        != Some("DRAIN")
    {
        assert!(Instant::now() < deadline, "not DRAIN");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The registry shows DRAIN; give the data path (Maglev rebuild and flip) time to follow.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        L4Env::exchange(&mut conn, "still").expect("drained conn"),
        who
    );
    for src in &sources {
        let (_c, got) = env.connect(Some(*src), vip()).expect("connect");
        assert_ne!(got, who, "a drained server got a new connection");
    }
    assert_eq!(
        L4Env::exchange(&mut conn, "again").expect("drained conn"),
        who
    );

    let (code, _) = lb
        .request("POST", &format!("/api/server/pool4/{who}/state"), "ready")
        .expect("set ready");
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_millis(1000));
    let mut back = 0;
    for src in &sources {
        let (_c, got) = env.connect(Some(*src), vip()).expect("connect");
        back += u32::from(got == who);
    }
    assert!(back > 0, "{who} takes new connections again after ready");
}

/// `[global] user`: lb loads and attaches XDP as root, then runs as `nobody` with no
/// capability left; the maps it opened at start still take writes (a drain moves new
/// connections away from the server), and at exit it still detaches XDP.
#[test]
fn xdp_keeps_following_server_state_after_the_change_to_nobody() {
    require_root!();
    let env = L4Env::new(3).expect("lab");
    let sources = env.lab.add_client_sources(30).expect("sources");
    let text = env
        .config(3)
        .replacen("[global]\n", "[global]\nuser = \"nobody\"\n", 1);
    let path = env.write_config(&text).expect("config");
    let lb = LbProcess::start(
        &env.lab.lb,
        &path,
        lb_tests::l4env::ADMIN.parse().expect("admin"),
        &[],
    )
    .expect("lb run");
    let pid = lb.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status.contains("Uid:\t65534\t65534\t65534\t65534"),
        "{status}"
    );
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    let (_conn, who) = env.connect(None, vip()).expect("connect through XDP");
    let (code, body) = lb
        .request("POST", &format!("/api/server/pool4/{who}/state"), "drain")
        .expect("set drain");
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(Duration::from_millis(1000));
    for src in &sources {
        let (_c, got) = env.connect(Some(*src), vip()).expect("connect");
        assert_ne!(
            got,
            who,
            "a drained server got a new connection:\n{}",
            lb.log_text()
        );
    }
    let log = lb.log.clone();
    let st = lb.stop();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(st.is_some_and(|s| s.success()), "{text}");
    assert!(!text.contains("detaching XDP"), "{text}");
}
