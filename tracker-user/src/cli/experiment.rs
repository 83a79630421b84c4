//! `tracker experiment` and `tracker report --block-window`: a timed block made by the block
//! commands' own code, and what broke while it was on, as tables, JSON or CSV.

use std::io::Write;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{
    Global,
    block::{parse_for, until},
    names::{self, BlockDomainArgs, BlockEntityArgs, RuleOptions},
    open_existing,
    output::{self, Format},
};
use crate::{
    analysis::entity::EntityTable,
    query::experiment::{self, BlockWindow},
    rules::cover::{self, Target},
    store::blocks::active_rules,
    text::{escape_controls, quoted},
    timefmt,
};

/// What an experiment's TARGET is, when its text alone does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    Company,
    Service,
    Domain,
}

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// What to block: a company or a service of the entity table (`tracker companies`,
    /// `tracker services`), in any case, or a domain (it and every name under it).
    #[arg(required_unless_present = "report")]
    pub target: Option<String>,
    /// How long the block lasts (20s, 30m, 1h): it ends by itself, also across restarts.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_for, required_unless_present = "report")]
    pub duration: Option<i64>,
    /// Take TARGET as this; by default a company of that name, else a service, else a domain.
    #[arg(long, value_enum)]
    pub kind: Option<TargetKind>,
    /// Only for this device: its name (`tracker name-device`), public key or tunnel address.
    #[arg(long, value_name = "DEVICE")]
    pub client: Option<String>,
    /// The note `tracker blocks` shows (default: "experiment").
    #[arg(long)]
    pub comment: Option<String>,
    /// Instead of starting one: the report of a block rule, by its id or its text as
    /// `tracker blocks --expired` shows it (same as `tracker report --block-window RULE`).
    #[arg(long, value_name = "RULE", conflicts_with_all = ["target", "duration", "kind", "client", "comment"])]
    pub report: Option<String>,
    /// Lines per section in a table (0 = all); JSON and CSV carry every line.
    #[arg(long, default_value_t = 25)]
    pub limit: u32,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn run(global: &Global, args: &ExperimentArgs) -> Result<()> {
    if let Some(rule) = &args.report {
        return show(global, rule, args.format, args.limit);
    }
    let (Some(text), Some(duration)) = (&args.target, args.duration) else {
        bail!("give what to block and for how long: `tracker experiment Braze --for 30m`");
    };
    let table = global.entity_table()?;
    let kind = match args.kind {
        Some(k) => k,
        None => guess_kind(&table, text)?,
    };
    let opts = RuleOptions {
        client: args.client.clone(),
        duration: Some(duration),
        comment: Some(args.comment.clone().unwrap_or_else(|| "experiment".into())),
        dry_run: false,
        block_shared: false,
    };
    // The block commands' own functions: the same checks, kernel change and messages.
    let target = match kind {
        TargetKind::Company => {
            names::block_company(global, &BlockEntityArgs { name: text.clone(), opts })?;
            Target::Company(text.clone())
        }
        TargetKind::Service => {
            names::block_service(global, &BlockEntityArgs { name: text.clone(), opts })?;
            Target::Service(text.clone())
        }
        TargetKind::Domain => {
            names::block_domain(global, &BlockDomainArgs { domain: text.clone(), force: false, opts })?;
            Target::Domain { text: text.clone(), wide: false }
        }
    };
    let store = open_existing(global)?;
    let cov = cover::resolve(&table, &store.devices()?, &target, args.client.as_deref())?;
    let stored_client = cov.device.as_ref().map(|d| d.stored.clone());
    let rule = active_rules(store.conn(), Some(cov.kind), timefmt::now_ms())?
        .into_iter()
        .find(|r| r.rule == cov.rule && r.client == stored_client)
        .context("the block was made but is not active any more")?;
    let unblock = match &args.client {
        Some(c) => format!("tracker unblock-{} {} --client {}", cov.kind, shell_word(&cov.rule), shell_word(c)),
        None => format!("tracker unblock-{} {}", cov.kind, shell_word(&cov.rule)),
    };
    println!(
        "experiment: rule {id} is on, and ends {ends}. Use the devices as usual meanwhile (open the apps you \
         care about); then see what broke, beside the same length of time before it:\n  \
         tracker report --block-window {id}\n\
         (any time: while it runs it compares the time so far). To end it early: {unblock}",
        id = rule.id,
        ends = until(rule.expires),
    );
    Ok(())
}

/// A company of that name, else a service, else a domain (it has a dot); otherwise the
/// entity table's closest names.
fn guess_kind(table: &EntityTable, text: &str) -> Result<TargetKind> {
    let want = text.trim();
    let company = table.companies().iter().any(|c| c.name.eq_ignore_ascii_case(want));
    let service = table.services().iter().any(|s| s.name.eq_ignore_ascii_case(want));
    if company {
        if service {
            println!(
                "{} is a company and a service: blocking the company, with all its services (--kind service \
                 blocks only the service's domains)",
                quoted(want)
            );
        }
        return Ok(TargetKind::Company);
    }
    if service {
        return Ok(TargetKind::Service);
    }
    if want.contains('.') {
        return Ok(TargetKind::Domain);
    }
    // The resolver's own message names the closest companies; the services' too.
    let company = cover::resolve(table, &Default::default(), &Target::Company(want.into()), None).err();
    let service = cover::resolve(table, &Default::default(), &Target::Service(want.into()), None).err();
    let why: Vec<String> = [company, service].into_iter().flatten().map(|e| e.to_string()).collect();
    bail!("{} is not a company, a service or a domain: {}", quoted(want), why.join("; "))
}

/// A word as a shell takes it: bare when it is safe, else in single quotes.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/=+@".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Prints the window of the rule `rule` names.
pub fn show(global: &Global, rule: &str, format: Format, limit: u32) -> Result<()> {
    let entities = global.entity_table()?;
    let store = open_existing(global)?;
    let (id, others) = experiment::find_rule(&store, rule)?;
    if !others.is_empty() {
        let ids: Vec<String> = others.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            std::io::stderr(),
            "{} names {} rules: showing rule {id}, the newest (the others: {}; give an id to see one)",
            quoted(rule.trim()),
            others.len() + 1,
            ids.join(", ")
        );
    }
    let w = experiment::block_window(&store, &entities, id, timefmt::now_ms())?;
    let out = &mut std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &w)?;
            writeln!(out)?;
        }
        Format::Csv => csv(out, &w)?,
        Format::Table => table(out, &w, if limit == 0 { usize::MAX } else { limit as usize })?,
    }
    Ok(())
}

fn safe(s: &str) -> String {
    escape_controls(s).into_owned()
}

fn table(out: &mut dyn Write, w: &BlockWindow, limit: usize) -> Result<()> {
    let r = &w.rule;
    let device = if r.device == "all" { "every device".to_owned() } else { format!("device {}", safe(&r.device)) };
    let domains = if r.domains > 0 { format!(", {} domains", r.domains) } else { String::new() };
    let state = match (&r.end_reason, w.running) {
        (_, true) => "running".to_owned(),
        (Some(why), _) => format!("ended: {why}"),
        (None, false) => "ended".to_owned(),
    };
    writeln!(out, "Block rule {}: {} {} for {device}{domains} ({state})", r.id, r.kind, safe(&r.rule))?;
    writeln!(out, "  during  {} to {}  ({:.1} min{})", r.created, rfc(w.during.end), w.minutes, so_far(w))?;
    writeln!(out, "  before  {} to {}  (as long, just before)", rfc(w.before.start), rfc(w.before.end))?;
    let t = &w.totals;
    writeln!(
        out,
        "\n{} queries refused for {} names, from {} affected devices; {} queries for its names before it, {} \
         not refused while it was on",
        t.queries_refused, t.names_refused, t.devices_affected, t.queries_before, t.queries_not_refused
    )?;
    writeln!(
        out,
        "Connections to its names or addresses: {} before ({} failed), {} during ({} failed)",
        t.attempts_before, t.failed_before, t.attempts_during, t.failed_during
    )?;
    writeln!(out, "Packets dropped by the rule in the kernel: {}", t.packets_dropped)?;
    section(
        out,
        "Names asked for: refused while it was on, and before it",
        &["name", "refused", "devices", "retries_per_min", "queries_before", "company", "service"],
        &w.names,
        limit,
    )?;
    section(
        out,
        "Companies and services of those names",
        &["company", "service", "names", "refused", "queries_before", "devices"],
        &w.entities,
        limit,
    )?;
    section(
        out,
        "Connections to its names or addresses (failed: nothing came back, or reset before any data)",
        &["target", "flows_before", "failed_before", "flows_during", "failed_during", "devices_during"],
        &w.attempts,
        limit,
    )?;
    section(
        out,
        "Devices: everything each did, before and during",
        &[
            "device",
            "affected",
            "refused",
            "failed_during",
            "flows_before",
            "flows_during",
            "bytes_before",
            "bytes_during",
            "queries_before",
            "queries_during",
        ],
        &w.devices,
        limit,
    )?;
    Ok(())
}

fn rfc(ms: i64) -> String {
    timefmt::rfc3339(ms)
}

fn so_far(w: &BlockWindow) -> &'static str {
    if w.running { " so far" } else { "" }
}

/// A titled table of at most `limit` rows, saying how many it left out.
fn section<T: Serialize>(out: &mut dyn Write, title: &str, columns: &[&str], rows: &[T], limit: usize) -> Result<()> {
    writeln!(out, "\n{title}")?;
    output::render(out, Format::Table, columns, &rows[..rows.len().min(limit)])?;
    if rows.len() > limit {
        writeln!(out, "... {} more (--limit 0 shows all)", rows.len() - limit)?;
    }
    Ok(())
}

/// The window as one CSV table: a row per line of every section, with a `section` column; a
/// first `totals` row carries the rule and the sums.
#[derive(Default, Serialize)]
struct CsvRow {
    section: &'static str,
    name: String,
    detail: String,
    refused: Option<u64>,
    devices: Option<u64>,
    retries_per_min: Option<f64>,
    queries_before: Option<u64>,
    queries_during: Option<u64>,
    flows_before: Option<u64>,
    flows_during: Option<u64>,
    failed_before: Option<u64>,
    failed_during: Option<u64>,
    bytes_before: Option<u64>,
    bytes_during: Option<u64>,
}

fn csv(out: &mut dyn Write, w: &BlockWindow) -> Result<()> {
    let t = &w.totals;
    let mut rows = vec![CsvRow {
        section: "totals",
        name: w.rule.rule.clone(),
        detail: format!("{} rule {} from {} to {}", w.rule.kind, w.rule.id, rfc(w.during.start), rfc(w.during.end)),
        refused: Some(t.queries_refused),
        devices: Some(t.devices_affected),
        queries_before: Some(t.queries_before),
        queries_during: Some(t.queries_not_refused),
        flows_before: Some(t.attempts_before),
        flows_during: Some(t.attempts_during),
        failed_before: Some(t.failed_before),
        failed_during: Some(t.failed_during),
        ..CsvRow::default()
    }];
    for n in &w.names {
        rows.push(CsvRow {
            section: "names",
            name: n.name.clone(),
            detail: [n.company.as_deref(), n.service.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" / "),
            refused: Some(n.refused),
            devices: Some(n.devices),
            retries_per_min: Some(n.retries_per_min),
            queries_before: Some(n.queries_before),
            ..CsvRow::default()
        });
    }
    for e in &w.entities {
        rows.push(CsvRow {
            section: "entities",
            name: e.company.clone().unwrap_or_default(),
            detail: e.service.clone().unwrap_or_default(),
            refused: Some(e.refused),
            devices: Some(e.devices),
            queries_before: Some(e.queries_before),
            ..CsvRow::default()
        });
    }
    for a in &w.attempts {
        rows.push(CsvRow {
            section: "attempts",
            name: a.target.clone(),
            devices: Some(a.devices_during),
            flows_before: Some(a.flows_before),
            flows_during: Some(a.flows_during),
            failed_before: Some(a.failed_before),
            failed_during: Some(a.failed_during),
            ..CsvRow::default()
        });
    }
    for d in &w.devices {
        rows.push(CsvRow {
            section: "devices",
            name: d.device.clone(),
            detail: d.addresses.join(" "),
            refused: Some(d.refused),
            queries_before: Some(d.queries_before),
            queries_during: Some(d.queries_during),
            flows_before: Some(d.flows_before),
            flows_during: Some(d.flows_during),
            failed_during: Some(d.failed_during),
            bytes_before: Some(d.bytes_before),
            bytes_during: Some(d.bytes_during),
            ..CsvRow::default()
        });
    }
    let mut w = csv::Writer::from_writer(out);
    for row in &rows {
        w.serialize(row)?;
    }
    w.flush()?;
    Ok(())
}
