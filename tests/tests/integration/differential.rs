//! The differential test of issue "flow accounting must agree with the kernel program packet for
//! packet": every frame of a capture goes through the real XDP or TC program
//! (BPF_PROG_TEST_RUN) and through `tracker import-pcap`'s accounting ([`CaptureSource`]), in
//! file order, and the two must agree exactly: after every frame (parse error or not, fragment
//! or not, flow created or not, the frame's flow entry, the events it sent) and at the end (both
//! flow tables whole, the counters, every event in order).
//!
//! The captures: every file of the third-party robustness set (`../shared/testdata/pcaps`, or
//! `TRACKER_PCAPS`), and captures built here in memory for what that set lacks: VLAN and QinQ
//! tags, IPv4 fragments, IPv6 hop-by-hop and fragment headers, whole TCP connections in both
//! directions, DNS over UDP and TCP, truncated packets, ARP, SLL2, a big-endian pcap, a
//! nanosecond pcapng with an Ethernet and a raw-IP interface, and jumbo frames.
//!
//! How a frame reaches the kernel is how it would on the interface it was captured on: an
//! Ethernet frame, whole, to the programs loaded with `L2_LEN` 14; any other link's IP packet,
//! from its IP header (what `file::l3` returns), to the programs loaded with `L2_LEN` 0, which
//! share the first pair's maps (one pin directory), so a capture with both kinds of interface
//! has one flow table, as the importer does. Frames a non-Ethernet link says are not IP, or are
//! cut before IP, never reach the kernel (it never sees an SLL header): the importer must count
//! them as not IP or malformed. The importer asks which way a frame goes (`is_up`); the test runs
//! XDP for up and TC for down on the same bytes.
//!
//! The importer runs with import-pcap's default timeouts: a frame that meets its flow's entry
//! idle past its timeout (`Counted::Stale`) ends that flow, as the daemon's sweep would have.
//! The test then takes the entry out of both tables (the kernel's as the sweep does), compares
//! what they held, and counts the frame again on both sides, as a new flow.
//!
//! Two limits of BPF_PROG_TEST_RUN shape the input, and both sides get the same bytes:
//! - it sees only the captured bytes, so the importer is handed each frame with its original
//!   length set to the captured one (the real import counts the original length);
//! - it refuses less than 14 bytes, and a TC run more than about a page (an XDP run puts the
//!   rest in fragments its program does not count): such frames are cut, on both sides, to the
//!   largest length both hooks take whole (probed once), as a snap length would cut them; frames
//!   under 14 bytes are not run, and the importer must count them not IP or malformed, as the
//!   kernel's parser would.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
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
            file::{self, CaptureReader, Frame, L3, Link},
        },
        kernel::KernelSource,
    },
};
use tracker_common::{
    Counter, EventKind, FlowKey, FlowStats, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L2_LEN_ETHERNET,
    L2_LEN_NONE, parse::parse_frame, user::Event,
};

const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (-1) as the test run reports it.
const TC_ACT_UNSPEC: u32 = u32::MAX;
/// BPF_PROG_TEST_RUN refuses less than an Ethernet header's worth of data (`bpf_test_init`).
const MIN_TEST_RUN: usize = 14;
/// Disagreements printed per capture; the rest are counted.
const SHOWN: usize = 25;

// ---------------------------------------------------------------------------------------------
// The kernel side

/// The programs loaded twice over one pin directory (removed at drop): for Ethernet frames and
/// for raw IP. The second load reuses the first's pinned maps, so both write one flow table,
/// one set of counters and one ring.
struct Kernel {
    eth: Ebpf,
    raw: Ebpf,
    source: KernelSource,
    pins: PinDir,
}

impl Kernel {
    fn load() -> Result<Self> {
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
    fn run(&mut self, l2: u32, up: bool, pkt: &[u8]) -> Result<u32> {
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

    fn counter(&self, c: Counter) -> Result<u64> {
        read_counter(&self.source.tables.counters, c)
    }

    /// One flow, per-CPU values folded; `None` when the table does not have it.
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowStats>> {
        Ok(self.source.tables.flows.find(key)?)
    }

    /// Both tables whole (`FLOWS_V4` keys widened to [`FlowKey`], per-CPU values folded).
    fn flows(&mut self) -> Result<Vec<(FlowKey, FlowStats)>> {
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
fn test_run_limit() -> Result<usize> {
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
    let probe = eth(ETH_IP, &ipv4(PHONE4, HOST4, IPPROTO_UDP, 1, 0, &udp(1, 2, &vec![0; len - 14 - 20 - 8])));
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
struct Rec {
    frame: u64,
    kind: EventKind,
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
fn drain(source: &mut dyn Source, frame: u64, out: &mut Vec<Rec>) -> Result<()> {
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

fn show(k: &FlowKey) -> String {
    let proto = match k.protocol {
        IPPROTO_TCP => "tcp".to_string(),
        IPPROTO_UDP => "udp".to_string(),
        IPPROTO_ICMP => "icmp".to_string(),
        IPPROTO_ICMPV6 => "icmpv6".to_string(),
        p => format!("proto {p}"),
    };
    format!("{proto} {}:{} <-> {}:{}", k.client(), k.client_port, k.remote(), k.remote_port)
}

/// What one capture's comparison saw.
#[derive(Debug, Default)]
struct Summary {
    frames: u64,
    xdp: u64,
    tc: u64,
    /// Not IP, or cut before IP, on a non-Ethernet link: never the kernel's.
    link_skipped: u64,
    /// Under [`MIN_TEST_RUN`] bytes: no test run takes them.
    too_short: u64,
    /// Cut to the test-run limit.
    cut: u64,
    /// Flows that ended idle (a frame met their entry past its timeout) and left both tables.
    ended: u64,
    parse_errors: u64,
    fragments: u64,
    flows: usize,
    events: usize,
    /// Where the reader stopped, for a damaged file.
    read_error: Option<String>,
}

fn client_nets() -> Vec<IpNet> {
    DEFAULT_CLIENT_NETS.iter().map(|n| n.parse().expect("DEFAULT_CLIENT_NETS parse")).collect()
}

/// Runs one capture through both sides; the disagreements, described, and what was compared.
fn compare_capture(name: &str, bytes: &[u8], limit: usize) -> Result<(Summary, Vec<String>)> {
    let mut k = Kernel::load()?;
    let mut src = CaptureSource::new(format!("differential {name}"), client_nets(), Timeouts::default());
    let mut reader = CaptureReader::new(name, bytes).map_err(|e| anyhow!("{e}"))?;
    let mut s = Summary::default();
    let mut diffs = Vec::new();
    let (mut kernel_events, mut importer_events) = (Vec::new(), Vec::new());
    let mut last = [0u64; 3];
    loop {
        let read = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                s.read_error = Some(e.to_string());
                break;
            }
        };
        s.frames += 1;
        let n = read.number;
        // The link-layer header the kernel never sees, then what is left cut to the limit.
        let link_header = match file::l3(read.link, read.data) {
            L3::Ip(d) => read.data.len() - d.len(),
            _ => 0,
        };
        let keep = read.data.len().min(link_header + limit);
        s.cut += u64::from(keep < read.data.len());
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
        let before = src.counts;
        let mut stale_before = false;
        let (up, key, verdict) = loop {
            // Which way it goes, as the importer decides before counting it.
            let sender_first = input.and_then(|(d, l2)| parse_frame(d, d.len() as u32, l2, true).ok());
            let up = sender_first.as_ref().is_none_or(|p| src.is_up(p));
            let key = sender_first.map(|p| if up { p.key() } else { p.flipped().key() });
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
                diffs.push(format!(
                    "frame {n}: ended idle, {}: kernel {}, importer {}",
                    show(&stale),
                    show_stats(kernel_had.as_ref()),
                    show_stats(importer_had.as_ref())
                ));
            }
        };
        let after = src.counts;
        let mut diff = |what: String| diffs.push(format!("frame {n} ({} bytes): {what}", frame.data.len()));
        match input {
            Some((pkt, l2)) if pkt.len() >= MIN_TEST_RUN => {
                let ret = k.run(l2, up, pkt).with_context(|| format!("{name}: frame {n}"))?;
                let (hook, pass) = if up { ("XDP", XDP_PASS) } else { ("TC", TC_ACT_UNSPEC) };
                if up {
                    s.xdp += 1;
                } else {
                    s.tc += 1;
                }
                if ret != pass {
                    diff(format!("{hook} returned {ret}, not its pass verdict {pass}"));
                }
                let now = [
                    k.counter(Counter::ParseErrors)?,
                    k.counter(Counter::Fragments)?,
                    k.counter(Counter::FlowsCreated)?,
                ];
                let kernel_delta = [now[0] - last[0], now[1] - last[1], now[2] - last[2]];
                last = now;
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
        drain(&mut k.source, n, &mut kernel_events)?;
        drain(&mut src, n, &mut importer_events)?;
    }

    // The tables whole.
    let kernel_flows: HashMap<FlowKey, FlowStats> = k.flows()?.into_iter().collect();
    let importer_flows: HashMap<FlowKey, FlowStats> = src.flows().map(|(k, v)| (*k, *v)).collect();
    let keys: HashSet<&FlowKey> = kernel_flows.keys().chain(importer_flows.keys()).collect();
    let mut keys: Vec<&FlowKey> = keys.into_iter().collect();
    keys.sort_by_key(|k| show(k));
    for key in keys {
        let (kf, imf) = (kernel_flows.get(key), importer_flows.get(key));
        if kf.map(compared) != imf.map(compared) {
            diffs.push(format!("flow table, {}: kernel {}, importer {}", show(key), show_stats(kf), show_stats(imf)));
        }
    }
    s.flows = importer_flows.len();

    // The counters: parse errors of the frames the kernel ran on, fragments, flows created.
    let given = s.xdp + s.tc;
    let kernel = |c| k.counter(c);
    let counters = [
        ("parse errors", kernel(Counter::ParseErrors)?, s.parse_errors),
        ("fragments", kernel(Counter::Fragments)?, src.counts.fragments),
        ("flows created", kernel(Counter::FlowsCreated)?, src.counts.flows_created),
        ("packets passed", kernel(Counter::Passed)?, given),
        ("packets dropped", kernel(Counter::Dropped)?, 0),
        ("flow update errors", kernel(Counter::FlowUpdateErrors)?, 0),
        ("ring records lost", kernel(Counter::RingLost)?, 0),
    ];
    for (what, kv, iv) in counters {
        if kv != iv {
            diffs.push(format!("counter {what}: kernel {kv}, importer {iv}"));
        }
    }
    let c = src.counts;
    if c.frames != s.frames || c.ip_packets + c.not_ip + c.malformed != c.frames {
        diffs.push(format!("the importer's counts do not add up over {} frames: {c:?}", s.frames));
    }
    s.fragments = src.counts.fragments;

    // The events, in order.
    s.events = importer_events.len();
    if kernel_events != importer_events {
        let at = kernel_events.iter().zip(&importer_events).position(|(a, b)| a != b);
        let at = at.unwrap_or(kernel_events.len().min(importer_events.len()));
        diffs.push(format!(
            "events: kernel {}, importer {}; first difference at event {at}: kernel {:?}, importer {:?}",
            kernel_events.len(),
            importer_events.len(),
            kernel_events.get(at),
            importer_events.get(at)
        ));
    }
    Ok((s, diffs))
}

/// Compares the named captures; prints each one's summary and, on disagreement, its diff, then
/// fails naming every capture that disagreed.
fn compare_all(captures: &[(String, Vec<u8>)]) -> Result<Vec<Summary>> {
    let limit = test_run_limit()?;
    let mut failed = Vec::new();
    let mut out = Vec::new();
    for (name, bytes) in captures {
        let start = Instant::now();
        let (s, diffs) = compare_capture(name, bytes, limit)?;
        let damaged = s.read_error.as_deref().map(|e| format!("; reading stopped: {e}")).unwrap_or_default();
        println!(
            "differential: {name}: {} frames ({} XDP, {} TC, {} not IP at the link layer, \
             {} under {MIN_TEST_RUN} bytes, {} cut to {limit}), {} parse errors, {} fragments, {} flows \
             ({} ended idle), {} events, {:.0?}{damaged}",
            s.frames,
            s.xdp,
            s.tc,
            s.link_skipped,
            s.too_short,
            s.cut,
            s.parse_errors,
            s.fragments,
            s.flows,
            s.ended,
            s.events,
            start.elapsed()
        );
        if !diffs.is_empty() {
            eprintln!("differential: {name}: kernel and importer disagree {} times:", diffs.len());
            for d in diffs.iter().take(SHOWN) {
                eprintln!("  {name}: {d}");
            }
            if diffs.len() > SHOWN {
                eprintln!("  {name}: ... and {} more", diffs.len() - SHOWN);
            }
            failed.push(format!("{name} ({} disagreements)", diffs.len()));
        }
        out.push(s);
    }
    assert!(failed.is_empty(), "kernel and importer disagree on: {}", failed.join(", "));
    Ok(out)
}

/// Every file of the third-party robustness set (all of them captures but the manifest).
#[test]
fn robustness_captures_agree_with_the_kernel() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    // The synthetic captures below run everywhere.
    let Some(dir) = tracker_tests::shared_pcaps_or_skip() else { return Ok(()) };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.is_file() && p.extension().is_none_or(|e| e != "txt"));
    files.sort();
    let captures: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| Ok((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), std::fs::read(p)?)))
        .collect::<Result<_>>()?;
    assert!(captures.len() >= 10, "{} captures in {}", captures.len(), dir.display());
    let summaries = compare_all(&captures)?;
    let frames: u64 = summaries.iter().map(|s| s.frames).sum();
    let given: u64 = summaries.iter().map(|s| s.xdp + s.tc).sum();
    let flows: usize = summaries.iter().map(|s| s.flows).sum();
    println!("differential: {} captures, {frames} frames, {given} test runs, {flows} flows: all agree", captures.len());
    assert!(frames > 2_000, "read {frames} frames");
    assert!(summaries.iter().map(|s| s.tc).sum::<u64>() > 0, "no frame went down (TC)");
    assert!(summaries.iter().map(|s| s.parse_errors).sum::<u64>() > 0 && summaries.iter().any(|s| s.fragments > 0));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Captures built here

/// Runs one built capture; returns its summary for the test's own checks.
fn check_built(name: &str, bytes: Vec<u8>) -> Result<Option<Summary>> {
    if !tracker_tests::root_or_skip() {
        return Ok(None);
    }
    let mut s = compare_all(&[(name.to_string(), bytes)])?;
    let s = s.pop().context("no summary")?;
    assert!(s.read_error.is_none(), "{name}: {:?}", s.read_error);
    Ok(Some(s))
}

const PHONE4: [u8; 4] = [10, 77, 0, 2];
const PHONE4B: [u8; 4] = [10, 77, 0, 3];
const HOST4: [u8; 4] = [203, 0, 113, 10];
const RESOLVER4: [u8; 4] = [203, 0, 113, 53];
const PUBLIC_A: [u8; 4] = [198, 51, 100, 1];
const PUBLIC_B: [u8; 4] = [203, 0, 113, 20];
const LAN_A: [u8; 4] = [192, 168, 1, 7];
const PHONE6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const HOST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const RESOLVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53];

const ETH_IP: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_8021Q: u16 = 0x8100;
const ETH_8021AD: u16 = 0x88a8;
const ETH_LLDP: u16 = 0x88cc;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DSTOPTS: u8 = 60;

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet; `frag` is the flags-and-offset field (0x2000 = MF, offset in 8-byte units).
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet whose first next-header is `next`.
fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A hop-by-hop, routing or destination-options header of `len8 + 1` 8-byte units.
fn ext(next: u8, len8: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, len8];
    h.extend_from_slice(rest);
    h.resize((usize::from(len8) + 1) * 8, 0);
    h
}

/// An IPv6 fragment header: offset in 8-byte units, more fragments or not.
fn frag6(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// A TCP segment; `options` is padded to whole words.
fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let opts = options.len().div_ceil(4) * 4;
    let mut h = Vec::with_capacity(20 + opts + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&(if flags & ACK != 0 { 1000u32 } else { 0 }).to_be_bytes());
    h.extend_from_slice(&[(((20 + opts) / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(options);
    h.resize(20 + opts, 1);
    h.extend_from_slice(payload);
    h
}

/// A SYN's options: MSS 1460, SACK permitted, window scale 7.
const SYN_OPTIONS: [u8; 12] = [2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7, 1, 1];

fn v4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4(src, dst, IPPROTO_UDP, 7, 0x4000, &udp(sport, dport, payload))
}

fn v4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let options: &[u8] = if flags & SYN != 0 { &SYN_OPTIONS } else { &[] };
    ipv4(src, dst, IPPROTO_TCP, 8, 0x4000, &tcp(sport, dport, 1, flags, options, payload))
}

fn v6_udp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv6(src, dst, IPPROTO_UDP, &udp(sport, dport, payload))
}

fn v6_tcp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let options: &[u8] = if flags & SYN != 0 { &SYN_OPTIONS } else { &[] };
    ipv6(src, dst, IPPROTO_TCP, &tcp(sport, dport, 1, flags, options, payload))
}

fn icmp_echo(reply: bool, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![if reply { 0 } else { 8 }, 0, 0, 0, 0, 1, 0, 1];
    m.extend_from_slice(payload);
    m
}

/// An Ethernet frame.
fn eth(ether_type: u16, body: &[u8]) -> Vec<u8> {
    vlan(&[], ether_type, body)
}

/// An Ethernet frame with VLAN tags, outermost first: (TPID, VLAN id).
fn vlan(tags: &[(u16, u16)], ether_type: u16, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(body);
    // The minimum frame (without FCS): the padding is not part of the IP packet.
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// An ARP request (28 bytes), or reply.
fn arp(reply: bool) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, if reply { 2 } else { 1 }];
    a.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 10, 77, 0, 1]);
    a.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 77, 0, 2]);
    a
}

fn dns_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&dns_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

/// A response with `answers` A records (16 bytes each).
fn dns_response(id: u16, name: &str, answers: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x81, 0x80, 0, 1]);
    m.extend_from_slice(&answers.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&dns_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    for i in 0..answers {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 203, 0, 113]);
        m.push(i as u8);
    }
    m
}

/// DNS over TCP: the message behind its two-byte length.
fn dns_tcp(msg: &[u8]) -> Vec<u8> {
    let mut m = (msg.len() as u16).to_be_bytes().to_vec();
    m.extend_from_slice(msg);
    m
}

/// A first payload: a TLS record header and `len - 5` bytes of pattern.
fn hello(len: usize) -> Vec<u8> {
    let mut m = vec![0x16, 0x03, 0x01];
    m.extend_from_slice(&((len - 5) as u16).to_be_bytes());
    m.extend((0..len - 5).map(|i| (i * 7 + 3) as u8));
    m
}

/// A frame of a built capture: its bytes and its length on the wire (more when cut).
struct Pkt {
    data: Vec<u8>,
    orig: u32,
    /// pcapng interface.
    interface: u32,
    /// Seconds of silence before it (in pcap files).
    delay_s: u32,
}

fn pkt(data: Vec<u8>) -> Pkt {
    let orig = data.len() as u32;
    Pkt { data, orig, interface: 0, delay_s: 0 }
}

/// The first `keep` bytes of a frame, as a snap length cuts it.
fn cut(data: Vec<u8>, keep: usize) -> Pkt {
    Pkt { data: data[..keep.min(data.len())].to_vec(), ..pkt(data) }
}

/// A frame after `delay_s` seconds of silence.
fn after(delay_s: u32, data: Vec<u8>) -> Pkt {
    Pkt { delay_s, ..pkt(data) }
}

fn on(interface: u32, data: Vec<u8>) -> Pkt {
    Pkt { interface, ..pkt(data) }
}

fn put16(out: &mut Vec<u8>, v: u16, big: bool) {
    out.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}

fn put32(out: &mut Vec<u8>, v: u32, big: bool) {
    out.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// A pcap file: microsecond or nanosecond stamps, either byte order; a packet per millisecond
/// but for the silences its packets ask for.
fn pcap(big: bool, nanos: bool, linktype: u32, pkts: &[Pkt]) -> Vec<u8> {
    let mut out = Vec::new();
    put32(&mut out, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }, big);
    put16(&mut out, 2, big);
    put16(&mut out, 4, big);
    put32(&mut out, 0, big);
    put32(&mut out, 0, big);
    put32(&mut out, 65_535, big);
    put32(&mut out, linktype, big);
    let mut silence = 0;
    for (i, p) in pkts.iter().enumerate() {
        let ms = i as u32;
        silence += p.delay_s;
        put32(&mut out, 1_760_000_000 + silence + ms / 1000, big);
        put32(&mut out, (ms % 1000) * if nanos { 1_000_000 } else { 1000 } + 7, big);
        put32(&mut out, p.data.len() as u32, big);
        put32(&mut out, p.orig, big);
        out.extend_from_slice(&p.data);
    }
    out
}

/// A little-endian pcapng file: one section, an interface per link type (nanosecond stamps,
/// `if_tsresol` 9), an enhanced packet block per packet.
fn pcapng_ns(linktypes: &[u16], pkts: &[Pkt]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, ty: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        put32(out, ty, false);
        put32(out, len, false);
        out.extend_from_slice(body);
        out.resize(out.len() + padded - body.len(), 0);
        put32(out, len, false);
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    put32(&mut shb, 0x1a2b_3c4d, false);
    put16(&mut shb, 1, false);
    put16(&mut shb, 0, false);
    shb.extend_from_slice(&[0xff; 8]);
    block(&mut out, 0x0a0d_0d0a, &shb);
    for &lt in linktypes {
        let mut idb = Vec::new();
        put16(&mut idb, lt, false);
        put16(&mut idb, 0, false);
        put32(&mut idb, 0, false);
        // if_tsresol (9) = 9: nanoseconds; then opt_endofopt.
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut out, 1, &idb);
    }
    for (i, p) in pkts.iter().enumerate() {
        let units = 1_760_000_000_000_000_000u64 + i as u64 * 1_000_003;
        let mut epb = Vec::new();
        put32(&mut epb, p.interface, false);
        put32(&mut epb, (units >> 32) as u32, false);
        put32(&mut epb, units as u32, false);
        put32(&mut epb, p.data.len() as u32, false);
        put32(&mut epb, p.orig, false);
        epb.extend_from_slice(&p.data);
        block(&mut out, 6, &epb);
    }
    out
}

/// A Linux SLL2 header in front of `body`: protocol, interface 3, ARPHRD_ETHER, packet type
/// (0 to us, 4 outgoing), a 6-byte address.
fn sll2(protocol: u16, outgoing: bool, body: &[u8]) -> Vec<u8> {
    let mut f = protocol.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, if outgoing { 4 } else { 0 }, 6]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0, 0]);
    f.extend_from_slice(body);
    f
}

/// A whole TCP connection: handshake, a request and a response, both FINs, the last ACK.
/// `ip(up, flags, payload)` builds one segment, from the client when `up`.
fn tcp_connection<F>(ip: F, request: &[u8], response: &[u8]) -> Vec<Vec<u8>>
where
    F: Fn(bool, u8, &[u8]) -> Vec<u8>,
{
    vec![
        ip(true, SYN, b""),
        ip(false, SYN | ACK, b""),
        ip(true, ACK, b""),
        ip(true, PSH | ACK, request),
        ip(false, ACK, b""),
        ip(false, PSH | ACK, response),
        ip(true, ACK, b""),
        ip(true, FIN | ACK, b""),
        ip(false, FIN | ACK, b""),
        ip(true, ACK, b""),
    ]
}

/// IPv4 fragments of `payload` (an IP payload, the transport header first): `size` bytes
/// each (a multiple of 8), MF on all but the last.
fn fragments4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let more = if i + 1 < n { 0x2000 } else { 0 };
            ipv4(src, dst, proto, id, more | (i * size / 8) as u16, c)
        })
        .collect()
}

#[test]
fn ethernet_8021q_tags_agree() -> Result<()> {
    let tag = |body: Vec<u8>, et: u16| vlan(&[(ETH_8021Q, 7)], et, &body);
    let mut pkts = vec![
        pkt(tag(v4_udp(PHONE4, HOST4, 5000, 9000, b"hello"), ETH_IP)),
        pkt(tag(v4_udp(HOST4, PHONE4, 9000, 5000, b"world"), ETH_IP)),
        pkt(tag(v4_udp(PHONE4, HOST4, 5000, 9000, b"again"), ETH_IP)),
        pkt(tag(v6_udp(PHONE6, HOST6, 5001, 9001, b"six"), ETH_IPV6)),
        pkt(tag(v6_udp(HOST6, PHONE6, 9001, 5001, b"xis"), ETH_IPV6)),
        pkt(tag(ipv4(PHONE4, HOST4, IPPROTO_ICMP, 1, 0, &icmp_echo(false, b"ping")), ETH_IP)),
        pkt(tag(ipv4(HOST4, PHONE4, IPPROTO_ICMP, 1, 0, &icmp_echo(true, b"ping")), ETH_IP)),
        // Tagged ARP: not IP.
        pkt(tag(arp(false), ETH_ARP)),
        // An IPv6 EtherType in front of IPv4: malformed.
        pkt(tag(v4_udp(PHONE4, HOST4, 5000, 9000, b"liar"), ETH_IPV6)),
        // Cut inside the tag.
        cut(tag(v4_udp(PHONE4, HOST4, 5000, 9000, b"x"), ETH_IP), 16),
        // An untagged frame between tagged ones.
        pkt(eth(ETH_IP, &v4_udp(PHONE4, HOST4, 5000, 9000, b"plain"))),
    ];
    let conn = tcp_connection(
        |up: bool, flags: u8, p: &[u8]| {
            let ip = if up {
                v4_tcp(PHONE4, HOST4, 40_000, 443, flags, p)
            } else {
                v4_tcp(HOST4, PHONE4, 443, 40_000, flags, p)
            };
            tag(ip, ETH_IP)
        },
        &hello(517),
        &hello(1400),
    );
    pkts.extend(conn.into_iter().map(pkt));
    let s = check_built("eth_8021q.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.xdp > 0 && s.tc > 0 && s.parse_errors >= 3, "{s:?}");
    }
    Ok(())
}

#[test]
fn ethernet_qinq_tags_agree() -> Result<()> {
    let qinq = |body: Vec<u8>, et: u16| vlan(&[(ETH_8021AD, 100), (ETH_8021Q, 7)], et, &body);
    let mut pkts = vec![
        pkt(qinq(v6_udp(PHONE6, RESOLVER6, 5353, 53, &dns_query(1, "www.lab.test")), ETH_IPV6)),
        pkt(qinq(v6_udp(RESOLVER6, PHONE6, 53, 5353, &dns_response(1, "www.lab.test", 3)), ETH_IPV6)),
        pkt(qinq(ipv6(PHONE6, HOST6, IPPROTO_ICMPV6, &[128, 0, 0, 0, 0, 1, 0, 1]), ETH_IPV6)),
        // Three tags: the parser walks two, then finds a third TPID where IP should be.
        pkt(vlan(&[(ETH_8021AD, 1), (ETH_8021Q, 2), (ETH_8021Q, 3)], ETH_IP, &v4_udp(PHONE4, HOST4, 1, 2, b"3"))),
        // Two 802.1Q tags (QinQ as some switches write it).
        pkt(vlan(&[(ETH_8021Q, 1), (ETH_8021Q, 2)], ETH_IP, &v4_udp(PHONE4, HOST4, 1, 2, b"2"))),
        // Cut inside the inner tag.
        cut(qinq(v4_udp(PHONE4, HOST4, 1, 2, b""), ETH_IP), 20),
        pkt(qinq(arp(true), ETH_ARP)),
    ];
    let conn = tcp_connection(
        |up: bool, flags: u8, p: &[u8]| {
            let ip = if up {
                v4_tcp(PHONE4, HOST4, 40_001, 80, flags, p)
            } else {
                v4_tcp(HOST4, PHONE4, 80, 40_001, flags, p)
            };
            qinq(ip, ETH_IP)
        },
        b"GET / HTTP/1.1\r\nHost: web.lab.test\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    pkts.extend(conn.into_iter().map(pkt));
    let s = check_built("eth_qinq.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.xdp > 0 && s.tc > 0 && s.events >= 4, "{s:?}");
    }
    Ok(())
}

#[test]
fn ipv4_fragments_agree() -> Result<()> {
    let mut pkts = Vec::new();
    // A DNS response of 3,000 bytes in three fragments, in order.
    let big = udp(53, 5353, &dns_response(9, "many.lab.test", 180));
    pkts.push(pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 5353, 53, &dns_query(9, "many.lab.test")))));
    pkts.extend(
        fragments4(RESOLVER4, PHONE4, IPPROTO_UDP, 0x1234, &big, 1232).into_iter().map(|f| pkt(eth(ETH_IP, &f))),
    );
    // The same upwards, out of order: the last fragment first.
    let mut up = fragments4(PHONE4, HOST4, IPPROTO_UDP, 0x4321, &udp(7000, 9000, &[5; 2500]), 1480);
    up.reverse();
    pkts.extend(up.into_iter().map(|f| pkt(eth(ETH_IP, &f))));
    // TCP: a first fragment too short for the TCP header, then a later one.
    let seg = tcp(40_002, 443, 1, ACK, &[], &[9; 64]);
    pkts.push(pkt(eth(ETH_IP, &ipv4(PHONE4, HOST4, IPPROTO_TCP, 77, 0x2000, &seg[..8]))));
    pkts.push(pkt(eth(ETH_IP, &ipv4(PHONE4, HOST4, IPPROTO_TCP, 77, 1, &seg[8..]))));
    // A later fragment of a datagram whose first never came, and one with DF and MF both.
    pkts.push(pkt(eth(ETH_IP, &ipv4(HOST4, PHONE4, IPPROTO_UDP, 78, 0x2000 | 100, &[1; 800]))));
    pkts.push(pkt(eth(ETH_IP, &ipv4(PHONE4, HOST4, IPPROTO_UDP, 79, 0x6000, &udp(1, 2, b"df+mf")))));
    // ICMP fragments.
    let echo = icmp_echo(false, &[3; 2000]);
    pkts.extend(fragments4(PHONE4, HOST4, IPPROTO_ICMP, 80, &echo, 1480).into_iter().map(|f| pkt(eth(ETH_IP, &f))));
    let s = check_built("ipv4_fragments.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.fragments >= 5 && s.tc > 0 && s.parse_errors >= 1, "{s:?}");
    }
    Ok(())
}

#[test]
fn ipv6_hop_by_hop_and_fragment_headers_agree() -> Result<()> {
    // Hop-by-hop (router alert), then a fragment header: a DNS response in two fragments.
    let hbh = |next: u8| ext(next, 0, &[5, 2, 0, 0, 1, 0]);
    let msg = udp(53, 5353, &dns_response(3, "many.lab.test", 90));
    let (first, rest) = msg.split_at(1200);
    let mut frag_first = hbh(FRAGMENT);
    frag_first.extend_from_slice(&frag6(IPPROTO_UDP, 0, true, 0xabcd));
    frag_first.extend_from_slice(first);
    let mut frag_rest = hbh(FRAGMENT);
    frag_rest.extend_from_slice(&frag6(IPPROTO_UDP, 150, false, 0xabcd));
    frag_rest.extend_from_slice(rest);
    let mut query = hbh(IPPROTO_UDP);
    query.extend_from_slice(&udp(5353, 53, &dns_query(3, "many.lab.test")));
    // An atomic fragment (offset 0, no more): ports readable.
    let mut atomic = frag6(IPPROTO_TCP, 0, false, 7);
    atomic.extend_from_slice(&tcp(40_003, 443, 1, SYN, &SYN_OPTIONS, b""));
    // Hop-by-hop, destination options, routing, then a fragment header and TCP.
    let mut chain = hbh(DSTOPTS);
    chain.extend_from_slice(&ext(ROUTING, 1, &[4, 0, 0, 0]));
    chain.extend_from_slice(&ext(FRAGMENT, 0, &[0, 0, 0, 0, 0, 0]));
    chain.extend_from_slice(&frag6(IPPROTO_TCP, 0, true, 8));
    chain.extend_from_slice(&tcp(40_003, 443, 2, ACK, &[], &hello(300)));
    // Seven extension headers: more than the parser walks.
    let mut long = Vec::new();
    for _ in 0..6 {
        long.extend_from_slice(&ext(DSTOPTS, 0, &[1, 4, 0, 0, 0, 0]));
    }
    long.extend_from_slice(&ext(IPPROTO_UDP, 0, &[1, 4, 0, 0, 0, 0]));
    long.extend_from_slice(&udp(1, 2, b"deep"));
    // A hop-by-hop header that claims more than the packet has.
    let mut runs_past = ext(IPPROTO_UDP, 200, &[1, 4, 0, 0, 0, 0]);
    runs_past.truncate(16);
    let pkts = vec![
        pkt(ipv6(PHONE6, RESOLVER6, HOPOPTS, &query)),
        pkt(ipv6(RESOLVER6, PHONE6, HOPOPTS, &frag_first)),
        pkt(ipv6(RESOLVER6, PHONE6, HOPOPTS, &frag_rest)),
        pkt(ipv6(PHONE6, HOST6, FRAGMENT, &atomic)),
        pkt(ipv6(HOST6, PHONE6, IPPROTO_TCP, &tcp(443, 40_003, 1, SYN | ACK, &SYN_OPTIONS, b""))),
        pkt(ipv6(PHONE6, HOST6, HOPOPTS, &chain)),
        pkt(ipv6(PHONE6, HOST6, DSTOPTS, &long)),
        pkt(ipv6(PHONE6, HOST6, HOPOPTS, &runs_past)),
        // Cut inside the fragment header.
        cut(ipv6(RESOLVER6, PHONE6, HOPOPTS, &frag_rest), 40 + 8 + 4),
    ];
    let s = check_built("ipv6_hbh_frag.pcap", pcap(false, false, LINKTYPE_RAW, &pkts))?;
    if let Some(s) = s {
        assert!(s.fragments >= 1 && s.tc >= 2 && s.parse_errors >= 2, "{s:?}");
    }
    Ok(())
}

#[test]
fn tcp_connections_both_ways_agree() -> Result<()> {
    let mut pkts = Vec::new();
    // The phone to a server, IPv4 and IPv6, each a whole connection.
    let v4 = |up: bool, flags: u8, p: &[u8]| {
        if up { v4_tcp(PHONE4, HOST4, 41_000, 443, flags, p) } else { v4_tcp(HOST4, PHONE4, 443, 41_000, flags, p) }
    };
    let v6 = |up: bool, flags: u8, p: &[u8]| {
        if up { v6_tcp(PHONE6, HOST6, 41_001, 443, flags, p) } else { v6_tcp(HOST6, PHONE6, 443, 41_001, flags, p) }
    };
    // Interleaved, as on a real link.
    let (a, b) = (tcp_connection(v4, &hello(600), &hello(1300)), tcp_connection(v6, &hello(700), &hello(1400)));
    for (x, y) in a.into_iter().zip(b) {
        pkts.push(pkt(x));
        pkts.push(pkt(y));
    }
    // A retransmitted SYN, then the connection is reset by the server.
    pkts.push(pkt(v4_tcp(PHONE4B, HOST4, 41_002, 8443, SYN, b"")));
    pkts.push(pkt(v4_tcp(PHONE4B, HOST4, 41_002, 8443, SYN, b"")));
    pkts.push(pkt(v4_tcp(HOST4, PHONE4B, 8443, 41_002, RST | ACK, b"")));
    // Two public hosts, the capture starting at the SYN-ACK: its receiver is the client.
    pkts.push(pkt(v4_tcp(PUBLIC_B, PUBLIC_A, 443, 50_000, SYN | ACK, b"")));
    pkts.push(pkt(v4_tcp(PUBLIC_A, PUBLIC_B, 50_000, 443, ACK, &hello(200))));
    pkts.push(pkt(v4_tcp(PUBLIC_B, PUBLIC_A, 443, 50_000, PSH | ACK, &hello(90))));
    // Two public hosts from the SYN: its sender is the client.
    pkts.push(pkt(v4_tcp(PUBLIC_A, PUBLIC_B, 50_001, 22, SYN, b"")));
    pkts.push(pkt(v4_tcp(PUBLIC_B, PUBLIC_A, 22, 50_001, SYN | ACK, b"")));
    pkts.push(pkt(v4_tcp(PUBLIC_B, PUBLIC_A, 22, 50_001, PSH | ACK, b"SSH-2.0-dropbear\r\n")));
    // Two private hosts: both are clients, the first sender wins.
    pkts.push(pkt(v4_tcp(LAN_A, PHONE4, 50_002, 445, SYN, b"")));
    pkts.push(pkt(v4_tcp(PHONE4, LAN_A, 445, 50_002, SYN | ACK, b"")));
    // A data offset under 5 words, and a data offset past the packet.
    let mut doff = v4_tcp(PHONE4, HOST4, 41_003, 443, ACK, b"");
    doff[32] = 0x40;
    pkts.push(pkt(doff));
    let mut past = v4_tcp(PHONE4, HOST4, 41_003, 443, ACK, b"");
    past[32] = 0xf0;
    pkts.push(pkt(past));
    let s = check_built("tcp_connections.pcap", pcap(false, true, LINKTYPE_RAW, &pkts))?;
    if let Some(s) = s {
        assert!(s.tc >= 10 && s.xdp >= 10 && s.parse_errors == 2, "{s:?}");
    }
    Ok(())
}

#[test]
fn dns_over_udp_and_tcp_agree() -> Result<()> {
    let mut pkts = vec![
        pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 40_053, 53, &dns_query(0x1111, "web.lab.test")))),
        pkt(eth(ETH_IP, &v4_udp(RESOLVER4, PHONE4, 53, 40_053, &dns_response(0x1111, "web.lab.test", 1)))),
        // A response larger than PAYLOAD_CAP: the event keeps its first 1,280 bytes.
        pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 40_053, 53, &dns_query(0x2222, "many.lab.test")))),
        pkt(eth(ETH_IP, &v4_udp(RESOLVER4, PHONE4, 53, 40_053, &dns_response(0x2222, "many.lab.test", 90)))),
        pkt(eth(ETH_IPV6, &v6_udp(PHONE6, RESOLVER6, 40_054, 53, &dns_query(0x3333, "web.lab.test")))),
        pkt(eth(ETH_IPV6, &v6_udp(RESOLVER6, PHONE6, 53, 40_054, &dns_response(0x3333, "web.lab.test", 2)))),
        // An empty datagram to port 53: no payload, no event.
        pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 40_055, 53, b""))),
        // mDNS-style: port 53 on neither side but 5353; no DNS event, a first payload.
        pkt(eth(ETH_IP, &v4_udp(PHONE4, [224, 0, 0, 251], 5353, 5353, &dns_query(0, "nas.local")))),
    ];
    // DNS over TCP: a query, the response in two segments.
    let response = dns_tcp(&dns_response(0x4444, "many.lab.test", 60));
    let (r1, r2) = response.split_at(700);
    let t = |up: bool, flags: u8, p: &[u8]| {
        let ip = if up {
            v4_tcp(PHONE4, RESOLVER4, 40_056, 53, flags, p)
        } else {
            v4_tcp(RESOLVER4, PHONE4, 53, 40_056, flags, p)
        };
        pkt(eth(ETH_IP, &ip))
    };
    pkts.extend([
        t(true, SYN, b""),
        t(false, SYN | ACK, b""),
        t(true, ACK, b""),
        t(true, PSH | ACK, &dns_tcp(&dns_query(0x4444, "many.lab.test"))),
        t(false, ACK, r1),
        t(false, PSH | ACK, r2),
        t(true, FIN | ACK, b""),
        t(false, FIN | ACK, b""),
        t(true, ACK, b""),
    ]);
    let s = check_built("dns_udp_tcp.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.events >= 10 && s.tc > 0, "{s:?}");
    }
    Ok(())
}

#[test]
fn truncated_packets_agree() -> Result<()> {
    let seg = eth(ETH_IP, &v4_tcp(PHONE4, HOST4, 42_000, 443, ACK | PSH, &hello(400)));
    let seg6 = eth(ETH_IPV6, &v6_tcp(PHONE6, HOST6, 42_001, 443, ACK | PSH, &hello(400)));
    let pkts = vec![
        pkt(eth(ETH_IP, &v4_tcp(PHONE4, HOST4, 42_000, 443, SYN, b""))),
        // Cut in the middle of the TCP header.
        cut(seg.clone(), 14 + 20 + 10),
        cut(seg6.clone(), 14 + 40 + 13),
        // Cut right after the TCP header: the payload is gone.
        cut(seg.clone(), 14 + 20 + 20),
        // Cut in the payload.
        cut(seg.clone(), 14 + 20 + 20 + 100),
        cut(seg6, 14 + 40 + 20 + 1),
        // Cut in the IP header, at the Ethernet header, and before it ends.
        cut(seg.clone(), 14 + 12),
        cut(seg.clone(), 14),
        cut(seg.clone(), 10),
        // A UDP header cut short.
        cut(eth(ETH_IP, &v4_udp(HOST4, PHONE4, 53, 42_002, &dns_response(1, "web.lab.test", 1))), 14 + 20 + 5),
        pkt(seg),
    ];
    let s = check_built("truncated.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.too_short == 1 && s.parse_errors >= 5, "{s:?}");
    }
    Ok(())
}

#[test]
fn arp_and_other_non_ip_frames_agree() -> Result<()> {
    let pkts = vec![
        pkt(eth(ETH_ARP, &arp(false))),
        pkt(eth(ETH_ARP, &arp(true))),
        pkt(eth(ETH_IP, &v4_udp(PHONE4, HOST4, 6000, 6001, b"between"))),
        pkt(eth(ETH_LLDP, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1, 0, 0])),
        // An 802.3 length field where the EtherType goes.
        pkt(eth(0x0026, &[0x42, 0x42, 0x03, 0, 0, 0])),
        pkt(eth(ETH_IP, &v4_udp(HOST4, PHONE4, 6001, 6000, b"neewteb"))),
        // IPv4 EtherType, version 7.
        pkt(eth(ETH_IP, &{
            let mut p = v4_udp(PHONE4, HOST4, 1, 2, b"v7");
            p[0] = 0x75;
            p
        })),
    ];
    let s = check_built("arp.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.parse_errors == 5 && s.flows == 1, "{s:?}");
    }
    Ok(())
}

#[test]
fn linux_sll2_capture_agrees() -> Result<()> {
    let pkts = vec![
        pkt(sll2(ETH_IP, true, &v4_udp(PHONE4, RESOLVER4, 43_000, 53, &dns_query(5, "web.lab.test")))),
        pkt(sll2(ETH_IP, false, &v4_udp(RESOLVER4, PHONE4, 53, 43_000, &dns_response(5, "web.lab.test", 1)))),
        pkt(sll2(ETH_IPV6, true, &v6_tcp(PHONE6, HOST6, 43_001, 443, SYN, b""))),
        pkt(sll2(ETH_IPV6, false, &v6_tcp(HOST6, PHONE6, 443, 43_001, SYN | ACK, b""))),
        pkt(sll2(ETH_IPV6, true, &v6_tcp(PHONE6, HOST6, 43_001, 443, ACK | PSH, &hello(250)))),
        // Not IP: never the kernel's.
        pkt(sll2(ETH_ARP, false, &arp(false))),
        // The header alone: cut before IP.
        pkt(sll2(ETH_IP, false, b"")),
        // Says IPv4, holds no IP version: the kernel's parser decides.
        pkt(sll2(ETH_IP, false, &[0x55; 40])),
        // Says IPv4, holds IPv6: the version nibble decides, on both sides.
        pkt(sll2(ETH_IP, true, &v6_udp(PHONE6, HOST6, 43_002, 9, b"discard"))),
        // IP cut to 8 bytes: under what a test run takes.
        pkt(sll2(ETH_IP, true, &v4_udp(PHONE4, HOST4, 1, 2, b"")[..8])),
    ];
    let s = check_built("sll2.pcap", pcap(false, false, LINKTYPE_LINUX_SLL2, &pkts))?;
    if let Some(s) = s {
        assert!(s.link_skipped == 2 && s.too_short == 1 && s.tc > 0 && s.parse_errors == 1, "{s:?}");
    }
    Ok(())
}

#[test]
fn big_endian_pcap_agrees() -> Result<()> {
    let pkts = vec![
        pkt(ipv4(PHONE4, HOST4, IPPROTO_ICMP, 1, 0, &icmp_echo(false, b"big-endian"))),
        pkt(ipv4(HOST4, PHONE4, IPPROTO_ICMP, 1, 0, &icmp_echo(true, b"big-endian"))),
        pkt(v4_udp(PHONE4, HOST4, 44_000, 443, &hello(1200))),
        pkt(v4_udp(HOST4, PHONE4, 443, 44_000, &hello(1250))),
        // GRE: keyed by protocol alone.
        pkt(ipv4(PHONE4, HOST4, 47, 2, 0, &[0, 0, 0x08, 0, 1, 2, 3, 4])),
        pkt(ipv6(PHONE6, HOST6, IPPROTO_ICMPV6, &[128, 0, 0, 0, 0, 2, 0, 1])),
        pkt(ipv6(HOST6, PHONE6, IPPROTO_ICMPV6, &[129, 0, 0, 0, 0, 2, 0, 1])),
        // Version 5: not IP, never the kernel's on a raw link.
        pkt(vec![0x50; 30]),
        // Ten bytes of IPv4: under what a test run takes.
        pkt(v4_udp(PHONE4, HOST4, 1, 2, b"")[..10].to_vec()),
        // A total length past the frame, and a zero one: the frame's length counts.
        pkt({
            let mut p = v4_udp(PHONE4, HOST4, 44_001, 4500, b"ike");
            p[2..4].copy_from_slice(&9000u16.to_be_bytes());
            p
        }),
        pkt({
            let mut p = v4_udp(PHONE4, HOST4, 44_001, 4500, b"ike");
            p[2..4].copy_from_slice(&0u16.to_be_bytes());
            p
        }),
        // A total length under the headers.
        pkt({
            let mut p = v4_udp(PHONE4, HOST4, 44_002, 4500, b"ike");
            p[2..4].copy_from_slice(&24u16.to_be_bytes());
            p
        }),
    ];
    let s = check_built("big_endian.pcap", pcap(true, false, LINKTYPE_RAW, &pkts))?;
    if let Some(s) = s {
        assert!(s.link_skipped == 1 && s.too_short == 1 && s.tc > 0, "{s:?}");
    }
    Ok(())
}

#[test]
fn pcapng_with_ethernet_and_raw_ip_interfaces_agrees() -> Result<()> {
    const ETHERNET: u32 = 0;
    const RAW: u32 = 1;
    let pkts = vec![
        // A query on the tunnel (raw IP), its answer seen on the Ethernet side: one flow.
        on(RAW, v4_udp(PHONE4, RESOLVER4, 45_000, 53, &dns_query(7, "tls.lab.test"))),
        on(ETHERNET, eth(ETH_IP, &v4_udp(RESOLVER4, PHONE4, 53, 45_000, &dns_response(7, "tls.lab.test", 1)))),
        on(RAW, v4_tcp(PHONE4, HOST4, 45_001, 443, SYN, b"")),
        on(ETHERNET, eth(ETH_IP, &v4_tcp(HOST4, PHONE4, 443, 45_001, SYN | ACK, b""))),
        on(RAW, v4_tcp(PHONE4, HOST4, 45_001, 443, ACK, &hello(517))),
        on(ETHERNET, eth(ETH_IP, &v4_tcp(PHONE4, HOST4, 45_001, 443, ACK, &hello(517)))),
        on(ETHERNET, eth(ETH_IP, &v4_tcp(HOST4, PHONE4, 443, 45_001, ACK | PSH, &hello(1300)))),
        on(RAW, v6_udp(PHONE6, HOST6, 45_002, 443, &hello(1200))),
        on(ETHERNET, eth(ETH_IPV6, &v6_udp(HOST6, PHONE6, 443, 45_002, &hello(1200)))),
        on(ETHERNET, eth(ETH_ARP, &arp(false))),
        on(RAW, vec![0x00; 24]),
        on(RAW, v6_udp(PHONE6, HOST6, 1, 2, b"")[..30].to_vec()),
    ];
    let s = check_built("two_interfaces_ns.pcapng", pcapng_ns(&[1, LINKTYPE_RAW as u16], &pkts))?;
    if let Some(s) = s {
        assert!(s.link_skipped == 1 && s.tc > 0 && s.xdp > 0 && s.parse_errors == 2, "{s:?}");
    }
    Ok(())
}

#[test]
fn jumbo_frames_agree() -> Result<()> {
    // Larger than a test run takes whole: both sides get them cut to the same length.
    let pkts = vec![
        pkt(eth(ETH_IP, &v4_udp(PHONE4, HOST4, 46_000, 9000, &[1; 8900]))),
        pkt(eth(ETH_IP, &v4_udp(HOST4, PHONE4, 9000, 46_000, &[2; 8900]))),
        pkt(eth(ETH_IPV6, &v6_tcp(HOST6, PHONE6, 443, 46_001, SYN | ACK, b""))),
        pkt(eth(ETH_IPV6, &v6_tcp(HOST6, PHONE6, 443, 46_001, ACK, &[3; 8000]))),
        pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 46_002, 53, &dns_response(1, "many.lab.test", 500)))),
    ];
    let s = check_built("jumbo.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.cut == 4 && s.tc > 0, "{s:?}");
    }
    Ok(())
}

#[test]
fn flows_ended_idle_agree() -> Result<()> {
    // import-pcap ends a flow when a packet meets its entry idle past its timeout, as the
    // daemon's sweep would have; the entry leaves the kernel's table too, and the packet starts
    // a new flow on both sides.
    let syn = |flags| pkt(v4_tcp(PHONE4, HOST4, 47_000, 443, flags, b""));
    let pkts = vec![
        pkt(v4_udp(PHONE4, HOST4, 47_001, 3478, b"binding request")),
        pkt(v4_udp(HOST4, PHONE4, 3478, 47_001, b"binding response")),
        // Past the UDP timeout, the server speaks first: a new flow, still the phone's.
        after(61, v4_udp(HOST4, PHONE4, 3478, 47_001, b"late")),
        pkt(v4_udp(PHONE4, HOST4, 47_001, 3478, b"late reply")),
        // A connection that ended (both FINs), then its last ACK past the ended-TCP timeout.
        syn(SYN),
        pkt(v4_tcp(HOST4, PHONE4, 443, 47_000, SYN | ACK, b"")),
        pkt(v4_tcp(PHONE4, HOST4, 47_000, 443, ACK | PSH, &hello(300))),
        pkt(v4_tcp(PHONE4, HOST4, 47_000, 443, FIN | ACK, b"")),
        pkt(v4_tcp(HOST4, PHONE4, 443, 47_000, FIN | ACK, b"")),
        after(11, v4_tcp(PHONE4, HOST4, 47_000, 443, ACK, b"")),
        // ICMP past its timeout, IPv6 this time.
        pkt(ipv6(PHONE6, HOST6, IPPROTO_ICMPV6, &[128, 0, 0, 0, 0, 3, 0, 1])),
        after(31, ipv6(HOST6, PHONE6, IPPROTO_ICMPV6, &[129, 0, 0, 0, 0, 3, 0, 1])),
        // An open connection idle for five minutes is still open.
        after(300, v4_tcp(PHONE4, HOST4, 47_000, 443, ACK | PSH, b"still here")),
    ];
    let s = check_built("idle_flows.pcap", pcap(false, false, LINKTYPE_RAW, &pkts))?;
    if let Some(s) = s {
        assert!(s.ended == 3 && s.tc > 0, "{s:?}");
    }
    Ok(())
}
