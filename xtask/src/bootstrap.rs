//! Idempotent toolchain bootstrap: nightly `rust-src`, `bpf-linker` linked against
//! nightly's own libLLVM, and the Debian packages the tests, demo and benchmarks use.
//! Anything already present and correct is skipped; a failure names the piece and the fix.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};

use crate::shell::{have, output, run_inherit, tail};

/// What the calling command needs beyond the eBPF toolchain.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Only the compilers (build, run).
    Build,
    /// Build + the packages the tests use.
    Test,
    /// Build + test + benchmark tools.
    All,
}

/// Debian packages: (command that proves it is installed, package).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("curl", "curl"),
    ("haproxy", "haproxy"),
    ("bpftool", "bpftool"),
    // The BGP lab (tests/tests/e2e_bgp.rs): BIRD 2 on the lb nodes, FRR on the router.
    ("bird", "bird2"),
    ("vtysh", "frr"),
    // DNS discovery tests (lb-userspace/tests/discovery_dns.rs): dnsmasq on loopback.
    ("dnsmasq", "dnsmasq-base"),
];
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("nginx", "nginx"),
    ("wrk", "wrk"),
    ("h2load", "nghttp2-client"),
    ("iperf3", "iperf3"),
    ("nft", "nftables"),
];

/// Ensures every piece `needs` asks for is installed.
pub fn ensure(needs: Needs) -> anyhow::Result<()> {
    let llvm = nightly_llvm().context(
        "the nightly toolchain is required for the eBPF build: `rustup toolchain install nightly`",
    )?;
    ensure_rust_src().context("installing nightly rust-src failed; try `rustup component add rust-src --toolchain nightly`")?;
    ensure_bpf_linker(&llvm).with_context(|| {
        format!(
            "building bpf-linker against nightly's LLVM {} failed; see the cargo output above. \
             It needs the nightly toolchain's lib/libLLVM.so.* and crates.io access",
            llvm.major
        )
    })?;
    if needs != Needs::Build {
        ensure_cargo_tool("cargo-deb", "cargo-deb")?;
        ensure_bpffs()?;
    }
    let mut pkgs: Vec<(&str, &str)> = Vec::new();
    if needs != Needs::Build {
        pkgs.extend_from_slice(TEST_PACKAGES);
    }
    if needs == Needs::All {
        pkgs.extend_from_slice(BENCH_PACKAGES);
    }
    ensure_debian(&pkgs)
}

/// Nightly rustc's sysroot and LLVM version.
pub struct NightlyLlvm {
    pub sysroot: PathBuf,
    pub major: String,
}

fn nightly_llvm() -> anyhow::Result<NightlyLlvm> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .ok_or_else(|| anyhow!("`rustc +nightly -vV` printed no LLVM version"))?;
    let major = version.split('.').next().unwrap_or(version).to_owned();
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    Ok(NightlyLlvm { sysroot, major })
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: installing nightly rust-src");
    run_inherit(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// The directory whose `lib/` holds libLLVM symlinks for bpf-linker's build and rpath.
fn llvm_prefix(major: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/lb-toolchain")
        .join(format!("llvm-{major}"))
}

/// Nightly's own libLLVM shared object (`lib/libLLVM.so.<ver>-rust-<ver>-nightly`).
fn nightly_libllvm(sysroot: &Path) -> anyhow::Result<PathBuf> {
    let lib = sysroot.join("lib");
    let entries = std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .ok_or_else(|| anyhow!("no libLLVM.so.*-rust-* in {}", lib.display()))
}

fn ensure_bpf_linker(llvm: &NightlyLlvm) -> anyhow::Result<()> {
    let libllvm = nightly_libllvm(&llvm.sysroot)?;
    let prefix = llvm_prefix(&llvm.major);
    let libdir = prefix.join("lib");
    std::fs::create_dir_all(&libdir).with_context(|| format!("creating {}", libdir.display()))?;
    // `libLLVM.so` for the build; the versioned soname for the binary's runtime lookup
    // through its rpath.
    let soname = libllvm
        .file_name()
        .ok_or_else(|| anyhow!("bad libLLVM path"))?
        .to_owned();
    for link in [libdir.join("libLLVM.so"), libdir.join(&soname)] {
        let current = std::fs::read_link(&link).ok();
        if current.as_deref() != Some(libllvm.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&libllvm, &link)
                .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
        }
    }
    if bpf_linker_works() {
        return Ok(());
    }
    eprintln!(
        "xtask: building bpf-linker against nightly's LLVM {} (about 2 minutes)",
        llvm.major
    );
    let out = Command::new("cargo")
        .args([
            "+nightly",
            "install",
            "bpf-linker",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{}", llvm.major),
        ])
        .env("LLVM_PREFIX", &prefix)
        .output()
        .context("cannot run `cargo +nightly install bpf-linker`")?;
    if !out.status.success() {
        bail!(
            "`cargo +nightly install bpf-linker` failed:\n{}",
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not start (libLLVM not found through its rpath)");
    }
    Ok(())
}

fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Mounts bpffs at /sys/fs/bpf when it is not mounted (lb pins its maps there). Needs root;
/// without it the privileged tests are skipped anyway.
fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    if !crate::shell::is_root() {
        return Ok(());
    }
    eprintln!("xtask: mounting bpffs at /sys/fs/bpf");
    output(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs at /sys/fs/bpf failed")?;
    Ok(())
}

/// Installs a cargo subcommand from crates.io when its binary is missing.
fn ensure_cargo_tool(binary: &str, krate: &str) -> anyhow::Result<()> {
    if have(binary) {
        return Ok(());
    }
    eprintln!("xtask: installing {krate} from crates.io (a few minutes, once)");
    output(Command::new("cargo").args(["install", "--locked", krate]))
        .with_context(|| format!("`cargo install --locked {krate}` failed"))?;
    Ok(())
}

fn ensure_debian(pkgs: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .filter(|(cmd, _)| !have(cmd) && !Path::new("/usr/sbin").join(cmd).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::shell::is_root() {
        bail!(
            "missing Debian packages: {} (run `apt-get install -y {}` as root)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    output(Command::new("apt-get").arg("update")).context("apt-get update failed")?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    output(&mut cmd).with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    Ok(())
}
