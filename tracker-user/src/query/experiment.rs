//! `tracker report --block-window RULE`: what happened while a block rule was on, beside the same length of time just before it.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;

use crate::{
    analysis::entity::EntityTable,
    rules::cover::{stored_device_addresses, stored_device_label},
    store::{Store, blocks::RuleKind, devices::DeviceList, schema::LIVE_SOURCE},
    text::quoted,
    timefmt,
};

/// The rule the window is of, as `tracker blocks --expired` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleInfo {
    pub id: u32,
    pub kind: RuleKind,
    pub rule: String,
    /// The device it holds for (its name, else its address or key), or `all`.
    pub device: String,
    /// Names it covers, each with every name under it; 0 for an address rule.
    pub domains: u64,
    pub created: String,
    pub expires: Option<String>,
    pub ended: Option<String>,
    /// `unblocked` or `expired`; `None` while it runs.
    pub end_reason: Option<String>,
}

/// A stretch of time, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Span {
    #[serde(serialize_with = "as_rfc3339")]
    pub start: i64,
    #[serde(serialize_with = "as_rfc3339")]
    pub end: i64,
}

fn as_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timefmt::rfc3339(*ms))
}

impl Span {
    fn holds(&self, ms: i64) -> bool {
        (self.start..self.end).contains(&ms)
    }
}

/// The whole window's sums.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WindowTotals {
    /// DNS queries the kernel refused for this rule while it was on.
    pub queries_refused: u64,
    /// Distinct names among them.
    pub names_refused: u64,
    /// Devices with a refused query or a failed connection attempt to the rule's targets.
    pub devices_affected: u64,
    /// Queries for the rule's names (from the devices it holds for) before it, and while it
    /// was on but not refused by it (another rule refused them, or they got through).
    pub queries_before: u64,
    pub queries_not_refused: u64,
    /// Connections to the rule's names or addresses, and how many of them failed.
    pub attempts_before: u64,
    pub attempts_during: u64,
    pub failed_before: u64,
    pub failed_during: u64,
    /// Packets the rule dropped in the kernel (its whole life is the window): an address
    /// rule's, or a name rule's at the addresses it learned (its names answered anyway).
    pub packets_dropped: u64,
}

/// A name of the rule that was asked for in either half.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NameLine {
    pub name: String,
    /// Queries refused by this rule while it was on.
    pub refused: u64,
    /// Distinct devices among them.
    pub devices: u64,
    /// `refused` over the minutes from its first refusal to its last (at least one), to two
    /// decimals: how hard the apps kept trying.
    pub retries_per_min: f64,
    pub first_refused: Option<String>,
    pub last_refused: Option<String>,
    /// Queries for it in the time before (from the devices the rule holds for).
    pub queries_before: u64,
    pub company: Option<String>,
    pub service: Option<String>,
}

/// The names of one company and service together.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntityLine {
    /// `None`: no entry of the entity table knows these names.
    pub company: Option<String>,
    pub service: Option<String>,
    pub names: u64,
    pub refused: u64,
    pub queries_before: u64,
    pub devices: u64,
}

/// Connections to one of the rule's names (or, without a name, addresses).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttemptLine {
    /// The name the device used, else the remote address.
    pub target: String,
    pub flows_before: u64,
    pub flows_during: u64,
    pub failed_before: u64,
    pub failed_during: u64,
    pub devices_during: u64,
}

/// One device's traffic in both halves: everything it did, not only the rule's names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceLine {
    /// Its name, else its first address.
    pub device: String,
    pub public_key: Option<String>,
    pub addresses: Vec<String>,
    /// Whether the rule holds for it.
    pub blocked: bool,
    /// It had a query refused by the rule, or a failed connection to the rule's targets.
    pub affected: bool,
    pub flows_before: u64,
    pub flows_during: u64,
    /// Bytes both ways of the connections that started in each half.
    pub bytes_before: u64,
    pub bytes_during: u64,
    pub queries_before: u64,
    pub queries_during: u64,
    pub refused: u64,
    pub failed_during: u64,
}

/// The answer to "what broke?"; the field names are its JSON interface (README, "Experiments").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockWindow {
    pub rule: RuleInfo,
    /// The same length of time just before `during`.
    pub before: Span,
    /// From the rule's creation to its end, or to now while it runs.
    pub during: Span,
    pub running: bool,
    pub minutes: f64,
    pub totals: WindowTotals,
    /// The rule's names asked for in either half: most refused first.
    pub names: Vec<NameLine>,
    pub entities: Vec<EntityLine>,
    pub attempts: Vec<AttemptLine>,
    /// Devices with traffic in either half: affected first, then by flows during.
    pub devices: Vec<DeviceLine>,
}

/// A stored rule with what the window needs.
struct Rule {
    id: u32,
    kind: RuleKind,
    rule: String,
    client: Option<String>,
    created: i64,
    expires: Option<i64>,
    ended: Option<i64>,
    end_reason: Option<String>,
    dropped: u64,
}

/// The rule `text` names: its id, or its text as `tracker blocks` shows it (any case; an
/// address without a prefix length is its /32 or /128). Several rules of that text (ended ones,
/// one per device): the newest, with the others named in the second value for a message.
pub fn find_rule(store: &Store, text: &str) -> Result<(u32, Vec<u32>)> {
    let t = text.trim();
    if let Ok(id) = t.parse::<u32>() {
        let found: Option<u32> =
            store.conn().query_row("SELECT id FROM block_rules WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        return found
            .map(|id| (id, Vec::new()))
            .with_context(|| format!("no block rule has the id {id} (`tracker blocks --expired` lists them all)"));
    }
    let as_net =
        t.parse::<IpNet>().ok().or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from)).map(|n| n.trunc().to_string());
    let wanted = t.strip_suffix('.').unwrap_or(t).to_lowercase();
    let mut stmt = store
        .conn()
        .prepare_cached("SELECT id FROM block_rules WHERE lower(rule) = ?1 OR rule = ?2 ORDER BY ended IS NULL, id")?;
    let ids: Vec<u32> = stmt.query_map(params![wanted, as_net], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    match ids.split_last() {
        Some((newest, others)) => Ok((*newest, others.to_vec())),
        None => bail!("no block rule is {} (`tracker blocks --expired` lists them all, with their ids)", quoted(t)),
    }
}

fn load_rule(store: &Store, id: u32) -> Result<Rule> {
    store
        .conn()
        .query_row(
            "SELECT id, kind, rule, client, created, expires, ended, end_reason, dropped_before + dropped_kernel
             FROM block_rules WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(1)?,
                    Rule {
                        id: r.get(0)?,
                        kind: RuleKind::Ip,
                        rule: r.get(2)?,
                        client: r.get(3)?,
                        created: r.get(4)?,
                        expires: r.get(5)?,
                        ended: r.get(6)?,
                        end_reason: r.get(7)?,
                        dropped: r.get::<_, i64>(8)?.max(0) as u64,
                    },
                ))
            },
        )
        .optional()?
        .and_then(|(kind, rule)| Some(Rule { kind: RuleKind::parse(&kind)?, ..rule }))
        .with_context(|| format!("no block rule has the id {id}"))
}

/// What the rule stops: names (each with every name under it) or address ranges.
enum Targets {
    Names(HashSet<String>),
    Nets(Vec<IpNet>),
}

impl Targets {
    fn covers_name(&self, name: &str) -> bool {
        let Self::Names(set) = self else { return false };
        // The name, then each parent: a.b.example.com, b.example.com, example.com, com.
        let mut rest = name;
        loop {
            if set.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }

    fn covers_addr(&self, addr: &str) -> bool {
        let Self::Nets(nets) = self else { return false };
        addr.parse::<IpAddr>().is_ok_and(|ip| nets.iter().any(|n| n.contains(&ip.to_canonical())))
    }
}

/// Which device a client address is: the peer holding it (key), or the address itself.
fn device_key(devices: &DeviceList, client: &str) -> String {
    client.parse().ok().and_then(|ip| devices.of(ip)).map_or_else(|| client.to_owned(), |d| d.public_key.clone())
}

/// Per name while tallying.
#[derive(Default)]
struct NameTally {
    refused: u64,
    devices: BTreeSet<String>,
    first: Option<i64>,
    last: Option<i64>,
    before: u64,
}

#[derive(Default)]
struct DeviceTally {
    addresses: BTreeSet<String>,
    flows: [u64; 2],
    bytes: [u64; 2],
    queries: [u64; 2],
    refused: u64,
    failed_during: u64,
}

#[derive(Default)]
struct AttemptTally {
    flows: [u64; 2],
    failed: [u64; 2],
    devices: BTreeSet<String>,
}

/// Builds the window of rule `id` as of `now_ms`, over the live interface's rows.
pub fn block_window(store: &Store, entities: &EntityTable, id: u32, now_ms: i64) -> Result<BlockWindow> {
    let rule = load_rule(store, id)?;
    let devices = store.devices()?;
    // A rule past its end that no daemon marked yet ended at its end.
    let end_at = rule.ended.or(rule.expires.filter(|e| *e <= now_ms));
    let running = end_at.is_none();
    let during = Span { start: rule.created, end: end_at.unwrap_or(now_ms).max(rule.created) };
    let before = Span { start: during.start - (during.end - during.start), end: during.start };

    let targets = if rule.kind.is_name() {
        let mut stmt = store.conn().prepare_cached("SELECT domain FROM block_domains WHERE rule = ?1")?;
        Targets::Names(stmt.query_map([id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?)
    } else {
        Targets::Nets(rule.rule.parse::<IpNet>().map(|n| vec![n]).unwrap_or_default())
    };
    // The addresses the rule holds for; `None`: every device.
    let held: Option<HashSet<String>> = rule.client.as_deref().map(|c| {
        let mut set: HashSet<String> = stored_device_addresses(&devices, c).iter().map(ToString::to_string).collect();
        set.insert(c.to_owned());
        set
    });
    let holds_for = |client: &str| held.as_ref().is_none_or(|h| h.contains(client));

    let mut names: BTreeMap<String, NameTally> = BTreeMap::new();
    let mut per_device: BTreeMap<String, DeviceTally> = BTreeMap::new();
    let mut totals = WindowTotals::default();

    let mut stmt = store.conn().prepare_cached(
        "SELECT ts, client, qname, blocked_by FROM dns_queries
         WHERE source = ?1 AND ts >= ?2 AND ts < ?3",
    )?;
    let mut rows = stmt.query(params![LIVE_SOURCE, before.start, during.end])?;
    while let Some(r) = rows.next()? {
        let (ts, client, qname, blocked_by): (i64, String, String, Option<u32>) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let half = usize::from(during.holds(ts));
        let key = device_key(&devices, &client);
        let dev = per_device.entry(key.clone()).or_default();
        dev.addresses.insert(client.clone());
        dev.queries[half] += 1;
        if half == 1 && blocked_by == Some(id) {
            dev.refused += 1;
            totals.queries_refused += 1;
            let n = names.entry(qname).or_default();
            n.refused += 1;
            n.devices.insert(key);
            n.first = Some(n.first.map_or(ts, |f| f.min(ts)));
            n.last = Some(n.last.map_or(ts, |l| l.max(ts)));
        } else if holds_for(&client) && targets.covers_name(&qname) {
            if half == 0 {
                totals.queries_before += 1;
                names.entry(qname).or_default().before += 1;
            } else {
                totals.queries_not_refused += 1;
            }
        }
    }

    let mut attempts: BTreeMap<String, AttemptTally> = BTreeMap::new();
    let mut stmt = store.conn().prepare_cached(
        "SELECT first_seen, client, remote, name, cname, bytes_up + bytes_down,
                packets_down = 0 OR (protocol = 6 AND tcp_flags & 4 != 0 AND tcp_flags & 8 = 0)
         FROM flows WHERE source = ?1 AND first_seen >= ?2 AND first_seen < ?3",
    )?;
    let mut rows = stmt.query(params![LIVE_SOURCE, before.start, during.end])?;
    while let Some(r) = rows.next()? {
        let (first, client, remote, name, cname, bytes, failed): (
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            i64,
            bool,
        ) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
        let half = usize::from(during.holds(first));
        let key = device_key(&devices, &client);
        let dev = per_device.entry(key.clone()).or_default();
        dev.addresses.insert(client.clone());
        dev.flows[half] += 1;
        dev.bytes[half] += bytes.max(0) as u64;
        let to_target = holds_for(&client)
            && (name.as_deref().is_some_and(|n| targets.covers_name(n))
                || cname.as_deref().is_some_and(|n| targets.covers_name(n))
                || targets.covers_addr(&remote));
        if !to_target {
            continue;
        }
        let a = attempts.entry(name.unwrap_or(remote)).or_default();
        a.flows[half] += 1;
        a.failed[half] += u64::from(failed);
        if half == 1 {
            a.devices.insert(key);
            dev.failed_during += u64::from(failed);
        }
    }

    totals.names_refused = names.values().filter(|n| n.refused > 0).count() as u64;
    for a in attempts.values() {
        totals.attempts_before += a.flows[0];
        totals.attempts_during += a.flows[1];
        totals.failed_before += a.failed[0];
        totals.failed_during += a.failed[1];
    }
    totals.packets_dropped = rule.dropped;

    let entity_lines = entity_lines(&names, entities);
    let name_lines = name_lines(names, entities);
    let mut attempt_lines: Vec<AttemptLine> = attempts
        .into_iter()
        .map(|(target, a)| AttemptLine {
            target,
            flows_before: a.flows[0],
            flows_during: a.flows[1],
            failed_before: a.failed[0],
            failed_during: a.failed[1],
            devices_during: a.devices.len() as u64,
        })
        .collect();
    attempt_lines.sort_by(|a, b| {
        (b.failed_during, b.flows_during, b.flows_before).cmp(&(a.failed_during, a.flows_during, a.flows_before))
    });

    let mut device_lines: Vec<DeviceLine> = per_device
        .into_iter()
        .map(|(key, t)| {
            let device = devices.0.iter().find(|d| d.public_key == key);
            let addresses: Vec<String> = t.addresses.into_iter().collect();
            DeviceLine {
                device: device.map_or_else(|| key.clone(), |d| d.label()),
                public_key: device.map(|d| d.public_key.clone()),
                blocked: addresses.iter().any(|a| holds_for(a)),
                affected: t.refused > 0 || t.failed_during > 0,
                addresses,
                flows_before: t.flows[0],
                flows_during: t.flows[1],
                bytes_before: t.bytes[0],
                bytes_during: t.bytes[1],
                queries_before: t.queries[0],
                queries_during: t.queries[1],
                refused: t.refused,
                failed_during: t.failed_during,
            }
        })
        .collect();
    device_lines.sort_by(|a, b| {
        (b.affected, b.refused, b.flows_during, &a.device).cmp(&(a.affected, a.refused, a.flows_during, &b.device))
    });
    totals.devices_affected = device_lines.iter().filter(|d| d.affected).count() as u64;

    let domains = match &targets {
        Targets::Names(set) => set.len() as u64,
        Targets::Nets(_) => 0,
    };
    Ok(BlockWindow {
        rule: RuleInfo {
            id: rule.id,
            kind: rule.kind,
            device: rule.client.as_deref().map_or_else(|| "all".into(), |c| stored_device_label(&devices, c)),
            rule: rule.rule,
            domains,
            created: timefmt::rfc3339(rule.created),
            expires: rule.expires.map(timefmt::rfc3339),
            ended: end_at.map(timefmt::rfc3339),
            end_reason: match (rule.ended, end_at) {
                (Some(_), _) => rule.end_reason,
                (None, Some(_)) => Some("expired".into()),
                (None, None) => None,
            },
        },
        before,
        during,
        running,
        minutes: (during.end - during.start) as f64 / 60_000.0,
        totals,
        names: name_lines,
        entities: entity_lines,
        attempts: attempt_lines,
        devices: device_lines,
    })
}

/// The name lines, most refused first, then most asked for before, then by name.
fn name_lines(names: BTreeMap<String, NameTally>, entities: &EntityTable) -> Vec<NameLine> {
    let mut out: Vec<NameLine> = names
        .into_iter()
        .map(|(name, t)| {
            // Retries over the stretch the apps kept asking, so a burst reads as a burst.
            let minutes = match (t.first, t.last) {
                (Some(f), Some(l)) => ((l - f) as f64 / 60_000.0).max(1.0),
                _ => 1.0,
            };
            NameLine {
                company: entities.company_of(&name).map(|m| m.entry.name.clone()),
                service: entities.service_of(&name).map(|m| m.entry.name.clone()),
                retries_per_min: (t.refused as f64 / minutes * 100.0).round() / 100.0,
                first_refused: t.first.map(timefmt::rfc3339),
                last_refused: t.last.map(timefmt::rfc3339),
                refused: t.refused,
                devices: t.devices.len() as u64,
                queries_before: t.before,
                name,
            }
        })
        .collect();
    out.sort_by(|a, b| (b.refused, b.queries_before, &a.name).cmp(&(a.refused, a.queries_before, &b.name)));
    out
}

/// A company and a service, either unknown.
type EntityKey = (Option<String>, Option<String>);

/// The names summed per company and service, most refused first.
fn entity_lines(names: &BTreeMap<String, NameTally>, entities: &EntityTable) -> Vec<EntityLine> {
    // Keyed by (company, service), with the devices that asked.
    let mut acc: BTreeMap<EntityKey, (EntityLine, BTreeSet<&str>)> = BTreeMap::new();
    for (name, t) in names {
        let company = entities.company_of(name).map(|m| m.entry.name.clone());
        let service = entities.service_of(name).map(|m| m.entry.name.clone());
        let (e, devices) = acc.entry((company.clone(), service.clone())).or_insert_with(|| {
            let line = EntityLine { company, service, names: 0, refused: 0, queries_before: 0, devices: 0 };
            (line, BTreeSet::new())
        });
        e.names += 1;
        e.refused += t.refused;
        e.queries_before += t.before;
        devices.extend(t.devices.iter().map(String::as_str));
    }
    let mut out: Vec<EntityLine> =
        acc.into_values().map(|(e, devices)| EntityLine { devices: devices.len() as u64, ..e }).collect();
    out.sort_by_key(|e| std::cmp::Reverse((e.refused, e.queries_before)));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        analysis::{
            addr::AddrClass,
            dns::Transport,
            labels::Labeler,
            names::{FlowName, NameSource},
            protocol::{AppProtocol, Classification, Decided},
        },
        store::{DnsRecord, FlowRecord, blocks::NewRule, tests::temp_db},
        wireguard::Peer,
    };

    const PHONE: &str = "phone-key";
    const TABLET: &str = "tablet-key";
    const MIN: i64 = 60_000;

    pub(crate) fn query(ts: i64, client: &str, qname: &str, blocked_by: Option<u32>) -> DnsRecord {
        DnsRecord {
            ts_ms: ts,
            answered_ms: Some(ts),
            client: client.parse().unwrap(),
            client_port: 5353,
            resolver: "10.77.0.1".parse().unwrap(),
            resolver_port: 53,
            transport: Transport::Udp,
            dns_id: 1,
            qname: qname.into(),
            qtype: "A".into(),
            rcode: Some(if blocked_by.is_some() { "NXDOMAIN" } else { "NOERROR" }.into()),
            truncated: false,
            answers: Vec::new(),
            blocked_by,
        }
    }

    /// A TCP flow of `client` to `remote` named `name`; `answered` false: nothing came back.
    pub(crate) fn flow(
        n: u64,
        client: &str,
        remote: &str,
        first_ms: i64,
        name: Option<&str>,
        answered: bool,
    ) -> FlowRecord {
        let name = FlowName { name: name.map(Into::into), source: name.map(|_| NameSource::Dns), cname: None };
        let app = Classification { protocol: AppProtocol::Tls, decided: Decided::Payload };
        FlowRecord {
            kernel_first_ns: n,
            client: client.parse().unwrap(),
            remote: remote.parse().unwrap(),
            protocol: tracker_common::IPPROTO_TCP,
            client_port: 40000 + n as u16,
            remote_port: 443,
            packets_up: 3,
            bytes_up: 300,
            packets_down: if answered { 2 } else { 0 },
            bytes_down: if answered { 700 } else { 0 },
            tcp_flags: if answered { 0x1a } else { 0x02 },
            first_seen_ms: first_ms,
            last_seen_ms: first_ms + 10,
            labels: Labeler::default().label(&name, AddrClass::Documentation, app),
            name,
            remote_class: AddrClass::Documentation,
        }
    }

    /// Two devices, the phone named, in a fresh store.
    pub(crate) fn store(name: &str) -> Store {
        let mut s = Store::open(&temp_db(name)).unwrap();
        let peer = |key: &str, ips: &[&str]| Peer {
            public_key: key.into(),
            allowed_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        };
        s.write(|w| {
            w.upsert_devices(&[peer(PHONE, &["10.77.0.2/32", "fd77::2/128"]), peer(TABLET, &["10.77.0.3/32"])], 1)
        })
        .unwrap();
        s.name_device(PHONE, "phone").unwrap();
        s
    }

    /// A ten-minute block of Braze for every device, made as `block-company --for 10m` makes it;
    /// returns its id and creation time.
    fn braze(s: &mut Store) -> (u32, i64) {
        let new = NewRule {
            kind: Some(RuleKind::Company),
            rule: "Braze".into(),
            expires: Some(timefmt::now_ms() + 10 * MIN),
            domains: vec!["appboy.com".into(), "braze.com".into(), "braze.eu".into()],
            ..NewRule::default()
        };
        let id = s.add_rule_then(&new, |_, _| Ok(())).unwrap().id();
        let created = s.stored_rules().unwrap().iter().find(|r| r.id == id).unwrap().created;
        (id, created)
    }

    #[test]
    fn a_window_counts_refusals_retries_devices_and_entities_beside_the_time_before() {
        let mut s = store("experiment");
        let (id, t0) = braze(&mut s);
        let sdk = "sdk.iad-01.braze.com";
        let mut dns = Vec::new();
        // During: sdk refused 12 times over exactly 3 minutes, 8 by the phone (from both its
        // addresses: one device), 4 by the tablet.
        for i in 0..12 {
            let client = match i % 3 {
                0 => "10.77.0.3",
                1 => "fd77::2",
                _ => "10.77.0.2",
            };
            dns.push(query(t0 + MIN + i * (3 * MIN) / 11, client, sdk, Some(id)));
        }
        // sdk.appboy.com twice in 30 s: 2 a minute (a stretch shorter than a minute counts as one).
        dns.push(query(t0 + 5 * MIN, "10.77.0.2", "sdk.appboy.com", Some(id)));
        dns.push(query(t0 + 5 * MIN + 30_000, "10.77.0.2", "sdk.appboy.com", Some(id)));
        // Refused by another rule: the rule's name, not its refusal.
        dns.push(query(t0 + 6 * MIN, "10.77.0.2", "braze.eu", Some(id + 100)));
        // Other names during: counted for the devices only.
        dns.push(query(t0 + 2 * MIN, "10.77.0.2", "www.apple.com", None));
        dns.push(query(t0 + 3 * MIN, "10.77.0.2", "www.apple.com", None));
        // Before: the sdk name 5 times (the phone 3, the tablet 2), apple 3 times; and one query
        // just outside each end, left out.
        for i in 0..5 {
            dns.push(query(t0 - 9 * MIN + i * MIN, if i < 3 { "10.77.0.2" } else { "10.77.0.3" }, sdk, None));
        }
        for i in 0..3 {
            dns.push(query(t0 - 2 * MIN + i * 1000, "10.77.0.2", "www.apple.com", None));
        }
        dns.push(query(t0 - 10 * MIN - 1, "10.77.0.2", sdk, None));
        dns.push(query(t0 + 10 * MIN, "10.77.0.2", sdk, Some(id)));
        s.insert_dns(&dns).unwrap();

        s.upsert_flows(
            "boot",
            &[
                // Before: the phone 3 (the sdk answered, the sdk unanswered, apple), the tablet 2.
                flow(1, "10.77.0.2", "203.0.113.30", t0 - 8 * MIN, Some(sdk), true),
                flow(2, "10.77.0.2", "203.0.113.30", t0 - 7 * MIN, Some(sdk), false),
                flow(3, "10.77.0.2", "203.0.113.10", t0 - 6 * MIN, Some("www.apple.com"), true),
                flow(4, "10.77.0.3", "203.0.113.10", t0 - 5 * MIN, Some("www.apple.com"), true),
                flow(5, "10.77.0.3", "203.0.113.10", t0 - 4 * MIN, Some("www.apple.com"), true),
                // During: the phone reaches apple, and tries the sdk's cached address in vain.
                flow(6, "fd77::2", "2001:db8:1::10", t0 + 2 * MIN, Some("www.apple.com"), true),
                flow(7, "10.77.0.2", "203.0.113.30", t0 + 4 * MIN, Some(sdk), false),
            ],
        )
        .unwrap();

        let w = block_window(&s, &EntityTable::builtin(), id, t0 + 20 * MIN).unwrap();
        assert!(!w.running);
        assert_eq!((w.during.start, w.during.end, w.before.start), (t0, t0 + 10 * MIN, t0 - 10 * MIN));
        assert_eq!(w.minutes, 10.0);
        assert_eq!(
            (w.rule.kind, w.rule.rule.as_str(), w.rule.device.as_str(), w.rule.domains),
            (RuleKind::Company, "Braze", "all", 3)
        );
        assert_eq!(w.rule.end_reason.as_deref(), Some("expired"), "past its end, not yet marked");

        let names: Vec<(&str, u64, u64, f64, u64)> = w
            .names
            .iter()
            .map(|n| (n.name.as_str(), n.refused, n.devices, n.retries_per_min, n.queries_before))
            .collect();
        assert_eq!(names, [(sdk, 12, 2, 4.0, 5), ("sdk.appboy.com", 2, 1, 2.0, 0)]);
        assert_eq!(w.names[0].first_refused, Some(timefmt::rfc3339(t0 + MIN)));
        assert_eq!(w.names[0].last_refused, Some(timefmt::rfc3339(t0 + 4 * MIN)));
        assert_eq!((w.names[0].company.as_deref(), w.names[0].service.as_deref()), (Some("Braze"), Some("Braze")));

        let braze = EntityLine {
            company: Some("Braze".into()),
            service: Some("Braze".into()),
            names: 2,
            refused: 14,
            queries_before: 5,
            devices: 2,
        };
        assert_eq!(w.entities, [braze]);

        let t = &w.totals;
        assert_eq!((t.queries_refused, t.names_refused, t.devices_affected), (14, 2, 2));
        assert_eq!((t.queries_before, t.queries_not_refused), (5, 1));
        assert_eq!((t.attempts_before, t.failed_before, t.attempts_during, t.failed_during), (2, 1, 1, 1));
        assert_eq!(t.packets_dropped, 0);
        let attempts: Vec<(&str, u64, u64, u64, u64, u64)> = w
            .attempts
            .iter()
            .map(|a| {
                (a.target.as_str(), a.flows_before, a.failed_before, a.flows_during, a.failed_during, a.devices_during)
            })
            .collect();
        assert_eq!(attempts, [(sdk, 2, 1, 1, 1, 1)]);

        // Per device, everything it did: the phone with its two addresses as one device.
        let phone = DeviceLine {
            device: "phone".into(),
            public_key: Some(PHONE.into()),
            addresses: vec!["10.77.0.2".into(), "fd77::2".into()],
            blocked: true,
            affected: true,
            flows_before: 3,
            flows_during: 2,
            bytes_before: 1_000 + 300 + 1_000,
            bytes_during: 1_000 + 300,
            queries_before: 3 + 3,
            queries_during: 8 + 2 + 1 + 2,
            refused: 10,
            failed_during: 1,
        };
        let tablet = DeviceLine {
            device: "10.77.0.3".into(),
            public_key: Some(TABLET.into()),
            addresses: vec!["10.77.0.3".into()],
            blocked: true,
            affected: true,
            flows_before: 2,
            flows_during: 0,
            bytes_before: 2_000,
            bytes_during: 0,
            queries_before: 2,
            queries_during: 4,
            refused: 4,
            failed_during: 0,
        };
        assert_eq!(w.devices, [phone, tablet]);
    }

    #[test]
    fn a_running_block_compares_the_time_so_far_and_a_device_rule_counts_its_device_only() {
        let mut s = store("experiment-running");
        let new = NewRule {
            kind: Some(RuleKind::Domain),
            rule: "mparticle.com".into(),
            client: Some(PHONE.into()),
            expires: Some(timefmt::now_ms() + 30 * MIN),
            domains: vec!["mparticle.com".into()],
            ..NewRule::default()
        };
        let id = s.add_rule_then(&new, |_, _| Ok(())).unwrap().id();
        let t0 = s.stored_rules().unwrap()[0].created;
        s.insert_dns(&[
            query(t0 - MIN, "10.77.0.2", "api.mparticle.com", None),
            query(t0 - MIN, "10.77.0.3", "api.mparticle.com", None),
            query(t0 + MIN, "10.77.0.2", "api.mparticle.com", Some(id)),
            query(t0 + MIN, "10.77.0.3", "api.mparticle.com", None),
        ])
        .unwrap();
        let w = block_window(&s, &EntityTable::builtin(), id, t0 + 2 * MIN).unwrap();
        assert!(w.running);
        assert_eq!((w.before.start, w.during.end), (t0 - 2 * MIN, t0 + 2 * MIN), "two minutes so far, two before");
        assert_eq!((w.rule.device.as_str(), w.rule.ended.as_deref()), ("phone", None));
        // The tablet's queries are not the rule's: it holds for the phone.
        assert_eq!((w.totals.queries_refused, w.totals.queries_before, w.totals.queries_not_refused), (1, 1, 0));
        assert_eq!(w.names[0].service.as_deref(), Some("mParticle"));
        let blocked: Vec<(&str, bool, bool)> =
            w.devices.iter().map(|d| (d.device.as_str(), d.blocked, d.affected)).collect();
        assert_eq!(blocked, [("phone", true, true), ("10.77.0.3", false, false)]);
    }

    #[test]
    fn an_address_rule_counts_its_drops_and_the_flows_to_its_range() {
        let mut s = store("experiment-ip");
        let id = s.add_block(RuleKind::Ip, "203.0.113.0/24", None).unwrap().unwrap();
        s.write(|w| w.set_block_kernel_count(id, 17, None)).unwrap();
        let t0 = s.stored_rules().unwrap()[0].created;
        s.upsert_flows(
            "boot",
            &[
                flow(1, "10.77.0.2", "203.0.113.30", t0 - 30_000, None, true),
                flow(2, "10.77.0.2", "198.51.100.1", t0 - 20_000, None, true),
            ],
        )
        .unwrap();
        let w = block_window(&s, &EntityTable::builtin(), id, t0 + MIN).unwrap();
        assert_eq!((w.totals.packets_dropped, w.totals.attempts_before, w.totals.attempts_during), (17, 1, 0));
        assert_eq!(w.attempts[0].target, "203.0.113.30");
        assert!(w.names.is_empty());
        assert_eq!(w.rule.domains, 0);
    }

    #[test]
    fn a_rule_is_found_by_id_or_by_its_text_the_newest_first() {
        let mut s = store("experiment-find");
        let (id, _) = braze(&mut s);
        assert_eq!(find_rule(&s, &id.to_string()).unwrap(), (id, vec![]));
        assert_eq!(find_rule(&s, " braze ").unwrap(), (id, vec![]));
        s.end_rule_then(RuleKind::Company, "Braze", None, |_, _| Ok(())).unwrap();
        let (again, _) = braze(&mut s);
        assert_eq!(find_rule(&s, "BRAZE").unwrap(), (again, vec![id]), "the active one, the ended one named");
        let ip = s.add_block(RuleKind::Ip, "203.0.113.7/32", None).unwrap().unwrap();
        assert_eq!(find_rule(&s, "203.0.113.7").unwrap().0, ip);
        let e = find_rule(&s, "Brazil").unwrap_err().to_string();
        assert!(e.contains("no block rule is `Brazil`") && e.contains("--expired"), "{e}");
        assert!(find_rule(&s, "999").unwrap_err().to_string().contains("no block rule has the id 999"));
    }
}
