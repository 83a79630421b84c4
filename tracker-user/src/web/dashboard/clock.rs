//! Times as the change pages say them: the VPN host's local time with its zone's name (the
//! server does not know the phone's zone, so it names its own), the next local midnight for
//! "until tomorrow", and a timed block's countdown ([`Ends`]; `/static/countdown.js` ticks it
//! in the page and says it the same way).

use std::ffi::CStr;

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60_000;

/// The local broken-down time of `ms`, or `None` if the C library cannot say.
fn local(ms: i64) -> Option<libc::tm> {
    let t = libc::time_t::try_from(ms.div_euclid(1000)).ok()?;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r writes only into `tm`, which outlives the call.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    ok.then_some(tm)
}

/// The zone's abbreviation as the C library names it (`UTC`, `CET`).
fn zone(tm: &libc::tm) -> String {
    if tm.tm_zone.is_null() {
        return "local time".into();
    }
    // SAFETY: glibc points tm_zone at a NUL-terminated static string of its zone data.
    unsafe { CStr::from_ptr(tm.tm_zone) }.to_string_lossy().into_owned()
}

/// `14:05 UTC`: the time of day of `ms` on the VPN host, with its zone.
pub fn time_of_day(ms: i64) -> String {
    match local(ms) {
        Some(tm) => format!("{:02}:{:02} {}", tm.tm_hour, tm.tm_min, zone(&tm)),
        None => crate::timefmt::rfc3339(ms),
    }
}

/// The next midnight after `now_ms` on the VPN host's clock, and its zone's name.
pub fn next_midnight(now_ms: i64) -> Option<(i64, String)> {
    let mut tm = local(now_ms)?;
    let name = zone(&tm);
    tm.tm_mday += 1;
    (tm.tm_hour, tm.tm_min, tm.tm_sec) = (0, 0, 0);
    // Daylight saving time as it is on that day, not today.
    tm.tm_isdst = -1;
    // SAFETY: mktime reads and normalises our own `tm`.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then(|| (t * 1000, name))
}

/// How long is left, as a countdown says it: `42 s`, `28 min`, `2 h 5 min`. Rounded up (to
/// the second under a minute, else to the minute), so a block ending in 29 min 10 s says 30 min
/// and a running one never says 0. `countdown.js`'s `say` is the same in the browser.
pub fn countdown(left_ms: i64) -> String {
    if left_ms < MINUTE_MS {
        return format!("{} s", ((left_ms + SECOND_MS - 1) / SECOND_MS).clamp(1, 59));
    }
    let minutes = (left_ms + MINUTE_MS - 1) / MINUTE_MS;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// A running timed block's end, as the pages show it ("ends in 28 min (at 14:05 UTC)", the
/// `ends` macro of `templates/dashboard/ends.html`), with what the page's script needs to tick
/// it: the end and the moment the page was made, both on the VPN host's clock, so a phone
/// whose clock is off still counts down right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ends {
    /// The rule: its forms that only make sense while it runs go when it ends.
    pub rule: u32,
    pub ms: i64,
    pub now_ms: i64,
    /// [`countdown`] at `now_ms`.
    pub left: String,
    /// [`time_of_day`] of the end.
    pub at: String,
}

impl Ends {
    pub fn new(rule: u32, ms: i64, now_ms: i64) -> Self {
        Self { rule, ms, now_ms, left: countdown(ms - now_ms), at: time_of_day(ms) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdowns_round_up_to_the_minute() {
        assert_eq!(countdown(0), "1 s");
        assert_eq!(countdown(1), "1 s");
        assert_eq!(countdown(8_000), "8 s");
        assert_eq!(countdown(7_001), "8 s");
        assert_eq!(countdown(59_999), "59 s");
        assert_eq!(countdown(60_000), "1 min");
        assert_eq!(countdown(29 * MINUTE_MS + 10_000), "30 min");
        assert_eq!(countdown(30 * MINUTE_MS), "30 min");
        assert_eq!(countdown(60 * MINUTE_MS), "1 h");
        assert_eq!(countdown(125 * MINUTE_MS - 1), "2 h 5 min");
    }

    #[test]
    fn an_end_carries_both_times_for_the_script() {
        let e = Ends::new(7, 1_700_000_090_000, 1_700_000_000_000);
        assert_eq!((e.rule, e.ms, e.now_ms, e.left.as_str()), (7, 1_700_000_090_000, 1_700_000_000_000, "2 min"));
        assert_eq!(e.at, time_of_day(1_700_000_090_000));
    }

    #[test]
    fn midnight_is_the_next_local_one() {
        let now = crate::timefmt::now_ms();
        let (midnight, zone) = next_midnight(now).unwrap();
        assert!(midnight > now && midnight <= now + 25 * 3_600_000, "{now} {midnight}");
        assert_eq!(time_of_day(midnight), format!("00:00 {zone}"));
        if zone == "UTC" {
            assert_eq!(midnight % 86_400_000, 0);
        }
    }
}
