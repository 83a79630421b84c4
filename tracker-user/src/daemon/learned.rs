//! Addresses learned for name rules: when a blocked name was answered anyway (the rule came
//! after the device's cache filled, a CNAME chain led to it, another path to a resolver) or a
//! flow names it in its TLS server name or HTTP Host, the daemon puts those addresses into the
//! kernel's address tries under the name rule, until their TTL (plus a grace) has passed.
//!
//! Learned entries are marked in the tries themselves (`BLOCK_LEARNED`), so the address rules'
//! reconcile leaves them alone and a restarted daemon finds them; the kernel ignores one past
//! its end by itself, and the daemon removes it then. Only rules for every device teach
//! addresses: the tries have no device in their key, and a per-device rule must not cut the
//! other devices off from an address.
//!
//! An address the same device was also told serves a name no rule blocks (a CDN address) is
//! not blocked: blocking it would break the allowed name. Such an address is counted as shared
//! and logged, and the block stays a block by name.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use ipnet::IpNet;
use tracker_common::{BlockValue, name::domain_hash};

use crate::{
    blocking::{KernelBlocks, KernelNames, name_key},
    pipeline::{Namer, Sighting},
    timefmt::kernel_ns_now,
};

/// How long past its TTL an answered address stays blocked: a device may use an answer a
/// little longer than its TTL (the same grace the namer gives answers for naming).
const GRACE: Duration = Duration::from_secs(60);
/// How long the address of a flow that named a blocked host stays blocked; the flow itself
/// says nothing of how long the address serves that name.
const SPOKEN_FOR: Duration = Duration::from_secs(3600);

/// What the learner did with a batch of sightings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Addresses put into (or kept longer in) the tries.
    pub blocked: usize,
    /// Addresses of a blocked name that also serve an allowed one: left open.
    pub shared: usize,
}

/// The learned entries this daemon knows of, with their rule and end, to remove them when due
/// or when their rule goes.
#[derive(Default)]
pub struct Learner {
    ends: HashMap<IpNet, (u32, u64)>,
}

impl Learner {
    /// Picks up the learned entries a previous daemon left in the tries.
    pub fn adopt(&mut self, blocks: &KernelBlocks) -> Result<usize> {
        for (net, v) in blocks.learned()? {
            self.ends.insert(net, (v.rule_id, v.expires_ns));
        }
        Ok(self.ends.len())
    }

    /// Checks the namer's sightings against the kernel's name rules and blocks the addresses
    /// of every blocked name.
    pub fn learn(&mut self, namer: &mut Namer, names: &KernelNames, blocks: &mut KernelBlocks) -> Result<Learned> {
        let Some(sightings) = namer.sightings.as_mut().map(std::mem::take) else { return Ok(Learned::default()) };
        let now_ns = kernel_ns_now();
        let now = SystemTime::now();
        let mut done = Learned::default();
        for s in sightings {
            let (client, rule, seen, addresses) = match s {
                Sighting::Answer { client, names: seen, addresses } => {
                    let Some(rule) = seen.iter().find_map(|name| global_rule(names, name, now_ns)) else { continue };
                    let keep = |ttl: u32| Duration::from_secs(ttl.into()) + GRACE;
                    (client, rule, seen, addresses.into_iter().map(|(ip, ttl)| (ip, keep(ttl))).collect::<Vec<_>>())
                }
                Sighting::Spoke { client, remote, name } => {
                    let Some(rule) = global_rule(names, &name, now_ns) else { continue };
                    (client, rule, vec![name], vec![(remote, SPOKEN_FOR)])
                }
            };
            for (ip, keep) in addresses {
                let ip = ip.to_canonical();
                if is_shared(namer, names, client, ip, &seen, now, now_ns) {
                    done.shared += 1;
                    tracing::info!(address = %ip, rule = rule.rule_id, "not blocking a blocked name's address: it also serves a name no rule blocks");
                    continue;
                }
                let end = now_ns + keep.as_nanos() as u64;
                // A rule's own end bounds what it teaches.
                let end = if rule.expires_ns != 0 { end.min(rule.expires_ns) } else { end };
                if self.put(blocks, IpNet::from(ip), rule.rule_id, end)? {
                    done.blocked += 1;
                }
            }
        }
        Ok(done)
    }

    /// Puts one learned entry in, or keeps the one there longer; never over an address rule.
    fn put(&mut self, blocks: &mut KernelBlocks, net: IpNet, rule_id: u32, end: u64) -> Result<bool> {
        match blocks.get(&net) {
            Some(v) if !is_learned(&v) => return Ok(false),
            Some(v) if v.rule_id == rule_id && v.expires_ns >= end => return Ok(false),
            _ => {}
        }
        blocks.insert_learned(&net, rule_id, end)?;
        self.ends.insert(net, (rule_id, end));
        Ok(true)
    }

    /// Removes the learned entries whose end has passed, and those of rules that are no
    /// longer active (`active`: a rule unblocked or ended takes its addresses with it); returns
    /// how many.
    pub fn expire(&mut self, blocks: &mut KernelBlocks, now_ns: u64, active: Option<&HashSet<u32>>) -> Result<usize> {
        let gone = |(rule, end): &(u32, u64)| *end <= now_ns || active.is_some_and(|a| !a.contains(rule));
        let due: Vec<IpNet> = self.ends.iter().filter(|(_, e)| gone(e)).map(|(n, _)| *n).collect();
        for net in &due {
            let (rule, _) = self.ends[net];
            // Only if it is still this learned entry: an address rule may have taken the
            // address, or another rule learned it since.
            if blocks.get(net).is_some_and(|v| is_learned(&v) && v.rule_id == rule) {
                blocks.remove(net)?;
            }
            self.ends.remove(net);
        }
        Ok(due.len())
    }
}

fn is_learned(v: &BlockValue) -> bool {
    v.flags & tracker_common::BLOCK_LEARNED != 0
}

/// The rule for every device that blocks `name` now, if any (the most specific suffix first,
/// as the kernel matches).
fn global_rule(names: &KernelNames, name: &str, now_ns: u64) -> Option<BlockValue> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    (0..labels.len()).find_map(|i| {
        let hash = domain_hash(&labels[i..].join(".")).ok()?;
        names.get(&name_key(hash, None)).filter(|v| v.holds(now_ns))
    })
}

/// Whether `client`'s device was told `ip` also serves a name no rule blocks, other than the
/// names of the sighting itself (`seen`): neither the name asked nor the end of its CNAME
/// chain is blocked.
fn is_shared(
    namer: &Namer,
    names: &KernelNames,
    client: IpAddr,
    ip: IpAddr,
    seen: &[String],
    now: SystemTime,
    now_ns: u64,
) -> bool {
    let blocked = |n: &str| global_rule(names, n, now_ns).is_some();
    let same = |n: &str| seen.iter().any(|s| s.eq_ignore_ascii_case(n.trim_end_matches('.')));
    namer
        .flows
        .names_for(client, ip, now)
        .iter()
        .any(|(name, cname)| !same(name) && !blocked(name) && !cname.as_deref().is_some_and(blocked))
}
