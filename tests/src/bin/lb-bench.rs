//! The benchmark driver behind `cargo xtask bench` (built after the toolchain bootstrap).
//! Usage: `lb-bench [l4|l7|instr|all] [--quick] [--no-e2e]` (`instr`: instructions per
//! request under callgrind).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lb_tests::bench::instr::{InstrBench, run as run_instr};
use lb_tests::bench::l4::{L4Bench, run as run_l4};
use lb_tests::bench::l7::{L7Bench, run as run_l7};
use lb_tests::lbproc::lb_binary;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let which = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
        .unwrap_or("all");
    let dir = std::env::temp_dir().join(format!("lb-bench-{}", std::process::id()));
    let mut ok = true;
    if matches!(which, "l7" | "all") {
        let cfg = L7Bench {
            lb_bin: lb_binary(),
            dir: dir.join("l7"),
            duration: Duration::from_secs(if quick { 2 } else { 5 }),
            repeats: if quick { 1 } else { 3 },
            // HAProxy reserves two descriptors per connection; under this machine's fixed
            // open-files limit of 20000 it holds at most ~9900, so every proxy is measured
            // at 9500 idle connections.
            idle_conns: 9_500,
        };
        if let Err(e) = run_l7(&cfg) {
            eprintln!("lb-bench: L7: {e}");
            ok = false;
        }
    }
    if matches!(which, "instr" | "all") {
        let cfg = InstrBench {
            lb_bin: lb_binary(),
            dir: dir.join("instr"),
            warmup: 2_000,
            requests: if quick { 5_000 } else { 20_000 },
        };
        if let Err(e) = run_instr(&cfg) {
            eprintln!("lb-bench: instructions: {e}");
            ok = false;
        }
    }
    if matches!(which, "l4" | "all") {
        let cfg = L4Bench {
            dir: dir.join("l4"),
            duration: Duration::from_secs(if quick { 2 } else { 5 }),
            repeats: if quick { 1 } else { 3 },
            calls: if quick { 1000 } else { 5000 },
        };
        let e2e = !args.iter().any(|a| a == "--no-e2e");
        if let Err(e) = run_l4(&cfg, e2e) {
            eprintln!("lb-bench: L4: {e}");
            ok = false;
        }
    }
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
