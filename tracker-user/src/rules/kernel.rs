//! The kernel's name map (`DOMAINS`) kept equal to the active name rules: one entry per domain
//! and device address (or for every device), the most specific rule's when two cover the same
//! key, and the queries each entry refused carried into its rule's history when the entry goes.
//! The dns-bypass rules' port entries follow in the same call ([`super::bypass::reconcile`]), so
//! every path that keeps names current (a block command, the daemon's start, a rule's end, a
//! device's new address) keeps them current too.

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, params};
use tracker_common::{BLOCK_LEARNED, DomainKey, defaults::DOMAIN_ENTRIES, name::domain_hash};

use super::cover::stored_device_addresses;
use crate::{
    blocking::{KernelNames, KernelRule, name_key},
    store::{
        blocks::{RuleKind, active_rules},
        devices::DeviceList,
    },
    timefmt::KernelClock,
};

/// The rule a kernel key should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub rule_id: u32,
    pub kind: RuleKind,
    /// On the kernel's clock; 0 = never.
    pub expires_ns: u64,
}

impl Want {
    /// Whether `self` takes a key over `other`: the more specific kind, then the older rule
    /// (so a key does not move between equal rules as rules come and go).
    pub fn beats(&self, other: &Want) -> bool {
        (self.kind.specificity(), std::cmp::Reverse(self.rule_id))
            > (other.kind.specificity(), std::cmp::Reverse(other.rule_id))
    }
}

/// Adds a candidate for `key`, keeping whichever [`Want::beats`] the other.
pub fn offer(wanted: &mut HashMap<DomainKey, Want>, key: DomainKey, want: Want) {
    match wanted.get(&key) {
        Some(have) if !want.beats(have) => {}
        _ => {
            wanted.insert(key, want);
        }
    }
}

/// Every kernel key the active name rules make at `clock`'s time, with the rule each holds.
/// A rule for a device the database no longer knows makes no key (and is logged).
pub fn wanted(
    conn: &Connection,
    devices: &DeviceList,
    clock: KernelClock,
    now_ms: i64,
) -> Result<HashMap<DomainKey, Want>> {
    let mut wanted = HashMap::new();
    let mut domains = conn.prepare_cached("SELECT domain FROM block_domains WHERE rule = ?1")?;
    for rule in active_rules(conn, None, now_ms)?.into_iter().filter(|r| r.kind.is_name()) {
        let Some(expires_ns) = clock.expiry_ns(rule.expires) else { continue };
        let clients: Vec<Option<std::net::IpAddr>> = match &rule.client {
            None => vec![None],
            Some(c) => stored_device_addresses(devices, c).into_iter().map(Some).collect(),
        };
        if clients.is_empty() {
            tracing::warn!(rule = rule.id, device = ?rule.client, "the rule's device has no known address; it blocks nothing");
            continue;
        }
        let want = Want { rule_id: rule.id, kind: rule.kind, expires_ns };
        let rows = domains.query_map([rule.id], |r| r.get::<_, String>(0))?;
        for d in rows {
            let d = d.context("reading a rule's domains")?;
            // Stored domains were checked when stored; one that no longer hashes is skipped.
            let Ok(hash) = domain_hash(&d) else { continue };
            for c in &clients {
                offer(&mut wanted, name_key(hash, *c), want);
            }
        }
    }
    Ok(wanted)
}

/// What [`reconcile`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
    /// Entries now held by another rule, or with another end.
    pub replaced: usize,
    /// Entries in the map afterwards.
    pub entries: usize,
    /// Entries in the port map afterwards; `None` without one (pins of an older tracker).
    pub ports: Option<usize>,
}

/// Ends differing by more than this are rewritten: two readings of the clocks a moment apart
/// give the same end within microseconds, a changed `--for` by seconds or more.
const EXPIRY_SLACK_NS: u64 = 1_000_000_000;

/// Makes `DOMAINS` hold exactly [`wanted`], inside the caller's transaction on `conn` (whose
/// refusal counters it updates): an entry that already holds the right rule keeps its count;
/// the count of one removed or handed to another rule goes into its rule's history.
pub fn reconcile(conn: &Connection, kernel: &mut KernelNames, devices: &DeviceList, now_ms: i64) -> Result<Applied> {
    let clock = KernelClock::now();
    let wanted = wanted(conn, devices, clock, now_ms)?;
    if wanted.len() > DOMAIN_ENTRIES as usize {
        bail!(
            "the name rules would need {} kernel entries, more than the {DOMAIN_ENTRIES} the kernel's name map holds \
             (one per domain and device address); nothing was changed",
            wanted.len()
        );
    }
    let present = kernel.entries()?;
    let active: std::collections::HashSet<u32> =
        active_rules(conn, None, now_ms)?.into_iter().filter(|r| r.kind.is_name()).map(|r| r.id).collect();
    let mut applied = Applied::default();
    // Per rule: the counts of its entries that stay, and of those that go.
    let mut kept: HashMap<u32, u64> = HashMap::new();
    let mut gone: HashMap<u32, u64> = HashMap::new();
    let mut write: Vec<(DomainKey, Want)> = Vec::new();
    let mut present_keys = std::collections::HashSet::with_capacity(present.len());
    // Removals first: they make room for what is added.
    for (key, v) in &present {
        present_keys.insert(*key);
        match wanted.get(key) {
            Some(w)
                if w.rule_id == v.rule_id
                    && w.expires_ns.abs_diff(v.expires_ns) <= EXPIRY_SLACK_NS
                    && (w.expires_ns == 0) == (v.expires_ns == 0) =>
            {
                *kept.entry(v.rule_id).or_default() += v.packets_dropped;
            }
            Some(w) => {
                *gone.entry(v.rule_id).or_default() += v.packets_dropped;
                write.push((*key, *w));
                applied.replaced += 1;
            }
            // A name the daemon learned (its CNAME chain leads to a blocked name) is the
            // daemon's to keep and end while its rule is active.
            None if v.flags & BLOCK_LEARNED != 0 && active.contains(&v.rule_id) => {
                *kept.entry(v.rule_id).or_default() += v.packets_dropped;
            }
            None => {
                *gone.entry(v.rule_id).or_default() += v.packets_dropped;
                kernel.remove(key)?;
                applied.removed += 1;
            }
        }
    }
    for (key, w) in &wanted {
        if !present_keys.contains(key) {
            write.push((*key, *w));
            applied.added += 1;
        }
    }
    for (key, w) in &write {
        kernel.insert(key, w.rule_id, w.expires_ns)?;
    }
    fold_counts(conn, &kept, &gone)?;
    applied.entries = wanted.len();
    if let Some(ports) = kernel.ports.as_mut() {
        applied.ports = Some(super::bypass::reconcile(conn, ports, devices, now_ms)?);
    }
    Ok(applied)
}

/// Each name rule's live counters: its entries' refusals summed, its latest hit.
pub fn counts(kernel: &KernelNames) -> Result<HashMap<u32, KernelRule>> {
    let mut out: HashMap<u32, KernelRule> = HashMap::new();
    for (_, v) in kernel.entries()? {
        let r = out.entry(v.rule_id).or_insert(KernelRule { rule_id: v.rule_id, packets_dropped: 0, last_hit_ns: 0 });
        r.packets_dropped += v.packets_dropped;
        r.last_hit_ns = r.last_hit_ns.max(v.last_hit_ns);
    }
    Ok(out)
}

/// Carries refusal counts across entries that went: a rule's total becomes what it had plus
/// what its entries counted since (at least its last recorded kernel count, which entries that
/// vanished with an old map still held), and its kernel count what its remaining entries hold.
fn fold_counts(conn: &Connection, kept: &HashMap<u32, u64>, gone: &HashMap<u32, u64>) -> Result<()> {
    // Active rules, and ended ones that still have a kernel count or whose entries just went
    // (a rule ended in this transaction).
    let gone_ids = serde_json::to_string(&gone.keys().collect::<Vec<_>>())?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, refused_before, refused_kernel FROM block_rules
         WHERE kind != 'ip' AND (ended IS NULL OR refused_kernel > 0 OR id IN (SELECT value FROM json_each(?1)))",
    )?;
    let rows: Vec<(u32, i64, i64)> =
        stmt.query_map([gone_ids], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut update =
        conn.prepare_cached("UPDATE block_rules SET refused_before = ?2, refused_kernel = ?3 WHERE id = ?1")?;
    for (id, before, stored) in rows {
        let (before, stored) = (before.max(0) as u64, stored.max(0) as u64);
        let k = kept.get(&id).copied().unwrap_or(0);
        let g = gone.get(&id).copied().unwrap_or(0);
        let total = before + stored.max(k + g);
        let (new_before, new_kernel) = (total - k, k);
        if (new_before, new_kernel) != (before, stored) {
            update.execute(params![id, new_before as i64, new_kernel as i64])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(rule_id: u32, kind: RuleKind) -> Want {
        Want { rule_id, kind, expires_ns: 0 }
    }

    #[test]
    fn the_most_specific_rule_holds_a_key_whatever_the_order() {
        let key = name_key(domain_hash("braze.com").unwrap(), None);
        let rules = [
            want(1, RuleKind::List),
            want(2, RuleKind::Company),
            want(3, RuleKind::Service),
            want(4, RuleKind::Domain),
            want(5, RuleKind::List),
        ];
        // Every order of offering ends with the domain rule.
        for start in 0..rules.len() {
            let mut wanted = HashMap::new();
            for i in 0..rules.len() {
                offer(&mut wanted, key, rules[(start + i) % rules.len()]);
            }
            assert_eq!(wanted[&key].rule_id, 4, "start {start}");
        }
        assert!(want(3, RuleKind::Service).beats(&want(2, RuleKind::Company)));
        assert!(want(2, RuleKind::Company).beats(&want(1, RuleKind::List)));
        // Between equals the older rule keeps it.
        assert!(want(1, RuleKind::List).beats(&want(5, RuleKind::List)));
        assert!(!want(5, RuleKind::List).beats(&want(1, RuleKind::List)));
        // A device's key is another key: both rules hold one.
        let mut wanted = HashMap::new();
        let phone = name_key(domain_hash("braze.com").unwrap(), Some("10.77.0.2".parse().unwrap()));
        offer(&mut wanted, key, want(1, RuleKind::List));
        offer(&mut wanted, phone, want(9, RuleKind::List));
        assert_eq!((wanted[&key].rule_id, wanted[&phone].rule_id), (1, 9));
    }

    #[test]
    fn counts_carry_over_when_entries_go() {
        let s = crate::store::Store::open(&crate::store::tests::temp_db("names-fold")).unwrap();
        let c = s.conn();
        c.execute_batch(
            "INSERT INTO block_rules (id, kind, rule, created, refused_before, refused_kernel, ended)
                 VALUES (1, 'list', 'ads', 0, 10, 4, NULL), (2, 'domain', 'a.example', 0, 0, 0, NULL),
                        (3, 'list', 'gone', 0, 1, 2, NULL), (4, 'domain', 'b.example', 0, 0, 0, 5);",
        )
        .unwrap();
        // Rule 1: an entry that stayed now counts 3, one handed to rule 2 counted 2 (4 were
        // recorded, so one more refusal since). Rule 3's entries vanished with an old map.
        // Rule 4 ended in this transaction: its entry's 6 refusals go into its history.
        let kept = HashMap::from([(1, 3), (2, 0)]);
        let gone = HashMap::from([(1, 2), (4, 6)]);
        fold_counts(c, &kept, &gone).unwrap();
        let row = |id: u32| -> (i64, i64) {
            c.query_row("SELECT refused_before, refused_kernel FROM block_rules WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        assert_eq!(row(1), (12, 3), "10 + the 2 that went; 3 live: 15 in all");
        assert_eq!(row(2), (0, 0));
        assert_eq!(row(3), (3, 0), "the 2 last recorded are kept");
        assert_eq!(row(4), (6, 0));
    }
}
