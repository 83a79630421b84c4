//! The kernel's maps as the daemon and the CLI read them: the flow tables (read whole in
//! batches, ended flows taken out one by one), the counters, the block tries and the name rules.

use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf};
use tracker_common::{Counter, FAMILY_V4, FlowKey, FlowKeyV4, FlowStats, names};

use super::sys;
use crate::blocking::{KernelBlocks, KernelNames, KernelPorts};

/// The kernel tables the daemon sweeps.
pub struct Tables {
    pub flows: FlowTables,
    pub counters: PerCpuArray<MapData, u64>,
    pub blocks: KernelBlocks,
    pub names: KernelNames,
}

impl Tables {
    /// Takes the tables and the event ring out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<(Self, RingBuf<MapData>)> {
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        let ports = KernelPorts::from_map(take(names::PORT_BLOCKS)?)?;
        let tables = Self {
            flows: FlowTables::from_maps(take(names::FLOWS_V4)?, take(names::FLOWS_V6)?)?,
            counters: PerCpuArray::try_from(take(names::COUNTERS)?)?,
            blocks: KernelBlocks::from_maps(
                take(names::BLOCK_V4)?,
                take(names::BLOCK_V6)?,
                take(names::BLOCK_GATE)?,
                Some(ports.duplicate()?),
            )?,
            names: KernelNames::from_maps(take(names::DOMAINS)?, Some(ports))?,
        };
        Ok((tables, RingBuf::try_from(take(names::EVENTS)?)?))
    }
}

/// Entries per `BPF_MAP_LOOKUP_BATCH` call: a 65,536-entry table in 16 calls, with buffers of
/// 2.5 MiB on two CPUs (keys and one value slot per CPU), reused across sweeps.
const BATCH: usize = 4096;

/// The kernel's flow tables, one per address family (the IPv4 one has a shorter key, see
/// [`FlowKeyV4`]), read and written as one table keyed by [`FlowKey`].
pub struct FlowTables {
    v4: PerCpuHashMap<MapData, FlowKeyV4, FlowStats>,
    v6: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    /// The same maps' descriptors, for the bpf(2) commands aya does not wrap.
    v4_fd: OwnedFd,
    v6_fd: OwnedFd,
    /// Possible CPUs: a per-CPU value is that many slots.
    cpus: usize,
    keys: Vec<u8>,
    values: Vec<FlowStats>,
}

impl FlowTables {
    /// From the `FLOWS_V4` and `FLOWS_V6` maps of a loaded object or of the pins.
    pub fn from_maps(v4: Map, v6: Map) -> Result<Self> {
        let fd = |m: &Map, name: &str| -> Result<OwnedFd> {
            let Map::PerCpuLruHashMap(data) = m else {
                return Err(anyhow!("map {name} is not an LRU per-CPU hash map"));
            };
            Ok(data.fd().as_fd().try_clone_to_owned()?)
        };
        let (v4_fd, v6_fd) = (fd(&v4, names::FLOWS_V4)?, fd(&v6, names::FLOWS_V6)?);
        Ok(Self {
            v4: PerCpuHashMap::try_from(v4).with_context(|| format!("map {}", names::FLOWS_V4))?,
            v6: PerCpuHashMap::try_from(v6).with_context(|| format!("map {}", names::FLOWS_V6))?,
            v4_fd,
            v6_fd,
            cpus: aya::util::nr_cpus().map_err(|(_, e)| e).context("counting possible CPUs")?,
            keys: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Every flow, IPv4 first, each with its per-CPU values folded ([`FlowStats::merge`]),
    /// appended to `out`. Read with BPF_MAP_LOOKUP_BATCH: 16 syscalls for a full 65,536-entry
    /// table where walking it key by key takes 131,072. An entry updated during the read is
    /// read as of some moment of the read, as with any map read: the next sweep has the rest.
    pub fn read_all(&mut self, out: &mut Vec<(FlowKey, FlowStats)>) -> Result<()> {
        let Self { v4_fd, v6_fd, cpus, keys, values, .. } = self;
        read_table::<FlowKeyV4>(v4_fd.as_fd(), *cpus, keys, values, out)
            .with_context(|| format!("reading {}", names::FLOWS_V4))?;
        read_table::<FlowKey>(v6_fd.as_fd(), *cpus, keys, values, out)
            .with_context(|| format!("reading {}", names::FLOWS_V6))
    }

    /// Deletes one flow and returns what it held at that moment (folded), so packets counted
    /// after the last read are not lost with the entry. `None` when it was gone already.
    pub fn take(&mut self, key: &FlowKey) -> Result<Option<FlowStats>> {
        self.values.resize(self.cpus.max(self.values.len()), FlowStats::default());
        let slots = &mut self.values[..self.cpus];
        // SAFETY: as in read_table.
        let value = unsafe { std::slice::from_raw_parts_mut(slots.as_mut_ptr().cast::<u8>(), size_of_val(slots)) };
        let found = if key.family == FAMILY_V4 {
            let k = key.to_v4();
            // SAFETY: FlowKeyV4 is plain data without padding bytes.
            let bytes = unsafe { std::slice::from_raw_parts((&raw const k).cast::<u8>(), size_of::<FlowKeyV4>()) };
            sys::lookup_and_delete(self.v4_fd.as_fd(), bytes, value)
        } else {
            // SAFETY: as above, for FlowKey.
            let bytes =
                unsafe { std::slice::from_raw_parts((key as *const FlowKey).cast::<u8>(), size_of::<FlowKey>()) };
            sys::lookup_and_delete(self.v6_fd.as_fd(), bytes, value)
        };
        let found = found.with_context(|| format!("deleting an ended flow of {}", key.remote()))?;
        Ok(found.then(|| FlowStats::merge(&self.values[..self.cpus])))
    }

    /// Every flow's key.
    pub fn keys(&self) -> impl Iterator<Item = Result<FlowKey, MapError>> + '_ {
        self.v4.keys().map(|r| r.map(FlowKey::from)).chain(self.v6.keys())
    }

    /// One flow, folded; `None` when the table does not have it.
    pub fn find(&self, key: &FlowKey) -> Result<Option<FlowStats>, MapError> {
        let v = if key.family == FAMILY_V4 { self.v4.get(&key.to_v4(), 0) } else { self.v6.get(key, 0) };
        match v {
            Ok(v) => Ok(Some(FlowStats::merge(v.iter()))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One table of [`FlowTables::read_all`], through `keys` and `values` (resized to one batch
/// and kept for the next sweep).
fn read_table<K: Copy + Into<FlowKey>>(
    fd: BorrowedFd<'_>,
    cpus: usize,
    keys: &mut Vec<u8>,
    values: &mut Vec<FlowStats>,
    out: &mut Vec<(FlowKey, FlowStats)>,
) -> Result<()> {
    let key_size = size_of::<K>();
    keys.resize(BATCH * key_size, 0);
    values.resize(BATCH * cpus, FlowStats::default());
    let mut token = None;
    loop {
        // SAFETY: FlowStats is plain integers (repr(C), padding spelled out), so its slots may
        // be written as bytes; the kernel writes value_size (56, a multiple of 8, so no per-CPU
        // rounding) per CPU.
        let value_bytes = unsafe {
            std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), values.len() * size_of::<FlowStats>())
        };
        let (n, next) = sys::lookup_batch(fd, token, keys, value_bytes, BATCH as u32)?;
        for i in 0..n as usize {
            // SAFETY: the kernel wrote n keys of key_size bytes; K is plain data.
            let key: K = unsafe { std::ptr::read_unaligned(keys[i * key_size..].as_ptr().cast()) };
            out.push((key.into(), FlowStats::merge(&values[i * cpus..(i + 1) * cpus])));
        }
        match next {
            Some(t) => token = Some(t),
            None => return Ok(()),
        }
    }
}

/// Sums a per-CPU counter array into one value per [`Counter`].
pub fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<Vec<(Counter, u64)>> {
    Counter::ALL.iter().map(|&c| Ok((c, read_counter(map, c)?))).collect()
}

/// One counter, summed over the CPUs.
pub fn read_counter(map: &PerCpuArray<MapData, u64>, c: Counter) -> Result<u64> {
    let read = |c: Counter| -> Result<u64> {
        let v = map.get(&(c as u32), 0).with_context(|| format!("counter {}", c.name()))?;
        Ok(v.iter().sum())
    };
    match c {
        // Not counted by the kernel: every packet is passed or dropped.
        Counter::Seen => Ok(read(Counter::Passed)? + read(Counter::Dropped)?),
        _ => read(c),
    }
}
