//! The lab benchmark's **idle** section: the daemon's CPU while nothing happens, first with
//! empty flow tables (the baseline), then with both tables (FLOWS_V4, FLOWS_V6) full of open
//! TCP flows that do not change. Issue 9's target: at most 1% of one core over a minute.
//!
//! The tables are filled by running the daemon's own attached XDP program under
//! BPF_PROG_TEST_RUN, one TCP SYN per flow: the entries land in the daemon's real maps, as
//! from the phone, without pushing 131,072 packets through wireguard-go. A SYN-only flow is an
//! open TCP flow, whose idle timeout (10 min) is longer than this section, so the tables stay
//! full while it measures.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::programs::loaded_programs;
use etherparse::PacketBuilder;
use serde_json::Value;
use tracker_common::defaults::FLOW_ENTRIES;
use tracker_tests::{
    Lab,
    lab::{PHONE_V4, PHONE_V6, TLS_PORT},
    testrun::test_run,
};

use super::{DEFAULT_SWEEP, Daemon, Pins, counter, mib, settle_store};

/// CPU time is read over this window, for both the baseline and the full tables.
const WINDOW: Duration = Duration::from_secs(60);
/// After the daemon attaches (or the fill is stored), it gets this long before a window.
const SETTLE: Duration = Duration::from_secs(5);
/// The target: percent of one core.
const TARGET_PERCENT: f64 = 1.0;
/// The XDP program's name in tracker-ebpf, as the kernel lists it.
const XDP_PROG: &str = "tracker_xdp";
/// XDP_PASS (uapi bpf.h): a SYN to an unblocked address passes.
const XDP_PASS: u32 = 2;
/// Flows per table: both tables at their capacity.
const PER_TABLE: u32 = FLOW_ENTRIES;
/// Source ports per remote address (flows spread over PER_TABLE / PORTS remote addresses).
const PORTS: u32 = 16_384;
const FIRST_PORT: u32 = 20_000;

/// The daemon's CPU time (user + system) so far, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Result<Duration> {
    stat_cpu(&fs::read_to_string(format!("/proc/{pid}/stat")).context("reading the daemon's /proc stat")?)
}

/// The CPU time (user + system) a /proc `stat` line (a process's or a thread's) gives.
fn stat_cpu(stat: &str) -> Result<Duration> {
    let (user, kernel) = stat_times(stat)?;
    Ok(user + kernel)
}

/// The user-mode and kernel-mode CPU time a /proc `stat` line gives.
pub(super) fn stat_times(stat: &str) -> Result<(Duration, Duration)> {
    // Fields after the command name, which is in parentheses and may hold spaces (proc(5)).
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5), 12 and 13 after the name and state.
    let ticks = |i: usize| -> Result<u64> { fields.get(i).context("short /proc stat")?.parse().context("/proc stat") };
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).context("_SC_CLK_TCK")?;
    let time = |t: u64| Duration::from_secs_f64(t as f64 / hz as f64);
    Ok((time(ticks(11)?), time(ticks(12)?)))
}

/// Percent of one core the daemon used over WINDOW.
fn cpu_percent(daemon: &Daemon) -> Result<f64> {
    let (t0, c0) = (Instant::now(), cpu_time(daemon.pid())?);
    std::thread::sleep(WINDOW);
    let (t1, c1) = (Instant::now(), cpu_time(daemon.pid())?);
    Ok(100.0 * (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64())
}

/// Flow `i` of a table: a SYN from the phone to port 443 of a documentation address.
fn syn(i: u32, v6: bool) -> Result<Vec<u8>> {
    let host = u8::try_from(1 + i / PORTS).context("too many flows for the address range")?;
    let port = u16::try_from(FIRST_PORT + i % PORTS).context("port range")?;
    let ip = if v6 {
        PacketBuilder::ipv6(PHONE_V6.octets(), Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, host.into()).octets(), 64)
    } else {
        PacketBuilder::ipv4(PHONE_V4.octets(), Ipv4Addr::new(203, 0, 113, host).octets(), 64)
    };
    let tcp = ip.tcp(port, TLS_PORT, 1000, 64240).syn();
    let mut v = Vec::with_capacity(tcp.size(0));
    tcp.write(&mut v, &[]).context("building a SYN")?;
    Ok(v)
}

/// Runs PER_TABLE SYNs per address family through the daemon's attached XDP program.
fn fill(lab: &Lab) -> Result<()> {
    let iface = &lab.names().vpn_iface;
    let out =
        tracker_tests::cmd::run(lab.cmd(tracker_tests::Ns::Vpn, "ip").args(["-j", "link", "show", "dev", iface]))?;
    let link: Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    let xdp = &link[0]["xdp"];
    let prog = if xdp["prog"].is_object() { &xdp["prog"] } else { &xdp["attached"][0]["prog"] };
    let id = prog["id"].as_u64().with_context(|| format!("no XDP program on {iface}: {out}"))?;
    // Bounded by the number of programs loaded on the machine.
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| u64::from(p.id()) == id)
        .with_context(|| format!("XDP program {id} vanished"))?;
    let name = info.name_as_str().unwrap_or("?").to_owned();
    ensure!(name == XDP_PROG, "the program on {iface} is {name:?}, not the daemon's {XDP_PROG}");
    let fd = info.fd().context("opening the daemon's XDP program")?;
    for v6 in [false, true] {
        for i in 0..PER_TABLE {
            let (verdict, _) = test_run(fd.as_fd(), &syn(i, v6)?, 1)?;
            ensure!(verdict == XDP_PASS, "flow {i} got verdict {verdict}");
        }
    }
    Ok(())
}

pub fn section(lab: &Lab) -> Result<()> {
    let dir = lab.names().dir.join("bench-idle");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pins = Pins::new("idle")?;
    let mut daemon = Daemon::start(lab, &dir.join("tracker.db"), &pins.0, &dir.join("daemon.log"))?;
    std::thread::sleep(SETTLE);
    eprintln!("idle: empty tables, measuring the daemon's CPU for {WINDOW:?}");
    let empty = cpu_percent(&daemon)?;

    let fill_start = Instant::now();
    fill(lab)?;
    let filled_in = fill_start.elapsed();
    eprintln!("idle: {} SYNs run in {filled_in:.1?}; waiting for the sweeps to store them", 2 * PER_TABLE);
    let (status, _) = settle_store(&daemon)?;
    std::thread::sleep(SETTLE);
    eprintln!("idle: full tables, measuring the daemon's CPU for {WINDOW:?}");
    let full = cpu_percent(&daemon)?;
    let after = daemon.status()?;
    let memory = daemon.memory()?;
    daemon.stop()?;

    let sweeps = WINDOW.as_secs_f64() / DEFAULT_SWEEP.as_secs_f64();
    let n = |s: &Value, k: &str| counter(s, k).map_or_else(|| "?".to_owned(), |v| v.to_string());
    println!();
    println!("idle: the daemon at default settings, nothing changing, CPU over {WINDOW:?} (user + system)");
    println!(
        "  tables: {} SYNs run through the attached {XDP_PROG} ({} per table) in {filled_in:.1?}; \
         flows_in_kernel {} before, {} after the window; flows_stored {}; flow_evictions {}; flows_ended {}",
        2 * PER_TABLE,
        PER_TABLE,
        n(&status, "flows_in_kernel"),
        n(&after, "flows_in_kernel"),
        n(&after, "flows_stored"),
        n(&after, "flow_evictions"),
        n(&after, "flows_ended"),
    );
    println!("  | tables | CPU, % of one core | ms per sweep ({DEFAULT_SWEEP:?}) |");
    println!("  |---|---:|---:|");
    for (what, pct) in [("empty (baseline)", empty), ("full, unchanging", full)] {
        println!("  | {what} | {pct:.2} | {:.2} |", pct / 100.0 * WINDOW.as_secs_f64() * 1000.0 / sweeps);
    }
    println!(
        "  full / empty: {:.1}×; target ≤ {TARGET_PERCENT}% of one core: {}; VmRSS {:.1} MiB",
        full / empty.max(f64::MIN_POSITIVE),
        if full <= TARGET_PERCENT { "met" } else { "NOT met" },
        mib(memory.rss_kib)
    );
    Ok(())
}
