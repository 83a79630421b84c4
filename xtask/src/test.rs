//! `cargo xtask test`: the project's one test command (README and .ci/run use it). Builds the
//! release binary first so the end-to-end tests run the same tracker a user would.

use crate::{build, repo_root};
use anyhow::Result;
use std::ffi::OsString;
use std::process::Command;
use tracker_tests::cmd::run_visible;

pub fn run(args: &[OsString]) -> Result<()> {
    // build runs setup first.
    let bin = build::build(true)?;
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(repo_root())
        .env("TRACKER_BIN", &bin)
        // tracker-ebpf is a bpfel-only crate: tracker-user's build script builds it with
        // nightly, and compiling it for the host (as --workspace alone would) cannot work.
        .args([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "tracker-ebpf",
        ])
        .args(args);
    run_visible(&mut cargo)
}
