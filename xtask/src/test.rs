//! `cargo xtask test`: the gates and every test suite, in order, with per-stage counts.
//!
//! 1. `cargo fmt --check`
//! 2. clippy `-D warnings` on the userspace crates, then on `lb-ebpf` for its BPF target
//! 3. unit and loopback tests (`lb-common`, `lb-userspace`, `xtask`)
//! 4. TestRun tests (`tests/tests/testrun_*.rs`; root)
//! 5. namespaced end-to-end tests (every other file in `tests/tests/`; root)
//!
//! Without root, stages 4 and 5 are reported as skipped with the reason.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::bootstrap::{self, Needs};
use crate::shell::{is_root, run_inherit, workspace_root};

#[derive(Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(a) = args.first() {
        bail!("`cargo xtask test` takes no arguments (got `{a}`)");
    }
    bootstrap::ensure(Needs::Test)?;
    let root = workspace_root();
    warn_if_disk_low(&root);
    let cargo = || {
        let mut c = Command::new("cargo");
        c.current_dir(&root);
        c
    };

    stage("1/5 cargo fmt --check");
    run_inherit(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs; run `cargo fmt --all`")?;

    stage("2/5 clippy -D warnings (userspace, then lb-ebpf for bpfel-unknown-none)");
    run_inherit(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_inherit(
        cargo()
            .current_dir(root.join("lb-ebpf"))
            .args([
                "+nightly",
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .env("CARGO_TARGET_DIR", root.join("target/bpf-clippy")),
    )?;

    let mut summary: Vec<(&str, Option<Counts>, String)> = Vec::new();

    stage("3/5 unit and loopback tests");
    let unit = cargo_test(cargo().args([
        "test",
        "--no-fail-fast",
        "-p",
        "lb-common",
        "-p",
        "lb-userspace",
        "-p",
        "xtask",
        "--all-targets",
    ]))?;
    summary.push(("unit and loopback", Some(unit), String::new()));

    let (testrun_files, lab_files) = privileged_test_files(&root)?;
    // End-to-end tests run the real `lb` binary (target/debug/lb).
    run_inherit(cargo().args(["build", "-p", "lb-userspace", "--bin", "lb"]))?;
    if is_root() {
        stage("4/5 TestRun (BPF_PROG_TEST_RUN) tests");
        let counts = run_files(&mut cargo(), &testrun_files)?;
        summary.push(("TestRun", Some(counts), String::new()));
        stage("5/5 namespaced end-to-end tests");
        let counts = run_files(&mut cargo(), &lab_files)?;
        summary.push(("namespaced end-to-end", Some(counts), String::new()));
    } else {
        let why = "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run as root as CI does";
        summary.push((
            "TestRun",
            None,
            format!("{} test files skipped: {why}", testrun_files.len()),
        ));
        summary.push((
            "namespaced end-to-end",
            None,
            format!("{} test files skipped: {why}", lab_files.len()),
        ));
    }

    println!("\n== summary ==");
    let mut total = Counts::default();
    let mut failed_stage = false;
    for (name, counts, note) in &summary {
        match counts {
            Some(c) => {
                println!(
                    "{name:<24} {} passed, {} failed, {} ignored",
                    c.passed, c.failed, c.ignored
                );
                total.add(*c);
                failed_stage |= c.failed > 0 || c.ignored > 0;
            }
            None => println!("{name:<24} SKIPPED: {note}"),
        }
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    if failed_stage {
        bail!("some tests failed or were ignored");
    }
    Ok(())
}

/// Free space a clean run needs in the target directory's file system: a debug build of
/// every test target plus the release build `cargo deb` makes (measured on a clean
/// clone with `.ci/run`: 3.4 GiB, the release link last), with room to spare.
const DISK_NEEDED_GIB: u64 = 6;

/// Warns up front when the target directory's file system is short of space: a full disk
/// otherwise shows up only as a failed link near the end of the run.
fn warn_if_disk_low(root: &std::path::Path) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let probe = if target.exists() {
        target
    } else {
        root.to_path_buf()
    };
    let Ok(out) = Command::new("df").arg("-Pk").arg(&probe).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(free_kib) = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|f| f.parse::<u64>().ok())
    else {
        return;
    };
    let free_gib = free_kib / (1024 * 1024);
    if free_gib < DISK_NEEDED_GIB {
        println!(
            "xtask test: warning: only {free_gib} GiB free under {}; a clean run needs about \
             {DISK_NEEDED_GIB} GiB (`cargo clean` or free space, else the build may fail \
             with \"No space left on device\")",
            probe.display()
        );
    }
}

fn stage(name: &str) {
    println!("\n== {name} ==");
}

/// Splits `tests/tests/*.rs` into TestRun files and namespaced (lab) files.
fn privileged_test_files(root: &std::path::Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let dir = root.join("tests/tests");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    let (testrun, lab) = names.into_iter().partition(|n| n.starts_with("testrun"));
    Ok((testrun, lab))
}

fn run_files(cmd: &mut Command, files: &[String]) -> anyhow::Result<Counts> {
    if files.is_empty() {
        return Ok(Counts::default());
    }
    cmd.args(["test", "--no-fail-fast", "-p", "lb-tests"]);
    for f in files {
        cmd.args(["--test", f]);
    }
    cargo_test(cmd)
}

/// Runs a `cargo test` command, echoing its output, and sums the `test result:` lines.
fn cargo_test(cmd: &mut Command) -> anyhow::Result<Counts> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let mut counts = Counts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            if let Some(c) = parse_result_line(&line) {
                counts.add(c);
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && counts.failed == 0 {
        // Build failure or a crashed test binary.
        bail!("cargo test failed ({status})");
    }
    Ok(counts)
}

/// Parses `test result: ok. 3 passed; 0 failed; 1 ignored; …`.
fn parse_result_line(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut counts = Counts::default();
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let n = words
            .iter()
            .rev()
            .nth(1)
            .and_then(|w| w.parse::<u64>().ok());
        match (n, words.last()) {
            (Some(n), Some(&"passed")) => counts.passed = n,
            (Some(n), Some(&"failed")) => counts.failed = n,
            (Some(n), Some(&"ignored")) => counts.ignored = n,
            _ => {}
        }
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

    #[test]
    fn parses_cargo_result_lines() {
        let c = parse_result_line(
            "test result: ok. 12 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        )
        .expect("a result line");
        assert_eq!((c.passed, c.failed, c.ignored), (12, 1, 2));
        assert!(parse_result_line("running 3 tests").is_none());
    }
}
