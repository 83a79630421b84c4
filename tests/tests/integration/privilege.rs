//! Least privilege (issue 14): the daemon run with exactly the capabilities its unit grants
//! (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN; `setpriv --bounding-set`, as root otherwise) attaches,
//! counts and blocks, and tells a service manager it is ready (sd_notify `READY=1` on
//! `$NOTIFY_SOCKET`); with one of them less it names the one missing and changes nothing.
//! Root only; under CI=true it never skips.

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use tracker_tests::lab::{SMALL_TXT, WEB_V4};

use crate::common::{Ran, attached_pid_is, curl, daemon_cmd, run_bounded, run_cli, tracker_with};

/// The unit's capabilities, as setpriv names them.
const UNIT_CAPS: [&str; 3] = ["bpf", "perfmon", "net_admin"];

/// `tracker run` for `t` under `setpriv` with the bounding set `caps` (root's effective set
/// becomes exactly these at exec), `NOTIFY_SOCKET` set to `notify`.
fn daemon_with_caps(
    lab: &tracker_tests::Lab,
    t: &crate::common::Tracker,
    caps: &[&str],
    notify: &std::path::Path,
) -> std::process::Command {
    let plain = daemon_cmd(lab, &t.db, &t.pins, &[]);
    // nsenter --net=NS tracker ARGS -> nsenter --net=NS setpriv --bounding-set=... tracker ARGS
    let args: Vec<std::ffi::OsString> = plain.get_args().map(Into::into).collect();
    let mut c = std::process::Command::new(plain.get_program());
    c.arg(&args[0])
        .arg("setpriv")
        .arg(format!("--bounding-set=-all,{}", caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(",")));
    c.args(&args[1..]).env("NOTIFY_SOCKET", notify);
    c
}

#[test]
fn the_daemon_runs_with_exactly_its_units_capabilities_and_says_what_is_missing() -> Result<()> {
    let Some((_serial, lab, t)) = crate::common::lab_with_tracker("tpv1")? else {
        return Ok(());
    };
    let notify_path = lab.names().dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).context("binding the notify socket")?;
    notify.set_read_timeout(Some(Duration::from_secs(20)))?;

    // One capability less: refused, naming it, and nothing attached.
    for drop in UNIT_CAPS {
        let caps: Vec<&str> = UNIT_CAPS.iter().copied().filter(|c| *c != drop).collect();
        let ran: Ran = run_bounded(daemon_with_caps(&lab, &t, &caps, &notify_path), Duration::from_secs(20))?;
        let name = format!("CAP_{}", drop.to_ascii_uppercase());
        assert!(ran.exited_nonzero() && ran.stderr.contains(&name), "without {name}: {}", ran.describe());
        let s = t.try_json(&["status"]).unwrap_or(Value::Null);
        assert_ne!(s["xdp_attached"], true, "nothing attached without {name}: {s}");
    }

    // Exactly the unit's: ready is told, it counts and blocks.
    let mut c = daemon_with_caps(&lab, &t, &UNIT_CAPS, &notify_path);
    let log = std::fs::File::create(lab.names().dir.join("privileged-daemon.log"))?;
    c.stdout(log.try_clone()?).stderr(log);
    let started = Instant::now();
    let mut d = lab.spawn(c)?;
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).context("no sd_notify message within 20 s")?;
    let said = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(said.starts_with("READY=1\n") && said.contains("STATUS="), "{said:?}");
    eprintln!("READY=1 {:?} after start", started.elapsed());
    let s = t.try_json(&["status"])?;
    ensure!(s["xdp_attached"] == true && attached_pid_is(&s, d.pid()), "ready, so attached: {s}");

    let blocked = format!("{WEB_V4}/32");
    let ran = run_cli(tracker_with(&t.db, &t.pins, &["block-ip", &blocked]))?;
    ensure!(ran.exited_ok(), "block-ip: {}", ran.describe());
    assert!(curl(&lab, &format!("http://{WEB_V4}/{SMALL_TXT}"), 1).is_err(), "blocked under the unit's capabilities");
    let ran = run_cli(tracker_with(&t.db, &t.pins, &["unblock-ip", &blocked]))?;
    ensure!(ran.exited_ok(), "unblock-ip: {}", ran.describe());
    let got = curl(&lab, &format!("http://{WEB_V4}/{SMALL_TXT}"), 5)?;
    assert!(got > 0, "fetched once unblocked");
    let counted = t.wait_for(Duration::from_secs(20), |t| {
        t.try_json(&["flows"]).ok().is_some_and(|v| {
            v.as_array().is_some_and(|a| a.iter().any(|f| f["remote"] == WEB_V4.to_string() && f["remote_port"] == 80))
        })
    });
    assert!(counted, "the fetch is counted");

    d.signal(libc::SIGTERM)?;
    let n = notify.recv(&mut buf).context("no STOPPING=1")?;
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let status = d.wait_timeout(Duration::from_secs(20))?.context("the daemon did not stop")?;
    assert!(status.success(), "{status}");
    Ok(())
}
