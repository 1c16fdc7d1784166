//! Access logs to syslog targets (#15 item 2): a UDP socket and a unix datagram socket the
//! test binds and reads, HAProxy's framing byte for byte except timestamps and pid; a dead
//! target drops and counts without slowing requests; config errors with positions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::time::{Duration, Instant};

use l7_support::*;
use lb::config::model::*;

fn target(line: &str) -> lb::syslog::LogTarget {
    let w: Vec<&str> = line.split_whitespace().collect();
    lb::syslog::parse_target(&w).unwrap()
}

/// `<134>Mmm dd hh:mm:ss lb[PID]: ` then the message, `\n`-terminated.
fn check_3164(line: &str, pri: u32) -> &str {
    let head = format!("<{pri}>");
    assert!(line.starts_with(&head), "{line:?}");
    let rest = &line[head.len()..];
    let months = lb::syslog::MONTHS;
    assert!(months.contains(&&rest[..3]), "{line:?}");
    let b = rest.as_bytes();
    assert_eq!(b[3], b' ');
    assert!(b[4] == b' ' || b[4].is_ascii_digit(), "{line:?}");
    assert!(b[5].is_ascii_digit());
    assert_eq!(&rest[6..7], " ");
    assert_eq!(&rest[9..10], ":");
    assert_eq!(&rest[12..13], ":");
    let tag = format!(" lb[{}]: ", std::process::id());
    assert_eq!(&rest[15..15 + tag.len()], tag, "{line:?}");
    assert!(line.ends_with('\n'));
    &rest[15 + tag.len()..line.len() - head.len() - 1]
}

#[tokio::test]
async fn access_lines_reach_udp_and_unix_receivers() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dir = std::env::temp_dir().join(format!("lb-syslog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.sock");
    let unix = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    unix.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    let e = echo("a").await;
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.log_targets = vec![
        target(&format!("{} local0", udp.local_addr().unwrap())),
        target(&format!("{} format rfc5424 daemon info", path.display())),
        // Filtered out: access lines are info.
        target(&format!("{} local3 notice", udp.local_addr().unwrap())),
    ];
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", e.addr)],
        )],
    ));
    let r = get(addr_of(&h, "web"), "/hello?x=1", &[]).await;
    assert_eq!(r.status, 200);

    let mut buf = vec![0u8; 4096];
    let n = udp.recv(&mut buf).unwrap();
    let line = String::from_utf8(buf[..n].to_vec()).unwrap();
    let msg = check_3164(&line, 16 * 8 + 6);
    assert!(msg.starts_with("127.0.0.1:"), "{msg}");
    assert!(msg.contains(" web be/a "), "{msg}");
    assert!(msg.ends_with(" \"GET /hello?x=1 HTTP/1.1\""), "{msg}");

    let n = unix.recv(&mut buf).unwrap();
    let line = String::from_utf8(buf[..n].to_vec()).unwrap();
    // <30>1 2026-12-07T10:58:48.096255+00:00 - lb PID - - MSG\n
    assert!(line.starts_with("<30>1 "), "{line:?}");
    let ts = &line[6..38];
    assert_eq!(ts.len(), 32);
    assert_eq!(&ts[4..5], "-");
    assert_eq!(&ts[10..11], "T");
    assert_eq!(&ts[19..20], ".");
    assert!(ts.ends_with("+00:00"), "{ts}");
    let rest = format!(" - lb {} - - ", std::process::id());
    assert_eq!(&line[38..38 + rest.len()], rest);
    assert_eq!(&line[38 + rest.len()..], format!("{msg}\n"));

    // Nothing more: the notice target filtered the info line.
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(udp.recv(&mut buf).is_err(), "a second datagram arrived");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dead_target_drops_and_counts_without_blocking() {
    let dir = std::env::temp_dir().join(format!("lb-syslog-dead-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let e = echo("a").await;
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    // A unix socket nobody binds, and a bound one nobody reads (its queue fills).
    let full = dir.join("full.sock");
    let _full = std::os::unix::net::UnixDatagram::bind(&full).unwrap();
    fe.log_targets = vec![
        target(&format!("{} local0", dir.join("absent.sock").display())),
        target(&format!("{} local0", full.display())),
    ];
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", e.addr)],
        )],
    ));
    let before = lb::syslog::dropped();
    let t0 = Instant::now();
    let n = 400u64;
    for _ in 0..n {
        let r = get(addr_of(&h, "web"), "/", &[]).await;
        assert_eq!(r.status, 200);
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(20), "{n} requests took {took:?}");
    let dropped = lb::syslog::dropped() - before;
    // Every line to the absent socket, and the full socket's overflow.
    assert!(dropped > n, "dropped {dropped} of {} lines", 2 * n);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_keys_and_errors() {
    let load = |text: &str| {
        lb::config::load_str(
            std::path::Path::new("t.toml"),
            text,
            &lb::config::LoadOptions::default(),
        )
    };
    let ok = "[global]\nlog = [\"127.0.0.1:5514 local0\", \"/dev/log len 2048 local1 notice\"]\n\
              [defaults]\nmode = \"tcp\"\nlog = \"global\"\ntimeout = [\"client 1s\", \"connect 1s\", \"server 1s\"]\n\
              [frontend.f]\nbind = \"127.0.0.1:7001\"\ndefault_backend = \"b\"\nlog = [\"stderr format raw daemon\"]\n\
              [frontend.g]\nbind = \"127.0.0.1:7002\"\ndefault_backend = \"b\"\nlog = false\n\
              [backend.b]\nserver = \"s 127.0.0.1:7003\"\n";
    let (cfg, _) = load(ok).unwrap();
    assert_eq!(cfg.global.log.len(), 2);
    let f = cfg.frontends.iter().find(|f| f.name == "f").unwrap();
    let texts: Vec<&str> = f.log_targets.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "127.0.0.1:5514 local0",
            "/dev/log len 2048 local1 notice",
            "stderr format raw daemon"
        ]
    );
    let g = cfg.frontends.iter().find(|f| f.name == "g").unwrap();
    assert!(!g.log && g.log_targets.is_empty());

    let bad = "[global]\nlog = [\"127.0.0.1 local0\", \"127.0.0.1:514 local9\"]\n\
               [frontend.f]\nmode = \"tcp\"\nbind = \"127.0.0.1:7001\"\nlog = \"nowhere local0 info\"\n\
               default_backend = \"b\"\n[backend.b]\nserver = \"s 127.0.0.1:7003\"\n\
               [backend.c]\nserver = \"s 127.0.0.1:7004\"\nlog = \"127.0.0.1 local0 loud\"\n";
    let errs = load(bad).expect_err("errors").diagnostics;
    let lines: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    let find = |s: &str| {
        lines
            .iter()
            .find(|l| l.contains(s))
            .unwrap_or_else(|| panic!("no {s:?} in {lines:#?}"))
            .clone()
    };
    assert!(find("unknown syslog facility `local9`").starts_with("t.toml:2:43: global.log[1]: "));
    assert!(find("`nowhere` is not an address").starts_with("t.toml:6:8: frontend.f.log: "));
    assert!(find("unknown syslog level `loud`").starts_with("t.toml:12:25: backend.c.log: "));
}

/// The syslog header HAProxy 2.6 writes and lb's have one shape: same PRI, same fields and
/// padding (digits and the tag aside), for rfc3164 and rfc5424.
#[tokio::test]
async fn header_shape_matches_haproxy() {
    let u3164 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let u5424 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for u in [&u3164, &u5424] {
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hx = Haproxy::start(
        "hx",
        &format!(
            "global\n  log {} local0\n  log {} format rfc5424 local1 info\n\
             defaults\n  mode http\n  timeout client 5s\n  timeout connect 5s\n  timeout server 5s\n  log global\n  option httplog\n\
             frontend f\n  bind 127.0.0.1:{port}\n  http-request return status 200 content-type text/plain string ok\n",
            u3164.local_addr().unwrap(),
            u5424.local_addr().unwrap()
        ),
        Some(port),
    );
    // HAProxy may log other lines (a `<BADREQ>` probe): read until the request's own line.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = get(addr, "/x", &[]).await;
    assert_eq!(r.status, 200);
    let recv_req = |u: &std::net::UdpSocket| -> String {
        let mut buf = vec![0u8; 4096];
        for _ in 0..5 {
            let n = u.recv(&mut buf).unwrap();
            let l = String::from_utf8(buf[..n].to_vec()).unwrap();
            if l.contains("\"GET /x HTTP/1.1\"") {
                return l;
            }
        }
        panic!("no request line");
    };
    let h3164 = recv_req(&u3164);
    let h5424 = recv_req(&u5424);
    drop(hx);

    let e = echo("a").await;
    let mut fe = frontend("f", vec![bind("127.0.0.1:0")], Some("be"));
    fe.log_targets = vec![
        target(&format!("{} local0", u3164.local_addr().unwrap())),
        target(&format!(
            "{} format rfc5424 local1 info",
            u5424.local_addr().unwrap()
        )),
    ];
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", e.addr)],
        )],
    ));
    let r = get(addr_of(&h, "f"), "/x", &[]).await;
    assert_eq!(r.status, 200);
    let l3164 = recv_req(&u3164);
    let l5424 = recv_req(&u5424);

    // The header: everything before the client address, each digit as 0, except that
    // pids (which may differ in length) become one 0.
    let head = |l: &str| -> String {
        let end = l.find("127.0.0.1:").unwrap();
        let h: String = l[..end]
            .replace("haproxy", "lb")
            .chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect();
        let (pre, post) = h.split_at(h.find("lb").unwrap() + 2);
        let pid_end = post
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c != '0')
            .map_or(post.len(), |(i, _)| i);
        format!("{pre}{}0{}", &post[..1], &post[pid_end..])
    };
    assert_eq!(head(&l3164), head(&h3164), "{l3164:?} vs {h3164:?}");
    assert_eq!(head(&l5424), head(&h5424), "{l5424:?} vs {h5424:?}");
    assert!(l3164.starts_with("<134>") && h3164.starts_with("<134>"));
    assert!(l5424.starts_with("<142>1 ") && h5424.starts_with("<142>1 "));
    assert!(l3164.ends_with('\n') && h3164.ends_with('\n'));
}

/// HAProxy 2.6 running `cfg` (written to a directory of its own), killed and cleaned up on
/// drop. With `port`, waits (bounded) until that port is taken, without connecting to it.
struct Haproxy {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Haproxy {
    fn start(tag: &str, cfg: &str, port: Option<u16>) -> Haproxy {
        let dir = std::env::temp_dir().join(format!("lb-syslog-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = std::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy 2.6 is installed");
        if let Some(port) = port {
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                assert!(Instant::now() < deadline, "haproxy did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Haproxy { child, dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP server on a thread: reads each connection to EOF, then closes it.
fn drain_server() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            std::thread::spawn(move || {
                use std::io::Read;
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut b = [0u8; 256];
                while matches!(c.read(&mut b), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Every line `udp` receives until it has been quiet for `quiet`.
fn drain_lines(udp: &std::net::UdpSocket, quiet: Duration) -> Vec<String> {
    udp.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = udp.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

/// To each of the two frontends: a connection closed without sending anything, then one
/// that sends a line; each closed before the next starts.
fn null_and_data_sessions(ports: [u16; 2]) {
    use std::io::Write;
    for port in ports {
        drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
        std::thread::sleep(Duration::from_millis(200));
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"hello\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `option dontlognull` as HAProxy 2.6 does it: in `mode tcp`, a connection whose client
/// sent nothing is not logged, one that sent data is; without the option both are. HAProxy
/// and lb get the same frontends (`fnull` with the option, `fall` without, from
/// `[defaults]`' `no option`) and the same connections, and log to receivers the test reads.
#[test]
fn dontlognull_matches_haproxy() {
    let server = drain_server();
    let counts = |lines: &[String]| -> (usize, usize) {
        let n = |fe: &str| {
            lines
                .iter()
                .filter(|l| l.contains(&format!(" {fe} ")))
                .count()
        };
        (n("fnull"), n("fall"))
    };

    // HAProxy 2.6.
    let hudp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let hp = [free_port(), free_port()];
    // Waited for without connecting to it: a probe would be a null session.
    let hx = Haproxy::start(
        "null",
        &format!(
            "global\n  log {} local0\n\
             defaults\n  mode tcp\n  timeout client 5s\n  timeout connect 2s\n  timeout server 5s\n  log global\n  option tcplog\n  option dontlognull\n\
             frontend fnull\n  bind 127.0.0.1:{}\n  default_backend be\n\
             frontend fall\n  bind 127.0.0.1:{}\n  no option dontlognull\n  default_backend be\n\
             backend be\n  server s1 {server}\n",
            hudp.local_addr().unwrap(),
            hp[0],
            hp[1]
        ),
        Some(hp[1]),
    );
    null_and_data_sessions(hp);
    let hlines = drain_lines(&hudp, Duration::from_millis(700));
    drop(hx);

    // lb, from the equivalent TOML through the loader.
    let ludp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let lp = [free_port(), free_port()];
    let toml = format!(
        "[global]\nlog = \"{} local0\"\n\
         [defaults]\nmode = \"tcp\"\nlog = \"global\"\noption = [\"tcplog\", \"dontlognull\"]\n\
         timeout = {{ client = \"5s\", connect = \"2s\", server = \"5s\" }}\n\
         [frontend.fnull]\nbind = \"127.0.0.1:{}\"\ndefault_backend = \"be\"\n\
         [frontend.fall]\nbind = \"127.0.0.1:{}\"\noption = [\"no dontlognull\"]\ndefault_backend = \"be\"\n\
         [backend.be]\nserver = \"s1 {server}\"\n",
        ludp.local_addr().unwrap(),
        lp[0],
        lp[1]
    );
    let (cfg, _) = lb::config::load_str(
        std::path::Path::new("t.toml"),
        &toml,
        &lb::config::LoadOptions::default(),
    )
    .unwrap();
    assert!(
        cfg.frontends
            .iter()
            .any(|f| f.name == "fnull" && f.dontlognull)
    );
    assert!(
        cfg.frontends
            .iter()
            .any(|f| f.name == "fall" && !f.dontlognull)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(async { start(cfg) });
    null_and_data_sessions(lp);
    let llines = drain_lines(&ludp, Duration::from_millis(700));
    drop(h);

    assert_eq!(counts(&hlines), (1, 2), "haproxy: {hlines:?}");
    assert_eq!(counts(&llines), (1, 2), "lb: {llines:?}");
    // The logged sessions of `fnull` are the ones that sent data (6 bytes up, none down).
    for lines in [&hlines, &llines] {
        let l = lines.iter().find(|l| l.contains(" fnull ")).unwrap();
        assert!(l.contains(" be/s1 "), "{l}");
    }
}

/// A syslog line without its timestamp and tag (`<PRI>` kept), check durations as `Nms`.
fn health_line(line: &str) -> String {
    let pri = &line[..line.find('>').map_or(0, |i| i + 1)];
    let msg = line.split_once("]: ").map_or(line, |(_, m)| m).trim_end();
    let msg = match msg.split_once("check duration: ") {
        Some((a, b)) => format!("{a}check duration: Nms{}", &b[b.find("ms").unwrap() + 2..]),
        None => msg.to_owned(),
    };
    format!("{pri}{msg}")
}

/// Runs `connect_ok(false)` for ~1.2 s, then listens for ~1.5 s, then refuses again for
/// ~1.2 s, on `port`; returns what `udp` received meanwhile (health lines only).
fn down_up_down(udp: &std::net::UdpSocket, port: u16) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(1200));
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    l.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Ok((c, _)) = l.accept() {
            drop(c);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(l);
    std::thread::sleep(Duration::from_millis(1200));
    drain_lines(udp, Duration::from_millis(300))
        .iter()
        .map(|l| health_line(l))
        .collect()
}

/// Health changes go to the backend's log targets as HAProxy 2.6 logs them: `Server B/S is
/// DOWN` (alert) / `is UP` (notice) with the reason, `backend B has no server available!`
/// (emerg); with `option log-health-checks`, also each check result that moves the health
/// (`Health check for server B/S failed|succeeded, reason: …, status: H/N UP|DOWN.`,
/// notice) and the reason moves there. Same config, same server outage, for HAProxy and lb;
/// the lines each writes are compared once timestamps and durations are set aside.
#[test]
fn health_changes_are_logged_as_haproxy_logs_them() {
    for checks in [true, false] {
        let opt = if checks {
            "log-health-checks"
        } else {
            "tcplog"
        };
        // One haproxy.cfg, for HAProxy and (through `lb convert`) for lb.
        let hcfg = |udp: &std::net::UdpSocket, port: u16| {
            format!(
                "global\n  log {} local0\n\
                 defaults\n  mode tcp\n  timeout client 5s\n  timeout connect 1s\n  timeout server 5s\n  log global\n  option {opt}\n\
                 frontend f\n  bind 127.0.0.1:{}\n  default_backend be\n\
                 backend be\n  server s1 127.0.0.1:{port} check inter 200 rise 2 fall 2\n",
                udp.local_addr().unwrap(),
                free_port(),
            )
        };
        // HAProxy 2.6.
        let hudp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let hport = free_port();
        let hx = Haproxy::start(&format!("hc-{checks}"), &hcfg(&hudp, hport), None);
        let hlines = down_up_down(&hudp, hport);
        drop(hx);

        // lb: the same file through `lb convert`, the loader, the registry and the health
        // service.
        let ludp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let lport = free_port();
        let conv =
            lb::config::convert::convert_str(std::path::Path::new("h.cfg"), &hcfg(&ludp, lport));
        assert_eq!(conv.unconverted, 0, "{:?}", conv.diagnostics);
        let (cfg, _) = lb::config::load_str(
            std::path::Path::new("t.toml"),
            &conv.toml,
            &lb::config::LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(cfg.backends[0].log_health_checks, checks);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let reg = std::sync::Arc::new(lb::state::Registry::new());
        lb::health::sync_registry(&reg, &cfg);
        let health = lb::health::HealthHandle::new(reg.clone());
        rt.block_on(async { health.apply(&cfg) }).unwrap();
        let llines = down_up_down(&ludp, lport);
        health.stop();

        let down_with_reason = "<129>Server be/s1 is DOWN, reason: Layer4 connection problem, \
             info: \"Connection refused\", check duration: Nms. 0 active and 0 backup servers \
             left. 0 sessions active, 0 requeued, 0 remaining in queue.";
        let mut want = vec!["<128>backend be has no server available!".to_owned()];
        if checks {
            want.extend([
                "<133>Health check for server be/s1 failed, reason: Layer4 connection problem, info: \"Connection refused\", check duration: Nms, status: 0/2 DOWN.".to_owned(),
                "<129>Server be/s1 is DOWN. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.".to_owned(),
                "<133>Health check for server be/s1 succeeded, reason: Layer4 check passed, check duration: Nms, status: 1/2 DOWN.".to_owned(),
                "<133>Health check for server be/s1 succeeded, reason: Layer4 check passed, check duration: Nms, status: 2/2 UP.".to_owned(),
                "<133>Server be/s1 is UP. 1 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.".to_owned(),
                "<133>Health check for server be/s1 failed, reason: Layer4 connection problem, info: \"Connection refused\", check duration: Nms, status: 1/2 UP.".to_owned(),
            ]);
        } else {
            want.extend([
                down_with_reason.to_owned(),
                "<133>Server be/s1 is UP, reason: Layer4 check passed, check duration: Nms. 1 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.".to_owned(),
            ]);
        }
        for (who, lines) in [("haproxy", &hlines), ("lb", &llines)] {
            for w in &want {
                assert!(
                    lines.contains(w),
                    "{who} (log-health-checks {checks}): no {w:?} in {lines:#?}"
                );
            }
        }
        // The same lines, in the same order, over one DOWN → UP → DOWN cycle: from the
        // first `is DOWN` to the next one (the timing at either end is the machine's).
        let from_down = |lines: &[String]| -> Vec<String> {
            let downs: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains(" is DOWN"))
                .collect();
            assert!(downs.len() >= 2, "no DOWN, UP, DOWN cycle: {lines:#?}");
            lines[downs[0]..=downs[1]].to_vec()
        };
        assert_eq!(
            from_down(&llines),
            from_down(&hlines),
            "log-health-checks {checks}"
        );
    }
}

/// A TCP syslog receiver: each accepted connection's bytes, as they arrive (by connection,
/// in accept order). With `close_first`, the first connection is closed once it has sent
/// one line.
fn tcp_receiver(
    close_first: bool,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for (i, c) in l.incoming().enumerate() {
            let Ok(mut c) = c else { break };
            let idx = {
                let mut v = g.lock().unwrap();
                v.push(Vec::new());
                v.len() - 1
            };
            let g = g.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                let mut b = [0u8; 4096];
                while let Ok(n) = c.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    let mut v = g.lock().unwrap();
                    v[idx].extend_from_slice(&b[..n]);
                    if close_first && i == 0 && v[idx].contains(&b'\n') {
                        break;
                    }
                }
            });
        }
    });
    (addr, got)
}

/// Waits (bounded) until connection `conn` of `got` holds `lines` complete lines.
fn tcp_lines(got: &std::sync::Mutex<Vec<Vec<u8>>>, conn: usize, lines: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = got
            .lock()
            .unwrap()
            .get(conn)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let done: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
        if done.iter().filter(|l| l.ends_with('\n')).count() >= lines {
            return done;
        }
        assert!(
            Instant::now() < deadline,
            "{lines} lines not received: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `log tcp@ADDR:PORT`: access lines reach a TCP receiver the test owns, on one
/// connection, each line framed as HAProxy 2.6 frames its TCP syslog lines (the rfc3164
/// line, LF-terminated, no octet count; checked against a live HAProxy); when the receiver
/// closes the connection, lb connects again and later lines arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_targets_are_framed_as_haproxy_and_reconnect() {
    // HAProxy 2.6: two requests, two lines on one connection.
    let (haddr, hgot) = tcp_receiver(false);
    let port = free_port();
    let hx = Haproxy::start(
        "tcp",
        &format!(
            "global\n  log tcp@{haddr} local0\n\
             defaults\n  mode http\n  timeout client 5s\n  timeout connect 5s\n  timeout server 5s\n  log global\n  option httplog\n\
             frontend f\n  bind 127.0.0.1:{port}\n  http-request return status 200 content-type text/plain string ok\n",
        ),
        Some(port),
    );
    let haddr_fe: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for p in ["/x", "/y"] {
        assert_eq!(get(haddr_fe, p, &[]).await.status, 200);
    }
    let hlines = tokio::task::spawn_blocking(move || tcp_lines(&hgot, 0, 2))
        .await
        .unwrap();
    drop(hx);

    // lb, with a receiver that closes its first connection after one line.
    let (laddr, lgot) = tcp_receiver(true);
    let e = echo("a").await;
    let mut fe = frontend("f", vec![bind("127.0.0.1:0")], Some("be"));
    fe.log_targets = vec![target(&format!("tcp@{laddr} local0"))];
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("a", e.addr)],
        )],
    ));
    let fe_addr = addr_of(&h, "f");
    assert_eq!(get(fe_addr, "/x", &[]).await.status, 200);
    let g = lgot.clone();
    let first = tokio::task::spawn_blocking(move || tcp_lines(&g, 0, 1))
        .await
        .unwrap();

    // The framing: each line starts with its PRI (no octet count) and ends with LF, and the
    // header has HAProxy's shape.
    for (who, l) in [("haproxy", &hlines[0]), ("lb", &first[0])] {
        assert!(l.starts_with("<134>"), "{who}: {l:?}");
        assert!(
            l.ends_with('\n') && !l[..l.len() - 1].contains('\n'),
            "{who}: {l:?}"
        );
        assert!(l.contains("\"GET /x HTTP/1.1\""), "{who}: {l:?}");
    }
    assert!(hlines[1].contains("\"GET /y HTTP/1.1\""));
    let msg = check_3164(&first[0], 134);
    assert!(msg.contains(" f be/a "), "{msg}");

    // The receiver closed that connection: later lines come on a new one.
    let mut reconnected = false;
    for i in 0..20 {
        assert_eq!(get(fe_addr, &format!("/again{i}"), &[]).await.status, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let v = lgot.lock().unwrap();
        if v.len() >= 2 && v[1].contains(&b'\n') {
            let text = String::from_utf8_lossy(&v[1]).into_owned();
            assert!(
                text.starts_with("<134>") && text.contains("GET /again"),
                "{text:?}"
            );
            reconnected = true;
            break;
        }
    }
    assert!(
        reconnected,
        "no line on a second connection: {:?}",
        lgot.lock().unwrap()
    );
    drop(h);
}
