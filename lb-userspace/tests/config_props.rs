//! Property tests: no config byte makes lb panic. Any text through the TOML loader, and any
//! haproxy.cfg through `lb convert` and then the loader, ends in a value or in diagnostics,
//! never in a panic (issue #19, item 7). The case counts are bounded so the suite stays
//! fast; the generators put arbitrary Unicode (multibyte and full-width characters, quotes,
//! backslashes, brackets, colons) where words, addresses and conditions go.
//!
//! Run: `cargo test -p lb-userspace --test config_props`.

mod config_support;

use std::path::Path;

use config_support::*;
use lb::config::convert::convert_str;
use proptest::prelude::*;

/// Characters that stress the parsers: separators they split on, quoting, escapes, and
/// multibyte look-alikes of them (full-width colon and brackets, ideographic space, é).
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec![
            ':', '：', '[', ']', '［', '］', '{', '}', '(', ')', ',', '/', '@', '%', '-', '.',
            '"', '\'', '\\', '#', ' ', '\t', '　', 'é', 'ü', '€', '𝄞', '\u{0301}', '\u{a0}',
            '*', '!', '|', 'x', 'a', '0', '1', '9',
        ]),
        1 => any::<char>(),
    ]
}

fn nasty_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), 0..max).prop_map(|v| v.into_iter().collect())
}

/// A word that is sometimes a real keyword or address, sometimes noise.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "*:80",
            "127.0.0.1:8080",
            "[::1]:443",
            "a:1é",
            "*:80：",
            "if",
            "unless",
            "{",
            "}",
            "!",
            "or",
            "path_beg",
            "hdr(host)",
            "-i",
            "-m",
            "-qi",
            "found",
            "deny",
            "allow",
            "redirect",
            "location",
            "set-header",
            "del-header",
            "return",
            "status",
            "ssl",
            "crt",
            "alpn",
            "h2",
            "check",
            "weight",
            "backup",
            "inter",
            "2s",
            "%[src]",
            "udp@",
            "tcp@",
            "ipv6@",
            "content",
            "accept",
            "reject",
            "insert",
            "SRV",
        ])
        .prop_map(str::to_string),
        nasty_string(12),
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 0..8).prop_map(|w| w.join(" "))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML config whose directive values are generated lines.
fn toml_config() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "bind",
            "acl",
            "http_request",
            "http_response",
            "tcp_request",
            "use_backend",
            "timeout",
            "option",
            "errorfile",
            "deny_src",
        ]),
        prop::collection::vec(line(), 1..4),
        line(),
        line(),
        prop::sample::select(vec!["http", "tcp", "ht：tp"]),
    )
        .prop_map(|(key, values, server, check, mode)| {
            let list: Vec<String> = values.iter().map(|v| toml_str(v)).collect();
            format!(
                "[defaults]\nmode = {}\n\n[frontend.web]\nbind = [\"127.0.0.1:8080\"]\n{key} = [{}]\n\
                 default_backend = \"pool\"\n\n[backend.pool]\nserver = [{}]\ncheck = {}\n",
                toml_str(mode),
                list.join(", "),
                toml_str(&format!("s1 {server}")),
                toml_str(&check),
            )
        })
}

/// A haproxy.cfg whose lines are generated, inside real sections.
fn haproxy_config() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "bind",
                    "acl",
                    "http-request",
                    "http-response",
                    "tcp-request",
                    "use_backend",
                    "server",
                    "timeout",
                    "option",
                    "balance",
                    "cookie",
                    "default-server",
                    "redirect",
                    "errorfile",
                    "http-check",
                    "mode",
                    "log",
                ]),
                line(),
            ),
            1..6,
        ),
        nasty_string(20),
    )
        .prop_map(|(lines, junk)| {
            let body: String = lines
                .iter()
                .map(|(k, l)| format!("    {k} {l}\n"))
                .collect();
            format!(
                "global\n    nbthread 2\n\ndefaults\n    mode http\n    timeout client 5s\n\
                 timeout connect 5s\n    timeout server 5s\n\nfrontend web\n    bind *:8080\n{body}\
                 {junk}\n    default_backend pool\n\nbackend pool\n{body}    server s1 127.0.0.1:8081\n"
            )
        })
}

/// A scratch base without certificates (cheap to make per case): interfaces eth0, eth1.
fn light_base() -> Tmp {
    let t = Tmp::new("props");
    std::fs::create_dir_all(t.0.join("net/eth0")).expect("iface");
    std::fs::create_dir_all(t.0.join("net/eth1")).expect("iface");
    t
}

fn load(base: &Tmp, text: &str) {
    let path = base.path().join("props.toml");
    // A value or diagnostics: both are fine; a panic fails the property.
    let _ = lb::config::load_str(&path, text, &opts(base.path()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn toml_directives_never_panic(text in toml_config()) {
        let base = light_base();
        load(&base, &text);
    }

    #[test]
    fn toml_bytes_never_panic(base_text in toml_config(), at in any::<prop::sample::Index>(), noise in nasty_string(8)) {
        // Noise anywhere in the file, on a character boundary.
        let cut = base_text
            .char_indices()
            .map(|(i, _)| i)
            .nth(at.index(base_text.chars().count().max(1)))
            .unwrap_or(base_text.len());
        let text = format!("{}{noise}{}", &base_text[..cut], &base_text[cut..]);
        let base = light_base();
        load(&base, &text);
    }

    #[test]
    fn haproxy_lines_never_panic(cfg in haproxy_config()) {
        let conv = convert_str(Path::new("props.cfg"), &cfg);
        let base = light_base();
        // Also what `lb check` does with what convert wrote.
        load(&base, &conv.toml);
    }
}

/// The two inputs of issue #19 item 7 exit with a diagnostic, not 101.
#[test]
fn reported_inputs_are_diagnostics() {
    let base = light_base();
    let text = "[frontend.web]\nbind = \"a:1é\"\ndefault_backend = \"b\"\n[backend.b]\nserver = \"s 127.0.0.1:1\"\n";
    let err = lb::config::load_str(&base.path().join("a.toml"), text, &opts(base.path()))
        .expect_err("not an address");
    assert!(
        err.errors()
            .any(|d| d.path == "frontend.web.bind" && d.line == 2),
        "{err}"
    );

    // Through lb convert: HAProxy refuses the port too, so it is an error at the line, and
    // nothing runnable is written.
    let cfg = "frontend web\n    bind *:80：\n    default_backend b\nbackend b\n    server s 127.0.0.1:1\n";
    let conv = convert_str(Path::new("fw.cfg"), cfg);
    assert!(
        conv.diagnostics
            .iter()
            .any(|d| d.is_error() && d.line == 2 && d.message.contains("invalid port `80：`")),
        "{:#?}",
        conv.diagnostics
    );
    assert!(conv.hard_errors() > 0);
}
