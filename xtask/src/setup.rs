//! `cargo xtask setup`: installs what building and testing tracker needs on a fresh Debian 12
//! machine that has only rustup's stable and nightly toolchains. Idempotent and silent when
//! everything is present, so every other task can call it first.

use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use tracker_tests::cmd::{run, run_visible};

/// Debian packages for building, the lab and the tests. iputils-ping is for the lab's
/// reachability checks; the rest are tracker's runtime and test tools.
const APT_PACKAGES: &[&str] = &[
    "wireguard-go",
    "wireguard-tools",
    "xdp-tools",
    "bpftool",
    "dnsutils",
    "unbound",
    "iperf3",
    "iproute2",
    "curl",
    "openssl",
    "python3",
    "ethtool",
    "util-linux",
    "procps",
    "socat",
    "iputils-ping",
    // The report page's test opens it in a real browser, headless.
    "chromium",
    // The dashboard's live test drives that browser over WebDriver (tests/tests/integration/
    // webdriver.rs): it watches a page change without a reload.
    "chromium-driver",
    // The lab's SSH and STUN servers and their clients (tests/src/lab/extras.rs). Neither server
    // runs on the host: dropbear-bin has no service, and stun-server's init script starts stund
    // only when /etc/default/stun says START_DAEMON=true (it does not by default). An NTP server
    // would be more telling than STUN, but Debian's (chrony, ntpsec, openntpd) are all
    // `time-daemon`s that would replace the host's systemd-timesyncd.
    "dropbear-bin",
    "openssh-client",
    "stun-server",
    "stun-client",
    // Captures for import-pcap's tests, and tshark (with capinfos, from wireshark-common) as the
    // independent count they are compared with.
    "tcpdump",
    "tshark",
    // The package's tests: `systemd-analyze verify` and `security` on the installed unit,
    // systemd-sysusers for its user, man for its page, and strace for the system calls the
    // daemon makes under the unit's filter. dpkg-deb builds the package (dpkg is essential).
    "systemd",
    "man-db",
    "strace",
    // debootstrap makes the Debian root the package is installed into by apt; setfacl (acl)
    // shows why the package does not grant its user wireguard-go's socket (wg_access.rs).
    "debootstrap",
    "acl",
    // strip for the packaged binary, dpkg-shlibdeps to check the package's Depends.
    "binutils",
    "dpkg-dev",
    // rusqlite links Debian's SQLite, found through pkg-config.
    "libsqlite3-dev",
    "pkg-config",
];

/// bpf-linker must be built against the exact LLVM that nightly's rustc uses.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Another apt may hold the dpkg lock (e.g. unattended upgrades); wait rather than fail.
const APT_LOCK_WAIT: &str = "DPkg::Lock::Timeout=900";

/// Everything: packages, rust-src, bpf-linker.
pub fn all() -> Result<()> {
    ensure_root("setup")?;
    system_packages()?;
    rust_src()?;
    bpf_linker()
}

/// Fails with an explanation unless we are root.
pub fn ensure_root(task: &str) -> Result<()> {
    ensure!(
        tracker_tests::is_root(),
        "`cargo xtask {task}` must run as root (it installs packages and manages network \
         namespaces); try `sudo -E cargo xtask {task}`"
    );
    Ok(())
}

/// The Debian packages only (what the lab needs).
pub fn system_packages() -> Result<()> {
    ensure_root("setup")?;
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    run_visible(Command::new("apt-get").args(["-q", "-o", APT_LOCK_WAIT, "update"]))?;
    // Without --no-install-recommends, wireguard pulls in a whole linux-image.
    run_visible(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-y", "--no-install-recommends", "-o", APT_LOCK_WAIT, "install"])
            .args(&missing),
    )?;
    let still = missing_packages()?;
    ensure!(still.is_empty(), "apt-get did not install: {}", still.join(" "));
    Ok(())
}

/// Packages from [`APT_PACKAGES`] that dpkg does not list as fully installed ("ii").
fn missing_packages() -> Result<Vec<&'static str>> {
    // dpkg-query exits 1 when some package is unknown, so its status is not checked; packages
    // it does not print are the missing ones.
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(APT_PACKAGES)
        .output()
        .context("cannot run dpkg-query (is this Debian?)")?;
    let listed = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name)
        .collect();
    Ok(APT_PACKAGES.iter().copied().filter(|p| !installed.contains(p)).collect())
}

/// rust-src for nightly: the eBPF crate builds `core` for the bpf target from source.
fn rust_src() -> Result<()> {
    let installed = run(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .context("cannot list nightly's components; is the nightly toolchain installed (`rustup toolchain list`)?")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain");
    run_visible(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_version().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let libllvm = nightly_libllvm()?;
    let prefix = llvm_prefix(&libllvm)?;
    let feature = llvm_feature(&libllvm)?;
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's {} (takes about 3 minutes)",
        file_name(&libllvm)
    );
    // --force: a bpf-linker of the right version whose libLLVM vanished (nightly changed)
    // fails `--version` and must be rebuilt, which cargo would otherwise refuse.
    run_visible(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args(["+nightly", "install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--force"])
            .args(["--no-default-features", "--features", &feature]),
    )?;
    match bpf_linker_version() {
        Some(v) if v.contains(BPF_LINKER_VERSION) => Ok(()),
        other => bail!("bpf-linker was installed but `bpf-linker --version` says {other:?}"),
    }
}

/// `bpf-linker --version`, or None if it is missing or cannot start (e.g. its libLLVM is gone).
fn bpf_linker_version() -> Option<String> {
    let output = Command::new("bpf-linker").arg("--version").output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// nightly's `lib/libLLVM.so.*` (e.g. libLLVM.so.22.1-rust-1.97.0-nightly).
fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot = run(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let found = fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| file_name(p).starts_with("libLLVM.so."));
    found.with_context(|| {
        format!("no libLLVM.so.* in {}: cannot build bpf-linker against nightly's LLVM", lib.display())
    })
}

/// A prefix whose `lib/` holds `libLLVM.so` pointing at nightly's libLLVM, which is what
/// bpf-linker's build script looks for. It lives in CARGO_HOME next to the installed
/// bpf-linker because the binary's RUNPATH points into it.
fn llvm_prefix(libllvm: &Path) -> Result<PathBuf> {
    let prefix = cargo_home()?.join("tracker-llvm-prefix");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for dir in [&prefix, &lib] {
        for name in ["libLLVM.so", file_name(libllvm)] {
            let link = dir.join(name);
            // Replace rather than keep: an old link may point at a previous nightly.
            if link.symlink_metadata().is_ok() {
                fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
            }
            std::os::unix::fs::symlink(libllvm, &link)
                .with_context(|| format!("cannot link {} -> {}", link.display(), libllvm.display()))?;
        }
    }
    Ok(prefix)
}

/// bpf-linker's cargo feature for the LLVM major version in the file name, e.g. `llvm-22`.
fn llvm_feature(libllvm: &Path) -> Result<String> {
    let name = file_name(libllvm);
    let major = name
        .strip_prefix("libLLVM.so.")
        .and_then(|rest| rest.split(['.', '-']).next())
        .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM version from {name}"))?;
    Ok(format!("llvm-{major}"))
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_feature_follows_the_library_version() {
        let lib = Path::new("/sysroot/lib/libLLVM.so.22.1-rust-1.97.0-nightly");
        assert_eq!(llvm_feature(lib).unwrap(), "llvm-22");
        let lib = Path::new("/sysroot/lib/libLLVM.so.23-rust-1.99.0-nightly");
        assert_eq!(llvm_feature(lib).unwrap(), "llvm-23");
        assert!(llvm_feature(Path::new("/sysroot/lib/libLLVM.so.x")).is_err());
    }
}
