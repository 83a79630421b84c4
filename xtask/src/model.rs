//! `cargo xtask model`: the kernel programs against the importer's accounting on millions of random and mutated packets (the long run of `differential::mutated`).

use crate::{build, repo_root, setup};
use anyhow::Result;
use clap::Args;
use std::process::Command;
use tracker_tests::cmd::run_visible;

/// Issue 14's bar: 10 million packets, 0 differences, 0 aborts.
const DEFAULT_PACKETS: u64 = 10_000_000;
/// The seed of the suite's bounded run, so the long run starts with the packets CI checked.
const DEFAULT_SEED: u64 = 14;
/// The test that does the work, in the integration binary (`#[ignore]`d in the suite).
const TEST: &str = "differential::mutated::model_run";

/// What `cargo xtask model` runs.
#[derive(Args)]
pub struct ModelArgs {
    /// Packets to generate and compare.
    #[arg(long, default_value_t = DEFAULT_PACKETS)]
    packets: u64,
    /// The generator's seed: packet i of seed s is always the same bytes.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// The first packet's index (to replay a difference: its batch's start, as the report says).
    #[arg(long, default_value_t = 0)]
    from: u64,
}

pub fn run(args: &ModelArgs) -> Result<()> {
    // Loading programs and BPF_PROG_TEST_RUN need root; checked before setup so the message
    // names this task.
    setup::ensure_root("model")?;
    // build runs setup first, and builds the programs the test loads.
    build::build(true)?;
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(repo_root())
        .env("TRACKER_MODEL_PACKETS", args.packets.to_string())
        .env("TRACKER_MODEL_SEED", args.seed.to_string())
        .env("TRACKER_MODEL_FROM", args.from.to_string())
        .args(["test", "--release", "-p", "tracker-tests", "--test", "integration", "--", TEST])
        .args(["--exact", "--ignored", "--nocapture"]);
    run_visible(&mut cargo)
}
