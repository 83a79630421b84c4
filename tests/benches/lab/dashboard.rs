//! The lab benchmark's **dashboard** section (issue 13's speed target): the first page from the
//! phone through the tunnel on a database of 1,000,000 flows, and the daemon's own costs with a
//! dashboard open and updating beside the same work with none.
//!
//! - **page**: a month of a household (1,000,000 flows, 100,000 DNS queries, ending now) is
//!   written through the daemon's own path ([`household`]), the daemon started on it. curl in the
//!   phone's namespace fetches the first page for each period (24 hours, 7 days, 30 days), then
//!   every file the page links to (its stylesheet, a script if it has one): the page needs
//!   nothing else to render (no script builds it, no font or image is fetched), so the sum of
//!   those fetches is what a browser waits for before its first render, less its own parsing.
//!   Rounds alternate the periods; medians and the largest transfer are printed beside the
//!   targets (300 ms, 200 KB).
//! - **costs**: windows of the same bounded UDP flood from the phone (new flows the daemon
//!   counts, names and writes), in pairs of "closed" (no client) and "open" (a client holds the
//!   live-update stream, when the dashboard has one, and reloads the first page every 2 s). In
//!   each window: the daemon's CPU time less its dashboard threads' (`/proc/PID/task/*`, by
//!   thread name), per flow, and the kernel programs' run time per packet (BPF_ENABLE_STATS);
//!   the median of the pairs' open / closed is the "unchanged" the issue asks for.

use std::{
    collections::HashMap,
    fs,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use tracker::web::dashboard;
use tracker_tests::{
    ChildGuard, Lab, Ns,
    flood::{self, Flood},
    lab::VPN_TUN_V4,
    median,
};

use super::{
    Daemon, Pins,
    household::{self, Gen, SMALL},
    idle::stat_cpu,
    mib, settle_store,
    swap::{daemon_prog_ids, prog_stats},
};

/// Page rounds, each fetching every period once (after one unmeasured round).
const PAGE_ROUNDS: usize = 7;
const PAGE_TARGET_MS: f64 = 300.0;
const PAGE_TARGET_KB: f64 = 200.0;
/// One curl's bound.
const CURL_LIMIT: Duration = Duration::from_secs(30);
/// Cost windows, in pairs of one closed and one open, the pairs' order alternating (closed,
/// open, open, closed, ...) so a drift of the machine's load over the run weighs on both alike.
const PAIRS: usize = 5;
/// Each window's flood: new flows and their rate.
const WINDOW_FLOWS: u32 = 10_000;
const WINDOW_RATE: f64 = 1_000.0;
/// Each window's flood starts its ports here plus a window's share: every window's flows are new.
const FIRST_PORT: u16 = 20_000;
/// The open window's client reloads the first page this often.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Threads of the dashboard (its thread and its reader pool), by their name's start.
const DASHBOARD_THREADS: &str = "dashboard";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The dashboard's first-page URL for `query` (empty, or `period=7d`).
fn url(path: &str) -> String {
    format!("http://{VPN_TUN_V4}:{}{path}", dashboard::DEFAULT_PORT)
}

/// One fetch from the phone: (ms to the last byte, bytes of the body, the body).
fn fetch(lab: &Lab, url: &str, out: &Path) -> Result<(f64, u64, String)> {
    let mut c = lab.cmd(Ns::Phone, "curl");
    c.args(["-sS", "--max-time", &CURL_LIMIT.as_secs().to_string(), "-o"]).arg(out).args([
        "-w",
        "%{http_code} %{time_total} %{size_download}",
        url,
    ]);
    let got = c.output().with_context(|| format!("curl {url}"))?;
    let line = String::from_utf8_lossy(&got.stdout).into_owned();
    let f: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        got.status.success() && f.first() == Some(&"200"),
        "curl {url}: {line} {}",
        String::from_utf8_lossy(&got.stderr)
    );
    let secs: f64 = f.get(1).context("curl's time")?.parse()?;
    let bytes: u64 = f.get(2).context("curl's size")?.parse()?;
    Ok((secs * 1000.0, bytes, fs::read_to_string(out).unwrap_or_default()))
}

/// The same-origin files a page links to (`href="/static/…"`, `src="/static/…"`).
fn linked(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for part in page.split(attr).skip(1) {
            let link = part.split('"').next().unwrap_or_default();
            if link.starts_with("/static/") && !out.iter().any(|l| l == link) {
                out.push(link.to_owned());
            }
        }
    }
    out
}

/// A first page and what it links to, fetched one after the other: ms and bytes in all.
fn first_render(lab: &Lab, path: &str, scratch: &Path) -> Result<(f64, u64)> {
    let (mut ms, mut bytes, page) = fetch(lab, &url(path), &scratch.join("page.html"))?;
    ensure!(page.contains("</html>"), "{path}: not a whole page");
    for link in linked(&page) {
        let (m, b, _) = fetch(lab, &url(&link), &scratch.join("linked"))?;
        ms += m;
        bytes += b;
    }
    Ok((ms, bytes))
}

/// The CPU time a /proc `stat` line gives, in ns.
fn stat_ns(stat: &str) -> Result<u64> {
    Ok(u64::try_from(stat_cpu(stat)?.as_nanos())?)
}

/// The daemon's CPU time so far: the whole process's (its ended threads too), and each
/// dashboard thread's by thread id.
struct Cpu {
    process_ns: u64,
    dashboard: HashMap<String, u64>,
}

fn cpu(pid: u32) -> Result<Cpu> {
    let process_ns = stat_ns(&fs::read_to_string(format!("/proc/{pid}/stat")).context("the daemon's /proc stat")?)?;
    let mut dashboard = HashMap::new();
    // Bounded by the daemon's threads.
    for task in fs::read_dir(format!("/proc/{pid}/task")).context("the daemon's threads")?.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else { continue };
        let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map_or("", |(n, _)| n);
        if name.starts_with(DASHBOARD_THREADS) {
            dashboard.insert(task.file_name().to_string_lossy().into_owned(), stat_ns(&stat)?);
        }
    }
    Ok(Cpu { process_ns, dashboard })
}

/// Between two readings: (the dashboard's threads, the rest of the daemon), ns. A dashboard
/// reader thread that ended in between is lost from the first and counted in the second, so
/// the daemon's figure is an upper bound.
fn cpu_between(a: &Cpu, b: &Cpu) -> (u64, u64) {
    let dash: u64 =
        b.dashboard.iter().map(|(tid, ns)| ns.saturating_sub(a.dashboard.get(tid).copied().unwrap_or(0))).sum();
    (dash, b.process_ns.saturating_sub(a.process_ns).saturating_sub(dash))
}

/// A dashboard client for one open window: the live-update stream held open (when the page
/// links a script, the dashboard has one) and the first page reloaded every RELOAD_EVERY.
struct Client {
    /// Held, not read: dropping it ends the stream.
    _stream: Option<ChildGuard>,
}

impl Client {
    fn open(lab: &Lab, live: bool) -> Result<Self> {
        let stream = if live {
            let mut c = lab.cmd(Ns::Phone, "curl");
            c.args(["-sSN", "--max-time", "600", "-o", "/dev/null", &url("/events")]);
            Some(lab.spawn(c)?)
        } else {
            None
        };
        Ok(Self { _stream: stream })
    }
}

struct Window {
    open: bool,
    dash_ns: u64,
    rest_ns: u64,
    prog_ns: u64,
    prog_runs: u64,
    flows: u32,
    reloads: usize,
}

/// One window: the flood, and (when `open`) the client, measured from before the flood until
/// the daemon has stored it.
fn window(lab: &Lab, daemon: &Daemon, k: usize, open: bool, live: bool, scratch: &Path) -> Result<Window> {
    let pid = daemon.pid();
    // The programs in the daemon's own links: other tracker programs on the machine (a test
    // running beside) are not counted.
    let progs = daemon_prog_ids(&daemon.pins)?;
    let mut plan = Flood::new(WINDOW_FLOWS, WINDOW_RATE);
    let ports_per_window = u16::try_from(WINDOW_FLOWS.div_ceil(plan.dsts.len() as u32))?;
    plan.first_port = FIRST_PORT + ports_per_window * u16::try_from(k)?;
    let client = if open { Some(Client::open(lab, live)?) } else { None };
    let c0 = cpu(pid)?;
    let p0 = prog_stats(&progs)?;
    let flood = std::thread::scope(|s| -> Result<_> {
        let sender = s.spawn(|| flood::run(lab, &plan));
        let mut reloads = 0;
        // Reloads while the flood runs (bounded by its own time bound).
        while open && !sender.is_finished() {
            first_render(lab, "/", scratch)?;
            reloads += 1;
            std::thread::sleep(RELOAD_EVERY);
        }
        let report = sender.join().map_err(|_| anyhow::anyhow!("the flood's thread panicked"))??;
        Ok((report, reloads))
    })?;
    let (report, reloads) = flood;
    ensure!(report.complete, "window {k}: the flood sent {} of {WINDOW_FLOWS} flows", report.flows_sent);
    settle_store(daemon)?;
    let (dash_ns, rest_ns) = cpu_between(&c0, &cpu(pid)?);
    let p1 = prog_stats(&progs)?;
    drop(client);
    Ok(Window {
        open,
        dash_ns,
        rest_ns,
        prog_ns: p1.ns - p0.ns,
        prog_runs: p1.runs - p0.runs,
        flows: report.flows_sent,
        reloads,
    })
}

pub fn section(lab: &Lab) -> Result<()> {
    let dir = lab.names().dir.join("bench-dashboard");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = dir.join("tracker.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{suffix}", db.display()));
    }
    // Ending a minute ago: the newest flows are in every period's window.
    let generator = Gen::new(SMALL, now_ms() - 60_000);
    let took = household::write(&generator, &db)?;
    let pins = Pins::new("dashboard")?;
    let mut daemon = Daemon::start(lab, &db, &pins.0, &dir.join("daemon.log"))?;

    // The page.
    let periods = ["/", "/?period=7d", "/?period=30d"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); periods.len()];
    let mut sizes = vec![0u64; periods.len()];
    for round in 0..=PAGE_ROUNDS {
        for i in 0..periods.len() {
            let i = (i + round) % periods.len();
            let (ms, bytes) = first_render(lab, periods[i], &dir)?;
            if round > 0 {
                times[i].push(ms);
                sizes[i] = sizes[i].max(bytes);
            }
        }
    }
    let (_, _, page) = fetch(lab, &url("/"), &dir.join("page.html"))?;
    let links = linked(&page);
    let live = links.iter().any(|l| l.ends_with(".js"));

    // The costs.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    let mut windows = Vec::new();
    for k in 0..2 * PAIRS {
        // Closed first in even pairs, open first in odd ones.
        let open = (k % 2 == 1) != ((k / 2) % 2 == 1);
        eprintln!("dashboard: window {} of {}, {}", k + 1, 2 * PAIRS, if open { "open" } else { "closed" });
        windows.push(window(lab, &daemon, k, open, live, &dir)?);
    }
    let memory = daemon.memory()?;
    let (exit, _) = daemon.stop()?;
    if !exit.success() {
        bail!("tracker run exited with {exit}:\n{}", daemon.log_tail());
    }

    println!();
    println!(
        "dashboard: the first page on {} flows and {} DNS queries (generated in {took:.0?}), from the phone through the tunnel",
        generator.shape.flows, generator.shape.dns
    );
    println!(
        "  the page and what it links to ({}), fetched by curl one after the other; {PAGE_ROUNDS} rounds",
        links.join(", ")
    );
    println!("  | period | median ms | each round | bytes |");
    println!("  |---|---:|---|---:|");
    for (i, p) in periods.iter().enumerate() {
        let each: Vec<String> = times[i].iter().map(|t| format!("{t:.0}")).collect();
        println!("  | {p} | {:.1} | {} | {} |", median(&times[i]), each.join(" "), sizes[i]);
    }
    let worst = times.iter().map(|t| median(t)).fold(0.0, f64::max);
    let biggest = *sizes.iter().max().unwrap_or(&0) as f64 / 1000.0;
    println!(
        "  slowest period {worst:.1} ms (target < {PAGE_TARGET_MS} ms: {}); largest {biggest:.1} KB (target < {PAGE_TARGET_KB} KB: {})",
        if worst < PAGE_TARGET_MS { "met" } else { "NOT met" },
        if biggest < PAGE_TARGET_KB { "met" } else { "NOT met" }
    );
    println!();
    println!(
        "dashboard: the daemon's costs, {} windows of {WINDOW_FLOWS} new UDP flows at {WINDOW_RATE:.0}/s, \
         closed (no client) and open ({} and the first page every {RELOAD_EVERY:?})",
        2 * PAIRS,
        if live { "the live stream held open" } else { "no live stream: the page has no script" }
    );
    println!(
        "  | window | daemon CPU µs per flow (not the dashboard) | dashboard CPU ms | kernel ns per packet | page reloads |"
    );
    println!("  |---|---:|---:|---:|---:|");
    for w in &windows {
        println!(
            "  | {} | {:.1} | {:.0} | {:.1} | {} |",
            if w.open { "open" } else { "closed" },
            w.rest_ns as f64 / 1000.0 / f64::from(w.flows),
            w.dash_ns as f64 / 1e6,
            w.prog_ns as f64 / w.prog_runs.max(1) as f64,
            w.reloads
        );
    }
    // Each pair's open / closed, then their median.
    let ratio = |f: &dyn Fn(&Window) -> f64| -> f64 {
        let r: Vec<f64> = windows
            .chunks(2)
            .map(|pair| {
                let (open, closed) = if pair[0].open { (&pair[0], &pair[1]) } else { (&pair[1], &pair[0]) };
                f(open) / f(closed)
            })
            .collect();
        median(&r)
    };
    let per_flow = |w: &Window| w.rest_ns as f64 / f64::from(w.flows);
    let per_packet = |w: &Window| w.prog_ns as f64 / w.prog_runs.max(1) as f64;
    println!(
        "  open / closed (median of the {PAIRS} pairs): daemon CPU per flow {:.3}, kernel ns per packet {:.3}; \
         VmRSS at the end {:.1} MiB",
        ratio(&per_flow),
        ratio(&per_packet),
        mib(memory.rss_kib)
    );
    Ok(())
}
