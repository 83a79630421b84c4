//! The daemon under its unit and wireguard-go's peers (issue 14's gap, issue 13's phone).
//! wireguard-go makes `/var/run/wireguard/IFACE.sock` root's and mode 0700: the daemon, run
//! as the unit runs it (its own uid, exactly the unit's capabilities), cannot read the peers,
//! says so once naming the socket and the reader it tried, knows no device and keeps the phone
//! out of the dashboard. The package's `tracker-wireguard-peers.socket` and its service, read
//! from the unit files and served as systemd serves them (a socket with the unit's owner, group
//! and mode; for each connection the service's command as root, its output to the
//! connection), let it read them: the device is known, the dashboard serves the phone through
//! the tunnel, and still after wireguard-go restarts with a new socket (and the daemon with it). Why not simply grant
//! the daemon's user the socket: wireguard-go stops when its socket's ACL changes (shown last).
//! systemd is not PID 1 here, so the units themselves are checked by `systemd-analyze verify`
//! (`package`, `apt_install`). Root only; under CI=true it never skips.

use std::{
    os::unix::{fs::MetadataExt as _, fs::PermissionsExt as _, net::UnixListener},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use tracker::{web::dashboard::DEFAULT_PORT, wireguard};
use tracker_tests::{Lab, LabNames, Ns, cmd, lab::VPN_TUN_V4, package};

use crate::common::run_bounded;
use crate::privilege::{UNIT_UID, UnitPlaces, notified, notify_socket, prepare_as_the_unit, unit_caps, unit_daemon};

/// The unit's group, which may connect to the reader's socket: the tests' uid's group takes its
/// place.
const UNIT_GROUP: &str = "tracker";
/// How long the daemon gets to read the peers again: the dashboard reads them every 10 s (and
/// when an unknown address knocks), the daemon's device list every 30 s.
const PEERS_WAIT: Duration = Duration::from_secs(45);

/// What the daemon says when the socket refuses it (`wireguard::PeersError::SocketDenied`).
fn denied_line(socket: &Path) -> String {
    format!("permission denied on {}", socket.display())
}
const READABLE_AGAIN: &str = "are readable again";

/// tracker-wireguard-peers.socket and its service as systemd runs them, from the unit files:
/// a socket at ListenStream= with SocketUser=, SocketGroup= ([`UNIT_UID`]'s group for
/// [`UNIT_GROUP`]) and SocketMode=; for each connection the service's ExecStart= as root, no
/// input, its output to the connection. Stopped, and its socket removed, when dropped.
struct PeersReader {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeersReader {
    fn start() -> Result<Self> {
        let one = |unit: &'static str, key: &str| -> Result<&'static str> {
            let v = package::values_in(unit, key);
            ensure!(v.len() == 1, "{key}= in the reader's units: {v:?}");
            Ok(v[0])
        };
        let path = PathBuf::from(one(package::PEERS_SOCKET_UNIT, "ListenStream")?);
        assert_eq!(path, Path::new(wireguard::PEERS_SOCKET), "the daemon asks where the unit listens");
        ensure!(!path.exists(), "{} exists before the test: another reader is running", path.display());
        let mode = u32::from_str_radix(one(package::PEERS_SOCKET_UNIT, "SocketMode")?, 8)?;
        ensure!(one(package::PEERS_SOCKET_UNIT, "SocketUser")? == "root", "the socket is root's");
        ensure!(one(package::PEERS_SOCKET_UNIT, "SocketGroup")? == UNIT_GROUP, "the socket is for the unit's group");
        let argv = package::values_in(package::PEERS_SERVICE_UNIT, "ExecStart");
        let listener = UnixListener::bind(&path)?;
        std::os::unix::fs::chown(&path, Some(0), Some(UNIT_UID))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let out = std::process::Stdio::from(std::os::fd::OwnedFd::from(conn));
                let _ = Command::new(argv[0]).args(&argv[1..]).stdin(std::process::Stdio::null()).stdout(out).status();
            }
        });
        Ok(Self { path, stop, thread: Some(thread) })
    }
}

impl Drop for PeersReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// curl from the phone, through the tunnel, to the dashboard: the HTTP status, or `None` when
/// nothing at all came back (how the dashboard refuses a stranger).
fn phone_status(lab: &Lab) -> Result<Option<u16>> {
    let url = format!("http://{VPN_TUN_V4}:{DEFAULT_PORT}/");
    let mut c = lab.cmd(Ns::Phone, "curl");
    c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"]).arg(&url);
    let ran = run_bounded(c, Duration::from_secs(15))?;
    Ok(ran.stdout.trim().parse().ok().filter(|code| *code != 0))
}

/// The phone's public key: its device's identity.
fn phone_key(lab: &Lab) -> Result<String> {
    Ok(cmd::run(lab.cmd(Ns::Phone, "wg").args(["show", &lab.names().phone_iface, "public-key"]))?.trim().to_owned())
}

/// The public keys `tracker devices` lists.
fn device_keys(places: &UnitPlaces, pins: &Path) -> Vec<String> {
    places
        .json(pins, &["devices"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d["public_key"].as_str().map(str::to_owned))
        .collect()
}

/// Polls `ok` every half second until it holds or `limit` passes.
fn within(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A daemon log so far (empty before the file exists).
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The daemon started as the unit starts it, its output to `log_path`, once it said READY=1.
fn start_as_the_unit(
    lab: &Lab,
    t: &crate::common::Tracker,
    places: &UnitPlaces,
    caps: &[String],
    notify: &std::os::unix::net::UnixDatagram,
    log_path: &Path,
    what: &str,
) -> Result<tracker_tests::ChildGuard> {
    let mut c = unit_daemon(lab, t, &places.db, caps, &places.notify_path);
    let log = std::fs::File::create(log_path)?;
    c.stdout(log.try_clone()?).stderr(log);
    let d = lab.spawn(c)?;
    ensure!(notified(notify).with_context(|| read_log(log_path))?.starts_with("READY=1"), "{what} is ready");
    Ok(d)
}

#[test]
fn the_unit_user_reads_wireguard_gos_peers_from_the_packages_reader() -> Result<()> {
    let Some((_serial, mut lab, t)) = crate::common::lab_with_tracker("tpw1")? else {
        return Ok(());
    };
    let socket = LabNames::wg_socket(&lab.names().vpn_iface);
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "wireguard-go's socket mode, the reason for all this");

    let caps = unit_caps();
    let places = UnitPlaces::new("unit-tpw1")?;
    prepare_as_the_unit(&t.pins, &places.state)?;
    let notify = notify_socket(&places.notify_path)?;
    let log_path = lab.names().dir.join("wg-access-daemon.log");
    let mut d = start_as_the_unit(&lab, &t, &places, &caps, &notify, &log_path, "the daemon")?;
    let log = || read_log(&log_path);
    let key = phone_key(&lab)?;
    let denied = denied_line(&socket);

    // No reader: the phone gets nothing, however often it knocks (each knock reads the peers
    // again, at most once a second), no device is known, and the log says why, once.
    for _ in 0..3 {
        assert_eq!(phone_status(&lab)?, None, "the dashboard let the phone in without its peers: {}", log());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let said = log();
    assert_eq!(said.matches(&denied).count(), 1, "said once, naming the socket: {said}");
    let line = said.lines().find(|l| l.contains(&denied)).unwrap_or_default();
    for want in [
        format!("uid {UNIT_UID}"),
        format!("no reader answered on {}", wireguard::PEERS_SOCKET),
        "systemctl enable --now tracker-wireguard-peers.socket".to_owned(),
    ] {
        assert!(line.contains(&want), "{want:?} in: {line}");
    }
    assert!(device_keys(&places, &t.pins).is_empty(), "no device without the peers");

    // The package's reader: the peers are read, the phone is let in, its device known.
    let reader = PeersReader::start()?;
    assert!(within(Duration::from_secs(10), || phone_status(&lab).ok().flatten() == Some(200)), "{}", log());
    assert!(within(PEERS_WAIT, || device_keys(&places, &t.pins) == [key.clone()]), "the phone's device: {}", log());
    assert_eq!(log().matches(READABLE_AGAIN).count(), 1, "{}", log());

    // wireguard-go restarted: a new socket, root's and 0700 again; nothing to redo, the reader
    // reads it as it is.
    let old = std::fs::metadata(&socket)?;
    let before = log().len();
    lab.restart_vpn_wireguard()?;
    let new = std::fs::metadata(&socket)?;
    let made = |m: &std::fs::Metadata| (m.ino(), m.ctime(), m.ctime_nsec());
    assert_ne!(made(&new), made(&old), "a new socket (inode, time made)");
    assert_eq!(new.permissions().mode() & 0o777, 0o700, "as private as the first");
    // The daemon follows the interface made anew (its programs and the dashboard's sockets go
    // to it) and reads the new socket's peers through the reader: the phone gets in through
    // the new tunnel, nothing refused, the same daemon throughout.
    let back = within(Duration::from_secs(10), || phone_status(&lab).ok().flatten() == Some(200));
    assert!(back, "after wireguard-go's restart, the phone is let in: {}", log());
    let since = || log()[before..].to_owned();
    assert!(since().contains(&format!("{} was made anew", lab.names().vpn_iface)), "{}", since());
    assert!(!since().contains("cannot read the WireGuard peers"), "nothing refused: {}", since());
    drop(reader);

    d.signal(libc::SIGTERM)?;
    let status = d.wait_timeout(Duration::from_secs(20))?.context("the daemon did not stop")?;
    assert!(status.success(), "{status}: {}", log());

    // Why a reader rather than a grant on the socket: wireguard-go watches its socket for
    // attribute changes as for its deletion, and stops at an ACL entry (or a chmod, a chown).
    let iface = lab.names().vpn_iface.clone();
    cmd::run(Command::new("setfacl").arg("-m").arg(format!("u:{UNIT_UID}:rw")).arg(&socket))?;
    let gone = within(Duration::from_secs(10), || {
        lab.names().wireguard_go_procs().is_ok_and(|p| !p.iter().any(|p| p.argv.last() == Some(&iface)))
    });
    assert!(gone, "wireguard-go kept running after its socket's ACL changed");
    Ok(())
}
