//! A reload that would leave nothing listening is refused (issue #19 item 16): through the
//! API and SIGHUP, the old configuration keeps serving and both say why. Runs the real
//! `lb run` binary on loopback (no XDP tier).

mod admin_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use admin_common::{LbChild, free_port, http_get, ok_server};
use serde_json::Value;

fn config(admin: SocketAddr, web: Option<(SocketAddr, SocketAddr)>) -> String {
    let mut c = format!("[global]\nadmin = \"{admin}\"\n");
    if let Some((bind, server)) = web {
        c.push_str(&format!(
            "[defaults]\nmode = \"http\"\n\
             timeout = {{ client = \"5s\", connect = \"2s\", server = \"5s\" }}\n\
             [listen.web]\nbind = \"{bind}\"\nserver = \"s1 {server}\"\n"
        ));
    }
    c
}

fn last_reload(admin: SocketAddr) -> Value {
    let body = lb::admin::client::fetch_body(admin, "/api/reload", None).expect("GET /api/reload");
    serde_json::from_slice(&body).expect("json")
}

#[test]
fn reload_to_nothing_listening_is_refused() {
    let dir = std::env::temp_dir().join(format!("lb-admin-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("lb.toml");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("a");
    let server = ok_server();
    let good = config(admin, Some((web, server)));
    std::fs::write(&path, &good).expect("write");
    let lb = LbChild::start(&path, admin);
    assert_eq!(http_get(web, "/"), Some((200, "ok".into())));

    // Through the API: 500 with the reason, and the listener still serves.
    std::fs::write(&path, config(admin, None)).expect("write");
    let (status, body) =
        lb::admin::client::send(admin, "POST", "/api/reload", "", None).expect("POST");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["result"], "error");
    let why = v["error"].as_str().expect("error text");
    assert!(
        why.contains("no frontend or listen section") && why.contains("not applied"),
        "{why}"
    );
    assert_eq!(
        http_get(web, "/"),
        Some((200, "ok".into())),
        "old config serves"
    );

    // A good reload in between, so the SIGHUP's result is told apart.
    std::fs::write(&path, &good).expect("write");
    let (status, _) =
        lb::admin::client::send(admin, "POST", "/api/reload", "", None).expect("POST");
    assert_eq!(status, 200);
    assert_eq!(last_reload(admin)["result"], "ok");

    // Through SIGHUP: GET /api/reload and the log say why.
    std::fs::write(&path, config(admin, None)).expect("write");
    lb.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = last_reload(admin);
        if v["result"] == "error" {
            break v;
        }
        assert!(Instant::now() < deadline, "SIGHUP reload not reported: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("no frontend or listen section")),
        "{v}"
    );
    assert_eq!(http_get(web, "/"), Some((200, "ok".into())));
    let log = lb.log_text();
    assert!(
        log.contains("rejected; the running configuration is unchanged")
            && log.contains("no frontend or listen section"),
        "{log}"
    );
    drop(lb);
    let _ = std::fs::remove_dir_all(&dir);
}
