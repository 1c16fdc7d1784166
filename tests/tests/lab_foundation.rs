//! Foundation lab cases: hosts talk over real TCP, XDP attaches and passes traffic, and a
//! lab leaves nothing behind, even when its test panics.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lb::config::model::XdpMode;
use lb::dataplane::{self, Attachment, LoadOptions};
use lb_common::maps::programs;
use lb_tests::lab::{Lab, list_netns, list_root_links};
use lb_tests::require_root;

const TIMEOUT: Duration = Duration::from_secs(5);

fn two_hosts(lab: &mut Lab) -> (lb_tests::lab::Host, lb_tests::lab::Host) {
    let a = lab.add_host("a").expect("host a");
    let b = lab.add_host("b").expect("host b");
    lab.link(&a, "eth0", &b, "eth0").expect("veth a<->b");
    a.addr("eth0", "10.200.0.1/24").expect("addr a");
    b.addr("eth0", "10.200.0.2/24").expect("addr b");
    a.addr("eth0", "fd00:200::1/64").expect("addr6 a");
    b.addr("eth0", "fd00:200::2/64").expect("addr6 b");
    (a, b)
}

/// Echoes one message back, prefixed, on one accepted connection.
fn serve_once(listener: std::net::TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let mut buf = [0u8; 64];
            if let Ok(n) = conn.read(&mut buf) {
                let _ = conn.write_all(b"echo:");
                let _ = conn.write_all(&buf[..n]);
            }
        }
    })
}

fn roundtrip(from: &lb_tests::lab::Host, to: SocketAddr) -> Vec<u8> {
    let mut conn = from
        .tcp_connect(to, TIMEOUT)
        .expect("connect across the lab");
    conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    conn.write_all(b"ping").expect("send");
    let mut got = Vec::new();
    conn.read_to_end(&mut got).expect("receive");
    got
}

#[test]
fn tcp_payload_crosses_two_hosts_on_ipv4_and_ipv6() {
    require_root!();
    let mut lab = Lab::new();
    let (a, b) = two_hosts(&mut lab);
    for addr in ["10.200.0.2:7000", "[fd00:200::2]:7000"] {
        let addr: SocketAddr = addr.parse().expect("addr");
        let server = serve_once(b.tcp_listen(addr).expect("listen in b"));
        assert_eq!(roundtrip(&a, addr), b"echo:ping");
        server.join().expect("server thread");
    }
}

#[test]
fn xdp_program_attaches_and_passes_traffic() {
    require_root!();
    let mut lab = Lab::new();
    let (a, b) = two_hosts(&mut lab);
    let pin_dir = format!("/sys/fs/bpf/{}", lab.id());
    let opts = LoadOptions {
        pin_dir: pin_dir.clone().into(),
        conntrack_size: 1024,
        maglev_table_size: 251,
    };
    // Load and attach inside b, so the interface name resolves in b's namespace.
    let (mode, ebpf, link) = b
        .within(move || {
            let mut ebpf = dataplane::load(&opts).map_err(std::io::Error::other)?;
            let (mode, link) = dataplane::attach(&mut ebpf, programs::LB, "eth0", XdpMode::Auto)
                .map_err(std::io::Error::other)?;
            Ok((mode, ebpf, link))
        })
        .expect("load and attach in host b");
    assert_eq!(mode, Attachment::Native, "veth supports native XDP");
    let out = b.ip(&["link", "show", "eth0"]).expect("ip link");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "XDP shows on the link"
    );

    let addr: SocketAddr = "10.200.0.2:7001".parse().expect("addr");
    let server = serve_once(b.tcp_listen(addr).expect("listen in b"));
    assert_eq!(
        roundtrip(&a, addr),
        b"echo:ping",
        "traffic passes through XDP"
    );
    server.join().expect("server thread");
    drop(link);
    drop(ebpf);
    let _ = std::fs::remove_dir_all(pin_dir);
}

#[test]
fn lab_is_removed_even_when_the_test_panics() {
    require_root!();
    let id = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let mut lab = Lab::new();
        if let Ok(mut slot) = id.lock() {
            *slot = lab.id().to_owned();
        }
        let (_a, b) = two_hosts(&mut lab);
        lab.spawn(&b, "sleep", &["30"]).expect("a process in b");
        assert!(list_netns().iter().any(|n| n.starts_with(lab.id())));
        panic!("deliberate failure inside a lab test");
    });
    assert!(result.is_err(), "the closure panicked");
    let id = id.lock().expect("id").clone();
    assert!(!id.is_empty());
    let left_ns: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&id))
        .collect();
    let left_links: Vec<String> = list_root_links()
        .into_iter()
        .filter(|n| n.starts_with(&id))
        .collect();
    assert!(left_ns.is_empty(), "namespaces left behind: {left_ns:?}");
    assert!(left_links.is_empty(), "links left behind: {left_links:?}");
}

/// A lab left behind by a dead process (killed before its drop ran) is swept by the next
/// lab: its namespace is deleted and the processes still running inside it are ended, so
/// they cannot keep holding what the dead run held (ports, files, locks).
#[test]
fn stale_lab_namespaces_and_their_processes_are_swept() {
    require_root!();
    // A pid that is certainly not alive: a child that has already been reaped.
    let dead = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead_pid = dead.id();
    let _ = { dead }.wait();
    let ns = format!("lbt{dead_pid}x999-stale");
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .expect("ip netns add");
    assert!(st.success());
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "60"])
        .spawn()
        .expect("sleep in the stale namespace");
    // Bounded wait until the sleeper is inside the namespace.
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(5) {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .expect("ip netns pids");
        if !out.stdout.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _lab = Lab::new();
    let ended = (0..100).find_map(|_| {
        let done = sleeper.try_wait().ok().flatten();
        if done.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        done
    });
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let still_there = String::from_utf8_lossy(&listed.stdout).contains(&ns);
    if ended.is_none() || still_there {
        let _ = sleeper.kill();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
    }
    assert!(
        ended.is_some(),
        "the process inside the stale namespace was ended"
    );
    assert!(!still_there, "the stale namespace was deleted");
}
