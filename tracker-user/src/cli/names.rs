//! `tracker block-domain`, `block-company`, `block-service`, `import-blocklist` and their
//! `unblock-...` twins: their arguments, dry runs and messages; the change itself (the rule
//! stored with the domains it covers, the kernel's name map made equal to the rules in the same
//! transaction) is [`crate::change`]'s, which the dashboard calls too.

use std::{io::Write as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{
    Global,
    block::{parse_for, say_applied, until},
};
use crate::{
    analysis::entity::EntityTable,
    change::{self, Applied, Changer, NameBlocked, NameRule},
    query::preview,
    rules::{
        blocklist,
        cover::{self, Coverage, Target},
    },
    store::{
        Store,
        blocks::{Added, RuleKind},
    },
    text::{escape_controls, quoted},
    timefmt,
};

/// What every name block takes.
#[derive(Args, Debug, Clone, Default)]
pub struct RuleOptions {
    /// Only for this device: its name (`tracker name-device`), its public key, or a tunnel
    /// address. The rule holds for each of the device's addresses. Default: every device.
    #[arg(long, value_name = "DEVICE")]
    pub client: Option<String>,
    /// For this long only (30m, 1h, 2d): the kernel stops refusing on time by itself, and the
    /// daemon marks the rule expired (`tracker blocks --expired`). Given again for a rule that
    /// exists, it sets a new end.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_for)]
    pub duration: Option<i64>,
    /// A note to remember why (shown by `tracker blocks`); given again, it replaces the old one.
    #[arg(long)]
    pub comment: Option<String>,
    /// Change nothing: show which names the block would cover and how many DNS queries and
    /// connections of the last 7 days it would have stopped, per device.
    #[arg(long)]
    pub dry_run: bool,
    /// Also block the addresses the blocked names share with names no rule blocks. By default
    /// such an address (a CDN's, serving many sites) stays open so the other names keep
    /// working, and the block holds by name alone; `tracker blocks` counts them
    /// (`shared_open`). With this, those other names break too. Only for every device.
    #[arg(long)]
    pub block_shared: bool,
}

#[derive(Args, Debug)]
pub struct BlockDomainArgs {
    /// The domain: it and every name under it are refused (example.com covers
    /// www.example.com, not notexample.com).
    pub domain: String,
    /// Block even a top-level domain or public suffix (com, co.uk): every name under it.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub opts: RuleOptions,
}

#[derive(Args, Debug)]
pub struct BlockEntityArgs {
    /// Its name in the entity table, in any case (`tracker companies`, `tracker services`).
    pub name: String,
    #[command(flatten)]
    pub opts: RuleOptions,
}

#[derive(Args, Debug)]
pub struct ImportBlocklistArgs {
    /// A hosts file (`0.0.0.0 ads.example.com`) or a list of domains, one a line; `#` starts a
    /// comment.
    pub file: PathBuf,
    /// The list's name, for `tracker blocks` and `unblock-list` (default: the file's name
    /// without its extension). Importing under the same name again replaces its domains.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub opts: RuleOptions,
}

#[derive(Args, Debug)]
pub struct UnblockNameArgs {
    /// As blocked: the domain, the company's or service's name, or the list's name (see
    /// `tracker blocks`).
    pub target: String,
    /// The device of a per-device rule, as given when blocking.
    #[arg(long, value_name = "DEVICE")]
    pub client: Option<String>,
}

pub fn block_domain(global: &Global, args: &BlockDomainArgs) -> Result<()> {
    let target = Target::Domain { text: args.domain.clone(), wide: args.force };
    block(global, &EntityTable::builtin(), target, &args.opts, "tracker block-domain").map(|_| ())
}

pub fn block_company(global: &Global, args: &BlockEntityArgs) -> Result<()> {
    block(global, &global.entity_table()?, Target::Company(args.name.clone()), &args.opts, "tracker block-company")
        .map(|_| ())
}

pub fn block_service(global: &Global, args: &BlockEntityArgs) -> Result<()> {
    block(global, &global.entity_table()?, Target::Service(args.name.clone()), &args.opts, "tracker block-service")
        .map(|_| ())
}

pub fn import_blocklist(global: &Global, args: &ImportBlocklistArgs) -> Result<()> {
    let shown = args.file.display();
    // Read whole before anything is opened: a file that cannot be read changes nothing.
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading the blocklist {shown}; nothing was changed"))?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => blocklist::default_name(&args.file)
            .with_context(|| format!("{shown} has no file name to call the list by: give --name"))?,
    };
    let parsed = blocklist::parse(&bytes);
    let mut err = std::io::stderr().lock();
    for m in &parsed.malformed {
        let _ = writeln!(err, "{shown}:{}: {}: {}", m.line, escape_controls(&m.text), m.why);
    }
    drop(err);
    let summary = format!(
        "{} lines: {} domains, {} comments or blank, {} repeated, {} names of the host itself (localhost) \
         skipped, {} malformed{}",
        parsed.lines,
        parsed.domains.len(),
        parsed.comments,
        parsed.duplicates,
        parsed.local,
        parsed.malformed.len(),
        if parsed.malformed.is_empty() { "" } else { " (listed above, not imported)" }
    );
    if parsed.domains.is_empty() {
        bail!("{shown} has no domains to block ({summary}); nothing was changed");
    }
    let target = Target::List { name, domains: parsed.domains };
    block(global, &EntityTable::builtin(), target, &args.opts, "tracker import-blocklist")?;
    println!("{shown}: {summary}");
    Ok(())
}

/// Stores a name rule and applies it to the kernel; prints what happened.
pub(super) fn block(
    global: &Global,
    table: &EntityTable,
    target: Target,
    opts: &RuleOptions,
    what: &str,
) -> Result<Coverage> {
    if opts.dry_run {
        if opts.block_shared && opts.client.is_some() {
            bail!(
                "--block-shared with --client: the kernel's address rules hold for every device (their key has \
                 no device), so a rule for one device blocks by name only; nothing was changed"
            );
        }
        return dry_run(global, table, &target, opts);
    }
    let expires = opts.duration.map(|d| timefmt::now_ms() + d);
    let mut ch = Changer::open(&global.db, &global.pin_dir, what)?;
    let rule = NameRule {
        client: opts.client.clone(),
        expires,
        comment: opts.comment.clone(),
        block_shared: opts.block_shared,
    };
    let NameBlocked { coverage: cov, added, applied } = change::block_name(&mut ch, table, &target, &rule)?;
    let described = describe(&cov);
    match added {
        Added::New(id) => {
            let ends = expires.map(|_| format!(", ends {}", until(expires))).unwrap_or_default();
            let what = format!("{described} (rule {id}{ends})");
            say_applied(applied, &format!("blocked {what}"), &format!("saved the block of {what}"));
        }
        Added::Exists { id, comment_updated, expires_updated, domains_added, domains_removed } => {
            let mut notes = Vec::new();
            if domains_added + domains_removed > 0 {
                notes.push(format!("{domains_added} domains added, {domains_removed} removed"));
            }
            if comment_updated {
                notes.push("its comment is updated".into());
            }
            if expires_updated {
                notes.push(format!("it now ends {}", until(expires)));
            }
            let note = if notes.is_empty() { String::new() } else { format!("; {}", notes.join(", ")) };
            println!("{described} is already blocked (rule {id}){note} (see `tracker blocks`)");
        }
    }
    Ok(cov)
}

/// Names `--dry-run` lists, most asked first.
const DRY_RUN_NAMES: usize = 10;

/// `--dry-run`: what the block covers and what it would have stopped, from the database read
/// only (no root, no pins, no lock: nothing is written).
fn dry_run(global: &Global, table: &EntityTable, target: &Target, opts: &RuleOptions) -> Result<Coverage> {
    let store = Store::open_reader(&global.db)?;
    let devices = store.devices()?;
    let cov = cover::resolve(table, &devices, target, opts.client.as_deref())?;
    let now = timefmt::now_ms();
    let since = preview::since(now);
    let only = cov.device.as_ref().map(|d| d.addresses.clone());
    let p = preview::would_stop(&store, &devices, &cov.domains, only.as_deref(), since)?;
    println!("dry run, nothing changed: would block {}", describe(&cov));
    println!(
        "in the last {} days it would have stopped {} DNS queries and {} connections{}",
        preview::DAYS,
        p.queries,
        p.connections,
        if p.devices.is_empty() { "" } else { ":" }
    );
    for d in &p.devices {
        println!("  {}: {} queries, {} connections", escape_controls(&d.device), d.queries, d.connections);
    }
    if !p.names.is_empty() {
        println!("names asked, most first:");
        for (name, n) in p.names.iter().take(DRY_RUN_NAMES) {
            println!("  {} ({n})", escape_controls(name));
        }
        if p.names.len() > DRY_RUN_NAMES {
            println!("  ... and {} more", p.names.len() - DRY_RUN_NAMES);
        }
    }
    let elsewhere = preview::blocked_elsewhere(&store, now)?;
    let shared = preview::shared_addresses(&store, &devices, &cov.domains, &elsewhere, only.as_deref(), since)?;
    say_shared(&shared, cov.device.is_some(), opts.block_shared);
    Ok(cov)
}

/// Shared addresses shown per dry run, with their other names.
const DRY_RUN_SHARED: usize = 5;

/// What becomes of the addresses the names were answered with: blocked while the rule holds,
/// except those that also serve names it does not block (left open, or blocked with
/// `--block-shared`), and none for a rule for one device.
fn say_shared(s: &preview::SharedAddresses, one_device: bool, block_shared: bool) {
    let n = s.answered;
    let (addresses, are, stay) =
        if n == 1 { ("1 address".to_owned(), "is", "stays") } else { (format!("{n} addresses"), "are", "stay") };
    if n == 0 {
        println!(
            "no DNS answer of the last {} days gave addresses for these names; addresses answered later are \
             blocked too while the rule holds, except ones that also serve a name no rule blocks",
            preview::DAYS
        );
        return;
    }
    if one_device {
        println!(
            "the {addresses} these names were answered with {stay} open: the kernel's address rules hold for every \
             device, so a rule for one device blocks by name only"
        );
        return;
    }
    let shared = s.shared.len();
    if shared == 0 {
        println!("the {addresses} these names were answered with {are} blocked too while the rule holds");
        return;
    }
    let example = s.shared.iter().flat_map(|a| &a.also_serves).next().map(|e| escape_controls(e).into_owned());
    let example = example.map(|e| format!(" (e.g. {e})")).unwrap_or_default();
    let (they, serve, them) = if shared == 1 { ("it stays", "serves", "it") } else { ("they stay", "serve", "them") };
    if block_shared {
        println!(
            "{shared} of the {addresses} these names were answered with also {serve} names this rule does not \
             block{example}: --block-shared blocks {them} too, and those names break"
        );
    } else {
        println!(
            "{shared} of the {addresses} these names were answered with also {serve} names this rule does not \
             block{example}: {they} open and the block holds by name (--block-shared blocks {them} too, and those \
             names break)"
        );
    }
    for d in s.devices.iter().filter(|d| d.shared > 0) {
        let given = if d.answered == 1 { "address" } else { "addresses" };
        println!("  {}: {} of the {} {given} it was given", escape_controls(&d.device), d.shared, d.answered);
    }
    for a in s.shared.iter().take(DRY_RUN_SHARED) {
        let names: Vec<String> = a.also_serves.iter().map(|n| escape_controls(n).into_owned()).collect();
        println!("  {} also serves {}", a.address, names.join(", "));
    }
    if shared > DRY_RUN_SHARED {
        println!("  ... and {} more", shared - DRY_RUN_SHARED);
    }
}

/// `company Braze (3 domains: appboy.com, braze.com, braze.eu) for every device`.
fn describe(cov: &Coverage) -> String {
    const SHOWN: usize = 5;
    let n = cov.domains.len();
    let domains = match cov.kind {
        RuleKind::Domain => String::new(),
        _ if n <= SHOWN => format!(" ({n} domains: {})", cov.domains.join(", ")),
        _ => format!(" ({n} domains: {}, ...)", cov.domains[..SHOWN].join(", ")),
    };
    let device = match &cov.device {
        None => "every device".to_owned(),
        Some(d) => {
            let addrs: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
            let addrs = addrs.join(", ");
            if addrs == d.label { addrs } else { format!("{} ({addrs})", d.label) }
        }
    };
    format!("{} {}{domains} for {device}", cov.kind, escape_controls(&cov.rule))
}

pub fn unblock_domain(global: &Global, args: &UnblockNameArgs) -> Result<()> {
    let domain = crate::rules::canonical_domain(&args.target, true)
        .map_err(|e| anyhow::anyhow!("{} is not a domain: {e}", quoted(&args.target)))?;
    unblock(global, RuleKind::Domain, &domain, args.client.as_deref(), "tracker unblock-domain")
}

pub fn unblock_company(global: &Global, args: &UnblockNameArgs) -> Result<()> {
    unblock(global, RuleKind::Company, &args.target, args.client.as_deref(), "tracker unblock-company")
}

pub fn unblock_service(global: &Global, args: &UnblockNameArgs) -> Result<()> {
    unblock(global, RuleKind::Service, &args.target, args.client.as_deref(), "tracker unblock-service")
}

pub fn unblock_list(global: &Global, args: &UnblockNameArgs) -> Result<()> {
    unblock(global, RuleKind::List, &args.target, args.client.as_deref(), "tracker unblock-list")
}

/// Ends the active rule of `kind` named `text` (any case) for `client`, and takes its entries
/// out of the kernel (a key another rule also covers goes to that rule).
pub(super) fn unblock(global: &Global, kind: RuleKind, text: &str, client: Option<&str>, what: &str) -> Result<()> {
    let mut ch = Changer::open(&global.db, &global.pin_dir, what)?;
    let done = change::unblock_name(&mut ch, kind, text, client)?;
    let said = format!("unblocked {kind} {} (rule {})", escape_controls(&done.rule), done.id);
    match done.applied {
        Applied::AtStart => println!("{said}; no kernel maps are loaded"),
        _ => println!("{said} in the kernel"),
    }
    Ok(())
}
