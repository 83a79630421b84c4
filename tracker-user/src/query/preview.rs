//! What a block would have stopped (`--dry-run`): over the last week of the live source, the
//! DNS queries for its names and the connections to them, per device, read without changing
//! anything; [`address`] does the same for an address rule, [`shared`] finds the addresses a
//! name rule leaves open because they also serve names it does not block.

mod address;
mod shared;

pub use address::{AddressPreview, AddressShare, SeenAddress, ServedName, would_stop_address};
pub use shared::{DeviceAddresses, SharedAddress, SharedAddresses, blocked_elsewhere, shared_addresses};

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use anyhow::Result;
use serde::Serialize;

use crate::store::{Store, devices::DeviceList};

/// How far back a dry run looks, in days.
pub const DAYS: i64 = 7;

/// The start of the window a dry run at `now_ms` reads.
pub fn since(now_ms: i64) -> i64 {
    now_ms - DAYS * 24 * 3_600_000
}

/// One device's share of what a block would have stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceShare {
    pub device: String,
    pub queries: u64,
    pub connections: u64,
}

/// What a block would have stopped since `since_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub since_ms: i64,
    /// Names asked that the block covers, with their query counts, most asked first.
    pub names: Vec<(String, u64)>,
    pub devices: Vec<DeviceShare>,
    pub queries: u64,
    pub connections: u64,
}

/// Whether `name` is one of `domains` or under one (label by label, as the kernel matches).
pub fn covered(domains: &HashSet<String>, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut rest = name.as_str();
    loop {
        if domains.contains(rest) {
            return true;
        }
        match rest.split_once('.') {
            Some((_, parent)) => rest = parent,
            None => return false,
        }
    }
}

/// Queries and connections of the live source since `since_ms` that names in `domains` (and
/// the names under them) account for, limited to `only` device addresses when given. A
/// connection counts when its name, or the end of its name's CNAME chain, is covered.
pub fn would_stop(
    store: &Store,
    devices: &DeviceList,
    domains: &[String],
    only: Option<&[IpAddr]>,
    since_ms: i64,
) -> Result<Preview> {
    let domains: HashSet<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    let conn = store.conn();
    let counts = |client: &str| -> Option<String> {
        let ip: IpAddr = client.parse().ok()?;
        if only.is_some_and(|o| !o.contains(&ip.to_canonical())) {
            return None;
        }
        Some(devices.of(ip).map_or_else(|| ip.to_string(), |d| d.label()))
    };
    let mut per_device: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut names: BTreeMap<String, u64> = BTreeMap::new();
    let mut q = conn.prepare(
        "SELECT client, qname, COUNT(*) FROM dns_queries WHERE source = 0 AND ts >= ?1 GROUP BY client, qname",
    )?;
    let mut rows = q.query([since_ms])?;
    while let Some(r) = rows.next()? {
        let (client, qname, n): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        if !covered(&domains, &qname) {
            continue;
        }
        let Some(device) = counts(&client) else { continue };
        per_device.entry(device).or_default().0 += n as u64;
        *names.entry(qname.to_ascii_lowercase()).or_default() += n as u64;
    }
    let mut f = conn.prepare(
        "SELECT client, name, cname, COUNT(*) FROM flows WHERE source = 0 AND first_seen >= ?1 AND name IS NOT NULL \
         GROUP BY client, name, cname",
    )?;
    let mut rows = f.query([since_ms])?;
    while let Some(r) = rows.next()? {
        let (client, name, cname, n): (String, String, Option<String>, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        if !covered(&domains, &name) && !cname.as_deref().is_some_and(|c| covered(&domains, c)) {
            continue;
        }
        let Some(device) = counts(&client) else { continue };
        per_device.entry(device).or_default().1 += n as u64;
    }
    let mut names: Vec<(String, u64)> = names.into_iter().collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let devices: Vec<DeviceShare> = per_device
        .into_iter()
        .map(|(device, (queries, connections))| DeviceShare { device, queries, connections })
        .collect();
    Ok(Preview {
        since_ms,
        queries: devices.iter().map(|d| d.queries).sum(),
        connections: devices.iter().map(|d| d.connections).sum(),
        names,
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::experiment::tests::{flow, query, store};

    #[test]
    fn a_block_would_have_stopped_its_names_queries_and_connections_per_device() {
        let mut s = store("preview");
        let now = crate::timefmt::now_ms();
        let since = now - 7 * 24 * 3_600_000;
        let dns = vec![
            query(now - 1000, "10.77.0.2", "sdk.iad-01.braze.com", None),
            query(now - 2000, "fd77::2", "sdk.iad-01.braze.com", None),
            query(now - 3000, "10.77.0.3", "braze.com", None),
            query(now - 4000, "10.77.0.2", "evilbraze.com", None),
            // Older than the week: not counted.
            query(since - 1000, "10.77.0.2", "braze.com", None),
        ];
        s.insert_dns(&dns).unwrap();
        let flows = vec![
            flow(1, "10.77.0.2", "203.0.113.10", now - 1000, Some("sdk.iad-01.braze.com"), true),
            flow(2, "10.77.0.3", "203.0.113.10", now - 1000, Some("braze.com"), true),
            flow(3, "10.77.0.2", "203.0.113.11", now - 1000, Some("www.apple.com"), true),
        ];
        s.upsert_flows("boot", &flows).unwrap();
        let devices = s.devices().unwrap();
        let domains = vec!["braze.com".to_string()];
        let p = would_stop(&s, &devices, &domains, None, since).unwrap();
        assert_eq!((p.queries, p.connections), (3, 2));
        assert_eq!(p.names, vec![("sdk.iad-01.braze.com".to_string(), 2), ("braze.com".to_string(), 1)]);
        let share = |d: &str| p.devices.iter().find(|x| x.device == d).map(|x| (x.queries, x.connections));
        assert_eq!(share("phone"), Some((2, 1)), "the phone's two addresses are one device");
        assert_eq!(share("10.77.0.3"), Some((1, 1)));
        // For the phone only.
        let phone: Vec<IpAddr> = vec!["10.77.0.2".parse().unwrap(), "fd77::2".parse().unwrap()];
        let p = would_stop(&s, &devices, &domains, Some(&phone), since).unwrap();
        assert_eq!((p.queries, p.connections, p.devices.len()), (2, 1, 1));
    }

    #[test]
    fn a_name_is_covered_by_itself_and_its_parents_only() {
        let d: HashSet<String> = ["braze.com".to_string(), "ads.example.org".to_string()].into();
        assert!(covered(&d, "braze.com"));
        assert!(covered(&d, "SDK.iad-01.Braze.com."));
        assert!(!covered(&d, "evilbraze.com"));
        assert!(!covered(&d, "braze.com.evil.net"));
        assert!(!covered(&d, "example.org"));
        assert!(covered(&d, "x.ads.example.org"));
    }
}
