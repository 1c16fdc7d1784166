//! Incremental Internet checksum updates (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
//!
//! Every value is handled as raw memory (network byte order read natively): the
//! one's-complement sum is byte-order independent as long as 16-bit words stay aligned to
//! the checksummed region, which holds for every field rewritten here.

/// Accumulated `~m + m'` over changed 16-bit words.
#[derive(Clone, Copy)]
pub struct Delta(u64);

impl Delta {
    #[inline(always)]
    pub const fn new() -> Self {
        Delta(0)
    }

    /// One 16-bit word changed from `old` to `new`.
    #[inline(always)]
    pub fn u16(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    /// One 32-bit word changed.
    #[inline(always)]
    pub fn u32(&mut self, old: u32, new: u32) {
        self.u16(old as u16, new as u16);
        self.u16((old >> 16) as u16, (new >> 16) as u16);
    }

    /// An address changed; IPv4 addresses use word 0 only.
    #[inline(always)]
    pub fn addr(&mut self, old: &[u32; 4], new: &[u32; 4], v6: bool) {
        self.u32(old[0], new[0]);
        if v6 {
            self.u32(old[1], new[1]);
            self.u32(old[2], new[2]);
            self.u32(old[3], new[3]);
        }
    }

    /// Adds another delta.
    #[inline(always)]
    pub fn merge(&mut self, other: Delta) {
        self.0 += other.0;
    }
}

#[inline(always)]
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum `csum` updated for the changes in `d`.
#[inline(always)]
pub fn apply(csum: u16, d: Delta) -> u16 {
    !fold(u64::from(!csum) + d.0)
}

/// Same, for an IPv4 UDP checksum: zero ("no checksum") stays zero, and a computed zero is
/// sent as `0xffff` (RFC 768).
#[inline(always)]
pub fn apply_udp4(csum: u16, d: Delta) -> u16 {
    if csum == 0 {
        return 0;
    }
    let c = apply(csum, d);
    if c == 0 { 0xffff } else { c }
}

/// The checksum field value for a region whose word sum (checksum field zero) is `s`.
#[inline(always)]
pub fn finish(s: u32) -> u16 {
    !fold(u64::from(s))
}
