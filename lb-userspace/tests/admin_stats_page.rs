//! The stats page in a proxy (issue #15 item 4): `stats enable|uri|auth|realm|refresh|
//! hide-version` served by that frontend with lb's HTML page, through the real `lb run`
//! binary on loopback; the config errors and `lb convert`'s mapping.

mod admin_common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use admin_common::{LbChild, free_port, http_get, ok_server};
use base64::Engine;

/// `GET path` with extra headers: (status, head, body).
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("t");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").expect("head");
    let (status, body) = lb::admin::client::parse_response(&raw).expect("parse");
    (
        status,
        head.to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn basic(creds: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(creds)
    )
}

#[test]
fn frontend_serves_its_stats_page() {
    let dir = std::env::temp_dir().join(format!("lb-stats-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("lb.toml");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let open: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let server = ok_server();
    std::fs::write(
        &path,
        format!(
            "[global]\nadmin = \"{admin}\"\n\
             [defaults]\nmode = \"http\"\n\
             timeout = {{ client = \"5s\", connect = \"2s\", server = \"5s\" }}\n\
             [listen.web]\nbind = \"{web}\"\nserver = \"s1 {server}\"\n\
             stats = [\"enable\", \"uri /lbstats\", \"realm lb\\\\ admin\", \"auth admin:s3cret\", \
             \"auth ops:pw\", \"refresh 7s\", \"hide-version\"]\n\
             [listen.open]\nbind = \"{open}\"\nserver = \"s1 {server}\"\nstats = \"enable\"\n"
        ),
    )
    .expect("write");
    let lb = LbChild::start(&path, admin);

    // Other paths are proxied as before.
    assert_eq!(http_get(web, "/"), Some((200, "ok".into())));
    assert_eq!(http_get(web, "/lbstat"), Some((200, "ok".into())));

    // Authentication: none or wrong gets 401 with the realm.
    for auth in [
        None,
        Some(basic("admin:nope")),
        Some("Bearer s3cret".to_owned()),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (status, head, _) = get(web, "/lbstats", &headers);
        assert_eq!(status, 401, "{auth:?}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"lb admin\""),
            "{head}"
        );
    }
    for creds in ["admin:s3cret", "ops:pw"] {
        let (status, head, body) = get(web, "/lbstats?x", &[("Authorization", &basic(creds))]);
        assert_eq!(status, 200, "{creds}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/html"),
            "{head}"
        );
        assert!(
            body.contains("<meta http-equiv=\"refresh\" content=\"7\">"),
            "{body}"
        );
        assert!(
            body.contains("frontend web") && body.contains("backend web"),
            "{body}"
        );
        assert!(body.contains(">s1<"), "{body}");
        assert!(!body.contains("version "), "hide-version: {body}");
        assert!(!body.contains("/stats.json"), "no admin-listener links");
    }

    // `stats enable` alone: HAProxy's default URI, no authentication, the version shown.
    let (status, _, body) = get(open, "/haproxy?stats", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("version {}", env!("CARGO_PKG_VERSION"))),
        "{body}"
    );
    assert!(body.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert_eq!(http_get(open, "/haproxy"), Some((200, "ok".into())));
    // Requests for the page are counted by the frontend.
    let doc = lb::admin::client::fetch_stats(admin, None).expect("stats");
    let fe = doc.frontends.iter().find(|f| f.name == "web").expect("web");
    assert!(fe.counters.requests >= 7, "{}", fe.counters.requests);
    drop(lb);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_errors_and_convert() {
    use lb::config::{LoadOptions, load_str};
    let base = "[defaults]\nmode = \"http\"\ntimeout = { client = \"5s\", connect = \"5s\", server = \"5s\" }\n\
                [listen.l]\nbind = \"127.0.0.1:8080\"\nserver = \"s 127.0.0.1:80\"\n";
    let errors = |stats: &str| -> Vec<String> {
        match load_str(
            Path::new("t.toml"),
            &format!("{base}stats = {stats}\n"),
            &LoadOptions::default(),
        ) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .diagnostics
                .iter()
                .map(ToString::to_string)
                .filter(|d| !d.contains(": warning: "))
                .collect(),
        }
    };
    assert_eq!(
        errors("[\"enable\", \"uri /s\", \"auth a:b\", \"refresh 3s\", \"hide-version\"]"),
        Vec::<String>::new()
    );
    assert_eq!(
        errors("[\"auth nocolon\"]"),
        ["t.toml:7:16: listen.l.stats[0]: `stats auth nocolon`: expected user:password"]
    );
    assert_eq!(
        errors("[\"admin if TRUE\"]"),
        [
            "t.toml:7:11: listen.l.stats[0]: `stats admin` is not supported (supported: enable, uri, realm, auth, refresh, hide-version; the admin API changes servers)"
        ]
    );
    assert_eq!(
        errors("[\"uri stats\"]"),
        ["t.toml:7:15: listen.l.stats[0]: `stats uri stats`: expected a path starting with /"]
    );
    assert_eq!(errors("[\"refresh soon\"]").len(), 1);
    assert_eq!(errors("[\"enable now\"]").len(), 1);

    let conv = lb::config::convert::convert_str(
        Path::new("h.cfg"),
        "defaults\n  mode http\n  timeout client 5s\n  timeout connect 5s\n  timeout server 5s\n\
         listen stats\n  bind 127.0.0.1:8404\n  stats enable\n  stats uri /stats\n  stats refresh 10s\n  \
         stats auth admin:pw\n  stats admin if TRUE\n",
    );
    assert!(!conv.has_errors(), "{:?}", conv.diagnostics);
    assert!(
        conv.toml.contains("stats = [\n    \"enable\",\n    \"uri /stats\",\n    \"refresh 10s\",\n    \"auth admin:pw\",\n]"),
        "{}",
        conv.toml
    );
    let warnings: Vec<String> = conv.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("h.cfg:12:") && w.contains("`stats admin`")),
        "{warnings:?}"
    );
    let (c, _) = load_str(Path::new("t.toml"), &conv.toml, &LoadOptions::default()).expect("loads");
    let page = c.frontends[0].stats.as_ref().expect("page");
    assert_eq!(page.uri, "/stats");
    assert_eq!(page.auth, [("admin".to_owned(), "pw".to_owned())]);
    assert_eq!(page.refresh, Some(Duration::from_secs(10)));
}
