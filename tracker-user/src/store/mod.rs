//! SQLite storage: opening (a writer that creates, migrates and uses WAL; a read-only reader;
//! clear errors for locked, foreign, read-only, full or newer databases), writing swept flows
//! and block counters, and the queries behind the CLI.

pub mod blocks;
pub mod devices;
pub mod dns;
pub mod facts;
pub mod packed;
pub mod packed_dns;
pub mod packed_flows;
mod packed_view;
pub mod retention;
pub mod rollup;
pub mod schema;
#[cfg(test)]
mod schema_tests;
pub mod sources;
mod texts;

pub use blocks::{BlockCounters, BlockRow};
pub use dns::{DnsQuery, DnsRecord, DomainQuery, Grouping};

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension as _, params};
use serde::Serialize;

use self::facts::DaemonFacts;

use crate::{
    analysis::{addr::AddrClass, labels::FlowLabels, names::FlowName},
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
    /// Its protocol, owner and service, from the name and the first payloads.
    pub labels: FlowLabels,
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
    pub app_protocol: Option<String>,
    pub app_decided: Option<String>,
    pub encrypted: Option<String>,
    pub company: Option<String>,
    pub site: Option<String>,
    pub service: Option<String>,
    pub served_by: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct FlowQuery {
    /// Flows active at or after this unix-ms time.
    pub since_ms: Option<i64>,
    pub limit: Option<u32>,
    /// Only these client addresses (a device's); `None` for all.
    pub clients: Option<Vec<String>>,
    /// `sources.id`: the live interface (0, the default) or an import.
    pub source: i64,
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

/// Who opens the database: the daemon and block commands write (and create, migrate), every
/// listing only reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Write,
    Read,
}

impl Store {
    /// Opens the database for writing, as the daemon and the block commands do: creates it (its
    /// folder with mode 0700, the file with 0600) if missing, tightens an existing file's mode to
    /// 0600, switches it to WAL and migrates it. A SQLite file that is not tracker's is refused
    /// before anything is written.
    pub fn open(path: &Path) -> Result<Self> {
        refuse_directory(path)?;
        no_memory_statistics();
        let created = create_private(path)?;
        let conn = Connection::open(path).map_err(|e| explain(path, e, Access::Write))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mut store = Self { conn, path: path.to_owned() };
        store.check_owner(Access::Write)?;
        if created {
            // Only before the first table: pruning then hands freed pages back to the file
            // system (`retention`); an older database reuses them instead.
            store.conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        } else {
            tighten_mode(path);
        }
        store.pragma_setup()?;
        store.migrate()?;
        store.install_packed_views()?;
        Ok(store)
    }

    /// Opens an existing database read-only (SQLITE_OPEN_READ_ONLY), for the listings and
    /// `tracker status`: never creates, migrates or changes the journal mode, so it works on a
    /// read-only filesystem, and beside a running daemon (WAL). Refuses a database that is not
    /// tracker's, one newer than this build and one older (a writer migrates it).
    pub fn open_reader(path: &Path) -> Result<Self> {
        refuse_directory(path)?;
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no database at {} yet: start the daemon with `tracker run`, or pass --db", path.display())
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot read {}{}", path.display(), sudo_hint())));
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| explain(path, e, Access::Read))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mut store = Self { conn, path: path.to_owned() };
        if let Err(e) = store.check_owner(Access::Read) {
            // A WAL database on a read-only filesystem whose -shm is gone (the last writer
            // removed it) cannot be opened the usual way: nobody can change the file there, so
            // it is read as immutable.
            let cannot_open = e.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code)
                == Some(ErrorCode::CannotOpen);
            if !(cannot_open && on_readonly_fs(path)) {
                return Err(e);
            }
            let uri = format!("file:{}?immutable=1", uri_path(path));
            let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .map_err(|e| explain(path, e, Access::Read))?;
            store = Self { conn, path: path.to_owned() };
            store.check_owner(Access::Read)?;
        }
        let version = store.schema_version()?;
        if version > schema::VERSION {
            bail!("{}", newer_message(path, version));
        }
        if version == 0 {
            bail!("the database {} is empty: start the daemon with `tracker run`, or pass --db", path.display());
        }
        if version < schema::VERSION {
            bail!(
                "the database {} has schema version {version}, older than this tracker's ({}): \
                 a writer migrates it; start the daemon (`tracker run`) once and try again",
                path.display(),
                schema::VERSION
            );
        }
        store.install_packed_views()?;
        Ok(store)
    }

    /// Makes the connection's views of rows and packed days (`packed_view`).
    fn install_packed_views(&self) -> Result<()> {
        packed_view::install::<packed_flows::Flows>(&self.conn)?;
        packed_view::install::<packed_dns::Queries>(&self.conn)?;
        packed_view::install::<packed_dns::Answers>(&self.conn)
    }

    /// The connection, for the query layer's read-only SQL.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This database's identity: 32 hex characters written once by migration 3 (`meta`), the
    /// same for readers and writers, kept by copies of the file.
    pub fn db_id(&self) -> Result<String> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [schema::META_DB_ID], |r| r.get(0))
            .optional()
            .map_err(|e| self.explain(e))?
            .with_context(|| format!("the database {} has no db_id in its meta table", self.path.display()))
    }

    /// Refuses another program's SQLite database before anything touches it (see
    /// [`schema::APPLICATION_ID`]). An empty file or a database without tables is free to use.
    fn check_owner(&self, access: Access) -> Result<()> {
        let read = || -> rusqlite::Result<(i32, u32, Vec<String>)> {
            // One read transaction, so all three reads see one snapshot: another process may
            // be migrating a new database this instant, and tables committed after a separate
            // read of user_version 0 would look like another program's.
            let tx = self.conn.unchecked_transaction()?;
            let app: i32 = self.conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
            let version: u32 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            let mut stmt = self.conn.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, 7) != 'sqlite_'
                 ORDER BY name",
            )?;
            let tables = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            tx.commit()?;
            Ok((app, version, tables))
        };
        let (app, version, tables) = read().map_err(|e| explain(&self.path, e, access))?;
        if let Some(why) = foreign(app, version, &tables) {
            bail!(
                "{} is another program's SQLite database ({why}): tracker leaves it alone; pass \
                 another --db",
                self.path.display()
            );
        }
        Ok(())
    }

    fn pragma_setup(&self) -> Result<()> {
        // WAL lets the CLI read while the daemon writes; NORMAL sync is durable at checkpoints
        // and loses at most the last sweep on power loss, which the next sweep rewrites anyway.
        // Two processes opening a new database at once (the daemon creating it, a block command
        // at the same moment) may both try to switch it to WAL; SQLite then answers BUSY at
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
        // The WAL file keeps the size of the biggest write since it was made (a migration, a
        // prune packing a month of days on its first run) unless told otherwise: cut back to
        // this when a checkpoint lets it start over.
        self.conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        Ok(())
    }

    /// Turns SQLite's terse errors into ones that say what to do.
    fn explain(&self, e: rusqlite::Error) -> anyhow::Error {
        explain(&self.path, e, Access::Write)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: u32 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > schema::VERSION {
            bail!("{}", newer_message(&self.path, version));
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
            tx.execute_batch(sql)
                .map_err(|e| explain_path(&self.path, e))
                .with_context(|| format!("applying schema migration {to}"))?;
            if to == 3 {
                tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![schema::META_DB_ID, random_id()?])?;
            }
            // The roll-ups of a database older than them are filled once they have the shape
            // `rebuild` writes (migration 9's compact rows): when they are still empty but rows
            // exist.
            if to == schema::ROLLUPS_FINAL && rollup::is_unfilled(&tx)? {
                rollup::rebuild(&tx).context("filling the report roll-ups from the stored flows")?;
            }
            tx.pragma_update(None, "application_id", schema::APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", to)?;
            tx.commit().map_err(|e| explain_path(&self.path, e))?;
            // A migration that rewrites a table (9, 11) writes it whole into the WAL: copied
            // back now, the WAL's disk space is free again before the next one.
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(|e| explain_path(&self.path, e))?;
            if version > 0 {
                tracing::info!(from = i, to, "migrated database schema");
            }
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<u32> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Flows, biggest (bytes both ways) first.
    pub fn flows(&self, q: &FlowQuery) -> Result<Vec<FlowRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT client, remote, protocol, client_port, remote_port, packets_up, bytes_up,
                    packets_down, bytes_down, first_seen, last_seen, name, name_source, cname,
                    remote_class, app_protocol, app_decided, encrypted, company, site, service,
                    served_by
             FROM flows WHERE last_seen >= ?1 AND (?3 IS NULL OR client IN (SELECT value FROM json_each(?3)))
                 AND source = ?4
             ORDER BY bytes_up + bytes_down DESC, first_seen ASC LIMIT ?2",
        )?;
        let clients = clients_json(q.clients.as_deref());
        let rows = stmt.query_map(
            params![q.since_ms.unwrap_or(i64::MIN), q.limit.map_or(-1, i64::from), clients, q.source],
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
                    app_protocol: r.get(15)?,
                    app_decided: r.get(16)?,
                    encrypted: r.get(17)?,
                    company: r.get(18)?,
                    site: r.get(19)?,
                    service: r.get(20)?,
                    served_by: r.get(21)?,
                })
            },
        )?;
        rows.collect::<rusqlite::Result<_>>().context("reading flows")
    }

    /// How many flows [`Store::flows`] would list for `q` without its limit.
    pub fn flows_total(&self, q: &FlowQuery) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM flows
             WHERE last_seen >= ?1 AND (?2 IS NULL OR client IN (SELECT value FROM json_each(?2))) AND source = ?3",
            params![q.since_ms.unwrap_or(i64::MIN), clients_json(q.clients.as_deref()), q.source],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    pub fn set_daemon_facts(&mut self, facts: &DaemonFacts) -> Result<()> {
        let tx = self.conn.transaction().map_err(|e| explain_path(&self.path, e))?;
        tx.execute("DELETE FROM daemon", [])?;
        for (k, v) in facts.rows() {
            tx.execute("INSERT INTO daemon (key, value) VALUES (?1, ?2)", params![k, v])?;
        }
        tx.commit().map_err(|e| explain_path(&self.path, e))
    }

    /// Writes swept flows in one transaction (see [`Writer::upsert_flows`]).
    pub fn upsert_flows(&mut self, boot_id: &str, flows: &[FlowRecord]) -> Result<()> {
        self.write(|w| w.upsert_flows(boot_id, flows))
    }

    /// Runs `f` in one write transaction: all of its writes are kept, or (on an error) none.
    pub fn write<T>(&mut self, f: impl FnOnce(&Writer<'_>) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction().map_err(|e| explain_path(&self.path, e))?;
        let out = f(&Writer { conn: &tx, path: &self.path, rollups: true, source: schema::LIVE_SOURCE })?;
        tx.commit().map_err(|e| explain_path(&self.path, e))?;
        Ok(out)
    }

    pub fn daemon_facts(&self) -> Result<DaemonFacts> {
        let mut stmt = self.conn.prepare_cached("SELECT key, value FROM daemon")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(DaemonFacts::from_rows(rows.collect::<rusqlite::Result<Vec<_>>>().context("reading daemon facts")?))
    }

    /// One snapshot for several reads: a report's row and packed-day reads must see the same
    /// database, or a prune packing a day between them (its own connection, another thread or
    /// process) makes the day counted twice. A deferred read transaction in WAL mode reads one
    /// snapshot until it ends (dropped: rolled back, nothing was written). `None` inside a
    /// transaction already open, whose snapshot is the same.
    pub fn snapshot(&self) -> Result<Option<rusqlite::Transaction<'_>>> {
        if !self.conn.is_autocommit() {
            return Ok(None);
        }
        Ok(Some(self.conn.unchecked_transaction().map_err(|e| explain_path(&self.path, e))?))
    }

    pub fn flow_count(&self) -> Result<u64> {
        // Rows and packed days counted apart (through the view, every packed day is unpacked),
        // in one snapshot, so a prune packing between the two counts nothing twice.
        let _snapshot = self.snapshot()?;
        packed_flows::total(&self.conn)
    }

    /// Active block rules.
    pub fn block_count(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            &format!("SELECT count(*) FROM block_rules WHERE {}", blocks::ACTIVE),
            [timefmt::now_ms()],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}

/// The writes of one transaction ([`Store::write`]).
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    conn: &'a rusqlite::Connection,
    path: &'a Path,
    /// Whether writes keep the report roll-ups ([`rollup`]): always, but for the benchmark
    /// that measures what keeping them costs ([`Writer::without_rollups`]).
    rollups: bool,
    /// The `sources.id` of the rows it writes ([`Writer::for_source`]).
    source: i64,
}

impl Writer<'_> {
    /// The same writes without the roll-ups, for a writer that makes them afterwards
    /// ([`Writer::rebuild_rollups`]: an import) and for measuring what they cost (`cargo xtask
    /// bench report`). Reports read the roll-ups: until they are made, they miss these rows.
    pub fn without_rollups(&self) -> Self {
        Self { rollups: false, ..*self }
    }

    /// Makes `source`'s roll-ups again from its rows.
    pub fn rebuild_rollups(&self, source: i64) -> Result<()> {
        rollup::rebuild_source(self.conn, source)
    }

    /// The same writes, of rows from `source` (`sources.id`) rather than the live interface.
    pub fn for_source(&self, source: i64) -> Self {
        Self { source, ..*self }
    }

    /// Writes swept flows in one transaction. Counters are cumulative per kernel entry, so a row
    /// is set, never added to: sweeping the same entry twice, or again after a daemon restart,
    /// stores the same numbers.
    pub fn upsert_flows(&self, boot_id: &str, flows: &[FlowRecord]) -> Result<()> {
        let conn = self.conn;
        let explain = |e| explain_path(self.path, e);
        // The columns are ids into `texts` (migration 8): the CASEs compare ids, and 'payload'
        // is bound as its id (?29). A row is found by the index of its kernel start time and
        // the rest of its key (migration 11; INDEXED BY, as without statistics the
        // planner may take a remote's index, thousands of rows), then updated or inserted: the
        // roll-ups move by the row's change, what it held before and what it holds now (the
        // update keeps some stored labels, so the new values are returned), both as ids the
        // sweep's dictionary names.
        let mut find = conn.prepare_cached(&format!(
            "SELECT {}, id FROM flow_rows INDEXED BY flow_rows_kernel_first_ns WHERE kernel_first_ns = ?2 AND boot = ?1 AND client = ?3 AND remote = ?4
                 AND protocol = ?5 AND client_port = ?6 AND remote_port = ?7",
            rollup::FlowFacts::ID_COLUMNS
        ))?;
        let mut insert = conn.prepare_cached(&format!(
            "INSERT INTO flow_rows (boot, kernel_first_ns, client, remote, protocol, client_port, remote_port,
                 packets_up, bytes_up, packets_down, bytes_down, tcp_flags, first_seen, last_seen, name,
                 name_source, cname, remote_class, app_protocol, app_decided, encrypted, owner_kind, owner,
                 company, site, service, served_by, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
                 ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)
             RETURNING {}",
            rollup::FlowFacts::ID_COLUMNS
        ))?;
        // Counters are set, never added to. SET's right-hand sides read the row as it was.
        let mut update = conn.prepare_cached(&format!(
            "UPDATE flow_rows SET packets_up = ?8, bytes_up = ?9, packets_down = ?10, bytes_down = ?11,
                 tcp_flags = ?12, last_seen = ?14,
                 -- A restarted daemon may not know a name an earlier one found: keep it.
                 -- The three name columns change together, or not at all.
                 name = CASE WHEN ?16 IS NULL THEN name ELSE ?15 END,
                 name_source = COALESCE(?16, name_source),
                 cname = CASE WHEN ?16 IS NULL THEN cname ELSE ?17 END,
                 remote_class = ?18,
                 -- The owner follows the name: kept with it when this daemon has none.
                 owner_kind = CASE WHEN ?16 IS NULL THEN owner_kind ELSE ?22 END,
                 owner = CASE WHEN ?16 IS NULL THEN owner ELSE ?23 END,
                 company = CASE WHEN ?16 IS NULL THEN company ELSE ?24 END,
                 site = CASE WHEN ?16 IS NULL THEN site ELSE ?25 END,
                 service = CASE WHEN ?16 IS NULL THEN service ELSE ?26 END,
                 served_by = CASE WHEN ?16 IS NULL THEN served_by ELSE ?27 END,
                 -- A restarted daemon has not seen the first payloads: a port's guess does
                 -- not replace what a payload showed.
                 app_protocol = CASE WHEN ?20 != ?29 AND app_decided = ?29 THEN app_protocol ELSE ?19 END,
                 encrypted = CASE WHEN ?20 != ?29 AND app_decided = ?29 THEN encrypted ELSE ?21 END,
                 app_decided = CASE WHEN ?20 != ?29 AND app_decided = ?29 THEN app_decided ELSE ?20 END
             WHERE id = ?30
             RETURNING {}",
            rollup::FlowFacts::ID_COLUMNS
        ))?;
        /// [`rollup::FlowFacts::ID_COLUMNS`]' count: `find` returns the row's id after them.
        const ID_AT: usize = 13;
        let mut texts = texts::TextIds::default();
        let boot = texts.id(conn, boot_id).map_err(explain)?;
        let payload = texts.id(conn, crate::analysis::protocol::Decided::Payload.as_str()).map_err(explain)?;
        let mut deltas = rollup::FlowDeltas::default();
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
                labels: FlowLabels { app, owner_kind, owner, company, site, service, served_by },
            } = f;
            let mut id = |t: &str| texts.id(conn, t);
            let (client, remote) = (id(&ip_text(client)).map_err(explain)?, id(&ip_text(remote)).map_err(explain)?);
            let key = params![boot, *kernel_first_ns as i64, client, remote, protocol, client_port, remote_port];
            let labels = [
                name.as_deref(),
                source.map(|s| s.as_str()),
                cname.as_deref(),
                Some(remote_class.as_str()),
                Some(app.protocol.as_str()),
                Some(app.decided.as_str()),
                Some(app.protocol.encryption().as_str()),
                Some(owner_kind.as_str()),
                owner.as_deref(),
                company.as_deref(),
                site.as_deref(),
                service.as_deref(),
                served_by.as_deref(),
            ]
            .map(|t| texts.opt(conn, t));
            let [l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11, l12] = labels;
            let values = params![
                boot,
                *kernel_first_ns as i64,
                client,
                remote,
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
                l0.map_err(explain)?,
                l1.map_err(explain)?,
                l2.map_err(explain)?,
                l3.map_err(explain)?,
                l4.map_err(explain)?,
                l5.map_err(explain)?,
                l6.map_err(explain)?,
                l7.map_err(explain)?,
                l8.map_err(explain)?,
                l9.map_err(explain)?,
                l10.map_err(explain)?,
                l11.map_err(explain)?,
                l12.map_err(explain)?,
                self.source,
                payload,
            ];
            let mut found = find
                .query_row(key, |r| Ok((rollup::FlowFacts::ids_of(r)?, r.get::<_, i64>(ID_AT)?)))
                .optional()
                .map_err(explain)?;
            // Not a row: perhaps packed with its day (a daemon back after days, a clock set
            // right after boot), then back to a row and updated, never stored twice. A new
            // flow started after every packed one, so its look-up finds no day to open.
            let packed_key = [
                boot,
                *kernel_first_ns as i64,
                client,
                remote,
                i64::from(*protocol),
                i64::from(*client_port),
                i64::from(*remote_port),
            ];
            if found.is_none()
                && self.source == schema::LIVE_SOURCE
                && packed_flows::take_back(conn, packed_key, *first_seen_ms)?
            {
                found = find
                    .query_row(key, |r| Ok((rollup::FlowFacts::ids_of(r)?, r.get::<_, i64>(ID_AT)?)))
                    .optional()
                    .map_err(explain)?;
            }
            let (old, new) = match found {
                Some((old, id)) => {
                    let mut with_id: Vec<&dyn rusqlite::ToSql> = values.to_vec();
                    with_id.push(&id);
                    (Some(old), update.query_row(with_id.as_slice(), rollup::FlowFacts::ids_of).map_err(explain)?)
                }
                // The insert binds the columns alone, not the 'payload' id the update compares.
                None => (None, insert.query_row(&values[..28], rollup::FlowFacts::ids_of).map_err(explain)?),
            };
            if !self.rollups {
                continue;
            }
            let old = old.map(|o| rollup::FlowFacts::from_ids(&mut texts, conn, o)).transpose().map_err(explain)?;
            let new = rollup::FlowFacts::from_ids(&mut texts, conn, new).map_err(explain)?;
            deltas.change(old.as_ref(), &new);
        }
        deltas.apply(conn).map_err(|e| e.context("updating the report roll-ups"))?;
        Ok(())
    }

    /// Sets the facts `facts` has, leaving the others.
    pub fn update_daemon_facts(&self, facts: &DaemonFacts) -> Result<()> {
        for (k, v) in facts.rows() {
            self.conn.execute(
                "INSERT INTO daemon (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
        }
        Ok(())
    }
}

/// Bytes the WAL file is cut back to once a checkpoint empties it (`journal_size_limit`).
const WAL_SIZE_LIMIT: i64 = 8 << 20;

/// Turns off SQLite's memory statistics, which tracker never reads: kept, they take a global
/// mutex on every allocation (every text bound to a statement is one), about a tenth of an
/// import's writing. SQLite takes this only before it initialises, at the process's first
/// connection; later it refuses (SQLITE_MISUSE) and nothing changes.
fn no_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: an integer option with an int argument, as sqlite3_config documents it.
        unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
    });
}

/// An address as its text, as `Display` writes it: IPv4 written by hand, since the formatting
/// machinery was a few percent of an import's writing (two addresses per flow row).
fn ip_text(ip: &IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// A client filter as a JSON array for `json_each`, or NULL for none.
pub(crate) fn clients_json(clients: Option<&[String]>) -> Option<String> {
    clients.map(|c| serde_json::Value::from(c.to_vec()).to_string())
}

fn explain_path(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    explain(path, e, Access::Write)
}

/// True when `e` (or a cause) is SQLite's "database or disk is full": the daemon keeps counting
/// in the kernel and retries rather than stop.
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code) == Some(ErrorCode::DiskFull)
    })
}

/// What to do about a damaged database file, when `e` (or a cause) is SQLite's "database disk
/// image is malformed" (SQLITE_CORRUPT): a disk error, a copy taken mid-write, a file edited by
/// hand. tracker never repairs or replaces it (it would lose what can still be read).
pub fn damaged_hint(e: &anyhow::Error, path: &Path) -> Option<String> {
    let corrupt = e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code)
            == Some(ErrorCode::DatabaseCorrupt)
    });
    corrupt.then(|| {
        let p = path.display();
        format!(
            "the database file {p} is damaged; tracker leaves it as it is. Stop the daemon, keep a copy, and \
             recover what can be read into a new file: `sqlite3 {p} .recover | sqlite3 {p}.recovered`, then \
             move that into place (or start with --db pointing at a new file; the kernel keeps blocking either way)"
        )
    })
}

/// SQLite's error as what is true for the user. Where the rusqlite error is kept as the cause, it
/// stays reachable with `downcast_ref::<rusqlite::Error>()`.
fn explain(path: &Path, e: rusqlite::Error, access: Access) -> anyhow::Error {
    let shown = path.display();
    let verb = match access {
        Access::Write => "write",
        Access::Read => "read",
    };
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => anyhow::anyhow!(
            "the database {shown} is locked by another process (waited {}s); is another tracker \
             writing to it?",
            BUSY_TIMEOUT.as_secs()
        ),
        Some(ErrorCode::NotADatabase) => anyhow::anyhow!(
            "{shown} is not a tracker database (not SQLite): tracker leaves it alone; pass another --db"
        ),
        Some(ErrorCode::DiskFull) => anyhow::Error::new(e).context(format!("the disk holding {shown} is full")),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            let why = if on_readonly_fs(path) {
                format!("{shown} is on a read-only filesystem (remount it read-write, or pass another --db)")
            } else if let Some(mode) = readonly_mode(path).filter(|_| access == Access::Write) {
                format!("{shown} is a read-only file (mode {mode:04o}; chmod u+w it, or pass another --db)")
            } else {
                return anyhow::Error::new(e).context(format!("cannot {verb} {shown}{}", sudo_hint()));
            };
            anyhow::Error::new(e).context(format!("cannot {verb} the database: {why}"))
        }
        _ => anyhow::Error::new(e).context(format!("database {shown}")),
    }
}

fn newer_message(path: &Path, version: u32) -> String {
    format!(
        "the database {} has schema version {version}, newer than this tracker knows ({}); it \
         was written by a newer tracker: upgrade tracker, or use another --db",
        path.display(),
        schema::VERSION
    )
}

/// Why a SQLite file with these header values and tables is another program's, or `None` when
/// it is tracker's (of this or an earlier version) or still empty.
fn foreign(application_id: i32, user_version: u32, tables: &[String]) -> Option<String> {
    if application_id == schema::APPLICATION_ID {
        return None;
    }
    if application_id != 0 {
        return Some(format!("application_id {application_id:#010x}"));
    }
    if tables.is_empty() {
        return None;
    }
    // Before application_id, tracker's databases had a version and its first tables.
    let has = |t: &str| tables.iter().any(|n| n == t);
    if user_version >= 1 && has("flows") && has("block_rules") {
        return None;
    }
    const SHOWN: usize = 5;
    let mut list: Vec<String> =
        tables.iter().take(SHOWN).map(|t| crate::text::escape_controls(t).into_owned()).collect();
    if tables.len() > SHOWN {
        list.push(format!("and {} more", tables.len() - SHOWN));
    }
    Some(format!("tables: {}", list.join(", ")))
}

/// `--db /var/lib/tracker` is a folder: say so, not SQLite's "unable to open" twice.
fn refuse_directory(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{} is a directory: --db takes a database file, e.g. {}",
            path.display(),
            path.join("tracker.db").display()
        );
    }
    Ok(())
}

/// Creates a missing database folder (0700) and file (0600, empty: SQLite initialises it and
/// gives its -wal and -shm the same mode). Returns whether the file was created. Existing
/// folders are left as they are: one may be /tmp.
fn create_private(path: &Path) -> Result<bool> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the database folder {}{}", dir.display(), sudo_hint()))?;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // Let SQLite report what it cannot do (read-only filesystem, permissions) in its terms.
        Err(_) => Ok(false),
    }
}

/// The database and its -wal and -shm, if group or others may read them, become the owner's
/// only (0600): flows and the DNS history say where everyone went.
fn tighten_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o7700 | 0o600)) {
            Ok(()) => tracing::info!(
                path = %p.display(),
                was = format!("{mode:04o}"),
                now = "0600",
                "made the database readable by its owner only"
            ),
            Err(e) => tracing::warn!(path = %p.display(), error = %e, "cannot restrict the database's mode"),
        }
    }
}

/// True when `path` (or, if it does not exist, its folder) is on a read-only mount.
fn on_readonly_fs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let target = if path.exists() { path } else { path.parent().unwrap_or(path) };
    let target = if target.as_os_str().is_empty() { Path::new(".") } else { target };
    let Ok(c) = std::ffi::CString::new(target.as_os_str().as_bytes()) else { return false };
    // SAFETY: statvfs reads a NUL-terminated path and writes into the struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0) && st.f_flag & libc::ST_RDONLY != 0
}

/// The file's mode when nobody may write it (no write bit at all).
fn readonly_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o222 == 0).then_some(mode)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The sudo hint, only for those it can help: root is refused for other reasons.
fn sudo_hint() -> &'static str {
    if is_root() { "" } else { " (tracker's database is root's; try sudo)" }
}

/// A path for an SQLite `file:` URI: the characters URIs give a meaning to, percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// 32 lower-case hex characters from 16 bytes of the kernel's getrandom.
fn random_id() -> Result<String> {
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: getrandom writes at most the given length into the buffer we own.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(anyhow::Error::new(e).context("reading random bytes for the database id"));
        }
        got += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::{
        labels::Labeler,
        names::NameSource,
        protocol::{AppProtocol, Classification, Decided},
    };

    /// Every value of every row `sql` returns, in its order.
    pub(crate) fn values(conn: &Connection, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect()).unwrap().collect::<Result<_, _>>().unwrap()
    }

    pub(crate) fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracker-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("t.db")
    }

    /// A flow of `client` started at `first_ms`, named `name` (or not), of `protocol`.
    pub(crate) fn labelled_flow(
        n: u64,
        client: &str,
        first_ms: i64,
        name: Option<&str>,
        app: AppProtocol,
        bytes: u64,
    ) -> FlowRecord {
        let name = FlowName { name: name.map(Into::into), source: name.map(|_| NameSource::Dns), cname: None };
        let class = if client == "10.77.0.9" { AddrClass::Private } else { AddrClass::Documentation };
        let app = Classification { protocol: app, decided: Decided::Payload };
        FlowRecord {
            kernel_first_ns: n,
            client: client.parse().unwrap(),
            remote: if class.is_local() { "192.168.1.5".parse().unwrap() } else { "203.0.113.10".parse().unwrap() },
            protocol: tracker_common::IPPROTO_TCP,
            client_port: 40000 + n as u16,
            remote_port: 443,
            packets_up: 1,
            bytes_up: bytes,
            packets_down: 1,
            bytes_down: 100,
            tcp_flags: 0x12,
            first_seen_ms: first_ms,
            last_seen_ms: first_ms + 10,
            labels: Labeler::default().label(&name, class, app),
            name,
            remote_class: class,
        }
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
            labels: FlowLabels::unnamed(Classification { protocol: AppProtocol::Tls, decided: Decided::Port }),
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

    /// A big write leaves a big WAL; once it is checkpointed, the next write starts the WAL
    /// over and SQLite cuts the file back to the limit.
    #[test]
    fn the_wal_shrinks_back_after_a_big_write() {
        let p = temp_db("wal-limit");
        let mut s = Store::open(&p).unwrap();
        let wal = || std::fs::metadata(format!("{}-wal", p.display())).map(|m| m.len()).unwrap_or(0);
        let big: Vec<FlowRecord> = (0..150_000).map(|i| flow(i, 1, 1_000 + i as i64)).collect();
        s.upsert_flows("b", &big).unwrap();
        assert!(wal() > WAL_SIZE_LIMIT as u64, "the big write's WAL: {} bytes", wal());
        s.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
        s.upsert_flows("b", &[flow(1_000_000, 1, 5)]).unwrap();
        assert!(wal() <= WAL_SIZE_LIMIT as u64, "cut back: {} bytes", wal());
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
    fn a_damaged_file_is_said_and_left_as_it_is() {
        let p = temp_db("damaged");
        let mut s = Store::open(&p).unwrap();
        let flows: Vec<FlowRecord> = (0..3_000).map(|n| flow(n, 1, 1_000 + n as i64)).collect();
        s.upsert_flows("boot", &flows).unwrap();
        drop(s);
        // The second half of the file (table and index pages; the header and the schema are in
        // the first pages) overwritten, as a failing disk or a copy taken mid-write leaves it.
        let mut bytes = std::fs::read(&p).unwrap();
        let half = bytes.len() / 2;
        bytes[half..].iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
        std::fs::write(&p, &bytes).unwrap();

        let s = Store::open(&p).unwrap();
        let err = s
            .flows(&FlowQuery { limit: None, ..FlowQuery::default() })
            .map(drop)
            .and_then(|()| s.flow_count().map(drop));
        let err = err.expect_err("reading damaged pages fails");
        let hint = damaged_hint(&err, &p).unwrap_or_else(|| panic!("not said to be damaged: {err:#}"));
        assert!(hint.contains("damaged") && hint.contains(".recover"), "{hint}");
        drop(s);
        assert!(std::fs::read(&p).unwrap() == bytes, "the damaged file is left byte for byte as it was");
        // Any other error is not called damage.
        assert_eq!(damaged_hint(&anyhow::anyhow!("disk full"), &p), None);
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
        let err = s.add_block(blocks::RuleKind::Ip, "192.0.2.1/32", None).err().unwrap().to_string();
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
        let recent = s.flows(&FlowQuery { since_ms: Some(5_000), ..FlowQuery::default() }).unwrap();
        assert_eq!(recent.len(), 2);
        let one = s.flows(&FlowQuery { limit: Some(1), ..FlowQuery::default() }).unwrap();
        assert_eq!(one[0].packets_up, 50);
        assert_eq!(one[0].protocol, "tcp");
    }

    fn mode_of(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn flows_total_ignores_the_limit() {
        let mut s = Store::open(&temp_db("total")).unwrap();
        s.upsert_flows("b", &[flow(1, 1, 1_000), flow(2, 50, 9_000), flow(3, 10, 9_500)]).unwrap();
        assert_eq!(s.flows_total(&FlowQuery { limit: Some(1), ..FlowQuery::default() }).unwrap(), 3);
        assert_eq!(s.flows_total(&FlowQuery { since_ms: Some(5_000), ..FlowQuery::default() }).unwrap(), 2);
    }

    /// Bug 5: `tracker flows --db other.db` took over another program's database.
    #[test]
    fn another_programs_database_is_refused_untouched() {
        let p = temp_db("foreign");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let c = Connection::open(&p).unwrap();
        c.execute_batch("CREATE TABLE customers (id INTEGER, name TEXT)").unwrap();
        drop(c);
        let before = std::fs::read(&p).unwrap();
        let mode = mode_of(&p);
        for err in [Store::open(&p).err().unwrap(), Store::open_reader(&p).err().unwrap()] {
            let err = format!("{err:#}");
            assert!(err.contains("another program's SQLite database (tables: customers)"), "{err}");
            assert!(err.contains("tracker leaves it alone"), "{err}");
            assert!(err.contains(&p.display().to_string()), "{err}");
        }
        assert_eq!(std::fs::read(&p).unwrap(), before, "not one byte changed");
        assert_eq!(mode_of(&p), mode);
        let wal = PathBuf::from(format!("{}-wal", p.display()));
        assert!(!wal.exists());
        // Another application id, even without tables.
        let q = temp_db("foreign-id");
        std::fs::create_dir_all(q.parent().unwrap()).unwrap();
        let c = Connection::open(&q).unwrap();
        c.pragma_update(None, "application_id", 0x1234_5678).unwrap();
        drop(c);
        let err = format!("{:#}", Store::open(&q).err().unwrap());
        assert!(err.contains("application_id 0x12345678"), "{err}");
    }

    #[test]
    fn an_earlier_trackers_database_is_migrated_and_marked() {
        let p = temp_db("earlier");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let c = Connection::open(&p).unwrap();
        for (i, sql) in schema::MIGRATIONS[..2].iter().enumerate() {
            c.execute_batch(sql).unwrap();
            c.pragma_update(None, "user_version", i + 1).unwrap();
        }
        drop(c);
        // A reader says a writer migrates it, and changes nothing.
        let err = format!("{:#}", Store::open_reader(&p).err().unwrap());
        assert!(err.contains("older than this tracker's") && err.contains("`tracker run`"), "{err}");
        let s = Store::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::VERSION);
        let app: i32 = s.conn.pragma_query_value(None, "application_id", |r| r.get(0)).unwrap();
        assert_eq!(app, schema::APPLICATION_ID);
        assert_eq!(app, 0x54524B52);
    }

    /// A database of `upto` migrations with one flow row written as that tracker wrote it.
    fn database_at(name: &str, upto: usize) -> PathBuf {
        let p = temp_db(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let c = Connection::open(&p).unwrap();
        for (i, sql) in schema::MIGRATIONS[..upto].iter().enumerate() {
            c.execute_batch(sql).unwrap();
            c.pragma_update(None, "user_version", i + 1).unwrap();
        }
        c.execute_batch(
            "INSERT INTO flows (boot_id, kernel_first_ns, family, client, remote, protocol, client_port,
                 remote_port, packets_up, bytes_up, packets_down, bytes_down, tcp_flags, first_seen, last_seen)
             VALUES ('b', 1, 4, '10.77.0.2', '192.0.2.1', 6, 40000, 443, 3, 300, 2, 200, 0, 7200000, 7200001)",
        )
        .unwrap();
        p
    }

    fn rollup_rows(s: &Store) -> Vec<(i64, String, String, i64, i64)> {
        let mut st =
            s.conn.prepare("SELECT source, dim, client, span, connections FROM rollup ORDER BY 1, 2, 3, 4").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn roll_ups_survive_migration_5_and_an_older_database_gets_them_filled() {
        // Stopped between migrations 4 and 5 (flows, empty roll-ups): filled at 5.
        let stopped = Store::open(&database_at("rollup-from-4", 4)).unwrap();
        assert_eq!(rollup_rows(&stopped).len(), 4);
        // Written by the tracker of version 4: its roll-ups are moved, not rebuilt (and its
        // every-device rows dropped by migration 13).
        let p = database_at("rollup-kept-4", 4);
        Connection::open(&p)
            .unwrap()
            .execute_batch(
                "INSERT INTO rollup VALUES ('protocol', '10.77.0.2', 3600000, 7200000, '6', 'tls', 'encrypted', 1, 5,
                     300, 200), ('protocol', '', 3600000, 7200000, '6', 'tls', 'encrypted', 1, 5, 300, 200)",
            )
            .unwrap();
        let kept = Store::open(&p).unwrap();
        assert_eq!(rollup_rows(&kept), [(0, "protocol".into(), "10.77.0.2".into(), 3_600_000, 1)]);
        // Older than the roll-ups: filled from its rows once they have their source column.
        let filled = Store::open(&database_at("rollup-from-2", 2)).unwrap();
        let rows = rollup_rows(&filled);
        assert_eq!(rows.len(), 4, "owner and protocol, hour and day, of the client: {rows:?}");
        assert!(rows.iter().all(|r| r.0 == schema::LIVE_SOURCE && r.4 == 1), "{rows:?}");
    }

    #[test]
    fn migration_6_keeps_ip_rules_with_their_ids_and_counts_and_adds_history() {
        let p = database_at("rules-from-5", 5);
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "INSERT INTO block_rules (id, kind, rule, comment, created, dropped_before, dropped_kernel, last_hit)
                 VALUES (3, 'ip', '198.51.100.0/24', 'ad network', 1000, 5, 2, 7000),
                        (9, 'ip', '203.0.113.7/32', NULL, 2000, 0, 0, NULL);
             INSERT INTO dns_queries (ts, client, client_port, resolver, resolver_port, transport, dns_id, qname, qtype)
                 VALUES (1, '10.77.0.2', 5353, '10.77.0.1', 53, 'udp', 1, 'a.example', 'A');",
        )
        .unwrap();
        drop(c);
        let mut s = Store::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::VERSION);
        let rules = s.stored_rules().unwrap();
        let got: Vec<(u32, blocks::RuleKind, &str, Option<&str>)> =
            rules.iter().map(|r| (r.id, r.kind, r.rule.as_str(), r.client.as_deref())).collect();
        assert_eq!(
            got,
            [(3, blocks::RuleKind::Ip, "198.51.100.0/24", None), (9, blocks::RuleKind::Ip, "203.0.113.7/32", None)]
        );
        assert_eq!(s.block_counters(3).unwrap(), Some(BlockCounters { dropped_before: 5, dropped_kernel: 2 }));
        let label = |k: &str| k.to_owned();
        let rows = s.block_rows(blocks::BlockFilter::default(), timefmt::now_ms(), &|_| None, &label).unwrap();
        assert_eq!(
            (rows[0].hits, rows[0].comment.as_deref(), rows[0].created.as_str()),
            (7, Some("ad network"), "1970-01-01T00:00:01.000Z")
        );
        let blocked_by: Option<i64> = s.conn.query_row("SELECT blocked_by FROM dns_queries", [], |r| r.get(0)).unwrap();
        assert_eq!(blocked_by, None, "earlier queries were not refused");
        // Uniqueness holds among active rules only: unblocked, the rule can come back, and
        // the ended one stays as history.
        assert_eq!(s.add_block(blocks::RuleKind::Ip, "198.51.100.0/24", None).unwrap(), None);
        assert_eq!(s.remove_block(blocks::RuleKind::Ip, "198.51.100.0/24").unwrap(), Some(3));
        assert_eq!(s.add_block(blocks::RuleKind::Ip, "198.51.100.0/24", None).unwrap(), Some(10));
        let all = s.block_rows(blocks::BlockFilter { ended: true, kind: None }, timefmt::now_ms(), &|_| None, &label);
        let all: Vec<(u32, Option<String>)> = all.unwrap().into_iter().map(|r| (r.id, r.end_reason)).collect();
        assert_eq!(all, [(3, Some("unblocked".into())), (9, None), (10, None)]);
        let dup =
            s.conn.execute("INSERT INTO block_rules (kind, rule, created) VALUES ('ip', '203.0.113.7/32', 0)", []);
        assert!(dup.is_err(), "two active rules for one thing");
    }

    #[test]
    fn db_id_is_random_hex_written_once() {
        let p = temp_db("dbid");
        let id = Store::open(&p).unwrap().db_id().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
        assert_eq!(Store::open(&p).unwrap().db_id().unwrap(), id);
        assert_eq!(Store::open_reader(&p).unwrap().db_id().unwrap(), id);
        assert_ne!(Store::open(&temp_db("dbid-2")).unwrap().db_id().unwrap(), id);
    }

    #[test]
    fn reader_never_creates_and_never_writes() {
        let p = temp_db("reader-missing");
        let err = Store::open_reader(&p).err().unwrap().to_string();
        assert!(err.contains("no database at") && err.contains("`tracker run`"), "{err}");
        assert!(!p.parent().unwrap().exists(), "no folder created");
        // Beside a writer in WAL mode: reads what it committed, cannot write.
        let p = temp_db("reader-wal");
        let mut w = Store::open(&p).unwrap();
        w.upsert_flows("b", &[flow(1, 1, 1_000)]).unwrap();
        let r = Store::open_reader(&p).unwrap();
        assert_eq!(r.flow_count().unwrap(), 1);
        w.upsert_flows("b", &[flow(2, 1, 1_000)]).unwrap();
        assert_eq!(r.flow_count().unwrap(), 2);
        assert!(r.conn.execute("DELETE FROM flows", []).is_err());
        // An empty file is not a database yet: the reader leaves it empty.
        let e = temp_db("reader-empty");
        std::fs::create_dir_all(e.parent().unwrap()).unwrap();
        std::fs::write(&e, b"").unwrap();
        let err = Store::open_reader(&e).err().unwrap().to_string();
        assert!(err.contains("is empty"), "{err}");
        assert_eq!(std::fs::metadata(&e).unwrap().len(), 0);
    }

    #[test]
    fn a_directory_is_not_a_database() {
        let p = temp_db("dir");
        let dir = p.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        for err in [Store::open(dir).err().unwrap(), Store::open_reader(dir).err().unwrap()] {
            let err = format!("{err:#}");
            assert_eq!(
                err,
                format!(
                    "{} is a directory: --db takes a database file, e.g. {}/tracker.db",
                    dir.display(),
                    dir.display()
                )
            );
        }
    }

    /// Bug 11: the database was world-readable.
    #[test]
    fn the_writer_keeps_the_database_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let p = temp_db("private");
        let mut s = Store::open(&p).unwrap();
        s.upsert_flows("b", &[flow(1, 1, 1_000)]).unwrap();
        assert_eq!(mode_of(p.parent().unwrap()), 0o700);
        assert_eq!(mode_of(&p), 0o600);
        let wal = PathBuf::from(format!("{}-wal", p.display()));
        assert_eq!(mode_of(&wal), 0o600);
        drop(s);
        // An existing world-readable database (an earlier tracker's) is tightened.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = Store::open(&p).unwrap();
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(mode_of(p.parent().unwrap()), 0o755, "existing folders are left alone");
        drop(s);
        // A reader changes no mode.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        drop(Store::open_reader(&p).unwrap());
        assert_eq!(mode_of(&p), 0o640);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in
            ["0.0.0.0", "10.77.0.2", "192.0.2.255", "100.9.10.99", "255.255.255.255", "2001:db8::10", "::ffff:1.2.3.4"]
        {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(&ip), ip.to_string());
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, n / 3, 255 - n, n / 7]);
            assert_eq!(ip_text(&ip), ip.to_string());
        }
    }

    #[test]
    fn foreign_rules() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(foreign(0, 0, &[]), None);
        assert_eq!(foreign(schema::APPLICATION_ID, 3, &t(&["flows"])), None);
        assert_eq!(foreign(0, 2, &t(&["block_rules", "daemon", "flows"])), None);
        assert_eq!(foreign(0, 0, &t(&["customers"])).as_deref(), Some("tables: customers"));
        assert!(foreign(0, 0, &t(&["flows", "block_rules"])).is_some(), "no version: not ours");
        assert!(foreign(0, 7, &t(&["customers"])).is_some());
        assert_eq!(
            foreign(0, 0, &t(&["a", "b", "c", "d", "e", "f", "g"])).as_deref(),
            Some("tables: a, b, c, d, e, and 2 more")
        );
        assert_eq!(foreign(1, 0, &[]).as_deref(), Some("application_id 0x00000001"));
    }

    /// A tmpfs at a fresh directory, for the read-only and full-disk tests (root only; skipped
    /// where mounting is not allowed).
    struct Tmpfs(PathBuf);
    impl Tmpfs {
        fn mount(name: &str, size: &str) -> Option<Self> {
            let dir = std::env::temp_dir().join(format!("tracker-store-mnt-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            ok.then(|| Self(dir))
        }
        fn remount_ro(&self) {
            let ok = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(&self.0).status().unwrap();
            assert!(ok.success());
        }
    }
    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn a_read_only_filesystem_is_said_and_readers_still_read() {
        if !is_root() {
            return;
        }
        let Some(fs) = Tmpfs::mount("ro", "4m") else { return };
        let p = fs.0.join("t.db");
        let mut s = Store::open(&p).unwrap();
        s.upsert_flows("b", &[flow(1, 1, 1_000)]).unwrap();
        drop(s); // the last connection removes -wal and -shm
        fs.remount_ro();
        let err = format!("{:#}", Store::open(&p).err().unwrap());
        assert!(err.contains("read-only filesystem"), "{err}");
        assert!(!err.contains("sudo"), "{err}");
        let r = Store::open_reader(&p).unwrap();
        assert_eq!(r.flow_count().unwrap(), 1);
    }

    #[test]
    fn a_full_disk_is_said_and_the_sqlite_error_kept() {
        if !is_root() {
            return;
        }
        let Some(fs) = Tmpfs::mount("full", "512k") else { return };
        let mut s = Store::open(&fs.0.join("t.db")).unwrap();
        let mut err = None;
        for round in 0..200u64 {
            let batch: Vec<FlowRecord> = (0..200).map(|i| flow(round * 1000 + i, 1, 1_000)).collect();
            if let Err(e) = s.upsert_flows("b", &batch) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("the disk filled up");
        let text = format!("{err:#}");
        assert!(text.contains(&format!("the disk holding {} is full", fs.0.join("t.db").display())), "{text}");
        assert!(err.downcast_ref::<rusqlite::Error>().is_some(), "{text}");
        assert!(is_disk_full(&err));
    }

    #[test]
    fn block_rules_add_remove_and_carry_counts_across_kernel_instances() {
        let p = temp_db("blocks");
        let mut s = Store::open(&p).unwrap();
        let id = s.add_block(blocks::RuleKind::Ip, "198.51.100.0/24", Some("ad network")).unwrap().unwrap();
        assert_eq!(s.add_block(blocks::RuleKind::Ip, "198.51.100.0/24", None).unwrap(), None);
        s.write(|w| w.set_block_kernel_count(id, 5, Some(7_000))).unwrap();
        // A reboot: the kernel entry starts again at zero; the five drops are kept.
        s.fold_block_kernel_count(id).unwrap();
        s.write(|w| w.set_block_kernel_count(id, 2, None)).unwrap();
        let label = |k: &str| k.to_owned();
        let rows = s.block_rows(blocks::BlockFilter::default(), timefmt::now_ms(), &|_| None, &label).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].packets_dropped, 7);
        assert_eq!(rows[0].comment.as_deref(), Some("ad network"));
        assert_eq!(rows[0].last_hit, Some(timefmt::rfc3339(7_000)));
        // Live kernel counts replace the stored kernel count, never add to it.
        let live = |i: u32| (i == id).then_some(blocks::LiveCount { dropped: 4, refused: 0, last_hit: Some(8_000) });
        let rows = s.block_rows(blocks::BlockFilter::default(), timefmt::now_ms(), &live, &label).unwrap();
        assert_eq!(rows[0].packets_dropped, 9);
        assert_eq!(s.remove_block(blocks::RuleKind::Ip, "198.51.100.0/24").unwrap(), Some(id));
        assert_eq!(s.remove_block(blocks::RuleKind::Ip, "198.51.100.0/24").unwrap(), None);
        let rows = s.block_rows(blocks::BlockFilter::default(), timefmt::now_ms(), &|_| None, &label).unwrap();
        assert!(rows.is_empty());
    }
}
