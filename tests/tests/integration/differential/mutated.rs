//! The kernel programs against the importer's accounting (the userspace model) on generated packets: random and mutated from the robustness captures.
//!
//! Packet `i` of seed `s` is `tracker_tests::mutate::Generator::packet(i)`: the same bytes
//! whenever it is made. Each goes through the real XDP program (going up, as the importer
//! decides) or TC program (down) by BPF_PROG_TEST_RUN and through [`CaptureSource`], and
//! [`Pair::step`] compares what each counted (parse error, fragment, flow created), the flow
//! entry the packet touched, and the verdict. Every [`BATCH`] packets both flow tables are
//! compared whole, then emptied on both sides: the tables stay far below their size, so the
//! kernel's LRU never evicts (which the model does not do), and a batch's packets share few
//! enough addresses and ports to meet each other's flows, both ways. Events are compared in
//! order per batch, counters at the end. Packets are a microsecond apart, so no flow of a batch
//! reaches an idle timeout (ending flows is the capture tests' business).
//!
//! What the model cannot know, said rather than compared: no block, name or dns-bypass rule is
//! loaded, because the importer has no notion of a verdict. The verdict compared is therefore
//! "passes" (XDP_PASS, TC_ACT_UNSPEC) for every packet; the refusal path (XDP_TX answers, TCP
//! resets) and drops are the `kernel::refuse::` and `kernel::bypass::` tests' business. A run
//! that fails or returns XDP_ABORTED is an abort, counted apart. The runs stay on one CPU
//! (`harness::pin_to_this_cpu`): on two, a flow's per-CPU copies each send their first payload
//! ([`a_flow_on_a_second_cpu_sends_its_first_payload_again`] keeps that true).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use tracker::source::capture::file::{self, CaptureReader, Frame, L3, Link};
use tracker_tests::mutate::{Generator, Seed};

use tracker_common::{EventKind, FLOW_PAYLOAD_UP, L2_LEN_NONE};
use tracker_tests::packet::{IPPROTO_UDP, ipv4, udp};

use super::{
    harness::{Kernel, Pair, drain, pin_to, test_run_limit},
    shared_captures,
};

/// Packets between two whole-table comparisons (and emptyings).
const BATCH: u64 = 1000;
/// The bounded run of the integration suite.
const BOUNDED_PACKETS: u64 = 20_000;
const BOUNDED_SEED: u64 = 14;
/// `cargo xtask model`'s defaults (its own flags set the variables below).
const DEFAULT_PACKETS: u64 = 10_000_000;
const PACKETS_VAR: &str = "TRACKER_MODEL_PACKETS";
const SEED_VAR: &str = "TRACKER_MODEL_SEED";
const FROM_VAR: &str = "TRACKER_MODEL_FROM";
/// Set (to anything): every packet is printed with its bytes, for a replay.
const TRACE_VAR: &str = "TRACKER_MODEL_TRACE";
/// The capture clock: packet `i` at `START_NS + i * STEP_NS`.
const START_NS: u64 = 1_760_000_000_000_000_000;
const STEP_NS: u64 = 1_000;
/// Differences and aborts shown with their packet; the rest are counted.
const SHOWN: usize = 5;
/// Bytes of a shown packet's hex dump.
const DUMP: usize = 128;
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// What one run saw.
struct Run {
    packets: u64,
    elapsed: Duration,
    pair: Pair,
    /// Indices of the first packets that disagreed or aborted.
    shown: Vec<u64>,
    seeds: usize,
    flows: usize,
}

/// The robustness captures' frames as the kernel would see them (Ethernet whole, any other
/// link from its IP header); none where the captures are absent.
fn seeds() -> Result<Vec<Seed>> {
    let mut out = Vec::new();
    for (name, bytes) in shared_captures()?.unwrap_or_default() {
        let mut reader = CaptureReader::new(&name, &bytes[..]).map_err(|e| anyhow!("{e}"))?;
        // A damaged capture's frames up to the damage.
        while let Ok(Some(f)) = reader.next_frame() {
            let (ethernet, data) = match (f.link, file::l3(f.link, f.data)) {
                (Link::Ethernet, _) => (true, f.data),
                (_, L3::Ip(d)) => (false, d),
                (_, L3::Ethernet(d)) => (true, d),
                (_, L3::NotIp | L3::Short) => continue,
            };
            out.push(Seed { ethernet, data: data.to_vec(), origin: format!("{name}#{}", f.number) });
        }
    }
    Ok(out)
}

/// Packets `from..from + packets` of `seed` through both sides.
fn run(seed: u64, from: u64, packets: u64) -> Result<Run> {
    let limit = test_run_limit()?;
    let generator = Generator::new(seed, seeds()?);
    let mut pair = Pair::new("model", limit)?;
    let (mut shown, mut flows) = (Vec::new(), 0);
    let start = Instant::now();
    let mut progress = start;
    let end = from + packets;
    let trace = std::env::var_os(TRACE_VAR).is_some();
    let mut index = from;
    while index < end {
        // Batches are aligned on multiples of BATCH, so a replay from a batch's start meets the
        // same tables.
        let batch_end = ((index / BATCH + 1) * BATCH).min(end);
        for i in index..batch_end {
            let p = generator.packet(i);
            let before = pair.diffs.len() + pair.aborts.len();
            let frame = Frame {
                number: i,
                offset: 0,
                ts_ns: START_NS + i * STEP_NS,
                orig_len: p.data.len() as u32,
                link: if p.ethernet { Link::Ethernet } else { Link::Raw },
                data: &p.data,
            };
            pair.step(&frame)?;
            if trace {
                println!("model: packet {i} ({}, {} bytes):{}", p.what, p.data.len(), hex(&p.data));
            }
            if pair.diffs.len() + pair.aborts.len() > before && shown.len() < SHOWN {
                shown.push(i);
            }
        }
        let before = pair.diffs.len();
        flows += pair.compare_tables(true)?;
        let event_frame = pair.compare_events();
        if pair.diffs.len() > before && shown.len() < SHOWN {
            // The first event that differs names its packet; a table, the batch's last.
            shown.push(event_frame.unwrap_or(batch_end - 1));
        }
        index = batch_end;
        if progress.elapsed() >= PROGRESS_EVERY {
            progress = Instant::now();
            let done = index - from;
            println!(
                "model: {done} packets, {:.0}/s, {} differences, {} aborts",
                done as f64 / start.elapsed().as_secs_f64(),
                pair.diffs.len(),
                pair.aborts.len()
            );
        }
    }
    pair.compare_counters()?;
    Ok(Run { packets, elapsed: start.elapsed(), pair, shown, seeds: generator.seeds(), flows })
}

fn hex(data: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in data[..data.len().min(DUMP)].chunks(16).enumerate() {
        let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("\n      {:04x}  {}", i * 16, line.join(" ")));
    }
    if data.len() > DUMP {
        out.push_str(&format!("\n      ... {} bytes in all", data.len()));
    }
    out
}

/// Prints the run's figures, its first differences with their packets, and how to replay one;
/// true when nothing differed and nothing aborted.
fn report(seed: u64, from: u64, r: &Run) -> bool {
    let s = &r.pair.s;
    println!(
        "model: seed {seed}, packets {from}..{}: {} packets in {:.1?} ({:.0} packets/s), {} real frames to mutate\n\
         model: {} XDP and {} TC runs, {} under 14 bytes, {} refused by a TC test run (given to neither side), \
         {} parse errors, {} fragments, {} flows, {} events\n\
         model: verdicts compared: every packet must pass (no rule loaded; the model has no verdicts, \
         so the refusal path's XDP_TX and resets are not compared here); one CPU (per-CPU tables: \
         a second CPU's first payload is an event the model cannot know)\n\
         model: {} differences, {} aborts",
        from + r.packets,
        r.packets,
        r.elapsed,
        r.packets as f64 / r.elapsed.as_secs_f64(),
        r.seeds,
        s.xdp,
        s.tc,
        s.too_short,
        s.untestable,
        s.parse_errors,
        s.fragments,
        r.flows,
        s.events,
        r.pair.diffs.len(),
        r.pair.aborts.len()
    );
    let generator = Generator::new(seed, seeds().unwrap_or_default());
    for &i in &r.shown {
        let p = generator.packet(i);
        let mine = |d: &&String| d.starts_with(&format!("frame {i} ")) || d.starts_with(&format!("frame {i}:"));
        println!("model: packet {i} ({}, {} bytes):", p.what, p.data.len());
        for d in r.pair.diffs.iter().chain(&r.pair.aborts).filter(mine) {
            println!("    {d}");
        }
        println!("    bytes:{}", hex(&p.data));
        let batch = i / BATCH * BATCH;
        println!(
            "    replay: cargo xtask model --seed {seed} --from {batch} --packets {} (its batch up to it)",
            i - batch + 1
        );
    }
    for d in r.pair.diffs.iter().filter(|d| !d.starts_with("frame ")).take(SHOWN) {
        println!("model: {d}");
    }
    r.pair.diffs.is_empty() && r.pair.aborts.is_empty()
}

fn var(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| anyhow!("{name}={v}: {e}")),
        Err(_) => Ok(default),
    }
}

/// 20,000 packets, seconds: what the suite runs.
#[test]
fn mutated_packets_agree_with_the_kernel() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let r = run(BOUNDED_SEED, 0, BOUNDED_PACKETS)?;
    let ok = report(BOUNDED_SEED, 0, &r);
    let s = &r.pair.s;
    // The generator reaches what it is meant to: both hooks, parse errors, fragments, events.
    assert!(s.xdp > 1000 && s.tc > 1000 && s.parse_errors > 1000, "{s:?}");
    assert!(s.fragments > 100 && s.events > 1000 && s.too_short > 0, "{s:?}");
    assert!(ok, "kernel and model disagree: {} differences, {} aborts", r.pair.diffs.len(), r.pair.aborts.len());
    Ok(())
}

/// `cargo xtask model`: TRACKER_MODEL_PACKETS (10,000,000), TRACKER_MODEL_SEED, TRACKER_MODEL_FROM.
#[test]
#[ignore = "long: run by `cargo xtask model`"]
fn model_run() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let (packets, seed, from) = (var(PACKETS_VAR, DEFAULT_PACKETS)?, var(SEED_VAR, BOUNDED_SEED)?, var(FROM_VAR, 0)?);
    let r = run(seed, from, packets)?;
    let ok = report(seed, from, &r);
    assert!(ok, "kernel and model disagree: {} differences, {} aborts", r.pair.diffs.len(), r.pair.aborts.len());
    Ok(())
}

/// Why the comparison stays on one CPU, kept true: one flow's packets going up on two CPUs send
/// two first-payload events (each CPU's copy of the entry has its own `payload_sent`), while
/// the folded entry, as the sweep reads it, has the bit once. Should the kernel come to send
/// one per flow direction, this fails, and the pinning in `harness::Pair::new` can go.
#[test]
fn a_flow_on_a_second_cpu_sends_its_first_payload_again() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    if std::thread::available_parallelism()?.get() < 2 {
        println!("skipped: one CPU");
        return Ok(());
    }
    let mut k = Kernel::load()?;
    let pkt = ipv4([10, 77, 0, 2], [203, 0, 113, 10], IPPROTO_UDP, 1, 0, &udp(40_000, 9000, b"first"));
    let mut events = Vec::new();
    for cpu in [0, 1] {
        pin_to(cpu)?;
        k.run(L2_LEN_NONE, true, &pkt)?;
        drain(&mut k.source, cpu as u64, &mut events)?;
    }
    let firsts = events.iter().filter(|e| e.kind == EventKind::FirstPayload).count();
    let flows = k.flows()?;
    let [(_, s)] = flows.as_slice() else { anyhow::bail!("{} flows", flows.len()) };
    assert_eq!((s.packets_up, s.payload_sent, firsts), (2, FLOW_PAYLOAD_UP, 2), "{events:?}");
    Ok(())
}
