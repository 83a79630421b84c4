//! One read-only SQL statement of the user's over the database as tracker's readers see it:
//! the views `flows`, `dns_queries` and `dns_answers` include the packed days, which the
//! `sqlite3` shell cannot read (`store::packed_view`).

use anyhow::{Context as _, Result, bail};
use rusqlite::types::ValueRef;
use serde_json::{Map, Value};

use crate::store::Store;

/// A statement's columns (named uniquely, in order) and its rows as JSON objects of them.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
}

/// Runs `sql`, one statement that changes nothing, and returns every row.
pub fn run(store: &Store, sql: &str) -> Result<Answer> {
    let conn = store.conn();
    // Prepared one at a time, none run: a second statement is refused, not ignored.
    let mut batch = rusqlite::Batch::new(conn, sql);
    let Some(mut stmt) = batch.next().map_err(|e| anyhow::anyhow!("{}", why(&e)))? else { bail!("no statement given") };
    if batch.next().map_err(|e| anyhow::anyhow!("{}", why(&e)))?.is_some() {
        bail!("give one statement at a time (nothing was run)");
    }
    if !stmt.readonly() {
        bail!("tracker sql only reads: the statement would change the database (nothing was run)");
    }
    // Two columns of one name (`SELECT a.x, b.x`) would be one field of a JSON object.
    let mut columns: Vec<String> = Vec::new();
    for name in stmt.column_names() {
        let mut unique = name.to_owned();
        let mut n = 1;
        while columns.contains(&unique) {
            n += 1;
            unique = format!("{name}_{n}");
        }
        columns.push(unique);
    }
    let mut rows = Vec::new();
    let mut cursor = stmt.query([]).map_err(|e| anyhow::anyhow!("{}", why(&e)))?;
    while let Some(row) = cursor.next().map_err(|e| anyhow::anyhow!("{}", why(&e)))? {
        let mut obj = Map::new();
        for (i, name) in columns.iter().enumerate() {
            obj.insert(name.clone(), json(row.get_ref(i).context("reading a column")?));
        }
        rows.push(obj);
    }
    Ok(Answer { columns, rows })
}

/// SQLite's own message (`no such column: x`), without rusqlite's wrapping.
fn why(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        other => other.to_string(),
    }
}

fn json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        // As SQL writes a blob: x'0a1b'.
        ValueRef::Blob(b) => format!("x'{}'", b.iter().map(|x| format!("{x:02x}")).collect::<String>()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::protocol::AppProtocol,
        store::{
            retention::Retention,
            rollup::DAY_MS,
            tests::{labelled_flow, temp_db},
        },
    };

    #[test]
    fn packed_days_are_read_and_nothing_is_written() {
        let t0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;
        let path = temp_db("sql");
        let mut s = Store::open(&path).unwrap();
        let flows: Vec<_> = (0..40u64)
            .map(|n| {
                labelled_flow(n, "10.77.0.2", t0 + n as i64 * DAY_MS / 8, Some("www.apple.com"), AppProtocol::Tls, n)
            })
            .collect();
        s.upsert_flows("boot", &flows).unwrap();
        s.prune(Retention::default(), t0 + 7 * DAY_MS, &mut |_| {}).unwrap();
        let r = Store::open_reader(&path).unwrap();
        let a = run(&r, "SELECT count(*) AS n, sum(bytes_up), name, name FROM flows").unwrap();
        assert_eq!(a.columns, ["n", "sum(bytes_up)", "name", "name_2"]);
        assert_eq!(a.rows[0]["n"], Value::from(40), "the packed days too");
        assert_eq!(a.rows[0]["sum(bytes_up)"], Value::from((0..40).sum::<i64>()));
        let main: i64 = r.conn().query_row("SELECT count(*) FROM main.flows", [], |r| r.get(0)).unwrap();
        assert!(main < 40, "some days packed: {main} rows");
        let a = run(&r, "SELECT NULL AS a, 1.5 AS b, x'0aff' AS c, 'é' AS d").unwrap();
        assert_eq!(
            Value::Object(a.rows[0].clone()),
            serde_json::json!({"a": null, "b": 1.5, "c": "x'0aff'", "d": "é"})
        );

        let err = |sql: &str| run(&s, sql).unwrap_err().to_string();
        assert!(err("DELETE FROM flow_rows").contains("only reads"), "{}", err("DELETE FROM flow_rows"));
        assert!(err("CREATE TEMP TABLE t (x)").contains("only reads"));
        assert!(err("SELECT 1; DELETE FROM flow_rows").contains("one statement"));
        assert!(err(" -- a comment").contains("no statement"));
        assert_eq!(err("SELECT nope FROM flows"), "no such column: nope");
        assert_eq!(run(&s, "SELECT count(*) AS n FROM flows").unwrap().rows[0]["n"], Value::from(40));
    }
}
