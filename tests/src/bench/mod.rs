//! `cargo xtask bench`: lb side by side with HAProxy, nginx and nftables, in one run, on
//! this machine, reported as medians and ratios. Nothing here asserts a target: the report
//! states each target and whether the measured ratio meets it.

pub mod instr;
pub mod l4;
pub mod l7;
pub mod procstat;
pub mod report;
pub mod tools;
