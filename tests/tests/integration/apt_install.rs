//! The Debian package installed by apt into a fresh Debian root (issue 14's packaging test), as
//! a VPN host's owner installs it: a minimal bookworm made by debootstrap (cached under
//! `target/debian-root/`, [`tracker_tests::debian`]), `apt-get install ./tracker_*.deb` in it,
//! so apt itself finds and installs what the package's Depends name (systemd and SQLite are
//! not in the root before). Then, inside the root: the files, the units passing
//! `systemd-analyze verify`, the system user made by systemd-sysusers, `tracker --version`
//! running on the root's own libraries; `apt-get remove` keeps the database, `apt-get purge`
//! deletes it. The package's Depends are checked
//! against what dpkg-shlibdeps finds the binary needs. Root only, and the Debian mirror for
//! the first run; under CI=true it never skips.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, Result, ensure};
use tracker_tests::{
    cmd,
    debian::{self, Origin},
    package::{self, Package},
    tracker_bin,
};

use crate::common::Scratch;

/// Any fixed time: the package's dates.
const EPOCH: u64 = 1_796_601_600;
const VERSION: &str = "0.1.0-1";

/// `argv` in the root, which must succeed; its output.
fn inside(root: &Path, argv: &[&str]) -> Result<String> {
    cmd::run(&mut debian::chroot(root, argv)?).with_context(|| format!("{argv:?} in the Debian root"))
}

/// dpkg's status of `name` in the root ("ii" installed, "rc" removed with its conffiles), or
/// `None` when dpkg has never heard of it.
fn status(root: &Path, name: &str) -> Result<Option<String>> {
    let out = debian::chroot(root, &["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", name])?.output()?;
    Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// The package names of a Depends field, without versions or alternatives.
fn names(depends: &str) -> Vec<&str> {
    depends.split(',').filter_map(|d| d.split(['(', '|']).next()).map(str::trim).filter(|n| !n.is_empty()).collect()
}

/// Each `name (>= version)` of a Depends field.
fn versions(depends: &str) -> Vec<(String, Option<String>)> {
    depends
        .split(',')
        .map(|d| {
            let name = d.split('(').next().unwrap_or_default().trim().to_owned();
            let version = d.split_once(">=").map(|(_, v)| v.trim().trim_end_matches(')').trim().to_owned());
            (name, version)
        })
        .collect()
}

/// What dpkg-shlibdeps finds the binary needs (`shlibs:Depends`), run in a scratch source tree.
fn shlibdeps(dir: &Path, bin: &Path) -> Result<String> {
    std::fs::create_dir_all(dir.join("debian"))?;
    std::fs::write(dir.join("debian/control"), "Source: tracker\n\nPackage: tracker\nArchitecture: any\n")?;
    let out = cmd::run(Command::new("dpkg-shlibdeps").arg("-O").arg(bin).current_dir(dir))?;
    let line = out.lines().find_map(|l| l.strip_prefix("shlibs:Depends=")).context(out.clone())?;
    Ok(line.to_owned())
}

#[test]
fn apt_installs_the_package_into_a_fresh_debian_root_and_removes_and_purges_it() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let scratch = Scratch::new("apt-install")?;
    let deb = Package { bin: tracker_bin(), version: VERSION.to_owned(), source_date_epoch: EPOCH }
        .build(&scratch.path("out"))?;

    // The Depends cover what the binary links, at least at the versions dpkg-shlibdeps says.
    let needed = shlibdeps(&scratch.path("src"), &tracker_bin())?;
    eprintln!("dpkg-shlibdeps: {needed}");
    let declared = versions(package::DEPENDS);
    for (name, min) in versions(&needed) {
        let ours = declared.iter().find(|(n, _)| *n == name);
        let Some((_, ours)) = ours else {
            panic!("Depends lacks {name}, which the binary links: {}", package::DEPENDS)
        };
        if let Some(min) = min {
            let ours = ours.as_deref().with_context(|| format!("Depends names {name} without its version {min}"))?;
            let ok = Command::new("dpkg").args(["--compare-versions", ours, "ge", &min]).status()?.success();
            assert!(ok, "Depends asks {name} >= {ours}, the binary needs >= {min}");
        }
    }

    // A fresh root: made by debootstrap, or unpacked from the cache.
    let started = Instant::now();
    let (tarball, origin) = debian::root_tarball()?;
    let root = scratch.path("root");
    debian::unpack(&tarball, &root)?;
    match origin {
        Origin::Made(took) => eprintln!("debootstrap made the root in {took:?}"),
        Origin::Cached => eprintln!("the cached root {} unpacked in {:?}", tarball.display(), started.elapsed()),
    }
    let deps = names(package::DEPENDS);
    let missing: Vec<&str> =
        deps.iter().copied().filter(|d| !matches!(status(&root, d), Ok(Some(s)) if s == "ii")).collect();
    ensure!(!missing.is_empty(), "the fresh root has all of {deps:?}: apt would have nothing to find");
    eprintln!("not in the fresh root, for apt to find: {missing:?}");

    // apt installs the package and what it depends on. Its Recommends, wireguard-tools, which
    // the peers reader's unit runs, alone: it recommends a kernel, minutes of initramfs that
    // prove nothing of ours (a WireGuard host has wg already).
    let in_root = Path::new("/tmp").join(deb.file_name().context("the package's file name")?);
    std::fs::copy(&deb, root.join(in_root.strip_prefix("/")?))?;
    let deb_arg = in_root.to_string_lossy();
    let installing = Instant::now();
    let said =
        inside(&root, &["apt-get", "install", "-y", "-q", "--no-install-recommends", &deb_arg, package::RECOMMENDS])?;
    eprintln!("apt-get install took {:?}", installing.elapsed());
    assert_eq!(status(&root, "tracker")?.as_deref(), Some("ii"), "{said}");
    for dep in &deps {
        assert_eq!(status(&root, dep)?.as_deref(), Some("ii"), "apt installed the dependency {dep}: {said}");
    }

    // The files; the units as systemd in that root reads them (man pages are not checked: the
    // root has no man, as many servers); the user; the binary on the root's libraries.
    assert!(std::fs::read(root.join(package::BIN_PATH))? == package::shipped_binary(&tracker_bin())?);
    for (path, text) in [
        (package::UNIT_PATH, package::UNIT),
        (package::PEERS_SOCKET_UNIT_PATH, package::PEERS_SOCKET_UNIT),
        (package::PEERS_SERVICE_UNIT_PATH, package::PEERS_SERVICE_UNIT),
    ] {
        assert_eq!(std::fs::read_to_string(root.join(path))?, text, "{path}");
        let said = inside(&root, &["systemd-analyze", "verify", "--man=no", &format!("/{path}")])?;
        assert!(said.is_empty(), "systemd-analyze verify {path}: {said}");
    }
    for path in [package::CONFIG_PATH, package::SYSUSERS_PATH, package::MAN_PATH] {
        assert!(root.join(path).is_file(), "{path} installed");
    }
    let user = inside(&root, &["getent", "passwd", "tracker"])?;
    assert!(user.trim_end().ends_with(":tracker daemon:/var/lib/tracker:/usr/sbin/nologin"), "{user}");
    let version = inside(&root, &["tracker", "--version"])?;
    assert_eq!(version.trim(), format!("tracker {}", VERSION.split('-').next().unwrap_or_default()));

    // Removal keeps the database and the settings; purge deletes them.
    let db = root.join(package::STATE_DIR).join("tracker.db");
    std::fs::create_dir_all(db.parent().context("the database's folder")?)?;
    std::fs::write(&db, b"the database's bytes")?;
    inside(&root, &["apt-get", "remove", "-y", "-q", "tracker"])?;
    assert_eq!(status(&root, "tracker")?.as_deref(), Some("rc"));
    assert!(!root.join(package::BIN_PATH).exists(), "the binary goes with removal");
    assert_eq!(std::fs::read(&db)?, b"the database's bytes", "removal keeps the database");
    assert!(root.join(package::CONFIG_PATH).exists(), "removal keeps the settings");
    inside(&root, &["apt-get", "purge", "-y", "-q", "tracker"])?;
    let purged = status(&root, "tracker")?;
    assert!(matches!(purged.as_deref(), None | Some("un" | "pn")), "purged: not installed, no conffiles: {purged:?}");
    for gone in [package::STATE_DIR, package::CONFIG_PATH] {
        assert!(!root.join(gone).exists(), "{gone} left after purge");
    }
    eprintln!("the whole test took {:?}", started.elapsed());
    Ok(())
}
