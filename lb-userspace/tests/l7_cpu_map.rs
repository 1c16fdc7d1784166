//! `[global] cpu_map`: each L7 worker thread is bound to its CPU (and nothing else is).
//! Alone in its test binary so the only `lb-l7-*` threads in the process are this test's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod l7_support;

use std::time::Duration;

use l7_support::*;
use lb::config::model::*;

/// `Cpus_allowed_list` of every thread of this process named `lb-l7-N`, by N.
fn worker_cpus() -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let Some(n) = comm.trim().strip_prefix("lb-l7-") else {
            continue;
        };
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        out.push((n.parse().unwrap(), cpus));
    }
    out.sort();
    out
}

#[tokio::test]
async fn each_worker_is_bound_to_its_listed_cpu() {
    let allowed = lb::cpus::allowed();
    let (first, last) = (allowed[0], allowed[allowed.len() - 1]);
    let a = echo("a").await;
    let mut cfg = web_to(a.addr);
    cfg.global.threads = Some(3);
    cfg.global.cpu_map = Some(CpuMap::List(vec![last, first]));
    let (h, _reg) = start(cfg);
    // Workers bind themselves as they start; give them a moment.
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = worker_cpus();
        if seen.len() == 3 && seen.iter().all(|(_, c)| !c.contains(['-', ','])) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let want = |cpu: usize| cpu.to_string();
    assert_eq!(
        seen,
        vec![(0, want(last)), (1, want(first)), (2, want(last))],
        "worker i on list[i % 2]"
    );
    assert_eq!(
        lb::cpus::allowed(),
        allowed,
        "the calling thread stays unbound"
    );
    assert_eq!(get(addr_of(&h, "web"), "/", &[]).await.server(), "a");
    assert!(h.shutdown(Duration::from_secs(2)).await);
}
