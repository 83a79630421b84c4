//! One domain, company, service or device over a period: its connections and bytes, their
//! timeline, the names and addresses behind them, the devices that used it (for a device: the
//! names, companies and services it used), from the live flows and DNS log.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use rusqlite::{ToSql, params_from_iter};

use super::{
    report::Totals,
    timeline::{Bucket, Span, empty_buckets},
};
use crate::{
    analysis::entity::EntityTable,
    store::{Store, clients_json, devices::DeviceList, schema::LIVE_SOURCE},
};

/// Lines each list shows: the most used first.
pub const LINES: usize = 25;

/// What a detail page is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A name and every name under it (as a domain rule blocks them).
    Domain(String),
    /// A company of the entity table, as flows were labelled.
    Company(String),
    Service(String),
    /// A device as `--client` takes it: its public key, name or an address.
    Device(String),
}

/// What one line counts: connections and their bytes, DNS queries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub name: String,
    /// What a link to its own page names: a device's public key, else the name itself.
    pub key: String,
    pub connections: u64,
    pub bytes: u64,
    pub queries: u64,
}

/// The period's figures for one subject.
#[derive(Clone, Debug, PartialEq)]
pub struct Detail {
    /// The name as asked (canonical for a domain), a device's label.
    pub title: String,
    pub totals: Totals,
    /// DNS queries for its names (a device: its queries).
    pub queries: u64,
    pub timeline: Vec<Bucket>,
    pub names: Vec<Tally>,
    /// The addresses of the other ends.
    pub addresses: Vec<Tally>,
    pub devices: Vec<Tally>,
    pub companies: Vec<Tally>,
    pub services: Vec<Tally>,
    /// The entity table's company for a domain or a service, and a company's category.
    pub company: Option<String>,
    pub category: Option<&'static str>,
    /// A company's or service's domains in the entity table; a device's own addresses.
    pub listed: Vec<String>,
}

/// A subject tracker knows, or one it has never seen.
#[derive(Debug)]
pub enum Found {
    Detail(Box<Detail>),
    Unknown,
}

/// The period and how its timeline is cut.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub since_ms: i64,
    pub until_ms: i64,
    pub span: Span,
}

/// Domain names are stored lower case without a trailing dot.
fn canonical(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `col` is the name `:n` or a name under it.
fn under(col: &str) -> String {
    format!("({col} = :n OR substr({col}, -length(:n) - 1) = '.' || :n)")
}

/// The subject as SQL conditions on flows and on the DNS log, and their one parameter.
struct Filter {
    flows: String,
    /// `None`: the DNS log is matched in Rust, by the entity table.
    dns: Option<String>,
    param: String,
}

pub fn detail(store: &Store, entities: &EntityTable, subject: &Subject, w: Window) -> Result<Found> {
    let devices = store.devices()?;
    let mut d = Detail {
        title: String::new(),
        totals: Totals::default(),
        queries: 0,
        timeline: empty_buckets(w.since_ms, w.until_ms, w.span),
        names: Vec::new(),
        addresses: Vec::new(),
        devices: Vec::new(),
        companies: Vec::new(),
        services: Vec::new(),
        company: None,
        category: None,
        listed: Vec::new(),
    };
    let clients_in = "client IN (SELECT value FROM json_each(:n))";
    let (filter, listed_entity) = match subject {
        Subject::Domain(n) => {
            let n = canonical(n);
            d.title.clone_from(&n);
            d.company = entities.company_of(&n).map(|m| m.entry.name.clone());
            (Filter { flows: under("name"), dns: Some(under("qname")), param: n }, false)
        }
        Subject::Company(n) => {
            let c = entities.companies().iter().find(|c| c.name == *n);
            d.category = c.map(|c| c.category.as_str());
            d.listed = c.map(|c| c.domains.clone()).unwrap_or_default();
            d.title.clone_from(n);
            (Filter { flows: "company = :n".into(), dns: None, param: n.clone() }, c.is_some())
        }
        Subject::Service(n) => {
            let s = entities.services().iter().find(|s| s.name == *n);
            d.company = s.map(|s| s.company.clone());
            d.listed = s.map(|s| s.domains.clone()).unwrap_or_default();
            d.title.clone_from(n);
            (Filter { flows: "service = :n".into(), dns: None, param: n.clone() }, s.is_some())
        }
        Subject::Device(key) => {
            let Some(facts) = device(store, &devices, key)? else {
                return Ok(Found::Unknown);
            };
            d.title = facts.label;
            d.listed = facts.listed;
            let param = clients_json(Some(&facts.clients)).unwrap_or_default();
            (Filter { flows: clients_in.into(), dns: Some(clients_in.into()), param }, true)
        }
    };
    let is_device = matches!(subject, Subject::Device(_));
    let mut tallies = Tallies::default();
    flows(store, &filter, w, &devices, &mut d, &mut tallies)?;
    dns(store, entities, subject, &filter, w, &devices, &mut d, &mut tallies)?;
    if d.totals.connections == 0 && d.queries == 0 && !listed_entity && !seen_ever(store, &filter)? {
        return Ok(Found::Unknown);
    }
    d.names = tallies.names.finish();
    d.addresses = tallies.addresses.finish();
    d.companies = tallies.companies.finish();
    d.services = tallies.services.finish();
    if !is_device {
        d.devices = tallies.devices.finish();
    }
    Ok(Found::Detail(Box::new(d)))
}

/// What a device page names: the device's label, its client addresses with flows, and its own
/// addresses as shown.
struct DeviceFacts {
    label: String,
    clients: Vec<String>,
    listed: Vec<String>,
}

/// The device `key` stands for; `None` for a key, name or address no device and no flow has.
fn device(store: &Store, devices: &DeviceList, key: &str) -> Result<Option<DeviceFacts>> {
    let known = devices.0.iter().find(|d| d.public_key == key || d.name.as_deref() == Some(key));
    if known.is_none() && key.parse::<std::net::IpAddr>().is_err() {
        return Ok(None);
    }
    let filter = store.client_filter(key)?;
    let listed = match known {
        Some(d) => d.allowed_ips.iter().map(ToString::to_string).collect(),
        None if filter.addresses.is_empty() => return Ok(None),
        None => filter.addresses.clone(),
    };
    Ok(Some(DeviceFacts { label: filter.label, clients: filter.addresses, listed }))
}

/// Lines being added up, by key.
#[derive(Default)]
struct Lines(HashMap<String, Tally>);

impl Lines {
    fn add(&mut self, name: &str, key: &str, connections: u64, bytes: u64, queries: u64) {
        let t = self.0.entry(key.to_owned()).or_insert_with(|| Tally {
            name: name.to_owned(),
            key: key.to_owned(),
            ..Tally::default()
        });
        t.connections += connections;
        t.bytes += bytes;
        t.queries += queries;
    }

    /// The [`LINES`] most used: by connections, then queries, then bytes, then name.
    fn finish(self) -> Vec<Tally> {
        let mut out: Vec<Tally> = self.0.into_values().collect();
        out.sort_by(|a, b| {
            (b.connections, b.queries, b.bytes).cmp(&(a.connections, a.queries, a.bytes)).then(a.name.cmp(&b.name))
        });
        out.truncate(LINES);
        out
    }
}

#[derive(Default)]
struct Tallies {
    names: Lines,
    addresses: Lines,
    devices: Lines,
    companies: Lines,
    services: Lines,
}

/// The device line of a client address: the peer holding it, else the address.
fn device_of(devices: &DeviceList, client: &str) -> (String, String) {
    match client.parse().ok().and_then(|ip| devices.of(ip)) {
        Some(d) => (d.label(), d.public_key.clone()),
        None => (client.to_owned(), client.to_owned()),
    }
}

/// The subject's connections that started in the window, one pass.
fn flows(store: &Store, f: &Filter, w: Window, devices: &DeviceList, d: &mut Detail, t: &mut Tallies) -> Result<()> {
    let sql = format!(
        "SELECT first_seen, client, remote, name, company, service, bytes_up + bytes_down FROM flows
         WHERE source = {LIVE_SOURCE} AND first_seen >= :since AND {}",
        f.flows
    );
    let mut stmt = store.conn().prepare_cached(&sql)?;
    let params: [(&str, &dyn ToSql); 2] = [(":since", &w.since_ms), (":n", &f.param)];
    let mut rows = stmt.query(params.as_slice())?;
    let first = d.timeline.first().map_or(w.since_ms, |b| b.start_ms);
    let step = w.span.ms();
    while let Some(r) = rows.next().context("reading flows")? {
        let (ts, client, remote): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let (name, company, service): (Option<String>, Option<String>, Option<String>) =
            (r.get(3)?, r.get(4)?, r.get(5)?);
        let bytes = r.get::<_, i64>(6)?.max(0) as u64;
        d.totals.connections += 1;
        d.totals.bytes += bytes;
        // Flows that started after the window's end (written while reading) have no column.
        if let Some(b) = usize::try_from((ts - first).div_euclid(step)).ok().and_then(|i| d.timeline.get_mut(i)) {
            b.connections += 1;
            b.bytes += bytes;
        }
        if let Some(n) = &name {
            t.names.add(n, n, 1, bytes, 0);
        }
        t.addresses.add(&remote, &remote, 1, bytes, 0);
        let (label, key) = device_of(devices, &client);
        t.devices.add(&label, &key, 1, bytes, 0);
        if let Some(c) = &company {
            t.companies.add(c, c, 1, bytes, 0);
        }
        if let Some(s) = &service {
            t.services.add(s, s, 1, bytes, 0);
        }
    }
    Ok(())
}

/// The subject's DNS queries in the window: per name and per device.
#[expect(clippy::too_many_arguments, reason = "one pass filling the page's parts; a struct would only rename them")]
fn dns(
    store: &Store,
    entities: &EntityTable,
    subject: &Subject,
    f: &Filter,
    w: Window,
    devices: &DeviceList,
    d: &mut Detail,
    t: &mut Tallies,
) -> Result<()> {
    let cond = f.dns.as_deref().unwrap_or("1");
    let sql = format!(
        "SELECT qname, client, count(*) FROM dns_queries
         WHERE source = {LIVE_SOURCE} AND ts >= :since AND {cond} GROUP BY qname, client"
    );
    let mut stmt = store.conn().prepare_cached(&sql)?;
    let mut params: Vec<(&str, &dyn ToSql)> = vec![(":since", &w.since_ms)];
    if f.dns.is_some() {
        params.push((":n", &f.param));
    }
    let mut rows = stmt.query(params.as_slice())?;
    while let Some(r) = rows.next().context("reading the DNS log")? {
        let (qname, client, n): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let ours = match subject {
            Subject::Company(c) => entities.company_of(&qname).is_some_and(|m| m.entry.name == *c),
            Subject::Service(s) => entities.service_of(&qname).is_some_and(|m| m.entry.name == *s),
            Subject::Domain(_) | Subject::Device(_) => true,
        };
        if !ours {
            continue;
        }
        let n = n.max(0) as u64;
        d.queries += n;
        t.names.add(&qname, &qname, 0, 0, n);
        let (label, key) = device_of(devices, &client);
        t.devices.add(&label, &key, 0, 0, n);
    }
    Ok(())
}

/// Whether any stored flow (or, for a domain or device, DNS query) ever matched: a subject seen
/// before the period is known, with nothing in it. The raw rows' retention bounds the scan.
fn seen_ever(store: &Store, f: &Filter) -> Result<bool> {
    let mut sql = format!("SELECT EXISTS (SELECT 1 FROM flows WHERE source = {LIVE_SOURCE} AND {})", f.flows);
    if let Some(dns) = &f.dns {
        sql.push_str(&format!(" OR EXISTS (SELECT 1 FROM dns_queries WHERE source = {LIVE_SOURCE} AND {dns})"));
    }
    let mut stmt = store.conn().prepare_cached(&sql)?;
    Ok(stmt.query_row(params_from_iter([&f.param]), |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::protocol::AppProtocol,
        store::{
            dns::tests::record,
            rollup::HOUR_MS,
            tests::{labelled_flow as flow, temp_db},
        },
    };

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS;

    fn found(s: &Store, subject: Subject, w: Window) -> Option<Detail> {
        match detail(s, &EntityTable::builtin(), &subject, w).unwrap() {
            Found::Detail(d) => Some(*d),
            Found::Unknown => None,
        }
    }

    #[test]
    fn a_domain_a_company_a_service_and_a_device_count_exactly_their_own() {
        let mut s = Store::open(&temp_db("detail")).unwrap();
        let (phone, tablet) = ("10.77.0.2", "10.77.0.3");
        let flows = [
            flow(1, phone, T0 - 1, Some("www.apple.com"), AppProtocol::Tls, 7), // before the window
            flow(2, phone, T0, Some("www.apple.com"), AppProtocol::Tls, 1_000),
            flow(3, tablet, T0 + HOUR_MS, Some("apple.com"), AppProtocol::Tls, 2_000),
            flow(4, phone, T0 + HOUR_MS + 5, Some("www.google.com"), AppProtocol::Tls, 400),
            flow(5, phone, T0 + 2 * HOUR_MS, Some("graph.facebook.com"), AppProtocol::Tls, 50),
            flow(6, phone, T0 + 2 * HOUR_MS, Some("notapple.com"), AppProtocol::Http, 9),
        ];
        s.upsert_flows("boot", &flows).unwrap();
        s.insert_dns(&[
            record(T0 + 1, phone, "www.apple.com", Vec::new()),
            record(T0 + 2, phone, "www.apple.com", Vec::new()),
            record(T0 + 3, tablet, "apple.com", Vec::new()),
            record(T0 + 4, phone, "graph.facebook.com", Vec::new()),
        ])
        .unwrap();
        let w = Window { since_ms: T0, until_ms: T0 + 3 * HOUR_MS - 1, span: Span::Hour };

        let apple = found(&s, Subject::Domain("Apple.com.".into()), w).unwrap();
        assert_eq!(apple.title, "apple.com");
        assert_eq!((apple.totals.connections, apple.totals.bytes, apple.queries), (2, 1_100 + 2_100, 3));
        assert_eq!(apple.timeline.iter().map(|b| b.connections).collect::<Vec<_>>(), [1, 1, 0]);
        let names: Vec<(&str, u64, u64)> =
            apple.names.iter().map(|t| (t.name.as_str(), t.connections, t.queries)).collect();
        assert_eq!(names, [("www.apple.com", 1, 2), ("apple.com", 1, 1)], "notapple.com is not under it");
        let devices: Vec<(&str, u64, u64)> =
            apple.devices.iter().map(|t| (t.name.as_str(), t.connections, t.queries)).collect();
        assert_eq!(devices, [("10.77.0.2", 1, 2), ("10.77.0.3", 1, 1)]);
        assert_eq!(apple.addresses[0].name, "203.0.113.10");
        assert_eq!(apple.company.as_deref(), Some("Apple"));

        let company = found(&s, Subject::Company("Apple".into()), w).unwrap();
        assert_eq!((company.totals.connections, company.queries), (2, 3));
        assert_eq!(company.category, Some("platform"));
        assert!(company.listed.iter().any(|d| d == "apple.com"), "{:?}", company.listed);

        let facebook = found(&s, Subject::Service("Facebook".into()), w).unwrap();
        assert_eq!((facebook.totals.connections, facebook.totals.bytes, facebook.queries), (1, 150, 1));
        assert_eq!(facebook.company.as_deref(), Some("Meta"));

        let device = found(&s, Subject::Device(phone.into()), w).unwrap();
        assert_eq!((device.totals.connections, device.queries), (4, 3));
        let companies: Vec<(&str, u64)> = device.companies.iter().map(|t| (t.name.as_str(), t.connections)).collect();
        assert_eq!(companies, [("Apple", 1), ("Google", 1), ("Meta", 1)]);
        assert!(device.devices.is_empty(), "a device page lists no devices");

        // Known before the window: a page of zeros. Never seen: unknown.
        let later = Window { since_ms: T0 + 10 * HOUR_MS, until_ms: T0 + 11 * HOUR_MS, ..w };
        let quiet = found(&s, Subject::Domain("www.google.com".into()), later).unwrap();
        assert_eq!((quiet.totals.connections, quiet.timeline.len()), (0, 2));
        assert!(found(&s, Subject::Domain("example.org".into()), w).is_none());
        assert!(found(&s, Subject::Domain("pple.com".into()), w).is_none(), "a suffix that is no label");
        assert!(found(&s, Subject::Company("Nobody Inc".into()), w).is_none());
        assert!(found(&s, Subject::Company("Netflix".into()), w).is_some(), "in the entity table");
        assert!(found(&s, Subject::Device("10.77.0.99".into()), w).is_none());
        assert!(found(&s, Subject::Device("not a device".into()), w).is_none());
    }
}
