//! What an address rule would have stopped (`block-ip --dry-run`): the connections of the
//! window to the addresses it covers and the DNS queries sent to resolvers among them, per
//! device, and the names those addresses were seen serving with their owners, so that a shared
//! address (a CDN's: many sites behind one) is seen for what it is before it is blocked.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::Result;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    analysis::{domain, entity::EntityTable},
    blocking,
    store::{Store, blocks::RuleKind, devices::DeviceList},
};

/// What an address rule would have stopped since `since_ms`, and what it covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddressPreview {
    /// The rule as `block-ip` stores it (canonical CIDR).
    pub rule: String,
    /// The rule covers 2^host_bits addresses.
    pub host_bits: u8,
    /// That count, when it fits in 64 bits (`null` for the widest IPv6 prefixes).
    pub addresses: Option<u64>,
    /// Why `block-ip` refuses it without `--force` (every address, or local ones); `null`
    /// when it does not.
    pub needs_force: Option<String>,
    /// The VPN subnets (as the daemon last watched them) it overlaps.
    pub vpn_subnets: Vec<String>,
    /// The devices whose own tunnel addresses it covers, in part or whole.
    pub own_devices: Vec<String>,
    /// Active address rules that already cover it (it, or a wider network).
    pub blocked_by: Vec<String>,
    pub since_ms: i64,
    /// Totals of [`AddressPreview::devices`].
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
    pub queries: u64,
    pub devices: Vec<AddressShare>,
    /// The addresses of the rule seen in connections or DNS answers, most connections first.
    pub seen: Vec<SeenAddress>,
}

/// One device's share of what an address rule would have stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddressShare {
    pub device: String,
    /// Connections to covered addresses, with their packets and bytes both ways.
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
    /// DNS queries sent to a resolver at a covered address.
    pub queries: u64,
}

/// One covered address as the window saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeenAddress {
    pub address: IpAddr,
    pub connections: u64,
    /// The names it served (a connection's name, or a DNS answer's question), most
    /// connections first, then most answers.
    pub names: Vec<ServedName>,
    /// The owners of those names (the entity table's company, else the registrable domain),
    /// in the same order: more than one means blocking the address blocks them all.
    pub owners: Vec<String>,
    /// A CDN or cloud company one of its names or their CNAME chains fell under: the address
    /// is that company's, serving others.
    pub served_by: Option<String>,
}

/// A name a covered address served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServedName {
    pub name: String,
    /// The company, else the site, else the name itself.
    pub owner: String,
    /// The entity table's company for the name.
    pub company: Option<String>,
    /// The name's registrable domain.
    pub site: Option<String>,
    /// Connections to the address under this name.
    pub connections: u64,
    /// DNS answers that gave the address for this name.
    pub answers: u64,
}

/// Reads what `block-ip NET` would have stopped in the live source since `since_ms`.
pub fn would_stop_address(
    store: &Store,
    devices: &DeviceList,
    table: &EntityTable,
    net: IpNet,
    since_ms: i64,
) -> Result<AddressPreview> {
    // Both read the window (by its time index); SQLite filters a single address by its text
    // (addresses are stored canonical), a network is matched here once parsed.
    let exact = (net.prefix_len() == net.max_prefix_len()).then(|| net.addr().to_string());
    let inside = |text: &str| text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()).filter(|ip| net.contains(ip));
    let label = |client: &str| match client.parse::<IpAddr>() {
        Ok(ip) => devices.of(ip).map_or_else(|| ip.to_string(), |d| d.label()),
        Err(_) => client.to_owned(),
    };
    let mut shares: BTreeMap<String, AddressShare> = BTreeMap::new();
    let mut seen: BTreeMap<IpAddr, Seen> = BTreeMap::new();

    let conn = store.conn();
    let mut f = conn.prepare(
        "SELECT client, remote, name, cname, COUNT(*), SUM(packets_up + packets_down), SUM(bytes_up + bytes_down)
         FROM flows WHERE source = 0 AND first_seen >= ?1 AND (?2 IS NULL OR remote = ?2)
         GROUP BY client, remote, name, cname",
    )?;
    let mut rows = f.query(rusqlite::params![since_ms, exact])?;
    while let Some(r) = rows.next()? {
        let remote: String = r.get(1)?;
        let Some(address) = inside(&remote) else { continue };
        let (client, name, cname): (String, Option<String>, Option<String>) = (r.get(0)?, r.get(2)?, r.get(3)?);
        let (n, packets, bytes): (i64, i64, i64) = (r.get(4)?, r.get(5)?, r.get(6)?);
        let s = share(&mut shares, label(&client));
        s.connections += n as u64;
        s.packets += packets as u64;
        s.bytes += bytes as u64;
        let at = seen.entry(address).or_default();
        at.connections += n as u64;
        if let Some(name) = name {
            at.names.entry(name).or_default().0 += n as u64;
        }
        at.cnames.extend(cname);
    }

    let mut a = conn.prepare(
        "SELECT a.data, q.qname, q.cname, COUNT(*) FROM dns_queries q JOIN dns_answers a ON a.query_id = q.id
         WHERE q.source = 0 AND q.ts >= ?1 AND a.type IN ('A', 'AAAA') AND (?2 IS NULL OR a.data = ?2)
           AND (a.name = q.qname OR a.name = q.cname) AND a.query_id >= ?3
         GROUP BY a.data, q.qname, q.cname",
    )?;
    let mut rows = a.query(rusqlite::params![since_ms, exact, store.first_query_id(since_ms)?])?;
    while let Some(r) = rows.next()? {
        let data: String = r.get(0)?;
        let Some(address) = inside(&data) else { continue };
        let (qname, cname, n): (String, Option<String>, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
        let at = seen.entry(address).or_default();
        at.names.entry(qname).or_default().1 += n as u64;
        at.cnames.extend(cname);
    }

    let mut q = conn.prepare(
        "SELECT client, resolver, COUNT(*) FROM dns_queries WHERE source = 0 AND ts >= ?1
         AND (?2 IS NULL OR resolver = ?2) GROUP BY client, resolver",
    )?;
    let mut rows = q.query(rusqlite::params![since_ms, exact])?;
    while let Some(r) = rows.next()? {
        let (client, resolver, n): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        if inside(&resolver).is_some() {
            share(&mut shares, label(&client)).queries += n as u64;
        }
    }

    let devices_list: Vec<AddressShare> = shares.into_values().collect();
    let mut seen: Vec<SeenAddress> = seen.into_iter().map(|(address, s)| s.finish(address, table)).collect();
    seen.sort_by(|a, b| b.connections.cmp(&a.connections).then_with(|| a.address.cmp(&b.address)));
    let overlaps = |a: &IpNet| a.contains(&net.network()) || net.contains(&a.network());
    let host_bits = net.max_prefix_len() - net.prefix_len();
    Ok(AddressPreview {
        rule: net.to_string(),
        host_bits,
        addresses: 1u64.checked_shl(host_bits.into()),
        needs_force: blocking::needs_force(&net),
        vpn_subnets: store.local_nets()?.iter().filter(|n| overlaps(n)).map(ToString::to_string).collect(),
        own_devices: devices.0.iter().filter(|d| d.allowed_ips.iter().any(overlaps)).map(|d| d.label()).collect(),
        blocked_by: store
            .block_rules(RuleKind::Ip)?
            .into_iter()
            .filter_map(|(_, r)| blocking::parse_rule(&r).ok())
            .filter(|r| r.contains(&net))
            .map(|r| r.to_string())
            .collect(),
        since_ms,
        connections: devices_list.iter().map(|d| d.connections).sum(),
        packets: devices_list.iter().map(|d| d.packets).sum(),
        bytes: devices_list.iter().map(|d| d.bytes).sum(),
        queries: devices_list.iter().map(|d| d.queries).sum(),
        devices: devices_list,
        seen,
    })
}

/// `device`'s share, made on first use.
fn share(shares: &mut BTreeMap<String, AddressShare>, device: String) -> &mut AddressShare {
    shares.entry(device.clone()).or_insert(AddressShare { device, connections: 0, packets: 0, bytes: 0, queries: 0 })
}

/// What the window says of one covered address, gathered before it is labelled.
#[derive(Default)]
struct Seen {
    connections: u64,
    /// Name -> (connections, answers).
    names: BTreeMap<String, (u64, u64)>,
    /// The ends of its names' CNAME chains.
    cnames: BTreeSet<String>,
}

impl Seen {
    fn finish(self, address: IpAddr, table: &EntityTable) -> SeenAddress {
        let Self { connections, names, cnames } = self;
        let mut names: Vec<ServedName> = names
            .into_iter()
            .map(|(name, (connections, answers))| {
                let company = table.company_of(&name).map(|m| m.entry.name.clone());
                let site = domain::registrable(&name);
                let owner = company.clone().or_else(|| site.clone()).unwrap_or_else(|| name.clone());
                ServedName { name, owner, company, site, connections, answers }
            })
            .collect();
        names.sort_by(|a, b| {
            (b.connections, b.answers).cmp(&(a.connections, a.answers)).then_with(|| a.name.cmp(&b.name))
        });
        let mut owners: Vec<String> = Vec::new();
        for n in &names {
            if !owners.contains(&n.owner) {
                owners.push(n.owner.clone());
            }
        }
        let served_by = cnames
            .iter()
            .map(String::as_str)
            .chain(names.iter().map(|n| n.name.as_str()))
            .filter_map(|n| table.company_of(n))
            .find(|m| m.entry.category.serves_others())
            .map(|m| m.entry.name.clone());
        SeenAddress { address, connections, names, owners, served_by }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::dns::{Answer, AnswerData},
        query::experiment::tests::{flow, query, store},
        store::DnsRecord,
    };

    fn answered(ts: i64, client: &str, qname: &str, ip: &str) -> DnsRecord {
        let a = Answer { name: qname.into(), rtype: "A".into(), ttl: 60, data: AnswerData::Addr(ip.parse().unwrap()) };
        DnsRecord { answers: vec![a], ..query(ts, client, qname, None) }
    }

    #[test]
    fn an_address_rule_would_have_stopped_its_connections_and_says_whose_names_it_served() {
        let mut s = store("preview-ip");
        let now = crate::timefmt::now_ms();
        let since = now - 7 * 24 * 3_600_000;
        s.upsert_flows(
            "boot",
            &[
                flow(1, "10.77.0.2", "203.0.113.10", now - 1000, Some("sdk.iad-01.braze.com"), true),
                flow(2, "fd77::2", "203.0.113.10", now - 2000, Some("sdk.iad-01.braze.com"), true),
                flow(3, "10.77.0.3", "203.0.113.10", now - 3000, None, false),
                flow(4, "10.77.0.3", "203.0.113.11", now - 4000, Some("www.example.org"), true),
                // Outside the rule, and older than the window.
                flow(5, "10.77.0.2", "203.0.113.12", now - 1000, Some("other.example"), true),
                flow(6, "10.77.0.2", "203.0.113.10", since - 1000, Some("old.example"), true),
            ],
        )
        .unwrap();
        s.insert_dns(&[
            answered(now - 1000, "10.77.0.2", "sdk.iad-01.braze.com", "203.0.113.10"),
            answered(now - 2000, "10.77.0.3", "cdn.example.net", "203.0.113.10"),
            answered(now - 3000, "10.77.0.3", "cdn.example.net", "203.0.113.10"),
            answered(now - 4000, "10.77.0.2", "unrelated.example", "198.51.100.7"),
            // Sent to a resolver inside the rule: it would be stopped too.
            DnsRecord {
                resolver: "203.0.113.11".parse().unwrap(),
                ..query(now - 5000, "10.77.0.2", "x.example", None)
            },
        ])
        .unwrap();
        let devices = s.devices().unwrap();
        let table = EntityTable::builtin();
        let p = would_stop_address(&s, &devices, &table, "203.0.113.10/31".parse().unwrap(), since).unwrap();
        assert_eq!((p.rule.as_str(), p.host_bits, p.addresses), ("203.0.113.10/31", 1, Some(2)));
        assert_eq!((p.connections, p.packets, p.bytes, p.queries), (4, 3 * 5 + 3, 3 * 1000 + 300, 1));
        let share = |d: &str| p.devices.iter().find(|x| x.device == d).map(|x| (x.connections, x.packets, x.queries));
        assert_eq!(share("phone"), Some((2, 10, 1)), "the phone's two addresses are one device");
        assert_eq!(share("10.77.0.3"), Some((2, 8, 0)));
        assert_eq!(p.seen.len(), 2);
        let first = &p.seen[0];
        assert_eq!((first.address.to_string().as_str(), first.connections), ("203.0.113.10", 3));
        let names: Vec<(&str, &str, u64, u64)> =
            first.names.iter().map(|n| (n.name.as_str(), n.owner.as_str(), n.connections, n.answers)).collect();
        assert_eq!(names, [("sdk.iad-01.braze.com", "Braze", 2, 1), ("cdn.example.net", "example.net", 0, 2)]);
        assert_eq!(first.owners, ["Braze", "example.net"], "two owners: a shared address");
        assert_eq!(p.seen[1].owners, ["example.org"]);
        assert!(p.needs_force.is_none() && p.own_devices.is_empty() && p.vpn_subnets.is_empty());
        assert!(p.blocked_by.is_empty());

        // A single address is filtered by its text: the same counts as a network's match.
        let one = would_stop_address(&s, &devices, &table, "203.0.113.11/32".parse().unwrap(), since).unwrap();
        assert_eq!((one.connections, one.queries, one.addresses), (1, 1, Some(1)));
        assert_eq!(one.seen[0].names[0].name, "www.example.org");
        // Already covered by a wider rule: said.
        let wider = crate::store::blocks::NewRule {
            kind: Some(RuleKind::Ip),
            rule: "203.0.113.0/24".into(),
            ..Default::default()
        };
        s.add_rule_then(&wider, |_, _| Ok(())).unwrap();
        let one = would_stop_address(&s, &devices, &table, "203.0.113.11/32".parse().unwrap(), since).unwrap();
        assert_eq!(one.blocked_by, ["203.0.113.0/24"]);

        // The devices' own network: said, with whom it covers.
        let local = would_stop_address(&s, &devices, &table, "10.77.0.0/24".parse().unwrap(), since).unwrap();
        assert!(local.needs_force.as_deref().is_some_and(|w| w.contains("local addresses (private)")), "{local:?}");
        assert_eq!(local.own_devices, ["phone", "10.77.0.3"]);
        assert_eq!(local.connections, 0);
        let wide = would_stop_address(&s, &devices, &table, "::/0".parse().unwrap(), since).unwrap();
        assert_eq!((wide.host_bits, wide.addresses), (128, None));
    }
}
