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

#[test]
fn client_certificate_options() {
    let base = base();
    let ca = cert_pem();
    base.write("config/ca.pem", &ca);
    base.write("config/more.pem", &ca);
    base.write("config/empty.pem", "");
    let site = "*:443 ssl crt config/certs/site.pem";
    let c = load(
        &base,
        "",
        &format!("{site} verify optional ca-file config/ca.pem ca-verify-file config/more.pem"),
    )
    .unwrap();
    let t = c.frontends[0].binds[0].tls.clone().unwrap();
    assert_eq!(t.verify, ClientVerify::Optional);
    assert_eq!(
        t.ca_file.as_deref(),
        Some(base.path().join("config/ca.pem").as_path())
    );
    assert!(t.ca_verify_file.is_some() && t.crl_file.is_none());
    let c = load(&base, "", site).unwrap();
    let t = c.frontends[0].binds[0].tls.clone().unwrap();
    assert_eq!(t.verify, ClientVerify::None, "HAProxy's default");

    assert_eq!(
        load(&base, "", &format!("{site} verify required")).unwrap_err(),
        [
            "lb.toml:7:53: frontend.web.bind[0]: `verify required` needs `ca-file` on the same bind line"
        ]
    );
    assert_eq!(
        load(
            &base,
            "",
            &format!("{site} verify sometimes ca-file config/ca.pem")
        )
        .unwrap_err(),
        [
            "lb.toml:7:53: frontend.web.bind[0]: `verify sometimes`: expected `none`, `optional` or `required`"
        ]
    );
    assert_eq!(
        load(&base, "", "*:80 verify required ca-file config/ca.pem").unwrap_err(),
        ["lb.toml:7:22: frontend.web.bind[0]: `verify` needs `ssl` on the same bind line"]
    );
    let e = load(
        &base,
        "",
        &format!("{site} verify required ca-file config/empty.pem crl-file config/ca.pem"),
    )
    .unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("ca-file `config/empty.pem`: CA file"),
        "{e:?}"
    );
    assert!(e[1].contains("crl-file `config/ca.pem`: CRL file"), "{e:?}");
}

/// The security defect of issue #17: `verify required ca-file` used to be dropped with a
/// warning, leaving a frontend that accepts clients without a certificate. Now it carries
/// over, and TLS policy lb cannot carry is refused (an error: nothing is written).
#[test]
fn convert_carries_client_verification_and_refuses_what_it_cannot() {
    let head = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\nfrontend web\n";
    let tail = "    default_backend pool\nbackend pool\n    server s1 127.0.0.1:8081\n";
    let cfg = format!(
        "{head}    bind *:443 ssl crt config/certs/site.pem verify required ca-file config/ca.pem crl-file config/ca.crl ca-verify-file config/ca.pem\n{tail}"
    );
    let conv = lb::config::convert::convert_str(std::path::Path::new("m.cfg"), &cfg);
    assert!(conv.diagnostics.is_empty(), "{:#?}", conv.diagnostics);
    assert!(
        conv.toml.contains(
            "verify required ca-file config/ca.pem crl-file config/ca.crl ca-verify-file config/ca.pem"
        ),
        "{}",
        conv.toml
    );
    for opt in ["ca-ignore-err all", "crt-ignore-err all"] {
        let cfg = format!("{head}    bind *:443 ssl crt config/certs/site.pem {opt}\n{tail}");
        let conv = lb::config::convert::convert_str(std::path::Path::new("m.cfg"), &cfg);
        let errors: Vec<String> = conv
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "{opt}: {:#?}", conv.diagnostics);
        assert!(
            errors[0].contains(&format!(
                "bind option `{opt}` is not supported, and dropping it"
            )),
            "{errors:?}"
        );
    }
}

#[test]
fn client_certificate_fetches_parse() {
    use lb::acl::{DistinguishedName, FormatString};
    let dn = DistinguishedName::new(vec![
        ("C".into(), "FR".into()),
        ("OU".into(), "a".into()),
        ("OU".into(), "b".into()),
        ("CN".into(), "x".into()),
    ]);
    assert_eq!(dn.oneline(), "/C=FR/OU=a/OU=b/CN=x");
    assert_eq!(dn.entry("ou", 1), Some("a"));
    assert_eq!(dn.entry("OU", 2), Some("b"));
    assert_eq!(dn.entry("OU", -1), Some("b"));
    assert_eq!(dn.entry("OU", -2), Some("a"));
    assert_eq!(dn.entry("OU", 3), None);
    assert_eq!(dn.entry("OU", 0), None);
    assert_eq!(dn.entry("L", 1), None);
    for ok in [
        "%[ssl_c_s_dn]",
        "%[ssl_c_s_dn(CN)]",
        "%[ssl_c_i_dn(OU,-1)]",
        "%[ssl_c_serial,hex]",
        "%[ssl_c_sha1,hex]",
        "%[ssl_c_sha1]",
        "%[ssl_c_notafter]",
        "%[ssl_c_used]",
        "%[ssl_c_verify]",
        "%[ssl_c_s_dn(cn),lower]",
    ] {
        assert!(FormatString::compile(ok).is_ok(), "{ok}");
    }
    for bad in ["%[path,hex]", "%[ssl_c_s_dn(CN,x)]", "%[ssl_c_used(1)]"] {
        assert!(FormatString::compile(bad).is_err(), "{bad}");
    }
}

#[test]
fn tls_policy_options() {
    use lb::tls_policy::TlsVersion;
    use rustls::CipherSuite;
    let base = base();
    let site = "*:443 ssl crt config/certs/site.pem";
    let c = load(
        &base,
        "",
        &format!("{site} ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256 prefer-client-ciphers"),
    )
    .unwrap();
    let t = c.frontends[0].binds[0].tls.clone().unwrap();
    assert_eq!(t.min_version, Some(TlsVersion::Tls12));
    assert_eq!(t.max_version, Some(TlsVersion::Tls13));
    assert_eq!(t.ciphersuites, [CipherSuite::TLS13_AES_128_GCM_SHA256]);
    assert_eq!(
        t.ciphers,
        [
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        ]
    );
    assert!(t.prefer_client_ciphers);
    assert_eq!(
        load(&base, "", &format!("{site} ssl-min-ver TLSv1.0")).unwrap_err(),
        [
            "lb.toml:7:58: frontend.web.bind[0]: `ssl-min-ver TLSv1.0`: `TLSv1.0` is not offered (rustls speaks TLS 1.2 and 1.3 only): use TLSv1.2 or TLSv1.3"
        ]
    );
    assert_eq!(
        load(
            &base,
            "",
            &format!("{site} ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.2")
        )
        .unwrap_err(),
        ["lb.toml:7:66: frontend.web.bind[0]: `ssl-min-ver` is above `ssl-max-ver`"]
    );
    let e = load(
        &base,
        "",
        &format!("{site} ciphers DHE-RSA-AES128-GCM-SHA256"),
    )
    .unwrap_err();
    assert!(
        e[0].contains("cipher suite `DHE-RSA-AES128-GCM-SHA256` is not available; available: ECDHE-ECDSA-AES128-GCM-SHA256:"),
        "{e:?}"
    );
    assert_eq!(
        load(&base, "", "*:80 ciphersuites TLS_AES_128_GCM_SHA256").unwrap_err(),
        ["lb.toml:7:15: frontend.web.bind[0]: `ciphersuites` needs `ssl` on the same bind line"]
    );

    let head = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\nfrontend web\n";
    let cfg = format!(
        "{head}    bind *:443 ssl crt config/certs/site.pem ssl-min-ver TLSv1.2 ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256 prefer-client-ciphers\n    default_backend pool\nbackend pool\n    server s1 127.0.0.1:8081\n"
    );
    let conv = lb::config::convert::convert_str(std::path::Path::new("p.cfg"), &cfg);
    assert!(conv.diagnostics.is_empty(), "{:#?}", conv.diagnostics);
    let file = base.write("p.toml", &conv.toml);
    let (c, _) = lb::config::load_with(&file, &opts(base.path())).unwrap();
    let t = c.frontends[0].binds[0].tls.clone().unwrap();
    assert_eq!(t.ciphersuites.len(), 2);
    assert!(t.prefer_client_ciphers);
}

#[test]
fn crt_list_problems_name_the_line() {
    let base = base();
    base.write(
        "config/list.txt",
        "config/certs/site.pem a.test\nconfig/certs/myapp.pem [curves X25519] b.test\n",
    );
    base.write("config/nocert.txt", "config/certs/missing.pem\n");
    base.write(
        "config/ok.txt",
        "config/certs/site.pem [alpn http/1.1] a.test !b.test\n",
    );
    let e = load(&base, "", "*:443 ssl crt-list config/list.txt").unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains(
            "crt-list `config/list.txt` line 2: option `curves` is not supported in a crt-list"
        ),
        "{e:?}"
    );
    let e = load(&base, "", "*:443 ssl crt-list config/nocert.txt").unwrap_err();
    assert!(
        e[0].contains("crt-list `config/nocert.txt`: certificate"),
        "{e:?}"
    );
    let c = load(&base, "", "*:443 ssl crt-list config/ok.txt").unwrap();
    let t = c.frontends[0].binds[0].tls.clone().unwrap();
    assert!(t.certs.is_empty());
    assert_eq!(t.crt_list.len(), 1);
    assert_eq!(t.crt_list[0].filters, ["a.test", "!b.test"]);
    assert_eq!(t.crt_list[0].tls.as_ref().unwrap().alpn, ["http/1.1"]);
    // lb convert carries it.
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\nfrontend web\n    bind *:443 ssl crt-list config/ok.txt\n    default_backend pool\nbackend pool\n    server s1 127.0.0.1:8081\n";
    let conv = lb::config::convert::convert_str(std::path::Path::new("l.cfg"), cfg);
    assert!(conv.diagnostics.is_empty(), "{:#?}", conv.diagnostics);
    let file = base.write("l.toml", &conv.toml);
    let (c, _) = lb::config::load_with(&file, &opts(base.path())).unwrap();
    assert_eq!(
        c.frontends[0].binds[0].tls.as_ref().unwrap().crt_list.len(),
        1
    );
}
