//! UDP VIPs (`udp@` binds): served by XDP, described as UDP by `lb check`, and a warning
//! when their servers are health-checked over TCP.

mod config_support;

use config_support::*;

const UDP: &str = "[dataplane]\ninterfaces = [\"eth0\"]\n\n[defaults]\nmode = \"tcp\"\ntimeout = { client = \"5s\", connect = \"5s\", server = \"5s\" }\n\n[frontend.dns]\nbind = [\"udp@192.0.2.1:53\"]\ndefault_backend = \"dns\"\n\n[backend.dns]\nserver = [\"a 127.0.0.1:53 check\", \"b 127.0.0.2:53\"]\n";

#[test]
fn udp_vip_is_xdp_and_tcp_checks_on_it_are_warned() {
    let base = base();
    let file = base.write("udp.toml", UDP);
    let (cfg, warnings) = lb::config::load_with(&file, &opts(base.path())).expect("valid config");
    let fe = &cfg.frontends[0];
    assert_eq!(fe.tier, lb::config::model::Tier::Xdp);
    let prefix = format!("{}:", file.display());
    let warnings: Vec<String> = warnings
        .iter()
        .map(|d| d.to_string().replacen(&prefix, "udp.toml:", 1))
        .collect();
    assert_eq!(
        warnings,
        vec![
            "udp.toml:8:11: frontend.dns: warning: server `dns/a` serves a UDP VIP but is health-checked over TCP; it will be marked DOWN unless it also accepts TCP on 127.0.0.1:53"
                .to_owned()
        ]
    );
    let mut out = Vec::new();
    assert_eq!(
        lb::config::check::run_check_with(&file, &opts(base.path()), &mut out),
        0
    );
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("frontend dns: served by XDP (mode tcp, VIPs 192.0.2.1:53 udp)"),
        "{out}"
    );
}
