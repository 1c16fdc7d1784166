//! `lb convert` never emits a line `lb check` refuses (issue #12 item 3), and never fails
//! open (issue #15 item 1): every HAProxy keyword the key table knows, in every kind of
//! section, goes through `lb convert` and then the loader; a line is converted or kept as a
//! commented warning, and a rule that restricts access and cannot be converted keeps the
//! output from running.
//!
//! Run: `cargo test -p lb-userspace --test config_roundtrip`.

mod config_support;

use std::path::Path;

use config_support::*;
use lb::config::convert::{Conversion, ConvertOptions, convert_str, convert_str_with};
use lb::config::keys::{PROXY_KEYS, Section};

/// A valid HAProxy line for each keyword of the key table.
fn sample(keyword: &str) -> &'static str {
    match keyword {
        "mode" => "mode http",
        "bind" => "bind 127.0.0.1:9090",
        "acl" => "acl a path_beg /a",
        "http-request" => "http-request set-header X-A b",
        "redirect" => "redirect scheme https code 301 if !{ ssl_fc }",
        "http-response" => "http-response set-header X-A b",
        "http-after-response" => "http-after-response set-header X-A b",
        "tcp-request" => "tcp-request inspect-delay 5s",
        "use_backend" => "use_backend be if { path_beg /x }",
        "default_backend" => "default_backend be",
        "timeout" => "timeout queue 5s",
        "contimeout" => "contimeout 5s",
        "clitimeout" => "clitimeout 5s",
        "srvtimeout" => "srvtimeout 5s",
        "balance" => "balance leastconn",
        "hash-type" => "hash-type consistent",
        "cookie" => "cookie SRV insert indirect nocache",
        "http-check" => "http-check expect status 200",
        "default-server" => "default-server inter 3s check",
        "server" => "server s9 127.0.0.1:8089 check",
        "server-template" => "server-template t 2 127.0.0.1:8090 check",
        "errorfile" => "errorfile 200 config/errors/gslb_health.http",
        "option" => "option forwardfor",
        "no" => "no option redispatch",
        "retries" => "retries 2",
        "maxconn" => "maxconn 100",
        "log" => "log global",
        "stats" => "stats uri /haproxy?stats",
        "stick-table" => "stick-table type ip size 1k expire 30s store http_req_rate(10s)",
        "compression" => "compression algo gzip deflate",
        other => panic!("no sample line for `{other}`: add one"),
    }
}

/// A small haproxy.cfg with `line` in the section of kind `at`.
fn cfg_with(at: Section, line: &str) -> String {
    let put = |s: Section| {
        if s == at {
            format!("    {line}\n")
        } else {
            String::new()
        }
    };
    format!(
        "global\n    nbthread 2\n\ndefaults\n    mode http\n    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n{}\n\
frontend fe\n    bind 127.0.0.1:8080\n{}    default_backend be\n\n\
backend be\n{}    server s1 127.0.0.1:8081\n\n\
listen li\n    bind 127.0.0.1:8082\n{}    server l1 127.0.0.1:8083\n",
        put(Section::Defaults),
        put(Section::Frontend),
        put(Section::Backend),
        put(Section::Listen),
    )
}

fn convert(text: &str) -> Conversion {
    convert_str(Path::new("rt.cfg"), text)
}

fn messages(c: &Conversion) -> Vec<String> {
    c.diagnostics.iter().map(|d| d.to_string()).collect()
}

/// Loads converted TOML against a scratch base: the errors, as `path: message`.
fn load_errors(base: &Tmp, toml: &str) -> Vec<String> {
    let file = base.write("rt.toml", toml);
    match lb::config::load_with(&file, &opts(base.path())) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .errors()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect(),
    }
}

#[test]
fn every_keyword_in_every_section_round_trips() {
    let base = base();
    let mut cases = 0;
    for key in PROXY_KEYS {
        for kw in key.haproxy {
            for section in Section::ALL {
                let line = sample(kw);
                let text = cfg_with(section, line);
                let c = convert(&text);
                let what = format!("`{line}` in {}", section.name());
                assert_eq!(c.hard_errors(), 0, "{what}: {:#?}", messages(&c));
                let misplaced = messages(&c).iter().any(|m| m.contains("is not allowed in"));
                assert_eq!(
                    misplaced,
                    !key.allowed_in(section),
                    "{what}: the key table says `{}` is {}allowed there: {:#?}",
                    key.key,
                    if key.allowed_in(section) { "" } else { "not " },
                    messages(&c)
                );
                // Only a rule that restricts access (misplaced, as HAProxy refuses too) is
                // refused, as an `unconverted` entry; anything else loads.
                let errs = load_errors(&base, &c.toml);
                assert_eq!(
                    errs.len(),
                    c.unconverted,
                    "{what}: lb check refuses what lb convert wrote:\n{}\n{errs:#?}",
                    c.toml
                );
                assert!(
                    errs.iter().all(|e| e.contains(".unconverted[")),
                    "{what}: {errs:#?}"
                );
                cases += 1;
            }
        }
    }
    assert!(cases > 100, "{cases} cases");
}

/// The `[global]` keywords of the key table, in `global`, convert and load.
#[test]
fn every_global_keyword_round_trips() {
    let base = base();
    for key in lb::config::keys::GLOBAL_KEYS {
        for kw in key.haproxy {
            let line = match *kw {
                "nbthread" => "nbthread 2".to_string(),
                "cpu-map" => "cpu-map auto:1/1-2 0 1".to_string(),
                "tune.ssl.cachesize" => "tune.ssl.cachesize 1000".to_string(),
                "maxconn" => "maxconn 4096".to_string(),
                "user" => "user nobody".to_string(),
                "uid" => "uid 65534".to_string(),
                "group" => "group nogroup".to_string(),
                "gid" => "gid 65534".to_string(),
                "chroot" => "chroot /var/empty".to_string(),
                "pidfile" => "pidfile /run/haproxy.pid".to_string(),
                "ulimit-n" => "ulimit-n 8192".to_string(),
                "hard-stop-after" => "hard-stop-after 30s".to_string(),
                "log" => "log 127.0.0.1:514 len 1024 format rfc5424 local0 info notice".to_string(),
                "stats" => format!(
                    "stats socket {}/lb.sock mode 600 level admin",
                    base.path().display()
                ),
                other => panic!("no sample line for global `{other}`: add one"),
            };
            let text = cfg_with(Section::Frontend, "")
                .replace("global\n    nbthread 2\n", &format!("global\n    {line}\n"));
            let c = convert(&text);
            assert!(c.diagnostics.is_empty(), "`{line}`: {:#?}", messages(&c));
            assert!(
                c.toml.contains(&format!("{} = ", key.key)),
                "`{line}` is not `{}`:\n{}",
                key.key,
                c.toml
            );
            assert_eq!(
                load_errors(&base, &c.toml),
                Vec::<String>::new(),
                "`{line}`"
            );
        }
    }
}

/// A `cache` section and the rules that use it convert into `[cache.NAME]` and load; every
/// keyword of the cache key table converts.
#[test]
fn cache_sections_and_compression_round_trip() {
    let base = base();
    let mut lines = Vec::new();
    for key in lb::config::keys::CACHE_KEYS {
        for kw in key.haproxy {
            lines.push(match *kw {
                "total-max-size" => "total-max-size 4",
                "max-object-size" => "max-object-size 100000",
                "max-age" => "max-age 240",
                "process-vary" => "process-vary on",
                "max-secondary-entries" => "max-secondary-entries 5",
                other => panic!("no sample line for cache `{other}`: add one"),
            });
        }
    }
    let text = format!(
        "{}
cache c1
    {}
",
        cfg_with(
            Section::Backend,
            "http-request cache-use c1
    http-response cache-store c1
    compression algo gzip br
    compression type text/html
    compression offload"
        ),
        lines.join("\n    ")
    );
    let c = convert(&text);
    assert!(c.diagnostics.is_empty(), "{:#?}", messages(&c));
    for want in [
        "[cache.c1]",
        "total_max_size = 4",
        "process_vary = true",
        "max_secondary_entries = 5",
        "\"cache-use c1\"",
        "\"cache-store c1\"",
        "\"algo gzip br\"",
        "\"offload\"",
    ] {
        assert!(c.toml.contains(want), "{want}:\n{}", c.toml);
    }
    assert_eq!(
        load_errors(&base, &c.toml),
        Vec::<String>::new(),
        "{}",
        c.toml
    );
    // a rule naming no cache section is refused
    let c = convert(&cfg_with(Section::Backend, "http-request cache-use nope"));
    let errs = load_errors(&base, &c.toml);
    assert!(
        errs.iter().any(|e| e.contains("no [cache.nope]")),
        "{errs:#?}"
    );
    // what lb does not do is named
    let c = convert(&cfg_with(Section::Frontend, "compression direction both"));
    assert!(
        messages(&c).iter().any(|m| m.contains("responses only")),
        "{:#?}",
        messages(&c)
    );
}

/// The cases issue #12 names.
#[test]
fn named_cases_convert_or_warn() {
    let base = base();
    // `http-response` in defaults: "not allowed in defaults", like `http-request`.
    let c = convert(&cfg_with(
        Section::Defaults,
        "http-response set-header X-A b",
    ));
    let m = messages(&c);
    assert!(
        m.iter()
            .any(|m| m.contains("`http-response` is not allowed in defaults")),
        "{m:#?}"
    );
    assert!(!m.iter().any(|m| m.contains("unknown keyword")), "{m:#?}");
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());

    // `del-header NAME -m …`: lb has no match methods there: a warning and a comment.
    let c = convert(&cfg_with(
        Section::Frontend,
        "http-request del-header X-Debug -m beg",
    ));
    assert_eq!(c.hard_errors(), 0, "{:#?}", messages(&c));
    assert!(
        messages(&c)
            .iter()
            .any(|m| m.contains("warning") && m.contains("`-m`")),
        "{:#?}",
        messages(&c)
    );
    assert!(
        c.toml
            .contains("# UNSUPPORTED (line 12): http-request del-header X-Debug -m beg")
    );
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());

    // An unconditional `use_backend X` always matches: written with `if TRUE`.
    let c = convert(&cfg_with(Section::Frontend, "use_backend be"));
    assert!(c.diagnostics.is_empty(), "{:#?}", messages(&c));
    assert!(c.toml.contains("\"be if TRUE\""), "{}", c.toml);
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());

    // A bind address the loader refuses is never written: a host name (valid HAProxy lb
    // lacks) is named and kept as a comment; a bad port is an error.
    let c = convert(&cfg_with(Section::Frontend, "bind lb.example.com:9091"));
    assert_eq!(c.hard_errors(), 0, "{:#?}", messages(&c));
    assert!(
        c.toml
            .contains("# UNSUPPORTED (line 12): bind lb.example.com:9091")
    );
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());
    // `localhost` is the loopback (issue #15: HAProxy binds it).
    let c = convert(&cfg_with(Section::Frontend, "bind localhost:9091"));
    assert_eq!(c.hard_errors(), 0, "{:#?}", messages(&c));
    assert!(c.toml.contains("\"127.0.0.1:9091\""), "{}", c.toml);
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());
    let c = convert(&cfg_with(Section::Frontend, "bind 127.0.0.1:99999"));
    assert!(c.hard_errors() > 0, "{:#?}", messages(&c));

    // `return file`: named and kept as a comment (a 200 answer restricts nothing).
    let c = convert(&cfg_with(
        Section::Frontend,
        "http-request return content-type text/plain file /etc/motd if { path /motd }",
    ));
    assert_eq!(c.hard_errors(), 0, "{:#?}", messages(&c));
    assert_eq!(c.unconverted, 0);
    assert!(
        c.toml
            .contains("# UNSUPPORTED (line 12): http-request return")
    );
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());
}

/// Rules HAProxy refuses are errors in `lb convert` too, with their column, and nothing is
/// written (issue #19 item 8).
#[test]
fn strict_rule_grammar_in_convert() {
    for (line, col, msg) in [
        (
            "http-request allow deny unless { hdr(authorization) -m found }",
            24,
            "http-request allow: unexpected `deny`",
        ),
        ("http-request allow junk", 24, "unexpected `junk`"),
        (
            "http-request deny if { path -qi /a }",
            33,
            "'-qi' is not a valid ACL option",
        ),
        (
            "http-request deny if { path -m nope /a }",
            36,
            "unknown matching method 'nope'",
        ),
        ("http-request deny if nosuch", 26, "no such ACL"),
        ("http-request set-header X-A", 32, "missing header value"),
        ("tcp-request content reject junk", 32, "unexpected `junk`"),
        ("use_backend be junk if TRUE", 20, "unexpected `junk`"),
        (
            "acl bad path_beg -qi /x",
            22,
            "'-qi' is not a valid ACL option",
        ),
    ] {
        let c = convert(&cfg_with(Section::Frontend, line));
        let errors: Vec<String> = c
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "`{line}`: {errors:#?}");
        assert!(
            errors[0].starts_with(&format!("rt.cfg:12:{col}:")) && errors[0].contains(msg),
            "`{line}`: {errors:#?}"
        );
        assert_eq!(c.unconverted, 0, "`{line}`");
        assert!(c.hard_errors() > 0, "`{line}`");
    }
}

/// Access rules that cannot be converted never fail open (issue #15 item 1).
#[test]
fn access_rules_fail_closed() {
    let base = base();
    for line in [
        "http-request auth realm admin if { path_beg /admin }",
        "http-request tarpit if { src 10.0.0.0/8 }",
        "http-request reject if { sc_http_req_rate(0) gt 10 }",
        "http-request deny deny_status 429 if { fc_rtt gt 10 }",
        "http-request silent-drop",
        "http-request redirect location /login append-slash",
        "http-request return status 403 file /etc/denied.html",
        "http-response deny if { res.hdr(x-secret) -m found } { fc_rtt gt 0 }",
        "tcp-request connection reject if { src_conn_rate gt 10 }",
        "tcp-request session reject",
    ] {
        let c = convert(&cfg_with(Section::Frontend, line));
        assert_eq!(c.hard_errors(), 0, "`{line}`: {:#?}", messages(&c));
        assert_eq!(c.unconverted, 1, "`{line}`: {:#?}", messages(&c));
        let e = c
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .expect("an error");
        assert_eq!(e.line, 12, "`{line}`");
        assert!(e.message.contains("restricts access"), "{e}");
        assert!(
            c.toml.contains(&format!("\"rt.cfg line 12: {line} -- ")),
            "`{line}`:\n{}",
            c.toml
        );
        // lb check refuses the output, naming the HAProxy line.
        let errs = load_errors(&base, &c.toml);
        assert_eq!(errs.len(), 1, "`{line}`: {errs:#?}");
        assert!(
            errs[0].starts_with("frontend.fe.unconverted[0]: a rule that restricts access")
                && errs[0].contains("rt.cfg line 12"),
            "{errs:#?}"
        );
        // --drop-unsupported writes a runnable file, loudly.
        let d = convert_str_with(
            Path::new("rt.cfg"),
            &cfg_with(Section::Frontend, line),
            ConvertOptions {
                drop_unsupported: true,
            },
        );
        assert!(!d.has_errors(), "{:#?}", d.diagnostics);
        assert_eq!(d.unconverted, 1);
        assert!(
            d.toml.contains("# DROPPED ACCESS RULE (line 12)"),
            "{}",
            d.toml
        );
        assert_eq!(load_errors(&base, &d.toml), Vec::<String>::new());
    }
    // An ACL that cannot be converted, used by a deny rule (and by a routing rule, which is
    // only a warning).
    let text = cfg_with(
        Section::Frontend,
        "acl abuse fc_rtt gt 100\n    http-request deny if abuse\n    use_backend be if abuse",
    );
    let c = convert(&text);
    assert_eq!(c.unconverted, 1, "{:#?}", messages(&c));
    assert_eq!(c.diagnostics.iter().filter(|d| d.is_error()).count(), 1);
}

/// `lb convert -o`: exit 2 with the (not runnable) file written when an access rule is
/// unconverted; `--drop-unsupported` exits 0 and says what it dropped.
#[test]
fn run_convert_exit_codes() {
    let tmp = Tmp::new("rt");
    let input = tmp.write(
        "in.cfg",
        &cfg_with(Section::Frontend, "http-request auth realm x"),
    );
    let out_path = tmp.0.join("out.toml");
    let mut out = Vec::new();
    let rc = lb::config::convert::run_convert(&input, Some(&out_path), &mut out);
    let report = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(rc, 2, "{report}");
    assert!(
        report.contains("NOT RUNNABLE: 1 rule that restricts access"),
        "{report}"
    );
    let written = std::fs::read_to_string(&out_path).expect("written");
    assert!(written.contains("unconverted = ["), "{written}");

    let mut out = Vec::new();
    let rc = lb::config::convert::run_convert_with(
        &input,
        Some(&out_path),
        ConvertOptions {
            drop_unsupported: true,
        },
        &mut out,
    );
    let report = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(rc, 0, "{report}");
    assert!(
        report.contains("WARNING: --drop-unsupported dropped 1 rule that restricts access"),
        "{report}"
    );
}

/// `check port N` / `addr A` are not converted, so `check` is dropped for that server (lb
/// would probe the traffic port); `default-server check` and `option forwardfor except|header`
/// are converted.
#[test]
fn checks_and_forwardfor() {
    let base = base();
    let c = convert(&cfg_with(
        Section::Backend,
        "server s2 127.0.0.1:8085 check port 9000\n    server s3 127.0.0.1:8086 addr 127.0.0.9 check",
    ));
    assert!(c.toml.contains("\"s2 127.0.0.1:8085\""), "{}", c.toml);
    assert!(c.toml.contains("\"s3 127.0.0.1:8086\""), "{}", c.toml);
    let m = messages(&c);
    assert!(
        m.iter()
            .any(|m| m.contains("`port 9000`") && m.contains("`check` is dropped")),
        "{m:#?}"
    );
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());

    // default-server check: in the backend for the servers after it; in defaults for all.
    let c = convert(&cfg_with(
        Section::Backend,
        "server s0 127.0.0.1:8084\n    default-server check\n    server s2 127.0.0.1:8085\n    server s3 127.0.0.1:8086 no-check",
    ));
    assert!(c.diagnostics.is_empty(), "{:#?}", messages(&c));
    assert!(c.toml.contains("\"s0 127.0.0.1:8084\""), "{}", c.toml);
    assert!(c.toml.contains("\"s2 127.0.0.1:8085 check\""), "{}", c.toml);
    assert!(c.toml.contains("\"s3 127.0.0.1:8086\""), "{}", c.toml);
    assert!(c.toml.contains("\"s1 127.0.0.1:8081 check\""), "{}", c.toml);
    let c = convert(&cfg_with(Section::Defaults, "default-server check"));
    assert!(c.toml.contains("\"l1 127.0.0.1:8083 check\""), "{}", c.toml);
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());
    let (cfg, _) =
        lb::config::load_with(&base.write("dc.toml", &c.toml), &opts(base.path())).expect("loads");
    let be = cfg.backends.iter().find(|b| b.name == "be").expect("be");
    assert!(be.servers.iter().all(|s| s.check), "{:?}", be.servers);

    // option forwardfor except NET header NAME [if-none]
    let c = convert(&cfg_with(
        Section::Frontend,
        "option forwardfor except 10.0.0.0/8 header X-Real-IP if-none",
    ));
    assert!(c.diagnostics.is_empty(), "{:#?}", messages(&c));
    assert!(
        c.toml.contains(
            "\"add-header X-Real-IP %[src] unless { src 10.0.0.0/8 } || { hdr(X-Real-IP) -m found }\""
        ),
        "{}",
        c.toml
    );
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());
    let c = convert(&cfg_with(
        Section::Defaults,
        "option forwardfor except 127.0.0.0/8",
    ));
    assert!(c.diagnostics.is_empty(), "{:#?}", messages(&c));
    assert_eq!(
        c.toml
            .matches("\"add-header X-Forwarded-For %[src] unless { src 127.0.0.0/8 }\"")
            .count(),
        2,
        "the frontend and the listen: {}",
        c.toml
    );
    assert_eq!(load_errors(&base, &c.toml), Vec::<String>::new());
}
