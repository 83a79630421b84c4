//! The dns-bypass rule ("walking around the block"): its names, the public resolvers'
//! DNS-over-HTTPS hosts and Firefox's canary domain, shipped in `data/dns-bypass.txt` and
//! stored as any name rule's domains; and its ports, port 853 over TCP (DoT) and UDP (DoQ) in
//! the kernel's `PORT_BLOCKS` map, kept equal to the active rules here.
//!
//! Off by default: a device set to use encrypted DNS on its own (a phone's Private DNS set to
//! a hostname) stops resolving under the rule, where apps that merely prefer it fall back to
//! the plain DNS the VPN host sees and blocks by name.

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, params};
use tracker_common::{IPPROTO_TCP, IPPROTO_UDP, PortKey, account::ENCRYPTED_DNS_PORT};

use super::{blocklist, canonical_domain, cover::stored_device_addresses};
use crate::{
    blocking::{KernelPorts, port_key},
    store::{
        blocks::{RuleKind, active_rules},
        devices::DeviceList,
    },
    timefmt::KernelClock,
};

/// The rule's text (`block_rules.rule`): one rule per device, or one for every device.
pub const RULE: &str = "DoT, DoQ, DoH";

/// The shipped list of names, as the file has it.
const NAMES_FILE: &str = include_str!("../../data/dns-bypass.txt");

/// What the rule stops by port: DNS over TLS (TCP) and DNS over QUIC (UDP), both on 853.
pub const PORTS: [(u8, u16); 2] = [(IPPROTO_TCP, ENCRYPTED_DNS_PORT), (IPPROTO_UDP, ENCRYPTED_DNS_PORT)];

/// The names the rule refuses, canonical, sorted, each once.
pub fn names() -> Vec<String> {
    let parsed = blocklist::parse(NAMES_FILE.as_bytes());
    let mut out: Vec<String> = parsed.domains.iter().filter_map(|d| canonical_domain(d, false).ok()).collect();
    out.sort();
    out.dedup();
    out
}

/// The rule a port entry should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Want {
    rule_id: u32,
    /// On the kernel's clock; 0 = never.
    expires_ns: u64,
}

/// Every port entry the active dns-bypass rules make at `clock`'s time. Keys of two rules (a
/// device named by its key and by its address) go to the older rule.
fn wanted(conn: &Connection, devices: &DeviceList, clock: KernelClock, now_ms: i64) -> Result<HashMap<PortKey, Want>> {
    let mut out: HashMap<PortKey, Want> = HashMap::new();
    for rule in active_rules(conn, Some(RuleKind::DnsBypass), now_ms)? {
        let Some(expires_ns) = clock.expiry_ns(rule.expires) else { continue };
        let clients: Vec<Option<std::net::IpAddr>> = match &rule.client {
            None => vec![None],
            Some(c) => stored_device_addresses(devices, c).into_iter().map(Some).collect(),
        };
        for client in clients {
            for (protocol, port) in PORTS {
                out.entry(port_key(client, protocol, port)).or_insert(Want { rule_id: rule.id, expires_ns });
            }
        }
    }
    Ok(out)
}

/// Ends differing by more than this are rewritten (as for the other rule maps).
const EXPIRY_SLACK_NS: u64 = 1_000_000_000;

/// Makes `PORT_BLOCKS` hold exactly the entries of the active dns-bypass rules, inside the
/// caller's transaction on `conn`: an entry that holds the right rule keeps its count; the
/// count of one removed or rewritten goes into its rule's history (`dropped_before`). Returns
/// the entries afterwards.
pub fn reconcile(conn: &Connection, ports: &mut KernelPorts, devices: &DeviceList, now_ms: i64) -> Result<usize> {
    let wanted = wanted(conn, devices, KernelClock::now(), now_ms)?;
    if wanted.len() > tracker_common::defaults::PORT_ENTRIES as usize {
        bail!(
            "the dns-bypass rules would need {} kernel entries, more than the {} the port map holds; nothing was \
             changed",
            wanted.len(),
            tracker_common::defaults::PORT_ENTRIES
        );
    }
    let mut gone: HashMap<u32, u64> = HashMap::new();
    let present = ports.entries()?;
    let mut keep = std::collections::HashSet::new();
    for (key, v) in &present {
        let same = wanted.get(key).is_some_and(|w| {
            w.rule_id == v.rule_id
                && w.expires_ns.abs_diff(v.expires_ns) <= EXPIRY_SLACK_NS
                && (w.expires_ns == 0) == (v.expires_ns == 0)
        });
        if same {
            keep.insert(*key);
        } else {
            *gone.entry(v.rule_id).or_default() += v.packets_dropped;
            ports.remove(key)?;
        }
    }
    for (key, w) in &wanted {
        if !keep.contains(key) {
            ports.insert(key, w.rule_id, w.expires_ns)?;
        }
    }
    let mut fold = conn.prepare_cached(
        "UPDATE block_rules SET dropped_before = dropped_before + ?2, dropped_kernel = max(dropped_kernel - ?2, 0)
         WHERE id = ?1",
    )?;
    for (id, n) in gone.into_iter().filter(|(_, n)| *n > 0) {
        fold.execute(params![id, n as i64]).context("keeping the drops of a port entry that went")?;
    }
    Ok(wanted.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_is_every_line_of_its_file_and_clean() {
        let parsed = blocklist::parse(NAMES_FILE.as_bytes());
        assert!(parsed.malformed.is_empty(), "{:?}", parsed.malformed);
        assert_eq!(parsed.duplicates, 0);
        let names = names();
        assert_eq!(names.len(), parsed.domains.len(), "every name is one a rule can hold");
        for n in ["use-application-dns.net", "dns.google", "cloudflare-dns.com", "dns.quad9.net", "doh.pub"] {
            assert!(names.contains(&n.to_owned()), "{n}");
        }
        // A name under another listed name adds nothing: the parent covers it.
        for n in &names {
            let covered = names.iter().any(|p| p != n && n.ends_with(&format!(".{p}")));
            assert!(!covered, "{n} is covered by a parent in the list");
        }
    }
}
