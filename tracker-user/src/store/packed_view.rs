//! Packed rows read as rows: a virtual table over each table of packed days (flows,
//! [`super::packed_flows`]; DNS queries and their answers, [`super::packed_dns`]), and each
//! connection's TEMP views `flows`, `dns_queries` and `dns_answers` showing the rows and the
//! packed rows as one, so every reader's SQL reads both without knowing.
//!
//! A TEMP view has the name of the database's own view: SQLite looks a name up in `temp`
//! before `main`, so tracker's connections see both, and another program (the `sqlite3` shell,
//! which has no such module) sees `main.flows`, the rows only. A TEMP view's packed half is
//! the database view's own SQL over the virtual table, so the two cannot disagree on a column.
//!
//! A virtual table takes ranges of its bounded columns (times, ids, device, source) from the
//! query and unpacks only the days that can match; SQLite still checks every term on the rows
//! it returns. It also gives its rows in a query's order by time (or id), opening days one at a
//! time as the order reaches them, so a page of the newest rows unpacks only the days it shows.

use std::{collections::BinaryHeap, marker::PhantomData, os::raw::c_int};

use anyhow::{Context as _, Result, ensure};
use rusqlite::{
    Connection, ffi,
    types::ValueRef,
    vtab::{
        Context, IndexConstraintOp, IndexInfo, VTab, VTabConfig, VTabConnection, VTabCursor, Values,
        eponymous_only_module,
    },
};

/// One kind of packed rows: the database view it joins, its table of days and how to read them.
pub(super) trait Kind: Sized + 'static {
    /// The virtual table's name.
    const MODULE: &'static str;
    /// The database's view, and the rows table its SQL reads (as that SQL names it).
    const VIEW: &'static str;
    const ROWS_FROM: &'static str;
    /// The table of packed days.
    const TABLE: &'static str;
    /// The columns, as the rows table's.
    const COLUMNS: &'static [&'static str];
    /// The bounded columns: position, and the SQL of the smallest and largest value of a day
    /// in [`Kind::TABLE`].
    const BOUNDS: &'static [(usize, &'static str, &'static str)];
    /// The order the table can give: a bounded column, then a tie-break column.
    const ORDER: (usize, usize);
    /// The id column, an order of its own when it is not [`Kind::ORDER`]'s first.
    const ID: usize;

    /// A day's rows, [`Kind::COLUMNS`] values each, one after another.
    fn unpack(blob: &[u8]) -> Result<Vec<Option<i64>>>;

    /// A row's rowid, unique in the table: SQLite tells rows apart by it (an OR of two
    /// indexes keeps a rowid once).
    fn rowid(row: &[Option<i64>]) -> i64 {
        row[Self::ID].unwrap_or_default()
    }
}

/// Registers `K`'s virtual table on `conn` and makes its TEMP view. After migrating: it reads
/// the database view's SQL.
pub(super) fn install<K: Kind>(conn: &Connection) -> Result<()> {
    conn.create_module(K::MODULE, eponymous_only_module::<Table<K>>(), None)?;
    let view = K::VIEW;
    let sql: String = conn
        .query_row("SELECT sql FROM main.sqlite_master WHERE type = 'view' AND name = ?1", [view], |r| r.get(0))
        .with_context(|| format!("reading the view {view}"))?;
    let (_, select) = sql.split_once(" AS ").with_context(|| format!("the view {view} has no AS"))?;
    let from = K::ROWS_FROM;
    ensure!(select.matches(from).count() == 1, "the view {view} does not read `{from}` once");
    let alias = from.rsplit(' ').next().unwrap_or_default();
    let packed = select.replace(from, &format!("FROM {} {alias}", K::MODULE));
    // Two views, so SQLite flattens the view into a query's compound and merges the halves in
    // order (each its own index or order) instead of sorting them together.
    conn.execute_batch(&format!(
        "DROP VIEW IF EXISTS temp.{view};
         DROP VIEW IF EXISTS temp.packed_{view};
         CREATE TEMP VIEW packed_{view} AS {packed};
         CREATE TEMP VIEW {view} AS SELECT * FROM main.{view} UNION ALL SELECT * FROM temp.packed_{view};"
    ))
    .with_context(|| format!("making the view of rows and packed rows {view}"))?;
    Ok(())
}

fn module_error(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ModuleError(e.to_string())
}

/// A virtual table: the connection it reads [`Kind::TABLE`] through.
#[repr(C)]
struct Table<K> {
    /// SQLite's part; first, as SQLite casts the pointer.
    base: ffi::sqlite3_vtab,
    db: *mut ffi::sqlite3,
    kind: PhantomData<K>,
}

fn bounded<K: Kind>(col: usize) -> bool {
    K::BOUNDS.iter().any(|&(c, ..)| c == col)
}

unsafe impl<'vtab, K: Kind> VTab<'vtab> for Table<K> {
    type Aux = ();
    type Cursor = Cursor<'vtab, K>;

    fn connect(db: &mut VTabConnection, _aux: Option<&()>, _args: &[&[u8]]) -> rusqlite::Result<(String, Self)> {
        // Reads only, and nothing but tracker's own tables: harmless wherever it is used.
        db.config(VTabConfig::Innocuous)?;
        // SAFETY: the handle of the connection this table belongs to, which outlives it.
        let handle = unsafe { db.handle() };
        let columns: Vec<String> = K::COLUMNS.iter().map(|c| format!("{c} INTEGER")).collect();
        let schema = format!("CREATE TABLE x({})", columns.join(", "));
        Ok((schema, Self { base: ffi::sqlite3_vtab::default(), db: handle, kind: PhantomData }))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<()> {
        let mut used = Vec::new();
        for (i, c) in info.constraints().enumerate() {
            let Ok(col) = usize::try_from(c.column()) else { continue };
            let op = match c.operator() {
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ => Op::Eq,
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GT => Op::Gt,
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GE => Op::Ge,
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LT => Op::Lt,
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LE => Op::Le,
                _ => continue,
            };
            if c.is_usable() && bounded::<K>(col) {
                used.push((i, col, op));
            }
        }
        let mut plan = String::new();
        for (n, &(i, col, op)) in used.iter().enumerate() {
            // Not omitted: SQLite checks the term again on every row returned.
            info.constraint_usage(i).set_argv_index(n as c_int + 1);
            plan.push_str(&format!("{col}{} ", op as u8 as char));
        }
        info.set_idx_str(plan.trim_end());
        let order = Order::of::<K>(info);
        info.set_idx_num(Order::code(order));
        if order.is_some() {
            info.set_order_by_consumed(true);
        }
        // A day of a household's rows is a few thousand; an equality (one query's answers,
        // one device) is a small part of them, a range a larger one.
        let rows = used.iter().fold(1_000_000f64, |r, &(_, _, op)| if op == Op::Eq { r / 100.0 } else { r / 4.0 });
        info.set_estimated_rows(rows as i64);
        info.set_estimated_cost(rows);
        Ok(())
    }

    fn open(&'vtab mut self) -> rusqlite::Result<Cursor<'vtab, K>> {
        Ok(Cursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            table: self,
            bounds: Bounds::default(),
            order: None,
            days: Vec::new(),
            open: Vec::new(),
            heap: BinaryHeap::new(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Eq = b'=',
    Gt = b'>',
    Ge = b']',
    Lt = b'<',
    Le = b'[',
}

impl Op {
    fn from_char(c: char) -> Option<Self> {
        [Self::Eq, Self::Gt, Self::Ge, Self::Lt, Self::Le].into_iter().find(|op| *op as u8 as char == c)
    }
}

/// Inclusive ranges of the bounded columns, from the query's terms.
#[derive(Clone, Debug, Default)]
struct Bounds {
    /// (column, lowest, highest), one per bounded column narrowed.
    ranges: Vec<(usize, i64, i64)>,
}

impl Bounds {
    fn range(&mut self, col: usize) -> &mut (usize, i64, i64) {
        let at = match self.ranges.iter().position(|r| r.0 == col) {
            Some(at) => at,
            None => {
                self.ranges.push((col, i64::MIN, i64::MAX));
                self.ranges.len() - 1
            }
        };
        &mut self.ranges[at]
    }

    /// Narrows by `col op v`; a value that is not an integer narrows nothing (SQLite compares
    /// it on every row anyway), and NULL matches nothing.
    fn narrow(&mut self, col: usize, op: Op, v: ValueRef<'_>) {
        let (_, lo, hi) = self.range(col);
        let v = match v {
            ValueRef::Integer(v) => v,
            ValueRef::Null => {
                (*lo, *hi) = (i64::MAX, i64::MIN);
                return;
            }
            ValueRef::Real(_) | ValueRef::Text(_) | ValueRef::Blob(_) => return,
        };
        match op {
            Op::Eq => (*lo, *hi) = ((*lo).max(v), (*hi).min(v)),
            Op::Ge => *lo = (*lo).max(v),
            Op::Gt => *lo = (*lo).max(v.saturating_add(1)),
            Op::Le => *hi = (*hi).min(v),
            Op::Lt => *hi = (*hi).min(v.saturating_sub(1)),
        }
    }

    fn admits(&self, row: &[Option<i64>]) -> bool {
        self.ranges.iter().all(|&(c, lo, hi)| row[c].is_some_and(|v| (lo..=hi).contains(&v)))
    }
}

/// The order a query asks of the rows, when the table can give it: by a column (with a
/// tie-break), one direction. Each day's smallest and largest of that column bound its rows,
/// so days open one at a time as the order reaches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Order {
    col: usize,
    tie: Option<usize>,
    desc: bool,
}

impl Order {
    /// `idx_num`'s code: 0 for none, else the column and direction.
    fn code(order: Option<Self>) -> c_int {
        order.map_or(0, |o| (o.col as c_int + 1) * 4 + c_int::from(o.desc) * 2 + c_int::from(o.tie.is_some()))
    }

    fn from_code<K: Kind>(code: c_int) -> Option<Self> {
        let col = usize::try_from(code / 4 - 1).ok()?;
        let tie = (code & 1 == 1).then_some(K::ORDER.1);
        Some(Self { col, tie, desc: code & 2 == 2 })
    }

    /// The order `info`'s ORDER BY asks, if this table can give it.
    fn of<K: Kind>(info: &IndexInfo) -> Option<Self> {
        let terms: Vec<(usize, bool)> = info
            .order_bys()
            .map(|o| (usize::try_from(o.column()).unwrap_or(usize::MAX), o.is_order_by_desc()))
            .collect();
        let (first, tie) = K::ORDER;
        match *terms.as_slice() {
            [(col, desc)] if col == first || col == K::ID => Some(Self { col, tie: None, desc }),
            [(col, desc), (t, also)] if col == first && t == tie && desc == also => {
                Some(Self { col, tie: Some(tie), desc })
            }
            _ => None,
        }
    }

    /// A row's place in this order: larger comes first.
    fn key(self, row: &[Option<i64>]) -> (i64, i64) {
        let at = |c: usize| row[c].unwrap_or_default();
        let (a, b) = (at(self.col), self.tie.map_or(0, at));
        if self.desc { (a, b) } else { (a.saturating_neg(), b.saturating_neg()) }
    }

    /// The SQL of a day's bound of [`Order::key`]'s first part, to take days in order.
    fn day_bound<K: Kind>(self) -> String {
        let (_, min, max) = K::BOUNDS.iter().find(|b| b.0 == self.col).copied().unwrap_or((0, "0", "0"));
        if self.desc { max.to_owned() } else { format!("-({min})") }
    }
}

#[repr(C)]
struct Cursor<'vtab, K: Kind> {
    /// SQLite's part; first, as SQLite casts the pointer.
    base: ffi::sqlite3_vtab_cursor,
    table: &'vtab Table<K>,
    bounds: Bounds,
    order: Option<Order>,
    /// The days still to open (rowid in [`Kind::TABLE`], bound of their keys), next last.
    days: Vec<(i64, i64)>,
    /// The rows of the days open (flat, [`Kind::COLUMNS`] a row), and the next row of each in a
    /// heap by key.
    open: Vec<Vec<Option<i64>>>,
    heap: BinaryHeap<((i64, i64), usize, usize)>,
}

impl<K: Kind> Cursor<'_, K> {
    fn conn(&self) -> rusqlite::Result<Connection> {
        // SAFETY: this table's own connection, open while any statement on it runs; the
        // wrapper does not close it when dropped.
        unsafe { Connection::from_handle(self.table.db) }
    }

    /// The days `bounds` can match, next last.
    fn find_days(&self) -> Result<Vec<(i64, i64)>> {
        let conn = self.conn()?;
        let mut terms = vec!["1".to_owned()];
        let mut values = Vec::new();
        for &(col, lo, hi) in &self.bounds.ranges {
            let (_, min, max) = K::BOUNDS.iter().find(|b| b.0 == col).copied().context("an unbounded column")?;
            terms.push(format!("{max} >= ?{} AND {min} <= ?{}", values.len() + 1, values.len() + 2));
            values.extend([lo, hi]);
        }
        let bound = self.order.map_or_else(|| "0".to_owned(), Order::day_bound::<K>);
        let mut stmt = conn.prepare(&format!(
            "SELECT rowid, {bound} FROM {} WHERE {} ORDER BY 2, rowid",
            K::TABLE,
            terms.join(" AND ")
        ))?;
        let days = stmt
            .query_map(rusqlite::params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(days)
    }

    /// Unpacks the next day and queues its first row the bounds admit.
    fn open_next(&mut self) -> Result<()> {
        let Some((rowid, _)) = self.days.pop() else { return Ok(()) };
        let blob: Vec<u8> =
            self.conn()?
                .query_row(&format!("SELECT rows FROM {} WHERE rowid = ?1", K::TABLE), [rowid], |r| r.get(0))?;
        let n = K::COLUMNS.len();
        let all = K::unpack(&blob)?;
        let mut rows: Vec<&[Option<i64>]> = all.chunks_exact(n).filter(|r| self.bounds.admits(r)).collect();
        // The heap takes a day's rows in its own order.
        if let Some(order) = self.order {
            rows.sort_unstable_by_key(|r| std::cmp::Reverse(order.key(r)));
        }
        let flat: Vec<Option<i64>> = rows.into_iter().flatten().copied().collect();
        if !flat.is_empty() {
            let key = self.order.map_or((0, 0), |o| o.key(&flat[..n]));
            self.heap.push((key, self.open.len(), 0));
        }
        self.open.push(flat);
        Ok(())
    }

    /// Opens days until the heap's top comes before every row of the days still shut.
    fn settle(&mut self) -> Result<()> {
        loop {
            let Some(&(_, bound)) = self.days.last() else { return Ok(()) };
            match (self.heap.peek(), self.order) {
                // Unordered: one day at a time; ordered: every day whose rows could come first.
                (Some(_), None) => return Ok(()),
                (Some(&(key, ..)), Some(_)) if key.0 > bound => return Ok(()),
                _ => self.open_next()?,
            }
        }
    }

    fn current(&self) -> Option<&[Option<i64>]> {
        let n = K::COLUMNS.len();
        self.heap.peek().map(|&(_, day, at)| &self.open[day][at * n..(at + 1) * n])
    }
}

unsafe impl<K: Kind> VTabCursor for Cursor<'_, K> {
    fn filter(&mut self, idx_num: c_int, plan: Option<&str>, args: &Values<'_>) -> rusqlite::Result<()> {
        self.bounds = Bounds::default();
        self.order = Order::from_code::<K>(idx_num);
        let terms = plan.unwrap_or_default().split_whitespace();
        for (term, v) in terms.zip(args.iter()) {
            let (col, op) = term.split_at(term.len() - 1);
            let col: usize = col.parse().map_err(module_error)?;
            let op = op.chars().next().and_then(Op::from_char).ok_or_else(|| module_error("a bad plan"))?;
            self.bounds.narrow(col, op, v);
        }
        self.days = self.find_days().map_err(module_error)?;
        (self.open, self.heap) = (Vec::new(), BinaryHeap::new());
        self.settle().map_err(module_error)
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        let n = K::COLUMNS.len();
        if let Some((_, day, at)) = self.heap.pop() {
            let next = at + 1;
            if next * n < self.open[day].len() {
                let key = self.order.map_or((0, 0), |o| o.key(&self.open[day][next * n..(next + 1) * n]));
                self.heap.push((key, day, next));
            } else {
                // A finished day's rows are not needed again.
                self.open[day] = Vec::new();
            }
        }
        self.settle().map_err(module_error)
    }

    fn eof(&self) -> bool {
        self.heap.is_empty()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        let value = self.current().zip(usize::try_from(i).ok()).and_then(|(row, i)| row.get(i).copied()).flatten();
        ctx.set_result(&value)
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.current().map(K::rowid).unwrap_or_default())
    }
}
