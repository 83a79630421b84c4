//! The kernel as a source: the pinned flow tables and block tries, read in batches, and the
//! event ring, drained on a timer (records are submitted without a wakeup, see
//! `tracker_common::defaults::WAKEUP_FILL_DIVISOR`) and at once when the kernel forces one.

use std::os::fd::{AsFd as _, OwnedFd};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracker_common::{
    Counter, FlowKey, FlowStats,
    user::{DecodeError, Event, decode},
};

use super::{Activity, Snapshot, Source};
use crate::{
    kernel::{Tables, maps},
    timefmt::{self, KernelClock},
};

pub struct KernelSource {
    pub tables: Tables,
    ring: RingBuf<MapData>,
    boot_id: String,
    anchor: KernelClock,
    /// The `DnsRefused` counter when the name map was last read, and when.
    names_read: Option<(u64, std::time::Instant)>,
}

/// The name map is read again at least this often even without refusals: a rule change by the
/// CLI between a read and its write leaves a count that this corrects.
const NAMES_REREAD: std::time::Duration = std::time::Duration::from_secs(30);

impl KernelSource {
    pub fn new(tables: Tables, ring: RingBuf<MapData>) -> Result<Self> {
        Ok(Self { tables, ring, boot_id: timefmt::boot_id()?, anchor: KernelClock::now(), names_read: None })
    }

    /// The ring's wakeups, to wait on apart from the source (inside a tokio runtime): they
    /// come only when the kernel forces one, the ring filling up; the daemon's drain timer
    /// covers everything else. A duplicate of the ring's descriptor: the same file, so the
    /// same wakeups.
    pub fn wakeups(&self) -> Result<AsyncFd<OwnedFd>> {
        let fd = self.ring.as_fd().try_clone_to_owned().context("duplicating the event ring's descriptor")?;
        // SAFETY: the AsyncFd owns the duplicate, so the descriptor stays open and the same file
        // for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.context("polling the event ring")
    }
}

impl Source for KernelSource {
    fn boot_id(&self) -> &str {
        &self.boot_id
    }

    fn anchor(&self) -> KernelClock {
        self.anchor
    }

    fn snapshot(&mut self, into: &mut Snapshot) -> Result<()> {
        into.flows.clear();
        into.clock = KernelClock::now();
        into.now_ns = timefmt::kernel_ns_now();
        self.tables.flows.read_all(&mut into.flows)?;
        into.blocks = self.tables.blocks.counters()?.into_values().collect();
        let refused = maps::read_counter(&self.tables.counters, Counter::DnsRefused)?;
        let due = match self.names_read {
            Some((seen, at)) => seen != refused || at.elapsed() >= NAMES_REREAD,
            None => true,
        };
        into.names = None;
        if due {
            let counts = crate::rules::kernel::counts(&self.tables.names)?;
            into.names = Some(counts.into_values().collect());
            self.names_read = Some((refused, std::time::Instant::now()));
        }
        Ok(())
    }

    fn activity(&mut self) -> Result<Option<Activity>> {
        // Both programs count every packet as passed or dropped in `finish`, after `handle`
        // updated its flow and block entries: a packet not yet in these counters may be
        // missing from a snapshot, but then it changes them before the next sweep reads them.
        let packets = maps::read_counter(&self.tables.counters, Counter::Seen)?;
        Ok(Some(Activity { packets, now_ns: timefmt::kernel_ns_now() }))
    }

    fn take(&mut self, key: &FlowKey) -> Result<Option<FlowStats>> {
        self.tables.flows.take(key)
    }

    fn drain_events(&mut self, f: &mut dyn FnMut(Result<Event<'_>, DecodeError>)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(decode(&item));
            n += 1;
        }
        n
    }
}
