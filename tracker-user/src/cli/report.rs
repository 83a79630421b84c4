//! `tracker report`: the report as tables with bars for people, JSON or CSV for scripts, and
//! an HTML page with charts.

use std::io::Write;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde::Serialize;

use super::{Global, client_addresses, open_existing, output::Format};
use crate::{
    query::report::{self, Report, ReportQuery, Share},
    text::{escape_controls, quoted},
    timefmt,
    web::page::{self, company_label, human_bytes},
};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Connections that started since then: a duration back from now (30m, 1h, 7d), a date
    /// (2026-11-26, midnight UTC) or a time (2026-11-26T08:00:00+01:00).
    #[arg(long, default_value = "7d", allow_hyphen_values = true)]
    pub since: String,
    /// Only this device: its name (`tracker name-device`), its public key, or a tunnel address.
    #[arg(long, value_name = "DEVICE")]
    pub client: Option<String>,
    /// Companies (or domains) to leave out of a second company table, whose shares are of what
    /// is left: `--exclude Apple,Google,Amazon` shows who else the devices talk to.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub exclude: Vec<String>,
    /// The domains section lists names queried at least this many times.
    #[arg(long, default_value_t = 1)]
    pub min_queries: u64,
    /// Lines per section in a table (0 = all); JSON and CSV carry every line.
    #[arg(long, default_value_t = 15)]
    pub limit: u32,
    /// Also write the report as one self-contained HTML page with charts (opens offline).
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub source: super::SourceArg,
    /// Instead of a period: what happened while block rule RULE (its id, or its text as `tracker
    /// blocks --expired` shows it) was on, beside the same length of time just before it: the
    /// names refused, the devices and services affected (see `tracker experiment --help`).
    #[arg(long, value_name = "RULE", conflicts_with_all = ["client", "exclude", "html", "source"])]
    pub block_window: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The companies the HTML page leaves out of its second chart when `--exclude` is not given.
pub use crate::query::report::BIG_PLAYERS;

pub fn run(global: &Global, args: &ReportArgs) -> Result<()> {
    if let Some(rule) = &args.block_window {
        return super::experiment::show(global, rule, args.format, args.limit);
    }
    timefmt::parse_since(&args.since)?;
    let entities = global.entity_table()?;
    let store = open_existing(global)?;
    let source = store.source(args.source.source.as_deref())?;
    // An import's report ends with its last packet: a week-old capture reports its own week.
    let until_ms = source.end_ms.unwrap_or_else(timefmt::now_ms);
    let since_ms = timefmt::parse_since_at(&args.since, until_ms)?;
    // The report names the device as the user gave it (a name, a key or an address).
    let clients = client_addresses(&store, args.client.as_deref())?
        .map(|c| (args.client.clone().unwrap_or(c.label), c.addresses));
    let exclude: Vec<String> = args.exclude.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
    let q = ReportQuery {
        since_ms,
        until_ms,
        source: source.id,
        clients,
        exclude: exclude.clone(),
        min_queries: args.min_queries,
        domains_limit: None,
    };
    let mut r = report::report(&store, &entities, &q)?;
    for name in &exclude {
        let known = entities.companies().iter().any(|c| c.name.eq_ignore_ascii_case(name))
            || r.companies.iter().any(|c| c.name.eq_ignore_ascii_case(name));
        if !known {
            let names: Vec<&str> = entities.companies().iter().map(|c| c.name.as_str()).collect();
            bail!(
                "--exclude {}: no company of that name, and no domain of that name in this period; companies: {}",
                quoted(name),
                names.join(", ")
            );
        }
    }
    if let Some(path) = &args.html {
        // The page always shows the story's second chart: without the big players, unless
        // --exclude named others.
        let mut shown = r.clone();
        let big: Vec<String> = BIG_PLAYERS.iter().map(|s| (*s).to_owned()).collect();
        shown.companies_excluding.get_or_insert_with(|| report::excluding(&r.companies, &big));
        let html = page::render(&shown);
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(std::io::stderr(), "wrote {}", path.display());
    }
    let out = &mut std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &r)?;
            writeln!(out)?;
        }
        Format::Csv => csv(out, &r)?,
        Format::Table => {
            let limit = if args.limit == 0 { usize::MAX } else { args.limit as usize };
            r.domains.truncate(limit.max(1));
            table(out, &r, limit, args.min_queries)?;
        }
    }
    Ok(())
}

/// Width of a bar in characters at 100 %.
const BAR_WIDTH: usize = 20;
/// Eighths of a character cell, for bars that read to 1/160.
const PARTIAL_BLOCKS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/// A bar of `pct` percent in block characters.
pub fn bar(pct: f64) -> String {
    let eighths = ((pct.clamp(0.0, 100.0) / 100.0) * (BAR_WIDTH * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTIAL_BLOCKS[eighths % 8]);
    }
    if s.is_empty() && pct > 0.0 {
        s.push(PARTIAL_BLOCKS[1]); // a share too small to draw still shows
    }
    s
}

/// One line of a section table: label, connections with share and bar, bytes with share.
struct Line {
    label: String,
    extra: String,
    share: Share,
}

fn section(out: &mut dyn Write, title: &str, extra_heading: &str, lines: &[Line], limit: usize) -> Result<()> {
    writeln!(out, "\n{title}")?;
    if lines.is_empty() {
        writeln!(out, "  (none)")?;
        return Ok(());
    }
    let shown = &lines[..lines.len().min(limit)];
    let label_w = shown.iter().map(|l| l.label.chars().count()).max().unwrap_or(0).max(4);
    let extra_w = shown.iter().map(|l| l.extra.chars().count()).max().unwrap_or(0).max(extra_heading.len());
    let extra_col = |s: &str| if extra_heading.is_empty() { String::new() } else { format!("  {s:<extra_w$}") };
    writeln!(
        out,
        "  {:<label_w$}{}  {:>11}  {:>6}  {:<BAR_WIDTH$}  {:>9}  {:>6}",
        "NAME",
        extra_col(extra_heading),
        "CONNECTIONS",
        "%",
        "",
        "BYTES",
        "%"
    )?;
    for l in shown {
        writeln!(
            out,
            "  {:<label_w$}{}  {:>11}  {:>6.1}  {:<BAR_WIDTH$}  {:>9}  {:>6.1}",
            l.label,
            extra_col(&l.extra),
            l.share.connections,
            l.share.connections_pct,
            bar(l.share.connections_pct),
            human_bytes(l.share.bytes),
            l.share.bytes_pct
        )?;
    }
    if lines.len() > shown.len() {
        writeln!(out, "  ... {} more (--limit 0 shows all)", lines.len() - shown.len())?;
    }
    Ok(())
}

/// Text from the network or users, made safe for a terminal.
fn safe(s: &str) -> String {
    escape_controls(s).into_owned()
}

fn table(out: &mut dyn Write, r: &Report, limit: usize, min_queries: u64) -> Result<()> {
    let who = r.client.as_deref().map_or_else(|| "all devices".to_owned(), |c| format!("device {}", safe(c)));
    writeln!(
        out,
        "Report {} to {}, {}: {} connections, {}",
        r.since,
        r.until,
        who,
        r.totals.connections,
        human_bytes(r.totals.bytes)
    )?;
    let times = if min_queries == 1 { "once".to_owned() } else { format!("{min_queries} times") };
    writeln!(out, "\nNames queried at least {times}\n  {:<40}  {:>8}  {:>7}", "NAME", "QUERIES", "CLIENTS")?;
    if r.domains.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for d in &r.domains {
        writeln!(out, "  {:<40}  {:>8}  {:>7}", safe(&d.domain), d.queries, d.clients)?;
    }
    let company_lines = |rows: &[report::CompanyLine]| -> Vec<Line> {
        rows.iter()
            .map(|c| Line {
                label: safe(&company_label(c)),
                extra: c.category.unwrap_or("").to_owned(),
                share: c.share.clone(),
            })
            .collect()
    };
    section(out, "Companies (share of all connections)", "CATEGORY", &company_lines(&r.companies), limit)?;
    if let Some(ex) = &r.companies_excluding {
        let title = format!(
            "Companies without {} (share of the {} connections left)",
            safe(&ex.excluded.join(", ")),
            ex.connections
        );
        section(out, &title, "CATEGORY", &company_lines(&ex.rows), limit)?;
    }
    if !r.served_by.is_empty() {
        writeln!(out, "\nServed by (CDNs and clouds behind other companies' names)")?;
        for s in &r.served_by {
            writeln!(out, "  {:<30}  {:>11} connections  {:>9}", safe(&s.name), s.connections, human_bytes(s.bytes))?;
        }
    }
    let services: Vec<Line> = r
        .services
        .iter()
        .map(|s| Line { label: safe(&s.name), extra: safe(s.company.as_deref().unwrap_or("")), share: s.share.clone() })
        .collect();
    section(out, "Services (apps and SDKs)", "COMPANY", &services, limit)?;
    let enc: Vec<Line> = r
        .encryption
        .iter()
        .map(|e| Line { label: e.class.to_owned(), extra: e.protocols.join(","), share: e.share.clone() })
        .collect();
    section(out, "Encrypted or not", "PROTOCOLS", &enc, limit)?;
    let apps: Vec<Line> = r
        .app_protocols
        .iter()
        .map(|p| Line { label: p.name.clone(), extra: p.encryption.unwrap_or("").to_owned(), share: p.share.clone() })
        .collect();
    section(out, "Application protocols", "ENCRYPTION", &apps, limit)?;
    let transports: Vec<Line> = r
        .transports
        .iter()
        .map(|p| Line { label: p.name.clone(), extra: String::new(), share: p.share.clone() })
        .collect();
    section(out, "Transports", "", &transports, limit)?;
    writeln!(out, "\nDevices")?;
    for d in &r.devices {
        writeln!(
            out,
            "  {:<24}  {:>11} connections  {:>9}  {}",
            safe(&d.device),
            d.connections,
            human_bytes(d.bytes),
            d.addresses.join(" ")
        )?;
    }
    Ok(())
}

/// The report as one CSV table: a row per line of every section, with a `section` column.
#[derive(Serialize)]
struct CsvRow<'a> {
    section: &'a str,
    name: String,
    detail: String,
    connections: u64,
    connections_pct: Option<f64>,
    bytes: u64,
    bytes_pct: Option<f64>,
    queries: Option<u64>,
}

fn csv(out: &mut dyn Write, r: &Report) -> Result<()> {
    let mut rows: Vec<CsvRow<'_>> = Vec::new();
    let shared = |section, name: String, detail: String, s: &Share| CsvRow {
        section,
        name,
        detail,
        connections: s.connections,
        connections_pct: Some(s.connections_pct),
        bytes: s.bytes,
        bytes_pct: Some(s.bytes_pct),
        queries: None,
    };
    for d in &r.domains {
        rows.push(CsvRow {
            section: "domains",
            name: d.domain.clone(),
            detail: format!("{} clients", d.clients),
            connections: 0,
            connections_pct: None,
            bytes: 0,
            bytes_pct: None,
            queries: Some(d.queries),
        });
    }
    for c in &r.companies {
        rows.push(shared("companies", c.name.clone(), c.kind.to_owned(), &c.share));
    }
    if let Some(ex) = &r.companies_excluding {
        for c in &ex.rows {
            rows.push(shared("companies_excluding", c.name.clone(), c.kind.to_owned(), &c.share));
        }
    }
    for s in &r.served_by {
        let share = Share { connections: s.connections, connections_pct: 0.0, bytes: s.bytes, bytes_pct: 0.0 };
        rows.push(CsvRow {
            connections_pct: None,
            bytes_pct: None,
            ..shared("served_by", s.name.clone(), String::new(), &share)
        });
    }
    for s in &r.services {
        rows.push(shared("services", s.name.clone(), s.company.clone().unwrap_or_default(), &s.share));
    }
    for e in &r.encryption {
        rows.push(shared("encryption", e.class.to_owned(), e.protocols.join(" "), &e.share));
    }
    for p in &r.transports {
        rows.push(shared("transports", p.name.clone(), String::new(), &p.share));
    }
    for p in &r.app_protocols {
        rows.push(shared("app_protocols", p.name.clone(), p.encryption.unwrap_or("").to_owned(), &p.share));
    }
    for d in &r.devices {
        let share = Share { connections: d.connections, connections_pct: 0.0, bytes: d.bytes, bytes_pct: 0.0 };
        rows.push(CsvRow {
            connections_pct: None,
            bytes_pct: None,
            ..shared("devices", d.device.clone(), d.addresses.join(" "), &share)
        });
    }
    let mut w = csv::Writer::from_writer(out);
    for row in &rows {
        w.serialize(row)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_read_to_an_eighth_of_a_cell() {
        assert_eq!(bar(100.0), "█".repeat(BAR_WIDTH));
        assert_eq!(bar(50.0), "█".repeat(BAR_WIDTH / 2));
        assert_eq!(bar(0.0), "");
        assert_eq!(bar(0.01), "▏", "a tiny share still shows");
        // 160 eighths for 100 %: 3.125 % is 5 eighths.
        assert_eq!(bar(3.125), "▋");
        assert_eq!(bar(250.0), "█".repeat(BAR_WIDTH));
    }
}
