//! The roll-ups the reports read: flows and DNS queries summed per device, hour and day, one
//! report dimension at a time. The store's writes keep them, in the transaction that writes the
//! rows, from each row's change (its stored values before and after), summed per sweep so a
//! batch costs one write per group it touches, not per row. Every device's figures are the sum
//! of the devices' (schema 13): no group is stored twice.
//!
//! Stored compact (schema 9): the client, the group's texts and the name are ids into `texts`,
//! with 0 for an unused key part, and buckets are whole hours since 1970 (`rollup_rows`,
//! `dns_rollup_rows`); the views `rollup` and `dns_rollup` show them as text.
//!
//! A period from `since` to now reads whole days from the day rows (and the days packed once
//! closed, [`super::packed`]), the hours before the first midnight from the hour rows, and the
//! rows themselves only before the first hour boundary ([`Period`]), so it starts exactly at
//! `since` and reads a few thousand roll-up rows for a week of a busy household instead of
//! millions of flows. A packed day keeps no hour rows (schema 13): its flows and queries hold
//! the same numbers (packed too for the live interface, [`super::packed_flows`],
//! [`super::packed_dns`]; an import's stay rows), so a period that starts on it reads that
//! first part-day from them.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use super::{packed, packed_view::Kind, texts::TextIds};

/// The buckets, in milliseconds: every row is summed into its hour and its day (UTC).
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
const SPANS: [i64; 2] = [HOUR_MS, DAY_MS];
/// The id the compact roll-up rows hold for '' (an unused key part): never a `texts` id, which
/// start at 1, and stored in no bytes (SQLite's integer 0).
pub(super) const EMPTY_ID: i64 = 0;
/// `rollup_rows` and `dns_rollup_rows` keep buckets in whole hours.
const HOURS_PER_DAY: i64 = DAY_MS / HOUR_MS;
/// Bits of `dns_rollup.client_bits`: devices beyond the 63rd share the last bit, so a name's
/// distinct-client count is exact up to 63 client addresses.
const CLIENT_BITS: i64 = 63;

/// What a report groups flows by; each is a roll-up of its own, so no report reads the cross
/// product of all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// `owner_kind`, `owner`.
    Owner,
    /// `service` (flows that have one).
    Service,
    /// `served_by` (flows that have one).
    ServedBy,
    /// The IP protocol number, `app_protocol`, `encrypted`.
    Protocol,
}

impl Dim {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Service => "service",
            Self::ServedBy => "served_by",
            Self::Protocol => "protocol",
        }
    }

    /// Its `rollup_rows.dim` (schema 9; the view `rollup` maps it back to [`Dim::as_str`]).
    pub fn code(self) -> i64 {
        match self {
            Self::Owner => 0,
            Self::Service => 1,
            Self::ServedBy => 2,
            Self::Protocol => 3,
        }
    }
}

/// A group's key within its dimension; unused parts are empty.
pub type Key = [String; 3];

/// Connections, packets and bytes of a group, or the change of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: i64,
    pub packets: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
}

impl Counts {
    /// Sums read as `connections, packets, bytes_up, bytes_down` from column `at` on.
    fn from_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            connections: r.get(at)?,
            packets: r.get(at + 1)?,
            bytes_up: r.get(at + 2)?,
            bytes_down: r.get(at + 3)?,
        })
    }

    fn add(&mut self, sign: i64, f: &FlowFacts) {
        self.connections += sign;
        self.packets += sign * f.packets;
        self.bytes_up += sign * f.bytes_up;
        self.bytes_down += sign * f.bytes_down;
    }

    pub fn bytes(&self) -> i64 {
        self.bytes_up + self.bytes_down
    }

    pub(crate) fn merge(&mut self, o: &Counts) {
        self.connections += o.connections;
        self.packets += o.packets;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
    }
}

/// A stored flow row as the roll-ups see it: when it started, whose it is, its labels, its
/// counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowFacts {
    /// `sources.id`.
    pub source: i64,
    pub first_seen: i64,
    pub client: String,
    pub protocol: u8,
    pub app_protocol: String,
    pub encrypted: String,
    pub owner_kind: String,
    pub owner: String,
    pub service: String,
    pub served_by: String,
    pub packets: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
}

impl FlowFacts {
    /// The `flows` columns [`FlowFacts::from_row`] reads, in order (rows written before the
    /// labels existed read as unknown and unnamed).
    pub const COLUMNS: &str = "first_seen, client, protocol, coalesce(app_protocol, 'unknown'),
        coalesce(encrypted, 'unknown'), coalesce(owner_kind, 'unnamed'), coalesce(owner, ''),
        coalesce(service, ''), coalesce(served_by, ''), packets_up + packets_down, bytes_up, bytes_down, source";

    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            first_seen: r.get(0)?,
            client: r.get(1)?,
            protocol: r.get(2)?,
            app_protocol: r.get(3)?,
            encrypted: r.get(4)?,
            owner_kind: r.get(5)?,
            owner: r.get(6)?,
            service: r.get(7)?,
            served_by: r.get(8)?,
            packets: r.get(9)?,
            bytes_up: r.get(10)?,
            bytes_down: r.get(11)?,
            source: r.get(12)?,
        })
    }

    /// The `flow_rows` columns [`FlowFacts::from_ids`] takes, in order: the same as
    /// [`FlowFacts::COLUMNS`], texts as their ids. The writer reads them back (RETURNING) and
    /// names them from its own dictionary of the sweep's texts, not through the view's joins.
    pub const ID_COLUMNS: &str = "first_seen, client, protocol, app_protocol, encrypted, owner_kind, owner, service,
        served_by, packets_up + packets_down, bytes_up, bytes_down, source";

    /// The ids of a row read by [`FlowFacts::ID_COLUMNS`].
    pub(crate) fn ids_of(r: &Row<'_>) -> rusqlite::Result<FactIds> {
        Ok(FactIds {
            first_seen: r.get(0)?,
            client: r.get(1)?,
            protocol: r.get(2)?,
            labels: [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?],
            packets: r.get(9)?,
            bytes_up: r.get(10)?,
            bytes_down: r.get(11)?,
            source: r.get(12)?,
        })
    }

    /// The facts of a row's ids, named by `texts`, with [`FlowFacts::COLUMNS`]'s defaults for
    /// the labels a row lacks.
    pub(crate) fn from_ids(texts: &mut TextIds, conn: &Connection, f: FactIds) -> rusqlite::Result<Self> {
        /// What a missing label reads as, in `labels`' order.
        const NONE: [&str; 6] = ["unknown", "unknown", "unnamed", "", "", ""];
        let client = texts.text(conn, f.client)?;
        let mut label = |i: usize| f.labels[i].map_or_else(|| Ok(NONE[i].to_owned()), |id| texts.text(conn, id));
        Ok(Self {
            source: f.source,
            first_seen: f.first_seen,
            client,
            protocol: f.protocol,
            app_protocol: label(0)?,
            encrypted: label(1)?,
            owner_kind: label(2)?,
            owner: label(3)?,
            service: label(4)?,
            served_by: label(5)?,
            packets: f.packets,
            bytes_up: f.bytes_up,
            bytes_down: f.bytes_down,
        })
    }

    /// The group of each dimension the flow belongs to, borrowed: summing a source's rows
    /// groups each of them eight times.
    pub fn keys(&self) -> impl Iterator<Item = (Dim, [&str; 3])> + '_ {
        let owner = Some((Dim::Owner, [self.owner_kind.as_str(), self.owner.as_str(), ""]));
        let service = (!self.service.is_empty()).then_some((Dim::Service, [self.service.as_str(), "", ""]));
        let served = (!self.served_by.is_empty()).then_some((Dim::ServedBy, [self.served_by.as_str(), "", ""]));
        let protocol =
            Some((Dim::Protocol, [protocol_text(self.protocol), self.app_protocol.as_str(), self.encrypted.as_str()]));
        [owner, service, served, protocol].into_iter().flatten()
    }
}

/// A `flow_rows` row as [`FlowFacts::ID_COLUMNS`] reads it: its labels (app_protocol,
/// encrypted, owner_kind, owner, service, served_by) as `texts` ids.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FactIds {
    first_seen: i64,
    client: i64,
    protocol: u8,
    labels: [Option<i64>; 6],
    packets: i64,
    bytes_up: i64,
    bytes_down: i64,
    source: i64,
}

/// An IP protocol number as the protocol roll-up's first key part stores it.
fn protocol_text(protocol: u8) -> &'static str {
    static TEXT: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..=u8::MAX).map(|p| p.to_string()).collect());
    &TEXT[usize::from(protocol)]
}

/// The start of the bucket of length `span` that holds `ms`.
fn bucket(ms: i64, span: i64) -> i64 {
    ms - ms.rem_euclid(span)
}

/// The texts of groups, each kept once and known by its number: finding a group hashes and
/// compares numbers, not strings, and a group's key costs no allocation once its texts are
/// known.
#[derive(Debug, Default)]
struct Texts {
    ids: HashMap<String, u32, foldhash::fast::RandomState>,
    texts: Vec<String>,
}

impl Texts {
    fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = u32::try_from(self.texts.len()).expect("fewer than 2^32 distinct texts");
        self.texts.push(text.to_owned());
        self.ids.insert(text.to_owned(), id);
        id
    }

    /// The `texts` id of each text, by its number ('' is [`EMPTY_ID`]): one lookup per distinct
    /// text of the batch.
    fn stored_ids(&self, conn: &Connection) -> rusqlite::Result<Vec<i64>> {
        let mut ids = TextIds::default();
        self.texts.iter().map(|t| if t.is_empty() { Ok(EMPTY_ID) } else { ids.id(conn, t) }).collect()
    }
}

/// A bucket's `hours` and `start_hour` in the compact roll-up rows.
fn hour_key(span: i64, bucket: i64) -> (i64, i64) {
    (span / HOUR_MS, bucket.div_euclid(HOUR_MS))
}

/// A device's hour of a dimension: source, dimension, hour, client and key (texts' numbers).
type FlowHour = (i64, Dim, i64, u32, [u32; 3]);
/// A roll-up row's key: source, dimension, span, bucket, client and key (texts' numbers).
type FlowGroup = (i64, Dim, i64, i64, u32, [u32; 3]);

/// The roll-up changes of flow writes, summed per group.
///
/// Each change is summed into its device's hour only; [`FlowDeltas::apply`] sums those into the
/// days: four groups found per row rather than eight, which is most of the work when an import
/// sums a whole source's rows at its end.
#[derive(Debug, Default)]
pub struct FlowDeltas {
    texts: Texts,
    hours: HashMap<FlowHour, Counts, foldhash::fast::RandomState>,
}

impl FlowDeltas {
    /// A flow row went from `old` (none: it is new) to `new`: it leaves its old groups and
    /// joins its new ones, which for the same labels is just the counters' difference.
    pub fn change(&mut self, old: Option<&FlowFacts>, new: &FlowFacts) {
        if let Some(old) = old {
            self.add(-1, old);
        }
        self.add(1, new);
    }

    /// A flow row was deleted.
    pub fn remove(&mut self, old: &FlowFacts) {
        self.add(-1, old);
    }

    fn add(&mut self, sign: i64, f: &FlowFacts) {
        let hour = bucket(f.first_seen, HOUR_MS);
        let client = self.texts.id(&f.client);
        for (dim, key) in f.keys() {
            let key = key.map(|t| self.texts.id(t));
            self.hours.entry((f.source, dim, hour, client, key)).or_default().add(sign, f);
        }
    }

    /// Every group the hours add to: each span's bucket (an hour is inside one day).
    fn groups(&self) -> HashMap<FlowGroup, Counts, foldhash::fast::RandomState> {
        let mut groups = HashMap::with_capacity_and_hasher(self.hours.len() * 2, Default::default());
        for (&(source, dim, hour, client, key), c) in &self.hours {
            for span in SPANS {
                let group = (source, dim, span, bucket(hour, span), client, key);
                groups.entry(group).or_insert_with(Counts::default).merge(c);
            }
        }
        groups
    }

    /// Writes the changes: one upsert per group that changed, in the table's key order, so
    /// each lands beside the one before.
    pub fn apply(self, conn: &Connection) -> Result<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO rollup_rows (source, dim, hours, start_hour, client, k1, k2, k3, connections, packets,
                 bytes_up, bytes_down)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT DO UPDATE SET connections = connections + excluded.connections,
                 packets = packets + excluded.packets, bytes_up = bytes_up + excluded.bytes_up,
                 bytes_down = bytes_down + excluded.bytes_down",
        )?;
        // A rewrite that changed nothing leaves its groups as they are.
        let mut groups: Vec<_> = self.groups().into_iter().filter(|(_, c)| *c != Counts::default()).collect();
        let ids = self.texts.stored_ids(conn)?;
        let id = |n: u32| ids[n as usize];
        let order = |g: &FlowGroup| (g.0, g.1.code(), id(g.4), g.2, g.3, g.5.map(id));
        groups.sort_unstable_by_key(|(g, _)| order(g));
        for ((source, dim, span, bucket, client, key), c) in groups {
            let [k1, k2, k3] = key.map(id);
            let (hours, start_hour) = hour_key(span, bucket);
            stmt.execute(params![
                source,
                dim.code(),
                hours,
                start_hour,
                id(client),
                k1,
                k2,
                k3,
                c.connections,
                c.packets,
                c.bytes_up,
                c.bytes_down
            ])?;
        }
        Ok(())
    }
}

/// One DNS query as the DNS roll-up sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsFacts {
    /// `sources.id`.
    pub source: i64,
    pub ts: i64,
    pub client: String,
    pub qname: String,
}

/// A name's queries in a bucket: how many, the first and last, and which clients (bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameCounts {
    pub queries: i64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub client_bits: i64,
}

impl NameCounts {
    pub fn merge(&mut self, o: &NameCounts) {
        self.queries += o.queries;
        self.first_ts = self.first_ts.min(o.first_ts);
        self.last_ts = self.last_ts.max(o.last_ts);
        self.client_bits |= o.client_bits;
    }
}

/// The DNS roll-up's additions of a batch of queries, summed per group: per device and hour
/// first, as the flows' ([`FlowDeltas`]).
#[derive(Debug, Default)]
pub struct DnsDeltas {
    texts: Texts,
    /// By (source, hour, client, name).
    hours: HashMap<(i64, i64, u32, u32), NameCounts, foldhash::fast::RandomState>,
}

impl DnsDeltas {
    /// Adds a query whose client has bit `bit` ([`client_bit`]).
    pub fn add(&mut self, q: &DnsFacts, bit: i64) {
        let one = NameCounts { queries: 1, first_ts: q.ts, last_ts: q.ts, client_bits: 1 << bit };
        let k = (q.source, bucket(q.ts, HOUR_MS), self.texts.id(&q.client), self.texts.id(&q.qname));
        self.hours.entry(k).and_modify(|c| c.merge(&one)).or_insert(one);
    }

    pub fn apply(self, conn: &Connection) -> Result<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO dns_rollup_rows (source, hours, start_hour, client, qname, queries, first_ms, last_ms,
                 client_bits)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO UPDATE SET queries = queries + excluded.queries,
                 first_ms = min(first_ms, excluded.first_ms), last_ms = max(last_ms, excluded.last_ms),
                 client_bits = client_bits | excluded.client_bits",
        )?;
        let mut groups: HashMap<_, NameCounts, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(self.hours.len() * 2, Default::default());
        for (&(source, hour, client, qname), c) in &self.hours {
            for span in SPANS {
                groups
                    .entry((source, span, bucket(hour, span), client, qname))
                    .and_modify(|g| g.merge(c))
                    .or_insert(*c);
            }
        }
        // In the table's key order, as the flows' groups.
        let ids = self.texts.stored_ids(conn)?;
        let id = |n: u32| ids[n as usize];
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_unstable_by_key(|&((source, span, bucket, client, qname), _)| {
            (source, id(client), span, bucket, id(qname))
        });
        for ((source, span, bucket, client, qname), c) in groups {
            let (hours, start_hour) = hour_key(span, bucket);
            stmt.execute(params![
                source,
                hours,
                start_hour,
                id(client),
                id(qname),
                c.queries,
                c.first_ts - bucket,
                c.last_ts - bucket,
                c.client_bits
            ])?;
        }
        Ok(())
    }
}

/// The bit of `client` in `dns_rollup.client_bits`, given on its first query.
pub fn client_bit(conn: &Connection, client: &str) -> Result<i64> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO client_bits (client, bit) SELECT ?1, min(count(*), ?2) FROM client_bits",
    )?
    .execute(params![client, CLIENT_BITS])?;
    Ok(conn.prepare_cached("SELECT bit FROM client_bits WHERE client = ?1")?.query_row([client], |r| r.get(0))?)
}

/// Whether the roll-ups are empty while rows they should sum exist: a database older than them.
pub fn is_unfilled(conn: &Connection) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM rollup) AND NOT EXISTS (SELECT 1 FROM dns_rollup)
             AND (EXISTS (SELECT 1 FROM flows) OR EXISTS (SELECT 1 FROM dns_queries))",
        [],
        |r| r.get(0),
    )?)
}

/// Fills the roll-ups from the rows already stored (a database older than them).
pub fn rebuild(conn: &Connection) -> Result<()> {
    fill(conn, "1", [])
}

/// Makes one source's roll-ups again from its rows: an import writes its rows without them and
/// sums them once, at its end (every group written once, not once per sweep).
pub fn rebuild_source(conn: &Connection, source: i64) -> Result<()> {
    for table in ["rollup_rows", "dns_rollup_rows", "rollup_packed", "dns_rollup_packed"] {
        conn.execute(&format!("DELETE FROM {table} WHERE source = ?1"), [source])?;
    }
    fill(conn, "source = ?1", [source])
}

/// Adds the rows `filter` keeps to the roll-ups.
fn fill<P: rusqlite::Params + Copy>(conn: &Connection, filter: &str, params: P) -> Result<()> {
    let mut flows = FlowDeltas::default();
    let mut stmt = conn.prepare(&format!("SELECT {} FROM flows WHERE {filter}", FlowFacts::COLUMNS))?;
    for f in stmt.query_map(params, FlowFacts::from_row)? {
        flows.change(None, &f.context("reading flows")?);
    }
    flows.apply(conn)?;
    let mut dns = DnsDeltas::default();
    let mut stmt = conn.prepare(&format!("SELECT ts, client, qname, source FROM dns_queries WHERE {filter}"))?;
    let rows = stmt.query_map(params, |r| {
        Ok(DnsFacts { ts: r.get(0)?, client: r.get(1)?, qname: r.get(2)?, source: r.get(3)? })
    })?;
    let mut bits: HashMap<String, i64> = HashMap::new();
    for q in rows {
        let q = q.context("reading the DNS log")?;
        let bit = match bits.get(&q.client) {
            Some(b) => *b,
            None => *bits.entry(q.client.clone()).or_insert(client_bit(conn, &q.client)?),
        };
        dns.add(&q, bit);
    }
    dns.apply(conn)
}

/// The two roll-ups, each with its packed days ([`super::packed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Of {
    /// `rollup_rows`, `rollup_packed`: the flows.
    Flows,
    /// `dns_rollup_rows`, `dns_rollup_packed`: the DNS log.
    Dns,
}

impl Of {
    /// The table of hour and day rows.
    pub fn table(self) -> &'static str {
        match self {
            Self::Flows => "rollup_rows",
            Self::Dns => "dns_rollup_rows",
        }
    }

    /// The smallest client after `?2` of source `?1`'s rows, and of its packed days: one
    /// look-up of the key each. Every flow is in one group of the protocol dimension, so its
    /// clients and days are the flows'.
    fn next_client_sql(self) -> [String; 2] {
        let dim = Dim::Protocol.code();
        match self {
            Self::Flows => ["rollup_rows", "rollup_packed"]
                .map(|t| format!("SELECT min(client) FROM {t} WHERE source = ?1 AND dim = {dim} AND client > ?2")),
            Self::Dns => ["dns_rollup_rows", "dns_rollup_packed"]
                .map(|t| format!("SELECT min(client) FROM {t} WHERE source = ?1 AND client > ?2")),
        }
    }

    /// The start hour of client `?2`'s newest packed day of source `?1`: the last entry of the
    /// key's range.
    fn newest_packed_sql(self) -> String {
        match self {
            Self::Flows => format!(
                "SELECT max(start_hour) FROM rollup_packed WHERE source = ?1 AND dim = {} AND client = ?2",
                Dim::Protocol.code()
            ),
            Self::Dns => "SELECT max(start_hour) FROM dns_rollup_packed WHERE source = ?1 AND client = ?2".to_owned(),
        }
    }
}

/// A period of one source's rows from `since` on, as the roll-ups cover it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    /// `sources.id`: a period never mixes sources.
    pub source: i64,
    pub since: i64,
    /// The first hour boundary at or after `since`.
    first_hour: i64,
    /// The first midnight at or after `since`: day rows and packed days from here.
    first_midnight: i64,
    /// Per roll-up ([`Of`] order): the end of the newest packed day, in unix ms (`i64::MIN`
    /// when none is), and every device's id ([`Period::client_ids`]).
    packed_until: [i64; 2],
    every_device: [String; 2],
}

impl Period {
    /// The period of `source` from `since`, read in the snapshot of the reads that use it
    /// ([`super::Store::snapshot`]): which days are packed says where its hour rows start.
    pub fn read(conn: &Connection, source: i64, since: i64) -> Result<Self> {
        let up = |span: i64| since + (span - since.rem_euclid(span)) % span;
        let mut packed_until = [i64::MIN; 2];
        let mut every_device = [String::new(), String::new()];
        for of in [Of::Flows, Of::Dns] {
            // Each device with rows or packed days, found by one look-up of the key each;
            // client 0 (every device, before schema 13) is never one.
            let mut ids = std::collections::BTreeSet::new();
            for sql in of.next_client_sql() {
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut after = EMPTY_ID;
                while let Some(id) = stmt.query_row(params![source, after], |r| r.get::<_, Option<i64>>(0))? {
                    ids.insert(id);
                    after = id;
                }
            }
            let mut newest = conn.prepare_cached(&of.newest_packed_sql())?;
            for &id in &ids {
                if let Some(hour) = newest.query_row(params![source, id], |r| r.get::<_, Option<i64>>(0))? {
                    packed_until[of as usize] = packed_until[of as usize].max((hour + HOURS_PER_DAY) * HOUR_MS);
                }
            }
            every_device[of as usize] = ids_json(ids);
        }
        Ok(Self { source, since, first_hour: up(HOUR_MS), first_midnight: up(DAY_MS), packed_until, every_device })
    }

    /// `:clients` of [`CLIENT_IN`] for `clients`' addresses (one never stored matches nothing),
    /// or for every device (`None`): each device with rows or packed days of `of`. Every
    /// device's figures are the sum of the devices' rows; naming the devices keeps a read to
    /// the period's ranges of the key, where no client term would make it walk every bucket of
    /// every device.
    pub fn client_ids(&self, conn: &Connection, of: Of, clients: Option<&[String]>) -> Result<String> {
        let Some(list) = clients else { return Ok(self.every_device[of as usize].clone()) };
        let mut stmt = conn.prepare_cached("SELECT id FROM texts WHERE text = ?1")?;
        let mut ids = std::collections::BTreeSet::new();
        for c in list {
            ids.extend(stmt.query_row([c], |r| r.get::<_, i64>(0)).optional()?);
        }
        Ok(ids_json(ids))
    }

    /// Where `of`'s hour rows start for a read by the hour: the first hour boundary, or the end
    /// of the newest packed day when that is later. A packed day keeps no hour rows (they go
    /// as it is packed, [`super::packed`]), so its hours are read from its flows or queries,
    /// which hold the same numbers ([`flows_between`], the DNS log).
    pub fn hourly_from(&self, of: Of) -> i64 {
        self.packed_until[of as usize].max(self.first_hour)
    }

    /// The end of the period's head, the part before `of`'s hour and day rows: read from its
    /// flows or queries ([`head_flows`]). The first hour boundary, or the first midnight when
    /// the period starts on a packed day.
    pub fn head_until(&self, of: Of) -> i64 {
        self.hourly_from(of).min(self.first_midnight)
    }

    /// The rows of `of`'s table in the period that `filter` keeps, as a subquery: its source's
    /// day rows from `:days` ([`Period::day_rows_from`]) and its hour rows from `:hours`
    /// ([`Period::hour_rows_from`]) to `:days`. Two ranges joined by UNION ALL rather than one
    /// OR, so each is a range of the primary key (source first, hours and start_hour after the
    /// filter's columns) and not a scan of every bucket of a month. The source is an integer,
    /// written into the SQL.
    pub fn rows(&self, of: Of, filter: &str) -> String {
        let (source, table) = (self.source, of.table());
        format!(
            "(SELECT * FROM {table} WHERE source = {source} AND {filter} AND hours = {HOURS_PER_DAY}
                  AND start_hour >= :days
              UNION ALL
              SELECT * FROM {table} WHERE source = {source} AND {filter} AND hours = 1 AND start_hour >= :hours
                  AND start_hour < :days)"
        )
    }

    /// The packed days ([`packed`]) of `dim` in the period (those from its first midnight)
    /// of the clients `ids` ([`Period::client_ids`]).
    pub fn packed_flow_days(&self, conn: &Connection, dim: Dim, ids: &str) -> Result<Vec<packed::FlowDay>> {
        packed::flow_days(conn, self.source, dim.code(), self.day_rows_from(), ids)
    }

    /// `:days` of [`Period::rows`]: the first midnight, in hours since 1970.
    pub fn day_rows_from(&self) -> i64 {
        self.first_midnight.div_euclid(HOUR_MS)
    }

    /// `:hours` of [`Period::rows`] for `of`: [`Period::head_until`] in hours since 1970.
    pub fn hour_rows_from(&self, of: Of) -> i64 {
        self.head_until(of).div_euclid(HOUR_MS)
    }
}

/// The condition of a roll-up read on a row's `client`: one of the ids the parameter
/// `:clients` holds ([`Period::client_ids`]), so each device's rows are a range of the key.
pub const CLIENT_IN: &str = "client IN (SELECT value FROM json_each(:clients))";

/// Ids as the JSON array `:clients` binds.
fn ids_json(ids: std::collections::BTreeSet<i64>) -> String {
    serde_json::Value::from(ids.into_iter().collect::<Vec<_>>()).to_string()
}

/// The text of a compact roll-up key part or name: '' for [`EMPTY_ID`], as the rows' readers'
/// `coalesce(text, '')` gives it.
fn key_text(texts: &mut TextIds, conn: &Connection, id: i64) -> rusqlite::Result<String> {
    if id == EMPTY_ID { Ok(String::new()) } else { texts.text(conn, id) }
}

/// The groups of `dim` over `period` for `clients` (every device: `None`); `head` are the
/// period's flows before its hour and day rows ([`head_flows`]), read once for every
/// dimension.
pub fn flow_groups(
    conn: &Connection,
    dim: Dim,
    period: &Period,
    clients: Option<&[String]>,
    head: &[FlowFacts],
) -> Result<HashMap<Key, Counts>> {
    let mut out: HashMap<Key, Counts> = HashMap::new();
    let ids = period.client_ids(conn, Of::Flows, clients)?;
    // Summed by ids, then named: each group's texts read once.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT coalesce(t1.text, ''), coalesce(t2.text, ''), coalesce(t3.text, ''), g.c, g.p, g.u, g.d
         FROM (SELECT k1, k2, k3, sum(connections) AS c, sum(packets) AS p, sum(bytes_up) AS u,
                   sum(bytes_down) AS d FROM {} GROUP BY k1, k2, k3) g
             LEFT JOIN texts t1 ON t1.id = g.k1 LEFT JOIN texts t2 ON t2.id = g.k2 LEFT JOIN texts t3 ON t3.id = g.k3",
        period.rows(Of::Flows, &format!("dim = :dim AND {CLIENT_IN}"))
    ))?;
    let rows = stmt.query_map(
        rusqlite::named_params! {
            ":dim": dim.code(), ":clients": ids, ":days": period.day_rows_from(),
            ":hours": period.hour_rows_from(Of::Flows),
        },
        |r| {
            let key: Key = [r.get(0)?, r.get(1)?, r.get(2)?];
            Ok((key, Counts::from_row_at(r, 3)?))
        },
    )?;
    for row in rows {
        let (key, c) = row.context("reading the roll-up")?;
        out.entry(key).or_default().merge(&c);
    }
    // The packed days, summed by ids, then named.
    let mut sums: HashMap<[i64; 3], Counts> = HashMap::new();
    for day in period.packed_flow_days(conn, dim, &ids)? {
        for (key, c) in day.groups {
            sums.entry(key).or_default().merge(&c);
        }
    }
    let mut texts = TextIds::default();
    for (ids, c) in sums {
        let [k1, k2, k3] = ids;
        let key = [key_text(&mut texts, conn, k1)?, key_text(&mut texts, conn, k2)?, key_text(&mut texts, conn, k3)?];
        out.entry(key).or_default().merge(&c);
    }
    out.retain(|_, c| c.connections != 0);
    for f in head {
        for (d, key) in f.keys() {
            if d == dim {
                out.entry(key.map(str::to_owned)).or_default().add(1, f);
            }
        }
    }
    Ok(out)
}

/// Connections per client over `period` (for the devices section); `head` as for
/// [`flow_groups`].
pub fn client_groups(
    conn: &Connection,
    period: &Period,
    clients: Option<&[String]>,
    head: &[FlowFacts],
) -> Result<HashMap<String, Counts>> {
    let mut out: HashMap<String, Counts> = HashMap::new();
    let ids = period.client_ids(conn, Of::Flows, clients)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT t.text, g.c, g.p, g.u, g.d
         FROM (SELECT client, sum(connections) AS c, sum(packets) AS p, sum(bytes_up) AS u, sum(bytes_down) AS d
               FROM {} GROUP BY client) g
             JOIN texts t ON t.id = g.client",
        period.rows(Of::Flows, &format!("dim = {} AND {CLIENT_IN}", Dim::Protocol.code()))
    ))?;
    let rows = stmt.query_map(
        rusqlite::named_params! {
            ":clients": ids, ":days": period.day_rows_from(), ":hours": period.hour_rows_from(Of::Flows),
        },
        |r| Ok((r.get::<_, String>(0)?, Counts::from_row_at(r, 1)?)),
    )?;
    for row in rows {
        let (client, c) = row.context("reading the roll-up")?;
        out.entry(client).or_default().merge(&c);
    }
    let mut sums: HashMap<i64, Counts> = HashMap::new();
    for day in period.packed_flow_days(conn, Dim::Protocol, &ids)? {
        let sum = sums.entry(day.client).or_default();
        day.groups.values().for_each(|c| sum.merge(c));
    }
    let mut texts = TextIds::default();
    for (client, c) in sums {
        out.entry(texts.text(conn, client)?).or_default().merge(&c);
    }
    out.retain(|_, c| c.connections != 0);
    for f in head {
        out.entry(f.client.clone()).or_default().add(1, f);
    }
    Ok(out)
}

/// The flows that started in the period before its hour and day rows
/// ([`Period::head_until`]).
pub fn head_flows(conn: &Connection, period: &Period, clients: Option<&[String]>) -> Result<Vec<FlowFacts>> {
    flows_between(conn, period, period.since, period.head_until(Of::Flows), clients)
}

/// The flows of `source` that started from `from` to before `until`, rows and packed.
///
/// Read as ids from the rows and the packed days' virtual table and named from one dictionary
/// of the read's texts, not through the `flows` view, whose joins to `texts` for every label of
/// every flow were most of a packed day's cost (a day of a household is thousands of flows).
pub fn flows_between(
    conn: &Connection,
    period: &Period,
    from: i64,
    until: i64,
    clients: Option<&[String]>,
) -> Result<Vec<FlowFacts>> {
    let select = |table: &str| {
        format!(
            "SELECT {} FROM {table} WHERE first_seen >= ?1 AND first_seen < ?2 AND source = ?3
                 AND client IN (SELECT value FROM json_each(?4))",
            FlowFacts::ID_COLUMNS
        )
    };
    let mut stmt = conn.prepare_cached(&format!(
        "{} UNION ALL {}",
        select("main.flow_rows"),
        select(<super::packed_flows::Flows as Kind>::MODULE)
    ))?;
    let ids = period.client_ids(conn, Of::Flows, clients)?;
    let rows = stmt.query_map(params![from, until, period.source, ids], FlowFacts::ids_of)?;
    let mut texts = TextIds::default();
    let mut out = Vec::new();
    for row in rows {
        let ids = row.context("reading the period's first flows")?;
        out.push(FlowFacts::from_ids(&mut texts, conn, ids)?);
    }
    Ok(out)
}

/// Per name over `period`: queries, first and last time, and the bits of the clients that
/// asked; for `clients`, or every device (`None`).
pub fn name_groups(
    conn: &Connection,
    period: &Period,
    clients: Option<&[String]>,
) -> Result<HashMap<String, NameCounts>> {
    let mut out: HashMap<String, NameCounts> = HashMap::new();
    let ids = period.client_ids(conn, Of::Dns, clients)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT coalesce(n.text, ''), g.q, g.f, g.l, g.b
         FROM (SELECT qname, sum(queries) AS q, min(start_hour * {HOUR_MS} + first_ms) AS f,
                   max(start_hour * {HOUR_MS} + last_ms) AS l, client_bits AS b FROM {}
               GROUP BY qname, client_bits) g
             LEFT JOIN texts n ON n.id = g.qname",
        period.rows(Of::Dns, CLIENT_IN)
    ))?;
    let rows = stmt.query_map(
        rusqlite::named_params! {
            ":clients": ids, ":days": period.day_rows_from(), ":hours": period.hour_rows_from(Of::Dns),
        },
        |r| {
            let c = NameCounts { queries: r.get(1)?, first_ts: r.get(2)?, last_ts: r.get(3)?, client_bits: r.get(4)? };
            Ok((r.get::<_, String>(0)?, c))
        },
    )?;
    let merge = |out: &mut HashMap<String, NameCounts>, name: String, c: NameCounts| {
        out.entry(name).and_modify(|e| e.merge(&c)).or_insert(c);
    };
    for row in rows {
        let (name, c) = row.context("reading the DNS roll-up")?;
        merge(&mut out, name, c);
    }
    let mut texts = TextIds::default();
    let days = packed::dns_days(conn, period.source, period.day_rows_from(), &ids)?;
    for (start_hour, names) in days {
        let start = start_hour * HOUR_MS;
        for (qname, c) in names {
            let c = NameCounts { first_ts: start + c.first_ts, last_ts: start + c.last_ts, ..c };
            merge(&mut out, key_text(&mut texts, conn, qname)?, c);
        }
    }
    // The period's first queries, read as ids from the rows and the packed days, as the
    // flows' ([`flows_between`]).
    let select = |table: &str| {
        format!(
            "SELECT qname, ts, client FROM {table} WHERE ts >= ?1 AND ts < ?2 AND source = ?3
                 AND client IN (SELECT value FROM json_each(?4))"
        )
    };
    let mut stmt = conn.prepare_cached(&format!(
        "{} UNION ALL {}",
        select("main.dns_query_rows"),
        select(<super::packed_dns::Queries as Kind>::MODULE)
    ))?;
    let rows = stmt.query_map(params![period.since, period.head_until(Of::Dns), period.source, ids], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    })?;
    let mut bits: HashMap<i64, i64> = HashMap::new();
    let mut bit_of = conn.prepare_cached("SELECT bit FROM client_bits WHERE client = ?1")?;
    for row in rows {
        let (qname, ts, client) = row.context("reading the period's first DNS queries")?;
        let bit = match bits.get(&client) {
            Some(&b) => b,
            None => {
                let b = bit_of.query_row([texts.text(conn, client)?], |r| r.get(0)).optional()?.unwrap_or(CLIENT_BITS);
                *bits.entry(client).or_insert(b)
            }
        };
        let c = NameCounts { queries: 1, first_ts: ts, last_ts: ts, client_bits: 1 << bit };
        merge(&mut out, key_text(&mut texts, conn, qname)?, c);
    }
    Ok(out)
}
