//! Raw flows of closed days packed (schema 12): a device's flows whose last packet fell on one
//! day, in one compressed blob, instead of a row each. A row with its five indexes costs about
//! 170 bytes; a packed flow about 30. Reads see them through the view `flows` as rows
//! ([`super::packed_view`]).
//!
//! The prune packs a flow once its day (UTC, of `last_seen`) ended `packed::PACK_AFTER_HOURS` ago:
//! the sweeper forgets a flow after its idle timeout (10 minutes at most, `source::Timeouts`), so
//! a packed flow is seldom written again. It can be: a daemon restarted after days writes what
//! its pinned maps still hold, and a clock set right after boot moves times by days. The writer
//! then takes the flow back out of its day ([`take_back`]) and updates its row, so it is never
//! stored twice. Only the live interface's flows are packed: an import finds its rows again to
//! add a capture's later packets.
//!
//! Blob layout: columns of zigzag LEB128 integers, compressed (`packed::deflate_columns`), rows
//! in id order: `id`, `kernel_first_ns` and `first_seen` as the difference to the row before,
//! `last_seen` as the difference to its own `first_seen`, nullable columns as 0 for NULL and
//! the value plus one otherwise.

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, params};

use super::{
    packed::{Day, RawDays, deflate_columns, get, inflate_columns, put, read_columns},
    packed_view::Kind,
    rollup::DAY_MS,
    schema::LIVE_SOURCE,
};

/// The table of packed days (migration 12).
pub const TABLE: &str = "flow_packed";

/// `flow_rows`' columns, in table order (a unit test checks it against the table).
pub const COLUMNS: [&str; 29] = [
    "id",
    "boot",
    "kernel_first_ns",
    "client",
    "remote",
    "protocol",
    "client_port",
    "remote_port",
    "packets_up",
    "bytes_up",
    "packets_down",
    "bytes_down",
    "tcp_flags",
    "first_seen",
    "last_seen",
    "name",
    "name_source",
    "cname",
    "remote_class",
    "app_protocol",
    "app_decided",
    "encrypted",
    "owner_kind",
    "owner",
    "company",
    "site",
    "service",
    "served_by",
    "source",
];
/// Positions in [`COLUMNS`] the layout treats apart.
pub const ID: usize = 0;
const KERNEL_FIRST_NS: usize = 2;
pub const CLIENT: usize = 3;
pub const FIRST_SEEN: usize = 13;
pub const LAST_SEEN: usize = 14;
/// The nullable columns: `name` to `served_by`.
const NULLABLE: std::ops::Range<usize> = 15..28;
pub const SOURCE: usize = 28;

/// Device days packed per transaction (a few thousand flows), so no transaction holds the write
/// lock for long.
pub const DAYS_PER_BATCH: usize = 4;

/// One flow as its row holds it: [`COLUMNS`]' values, `None` for NULL.
pub type Row = [Option<i64>; COLUMNS.len()];

/// Packs `rows` (in any order; sorted by id here).
pub fn pack(rows: &mut [Row]) -> Result<Vec<u8>> {
    rows.sort_unstable_by_key(|r| r[ID]);
    let mut streams: Vec<Vec<u8>> = vec![Vec::with_capacity(rows.len() * 2); COLUMNS.len()];
    let mut prev = [0i64; COLUMNS.len()];
    for r in rows.iter() {
        for (col, stream) in streams.iter_mut().enumerate() {
            let v = r[col];
            let coded = match col {
                ID | KERNEL_FIRST_NS | FIRST_SEEN => {
                    let v = v.with_context(|| format!("a flow without {}", COLUMNS[col]))?;
                    let d = v.wrapping_sub(prev[col]);
                    prev[col] = v;
                    d
                }
                LAST_SEEN => {
                    let (Some(last), Some(first)) = (v, r[FIRST_SEEN]) else { bail!("a flow without last_seen") };
                    last.wrapping_sub(first)
                }
                c if NULLABLE.contains(&c) => match v {
                    None => 0,
                    Some(v) => v.checked_add(1).context("a text id too large to pack")?,
                },
                _ => v.with_context(|| format!("a flow without {}", COLUMNS[col]))?,
            };
            put(stream, coded);
        }
    }
    Ok(deflate_columns(rows.len(), &streams))
}

/// The rows of a blob [`pack`] made, in id order.
pub fn unpack(blob: &[u8]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut prev = [0i64; COLUMNS.len()];
    inflate_columns(blob, COLUMNS.len(), |col, n, stream, _| {
        // Every value takes a byte at least: a shorter column is damage, not a reason to
        // allocate for `n` rows.
        anyhow::ensure!(stream.len() >= n, "a packed column shorter than its flows");
        rows.resize(n, [None; COLUMNS.len()]);
        for r in &mut rows {
            let coded = get(stream)?;
            r[col] = match col {
                ID | KERNEL_FIRST_NS | FIRST_SEEN => {
                    prev[col] = prev[col].wrapping_add(coded);
                    Some(prev[col])
                }
                // First_seen's stream comes before, so the row has it.
                LAST_SEEN => r[FIRST_SEEN].map(|first| first.wrapping_add(coded)),
                c if NULLABLE.contains(&c) => (coded != 0).then(|| coded.wrapping_sub(1)),
                _ => Some(coded),
            };
        }
        Ok(())
    })?;
    Ok(rows)
}

/// The packed flows as the view `flows` reads them (`packed_view`).
pub(super) struct Flows;

impl Kind for Flows {
    const MODULE: &'static str = "packed_flow_rows";
    const VIEW: &'static str = "flows";
    const ROWS_FROM: &'static str = "FROM flow_rows f";
    const TABLE: &'static str = TABLE;
    const COLUMNS: &'static [&'static str] = &COLUMNS;
    const BOUNDS: &'static [(usize, &'static str, &'static str)] = &[
        (ID, "min_id", "max_id"),
        (FIRST_SEEN, "min_first", "max_first"),
        (LAST_SEEN, "min_last", "max_last"),
        (CLIENT, "client", "client"),
        (SOURCE, "source", "source"),
    ];
    const ORDER: (usize, usize) = (FIRST_SEEN, ID);
    const ID: usize = ID;

    fn unpack(blob: &[u8]) -> Result<Vec<Option<i64>>> {
        Ok(unpack(blob)?.into_iter().flatten().collect())
    }
}

/// The packed flows' table and the rows it packs, for what they share with the DNS log's.
const DAYS: RawDays =
    RawDays { packed: TABLE, count: "flows", rows: "flow_rows", time: "last_seen", min_time: "min_last" };

/// The live flows' days that end by `before_ms` (a day start) and still have rows.
pub fn closed_days(conn: &Connection, before_ms: i64) -> Result<Vec<Day>> {
    DAYS.closed(conn, before_ms)
}

fn read_day(conn: &Connection, day: Day) -> Result<Vec<Row>> {
    DAYS.blob(conn, day)?
        .map_or_else(|| Ok(Vec::new()), |blob| unpack(&blob))
        .with_context(|| format!("reading the packed flows of day {}", day.start_ms))
}

/// Writes `rows` as `day`'s blob (none when empty).
fn write_day(conn: &Connection, day: Day, rows: &mut [Row]) -> Result<()> {
    if rows.is_empty() {
        return DAYS.delete(conn, day);
    }
    let blob = pack(rows)?;
    let bound = |col: usize, f: fn(i64, i64) -> i64| rows.iter().filter_map(|r| r[col]).reduce(f).unwrap_or(0);
    conn.prepare_cached(
        "INSERT INTO flow_packed (source, client, day, flows, min_id, max_id, min_first, max_first, min_last,
             max_last, rows)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT DO UPDATE SET flows = excluded.flows, min_id = excluded.min_id, max_id = excluded.max_id,
             min_first = excluded.min_first, max_first = excluded.max_first, min_last = excluded.min_last,
             max_last = excluded.max_last, rows = excluded.rows",
    )?
    .execute(params![
        LIVE_SOURCE,
        day.client,
        day.start_ms,
        rows.len() as i64,
        bound(ID, i64::min),
        bound(ID, i64::max),
        bound(FIRST_SEEN, i64::min),
        bound(FIRST_SEEN, i64::max),
        bound(LAST_SEEN, i64::min),
        bound(LAST_SEEN, i64::max),
        blob
    ])?;
    Ok(())
}

/// Moves `day`'s rows into its blob (merged with the flows packed there before) and deletes
/// them. Returns the rows packed.
pub fn pack_day(conn: &Connection, day: Day) -> Result<u64> {
    let mut packed = read_day(conn, day)?;
    let select = format!(
        "SELECT {} FROM flow_rows WHERE last_seen >= ?1 AND last_seen < ?2 AND client = ?3 AND source = ?4",
        COLUMNS.join(", ")
    );
    let span = params![day.start_ms, day.start_ms + DAY_MS, day.client, LIVE_SOURCE];
    let fresh: Vec<Row> = read_columns(&mut *conn.prepare_cached(&select)?, span)?;
    let n = fresh.len() as u64;
    packed.extend(fresh);
    write_day(conn, day, &mut packed)?;
    conn.prepare_cached(
        "DELETE FROM flow_rows WHERE last_seen >= ?1 AND last_seen < ?2 AND client = ?3 AND source = ?4",
    )?
    .execute(span)?;
    Ok(n)
}

/// Moves the packed flow of `key` (`boot, kernel_first_ns, client, remote, protocol,
/// client_port, remote_port`, text columns as ids) that started at `first_seen` back into
/// `flow_rows`, id kept, for the writer to update. Returns whether there was one.
pub fn take_back(conn: &Connection, key: [i64; 7], first_seen: i64) -> Result<bool> {
    let [boot, kernel_first_ns, client, remote, protocol, client_port, remote_port] = key;
    let days: Vec<Day> = conn
        .prepare_cached(
            "SELECT client, day FROM flow_packed WHERE source = ?1 AND client = ?2 AND min_first <= ?3 AND max_first >= ?3",
        )?
        .query_map(params![LIVE_SOURCE, client, first_seen], |r| Ok(Day { client: r.get(0)?, start_ms: r.get(1)? }))?
        .collect::<rusqlite::Result<_>>()?;
    for day in days {
        let mut rows = read_day(conn, day)?;
        let wanted = [
            (1, boot),
            (KERNEL_FIRST_NS, kernel_first_ns),
            (4, remote),
            (5, protocol),
            (6, client_port),
            (7, remote_port),
        ];
        let Some(at) = rows.iter().position(|r| wanted.iter().all(|&(c, v)| r[c] == Some(v))) else { continue };
        let row = rows.swap_remove(at);
        conn.prepare_cached(&format!(
            "INSERT INTO flow_rows ({}) VALUES ({})",
            COLUMNS.join(", "),
            (1..=COLUMNS.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        ))?
        .execute(rusqlite::params_from_iter(row))?;
        write_day(conn, day, &mut rows)?;
        return Ok(true);
    }
    Ok(false)
}

/// Removes the packed flows whose last packet came before `before_ms` (retention): whole days,
/// and the flows before it of the day it falls in. Returns the flows removed.
pub fn remove_before(conn: &Connection, before_ms: i64) -> Result<u64> {
    let (mut removed, split) = DAYS.remove_before(conn, before_ms)?;
    for day in split {
        let mut rows = read_day(conn, day)?;
        let had = rows.len();
        rows.retain(|r| r[LAST_SEEN].is_some_and(|last| last >= before_ms));
        if rows.len() != had {
            removed += (had - rows.len()) as u64;
            write_day(conn, day, &mut rows)?;
        }
    }
    Ok(removed)
}

/// Flows packed, for counts (`tracker status`) that would otherwise unpack every day.
pub fn count(conn: &Connection) -> Result<u64> {
    DAYS.count(conn)
}

/// Every flows, rows and packed days (in the caller's snapshot).
pub fn total(conn: &Connection) -> Result<u64> {
    DAYS.total(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, first: i64, name: Option<i64>) -> Row {
        let mut r: Row = [Some(0); COLUMNS.len()];
        r[ID] = Some(id);
        r[KERNEL_FIRST_NS] = Some(first * 1_000_000 + 17);
        r[FIRST_SEEN] = Some(first);
        r[LAST_SEEN] = Some(first + 4_321);
        r[CLIENT] = Some(7);
        r[9] = Some(i64::MAX);
        r[10] = Some(-5);
        for c in NULLABLE {
            r[c] = name.map(|n| n + c as i64);
        }
        r
    }

    #[test]
    fn a_packed_day_unpacks_to_its_rows_in_id_order() {
        let mut rows = vec![row(9, 1_000, Some(0)), row(3, 2_000, None), row(4, 500, Some(41))];
        let blob = pack(&mut rows).unwrap();
        let back = unpack(&blob).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back.iter().map(|r| r[ID].unwrap()).collect::<Vec<_>>(), [3, 4, 9]);
        assert_eq!(back[0][15], None, "NULL stays NULL");
        assert_eq!(back[2][15], Some(15), "id 0 + 15 is not NULL");
        assert!(unpack(&pack(&mut []).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn damaged_blobs_are_refused_not_misread() {
        let mut rows: Vec<Row> = (0..200).map(|i| row(i, i * 10, Some(i % 3))).collect();
        let blob = pack(&mut rows).unwrap();
        assert!(unpack(&[]).is_err());
        assert!(unpack(&[2]).is_err(), "an unknown format");
        assert!(unpack(&blob[..blob.len() / 2]).is_err(), "cut short");
        let mut streams = vec![vec![0u8]; COLUMNS.len()];
        streams[7].clear();
        assert!(unpack(&deflate_columns(1, &streams)).is_err(), "a column missing");
        streams[7] = vec![0, 0];
        assert!(unpack(&deflate_columns(1, &streams)).is_err(), "a column too long");
        streams[7] = vec![0];
        assert!(unpack(&deflate_columns(1, &streams)).is_ok());
    }

    /// A packed flow written again (a daemon back after days writes what its pinned maps
    /// hold) goes back to its row and is updated there: one flow, counted once.
    #[test]
    fn a_packed_flow_written_again_is_taken_back_not_stored_twice() {
        use crate::{
            analysis::{entity::EntityTable, protocol::AppProtocol},
            query::report::{ReportQuery, report},
            store::{
                Store,
                retention::Retention,
                tests::{labelled_flow, temp_db},
            },
        };
        let t0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;
        let mut s = Store::open(&temp_db("packed-take-back")).unwrap();
        let flows: Vec<_> = (0..30u64)
            .map(|n| {
                labelled_flow(n, "10.77.0.2", t0 + n as i64 * 3_600_000, Some("www.apple.com"), AppProtocol::Tls, 100)
            })
            .collect();
        s.upsert_flows("boot", &flows).unwrap();
        let now = t0 + 5 * DAY_MS;
        assert_eq!(s.prune(Retention::default(), now, &mut |_| {}).unwrap().flows_packed, 30);
        let totals = |s: &Store| {
            let q = ReportQuery { since_ms: t0 - DAY_MS, until_ms: now, ..ReportQuery::default() };
            let t = report(s, &EntityTable::builtin(), &q).unwrap().totals;
            (t.connections, t.bytes)
        };
        let before = totals(&s);
        let id_of_7: i64 =
            s.conn().query_row("SELECT id FROM flows WHERE client_port = 40007", [], |r| r.get(0)).unwrap();

        let mut again = flows[7].clone();
        again.bytes_up += 5_000;
        again.last_seen_ms = now - 1_000;
        s.upsert_flows("boot", &[again]).unwrap();
        assert_eq!(s.flow_count().unwrap(), 30, "one flow, not two");
        assert_eq!(count(s.conn()).unwrap(), 29);
        let (id, bytes): (i64, i64) = s
            .conn()
            .query_row("SELECT id, bytes_up FROM main.flows WHERE client_port = 40007", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((id, bytes), (id_of_7, 5_100), "back as its row, id kept, updated");
        assert_eq!(totals(&s), (before.0, before.1 + 5_000), "the roll-ups moved by the change only");
        // A flow never seen before is inserted as ever.
        s.upsert_flows("boot", &[labelled_flow(99, "10.77.0.2", now - 5_000, None, AppProtocol::Tls, 1)]).unwrap();
        assert_eq!(s.flow_count().unwrap(), 31);
    }

    #[test]
    fn columns_are_the_tables_in_order() {
        let s = crate::store::Store::open(&crate::store::tests::temp_db("packed-columns")).unwrap();
        let mut stmt = s.conn().prepare("SELECT name FROM pragma_table_info('flow_rows') ORDER BY cid").unwrap();
        let names: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(names, COLUMNS);
    }

    /// Every column of every flow the view `flows` shows, in id order, for `filter` (with an
    /// ORDER BY of its own, in that order).
    fn shown(s: &crate::store::Store, filter: &str) -> Vec<Vec<rusqlite::types::Value>> {
        let order = if filter.contains("ORDER BY") { "" } else { " ORDER BY id" };
        crate::store::tests::values(s.conn(), &format!("SELECT * FROM flows WHERE {filter}{order}"))
    }

    /// Packing the flows of closed days changes nothing any query of `flows` returns, whatever
    /// its terms; retention then removes packed flows by their last packet as it does rows.
    #[test]
    fn packed_flows_read_as_their_rows_did_and_retention_removes_them_by_the_same_rule() {
        use crate::{
            analysis::protocol::AppProtocol,
            store::{
                Store,
                retention::Retention,
                tests::{labelled_flow, temp_db},
            },
        };
        let t0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;
        let path = temp_db("packed-flows");
        let mut s = Store::open(&path).unwrap();
        let names = [Some("www.apple.com"), None, Some("api.mparticle.com"), Some("a.example")];
        let flows: Vec<_> = (0..600u64)
            .map(|n| {
                let at = t0 + (n as i64) * 6 * DAY_MS / 600 + (n as i64 % 11) * 997;
                let client = ["10.77.0.2", "10.77.0.3", "fd00:77::2"][n as usize % 3];
                labelled_flow(n, client, at, names[n as usize % 4], AppProtocol::Tls, 100 + n)
            })
            .collect();
        s.upsert_flows("boot", &flows).unwrap();
        let d = |days: i64| t0 + days * DAY_MS;
        let filters = [
            "1".to_owned(),
            format!("first_seen >= {}", d(2) + 5),
            format!("first_seen > {} AND first_seen < {}", d(1), d(3) - 7),
            format!("last_seen <= {}", d(2)),
            "id > 100 AND id <= 333".to_owned(),
            "id = 42".to_owned(),
            "client = '10.77.0.3'".to_owned(),
            "name = 'www.apple.com' AND source = 0".to_owned(),
            "source = 1".to_owned(),
            format!("first_seen >= 'x' OR last_seen = {}", flows[7].last_seen_ms),
            // Orders the packed half gives itself (`packed_view::Order`), merged with the rows'.
            "1 ORDER BY first_seen DESC, id DESC".to_owned(),
            format!("first_seen <= {} ORDER BY first_seen DESC, id DESC LIMIT 37", d(5) + 3),
            "client != '10.77.0.2' ORDER BY first_seen, id LIMIT 250".to_owned(),
            "source = 0 ORDER BY id DESC LIMIT 480".to_owned(),
            "id > 50 ORDER BY id LIMIT 400".to_owned(),
        ];
        let before: Vec<_> = filters.iter().map(|f| shown(&s, f)).collect();
        for order in ["first_seen DESC, id DESC", "first_seen, id", "id DESC", "id"] {
            let sql = format!("EXPLAIN QUERY PLAN SELECT * FROM flows WHERE source = 0 ORDER BY {order} LIMIT 9");
            let mut stmt = s.conn().prepare(&sql).unwrap();
            let plan: Vec<String> = stmt.query_map([], |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap();
            assert!(plan.iter().any(|l| l.starts_with("MERGE")), "{order}: {plan:?}");
            assert!(
                !plan.iter().any(|l| l.contains("TEMP B-TREE")),
                "{order}: the halves are merged, not sorted: {plan:?}"
            );
        }
        assert_eq!(before[0].len(), 600);

        // At day 7 + 1 h, days 0 to 4 ended 48 hours before: their flows are packed.
        let now = d(7) + crate::store::rollup::HOUR_MS;
        let p = s.prune(Retention::default(), now, &mut |_| {}).unwrap();
        let rows =
            |s: &Store| -> i64 { s.conn().query_row("SELECT count(*) FROM main.flows", [], |r| r.get(0)).unwrap() };
        assert_eq!(p.flows_packed, 500, "{p:?}");
        assert_eq!(rows(&s), 100);
        assert_eq!(count(s.conn()).unwrap(), 500);
        assert_eq!(s.flow_count().unwrap(), 600);
        for (f, b) in filters.iter().zip(&before) {
            assert_eq!(&shown(&s, f), b, "{f}");
        }
        // Another connection reads them too, and a reader's.
        assert_eq!(shown(&Store::open_reader(&path).unwrap(), "1"), before[0]);

        // A prune with nothing new to pack packs nothing and changes nothing.
        assert_eq!(s.prune(Retention::default(), now, &mut |_| {}).unwrap().flows_packed, 0);
        assert_eq!(shown(&s, "1"), before[0]);

        // Three days kept: flows whose last packet came before day 4 + 1 h go, packed or not,
        // and packed day 4 keeps its later flows.
        let keep = Retention { raw: std::time::Duration::from_secs(3 * 86_400), ..Retention::default() };
        let cut = now - 3 * DAY_MS;
        let last = |r: &Vec<rusqlite::types::Value>| match r[15] {
            rusqlite::types::Value::Integer(v) => v,
            ref other => panic!("last_seen {other:?}"),
        };
        let p = s.prune(keep, now, &mut |_| {}).unwrap();
        let expected: Vec<_> = before[0].iter().filter(|r| last(r) >= cut).cloned().collect();
        assert_eq!(shown(&s, "1"), expected);
        assert_eq!(p.flows as usize, 600 - expected.len());
        assert!(before[0].iter().any(|r| (d(4)..cut).contains(&last(r))), "day 4 lost flows");
        assert!(expected.iter().any(|r| (cut..d(5)).contains(&last(r))), "day 4 kept flows");
    }
}
