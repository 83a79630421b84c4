//! SQLite storage: opening (WAL, migrations, clear errors for locked or newer databases), writing
//! swept flows and block counters, and the queries behind the CLI.

pub mod blocks;
pub mod dns;
pub mod schema;

pub use blocks::{BlockCounters, BlockRow};
pub use dns::{DnsQuery, DnsRecord, DomainQuery, Grouping};

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, ErrorCode, params};
use serde::Serialize;

use crate::{
    analysis::{addr::AddrClass, names::FlowName},
    timefmt,
};

/// Default database location: beside other daemons' state on the VPN host.
pub const DEFAULT_DB: &str = "/var/lib/tracker/tracker.db";
/// How long a writer waits for another before reporting the database as locked.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// One kernel flow entry, converted for storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub kernel_first_ns: u64,
    pub client: IpAddr,
    pub remote: IpAddr,
    pub protocol: u8,
    pub client_port: u16,
    pub remote_port: u16,
    pub packets_up: u64,
    pub bytes_up: u64,
    pub packets_down: u64,
    pub bytes_down: u64,
    pub tcp_flags: u8,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// What the client called the remote host, as far as known at this sweep.
    pub name: FlowName,
    pub remote_class: AddrClass,
}

/// A flow as the CLI shows it; the field names are the JSON interface.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FlowRow {
    pub client: String,
    pub remote: String,
    pub protocol: String,
    pub client_port: u16,
    pub remote_port: u16,
    pub packets_up: u64,
    pub bytes_up: u64,
    pub packets_down: u64,
    pub bytes_down: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub name: Option<String>,
    pub name_source: Option<String>,
    pub cname: Option<String>,
    pub remote_class: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct FlowQuery {
    /// Flows active at or after this unix-ms time.
    pub since_ms: Option<i64>,
    pub limit: Option<u32>,
}


/// Name of a protocol number as the CLI prints it.
pub fn protocol_name(p: u8) -> String {
    match p {
        tracker_common::IPPROTO_TCP => "tcp".into(),
        tracker_common::IPPROTO_UDP => "udp".into(),
        tracker_common::IPPROTO_ICMP => "icmp".into(),
        tracker_common::IPPROTO_ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
    }
}

impl Store {
    /// Opens (creating it and its folder if needed) and migrates the database.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the database folder {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the database {}", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mut store = Self { conn, path: path.to_owned() };
        store.pragma_setup()?;
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn pragma_setup(&self) -> Result<()> {
        // WAL lets the CLI read while the daemon writes; NORMAL sync is durable at checkpoints
        // and loses at most the last sweep on power loss, which the next sweep rewrites anyway.
        // Two processes opening a new database at once (the daemon creating it, a `tracker
        // status` polling for it) may both try to switch it to WAL; SQLite then answers BUSY at
        // once, without the busy handler, to break the deadlock. Try again until the timeout.
        let started = std::time::Instant::now();
        let mode: String = loop {
            match self.conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(e)
                    if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
                        && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.map_err(|e| self.explain(e))?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "database is not in WAL mode; readers may wait for the daemon");
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    /// Turns SQLite's terse errors into ones that say what to do.
    fn explain(&self, e: rusqlite::Error) -> anyhow::Error {
        let path = self.path.display();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => anyhow::anyhow!(
                "the database {path} is locked by another process (waited {}s); \
                 is another tracker writing to it?",
                BUSY_TIMEOUT.as_secs()
            ),
            Some(ErrorCode::NotADatabase) => {
                anyhow::anyhow!("{path} is not a tracker database (not SQLite)")
            }
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                anyhow::anyhow!("cannot write {path}: {e} (tracker's database is root's; try sudo)")
            }
            _ => anyhow::Error::new(e).context(format!("database {path}")),
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let version: u32 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > schema::VERSION {
            bail!(
                "the database {} has schema version {version}, newer than this tracker knows \
                 ({}); it was written by a newer tracker: upgrade tracker, or use another --db",
                self.path.display(),
                schema::VERSION
            );
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = i + 1;
            // IMMEDIATE takes the write lock first; another process (the CLI racing the daemon's
            // first start) may have migrated meanwhile, so the version is read again under it.
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| explain_path(&self.path, e))?;
            let now: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now >= to as u32 {
                continue;
            }
            tx.execute_batch(sql).with_context(|| format!("applying schema migration {to}"))?;
            tx.pragma_update(None, "user_version", to)?;
            tx.commit().map_err(|e| explain_path(&self.path, e))?;
            if version > 0 {
                tracing::info!(from = i, to, "migrated database schema");
            }
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<u32> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Writes swept flows in one transaction. Counters are cumulative per kernel entry, so a row
    /// is set, never added to: sweeping the same entry twice, or again after a daemon restart,
    /// stores the same numbers.
    pub fn upsert_flows(&mut self, boot_id: &str, flows: &[FlowRecord]) -> Result<()> {
        let tx = self.conn.transaction().map_err(|e| explain_path(&self.path, e))?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO flows (boot_id, kernel_first_ns, family, client, remote, protocol,
                     client_port, remote_port, packets_up, bytes_up, packets_down, bytes_down,
                     tcp_flags, first_seen, last_seen, name, name_source, cname, remote_class)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19)
                 ON CONFLICT (boot_id, kernel_first_ns, family, client, remote, protocol,
                     client_port, remote_port)
                 DO UPDATE SET packets_up = excluded.packets_up, bytes_up = excluded.bytes_up,
                     packets_down = excluded.packets_down, bytes_down = excluded.bytes_down,
                     tcp_flags = excluded.tcp_flags, last_seen = excluded.last_seen,
                     -- A restarted daemon may not know a name an earlier one found: keep it.
                     -- The three name columns change together, or not at all.
                     name = CASE WHEN excluded.name_source IS NULL THEN flows.name
                                 ELSE excluded.name END,
                     name_source = COALESCE(excluded.name_source, flows.name_source),
                     cname = CASE WHEN excluded.name_source IS NULL THEN flows.cname
                                  ELSE excluded.cname END,
                     remote_class = excluded.remote_class",
            )?;
            for f in flows {
                let FlowRecord {
                    kernel_first_ns,
                    client,
                    remote,
                    protocol,
                    client_port,
                    remote_port,
                    packets_up,
                    bytes_up,
                    packets_down,
                    bytes_down,
                    tcp_flags,
                    first_seen_ms,
                    last_seen_ms,
                    name: FlowName { name, source, cname },
                    remote_class,
                } = f;
                stmt.execute(params![
                    boot_id,
                    *kernel_first_ns as i64,
                    if client.is_ipv4() { 4 } else { 6 },
                    client.to_string(),
                    remote.to_string(),
                    protocol,
                    client_port,
                    remote_port,
                    *packets_up as i64,
                    *bytes_up as i64,
                    *packets_down as i64,
                    *bytes_down as i64,
                    tcp_flags,
                    first_seen_ms,
                    last_seen_ms,
                    name,
                    source.map(|s| s.as_str()),
                    cname,
                    remote_class.as_str(),
                ])?;
            }
        }
        tx.commit().map_err(|e| explain_path(&self.path, e))
    }

    /// Flows, biggest (bytes both ways) first.
    pub fn flows(&self, q: &FlowQuery) -> Result<Vec<FlowRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT client, remote, protocol, client_port, remote_port, packets_up, bytes_up,
                    packets_down, bytes_down, first_seen, last_seen, name, name_source, cname,
                    remote_class
             FROM flows WHERE last_seen >= ?1
             ORDER BY bytes_up + bytes_down DESC, first_seen ASC LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![q.since_ms.unwrap_or(i64::MIN), q.limit.map_or(-1, i64::from)],
            |r| {
                Ok(FlowRow {
                    client: r.get(0)?,
                    remote: r.get(1)?,
                    protocol: protocol_name(r.get(2)?),
                    client_port: r.get(3)?,
                    remote_port: r.get(4)?,
                    packets_up: r.get::<_, i64>(5)? as u64,
                    bytes_up: r.get::<_, i64>(6)? as u64,
                    packets_down: r.get::<_, i64>(7)? as u64,
                    bytes_down: r.get::<_, i64>(8)? as u64,
                    first_seen: timefmt::rfc3339(r.get(9)?),
                    last_seen: timefmt::rfc3339(r.get(10)?),
                    name: r.get(11)?,
                    name_source: r.get(12)?,
                    cname: r.get(13)?,
                    remote_class: r.get(14)?,
                })
            },
        )?;
        rows.collect::<rusqlite::Result<_>>().context("reading flows")
    }


    pub fn set_daemon_facts(&mut self, facts: &[(&str, String)]) -> Result<()> {
        let tx = self.conn.transaction().map_err(|e| explain_path(&self.path, e))?;
        tx.execute("DELETE FROM daemon", [])?;
        for (k, v) in facts {
            tx.execute("INSERT INTO daemon (key, value) VALUES (?1, ?2)", params![k, v])?;
        }
        tx.commit().map_err(|e| explain_path(&self.path, e))
    }

    /// Sets some facts, leaving the others.
    pub fn update_daemon_facts(&mut self, facts: &[(&str, String)]) -> Result<()> {
        let tx = self.conn.transaction().map_err(|e| explain_path(&self.path, e))?;
        for (k, v) in facts {
            tx.execute(
                "INSERT INTO daemon (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
        }
        tx.commit().map_err(|e| explain_path(&self.path, e))
    }

    pub fn daemon_facts(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached("SELECT key, value FROM daemon ORDER BY key")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>().context("reading daemon facts")
    }

    pub fn flow_count(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT count(*) FROM flows", [], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn block_count(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT count(*) FROM block_rules", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

fn explain_path(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => anyhow::anyhow!(
            "the database {} is locked by another process; is another tracker writing to it?",
            path.display()
        ),
        _ => anyhow::Error::new(e).context(format!("database {}", path.display())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::names::NameSource;

    pub(crate) fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracker-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("t.db")
    }

    fn flow(first_ns: u64, packets_up: u64, last_seen_ms: i64) -> FlowRecord {
        FlowRecord {
            kernel_first_ns: first_ns,
            client: "10.77.0.2".parse().unwrap(),
            remote: "203.0.113.10".parse().unwrap(),
            protocol: tracker_common::IPPROTO_TCP,
            client_port: 40000,
            remote_port: 80,
            packets_up,
            bytes_up: packets_up * 100,
            packets_down: 1,
            bytes_down: 60,
            tcp_flags: 0x12,
            first_seen_ms: 1_000,
            last_seen_ms,
            name: FlowName::default(),
            remote_class: AddrClass::Documentation,
        }
    }

    #[test]
    fn migrations_create_schema_and_reopen_is_noop() {
        let p = temp_db("migrate");
        let s = Store::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::VERSION);
        drop(s);
        let s = Store::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::VERSION);
        let mode: String = s.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    /// The daemon creating the database while `tracker status` polls for it: both open (and
    /// migrate) the same new file at once, and both must succeed.
    #[test]
    fn concurrent_first_opens_both_succeed() {
        for i in 0..20 {
            let p = temp_db(&format!("race-{i}"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            // An empty file, as the daemon's Connection::open leaves it a moment before WAL.
            std::fs::write(&p, b"").unwrap();
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                let opens: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            Store::open(&p).map(|s| s.schema_version().unwrap())
                        })
                    })
                    .collect();
                for o in opens {
                    assert_eq!(o.join().unwrap().unwrap(), schema::VERSION, "round {i}");
                }
            });
        }
    }

    #[test]
    fn newer_schema_is_refused_and_left_alone() {
        let p = temp_db("newer");
        drop(Store::open(&p).unwrap());
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", schema::VERSION + 1).unwrap();
        drop(c);
        let err = Store::open(&p).err().unwrap().to_string();
        assert!(err.contains("newer"), "{err}");
        let c = Connection::open(&p).unwrap();
        let v: u32 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, schema::VERSION + 1);
    }

    #[test]
    fn not_a_database_is_explained() {
        let p = temp_db("garbage");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![0x42u8; 4096]).unwrap();
        let err = format!("{:#}", Store::open(&p).err().unwrap());
        assert!(err.contains("not a tracker database"), "{err}");
    }

    #[test]
    fn locked_database_is_explained() {
        let p = temp_db("locked");
        drop(Store::open(&p).unwrap());
        let holder = Connection::open(&p).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let mut s = Store { conn: Connection::open(&p).unwrap(), path: p.clone() };
        s.conn.busy_timeout(Duration::from_millis(50)).unwrap();
        let err = s.add_block("ip", "192.0.2.1/32", None).err().unwrap().to_string();
        assert!(err.contains("locked"), "{err}");
    }

    #[test]
    fn sweeping_the_same_entry_twice_does_not_double_count() {
        let p = temp_db("sweep");
        let mut s = Store::open(&p).unwrap();
        s.upsert_flows("boot-a", &[flow(5, 3, 2_000)]).unwrap();
        s.upsert_flows("boot-a", &[flow(5, 3, 2_000)]).unwrap();
        s.upsert_flows("boot-a", &[flow(5, 7, 3_000)]).unwrap();
        let rows = s.flows(&FlowQuery::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].packets_up, 7);
        assert_eq!(rows[0].bytes_up, 700);
        assert_eq!(rows[0].last_seen, timefmt::rfc3339(3_000));
        // The same 5-tuple in a new kernel entry (evicted and recreated, or after a reboot) is a
        // new connection.
        s.upsert_flows("boot-a", &[flow(9, 1, 4_000)]).unwrap();
        s.upsert_flows("boot-b", &[flow(5, 1, 5_000)]).unwrap();
        assert_eq!(s.flow_count().unwrap(), 3);
    }

    #[test]
    fn a_known_name_is_kept_when_a_later_sweep_does_not_know_it() {
        let mut s = Store::open(&temp_db("names")).unwrap();
        let named = FlowRecord {
            name: FlowName {
                name: Some("www.example.com".into()),
                source: Some(NameSource::Dns),
                cname: Some("edge.cdn.example".into()),
            },
            ..flow(5, 3, 2_000)
        };
        s.upsert_flows("b", &[named]).unwrap();
        s.upsert_flows("b", &[flow(5, 4, 3_000)]).unwrap();
        let rows = s.flows(&FlowQuery::default()).unwrap();
        assert_eq!(rows[0].packets_up, 4);
        assert_eq!(rows[0].name.as_deref(), Some("www.example.com"));
        assert_eq!(rows[0].name_source.as_deref(), Some("dns"));
        assert_eq!(rows[0].cname.as_deref(), Some("edge.cdn.example"));
        assert_eq!(rows[0].remote_class.as_deref(), Some("documentation"));
        let renamed = FlowRecord {
            name: FlowName { name: Some("other.example".into()), source: Some(NameSource::Sni), cname: None },
            ..flow(5, 5, 4_000)
        };
        s.upsert_flows("b", &[renamed]).unwrap();
        let rows = s.flows(&FlowQuery::default()).unwrap();
        assert_eq!(rows[0].name.as_deref(), Some("other.example"));
        assert_eq!(rows[0].cname, None);
        // Now local (a restart with another --local-net): no name left beside 'local'.
        let local = FlowRecord {
            name: FlowName { name: None, source: Some(NameSource::Local), cname: None },
            ..flow(5, 6, 5_000)
        };
        s.upsert_flows("b", &[local]).unwrap();
        let rows = s.flows(&FlowQuery::default()).unwrap();
        assert_eq!((rows[0].name.as_deref(), rows[0].name_source.as_deref()), (None, Some("local")));
    }

    #[test]
    fn flows_are_biggest_first_filtered_and_limited() {
        let p = temp_db("query");
        let mut s = Store::open(&p).unwrap();
        s.upsert_flows("b", &[flow(1, 1, 1_000), flow(2, 50, 9_000), flow(3, 10, 9_500)]).unwrap();
        let all = s.flows(&FlowQuery::default()).unwrap();
        let ups: Vec<u64> = all.iter().map(|r| r.packets_up).collect();
        assert_eq!(ups, [50, 10, 1]);
        let recent = s.flows(&FlowQuery { since_ms: Some(5_000), limit: None }).unwrap();
        assert_eq!(recent.len(), 2);
        let one = s.flows(&FlowQuery { since_ms: None, limit: Some(1) }).unwrap();
        assert_eq!(one[0].packets_up, 50);
        assert_eq!(one[0].protocol, "tcp");
    }

    #[test]
    fn block_rules_add_remove_and_carry_counts_across_kernel_instances() {
        let p = temp_db("blocks");
        let mut s = Store::open(&p).unwrap();
        let id = s.add_block("ip", "198.51.100.0/24", Some("ad network")).unwrap().unwrap();
        assert_eq!(s.add_block("ip", "198.51.100.0/24", None).unwrap(), None);
        s.set_block_kernel_count(id, 5, Some(7_000)).unwrap();
        // A reboot: the kernel entry starts again at zero; the five drops are kept.
        s.fold_block_kernel_count(id).unwrap();
        s.set_block_kernel_count(id, 2, None).unwrap();
        let rows = s.blocks(&|_| None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].packets_dropped, 7);
        assert_eq!(rows[0].comment.as_deref(), Some("ad network"));
        assert_eq!(rows[0].last_hit, Some(timefmt::rfc3339(7_000)));
        // Live kernel counts replace the stored kernel count, never add to it.
        let rows = s.blocks(&|i| (i == id).then_some((4, Some(8_000)))).unwrap();
        assert_eq!(rows[0].packets_dropped, 9);
        assert_eq!(s.remove_block("ip", "198.51.100.0/24").unwrap(), Some(id));
        assert_eq!(s.remove_block("ip", "198.51.100.0/24").unwrap(), None);
        assert!(s.blocks(&|_| None).unwrap().is_empty());
    }
}
