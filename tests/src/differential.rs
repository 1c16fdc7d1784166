//! HAProxy and lb side by side for differential tests: both started on the same
//! haproxy.cfg (lb's through `lb convert`), each on a loopback port of its own, killed and
//! cleaned up when the test drops them. HAProxy comes from Debian (`haproxy`, installed by
//! `.ci/run` and the xtask bootstrap).

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

use crate::lbproc::lb_binary;

/// A child process killed when dropped.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// HAProxy and lb started on the same haproxy.cfg (lb's through `lb convert`), each on a
/// port of its own.
pub struct Pair {
    /// HAProxy's listening address.
    pub h: SocketAddr,
    /// lb's listening address.
    pub l: SocketAddr,
    /// The configs and anything the test writes beside them; removed on drop.
    pub dir: std::path::PathBuf,
    _procs: [Proc; 2],
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pair {
    /// Writes `cfg(port)` for each, converts lb's copy and starts both; panics (a test
    /// failure) when either does not listen.
    pub fn start(tag: &str, cfg: impl Fn(u16) -> String) -> Pair {
        let dir = std::env::temp_dir().join(format!("lb-diff-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let (hp, lp) = (free_port(), free_port());
        let hcfg = dir.join("haproxy.cfg");
        std::fs::write(&hcfg, cfg(hp)).expect("write haproxy.cfg");
        let lcfg_in = dir.join("lb-haproxy.cfg");
        std::fs::write(&lcfg_in, cfg(lp)).expect("write lb input");
        let ltoml = dir.join("lb.toml");
        let conv = Command::new(lb_binary())
            .args([
                "convert",
                &lcfg_in.to_string_lossy(),
                "-o",
                &ltoml.to_string_lossy(),
            ])
            .output()
            .expect("lb convert runs");
        assert!(
            conv.status.success(),
            "lb convert: {}",
            String::from_utf8_lossy(&conv.stderr)
        );
        // lb needs an admin port of its own.
        let admin = free_port();
        let toml = std::fs::read_to_string(&ltoml).expect("converted toml");
        let toml = set_admin(&toml, admin);
        std::fs::write(&ltoml, toml).expect("rewrite toml");

        let hproc = Proc(
            Command::new("haproxy")
                .args(["-db", "-f", &hcfg.to_string_lossy()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("haproxy starts"),
        );
        let lproc = Proc(
            Command::new(lb_binary())
                .args(["run", "-c", &ltoml.to_string_lossy()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("lb starts"),
        );
        assert!(crate::wait_for_local_port(hp), "haproxy listens");
        assert!(crate::wait_for_local_port(lp), "lb listens");
        Pair {
            h: ([127, 0, 0, 1], hp).into(),
            l: ([127, 0, 0, 1], lp).into(),
            dir,
            _procs: [hproc, lproc],
        }
    }
}

/// Points `[global] admin` at `port`, adding the section when the conversion has none.
fn set_admin(toml: &str, port: u16) -> String {
    let line = format!("admin = \"127.0.0.1:{port}\"");
    let mut out = Vec::new();
    let mut in_global = false;
    let mut done = false;
    for l in toml.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            if in_global && !done {
                out.push(line.clone());
                done = true;
            }
            in_global = t == "[global]";
        }
        if in_global && t.starts_with("admin") {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_owned());
    }
    if !done {
        if in_global {
            out.push(line);
        } else {
            out.insert(0, format!("[global]\n{line}\n"));
        }
    }
    out.join("\n")
}
