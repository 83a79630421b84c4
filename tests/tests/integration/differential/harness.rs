//! The differential tests' machinery: the kernel programs under BPF_PROG_TEST_RUN beside the
//! importer's accounting, one frame at a time ([`Pair::step`]), and the comparison of both.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use ipnet::IpNet;
use tracker::{
    kernel::{self, MapSizes, PinDir, Tables, maps::read_counter},
    source::{
        Source, Timeouts,
        capture::{
            CaptureSource, Counted, DEFAULT_CLIENT_NETS,
            file::{self, Frame, L3, Link},
        },
        kernel::KernelSource,
    },
};
use tracker_common::{
    Counter, EventKind, FlowKey, FlowStats, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L2_LEN_ETHERNET,
    L2_LEN_NONE, parse::parse_frame, user::Event,
};
use tracker_tests::packet::{ETH_IP, ipv4, udp};

pub const XDP_PASS: u32 = 2;
/// XDP_ABORTED: the program's "this cannot happen" (an exception, traced as `xdp_exception`).
pub const XDP_ABORTED: u32 = 0;
/// TC_ACT_UNSPEC (-1) as the test run reports it.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
/// BPF_PROG_TEST_RUN refuses less than an Ethernet header's worth of data (`bpf_test_init`).
pub const MIN_TEST_RUN: usize = 14;
/// An IPv4 header without options.
const IPV4_HEADER: usize = 20;
const ETH_P_IP: [u8; 2] = [0x08, 0x00];

/// Whether a TC test run refuses `pkt` (EINVAL): it reads the first 14 bytes as Ethernet, and
/// when their EtherType says IPv4 it wants a whole IPv4 header after them. A raw IP packet's
/// source address can start with 8.0 (bytes 12 and 13), and an Ethernet frame can be that short:
/// on a real interface both reach the program, in a test run neither does, so the comparison
/// skips them on both sides and counts them (found by `differential::mutated` at 10,000,000).
fn tc_test_run_refuses(pkt: &[u8]) -> bool {
    pkt.len() < MIN_TEST_RUN + IPV4_HEADER && pkt.get(12..14) == Some(&ETH_P_IP[..])
}

// ---------------------------------------------------------------------------------------------
// The kernel side

/// The programs loaded twice over one pin directory (removed at drop): for Ethernet frames and
/// for raw IP. The second load reuses the first's pinned maps, so both write one flow table,
/// one set of counters and one ring.
pub struct Kernel {
    eth: Ebpf,
    raw: Ebpf,
    pub source: KernelSource,
    pins: PinDir,
}

impl Kernel {
    pub fn load() -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = format!("/sys/fs/bpf/tracker-diff-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let pins = PinDir(PathBuf::from(dir));
        pins.ensure_bpffs()?;
        let sizes = MapSizes::default();
        let mut eth = kernel::load(&pins, L2_LEN_ETHERNET, sizes).context("loading the Ethernet programs")?;
        let (tables, ring) = Tables::take(&mut eth)?;
        let raw = kernel::load(&pins, L2_LEN_NONE, sizes).context("loading the raw-IP programs on the same maps")?;
        Ok(Self { eth, raw, source: KernelSource::new(tables, ring)?, pins })
    }

    /// Runs XDP (`up`) or TC on `pkt` with the programs for `l2`; the verdict.
    pub fn run(&mut self, l2: u32, up: bool, pkt: &[u8]) -> Result<u32> {
        let ebpf = if l2 == L2_LEN_ETHERNET { &mut self.eth } else { &mut self.raw };
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        let result = if up {
            kernel::prog_xdp(ebpf)?.test_run(opts).context("BPF_PROG_TEST_RUN of the XDP program")?
        } else {
            kernel::prog_tc(ebpf)?.test_run(opts).context("BPF_PROG_TEST_RUN of the TC program")?
        };
        Ok(result.return_value)
    }

    pub fn counter(&self, c: Counter) -> Result<u64> {
        read_counter(&self.source.tables.counters, c)
    }

    /// One flow, per-CPU values folded; `None` when the table does not have it.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowStats>> {
        Ok(self.source.tables.flows.find(key)?)
    }

    /// Both tables whole (`FLOWS_V4` keys widened to [`FlowKey`], per-CPU values folded).
    pub fn flows(&mut self) -> Result<Vec<(FlowKey, FlowStats)>> {
        let mut out = Vec::new();
        self.source.tables.flows.read_all(&mut out)?;
        Ok(out)
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins.0);
    }
}

/// The largest frame both hooks take whole in a test run: a TC run refuses more than its skb's
/// linear room (a page less headroom and `skb_shared_info`), an XDP run puts what exceeds its
/// own linear room into fragments, and its program's frame length (`data_end - data`) is the
/// linear part only. Probed once, on a scratch load.
pub fn test_run_limit() -> Result<usize> {
    // Held while probing, so that tests starting together probe once.
    static LIMIT: Mutex<Option<usize>> = Mutex::new(None);
    let mut known = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = *known {
        return Ok(l);
    }
    let mut k = Kernel::load()?;
    // Zeroes are an Ethernet frame of EtherType 0: a parse error, no flow.
    let zeros = vec![0u8; 1 << 17];
    let largest = |k: &mut Kernel, up: bool| {
        let (mut lo, mut hi) = (MIN_TEST_RUN, zeros.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if k.run(L2_LEN_ETHERNET, up, &zeros[..mid]).is_ok() { lo = mid } else { hi = mid }
        }
        lo
    };
    let tc = largest(&mut k, false);
    let xdp = largest(&mut k, true);
    // A UDP datagram filling the largest XDP run: the program counts the IP bytes it sees.
    let len = xdp.min(60_000);
    let mut probe = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    probe.extend_from_slice(&ETH_IP.to_be_bytes());
    probe.extend_from_slice(&ipv4(
        [10, 77, 0, 2],
        [203, 0, 113, 10],
        IPPROTO_UDP,
        1,
        0,
        &udp(1, 2, &vec![0; len - 14 - 20 - 8]),
    ));
    k.run(L2_LEN_ETHERNET, true, &probe)?;
    let flows = k.flows()?;
    let [(_, s)] = flows.as_slice() else { bail!("the XDP probe made {} flows", flows.len()) };
    let xdp_linear = s.bytes_up as usize + 14;
    let limit = tc.min(xdp_linear);
    println!(
        "differential: test runs take {tc} bytes (TC) and {xdp} (XDP, linear {xdp_linear}): frames cut at {limit}"
    );
    assert!(limit >= 1514, "a test run must take a full Ethernet frame, takes {limit} bytes");
    *known = Some(limit);
    Ok(limit)
}

// ---------------------------------------------------------------------------------------------
// The comparison

/// One payload event: the frame after which it was drained, kind, direction, key, payload
/// length and the captured bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Rec {
    frame: u64,
    pub kind: EventKind,
    direction: u8,
    key: FlowKey,
    len: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: String = self.data.iter().take(12).map(|b| format!("{b:02x}")).collect();
        let dir = if self.direction == tracker_common::DIR_UP { "up" } else { "down" };
        write!(
            f,
            "frame {} {:?} {dir} {} payload {} captured {} [{head}..]",
            self.frame,
            self.kind,
            show(&self.key),
            self.len,
            self.data.len()
        )
    }
}

/// Drains `source`'s events, each tagged with `frame`.
pub fn drain(source: &mut dyn Source, frame: u64, out: &mut Vec<Rec>) -> Result<()> {
    let mut bad = None;
    source.drain_events(&mut |ev| {
        let (kind, p) = match ev {
            Ok(Event::Dns(p)) => (EventKind::Dns, p),
            Ok(Event::FirstPayload(p)) => (EventKind::FirstPayload, p),
            Ok(Event::BlockHit(h)) => {
                bad = Some(format!("a block hit without block rules: {h:?}"));
                return;
            }
            Ok(Event::DnsRefused(p)) => {
                bad = Some(format!("a refused query without name rules: {:?}", p.header));
                return;
            }
            Err(e) => {
                bad = Some(format!("an undecodable record: {e}"));
                return;
            }
        };
        let (direction, key) = (p.header.direction, p.header.key);
        out.push(Rec { frame, kind, direction, key, len: p.len, data: p.data.to_vec() });
    });
    match bad {
        Some(e) => Err(anyhow!("frame {frame}: {e}")),
        None => Ok(()),
    }
}

/// What the test compares of a flow entry: everything but the stamps (the kernel's clock and the
/// capture's differ).
fn compared(s: &FlowStats) -> [u64; 7] {
    [
        s.packets_up,
        s.packets_down,
        s.bytes_up,
        s.bytes_down,
        s.tcp_flags_up.into(),
        s.tcp_flags_down.into(),
        s.payload_sent.into(),
    ]
}

fn show_stats(s: Option<&FlowStats>) -> String {
    match s {
        None => "absent".into(),
        Some(s) => format!(
            "packets {}/{} bytes {}/{} flags {:#04x}/{:#04x} payload_sent {} (up/down)",
            s.packets_up, s.packets_down, s.bytes_up, s.bytes_down, s.tcp_flags_up, s.tcp_flags_down, s.payload_sent
        ),
    }
}

pub fn show(k: &FlowKey) -> String {
    let proto = match k.protocol {
        IPPROTO_TCP => "tcp".to_string(),
        IPPROTO_UDP => "udp".to_string(),
        IPPROTO_ICMP => "icmp".to_string(),
        IPPROTO_ICMPV6 => "icmpv6".to_string(),
        p => format!("proto {p}"),
    };
    format!("{proto} {}:{} <-> {}:{}", k.client(), k.client_port, k.remote(), k.remote_port)
}

/// What a comparison saw.
#[derive(Debug, Default)]
pub struct Summary {
    pub frames: u64,
    pub xdp: u64,
    pub tc: u64,
    /// Not IP, or cut before IP, on a non-Ethernet link: never the kernel's.
    pub link_skipped: u64,
    /// Under [`MIN_TEST_RUN`] bytes: no test run takes them.
    pub too_short: u64,
    /// Cut to the test-run limit.
    pub cut: u64,
    /// Flows that ended idle (a frame met their entry past its timeout) and left both tables.
    pub ended: u64,
    pub parse_errors: u64,
    pub fragments: u64,
    pub flows: usize,
    pub events: usize,
    /// Where the reader stopped, for a damaged file.
    pub read_error: Option<String>,
    /// Going down, refused by a TC test run ([`tc_test_run_refuses`]): given to neither side.
    pub untestable: u64,
}

fn client_nets() -> Vec<IpNet> {
    DEFAULT_CLIENT_NETS.iter().map(|n| n.parse().expect("DEFAULT_CLIENT_NETS parse")).collect()
}

/// Keeps the calling thread on the CPU it runs on now. A test run executes the program on the
/// calling CPU (`bpf_test_run` disables migration for its duration only), and the flow tables
/// are per-CPU: a flow's packets run on two CPUs make two copies of its entry, each with its
/// own `payload_sent` bits, so each CPU's first payload of a direction is sent as an event (see
/// `FlowStats::add`). The folded entries still agree, the events would not: the model is one
/// table, which is what one CPU sees. Which CPU a packet ran on is not the model's to know, so
/// the comparison runs on one.
fn pin_to_this_cpu() -> Result<()> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        bail!("sched_getcpu: {}", std::io::Error::last_os_error());
    }
    pin_to(cpu as usize)
}

/// Keeps the calling thread on `cpu`.
pub fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: the cpu_set_t is zeroed, then CPU_SET writes inside it (it checks the bound);
    // sched_setaffinity(0) is the calling thread, given the set's own size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The kernel programs and the importer side by side, fed the same frames.
pub struct Pair {
    pub k: Kernel,
    pub src: CaptureSource,
    /// The largest frame a test run takes ([`test_run_limit`]).
    limit: usize,
    /// The kernel's parse-error, fragment and flows-created counters after the last test run.
    last: [u64; 3],
    kernel_events: Vec<Rec>,
    importer_events: Vec<Rec>,
    pub s: Summary,
    /// Disagreements, each naming its frame.
    pub diffs: Vec<String>,
    /// Test runs that failed or returned XDP_ABORTED, each naming its frame: counted apart from
    /// the disagreements (the importer has no notion of an abort).
    pub aborts: Vec<String>,
}

impl Pair {
    /// Fresh programs and maps, and an importer with import-pcap's client nets and timeouts.
    /// Pins the calling thread to the CPU it runs on (see [`pin_to_this_cpu`]).
    pub fn new(name: &str, limit: usize) -> Result<Self> {
        pin_to_this_cpu()?;
        Ok(Self {
            k: Kernel::load()?,
            src: CaptureSource::new(format!("differential {name}"), client_nets(), Timeouts::default()),
            limit,
            last: [0; 3],
            kernel_events: Vec::new(),
            importer_events: Vec::new(),
            s: Summary::default(),
            diffs: Vec::new(),
            aborts: Vec::new(),
        })
    }

    /// One frame through both sides, compared: what each counted, the frame's flow entry, the
    /// verdict. Events are drained and kept for [`Pair::compare_events`].
    pub fn step(&mut self, read: &Frame<'_>) -> Result<()> {
        self.s.frames += 1;
        let n = read.number;
        // The link-layer header the kernel never sees, then what is left cut to the limit.
        let link_header = match file::l3(read.link, read.data) {
            L3::Ip(d) => read.data.len() - d.len(),
            _ => 0,
        };
        let keep = read.data.len().min(link_header + self.limit);
        self.s.cut += u64::from(keep < read.data.len());
        // The kernel only sees the captured bytes: so does the importer.
        let frame = Frame {
            number: read.number,
            offset: read.offset,
            ts_ns: read.ts_ns,
            orig_len: keep as u32,
            link: read.link,
            data: &read.data[..keep],
        };
        let l3 = file::l3(frame.link, frame.data);
        let input = match (frame.link, l3) {
            (Link::Ethernet, _) => Some((frame.data, L2_LEN_ETHERNET)),
            (_, L3::Ip(d)) => Some((d, L2_LEN_NONE)),
            (_, L3::Ethernet(d)) => Some((d, L2_LEN_ETHERNET)),
            (_, L3::NotIp | L3::Short) => None,
        };
        let (k, src, s) = (&mut self.k, &mut self.src, &mut self.s);
        let before = src.counts;
        let mut stale_before = false;
        let (up, key, verdict) = loop {
            // Which way it goes, as the importer decides before counting it.
            let sender_first = input.and_then(|(d, l2)| parse_frame(d, d.len() as u32, l2, true).ok());
            let up = sender_first.as_ref().is_none_or(|p| src.is_up(p));
            let key = sender_first.map(|p| if up { p.key() } else { p.flipped().key() });
            if !up && input.is_some_and(|(d, _)| tc_test_run_refuses(d)) {
                s.untestable += 1;
                s.frames -= 1;
                return Ok(());
            }
            let verdict = src.count(&frame);
            if verdict != Counted::Stale || stale_before {
                break (up, key, verdict);
            }
            stale_before = true;
            // Its flow's entry is idle past its timeout: import-pcap sweeps (the flow ends) and
            // counts the frame again, as a new flow; the daemon's sweep would have taken the
            // entry out of the kernel's table by then. Both tables lose it here, and must have
            // held the same.
            let stale = key.context("a frame without a flow cannot meet a stale one")?;
            s.ended += 1;
            let (kernel_had, importer_had) = (k.source.tables.flows.take(&stale)?, src.take(&stale)?);
            if kernel_had.as_ref().map(compared) != importer_had.as_ref().map(compared) {
                self.diffs.push(format!(
                    "frame {n}: ended idle, {}: kernel {}, importer {}",
                    show(&stale),
                    show_stats(kernel_had.as_ref()),
                    show_stats(importer_had.as_ref())
                ));
            }
        };
        let after = src.counts;
        let diffs = &mut self.diffs;
        let mut diff = |what: String| diffs.push(format!("frame {n} ({} bytes): {what}", frame.data.len()));
        match input {
            Some((pkt, l2)) if pkt.len() >= MIN_TEST_RUN => {
                let (hook, pass) = if up { ("XDP", XDP_PASS) } else { ("TC", TC_ACT_UNSPEC) };
                if up {
                    s.xdp += 1;
                } else {
                    s.tc += 1;
                }
                match k.run(l2, up, pkt) {
                    // XDP_ABORTED is XDP's error path; a failed run is the test run's own.
                    Ok(XDP_ABORTED) if up => self.aborts.push(format!("frame {n}: XDP returned XDP_ABORTED")),
                    Err(e) => self.aborts.push(format!("frame {n}: {hook}: {e:#}")),
                    // No block or name rule is loaded: the importer, which models no verdict,
                    // stands for "every packet passes", the only verdict a rule-less program has.
                    Ok(ret) if ret != pass => diff(format!("{hook} returned {ret}, not its pass verdict {pass}")),
                    Ok(_) => {}
                }
                let now = [
                    k.counter(Counter::ParseErrors)?,
                    k.counter(Counter::Fragments)?,
                    k.counter(Counter::FlowsCreated)?,
                ];
                let kernel_delta = [now[0] - self.last[0], now[1] - self.last[1], now[2] - self.last[2]];
                self.last = now;
                let importer_delta = [
                    u64::from(verdict != Counted::Ip),
                    after.fragments - before.fragments,
                    after.flows_created - before.flows_created,
                ];
                s.parse_errors += importer_delta[0];
                if kernel_delta != importer_delta {
                    diff(format!(
                        "{hook}: (parse error, fragment, flow created) kernel {kernel_delta:?}, \
                         importer {importer_delta:?} ({verdict:?})"
                    ));
                }
                if let Some(key) = key {
                    let kernel_flow = k.flow(&key)?;
                    let importer_flow = src.flows().find(|(k2, _)| **k2 == key).map(|(_, v)| *v);
                    if kernel_flow.as_ref().map(compared) != importer_flow.as_ref().map(compared) {
                        diff(format!(
                            "{hook} {}: kernel {}, importer {}",
                            show(&key),
                            show_stats(kernel_flow.as_ref()),
                            show_stats(importer_flow.as_ref())
                        ));
                    }
                }
            }
            Some((pkt, _)) => {
                // No test run takes it; the kernel's parser needs at least 20 bytes of IP.
                s.too_short += 1;
                if verdict == Counted::Ip {
                    diff(format!("{} bytes counted as an IP packet, a parse error to the kernel", pkt.len()));
                }
            }
            None => {
                s.link_skipped += 1;
                let expected = if l3 == L3::NotIp { Counted::NotIp } else { Counted::Malformed };
                if verdict != expected {
                    diff(format!("{:?} link: file::l3 says {l3:?}, the importer counted {verdict:?}", frame.link));
                }
            }
        }
        drain(&mut k.source, n, &mut self.kernel_events)?;
        drain(src, n, &mut self.importer_events)
    }

    /// Both flow tables whole, compared entry by entry; with `clear`, then emptied on both sides
    /// (the kernel's as the sweep takes an ended flow out), so that the next frames start from
    /// empty tables and the LRU never has to evict. Returns the number of flows compared.
    pub fn compare_tables(&mut self, clear: bool) -> Result<usize> {
        let kernel_flows: HashMap<FlowKey, FlowStats> = self.k.flows()?.into_iter().collect();
        let importer_flows: HashMap<FlowKey, FlowStats> = self.src.flows().map(|(k, v)| (*k, *v)).collect();
        let keys: HashSet<&FlowKey> = kernel_flows.keys().chain(importer_flows.keys()).collect();
        let mut keys: Vec<&FlowKey> = keys.into_iter().collect();
        keys.sort_by_key(|k| show(k));
        for key in &keys {
            let (kf, imf) = (kernel_flows.get(key), importer_flows.get(key));
            if kf.map(compared) != imf.map(compared) {
                self.diffs.push(format!(
                    "after frame {}: flow table, {}: kernel {}, importer {}",
                    self.s.frames,
                    show(key),
                    show_stats(kf),
                    show_stats(imf)
                ));
            }
        }
        if clear {
            for key in &keys {
                self.k.source.tables.flows.take(key)?;
                self.src.take(key)?;
            }
        }
        Ok(importer_flows.len())
    }

    /// The events both sides sent since the last call, in order; then forgets them. The frame
    /// of the first event that differs, if one does.
    pub fn compare_events(&mut self) -> Option<u64> {
        let (kernel, importer) = (&self.kernel_events, &self.importer_events);
        self.s.events += importer.len();
        if kernel != importer {
            let at = kernel.iter().zip(importer).position(|(a, b)| a != b);
            let at = at.unwrap_or(kernel.len().min(importer.len()));
            self.diffs.push(format!(
                "events: kernel {}, importer {}; first difference at event {at}: kernel {:?}, importer {:?}",
                kernel.len(),
                importer.len(),
                kernel.get(at),
                importer.get(at)
            ));
        }
        let first = if kernel == importer {
            None
        } else {
            let at = kernel.iter().zip(importer).position(|(a, b)| a != b);
            let at = at.unwrap_or(kernel.len().min(importer.len()));
            kernel.get(at).or(importer.get(at)).map(|r| r.frame)
        };
        self.kernel_events.clear();
        self.importer_events.clear();
        first
    }

    /// The kernel's counters against what the importer counted and what was run: parse errors
    /// of the frames the kernel ran on, fragments, flows created, packets passed (every one: no
    /// rule is loaded), none dropped, no failed update, no lost record.
    pub fn compare_counters(&mut self) -> Result<()> {
        let given = self.s.xdp + self.s.tc;
        let kernel = |c| self.k.counter(c);
        let counters = [
            ("parse errors", kernel(Counter::ParseErrors)?, self.s.parse_errors),
            ("fragments", kernel(Counter::Fragments)?, self.src.counts.fragments),
            ("flows created", kernel(Counter::FlowsCreated)?, self.src.counts.flows_created),
            ("packets passed", kernel(Counter::Passed)?, given),
            ("packets dropped", kernel(Counter::Dropped)?, 0),
            ("flow update errors", kernel(Counter::FlowUpdateErrors)?, 0),
            ("ring records lost", kernel(Counter::RingLost)?, 0),
        ];
        for (what, kv, iv) in counters {
            if kv != iv {
                self.diffs.push(format!("counter {what}: kernel {kv}, importer {iv}"));
            }
        }
        let c = self.src.counts;
        if c.frames != self.s.frames || c.ip_packets + c.not_ip + c.malformed != c.frames {
            self.diffs.push(format!("the importer's counts do not add up over {} frames: {c:?}", self.s.frames));
        }
        self.s.fragments = c.fragments;
        Ok(())
    }
}
