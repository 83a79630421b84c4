//! `cargo xtask package` and `cargo xtask install`: the Debian package, and the same files
//! installed from a source checkout; what goes where is `tracker_tests::package`'s.

use crate::{build, repo_root, setup, target_dir};
use anyhow::{Context as _, Result, ensure};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use tracker_tests::cmd::{run, run_visible};
use tracker_tests::package::{self, Package};

#[derive(Args)]
pub struct PackageArgs {
    /// Debian version of the package (default: tracker-user's version with revision 1, e.g.
    /// 0.1.0-1).
    #[arg(long)]
    version: Option<String>,
    /// Directory the .deb is written to.
    #[arg(long, default_value_os_t = target_dir().join("debian"))]
    out: PathBuf,
    /// Package target/release/tracker as it is, without building it first.
    #[arg(long)]
    no_build: bool,
}

/// Builds the release binary, then the package from it.
pub fn package(args: &PackageArgs) -> Result<()> {
    let bin = if args.no_build {
        let bin = target_dir().join("release/tracker");
        ensure!(bin.is_file(), "{} does not exist: build it (cargo xtask build) or drop --no-build", bin.display());
        bin
    } else {
        build::build_packages(true, &["-p", "tracker-user"])?
    };
    let version = match &args.version {
        Some(v) => v.clone(),
        None => format!("{}-1", crate_version()?),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let deb = Package { bin, version, source_date_epoch: source_date_epoch()? }.build(&args.out)?;
    println!("built {}", deb.display());
    println!("install it on the VPN host: apt install ./{}", deb.file_name().unwrap_or_default().to_string_lossy());
    Ok(())
}

/// Builds the release binary and installs it with the unit, the user and the settings file
/// (kept when present), then has systemd read the unit; a running service is restarted.
pub fn install() -> Result<()> {
    setup::ensure_root("install")?;
    let bin = build::build_packages(true, &["-p", "tracker-user"])?;
    for path in package::install_from_source(&bin, &crate_version()?, Path::new("/"))? {
        println!("installed {}", path.display());
    }
    run_visible(Command::new("systemd-sysusers").arg("tracker.conf"))?;
    if !Path::new("/run/systemd/system").is_dir() {
        println!("systemd is not running here: the unit takes effect when it does");
        return Ok(());
    }
    run_visible(Command::new("systemctl").arg("daemon-reload"))?;
    run_visible(Command::new("systemctl").args(["try-restart", "tracker.service"]))?;
    println!("start it, now and at every boot: systemctl enable --now tracker");
    Ok(())
}

/// tracker-user's `version` from its Cargo.toml.
fn crate_version() -> Result<String> {
    let manifest = repo_root().join("tracker-user/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let line = text.lines().find(|l| l.starts_with("version = ")).context("no version in tracker-user/Cargo.toml")?;
    let version = line.trim_start_matches("version = ").trim_matches('"').to_owned();
    ensure!(!version.is_empty(), "empty version in tracker-user/Cargo.toml");
    Ok(version)
}

/// `$SOURCE_DATE_EPOCH`, else the time of the commit checked out.
fn source_date_epoch() -> Result<u64> {
    if let Some(v) = std::env::var_os("SOURCE_DATE_EPOCH") {
        return v.to_string_lossy().parse().context("SOURCE_DATE_EPOCH is not a number of seconds");
    }
    let out = run(Command::new("git").current_dir(repo_root()).args(["log", "-1", "--format=%ct"]))?;
    out.trim().parse().with_context(|| format!("git log gave {out:?} for the commit time"))
}
