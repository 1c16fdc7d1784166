//! Loading the XDP object with pinned maps, and attaching programs to interfaces.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode as AyaXdpMode, xdp::XdpLink};
use aya::{Ebpf, EbpfLoader};
use lb_common::maps::names;

use crate::config::model::XdpMode;
use crate::ebpf_object::LB_EBPF_OBJECT;

/// Errors from loading or attaching the XDP program.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "cannot create the bpffs pin directory {path}: {source} (it must lie on a bpffs mount, and \
         bpffs refuses names with a dot)"
    )]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bpffs is not mounted at {path} and mounting it failed: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "loading the XDP object failed: {0} (needs root or CAP_BPF+CAP_NET_ADMIN, and a kernel with BTF)"
    )]
    Load(#[from] aya::EbpfError),
    #[error("program {0} is missing from the XDP object")]
    MissingProgram(&'static str),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("attaching XDP to {iface} in {mode} mode failed: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error(
        "XDP on {0} was attached without a bpf_link (kernel older than 5.9?), so it cannot be \
         pinned to outlive lb"
    )]
    NotALink(String),
    #[error("pinning the XDP link of {iface} at {path}: {source}")]
    LinkPin {
        iface: String,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("reusing the pinned XDP link {path}: {source}")]
    LinkReuse {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the pinned map {path} was created by an incompatible lb version ({what}: pinned \
         {found}, this lb needs {expected}); stop lb and remove the pin directory {dir} \
         (established flows are lost), then start lb again"
    )]
    PinnedMapMismatch {
        path: PathBuf,
        dir: PathBuf,
        what: &'static str,
        expected: u32,
        found: u32,
    },
    #[error("inspecting the pinned map {path}: {source}")]
    PinnedMapInfo {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("removing the pinned XDP link {path}: {source}")]
    LinkUnpin {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Sizes and the pin location chosen at load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// bpffs directory for the pinned maps; reused when it already holds them.
    pub pin_dir: PathBuf,
    pub conntrack_size: u32,
    pub maglev_table_size: u32,
}

/// Loads the embedded XDP object. Maps already pinned under `opts.pin_dir` are reused, so a
/// restarted `lb` keeps established flows.
pub fn load(opts: &LoadOptions) -> Result<Ebpf, DataplaneError> {
    ensure_bpffs(&opts.pin_dir)?;
    std::fs::create_dir_all(&opts.pin_dir).map_err(|source| DataplaneError::PinDir {
        path: opts.pin_dir.clone(),
        source,
    })?;
    check_pinned_maps(&opts.pin_dir)?;
    let maglev_entries = lb_common::maps::MAX_VIPS * 2 * opts.maglev_table_size;
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(&opts.pin_dir)
        .map_max_entries(names::FLOWS, opts.conntrack_size)
        .map_max_entries(names::FLOWS_V4, opts.conntrack_size)
        .map_max_entries(names::REPLY_FLOWS, opts.conntrack_size)
        .map_max_entries(names::MAGLEV, maglev_entries)
        .load(LB_EBPF_OBJECT)?;
    Ok(ebpf)
}

/// Where lb mounts bpffs when it is missing (as Cilium's agent and `cargo xtask` do).
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// True when `dir` is a bpffs mount point, per `/proc/self/mounts`.
fn is_bpffs_mount(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        matches!((f.next(), f.next(), f.next()), (Some(_), Some(point), Some("bpf")) if Path::new(point) == dir)
    })
}

/// Mounts bpffs at [`BPFFS_ROOT`] when `pin_dir` lies below it and nothing is mounted
/// there yet (a host, container or mount namespace without it).
fn ensure_bpffs(pin_dir: &Path) -> Result<(), DataplaneError> {
    let root = Path::new(BPFFS_ROOT);
    if !pin_dir.starts_with(root) || is_bpffs_mount(root) {
        return Ok(());
    }
    let failed = |source: std::io::Error| DataplaneError::Mount {
        path: root.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(root).map_err(failed)?;
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| failed(std::io::Error::from(e)))?;
    tracing::info!("mounted bpffs at {BPFFS_ROOT}");
    Ok(())
}

/// Key and value sizes of the maps whose layout lb defines, as this build expects them.
fn expected_layouts() -> [(&'static str, usize, usize); 19] {
    use lb_common::types::*;
    use std::mem::size_of;
    [
        (names::CONFIG, 4, size_of::<GlobalConfig>()),
        (names::VIPS, size_of::<VipKey>(), size_of::<VipInfo>()),
        (names::VIP_SLOTS, 4, size_of::<VipSlot>()),
        (names::VIP_PORTS, 4, 4),
        (names::MAGLEV, 4, 4),
        (names::BACKENDS, 4, size_of::<Backend>()),
        (names::FLOWS, size_of::<FlowKey>(), size_of::<FlowValue>()),
        (
            names::FLOWS_V4,
            size_of::<FlowKeyV4>(),
            size_of::<FlowValue>(),
        ),
        (
            names::REVERSE,
            size_of::<ReverseKey>(),
            size_of::<ReverseValue>(),
        ),
        (
            names::REPLY_FLOWS,
            size_of::<FlowKey>(),
            size_of::<ReverseValue>(),
        ),
        (names::LOCAL_ADDRS, size_of::<LocalAddrKey>(), 4),
        (names::REASON_STATS, 4, 8),
        (names::VIP_STATS, 4, size_of::<TrafficCounters>()),
        (names::BACKEND_STATS, 4, size_of::<TrafficCounters>()),
        (names::VIP_MISSES, 4, 8),
        (names::NH_GEN, 4, size_of::<NextHopLease>()),
        (names::BACKEND_HOPS, 4, size_of::<NextHop>()),
        (names::FLOOD, 4, size_of::<FloodWindow>()),
        (
            names::REPLY_HOPS,
            size_of::<ReplyHopKey>(),
            size_of::<NextHop>(),
        ),
    ]
}

/// Refuses maps pinned by an lb whose key or value layout differs from this build's (the
/// loader would reuse them as they are, and the program would then fail verification or
/// misread them), with an error telling the operator what to remove.
fn check_pinned_maps(pin_dir: &Path) -> Result<(), DataplaneError> {
    for (name, key, value) in expected_layouts() {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path).map_err(|source| {
            DataplaneError::PinnedMapInfo {
                path: path.clone(),
                source,
            }
        })?;
        // The reason counters grow with new reasons: a smaller pinned array would leave
        // them uncounted.
        let entries = if name == names::REASON_STATS {
            (lb_common::types::Reason::COUNT, info.max_entries())
        } else {
            (0, 0)
        };
        for (what, expected, found) in [
            ("key size", key as u32, info.key_size()),
            ("value size", value as u32, info.value_size()),
            ("entries", entries.0, entries.1),
        ] {
            if expected != found {
                return Err(DataplaneError::PinnedMapMismatch {
                    path,
                    dir: pin_dir.to_path_buf(),
                    what,
                    expected,
                    found,
                });
            }
        }
    }
    Ok(())
}

/// How a program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    Native,
    Generic,
}

/// Loads (if needed) program `name` and attaches it to `iface`. In [`XdpMode::Auto`], native
/// mode is tried first and generic is the fallback, reported to the caller so it can warn.
/// The returned link is owned (detached when dropped) unless the caller pins or forgets it.
pub fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
    mode: XdpMode,
) -> Result<(Attachment, XdpLink), DataplaneError> {
    // if_nametoindex, not /sys/class/net: it answers for the calling thread's namespace.
    let exists = nix::net::if_::if_nametoindex(iface).is_ok_and(|i| i != 0);
    if !exists {
        return Err(DataplaneError::NoSuchInterface(iface.to_owned()));
    }
    let prog = loaded_xdp(ebpf, name)?;
    let try_mode = |prog: &mut Xdp, m: AyaXdpMode, label: &'static str| {
        let id = prog
            .attach(iface, m)
            .map_err(|source| DataplaneError::Attach {
                iface: iface.to_owned(),
                mode: label,
                source,
            })?;
        prog.take_link(id)
            .map_err(|source| DataplaneError::Program { name, source })
    };
    match mode {
        XdpMode::Native => Ok((
            Attachment::Native,
            try_mode(prog, AyaXdpMode::Driver, "native")?,
        )),
        XdpMode::Generic => Ok((
            Attachment::Generic,
            try_mode(prog, AyaXdpMode::Skb, "generic")?,
        )),
        XdpMode::Auto => match try_mode(prog, AyaXdpMode::Driver, "native") {
            Ok(link) => Ok((Attachment::Native, link)),
            Err(_) => Ok((
                Attachment::Generic,
                try_mode(prog, AyaXdpMode::Skb, "generic")?,
            )),
        },
    }
}

/// Where the XDP link of `iface` is pinned under a pin directory.
pub fn link_pin_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link_{iface}"))
}

/// An attachment whose bpf_link is pinned in bpffs: it outlives the process
/// (`lb run --keep-dataplane`) until [`detach_pinned`] removes the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedAttachment {
    pub iface: String,
    pub path: PathBuf,
    /// How it was attached now; `None` when an existing link (left by a previous `lb`) was
    /// reused and only its program was replaced.
    pub mode: Option<Attachment>,
}

/// Attaches program `name` to `iface` through a bpf_link pinned at
/// [`link_pin_path`]`(pin_dir, iface)`. When such a pin exists (a previous `lb` left the data
/// plane attached), the new program atomically replaces the old one on that link, so no
/// packet ever meets the interface without XDP. Needs bpf_link XDP support (Linux 5.9+).
pub fn attach_pinned(
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
    mode: XdpMode,
    pin_dir: &Path,
) -> Result<PinnedAttachment, DataplaneError> {
    let path = link_pin_path(pin_dir, iface);
    if path.exists() {
        let reuse_err = |e: Box<dyn std::error::Error + Send + Sync>| DataplaneError::LinkReuse {
            path: path.clone(),
            source: e,
        };
        let pinned = PinnedLink::from_pin(&path).map_err(|e| reuse_err(Box::new(e)))?;
        let fd_link: FdLink = pinned.into();
        let xdp_link = XdpLink::try_from(fd_link).map_err(|e| reuse_err(Box::new(e)))?;
        let prog = loaded_xdp(ebpf, name)?;
        prog.attach_to_link(xdp_link)
            .map_err(|e| reuse_err(Box::new(e)))?;
        return Ok(PinnedAttachment {
            iface: iface.to_owned(),
            path,
            mode: None,
        });
    }
    let (how, link) = attach(ebpf, name, iface, mode)?;
    let fd_link = FdLink::try_from(link).map_err(|_| DataplaneError::NotALink(iface.to_owned()))?;
    // The pin holds the link; this process's descriptor may close.
    fd_link
        .pin(&path)
        .map_err(|source| DataplaneError::LinkPin {
            iface: iface.to_owned(),
            path: path.clone(),
            source,
        })?;
    Ok(PinnedAttachment {
        iface: iface.to_owned(),
        path,
        mode: Some(how),
    })
}

/// Detaches the XDP program pinned for `iface` under `pin_dir` (no-op when none is). The
/// link goes away once no process holds it any more.
pub fn detach_pinned(pin_dir: &Path, iface: &str) -> Result<bool, DataplaneError> {
    let path = link_pin_path(pin_dir, iface);
    if !path.exists() {
        return Ok(false);
    }
    std::fs::remove_file(&path).map_err(|source| DataplaneError::LinkUnpin { path, source })?;
    Ok(true)
}

/// The XDP program `name` of `ebpf`, loaded into the kernel (once).
fn loaded_xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, DataplaneError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })?;
    if prog.fd().is_err() {
        load_program(prog, name)?;
    }
    Ok(prog)
}

/// Loads (verifies) `prog`, retrying a few times when the kernel asks to (`EAGAIN`/`EINTR`:
/// the verifier gives up on a pending signal, which happens under load).
pub fn load_program(prog: &mut Xdp, name: &'static str) -> Result<(), DataplaneError> {
    let mut attempt = 0;
    loop {
        match prog.load() {
            Ok(()) => return Ok(()),
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if attempt < 3
                    && (io_error.kind() == std::io::ErrorKind::Interrupted
                        || io_error.raw_os_error() == Some(libc::EAGAIN)) =>
            {
                attempt += 1;
            }
            Err(source) => return Err(DataplaneError::Program { name, source }),
        }
    }
}
