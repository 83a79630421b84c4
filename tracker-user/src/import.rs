//! An import: a capture file through the capture source, the same pipeline as live capture
//! (naming, labels, the sweep) and the store, on the file's own clock, recorded in `imports`
//! so that the same bytes are recognised when imported again.

use std::{io::Read as _, path::Path, sync::Arc};

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
            CaptureCounts, CaptureSource, Counted,
            file::{CaptureError, CaptureReader},
            mapped::Mapped,
        },
    },
    store::{DnsRecord, FlowRecord, Store, sources::EarlierImport},
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
    /// The VPN's own subnets, as the daemon's `--local-net` and interface addresses: remotes in
    /// them are `tunnel`, not `private`. The `--client-net`s the user gave, the subnets the
    /// daemon last watched (`meta.local_nets`) and the known devices' addresses; never the
    /// default private ranges.
    pub local_nets: Vec<IpNet>,
    pub timeouts: Timeouts,
    pub entities: Arc<EntityTable>,
    /// Frames between two sweeps at most ([`SWEEP_EVERY_FRAMES`]; tests sweep more often).
    pub sweep_every: u64,
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

/// A sweep's rows on their way to the writer thread, which files them under the import's
/// identity (known to it alone: it waits for the file's hash).
struct Rows {
    flows: Vec<FlowRecord>,
    dns: Vec<DnsRecord>,
}

/// How the writer thread ended.
enum Written<'a> {
    /// Every row handed over is written; the store goes back to the reading thread.
    Done(&'a mut Store, Identity),
    /// The same bytes were imported completely before: nothing was written.
    Skipped(EarlierImport),
}

/// Hands each sweep's rows to the writer thread, so SQLite writes while the next frames are
/// read. The rows of an import go to its source; block counters and daemon facts are the live
/// interface's, so an import writes none. A write that fails stops the writer; the next hand-off
/// then fails, and the import stops with the writer's error.
struct ToWriter(std::sync::mpsc::SyncSender<Rows>);

impl Sink for ToWriter {
    fn write(&mut self, batch: &Batch<'_>) -> Result<()> {
        let rows = Rows { flows: batch.flows.to_vec(), dns: batch.dns.to_vec() };
        self.0.send(rows).map_err(|_| anyhow::anyhow!("the database writer stopped"))
    }
}

/// Writes what the sweeps hand over, one transaction per sweep, until the sweeps are done.
/// The rows go without their roll-ups: the import makes those once, at its end.
fn write_rows(store: &mut Store, rows: std::sync::mpsc::Receiver<Rows>, id: &Identity) -> Result<()> {
    let boot_id = id.boot_id();
    for r in rows {
        store.write(|w| {
            let w = w.for_source(id.source_id).without_rollups();
            w.upsert_flows(&boot_id, &r.flows)?;
            w.insert_dns(&r.dns)
        })?;
    }
    Ok(())
}

/// SQLite's page cache for the rest of an import's connection, in KiB (its default is 2 MiB):
/// the flows' six indexes outgrow the default within the first sweep, and each page it then
/// evicts is written to the WAL in the middle of the transaction and read back for a later row.
const IMPORT_CACHE_KIB: i64 = 64 * 1024;
/// WAL pages after which a commit of the import checkpoints (SQLite's default is 1000). Each
/// checkpoint copies the WAL into the database and waits for the disk twice, on the writer's
/// thread, which is the one the import waits for: every 4 MiB that was three or four
/// checkpoints of about 25 ms per import of the bench capture. 64 MiB still bounds the WAL;
/// closing the import's connection checkpoints what is left, once.
const IMPORT_WAL_PAGES: i64 = 16 * 1024;

/// Sweeps handed to the writer thread that it has not written yet: a bound on the rows held.
const ROWS_IN_FLIGHT: usize = 2;

/// The XXH3-128 of a file's bytes, 32 lower-case hex digits: an import's identity. Not a
/// cryptographic hash, and it need not be: it tells a file imported before from a new one
/// (an accidental collision has odds of 2^-128), at memory speed. SHA-256 took as long as the
/// whole rest of an import of a 650 MB capture. The file is mapped where it can be, as the
/// reader maps it: copying it out of the page cache cost twice the hashing.
pub fn content_hash(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    if let Ok(m) = Mapped::new(&file) {
        const CHUNK: usize = 16 << 20;
        let bytes = m.bytes();
        for at in (0..bytes.len()).step_by(CHUNK) {
            let chunk = at..(at + CHUNK).min(bytes.len());
            hasher.update(&bytes[chunk.clone()]);
            m.release(chunk);
        }
        return Ok(format!("{:032x}", hasher.digest128()));
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

/// Frames between two sweeps at most: the flow table, the namer's answers and the pending DNS
/// queries are bounded by what this many frames can add. A sweep writes what changed, and most
/// flows end within this many frames, so an import costs about one write per flow (a sweep every
/// 2 s of capture time, as the daemon's, cost twelve times the import); the writes go on on a
/// second thread while the next frames are read.
pub const SWEEP_EVERY_FRAMES: u64 = 1 << 17;
/// Live flows that make a sweep due early: the kernel table's size.
const SWEEP_AT_FLOWS: usize = tracker_common::defaults::FLOW_ENTRIES as usize;

/// Who an import is, once its file's hash is known: the bytes' hash and its rows' source.
struct Identity {
    content: String,
    source_id: i64,
}

impl Identity {
    /// What its flow rows are keyed under instead of a kernel boot: the same bytes give the
    /// same rows, so an interrupted import read again overwrites what it wrote.
    fn boot_id(&self) -> String {
        format!("import:{}", &self.content[..32])
    }
}

/// Imports one capture file into `store`. A file that is not a capture is refused before
/// anything is written; damage further in stops the reading, keeps what came before, and is
/// returned in the summary (and recorded with the import).
///
/// The file is hashed ([`content_hash`]) first: bytes imported completely before are left as
/// they were. Sweeps hand their rows to a writer thread, so SQLite writes while frames are read.
pub fn import_file(
    store: &mut Store,
    path: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportSummary> {
    let shown = path.display().to_string();
    let mut reader = CaptureReader::open(path).map_err(anyhow::Error::new)?;
    let total_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let hashing = std::thread::spawn({
        let path = path.to_owned();
        move || content_hash(&path)
    });
    let mut hashing = Some(hashing);

    let devices = store.devices()?;
    let peers: Vec<Vec<IpNet>> = devices.0.iter().map(|d| d.allowed_ips.clone()).collect();
    let mut namer = Namer::new(opts.local_nets.clone(), DEFAULT_GRACE);
    namer.labels = Labeler::new(opts.entities.clone());
    namer.flows.set_devices(Devices::new(&peers));
    let mut source = CaptureSource::new(format!("import of {shown}"), opts.client_nets.clone(), opts.timeouts);
    let mut sweeper = Sweeper::new(opts.timeouts, 0);
    let mut first_ns = None;
    let (mut flows_written, mut dns_written) = (0u64, 0u64);
    let (mut next_sweep, mut sweep_at_flows) = (opts.sweep_every, SWEEP_AT_FLOWS);
    let mut error = None;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Rows>(ROWS_IN_FLIGHT);
    let mut sink = ToWriter(tx);
    std::thread::scope(|scope| -> Result<ImportSummary> {
        // The store is the writer thread's until the sweeps are done. It waits for the file's
        // hash before it writes anything, while this thread reads on: the rows of the sweeps
        // meanwhile wait in the channel, with the import's identity filled in by the writer.
        let shown_w = shown.clone();
        let writer = std::thread::Builder::new()
            .name("import-writer".into())
            .spawn_scoped(scope, move || -> Result<Written<'_>> {
                let id = match identify(store, &mut hashing, opts, &shown_w, total_bytes)? {
                    Ok(id) => id,
                    Err(earlier) => return Ok(Written::Skipped(earlier)),
                };
                store.conn().pragma_update(None, "cache_size", -IMPORT_CACHE_KIB)?;
                store.conn().pragma_update(None, "wal_autocheckpoint", IMPORT_WAL_PAGES)?;
                write_rows(store, rx, &id)?;
                Ok(Written::Done(store, id))
            })
            .context("starting the database writer")?;
        let mut read = || -> Result<()> {
            loop {
                let frame = match reader.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        error = Some(e);
                        return Ok(());
                    }
                };
                let mut counted = source.count(&frame);
                let due = source.counts.frames >= next_sweep || source.live() >= sweep_at_flows;
                if counted == Counted::Stale || due {
                    let (f, d) = sweep(&mut source, &mut namer, &mut sweeper, &mut sink)?;
                    (flows_written, dns_written) = (flows_written + f, dns_written + d);
                    next_sweep = source.counts.frames + opts.sweep_every;
                    sweep_at_flows = SWEEP_AT_FLOWS.max(2 * source.live());
                    if counted == Counted::Stale {
                        counted = source.count(&frame);
                        debug_assert_ne!(counted, Counted::Stale, "the sweep ended the idle flow");
                    }
                }
                first_ns.get_or_insert(source.now_ns());
                if source.counts.frames.is_multiple_of(PROGRESS_EVERY) {
                    progress(Progress { bytes: reader.bytes_read(), total_bytes, packets: source.counts.frames });
                }
            }
        };
        let read = read();
        // The end of the capture is the end of every flow in it: a last sweep writes them all,
        // and the queries still waiting for an answer are written unanswered.
        let last = read.and_then(|()| sweep(&mut source, &mut namer, &mut sweeper, &mut sink));
        drop(sink);
        let (store, id) = match writer.join().map_err(|_| anyhow::anyhow!("the database writer panicked"))?? {
            Written::Done(store, id) => (store, id),
            // The writer stopped taking rows, so the reading stopped too: nothing was written.
            Written::Skipped(earlier) => return Ok(ImportSummary::skipped(earlier)),
        };
        let (f, d) = last?;
        (flows_written, dns_written) = (flows_written + f, dns_written + d);
        let rest = namer.dns.take_records(None);
        dns_written += rest.len() as u64;
        progress(Progress { bytes: reader.bytes_read(), total_bytes, packets: source.counts.frames });

        let to_ms = |ns: u64| KernelClock::UNIX.to_unix_ms(ns);
        let span_ms = first_ns.map(|f| (to_ms(f), to_ms(source.now_ns())));
        let why = error.as_ref().map(|e| e.to_string());
        // The roll-ups the reports read, summed once from all of the source's rows (an import
        // read again after an interruption makes them whole too), in the transaction that says
        // the import ended: a report never sees this import's rows half summed.
        store.write(|w| {
            let w = w.for_source(id.source_id);
            w.without_rollups().insert_dns(&rest)?;
            w.rebuild_rollups(id.source_id)?;
            w.import_progress(&id.content, source.counts.frames, span_ms, Some(why.as_deref()))
        })?;
        Ok(ImportSummary {
            counts: source.counts,
            dns_exchanges: dns_written,
            flows: flows_written,
            span_ms,
            error,
            skipped: None,
        })
    })
}

impl ImportSummary {
    fn skipped(earlier: EarlierImport) -> Self {
        Self {
            counts: CaptureCounts::default(),
            dns_exchanges: 0,
            flows: 0,
            span_ms: None,
            error: None,
            skipped: Some(earlier),
        }
    }
}

/// Waits for the file's hash and registers the import, or returns the complete earlier import
/// of the same bytes (nothing is then written).
fn identify(
    store: &mut Store,
    hashing: &mut Option<std::thread::JoinHandle<Result<String>>>,
    opts: &ImportOptions,
    shown: &str,
    total_bytes: u64,
) -> Result<std::result::Result<Identity, EarlierImport>> {
    let content =
        hashing.take().expect("identified once").join().map_err(|_| anyhow::anyhow!("hashing {shown} failed"))??;
    if let Some(earlier) = store.earlier_import(&content)? {
        if earlier.finished {
            return Ok(Err(earlier));
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
        w.import_started(&content, id, shown, total_bytes)?;
        Ok(id)
    })?;
    Ok(Ok(Identity { content, source_id }))
}

/// Hands the source's events to the namer and sweeps; returns the flow and DNS rows written.
fn sweep(
    source: &mut CaptureSource,
    namer: &mut Namer,
    sweeper: &mut Sweeper,
    sink: &mut ToWriter,
) -> Result<(u64, u64)> {
    source.drain_events(&mut |ev| namer.event(ev, KernelClock::UNIX));
    let s = sweeper.sweep(source, namer, sink)?;
    Ok((s.written as u64, s.dns_written as u64))
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
