//! `cargo xtask bench`: tracker's benchmarks. `xdp` (tests/benches/xdp.rs) measures the XDP
//! program's cost per packet next to xdp-filter and an empty program; `lab` (tests/benches/lab.rs)
//! runs tracker on the namespace lab's real WireGuard tunnel: iperf3 throughput with the daemon,
//! an empty XDP program or nothing attached, the same by swapping tracker's and empty programs
//! in the daemon's links within one iperf3 run, a flood of new UDP flows, and the daemon's CPU
//! when idle with full flow tables; `report` (tests/benches/report.rs) times `tracker report` over
//! 10,000,000 generated flows against a naive GROUP BY, and the roll-ups' cost per sweep;
//! `import` (tests/benches/import.rs) times `tracker import-pcap` on a generated capture of over
//! 1,000,000 packets beside `tshark -q -z conv,ip` on the same file; `rules` (tests/benches/rules.rs)
//! the XDP program's cost with 100,000 name and 100,000 address rules beside none; `storage`
//! (tests/benches/storage.rs) bytes on disk per flow kept in a household's steady state, per table
//! and index, beside the version-7 layout. Builds first, like every
//! task that runs tracker, so the benchmarks run the programs a user would get.

use crate::{build, repo_root, setup};
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use std::process::Command;
use tracker_tests::cmd::run_visible;

/// What `cargo xtask bench` runs.
#[derive(Args)]
pub struct BenchArgs {
    /// Benchmarks to run, in the order given (default: xdp, rules, lab, report, import, then
    /// storage).
    /// `throughput`, `swap`, `flood`, `idle`, `dns` and `dashboard` are the sections of `lab`, to
    /// run one alone.
    #[arg(value_enum)]
    benches: Vec<Which>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    /// The XDP program's cost per packet (BPF_PROG_TEST_RUN) against xdp-filter and an empty
    /// program.
    Xdp,
    /// The six lab sections, throughput, swap, flood, idle, dns, then dashboard (about 15
    /// minutes, and swap first waits for a quiet machine).
    Lab,
    /// The lab's iperf3 throughput through the tunnel: tracker, empty XDP, nothing.
    Throughput,
    /// The lab's throughput by program swap: one iperf3 run per direction while tracker's and
    /// empty programs alternate in the daemon's pinned links; each window against its neighbours.
    /// Waits (at most 30 minutes) for a 1-minute load average below 0.6 first.
    Swap,
    /// The lab's flood: 100,000 new UDP flows at 10,000/s with the daemon running.
    Flood,
    /// The lab's idle cost: the daemon's CPU over a minute with empty and with full tables.
    Idle,
    /// The lab's DNS: a query for a blocked name answered by the kernel beside the same query
    /// answered by the resolver, from the phone through the tunnel.
    Dns,
    /// `tracker report` over 10,000,000 generated flows (cached under target/bench-report after
    /// the first run) against a naive GROUP BY, and the roll-up triggers' cost per sweep.
    Report,
    /// `tracker import-pcap` on a generated capture of over 1,000,000 packets (cached under
    /// target/bench-import) against `tshark -q -z conv,ip` on the same file, in alternating
    /// rounds (TRACKER_IMPORT_ROUNDS, default 3) after waiting (at most 10 minutes) for a
    /// 1-minute load average below 0.8.
    Import,
    /// The XDP program's cost per packet with 100,000 name rules and 100,000 address rules
    /// loaded, beside the same program without rules; and a DNS query the kernel answers.
    Rules,
    /// The lab's dashboard: the first page from the phone on 1,000,000 flows (target < 300 ms,
    /// < 200 KB) and the daemon's costs with a dashboard open beside none.
    Dashboard,
    /// Bytes on disk per flow kept after a household's month (pruned, vacuumed), per table and
    /// index, beside the same rows in the version-7 layout; target 120.
    Storage,
}

impl Which {
    /// The cargo bench target and the arguments for it.
    fn target(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Which::Xdp => ("xdp", &[]),
            Which::Lab => ("lab", &[]),
            Which::Throughput => ("lab", &["throughput"]),
            Which::Swap => ("lab", &["swap"]),
            Which::Flood => ("lab", &["flood"]),
            Which::Idle => ("lab", &["idle"]),
            Which::Dns => ("lab", &["dns"]),
            Which::Dashboard => ("lab", &["dashboard"]),
            Which::Report => ("report", &[]),
            Which::Import => ("import", &[]),
            Which::Rules => ("rules", &[]),
            Which::Storage => ("storage", &[]),
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    // Checked before setup so the message names this task; the benchmarks need root anyway to
    // load programs and create network namespaces.
    setup::ensure_root("bench")?;
    // build runs setup first.
    build::build(true)?;
    let mut chosen = args.benches.clone();
    if chosen.is_empty() {
        chosen = vec![Which::Xdp, Which::Rules, Which::Lab, Which::Report, Which::Import, Which::Storage];
    }
    chosen.dedup();
    // Each benchmark runs even when an earlier one failed: they measure independent things.
    let mut failed = Vec::new();
    for which in chosen {
        let (target, bench_args) = which.target();
        let mut cargo = Command::new("cargo");
        cargo
            .current_dir(repo_root())
            // The bench profile inherits release: it reuses what the build above compiled.
            .args(["bench", "-p", "tracker-tests", "--bench", target]);
        if !bench_args.is_empty() {
            cargo.arg("--").args(bench_args);
        }
        if let Err(err) = run_visible(&mut cargo) {
            eprintln!("error: {err:#}");
            failed.push([&[target], bench_args].concat().join(" "));
        }
    }
    if !failed.is_empty() {
        bail!("benchmark(s) failed: {}", failed.join(", "));
    }
    Ok(())
}
