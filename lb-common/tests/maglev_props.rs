//! Property tests of the Maglev builder and the data-path hash, over many pseudo-random
//! backend sets (a fixed-seed generator, so failures reproduce).

use lb_common::hash::{hash_flow, hash_src};
use lb_common::maglev::{MaglevBackend, NO_BACKEND, Scratch, build, is_prime};
use lb_common::maps::DEFAULT_MAGLEV_SIZE;

const SEED: u32 = 0x00c0_ffee;

/// xorshift64*: deterministic test input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn name(rng: &mut Rng) -> String {
    format!(
        "10.{}.{}.{}:{}",
        rng.below(256),
        rng.below(256),
        rng.below(256),
        1 + rng.below(65535)
    )
}

fn backends(names: &[String], weights: &[u32], m: u32) -> Vec<MaglevBackend> {
    names
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (n, w))| MaglevBackend::new(i as u32, *w, n.as_bytes(), SEED, m))
        .collect()
}

fn table(b: &[MaglevBackend], m: u32) -> Vec<u32> {
    let mut b = b.to_vec();
    let mut t = vec![0; m as usize];
    let mut s = vec![Scratch::default(); b.len()];
    build(&mut b, m, &mut t, &mut s).expect("valid input");
    t
}

fn counts(t: &[u32], n: usize) -> Vec<u64> {
    let mut c = vec![0u64; n];
    for &id in t {
        assert_ne!(id, NO_BACKEND, "every slot is filled");
        c[id as usize] += 1;
    }
    c
}

/// Table sizes: primes with M > 100 × N for the backend counts used.
const SIZES: [u32; 3] = [65537, 16411, 5003];

#[test]
fn imbalance_at_most_one_percent_when_m_exceeds_100n() {
    let mut rng = Rng(1);
    for &m in &SIZES {
        assert!(is_prime(m));
        for _ in 0..20 {
            let n = 1 + rng.below(u64::from(m / 101).min(200)) as usize;
            let names: Vec<String> = (0..n).map(|_| name(&mut rng)).collect();
            let t = table(&backends(&names, &vec![1; n], m), m);
            let ideal = f64::from(m) / n as f64;
            for c in counts(&t, n) {
                let dev = (c as f64 - ideal).abs() / ideal;
                assert!(dev <= 0.01, "m={m} n={n}: {c} slots vs ideal {ideal:.1}");
            }
        }
    }
}

#[test]
fn removing_a_backend_moves_only_about_its_share() {
    let mut rng = Rng(2);
    let m = DEFAULT_MAGLEV_SIZE;
    let mut worst_other = 0.0f64;
    for _ in 0..30 {
        let n = 2 + rng.below(60) as usize;
        let names: Vec<String> = (0..n).map(|_| name(&mut rng)).collect();
        let all = backends(&names, &vec![1; n], m);
        let before = table(&all, m);
        let gone = rng.below(n as u64) as u32;
        let rest: Vec<MaglevBackend> = all.iter().copied().filter(|b| b.id != gone).collect();
        let after = table(&rest, m);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64;
        let moved_other = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b && **a != gone)
            .count() as f64;
        // Every key of the removed backend moved.
        assert!(
            before
                .iter()
                .zip(&after)
                .all(|(a, b)| *a != gone || *b != gone)
        );
        let share = 1.0 / n as f64;
        let frac = moved / f64::from(m);
        assert!(
            frac <= share + 0.01,
            "n={n}: moved {frac:.4} > 1/n + 1% = {:.4}",
            share + 0.01
        );
        worst_other = worst_other.max(moved_other / f64::from(m));
    }
    // Keys of the surviving backends that moved (Maglev's small extra disruption).
    assert!(
        worst_other <= 0.01,
        "keys of other backends moved: {worst_other:.4}"
    );
    eprintln!("worst fraction of other backends' keys moved: {worst_other:.5}");
}

#[test]
fn shares_are_proportional_to_weights() {
    let mut rng = Rng(3);
    let m = DEFAULT_MAGLEV_SIZE;
    for _ in 0..20 {
        let n = 2 + rng.below(20) as usize;
        let names: Vec<String> = (0..n).map(|_| name(&mut rng)).collect();
        let weights: Vec<u32> = (0..n).map(|_| 1 + rng.below(256) as u32).collect();
        let t = table(&backends(&names, &weights, m), m);
        let total: u32 = weights.iter().sum();
        for (c, w) in counts(&t, n).iter().zip(&weights) {
            let ideal = f64::from(m) * f64::from(*w) / f64::from(total);
            // One slot per round of rounding, plus 1% of the ideal share.
            assert!(
                (*c as f64 - ideal).abs() <= ideal * 0.01 + 2.0,
                "weights {weights:?}: weight {w} got {c}, ideal {ideal:.1}"
            );
        }
    }
    // Weight 0 takes nothing.
    let names: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:80")).collect();
    let t = table(&backends(&names, &[1, 0, 1], 251), 251);
    assert!(!t.contains(&1));
}

fn digest(t: &[u32]) -> u64 {
    // FNV-1a over the little-endian bytes of every entry.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in t {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn reference_table() -> Vec<u32> {
    let names: Vec<String> = (1..=5).map(|i| format!("10.1.0.{i}:8080")).collect();
    table(
        &backends(&names, &[1, 1, 2, 3, 1], DEFAULT_MAGLEV_SIZE),
        DEFAULT_MAGLEV_SIZE,
    )
}

/// Pinned: a change means every deployed balancer would re-map flows on upgrade, and nodes
/// of mixed versions would disagree. Change it only deliberately.
const REFERENCE_DIGEST: u64 = 0x89ea_c49e_11a4_5c46;

#[test]
fn same_input_same_table_across_processes() {
    let d = digest(&reference_table());
    if std::env::var_os("LB_MAGLEV_DIGEST_CHILD").is_some() {
        println!("digest={d:016x}");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "same_input_same_table_across_processes",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LB_MAGLEV_DIGEST_CHILD", "1")
        .output()
        .expect("spawn test binary");
    let text = String::from_utf8_lossy(&out.stdout);
    let child = text
        .split("digest=")
        .nth(1)
        .and_then(|rest| rest.get(..16))
        .expect("child printed its digest");
    assert_eq!(
        child,
        format!("{d:016x}"),
        "a separate process built the same table"
    );
    assert_eq!(d, REFERENCE_DIGEST, "committed digest: {d:#018x}");
}

#[test]
fn data_path_hash_spreads_100k_sources_evenly_over_3_backends() {
    let m = DEFAULT_MAGLEV_SIZE;
    let names: Vec<String> = (10..13).map(|i| format!("10.1.0.{i}:8080")).collect();
    let t = table(&backends(&names, &[1, 1, 1], m), m);
    let vip = [u32::from_ne_bytes([203, 0, 113, 10]), 0, 0, 0];
    let mut by_src = [0u64; 3];
    let mut by_flow = [0u64; 3];
    for i in 0..100_000u32 {
        let o = i.to_be_bytes();
        let src = [u32::from_ne_bytes([100, o[1], o[2], o[3]]), 0, 0, 0];
        let h = hash_src(&src, SEED);
        by_src[t[(h % m) as usize] as usize] += 1;
        let sport = (1024 + (i % 60000) as u16).to_be();
        let h = hash_flow(&src, &vip, sport, 80u16.to_be(), 6, SEED);
        by_flow[t[(h % m) as usize] as usize] += 1;
    }
    for counts in [by_src, by_flow] {
        for c in counts {
            let dev = (c as f64 - 100_000.0 / 3.0).abs() / (100_000.0 / 3.0);
            assert!(dev <= 0.02, "{counts:?}");
        }
    }
}
