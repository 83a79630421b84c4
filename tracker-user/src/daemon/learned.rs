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
//! per rule (`tracker blocks` shows it) and logged, and the block stays a block by name, unless
//! the rule was made with `--block-shared`.
//!
//! A name whose CNAME chain leads to a blocked name (`metrics.shop.example` -> `sdk.braze.com`)
//! is learned as an alias: an entry of its own in `DOMAINS`, marked learned, under the rule, for
//! the answer's TTL plus the grace, so the kernel refuses the device's next query for it. The
//! first answer gets through (the kernel sees queries, and the resolver's answer only after it
//! left); its addresses are blocked as above.
//!
//! A rule made after a device was answered is checked against the answers the namer still
//! holds ([`Learner::review`]): an address the device learned before the rule is blocked too.

mod claims;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use ipnet::IpNet;
use tracker_common::{BlockValue, DomainKey, name::domain_hash};

use self::claims::{Claim, Claims, Counted};

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
    /// Names whose CNAME chain leads to a blocked name, put into (or kept longer in) `DOMAINS`.
    pub aliases: usize,
}

/// What [`Learner::expire`] took out, and what those entries had counted, per rule: the
/// caller keeps the counts in the rule's history (`Writer::fold_learned`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub addresses: usize,
    pub aliases: usize,
    /// Rule id -> (packets dropped, queries refused) by the entries removed.
    pub counted: HashMap<u32, (u64, u64)>,
}

/// The learned entries this daemon knows of, with the rules that want them and until when, to
/// remove them when due or when their rules go.
#[derive(Default)]
pub struct Learner {
    ends: Claims<IpNet>,
    aliases: Claims<DomainKey>,
    /// What entries counted before they passed to another rule: (dropped, refused) per rule,
    /// handed out by the next [`Learner::expire`].
    dropped: Counted,
    refused: Counted,
    /// The name rules whose earlier answers [`Learner::review`] has checked.
    reviewed: HashSet<u32>,
    /// Rules that block shared addresses too (`--block-shared`).
    block_shared: HashSet<u32>,
    /// Rules that block by name only and teach no address (`RuleKind::teaches_addresses`).
    by_name_only: HashSet<u32>,
    /// The active name rules as of the last [`Learner::set_rules`]. A rule the kernel has but
    /// the learner does not know yet (made a moment ago) teaches nothing until it is known:
    /// its kind decides what it may teach, and [`Learner::review`] then goes over the answers
    /// held (a flow's server name seen in that half second is not gone over: its next is).
    known: HashSet<u32>,
    /// Per rule, the shared addresses left open, and the count last handed out to be stored.
    open: HashMap<u32, HashSet<IpAddr>>,
    open_stored: HashMap<u32, u64>,
}

/// A rule that blocks a name now, and whom for (`None`: every device).
#[derive(Clone, Copy, Debug)]
struct Holds {
    rule: BlockValue,
    client: Option<IpAddr>,
}

impl Learner {
    /// Picks up the learned entries a previous daemon left in the tries and in `DOMAINS`.
    pub fn adopt(&mut self, blocks: &KernelBlocks, names: &KernelNames) -> Result<usize> {
        for (net, v) in blocks.learned()? {
            self.ends.adopt(net, &v);
        }
        for (key, v) in names.learned()? {
            self.aliases.adopt(key, &v);
        }
        Ok(self.ends.len() + self.aliases.len())
    }

    /// Sets which active rules block shared addresses too, and forgets what was left open for
    /// rules no longer active (`active`).
    pub fn set_rules(&mut self, active: &HashSet<u32>, block_shared: HashSet<u32>, by_name_only: HashSet<u32>) {
        self.by_name_only = by_name_only;
        self.known.clone_from(active);
        // A rule that now blocks shared addresses is reviewed again: the answers held may
        // carry addresses it left open.
        for id in block_shared.difference(&self.block_shared) {
            self.reviewed.remove(id);
        }
        self.block_shared = block_shared;
        self.open.retain(|id, _| active.contains(id));
        self.open_stored.retain(|id, _| active.contains(id));
    }

    /// The rules whose count of shared addresses left open changed since the last call, with
    /// the count, to be stored (`Writer::set_shared_open`).
    pub fn shared_open_changes(&mut self) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        for (id, addrs) in &self.open {
            let n = addrs.len() as u64;
            if self.open_stored.insert(*id, n) != Some(n) {
                out.push((*id, n));
            }
        }
        out
    }

    /// Checks the namer's sightings against the kernel's name rules: blocks the addresses of
    /// every blocked name, and learns the names that lead to one as aliases.
    pub fn learn(&mut self, namer: &mut Namer, names: &mut KernelNames, blocks: &mut KernelBlocks) -> Result<Learned> {
        let Some(sightings) = namer.sightings.as_mut().map(std::mem::take) else { return Ok(Learned::default()) };
        self.consider(sightings, None, namer, names, blocks)
    }

    /// Checks the answers the namer still holds against the name rules not reviewed before
    /// (`active`: the active name rules' ids): a device answered before the rule was made has
    /// the addresses, and may use them until their TTL ends.
    pub fn review(
        &mut self,
        namer: &Namer,
        active: &HashSet<u32>,
        names: &mut KernelNames,
        blocks: &mut KernelBlocks,
    ) -> Result<Learned> {
        let fresh: HashSet<u32> = active.difference(&self.reviewed).copied().collect();
        self.reviewed.clone_from(active);
        if fresh.is_empty() {
            return Ok(Learned::default());
        }
        let sightings = namer
            .flows
            .answers(SystemTime::now())
            .into_iter()
            .map(|a| Sighting::Answer {
                client: a.device,
                names: std::iter::once(a.name).chain(a.cname).collect(),
                addresses: vec![(a.address, a.ttl_left)],
            })
            .collect();
        self.consider(sightings, Some(&fresh), namer, names, blocks)
    }

    /// Learns from `sightings`, only for the rules in `only` when given.
    fn consider(
        &mut self,
        sightings: Vec<Sighting>,
        only: Option<&HashSet<u32>>,
        namer: &Namer,
        names: &mut KernelNames,
        blocks: &mut KernelBlocks,
    ) -> Result<Learned> {
        let now_ns = kernel_ns_now();
        let now = SystemTime::now();
        // A copy: the loop below changes the learner. A few ids.
        let known = self.known.clone();
        let wanted = |h: &Holds| known.contains(&h.rule.rule_id) && only.is_none_or(|o| o.contains(&h.rule.rule_id));
        let mut done = Learned::default();
        for s in sightings {
            let (client, holds, seen, addresses) = match s {
                Sighting::Answer { client, names: seen, addresses } => {
                    let Some((asked, chain)) = seen.split_first() else { continue };
                    let direct = rule_for(names, asked, Some(client), now_ns);
                    let Some(holds) =
                        direct.or_else(|| chain.iter().find_map(|n| rule_for(names, n, Some(client), now_ns)))
                    else {
                        continue;
                    };
                    if !wanted(&holds) {
                        continue;
                    }
                    let longest = addresses.iter().map(|(_, ttl)| *ttl).max().unwrap_or(0);
                    let keep = |ttl: u32| Duration::from_secs(ttl.into()) + GRACE;
                    if direct.is_none() && self.put_alias(names, asked, holds, now_ns + nanos(keep(longest)))? {
                        done.aliases += 1;
                    }
                    (client, holds, seen, addresses.into_iter().map(|(ip, ttl)| (ip, keep(ttl))).collect::<Vec<_>>())
                }
                Sighting::Spoke { client, remote, name } => {
                    let Some(holds) = rule_for(names, &name, Some(client), now_ns).filter(wanted) else { continue };
                    (client, holds, vec![name], vec![(remote, SPOKEN_FOR)])
                }
            };
            // The tries have no device in their key: a rule for one device teaches no address.
            if holds.client.is_some() || self.by_name_only.contains(&holds.rule.rule_id) {
                continue;
            }
            for (ip, keep) in addresses {
                let ip = ip.to_canonical();
                let id = holds.rule.rule_id;
                if !self.block_shared.contains(&id) && is_shared(namer, names, client, ip, &seen, now, now_ns) {
                    done.shared += 1;
                    if self.open.entry(id).or_default().insert(ip) {
                        tracing::info!(address = %ip, rule = id, "not blocking a blocked name's address: it also serves a name no rule blocks (--block-shared blocks it)");
                    }
                    continue;
                }
                if self.put(blocks, IpNet::from(ip), holds.rule, now_ns + nanos(keep))? {
                    done.blocked += 1;
                }
            }
        }
        Ok(done)
    }

    /// Puts one learned address in, or keeps the one there longer; never over an address
    /// rule, never past the rule's own end.
    fn put(&mut self, blocks: &mut KernelBlocks, net: IpNet, rule: BlockValue, end: u64) -> Result<bool> {
        let c = Claim { rule: rule.rule_id, end: bounded(end, &rule) };
        self.ends.claim(blocks, net, c, &mut self.dropped)
    }

    /// Puts the name `asked`, whose CNAME chain leads to a name `holds` blocks, into `DOMAINS`
    /// for whom the rule holds (the asking address, for a device's rule); never over a rule's
    /// own entry.
    fn put_alias(&mut self, names: &mut KernelNames, asked: &str, holds: Holds, end: u64) -> Result<bool> {
        let Ok(hash) = domain_hash(asked.trim_end_matches('.')) else { return Ok(false) };
        let c = Claim { rule: holds.rule.rule_id, end: bounded(end, &holds.rule) };
        let put = self.aliases.claim(names, name_key(hash, holds.client), c, &mut self.refused)?;
        if put {
            tracing::info!(name = asked, rule = c.rule, "refusing a name whose CNAME chain leads to a blocked name");
        }
        Ok(put)
    }

    /// Removes the learned entries whose end has passed, and those of rules that are no
    /// longer active (`active`: a rule unblocked or ended takes its entries with it, except
    /// those another rule still wants).
    pub fn expire(
        &mut self,
        names: &mut KernelNames,
        blocks: &mut KernelBlocks,
        now_ns: u64,
        active: Option<&HashSet<u32>>,
    ) -> Result<Expired> {
        let gone = |c: &Claim| c.end <= now_ns || active.is_some_and(|a| !a.contains(&c.rule));
        let addresses = self.ends.release(blocks, gone, &mut self.dropped)?;
        let aliases = self.aliases.release(names, gone, &mut self.refused)?;
        let mut counted: HashMap<u32, (u64, u64)> = HashMap::new();
        for (rule, n) in self.dropped.drain() {
            counted.entry(rule).or_default().0 += n;
        }
        for (rule, n) in self.refused.drain() {
            counted.entry(rule).or_default().1 += n;
        }
        Ok(Expired { addresses, aliases, counted })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A rule's own end bounds what it teaches.
fn bounded(end: u64, rule: &BlockValue) -> u64 {
    if rule.expires_ns != 0 { end.min(rule.expires_ns) } else { end }
}

/// The rule that blocks `name` now for `client` (or for every device with `client` `None`),
/// as the kernel matches a query: the most specific suffix first, the device's own rule
/// before the one for every device.
fn rule_for(names: &KernelNames, name: &str, client: Option<IpAddr>, now_ns: u64) -> Option<Holds> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    let client = client.map(|c| c.to_canonical());
    (0..labels.len()).find_map(|i| {
        let hash = domain_hash(&labels[i..].join(".")).ok()?;
        client.into_iter().map(Some).chain([None]).find_map(|c| {
            names.get(&name_key(hash, c)).filter(|v| v.holds(now_ns)).map(|rule| Holds { rule, client: c })
        })
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
    let blocked = |n: &str| rule_for(names, n, None, now_ns).is_some();
    let same = |n: &str| seen.iter().any(|s| s.eq_ignore_ascii_case(n.trim_end_matches('.')));
    namer
        .flows
        .names_for(client, ip, now)
        .iter()
        .any(|(name, cname)| !same(name) && !blocked(name) && !cname.as_deref().is_some_and(blocked))
}
