//! Blocking: parsing IP/CIDR rules, and keeping the kernel's LPM tries in step with the rules in
//! SQLite (the source of truth), from the daemon or from a CLI command while the daemon is down.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context as _, Result, bail};
use aya::maps::{LpmTrie, Map, MapData, lpm_trie::Key};
use ipnet::IpNet;
use tracker_common::{BlockValue, names};

use crate::{kernel::PinDir, store::Store, timefmt::KernelClock};

/// `kind` of IP rules in `block_rules`.
pub const KIND_IP: &str = "ip";

/// Parses an address (`203.0.113.7`, `2001:db8::1`) or a CIDR (`198.51.100.0/24`) into its
/// canonical network. Host bits set (`198.51.100.7/24`) are an error that says what was meant,
/// because guessing between "that host" and "that network" blocks the wrong thing.
pub fn parse_rule(s: &str) -> Result<IpNet> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s.parse().map_err(|_| {
        anyhow::anyhow!(
            "`{s}` is not an IP address or CIDR (examples: 203.0.113.7, 198.51.100.0/24, \
             2001:db8::/32)"
        )
    })?;
    if net.trunc() != net {
        bail!(
            "`{s}` has host bits set: did you mean the network {} or the single address {}?",
            net.trunc(),
            net.addr()
        );
    }
    Ok(net)
}

/// The kernel's block tries, opened from the daemon's loaded object or from the pins.
pub struct KernelBlocks {
    v4: LpmTrie<MapData, [u8; 4], BlockValue>,
    v6: LpmTrie<MapData, [u8; 16], BlockValue>,
}

/// One rule's counters as the kernel holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelRule {
    pub rule_id: u32,
    pub packets_dropped: u64,
    pub last_hit_ns: u64,
}

impl KernelBlocks {
    pub fn from_maps(v4: Map, v6: Map) -> Result<Self> {
        Ok(Self {
            v4: LpmTrie::try_from(v4).context("BLOCK_V4 is not an LPM trie")?,
            v6: LpmTrie::try_from(v6).context("BLOCK_V6 is not an LPM trie")?,
        })
    }

    /// The pinned tries, or `None` when no daemon has pinned them since boot.
    pub fn open_pinned(pins: &PinDir) -> Result<Option<Self>> {
        match (pins.open_map(names::BLOCK_V4)?, pins.open_map(names::BLOCK_V6)?) {
            (Some(v4), Some(v6)) => Ok(Some(Self::from_maps(v4, v6)?)),
            _ => Ok(None),
        }
    }

    pub fn get(&self, net: &IpNet) -> Option<BlockValue> {
        match net {
            IpNet::V4(n) => self.v4.get(&Key::new(n.prefix_len().into(), n.addr().octets()), 0).ok(),
            IpNet::V6(n) => self.v6.get(&Key::new(n.prefix_len().into(), n.addr().octets()), 0).ok(),
        }
    }

    /// Inserts a fresh entry (zero counters) for rule `id`.
    pub fn insert(&mut self, net: &IpNet, id: u32) -> Result<()> {
        let v = BlockValue { rule_id: id, ..Default::default() };
        match net {
            IpNet::V4(n) => self.v4.insert(&Key::new(n.prefix_len().into(), n.addr().octets()), v, 0),
            IpNet::V6(n) => self.v6.insert(&Key::new(n.prefix_len().into(), n.addr().octets()), v, 0),
        }
        .with_context(|| format!("adding {net} to the kernel block map (is it full? see --block-entries)"))
    }

    /// Removes an entry; absent entries are fine (the goal state is reached).
    pub fn remove(&mut self, net: &IpNet) -> Result<()> {
        let r = match net {
            IpNet::V4(n) => self.v4.remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
            IpNet::V6(n) => self.v6.remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
        };
        match r {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {net} from the kernel block map")),
        }
    }

    /// Every entry in both tries.
    pub fn entries(&self) -> Result<Vec<(IpNet, KernelRule)>> {
        let mut out = Vec::new();
        for item in self.v4.iter() {
            let (k, v) = item.context("reading BLOCK_V4")?;
            let net = IpNet::new(IpAddr::from(k.data()), k.prefix_len() as u8)?;
            out.push((net, kernel_rule(v)));
        }
        for item in self.v6.iter() {
            let (k, v) = item.context("reading BLOCK_V6")?;
            let net = IpNet::new(IpAddr::from(k.data()), k.prefix_len() as u8)?;
            out.push((net, kernel_rule(v)));
        }
        Ok(out)
    }

    /// Live counters by rule id, for `tracker blocks`.
    pub fn counters(&self) -> Result<HashMap<u32, KernelRule>> {
        Ok(self.entries()?.into_iter().map(|(_, r)| (r.rule_id, r)).collect())
    }
}

fn kernel_rule(v: BlockValue) -> KernelRule {
    let BlockValue { rule_id, _pad: _, packets_dropped, last_hit_ns, last_event_ns: _ } = v;
    KernelRule { rule_id, packets_dropped, last_hit_ns }
}

/// Makes the kernel tries hold exactly the IP rules in the database. Entries that already hold
/// the right rule keep their counters; new ones start at zero after the rule's earlier kernel
/// count is folded into its history. Returns (added, removed).
pub fn reconcile(store: &mut Store, kernel: &mut KernelBlocks) -> Result<(usize, usize)> {
    let wanted: HashMap<IpNet, u32> = store
        .block_rules(KIND_IP)?
        .into_iter()
        .map(|(id, rule)| Ok((parse_rule(&rule).with_context(|| format!("stored rule {rule}"))?, id)))
        .collect::<Result<_>>()?;
    let present = kernel.entries()?;
    let mut removed = 0;
    for (net, k) in &present {
        if wanted.get(net) != Some(&k.rule_id) {
            kernel.remove(net)?;
            removed += 1;
        }
    }
    let mut added = 0;
    for (net, id) in &wanted {
        let ok = present.iter().any(|(n, k)| n == net && k.rule_id == *id);
        if !ok {
            store.fold_block_kernel_count(*id)?;
            kernel.insert(net, *id)?;
            added += 1;
        }
    }
    Ok((added, removed))
}

/// Copies the kernel's per-rule counters into the database.
pub fn sync_counters(store: &mut Store, kernel: &KernelBlocks, clock: KernelClock) -> Result<()> {
    for (_, k) in kernel.entries()? {
        let last_hit = (k.last_hit_ns != 0).then(|| clock.to_unix_ms(k.last_hit_ns));
        store.set_block_kernel_count(k.rule_id, k.packets_dropped, last_hit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_host_networks() {
        assert_eq!(parse_rule("203.0.113.7").unwrap().to_string(), "203.0.113.7/32");
        assert_eq!(parse_rule(" 2001:db8::1 ").unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(parse_rule("198.51.100.0/24").unwrap().to_string(), "198.51.100.0/24");
        assert_eq!(parse_rule("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(parse_rule("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn host_bits_say_what_was_meant() {
        let e = parse_rule("198.51.100.7/24").unwrap_err().to_string();
        assert!(e.contains("198.51.100.0/24") && e.contains("198.51.100.7"), "{e}");
        let e = parse_rule("2001:db8::1/32").unwrap_err().to_string();
        assert!(e.contains("2001:db8::/32"), "{e}");
    }

    #[test]
    fn garbage_is_rejected_with_examples() {
        for bad in ["", "203.0.113", "203.0.113.256", "198.51.100.0/33", "example.com", "::g", "1.2.3.4/"] {
            let e = parse_rule(bad).unwrap_err().to_string();
            assert!(e.contains("examples"), "{bad}: {e}");
        }
    }
}
