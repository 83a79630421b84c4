//! What a block request covers, decided without changing anything: the domains (a domain, a
//! company's or service's domains in the entity table, a list's entries) and the device
//! addresses the kernel keys are made for. The block commands store what [`resolve`] returns;
//! `--dry-run` can show it instead.

use std::net::IpAddr;

use anyhow::{Result, bail};
use ipnet::IpNet;

use super::canonical_domain;
use crate::{
    analysis::entity::EntityTable,
    store::{
        blocks::RuleKind,
        devices::{Device, DeviceList},
    },
    text::quoted,
};

/// What the user asked to block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A domain and every name under it; `wide` allows a top-level or public suffix.
    Domain { text: String, wide: bool },
    /// Every domain of a company of the entity table (its services' too).
    Company(String),
    /// Every domain of a service of the entity table.
    Service(String),
    /// A list's name and its entries (already read: [`super::blocklist`]).
    List { name: String, domains: Vec<String> },
    /// Encrypted DNS: the shipped DoH names ([`super::bypass`]), and port 853 besides.
    DnsBypass,
}

/// The device a rule holds for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRef {
    /// What `block_rules.client` stores: the device's public key, or an address given alone.
    pub stored: String,
    /// Its name, else its address: for messages and `tracker blocks`.
    pub label: String,
    /// The addresses it sends from, one kernel key each.
    pub addresses: Vec<IpAddr>,
}

/// What a request covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage {
    pub kind: RuleKind,
    /// The rule's canonical text: the domain, the entity's name as the table spells it, the
    /// list's name.
    pub rule: String,
    /// Sorted, each once.
    pub domains: Vec<String>,
    /// `None`: every device.
    pub device: Option<DeviceRef>,
}

/// Turns a request into what it covers, reading only the entity table and the devices.
pub fn resolve(table: &EntityTable, devices: &DeviceList, target: &Target, client: Option<&str>) -> Result<Coverage> {
    let (kind, rule, mut domains) = match target {
        Target::Domain { text, wide } => {
            let d = canonical_domain(text, *wide).map_err(|e| {
                let hint = if matches!(e, super::BadDomain::TooWide) { " (--force blocks it anyway)" } else { "" };
                anyhow::anyhow!("{} cannot be blocked: {e}{hint}", quoted(text))
            })?;
            (RuleKind::Domain, d.clone(), vec![d])
        }
        Target::Company(name) => {
            let c = find(table.companies().iter().map(|c| c.name.as_str()), name, "company", "tracker companies")?;
            let company = table.companies().iter().find(|x| x.name == c).expect("found above");
            let mut domains = company.domains.clone();
            for s in table.services().iter().filter(|s| s.company == c) {
                domains.extend(s.domains.iter().cloned());
            }
            (RuleKind::Company, c.to_owned(), domains)
        }
        Target::Service(name) => {
            let s = find(table.services().iter().map(|s| s.name.as_str()), name, "service", "tracker services")?;
            let service = table.services().iter().find(|x| x.name == s).expect("found above");
            (RuleKind::Service, s.to_owned(), service.domains.clone())
        }
        Target::List { name, domains } => {
            check_list_name(name)?;
            (RuleKind::List, name.clone(), domains.clone())
        }
        Target::DnsBypass => (RuleKind::DnsBypass, super::bypass::RULE.to_owned(), super::bypass::names()),
    };
    domains.sort();
    domains.dedup();
    if domains.is_empty() {
        bail!("{kind} {} has no domains to block", quoted(&rule));
    }
    let device = client.map(|c| device(devices, c)).transpose()?;
    Ok(Coverage { kind, rule, domains, device })
}

/// A list's name is what `unblock-list` and `tracker blocks` show: printable, short.
fn check_list_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        bail!("a list name is 1 to 64 bytes of printable text, not {}", quoted(name));
    }
    Ok(())
}

/// The entry called `name` (any case), or an error naming the closest ones.
fn find<'a>(names: impl Iterator<Item = &'a str> + Clone, name: &str, what: &str, listing: &str) -> Result<&'a str> {
    let want = name.trim().to_lowercase();
    if let Some(n) = names.clone().find(|n| n.to_lowercase() == want) {
        return Ok(n);
    }
    let close = closest(names, &want);
    let hint = if close.is_empty() { String::new() } else { format!("; the closest: {}", close.join(", ")) };
    bail!("no {what} is called {} in the entity table{hint} (`{listing}` lists them all)", quoted(name))
}

/// Up to three names nearest to `want` (lower case): those that contain it or it contains
/// first, then by edit distance.
fn closest<'a>(names: impl Iterator<Item = &'a str>, want: &str) -> Vec<&'a str> {
    let mut scored: Vec<(usize, &str)> = names
        .map(|n| {
            let l = n.to_lowercase();
            let contains = !want.is_empty() && (l.contains(want) || want.contains(&l));
            (if contains { 0 } else { 1 + edit_distance(&l, want) }, n)
        })
        .collect();
    scored.sort();
    let limit = want.chars().count().max(3) / 2 + 2;
    scored.into_iter().filter(|(d, _)| *d <= limit).take(3).map(|(_, n)| n).collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The device `arg` names (its name, public key, or an address its allowed IPs hold), or an
/// address no device holds.
pub fn device(devices: &DeviceList, arg: &str) -> Result<DeviceRef> {
    let found = devices.0.iter().find(|d| d.name.as_deref() == Some(arg) || d.public_key == arg);
    let found = found.or_else(|| arg.parse::<IpAddr>().ok().and_then(|ip| devices.of(ip)));
    if let Some(d) = found {
        let addresses = host_addresses(d);
        if addresses.is_empty() {
            let nets: Vec<String> = d.allowed_ips.iter().map(ToString::to_string).collect();
            bail!(
                "the device {} has no single address (its allowed IPs: {}); a rule for one device needs its \
                 addresses: give one with --client ADDRESS",
                quoted(&d.label()),
                if nets.is_empty() { "none".into() } else { nets.join(" ") }
            );
        }
        return Ok(DeviceRef { stored: d.public_key.clone(), label: d.label(), addresses });
    }
    match arg.trim().parse::<IpAddr>() {
        Ok(ip) => {
            let ip = ip.to_canonical();
            Ok(DeviceRef { stored: ip.to_string(), label: ip.to_string(), addresses: vec![ip] })
        }
        Err(_) if devices.0.is_empty() => bail!(
            "no device is called {}, and no devices are known yet (the daemon lists the WireGuard peers when it \
             runs); give the device's tunnel address instead",
            quoted(arg)
        ),
        Err(_) => {
            let known: Vec<String> = devices.0.iter().map(Device::label).collect();
            bail!(
                "no device is called {}; known devices: {} (or give a public key or a tunnel address; \
                 `tracker name-device` names one)",
                quoted(arg),
                known.join(", ")
            )
        }
    }
}

/// A device's own addresses: its allowed IPs that are single hosts (a /24 routed to a peer is
/// a network behind it, not the device).
pub fn host_addresses(d: &Device) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = d
        .allowed_ips
        .iter()
        .filter(|n| n.prefix_len() == n.max_prefix_len())
        .map(IpNet::addr)
        .map(|a| a.to_canonical())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The addresses a stored `block_rules.client` stands for now: a device's current host
/// addresses, or the address itself. Empty for a device no longer known.
pub fn stored_device_addresses(devices: &DeviceList, stored: &str) -> Vec<IpAddr> {
    if let Ok(ip) = stored.parse::<IpAddr>() {
        return vec![ip.to_canonical()];
    }
    devices.0.iter().find(|d| d.public_key == stored).map(host_addresses).unwrap_or_default()
}

/// How `tracker blocks` names a stored device: its name, else its first address, else the key.
pub fn stored_device_label(devices: &DeviceList, stored: &str) -> String {
    devices.0.iter().find(|d| d.public_key == stored).map_or_else(|| stored.to_owned(), Device::label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn devices() -> DeviceList {
        let dev = |key: &str, name: Option<&str>, ips: &[&str]| Device {
            public_key: key.into(),
            name: name.map(Into::into),
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            first_seen_ms: 0,
            last_seen_ms: 0,
        };
        DeviceList(vec![
            dev(PHONE, Some("phone"), &["10.77.0.2/32", "fd77::2/128"]),
            dev("router-key", None, &["192.168.5.0/24"]),
        ])
    }

    fn table() -> EntityTable {
        EntityTable::builtin()
    }

    #[test]
    fn a_company_covers_its_domains_and_its_services_domains() {
        let c = resolve(&table(), &devices(), &Target::Company("braze".into()), None).unwrap();
        assert_eq!((c.kind, c.rule.as_str()), (RuleKind::Company, "Braze"));
        assert_eq!(c.domains, ["appboy.com", "braze.com", "braze.eu"]);
        let b = resolve(&table(), &devices(), &Target::Company("ByteDance".into()), None).unwrap();
        for d in ["tiktok.com", "tiktokv.com", "musical.ly"] {
            assert!(b.domains.contains(&d.to_owned()), "{d}: {:?}", b.domains);
        }
        let s = resolve(&table(), &devices(), &Target::Service("TIKTOK".into()), None).unwrap();
        assert_eq!((s.kind, s.rule.as_str()), (RuleKind::Service, "TikTok"));
        assert_eq!(
            s.domains,
            ["byteoversea.com", "ibytedtos.com", "musical.ly", "tiktok.com", "tiktokcdn.com", "tiktokv.com"]
        );
    }

    #[test]
    fn an_unknown_entity_names_the_closest() {
        let e = resolve(&table(), &devices(), &Target::Company("Braz".into()), None).unwrap_err().to_string();
        assert!(e.contains("no company is called `Braz`") && e.contains("the closest: Braze"), "{e}");
        assert!(e.contains("tracker companies"), "{e}");
        let e = resolve(&table(), &devices(), &Target::Service("tiktk".into()), None).unwrap_err().to_string();
        assert!(e.contains("the closest: TikTok"), "{e}");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn a_device_is_its_host_addresses() {
        let d = device(&devices(), "phone").unwrap();
        assert_eq!(d.stored, PHONE);
        assert_eq!(d.label, "phone");
        assert_eq!(d.addresses, ["10.77.0.2".parse::<IpAddr>().unwrap(), "fd77::2".parse().unwrap()]);
        assert_eq!(device(&devices(), "fd77::2").unwrap(), d, "by one of its addresses");
        assert_eq!(device(&devices(), PHONE).unwrap(), d, "by its key");
        let lone = device(&devices(), "10.77.0.9").unwrap();
        assert_eq!((lone.stored.as_str(), lone.addresses.len()), ("10.77.0.9", 1));
        let e = device(&devices(), "tablet").unwrap_err().to_string();
        assert!(e.contains("known devices: phone, 192.168.5.0"), "{e}");
        let e = device(&devices(), "192.168.5.7").unwrap_err().to_string();
        assert!(e.contains("no single address"), "{e}");
        assert_eq!(stored_device_addresses(&devices(), PHONE).len(), 2);
        assert_eq!(stored_device_addresses(&devices(), "gone-key"), Vec::<IpAddr>::new());
        assert_eq!(stored_device_label(&devices(), PHONE), "phone");
    }

    #[test]
    fn a_domain_request_is_checked_and_explained() {
        let d = resolve(&table(), &devices(), &Target::Domain { text: "Ads.Example.com.".into(), wide: false }, None);
        assert_eq!(d.unwrap().domains, ["ads.example.com"]);
        let e = resolve(&table(), &devices(), &Target::Domain { text: "com".into(), wide: false }, None).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let e = resolve(&table(), &devices(), &Target::Domain { text: "a..b".into(), wide: false }, None).unwrap_err();
        assert!(e.to_string().contains("empty label"), "{e}");
    }
}
