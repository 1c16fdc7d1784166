//! The namespaced lab: hosts are network namespaces, links are veth pairs, and everything
//! a [`Lab`] creates is removed when it is dropped, panics included.
//!
//! Names are unique per lab (`lbt<pid>x<n>…`), so tests run in parallel and never collide.
//! A lab also removes leftovers of labs whose process died (killed by a signal) when it starts.

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use socket2::{Domain, Protocol, Socket, Type};

/// Lab errors name the command or the namespace that failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("`{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("entering namespace {ns}: {source}")]
    Setns { ns: String, source: std::io::Error },
    #[error("no host named {0} in this lab")]
    NoHost(String),
    #[error("in namespace {ns}: {source}")]
    Io { ns: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, LabError>;

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
const NS_PREFIX: &str = "lbt";

/// A network namespace acting as one machine.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short name given by the test (`client`, `lb`, `b1`…).
    pub name: String,
    /// The namespace name under /run/netns.
    pub netns: String,
}

/// A set of hosts and links, removed on drop.
pub struct Lab {
    id: String,
    hosts: Vec<Host>,
    links: u32,
    children: Mutex<Vec<Child>>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.id)
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// Runs `ip` with `args`, failing with its stderr.
/// A MAC address as `ip` writes it (`02:00:00:00:a0:00`).
pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<Output> {
    let text = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: text.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: text,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

fn pid_alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

/// Every namespace name currently present.
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every interface name in the root namespace.
pub fn list_root_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes namespaces, root links and bpffs pin directories left by labs whose process no
/// longer exists.
fn sweep_stale() {
    let owner = |name: &str| -> Option<u32> {
        let rest = name.strip_prefix(NS_PREFIX)?;
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        pid.parse().ok()
    };
    for ns in list_netns() {
        if let Some(pid) = owner(&ns)
            && !pid_alive(pid)
        {
            // Processes the dead lab started (servers, load generators) outlive it and may
            // hold files or locks it held: end them before the namespace goes.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(p) = p.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            let _ = ip(&["netns", "del", &ns]);
        }
    }
    for link in list_root_links() {
        if let Some(pid) = owner(&link)
            && !pid_alive(pid)
        {
            let _ = ip(&["link", "del", &link]);
        }
    }
    // bpffs pin directories named after a lab (`/sys/fs/bpf/<lab id>`).
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner(&name)
                && !pid_alive(pid)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

impl Lab {
    /// A new, empty lab.
    pub fn new() -> Self {
        sweep_stale();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        Lab {
            id: format!("{NS_PREFIX}{}x{n}", std::process::id()),
            hosts: Vec::new(),
            links: 0,
            children: Mutex::new(Vec::new()),
        }
    }

    /// The prefix every namespace and temporary link of this lab starts with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds a host (a namespace with `lo` up and IPv4 forwarding off).
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        let netns = format!("{}-{name}", self.id);
        ip(&["netns", "add", &netns])?;
        let host = Host {
            name: name.to_owned(),
            netns,
        };
        self.hosts.push(host.clone());
        host.ip(&["link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::NoHost(name.to_owned()))
    }

    /// Connects `a` and `b` with a veth pair, named `a_if` in `a` and `b_if` in `b`, both up.
    pub fn link(&mut self, a: &Host, a_if: &str, b: &Host, b_if: &str) -> Result<()> {
        self.links += 1;
        let ta = format!("{}l{}a", self.id, self.links);
        let tb = format!("{}l{}b", self.id, self.links);
        ip(&["link", "add", &ta, "type", "veth", "peer", "name", &tb])?;
        let moved = ip(&["link", "set", &ta, "netns", &a.netns])
            .and_then(|_| ip(&["link", "set", &tb, "netns", &b.netns]));
        if let Err(e) = moved {
            let _ = ip(&["link", "del", &ta]);
            return Err(e);
        }
        a.ip(&["link", "set", &ta, "name", a_if])?;
        b.ip(&["link", "set", &tb, "name", b_if])?;
        a.ip(&["link", "set", a_if, "up"])?;
        b.ip(&["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Spawns `cmd` inside `host`; the process is killed when the lab is dropped.
    pub fn spawn(&self, host: &Host, program: &str, args: &[&str]) -> Result<u32> {
        let child = host
            .command(program, args)
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: format!("{program} {args:?}"),
                source,
            })?;
        let pid = child.id();
        if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
        Ok(pid)
    }

    /// Takes ownership of a child started elsewhere so it is killed on drop.
    pub fn adopt(&self, child: Child) {
        if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for host in &self.hosts {
            // Anything else still running inside (started by a test by other means).
            if let Ok(out) = ip(&["netns", "pids", &host.netns]) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            let _ = ip(&["netns", "del", &host.netns]);
        }
        for n in 1..=self.links {
            let ta = format!("{}l{n}a", self.id);
            if list_root_links().contains(&ta) {
                let _ = ip(&["link", "del", &ta]);
            }
        }
    }
}

impl Host {
    /// Runs `ip ARGS` inside this host.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", self.netns.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Sets `iface`'s MAC address.
    pub fn set_mac(&self, iface: &str, mac: [u8; 6]) -> Result<()> {
        self.ip(&["link", "set", iface, "address", &mac_str(mac)])
            .map(|_| ())
    }

    /// Adds or replaces a permanent neighbour entry: `addr` is at `mac` on `dev`.
    pub fn permanent_neigh(&self, addr: &str, mac: [u8; 6], dev: &str) -> Result<()> {
        self.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac_str(mac),
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .map(|_| ())
    }

    /// Adds `cidr` (e.g. `10.0.0.1/24` or `fd00::1/64`) to `iface`.
    pub fn addr(&self, iface: &str, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", iface];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args).map(|_| ())
    }

    /// Adds a route to `dst` (`default` allowed) via `gw`.
    pub fn route(&self, dst: &str, gw: &str) -> Result<()> {
        let fam = if gw.contains(':') { "-6" } else { "-4" };
        self.ip(&[fam, "route", "add", dst, "via", gw]).map(|_| ())
    }

    /// Sets a sysctl inside this host, e.g. `net.ipv4.ip_forward=1`.
    pub fn sysctl(&self, kv: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "exec", &self.netns, "sysctl", "-qw", kv]))
            .map(|_| ())
    }

    /// Turns on IPv4 and IPv6 forwarding.
    pub fn enable_forwarding(&self) -> Result<()> {
        self.sysctl("net.ipv4.ip_forward=1")?;
        self.sysctl("net.ipv6.conf.all.forwarding=1")
    }

    /// A command that runs inside this host.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, program]).args(args);
        cmd
    }

    /// A command that runs in this host's network namespace only (`nsenter --net`), keeping
    /// the host's mount namespace. `ip netns exec` remounts `/sys`, which hides the bpffs
    /// at `/sys/fs/bpf`; programs that pin BPF objects (lb itself) must run this way.
    pub fn net_command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program)
            .args(args);
        cmd
    }

    /// Runs a command inside this host to completion, failing on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        run(&mut self.command(program, args))
    }

    /// Runs `f` on a new thread that has entered this host's namespace, and returns its
    /// result. Sockets created by `f` stay in this namespace wherever they are used later,
    /// so this is how in-process servers and clients are placed on a host.
    pub fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let ns = self.netns.clone();
        let path = format!("/run/netns/{ns}");
        let handle = std::thread::spawn(move || -> Result<T> {
            let file = File::open(&path).map_err(|source| LabError::Setns {
                ns: ns.clone(),
                source,
            })?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| LabError::Setns {
                ns: ns.clone(),
                source: errno.into(),
            })?;
            f().map_err(|source| LabError::Io { ns, source })
        });
        handle.join().unwrap_or_else(|_| {
            Err(LabError::Io {
                ns: self.netns.clone(),
                source: std::io::Error::other("thread inside the namespace panicked"),
            })
        })
    }

    /// A TCP listener bound inside this host.
    pub fn tcp_listen(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.within(move || TcpListener::bind(addr))
    }

    /// A TCP connection made from this host, with a connect timeout.
    pub fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        self.within(move || TcpStream::connect_timeout(&addr, timeout))
    }

    /// A TCP connection made from this host from source address `src`.
    pub fn tcp_connect_from(
        &self,
        src: IpAddr,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream> {
        self.within(move || {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.bind(&SocketAddr::new(src, 0).into())?;
            socket.connect_timeout(&addr.into(), timeout)?;
            Ok(socket.into())
        })
    }

    /// A UDP socket bound inside this host.
    pub fn udp_bind(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.within(move || UdpSocket::bind(addr))
    }
}
