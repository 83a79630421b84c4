//! Bounded storage: the live interface's raw rows (flows, DNS queries with their answers) and
//! hourly roll-ups kept for a retention period, daily roll-ups for a longer one (packed once
//! closed, [`super::packed`], when a day's hour rows go: its raw rows hold the same numbers),
//! and the pages they freed handed back to the file system (incremental vacuum).
//!
//! Reports over any period keep working after their rows are gone: a period reads whole days
//! from the daily roll-ups ([`super::rollup`]), which pruning never touches before their own,
//! longer, end. Deleting rows does not change the roll-ups (they are kept by the store's writes,
//! not by triggers). Imported captures (`import-pcap` sources) are the user's to remove and
//! are never pruned: their rows carry the capture's old times.
//!
//! Rows go in batches, each its own short transaction (packed rows a few days' blobs at a time),
//! so the daemon's sweep never waits long for the write lock; freed pages are reused by later
//! writes whether or not the file shrinks, so the file stops growing once the retention period
//! is reached.

use std::time::Duration;

use anyhow::{Context as _, Result};
use rusqlite::params;
use serde::Serialize;

use super::{Store, packed, packed_dns, packed_flows, rollup, schema::LIVE_SOURCE};

/// How long raw rows (and the hourly roll-ups of days not packed) are kept by default.
pub const DEFAULT_RAW: Duration = Duration::from_secs(30 * 86_400);
/// How long daily roll-ups are kept by default.
pub const DEFAULT_ROLLUPS: Duration = Duration::from_secs(365 * 86_400);
/// Rows deleted per transaction.
const BATCH: i64 = 5_000;
/// Pages handed back per incremental-vacuum step (4 KiB pages: 4 MiB), so no step holds the
/// write lock long.
const VACUUM_STEP: i64 = 1_024;

/// How long each kind of row is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Flows, DNS queries and hourly roll-ups (those of days not packed yet: a packed day keeps
    /// none).
    pub raw: Duration,
    /// Daily roll-ups (at least as long as `raw`).
    pub rollups: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self { raw: DEFAULT_RAW, rollups: DEFAULT_ROLLUPS }
    }
}

/// What one prune removed; field names are the JSON of `tracker prune`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub flows: u64,
    pub dns_queries: u64,
    pub hour_rollups: u64,
    /// Daily roll-up rows, and packed days ([`super::packed`]), removed.
    pub day_rollups: u64,
    /// Daily roll-up rows packed into their day's blob ([`super::packed`]); their hour rows go
    /// with them.
    pub days_packed: u64,
    /// Flows of closed days packed into their device's day ([`super::packed_flows`]).
    pub flows_packed: u64,
    /// DNS queries (with their answers) of closed days packed ([`super::packed_dns`]).
    pub queries_packed: u64,
    /// Bytes the file shrank by (incremental vacuum); 0 for a database made before tracker
    /// set `auto_vacuum` (its freed pages are reused instead: `tracker prune --vacuum` converts).
    pub bytes_returned: u64,
}

/// The database's size: pages in use and free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Size {
    pub file_bytes: u64,
    /// Of which free pages, reused by later writes.
    pub free_bytes: u64,
    /// `auto_vacuum` is INCREMENTAL: pruning shrinks the file.
    pub shrinks: bool,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Removes the live rows past `keep` at `now_ms`, in batches; `progress` hears each batch.
    pub fn prune(&mut self, keep: Retention, now_ms: i64, progress: &mut dyn FnMut(&Pruned)) -> Result<Pruned> {
        let raw_before = now_ms.saturating_sub(ms(keep.raw));
        let days_before = now_ms.saturating_sub(ms(keep.rollups.max(keep.raw)));
        let mut done = Pruned::default();
        // Raw rows, by their own time, from the tables behind the views (schema 8): the
        // answers go with their queries (ON DELETE CASCADE).
        for (sql, count) in [
            (
                "DELETE FROM flow_rows WHERE id IN
                     (SELECT id FROM flow_rows WHERE last_seen < ?1 AND source = ?2 LIMIT ?3)",
                0usize,
            ),
            (
                "DELETE FROM dns_query_rows WHERE id IN
                     (SELECT id FROM dns_query_rows WHERE ts < ?1 AND source = ?2 LIMIT ?3)",
                1,
            ),
        ] {
            self.delete_batches(sql, params![raw_before, LIVE_SOURCE, BATCH], &mut |n| {
                let field = if count == 0 { &mut done.flows } else { &mut done.dns_queries };
                *field += n;
                progress(&done);
            })?;
        }
        // Packed flows and queries by the same rule: whole days, and part of the day
        // `raw_before` is in.
        done.flows += self.write_rules(|w| packed_flows::remove_before(w.conn, raw_before))?;
        done.dns_queries += self.write_rules(|w| packed_dns::remove_before(w.conn, raw_before))?;
        // Roll-ups: the hours with the raw rows, the days later. WITHOUT ROWID tables: a
        // bucket range is deleted whole (the key starts with source, dim or client, hours).
        // Buckets are whole hours: one ends by `before` when it ends by `before`'s hour.
        for (span, before) in [(rollup::HOUR_MS, raw_before), (rollup::DAY_MS, days_before)] {
            let (hours, before_hour) = (span / rollup::HOUR_MS, before.div_euclid(rollup::HOUR_MS));
            let n = self.write(|w| {
                let flows = w.conn.execute(
                    "DELETE FROM rollup_rows WHERE source = ?1 AND hours = ?2 AND start_hour + hours <= ?3",
                    params![LIVE_SOURCE, hours, before_hour],
                )?;
                let dns = w.conn.execute(
                    "DELETE FROM dns_rollup_rows WHERE source = ?1 AND hours = ?2 AND start_hour + hours <= ?3",
                    params![LIVE_SOURCE, hours, before_hour],
                )?;
                // Packed days go by the same rule, each counted as one.
                let mut packed_days = 0;
                if hours == packed::DAY_HOURS {
                    for table in ["rollup_packed", "dns_rollup_packed"] {
                        packed_days += w.conn.execute(
                            &format!("DELETE FROM {table} WHERE source = ?1 AND start_hour + ?2 <= ?3"),
                            params![LIVE_SOURCE, hours, before_hour],
                        )?;
                    }
                }
                Ok((flows + dns + packed_days) as u64)
            })?;
            if span == rollup::HOUR_MS {
                done.hour_rollups += n;
            } else {
                done.day_rollups += n;
            }
            progress(&done);
        }
        // The days that stay, packed once they are closed: every source's (packing loses
        // nothing, so imports are packed too).
        let before_hour = now_ms.div_euclid(rollup::HOUR_MS) - packed::PACK_AFTER_HOURS;
        let (flow_days, dns_days) = packed::closed_days(&self.conn, before_hour).context("finding days to pack")?;
        // IMMEDIATE (`write_rules`): a batch reads blobs before it writes them, and a deferred
        // transaction could not then take the write lock after a sweep's commit.
        for batch in flow_days.chunks(packed::DAYS_PER_BATCH) {
            done.days_packed +=
                self.write_rules(|w| batch.iter().map(|&d| packed::pack_flow_days(w.conn, d)).sum::<Result<u64>>())?;
            progress(&done);
        }
        for batch in dns_days.chunks(packed::DAYS_PER_BATCH) {
            done.days_packed +=
                self.write_rules(|w| batch.iter().map(|&d| packed::pack_dns_days(w.conn, d)).sum::<Result<u64>>())?;
            progress(&done);
        }
        // The raw flows of closed days, a device's day at a time.
        let before = packed::pack_before(now_ms);
        let days = packed_flows::closed_days(&self.conn, before).context("finding flow days to pack")?;
        for batch in days.chunks(packed_flows::DAYS_PER_BATCH) {
            done.flows_packed +=
                self.write_rules(|w| batch.iter().map(|&d| packed_flows::pack_day(w.conn, d)).sum::<Result<u64>>())?;
            progress(&done);
        }
        // And the DNS log's, with their answers.
        let days = packed_dns::closed_days(&self.conn, before).context("finding DNS days to pack")?;
        for batch in days.chunks(packed_dns::DAYS_PER_BATCH) {
            done.queries_packed +=
                self.write_rules(|w| batch.iter().map(|&d| packed_dns::pack_day(w.conn, d)).sum::<Result<u64>>())?;
            progress(&done);
        }
        done.bytes_returned = self.vacuum_freed()?;
        Ok(done)
    }

    /// Runs `sql` (a batch delete bound by `params`) until it deletes nothing, one transaction a
    /// batch; `each` hears every batch's count.
    fn delete_batches(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params + Clone,
        each: &mut dyn FnMut(u64),
    ) -> Result<()> {
        loop {
            let n = self.write(|w| Ok(w.conn.execute(sql, params.clone())? as u64))?;
            if n == 0 {
                return Ok(());
            }
            each(n);
        }
    }

    /// Hands free pages back to the file system in small steps, when `auto_vacuum` is
    /// INCREMENTAL; returns the bytes the file shrank by.
    fn vacuum_freed(&mut self) -> Result<u64> {
        let before = self.size()?;
        if !before.shrinks {
            return Ok(0);
        }
        loop {
            let free: i64 = self.conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
            if free == 0 {
                break;
            }
            // A statement that returns no rows; stepping it runs the vacuum.
            self.conn
                .execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))
                .context("returning free pages to the file system")?;
        }
        Ok(before.file_bytes.saturating_sub(self.size()?.file_bytes))
    }

    /// The database's size and free space.
    pub fn size(&self) -> Result<Size> {
        let q = |p: &str| -> Result<u64> {
            Ok(self.conn.pragma_query_value(None, p, |r| r.get::<_, i64>(0))?.max(0) as u64)
        };
        let (pages, free, page) = (q("page_count")?, q("freelist_count")?, q("page_size")?);
        Ok(Size { file_bytes: pages * page, free_bytes: free * page, shrinks: q("auto_vacuum")? == 2 })
    }

    /// Makes a database created before `auto_vacuum` was set shrink when pruned: sets it to
    /// INCREMENTAL and rebuilds the file (VACUUM: it needs as much free disk as the database,
    /// and holds the write lock while it runs).
    pub fn convert_to_incremental_vacuum(&mut self) -> Result<bool> {
        if self.size()?.shrinks {
            return Ok(false);
        }
        self.conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        self.conn.execute_batch("VACUUM").context("rebuilding the database (VACUUM)")?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{entity::EntityTable, protocol::AppProtocol},
        query::report::{ReportQuery, report},
        store::{
            dns::tests::record,
            tests::{labelled_flow, temp_db},
        },
    };

    const DAY: i64 = rollup::DAY_MS;
    /// A UTC midnight.
    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY;
    const PHONE: &str = "10.77.0.2";

    fn connections(s: &Store, since_ms: i64, until_ms: i64, source: i64) -> u64 {
        let q = ReportQuery { since_ms, until_ms, source, ..ReportQuery::default() };
        report(s, &EntityTable::builtin(), &q).unwrap().totals.connections
    }

    fn count(s: &Store, sql: &str) -> i64 {
        s.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn prune_removes_old_live_rows_and_reports_still_count_them_from_the_daily_totals() {
        let mut s = Store::open(&temp_db("retention")).unwrap();
        let now = T0 + 40 * DAY + 3_600_000;
        // Live: 40, 20 and 0 days old; an import 40 days old.
        let flows = [
            labelled_flow(1, PHONE, T0 + 1_000, Some("www.apple.com"), AppProtocol::Tls, 900),
            labelled_flow(2, PHONE, T0 + 20 * DAY, Some("www.google.com"), AppProtocol::Quic, 400),
            labelled_flow(3, PHONE, now - 60_000, None, AppProtocol::Http, 100),
        ];
        s.upsert_flows("boot", &flows).unwrap();
        let import = s.write(|w| w.import_source("capture")).unwrap();
        s.write(|w| w.for_source(import).upsert_flows("capture", &flows[..1])).unwrap();
        s.insert_dns(&[
            record(T0 + 2_000, PHONE, "www.apple.com", vec![]),
            record(now - 1_000, PHONE, "a.example", vec![]),
        ])
        .unwrap();
        let since = T0 - DAY;
        assert_eq!(connections(&s, since, now, LIVE_SOURCE), 3);

        let keep = Retention { raw: Duration::from_secs(30 * 86_400), rollups: Duration::from_secs(365 * 86_400) };
        let old_hours = |s: &Store| {
            let cutoff = now - 30 * DAY;
            ["rollup", "dns_rollup"]
                .map(|t| {
                    count(
                        s,
                        &format!("SELECT count(*) FROM {t} WHERE source = 0 AND span = 3600000 AND bucket < {cutoff}"),
                    )
                })
                .iter()
                .sum::<i64>()
        };
        let hours = old_hours(&s);
        assert!(hours >= 2, "the first flow's and query's hour: {hours}");
        let mut batches = 0;
        let p = s.prune(keep, now, &mut |_| batches += 1).unwrap();
        assert_eq!((p.flows, p.dns_queries, p.day_rollups), (1, 1, 0), "{p:?}");
        assert_eq!((p.hour_rollups, old_hours(&s)), (hours as u64, 0), "{p:?}");
        assert!(batches >= 2, "progress is told");
        assert_eq!(count(&s, "SELECT count(*) FROM flows WHERE source = 0"), 2);
        assert_eq!(count(&s, "SELECT count(*) FROM flows WHERE source != 0"), 1, "imports are never pruned");
        assert_eq!(count(&s, "SELECT count(*) FROM dns_answers WHERE query_id NOT IN (SELECT id FROM dns_queries)"), 0);
        // The period still counts the pruned flow, from its day's totals.
        assert_eq!(connections(&s, since, now, LIVE_SOURCE), 3);
        assert_eq!(connections(&s, since, now, import), 1);
        // Pruning again finds nothing: the closed days were packed the first time.
        assert!(p.days_packed > 0, "{p:?}");
        assert_eq!(s.prune(keep, now, &mut |_| {}).unwrap(), Pruned::default());

        // Past the daily totals' end, the day goes too.
        let short = Retention { rollups: Duration::from_secs(35 * 86_400), ..keep };
        let p = s.prune(short, now, &mut |_| {}).unwrap();
        assert!(p.day_rollups > 0, "{p:?}");
        assert_eq!(connections(&s, since, now, LIVE_SOURCE), 2);
    }

    #[test]
    fn a_new_database_shrinks_when_pruned() {
        let mut s = Store::open(&temp_db("retention-shrink")).unwrap();
        assert!(s.size().unwrap().shrinks, "auto_vacuum is INCREMENTAL from the start");
        let now = T0 + 40 * DAY;
        let flows: Vec<_> =
            (0..20_000).map(|n| labelled_flow(n, PHONE, T0 + n as i64, None, AppProtocol::Tls, 1)).collect();
        s.upsert_flows("boot", &flows).unwrap();
        let before = s.size().unwrap().file_bytes;
        let p = s.prune(Retention::default(), now, &mut |_| {}).unwrap();
        assert_eq!(p.flows, 20_000);
        let after = s.size().unwrap();
        assert!(p.bytes_returned > 0 && after.file_bytes + p.bytes_returned == before, "{p:?} {after:?} {before}");
        assert_eq!(after.free_bytes, 0);
    }
}
