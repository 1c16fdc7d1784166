//! An L4 lab with `lb run` serving TCP and UDP VIPs through XDP, for end-to-end tests.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::lab::{LabError, Result};
use crate::lbproc::LbProcess;
use crate::servers::{ServerGuard, tcp_identity, udp_identity};
use crate::topology::{L4Lab, backend_v4, backend_v6};

pub const VIP4: &str = "10.100.0.10";
pub const VIP6: &str = "fd00:100::10";
pub const VIP_PORT: u16 = 8080;
pub const SRC_VIP_PORT: u16 = 8081;
pub const UDP_PORT: u16 = 5353;
pub const DENIED_SRC: &str = "10.101.1.250";
pub const ADMIN: &str = "127.0.0.1:9100";
pub const IO: Duration = Duration::from_secs(3);

/// The lab, its backend servers and a config directory.
#[derive(Debug)]
pub struct L4Env {
    pub lab: L4Lab,
    pub dir: PathBuf,
    pub servers: BTreeMap<String, Vec<ServerGuard>>,
    pub pin_dir: String,
}

impl L4Env {
    /// A lab with `n` backends, each running TCP identity servers on VIP_PORT (v4 and v6)
    /// and a UDP identity server on UDP_PORT.
    pub fn new(n: usize) -> Result<Self> {
        let lab = L4Lab::build(n)?;
        let dir = std::env::temp_dir().join(lab.lab.id());
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            ns: "tmp".into(),
            source,
        })?;
        let pin_dir = format!("/sys/fs/bpf/{}", lab.lab.id());
        let mut env = L4Env {
            lab,
            dir,
            servers: BTreeMap::new(),
            pin_dir,
        };
        for i in 1..=n {
            env.start_backend(i)?;
        }
        Ok(env)
    }

    /// Starts (or restarts) the servers of backend `i` (1-based).
    pub fn start_backend(&mut self, i: usize) -> Result<()> {
        let b = self.lab.backends[i - 1].clone();
        let mut guards = Vec::new();
        for port in [VIP_PORT, SRC_VIP_PORT] {
            let v4: SocketAddr = format!("{}:{port}", backend_v4(i)).parse().map_err(bad)?;
            let v6: SocketAddr = format!("[{}]:{port}", backend_v6(i)).parse().map_err(bad)?;
            guards.push(tcp_identity(b.tcp_listen(v4)?, &b.name));
            guards.push(tcp_identity(b.tcp_listen(v6)?, &b.name));
        }
        let u4: SocketAddr = format!("{}:{UDP_PORT}", backend_v4(i))
            .parse()
            .map_err(bad)?;
        guards.push(udp_identity(b.udp_bind(u4)?, &b.name));
        self.servers.insert(b.name.clone(), guards);
        Ok(())
    }

    /// Stops every server of backend `i` (its listeners close: connects are refused).
    pub fn stop_backend(&mut self, i: usize) {
        let name = format!("b{i}");
        if let Some(guards) = self.servers.remove(&name) {
            for g in guards {
                g.stop();
            }
        }
    }

    /// The config for backends `1..=n`, health checks fast enough for tests.
    pub fn config(&self, n: usize) -> String {
        // Health checks connect over TCP, so the UDP pool's servers are not checked.
        let servers = |port: u16, v6: bool| {
            let check = if port == UDP_PORT { "" } else { " check" };
            (1..=n)
                .map(|i| {
                    let addr = if v6 {
                        format!("[{}]:{port}", backend_v6(i))
                    } else {
                        format!("{}:{port}", backend_v4(i))
                    };
                    format!("\"b{i} {addr}{check}\"")
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            r#"[global]
admin = "{ADMIN}"

[dataplane]
interfaces = ["eth0", "eth1"]
xdp_mode = "native"
conntrack_size = 65536
maglev_table_size = 65537
deny_src = ["{DENIED_SRC}/32"]
pin_path = "{pin}"

[defaults]
mode = "tcp"
timeout = {{ client = "30s", connect = "2s", server = "30s" }}

[frontend.tcp4]
bind = ["{VIP4}:{VIP_PORT}"]
default_backend = "pool4"

[frontend.src4]
bind = ["{VIP4}:{SRC_VIP_PORT}"]
default_backend = "pool4src"

[frontend.tcp6]
bind = ["[{VIP6}]:{VIP_PORT}"]
default_backend = "pool6"

[frontend.udp4]
bind = ["udp@{VIP4}:{UDP_PORT}"]
default_backend = "pool4udp"

[backend.pool4]
check = {{ interval = "200ms", rise = 2, fall = 2, timeout = "150ms" }}
server = [{s4}]

[backend.pool4src]
balance = "source"
check = {{ interval = "200ms", rise = 2, fall = 2, timeout = "150ms" }}
server = [{s4src}]

[backend.pool6]
check = {{ interval = "200ms", rise = 2, fall = 2, timeout = "150ms" }}
server = [{s6}]

[backend.pool4udp]
server = [{su}]
"#,
            pin = self.pin_dir,
            s4 = servers(VIP_PORT, false),
            s4src = servers(SRC_VIP_PORT, false),
            s6 = servers(VIP_PORT, true),
            su = servers(UDP_PORT, false),
        )
    }

    /// Writes `text` as the config file and returns its path.
    pub fn write_config(&self, text: &str) -> Result<PathBuf> {
        self.write_config_as("lb.toml", text)
    }

    /// Writes `text` as the config file `name` in the lab's directory; returns its path.
    pub fn write_config_as(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|source| LabError::Io {
            ns: "tmp".into(),
            source,
        })?;
        Ok(path)
    }

    /// Starts `lb run` on the balancer host with the config for `n` backends.
    pub fn start_lb(&self, n: usize, extra: &[&str]) -> Result<LbProcess> {
        let path = self.write_config(&self.config(n))?;
        let admin: SocketAddr = ADMIN.parse().map_err(bad)?;
        LbProcess::start(&self.lab.lb, &path, admin, extra)
    }

    /// Opens a TCP connection from `src` (None = the client's main address) to `vip` and
    /// returns it with the name of the backend that greeted it.
    pub fn connect(&self, src: Option<IpAddr>, vip: SocketAddr) -> Result<(TcpStream, String)> {
        let conn = match src {
            Some(s) => self.lab.client.tcp_connect_from(s, vip, IO)?,
            None => self.lab.client.tcp_connect(vip, IO)?,
        };
        let io = |source| LabError::Io {
            ns: "client".into(),
            source,
        };
        conn.set_read_timeout(Some(IO)).map_err(io)?;
        let mut reader = BufReader::new(conn.try_clone().map_err(io)?);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        Ok((conn, line.trim().to_owned()))
    }

    /// Sends a line on an open connection and returns the backend's `NAME:` prefix.
    pub fn exchange(conn: &mut TcpStream, line: &str) -> Result<String> {
        let io = |source| LabError::Io {
            ns: "client".into(),
            source,
        };
        conn.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        let mut reader = BufReader::new(conn.try_clone().map_err(io)?);
        let mut reply = String::new();
        reader.read_line(&mut reply).map_err(io)?;
        Ok(reply
            .trim()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned())
    }
}

fn bad<E: std::fmt::Display>(e: E) -> LabError {
    LabError::Io {
        ns: "config".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Drop for L4Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
