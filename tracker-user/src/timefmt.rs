//! Time: the kernel's CLOCK_MONOTONIC_COARSE stamps turned into wall-clock time, the unix-millisecond
//! integers the database stores, RFC 3339 for people and scripts, and `--since 7d` parsing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

/// Nanoseconds on CLOCK_MONOTONIC_COARSE, the clock of `bpf_ktime_get_coarse_ns()`.
pub fn kernel_ns_now() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC_COARSE always
    // exists on Linux >= 2.6.32.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Maps kernel stamps to wall-clock time with one reading of both clocks, so that all stamps
/// of one sweep convert consistently.
#[derive(Clone, Copy, Debug)]
pub struct KernelClock {
    kernel_ns: u64,
    wall_ms: i64,
}

impl KernelClock {
    pub fn now() -> Self {
        Self { kernel_ns: kernel_ns_now(), wall_ms: unix_ms(SystemTime::now()) }
    }

    /// Unix milliseconds of a kernel stamp, earlier or later than the reading: the daemon keeps
    /// one reading for all events, so that their order survives the conversion.
    pub fn to_unix_ms(self, kernel_ns: u64) -> i64 {
        let delta_ns = kernel_ns as i64 - self.kernel_ns as i64;
        self.wall_ms + delta_ns.div_euclid(1_000_000)
    }

    /// [`KernelClock::to_unix_ms`] as a wall-clock time, at millisecond precision.
    pub fn to_time(self, kernel_ns: u64) -> SystemTime {
        time_of_ms(self.to_unix_ms(kernel_ns))
    }
}

/// Wall-clock time of unix milliseconds (the inverse of [`unix_ms`] from the epoch on).
pub fn time_of_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-26T23:26:45.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses `--since`: a duration back from now (`90s`, `15m`, `1h`, `7d`, `2w`) or an RFC 3339
/// timestamp. Returns unix milliseconds.
pub fn parse_since(s: &str) -> Result<i64> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(unix_ms(t));
    }
    let d = humantime::parse_duration(s).with_context(|| {
        format!("`{s}` is neither a duration (90s, 15m, 1h, 7d, 2w) nor a time (2026-11-26T08:00:00Z)")
    })?;
    if d.is_zero() {
        bail!("`{s}` is zero: use a positive duration such as 1h or 7d");
    }
    Ok(now_ms() - d.as_millis() as i64)
}

/// The kernel's boot id: together with a kernel stamp it names one kernel flow entry for good
/// (the monotonic clock restarts at every boot).
pub fn boot_id() -> Result<String> {
    let path = "/proc/sys/kernel/random/boot_id";
    let id = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(id.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_converts_ages() {
        let c = KernelClock { kernel_ns: 10_000_000_000, wall_ms: 1_000_000 };
        assert_eq!(c.to_unix_ms(10_000_000_000), 1_000_000);
        assert_eq!(c.to_unix_ms(9_000_000_000), 999_000);
        // Stamps after the reading (events handled later with the same reading) keep their
        // distance and order.
        assert_eq!(c.to_unix_ms(11_000_000_000), 1_001_000);
        assert!(c.to_unix_ms(10_002_000_000) < c.to_unix_ms(10_003_000_000));
    }

    #[test]
    fn since_accepts_durations_and_times() {
        let before = now_ms();
        let t = parse_since("1h").unwrap();
        assert!((before - 3_600_000 - t).abs() < 1_000, "{t}");
        let week = parse_since("7d").unwrap();
        assert!((before - 7 * 86_400_000 - week).abs() < 1_000);
        assert_eq!(parse_since("2026-11-26T00:00:00Z").unwrap(), 1_795_651_200_000);
        assert!(parse_since("yesterday-ish").is_err());
        assert!(parse_since("0s").is_err());
    }

    #[test]
    fn rfc3339_is_utc_millis() {
        assert_eq!(rfc3339(1_795_651_200_123), "2026-11-26T00:00:00.123Z");
    }
}
