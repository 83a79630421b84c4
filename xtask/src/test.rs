//! `cargo xtask test`: the project's one test command (README and .ci/run use it). Builds the
//! release binary first so the end-to-end tests run the same tracker a user would.

use crate::{build, repo_root};
use anyhow::Result;
use std::ffi::OsString;
use std::process::Command;
use tracker_tests::cmd::run_visible;

pub fn run(args: &[OsString]) -> Result<()> {
    // build runs setup first.
    let bin = build::build_packages(true, build::WORKSPACE)?;
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(repo_root())
        .env("TRACKER_BIN", &bin)
        .args(["test", "--release"])
        .args(build::WORKSPACE)
        .args(args);
    run_visible(&mut cargo)
}
