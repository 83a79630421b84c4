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
//!
//! [`harness`] holds the machinery (the programs, the importer, the comparison one frame at a
//! time), [`built`] the captures built here, and [`mutated`] the same comparison over millions of
//! generated packets, random and mutated from the robustness captures
//! (`tracker_tests::mutate`), also run long by `cargo xtask model`.

mod built;
mod harness;
mod mutated;

use std::{path::PathBuf, time::Instant};

use anyhow::{Result, anyhow};
use tracker::source::capture::file::CaptureReader;

use harness::{MIN_TEST_RUN, Pair, Summary, test_run_limit};

/// Disagreements printed per capture; the rest are counted.
const SHOWN: usize = 25;

/// Runs one capture through both sides, in file order; the disagreements and aborts,
/// described, and what was compared.
fn compare_capture(name: &str, bytes: &[u8], limit: usize) -> Result<(Summary, Vec<String>)> {
    let mut pair = Pair::new(name, limit)?;
    let mut reader = CaptureReader::new(name, bytes).map_err(|e| anyhow!("{e}"))?;
    loop {
        match reader.next_frame() {
            Ok(Some(f)) => pair.step(&f)?,
            Ok(None) => break,
            Err(e) => {
                pair.s.read_error = Some(e.to_string());
                break;
            }
        }
    }
    pair.s.flows = pair.compare_tables(false)?;
    pair.compare_counters()?;
    pair.compare_events();
    let Pair { s, mut diffs, aborts, .. } = pair;
    diffs.extend(aborts.into_iter().map(|a| format!("aborted: {a}")));
    Ok((s, diffs))
}

/// Captures by name: their files' names and bytes.
type Captures = Vec<(String, Vec<u8>)>;

/// The robustness captures (every file of `../shared/testdata/pcaps` or `TRACKER_PCAPS` but the
/// manifest), by name; `None` (said) where that folder is absent.
fn shared_captures() -> Result<Option<Captures>> {
    let Some(dir) = tracker_tests::shared_pcaps_or_skip() else { return Ok(None) };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.is_file() && p.extension().is_none_or(|e| e != "txt"));
    files.sort();
    let captures: Captures = files
        .iter()
        .map(|p| Ok((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), std::fs::read(p)?)))
        .collect::<Result<_>>()?;
    assert!(captures.len() >= 10, "{} captures in {}", captures.len(), dir.display());
    Ok(Some(captures))
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
    // The captures built here run everywhere.
    let Some(captures) = shared_captures()? else { return Ok(()) };
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
