//! End-to-end test of `tracker experiment` and `tracker report --block-window` (issue 12): a
//! lab company blocked for 20 s through the real tunnel, the phones' lookups and fetches before
//! and during it, and the report's exact counts of what was refused, from whom, and what the
//! devices did in each half. Every expected number is the test's own queries and fetches,
//! counted as they are made. Root only; under CI=true it never skips. Run it with
//! `cargo xtask test -- --test integration -- experiment::`.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use tracker_tests::{
    Lab, Ns,
    lab::{PHONE_V4, PHONE2_V4, Resolver, SMALL_TXT},
    zone,
};

use crate::common::{next_port, run_bounded, run_cli, tracker_with};

/// The experiment's length: long enough for the test's lookups, short for the suite.
const FOR: &str = "20s";
const FOR_MS: u64 = 20_000;
/// How long the daemon gets to put what the test did into SQLite (it sweeps every 300 ms).
const WAIT: Duration = Duration::from_secs(20);

/// One A question with dig from `ns`'s address `client` to the on-host resolver: its status.
fn dig(lab: &Lab, ns: Ns, client: IpAddr, name: &str) -> Result<String> {
    let mut c = lab.cmd(ns, "dig");
    c.args(["+tries=1", "+time=5", "+noall", "+comments"])
        .arg("-b")
        .arg(format!("{client}#{}", next_port()))
        .arg(format!("@{}", Resolver::OnHost.addr(false)))
        .args([name, "A"]);
    let ran = run_bounded(c, Duration::from_secs(15))?;
    ran.stdout
        .lines()
        .find_map(|l| l.split_once("status: "))
        .and_then(|(_, rest)| rest.split(',').next())
        .map(str::to_owned)
        .with_context(|| format!("dig {name} printed no status: {}", ran.describe()))
}

/// curl -4 by name from the phone through the on-host resolver (glibc asks one A question):
/// its exit status.
fn curl(lab: &Lab, name: &str) -> Result<Option<i32>> {
    let mut c = lab.phone_cmd_resolving(Resolver::OnHost.addr(false), "curl")?;
    c.args(["-4", "-sS", "-o", "/dev/null", "--max-time", "10"]).arg(format!("http://{name}/{SMALL_TXT}"));
    Ok(run_bounded(c, Duration::from_secs(20))?.status.and_then(|s| s.code()))
}

/// The device line of `rows` that holds address `addr`.
fn device(rows: &Value, addr: IpAddr) -> Result<&Value> {
    rows.as_array()
        .and_then(|d| {
            d.iter().find(|d| d["addresses"].as_array().is_some_and(|a| a.contains(&json!(addr.to_string()))))
        })
        .with_context(|| format!("no device line holds {addr}: {rows:#}"))
}

/// `tracker experiment Braze --for 20s` with lookups and a fetch of Braze's SDK name from both
/// phones before and during it: the report counts exactly the refusals, per name, device and
/// company, and each device's queries and connections in both halves.
#[test]
fn an_experiment_reports_what_was_refused_and_from_whom() -> Result<()> {
    let Some((_serial, mut lab, mut t)) = crate::common::lab_with_tracker("tx1")? else {
        return Ok(());
    };
    lab.add_second_phone()?;
    t.start(&lab)?;
    let sdk = zone::BRAZE_SDK;
    let (phone, phone2) = (IpAddr::from(PHONE_V4), IpAddr::from(PHONE2_V4));

    // Before (well within the 20 s before the rule): the phone looks the SDK up twice and
    // fetches from it once (one more lookup); the second phone looks it up once.
    for _ in 0..2 {
        assert_eq!(dig(&lab, Ns::Phone, phone, sdk)?, "NOERROR");
    }
    assert_eq!(curl(&lab, sdk)?, Some(0), "the fetch before the block works");
    assert_eq!(dig(&lab, Ns::Phone2, phone2, sdk)?, "NOERROR");

    let ran = run_cli(tracker_with(&t.db, &t.pins, &["experiment", "Braze", "--for", FOR]))?;
    ensure!(ran.exited_ok(), "tracker experiment: {}", ran.describe());
    let id: u64 = ran
        .stdout
        .split("experiment: rule ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("tracker experiment names its rule: {}", ran.describe()))?;
    assert!(ran.stdout.contains(&format!("tracker report --block-window {id}")), "{}", ran.describe());
    let started = std::time::Instant::now();

    // During: the phone 3 lookups and a fetch that cannot resolve (4 refusals), the second
    // phone 2 lookups; a name of another company still resolves.
    for _ in 0..3 {
        assert_eq!(dig(&lab, Ns::Phone, phone, sdk)?, "NXDOMAIN");
    }
    assert_eq!(curl(&lab, sdk)?, Some(6), "curl cannot resolve a refused name");
    for _ in 0..2 {
        assert_eq!(dig(&lab, Ns::Phone2, phone2, sdk)?, "NXDOMAIN");
    }
    assert_eq!(dig(&lab, Ns::Phone, phone, zone::WWW_APPLE)?, "NOERROR");
    ensure!(
        started.elapsed() < Duration::from_millis(FOR_MS),
        "the lookups outlasted the block: {:?}",
        started.elapsed()
    );

    // After its end, and once the daemon has written every refusal.
    std::thread::sleep(Duration::from_millis(FOR_MS).saturating_sub(started.elapsed()) + Duration::from_secs(1));
    let refusals = |t: &crate::common::Tracker| t.dns(&[]).iter().filter(|e| e["blocked_by"] == json!(id)).count();
    let all_in = t.wait_for(WAIT, |t| refusals(t) >= 6);
    ensure!(all_in, "6 refusals in tracker dns within {WAIT:?}, found {}: {}", refusals(&t), t.log_tail());

    let w = t.try_json(&["report", "--block-window", &id.to_string()])?;
    assert_eq!(w["rule"]["id"], json!(id), "{w:#}");
    assert_eq!((&w["rule"]["kind"], &w["rule"]["rule"]), (&json!("company"), &json!("Braze")), "{w:#}");
    assert_eq!((&w["running"], &w["rule"]["end_reason"]), (&json!(false), &json!("expired")), "{w:#}");
    // From its creation to its end: --for counts from the command's start, a few ms earlier.
    assert_eq!((&w["during"]["start"], &w["during"]["end"]), (&w["rule"]["created"], &w["rule"]["expires"]), "{w:#}");
    let minutes = w["minutes"].as_f64().unwrap_or_default();
    assert!((minutes - FOR_MS as f64 / 60_000.0).abs() < 0.001, "{w:#}");
    let totals = json!({
        "queries_refused": 6, "names_refused": 1, "devices_affected": 2,
        "queries_before": 4, "queries_not_refused": 0,
        "attempts_before": 1, "attempts_during": 0, "failed_before": 0, "failed_during": 0,
        "packets_dropped": 0,
    });
    assert_eq!(w["totals"], totals, "{w:#}");
    // 6 refusals within one minute: 6 a minute.
    let names = json!([{
        "name": sdk, "refused": 6, "devices": 2, "retries_per_min": 6.0, "queries_before": 4,
        "company": "Braze", "service": "Braze",
        "first_refused": w["names"][0]["first_refused"], "last_refused": w["names"][0]["last_refused"],
    }]);
    assert_eq!(w["names"], names, "{w:#}");
    let entities = json!([{ "company": "Braze", "service": "Braze", "names": 1, "refused": 6, "queries_before": 4, "devices": 2 }]);
    assert_eq!(w["entities"], entities, "{w:#}");
    let attempts = json!([{
        "target": sdk, "flows_before": 1, "flows_during": 0, "failed_before": 0, "failed_during": 0, "devices_during": 0,
    }]);
    assert_eq!(w["attempts"], attempts, "{w:#}");

    // Each device's whole traffic. Flows: every answered lookup is a UDP flow to the resolver
    // and the fetch one TCP flow; a refused lookup is answered by the kernel and makes none.
    let d = device(&w["devices"], phone)?;
    let got: Vec<&Value> = ["affected", "refused", "queries_before", "queries_during", "flows_before", "flows_during"]
        .iter()
        .map(|k| &d[*k])
        .collect();
    assert_eq!(got, [&json!(true), &json!(4), &json!(3), &json!(5), &json!(4), &json!(1)], "the phone: {d:#}");
    let d = device(&w["devices"], phone2)?;
    let got: Vec<&Value> = ["affected", "refused", "queries_before", "queries_during", "flows_before", "flows_during"]
        .iter()
        .map(|k| &d[*k])
        .collect();
    assert_eq!(got, [&json!(true), &json!(2), &json!(1), &json!(2), &json!(1), &json!(0)], "the second phone: {d:#}");

    // The same by its text, and through `experiment --report`; the table says it ended.
    let by_text = t.try_json(&["experiment", "--report", "braze"])?;
    assert_eq!(by_text["totals"], totals);
    let table = run_cli(tracker_with(&t.db, &t.pins, &["report", "--block-window", &id.to_string()]))?;
    ensure!(table.exited_ok() && table.stdout.contains("(ended: expired)"), "{}", table.describe());
    assert!(table.stdout.contains(sdk), "{}", table.describe());
    Ok(())
}
