//! Surviving crashes (issue 14): the daemon killed with SIGKILL at random moments of a bounded
//! flood through the lab's tunnel, again and again. While it is dead the kernel keeps blocking;
//! each restart picks up what the kernel counted meanwhile; at the end every flow of every
//! round is in SQLite exactly once with its exact packet count, and the database passes
//! `PRAGMA integrity_check`. Root only; under CI=true it never skips.

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
