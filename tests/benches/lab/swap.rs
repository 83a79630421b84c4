//! The lab benchmark's **swap** section: tracker's throughput cost measured by swapping
//! programs inside one long iperf3 run, so that the slow noise of this 2-core VM (wireguard-go
//! in user space, the host) cancels between neighbouring windows.
//!
//! The real daemon runs in the lab as in the other sections and pins its XDP link and its TCX
//! egress link. For each direction one iperf3 run carries traffic for about 95 s; every
//! [`WINDOW`] the bench replaces the programs of both pinned links with BPF_LINK_UPDATE,
//! alternating tracker's own programs and the empty `baseline_pass` / `baseline_tc_pass`, so
//! both hooks stay occupied and only the programs' work differs. The kernel swaps a link's
//! program atomically (`bpf_xdp_link_update` reinstalls the generic XDP program under RTNL,
//! `tcx_link_update` replaces the entry in the TCX array): no packet is lost or left unseen, the
//! TCP connection does not notice. Throughput per window is read from the receiver's interface
//! counters in `/proc/PID/net/dev` of a process inside the receiving namespace (no process
//! spawned per sample), after [`SETTLE`] (packets queued in wireguard-go at the swap belong to
//! the previous program). Each window's rate is set against the mean of its two neighbours of
//! the other kind (tracker / empty, or the mirror), which cancels any drift that is linear over
//! three windows; the median of those ratios gets a moving-block bootstrap 95 % interval (blocks
//! keep the correlation of ratios that share windows).
//!
//! The daemon keeps running throughout, so its user-space work (a sweep every 2 s, a few ms)
//! falls in windows of both kinds: this section measures the kernel programs' cost; the
//! throughput section measures the whole daemon against nothing. [`WINDOW`] is not a divisor of
//! the sweep interval, so sweeps do not lock onto one kind of window.
//!
//! The throughput ratio is a noisy measure on this VM (window-to-window CV of 10-20 %), so the
//! section also measures the programs' cost directly: with the kernel's run-time statistics on
//! (BPF_ENABLE_STATS) it reads each program's run time and run count, and sets the time
//! tracker's programs took beyond the empty ones' against the CPU time the whole machine spent
//! (from /proc/stat) per packet at the hooks. When the tunnel is CPU-bound, as wireguard-go in
//! user space makes it here, throughput falls by at most that share: a bound with no window
//! noise in it.
//!
//! It fails only when a case did not do what it is named after: a swap not read back from the
//! link (the link's `prog_id`), iperf3 ending early or failing, the daemon dying, or tracker's
//! flows not holding the bytes that crossed while its programs were in (and only those).

use std::{
    ffi::CString,
    fs,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf,
    programs::{SchedClassifier, Xdp, loaded_programs},
};
use serde_json::Value;
use tracker::kernel::{self, PIN_LINK_TC_EGRESS, PIN_LINK_XDP};
use tracker_common::names::{PROG_TC_EGRESS, PROG_XDP};
use tracker_tests::{
    ChildGuard, Lab, Ns,
    lab::{IPERF_PORT, IPERF_V4},
    procs,
};

#[path = "swap/report.rs"]
mod report;
use report::{Prog, Window, report};

use super::{
    DEFAULT_SWEEP, Daemon, Dir, EMPTY_PROG, IPERF_ATTEMPTS, IPERF_CONNECT_MS, IPERF_RETRY_PAUSE, IPERF_SLACK, POLL,
    Pins, THROUGHPUT_TARGET, iperf_bytes_in_db, load_average,
};

/// One window: a swap, then SETTLE, then the measured rest.
const WINDOW: Duration = Duration::from_millis(1250);
const SETTLE: Duration = Duration::from_millis(250);
/// Windows per direction (even: as many of each kind). The 95 % interval narrows with the
/// square root of the count: `TRACKER_SWAP_WINDOWS=288` (6 minutes a direction) halves it.
const DEFAULT_WINDOWS: u32 = 72;
const WINDOWS_ENV: &str = "TRACKER_SWAP_WINDOWS";

/// The windows per direction: [`DEFAULT_WINDOWS`] or `$TRACKER_SWAP_WINDOWS`, made even.
pub fn windows() -> u32 {
    let n = std::env::var(WINDOWS_ENV).ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(DEFAULT_WINDOWS);
    n.max(4).div_ceil(2) * 2
}
/// iperf3 runs this long before the first window (TCP slow start, wireguard-go's queues) and
/// this long after the last (the swap back to tracker), so its traffic spans every window.
const WARMUP: Duration = Duration::from_secs(3);
const TAIL: Duration = Duration::from_secs(2);
/// After iperf3 ends: two sweeps and a bit, so SQLite holds tracker's final counts.
const SWEPT_AFTER: Duration = Duration::from_millis(4500);
/// The empty TC program in the baseline object.
const EMPTY_TC_PROG: &str = "baseline_tc_pass";
/// Measure only on a quiet machine: wait until the 1-minute load average is below this,
/// polling every QUIET_POLL, at most QUIET_MAX (then measure anyway and say so).
const QUIET_LOAD: f64 = 0.6;
const QUIET_POLL: Duration = Duration::from_secs(30);
const QUIET_MAX: Duration = Duration::from_secs(30 * 60);
/// Ethernet header bytes the veth counts per frame (ETH_HLEN); a TUN device counts IP only.
const ETH_HLEN: u64 = 14;
/// Tracker's bytes in the data direction over what the receiver got while tracker's programs
/// were in: outside this band it did not count what it is named after (GSO segments counted
/// with their own headers on egress, and the receiver's GRO, move it by a few percent; counting
/// during empty windows too would put it near 2, not counting near 0).
const COUNTED_BAND: (f64, f64) = (0.9, 1.1);
/// Kernel program names are cut to BPF_OBJ_NAME_LEN - 1 bytes (include/uapi/linux/bpf.h).
const BPF_OBJ_NAME_MAX: usize = 15;

// ---- raw bpf(2): aya 0.14 swaps a link's program only into a program object it loaded
// itself (`attach_to_link`), and tracker's programs belong to the daemon ----

/// enum bpf_cmd (include/uapi/linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
/// link_update.flags: replace only if the link still runs `old_prog_fd`'s program.
const BPF_F_REPLACE: u32 = 1 << 2;
/// Bytes of `union bpf_attr` passed; the kernel requires the rest of what it is given to be 0.
const ATTR_BYTES: usize = 128;
/// Bytes of `struct bpf_link_info` read: `type`, `id`, `prog_id` (u32 each) and some of the union.
const LINK_INFO_BYTES: usize = 64;

fn sys_bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_BYTES]) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a writable ATTR_BYTES buffer laid out as the command's member of union
    // bpf_attr; the kernel copies at most that many bytes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_BYTES as libc::c_uint) };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(rc) }
}

fn put_u32(attr: &mut [u8; ATTR_BYTES], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

/// BPF_OBJ_GET: a new fd on the object pinned at `path`.
fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = [0u8; ATTR_BYTES];
    // struct { __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags; }
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr).with_context(|| format!("BPF_OBJ_GET {}", path.display()))?;
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_LINK_UPDATE with BPF_F_REPLACE: `link` runs `new` from now on, if it ran `old`.
fn link_update(link: BorrowedFd, new: BorrowedFd, old: BorrowedFd) -> std::io::Result<()> {
    let mut attr = [0u8; ATTR_BYTES];
    // struct { __u32 link_fd; __u32 new_prog_fd; __u32 flags; __u32 old_prog_fd; }
    put_u32(&mut attr, 0, link.as_raw_fd() as u32);
    put_u32(&mut attr, 4, new.as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_F_REPLACE);
    put_u32(&mut attr, 12, old.as_raw_fd() as u32);
    sys_bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// The id of the program a link runs now (`bpf_link_info.prog_id`).
fn link_prog_id(link: BorrowedFd) -> Result<u32> {
    let mut info = [0u8; LINK_INFO_BYTES];
    let mut attr = [0u8; ATTR_BYTES];
    // struct { __u32 bpf_fd; __u32 info_len; __aligned_u64 info; }
    put_u32(&mut attr, 0, link.as_raw_fd() as u32);
    put_u32(&mut attr, 4, LINK_INFO_BYTES as u32);
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD on a link")?;
    Ok(u32::from_ne_bytes(info[8..12].try_into().expect("4 bytes")))
}

/// The ids of the programs the daemon's pinned XDP and TC links run now.
pub(super) fn daemon_prog_ids(pins: &Path) -> Result<[u32; 2]> {
    let id = |pin: &str| -> Result<u32> { link_prog_id(obj_get(&pins.join(pin))?.as_fd()) };
    Ok([id(PIN_LINK_XDP)?, id(PIN_LINK_TC_EGRESS)?])
}

// ---- the swapper ----

/// A loaded program: its id and an fd of ours on it.
struct ProgRef {
    id: u32,
    fd: OwnedFd,
}

/// One of the daemon's pinned links with the two programs it alternates between.
struct Hook {
    name: &'static str,
    link: OwnedFd,
    tracker: ProgRef,
    empty: ProgRef,
}

impl Hook {
    fn prog(&self, p: Prog) -> &ProgRef {
        match p {
            Prog::Tracker => &self.tracker,
            Prog::Empty => &self.empty,
        }
    }
}

/// Both links and what runs in them. Dropping it puts tracker's programs back; it must be
/// dropped before the daemon stops: its fds keep the links attached after they are unpinned.
struct Swapper {
    hooks: [Hook; 2],
    now: Prog,
    /// Swaps made and read back from both links.
    swaps: u32,
    _empty: Ebpf,
}

impl Swapper {
    fn new(pins: &Path) -> Result<Self> {
        let mut empty = Ebpf::load(kernel::BASELINE_OBJECT).context("loading the empty programs")?;
        let xdp: &mut Xdp = empty.program_mut(EMPTY_PROG).context("no baseline_pass")?.try_into()?;
        xdp.load().context("verifying the empty XDP program")?;
        let tc: &mut SchedClassifier = empty.program_mut(EMPTY_TC_PROG).context("no baseline_tc_pass")?.try_into()?;
        tc.load().context("verifying the empty TC program")?;
        let ours = |name: &str| -> Result<ProgRef> {
            let p = empty.program(name).context("loaded above")?;
            Ok(ProgRef { id: p.info()?.id(), fd: p.fd()?.as_fd().try_clone_to_owned()? })
        };
        let hook = |name: &'static str, pin: &str, prog: &str, empty: ProgRef| -> Result<Hook> {
            let link = obj_get(&pins.join(pin))?;
            let id = link_prog_id(link.as_fd())?;
            // Bounded by the programs loaded on the machine.
            let info = loaded_programs()
                .filter_map(Result::ok)
                .find(|p| p.id() == id)
                .with_context(|| format!("the {name} link's program {id} is not loaded"))?;
            let want = &prog[..prog.len().min(BPF_OBJ_NAME_MAX)];
            let got = info.name_as_str().unwrap_or("?");
            ensure!(got == want, "the daemon's {name} link runs {got:?}, not {want:?}");
            let fd = info.fd().context("opening tracker's program")?.as_fd().try_clone_to_owned()?;
            Ok(Hook { name, link, tracker: ProgRef { id, fd }, empty })
        };
        let xdp = hook("XDP", PIN_LINK_XDP, PROG_XDP, ours(EMPTY_PROG)?)?;
        let tc = hook("TCX egress", PIN_LINK_TC_EGRESS, PROG_TC_EGRESS, ours(EMPTY_TC_PROG)?)?;
        Ok(Self { hooks: [xdp, tc], now: Prog::Tracker, swaps: 0, _empty: empty })
    }

    /// Puts `to` into both links and reads each link's program back.
    fn set(&mut self, to: Prog) -> Result<()> {
        if to == self.now {
            return Ok(());
        }
        for h in &self.hooks {
            let (new, old) = (h.prog(to), h.prog(self.now));
            link_update(h.link.as_fd(), new.fd.as_fd(), old.fd.as_fd())
                .with_context(|| format!("BPF_LINK_UPDATE of the {} link to {}", h.name, to.name()))?;
        }
        self.now = to;
        self.check()?;
        self.swaps += 1;
        Ok(())
    }

    /// The ids of tracker's programs and of the empty ones, in both hooks.
    fn ids(&self) -> ([u32; 2], [u32; 2]) {
        (self.hooks.each_ref().map(|h| h.tracker.id), self.hooks.each_ref().map(|h| h.empty.id))
    }

    /// Fails unless both links run the programs of `self.now`.
    fn check(&self) -> Result<()> {
        for h in &self.hooks {
            let (got, want) = (link_prog_id(h.link.as_fd())?, h.prog(self.now).id);
            ensure!(got == want, "the {} link runs program {got}, not {}'s {want}", h.name, self.now.name());
        }
        Ok(())
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        if let Err(e) = self.set(Prog::Tracker) {
            eprintln!("warning: putting tracker's programs back: {e:#}");
        }
    }
}

// ---- interface counters ----

/// An interface's byte counter in one direction, read through a process in its namespace.
struct Counter {
    pid: u32,
    iface: String,
    /// Index of the bytes field after `iface:` in /proc/net/dev (packets follow it).
    field: usize,
    /// Link-layer bytes per packet in the counter (IP bytes are reported).
    l2: u64,
}

/// /proc/net/dev's columns after the name: 8 receive counters, then transmit bytes, packets.
const RX_BYTES: usize = 0;
const TX_BYTES: usize = 8;

impl Counter {
    /// Where the data arrives: up, the iperf3 server's veth in the internet namespace; down,
    /// the phone's WireGuard (TUN) interface. These rates are the goodput compared.
    fn receiver(lab: &Lab, dir: Dir) -> Result<Self> {
        let n = lab.names();
        let (ns, iface, l2) = match dir {
            Dir::Up => (Ns::Net, n.net_uplink_iface.clone(), ETH_HLEN),
            Dir::Down => (Ns::Phone, n.phone_iface.clone(), 0),
        };
        let pid = procs::in_netns(&n.ns_path(ns))?.first().map(|p| p.pid).context("no process in the namespace")?;
        Ok(Self { pid, iface, field: RX_BYTES, l2 })
    }

    /// Where tracker's programs see the data: the VPN's WireGuard interface, received (XDP)
    /// up, sent (TCX egress) down. Read through the daemon, which runs in that namespace.
    /// Unlike the receiver it also counts what the tunnel loses after it.
    fn hook(lab: &Lab, dir: Dir, daemon_pid: u32) -> Self {
        let field = if dir == Dir::Up { RX_BYTES } else { TX_BYTES };
        Self { pid: daemon_pid, iface: lab.names().vpn_iface.clone(), field, l2: 0 }
    }

    /// IP bytes so far, and when they were read.
    fn read(&self) -> Result<(u64, Instant)> {
        let path = format!("/proc/{}/net/dev", self.pid);
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let at = Instant::now();
        let line = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{}:", self.iface)))
            .with_context(|| format!("no {} in {path}", self.iface))?;
        let f: Vec<u64> = line.split_whitespace().skip(self.field).take(2).map(str::parse).collect::<Result<_, _>>()?;
        ensure!(f.len() == 2, "short line for {} in {path}", self.iface);
        Ok((f[0] - self.l2 * f[1], at))
    }
}

// ---- one direction ----

/// iperf3 from the phone for `seconds`, its JSON in `out`; retried while the server is busy.
fn start_iperf(lab: &Lab, dir: Dir, seconds: u64, out: &Path) -> Result<ChildGuard> {
    for attempt in 1..=IPERF_ATTEMPTS {
        let mut c = lab.phone_cmd("iperf3");
        c.args(["-J", "-c", &IPERF_V4.to_string(), "-p", &IPERF_PORT.to_string(), "-t", &seconds.to_string()])
            .args(["--connect-timeout", &IPERF_CONNECT_MS.to_string()]);
        if dir == Dir::Down {
            c.arg("-R");
        }
        c.stdin(Stdio::null()).stdout(fs::File::create(out)?).stderr(fs::File::create(out.with_extension("err"))?);
        let mut child = ChildGuard::spawn(c)?;
        let warm = Instant::now() + WARMUP;
        while Instant::now() < warm {
            if let Some(status) = child.try_status()? {
                let text = fs::read_to_string(out).unwrap_or_default();
                if text.contains("busy") && attempt < IPERF_ATTEMPTS {
                    std::thread::sleep(IPERF_RETRY_PAUSE);
                    break;
                }
                bail!("iperf3 {} ended during warm-up ({status}): {text:.300}", dir.name());
            }
            std::thread::sleep(POLL);
        }
        if Instant::now() >= warm {
            return Ok(child);
        }
    }
    bail!("iperf3 {}: the server stayed busy", dir.name())
}

/// What one direction measured.
struct Run {
    dir: Dir,
    windows: Vec<Window>,
    /// IP bytes that passed tracker's hook while its programs were in (all but the empty
    /// windows, counted at the hook from swap to swap).
    under_tracker: u64,
    /// Bytes tracker's flows gained in the data direction.
    counted: u64,
    /// iperf3's receiver figure over the whole run (both kinds of windows), Gbit/s.
    iperf_gbps: f64,
    load: String,
    cost: Cost,
}

/// What the kernel's run-time statistics and /proc/stat measured over one direction's run.
pub(super) struct Cost {
    /// Run time (ns) and runs of tracker's two programs, and of the empty ones.
    pub tracker: ProgStats,
    pub empty: ProgStats,
    /// CPU time every core spent busy (not idle, not waiting for I/O), ns, and of all cores
    /// in the same time: busy or not, CPU-bound is when the two are near.
    pub busy_ns: u64,
    pub cores_ns: u64,
}

#[derive(Clone, Copy, Default, Debug)]
pub(super) struct ProgStats {
    pub ns: u64,
    pub runs: u64,
}

impl std::ops::Sub for ProgStats {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self { ns: self.ns.saturating_sub(o.ns), runs: self.runs.saturating_sub(o.runs) }
    }
}

/// The summed statistics of programs `ids` (both hooks' programs of one kind).
pub(super) fn prog_stats(ids: &[u32]) -> Result<ProgStats> {
    let mut s = ProgStats::default();
    // Bounded by the programs loaded on the machine.
    for info in loaded_programs().filter_map(Result::ok).filter(|p| ids.contains(&p.id())) {
        s.ns += u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        s.runs += info.run_count();
    }
    Ok(s)
}

/// CPU time all cores spent busy since boot, ns: /proc/stat's first line less idle and iowait.
fn busy_ns() -> Result<u64> {
    let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text.lines().next().and_then(|l| l.strip_prefix("cpu ")).context("no cpu line in /proc/stat")?;
    let f: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    ensure!(f.len() >= 8, "short cpu line in /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal: the 4th and 5th are not busy.
    let busy: u64 = f[..8].iter().sum::<u64>() - f[3] - f[4];
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    Ok(busy * (1_000_000_000 / hz))
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn direction(lab: &Lab, daemon: &mut Daemon, swapper: &mut Swapper, dir: Dir, scratch: &Path) -> Result<Run> {
    let load = load_average();
    let rx = Counter::receiver(lab, dir)?;
    let hook = Counter::hook(lab, dir, daemon.pid());
    let before_db = iperf_bytes_in_db(&daemon.db, &daemon.pins)?;
    let (first, _) = hook.read()?;
    let (tracker_ids, empty_ids) = swapper.ids();
    let (tracker0, empty0, busy0) = (prog_stats(&tracker_ids)?, prog_stats(&empty_ids)?, busy_ns()?);
    let cost_start = Instant::now();
    // Bytes at the hook while the empty programs were in.
    let mut at_hook_empty = 0;
    let count = windows();
    let span = WARMUP + WINDOW * count + TAIL;
    let out = scratch.join(format!("iperf3-{}.json", dir.name()));
    let mut iperf = start_iperf(lab, dir, span.as_secs_f64().ceil() as u64, &out)?;
    eprintln!("swap {}: {count} windows of {WINDOW:?}, load {load}", dir.name());
    let mut windows = Vec::new();
    let start = Instant::now();
    for k in 0..count {
        let prog = if k % 2 == 0 { Prog::Tracker } else { Prog::Empty };
        sleep_until(start + WINDOW * k);
        swapper.set(prog)?;
        let (h_swap, _) = hook.read()?;
        sleep_until(start + WINDOW * k + SETTLE);
        let (b0, t0) = rx.read()?;
        sleep_until(start + WINDOW * (k + 1));
        let (b1, t1) = rx.read()?;
        let gbps = (b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64() / 1e9;
        windows.push(Window { prog, gbps });
        if prog == Prog::Empty {
            sleep_until(start + WINDOW * (k + 1));
            at_hook_empty += hook.read()?.0 - h_swap;
        }
    }
    swapper.set(Prog::Tracker)?;
    let cost = Cost {
        tracker: prog_stats(&tracker_ids)? - tracker0,
        empty: prog_stats(&empty_ids)? - empty0,
        busy_ns: busy_ns()? - busy0,
        cores_ns: u64::try_from(cost_start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            * std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    };
    ensure!(iperf.try_status()?.is_none(), "iperf3 {} ended before the last window", dir.name());
    let status = iperf.wait_timeout(TAIL + IPERF_SLACK)?.context("iperf3 did not end")?;
    let (last, _) = hook.read()?;
    let text = fs::read_to_string(&out).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).with_context(|| format!("iperf3 printed {text:.300}"))?;
    ensure!(status.success() && v["error"].is_null(), "iperf3 {} failed ({status}): {}", dir.name(), v["error"]);
    let iperf_gbps = v["end"]["sum_received"]["bits_per_second"].as_f64().context("no end.sum_received")? / 1e9;

    std::thread::sleep(SWEPT_AFTER);
    ensure!(daemon.child.as_mut().is_some_and(ChildGuard::is_running), "the daemon died:\n{}", daemon.log_tail());
    let s = daemon.status()?;
    let pid = u64::from(daemon.pid());
    let attached_pid = s["attached_pid"].as_u64().or_else(|| s["attached_pid"].as_str().and_then(|p| p.parse().ok()));
    ensure!(
        s["xdp_attached"] == true && s["tc_egress_attached"] == true && attached_pid == Some(pid),
        "the daemon's status is not that of a running, attached daemon: {s}"
    );
    let after_db = iperf_bytes_in_db(&daemon.db, &daemon.pins)?;
    let counted = match dir {
        Dir::Up => after_db.0 - before_db.0,
        Dir::Down => after_db.1 - before_db.1,
    };
    ensure!(
        cost.tracker.runs > 0 && cost.empty.runs > 0,
        "the kernel's run-time statistics counted no runs (tracker {:?}, empty {:?}): are they enabled?",
        cost.tracker,
        cost.empty
    );
    Ok(Run {
        dir,
        windows,
        under_tracker: (last - first).saturating_sub(at_hook_empty),
        counted,
        iperf_gbps,
        load,
        cost,
    })
}

/// Waits (at most QUIET_MAX) for the 1-minute load average to fall below QUIET_LOAD; says what
/// it was.
fn wait_for_quiet() -> String {
    tracker_tests::quiet::wait_for_quiet("swap", QUIET_LOAD, QUIET_POLL, QUIET_MAX)
}

pub fn section(lab: &Lab) -> Result<()> {
    let quiet = wait_for_quiet();
    let dir = lab.names().dir.join("bench-swap");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pins = Pins::new("swap")?;
    let mut daemon = Daemon::start(lab, &dir.join("tracker.db"), &pins.0, &dir.join("daemon.log"))?;
    let mut swapper = Swapper::new(&pins.0)?;
    // Run time and count per program while this fd is open (BPF_ENABLE_STATS, 5.8): a clock
    // read around every run, for tracker's and the empty programs alike.
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling the kernel's BPF run-time statistics")?;
    let mut runs = Vec::new();
    for d in [Dir::Up, Dir::Down] {
        runs.push(direction(lab, &mut daemon, &mut swapper, d, &dir)?);
    }
    swapper.set(Prog::Tracker)?;
    swapper.check()?;
    let swaps = swapper.swaps;
    // Our fds on the links would keep them attached once the daemon unpins them.
    drop(swapper);
    let (exit, _) = daemon.stop()?;
    ensure!(exit.success(), "tracker run exited with {exit}:\n{}", daemon.log_tail());
    report(&runs, &quiet, swaps);
    for r in &runs {
        let share = r.counted as f64 / r.under_tracker.max(1) as f64;
        ensure!(
            (COUNTED_BAND.0..=COUNTED_BAND.1).contains(&share),
            "{}: tracker's flows gained {} bytes while {} passed its hook with its programs in \
             ({share:.3}): it did not count exactly while its programs were in",
            r.dir.name(),
            r.counted,
            r.under_tracker
        );
    }
    Ok(())
}
