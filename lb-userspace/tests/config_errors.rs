//! Bad input: every case asserts the exact message at the exact FILE:LINE:COL.

mod config_support;

use config_support::*;

/// Loads `text` as `bad.toml` and returns the error lines with the temp path shortened.
fn errors(text: &str) -> Vec<String> {
    let base = base();
    let file = base.write("bad.toml", text);
    let prefix = format!("{}:", file.display());
    match lb::config::load_with(&file, &opts(base.path())) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .errors()
            .map(|d| d.to_string().replacen(&prefix, "bad.toml:", 1))
            .collect(),
    }
}

/// The whole error list must match.
fn check(text: &str, expected: &[&str]) {
    let got = errors(text);
    assert_eq!(got, expected, "\n--- input ---\n{text}");
}

const DEFAULTS: &str = "[defaults]\nmode = \"http\"\ntimeout = { client = \"5s\", connect = \"5s\", server = \"5s\" }\n";

fn with_defaults(rest: &str) -> String {
    format!("{DEFAULTS}{rest}")
}

const BE: &str = "\n[backend.all]\nserver = [\"s1 127.0.0.1:80\"]\n";

#[test]
fn unknown_top_level_key() {
    check(
        "[frontends.web]\nbind = \"*:80\"\n",
        &["bad.toml:1:2: frontends: unknown key `frontends`; did you mean `frontend`?"],
    );
}

#[test]
fn use_backed_typo() {
    check(
        &with_defaults("[frontend.web]\nbind = \"*:80\"\nuse_backed = [\"all if TRUE\"]\n"),
        &[
            "bad.toml:6:1: frontend.web.use_backed: unknown key `use_backed`; did you mean `use_backend`?",
        ],
    );
}

#[test]
fn defualt_backend_typo() {
    check(
        &with_defaults("[frontend.web]\nbind = \"*:80\"\ndefualt_backend = \"all\"\n"),
        &[
            "bad.toml:6:1: frontend.web.defualt_backend: unknown key `defualt_backend`; did you mean `default_backend`?",
        ],
    );
}

#[test]
fn undefined_default_backend_with_suggestion() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\ndefault_backend = \"al\"\n{BE}"
        )),
        &[
            "bad.toml:6:20: frontend.web.default_backend: backend `al` is not defined; did you mean `all`?",
        ],
    );
}

#[test]
fn undefined_use_backend() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nuse_backend = [\"x if TRUE\", \"alll if TRUE\"]\n{BE}"
        )),
        &[
            "bad.toml:6:17: frontend.web.use_backend[0]: backend `x` is not defined",
            "bad.toml:6:30: frontend.web.use_backend[1]: backend `alll` is not defined; did you mean `all`?",
        ],
    );
}

#[test]
fn undefined_acl_in_condition() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nacl = [\"app1 path_end -i /app1\"]\nuse_backend = [\"all if app2\"]\n{BE}"
        )),
        &["bad.toml:7:24: frontend.web.use_backend[0]: undefined ACL `app2`; did you mean `app1`?"],
    );
}

#[test]
fn duplicate_server_name() {
    check(
        &with_defaults("[backend.b]\nserver = [\"s1 127.0.0.1:80\", \"s1 127.0.0.1:81\"]\n"),
        &[
            "bad.toml:5:31: backend.b.server[1]: duplicate server name `s1` (already defined at line 5)",
        ],
    );
}

#[test]
fn duplicate_section_name() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\ndefault_backend = \"all\"\n[listen.web]\nbind = \"*:81\"\nserver = \"s 127.0.0.1:1\"\n{BE}"
        )),
        &[
            "bad.toml:7:9: listen.web: duplicate name `web`: a frontend or listen section with this name is already defined at line 4",
        ],
    );
}

#[test]
fn bad_port() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"1.2.3.4:99999\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &["bad.toml:5:17: frontend.web.bind: invalid port `99999` (expected 1 to 65535)"],
    );
}

#[test]
fn bare_ipv6_bind() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = [\"*:80\", \"2001:db8::1:80\"]\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:5:18: frontend.web.bind[1]: IPv6 addresses must be written in brackets, e.g. `[2001:db8::1]:80`, not `2001:db8::1:80`",
        ],
    );
}

#[test]
fn bind_without_port() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"10.0.0.1\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &["bad.toml:5:17: frontend.web.bind: missing port in `10.0.0.1` (write HOST:PORT)"],
    );
}

#[test]
fn bind_option_typo() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:443 ssl crt config/certs/site.pem alpm h2\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &["bad.toml:5:45: frontend.web.bind: unknown bind option `alpm`; did you mean `alpn`?"],
    );
}

#[test]
fn ssl_without_crt() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:443 ssl\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &["bad.toml:5:15: frontend.web.bind: `ssl` needs at least one `crt PEM`"],
    );
}

#[test]
fn missing_certificate() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:443 ssl crt config/certs/nope.pem\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:5:23: frontend.web.bind: certificate `config/certs/nope.pem`: cannot read: No such file or directory (os error 2)",
        ],
    );
}

#[test]
fn certificate_without_key() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let base = base();
    base.write("config/certs/nokey.pem", &ck.cert.pem());
    let file = base.write(
        "bad.toml",
        &with_defaults(&format!("[frontend.web]\nbind = [\"*:443 ssl crt config/certs/nokey.pem\"]\ndefault_backend = \"all\"\n{BE}")),
    );
    let err = lb::config::load_with(&file, &opts(base.path())).expect_err("must fail");
    let lines: Vec<String> = err.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        lines,
        [format!(
            "{}:5:24: frontend.web.bind[0]: certificate `config/certs/nokey.pem`: no private key in the file (expected a PEM certificate chain and its private key)",
            file.display()
        )]
    );
}

#[test]
fn certificate_garbage() {
    let base = base();
    base.write("config/certs/junk.pem", "hello\n");
    let file = base.write(
        "bad.toml",
        &with_defaults(&format!("[frontend.web]\nbind = \"*:443 ssl crt config/certs/junk.pem\"\ndefault_backend = \"all\"\n{BE}")),
    );
    let err = lb::config::load_with(&file, &opts(base.path())).expect_err("must fail");
    let lines: Vec<String> = err.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        lines,
        [format!(
            "{}:5:23: frontend.web.bind: certificate `config/certs/junk.pem`: no certificate in the file (expected a PEM certificate chain and its private key)",
            file.display()
        )]
    );
}

#[test]
fn certificate_key_mismatch() {
    let a = rcgen::generate_simple_self_signed(vec!["a".to_string()]).expect("rcgen");
    let b = rcgen::generate_simple_self_signed(vec!["b".to_string()]).expect("rcgen");
    let base = base();
    base.write(
        "config/certs/mix.pem",
        &format!("{}{}", a.cert.pem(), b.signing_key.serialize_pem()),
    );
    let file = base.write(
        "bad.toml",
        &with_defaults(&format!("[frontend.web]\nbind = \"*:443 ssl crt config/certs/mix.pem\"\ndefault_backend = \"all\"\n{BE}")),
    );
    let err = lb::config::load_with(&file, &opts(base.path())).expect_err("must fail");
    let lines: Vec<String> = err.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        lines,
        [format!(
            "{}:5:23: frontend.web.bind: certificate `config/certs/mix.pem`: the private key does not match the certificate",
            file.display()
        )]
    );
}

#[test]
fn unresolvable_server() {
    check(
        &with_defaults(
            "[backend.b]\nserver = [\"s1 127.0.0.1:80\", \"web7 nosuchhost.invalid:80\"]\n",
        ),
        &[
            "bad.toml:5:36: backend.b.server[1]: server `web7`: cannot resolve `nosuchhost.invalid`: Name or service not known",
        ],
    );
}

#[test]
fn weight_out_of_range() {
    check(
        &with_defaults("[backend.b]\nserver = \"s1 127.0.0.1:80 weight 300\"\n"),
        &["bad.toml:5:34: backend.b.server: weight must be a number from 0 to 256, not `300`"],
    );
}

#[test]
fn server_option_typo() {
    check(
        &with_defaults("[backend.b]\nserver = \"s1 127.0.0.1:80 chek\"\n"),
        &["bad.toml:5:27: backend.b.server: unknown server option `chek`; did you mean `check`?"],
    );
}

#[test]
fn http_response_rules() {
    let fe = |rules: &str| {
        with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\ndefault_backend = \"all\"\n{rules}{BE}"
        ))
    };
    check(
        &fe(
            "http_response = [\"set-header Strict-Transport-Security max-age=31536000\", \"del-header Server\", \"set-status 503 reason Maintenance if { status 502 }\", \"deny deny_status 500 if { res.hdr(x-internal) -m found }\"]\n",
        ),
        &[],
    );
    check(
        &fe("http_request = [\"set-status 200\"]\n"),
        &[
            "bad.toml:7:18: frontend.web.http_request[0]: `set-status` is an http-response action, not an http-request one",
        ],
    );
    check(
        &fe("http_response = [\"redirect location /x\"]\n"),
        &[
            "bad.toml:7:19: frontend.web.http_response[0]: `redirect` is an http-request action, not an http-response one",
        ],
    );
    check(
        &fe("http_response = [\"set-headr X y\"]\n"),
        &[
            "bad.toml:7:19: frontend.web.http_response[0]: unsupported http-response action `set-headr`; did you mean `set-header`?",
        ],
    );
    check(
        &fe("http_request = [\"deny if { status 500 }\"]\n"),
        &[
            "bad.toml:7:23: frontend.web.http_request[0]: the condition uses `status`, a response fetch: only http_response rules can",
        ],
    );
    check(
        &fe("http_request = [\"set-header X-S %[res.hdr(server)]\"]\n"),
        &[
            "bad.toml:7:17: frontend.web.http_request[0]: `%[res.hdr…]` is a response fetch: only http_response rules can use it",
        ],
    );
    check(
        &fe("http_response = [\"set-status 200 reason \\\"A\\u0001\\\"\"]\n"),
        &[
            "bad.toml:7:18: frontend.web.http_response[0]: reason `A\u{1}` is no valid reason phrase (visible ASCII, spaces and tabs)",
        ],
    );
    check(
        &fe("http_response = [\"set-status 1000\"]\n"),
        &[
            "bad.toml:7:30: frontend.web.http_response[0]: status must be a number from 100 to 999, not `1000`",
        ],
    );
    check(
        "[frontend.t]\nbind = \"*:80\"\ndefault_backend = \"b\"\nhttp_response = [\"del-header Server\"]\n[backend.b]\nserver = [\"s1 127.0.0.1:80\"]\n",
        &["bad.toml:4:18: frontend.t.http_response[0]: http_response rules need mode http"],
    );
}

#[test]
fn rewrite_and_return_actions() {
    let fe = |rules: &str| {
        with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\ndefault_backend = \"all\"\n{rules}{BE}"
        ))
    };
    check(
        &fe(
            "http_request = ['replace-path ^/api/(.*) /\\1', \"set-query x=%[src]\", { action = \"return\", status = 503, content_type = \"text/plain\", string = \"down 100%\" }, { action = \"replace-header\", name = \"X-A\", regex = \"^a(.*)\", replace = \"b\\\\1\" }]\n",
        ),
        &[],
    );
    check(
        &fe("http_request = [\"replace-path ^/api/(.* /x\"]\n"),
        &["bad.toml:7:31: frontend.web.http_request[0]: regex `^/api/(.*`: error: unclosed group"],
    );
    check(
        &fe("http_request = [\"return status 200 string ok\"]\n"),
        &[
            "bad.toml:7:36: frontend.web.http_request[0]: a `return` body needs a `content-type` (as in HAProxy)",
        ],
    );
    check(
        &fe("http_request = [\"return status 200 file /etc/motd\"]\n"),
        &[
            "bad.toml:7:36: frontend.web.http_request[0]: `return file` is not supported (use `string` or `lf-string`)",
        ],
    );
    check(
        &fe("http_response = [\"set-path /x\"]\n"),
        &[
            "bad.toml:7:19: frontend.web.http_response[0]: `set-path` is an http-request action, not an http-response one",
        ],
    );
}

#[test]
fn server_tls_options() {
    let be = |line: &str| with_defaults(&format!("[backend.b]\nserver = \"{line}\"\n"));
    check(
        &be("s1 127.0.0.1:443 ssl"),
        &[
            "bad.toml:5:28: backend.b.server: server `s1`: `ssl` verifies the server's certificate by default, but no `ca-file` is given: add `ca-file PATH`, or `verify none` where the network is trusted (HAProxy refuses this line too)",
        ],
    );
    check(&be("s1 127.0.0.1:443 ssl verify none"), &[]);
    check(
        &be("s1 127.0.0.1:443 verify none"),
        &["bad.toml:5:28: backend.b.server: `verify` needs `ssl` on the server line"],
    );
    check(
        &be("s1 127.0.0.1:443 ssl verify maybe"),
        &["bad.toml:5:39: backend.b.server: `verify maybe`: expected `none` or `required`"],
    );
    let e = errors(&be("s1 127.0.0.1:443 ssl ca-file nowhere.pem"));
    assert!(
        e.len() == 1
            && e[0].starts_with("bad.toml:5:40: backend.b.server: CA file ")
            && e[0].ends_with("nowhere.pem: No such file or directory (os error 2)"),
        "{e:?}"
    );
    check(
        &be("s1 127.0.0.1:443 ssl verify none sni req.hdr(host)"),
        &[
            "bad.toml:5:48: backend.b.server: sni `req.hdr(host)`: only a fixed name, `sni str(NAME)`, is supported",
        ],
    );
    // TLS origination in mode tcp too (userspace; forcing XDP says why).
    check(
        "[backend.t]\nserver = \"s1 127.0.0.1:443 ssl verify none\"\n",
        &[],
    );
    check(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[frontend.edge]\nmode = \"tcp\"\ntier = \"xdp\"\nbind = \"203.0.113.10:443\"\ndefault_backend = \"pool\"\n\n[backend.pool]\nmode = \"tcp\"\nserver = \"p1 10.0.0.1:443 ssl verify none\"\n",
        &[
            "bad.toml:6:8: frontend.edge.tier: this frontend cannot be served by XDP: it needs TLS toward servers (ssl) (served in userspace when `tier` is \"auto\")",
        ],
    );
}

#[test]
fn proxy_protocol_options() {
    check(
        &with_defaults(
            "[frontend.f]\nbind = \"*:80 accept-proxy\"\ndefault_backend = \"b\"\n[backend.b]\nserver = \"s1 127.0.0.1:80 send-proxy-v2\"\n",
        ),
        &[],
    );
    check(
        &with_defaults("[backend.b]\nserver = \"s1 127.0.0.1:80 proto h2 send-proxy\"\n"),
        &[
            "bad.toml:5:36: backend.b.server: `send-proxy` with `proto h2` is not supported: an HTTP/2 connection carries many clients' requests, a PROXY header names one",
        ],
    );
}

/// The PROXY protocol needs userspace: forcing XDP says why.
#[test]
fn proxy_protocol_is_not_for_xdp() {
    check(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[frontend.edge]\nmode = \"tcp\"\ntier = \"xdp\"\nbind = \"203.0.113.10:443 accept-proxy\"\ndefault_backend = \"pool\"\n\n[backend.pool]\nmode = \"tcp\"\nserver = \"p1 10.0.0.1:443 send-proxy\"\n",
        &[
            "bad.toml:6:8: frontend.edge.tier: this frontend cannot be served by XDP: it needs the PROXY protocol from clients (accept-proxy), the PROXY protocol toward servers (send-proxy) (served in userspace when `tier` is \"auto\")",
        ],
    );
}

#[test]
fn balance_uri() {
    check(
        &with_defaults("[backend.b]\nbalance = \"uri whole\"\nserver = \"s1 127.0.0.1:80\"\n"),
        &[],
    );
    check(
        &with_defaults("[backend.b]\nbalance = \"uri depth 3\"\nserver = \"s1 127.0.0.1:80\"\n"),
        &[
            "bad.toml:5:12: backend.b.balance: balance uri: option `depth` is not supported (only `whole`)",
        ],
    );
    check(
        "[backend.b]\nbalance = \"uri\"\nserver = \"s1 127.0.0.1:80\"\n",
        &[
            "bad.toml:2:11: backend.b.balance: balance uri needs mode http (a tcp backend has no URI)",
        ],
    );
}

#[test]
fn server_proto() {
    check(
        &with_defaults("[backend.b]\nserver = \"s1 127.0.0.1:80 proto h3\"\n"),
        &["bad.toml:5:33: backend.b.server: `proto h3`: expected `h1` or `h2`"],
    );
    check(
        &with_defaults("[backend.b]\nmode = \"tcp\"\nserver = \"s1 127.0.0.1:80 proto h2\"\n"),
        &[
            "bad.toml:6:33: backend.b.server: server `s1`: `proto h2` needs `mode http` (a tcp backend relays bytes)",
        ],
    );
    // The structured form.
    check(
        &with_defaults(
            "[backend.b]\nserver = [{ name = \"s1\", addr = \"127.0.0.1:80\", proto = \"h2\" }]\n",
        ),
        &[],
    );
}

#[test]
fn balance_typo() {
    check(
        &with_defaults("[backend.b]\nbalance = \"roundrobbin\"\nserver = \"s1 127.0.0.1:80\"\n"),
        &[
            "bad.toml:5:12: backend.b.balance: unknown balance algorithm `roundrobbin`; did you mean `roundrobin`?",
        ],
    );
}

#[test]
fn cookie_without_insert() {
    check(
        &with_defaults("[backend.b]\ncookie = \"SRV\"\nserver = \"s1 127.0.0.1:80\"\n"),
        &[
            "bad.toml:5:14: backend.b.cookie: missing `insert` (only `cookie NAME insert [indirect] [nocache]` is supported)",
        ],
    );
}

#[test]
fn bad_duration_unit() {
    check(
        "[defaults]\ntimeout = { client = \"20x\", connect = \"5s\", server = \"5s\" }\n",
        &[
            "bad.toml:2:23: defaults.timeout.client: invalid duration `20x`: unknown unit `x` (expected us, ms, s, m, h or d)",
        ],
    );
}

#[test]
fn unknown_timeout_name() {
    check(
        "[defaults]\ntimeout = { clinet = \"20s\", connect = \"5s\", server = \"5s\" }\n",
        &[
            "bad.toml:2:13: defaults.timeout.clinet: unknown timeout `clinet`; did you mean `client`?",
        ],
    );
}

#[test]
fn timeout_line_syntax_bad_value() {
    check(
        "[defaults]\ntimeout = [\"client 20s\", \"server five\"]\n",
        &[
            "bad.toml:2:34: defaults.timeout[1]: invalid duration `five`: expected a number with an optional unit (us, ms, s, m, h, d)",
        ],
    );
}

#[test]
fn deny_status_out_of_range() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nhttp_request = [\"deny deny_status 999\"]\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:35: frontend.web.http_request[0]: deny_status must be a number from 200 to 599, not `999`",
        ],
    );
}

#[test]
fn redirect_bad_code() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nhttp_request = \"redirect scheme https code 305\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:44: frontend.web.http_request: redirect code must be 301, 302, 303, 307 or 308, not `305`",
        ],
    );
}

#[test]
fn http_action_typo() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nhttp_request = [\"allow\", \"denny\"]\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:27: frontend.web.http_request[1]: unsupported http-request action `denny`; did you mean `deny`?",
        ],
    );
}

/// `set-header` / `add-header` values are log-format strings, checked at load.
#[test]
fn header_value_format() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nhttp_request = [\"set-header X-A %[src]\", \"add-header X-B 'sni=%[ssl_fc_snii]'\", \"set-header X-C 100%\"]\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:58: frontend.web.http_request[1]: header value `sni=%[ssl_fc_snii]`: unknown fetch method 'ssl_fc_snii'",
            "bad.toml:6:97: frontend.web.http_request[2]: header value `100%`: truncated text after '%' (write '%%' for a percent sign)",
        ],
    );
}

#[test]
fn forced_xdp_with_content_inspection() {
    check(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[frontend.edge]\nmode = \"tcp\"\ntier = \"xdp\"\nbind = \"203.0.113.10:443\"\ntcp_request = [\"inspect-delay 5s\", \"content accept\"]\ndefault_backend = \"pool\"\n\n[backend.pool]\nmode = \"tcp\"\nserver = \"p1 10.0.0.1:443\"\n",
        &[
            "bad.toml:6:8: frontend.edge.tier: this frontend cannot be served by XDP: it needs tcp_request content inspection (served in userspace when `tier` is \"auto\")",
        ],
    );
}

#[test]
fn xdp_tier_on_http_frontend() {
    check(
        &with_defaults(&format!(
            "[dataplane]\ninterfaces = \"eth0\"\n[frontend.web]\ntier = \"xdp\"\nbind = \"10.0.0.1:80\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:7:8: frontend.web.tier: tier \"xdp\" needs mode tcp: XDP does not look at HTTP",
        ],
    );
}

#[test]
fn interface_does_not_exist() {
    check(
        "[dataplane]\ninterfaces = [\"eth0\", \"eht1\"]\n",
        &[
            "bad.toml:2:24: dataplane.interfaces[1]: network interface `eht1` does not exist; did you mean `eth1`?",
        ],
    );
}

#[test]
fn maglev_size_not_prime() {
    check(
        "[dataplane]\ninterfaces = [\"eth0\"]\nmaglev_table_size = 65536\n",
        &[
            "bad.toml:3:21: dataplane.maglev_table_size: maglev_table_size must be a prime of at least 251 (e.g. 65537), not 65536",
        ],
    );
}

#[test]
fn mode_typo() {
    check(
        "[defaults]\nmode = \"htp\"\n",
        &[
            "bad.toml:2:8: defaults.mode: unknown mode `htp` (expected \"tcp\" or \"http\"); did you mean `http`?",
        ],
    );
}

#[test]
fn frontend_without_bind() {
    check(
        &with_defaults(&format!("[frontend.web]\ndefault_backend = \"all\"\n{BE}")),
        &[
            "bad.toml:4:11: frontend.web: no `bind`: a frontend needs at least one address to listen on",
        ],
    );
}

#[test]
fn mode_mismatch() {
    check(
        &with_defaults(
            "[frontend.web]\nbind = \"*:80\"\ndefault_backend = \"raw\"\n[backend.raw]\nmode = \"tcp\"\nserver = \"s 127.0.0.1:1\"\n",
        ),
        &[
            "bad.toml:6:20: frontend.web.default_backend: frontend `web` is mode http but backend `raw` is mode tcp",
        ],
    );
}

#[test]
fn errorfile_unreadable() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nerrorfile = [\"503 /nonexistent/503.http\"]\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:19: frontend.web.errorfile[0]: cannot read errorfile `/nonexistent/503.http`: No such file or directory (os error 2)",
        ],
    );
}

#[test]
fn errorfile_bad_code() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nerrorfile = {{ code = 299, path = \"x\" }}\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:22: frontend.web.errorfile: errorfile status must be one of 200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 431, 500, 501, 502, 503, 504, not `299`",
        ],
    );
}

#[test]
fn server_in_frontend() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nserver = \"s1 127.0.0.1:80\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:10: frontend.web.server: `server` is not allowed in a [frontend]; it belongs in a [backend] or [listen] section",
        ],
    );
}

#[test]
fn public_admin_without_token() {
    check(
        "[global]\nadmin = \"0.0.0.0:9100\"\n",
        &["bad.toml:2:9: global.admin: a non-loopback admin address needs `admin_token`"],
    );
}

#[test]
fn toml_syntax_error() {
    let got = errors("[frontend.web]\nbind = \"*:80\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("bad.toml:2:"), "{got:?}");
}

#[test]
fn bad_prefix_length() {
    check(
        "[dataplane]\ninterfaces = \"eth0\"\ndeny_src = [\"10.0.0.0/33\"]\n",
        &["bad.toml:3:23: dataplane.deny_src[0]: invalid prefix length `33` (0 to 32)"],
    );
}

#[test]
fn table_item_key_typo() {
    check(
        &with_defaults("[backend.b]\nserver = [{ name = \"s1\", adr = \"127.0.0.1:80\" }]\n"),
        &["bad.toml:5:26: backend.b.server[0].adr: unknown key `adr`; did you mean `addr`?"],
    );
}

#[test]
fn http_request_in_tcp_mode() {
    check(
        "[defaults]\ntimeout = { client = \"5s\", connect = \"5s\", server = \"5s\" }\n[frontend.t]\nbind = \"*:9000\"\nhttp_request = \"deny\"\ndefault_backend = \"b\"\n[backend.b]\nserver = \"s 127.0.0.1:1\"\n",
        &["bad.toml:5:16: frontend.t.http_request: http_request rules need mode http"],
    );
}

#[test]
fn non_string_item() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = [80]\ndefault_backend = \"all\"\n{BE}"
        )),
        &["bad.toml:5:9: frontend.web.bind[0]: expected a string (HAProxy line syntax) or a table"],
    );
}

#[test]
fn duplicate_vip() {
    check(
        &with_defaults(&format!(
            "[frontend.a]\nbind = \"*:80\"\ndefault_backend = \"all\"\n[frontend.b]\nbind = \"0.0.0.0:80\"\ndefault_backend = \"all\"\n{BE}"
        )),
        &["bad.toml:8:9: frontend.b.bind: 0.0.0.0:80 is already bound by frontend `a`"],
    );
}

#[test]
fn unconditional_use_backend() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nuse_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:19: frontend.web.use_backend: use_backend `all` has no `if`/`unless` condition; use `default_backend = \"all\"` for the fallback",
        ],
    );
}

#[test]
fn unknown_option() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\noption = [\"forwardfor\", \"fowardfor\"]\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:26: frontend.web.option[1]: unsupported option `fowardfor`; did you mean `forwardfor`?",
        ],
    );
}

#[test]
fn nbsrv_of_undefined_backend() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nacl = [\"down nbsrv(alll) lt 1\"]\ndefault_backend = \"all\"\n{BE}"
        )),
        &[
            "bad.toml:6:20: frontend.web.acl[0]: backend `alll` in nbsrv() is not defined; did you mean `all`?",
        ],
    );
}

#[test]
fn check_table_typo() {
    check(
        &with_defaults(
            "[backend.b]\ncheck = { interval = \"2s\", rize = 2 }\nserver = \"s 127.0.0.1:1 check\"\n",
        ),
        &["bad.toml:5:28: backend.b.check.rize: unknown key `rize`; did you mean `rise`?"],
    );
}

#[test]
fn condition_in_table_item_column() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nacl = \"app1 path /a\"\nuse_backend = {{ backend = \"all\", if = \"app1 ap2\" }}\n{BE}"
        )),
        &["bad.toml:7:45: frontend.web.use_backend: undefined ACL `ap2`"],
    );
}

#[test]
fn negated_anonymous_acl_is_not_an_acl_name() {
    check(
        &with_defaults(&format!(
            "[frontend.web]\nbind = \"*:80\"\nhttp_request = [\"redirect scheme https if !{{ ssl_fc }} !nope\"]\ndefault_backend = \"all\"\n{BE}"
        )),
        &["bad.toml:6:56: frontend.web.http_request[0]: undefined ACL `nope`"],
    );
    let got = errors(&with_defaults(&format!(
        "[frontend.web]\nbind = \"*:80\"\nhttp_request = [\"redirect scheme https if !{{ ssl_fc }}\"]\ndefault_backend = \"all\"\n{BE}"
    )));
    assert!(got.iter().all(|g| !g.contains("undefined ACL")), "{got:#?}");
}

/// Problems the ACL engine finds are mapped from its byte offset to the exact column, in
/// lines and in tables. Only the location is asserted: the wording is the engine's.
#[test]
fn acl_engine_errors_point_at_the_exact_column() {
    let tail = "default_backend = \"b\"\n[backend.b]\nserver = \"s 127.0.0.1:1\"\n";
    for (body, prefix) in [
        (
            "acl = [\"ok path /a\", \"bad pathh /a\"]\n",
            "bad.toml:5:27: frontend.f.acl[1]: ",
        ),
        (
            "acl = { name = \"bad\", fetch = \"path\", flags = \"-m zz\", values = [\"/a\"] }\n",
            "bad.toml:5:51: frontend.f.acl: ",
        ),
        (
            "http_request = \"deny if { path -m nope /x }\"\n",
            "bad.toml:5:35: frontend.f.http_request: ",
        ),
        (
            "http_request = \"deny if {path -i /admin}\"\n",
            "bad.toml:5:25: frontend.f.http_request: ",
        ),
    ] {
        let text =
            format!("[defaults]\nmode = \"http\"\n[frontend.f]\nbind = \"*:80\"\n{body}{tail}");
        let got = errors(&text);
        assert!(
            got.len() == 1 && got[0].starts_with(prefix) && got[0].len() > prefix.len(),
            "expected one error at {prefix:?}, got {got:#?}"
        );
    }
}

#[test]
fn wrong_value_type() {
    check(
        "[backend.b]\nretries = \"three\"\n",
        &["bad.toml:2:11: backend.b.retries: expected an integer, found string \"three\""],
    );
}

#[test]
fn section_is_not_a_table() {
    check(
        "[backend]\nb = 5\n",
        &["bad.toml:2:5: backend.b: expected a table, found integer `5`"],
    );
}

#[test]
fn duplicate_key() {
    check(
        "[frontend.f]\nbind = \"*:80\"\nbind = \"*:81\"\n",
        &["bad.toml:3:1: duplicate key `bind` in table `frontend.f`"],
    );
}

#[test]
fn duplicate_table() {
    check(
        "[dataplane]\ninterfaces = [\"eth0\"]\n[dataplane]\nxdp_mode = \"native\"\n",
        &["bad.toml:3:1: invalid table header: duplicate key `dataplane` in document root"],
    );
}

#[test]
fn flag_must_be_boolean() {
    check(
        "[frontend.f]\nbind = { addr = \"*:80\", ssl = \"yes\" }\n",
        &["bad.toml:2:31: frontend.f.bind.ssl: `ssl` must be true or false"],
    );
}

#[test]
fn global_key_typo() {
    check(
        "[global]\nthreds = 2\n",
        &["bad.toml:2:1: global.threds: unknown key `threds`; did you mean `threads`?"],
    );
}

#[test]
fn cpu_map_must_be_auto_or_available_cpus() {
    check(
        "[global]\ncpu_map = \"all\"\n",
        &[
            "bad.toml:2:11: global.cpu_map: `\"all\"`: expected \"auto\" or a list of CPU numbers, e.g. [0, 1]",
        ],
    );
    check(
        "[global]\ncpu_map = [0, -1]\n",
        &[
            "bad.toml:2:11: global.cpu_map: `-1` is not a CPU number (expected \"auto\" or a list of CPU numbers, e.g. [0, 1])",
        ],
    );
    let allowed = lb::cpus::describe(&lb::cpus::allowed());
    let unavailable = format!(
        "bad.toml:2:11: global.cpu_map: CPU 1023 is not available to lb on this host (it may run on {allowed})"
    );
    check("[global]\ncpu_map = [1023]\n", &[unavailable.as_str()]);
}

#[test]
fn redirect_target_is_a_log_format_string() {
    let errs = errors(&with_defaults(
        "[frontend.f]\nbind = \"127.0.0.1:80\"\nhttp_request = \"redirect location /a%20b\"\ndefault_backend = \"all\"\n[backend.all]\nserver = [\"s1 127.0.0.1:80\"]\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("redirect target `/a%20b`") && errs[0].contains("'%20b'"),
        "{errs:#?}"
    );
}

#[test]
fn dynamic_use_backend_names_are_checked_for_syntax_only() {
    let cfg = |name: &str| {
        with_defaults(&format!(
            "[frontend.f]\nbind = \"127.0.0.1:80\"\nuse_backend = \"{name} if TRUE\"\ndefault_backend = \"all\"{BE}"
        ))
    };
    // No backend is named be_<anything> here: that is a per-request matter.
    assert!(errors(&cfg("be_%[req.hdr(x-be),lower]")).is_empty());
    let errs = errors(&cfg("be_%[nope()]"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("backend name `be_%[nope()]`") && errs[0].contains("nope"),
        "{errs:#?}"
    );
}

#[test]
fn xdp_vip_family_mismatch() {
    check(
        "[dataplane]\ninterfaces = \"eth0\"\n[frontend.e]\nmode = \"tcp\"\nbind = [\"203.0.113.1:443\", \"[2001:db8::1]:443\"]\ndefault_backend = \"p\"\n[backend.p]\nmode = \"tcp\"\nserver = \"s 10.0.0.1:443\"\n",
        &[
            "bad.toml:5:29: frontend.e.bind[1]: VIP [2001:db8::1]:443 and every server of backend `p` are of different address families: XDP NAT cannot cross them",
        ],
    );
}

#[test]
fn too_many_xdp_vips() {
    let binds: Vec<String> = (1..=65).map(|i| format!("\"203.0.113.{i}:443\"")).collect();
    let got = errors(&format!(
        "[dataplane]\ninterfaces = \"eth0\"\n[frontend.e]\nmode = \"tcp\"\nbind = [{}]\ndefault_backend = \"p\"\n[backend.p]\nmode = \"tcp\"\nserver = \"s 10.0.0.1:443\"\n",
        binds.join(", ")
    ));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].ends_with("frontend.e.bind[64]: too many XDP VIPs: the data path holds at most 64"),
        "{got:#?}"
    );
}

#[test]
fn udp_bind_outside_the_xdp_tier() {
    check(
        &with_defaults(&format!(
            "[frontend.dns]\nmode = \"tcp\"\nbind = [\"udp@127.0.0.1:53\"]\ndefault_backend = \"all\"\n{}",
            "\n[backend.all]\nmode = \"tcp\"\nserver = [\"s1 127.0.0.1:53\"]\n"
        )),
        &[
            "bad.toml:6:10: frontend.dns.bind[0]: a `udp@` bind is a UDP VIP, served only by the XDP tier (mode tcp, a [dataplane] section, nothing to inspect)",
        ],
    );
}

/// Rule lines are parsed as strictly as HAProxy parses them (issue #19 item 8): extra words
/// are errors at their column (`allow deny unless …` is not `allow unless …`), and so are
/// ACL flag typos and bad values.
#[test]
fn rule_lines_are_exact() {
    check(
        &(with_defaults(
            "[frontend.web]\nbind = \"*:80\"\nhttp_request = [\n  \"allow deny unless { hdr(authorization) -m found }\",\n  \"allow junk\",\n  \"deny if { path -qi /a }\",\n  \"deny if { path -m nope /a }\",\n  \"del-header X-A junk\",\n]\ndefault_backend = \"all\"\n",
        ) + BE),
        &[
            "bad.toml:7:10: frontend.web.http_request[0]: unexpected `deny`",
            "bad.toml:8:10: frontend.web.http_request[1]: unexpected `junk`",
            "bad.toml:9:19: frontend.web.http_request[2]: '-qi' is not a valid ACL option. Please use '--' before any pattern beginning with a '-'",
            "bad.toml:10:22: frontend.web.http_request[3]: unknown matching method 'nope'",
            "bad.toml:11:19: frontend.web.http_request[4]: unexpected `junk`",
        ],
    );
    check(
        &(with_defaults(
            "[frontend.web]\nbind = \"*:80\"\nhttp_response = [\"allow x\"]\nhttp_after_response = [\"allow if TRUE x\"]\ndefault_backend = \"all\"\n",
        ) + BE),
        &[
            "bad.toml:6:25: frontend.web.http_response[0]: unexpected `x`",
            // juxtaposition is AND: `x` is an ACL name, and none is defined
            "bad.toml:7:39: frontend.web.http_after_response[0]: undefined ACL `x`",
        ],
    );
}

#[test]
fn on_marked_down_and_up_take_only_haproxy_actions() {
    check(
        &with_defaults(
            "[backend.all]\nserver = [\"s1 127.0.0.1:80 on-marked-down mark-backup-down\", \"s2 127.0.0.1:81 on-marked-up shutdown-sessions\"]\n",
        ),
        &[
            "bad.toml:5:43: backend.all.server[0]: `on-marked-down` takes `shutdown-sessions`, not `mark-backup-down`",
            "bad.toml:5:92: backend.all.server[1]: `on-marked-up` takes `shutdown-backup-sessions`, not `shutdown-sessions`",
        ],
    );
}
