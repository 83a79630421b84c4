//! End-to-end test of `tracker block-dns-bypass` (issue 12's "walking around the block") in
//! the lab: through the real WireGuard tunnel, the phone's TCP connection to port 853 of a
//! public resolver's address (the lab's stand-in, `Lab::start_dot`) fails at once and its
//! datagram there gets no echo, and its lookup of `dns.google` and of Firefox's canary domain
//! is NXDOMAIN, while the rule holds; before it, after `--dry-run` and after
//! `unblock-dns-bypass` all of them work. `tracker blocks` shows the rule with its kind and
//! exactly its hits. The phone resolved `dns.google` before the rule, and the daemon does not
//! block the address it was told (no learned address, `daemon::learned`): a public resolver's
//! address also serves the plain DNS the rule wants apps to fall back to. Root only; under
//! CI=true it never skips.

use std::{net::IpAddr, time::Duration};

use crate::common::{Ran, Tracker, run_bounded, run_cli, tracker_with};
use anyhow::{Context as _, Result, ensure};
use ipnet::IpNet;
use serde_json::Value;
use tracker::{blocking::KernelBlocks, kernel::PinDir};
use tracker_tests::{
    Lab, Ns,
    lab::{DOT_PORT, Resolver},
    zone,
};

/// How long the daemon gets to put the kernel's counts into SQLite (it sweeps every 300 ms).
const WAIT: Duration = Duration::from_secs(20);
/// A reset connect, or a refused lookup, takes a round trip through the tunnel: well under
/// this, where a dropped SYN would wait for the probe's whole timeout.
const AT_ONCE: Duration = Duration::from_millis(500);
/// The probe's own limits: a TCP connect, and the wait for a UDP echo.
const PROBE_TIMEOUT_S: f64 = 3.0;

/// Connects (TCP) or sends a datagram and waits for its echo (UDP) from the phone to port 853
/// of `addr`; prints what happened (`connected`, `echoed`, `timeout`, or the errno's name) and
/// the seconds it took.
const PROBE: &str = r#"
import errno, socket, sys, time
kind, addr, port, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
start = time.monotonic()
try:
    if kind == "tcp":
        s = socket.create_connection((addr, port), timeout=limit)
        what = "connected"
    else:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(limit)
        s.sendto(b"doq?", (addr, port))
        s.recvfrom(64)
        what = "echoed"
except socket.timeout:
    what = "timeout"
except OSError as e:
    what = errno.errorcode.get(e.errno, str(e.errno))
print(what, round(time.monotonic() - start, 3))
"#;

/// What one probe saw.
#[derive(Debug)]
struct Probe {
    outcome: String,
    seconds: f64,
}

fn probe(lab: &Lab, tcp: bool, addr: IpAddr) -> Result<Probe> {
    let mut c = lab.cmd(Ns::Phone, "python3");
    c.arg("-c").arg(PROBE).arg(if tcp { "tcp" } else { "udp" });
    c.arg(addr.to_string()).arg(DOT_PORT.to_string()).arg(PROBE_TIMEOUT_S.to_string());
    let ran = run_bounded(c, Duration::from_secs(15))?;
    ensure!(ran.exited_ok(), "the probe did not run: {}", ran.describe());
    let mut f = ran.stdout.split_whitespace();
    let (outcome, seconds) = (f.next().unwrap_or_default().to_owned(), f.next().and_then(|s| s.parse().ok()));
    Ok(Probe { outcome, seconds: seconds.with_context(|| format!("the probe printed {:?}", ran.stdout))? })
}

/// dig from the phone to the on-host resolver: the status (`NOERROR`, `NXDOMAIN`, ...) and the
/// addresses answered.
fn lookup(lab: &Lab, name: &str) -> Result<(String, Vec<String>)> {
    let mut c = lab.cmd(Ns::Phone, "dig");
    c.args(["+tries=1", "+time=3", "+noall", "+comments", "+answer"])
        .arg(format!("@{}", Resolver::OnHost.v4()))
        .args([name, "A"]);
    let ran = run_bounded(c, Duration::from_secs(10))?;
    let status = ran
        .stdout
        .lines()
        .find_map(|l| l.split_once("status: "))
        .and_then(|(_, rest)| rest.split(',').next())
        .with_context(|| format!("dig printed no status: {}", ran.describe()))?;
    let addrs = ran
        .stdout
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .collect();
    Ok((status.to_owned(), addrs))
}

/// The learned addresses in the daemon's pinned address map: (address, rule id).
fn learned(t: &Tracker) -> Result<Vec<(IpNet, u32)>> {
    let blocks = KernelBlocks::open_pinned(&PinDir(t.pins.clone()))?.context("the daemon's pinned maps")?;
    Ok(blocks.learned()?.into_iter().map(|(net, v)| (net, v.rule_id)).collect())
}

/// `tracker ARGS`, which must succeed.
fn cli(t: &Tracker, args: &[&str]) -> Result<Ran> {
    let ran = run_cli(tracker_with(&t.db, &t.pins, args))?;
    ensure!(ran.exited_ok(), "tracker {args:?}: {}", ran.describe());
    Ok(ran)
}

fn blocks(t: &Tracker) -> Result<Vec<Value>> {
    Ok(t.try_json(&["blocks", "--expired"])?.as_array().context("tracker blocks prints an array")?.clone())
}

/// Everything open: both families connect and echo, and `dns.google` resolves to the
/// stand-in's address.
fn assert_open(lab: &Lab, when: &str) -> Result<()> {
    for addr in [IpAddr::V4(zone::DNS_GOOGLE_V4), IpAddr::V6(zone::DNS_GOOGLE_V6)] {
        let p = probe(lab, true, addr)?;
        assert_eq!(p.outcome, "connected", "{when}: TCP to {addr}:853: {p:?}");
    }
    let p = probe(lab, false, zone::DNS_GOOGLE_V4.into())?;
    assert_eq!(p.outcome, "echoed", "{when}: UDP to port 853: {p:?}");
    let (status, addrs) = lookup(lab, zone::DNS_GOOGLE)?;
    assert_eq!((status.as_str(), addrs), ("NOERROR", vec![zone::DNS_GOOGLE_V4.to_string()]), "{when}: dns.google");
    Ok(())
}

#[test]
fn block_dns_bypass_stops_port_853_and_refuses_the_doh_names_until_unblocked() -> Result<()> {
    let Some((_serial, mut lab, mut t)) = crate::common::lab_with_tracker("tbp")? else {
        return Ok(());
    };
    lab.start_dot()?;
    t.start(&lab)?;
    assert_open(&lab, "before the rule")?;
    // The canary is no name of the lab's resolvers: they refuse it (REFUSED), never NXDOMAIN.
    assert_eq!(lookup(&lab, "use-application-dns.net")?.0, "REFUSED");

    // --dry-run: says what it would do, changes nothing.
    let dry = cli(&t, &["block-dns-bypass", "--dry-run"])?;
    assert!(dry.stdout.contains("dry run, nothing changed"), "{}", dry.describe());
    assert!(dry.stdout.contains("connections to port 853"), "{}", dry.describe());
    assert!(blocks(&t)?.is_empty(), "a dry run stores no rule");
    assert_open(&lab, "after --dry-run")?;

    let made = cli(&t, &["block-dns-bypass", "--comment", "lab"])?;
    assert!(made.stdout.contains("in the kernel"), "{}", made.describe());
    // TCP: the reset comes back through the tunnel at once; connect() is refused.
    for addr in [IpAddr::V4(zone::DNS_GOOGLE_V4), IpAddr::V6(zone::DNS_GOOGLE_V6)] {
        let p = probe(&lab, true, addr)?;
        assert_eq!(p.outcome, "ECONNREFUSED", "TCP to {addr}:853 under the rule: {p:?}");
        assert!(p.seconds <= AT_ONCE.as_secs_f64(), "refused after {} s, not at once: {p:?}", p.seconds);
    }
    // UDP: the datagram is dropped, so no echo comes.
    let p = probe(&lab, false, zone::DNS_GOOGLE_V4.into())?;
    assert_eq!(p.outcome, "timeout", "UDP to port 853 under the rule: {p:?}");
    // The names: NXDOMAIN from the kernel; another name of the same company still resolves.
    for name in [zone::DNS_GOOGLE, "use-application-dns.net"] {
        let (status, addrs) = lookup(&lab, name)?;
        assert_eq!((status.as_str(), addrs.len()), ("NXDOMAIN", 0), "{name} under the rule");
    }
    assert_eq!(lookup(&lab, zone::WWW_GOOGLE)?.0, "NOERROR", "www.google.com is not the rule's");

    // `tracker blocks`: its kind, and exactly what it stopped: 3 packets (two SYNs reset, one
    // datagram dropped) and 2 queries refused.
    let want = |r: &Value| r["packets_dropped"] == 3 && r["queries_refused"] == 2;
    let counted = t.wait_for(WAIT, |t| blocks(t).is_ok_and(|rows| rows.iter().any(want)));
    let rows = blocks(&t)?;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert!(counted, "the rule's hits never reached 3 dropped, 2 refused within {WAIT:?}: {r:#}");
    // The answer the phone got before the rule: its address stays open (given the daemon's
    // rules tick, 0.5 s, twice over to have looked).
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(learned(&t)?, [], "a dns-bypass rule teaches no address:\n{}", t.log_tail());
    assert_eq!((r["kind"].as_str(), r["rule"].as_str()), (Some("dns-bypass"), Some("DoT, DoQ, DoH")), "{r:#}");
    assert_eq!((r["device"].as_str(), r["comment"].as_str(), r["hits"].as_u64()), (Some("all"), Some("lab"), Some(5)));
    let shipped = tracker::rules::bypass::names().len() as u64;
    assert_eq!(r["domains"].as_u64(), Some(shipped), "{r:#}");
    assert!(r["last_hit"].is_string(), "{r:#}");

    cli(&t, &["unblock-dns-bypass"])?;
    assert_open(&lab, "after unblock-dns-bypass")?;
    let rows = blocks(&t)?;
    assert_eq!((rows[0]["end_reason"].as_str(), rows[0]["hits"].as_u64()), (Some("unblocked"), Some(5)), "{rows:#?}");
    assert!(t.daemon_running(), "the daemon died:\n{}", t.log_tail());
    t.stop()?;
    Ok(())
}
