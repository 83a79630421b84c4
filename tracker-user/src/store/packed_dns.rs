//! The DNS log of closed days packed (schema 12): a device's queries of one day with their
//! answers, in one compressed blob, instead of a row (and an answer row, and four index
//! entries) each. A query with its two answers costs about 190 bytes as rows; packed, about 25.
//! Reads see them through the views `dns_queries` and `dns_answers` as rows
//! ([`super::packed_view`]).
//!
//! The log is written once and never changed, so a day is packed once it ended
//! `packed::PACK_AFTER_HOURS` ago, as the flows are ([`super::packed_flows`]); only the live
//! interface's, as an import finds its queries again to skip a capture read twice.
//!
//! Blob layout (`packed::deflate_columns`): the query columns, rows in id order (`id` and `ts`
//! as the difference to the row before, `answered` as the difference to its own `ts`, nullable
//! columns as 0 for NULL and the value plus one), each query's answer count, then the answer
//! columns but `query_id`, answers in (query, position) order.

use anyhow::{Context as _, Result, ensure};
use rusqlite::{Connection, params};

use super::{
    packed::{Day, RawDays, deflate_columns, get, inflate_columns, put, read_columns},
    packed_view::Kind,
    rollup::DAY_MS,
    schema::LIVE_SOURCE,
};

/// The table of packed days (migration 12).
pub const TABLE: &str = "dns_packed";

/// `dns_query_rows`' columns, in table order (a unit test checks it against the table).
pub const QUERY_COLUMNS: [&str; 17] = [
    "id",
    "ts",
    "answered",
    "client",
    "client_port",
    "resolver",
    "resolver_port",
    "transport",
    "dns_id",
    "qname",
    "qtype",
    "rcode",
    "truncated",
    "cname",
    "min_ttl",
    "source",
    "blocked_by",
];
const ID: usize = 0;
const TS: usize = 1;
const ANSWERED: usize = 2;
const CLIENT: usize = 3;
const SOURCE: usize = 15;
const NULLABLE: [usize; 5] = [ANSWERED, 11, 13, 14, 16];

/// `dns_answer_rows`' columns, in table order.
pub const ANSWER_COLUMNS: [&str; 6] = ["query_id", "position", "name", "type", "ttl", "data"];
const QUERY_ID: usize = 0;
const POSITION: usize = 1;

/// Days packed per transaction: one device's day each, so no transaction holds the write lock
/// for long.
pub const DAYS_PER_BATCH: usize = 4;

/// A query as its row holds it, `None` for NULL.
pub type Query = [Option<i64>; QUERY_COLUMNS.len()];
/// An answer as its row holds it.
pub type AnswerRow = [i64; ANSWER_COLUMNS.len()];

/// A day's queries (sorted by id here) and their answers (any order).
pub fn pack(queries: &mut [Query], answers: &mut [AnswerRow]) -> Result<Vec<u8>> {
    queries.sort_unstable_by_key(|q| q[ID]);
    answers.sort_unstable_by_key(|a| (a[QUERY_ID], a[POSITION]));
    let n = queries.len();
    let mut streams = vec![Vec::with_capacity(n * 2); QUERY_COLUMNS.len() + ANSWER_COLUMNS.len()];
    let mut prev = [0i64; 2];
    let mut next_answer = 0;
    for q in queries.iter() {
        for (col, v) in q.iter().enumerate() {
            let coded = match col {
                ID | TS => {
                    let v = v.with_context(|| format!("a query without {}", QUERY_COLUMNS[col]))?;
                    let d = v.wrapping_sub(prev[col]);
                    prev[col] = v;
                    d
                }
                ANSWERED => {
                    v.map_or(Ok(0), |a| a.wrapping_sub(q[TS].unwrap_or_default()).checked_add(1).context("answered"))?
                }
                c if NULLABLE.contains(&c) => {
                    v.map_or(Ok(0), |v| v.checked_add(1).context("a value too large to pack"))?
                }
                _ => v.with_context(|| format!("a query without {}", QUERY_COLUMNS[col]))?,
            };
            put(&mut streams[col], coded);
        }
        let id = q[ID].unwrap_or_default();
        let first = next_answer;
        while answers.get(next_answer).is_some_and(|a| a[QUERY_ID] == id) {
            for (col, &v) in answers[next_answer].iter().enumerate().skip(1) {
                put(&mut streams[QUERY_COLUMNS.len() + col], v);
            }
            next_answer += 1;
        }
        // The answer count takes the stream `query_id` would.
        put(&mut streams[QUERY_COLUMNS.len() + QUERY_ID], (next_answer - first) as i64);
    }
    ensure!(next_answer == answers.len(), "answers of queries not in the day");
    Ok(deflate_columns(n, &streams))
}

/// The queries (in id order) and answers (in query and position order) of a blob [`pack`] made.
pub fn unpack(blob: &[u8]) -> Result<(Vec<Query>, Vec<AnswerRow>)> {
    let mut queries: Vec<Query> = Vec::new();
    let mut answers: Vec<AnswerRow> = Vec::new();
    let mut prev = [0i64; 2];
    let q_cols = QUERY_COLUMNS.len();
    inflate_columns(blob, q_cols + ANSWER_COLUMNS.len(), |col, n, stream, lens| {
        if col < q_cols {
            // Every value takes a byte at least: a shorter column is damage, not a reason to
            // allocate.
            ensure!(stream.len() >= n, "a packed column shorter than its queries");
            queries.resize(n, [None; QUERY_COLUMNS.len()]);
            for q in &mut queries {
                let coded = get(stream)?;
                q[col] = match col {
                    ID | TS => {
                        prev[col] = prev[col].wrapping_add(coded);
                        Some(prev[col])
                    }
                    // `ts`' stream comes before.
                    ANSWERED => (coded != 0).then(|| q[TS].unwrap_or_default().wrapping_add(coded.wrapping_sub(1))),
                    c if NULLABLE.contains(&c) => (coded != 0).then(|| coded.wrapping_sub(1)),
                    _ => Some(coded),
                };
            }
        } else if col == q_cols + QUERY_ID {
            // The answers' own columns hold a byte an answer at least.
            let room = lens[q_cols + POSITION];
            for q in &queries {
                let count = usize::try_from(get(stream)?).context("a negative answer count")?;
                ensure!(answers.len() + count <= room, "more answers than their columns hold");
                let id = q[ID].unwrap_or_default();
                answers.extend((0..count).map(|_| {
                    let mut a = [0; ANSWER_COLUMNS.len()];
                    a[QUERY_ID] = id;
                    a
                }));
            }
        } else {
            ensure!(stream.len() >= answers.len(), "a packed column shorter than its answers");
            for a in &mut answers {
                a[col - q_cols] = get(stream)?;
            }
        }
        Ok(())
    })?;
    Ok((queries, answers))
}

/// The packed queries as the view `dns_queries` reads them (`packed_view`).
pub(super) struct Queries;
/// Their answers as the view `dns_answers` reads them.
pub(super) struct Answers;

impl Kind for Queries {
    const MODULE: &'static str = "packed_dns_query_rows";
    const VIEW: &'static str = "dns_queries";
    const ROWS_FROM: &'static str = "FROM dns_query_rows q";
    const TABLE: &'static str = TABLE;
    const COLUMNS: &'static [&'static str] = &QUERY_COLUMNS;
    const BOUNDS: &'static [(usize, &'static str, &'static str)] = &[
        (ID, "min_id", "max_id"),
        (TS, "min_ts", "max_ts"),
        (CLIENT, "client", "client"),
        (SOURCE, "source", "source"),
    ];
    const ORDER: (usize, usize) = (TS, ID);
    const ID: usize = ID;

    fn unpack(blob: &[u8]) -> Result<Vec<Option<i64>>> {
        Ok(unpack(blob)?.0.into_iter().flatten().collect())
    }
}

impl Kind for Answers {
    const MODULE: &'static str = "packed_dns_answer_rows";
    const VIEW: &'static str = "dns_answers";
    const ROWS_FROM: &'static str = "FROM dns_answer_rows a";
    const TABLE: &'static str = TABLE;
    const COLUMNS: &'static [&'static str] = &ANSWER_COLUMNS;
    const BOUNDS: &'static [(usize, &'static str, &'static str)] = &[(QUERY_ID, "min_id", "max_id")];
    const ORDER: (usize, usize) = (QUERY_ID, POSITION);
    const ID: usize = QUERY_ID;

    fn unpack(blob: &[u8]) -> Result<Vec<Option<i64>>> {
        Ok(unpack(blob)?.1.into_iter().flatten().map(Some).collect())
    }

    /// A query's answers share its id: the position tells them apart (a message holds at
    /// most 65,535).
    fn rowid(row: &[Option<i64>]) -> i64 {
        (row[QUERY_ID].unwrap_or_default() << 16) | (row[POSITION].unwrap_or_default() & 0xffff)
    }
}

/// The packed log's table and the rows it packs, for what they share with the flows'.
const DAYS: RawDays =
    RawDays { packed: TABLE, count: "queries", rows: "dns_query_rows", time: "ts", min_time: "min_ts" };

/// The live log's days that end by `before_ms` (a day start) and still have rows.
pub fn closed_days(conn: &Connection, before_ms: i64) -> Result<Vec<Day>> {
    DAYS.closed(conn, before_ms)
}

fn read_day(conn: &Connection, day: Day) -> Result<(Vec<Query>, Vec<AnswerRow>)> {
    DAYS.blob(conn, day)?
        .map_or_else(|| Ok((Vec::new(), Vec::new())), |blob| unpack(&blob))
        .with_context(|| format!("reading the packed DNS queries of day {}", day.start_ms))
}

/// Writes the queries and answers as `day`'s blob (none when there are no queries).
fn write_day(conn: &Connection, day: Day, queries: &mut [Query], answers: &mut [AnswerRow]) -> Result<()> {
    if queries.is_empty() {
        return DAYS.delete(conn, day);
    }
    let blob = pack(queries, answers)?;
    let bound = |col: usize, f: fn(i64, i64) -> i64| queries.iter().filter_map(|q| q[col]).reduce(f).unwrap_or(0);
    conn.prepare_cached(
        "INSERT INTO dns_packed (source, client, day, queries, min_id, max_id, min_ts, max_ts, rows)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT DO UPDATE SET queries = excluded.queries, min_id = excluded.min_id, max_id = excluded.max_id,
             min_ts = excluded.min_ts, max_ts = excluded.max_ts, rows = excluded.rows",
    )?
    .execute(params![
        LIVE_SOURCE,
        day.client,
        day.start_ms,
        queries.len() as i64,
        bound(ID, i64::min),
        bound(ID, i64::max),
        bound(TS, i64::min),
        bound(TS, i64::max),
        blob
    ])?;
    Ok(())
}

/// Moves `day`'s queries and their answers into its blob (merged with those packed there
/// before) and deletes their rows. Returns the queries packed.
pub fn pack_day(conn: &Connection, day: Day) -> Result<u64> {
    let (mut queries, mut answers) = read_day(conn, day)?;
    let span = params![day.start_ms, day.start_ms + DAY_MS, day.client, LIVE_SOURCE];
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM dns_query_rows WHERE ts >= ?1 AND ts < ?2 AND client = ?3 AND source = ?4",
        QUERY_COLUMNS.join(", ")
    ))?;
    let fresh: Vec<Query> = read_columns(&mut stmt, span)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM dns_answer_rows WHERE query_id IN
             (SELECT id FROM dns_query_rows WHERE ts >= ?1 AND ts < ?2 AND client = ?3 AND source = ?4)",
        ANSWER_COLUMNS.join(", ")
    ))?;
    answers.extend(read_columns::<i64, { ANSWER_COLUMNS.len() }>(&mut stmt, span)?);
    let n = fresh.len() as u64;
    queries.extend(fresh);
    write_day(conn, day, &mut queries, &mut answers)?;
    // The answers go with their queries (ON DELETE CASCADE).
    conn.prepare_cached("DELETE FROM dns_query_rows WHERE ts >= ?1 AND ts < ?2 AND client = ?3 AND source = ?4")?
        .execute(span)?;
    Ok(n)
}

/// Removes the packed queries (and answers) from before `before_ms` (retention): whole days,
/// and the queries before it of the day it falls in. Returns the queries removed.
pub fn remove_before(conn: &Connection, before_ms: i64) -> Result<u64> {
    let (mut removed, split) = DAYS.remove_before(conn, before_ms)?;
    for day in split {
        let (mut queries, mut answers) = read_day(conn, day)?;
        let had = queries.len();
        queries.retain(|q| q[TS].is_some_and(|ts| ts >= before_ms));
        if queries.len() != had {
            removed += (had - queries.len()) as u64;
            let kept: std::collections::HashSet<i64> = queries.iter().filter_map(|q| q[ID]).collect();
            answers.retain(|a| kept.contains(&a[QUERY_ID]));
            write_day(conn, day, &mut queries, &mut answers)?;
        }
    }
    Ok(removed)
}

/// Queries packed, for counts that would otherwise unpack every day.
pub fn count(conn: &Connection) -> Result<u64> {
    DAYS.count(conn)
}

/// Every queries, rows and packed days (in the caller's snapshot).
pub fn total(conn: &Connection) -> Result<u64> {
    DAYS.total(conn)
}

#[cfg(test)]
mod tests {
    use rusqlite::types::Value;

    use super::*;
    use crate::{
        analysis::dns::{Answer, AnswerData},
        store::{
            Store,
            dns::tests::record,
            retention::Retention,
            tests::{temp_db, values},
        },
    };

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;

    fn answer(name: &str, ip: &str) -> Answer {
        Answer { name: name.into(), rtype: "A".into(), ttl: 60, data: AnswerData::Addr(ip.parse().unwrap()) }
    }

    fn shown(s: &Store, sql: &str) -> Vec<Vec<Value>> {
        values(s.conn(), sql)
    }

    #[test]
    fn columns_are_the_tables_in_order() {
        let s = Store::open(&temp_db("packed-dns-columns")).unwrap();
        for (table, cols) in [("dns_query_rows", &QUERY_COLUMNS[..]), ("dns_answer_rows", &ANSWER_COLUMNS[..])] {
            let got: Vec<String> = shown(&s, &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))
                .into_iter()
                .map(|r| match &r[0] {
                    Value::Text(t) => t.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(got, cols);
        }
    }

    #[test]
    fn a_packed_day_unpacks_to_its_queries_and_answers() {
        let q = |id: i64, ts: i64, answered: Option<i64>| -> Query {
            let mut q = [Some(3); QUERY_COLUMNS.len()];
            (q[ID], q[TS], q[ANSWERED], q[11]) = (Some(id), Some(ts), answered, None);
            q
        };
        let mut queries = vec![q(9, 5_000, Some(5_004)), q(2, 7_000, None), q(4, 6_000, Some(6_000))];
        let mut answers = vec![[9, 1, 5, 6, 60, 8], [9, 0, 5, 6, 60, 7], [4, 0, 1, 2, 3, 4]];
        let blob = pack(&mut queries, &mut answers).unwrap();
        let (qs, answers_back) = unpack(&blob).unwrap();
        assert_eq!(qs, queries);
        assert_eq!(qs.iter().map(|q| q[ID].unwrap()).collect::<Vec<_>>(), [2, 4, 9]);
        assert_eq!(answers_back, [[4, 0, 1, 2, 3, 4], [9, 0, 5, 6, 60, 7], [9, 1, 5, 6, 60, 8]]);
        // A damaged blob that claims more answers than it holds is refused before anything is
        // allocated for them.
        let mut streams = vec![vec![0u8; 1_000]; QUERY_COLUMNS.len() + ANSWER_COLUMNS.len()];
        streams[QUERY_COLUMNS.len()] = (0..1_000).flat_map(|_| [0xfe, 0xff, 0x07]).collect();
        for s in &mut streams[QUERY_COLUMNS.len() + 1..] {
            s.clear();
        }
        assert!(unpack(&deflate_columns(1_000, &streams)).unwrap_err().to_string().contains("more answers"));
        let mut orphan = vec![[77, 0, 1, 1, 1, 1]];
        assert!(pack(&mut queries, &mut orphan).is_err(), "an answer without its query");
        assert!(unpack(&blob[..blob.len() - 2]).is_err());
    }

    /// Packing the log of closed days changes nothing the views `dns_queries` and `dns_answers`
    /// return, alone or joined, in any order; retention then removes packed queries by their
    /// time, with their answers.
    #[test]
    fn packed_queries_read_as_their_rows_did_and_retention_removes_them() {
        let mut s = Store::open(&temp_db("packed-dns")).unwrap();
        let records: Vec<_> = (0..450i64)
            .map(|i| {
                let ts = T0 + i * 6 * DAY_MS / 450 + i % 13;
                let client = ["10.77.0.2", "10.77.0.3", "fd00:77::2"][i as usize % 3];
                let name = ["a.example", "b.example", "cdn.example"][i as usize % 3];
                let answers = (0..i % 4).map(|k| answer(name, &format!("192.0.2.{}", k + i % 50))).collect();
                let mut r = record(ts, client, name, answers);
                if i % 7 == 0 {
                    r.answered_ms = None;
                    r.rcode = None;
                }
                r
            })
            .collect();
        s.insert_dns(&records).unwrap();
        let d = |days: i64| T0 + days * DAY_MS;
        let queries = [
            "SELECT * FROM dns_queries ORDER BY id".to_owned(),
            format!("SELECT * FROM dns_queries WHERE ts >= {} AND ts < {} ORDER BY id", d(1) + 9, d(4)),
            "SELECT * FROM dns_queries WHERE client = '10.77.0.3' ORDER BY ts DESC, id DESC LIMIT 40".to_owned(),
            "SELECT * FROM dns_queries WHERE qname = 'b.example' AND source = 0 ORDER BY id DESC".to_owned(),
            "SELECT * FROM dns_answers ORDER BY query_id, position".to_owned(),
            "SELECT * FROM dns_answers WHERE query_id = 38 ORDER BY position".to_owned(),
            format!(
                "SELECT q.client, q.qname, a.data, count(*) FROM dns_queries q JOIN dns_answers a ON a.query_id = q.id
                 WHERE q.ts >= {} AND a.type = 'A' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                d(2)
            ),
            "SELECT count(*), sum(answered IS NULL), sum(rcode IS NULL) FROM dns_queries".to_owned(),
            // Answers of one query told apart by their rowid (an OR of index look-ups keeps
            // each rowid once).
            "SELECT * FROM dns_answers WHERE (query_id = 40 AND position = 0) OR (query_id = 40 AND position = 1)
                 OR (query_id = 40 AND position = 2) ORDER BY position"
                .to_owned(),
        ];
        let first_id = s.first_query_id(d(2)).unwrap();
        let bounded = format!(
            "SELECT q.client, q.qname, a.data, count(*) FROM dns_queries q JOIN dns_answers a ON a.query_id = q.id
             WHERE q.ts >= {} AND a.type = 'A' AND a.query_id >= {first_id} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            d(2)
        );
        let queries: Vec<String> = queries.into_iter().chain([bounded]).collect();
        let before: Vec<_> = queries.iter().map(|q| shown(&s, q)).collect();
        assert_eq!(before[8].len(), 3, "query 40's three answers");
        assert_eq!(before[9], before[6], "the bound keeps every answer of the period");
        assert_eq!(before[0].len(), 450);

        let now = d(7) + crate::store::rollup::HOUR_MS;
        let p = s.prune(Retention::default(), now, &mut |_| {}).unwrap();
        assert_eq!(p.queries_packed, 375, "days 0 to 4: {p:?}");
        assert_eq!(count(s.conn()).unwrap(), 375);
        assert_eq!(s.dns_count().unwrap(), 450);
        let answer_rows: i64 = s.conn().query_row("SELECT count(*) FROM dns_answer_rows", [], |r| r.get(0)).unwrap();
        assert!(answer_rows > 0 && (answer_rows as usize) < before[4].len(), "answers packed with their queries");
        for (q, b) in queries.iter().zip(&before) {
            assert_eq!(&shown(&s, q), b, "{q}");
        }
        assert_eq!(s.first_query_id(d(2)).unwrap(), first_id, "the same bound from the packed days");
        assert_eq!(shown(&Store::open_reader(s.path()).unwrap(), &queries[4]), before[4]);

        // Three days kept: queries before day 4 + 1 h go, packed or not, with their answers.
        let keep = Retention { raw: std::time::Duration::from_secs(3 * 86_400), ..Retention::default() };
        let cut = now - 3 * DAY_MS;
        let p = s.prune(keep, now, &mut |_| {}).unwrap();
        let ts = |r: &Vec<Value>| match r[1] {
            Value::Integer(v) => v,
            ref other => panic!("ts {other:?}"),
        };
        let kept: Vec<_> = before[0].iter().filter(|r| ts(r) >= cut).cloned().collect();
        assert_eq!(shown(&s, &queries[0]), kept);
        assert_eq!(p.dns_queries as usize, 450 - kept.len());
        assert!(kept.iter().any(|r| (cut..d(5)).contains(&ts(r))), "packed day 4 kept its later queries");
        let orphans: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM dns_answers WHERE query_id NOT IN (SELECT id FROM dns_queries)", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(orphans, 0);
    }
}
