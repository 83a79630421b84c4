//! `cargo xtask`: the developer entry point of the tracker workspace. Owns the command line and
//! dispatches to one module per task; each task's `--help` explains what it does.

mod bench;
mod build;
mod fuzz;
mod fuzz_seeds;
mod lab;
mod link;
mod model;
mod package;
mod setup;
mod test;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use tracker_tests::lab::DEFAULT_PREFIX;

/// Developer tasks for tracker: install the toolchain, build, run the daemon, try it in a
/// namespace lab, run the tests and the benchmark.
///
/// Start with `cargo xtask setup` (as root), then `cargo xtask test`. To try tracker without a
/// VPN: `cargo xtask lab up`, which prints what to do next.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything tracker needs to build and test (root; idempotent).
    ///
    /// Installs the Debian packages (wireguard-go, wireguard-tools, xdp-tools, bpftool,
    /// iperf3, socat, ...) without recommends, rust-src for the nightly toolchain, and
    /// bpf-linker 0.13.0 built against nightly's own LLVM (about 3 minutes, only the first
    /// time). Prints nothing when everything is present.
    Setup,
    /// Build the tracker binary (runs setup first).
    ///
    /// `cargo build --release -p tracker-user`; its build script compiles the eBPF programs with
    /// nightly and bpf-linker. The binary is target/release/tracker (target/debug/tracker with
    /// --debug). A release build also gets the link /usr/local/bin/tracker, so `tracker` is on
    /// PATH; the link is announced when made or changed, and a /usr/local/bin/tracker that is
    /// not a symlink (a real install) is left alone.
    Build {
        /// Build without optimisations.
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run the daemon: `tracker run ARGS` (in place of this process).
    ///
    /// Builds and links `tracker` onto PATH as `build` does, so the CLI works in another shell.
    /// Arguments after `--` go to `tracker run`, e.g. `cargo xtask run -- --iface wg0`. The
    /// daemon defaults to --iface wg0. Ctrl-C reaches the daemon directly. To run it in the
    /// lab instead, see `cargo xtask lab up`.
    Run {
        /// Arguments for `tracker run`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// A three-namespace lab (phone -> WireGuard -> VPN host -> internet) to try tracker in.
    #[command(subcommand)]
    Lab(LabTask),
    /// Run the whole test suite: setup, release build, then `cargo test --release`.
    ///
    /// Sets TRACKER_BIN to the freshly built target/release/tracker. Arguments after `--` go to
    /// cargo test, e.g. `cargo xtask test -- --test integration lab:: -- --nocapture`.
    /// Tests that need root fail under CI=true and are skipped otherwise when not root.
    Test {
        /// Arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Run the benchmarks (root): `cargo xtask bench [xdp] [lab] [throughput] [flood]`.
    ///
    /// Setup, release build, then `cargo bench -p tracker-tests --bench xdp` and `--bench lab`
    /// (default: both, xdp first). xdp: BPF_PROG_TEST_RUN on a packet of an existing flow,
    /// packets that create flows and a blocked packet, for tracker, xdp-filter (xdp-tools, one
    /// deny rule, in a namespace of its own) and an empty XDP_PASS program. lab, in the
    /// namespace lab: iperf3 through the WireGuard tunnel with the daemon, an empty XDP program
    /// or nothing attached (`throughput`), and 100,000 new UDP flows at 10,000/s with the
    /// daemon running (`flood`). Each prints its method, figures and a table; reports, never
    /// asserts, whether the targets are met.
    Bench(bench::BenchArgs),
    /// Fuzz the parsers of untrusted bytes with cargo-fuzz (libFuzzer, nightly).
    ///
    /// `cargo xtask fuzz [--target NAME]... [--runs N | --seconds S] [--asan]` (root: it runs
    /// setup first, as build does, for the eBPF build of tracker-user). Installs cargo-fuzz if
    /// missing (`cargo +nightly install cargo-fuzz --locked`), seeds the corpora
    /// from ../shared/testdata/pcaps (read in place; skipped when absent) into
    /// target/fuzz-corpus/seeds, builds fuzz/ (release, debug assertions on), then runs each
    /// target alone, bounded (default 10,000,000 executions), with hangs over 10 s and memory
    /// over 2 GiB reported as crashes. Prints a table: executions, seconds, exec/s, corpus size
    /// and crashes per target; crashing inputs are saved under target/fuzz-artifacts/NAME/.
    /// Not part of `cargo xtask test` (whose mutation tests run the same checks on stable).
    Fuzz(fuzz::FuzzArgs),
    /// The kernel programs against the importer's accounting on generated packets (root).
    ///
    /// `cargo xtask model [--packets N] [--seed S] [--from I]`: packets random and mutated from
    /// ../shared/testdata/pcaps (default 10,000,000, seed 14), each through the real XDP or TC
    /// program (BPF_PROG_TEST_RUN) and through import-pcap's accounting, compared packet by
    /// packet and table by table. Prints packets, packets/s, differences and aborts, the first
    /// few with their index, bytes and the command that replays them.
    Model(model::ModelArgs),
    /// Build the Debian package: target/debian/tracker_VERSION_ARCH.deb.
    ///
    /// Release build (setup first, so root), then dpkg-deb on: /usr/bin/tracker, the systemd
    /// unit (/usr/lib/systemd/system/tracker.service, from packaging/), the settings file
    /// /etc/tracker/tracker.toml (a conffile: your edits survive upgrades), the tracker system
    /// user (sysusers.d), the man page tracker(1) made from `--help`, and maintainer scripts
    /// that restart a running service on upgrade, detach on removal and delete the database
    /// only on purge. Reproducible: every date is SOURCE_DATE_EPOCH (default: the commit's
    /// time), so two builds of one commit are the same bytes. On the VPN host:
    /// `apt install ./tracker_*.deb && systemctl enable --now tracker`.
    Package(package::PackageArgs),
    /// Install from this checkout without a package (root): the same service, for source users.
    ///
    /// Release build, then /usr/local/bin/tracker (replacing the link `build` makes), the
    /// unit in /etc/systemd/system (starting /usr/local/bin/tracker), the tracker user, the man
    /// page, and /etc/tracker/tracker.toml unless it exists; then `systemctl daemon-reload`
    /// and a restart if the service runs. Start it with `systemctl enable --now tracker`.
    Install,
}

#[derive(Subcommand)]
enum LabTask {
    /// Build the lab and leave it running in the background (root).
    ///
    /// Namespaces PREFIX-phone, PREFIX-vpn and PREFIX-net: the phone's WireGuard tunnel
    /// (wireguard-go) ends on the VPN host's wg0, which forwards to "the internet", where
    /// 203.0.113.10, 203.0.113.20, 198.51.100.30, 2001:db8:2::10 and 2001:db8:2::20 serve HTTP
    /// on port 80 and UDP echo on port 9000. A lab already up with the same prefix is rebuilt.
    /// Prints example commands: the daemon runs inside PREFIX-vpn, the CLI from anywhere.
    Up {
        /// Names the lab's namespaces and interfaces; only the default gives the VPN
        /// interface the name wg0.
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Tear the lab down, including leftovers of crashed tests with the same prefix (root).
    Down {
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Show the labs present: namespaces, processes inside them, WireGuard state.
    Status,
    /// Internal: builds the lab and holds it until SIGTERM (started by `lab up`).
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        prefix: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Setup => setup::all(),
        Task::Build { debug } => build::build(!debug).map(|bin| println!("built {}", bin.display())),
        Task::Run { args } => build::run(&args),
        Task::Lab(LabTask::Up { prefix }) => lab::up(&prefix),
        Task::Lab(LabTask::Down { prefix }) => lab::down(&prefix),
        Task::Lab(LabTask::Status) => lab::status(),
        Task::Lab(LabTask::Hold { prefix }) => lab::hold(&prefix),
        Task::Test { args } => test::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Model(args) => model::run(&args),
        Task::Package(args) => package::package(&args),
        Task::Install => package::install(),
    }
}

/// The workspace root (xtask lives one level below it).
fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}
