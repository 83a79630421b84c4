//! `tracker prune`: removes the live interface's rows past their retention now, as the daemon
//! does every hour, and says what went and how big the database is.

use std::{io::IsTerminal as _, io::Write as _, path::Path, time::Duration};

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use super::{Global, ListArgs, output::Format};
use crate::{
    store::{
        Store,
        retention::{Pruned, Retention, Size},
    },
    timefmt,
};

/// The shortest retention accepted: a shorter one would prune the rows of today's reports.
const MIN_KEEP: Duration = Duration::from_secs(86_400);

/// How long rows are kept: for `tracker prune` and `tracker run`.
#[derive(Args, Debug, Clone, Copy)]
pub struct KeepArgs {
    /// How long each flow and DNS query (and the hourly totals) is kept, from its last packet:
    /// 30d, 8w, 90d. At least a day.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = super::parse_duration)]
    pub keep_raw: Duration,
    /// How long the daily totals are kept: reports over older periods (`--since 180d`) read
    /// them once the rows are gone. At least as long as --keep-raw.
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = super::parse_duration)]
    pub keep_daily: Duration,
}

impl KeepArgs {
    /// The retention, or why these values would lose what a user expects kept.
    pub fn retention(&self) -> Result<Retention> {
        if self.keep_raw < MIN_KEEP {
            bail!(
                "--keep-raw {}: keep rows at least a day (reports of today read them); nothing was changed",
                humantime::format_duration(self.keep_raw)
            );
        }
        if self.keep_daily < self.keep_raw {
            bail!(
                "--keep-daily {} is shorter than --keep-raw {}: the daily totals must outlive the rows; nothing \
                 was changed",
                humantime::format_duration(self.keep_daily),
                humantime::format_duration(self.keep_raw)
            );
        }
        Ok(Retention { raw: self.keep_raw, rollups: self.keep_daily })
    }
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Rebuild a database created before tracker shrank files when pruning, so that it does
    /// from now on (VACUUM: needs as much free disk as the database, and the daemon waits
    /// while it runs). Without it such a database still stops growing: freed space is reused.
    #[arg(long)]
    pub vacuum: bool,
    #[command(flatten)]
    pub list: ListArgs,
}

/// What `tracker prune` prints: what went, and the size after.
#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    pruned: Pruned,
    converted: bool,
    #[serde(flatten)]
    size: Size,
}

pub fn prune(global: &Global, args: &PruneArgs) -> Result<()> {
    let keep = args.keep.retention()?;
    if !Path::new(&global.db).exists() {
        bail!("no database at {}: nothing to prune", global.db.display());
    }
    let mut store = Store::open(&global.db)?;
    let converted = args.vacuum && store.convert_to_incremental_vacuum()?;
    let live = std::io::stderr().is_terminal();
    let mut progress = |p: &Pruned| {
        if live {
            let _ = write!(std::io::stderr(), "\rpruning: {} flows, {} DNS queries", p.flows, p.dns_queries);
        }
    };
    let pruned = store.prune(keep, timefmt::now_ms(), &mut progress)?;
    if live {
        let _ = writeln!(std::io::stderr());
    }
    let report = Report { pruned, converted, size: store.size()? };
    let mut out = std::io::stdout().lock();
    match args.list.format {
        Format::Table => print_table(&mut out, &report, keep)?,
        f => super::output::render(&mut out, f, &COLUMNS, std::slice::from_ref(&report))?,
    }
    Ok(())
}

const COLUMNS: [&str; 12] = [
    "flows",
    "dns_queries",
    "hour_rollups",
    "day_rollups",
    "days_packed",
    "flows_packed",
    "queries_packed",
    "bytes_returned",
    "converted",
    "file_bytes",
    "free_bytes",
    "shrinks",
];

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn print_table(out: &mut impl std::io::Write, r: &Report, keep: Retention) -> Result<()> {
    let Pruned {
        flows,
        dns_queries,
        hour_rollups,
        day_rollups,
        days_packed,
        flows_packed,
        queries_packed,
        bytes_returned,
    } = &r.pruned;
    writeln!(
        out,
        "Removed {flows} flows and {dns_queries} DNS queries older than {} (imported captures are kept), \
         {hour_rollups} hourly and {day_rollups} daily totals older than {} and {}; packed \
         {days_packed} daily totals, {flows_packed} flows and {queries_packed} DNS queries of days over two \
         days old.",
        humantime::format_duration(keep.raw),
        humantime::format_duration(keep.raw),
        humantime::format_duration(keep.rollups),
    )?;
    if r.converted {
        writeln!(out, "The database was rebuilt: pruning shrinks the file from now on.")?;
    }
    let size = &r.size;
    let reuse = if size.shrinks {
        format!("the file shrank by {}", mib(*bytes_returned))
    } else {
        "free space is reused by new rows (`tracker prune --vacuum` makes pruning shrink the file)".into()
    };
    writeln!(out, "Database: {}, of which {} free; {reuse}.", mib(size.file_bytes), mib(size.free_bytes))?;
    Ok(())
}
