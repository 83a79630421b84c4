//! `tracker block-ip`, `unblock-ip` and `blocks`: address rule changes that keep the database
//! and the kernel maps equal, where every rule change writes (checked before anything is
//! written), and the rule listing with live counters. Name rules are in [`super::names`].

mod dry_run;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{Global, ListArgs, open_existing, output};
use crate::{
    blocking::{self, KernelBlocks, KernelNames},
    change::{self, Applied, Changer},
    kernel::{self, PinDir},
    store::blocks::{Added, BlockFilter, BlockRow, LiveCount, NewRule, RuleKind},
    timefmt,
};

/// `--for`: a duration as milliseconds.
pub fn parse_for(s: &str) -> Result<i64> {
    timefmt::parse_for(s)
}

#[derive(Args, Debug)]
pub struct BlockArgs {
    /// IPv4/IPv6 address or CIDR, e.g. 203.0.113.7 or 198.51.100.0/24.
    pub rule: String,
    /// A note to remember why (shown by `tracker blocks`); given again for a rule that exists,
    /// it replaces the old note.
    #[arg(long)]
    pub comment: Option<String>,
    /// For this long only (30m, 1h, 2d): the kernel stops enforcing it on time by itself, and
    /// the daemon marks it expired (`tracker blocks --expired`). Given again for a rule that
    /// exists, it sets a new end.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_for)]
    pub duration: Option<i64>,
    /// Not for addresses: the kernel's address rules hold for every device. Per-device rules
    /// are for names (block-domain, block-company, block-service, import-blocklist).
    #[arg(long, value_name = "DEVICE", hide = true)]
    pub client: Option<String>,
    /// Block even a rule that covers every address (0.0.0.0/0, ::/0) or local ones (private,
    /// loopback, CGNAT, link-local, ULA), where the VPN host's own resolver lives.
    #[arg(long)]
    pub force: bool,
    /// Change nothing: show what the rule would cover, the connections (and DNS queries to a
    /// resolver it covers) of the last 7 days it would have stopped, per device, and the names
    /// its addresses served, with a warning when they belong to several sites (a CDN's
    /// address: blocking it blocks them all). Needs no root.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: table for people, json (the whole preview) or csv (the devices) for
    /// scripts.
    #[arg(long, value_enum, default_value_t = output::Format::Table, requires = "dry_run")]
    pub format: output::Format,
}

#[derive(Args, Debug)]
pub struct UnblockArgs {
    /// The address or CIDR as blocked (see `tracker blocks`), e.g. 203.0.113.7 or
    /// 198.51.100.0/24.
    pub rule: String,
}

pub fn block_ip(global: &Global, args: &BlockArgs) -> Result<()> {
    let net = blocking::parse_rule(&args.rule)?;
    if let Some(c) = &args.client {
        bail!(
            "--client {}: the kernel's address rules hold for every device (their key has no device); per-device \
             rules are for names: block-domain, block-company, block-service and import-blocklist take --client",
            crate::text::quoted(c)
        );
    }
    // A dry run of a rule that needs --force shows why instead of refusing: that is what it is
    // for.
    if args.dry_run {
        return dry_run::block_ip(global, net, args.duration, args.format);
    }
    if let Some(why) = blocking::needs_force(&net).filter(|_| !args.force) {
        bail!("{why}. If that is what you want, add --force");
    }
    let expires = args.duration.map(|d| timefmt::now_ms() + d);
    let mut ch = Changer::open(&global.db, &global.pin_dir, "tracker block-ip")?;
    let rule = net.to_string();
    let new = NewRule {
        kind: Some(RuleKind::Ip),
        rule: rule.clone(),
        comment: args.comment.clone(),
        expires,
        ..NewRule::default()
    };
    let Changer { store, kernel, .. } = &mut ch;
    let added = store.add_rule_then(&new, |w, id| match kernel.as_mut() {
        Some(k) => blocking::reconcile_in(w.conn(), &mut k.blocks)
            .map(|_| ())
            .with_context(|| format!("{rule} was not blocked (rule {id})")),
        None => Ok(()),
    })?;
    let id = match added {
        Added::New(id) => id,
        Added::Exists { id, comment_updated, expires_updated, .. } => {
            let mut notes = Vec::new();
            if comment_updated {
                notes.push("its comment is updated".to_owned());
            }
            if expires_updated {
                notes.push(format!("it now ends {}", until(expires)));
            }
            let note = if notes.is_empty() { String::new() } else { format!("; {}", notes.join(", ")) };
            println!("{rule} is already blocked (rule {id}){note} (see `tracker blocks`)");
            return Ok(());
        }
    };
    let what =
        format!("{rule} (rule {id}{})", expires.map(|_| format!(", ends {}", until(expires))).unwrap_or_default());
    let applied = ch.applied(ch.kernel.is_some());
    say_applied(applied, &format!("blocked {what}"), &format!("saved the block of {what}"));
    Ok(())
}

/// `in 30m (2026-11-26T08:30:00.000Z)`, or `never`.
pub fn until(expires: Option<i64>) -> String {
    match expires {
        Some(ms) => {
            let left = (ms - timefmt::now_ms()).max(0) as u64;
            let left = humantime::format_duration(std::time::Duration::from_secs(left.div_ceil(1000)));
            format!("in {left} ({})", timefmt::rfc3339(ms))
        }
        None => "never".into(),
    }
}

/// Says where a change took effect: in the kernel now, or at the daemon's next start.
pub fn say_applied(applied: Applied, done: &str, saved: &str) {
    match applied {
        Applied::Kernel => println!("{done} in the kernel"),
        Applied::MapsOnly => {
            println!("{done} in the kernel maps; no program is attached, so it takes effect when `tracker run` starts")
        }
        Applied::AtStart => {
            println!("{saved}; the daemon's kernel maps are not loaded, so it takes effect when `tracker run` starts")
        }
    }
}

pub fn unblock_ip(global: &Global, args: &UnblockArgs) -> Result<()> {
    let net = blocking::parse_rule(&args.rule)?;
    let mut ch = Changer::open(&global.db, &global.pin_dir, "tracker unblock-ip")?;
    let rule = net.to_string();
    let Some(done) = change::unblock_ip(&mut ch, &rule)? else {
        let covering = blocking::covering_rules(&ch.store.block_rules(RuleKind::Ip)?, &net);
        if let Some(wider) = covering.first() {
            bail!(
                "no block rule for {rule}, but the rule {wider} covers it: `tracker unblock-ip \
                 {wider}` removes that (see `tracker blocks`)"
            );
        }
        bail!("no block rule for {rule} (see `tracker blocks`)");
    };
    match done.applied {
        Applied::AtStart => println!("removed rule {} for {rule}; no kernel maps are loaded", done.id),
        _ => println!("unblocked {rule} (rule {}) in the kernel", done.id),
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct BlocksArgs {
    /// Ended rules too (unblocked or expired), with when and why they ended.
    #[arg(long)]
    pub expired: bool,
    /// Only rules of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<RuleKind>,
    #[command(flatten)]
    pub list: ListArgs,
}

pub fn blocks(global: &Global, args: &BlocksArgs) -> Result<()> {
    let store = open_existing(global)?;
    let pins = PinDir(global.pin_dir.clone());
    // Live counters need root; without them the listing shows the last sweep's numbers.
    let (ips, names) = match kernel::require_maps("") {
        Ok(()) => (
            KernelBlocks::open_pinned(&pins)?.map(|k| k.counters()).transpose()?,
            KernelNames::open_pinned(&pins)?.map(|k| crate::rules::kernel::counts(&k)).transpose()?,
        ),
        Err(_) => (None, None),
    };
    let clock = timefmt::KernelClock::now();
    let hit = |ns: u64| (ns != 0).then(|| clock.to_unix_ms(ns));
    // A name rule counts in both maps: queries refused in DOMAINS, packets dropped at the
    // addresses it learned.
    let live = |id: u32| {
        let (ip, name) = (ips.as_ref()?.get(&id), names.as_ref()?.get(&id));
        Some(LiveCount {
            dropped: ip.map_or(0, |k| k.packets_dropped),
            refused: name.map_or(0, |k| k.packets_dropped),
            last_hit: [ip, name].into_iter().flatten().filter_map(|k| hit(k.last_hit_ns)).max(),
        })
    };
    let devices = store.devices()?;
    let label = |stored: &str| crate::rules::cover::stored_device_label(&devices, stored);
    let filter = BlockFilter { ended: args.expired, kind: args.kind };
    let rows = store.block_rows(filter, timefmt::now_ms(), &live, &label)?;
    let format = args.list.format;
    const TABLE: &[&str] = &[
        "id",
        "kind",
        "rule",
        "origin",
        "device",
        "domains",
        "hits",
        "last_hit",
        "created",
        "expires",
        "time_left",
        "comment",
    ];
    const ENDED: &[&str] = &[
        "id",
        "kind",
        "rule",
        "origin",
        "device",
        "domains",
        "hits",
        "last_hit",
        "created",
        "expires",
        "ended",
        "end_reason",
        "comment",
    ];
    const ALL: &[&str] = &[
        "id",
        "kind",
        "rule",
        "origin",
        "device",
        "domains",
        "comment",
        "packets_dropped",
        "queries_refused",
        "hits",
        "shared_open",
        "block_shared",
        "last_hit",
        "created",
        "expires",
        "time_left",
        "ended",
        "end_reason",
    ];
    let columns = match format {
        output::Format::Table if args.expired => ENDED,
        output::Format::Table => TABLE,
        _ => ALL,
    };
    let mut out = std::io::stdout().lock();
    output::render(&mut out, format, columns, &rows)?;
    if format == output::Format::Table {
        shared_notes(&mut out, &rows)?;
    }
    Ok(())
}

/// Under the table, for people: the name rules that left shared addresses open, and why.
fn shared_notes(out: &mut impl std::io::Write, rows: &[BlockRow]) -> Result<()> {
    for r in rows.iter().filter(|r| r.shared_open > 0 && !r.block_shared && r.ended.is_none()) {
        writeln!(
            out,
            "rule {}: {} address{} of its names also serve{} names no rule blocks (a CDN's); left open so those \
             keep working, the block holds by name. `--block-shared` given to the same block command blocks them \
             too.",
            r.id,
            r.shared_open,
            if r.shared_open == 1 { "" } else { "es" },
            if r.shared_open == 1 { "s" } else { "" },
        )?;
    }
    Ok(())
}
