//! L7 benchmark: lb vs HAProxy vs nginx as HTTP/HTTPS reverse proxies on loopback, with the
//! same nginx backends, the same thread count (2) and equivalent configs, in one run. Each
//! proxy's threads are bound one per CPU (lb `cpu_map = "auto"`, HAProxy `cpu-map
//! auto:1/1-2 0-1`, nginx `worker_cpu_affinity auto`): left floating, the scheduler at times
//! stacks two proxy threads on one CPU for a whole 4 ms tick, which decides the p99.
//!
//! Scenarios: HTTP/1.1 keep-alive (wrk), HTTPS keep-alive (wrk), h2 over TLS (h2load), new
//! TLS connections per second (wrk with `Connection: close`), and RSS with 10k idle
//! keep-alive connections. CPU per request comes from `/proc/PID/stat` deltas. The same
//! proxies under callgrind give the instructions per request (`bench::instr`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::procstat::{cpu_micros, rss_kib, tree_sum};
use super::report::{Row, Target, median, print};
use super::tools::{Load, h2load, wrk};

const BACKEND_PORTS: [u16; 2] = [18081, 18082];
const THREADS: u32 = 2;

/// A proxy under test: its name, process and ports.
pub(super) struct Proxy {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) http: u16,
    pub(super) https: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop_gracefully(&mut self.child);
    }
}

/// SIGTERM, then SIGKILL after 5 s. nginx's master must get SIGTERM to stop its workers; a
/// SIGKILL'ed master leaves them running and holding the ports.
fn stop_gracefully(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The backend nginx, stopped gracefully on drop.
pub(super) struct Backends(Child);

impl Drop for Backends {
    fn drop(&mut self) {
        stop_gracefully(&mut self.0);
    }
}

/// Settings of one bench run.
#[derive(Debug, Clone)]
pub struct L7Bench {
    pub lb_bin: PathBuf,
    pub dir: PathBuf,
    pub duration: Duration,
    pub repeats: usize,
    pub idle_conns: usize,
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Writes a self-signed certificate + key for `localhost` as one PEM, and separately.
pub fn make_cert(dir: &Path) -> std::io::Result<(PathBuf, PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(std::io::Error::other)?;
    let cert = ck.cert.pem();
    let key = ck.key_pair.serialize_pem();
    let both = dir.join("site.pem");
    let c = dir.join("site.crt");
    let k = dir.join("site.key");
    write(&both, &format!("{cert}{key}"))?;
    write(&c, &cert)?;
    write(&k, &key)?;
    Ok((both, c, k))
}

/// How a proxy under test is started: directly, or under valgrind's callgrind (which
/// counts the instructions it executes; see `bench::instr`).
#[derive(Debug, Clone)]
pub enum Launch {
    Direct,
    /// Callgrind writes its counts to this file (`%p` is replaced by the PID).
    Callgrind(PathBuf),
}

impl Launch {
    /// `cmd` as this launch runs it.
    fn command(&self, cmd: &Command) -> Command {
        let Launch::Callgrind(out) = self else {
            let mut c = Command::new(cmd.get_program());
            c.args(cmd.get_args());
            copy_envs(cmd, &mut c);
            return c;
        };
        let mut c = Command::new("valgrind");
        c.arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(cmd.get_program())
            .args(cmd.get_args());
        copy_envs(cmd, &mut c);
        c
    }

    /// How long the proxy may take to listen (callgrind starts programs ~50× slower).
    fn startup(&self) -> Duration {
        match self {
            Launch::Direct => Duration::from_secs(10),
            Launch::Callgrind(_) => Duration::from_secs(90),
        }
    }
}

fn copy_envs(from: &Command, to: &mut Command) {
    for (k, v) in from.get_envs() {
        match v {
            Some(v) => to.env(k, v),
            None => to.env_remove(k),
        };
    }
}

/// Whether something listens on 127.0.0.1:`port` within `limit`.
fn listening_within(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if crate::wait_for_local_port(port) {
            return true;
        }
    }
    false
}

fn spawn(cmd: &mut Command, log: &Path) -> std::io::Result<Child> {
    let f = std::fs::File::create(log)?;
    let e = f.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(e))
        .spawn()
}

pub(super) fn start_backends(dir: &Path) -> std::io::Result<Backends> {
    let conf = dir.join("backend-nginx.conf");
    let listens: String = BACKEND_PORTS
        .iter()
        .map(|p| format!("listen 127.0.0.1:{p} reuseport;\n"))
        .collect();
    write(
        &conf,
        &format!(
            "worker_processes 2;\ndaemon off;\npid {d}/backend.pid;\nerror_log {d}/backend.err;\n\
             worker_rlimit_nofile 20000;\nevents {{ worker_connections 8000; }}\n\
             http {{ access_log off; keepalive_requests 1000000;\n  server {{ {listens} location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            d = dir.display()
        ),
    )?;
    let child = spawn(
        Command::new("nginx").args(["-c", &conf.to_string_lossy(), "-p", &dir.to_string_lossy()]),
        &dir.join("backend.log"),
    )?;
    let backends = Backends(child);
    if !crate::wait_for_local_port(BACKEND_PORTS[0]) {
        return Err(std::io::Error::other("backend nginx did not start"));
    }
    Ok(backends)
}

pub(super) fn start_haproxy(dir: &Path, pem: &Path, how: &Launch) -> std::io::Result<Proxy> {
    let conf = dir.join("haproxy.cfg");
    write(
        &conf,
        &format!(
            "global\n  nbthread {THREADS}\n  cpu-map auto:1/1-{THREADS} 0-{last_cpu}\n  maxconn 9900\n  fd-hard-limit 20000\n\
             defaults\n  mode http\n  timeout client 30s\n  timeout connect 5s\n  timeout server 30s\n  option http-keep-alive\n\
             frontend fe\n  bind 127.0.0.1:18090\n  bind 127.0.0.1:18453 ssl crt {pem} alpn h2,http/1.1\n  default_backend be\n\
             backend be\n  balance roundrobin\n  http-reuse always\n  server s1 127.0.0.1:{b0}\n  server s2 127.0.0.1:{b1}\n",
            pem = pem.display(),
            last_cpu = THREADS - 1,
            b0 = BACKEND_PORTS[0],
            b1 = BACKEND_PORTS[1]
        ),
    )?;
    let child = spawn(
        &mut how.command(Command::new("haproxy").args(["-db", "-f", &conf.to_string_lossy()])),
        &dir.join("haproxy.log"),
    )?;
    let p = Proxy {
        name: "haproxy",
        child,
        http: 18090,
        https: 18453,
    };
    if !listening_within(p.http, how.startup()) {
        return Err(std::io::Error::other(
            "haproxy did not start; see haproxy.log",
        ));
    }
    Ok(p)
}

fn start_nginx_proxy(dir: &Path, crt: &Path, key: &Path) -> std::io::Result<Proxy> {
    let conf = dir.join("proxy-nginx.conf");
    write(
        &conf,
        &format!(
            "worker_processes {THREADS};\nworker_cpu_affinity auto;\ndaemon off;\npid {d}/proxy.pid;\nerror_log {d}/proxy.err;\n\
             worker_rlimit_nofile 20000;\nevents {{ worker_connections 9000; }}\n\
             http {{ access_log off; keepalive_requests 1000000;\n\
               upstream be {{ server 127.0.0.1:{b0}; server 127.0.0.1:{b1}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:18091; listen 127.0.0.1:18454 ssl http2;\n\
                 ssl_certificate {crt}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;\n\
                 location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
            d = dir.display(),
            crt = crt.display(),
            key = key.display(),
            b0 = BACKEND_PORTS[0],
            b1 = BACKEND_PORTS[1]
        ),
    )?;
    let child = spawn(
        Command::new("nginx").args(["-c", &conf.to_string_lossy(), "-p", &dir.to_string_lossy()]),
        &dir.join("proxy-nginx.log"),
    )?;
    let p = Proxy {
        name: "nginx",
        child,
        http: 18091,
        https: 18454,
    };
    if !crate::wait_for_local_port(p.http) {
        return Err(std::io::Error::other("nginx proxy did not start"));
    }
    Ok(p)
}

pub(super) fn start_lb(bin: &Path, dir: &Path, pem: &Path, how: &Launch) -> std::io::Result<Proxy> {
    let conf = dir.join("lb.toml");
    write(
        &conf,
        &format!(
            "[global]\nadmin = \"127.0.0.1:18099\"\nthreads = {THREADS}\ncpu_map = \"auto\"\n\n\
             [defaults]\nmode = \"http\"\ntimeout = {{ client = \"30s\", connect = \"5s\", server = \"30s\" }}\n\n\
             [frontend.fe]\nbind = [\"127.0.0.1:18092\", \"127.0.0.1:18455 ssl crt {pem} alpn h2,http/1.1\"]\ndefault_backend = \"be\"\n\n\
             [backend.be]\nbalance = \"roundrobin\"\nserver = [\"s1 127.0.0.1:{b0}\", \"s2 127.0.0.1:{b1}\"]\n",
            pem = pem.display(),
            b0 = BACKEND_PORTS[0],
            b1 = BACKEND_PORTS[1]
        ),
    )?;
    let child = spawn(
        &mut how.command(
            Command::new(bin)
                .args(["run", "-c", &conf.to_string_lossy()])
                .env("RUST_LOG", "warn"),
        ),
        &dir.join("lb.log"),
    )?;
    let p = Proxy {
        name: "lb",
        child,
        http: 18092,
        https: 18455,
    };
    if !listening_within(p.http, how.startup()) {
        return Err(std::io::Error::other("lb did not start; see lb.log"));
    }
    Ok(p)
}

/// Per-scenario medians of one proxy.
#[derive(Debug, Default, Clone)]
struct Measured {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us_per_req: Vec<f64>,
}

fn measure(proxy: &Proxy, run: &dyn Fn(&Proxy) -> Option<Load>, into: &mut Measured) {
    let pid = proxy.child.id();
    let before = tree_sum(pid, cpu_micros);
    let Some(load) = run(proxy) else {
        eprintln!("bench: {} produced no result", proxy.name);
        return;
    };
    let after = tree_sum(pid, cpu_micros);
    into.rps.push(load.rps);
    into.p50.push(load.p50_ms);
    into.p99.push(load.p99_ms);
    if load.requests > 0.0 {
        into.cpu_us_per_req
            .push((after.saturating_sub(before)) as f64 / load.requests);
    }
}

/// Opens `n` keep-alive connections, one request each, and returns the proxy's RSS in KiB
/// while they are idle.
fn idle_rss(proxy: &Proxy, n: usize) -> Option<f64> {
    let mut conns = Vec::with_capacity(n);
    let req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    for _ in 0..n {
        let mut c = TcpStream::connect(("127.0.0.1", proxy.http)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        c.write_all(req).ok()?;
        let mut buf = [0u8; 512];
        let _ = c.read(&mut buf).ok()?;
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = tree_sum(proxy.child.id(), rss_kib) as f64;
    drop(conns);
    Some(rss)
}

type Scenario = (
    &'static str,
    Box<dyn Fn(&Proxy) -> Option<Load>>,
    Target,
    Target,
);

/// Runs the L7 comparison and prints the report.
pub fn run(cfg: &L7Bench) -> std::io::Result<()> {
    std::fs::create_dir_all(&cfg.dir)?;
    let (pem, crt, key) = make_cert(&cfg.dir)?;
    let _backends = start_backends(&cfg.dir)?;
    let d = cfg.duration;
    let scenarios: Vec<Scenario> = vec![
        (
            "HTTP/1.1 keep-alive",
            Box::new(move |p: &Proxy| {
                wrk(&format!("http://127.0.0.1:{}/", p.http), 1, 50, d, false)
            }),
            Target::AtLeast(1.2),
            Target::AtMost(0.8),
        ),
        (
            "HTTPS keep-alive",
            Box::new(move |p: &Proxy| {
                wrk(&format!("https://127.0.0.1:{}/", p.https), 1, 50, d, false)
            }),
            Target::AtLeast(1.2),
            Target::AtMost(0.8),
        ),
        (
            "h2 (h2load)",
            Box::new(move |p: &Proxy| {
                h2load(&format!("https://127.0.0.1:{}/", p.https), 20, 10, 60_000)
            }),
            Target::AtLeast(1.2),
            Target::AtMost(0.8),
        ),
        (
            "new TLS connections",
            Box::new(move |p: &Proxy| {
                wrk(&format!("https://127.0.0.1:{}/", p.https), 1, 20, d, true)
            }),
            Target::AtLeast(1.5),
            Target::AtMost(0.8),
        ),
    ];
    let names = ["lb", "haproxy", "nginx"];
    let mut results: Vec<Vec<Measured>> = vec![vec![Measured::default(); scenarios.len()]; 3];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for rep in 0..cfg.repeats {
        for (i, name) in names.iter().enumerate() {
            let proxy = match *name {
                "lb" => start_lb(&cfg.lb_bin, &cfg.dir, &pem, &Launch::Direct),
                "haproxy" => start_haproxy(&cfg.dir, &pem, &Launch::Direct),
                _ => start_nginx_proxy(&cfg.dir, &crt, &key),
            };
            let proxy = match proxy {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("bench: {name}: {e}");
                    continue;
                }
            };
            for (s, (label, f, _, _)) in scenarios.iter().enumerate() {
                eprintln!("bench: round {}/{} {name}: {label}", rep + 1, cfg.repeats);
                measure(&proxy, f.as_ref(), &mut results[i][s]);
            }
            if let Some(r) = idle_rss(&proxy, cfg.idle_conns) {
                rss[i].push(r);
            } else {
                eprintln!(
                    "bench: {name}: could not hold {} idle connections",
                    cfg.idle_conns
                );
            }
        }
    }
    for (refi, refname) in [(1usize, "haproxy"), (2, "nginx")] {
        let mut rows = Vec::new();
        for (s, (label, _, rps_target, cpu_target)) in scenarios.iter().enumerate() {
            let m =
                |i: usize, f: fn(&Measured) -> &Vec<f64>| median(&mut f(&results[i][s]).clone());
            let is_ref_haproxy = refname == "haproxy";
            rows.push(Row {
                metric: format!("{label} req/s"),
                unit: "req/s".into(),
                lb: m(0, |x| &x.rps),
                reference: m(refi, |x| &x.rps),
                reference_name: refname.into(),
                target: if is_ref_haproxy {
                    *rps_target
                } else {
                    Target::None
                },
            });
            rows.push(Row {
                metric: format!("{label} CPU per request"),
                unit: "us".into(),
                lb: m(0, |x| &x.cpu_us_per_req),
                reference: m(refi, |x| &x.cpu_us_per_req),
                reference_name: refname.into(),
                target: if is_ref_haproxy {
                    *cpu_target
                } else {
                    Target::None
                },
            });
            let lat = if label.starts_with("h2") {
                "mean / max latency"
            } else {
                "p50 / p99 latency"
            };
            rows.push(Row {
                metric: format!("{label} {lat}: p50"),
                unit: "ms".into(),
                lb: m(0, |x| &x.p50),
                reference: m(refi, |x| &x.p50),
                reference_name: refname.into(),
                target: Target::None,
            });
            rows.push(Row {
                metric: format!("{label} {lat}: p99"),
                unit: "ms".into(),
                lb: m(0, |x| &x.p99),
                reference: m(refi, |x| &x.p99),
                reference_name: refname.into(),
                target: if is_ref_haproxy {
                    Target::AtMost(1.0)
                } else {
                    Target::None
                },
            });
        }
        // The rate of new TLS connections is bounded by wrk's one thread (it spends a core
        // on the client side of the handshakes); what the proxy itself can take is the
        // inverse of its CPU per handshake.
        if let Some(s) = scenarios
            .iter()
            .position(|(label, ..)| label.starts_with("new TLS"))
        {
            let per_cpu_second = |i: usize| {
                let cpu = median(&mut results[i][s].cpu_us_per_req.clone());
                if cpu > 0.0 { 1e6 / cpu } else { 0.0 }
            };
            rows.push(Row {
                metric: "new TLS connections per proxy CPU-second".into(),
                unit: "conn/s".into(),
                lb: per_cpu_second(0),
                reference: per_cpu_second(refi),
                reference_name: refname.into(),
                target: Target::None,
            });
        }
        rows.push(Row {
            metric: format!("RSS with {} idle keep-alive conns", cfg.idle_conns),
            unit: "MiB".into(),
            lb: median(&mut rss[0].clone()) / 1024.0,
            reference: median(&mut rss[refi].clone()) / 1024.0,
            reference_name: refname.into(),
            target: Target::None,
        });
        print(
            &format!(
                "L7: lb vs {refname} ({} rounds, medians, {THREADS} threads each)",
                cfg.repeats
            ),
            &rows,
        );
    }
    Ok(())
}
