//! `cargo xtask fuzz`: the cargo-fuzz (libFuzzer) targets in `fuzz/`, one after the other, each
//! for a bounded number of executions or seconds, seeded from the shared captures
//! ([`crate::fuzz_seeds`]), with a table of what each run did. Not part of `cargo xtask test`:
//! it needs nightly and takes minutes per target.

use crate::{fuzz_seeds, repo_root, setup, target_dir};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tracker_tests::cmd::run_visible;

/// Executions per target by default: issue 14's bar for "no crash or hang".
const DEFAULT_RUNS: u64 = 10_000_000;
/// One input running longer than this is a hang (libFuzzer's `-timeout`, seconds). The slowest
/// legitimate input, a capture file at `max_len` read three times, takes milliseconds.
const HANG_SECONDS: u64 = 10;
/// libFuzzer's memory limit for the whole process (`-rss_limit_mb`); a single allocation over
/// it is reported too. The capture reader may buffer one 16 MiB record, the rest far less.
const RSS_LIMIT_MB: u64 = 2048;
/// The toolchain cargo-fuzz runs under (sanitizer flags are nightly-only); `cargo xtask setup`
/// installs it, and it is never updated from here.
const NIGHTLY: &str = "+nightly";

/// What `cargo xtask fuzz` runs.
#[derive(Args)]
pub struct FuzzArgs {
    /// Targets to run, in this order (default: all eight).
    #[arg(long = "target", value_enum)]
    targets: Vec<Target>,
    /// Executions per target (libFuzzer's -runs).
    #[arg(long, conflicts_with = "seconds")]
    runs: Option<u64>,
    /// Seconds per target instead of a number of executions (libFuzzer's -max_total_time).
    #[arg(long)]
    seconds: Option<u64>,
    /// Build with AddressSanitizer: slower, and it finds memory errors in the unsafe code of
    /// dependencies (ring's C and assembly among them) that safe Rust's checks cannot.
    #[arg(long)]
    asan: bool,
}

/// The fuzz targets (`fuzz/fuzz_targets/NAME.rs`), each the body of `tracker::fuzzing::NAME`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// `analysis::dns::parse`, over UDP and TCP.
    Dns,
    /// `analysis::tls::client_hello_sni`.
    #[value(name = "tls_client_hello")]
    TlsClientHello,
    /// `analysis::http::http_host`.
    #[value(name = "http_host")]
    HttpHost,
    /// `analysis::quic::initial_sni`, on datagrams and on frames it protects itself.
    #[value(name = "quic_initial")]
    QuicInitial,
    /// `source::capture`: the pcap/pcapng reader and the importer's counting.
    Capture,
    /// `rules::blocklist::parse`.
    Blocklist,
    /// `analysis::entity::EntityTable` from TOML (`--entities FILE`).
    Entities,
    /// `cli::config`: the configuration file (`tracker.toml`) turned into options.
    Config,
    /// `store::packed*`: the packed days' blobs read back (a damaged database file).
    Packed,
}

pub const ALL: [Target; 9] = [
    Target::Dns,
    Target::TlsClientHello,
    Target::HttpHost,
    Target::QuicInitial,
    Target::Capture,
    Target::Blocklist,
    Target::Entities,
    Target::Config,
    Target::Packed,
];

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Dns => "dns",
            Target::TlsClientHello => "tls_client_hello",
            Target::HttpHost => "http_host",
            Target::QuicInitial => "quic_initial",
            Target::Capture => "capture",
            Target::Blocklist => "blocklist",
            Target::Entities => "entities",
            Target::Config => "config",
            Target::Packed => "packed",
        }
    }

    /// Largest input libFuzzer makes (`-max_len`). The kernel hands the payload parsers at most
    /// 1280 bytes; 4 KiB leaves room past that. A capture of 8 KiB holds several frames, a list
    /// of 4 KiB a hundred lines, 8 KiB the built-in entity table; larger inputs only slow each
    /// execution down (the parsers' cost grows with them, their code paths do not).
    fn max_len(self) -> usize {
        match self {
            Target::Capture | Target::Entities => 8 << 10,
            _ => 4 << 10,
        }
    }
}

/// One target's run, as the table shows it.
struct Outcome {
    target: Target,
    executions: u64,
    seconds: f64,
    corpus: usize,
    /// Crash, hang and out-of-memory inputs libFuzzer saved in this run.
    findings: Vec<PathBuf>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let targets = if args.targets.is_empty() { ALL.to_vec() } else { args.targets.clone() };
    let bound = match (args.runs, args.seconds) {
        (_, Some(s)) => format!("-max_total_time={s}"),
        (runs, None) => format!("-runs={}", runs.unwrap_or(DEFAULT_RUNS)),
    };
    // tracker-user's build script compiles the eBPF programs (nightly, bpf-linker, rust-src).
    setup::all()?;
    ensure_cargo_fuzz()?;
    let corpus_root = target_dir().join("fuzz-corpus");
    fuzz_seeds::write(&repo_root(), &corpus_root.join("seeds"))?;
    let fuzz_target_dir = target_dir().join("fuzz");
    build(&fuzz_target_dir, args.asan)?;

    let sanitizer_dir = if args.asan { "asan" } else { "none" };
    let bins = fuzz_target_dir.join(sanitizer_dir).join("x86_64-unknown-linux-gnu/release");
    let mut outcomes = Vec::new();
    for &target in &targets {
        outcomes.push(run_target(target, &bins, &corpus_root, &bound)?);
    }
    print_table(&outcomes, args.asan);
    let found: Vec<_> = outcomes.iter().flat_map(|o| &o.findings).collect();
    if !found.is_empty() {
        let list: Vec<_> = found.iter().map(|p| p.display().to_string()).collect();
        bail!("libFuzzer saved inputs that crashed, hung or ran out of memory: {}", list.join(", "));
    }
    Ok(())
}

/// Installs cargo-fuzz with the nightly toolchain unless it is there already.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args([NIGHTLY, "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("installing cargo-fuzz (once, about 2 minutes)");
    run_visible(Command::new("cargo").args([NIGHTLY, "install", "cargo-fuzz", "--locked"]))
}

/// Builds every target: release with debug assertions and overflow checks (cargo-fuzz's
/// default), and without a sanitizer unless asked: tracker's code and most of its dependencies
/// are safe Rust, where a sanitizer only slows the search. All eight in one cargo run, so
/// tracker-user is compiled once even while its sources change under it.
fn build(fuzz_target_dir: &Path, asan: bool) -> Result<()> {
    let sanitizer = if asan { "address" } else { "none" };
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(repo_root())
        .args([NIGHTLY, "fuzz", "build", "--fuzz-dir", "fuzz", "--sanitizer", sanitizer, "--target-dir"])
        // One directory per sanitizer: switching does not rebuild everything each time.
        .arg(fuzz_target_dir.join(sanitizer));
    run_visible(&mut cargo)
}

fn run_target(target: Target, bins: &Path, corpus_root: &Path, bound: &str) -> Result<Outcome> {
    let name = target.name();
    let corpus = corpus_root.join(name);
    let seeds = corpus_root.join("seeds").join(name);
    let artifacts = target_dir().join("fuzz-artifacts").join(name);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let before = findings(&artifacts)?;
    let log_path = target_dir().join("fuzz-artifacts").join(format!("{name}.log"));
    let log = fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    println!("fuzzing {name} ({bound}); libFuzzer's output goes to {}", log_path.display());
    let mut fuzzer = Command::new(bins.join(name));
    fuzzer
        .arg(bound)
        .arg(format!("-timeout={HANG_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-max_len={}", target.max_len()))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        // New inputs go to the first directory; the seeds beside it are only read.
        .arg(&corpus)
        .arg(&seeds)
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let status = fuzzer.status().with_context(|| format!("cannot start {}", bins.join(name).display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let executions = final_stat(&text, "stat::number_of_executed_units:").unwrap_or(0);
    let findings: Vec<PathBuf> = findings(&artifacts)?.into_iter().filter(|p| !before.contains(p)).collect();
    if !status.success() && findings.is_empty() {
        bail!("{name}: libFuzzer failed ({status}) without saving an input; see {}", log_path.display());
    }
    let corpus = fs::read_dir(&corpus)?.count();
    Ok(Outcome { target, executions, seconds, corpus, findings })
}

/// The inputs libFuzzer saved under `dir`: crash-, timeout-, oom- and leak- files.
fn findings(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if ["crash-", "timeout-", "oom-", "leak-"].iter().any(|p| file.starts_with(p)) {
            out.push(path);
        }
    }
    Ok(out)
}

/// The number after `key` in libFuzzer's final statistics.
fn final_stat(log: &str, key: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok())
}

fn print_table(outcomes: &[Outcome], asan: bool) {
    let sanitizer = if asan { "AddressSanitizer" } else { "no sanitizer" };
    println!("\ncargo-fuzz, release with debug assertions, {sanitizer}, one process:");
    println!(
        "{:<18} {:>12} {:>9} {:>10} {:>8} {:>8}",
        "target", "executions", "seconds", "exec/s", "corpus", "crashes"
    );
    for o in outcomes {
        let rate = if o.seconds > 0.0 { o.executions as f64 / o.seconds } else { 0.0 };
        println!(
            "{:<18} {:>12} {:>9.0} {:>10.0} {:>8} {:>8}",
            o.target.name(),
            o.executions,
            o.seconds,
            rate,
            o.corpus,
            o.findings.len()
        );
    }
}
