//! The query log and the connection list as pages: newest first, keyset-paged on (time, id),
//! narrowed by a name search and a device, every page examining a bounded number of rows; and
//! the rows written after a given one, for live updates.

use anyhow::{Context as _, Result};
use rusqlite::{Row, ToSql};
use serde::Serialize;

use crate::store::{Store, clients_json, protocol_name, schema::LIVE_SOURCE};

/// Rows a page shows.
pub const PAGE_ROWS: usize = 50;
/// Rows one page (or one live read) may examine. A search that matches rarely stops here and
/// offers the rows further back as its next page, so no request reads the whole log.
pub const SCAN_ROWS: usize = 20_000;

/// A row's place in the newest-first order: its time, then its id (rows of one millisecond).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub ts: i64,
    pub id: i64,
}

impl Cursor {
    /// As a query string carries it: `ts.id`.
    pub fn to_param(self) -> String {
        format!("{}.{}", self.ts, self.id)
    }

    /// `None` for anything but two integers joined by a dot.
    pub fn parse(s: &str) -> Option<Self> {
        let (ts, id) = s.split_once('.')?;
        Some(Self { ts: ts.parse().ok()?, id: id.parse().ok()? })
    }
}

/// Which rows, and how many.
#[derive(Clone, Debug)]
pub struct ListQuery {
    /// Only rows older than this one; `None` for the newest.
    pub before: Option<Cursor>,
    /// Only rows whose name (or, for connections, address) holds this text, case ignored.
    pub search: Option<String>,
    /// Only these client addresses (a device's); `None` for all.
    pub clients: Option<Vec<String>>,
    pub rows: usize,
    pub scan: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self { before: None, search: None, clients: None, rows: PAGE_ROWS, scan: SCAN_ROWS }
    }
}

/// A page of rows, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    /// Where the next (older) page starts; `None` when nothing older is left.
    pub older: Option<Cursor>,
    /// The page stopped at [`ListQuery::scan`] rows examined before it had all its rows: older
    /// rows may still match.
    pub scan_limited: bool,
    /// The largest id in the table when the page was read: live updates go on from there.
    pub newest_id: i64,
}

/// Rows written after a given id, oldest first, for live updates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Newer<T> {
    pub rows: Vec<T>,
    /// The last id examined: the next live read goes on after it.
    pub through: i64,
}

/// A DNS exchange of the query log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogRow {
    pub id: i64,
    pub ts: i64,
    pub client: String,
    pub name: String,
    pub qtype: String,
    /// `None`: no response was seen.
    pub rcode: Option<String>,
    /// The rule that refused it.
    pub blocked_by: Option<i64>,
}

/// A connection of the connection list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowLine {
    pub id: i64,
    /// When it started.
    pub ts: i64,
    pub client: String,
    pub remote: String,
    pub protocol: String,
    pub remote_port: u16,
    pub name: Option<String>,
    pub company: Option<String>,
    pub service: Option<String>,
    pub app_protocol: Option<String>,
    /// IP bytes both ways so far.
    pub bytes: u64,
}

/// A table the pages list: its SQL and how a row is read and searched.
trait Listed: Sized {
    /// The columns, `id` and the time first, from the table, without a WHERE.
    const SELECT: &'static str;
    /// The time column (indexed): the order and the cursor.
    const TS: &'static str;
    const TABLE: &'static str;
    /// The table of its packed days (`store::packed_flows`, `store::packed_dns`).
    const PACKED: &'static str;
    fn read(r: &Row<'_>) -> rusqlite::Result<Self>;
    fn cursor(&self) -> Cursor;
    /// Whether the lower-cased `needle` is in what a search looks at.
    fn matches(&self, needle: &str) -> bool;
}

impl Listed for LogRow {
    const SELECT: &'static str = "SELECT id, ts, client, qname, qtype, rcode, blocked_by FROM dns_queries";
    const TS: &'static str = "ts";
    const TABLE: &'static str = "dns_queries";
    const PACKED: &'static str = crate::store::packed_dns::TABLE;
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            ts: r.get(1)?,
            client: r.get(2)?,
            name: r.get(3)?,
            qtype: r.get(4)?,
            rcode: r.get(5)?,
            blocked_by: r.get(6)?,
        })
    }
    fn cursor(&self) -> Cursor {
        Cursor { ts: self.ts, id: self.id }
    }
    fn matches(&self, needle: &str) -> bool {
        // Stored lower case already (the log's canonical form).
        self.name.contains(needle)
    }
}

impl Listed for FlowLine {
    const SELECT: &'static str = "SELECT id, first_seen, client, remote, protocol, remote_port, name, company,
        service, app_protocol, bytes_up + bytes_down FROM flows";
    const TS: &'static str = "first_seen";
    const TABLE: &'static str = "flows";
    const PACKED: &'static str = crate::store::packed_flows::TABLE;
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            ts: r.get(1)?,
            client: r.get(2)?,
            remote: r.get(3)?,
            protocol: protocol_name(r.get(4)?),
            remote_port: r.get(5)?,
            name: r.get(6)?,
            company: r.get(7)?,
            service: r.get(8)?,
            app_protocol: r.get(9)?,
            bytes: r.get::<_, i64>(10)?.max(0) as u64,
        })
    }
    fn cursor(&self) -> Cursor {
        Cursor { ts: self.ts, id: self.id }
    }
    fn matches(&self, needle: &str) -> bool {
        self.name.as_deref().is_some_and(|n| n.to_ascii_lowercase().contains(needle)) || self.remote.contains(needle)
    }
}

/// The search text as matched: trimmed, lower case; empty is no search.
fn needle(search: Option<&str>) -> Option<String> {
    search.map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty())
}

/// The device filter. `+client` keeps SQLite on the time index, whose order the page reads in
/// and stops early on; the client index would sort every row of the device first.
const CLIENTS: &str = "(:clients IS NULL OR +client IN (SELECT value FROM json_each(:clients)))";

/// Steps through `sql`'s rows, keeping those `keep` accepts, until `want` are kept or `scan`
/// were examined. Returns the kept rows, the last row examined and how many were.
fn collect<T: Listed>(
    store: &Store,
    sql: &str,
    params: &[(&str, &dyn ToSql)],
    keep: impl Fn(&T) -> bool,
    want: usize,
    scan: usize,
) -> Result<(Vec<T>, Option<T>, usize)> {
    let mut stmt = store.conn().prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let (mut kept, mut last, mut examined) = (Vec::new(), None, 0);
    while kept.len() < want && examined < scan {
        let Some(row) = rows.next().with_context(|| format!("reading {}", T::TABLE))? else { break };
        let row = T::read(row).with_context(|| format!("reading {}", T::TABLE))?;
        examined += 1;
        // The last row examined is the last kept one, or this one when it is left out.
        if keep(&row) {
            kept.push(row);
            last = None;
        } else {
            last = Some(row);
        }
    }
    Ok((kept, last, examined))
}

/// The newest id: of the rows, or of the packed days when every row is packed ([`newest`]).
fn newest_id<T: Listed>(store: &Store) -> Result<i64> {
    newest(store, [T::TABLE, "id"], [T::PACKED, "max_id"], &format!("source = {LIVE_SOURCE}"))
}

/// The largest of `rows`' column (a table or view of `main`: the rows not packed) and of
/// `packed`'s bound column, where `filter` holds, 0 for none: an index's last entry and the
/// packed days' bounds, not an aggregate over a TEMP view's UNION ALL, which SQLite does not
/// flatten (it would unpack every day).
fn newest(store: &Store, [table, column]: [&str; 2], [packed, bound]: [&str; 2], filter: &str) -> Result<i64> {
    let sql = format!(
        "SELECT max((SELECT coalesce(max({column}), 0) FROM main.{table} WHERE {filter}),
                    (SELECT coalesce(max({bound}), 0) FROM {packed} WHERE {filter}))"
    );
    Ok(store.conn().query_row(&sql, [], |r| r.get(0))?)
}

/// The rows of a page from a cursor on, newest first. Read in the time index's order, so the
/// page stops after the rows it examined: no sort of the whole table first.
fn page_sql<T: Listed>() -> String {
    let (ts_col, select) = (T::TS, T::SELECT);
    format!(
        "{select} WHERE source = {LIVE_SOURCE} AND {ts_col} <= :ts AND ({ts_col} < :ts OR id < :id) AND {CLIENTS}
         ORDER BY {ts_col} DESC, id DESC"
    )
}

/// A page of `T` for `q`, newest first.
fn page<T: Listed>(store: &Store, q: &ListQuery) -> Result<Page<T>> {
    let newest = newest_id::<T>(store)?;
    let needle = needle(q.search.as_deref());
    let before = q.before.unwrap_or(Cursor { ts: i64::MAX, id: i64::MAX });
    let sql = page_sql::<T>();
    let clients = clients_json(q.clients.as_deref());
    let params: [(&str, &dyn ToSql); 3] = [(":ts", &before.ts), (":id", &before.id), (":clients", &clients)];
    // One row past the page tells whether an older page exists.
    let keep = |row: &T| needle.as_deref().is_none_or(|n| row.matches(n));
    let (mut rows, last_examined, examined) = collect(store, &sql, &params, keep, q.rows + 1, q.scan)?;
    let (older, scan_limited) = if rows.len() > q.rows {
        rows.truncate(q.rows);
        (rows.last().map(T::cursor), false)
    } else if examined >= q.scan {
        // Stopped by the bound: go on from the last row examined, matched or not.
        (last_examined.as_ref().map(T::cursor).or_else(|| rows.last().map(T::cursor)), true)
    } else {
        (None, false)
    };
    Ok(Page { rows, older, scan_limited, newest_id: newest })
}

/// Rows of `T` after id `after` (of `q`'s search and clients; its cursor is not used), oldest
/// first, at most `q.rows`.
fn newer<T: Listed>(store: &Store, after: i64, q: &ListQuery) -> Result<Newer<T>> {
    let needle = needle(q.search.as_deref());
    let sql = format!("{} WHERE source = {LIVE_SOURCE} AND id > :after AND {CLIENTS} ORDER BY id", T::SELECT);
    let clients = clients_json(q.clients.as_deref());
    let params: [(&str, &dyn ToSql); 2] = [(":after", &after), (":clients", &clients)];
    let keep = |row: &T| needle.as_deref().is_none_or(|n| row.matches(n));
    let (rows, last_examined, _) = collect(store, &sql, &params, keep, q.rows, q.scan)?;
    let through = last_examined.map(|r| r.cursor().id).into_iter().chain(rows.last().map(|r| r.cursor().id)).max();
    Ok(Newer { through: through.unwrap_or(after), rows })
}

/// A page of the live query log.
pub fn log_page(store: &Store, q: &ListQuery) -> Result<Page<LogRow>> {
    page(store, q)
}

/// A page of the live connections, by the time they started.
pub fn flows_page(store: &Store, q: &ListQuery) -> Result<Page<FlowLine>> {
    page(store, q)
}

/// DNS exchanges written after id `after`.
pub fn log_newer(store: &Store, after: i64, q: &ListQuery) -> Result<Newer<LogRow>> {
    newer(store, after, q)
}

/// Connections first written after id `after`.
pub fn flows_newer(store: &Store, after: i64, q: &ListQuery) -> Result<Newer<FlowLine>> {
    newer(store, after, q)
}

/// What live updates watch: the newest DNS exchange and connection, and the last time any
/// connection was seen (its counters moved). Index look-ups of the rows and the packed days.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Latest {
    pub dns: i64,
    pub flows: i64,
    pub seen: i64,
}

pub fn latest(store: &Store) -> Result<Latest> {
    let (dns, flows) = (newest_id::<LogRow>(store)?, newest_id::<FlowLine>(store)?);
    let seen = newest(store, ["flows", "last_seen"], [FlowLine::PACKED, "max_last"], "1")?;
    Ok(Latest { dns, flows, seen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{dns::tests::record, tests::temp_db};

    const T0: i64 = 1_800_000_000_000;

    /// 300 queries, three per millisecond (same `ts`, ids apart), names cycling over five, from
    /// two clients.
    /// A database of its own per test (they run at once).
    fn log_store(name: &str) -> Store {
        let mut s = Store::open(&temp_db(name)).unwrap();
        let records: Vec<_> = (0..300)
            .map(|i| {
                let client = if i % 2 == 0 { "10.77.0.2" } else { "10.77.0.3" };
                record(T0 + i / 3, client, &format!("n{}.example", i % 5), Vec::new())
            })
            .collect();
        s.insert_dns(&records).unwrap();
        s
    }

    fn names(rows: &[LogRow]) -> Vec<(i64, String)> {
        rows.iter().map(|r| (r.id, r.name.clone())).collect()
    }

    #[test]
    fn pages_go_back_by_time_then_id_without_a_gap_or_a_repeat() {
        let s = log_store("listing-pages");
        let q = ListQuery { rows: 7, ..ListQuery::default() };
        let first = log_page(&s, &q).unwrap();
        assert_eq!(first.newest_id, 300);
        assert_eq!(first.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [300, 299, 298, 297, 296, 295, 294]);
        assert_eq!(first.older, Some(Cursor { ts: T0 + 97, id: 294 }));
        // Every page in turn: all 300 ids, once each, in the log's order.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let p = log_page(&s, &ListQuery { before: cursor, ..q.clone() }).unwrap();
            assert!(!p.scan_limited);
            seen.extend(p.rows.iter().map(|r| (r.ts, r.id)));
            match p.older {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut want: Vec<(i64, i64)> = (1..=300).map(|id| (T0 + (id - 1) / 3, id)).collect();
        want.reverse();
        assert_eq!(seen, want);
        assert_eq!(Cursor::parse(&Cursor { ts: T0, id: 9 }.to_param()), Some(Cursor { ts: T0, id: 9 }));
        for bad in ["", "1", "1.", ".2", "a.b", "1.2.3", "<b>.1"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_search_and_a_device_narrow_exactly_and_the_scan_bound_pages_on() {
        let s = log_store("listing-search");
        // n3 is every fifth query from the fourth (ids 4, 9, ...); the phone has the odd ids.
        let q =
            ListQuery { search: Some(" N3.EX ".into()), clients: Some(vec!["10.77.0.2".into()]), ..Default::default() };
        let p = log_page(&s, &q).unwrap();
        let want: Vec<i64> = (1..=300).rev().filter(|id| (id - 1) % 5 == 3 && (id - 1) % 2 == 0).collect();
        assert_eq!(p.rows.iter().map(|r| r.id).collect::<Vec<_>>(), want);
        assert!(p.rows.iter().all(|r| r.name == "n3.example" && r.client == "10.77.0.2"));
        assert_eq!((p.older, p.scan_limited), (None, false));
        // Bounded: 40 rows examined a page, so the 30 matches come over several pages, each
        // going on from the last row it examined.
        let q = ListQuery { scan: 40, ..q };
        let mut got = Vec::new();
        let mut cursor = None;
        for _ in 0..20 {
            let p = log_page(&s, &ListQuery { before: cursor, ..q.clone() }).unwrap();
            got.extend(p.rows.iter().map(|r| r.id));
            cursor = p.older;
            if cursor.is_none() {
                break;
            }
            assert!(p.scan_limited);
        }
        assert_eq!(got, want);
        let none = log_page(&s, &ListQuery { search: Some("nothing".into()), ..Default::default() }).unwrap();
        assert_eq!(names(&none.rows), []);
    }

    /// The bound on rows examined holds only if SQLite walks an index in the page's order: a
    /// sort would read every row before the first one comes back.
    #[test]
    fn pages_are_read_in_index_order_without_a_sort() {
        let s = log_store("listing-plan");
        for sql in [page_sql::<LogRow>(), page_sql::<FlowLine>()] {
            let mut stmt = s.conn().prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map([0_i64, 0, 0], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(plan.iter().any(|p| p.contains("USING INDEX")), "{plan:?}");
            assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{sql}: {plan:?}");
        }
    }

    #[test]
    fn newer_rows_come_oldest_first_and_say_how_far_they_read() {
        let s = log_store("listing-newer");
        let q = ListQuery { rows: 4, search: Some("n0".into()), ..Default::default() };
        let n = log_newer(&s, 280, &q).unwrap();
        assert_eq!(n.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [281, 286, 291, 296]);
        assert_eq!(n.through, 296);
        let n = log_newer(&s, 296, &q).unwrap();
        assert_eq!((n.rows.len(), n.through), (0, 300), "the rest examined, none matching");
        let n = log_newer(&s, 300, &q).unwrap();
        assert_eq!((n.rows.len(), n.through), (0, 300));
        assert_eq!(latest(&s).unwrap(), Latest { dns: 300, flows: 0, seen: 0 });
    }
}
