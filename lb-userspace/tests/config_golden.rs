//! Golden tests: the example configs load, `lb check` prints the expected report, and
//! `lb convert` of config/haproxy/*.cfg gives exactly config/*.toml.
//! Run with `LB_BLESS=1` to rewrite the expected files after an intended change.

mod config_support;

use std::path::Path;

use config_support::*;
use lb::config::convert::convert_str;
use lb::config::model::{Balance, Mode, Tier};

/// The seed's examples: (haproxy input, converted TOML).
const EXAMPLES: &[&str] = &["httpsandhttp", "www-myapp", "tcp-defaults", "http-defaults"];

fn bless() -> bool {
    std::env::var_os("LB_BLESS").is_some()
}

fn golden(path: &Path, actual: &str) {
    if bless() {
        std::fs::write(path, actual).expect("bless");
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with LB_BLESS=1 to create)", path.display()));
    assert_eq!(actual, expected, "golden mismatch for {}", path.display());
}

#[test]
fn examples_convert_to_the_committed_toml() {
    for name in EXAMPLES {
        let cfg = repo_config(&format!("haproxy/{name}.cfg"));
        let text = std::fs::read_to_string(&cfg).expect("read cfg");
        let conv = convert_str(&cfg, &text);
        assert!(!conv.has_errors(), "{name}: {:#?}", conv.diagnostics);
        golden(&repo_config(&format!("{name}.toml")), &conv.toml);
    }
}

#[test]
fn every_example_config_loads() {
    let base = base();
    let mut names: Vec<String> = EXAMPLES.iter().map(|n| format!("{n}.toml")).collect();
    names.push("lb.toml".into());
    for name in names {
        let res = lb::config::load_with(&repo_config(&name), &opts(base.path()));
        assert_loads(&res);
    }
}

#[test]
fn reference_config_model() {
    let base = base();
    let (cfg, warnings) =
        lb::config::load_with(&repo_config("lb.toml"), &opts(base.path())).expect("lb.toml loads");
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert_eq!(cfg.frontends.len(), 2);
    assert_eq!(cfg.frontends[0].tier, Tier::Userspace);
    assert_eq!(cfg.frontends[1].tier, Tier::Xdp);
    assert_eq!(cfg.frontends[0].use_backend.len(), 3);
    assert_eq!(cfg.frontends[0].http_request.len(), 4);
    let app1 = cfg.backend("app1").expect("app1");
    assert_eq!(app1.balance, Balance::Source);
    assert_eq!(app1.servers[1].name, "s2");
    assert!(app1.servers[1].backup);
}

#[test]
fn check_report_for_the_tcp_example() {
    let base = base();
    let mut out = Vec::new();
    let path = repo_config("tcp-defaults.toml");
    let rc = lb::config::check::run_check_with(&path, &opts(base.path()), &mut out);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "Configuration file is valid\nfrontend tls-passthrough: served in userspace (mode tcp, no [dataplane], binds 203.0.113.10:443)\n"
    );
    assert_eq!(rc, 0);
}

#[test]
fn check_report_names_tiers_and_warnings() {
    let base = base();
    let file = base.write(
        "edge.toml",
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[defaults]\nmode = \"tcp\"\n\n\
         [frontend.edge]\nbind = [\"203.0.113.10:443\", \"[2001:db8::10]:443\"]\ndefault_backend = \"pool\"\n\n\
         [frontend.inspect]\nbind = \"203.0.113.11:443\"\ntcp_request = \"inspect-delay 5s\"\ndefault_backend = \"pool\"\n\n\
         [backend.pool]\nserver = [\"a 10.0.0.1:443\", \"b 10.0.0.2:443\", \"c [2001:db8::20]:443\"]\n",
    );
    let mut out = Vec::new();
    let rc = lb::config::check::run_check_with(&file, &opts(base.path()), &mut out);
    let f = file.display();
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!(
            "{f}:11:11: frontend.inspect: warning: missing `timeout client` (clients may hold connections forever); set it here or in [defaults]\n\
             {f}:16:10: backend.pool: warning: missing `timeout connect` and `timeout server`; set it here or in [defaults]\n\
             Configuration file is valid\n\
             frontend edge: served by XDP (mode tcp, VIPs 203.0.113.10:443, [2001:db8::10]:443)\n\
             frontend inspect: served in userspace (mode tcp, needs content inspection, binds 203.0.113.11:443)\n"
        )
    );
    assert_eq!(rc, 0);
}

#[test]
fn check_fails_with_one_line_per_problem() {
    let base = base();
    let file = base.write(
        "two.toml",
        "[defaults]\nmode = \"http\"\ntimeout = { client = \"1s\", connect = \"1s\", server = \"1s\" }\n\
         [frontend.web]\nbind = \"*:80\"\ndefault_backend = \"nope\"\n[backend.b]\nbalance = \"sorce\"\nserver = \"s 127.0.0.1:1\"\n",
    );
    let mut out = Vec::new();
    let rc = lb::config::check::run_check_with(&file, &opts(base.path()), &mut out);
    let f = file.display();
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!(
            "{f}:6:20: frontend.web.default_backend: backend `nope` is not defined\n\
             {f}:8:12: backend.b.balance: unknown balance algorithm `sorce`; did you mean `source`?\n"
        )
    );
    assert_eq!(rc, 1);
}

#[test]
fn tcp_example_with_dataplane_is_xdp() {
    let base = base();
    let text = std::fs::read_to_string(repo_config("tcp-defaults.toml")).expect("read");
    let file = base.write(
        "tcp.toml",
        &format!("[dataplane]\ninterfaces = \"eth1\"\n\n{text}"),
    );
    let (cfg, _) = lb::config::load_with(&file, &opts(base.path())).expect("loads");
    assert_eq!(cfg.frontends[0].mode, Mode::Tcp);
    assert_eq!(cfg.frontends[0].tier, Tier::Xdp);
    assert_eq!(cfg.frontends[0].maxconn, Some(6000));
    assert!(cfg.frontends[0].errorfiles.contains_key(&200));
    let dp = cfg.dataplane.expect("dataplane");
    assert_eq!(dp.pin_path, Path::new("/sys/fs/bpf/lb/tcp"));
}

#[test]
fn check_report_for_the_reference_config() {
    let base = base();
    let mut out = Vec::new();
    let rc =
        lb::config::check::run_check_with(&repo_config("lb.toml"), &opts(base.path()), &mut out);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "Configuration file is valid\n\
         frontend web: served in userspace (mode http, binds 0.0.0.0:80, 0.0.0.0:443 ssl)\n\
         frontend edge: served by XDP (mode tcp, VIPs 203.0.113.10:443)\n"
    );
    assert_eq!(rc, 0);
}

/// The inputs of the convert golden tests are real HAProxy configs: when `haproxy` is
/// installed, `haproxy -c` accepts each (seed host names mapped to loopback addresses).
#[test]
fn haproxy_accepts_the_example_inputs() {
    let found = std::process::Command::new("haproxy").arg("-v").output();
    if found.is_err() {
        eprintln!("haproxy not installed: skipping");
        return;
    }
    let base = base();
    for name in EXAMPLES {
        let text =
            std::fs::read_to_string(repo_config(&format!("haproxy/{name}.cfg"))).expect("read cfg");
        let mut text = text;
        for i in 1..=4 {
            text = text.replace(&format!("server{i}:"), &format!("127.0.1.{i}:"));
        }
        let file = base.write(&format!("{name}.cfg"), &text);
        let out = std::process::Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&file)
            .current_dir(base.path())
            .output()
            .expect("run haproxy");
        assert!(
            out.status.success(),
            "haproxy -c {name}.cfg:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
