//! Shared setup of the admin tests (`mod admin_common;` in each).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lb::admin::{
    AdminContext, AdminServer, L4BackendStats, L4ReasonStats, L4Snapshot, L4Stats, L4VipStats,
};
use lb::config::model::{CheckKind, CheckSpec};
use lb::health::{HealthHandle, Target};
use lb::state::{BackendState, Counters, Registry, ServerState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Lab {
    pub server: AdminServer,
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    pub health: Arc<HealthHandle>,
    pub ctx: AdminContext,
    /// Keeps the checked server's listener alive.
    pub _listener: TcpListener,
}

pub fn l4_snapshot() -> L4Snapshot {
    L4Snapshot {
        vips: vec![L4VipStats {
            frontend: "edge".into(),
            vip: "203.0.113.10:443".parse().expect("vip"),
            proto: "tcp".into(),
            packets: 1000,
            bytes: 64000,
            new_flows: 10,
            flows: 7,
            non_syn_misses: 3,
        }],
        backends: vec![L4BackendStats {
            backend: "api".into(),
            server: "a1".into(),
            addr: "127.0.0.1:8443".parse().expect("addr"),
            packets: 900,
            bytes: 60000,
            new_flows: 9,
        }],
        reasons: vec![
            L4ReasonStats {
                action: "drop".into(),
                reason: "deny_src".into(),
                packets: 5,
            },
            L4ReasonStats {
                action: "pass".into(),
                reason: "fragment".into(),
                packets: 2,
            },
        ],
        flow_table: Some(lb::admin::L4FlowTable {
            v4: 7,
            v6: 0,
            capacity: 1024,
        }),
    }
}

/// Registry: frontend `web`; backend `app` (s1 checked over TCP, s2 backup), backend `api`
/// (a1, also reported by L4). Some counters set.
pub async fn lab(token: Option<&str>) -> Lab {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let live = listener.local_addr().expect("addr");
    let registry = Arc::new(Registry::new());
    let s1 = Arc::new(ServerState::new("s1", live, 2, false, true));
    let s2 = Arc::new(ServerState::new(
        "s2",
        "127.0.0.1:3333".parse().expect("addr"),
        1,
        true,
        false,
    ));
    let a1 = Arc::new(ServerState::new(
        "a1",
        "127.0.0.1:8443".parse().expect("addr"),
        1,
        false,
        false,
    ));
    s1.counters.requests.store(7, Ordering::Relaxed);
    s1.counters.active_conns.store(3, Ordering::Relaxed);
    s1.counters.total_conns.store(11, Ordering::Relaxed);
    s1.counters.bytes_in.store(1234, Ordering::Relaxed);
    s1.counters.bytes_out.store(5678, Ordering::Relaxed);
    s1.counters.count_response(200);
    s1.counters.count_response(503);
    let app = Arc::new(BackendState {
        name: "app".into(),
        servers: vec![s1, s2],
        counters: Counters::default(),
    });
    app.counters.requests.store(7, Ordering::Relaxed);
    let api = Arc::new(BackendState {
        name: "api".into(),
        servers: vec![a1],
        counters: Counters::default(),
    });
    let web = Arc::new(Counters::default());
    web.requests.store(42, Ordering::Relaxed);
    web.bytes_in.store(4096, Ordering::Relaxed);
    web.active_conns.store(2, Ordering::Relaxed);
    let backends = HashMap::from([("app".to_owned(), app), ("api".to_owned(), api)]);
    let frontends = HashMap::from([("web".to_owned(), web)]);
    registry.replace(backends, frontends);

    let health = Arc::new(HealthHandle::new(registry.clone()));
    let spec = CheckSpec {
        interval: Duration::from_millis(50),
        rise: 2,
        fall: 3,
        timeout: Duration::from_millis(500),
        kind: CheckKind::Tcp,
    };
    let t = |b: &str, s: &str, addr: SocketAddr, check: bool, weight: u32| Target {
        backend: b.into(),
        server: s.into(),
        addr,
        check,
        disabled: false,
        weight,
        backup: false,
        spec: spec.clone(),
        send_proxy: None,
        shutdown_on_down: false,
    };
    health
        .apply_targets(&[
            t("app", "s1", live, true, 2),
            t("app", "s2", "127.0.0.1:3333".parse().expect("a"), false, 1),
            t("api", "a1", "127.0.0.1:8443".parse().expect("a"), false, 1),
        ])
        .expect("apply");
    // Wait for the first check of s1.
    let sh = health.server("app", "s1").expect("s1");
    let deadline = Instant::now() + Duration::from_secs(3);
    while sh.info().checks == 0 {
        assert!(Instant::now() < deadline, "no check ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let l4: Arc<dyn L4Stats> = Arc::new(|| Ok::<_, String>(l4_snapshot()));
    let ctx = AdminContext::new(registry.clone())
        .with_health(health.clone())
        .with_l4(l4)
        .with_reload(lb::admin::reload_fn(|| async { Ok(()) }));
    let server = AdminServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        token.map(str::to_owned),
        ctx.clone(),
    )
    .await
    .expect("admin bind");
    let addr = server.local_addr();
    Lab {
        server,
        addr,
        registry,
        health,
        ctx,
        _listener: listener,
    }
}

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    // `Host` names the listener unless the test sends its own.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete head");
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let (status, body) = if method == "HEAD" {
        let line = head.lines().next().unwrap_or_default();
        let (status, _) =
            lb::health::check::parse_status_line(line.as_bytes()).expect("status line");
        (status, Vec::new())
    } else {
        lb::admin::client::parse_response(&raw).expect("parse")
    };
    Reply {
        status,
        head,
        body: String::from_utf8(body).expect("utf8 body"),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None, &[]).await
}

/// A legitimate state-changing request: `Host` names the listener and the custom header
/// marks it as not cross-site (what `lb::admin::client::send` sends).
pub async fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    request(addr, "POST", path, Some(body), &[("X-LB-Admin", "1")]).await
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A tiny HTTP server answering `200 ok` to every request, for `lb run` tests.
pub fn ok_server() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    serve_body(l, "ok".into());
    addr
}

/// Answers `200` with `body` to every request on `l`, in background threads.
pub fn serve_body(l: std::net::TcpListener, body: String) {
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { break };
            let body = body.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = c.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if c.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// `lb run` as a child process (the binary of this build), killed on drop.
pub struct LbChild {
    pub child: std::process::Child,
    pub admin: SocketAddr,
    pub log: std::path::PathBuf,
}

impl LbChild {
    /// Starts `lb run -c config` and waits (bounded) for `/healthz` on `admin`.
    pub fn start(config: &std::path::Path, admin: SocketAddr) -> LbChild {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["run", "-c"])
            .arg(config)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn lb");
        let mut lb = LbChild { child, admin, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = lb.child.try_wait() {
                panic!("lb exited ({st}): {}", lb.log_text());
            }
            if let Ok((200, _)) = lb::admin::client::send(admin, "GET", "/healthz", "", None) {
                return lb;
            }
            assert!(Instant::now() < deadline, "lb not ready: {}", lb.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
    }
}

impl Drop for LbChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A blocking `GET path` through a proxy listener: (status, body), or None if refused.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let (st, body) = lb::admin::client::parse_response(&raw).ok()?;
    Some((st, String::from_utf8_lossy(&body).into_owned()))
}
