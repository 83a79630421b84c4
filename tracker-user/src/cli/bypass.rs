//! `tracker block-dns-bypass` and `unblock-dns-bypass`: the rule against encrypted DNS
//! (DoT, DoQ, DoH) that walks around the name rules, stored and applied as a name rule
//! ([`super::names`]) whose kernel reconcile also writes its port entries.

use anyhow::Result;
use clap::Args;

use super::{Global, names::RuleOptions};
use crate::{
    analysis::entity::EntityTable,
    kernel::PinDir,
    rules::{
        bypass::{PORTS, RULE},
        cover::{self, Target},
    },
    store::{Store, blocks::RuleKind},
    text::escape_controls,
    timefmt,
};

#[derive(Args, Debug)]
pub struct BlockBypassArgs {
    #[command(flatten)]
    pub opts: RuleOptions,
}

#[derive(Args, Debug)]
pub struct UnblockBypassArgs {
    /// The device of a per-device rule, as given when blocking.
    #[arg(long, value_name = "DEVICE")]
    pub client: Option<String>,
}

pub fn block_dns_bypass(global: &Global, args: &BlockBypassArgs) -> Result<()> {
    let cov = super::names::block(
        global,
        &EntityTable::builtin(),
        Target::DnsBypass,
        &args.opts,
        "tracker block-dns-bypass",
    )?;
    if args.opts.dry_run {
        return dry_run(global, args.opts.client.as_deref());
    }
    let device =
        cov.device.as_ref().map_or_else(|| "every device".to_owned(), |d| escape_controls(&d.label).into_owned());
    let what = "DNS over TLS connections are reset, DNS over QUIC datagrams dropped";
    let pins = PinDir(global.pin_dir.clone());
    let pinned = |name: &str| pins.map(name).exists();
    match (pinned(tracker_common::names::DOMAINS), pinned(tracker_common::names::PORT_BLOCKS)) {
        (_, true) => println!("port 853 is stopped for {device} too: {what}"),
        (true, false) => println!(
            "port 853 is stopped for {device} from the next start of `tracker run` ({what}): the pinned kernel maps \
             are an older tracker's, without port rules; the names are refused now"
        ),
        (false, false) => println!("port 853 is stopped for {device} too when `tracker run` starts: {what}"),
    }
    Ok(())
}

pub fn unblock_dns_bypass(global: &Global, args: &UnblockBypassArgs) -> Result<()> {
    super::names::unblock(global, RuleKind::DnsBypass, RULE, args.client.as_deref(), "tracker unblock-dns-bypass")
}

/// How far back `--dry-run` looks, as for the other name rules.
const DRY_RUN_DAYS: i64 = 7;

/// The port half of `--dry-run`: connections to port 853 in the last days, per device, from
/// the database read only (the names' half is the name rules' dry run).
fn dry_run(global: &Global, client: Option<&str>) -> Result<()> {
    let store = Store::open_reader(&global.db)?;
    let devices = store.devices()?;
    let only = client.map(|c| cover::device(&devices, c)).transpose()?.map(|d| d.addresses);
    let since = timefmt::now_ms() - DRY_RUN_DAYS * 24 * 3_600_000;
    let per_device = port_flows(&store, since)?;
    let mut total = 0;
    let mut lines = Vec::new();
    for (addr, tcp, udp) in per_device {
        let Ok(ip) = addr.parse::<std::net::IpAddr>() else { continue };
        if only.as_ref().is_some_and(|a| !a.contains(&ip.to_canonical())) {
            continue;
        }
        total += tcp + udp;
        let label = devices.of(ip).map_or_else(|| addr.clone(), |d| d.label());
        lines.push(format!("  {}: {tcp} DNS over TLS, {udp} DNS over QUIC", escape_controls(&label)));
    }
    println!("and {total} connections to port 853 (DNS over TLS and over QUIC) in the last {DRY_RUN_DAYS} days");
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// Live flows to the rule's ports since `since_ms`, per device address: (address, TCP, UDP).
fn port_flows(store: &Store, since_ms: i64) -> Result<Vec<(String, u64, u64)>> {
    let [(tcp, port), (udp, _)] = PORTS;
    let mut stmt = store.conn().prepare(
        "SELECT client, sum(protocol = ?1), sum(protocol = ?2) FROM flows
         WHERE source = ?3 AND remote_port = ?4 AND protocol IN (?1, ?2) AND first_seen >= ?5
         GROUP BY client ORDER BY count(*) DESC, client",
    )?;
    let rows = stmt.query_map(rusqlite::params![tcp, udp, crate::store::schema::LIVE_SOURCE, port, since_ms], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64, r.get::<_, i64>(2)?.max(0) as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
