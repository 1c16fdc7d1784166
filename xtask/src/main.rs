//! `cargo xtask`: the project's own build driver.
//!
//! - `demo`  — namespaced lab showing lb balancing real traffic (see README).
//! - `run`   — build and run `lb run` with the given arguments (loads the XDP program);
//!   without arguments, `lb run -c config/lb.toml`, making its try-out certificate first.
//! - `cert`  — write the reference config's try-out certificate (`config/certs/site.pem`).
//! - `test`  — fmt, clippy (userspace and eBPF), unit, TestRun and namespaced tests.
//! - `bench` — lb side by side with HAProxy, nginx and nftables, reported as ratios.
//!
//! Every command first bootstraps the eBPF toolchain (nightly `rust-src`, `bpf-linker`
//! built against nightly's own LLVM) and the Debian packages it needs, idempotently.

mod bench;
mod bootstrap;
mod cert;
mod demo;
mod shell;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <demo [--keep] | run [LB ARGS…] | cert [PATH] [--force] | test | bench [l4|l7|all|fuzz] [--quick] | bootstrap>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "bootstrap" => bootstrap::ensure(bootstrap::Needs::All),
        "test" => test::run(rest),
        "demo" => demo::run(rest),
        "run" => run_lb(rest),
        "cert" => cert::run(rest),
        "bench" => bench::run(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("unknown xtask command `{other}`\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask run …`: bootstrap, build `lb`, run it with the remaining arguments.
fn run_lb(args: &[String]) -> anyhow::Result<()> {
    bootstrap::ensure(bootstrap::Needs::Build)?;
    let lb = shell::build_lb(false)?;
    let args: Vec<&str> = if args.is_empty() {
        let pem = shell::workspace_root().join(cert::SITE_PEM);
        if !pem.exists() {
            cert::write_self_signed(&pem)?;
            println!("xtask run: wrote the try-out certificate {}", pem.display());
        }
        vec!["run", "-c", "config/lb.toml"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    shell::run_inherit(std::process::Command::new(lb).args(args))
}
