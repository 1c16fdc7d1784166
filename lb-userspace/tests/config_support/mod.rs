//! Shared helpers of the config tests: a temp dir with generated certificates, fake
//! interfaces and a fake resolver, so no test depends on the host.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lb::config::{ConfigErrors, Diagnostic, LoadOptions};

static N: AtomicUsize = AtomicUsize::new(0);

/// A temp directory removed on drop.
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "lb-config-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        Tmp(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("dir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate and its key in one PEM.
pub fn cert_pem() -> String {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    format!("{}{}", ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// A workspace-like base dir: config/certs/{site,myapp}.pem, config/errors/, fake
/// interfaces eth0 and eth1.
pub fn base() -> Tmp {
    let t = Tmp::new("base");
    let pem = cert_pem();
    t.write("config/certs/site.pem", &pem);
    t.write("config/certs/myapp.pem", &pem);
    t.write(
        "config/errors/gslb_health.http",
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nOK\n",
    );
    std::fs::create_dir_all(t.0.join("net/eth0")).expect("iface");
    std::fs::create_dir_all(t.0.join("net/eth1")).expect("iface");
    t
}

/// Resolves IP literals, `localhost` and the seed's `server1`..`server4`; nothing else.
pub fn fake_resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let ip: IpAddr = match host {
        "localhost" => [127, 0, 0, 1].into(),
        "server1" => [127, 0, 1, 1].into(),
        "server2" => [127, 0, 1, 2].into(),
        "server3" => [127, 0, 1, 3].into(),
        "server4" => [127, 0, 1, 4].into(),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "Name or service not known",
            ));
        }
    };
    Ok(vec![SocketAddr::new(ip, port)])
}

pub fn opts(base: &Path) -> LoadOptions {
    LoadOptions {
        base_dir: Some(base.to_path_buf()),
        interfaces: lb::config::Interfaces::Dir(base.join("net")),
        resolver: Box::new(fake_resolve),
    }
}

/// Asserts a load succeeded, printing every error otherwise.
pub fn assert_loads(res: &Result<(lb::config::model::Config, Vec<Diagnostic>), ConfigErrors>) {
    if let Err(e) = res {
        panic!("unexpected errors:\n{e}");
    }
}

/// Path of a file in the repository's `config/` folder.
pub fn repo_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
}
