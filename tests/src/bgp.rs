//! Real BGP daemons in lab hosts: BIRD 2 on the lb nodes (exporting the `[announce]`
//! interface with BFD) and FRR (zebra, bfdd, bgpd) on a router. Every daemon runs in the
//! foreground with a config, pid file, log and control socket the test writes into its own
//! directory, and is spawned through the [`Lab`], so it is killed when the lab is dropped.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::lab::{Host, Lab, LabError, Result};

/// The interface kind `[announce]` should use in `host`: `dummy` when the kernel has the
/// dummy driver, else `ifb` (kernels built without `CONFIG_DUMMY`).
pub fn announce_kind(host: &Host) -> &'static str {
    let probe = "lbprobe0";
    if host.ip(&["link", "add", probe, "type", "dummy"]).is_ok() {
        let _ = host.ip(&["link", "del", probe]);
        "dummy"
    } else {
        "ifb"
    }
}

/// A BIRD 2 config: the `direct` protocol on `iface` exported to one eBGP neighbour, with
/// BFD (100 ms × 3) on the session.
pub fn bird_conf(
    router_id: &str,
    local_as: u32,
    neighbor: &str,
    neighbor_as: u32,
    iface: &str,
    log: &Path,
) -> String {
    format!(
        r#"router id {router_id};
log "{log}" all;
protocol device {{ scan time 1; }}
protocol direct vips {{ ipv4; ipv6; interface "{iface}"; }}
protocol bfd {{ interface "*" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}
protocol bgp uplink {{
  local {router_id} as {local_as};
  neighbor {neighbor} as {neighbor_as};
  bfd on;
  hold time 3;
  connect retry time 1;
  error wait time 1, 3;
  ipv4 {{ import none; export where proto = "vips"; next hop self; }};
}}
"#,
        log = log.display()
    )
}

/// An FRR config for a router: eBGP to each of `neighbors` (address, AS) with BFD,
/// `maximum-paths` so equal routes from several nodes become one ECMP route.
pub fn frr_conf(router_id: &str, local_as: u32, neighbors: &[(&str, u32)]) -> String {
    let mut s = format!(
        "frr defaults traditional\nhostname router\n!\nrouter bgp {local_as}\n bgp router-id {router_id}\n no bgp ebgp-requires-policy\n timers bgp 1 3\n"
    );
    for (addr, asn) in neighbors {
        s.push_str(&format!(
            " neighbor {addr} remote-as {asn}\n neighbor {addr} bfd\n neighbor {addr} timers connect 1\n"
        ));
    }
    s.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n!\n");
    s
}

fn io(host: &Host) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        ns: host.netns.clone(),
        source,
    }
}

/// Starts BIRD in `host` with `conf`, its socket and pid file in `dir`; returns its pid.
pub fn start_bird(lab: &Lab, host: &Host, dir: &Path, conf: &str) -> Result<u32> {
    let path = dir.join(format!("bird-{}.conf", host.name));
    std::fs::write(&path, conf).map_err(io(host))?;
    let p = |s: &str| {
        dir.join(format!("bird-{}.{s}", host.name))
            .display()
            .to_string()
    };
    let conf_arg = path.display().to_string();
    let (sock, pid) = (p("ctl"), p("pid"));
    host.exec("bird", &["-p", "-c", &conf_arg])?;
    lab.spawn(
        host,
        "bird",
        &["-f", "-c", &conf_arg, "-s", &sock, "-P", &pid],
    )
}

/// `birdc show protocols all` of the BIRD [`start_bird`] started in `host` (for messages).
pub fn bird_status(host: &Host, dir: &Path) -> String {
    let sock = dir.join(format!("bird-{}.ctl", host.name));
    std::process::Command::new("birdc")
        .arg("-s")
        .arg(&sock)
        .args(["show", "protocols", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("birdc: {e}"))
}

/// FRR's daemons on a router host; their vty sockets are in `dir`.
#[derive(Debug)]
pub struct Frr {
    pub dir: std::path::PathBuf,
    pub host: Host,
}

impl Frr {
    /// Starts zebra, bfdd and bgpd in `host` with `conf` (one file read by all three), as
    /// the `frr` user (the package's vty group demands it), everything in `dir` (made
    /// the `frr` user's).
    pub fn start(lab: &Lab, host: &Host, dir: &Path, conf: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(host))?;
        let path = dir.join("frr.conf");
        std::fs::write(&path, conf).map_err(io(host))?;
        let chown = std::process::Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(dir)
            .status()
            .map_err(io(host))?;
        if !chown.success() {
            return Err(LabError::Command {
                cmd: format!("chown -R frr:frr {}", dir.display()),
                stderr: format!("exit {chown}"),
            });
        }
        let d = dir.display().to_string();
        let conf_arg = path.display().to_string();
        let zsock = format!("{d}/zserv.api");
        for daemon in ["zebra", "bfdd", "bgpd"] {
            let pid = format!("{d}/{daemon}.pid");
            let log = format!("file:{d}/{daemon}.log");
            let mut args = vec![
                "-f",
                conf_arg.as_str(),
                "-i",
                pid.as_str(),
                "-z",
                zsock.as_str(),
                "--vty_socket",
                d.as_str(),
                "-u",
                "frr",
                "-g",
                "frr",
                "--log",
                log.as_str(),
            ];
            let ctl = format!("{d}/bfdd.sock");
            if daemon == "bfdd" {
                args.extend(["--bfdctl", ctl.as_str()]);
            }
            lab.spawn(host, &format!("/usr/lib/frr/{daemon}"), &args)?;
            if daemon == "zebra" {
                // The others connect to zebra's socket.
                let start = Instant::now();
                while !Path::new(&zsock).exists() && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            host: host.clone(),
        })
    }

    /// `vtysh -c CMD` against these daemons.
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        let d = self.dir.display().to_string();
        let out = self.host.exec("vtysh", &["--vty_socket", &d, "-c", cmd])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The BGP neighbours in state Established.
    pub fn established(&self) -> BTreeSet<String> {
        let Ok(text) = self.vtysh("show bgp ipv4 unicast summary json") else {
            return BTreeSet::new();
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["peers"]
            .as_object()
            .map(|peers| {
                peers
                    .iter()
                    .filter(|(_, p)| p["state"] == "Established")
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The next hops of the kernel route to `prefix` in `host` (empty when there is none).
pub fn nexthops(host: &Host, prefix: &str) -> BTreeSet<IpAddr> {
    let Ok(out) = host.ip(&["-j", "route", "show", "exact", prefix]) else {
        return BTreeSet::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut hops = BTreeSet::new();
    for r in v.as_array().into_iter().flatten() {
        if let Some(gw) = r["gateway"].as_str().and_then(|g| g.parse().ok()) {
            hops.insert(gw);
        }
        for nh in r["nexthops"].as_array().into_iter().flatten() {
            if let Some(gw) = nh["gateway"].as_str().and_then(|g| g.parse().ok()) {
                hops.insert(gw);
            }
        }
    }
    hops
}

/// Waits (bounded by `limit`, polling every 100 ms) until `cond` holds; returns how long
/// it took, or `Err` with the last value `cond` saw described.
pub fn wait_for(
    limit: Duration,
    mut cond: impl FnMut() -> (bool, String),
) -> std::result::Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    for _ in 0..(limit.as_millis() / 100).max(1) {
        let (ok, what) = cond();
        if ok {
            return Ok(start.elapsed());
        }
        last = what;
        if start.elapsed() >= limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}
