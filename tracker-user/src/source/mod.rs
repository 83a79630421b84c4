//! Where flows come from. A source yields snapshots of its flow table and its events, each with
//! the source's own clock and boot identity: today the kernel's maps and ring ([`kernel`]), a
//! capture file next. The pipeline reads sources only through [`Source`].

pub mod capture;
pub mod kernel;

use anyhow::Result;
use tracker_common::{FlowKey, FlowStats, user::Event};

use crate::{blocking::KernelRule, timefmt::KernelClock};

/// A source's flow table and block counters at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The source's clock at the read, in the clock of the flow stamps.
    pub now_ns: u64,
    /// Converts the source's stamps to wall time, as of this read.
    pub clock: KernelClock,
    /// Every flow, with per-CPU values folded.
    pub flows: Vec<(FlowKey, FlowStats)>,
    /// Block rules' drop counters.
    pub blocks: Vec<KernelRule>,
}

/// How far a source has counted, read without reading its tables: a sweep that finds the same
/// figure as the last one knows no flow has moved since, and need not read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    /// Grows with every packet counted, and only after that packet's flow and block entries
    /// are updated.
    pub packets: u64,
    /// The source's clock now, in the clock of the flow stamps.
    pub now_ns: u64,
}

pub trait Source {
    /// What the stamps are relative to: flows of two boots never merge, whatever their stamps.
    fn boot_id(&self) -> &str;
    /// The store's `sources.id` of its rows.
    fn source_id(&self) -> i64 {
        crate::store::schema::LIVE_SOURCE
    }
    /// One conversion of stamps to wall time for the source's whole life: events converted
    /// with it keep their order (a DNS answer stays before the flow it caused), whatever the
    /// wall clock does meanwhile.
    fn anchor(&self) -> KernelClock;
    /// Reads the flow table and block counters into `into`, replacing what it held (its
    /// buffers are reused).
    fn snapshot(&mut self, into: &mut Snapshot) -> Result<()>;
    /// How far the source has counted; `None` when it cannot say, and every sweep reads it
    /// whole.
    fn activity(&mut self) -> Result<Option<Activity>>;
    /// Removes an ended flow and returns its final values, so what was counted after the
    /// snapshot is not lost with it; `None` when it was gone already.
    fn take(&mut self, key: &FlowKey) -> Result<Option<FlowStats>>;
    /// Hands every waiting event to `f`, in order; returns how many there were.
    fn drain_events(&mut self, f: &mut dyn FnMut(Result<Event<'_>, tracker_common::user::DecodeError>)) -> usize;
}
