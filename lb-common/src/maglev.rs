//! Maglev consistent-hash table builder (Eisenbud et al., NSDI 2016), with weights.
//!
//! Pure and `no_std`: [`build`] writes into caller-provided slices, so the control plane and
//! the host tests run the same code. Every backend's permutation comes from a stable identity
//! (its name or address string) hashed with the shared seed ([`permutation`]), and backends are
//! visited in an order derived from that identity only, so two balancers given one config build
//! identical tables whatever backend ids they assigned locally.
//!
//! Weights: in each round every backend earns `weight` credits and claims one slot per
//! `max_weight` credits, so shares are proportional to weights; with equal weights every
//! backend owns `⌊M/N⌋` or `⌈M/N⌉` slots.

use crate::hash::hash_bytes;

/// Table entries with no backend (only in tables of VIPs without any backend).
pub const NO_BACKEND: u32 = u32::MAX;

/// Second seed component for the skip value, so offset and skip are independent.
const SKIP_SEED_XOR: u32 = 0x9e37_79b9;

/// One backend as the builder sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaglevBackend {
    /// The value written into the table (the data path's backend id).
    pub id: u32,
    /// Relative weight; backends with weight 0 get no slots.
    pub weight: u32,
    /// Permutation start, `< M`.
    pub offset: u32,
    /// Permutation step, `1..M`.
    pub skip: u32,
}

impl MaglevBackend {
    /// A backend whose permutation is derived from `identity` (e.g. `b"10.0.0.1:80"`).
    pub fn new(id: u32, weight: u32, identity: &[u8], seed: u32, m: u32) -> Self {
        let (offset, skip) = permutation(identity, seed, m);
        Self {
            id,
            weight,
            offset,
            skip,
        }
    }
}

/// Errors from [`build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size is not a prime (or is < 3).
    NotPrime(u32),
    /// `table` is not exactly `m` entries long.
    TableLen { expected: u32, got: usize },
    /// `scratch` is shorter than the number of backends.
    ScratchTooShort,
    /// More backends with a non-zero weight than table slots.
    TooManyBackends,
}

impl core::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MaglevError::NotPrime(m) => write!(f, "Maglev table size {m} is not a prime"),
            MaglevError::TableLen { expected, got } => {
                write!(f, "Maglev table has {got} entries, expected {expected}")
            }
            MaglevError::ScratchTooShort => write!(f, "Maglev scratch space too short"),
            MaglevError::TooManyBackends => write!(f, "more backends than Maglev table slots"),
        }
    }
}

/// True when `n` is prime.
pub const fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The permutation `(offset, skip)` of a backend identity for table size `m` (prime, ≥ 3).
pub fn permutation(identity: &[u8], seed: u32, m: u32) -> (u32, u32) {
    let m = m.max(3);
    let offset = hash_bytes(identity, seed) % m;
    let skip = hash_bytes(identity, seed ^ SKIP_SEED_XOR) % (m - 1) + 1;
    (offset, skip)
}

/// Per-backend builder state, in caller-provided scratch space.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scratch {
    next: u32,
    credit: u64,
}

/// Fills `table` (exactly `m` entries, `m` prime) from `backends`.
///
/// `backends` is reordered (sorted by permutation, then weight and id) so the result does not
/// depend on the caller's order. `scratch` needs one entry per backend. With no backend of
/// non-zero weight the table is filled with [`NO_BACKEND`].
pub fn build(
    backends: &mut [MaglevBackend],
    m: u32,
    table: &mut [u32],
    scratch: &mut [Scratch],
) -> Result<(), MaglevError> {
    if !is_prime(m) || m < 3 {
        return Err(MaglevError::NotPrime(m));
    }
    if table.len() != m as usize {
        return Err(MaglevError::TableLen {
            expected: m,
            got: table.len(),
        });
    }
    if scratch.len() < backends.len() {
        return Err(MaglevError::ScratchTooShort);
    }
    table.fill(NO_BACKEND);
    backends.sort_unstable_by_key(|b| (b.offset, b.skip, b.weight, b.id));
    let max_weight = backends.iter().map(|b| b.weight).max().unwrap_or(0);
    let active = backends.iter().filter(|b| b.weight > 0).count();
    if active == 0 {
        return Ok(());
    }
    if active > m as usize {
        return Err(MaglevError::TooManyBackends);
    }
    for (s, b) in scratch.iter_mut().zip(backends.iter()) {
        *s = Scratch {
            next: b.offset % m,
            credit: 0,
        };
    }
    let mut filled: u32 = 0;
    'rounds: loop {
        for (s, b) in scratch.iter_mut().zip(backends.iter()) {
            if b.weight == 0 {
                continue;
            }
            s.credit += u64::from(b.weight);
            while s.credit >= u64::from(max_weight) {
                s.credit -= u64::from(max_weight);
                // Claim the next free slot of this backend's permutation.
                let skip = b.skip % m;
                let mut c = s.next;
                while table[c as usize] != NO_BACKEND {
                    c = ((u64::from(c) + u64::from(skip)) % u64::from(m)) as u32;
                }
                table[c as usize] = b.id;
                s.next = ((u64::from(c) + u64::from(skip)) % u64::from(m)) as u32;
                filled += 1;
                if filled == m {
                    break 'rounds;
                }
            }
        }
    }
    Ok(())
}

/// Convenience wrapper that allocates (host side only).
#[cfg(feature = "user")]
pub fn build_table(
    backends: &[MaglevBackend],
    m: u32,
) -> Result<alloc::vec::Vec<u32>, MaglevError> {
    let mut b = alloc::vec::Vec::from(backends);
    let mut table = alloc::vec![NO_BACKEND; m as usize];
    let mut scratch = alloc::vec![Scratch::default(); b.len()];
    build(&mut b, m, &mut table, &mut scratch)?;
    Ok(table)
}

/// Second chance (GLB Director's): every `LB_MAGLEV` entry also names the backend its bucket
/// had before a change moved it away from a server that is still a backend of the VIP.
/// Bits 0–15 are the current backend id ([`NO_BACKEND`] reads `0xffff`), bits 16–30 the
/// previous one plus one (0: none), and bit 31 ([`SLOT_SECOND_CHANCE`]) says the bucket
/// left it because it went out of service keeping its flows (drained, DOWN or MAINT), so
/// TCP segments without state go to it. Replies from the previous backend count as
/// balanced either way. Backend ids are below [`crate::maps::MAX_BACKENDS`], so tables
/// written before second chance read as "no previous backend".
pub const SLOT_ID_MASK: u32 = 0xffff;

/// See [`SLOT_ID_MASK`].
pub const SLOT_SECOND_CHANCE: u32 = 1 << 31;

/// The current backend id of table entry `slot` (`0xffff` for [`NO_BACKEND`]).
#[inline(always)]
pub fn slot_current(slot: u32) -> u32 {
    slot & SLOT_ID_MASK
}

/// The previous backend id of table entry `slot`; `u32::MAX`, or another value not below
/// `MAX_BACKENDS`, when there is none.
#[inline(always)]
pub fn slot_previous(slot: u32) -> u32 {
    ((slot >> 16) & 0x7fff).wrapping_sub(1)
}

/// Table entries for a new table `new` (backend ids from [`build_table`]) replacing `old`
/// (entries of the live table, `None` for a new VIP); `state(id)` is a backend's
/// `BACKEND_*` state as this change leaves it. A bucket keeps the previous backend it had
/// while that one is still a backend (UP or DRAIN) and not its current one again;
/// otherwise a bucket that moves away from a backend that is still one remembers it,
/// with [`SLOT_SECOND_CHANCE`] when it is DRAIN. The older one wins: when several servers
/// leave one after the other (a node drained server by server), every bucket remembers
/// the server its established flows were balanced to (host side only).
#[cfg(feature = "user")]
pub fn with_previous(
    new: &[u32],
    old: Option<&[u32]>,
    state: impl Fn(u32) -> u8,
) -> alloc::vec::Vec<u32> {
    use crate::types::{BACKEND_DRAIN, BACKEND_UP};
    let member =
        |id: u32| id < crate::maps::MAX_BACKENDS && matches!(state(id), BACKEND_UP | BACKEND_DRAIN);
    new.iter()
        .enumerate()
        .map(|(i, &cur)| {
            let cur = cur & SLOT_ID_MASK;
            let prev = old.and_then(|o| o.get(i)).and_then(|&o| {
                let (old_cur, old_prev) = (slot_current(o), slot_previous(o));
                if member(old_prev) && old_prev != cur {
                    Some((old_prev, o & SLOT_SECOND_CHANCE))
                } else if member(old_cur) && old_cur != cur {
                    let chance = if state(old_cur) == BACKEND_DRAIN {
                        SLOT_SECOND_CHANCE
                    } else {
                        0
                    };
                    Some((old_cur, chance))
                } else {
                    None
                }
            });
            match prev {
                Some((id, chance)) => cur | ((id + 1) << 16) | chance,
                None => cur,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::vec;
    use std::vec::Vec;

    const SEED: u32 = 0x5eed;

    #[test]
    fn second_chance_remembers_the_previous_backend_of_each_bucket() {
        use crate::types::{BACKEND_DRAIN, BACKEND_UNUSED, BACKEND_UP};
        let prev = |t: &[u32]| t.iter().map(|s| slot_previous(*s)).collect::<Vec<_>>();
        let chance = |t: &[u32]| {
            t.iter()
                .map(|s| s & SLOT_SECOND_CHANCE != 0)
                .collect::<Vec<_>>()
        };
        // Buckets 0 and 1: backend 1, which drains; bucket 2 moves off backend 2 (UP);
        // bucket 3 stays on 2.
        let old = vec![1, 1, 2, 2];
        let new = vec![2, 3, 3, 2];
        let drained = |id: u32| if id == 1 { BACKEND_DRAIN } else { BACKEND_UP };
        let t = with_previous(&new, Some(&old), drained);
        assert_eq!(t.iter().map(|s| slot_current(*s)).collect::<Vec<_>>(), new);
        assert_eq!(prev(&t), vec![1, 1, 2, u32::MAX]);
        assert_eq!(chance(&t), vec![true, true, false, false]);
        // A second change keeps the remembered server (and its flag) while it is one …
        let t2 = with_previous(&[3, 2, 3, 3], Some(&t), drained);
        assert_eq!(prev(&t2), vec![1, 1, 2, 2]);
        assert_eq!(chance(&t2), vec![true, true, false, false]);
        // … also when the current one leaves too (the older one wins) …
        let both = |id: u32| if id <= 2 { BACKEND_DRAIN } else { BACKEND_UP };
        let t3 = with_previous(&[3, 3, 3, 3], Some(&t2), both);
        // (bucket 3 left backend 2 while it was UP: no second chance when 2 drains later,
        // its newer flows are on 3).
        assert_eq!(prev(&t3), vec![1, 1, 2, 2]);
        assert_eq!(chance(&t3), vec![true, true, false, false]);
        // Bucket 3 leaving backend 2 as it drains: second chance.
        let t3c = with_previous(&[3, 3, 3, 3], Some(&t), both);
        assert_eq!(prev(&t3c), vec![1, 1, 2, 2]);
        assert_eq!(chance(&t3c), vec![true, true, false, true]);
        // … and forgets it when it is the bucket's backend again or no backend any more.
        let t4 = with_previous(&[1, 3, 3, 3], Some(&t2), |id| {
            if id == 1 { BACKEND_UP } else { BACKEND_UNUSED }
        });
        assert_eq!(prev(&t4), vec![u32::MAX, 1, u32::MAX, u32::MAX]);
        // No table before, and tables without backends.
        let fresh = with_previous(&[NO_BACKEND; 2], None, |_| BACKEND_DRAIN);
        assert!(fresh.iter().all(|s| slot_current(*s) == SLOT_ID_MASK));
        assert_eq!(prev(&fresh), vec![u32::MAX; 2]);
        let empty = with_previous(&[NO_BACKEND; 4], Some(&old), |_| BACKEND_DRAIN);
        assert_eq!(prev(&empty), vec![1, 1, 2, 2]);
        // Entries written before second chance (plain ids) have no previous backend.
        assert_eq!(prev(&old), vec![u32::MAX; 4]);
        assert!(slot_previous(NO_BACKEND) >= crate::maps::MAX_BACKENDS);
    }

    fn backends(n: u32, m: u32) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| {
                MaglevBackend::new(
                    i,
                    1,
                    format!("10.0.{}.{}:80", i / 250, i % 250).as_bytes(),
                    SEED,
                    m,
                )
            })
            .collect()
    }

    fn table_of(b: &[MaglevBackend], m: u32) -> Vec<u32> {
        let mut b = b.to_vec();
        let mut t = vec![0; m as usize];
        let mut s = vec![Scratch::default(); b.len()];
        build(&mut b, m, &mut t, &mut s).expect("valid input");
        t
    }

    fn counts(t: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &id in t {
            c[id as usize] += 1;
        }
        c
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(251));
        assert!(!is_prime(65535));
        assert!(!is_prime(1));
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut b = backends(2, 7);
        let mut t = vec![0; 8];
        let mut s = vec![Scratch::default(); 2];
        assert_eq!(
            build(&mut b, 8, &mut t, &mut s),
            Err(MaglevError::NotPrime(8))
        );
        assert!(matches!(
            build(&mut b, 7, &mut t, &mut s),
            Err(MaglevError::TableLen { .. })
        ));
    }

    #[test]
    fn empty_backend_set_fills_no_backend() {
        let t = table_of(&[], 13);
        assert!(t.iter().all(|&x| x == NO_BACKEND));
    }

    #[test]
    fn balance_within_one_percent() {
        let m = 65537;
        for n in [1u32, 3, 10, 100, 655] {
            let t = table_of(&backends(n, m), m);
            let c = counts(&t, n as usize);
            let ideal = f64::from(m) / f64::from(n);
            for &x in &c {
                let dev = (x as f64 - ideal).abs() / ideal;
                assert!(dev <= 0.01, "n={n}: count {x} vs ideal {ideal}");
            }
        }
    }

    #[test]
    fn order_independent() {
        let m = 251;
        let b = backends(7, m);
        let mut r = b.clone();
        r.reverse();
        assert_eq!(table_of(&b, m), table_of(&r, m));
    }
}
