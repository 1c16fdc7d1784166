//! The TLS options of `bind` lines and `[global]` as the config loader reads them: the
//! model they give, and the exact message at the exact place for bad ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config_support;

use base64::Engine;
use config_support::*;
use lb::config::model::*;

const HEAD: &str = "[defaults]\nmode = \"http\"\ntimeout = { client = \"5s\", connect = \"5s\", server = \"5s\" }\n";
const BE: &str = "\n[backend.all]\nserver = [\"s1 127.0.0.1:80\"]\n";

fn keys(n: usize) -> String {
    (0..n)
        .map(|i| base64::engine::general_purpose::STANDARD.encode([i as u8; 48]) + "\n")
        .collect()
}

/// Loads `global` and one frontend with `bind`; the config or the error lines.
fn load(base: &Tmp, global: &str, bind: &str) -> Result<Config, Vec<String>> {
    let text = format!(
        "[global]\n{global}\n{HEAD}[frontend.web]\nbind = [\"{bind}\"]\ndefault_backend = \"all\"\n{BE}"
    );
    let file = base.write("lb.toml", &text);
    let prefix = format!("{}:", file.display());
    lb::config::load_with(&file, &opts(base.path()))
        .map(|(c, _)| c)
        .map_err(|e| {
            e.errors()
                .map(|d| d.to_string().replacen(&prefix, "lb.toml:", 1))
                .collect()
        })
}

#[test]
fn resumption_options() {
    let base = base();
    base.write("config/tickets.key", &keys(4));
    let c = load(
        &base,
        "ssl_cache_size = 5",
        "*:443 ssl crt config/certs/site.pem tls-ticket-keys config/tickets.key strict-sni",
    )
    .unwrap();
    assert_eq!(c.global.ssl_cache_size, 5);
    let t = c.frontends[0].binds[0].tls.clone().unwrap();
    assert_eq!(
        t.ticket_keys.as_deref(),
        Some(base.path().join("config/tickets.key").as_path())
    );
    assert!(!t.no_tickets);
    assert!(t.strict_sni);

    let c = load(
        &base,
        "",
        "*:443 ssl crt config/certs/site.pem no-tls-tickets",
    )
    .unwrap();
    assert_eq!(c.global.ssl_cache_size, 20000, "HAProxy's default");
    let t = c.frontends[0].binds[0].tls.clone().unwrap();
    assert!(t.no_tickets && t.ticket_keys.is_none() && !t.strict_sni);
}

#[test]
fn bad_resumption_options() {
    let base = base();
    base.write("config/two.key", &keys(2));
    base.write("config/bad.key", "not base64!\n");
    let site = "*:443 ssl crt config/certs/site.pem";
    assert_eq!(
        load(&base, "", &format!("{site} tls-ticket-keys config/two.key")).unwrap_err(),
        [
            "lb.toml:7:62: frontend.web.bind[0]: tls-ticket-keys `config/two.key`: 2 key(s); at least 3 are needed (the last 3 are used)"
        ]
    );
    assert_eq!(
        load(&base, "", &format!("{site} tls-ticket-keys config/bad.key")).unwrap_err(),
        [
            "lb.toml:7:62: frontend.web.bind[0]: tls-ticket-keys `config/bad.key`: line 1: not base64"
        ]
    );
    assert_eq!(
        load(&base, "", "*:80 tls-ticket-keys config/two.key").unwrap_err(),
        ["lb.toml:7:31: frontend.web.bind[0]: `tls-ticket-keys` needs `ssl` on the same bind line"]
    );
    assert_eq!(
        load(&base, "ssl_cache_size = -1", site).unwrap_err().len(),
        1
    );
}

/// `lb convert` carries the resumption options over, and the result loads.
#[test]
fn convert_carries_resumption_options() {
    let cfg = "global\n    tune.ssl.cachesize 50000\n\
defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind *:443 ssl crt config/certs/site.pem tls-ticket-keys config/tickets.key strict-sni no-tls-tickets\n\
    default_backend pool\nbackend pool\n    server s1 127.0.0.1:8081\n";
    let conv = lb::config::convert::convert_str(std::path::Path::new("t.cfg"), cfg);
    assert!(conv.diagnostics.is_empty(), "{:#?}", conv.diagnostics);
    assert!(
        conv.toml.contains("ssl_cache_size = 50000"),
        "{}",
        conv.toml
    );
    let base = base();
    base.write("config/tickets.key", &keys(3));
    let file = base.write("t.toml", &conv.toml);
    let (c, _) = lb::config::load_with(&file, &opts(base.path())).unwrap();
    assert_eq!(c.global.ssl_cache_size, 50000);
    let t = c.frontends[0].binds[0].tls.clone().unwrap();
    assert!(t.strict_sni && t.no_tickets && t.ticket_keys.is_some());
}
