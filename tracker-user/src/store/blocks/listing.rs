//! The rows of `tracker blocks`: every rule with its kind, origin, device, times and hits (the
//! kernel's live count added to what earlier kernel entries counted).

use anyhow::{Context as _, Result};
use rusqlite::params;
use serde::Serialize;

use super::{RuleKind, Store};
use crate::timefmt;

/// A block rule with its counters; field names are the JSON interface of `tracker blocks`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BlockRow {
    /// The rule id, as the DNS log's `blocked_by` names it.
    pub id: u32,
    pub kind: RuleKind,
    pub rule: String,
    /// `manual` for a domain or address the user named; for a company, service or list, the
    /// kind and name the domains came from (`company Braze`).
    pub origin: String,
    /// The device the rule holds for (its name, else its address or key), or `all`.
    pub device: String,
    /// Names the rule covers (each with every name under it); `None` for an IP rule.
    pub domains: Option<u64>,
    pub comment: Option<String>,
    /// Packets dropped: by an IP rule's entry, or by the addresses a name rule learned (those
    /// its blocked names were answered with anyway, see `daemon::learned`).
    pub packets_dropped: u64,
    /// Name rules: DNS queries refused (also for the names it learned). 0 for IP rules.
    pub queries_refused: u64,
    /// The two together.
    pub hits: u64,
    /// A name rule's addresses that also serve names no rule blocks, which the daemon left
    /// open so those names keep working (unless `block_shared`).
    pub shared_open: u64,
    /// A name rule made with `--block-shared`: it blocks such addresses too.
    pub block_shared: bool,
    pub last_hit: Option<String>,
    pub created: String,
    /// When the rule ends (`--for`); `None`: until removed.
    pub expires: Option<String>,
    /// Time left until `expires`, as `29m 59s`; `None` without an end or once ended.
    pub time_left: Option<String>,
    /// `expires` as unix ms, for a countdown (the dashboard's); not in the JSON, which has
    /// `expires` and `time_left`.
    #[serde(skip)]
    pub expires_ms: Option<i64>,
    /// When it ended; `None` while active.
    pub ended: Option<String>,
    /// `unblocked` or `expired`; `None` while active.
    pub end_reason: Option<String>,
}

/// Which rules [`Store::block_rows`] lists.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockFilter {
    /// Ended rules too (history).
    pub ended: bool,
    pub kind: Option<RuleKind>,
}

/// A rule's live kernel counts, summed over its entries in the address tries and `DOMAINS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveCount {
    pub dropped: u64,
    pub refused: u64,
    /// Unix ms.
    pub last_hit: Option<i64>,
}

/// A rule's live kernel counts by id, when the kernel maps are reachable.
pub type Live<'a> = &'a dyn Fn(u32) -> Option<LiveCount>;

impl Store {
    /// Rules with counters, oldest first. `live` gives the current kernel count of a rule when
    /// the kernel maps are reachable, so the listing is fresh between the daemon's sweeps;
    /// `device_label` names a stored device (a public key or an address) for people.
    pub fn block_rows(
        &self,
        filter: BlockFilter,
        now_ms: i64,
        live: Live<'_>,
        device_label: &dyn Fn(&str) -> String,
    ) -> Result<Vec<BlockRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.id, r.kind, r.rule, r.client, r.comment, r.created, r.expires, r.ended, r.end_reason,
                    r.dropped_before, r.dropped_kernel, r.refused_before, r.refused_kernel, r.last_hit,
                    r.shared_open, r.block_shared,
                    CASE WHEN r.kind = 'ip' THEN NULL
                         ELSE (SELECT count(*) FROM block_domains d WHERE d.rule = r.id) END
             FROM block_rules r
             WHERE (?1 OR (r.ended IS NULL AND (r.expires IS NULL OR r.expires > ?2)))
                 AND (?3 IS NULL OR r.kind = ?3)
             ORDER BY r.id",
        )?;
        let rows = stmt.query_map(params![filter.ended, now_ms, filter.kind.map(RuleKind::as_str)], |r| {
            Ok(Raw {
                id: r.get(0)?,
                kind: r.get(1)?,
                rule: r.get(2)?,
                client: r.get(3)?,
                comment: r.get(4)?,
                created: r.get(5)?,
                expires: r.get(6)?,
                ended: r.get(7)?,
                end_reason: r.get(8)?,
                counts: [r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?],
                last_hit: r.get(13)?,
                shared_open: r.get(14)?,
                block_shared: r.get(15)?,
                domains: r.get(16)?,
            })
        })?;
        let mut out = Vec::new();
        for raw in rows {
            let raw = raw.context("reading block rules")?;
            let Some(kind) = RuleKind::parse(&raw.kind) else { continue };
            out.push(raw.row(kind, now_ms, live, device_label));
        }
        Ok(out)
    }
}

struct Raw {
    id: u32,
    kind: String,
    rule: String,
    client: Option<String>,
    comment: Option<String>,
    created: i64,
    expires: Option<i64>,
    ended: Option<i64>,
    end_reason: Option<String>,
    /// dropped_before, dropped_kernel, refused_before, refused_kernel.
    counts: [i64; 4],
    last_hit: Option<i64>,
    shared_open: i64,
    block_shared: bool,
    domains: Option<i64>,
}

impl Raw {
    fn row(self, kind: RuleKind, now_ms: i64, live: Live<'_>, device_label: &dyn Fn(&str) -> String) -> BlockRow {
        let [dropped_before, dropped_kernel, refused_before, refused_kernel] = self.counts.map(|c| c.max(0) as u64);
        // An ended rule has no kernel entries: what they counted was folded into `before`.
        let active = self.ended.is_none() && self.expires.is_none_or(|e| e > now_ms);
        let (dropped, refused, last_hit) = match live(self.id).filter(|_| active) {
            Some(LiveCount { dropped, refused, last_hit }) => (dropped, refused, last_hit.or(self.last_hit)),
            None => (dropped_kernel, refused_kernel, self.last_hit),
        };
        let (packets_dropped, queries_refused) = (dropped_before + dropped, refused_before + refused);
        // A rule past its end that no daemon has marked yet ended at its end, for the expiry.
        let (ended, end_reason) = match (self.ended, self.expires) {
            (Some(at), _) => (Some(at), self.end_reason),
            (None, Some(e)) if e <= now_ms => (Some(e), Some("expired".to_owned())),
            _ => (None, None),
        };
        let time_left = match (ended, self.expires) {
            (None, Some(e)) => Some(left(e - now_ms)),
            _ => None,
        };
        BlockRow {
            id: self.id,
            kind,
            origin: match kind {
                RuleKind::Ip | RuleKind::Domain => "manual".into(),
                // Its names are tracker's shipped list (`data/dns-bypass.txt`).
                RuleKind::DnsBypass => "built-in list".into(),
                _ => format!("{kind} {}", self.rule),
            },
            device: self.client.as_deref().map_or_else(|| "all".into(), device_label),
            rule: self.rule,
            domains: self.domains.map(|n| n.max(0) as u64),
            comment: self.comment,
            packets_dropped,
            queries_refused,
            hits: packets_dropped + queries_refused,
            shared_open: self.shared_open.max(0) as u64,
            block_shared: self.block_shared,
            last_hit: last_hit.map(timefmt::rfc3339),
            created: timefmt::rfc3339(self.created),
            expires: self.expires.map(timefmt::rfc3339),
            time_left,
            expires_ms: self.expires,
            ended: ended.map(timefmt::rfc3339),
            end_reason,
        }
    }
}

/// Time left, to the second, as people read it: `1h 29m 5s`.
fn left(ms: i64) -> String {
    let secs = u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000);
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        blocks::{NewRule, RuleKind},
        tests::temp_db,
    };

    #[test]
    fn rows_carry_kind_origin_device_times_and_hits() {
        let mut s = Store::open(&temp_db("blocks-rows")).unwrap();
        let ip = s.add_block(RuleKind::Ip, "198.51.100.0/24", Some("ad network")).unwrap().unwrap();
        let now = timefmt::now_ms();
        let company = NewRule {
            kind: Some(RuleKind::Company),
            rule: "Braze".into(),
            client: Some("10.77.0.2".into()),
            expires: Some(now + 90_000),
            domains: vec!["appboy.com".into(), "braze.com".into()],
            ..NewRule::default()
        };
        let c = s.add_rule_then(&company, |_, _| Ok(())).unwrap().id();
        s.write(|w| {
            w.set_block_kernel_count(ip, 5, Some(7_000))?;
            w.set_refused_kernel_count(c, 3, None)
        })
        .unwrap();
        let label = |k: &str| format!("device {k}");
        let rows = s.block_rows(BlockFilter::default(), now, &|_| None, &label).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].kind, rows[0].origin.as_str(), rows[0].device.as_str()), (RuleKind::Ip, "manual", "all"));
        assert_eq!((rows[0].packets_dropped, rows[0].queries_refused, rows[0].hits), (5, 0, 5));
        assert_eq!(rows[0].domains, None);
        assert_eq!(rows[1].origin, "company Braze");
        assert_eq!(rows[1].device, "device 10.77.0.2");
        assert_eq!((rows[1].packets_dropped, rows[1].queries_refused, rows[1].hits), (0, 3, 3));
        assert_eq!(rows[1].domains, Some(2));
        assert_eq!(rows[1].time_left.as_deref(), Some("1m 30s"));
        // Live counts replace the stored kernel count, never add to it.
        // A name rule's live counts: queries refused, and packets dropped at its learned addresses.
        let live = |id| (id == c).then_some(LiveCount { dropped: 2, refused: 4, last_hit: Some(9_000) });
        let rows = s.block_rows(BlockFilter::default(), now, &live, &label).unwrap();
        assert_eq!((rows[1].packets_dropped, rows[1].queries_refused, rows[1].hits), (2, 4, 6));
        // What learned entries counted before the daemon removed them stays the rule's.
        s.write(|w| w.fold_learned(c, 2, 4)).unwrap();
        let rows = s.block_rows(BlockFilter::default(), now, &|_| None, &label).unwrap();
        assert_eq!(
            (rows[1].packets_dropped, rows[1].queries_refused),
            (2, 4),
            "moved into the history; the stored kernel count (3) never below 0"
        );
        // Past its end (no daemon marked it yet): out of the active list, in the history.
        let later = now + 90_000;
        assert_eq!(s.block_rows(BlockFilter::default(), later, &|_| None, &label).unwrap().len(), 1);
        let all = s.block_rows(BlockFilter { ended: true, kind: None }, later, &|_| None, &label).unwrap();
        assert_eq!(all[1].end_reason.as_deref(), Some("expired"));
        assert_eq!(all[1].ended, Some(timefmt::rfc3339(later)));
        assert_eq!(all[1].time_left, None);
        let ips = s.block_rows(BlockFilter { ended: true, kind: Some(RuleKind::Ip) }, later, &|_| None, &label);
        assert_eq!(ips.unwrap().len(), 1);
    }
}
