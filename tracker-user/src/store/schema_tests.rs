//! Tests of the compact rows of schemas 8 and 9: a version-7 and a version-8 database migrated
//! with every row equal through the views, the writers' exact values through them, and the
//! views' use of indexes.

use std::path::Path;

use rusqlite::{Connection, types::Value};

use super::{
    DnsRecord, FlowRecord, Store,
    schema::{self, MIGRATIONS},
    tests::temp_db,
};
use crate::analysis::{
    addr::AddrClass,
    dns::{Answer, AnswerData, Transport},
    labels::FlowLabels,
    names::{FlowName, NameSource},
    protocol::{AppProtocol, Classification, Decided},
};

/// Every row of `table` (a view from version 8 on), in id order, with its column names.
fn rows(conn: &Connection, table: &str, order: &str) -> (Vec<String>, Vec<Vec<Value>>) {
    let sql = format!("SELECT * FROM {table} ORDER BY {order}");
    let names = conn.prepare(&sql).unwrap().column_names().into_iter().map(str::to_owned).collect();
    (names, super::tests::values(conn, &sql))
}

/// Every table's columns and rows, as [`all_rows`] reads them.
type AllRows = Vec<(Vec<String>, Vec<Vec<Value>>)>;

fn all_rows(p: &Path) -> AllRows {
    let c = Connection::open(p).unwrap();
    [
        ("flows", "id"),
        ("dns_queries", "id"),
        ("dns_answers", "query_id, position"),
        ("rollup", "1, 2, 3, 4, 5, 6, 7, 8"),
        ("dns_rollup", "1, 2, 3, 4, 5"),
    ]
    .iter()
    .map(|(t, o)| rows(&c, t, o))
    .collect()
}

/// A database of schema 7 with rows as that tracker wrote them: IPv4 and IPv6, named and
/// unnamed, the largest counters SQLite holds, queries answered and not, an import's.
fn version_7(name: &str) -> std::path::PathBuf {
    let p = temp_db(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let c = Connection::open(&p).unwrap();
    for (i, sql) in MIGRATIONS[..7].iter().enumerate() {
        c.execute_batch(sql).unwrap();
        c.pragma_update(None, "user_version", i + 1).unwrap();
    }
    c.execute_batch(
        "INSERT INTO sources (id, name, created) VALUES (3, 'capture', 5);
         INSERT INTO flows (boot_id, kernel_first_ns, family, client, remote, protocol, client_port, remote_port,
             packets_up, bytes_up, packets_down, bytes_down, tcp_flags, first_seen, last_seen, name, name_source,
             cname, remote_class, app_protocol, app_decided, encrypted, owner_kind, owner, company, site, service,
             served_by, source)
         VALUES
         ('0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0', 1234567890123, 4, '10.77.0.2', '192.0.2.1', 6, 40000, 443,
             3, 300, 2, 200, 27, 7200000, 7200001, 'www.example.com', 'dns', 'edge.cdn.example', 'documentation',
             'tls', 'payload', 'encrypted', 'company', 'Example', 'Example', 'example.com', 'Example Maps',
             'Akamai', 0),
         ('0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0', 9223372036854775807, 6, 'fd77::2', '2001:db8::10', 17, 65535, 443,
             9223372036854775807, 9223372036854775807, 9223372036854775807, 9223372036854775807, 0,
             7300000, 9223372036854775807, NULL, NULL, NULL, 'documentation', 'quic', 'payload', 'encrypted',
             'unnamed', NULL, NULL, NULL, NULL, NULL, 0),
         ('boot-b', 0, 4, '10.77.0.3', '198.51.100.7', 1, 0, 0, 1, 84, 1, 84, 0, 8000000, 8000000, NULL, 'local',
             NULL, 'private', 'unknown', 'nothing', 'unknown', 'local', NULL, NULL, NULL, NULL, NULL, 3),
         -- Written before migration 4's labels existed: NULL there too.
         ('boot-b', 5, 4, '10.77.0.3', '192.0.2.1', 6, 40001, 80, 1, 60, 0, 0, 2, 8000001, 8000002, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0);
         INSERT INTO dns_queries (ts, answered, client, client_port, resolver, resolver_port, transport, dns_id,
             qname, qtype, rcode, truncated, cname, min_ttl, source, blocked_by)
         VALUES
         (7100000, 7100004, '10.77.0.2', 5353, '10.77.0.1', 53, 'udp', 4660, 'www.example.com', 'A', 'NOERROR',
             0, 'edge.cdn.example', 60, 0, NULL),
         (7100001, NULL, 'fd77::2', 5354, '2001:db8::53', 53, 'tcp', 65535, 'ads.example', 'AAAA', NULL, 1, NULL,
             NULL, 3, 7);
         INSERT INTO dns_answers (query_id, position, name, type, ttl, data) VALUES
             (1, 0, 'www.example.com', 'CNAME', 300, 'edge.cdn.example'),
             (1, 1, 'edge.cdn.example', 'A', 60, '192.0.2.1'),
             (1, 2, 'edge.cdn.example', 'TXT', 4294967295, '\"v=spf1 -all\"');
         INSERT INTO rollup VALUES (0, 'owner', '', 3600000, 7200000, 'company', 'Example', '', 1, 5, 300, 200);",
    )
    .unwrap();
    p
}

/// `rows` ([`all_rows`]) without the every-device roll-up rows (client ''), which migration 13
/// drops: a writer kept them as the sum of the devices' rows.
fn without_every_device(mut rows: AllRows) -> AllRows {
    for (table, client) in [(3, 2), (4, 1)] {
        rows[table].1.retain(|r| r[client] != Value::Text(String::new()));
    }
    rows
}

#[test]
fn migration_8_keeps_every_row_equal_through_the_views() {
    let p = version_7("compact-migrate");
    let before = all_rows(&p);
    assert_eq!(before[0].1.len(), 4);
    let s = Store::open(&p).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::VERSION);
    drop(s);
    let after = all_rows(&p);
    assert_eq!(after, without_every_device(before), "every row and column, equal through the views");
    let c = Connection::open(&p).unwrap();
    let kinds: Vec<(String, String)> = c
        .prepare(
            "SELECT name, type FROM sqlite_schema WHERE name IN ('flows', 'dns_queries', 'dns_answers') ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        kinds,
        [("dns_answers", "view"), ("dns_queries", "view"), ("flows", "view")].map(|(a, b)| (a.into(), b.into()))
    );
    // The migrated rows are the writer's: the same flow swept again updates its row.
    let n: i64 = c.query_row("SELECT count(*) FROM texts WHERE text = '10.77.0.3'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "each text once");
    drop(c);
    let mut s = Store::open(&p).unwrap();
    let again = FlowRecord {
        kernel_first_ns: 1234567890123,
        client: "10.77.0.2".parse().unwrap(),
        remote: "192.0.2.1".parse().unwrap(),
        protocol: 6,
        client_port: 40000,
        remote_port: 443,
        packets_up: 4,
        bytes_up: 400,
        packets_down: 2,
        bytes_down: 200,
        tcp_flags: 27,
        first_seen_ms: 7200000,
        last_seen_ms: 7200050,
        name: FlowName::default(),
        remote_class: AddrClass::Documentation,
        labels: FlowLabels::unnamed(Classification { protocol: AppProtocol::Tls, decided: Decided::Port }),
    };
    s.upsert_flows("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", &[again]).unwrap();
    let flows = rows(s.conn(), "flows", "id").1;
    assert_eq!(flows.len(), 4);
    let want: Vec<Value> = [Value::Integer(4), Value::Integer(400), Value::Text("www.example.com".into())].into();
    assert_eq!(vec![flows[0][9].clone(), flows[0][10].clone(), flows[0][16].clone()], want, "updated, name kept");
}

#[test]
fn the_writers_values_read_back_exactly_through_the_views() {
    let p = temp_db("compact-roundtrip");
    let mut s = Store::open(&p).unwrap();
    // The largest counters whose sum (the roll-ups' packets) SQLite still holds as an integer.
    let big = i64::MAX as u64 / 2;
    let v6 = FlowRecord {
        kernel_first_ns: i64::MAX as u64,
        client: "fd77::2".parse().unwrap(),
        remote: "2001:db8::10".parse().unwrap(),
        protocol: 17,
        client_port: 65535,
        remote_port: 443,
        packets_up: big,
        bytes_up: big,
        packets_down: big,
        bytes_down: big,
        tcp_flags: 255,
        first_seen_ms: 7_300_000,
        last_seen_ms: i64::MAX,
        name: FlowName::default(),
        remote_class: AddrClass::Documentation,
        labels: FlowLabels::unnamed(Classification { protocol: AppProtocol::Quic, decided: Decided::Payload }),
    };
    let named = FlowRecord {
        kernel_first_ns: 7,
        client: "10.77.0.2".parse().unwrap(),
        remote: "192.0.2.1".parse().unwrap(),
        protocol: 6,
        name: FlowName {
            name: Some("www.example.com".into()),
            source: Some(NameSource::Dns),
            cname: Some("edge.cdn.example".into()),
        },
        ..v6.clone()
    };
    s.upsert_flows("boot-a", &[v6, named]).unwrap();
    let (names, flows) = rows(s.conn(), "flows", "id");
    let t = |s: &str| Value::Text(s.into());
    let i = Value::Integer;
    let max = i(i64::MAX);
    let half = i(i64::MAX / 2);
    assert_eq!(names[..6], ["id", "boot_id", "kernel_first_ns", "family", "client", "remote"]);
    assert_eq!(
        flows[0],
        [
            i(1),
            t("boot-a"),
            max.clone(),
            i(6),
            t("fd77::2"),
            t("2001:db8::10"),
            i(17),
            i(65535),
            i(443),
            half.clone(),
            half.clone(),
            half.clone(),
            half.clone(),
            i(255),
            i(7_300_000),
            max.clone(),
            Value::Null,
            Value::Null,
            Value::Null,
            t("documentation"),
            t("quic"),
            t("payload"),
            t("encrypted"),
            t("unnamed"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            i(0),
        ]
    );
    assert_eq!(
        flows[1][..5].to_vec(),
        [i(2), t("boot-a"), i(7), i(4), t("10.77.0.2")],
        "an IPv4 flow's family and address"
    );
    assert_eq!(
        (flows[1][16].clone(), flows[1][17].clone(), flows[1][18].clone()),
        (t("www.example.com"), t("dns"), t("edge.cdn.example"))
    );

    let answers = vec![
        Answer {
            name: "www.example.com".into(),
            rtype: "CNAME".into(),
            ttl: 300,
            data: AnswerData::Cname("edge.cdn.example".into()),
        },
        Answer {
            name: "edge.cdn.example".into(),
            rtype: "AAAA".into(),
            ttl: u32::MAX,
            data: AnswerData::Addr("2001:db8::10".parse().unwrap()),
        },
    ];
    let q = DnsRecord {
        ts_ms: 7_100_000,
        answered_ms: None,
        client: "fd77::2".parse().unwrap(),
        client_port: 5354,
        resolver: "2001:db8::53".parse().unwrap(),
        resolver_port: 53,
        transport: Transport::Tcp,
        dns_id: 65535,
        qname: "www.example.com".into(),
        qtype: "AAAA".into(),
        rcode: None,
        truncated: true,
        answers,
        blocked_by: Some(7),
    };
    s.insert_dns(&[q]).unwrap();
    let (_, queries) = rows(s.conn(), "dns_queries", "id");
    assert_eq!(
        queries,
        [[
            i(1),
            i(7_100_000),
            Value::Null,
            t("fd77::2"),
            i(5354),
            t("2001:db8::53"),
            i(53),
            t("tcp"),
            i(65535),
            t("www.example.com"),
            t("AAAA"),
            Value::Null,
            i(1),
            t("edge.cdn.example"),
            i(i64::from(u32::MAX)),
            i(0),
            i(7),
        ]]
    );
    let (_, answers) = rows(s.conn(), "dns_answers", "query_id, position");
    assert_eq!(
        answers,
        [
            [i(1), i(0), t("www.example.com"), t("CNAME"), i(300), t("edge.cdn.example")],
            [i(1), i(1), t("edge.cdn.example"), t("AAAA"), i(i64::from(u32::MAX)), t("2001:db8::10")],
        ]
    );
    // Deleting through the database's views reaches the rows (and a query's answers). tracker's
    // own connections see TEMP views of rows and packed days (`packed_view`) instead.
    s.conn().execute_batch("DELETE FROM main.dns_queries; DELETE FROM main.flows WHERE family = 6").unwrap();
    assert_eq!(s.conn().query_row("SELECT count(*) FROM dns_answer_rows", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    assert_eq!(s.flow_count().unwrap(), 1);
}

/// The views are joins the planner sees through: a time range or a name is an index's range.
#[test]
fn the_views_use_the_indexes_for_times_and_names() {
    let s = Store::open(&temp_db("compact-plans")).unwrap();
    let plan = |sql: &str| -> String {
        let mut st = s.conn().prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let lines: Vec<String> = st.query_map([], |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect();
        lines.join("; ")
    };
    for (sql, index) in [
        ("SELECT * FROM flows WHERE last_seen >= 5", "flow_rows_last_seen"),
        // The writer's lookup of a flow's row (migration 11).
        (
            "SELECT id FROM flow_rows INDEXED BY flow_rows_kernel_first_ns WHERE kernel_first_ns = 5 AND boot = 1 AND client = 2 AND remote = 3
                 AND protocol = 6 AND client_port = 7 AND remote_port = 8",
            "flow_rows_kernel_first_ns",
        ),
        (
            "SELECT client, name FROM flows WHERE first_seen >= 5 AND first_seen < 9 AND source = 0",
            "flow_rows_first_seen",
        ),
        ("SELECT first_seen, remote FROM flows WHERE name = 'www.example.com'", "flow_rows_name"),
        ("SELECT * FROM flows WHERE remote = '192.0.2.1'", "flow_rows_remote"),
        ("SELECT qname FROM dns_queries WHERE ts >= 5 AND source = 0", "dns_query_rows_ts"),
        ("SELECT ts FROM dns_queries WHERE qname = 'www.example.com' AND ts >= 5", "dns_query_rows_qname"),
        ("SELECT ts FROM dns_queries WHERE client = '10.77.0.2' AND ts >= 5", "dns_query_rows_client"),
        ("SELECT query_id FROM dns_answers WHERE data = '192.0.2.1'", "dns_answer_rows_data"),
    ] {
        let p = plan(sql);
        assert!(p.contains(index), "{sql}: {p}");
        // The packed half (`packed_view`) is the only scan: of the days a time range can
        // match, or of every packed day for a name or an address.
        let scans: Vec<_> = p.split("; ").filter(|l| l.starts_with("SCAN ")).collect();
        assert!(scans.iter().all(|l| l.contains(" VIRTUAL TABLE INDEX 0:")), "{sql}: {p}");
        if sql.contains("WHERE last_seen") || sql.contains("WHERE first_seen") || sql.contains("WHERE ts") {
            assert!(scans.iter().all(|l| l.contains(" VIRTUAL TABLE INDEX 0:1")), "{sql}: {p}");
        }
    }
}

/// A database of schema 8 with roll-ups as that tracker wrote them (text keys, ms buckets):
/// every dimension, hours and days, an IPv4 and an IPv6 device and all devices, an import's,
/// the largest sums SQLite holds, a group whose flows all moved away (0 connections).
fn version_8(name: &str) -> std::path::PathBuf {
    let p = version_7(name);
    let c = Connection::open(&p).unwrap();
    c.execute_batch(MIGRATIONS[7]).unwrap();
    c.pragma_update(None, "user_version", 8).unwrap();
    c.pragma_update(None, "application_id", schema::APPLICATION_ID).unwrap();
    c.execute_batch(
        "INSERT INTO rollup VALUES
             (0, 'owner', '10.77.0.2', 3600000, 1800000000000 - 1800000000000 % 3600000, 'company', 'Apple', '', 1, 5, 300, 200),
             (0, 'owner', '10.77.0.2', 86400000, 1800000000000 - 1800000000000 % 86400000, 'company', 'Apple', '', 1, 5, 300, 200),
             (0, 'owner', '', 3600000, 1800000000000 - 1800000000000 % 3600000, 'company', 'Apple', '', 2, 6, 301, 200),
             (0, 'owner', '', 86400000, 1800000000000 - 1800000000000 % 86400000, 'company', 'Apple', '', 2, 6, 301, 200),
             (0, 'owner', 'fd77::2', 3600000, 1800000000000 - 1800000000000 % 3600000, 'unnamed', '', '', 0, 0, 0, 0),
             (0, 'service', 'fd77::2', 86400000, 0, 'Example Maps', '', '', 3, 4611686018427387903, 4611686018427387903, 4611686018427387903),
             (0, 'served_by', '', 86400000, 0, 'Akamai', '', '', 1, 1, 1, 1),
             (0, 'protocol', '10.77.0.2', 3600000, 1800000000000 - 1800000000000 % 3600000, '6', 'tls', 'encrypted', 1, 5, 300, 200),
             (3, 'protocol', '', 86400000, 86400000, '17', 'quic', 'encrypted', 9, 90, 900, 9000);
         INSERT INTO dns_rollup VALUES
             (0, '10.77.0.2', 3600000, 7200000, 'www.example.com', 3, 7200001, 10799999, 1),
             (0, '', 86400000, 0, 'www.example.com', 4, 7100000, 10799999, 3),
             (0, 'fd77::2', 86400000, 0, 'ads.example', 1, 86399999, 86399999, 2),
             (3, '', 3600000, 1800000000000 - 1800000000000 % 3600000, 'ads.example', 7, 1800000000000, 1800000000001, 9223372036854775807);
         INSERT INTO client_bits VALUES ('10.77.0.2', 0), ('fd77::2', 1);",
    )
    .unwrap();
    p
}

#[test]
fn migration_9_keeps_every_roll_up_row_equal_through_the_views() {
    let p = version_8("compact-rollups-migrate");
    let before = all_rows(&p);
    assert_eq!((before[3].1.len(), before[4].1.len()), (10, 4), "the version-7 row and this fixture's");
    let mut s = Store::open(&p).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::VERSION);
    assert_eq!(all_rows(&p), without_every_device(before), "every row and column, equal through the views");
    let kinds: Vec<(String, String)> = s
        .conn()
        .prepare("SELECT name, type FROM sqlite_schema WHERE name LIKE '%rollup%' AND type != 'index' ORDER BY 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // (and version 10's packed days beside them, empty until a prune packs a closed day)
    let want = [
        ("dns_rollup", "view"),
        ("dns_rollup_packed", "table"),
        ("dns_rollup_rows", "table"),
        ("rollup", "view"),
        ("rollup_packed", "table"),
        ("rollup_rows", "table"),
    ];
    assert_eq!(kinds, want.map(|(a, b)| (a.into(), b.into())));
    // The keys are ids, '' is 0: the phone's Apple hour is 0 for k3.
    let compact: (i64, String, i64, i64) = s
        .conn()
        .query_row(
            "SELECT dim, t.text, hours, k3 FROM rollup_rows JOIN texts t ON t.id = client
             WHERE connections = 1 AND hours = 1 AND dim = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(compact, (0, "10.77.0.2".to_owned(), 1, 0));

    // The writer goes on from the migrated rows: a flow of the phone in that hour, named by
    // Apple's name, joins the migrated groups rather than starting new ones.
    // The fixture's hour (1,800,000,000,000 is a whole hour).
    let hour = 1_800_000_000_000;
    let flow = super::tests::labelled_flow(77, "10.77.0.2", hour + 5, Some("www.apple.com"), AppProtocol::Tls, 10);
    s.upsert_flows("boot-c", &[flow]).unwrap();
    let apple: Vec<(String, i64, i64)> = s
        .conn()
        .prepare(&format!(
            "SELECT client, span, connections FROM rollup WHERE dim = 'owner' AND k2 = 'Apple' AND bucket >= {}
                 ORDER BY 1, 2",
            hour - hour % 86_400_000
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want = [("10.77.0.2", 3_600_000, 2), ("10.77.0.2", 86_400_000, 2)];
    assert_eq!(apple, want.map(|(c, s, n)| (c.to_owned(), s, n)));
    s.insert_dns(&[super::dns::tests::record(7_200_000, "10.77.0.2", "www.example.com", vec![])]).unwrap();
    let hour_row: (i64, i64, i64) = s
        .conn()
        .query_row(
            "SELECT queries, first_ts, last_ts FROM dns_rollup WHERE client = '10.77.0.2' AND span = 3600000
                 AND qname = 'www.example.com'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(hour_row, (4, 7_200_000, 10_799_999), "the migrated bucket, its first query now earlier");
}

/// The report's roll-up reads are ranges of the compact tables' keys, not scans, for a device
/// and for every device (each device named: [`super::rollup::Period::client_ids`]).
#[test]
fn the_roll_up_reads_are_key_ranges() {
    use super::rollup::{CLIENT_IN, Of, Period};
    let mut s = Store::open(&temp_db("compact-rollup-plans")).unwrap();
    let at = 1_800_000_000_000;
    let phone = "10.77.0.2";
    s.upsert_flows("boot", &[super::tests::labelled_flow(1, phone, at, None, AppProtocol::Tls, 10)]).unwrap();
    s.insert_dns(&[super::dns::tests::record(at, phone, "www.example.com", vec![])]).unwrap();
    let period = Period::read(s.conn(), 0, at - 1).unwrap();
    let devices = [phone.to_owned()];
    for (of, filter) in [(Of::Flows, format!("dim = 3 AND {CLIENT_IN}")), (Of::Dns, CLIENT_IN.to_owned())] {
        for clients in [None, Some(&devices[..])] {
            let ids = period.client_ids(s.conn(), of, clients).unwrap();
            assert_eq!(ids.matches(',').count(), 0, "one device: {ids}");
            let sql = format!("EXPLAIN QUERY PLAN SELECT count(*) FROM {}", period.rows(of, &filter));
            let mut st = s.conn().prepare(&sql).unwrap();
            let p: Vec<String> = st
                .query_map(
                    rusqlite::named_params! {
                        ":clients": ids, ":days": period.day_rows_from(), ":hours": period.hour_rows_from(of),
                    },
                    |r| r.get::<_, String>(3),
                )
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let p = p.join("; ");
            let table = of.table();
            assert!(
                p.contains("client=?") && p.contains("start_hour>?") && !p.contains(&format!("SCAN {table}")),
                "{p}"
            );
        }
    }
}
