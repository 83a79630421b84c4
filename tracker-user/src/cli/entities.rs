//! `tracker companies`, `tracker services`, `tracker devices` and `tracker name-device`: who is
//! behind the names, and which device is which.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::{Global, ListArgs, open_existing, output};
use crate::{query::entities, store::Store, timefmt};

#[derive(Args, Debug)]
pub struct EntitiesArgs {
    /// Count the names flows were given since then (30m, 1h, 7d, a date or a time).
    #[arg(long, default_value = "7d", allow_hyphen_values = true)]
    pub since: String,
    /// Instead of the table, the names no entry matches, most connections first: what to add
    /// to your entity file (`--entities`).
    #[arg(long)]
    pub unmatched: bool,
    #[command(flatten)]
    pub list: ListArgs,
}

pub fn companies(global: &Global, args: &EntitiesArgs) -> Result<()> {
    list(global, args, false)
}

pub fn services(global: &Global, args: &EntitiesArgs) -> Result<()> {
    list(global, args, true)
}

fn list(global: &Global, args: &EntitiesArgs, services: bool) -> Result<()> {
    let since_ms = timefmt::parse_since(&args.since)?;
    let table = global.entity_table()?;
    let store = open_existing(global)?;
    let out = &mut std::io::stdout().lock();
    let format = args.list.format;
    if args.unmatched {
        let rows = entities::unmatched(&store, &table, since_ms, services)?;
        return output::render(out, format, &["name", "site", "connections"], &rows);
    }
    if services {
        let rows = entities::services(&store, &table, since_ms)?;
        output::render(out, format, &["name", "company", "names", "connections", "domains"], &rows)
    } else {
        let rows = entities::companies(&store, &table, since_ms)?;
        output::render(out, format, &["name", "category", "names", "connections", "domains"], &rows)
    }
}

/// A device as `tracker devices` lists it; the field names are its JSON interface.
#[derive(Serialize)]
struct DeviceRow {
    name: Option<String>,
    public_key: String,
    allowed_ips: Vec<String>,
    flows: u64,
    bytes: u64,
    first_seen: String,
    last_seen: String,
}

pub fn devices(global: &Global, args: &ListArgs) -> Result<()> {
    let store = open_existing(global)?;
    let devices = store.devices()?;
    let totals = store.client_totals()?;
    let rows: Vec<DeviceRow> = devices
        .0
        .iter()
        .map(|d| {
            let (flows, bytes) = totals
                .iter()
                .filter(|(client, ..)| {
                    client.parse().is_ok_and(|ip| devices.of(ip).is_some_and(|o| o.public_key == d.public_key))
                })
                .fold((0, 0), |(f, b), (_, cf, cb)| (f + cf, b + cb));
            DeviceRow {
                name: d.name.clone(),
                public_key: d.public_key.clone(),
                allowed_ips: d.allowed_ips.iter().map(ToString::to_string).collect(),
                flows,
                bytes,
                first_seen: timefmt::rfc3339(d.first_seen_ms),
                last_seen: timefmt::rfc3339(d.last_seen_ms),
            }
        })
        .collect();
    output::render(
        &mut std::io::stdout().lock(),
        args.format,
        &["name", "public_key", "allowed_ips", "flows", "bytes", "first_seen", "last_seen"],
        &rows,
    )
}

#[derive(Args, Debug)]
pub struct NameDeviceArgs {
    /// The device: its public key (`wg show`), one of its tunnel addresses, or its current name.
    pub device: String,
    /// The name to show for it, e.g. "Anna's phone".
    pub name: String,
}

pub fn name_device(global: &Global, args: &NameDeviceArgs) -> Result<()> {
    if !global.db.exists() {
        anyhow::bail!("no database at {}: start `tracker run` first, so it can list the devices", global.db.display());
    }
    let mut store = Store::open(&global.db)?;
    let key = store.name_device(&args.device, &args.name)?;
    println!("device {key} is now called {}", crate::text::quoted(&args.name));
    Ok(())
}
