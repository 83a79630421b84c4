//! `tracker block-ip --dry-run`: what an address rule would cover and would have stopped, read
//! from the database alone (no root, no pins, no lock: nothing is written), as a summary with
//! warnings for people or the whole preview as JSON.

use std::io::Write;

use anyhow::Result;
use ipnet::IpNet;

use super::until;
use crate::{
    cli::{Global, output},
    query::preview::{self, AddressPreview, SeenAddress, ServedName},
    store::Store,
    text::escape_controls,
    web::page::human_bytes,
};

/// Covered addresses the table shows, most connections first (JSON has them all).
const ADDRESSES_SHOWN: usize = 10;
/// Names shown per address.
const NAMES_SHOWN: usize = 5;

pub(super) fn block_ip(global: &Global, net: IpNet, duration: Option<i64>, format: output::Format) -> Result<()> {
    let store = Store::open_reader(&global.db)?;
    let devices = store.devices()?;
    let table = global.entity_table()?;
    let p = preview::would_stop_address(&store, &devices, &table, net, preview::since(crate::timefmt::now_ms()))?;
    let out = &mut std::io::stdout().lock();
    match format {
        output::Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &p)?;
            writeln!(out)?;
            Ok(())
        }
        output::Format::Csv => {
            output::render(out, format, &["device", "connections", "packets", "bytes", "queries"], &p.devices)
        }
        output::Format::Table => summary(out, &p, duration),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The preview for people: what it covers, warnings first, then what it would have stopped
/// and whose names its addresses served.
fn summary(out: &mut dyn Write, p: &AddressPreview, duration: Option<i64>) -> Result<()> {
    let size = match p.addresses {
        Some(n) => plural(n, "address", "addresses"),
        None => format!("2^{} addresses", p.host_bits),
    };
    let ends = duration.map(|d| format!(", ending {}", until(Some(crate::timefmt::now_ms() + d)))).unwrap_or_default();
    writeln!(out, "dry run, nothing changed: would block {} ({size}) for every device{ends}", p.rule)?;
    if !p.blocked_by.is_empty() {
        writeln!(out, "already blocked by the rule {} (see `tracker blocks`)", p.blocked_by.join(", "))?;
    }
    if let Some(why) = &p.needs_force {
        writeln!(out, "warning: {why}; block-ip refuses it without --force")?;
    }
    if !p.vpn_subnets.is_empty() || !p.own_devices.is_empty() {
        let own = if p.own_devices.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = p.own_devices.iter().map(|d| escape_controls(d).into_owned()).collect();
            format!(" and the tunnel addresses of {}", names.join(", "))
        };
        let subnets = if p.vpn_subnets.is_empty() {
            "it covers".to_owned()
        } else {
            format!(
                "it overlaps the VPN's own subnet {}, covering the VPN host's own address",
                p.vpn_subnets.join(", ")
            )
        };
        writeln!(
            out,
            "warning: {subnets}{own}: the devices would lose what they reach there (the VPN host's DNS resolver \
             may be one: every name would stop resolving)"
        )?;
    }
    writeln!(
        out,
        "in the last {} days it would have stopped {} ({} packets, {}) and {} to a resolver at these addresses{}",
        preview::DAYS,
        plural(p.connections, "connection", "connections"),
        p.packets,
        human_bytes(p.bytes),
        plural(p.queries, "DNS query", "DNS queries"),
        if p.devices.is_empty() { "" } else { ":" }
    )?;
    for d in &p.devices {
        writeln!(
            out,
            "  {}: {}, {} packets, {}, {}",
            escape_controls(&d.device),
            plural(d.connections, "connection", "connections"),
            d.packets,
            human_bytes(d.bytes),
            plural(d.queries, "DNS query", "DNS queries"),
        )?;
    }
    if p.seen.is_empty() {
        writeln!(out, "no connection or DNS answer of the last {} days used these addresses", preview::DAYS)?;
        return Ok(());
    }
    writeln!(out, "names these addresses served (connections, and DNS answers that gave them):")?;
    for s in p.seen.iter().take(ADDRESSES_SHOWN) {
        served(out, s)?;
    }
    if p.seen.len() > ADDRESSES_SHOWN {
        writeln!(out, "  ... and {} more addresses (`--format json` lists them all)", p.seen.len() - ADDRESSES_SHOWN)?;
    }
    let single = p.addresses == Some(1);
    for s in p.seen.iter().filter(|s| s.owners.len() > 1) {
        shared_warning(out, s, single)?;
    }
    Ok(())
}

/// One covered address and the names it served.
fn served(out: &mut dyn Write, s: &SeenAddress) -> Result<()> {
    let cdn =
        s.served_by.as_deref().map(|c| format!(" ({}'s, serving others)", escape_controls(c))).unwrap_or_default();
    let mut names: Vec<String> = s
        .names
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| {
            let mut counts = Vec::new();
            if n.connections > 0 {
                counts.push(plural(n.connections, "connection", "connections"));
            }
            if n.answers > 0 {
                counts.push(plural(n.answers, "answer", "answers"));
            }
            format!("{} ({}): {}", escape_controls(&n.name), escape_controls(&n.owner), counts.join(", "))
        })
        .collect();
    if s.names.len() > NAMES_SHOWN {
        names.push(format!("and {} more names", s.names.len() - NAMES_SHOWN));
    }
    let unnamed = s.connections - s.names.iter().map(|n| n.connections).sum::<u64>();
    if unnamed > 0 {
        names.push(format!("{} with no name", plural(unnamed, "connection", "connections")));
    }
    writeln!(out, "  {}{cdn}: {}", s.address, names.join("; "))?;
    Ok(())
}

/// The warning for an address whose names belong to several owners: blocking it blocks them
/// all, and a name rule would not.
fn shared_warning(out: &mut dyn Write, s: &SeenAddress, single: bool) -> Result<()> {
    let Some(first) = s.owners.first() else { return Ok(()) };
    let others: Vec<String> = s
        .names
        .iter()
        .filter(|n| n.owner != *first)
        .take(NAMES_SHOWN)
        .map(|n| format!("{} ({})", escape_controls(&n.name), escape_controls(&n.owner)))
        .collect();
    let by_name = match s.names.iter().find(|n| n.owner == *first) {
        Some(ServedName { company: Some(c), .. }) => format!("tracker block-company {}", shell_word(c)),
        _ => format!("tracker block-domain {}", shell_word(first)),
    };
    let what = if single { "this address".to_owned() } else { s.address.to_string() };
    writeln!(
        out,
        "warning: {what} also served {}: blocking it blocks those too. One address serving several sites is a \
         CDN's or a cloud's; to block only {}, block it by name: `{}`",
        others.join(", "),
        escape_controls(first),
        escape_controls(&by_name),
    )?;
    Ok(())
}

/// `s` as one word for a POSIX shell, quoted when it needs to be.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
