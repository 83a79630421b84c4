//! The DNS query log in SQLite: writing paired exchanges with their answers, and the queries
//! behind `tracker dns` and `tracker domains`.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context as _, Result};
use rusqlite::params;
use serde::Serialize;

use super::{Store, Writer, explain_path, rollup, texts::TextIds};
use crate::{
    analysis::{
        dns::{self, Answer, AnswerData, Transport},
        domain,
    },
    timefmt,
};

/// One DNS exchange as the daemon pairs it: a client's query and, when seen, the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// Unix ms the query was seen (the response's time when the query was not).
    pub ts_ms: i64,
    /// Unix ms of the response; `None` while (or if never) answered.
    pub answered_ms: Option<i64>,
    pub client: IpAddr,
    pub client_port: u16,
    pub resolver: IpAddr,
    pub resolver_port: u16,
    pub transport: Transport,
    pub dns_id: u16,
    pub qname: String,
    pub qtype: String,
    /// `None` until a response is seen.
    pub rcode: Option<String>,
    pub truncated: bool,
    pub answers: Vec<Answer>,
    /// The rule whose kernel entry refused the query (answered it NXDOMAIN, or reset it over
    /// TCP); `None` for a query that went to the resolver.
    pub blocked_by: Option<u32>,
}

impl DnsRecord {
    /// The last CNAME target on the chain from the question name.
    pub fn cname(&self) -> Option<String> {
        dns::cname_chain(&self.answers, &self.qname).pop()
    }

    /// The smallest TTL of the addresses the client would use.
    pub fn min_ttl(&self) -> Option<u32> {
        dns::addresses_for(&self.answers, &self.qname).iter().map(|(_, ttl, _)| *ttl).min()
    }
}

/// An answer record as JSON shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AnswerRow {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    pub data: String,
}

/// A row of `tracker dns`; the field names are its JSON interface.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DnsRow {
    pub time: String,
    pub client: String,
    pub client_port: u16,
    pub resolver: String,
    pub transport: String,
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    pub rcode: Option<String>,
    pub truncated: bool,
    pub answers: Vec<AnswerRow>,
    pub cname_chain: Vec<String>,
    pub addresses: Vec<String>,
    pub ttl: Option<u32>,
    /// The block rule that refused the query (`tracker blocks` lists it); `None` otherwise.
    pub blocked_by: Option<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct DnsQuery {
    pub since_ms: Option<i64>,
    /// Only these client addresses (a device's); `None` for all.
    pub clients: Option<Vec<String>>,
    /// The name itself or any name under it (`example.com` matches `a.example.com`).
    pub domain: Option<String>,
    pub limit: Option<u32>,
    /// `sources.id`: the live interface (0, the default) or an import.
    pub source: i64,
}

/// How `tracker domains` groups question names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Grouping {
    /// Every name as queried.
    Name,
    /// By registrable domain (public suffix list): a.b.example.co.uk -> example.co.uk.
    Registrable,
}

#[derive(Clone, Debug)]
pub struct DomainQuery {
    pub since_ms: Option<i64>,
    /// Only these client addresses (a device's); `None` for all.
    pub clients: Option<Vec<String>>,
    pub min_queries: u64,
    pub group: Grouping,
    pub limit: Option<u32>,
    /// `sources.id`: the live interface (0, the default) or an import.
    pub source: i64,
}

/// A row of `tracker domains`; the field names are its JSON interface.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DomainRow {
    pub domain: String,
    pub queries: u64,
    pub clients: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// The answers of one stored exchange, for rebuilding a client's naming table after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswers {
    pub client: IpAddr,
    pub answered_ms: i64,
    pub qname: String,
    pub answers: Vec<Answer>,
}

/// The SQL condition for `--domain`: the name itself or a name under it. Written with `substr`
/// rather than LIKE so that `_` and `%` in the user's text are not wildcards.
const DOMAIN_MATCH: &str = "(?3 IS NULL OR q.qname = ?3 OR substr(q.qname, -length(?3) - 1) = '.' || ?3)";

impl Writer<'_> {
    /// Writes exchanges and their answers in one transaction.
    pub fn insert_dns(&self, records: &[DnsRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        {
            // Text columns are ids into `texts` (migration 8).
            let mut query = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO dns_query_rows (ts, answered, client, client_port, resolver,
                     resolver_port, transport, dns_id, qname, qtype, rcode, truncated, cname,
                     min_ttl, source, blocked_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            let mut answer = self.conn.prepare_cached(
                "INSERT INTO dns_answer_rows (query_id, position, name, type, ttl, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut deltas = rollup::DnsDeltas::default();
            let mut bits: HashMap<IpAddr, i64> = HashMap::new();
            let mut texts = TextIds::default();
            let conn = self.conn;
            let explain = |e| explain_path(self.path, e);
            for r in records {
                let DnsRecord {
                    ts_ms,
                    answered_ms,
                    client,
                    client_port,
                    resolver,
                    resolver_port,
                    transport,
                    dns_id,
                    qname,
                    qtype,
                    rcode,
                    truncated,
                    answers,
                    blocked_by,
                } = r;
                let mut id = |t: &str| texts.id(conn, t).map_err(explain);
                let (client_id, resolver_id) = (id(&client.to_string())?, id(&resolver.to_string())?);
                let (transport_id, qname_id, qtype_id) = (id(transport.as_str())?, id(qname)?, id(qtype)?);
                let rcode_id = texts.opt(conn, rcode.as_deref()).map_err(explain)?;
                let cname_id = texts.opt(conn, r.cname().as_deref()).map_err(explain)?;
                let inserted = query
                    .execute(params![
                        ts_ms,
                        answered_ms,
                        client_id,
                        client_port,
                        resolver_id,
                        resolver_port,
                        transport_id,
                        dns_id,
                        qname_id,
                        qtype_id,
                        rcode_id,
                        truncated,
                        cname_id,
                        r.min_ttl(),
                        self.source,
                        blocked_by,
                    ])
                    .map_err(explain)?;
                if inserted == 0 {
                    continue; // an import's query stored by an earlier import of the same file
                }
                let id = self.conn.last_insert_rowid();
                for (position, a) in answers.iter().enumerate() {
                    let name = texts.id(conn, &a.name).map_err(explain)?;
                    let (rtype, data) = (
                        texts.id(conn, &a.rtype).map_err(explain)?,
                        texts.id(conn, &a.data.to_text()).map_err(explain)?,
                    );
                    answer.execute(params![id, position, name, rtype, a.ttl, data]).map_err(explain)?;
                }
                if self.rollups {
                    let bit = match bits.get(client) {
                        Some(bit) => *bit,
                        None => *bits.entry(*client).or_insert(rollup::client_bit(self.conn, &client.to_string())?),
                    };
                    let facts = rollup::DnsFacts {
                        source: self.source,
                        ts: *ts_ms,
                        client: client.to_string(),
                        qname: qname.clone(),
                    };
                    deltas.add(&facts, bit);
                }
            }
            deltas.apply(self.conn).map_err(|e| e.context("updating the DNS roll-up"))?;
        }
        Ok(())
    }
}

impl Store {
    /// Writes exchanges and their answers in one transaction.
    pub fn insert_dns(&mut self, records: &[DnsRecord]) -> Result<()> {
        self.write(|w| w.insert_dns(records))
    }

    /// The query log, newest first.
    pub fn dns(&self, q: &DnsQuery) -> Result<Vec<DnsRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT q.id, q.ts, q.client, q.client_port, q.resolver, q.transport, q.qname,
                    q.qtype, q.rcode, q.truncated, q.blocked_by
             FROM dns_queries q
             WHERE q.ts >= ?1 AND (?2 IS NULL OR q.client IN (SELECT value FROM json_each(?2))) AND {DOMAIN_MATCH}
                 AND q.source = ?5
             ORDER BY q.ts DESC, q.id DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![
                q.since_ms.unwrap_or(i64::MIN),
                super::clients_json(q.clients.as_deref()),
                q.domain.as_deref().map(normalize_domain),
                q.limit.map_or(-1, i64::from),
                q.source,
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    DnsRow {
                        time: timefmt::rfc3339(r.get(1)?),
                        client: r.get(2)?,
                        client_port: r.get(3)?,
                        resolver: r.get(4)?,
                        transport: r.get(5)?,
                        name: r.get(6)?,
                        qtype: r.get(7)?,
                        rcode: r.get(8)?,
                        truncated: r.get(9)?,
                        answers: Vec::new(),
                        cname_chain: Vec::new(),
                        addresses: Vec::new(),
                        ttl: None,
                        blocked_by: r.get(10)?,
                    },
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, mut row) = row.context("reading the DNS log")?;
            let answers = self.answers(id)?;
            row.cname_chain = dns::cname_chain(&answers, &row.name);
            let addresses = dns::addresses_for(&answers, &row.name);
            row.ttl = addresses.iter().map(|(_, ttl, _)| *ttl).min();
            row.addresses = addresses.iter().map(|(ip, _, _)| ip.to_string()).collect();
            row.answers = answers
                .into_iter()
                .map(|Answer { name, rtype, ttl, data }| AnswerRow { name, rtype, ttl, data: data.to_text() })
                .collect();
            out.push(row);
        }
        Ok(out)
    }

    fn answers(&self, query_id: i64) -> Result<Vec<Answer>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, type, ttl, data FROM dns_answers WHERE query_id = ?1 ORDER BY position")?;
        let rows = stmt.query_map([query_id], |r| {
            let rtype: String = r.get(1)?;
            let data: String = r.get(3)?;
            Ok(Answer { name: r.get(0)?, data: AnswerData::from_text(&rtype, &data), rtype, ttl: r.get(2)? })
        })?;
        rows.collect::<rusqlite::Result<_>>().context("reading DNS answers")
    }

    /// How many exchanges [`Store::dns`] would list for `q` without its limit.
    pub fn dns_total(&self, q: &DnsQuery) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            &format!(
                "SELECT count(*) FROM dns_queries q
                 WHERE q.ts >= ?1 AND (?2 IS NULL OR q.client IN (SELECT value FROM json_each(?2))) AND {DOMAIN_MATCH}
                     AND q.source = ?4"
            ),
            params![
                q.since_ms.unwrap_or(i64::MIN),
                super::clients_json(q.clients.as_deref()),
                q.domain.as_deref().map(normalize_domain),
                q.source,
            ],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Query counts per name (or registrable domain), most queried first, then by name.
    pub fn domains(&self, q: &DomainQuery) -> Result<Vec<DomainRow>> {
        Ok(self.domains_counted(q)?.0)
    }

    /// [`Store::domains`] and how many rows there were before `q.limit` cut them.
    pub fn domains_counted(&self, q: &DomainQuery) -> Result<(Vec<DomainRow>, u64)> {
        let _snapshot = self.snapshot()?;
        // Per name from the roll-up (store/rollup.rs); grouping in Rust, because the
        // registrable domain comes from the public suffix list, not from SQL.
        let period = rollup::Period::read(&self.conn, q.source, q.since_ms.unwrap_or(i64::MIN / 2))?;
        let names = rollup::name_groups(&self.conn, &period, q.clients.as_deref())?;
        let mut groups: HashMap<String, rollup::NameCounts> = HashMap::new();
        for (qname, c) in names {
            let key = match q.group {
                Grouping::Name => qname,
                Grouping::Registrable => domain::registrable(&qname).unwrap_or(qname),
            };
            groups.entry(key).and_modify(|e| e.merge(&c)).or_insert(c);
        }
        let mut out: Vec<DomainRow> = groups
            .into_iter()
            .filter(|(_, a)| a.queries.max(0) as u64 >= q.min_queries)
            .map(|(domain, a)| DomainRow {
                domain,
                queries: a.queries.max(0) as u64,
                clients: u64::from(a.client_bits.count_ones()),
                first_seen: timefmt::rfc3339(a.first_ts),
                last_seen: timefmt::rfc3339(a.last_ts),
            })
            .collect();
        out.sort_by(|a, b| b.queries.cmp(&a.queries).then_with(|| a.domain.cmp(&b.domain)));
        let total = out.len() as u64;
        if let Some(limit) = q.limit {
            out.truncate(limit as usize);
        }
        Ok((out, total))
    }

    /// The smallest id of the live log's queries from `since_ms` on, rows or packed: a lower
    /// bound of their answers' `query_id`. A join of `dns_queries` and `dns_answers` bound by
    /// it reads only the packed days it needs on both sides (SQLite cannot move the join's
    /// `a.query_id = q.id` into the views).
    pub fn first_query_id(&self, since_ms: i64) -> Result<i64> {
        Ok(self.conn.query_row(
            &format!(
                "SELECT min(coalesce((SELECT min(id) FROM main.dns_queries WHERE source = 0 AND ts >= ?1), ?2),
                            coalesce((SELECT min(min_id) FROM {} WHERE source = 0 AND max_ts >= ?1), ?2))",
                super::packed_dns::TABLE
            ),
            params![since_ms, i64::MAX],
            |r| r.get(0),
        )?)
    }

    /// The live interface's answered exchanges with addresses since `since_ms`, oldest first,
    /// at most `limit` (an import's answers were never given to a live device).
    pub fn recent_answers(&self, since_ms: i64, limit: u32) -> Result<Vec<StoredAnswers>> {
        // The rows only: a day is packed two days after it ended, long after any answer the
        // daemon reloads is still alive, and `answered` bounds no packed day (the view would
        // unpack them all).
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, client, answered, qname FROM main.dns_queries
             WHERE answered >= ?1 AND min_ttl IS NOT NULL AND source = 0
             ORDER BY answered DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since_ms, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, client, answered_ms, qname) = row.context("reading the DNS log")?;
            let Ok(client) = client.parse() else { continue };
            out.push(StoredAnswers { client, answered_ms, qname, answers: self.answers(id)? });
        }
        out.reverse();
        Ok(out)
    }

    pub fn dns_count(&self) -> Result<u64> {
        // Rows and packed days counted apart (through the view, every packed day is unpacked),
        // in one snapshot, so a prune packing between the two counts nothing twice.
        let _snapshot = self.snapshot()?;
        super::packed_dns::total(&self.conn)
    }
}

/// `--domain Example.COM.` means example.com: names are stored lower case without the dot.
fn normalize_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::tests::temp_db;

    fn answer(name: &str, rtype: &str, ttl: u32, data: &str) -> Answer {
        Answer { name: name.into(), rtype: rtype.into(), ttl, data: AnswerData::from_text(rtype, data) }
    }

    pub(crate) fn record(ts_ms: i64, client: &str, qname: &str, answers: Vec<Answer>) -> DnsRecord {
        DnsRecord {
            ts_ms,
            answered_ms: Some(ts_ms + 5),
            client: client.parse().unwrap(),
            client_port: 40000,
            resolver: "10.77.0.1".parse().unwrap(),
            resolver_port: 53,
            transport: Transport::Udp,
            dns_id: 7,
            qname: qname.into(),
            qtype: "A".into(),
            rcode: Some("NOERROR".into()),
            truncated: false,
            answers,
            blocked_by: None,
        }
    }

    /// The daily roll-up plus the log before the first midnight counts exactly what a scan of
    /// the log counts, from any start time.
    #[test]
    fn domain_counts_from_the_daily_roll_up_equal_a_scan_of_the_log() {
        const DAY: i64 = 86_400_000;
        let mut s = Store::open(&temp_db("dns-days")).unwrap();
        let names = ["a.example", "b.example", "c.example"];
        let records: Vec<DnsRecord> = (0..300)
            .map(|i: i64| {
                record(
                    10 * DAY + i * 977_777,
                    ["10.77.0.2", "10.77.0.3"][i as usize % 2],
                    names[i as usize % 3],
                    vec![],
                )
            })
            .collect();
        s.insert_dns(&records).unwrap();
        for since in [0, 10 * DAY, 10 * DAY + 1, 10 * DAY + DAY / 2, 11 * DAY - 1, 11 * DAY, 12 * DAY + 123_456] {
            for clients in [None, Some(vec!["10.77.0.3".to_owned()])] {
                let q = DomainQuery {
                    since_ms: Some(since),
                    clients: clients.clone(),
                    min_queries: 1,
                    group: Grouping::Name,
                    limit: None,
                    source: 0,
                };
                let got: Vec<(String, u64, u64, String, String)> = s
                    .domains(&q)
                    .unwrap()
                    .into_iter()
                    .map(|d| (d.domain, d.queries, d.clients, d.first_seen, d.last_seen))
                    .collect();
                let scan = records
                    .iter()
                    .filter(|r| r.ts_ms >= since && clients.as_ref().is_none_or(|c| c[0] == r.client.to_string()));
                let mut want: Vec<(String, u64, u64, String, String)> = names
                    .iter()
                    .filter_map(|n| {
                        let mine: Vec<&DnsRecord> = scan.clone().filter(|r| r.qname == *n).collect();
                        let first = mine.iter().map(|r| r.ts_ms).min()?;
                        let last = mine.iter().map(|r| r.ts_ms).max()?;
                        let clients: std::collections::HashSet<_> = mine.iter().map(|r| r.client).collect();
                        Some((
                            n.to_string(),
                            mine.len() as u64,
                            clients.len() as u64,
                            timefmt::rfc3339(first),
                            timefmt::rfc3339(last),
                        ))
                    })
                    .collect();
                want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                assert_eq!(got, want, "since {since}, clients {clients:?}");
            }
        }
    }

    #[test]
    fn the_log_round_trips_with_chains_and_filters() {
        let mut s = Store::open(&temp_db("dns-log")).unwrap();
        let chain = vec![
            answer("www.example.com", "CNAME", 300, "edge.cdn.example"),
            answer("edge.cdn.example", "CNAME", 60, "e1.cdn.example"),
            answer("e1.cdn.example", "A", 20, "192.0.2.7"),
            answer("unrelated.example", "A", 5, "192.0.2.99"),
        ];
        let mut unanswered = record(3_000, "10.77.0.3", "a_b%.example.org", vec![]);
        unanswered.answered_ms = None;
        unanswered.rcode = None;
        s.insert_dns(&[record(1_000, "10.77.0.2", "www.example.com", chain), unanswered]).unwrap();
        let stored: i64 = s.conn.query_row("SELECT min_ttl FROM dns_queries WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 20);

        let all = s.dns(&DnsQuery::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name, "a_b%.example.org");
        assert_eq!(all[0].rcode, None);
        let www = &all[1];
        assert_eq!(www.cname_chain, ["edge.cdn.example", "e1.cdn.example"]);
        assert_eq!(www.addresses, ["192.0.2.7"]);
        assert_eq!(www.ttl, Some(20));
        assert_eq!(www.answers.len(), 4);
        assert_eq!(www.answers[0].rtype, "CNAME");
        assert_eq!(www.time, timefmt::rfc3339(1_000));

        let by_domain = |d: &str| s.dns(&DnsQuery { domain: Some(d.into()), ..Default::default() }).unwrap().len();
        assert_eq!(by_domain("example.com"), 1);
        assert_eq!(by_domain("Example.COM."), 1);
        assert_eq!(by_domain("www.example.com"), 1);
        assert_eq!(by_domain("ample.com"), 0, "a suffix match is by whole labels");
        assert_eq!(by_domain("%.example.org"), 0, "no LIKE wildcards");
        assert_eq!(by_domain("a_b%.example.org"), 1);
        let clients = Some(vec!["10.77.0.3".to_owned()]);
        assert_eq!(s.dns(&DnsQuery { clients: clients.clone(), ..Default::default() }).unwrap().len(), 1);
        assert_eq!(s.dns(&DnsQuery { since_ms: Some(2_000), ..Default::default() }).unwrap().len(), 1);
        assert_eq!(s.dns(&DnsQuery { limit: Some(1), ..Default::default() }).unwrap().len(), 1);
        // The total a cut listing reports ignores the limit and keeps the filters.
        assert_eq!(s.dns_total(&DnsQuery { limit: Some(1), ..Default::default() }).unwrap(), 2);
        assert_eq!(s.dns_total(&DnsQuery { domain: Some("example.com".into()), ..Default::default() }).unwrap(), 1);
        assert_eq!(s.dns_total(&DnsQuery { clients, ..Default::default() }).unwrap(), 1);
    }

    #[test]
    fn domains_count_filter_and_group() {
        let mut s = Store::open(&temp_db("dns-domains")).unwrap();
        let mut rs = Vec::new();
        for i in 0..3 {
            rs.push(record(1_000 + i, "10.77.0.2", "a.example.co.uk", vec![]));
        }
        rs.push(record(2_000, "10.77.0.3", "b.a.example.co.uk", vec![]));
        rs.push(record(2_500, "10.77.0.3", "a.example.co.uk", vec![]));
        rs.push(record(3_000, "10.77.0.2", "other.example", vec![]));
        s.insert_dns(&rs).unwrap();
        let q = |min_queries, group| {
            s.domains(&DomainQuery { since_ms: None, clients: None, min_queries, group, limit: None, source: 0 })
                .unwrap()
        };
        let names = q(1, Grouping::Name);
        let summary: Vec<(&str, u64, u64)> = names.iter().map(|r| (r.domain.as_str(), r.queries, r.clients)).collect();
        assert_eq!(summary, [("a.example.co.uk", 4, 2), ("b.a.example.co.uk", 1, 1), ("other.example", 1, 1)]);
        assert_eq!(names[0].first_seen, timefmt::rfc3339(1_000));
        assert_eq!(names[0].last_seen, timefmt::rfc3339(2_500));
        assert_eq!(q(4, Grouping::Name).len(), 1);
        assert_eq!(q(5, Grouping::Name).len(), 0);
        let grouped = q(2, Grouping::Registrable);
        let summary: Vec<(&str, u64, u64)> =
            grouped.iter().map(|r| (r.domain.as_str(), r.queries, r.clients)).collect();
        assert_eq!(summary, [("example.co.uk", 5, 2)]);
        let (cut, total) = s
            .domains_counted(&DomainQuery {
                since_ms: None,
                clients: None,
                min_queries: 1,
                group: Grouping::Name,
                limit: Some(1),
                source: 0,
            })
            .unwrap();
        assert_eq!((cut.len(), total), (1, 3));
    }

    #[test]
    fn recent_answers_are_oldest_first_and_only_with_addresses() {
        let mut s = Store::open(&temp_db("dns-recent")).unwrap();
        let a = |ip: &str| vec![answer("x.example", "A", 60, ip)];
        s.insert_dns(&[
            record(1_000, "10.77.0.2", "x.example", a("192.0.2.1")),
            record(2_000, "10.77.0.2", "x.example", a("192.0.2.2")),
            record(2_500, "10.77.0.2", "nx.example", vec![]),
            record(500, "10.77.0.2", "x.example", a("192.0.2.3")),
        ])
        .unwrap();
        let got = s.recent_answers(900, 100).unwrap();
        let times: Vec<i64> = got.iter().map(|r| r.answered_ms).collect();
        assert_eq!(times, [1_005, 2_005]);
        assert_eq!(got[1].answers[0].data, AnswerData::Addr("192.0.2.2".parse().unwrap()));
        assert_eq!(s.recent_answers(900, 1).unwrap()[0].answered_ms, 2_005);
    }
}
