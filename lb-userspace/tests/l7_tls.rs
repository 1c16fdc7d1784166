//! TLS termination: ALPN (h2, http/1.1) and certificate choice by SNI, with a rustls client
//! and with curl when it is installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::time::Duration;

use l7_support::*;
use lb::acl::AclSet;
use lb::config::model::*;

fn tls_config(dir: &TempDir, backend_addr: std::net::SocketAddr) -> (Config, Vec<u8>, Vec<u8>) {
    let (pa, da) = make_cert(&dir.0, "a.test");
    let (pb, db) = make_cert(&dir.0, "b.test");
    let mut fe = frontend(
        "web",
        vec![tls_bind("127.0.0.1:0", vec![pa, pb], &["h2", "http/1.1"])],
        Some("be"),
    );
    fe.forwardfor = true;
    let cfg = config(
        vec![fe],
        vec![backend(
            "be",
            Balance::RoundRobin,
            vec![server("s", backend_addr)],
        )],
    );
    (cfg, da, db)
}

#[tokio::test]
async fn alpn_and_sni_pick_protocol_and_certificate() {
    let dir = TempDir::new("tls");
    let s = echo("s").await;
    let (cfg, da, db) = tls_config(&dir, s.addr);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");

    let (proto, leaf, r) = tls_get(fe, "b.test", &["h2", "http/1.1"]).await;
    assert_eq!(proto.as_deref(), Some(&b"h2"[..]));
    assert_eq!(leaf, db, "SNI b.test picks b's certificate");
    assert_eq!(r.status, 200);
    assert_eq!(r.server(), "s");
    assert_eq!(r.saw("x-forwarded-proto"), vec!["https"]);
    assert_eq!(r.saw("host"), vec!["b.test"]);
    assert!(
        r.body.contains("GET /tls"),
        "origin-form toward the server: {}",
        r.body
    );

    let (proto, leaf, r) = tls_get(fe, "a.test", &["http/1.1"]).await;
    assert_eq!(proto.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(leaf, da);
    assert_eq!(r.status, 200);

    let (_, leaf, _) = tls_get(fe, "unknown.test", &["h2"]).await;
    assert_eq!(leaf, da, "the first certificate is the default");
}

#[tokio::test]
async fn curl_negotiates_h2_and_http11() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed; skipped");
        return;
    }
    let dir = TempDir::new("curl");
    let s = echo("s").await;
    let (cfg, _, _) = tls_config(&dir, s.addr);
    let (h, _reg) = start(cfg);
    let port = addr_of(&h, "web").port();
    for (flag, want, name) in [("--http2", "2", "b.test"), ("--http1.1", "1.1", "a.test")] {
        let out = tokio::time::timeout(
            T,
            tokio::process::Command::new("curl")
                .args([
                    "-sk",
                    "-v",
                    flag,
                    "--max-time",
                    "5",
                    "--resolve",
                    &format!("{name}:{port}:127.0.0.1"),
                    "-w",
                    "\n%{http_version}",
                    &format!("https://{name}:{port}/curl"),
                ])
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.starts_with("s\n"), "{stdout}\n{stderr}");
        assert_eq!(stdout.lines().last(), Some(want), "{stdout}");
        assert!(stderr.contains(&format!("CN={name}")), "{stderr}");
    }
}

/// `ssl_fc` / `ssl_fc_sni` reach the ACLs. Needs the ACL engine.
#[tokio::test]
async fn ssl_fc_sni_routes() {
    let dir = TempDir::new("sni-acl");
    let (s, t) = (echo("s").await, echo("t").await);
    let (mut cfg, _, _) = tls_config(&dir, s.addr);
    let mut acls = AclSet::default();
    acl(&mut acls, "is_b ssl_fc_sni b.test");
    let fe = &mut cfg.frontends[0];
    fe.http_request = vec![HttpRule {
        action: HttpAction::SetHeader {
            name: "X-SSL".into(),
            value: "yes".into(),
        },
        cond: Some(cond("if { ssl_fc }", &acls)),
    }];
    fe.use_backend = vec![UseBackend {
        backend: "bb".into(),
        cond: cond("if is_b", &acls),
    }];
    fe.acls = acls;
    cfg.backends.push(backend(
        "bb",
        Balance::RoundRobin,
        vec![server("t", t.addr)],
    ));
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let (_, _, r) = tls_get(fe, "b.test", &["h2"]).await;
    assert_eq!(r.server(), "t");
    assert_eq!(r.saw("x-ssl"), vec!["yes"]);
    let (_, _, r) = tls_get(fe, "a.test", &["http/1.1"]).await;
    assert_eq!(r.server(), "s");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Whether the `openssl` command-line tool is installed.
fn have_openssl() -> bool {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A TLS 1.2 client that asks to renegotiate (OpenSSL's `R` command: a ClientHello on the
/// established connection) gets rustls's `no_renegotiation` alert at once, while the
/// connection is idle waiting for a request, not when `timeout http-request` (5 s here)
/// ends it.
#[tokio::test]
async fn renegotiation_is_refused_promptly() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    if !have_openssl() {
        eprintln!("openssl not installed; skipped");
        return;
    }
    let dir = TempDir::new("reneg");
    let s = echo("s").await;
    let (cfg, _, _) = tls_config(&dir, s.addr);
    let (h, _reg) = start(cfg);
    let fe = addr_of(&h, "web");
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-tls1_2", "-servername", "a.test", "-connect"])
        .arg(fe.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    // The session block ends the handshake's output.
    let mut in_session = false;
    let mut seen = String::new();
    loop {
        let line = tokio::time::timeout(T, stdout.next_line())
            .await
            .expect("handshake output in time")
            .unwrap()
            .unwrap_or_else(|| panic!("s_client ended early: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("SSL-Session:") {
            in_session = true;
        } else if in_session && line.starts_with("---") {
            break;
        }
    }
    assert!(seen.contains("Protocol  : TLSv1.2"), "{seen}");
    let t0 = std::time::Instant::now();
    stdin.write_all(b"R\n").await.unwrap();
    stdin.flush().await.unwrap();
    let status = tokio::time::timeout(T, child.wait())
        .await
        .expect("s_client ends")
        .unwrap();
    let elapsed = t0.elapsed();
    let mut err = String::new();
    stderr.read_to_string(&mut err).await.unwrap();
    assert!(
        err.contains("no renegotiation"),
        "the server's no_renegotiation alert: {err} ({status})"
    );
    assert!(
        elapsed < Duration::from_millis(100),
        "alert after {elapsed:?}"
    );
    drop(stdin);
}
