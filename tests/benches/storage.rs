//! `cargo xtask bench storage`: bytes on disk per flow kept, in a household's steady state,
//! with the share of every table and index, beside the version-7 layout of the same rows.
//!
//! - **generate**: a household's 36 days (6 devices, [`FLOWS_PER_DAY`] connections a day, a
//!   fifth of them IPv6), written through the daemon's own path: `Store::open`, one
//!   `Store::write` transaction per 5-minute sweep holding that sweep's new flows, the long
//!   flows of the sweep before again with larger counters (a quarter of those named only now,
//!   by a late DNS answer), and the sweep's DNS exchanges. Names are drawn Zipf-like from the
//!   built-in entity table's domains and as many unknown ones, labelled by the real `Labeler`;
//!   every DNS lookup is an A and an AAAA query on one UDP flow to the tunnel's resolver (its
//!   own kernel entry), answered with the name's CNAME and two addresses, a few NXDOMAIN.
//!   A sweep here is 5 minutes (`tracker run` sweeps every 2 s: a row ends the same).
//! - **steady state**: `Store::prune` with the default retention (30 days) at the data's end
//!   removes the first 6 days as the daemon's hourly prune would, leaving the pages it freed
//!   handed back (incremental vacuum); then the daily roll-ups of the 11 months before, which a
//!   year's default keeps, are this month's daily rows again, shifted back a month at a time.
//!   The WAL is checkpointed (TRUNCATE) before the file is measured.
//! - **measure**: `page_count * page_size` over the flows kept; SQLite's `dbstat` gives each
//!   table's and index's pages. The baseline is the same rows copied through the readable
//!   tables into a new database of schema version 7 (the layout before issue 14's storage
//!   work), vacuumed the same way: copied in order, it is as compact as that layout gets.
//!
//! Prints figures beside the target; fails only when a check of the generated data fails.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, ensure};
use rusqlite::{Connection, params};
use tracker::{
    analysis::{
        addr::AddrClass,
        dns::{Answer, AnswerData, Transport},
        entity::EntityTable,
        labels::Labeler,
        names::{FlowName, NameSource},
        protocol::{AppProtocol, Classification, Decided},
    },
    store::{
        DnsRecord, FlowRecord, Store,
        retention::Retention,
        rollup::{DAY_MS, HOUR_MS},
        schema,
    },
};
use tracker_tests::rng::{Rng, zipf_cdf};

const SEED: u64 = 0x7374_6f72_6167_6531;
/// The data ends at a fixed instant (2026-12-01T12:34:56.789Z), as the report benchmark's.
const END_MS: i64 = 1_796_128_496_789;
/// Days generated; the prune keeps the last [`DAYS_KEPT`].
const DAYS_GENERATED: i64 = 36;
const DAYS_KEPT: i64 = 30;
/// Months of daily roll-ups before the kept raw month: a year's default, less the month.
const OLDER_MONTHS: i64 = 11;
/// Connections a day from the whole household, DNS lookups' own UDP flows included.
const FLOWS_PER_DAY: i64 = 10_000;
/// A sweep's window. `tracker run` sweeps every 2 s; a row ends the same whichever window
/// wrote it, and fewer transactions generate faster.
const SWEEP_MS: i64 = 5 * 60_000;
const DEVICES: u64 = 6;
/// Share of connections over IPv6 (the tunnel is dual-stack).
const V6_SHARE: f64 = 0.2;
/// Share of connections still open at the next sweep, written again with larger counters.
const LONG_SHARE: f64 = 0.2;
/// Share of connections that follow a fresh lookup: the rest reuse an answer still in the
/// phone's cache (answers live for their TTL, mostly a minute or more; one lookup serves the
/// connections an app opens to the name meanwhile). Each lookup is two queries (A and AAAA)
/// on one UDP flow, so queries per flow kept = 2 * share / (1 + share).
const LOOKUP_SHARE: f64 = 0.2;
/// Kernel boots over the generated days (a flow's key holds its boot).
const BOOTS: i64 = 4;
/// Names in the pool: the entity table's domains (with common prefixes), then unknown ones.
const REAL_NAMES: usize = 1_500;
const UNKNOWN_NAMES: usize = 1_500;
const PREFIXES: [&str; 6] = ["", "www.", "api.", "cdn.", "app.", "edge."];
const CDN_TARGETS: [&str; 4] = ["a.akamaiedge.net", "cloudfront.net", "fastly.net", "cdn.cloudflare.net"];
/// The tunnel's resolver, as wg-quick configs name it.
const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The target.
const TARGET_BYTES_PER_FLOW: f64 = 120.0;

const FLOW_STREAM: u64 = 1;
const POOL_STREAM: u64 = 2;
const BOOT_STREAM: u64 = 3;

struct PoolName {
    name: String,
    cname: Option<String>,
    /// Its v4 addresses start here (8 a name, in 198.18.0.0/15, benchmarking addresses standing
    /// for public hosts); its v6 ones are 2001:db8::/32 addresses of the same index.
    index: u32,
}

struct Gen {
    pool: Vec<PoolName>,
    names: Vec<f64>,
    devices: Vec<f64>,
    labeler: Labeler,
    boots: Vec<String>,
}

impl Gen {
    fn new() -> Self {
        let entities = EntityTable::builtin();
        let domains: Vec<&String> = entities.companies().iter().flat_map(|c| &c.domains).collect();
        let mut names: Vec<String> = Vec::new();
        'fill: for prefix in PREFIXES {
            for d in &domains {
                if names.len() >= REAL_NAMES {
                    break 'fill;
                }
                names.push(format!("{prefix}{d}"));
            }
        }
        let mut rng = Rng::new(SEED, POOL_STREAM, 0);
        names.extend((0..UNKNOWN_NAMES).map(|n| match n % 3 {
            0 => format!("cdn{n}.example{}.com", rng.below(300)),
            1 => format!("api{n}.shop{}.net", rng.below(300)),
            _ => format!("t{n}.metrics{}.io", rng.below(300)),
        }));
        for i in (1..names.len()).rev() {
            names.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let pool = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let cname = (rng.below(4) == 0)
                    .then(|| format!("e{i}.{}", CDN_TARGETS[rng.below(CDN_TARGETS.len() as u64) as usize]));
                PoolName { name, cname, index: i as u32 }
            })
            .collect::<Vec<_>>();
        // Boot ids as the kernel writes them (/proc/sys/kernel/random/boot_id).
        let boots = (0..BOOTS as u64)
            .map(|b| {
                let mut r = Rng::new(SEED, BOOT_STREAM, b);
                let h = format!("{:016x}{:016x}", r.next_u64(), r.next_u64());
                format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            })
            .collect();
        Self {
            names: zipf_cdf(pool.len(), 1.0),
            pool,
            devices: zipf_cdf(DEVICES as usize, 1.0),
            labeler: Labeler::new(entities.into()),
            boots,
        }
    }

    fn start_ms() -> i64 {
        END_MS - DAYS_GENERATED * DAY_MS
    }

    fn sweeps() -> i64 {
        DAYS_GENERATED * DAY_MS / SWEEP_MS
    }

    fn boot_of(sweep: i64) -> usize {
        (sweep * BOOTS / Self::sweeps()) as usize
    }

    fn boot_start(sweep: i64) -> i64 {
        Self::start_ms() + Self::boot_of(sweep) as i64 * (DAYS_GENERATED * DAY_MS / BOOTS)
    }

    /// Connection `i` (in start order) as sweep `round` after its first writes it: its lookup's
    /// queries come with round 0.
    fn flow(&self, i: i64, round: u64) -> (FlowRecord, Vec<DnsRecord>) {
        let mut rng = Rng::new(SEED, FLOW_STREAM, i as u64);
        let first_seen_ms =
            Self::start_ms() + i * DAY_MS / FLOWS_PER_DAY + rng.below((DAY_MS / FLOWS_PER_DAY) as u64) as i64;
        let sweep = (first_seen_ms - Self::start_ms()) / SWEEP_MS;
        let device = rng.zipf(&self.devices) as u8;
        let v6 = rng.unit() < V6_SHARE;
        let client: IpAddr = if v6 {
            Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2 + u16::from(device)).into()
        } else {
            Ipv4Addr::new(10, 77, 0, 2 + device).into()
        };
        let p = &self.pool[rng.zipf(&self.names)];
        let remote: IpAddr = if v6 {
            Ipv6Addr::new(0x2001, 0xdb8, (p.index >> 16) as u16, p.index as u16, 0, 0, 0, 1 + rng.below(8) as u16)
                .into()
        } else {
            Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 8 * p.index + rng.below(8) as u32).into()
        };
        let lookup = rng.unit() < LOOKUP_SHARE;
        let (kind, r) = (rng.unit(), rng.unit());
        let (protocol, remote_port, app, source) = match kind {
            k if k < 0.55 => {
                (6, 443, (AppProtocol::Tls, Decided::Payload), if r < 0.5 { NameSource::Dns } else { NameSource::Sni })
            }
            k if k < 0.85 => (
                17,
                443,
                (AppProtocol::Quic, Decided::Payload),
                if r < 0.6 { NameSource::Dns } else { NameSource::Sni },
            ),
            k if k < 0.92 => (6, 80, (AppProtocol::Http, Decided::Payload), NameSource::Http),
            _ => (17, 443, (AppProtocol::Unknown, Decided::Port), NameSource::Dns),
        };
        let long = rng.unit() < LONG_SHARE;
        // A quarter of long connections learn their name only at their second write.
        let named = round > 0 || !(long && rng.unit() < 0.25);
        let name = if named {
            FlowName {
                name: Some(p.name.clone()),
                source: Some(source),
                cname: p.cname.clone().filter(|_| source == NameSource::Dns),
            }
        } else {
            FlowName::default()
        };
        let app = Classification { protocol: app.0, decided: app.1 };
        let scale = round + 1;
        let bytes_down = rng.log_uniform(400.0, 8e6) * scale;
        let bytes_up = (200 + bytes_down / 100 * rng.below(30)) * scale;
        let client_port = 49_152 + rng.below(16_384) as u16;
        let flow = FlowRecord {
            kernel_first_ns: (first_seen_ms - Self::boot_start(sweep)) as u64 * 1_000_000 + rng.below(1_000_000),
            client,
            remote,
            protocol,
            client_port,
            remote_port,
            packets_up: bytes_up / 1200 + 2,
            bytes_up,
            packets_down: bytes_down / 1200 + 2,
            bytes_down,
            tcp_flags: if protocol == 6 { 0x1b } else { 0 },
            first_seen_ms,
            last_seen_ms: first_seen_ms + rng.log_uniform(50.0, 240_000.0) as i64 + round as i64 * SWEEP_MS,
            labels: self.labeler.label(&name, AddrClass::Public, app),
            name,
            remote_class: AddrClass::Public,
        };
        let dns = if lookup && round == 0 { self.lookup(&mut rng, p, client, first_seen_ms) } else { Vec::new() };
        (flow, dns)
    }

    /// A lookup of `p` just before a connection: A and AAAA from one port, one DNS flow.
    fn lookup(&self, rng: &mut Rng, p: &PoolName, client: IpAddr, before_ms: i64) -> Vec<DnsRecord> {
        let ts_ms = before_ms - 20 - rng.below(200) as i64;
        let client_port = 1024 + rng.below(60_000) as u16;
        let nx = rng.unit() < 0.03;
        let resolver: IpAddr = RESOLVER.into();
        let mut out = Vec::new();
        for (qtype, v6) in [("A", false), ("AAAA", true)] {
            let mut answers = Vec::new();
            let mut owner = p.name.clone();
            if let (Some(c), false) = (&p.cname, nx) {
                answers.push(Answer {
                    name: owner,
                    rtype: "CNAME".into(),
                    ttl: 300,
                    data: AnswerData::Cname(c.clone()),
                });
                owner = c.clone();
            }
            for k in 0..if nx { 0 } else { 2 } {
                let addr: IpAddr = if v6 {
                    Ipv6Addr::new(0x2001, 0xdb8, (p.index >> 16) as u16, p.index as u16, 0, 0, 0, 1 + k).into()
                } else {
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 8 * p.index + u32::from(k)).into()
                };
                answers.push(Answer {
                    name: owner.clone(),
                    rtype: qtype.into(),
                    ttl: 60,
                    data: AnswerData::Addr(addr),
                });
            }
            out.push(DnsRecord {
                ts_ms,
                answered_ms: Some(ts_ms + 3 + rng.below(60) as i64),
                client,
                client_port,
                resolver,
                resolver_port: 53,
                transport: Transport::Udp,
                dns_id: rng.below(65_536) as u16,
                qname: p.name.clone(),
                qtype: qtype.into(),
                rcode: Some(if nx { "NXDOMAIN" } else { "NOERROR" }.into()),
                truncated: false,
                answers,
                blocked_by: None,
            });
        }
        out
    }

    /// The lookup's own UDP flow to the resolver, as the kernel counts it.
    fn dns_flow(q: &DnsRecord, sweep: i64, seq: u64) -> FlowRecord {
        let name = FlowName::default();
        let app = Classification { protocol: AppProtocol::Dns, decided: Decided::Port };
        FlowRecord {
            kernel_first_ns: (q.ts_ms - Self::boot_start(sweep)) as u64 * 1_000_000 + seq % 1_000_000,
            client: q.client,
            remote: q.resolver,
            protocol: 17,
            client_port: q.client_port,
            remote_port: 53,
            packets_up: 2,
            bytes_up: 2 * (40 + q.qname.len() as u64),
            packets_down: 2,
            bytes_down: 2 * (90 + q.qname.len() as u64),
            tcp_flags: 0,
            first_seen_ms: q.ts_ms,
            last_seen_ms: q.answered_ms.unwrap_or(q.ts_ms),
            labels: Labeler::default().label(&name, AddrClass::Tunnel, app),
            name,
            remote_class: AddrClass::Tunnel,
        }
    }
}

/// Generates the days into a new database at `path`; returns the flows and queries written.
fn generate(g: &Gen, path: &Path) -> Result<(u64, u64)> {
    let mut store = Store::open(path)?;
    let (mut flows_written, mut queries) = (0u64, 0u64);
    let started = Instant::now();
    let mut i = 0i64;
    let mut long_before: Vec<i64> = Vec::new();
    for sweep in 0..Gen::sweeps() {
        let mut flows = Vec::new();
        let mut dns = Vec::new();
        for &j in &long_before {
            flows.push(g.flow(j, 1).0);
        }
        let mut long_now = Vec::new();
        let end = Gen::start_ms() + (sweep + 1) * SWEEP_MS;
        while Gen::start_ms() + i * DAY_MS / FLOWS_PER_DAY < end && (i as u64) < (FLOWS_PER_DAY * DAYS_GENERATED) as u64
        {
            let (f, q) = g.flow(i, 0);
            if let Some(first) = q.first() {
                flows.push(Gen::dns_flow(first, sweep, i as u64));
                flows_written += 1;
            }
            if f.last_seen_ms >= end {
                long_now.push(i);
            }
            queries += q.len() as u64;
            dns.extend(q);
            flows.push(f);
            flows_written += 1;
            i += 1;
        }
        let boot = &g.boots[Gen::boot_of(sweep)];
        store.write(|w| {
            w.upsert_flows(boot, &flows)?;
            w.insert_dns(&dns)
        })?;
        long_before = long_now;
        if sweep % (Gen::sweeps() / 6) == 0 {
            eprintln!(
                "generate: day {} of {DAYS_GENERATED}, {flows_written} flows, {queries} queries, {:.0?}",
                sweep * SWEEP_MS / DAY_MS,
                started.elapsed()
            );
        }
    }
    Ok((flows_written, queries))
}

/// The retention's prune at the data's end, and the older months' daily roll-ups.
fn steady_state(path: &Path) -> Result<()> {
    let mut store = Store::open(path)?;
    let keep = Retention { raw: std::time::Duration::from_secs(DAYS_KEPT as u64 * 86_400), ..Retention::default() };
    let pruned = store.prune(keep, END_MS, &mut |_| {})?;
    eprintln!("steady state: pruned {pruned:?}");
    drop(store);
    let c = Connection::open(path)?;
    let month = DAYS_KEPT * DAY_MS;
    let first_day = END_MS - month - (END_MS - month).rem_euclid(DAY_MS);
    for m in 1..=OLDER_MONTHS {
        // Only the days of the kept month: each older month is those days, a month earlier
        // (the generated days before the kept month stay as they are).
        // The compact tables (schema 9) count buckets in hours; the DNS roll-up's first and
        // last query are offsets into their bucket, the same a month earlier.
        // The prune packed the days that closed 48 hours before the end (schema 10): those
        // are copied packed, the rest as rows, which the second prune below packs.
        for (table, cols, days) in [
            (
                "rollup_rows",
                "source, dim, client, hours, start_hour - ?1, k1, k2, k3, connections, packets, bytes_up, bytes_down",
                "hours = ?2",
            ),
            (
                "dns_rollup_rows",
                "source, client, hours, start_hour - ?1, qname, queries, first_ms, last_ms, client_bits",
                "hours = ?2",
            ),
            ("rollup_packed", "source, dim, client, start_hour - ?1, groups", "?2 = ?2"),
            ("dns_rollup_packed", "source, client, start_hour - ?1, names", "?2 = ?2"),
        ] {
            c.execute(
                &format!(
                    "INSERT OR IGNORE INTO {table} SELECT {cols} FROM {table}
                     WHERE {days} AND start_hour >= ?3 AND start_hour < ?3 + ?4"
                ),
                params![m * month / HOUR_MS, DAY_MS / HOUR_MS, first_day / HOUR_MS, month / HOUR_MS],
            )?;
        }
    }
    drop(c);
    let mut store = Store::open(path)?;
    let packed = store.prune(keep, END_MS, &mut |_| {})?;
    eprintln!("steady state: the older months' last days packed too: {packed:?}");
    drop(store);
    vacuum_and_checkpoint(path)
}

fn vacuum_and_checkpoint(path: &Path) -> Result<()> {
    let c = Connection::open(path)?;
    c.execute_batch("PRAGMA incremental_vacuum")?;
    let _: (i64, i64, i64) =
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(())
}

/// The file's bytes and each table's and index's, by dbstat.
struct Sizes {
    file: i64,
    flows: i64,
    queries: i64,
    /// Bytes and rows (cells of leaf pages) of each table and index.
    per_object: BTreeMap<String, (i64, i64)>,
}

fn sizes(path: &Path) -> Result<Sizes> {
    let c = Connection::open(path)?;
    let q = |p: &str| -> Result<i64> { Ok(c.pragma_query_value(None, p, |r| r.get(0))?) };
    let file = q("page_count")? * q("page_size")?;
    let on_disk = fs::metadata(path)?.len() as i64;
    ensure!(
        on_disk == file,
        "{}: {on_disk} bytes on disk, {file} by its pages (WAL not checkpointed?)",
        path.display()
    );
    let mut per_object = BTreeMap::new();
    let mut stmt = c.prepare(
        "SELECT name, sum(pgsize), sum(CASE WHEN pagetype = 'leaf' THEN ncell END) FROM dbstat GROUP BY name",
    )?;
    for row in
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get::<_, Option<i64>>(2)?.unwrap_or(0)))))?
    {
        let (name, size) = row?;
        per_object.insert(name, size);
    }
    let in_trees: i64 = per_object.values().map(|v| v.0).sum();
    per_object.insert("(free pages, pointer maps)".into(), (file - in_trees, 0));
    // Through tracker's reader: its view `flows` counts the packed flows (schema 12) too.
    let flows = match c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'flow_packed'", [], |r| r.get(0))? {
        0 => c.query_row("SELECT count(*) FROM flows", [], |r| r.get(0))?,
        _ => Store::open_reader(path)?.flow_count()? as i64,
    };
    let queries = match c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'dns_packed'", [], |r| r.get(0))? {
        0 => c.query_row("SELECT count(*) FROM dns_queries", [], |r| r.get(0))?,
        _ => Store::open_reader(path)?.dns_count()? as i64,
    };
    Ok(Sizes { file, flows, queries, per_object })
}

/// The same rows in a new database of the version-7 layout, copied through the readable
/// tables (their names and columns are the same in every version since).
fn baseline_copy(from: &Path, to: &Path) -> Result<()> {
    let _ = fs::remove_file(to);
    let c = Connection::open(to)?;
    c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    for sql in &schema::MIGRATIONS[..7] {
        c.execute_batch(sql)?;
    }
    c.execute("ATTACH DATABASE ?1 AS cur", [from.to_str().context("a UTF-8 path")?])?;
    c.execute_batch(
        "BEGIN;
         DELETE FROM main.sources;
         INSERT INTO main.sources SELECT * FROM cur.sources;
         INSERT INTO main.flows (id, boot_id, kernel_first_ns, family, client, remote, protocol, client_port,
             remote_port, packets_up, bytes_up, packets_down, bytes_down, tcp_flags, first_seen, last_seen, name,
             name_source, cname, remote_class, app_protocol, app_decided, encrypted, owner_kind, owner, company,
             site, service, served_by, source)
         SELECT id, boot_id, kernel_first_ns, family, client, remote, protocol, client_port,
             remote_port, packets_up, bytes_up, packets_down, bytes_down, tcp_flags, first_seen, last_seen, name,
             name_source, cname, remote_class, app_protocol, app_decided, encrypted, owner_kind, owner, company,
             site, service, served_by, source FROM cur.flows ORDER BY id;
         INSERT INTO main.dns_queries (id, ts, answered, client, client_port, resolver, resolver_port, transport,
             dns_id, qname, qtype, rcode, truncated, cname, min_ttl, source, blocked_by)
         SELECT id, ts, answered, client, client_port, resolver, resolver_port, transport,
             dns_id, qname, qtype, rcode, truncated, cname, min_ttl, source, blocked_by FROM cur.dns_queries ORDER BY id;
         INSERT INTO main.dns_answers (query_id, position, name, type, ttl, data)
         SELECT query_id, position, name, type, ttl, data FROM cur.dns_answers ORDER BY query_id, position;
         INSERT INTO main.client_bits SELECT client, bit FROM cur.client_bits;
         COMMIT;",
    )?;
    // The day rows not packed yet, per device and (as version 7 kept them) for every device.
    // Each device's `client_bits` is its own bit, so a sum of the distinct ones is their OR.
    for client in ["client", "''"] {
        c.execute_batch(&format!(
            "INSERT INTO main.rollup (source, dim, client, span, bucket, k1, k2, k3, connections, packets,
                 bytes_up, bytes_down)
             SELECT source, dim, {client}, span, bucket, k1, k2, k3, sum(connections), sum(packets),
                 sum(bytes_up), sum(bytes_down)
             FROM cur.rollup WHERE span = {DAY_MS} GROUP BY 1, 2, 3, 5, 6, 7, 8;
             INSERT INTO main.dns_rollup (source, client, span, bucket, qname, queries, first_ts, last_ts,
                 client_bits)
             SELECT source, {client}, span, bucket, qname, sum(queries), min(first_ts), max(last_ts),
                 sum(DISTINCT client_bits)
             FROM cur.dns_rollup WHERE span = {DAY_MS} GROUP BY 1, 2, 4, 5;"
        ))?;
    }
    c.execute_batch("DETACH DATABASE cur")?;
    unpack_into(from, &c)?;
    hour_rows(&c)?;
    // Packed days come back day by day, not in id or key order: VACUUM rebuilds every table
    // in order, as compact as that layout gets.
    c.execute_batch("VACUUM")?;
    drop(c);
    vacuum_and_checkpoint(to)
}

/// The hour rows version 7 kept, per device and for every device, made from the rows `to`
/// holds (all of the kept month's, packed ones unpacked): schema 13 keeps hour rows only for
/// days not packed yet, and a packed day's hours are its packed flows' and queries'. The same
/// GROUP BY the report's unit test checks the writer's roll-ups against.
fn hour_rows(to: &Connection) -> Result<()> {
    let h = HOUR_MS;
    for client in ["client", "''"] {
        for (dim, keys, filter) in [
            ("owner", "coalesce(owner_kind, 'unnamed'), coalesce(owner, ''), ''", "1"),
            ("service", "service, '', ''", "coalesce(service, '') != ''"),
            ("served_by", "served_by, '', ''", "coalesce(served_by, '') != ''"),
            (
                "protocol",
                "CAST(protocol AS TEXT), coalesce(app_protocol, 'unknown'), coalesce(encrypted, 'unknown')",
                "1",
            ),
        ] {
            to.execute_batch(&format!(
                "INSERT INTO rollup (source, dim, client, span, bucket, k1, k2, k3, connections, packets, bytes_up,
                     bytes_down)
                 SELECT source, '{dim}', {client}, {h}, first_seen - first_seen % {h}, {keys}, count(*),
                     sum(packets_up + packets_down), sum(bytes_up), sum(bytes_down)
                 FROM flows WHERE {filter} GROUP BY 1, 3, 5, 6, 7, 8"
            ))?;
        }
        to.execute_batch(&format!(
            "INSERT INTO dns_rollup (source, client, span, bucket, qname, queries, first_ts, last_ts, client_bits)
             SELECT q.source, {}, {h}, q.ts - q.ts % {h}, q.qname, count(*), min(q.ts), max(q.ts),
                 sum(DISTINCT 1 << b.bit)
             FROM dns_queries q JOIN client_bits b ON b.client = q.client GROUP BY 1, 2, 4, 5",
            if client == "client" { "q.client" } else { client }
        ))?;
    }
    Ok(())
}

/// The packed days of `from` (schema 10) as rows of the version-7 roll-ups in `to`, which the
/// readable views do not show.
fn unpack_into(from: &Path, to: &Connection) -> Result<()> {
    use tracker::store::{packed, rollup::Dim};
    let cur = Connection::open(from)?;
    let mut texts: BTreeMap<i64, String> = BTreeMap::new();
    for row in cur.prepare("SELECT id, text FROM texts")?.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (id, text) = row?;
        texts.insert(id, text);
    }
    let text = |id: i64| texts.get(&id).cloned().unwrap_or_default();
    let dims = [Dim::Owner, Dim::Service, Dim::ServedBy, Dim::Protocol];
    let tx = to.unchecked_transaction()?;
    {
        let mut put = tx.prepare(
        "INSERT INTO rollup (source, dim, client, span, bucket, k1, k2, k3, connections, packets, bytes_up, bytes_down)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
        // Version 7 kept every device's day beside each device's; packed days keep only the
        // devices' (schema 12), so the baseline gets their sum back.
        let mut days =
            cur.prepare("SELECT source, dim, client, start_hour, groups FROM rollup_packed ORDER BY 1, 2, 4, 3")?;
        let mut rows = days.query([])?;
        let mut all: BTreeMap<[i64; 3], [i64; 4]> = BTreeMap::new();
        let mut at: Option<(i64, &str, i64)> = None;
        let mut flush = |at: Option<(i64, &str, i64)>, all: &mut BTreeMap<[i64; 3], [i64; 4]>| -> Result<()> {
            if let Some((source, dim, start_hour)) = at {
                for ([k1, k2, k3], [c, p, u, d]) in std::mem::take(all) {
                    put.execute(params![
                        source,
                        dim,
                        "",
                        DAY_MS,
                        start_hour * HOUR_MS,
                        text(k1),
                        text(k2),
                        text(k3),
                        c,
                        p,
                        u,
                        d
                    ])?;
                }
            }
            Ok(())
        };
        let mut each = Vec::new();
        while let Some(r) = rows.next()? {
            let dim = dims.iter().find(|d| d.code() == r.get::<_, i64>(1).unwrap_or(-1)).context("a dimension code")?;
            let (source, client, start_hour): (i64, i64, i64) = (r.get(0)?, r.get(2)?, r.get(3)?);
            let here = Some((source, dim.as_str(), start_hour));
            if at != here {
                flush(at, &mut all)?;
                at = here;
            }
            for ([k1, k2, k3], c) in packed::unpack_flows(&r.get::<_, Vec<u8>>(4)?)? {
                let sum = all.entry([k1, k2, k3]).or_default();
                for (s, v) in sum.iter_mut().zip([c.connections, c.packets, c.bytes_up, c.bytes_down]) {
                    *s += v;
                }
                each.push((source, dim.as_str(), text(client), start_hour, [k1, k2, k3], c));
            }
        }
        flush(at, &mut all)?;
        let mut put = tx.prepare(
            "INSERT INTO rollup (source, dim, client, span, bucket, k1, k2, k3, connections, packets, bytes_up, bytes_down)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for (source, dim, client, start_hour, [k1, k2, k3], c) in each {
            put.execute(params![
                source,
                dim,
                client,
                DAY_MS,
                start_hour * HOUR_MS,
                text(k1),
                text(k2),
                text(k3),
                c.connections,
                c.packets,
                c.bytes_up,
                c.bytes_down
            ])?;
        }
    }
    {
        let mut put = tx.prepare(
            "INSERT INTO dns_rollup (source, client, span, bucket, qname, queries, first_ts, last_ts, client_bits)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        // Every device's day back as well, as for the flows: the devices' names merged.
        let mut days =
            cur.prepare("SELECT source, client, start_hour, names FROM dns_rollup_packed ORDER BY 1, 3, 2")?;
        let mut rows = days.query([])?;
        let mut all: BTreeMap<i64, tracker::store::rollup::NameCounts> = BTreeMap::new();
        let mut at: Option<(i64, i64)> = None;
        let mut emit =
            |source: i64, client: &str, start_hour: i64, qname: i64, n: &tracker::store::rollup::NameCounts| {
                let start = start_hour * HOUR_MS;
                put.execute(params![
                    source,
                    client,
                    DAY_MS,
                    start,
                    text(qname),
                    n.queries,
                    start + n.first_ts,
                    start + n.last_ts,
                    n.client_bits
                ])
            };
        loop {
            let r = rows.next()?;
            let here = r
                .map(|r| -> Result<(i64, i64, i64, Vec<u8>)> { Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)) })
                .transpose()?;
            if let Some((source, start_hour)) = at
                && here.as_ref().is_none_or(|h| (h.0, h.2) != (source, start_hour))
            {
                for (qname, n) in std::mem::take(&mut all) {
                    emit(source, "", start_hour, qname, &n)?;
                }
            }
            let Some((source, client, start_hour, blob)) = here else { break };
            at = Some((source, start_hour));
            for (qname, n) in packed::unpack_dns(&blob)? {
                emit(source, &text(client), start_hour, qname, &n)?;
                all.entry(qname).and_modify(|a| a.merge(&n)).or_insert(n);
            }
        }
    }
    {
        // The packed flows (schema 12), each column a `texts` id but the numbers.
        use tracker::store::packed_flows::{self, COLUMNS};
        let text_col = |c: &str| {
            ["boot", "client", "remote"].contains(&c)
                || COLUMNS.iter().position(|x| *x == c).is_some_and(|i| (15..28).contains(&i))
        };
        let names: Vec<&str> = COLUMNS.iter().map(|c| if *c == "boot" { "boot_id" } else { c }).collect();
        let mut put = tx.prepare(&format!(
            "INSERT INTO flows (family, {}) VALUES (?1, {})",
            names.join(", "),
            (2..=COLUMNS.len() + 1).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        ))?;
        let mut days = cur.prepare("SELECT rows FROM flow_packed ORDER BY day, client")?;
        let mut rows = days.query([])?;
        while let Some(r) = rows.next()? {
            for flow in packed_flows::unpack(&r.get::<_, Vec<u8>>(0)?)? {
                let values: Vec<rusqlite::types::Value> = COLUMNS
                    .iter()
                    .zip(flow)
                    .map(|(c, v)| match v {
                        None => rusqlite::types::Value::Null,
                        Some(id) if text_col(c) => rusqlite::types::Value::Text(text(id)),
                        Some(n) => rusqlite::types::Value::Integer(n),
                    })
                    .collect();
                let client = flow[packed_flows::CLIENT].map(text).unwrap_or_default();
                let family: i64 = if client.contains(':') { 6 } else { 4 };
                let mut all = vec![rusqlite::types::Value::Integer(family)];
                all.extend(values);
                put.execute(rusqlite::params_from_iter(all))?;
            }
        }
    }
    {
        // The packed DNS log (schema 12): queries and answers, text columns as `texts` ids.
        use tracker::store::packed_dns::{self, ANSWER_COLUMNS, QUERY_COLUMNS};
        let texts_of = ["client", "resolver", "transport", "qname", "qtype", "rcode", "cname"];
        let value = |c: &str, v: Option<i64>, text_cols: &[&str]| match v {
            None => rusqlite::types::Value::Null,
            Some(id) if text_cols.contains(&c) => rusqlite::types::Value::Text(text(id)),
            Some(n) => rusqlite::types::Value::Integer(n),
        };
        let marks = |n: usize| (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let mut put_q = tx.prepare(&format!(
            "INSERT INTO dns_queries ({}) VALUES ({})",
            QUERY_COLUMNS.join(", "),
            marks(QUERY_COLUMNS.len())
        ))?;
        let mut put_a = tx.prepare(&format!(
            "INSERT INTO dns_answers ({}) VALUES ({})",
            ANSWER_COLUMNS.join(", "),
            marks(ANSWER_COLUMNS.len())
        ))?;
        let mut days = cur.prepare("SELECT rows FROM dns_packed ORDER BY day, client")?;
        let mut rows = days.query([])?;
        while let Some(r) = rows.next()? {
            let (queries, answers) = packed_dns::unpack(&r.get::<_, Vec<u8>>(0)?)?;
            for q in queries {
                put_q.execute(rusqlite::params_from_iter(
                    QUERY_COLUMNS.iter().zip(q).map(|(c, v)| value(c, v, &texts_of)),
                ))?;
            }
            for a in answers {
                put_a.execute(rusqlite::params_from_iter(
                    ANSWER_COLUMNS.iter().zip(a).map(|(c, v)| value(c, Some(v), &["name", "type", "data"])),
                ))?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn print_sizes(now: &Sizes, base: &Sizes) {
    let per = |b: i64, s: &Sizes| b as f64 / s.flows as f64;
    println!(
        "\n| table or index | rows | bytes | bytes/flow | version 7 layout: rows | bytes | bytes/flow |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    let mut names: Vec<&String> = now.per_object.keys().chain(base.per_object.keys()).collect();
    // Biggest first; objects of a page or less are left out.
    names.retain(|n| now.per_object.get(*n).or(base.per_object.get(*n)).is_some_and(|v| v.0 > 4096));
    names.sort_by_key(|n| std::cmp::Reverse(now.per_object.get(*n).or(base.per_object.get(*n)).map_or(0, |v| v.0)));
    names.dedup();
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            continue;
        }
        let cell = |s: &Sizes| match s.per_object.get(n) {
            Some(&(b, rows)) => format!("{rows} | {b} | {:.1}", per(b, s)),
            None => "- | - | -".into(),
        };
        println!("| {n} | {} | {} |", cell(now), cell(base));
    }
    println!(
        "| **whole file** | | {} | **{:.1}** | | {} | **{:.1}** |",
        now.file,
        per(now.file, now),
        base.file,
        per(base.file, base)
    );
    println!("\n(Objects of one page or less are not listed; the whole file counts them.)");
}

fn main() -> Result<()> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("tracker-bench-storage-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let (db, base): (PathBuf, PathBuf) = (dir.join("steady.db"), dir.join("version7.db"));
    let result = (|| -> Result<()> {
        let g = Gen::new();
        let (flows, queries) = generate(&g, &db)?;
        let generated = started.elapsed();
        steady_state(&db)?;
        baseline_copy(&db, &base)?;
        let (now, old) = (sizes(&db)?, sizes(&base)?);
        ensure!(now.flows == old.flows && now.queries == old.queries, "the baseline copy lost rows");
        ensure!(now.flows > 0 && now.flows < flows as i64, "the prune kept {} of {flows} flows", now.flows);
        println!("\n## Storage: bytes on disk per flow kept, steady state\n\nMethod:");
        println!(
            "- generated {DAYS_GENERATED} days through Store::write (one transaction a {}-minute sweep): {flows} flows \
             ({FLOWS_PER_DAY} a day, DNS lookups' own flows included), {queries} DNS queries, in {generated:.1?}",
            SWEEP_MS / 60_000
        );
        println!(
            "- pruned to the last {DAYS_KEPT} days (Store::prune at the data's end), then {OLDER_MONTHS} older months of \
             daily roll-ups (the month's days shifted back), incremental vacuum, WAL checkpoint (TRUNCATE)"
        );
        println!(
            "- kept: {} flows, {} DNS queries ({:.3} a flow: {:.0} % of connections follow a fresh lookup of A and AAAA); \
             schema version {}",
            now.flows,
            now.queries,
            now.queries as f64 / now.flows as f64,
            LOOKUP_SHARE * 100.0,
            schema::VERSION
        );
        println!("- baseline: the same rows copied in order into a new database of schema version 7");
        print_sizes(&now, &old);
        let dns_bytes: i64 = now.per_object.iter().filter(|(k, _)| k.starts_with("dns_")).map(|(_, v)| v.0).sum();
        let bpf = now.file as f64 / now.flows as f64;
        // The roll-ups scale with devices, owners and days kept, not with flows: their share
        // apart from the rows'.
        let rollups =
            |s: &Sizes| s.per_object.iter().filter(|(k, _)| k.contains("rollup")).map(|(_, v)| v.0).sum::<i64>();
        for (label, s) in [("this build's schema", &now), ("version 7 layout", &old)] {
            let r = rollups(s);
            println!(
                "\n{label}: rows (flows, DNS log, texts, the rest) {:.1} bytes a flow, roll-ups {:.1}.",
                (s.file - r) as f64 / s.flows as f64,
                r as f64 / s.flows as f64
            );
        }
        println!(
            "\nDNS log and its roll-up: {:.0} bytes a query ({:.1} bytes a flow at this ratio).",
            dns_bytes as f64 / now.queries as f64,
            dns_bytes as f64 / now.flows as f64
        );
        println!(
            "\nTarget: at most {TARGET_BYTES_PER_FLOW:.0} bytes a flow: {bpf:.1}, target met: {}; version 7 layout: {:.1} \
             ({:.2}x)",
            if bpf <= TARGET_BYTES_PER_FLOW { "yes" } else { "no" },
            old.file as f64 / old.flows as f64,
            old.file as f64 / now.file as f64
        );
        Ok(())
    })();
    // TRACKER_STORAGE_KEEP=1 keeps both databases for a look with sqlite3.
    if std::env::var_os("TRACKER_STORAGE_KEEP").is_some() {
        eprintln!("kept: {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
    result?;
    eprintln!("storage benchmark done in {:.1?}", started.elapsed());
    Ok(())
}
