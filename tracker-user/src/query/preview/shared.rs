//! Shared addresses in a name block's `--dry-run`: the addresses the stored DNS answers of the
//! window gave for the names a block covers, and those of them the same device was also given
//! for a name that stays allowed (one CDN address behind many sites), which the daemon leaves
//! open so the allowed name keeps working (`daemon::learned`).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::covered;
use crate::store::{Store, blocks::ACTIVE, devices::DeviceList};

/// How many allowed names are kept per shared address, for the example.
const NAMES_KEPT: usize = 5;

/// An address a covered name was answered with that also serves an allowed name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SharedAddress {
    pub address: IpAddr,
    /// The devices given it for both a covered and an allowed name, sorted.
    pub devices: Vec<String>,
    /// The allowed names it was also given for, sorted (the first few).
    pub also_serves: Vec<String>,
}

/// One device's addresses of the covered names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceAddresses {
    pub device: String,
    /// Distinct addresses the device was given for covered names.
    pub answered: u64,
    /// Of those, the ones it was also given for an allowed name.
    pub shared: u64,
}

/// The addresses a block's names were answered with since `since_ms`, and the shared ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SharedAddresses {
    /// Distinct addresses the covered names were answered with, to any device.
    pub answered: u64,
    /// Shared for at least one device, by address.
    pub shared: Vec<SharedAddress>,
    pub devices: Vec<DeviceAddresses>,
}

/// The domains the active name rules for every device block, besides the one being tried: a
/// name one of them blocks is not an allowed name (the daemon asks the kernel's name map, which
/// holds them all). Rules for one device do not count, as for the daemon.
pub fn blocked_elsewhere(store: &Store, now_ms: i64) -> Result<HashSet<String>> {
    let mut q = store.conn().prepare(&format!(
        "SELECT DISTINCT d.domain FROM block_domains d JOIN block_rules ON block_rules.id = d.rule
         WHERE {ACTIVE} AND block_rules.client IS NULL"
    ))?;
    let rows = q.query_map([now_ms], |r| r.get(0))?;
    rows.collect::<rusqlite::Result<_>>().context("reading the domains of the active rules")
}

/// Per device (for the client addresses in `only` when given), the addresses the live source's
/// DNS answers since `since_ms` gave for names `domains` cover, and which of them the same
/// device was also given for a name neither `domains` nor `elsewhere` covers. A name counts as
/// covered when the name asked or the end of its CNAME chain is, as the daemon decides; the
/// addresses are those owned by either.
pub fn shared_addresses(
    store: &Store,
    devices: &DeviceList,
    domains: &[String],
    elsewhere: &HashSet<String>,
    only: Option<&[IpAddr]>,
    since_ms: i64,
) -> Result<SharedAddresses> {
    let domains: HashSet<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    let blocked = |n: &str| covered(&domains, n) || covered(elsewhere, n);
    // Per (device, address): whether a covered name was answered with it, and the allowed
    // names it was answered for.
    let mut seen: BTreeMap<(String, IpAddr), (bool, BTreeSet<String>)> = BTreeMap::new();
    let mut q = store.conn().prepare(
        "SELECT q.client, q.qname, q.cname, a.data FROM dns_queries q JOIN dns_answers a ON a.query_id = q.id
         WHERE q.source = 0 AND q.ts >= ?1 AND a.type IN ('A', 'AAAA') AND (a.name = q.qname OR a.name = q.cname)
           AND a.query_id >= ?2
         GROUP BY q.client, q.qname, q.cname, a.data",
    )?;
    let mut rows = q.query([since_ms, store.first_query_id(since_ms)?])?;
    while let Some(r) = rows.next()? {
        let (client, qname, cname, data): (String, String, Option<String>, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let (Ok(client), Ok(address)) = (client.parse::<IpAddr>(), data.parse::<IpAddr>()) else { continue };
        let client = client.to_canonical();
        if only.is_some_and(|o| !o.contains(&client)) {
            continue;
        }
        let device = devices.of(client).map_or_else(|| client.to_string(), |d| d.label());
        let entry = seen.entry((device, address.to_canonical())).or_default();
        if covered(&domains, &qname) || cname.as_deref().is_some_and(|c| covered(&domains, c)) {
            entry.0 = true;
        } else if !blocked(&qname) && !cname.as_deref().is_some_and(blocked) {
            entry.1.insert(qname);
        }
    }
    let mut answered: HashSet<IpAddr> = HashSet::new();
    let mut shared: BTreeMap<IpAddr, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut per_device: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((device, address), (_, allowed)) in seen.into_iter().filter(|(_, (hit, _))| *hit) {
        answered.insert(address);
        let counts = per_device.entry(device.clone()).or_default();
        counts.0 += 1;
        if !allowed.is_empty() {
            counts.1 += 1;
            let s = shared.entry(address).or_default();
            s.0.insert(device);
            s.1.extend(allowed);
        }
    }
    Ok(SharedAddresses {
        answered: answered.len() as u64,
        shared: shared
            .into_iter()
            .map(|(address, (devices, names))| SharedAddress {
                address,
                devices: devices.into_iter().collect(),
                also_serves: names.into_iter().take(NAMES_KEPT).collect(),
            })
            .collect(),
        devices: per_device
            .into_iter()
            .map(|(device, (answered, shared))| DeviceAddresses { device, answered, shared })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::dns::{Answer, AnswerData},
        query::experiment::tests::{query, store},
        store::{DnsRecord, blocks::NewRule, blocks::RuleKind},
    };

    fn a(name: &str, ip: &str) -> Answer {
        Answer { name: name.into(), rtype: "A".into(), ttl: 60, data: AnswerData::Addr(ip.parse().unwrap()) }
    }

    fn cname(name: &str, target: &str) -> Answer {
        Answer { name: name.into(), rtype: "CNAME".into(), ttl: 60, data: AnswerData::Cname(target.into()) }
    }

    /// `client`'s query for `qname`, `ago` ms before `now`, answered with `answers`.
    fn answered(now: i64, ago: i64, client: &str, qname: &str, answers: Vec<Answer>) -> DnsRecord {
        DnsRecord { answers, ..query(now - ago, client, qname, None) }
    }

    #[test]
    fn an_address_also_answered_for_an_allowed_name_to_the_same_device_is_shared() {
        let mut s = store("shared");
        let now = crate::timefmt::now_ms();
        let since = now - 7 * 24 * 3_600_000;
        let phone = "10.77.0.2";
        let tablet = "10.77.0.3";
        s.insert_dns(&[
            // The phone: the blocked name and an allowed one on one CDN address, and a second
            // address of the blocked name alone.
            answered(now, 1000, phone, "sdk.braze.com", vec![a("sdk.braze.com", "203.0.113.10")]),
            answered(now, 2000, "fd77::2", "www.example.org", vec![a("www.example.org", "203.0.113.10")]),
            answered(now, 3000, phone, "braze.com", vec![a("braze.com", "203.0.113.11")]),
            // The tablet: a name whose CNAME chain ends under braze.com, on the CDN address, and
            // nothing else: for it the address is not shared.
            answered(
                now,
                4000,
                tablet,
                "metrics.shop.example",
                vec![cname("metrics.shop.example", "e.braze.com"), a("e.braze.com", "203.0.113.10")],
            ),
            // The tablet was told an allowed name is at 203.0.113.11; the phone was not.
            answered(now, 5000, tablet, "news.example.net", vec![a("news.example.net", "203.0.113.11")]),
            // A name another rule for every device blocks is not an allowed name.
            answered(now, 6000, phone, "ads.example.com", vec![a("ads.example.com", "203.0.113.11")]),
            // A stray record owned by an unrelated name is not an address of the name asked.
            answered(
                now,
                7000,
                phone,
                "img.example.org",
                vec![a("img.example.org", "198.51.100.1"), a("braze.com", "203.0.113.12")],
            ),
            // Older than the window: not read.
            answered(now, 8 * 24 * 3_600_000, phone, "old.example", vec![a("old.example", "203.0.113.11")]),
        ])
        .unwrap();
        let rule = NewRule {
            kind: Some(RuleKind::Domain),
            rule: "example.com".into(),
            domains: vec!["example.com".into()],
            ..NewRule::default()
        };
        s.add_rule_then(&rule, |_, _| Ok(())).unwrap();
        let elsewhere = blocked_elsewhere(&s, now).unwrap();
        assert_eq!(elsewhere, HashSet::from(["example.com".to_owned()]));
        let devices = s.devices().unwrap();
        let domains = vec!["braze.com".to_owned()];
        let got = shared_addresses(&s, &devices, &domains, &elsewhere, None, since).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(got.answered, 2, "203.0.113.10 and .11; not the stray .12");
        assert_eq!(
            got.shared,
            vec![SharedAddress {
                address: ip("203.0.113.10"),
                devices: vec!["phone".into()],
                also_serves: vec!["www.example.org".into()],
            }],
            "the phone's two addresses are one device; .11 was not given to the tablet for a braze name"
        );
        assert_eq!(
            got.devices,
            vec![
                DeviceAddresses { device: "10.77.0.3".into(), answered: 1, shared: 0 },
                DeviceAddresses { device: "phone".into(), answered: 2, shared: 1 },
            ]
        );
        // The tablet alone: its one address is not shared.
        let only = [ip(tablet)];
        let got = shared_addresses(&s, &devices, &domains, &elsewhere, Some(&only), since).unwrap();
        assert_eq!((got.answered, got.shared.len()), (1, 0));
        // Without the other rule, ads.example.com is allowed: .11 is shared for the phone too.
        let got = shared_addresses(&s, &devices, &domains, &HashSet::new(), None, since).unwrap();
        let shared: Vec<(IpAddr, Vec<String>)> =
            got.shared.iter().map(|s| (s.address, s.also_serves.clone())).collect();
        assert_eq!(
            shared,
            vec![
                (ip("203.0.113.10"), vec!["www.example.org".into()]),
                (ip("203.0.113.11"), vec!["ads.example.com".into()]),
            ]
        );
    }
}
