//! The demo behind `cargo xtask demo`: a namespaced lab (client, balancer, 3 backends), lb
//! running `config/demo.toml` with both tiers, live traffic with per-backend distribution,
//! a backend killed and brought back, then cleanup (also on Ctrl-C). `--keep` leaves the
//! lab running, prints commands to try, and cleans up on Ctrl-C.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_tests::bench::l7::make_cert;
use lb_tests::lab::Host;
use lb_tests::lbproc::LbProcess;
use lb_tests::servers::{ServerGuard, http_identity, tcp_identity};
use lb_tests::topology::{L4Lab, backend_v4};

const VIP: &str = "10.100.0.10:7000";
const WEB: &str = "10.101.0.1";
const IO: Duration = Duration::from_secs(3);

type DemoResult<T> = Result<T, String>;

/// `[dataplane] pin_path` of config/demo.toml.
const PIN_DIR: &str = "/sys/fs/bpf/lb-demo";

/// Removes the demo's pinned BPF maps and links, and its generated certificate, when
/// dropped.
struct PinsGuard {
    cert: PathBuf,
}

impl Drop for PinsGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(PIN_DIR);
        let _ = std::fs::remove_file(&self.cert);
    }
}

fn err<E: std::fmt::Display>(context: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{context}: {e}")
}

struct Demo {
    lab: L4Lab,
    servers: BTreeMap<usize, Vec<ServerGuard>>,
    sources: Vec<IpAddr>,
    stop: Arc<AtomicBool>,
}

impl Demo {
    fn start_backend(&mut self, i: usize) -> DemoResult<()> {
        let b: Host = self.lab.backends[i - 1].clone();
        let tcp: SocketAddr = format!("{}:7000", backend_v4(i))
            .parse()
            .map_err(err("addr"))?;
        let http: SocketAddr = format!("{}:8080", backend_v4(i))
            .parse()
            .map_err(err("addr"))?;
        let guards = vec![
            tcp_identity(b.tcp_listen(tcp).map_err(err("tcp server"))?, &b.name),
            http_identity(b.tcp_listen(http).map_err(err("http server"))?, &b.name),
        ];
        self.servers.insert(i, guards);
        Ok(())
    }

    fn stop_backend(&mut self, i: usize) {
        if let Some(guards) = self.servers.remove(&i) {
            for g in guards {
                g.stop();
            }
        }
    }

    fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// One round of traffic: `n` TCP connections through the XDP VIP from distinct
    /// sources, and `n` HTTP requests to the L7 frontend. Returns per-backend counts.
    fn round(&self, n: usize) -> (BTreeMap<String, u32>, BTreeMap<String, u32>) {
        let mut l4 = BTreeMap::new();
        let mut l7 = BTreeMap::new();
        let vip: SocketAddr = VIP
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        for k in 0..n {
            let src = self.sources[k % self.sources.len()];
            let who = self
                .lab
                .client
                .tcp_connect_from(src, vip, IO)
                .ok()
                .and_then(|c| {
                    c.set_read_timeout(Some(IO)).ok()?;
                    let mut line = String::new();
                    BufReader::new(c).read_line(&mut line).ok()?;
                    Some(line.trim().to_owned())
                })
                .unwrap_or_else(|| "failed".into());
            *l4.entry(who).or_insert(0) += 1;
            let who = http_get(&self.lab.client, WEB).unwrap_or_else(|| "failed".into());
            *l7.entry(who).or_insert(0) += 1;
        }
        (l4, l7)
    }
}

/// `GET /` with a fresh connection; returns the `X-Server` header.
fn http_get(client: &Host, host: &str) -> Option<String> {
    let addr: SocketAddr = format!("{host}:80").parse().ok()?;
    let mut c = client.tcp_connect(addr, IO).ok()?;
    c.set_read_timeout(Some(IO)).ok()?;
    c.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut reader = BufReader::new(c);
    let mut line = String::new();
    while reader.read_line(&mut line).ok()? > 0 {
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("x-server:") {
            return Some(v.trim().to_owned());
        }
        if line == "\r\n" {
            break;
        }
        line.clear();
    }
    None
}

fn bar(counts: &BTreeMap<String, u32>) -> String {
    let total: u32 = counts.values().sum();
    counts
        .iter()
        .map(|(k, v)| {
            let width = if total == 0 {
                0
            } else {
                (*v as usize * 30) / total as usize
            };
            format!("{k:>6} {:<30} {v:>4}", "#".repeat(width))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn show(title: &str, l4: &BTreeMap<String, u32>, l7: &BTreeMap<String, u32>) {
    println!("\n--- {title}");
    println!("tcp VIP {VIP} (XDP, Maglev):\n{}", bar(l4));
    println!("http://{WEB}/ (userspace, roundrobin):\n{}", bar(l7));
}

fn status(lb: &LbProcess, backend: &str, server: &str) -> Option<String> {
    let (_, body) = lb.get("/stats.json").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == backend)?["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == server)?["status"]
        .as_str()
        .map(str::to_owned)
}

fn wait_status(lb: &LbProcess, demo: &Demo, want: &str) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) && !demo.interrupted() {
        let tcp = status(lb, "tcp_pool", "b2");
        let web = status(lb, "web", "b2");
        print!(
            "\r  tcp_pool/b2: {:<5}  web/b2: {:<5}  {:>5} ms",
            tcp.clone().unwrap_or_default(),
            web.clone().unwrap_or_default(),
            start.elapsed().as_millis()
        );
        let _ = std::io::stdout().flush();
        if tcp.as_deref() == Some(want) && web.as_deref() == Some(want) {
            println!();
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!();
    None
}

/// One HTTPS request with curl from the client host; returns (status, http version,
/// X-Server, Set-Cookie).
fn curl_https(client: &Host, path: &str, jar: &Path) -> Option<(String, String, String, String)> {
    let url = format!("https://{WEB}{path}");
    let jar = jar.to_string_lossy().into_owned();
    let out = client
        .exec(
            "curl",
            &[
                "-sk",
                "--http2",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "-c",
                &jar,
                "-b",
                &jar,
                &url,
            ],
        )
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let status_line = lines.next()?.trim().to_owned();
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?.to_owned();
    let status = parts.next()?.to_owned();
    let mut server = String::from("-");
    let mut cookie = String::from("-");
    for l in lines {
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("x-server:") {
            server = v.trim().to_owned();
        }
        if lower.starts_with("set-cookie:") {
            cookie = l["set-cookie:".len()..].trim().to_owned();
        }
    }
    Some((status, version, server, cookie))
}

fn show_https_and_acls(demo: &Demo) {
    println!("\n--- HTTPS (TLS terminated by lb, ALPN h2) with the sticky cookie SRV");
    let jar = std::env::temp_dir().join(format!("lb-demo-jar-{}", std::process::id()));
    let _ = std::fs::remove_file(&jar);
    for i in 1..=4 {
        match curl_https(&demo.lab.client, "/", &jar) {
            Some((status, version, server, cookie)) => {
                println!("  request {i}: {version} {status} from {server:<3} set-cookie: {cookie}")
            }
            None => println!("  request {i}: curl failed"),
        }
    }
    let _ = std::fs::remove_file(&jar);
    println!(
        "  (the first response inserts SRV; later requests carry it and stick to that server)"
    );
    if let Some((status, _, _, _)) = curl_https(&demo.lab.client, "/admin/users", &jar) {
        println!(
            "  GET /admin/users -> {status} (acl is_admin path_beg -i /admin: http-request deny)"
        );
    }
    if let Some((_, _, server, _)) = curl_https(&demo.lab.client, "/api/items", &jar) {
        println!("  GET /api/items   -> backend api, server {server} (use_backend api if is_api)");
    }
    let _ = std::fs::remove_file(&jar);
}

fn run(repo: &Path, keep: bool, stop: Arc<AtomicBool>) -> DemoResult<()> {
    // Declared first, dropped last: removes the pinned maps on every way out (done, error,
    // Ctrl-C) after lb and the lab are gone.
    let _pins = PinsGuard {
        cert: repo.join("config/certs/demo.pem"),
    };
    println!("lb demo: building the lab (client, balancer, 3 backends) ...");
    let lab = L4Lab::build(3).map_err(err("lab"))?;
    let sources = lab.add_client_sources(30).map_err(err("client sources"))?;
    let mut demo = Demo {
        lab,
        servers: BTreeMap::new(),
        sources,
        stop,
    };
    for i in 1..=3 {
        demo.start_backend(i)?;
    }
    let certs = repo.join("config/certs");
    std::fs::create_dir_all(&certs).map_err(err("config/certs"))?;
    let scratch = std::env::temp_dir().join(format!("lb-demo-cert-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(err("demo certificate"))?;
    let (pem, _, _) = make_cert(&scratch).map_err(err("demo certificate"))?;
    std::fs::copy(&pem, certs.join("demo.pem")).map_err(err("demo certificate"))?;
    let _ = std::fs::remove_dir_all(&scratch);
    println!("lb demo: generated config/certs/demo.pem; starting lb with config/demo.toml");
    let _ = std::fs::remove_dir_all(PIN_DIR);
    let lb = LbProcess::start_logged(
        &demo.lab.lb,
        &repo.join("config/demo.toml"),
        "127.0.0.1:9100".parse().map_err(err("admin"))?,
        &[],
        repo,
        &std::env::temp_dir().join(format!("lb-demo-{}.log", std::process::id())),
    )
    .map_err(err("lb run"))?;

    for r in 1..=3 {
        if demo.interrupted() {
            return Ok(());
        }
        let (l4, l7) = demo.round(30);
        show(
            &format!("round {r}: 30 TCP connections from 30 sources + 30 HTTP requests"),
            &l4,
            &l7,
        );
    }

    show_https_and_acls(&demo);

    println!("\n--- killing backend b2 (its TCP and HTTP servers stop)");
    demo.stop_backend(2);
    match wait_status(&lb, &demo, "DOWN") {
        Some(t) => println!(
            "health checks marked b2 DOWN after {} ms; the Maglev table and the L7 pool no longer hold it",
            t.as_millis()
        ),
        None => println!("b2 was not marked DOWN in 15 s: see {}", lb.log.display()),
    }
    let (l4, l7) = demo.round(30);
    show("with b2 down", &l4, &l7);

    println!("\n--- bringing b2 back");
    demo.start_backend(2)?;
    if let Some(t) = wait_status(&lb, &demo, "UP") {
        println!(
            "b2 is UP again after {} ms (rise checks passed)",
            t.as_millis()
        );
    }
    let (l4, l7) = demo.round(30);
    show("with b2 back", &l4, &l7);

    match demo.lab.lb.exec(
        &lb_tests::lbproc::lb_binary().to_string_lossy(),
        &["stats", "--admin", "127.0.0.1:9100"],
    ) {
        Ok(out) => println!("\n--- lb stats\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => println!("\n--- lb stats failed: {e}"),
    }
    println!(
        "\nWhere to look (inside the balancer's namespace {}):",
        demo.lab.lb.netns
    );
    println!(
        "  ip netns exec {} curl -s http://127.0.0.1:9100/stats        # HTML stats page",
        demo.lab.lb.netns
    );
    println!(
        "  ip netns exec {} curl -s http://127.0.0.1:9100/metrics      # Prometheus",
        demo.lab.lb.netns
    );
    println!(
        "  ip netns exec {} {} stats --admin 127.0.0.1:9100",
        demo.lab.lb.netns,
        lb_tests::lbproc::lb_binary().display()
    );
    if keep {
        println!("\n--keep: the lab stays up (lb and the backend servers run in this process).");
        println!("Try, from another terminal:");
        println!(
            "  ip netns exec {} curl -sk --http2 -c /tmp/jar -b /tmp/jar https://{WEB}/ -D -",
            demo.lab.client.netns
        );
        println!(
            "  ip netns exec {} curl -s http://{WEB}/admin   # 403 by ACL",
            demo.lab.client.netns
        );
        println!(
            "  ip netns exec {} nc 10.100.0.10 7000          # the XDP VIP",
            demo.lab.client.netns
        );
        println!("Press Ctrl-C to stop lb and remove the lab.");
        while !demo.interrupted() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let _ = lb.stop();
    println!("\nlb demo: done; the lab is removed.");
    Ok(())
}

fn main() -> ExitCode {
    let keep = std::env::args().any(|a| a == "--keep");
    let repo = std::env::var_os("LB_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .and_then(|_| signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()))
    {
        eprintln!("lb demo: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    if !lb_tests::privileged() {
        eprintln!("lb demo: needs root (network namespaces and XDP)");
        return ExitCode::FAILURE;
    }
    match run(&repo, keep, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb demo: {e}");
            ExitCode::FAILURE
        }
    }
}
