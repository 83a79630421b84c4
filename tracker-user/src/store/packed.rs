//! Closed days of the roll-ups packed (schema 10): a day's groups of one dimension and one
//! device in one blob, instead of a row each, and its hour rows dropped (schema 13: its flows
//! and queries, packed or an import's rows, hold the same numbers, [`super::rollup::Period`]). A row costs about 35 bytes
//! (its key repeated, a header byte a column, the cell); a packed group about 13, its numbers
//! as variable-length integers and its key as the difference to the group before.
//!
//! The daemon's prune packs every day bucket that ended [`PACK_AFTER`] ago or more; reports
//! read the packed days beside the rows ([`flow_days`], [`dns_days`]) and sum both, so a late
//! change (a flow open for days, written again) is a small row beside its packed day until the
//! next prune packs it in.
//!
//! Blob layout, every number a zigzag LEB128 integer: flow groups are `k1 - previous k1, k2,
//! k3, connections, packets, bytes_up, bytes_down`, in key order; DNS names are `qname -
//! previous qname, queries, first_ms, last_ms, client_bits`, in name order (the first group's
//! "previous" is 0). Schema 10 wrote them one after another; since schema 12 they are columns,
//! compressed ([`deflate_columns`], a blob starting with an odd byte), and both are read.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{
    rollup::{CLIENT_IN, Counts, DAY_MS, NameCounts},
    schema::LIVE_SOURCE,
};

/// Day buckets are packed once they ended this long ago: a day's last flows are written for
/// a while after it ends (a connection open across midnight), and packing twice costs more
/// than a row.
pub const PACK_AFTER_HOURS: i64 = 48;
/// `hours` of a day bucket.
pub const DAY_HOURS: i64 = 24;
/// Days packed per transaction (every device's and dimension's buckets of each), so no
/// transaction holds the write lock long.
pub const DAYS_PER_BATCH: usize = 8;

/// Every row `stmt` returns for `params`, its `N` columns each read as `T` (an integer, or an
/// `Option` of one for nullable columns): the rows a day packs.
pub(super) fn read_columns<T: rusqlite::types::FromSql + Copy + Default, const N: usize>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<[T; N]>> {
    let rows = stmt.query_map(params, |r| {
        let mut row = [T::default(); N];
        for (i, v) in row.iter_mut().enumerate() {
            *v = r.get(i)?;
        }
        Ok(row)
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn put(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

pub(super) fn get(buf: &mut &[u8]) -> Result<i64> {
    let mut z = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = buf.split_first() else { bail!("packed data ends inside a number") };
        *buf = rest;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    bail!("packed data holds a number longer than 64 bits")
}

/// A day's flow groups, by key (`texts` ids).
pub type FlowGroups = BTreeMap<[i64; 3], Counts>;
/// A day's DNS names, by `texts` id; first and last in ms after the bucket's start.
pub type DnsNames = BTreeMap<i64, NameCounts>;

/// The format bytes of a blob of columns ([`deflate_columns`]), compressed or, when that is no
/// smaller (a handful of records), stored. Odd: the blobs schema 10 wrote start with a zigzag
/// integer of a key that is never negative, so with an even byte.
const COLUMNS_DEFLATED: u8 = 1;
const COLUMNS_STORED: u8 = 3;
/// DEFLATE's level: zlib's default; 9 gains under 2 % here for twice the time.
const DEFLATE_LEVEL: u8 = 6;
/// A blob inflates to at most this (a day of one device is a few hundred KiB): a damaged blob
/// cannot make a reader allocate without end.
const MAX_INFLATED: usize = 256 << 20;

/// `n` records as columns: [`COLUMNS_DEFLATED`], then DEFLATE of `n`, each stream's length and
/// the streams. A column at a time, so DEFLATE finds the repeats (labels, ports, counts of
/// one) next to each other.
pub(super) fn deflate_columns(n: usize, streams: &[Vec<u8>]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(streams.iter().map(Vec::len).sum::<usize>() + 4 * streams.len() + 4);
    put(&mut plain, n as i64);
    for s in streams {
        put(&mut plain, s.len() as i64);
    }
    for s in streams {
        plain.extend_from_slice(s);
    }
    let deflated = miniz_oxide::deflate::compress_to_vec(&plain, DEFLATE_LEVEL);
    let (format, body) =
        if deflated.len() < plain.len() { (COLUMNS_DEFLATED, deflated) } else { (COLUMNS_STORED, plain) };
    let mut blob = Vec::with_capacity(body.len() + 1);
    blob.push(format);
    blob.extend(body);
    blob
}

/// The record count and `columns` streams of a blob [`deflate_columns`] made, each read with
/// `each(column, count, stream, every stream's length)` in column order. A stream left unread
/// is an error.
pub(super) fn inflate_columns(
    blob: &[u8],
    columns: usize,
    mut each: impl FnMut(usize, usize, &mut &[u8], &[usize]) -> Result<()>,
) -> Result<usize> {
    let Some((&format, body)) = blob.split_first() else { bail!("an empty packed blob") };
    let plain = match format {
        COLUMNS_DEFLATED => miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_INFLATED)
            .map_err(|e| anyhow::anyhow!("a damaged packed blob: {e:?}"))?,
        COLUMNS_STORED => body.to_vec(),
        _ => bail!("a packed blob of format {format}, which this tracker cannot read"),
    };
    let mut head = plain.as_slice();
    let n = usize::try_from(get(&mut head)?).context("a packed blob of a negative count")?;
    // Every value takes a byte at least: a count beyond that is damage, not a reason to allocate.
    anyhow::ensure!(n <= plain.len(), "a packed blob of {n} records in {} bytes", plain.len());
    let mut lens = Vec::with_capacity(columns);
    for _ in 0..columns {
        lens.push(usize::try_from(get(&mut head)?).context("a packed column of a negative length")?);
    }
    // Every length checked against the bytes there before any is used: a reader sizes one
    // column's records by another's length (the DNS log's answers).
    let total = lens.iter().try_fold(0usize, |sum, &len| sum.checked_add(len));
    anyhow::ensure!(total == Some(head.len()), "a packed blob whose columns are not its bytes");
    for (col, &len) in lens.iter().enumerate() {
        let (mut stream, rest) = head.split_at(len);
        head = rest;
        each(col, n, &mut stream, &lens)?;
        anyhow::ensure!(stream.is_empty(), "a packed column longer than its records");
    }
    Ok(n)
}

/// Records of `N` numbers, the first kept as the difference to the record before (keys in
/// order), as a blob of columns.
fn pack_records<const N: usize>(records: impl ExactSizeIterator<Item = [i64; N]>) -> Vec<u8> {
    let n = records.len();
    let mut streams = vec![Vec::with_capacity(n * 2); N];
    let mut prev = 0;
    for r in records {
        put(&mut streams[0], r[0].wrapping_sub(prev));
        prev = r[0];
        for (s, v) in streams.iter_mut().zip(r).skip(1) {
            put(s, v);
        }
    }
    deflate_columns(n, &streams)
}

/// The records [`pack_records`] packed, or a schema-10 blob's (records one after another).
fn unpack_records<const N: usize>(blob: &[u8]) -> Result<Vec<[i64; N]>> {
    let mut records = Vec::new();
    if blob.first().is_some_and(|b| b % 2 == 1) {
        inflate_columns(blob, N, |col, n, stream, _| {
            anyhow::ensure!(stream.len() >= n, "a packed column shorter than its records");
            records.resize(n, [0; N]);
            let mut prev = 0i64;
            for r in &mut records {
                let v = get(stream)?;
                r[col] = if col == 0 { prev.wrapping_add(v) } else { v };
                prev = r[col];
            }
            Ok(())
        })?;
        return Ok(records);
    }
    let mut blob = blob;
    let mut prev = 0;
    while !blob.is_empty() {
        let mut r = [0; N];
        for v in &mut r {
            *v = get(&mut blob)?;
        }
        r[0] = r[0].wrapping_add(prev);
        prev = r[0];
        records.push(r);
    }
    Ok(records)
}

pub fn pack_flows(groups: &FlowGroups) -> Vec<u8> {
    pack_records(groups.iter().map(|(&[k1, k2, k3], c)| {
        let Counts { connections, packets, bytes_up, bytes_down } = *c;
        [k1, k2, k3, connections, packets, bytes_up, bytes_down]
    }))
}

pub fn unpack_flows(blob: &[u8]) -> Result<FlowGroups> {
    Ok(unpack_records::<7>(blob)?
        .into_iter()
        .map(|[k1, k2, k3, connections, packets, bytes_up, bytes_down]| {
            ([k1, k2, k3], Counts { connections, packets, bytes_up, bytes_down })
        })
        .collect())
}

pub fn pack_dns(names: &DnsNames) -> Vec<u8> {
    pack_records(names.iter().map(|(&qname, c)| {
        let NameCounts { queries, first_ts, last_ts, client_bits } = *c;
        [qname, queries, first_ts, last_ts, client_bits]
    }))
}

pub fn unpack_dns(blob: &[u8]) -> Result<DnsNames> {
    Ok(unpack_records::<5>(blob)?
        .into_iter()
        .map(|[qname, queries, first_ts, last_ts, client_bits]| {
            (qname, NameCounts { queries, first_ts, last_ts, client_bits })
        })
        .collect())
}

/// A device's day of packed raw rows (`flow_packed`, `dns_packed`): their key but the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Day {
    pub client: i64,
    /// The day's start, ms since 1970 UTC.
    pub start_ms: i64,
}

/// Where raw rows are packed up to at `now_ms`: the start of the first day that did not end
/// [`PACK_AFTER_HOURS`] before.
pub fn pack_before(now_ms: i64) -> i64 {
    (now_ms - PACK_AFTER_HOURS * super::rollup::HOUR_MS).div_euclid(super::rollup::DAY_MS) * super::rollup::DAY_MS
}

/// A table of packed raw days ([`super::packed_flows`], [`super::packed_dns`]) and the rows
/// table it packs: what both ask of them alike. Every day a device's, live rows only.
pub(super) struct RawDays {
    /// The packed table, and its column of the rows a day holds.
    pub packed: &'static str,
    pub count: &'static str,
    /// The rows table, and the time whose day a row is packed in.
    pub rows: &'static str,
    pub time: &'static str,
    /// The packed table's column of the earliest `time` a day holds.
    pub min_time: &'static str,
}

impl RawDays {
    /// The live rows' days that end by `before_ms` (a day start) and still have rows.
    pub fn closed(&self, conn: &Connection, before_ms: i64) -> Result<Vec<Day>> {
        let Self { rows, time, .. } = self;
        let mut stmt = conn.prepare(&format!(
            "SELECT DISTINCT client, {time} - {time} % ?1 FROM {rows} WHERE {time} < ?2 AND source = ?3"
        ))?;
        let days = stmt.query_map(params![DAY_MS, before_ms, LIVE_SOURCE], |r| {
            Ok(Day { client: r.get(0)?, start_ms: r.get(1)? })
        })?;
        Ok(days.collect::<rusqlite::Result<_>>()?)
    }

    /// Day `day`'s blob, if packed.
    pub fn blob(&self, conn: &Connection, day: Day) -> Result<Option<Vec<u8>>> {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT rows FROM {} WHERE source = ?1 AND client = ?2 AND day = ?3",
                self.packed
            ))?
            .query_row(params![LIVE_SOURCE, day.client, day.start_ms], |r| r.get(0))
            .optional()?)
    }

    pub fn delete(&self, conn: &Connection, day: Day) -> Result<()> {
        conn.prepare_cached(&format!("DELETE FROM {} WHERE source = ?1 AND client = ?2 AND day = ?3", self.packed))?
            .execute(params![LIVE_SOURCE, day.client, day.start_ms])?;
        Ok(())
    }

    /// Removes the days that ended by `before_ms` (retention); returns the rows they held, and
    /// the days left that hold rows from before it, for the caller to trim.
    pub fn remove_before(&self, conn: &Connection, before_ms: i64) -> Result<(u64, Vec<Day>)> {
        let Self { packed, count, min_time, .. } = self;
        let whole = params![LIVE_SOURCE, DAY_MS, before_ms];
        let gone: i64 = conn.query_row(
            &format!("SELECT coalesce(sum({count}), 0) FROM {packed} WHERE source = ?1 AND day + ?2 <= ?3"),
            whole,
            |r| r.get(0),
        )?;
        conn.execute(&format!("DELETE FROM {packed} WHERE source = ?1 AND day + ?2 <= ?3"), whole)?;
        let trim = conn
            .prepare(&format!("SELECT client, day FROM {packed} WHERE source = ?1 AND {min_time} < ?2"))?
            .query_map(params![LIVE_SOURCE, before_ms], |r| Ok(Day { client: r.get(0)?, start_ms: r.get(1)? }))?
            .collect::<rusqlite::Result<_>>()?;
        Ok((gone as u64, trim))
    }

    /// The rows packed, for counts that would otherwise unpack every day.
    pub fn count(&self, conn: &Connection) -> Result<u64> {
        let Self { packed, count, .. } = self;
        let n: i64 = conn.query_row(&format!("SELECT coalesce(sum({count}), 0) FROM {packed}"), [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Every row, packed or not: the rows table and the packed days counted apart (through the
    /// view every packed day is unpacked). The caller holds one snapshot over both.
    pub fn total(&self, conn: &Connection) -> Result<u64> {
        let rows: i64 = conn.query_row(&format!("SELECT count(*) FROM {}", self.rows), [], |r| r.get(0))?;
        Ok(rows as u64 + self.count(conn)?)
    }
}

/// A flow day bucket: source, dimension code, client id, start hour.
type FlowBucket = (i64, i64, i64, i64);
/// A DNS day bucket: source, client id, start hour.
type DnsBucket = (i64, i64, i64);

/// A closed day of the roll-ups: source, start hour.
pub type RollupDay = (i64, i64);

/// The days with day rows that ended by `before_hour`, of both roll-ups (flows, DNS).
pub fn closed_days(conn: &Connection, before_hour: i64) -> Result<(Vec<RollupDay>, Vec<RollupDay>)> {
    let days = |table: &str| -> Result<Vec<RollupDay>> {
        let mut stmt = conn.prepare(&format!(
            "SELECT DISTINCT source, start_hour FROM {table} WHERE hours = ?1 AND start_hour + hours <= ?2"
        ))?;
        let days = stmt.query_map(params![DAY_HOURS, before_hour], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(days.collect::<rusqlite::Result<_>>()?)
    };
    Ok((days("rollup_rows")?, days("dns_rollup_rows")?))
}

/// Packs every bucket of the flow roll-ups' `day`, listed inside the caller's transaction, so
/// all of a day moves at once, with the rows a late write added, or a report would miss or
/// double them. Returns the rows packed.
pub fn pack_flow_days(conn: &Connection, (source, start_hour): RollupDay) -> Result<u64> {
    let buckets: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT DISTINCT dim, client FROM rollup_rows WHERE source = ?1 AND hours = ?2 AND start_hour = ?3",
        )?
        .query_map(params![source, DAY_HOURS, start_hour], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    buckets.into_iter().map(|(dim, client)| pack_flow_day(conn, (source, dim, client, start_hour))).sum()
}

/// [`pack_flow_days`] for a DNS day.
pub fn pack_dns_days(conn: &Connection, (source, start_hour): RollupDay) -> Result<u64> {
    let clients: Vec<i64> = conn
        .prepare_cached(
            "SELECT DISTINCT client FROM dns_rollup_rows WHERE source = ?1 AND hours = ?2 AND start_hour = ?3",
        )?
        .query_map(params![source, DAY_HOURS, start_hour], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    clients.into_iter().map(|client| pack_dns_day(conn, (source, client, start_hour))).sum()
}

/// Packs flow day `b`'s rows into its blob (merged with the blob already there) and deletes
/// them and its hour rows; groups that sum to nothing are left out. Returns the day rows
/// packed.
fn pack_flow_day(conn: &Connection, b: FlowBucket) -> Result<u64> {
    let (source, dim, client, start_hour) = b;
    let mut groups = conn
        .prepare_cached(
            "SELECT groups FROM rollup_packed WHERE source = ?1 AND dim = ?2 AND client = ?3 AND start_hour = ?4",
        )?
        .query_row(params![source, dim, client, start_hour], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .map_or_else(|| Ok(FlowGroups::new()), |blob| unpack_flows(&blob))?;
    let mut stmt = conn.prepare_cached(
        "SELECT k1, k2, k3, connections, packets, bytes_up, bytes_down FROM rollup_rows
         WHERE source = ?1 AND dim = ?2 AND client = ?3 AND hours = ?4 AND start_hour = ?5",
    )?;
    let mut rows = 0;
    for r in stmt.query_map(params![source, dim, client, DAY_HOURS, start_hour], |r| {
        let c = Counts { connections: r.get(3)?, packets: r.get(4)?, bytes_up: r.get(5)?, bytes_down: r.get(6)? };
        Ok(([r.get(0)?, r.get(1)?, r.get(2)?], c))
    })? {
        let (key, c) = r?;
        groups.entry(key).or_default().merge(&c);
        rows += 1;
    }
    groups.retain(|_, c| *c != Counts::default());
    conn.prepare_cached(
        "INSERT INTO rollup_packed (source, dim, client, start_hour, groups) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET groups = excluded.groups",
    )?
    .execute(params![source, dim, client, start_hour, pack_flows(&groups)])?;
    // The day row and its hour rows: two ranges of the key (hours 1, then 24).
    conn.prepare_cached(
        "DELETE FROM rollup_rows WHERE source = ?1 AND dim = ?2 AND client = ?3 AND hours IN (1, ?4)
             AND start_hour >= ?5 AND start_hour < ?5 + ?4",
    )?
    .execute(params![source, dim, client, DAY_HOURS, start_hour])?;
    Ok(rows)
}

/// [`pack_flow_day`] for a DNS day.
fn pack_dns_day(conn: &Connection, b: DnsBucket) -> Result<u64> {
    let (source, client, start_hour) = b;
    let mut names = conn
        .prepare_cached("SELECT names FROM dns_rollup_packed WHERE source = ?1 AND client = ?2 AND start_hour = ?3")?
        .query_row(params![source, client, start_hour], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .map_or_else(|| Ok(DnsNames::new()), |blob| unpack_dns(&blob))?;
    let mut stmt = conn.prepare_cached(
        "SELECT qname, queries, first_ms, last_ms, client_bits FROM dns_rollup_rows
         WHERE source = ?1 AND client = ?2 AND hours = ?3 AND start_hour = ?4",
    )?;
    let mut rows = 0;
    for r in stmt.query_map(params![source, client, DAY_HOURS, start_hour], |r| {
        let c = NameCounts { queries: r.get(1)?, first_ts: r.get(2)?, last_ts: r.get(3)?, client_bits: r.get(4)? };
        Ok((r.get::<_, i64>(0)?, c))
    })? {
        let (qname, c) = r?;
        names.entry(qname).and_modify(|n| n.merge(&c)).or_insert(c);
        rows += 1;
    }
    conn.prepare_cached(
        "INSERT INTO dns_rollup_packed (source, client, start_hour, names) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO UPDATE SET names = excluded.names",
    )?
    .execute(params![source, client, start_hour, pack_dns(&names)])?;
    conn.prepare_cached(
        "DELETE FROM dns_rollup_rows WHERE source = ?1 AND client = ?2 AND hours IN (1, ?3)
             AND start_hour >= ?4 AND start_hour < ?4 + ?3",
    )?
    .execute(params![source, client, DAY_HOURS, start_hour])?;
    Ok(rows)
}

/// A packed flow day as a report reads it.
pub struct FlowDay {
    pub client: i64,
    pub start_hour: i64,
    pub groups: FlowGroups,
}

/// The packed flow days of `dim` of `source` from `from_hour` on of the clients `ids`
/// ([`super::rollup::Period::client_ids`]).
pub fn flow_days(conn: &Connection, source: i64, dim: i64, from_hour: i64, ids: &str) -> Result<Vec<FlowDay>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT client, start_hour, groups FROM rollup_packed
         WHERE source = {source} AND dim = {dim} AND start_hour >= {from_hour} AND {CLIENT_IN}"
    ))?;
    let rows = stmt.query_map(rusqlite::named_params! { ":clients": ids }, |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, Vec<u8>>(2)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (client, start_hour, blob) = r.context("reading the packed roll-up")?;
        out.push(FlowDay { client, start_hour, groups: unpack_flows(&blob)? });
    }
    Ok(out)
}

/// The packed DNS days of `source` from `from_hour` on, as [`flow_days`]: (start hour, names).
pub fn dns_days(conn: &Connection, source: i64, from_hour: i64, ids: &str) -> Result<Vec<(i64, DnsNames)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT start_hour, names FROM dns_rollup_packed
         WHERE source = {source} AND start_hour >= {from_hour} AND {CLIENT_IN}"
    ))?;
    let rows =
        stmt.query_map(rusqlite::named_params! { ":clients": ids }, |r| Ok((r.get(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (start_hour, blob) = r.context("reading the packed DNS roll-up")?;
        out.push((start_hour, unpack_dns(&blob)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{entity::EntityTable, protocol::AppProtocol},
        query::{
            report::{Report, ReportQuery, report, report_with_timeline},
            timeline::{Bucket, Span, timeline},
        },
        store::{
            Store,
            dns::{DomainQuery, DomainRow, Grouping, tests::record},
            retention::Retention,
            rollup::{DAY_MS, HOUR_MS},
            tests::{labelled_flow, temp_db},
        },
    };

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;
    const PHONE: &str = "10.77.0.2";
    const TABLET: &str = "10.77.0.3";

    /// Everything a report, the dashboard and `tracker devices` read from the roll-ups, from
    /// several starts (midnight, a millisecond after, mid-day) for every device and one:
    /// reports, timelines by the day and by the hour, per-device totals, domains.
    type Seen = (Vec<Report>, Vec<Vec<Bucket>>, Vec<(String, u64, u64)>, Vec<Vec<DomainRow>>);

    fn seen(s: &Store, until: i64) -> Seen {
        let entities = EntityTable::builtin();
        let (mut reports, mut days, mut domains) = (Vec::new(), Vec::new(), Vec::new());
        for since in [T0 - DAY_MS, T0, T0 + 1, T0 + DAY_MS + 7, T0 + 2 * DAY_MS + DAY_MS / 2] {
            for clients in [None, Some(vec![PHONE.to_owned()])] {
                let q = ReportQuery {
                    since_ms: since,
                    until_ms: until,
                    clients: clients.clone().map(|c| ("phone".to_owned(), c)),
                    min_queries: 1,
                    ..ReportQuery::default()
                };
                let r = report(s, &entities, &q).unwrap();
                for span in [Span::Day, Span::Hour] {
                    let buckets = timeline(s, 0, since, until, clients.as_deref(), span).unwrap();
                    // The dashboard's one read of both: the same report and timeline.
                    let both = report_with_timeline(s, &entities, &q, Some(span)).unwrap();
                    assert_eq!(both, (r.clone(), buckets.clone()), "from {since}, {span:?}");
                    days.push(buckets);
                }
                reports.push(r);
                let q = DomainQuery {
                    since_ms: Some(since),
                    clients,
                    min_queries: 1,
                    group: Grouping::Name,
                    limit: None,
                    source: 0,
                };
                domains.push(s.domains(&q).unwrap());
            }
        }
        let mut totals = s.client_totals().unwrap();
        totals.sort();
        (reports, days, totals, domains)
    }

    /// Four days of two devices' flows and queries from [`T0`]; flow 0 is open for days (its
    /// last packet is recent, so its row is not packed). Returns the flows.
    fn write_days(s: &mut Store) -> Vec<crate::store::FlowRecord> {
        let apps = [AppProtocol::Tls, AppProtocol::Quic, AppProtocol::Http, AppProtocol::Dns];
        let names = [Some("www.apple.com"), Some("api.mparticle.com"), Some("www.google.com"), None, Some("a.example")];
        let mut flows: Vec<_> = (0..400u64)
            .map(|n| {
                let at = T0 + (n as i64) * 4 * DAY_MS / 400 + (n as i64 % 7) * 1_000;
                let client = [PHONE, TABLET][n as usize % 2];
                labelled_flow(n, client, at, names[n as usize % 5], apps[n as usize % 4], 100 + n * 3)
            })
            .collect();
        flows[0].last_seen_ms = T0 + 6 * DAY_MS;
        s.upsert_flows("boot", &flows).unwrap();
        let queries: Vec<_> = (0..300i64)
            .map(|i| {
                let name = names[i as usize % 5].unwrap_or("b.example");
                record(T0 + i * 977_777, [PHONE, TABLET][i as usize % 2], name, vec![])
            })
            .collect();
        s.insert_dns(&queries).unwrap();
        flows
    }

    /// The roll-ups' rows (flows and DNS) of `hours`.
    fn rollup_rows(s: &Store, hours: i64) -> i64 {
        s.conn()
            .query_row(
                "SELECT (SELECT count(*) FROM rollup_rows WHERE hours = ?1)
                      + (SELECT count(*) FROM dns_rollup_rows WHERE hours = ?1)",
                [hours],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn day_rows(s: &Store) -> i64 {
        rollup_rows(s, DAY_HOURS)
    }

    #[test]
    fn raw_days_pack_after_two_days() {
        assert_eq!(pack_before(T0 + 2 * DAY_MS), T0);
        assert_eq!(pack_before(T0 + 2 * DAY_MS - 1), T0 - DAY_MS);
    }

    /// Schema 10's blobs (records one after another) still read, beside the columns written
    /// now; a packed blob is a fraction of its records' bytes.
    #[test]
    fn blobs_of_both_layouts_read_as_the_groups_packed() {
        let groups: FlowGroups = (0..300i64)
            .map(|i| {
                (
                    [i * 3 + 1, i % 4, 0],
                    Counts { connections: 1 + i % 3, packets: 10, bytes_up: 500 + i, bytes_down: 9_000 },
                )
            })
            .collect();
        let mut legacy = Vec::new();
        let mut prev = 0;
        for (&[k1, k2, k3], c) in &groups {
            for v in [k1 - prev, k2, k3, c.connections, c.packets, c.bytes_up, c.bytes_down] {
                put(&mut legacy, v);
            }
            prev = k1;
        }
        assert_eq!(legacy[0] % 2, 0);
        assert_eq!(unpack_flows(&legacy).unwrap(), groups);
        let packed = pack_flows(&groups);
        assert_eq!(unpack_flows(&packed).unwrap(), groups);
        assert!(packed.len() * 3 < legacy.len(), "{} of {}", packed.len(), legacy.len());
        let names: DnsNames = (0..50i64)
            .map(|i| {
                (i * 7, NameCounts { queries: i, first_ts: i * 1_000, last_ts: i * 2_000, client_bits: 1 << (i % 5) })
            })
            .collect();
        assert_eq!(unpack_dns(&pack_dns(&names)).unwrap(), names);
        assert!(unpack_flows(&packed[..packed.len() - 3]).is_err());
        assert!(unpack_flows(&[]).unwrap().is_empty());
    }

    /// A reader's snapshot ([`Store::snapshot`], taken by every report) sees a day as rows or
    /// as packed, never both, while a prune on another connection packs it.
    #[test]
    fn a_snapshot_sees_a_day_as_rows_or_packed_never_both() {
        let p = temp_db("packed-snapshot");
        let mut w = Store::open(&p).unwrap();
        w.upsert_flows("boot", &[labelled_flow(1, PHONE, T0 + 1_000, Some("www.apple.com"), AppProtocol::Tls, 100)])
            .unwrap();
        let r = Store::open_reader(&p).unwrap();
        let packed =
            |s: &Store| -> i64 { s.conn().query_row("SELECT count(*) FROM rollup_packed", [], |r| r.get(0)).unwrap() };
        let snapshot = r.snapshot().unwrap();
        assert!(snapshot.is_some());
        let rows = day_rows(&r);
        assert!(rows > 0 && packed(&r) == 0);
        let p = w.prune(Retention::default(), T0 + 6 * DAY_MS, &mut |_| {}).unwrap();
        assert_eq!(p.days_packed, rows as u64);
        assert_eq!((day_rows(&r), packed(&r)), (rows, 0), "inside the snapshot: the rows, not the blobs");
        drop(snapshot);
        assert_eq!(day_rows(&r), 0, "after it: packed");
        assert!(packed(&r) > 0);
    }

    /// Packing changes no figure anything reads, and a late write to a packed day (a flow open
    /// across days, written again) counts at once and is packed in at the next prune.
    #[test]
    fn packed_days_read_as_the_rows_did_and_late_writes_join_them() {
        let mut s = Store::open(&temp_db("packed")).unwrap();
        let flows = write_days(&mut s);
        let now = T0 + 6 * DAY_MS + HOUR_MS;
        let before = seen(&s, now);
        assert_eq!(before.0[0].totals.connections, 400);
        let rows = day_rows(&s);

        // Days that ended 48 hours before `now` (the first four) are packed.
        assert!(rollup_rows(&s, 1) > 0);
        let p = s.prune(Retention::default(), now, &mut |_| {}).unwrap();
        assert_eq!(p.days_packed, rows as u64, "every day row then was of a closed day: {p:?}");
        assert_eq!(day_rows(&s), 0);
        assert_eq!(rollup_rows(&s, 1), 0, "a packed day's hours are read from its packed flows and queries");
        let packed: i64 = s.conn().query_row("SELECT count(*) FROM rollup_packed", [], |r| r.get(0)).unwrap();
        assert!(packed > 0);
        assert_eq!(seen(&s, now), before, "the same figures from the packed days");

        // Flow 0, still open, written again with 5,000 more bytes: counted now, beside its day.
        let mut late = flows[0].clone();
        late.bytes_up += 5_000;
        s.upsert_flows("boot", &[late]).unwrap();
        // Its owner's and its protocol's group (no service, no CDN).
        assert_eq!(day_rows(&s), 2, "its day's new rows");
        let with_late = seen(&s, now);
        assert_eq!(with_late.0[0].totals.bytes, before.0[0].totals.bytes + 5_000);
        assert_eq!(with_late.0[0].totals.connections, 400, "the same connection");
        let p = s.prune(Retention::default(), now, &mut |_| {}).unwrap();
        assert!(p.days_packed > 0 && day_rows(&s) == 0, "{p:?}");
        assert_eq!(seen(&s, now), with_late, "packed in, unchanged");

        // Past the daily totals' retention, packed days go like rows.
        let short = Retention { raw: Retention::default().raw, rollups: Retention::default().raw };
        let later = T0 + 33 * DAY_MS;
        s.prune(short, later, &mut |_| {}).unwrap();
        let left: i64 = s
            .conn()
            .query_row(
                "SELECT (SELECT count(*) FROM rollup_packed WHERE start_hour * 3600000 < ?1)
                      + (SELECT count(*) FROM dns_rollup_packed WHERE start_hour * 3600000 < ?1)",
                [later - 30 * DAY_MS - DAY_MS],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    /// Migration 13 drops what a schema-12 database held twice: every device's roll-up rows
    /// beside the devices' own, and the hour rows of packed days, whose packed flows and
    /// queries hold the same numbers. Nothing read changes.
    #[test]
    fn migration_13_drops_every_device_rows_and_packed_hours_and_nothing_read_changes() {
        let p = temp_db("packed-migrate-13");
        let mut s = Store::open(&p).unwrap();
        write_days(&mut s);
        let now = T0 + 6 * DAY_MS + HOUR_MS;
        let before = seen(&s, now);
        // Schema 12 kept the hours of packed days and every device's sums (client 0).
        s.conn()
            .execute_batch(
                "CREATE TEMP TABLE hours AS SELECT * FROM rollup_rows WHERE hours = 1;
                 CREATE TEMP TABLE dns_hours AS SELECT * FROM dns_rollup_rows WHERE hours = 1;",
            )
            .unwrap();
        s.prune(Retention::default(), now, &mut |_| {}).unwrap();
        s.conn()
            .execute_batch(
                "INSERT INTO rollup_rows SELECT * FROM temp.hours;
                 INSERT INTO dns_rollup_rows SELECT * FROM temp.dns_hours;
                 INSERT INTO rollup_rows SELECT source, dim, 0, hours, start_hour, k1, k2, k3, sum(connections),
                     sum(packets), sum(bytes_up), sum(bytes_down)
                     FROM rollup_rows GROUP BY source, dim, hours, start_hour, k1, k2, k3;
                 INSERT INTO dns_rollup_rows SELECT source, 0, hours, start_hour, qname, sum(queries), min(first_ms),
                     max(last_ms), 0
                     FROM dns_rollup_rows GROUP BY source, hours, start_hour, qname;
                 PRAGMA user_version = 12;",
            )
            .unwrap();
        let every_device = |s: &Store| -> i64 {
            s.conn()
                .query_row(
                    "SELECT (SELECT count(*) FROM rollup_rows WHERE client = 0)
                          + (SELECT count(*) FROM dns_rollup_rows WHERE client = 0)",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert!(every_device(&s) > 0 && rollup_rows(&s, 1) > 0);
        drop(s);
        let s = Store::open(&p).unwrap();
        assert_eq!((every_device(&s), rollup_rows(&s, 1)), (0, 0));
        assert_eq!(seen(&s, now), before);
    }

    #[test]
    fn numbers_round_trip_at_every_length_and_sign() {
        let values = [0, 1, -1, 63, -64, 64, 127, 128, 300, -300, 1 << 35, -(1 << 35), i64::MAX, i64::MIN];
        let mut buf = Vec::new();
        for v in values {
            put(&mut buf, v);
        }
        assert_eq!(buf[..3], [0, 2, 1], "zigzag: 0, 1 and -1 take a byte each");
        let mut rest = buf.as_slice();
        let back: Vec<i64> = values.iter().map(|_| get(&mut rest).unwrap()).collect();
        assert_eq!(back, values);
        assert!(rest.is_empty());
        assert!(get(&mut [0x80u8].as_slice()).is_err(), "a number cut short");
        assert!(get(&mut [0xffu8; 11].as_slice()).is_err(), "a number over 64 bits");
    }

    #[test]
    fn groups_and_names_round_trip_and_cost_bytes_not_rows() {
        let c = |n: i64| Counts { connections: n, packets: 10 * n, bytes_up: 1_000 * n, bytes_down: 100_000 * n };
        let groups: FlowGroups =
            [([5, 0, 0], c(1)), ([7, 2, 3], c(2)), ([7, 2, 4], c(-1)), ([30_000, 1, 0], c(40))].into_iter().collect();
        let blob = pack_flows(&groups);
        assert_eq!(unpack_flows(&blob).unwrap(), groups);
        // Key 7 after 5: a difference of 2, one byte; 30,000 after 7: three bytes.
        assert!(blob.len() < 4 * 14, "{} bytes", blob.len());
        let names: DnsNames = [
            (3, NameCounts { queries: 2, first_ts: 10, last_ts: 86_399_999, client_bits: 1 << 62 }),
            (900, NameCounts { queries: 1, first_ts: 0, last_ts: 0, client_bits: 1 }),
        ]
        .into_iter()
        .collect();
        assert_eq!(unpack_dns(&pack_dns(&names)).unwrap(), names);
        assert!(unpack_flows(&blob[..blob.len() - 1]).is_err(), "a blob cut short is an error, not fewer groups");
    }
}
