//! Bounds-checked packet access and header parsing.

use aya_ebpf::programs::XdpContext;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// Returns a pointer to `T` at `offset`, or `None` when it would cross `data_end`.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The Ethernet layer of a packet: where it starts and the EtherType after any VLAN tag.
pub struct Ethernet {
    pub offset_eth: usize,
    /// Offset of the L3 header.
    pub offset_l3: usize,
    /// EtherType of the L3 header, host order.
    pub ether_type: u16,
}

/// Parses Ethernet with at most one 802.1Q/802.1ad tag. `None` for truncated frames.
#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Option<Ethernet> {
    let proto: *const [u8; 2] = ptr_at(ctx, 12)?;
    // SAFETY: bounds checked by `ptr_at`.
    let mut ether_type = u16::from_be_bytes(unsafe { *proto });
    let mut offset_l3 = ETH_HLEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let inner: *const [u8; 2] = ptr_at(ctx, 16)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = u16::from_be_bytes(unsafe { *inner });
        offset_l3 += 4;
    }
    Some(Ethernet {
        offset_eth: 0,
        offset_l3,
        ether_type,
    })
}

/// Swaps source and destination MAC addresses.
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext, offset_eth: usize) {
    if let Some(macs) = ptr_at::<[u8; 12]>(ctx, offset_eth) {
        // SAFETY: bounds checked by `ptr_at`.
        unsafe {
            let m = *macs;
            let mut out = [0u8; 12];
            out[..6].copy_from_slice(&m[6..]);
            out[6..].copy_from_slice(&m[..6]);
            *macs = out;
        }
    }
}
