//! `cargo xtask demo [--keep]`: bootstraps, builds `lb` and the `lb-demo` driver (package
//! `lb-tests`), and runs the driver from the repository root. The driver builds the
//! namespaced lab, runs lb with `config/demo.toml`, drives traffic, kills and restores a
//! backend, and cleans up on exit or Ctrl-C.

use std::process::Command;

use anyhow::bail;

use crate::bootstrap::{self, Needs};
use crate::shell::{build_lb, is_root, run_inherit, workspace_root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(a) = args.iter().find(|a| a.as_str() != "--keep") {
        bail!("unknown demo argument `{a}` (only --keep)");
    }
    if !is_root() {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    bootstrap::ensure(Needs::Test)?;
    let root = workspace_root();
    let lb = build_lb(false)?;
    run_inherit(
        Command::new("cargo")
            .current_dir(&root)
            .args(["build", "-p", "lb-tests", "--bin", "lb-demo"]),
    )?;
    let driver = lb.with_file_name("lb-demo");
    run_inherit(
        Command::new(driver)
            .args(args)
            .current_dir(&root)
            .env("LB_BIN", &lb)
            .env("LB_REPO", &root),
    )
}
