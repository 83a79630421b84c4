//! The swap section's statistics (each window against its neighbours, a block-bootstrap
//! interval of the median) and its report.

use tracker_tests::{
    lab::{IPERF_PORT, IPERF_V4},
    median,
};

use super::{
    COUNTED_BAND, DEFAULT_SWEEP, EMPTY_PROG, EMPTY_TC_PROG, Run, SETTLE, TAIL, THROUGHPUT_TARGET, WARMUP, WINDOW,
    windows,
};

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Prog {
    Tracker,
    Empty,
}

impl Prog {
    pub fn name(self) -> &'static str {
        match self {
            Prog::Tracker => "tracker",
            Prog::Empty => "empty",
        }
    }
}

pub(super) struct Window {
    pub prog: Prog,
    /// The receiver's rate over the measured part, Gbit/s of IP bytes.
    pub gbps: f64,
}

/// Moving-block bootstrap of the median: resamples, block length, confidence, fixed seed (the
/// figures of one run are reproducible from its windows).
const RESAMPLES: usize = 10_000;
const BLOCK: usize = 6;
const CONFIDENCE: f64 = 0.95;
const SEED: u64 = 0x0074_7261_636b_6572;
/// A method resolves 2 % when its interval is at most this wide on each side.
const RESOLUTION: f64 = 0.02;

/// Each interior window against the mean of its two neighbours (of the other kind): tracker /
/// empty either way.
fn ratios(w: &[Window]) -> Vec<f64> {
    w.windows(3)
        .map(|t| {
            let around = (t[0].gbps + t[2].gbps) / 2.0;
            match t[1].prog {
                Prog::Tracker => t[1].gbps / around,
                Prog::Empty => around / t[1].gbps,
            }
        })
        .collect()
}

/// splitmix64: a small, seeded generator for the bootstrap's block starts.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The CONFIDENCE interval of the median of `r` by moving-block bootstrap: neighbouring ratios
/// share windows, so blocks of them are resampled together.
fn bootstrap(r: &[f64]) -> (f64, f64) {
    // At least two blocks' worth of choice even for a short run.
    let (n, block) = (r.len(), BLOCK.min(r.len() / 2).max(1));
    let mut state = SEED;
    let mut medians = Vec::with_capacity(RESAMPLES);
    let mut sample = Vec::with_capacity(n + block);
    for _ in 0..RESAMPLES {
        sample.clear();
        while sample.len() < n {
            let start = (next(&mut state) % (n - block + 1) as u64) as usize;
            sample.extend_from_slice(&r[start..start + block]);
        }
        sample.truncate(n);
        medians.push(median(&sample));
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((q * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    (at((1.0 - CONFIDENCE) / 2.0), at((1.0 + CONFIDENCE) / 2.0))
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)]
}

/// Median [min-max] and coefficient of variation of one kind of window's rates.
fn spread(w: &[Window], p: Prog) -> String {
    let v: Vec<f64> = w.iter().filter(|w| w.prog == p).map(|w| w.gbps).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
    format!("{:.3} [{:.3}-{:.3}], CV {:.1} %", median(&v), quantile(&v, 0.0), quantile(&v, 1.0), 100.0 * sd / mean)
}

pub(super) fn report(runs: &[Run], quiet: &str, swaps: u32) {
    println!("\n## Throughput by program swap: tracker's programs against empty ones in the daemon's links\n");
    println!("Method:");
    for line in method() {
        println!("{line}");
    }
    println!("- 1-minute load average before measuring: {quiet}; at each direction's start: {}.", {
        let l: Vec<String> = runs.iter().map(|r| format!("{} {}", r.dir.name(), r.load)).collect();
        l.join(", ")
    });
    println!("- Swaps made, each read back from both links: {swaps}.");
    println!(
        "\n| direction | windows | tracker Gbit/s, median [range], CV | empty Gbit/s, median [range], CV \
         | ratio median | 95 % CI | ratio IQR | iperf3 Gbit/s (whole run) | tracker counted / passed its hook |"
    );
    println!("|---|---:|---|---|---:|---|---|---:|---:|");
    let mut verdicts = Vec::new();
    for r in runs {
        let q = ratios(&r.windows);
        let (m, (lo, hi)) = (median(&q), bootstrap(&q));
        println!(
            "| {} | {} | {} | {} | {m:.4} | {lo:.4}-{hi:.4} | {:.3}-{:.3} | {:.3} | {:.3} |",
            r.dir.name(),
            r.windows.len(),
            spread(&r.windows, Prog::Tracker),
            spread(&r.windows, Prog::Empty),
            quantile(&q, 0.25),
            quantile(&q, 0.75),
            r.iperf_gbps,
            r.counted as f64 / r.under_tracker.max(1) as f64
        );
        verdicts.push((r.dir, m, lo, hi));
    }
    println!(
        "\nCost at the hooks, from the kernel's run-time statistics (BPF_ENABLE_STATS) over each run, beside the \
         machine's busy CPU time (/proc/stat, both cores) per packet that ran either kind of program:\n"
    );
    println!(
        "| direction | tracker ns/run (runs) | empty ns/run (runs) | tracker beyond empty, ns/packet | machine CPU ns/packet \
         | machine busy | tracker's share of the CPU | throughput bound |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut bounds = Vec::new();
    for r in runs {
        let c = &r.cost;
        let per = |s: &super::ProgStats| s.ns as f64 / s.runs.max(1) as f64;
        let beyond = (per(&c.tracker) - per(&c.empty)).max(0.0);
        let packets = c.tracker.runs + c.empty.runs;
        let cpu_per_packet = c.busy_ns as f64 / packets.max(1) as f64;
        let share = beyond / cpu_per_packet;
        bounds.push((r.dir, 1.0 - share));
        println!(
            "| {} | {:.0} ({}) | {:.0} ({}) | {beyond:.0} | {cpu_per_packet:.0} | {:.1} % | {:.3} % | >= {:.4} |",
            r.dir.name(),
            per(&c.tracker),
            c.tracker.runs,
            per(&c.empty),
            c.empty.runs,
            100.0 * c.busy_ns as f64 / c.cores_ns.max(1) as f64,
            share * 100.0,
            1.0 - share
        );
    }
    println!("\nTargets:");
    for (dir, bound) in bounds {
        println!(
            "- {}: the programs' own cost bounds tracker / empty at >= {bound:.4} while the tunnel is CPU-bound: \
             target {THROUGHPUT_TARGET} {}",
            dir.name(),
            if bound >= THROUGHPUT_TARGET { "met" } else { "not met" }
        );
    }
    for (dir, m, lo, hi) in verdicts {
        let met = if lo >= THROUGHPUT_TARGET {
            "yes (the whole interval)"
        } else if hi < THROUGHPUT_TARGET {
            "no (the whole interval is below)"
        } else {
            "not shown (the interval straddles it)"
        };
        let resolves = (hi - m).max(m - lo) <= RESOLUTION;
        println!(
            "- {}: tracker / empty >= {THROUGHPUT_TARGET}: median {m:.4}, 95 % CI {lo:.4}-{hi:.4}, met: {met}; \
             resolves {:.0} %: {}",
            dir.name(),
            RESOLUTION * 100.0,
            if resolves { "yes" } else { "no" }
        );
    }
}

/// Where the report's method lines get the constants they cite.
fn method() -> Vec<String> {
    vec![
        format!(
            "- The daemon (`tracker run`, own --db and --pin-dir, default settings, sweep every \
             {DEFAULT_SWEEP:?}) runs throughout. One iperf3 run per direction (TCP, one stream, phone \
             to {IPERF_V4}:{IPERF_PORT}, up, then down with -R): {WARMUP:?} warm-up, {} windows of \
             {WINDOW:?}, {TAIL:?} tail.",
            windows()
        ),
        format!(
            "- Each window starts with BPF_LINK_UPDATE (BPF_F_REPLACE) of both pinned links (XDP, TCX \
             egress), alternating tracker's programs and the empty {EMPTY_PROG} / {EMPTY_TC_PROG}; each \
             link's prog_id is read back after every swap. Rate: the receiver's interface rx bytes (IP \
             bytes) from /proc/PID/net/dev of a process in its namespace, from {SETTLE:?} after the swap \
             to the window's end."
        ),
        format!(
            "- Ratio per window: tracker's rate over the mean of its two empty neighbours, or the mean of \
             an empty window's two tracker neighbours over its rate. Median ratio with a moving-block \
             bootstrap 95 % interval. Target: tracker / empty >= {THROUGHPUT_TARGET}. Tracker's flows must \
             hold {}-{}× the IP bytes that passed the VPN interface (its rx up, tx down, from /proc/net/dev) \
             while its programs were in.",
            COUNTED_BAND.0, COUNTED_BAND.1
        ),
    ]
}
