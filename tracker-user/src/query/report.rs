//! `tracker report`: the answers to the user's questions over a period (domains, companies with
//! and without the big players, services, encryption, protocols, devices), computed by SQL over
//! the hourly roll-up the daemon keeps, for the CLI, the HTML page and the dashboard alike.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde::Serialize;

use super::timeline::{self, Bucket, Span};
use crate::{
    analysis::{
        entity::EntityTable,
        labels::OwnerKind,
        protocol::{AppProtocol, Encryption},
    },
    store::{
        DomainQuery, Grouping, Store, protocol_name,
        rollup::{self, Dim, FlowFacts, Key, Period},
    },
    timefmt,
};

/// The companies the report's second company chart leaves out unless told otherwise (the HTML
/// page, the dashboard's "hide the big players"): the platforms nearly every phone talks to all
/// day.
pub const BIG_PLAYERS: [&str; 5] = ["Apple", "Google", "Amazon", "Microsoft", "Meta"];

/// What a report covers.
#[derive(Clone, Debug, Default)]
pub struct ReportQuery {
    /// Connections that started at or after this unix-ms time.
    pub since_ms: i64,
    /// The end of the period as shown (now).
    pub until_ms: i64,
    /// Only these client addresses, and the label `--client` gave them.
    pub clients: Option<(String, Vec<String>)>,
    /// Companies (or registrable domains) left out of the second company table.
    pub exclude: Vec<String>,
    /// The domains section lists names queried at least this often.
    pub min_queries: u64,
    /// At most this many domains.
    pub domains_limit: Option<u32>,
    /// `sources.id`: the live interface (0) or an import.
    pub source: i64,
}

/// A line's numbers: connections and bytes, and their shares of the section's total.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Share {
    pub connections: u64,
    /// Percent of the section's connections.
    pub connections_pct: f64,
    /// IP bytes both ways.
    pub bytes: u64,
    pub bytes_pct: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub connections: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainLine {
    pub domain: String,
    pub queries: u64,
    pub clients: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompanyLine {
    /// The company, the registrable domain (kind `domain`), or empty for local and unnamed.
    pub name: String,
    pub kind: &'static str,
    /// The company's category (`platform`, `cdn`, `advertising`, ...); null for the others.
    pub category: Option<&'static str>,
    #[serde(flatten)]
    pub share: Share,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Excluding {
    pub excluded: Vec<String>,
    pub connections: u64,
    pub bytes: u64,
    pub rows: Vec<CompanyLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServedLine {
    pub name: String,
    pub connections: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceLine {
    pub name: String,
    pub company: Option<String>,
    #[serde(flatten)]
    pub share: Share,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EncryptionLine {
    pub class: &'static str,
    /// The application protocols counted in this class, as found in the period.
    pub protocols: Vec<String>,
    #[serde(flatten)]
    pub share: Share,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProtocolLine {
    pub name: String,
    /// For application protocols: `encrypted`, `unencrypted` or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<&'static str>,
    #[serde(flatten)]
    pub share: Share,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceLine {
    /// Its name, else its first address.
    pub device: String,
    pub public_key: Option<String>,
    pub addresses: Vec<String>,
    pub connections: u64,
    pub bytes: u64,
}

/// The whole report; the field names are its JSON interface (README, "Reports").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub client: Option<String>,
    pub totals: Totals,
    pub domains: Vec<DomainLine>,
    pub companies: Vec<CompanyLine>,
    pub companies_excluding: Option<Excluding>,
    pub served_by: Vec<ServedLine>,
    pub services: Vec<ServiceLine>,
    pub encryption: Vec<EncryptionLine>,
    pub transports: Vec<ProtocolLine>,
    pub app_protocols: Vec<ProtocolLine>,
    pub devices: Vec<DeviceLine>,
}

/// A dimension's groups over the period as `(key, connections, bytes)`.
fn groups(
    store: &Store,
    dim: Dim,
    period: &Period,
    clients: Option<&[String]>,
    head: &[FlowFacts],
) -> Result<Vec<(Key, u64, u64)>> {
    Ok(rollup::flow_groups(store.conn(), dim, period, clients, head)?
        .into_iter()
        .map(|(k, c)| (k, c.connections.max(0) as u64, c.bytes().max(0) as u64))
        .collect())
}

/// Adds up `(key, connections, bytes)` per key, largest first (by connections, then bytes, then
/// key, so equal lines keep one order).
fn sum_by<K: Ord + Clone>(items: impl Iterator<Item = (K, u64, u64)>) -> Vec<(K, u64, u64)> {
    let mut acc: BTreeMap<K, (u64, u64)> = BTreeMap::new();
    for (k, c, b) in items {
        let e = acc.entry(k).or_default();
        e.0 += c;
        e.1 += b;
    }
    let mut out: Vec<(K, u64, u64)> = acc.into_iter().map(|(k, (c, b))| (k, c, b)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
    out
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

fn share(connections: u64, bytes: u64, total: &Totals) -> Share {
    Share {
        connections,
        connections_pct: pct(connections, total.connections),
        bytes,
        bytes_pct: pct(bytes, total.bytes),
    }
}

/// The company lines of the owner groups, shares over `total`.
fn company_lines(owners: &[(Key, u64, u64)], entities: &EntityTable, total: &Totals) -> Vec<CompanyLine> {
    sum_by(owners.iter().map(|([kind, name, _], c, b)| ((kind.clone(), name.clone()), *c, *b)))
        .into_iter()
        .map(|((kind, name), c, b)| {
            let kind = OwnerKind::from_name(&kind).unwrap_or(OwnerKind::Unnamed);
            let category = (kind == OwnerKind::Company)
                .then(|| entities.companies().iter().find(|e| e.name == name).map(|e| e.category.as_str()))
                .flatten();
            CompanyLine { name, kind: kind.as_str(), category, share: share(c, b, total) }
        })
        .collect()
}

/// Whether a company line is one `--exclude` named: a company or a registrable domain, by
/// name, ignoring case.
fn excluded(line_kind: &str, name: &str, exclude: &[String]) -> bool {
    let named = line_kind == OwnerKind::Company.as_str() || line_kind == OwnerKind::Domain.as_str();
    named && exclude.iter().any(|e| e.eq_ignore_ascii_case(name))
}

/// The company lines without those `exclude` names, their shares recomputed over what is left
/// (the order stays: a subset of lines sorted by connections is sorted).
pub fn excluding(companies: &[CompanyLine], exclude: &[String]) -> Excluding {
    let kept: Vec<&CompanyLine> = companies.iter().filter(|c| !excluded(c.kind, &c.name, exclude)).collect();
    let rest = kept.iter().fold(Totals::default(), |t, c| Totals {
        connections: t.connections + c.share.connections,
        bytes: t.bytes + c.share.bytes,
    });
    let rows = kept
        .into_iter()
        .map(|c| CompanyLine { share: share(c.share.connections, c.share.bytes, &rest), ..c.clone() })
        .collect();
    Excluding { excluded: exclude.to_vec(), connections: rest.connections, bytes: rest.bytes, rows }
}

/// Builds the report: the roll-up's groups summed per section in memory (a few thousand rows
/// for a week of a household), and the DNS log's names.
pub fn report(store: &Store, entities: &EntityTable, q: &ReportQuery) -> Result<Report> {
    Ok(report_with_timeline(store, entities, q, None)?.0)
}

/// [`report`], and with `span` its period's timeline to `q.until_ms` (the dashboard's first
/// page), read in one snapshot: the timeline adds up to the report's totals, and the period's
/// first flows, up to a day of them when it starts on a packed day, are read once for both.
pub fn report_with_timeline(
    store: &Store,
    entities: &EntityTable,
    q: &ReportQuery,
    span: Option<Span>,
) -> Result<(Report, Vec<Bucket>)> {
    let _snapshot = store.snapshot()?;
    let period = Period::read(store.conn(), q.source, q.since_ms)?;
    let clients = q.clients.as_ref().map(|(_, c)| c.as_slice());
    let head = rollup::head_flows(store.conn(), &period, clients)?;
    let owners = groups(store, Dim::Owner, &period, clients, &head)?;
    let total = owners
        .iter()
        .fold(Totals::default(), |t, (_, c, b)| Totals { connections: t.connections + c, bytes: t.bytes + b });

    let companies = company_lines(&owners, entities, &total);
    let companies_excluding = (!q.exclude.is_empty()).then(|| excluding(&companies, &q.exclude));

    let served_by =
        sum_by(groups(store, Dim::ServedBy, &period, clients, &head)?.into_iter().map(|([k, ..], c, b)| (k, c, b)))
            .into_iter()
            .map(|(name, connections, bytes)| ServedLine { name, connections, bytes })
            .collect();

    let services =
        sum_by(groups(store, Dim::Service, &period, clients, &head)?.into_iter().map(|([k, ..], c, b)| (k, c, b)))
            .into_iter()
            .map(|(name, c, b)| {
                let company = entities.services().iter().find(|s| s.name == name).map(|s| s.company.clone());
                ServiceLine { name, company, share: share(c, b, &total) }
            })
            .collect();

    let protocols = groups(store, Dim::Protocol, &period, clients, &head)?;
    let mut protocols_of: HashMap<String, Vec<String>> = HashMap::new();
    for ([_, app, encrypted], ..) in &protocols {
        let list = protocols_of.entry(encrypted.clone()).or_default();
        if !list.contains(app) {
            list.push(app.clone());
        }
    }
    let encryption = sum_by(protocols.iter().map(|([_, _, e], c, b)| (e.clone(), *c, *b)))
        .into_iter()
        .map(|(class, c, b)| {
            let mut protocols = protocols_of.remove(&class).unwrap_or_default();
            protocols.sort();
            EncryptionLine { class: encryption_name(&class), protocols, share: share(c, b, &total) }
        })
        .collect();

    let transports = sum_by(protocols.iter().map(|([p, ..], c, b)| (p.parse::<u8>().unwrap_or_default(), *c, *b)))
        .into_iter()
        .map(|(p, c, b)| ProtocolLine { name: protocol_name(p), encryption: None, share: share(c, b, &total) })
        .collect();
    let app_protocols = sum_by(protocols.iter().map(|([_, app, _], c, b)| (app.clone(), *c, *b)))
        .into_iter()
        .map(|(name, c, b)| {
            let encryption = AppProtocol::from_name(&name).map_or(Encryption::Unknown, AppProtocol::encryption);
            ProtocolLine { name, encryption: Some(encryption.as_str()), share: share(c, b, &total) }
        })
        .collect();

    let devices = device_lines(store, &period, clients, &head)?;

    let domains = store
        .domains_counted(&DomainQuery {
            source: q.source,
            since_ms: Some(q.since_ms),
            clients: q.clients.as_ref().map(|(_, c)| c.clone()),
            min_queries: q.min_queries,
            group: Grouping::Name,
            limit: q.domains_limit,
        })?
        .0
        .into_iter()
        .map(|d| DomainLine { domain: d.domain, queries: d.queries, clients: d.clients })
        .collect();

    let buckets = match span {
        Some(span) => timeline::buckets(store, &period, q.until_ms, clients, span, Some(&head))?,
        None => Vec::new(),
    };
    let report = Report {
        since: timefmt::rfc3339(q.since_ms),
        until: timefmt::rfc3339(q.until_ms),
        client: q.clients.as_ref().map(|(label, _)| label.clone()),
        totals: total,
        domains,
        companies,
        companies_excluding,
        served_by,
        services,
        encryption,
        transports,
        app_protocols,
        devices,
    };
    Ok((report, buckets))
}

/// The stored encryption class as the report's static name.
fn encryption_name(stored: &str) -> &'static str {
    [Encryption::Encrypted, Encryption::Unencrypted, Encryption::Unknown]
        .into_iter()
        .find(|e| e.as_str() == stored)
        .unwrap_or(Encryption::Unknown)
        .as_str()
}

/// One line per device: the WireGuard peer whose allowed IPs hold the client address, or the
/// address itself when no peer does.
fn device_lines(
    store: &Store,
    period: &Period,
    clients: Option<&[String]>,
    head: &[FlowFacts],
) -> Result<Vec<DeviceLine>> {
    let devices = store.devices()?;
    let per_client = rollup::client_groups(store.conn(), period, clients, head)?;
    let mut lines: BTreeMap<String, DeviceLine> = BTreeMap::new();
    for (client, c, b) in
        sum_by(per_client.into_iter().map(|(k, c)| (k, c.connections.max(0) as u64, c.bytes().max(0) as u64)))
    {
        let device = client.parse().ok().and_then(|ip| devices.of(ip));
        let key = device.map_or_else(|| client.clone(), |d| d.public_key.clone());
        let line = lines.entry(key).or_insert_with(|| DeviceLine {
            device: device.map_or_else(|| client.clone(), |d| d.label()),
            public_key: device.map(|d| d.public_key.clone()),
            addresses: Vec::new(),
            connections: 0,
            bytes: 0,
        });
        line.addresses.push(client);
        line.connections += c;
        line.bytes += b;
    }
    let mut out: Vec<DeviceLine> = lines.into_values().collect();
    for l in &mut out {
        l.addresses.sort();
    }
    out.sort_by(|a, b| b.connections.cmp(&a.connections).then(a.device.cmp(&b.device)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{labelled_flow as flow, temp_db};

    const H: i64 = rollup::HOUR_MS;

    /// Roll-up rows as the tests compare them: dimension, client, span, bucket, keys,
    /// connections, bytes.
    type RollupRows = Vec<(String, String, i64, i64, String, String, String, i64, i64)>;
    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % H;

    /// Every roll-up must equal a GROUP BY over the flows, whatever was written and rewritten:
    /// each dimension, hours and days, per client (every device's figures are their sum).
    fn assert_rollup_matches_flows(s: &Store) {
        let q = |sql: &str| -> RollupRows {
            let mut st = s.conn().prepare(sql).unwrap();
            st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        let rolled = q("SELECT dim, client, span, bucket, k1, k2, k3, connections, bytes_up + bytes_down FROM rollup
                        WHERE connections != 0 ORDER BY 1, 2, 3, 4, 5, 6, 7");
        let mut naive = Vec::new();
        for (dim, keys, filter) in [
            ("owner", "coalesce(owner_kind, 'unnamed'), coalesce(owner, ''), ''", "1"),
            ("service", "service, '', ''", "coalesce(service, '') != ''"),
            ("served_by", "served_by, '', ''", "coalesce(served_by, '') != ''"),
            ("protocol", "CAST(protocol AS TEXT), app_protocol, encrypted", "1"),
        ] {
            for span in [rollup::HOUR_MS, rollup::DAY_MS] {
                naive.extend(q(&format!(
                    "SELECT '{dim}', client, {span}, first_seen - first_seen % {span}, {keys}, count(*),
                            sum(bytes_up + bytes_down)
                     FROM flows WHERE {filter} GROUP BY 2, 4, 5, 6, 7"
                )));
            }
        }
        naive.sort();
        assert_eq!(rolled, naive);
    }

    #[test]
    fn the_roll_up_follows_every_write_and_the_report_starts_exactly_at_since() {
        let mut s = Store::open(&temp_db("report")).unwrap();
        let phone = "10.77.0.2";
        let flows = [
            flow(1, phone, T0 + 10, Some("www.apple.com"), AppProtocol::Tls, 900),
            flow(2, phone, T0 + H / 2 - 1, Some("api.mparticle.com"), AppProtocol::Tls, 400),
            flow(3, phone, T0 + H / 2, Some("www.google.com"), AppProtocol::Quic, 1_900),
            flow(4, phone, T0 + H + 5, None, AppProtocol::Http, 100),
            flow(5, "10.77.0.9", T0 + 2 * H, Some("nas.example"), AppProtocol::Dns, 0),
        ];
        s.upsert_flows("boot", &flows).unwrap();
        assert_rollup_matches_flows(&s);
        // New counts, then a late DNS answer names flow 4: it moves to its owner's row.
        let mut more = flows[0].clone();
        more.bytes_up += 5_000;
        let renamed = flow(4, phone, T0 + H + 5, Some("graph.facebook.com"), AppProtocol::Http, 300);
        s.upsert_flows("boot", &[more, renamed]).unwrap();
        assert_rollup_matches_flows(&s);

        // What a migration fills from stored rows is what the writes kept.
        let snapshot = |s: &Store| -> RollupRows {
            let mut st = s
                .conn()
                .prepare(
                    "SELECT dim, client, span, bucket, k1, k2, k3, connections, packets, bytes_up, bytes_down
                     FROM rollup ORDER BY 1, 2, 3, 4, 5, 6, 7",
                )
                .unwrap();
            st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(10)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        let kept = snapshot(&s);
        s.conn().execute_batch("DELETE FROM rollup_rows").unwrap();
        rollup::rebuild(s.conn()).unwrap();
        let rebuilt: Vec<_> = snapshot(&s).into_iter().filter(|r| r.7 != 0).collect();
        assert_eq!(rebuilt, kept.into_iter().filter(|r| r.7 != 0).collect::<Vec<_>>());

        let entities = EntityTable::builtin();
        // From the middle of the first hour: flow 2 (1 ms before) is out, flow 3 (at it) in.
        let q = ReportQuery { since_ms: T0 + H / 2, until_ms: T0 + 3 * H, ..ReportQuery::default() };
        let r = report(&s, &entities, &q).unwrap();
        // Flow 3 (Google, 2,000 B), 4 (Meta, 400 B), 5 (local, 100 B).
        assert_eq!(r.totals, Totals { connections: 3, bytes: 2_500 });
        let lines: Vec<(&str, &str, u64, u64)> =
            r.companies.iter().map(|c| (c.name.as_str(), c.kind, c.share.connections, c.share.bytes)).collect();
        assert_eq!(lines, [("Google", "company", 1, 2_000), ("Meta", "company", 1, 400), ("", "local", 1, 100)]);
        assert_eq!(r.companies[0].category, Some("platform"));
        assert!((r.companies[0].share.bytes_pct - 80.0).abs() < 1e-9);
        let enc: Vec<(&str, u64)> = r.encryption.iter().map(|e| (e.class, e.share.connections)).collect();
        assert_eq!(enc, [("unencrypted", 2), ("encrypted", 1)]);
        assert_eq!(r.encryption[0].protocols, ["dns", "http"]);

        // Everything, then without Apple and Google: shares of what is left.
        let q = ReportQuery { since_ms: T0, exclude: vec!["apple".into(), "Google".into()], ..q };
        let r = report(&s, &entities, &q).unwrap();
        assert_eq!(r.totals.connections, 5);
        let ex = r.companies_excluding.unwrap();
        assert_eq!((ex.connections, ex.bytes), (3, 400 + 500 + 100));
        let rest: Vec<(&str, u64, f64)> =
            ex.rows.iter().map(|c| (c.name.as_str(), c.share.connections, c.share.connections_pct)).collect();
        assert_eq!(rest, [("mParticle", 1, 100.0 / 3.0), ("Meta", 1, 100.0 / 3.0), ("", 1, 100.0 / 3.0)]);
        let services: Vec<&str> = r.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(services, ["mParticle", "Facebook"], "equal connections: more bytes first");
        // Devices: the phone and the LAN address, each its own line without WireGuard peers.
        let devices: Vec<(&str, u64)> = r.devices.iter().map(|d| (d.device.as_str(), d.connections)).collect();
        assert_eq!(devices, [("10.77.0.2", 4), ("10.77.0.9", 1)]);
        // `tracker devices`' totals: all time, per client address.
        let mut totals = s.client_totals().unwrap();
        totals.sort();
        assert_eq!(
            totals,
            [("10.77.0.2".to_owned(), 4, 1_000 + 5_000 + 500 + 2_000 + 400), ("10.77.0.9".to_owned(), 1, 100)]
        );
        // Only one device.
        let q = ReportQuery { clients: Some(("phone".into(), vec![phone.into()])), exclude: vec![], ..q };
        assert_eq!(report(&s, &entities, &q).unwrap().totals.connections, 4);
    }
}
