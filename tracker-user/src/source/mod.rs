//! Where flows come from. A source yields snapshots of its flow table and its events, each with
//! the source's own clock and boot identity: today the kernel's maps and ring ([`kernel`]), a
//! capture file next. The pipeline reads sources only through [`Source`].

pub mod capture;
pub mod kernel;

use std::time::Duration;

use anyhow::Result;
use tracker_common::{FlowKey, FlowStats, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, user::Event};

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
    /// Name rules' refusal counters, one per rule (its entries summed), when read this time:
    /// the name map is read only when the kernel refused something since the last read, and
    /// now and then (it may hold hundreds of thousands of entries).
    pub names: Option<Vec<KernelRule>>,
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

/// How long a flow may be idle before it is written a last time and deleted from the kernel
/// table, by protocol. The table then holds live flows, so LRU evictions (which lose whatever
/// an entry counted since the last sweep) are rare, and a sweep reads what is alive. A flow
/// that resumes within the same time again is folded into its row ([`Sweeper`]), so a timeout
/// shorter than an app's pauses costs a delete and an insert, not a second flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A TCP connection whose both sides sent FIN, or either side a RST.
    pub tcp_ended: Duration,
    /// An open TCP connection without packets.
    pub tcp_idle: Duration,
    pub udp: Duration,
    /// ICMP and ICMPv6.
    pub icmp: Duration,
    /// Every other protocol.
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            // Long enough for the last ACK and a retransmitted FIN; Linux's conntrack waits
            // 10 s in CLOSE too.
            tcp_ended: Duration::from_secs(10),
            // Apps keep push connections alive with keepalives every few minutes.
            tcp_idle: Duration::from_secs(10 * 60),
            // conntrack's UDP stream timeout is 120 s; QUIC's usual idle timeout is 30 s, and
            // browsers ping before it.
            udp: Duration::from_secs(60),
            // conntrack's ICMP timeout.
            icmp: Duration::from_secs(30),
            other: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The idle time after which `s` (a flow of `key`) has ended.
    pub fn idle_limit(&self, key: &FlowKey, s: &FlowStats) -> Duration {
        match key.protocol {
            IPPROTO_TCP if s.tcp_ended() => self.tcp_ended,
            IPPROTO_TCP => self.tcp_idle,
            IPPROTO_UDP => self.udp,
            IPPROTO_ICMP | IPPROTO_ICMPV6 => self.icmp,
            _ => self.other,
        }
    }

    /// [`Timeouts::idle_limit`] in nanoseconds; past u64 (584 years) it means never.
    pub(crate) fn idle_limit_ns(&self, key: &FlowKey, s: &FlowStats) -> u64 {
        u64::try_from(self.idle_limit(key, s).as_nanos()).unwrap_or(u64::MAX)
    }
}
