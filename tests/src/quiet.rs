//! Benchmarks measure on a quiet machine: the 1-minute load average, and a bounded wait for it
//! to fall.

use std::time::{Duration, Instant};

/// The 1-minute load average as /proc/loadavg says it ("?" if unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Waits until the 1-minute load average is below `below`, checking every `poll`, for at most
/// `max` (then measures anyway, with a warning). `label` names the benchmark in the progress
/// lines. Returns what happened, for the report.
pub fn wait_for_quiet(label: &str, below: f64, poll: Duration, max: Duration) -> String {
    let started = Instant::now();
    let first = load_average();
    loop {
        let now = load_average();
        let quiet = now.parse::<f64>().is_ok_and(|l| l < below);
        if quiet || started.elapsed() >= max {
            if !quiet {
                eprintln!("warning: load {now} still not below {below} after {max:.0?}: measuring anyway");
            }
            let verdict = if quiet { "below" } else { "still not below" };
            return format!("{first} at the start, {now} after {:.0?} ({verdict} {below})", started.elapsed());
        }
        eprintln!("{label}: load {now}, waiting for < {below} ({:.0?} so far, at most {max:.0?})", started.elapsed());
        std::thread::sleep(poll);
    }
}
