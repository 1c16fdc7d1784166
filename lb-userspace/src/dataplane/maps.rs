//! Typed access to the data path's maps: the only code that reads or writes them.
//!
//! [`Dataplane`] wraps the loaded [`aya::Ebpf`]. Every operation borrows one map for its
//! duration. Maglev tables are written to the VIP's inactive half, then `active_table` is
//! flipped with a single `LB_VIPS` update, so the data path never sees a partial table.
//!
//! Kernel requirements: as for [`super::loader`]; reads and writes need CAP_BPF (or root).

use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::{Ebpf, Pod};
use lb_common::maps::{MAX_BACKENDS, MAX_VIPS, VIP_PORT_WORDS, names};
use lb_common::types::{
    BACKEND_UNUSED, Backend, FAMILY_V4, FAMILY_V6, FILTER_ALLOW, FILTER_DENY, FilterKeyV4,
    FilterKeyV6, FlowKey, FlowKeyV4, FlowValue, GlobalConfig, LocalAddrKey, NextHopLease, Reason,
    ReverseKey, ReverseValue, TrafficCounters, VipInfo, VipKey, VipSlot,
};

/// Errors from map operations.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("tx port {ifindex}: {source}")]
    TxPort {
        ifindex: u32,
        #[source]
        source: aya::maps::xdp::XdpMapError,
    },
    #[error("VIP id {0} is out of range (max {MAX_VIPS})")]
    VipId(u32),
    #[error("backend id {0} is out of range (max {MAX_BACKENDS})")]
    BackendId(u32),
    #[error("Maglev table has {got} entries, the data path expects {expected}")]
    TableSize { expected: u32, got: usize },
    #[error("VIP {0:?} is not configured")]
    NoVip(VipKey),
    #[error("counting possible CPUs ({0}): {1}")]
    Cpus(&'static str, std::io::Error),
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

/// Converts an address to the `[u32; 4]` network-order form of map keys, plus its family.
pub fn addr_words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(a) => ([u32::from_ne_bytes(a.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(a) => {
            let o = a.octets();
            let mut w = [0u32; 4];
            for (i, word) in w.iter_mut().enumerate() {
                *word = u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
            }
            (w, FAMILY_V6)
        }
    }
}

/// The inverse of [`addr_words`].
pub fn words_addr(words: &[u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V6 {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    }
}

/// A VIP key for `addr` and IP protocol `proto`.
pub fn vip_key(addr: SocketAddr, proto: u8) -> VipKey {
    let (a, family) = addr_words(addr.ip());
    VipKey {
        addr: a,
        port: addr.port().to_be(),
        proto,
        family,
    }
}

/// A backend map value for `addr` in `state`.
pub fn backend_value(addr: SocketAddr, state: u8) -> Backend {
    let (a, family) = addr_words(addr.ip());
    Backend {
        addr: a,
        port: addr.port().to_be(),
        family,
        state,
    }
}

/// The endpoint of a backend map value.
pub fn backend_addr(b: &Backend) -> SocketAddr {
    SocketAddr::new(words_addr(&b.addr, b.family), u16::from_be(b.port))
}

/// The endpoint of a VIP key.
pub fn vip_addr(k: &VipKey) -> SocketAddr {
    SocketAddr::new(words_addr(&k.addr, k.family), u16::from_be(k.port))
}

/// One source-filter entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterRule {
    /// 0 = global, `vip_id + 1` = one frontend.
    pub scope: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// `FILTER_DENY` or `FILTER_ALLOW`.
    pub verdict: u32,
}

impl FilterRule {
    /// The rule with host bits cleared (LPM tries ignore them, but diffs compare them).
    pub fn normalized(mut self) -> Self {
        self.addr = match self.addr {
            IpAddr::V4(a) => {
                let len = u32::from(self.prefix_len.min(32));
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let len = u32::from(self.prefix_len.min(128));
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        self
    }
}

/// Sums of the per-reason counters.
pub type ReasonCounts = Vec<(Reason, u64)>;

/// The loaded data path and typed operations on its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    maglev_size: u32,
    /// Last known live table per VIP id (active half index, contents), to skip rewrites.
    tables: StdHashMap<u32, (u32, Vec<u32>)>,
    /// Write Maglev tables with `BPF_MAP_UPDATE_BATCH` (else one update per entry).
    batch: bool,
    /// The flow tables' occupancy at the last [`Dataplane::sample_occupancy`].
    occupancy: Option<FlowOccupancy>,
}

/// How full the flow tables are: entries per family and per VIP id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowOccupancy {
    pub v4: u64,
    pub v6: u64,
    /// Entries per table (the conntrack size; each family has its own table).
    pub capacity: u64,
    pub per_vip: StdHashMap<u32, u64>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("maglev_size", &self.maglev_size)
            .finish()
    }
}

impl Dataplane {
    /// Wraps a loaded object. The Maglev table size is derived from the `LB_MAGLEV` map
    /// (`MAX_VIPS * 2 * M` entries), so it matches what the loader created or reused.
    pub fn new(ebpf: Ebpf) -> Result<Self, MapsError> {
        let mut dp = Dataplane {
            ebpf,
            maglev_size: 0,
            tables: StdHashMap::new(),
            batch: true,
            occupancy: None,
        };
        let len = {
            let arr: Array<&MapData, u32> =
                Array::try_from(dp.map(names::MAGLEV)?).map_err(map_err(names::MAGLEV))?;
            arr.len()
        };
        dp.maglev_size = len / (MAX_VIPS * 2);
        dp.sync_vip_mirrors()?;
        Ok(dp)
    }

    /// Brings `LB_VIP_SLOTS` and `LB_VIP_PORTS` in line with `LB_VIPS` (maps pinned by an
    /// older lb have the VIPs but neither mirror; the data path is correct without them,
    /// only slower).
    fn sync_vip_mirrors(&mut self) -> Result<(), MapsError> {
        for (key, info) in self.vips()? {
            self.write_vip_slot(info.vip_id, VipSlot { key, info })?;
            self.set_vip_port(u16::from_be(key.port))?;
        }
        Ok(())
    }

    fn vip_slot(&self, id: u32) -> Result<VipSlot, MapsError> {
        self.array_get(names::VIP_SLOTS, id)
    }

    fn write_vip_slot(&mut self, id: u32, slot: VipSlot) -> Result<(), MapsError> {
        if self.vip_slot(id)? == slot {
            return Ok(());
        }
        self.array_set(names::VIP_SLOTS, id, slot)
    }

    fn vip_port_word(&self, word: u32) -> Result<u32, MapsError> {
        self.array_get(names::VIP_PORTS, word)
    }

    fn write_vip_port_word(&mut self, word: u32, bits: u32) -> Result<(), MapsError> {
        if self.vip_port_word(word)? == bits {
            return Ok(());
        }
        self.array_set(names::VIP_PORTS, word, bits)
    }

    /// Marks `port` (host order) as used by some VIP.
    fn set_vip_port(&mut self, port: u16) -> Result<(), MapsError> {
        let word = u32::from(port) / 32;
        let bits = self.vip_port_word(word)? | 1 << (port % 32);
        self.write_vip_port_word(word, bits)
    }

    /// Recomputes the bitmap word of `port` (host order) from the VIPs left.
    fn refresh_vip_port(&mut self, port: u16) -> Result<(), MapsError> {
        let word = u32::from(port) / 32;
        debug_assert!(word < VIP_PORT_WORDS);
        let mut bits = 0u32;
        for (k, _) in self.vips()? {
            let p = u16::from_be(k.port);
            if u32::from(p) / 32 == word {
                bits |= 1 << (p % 32);
            }
        }
        self.write_vip_port_word(word, bits)
    }

    /// The Maglev table size M the data path uses.
    pub fn maglev_size(&self) -> u32 {
        self.maglev_size
    }

    /// Chooses how Maglev tables are written: batched (the default) or one update syscall
    /// per entry, the pre-batch behaviour, kept for kernels without batch operations and
    /// for benchmarks comparing the two.
    pub fn set_batch_updates(&mut self, enabled: bool) {
        self.batch = enabled;
    }

    /// The wrapped object (to attach programs).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The wrapped object.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    fn map(&self, name: &'static str) -> Result<&Map, MapsError> {
        self.ebpf.map(name).ok_or(MapsError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, MapsError> {
        self.ebpf.map_mut(name).ok_or(MapsError::MissingMap(name))
    }

    /// Every entry of hash map `name`.
    fn hash_entries<K: Pod, V: Pod>(&self, name: &'static str) -> Result<Vec<(K, V)>, MapsError> {
        let m: HashMap<&MapData, K, V> =
            HashMap::try_from(self.map(name)?).map_err(map_err(name))?;
        m.iter().map(|r| r.map_err(map_err(name))).collect()
    }

    /// The value of `key` in hash map `name`, `None` when absent.
    fn hash_get<K: Pod, V: Pod>(
        &self,
        name: &'static str,
        key: &K,
    ) -> Result<Option<V>, MapsError> {
        let m: HashMap<&MapData, K, V> =
            HashMap::try_from(self.map(name)?).map_err(map_err(name))?;
        match m.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Slot `index` of array map `name`.
    fn array_get<V: Pod>(&self, name: &'static str, index: u32) -> Result<V, MapsError> {
        let arr: Array<&MapData, V> = Array::try_from(self.map(name)?).map_err(map_err(name))?;
        arr.get(&index, 0).map_err(map_err(name))
    }

    /// Writes slot `index` of array map `name`.
    fn array_set<V: Pod>(
        &mut self,
        name: &'static str,
        index: u32,
        value: V,
    ) -> Result<(), MapsError> {
        let mut arr: Array<&mut MapData, V> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        arr.set(index, value, 0).map_err(map_err(name))
    }

    // ---- next-hop cache ----

    /// Writes the next-hop cache lease (see [`super::nexthop`]); generation 0 turns the
    /// cache off.
    pub fn set_nexthop_lease(&mut self, lease: NextHopLease) -> Result<(), MapsError> {
        let _l = super::nexthop::lock();
        self.write_nexthop_lease(lease)
    }

    fn write_nexthop_lease(&mut self, lease: NextHopLease) -> Result<(), MapsError> {
        self.array_set(names::NH_GEN, 0, lease)
    }

    /// Moves the next-hop generation on (keeping the lease), so no flow uses a next hop
    /// cached so far; a no-op while the cache is off.
    pub fn bump_nexthop_generation(&mut self) -> Result<(), MapsError> {
        let _l = super::nexthop::lock();
        let mut lease = self.nexthop_lease()?;
        if lease.generation == 0 {
            return Ok(());
        }
        lease.generation = lease.generation.wrapping_add(1).max(1);
        self.write_nexthop_lease(lease)
    }

    /// The next-hop cache lease.
    pub fn nexthop_lease(&self) -> Result<NextHopLease, MapsError> {
        self.array_get(names::NH_GEN, 0)
    }

    // ---- global config ----

    /// The global settings.
    pub fn global_config(&self) -> Result<GlobalConfig, MapsError> {
        self.array_get(names::CONFIG, 0)
    }

    /// Writes the global settings.
    pub fn set_global_config(&mut self, cfg: GlobalConfig) -> Result<(), MapsError> {
        self.array_set(names::CONFIG, 0, cfg)
    }

    // ---- VIPs ----

    /// Every configured VIP.
    pub fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>, MapsError> {
        self.hash_entries(names::VIPS)
    }

    /// One VIP's settings.
    pub fn vip(&self, key: &VipKey) -> Result<Option<VipInfo>, MapsError> {
        self.hash_get(names::VIPS, key)
    }

    /// Adds or updates a VIP.
    pub fn set_vip(&mut self, key: VipKey, info: VipInfo) -> Result<(), MapsError> {
        if info.vip_id >= MAX_VIPS {
            return Err(MapsError::VipId(info.vip_id));
        }
        let prev = self.vip(&key)?;
        self.set_vip_port(u16::from_be(key.port))?;
        {
            let mut m: HashMap<&mut MapData, VipKey, VipInfo> =
                HashMap::try_from(self.map_mut(names::VIPS)?).map_err(map_err(names::VIPS))?;
            m.insert(key, info, 0).map_err(map_err(names::VIPS))?;
        }
        // The mirror after the VIP (see `VipSlot`); a slot the VIP leaves is cleared.
        self.write_vip_slot(info.vip_id, VipSlot { key, info })?;
        if let Some(prev) = prev
            && prev.vip_id != info.vip_id
            && self.vip_slot(prev.vip_id)?.key == key
        {
            self.write_vip_slot(prev.vip_id, VipSlot::default())?;
        }
        Ok(())
    }

    /// Removes a VIP (its flows age out of the LRU; their packets are no longer balanced).
    pub fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapsError> {
        let prev = self.vip(key)?;
        {
            let mut m: HashMap<&mut MapData, VipKey, VipInfo> =
                HashMap::try_from(self.map_mut(names::VIPS)?).map_err(map_err(names::VIPS))?;
            match m.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(names::VIPS)(e)),
            }
        }
        if let Some(prev) = prev
            && prev.vip_id < MAX_VIPS
            && self.vip_slot(prev.vip_id)?.key == *key
        {
            self.write_vip_slot(prev.vip_id, VipSlot::default())?;
        }
        self.refresh_vip_port(u16::from_be(key.port))
    }

    // ---- backends ----

    /// Every backend id in use (state not UNUSED).
    pub fn backends(&self) -> Result<Vec<(u32, Backend)>, MapsError> {
        let arr: Array<&MapData, Backend> =
            Array::try_from(self.map(names::BACKENDS)?).map_err(map_err(names::BACKENDS))?;
        let mut out = Vec::new();
        for (id, b) in arr.iter().enumerate() {
            let b = b.map_err(map_err(names::BACKENDS))?;
            if b.state != BACKEND_UNUSED {
                out.push((id as u32, b));
            }
        }
        Ok(out)
    }

    /// One backend slot.
    pub fn backend(&self, id: u32) -> Result<Backend, MapsError> {
        if id >= MAX_BACKENDS {
            return Err(MapsError::BackendId(id));
        }
        self.array_get(names::BACKENDS, id)
    }

    /// Writes backend slot `id` (use `state = BACKEND_UNUSED` to free it).
    pub fn set_backend(&mut self, id: u32, b: Backend) -> Result<(), MapsError> {
        if id >= MAX_BACKENDS {
            return Err(MapsError::BackendId(id));
        }
        self.array_set(names::BACKENDS, id, b)
    }

    // ---- Maglev ----

    /// Reads half `half` (0 or 1) of VIP `vip_id`'s table.
    pub fn read_maglev(&self, vip_id: u32, half: u32) -> Result<Vec<u32>, MapsError> {
        if vip_id >= MAX_VIPS {
            return Err(MapsError::VipId(vip_id));
        }
        let m = self.maglev_size;
        let arr: Array<&MapData, u32> =
            Array::try_from(self.map(names::MAGLEV)?).map_err(map_err(names::MAGLEV))?;
        let base = (vip_id * 2 + (half & 1)) * m;
        (0..m)
            .map(|i| arr.get(&(base + i), 0).map_err(map_err(names::MAGLEV)))
            .collect()
    }

    /// Writes `table` into `LB_MAGLEV` from index `base`: one `BPF_MAP_UPDATE_BATCH` call
    /// (a few milliseconds for 65537 entries, Linux 5.6+) instead of one update syscall per
    /// entry (~100 ms). Falls back to per-entry updates when the kernel has no batch ops.
    fn write_maglev(&mut self, base: u32, table: &[u32]) -> Result<(), MapsError> {
        let keys: Vec<u32> = (0..table.len() as u32).map(|i| base + i).collect();
        let fd = match self.map(names::MAGLEV)? {
            Map::Array(data) => data.fd().as_fd().as_raw_fd(),
            _ => return Err(MapsError::MissingMap(names::MAGLEV)),
        };
        match if self.batch {
            update_batch(fd, &keys, table)
        } else {
            Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
        } {
            Ok(()) => return Ok(()),
            Err(e) if batch_unsupported(&e) => {}
            Err(e) => {
                return Err(MapsError::Map {
                    name: names::MAGLEV,
                    source: MapError::SyscallError(aya::sys::SyscallError {
                        call: "bpf_map_update_batch",
                        io_error: e,
                    }),
                });
            }
        }
        let mut arr: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(names::MAGLEV)?).map_err(map_err(names::MAGLEV))?;
        for (k, id) in keys.iter().zip(table) {
            arr.set(*k, *id, 0).map_err(map_err(names::MAGLEV))?;
        }
        Ok(())
    }

    /// The live table of a VIP: the current backend id of every bucket.
    pub fn live_table(&mut self, key: &VipKey) -> Result<Vec<u32>, MapsError> {
        Ok(self
            .live_slots(key)?
            .into_iter()
            .map(|s| match lb_common::maglev::slot_current(s) {
                lb_common::maglev::SLOT_ID_MASK => lb_common::maglev::NO_BACKEND,
                id => id,
            })
            .collect())
    }

    /// The live table's entries as the data path reads them (current and previous
    /// backend, `lb_common::maglev::with_previous`), from the cache or the map.
    pub fn live_slots(&mut self, key: &VipKey) -> Result<Vec<u32>, MapsError> {
        let info = self.vip(key)?.ok_or(MapsError::NoVip(*key))?;
        let half = info.active_table & 1;
        if let Some((h, t)) = self.tables.get(&info.vip_id)
            && *h == half
        {
            return Ok(t.clone());
        }
        let t = self.read_maglev(info.vip_id, half)?;
        self.tables.insert(info.vip_id, (half, t.clone()));
        Ok(t)
    }

    /// Publishes `table` for the VIP `key` with settings `info`: writes the half that is
    /// not live, then flips `active_table` (and sets `backend_count`, `flags`) in one
    /// `LB_VIPS` update. A VIP not yet in the map is created with the table live in half 0.
    pub fn publish_table(
        &mut self,
        key: VipKey,
        mut info: VipInfo,
        table: &[u32],
    ) -> Result<(), MapsError> {
        let m = self.maglev_size;
        if table.len() != m as usize {
            return Err(MapsError::TableSize {
                expected: m,
                got: table.len(),
            });
        }
        if info.vip_id >= MAX_VIPS {
            return Err(MapsError::VipId(info.vip_id));
        }
        let half = match self.vip(&key)? {
            Some(cur) if cur.vip_id == info.vip_id => (cur.active_table & 1) ^ 1,
            _ => 0,
        };
        let base = (info.vip_id * 2 + half) * m;
        self.write_maglev(base, table)?;
        info.active_table = half;
        self.set_vip(key, info)?;
        self.tables.insert(info.vip_id, (half, table.to_vec()));
        Ok(())
    }

    // ---- reverse NAT ----

    /// Every reverse-NAT entry.
    pub fn reverse_entries(&self) -> Result<Vec<(ReverseKey, ReverseValue)>, MapsError> {
        self.hash_entries(names::REVERSE)
    }

    /// Adds or updates a reverse-NAT entry.
    pub fn set_reverse(&mut self, k: ReverseKey, v: ReverseValue) -> Result<(), MapsError> {
        let mut m: HashMap<&mut MapData, ReverseKey, ReverseValue> =
            HashMap::try_from(self.map_mut(names::REVERSE)?).map_err(map_err(names::REVERSE))?;
        m.insert(k, v, 0).map_err(map_err(names::REVERSE))
    }

    /// Removes a reverse-NAT entry.
    pub fn remove_reverse(&mut self, k: &ReverseKey) -> Result<(), MapsError> {
        let mut m: HashMap<&mut MapData, ReverseKey, ReverseValue> =
            HashMap::try_from(self.map_mut(names::REVERSE)?).map_err(map_err(names::REVERSE))?;
        match m.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::REVERSE)(e)),
        }
    }

    // ---- local addresses ----

    /// The addresses currently marked local.
    pub fn local_addrs(&self) -> Result<Vec<IpAddr>, MapsError> {
        let m: HashMap<&MapData, LocalAddrKey, u32> =
            HashMap::try_from(self.map(names::LOCAL_ADDRS)?)
                .map_err(map_err(names::LOCAL_ADDRS))?;
        m.keys()
            .map(|k| {
                k.map(|k| words_addr(&k.addr, k.family))
                    .map_err(map_err(names::LOCAL_ADDRS))
            })
            .collect()
    }

    /// Makes the local-address set exactly `addrs`; returns the number of map writes.
    pub fn set_local_addrs(&mut self, addrs: &[IpAddr]) -> Result<usize, MapsError> {
        let current: std::collections::HashSet<IpAddr> = self.local_addrs()?.into_iter().collect();
        let wanted: std::collections::HashSet<IpAddr> = addrs.iter().copied().collect();
        let mut m: HashMap<&mut MapData, LocalAddrKey, u32> =
            HashMap::try_from(self.map_mut(names::LOCAL_ADDRS)?)
                .map_err(map_err(names::LOCAL_ADDRS))?;
        let key = |ip: IpAddr| {
            let (addr, family) = addr_words(ip);
            LocalAddrKey {
                addr,
                family,
                _pad: [0; 3],
            }
        };
        let mut writes = 0;
        for ip in wanted.difference(&current) {
            m.insert(key(*ip), 1, 0)
                .map_err(map_err(names::LOCAL_ADDRS))?;
            writes += 1;
        }
        for ip in current.difference(&wanted) {
            match m.remove(&key(*ip)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(names::LOCAL_ADDRS)(e)),
            }
            writes += 1;
        }
        Ok(writes)
    }

    // ---- filters ----

    /// Every source-filter rule in both tries.
    pub fn filters(&self) -> Result<Vec<FilterRule>, MapsError> {
        let mut out = Vec::new();
        let v4: LpmTrie<&MapData, FilterKeyV4, u32> =
            LpmTrie::try_from(self.map(names::FILTER_V4)?).map_err(map_err(names::FILTER_V4))?;
        for r in v4.iter() {
            let (k, verdict) = r.map_err(map_err(names::FILTER_V4))?;
            let d = k.data();
            out.push(FilterRule {
                scope: u32::from_be_bytes(d.scope),
                addr: IpAddr::V4(Ipv4Addr::from(d.addr)),
                prefix_len: k.prefix_len().saturating_sub(32) as u8,
                verdict,
            });
        }
        let v6: LpmTrie<&MapData, FilterKeyV6, u32> =
            LpmTrie::try_from(self.map(names::FILTER_V6)?).map_err(map_err(names::FILTER_V6))?;
        for r in v6.iter() {
            let (k, verdict) = r.map_err(map_err(names::FILTER_V6))?;
            let d = k.data();
            out.push(FilterRule {
                scope: u32::from_be_bytes(d.scope),
                addr: IpAddr::V6(Ipv6Addr::from(d.addr)),
                prefix_len: k.prefix_len().saturating_sub(32) as u8,
                verdict,
            });
        }
        Ok(out)
    }

    fn filter_op(&mut self, rule: FilterRule, insert: bool) -> Result<(), MapsError> {
        let rule = rule.normalized();
        let scope = rule.scope.to_be_bytes();
        let plen = 32 + u32::from(rule.prefix_len);
        match rule.addr {
            IpAddr::V4(a) => self.lpm_op(
                names::FILTER_V4,
                LpmKey::new(
                    plen,
                    FilterKeyV4 {
                        scope,
                        addr: a.octets(),
                    },
                ),
                rule.verdict,
                insert,
            ),
            IpAddr::V6(a) => self.lpm_op(
                names::FILTER_V6,
                LpmKey::new(
                    plen,
                    FilterKeyV6 {
                        scope,
                        addr: a.octets(),
                    },
                ),
                rule.verdict,
                insert,
            ),
        }
    }

    /// Inserts (`insert`) or removes `key` in the LPM trie `name`; removing an absent key
    /// is not an error.
    fn lpm_op<K: Pod>(
        &mut self,
        name: &'static str,
        key: LpmKey<K>,
        verdict: u32,
        insert: bool,
    ) -> Result<(), MapsError> {
        let mut t: LpmTrie<&mut MapData, K, u32> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let res = if insert {
            t.insert(&key, verdict, 0)
        } else {
            t.remove(&key)
        };
        match res {
            Ok(()) => Ok(()),
            Err(MapError::KeyNotFound) if !insert => Ok(()),
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Inserts (or updates the verdict of) every rule of `rules` not already present;
    /// removes nothing. Returns the number of map writes.
    pub fn add_filters(&mut self, rules: &[FilterRule]) -> Result<usize, MapsError> {
        let current: std::collections::HashSet<FilterRule> = self
            .filters()?
            .into_iter()
            .map(FilterRule::normalized)
            .collect();
        let mut writes = 0;
        let wanted: std::collections::BTreeSet<FilterRule> =
            rules.iter().map(|r| r.normalized()).collect();
        for r in wanted {
            if !current.contains(&r) {
                // An LPM update replaces the verdict of an existing prefix in place.
                self.filter_op(r, true)?;
                writes += 1;
            }
        }
        Ok(writes)
    }

    /// Makes the filter tries hold exactly `rules` (new rules first, then removals, so no
    /// prefix is ever briefly unfiltered); returns the number of map writes.
    pub fn set_filters(&mut self, rules: &[FilterRule]) -> Result<usize, MapsError> {
        let mut writes = self.add_filters(rules)?;
        let wanted: std::collections::HashSet<(u32, IpAddr, u8)> = rules
            .iter()
            .map(|r| r.normalized())
            .map(|r| (r.scope, r.addr, r.prefix_len))
            .collect();
        for r in self.filters()?.into_iter().map(FilterRule::normalized) {
            if !wanted.contains(&(r.scope, r.addr, r.prefix_len)) {
                self.filter_op(r, false)?;
                writes += 1;
            }
        }
        Ok(writes)
    }

    /// A deny rule (convenience).
    pub fn deny_rule(scope: u32, addr: IpAddr, prefix_len: u8) -> FilterRule {
        FilterRule {
            scope,
            addr,
            prefix_len,
            verdict: FILTER_DENY,
        }
    }

    /// An allow rule (convenience).
    pub fn allow_rule(scope: u32, addr: IpAddr, prefix_len: u8) -> FilterRule {
        FilterRule {
            scope,
            addr,
            prefix_len,
            verdict: FILTER_ALLOW,
        }
    }

    // ---- tx ports ----

    /// Registers interface `ifindex` as a redirect target.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<(), MapsError> {
        let mut m: DevMapHash<&mut MapData> = DevMapHash::try_from(self.map_mut(names::TX_PORTS)?)
            .map_err(map_err(names::TX_PORTS))?;
        m.insert(ifindex, ifindex, None, 0)
            .map_err(|source| MapsError::TxPort { ifindex, source })
    }

    /// Registered redirect targets.
    pub fn tx_ports(&self) -> Result<Vec<u32>, MapsError> {
        let m: DevMapHash<&MapData> =
            DevMapHash::try_from(self.map(names::TX_PORTS)?).map_err(map_err(names::TX_PORTS))?;
        m.keys()
            .map(|k| k.map_err(map_err(names::TX_PORTS)))
            .collect()
    }

    // ---- flows ----

    /// Every tracked flow (for stats and tests; walks the whole LRU).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, MapsError> {
        let v4: Vec<(FlowKeyV4, FlowValue)> = self.hash_entries(names::FLOWS_V4)?;
        let mut out: Vec<(FlowKey, FlowValue)> = self.hash_entries(names::FLOWS)?;
        out.extend(v4.into_iter().map(|(k, v)| (k.to_key(), v)));
        Ok(out)
    }

    /// One flow's entry.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, MapsError> {
        if key.family == FAMILY_V4 {
            self.hash_get(names::FLOWS_V4, &FlowKeyV4::from_key(key))
        } else {
            self.hash_get(names::FLOWS, key)
        }
    }

    /// Adds or replaces a flow entry (tests and state transfer).
    pub fn set_flow(&mut self, key: FlowKey, value: FlowValue) -> Result<(), MapsError> {
        if key.family == FAMILY_V4 {
            let mut m: HashMap<&mut MapData, FlowKeyV4, FlowValue> =
                HashMap::try_from(self.map_mut(names::FLOWS_V4)?)
                    .map_err(map_err(names::FLOWS_V4))?;
            return m
                .insert(FlowKeyV4::from_key(&key), value, 0)
                .map_err(map_err(names::FLOWS_V4));
        }
        let mut m: HashMap<&mut MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.map_mut(names::FLOWS)?).map_err(map_err(names::FLOWS))?;
        m.insert(key, value, 0).map_err(map_err(names::FLOWS))
    }

    /// Removes every tracked flow (both families) whose backend id is in `backend_ids`:
    /// their next packets miss the flow table and take a Maglev pick (HAProxy's
    /// `shutdown-sessions`: the new backend answers with a reset). Walks the whole LRU, on
    /// a state change only. Returns the number of entries removed.
    pub fn remove_flows_of(
        &mut self,
        backend_ids: &std::collections::BTreeSet<u32>,
    ) -> Result<usize, MapsError> {
        fn purge<K: Pod>(
            dp: &mut Dataplane,
            name: &'static str,
            ids: &std::collections::BTreeSet<u32>,
        ) -> Result<usize, MapsError> {
            let doomed: Vec<K> = dp
                .hash_entries::<K, FlowValue>(name)?
                .into_iter()
                .filter(|(_, v)| ids.contains(&v.backend_id))
                .map(|(k, _)| k)
                .collect();
            let mut m: HashMap<&mut MapData, K, FlowValue> =
                HashMap::try_from(dp.map_mut(name)?).map_err(map_err(name))?;
            let mut removed = 0;
            for k in &doomed {
                match m.remove(k) {
                    Ok(()) => removed += 1,
                    // Evicted or replaced meanwhile.
                    Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(name)(e)),
                }
            }
            Ok(removed)
        }
        if backend_ids.is_empty() {
            return Ok(0);
        }
        Ok(purge::<FlowKeyV4>(self, names::FLOWS_V4, backend_ids)?
            + purge::<FlowKey>(self, names::FLOWS, backend_ids)?)
    }

    // ---- counters ----

    /// Per-reason packet counts, summed over CPUs.
    pub fn reason_counters(&self) -> Result<ReasonCounts, MapsError> {
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(names::REASON_STATS)?)
            .map_err(map_err(names::REASON_STATS))?;
        Reason::ALL
            .iter()
            .map(|r| {
                let v = arr
                    .get(&(*r as u32), 0)
                    .map_err(map_err(names::REASON_STATS))?;
                Ok((*r, v.iter().sum()))
            })
            .collect()
    }

    /// One reason's count, summed over CPUs.
    pub fn reason_count(&self, reason: Reason) -> Result<u64, MapsError> {
        Ok(self
            .reason_counters()?
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, n)| n)
            .unwrap_or(0))
    }

    fn traffic(&self, name: &'static str, idx: u32) -> Result<TrafficCounters, MapsError> {
        let arr: PerCpuArray<&MapData, TrafficCounters> =
            PerCpuArray::try_from(self.map(name)?).map_err(map_err(name))?;
        let v = arr.get(&idx, 0).map_err(map_err(name))?;
        Ok(v.iter()
            .fold(TrafficCounters::default(), |a, c| TrafficCounters {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
                new_flows: a.new_flows + c.new_flows,
            }))
    }

    fn reset_traffic(&mut self, name: &'static str, idx: u32) -> Result<(), MapsError> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| MapsError::Cpus(what, e))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![TrafficCounters::default(); cpus])
            .map_err(|e| MapsError::Cpus("per-CPU values", e))?;
        let mut arr: PerCpuArray<&mut MapData, TrafficCounters> =
            PerCpuArray::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        arr.set(idx, zeros, 0).map_err(map_err(name))
    }

    /// Zeroes the counters of VIP `vip_id` (a new VIP reusing the id starts from zero).
    pub fn reset_vip_counters(&mut self, vip_id: u32) -> Result<(), MapsError> {
        if vip_id >= MAX_VIPS {
            return Err(MapsError::VipId(vip_id));
        }
        self.reset_traffic(names::VIP_STATS, vip_id)?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| MapsError::Cpus(what, e))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; cpus])
            .map_err(|e| MapsError::Cpus("per-CPU values", e))?;
        let mut arr: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map_mut(names::VIP_MISSES)?)
                .map_err(map_err(names::VIP_MISSES))?;
        arr.set(vip_id, zeros, 0)
            .map_err(map_err(names::VIP_MISSES))
    }

    /// TCP packets without SYN that found no flow entry at VIP `vip_id` (summed over CPUs).
    pub fn vip_misses(&self, vip_id: u32) -> Result<u64, MapsError> {
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(names::VIP_MISSES)?)
            .map_err(map_err(names::VIP_MISSES))?;
        let v = arr.get(&vip_id, 0).map_err(map_err(names::VIP_MISSES))?;
        Ok(v.iter().sum())
    }

    /// Counts the entries of both flow tables, per VIP, and keeps the result for
    /// [`Dataplane::occupancy`]. Reads the tables with `BPF_MAP_LOOKUP_BATCH` (one entry
    /// per lookup on kernels without it); meant for a periodic sampler, not per packet or
    /// per scrape.
    pub fn sample_occupancy(&mut self) -> Result<FlowOccupancy, MapsError> {
        let mut occ = FlowOccupancy::default();
        for (name, key_size) in [
            (names::FLOWS_V4, std::mem::size_of::<FlowKeyV4>()),
            (names::FLOWS, std::mem::size_of::<FlowKey>()),
        ] {
            let (fd, capacity) = match self.map(name)? {
                Map::LruHashMap(data) => (
                    data.fd().as_fd().as_raw_fd(),
                    data.info().map_err(map_err(name))?.max_entries(),
                ),
                _ => return Err(MapsError::MissingMap(name)),
            };
            occ.capacity = u64::from(capacity);
            let values = match flow_values_batch(fd, key_size) {
                Ok(v) => v,
                Err(e) if batch_unsupported(&e) => {
                    if name == names::FLOWS_V4 {
                        self.hash_entries::<FlowKeyV4, FlowValue>(name)?
                            .into_iter()
                            .map(|(_, v)| v)
                            .collect()
                    } else {
                        self.hash_entries::<FlowKey, FlowValue>(name)?
                            .into_iter()
                            .map(|(_, v)| v)
                            .collect()
                    }
                }
                Err(io_error) => {
                    return Err(MapsError::Map {
                        name,
                        source: MapError::SyscallError(aya::sys::SyscallError {
                            call: "bpf_map_lookup_batch",
                            io_error,
                        }),
                    });
                }
            };
            let n = values.len() as u64;
            if name == names::FLOWS_V4 {
                occ.v4 = n;
            } else {
                occ.v6 = n;
            }
            for v in values {
                *occ.per_vip.entry(v.vip_id).or_default() += 1;
            }
        }
        self.occupancy = Some(occ.clone());
        Ok(occ)
    }

    /// The occupancy at the last sample, if any.
    pub fn occupancy(&self) -> Option<&FlowOccupancy> {
        self.occupancy.as_ref()
    }

    /// Zeroes the counters of backend `id`.
    pub fn reset_backend_counters(&mut self, id: u32) -> Result<(), MapsError> {
        if id >= MAX_BACKENDS {
            return Err(MapsError::BackendId(id));
        }
        self.reset_traffic(names::BACKEND_STATS, id)
    }

    /// Traffic of VIP `vip_id`, summed over CPUs.
    pub fn vip_counters(&self, vip_id: u32) -> Result<TrafficCounters, MapsError> {
        if vip_id >= MAX_VIPS {
            return Err(MapsError::VipId(vip_id));
        }
        self.traffic(names::VIP_STATS, vip_id)
    }

    /// Traffic per backend endpoint in use, summed over CPUs (for stats pages).
    pub fn backend_traffic(&self) -> Result<Vec<(SocketAddr, TrafficCounters)>, MapsError> {
        self.backends()?
            .into_iter()
            .map(|(id, b)| Ok((backend_addr(&b), self.backend_counters(id)?)))
            .collect()
    }

    /// Traffic per VIP (endpoint, IP protocol), summed over CPUs (for stats pages).
    pub fn vip_traffic(&self) -> Result<Vec<(SocketAddr, u8, TrafficCounters)>, MapsError> {
        self.vips()?
            .into_iter()
            .map(|(k, v)| Ok((vip_addr(&k), k.proto, self.vip_counters(v.vip_id)?)))
            .collect()
    }

    /// Traffic of backend `id`, summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Result<TrafficCounters, MapsError> {
        if id >= MAX_BACKENDS {
            return Err(MapsError::BackendId(id));
        }
        self.traffic(names::BACKEND_STATS, id)
    }
}

/// `BPF_MAP_UPDATE_BATCH` (enum bpf_cmd).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `BPF_MAP_LOOKUP_BATCH` (enum bpf_cmd).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Every value of the flow table `fd` (keys of `key_size` bytes, `FlowValue` values), read
/// with `BPF_MAP_LOOKUP_BATCH` in chunks.
fn flow_values_batch(fd: RawFd, key_size: usize) -> std::io::Result<Vec<FlowValue>> {
    const CHUNK: usize = 4096;
    let mut out = Vec::new();
    let mut keys = vec![0u8; CHUNK * key_size];
    let mut values = vec![FlowValue::default(); CHUNK];
    // The kernel's opaque position (a bucket index for hash maps).
    let mut token = [0u64; 2];
    let mut first = true;
    loop {
        let mut next = [0u64; 2];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` for BPF_MAP_LOOKUP_BATCH; `keys` and
        // `values` have room for `count` keys and values of the map's sizes, and the
        // batch tokens for the kernel's position (at most 8 bytes for hash maps).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                // The end: the last entries came with it.
                out.extend_from_slice(&values[..attr.count as usize]);
                return Ok(out);
            }
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        out.extend_from_slice(&values[..attr.count as usize]);
        token = next;
        first = false;
    }
}

/// True when `e` means the kernel (or this map type) has no batch operations.
fn batch_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    ) || e.raw_os_error() == Some(524) // ENOTSUPP (kernel-internal, leaks to userspace)
}

/// Updates `keys[i] = values[i]` (u32 keys and values) in the map `fd`, in as few
/// `BPF_MAP_UPDATE_BATCH` calls as the kernel needs (it may stop early; the rest is resent).
fn update_batch(fd: RawFd, keys: &[u32], values: &[u32]) -> std::io::Result<()> {
    debug_assert_eq!(keys.len(), values.len());
    let mut done = 0usize;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: (keys.len() - done) as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` for BPF_MAP_UPDATE_BATCH; `keys` and
        // `values` point to `count` live u32s each (the map's key and value size), which
        // the kernel only reads; it writes back `attr.count` only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted || e.raw_os_error() == Some(libc::EAGAIN)
            {
                done += attr.count as usize;
                continue;
            }
            return Err(e);
        }
        let n = attr.count as usize;
        if n == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        done += n;
    }
    Ok(())
}
