//! Which name rules want each learned kernel entry, and until when: an address (or a name) two
//! rules learned stays until neither wants it, and the entry always holds one rule that does.

use std::{collections::HashMap, hash::Hash};

use anyhow::Result;
use ipnet::IpNet;
use tracker_common::{BLOCK_LEARNED, BlockValue, DomainKey};

use crate::blocking::{KernelBlocks, KernelNames};

/// One rule's want of an entry: until `end` on the kernel's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub rule: u32,
    pub end: u64,
}

/// A kernel map that holds learned entries (the address tries, `DOMAINS`).
pub trait LearnedMap<K> {
    fn value(&self, key: &K) -> Option<BlockValue>;
    /// Writes `v` (flagged learned) as the entry's whole value.
    fn write(&mut self, key: &K, v: BlockValue) -> Result<()>;
    fn delete(&mut self, key: &K) -> Result<()>;
}

impl LearnedMap<IpNet> for KernelBlocks {
    fn value(&self, key: &IpNet) -> Option<BlockValue> {
        self.get(key)
    }
    fn write(&mut self, key: &IpNet, v: BlockValue) -> Result<()> {
        self.write_learned(key, v)
    }
    fn delete(&mut self, key: &IpNet) -> Result<()> {
        self.remove(key)
    }
}

impl LearnedMap<DomainKey> for KernelNames {
    fn value(&self, key: &DomainKey) -> Option<BlockValue> {
        self.get(key)
    }
    fn write(&mut self, key: &DomainKey, v: BlockValue) -> Result<()> {
        self.write_learned(key, v)
    }
    fn delete(&mut self, key: &DomainKey) -> Result<()> {
        self.remove(key)
    }
}

pub fn is_learned(v: &BlockValue) -> bool {
    v.flags & BLOCK_LEARNED != 0
}

/// The claims on the learned entries of one map. The entry holds the claim that ends last,
/// so it lives as long as any rule wants it.
pub struct Claims<K> {
    by_key: HashMap<K, Vec<Claim>>,
}

impl<K> Default for Claims<K> {
    fn default() -> Self {
        Self { by_key: HashMap::new() }
    }
}

/// What an entry's counters held when it passed to another rule or went, per rule:
/// (packets dropped or queries refused).
pub type Counted = HashMap<u32, u64>;

impl<K: Hash + Eq + Copy> Claims<K> {
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Takes over an entry found in the map (a previous daemon's).
    pub fn adopt(&mut self, key: K, v: &BlockValue) {
        self.by_key.insert(key, vec![Claim { rule: v.rule_id, end: v.expires_ns }]);
    }

    /// `c` wants `key`: the entry is made or kept longer, never over an entry that is not
    /// learned (a rule's own). Returns whether anything changed in the map.
    pub fn claim(&mut self, map: &mut impl LearnedMap<K>, key: K, c: Claim, counted: &mut Counted) -> Result<bool> {
        let present = map.value(&key);
        if present.is_some_and(|v| !is_learned(&v)) {
            return Ok(false);
        }
        let claims = self.by_key.entry(key).or_default();
        match claims.iter_mut().find(|have| have.rule == c.rule) {
            Some(have) if have.end >= c.end && present.is_some() => return Ok(false),
            Some(have) => have.end = have.end.max(c.end),
            None => claims.push(c),
        }
        hold(map, &key, claims, present, counted).map(|()| true)
    }

    /// Drops the claims `gone` says are over (past their end, or of a rule no longer active);
    /// an entry no claim wants is removed, one whose holder went passes to a claim left.
    /// Returns how many entries were removed.
    pub fn release(
        &mut self,
        map: &mut impl LearnedMap<K>,
        gone: impl Fn(&Claim) -> bool,
        counted: &mut Counted,
    ) -> Result<usize> {
        let mut removed = 0;
        let keys: Vec<K> = self.by_key.iter().filter(|(_, cs)| cs.iter().any(&gone)).map(|(k, _)| *k).collect();
        for key in keys {
            let Some(claims) = self.by_key.get_mut(&key) else { continue };
            claims.retain(|c| !gone(c));
            // Only if it is still a learned entry: a rule of its own may have taken the key.
            let present = map.value(&key).filter(is_learned);
            if claims.is_empty() {
                self.by_key.remove(&key);
                if let Some(v) = present {
                    map.delete(&key)?;
                    *counted.entry(v.rule_id).or_default() += v.packets_dropped;
                }
                removed += 1;
            } else if present.is_some() {
                hold(map, &key, claims, present, counted)?;
            }
        }
        Ok(removed)
    }
}

/// Makes the entry hold the claim that ends last, keeping its counters when the rule stays
/// (a read-modify-write: a packet counted by the kernel in between is lost, a window of
/// microseconds against a count kept for hours), and moving them to their rule's record when
/// the entry passes to another rule.
fn hold<K>(
    map: &mut impl LearnedMap<K>,
    key: &K,
    claims: &[Claim],
    present: Option<BlockValue>,
    counted: &mut Counted,
) -> Result<()> {
    let Some(best) = claims.iter().max_by_key(|c| (c.end, std::cmp::Reverse(c.rule))).copied() else { return Ok(()) };
    let v = match present {
        Some(v) if v.rule_id == best.rule => {
            if v.expires_ns == best.end {
                return Ok(());
            }
            BlockValue { expires_ns: best.end, ..v }
        }
        other => {
            if let Some(v) = other {
                *counted.entry(v.rule_id).or_default() += v.packets_dropped;
            }
            BlockValue { rule_id: best.rule, expires_ns: best.end, ..BlockValue::default() }
        }
    };
    map.write(key, v)
}
