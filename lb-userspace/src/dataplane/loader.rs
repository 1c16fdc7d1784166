//! Loading the XDP object with pinned maps, and attaching programs to interfaces.

use std::path::{Path, PathBuf};

use aya::programs::{Xdp, XdpMode as AyaXdpMode, xdp::XdpLink};
use aya::{Ebpf, EbpfLoader};
use lb_common::maps::names;

use crate::config::model::XdpMode;
use crate::ebpf_object::LB_EBPF_OBJECT;

/// Errors from loading or attaching the XDP program.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot create the bpffs pin directory {path}: {source} (is bpffs mounted at /sys/fs/bpf?)")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the XDP object failed: {0} (needs root or CAP_BPF+CAP_NET_ADMIN, and a kernel with BTF)")]
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
    std::fs::create_dir_all(&opts.pin_dir).map_err(|source| DataplaneError::PinDir {
        path: opts.pin_dir.clone(),
        source,
    })?;
    let maglev_entries = lb_common::maps::MAX_VIPS * 2 * opts.maglev_table_size;
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(&opts.pin_dir)
        .map_max_entries(names::FLOWS, opts.conntrack_size)
        .map_max_entries(names::MAGLEV, maglev_entries)
        .load(LB_EBPF_OBJECT)?;
    Ok(ebpf)
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
    if !Path::new("/sys/class/net").join(iface).exists() {
        return Err(DataplaneError::NoSuchInterface(iface.to_owned()));
    }
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })?;
    if prog.fd().is_err() {
        prog.load()
            .map_err(|source| DataplaneError::Program { name, source })?;
    }
    let try_mode = |prog: &mut Xdp, m: AyaXdpMode, label: &'static str| {
        let id = prog.attach(iface, m).map_err(|source| DataplaneError::Attach {
            iface: iface.to_owned(),
            mode: label,
            source,
        })?;
        prog.take_link(id)
            .map_err(|source| DataplaneError::Program { name, source })
    };
    match mode {
        XdpMode::Native => Ok((Attachment::Native, try_mode(prog, AyaXdpMode::Driver, "native")?)),
        XdpMode::Generic => Ok((Attachment::Generic, try_mode(prog, AyaXdpMode::Skb, "generic")?)),
        XdpMode::Auto => match try_mode(prog, AyaXdpMode::Driver, "native") {
            Ok(link) => Ok((Attachment::Native, link)),
            Err(_) => Ok((Attachment::Generic, try_mode(prog, AyaXdpMode::Skb, "generic")?)),
        },
    }
}
