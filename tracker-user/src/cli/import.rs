//! `tracker import-pcap` (capture files into the database, with progress and a summary) and
//! `tracker sources` (what was imported).

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use clap::Args;
use ipnet::IpNet;

use super::{Global, ListArgs, open_existing, output};
use crate::{
    import::{self, ImportOptions, ImportSummary, Progress},
    pipeline::sweep::Timeouts,
    source::capture::{DEFAULT_CLIENT_NETS, file::CaptureReader},
    store::Store,
    timefmt,
};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Capture files: pcap (either byte order, µs or ns) or pcapng, told apart by their first
    /// bytes, not their names. Link types: Ethernet (with VLAN tags), raw IP (TUN devices,
    /// WireGuard, PCAPdroid), Linux cooked (SLL, SLL2, `tcpdump -i any`) and BSD loopback.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The name to file the rows under; `tracker report --source NAME` shows them. Default:
    /// each file's name.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Addresses of the client side (repeat for several). A flow's client is the end inside
    /// these nets; when both or neither are, the end that sent its first packet (for TCP the
    /// SYN, so a capture that starts with a SYN-ACK still finds the client). Default: the
    /// private ranges (10/8, 172.16/12, 192.168/16, fc00::/7), CGNAT (100.64/10), link-local,
    /// and the tunnel as the database knows it (the live daemon's subnets, its devices). The
    /// nets given, and that tunnel, are also the VPN's own subnets: remotes there are "tunnel".
    #[arg(long = "client-net", value_name = "CIDR")]
    pub client_nets: Vec<IpNet>,
}

pub fn import_pcap(global: &Global, args: &ImportArgs) -> Result<()> {
    if let Some(name) = &args.source
        && (name.trim().is_empty() || name == "live")
    {
        bail!("--source {}: give the import a name of its own (\"live\" is the live interface's)", name);
    }
    // Every file is checked before the database is opened: a typo or a file that is not a
    // capture changes nothing.
    for f in &args.files {
        if !f.is_file() {
            bail!("{}: no such file (nothing was imported)", f.display());
        }
        CaptureReader::open(f).map_err(|e| anyhow::anyhow!("{e} (nothing was imported)"))?;
    }
    let entities = Arc::new(global.entity_table()?);
    let mut store = Store::open(&global.db)?;
    // The tunnel as tracker knows it: the live daemon's own subnets and its devices' addresses.
    let tunnel: Vec<IpNet> = store
        .local_nets()?
        .into_iter()
        .chain(store.devices()?.0.iter().flat_map(|d| d.allowed_ips.clone()))
        .map(|n| n.trunc())
        .collect();
    let given: Vec<IpNet> = args.client_nets.iter().map(IpNet::trunc).collect();
    let client_nets: Vec<IpNet> = if given.is_empty() {
        DEFAULT_CLIENT_NETS.iter().map(|n| n.parse().expect("a valid CIDR")).chain(tunnel.iter().copied()).collect()
    } else {
        given.clone()
    };
    let local_nets: Vec<IpNet> = given.into_iter().chain(tunnel).collect();
    let mut failed = 0;
    for path in &args.files {
        let name = args.source.clone().unwrap_or_else(|| {
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
        });
        let opts = ImportOptions {
            source: name.clone(),
            client_nets: client_nets.clone(),
            local_nets: local_nets.clone(),
            timeouts: Timeouts::default(),
            entities: entities.clone(),
            sweep_every: import::SWEEP_EVERY_FRAMES,
        };
        let mut shown = Shown::new(path.display().to_string());
        let summary = import::import_file(&mut store, path, &opts, &mut |p| shown.update(p));
        shown.finish();
        let summary = match summary {
            Ok(s) => s,
            Err(e) => {
                failed += 1;
                let _ = writeln!(std::io::stderr(), "tracker: {e:#}");
                continue;
            }
        };
        say(path, &name, &summary);
        if summary.error.is_some() {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} files could not be imported whole (see above)", args.files.len());
    }
    Ok(())
}

/// The summary of one file, on stdout; the damage that stopped it, on stderr.
fn say(path: &std::path::Path, source: &str, s: &ImportSummary) {
    let out = &mut std::io::stdout().lock();
    if let Some(e) = &s.skipped {
        let _ = writeln!(
            out,
            "{}: already imported on {} as source {} ({} packets, from {}); nothing was added.\n\
             See it with: tracker report --source {}",
            path.display(),
            timefmt::rfc3339(e.started_ms),
            e.source,
            e.packets,
            e.file,
            e.source
        );
        return;
    }
    let c = &s.counts;
    let span = s
        .span_ms
        .map_or_else(String::new, |(a, b)| format!(", captured {} to {}", timefmt::rfc3339(a), timefmt::rfc3339(b)));
    let _ = writeln!(
        out,
        "{}: {} packets read: {} IP packets in {} flows, {} DNS exchanges; {} frames skipped (not IP), \
         {} packets malformed{span}.\nSource {source}: tracker report --source {source}",
        path.display(),
        c.frames,
        c.ip_packets,
        c.flows_created,
        s.dns_exchanges,
        c.not_ip,
        c.malformed,
    );
    if let Some(e) = &s.error {
        let _ = writeln!(
            std::io::stderr(),
            "tracker: {e}\n  the {} packets before it are imported and kept; the rest of the file was not read",
            c.frames
        );
    }
}

/// Progress on stderr: a bar on a terminal, a plain line every few seconds otherwise (a log).
struct Shown {
    bar: Option<indicatif::ProgressBar>,
    file: String,
    started: Instant,
    last_line: Instant,
}

/// Between two plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Shown {
    fn new(file: String) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {per_sec} {eta} left")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        let now = Instant::now();
        Self { bar, file, started: now, last_line: now }
    }

    fn update(&mut self, p: Progress) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = p.packets as f64 / secs;
        if let Some(bar) = &self.bar {
            bar.set_length(p.total_bytes);
            bar.set_position(p.bytes);
            bar.set_message(format!("{}: {} packets, {:.0} packets/s", self.file, p.packets, rate));
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let left = if p.bytes > 0 && p.total_bytes > p.bytes {
                format!(", about {:.0} s left", secs * (p.total_bytes - p.bytes) as f64 / p.bytes as f64)
            } else {
                String::new()
            };
            let pct = if p.total_bytes > 0 { 100.0 * p.bytes as f64 / p.total_bytes as f64 } else { 0.0 };
            let _ = writeln!(
                std::io::stderr(),
                "{}: {pct:.0}% ({} of {} bytes), {} packets, {:.0} packets/s{left}",
                self.file,
                p.bytes,
                p.total_bytes,
                p.packets,
                rate
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub fn sources(global: &Global, args: &ListArgs) -> Result<()> {
    let store = open_existing(global)?;
    let rows = store.imports()?;
    const COLUMNS: &[&str] = &["source", "file", "packets", "first_packet", "last_packet", "imported", "state"];
    output::render(&mut std::io::stdout().lock(), args.format, COLUMNS, &rows)
}
