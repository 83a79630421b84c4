//! Where records go. The pipeline hands each sweep's records to a [`Sink`] as one [`Batch`];
//! today the store (one SQLite transaction per sweep), an exporter later.

use anyhow::Result;

mod store;

use crate::store::{DnsRecord, FlowRecord, facts::DaemonFacts};

/// A block rule's kernel counters, as the sink stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCount {
    pub rule_id: u32,
    pub dropped: u64,
    /// Unix ms of the last drop; `None` for never.
    pub last_hit_ms: Option<i64>,
}

/// Everything one sweep produced.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// The boot the flows' kernel stamps belong to (for a capture, the file).
    pub boot_id: &'a str,
    /// Flows that changed, cumulative per row: writing one twice stores the same numbers.
    pub flows: &'a [FlowRecord],
    /// DNS exchanges ready for the log.
    pub dns: &'a [DnsRecord],
    pub blocks: &'a [BlockCount],
    /// Name rules' refusal counters (`dropped` = queries refused), when read this sweep.
    pub names: &'a [BlockCount],
    /// Daemon facts to set (`tracker status`); those it leaves unset are kept.
    pub facts: DaemonFacts,
}

pub trait Sink {
    /// Writes the whole batch or nothing: on an error nothing of it is kept, and the pipeline
    /// hands the same records again next time.
    fn write(&mut self, batch: &Batch<'_>) -> Result<()>;
}
