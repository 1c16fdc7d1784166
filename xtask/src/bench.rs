//! `cargo xtask bench`: lb side by side with HAProxy, nginx and nftables, as ratios.

use anyhow::bail;

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    bail!("benchmarks are not built yet; nothing was measured")
}
