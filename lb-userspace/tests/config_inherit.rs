//! Defaults inheritance (HAProxy rules), durations, built-in defaults and tier decisions.

mod config_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config_support::*;
use lb::config::model::*;

fn load(text: &str) -> (Config, Vec<lb::config::Diagnostic>) {
    let base = base();
    let file = base.write("t.toml", text);
    match lb::config::load_with(&file, &opts(base.path())) {
        Ok(x) => x,
        Err(e) => panic!("{e}\n--- input ---\n{text}"),
    }
}

const S: fn(u64) -> Option<Duration> = |s| Some(Duration::from_secs(s));

#[test]
fn durations() {
    let p = lb::config::parse_duration;
    assert_eq!(p("1500"), Ok(Duration::from_millis(1500)));
    assert_eq!(p("10us"), Ok(Duration::from_micros(10)));
    assert_eq!(p("10ms"), Ok(Duration::from_millis(10)));
    assert_eq!(p("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(p("10m"), Ok(Duration::from_secs(600)));
    assert_eq!(p("10h"), Ok(Duration::from_secs(36_000)));
    assert_eq!(p("10d"), Ok(Duration::from_secs(864_000)));
    assert!(p("10 s").is_err());
    assert!(p("ten").is_err());
    assert!(p("").is_err());
    // integers in TOML are milliseconds too, and line syntax works
    let (cfg, _) = load(
        "[defaults]\ntimeout = { client = 1500 }\n[backend.b]\ntimeout = [\"connect 250ms\", \"server 2m\", \"http-request 3s\", \"queue 4s\", \"tunnel 1h\", \"check 900\"]\nserver = \"s 127.0.0.1:1\"\n",
    );
    let t = cfg.backends[0].timeouts;
    assert_eq!(t.client, Some(Duration::from_millis(1500)));
    assert_eq!(t.connect, Some(Duration::from_millis(250)));
    assert_eq!(t.server, S(120));
    assert_eq!(t.http_request, S(3));
    assert_eq!(t.queue, S(4));
    assert_eq!(t.tunnel, S(3600));
    assert_eq!(t.check, Some(Duration::from_millis(900)));
}

#[test]
fn builtin_defaults() {
    let (cfg, warnings) = load(
        "[dataplane]\ninterfaces = \"eth0\"\n[frontend.f]\nbind = \"10.0.0.1:80\"\ndefault_backend = \"b\"\n[backend.b]\nserver = \"s 127.0.0.1:1 check\"\n",
    );
    assert_eq!(
        cfg.global.admin,
        "127.0.0.1:9100".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(cfg.global.hash_seed, lb::config::DEFAULT_HASH_SEED);
    assert_eq!(cfg.global.log_format, LogFormat::Haproxy);
    assert_eq!(cfg.global.threads, None);
    let dp = cfg.dataplane.as_ref().expect("dataplane");
    assert_eq!(dp.pin_path, Path::new("/sys/fs/bpf/lb/t"));
    assert_eq!(dp.xdp_mode, XdpMode::Auto);
    assert_eq!(dp.maglev_table_size, 65537);
    assert_eq!(dp.conntrack_size, 262_144);
    let f = &cfg.frontends[0];
    assert_eq!(f.mode, Mode::Tcp, "HAProxy's default mode is tcp");
    assert_eq!(f.tier, Tier::Xdp);
    assert_eq!(f.max_header_bytes, 16_384);
    let b = &cfg.backends[0];
    assert_eq!(b.balance, Balance::RoundRobin);
    assert_eq!(b.retries, 3);
    assert!(!b.redispatch);
    assert_eq!(b.check, CheckSpec::default());
    assert_eq!(b.servers[0].weight, 1);
    assert!(b.servers[0].check);
    // the backend serves an XDP frontend only: no timeout warning for it
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn defaults_are_inherited_and_overridden_per_setting() {
    let (cfg, warnings) = load(
        r#"
[defaults]
mode = "http"
timeout = { client = "20s", connect = "5s", server = "10s", check = "1500ms" }
balance = "source"
retries = 5
option = ["forwardfor", "redispatch", "httplog"]
maxconn = 6000
errorfile = "503 config/errors/gslb_health.http"
check = { interval = "3s", rise = 4, http = "GET /up" }
cookie = "SRV insert indirect"
default_backend = "b1"

[frontend.f]
bind = "*:80"
timeout = { client = "1m" }

[backend.b1]
server = "s 127.0.0.1:1 check"

[backend.b2]
balance = "leastconn"
retries = 0
timeout = { server = "30s" }
check = { fall = 5, timeout = "500ms" }
option = ["no redispatch"]
server = "s 127.0.0.1:2 check"
"#,
    );
    assert!(warnings.is_empty(), "{warnings:#?}");
    let f = &cfg.frontends[0];
    assert_eq!(f.mode, Mode::Http);
    assert_eq!(f.timeouts.client, S(60));
    assert_eq!(f.timeouts.connect, S(5));
    assert!(f.forwardfor);
    assert!(f.log);
    assert_eq!(f.maxconn, Some(6000));
    assert!(f.errorfiles.contains_key(&503));
    assert_eq!(f.default_backend.as_deref(), Some("b1"));

    let b1 = &cfg.backends[0];
    assert_eq!(b1.mode, Mode::Http);
    assert_eq!(b1.balance, Balance::Source);
    assert_eq!(b1.retries, 5);
    assert!(b1.redispatch && b1.forwardfor);
    assert_eq!(b1.timeouts.server, S(10));
    assert_eq!(b1.check.interval, S(3).expect("d"));
    assert_eq!(b1.check.rise, 4);
    assert_eq!(b1.check.fall, 3);
    assert_eq!(
        b1.check.timeout,
        Duration::from_millis(1500),
        "timeout check applies"
    );
    assert!(matches!(&b1.check.kind, CheckKind::Http { path, .. } if path == "/up"));
    assert_eq!(b1.cookie.as_ref().map(|c| c.name.as_str()), Some("SRV"));
    assert_eq!(
        b1.servers[0].cookie.as_deref(),
        Some("s"),
        "cookie value defaults to the server name"
    );

    let b2 = &cfg.backends[1];
    assert_eq!(b2.balance, Balance::LeastConn);
    assert_eq!(b2.retries, 0);
    assert!(!b2.redispatch);
    assert_eq!(b2.timeouts.server, S(30));
    assert_eq!(b2.timeouts.connect, S(5));
    assert_eq!(
        b2.check.interval,
        S(3).expect("d"),
        "check settings merge per setting"
    );
    assert_eq!(b2.check.fall, 5);
    assert_eq!(b2.check.timeout, Duration::from_millis(500));
}

#[test]
fn listen_is_frontend_plus_backend() {
    let (cfg, _) = load(
        "[defaults]\nmode = \"http\"\ntimeout = { client = \"1s\", connect = \"1s\", server = \"1s\" }\n[listen.app]\nbind = \"*:8080\"\nbalance = \"source\"\nserver = [\"a 127.0.0.1:1\", \"b 127.0.0.1:2 backup\"]\n",
    );
    assert_eq!(cfg.frontends.len(), 1);
    assert_eq!(cfg.backends.len(), 1);
    assert_eq!(cfg.frontends[0].name, "app");
    assert_eq!(cfg.frontends[0].default_backend.as_deref(), Some("app"));
    assert_eq!(cfg.backends[0].name, "app");
    assert_eq!(cfg.backends[0].balance, Balance::Source);
    assert!(cfg.backends[0].servers[1].backup);
}

#[test]
fn tables_and_lines_are_equivalent() {
    let (cfg, _) = load(
        r#"
[defaults]
mode = "http"
timeout = { client = "1s", connect = "1s", server = "1s" }
[frontend.f]
bind = [{ addr = "*:443", ssl = true, crt = ["config/certs/site.pem", "config/certs/myapp.pem"], alpn = ["http/1.1"] }, "[::]:8443 ssl crt config/certs/site.pem"]
http_request = [
    { action = "redirect", scheme = "https", code = 308, drop_query = true },
    "redirect prefix /new code 301 drop-query",
    { action = "deny", deny_status = 429 },
    { action = "set-header", name = "X-A", value = "a b" },
    "add-header X-B 'c d'",
    "del-header X-C",
    "allow",
]
default_backend = "b"
[backend.b]
cookie = { name = "SRV", insert = true, nocache = true }
check = "inter 1s rise 1 fall 1 tls sni example.com"
server = [
    { name = "s1", addr = "127.0.0.1:1", check = true, weight = 7, cookie = "one", maxconn = 10, disabled = true },
    "s2 [::1]:2 check weight 7 cookie two maxconn 10 disabled",
    "s3 localhost:3",
]
"#,
    );
    let f = &cfg.frontends[0];
    let tls = f.binds[0].tls.as_ref().expect("tls");
    assert_eq!(tls.certs.len(), 2);
    assert_eq!(tls.alpn, ["http/1.1"]);
    assert_eq!(
        f.binds[1].addr,
        "[::]:8443".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        f.binds[1].tls.as_ref().expect("tls").alpn,
        ["h2", "http/1.1"]
    );
    let actions: Vec<&HttpAction> = f.http_request.iter().map(|r| &r.action).collect();
    assert_eq!(
        actions,
        [
            &HttpAction::Redirect(Redirect {
                kind: RedirectKind::Scheme,
                target: "https".into(),
                code: 308,
                drop_query: true
            }),
            &HttpAction::Redirect(Redirect {
                kind: RedirectKind::Prefix,
                target: "/new".into(),
                code: 301,
                drop_query: true
            }),
            &HttpAction::Deny { status: 429 },
            &HttpAction::SetHeader {
                name: "X-A".into(),
                value: "a b".into()
            },
            &HttpAction::AddHeader {
                name: "X-B".into(),
                value: "c d".into()
            },
            &HttpAction::DelHeader { name: "X-C".into() },
            &HttpAction::Allow,
        ]
    );
    let b = &cfg.backends[0];
    assert_eq!(
        b.cookie,
        Some(CookieSpec {
            name: "SRV".into(),
            indirect: false,
            nocache: true
        })
    );
    assert_eq!(
        b.check.kind,
        CheckKind::Tls {
            sni: Some("example.com".into())
        }
    );
    assert_eq!(
        b.check.timeout,
        Duration::from_secs(1),
        "no timeout: the interval"
    );
    let (s1, s2) = (&b.servers[0], &b.servers[1]);
    assert_eq!(
        (s1.weight, s1.maxconn, s1.disabled, s1.check),
        (7, Some(10), true, true)
    );
    assert_eq!(
        (s2.weight, s2.maxconn, s2.disabled, s2.check),
        (7, Some(10), true, true)
    );
    assert_eq!(s1.cookie.as_deref(), Some("one"));
    assert_eq!(s2.addr, "[::1]:2".parse::<SocketAddr>().expect("addr"));
    assert_eq!(b.servers[2].host, "localhost:3");
    assert_eq!(
        b.servers[2].addr,
        "127.0.0.1:3".parse::<SocketAddr>().expect("addr")
    );
}

#[test]
fn tier_decisions() {
    let dp = "[dataplane]\ninterfaces = \"eth0\"\n";
    let be = "[backend.b]\nmode = \"tcp\"\nserver = \"s 10.0.0.1:1\"\n";
    let tier = |text: String| load(&text).0.frontends[0].tier;
    // mode tcp + [dataplane] + nothing to inspect
    assert_eq!(
        tier(format!(
            "{dp}[frontend.f]\nbind = \"10.0.0.9:80\"\ndefault_backend = \"b\"\n{be}"
        )),
        Tier::Xdp
    );
    // no [dataplane]
    assert_eq!(
        tier(format!(
            "[frontend.f]\nbind = \"10.0.0.9:80\"\ndefault_backend = \"b\"\n{be}"
        )),
        Tier::Userspace
    );
    // forced userspace
    assert_eq!(
        tier(format!(
            "{dp}[frontend.f]\ntier = \"userspace\"\nbind = \"10.0.0.9:80\"\ndefault_backend = \"b\"\n{be}"
        )),
        Tier::Userspace
    );
    // content inspection
    assert_eq!(
        tier(format!(
            "{dp}[frontend.f]\nbind = \"10.0.0.9:80\"\ntcp_request = \"inspect-delay 5s\"\ndefault_backend = \"b\"\n{be}"
        )),
        Tier::Userspace
    );
    // a wildcard is not a VIP
    assert_eq!(
        tier(format!(
            "{dp}[frontend.f]\nbind = \"*:80\"\ndefault_backend = \"b\"\n{be}"
        )),
        Tier::Userspace
    );
    // TLS termination
    assert_eq!(
        tier(format!(
            "{dp}[frontend.f]\nbind = \"10.0.0.9:443 ssl crt config/certs/site.pem\"\ndefault_backend = \"b\"\n{be}"
        )),
        Tier::Userspace
    );
    // forced xdp where possible
    assert_eq!(
        tier(format!(
            "{dp}[frontend.f]\ntier = \"xdp\"\nbind = \"10.0.0.9:80\"\ndefault_backend = \"b\"\n{be}"
        )),
        Tier::Xdp
    );
    // http is always userspace
    assert_eq!(
        tier(format!(
            "{dp}[frontend.f]\nmode = \"http\"\nbind = \"10.0.0.9:80\"\ndefault_backend = \"h\"\n[backend.h]\nmode = \"http\"\nserver = \"s 10.0.0.1:1\"\n"
        )),
        Tier::Userspace
    );
}

#[test]
fn missing_timeouts_are_warnings() {
    let (_, warnings) = load(
        "[defaults]\nmode = \"http\"\n[frontend.f]\nbind = \"*:80\"\ndefault_backend = \"b\"\n[backend.b]\ntimeout = { connect = \"1s\" }\nserver = \"s 127.0.0.1:1\"\n",
    );
    let w: Vec<String> = warnings
        .iter()
        .map(|d| format!("{}:{}: {}: {}", d.line, d.col, d.path, d.message))
        .collect();
    assert_eq!(
        w,
        [
            "3:11: frontend.f: missing `timeout client` (clients may hold connections forever); set it here or in [defaults]",
            "6:10: backend.b: missing `timeout server`; set it here or in [defaults]",
        ]
    );
}

#[test]
fn cpu_map_auto_or_list() {
    let (cfg, _) = load("[global]\ncpu_map = \"auto\"\n");
    assert_eq!(cfg.global.cpu_map, Some(CpuMap::Auto));
    let (cfg, _) = load("[global]\ncpu_map = [0]\n");
    let map = cfg.global.cpu_map.expect("cpu_map");
    assert_eq!(map, CpuMap::List(vec![0]));
    assert_eq!(map.cpu_for(3, &[0, 1]), Some(0), "a list wraps");
    assert_eq!(
        CpuMap::Auto.cpu_for(3, &[2, 5]),
        Some(5),
        "auto walks the allowed CPUs"
    );
}

#[test]
fn hash_seed_and_pin_path_can_be_set() {
    let (cfg, _) = load(
        "[global]\nhash_seed = 42\nthreads = 4\nlog_format = \"json\"\n[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\npin_path = \"/sys/fs/bpf/custom\"\nxdp_mode = \"generic\"\ndeny_src = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n",
    );
    assert_eq!(cfg.global.hash_seed, 42);
    assert_eq!(cfg.global.threads, Some(4));
    assert_eq!(cfg.global.cpu_map, None);
    assert_eq!(cfg.global.log_format, LogFormat::Json);
    let dp = cfg.dataplane.expect("dp");
    assert_eq!(dp.pin_path, Path::new("/sys/fs/bpf/custom"));
    assert_eq!(dp.xdp_mode, XdpMode::Generic);
    assert_eq!(dp.interfaces, ["eth0", "eth1"]);
    assert_eq!(dp.deny_src.len(), 2);
}

/// The model holds every format and regex compiled once by the loader (issue #12): the L7
/// tier takes them from it instead of compiling the text again.
#[test]
fn formats_and_regexes_are_stored_compiled() {
    let (cfg, _) = load(
        "[defaults]\nmode = \"http\"\ntimeout = { client = \"5s\", connect = \"5s\", server = \"5s\" }\n\
[frontend.web]\nbind = \"127.0.0.1:8080\"\n\
http_request = [\n  \"set-header X-Client %[src]\",\n  \"redirect location /x%[path] if { path_beg /old }\",\n\
  \"replace-path ^/a/(.*) /b/\\\\1\",\n  \"replace-header X-A (.*) v-\\\\1\",\n  \"return status 200 content-type text/plain lf-string %[path] hdr X-R %[src] if { path /r }\",\n]\n\
use_backend = [\"pool-%[req.hdr(x-pool)] if { hdr(x-pool) -m found }\"]\ndefault_backend = \"pool\"\n\
[backend.pool]\nserver = [\"s1 127.0.0.1:8081\"]\n",
    );
    let fe = &cfg.frontends[0];
    let mut fmts = 0;
    let mut regexes = 0;
    for r in &fe.http_request {
        for f in r.action.formats() {
            assert!(f.is_compiled(), "{f:?} is not stored compiled");
            fmts += 1;
        }
        match &r.action {
            HttpAction::ReplacePath { regex, .. } | HttpAction::ReplaceHeader { regex, .. } => {
                assert!(regex.is_compiled(), "{regex:?}");
                regexes += 1;
            }
            _ => {}
        }
    }
    assert_eq!((fmts, regexes), (6, 2));
    assert!(fe.use_backend[0].backend.is_compiled());
}
