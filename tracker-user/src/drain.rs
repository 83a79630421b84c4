//! The daemon's data path out of the kernel: drains the event ring as records arrive, sweeps the
//! flow table into SQLite on an interval (cumulative values, so nothing is double counted),
//! copies block counters, and flushes once more on shutdown.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf};
use tokio::io::unix::AsyncFd;
use tracker_common::{
    Counter, EventHeader, FAMILY_V4, FlowKey, FlowKeyV4, FlowStats, PayloadEvent, event_kind, names,
};

use crate::{
    analysis::{addr::AddrClass, names::FlowName},
    blocking::{self, KernelBlocks},
    daemon::{Checked, Upkeep},
    naming::{self, Namer},
    wireguard::{self, Devices},
    store::{FlowRecord, Store},
    timefmt::{self, KernelClock},
};

/// The kernel tables the daemon sweeps.
pub struct Tables {
    pub flows: FlowTables,
    pub counters: PerCpuArray<MapData, u64>,
    pub blocks: KernelBlocks,
}

impl Tables {
    /// Takes the tables and the event ring out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<(Self, RingBuf<MapData>)> {
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        let tables = Self {
            flows: FlowTables::from_maps(take(names::FLOWS_V4)?, take(names::FLOWS_V6)?)?,
            counters: PerCpuArray::try_from(take(names::COUNTERS)?)?,
            blocks: KernelBlocks::from_maps(take(names::BLOCK_V4)?, take(names::BLOCK_V6)?)?,
        };
        Ok((tables, RingBuf::try_from(take(names::EVENTS)?)?))
    }
}

/// The kernel's flow tables, one per address family (the IPv4 one has a shorter key, see
/// [`FlowKeyV4`]), read and written as one table keyed by [`FlowKey`].
pub struct FlowTables {
    v4: PerCpuHashMap<MapData, FlowKeyV4, FlowStats>,
    v6: PerCpuHashMap<MapData, FlowKey, FlowStats>,
}

/// One flow of [`FlowTables`]: its key and its per-CPU values.
pub type FlowEntry = (FlowKey, PerCpuValues<FlowStats>);

impl FlowTables {
    /// From the `FLOWS_V4` and `FLOWS_V6` maps of a loaded object or of the pins.
    pub fn from_maps(v4: Map, v6: Map) -> Result<Self> {
        Ok(Self {
            v4: PerCpuHashMap::try_from(v4).with_context(|| format!("map {}", names::FLOWS_V4))?,
            v6: PerCpuHashMap::try_from(v6).with_context(|| format!("map {}", names::FLOWS_V6))?,
        })
    }

    /// Every flow, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = Result<FlowEntry, MapError>> + '_ {
        let v4 = self.v4.iter().map(|r| r.map(|(k, v)| (FlowKey::from(k), v)));
        v4.chain(self.v6.iter())
    }

    /// Every flow's key.
    pub fn keys(&self) -> impl Iterator<Item = Result<FlowKey, MapError>> + '_ {
        self.v4.keys().map(|r| r.map(FlowKey::from)).chain(self.v6.keys())
    }

    /// One flow's per-CPU values.
    pub fn get(&self, key: &FlowKey) -> Result<PerCpuValues<FlowStats>, MapError> {
        if key.family == FAMILY_V4 { self.v4.get(&key.to_v4(), 0) } else { self.v6.get(key, 0) }
    }

    /// Deletes one flow.
    pub fn remove(&mut self, key: &FlowKey) -> Result<(), MapError> {
        if key.family == FAMILY_V4 { self.v4.remove(&key.to_v4()) } else { self.v6.remove(key) }
    }
}

/// Sums a per-CPU counter array into one value per [`Counter`].
pub fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<Vec<(Counter, u64)>> {
    let read = |c: Counter| -> Result<u64> {
        let v = map.get(&(c as u32), 0).with_context(|| format!("counter {}", c.name()))?;
        Ok(v.iter().sum())
    };
    Counter::ALL
        .iter()
        .map(|&c| {
            let v = match c {
                // Not counted by the kernel: every packet is passed or dropped.
                Counter::Seen => read(Counter::Passed)? + read(Counter::Dropped)?,
                _ => read(c)?,
            };
            Ok((c, v))
        })
        .collect()
}

/// Folds one flow's per-CPU values into one.
pub fn merge_cpus(values: &PerCpuValues<FlowStats>) -> FlowStats {
    let mut m = FlowStats::default();
    for v in values.iter() {
        let FlowStats {
            packets_up,
            bytes_up,
            packets_down,
            bytes_down,
            first_seen_ns,
            last_seen_ns,
            tcp_flags,
            payload_sent,
            _pad,
        } = *v;
        m.packets_up += packets_up;
        m.bytes_up += bytes_up;
        m.packets_down += packets_down;
        m.bytes_down += bytes_down;
        if first_seen_ns != 0 && (m.first_seen_ns == 0 || first_seen_ns < m.first_seen_ns) {
            m.first_seen_ns = first_seen_ns;
        }
        m.last_seen_ns = m.last_seen_ns.max(last_seen_ns);
        m.tcp_flags |= tcp_flags;
        m.payload_sent |= payload_sent;
    }
    m
}

/// Textual addresses of a key.
pub fn key_addrs(k: &FlowKey) -> (IpAddr, IpAddr) {
    let conv = |a: [u8; 16]| -> IpAddr {
        if k.family == FAMILY_V4 {
            IpAddr::from([a[0], a[1], a[2], a[3]])
        } else {
            IpAddr::from(a)
        }
    };
    (conv(k.client), conv(k.remote))
}

/// Converts a kernel entry for storage.
pub fn flow_record(
    k: &FlowKey,
    s: &FlowStats,
    clock: KernelClock,
    name: FlowName,
    remote_class: AddrClass,
) -> FlowRecord {
    let (client, remote) = key_addrs(k);
    FlowRecord {
        kernel_first_ns: s.first_seen_ns,
        client,
        remote,
        protocol: k.protocol,
        client_port: k.client_port,
        remote_port: k.remote_port,
        packets_up: s.packets_up,
        bytes_up: s.bytes_up,
        packets_down: s.packets_down,
        bytes_down: s.bytes_down,
        tcp_flags: s.tcp_flags,
        first_seen_ms: clock.to_unix_ms(s.first_seen_ns),
        last_seen_ms: clock.to_unix_ms(s.last_seen_ns),
        name,
        remote_class,
    }
}

/// What a sweep did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub live: usize,
    pub written: usize,
}

/// Writes flow entries that changed since the last sweep.
pub struct Sweeper {
    boot_id: String,
    /// (first_seen_ns, packets_up, packets_down) last written per key: an unchanged entry is
    /// skipped. The packet counters, not the last-seen stamp, tell a change: the kernel's
    /// coarse clock advances once per tick (4 ms at HZ=250), so a packet in the same tick as the
    /// last sweep leaves the stamps as they were.
    /// Updated only when a sweep's writes succeed, so a failed sweep (a full disk) is retried
    /// whole by the next: counters are cumulative, so nothing is lost or counted twice.
    written: HashMap<FlowKey, (u64, u64, u64)>,
    /// DNS exchanges and renamed flows taken from the namer but not yet written.
    pending_dns: Vec<crate::store::DnsRecord>,
    pending_renamed: std::collections::HashSet<FlowKey>,
    /// DNS exchanges dropped because writes failed for so long that [`PENDING_DNS_MAX`] were
    /// waiting.
    pub dns_dropped: u64,
}

/// DNS exchanges kept while the database cannot be written; past this the oldest are dropped
/// (and counted), so a long outage cannot grow the daemon without bound.
pub const PENDING_DNS_MAX: usize = 100_000;

impl Sweeper {
    pub fn new() -> Result<Self> {
        Ok(Self {
            boot_id: timefmt::boot_id()?,
            written: HashMap::new(),
            pending_dns: Vec::new(),
            pending_renamed: Default::default(),
            dns_dropped: 0,
        })
    }

    /// Forgets what was written: the next sweep writes every live flow (into a new database).
    pub fn forget_written(&mut self) {
        self.written.clear();
    }

    /// Writes changed (or renamed) flows with their names, the DNS exchanges ready for the
    /// log, block counters and the DNS counters, then lets the namer forget evicted flows.
    /// `anchor` converts kernel stamps for the namer (see [`run_loop`]).
    pub fn sweep(
        &mut self,
        maps: &Tables,
        store: &mut Store,
        namer: &mut Namer,
        anchor: KernelClock,
    ) -> Result<SweepStats> {
        let clock = KernelClock::now();
        // The namer's times all come from the anchor, so a step of the wall clock (NTP at boot)
        // cannot expire every answer or keep queries pending forever.
        let now = anchor.to_time(timefmt::kernel_ns_now());
        self.pending_renamed.extend(namer.take_renamed());
        let renamed = &self.pending_renamed;
        self.pending_dns.extend(namer.take_dns_records(Some(now)));
        if self.pending_dns.len() > PENDING_DNS_MAX {
            let extra = self.pending_dns.len() - PENDING_DNS_MAX;
            self.pending_dns.drain(..extra);
            self.dns_dropped += extra as u64;
        }
        let mut records = Vec::new();
        let mut seen = HashMap::with_capacity(self.written.len());
        for item in maps.flows.iter() {
            let (key, values) = item.context("reading the flow table")?;
            let s = merge_cpus(&values);
            if s.first_seen_ns == 0 {
                continue; // created on another CPU this instant; next sweep has it
            }
            let stamp = (s.first_seen_ns, s.packets_up, s.packets_down);
            if self.written.get(&key) != Some(&stamp) || renamed.contains(&key) {
                let first_seen = anchor.to_time(s.first_seen_ns);
                let (name, class) = namer.name_flow(&key, first_seen, now);
                records.push(flow_record(&key, &s, clock, name, class));
            }
            seen.insert(key, stamp);
        }
        store.upsert_flows(&self.boot_id, &records)?;
        store.insert_dns(&self.pending_dns)?;
        self.pending_dns.clear();
        self.pending_renamed.clear();
        blocking::sync_counters(store, &maps.blocks, clock)?;
        let dns = namer.stats();
        store.update_daemon_facts(&[
            (naming::facts::DNS_MESSAGES, dns.messages.to_string()),
            (naming::facts::DNS_MALFORMED, dns.malformed.to_string()),
        ])?;
        namer.retain(|k| seen.contains_key(k), now);
        let stats = SweepStats { live: seen.len(), written: records.len() };
        // Entries the LRU evicted drop out of the memo with this assignment.
        self.written = seen;
        Ok(stats)
    }
}

/// A decoded ring-buffer record.
#[derive(Debug)]
pub enum Event<'a> {
    FlowNew(EventHeader),
    BlockHit(EventHeader),
    /// DNS message or first payload: the header and the captured bytes.
    Payload(EventHeader, u32, &'a [u8]),
}

/// Decodes one ring record; `None` for a record too short for its kind (never expected; a
/// newer kernel object with an older daemon, say).
pub fn decode(bytes: &[u8]) -> Option<Event<'_>> {
    if bytes.len() < size_of::<EventHeader>() {
        return None;
    }
    // SAFETY: length checked; EventHeader is plain data valid for any bits; unaligned read.
    let h: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    match h.kind {
        event_kind::FLOW_NEW => Some(Event::FlowNew(h)),
        event_kind::BLOCK_HIT => Some(Event::BlockHit(h)),
        event_kind::DNS | event_kind::FIRST_PAYLOAD => {
            let data_off = std::mem::offset_of!(PayloadEvent, data);
            if bytes.len() < data_off {
                return None;
            }
            let field = |off: usize| u32::from_ne_bytes(bytes[off..off + 4].try_into().ok()?).into();
            let payload_len: Option<u32> = field(std::mem::offset_of!(PayloadEvent, payload_len));
            let captured: Option<u32> = field(std::mem::offset_of!(PayloadEvent, captured_len));
            let captured = (captured? as usize).min(tracker_common::PAYLOAD_CAP);
            let data = bytes.get(data_off..data_off + captured)?;
            Some(Event::Payload(h, payload_len?, data))
        }
        _ => None,
    }
}

/// Options of the daemon's loop.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    pub sweep_interval: Duration,
    /// The watched interface, whose WireGuard peers tell which addresses are one device.
    pub iface: String,
}

/// How often the WireGuard peer list is read again (peers are added while the daemon runs).
const PEERS_INTERVAL: Duration = Duration::from_secs(30);

/// Reads the interface's WireGuard peers into the namer; a failure is logged, not fatal.
pub fn refresh_devices(namer: &mut Namer, iface: &str) {
    match wireguard::peers(iface) {
        Ok(peers) => namer.set_devices(Devices::new(&peers.unwrap_or_default())),
        Err(e) => tracing::warn!("reading the WireGuard peers of {iface}: {e:#}"),
    }
}

/// Runs until SIGINT, SIGTERM or SIGHUP: drains events, sweeps on the interval, flushes at the
/// end. A sweep that cannot write (a full disk, a database deleted under it) is logged and
/// retried at the next interval, never a reason to stop: the kernel keeps counting and
/// blocking meanwhile, and the daemon catches up when writing works again.
pub async fn run_loop(
    tables: &Tables,
    events: RingBuf<MapData>,
    store: &mut Store,
    namer: &mut Namer,
    upkeep: &mut Upkeep,
    opts: &LoopOptions,
) -> Result<()> {
    // SAFETY: the ring's fd is owned by the RingBuf, which the AsyncFd owns: it stays open and
    // unchanged for the AsyncFd's whole life.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("polling the event ring: {e}"))?;
    let mut sweeper = Sweeper::new()?;
    // One conversion of kernel stamps for every event the namer sees: per-batch conversions
    // disagree by a millisecond now and then, enough to put a flow before the DNS answer that
    // caused it.
    let anchor = KernelClock::now();
    let mut peers_tick = tokio::time::interval(PEERS_INTERVAL);
    peers_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(opts.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut handled = 0u64;
    let mut lost = RingLoss::default();
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the event ring")?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    handle_event(&item, namer, anchor);
                    handled += 1;
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                if upkeep.check(store, &tables.blocks) == Checked::NewDatabase {
                    sweeper.forget_written();
                }
                sweep_once(&mut sweeper, tables, store, namer, upkeep, anchor, handled);
                lost.check(&tables.counters);
            }
            _ = peers_tick.tick() => refresh_devices(namer, &opts.iface),
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: flushing and stopping"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: flushing and stopping"); break; }
            // A closed terminal, or a service manager's reload: nothing to reload yet, so stop
            // cleanly like SIGTERM rather than die silently as the default action would.
            _ = sighup.recv() => { tracing::info!("SIGHUP: flushing and stopping"); break; }
        }
    }
    // Drain what is left, then one last sweep so nothing counted is left unwritten.
    let ring = ring.get_mut();
    while let Some(item) = ring.next() {
        handle_event(&item, namer, anchor);
    }
    upkeep.check(store, &tables.blocks);
    let s = sweeper.sweep(tables, store, namer, anchor);
    let s = s.and_then(|s| store.insert_dns(&namer.take_dns_records(None)).map(|()| s));
    match s {
        Ok(s) => tracing::info!(flows_written = s.written, live = s.live, "final flush done"),
        Err(e) => tracing::error!(
            "the final flush could not be written: {e:#}; the kernel's counts stay in its tables \
             until the next start"
        ),
    }
    Ok(())
}

/// One sweep, its failure logged (rate-limited by `upkeep`) and left to the next to retry.
fn sweep_once(
    sweeper: &mut Sweeper,
    tables: &Tables,
    store: &mut Store,
    namer: &mut Namer,
    upkeep: &mut Upkeep,
    anchor: KernelClock,
    handled: u64,
) {
    match sweeper.sweep(tables, store, namer, anchor) {
        Ok(s) => {
            upkeep.write_succeeded(store);
            tracing::debug!(live = s.live, written = s.written, events = handled, "swept");
        }
        Err(e) => upkeep.write_failed(&e),
    }
}

/// Notices ring records lost (the ring was full: the daemon fell behind, or was stopped) and
/// says what that costs.
#[derive(Default)]
struct RingLoss {
    /// The count at the last check; `None` before the first (the pinned counter keeps what an
    /// earlier daemon lost, which was reported then).
    seen: Option<u64>,
}

impl RingLoss {
    fn check(&mut self, counters: &PerCpuArray<MapData, u64>) {
        let Ok(values) = counters.get(&(Counter::RingLost as u32), 0) else { return };
        let total: u64 = values.iter().sum();
        if let Some(seen) = self.seen
            && total > seen
        {
            tracing::warn!(
                lost = total - seen, total,
                "event ring full: records lost. Flows are still counted in full; lost are the \
                 DNS messages and first payloads that name flows, and new-flow notices"
            );
        }
        self.seen = Some(total);
    }
}

fn handle_event(bytes: &[u8], namer: &mut Namer, clock: KernelClock) {
    let at = |h: &EventHeader| clock.to_time(h.ts_ns);
    match decode(bytes) {
        Some(Event::FlowNew(h)) => {
            let (c, r) = key_addrs(&h.key);
            tracing::debug!(client = %c, remote = %r, proto = h.key.protocol, port = h.key.remote_port, "new flow");
            namer.flow_new(&h.key, at(&h));
        }
        Some(Event::BlockHit(h)) => {
            let (c, r) = key_addrs(&h.key);
            tracing::info!(rule = h.rule_id, client = %c, remote = %r, port = h.key.remote_port, "blocked");
        }
        Some(Event::Payload(h, len, data)) => {
            tracing::trace!(kind = h.kind, len, captured = data.len(), "payload");
            if h.kind == event_kind::DNS {
                namer.dns_message(&h, data, at(&h));
            } else {
                namer.first_payload(&h, data, at(&h));
            }
        }
        None => tracing::warn!(len = bytes.len(), "undecodable ring record"),
    }
}
