//! A fresh Debian root made by debootstrap, for installing the package with apt as a VPN host's
//! owner would: made once for a given suite, variant and package list and kept as a tarball
//! under `target/debian-root/` (a minute or two with the network; later runs unpack it in
//! seconds), unpacked anew for each use, and entered with `chroot`.

use anyhow::{Context as _, Result, ensure};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::cmd::run;

/// Debian 12, what the VPN hosts run.
pub const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Essential packages and apt, nothing more: whatever the package needs beyond them, apt must
/// find from its Depends.
const VARIANT: &str = "minbase";
/// The root's package lists are those of the day it was made: past this age it is made anew,
/// before the mirror drops the versions they name.
const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

/// Where the tarball and the packages apt downloads into roots are kept.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("debian-root")
}

/// The cached root's tarball, its name keyed by what went into it (a change makes a new one).
fn tarball_path() -> PathBuf {
    let key = format!("{SUITE} {VARIANT} {MIRROR}");
    // FNV-1a: stable across Rust versions, unlike std's hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    cache_dir().join(format!("{SUITE}-{VARIANT}-{hash:016x}.tar"))
}

/// How the root was had: made now by debootstrap, or taken from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Made(Duration),
    Cached,
}

/// The tarball of a fresh root, made by debootstrap when missing or older than [`MAX_AGE`].
pub fn root_tarball() -> Result<(PathBuf, Origin)> {
    let tarball = tarball_path();
    let fresh = fs::metadata(&tarball)
        .and_then(|m| m.modified())
        .is_ok_and(|t| SystemTime::now().duration_since(t).is_ok_and(|age| age < MAX_AGE));
    if fresh {
        return Ok((tarball, Origin::Cached));
    }
    let started = std::time::Instant::now();
    let dir = cache_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Per process, then renamed: two test runs at once never see half a tarball.
    let work = dir.join(format!("make-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    run(Command::new("debootstrap").arg(format!("--variant={VARIANT}")).arg(SUITE).arg(&work).arg(MIRROR))
        .context("debootstrap (it needs the Debian mirror)")?;
    // The packages debootstrap installed from: apt's cache, not the root's.
    run(Command::new("chroot").arg(&work).args(["apt-get", "clean"]))?;
    let tmp = tarball.with_extension(format!("tar.{}", std::process::id()));
    run(Command::new("tar").arg("-C").arg(&work).args(["--numeric-owner", "-cf"]).arg(&tmp).arg("."))?;
    fs::rename(&tmp, &tarball)?;
    fs::remove_dir_all(&work)?;
    Ok((tarball, Origin::Made(started.elapsed())))
}

/// A root unpacked from [`root_tarball`] at `at` (emptied first), with this host's resolver so
/// apt in it reaches the mirror.
pub fn unpack(tarball: &Path, at: &Path) -> Result<()> {
    if at.exists() {
        fs::remove_dir_all(at).with_context(|| format!("removing {}", at.display()))?;
    }
    fs::create_dir_all(at)?;
    run(Command::new("tar").arg("-C").arg(at).args(["--numeric-owner", "-xpf"]).arg(tarball))?;
    fs::copy("/etc/resolv.conf", at.join("etc/resolv.conf")).context("copying /etc/resolv.conf")?;
    Ok(())
}

/// `argv` run in `root` by chroot, as root, in a mount namespace of its own: /proc mounted, and
/// apt's package cache bound to [`cache_dir`]'s `archives` so that what apt downloads once is
/// there for the next root (apt still decides what to install). The mounts end with it.
pub fn chroot(root: &Path, argv: &[&str]) -> Result<Command> {
    ensure!(!argv.is_empty(), "nothing to run in {}", root.display());
    let archives = cache_dir().join("archives");
    fs::create_dir_all(archives.join("partial"))?;
    const ENTER: &str = r#"set -e
root=$1; cache=$2; shift 2
mount -t proc proc "$root/proc"
mount --bind "$cache" "$root/var/cache/apt/archives"
exec chroot "$root" "$@""#;
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", ENTER, "sh"]).arg(root).arg(&archives).args(argv);
    c.env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive");
    Ok(c)
}
