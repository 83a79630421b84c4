//! Connections and bytes over time, per hour or per day (UTC), from the same roll-up and the same
//! period as [`super::report`], so the buckets add up to the report's totals exactly.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

use crate::store::{
    Store,
    rollup::{self, DAY_MS, Dim, FlowFacts, HOUR_MS, Of, Period},
};

/// The length of a timeline's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Hour,
    Day,
}

impl Span {
    pub fn ms(self) -> i64 {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
        }
    }
}

/// One bucket: the connections that started in it and their bytes both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Unix ms of the bucket's start (UTC); the first bucket holds only what came at or after
    /// the period's start.
    pub start_ms: i64,
    pub connections: u64,
    pub bytes: u64,
}

/// Every bucket from the one holding `since_ms` to the one holding `until_ms`, empty ones
/// included (a chart shows quiet hours as gaps, not as missing columns). `clients` as in
/// [`super::report::ReportQuery::clients`]; `source` as its `source`.
pub fn timeline(
    store: &Store,
    source: i64,
    since_ms: i64,
    until_ms: i64,
    clients: Option<&[String]>,
    span: Span,
) -> Result<Vec<Bucket>> {
    let _snapshot = store.snapshot()?;
    let period = Period::read(store.conn(), source, since_ms)?;
    buckets(store, &period, until_ms, clients, span, None)
}

/// [`timeline`]'s buckets over `period` to `until_ms`, in the caller's snapshot. `head`: the
/// period's first flows ([`rollup::head_flows`]) when the caller has read them, which a timeline
/// by the day reads as well.
pub(crate) fn buckets(
    store: &Store,
    period: &Period,
    until_ms: i64,
    clients: Option<&[String]>,
    span: Span,
    head: Option<&[FlowFacts]>,
) -> Result<Vec<Bucket>> {
    let (source, since_ms) = (period.source, period.since);
    let step = span.ms();
    let mut sums: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    // Every flow is in exactly one group of the protocol dimension: its rows count each
    // connection once.
    let ids = period.client_ids(store.conn(), Of::Flows, clients)?;
    let dim = format!("dim = {} AND {}", Dim::Protocol.code(), rollup::CLIENT_IN);
    let hourly_from = period.hourly_from(Of::Flows);
    let (day_rows_from, hour_rows_from) = (period.day_rows_from(), period.hour_rows_from(Of::Flows));
    let hourly_rows_from = hourly_from.div_euclid(HOUR_MS);
    // The flows read as they are: before the hour rows (from the packed days on, by the hour)
    // or before the report's rows (by the day).
    let (sql, params, flows_until): (String, Vec<(&str, &dyn rusqlite::ToSql)>, i64) = match span {
        // Hour rows alone: the day rows cannot be split into hours.
        Span::Hour => (
            format!(
                "SELECT start_hour * {HOUR_MS}, sum(connections), sum(bytes_up + bytes_down) FROM rollup_rows
                 WHERE source = {source} AND {dim} AND hours = 1 AND start_hour >= :hours
                 GROUP BY start_hour"
            ),
            vec![(":clients", &ids), (":hours", &hourly_rows_from)],
            hourly_from,
        ),
        // The report's own rows (days, and the hours before the first midnight), by day.
        Span::Day => (
            format!(
                "SELECT start_hour * {HOUR_MS} - start_hour * {HOUR_MS} % {DAY_MS}, sum(connections),
                     sum(bytes_up + bytes_down) FROM {}
                 GROUP BY 1",
                period.rows(Of::Flows, &dim)
            ),
            vec![(":clients", &ids), (":days", &day_rows_from), (":hours", &hour_rows_from)],
            period.head_until(Of::Flows),
        ),
    };
    let mut stmt = store.conn().prepare_cached(&sql)?;
    let rows =
        stmt.query_map(params.as_slice(), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?;
    for row in rows {
        let (bucket, connections, bytes) = row.context("reading the roll-up")?;
        let e = sums.entry(bucket).or_default();
        e.0 += connections.max(0) as u64;
        e.1 += bytes.max(0) as u64;
    }
    // Days packed since (store/packed.rs): the day view's own days, by day.
    if span == Span::Day {
        for day in period.packed_flow_days(store.conn(), Dim::Protocol, &ids)? {
            let e = sums.entry(day.start_hour * HOUR_MS).or_default();
            for c in day.groups.values() {
                e.0 += c.connections.max(0) as u64;
                e.1 += c.bytes().max(0) as u64;
            }
        }
    }
    let read;
    let flows = match (span, head) {
        (Span::Day, Some(head)) => head,
        _ => {
            read = rollup::flows_between(store.conn(), period, since_ms, flows_until, clients)?;
            &read[..]
        }
    };
    for f in flows {
        let e = sums.entry(f.first_seen - f.first_seen.rem_euclid(step)).or_default();
        e.0 += 1;
        e.1 += (f.bytes_up + f.bytes_down).max(0) as u64;
    }
    let mut out = empty_buckets(since_ms, until_ms, span);
    for b in &mut out {
        (b.connections, b.bytes) = sums.get(&b.start_ms).copied().unwrap_or_default();
    }
    Ok(out)
}

/// Every bucket from the one holding `since_ms` to the one holding `until_ms`, all empty.
pub fn empty_buckets(since_ms: i64, until_ms: i64, span: Span) -> Vec<Bucket> {
    let step = span.ms();
    let first = since_ms - since_ms.rem_euclid(step);
    let last = until_ms.max(since_ms) - until_ms.max(since_ms).rem_euclid(step);
    (0..)
        .map(|i| first + i * step)
        .take_while(|s| *s <= last)
        .map(|start_ms| Bucket { start_ms, ..Bucket::default() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{
            addr::AddrClass,
            entity::EntityTable,
            labels::Labeler,
            names::{FlowName, NameSource},
            protocol::{AppProtocol, Classification, Decided},
        },
        query::report::{ReportQuery, report},
        store::{FlowRecord, tests::temp_db},
    };

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;

    fn flow(n: u64, client: &str, first_ms: i64, bytes: u64) -> FlowRecord {
        let name = FlowName { name: Some("www.apple.com".into()), source: Some(NameSource::Dns), cname: None };
        let app = Classification { protocol: AppProtocol::Tls, decided: Decided::Payload };
        FlowRecord {
            kernel_first_ns: n,
            client: client.parse().unwrap(),
            remote: "203.0.113.10".parse().unwrap(),
            protocol: tracker_common::IPPROTO_TCP,
            client_port: 40000 + n as u16,
            remote_port: 443,
            packets_up: 1,
            bytes_up: bytes,
            packets_down: 1,
            bytes_down: 0,
            tcp_flags: 0x12,
            first_seen_ms: first_ms,
            last_seen_ms: first_ms + 10,
            labels: Labeler::default().label(&name, AddrClass::Documentation, app),
            name,
            remote_class: AddrClass::Documentation,
        }
    }

    #[test]
    fn buckets_add_up_to_the_reports_totals_from_the_exact_start() {
        let mut s = Store::open(&temp_db("timeline")).unwrap();
        let phone = "10.77.0.2";
        let since = T0 - DAY_MS + 90 * 60_000; // yesterday 01:30
        let flows = [
            flow(1, phone, since - 1, 1),                     // 1 ms before: out
            flow(2, phone, since, 10),                        // the head (01:30 to 02:00)
            flow(3, phone, since + 45 * 60_000, 100),         // 02:15
            flow(4, "10.77.0.3", T0 - HOUR_MS, 1_000),        // yesterday 23:00, other device
            flow(5, phone, T0 + 5 * HOUR_MS + 7, 10_000),     // today 05:00
            flow(6, phone, T0 + 5 * HOUR_MS + 60_000, 1_000), // today 05:01
        ];
        s.upsert_flows("boot", &flows).unwrap();
        let until = T0 + 6 * HOUR_MS;
        let hours = timeline(&s, 0, since, until, None, Span::Hour).unwrap();
        assert_eq!(hours.len(), 30, "01:00 yesterday to 06:00 today");
        assert_eq!(hours[0], Bucket { start_ms: T0 - DAY_MS + HOUR_MS, connections: 1, bytes: 10 });
        assert_eq!(hours[1], Bucket { start_ms: T0 - DAY_MS + 2 * HOUR_MS, connections: 1, bytes: 100 });
        assert_eq!((hours[21].connections, hours[22].connections, hours[23].connections), (0, 1, 0), "23:00");
        assert_eq!(hours[28], Bucket { start_ms: T0 + 5 * HOUR_MS, connections: 2, bytes: 11_000 });
        let days = timeline(&s, 0, since, until, None, Span::Day).unwrap();
        assert_eq!(
            days,
            [
                Bucket { start_ms: T0 - DAY_MS, connections: 3, bytes: 1_110 },
                Bucket { start_ms: T0, connections: 2, bytes: 11_000 }
            ]
        );
        let q = ReportQuery { since_ms: since, until_ms: until, ..ReportQuery::default() };
        let totals = report(&s, &EntityTable::builtin(), &q).unwrap().totals;
        for buckets in [&hours, &days] {
            let sum = buckets.iter().fold((0, 0), |(c, b), x| (c + x.connections, b + x.bytes));
            assert_eq!(sum, (totals.connections, totals.bytes));
        }
        let mine = vec![phone.to_owned()];
        let days = timeline(&s, 0, since, until, Some(&mine), Span::Day).unwrap();
        assert_eq!(days.iter().map(|b| b.connections).collect::<Vec<_>>(), [2, 2], "one device");
    }
}
