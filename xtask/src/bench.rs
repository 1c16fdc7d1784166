//! `cargo xtask bench`: builds `lb` and the `lb-bench` driver (package `lb-tests`) in
//! release mode after the bootstrap, then runs it. The driver starts HAProxy, nginx and lb
//! side by side on loopback and in lab namespaces and prints medians and ratios.
//! `--quick` runs one short round instead of three. After the driver, the XDP program's
//! packet fuzz test runs with 1,000,000 frames (100,000 with `--quick`); `cargo xtask
//! bench fuzz` runs only that.

use std::process::Command;

use crate::bootstrap::{self, Needs};
use crate::shell::{build_lb, run_inherit, workspace_root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    bootstrap::ensure(Needs::All)?;
    if args.first().map(String::as_str) == Some("fuzz") {
        return fuzz(1_000_000);
    }
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
    run_inherit(Command::new(driver).args(args).env("LB_BIN", &lb))?;
    // The whole run (`all`, also `--quick`) fuzzes the XDP program; a selection of the
    // driver's cases (`instr`, …) does not.
    let quick = args.iter().any(|a| a == "--quick");
    match args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
    {
        None | Some("all") => fuzz(if quick { 100_000 } else { 1_000_000 }),
        Some(_) => Ok(()),
    }
}

/// Random and mutated frames through `lb_xdp` (BPF_PROG_TEST_RUN, root), every output
/// checked: `testrun_l4`'s fuzz test with `frames` frames.
fn fuzz(frames: u32) -> anyhow::Result<()> {
    run_inherit(
        Command::new("cargo")
            .current_dir(workspace_root())
            .env("LB_FUZZ_FRAMES", frames.to_string())
            .args([
                "test",
                "-p",
                "lb-tests",
                "--test",
                "testrun_l4",
                "--",
                "--exact",
                "fuzzed_frames_are_forwarded_correctly_or_left_alone",
                "--nocapture",
            ]),
    )
}
