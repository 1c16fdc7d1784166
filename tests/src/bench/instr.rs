//! User-space instructions per request, counted by valgrind's callgrind: lb and HAProxy
//! with the configs and nginx backends of the L7 bench (`bench::l7`), 2 threads each.
//! Unlike CPU time, the count does not depend on what else the machine runs, so changes
//! to the request path are judged by it (method of docs/benchmarks.md).
//!
//! Per proxy, one process under callgrind: `warmup` requests, counters zeroed
//! (`callgrind_control -z`), `requests` requests with h2load, counters dumped
//! (`callgrind_control -d`); first HTTP/1.1 keep-alive (`h2load --h1 -c20`), then h2 over
//! TLS (`h2load -c20 -m10`, its 20 handshakes included). The dump's `summary:` (all threads'
//! Ir) divided by `requests` is the figure.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::l7::{Launch, Proxy, make_cert, start_backends, start_haproxy, start_lb};
use super::report::{Row, Target, print};

/// Settings of one instruction count.
#[derive(Debug, Clone)]
pub struct InstrBench {
    pub lb_bin: PathBuf,
    pub dir: PathBuf,
    pub warmup: u32,
    pub requests: u32,
}

/// The two loads measured, in order: label, whether over TLS, h2load's protocol flags.
const LOADS: [(&str, bool, &[&str]); 2] = [
    (
        "HTTP/1.1 keep-alive",
        false,
        &["--h1", "-c", "20", "-m", "1"],
    ),
    ("h2 over TLS", true, &["-c", "20", "-m", "10"]),
];

/// Runs `n` requests of `flags` against the proxy; the number that succeeded.
fn load(proxy: &Proxy, tls: bool, flags: &[&str], n: u32) -> Option<f64> {
    let url = if tls {
        format!("https://127.0.0.1:{}/", proxy.https)
    } else {
        format!("http://127.0.0.1:{}/", proxy.http)
    };
    let out = Command::new("h2load")
        .args(flags)
        .args(["-n", &n.to_string(), &url])
        .output()
        .ok()?;
    let l = super::tools::parse_h2load(&String::from_utf8_lossy(&out.stdout))?;
    (l.errors == 0.0).then_some(l.requests)
}

fn callgrind_control(flag: &str, pid: u32) -> bool {
    Command::new("callgrind_control")
        .args([flag, &pid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `summary:` (or `totals:`) Ir of the newest dump part `prefix.N` of one process.
fn last_dump_ir(prefix: &Path) -> Option<f64> {
    let dir = prefix.parent()?;
    let stem = prefix.file_name()?.to_string_lossy().into_owned();
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let part: u32 = name.strip_prefix(&stem)?.strip_prefix('.')?.parse().ok()?;
            Some((part, e.path()))
        })
        .max_by_key(|(part, _)| *part)?;
    let text = std::fs::read_to_string(newest.1).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Instructions per request of one proxy for each of `LOADS` (0 where it failed).
fn count(proxy: &Proxy, out_prefix: &Path, cfg: &InstrBench) -> Vec<f64> {
    let pid = proxy.child.id();
    LOADS
        .iter()
        .map(|(label, tls, flags)| {
            eprintln!("bench: callgrind {}: {label}", proxy.name);
            let measured = load(proxy, *tls, flags, cfg.warmup)
                .filter(|_| callgrind_control("-z", pid))
                .and_then(|_| load(proxy, *tls, flags, cfg.requests))
                .filter(|_| callgrind_control("-d", pid))
                .and_then(|done| Some(last_dump_ir(out_prefix)? / done));
            measured.unwrap_or_else(|| {
                eprintln!("bench: callgrind {}: {label} produced no count", proxy.name);
                0.0
            })
        })
        .collect()
}

/// Counts lb's and HAProxy's instructions per request and prints the report.
pub fn run(cfg: &InstrBench) -> std::io::Result<()> {
    std::fs::create_dir_all(&cfg.dir)?;
    let (pem, _, _) = make_cert(&cfg.dir)?;
    let _backends = start_backends(&cfg.dir)?;
    let mut per_proxy = Vec::new();
    for name in ["lb", "haproxy"] {
        let how = Launch::Callgrind(cfg.dir.join(format!("callgrind.{name}.%p")));
        let proxy = match name {
            "lb" => start_lb(&cfg.lb_bin, &cfg.dir, &pem, &how),
            _ => start_haproxy(&cfg.dir, &pem, &how),
        };
        let counts = match proxy {
            Ok(p) => {
                let prefix = cfg.dir.join(format!("callgrind.{name}.{}", p.child.id()));
                count(&p, &prefix, cfg)
            }
            Err(e) => {
                eprintln!("bench: callgrind {name}: {e}");
                vec![0.0; LOADS.len()]
            }
        };
        per_proxy.push(counts);
    }
    let rows: Vec<Row> = LOADS
        .iter()
        .enumerate()
        .map(|(i, (label, ..))| Row {
            metric: format!("{label} user-space instructions per request"),
            unit: "Ir".into(),
            lb: per_proxy[0][i],
            reference: per_proxy[1][i],
            reference_name: "haproxy".into(),
            // Issue #13's target for HTTP/1.1; none set for h2.
            target: if i == 0 {
                Target::AtMost(0.5)
            } else {
                Target::None
            },
        })
        .collect();
    print(
        &format!(
            "L7 instructions (callgrind, {} requests after {} warm-up, 2 threads each)",
            cfg.requests, cfg.warmup
        ),
        &rows,
    );
    Ok(())
}
