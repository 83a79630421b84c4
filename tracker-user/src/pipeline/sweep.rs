//! The sweep: from a source's snapshot to the records a sink stores. It writes a flow when its
//! counters moved (or its name changed), writes an ended flow a last time and takes it out of
//! the source's table, and folds a flow that resumes after that into the same row.

use std::collections::{HashMap, HashSet};

/// The sweeper's tables are looked up several times per live flow and sweep: foldhash, seeded
/// per process like the std hasher, at a fraction of SipHash's cost.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = HashSet<K, foldhash::fast::RandomState>;

use anyhow::Result;
use tracker_common::{FlowKey, FlowStats};

use super::{Namer, naming::Described};
use crate::{
    analysis::labels::Labeler,
    sink::{Batch, BlockCount, Sink},
    source::{Snapshot, Source},
    store::{DnsRecord, FlowRecord, facts::DaemonFacts},
    timefmt::KernelClock,
};
// Where a flow ends is the source's fact (a capture needs it while counting); the sweep acts on it.
pub use crate::source::Timeouts;

/// What a sweep did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Flows in the source's table at the snapshot.
    pub live: usize,
    /// Flow records written.
    pub written: usize,
    /// Flows that ended and were taken out of the table.
    pub ended: usize,
    /// DNS exchanges written.
    pub dns_written: usize,
    /// Whether the tables were read: not when nothing was counted since the last sweep and no
    /// flow's timeout or name is due.
    pub read: bool,
}

/// What the sweeper remembers of a live kernel entry: 24 bytes beside its 40-byte key, so a
/// full pair of tables costs the daemon about 10 MiB.
#[derive(Clone, Copy, Debug)]
struct Live {
    /// The entry's first-seen stamp, to tell a new entry for the same key.
    first_ns: u64,
    /// `packets_up + packets_down` as last written, or [`UNWRITTEN`]. Within one entry both
    /// only grow, so their sum moves exactly when either does. The counters, not the last-seen
    /// stamp, tell a change: the coarse clock advances once per tick (4 ms at HZ=250), so a
    /// packet in the tick of the last sweep leaves the stamps as they were.
    written: u64,
    /// The sweep that last saw the entry in the table.
    seen: u32,
}

/// The entry has changes not yet written.
const UNWRITTEN: u64 = u64::MAX;

/// A flow row that has ended at least once: its identity and what its deleted entries counted.
#[derive(Clone, Copy, Debug)]
struct History {
    /// The row's identity: the first-seen stamp of its first kernel entry.
    row_first_ns: u64,
    /// What the row's deleted entries counted, together.
    base: FlowStats,
    /// When it last ended (source clock); `None` while it is live again. It is remembered for
    /// its idle limit after that: a flow back within that time is the same flow.
    ended_ns: Option<u64>,
}

/// Adds `s` (a live or final entry) to a row's earlier counts: the row's totals.
fn total(row_first_ns: u64, base: &FlowStats, s: &FlowStats) -> FlowStats {
    FlowStats {
        packets_up: base.packets_up + s.packets_up,
        bytes_up: base.bytes_up + s.bytes_up,
        packets_down: base.packets_down + s.packets_down,
        bytes_down: base.bytes_down + s.bytes_down,
        first_seen_ns: row_first_ns,
        last_seen_ns: base.last_seen_ns.max(s.last_seen_ns),
        tcp_flags_up: base.tcp_flags_up | s.tcp_flags_up,
        tcp_flags_down: base.tcp_flags_down | s.tcp_flags_down,
        payload_sent: base.payload_sent | s.payload_sent,
        _pad: [0; 5],
    }
}

/// Converts a row's totals for storage, with its name and labels.
pub fn flow_record(k: &FlowKey, s: &FlowStats, clock: KernelClock, labeler: &Labeler, d: Described) -> FlowRecord {
    let Described { name, class: remote_class, app } = d;
    let labels = labeler.label(&name, remote_class, app);
    FlowRecord {
        kernel_first_ns: s.first_seen_ns,
        client: k.client(),
        remote: k.remote(),
        protocol: k.protocol,
        client_port: k.client_port,
        remote_port: k.remote_port,
        packets_up: s.packets_up,
        bytes_up: s.bytes_up,
        packets_down: s.packets_down,
        bytes_down: s.bytes_down,
        tcp_flags: s.tcp_flags(),
        first_seen_ms: clock.to_unix_ms(s.first_seen_ns),
        last_seen_ms: clock.to_unix_ms(s.last_seen_ns),
        name,
        remote_class,
        labels,
    }
}

/// DNS exchanges kept while the sink cannot be written; past this the oldest are dropped (and
/// counted), so a long outage cannot grow the daemon without bound.
pub const PENDING_DNS_MAX: usize = 100_000;

/// Turns snapshots into batches, remembering what was written.
#[derive(Default)]
pub struct Sweeper {
    timeouts: Timeouts,
    live: Map<FlowKey, Live>,
    history: Map<FlowKey, History>,
    /// Ended flows whose last write has not succeeded yet: they are no longer in the table, so
    /// only this says they need writing.
    unwritten_ended: Set<FlowKey>,
    generation: u32,
    snapshot: Snapshot,
    records: Vec<FlowRecord>,
    /// (key, counts sum) written by the batch in flight.
    wrote: Vec<(FlowKey, u64)>,
    /// DNS exchanges and renamed flows taken from the namer but not yet written.
    pending_dns: Vec<DnsRecord>,
    pending_renamed: Set<FlowKey>,
    /// DNS exchanges dropped because writes failed for so long that [`PENDING_DNS_MAX`] were
    /// waiting.
    pub dns_dropped: u64,
    /// Flows ended and taken out of the table since the start.
    pub ended_total: u64,
    /// After a sweep that wrote everything: the source's packet count before its snapshot, and
    /// the earliest time a remembered flow's idle limit runs out. While the count stays and
    /// that time has not come, a sweep has nothing to read or write.
    quiet: Option<(u64, u64)>,
}

impl Sweeper {
    /// `ended_before`: flows an earlier daemon deleted from the same kernel tables.
    pub fn new(timeouts: Timeouts, ended_before: u64) -> Self {
        Self { timeouts, ended_total: ended_before, ..Self::default() }
    }

    /// Forgets what was written: the next sweep writes every flow (into a new database).
    pub fn forget_written(&mut self) {
        self.quiet = None;
        for m in self.live.values_mut() {
            m.written = UNWRITTEN;
        }
        self.unwritten_ended.extend(self.history.iter().filter(|(_, h)| h.ended_ns.is_some()).map(|(k, _)| *k));
    }

    /// Flows remembered: live ones and recently ended ones.
    pub fn remembered(&self) -> usize {
        self.live.len() + self.history.values().filter(|h| h.ended_ns.is_some()).count()
    }

    /// One sweep: snapshot `source`, name and write what changed and what ended into `sink`
    /// (one batch), delete the ended flows from the source. A sink error is returned after the
    /// ended flows are taken out: they are remembered and written by the next sweep, as is
    /// every live flow whose write failed, so nothing is lost or counted twice.
    pub fn sweep(&mut self, source: &mut dyn Source, namer: &mut Namer, sink: &mut dyn Sink) -> Result<SweepStats> {
        // Read before the snapshot: a packet counted after this read changes it by the next
        // sweep, one counted before is in the snapshot (see `Activity`).
        let activity = source.activity()?;
        let quiet = self.quiet.take();
        if let (Some(a), Some((packets, due_ns))) = (activity, quiet)
            && a.packets == packets
            && a.now_ns < due_ns
            && self.unwritten_ended.is_empty()
            && namer.flows.is_settled()
            && namer.dns.is_settled()
        {
            // Idle tables cost nothing: reading 131,072 unchanged entries each sweep is most of
            // a busy household's idle CPU (`cargo xtask bench idle`).
            self.quiet = quiet;
            return Ok(SweepStats { live: self.live.len(), read: false, ..SweepStats::default() });
        }
        source.snapshot(&mut self.snapshot)?;
        let anchor = source.anchor();
        let (now_ns, clock) = (self.snapshot.now_ns, self.snapshot.clock);
        // The namer's times all come from the anchor, so a step of the wall clock (NTP at boot)
        // cannot expire every answer or keep queries pending forever.
        let now = anchor.to_time(now_ns);
        self.pending_renamed.extend(namer.flows.take_renamed());
        self.pending_dns.extend(namer.dns.take_records(Some(now)));
        if self.pending_dns.len() > PENDING_DNS_MAX {
            let extra = self.pending_dns.len() - PENDING_DNS_MAX;
            self.pending_dns.drain(..extra);
            self.dns_dropped += extra as u64;
        }
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        self.records.clear();
        self.wrote.clear();
        let mut ended = 0;
        let mut due_ns = u64::MAX;
        let flows = std::mem::take(&mut self.snapshot.flows);
        for (key, s) in &flows {
            if s.first_seen_ns == 0 {
                continue; // created on another CPU this instant; the next sweep has it
            }
            let fresh = Live { first_ns: s.first_seen_ns, written: UNWRITTEN, seen: generation };
            let back = self.history.get(key).and_then(|h| Some((h.ended_ns?, h.base)));
            if let Some((ended_ns, base)) = back {
                let within = s.first_seen_ns < ended_ns.saturating_add(self.timeouts.idle_limit_ns(key, &base));
                if within || self.unwritten_ended.contains(key) {
                    // Back after it ended: the same row carries on from its totals.
                    if let Some(h) = self.history.get_mut(key) {
                        h.ended_ns = None;
                    }
                    self.unwritten_ended.remove(key);
                    self.live.insert(*key, fresh);
                } else {
                    // Its first packet came after the ended row's window (a capture is swept
                    // seldom, so the row was not forgotten yet): a new connection, a new row.
                    self.history.remove(key);
                    self.live.remove(key);
                }
            }
            let mut history = self.history.get_mut(key);
            let live = self.live.entry(*key).or_insert(fresh);
            if live.first_ns != s.first_seen_ns {
                // A new entry while the old one was never seen to end: the LRU evicted it
                // between two sweeps. A new connection, a new row.
                *live = fresh;
                self.history.remove(key);
                history = None;
            }
            live.seen = generation;
            let (row_first_ns, base) =
                history.map_or((s.first_seen_ns, FlowStats::default()), |h| (h.row_first_ns, h.base));
            let limit_ns = self.timeouts.idle_limit_ns(key, s);
            if now_ns.saturating_sub(s.last_seen_ns) >= limit_ns {
                // Taken out, then written: what arrived since the snapshot is in `last`.
                let last = source.take(key)?.unwrap_or(*s);
                // It ended when its timeout ran out, which a sweep notices up to an interval
                // later (a capture's, much later): its row's window for coming back starts then.
                let ended_ns = last.last_seen_ns.saturating_add(self.timeouts.idle_limit_ns(key, &last)).min(now_ns);
                let h = History { row_first_ns, base: total(row_first_ns, &base, &last), ended_ns: Some(ended_ns) };
                self.history.insert(*key, h);
                self.live.remove(key);
                self.unwritten_ended.insert(*key);
                ended += 1;
                continue;
            }
            due_ns = due_ns.min(s.last_seen_ns.saturating_add(limit_ns));
            if namer.flows.may_rename(key) {
                // Kept until written, like the namer's other renames.
                self.pending_renamed.insert(*key);
            }
            let sum = s.packets_up + s.packets_down;
            if live.written != sum || self.pending_renamed.contains(key) {
                let t = total(row_first_ns, &base, s);
                let d = namer.flows.name_flow(key, anchor.to_time(row_first_ns), now);
                self.records.push(flow_record(key, &t, clock, &namer.labels, d));
                self.wrote.push((*key, sum));
            }
        }
        for key in &self.unwritten_ended {
            let Some(h) = self.history.get(key) else { continue };
            let d = namer.flows.name_flow(key, anchor.to_time(h.row_first_ns), now);
            self.records.push(flow_record(key, &h.base, clock, &namer.labels, d));
        }
        self.snapshot.flows = flows;
        self.ended_total += ended as u64;
        let count = |k: &crate::blocking::KernelRule| BlockCount {
            rule_id: k.rule_id,
            dropped: k.packets_dropped,
            last_hit_ms: (k.last_hit_ns != 0).then(|| clock.to_unix_ms(k.last_hit_ns)),
        };
        let blocks: Vec<BlockCount> = self.snapshot.blocks.iter().map(count).collect();
        let names: Vec<BlockCount> = self.snapshot.names.iter().flatten().map(count).collect();
        let dns = namer.dns.stats();
        let batch = Batch {
            boot_id: source.boot_id(),
            flows: &self.records,
            dns: &self.pending_dns,
            blocks: &blocks,
            names: &names,
            // Carried across daemon restarts on the same maps: `tracker status` takes it off
            // `flows_created - flows_in_kernel` to count LRU evictions.
            facts: DaemonFacts {
                dns_messages: Some(dns.messages),
                dns_malformed: Some(dns.malformed),
                flows_ended: Some(self.ended_total),
                ..DaemonFacts::default()
            },
        };
        let written = self.records.len();
        let result = sink.write(&batch);
        due_ns = due_ns.min(self.forget_gone(generation, now_ns));
        namer.flows.retain(|k| self.live.contains_key(k) || self.history.contains_key(k), now);
        result?;
        self.quiet = activity.map(|a| (a.packets, due_ns));
        for (key, sum) in self.wrote.drain(..) {
            if let Some(m) = self.live.get_mut(&key) {
                m.written = sum;
            }
        }
        self.unwritten_ended.clear();
        let dns_written = self.pending_dns.len();
        self.pending_dns.clear();
        self.pending_renamed.clear();
        Ok(SweepStats { live: self.snapshot.flows.len(), written, ended, dns_written, read: true })
    }

    /// Drops the memory of flows the LRU evicted (not in this sweep's snapshot, never seen to
    /// end) and of ended flows past their idle limit, whose return would be a new connection.
    /// Returns when the first of the ended flows kept is to be forgotten.
    fn forget_gone(&mut self, generation: u32, now_ns: u64) -> u64 {
        self.live.retain(|_, m| m.seen == generation);
        let (live, unwritten, timeouts) = (&self.live, &self.unwritten_ended, &self.timeouts);
        let mut due_ns = u64::MAX;
        self.history.retain(|key, h| match h.ended_ns {
            None => live.contains_key(key),
            Some(at) => {
                let forget_ns = at.saturating_add(timeouts.idle_limit_ns(key, &h.base));
                let keep = unwritten.contains(key) || now_ns < forget_ns;
                if keep {
                    due_ns = due_ns.min(forget_ns);
                }
                keep
            }
        });
        due_ns
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use anyhow::{Result, bail};
    use tracker_common::{
        FAMILY_V4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        user::{DecodeError, Event},
    };

    use super::*;
    use crate::source::Activity;

    const S: u64 = 1_000_000_000;

    /// A flow table in memory, with a clock the test moves.
    #[derive(Default)]
    struct Table {
        now_ns: u64,
        flows: HashMap<FlowKey, FlowStats>,
        taken: Vec<FlowKey>,
        /// The source's packet count; None: it cannot say.
        packets: Option<u64>,
        snapshots: usize,
    }

    impl Source for Table {
        fn boot_id(&self) -> &str {
            "boot"
        }
        fn anchor(&self) -> KernelClock {
            KernelClock::default()
        }
        fn snapshot(&mut self, into: &mut Snapshot) -> Result<()> {
            self.snapshots += 1;
            into.now_ns = self.now_ns;
            into.flows = self.flows.iter().map(|(k, s)| (*k, *s)).collect();
            Ok(())
        }
        fn activity(&mut self) -> Result<Option<Activity>> {
            Ok(self.packets.map(|packets| Activity { packets, now_ns: self.now_ns }))
        }
        fn take(&mut self, key: &FlowKey) -> Result<Option<FlowStats>> {
            self.taken.push(*key);
            Ok(self.flows.remove(key))
        }
        fn drain_events(&mut self, _: &mut dyn FnMut(Result<Event<'_>, DecodeError>)) -> usize {
            0
        }
    }

    /// Rows by (kernel_first_ns, client port): the store's upsert, in memory. `fail` refuses
    /// the next batches, like a full disk.
    #[derive(Default)]
    struct Rows {
        rows: HashMap<(u64, u16), (u64, u64)>,
        batches: usize,
        fail: bool,
    }

    impl Sink for Rows {
        fn write(&mut self, batch: &Batch<'_>) -> Result<()> {
            if self.fail {
                bail!("disk full");
            }
            self.batches += 1;
            for f in batch.flows {
                self.rows.insert((f.kernel_first_ns, f.client_port), (f.packets_up, f.packets_down));
            }
            Ok(())
        }
    }

    fn key(port: u16, protocol: u8) -> FlowKey {
        let mut k = FlowKey { client_port: port, remote_port: 443, protocol, family: FAMILY_V4, ..FlowKey::default() };
        k.client[..4].copy_from_slice(&[10, 77, 0, 2]);
        k.remote[..4].copy_from_slice(&[192, 0, 2, 9]);
        k
    }

    fn stats(first_s: u64, last_s: u64, up: u64) -> FlowStats {
        FlowStats { packets_up: up, first_seen_ns: first_s * S, last_seen_ns: last_s * S, ..FlowStats::default() }
    }

    /// A table at 10 s, an empty sink, a namer and a sweeper with the default timeouts.
    fn setup() -> (Table, Rows, Namer, Sweeper) {
        let namer = Namer::new(Vec::new(), Duration::from_secs(600));
        (Table { now_ns: 10 * S, ..Table::default() }, Rows::default(), namer, Sweeper::new(Timeouts::default(), 0))
    }

    #[test]
    fn only_changed_flows_are_written_and_each_sweep_is_one_batch() {
        let (mut t, mut rows, mut n, mut sw) = setup();
        t.flows.insert(key(1, IPPROTO_UDP), stats(9, 9, 1));
        t.flows.insert(key(2, IPPROTO_UDP), stats(9, 9, 1));
        assert_eq!(
            sw.sweep(&mut t, &mut n, &mut rows).unwrap(),
            SweepStats { live: 2, written: 2, ended: 0, dns_written: 0, read: true }
        );
        assert_eq!(sw.sweep(&mut t, &mut n, &mut rows).unwrap().written, 0, "nothing changed");
        // Same stamps (the same coarse tick), one more packet: written.
        t.flows.insert(key(1, IPPROTO_UDP), stats(9, 9, 2));
        assert_eq!(sw.sweep(&mut t, &mut n, &mut rows).unwrap().written, 1);
        assert_eq!(rows.rows[&(9 * S, 1)], (2, 0));
        assert_eq!(rows.batches, 3);
    }

    #[test]
    fn quiet_tables_are_not_read_until_a_packet_or_a_timeout_is_due() {
        let (mut t, mut rows, mut n, mut sw) = setup();
        t.packets = Some(7);
        t.flows.insert(key(1, IPPROTO_UDP), stats(9, 9, 1));
        assert!(sw.sweep(&mut t, &mut n, &mut rows).unwrap().read);
        t.now_ns = 30 * S;
        assert_eq!(
            sw.sweep(&mut t, &mut n, &mut rows).unwrap(),
            SweepStats { live: 1, written: 0, ended: 0, dns_written: 0, read: false }
        );
        assert_eq!(t.snapshots, 1, "the unchanged table was not read");
        // A packet: the count moved, so the table is read and the flow written.
        t.packets = Some(8);
        t.flows.insert(key(1, IPPROTO_UDP), stats(9, 30, 2));
        let s = sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        assert_eq!((s.read, s.written), (true, 1));
        assert_eq!(rows.rows[&(9 * S, 1)], (2, 0));
        // Nothing counted, but the UDP flow's 60 s run out at 90 s: read, ended and written.
        t.now_ns = 89 * S;
        assert!(!sw.sweep(&mut t, &mut n, &mut rows).unwrap().read);
        t.now_ns = 90 * S;
        let s = sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        assert_eq!((s.read, s.ended), (true, 1));
        assert_eq!(t.taken, [key(1, IPPROTO_UDP)]);
        // A source that cannot say is read every sweep.
        t.packets = None;
        let before = t.snapshots;
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        assert_eq!(t.snapshots, before + 2);
    }

    #[test]
    fn each_protocol_ends_after_its_own_idle_time() {
        let to = Timeouts::default();
        let tcp = key(1, IPPROTO_TCP);
        let open = FlowStats { tcp_flags_up: 0x02, tcp_flags_down: 0x12, ..FlowStats::default() };
        let fin = FlowStats { tcp_flags_up: 0x11, tcp_flags_down: 0x11, ..FlowStats::default() };
        let rst = FlowStats { tcp_flags_down: 0x04, ..FlowStats::default() };
        assert_eq!(to.idle_limit(&tcp, &open), to.tcp_idle);
        assert_eq!(to.idle_limit(&tcp, &fin), to.tcp_ended);
        assert_eq!(to.idle_limit(&tcp, &rst), to.tcp_ended);
        let half = FlowStats { tcp_flags_up: 0x11, tcp_flags_down: 0x10, ..FlowStats::default() };
        assert_eq!(to.idle_limit(&tcp, &half), to.tcp_idle, "one FIN is a half-closed connection");
        assert_eq!(to.idle_limit(&key(1, IPPROTO_UDP), &open), to.udp);
        assert_eq!(to.idle_limit(&key(1, IPPROTO_ICMP), &open), to.icmp);
        assert_eq!(to.idle_limit(&key(1, 47), &open), to.other);
    }

    #[test]
    fn an_idle_flow_is_written_taken_and_a_resumed_one_continues_its_row() {
        let (mut t, mut rows, mut n, mut sw) = setup();
        let k = key(1, IPPROTO_UDP);
        t.flows.insert(k, stats(9, 9, 3));
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        t.now_ns = 70 * S; // idle 61 s > 60 s
        let s = sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        assert_eq!((s.ended, s.written), (1, 1));
        assert_eq!(t.taken, [k]);
        assert!(t.flows.is_empty());
        // It resumes: a new kernel entry, counting from zero, folded into the first row.
        t.flows.insert(k, stats(80, 80, 2));
        t.now_ns = 80 * S;
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        assert_eq!(rows.rows.len(), 1, "{:?}", rows.rows);
        assert_eq!(rows.rows[&(9 * S, 1)], (5, 0));
        // Resumed after more than its idle time since it ended: a new connection, a new row.
        t.now_ns = 141 * S;
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        t.now_ns = 300 * S;
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        t.flows.insert(k, stats(300, 300, 1));
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        assert_eq!(rows.rows[&(300 * S, 1)], (1, 0));
        assert_eq!(sw.remembered(), 1);
    }

    #[test]
    fn a_failed_write_is_retried_whole_including_flows_already_taken() {
        let (mut t, mut rows, mut n, mut sw) = setup();
        t.flows.insert(key(1, IPPROTO_UDP), stats(9, 9, 1));
        t.flows.insert(key(2, IPPROTO_UDP), stats(9, 9, 1));
        rows.fail = true;
        assert!(sw.sweep(&mut t, &mut n, &mut rows).is_err());
        // Flow 1 moves on; flow 2 ends while the disk is full: taken out of the table, so only
        // the sweeper can still write it.
        t.flows.insert(key(1, IPPROTO_UDP), stats(9, 11, 4));
        t.now_ns = 70 * S;
        t.flows.insert(key(1, IPPROTO_UDP), stats(9, 69, 4));
        assert!(sw.sweep(&mut t, &mut n, &mut rows).is_err());
        assert_eq!(t.taken, [key(2, IPPROTO_UDP)]);
        rows.fail = false;
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        assert_eq!(rows.rows[&(9 * S, 1)], (4, 0));
        assert_eq!(rows.rows[&(9 * S, 2)], (1, 0));
        // Caught up: nothing is written twice.
        assert_eq!(sw.sweep(&mut t, &mut n, &mut rows).unwrap().written, 0);
    }

    #[test]
    fn an_entry_the_lru_replaced_is_a_new_row_and_evicted_ones_are_forgotten() {
        let (mut t, mut rows, mut n, mut sw) = setup();
        t.flows.insert(key(1, IPPROTO_UDP), stats(5, 5, 1));
        t.flows.insert(key(2, IPPROTO_UDP), stats(5, 5, 1));
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        // Evicted between two sweeps and created again by a later packet.
        t.flows.insert(key(1, IPPROTO_UDP), stats(8, 8, 1));
        t.flows.remove(&key(2, IPPROTO_UDP));
        sw.sweep(&mut t, &mut n, &mut rows).unwrap();
        assert_eq!(rows.rows[&(5 * S, 1)], (1, 0));
        assert_eq!(rows.rows[&(8 * S, 1)], (1, 0));
        assert_eq!(sw.remembered(), 1, "the evicted flow is forgotten");
    }
}
