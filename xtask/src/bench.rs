//! `cargo xtask bench`: what tracker's XDP program costs per packet, next to xdp-filter and an
//! empty program (tests/benches/xdp.rs says how it measures). Builds first, like every task that
//! runs tracker, so the benchmark runs the programs a user would get.

use crate::{build, repo_root, setup};
use anyhow::Result;
use std::process::Command;
use tracker_tests::cmd::run_visible;

pub fn run() -> Result<()> {
    // Checked before setup so the message names this task; the benchmark needs root anyway to
    // load programs and create its network namespace.
    setup::ensure_root("bench")?;
    // build runs setup first.
    build::build(true)?;
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(repo_root())
        // The bench profile inherits release: it reuses what the build above compiled.
        .args(["bench", "-p", "tracker-tests", "--bench", "xdp"]);
    run_visible(&mut cargo)
}
