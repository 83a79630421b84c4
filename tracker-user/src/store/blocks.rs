//! Block rules in SQLite: adding and removing them, their text for the kernel, and the drop
//! counters carried across kernel map instances.

use anyhow::{Context as _, Result};
use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;

use super::Store;
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

impl Store {
    /// Adds a rule; `Ok(None)` if the same rule already exists (nothing changes).
    pub fn add_block(&mut self, kind: &str, rule: &str, comment: Option<&str>) -> Result<Option<u32>> {
        let n = self
            .conn
            .execute(
                "INSERT INTO block_rules (kind, rule, comment, created) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, rule) DO NOTHING",
                params![kind, rule, comment, timefmt::now_ms()],
            )
            .map_err(|e| self.explain(e))?;
        Ok((n == 1).then(|| self.conn.last_insert_rowid() as u32))
    }

    /// Removes a rule; returns its id, or `None` if there was no such rule.
    pub fn remove_block(&mut self, kind: &str, rule: &str) -> Result<Option<u32>> {
        self.conn
            .query_row(
                "DELETE FROM block_rules WHERE kind = ?1 AND rule = ?2 RETURNING id",
                params![kind, rule],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.explain(e))
    }

    /// Every rule of `kind` as (id, rule text).
    pub fn block_rules(&self, kind: &str) -> Result<Vec<(u32, String)>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id, rule FROM block_rules WHERE kind = ?1 ORDER BY id")?;
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
            .query_row(
                "SELECT dropped_before, dropped_kernel FROM block_rules WHERE id = ?1",
                [id],
                |r| {
                    Ok(BlockCounters {
                        dropped_before: r.get::<_, i64>(0)? as u64,
                        dropped_kernel: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .context("reading block counters")
    }

    /// Records the live kernel count of a rule (and its last hit).
    pub fn set_block_kernel_count(&mut self, id: u32, dropped: u64, last_hit_ms: Option<i64>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE block_rules SET dropped_kernel = ?2, last_hit = COALESCE(?3, last_hit)
                 WHERE id = ?1",
                params![id, dropped as i64, last_hit_ms],
            )
            .map_err(|e| self.explain(e))?;
        Ok(())
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
