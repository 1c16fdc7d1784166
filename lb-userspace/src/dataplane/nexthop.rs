//! The next-hop cache's control side. Established flows remember the next hop
//! `bpf_fib_lookup` gave them (egress interface, MACs) per *generation*; the data path uses
//! a cached hop only while `LB_NH_GEN` holds a non-zero generation and an unexpired lease.
//!
//! [`watch`] subscribes to rtnetlink (links, addresses, IPv4/IPv6 routes, IPv4 rules,
//! neighbours) in the calling thread's network namespace, bumps the generation on every
//! notification (and on a lost-message overrun), and renews the lease every second. When
//! the watcher stops (lb exits or the socket fails), the lease lapses within
//! [`LEASE`] and every packet goes back to a FIB lookup: a stale next hop is never
//! trusted longer than that, even under `--keep-dataplane` or SIGKILL.
//!
//! Changes the kernel does not announce on those groups (IPv6 policy rules, nexthop
//! objects) reach the cache only with the next announced change or a restart.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::path::Path;
use std::time::Duration;

use aya::maps::{Array, Map, MapData};
use lb_common::maps::names;
use lb_common::types::NextHopLease;

/// Serialises read-modify-writes of the lease within this process (the watcher renews
/// and bumps; `apply` bumps): a renewal must never write back a generation that a
/// concurrent bump has just retired.
static LEASE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds [`LEASE_LOCK`] (a poisoned lock is still usable: it guards no data).
pub(crate) fn lock() -> std::sync::MutexGuard<'static, ()> {
    LEASE_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(3);
const RENEW_EVERY_MS: u16 = 1000;

// rtnetlink multicast groups (linux/rtnetlink.h, RTMGRP_*).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV4_RULE: u32 = 0x80;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// Now on `CLOCK_MONOTONIC_COARSE`, the clock of the kernel's `ktime_get_coarse_ns`.
pub fn coarse_now_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// A lease for `generation` valid for `valid_for` from now (zero: already expired).
pub fn lease(generation: u32, valid_for: Duration) -> NextHopLease {
    NextHopLease {
        generation,
        _pad: 0,
        expires_ns: if valid_for.is_zero() {
            0
        } else {
            coarse_now_ns() + valid_for.as_nanos() as u64
        },
    }
}

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("rtnetlink socket: {0}")]
    Socket(std::io::Error),
    #[error("opening the pinned map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

fn open_lease_map(pin_dir: &Path) -> Result<Array<MapData, NextHopLease>, WatchError> {
    let map_err = |source| WatchError::Map {
        name: names::NH_GEN,
        source,
    };
    let data = MapData::from_pin(pin_dir.join(names::NH_GEN)).map_err(map_err)?;
    Array::try_from(Map::Array(data)).map_err(map_err)
}

fn rtnetlink_socket() -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkRoute,
    )?;
    let groups = RTMGRP_LINK
        | RTMGRP_NEIGH
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV4_RULE
        | RTMGRP_IPV6_IFADDR
        | RTMGRP_IPV6_ROUTE;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// Drains pending notifications; `Ok(true)` when any arrived (or some were lost).
fn drain(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<bool> {
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, recv};
    let mut any = false;
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Ok(any),
            Ok(_) => any = true,
            Err(Errno::EAGAIN) => return Ok(any),
            Err(Errno::EINTR) => {}
            // The socket buffer overflowed: notifications were lost, so assume a change.
            Err(Errno::ENOBUFS) => any = true,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts the watcher for the maps pinned in `pin_dir`, in the calling thread's network
/// namespace. Subscribes first, then bumps the generation (whatever changed while no
/// watcher ran is thereby forgotten), then follows on a background thread.
pub fn watch(pin_dir: &Path) -> Result<std::thread::JoinHandle<()>, WatchError> {
    let mut map = open_lease_map(pin_dir)?;
    let sock = rtnetlink_socket().map_err(WatchError::Socket)?;
    // The generation lives in the map only and is always read, bumped and written back, so
    // a value a flow may have cached is never handed out again (another watcher on the same
    // pins, or a previous lb, may have moved it).
    let current =
        |map: &Array<MapData, NextHopLease>| map.get(&0, 0).map(|l| l.generation).unwrap_or(0);
    let next = |g: u32| g.wrapping_add(1).max(1);
    let write = |map: &mut Array<MapData, NextHopLease>, g: u32, valid_for: Duration| {
        if let Err(e) = map.set(0, lease(g, valid_for), 0) {
            tracing::warn!("next-hop cache: writing the lease failed: {e}");
        }
    };
    {
        let _l = lock();
        let g = next(current(&map));
        write(&mut map, g, LEASE);
    }
    let handle = std::thread::Builder::new()
        .name("lb-nexthop".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let mut pfd = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
                if let Err(e) = poll(&mut pfd, PollTimeout::from(RENEW_EVERY_MS))
                    && e != nix::errno::Errno::EINTR
                {
                    break;
                }
                let changed = drain(&sock, &mut buf);
                let _l = lock();
                let g = current(&map);
                match changed {
                    Ok(true) => write(&mut map, next(g), LEASE),
                    // Renew, unless someone turned the cache off meanwhile.
                    Ok(false) if g == 0 => {}
                    Ok(false) => write(&mut map, g, LEASE),
                    Err(e) => {
                        tracing::warn!("next-hop cache: rtnetlink failed ({e}); cache off");
                        break;
                    }
                }
            }
            // Off now (an expired lease), rather than when the lease lapses; the
            // generation moves on so nothing cached so far is ever valid again.
            let _l = lock();
            let g = next(current(&map));
            write(&mut map, g, Duration::ZERO);
        })
        .map_err(WatchError::Socket)?;
    Ok(handle)
}
