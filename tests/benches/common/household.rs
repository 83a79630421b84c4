//! The benchmarks' household: a deterministic month of a household's flows and DNS queries
//! (10 devices, names drawn Zipf-like from ~1,000 real company names and ~2,000 unknown ones,
//! labelled by the real `Labeler`), and [`write`], which stores them through the daemon's own
//! path (`Store::open`, one `Store::write` transaction per sweep of [`FLOWS_PER_SWEEP`] flows).
//! Shared by `cargo xtask bench report` and the lab's dashboard section.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use tracker::{
    analysis::{
        addr::AddrClass,
        dns::{Answer, AnswerData, Transport},
        entity::EntityTable,
        labels::Labeler,
        names::{FlowName, NameSource},
        protocol::{AppProtocol, Classification, Decided},
    },
    store::{DnsRecord, FlowRecord, Store},
};
use tracker_tests::rng::{Rng, zipf_cdf};

const SEED: u64 = 0x7261_636b_6572_2031;
const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The data covers this span before its end.
pub const SPAN_MS: i64 = 30 * DAY_MS;
/// Kernel boots over the 30 days (a flow's key includes its boot).
const BOOTS: u64 = 6;
const DEVICES: u8 = 10;
pub const FLOWS_PER_SWEEP: u64 = 10_000;
/// Names in the pool: real company and service names first, the rest unknown domains.
const REAL_NAMES: usize = 1_000;
const UNKNOWN_NAMES: usize = 2_000;
/// Unknown names share this many registrable domains (example{M}.com, ...).
const UNKNOWN_SITES: u64 = 400;
/// The Zipf exponent of name and device popularity.
const ZIPF_S: f64 = 1.0;
/// [`write`] stops with an error past this: a bound, not a target.
const GENERATION_LIMIT: Duration = Duration::from_secs(45 * 60);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// A database's size.
#[derive(Clone, Copy)]
pub struct Shape {
    pub label: &'static str,
    pub flows: u64,
    pub dns: u64,
}
/// The report section's database.
pub const FULL: Shape = Shape { label: "10M", flows: 10_000_000, dns: 1_000_000 };
/// The one the report's sweeps copy and the dashboard's first page is timed on.
pub const SMALL: Shape = Shape { label: "1M", flows: 1_000_000, dns: 100_000 };

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

pub struct Gen {
    pub shape: Shape,
    /// Unix ms the data ends at: the last flows start within a minute before it.
    pub end_ms: i64,
    pool: Vec<PoolName>,
    names: Vec<f64>,
    devices: Vec<f64>,
    labeler: Labeler,
}

impl Gen {
    pub fn new(shape: Shape, end_ms: i64) -> Self {
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
            end_ms,
            names: zipf_cdf_s(pool.len()),
            pool,
            devices: zipf_cdf_s(DEVICES.into()),
            labeler: Labeler::new(entities.into()),
        }
    }

    pub fn sweeps(&self) -> u64 {
        self.shape.flows / FLOWS_PER_SWEEP
    }
    pub fn start_ms(&self) -> i64 {
        self.end_ms - SPAN_MS
    }
    /// The boot of flow `i`'s sweep (the last for flows past the database's end).
    fn boot(&self, i: u64) -> u64 {
        ((i / FLOWS_PER_SWEEP) * BOOTS / self.sweeps()).min(BOOTS - 1)
    }
    pub fn boot_id(&self, i: u64) -> String {
        format!("bench-boot-{}", self.boot(i))
    }
    fn device(&self, rng: &mut Rng) -> IpAddr {
        Ipv4Addr::new(10, 77, 0, 2 + rng.zipf(&self.devices) as u8).into()
    }

    /// Flow `i`; `round` > 0 gives the same flow later, with larger counters (a sweep's update).
    pub fn flow(&self, i: u64, round: u64) -> FlowRecord {
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
    pub fn dns(&self, j: u64) -> DnsRecord {
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
    pub fn sweep(&self, k: u64) -> (Vec<FlowRecord>, Vec<DnsRecord>) {
        let per = self.shape.dns / self.sweeps();
        let flows = (k * FLOWS_PER_SWEEP..(k + 1) * FLOWS_PER_SWEEP).map(|i| self.flow(i, 0)).collect();
        (flows, (k * per..(k + 1) * per).map(|j| self.dns(j)).collect())
    }
}

/// Writes `generator`'s flows and DNS queries into a new database at `path`, through the
/// daemon's own path, with progress on stderr. Returns how long it took.
pub fn write(generator: &Gen, path: &Path) -> Result<Duration> {
    let (flows, dns) = (generator.shape.flows, generator.shape.dns);
    eprintln!("generate: {flows} flows, {dns} DNS queries into {}", path.display());
    let started = Instant::now();
    let mut last = started;
    let mut store = Store::open(path)?;
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
    Ok(started.elapsed())
}
