//! `tracker dns` (the query log) and `tracker domains` (query counts per name or registrable
//! domain).

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::{
    Global, ListArgs, client_addresses, effective_limit, open_existing,
    output::{self, Format},
    say_cut,
};
use crate::{
    store::{DnsQuery, DomainQuery, Grouping, dns::DnsRow},
    timefmt,
};

#[derive(Args, Debug)]
pub struct DnsArgs {
    /// Only queries since then: a duration back from now (30m, 1h, 7d), a date (2026-11-26,
    /// midnight UTC) or a time (2026-11-26T08:00:00+01:00; UTC without an offset).
    #[arg(long, default_value = "24h", allow_hyphen_values = true)]
    pub since: String,
    /// Only queries from this device: its name (`tracker name-device`), its public key, or a
    /// tunnel address.
    #[arg(long, value_name = "DEVICE")]
    pub client: Option<String>,
    /// Only this name and the names under it: `--domain example.com` matches
    /// `www.example.com` but not `notexample.com`.
    #[arg(long)]
    pub domain: Option<String>,
    /// At most this many queries, newest first (0 = all). Default: 100 in a table, all in JSON
    /// and CSV.
    #[arg(long)]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub source: super::SourceArg,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Args, Debug)]
pub struct DomainsArgs {
    /// Count queries since then: a duration back from now (30m, 1h, 7d), a date (2026-11-26,
    /// midnight UTC) or a time (2026-11-26T08:00:00+01:00; UTC without an offset).
    #[arg(long, default_value = "7d", allow_hyphen_values = true)]
    pub since: String,
    /// Only names queried at least this many times.
    #[arg(long, default_value_t = 1)]
    pub min_queries: u64,
    /// `name`: every name as queried; `registrable`: grouped by the domain someone registered
    /// (public suffix list: a.b.example.co.uk counts for example.co.uk).
    #[arg(long, value_enum, default_value_t = Grouping::Name)]
    pub group: Grouping,
    /// Only queries from this device: its name (`tracker name-device`), its public key, or a
    /// tunnel address.
    #[arg(long, value_name = "DEVICE")]
    pub client: Option<String>,
    /// At most this many rows, most queried first (0 = all). Default: 100 in a table, all in
    /// JSON and CSV.
    #[arg(long)]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub source: super::SourceArg,
    #[command(flatten)]
    pub list: ListArgs,
}

/// A query as one line: arrays folded into text, for the table and CSV.
#[derive(Serialize)]
struct DnsLine {
    time: String,
    client: String,
    name: String,
    #[serde(rename = "type")]
    qtype: String,
    rcode: String,
    answer: String,
    ttl: Option<u32>,
    resolver: String,
    transport: String,
    blocked_by: Option<u32>,
}

impl From<&DnsRow> for DnsLine {
    fn from(r: &DnsRow) -> Self {
        let mut answer: Vec<String> = r.cname_chain.clone();
        if !r.addresses.is_empty() {
            answer.push(r.addresses.join(" "));
        }
        Self {
            time: r.time.clone(),
            client: r.client.clone(),
            name: r.name.clone(),
            qtype: r.qtype.clone(),
            // No response: say so rather than leave a blank that reads as success. A refused
            // query over TCP got the kernel's reset.
            rcode: r
                .rcode
                .clone()
                .unwrap_or_else(|| if r.blocked_by.is_some() { "(reset)" } else { "(no response)" }.into()),
            answer: answer.join(" > "),
            ttl: r.ttl,
            resolver: r.resolver.clone(),
            transport: r.transport.clone(),
            blocked_by: r.blocked_by,
        }
    }
}

pub fn dns(global: &Global, args: &DnsArgs) -> Result<()> {
    timefmt::parse_since(&args.since)?;
    let store = open_existing(global)?;
    let (source, since_ms) = args.source.resolve(&store, Some(&args.since))?;
    let format = args.list.format;
    let query = DnsQuery {
        source,
        since_ms,
        clients: client_addresses(&store, args.client.as_deref())?.map(|c| c.addresses),
        domain: args.domain.clone(),
        limit: effective_limit(args.limit, format),
    };
    let rows = store.dns(&query)?;
    let out = &mut std::io::stdout().lock();
    match format {
        Format::Json => {
            const COLUMNS: &[&str] = &[];
            output::render(out, Format::Json, COLUMNS, &rows)
        }
        format => {
            const COLUMNS: &[&str] =
                &["time", "client", "name", "type", "rcode", "answer", "ttl", "resolver", "transport", "blocked_by"];
            let lines: Vec<DnsLine> = rows.iter().map(DnsLine::from).collect();
            output::render(out, format, COLUMNS, &lines)
        }
    }?;
    say_cut(rows.len(), || store.dns_total(&query), "queries", args.limit, format)
}

pub fn domains(global: &Global, args: &DomainsArgs) -> Result<()> {
    timefmt::parse_since(&args.since)?;
    let store = open_existing(global)?;
    let (source, since_ms) = args.source.resolve(&store, Some(&args.since))?;
    let format = args.list.format;
    let (rows, total) = store.domains_counted(&DomainQuery {
        source,
        since_ms,
        clients: client_addresses(&store, args.client.as_deref())?.map(|c| c.addresses),
        min_queries: args.min_queries,
        group: args.group,
        limit: effective_limit(args.limit, format),
    })?;
    const COLUMNS: &[&str] = &["domain", "queries", "clients", "first_seen", "last_seen"];
    output::render(&mut std::io::stdout().lock(), format, COLUMNS, &rows)?;
    say_cut(rows.len(), || Ok(total), "names", args.limit, format)
}
