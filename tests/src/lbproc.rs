//! Running the real `lb` binary inside a lab host, and talking to its admin API.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::lab::{Host, LabError, Result};

/// Path of the `lb` binary built next to the running test binary (`target/<profile>/lb`).
/// `cargo xtask test` builds it before the privileged stages; `LB_BIN` overrides.
pub fn lb_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("LB_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/lb
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("lb"))
        .unwrap_or_else(|| PathBuf::from("lb"))
}

/// A running `lb run` process; killed on drop.
#[derive(Debug)]
pub struct LbProcess {
    pub child: Child,
    pub admin: SocketAddr,
    pub host: Host,
    pub log: PathBuf,
}

impl LbProcess {
    /// Starts `lb run -c CONFIG` in `host` and waits (bounded) until `/healthz` answers.
    pub fn start(host: &Host, config: &Path, admin: SocketAddr, extra: &[&str]) -> Result<Self> {
        Self::start_in(host, config, admin, extra, Path::new("."))
    }

    /// Like [`LbProcess::start`], with the process's working directory set to `cwd`
    /// (relative paths in the config resolve against it).
    pub fn start_in(
        host: &Host,
        config: &Path,
        admin: SocketAddr,
        extra: &[&str],
        cwd: &Path,
    ) -> Result<Self> {
        Self::start_logged(
            host,
            config,
            admin,
            extra,
            cwd,
            &config.with_extension("log"),
        )
    }

    /// Like [`LbProcess::start_in`], with stdout and stderr going to `log` instead of a
    /// file next to the config (for configs that live in the source tree).
    pub fn start_logged(
        host: &Host,
        config: &Path,
        admin: SocketAddr,
        extra: &[&str],
        cwd: &Path,
        log: &Path,
    ) -> Result<Self> {
        Self::spawn(host, config, admin, extra, cwd, log, &[])
    }

    /// Like [`LbProcess::start`], in a private mount namespace where `/sys/fs/bpf` is not
    /// mounted (as on a host without bpffs): lb must mount bpffs itself. Its pins live and
    /// die with that namespace, so nothing is left behind when lb exits.
    pub fn start_without_bpffs(
        host: &Host,
        config: &Path,
        admin: SocketAddr,
        extra: &[&str],
    ) -> Result<Self> {
        Self::spawn(
            host,
            config,
            admin,
            extra,
            Path::new("."),
            &config.with_extension("log"),
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "umount -l /sys/fs/bpf 2>/dev/null; exec \"$0\" \"$@\"",
            ],
        )
    }

    /// Starts lb, its command line prefixed by `wrapper` (a command that ends by exec'ing
    /// its arguments, so the child is lb itself).
    fn spawn(
        host: &Host,
        config: &Path,
        admin: SocketAddr,
        extra: &[&str],
        cwd: &Path,
        log: &Path,
        wrapper: &[&str],
    ) -> Result<Self> {
        let log = log.to_path_buf();
        let logfile = std::fs::File::create(&log).map_err(|source| LabError::Io {
            ns: host.netns.clone(),
            source,
        })?;
        let errfile = logfile.try_clone().map_err(|source| LabError::Io {
            ns: host.netns.clone(),
            source,
        })?;
        let bin = lb_binary();
        let config_arg = config.to_string_lossy().into_owned();
        let bin_arg = bin.to_string_lossy().into_owned();
        let (program, mut args) = match wrapper.split_first() {
            Some((p, rest)) => {
                let mut a = rest.to_vec();
                a.push(bin_arg.as_str());
                (*p, a)
            }
            None => (bin_arg.as_str(), Vec::new()),
        };
        args.extend(["run", "-c", config_arg.as_str()]);
        args.extend_from_slice(extra);
        let child = host
            .net_command(program, &args)
            .env("RUST_LOG", "info")
            .current_dir(cwd)
            .stdout(Stdio::from(logfile))
            .stderr(Stdio::from(errfile))
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: format!("{} run", bin.display()),
                source,
            })?;
        let mut p = LbProcess {
            child,
            admin,
            host: host.clone(),
            log,
        };
        p.wait_ready(Duration::from_secs(20))?;
        Ok(p)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LabError::Command {
                    cmd: format!("lb run (exited {status})"),
                    stderr: self.log_text(),
                });
            }
            if let Ok((200, _)) = self.get("/healthz") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(LabError::Command {
            cmd: "lb run: not ready in time".into(),
            stderr: self.log_text(),
        })
    }

    /// The process's combined output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the admin listener: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        self.request("GET", path, "")
    }

    /// One HTTP/1.1 request on the admin listener, made from inside the host.
    pub fn request(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let mut conn = self.host.tcp_connect(self.admin, Duration::from_secs(2))?;
        let io = |source| LabError::Io {
            ns: self.host.netns.clone(),
            source,
        };
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io)?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-LB-Admin: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.admin,
            body.len()
        );
        conn.write_all(req.as_bytes()).map_err(io)?;
        let mut resp = String::new();
        conn.read_to_string(&mut resp).map_err(io)?;
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Stops with SIGTERM and waits (bounded); SIGKILL after 10 s.
    pub fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.signal(Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
