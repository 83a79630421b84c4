//! `cargo xtask bench`: what tracker's XDP program costs per packet, as the kernel measures it
//! (BPF_PROG_TEST_RUN), side by side with xdp-filter from Debian's xdp-tools (loaded with one
//! deny rule, the way it is deployed) and with an empty XDP_PASS program, for three cases: a
//! packet of an existing flow, a packet that creates a flow, and a blocked packet.
//!
//! Prints every figure, the method, a markdown table for the README and whether the targets are
//! met (existing flow <= xdp-filter's pass path, blocked <= xdp-filter's drop path). It asserts
//! nothing about timing: this is a benchmark, on a machine that may be busy. It does fail when a
//! program returns the wrong verdict or a case did not take the path it is named after, because
//! then the figure would be of something else.
//!
//! Root only. xdp-filter runs on a veth pair inside a network namespace of its own (`trkbench`)
//! with its pins in a private bpffs under /run/trkbench; everything is removed at the end, also
//! on error, and leftovers of a killed run are removed at the start.

use std::{
    fs,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::{ProgramFd, TestRun as _, TestRunOptions, Xdp, loaded_programs},
};
use etherparse::PacketBuilder;
use ipnet::IpNet;
use tracker::kernel::{self, MapSizes, PinDir, Tables};
use tracker_common::{Counter, L2_LEN_ETHERNET, L2_LEN_NONE, defaults};
use tracker_tests::{
    cmd::{have_program, run},
    median,
};

/// Runs per measurement of a fixed packet. A million makes the kernel's integer-ns average
/// stable to about 1 ns and takes tens of milliseconds per measurement.
const REPEAT: u32 = 1_000_000;
/// Every measurement is taken this many times, interleaved with the others so a burst of load
/// on the machine hits all programs alike; the median is reported.
const ROUNDS: usize = 5;
/// Within a round, a fixed-packet measurement keeps the fastest of this many back-to-back test
/// runs. The kernel's figure is wall time: on a busy VM a vCPU is now and then descheduled by
/// the host for up to hundreds of ms (single runs of 300 ms were seen), and such a stall inside
/// one 50 ms test run inflates its average several-fold; longer runs catch stalls more often, so
/// without this the slower program would look slower still. The fastest run is the one without.
const BEST_OF: usize = 5;
/// Distinct flows created per series for case (b), one BPF_PROG_TEST_RUN each. Two series of
/// them (TCP and UDP) plus the existing flow stay well below the flow table's size, so creation
/// never has to evict (checked).
const NEW_FLOWS: u16 = 20_000;
const FIRST_NEW_PORT: u16 = 20_000;
// A quarter of the table stays free because an LRU map can start evicting before it is full
// (free entries wait on per-CPU lists); the run checks that nothing was evicted.
const _: () = assert!(
    2 * NEW_FLOWS as u32 + 1 < defaults::FLOW_ENTRIES / 4 * 3,
    "the new flows of one round must fit the flow table"
);
/// Case (b) drains tracker's event ring after every this many packets, as a daemon under load
/// reads events in batches. The "reader caught up" row drains after every packet: a record
/// that finds the reader caught up used to wake it (an irq_work, a self-IPI in a VM); records
/// are now submitted with BPF_RB_NO_WAKEUP, and the row shows that this costs nothing more.
const DRAIN_BATCH: usize = 1000;
/// Upper bound on ring entries drained at once: far more than DRAIN_BATCH packets produce (at
/// most two events each).
const MAX_DRAIN: usize = 1 << 16;

const PHONE: [u8; 4] = [10, 77, 0, 2];
const REMOTE: [u8; 4] = [203, 0, 113, 10];
/// The one address both tracker and xdp-filter deny.
const DENIED: [u8; 4] = [203, 0, 113, 66];
const DENIED_RULE: &str = "203.0.113.66/32";
const DENIED_ADDR: &str = "203.0.113.66";
const MAC_PHONE_SIDE: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_HOST: [u8; 6] = [2, 0, 0, 0, 0, 2];
const EXISTING_PORT: u16 = 40_000;
const BLOCKED_PORT: u16 = 40_001;
const HTTPS: u16 = 443;
/// Payload of the existing flow's packet: a mid-stream segment, past the first payload (which
/// tracker copies to userspace once per flow direction).
const MID_STREAM_PAYLOAD: usize = 100;
/// A QUIC Initial is padded to at least 1200 bytes (RFC 9000, 14.1): the largest first payload
/// tracker copies in practice.
const QUIC_INITIAL_PAYLOAD: usize = 1200;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const NETNS: &str = "trkbench";
const IFACE: &str = "xfb0";
const PEER: &str = "xfb1";
const SCRATCH: &str = "/run/trkbench";
/// A stale lock left by a killed xdp-filter blocks every later xdp-filter command.
const XDP_FILTER_LOCK: &str = "/run/xdp-filter.lck";

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<()> {
    ensure!(
        tracker_tests::is_root(),
        "the XDP benchmark needs root (it loads eBPF programs and creates a network namespace \
         for xdp-filter): run `sudo -E cargo xtask bench`"
    );
    for tool in ["ip", "xdp-filter", "bpftool"] {
        ensure!(
            have_program(tool),
            "{tool} not found: install iproute2, xdp-tools and bpftool (`cargo xtask setup` does)"
        );
    }
    let started = Instant::now();
    let pkts = Packets::build()?;

    // Declared first so it is dropped last: every program and pin below lives in it.
    let scratch = Scratch::create()?;
    pkts.write_files(&scratch)?;
    let xdp_filter = XdpFilter::load(&scratch)?;
    let mut raw = Tracker::load(&scratch, L2_LEN_NONE, "raw IP")?;
    let mut eth = Tracker::load(&scratch, L2_LEN_ETHERNET, "Ethernet")?;
    let empty = Empty::load()?;
    eprintln!(
        "xdp-filter: program {} (id {}) on {IFACE}, deny rule {DENIED_ADDR} (dst)",
        xdp_filter.prog_name, xdp_filter.prog_id
    );

    let mut f = Figures::default();
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS} ({:.0?} so far)", started.elapsed());
        raw.warm_existing(&pkts.existing_raw)?;
        eth.warm_existing(&pkts.existing_eth)?;
        let empty = empty.prog()?;

        // (a) existing flow and (c) blocked: one packet, REPEAT runs per test run.
        f.a_raw.add(raw.fixed(&pkts.existing_raw, Route::Existing)?);
        f.a_eth.add(eth.fixed(&pkts.existing_eth, Route::Existing)?);
        f.a_xdp_filter.add(xdp_filter.fixed_bpftool(&scratch.file(PASS_FILE), XDP_PASS)?);
        f.a_empty_raw.add(fixed(empty, &pkts.existing_raw, XDP_PASS)?);
        f.a_empty_eth.add(fixed(empty, &pkts.existing_eth, XDP_PASS)?);
        f.c_raw.add(raw.fixed(&pkts.blocked_raw, Route::Blocked)?);
        f.c_eth.add(eth.fixed(&pkts.blocked_eth, Route::Blocked)?);
        f.c_xdp_filter.add(xdp_filter.fixed_bpftool(&scratch.file(DROP_FILE), XDP_DROP)?);
        f.c_empty_raw.add(fixed(empty, &pkts.blocked_raw, XDP_PASS)?);
        f.c_empty_eth.add(fixed(empty, &pkts.blocked_eth, XDP_PASS)?);

        // (b) new flows: one test run per packet, each packet a flow not seen before. The same
        // method on the existing flow's packet gives the method's own floor.
        let same = |pkt| std::iter::repeat_n(pkt, NEW_FLOWS.into());
        let batch = DRAIN_BATCH;
        raw.series(&mut f.floor_raw, same(&pkts.existing_raw[..]), Route::Existing, batch)?;
        eth.series(&mut f.floor_eth, same(&pkts.existing_eth[..]), Route::Existing, batch)?;
        raw.series(&mut f.b_tcp_raw, raw_of(&pkts.new_tcp), Route::Creates, batch)?;
        eth.series(&mut f.b_tcp_eth, eth_of(&pkts.new_tcp), Route::Creates, batch)?;
        plain_series(&xdp_filter.prog, &mut f.b_tcp_xdp_filter, eth_of(&pkts.new_tcp))?;
        plain_series(empty, &mut f.b_tcp_empty, eth_of(&pkts.new_tcp))?;
        raw.series(&mut f.b_udp_raw, raw_of(&pkts.new_udp), Route::Creates, batch)?;
        eth.series(&mut f.b_udp_eth, eth_of(&pkts.new_udp), Route::Creates, batch)?;
        plain_series(&xdp_filter.prog, &mut f.b_udp_xdp_filter, eth_of(&pkts.new_udp))?;
        plain_series(empty, &mut f.b_udp_empty, eth_of(&pkts.new_udp))?;
        let expected = 1 + 2 * usize::from(NEW_FLOWS);
        raw.clear_flows(expected, round)?;
        eth.clear_flows(expected, round)?;
        // The UDP flows once more (each sends a first-payload record), with the reader never
        // behind: before BPF_RB_NO_WAKEUP every such record woke it.
        raw.series(&mut f.b_udp_raw_woken, raw_of(&pkts.new_udp), Route::Creates, 1)?;
        raw.clear_flows(NEW_FLOWS.into(), round)?;
    }
    for t in [&raw, &eth] {
        let lost = t.counter(Counter::RingLost)?;
        ensure!(lost == 0, "tracker ({}): {lost} events lost to a full ring", t.name);
    }
    eprintln!("done in {:.0?}", started.elapsed());
    report(&f, &xdp_filter);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Packets

const ETH_LEN: usize = L2_LEN_ETHERNET as usize;
const PASS_FILE: &str = "pass.bin";
const DROP_FILE: &str = "drop.bin";

/// Every packet as an Ethernet frame; the raw-IP variant (what tracker sees on wg0) is the same
/// bytes after the 14-byte Ethernet header, so both variants carry the identical IP packet.
struct Packets {
    existing_eth: Vec<u8>,
    existing_raw: Vec<u8>,
    blocked_eth: Vec<u8>,
    blocked_raw: Vec<u8>,
    /// TCP SYNs from NEW_FLOWS different client ports: the first packet of a connection.
    new_tcp: Vec<Vec<u8>>,
    /// QUIC-Initial-sized UDP datagrams from NEW_FLOWS different client ports: a new flow whose
    /// first packet also carries the largest first payload tracker copies to userspace.
    new_udp: Vec<Vec<u8>>,
}

impl Packets {
    fn build() -> Result<Self> {
        let existing_eth = tcp_frame(REMOTE, EXISTING_PORT, false, &[0x17; MID_STREAM_PAYLOAD])?;
        let blocked_eth = tcp_frame(DENIED, BLOCKED_PORT, true, &[])?;
        let ports = FIRST_NEW_PORT..FIRST_NEW_PORT + NEW_FLOWS;
        let new_tcp = ports.clone().map(|p| tcp_frame(REMOTE, p, true, &[])).collect::<Result<_>>()?;
        let mut quic = [0u8; QUIC_INITIAL_PAYLOAD];
        quic[0] = 0xc0; // long header, Initial
        let new_udp = ports.map(|p| udp_frame(p, &quic)).collect::<Result<_>>()?;
        Ok(Self {
            existing_raw: existing_eth[ETH_LEN..].to_vec(),
            blocked_raw: blocked_eth[ETH_LEN..].to_vec(),
            existing_eth,
            blocked_eth,
            new_tcp,
            new_udp,
        })
    }

    /// bpftool reads its input packet from a file.
    fn write_files(&self, scratch: &Scratch) -> Result<()> {
        for (name, pkt) in [(PASS_FILE, &self.existing_eth), (DROP_FILE, &self.blocked_eth)] {
            let path = scratch.file(name);
            fs::write(&path, pkt).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The raw-IP variants of Ethernet frames.
fn raw_of(frames: &[Vec<u8>]) -> impl Iterator<Item = &[u8]> {
    frames.iter().map(|f| &f[ETH_LEN..])
}

fn eth_of(frames: &[Vec<u8>]) -> impl Iterator<Item = &[u8]> {
    frames.iter().map(Vec::as_slice)
}

/// A TCP segment from the phone to `dst`:443: a SYN, or a mid-stream ACK|PSH with `payload`.
fn tcp_frame(dst: [u8; 4], port: u16, syn: bool, payload: &[u8]) -> Result<Vec<u8>> {
    let tcp = PacketBuilder::ethernet2(MAC_PHONE_SIDE, MAC_HOST).ipv4(PHONE, dst, 64).tcp(port, HTTPS, 1000, 64240);
    let tcp = if syn { tcp.syn() } else { tcp.ack(1).psh() };
    let mut v = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut v, payload).context("building a TCP packet")?;
    Ok(v)
}

fn udp_frame(port: u16, payload: &[u8]) -> Result<Vec<u8>> {
    let udp = PacketBuilder::ethernet2(MAC_PHONE_SIDE, MAC_HOST).ipv4(PHONE, REMOTE, 64).udp(port, HTTPS);
    let mut v = Vec::with_capacity(udp.size(payload.len()));
    udp.write(&mut v, payload).context("building a UDP packet")?;
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// One figure: its value in each round (ns per packet) and, for series, the mean of each round
/// and every single run.
#[derive(Default)]
struct Figure {
    rounds: Vec<f64>,
    means: Vec<f64>,
    runs: Vec<u32>,
}

impl Figure {
    fn add(&mut self, ns: f64) {
        self.rounds.push(ns);
    }

    fn median(&self) -> f64 {
        median(&self.rounds)
    }
}

fn percentile(v: &[u32], p: usize) -> u32 {
    let mut s = v.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return 0;
    }
    s[(s.len() - 1) * p / 100]
}

/// A program BPF_PROG_TEST_RUN can run.
trait Runnable {
    /// One BPF_PROG_TEST_RUN: the verdict and the kernel's average time per run in ns.
    fn test_run_ns(&self, pkt: &[u8], repeat: u32) -> Result<(u32, f64)>;
}

impl Runnable for Xdp {
    fn test_run_ns(&self, pkt: &[u8], repeat: u32) -> Result<(u32, f64)> {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.repeat = repeat;
        let r = self.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        Ok((r.return_value, r.duration.as_nanos() as f64))
    }
}

/// A program someone else loaded (xdp-filter's, loaded by libxdp), run with
/// [`tracker_tests::testrun`].
struct Foreign(ProgramFd);

impl Runnable for Foreign {
    fn test_run_ns(&self, pkt: &[u8], repeat: u32) -> Result<(u32, f64)> {
        tracker_tests::testrun::test_run(self.0.as_fd(), pkt, repeat)
    }
}

/// `pkt` run REPEAT times in one test run, the fastest of BEST_OF such test runs; ns per packet.
fn fixed(prog: &impl Runnable, pkt: &[u8], verdict: u32) -> Result<f64> {
    best_of(|| {
        let (got, ns) = prog.test_run_ns(pkt, REPEAT)?;
        ensure!(got == verdict, "verdict {got}, expected {verdict}");
        Ok(ns)
    })
}

fn best_of(mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..BEST_OF {
        best = best.min(measure()?);
    }
    Ok(best)
}

/// Each packet run once in a test run of its own; adds the round's median (and mean) to `fig`.
/// The median, because the mean of single runs is at the mercy of the few that a stalled vCPU
/// stretched to milliseconds. `after` runs after each packet, outside the kernel's timing.
fn series<'p>(
    prog: &impl Runnable,
    fig: &mut Figure,
    pkts: impl IntoIterator<Item = &'p [u8]>,
    verdict: u32,
    mut after: impl FnMut() -> Result<()>,
) -> Result<()> {
    let mut runs = Vec::new();
    for pkt in pkts {
        let (got, ns) = prog.test_run_ns(pkt, 1)?;
        ensure!(got == verdict, "verdict {got}, expected {verdict}");
        runs.push(ns as u32);
        after()?;
    }
    fig.add(f64::from(percentile(&runs, 50)));
    let sum: f64 = runs.iter().map(|&r| f64::from(r)).sum();
    fig.means.push(sum / runs.len().max(1) as f64);
    fig.runs.extend(runs);
    Ok(())
}

/// [`series`] for a program with no state to check (xdp-filter, the empty one): all pass.
fn plain_series<'p>(prog: &impl Runnable, fig: &mut Figure, pkts: impl IntoIterator<Item = &'p [u8]>) -> Result<()> {
    series(prog, fig, pkts, XDP_PASS, || Ok(()))
}

/// The path through tracker a case is meant to take, checked on the kernel's own counters.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    Existing,
    Creates,
    Blocked,
}

/// tracker's programs with their maps, pinned in the scratch bpffs.
struct Tracker {
    name: &'static str,
    ebpf: Ebpf,
    tables: Tables,
    events: RingBuf<MapData>,
}

impl Tracker {
    fn load(scratch: &Scratch, l2_len: u32, name: &'static str) -> Result<Self> {
        let pins = PinDir(scratch.bpffs().join(format!("tracker-l2-{l2_len}")));
        pins.ensure_bpffs()?;
        let mut ebpf =
            kernel::load(&pins, l2_len, MapSizes::default()).with_context(|| format!("loading tracker ({name})"))?;
        let (mut tables, events) = Tables::take(&mut ebpf)?;
        let net: IpNet = DENIED_RULE.parse().context("the benchmark's block rule")?;
        tables.blocks.insert(&net, 1)?;
        Ok(Self { name, ebpf, tables, events })
    }

    fn prog(&mut self) -> Result<&Xdp> {
        Ok(kernel::prog_xdp(&mut self.ebpf)?)
    }

    fn counter(&self, c: Counter) -> Result<u64> {
        let all = kernel::read_counters(&self.tables.counters)?;
        Ok(all.into_iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| v))
    }

    /// Creates the existing flow (and sends its first payload) so case (a) finds it.
    fn warm_existing(&mut self, pkt: &[u8]) -> Result<()> {
        let (verdict, _) = self.prog()?.test_run_ns(pkt, 1)?;
        ensure!(verdict == XDP_PASS, "tracker ({}): verdict {verdict}", self.name);
        drain_ring(&mut self.events);
        Ok(())
    }

    /// (a) or (c): see [`fixed`].
    fn fixed(&mut self, pkt: &[u8], route: Route) -> Result<f64> {
        let runs = BEST_OF as u64 * u64::from(REPEAT);
        let (verdict, expected) = match route {
            Route::Existing => (XDP_PASS, (0, 0)),
            Route::Blocked => (XDP_DROP, (0, runs)),
            Route::Creates => bail!("a flow is created once: creation is measured by `series`"),
        };
        let created = self.counter(Counter::FlowsCreated)?;
        let dropped = self.counter(Counter::Dropped)?;
        let ns = fixed(self.prog()?, pkt, verdict).with_context(|| format!("tracker ({})", self.name))?;
        drain_ring(&mut self.events);
        let created = self.counter(Counter::FlowsCreated)? - created;
        let dropped = self.counter(Counter::Dropped)? - dropped;
        ensure!(
            (created, dropped) == expected,
            "tracker ({}): {created} flows created and {dropped} packets dropped in {runs} runs, \
             expected {expected:?}",
            self.name
        );
        Ok(ns)
    }

    /// (b): see [`series`]; the event ring is drained after every `drain_every` packets.
    fn series<'p>(
        &mut self,
        fig: &mut Figure,
        pkts: impl IntoIterator<Item = &'p [u8]>,
        route: Route,
        drain_every: usize,
    ) -> Result<()> {
        let before = self.counter(Counter::FlowsCreated)?;
        let events = &mut self.events;
        let mut n = 0;
        let prog = kernel::prog_xdp(&mut self.ebpf)?;
        series(prog, fig, pkts, XDP_PASS, || {
            n += 1;
            if n % drain_every == 0 {
                drain_ring(events);
            }
            Ok(())
        })
        .with_context(|| format!("tracker ({})", self.name))?;
        drain_ring(&mut self.events);
        let created = self.counter(Counter::FlowsCreated)? - before;
        let expected = if route == Route::Creates { n as u64 } else { 0 };
        ensure!(
            created == expected,
            "tracker ({}): {created} flows created by {n} packets, expected {expected}",
            self.name
        );
        Ok(())
    }

    /// Deletes every flow, so the next series creates from the same table state; fails unless
    /// there were `expected`: fewer means the table evicted, and (b) measured evictions too.
    fn clear_flows(&mut self, expected: usize, round: usize) -> Result<()> {
        let limit = defaults::FLOW_ENTRIES as usize;
        let flows = &mut self.tables.flows;
        let keys = flows.keys().take(limit).collect::<Result<Vec<_>, _>>()?;
        for k in &keys {
            flows.take(k).context("deleting a flow")?;
        }
        ensure!(
            keys.len() == expected,
            "tracker ({}): {} flows in the table in round {round}, expected {expected}: the table \
             evicted during creation",
            self.name,
            keys.len()
        );
        Ok(())
    }
}

/// Events are what the daemon would drain; left in the ring they would fill it, and on a full
/// ring every reserve fails fast: cheaper, and not what a running daemon sees.
fn drain_ring(events: &mut RingBuf<MapData>) {
    for _ in 0..MAX_DRAIN {
        if events.next().is_none() {
            break;
        }
    }
}

/// The empty XDP_PASS program (tracker-ebpf's `baseline` bin).
struct Empty(Ebpf);

const EMPTY_PROG: &str = "baseline_pass";

impl Empty {
    fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(kernel::BASELINE_OBJECT).context("loading the empty program")?;
        let prog: &mut Xdp =
            ebpf.program_mut(EMPTY_PROG).context("baseline_pass missing from the baseline object")?.try_into()?;
        prog.load().context("verifying the empty program")?;
        Ok(Self(ebpf))
    }

    fn prog(&self) -> Result<&Xdp> {
        let prog = self.0.program(EMPTY_PROG).context("baseline_pass missing")?;
        Ok(prog.try_into()?)
    }
}

// ---------------------------------------------------------------------------------------------
// xdp-filter

struct XdpFilter {
    prog_id: u32,
    prog_name: String,
    /// The attached program, for the one-run-per-packet series.
    prog: Foreign,
}

impl XdpFilter {
    /// `xdp-filter load` on the veth in the scratch namespace, plus the deny rule; opens the
    /// program that ended up attached: libxdp's dispatcher if it could load one, else (it falls
    /// back to single-program mode when the kernel refuses the dispatcher) xdp-filter's own.
    fn load(scratch: &Scratch) -> Result<Self> {
        xdp_filter(scratch, &["load", IFACE, "--mode", "skb"])?;
        xdp_filter(scratch, &["ip", DENIED_ADDR, "--mode", "dst"])?;
        let out = run(Command::new("ip").args(["-n", NETNS, "-j", "link", "show", "dev", IFACE]))?;
        let link: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
        let xdp = &link[0]["xdp"];
        let prog = if xdp["prog"].is_object() { &xdp["prog"] } else { &xdp["attached"][0]["prog"] };
        let prog_id = prog["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .with_context(|| format!("no XDP program on {IFACE} after `xdp-filter load`: {out}"))?;
        let prog_name = prog["name"].as_str().unwrap_or("?").to_owned();
        // Bounded by the number of programs loaded on the machine.
        let info = loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == prog_id)
            .with_context(|| format!("program {prog_id} (xdp-filter's) vanished"))?;
        let prog = Foreign(info.fd().context("opening xdp-filter's program")?);
        Ok(Self { prog_id, prog_name, prog })
    }

    /// `bpftool prog run ... repeat REPEAT` on the attached program, the fastest of BEST_OF;
    /// ns per packet.
    fn fixed_bpftool(&self, data_in: &Path, verdict: u32) -> Result<f64> {
        let id = self.prog_id.to_string();
        best_of(|| {
            let out = run(Command::new("bpftool")
                .args(["-j", "prog", "run", "id", &id, "data_in"])
                .arg(data_in)
                .args(["repeat", &REPEAT.to_string()]))?;
            let v: serde_json::Value =
                serde_json::from_str(&out).with_context(|| format!("parsing bpftool's {out:?}"))?;
            let (Some(got), Some(ns)) = (v["retval"].as_u64(), v["duration"].as_f64()) else {
                bail!("bpftool prog run said {out:?}")
            };
            ensure!(got == u64::from(verdict), "xdp-filter: verdict {got}, expected {verdict}");
            Ok(ns)
        })
    }

    fn dispatched(&self) -> bool {
        self.prog_name.contains("dispatcher")
    }
}

/// Runs xdp-filter inside the namespace, with libxdp's pins in the scratch bpffs rather than
/// the host's /sys/fs/bpf.
fn xdp_filter(scratch: &Scratch, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NETNS, "xdp-filter"]).args(args).env("LIBXDP_BPFFS", scratch.bpffs());
    run(&mut cmd).map_err(|err| {
        let stale = fs::read_to_string(XDP_FILTER_LOCK).ok().and_then(|pid| {
            let pid = pid.trim();
            (!pid.is_empty() && !PathBuf::from(format!("/proc/{pid}")).exists()).then(|| pid.to_owned())
        });
        match stale {
            Some(pid) => err.context(format!(
                "{XDP_FILTER_LOCK} names pid {pid}, which is not running: a killed xdp-filter \
                 left it; remove it and retry"
            )),
            None => err,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The scratch namespace and bpffs

/// The namespace with the veth pair and the private bpffs; torn down on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn create() -> Result<Self> {
        let dir = PathBuf::from(SCRATCH);
        if dir.exists() || netns_exists() {
            eprintln!("removing leftovers of an earlier benchmark run ({SCRATCH}, netns {NETNS})");
            teardown(&dir)?;
        }
        // From here on a failure tears down whatever was made.
        let s = Self { dir };
        let bpffs = s.bpffs();
        fs::create_dir_all(&bpffs).with_context(|| format!("creating {}", bpffs.display()))?;
        run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))?;
        run(Command::new("ip").args(["netns", "add", NETNS]))?;
        let ip_n = |args: &[&str]| run(Command::new("ip").args(["-n", NETNS]).args(args));
        ip_n(&["link", "add", IFACE, "type", "veth", "peer", "name", PEER])?;
        ip_n(&["link", "set", IFACE, "up"])?;
        ip_n(&["link", "set", PEER, "up"])?;
        Ok(s)
    }

    fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(err) = teardown(&self.dir) {
            eprintln!("warning: cleaning up the benchmark: {err:#}");
        }
    }
}

fn netns_exists() -> bool {
    PathBuf::from("/run/netns").join(NETNS).exists()
}

/// Unloads xdp-filter, deletes the namespace (and with it the veth pair), unmounts the scratch
/// bpffs (which drops the pins in it) and removes the directory. Each step runs only if what it
/// removes exists, so it also cleans up after a run that was killed half-way.
fn teardown(dir: &Path) -> Result<()> {
    let bpffs = dir.join("bpffs");
    if netns_exists() {
        // Best effort: deleting the namespace detaches the program anyway.
        let mut unload = Command::new("ip");
        unload.args(["netns", "exec", NETNS, "xdp-filter", "unload", IFACE]).env("LIBXDP_BPFFS", &bpffs);
        let _ = run(&mut unload);
        run(Command::new("ip").args(["netns", "del", NETNS]))?;
    }
    if is_mountpoint(&bpffs)? {
        run(Command::new("umount").arg(&bpffs))?;
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

fn is_mountpoint(path: &Path) -> Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let path = path.to_string_lossy();
    Ok(mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*path)))
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Default)]
struct Figures {
    a_raw: Figure,
    a_eth: Figure,
    a_xdp_filter: Figure,
    a_empty_raw: Figure,
    a_empty_eth: Figure,
    c_raw: Figure,
    c_eth: Figure,
    c_xdp_filter: Figure,
    c_empty_raw: Figure,
    c_empty_eth: Figure,
    floor_raw: Figure,
    floor_eth: Figure,
    b_tcp_raw: Figure,
    b_tcp_eth: Figure,
    b_tcp_xdp_filter: Figure,
    b_tcp_empty: Figure,
    b_udp_raw: Figure,
    b_udp_eth: Figure,
    b_udp_xdp_filter: Figure,
    b_udp_empty: Figure,
    b_udp_raw_woken: Figure,
}

fn report(f: &Figures, xf: &XdpFilter) {
    println!("\n## tracker's XDP program: cost per packet (BPF_PROG_TEST_RUN)\n");
    println!("Method:");
    println!(
        "- (a), (c): one packet run {REPEAT} times in one BPF_PROG_TEST_RUN, the kernel's \
         average per run; the fastest of {BEST_OF} back-to-back test runs (a busy VM's vCPU is \
         sometimes descheduled for 100s of ms, which inflates the run it lands in). (a) is a \
         100-byte TCP segment of a flow that exists (created before); (c) a TCP SYN to \
         {DENIED_ADDR}, which tracker and xdp-filter each deny with one rule."
    );
    println!(
        "- (b): a flow is created by its first packet only, so repeating a packet would measure \
         (a). Instead {NEW_FLOWS} packets from different client ports each get a test run of \
         their own (repeat 1); the figure is the median of those single runs (their mean is \
         shown too, but a few runs stretched by a stalled vCPU dominate it). The flows are \
         deleted after each round, so every round creates from the same table. xdp-filter and \
         the empty program run the same packets the same way. A single run also pays the \
         kernel's timer reads and a cold cache: compare (b) within its row, not with (a); the \
         same method on the existing flow's packet is shown as its floor."
    );
    println!(
        "- (b) drains tracker's event ring every {DRAIN_BATCH} packets, as a busy daemon reads \
         in batches; \"reader caught up\" drains after every packet, where a record submitted \
         with a wakeup would raise an irq_work (a self-IPI, costly in a VM). A new TCP flow \
         sends no record; a new UDP flow with payload sends its first payload."
    );
    println!(
        "- Every figure is the median of {ROUNDS} interleaved rounds. tracker runs the raw IP \
         packet (l2_len 0, as on wg0) and the same packet in an Ethernet frame (l2_len 14). \
         xdp-filter parses Ethernet only, so it runs the Ethernet frame; so does the empty \
         program, which reads nothing (it costs the same on any packet)."
    );
    println!(
        "- xdp-filter (xdp-tools): `xdp-filter load --mode skb` (all features, policy allow) and \
         `xdp-filter ip {DENIED_ADDR} --mode dst`, on a veth in a namespace of its own. Measured: \
         the program attached to the interface, {} (id {}), {}. (a), (c) through `bpftool prog \
         run ... repeat {REPEAT}`; (b) through the same BPF_PROG_TEST_RUN call on it.",
        xf.prog_name,
        xf.prog_id,
        if xf.dispatched() {
            "libxdp's dispatcher, which calls xdp-filter: what a deployed xdp-filter costs"
        } else {
            "xdp-filter's own program: libxdp fell back to single-program mode (it could not \
             load its dispatcher on this kernel), so there is no dispatcher to pay for"
        }
    );

    println!("\nFigures, ns/packet: median of the rounds [each round]:");
    let line = |name: &str, fig: &Figure| {
        let r: Vec<String> = fig.rounds.iter().map(|r| format!("{r:.0}")).collect();
        let means = if fig.means.is_empty() {
            String::new()
        } else {
            format!("  (mean of single runs {:.0})", median(&fig.means))
        };
        println!("  {name:<50} {:>6.0}  [{}]{means}", fig.median(), r.join(" "));
    };
    line("(a) tracker, existing flow, raw IP", &f.a_raw);
    line("(a) tracker, existing flow, Ethernet", &f.a_eth);
    line("(a) xdp-filter, pass", &f.a_xdp_filter);
    line("(a) empty, raw IP packet", &f.a_empty_raw);
    line("(a) empty, Ethernet frame", &f.a_empty_eth);
    line("(b) tracker, new TCP flow (SYN), raw IP", &f.b_tcp_raw);
    line("(b) tracker, new TCP flow (SYN), Ethernet", &f.b_tcp_eth);
    line("(b) tracker, new UDP flow, raw IP, reader caught up", &f.b_udp_raw_woken);
    line("(b) xdp-filter, the SYNs", &f.b_tcp_xdp_filter);
    line("(b) empty, the SYNs", &f.b_tcp_empty);
    line("(b) tracker, new UDP flow (1200 B), raw IP", &f.b_udp_raw);
    line("(b) tracker, new UDP flow (1200 B), Ethernet", &f.b_udp_eth);
    line("(b) xdp-filter, the UDP datagrams", &f.b_udp_xdp_filter);
    line("(b) empty, the UDP datagrams", &f.b_udp_empty);
    line("(b) floor: tracker, existing flow, raw IP", &f.floor_raw);
    line("(b) floor: tracker, existing flow, Ethernet", &f.floor_eth);
    line("(c) tracker, blocked, raw IP", &f.c_raw);
    line("(c) tracker, blocked, Ethernet", &f.c_eth);
    line("(c) xdp-filter, drop", &f.c_xdp_filter);
    line("(c) empty, raw IP packet", &f.c_empty_raw);
    line("(c) empty, Ethernet frame", &f.c_empty_eth);
    for (name, fig) in [
        ("new TCP flow, raw IP", &f.b_tcp_raw),
        ("new UDP flow, raw IP", &f.b_udp_raw),
        ("new UDP flow, raw IP, reader caught up", &f.b_udp_raw_woken),
    ] {
        println!(
            "  (b) {name}, all {} single runs: p10 {} ns, median {} ns, p99 {} ns, max {} ns",
            fig.runs.len(),
            percentile(&fig.runs, 10),
            percentile(&fig.runs, 50),
            percentile(&fig.runs, 99),
            fig.runs.iter().max().copied().unwrap_or(0)
        );
    }
    println!(
        "  creating a flow costs about {:.0} ns (TCP), {:.0} ns (UDP, with its first payload \
         copied) and {:.0} ns (UDP, reader caught up) more than a packet of an existing flow \
         measured the same way (raw IP)",
        f.b_tcp_raw.median() - f.floor_raw.median(),
        f.b_udp_raw.median() - f.floor_raw.median(),
        f.b_udp_raw_woken.median() - f.floor_raw.median()
    );

    println!("\n| case | tracker ns/pkt | xdp-filter ns/pkt | empty XDP ns/pkt | ratio |");
    println!("|---|---:|---:|---:|---|");
    let row = |case: &str, t: &Figure, x: &Figure, what: &str, e: &Figure, raw: bool| {
        let (t, x, e) = (t.median(), x.median(), e.median());
        let dagger = if raw { "†" } else { "" };
        println!(
            "| {case} | {t:.0} | {x:.0}{dagger} | {e:.0} | {:.2}× xdp-filter {what}; {:.1}× empty \
             (xdp-filter {:.1}×) |",
            t / x,
            t / e,
            x / e
        );
    };
    let (tcp_x, tcp_e) = (&f.b_tcp_xdp_filter, &f.b_tcp_empty);
    let (udp_x, udp_e) = (&f.b_udp_xdp_filter, &f.b_udp_empty);
    row("(a) existing flow, raw IP (wg0)", &f.a_raw, &f.a_xdp_filter, "pass", &f.a_empty_raw, true);
    row("(a) existing flow, Ethernet", &f.a_eth, &f.a_xdp_filter, "pass", &f.a_empty_eth, false);
    row("(b) new flow, TCP SYN, raw IP (wg0)", &f.b_tcp_raw, tcp_x, "pass", tcp_e, true);
    row("(b) new flow, TCP SYN, Ethernet", &f.b_tcp_eth, tcp_x, "pass", tcp_e, false);
    row("(b) new flow, UDP 1200 B, raw IP, reader caught up", &f.b_udp_raw_woken, udp_x, "pass", udp_e, true);
    row("(b) new flow, UDP 1200 B, raw IP (wg0)", &f.b_udp_raw, udp_x, "pass", udp_e, true);
    row("(b) new flow, UDP 1200 B, Ethernet", &f.b_udp_eth, udp_x, "pass", udp_e, false);
    row("(c) blocked, raw IP (wg0)", &f.c_raw, &f.c_xdp_filter, "drop", &f.c_empty_raw, true);
    row("(c) blocked, Ethernet", &f.c_eth, &f.c_xdp_filter, "drop", &f.c_empty_eth, false);
    println!(
        "\nBPF_PROG_TEST_RUN on one {} core, median of {ROUNDS} rounds. (a), (c): {REPEAT} runs \
         per test run, fastest of {BEST_OF}. (b): median of {NEW_FLOWS} single runs, one per new \
         flow, which include the kernel's per-run timer overhead (compare within the row); event \
         ring drained every {DRAIN_BATCH} packets, or after each (\"reader caught up\"). \
         † xdp-filter parses Ethernet only: its figure is for the same IP packet in an Ethernet \
         frame.",
        cpu_model()
    );

    println!("\nTargets:");
    let target = |what: &str, raw: &Figure, eth: &Figure, x: &Figure| {
        let verdict = |t: &Figure| {
            if t.median() <= x.median() { "met" } else { "NOT met" }
        };
        println!(
            "- {what} ({:.0} ns): raw IP {:.0} ns, {}; Ethernet {:.0} ns, {}",
            x.median(),
            raw.median(),
            verdict(raw),
            eth.median(),
            verdict(eth)
        );
    };
    target("(a) existing flow <= xdp-filter pass", &f.a_raw, &f.a_eth, &f.a_xdp_filter);
    target("(c) blocked <= xdp-filter drop", &f.c_raw, &f.c_eth, &f.c_xdp_filter);
    let within = |what: &str, t: &Figure, base: &Figure, limit: f64| {
        let ratio = t.median() / base.median();
        let verdict = if ratio <= limit { "met" } else { "NOT met" };
        println!("- {what}: {:.0} / {:.0} ns = {ratio:.2}×, {verdict}", t.median(), base.median());
    };
    within("(b) new TCP flow, raw IP <= 3× xdp-filter pass (its SYNs)", &f.b_tcp_raw, tcp_x, 3.0);
    within("(b) new UDP flow, raw IP <= 3× xdp-filter pass (its datagrams)", &f.b_udp_raw, udp_x, 3.0);
    within("(b) reader caught up <= 1.2× reader busy (new UDP flow, raw IP)", &f.b_udp_raw_woken, &f.b_udp_raw, 1.2);
}

/// The CPU, for the table's caption: figures only compare on the same machine.
fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, m)| m.trim().to_owned())
}
