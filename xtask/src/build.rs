//! `cargo xtask build` and `cargo xtask run`: building the tracker binary (whose build script
//! builds the eBPF programs) and running the daemon from it.

use crate::{link, repo_root, setup, target_dir};
use anyhow::{Result, ensure};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use tracker_tests::cmd::run_visible;

/// Packages of `cargo build`/`cargo test` for the whole workspace. tracker-ebpf is a
/// bpfel-only crate: tracker-user's build script builds it with nightly, and compiling it for
/// the host (as --workspace alone would) cannot work.
pub const WORKSPACE: &[&str] = &["--workspace", "--exclude", "tracker-ebpf"];

/// Runs setup, builds tracker-user and returns the path of the `tracker` binary. A release
/// build is also linked from /usr/local/bin, so `tracker` is on PATH as README uses it.
pub fn build(release: bool) -> Result<PathBuf> {
    let bin = build_packages(release, &["-p", "tracker-user"])?;
    if release {
        link::put_on_path(&bin);
    }
    Ok(bin)
}

/// Runs setup, builds `packages` (cargo's package selection arguments, which include
/// tracker-user) and returns the path of the `tracker` binary.
///
/// The test command builds with the same selection it tests with: cargo unifies features over
/// the packages selected, so building tracker-user alone and then testing the workspace would
/// compile tracker-common and tracker-user twice.
pub fn build_packages(release: bool, packages: &[&str]) -> Result<PathBuf> {
    setup::all()?;
    let mut cargo = Command::new("cargo");
    cargo.current_dir(repo_root()).arg("build").args(packages);
    if release {
        cargo.arg("--release");
    }
    run_visible(&mut cargo)?;
    let bin = target_dir().join(if release { "release" } else { "debug" }).join("tracker");
    ensure!(bin.is_file(), "cargo build succeeded but {} does not exist", bin.display());
    Ok(bin)
}

/// Builds, then becomes `tracker run ARGS`, so the terminal's Ctrl-C goes to the daemon itself
/// rather than to a parent that would have to forward it.
pub fn run(args: &[OsString]) -> Result<()> {
    let bin = build(true)?;
    let err = Command::new(&bin).arg("run").args(args).exec();
    Err(anyhow::Error::new(err).context(format!("cannot exec {} run", bin.display())))
}
