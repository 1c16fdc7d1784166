//! Configuration: the TOML schema, HAProxy directive parsing, validation with exact
//! locations, and the typed model the rest of lb consumes.
//!
//! - [`load`] reads a TOML file into a validated [`model::Config`], returning warnings
//!   alongside; every problem is a [`Diagnostic`] printed as `FILE:LINE:COL: key.path: message`.
//! - [`check::run_check`] is `lb check`; [`convert::run_convert`] is `lb convert`.

mod build;
pub mod check;
pub mod convert;
mod crt_list;
mod diag;
mod directives;
pub mod keys;
pub mod model;
mod preprocess;
mod raw;
mod source;
mod suggest;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

pub use check::run_check;
pub use convert::run_convert;
pub use diag::{ConfigErrors, Diagnostic, Severity};
pub use directives::parse_duration;

/// `global.hash_seed` when the file does not set one: every node with the same config
/// picks the same backend for a flow.
pub const DEFAULT_HASH_SEED: u32 = 0x6c62_5eed;

/// Default `global.ssl_cache_size`: HAProxy's `tune.ssl.cachesize` default.
pub const DEFAULT_SSL_CACHE_SIZE: usize = 20000;

/// Resolves `host:port` for `server` lines (std `ToSocketAddrs` by default).
pub type Resolver = dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync;

/// Where network interface names are checked.
#[derive(Debug, Clone)]
pub enum Interfaces {
    /// The calling thread's network namespace (`if_nametoindex`, `getifaddrs`). Not
    /// `/sys/class/net`, which shows the namespace that mounted sysfs.
    Live,
    /// The entries of a directory (tests).
    Dir(PathBuf),
}

impl Interfaces {
    /// Whether interface `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        if name.is_empty() || name.contains('/') {
            return false;
        }
        match self {
            Interfaces::Live => nix::net::if_::if_nametoindex(name).is_ok(),
            Interfaces::Dir(dir) => dir.join(name).exists(),
        }
    }

    /// Every interface name, for "did you mean" hints.
    pub fn names(&self) -> Vec<String> {
        match self {
            Interfaces::Live => {
                let mut names: Vec<String> = nix::ifaddrs::getifaddrs()
                    .map(|it| it.map(|i| i.interface_name).collect())
                    .unwrap_or_default();
                names.sort();
                names.dedup();
                names
            }
            Interfaces::Dir(dir) => std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// How [`load_with`] reaches the outside world. [`LoadOptions::default`] is what `lb` uses.
pub struct LoadOptions {
    /// Relative `crt` and `errorfile` paths are taken from here (default: the current
    /// directory, as HAProxy does).
    pub base_dir: Option<PathBuf>,
    /// Where `[dataplane] interfaces` are looked up.
    pub interfaces: Interfaces,
    /// Host-name resolution for `server` addresses.
    pub resolver: Box<Resolver>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            base_dir: None,
            interfaces: Interfaces::Live,
            resolver: Box::new(std_resolve),
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("base_dir", &self.base_dir)
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

fn std_resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Loads and validates a configuration file. Warnings come back with the config; errors
/// (at least one) come back as [`ConfigErrors`], each with its exact location.
pub fn load(path: &Path) -> Result<(model::Config, Vec<Diagnostic>), ConfigErrors> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with explicit [`LoadOptions`].
pub fn load_with(
    path: &Path,
    opts: &LoadOptions,
) -> Result<(model::Config, Vec<Diagnostic>), ConfigErrors> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors {
                diagnostics: vec![Diagnostic::file_level(
                    path,
                    format!("cannot read configuration: {e}"),
                )],
            });
        }
    };
    load_str(path, &text, opts)
}

/// Loads a configuration from text; `path` names it in messages and gives the default
/// `pin_path`.
pub fn load_str(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
) -> Result<(model::Config, Vec<Diagnostic>), ConfigErrors> {
    let src = source::Source::new(path, text);
    build::build(&src, opts)
}
