//! `cargo xtask bench`: builds `lb` and the `lb-bench` driver (package `lb-tests`) in
//! release mode after the bootstrap, then runs it. The driver starts HAProxy, nginx and lb
//! side by side on loopback and in lab namespaces and prints medians and ratios.
//! `--quick` runs one short round instead of three.

use std::process::Command;

use crate::bootstrap::{self, Needs};
use crate::shell::{build_lb, run_inherit, workspace_root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    bootstrap::ensure(Needs::All)?;
    let lb = build_lb(true)?;
    run_inherit(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "--release",
        "-p",
        "lb-tests",
        "--bin",
        "lb-bench",
    ]))?;
    let driver = lb.with_file_name("lb-bench");
    run_inherit(Command::new(driver).args(args).env("LB_BIN", &lb))
}
