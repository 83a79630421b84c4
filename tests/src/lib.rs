//! tracker's test harness: the namespace lab ([`lab`]) that the integration tests in `tests/`
//! and `cargo xtask lab` build, its DNS zone ([`zone`], also the tests' ground truth), crafted
//! hostile DNS messages ([`hostile_dns`]), packets built byte by byte ([`packet`]) and generated
//! at random or mutated from real ones ([`mutate`]), plus helpers for running commands ([`cmd`]),
//! handling foreign processes ([`procs`]), BPF_PROG_TEST_RUN on any program fd ([`testrun`]), deciding whether a privileged test may run, and the
//! benchmarks' [`median`]. The Debian package's files and build ([`package`]) live here too, so
//! `cargo xtask package` and the package tests build the same package, and the tests install it
//! into a fresh Debian root ([`debian`]).

pub mod cmd;
pub mod debian;
pub mod flood;
pub mod hostile_dns;
pub mod lab;
pub mod mutate;
pub mod package;
pub mod packet;
pub mod procs;
pub mod quiet;
pub mod rng;
pub mod testrun;
pub mod zone;

pub use cmd::ChildGuard;
pub use flood::{Flood, FloodReport};
pub use lab::{Lab, LabNames, Ns};

use std::path::PathBuf;

/// Whether we run as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The third-party robustness captures: `TRACKER_PCAPS`, else `shared/testdata/pcaps` beside
/// the repository. Absent in a user's clone (they live beside the repository, not in it): then
/// it prints that the test skipped them, and returns `None`.
pub fn shared_pcaps_or_skip() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("TRACKER_PCAPS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/pcaps"),
        std::path::PathBuf::from,
    );
    if !dir.is_dir() {
        println!("skipped: {} not found", dir.display());
        return None;
    }
    Some(dir)
}

/// For tests that need root: true when they may run. Without root it prints
/// "skipped: needs root" and returns false, except under CI (`CI=true`), where skipping would
/// hide a broken setup, so it panics instead.
pub fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "this test needs root, and CI=true forbids skipping it");
    println!("skipped: needs root");
    false
}

/// The tracker binary under test: `$TRACKER_BIN` (set by `cargo xtask test`), else
/// `target/release/tracker` in this workspace.
pub fn tracker_bin() -> PathBuf {
    std::env::var_os("TRACKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracker"))
}

/// The median of `v` (the mean of the middle two for an even count; NaN for none): what the
/// benchmarks report of their rounds, robust to a round a busy VM slowed down.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
