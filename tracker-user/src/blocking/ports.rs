//! The kernel's port rules (`PORT_BLOCKS`): one entry per device address (or every device),
//! transport and port, each a dns-bypass rule's (`rules::bypass` keeps them equal to the
//! rules).

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, IterableMap as _, Map, MapData};
use tracker_common::{BlockValue, PortKey, names};

use super::name_key;
use crate::kernel::PinDir;

pub struct KernelPorts {
    map: BpfHashMap<MapData, PortKey, BlockValue>,
}

/// A port rule's key: the device (`None`: every device), the transport, the remote port.
pub fn port_key(client: Option<IpAddr>, protocol: u8, port: u16) -> PortKey {
    PortKey { client: name_key(0, client).client, port, protocol, _pad: [0; 5] }
}

impl KernelPorts {
    pub fn from_map(map: Map) -> Result<Self> {
        Ok(Self { map: BpfHashMap::try_from(map).with_context(|| format!("map {}", names::PORT_BLOCKS))? })
    }

    /// The pinned map, or `None` when no daemon with port rules has pinned it since boot.
    pub fn open_pinned(pins: &PinDir) -> Result<Option<Self>> {
        pins.open_map(names::PORT_BLOCKS)?.map(Self::from_map).transpose()
    }

    /// A second handle on the same kernel map (a duplicate of its descriptor): the address side
    /// reads its drops, the name side keeps it equal to the rules.
    pub fn duplicate(&self) -> Result<Self> {
        use std::os::fd::AsFd as _;
        let fd = self.map.map().fd().as_fd().try_clone_to_owned().context("duplicating PORT_BLOCKS' descriptor")?;
        let data = MapData::from_fd(fd).with_context(|| format!("map {}", names::PORT_BLOCKS))?;
        Self::from_map(Map::HashMap(data))
    }

    /// Inserts a fresh entry (zero counters) for rule `id`, until `expires_ns` (0: never).
    pub fn insert(&mut self, key: &PortKey, id: u32, expires_ns: u64) -> Result<()> {
        let v = BlockValue { rule_id: id, expires_ns, ..Default::default() };
        self.map.insert(key, v, 0).context("adding a port rule to the kernel (is PORT_BLOCKS full?)")
    }

    /// Removes an entry; absent entries are fine (the goal state is reached).
    pub fn remove(&mut self, key: &PortKey) -> Result<()> {
        match self.map.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e).context("removing a port rule from the kernel"),
        }
    }

    /// Every entry with its value.
    pub fn entries(&self) -> Result<Vec<(PortKey, BlockValue)>> {
        self.map.iter().map(|r| r.context("reading PORT_BLOCKS")).collect()
    }
}
