//! What blocking stopped: DNS queries refused over a period, per rule (the DNS log's
//! `blocked_by`), beside the rules in force with the hits `tracker blocks` lists.

use anyhow::{Context as _, Result};
use rusqlite::params;

use crate::{
    rules::cover::stored_device_label,
    store::{
        Store,
        blocks::{
            RuleKind,
            listing::{BlockFilter, BlockRow, Live},
        },
    },
};

/// Queries one rule refused in the period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedLine {
    /// `block_rules.id`, as `tracker blocks` shows it.
    pub rule_id: u32,
    /// The rule's kind and text; `None` for a rule no longer stored (a database made anew).
    pub rule: Option<(RuleKind, String)>,
    pub queries: u64,
    /// Distinct client addresses whose queries it refused.
    pub clients: u64,
}

/// The period's refusals and the rules in force.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    /// Every query refused in the period, whichever rule.
    pub queries_refused: u64,
    /// Per rule, most refusals first.
    pub refused: Vec<RefusedLine>,
    /// The active rules, oldest first, with their counters since each was made.
    pub rules: Vec<BlockRow>,
}

/// The refusals of `source`'s DNS log from `since_ms` on (of `clients` only, when given), and
/// the active rules at `now_ms`. `live` gives a rule's current kernel count when the caller can
/// read the kernel maps, as for `tracker blocks`.
pub fn blocked(
    store: &Store,
    source: i64,
    since_ms: i64,
    clients: Option<&[String]>,
    now_ms: i64,
    live: Live<'_>,
) -> Result<Blocked> {
    let mut stmt = store.conn().prepare_cached(
        "SELECT q.blocked_by, r.kind, r.rule, count(*), count(DISTINCT q.client)
         FROM dns_queries q LEFT JOIN block_rules r ON r.id = q.blocked_by
         WHERE q.ts >= ?1 AND q.source = ?2 AND q.blocked_by IS NOT NULL
             AND (?3 IS NULL OR q.client IN (SELECT value FROM json_each(?3)))
         GROUP BY q.blocked_by ORDER BY 4 DESC, 1",
    )?;
    let list = clients.map(|c| serde_json::Value::from(c.to_vec()).to_string());
    let rows = stmt.query_map(params![since_ms, source, list], |r| {
        let kind: Option<String> = r.get(1)?;
        let rule: Option<String> = r.get(2)?;
        Ok(RefusedLine {
            rule_id: r.get(0)?,
            rule: kind.as_deref().and_then(RuleKind::parse).zip(rule),
            queries: r.get::<_, i64>(3)?.max(0) as u64,
            clients: r.get::<_, i64>(4)?.max(0) as u64,
        })
    })?;
    let refused: Vec<RefusedLine> = rows.collect::<rusqlite::Result<_>>().context("reading refused queries")?;
    let devices = store.devices()?;
    let label = |stored: &str| stored_device_label(&devices, stored);
    let rules = store.block_rows(BlockFilter::default(), now_ms, live, &label)?;
    Ok(Blocked { queries_refused: refused.iter().map(|r| r.queries).sum(), refused, rules })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        query::experiment::tests::query,
        store::{blocks::NewRule, tests::temp_db},
    };

    #[test]
    fn refusals_are_counted_per_rule_within_the_period_and_device() {
        let mut s = Store::open(&temp_db("blocked")).unwrap();
        let rule = NewRule {
            kind: Some(RuleKind::Domain),
            rule: "ads.example".into(),
            domains: vec!["ads.example".into()],
            ..NewRule::default()
        };
        let id = s.add_rule_then(&rule, |_, _| Ok(())).unwrap().id();
        let t = 1_800_000_000_000;
        s.insert_dns(&[
            query(t - 1, "10.77.0.2", "ads.example", Some(id)), // before the period
            query(t, "10.77.0.2", "ads.example", Some(id)),
            query(t + 1, "10.77.0.2", "x.ads.example", Some(id)),
            query(t + 2, "10.77.0.3", "ads.example", Some(id)),
            query(t + 3, "10.77.0.3", "ok.example", None),
            query(t + 4, "10.77.0.3", "gone.example", Some(999)),
        ])
        .unwrap();
        let b = blocked(&s, 0, t, None, t + 10, &|_| None).unwrap();
        assert_eq!(b.queries_refused, 4);
        assert_eq!(
            b.refused,
            [
                RefusedLine {
                    rule_id: id,
                    rule: Some((RuleKind::Domain, "ads.example".into())),
                    queries: 3,
                    clients: 2
                },
                RefusedLine { rule_id: 999, rule: None, queries: 1, clients: 1 },
            ]
        );
        assert_eq!(b.rules.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
        let phone = vec!["10.77.0.2".to_owned()];
        let b = blocked(&s, 0, t, Some(&phone), t + 10, &|_| None).unwrap();
        assert_eq!((b.queries_refused, b.refused[0].clients), (2, 1));
    }
}
