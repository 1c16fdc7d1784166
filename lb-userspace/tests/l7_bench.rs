//! Throughput comparison on loopback: the backend directly, lb, and HAProxy (when installed)
//! in front of the same backend, driven by `wrk` (HTTP/1.1 keep-alive) and `h2load` (h2c).
//! Ignored by default; run with
//! `cargo test --release -p lb-userspace --test l7_bench -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use l7_support::*;
use lb::config::model::*;

/// A minimal backend: 200 with a 13-byte body, on its own runtime and threads so it does
/// not share lb's workers.
fn fast_backend() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::from_std(l).unwrap();
            while let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"hello, world\n"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    addr
}

async fn wrk(url: &str) -> String {
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", "-c64", "-d5s", "--latency", url])
        .stderr(Stdio::null())
        .output()
        .await
        .expect("wrk");
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = s
        .lines()
        .find(|l| l.starts_with("Requests/sec"))
        .unwrap_or("Requests/sec: ?")
        .to_owned();
    let p99 = s
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .unwrap_or("99% ?")
        .trim()
        .to_owned();
    let errs = s
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .unwrap_or("")
        .trim()
        .to_owned();
    format!("{rps}  p99 {p99}  {errs}")
}

async fn h2load(url: &str) -> String {
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "100000", "-c", "16", "-m", "16", "-t", "2", url])
        .stderr(Stdio::null())
        .output()
        .await;
    let Ok(out) = out else {
        return "h2load not installed".into();
    };
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let fin = s
        .lines()
        .find(|l| l.starts_with("finished in"))
        .unwrap_or("?")
        .to_owned();
    let st = s
        .lines()
        .find(|l| l.starts_with("status codes"))
        .unwrap_or("")
        .to_owned();
    format!("{fin}  {st}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn throughput_vs_haproxy() {
    let be_addr = fast_backend();
    let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
    fe.log = false;
    let (h, _reg) = start(config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("s", be_addr)],
        )],
    ));
    let lb_addr = addr_of(&h, "web");
    // Warm up.
    for _ in 0..10 {
        get(lb_addr, "/", &[]).await;
    }

    if std::env::var_os("LB_BENCH_CT").is_some() {
        // lb on one current-thread runtime, in its own thread.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut fe = frontend("web", vec![bind("127.0.0.1:0")], Some("be"));
                fe.log = false;
                let (h, _reg) = start(config(
                    vec![fe],
                    vec![backend(
                        "be",
                        Balance::RoundRobin,
                        vec![server("s", be_addr)],
                    )],
                ));
                tx.send(addr_of(&h, "web")).unwrap();
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        });
        let ct = rx.recv().unwrap();
        println!("lb 1-thread h1: {}", wrk(&format!("http://{ct}/")).await);
        return;
    }
    if std::env::var_os("LB_BENCH_ONLY_H2").is_some() {
        println!(
            "lb      h2: {}",
            h2load(&format!("http://{lb_addr}/")).await
        );
        return;
    }
    if std::env::var_os("LB_BENCH_ONLY_LB").is_some() {
        println!("lb      h1: {}", wrk(&format!("http://{lb_addr}/")).await);
        return;
    }
    println!("direct  h1: {}", wrk(&format!("http://{be_addr}/")).await);
    println!("lb      h1: {}", wrk(&format!("http://{lb_addr}/")).await);
    println!(
        "lb      h2: {}",
        h2load(&format!("http://{lb_addr}/")).await
    );

    if std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok()
    {
        let dir = std::env::temp_dir().join(format!("lb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (port, p1) = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            (
                l.local_addr().unwrap().port(),
                l1.local_addr().unwrap().port(),
            )
        };
        let cfg = format!(
            "global\n  nbthread 2\n  maxconn 4000\ndefaults\n  mode http\n  timeout client 20s\n  \
timeout server 10s\n  timeout connect 5s\n\
frontend web\n  bind 127.0.0.1:{port} proto h2\n  bind 127.0.0.1:{p1}\n  default_backend be\n\
backend be\n  server s {be_addr}\n"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let mut child = tokio::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let h1 = format!("127.0.0.1:{p1}");
        println!("haproxy h1: {}", wrk(&format!("http://{h1}/")).await);
        println!(
            "haproxy h2: {}",
            h2load(&format!("http://127.0.0.1:{port}/")).await
        );
        let _ = child.kill().await;
        println!(
            "haproxy log: {}",
            std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    h.shutdown(Duration::from_secs(1)).await;
}
