//! `tracker prune` on a real database: old live rows go, a report over the whole period still
//! counts them (from the daily totals), an import stays, and a retention that would lose what a
//! user expects kept is refused with nothing changed. No root needed.

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use tracker::{
    analysis::{
        addr::AddrClass,
        labels::FlowLabels,
        names::FlowName,
        protocol::{AppProtocol, Classification, Decided},
    },
    store::{FlowRecord, Store},
    timefmt,
};

use crate::common::{Scratch, run_cli, tracker_with};

const DAY_MS: i64 = 86_400_000;

/// An unnamed TLS flow from the phone, `age_days` old.
fn flow(n: u64, age_days: i64) -> FlowRecord {
    let last = timefmt::now_ms() - age_days * DAY_MS;
    FlowRecord {
        kernel_first_ns: n,
        client: "10.77.0.2".parse().unwrap(),
        remote: "203.0.113.10".parse().unwrap(),
        protocol: tracker_common::IPPROTO_TCP,
        client_port: 40_000 + n as u16,
        remote_port: 443,
        packets_up: 3,
        bytes_up: 300,
        packets_down: 2,
        bytes_down: 200,
        tcp_flags: 0x12,
        first_seen_ms: last - 1_000,
        last_seen_ms: last,
        name: FlowName::default(),
        remote_class: AddrClass::Documentation,
        labels: FlowLabels::unnamed(Classification { protocol: AppProtocol::Tls, decided: Decided::Port }),
    }
}

fn json(db: &std::path::Path, pins: &std::path::Path, args: &[&str]) -> Result<Value> {
    let ran = run_cli(tracker_with(db, pins, args))?;
    ensure!(ran.exited_ok(), "tracker {args:?}: {}", ran.describe());
    serde_json::from_str(&ran.stdout).with_context(|| format!("tracker {args:?} printed {}", ran.stdout))
}

fn connections(db: &std::path::Path, pins: &std::path::Path) -> Result<u64> {
    let v = json(db, pins, &["report", "--since", "60d", "--format", "json"])?;
    v["totals"]["connections"].as_u64().with_context(|| format!("no totals.connections: {v}"))
}

#[test]
fn prune_removes_old_rows_and_reports_still_count_them() -> Result<()> {
    let scratch = Scratch::new("prune")?;
    let (db, pins) = (scratch.path("t.db"), scratch.path("pins"));
    let mut store = Store::open(&db)?;
    store.upsert_flows("boot", &[flow(1, 45), flow(2, 40), flow(3, 10), flow(4, 0)])?;
    let import = store.write(|w| w.import_source("old-capture"))?;
    store.write(|w| w.for_source(import).upsert_flows("capture", &[flow(1, 45)]))?;
    drop(store);
    assert_eq!(connections(&db, &pins)?, 4);

    // Refused, nothing changed: a retention under a day, daily totals shorter than the rows.
    for (args, why) in [
        (&["prune", "--keep-raw", "1h"][..], "at least a day"),
        (&["prune", "--keep-daily", "7d"][..], "shorter than --keep-raw"),
    ] {
        let ran = run_cli(tracker_with(&db, &pins, args))?;
        assert!(ran.exited_nonzero() && ran.stderr.contains(why), "{args:?}: {}", ran.describe());
        assert!(ran.stderr.contains("nothing was changed"), "{}", ran.describe());
    }
    assert_eq!(Store::open_reader(&db)?.flow_count()?, 5);

    let p = json(&db, &pins, &["prune", "--format", "json"])?;
    let row = &p[0];
    assert_eq!((&row["flows"], &row["dns_queries"]), (&Value::from(2), &Value::from(0)), "{p:#}");
    assert_eq!(row["shrinks"], true, "a database tracker created shrinks: {p:#}");
    assert!(row["file_bytes"].as_u64() > Some(0), "{p:#}");
    assert_eq!(Store::open_reader(&db)?.flow_count()?, 3, "two live rows went, the import's stayed");
    assert_eq!(connections(&db, &pins)?, 4, "the report counts the pruned flows from the daily totals");
    // Flow 3's day closed over two days ago: packed (schema 12), still listed and counted by
    // tracker, while another program's view of the database holds only flow 4's row.
    assert_eq!(row["flows_packed"], 1, "{p:#}");
    let listed = json(&db, &pins, &["flows", "--since", "60d", "--format", "json"])?;
    let ports: Vec<_> = listed.as_array().context("a list")?.iter().map(|f| f["client_port"].clone()).collect();
    assert_eq!(ports, [Value::from(40_003), Value::from(40_004)], "biggest first, then oldest: {listed:#}");
    let shell_sees: i64 =
        rusqlite::Connection::open(&db)?.query_row("SELECT count(*) FROM flows WHERE source = 0", [], |r| r.get(0))?;
    assert_eq!(shell_sees, 1);
    let sql = &["sql", "SELECT count(*) AS n, sum(bytes_up) AS up FROM flows WHERE source = 0", "--format", "json"];
    assert_eq!(json(&db, &pins, sql)?, serde_json::json!([{"n": 2, "up": 600}]));
    let ran = run_cli(tracker_with(&db, &pins, &["sql", "DELETE FROM flow_rows"]))?;
    assert!(ran.exited_nonzero() && ran.stderr.contains("only reads"), "{}", ran.describe());
    assert_eq!(Store::open_reader(&db)?.flow_count()?, 3, "nothing was deleted");
    let again = json(&db, &pins, &["prune", "--format", "json"])?;
    assert_eq!(again[0]["flows"], 0, "{again:#}");

    // A person reads a sentence.
    let ran = run_cli(tracker_with(&db, &pins, &["prune"]))?;
    assert!(ran.exited_ok() && ran.stdout.contains("Removed 0 flows"), "{}", ran.describe());
    Ok(())
}
