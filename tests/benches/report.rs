//! `cargo xtask bench report`: how fast `tracker report` answers over a large database, and
//! what the roll-ups it reads cost the daemon per sweep.
//!
//! - **generate**: 10,000,000 flows and 1,000,000 DNS queries over 30 days and 10 devices,
//!   written through the daemon's own path (`Store::open`, one `Store::write` transaction per
//!   sweep of 10,000 flows and 1,000 queries), names drawn Zipf-like from ~1,000 real company
//!   names and ~2,000 unknown ones, labelled by the real `Labeler`. Deterministic (xorshift
//!   seeded per row) and cached under target/bench-report, keyed by [`GENERATOR_VERSION`] and
//!   the schema's text, so only the first run pays for it.
//! - **report**: the whole report over the last 7 days against the naive `GROUP BY owner` over
//!   `flows`, and the CLI end to end, in alternating rounds (medians).
//! - **sweep**: one daemon sweep's write (5,000 flow updates, 1,000 new flows, 500 DNS queries)
//!   on a copy of a 1,000,000-flow database with the roll-up triggers and on one without.
//!
//! Prints figures and targets, asserts nothing about timing; fails only when the report's
//! totals differ from a COUNT over `flows` (it would then be timing something else).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use rusqlite::{Connection, OpenFlags, params};
use tracker::{
    analysis::{
        addr::AddrClass,
        dns::{Answer, AnswerData, Transport},
        entity::EntityTable,
        labels::Labeler,
        names::{FlowName, NameSource},
        protocol::{AppProtocol, Classification, Decided},
    },
    query::report::{ReportQuery, report},
    store::{DnsRecord, FlowRecord, Store, rollup::Period, schema},
    timefmt,
};
use tracker_tests::{
    ChildGuard, median,
    rng::{Rng, zipf_cdf},
    tracker_bin,
};

/// Bumped whenever the generator's output changes, so a cached database is never stale.
const GENERATOR_VERSION: u32 = 1;
const SEED: u64 = 0x7261_636b_6572_2031;
/// The data ends at a fixed instant (2026-12-01T12:34:56.789Z, not on an hour) so a cached
/// database reads the same whenever it is measured; "the last 7 days" are 7 days before it.
const END_MS: i64 = 1_796_128_496_789;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const SPAN_MS: i64 = 30 * DAY_MS;
const PERIOD_MS: i64 = 7 * DAY_MS;
/// Kernel boots over the 30 days (a flow's key includes its boot).
const BOOTS: u64 = 6;
const DEVICES: u8 = 10;
const FLOWS_PER_SWEEP: u64 = 10_000;
/// Names in the pool: real company and service names first, the rest unknown domains.
const REAL_NAMES: usize = 1_000;
const UNKNOWN_NAMES: usize = 2_000;
/// Unknown names share this many registrable domains (example{M}.com, ...).
const UNKNOWN_SITES: u64 = 400;
/// The Zipf exponent of name and device popularity.
const ZIPF_S: f64 = 1.0;
/// The generation stops with an error past this: a bound, not a target.
const GENERATION_LIMIT: Duration = Duration::from_secs(45 * 60);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Rounds of the report section (after one unmeasured round that warms the page cache).
const ROUNDS: usize = 7;
const REPORT_TARGET_MS: f64 = 1000.0;
const RATIO_TARGET: f64 = 20.0;
const CLI_LIMIT: Duration = Duration::from_secs(120);

/// One sweep of the daemon, written on both copies each round (after one warm-up).
const SWEEP_ROUNDS: usize = 11;
const SWEEP_UPDATES: u64 = 5_000;
const SWEEP_NEW: u64 = 1_000;
const SWEEP_DNS: u64 = 500;

/// A database's size: the report section's and the smaller one the sweeps copy.
#[derive(Clone, Copy)]
struct Shape {
    label: &'static str,
    flows: u64,
    dns: u64,
}
const FULL: Shape = Shape { label: "10M", flows: 10_000_000, dns: 1_000_000 };
const SMALL: Shape = Shape { label: "1M", flows: 1_000_000, dns: 100_000 };

/// Hosts seen most often, first in the pool (so at the top of the Zipf ranks), space-separated.
const POPULAR: &str = "gateway.icloud.com i.instagram.com graph.facebook.com sdk.iad-01.braze.com www.google.com \
    rr3---sn-4g5e6nsz.googlevideo.com api.spotify.com mmg.whatsapp.net scontent.cdninstagram.com app-measurement.com \
    init.push.apple.com firebaseinstallations.googleapis.com api.x.com www.amazon.com inappcheck.itunes.apple.com \
    launches.appsflyer.com";
const PREFIXES: [&str; 12] =
    ["", "www.", "api.", "cdn.", "m.", "static.", "app.", "img.", "edge.", "e1.", "e2.", "mobile."];
/// A quarter of names reach a CDN through a CNAME (served_by when the owner is another).
const CDN_TARGETS: [&str; 4] = ["a.akamaiedge.net", "cloudfront.net", "fastly.net", "cdn.cloudflare.net"];

/// The generator of item `index` of `stream`, under this benchmark's seed.
fn zipf_cdf_s(n: usize) -> Vec<f64> {
    zipf_cdf(n, ZIPF_S)
}

fn item_rng(stream: u64, index: u64) -> Rng {
    Rng::new(SEED, stream, index)
}
// Streams of the per-row generators.
const FLOW_STREAM: u64 = 1;
const DNS_STREAM: u64 = 2;
const POOL_STREAM: u64 = 3;

struct PoolName {
    name: String,
    cname: Option<String>,
    /// The first of its 8 server addresses.
    addr: u32,
}

struct Gen {
    shape: Shape,
    pool: Vec<PoolName>,
    names: Vec<f64>,
    devices: Vec<f64>,
    labeler: Labeler,
}

impl Gen {
    fn new(shape: Shape) -> Self {
        let entities = EntityTable::builtin();
        let mut real: Vec<String> = POPULAR.split_whitespace().map(str::to_owned).collect();
        let domains: Vec<&String> = entities.companies().iter().flat_map(|c| &c.domains).collect();
        'fill: for prefix in PREFIXES {
            for d in &domains {
                if real.len() >= REAL_NAMES {
                    break 'fill;
                }
                let name = format!("{prefix}{d}");
                if !real.contains(&name) {
                    real.push(name);
                }
            }
        }
        let mut rng = item_rng(POOL_STREAM, 0);
        let unknown = (0..UNKNOWN_NAMES as u64).map(|n| {
            let site = rng.below(UNKNOWN_SITES);
            match n % 3 {
                0 => format!("cdn{n}.example{site}.com"),
                1 => format!("api{n}.shop{site}.net"),
                _ => format!("t{n}.metrics{site}.io"),
            }
        });
        let mut rest: Vec<String> =
            real.split_off(POPULAR.split_whitespace().count()).into_iter().chain(unknown).collect();
        // Fisher-Yates: real and unknown names mix below the popular ones.
        for i in (1..rest.len()).rev() {
            rest.swap(i, rng.below(i as u64 + 1) as usize);
        }
        real.extend(rest);
        let pool = real
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let cname = (rng.below(4) == 0)
                    .then(|| format!("e{i}.{}", CDN_TARGETS[rng.below(CDN_TARGETS.len() as u64) as usize]));
                // 23.0.0.0/8: public, and 8 addresses a name.
                PoolName { name, cname, addr: u32::from(Ipv4Addr::new(23, 0, 0, 0)) + 8 * i as u32 }
            })
            .collect::<Vec<_>>();
        Self {
            shape,
            names: zipf_cdf_s(pool.len()),
            pool,
            devices: zipf_cdf_s(DEVICES.into()),
            labeler: Labeler::new(entities.into()),
        }
    }

    fn sweeps(&self) -> u64 {
        self.shape.flows / FLOWS_PER_SWEEP
    }
    fn start_ms(&self) -> i64 {
        END_MS - SPAN_MS
    }
    /// The boot of flow `i`'s sweep (the last for flows past the database's end).
    fn boot(&self, i: u64) -> u64 {
        ((i / FLOWS_PER_SWEEP) * BOOTS / self.sweeps()).min(BOOTS - 1)
    }
    fn boot_id(&self, i: u64) -> String {
        format!("bench-boot-{}", self.boot(i))
    }
    fn device(&self, rng: &mut Rng) -> IpAddr {
        Ipv4Addr::new(10, 77, 0, 2 + rng.zipf(&self.devices) as u8).into()
    }

    /// Flow `i`; `round` > 0 gives the same flow later, with larger counters (a sweep's update).
    fn flow(&self, i: u64, round: u64) -> FlowRecord {
        let mut rng = item_rng(FLOW_STREAM, i);
        let first_seen_ms = self.start_ms()
            + (i as i128 * SPAN_MS as i128 / self.shape.flows as i128) as i64
            + rng.below(60_000) as i64;
        let boot_start = self.start_ms() + (self.boot(i) as i64) * SPAN_MS / BOOTS as i64;
        let client = self.device(&mut rng);
        let p = &self.pool[rng.zipf(&self.names)];
        let mut remote = IpAddr::from(Ipv4Addr::from(p.addr + rng.below(8) as u32));
        let mut class = AddrClass::Public;
        let (kind, r) = (rng.unit(), rng.unit());
        // Mostly TLS and QUIC; names from SNI, DNS (with CNAMEs) or the Host header.
        let dns_or_sni = |dns_share: f64| if r < dns_share { NameSource::Dns } else { NameSource::Sni };
        let (protocol, remote_port, app, source) = match kind {
            k if k < 0.55 => (6, 443, (AppProtocol::Tls, Decided::Payload), Some(dns_or_sni(0.3)).filter(|_| r < 0.97)),
            k if k < 0.85 => (17, 443, (AppProtocol::Quic, Decided::Payload), Some(dns_or_sni(0.4))),
            k if k < 0.90 => (6, 80, (AppProtocol::Http, Decided::Payload), Some(NameSource::Http)),
            k if k < 0.95 => {
                remote = Ipv4Addr::new(1, 1, 1, 1).into();
                (17, 53, (AppProtocol::Dns, Decided::Port), None)
            }
            k if k < 0.97 => {
                remote = Ipv4Addr::new(192, 168, 1, 10 + rng.below(20) as u8).into();
                class = AddrClass::Private;
                (6, 8009, (AppProtocol::Unknown, Decided::Nothing), None)
            }
            _ => (
                6 + 11 * (r < 0.5) as u8,
                1024 + rng.below(60_000) as u16,
                (AppProtocol::Unknown, Decided::Nothing),
                None,
            ),
        };
        let name = match source {
            Some(s) => FlowName {
                name: Some(p.name.clone()),
                source: Some(s),
                cname: p.cname.clone().filter(|_| s == NameSource::Dns),
            },
            None => FlowName::default(),
        };
        let app = Classification { protocol: app.0, decided: app.1 };
        let labels = self.labeler.label(&name, class, app);
        let scale = round + 1;
        let bytes_down = rng.log_uniform(400.0, 8e6) * scale;
        let bytes_up = (200 + bytes_down / 100 * rng.below(30)) * scale;
        FlowRecord {
            kernel_first_ns: (first_seen_ms - boot_start) as u64 * 1_000_000 + i % 1_000_000,
            client,
            remote,
            protocol,
            client_port: 49_152 + rng.below(16_384) as u16,
            remote_port,
            packets_up: bytes_up / 1200 + 2,
            bytes_up,
            packets_down: bytes_down / 1200 + 2,
            bytes_down,
            tcp_flags: if protocol == 6 { 0x1b } else { 0 },
            first_seen_ms,
            last_seen_ms: first_seen_ms + rng.log_uniform(50.0, 600_000.0) as i64 + round as i64 * 2000,
            name,
            remote_class: class,
            labels,
        }
    }

    /// DNS exchange `j`: a query of a pool name, answered with its CNAME (if any) and address.
    fn dns(&self, j: u64) -> DnsRecord {
        let mut rng = item_rng(DNS_STREAM, j);
        let ts_ms =
            self.start_ms() + (j as i128 * SPAN_MS as i128 / self.shape.dns as i128) as i64 + rng.below(60_000) as i64;
        let client = self.device(&mut rng);
        let p = &self.pool[rng.zipf(&self.names)];
        let qtype = ["A", "A", "A", "AAAA", "HTTPS"][rng.below(5) as usize];
        let mut answers = Vec::new();
        let mut owner = p.name.clone();
        if let Some(c) = &p.cname {
            answers.push(Answer { name: owner, rtype: "CNAME".into(), ttl: 300, data: AnswerData::Cname(c.clone()) });
            owner = c.clone();
        }
        if qtype == "A" {
            let addr = Ipv4Addr::from(p.addr + rng.below(8) as u32).into();
            answers.push(Answer { name: owner, rtype: "A".into(), ttl: 60, data: AnswerData::Addr(addr) });
        }
        DnsRecord {
            ts_ms,
            answered_ms: Some(ts_ms + 5 + rng.below(80) as i64),
            client,
            client_port: 49_152 + rng.below(16_384) as u16,
            resolver: Ipv4Addr::new(1, 1, 1, 1).into(),
            resolver_port: 53,
            transport: Transport::Udp,
            dns_id: rng.below(65_536) as u16,
            qname: p.name.clone(),
            qtype: qtype.into(),
            rcode: Some("NOERROR".into()),
            truncated: false,
            answers,
            blocked_by: None,
        }
    }

    /// Sweep `k` of the generation: its flows and its share of the DNS log.
    fn sweep(&self, k: u64) -> (Vec<FlowRecord>, Vec<DnsRecord>) {
        let per = self.shape.dns / self.sweeps();
        let flows = (k * FLOWS_PER_SWEEP..(k + 1) * FLOWS_PER_SWEEP).map(|i| self.flow(i, 0)).collect();
        (flows, (k * per..(k + 1) * per).map(|j| self.dns(j)).collect())
    }
}

/// The cached database of `shape`, generated first when missing, and how it came to be. Its name
/// holds the generator version and a hash of the schema; it is renamed into place once complete.
fn database(generator: &Gen) -> Result<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace")?.join("target/bench-report");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // FNV-1a of the migrations: a schema edited since the file was made invalidates it.
    let hash = schema::MIGRATIONS
        .concat()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let prefix = format!("report-{}-", generator.shape.label);
    let file = format!("{prefix}g{GENERATOR_VERSION}-{:08x}.db", hash as u32);
    let path = dir.join(&file);
    // Stale versions of this shape (and a partial one) are gigabytes: removed.
    for e in fs::read_dir(&dir)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && n != file {
            fs::remove_file(e.path())?;
        }
    }
    if path.exists() {
        eprintln!("generate: reusing {}", path.display());
        return Ok((path, "cached: generated by an earlier run".into()));
    }
    let partial = dir.join(format!("{file}.partial"));
    let (flows, dns) = (generator.shape.flows, generator.shape.dns);
    eprintln!("generate: {flows} flows, {dns} DNS queries into {}", partial.display());
    let started = Instant::now();
    let mut last = started;
    let mut store = Store::open(&partial)?;
    for k in 0..generator.sweeps() {
        let (f, d) = generator.sweep(k);
        store.write(|w| {
            w.upsert_flows(&generator.boot_id(k * FLOWS_PER_SWEEP), &f)?;
            w.insert_dns(&d)
        })?;
        let elapsed = started.elapsed();
        if last.elapsed() >= PROGRESS_EVERY || k + 1 == generator.sweeps() {
            last = Instant::now();
            let done = (k + 1) * FLOWS_PER_SWEEP;
            let rate = done as f64 / elapsed.as_secs_f64();
            eprintln!(
                "generate: {done} flows ({:.0}%) in {elapsed:.0?}: {rate:.0} flows/s, about {:.0} s left",
                100.0 * done as f64 / flows as f64,
                (flows - done) as f64 / rate
            );
        }
        ensure!(elapsed < GENERATION_LIMIT, "generation passed {GENERATION_LIMIT:?} at sweep {k}");
    }
    drop(store); // checkpoints the WAL into the file and removes it
    fs::rename(&partial, &path)?;
    let took = started.elapsed();
    let how = format!("generated in {took:.1?} ({:.0} flows/s)", flows as f64 / took.as_secs_f64());
    eprintln!("generate: {how}");
    Ok((path, how))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How long `f` took, in ms (its result kept from the optimizer).
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<f64> {
    let t = Instant::now();
    std::hint::black_box(f()?);
    Ok(ms(t.elapsed()))
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

/// A table of timed cases: each one's median and every round, in ms.
fn table(title: &str, rows: &[(&str, &[f64])]) {
    println!("\nFigures ({title}):\n\n| case | median | each round |\n|---|---:|---|");
    for (case, v) in rows {
        let each: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
        println!("| {case} | {:.1} | {} |", median(v), each.join(" "));
    }
}

/// `tracker report` end to end, JSON to /dev/null; polled every millisecond, bounded.
fn cli_once(db: &Path, since: &str) -> Result<f64> {
    let mut c = Command::new(tracker_bin());
    c.env_remove("TRACKER_ENTITIES").arg("--db").arg(db).args(["report", "--since", since, "--format", "json"]);
    c.stdin(Stdio::null()).stdout(Stdio::null());
    let start = Instant::now();
    let mut child = ChildGuard::spawn(c)?;
    loop {
        if let Some(status) = child.try_status()? {
            ensure!(status.success(), "tracker report failed: {status}");
            return Ok(ms(start.elapsed()));
        }
        if start.elapsed() > CLI_LIMIT {
            bail!("tracker report did not finish within {CLI_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn report_section(path: &Path) -> Result<()> {
    let since_ms = END_MS - PERIOD_MS;
    let since = timefmt::rfc3339(since_ms);
    let store = Store::open_reader(path)?;
    let entities = EntityTable::builtin();
    let q = ReportQuery { since_ms, until_ms: END_MS, min_queries: 1, ..Default::default() };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut naive = conn.prepare(
        "SELECT owner, count(*), sum(bytes_up + bytes_down) FROM flows WHERE first_seen >= ?1 GROUP BY owner",
    )?;
    let mut run_naive = || -> Result<(u64, i64, usize)> {
        let rows: Vec<(Option<String>, i64, i64)> =
            naive.query_map(params![since_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
        Ok((rows.iter().map(|r| r.1 as u64).sum(), rows.iter().map(|r| r.2).sum(), rows.len()))
    };
    let cli = tracker_bin().exists();
    if !cli {
        eprintln!("report: {} not found: the CLI is not timed (run `cargo xtask build`)", tracker_bin().display());
    }

    // The one check: the report counts what COUNT finds in the period, and the bytes the naive
    // query sums. Also the unmeasured round that warms the page cache.
    let r = report(&store, &entities, &q)?;
    let count: i64 = conn.query_row("SELECT count(*) FROM flows WHERE first_seen >= ?1", [since_ms], |r| r.get(0))?;
    let (naive_conns, naive_bytes, owners) = run_naive()?;
    ensure!(
        r.totals.connections == count as u64 && naive_conns == count as u64,
        "report totals {} connections, naive query {naive_conns}, COUNT over flows {count}",
        r.totals.connections
    );
    ensure!(r.totals.bytes == naive_bytes as u64, "report totals {} bytes, naive {naive_bytes}", r.totals.bytes);
    if cli {
        cli_once(path, &since)?;
    }
    let period = Period::since(schema::LIVE_SOURCE, since_ms);
    let rollup: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {}", period.rows("rollup", "client = ''")),
        rusqlite::named_params! { ":days": period.days_from, ":hours": period.hours_from },
        |r| r.get(0),
    )?;

    let (mut rep, mut nai, mut cl) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Rotate the order so a burst of load on the VM hits each case alike.
        for case in (0..3).map(|c| (c + round) % 3) {
            match case {
                0 => rep.push(timed(|| report(&store, &entities, &q))?),
                1 => nai.push(timed(&mut run_naive)?),
                _ if cli => cl.push(cli_once(path, &since)?),
                _ => {}
            }
        }
    }
    let (rm, nm) = (median(&rep), median(&nai));
    println!("\n## Report: the last 7 days of {} flows\n\nMethod:", FULL.flows);
    println!("- database {} (read-only: Store::open_reader; SQLite read-only for the SQL)", path.display());
    println!(
        "- since {since}: {count} connections (= COUNT over flows, checked), {} bytes, {owners} owners, {} \
         domains; the report read {rollup} roll-up rows ({:.1} connections a row)",
        r.totals.bytes,
        r.domains.len(),
        count as f64 / rollup as f64
    );
    println!(
        "- the CLI gets that instant as --since (the data's clock is fixed, so a cached database reads the same), \
         with its JSON to /dev/null; the binary is TRACKER_BIN or target/release/tracker"
    );
    println!("- {ROUNDS} rounds, the cases' order rotated each round, after one unmeasured round (page cache warm)");
    let cli_case = format!("`tracker --db FILE report --since {since} --format json > /dev/null`");
    let mut rows = vec![("report() (all sections)", &rep[..]), ("naive GROUP BY owner over flows", &nai[..])];
    if cli {
        rows.push((&cli_case, &cl[..]));
    }
    table("ms, medians of the rounds", &rows);
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("\nTargets:");
    println!("- report under {REPORT_TARGET_MS:.0} ms: {rm:.1} ms, target met: {}", yes(rm < REPORT_TARGET_MS));
    println!(
        "- naive / report at least {RATIO_TARGET:.0}x: {:.1}x, target met: {}",
        nm / rm,
        yes(nm / rm >= RATIO_TARGET)
    );
    Ok(())
}

/// One daemon sweep's write for round `round`: the database's last flows updated, new flows
/// after them, new DNS queries.
fn sweep_batch(generator: &Gen, round: u64) -> (Vec<FlowRecord>, Vec<DnsRecord>) {
    let n = generator.shape.flows;
    let mut flows: Vec<FlowRecord> = (n - SWEEP_UPDATES..n).map(|i| generator.flow(i, round + 1)).collect();
    flows.extend((n + round * SWEEP_NEW..n + (round + 1) * SWEEP_NEW).map(|i| generator.flow(i, 0)));
    let d = generator.shape.dns + round * SWEEP_DNS;
    (flows, (d..d + SWEEP_DNS).map(|j| generator.dns(j)).collect())
}

fn sweep_section(generator: &Gen, path: &Path) -> Result<()> {
    // Two copies in /tmp, removed at the end: one written as shipped, one without the roll-ups.
    let copies: Vec<PathBuf> = ["rollups", "bare"]
        .iter()
        .map(|k| std::env::temp_dir().join(format!("tracker-bench-report-{}-{k}.db", std::process::id())))
        .collect();
    let result = (|| -> Result<(Vec<f64>, Vec<f64>)> {
        for c in &copies {
            fs::copy(path, c).with_context(|| format!("copying {} to {}", path.display(), c.display()))?;
        }
        let mut stores = [Store::open(&copies[0])?, Store::open(&copies[1])?];
        let boot = generator.boot_id(generator.shape.flows - 1);
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..=SWEEP_ROUNDS as u64 {
            let (flows, dns) = sweep_batch(generator, round);
            for which in [round as usize % 2, (round as usize + 1) % 2] {
                // The second copy gets the same writes without the roll-ups' reads and upserts.
                let took = timed(|| {
                    stores[which].write(|w| {
                        let w = if which == 1 { w.without_rollups() } else { *w };
                        w.upsert_flows(&boot, &flows).and_then(|()| w.insert_dns(&dns))
                    })
                })?;
                // Round 0 warms both copies' caches.
                if round > 0 {
                    times[which].push(took);
                }
            }
        }
        let [a, b] = times;
        Ok((a, b))
    })();
    for c in &copies {
        for suffix in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{suffix}", c.display()));
        }
    }
    let (with, without) = result?;
    let (w, wo) = (median(&with), median(&without));
    println!("\n## A daemon sweep's write with and without the roll-ups\n\nMethod:");
    println!(
        "- one Store::write transaction: {SWEEP_UPDATES} updates of existing flows (new counters, same labels), \
         {SWEEP_NEW} new flows, {SWEEP_DNS} DNS queries with answers"
    );
    println!(
        "- on two copies of the {}-flow database {} (copying the {}-flow one twice would take longer than the \
         rest), one written without the roll-ups (Writer::without_rollups); {SWEEP_ROUNDS} rounds after one warm-up, alternating \
         which copy goes first",
        generator.shape.flows,
        path.display(),
        FULL.flows
    );
    table("ms per sweep", &[("with the roll-ups (as shipped)", &with), ("without the roll-ups", &without)]);
    println!("\nThe roll-ups cost {:.1} ms per sweep: {:.2}x the write without them.", w - wo, w / wo);
    Ok(())
}

fn main() -> Result<()> {
    let started = Instant::now();
    let load_before = loadavg();
    eprintln!("load before: {load_before}");
    let (full, small) = (Gen::new(FULL), Gen::new(SMALL));
    let (path, full_how) = database(&full)?;
    let (small_path, small_how) = database(&small)?;
    report_section(&path)?;
    sweep_section(&small, &small_path)?;
    let size = |p: &Path| fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1e9);
    println!("\n## Summary\n");
    for (shape, p, how) in [(FULL, &path, full_how), (SMALL, &small_path, small_how)] {
        println!("- {} flows, {} DNS queries: {} ({:.2} GB), {how}", shape.flows, shape.dns, p.display(), size(p));
    }
    println!("- load average before: {load_before}; after: {}", loadavg());
    println!("- report benchmark done in {:.1?}", started.elapsed());
    Ok(())
}
