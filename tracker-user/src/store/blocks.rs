//! Block rules in SQLite: adding and removing them, their text for the kernel, and the drop
//! counters carried across kernel map instances.

use anyhow::{Context as _, Result};
use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;

use super::{Store, Writer, explain_path};
use crate::timefmt;

/// A block rule with its counters; field names are the JSON interface of `tracker blocks`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BlockRow {
    #[serde(skip)]
    pub id: u32,
    pub rule: String,
    pub comment: Option<String>,
    pub packets_dropped: u64,
    pub last_hit: Option<String>,
    pub created: String,
}

/// What the database knows of one rule's kernel counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCounters {
    pub dropped_before: u64,
    pub dropped_kernel: u64,
}

/// What [`Store::add_block_then`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    New(u32),
    Exists { id: u32, comment_updated: bool },
}

/// A rule as stored, without counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRule {
    pub id: u32,
    pub kind: String,
    pub rule: String,
    pub comment: Option<String>,
    pub created: i64,
}

impl Writer<'_> {
    /// Records the live kernel count of a rule (and its last hit).
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
}

impl Store {
    /// Adds a rule and, inside the same transaction, runs `apply` with its new id (the kernel
    /// insert): if `apply` fails the rule is not stored, so an error changes nothing. An
    /// existing rule is left as it is, except that a new comment replaces the old one.
    pub fn add_block_then(
        &mut self,
        kind: &str,
        rule: &str,
        comment: Option<&str>,
        apply: impl FnOnce(u32) -> Result<()>,
    ) -> Result<Added> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| super::explain_path(&path, e))?;
        let existing: Option<(u32, Option<String>)> = tx
            .query_row("SELECT id, comment FROM block_rules WHERE kind = ?1 AND rule = ?2", params![kind, rule], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((id, old)) = existing {
            let changed = comment.is_some_and(|c| old.as_deref() != Some(c));
            if changed {
                tx.execute("UPDATE block_rules SET comment = ?2 WHERE id = ?1", params![id, comment])?;
                tx.commit().map_err(|e| super::explain_path(&path, e))?;
            }
            return Ok(Added::Exists { id, comment_updated: changed });
        }
        tx.execute(
            "INSERT INTO block_rules (kind, rule, comment, created) VALUES (?1, ?2, ?3, ?4)",
            params![kind, rule, comment, timefmt::now_ms()],
        )
        .map_err(|e| super::explain_path(&path, e))?;
        let id = tx.last_insert_rowid() as u32;
        apply(id)?;
        tx.commit().map_err(|e| super::explain_path(&path, e))?;
        Ok(Added::New(id))
    }

    /// Removes a rule and, inside the same transaction, runs `apply` with its id (the kernel
    /// removal): if `apply` fails the rule stays. `Ok(None)` if there was no such rule.
    pub fn remove_block_then(
        &mut self,
        kind: &str,
        rule: &str,
        apply: impl FnOnce(u32) -> Result<()>,
    ) -> Result<Option<u32>> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| super::explain_path(&path, e))?;
        let id: Option<u32> = tx
            .query_row("DELETE FROM block_rules WHERE kind = ?1 AND rule = ?2 RETURNING id", params![kind, rule], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| super::explain_path(&path, e))?;
        let Some(id) = id else {
            return Ok(None);
        };
        apply(id)?;
        tx.commit().map_err(|e| super::explain_path(&path, e))?;
        Ok(Some(id))
    }

    /// [`Store::add_block_then`] with nothing else to do: the new rule's id, or `None` if it
    /// existed.
    pub fn add_block(&mut self, kind: &str, rule: &str, comment: Option<&str>) -> Result<Option<u32>> {
        Ok(match self.add_block_then(kind, rule, comment, |_| Ok(()))? {
            Added::New(id) => Some(id),
            Added::Exists { .. } => None,
        })
    }

    /// [`Store::remove_block_then`] with nothing else to do.
    pub fn remove_block(&mut self, kind: &str, rule: &str) -> Result<Option<u32>> {
        self.remove_block_then(kind, rule, |_| Ok(()))
    }

    /// Every rule with what is needed to write it again into a new database.
    pub fn stored_rules(&self) -> Result<Vec<StoredRule>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id, kind, rule, comment, created FROM block_rules ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredRule { id: r.get(0)?, kind: r.get(1)?, rule: r.get(2)?, comment: r.get(3)?, created: r.get(4)? })
        })?;
        rows.collect::<rusqlite::Result<_>>().context("reading block rules")
    }

    /// Writes a rule under a given id (the kernel's, when a lost database is rebuilt from the
    /// kernel maps). An id or rule already present is left alone.
    pub fn restore_rule(&mut self, r: &StoredRule) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO block_rules (id, kind, rule, comment, created) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![r.id, r.kind, r.rule, r.comment, r.created],
            )
            .map_err(|e| self.explain(e))?;
        Ok(())
    }

    /// Every rule of `kind` as (id, rule text).
    pub fn block_rules(&self, kind: &str) -> Result<Vec<(u32, String)>> {
        let mut stmt = self.conn.prepare_cached("SELECT id, rule FROM block_rules WHERE kind = ?1 ORDER BY id")?;
        let rows = stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>().context("reading block rules")
    }

    /// Rules with counters. `live` gives the current kernel count of a rule id when the kernel
    /// maps are reachable, so the listing is fresh between the daemon's sweeps.
    pub fn blocks(&self, live: &dyn Fn(u32) -> Option<(u64, Option<i64>)>) -> Result<Vec<BlockRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, rule, comment, dropped_before, dropped_kernel, last_hit, created
             FROM block_rules ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(4)? as u64,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, rule, comment, before, kernel, last_hit, created) = row?;
            let (kernel, last_hit) = match live(id) {
                Some((k, hit)) => (k, hit.or(last_hit)),
                None => (kernel, last_hit),
            };
            out.push(BlockRow {
                id,
                rule,
                comment,
                packets_dropped: before + kernel,
                last_hit: last_hit.map(timefmt::rfc3339),
                created: timefmt::rfc3339(created),
            });
        }
        Ok(out)
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
        self.conn
            .execute(
                "UPDATE block_rules SET dropped_before = dropped_before + dropped_kernel,
                     dropped_kernel = 0 WHERE id = ?1",
                [id],
            )
            .map_err(|e| self.explain(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_db;

    #[test]
    fn a_failed_kernel_change_leaves_the_rule_as_it_was() {
        let mut s = Store::open(&temp_db("blocks-tx")).unwrap();
        let err = s.add_block_then("ip", "203.0.113.7/32", None, |_| anyhow::bail!("map full"));
        assert!(err.is_err());
        assert!(s.stored_rules().unwrap().is_empty(), "a refused kernel insert stores nothing");

        let id = s.add_block("ip", "203.0.113.7/32", Some("first")).unwrap().unwrap();
        let err = s.remove_block_then("ip", "203.0.113.7/32", |_| anyhow::bail!("EPERM"));
        assert!(err.is_err());
        assert_eq!(s.stored_rules().unwrap().len(), 1, "a failed kernel removal keeps the rule");

        let again = s.add_block_then("ip", "203.0.113.7/32", Some("second"), |_| panic!("not applied twice"));
        assert_eq!(again.unwrap(), Added::Exists { id, comment_updated: true });
        assert_eq!(s.stored_rules().unwrap()[0].comment.as_deref(), Some("second"));
        let same = s.add_block_then("ip", "203.0.113.7/32", None, |_| panic!("not applied twice"));
        assert_eq!(same.unwrap(), Added::Exists { id, comment_updated: false });

        assert_eq!(
            s.remove_block_then("ip", "203.0.113.7/32", |got| {
                assert_eq!(got, id);
                Ok(())
            })
            .unwrap(),
            Some(id)
        );
        assert!(s.stored_rules().unwrap().is_empty());
    }

    #[test]
    fn restored_rules_keep_their_kernel_ids() {
        let mut s = Store::open(&temp_db("blocks-restore")).unwrap();
        let r = StoredRule { id: 7, kind: "ip".into(), rule: "198.51.100.0/24".into(), comment: None, created: 5 };
        s.restore_rule(&r).unwrap();
        s.restore_rule(&r).unwrap();
        assert_eq!(s.stored_rules().unwrap(), [r]);
        // New rules take ids after the restored ones, so they never clash with kernel entries.
        assert_eq!(s.add_block("ip", "203.0.113.1/32", None).unwrap(), Some(8));
    }
}
