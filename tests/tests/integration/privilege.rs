//! Least privilege (issue 14): the daemon started as its systemd unit (packaging/tracker.service)
//! starts it — a user of its own, exactly the capabilities the unit's AmbientCapabilities= and
//! CapabilityBoundingSet= name (read from the unit: it is the one list), no new privileges, the
//! unit's view of /sys/fs/bpf — attaches, counts and blocks, and tells the service manager it
//! is ready (sd_notify `READY=1` on `$NOTIFY_SOCKET`); with one capability less it names the
//! one missing and changes nothing; and every system call and socket family it and `wg` use
//! (strace) is one the unit's SystemCallFilter= and RestrictAddressFamilies= allow. Root only;
//! under CI=true it never skips.

use std::{
    collections::BTreeSet,
    ffi::OsStr,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use tracker_tests::{
    cmd,
    lab::{SMALL_TXT, WEB_V4},
    package,
};

use tracker_tests::tracker_bin;

use crate::common::{Ran, SWEEP, Scratch, attached_pid_is, curl, run_bounded, run_cli, tracker_with};

/// The user the tests run the daemon as, standing in for the unit's `User=tracker`: an
/// unprivileged uid and gid, with no entry in /etc/passwd needed (the kernel knows numbers).
pub const UNIT_UID: u32 = 64_999;

/// The unit's capabilities as setpriv names them (`CAP_NET_ADMIN` is `net_admin`).
pub fn unit_caps() -> Vec<String> {
    package::unit_values("AmbientCapabilities")
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// What the unit's `+` ExecStartPre= lines and StateDirectory= do before the daemon starts:
/// the pin directory (with any pins in it) and the state directory made [`UNIT_UID`]'s.
pub fn prepare_as_the_unit(pins: &Path, state: &Path) -> Result<()> {
    std::fs::create_dir_all(pins).with_context(|| format!("creating {}", pins.display()))?;
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let owner = format!("{UNIT_UID}:{UNIT_UID}");
    cmd::run(Command::new("chown").arg("-R").arg(&owner).arg(pins).arg(state))?;
    Ok(())
}

/// `program` (arguments to be added) started as the unit starts the daemon, in the lab's VPN
/// namespace: in a mount namespace of its own where /sys/fs/bpf is an empty tmpfs holding only
/// `pins`, bound from the real one (TemporaryFileSystem= and BindPaths=), then as [`UNIT_UID`]
/// with exactly `caps` as ambient, inheritable and bounding capabilities and no new
/// privileges (User=, AmbientCapabilities=, CapabilityBoundingSet=, NoNewPrivileges=).
pub fn as_the_unit(lab: &tracker_tests::Lab, pins: &Path, caps: &[String], program: impl AsRef<OsStr>) -> Command {
    // The real directory is bound aside before the tmpfs hides it, then bound back at its
    // own path: the daemon sees the path the CLI uses, on the real bpffs.
    const VIEW: &str = r#"set -e
pins=$1; shift
aside=$(mktemp -d)
mount --bind "$pins" "$aside"
mount -t tmpfs -o mode=0755 tmpfs /sys/fs/bpf
mkdir -p "$pins"
mount --bind "$aside" "$pins"
umount "$aside"
rmdir "$aside"
exec "$@""#;
    let set = format!("-all,{}", caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(","));
    let mut c = lab.vpn_cmd("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", VIEW, "sh"]).arg(pins);
    c.arg("setpriv")
        .arg(format!("--reuid={UNIT_UID}"))
        .arg(format!("--regid={UNIT_UID}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--no-new-privs")
        .arg(program);
    c
}

/// The arguments the unit gives the binary (ExecStart= after the program's path).
pub fn unit_exec_args() -> Vec<&'static str> {
    package::unit_values("ExecStart").into_iter().skip(1).collect()
}

/// The daemon as the unit runs it, on database `db` and the test's pins, sweeping fast.
pub fn unit_daemon(
    lab: &tracker_tests::Lab,
    t: &crate::common::Tracker,
    db: &Path,
    caps: &[String],
    notify: &Path,
) -> Command {
    let mut c = as_the_unit(lab, &t.pins, caps, tracker_bin());
    c.arg("--db").arg(db).arg("--pin-dir").arg(&t.pins).args(unit_exec_args());
    c.args(["--iface", &lab.names().vpn_iface, "--sweep-interval", SWEEP]).env("NOTIFY_SOCKET", notify);
    c
}

/// A socket for sd_notify messages that the unit's user may send to, as systemd's is.
pub fn notify_socket(path: &Path) -> Result<UnixDatagram> {
    let _ = std::fs::remove_file(path);
    let sock = UnixDatagram::bind(path).context("binding the notify socket")?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    std::os::unix::fs::chown(path, Some(UNIT_UID), Some(UNIT_UID))?;
    Ok(sock)
}

/// The unit user's own places, which the lab's folder (root's, 0700) cannot hold: the state
/// directory with the database, and the notify socket.
pub struct UnitPlaces {
    _scratch: Scratch,
    pub state: PathBuf,
    pub db: PathBuf,
    pub notify_path: PathBuf,
}

impl UnitPlaces {
    pub fn new(name: &str) -> Result<Self> {
        let scratch = Scratch::new(name)?;
        let state = scratch.path("state");
        Ok(Self { db: state.join("tracker.db"), notify_path: scratch.path("notify.sock"), state, _scratch: scratch })
    }

    /// `tracker ARGS --format json` on this database and `pins`, as root, as a user types it.
    pub fn json(&self, pins: &Path, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let ran = run_cli(tracker_with(&self.db, pins, &a))?;
        ensure!(ran.exited_ok(), "tracker {args:?}: {}", ran.describe());
        Ok(serde_json::from_str(&ran.stdout)?)
    }
}

/// The next sd_notify message.
pub fn notified(sock: &UnixDatagram) -> Result<String> {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).context("no sd_notify message within 20 s")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// `key:` of /proc/PID/status, trimmed.
fn proc_status(pid: u32, key: &str) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line =
        text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')).with_context(|| format!("no {key}"))?;
    Ok(line.trim().to_owned())
}

/// The capability mask of `caps` (numbers from linux/capability.h).
fn mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| match c.as_str() {
            "net_admin" => 1u64 << 12,
            "perfmon" => 1u64 << 38,
            "bpf" => 1u64 << 39,
            other => panic!("the unit names a capability this test does not know: {other}"),
        })
        .fold(0, |a, b| a | b)
}

#[test]
fn the_daemon_runs_as_its_unit_runs_it_and_says_what_is_missing() -> Result<()> {
    let Some((_serial, lab, t)) = crate::common::lab_with_tracker("tpv1")? else {
        return Ok(());
    };
    let caps = unit_caps();
    assert_eq!(caps, ["bpf", "perfmon", "net_admin"], "the unit's capabilities");
    let places = UnitPlaces::new("unit-tpv1")?;
    prepare_as_the_unit(&t.pins, &places.state)?;
    let (db, notify_path) = (&places.db, &places.notify_path);
    let notify = notify_socket(notify_path)?;
    let daemon_status = || places.json(&t.pins, &["status"]);

    // One capability less: refused, naming it, and nothing attached.
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        let ran: Ran = run_bounded(unit_daemon(&lab, &t, db, &fewer, notify_path), Duration::from_secs(20))?;
        let name = format!("CAP_{}", drop.to_ascii_uppercase());
        assert!(ran.exited_nonzero() && ran.stderr.contains(&name), "without {name}: {}", ran.describe());
        let s = daemon_status().unwrap_or(Value::Null);
        assert_ne!(s["xdp_attached"], true, "nothing attached without {name}: {s}");
    }

    // Exactly the unit's: ready is told, it counts and blocks.
    let mut c = unit_daemon(&lab, &t, db, &caps, notify_path);
    let log = std::fs::File::create(lab.names().dir.join("privileged-daemon.log"))?;
    c.stdout(log.try_clone()?).stderr(log);
    let started = Instant::now();
    let mut d = lab.spawn(c)?;
    let said = notified(&notify)?;
    assert!(said.starts_with("READY=1\n") && said.contains("STATUS="), "{said:?}");
    eprintln!("READY=1 {:?} after start", started.elapsed());
    let s = daemon_status()?;
    ensure!(s["xdp_attached"] == true && attached_pid_is(&s, d.pid()), "ready, so attached: {s}");
    // The process is what the unit makes: its own user, the three capabilities and no more.
    let want = format!("{:016x}", mask(&caps));
    let uid = UNIT_UID.to_string();
    assert_eq!(
        proc_status(d.pid(), "Uid")?.split_whitespace().collect::<Vec<_>>(),
        [uid.as_str(); 4],
        "real, effective, saved, fs uid"
    );
    assert_eq!(proc_status(d.pid(), "CapEff")?, want, "effective capabilities");
    assert_eq!(proc_status(d.pid(), "CapBnd")?, want, "bounding set");
    assert_eq!(proc_status(d.pid(), "NoNewPrivs")?, "1");

    let blocked = format!("{WEB_V4}/32");
    let ran = run_cli(tracker_with(db, &t.pins, &["block-ip", &blocked]))?;
    ensure!(ran.exited_ok(), "block-ip: {}", ran.describe());
    assert!(curl(&lab, &format!("http://{WEB_V4}/{SMALL_TXT}"), 1).is_err(), "blocked under the unit's capabilities");
    let ran = run_cli(tracker_with(db, &t.pins, &["unblock-ip", &blocked]))?;
    ensure!(ran.exited_ok(), "unblock-ip: {}", ran.describe());
    let got = curl(&lab, &format!("http://{WEB_V4}/{SMALL_TXT}"), 5)?;
    assert!(got > 0, "fetched once unblocked");
    let counted = t.wait_for(Duration::from_secs(20), |_| {
        places.json(&t.pins, &["flows"]).ok().is_some_and(|v| {
            v.as_array().is_some_and(|a| a.iter().any(|f| f["remote"] == WEB_V4.to_string() && f["remote_port"] == 80))
        })
    });
    assert!(counted, "the fetch is counted");

    d.signal(libc::SIGTERM)?;
    let said = notified(&notify).context("no STOPPING=1")?;
    assert!(said.starts_with("STOPPING=1"), "{said:?}");
    let status = d.wait_timeout(Duration::from_secs(20))?.context("the daemon did not stop")?;
    assert!(status.success(), "{status}");
    // The unit's --keep-attached: stopping the service leaves blocking in place.
    let s = daemon_status()?;
    assert!(s["xdp_attached"] == true && s["tc_egress_attached"] == true, "attached after a stop: {s}");
    Ok(())
}

/// System calls in `systemd-analyze syscall-filter GROUP`'s list, nested groups expanded.
fn syscall_group(group: &str) -> Result<BTreeSet<String>> {
    let out = cmd::run(Command::new("systemd-analyze").args(["syscall-filter", group]))?;
    let mut calls = BTreeSet::new();
    // Members are indented; `#` lines are comments, `@` lines nested groups.
    for member in out.lines().filter(|l| l.starts_with(' ')).map(str::trim) {
        if member.starts_with('@') {
            calls.extend(syscall_group(member)?);
        } else if !member.is_empty() && !member.starts_with('#') {
            calls.insert(member.to_owned());
        }
    }
    Ok(calls)
}

/// Each system call strace saw in `trace` (`strace -f` lines: `PID name(args) = ret`), and each
/// socket family asked for.
fn strace_calls(trace: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut calls, mut families) = (BTreeSet::new(), BTreeSet::new());
    for line in trace.lines() {
        let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
        if rest.starts_with("<...") || rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else { continue };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        if name == "socket" || name == "socketpair" {
            families.insert(args.split([',', ')']).next().unwrap_or_default().to_owned());
        }
        calls.insert(name.to_owned());
    }
    (calls, families)
}

#[test]
fn the_daemon_and_wg_call_only_what_the_units_filters_allow() -> Result<()> {
    let Some((_serial, lab, t)) = crate::common::lab_with_tracker("tpv2")? else {
        return Ok(());
    };
    let caps = unit_caps();
    let places = UnitPlaces::new("unit-tpv2")?;
    prepare_as_the_unit(&t.pins, &places.state)?;
    let (db, notify_path) = (&places.db, &places.notify_path);
    let notify = notify_socket(notify_path)?;
    let trace = places.state.join("strace.txt");
    // strace runs as the unit's user too, below setpriv: it traces the daemon and its `wg`
    // children only, from their first instruction.
    let mut c = as_the_unit(&lab, &t.pins, &caps, "strace");
    c.args(["-f", "-qq", "-o"]).arg(&trace).arg(tracker_bin());
    c.arg("--db").arg(db).arg("--pin-dir").arg(&t.pins).args(unit_exec_args());
    c.args(["--iface", &lab.names().vpn_iface, "--sweep-interval", SWEEP]).env("NOTIFY_SOCKET", notify_path);
    let log = std::fs::File::create(lab.names().dir.join("strace-daemon.log"))?;
    c.stdout(log.try_clone()?).stderr(log);
    let mut d = lab.spawn(c)?;
    ensure!(notified(&notify)?.starts_with("READY=1"), "the traced daemon is ready");
    // Traffic, a rule added and removed, the dashboard asked: the daemon's every path once.
    let blocked = format!("{WEB_V4}/32");
    ensure!(run_cli(tracker_with(db, &t.pins, &["block-ip", &blocked]))?.exited_ok(), "block-ip");
    ensure!(curl(&lab, &format!("http://{WEB_V4}/{SMALL_TXT}"), 1).is_err(), "blocked");
    ensure!(run_cli(tracker_with(db, &t.pins, &["unblock-ip", &blocked]))?.exited_ok(), "unblock-ip");
    ensure!(curl(&lab, &format!("http://{WEB_V4}/{SMALL_TXT}"), 5)? > 0, "fetched");
    // From the host itself: under wireguard-go the unit's user cannot read the peers (README,
    // "Install"), and the dashboard lets in only peers and the host.
    let page = cmd::run(lab.vpn_cmd("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "http://127.0.0.1:8722/",
    ]))?;
    ensure!(page == "200", "the dashboard answered {page}");
    ensure!(
        t.wait_for(Duration::from_secs(20), |_| places
            .json(&t.pins, &["flows"])
            .ok()
            .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))),
        "the fetch is counted"
    );
    // The daemon is strace's child: stopped as systemd would, strace then ends with it.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", d.pid()))?;
    let daemon: i32 = children.split_whitespace().next().context("strace has no child")?.parse()?;
    // SAFETY: kill(2) on a pid we started and that has not been reaped (strace waits for it).
    ensure!(unsafe { libc::kill(daemon, libc::SIGTERM) } == 0, "signalling the traced daemon");
    let status = d.wait_timeout(Duration::from_secs(20))?.context("the traced daemon did not stop")?;
    assert!(status.success(), "{status}");

    let (calls, families) = strace_calls(&std::fs::read_to_string(&trace)?);
    let filter = package::unit_values("SystemCallFilter");
    let mut allowed = BTreeSet::new();
    for entry in &filter {
        match entry.strip_prefix('@') {
            Some(_) => allowed.extend(syscall_group(entry)?),
            None => {
                allowed.insert((*entry).to_owned());
            }
        }
    }
    ensure!(calls.len() > 20 && calls.contains("bpf"), "strace saw too little: {calls:?}");
    let refused: Vec<&String> = calls.iter().filter(|c| !allowed.contains(*c)).collect();
    eprintln!("{} system calls, socket families {families:?}", calls.len());
    assert!(refused.is_empty(), "called outside SystemCallFilter={filter:?}: {refused:?}");
    let families_allowed = package::unit_values("RestrictAddressFamilies");
    let outside: Vec<&String> = families.iter().filter(|f| !families_allowed.contains(&f.as_str())).collect();
    assert!(outside.is_empty(), "socket families outside RestrictAddressFamilies={families_allowed:?}: {outside:?}");
    Ok(())
}
