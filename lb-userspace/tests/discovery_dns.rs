//! DNS service discovery (issue #16 item 5) against a real DNS server: dnsmasq (Debian's
//! `dnsmasq-base`, installed by the bootstrap), started by the test on loopback with a
//! hosts file the test writes and rewrites (dnsmasq re-reads it on SIGHUP). `lb run` (the
//! real binary) follows the name without a reload; a failing resolution keeps the last
//! address for `hold valid`, then the server goes to MAINT; `server-template` fills its
//! servers from an A record set.

mod admin_common;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use admin_common::{LbChild, free_port, http_get, serve_body};
use lb::config::model::{AddrFamily, Resolvers};

/// dnsmasq serving `hosts` on 127.0.0.1:port; killed on drop.
struct Dns {
    child: Child,
    hosts: PathBuf,
    port: u16,
}

impl Dns {
    fn start(dir: &Path, hosts: &str) -> Option<Dns> {
        let path = dir.join("hosts");
        std::fs::write(&path, hosts).expect("hosts");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("udp port");
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
            ])
            .args([
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", path.display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipped: dnsmasq not runnable ({e}); the bootstrap installs it");
                return None;
            }
        };
        let dns = Dns {
            child,
            hosts: path,
            port,
        };
        // Ready when it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while dns.lookup("ready.lb.test").is_none() {
            assert!(Instant::now() < deadline, "dnsmasq does not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(dns)
    }

    fn resolvers(&self) -> Resolvers {
        let mut r = Resolvers::new("t");
        let ns = SocketAddr::from(([127, 0, 0, 1], self.port));
        r.nameservers.push(("ns".into(), ns));
        r.timeout_retry = Duration::from_millis(200);
        r
    }

    /// Some(answer) once dnsmasq answers at all (an unknown name included).
    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let r = self.resolvers();
        match rt.block_on(lb::discovery::dns::resolve(&r, name, AddrFamily::V4)) {
            Ok(v) => Some(v),
            Err(lb::discovery::DiscoveryError::Timeout)
            | Err(lb::discovery::DiscoveryError::Io(_)) => None,
            Err(_) => Some(Vec::new()),
        }
    }

    /// Rewrites the hosts file and has dnsmasq re-read it.
    fn set(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).expect("hosts");
        self.signal("HUP");
    }

    fn signal(&self, sig: &str) {
        assert!(self.signal_quiet(sig).expect("kill").success());
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.signal_quiet("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dns {
    fn signal_quiet(&self, sig: &str) -> std::io::Result<std::process::ExitStatus> {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
    }
}

/// HTTP servers on `127.0.0.N:port` (one port for all), each answering its own address.
fn id_servers(last_octets: &[u8]) -> u16 {
    for _ in 0..20 {
        let port = free_port();
        let ls: Vec<TcpListener> = last_octets
            .iter()
            .filter_map(|n| TcpListener::bind(("127.0.0.".to_string() + &n.to_string(), port)).ok())
            .collect();
        if ls.len() != last_octets.len() {
            continue;
        }
        for l in ls {
            let me = l.local_addr().expect("addr").ip().to_string();
            serve_body(l, me);
        }
        return port;
    }
    panic!("no common free port on the loopback addresses");
}

fn lab_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-dns-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // dnsmasq drops to `nobody` and re-reads the hosts file as that user.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    dir
}

fn config(admin: SocketAddr, web: SocketAddr, dns: u16, backend: &str) -> String {
    format!(
        "[global]\nadmin = \"{admin}\"\n\
         [resolvers.dns]\nnameserver = \"ns1 127.0.0.1:{dns}\"\n\
         hold = {{ valid = \"3s\" }}\nresolve_retries = 2\n\
         timeout = {{ resolve = \"200ms\", retry = \"200ms\" }}\n\
         [defaults]\nmode = \"http\"\n\
         timeout = {{ client = \"5s\", connect = \"1s\", server = \"5s\" }}\n\
         [listen.web]\nbind = \"{web}\"\n{backend}\n"
    )
}

/// Waits (bounded) until `GET /` answers `want` (a body, or a status as text).
fn wait_for(web: SocketAddr, want: &str, within: Duration, lb: &LbChild) {
    let deadline = Instant::now() + within;
    loop {
        let got = http_get(web, "/");
        let shown = match &got {
            Some((200, body)) => body.clone(),
            Some((st, _)) => st.to_string(),
            None => "refused".into(),
        };
        if shown == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {want}, got {shown}: {}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_server_follows_its_name_and_holds_the_last_address() {
    let dir = lab_dir("follow");
    let Some(dns) = Dns::start(&dir, "127.0.0.2 app.lb.test\n") else {
        return;
    };
    let port = id_servers(&[2, 3]);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let path = dir.join("lb.toml");
    let server = format!(
        "server = \"s1 app.lb.test:{port} resolvers dns resolve-prefer ipv4 init-addr none\""
    );
    std::fs::write(&path, config(admin, web, dns.port, &server)).expect("write");
    let lb = LbChild::start(&path, admin);
    wait_for(web, "127.0.0.2", Duration::from_secs(10), &lb);

    // The name moves: traffic follows, with no reload.
    dns.set("127.0.0.3 app.lb.test\n");
    wait_for(web, "127.0.0.3", Duration::from_secs(10), &lb);
    assert!(!lb.log_text().contains("reloaded"), "{}", lb.log_text());
    assert!(
        lb.log_text()
            .contains("web/s1 changed its IP from 127.0.0.2 to 127.0.0.3"),
        "{}",
        lb.log_text()
    );

    // The DNS server stops answering: the last address holds for `hold valid` (3 s)...
    dns.signal("STOP");
    let stopped = Instant::now();
    while stopped.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            http_get(web, "/"),
            Some((200, "127.0.0.3".into())),
            "within hold valid: {}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...then the server goes to MAINT: 503.
    wait_for(web, "503", Duration::from_secs(10), &lb);
    // `hold valid` counts from the last valid answer, at most one resolution (200 ms plus
    // the query) before the stop.
    assert!(
        stopped.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        stopped.elapsed()
    );
    assert!(
        lb.log_text()
            .contains("Server web/s1 is going DOWN for maintenance (DNS timeout status)"),
        "{}",
        lb.log_text()
    );
    // DNS answers again: the server comes back.
    dns.signal("CONT");
    wait_for(web, "127.0.0.3", Duration::from_secs(10), &lb);
    drop(lb);
    drop(dns);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bodies of `n` `GET /` answered 200.
fn bodies(web: SocketAddr, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .filter_map(|_| match http_get(web, "/") {
            Some((200, body)) => Some(body),
            _ => None,
        })
        .collect()
}

fn stats_servers(admin: SocketAddr) -> Vec<(String, String, String)> {
    let body = lb::admin::client::fetch_body(admin, "/stats.json", None).expect("stats");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let mut out = Vec::new();
    for b in v["backends"].as_array().into_iter().flatten() {
        for s in b["servers"].as_array().into_iter().flatten() {
            out.push((
                s["name"].as_str().unwrap_or("").to_owned(),
                s["addr"].as_str().unwrap_or("").to_owned(),
                s["status"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

#[test]
fn server_template_fills_servers_from_an_a_record_set() {
    let dir = lab_dir("template");
    let hosts = "127.0.0.2 pool.lb.test\n127.0.0.3 pool.lb.test\n127.0.0.4 pool.lb.test\n";
    let Some(dns) = Dns::start(&dir, hosts) else {
        return;
    };
    let port = id_servers(&[2, 3, 4]);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let path = dir.join("lb.toml");
    let tpl = format!(
        "balance = \"roundrobin\"\nserver_template = \"web 4 pool.lb.test:{port} resolvers dns \
         resolve-prefer ipv4 init-addr none\""
    );
    std::fs::write(&path, config(admin, web, dns.port, &tpl)).expect("write");
    let lb = LbChild::start(&path, admin);

    // Three addresses for four servers: three UP at distinct addresses, one in MAINT.
    let deadline = Instant::now() + Duration::from_secs(10);
    let servers = loop {
        let s = stats_servers(admin);
        if s.iter().filter(|x| x.2 == "UP").count() == 3 {
            break s;
        }
        assert!(Instant::now() < deadline, "{s:?}: {}", lb.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    let names: Vec<&str> = servers.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["web1", "web2", "web3", "web4"]);
    let mut up: Vec<&str> = servers
        .iter()
        .filter(|s| s.2 == "UP")
        .map(|s| s.1.as_str())
        .collect();
    up.sort();
    let want: Vec<String> = (2..=4).map(|n| format!("127.0.0.{n}:{port}")).collect();
    assert_eq!(up, want, "{servers:?}");
    assert_eq!(servers[3].2, "MAINT", "{servers:?}");
    let seen = bodies(web, 12);
    let all: std::collections::BTreeSet<String> = (2..=4).map(|n| format!("127.0.0.{n}")).collect();
    assert_eq!(seen, all);

    // One address leaves the set: its server goes to MAINT, the others keep theirs.
    let before: Vec<(String, String)> =
        servers.iter().map(|s| (s.0.clone(), s.1.clone())).collect();
    dns.set("127.0.0.2 pool.lb.test\n127.0.0.4 pool.lb.test\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = stats_servers(admin);
        if s.iter().filter(|x| x.2 == "UP").count() == 2 {
            break s;
        }
        assert!(Instant::now() < deadline, "{s:?}: {}", lb.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    for (name, addr, status) in &after {
        if status == "UP" {
            assert!(
                before.contains(&(name.clone(), addr.clone())),
                "{name} moved: {before:?} -> {after:?}"
            );
            assert!(!addr.starts_with("127.0.0.3:"), "{after:?}");
        }
    }
    let seen = bodies(web, 12);
    let two: std::collections::BTreeSet<String> =
        ["127.0.0.2", "127.0.0.4"].map(String::from).into();
    assert_eq!(seen, two);
    drop(lb);
    drop(dns);
    let _ = std::fs::remove_dir_all(&dir);
}
