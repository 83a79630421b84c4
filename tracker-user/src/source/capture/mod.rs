//! Capture files as a source: pcap and pcapng read frame by frame ([`file`]), every packet
//! counted by the kernel programs' own parser and accounting (`tracker_common::parse`,
//! `tracker_common::account`) into a flow table the sweep reads like the kernel's, with the
//! capture's timestamps as the clock.

pub mod file;
pub mod mapped;

use std::net::IpAddr;

use anyhow::Result;
use ipnet::IpNet;
use tracker_common::{
    DIR_DOWN, DIR_UP, EventHeader, EventKind, FlowKey, FlowStats, IPPROTO_TCP, L2_LEN_ETHERNET, L2_LEN_NONE,
    PAYLOAD_CAP, TCP_ACK, TCP_SYN,
    account::{self, Count},
    parse::{ParseError, Parsed, parse_frame},
    user::{DecodeError, Event, Payload},
};

use super::{Activity, Snapshot, Source, Timeouts};
use crate::timefmt::KernelClock;
use file::{Frame, L3};

/// The client side by default: private ranges (RFC 1918, ULA), CGNAT (RFC 6598) and
/// link-local, where phones and VPN tunnels live; the tunnel subnets tracker knows are added
/// by the caller.
pub const DEFAULT_CLIENT_NETS: [&str; 7] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10"];

/// What became of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// An IP packet, counted against its flow.
    Ip,
    /// Not IP (ARP, LLDP, a link type tracker does not read): skipped, as the kernel passes it.
    NotIp,
    /// Its headers are cut short or inconsistent: counted as malformed, as the kernel counts
    /// its parse errors.
    Malformed,
    /// Not counted yet: its flow's entry has been idle past its timeout, so the live daemon
    /// would have ended it by now. Sweep, then count the frame again (it starts a new flow).
    Stale,
}

/// How many frames of each kind a capture had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCounts {
    pub frames: u64,
    pub ip_packets: u64,
    pub not_ip: u64,
    pub malformed: u64,
    /// Non-first IP fragments (counted against the flow without ports, as the kernel does).
    pub fragments: u64,
    /// Flows created (a flow that ends and comes back counts again, as in the kernel).
    pub flows_created: u64,
}

/// A payload event waiting for the pipeline: its header and where its bytes are in the arena.
struct Pending {
    header: EventHeader,
    len: u32,
    data: std::ops::Range<usize>,
}

/// A capture's flow table and events, filled one frame at a time.
pub struct CaptureSource {
    flows: std::collections::HashMap<FlowKey, FlowStats, foldhash::fast::RandomState>,
    events: Vec<Pending>,
    arena: Vec<u8>,
    client_nets: Vec<IpNet>,
    /// The capture's clock: the latest timestamp so far (unix ns; captures are not always in
    /// order, the kernel's clock is).
    now_ns: u64,
    boot_id: String,
    timeouts: Timeouts,
    pub counts: CaptureCounts,
}

impl CaptureSource {
    /// `boot_id` names the capture (its flows never merge with another's); `client_nets` tell
    /// the client side ([`DEFAULT_CLIENT_NETS`]); `timeouts` when an idle flow has ended, as
    /// for the sweep.
    pub fn new(boot_id: String, client_nets: Vec<IpNet>, timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            flows: Default::default(),
            events: Vec::new(),
            arena: Vec::new(),
            client_nets,
            now_ns: 0,
            boot_id,
            counts: CaptureCounts::default(),
        }
    }

    /// The capture's clock: unix ns of its latest packet so far.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Counts one frame, as the kernel program would have on the interface it was captured on.
    pub fn count(&mut self, frame: &Frame<'_>) -> Counted {
        let counted = self.count_frame(frame);
        if counted != Counted::Stale {
            self.counts.frames += 1;
        }
        counted
    }

    fn count_frame(&mut self, frame: &Frame<'_>) -> Counted {
        // Stamps of 0 mean "not yet seen on this CPU" to the sweep; a capture of the epoch (a
        // fuzzed file) is moved by a nanosecond.
        self.now_ns = self.now_ns.max(frame.ts_ns.max(1));
        let (data, l2_len) = match file::l3(frame.link, frame.data) {
            L3::Ethernet(d) => (d, L2_LEN_ETHERNET),
            L3::Ip(d) => (d, L2_LEN_NONE),
            L3::NotIp => return self.skipped(Counted::NotIp),
            L3::Short => return self.skipped(Counted::Malformed),
        };
        // The packet's full length from the IP (or Ethernet) header on, as the kernel's frame
        // length: a snap length that cut the bytes does not cut the counted length.
        let link_header = (frame.data.len() - data.len()) as u32;
        let frame_len = frame.orig_len.max(frame.data.len() as u32) - link_header;
        match parse_frame(data, frame_len, l2_len, true) {
            Ok(p) => self.account(p, data),
            Err(ParseError::NotIp) => self.skipped(Counted::NotIp),
            Err(ParseError::Malformed) => self.skipped(Counted::Malformed),
        }
    }

    fn skipped(&mut self, c: Counted) -> Counted {
        match c {
            Counted::NotIp => self.counts.not_ip += 1,
            Counted::Malformed => self.counts.malformed += 1,
            Counted::Ip | Counted::Stale => {}
        }
        c
    }

    /// Which way a packet parsed sender-first goes: up (the sender is the client) or down.
    /// A flow's packets follow its entry; a new flow's client is the side in the client nets,
    /// else the side that sent its first packet (for TCP, the SYN: a SYN-ACK's receiver).
    pub fn is_up(&self, sender_first: &Parsed) -> bool {
        if self.flows.contains_key(&sender_first.key()) {
            return true;
        }
        if self.flows.contains_key(&sender_first.flipped().key()) {
            return false;
        }
        self.new_flow_is_up(sender_first)
    }

    /// [`CaptureSource::is_up`] for a packet whose flow is in neither direction.
    fn new_flow_is_up(&self, sender_first: &Parsed) -> bool {
        let key = sender_first.key();
        let (sender, receiver) = (key.client(), key.remote());
        match (self.is_client(sender), self.is_client(receiver)) {
            (true, false) => true,
            (false, true) => false,
            _ => {
                let syn_ack = sender_first.protocol == IPPROTO_TCP
                    && sender_first.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
                !syn_ack
            }
        }
    }

    fn is_client(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.client_nets.iter().any(|n| n.contains(&ip))
    }

    /// Counts a parsed packet (`data` from the IP or Ethernet header on) in its flow, and keeps
    /// the payload event it calls for: the kernel's `account`, with the table in memory. The
    /// direction is [`CaptureSource::is_up`]'s, found by the flow's own lookup: one for a packet
    /// going up, two going down.
    fn account(&mut self, sender_first: Parsed, data: &[u8]) -> Counted {
        let now = self.now_ns;
        let mut found = None;
        for up in [true, false] {
            let p = if up { sender_first } else { sender_first.flipped() };
            let key = p.key();
            if let Some(s) = self.flows.get_mut(&key) {
                let c = Count::of(&p, up, 1, now);
                if c.now.saturating_sub(s.last_seen_ns) >= self.timeouts.idle_limit_ns(&key, s) {
                    return Counted::Stale;
                }
                found = Some((p, up, s.add(&c)));
                break;
            }
        }
        let (p, up, first_payload) = found.unwrap_or_else(|| {
            let up = self.new_flow_is_up(&sender_first);
            let p = if up { sender_first } else { sender_first.flipped() };
            let c = Count::of(&p, up, 1, now);
            self.flows.insert(p.key(), FlowStats::first(&c));
            self.counts.flows_created += 1;
            (p, up, c.payload)
        });
        self.counts.ip_packets += 1;
        if p.fragment {
            self.counts.fragments += 1;
        }
        if let Some(kind) = account::event(&p, first_payload) {
            self.keep_event(kind, &p, up, data);
        }
        Counted::Ip
    }

    /// Live flows in the table.
    pub fn live(&self) -> usize {
        self.flows.len()
    }

    /// The kernel's `emit_payload`: the header and up to [`PAYLOAD_CAP`] bytes of payload (what
    /// the capture kept of them).
    fn keep_event(&mut self, kind: EventKind, p: &Parsed, up: bool, data: &[u8]) {
        let len = p.payload_len();
        let from = (p.payload_off as usize).min(data.len());
        let to = (from + (len as usize).min(PAYLOAD_CAP)).min(data.len());
        let start = self.arena.len();
        self.arena.extend_from_slice(&data[from..to]);
        let header = EventHeader {
            kind: kind as u8,
            direction: if up { DIR_UP } else { DIR_DOWN },
            _pad: [0; 2],
            rule_id: 0,
            ts_ns: self.now_ns,
            key: p.key(),
        };
        self.events.push(Pending { header, len, data: start..self.arena.len() });
    }

    /// The flow table as it stands (for tests that compare it with the kernel's).
    pub fn flows(&self) -> impl Iterator<Item = (&FlowKey, &FlowStats)> {
        self.flows.iter()
    }

    /// Events waiting for [`Source::drain_events`].
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }
}

impl Source for CaptureSource {
    fn boot_id(&self) -> &str {
        &self.boot_id
    }

    fn anchor(&self) -> KernelClock {
        KernelClock::UNIX
    }

    fn snapshot(&mut self, into: &mut Snapshot) -> Result<()> {
        into.flows.clear();
        into.flows.extend(self.flows.iter().map(|(k, s)| (*k, *s)));
        into.now_ns = self.now_ns;
        into.clock = KernelClock::UNIX;
        into.blocks.clear();
        Ok(())
    }

    fn activity(&mut self) -> Result<Option<Activity>> {
        Ok(Some(Activity { packets: self.counts.ip_packets, now_ns: self.now_ns }))
    }

    fn take(&mut self, key: &FlowKey) -> Result<Option<FlowStats>> {
        Ok(self.flows.remove(key))
    }

    fn drain_events(&mut self, f: &mut dyn FnMut(Result<Event<'_>, DecodeError>)) -> usize {
        let n = self.events.len();
        for e in self.events.drain(..) {
            let payload = Payload { header: e.header, len: e.len, data: &self.arena[e.data] };
            f(Ok(match EventKind::from_u8(e.header.kind) {
                Some(EventKind::Dns) => Event::Dns(payload),
                _ => Event::FirstPayload(payload),
            }));
        }
        self.arena.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;
    use file::Link;

    fn source(nets: &[&str]) -> CaptureSource {
        CaptureSource::new("t".into(), nets.iter().map(|n| n.parse().unwrap()).collect(), Timeouts::default())
    }

    /// A TCP packet of the one connection between the server's port 443 and port 40000.
    fn tcp(src: [u8; 4], dst: [u8; 4], syn: bool, ack: bool) -> Vec<u8> {
        let (sport, dport) = if src == SERVER { (443, 40_000) } else { (40_000, 443) };
        let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1, 100);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(1);
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    fn count(s: &mut CaptureSource, data: &[u8]) -> Counted {
        let frame = Frame { number: 1, offset: 0, ts_ns: 5, orig_len: data.len() as u32, link: Link::Raw, data };
        s.count(&frame)
    }

    /// The (client, remote) of the only flow.
    fn sides(s: &CaptureSource) -> (IpAddr, IpAddr, u64, u64) {
        let (k, v) = s.flows().next().unwrap();
        (k.client(), k.remote(), v.packets_up, v.packets_down)
    }

    const PHONE: [u8; 4] = [10, 77, 0, 2];
    const SERVER: [u8; 4] = [192, 0, 2, 10];
    const OTHER: [u8; 4] = [198, 51, 100, 7];

    #[test]
    fn the_client_is_the_end_in_the_client_nets_whoever_sends_first() {
        let mut s = source(&["10.0.0.0/8"]);
        // The server speaks first (a capture that began mid-connection).
        count(&mut s, &tcp(SERVER, PHONE, false, true));
        count(&mut s, &tcp(PHONE, SERVER, false, true));
        assert_eq!(sides(&s), (PHONE.into(), SERVER.into(), 1, 1));
    }

    #[test]
    fn otherwise_the_sender_of_the_first_packet_or_the_receiver_of_a_syn_ack() {
        let mut s = source(&[]);
        count(&mut s, &tcp(SERVER, OTHER, true, true));
        count(&mut s, &tcp(OTHER, SERVER, false, true));
        count(&mut s, &tcp(OTHER, SERVER, false, true));
        assert_eq!(sides(&s), (OTHER.into(), SERVER.into(), 2, 1), "a SYN-ACK's receiver is the client");
        let mut s = source(&[]);
        count(&mut s, &tcp(SERVER, OTHER, false, true));
        count(&mut s, &tcp(OTHER, SERVER, false, true));
        assert_eq!(sides(&s), (SERVER.into(), OTHER.into(), 1, 1), "the first sender");
    }

    #[test]
    fn non_ip_and_damaged_frames_are_counted_apart() {
        let mut s = source(&[]);
        assert_eq!(count(&mut s, &[0x00; 30]), Counted::NotIp);
        assert_eq!(count(&mut s, &tcp(PHONE, SERVER, true, false)[..30]), Counted::Malformed);
        assert_eq!(count(&mut s, &tcp(PHONE, SERVER, true, false)), Counted::Ip);
        let c = s.counts;
        assert_eq!((c.frames, c.ip_packets, c.not_ip, c.malformed, c.flows_created), (3, 1, 1, 1, 1));
    }
}
