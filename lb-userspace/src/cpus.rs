//! CPU binding of the L7 worker threads (`[global] cpu_map`, HAProxy's `cpu-map`).
//!
//! Linux only: `sched_getaffinity(2)` / `sched_setaffinity(2)` on the calling thread.

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// CPU numbers a [`CpuSet`] can hold (1024 with glibc's `cpu_set_t`).
pub const MAX_CPUS: usize = 1024;

/// The CPUs the calling thread may run on, ascending (the process's affinity when called
/// before any binding). Empty if the kernel call fails.
pub fn allowed() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count().min(MAX_CPUS))
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// Binds the calling thread to `cpu`.
pub fn bind_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// `0-3,6` style text of an ascending CPU list.
pub fn describe(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if out.is_empty() {
        "no CPU".to_owned()
    } else {
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_ranges() {
        assert_eq!(describe(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(describe(&[5]), "5");
        assert_eq!(describe(&[]), "no CPU");
    }

    #[test]
    fn this_thread_may_run_somewhere() {
        let cpus = allowed();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }
}
