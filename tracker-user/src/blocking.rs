//! Blocking: parsing IP/CIDR rules, and keeping the kernel's LPM tries in step with the rules in
//! SQLite (the source of truth), from the daemon or from a CLI command while the daemon is down.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context as _, Result, bail};
use aya::maps::{HashMap as BpfHashMap, LpmTrie, Map, MapData, lpm_trie::Key};
use ipnet::IpNet;
use tracker_common::{BlockValue, DomainKey, names};

use crate::{
    kernel::{PinDir, gate::Gate},
    store::blocks::{active_rules, fold_dropped},
    store::{
        Store,
        blocks::{RuleKind, StoredRule},
    },
    text::quoted,
    timefmt::KernelClock,
};

/// Parses an address (`203.0.113.7`, `2001:db8::1`) or a CIDR (`198.51.100.0/24`) into its
/// canonical network. Host bits set (`198.51.100.7/24`) are an error that says what was meant,
/// because guessing between "that host" and "that network" blocks the wrong thing. An
/// IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, `::ffff:192.0.2.0/120`) is the IPv4 address
/// it carries: IPv4 packets are matched against the IPv4 map, so as an IPv6 rule it would never
/// match anything.
pub fn parse_rule(s: &str) -> Result<IpNet> {
    let s = s.trim();
    let net = match s.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => {
            let net: IpNet = s.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{} is not an IP address or CIDR (examples: 203.0.113.7, 198.51.100.0/24, \
                     2001:db8::/32)",
                    quoted(s)
                )
            })?;
            if net.trunc() != net {
                bail!(
                    "{} has host bits set: did you mean the network {} or the single address {}?",
                    quoted(s),
                    net.trunc(),
                    net.addr()
                );
            }
            net
        }
    };
    Ok(unmap_v4(net))
}

/// `::ffff:a.b.c.d/n` (n >= 96) as the IPv4 network `a.b.c.d/(n - 96)`.
fn unmap_v4(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && let Some(v4) = n.addr().to_ipv4_mapped()
        && n.prefix_len() >= 96
        && let Ok(v4net) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

/// Why a rule needs `--force`, if it does: one that covers every address, or local ones (the
/// VPN host's own resolver and the tunnel live there), cuts the devices off from more than one
/// remote host.
pub fn needs_force(net: &IpNet) -> Option<String> {
    if net.prefix_len() == 0 {
        return Some(format!(
            "{net} covers every address: the devices would lose everything through the VPN, \
             the VPN host's own DNS resolver included"
        ));
    }
    let first = net.network();
    let class = |ip| crate::analysis::addr::classify(ip, &[]);
    let local = class(first).is_local() || class(net.broadcast()).is_local();
    local.then(|| {
        format!(
            "{net} covers local addresses ({}): the VPN host's own DNS resolver and the tunnel may \
             be among them",
            class(first).as_str()
        )
    })
}

/// Stored rules (as (id, canonical text)) that contain `net` without being it: what to unblock
/// instead when an address is covered by a wider rule.
pub fn covering_rules(rules: &[(u32, String)], net: &IpNet) -> Vec<String> {
    rules
        .iter()
        .filter_map(|(_, r)| parse_rule(r).ok())
        .filter(|r| r != net && r.contains(net))
        .map(|r| r.to_string())
        .collect()
}

mod ports;

pub use ports::{KernelPorts, port_key};

/// The kernel's block tries, opened from the daemon's loaded object or from the pins.
pub struct KernelBlocks {
    v4: LpmTrie<MapData, [u8; 4], BlockValue>,
    v6: LpmTrie<MapData, [u8; 16], BlockValue>,
    gate: Gate,
    /// The port rules, read here for their drops ([`KernelBlocks::counters`]), which count as
    /// an address rule's do; the name side ([`KernelNames`]) keeps them equal to the rules.
    /// `None` in pins of a tracker without port rules.
    ports: Option<KernelPorts>,
}

/// One rule's counters as the kernel holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelRule {
    pub rule_id: u32,
    pub packets_dropped: u64,
    pub last_hit_ns: u64,
}

impl KernelBlocks {
    pub fn from_maps(v4: Map, v6: Map, gate: Map, ports: Option<KernelPorts>) -> Result<Self> {
        Ok(Self {
            v4: LpmTrie::try_from(v4).context("BLOCK_V4 is not an LPM trie")?,
            v6: LpmTrie::try_from(v6).context("BLOCK_V6 is not an LPM trie")?,
            gate: Gate::from_map(gate)?,
            ports,
        })
    }

    /// The pinned tries, or `None` when no daemon has pinned them since boot.
    pub fn open_pinned(pins: &PinDir) -> Result<Option<Self>> {
        match (pins.open_map(names::BLOCK_V4)?, pins.open_map(names::BLOCK_V6)?, pins.open_map(names::BLOCK_GATE)?) {
            (Some(v4), Some(v6), Some(gate)) => {
                Ok(Some(Self::from_maps(v4, v6, gate, KernelPorts::open_pinned(pins)?)?))
            }
            _ => Ok(None),
        }
    }

    /// Sets the gate bits of every rule in the tries: the gate is new (maps created by a newer
    /// tracker beside older tries) or lost bits to two writers at once.
    pub fn admit_all(&mut self) -> Result<()> {
        let nets: Vec<IpNet> = self.entries()?.into_iter().map(|(n, _)| n).collect();
        self.gate.admit(&nets)
    }

    pub fn get(&self, net: &IpNet) -> Option<BlockValue> {
        match net {
            IpNet::V4(n) => self.v4.get(&Key::new(n.prefix_len().into(), n.addr().octets()), 0).ok(),
            IpNet::V6(n) => self.v6.get(&Key::new(n.prefix_len().into(), n.addr().octets()), 0).ok(),
        }
    }

    /// Inserts a fresh entry (zero counters) for rule `id`, its gate bits first.
    pub fn insert(&mut self, net: &IpNet, id: u32) -> Result<()> {
        self.insert_until(net, id, 0)
    }

    /// [`KernelBlocks::insert`] for a rule that ends at `expires_ns` on the kernel's coarse
    /// clock (0: never); the kernel stops matching it then by itself.
    pub fn insert_until(&mut self, net: &IpNet, id: u32, expires_ns: u64) -> Result<()> {
        self.gate.admit([net])?;
        let v = BlockValue { rule_id: id, expires_ns, ..Default::default() };
        match net {
            IpNet::V4(n) => self.v4.insert(&Key::new(n.prefix_len().into(), n.addr().octets()), v, 0),
            IpNet::V6(n) => self.v6.insert(&Key::new(n.prefix_len().into(), n.addr().octets()), v, 0),
        }
        .with_context(|| format!("adding {net} to the kernel block map (is it full? see --block-entries)"))
    }

    /// An address the daemon learned for name rule `id`, until `expires_ns` (see
    /// `daemon::learned`): marked, so that the address rules' reconcile leaves it alone.
    pub fn insert_learned(&mut self, net: &IpNet, id: u32, expires_ns: u64) -> Result<()> {
        self.write_learned(net, BlockValue { rule_id: id, expires_ns, ..Default::default() })
    }

    /// Writes a learned entry's whole value (its counters too), marked learned.
    pub fn write_learned(&mut self, net: &IpNet, v: BlockValue) -> Result<()> {
        self.gate.admit([net])?;
        let v = BlockValue { flags: v.flags | tracker_common::BLOCK_LEARNED, ..v };
        match net {
            IpNet::V4(n) => self.v4.insert(&Key::new(n.prefix_len().into(), n.addr().octets()), v, 0),
            IpNet::V6(n) => self.v6.insert(&Key::new(n.prefix_len().into(), n.addr().octets()), v, 0),
        }
        .with_context(|| format!("adding the learned address {net} to the kernel block map"))
    }

    /// Every learned entry with its value.
    pub fn learned(&self) -> Result<Vec<(IpNet, BlockValue)>> {
        let mut out = Vec::new();
        for (net, _) in self.entries()? {
            if let Some(v) = self.get(&net).filter(|v| v.flags & tracker_common::BLOCK_LEARNED != 0) {
                out.push((net, v));
            }
        }
        Ok(out)
    }

    /// Removes an entry; absent entries are fine (the goal state is reached).
    pub fn remove(&mut self, net: &IpNet) -> Result<()> {
        let r = match net {
            IpNet::V4(n) => self.v4.remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
            IpNet::V6(n) => self.v6.remove(&Key::new(n.prefix_len().into(), n.addr().octets())),
        };
        match r {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            // An LPM trie reports a missing key as the syscall's ENOENT.
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
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

    /// Live counters by rule id, for `tracker blocks` and the sweep: an address rule has one
    /// entry, a name rule one per learned address and (a dns-bypass rule) per port entry,
    /// summed.
    pub fn counters(&self) -> Result<HashMap<u32, KernelRule>> {
        let mut out: HashMap<u32, KernelRule> = HashMap::new();
        let ports = match &self.ports {
            Some(p) => p.entries()?.into_iter().map(|(_, v)| kernel_rule(v)).collect(),
            None => Vec::new(),
        };
        for r in self.entries()?.into_iter().map(|(_, r)| r).chain(ports) {
            out.entry(r.rule_id)
                .and_modify(|k| {
                    k.packets_dropped += r.packets_dropped;
                    k.last_hit_ns = k.last_hit_ns.max(r.last_hit_ns);
                })
                .or_insert(r);
        }
        Ok(out)
    }
}

/// The kernel's name rules (`DOMAINS`): one entry per domain hash and device; and the port
/// rules a dns-bypass rule adds to its names (`PORT_BLOCKS`, `None` in pins of a tracker
/// without them), kept equal to the rules with the names (`rules::kernel::reconcile`).
pub struct KernelNames {
    map: BpfHashMap<MapData, DomainKey, BlockValue>,
    pub ports: Option<KernelPorts>,
}

/// A name rule's key: the domain's hash and the device it holds for (`None`: every device).
pub fn name_key(hash: u64, client: Option<IpAddr>) -> DomainKey {
    let mut key = DomainKey { hash, client: [0; 16] };
    match client {
        Some(IpAddr::V4(a)) => key.client[..4].copy_from_slice(&a.octets()),
        Some(IpAddr::V6(a)) => key.client = a.octets(),
        None => {}
    }
    key
}

impl KernelNames {
    pub fn from_maps(map: Map, ports: Option<KernelPorts>) -> Result<Self> {
        Ok(Self { map: BpfHashMap::try_from(map).with_context(|| format!("map {}", names::DOMAINS))?, ports })
    }

    /// The pinned maps, or `None` when no daemon has pinned `DOMAINS` since boot.
    pub fn open_pinned(pins: &PinDir) -> Result<Option<Self>> {
        let Some(map) = pins.open_map(names::DOMAINS)? else { return Ok(None) };
        Ok(Some(Self::from_maps(map, KernelPorts::open_pinned(pins)?)?))
    }

    /// Inserts a fresh entry (zero counters) for rule `id`; `expires_ns` on the kernel's coarse
    /// clock, 0 for never.
    pub fn insert(&mut self, key: &DomainKey, id: u32, expires_ns: u64) -> Result<()> {
        let v = BlockValue { rule_id: id, expires_ns, ..Default::default() };
        self.map.insert(key, v, 0).context("adding a name rule to the kernel (is DOMAINS full?)")
    }

    /// A name the daemon learned for rule `id` until `expires_ns` (one whose CNAME chain leads
    /// to a blocked name, see `daemon::learned`): marked, so the name rules' reconcile keeps it
    /// while its rule is active.
    pub fn insert_learned(&mut self, key: &DomainKey, id: u32, expires_ns: u64) -> Result<()> {
        self.write_learned(key, BlockValue { rule_id: id, expires_ns, ..Default::default() })
    }

    /// Writes a learned entry's whole value (its counters too), marked learned.
    pub fn write_learned(&mut self, key: &DomainKey, v: BlockValue) -> Result<()> {
        let v = BlockValue { flags: v.flags | tracker_common::BLOCK_LEARNED, ..v };
        self.map.insert(key, v, 0).context("adding a learned name to the kernel (is DOMAINS full?)")
    }

    /// Every learned entry with its value.
    pub fn learned(&self) -> Result<Vec<(DomainKey, BlockValue)>> {
        Ok(self.entries()?.into_iter().filter(|(_, v)| v.flags & tracker_common::BLOCK_LEARNED != 0).collect())
    }

    /// Removes an entry; absent entries are fine (the goal state is reached).
    pub fn remove(&mut self, key: &DomainKey) -> Result<()> {
        match self.map.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e).context("removing a name rule from the kernel"),
        }
    }

    /// One entry's value, if the key is there.
    pub fn get(&self, key: &DomainKey) -> Option<BlockValue> {
        self.map.get(key, 0).ok()
    }

    /// Every entry with its value.
    pub fn entries(&self) -> Result<Vec<(DomainKey, BlockValue)>> {
        self.map.iter().map(|r| r.context("reading DOMAINS")).collect()
    }
}

fn kernel_rule(v: BlockValue) -> KernelRule {
    let BlockValue { rule_id, flags: _, packets_dropped, last_hit_ns, last_event_ns: _, expires_ns: _ } = v;
    KernelRule { rule_id, packets_dropped, last_hit_ns }
}

/// Makes the kernel tries hold exactly the IP rules in the database. Entries that already hold
/// the right rule keep their counters; new ones start at zero after the rule's earlier kernel
/// count is folded into its history. Returns (added, removed).
///
/// The kernel is made right even when the database cannot be written (a full disk): then the
/// drops an entry counted before are not carried over, which is logged.
pub fn reconcile(store: &mut Store, kernel: &mut KernelBlocks) -> Result<(usize, usize)> {
    reconcile_in(store.conn(), kernel)
}

/// Ends differing by more than this are rewritten: two readings of the clocks a moment apart
/// give the same end within microseconds, a changed `--for` by seconds or more.
const EXPIRY_SLACK_NS: u64 = 1_000_000_000;

/// [`reconcile`] on a connection, inside the caller's transaction when it has one (a block
/// command: if the kernel change fails, the rule change is not committed).
pub fn reconcile_in(conn: &rusqlite::Connection, kernel: &mut KernelBlocks) -> Result<(usize, usize)> {
    let clock = KernelClock::now();
    let mut wanted: HashMap<IpNet, (u32, u64)> = HashMap::new();
    for r in active_rules(conn, Some(RuleKind::Ip), crate::timefmt::now_ms())? {
        // Past its end: over, even if no daemon has marked it yet.
        let Some(expires_ns) = clock.expiry_ns(r.expires) else { continue };
        let net = parse_rule(&r.rule).with_context(|| format!("stored rule {}", r.rule))?;
        wanted.insert(net, (r.id, expires_ns));
    }
    let present: HashMap<IpNet, KernelRule> = kernel.entries()?.into_iter().collect();
    let mut removed = 0;
    for (net, k) in &present {
        if wanted.get(net).map(|w| w.0) != Some(k.rule_id) {
            // A learned address is the daemon's to keep and end, unless an address rule now
            // wants the address itself (then it is replaced below).
            if !wanted.contains_key(net)
                && kernel.get(net).is_some_and(|v| v.flags & tracker_common::BLOCK_LEARNED != 0)
            {
                continue;
            }
            // An ended rule keeps what its entry dropped, as history.
            if let Err(e) = fold_dropped(conn, k.rule_id, k.packets_dropped) {
                tracing::warn!(rule = %net, "the drops counted for this rule cannot be kept: {e:#}");
            }
            kernel.remove(net)?;
            removed += 1;
        }
    }
    let mut added = 0;
    for (net, &(id, expires_ns)) in &wanted {
        let same = present.get(net).is_some_and(|k| k.rule_id == id)
            && kernel.get(net).is_some_and(|v| {
                v.expires_ns.abs_diff(expires_ns) <= EXPIRY_SLACK_NS && (v.expires_ns == 0) == (expires_ns == 0)
            });
        if !same {
            let live = present.get(net).filter(|k| k.rule_id == id).map_or(0, |k| k.packets_dropped);
            if let Err(e) = fold_dropped(conn, id, live) {
                tracing::warn!(rule = %net, "the drops counted for this rule before cannot be kept: {e:#}");
            }
            kernel.insert_until(net, id, expires_ns)?;
            added += 1;
        }
    }
    kernel.admit_all()?;
    Ok((added, removed))
}

/// Writes the kernel's IP rules into a database that lacks them (a new one, after the old one
/// was deleted), under their kernel rule ids, so that the kernel and the database agree again
/// without a gap in blocking. `known` gives the text and comment last read for an id. Returns
/// how many rules were written.
pub fn adopt_kernel_rules(store: &mut Store, kernel: &KernelBlocks, known: &HashMap<u32, StoredRule>) -> Result<usize> {
    let mut n = 0;
    for (net, k) in kernel.entries()? {
        let rule = match known.get(&k.rule_id) {
            Some(r) if r.rule == net.to_string() => r.clone(),
            _ => StoredRule {
                id: k.rule_id,
                kind: RuleKind::Ip,
                rule: net.to_string(),
                client: None,
                comment: Some("recovered from the kernel after the database was lost".into()),
                created: crate::timefmt::now_ms(),
                expires: None,
            },
        };
        store.restore_rule(&rule)?;
        store.write(|w| w.set_block_kernel_count(k.rule_id, k.packets_dropped, None))?;
        n += 1;
    }
    Ok(n)
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
    fn mapped_v4_is_the_v4_address() {
        assert_eq!(parse_rule("::ffff:1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert_eq!(parse_rule("::ffff:198.51.100.0/120").unwrap().to_string(), "198.51.100.0/24");
        assert_eq!(parse_rule("2001:db8::1").unwrap().to_string(), "2001:db8::1/128");
    }

    #[test]
    fn everything_and_local_ranges_need_force() {
        for r in ["0.0.0.0/0", "::/0", "10.0.0.0/8", "10.77.0.1", "fd77::1", "100.64.0.0/10", "127.0.0.1"] {
            assert!(needs_force(&parse_rule(r).unwrap()).is_some(), "{r}");
        }
        for r in ["203.0.113.7", "198.51.100.0/24", "2001:db8::/32"] {
            assert_eq!(needs_force(&parse_rule(r).unwrap()), None, "{r}");
        }
    }

    #[test]
    fn covering_rules_name_the_wider_rule() {
        let rules = vec![(1, "198.51.100.0/24".to_string()), (2, "203.0.113.7/32".to_string())];
        let net = parse_rule("198.51.100.7").unwrap();
        assert_eq!(covering_rules(&rules, &net), ["198.51.100.0/24"]);
        assert!(covering_rules(&rules, &parse_rule("203.0.113.7").unwrap()).is_empty());
    }

    #[test]
    fn long_garbage_is_cut_in_the_message() {
        let e = parse_rule(&"9".repeat(5000)).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn garbage_is_rejected_with_examples() {
        for bad in ["", "203.0.113", "203.0.113.256", "198.51.100.0/33", "example.com", "::g", "1.2.3.4/"] {
            let e = parse_rule(bad).unwrap_err().to_string();
            assert!(e.contains("examples"), "{bad}: {e}");
        }
    }
}
