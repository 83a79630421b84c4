//! Learned entries through the lab's tunnel (`daemon::learned`): a name whose CNAME chain leads
//! into a blocked domain is refused by the kernel from the device's next query and the chain's
//! address is dropped; an address a device was answered before the rule was made is dropped
//! once the rule comes; unblocking opens both again. Every count is the test's own.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use tracker_tests::{
    Lab, Ns,
    lab::{Resolver, SMALL_TXT},
    zone,
};

use super::{Ask, Dug, ask, assert_refused, assert_resolves, blocks, cli, row_of};

use crate::common::{Ran, Tracker, run_bounded};

/// How long the daemon may take to learn an entry: its drain (100 ms) for an answer it sees,
/// its rules tick (500 ms) for a rule made after the answer; the bound leaves room for a busy
/// machine, the measured time is printed.
const LEARN_LIMIT: Duration = Duration::from_secs(3);
/// One poll's pause.
const POLL: Duration = Duration::from_millis(100);
/// curl's limit per fetch: a dropped SYN is retried after 1 s, so this sees one or two.
const CURL_MAX_S: &str = "2";
/// curl's limit per fetch while polling: a lab fetch takes milliseconds, so one that has not
/// ended in this time was dropped.
const CURL_PROBE_S: &str = "0.3";
/// curl's exit status when its time ran out (no SYN-ACK came: the packets were dropped).
const CURL_TIMED_OUT: i32 = 28;

/// Fetches the lab's small file from `addr` by address from the phone, within `max_s`.
fn curl_addr(lab: &Lab, addr: IpAddr, max_s: &str) -> Result<Ran> {
    let host = if addr.is_ipv6() { format!("[{addr}]") } else { addr.to_string() };
    let mut c = lab.cmd(Ns::Phone, "curl");
    c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", max_s])
        .arg(format!("http://{host}/{SMALL_TXT}"));
    run_bounded(c, Duration::from_secs(15))
}

fn fetched(r: &Ran) -> bool {
    r.exited_ok() && r.stdout.trim() == "200"
}

/// Polls `probe` until it says yes, at most [`LEARN_LIMIT`]; returns when, and how many tries.
fn poll(mut probe: impl FnMut() -> Result<bool>) -> Result<Option<(Duration, u32)>> {
    let start = Instant::now();
    let mut tries = 0;
    while start.elapsed() <= LEARN_LIMIT {
        tries += 1;
        if probe()? {
            return Ok(Some((start.elapsed(), tries)));
        }
        std::thread::sleep(POLL);
    }
    Ok(None)
}

fn is_kernel_nxdomain(d: &Dug) -> bool {
    d.status.as_deref() == Some("NXDOMAIN") && d.authority == Some(0) && d.answers.is_empty()
}

#[test]
fn a_cname_chain_into_a_blocked_domain_is_refused_and_its_address_dropped() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tbl1")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let resolver = Resolver::OnHost.addr(false);
    let [head, _, end] = zone::CHAIN;
    let blocked = "cdn.lab.test";
    assert!(end.ends_with(blocked) && !head.ends_with(blocked), "the chain leaves {head} for {blocked}");
    let cdn = IpAddr::from(zone::CDN_V4);
    assert!(fetched(&curl_addr(&lab, cdn, CURL_PROBE_S)?), "the CDN address serves before the block");

    cli(&t, &["block-domain", blocked])?;
    // The head is not under the rule: the kernel cannot know where its chain leads, and the
    // first answer gets through. From it the daemon learns the head as an alias of the rule.
    assert_resolves(&lab, &Ask::udp(resolver, head))?;
    let mut answered = 0;
    let learned = poll(|| {
        let d = ask(&lab, &Ask::udp(resolver, head))?;
        answered += u32::from(d.status.as_deref() == Some("NOERROR"));
        Ok(is_kernel_nxdomain(&d))
    })?;
    let Some((after, tries)) = learned else {
        panic!("{head} was never refused within {LEARN_LIMIT:?}:\n{}", t.log_tail());
    };
    eprintln!("{head} refused {after:?} after its first answer ({tries} tries, {answered} more answered)");
    // From then on every query for it is refused at once, over either family and resolver.
    let mut refused: u32 = 1;
    for r in Resolver::ALL {
        for v6 in [false, true] {
            assert_refused(&lab, &Ask::udp(r.addr(v6), head))?;
            refused += 1;
        }
    }
    // The address its answer carried is dropped: curl by address times out.
    let ran = curl_addr(&lab, cdn, CURL_MAX_S)?;
    assert_eq!(ran.status.and_then(|s| s.code()), Some(CURL_TIMED_OUT), "{}", ran.describe());

    let want = u64::from(refused);
    let counted = |t: &Tracker| {
        let rows = blocks(t, false).ok()?;
        let row = row_of(&rows, "domain", blocked).ok()?.clone();
        (row["queries_refused"] == want && row["packets_dropped"].as_u64() >= Some(1)).then_some(row)
    };
    ensure!(t.wait_for(super::WAIT, |t| counted(t).is_some()), "the rule's counts: {:#?}", blocks(&t, false)?);
    let row = counted(&t).unwrap_or_default();
    eprintln!("rule {blocked}: {} queries refused, {} packets dropped", row["queries_refused"], row["packets_dropped"]);

    // Unblocked: the alias goes with the rule at once, the address within a rules tick.
    cli(&t, &["unblock-domain", blocked])?;
    assert_resolves(&lab, &Ask::udp(resolver, head))?;
    let open = poll(|| Ok(fetched(&curl_addr(&lab, cdn, CURL_PROBE_S)?)))?;
    ensure!(open.is_some(), "the CDN address stayed blocked after unblock-domain:\n{}", t.log_tail());
    assert!(t.daemon_running(), "the daemon died:\n{}", t.log_tail());
    t.stop()?;
    Ok(())
}

#[test]
fn an_address_answered_before_the_rule_is_dropped_when_the_rule_comes() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tbl2")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let web = IpAddr::from(tracker_tests::lab::WEB_V4);
    // The phone is told where the name is, and uses it.
    assert_resolves(&lab, &Ask::udp(Resolver::OnHost.addr(false), zone::WEB_NAME))?;
    assert!(fetched(&curl_addr(&lab, web, CURL_PROBE_S)?), "the web server serves before the block");
    // The daemon has the answer once it has swept the exchange into the DNS log.
    let seen = t.wait_for(super::WAIT, |t| {
        t.try_json(&["dns"])
            .ok()
            .is_some_and(|v| v.as_array().is_some_and(|a| a.iter().any(|e| e["name"] == zone::WEB_NAME)))
    });
    ensure!(seen, "the daemon never logged the answer for {}", zone::WEB_NAME);

    // The phone holds the answer and may connect without asking again: the rule reaches the
    // address too.
    cli(&t, &["block-domain", zone::WEB_NAME])?;
    let dropped = poll(|| Ok(!fetched(&curl_addr(&lab, web, CURL_PROBE_S)?)))?;
    let Some((after, _)) = dropped else {
        panic!("{web} stayed open after block-domain {}:\n{}", zone::WEB_NAME, t.log_tail());
    };
    eprintln!("{web} dropped within {after:?} of block-domain returning (a probe is {CURL_PROBE_S} s)");
    let ran = curl_addr(&lab, web, CURL_MAX_S)?;
    assert_eq!(ran.status.and_then(|s| s.code()), Some(CURL_TIMED_OUT), "{}", ran.describe());
    let rows = blocks(&t, false)?;
    let row = row_of(&rows, "domain", zone::WEB_NAME)?;
    assert!(row["packets_dropped"].as_u64() >= Some(1), "{row:#}");
    t.stop()?;
    Ok(())
}

#[test]
fn an_address_shared_with_an_allowed_name_stays_open_unless_block_shared() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tbl3")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let resolver = Resolver::OnHost.addr(false);
    let [allowed, blocked] = zone::SHARED_NAMES;
    let shared = IpAddr::from(zone::SHARED_V4);
    // The phone is told both names are at one address.
    assert_resolves(&lab, &Ask::udp(resolver, allowed))?;
    assert_resolves(&lab, &Ask::udp(resolver, blocked))?;
    let seen = t.wait_for(super::WAIT, |t| {
        t.try_json(&["dns"]).ok().is_some_and(|v| {
            v.as_array().is_some_and(|a| [allowed, blocked].iter().all(|n| a.iter().any(|e| e["name"] == *n)))
        })
    });
    ensure!(seen, "the daemon never logged both answers");

    // By default the rule holds by name: the address stays open for the allowed name, and
    // `tracker blocks` says so.
    cli(&t, &["block-domain", blocked])?;
    let shown = t.wait_for(super::WAIT, |t| {
        blocks(t, false).ok().and_then(|rows| row_of(&rows, "domain", blocked).ok().map(|r| r["shared_open"] == 1))
            == Some(true)
    });
    ensure!(shown, "shared_open never reached 1: {:#?}", blocks(&t, false)?);
    assert!(fetched(&curl_addr(&lab, shared, CURL_MAX_S)?), "the shared address stays open");
    let table = cli(&t, &["blocks"])?;
    assert!(table.stdout.contains("left open") && table.stdout.contains("--block-shared"), "{}", table.stdout);
    assert_refused(&lab, &Ask::udp(resolver, blocked))?;

    // --block-shared given to the same block: the address goes too, within a rules tick.
    cli(&t, &["block-domain", blocked, "--block-shared"])?;
    let dropped = poll(|| Ok(!fetched(&curl_addr(&lab, shared, CURL_PROBE_S)?)))?;
    ensure!(dropped.is_some(), "--block-shared left {shared} open:\n{}", t.log_tail());
    let rows = blocks(&t, false)?;
    let row = row_of(&rows, "domain", blocked)?;
    assert_eq!(row["block_shared"], true, "{row:#}");
    // With --client it is refused: the address tries hold for every device.
    let bad = crate::common::run_cli(crate::common::tracker_with(
        &t.db,
        &t.pins,
        &["block-domain", allowed, "--block-shared", "--client", &tracker_tests::lab::PHONE_V4.to_string()],
    ))?;
    assert!(bad.exited_nonzero() && bad.stderr.contains("--block-shared"), "{}", bad.describe());
    assert!(row_of(&blocks(&t, false)?, "domain", allowed).is_err(), "nothing was changed");
    t.stop()?;
    Ok(())
}
