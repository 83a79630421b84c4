//! The daemon's loop: drains the kernel source's events into the namer on a short timer, sweeps
//! on the sweep interval (source -> pipeline -> store), keeps the pins and database in place,
//! follows the interface when it is made anew, and flushes once more on shutdown.

use std::{collections::HashSet, time::Duration};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuArray};
use tracker_common::Counter;

use super::{
    Checked, Upkeep,
    follow::{Followed, Follower},
    learned::{Learned, Learner},
};
use crate::{
    blocking,
    kernel::{Tables, netlink::LinkNotices},
    pipeline::{
        Namer,
        sweep::{Sweeper, Timeouts},
    },
    rules,
    source::{Source as _, kernel::KernelSource},
    store::{Store, blocks::RuleKind, retention::Retention},
    timefmt::{self, KernelClock},
    wireguard::{self, Devices},
};

/// Options of the daemon's loop.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    pub sweep_interval: Duration,
    /// The watched interface, whose WireGuard peers tell which addresses are one device.
    pub iface: String,
    /// When flows have ended.
    pub timeouts: Timeouts,
    /// Flows earlier daemons deleted from these kernel tables.
    pub flows_ended_before: u64,
    /// How long rows are kept ([`PRUNE_INTERVAL`]).
    pub retention: Retention,
}

/// How often the daemon prunes rows past their retention, the first time this long after it
/// starts (a restart loop does not prune on every start).
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
const FIRST_PRUNE: Duration = Duration::from_secs(60);

/// How often the WireGuard peer list is read again (peers are added while the daemon runs).
const PEERS_INTERVAL: Duration = Duration::from_secs(30);
/// The longest a ring record waits to be read when the kernel does not force a wakeup. The
/// kernel submits records without waking the daemon (a wakeup per record cost microseconds of
/// IPI in a VM, more than the record); at this interval an idle daemon's check of an empty ring
/// costs nothing measurable, and at 10,000 records a second a drain reads about 1,000.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Reads the interface's WireGuard peers into the namer and the store's device list; a failure
/// is logged (once, [`wireguard::log_once`]), not fatal.
pub fn refresh_devices(namer: &mut Namer, store: &mut Store, iface: &str) {
    let read = wireguard::peers(iface);
    wireguard::log_once(iface, &read);
    // Unreadable: the devices stay as last read.
    let Ok(peers) = read else { return };
    let peers = peers.unwrap_or_default();
    namer.flows.set_devices(Devices::new(&wireguard::allowed_ips(&peers)));
    if let Err(e) = store.write(|w| w.upsert_devices(&peers, crate::timefmt::now_ms())) {
        tracing::warn!("storing the WireGuard peers of {iface}: {e:#}");
    }
}

/// Runs until SIGINT, SIGTERM or SIGHUP: drains events, sweeps on the interval, flushes at the
/// end. A sweep that cannot write (a full disk, a database deleted under it) is logged and
/// retried at the next interval, never a reason to stop: the kernel keeps counting and
/// blocking meanwhile, and the daemon catches up when writing works again.
pub async fn run_loop(
    source: &mut KernelSource,
    store: &mut Store,
    namer: &mut Namer,
    upkeep: &mut Upkeep,
    follower: &mut Follower,
    opts: &LoopOptions,
) -> Result<()> {
    let wakeups = source.wakeups()?;
    // Without notices (a kernel or sandbox refusing the socket) the interface is still looked
    // at every sweep.
    let notices = match LinkNotices::open() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!("no link notices ({e}): {} is looked at every sweep instead", opts.iface);
            None
        }
    };
    let link_changed = || async {
        match &notices {
            Some(n) => n.changed().await,
            None => std::future::pending().await,
        }
    };
    let mut sweeper = Sweeper::new(opts.timeouts, opts.flows_ended_before);
    let anchor = source.anchor();
    let mut peers_tick = tokio::time::interval(PEERS_INTERVAL);
    peers_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(opts.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rules_tick = tokio::time::interval(RULES_INTERVAL);
    rules_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune_tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_PRUNE, PRUNE_INTERVAL);
    prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruner = Pruner::default();
    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut handled = 0u64;
    let mut lost = RingLoss::default();
    let mut learner = Learner::default();
    namer.sightings = Some(Vec::new());
    match learner.adopt(&source.tables.blocks, &source.tables.names) {
        Ok(n) if n > 0 => tracing::info!(entries = n, "kept the addresses and names learned for name rules before"),
        Ok(_) => {}
        Err(e) => tracing::warn!("reading the learned addresses: {e:#}"),
    }
    // Attached, rules applied, the ring about to be read: what depends on tracker may start.
    super::notify::notify(&format!("READY=1\nSTATUS=counting and blocking on {}", opts.iface));
    loop {
        tokio::select! {
            guard = wakeups.readable() => {
                guard.context("waiting on the event ring")?.clear_ready();
                handled += drain(source, namer, anchor, &mut learner);
            }
            _ = drain_tick.tick() => handled += drain(source, namer, anchor, &mut learner),
            changed = link_changed() => {
                if let Err(e) = changed {
                    tracing::warn!("reading link notices: {e}");
                }
                follow_iface(follower, upkeep, store, namer, &opts.iface);
            }
            _ = tick.tick() => {
                // Events first: a DNS answer read now names the flows this sweep writes.
                handled += drain(source, namer, anchor, &mut learner);
                if upkeep.check(store, &source.tables.blocks) == Checked::NewDatabase {
                    sweeper.forget_written();
                }
                follow_iface(follower, upkeep, store, namer, &opts.iface);
                match sweeper.sweep(source, namer, store) {
                    Ok(s) => {
                        upkeep.write_succeeded(store);
                        tracing::debug!(live = s.live, written = s.written, ended = s.ended, events = handled, "swept");
                    }
                    Err(e) => upkeep.write_failed(&e),
                }
                lost.check(&source.tables.counters);
            }
            _ = peers_tick.tick() => {
                let before = device_addresses(store);
                refresh_devices(namer, store, &opts.iface);
                if device_addresses(store) != before {
                    follow_devices(store, &mut source.tables);
                }
            }
            _ = rules_tick.tick() => {
                end_expired(store, &mut source.tables);
                follow_rules(store, &mut source.tables, namer, &mut learner);
            }
            _ = prune_tick.tick() => pruner.start(store.path(), opts.retention),
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: flushing and stopping"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: flushing and stopping"); break; }
            // A closed terminal, or a service manager's reload: nothing to reload yet, so stop
            // cleanly like SIGTERM rather than die silently as the default action would.
            _ = sighup.recv() => { tracing::info!("SIGHUP: flushing and stopping"); break; }
        }
    }
    super::notify::notify("STOPPING=1\nSTATUS=flushing to the database");
    // Drain what is left, then one last sweep so nothing counted is left unwritten, and every
    // query still waiting for its answer.
    drain(source, namer, anchor, &mut learner);
    upkeep.check(store, &source.tables.blocks);
    let s = sweeper.sweep(source, namer, store);
    let s = s.and_then(|s| store.insert_dns(&namer.dns.take_records(None)).map(|()| s));
    match s {
        Ok(s) => tracing::info!(flows_written = s.written, live = s.live, "final flush done"),
        Err(e) => tracing::error!(
            "the final flush could not be written: {e:#}; the kernel's counts stay in its tables \
             until the next start"
        ),
    }
    Ok(())
}

/// Follows the interface if it was made anew ([`Follower::check`]): the new links are the pins
/// to keep, the new wireguard-go's peers are read, and `tracker status` says where it runs.
fn follow_iface(follower: &mut Follower, upkeep: &mut Upkeep, store: &mut Store, namer: &mut Namer, iface: &str) {
    let Followed { attached, urls } = follower.check();
    if attached.is_some() {
        if let Err(e) = upkeep.record_pins() {
            tracing::error!("recording the new links' pins: {e:#}");
        }
        refresh_devices(namer, store, iface);
    }
    if attached.is_some() || urls.is_some() {
        upkeep.update_facts(store, |facts| {
            if let Some(mode) = attached {
                facts.xdp_mode = Some(mode.as_str().into());
            }
            if let Some(urls) = urls {
                facts.dashboard = Some(urls.join(" "));
            }
        });
    }
}

/// How often the daemon looks for block rules whose `--for` time is up. The kernel stops
/// enforcing them on time by itself; this marks them expired, takes their entries out and lets
/// a rule they hid (a list under an ended domain rule) take its keys back.
const RULES_INTERVAL: Duration = Duration::from_millis(500);

/// Ends the rules whose time is up (marked `expired`) and takes them out of the kernel, in one
/// transaction; a failure is logged and tried again at the next tick.
pub fn end_expired(store: &mut Store, tables: &mut Tables) {
    let now = timefmt::now_ms();
    match store.next_expiry() {
        Ok(Some(t)) if t <= now => {}
        Ok(_) => return,
        Err(e) => return tracing::warn!("reading the block rules' ends: {e:#}"),
    }
    let devices = match store.devices() {
        Ok(d) => d,
        Err(e) => return tracing::warn!("reading the devices for the block rules: {e:#}"),
    };
    let ended = store.end_expired_then(now, |w, ended| {
        if ended.iter().any(|r| !r.kind.is_name()) {
            blocking::reconcile_in(w.conn(), &mut tables.blocks)?;
        }
        if ended.iter().any(|r| r.kind.is_name()) {
            rules::kernel::reconcile(w.conn(), &mut tables.names, &devices, now)?;
        }
        Ok(())
    });
    match ended {
        Ok(ended) => {
            for r in ended {
                tracing::info!(id = r.id, kind = %r.kind, rule = %r.rule, "block rule expired: its --for time is up");
            }
        }
        Err(e) => tracing::warn!("ending expired block rules: {e:#}"),
    }
}

/// Every device's own addresses, as the per-device name rules use them.
fn device_addresses(store: &Store) -> Option<Vec<(String, Vec<std::net::IpAddr>)>> {
    let devices = store.devices().ok()?;
    Some(devices.0.iter().map(|d| (d.public_key.clone(), rules::cover::host_addresses(d))).collect())
}

/// A device's addresses changed (a peer added or its allowed IPs edited): its rules' kernel
/// keys follow.
fn follow_devices(store: &mut Store, tables: &mut Tables) {
    let now = timefmt::now_ms();
    let per_device = store.stored_rules().map(|r| r.iter().any(|r| r.kind.is_name() && r.client.is_some()));
    if !matches!(per_device, Ok(true)) {
        return;
    }
    let applied = store.devices().and_then(|devices| {
        store.write_rules(|w| rules::kernel::reconcile(w.conn(), &mut tables.names, &devices, now))
    });
    match applied {
        Ok(a) => tracing::info!(added = a.added, removed = a.removed, "devices changed: per-device name rules follow"),
        Err(e) => tracing::warn!("applying per-device name rules to the devices' new addresses: {e:#}"),
    }
}

/// Hands every waiting ring record to the namer, then blocks the addresses of blocked names
/// its DNS answers and flows showed ([`Learner`]); returns how many records.
fn drain(source: &mut KernelSource, namer: &mut Namer, anchor: KernelClock, learner: &mut Learner) -> u64 {
    let n = source.drain_events(&mut |ev| namer.event(ev, anchor)) as u64;
    let tables = &mut source.tables;
    report_learned(learner.learn(namer, &mut tables.names, &mut tables.blocks), "from the answers just seen");
    n
}

/// Keeps the learned entries equal to the name rules: checks the answers devices still hold
/// against rules made since the last look, and removes the entries of rules that went or
/// that passed their end, their counts kept in the rules' history.
fn follow_rules(store: &mut Store, tables: &mut Tables, namer: &Namer, learner: &mut Learner) {
    let now_ms = timefmt::now_ms();
    let read = crate::store::blocks::active_rules(store.conn(), None, now_ms).and_then(|rules| {
        let shared = crate::store::blocks::block_shared_rules(store.conn(), now_ms)?;
        let ids = |keep: fn(RuleKind) -> bool| rules.iter().filter(|r| keep(r.kind)).map(|r| r.id).collect();
        Ok((ids(RuleKind::is_name), shared, ids(|k| !k.teaches_addresses())))
    });
    let active: HashSet<u32> = match read {
        Ok((active, shared, by_name_only)) => {
            learner.set_rules(&active, shared, by_name_only);
            active
        }
        Err(e) => return tracing::warn!("reading the active rules for the learned entries: {e:#}"),
    };
    report_learned(learner.review(namer, &active, &mut tables.names, &mut tables.blocks), "for a new rule");
    let expired = match learner.expire(&mut tables.names, &mut tables.blocks, timefmt::kernel_ns_now(), Some(&active)) {
        Ok(e) => e,
        Err(e) => return tracing::warn!("removing learned entries past their end: {e:#}"),
    };
    let open = learner.shared_open_changes();
    if expired.counted.values().any(|&(d, r)| d + r > 0) || !open.is_empty() {
        let kept = store.write(|w| {
            expired.counted.iter().try_for_each(|(&id, &(d, r))| w.fold_learned(id, d, r))?;
            open.iter().try_for_each(|&(id, n)| w.set_shared_open(id, n))
        });
        if let Err(e) = kept {
            tracing::warn!("the counts of learned entries cannot be kept in their rules' history: {e:#}");
        }
    }
}

fn report_learned(learned: Result<Learned>, when: &str) {
    match learned {
        Ok(l) if l.blocked + l.aliases > 0 => {
            tracing::info!(
                addresses = l.blocked,
                aliases = l.aliases,
                shared = l.shared,
                "learned for name rules {when}"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("learning the addresses and aliases of blocked names {when}: {e:#}"),
    }
}

/// Prunes on a thread of its own with its own connection: a first prune of a large old
/// database deletes millions of rows, in batches that let the sweeps' transactions in between,
/// and the loop never waits for it. One at a time.
#[derive(Default)]
struct Pruner {
    running: Option<std::thread::JoinHandle<()>>,
}

impl Pruner {
    fn start(&mut self, db: &std::path::Path, keep: Retention) {
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return tracing::info!("the last prune is still running; not starting another");
        }
        let db = db.to_owned();
        let spawned = std::thread::Builder::new().name("prune".into()).spawn(move || {
            let pruned = Store::open(&db).and_then(|mut s| s.prune(keep, timefmt::now_ms(), &mut |_| {}));
            match pruned {
                Ok(p) => tracing::info!(
                    flows = p.flows,
                    dns_queries = p.dns_queries,
                    hour_rollups = p.hour_rollups,
                    day_rollups = p.day_rollups,
                    days_packed = p.days_packed,
                    bytes_returned = p.bytes_returned,
                    "pruned rows past their retention"
                ),
                Err(e) => tracing::warn!("pruning rows past their retention: {e:#}; trying again in an hour"),
            }
        });
        match spawned {
            Ok(h) => self.running = Some(h),
            Err(e) => tracing::warn!("starting the prune: {e}"),
        }
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
                lost = total - seen,
                total,
                "event ring full: records lost. Flows are still counted in full; lost are the \
                 DNS messages and first payloads that name flows"
            );
        }
        self.seen = Some(total);
    }
}
