//! `lb check`: validate a file, print problems or `Configuration file is valid` and the
//! tier serving each frontend.

use std::io::Write;
use std::path::Path;

use super::model::{Config, Frontend, Mode, Tier};
use super::{LoadOptions, load_with};

/// `lb check -c FILE`: 0 when valid (warnings and tiers printed), 1 with one line per
/// problem otherwise.
pub fn run_check(path: &Path, out: &mut dyn Write) -> i32 {
    run_check_with(path, &LoadOptions::default(), out)
}

/// [`run_check`] with explicit [`LoadOptions`].
pub fn run_check_with(path: &Path, opts: &LoadOptions, out: &mut dyn Write) -> i32 {
    match load_with(path, opts) {
        Ok((cfg, warnings)) => {
            let mut text = String::new();
            for w in &warnings {
                text.push_str(&format!("{w}\n"));
            }
            text.push_str("Configuration file is valid\n");
            for fe in &cfg.frontends {
                text.push_str(&describe(&cfg, fe));
                text.push('\n');
            }
            if out.write_all(text.as_bytes()).is_err() {
                return 1;
            }
            0
        }
        Err(e) => {
            let mut text = String::new();
            for d in &e.diagnostics {
                text.push_str(&format!("{d}\n"));
            }
            let _ = out.write_all(text.as_bytes());
            1
        }
    }
}

/// `frontend edge: served by XDP (mode tcp, VIPs 203.0.113.10:443)`.
pub fn describe(cfg: &Config, fe: &Frontend) -> String {
    let mode = match fe.mode {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    };
    let addrs: Vec<String> = fe
        .binds
        .iter()
        .map(|b| {
            if b.tls.is_some() {
                format!("{} ssl", b.addr)
            } else if b.text.trim_start().to_ascii_lowercase().starts_with("udp") {
                format!("{} udp", b.addr)
            } else {
                b.addr.to_string()
            }
        })
        .collect();
    match fe.tier {
        Tier::Xdp => format!(
            "frontend {}: served by XDP (mode tcp, VIPs {})",
            fe.name,
            addrs.join(", ")
        ),
        Tier::Userspace => {
            let why = if fe.mode == Mode::Tcp {
                match &cfg.dataplane {
                    None => ", no [dataplane]".to_string(),
                    Some(_) => {
                        let mut r = Vec::new();
                        if !fe.tcp_request.is_empty() || fe.inspect_delay.is_some() {
                            r.push("content inspection");
                        }
                        if !fe.use_backend.is_empty() {
                            r.push("use_backend rules");
                        }
                        if fe.binds.iter().any(|b| b.tls.is_some()) {
                            r.push("TLS termination");
                        }
                        if fe.binds.iter().any(|b| b.addr.ip().is_unspecified()) {
                            r.push("a wildcard bind");
                        }
                        if r.is_empty() {
                            ", tier = \"userspace\"".to_string()
                        } else {
                            format!(", needs {}", r.join(", "))
                        }
                    }
                }
            } else {
                String::new()
            };
            format!(
                "frontend {}: served in userspace (mode {mode}{why}, binds {})",
                fe.name,
                addrs.join(", ")
            )
        }
    }
}
