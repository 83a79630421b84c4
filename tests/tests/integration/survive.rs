//! Surviving crashes (issue 14): the daemon killed with SIGKILL at random moments of a bounded
//! flood through the lab's tunnel, again and again. While it is dead the kernel keeps blocking;
//! each restart picks up what the kernel counted meanwhile; at the end every flow of every
//! round is in SQLite exactly once with its exact packet count, and the database passes
//! `PRAGMA integrity_check`. And wireguard-go restarted under the daemon: it follows the new
//! interface. Root only; under CI=true they never skip.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use tracker_tests::{
    flood::{self, Flood},
    lab::SMALL_TXT,
    rng::Rng,
    zone::SHARED_V4,
};

use crate::common::{Ran, run_bounded};

/// Rounds of flood-and-kill, flows per round and their rate: each round about 1.5 s.
const ROUNDS: u32 = 6;
const FLOWS: u32 = 3_000;
const RATE: f64 = 2_000.0;
/// Ports each round's flows take per destination (3 destinations): rounds never share a tuple.
const PORTS_PER_ROUND: u16 = 1_100;
/// The kill falls this far into a round's flood, drawn per round.
const KILL_AFTER_MS: (u64, u64) = (100, 1_400);
const SEED: u64 = 0x6b69_6c6c;

/// curl to the blocked web server (an address the flood never sends to) from the phone: times
/// out (its SYN is dropped) within `max_s`.
fn curl_blocked(lab: &tracker_tests::Lab, max_s: &str) -> Result<Ran> {
    let mut c = lab.cmd(tracker_tests::Ns::Phone, "curl");
    c.args(["-sS", "-o", "/dev/null", "--max-time", max_s]).arg(format!("http://{SHARED_V4}/{SMALL_TXT}"));
    run_bounded(c, Duration::from_secs(15))
}

#[test]
fn kill_9_under_load_loses_no_row_and_counts_nothing_twice() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tsv1")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let blocked = format!("{SHARED_V4}/32");
    let ran = crate::common::run_cli(crate::common::tracker_with(&t.db, &t.pins, &["block-ip", &blocked]))?;
    ensure!(ran.exited_ok(), "block-ip: {}", ran.describe());

    let mut rng = Rng::new(SEED, 0, 0);
    let mut reports = Vec::new();
    for round in 0..ROUNDS {
        let mut plan = Flood::new(FLOWS, RATE);
        plan.first_port = flood::DEFAULT_FIRST_PORT + PORTS_PER_ROUND * round as u16;
        let kill_after = Duration::from_millis(rng.range(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
        // The flood runs on while the daemon is killed under it.
        let report = std::thread::scope(|s| -> Result<_> {
            let sender = s.spawn(|| flood::run(&lab, &plan));
            std::thread::sleep(kill_after);
            t.kill()?;
            sender.join().map_err(|_| anyhow::anyhow!("the flood panicked"))?
        })?;
        ensure!(report.complete, "round {round}: the flood did not finish: {report:?}");
        eprintln!("round {round}: killed {kill_after:?} into {} flows", report.flows_sent);
        // Dead: the kernel still blocks.
        let ran = curl_blocked(&lab, "1")?;
        assert_eq!(
            ran.status.and_then(|s| s.code()),
            Some(28),
            "round {round}: blocked while dead: {}",
            ran.describe()
        );
        reports.push(report);
        t.start(&lab)?;
    }
    t.settle();
    t.stop()?;

    let flows = t.flows();
    let mut total = flood::Found::default();
    for (round, report) in reports.iter().enumerate() {
        let found = flood::compare(report, &flows)?;
        assert_eq!(
            (found.once, found.exact, found.missing, found.duplicated),
            (u64::from(FLOWS), u64::from(FLOWS), 0, 0),
            "round {round}: every flow once, exactly counted: {found:?}"
        );
        total.exact += found.exact;
    }
    eprintln!("{ROUNDS} kills: {} flows, each once with its exact count", total.exact);
    let db = rusqlite::Connection::open(&t.db).context("opening the database")?;
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    Ok(())
}

/// The VPN interface's index in the lab's VPN namespace.
fn vpn_ifindex(lab: &tracker_tests::Lab) -> Result<u64> {
    let out = tracker_tests::cmd::run(lab.vpn_cmd("ip").args(["-j", "link", "show", "dev", &lab.names().vpn_iface]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["ifindex"].as_u64().with_context(|| format!("no ifindex in {out}"))
}

/// The program of a pinned link, from bpftool.
fn pinned_prog(t: &crate::common::Tracker, name: &str) -> Result<u64> {
    let path = t.pins.join(name);
    let out = tracker_tests::cmd::run(
        std::process::Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(&path),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("bpftool said {out}"))?;
    v["prog_id"].as_u64().with_context(|| format!("no prog_id for {}: {out}", path.display()))
}

/// The ids of the programs `bpftool net` lists on the VPN's interface, in its namespace, with
/// bpftool's words.
fn attached_progs(lab: &tracker_tests::Lab) -> Result<(Vec<u64>, String)> {
    let out =
        tracker_tests::cmd::run(lab.vpn_cmd("bpftool").args(["-j", "net", "show", "dev", &lab.names().vpn_iface]))?;
    let v: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("bpftool said {out}"))?;
    fn ids(v: &serde_json::Value, out: &mut Vec<u64>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_u64()) {
                        ("id" | "prog_id", Some(id)) => out.push(id),
                        _ => ids(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| ids(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    ids(&v, &mut found);
    Ok((found, out))
}

/// wireguard-go restarted under a running daemon, as `systemctl restart wg-quick@wg0` does: a
/// new wg0 with a new index, from which the kernel released both programs as the old one went.
/// The same daemon attaches them to the new one: a block made before is enforced through the
/// new tunnel from its first packet, flows through it are counted exactly, the dashboard
/// answers the phone on the new interface, and `tracker status` says attached, truthfully.
/// Then the daemon is stopped and wireguard-go restarted again: with no daemon to follow it,
/// status says the programs are not attached (their links are pinned, on no interface).
#[test]
fn a_restarted_wireguard_go_is_followed_with_blocks_counting_and_the_dashboard() -> Result<()> {
    use std::net::IpAddr;
    use tracker::{kernel::PIN_LINK_XDP, web::dashboard::DEFAULT_PORT};
    use tracker_tests::lab::{ECHO_V4, ECHO_V6, PHONE_V4, PHONE_V6, UDP_ECHO_PORT, VPN_TUN_V4};

    let Some((_serial, mut lab, mut t)) = crate::common::lab_with_tracker("tsv2")? else {
        return Ok(());
    };
    t.start(&lab)?;
    t.ok(&["block-ip", &SHARED_V4.to_string()]);
    let blocked = curl_blocked(&lab, "2")?;
    assert_eq!(blocked.status.and_then(|s| s.code()), Some(28), "blocked before the restart: {}", blocked.describe());
    let dashboard = |lab: &tracker_tests::Lab| -> Result<String> {
        let mut c = lab.cmd(tracker_tests::Ns::Phone, "curl");
        c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
            .arg(format!("http://{VPN_TUN_V4}:{DEFAULT_PORT}/"));
        Ok(run_bounded(c, Duration::from_secs(15))?.stdout.trim().to_owned())
    };
    ensure!(dashboard(&lab)? == "200", "the dashboard answers the phone before the restart");

    let old = vpn_ifindex(&lab)?;
    lab.restart_vpn_wireguard()?;
    let new = vpn_ifindex(&lab)?;
    ensure!(new != old, "a new interface (index {old} again)");
    let made_anew = format!("{} was made anew", lab.names().vpn_iface);
    ensure!(
        t.wait_for(Duration::from_secs(5), |t| t.log_text().contains(&made_anew)),
        "the daemon did not say it followed: {}",
        t.log_tail()
    );
    // bpftool 7.1 lists XDP programs by interface, not TCX ones: TC egress shows itself
    // below, in the packets counted towards the phone.
    let (on_new, said) = attached_progs(&lab)?;
    assert!(on_new.contains(&pinned_prog(&t, PIN_LINK_XDP)?), "XDP is not on the new interface: {said}");

    // The block, through the new tunnel, at its first try.
    let blocked = curl_blocked(&lab, "2")?;
    assert_eq!(blocked.status.and_then(|s| s.code()), Some(28), "blocked after the restart: {}", blocked.describe());
    // Counted through the new tunnel, exactly, both ways (XDP up, TC down): datagrams of known
    // size, both families.
    let (n, size) = (7u64, 64u64);
    let mut ports = Vec::new();
    for (phone, echo) in [(IpAddr::V4(PHONE_V4), IpAddr::V4(ECHO_V4)), (IpAddr::V6(PHONE_V6), IpAddr::V6(ECHO_V6))] {
        ports.push((echo, crate::common::udp_exchange(&lab, phone, echo, n as usize, size as usize)?));
    }
    t.settle();
    let flows = t.flows();
    for ((echo, port), header) in ports.into_iter().zip([20u64, 40]) {
        let f = flows
            .iter()
            .find(|f| f["remote"] == echo.to_string() && f["client_port"] == port && f["remote_port"] == UDP_ECHO_PORT)
            .with_context(|| format!("no flow to {echo} from port {port}"))?;
        let datagram = header + 8 + size;
        let got = [&f["packets_up"], &f["bytes_up"], &f["packets_down"], &f["bytes_down"]].map(|v| v.as_u64());
        assert_eq!(got, [n, n * datagram, n, n * datagram].map(Some), "{echo}: {f}");
    }
    // The dashboard, on the new interface (its sockets were tied to the old one's index).
    let answered = (0..10).any(|_| {
        dashboard(&lab).is_ok_and(|code| code == "200") || {
            std::thread::sleep(Duration::from_millis(500));
            false
        }
    });
    assert!(answered, "the dashboard does not answer the phone on the new interface: {}", t.log_tail());
    let status = t.json(&["status"]);
    assert_eq!((status["xdp_attached"].as_bool(), status["tc_egress_attached"].as_bool()), (Some(true), Some(true)));
    assert!(t.daemon_running(), "the same daemon ran throughout");

    // No daemon to follow the next restart: status tells the truth.
    t.stop()?;
    lab.restart_vpn_wireguard()?;
    let status = t.json(&["status"]);
    assert_eq!(
        (status["xdp_attached"].as_bool(), status["tc_egress_attached"].as_bool()),
        (Some(false), Some(false)),
        "{status}"
    );
    Ok(())
}
