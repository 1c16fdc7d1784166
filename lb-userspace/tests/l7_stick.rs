//! Stick tables and rate limiting, end to end over loopback sockets: a config loaded from
//! TOML (the loader, the runtime and the request path), clients on two source addresses
//! (127.0.0.1 and 127.0.0.2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use l7_support::*;

fn load(text: &str) -> lb::config::model::Config {
    let (cfg, _) = lb::config::load_str(
        Path::new("stick.toml"),
        text,
        &lb::config::LoadOptions::default(),
    )
    .expect("config loads");
    cfg
}

/// One request from source address `src` on a connection of its own: (status, body).
async fn req_from(src: [u8; 4], to: SocketAddr, path: &str) -> (u16, String) {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((src, 0))).unwrap();
    let mut c = tokio::time::timeout(T, s.connect(to))
        .await
        .expect("connect in time")
        .unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, c.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// `port`: from the range lb's loopback tests may bind (the loader refuses port 0).
fn config(echo: SocketAddr, port: u16) -> String {
    format!(
        r#"
[defaults]
mode = "http"
timeout = {{ client = "10s", connect = "2s", server = "10s" }}

[frontend.web]
bind = ["127.0.0.1:{port}"]
stick_table = "type ip size 1k expire 30s store http_req_rate(10s),conn_cur,gpc0,gpt0,http_err_cnt,http_req_cnt"
http_request = [
    "track-sc0 src",
    "track-sc1 src table per_path if {{ path_beg /show }}",
    "deny deny_status 429 if {{ sc_http_req_rate(0) gt 100 }}",
    "sc-inc-gpc0(0) if {{ path /mark }}",
    "sc-set-gpt0(0) 42 if {{ path /tag }}",
    "deny if {{ path /forbid }}",
    "return status 200 content-type text/plain lf-string \"rate=%[sc_http_req_rate(0)] cnt=%[sc0_http_req_cnt] gpc0=%[sc_get_gpc0(0)] gpt0=%[sc0_get_gpt0] err=%[sc_http_err_cnt(0)] cur=%[sc_conn_cur(0)] src=%[src_http_req_cnt] other=%[sc_http_req_cnt(1)] tracked=%[sc2_tracked] used=%[table_cnt(per_path)]\" if {{ path /show }}",
]
default_backend = "be"

[backend.be]
server = ["a {echo}"]

[backend.per_path]
stick_table = "type ipv6 size 10 store http_req_cnt"
"#
    )
}

/// 200 requests a second from one source over a limit of 100 per 10 s: the first 100
/// pass, the rest get 429; another source is untouched.
#[tokio::test]
async fn over_the_rate_limit_one_source_gets_429_and_another_does_not() {
    let a = echo("a").await;
    let (h, _reg) = start(load(&config(a.addr, 25101)));
    let fe = addr_of(&h, "web");
    let mut statuses = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for _ in 0..200 {
        tick.tick().await;
        statuses.push(req_from([127, 0, 0, 1], fe, "/").await.0);
    }
    // A rate never counts more than was sent: nothing is refused before the 101st.
    assert!(
        statuses[..100].iter().all(|s| *s == 200),
        "{:?}",
        &statuses[..100]
    );
    // At a 10 s period boundary HAProxy's rate weighs the previous period by what is left
    // of the current one, so a few more may pass there; the rest are refused.
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 90, "only {refused} of 200 refused: {statuses:?}");
    assert!(statuses[150..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    // The server saw only the admitted ones.
    assert_eq!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst),
        200 - refused
    );

    // Another source: its own entry, far below the limit.
    for _ in 0..20 {
        assert_eq!(req_from([127, 0, 0, 2], fe, "/").await.0, 200);
    }
    let (st, body) = req_from([127, 0, 0, 2], fe, "/show").await;
    assert_eq!(st, 200);
    assert!(body.starts_with("rate=21 cnt=21 "), "{body}");
    // The limited source is still refused.
    assert_eq!(req_from([127, 0, 0, 1], fe, "/").await.0, 429);
}

/// gpc0, gpt0, http_err_cnt, conn_cur, src_*, a second table and table_cnt, read back
/// through the fetches.
#[tokio::test]
async fn counters_tags_and_fetches_read_back() {
    let a = echo("a").await;
    let (h, _reg) = start(load(&config(a.addr, 25102)));
    let fe = addr_of(&h, "web");
    let src = [127, 0, 0, 3];
    for _ in 0..3 {
        assert_eq!(req_from(src, fe, "/mark").await.0, 200);
    }
    assert_eq!(req_from(src, fe, "/tag").await.0, 200);
    for _ in 0..2 {
        assert_eq!(req_from(src, fe, "/forbid").await.0, 403);
    }
    let (st, body) = req_from(src, fe, "/show").await;
    assert_eq!(st, 200);
    // 7 requests so far (this one included); 2 denied (4xx); this request is the one
    // tracking now; the second table saw only /show, from one source.
    assert_eq!(
        body,
        "rate=7 cnt=7 gpc0=3 gpt0=42 err=2 cur=1 src=7 other=1 tracked=0 used=1",
    );
    let (_, body) = req_from(src, fe, "/show").await;
    assert!(body.contains(" other=2 "), "{body}");
}

/// An unknown table in a rule, or a section without a table of its own, is refused at
/// load with the rule's position.
#[test]
fn unknown_tables_are_config_errors() {
    let bad = |extra: &str| {
        let text = format!(
            "[frontend.web]\nmode = \"http\"\nbind = [\"127.0.0.1:25103\"]\n{extra}\ndefault_backend = \"be\"\n\n[backend.be]\nmode = \"http\"\nserver = [\"a 127.0.0.1:1\"]\n"
        );
        match lb::config::load_str(
            Path::new("stick.toml"),
            &text,
            &lb::config::LoadOptions::default(),
        ) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
        .lines()
        .filter(|l| !l.contains("warning"))
        .collect::<Vec<_>>()
        .join("\n")
    };
    let e = bad("http_request = [\"track-sc0 src\"]");
    assert!(e.contains("no stick table `web`"), "{e}");
    let e = bad("http_request = [\"track-sc0 src table nope\"]");
    assert!(e.contains("no stick table `nope`"), "{e}");
    let e = bad("http_request = [\"deny if { src_conn_cur(nope) gt 1 }\"]");
    assert!(e.contains("no stick table `nope`"), "{e}");
    let e = bad("stick_table = \"type ip size 1k store http_req_rate\"");
    assert!(e.contains("needs a period"), "{e}");
    let e = bad("stick_table = \"type ip store conn_cur\"");
    assert!(e.contains("needs `size`"), "{e}");
    assert_eq!(
        bad("stick_table = \"type ip size 1k store conn_cur\"\nhttp_request = [\"track-sc0 src\"]"),
        ""
    );
}
