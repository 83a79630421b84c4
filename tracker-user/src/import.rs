//! An import: a capture file through the capture source, the same pipeline as live capture
//! (naming, labels, the sweep) and the store, on the file's own clock, recorded in `imports`
//! so that the same bytes are recognised when imported again.

use std::{io::Read as _, path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;

use crate::{
    analysis::{entity::EntityTable, labels::Labeler},
    pipeline::{
        Namer,
        naming::DEFAULT_GRACE,
        sweep::{Sweeper, Timeouts},
    },
    sink::{Batch, Sink},
    source::{
        Source as _,
        capture::{
            CaptureCounts, CaptureSource,
            file::{CaptureError, CaptureReader},
        },
    },
    store::{Store, sources::EarlierImport},
    timefmt::KernelClock,
    wireguard::Devices,
};

/// How an import reads its files.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The `--source` name its rows go under.
    pub source: String,
    /// Addresses on the client side ([`crate::source::capture::DEFAULT_CLIENT_NETS`]).
    pub client_nets: Vec<IpNet>,
    /// Capture time between two sweeps: the daemon's default, so an import names and writes
    /// flows as the daemon would have.
    pub sweep_interval: Duration,
    pub timeouts: Timeouts,
    pub entities: Arc<EntityTable>,
}

/// What an import did.
#[derive(Debug)]
pub struct ImportSummary {
    pub counts: CaptureCounts,
    /// DNS exchanges written (a query with its response, or either alone).
    pub dns_exchanges: u64,
    /// Flow rows written.
    pub flows: u64,
    /// Unix ms of the first and last packet.
    pub span_ms: Option<(i64, i64)>,
    /// The damage that stopped reading; what came before it is stored.
    pub error: Option<CaptureError>,
    /// The same bytes were imported before, completely: nothing was read or written.
    pub skipped: Option<EarlierImport>,
}

/// How far an import has read, for a progress display.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub bytes: u64,
    pub total_bytes: u64,
    pub packets: u64,
}

/// Frames between two progress reports.
const PROGRESS_EVERY: u64 = 65_536;

/// The rows of an import go to its source; block counters and daemon facts are the live
/// interface's, so an import's batch writes none.
struct ImportSink<'a>(&'a mut Store);

impl Sink for ImportSink<'_> {
    fn write(&mut self, batch: &Batch<'_>) -> Result<()> {
        self.0.write(|w| {
            let w = w.for_source(batch.source);
            w.upsert_flows(batch.boot_id, batch.flows)?;
            w.insert_dns(batch.dns)
        })
    }
}

/// The SHA-256 of a file's bytes, lower-case hex: an import's identity.
pub fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// Imports one capture file into `store`. A file that is not a capture is refused before
/// anything is written; damage further in stops the reading, keeps what came before, and is
/// returned in the summary (and recorded with the import).
pub fn import_file(
    store: &mut Store,
    path: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportSummary> {
    let shown = path.display().to_string();
    let mut reader = CaptureReader::open(path).map_err(anyhow::Error::new)?;
    let total_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let sha256 = sha256_of(path)?;
    if let Some(earlier) = store.earlier_import(&sha256)? {
        if earlier.finished {
            return Ok(ImportSummary {
                counts: CaptureCounts::default(),
                dns_exchanges: 0,
                flows: 0,
                span_ms: None,
                error: None,
                skipped: Some(earlier),
            });
        }
        if earlier.source != opts.source {
            bail!(
                "{shown} was partly imported before as source {} (interrupted); import it again with \
                 --source {} to finish it: the rows it wrote are matched, not counted twice",
                earlier.source,
                earlier.source
            );
        }
    }
    let source_id = store.write(|w| {
        let id = w.import_source(&opts.source)?;
        w.import_started(&sha256, id, &shown, total_bytes)?;
        Ok(id)
    })?;

    let devices = store.devices()?;
    let peers: Vec<Vec<IpNet>> = devices.0.iter().map(|d| d.allowed_ips.clone()).collect();
    let mut namer = Namer::new(opts.client_nets.clone(), DEFAULT_GRACE);
    namer.labels = Labeler::new(opts.entities.clone());
    namer.flows.set_devices(Devices::new(&peers));
    // The boot id keeps an import's flow rows apart from every other source's: the same bytes
    // give the same rows, so an interrupted import run again overwrites what it wrote.
    let mut source = CaptureSource::new(format!("import:{}", &sha256[..32]), source_id, opts.client_nets.clone());
    let mut sweeper = Sweeper::new(opts.timeouts, 0);
    let interval_ns = opts.sweep_interval.as_nanos() as u64;
    let mut next_sweep_ns = 0u64;
    let mut first_ns = None;
    let mut flows_written = 0u64;
    let mut dns_written = 0u64;
    let mut sink = ImportSink(store);
    let mut error = None;
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        source.count(&frame);
        first_ns.get_or_insert(source.now_ns());
        if source.now_ns() >= next_sweep_ns {
            if next_sweep_ns != 0 {
                let (f, d) = sweep(&mut source, &mut namer, &mut sweeper, &mut sink)?;
                flows_written += f;
                dns_written += d;
            }
            next_sweep_ns = source.now_ns() + interval_ns;
        }
        if source.counts.frames % PROGRESS_EVERY == 0 {
            progress(Progress { bytes: reader.bytes_read(), total_bytes, packets: source.counts.frames });
        }
    }
    // The end of the capture is the end of every flow in it: a last sweep writes them all, and
    // the queries still waiting for an answer are written unanswered.
    let (f, d) = sweep(&mut source, &mut namer, &mut sweeper, &mut sink)?;
    flows_written += f;
    dns_written += d;
    let rest = namer.dns.take_records(None);
    let source_id = source.source_id();
    sink.0.write(|w| w.for_source(source_id).insert_dns(&rest))?;
    dns_written += rest.len() as u64;
    progress(Progress { bytes: reader.bytes_read(), total_bytes, packets: source.counts.frames });

    let to_ms = |ns: u64| KernelClock::UNIX.to_unix_ms(ns);
    let span_ms = first_ns.map(|f| (to_ms(f), to_ms(source.now_ns())));
    let why = error.as_ref().map(|e| e.to_string());
    sink.0.write(|w| w.import_progress(&sha256, source.counts.frames, span_ms, Some(why.as_deref())))?;
    Ok(ImportSummary {
        counts: source.counts,
        dns_exchanges: dns_written,
        flows: flows_written,
        span_ms,
        error,
        skipped: None,
    })
}

/// Hands the source's events to the namer and sweeps; returns the flow and DNS rows written.
fn sweep(
    source: &mut CaptureSource,
    namer: &mut Namer,
    sweeper: &mut Sweeper,
    sink: &mut ImportSink<'_>,
) -> Result<(u64, u64)> {
    source.drain_events(&mut |ev| namer.event(ev, KernelClock::UNIX));
    let s = sweeper.sweep(source, namer, sink)?;
    Ok((s.written as u64, s.dns_written as u64))
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
