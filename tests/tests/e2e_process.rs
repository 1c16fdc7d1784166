//! The real `lb` binary with HAProxy's process settings (`[global]` user, group, chroot,
//! pidfile, ulimit_n, hard_stop_after, maxconn), run as root on loopback (fixed ports
//! 23100-23199). Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use lb_tests::lbproc::lb_binary;
use lb_tests::require_root;

/// A backend answering every request with `200 ok`, after `delay`.
fn backend(delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    std::thread::sleep(delay);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    addr
}

struct Lb {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Lb {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// SIGTERM, then the exit status and how long it took (bounded: SIGKILL after 20 s).
    fn stop(&mut self) -> (Option<std::process::ExitStatus>, Duration) {
        let started = Instant::now();
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (Some(st), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        (self.child.wait().ok(), started.elapsed())
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory, world-readable (lb may run as `nobody` and read it).
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-e2e-process-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Writes the config (a `[global]` with `global`, one http listener on `port` to `server`)
/// and runs `lb run`; `Err(log)` when lb exits first.
fn start(dir: &Path, port: u16, global: &str, server: SocketAddr) -> Result<Lb, String> {
    let cfg = dir.join("lb.toml");
    let admin = port + 50;
    std::fs::write(
        &cfg,
        format!(
            "[global]\nadmin = \"127.0.0.1:{admin}\"\nthreads = 2\n{global}\n\
             [defaults]\nmode = \"http\"\n\
             timeout = {{ client = \"30s\", connect = \"5s\", server = \"30s\" }}\n\
             [listen.web]\nbind = \"127.0.0.1:{port}\"\nserver = \"s {server}\"\n"
        ),
    )
    .expect("config");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let log = dir.join("lb.log");
    let out = std::fs::File::create(&log).expect("log");
    let err = out.try_clone().expect("log");
    let child = Command::new(lb_binary())
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn lb");
    let mut lb = Lb {
        child,
        dir: dir.to_owned(),
        log,
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = lb.child.try_wait() {
            return Err(lb.log_text());
        }
        if lb.log_text().contains("lb running with") {
            return Ok(lb);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not ready in time:\n{}", lb.log_text()))
}

/// One request on a new connection; the response's status line.
fn get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_owned()
}

/// A `/proc/PID/status` line's fields (`Uid:`, `Gid:`, `Groups:`, `CapEff:` …).
fn status_line(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[test]
fn user_group_pidfile_and_ulimit_as_haproxy() {
    require_root!();
    let dir = workdir("user");
    // The pidfile's directory belongs to the user, so lb can remove it after the change.
    let run = dir.join("run");
    std::fs::create_dir_all(&run).expect("run dir");
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).expect("chown");
    let pidfile = run.join("lb.pid");
    let server = backend(Duration::ZERO);
    let global = format!(
        "user = \"nobody\"\ngroup = \"nogroup\"\npidfile = \"{}\"\nulimit_n = 4096\n",
        pidfile.display()
    );
    let mut lb = start(&dir, 23101, &global, server).unwrap_or_else(|log| panic!("{log}"));
    let pid = lb.pid();
    // Every thread has changed: the process's lines and one of the worker threads'.
    assert_eq!(status_line(pid, "Uid:"), "65534 65534 65534 65534");
    assert_eq!(status_line(pid, "Gid:"), "65534 65534 65534 65534");
    assert_eq!(status_line(pid, "Groups:"), "65534");
    assert_eq!(status_line(pid, "CapEff:"), "0000000000000000");
    assert_eq!(status_line(pid, "CapPrm:"), "0000000000000000");
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
        .collect();
    assert!(tasks.len() > 2, "threads: {}", tasks.len());
    for t in &tasks {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        assert!(
            status.contains("Uid:\t65534\t65534\t65534\t65534")
                && status.contains("CapPrm:\t0000000000000000"),
            "thread {:?}:\n{status}",
            t.file_name()
        );
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(nofile, "Max open files 4096 4096 files", "{limits}");
    assert_eq!(
        std::fs::read_to_string(&pidfile).ok(),
        Some(format!("{pid}\n"))
    );
    // Traffic is still served as nobody.
    for _ in 0..3 {
        assert_eq!(get(23101), "HTTP/1.1 200 OK", "{}", lb.log_text());
    }
    assert!(lb.log_text().contains("running as uid 65534 gid 65534"));
    let (st, _) = lb.stop();
    assert!(st.is_some_and(|s| s.success()), "{}", lb.log_text());
    assert!(!pidfile.exists(), "the pidfile is removed at exit");
}

#[test]
fn ulimit_above_the_hard_limit_is_a_clear_error() {
    require_root!();
    let hard = std::fs::read_to_string("/proc/self/limits")
        .expect("limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .expect("hard limit");
    let Ok(hard) = hard.parse::<u64>() else {
        eprintln!("skipped: the open-files hard limit is `{hard}`");
        return;
    };
    // Root may raise the hard limit where the host allows it: then nothing to check.
    let want = hard + 10_000;
    let dir = workdir("ulimit");
    let server = backend(Duration::ZERO);
    match start(&dir, 23111, &format!("ulimit_n = {want}\n"), server) {
        Ok(mut lb) => {
            let (st, _) = lb.stop();
            eprintln!("skipped: this host let lb raise the hard limit ({st:?})");
        }
        Err(log) => assert!(
            log.contains(&format!(
                "ulimit_n {want}: the open-files limit cannot be raised above its hard limit {hard}"
            )),
            "{log}"
        ),
    }
}

#[test]
fn hard_stop_after_closes_what_is_left_on_sigterm() {
    require_root!();
    let dir = workdir("hardstop");
    // A request that the server answers only after 15 s: lb's drain would wait 10 s.
    let server = backend(Duration::from_secs(15));
    let mut lb = start(&dir, 23121, "hard_stop_after = \"1s\"\n", server)
        .unwrap_or_else(|log| panic!("{log}"));
    let mut c = TcpStream::connect(("127.0.0.1", 23121)).expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(300));
    let (st, took) = lb.stop();
    assert!(st.is_some_and(|s| s.success()), "{}", lb.log_text());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "exit after {took:?}\n{}",
        lb.log_text()
    );
    assert!(
        lb.log_text()
            .contains("draining L7 connections (up to 1000 ms)"),
        "{}",
        lb.log_text()
    );
}

#[test]
fn chroot_after_start_keeps_serving_and_refuses_reloads_it_cannot_read() {
    require_root!();
    let dir = workdir("chroot");
    let jail = dir.join("jail");
    std::fs::create_dir_all(&jail).expect("jail");
    let server = backend(Duration::ZERO);
    let global = format!("chroot = \"{}\"\nuser = \"nobody\"\n", jail.display());
    let mut lb = start(&dir, 23131, &global, server).unwrap_or_else(|log| panic!("{log}"));
    let pid = lb.pid();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).ok(),
        Some(jail.clone())
    );
    assert_eq!(get(23131), "HTTP/1.1 200 OK", "{}", lb.log_text());
    // The config file lies outside the chroot: a reload cannot read it, and the running
    // configuration stays.
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
    let started = Instant::now();
    while !lb.log_text().contains("reload of") && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lb.log_text()
            .contains("rejected; the running configuration is unchanged"),
        "{}",
        lb.log_text()
    );
    assert_eq!(get(23131), "HTTP/1.1 200 OK");
    let (st, _) = lb.stop();
    assert!(st.is_some_and(|s| s.success()), "{}", lb.log_text());
}
