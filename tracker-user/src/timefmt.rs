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
/// of one sweep convert consistently. The default (both zero) converts nothing meaningfully;
/// it only fills a buffer before its first reading.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelClock {
    kernel_ns: u64,
    wall_ms: i64,
}

impl KernelClock {
    /// The conversion of stamps that are unix nanoseconds already: a capture file's.
    pub const UNIX: KernelClock = KernelClock { kernel_ns: 0, wall_ms: 0 };

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

    /// The kernel stamp of a wall-clock time (unix ms): the inverse of
    /// [`KernelClock::to_unix_ms`]. A time before the kernel clock's zero (before boot) is 0.
    pub fn to_kernel_ns(self, unix_ms: i64) -> u64 {
        let delta_ns = i128::from(unix_ms - self.wall_ms) * 1_000_000;
        u64::try_from((i128::from(self.kernel_ns) + delta_ns).max(0)).unwrap_or(u64::MAX)
    }

    /// A rule's `expires_ns` for the kernel from its end in unix ms: 0 (never) without an end;
    /// `None` when the end has passed (the rule is over and goes into no map). A kernel stamp
    /// is never 0 for an end, since 0 means never.
    pub fn expiry_ns(self, expires_ms: Option<i64>) -> Option<u64> {
        match expires_ms {
            None => Some(0),
            Some(ms) if ms <= self.wall_ms => None,
            Some(ms) => Some(self.to_kernel_ns(ms).max(1)),
        }
    }
}

/// Parses `--for` (`30m`, `1h`, `2d`, `1h30m`) into milliseconds.
pub fn parse_for(s: &str) -> Result<i64> {
    let shown = crate::text::quoted(s.trim());
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| anyhow::anyhow!("--for {shown} is not a duration (examples: 30m, 1h, 2d, 1h30m)"))?;
    if d.as_millis() < 1000 {
        bail!("--for {shown} is less than a second: use a duration such as 30m or 1h");
    }
    i64::try_from(d.as_millis()).map_err(|_| anyhow::anyhow!("--for {shown} is longer than anyone will wait"))
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

/// Parses `--since`: a duration back from now (`90s`, `15m`, `1h`, `7d`, `2w`, also written
/// `-1h`), a date (`2026-11-26`, midnight UTC) or a time (`2026-11-26T08:00:00Z`,
/// `2026-11-26T08:00:00+01:00`, `2026-11-26 08:00`; without an offset, UTC). Returns unix
/// milliseconds. Errors say what was wrong (`month 13 does not exist`) and echo the argument
/// cut to a readable length.
pub fn parse_since(s: &str) -> Result<i64> {
    parse_since_at(s, now_ms())
}

/// [`parse_since`] with a duration counted back from `end_ms` (a capture's last packet) rather
/// than from now.
pub fn parse_since_at(s: &str, end_ms: i64) -> Result<i64> {
    let s = s.trim();
    let shown = crate::text::quoted(s);
    if looks_like_date(s) {
        return parse_time(s).map_err(|why| anyhow::anyhow!("--since {shown}: {why}"));
    }
    let duration = s.strip_prefix('-').unwrap_or(s);
    let d = humantime::parse_duration(duration).map_err(|_| {
        anyhow::anyhow!(
            "--since {shown} is neither a duration (90s, 15m, 1h, 7d, 2w) nor a time \
             (2026-11-26, 2026-11-26T08:00:00Z, 2026-11-26T08:00:00+01:00)"
        )
    })?;
    if d.is_zero() {
        bail!("--since {shown} is zero: use a positive duration such as 1h or 7d");
    }
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Ok(end_ms.saturating_sub(ms))
}

/// Four digits and a dash: the user meant a date, so errors are about dates.
fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// `YYYY-MM-DD[(T|t| )HH:MM[:SS[.fraction]][Z|z|±HH:MM|±HHMM]]` to unix milliseconds.
fn parse_time(s: &str) -> std::result::Result<i64, String> {
    const FORMS: &str = "expected 2026-11-26, 2026-11-26T08:00:00Z or 2026-11-26T08:00:00+01:00";
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let num = |part: &str, what: &str| -> std::result::Result<i64, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 4 {
            return Err(format!("the {what} `{part}` is not a number; {FORMS}"));
        }
        Ok(part.parse::<i64>().expect("digits"))
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{date}` is not a date; {FORMS}"));
    };
    let (year, month, day) = (num(y, "year")?, num(m, "month")?, num(d, "day")?);
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} does not exist"));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
    if !(1..=days_in_month).contains(&day) {
        return Err(format!("{year}-{month:02} has no day {day} (it has {days_in_month})"));
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    let Some(time) = time else { return Ok(ms) };
    // The offset: Z, or a sign after the clock.
    let (clock, offset_min) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let off = &off[1..];
        let (h, m) = match off.split_once(':') {
            Some((h, m)) => (h, m),
            None if off.len() == 4 => off.split_at(2),
            None => (off, "00"),
        };
        let (h, m) = (num(h, "offset hour")?, num(m, "offset minute")?);
        if h > 23 || m > 59 {
            let sign = if sign < 0 { '-' } else { '+' };
            return Err(format!("the offset {sign}{h:02}:{m:02} does not exist"));
        }
        (c, sign * (h * 60 + m))
    } else {
        (time, 0)
    };
    let mut fields = clock.split(':');
    let (Some(h), Some(mi)) = (fields.next(), fields.next()) else {
        return Err(format!("`{clock}` is not a time of day (HH:MM or HH:MM:SS); {FORMS}"));
    };
    let sec = fields.next();
    if fields.next().is_some() {
        return Err(format!("`{clock}` is not a time of day (HH:MM or HH:MM:SS); {FORMS}"));
    }
    let (hour, minute) = (num(h, "hour")?, num(mi, "minute")?);
    let (sec, frac_ms) = match sec {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = sec.split_once(['.', ',']).unwrap_or((sec, ""));
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("the seconds `{sec}` are not a number; {FORMS}"));
            }
            let frac_ms = format!("{frac:0<3}")[..3].parse::<i64>().unwrap_or(0);
            (num(whole, "second")?, frac_ms)
        }
    };
    if hour > 23 {
        return Err(format!("hour {hour} does not exist (00-23)"));
    }
    if minute > 59 {
        return Err(format!("minute {minute} does not exist (00-59)"));
    }
    if sec > 60 {
        return Err(format!("second {sec} does not exist (00-59)"));
    }
    ms += ((hour * 60 + minute - offset_min) * 60 + sec.min(59)) * 1000 + frac_ms;
    Ok(ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn rule_ends_convert_to_the_kernel_clock_and_back() {
        let c = KernelClock { kernel_ns: 10_000_000_000, wall_ms: 1_000_000 };
        assert_eq!(c.to_kernel_ns(1_000_000), 10_000_000_000);
        assert_eq!(c.to_kernel_ns(1_000_000 + 1_800_000), 10_000_000_000 + 1_800_000_000_000);
        assert_eq!(c.to_unix_ms(c.to_kernel_ns(1_234_567)), 1_234_567);
        assert_eq!(c.to_kernel_ns(0), 0, "before boot");
        assert_eq!(c.expiry_ns(None), Some(0), "never");
        assert_eq!(c.expiry_ns(Some(1_000_000)), None, "ended now");
        assert_eq!(c.expiry_ns(Some(999_000)), None, "ended before");
        assert_eq!(c.expiry_ns(Some(1_002_000)), Some(12_000_000_000));
        // An end soon after boot on a clock read at 0 is never the 0 that means never.
        let boot = KernelClock { kernel_ns: 0, wall_ms: 1_000_000 };
        assert_eq!(boot.expiry_ns(Some(1_000_000 + 1)), Some(1_000_000));
    }

    #[test]
    fn for_takes_durations_people_type() {
        assert_eq!(parse_for("30m").unwrap(), 1_800_000);
        assert_eq!(parse_for("1h").unwrap(), 3_600_000);
        assert_eq!(parse_for("2d").unwrap(), 172_800_000);
        assert_eq!(parse_for(" 1h30m ").unwrap(), 5_400_000);
        assert_eq!(parse_for("2s").unwrap(), 2_000);
        assert!(parse_for("0s").unwrap_err().to_string().contains("less than a second"));
        assert!(parse_for("soon").unwrap_err().to_string().contains("examples: 30m"));
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
    fn since_accepts_what_people_type() {
        let before = now_ms();
        let t = parse_since("-1h").unwrap();
        assert!((before - 3_600_000 - t).abs() < 1_000, "{t}");
        assert_eq!(parse_since("2026-11-26").unwrap(), 1_795_651_200_000);
        assert_eq!(parse_since("2026-11-26T08:00:00+01:00").unwrap(), 1_795_651_200_000 + 7 * 3_600_000);
        assert_eq!(parse_since("2026-11-26T08:00:00-0130").unwrap(), 1_795_651_200_000 + 9 * 3_600_000 + 1_800_000);
        assert_eq!(parse_since("2026-11-26 08:00").unwrap(), 1_795_651_200_000 + 8 * 3_600_000);
        assert_eq!(parse_since("2026-11-26T00:00:01.5Z").unwrap(), 1_795_651_201_500);
        assert_eq!(parse_since("1970-01-01").unwrap(), 0);
        assert_eq!(parse_since("2024-02-29").unwrap(), 1_709_164_800_000);
    }

    #[test]
    fn since_says_what_was_wrong() {
        let err = |s: &str| parse_since(s).unwrap_err().to_string();
        assert_eq!(err("2026-13-01T00:00:00Z"), "--since `2026-13-01T00:00:00Z`: month 13 does not exist");
        assert!(err("2026-02-30").contains("has no day 30"), "{}", err("2026-02-30"));
        assert!(err("2026-11-26T25:00:00Z").contains("hour 25 does not exist"));
        assert!(err("2026-11-26T08:61Z").contains("minute 61 does not exist"));
        assert!(err("yesterday").contains("neither a duration"));
        let long = err(&"x".repeat(5000));
        assert!(long.len() < 300, "{long}");
    }

    #[test]
    fn rfc3339_is_utc_millis() {
        assert_eq!(rfc3339(1_795_651_200_123), "2026-11-26T00:00:00.123Z");
    }
}
