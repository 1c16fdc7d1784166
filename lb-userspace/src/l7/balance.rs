//! Server selection: `balance roundrobin|leastconn|source|random`, weights and `backup`
//! servers. A [`Selector`] is built from a snapshot of the registry (status and weight) and
//! swapped whole when the registry changes; each pick also re-checks the live status, so a
//! server that just went DOWN is never picked even before the rebuild lands.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use crate::config::model::Balance;
use crate::state::ServerState;

/// Errors of this module (none today: building a selector cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("backend {0} has no server")]
    Empty(String),
}

/// One candidate server: its index in the backend's server list, snapshot weight and live
/// state.
#[derive(Debug, Clone)]
pub struct Member {
    pub idx: usize,
    pub weight: u32,
    /// Stable per-server hash (of its name), for consistent hashing.
    pub key: u64,
    pub state: Arc<ServerState>,
}

/// What a pick may depend on.
#[derive(Debug, Clone, Copy)]
pub struct PickCtx {
    pub src: IpAddr,
    /// The hash of the request's key for `balance uri` (None elsewhere).
    pub key: Option<u64>,
}

impl PickCtx {
    /// A pick that depends on the client only.
    pub fn client(src: IpAddr) -> Self {
        Self { src, key: None }
    }
}

/// A server-selection algorithm over a fixed set of members.
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// Picks a member index (in the backend's server list), skipping those `avoid` rejects.
    fn pick(&self, ctx: &PickCtx, avoid: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Whether a server may take new traffic right now.
pub fn usable(s: &ServerState) -> bool {
    s.status().is_usable() && s.weight() > 0
}

/// A server as selectors see it: live state, `backup` flag, stable hash key.
pub type Entry = (Arc<ServerState>, bool, u64);

/// Builds the selector for `servers` (indexed as in the backend) from their current
/// status: the usable non-backup servers, else the usable backup servers.
pub fn build(balance: Balance, servers: &[Entry]) -> Arc<dyn Selector> {
    let mut active = Vec::new();
    let mut backup = Vec::new();
    for (idx, (state, is_backup, key)) in servers.iter().enumerate() {
        if !usable(state) {
            continue;
        }
        let m = Member {
            idx,
            weight: state.weight(),
            key: *key,
            state: state.clone(),
        };
        if *is_backup {
            backup.push(m);
        } else {
            active.push(m);
        }
    }
    let members = if active.is_empty() { backup } else { active };
    match balance {
        Balance::RoundRobin => Arc::new(RoundRobin::new(members)),
        Balance::LeastConn => Arc::new(LeastConn {
            members,
            next: AtomicUsize::new(0),
        }),
        Balance::Source => Arc::new(SourceHash {
            members,
            by_key: false,
        }),
        Balance::Uri { .. } => Arc::new(SourceHash {
            members,
            by_key: true,
        }),
        Balance::Random => Arc::new(Random { members }),
    }
}

/// Smooth weighted round robin (nginx's algorithm), precomputed into a sequence so a pick
/// is one atomic increment.
#[derive(Debug)]
pub struct RoundRobin {
    members: Vec<Member>,
    seq: Vec<u32>,
    next: AtomicUsize,
}

impl RoundRobin {
    fn new(members: Vec<Member>) -> Self {
        // Scale weights down by their gcd so the sequence stays short.
        let g = members.iter().fold(0u32, |g, m| gcd(g, m.weight)).max(1);
        let weights: Vec<i64> = members.iter().map(|m| i64::from(m.weight / g)).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; members.len()];
        let mut seq = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            let mut best = 0;
            for i in 0..current.len() {
                current[i] += weights[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            seq.push(best as u32);
        }
        Self {
            members,
            seq,
            next: AtomicUsize::new(0),
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Selector for RoundRobin {
    fn pick(&self, _ctx: &PickCtx, avoid: &dyn Fn(usize) -> bool) -> Option<usize> {
        let len = self.seq.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..len {
            let m = &self.members[self.seq[(start + k) % len] as usize];
            if !avoid(m.idx) && usable(&m.state) {
                if k > 0 {
                    self.next.fetch_add(k, Ordering::Relaxed);
                }
                return Some(m.idx);
            }
        }
        None
    }
}

/// Fewest in-flight requests relative to weight; ties rotate.
#[derive(Debug)]
pub struct LeastConn {
    members: Vec<Member>,
    next: AtomicUsize,
}

impl Selector for LeastConn {
    fn pick(&self, _ctx: &PickCtx, avoid: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(&Member, u64)> = None;
        for k in 0..n {
            let m = &self.members[(start + k) % n];
            if avoid(m.idx) || !usable(&m.state) {
                continue;
            }
            let conns = m.state.counters.active_conns.load(Ordering::Relaxed);
            let better = match best {
                None => true,
                // conns/weight < best_conns/best_weight
                Some((b, bc)) => {
                    u128::from(conns) * u128::from(b.weight) < u128::from(bc) * u128::from(m.weight)
                }
            };
            if better {
                best = Some((m, conns));
            }
        }
        best.map(|(m, _)| m.idx)
    }
}

/// Consistent hash of the client address (`source`) or of the request's key (`uri`):
/// weighted rendezvous hashing, so removing a server only moves the keys it had.
#[derive(Debug)]
pub struct SourceHash {
    members: Vec<Member>,
    /// Hash [`PickCtx::key`] (falling back to the client when there is none).
    by_key: bool,
}

/// 64-bit mix (splitmix64 finaliser).
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of bytes, then mixed.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hash_bytes(&v4.octets()),
            None => hash_bytes(&v6.octets()),
        },
    }
}

impl Selector for SourceHash {
    fn pick(&self, ctx: &PickCtx, avoid: &dyn Fn(usize) -> bool) -> Option<usize> {
        let h = match (self.by_key, ctx.key) {
            (true, Some(k)) => k,
            _ => hash_ip(ctx.src),
        };
        let mut best: Option<(usize, f64)> = None;
        for m in &self.members {
            if avoid(m.idx) || !usable(&m.state) {
                continue;
            }
            let x = mix64(h ^ m.key);
            // Uniform in (0,1), then weighted rendezvous score w / -ln(u).
            let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = f64::from(m.weight) / -u.ln();
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((m.idx, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Weighted random.
#[derive(Debug)]
pub struct Random {
    members: Vec<Member>,
}

impl Selector for Random {
    fn pick(&self, _ctx: &PickCtx, avoid: &dyn Fn(usize) -> bool) -> Option<usize> {
        let ok = |m: &Member| !avoid(m.idx) && usable(&m.state);
        let total: u64 = self
            .members
            .iter()
            .filter(|m| ok(m))
            .map(|m| u64::from(m.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = rand::rng().random_range(0..total);
        for m in self.members.iter().filter(|m| ok(m)) {
            let w = u64::from(m.weight);
            if r < w {
                return Some(m.idx);
            }
            r -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Registry;
    use std::collections::HashMap;

    fn servers(weights: &[(u32, bool)]) -> (Arc<Registry>, Vec<Entry>) {
        let reg = Arc::new(Registry::new());
        let v: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &(w, b))| {
                let name = format!("s{i}");
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().expect("addr");
                (
                    Arc::new(ServerState::new(&name, addr, w, b, false)),
                    b,
                    hash_bytes(name.as_bytes()),
                )
            })
            .collect();
        let be = Arc::new(crate::state::BackendState {
            name: "b".into(),
            servers: v.iter().map(|s| s.0.clone()).collect(),
            counters: Default::default(),
        });
        reg.replace(HashMap::from([("b".to_owned(), be)]), HashMap::new());
        (reg, v)
    }

    #[test]
    fn smooth_rr_respects_weights() {
        let (_r, s) = servers(&[(5, false), (1, false), (1, false)]);
        let sel = build(Balance::RoundRobin, &s);
        let ctx = PickCtx::client("1.2.3.4".parse().expect("ip"));
        let mut counts = [0; 3];
        let mut seq = Vec::new();
        for _ in 0..7 {
            let i = sel.pick(&ctx, &|_| false).expect("pick");
            counts[i] += 1;
            seq.push(i);
        }
        assert_eq!(counts, [5, 1, 1]);
        // Smooth: the heavy server never runs more than 3 in a row here.
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    /// `balance uri`: the same key always lands on the same server, different keys spread
    /// over all of them, and removing a server moves only the keys it had.
    #[test]
    fn uri_hash_is_consistent() {
        let (reg, s) = servers(&[(1, false), (1, false), (1, false)]);
        let sel = build(Balance::Uri { whole: false }, &s);
        let pick = |sel: &Arc<dyn Selector>, path: &str| {
            let ctx = PickCtx {
                src: "192.0.2.1".parse().expect("ip"),
                key: Some(hash_bytes(path.as_bytes())),
            };
            sel.pick(&ctx, &|_| false).expect("pick")
        };
        let paths: Vec<String> = (0..300).map(|i| format!("/img/{i}.png")).collect();
        let before: Vec<usize> = paths.iter().map(|p| pick(&sel, p)).collect();
        assert_eq!(
            before,
            paths.iter().map(|p| pick(&sel, p)).collect::<Vec<_>>()
        );
        let mut counts = [0; 3];
        for &i in &before {
            counts[i] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
        // Server 1 goes down: only its keys move.
        reg.set_status("b", "s1", crate::state::ServerStatus::Down)
            .expect("status");
        let sel = build(Balance::Uri { whole: false }, &s);
        for (p, &b) in paths.iter().zip(&before) {
            let now = pick(&sel, p);
            if b != 1 {
                assert_eq!(now, b, "{p} moved");
            } else {
                assert_ne!(now, 1);
            }
        }
    }

    #[test]
    fn backup_only_when_no_active() {
        let (reg, s) = servers(&[(1, false), (1, true)]);
        let ctx = PickCtx::client("1.2.3.4".parse().expect("ip"));
        let sel = build(Balance::RoundRobin, &s);
        for _ in 0..4 {
            assert_eq!(sel.pick(&ctx, &|_| false), Some(0));
        }
        reg.set_status("b", "s0", crate::state::ServerStatus::Down)
            .expect("set");
        // Live re-check: old selector refuses the down server.
        assert_eq!(sel.pick(&ctx, &|_| false), None);
        let sel = build(Balance::RoundRobin, &s);
        assert_eq!(sel.pick(&ctx, &|_| false), Some(1));
    }

    #[test]
    fn source_hash_is_consistent() {
        let (reg, s) = servers(&[(1, false), (1, false), (1, false), (1, false)]);
        let sel = build(Balance::Source, &s);
        let ips: Vec<IpAddr> = (0..200u8).map(|i| IpAddr::from([10, 0, 1, i])).collect();
        let before: Vec<usize> = ips
            .iter()
            .map(|&src| sel.pick(&PickCtx::client(src), &|_| false).expect("pick"))
            .collect();
        let mut counts = [0; 4];
        for &b in &before {
            counts[b] += 1;
        }
        assert!(counts.iter().all(|&c| c > 20), "{counts:?}");
        reg.set_status("b", "s2", crate::state::ServerStatus::Down)
            .expect("set");
        let sel = build(Balance::Source, &s);
        for (src, b) in ips.iter().zip(&before) {
            let a = sel.pick(&PickCtx::client(*src), &|_| false).expect("pick");
            if *b != 2 {
                assert_eq!(a, *b, "only the removed server's clients move");
            } else {
                assert_ne!(a, 2);
            }
        }
    }

    #[test]
    fn leastconn_and_random_skip_zero_weight() {
        let (reg, s) = servers(&[(1, false), (1, false)]);
        reg.set_weight("b", "s0", 0).expect("w");
        let ctx = PickCtx::client("1.2.3.4".parse().expect("ip"));
        for bal in [
            Balance::LeastConn,
            Balance::Random,
            Balance::RoundRobin,
            Balance::Source,
        ] {
            let sel = build(bal, &s);
            for _ in 0..10 {
                assert_eq!(sel.pick(&ctx, &|_| false), Some(1), "{bal:?}");
            }
        }
        s[1].0.counters.active_conns.store(5, Ordering::Relaxed);
        reg.set_weight("b", "s0", 1).expect("w");
        let sel = build(Balance::LeastConn, &s);
        assert_eq!(sel.pick(&ctx, &|_| false), Some(0));
    }
}
