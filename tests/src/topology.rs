//! The standard L4 lab: a client, the balancer, and N backends behind a switch.
//!
//! ```text
//!  client(eth0) ── (eth0)lb(eth1) ── (p0)switch[br0](p1..pN) ── (eth0)b1..bN
//! ```
//! - client side: 10.101.0.0/16 and fd00:101::/64; lb is 10.101.0.1 / fd00:101::1, the
//!   client 10.101.0.2 / fd00:101::2 and may add more source addresses in 10.101.1.0/24.
//! - backend side: 10.102.0.0/24 and fd00:102::/64; lb is .1 / ::1, backend i is .(10+i).
//! - VIPs live in 10.100.0.0/24 and fd00:100::/64, which no host owns; the client's
//!   default route is lb. Backends route everything through lb (the NAT topology).
//!
//! Local sockets on veth produce CHECKSUM_PARTIAL packets, so tx checksum offload is off on
//! the client and the backends (a real NIC delivers full checksums). Every veth that can
//! receive XDP-redirected frames has GRO on, which gives it the NAPI context redirect needs.

use crate::lab::{Host, Lab, Result};

/// The built lab.
#[derive(Debug)]
pub struct L4Lab {
    pub lab: Lab,
    pub client: Host,
    pub lb: Host,
    pub switch: Host,
    pub backends: Vec<Host>,
}

/// Interfaces on the balancer to attach XDP to.
pub const LB_INTERFACES: [&str; 2] = ["eth0", "eth1"];
pub const LB_CLIENT_SIDE_V4: &str = "10.101.0.1";
pub const LB_CLIENT_SIDE_V6: &str = "fd00:101::1";
pub const CLIENT_V4: &str = "10.101.0.2";
pub const CLIENT_V6: &str = "fd00:101::2";

/// IPv4 address of backend `i` (1-based).
pub fn backend_v4(i: usize) -> String {
    format!("10.102.0.{}", 10 + i)
}

/// IPv6 address of backend `i` (1-based).
pub fn backend_v6(i: usize) -> String {
    format!("fd00:102::{}", 10 + i)
}

fn ethtool(host: &Host, args: &[&str]) -> Result<()> {
    host.exec("ethtool", args).map(|_| ())
}

impl L4Lab {
    /// Builds the lab with `n` backends.
    pub fn build(n: usize) -> Result<Self> {
        let mut lab = Lab::new();
        let client = lab.add_host("client")?;
        let lb = lab.add_host("lb")?;
        let switch = lab.add_host("sw")?;
        lab.link(&client, "eth0", &lb, "eth0")?;
        lab.link(&lb, "eth1", &switch, "p0")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        switch.ip(&["link", "set", "p0", "master", "br0"])?;

        client.addr("eth0", "10.101.0.2/16")?;
        client.addr("eth0", "fd00:101::2/64")?;
        client.route("default", LB_CLIENT_SIDE_V4)?;
        client.route("default", LB_CLIENT_SIDE_V6)?;
        lb.addr("eth0", "10.101.0.1/16")?;
        lb.addr("eth0", "fd00:101::1/64")?;
        lb.addr("eth1", "10.102.0.1/24")?;
        lb.addr("eth1", "fd00:102::1/64")?;
        lb.enable_forwarding()?;
        lb.sysctl("net.ipv4.conf.all.rp_filter=0")?;
        lb.sysctl("net.ipv4.conf.default.rp_filter=0")?;

        let mut backends = Vec::new();
        for i in 1..=n {
            let b = lab.add_host(&format!("b{i}"))?;
            let port = format!("p{i}");
            lab.link(&switch, &port, &b, "eth0")?;
            switch.ip(&["link", "set", &port, "master", "br0"])?;
            b.addr("eth0", &format!("{}/24", backend_v4(i)))?;
            b.addr("eth0", &format!("{}/64", backend_v6(i)))?;
            b.route("default", "10.102.0.1")?;
            b.route("default", "fd00:102::1")?;
            ethtool(&b, &["-K", "eth0", "tx", "off"])?;
            ethtool(&switch, &["-K", &port, "gro", "on"])?;
            backends.push(b);
        }
        ethtool(&client, &["-K", "eth0", "tx", "off", "gro", "on"])?;
        ethtool(&switch, &["-K", "p0", "gro", "on"])?;
        ethtool(&lb, &["-K", "eth0", "gro", "on"])?;
        ethtool(&lb, &["-K", "eth1", "gro", "on"])?;
        Ok(L4Lab {
            lab,
            client,
            lb,
            switch,
            backends,
        })
    }

    /// Adds `count` extra client source addresses 10.101.1.1 … and returns them.
    pub fn add_client_sources(&self, count: u8) -> Result<Vec<std::net::IpAddr>> {
        let mut out = Vec::new();
        for i in 1..=count {
            let a = format!("10.101.1.{i}");
            self.client.addr("eth0", &format!("{a}/16"))?;
            out.push(
                a.parse()
                    .map_err(|_| crate::lab::LabError::NoHost(a.clone()))?,
            );
        }
        Ok(out)
    }
}
