//! `lb convert`: HAProxy in, TOML out, and `load()` accepts the output.

mod config_support;

use std::path::Path;

use config_support::*;
use lb::config::convert::{convert_str, run_convert};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/convert")
        .join(name)
}

#[test]
fn seed_example_typos_are_errors_with_suggestions() {
    let path = fixture("seed-example.cfg");
    let conv = convert_str(
        Path::new("seed-example.cfg"),
        &std::fs::read_to_string(path).expect("read"),
    );
    let errors: Vec<String> = conv
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        errors,
        [
            "seed-example.cfg:3:43: frontend.httpsandhttp: `alpn` needs a value",
            "seed-example.cfg:4:1: frontend.httpsandhttp: unknown keyword `h2,`; is this the value of `alpn` from line 3, split over two lines?",
            "seed-example.cfg:11:3: frontend.httpsandhttp: unknown keyword `use_backed`; did you mean `use_backend`?",
        ]
    );
}

#[test]
fn run_convert_exits_1_on_typos_and_writes_nothing() {
    let tmp = Tmp::new("conv");
    let out_path = tmp.0.join("out.toml");
    let mut out = Vec::new();
    let rc = run_convert(&fixture("seed-example.cfg"), Some(&out_path), &mut out);
    assert_eq!(rc, 1);
    assert!(!out_path.exists());
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("did you mean `use_backend`?"), "{text}");
}

/// `%[...]` in `set-header` / `add-header` values carries over as is (lb expands it too);
/// a value whose fetch lb lacks is named in a warning and kept as a comment.
#[test]
fn header_value_log_format_carries_over() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind *:8080\n    http-request set-header X-Client %[src]\n\
    http-request add-header X-Mix \"100%% %[req.hdr(host)] %[ssl_fc_sni]\"\n\
    http-request set-header X-Dn %[ssl_c_notbefore]\n    default_backend pool\n\
backend pool\n    server s1 127.0.0.1:8081\n";
    let conv = convert_str(Path::new("fmt.cfg"), cfg);
    assert!(!conv.has_errors(), "{:#?}", conv.diagnostics);
    assert!(
        conv.toml.contains(r#""set-header X-Client %[src]""#),
        "{}",
        conv.toml
    );
    assert!(
        conv.toml
            .contains(r#"'add-header X-Mix "100%% %[req.hdr(host)] %[ssl_fc_sni]"'"#),
        "{}",
        conv.toml
    );
    let warnings: Vec<String> = conv.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("fmt.cfg:10:")
            && warnings[0].contains("unknown fetch method 'ssl_c_notbefore'"),
        "{warnings:#?}"
    );
    let base = base();
    let file = base.write("fmt.toml", &conv.toml);
    let res = lb::config::load_with(&file, &opts(base.path()));
    assert_loads(&res);
}

#[test]
fn forms_golden_and_loadable() {
    let input = fixture("forms.cfg");
    let conv = convert_str(
        Path::new("forms.cfg"),
        &std::fs::read_to_string(&input).expect("read"),
    );
    assert!(!conv.has_errors(), "{:#?}", conv.diagnostics);
    let expected_path = fixture("forms.toml");
    if std::env::var_os("LB_BLESS").is_some() {
        std::fs::write(&expected_path, &conv.toml).expect("bless");
    }
    let expected =
        std::fs::read_to_string(&expected_path).expect("forms.toml (LB_BLESS=1 creates it)");
    assert_eq!(conv.toml, expected);

    // `log /dev/log local0` (line 8) converts now (#15 item 2): no warning, a log target.
    assert!(
        conv.toml.contains("log = [\n    \"/dev/log local0\",\n]"),
        "{}",
        conv.toml
    );
    // global `maxconn 20000` (line 6) converts (#15 item 5): no warning, the key.
    assert!(conv.toml.contains("\nmaxconn = 20000\n"), "{}", conv.toml);
    assert!(
        !conv
            .diagnostics
            .iter()
            .any(|d| d.to_string().starts_with("forms.cfg:6:")),
        "{:#?}",
        conv.diagnostics
    );
    // `set-var` with a constant converts to a rule now (#16 item 4), without a warning.
    assert!(
        conv.toml.contains("\"set-var(txn.x) str(y)\",\n]"),
        "{}",
        conv.toml
    );
    // every unsupported directive is named with its line, and kept in the output
    let warnings: Vec<String> = conv.diagnostics.iter().map(|d| d.to_string()).collect();
    // `daemon` (line 4) is a note: lb runs in the foreground under systemd.
    assert!(
        conv.toml.contains("line 4: `daemon` needs no key")
            && !warnings.iter().any(|w| w.starts_with("forms.cfg:4:")),
        "{warnings:#?}"
    );
    for (line, what) in [(29, "capture"), (39, "slowstart 10s")] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("forms.cfg:{line}:")) && w.contains("warning")),
            "no warning for line {line}: {warnings:#?}"
        );
        assert!(conv.toml.contains(what), "{what} missing from output");
    }

    // `stats socket` (line 7) is carried over as `stats_socket`, not warned about
    assert!(
        conv.toml
            .contains("stats_socket = [\n    \"/run/haproxy.sock mode 600 level admin\",\n]"),
        "{}",
        conv.toml
    );
    assert!(!warnings.iter().any(|w| w.starts_with("forms.cfg:7:")));
    // and `stats enable` in the frontend (line 30) as its `stats` page
    assert!(
        conv.toml.contains("stats = [\n    \"enable\",\n]"),
        "{}",
        conv.toml
    );
    assert!(!warnings.iter().any(|w| w.starts_with("forms.cfg:30:")));

    // and lb accepts the result
    let base = base();
    let file = base.write("forms.toml", &conv.toml);
    let res = lb::config::load_with(&file, &opts(base.path()));
    assert_loads(&res);
}

#[test]
fn ipv6_forms() {
    let conv = convert_str(
        Path::new("v6.cfg"),
        "frontend f\n bind :::443 v4v6\n bind ipv6@:80\n default_backend b\nbackend b\n server s1 [2001:db8::1]:80\n server s2 2001:db8::2:8080\n",
    );
    assert!(!conv.has_errors(), "{:#?}", conv.diagnostics);
    for want in [
        "\"[::]:443 v4v6\"",
        "\"[::]:80\"",
        "\"s1 [2001:db8::1]:80\"",
        "\"s2 [2001:db8::2]:8080\"",
    ] {
        assert!(conv.toml.contains(want), "{want} not in\n{}", conv.toml);
    }
}

#[test]
fn converted_examples_load() {
    let base = base();
    for name in ["httpsandhttp", "www-myapp", "tcp-defaults", "http-defaults"] {
        let cfg = repo_config(&format!("haproxy/{name}.cfg"));
        let conv = convert_str(&cfg, &std::fs::read_to_string(&cfg).expect("read"));
        let file = base.write(&format!("{name}.toml"), &conv.toml);
        assert_loads(&lb::config::load_with(&file, &opts(base.path())));
    }
}

#[test]
fn run_convert_to_stdout() {
    let mut out = Vec::new();
    let rc = run_convert(&repo_config("haproxy/tcp-defaults.cfg"), None, &mut out);
    assert_eq!(rc, 0);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("[frontend.tls-passthrough]"), "{text}");
}

/// Debian's stock haproxy.cfg (plus a frontend) converts without errors and, with its
/// errorfiles present, loads.
#[test]
fn debian_default_config() {
    let input = fixture("debian-default.cfg");
    let conv = convert_str(
        Path::new("haproxy.cfg"),
        &std::fs::read_to_string(&input).expect("read"),
    );
    assert!(!conv.has_errors(), "{:#?}", conv.diagnostics);
    for kept in [
        "chroot = \"/var/lib/haproxy\"",
        "user = \"haproxy\"",
        "group = \"haproxy\"",
        "stats socket",
        "ssl-default-bind-options",
        "crt-base",
    ] {
        assert!(conv.toml.contains(kept), "{kept} not kept:\n{}", conv.toml);
    }
    assert!(
        conv.toml
            .contains("\"redirect scheme https code 301 if !{ ssl_fc }\""),
        "{}",
        conv.toml
    );
    assert!(conv.toml.contains("connect = \"5000\""), "{}", conv.toml);
    let base = base();
    for code in [400, 403, 408, 500, 502, 503, 504] {
        base.write(
            &format!("errors/{code}.http"),
            &format!("HTTP/1.0 {code} x\r\n\r\n"),
        );
    }
    let errors_dir = format!("{}/errors/", base.path().display());
    let text = conv.toml.replace("/etc/haproxy/errors/", &errors_dir);
    let file = base.write("debian.toml", &text);
    let res = lb::config::load_with(&file, &opts(base.path()));
    assert_loads(&res);
    if let Ok((cfg, _)) = res {
        assert_eq!(cfg.frontends[0].errorfiles.len(), 7);
    }
}

/// `cpu-map`: the `auto:` form and one line per thread become `[global] cpu_map`; other
/// forms stay as comments with a warning.
#[test]
fn cpu_map_forms() {
    let rest = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
listen web\n    bind 127.0.0.1:8080\n    server s1 127.0.0.1:8081\n";
    let conv = |global: &str| convert_str(Path::new("cpu.cfg"), &format!("global\n{global}{rest}"));
    for (global, want) in [
        (
            "    nbthread 2\n    cpu-map auto:1/1-2 0-1\n",
            "cpu_map = [0, 1]",
        ),
        ("    cpu-map auto:1/all 0 1\n", "cpu_map = [0, 1]"),
        ("    cpu-map auto:1/1-1 0,1\n", "cpu_map = [0]"),
        ("    cpu-map 1/1 1\n    cpu-map 1/2 0\n", "cpu_map = [1, 0]"),
    ] {
        let c = conv(global);
        assert!(c.diagnostics.is_empty(), "{global}: {:#?}", c.diagnostics);
        assert!(c.toml.contains(want), "{global}: {}", c.toml);
    }
    let c = conv("    nbthread 2\n    cpu-map auto:1/1-2 0-1\n");
    assert!(
        c.toml.contains("threads = 2\ncpu_map = [0, 1]"),
        "{}",
        c.toml
    );
    let base = base();
    let file = base.write("cpu.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
    // Not expressible per thread: a thread bound to a set, threads out of order, fewer CPUs
    // than threads, another process.
    for global in [
        "    cpu-map 1/1-2 0-1\n",
        "    cpu-map 1/2 1\n",
        "    cpu-map auto:1/1-4 0-1\n",
        "    cpu-map 2/1 0\n",
        "    cpu-map auto:1/1-2 x\n",
    ] {
        let c = conv(global);
        let w: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            w.len() == 1 && w[0].contains("cpu-map auto:1/1-N CPUS"),
            "{global}: {w:#?}"
        );
        assert!(!c.toml.contains("cpu_map ="), "{global}: {}", c.toml);
    }
}

/// `http-request redirect` targets are log-format strings and carry over; the old-style
/// `redirect` statement's target is a plain string, so its `%` are escaped.
#[test]
fn redirect_targets_keep_their_meaning() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind *:8080\n    http-request redirect location https://%[req.hdr(host)]%[url] code 301 if { path_beg /a }\n\
    redirect location /b%20c if { path_beg /b }\n    default_backend pool\n\
backend pool\n    server s1 127.0.0.1:8081\n";
    let conv = convert_str(Path::new("redir.cfg"), cfg);
    assert!(conv.diagnostics.is_empty(), "{:#?}", conv.diagnostics);
    assert!(
        conv.toml.contains(
            "redirect location https://%[req.hdr(host)]%[url] code 301 if { path_beg /a }"
        ),
        "{}",
        conv.toml
    );
    assert!(
        conv.toml
            .contains("redirect location /b%%20c if { path_beg /b }"),
        "{}",
        conv.toml
    );
    let base = base();
    let file = base.write("redir.toml", &conv.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
}

/// Server `proto h1|h2` carries over (HTTP/2 toward gRPC servers); other protocols are
/// named in a warning.
#[test]
fn server_proto_carries_over() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
listen web\n    bind 127.0.0.1:8080\n    server g1 127.0.0.1:50051 proto h2\n    server f1 127.0.0.1:9000 proto fcgi\n";
    let c = convert_str(Path::new("proto.cfg"), cfg);
    assert!(c.toml.contains("g1 127.0.0.1:50051 proto h2"), "{}", c.toml);
    let w: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(w.len() == 1 && w[0].contains("proto fcgi"), "{w:#?}");
    let base = base();
    let file = base.write("proto.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
}

/// `http-response` rules carry over (section by section); unsupported actions are named.
#[test]
fn http_response_rules_carry_over() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind 127.0.0.1:8080\n    http-response set-header X-Frame-Options DENY\n    default_backend app\n\
backend app\n    http-response del-header Server\n    http-response set-status 503 reason Maintenance if { status 502 }\n\
    http-response replace-header Set-Cookie (.*) \\1;\\ Secure\n    http-response set-var(txn.x) str(1)\n    server s1 127.0.0.1:8081\n";
    let c = convert_str(Path::new("res.cfg"), cfg);
    assert!(
        c.toml
            .contains("http_response = [\n    \"set-header X-Frame-Options DENY\",\n]"),
        "{}",
        c.toml
    );
    assert!(c.toml.contains("\"del-header Server\""), "{}", c.toml);
    // HAProxy keeps `\1` (an unknown escape) and decodes `\ `; quoted again for lb.
    assert!(
        c.toml
            .contains(r#"'replace-header Set-Cookie (.*) "\\1; Secure"'"#),
        "{}",
        c.toml
    );
    assert!(
        c.toml
            .contains("\"set-status 503 reason Maintenance if { status 502 }\""),
        "{}",
        c.toml
    );
    let w: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        w.len() == 1 && w[0].contains("http-response action `set-var(txn.x)`"),
        "{w:#?}"
    );
    let base = base();
    let file = base.write("res.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
}

/// Server TLS options carry over; `alpn h2` becomes `proto h2`; an `sni` expression lb
/// cannot evaluate is named.
#[test]
fn server_tls_options_carry_over() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
backend app\n    server s1 127.0.0.1:8443 ssl verify none sni str(api.example) alpn h2\n\
    server s2 127.0.0.1:8444 ssl verify none sni req.hdr(host)\n";
    let c = convert_str(Path::new("tls.cfg"), cfg);
    assert!(
        c.toml
            .contains("\"s1 127.0.0.1:8443 ssl verify none sni str(api.example) proto h2\""),
        "{}",
        c.toml
    );
    let w: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(w.len() == 1 && w[0].contains("sni"), "{w:#?}");
    let base = base();
    let file = base.write("tls.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
}

/// PROXY protocol options carry over.
#[test]
fn proxy_protocol_options_carry_over() {
    let cfg = "defaults\n    mode tcp\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
listen smtp\n    bind 127.0.0.1:2525 accept-proxy\n    server m1 127.0.0.1:25 send-proxy\n    server m2 127.0.0.1:26 send-proxy-v2\n";
    let c = convert_str(Path::new("pp.cfg"), cfg);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    for want in [
        "\"127.0.0.1:2525 accept-proxy\"",
        "\"m1 127.0.0.1:25 send-proxy\"",
        "\"m2 127.0.0.1:26 send-proxy-v2\"",
    ] {
        assert!(c.toml.contains(want), "{want}: {}", c.toml);
    }
    let base = base();
    let file = base.write("pp.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
}

/// A condition or ACL lb's engine cannot take (a fetch it lacks) is named with the line,
/// and so is every rule that uses such an ACL. A rule that restricts access is then an
/// error and an `unconverted` entry (the output does not run); with `--drop-unsupported`
/// it is kept as a comment and the output loads.
#[test]
fn unconvertible_conditions_are_named_not_written() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind 127.0.0.1:8080\n    acl abuse fc_rtt gt 100\n    acl api path_beg /api\n\
    http-request deny deny_status 429 if abuse\n    http-request deny if { fc_unacked gt 10 }\n\
    http-request deny if api !{ src 10.0.0.0/8 }\n    use_backend app if api || abuse\n    default_backend app\n\
backend app\n    server s1 127.0.0.1:8081\n";
    // Dropping the deny rules fails open: by default they are errors and `unconverted`
    // entries that keep the output from loading (issue #15 item 1), each naming its line.
    let strict = convert_str(Path::new("cond.cfg"), cfg);
    assert_eq!(strict.unconverted, 2, "{:#?}", strict.diagnostics);
    assert_eq!(strict.hard_errors(), 0, "{:#?}", strict.diagnostics);
    let errors: Vec<String> = strict
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with("cond.cfg:10:"), "{errors:#?}");
    assert!(errors[1].starts_with("cond.cfg:11:"), "{errors:#?}");
    assert!(
        strict
            .toml
            .contains("\"cond.cfg line 10: http-request deny deny_status 429 if abuse"),
        "{}",
        strict.toml
    );
    let base = base();
    let file = base.write("strict.toml", &strict.toml);
    let e = lb::config::load_with(&file, &opts(base.path())).expect_err("must not run");
    let unconverted: Vec<_> = e
        .errors()
        .filter(|d| d.path.starts_with("frontend.web.unconverted"))
        .collect();
    assert_eq!(unconverted.len(), 2, "{e}");
    assert_eq!(e.errors().count(), 2, "{e}");

    // `--drop-unsupported`: named, kept as comments, and the output runs (loudly).
    let c = lb::config::convert::convert_str_with(
        Path::new("cond.cfg"),
        cfg,
        lb::config::convert::ConvertOptions {
            drop_unsupported: true,
        },
    );
    assert_eq!(c.unconverted, 2);
    let w: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(w.len(), 4, "{w:#?}");
    assert!(w[1].contains("DROPPED (--drop-unsupported)"), "{w:#?}");
    assert!(
        w[0].contains("acl `abuse`: unknown fetch method 'fc_rtt'"),
        "{w:#?}"
    );
    assert!(
        w[1].contains("uses ACL `abuse`, which is not converted"),
        "{w:#?}"
    );
    assert!(w[2].contains("condition `{ fc_unacked gt 10 }`"), "{w:#?}");
    assert!(w[3].contains("uses ACL `abuse`"), "{w:#?}");
    assert!(
        c.toml.contains("\"deny if api !{ src 10.0.0.0/8 }\""),
        "{}",
        c.toml
    );
    let file = base.write("cond.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
}

/// `balance uri [whole]` carries over; `hash-type consistent` is what lb always does (a
/// note); another `hash-type` is named.
#[test]
fn balance_uri_and_hash_type() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
backend cache\n    balance uri whole\n    hash-type consistent\n    server c1 127.0.0.1:8081\n\
backend other\n    balance uri depth 2\n    hash-type map-based\n    server o1 127.0.0.1:8082\n";
    let c = convert_str(Path::new("uri.cfg"), cfg);
    assert!(c.toml.contains("balance = \"uri whole\""), "{}", c.toml);
    let w: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].contains("balance `uri depth 2` is not supported"),
        "{w:#?}"
    );
    assert!(w[1].contains("hash-type"), "{w:#?}");
    let base = base();
    let file = base.write("uri.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
}

/// `http-after-response` carries over.
#[test]
fn http_after_response_carries_over() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind 127.0.0.1:8080\n    http-after-response set-header Strict-Transport-Security max-age=600\n    default_backend app\n\
backend app\n    http-after-response del-header Server\n    server s1 127.0.0.1:8081\n";
    let c = convert_str(Path::new("after.cfg"), cfg);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    assert!(
        c.toml.contains(
            "http_after_response = [\n    \"set-header Strict-Transport-Security max-age=600\",\n]"
        ),
        "{}",
        c.toml
    );
    assert!(c.toml.contains("\"del-header Server\""), "{}", c.toml);
    let base = base();
    let file = base.write("after.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));
}

/// `lb convert` is linear in the length of a line (issue #19 item 9): one `acl` line with
/// many patterns converts completely, and 4x the words cost well under the 16x a quadratic
/// splitter would (best of three runs each, a generous bound against a loaded machine).
#[test]
fn long_lines_convert_in_linear_time() {
    fn cfg(words: usize) -> String {
        let patterns: Vec<String> = (0..words).map(|i| format!("/p{i}é")).collect();
        format!(
            "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind 127.0.0.1:8080\n    acl many path_beg {}\n    http-request deny if many\n    default_backend app\n\
backend app\n    server s1 127.0.0.1:8081\n",
            patterns.join(" ")
        )
    }
    fn best(text: &str) -> (std::time::Duration, lb::config::convert::Conversion) {
        let mut best = None;
        let mut conv = None;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let c = convert_str(Path::new("long.cfg"), text);
            let d = t.elapsed();
            best = Some(best.map_or(d, |b: std::time::Duration| b.min(d)));
            conv = Some(c);
        }
        (best.expect("ran"), conv.expect("ran"))
    }
    let small = cfg(25_000);
    let large = cfg(100_000);
    let (t_small, _) = best(&small);
    let (t_large, conv) = best(&large);
    assert!(!conv.has_errors(), "{:#?}", conv.diagnostics);
    assert!(conv.toml.contains("/p0é /p1é"), "first patterns kept");
    assert!(conv.toml.contains("/p99999é\""), "last pattern kept");
    let ratio = t_large.as_secs_f64() / t_small.as_secs_f64().max(1e-6);
    assert!(
        ratio < 10.0,
        "4x the words took {ratio:.1}x the time ({t_small:?} -> {t_large:?}): not linear"
    );
}

/// `on-marked-down shutdown-sessions` and `on-marked-up shutdown-backup-sessions` carry over
/// and load into the server model.
#[test]
fn on_marked_down_and_up_carry_over() {
    let cfg = "defaults\n    mode tcp\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend f\n    bind 127.0.0.1:8080\n    default_backend pool\n\
backend pool\n    server s1 127.0.0.1:8081 check on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions\n\
    server s2 127.0.0.1:8082 check backup\n";
    let conv = convert_str(Path::new("omd.cfg"), cfg);
    assert!(conv.diagnostics.is_empty(), "{:#?}", conv.diagnostics);
    assert!(
        conv.toml.contains(
            "s1 127.0.0.1:8081 check on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions"
        ),
        "{}",
        conv.toml
    );
    let base = base();
    let file = base.write("omd.toml", &conv.toml);
    let res = lb::config::load_with(&file, &opts(base.path()));
    assert_loads(&res);
    let (cfg, _) = res.expect("loads");
    let pool = cfg.backend("pool").expect("pool");
    assert!(pool.servers[0].shutdown_on_down && pool.servers[0].shutdown_backups_on_up);
    assert!(!pool.servers[1].shutdown_on_down && !pool.servers[1].shutdown_backups_on_up);
}

/// `tcp-request content` in a `mode tcp` backend converts into the backend and loads with
/// the backend's ACLs (HAProxy runs it once the backend is chosen); in a `mode http`
/// backend it is a load error, never dropped.
#[test]
fn backend_tcp_request_content_converts_and_loads() {
    let cfg = "defaults\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend smtp\n    mode tcp\n    bind *:2525\n    default_backend smtp\n\
backend smtp\n    mode tcp\n    acl internal src 10.0.0.0/8 127.0.0.1\n\
    tcp-request inspect-delay 2s\n    tcp-request content reject if ! internal\n\
    server s1 127.0.0.1:25\n";
    let conv = convert_str(Path::new("tcp.cfg"), cfg);
    assert!(!conv.has_errors(), "{:?}", conv.diagnostics);
    assert!(
        conv.toml.contains("[backend.smtp]")
            && conv.toml.contains("\"content reject if ! internal\""),
        "{}",
        conv.toml
    );
    let base = base();
    let (c, _) =
        lb::config::load_str(Path::new("t.toml"), &conv.toml, &opts(base.path())).expect("loads");
    let be = c
        .backends
        .iter()
        .find(|b| b.name == "smtp")
        .expect("backend");
    assert_eq!(be.tcp_request.len(), 1);
    assert_eq!(be.inspect_delay, Some(std::time::Duration::from_secs(2)));

    let http = conv.toml.replace("mode = \"tcp\"", "mode = \"http\"");
    let err = lb::config::load_str(Path::new("t.toml"), &http, &opts(base.path()))
        .expect_err("a mode http backend's tcp_request is refused");
    assert!(
        err.to_string()
            .contains("tcp_request rules in a mode http backend are not supported"),
        "{err}"
    );
}

/// Stick tables and their rules carry over (HAProxy's rate-limiting pattern, a table-only
/// backend included); a tcp-request rule on a stick-table fetch, which lb cannot evaluate
/// there yet, fails closed.
#[test]
fn stick_tables_and_tracking_carry_over() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend web\n    bind 127.0.0.1:8080\n\
    stick-table type ip size 100k expire 30s store http_req_rate(10s),conn_cur,gpc0\n\
    http-request track-sc0 src\n    http-request track-sc1 src table st_login if { path_beg /login }\n\
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100 }\n\
    http-request sc-inc-gpc0(0) if { path_beg /admin }\n    http-request sc-set-gpt0(1) 7\n\
    default_backend app\n\
backend app\n    server s1 127.0.0.1:8081\n\
backend st_login\n    stick-table type ip size 1m expire 10m store http_req_rate(1m)\n";
    let c = convert_str(Path::new("st.cfg"), cfg);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    for want in [
        "stick_table = \"type ip size 100k expire 30s store http_req_rate(10s),conn_cur,gpc0\"",
        "\"track-sc1 src table st_login if { path_beg /login }\"",
        "\"sc-inc-gpc0(0) if { path_beg /admin }\"",
        "\"sc-set-gpt0(1) 7\"",
        "stick_table = \"type ip size 1m expire 10m store http_req_rate(1m)\"",
    ] {
        assert!(c.toml.contains(want), "{want}: {}", c.toml);
    }
    let base = base();
    let file = base.write("st.toml", &c.toml);
    assert_loads(&lb::config::load_with(&file, &opts(base.path())));

    let tcp = "defaults\n    mode tcp\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend t\n    bind 127.0.0.1:8443\n    stick-table type ip size 1k store conn_rate(10s)\n\
    tcp-request connection reject if { src_conn_rate gt 10 }\n    default_backend b\n\
backend b\n    server s1 127.0.0.1:8444\n";
    let c = convert_str(Path::new("t.cfg"), tcp);
    assert_eq!(c.unconverted, 1, "{:#?}", c.diagnostics);
}

/// HAProxy's preprocessing, through the real `lb convert`: `${VAR}` / `${VAR-default}` from
/// the environment it runs in, `.if` blocks decided with HAProxy 2.6's predicates (lb has
/// no QUIC, so that block is skipped), `.notice` named in a warning, and the result loads.
#[test]
fn lb_convert_expands_environment_and_conditional_blocks() {
    let tmp = Tmp::new("pre");
    let cfg = tmp.write(
        "pre.cfg",
        "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
.notice \"converting for ${WHO-nobody}\"\n\
frontend web\n    bind \"${LB_TEST_BIND}\"\n\
.if feature(QUIC)\n    bind quic4@:443 ssl crt x.pem\n\
.elif version_atleast(2.4) && defined(LB_TEST_BIND)\n    http-request deny if { path_beg /admin }\n\
.else\n    http-request deny\n.endif\n    default_backend be\n\
backend be\n    server s1 ${LB_TEST_SERVER-127.0.0.1}:8081\n",
    );
    let out_path = tmp.path().join("out.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("convert")
        .arg(&cfg)
        .arg("-o")
        .arg(&out_path)
        .env("LB_TEST_BIND", "127.0.0.1:18080")
        .env_remove("LB_TEST_SERVER")
        .env_remove("WHO")
        .output()
        .expect("run lb convert");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(".notice: converting for nobody"),
        "{report}"
    );
    assert!(
        report.contains(
            "`$LB_TEST_BIND` expanded from lb convert's environment to `127.0.0.1:18080`"
        ),
        "{report}"
    );
    let toml = std::fs::read_to_string(&out_path).expect("output");
    assert!(toml.contains("\"127.0.0.1:18080\""), "{toml}");
    assert!(toml.contains("deny if { path_beg /admin }"), "{toml}");
    assert!(
        !toml.contains("\"deny\""),
        "the .else branch is skipped: {toml}"
    );
    assert!(
        toml.contains("skipped (conditional block of line 9): bind quic4@"),
        "{toml}"
    );
    assert!(toml.contains("127.0.0.1:8081"), "{toml}");
    let base = base();
    assert_loads(&lb::config::load_str(&out_path, &toml, &opts(base.path())));
}

/// HAProxy upgrades a `mode tcp` frontend's stream to HTTP when its backend is `mode http`:
/// lb serves such a frontend as `mode http`, with a warning; with `tcp-request` rules of its
/// own (which lb's HTTP path would not run) it stays a mode error.
#[test]
fn tcp_frontend_with_http_backend_is_served_as_http() {
    let cfg = "defaults\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend front\n    bind 127.0.0.1:8080\n    default_backend web\n\
backend web\n    mode http\n    server s1 127.0.0.1:8081\n";
    let conv = convert_str(Path::new("up.cfg"), cfg);
    assert!(!conv.has_errors(), "{:?}", conv.diagnostics);
    let base = base();
    let (c, warnings) =
        lb::config::load_str(Path::new("up.toml"), &conv.toml, &opts(base.path())).expect("loads");
    assert_eq!(c.frontends[0].mode, lb::config::model::Mode::Http);
    assert!(
        warnings.iter().any(|w| w
            .message
            .contains("served as mode http, as HAProxy upgrades")),
        "{warnings:?}"
    );
    let with_rules = conv.toml.replace(
        "default_backend = \"web\"",
        "default_backend = \"web\"\ntcp_request = [\"content reject if { src 10.0.0.0/8 }\"]",
    );
    let err = lb::config::load_str(Path::new("up.toml"), &with_rules, &opts(base.path()))
        .expect_err("tcp rules keep the mode error");
    assert!(
        err.to_string()
            .contains("is mode tcp but backend `web` is mode http"),
        "{err}"
    );
}

/// A frontend without `bind` (HAProxy accepts it; it receives nothing) is written as
/// comments with a warning, so the rest of the file converts and loads.
#[test]
fn frontend_without_bind_is_commented_out() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
frontend later\n    default_backend be\n\
frontend web\n    bind 127.0.0.1:8080\n    default_backend be\n\
backend be\n    server s1 127.0.0.1:8081\n";
    let conv = convert_str(Path::new("nobind.cfg"), cfg);
    assert!(!conv.has_errors(), "{:?}", conv.diagnostics);
    assert!(
        conv.diagnostics
            .iter()
            .any(|d| d.line == 6 && d.message.contains("no `bind` lb can listen on")),
        "{:?}",
        conv.diagnostics
    );
    assert!(conv.toml.contains("# [frontend.later]"), "{}", conv.toml);
    let base = base();
    let (c, _) =
        lb::config::load_str(Path::new("nb.toml"), &conv.toml, &opts(base.path())).expect("loads");
    assert_eq!(c.frontends.len(), 1);
    assert_eq!(c.frontends[0].name, "web");
}

/// `global` TLS and buffer settings land where lb keeps them: `ssl-default-bind-*` on each
/// `ssl` bind that does not set them, `crt-base`/`ca-base` in front of relative paths,
/// `tune.bufsize - tune.maxrewrite` and `tune.http.maxhdr` as each frontend's header
/// limits; `bind localhost:PORT` is the loopback; options are named without their
/// arguments; and the output loads.
#[test]
fn global_tls_and_buffer_defaults_carry_over() {
    let base = base();
    let certs = base.path().join("config/certs");
    let cfg = format!(
        "global\n    crt-base {0}\n    ca-base {0}\n\
    ssl-default-bind-ciphers ECDHE-RSA-AES128-GCM-SHA256\n\
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256\n\
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets\n\
    ssl-default-server-options no-sslv3\n    tune.bufsize 32768\n    tune.maxrewrite 2048\n    tune.http.maxhdr 64\n\
defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n    option abortonclose\n\
frontend web\n    bind localhost:8080 alpn h2,http/1.1\n    bind 127.0.0.1:8443 ssl crt site.pem\n\
    bind 127.0.0.1:9443 ssl crt myapp.pem ciphers ECDHE-ECDSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256\n    default_backend be\n\
backend be\n    option socks4 127.0.0.1:1080\n    server s1 127.0.0.1:8081 ssl verify none socks4 127.0.0.1:1080\n",
        certs.display()
    );
    let conv = convert_str(Path::new("g.cfg"), &cfg);
    assert!(!conv.has_errors(), "{:#?}", conv.diagnostics);
    let site = certs.join("site.pem");
    for want in [
        "\"127.0.0.1:8080\"".to_string(),
        format!(
            "\"127.0.0.1:8443 ssl crt {} ciphers ECDHE-RSA-AES128-GCM-SHA256 ciphersuites TLS_AES_128_GCM_SHA256 ssl-min-ver TLSv1.2 no-tls-tickets\"",
            site.display()
        ),
        "ciphers ECDHE-ECDSA-AES256-GCM-SHA384 ciphersuites".to_string(),
        "max_header_bytes = 30720".to_string(),
        "max_headers = 64".to_string(),
        "\"s1 127.0.0.1:8081 ssl verify none\"".to_string(),
    ] {
        assert!(conv.toml.contains(&want), "{want}\n{}", conv.toml);
    }
    let msgs: Vec<&str> = conv
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert!(
        msgs.contains(&"`option socks4` is not supported; kept as a comment"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("server option `socks4 127.0.0.1:1080` is not supported")),
        "{msgs:?}"
    );
    assert!(
        !msgs.iter().any(|m| m.contains("`127.0.0.1:1080` is not")),
        "{msgs:?}"
    );
    assert!(!msgs.iter().any(|m| m.contains("abortonclose")), "{msgs:?}");
    assert!(
        msgs.contains(&"ciphers: DHE-RSA-AES128-GCM-SHA256 not offered by rustls, left out as OpenSSL leaves out what it cannot offer"),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"`alpn` on a bind without `ssl` is ignored, as HAProxy does"),
        "{msgs:?}"
    );
    let (c, _) =
        lb::config::load_str(Path::new("g.toml"), &conv.toml, &opts(base.path())).expect("loads");
    let fe = &c.frontends[0];
    assert_eq!((fe.max_header_bytes, fe.max_headers), (30720, 64));
}

/// HAProxy's `cache` section, `http-request cache-use`, `http-response cache-store` and
/// `compression` lines convert into `[cache.NAME]`, the rule lists and `compression`, and
/// the result loads with the same settings.
#[test]
fn cache_and_compression_carry_over() {
    let cfg = "defaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n\
    compression algo gzip deflate\n    compression type text/plain text/html\n\n\
cache static\n    total-max-size 64\n    max-object-size 1048576\n    max-age 240\n\
    process-vary on\n    max-secondary-entries 5\n\n\
frontend web\n    bind 127.0.0.1:8080\n    http-request cache-use static if { path_beg /assets }\n\
    http-response cache-store static\n    http-response set-header X-Hit %[res.cache_hit]\n\
    default_backend app\n\
backend app\n    compression algo gzip\n    compression offload\n    server s1 127.0.0.1:8081\n";
    let c = convert_str(Path::new("cache.cfg"), cfg);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    for want in [
        "[cache.static]",
        "total_max_size = 64",
        "max_object_size = 1048576",
        "max_age = 240",
        "max_secondary_entries = 5",
        "\"cache-use static if { path_beg /assets }\"",
        "\"cache-store static\"",
        "\"algo gzip deflate\"",
        "\"type text/plain text/html\"",
        "\"offload\"",
    ] {
        assert!(c.toml.contains(want), "{want}: {}", c.toml);
    }
    let base = base();
    let file = base.write("cache.toml", &c.toml);
    let loaded = lb::config::load_with(&file, &opts(base.path()));
    assert_loads(&loaded);
    let (cfg, _) = loaded.expect("loads");
    let spec = &cfg.caches[0];
    assert_eq!(
        (
            spec.name.as_str(),
            spec.total_max_size,
            spec.max_object_size,
            spec.max_age,
            spec.process_vary,
            spec.max_secondary_entries
        ),
        ("static", 64 << 20, 1048576, 240, true, 5)
    );
    let be = cfg.backends.iter().find(|b| b.name == "app").expect("app");
    let comp = be.compression.as_ref().expect("backend compression");
    assert_eq!(comp.algos, vec![lb::config::model::CompAlgo::Gzip]);
    assert!(comp.offload);
}
