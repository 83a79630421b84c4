//! Block rules in SQLite: their kinds, adding and ending them (ended rules are kept as history),
//! the domains a name rule covers, and the drop and refusal counters carried across kernel map
//! instances. The listing of `tracker blocks` is in [`listing`].

pub mod listing;

use std::collections::HashSet;

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;

use super::{Store, Writer, explain_path};
use crate::timefmt;

pub use listing::{BlockFilter, BlockRow, LiveCount};

/// What a rule blocks: the one list of kinds, with the text `block_rules.kind` stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// An address or CIDR, in the kernel's LPM tries.
    Ip,
    /// A domain and every name under it.
    Domain,
    /// Every domain of a company of the entity table.
    Company,
    /// Every domain of a service (app, SDK) of the entity table.
    Service,
    /// The domains of an imported blocklist.
    List,
    /// Encrypted DNS that walks around the name rules (`block-dns-bypass`): port 853 (DoT,
    /// DoQ) in the kernel's port map, and the public resolvers' DoH names as a name rule.
    #[serde(rename = "dns-bypass")]
    #[value(name = "dns-bypass")]
    DnsBypass,
}

impl RuleKind {
    pub const ALL: [RuleKind; 6] = [Self::Ip, Self::Domain, Self::Company, Self::Service, Self::List, Self::DnsBypass];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Domain => "domain",
            Self::Company => "company",
            Self::Service => "service",
            Self::List => "list",
            Self::DnsBypass => "dns-bypass",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the rule is enforced by name (the kernel's `DOMAINS` map), not by address. A
    /// dns-bypass rule is, and has its port entries besides (kept with its names).
    pub fn is_name(self) -> bool {
        self != Self::Ip
    }

    /// Whether the daemon blocks the addresses of this rule's names it sees answered anyway
    /// (`daemon::learned`). Not for `dns-bypass`: its names are public resolvers', whose
    /// addresses (8.8.8.8, 1.1.1.1) also serve the plain DNS the rule wants apps to fall back to.
    pub fn teaches_addresses(self) -> bool {
        matches!(self, Self::Domain | Self::Company | Self::Service | Self::List)
    }

    /// When two name rules cover the same name for the same device, the kernel entry is the
    /// higher one's: a domain the user named beats a service, a service its company, and any of
    /// them a list someone else wrote; the dns-bypass rule's resolver names sit between an
    /// entity and a list.
    pub fn specificity(self) -> u8 {
        match self {
            Self::Domain => 5,
            Self::Service => 4,
            Self::Company => 3,
            Self::DnsBypass => 2,
            Self::List => 1,
            Self::Ip => 0,
        }
    }
}

impl std::fmt::Display for RuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a rule ended, as `block_rules.end_reason` stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// An `unblock-...` command.
    Unblocked,
    /// Its `--for` time was up.
    Expired,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unblocked => "unblocked",
            Self::Expired => "expired",
        }
    }
}

/// What the database knows of one rule's kernel counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCounters {
    pub dropped_before: u64,
    pub dropped_kernel: u64,
}

/// What [`Store::add_rule_then`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    New(u32),
    Exists {
        id: u32,
        comment_updated: bool,
        /// A new `--for` end replaced the old one.
        expires_updated: bool,
        /// Domains the rule gained and lost (a list imported again, a company whose entry
        /// changed).
        domains_added: usize,
        domains_removed: usize,
    },
}

impl Added {
    pub fn id(&self) -> u32 {
        match *self {
            Self::New(id) | Self::Exists { id, .. } => id,
        }
    }
}

/// A rule as stored, without counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRule {
    pub id: u32,
    pub kind: RuleKind,
    pub rule: String,
    /// The device: a WireGuard public key or an address; `None` for every device.
    pub client: Option<String>,
    pub comment: Option<String>,
    pub created: i64,
    pub expires: Option<i64>,
}

/// A rule to add: what [`Store::add_rule_then`] stores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRule {
    pub kind: Option<RuleKind>,
    /// Canonical text: a CIDR, a domain, an entity's name, a list's name.
    pub rule: String,
    pub client: Option<String>,
    pub comment: Option<String>,
    /// Unix ms; `None`: until removed (an existing rule keeps its end).
    pub expires: Option<i64>,
    /// A name rule's domains, canonical and without repeats; empty for an IP rule.
    pub domains: Vec<String>,
    /// A name rule: block the addresses its names share with names no rule blocks too
    /// (`--block-shared`); an existing rule given it keeps it.
    pub block_shared: bool,
}

/// The SQL condition of an active rule at `?now` (unix ms): not ended, and not past its end
/// (a rule that expired while no daemon ran is over, whether or not it is marked yet).
pub const ACTIVE: &str = "ended IS NULL AND (expires IS NULL OR expires > ?1)";

impl Writer<'_> {
    /// Records the live kernel count of an IP rule (and its last hit).
    pub fn set_block_kernel_count(&self, id: u32, dropped: u64, last_hit_ms: Option<i64>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE block_rules SET dropped_kernel = ?2, last_hit = COALESCE(?3, last_hit)
                 WHERE id = ?1",
                params![id, dropped as i64, last_hit_ms],
            )
            .map_err(|e| explain_path(self.path, e))?;
        Ok(())
    }

    /// Records the sum of a name rule's live kernel entries (queries refused) and its last hit.
    pub fn set_refused_kernel_count(&self, id: u32, refused: u64, last_hit_ms: Option<i64>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE block_rules SET refused_kernel = ?2,
                     last_hit = max(COALESCE(?3, last_hit), COALESCE(last_hit, ?3))
                 WHERE id = ?1",
                params![id, refused as i64, last_hit_ms],
            )
            .map_err(|e| explain_path(self.path, e))?;
        Ok(())
    }

    /// Keeps in name rule `id`'s history what its learned entries counted before the daemon
    /// removed them (`daemon::learned`): the live sums read at the next sweep no longer hold
    /// them.
    pub fn fold_learned(&self, id: u32, dropped: u64, refused: u64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE block_rules SET
                     dropped_before = dropped_before + ?2, dropped_kernel = max(dropped_kernel - ?2, 0),
                     refused_before = refused_before + ?3, refused_kernel = max(refused_kernel - ?3, 0)
                 WHERE id = ?1",
                params![id, dropped as i64, refused as i64],
            )
            .map_err(|e| explain_path(self.path, e))?;
        Ok(())
    }

    /// Records how many addresses the daemon left open for name rule `id` because they also
    /// serve names no rule blocks.
    pub fn set_shared_open(&self, id: u32, n: u64) -> Result<()> {
        self.conn
            .execute("UPDATE block_rules SET shared_open = ?2 WHERE id = ?1", params![id, n as i64])
            .map_err(|e| explain_path(self.path, e))?;
        Ok(())
    }

    /// The connection of the transaction, for the reconcile that runs inside it.
    pub fn conn(&self) -> &Connection {
        self.conn
    }
}

impl Store {
    /// Runs `f` in an IMMEDIATE transaction (the write lock taken at once, so the rules read
    /// inside are the ones the commit applies to); kept only if `f` succeeds.
    pub fn write_rules<T>(&mut self, f: impl FnOnce(&Writer<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| explain_path(&path, e))?;
        let out = f(&Writer { conn: &tx, path: &path, rollups: true, source: super::schema::LIVE_SOURCE })?;
        tx.commit().map_err(|e| explain_path(&path, e))?;
        Ok(out)
    }

    /// Adds a rule and, inside the same transaction, runs `apply` with its id (the kernel
    /// change): if `apply` fails nothing is stored, so an error changes nothing. An active
    /// rule of the same kind, text and device is updated instead: a new comment or `--for` end
    /// replaces the old one, and a name rule's domains become `new.domains`; `apply` runs then
    /// too, so the kernel follows.
    pub fn add_rule_then(
        &mut self,
        new: &NewRule,
        apply: impl FnOnce(&Writer<'_>, u32) -> Result<()>,
    ) -> Result<Added> {
        let kind = new.kind.context("a rule needs a kind")?;
        let now = timefmt::now_ms();
        self.write_rules(|w| {
            end_expired(w.conn, now)?;
            let existing: Option<(u32, Option<String>, Option<i64>)> = w
                .conn
                .query_row(
                    &format!(
                        "SELECT id, comment, expires FROM block_rules
                         WHERE {ACTIVE} AND kind = ?2 AND rule = ?3 AND client IS ?4"
                    ),
                    params![now, kind.as_str(), new.rule, new.client],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let added = match existing {
                Some((id, old_comment, old_expires)) => {
                    let comment_updated = new.comment.as_ref().is_some_and(|c| old_comment.as_ref() != Some(c));
                    let expires_updated = new.expires.is_some() && new.expires != old_expires;
                    if new.block_shared {
                        w.conn.execute("UPDATE block_rules SET block_shared = 1 WHERE id = ?1", [id])?;
                    }
                    if comment_updated {
                        w.conn
                            .execute("UPDATE block_rules SET comment = ?2 WHERE id = ?1", params![id, new.comment])?;
                    }
                    if expires_updated {
                        w.conn
                            .execute("UPDATE block_rules SET expires = ?2 WHERE id = ?1", params![id, new.expires])?;
                    }
                    let (domains_added, domains_removed) =
                        if kind.is_name() { replace_domains(w.conn, id, &new.domains)? } else { (0, 0) };
                    Added::Exists { id, comment_updated, expires_updated, domains_added, domains_removed }
                }
                None => {
                    w.conn
                        .execute(
                            "INSERT INTO block_rules (kind, rule, client, comment, created, expires, block_shared)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            params![
                                kind.as_str(),
                                new.rule,
                                new.client,
                                new.comment,
                                now,
                                new.expires,
                                new.block_shared
                            ],
                        )
                        .map_err(|e| explain_path(w.path, e))?;
                    let id = u32::try_from(w.conn.last_insert_rowid()).context("rule ids past 2^32")?;
                    insert_domains(w.conn, id, &new.domains)?;
                    Added::New(id)
                }
            };
            apply(w, added.id())?;
            Ok(added)
        })
    }

    /// Ends the active rule of this kind, text and device (kept, marked `unblocked`) and, inside
    /// the same transaction, runs `apply` with its id (the kernel change): if `apply` fails the
    /// rule stays. `Ok(None)` if there was no such rule.
    pub fn end_rule_then(
        &mut self,
        kind: RuleKind,
        rule: &str,
        client: Option<&str>,
        apply: impl FnOnce(&Writer<'_>, u32) -> Result<()>,
    ) -> Result<Option<u32>> {
        let now = timefmt::now_ms();
        self.write_rules(|w| {
            end_expired(w.conn, now)?;
            let id: Option<u32> = w
                .conn
                .query_row(
                    &format!(
                        "UPDATE block_rules SET ended = ?1, end_reason = 'unblocked'
                         WHERE {ACTIVE} AND kind = ?2 AND rule = ?3 AND client IS ?4 RETURNING id"
                    ),
                    params![now, kind.as_str(), rule, client],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| explain_path(w.path, e))?;
            if let Some(id) = id {
                apply(w, id)?;
            }
            Ok(id)
        })
    }

    /// Marks every rule past its end as ended (`expired`, at its end time) and, inside the same
    /// transaction, runs `apply` (the kernel change). Returns the rules ended.
    pub fn end_expired_then(
        &mut self,
        now_ms: i64,
        apply: impl FnOnce(&Writer<'_>, &[StoredRule]) -> Result<()>,
    ) -> Result<Vec<StoredRule>> {
        self.write_rules(|w| {
            let ended = end_expired(w.conn, now_ms)?;
            if !ended.is_empty() {
                apply(w, &ended)?;
            }
            Ok(ended)
        })
    }

    /// The earliest end of an active timed rule, to wake up for.
    pub fn next_expiry(&self) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT min(expires) FROM block_rules WHERE ended IS NULL AND expires IS NOT NULL", [], |r| {
                r.get(0)
            })
            .context("reading the next rule end")
    }

    /// [`Store::add_rule_then`] for an IP rule with nothing else to do: the new rule's id, or
    /// `None` if it existed.
    pub fn add_block(&mut self, kind: RuleKind, rule: &str, comment: Option<&str>) -> Result<Option<u32>> {
        let new =
            NewRule { kind: Some(kind), rule: rule.into(), comment: comment.map(Into::into), ..NewRule::default() };
        Ok(match self.add_rule_then(&new, |_, _| Ok(()))? {
            Added::New(id) => Some(id),
            Added::Exists { .. } => None,
        })
    }

    /// [`Store::end_rule_then`] for a rule of every device with nothing else to do.
    pub fn remove_block(&mut self, kind: RuleKind, rule: &str) -> Result<Option<u32>> {
        self.end_rule_then(kind, rule, None, |_, _| Ok(()))
    }

    /// Every active rule with what is needed to write it again into a new database.
    pub fn stored_rules(&self) -> Result<Vec<StoredRule>> {
        active_rules(&self.conn, None, timefmt::now_ms())
    }

    /// Writes a rule under a given id (the kernel's, when a lost database is rebuilt from the
    /// kernel maps). An id or rule already present is left alone.
    pub fn restore_rule(&mut self, r: &StoredRule) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO block_rules (id, kind, rule, client, comment, created, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![r.id, r.kind.as_str(), r.rule, r.client, r.comment, r.created, r.expires],
            )
            .map_err(|e| self.explain(e))?;
        Ok(())
    }

    /// Every active rule of `kind` for every device as (id, rule text).
    pub fn block_rules(&self, kind: RuleKind) -> Result<Vec<(u32, String)>> {
        Ok(active_rules(&self.conn, Some(kind), timefmt::now_ms())?
            .into_iter()
            .filter(|r| r.client.is_none())
            .map(|r| (r.id, r.rule))
            .collect())
    }

    pub fn block_counters(&self, id: u32) -> Result<Option<BlockCounters>> {
        self.conn
            .query_row("SELECT dropped_before, dropped_kernel FROM block_rules WHERE id = ?1", [id], |r| {
                Ok(BlockCounters {
                    dropped_before: r.get::<_, i64>(0)? as u64,
                    dropped_kernel: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()
            .context("reading block counters")
    }

    /// A rule's kernel entry is being created afresh (new map after a reboot, or pins removed):
    /// fold what the old entry counted into the history so the total carries on.
    pub fn fold_block_kernel_count(&mut self, id: u32) -> Result<()> {
        fold_dropped(&self.conn, id, 0).map_err(|e| self.explain(e))
    }

    /// The domains of rule `id`, sorted.
    pub fn rule_domains(&self, id: u32) -> Result<Vec<String>> {
        rule_domains(&self.conn, id)
    }
}

/// [`Store::fold_block_kernel_count`] on a connection (inside a rule change's transaction),
/// for an entry that counted `live` when it was taken out (0: already gone): its count goes
/// into the history, however much of it the last sweep recorded.
pub fn fold_dropped(conn: &Connection, id: u32, live: u64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE block_rules SET dropped_before = dropped_before + max(dropped_kernel, ?2), dropped_kernel = 0
         WHERE id = ?1",
        params![id, live as i64],
    )?;
    Ok(())
}

/// The active name rules at `now_ms` that block shared addresses too (`--block-shared`).
pub fn block_shared_rules(conn: &Connection, now_ms: i64) -> Result<std::collections::HashSet<u32>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT id FROM block_rules WHERE {ACTIVE} AND block_shared != 0"))?;
    let ids = stmt.query_map([now_ms], |r| r.get(0))?;
    ids.collect::<rusqlite::Result<_>>().context("reading the rules that block shared addresses")
}

/// Active rules (of `kind`, or all) at `now_ms`, oldest first.
pub fn active_rules(conn: &Connection, kind: Option<RuleKind>, now_ms: i64) -> Result<Vec<StoredRule>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, kind, rule, client, comment, created, expires FROM block_rules
         WHERE {ACTIVE} AND (?2 IS NULL OR kind = ?2) ORDER BY id"
    ))?;
    let rows = stmt.query_map(params![now_ms, kind.map(RuleKind::as_str)], stored_rule)?;
    rows.collect::<rusqlite::Result<_>>().context("reading block rules")
}

fn stored_rule(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRule> {
    let kind: String = r.get(1)?;
    Ok(StoredRule {
        id: r.get(0)?,
        kind: RuleKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("rule kind {kind:?}").into(),
            )
        })?,
        rule: r.get(2)?,
        client: r.get(3)?,
        comment: r.get(4)?,
        created: r.get(5)?,
        expires: r.get(6)?,
    })
}

/// Marks rules past their end as ended at that end, reason `expired`; returns them.
fn end_expired(conn: &Connection, now_ms: i64) -> Result<Vec<StoredRule>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE block_rules SET ended = expires, end_reason = 'expired'
         WHERE ended IS NULL AND expires IS NOT NULL AND expires <= ?1
         RETURNING id, kind, rule, client, comment, created, expires",
    )?;
    let rows = stmt.query_map([now_ms], stored_rule)?;
    let mut out: Vec<StoredRule> = rows.collect::<rusqlite::Result<_>>().context("ending expired rules")?;
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// The domains of rule `id`, sorted.
pub fn rule_domains(conn: &Connection, id: u32) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT domain FROM block_domains WHERE rule = ?1 ORDER BY domain")?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    rows.collect::<rusqlite::Result<_>>().context("reading a rule's domains")
}

/// Stores a new rule's domains with one prepared statement (a 100,000-line list in one
/// transaction takes a fraction of a second).
fn insert_domains(conn: &Connection, id: u32, domains: &[String]) -> Result<()> {
    let mut stmt = conn.prepare_cached("INSERT OR IGNORE INTO block_domains (rule, domain) VALUES (?1, ?2)")?;
    for d in domains {
        stmt.execute(params![id, d])?;
    }
    Ok(())
}

/// Makes rule `id`'s domains exactly `domains`; returns (added, removed).
fn replace_domains(conn: &Connection, id: u32, domains: &[String]) -> Result<(usize, usize)> {
    if domains.is_empty() {
        bail!("a name rule needs at least one domain");
    }
    let old: HashSet<String> = rule_domains(conn, id)?.into_iter().collect();
    let new: HashSet<&str> = domains.iter().map(String::as_str).collect();
    let mut removed = 0;
    let mut del = conn.prepare_cached("DELETE FROM block_domains WHERE rule = ?1 AND domain = ?2")?;
    for d in old.iter().filter(|d| !new.contains(d.as_str())) {
        del.execute(params![id, d])?;
        removed += 1;
    }
    let added: Vec<String> = new.iter().filter(|d| !old.contains(**d)).map(|d| (*d).to_owned()).collect();
    insert_domains(conn, id, &added)?;
    Ok((added.len(), removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_db;

    fn ip(rule: &str, comment: Option<&str>) -> NewRule {
        NewRule { kind: Some(RuleKind::Ip), rule: rule.into(), comment: comment.map(Into::into), ..NewRule::default() }
    }

    #[test]
    fn kinds_have_one_stored_text() {
        for k in RuleKind::ALL {
            assert_eq!(RuleKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(RuleKind::parse("domains"), None);
        let order: Vec<RuleKind> = {
            let mut v = RuleKind::ALL.to_vec();
            v.sort_by_key(|k| std::cmp::Reverse(k.specificity()));
            v
        };
        assert_eq!(
            order,
            [RuleKind::Domain, RuleKind::Service, RuleKind::Company, RuleKind::DnsBypass, RuleKind::List, RuleKind::Ip]
        );
    }

    #[test]
    fn a_failed_kernel_change_leaves_the_rule_as_it_was() {
        let mut s = Store::open(&temp_db("blocks-tx")).unwrap();
        let err = s.add_rule_then(&ip("203.0.113.7/32", None), |_, _| anyhow::bail!("map full"));
        assert!(err.is_err());
        assert!(s.stored_rules().unwrap().is_empty(), "a refused kernel insert stores nothing");

        let id = s.add_block(RuleKind::Ip, "203.0.113.7/32", Some("first")).unwrap().unwrap();
        let err = s.end_rule_then(RuleKind::Ip, "203.0.113.7/32", None, |_, _| anyhow::bail!("EPERM"));
        assert!(err.is_err());
        assert_eq!(s.stored_rules().unwrap().len(), 1, "a failed kernel removal keeps the rule");

        let again = s.add_rule_then(&ip("203.0.113.7/32", Some("second")), |_, _| Ok(())).unwrap();
        let exists = |comment_updated| Added::Exists {
            id,
            comment_updated,
            expires_updated: false,
            domains_added: 0,
            domains_removed: 0,
        };
        assert_eq!(again, exists(true));
        assert_eq!(s.stored_rules().unwrap()[0].comment.as_deref(), Some("second"));
        assert_eq!(s.add_rule_then(&ip("203.0.113.7/32", None), |_, _| Ok(())).unwrap(), exists(false));

        let ended = s.end_rule_then(RuleKind::Ip, "203.0.113.7/32", None, |_, got| {
            assert_eq!(got, id);
            Ok(())
        });
        assert_eq!(ended.unwrap(), Some(id));
        assert!(s.stored_rules().unwrap().is_empty());
        // Ended rules stay as history, and the same rule can be added again under a new id.
        let ended_reason: String =
            s.conn.query_row("SELECT end_reason FROM block_rules WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        assert_eq!(ended_reason, "unblocked");
        assert_eq!(s.add_block(RuleKind::Ip, "203.0.113.7/32", None).unwrap(), Some(id + 1));
    }

    #[test]
    fn restored_rules_keep_their_kernel_ids() {
        let mut s = Store::open(&temp_db("blocks-restore")).unwrap();
        let r = StoredRule {
            id: 7,
            kind: RuleKind::Ip,
            rule: "198.51.100.0/24".into(),
            client: None,
            comment: None,
            created: 5,
            expires: None,
        };
        s.restore_rule(&r).unwrap();
        s.restore_rule(&r).unwrap();
        assert_eq!(s.stored_rules().unwrap(), [r]);
        // New rules take ids after the restored ones, so they never clash with kernel entries.
        assert_eq!(s.add_block(RuleKind::Ip, "203.0.113.1/32", None).unwrap(), Some(8));
    }

    #[test]
    fn one_active_rule_per_kind_text_and_device_and_domains_follow_a_block_again() {
        let mut s = Store::open(&temp_db("blocks-names")).unwrap();
        let list = |domains: &[&str], client: Option<&str>| NewRule {
            kind: Some(RuleKind::List),
            rule: "ads".into(),
            client: client.map(Into::into),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            ..NewRule::default()
        };
        let id = s.add_rule_then(&list(&["a.example", "b.example"], None), |_, _| Ok(())).unwrap().id();
        let phone = s.add_rule_then(&list(&["a.example"], Some("10.77.0.2")), |_, _| Ok(())).unwrap();
        assert_eq!(phone, Added::New(id + 1), "the same list for one device is a rule of its own");
        let again = s.add_rule_then(&list(&["b.example", "c.example", "d.example"], None), |_, _| Ok(())).unwrap();
        assert_eq!(
            again,
            Added::Exists { id, comment_updated: false, expires_updated: false, domains_added: 2, domains_removed: 1 }
        );
        assert_eq!(s.rule_domains(id).unwrap(), ["b.example", "c.example", "d.example"]);
        assert_eq!(s.end_rule_then(RuleKind::List, "ads", None, |_, _| Ok(())).unwrap(), Some(id));
        assert_eq!(s.rule_domains(id).unwrap().len(), 3, "an ended list keeps its domains as history");
        assert_eq!(s.stored_rules().unwrap().len(), 1);
    }

    #[test]
    fn timed_rules_end_as_expired_at_their_end() {
        let mut s = Store::open(&temp_db("blocks-expiry")).unwrap();
        let now = timefmt::now_ms();
        let timed = NewRule { expires: Some(now + 60_000), ..ip("203.0.113.9/32", None) };
        let id = s.add_rule_then(&timed, |_, _| Ok(())).unwrap().id();
        s.add_block(RuleKind::Ip, "203.0.113.10/32", None).unwrap();
        assert_eq!(s.next_expiry().unwrap(), Some(now + 60_000));
        assert!(s.end_expired_then(now, |_, _| panic!("nothing ended")).unwrap().is_empty());
        let ended = s.end_expired_then(now + 60_000, |_, e| {
            assert_eq!(e.len(), 1);
            Ok(())
        });
        assert_eq!(ended.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
        let (at, why): (i64, String) = s
            .conn
            .query_row("SELECT ended, end_reason FROM block_rules WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((at, why.as_str()), (now + 60_000, "expired"), "ended at its end, not when noticed");
        assert_eq!(s.next_expiry().unwrap(), None);
    }
}
