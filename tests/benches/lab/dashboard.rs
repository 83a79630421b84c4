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
//!   counts, names and writes), "closed" (no client) and "open" (a client holds the
//!   live-update stream, when the dashboard has one, and reloads the first page every 2 s), in
//!   quartets closed, open, open, closed, after the daemon's first hourly prune. In
//!   each window: the daemon's CPU time less its dashboard threads' (`/proc/PID/task/*`, by
//!   thread name), per flow, and the kernel programs' run time per packet (BPF_ENABLE_STATS);
//!   the median of the quartets' open / closed is the "unchanged" the issue asks for. Each
//!   window's flows stay in the kernel's tables for the UDP timeout, so a later window costs
//!   more per flow than an earlier one (the sweep reads more); a quartet's sum of its open
//!   windows over its closed ones cancels such a linear drift, where a pair would not.

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
    idle::stat_times,
    mib, settle_store,
    swap::{daemon_prog_ids, prog_stats},
};

/// Page rounds, each fetching every period once (after one unmeasured round).
const PAGE_ROUNDS: usize = 7;
const PAGE_TARGET_MS: f64 = 300.0;
const PAGE_TARGET_KB: f64 = 200.0;
/// One curl's bound.
const CURL_LIMIT: Duration = Duration::from_secs(30);
/// Cost windows, in quartets of closed, open, open, closed.
const QUARTETS: usize = 3;
/// The daemon's first hourly prune comes this long after its start ([`FIRST_PRUNE_LINE`] in its
/// log): the windows wait for it, so it lands in none of them.
const FIRST_PRUNE_WAIT: Duration = Duration::from_secs(150);
const FIRST_PRUNE_LINE: &str = "pruned rows past their retention";
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

/// The user and kernel CPU time a /proc `stat` line gives, in ns.
fn stat_split(stat: &str) -> Result<Split> {
    let (user, sys) = stat_times(stat)?;
    Ok(Split { user: u64::try_from(user.as_nanos())?, sys: u64::try_from(sys.as_nanos())? })
}

/// CPU time in user and in kernel mode, ns.
#[derive(Clone, Copy, Default)]
struct Split {
    user: u64,
    sys: u64,
}

impl Split {
    fn less(self, other: Self) -> Self {
        Self { user: self.user.saturating_sub(other.user), sys: self.sys.saturating_sub(other.sys) }
    }
    fn plus(self, other: Self) -> Self {
        Self { user: self.user + other.user, sys: self.sys + other.sys }
    }
    fn total(self) -> u64 {
        self.user + self.sys
    }
}

/// The daemon's CPU time so far: the whole process's (its ended threads too), and each
/// dashboard thread's by thread id.
struct Cpu {
    process: Split,
    dashboard: HashMap<String, Split>,
}

fn cpu(pid: u32) -> Result<Cpu> {
    let process = stat_split(&fs::read_to_string(format!("/proc/{pid}/stat")).context("the daemon's /proc stat")?)?;
    let mut dashboard = HashMap::new();
    // Bounded by the daemon's threads.
    for task in fs::read_dir(format!("/proc/{pid}/task")).context("the daemon's threads")?.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else { continue };
        let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map_or("", |(n, _)| n);
        if name.starts_with(DASHBOARD_THREADS) {
            dashboard.insert(task.file_name().to_string_lossy().into_owned(), stat_split(&stat)?);
        }
    }
    Ok(Cpu { process, dashboard })
}

/// Between two readings: (the dashboard's threads, the rest of the daemon). A dashboard
/// reader thread that ended in between is lost from the first and counted in the second, so
/// the daemon's figure is an upper bound (the window's `churn` says whether that happened).
fn cpu_between(a: &Cpu, b: &Cpu) -> (Split, Split) {
    let dash = b
        .dashboard
        .iter()
        .map(|(tid, now)| now.less(a.dashboard.get(tid).copied().unwrap_or_default()))
        .fold(Split::default(), Split::plus);
    (dash, b.process.less(a.process).less(dash))
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
    dash: Split,
    rest: Split,
    prog_ns: u64,
    prog_runs: u64,
    flows: u32,
    reloads: usize,
    /// Dashboard threads that ended or started within the window: an ended one's time is
    /// charged to the daemon (see [`cpu_between`]), so this says whether that happened.
    churn: usize,
    /// The write-ahead log's size at the window's end: a reader holding a snapshot keeps
    /// SQLite from restarting it, which would show here.
    wal_bytes: u64,
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
    let profile = profile(pid, k, open)?;
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
    let c1 = cpu(pid)?;
    if let Some(mut perf) = profile {
        // SAFETY: kill(2) on the child's own pid; SIGINT makes perf write its file and exit.
        unsafe { libc::kill(libc::pid_t::try_from(perf.id())?, libc::SIGINT) };
        perf.wait().context("perf record")?;
    }
    let (dash, rest) = cpu_between(&c0, &c1);
    let p1 = prog_stats(&progs)?;
    drop(client);
    let churn = c0.dashboard.keys().filter(|t| !c1.dashboard.contains_key(*t)).count()
        + c1.dashboard.keys().filter(|t| !c0.dashboard.contains_key(*t)).count();
    let wal_bytes = fs::metadata(format!("{}-wal", daemon.db.display())).map_or(0, |m| m.len());
    Ok(Window {
        churn,
        wal_bytes,
        open,
        dash,
        rest,
        prog_ns: p1.ns - p0.ns,
        prog_runs: p1.runs - p0.runs,
        flows: report.flows_sent,
        reloads,
    })
}

/// With `TRACKER_BENCH_PROFILE=DIR` (a diagnosis, not part of the figures): the daemon's
/// samples over the window by `perf record`, to `DIR/window-K-open|closed.data`, for
/// `perf report --stdio --sort sym -i FILE`.
fn profile(pid: u32, k: usize, open: bool) -> Result<Option<std::process::Child>> {
    let Some(dir) = std::env::var_os("TRACKER_BENCH_PROFILE").map(std::path::PathBuf::from) else {
        return Ok(None);
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("window-{k}-{}.data", if open { "open" } else { "closed" }));
    let child = std::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "997", "-p", &pid.to_string(), "-o"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("perf record (TRACKER_BENCH_PROFILE)")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Some(child))
}

/// Waits (at most FIRST_PRUNE_WAIT) for the daemon's log to show its first prune.
fn wait_for_first_prune(log: &Path) -> Result<()> {
    let start = std::time::Instant::now();
    // Bounded by FIRST_PRUNE_WAIT.
    while !fs::read_to_string(log).unwrap_or_default().contains(FIRST_PRUNE_LINE) {
        ensure!(start.elapsed() < FIRST_PRUNE_WAIT, "the daemon did not prune within {FIRST_PRUNE_WAIT:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// The dashboard's periods, as the page links them.
const PERIODS: [&str; 3] = ["/", "/?period=7d", "/?period=30d"];

/// Each period's first render, [`PAGE_ROUNDS`] times after a warm one, the periods' order
/// rotated each round: milliseconds per round and the largest bytes, per period.
fn time_pages(lab: &Lab, dir: &Path) -> Result<(Vec<Vec<f64>>, Vec<u64>)> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); PERIODS.len()];
    let mut sizes = vec![0u64; PERIODS.len()];
    for round in 0..=PAGE_ROUNDS {
        for i in 0..PERIODS.len() {
            let i = (i + round) % PERIODS.len();
            let (ms, bytes) = first_render(lab, PERIODS[i], dir)?;
            if round > 0 {
                times[i].push(ms);
                sizes[i] = sizes[i].max(bytes);
            }
        }
    }
    Ok((times, sizes))
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

    // The page: on the rows as written, before the daemon's first prune (a minute after its
    // start), then on the closed days packed, as it is from then on.
    let rows = time_pages(lab, &dir)?;
    let (_, _, page) = fetch(lab, &url("/"), &dir.join("page.html"))?;
    let links = linked(&page);
    let live = links.iter().any(|l| l.ends_with(".js"));

    // The costs.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    let mut windows = Vec::new();
    wait_for_first_prune(&dir.join("daemon.log"))?;
    let packed = time_pages(lab, &dir)?;
    for k in 0..4 * QUARTETS {
        let open = matches!(k % 4, 1 | 2);
        eprintln!("dashboard: window {} of {}, {}", k + 1, 4 * QUARTETS, if open { "open" } else { "closed" });
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
    for (when, (times, sizes)) in [("before the first prune (rows)", &rows), ("after it (closed days packed)", &packed)]
    {
        println!("  {when}:");
        println!("  | period | median ms | each round | bytes |");
        println!("  |---|---:|---|---:|");
        for (i, p) in PERIODS.iter().enumerate() {
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
    }
    println!();
    println!(
        "dashboard: the daemon's costs, {} windows of {WINDOW_FLOWS} new UDP flows at {WINDOW_RATE:.0}/s, \
         closed (no client) and open ({} and the first page every {RELOAD_EVERY:?})",
        4 * QUARTETS,
        if live { "the live stream held open" } else { "no live stream: the page has no script" }
    );
    println!(
        "  | window | daemon CPU µs per flow (not the dashboard) | of it in the kernel | dashboard CPU ms | kernel ns per packet | page reloads | dashboard threads ended or new | WAL KiB |"
    );
    println!("  |---|---:|---:|---:|---:|---:|---:|---:|");
    for w in &windows {
        println!(
            "  | {} | {:.1} | {:.1} | {:.0} | {:.1} | {} | {} | {} |",
            if w.open { "open" } else { "closed" },
            w.rest.total() as f64 / 1000.0 / f64::from(w.flows),
            w.rest.sys as f64 / 1000.0 / f64::from(w.flows),
            w.dash.total() as f64 / 1e6,
            w.prog_ns as f64 / w.prog_runs.max(1) as f64,
            w.reloads,
            w.churn,
            w.wal_bytes / 1024
        );
    }
    // Each quartet's open windows over its closed ones, then their median.
    let ratio = |f: &dyn Fn(&Window) -> f64| -> f64 {
        let r: Vec<f64> = windows
            .chunks(4)
            .map(|q| {
                let sum = |open: bool| q.iter().filter(|w| w.open == open).map(f).sum::<f64>();
                sum(true) / sum(false)
            })
            .collect();
        median(&r)
    };
    let per_flow = |w: &Window| w.rest.total() as f64 / f64::from(w.flows);
    let user_per_flow = |w: &Window| w.rest.user as f64 / f64::from(w.flows);
    let sys_per_flow = |w: &Window| w.rest.sys as f64 / f64::from(w.flows);
    let per_packet = |w: &Window| w.prog_ns as f64 / w.prog_runs.max(1) as f64;
    println!(
        "  open / closed (median of the {QUARTETS} quartets): daemon CPU per flow {:.3} (user {:.3}, kernel {:.3}), \
         kernel programs' ns per packet {:.3}; VmRSS at the end {:.1} MiB",
        ratio(&per_flow),
        ratio(&user_per_flow),
        ratio(&sys_per_flow),
        ratio(&per_packet),
        mib(memory.rss_kib)
    );
    Ok(())
}
