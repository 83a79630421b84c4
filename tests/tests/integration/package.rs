//! The Debian package and the source install (issue 14), built as `cargo xtask package` and
//! `cargo xtask install` build them (`tracker_tests::package`) from the binary under test:
//! two builds byte for byte the same; the files, modes, owners, dates and control fields; the
//! package installed into a fresh root by dpkg (`--root`, maintainer scripts run chrootless
//! with `DPKG_ROOT`, as Debian installers do): the system user made, the installed unit passing
//! `systemd-analyze verify` without a warning and rated by `systemd-analyze security`; an
//! upgrade keeping the edited settings and the database; removal keeping them and detaching;
//! purge deleting them. In the lab, a block and the database's rows survive an upgrade under a
//! running daemon, run as the unit runs it. Root only.
//!
//! The root is made by dpkg alone, offline: what a Debian root would add (systemd's units,
//! coreutils' `install` and `chown` that the unit's ExecStartPre= runs) is copied from this
//! Debian 12 host, and the package's dependencies are not installed (`--force-depends`).
//! `debian_root` installs it with apt into a real Debian root instead.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use tracker::kernel::{PIN_LINK_TC_EGRESS, PIN_LINK_XDP};
use tracker_tests::{
    cmd,
    lab::{SMALL_TXT, WEB_V4},
    package::{self, Package},
    tracker_bin,
};

use crate::common::{Scratch, curl, run_cli};
use crate::privilege::{
    UNIT_UID, UnitPlaces, as_the_unit, notified, notify_socket, prepare_as_the_unit, unit_caps, unit_exec_args,
};

/// 2026-12-07 00:00 UTC: any fixed time does; the package's every date must be this one.
const EPOCH: u64 = 1_796_601_600;
const EPOCH_DATE: &str = "2026-12-07 00:00";
/// The exposure `systemd-analyze security` gave the unit when it was written (0 is best, 10
/// worst): a hardening line lost raises it.
const EXPOSURE_AT_MOST: f64 = 2.3;

fn build(version: &str, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    Package { bin: tracker_bin(), version: version.to_owned(), source_date_epoch: EPOCH }.build(out)
}

/// An empty root with an empty dpkg database.
fn fresh_root(root: &Path) -> Result<()> {
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(root.join("var/lib/dpkg").join(d))?;
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "")?;
    Ok(())
}

/// What a Debian root has beside our package and that the units' checks need: systemd's own
/// units (the targets ours is ordered after), the two coreutils its ExecStartPre= runs, and
/// `wg` (wireguard-tools, recommended) that tracker-wireguard-peers@.service runs.
fn add_systemd_and_coreutils(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("usr/lib/systemd/system"))?;
    cmd::run(
        Command::new("cp")
            .args(["-a", "--no-clobber", "/usr/lib/systemd/system/."])
            .arg(root.join("usr/lib/systemd/system")),
    )?;
    std::fs::create_dir_all(root.join("usr/bin"))?;
    for bin in ["install", "chown", "wg"] {
        std::fs::copy(Path::new("/usr/bin").join(bin), root.join("usr/bin").join(bin))?;
    }
    Ok(())
}

/// `dpkg --root ROOT ARGS`, the maintainer scripts run with DPKG_ROOT=ROOT outside a chroot.
fn dpkg(root: &Path, args: &[&str]) -> Result<String> {
    cmd::run(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"])
            .args(args),
    )
}

fn installed_version(root: &Path) -> Result<String> {
    cmd::run(Command::new("dpkg-query").arg(format!("--admindir={}", root.join("var/lib/dpkg").display())).args([
        "-W",
        "-f",
        "${Version} ${db:Status-Abbrev}",
        "tracker",
    ]))
}

/// `systemd-analyze verify` of `unit` (a path inside `root`): its exit status and everything
/// it said, with man pages looked up in the root (Documentation=man:tracker(1)).
fn verify(root: &Path, unit: &str) -> Result<(bool, String)> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(format!("/{unit}"))
        .env("MANPATH", root.join("usr/share/man"))
        .output()
        .context("running systemd-analyze verify")?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

#[test]
fn the_package_is_reproducible_and_installs_upgrades_and_purges_as_documented() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let scratch = Scratch::new("package")?;
    let first = build("0.1.0-1", &scratch.path("first"))?;
    let second = build("0.1.0-1", &scratch.path("second"))?;
    let (a, b) = (std::fs::read(&first)?, std::fs::read(&second)?);
    let differ = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(a == b, "two builds differ: {} and {} bytes, first difference at {differ:?}", a.len(), b.len());
    eprintln!("two builds: {} bytes each, identical", a.len());

    // Every file with its mode, root's, dated SOURCE_DATE_EPOCH.
    let listing = cmd::run(Command::new("dpkg-deb").arg("-c").arg(&first).env("TZ", "UTC"))?;
    let mut files = Vec::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 6, "unexpected dpkg-deb -c line {line:?}");
        assert_eq!((f[1], format!("{} {}", f[3], f[4])), ("root/root", EPOCH_DATE.to_owned()), "{line}");
        if !f[0].starts_with('d') {
            files.push(format!("{} {}", f[0], f[5].trim_start_matches("./")));
        }
    }
    let want: Vec<String> = [
        ("-rw-r--r--", package::CONFIG_PATH),
        ("-rwxr-xr-x", package::BIN_PATH),
        ("-rw-r--r--", package::PEERS_SOCKET_UNIT_PATH),
        ("-rw-r--r--", package::PEERS_SERVICE_UNIT_PATH),
        ("-rw-r--r--", package::UNIT_PATH),
        ("-rw-r--r--", package::SYSUSERS_PATH),
        ("-rw-r--r--", package::COPYRIGHT_PATH),
        ("-rw-r--r--", package::MAN_PATH),
    ]
    .iter()
    .map(|(m, p)| format!("{m} {p}"))
    .collect();
    assert_eq!(files, want, "the package's files");
    let field =
        |name: &str| cmd::run(Command::new("dpkg-deb").arg("-f").arg(&first).arg(name)).map(|s| s.trim().to_owned());
    assert_eq!(field("Package")?, "tracker");
    assert_eq!(field("Version")?, "0.1.0-1");
    assert!(field("Depends")?.contains("libsqlite3-0"), "Depends names Debian's SQLite");
    let conffiles = cmd::run(Command::new("dpkg-deb").args(["--info"]).arg(&first).arg("conffiles"))?;
    assert_eq!(conffiles, format!("/{}\n", package::CONFIG_PATH));

    // Installed into a fresh root: the files, the user, the settings a valid file.
    let root = scratch.path("root");
    fresh_root(&root)?;
    dpkg(&root, &["--install", &first.display().to_string()])?;
    assert_eq!(installed_version(&root)?, "0.1.0-1 ii ");
    assert!(
        std::fs::read(root.join(package::BIN_PATH))? == package::shipped_binary(&tracker_bin())?,
        "the binary is the one built, stripped"
    );
    assert_eq!(std::fs::read_to_string(root.join(package::UNIT_PATH))?, package::UNIT);
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    let user =
        passwd.lines().find(|l| l.starts_with("tracker:")).context("no tracker user in the root's /etc/passwd")?;
    assert!(user.ends_with(":tracker daemon:/var/lib/tracker:/usr/sbin/nologin"), "{user}");
    let config = root.join(package::CONFIG_PATH);
    let ran = cmd::run(Command::new(tracker_bin()).arg("--config").arg(&config).arg("schema"));
    assert!(ran.is_ok(), "the shipped settings file is refused: {ran:?}");
    let man = cmd::run(Command::new("man").arg("-l").arg(root.join(package::MAN_PATH)).env("MANWIDTH", "80"))?;
    assert!(man.contains("tracker block-ip") && man.contains("/etc/tracker/tracker.toml"), "man page: {man:.400}");

    // The unit as installed: no error, no warning; its exposure rating.
    add_systemd_and_coreutils(&root)?;
    for unit in [package::UNIT_PATH, package::PEERS_SOCKET_UNIT_PATH, package::PEERS_SERVICE_UNIT_PATH] {
        let (ok, said) = verify(&root, unit)?;
        assert!(ok && said.is_empty(), "systemd-analyze verify {unit}: {said}");
    }
    let security = cmd::run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(format!("--root={}", root.display()))
            .arg(format!("/{}", package::UNIT_PATH)),
    )?;
    let overall = security.lines().find(|l| l.contains("Overall exposure level")).context("no overall exposure")?;
    let exposure: f64 =
        overall.split(": ").nth(1).and_then(|s| s.split_whitespace().next()).context(overall.to_owned())?.parse()?;
    eprintln!("{overall}");
    assert!(exposure <= EXPOSURE_AT_MOST, "{overall} (it was {EXPOSURE_AT_MOST})");
    // The check has teeth: a unit naming a binary that is not there fails it.
    let broken = root.join("etc/systemd/system/tracker-broken.service");
    std::fs::create_dir_all(broken.parent().unwrap())?;
    std::fs::write(&broken, package::UNIT.replace("ExecStart=/usr/bin/tracker ", "ExecStart=/usr/bin/trackr "))?;
    let (ok, said) = verify(&root, "etc/systemd/system/tracker-broken.service")?;
    assert!(!ok && said.contains("/usr/bin/trackr"), "a broken unit passed: {said}");
    std::fs::remove_file(&broken)?;

    // An upgrade: the user's settings and the database stay as they were.
    let edited = format!("{}\n# the user's own line\n", std::fs::read_to_string(&config)?);
    std::fs::write(&config, &edited)?;
    let db = root.join(package::STATE_DIR).join("tracker.db");
    std::fs::create_dir_all(db.parent().unwrap())?;
    std::fs::write(&db, b"the database's bytes")?;
    let upgrade = build("0.1.0-2", &scratch.path("upgrade"))?;
    dpkg(&root, &["--install", &upgrade.display().to_string()])?;
    assert_eq!(installed_version(&root)?, "0.1.0-2 ii ");
    assert_eq!(std::fs::read_to_string(&config)?, edited, "settings kept over an upgrade");
    assert_eq!(std::fs::read(&db)?, b"the database's bytes", "database kept over an upgrade");

    // Removal: the program and unit go, the links are unpinned (detaching the programs once the
    // service has stopped), the settings, database and maps stay.
    let pins = root.join("sys/fs/bpf/tracker");
    std::fs::create_dir_all(&pins)?;
    for pin in [PIN_LINK_XDP, PIN_LINK_TC_EGRESS, "FLOWS_V4"] {
        std::fs::write(pins.join(pin), "")?;
    }
    dpkg(&root, &["--remove", "tracker"])?;
    assert_eq!(installed_version(&root)?, "0.1.0-2 rc ");
    for gone in [package::BIN_PATH, package::UNIT_PATH, package::PEERS_SOCKET_UNIT_PATH, package::MAN_PATH] {
        assert!(!root.join(gone).exists(), "{gone} left after removal");
    }
    assert!(!pins.join(PIN_LINK_XDP).exists() && !pins.join(PIN_LINK_TC_EGRESS).exists(), "links left pinned");
    assert!(
        pins.join("FLOWS_V4").exists() && config.exists() && db.exists(),
        "removal kept the maps, settings and database"
    );

    // Purge: the settings, the database and the maps go; the user stays, as Debian's do.
    dpkg(&root, &["--purge", "tracker"])?;
    for gone in [package::CONFIG_PATH, package::STATE_DIR, "sys/fs/bpf/tracker"] {
        assert!(!root.join(gone).exists(), "{gone} left after purge");
    }
    assert!(std::fs::read_to_string(root.join("etc/passwd"))?.contains("\ntracker:") || passwd.starts_with("tracker:"));
    Ok(())
}

#[test]
fn the_source_install_puts_the_same_service_in_the_local_places() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let scratch = Scratch::new("source-install")?;
    let root = scratch.path("root");
    // A settings file of the user's, and the link `cargo xtask build` makes.
    let config = root.join(package::CONFIG_PATH);
    std::fs::create_dir_all(config.parent().unwrap())?;
    std::fs::write(&config, "db = \"/srv/tracker.db\"\n")?;
    let bin = root.join(package::LOCAL_BIN_PATH);
    std::fs::create_dir_all(bin.parent().unwrap())?;
    std::os::unix::fs::symlink(tracker_bin(), &bin)?;

    for _ in 0..2 {
        let wrote = package::install_from_source(&tracker_bin(), "0.1.0", &root)?;
        let rel: Vec<String> = wrote.iter().map(|p| p.strip_prefix(&root).unwrap().display().to_string()).collect();
        assert_eq!(
            rel,
            [
                package::LOCAL_BIN_PATH,
                package::LOCAL_UNIT_PATH,
                package::LOCAL_PEERS_SOCKET_UNIT_PATH,
                package::LOCAL_PEERS_SERVICE_UNIT_PATH,
                package::LOCAL_SYSUSERS_PATH,
                package::LOCAL_MAN_PATH
            ]
        );
    }
    assert!(!bin.symlink_metadata()?.file_type().is_symlink(), "the link is replaced by the binary");
    assert!(std::fs::read(&bin)? == std::fs::read(tracker_bin())?, "the binary is the one built");
    assert_eq!(std::fs::read_to_string(&config)?, "db = \"/srv/tracker.db\"\n", "the user's settings kept");
    let unit = std::fs::read_to_string(root.join(package::LOCAL_UNIT_PATH))?;
    assert_eq!(unit.replace("ExecStart=/usr/local/bin/tracker ", "ExecStart=/usr/bin/tracker "), package::UNIT);
    assert_eq!(std::fs::read_to_string(root.join(package::LOCAL_SYSUSERS_PATH))?, package::SYSUSERS);
    add_systemd_and_coreutils(&root)?;
    let (ok, said) = verify(&root, package::LOCAL_UNIT_PATH)?;
    // man looks in the root's /usr/share/man, and the source install's page is under /usr/local.
    let said: Vec<&str> = said.lines().filter(|l| !l.contains("man tracker(1)")).collect();
    assert!(said.is_empty(), "systemd-analyze verify: {ok} {said:?}");
    Ok(())
}

/// A fresh root with package `deb` installed, set up as a user would for the lab: the settings
/// file naming this test's database, pins and interface. Returns the settings file.
fn lab_root(root: &Path, deb: &Path, pins: &Path, iface: &str) -> Result<PathBuf> {
    fresh_root(root)?;
    dpkg(root, &["--install", &deb.display().to_string()])?;
    let config = root.join(package::CONFIG_PATH);
    let db = root.join(package::STATE_DIR).join("tracker.db");
    std::fs::write(
        &config,
        format!(
            "db = {:?}\npin-dir = {:?}\n\n[run]\niface = {iface:?}\nsweep-interval = \"300ms\"\n",
            db.display().to_string(),
            pins.display().to_string()
        ),
    )?;
    Ok(config)
}

#[test]
fn a_package_upgrade_under_a_running_daemon_keeps_the_block_and_the_rows() -> Result<()> {
    let Some((_serial, lab, t)) = crate::common::lab_with_tracker("tpk1")? else {
        return Ok(());
    };
    let scratch = Scratch::new("package-upgrade")?;
    let old = build("0.1.0-1", &scratch.path("old"))?;
    let new = build("0.1.0-2", &scratch.path("new"))?;
    let root = scratch.path("root");
    let config = lab_root(&root, &old, &t.pins, &lab.names().vpn_iface)?;
    let installed = root.join(package::BIN_PATH);
    let caps = unit_caps();
    prepare_as_the_unit(&t.pins, &root.join(package::STATE_DIR))?;
    let places = UnitPlaces::new("unit-tpk1")?;
    let notify_path = places.notify_path.clone();
    let notify = notify_socket(&notify_path)?;
    let log_path = lab.names().dir.join("package-daemon.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // The installed binary, as the unit starts it, reading the installed settings file.
    let daemon = || {
        let mut c = as_the_unit(&lab, &t.pins, &caps, &installed);
        c.args(unit_exec_args()).env("TRACKER_CONFIG", &config).env("NOTIFY_SOCKET", &notify_path);
        let log =
            std::fs::File::options().create(true).append(true).open(lab.names().dir.join("package-daemon.log"))?;
        c.stdout(log.try_clone()?).stderr(log);
        anyhow::Ok(c)
    };
    let cli = |args: &[&str]| -> Result<serde_json::Value> {
        let mut c = Command::new(&installed);
        c.args(args).args(["--format", "json"]).env("TRACKER_CONFIG", &config);
        let ran = run_cli(c)?;
        ensure!(ran.exited_ok(), "tracker {args:?}: {}", ran.describe());
        Ok(serde_json::from_str(&ran.stdout)?)
    };
    let url = format!("http://{WEB_V4}/{SMALL_TXT}");

    let mut d = lab.spawn(daemon()?)?;
    ensure!(notified(&notify).with_context(log)?.starts_with("READY=1"), "version 1 ready");
    ensure!(curl(&lab, &url, 5)? > 0, "fetched before the block");
    ensure!(
        t.wait_for(Duration::from_secs(20), |_| cli(&["flows"])
            .is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))),
        "the fetch is counted"
    );
    let mut c = Command::new(&installed);
    c.args(["block-ip", &format!("{WEB_V4}/32")]).env("TRACKER_CONFIG", &config);
    ensure!(run_cli(c)?.exited_ok(), "block-ip");
    ensure!(curl(&lab, &url, 1).is_err(), "blocked under version 1");
    let (flows_before, blocks_before) = (cli(&["flows", "--limit", "0"])?, cli(&["blocks"])?);

    // What apt does: dpkg unpacks version 2 over the running daemon's files, then postinst's
    // `systemctl try-restart` stops the old daemon and starts the new binary.
    dpkg(&root, &["--install", &new.display().to_string()])?;
    assert_eq!(installed_version(&root)?, "0.1.0-2 ii ");
    d.signal(libc::SIGTERM)?;
    ensure!(notified(&notify)?.starts_with("STOPPING=1"), "version 1 stopping");
    let status = d.wait_timeout(Duration::from_secs(20))?.context("version 1 did not stop")?;
    assert!(status.success(), "version 1 exited with {status}");
    assert!(curl(&lab, &url, 1).is_err(), "blocked between the two daemons");
    let mut d = lab.spawn(daemon()?)?;
    ensure!(notified(&notify).with_context(log)?.starts_with("READY=1"), "version 2 ready");
    let s = cli(&["status"])?;
    assert!(crate::common::attached_pid_is(&s, d.pid()), "version 2 holds the programs: {s}");
    assert!(curl(&lab, &url, 1).is_err(), "blocked under version 2");
    // The same rules with the same ids; their counts only grow (the fetches above were dropped).
    let rules = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
        v.as_array().into_iter().flatten().map(|b| (b["id"].clone(), b["kind"].clone(), b["rule"].clone())).collect()
    };
    let blocks_after = cli(&["blocks"])?;
    assert_eq!(rules(&blocks_after), rules(&blocks_before), "the rules and their ids");
    assert!(
        blocks_after[0]["packets_dropped"].as_u64() > blocks_before[0]["packets_dropped"].as_u64(),
        "{blocks_after}"
    );
    let flows_after = cli(&["flows", "--limit", "0"])?;
    let (before, after) = (flows_before.as_array().unwrap(), flows_after.as_array().unwrap());
    assert!(!before.is_empty(), "rows to keep");
    for row in before {
        let same = after.iter().any(|r| {
            r["remote"] == row["remote"]
                && r["client_port"] == row["client_port"]
                && r["packets_up"] == row["packets_up"]
        });
        assert!(same, "row {row} kept; after: {flows_after}");
    }
    eprintln!(
        "{} flows and {} rules kept across 0.1.0-1 -> 0.1.0-2",
        before.len(),
        blocks_before.as_array().map_or(0, Vec::len)
    );
    assert_eq!(
        std::fs::metadata(root.join(package::STATE_DIR).join("tracker.db"))?.uid(),
        UNIT_UID,
        "the database is the unit user's"
    );
    d.signal(libc::SIGTERM)?;
    d.wait_timeout(Duration::from_secs(20))?;
    Ok(())
}
