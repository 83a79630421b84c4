//! `cargo xtask bench lab`: tracker on a real WireGuard tunnel in the namespace lab (prefix
//! `tb`), in three sections.
//!
//! - **throughput**: iperf3 from the phone through the tunnel to the lab's iperf3 server, up
//!   (the phone sends) and down (`-R`), with (a) the real daemon attached to the VPN interface,
//!   (b) an empty XDP program attached there the same way (generic XDP), (c) nothing attached.
//!   Configurations and directions alternate within every round, so a burst of load on the
//!   2-core VM hits them alike; medians are reported with the ratios tracker / empty XDP (target
//!   >= 0.98 both ways) and tracker / nothing.
//! - **swap**: one long iperf3 run per direction while the bench swaps tracker's programs and
//!   empty ones into the daemon's own pinned links every 1.25 s (BPF_LINK_UPDATE); each window
//!   against its neighbours, so the slow noise that hides 2 % from the section above cancels
//!   ([`swap`]).
//! - **flood**: 100,000 new UDP flows at 10,000 a second from the phone ([`flood`]), with the
//!   daemon at its default settings; then what reached SQLite (every flow once, with its exact
//!   count?), the ring's lost records and the daemon's peak RSS, against the targets.
//! - **idle**: the daemon's CPU (user + system, from /proc) over a minute with empty tables,
//!   then over a minute with both flow tables full (65,536 TCP flows each, run through the
//!   attached program by BPF_PROG_TEST_RUN) and nothing changing; the ratio and the target
//!   (at most 1% of one core) ([`idle`]).
//!
//! - **dns**: a query for a blocked name answered by the kernel beside the same query answered
//!   by the resolver ([`dns`]).
//! - **dashboard**: the first page from the phone on 1,000,000 flows, and the daemon's costs
//!   with a dashboard open and updating beside none ([`dashboard`]).
//!
//! Like the XDP benchmark it asserts nothing about timing or about the targets: it prints every
//! figure, the method and whether each target is met. It fails when a case did not do what it
//! is named after (iperf3 failed, the wrong program was attached, the flood did not go out at
//! its rate), because then the figure would be of something else. Root only; the lab, the
//! daemons and the pins are removed at the end, also on error.
//!
//! Arguments (after `--`): `throughput`, `swap`, `flood`, `idle`, `dns` and/or `dashboard` run
//! only those sections; default all six.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus, Stdio},
    time::{Duration, Instant},
};

#[path = "lab/dashboard.rs"]
mod dashboard;
#[path = "lab/dns.rs"]
mod dns;
#[path = "common/household.rs"]
#[expect(dead_code, reason = "the report benchmark's 10M shape is not used by the lab's")]
mod household;
#[path = "lab/idle.rs"]
mod idle;
#[path = "lab/swap.rs"]
mod swap;

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use serde_json::Value;
use tracker::kernel;
use tracker_tests::{
    ChildGuard, Lab, Ns,
    cmd::have_program,
    flood::{self, Flood, FloodReport, Found},
    lab::{IPERF_PORT, IPERF_V4},
    median,
    quiet::load_average,
    tracker_bin,
};

/// The lab's prefix: distinct from every test's (`te*`, `tc*`, `tn*`, `tl*`) and from `lab up`'s.
const PREFIX: &str = "tb";
/// Pin directories of this benchmark's daemons, one per section (`{PINS_PREFIX}-{section}`).
const PINS_PREFIX: &str = "/sys/fs/bpf/tracker-bench-tb";

/// How long `tracker run` gets to attach both programs.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);
/// A bounded CLI command (`tracker status`, `tracker flows` of 100,000 rows).
const CLI_LIMIT: Duration = Duration::from_secs(60);
/// After SIGTERM the daemon writes what is left (up to a whole flow table) and detaches.
const STOP_LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

// ---- throughput ----

/// Rounds of the throughput section; each runs every configuration in both directions.
const ROUNDS: usize = 7;
/// iperf3's measured seconds per run, after IPERF_OMIT seconds of warm-up (TCP slow start,
/// wireguard-go's queues) that iperf3 leaves out of its figures.
const IPERF_SECONDS: u64 = 3;
const IPERF_OMIT: u64 = 1;
/// A run that takes longer than its seconds plus this is killed and fails the benchmark.
const IPERF_SLACK: Duration = Duration::from_secs(15);
/// iperf3 gives up connecting after this (its `--connect-timeout`, ms).
const IPERF_CONNECT_MS: u64 = 3000;
/// The lab's iperf3 server takes one test at a time and may still be finishing the last one
/// ("the server is busy"): that many attempts, this far apart.
const IPERF_ATTEMPTS: usize = 3;
const IPERF_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The target: tracker's throughput at least this fraction of the empty program's.
const THROUGHPUT_TARGET: f64 = 0.98;
/// The empty XDP_PASS program in tracker-user's `baseline` object.
const EMPTY_PROG: &str = "baseline_pass";

// ---- flood ----

const FLOOD_FLOWS: u32 = 100_000;
/// New flows per second.
const FLOOD_RATE: f64 = 10_000.0;
const FLOOD_PACKETS_PER_FLOW: u32 = 1;
/// The flood is named after its rate: below this fraction of it, it measured something else.
const FLOOD_MIN_RATE_FRACTION: f64 = 0.9;
/// The daemon's default sweep interval (`tracker run --sweep-interval`, 2 s).
const DEFAULT_SWEEP: Duration = Duration::from_secs(2);
/// After the flood, SQLite is taken as caught up once `flows_stored` has not changed for this
/// long (two sweeps and a bit), waiting at most SWEEP_WAIT.
const SETTLED_FOR: Duration = Duration::from_millis(4500);
const SWEEP_WAIT: Duration = Duration::from_secs(90);
const SWEEP_POLL: Duration = Duration::from_millis(500);
/// The target for the daemon's peak resident memory.
const RSS_TARGET_MIB: f64 = 50.0;
const KIB_PER_MIB: f64 = 1024.0;

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Throughput,
    Swap,
    Flood,
    Idle,
    Dns,
    Dashboard,
}

fn sections() -> Result<Vec<Section>> {
    // cargo bench passes `--bench` (and libtest-style flags) to every bench binary: skip flags.
    let mut chosen = Vec::new();
    for arg in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
        let s = match arg.as_str() {
            "throughput" => Section::Throughput,
            "swap" => Section::Swap,
            "flood" => Section::Flood,
            "idle" => Section::Idle,
            "dns" => Section::Dns,
            "dashboard" => Section::Dashboard,
            other => bail!(
                "unknown section {other:?}: use throughput, swap, flood, idle, dns and/or dashboard (default all)"
            ),
        };
        if !chosen.contains(&s) {
            chosen.push(s);
        }
    }
    if chosen.is_empty() {
        chosen =
            vec![Section::Throughput, Section::Swap, Section::Flood, Section::Idle, Section::Dns, Section::Dashboard];
    }
    Ok(chosen)
}

fn bench() -> Result<()> {
    let sections = sections()?;
    ensure!(
        tracker_tests::is_root(),
        "the lab benchmark needs root (network namespaces, eBPF programs): run `sudo -E cargo \
         xtask bench lab`"
    );
    let bin = tracker_bin();
    ensure!(bin.exists(), "{} not found: run `cargo xtask build`", bin.display());
    for tool in ["iperf3", "ip", "bpftool"] {
        ensure!(have_program(tool), "{tool} not found: run `cargo xtask setup`");
    }
    let started = Instant::now();
    eprintln!("bringing up lab {PREFIX}");
    let lab = Lab::up(PREFIX)?;
    for section in sections {
        match section {
            Section::Throughput => throughput(&lab)?,
            Section::Swap => swap::section(&lab)?,
            Section::Flood => flood_section(&lab)?,
            Section::Idle => idle::section(&lab)?,
            Section::Dns => dns::section(&lab)?,
            Section::Dashboard => dashboard::section(&lab)?,
        }
    }
    eprintln!("lab benchmark done in {:.0?}", started.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// A pin directory of this benchmark's, emptied at the start and removed when dropped (pinned
/// maps and links outlive the daemon otherwise).
struct Pins(PathBuf);

impl Pins {
    fn new(section: &str) -> Result<Self> {
        let p = PathBuf::from(format!("{PINS_PREFIX}-{section}"));
        if p.exists() {
            fs::remove_dir_all(&p).with_context(|| format!("removing stale pins {}", p.display()))?;
        }
        Ok(Self(p))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `tracker run` in the lab's VPN namespace with a database and pins of the benchmark's own,
/// otherwise at its defaults. Stopped (SIGTERM) when dropped.
struct Daemon {
    child: Option<ChildGuard>,
    db: PathBuf,
    pins: PathBuf,
    log: PathBuf,
}

/// The daemon's memory as /proc/PID/status shows it, in KiB.
#[derive(Clone, Copy, Default)]
struct Memory {
    hwm_kib: u64,
    rss_kib: u64,
}

impl Daemon {
    fn start(lab: &Lab, db: &Path, pins: &Path, log: &Path) -> Result<Self> {
        let mut c = lab.vpn_cmd(tracker_bin());
        c.arg("--db").arg(db).arg("--pin-dir").arg(pins);
        c.args(["run", "--iface", &lab.names().vpn_iface]);
        let file = fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        c.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
        let mut d = Self { child: Some(lab.spawn(c)?), db: db.to_owned(), pins: pins.to_owned(), log: log.to_owned() };
        let pid = d.pid();
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        // Bounded by ATTACH_TIMEOUT; a status that fails while the daemon creates its database
        // is a "not yet".
        loop {
            if !d.child.as_mut().is_some_and(ChildGuard::is_running) {
                bail!("tracker run exited early:\n{}", d.log_tail());
            }
            let s = d.status().unwrap_or(Value::Null);
            let attached_pid =
                s["attached_pid"].as_u64().or_else(|| s["attached_pid"].as_str().and_then(|p| p.parse().ok()));
            if s["xdp_attached"] == true && s["tc_egress_attached"] == true && attached_pid == Some(u64::from(pid)) {
                break;
            }
            if Instant::now() > deadline {
                bail!("tracker run did not attach within {ATTACH_TIMEOUT:?}:\n{}", d.log_tail());
            }
            std::thread::sleep(POLL);
        }
        // nsenter execs the program, so the child's pid is the daemon's: RSS is read from it.
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        ensure!(comm.trim() == "tracker", "pid {pid} is {comm:?}, not the tracker daemon");
        Ok(d)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, ChildGuard::pid)
    }

    fn cli(&self, args: &[&str]) -> Command {
        cli(&self.db, &self.pins, args)
    }

    fn status(&self) -> Result<Value> {
        json(self.cli(&["status", "--format", "json"]))
    }

    fn memory(&self) -> Result<Memory> {
        read_memory(self.pid())?.context("the daemon has no memory figures: it has exited")
    }

    /// SIGTERM, then waits (at most STOP_LIMIT) for the final flush and exit, reading the
    /// daemon's memory until it is gone: the last figures seen are the final ones.
    fn stop(&mut self) -> Result<(ExitStatus, Memory)> {
        let mut child = self.child.take().context("the daemon was stopped already")?;
        let pid = child.pid();
        let mut last = read_memory(pid)?.unwrap_or_default();
        child.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_LIMIT;
        loop {
            // Zombies have no Vm* lines: None once it has exited, before it is reaped.
            if let Some(m) = read_memory(pid)? {
                last = m;
            }
            if let Some(status) = child.try_status()? {
                return Ok((status, last));
            }
            if Instant::now() > deadline {
                // Dropping the guard kills it.
                drop(child);
                bail!("tracker run did not exit within {STOP_LIMIT:?} of SIGTERM:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
        log[start..].to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = child.stop();
        }
    }
}

fn cli(db: &Path, pins: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(tracker_bin());
    c.arg("--db").arg(db).arg("--pin-dir").arg(pins).args(args);
    c
}

/// VmHWM and VmRSS of `pid`; None when it has exited (or is a zombie).
fn read_memory(pid: u32) -> Result<Option<Memory>> {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Ok(None);
    };
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    };
    Ok(match (field("VmHWM:"), field("VmRSS:")) {
        (Some(hwm_kib), Some(rss_kib)) => Some(Memory { hwm_kib, rss_kib }),
        _ => None,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / KIB_PER_MIB
}

/// Runs `cmd` to completion within `limit` (killed past it), its stdout in a temporary file
/// rather than a pipe so a large output never blocks it; fails on a non-zero exit.
fn run_bounded(mut cmd: Command, limit: Duration, out: &Path) -> Result<String> {
    let line = tracker_tests::cmd::describe(&cmd);
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let err_path = out.with_extension("err");
    let err = fs::File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(err);
    let mut child = ChildGuard::spawn(cmd)?;
    let Some(status) = child.wait_timeout(limit)? else {
        bail!("`{line}` did not finish within {limit:?}");
    };
    let stdout = fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(out);
    let _ = fs::remove_file(&err_path);
    ensure!(status.success(), "`{line}` failed ({status}): {}{}", stderr.trim(), stdout.trim());
    Ok(stdout)
}

fn json(cmd: Command) -> Result<Value> {
    let out = std::env::temp_dir().join(format!("tracker-bench-{}.json", std::process::id()));
    let line = tracker_tests::cmd::describe(&cmd);
    let text = run_bounded(cmd, CLI_LIMIT, &out)?;
    serde_json::from_str(&text).with_context(|| format!("`{line}` printed no JSON: {text:.200}"))
}

/// What is attached to the lab's VPN interface: the XDP program's name and mode (`ip -d -j
/// link` in its namespace; `mode` 2 is generic/SKB) and the names of the TCX egress programs
/// (a TCX query from a thread in the namespace; this bpftool predates TCX in `net show`).
#[derive(Debug, PartialEq)]
struct Attached {
    xdp: Option<(String, u64)>,
    tc_egress: Vec<String>,
}

/// `ip link`'s `xdp.mode` for generic (SKB) XDP, XDP_ATTACHED_SKB in linux/if_link.h.
const XDP_ATTACHED_SKB: u64 = 2;

fn attached(lab: &Lab) -> Result<Attached> {
    let iface = lab.names().vpn_iface.clone();
    let mut c = lab.vpn_cmd("ip");
    c.args(["-d", "-j", "link", "show", "dev", &iface]);
    let v = json(c)?;
    let xdp = &v[0]["xdp"];
    let xdp = xdp["prog"]["name"].as_str().map(|name| (name.to_owned(), xdp["mode"].as_u64().unwrap_or(0)));
    let tc_egress = lab.run_in(Ns::Vpn, move || -> Result<Vec<String>> {
        let (_, progs) = SchedClassifier::query_tcx(&iface, TcAttachType::Egress)
            .with_context(|| format!("querying the TCX egress programs of {iface}"))?;
        Ok(progs.iter().map(|p| p.name_as_str().unwrap_or("?").to_owned()).collect())
    })??;
    Ok(Attached { xdp, tc_egress })
}

// ---------------------------------------------------------------------------------------------
// Throughput

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Tracker,
    EmptyXdp,
    Nothing,
}

const CONFIGS: [Config; 3] = [Config::Tracker, Config::EmptyXdp, Config::Nothing];

impl Config {
    fn index(self) -> usize {
        CONFIGS.iter().position(|&c| c == self).expect("listed")
    }

    fn name(self) -> &'static str {
        match self {
            Config::Tracker => "(a) tracker attached",
            Config::EmptyXdp => "(b) empty XDP",
            Config::Nothing => "(c) nothing",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Dir {
    Up,
    Down,
}

impl Dir {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

/// One iperf3 run: the receiver's figures.
#[derive(Clone, Copy)]
struct IperfRun {
    bits_per_second: f64,
    bytes: u64,
}

/// The empty XDP program attached to the lab's VPN interface in generic (SKB) mode, as the
/// daemon attaches tracker's on a TUN device; dropping it detaches it (aya owns the link).
struct EmptyXdp(#[allow(dead_code, reason = "held for its link")] Ebpf);

impl EmptyXdp {
    fn attach(lab: &Lab) -> Result<Self> {
        let iface = lab.names().vpn_iface.clone();
        // Attached from a thread inside the VPN namespace: the interface name is resolved and
        // the link created there. The link lives as long as the Ebpf object, wherever it goes.
        let ebpf = lab.run_in(Ns::Vpn, move || -> Result<Ebpf> {
            let mut ebpf = Ebpf::load(kernel::BASELINE_OBJECT).context("loading the empty program")?;
            let prog: &mut Xdp =
                ebpf.program_mut(EMPTY_PROG).context("baseline_pass missing from the baseline object")?.try_into()?;
            prog.load().context("verifying the empty program")?;
            prog.attach(&iface, XdpMode::Skb)
                .with_context(|| format!("attaching the empty program to {iface} (generic XDP)"))?;
            Ok(ebpf)
        })??;
        Ok(Self(ebpf))
    }
}

fn iperf(lab: &Lab, dir: Dir, scratch: &Path) -> Result<IperfRun> {
    let mut last_err = None;
    for attempt in 1..=IPERF_ATTEMPTS {
        match iperf_once(lab, dir, scratch) {
            Ok(run) => return Ok(run),
            Err(e) if format!("{e:#}").contains("busy") && attempt < IPERF_ATTEMPTS => {
                std::thread::sleep(IPERF_RETRY_PAUSE);
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.expect("at least one attempt failed"))
}

fn iperf_once(lab: &Lab, dir: Dir, scratch: &Path) -> Result<IperfRun> {
    let mut c = lab.phone_cmd("iperf3");
    c.args(["-J", "-c", &IPERF_V4.to_string(), "-p", &IPERF_PORT.to_string()])
        .args(["-t", &IPERF_SECONDS.to_string(), "-O", &IPERF_OMIT.to_string()])
        .args(["--connect-timeout", &IPERF_CONNECT_MS.to_string()]);
    if dir == Dir::Down {
        c.arg("-R");
    }
    let limit = Duration::from_secs(IPERF_SECONDS + IPERF_OMIT) + IPERF_SLACK;
    let out = scratch.join("iperf3.json");
    // iperf3 -J reports its errors in the JSON too, with exit status 1.
    let text = match run_bounded(c, limit, &out) {
        Ok(text) => text,
        Err(e) => bail!("iperf3 {}: {e:#}", dir.name()),
    };
    let v: Value = serde_json::from_str(&text).with_context(|| format!("iperf3 printed {text:.300}"))?;
    if let Some(err) = v["error"].as_str() {
        bail!("iperf3 {}: {err}", dir.name());
    }
    let received = &v["end"]["sum_received"];
    let (Some(bits_per_second), Some(bytes)) = (received["bits_per_second"].as_f64(), received["bytes"].as_u64())
    else {
        bail!("iperf3 {}: no end.sum_received in {text:.300}", dir.name());
    };
    ensure!(bytes > 0 && bits_per_second > 0.0, "iperf3 {}: nothing received", dir.name());
    Ok(IperfRun { bits_per_second, bytes })
}

/// Bytes up and down of tracker's TCP flows to the iperf3 server, summed (from SQLite).
fn iperf_bytes_in_db(db: &Path, pins: &Path) -> Result<(u64, u64)> {
    let flows = json(cli(db, pins, &["flows", "--limit", "0", "--format", "json"]))?;
    let flows = flows.as_array().context("tracker flows prints an array")?;
    let server = IPERF_V4.to_string();
    let (mut up, mut down) = (0, 0);
    for f in flows {
        if f["protocol"] == "tcp" && f["remote"] == server.as_str() && f["remote_port"] == IPERF_PORT {
            up += f["bytes_up"].as_u64().unwrap_or(0);
            down += f["bytes_down"].as_u64().unwrap_or(0);
        }
    }
    Ok((up, down))
}

fn throughput(lab: &Lab) -> Result<()> {
    let dir = lab.names().dir.join("bench-throughput");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pins = Pins::new("throughput")?;
    let db = dir.join("tracker.db");
    let log = dir.join("daemon.log");
    // runs[config][dir]: Gbit/s per round.
    let mut runs = vec![[Vec::new(), Vec::new()]; CONFIGS.len()];
    // Bytes tracker's flows to the server hold after the last round with it.
    let mut in_db = (0u64, 0u64);
    // The machine's 1-minute load average at each round's start: the first shows other work on
    // the 2 cores (a parallel build); later ones include the benchmark's own traffic.
    let mut loads = Vec::new();
    let started = Instant::now();
    for round in 0..ROUNDS {
        eprintln!("throughput round {}/{ROUNDS} ({:.0?} so far)", round + 1, started.elapsed());
        loads.push(load_average());
        for j in 0..CONFIGS.len() {
            let config = CONFIGS[(round + j) % CONFIGS.len()];
            let dirs = if (round + j) % 2 == 0 { [Dir::Up, Dir::Down] } else { [Dir::Down, Dir::Up] };
            // Holds whatever is attached for this configuration; dropped (detached) after it.
            let mut daemon = None;
            let mut empty = None;
            match config {
                Config::Tracker => daemon = Some(Daemon::start(lab, &db, &pins.0, &log)?),
                Config::EmptyXdp => empty = Some(EmptyXdp::attach(lab)?),
                Config::Nothing => {}
            }
            check_attached(lab, config)?;
            let mut got = [None, None];
            for d in dirs {
                let run = iperf(lab, d, &dir).with_context(|| format!("{}, round {}", config.name(), round + 1))?;
                runs[config.index()][d.index()].push(run.bits_per_second / 1e9);
                got[d.index()] = Some(run);
            }
            if let Some(mut d) = daemon.take() {
                let (status, _) = d.stop()?;
                ensure!(status.success(), "tracker run exited with {status}:\n{}", d.log_tail());
                // Every byte iperf3 received crossed the tunnel past tracker's programs, so its
                // flows must hold at least that many (IP bytes include the headers).
                let now = iperf_bytes_in_db(&db, &pins.0)?;
                let (up, down) = (now.0 - in_db.0, now.1 - in_db.1);
                let (want_up, want_down) = (got[0].map_or(0, |r| r.bytes), got[1].map_or(0, |r| r.bytes));
                ensure!(
                    up >= want_up && down >= want_down,
                    "round {}: tracker recorded {up} bytes up and {down} down to the iperf3 server, \
                     but iperf3 received {want_up} up and {want_down} down: it was not counting",
                    round + 1
                );
                in_db = now;
            }
            drop(empty);
        }
    }
    check_attached(lab, Config::Nothing)?;
    loads.push(load_average());
    report_throughput(&runs, &loads);
    Ok(())
}

/// Fails unless what is attached to the VPN interface is what `config` is named after.
fn check_attached(lab: &Lab, config: Config) -> Result<()> {
    let a = attached(lab)?;
    let xdp = a.xdp.as_ref().map(|(name, mode)| (name.as_str(), *mode));
    let ok = match config {
        Config::Tracker => {
            xdp.is_some_and(|(name, mode)| name != EMPTY_PROG && mode == XDP_ATTACHED_SKB) && a.tc_egress.len() == 1
        }
        Config::EmptyXdp => xdp == Some((EMPTY_PROG, XDP_ATTACHED_SKB)) && a.tc_egress.is_empty(),
        Config::Nothing => xdp.is_none() && a.tc_egress.is_empty(),
    };
    ensure!(ok, "{}: the VPN interface has {a:?}", config.name());
    Ok(())
}

fn report_throughput(runs: &[[Vec<f64>; 2]], loads: &[String]) {
    println!("\n## Tunnel throughput with tracker attached (iperf3 through WireGuard, lab {PREFIX})\n");
    println!("Method:");
    println!(
        "- iperf3 (TCP, one stream) from the phone namespace through the wireguard-go tunnel and \
         the VPN host to the lab's iperf3 server ({IPERF_V4}:{IPERF_PORT}): up (the phone sends) \
         and down (-R). Each run: {IPERF_OMIT} s warm-up left out, then {IPERF_SECONDS} s \
         measured; the figure is the receiver's bits_per_second (end.sum_received of iperf3 -J)."
    );
    println!(
        "- Configurations on the VPN host's WireGuard interface: (a) the real daemon, `tracker \
         run --iface IFACE` with its own --db and --pin-dir, started before and stopped \
         (SIGTERM) after each round's two runs (XDP in generic mode on ingress, TCX on egress); \
         (b) the empty XDP_PASS program ({EMPTY_PROG}), attached in generic mode the same way, \
         no egress program; (c) nothing. What is attached is checked before every run pair \
         (`ip -d link` and a TCX query), and tracker's flows must hold at least the bytes iperf3 received."
    );
    println!(
        "- {ROUNDS} rounds; each runs all three configurations, in an order rotated every round, \
         each in both directions (order alternating). The medians of the rounds are compared, \
         and, since tracker and the empty program run minutes apart at most in a round, also \
         the median of each round's own ratio (robust to load that changes between rounds)."
    );
    println!(
        "- 1-minute load average at each round's start and at the end: [{}]. The first shows \
         other work on the 2 cores (a parallel build); later ones also count this benchmark's \
         own iperf3 and wireguard-go threads, which alone take it to about 7.",
        loads.join(" ")
    );
    println!("\nFigures, Gbit/s: median [each round]:");
    for config in CONFIGS {
        for dir in [Dir::Up, Dir::Down] {
            let v = &runs[config.index()][dir.index()];
            let each: Vec<String> = v.iter().map(|g| format!("{g:.3}")).collect();
            println!("  {:<22} {:<4} {:>7.3}  [{}]", config.name(), dir.name(), median(v), each.join(" "));
        }
    }
    let m = |c: Config, d: Dir| median(&runs[c.index()][d.index()]);
    // Each round's tracker figure over the same round's empty-XDP (or nothing) figure.
    let paired = |other: Config, d: Dir| -> Vec<f64> {
        let (t, o) = (&runs[Config::Tracker.index()][d.index()], &runs[other.index()][d.index()]);
        t.iter().zip(o).map(|(t, o)| t / o).collect()
    };
    println!(
        "\n| direction | tracker Gbit/s | empty XDP Gbit/s | nothing Gbit/s | tracker / empty XDP \
         | tracker / nothing | per-round tracker / empty XDP, median [each] |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    let mut verdicts = Vec::new();
    for dir in [Dir::Up, Dir::Down] {
        let (t, e, n) = (m(Config::Tracker, dir), m(Config::EmptyXdp, dir), m(Config::Nothing, dir));
        let pe = paired(Config::EmptyXdp, dir);
        let each: Vec<String> = pe.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {} | {t:.3} | {e:.3} | {n:.3} | {:.3} | {:.3} | {:.3} [{}] |",
            dir.name(),
            t / e,
            t / n,
            median(&pe),
            each.join(" ")
        );
        verdicts.push((dir, t / e, median(&pe)));
    }
    println!("\nTargets:");
    for (dir, ratio, paired) in verdicts {
        let met = if ratio >= THROUGHPUT_TARGET { "yes" } else { "no" };
        println!(
            "- {}: tracker / empty XDP >= {THROUGHPUT_TARGET} (ratio of medians): {ratio:.3}, \
             target met: {met} (median of per-round ratios {paired:.3})",
            dir.name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Flood

/// Packets and drops of an interface, from `ip -s -j link` in its namespace.
#[derive(Clone, Copy, Default)]
struct IfStats {
    rx_packets: u64,
    rx_dropped: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

fn if_stats(lab: &Lab, ns: Ns, iface: &str) -> Result<IfStats> {
    let mut c = lab.cmd(ns, "ip");
    c.args(["-s", "-j", "link", "show", "dev", iface]);
    let v = json(c)?;
    let s = &v[0]["stats64"];
    let n = |dir: &str, k: &str| s[dir][k].as_u64().with_context(|| format!("no {dir}.{k} for {iface}: {v}"));
    Ok(IfStats {
        rx_packets: n("rx", "packets")?,
        rx_dropped: n("rx", "dropped")?,
        tx_packets: n("tx", "packets")?,
        tx_dropped: n("tx", "dropped")?,
    })
}

/// Waits, at most SWEEP_WAIT, until SQLite has caught up: `flows_stored` has not changed for
/// SETTLED_FOR. Returns the last status and whether it settled (false: the wait ran out).
fn settle_store(daemon: &Daemon) -> Result<(Value, bool)> {
    let start = Instant::now();
    let (mut stored, mut since) = (None, Instant::now());
    loop {
        let s = daemon.status()?;
        let now = counter(&s, "flows_stored");
        if now != stored {
            (stored, since) = (now, Instant::now());
        } else if since.elapsed() >= SETTLED_FOR {
            return Ok((s, true));
        }
        if start.elapsed() > SWEEP_WAIT {
            return Ok((s, false));
        }
        std::thread::sleep(SWEEP_POLL);
    }
}

/// A kernel counter from `tracker status` (missing: None).
fn counter(status: &Value, key: &str) -> Option<u64> {
    status[key].as_u64()
}

fn flood_section(lab: &Lab) -> Result<()> {
    let dir = lab.names().dir.join("bench-flood");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pins = Pins::new("flood")?;
    let db = dir.join("tracker.db");
    let log = dir.join("daemon.log");
    let names = lab.names();
    let mut plan = Flood::new(FLOOD_FLOWS, FLOOD_RATE);
    plan.packets_per_flow = FLOOD_PACKETS_PER_FLOW;

    eprintln!("flood: starting the daemon (default settings)");
    let mut daemon = Daemon::start(lab, &db, &pins.0, &log)?;
    let idle = daemon.memory()?;
    let vpn_before = if_stats(lab, Ns::Vpn, &names.vpn_iface)?;
    let phone_before = if_stats(lab, Ns::Phone, &names.phone_iface)?;
    eprintln!(
        "flood: {} flows at {:.0}/s, {} datagram(s) of {} B each, to {:?} from ports {}",
        plan.flows, plan.rate, plan.packets_per_flow, plan.payload, plan.dsts, plan.first_port
    );
    let report = flood::run(lab, &plan)?;
    let vpn_after = if_stats(lab, Ns::Vpn, &names.vpn_iface)?;
    let phone_after = if_stats(lab, Ns::Phone, &names.phone_iface)?;
    eprintln!(
        "flood: sent {} flows in {:.2?} ({:.0}/s); waiting for the daemon to sweep them",
        report.flows_sent,
        report.elapsed,
        report.rate()
    );

    let wait_start = Instant::now();
    let (_, settled) = settle_store(&daemon)?;
    let waited = wait_start.elapsed();
    let before_stop = daemon.status()?;
    let peak = daemon.memory()?;
    eprintln!("flood: stopping the daemon (SIGTERM: final flush)");
    let (exit, last) = daemon.stop()?;
    ensure!(exit.success(), "tracker run exited with {exit}:\n{}", daemon.log_tail());
    // Read after the stop: the final flush is in, and the pins still hold the kernel counters.
    let after_stop = json(cli(&db, &pins.0, &["status", "--format", "json"]))?;
    let flows = json(cli(&db, &pins.0, &["flows", "--limit", "0", "--format", "json"]))?;
    let flows = flows.as_array().context("tracker flows prints an array")?;
    let found = flood::compare(&report, flows)?;
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    let log_warnings: Vec<&str> = log_text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();

    let stats = FloodStats {
        report: &report,
        vpn_rx: vpn_after.rx_packets - vpn_before.rx_packets,
        vpn_rx_dropped: vpn_after.rx_dropped - vpn_before.rx_dropped,
        phone_tx: phone_after.tx_packets - phone_before.tx_packets,
        phone_tx_dropped: phone_after.tx_dropped - phone_before.tx_dropped,
        settled,
        waited,
        before_stop: &before_stop,
        after_stop: &after_stop,
        rows: flows.len(),
        found: &found,
        idle,
        peak,
        last,
        log_warnings: &log_warnings,
    };
    report_flood(&stats);

    ensure!(
        report.complete && report.flows_sent == FLOOD_FLOWS,
        "the flood sent {} of {FLOOD_FLOWS} flows within {:?}: not the case it is named after",
        report.flows_sent,
        plan.max_time
    );
    ensure!(
        report.rate() >= FLOOD_RATE * FLOOD_MIN_RATE_FRACTION,
        "the flood went out at {:.0} flows/s, below {:.0}% of {FLOOD_RATE:.0}: not the case it is \
         named after",
        report.rate(),
        FLOOD_MIN_RATE_FRACTION * 100.0
    );
    Ok(())
}

struct FloodStats<'a> {
    report: &'a FloodReport,
    vpn_rx: u64,
    vpn_rx_dropped: u64,
    phone_tx: u64,
    phone_tx_dropped: u64,
    settled: bool,
    waited: Duration,
    before_stop: &'a Value,
    after_stop: &'a Value,
    rows: usize,
    found: &'a Found,
    idle: Memory,
    peak: Memory,
    last: Memory,
    log_warnings: &'a [&'a str],
}

fn report_flood(s: &FloodStats) {
    let r = s.report;
    let plan = &r.plan;
    println!("\n## Flood: {FLOOD_FLOWS} new UDP flows at {FLOOD_RATE:.0}/s through the tunnel (lab {PREFIX})\n");
    println!("Method:");
    println!(
        "- The daemon runs at its defaults (sweep every {DEFAULT_SWEEP:?}, default map and ring \
         sizes), with its own --db and --pin-dir, in the VPN namespace."
    );
    println!(
        "- tracker_tests::flood from the phone namespace: one UDP socket ({}), `send_to` per \
         datagram; flow i goes to host i mod {} of {:?}, port {} + i / {}: {} distinct \
         5-tuples, {} datagram(s) of {} B payload each ({} IP bytes), paced by a token bucket \
         of {} flows on the monotonic clock, bounded to {:?}.",
        r.client,
        plan.dsts.len(),
        plan.dsts,
        plan.first_port,
        plan.dsts.len(),
        plan.flows,
        plan.packets_per_flow,
        plan.payload,
        plan.ip_bytes_per_packet(),
        plan.burst,
        plan.max_time
    );
    println!(
        "- Then: wait until `flows_stored` (tracker status) has not changed for {SETTLED_FOR:?} \
         (at most {SWEEP_WAIT:?}), read the daemon's VmHWM/VmRSS (/proc/PID/status), SIGTERM it \
         (final flush; memory read until it exits), and compare `tracker flows --format json` \
         with the flood's plan: a flow is exact when it has one row with {} packet(s) and {} \
         bytes up and nothing down.",
        plan.packets_per_flow,
        u64::from(plan.packets_per_flow) * plan.ip_bytes_per_packet()
    );

    println!("\nFigures:");
    println!(
        "  sent: {} flows, {} datagrams in {:.2?}: {:.0} flows/s achieved (target {FLOOD_RATE:.0}); \
         {} sends retried for buffer space; complete: {}",
        r.flows_sent,
        r.datagrams_sent,
        r.elapsed,
        r.rate(),
        r.retries,
        if r.complete { "yes" } else { "no" }
    );
    println!(
        "  tunnel: phone's WireGuard interface sent {} packets ({} dropped); the VPN host's \
         received {} ({} dropped) during the flood",
        s.phone_tx, s.phone_tx_dropped, s.vpn_rx, s.vpn_rx_dropped
    );
    let lost_in_tunnel = r.datagrams_sent.saturating_sub(s.vpn_rx);
    if lost_in_tunnel > 0 {
        println!(
            "  the VPN host's interface received {lost_in_tunnel} datagrams fewer than were sent: \
             lost in the tunnel (wireguard-go, queues), before tracker could see them"
        );
    }
    println!(
        "  sweeps: {} after {:.1?} (flows_stored {})",
        if s.settled { "settled" } else { "NOT settled" },
        s.waited,
        counter(s.before_stop, "flows_stored").map_or("?".into(), |n| n.to_string())
    );
    let keys = [
        "packets_seen",
        "flows_created",
        "flows_in_kernel",
        "flow_evictions",
        "ring_lost",
        "flow_update_errors",
        "parse_errors",
        "flows_stored",
        "db_bytes",
    ];
    for (when, st) in [("before the stop", s.before_stop), ("after the stop", s.after_stop)] {
        let parts: Vec<String> =
            keys.iter().map(|k| format!("{k} {}", counter(st, k).map_or("?".into(), |n| n.to_string()))).collect();
        println!("  tracker status {when}: {}", parts.join(", "));
    }
    let f = s.found;
    println!(
        "  SQLite ({} rows): flood flows found once {}, more than once {}, missing {}; with the \
         exact count {}; fewer packets {}, more packets {}; other rows (ICMP errors, ...) {}",
        s.rows, f.once, f.duplicated, f.missing, f.exact, f.fewer_packets, f.more_packets, f.other_rows
    );
    println!(
        "  daemon memory: idle after start VmRSS {:.1} MiB; before the stop VmHWM {:.1} MiB, \
         VmRSS {:.1} MiB; last seen while exiting VmHWM {:.1} MiB, VmRSS {:.1} MiB",
        mib(s.idle.rss_kib),
        mib(s.peak.hwm_kib),
        mib(s.peak.rss_kib),
        mib(s.last.hwm_kib),
        mib(s.last.rss_kib)
    );
    println!("  daemon log: {} warning/error lines", s.log_warnings.len());
    for l in s.log_warnings.iter().take(5) {
        println!("    {l}");
    }

    let ring_lost = counter(s.after_stop, "ring_lost").or_else(|| counter(s.before_stop, "ring_lost"));
    let hwm = mib(s.peak.hwm_kib.max(s.last.hwm_kib));
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("\nTargets:");
    println!(
        "- 0 ring records lost: ring_lost {}, target met: {}",
        ring_lost.map_or("?".into(), |n| n.to_string()),
        yes(ring_lost == Some(0))
    );
    println!(
        "- every flow in SQLite once with its exact count: {} of {} ({:.2}%), target met: {}",
        f.exact,
        r.flows_sent,
        100.0 * f.exact as f64 / f64::from(r.flows_sent.max(1)),
        yes(f.exact == u64::from(r.flows_sent) && f.duplicated == 0)
    );
    println!("- peak RSS <= {RSS_TARGET_MIB:.0} MiB: {hwm:.1} MiB, target met: {}", yes(hwm <= RSS_TARGET_MIB));
}
