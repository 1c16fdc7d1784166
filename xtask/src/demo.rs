//! `cargo xtask demo`: the namespaced lab that shows lb balancing real traffic.

use anyhow::bail;

/// What the demo will do, printed while it is not built yet.
const PLAN: &str = "\
cargo xtask demo is not built yet. When it is, this one command will:
  1. bootstrap the toolchain and build lb;
  2. create a namespaced lab: a client, the balancer and 3 backends running small HTTP and
     TCP servers, with a demo TLS certificate generated at start;
  3. run lb with config/demo.toml: a tcp VIP balanced by XDP, and http + https frontends
     with ACLs and sticky cookies;
  4. drive traffic and show the per-backend distribution live;
  5. kill one backend, show health checks remove it from the maps and the L7 pool, then
     bring it back;
  6. print where to look (/stats, /metrics, lb stats) and clean everything up on exit.
Nothing was started.";

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    println!("{PLAN}");
    bail!("the demo does not exist yet")
}
