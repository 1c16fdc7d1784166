//! The stats socket (issue #15 item 3): HAProxy's runtime CLI on a unix socket, spoken from
//! Rust as `socat` speaks it (write a line, read to EOF), on the admin test lab; compared
//! with HAProxy 2.6 where the formats are observable; and wired into `lb run`.

mod admin_common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use admin_common::{LbChild, free_port, http_get, lab, ok_server};
use lb::admin::cli::StatsSocketServer;
use lb::config::model::{CliLevel, StatsSocket};
use lb::state::{Registry, ServerStatus};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lb-sock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// `echo "$input" | socat stdio unix:PATH`: sends, half-closes, reads to EOF.
fn socat(path: &Path, input: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(input.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read to EOF");
    out
}

/// Reads until `out` ends with `end` (interactive mode), bounded.
fn read_until(s: &mut UnixStream, end: &str) -> String {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while !out.ends_with(end.as_bytes()) {
        assert!(Instant::now() < deadline, "no {end:?} in {out:?}");
        let n = s.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "EOF before {end:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).expect("utf8")
}

fn status(reg: &Registry, b: &str, s: &str) -> ServerStatus {
    reg.backend(b)
        .and_then(|be| be.server(s).map(|x| x.status()))
        .expect("server exists")
}

fn weight(reg: &Registry, b: &str, s: &str) -> u32 {
    reg.backend(b)
        .and_then(|be| be.server(s).map(|x| x.weight()))
        .expect("server exists")
}

fn sock(path: &Path, level: CliLevel, mode: Option<u32>) -> StatsSocket {
    StatsSocket {
        path: path.to_owned(),
        mode,
        level,
    }
}

/// Runs blocking socket I/O off the test's runtime.
async fn cli(path: &Path, input: &str) -> String {
    let (p, i) = (path.to_owned(), input.to_owned());
    tokio::task::spawn_blocking(move || socat(&p, &i))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn show_commands() {
    let lab = lab(None).await;
    let dir = tmpdir("show");
    let path = dir.join("admin.sock");
    let _srv = StatsSocketServer::bind(&sock(&path, CliLevel::Admin, Some(0o600)), lab.ctx.clone())
        .expect("bind");
    assert_eq!(
        std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
        0o600
    );

    let info = cli(&path, "show info\n").await;
    assert!(info.starts_with("Name: lb\nVersion: "), "{info}");
    assert!(
        info.contains(&format!("\nPid: {}\n", std::process::id())),
        "{info}"
    );
    assert!(info.contains("\nCumReq: 42\n"), "{info}");
    assert!(info.ends_with("\n\n"), "{info:?}");

    let stat = cli(&path, "show stat\n").await;
    let mut lines = stat.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("# pxname,svname,qcur,"), "{header}");
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |n: &str| cols.iter().position(|c| *c == n).expect("column");
    let s1 = stat
        .lines()
        .find(|l| l.starts_with("app,s1,"))
        .expect("s1 row");
    let f: Vec<&str> = s1.split(',').collect();
    assert_eq!(f[col("status")], "UP");
    assert_eq!(f[col("weight")], "2");
    assert_eq!(f[col("check_status")], "L4OK");
    assert_eq!(f[col("sid")], "1");
    assert!(f[col("addr")].starts_with("127.0.0.1:"));
    assert!(stat.ends_with(",\n\n"), "CSV then the empty line");

    let st = cli(&path, "show servers state app\n").await;
    let rows: Vec<&str> = st.lines().skip(2).filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 2, "{st}");
    let s1: Vec<&str> = rows[0].split(' ').collect();
    assert_eq!(s1.len(), 25, "{st}");
    assert_eq!(&s1[1..4], ["app", "1", "s1"]);
    assert_eq!(s1[4], "127.0.0.1");
    assert_eq!((s1[5], s1[6], s1[7], s1[8]), ("2", "0", "2", "2"));
    // L4OK, passed, health, configured+enabled.
    assert_eq!((s1[10], s1[11], s1[13]), ("5", "3", "6"));
    assert_eq!(
        cli(&path, "show servers state nope\n").await,
        "Can't find backend.\n\n"
    );

    assert_eq!(cli(&path, "show backend\n").await, "# name\napi\napp\n\n");
    assert_eq!(cli(&path, "show cli level\n").await, "admin\n\n");
    let sess = cli(&path, "show sess\n").await;
    assert!(
        sess.contains("fe=web cur=2\n") && sess.contains("be=app srv=s1 cur=3\n"),
        "{sess}"
    );
    let help = cli(&path, "help\n").await;
    assert!(help.starts_with("The following commands are valid at this level:\n"));
    assert!(help.contains("  show servers state [<backend>]          : dump volatile"));
    // Several commands on one line, each followed by its empty line.
    assert_eq!(
        cli(&path, "show cli level;get weight app/s1\n").await,
        "admin\n\n2 (initial 2)\n\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_changes_and_errors() {
    let lab = lab(None).await;
    let reg = lab.registry.clone();
    let dir = tmpdir("set");
    let path = dir.join("admin.sock");
    let _srv = StatsSocketServer::bind(&sock(&path, CliLevel::Admin, None), lab.ctx.clone())
        .expect("bind");

    assert_eq!(cli(&path, "disable server app/s1\n").await, "\n");
    assert_eq!(status(&reg, "app", "s1"), ServerStatus::Maint);
    let st = cli(&path, "show servers state app\n").await;
    assert!(
        st.lines()
            .nth(2)
            .is_some_and(|l| l.contains(" s1 127.0.0.1 0 1 ")),
        "{st}"
    );
    assert_eq!(cli(&path, "enable server app/s1\n").await, "\n");
    assert_eq!(status(&reg, "app", "s1"), ServerStatus::Up);
    assert_eq!(cli(&path, "set server app/s1 state drain\n").await, "\n");
    assert_eq!(status(&reg, "app", "s1"), ServerStatus::Drain);
    assert_eq!(cli(&path, "set server api/a1 state maint\n").await, "\n");
    assert_eq!(status(&reg, "api", "a1"), ServerStatus::Maint);
    assert_eq!(cli(&path, "set server app/s1 state ready\n").await, "\n");
    assert_eq!(status(&reg, "app", "s1"), ServerStatus::Up);

    assert_eq!(cli(&path, "set server app/s1 weight 5\n").await, "\n");
    assert_eq!(weight(&reg, "app", "s1"), 5);
    assert_eq!(cli(&path, "get weight app/s1\n").await, "5 (initial 2)\n\n");
    assert_eq!(cli(&path, "set server app/s1 weight 150%\n").await, "\n");
    assert_eq!(weight(&reg, "app", "s1"), 3);
    assert_eq!(cli(&path, "set weight app/s1 1\n").await, "\n");
    assert_eq!(weight(&reg, "app", "s1"), 1);

    for (cmd, want) in [
        ("disable server zz/s1", "No such backend.\n\n"),
        ("disable server app/zz", "No such server.\n\n"),
        ("disable server app", "Require 'backend/server'.\n\n"),
        (
            "set server app/s1 weight 300",
            "Absolute weight can only be between 0 and 256 inclusive.\n\n",
        ),
        (
            "set server app/s1 weight -1",
            "Absolute weight can only be between 0 and 256 inclusive.\n\n",
        ),
        (
            "set server app/s1 weight",
            "Require <weight> or <weight%>.\n\n",
        ),
        (
            "set server app/s1 state foo",
            "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n",
        ),
        ("set server zz/s1 state ready", "No such backend.\n\n"),
        ("get weight app/zz", "No such server.\n\n"),
    ] {
        assert_eq!(cli(&path, &format!("{cmd}\n")).await, want, "{cmd}");
    }
    assert_eq!(weight(&reg, "app", "s1"), 1, "errors change nothing");
    assert_eq!(status(&reg, "app", "s1"), ServerStatus::Up);
    let u = cli(&path, "show foo\n").await;
    assert!(
        u.starts_with("Unknown command, but maybe one of the following ones is a better match:\n"),
        "{u}"
    );
    assert!(
        cli(&path, "\n")
            .await
            .starts_with("Unknown command. Please enter one of the following commands only:\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn levels_and_prompt() {
    let lab = lab(None).await;
    let dir = tmpdir("levels");
    let user = dir.join("user.sock");
    let oper = dir.join("oper.sock");
    let admin = dir.join("admin.sock");
    let _u =
        StatsSocketServer::bind(&sock(&user, CliLevel::User, None), lab.ctx.clone()).expect("u");
    let _o = StatsSocketServer::bind(&sock(&oper, CliLevel::Operator, None), lab.ctx.clone())
        .expect("o");
    let _a =
        StatsSocketServer::bind(&sock(&admin, CliLevel::Admin, None), lab.ctx.clone()).expect("a");

    for cmd in [
        "disable server app/s1",
        "set server app/s1 state maint",
        "set server app/s1 weight 9",
        "enable server app/s1",
    ] {
        assert_eq!(
            cli(&user, &format!("{cmd}\n")).await,
            "Permission denied\n\n",
            "{cmd}"
        );
        assert_eq!(
            cli(&oper, &format!("{cmd}\n")).await,
            "Permission denied\n\n",
            "{cmd}"
        );
    }
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Up);
    assert_eq!(cli(&user, "show sess\n").await, "Permission denied\n\n");
    assert!(cli(&oper, "show sess\n").await.contains("fe=web"));
    assert!(
        cli(&user, "show servers state\n")
            .await
            .starts_with("1\n# be_id ")
    );
    assert!(cli(&user, "show stat\n").await.starts_with("# pxname,"));
    // Lowering works, raising does not.
    assert_eq!(
        cli(
            &admin,
            "user;show cli level;operator;disable server app/s1\n"
        )
        .await,
        "\nuser\n\nPermission denied\n\nPermission denied\n\n"
    );
    assert_eq!(status(&lab.registry, "app", "s1"), ServerStatus::Up);

    // Interactive mode: a prompt after each line, until quit.
    let p = admin.clone();
    let reg = lab.registry.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = UnixStream::connect(&p).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("t");
        s.write_all(b"prompt\n").expect("w");
        assert_eq!(read_until(&mut s, "> "), "\n> ");
        s.write_all(b"show cli level\n").expect("w");
        assert_eq!(read_until(&mut s, "> "), "admin\n\n> ");
        s.write_all(b"set server app/s1 state drain\n").expect("w");
        assert_eq!(read_until(&mut s, "> "), "\n> ");
        assert_eq!(status(&reg, "app", "s1"), ServerStatus::Drain);
        s.write_all(b"show servers state zz\n").expect("w");
        assert_eq!(read_until(&mut s, "> "), "Can't find backend.\n\n> ");
        s.write_all(b"quit\n").expect("w");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("EOF after quit");
        assert!(rest.is_empty());
    })
    .await
    .expect("join");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn socket_file_handling() {
    let lab = lab(None).await;
    let dir = tmpdir("files");
    let path = dir.join("s.sock");
    // A stale socket from a previous run is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).expect("stale");
    drop(stale);
    let srv = StatsSocketServer::bind(&sock(&path, CliLevel::User, None), lab.ctx.clone())
        .expect("replaces a stale socket");
    drop(srv);
    assert!(!path.exists(), "removed on stop");
    // Anything else is not overwritten.
    let file = dir.join("file");
    std::fs::write(&file, "keep").expect("write");
    let err = StatsSocketServer::bind(&sock(&file, CliLevel::User, None), lab.ctx.clone())
        .expect_err("not a socket");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same commands against HAProxy 2.6 and lb, with the same backends: where the formats
/// are observable (CSV header, server-state header, errors, prompt), the bytes agree.
#[tokio::test(flavor = "multi_thread")]
async fn agrees_with_haproxy() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        eprintln!("haproxy not installed: skipping");
        return;
    }
    let lab = lab(None).await;
    let dir = tmpdir("haproxy");
    let lb_path = dir.join("lb.sock");
    let _srv = StatsSocketServer::bind(&sock(&lb_path, CliLevel::Admin, None), lab.ctx.clone())
        .expect("bind");
    let hap_path = dir.join("haproxy.sock");
    let cfg = dir.join("haproxy.cfg");
    let pidfile = dir.join("haproxy.pid");
    std::fs::write(
        &cfg,
        format!(
            "global\n  stats socket {} level admin\n\
             defaults\n  mode http\n  timeout client 5s\n  timeout connect 5s\n  timeout server 5s\n\
             frontend web\n  bind 127.0.0.1:{}\n  default_backend app\n\
             backend api\n  server a1 127.0.0.1:8443\n\
             backend app\n  server s1 127.0.0.1:{} weight 2\n  server s2 127.0.0.1:3333 backup\n",
            hap_path.display(),
            free_port(),
            free_port()
        ),
    )
    .expect("cfg");
    let st = Command::new("haproxy")
        .arg("-D")
        .arg("-f")
        .arg(&cfg)
        .arg("-p")
        .arg(&pidfile)
        .status()
        .expect("haproxy");
    assert!(st.success(), "haproxy did not start");
    struct Kill(PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(&self.0) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
    let kill = Kill(pidfile.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while UnixStream::connect(&hap_path).is_err() {
        assert!(Instant::now() < deadline, "haproxy socket");
        std::thread::sleep(Duration::from_millis(20));
    }

    let both = |cmd: &'static str| {
        let (l, h) = (lb_path.clone(), hap_path.clone());
        async move {
            (
                cli(&l, cmd).await,
                tokio::task::spawn_blocking(move || socat(&h, cmd))
                    .await
                    .expect("join"),
            )
        }
    };
    // Byte for byte.
    for cmd in [
        "disable server zz/s1\n",
        "disable server app/zz\n",
        "disable server app\n",
        "set server app/s1 weight 300\n",
        "set server app/s1 weight -1\n",
        "set server app/s1 weight\n",
        "set server app/s1 state foo\n",
        "set server zz/s1 state ready\n",
        "get weight zz/s1\n",
        "get weight app/s1\n",
        "show servers state zz\n",
        "show cli level\n",
        "show backend\n",
        "user;show cli level;operator;show sess\n",
        "set server app/s2 weight 7;get weight app/s2\n",
        "disable server app/s2;enable server app/s2\n",
        "prompt\nshow cli level\nquit\n",
    ] {
        let (lb, hap) = both(cmd).await;
        assert_eq!(lb, hap, "{cmd:?}");
    }
    // Formats: the CSV header line and the server-state header.
    let (lb, hap) = both("show stat\n").await;
    assert_eq!(lb.lines().next(), hap.lines().next(), "show stat header");
    let (lb, hap) = both("show servers state\n").await;
    let head = |s: &str| s.lines().take(2).collect::<Vec<_>>().join("\n");
    assert_eq!(head(&lb), head(&hap), "show servers state header");
    let count = |s: &str| s.lines().nth(2).map(|l| l.split(' ').count());
    assert_eq!(count(&lb), count(&hap), "fields per server");
    // The first lines of the answers to unknown commands and of help.
    for cmd in ["show foo\n", "\n", "help\n"] {
        let (lb, hap) = both(cmd).await;
        assert_eq!(lb.lines().next(), hap.lines().next(), "{cmd:?}");
        assert!(lb.ends_with("  quit                                    : disconnect\n\n"));
        assert!(hap.ends_with("  quit                                    : disconnect\n\n"));
    }
    drop(kill);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lb run` with `stats_socket`: the socket speaks for the running process.
#[test]
fn lb_run_serves_the_socket() {
    let dir = tmpdir("run");
    let path = dir.join("lb.toml");
    let socket = dir.join("lb.sock");
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let web: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let server = ok_server();
    std::fs::write(
        &path,
        format!(
            "[global]\nadmin = \"{admin}\"\nstats_socket = \"{} mode 600 level admin\"\n\
             [defaults]\nmode = \"http\"\n\
             timeout = {{ client = \"5s\", connect = \"2s\", server = \"5s\" }}\n\
             [listen.web]\nbind = \"{web}\"\nserver = \"s1 {server}\"\n",
            socket.display()
        ),
    )
    .expect("write");
    let lb = LbChild::start(&path, admin);
    assert_eq!(http_get(web, "/"), Some((200, "ok".into())));
    let stat = socat(&socket, "show stat\n");
    assert!(
        stat.lines().any(|l| l.starts_with("web,FRONTEND,")),
        "{stat}"
    );
    assert!(stat.lines().any(|l| l.starts_with("web,s1,")), "{stat}");
    assert_eq!(socat(&socket, "disable server web/s1\n"), "\n");
    assert_eq!(http_get(web, "/").map(|r| r.0), Some(503));
    assert_eq!(socat(&socket, "enable server web/s1\n"), "\n");
    assert_eq!(http_get(web, "/"), Some((200, "ok".into())));
    lb.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut lb = lb;
    while lb.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "lb did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!socket.exists(), "socket removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_and_convert() {
    use lb::config::{LoadOptions, load_str};
    let load = |t: &str| load_str(Path::new("t.toml"), t, &LoadOptions::default());
    let (c, _) = load(
        "[global]\nstats_socket = [\"/run/lb/a.sock mode 660 level admin\", \"/run/lb/b.sock\"]\n",
    )
    .expect("loads");
    assert_eq!(
        c.global.stats_sockets,
        [
            sock(Path::new("/run/lb/a.sock"), CliLevel::Admin, Some(0o660)),
            sock(Path::new("/run/lb/b.sock"), CliLevel::Operator, None),
        ]
    );
    let errors = |t: &str| -> Vec<String> {
        match load(t) {
            Ok(_) => panic!("{t} loaded"),
            Err(e) => e
                .diagnostics
                .iter()
                .map(ToString::to_string)
                .filter(|d| !d.contains(": warning: "))
                .collect(),
        }
    };
    assert_eq!(
        errors("[global]\nstats_socket = \"/s level root\"\n"),
        ["t.toml:2:26: global.stats_socket: `level root`: expected user, operator or admin"]
    );
    assert_eq!(
        errors("[global]\nstats_socket = \"/s mode 999\"\n"),
        ["t.toml:2:25: global.stats_socket: `mode 999`: expected octal permissions, e.g. 600"]
    );
    assert_eq!(
        errors("[global]\nstats_socket = \"ipv4@127.0.0.1:9999 level admin\"\n"),
        [
            "t.toml:2:17: global.stats_socket: `ipv4@127.0.0.1:9999`: lb's stats socket is a unix socket path; the TCP admin API is `admin`"
        ]
    );
    assert_eq!(
        errors("[global]\nstats_socket = \"/s user haproxy\"\n"),
        [
            "t.toml:2:20: global.stats_socket: `user` is not supported on a stats socket (supported: mode, level)"
        ]
    );
    assert_eq!(
        errors("[global]\nstats_socket = [\"/s\", \"/s level admin\"]\n"),
        ["t.toml:2:24: global.stats_socket[1]: stats socket `/s` is listed twice"]
    );

    let conv = lb::config::convert::convert_str(
        Path::new("h.cfg"),
        "global\n  stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners\n  stats timeout 30s\n",
    );
    assert!(!conv.has_errors(), "{:?}", conv.diagnostics);
    assert!(
        conv.toml
            .contains("stats_socket = [\n    \"/run/haproxy/admin.sock mode 660 level admin\",\n]"),
        "{}",
        conv.toml
    );
    let warnings: Vec<String> = conv.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`expose-fd listeners` dropped")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("h.cfg:3:")),
        "stats timeout named: {warnings:?}"
    );
    let (c, _) = load(&conv.toml).expect("the converted file loads");
    assert_eq!(c.global.stats_sockets[0].level, CliLevel::Admin);
}

/// A loopback server running `serve` on a thread per connection.
fn server(serve: fn(std::net::TcpStream)) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { break };
            let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
            std::thread::spawn(move || serve(c));
        }
    });
    addr
}

/// Greets with `NAME\n` and echoes lines back as `NAME:LINE`.
fn greet(mut c: std::net::TcpStream, name: &str) {
    use std::io::BufRead;
    if c.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let Ok(r) = c.try_clone() else { return };
    for line in std::io::BufReader::new(r).lines() {
        let Ok(line) = line else { return };
        if c.write_all(format!("{name}:{line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// An HTTP response whose head and first chunk come at once, then nothing (a long
/// stream), until the connection closes.
fn stream(mut c: std::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n");
    // Held open until the peer goes (read returns 0 or fails).
    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
}

/// Connects to `addr` and reads the greeting line.
fn greeted(addr: std::net::SocketAddr) -> (std::net::TcpStream, String) {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        let mut r = &s;
        assert_eq!(r.read(&mut b).expect("greeting"), 1, "EOF before greeting");
        line.push(b[0]);
    }
    (s, String::from_utf8(line).expect("utf8").trim().to_owned())
}

/// True when the connection is closed by the peer within 3 s (EOF or reset on a read after a
/// write).
fn closed_soon(mut s: &std::net::TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let _ = s.write_all(b"probe\n");
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

/// `shutdown sessions server B/S` (stats socket) and `POST /api/server/B/S/shutdown-sessions`
/// (admin API) close that server's established L7 sessions: `mode tcp` connections and a
/// streaming HTTP response; sessions on other servers carry on. HAProxy's CLI answers.
#[test]
fn shutdown_sessions_closes_the_servers_l7_sessions() {
    let dir = tmpdir("shut");
    let path = dir.join("lb.toml");
    let socket = dir.join("lb.sock");
    let port =
        || -> std::net::SocketAddr { format!("127.0.0.1:{}", free_port()).parse().expect("a") };
    let (admin, tcp, web) = (port(), port(), port());
    let (a, b, stream) = (
        server(|c| greet(c, "A")),
        server(|c| greet(c, "B")),
        server(stream),
    );
    std::fs::write(
        &path,
        format!(
            "[global]\nadmin = \"{admin}\"\nstats_socket = \"{} mode 600 level admin\"\n\
             [defaults]\ntimeout = {{ client = \"20s\", connect = \"2s\", server = \"20s\" }}\n\
             [listen.tcp]\nmode = \"tcp\"\nbind = \"{tcp}\"\nbalance = \"roundrobin\"\n\
             server = [\"a {a}\", \"b {b}\"]\n\
             [listen.web]\nmode = \"http\"\nbind = \"{web}\"\nserver = \"s {stream}\"\n",
            socket.display()
        ),
    )
    .expect("write");
    let lb = LbChild::start(&path, admin);

    // HAProxy's answers for bad arguments.
    for (cmd, answer) in [
        (
            "shutdown sessions server tcp\n",
            "Require 'backend/server'.\n\n",
        ),
        ("shutdown sessions server tcp/zz\n", "No such server.\n\n"),
        ("shutdown sessions server zz/a\n", "No such backend.\n\n"),
        (
            "user; shutdown sessions server tcp/a\n",
            "\nPermission denied\n\n",
        ),
    ] {
        assert_eq!(socat(&socket, cmd), answer, "{cmd}");
    }

    // Two sessions per server (round robin).
    let conns: Vec<_> = (0..4).map(|_| greeted(tcp)).collect();
    let on = |n: &str| conns.iter().filter(|(_, w)| w == n).count();
    assert_eq!((on("A"), on("B")), (2, 2), "{conns:?}");
    assert_eq!(socat(&socket, "shutdown sessions server tcp/a\n"), "\n");
    for (s, who) in &conns {
        if who == "A" {
            assert!(closed_soon(s), "a session of tcp/a survived");
        } else {
            let mut s = s;
            s.write_all(b"still\n").expect("write");
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).expect("tcp/b session still answers");
            assert_eq!(&buf[..n], b"B:still\n");
        }
    }
    // The admin API does the same for tcp/b.
    let (code, body) = lb::admin::client::send(
        admin,
        "POST",
        "/api/server/tcp/b/shutdown-sessions",
        "",
        None,
    )
    .expect("POST");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    for (s, _) in conns.iter().filter(|(_, w)| w == "B") {
        assert!(closed_soon(s), "a session of tcp/b survived the API call");
    }
    let (code, _) = lb::admin::client::send(
        admin,
        "POST",
        "/api/server/tcp/zz/shutdown-sessions",
        "",
        None,
    )
    .expect("POST");
    assert_eq!(code, 404);
    // New sessions still go to the servers.
    assert_eq!(greeted(tcp).1.len(), 1);

    // A streaming HTTP response is cut.
    let mut h = std::net::TcpStream::connect_timeout(&web, Duration::from_secs(2)).expect("c");
    h.set_read_timeout(Some(Duration::from_secs(5))).expect("t");
    h.write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("w");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(6).any(|w| w == b"first\n") {
        let n = h.read(&mut buf).expect("first chunk");
        assert!(n > 0, "EOF before the first chunk");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(socat(&socket, "shutdown sessions server web/s\n"), "\n");
    let started = Instant::now();
    let end = loop {
        match h.read(&mut buf) {
            Ok(0) => break "eof",
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break "timeout",
            Err(_) => break "reset",
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    assert_ne!(end, "timeout", "the stream was not cut");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "the cut stream must not look complete"
    );
    drop(lb);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A greeter (see [`greet`]) whose listener closes when the flag is set; its established
/// connections carry on.
fn closable_greeter(
    name: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            match l.accept() {
                Ok((c, _)) => {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                    std::thread::spawn(move || greet(c, name));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, stop)
}

/// `on-marked-down shutdown-sessions` in the L7 tier: a server that goes DOWN (its checks
/// fail while its established sessions are fine) or into MAINT has its sessions closed;
/// a server without the option keeps them (HAProxy's default).
#[test]
fn on_marked_down_shutdown_sessions_closes_l7_sessions() {
    let dir = tmpdir("omd");
    let path = dir.join("lb.toml");
    let socket = dir.join("lb.sock");
    let port =
        || -> std::net::SocketAddr { format!("127.0.0.1:{}", free_port()).parse().expect("a") };
    let (admin, tcp) = (port(), port());
    let (a, stop_a) = closable_greeter("A");
    let (b, _stop_b) = closable_greeter("B");
    let (c, _stop_c) = closable_greeter("C");
    std::fs::write(
        &path,
        format!(
            "[global]\nadmin = \"{admin}\"\nstats_socket = \"{} mode 600 level admin\"\n\
             [defaults]\ntimeout = {{ client = \"20s\", connect = \"2s\", server = \"20s\" }}\n\
             [listen.tcp]\nmode = \"tcp\"\nbind = \"{tcp}\"\nbalance = \"roundrobin\"\n\
             check = {{ interval = \"100ms\", rise = 1, fall = 1, timeout = \"100ms\" }}\n\
             server = [\"a {a} check on-marked-down shutdown-sessions\", \
             \"b {b} check on-marked-down shutdown-sessions\", \"c {c} check\"]\n",
            socket.display()
        ),
    )
    .expect("write");
    let lb = LbChild::start(&path, admin);
    let conns: Vec<_> = (0..6).map(|_| greeted(tcp)).collect();
    let on = |n: &str| conns.iter().filter(|(_, w)| w == n).count();
    assert_eq!((on("A"), on("B"), on("C")), (2, 2, 2), "{conns:?}");
    let alive = |s: &std::net::TcpStream, who: &str| {
        let mut s = s;
        s.write_all(b"still\n").expect("write");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(&buf[..n], format!("{who}:still\n").as_bytes(), "{who}");
    };

    // a: its checks fail (listener closed), its sessions are fine until it goes DOWN.
    stop_a.store(true, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socat(&socket, "show servers state tcp\n").contains(" a 127.0.0.1 0 ") {
        assert!(Instant::now() < deadline, "a not DOWN: {}", lb.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    for (s, who) in conns.iter().filter(|(_, w)| w == "A") {
        assert!(closed_soon(s), "a session of a ({who}) survived its DOWN");
    }
    // b and c into MAINT: b's sessions go (the option), c's stay.
    assert_eq!(socat(&socket, "disable server tcp/b\n"), "\n");
    assert_eq!(socat(&socket, "disable server tcp/c\n"), "\n");
    for (s, who) in &conns {
        match who.as_str() {
            "B" => assert!(closed_soon(s), "a session of b survived MAINT"),
            "C" => alive(s, "C"),
            _ => {}
        }
    }
    drop(lb);
    let _ = std::fs::remove_dir_all(&dir);
}
