//! What one packet adds to its flow, shared by the kernel programs and the capture importer:
//! the counters of a new or existing entry, whether the packet opens a connection, and which
//! payload event it calls for. The map operations around it are each side's own.

use crate::{
    EventKind, FLOW_PAYLOAD_DOWN, FLOW_PAYLOAD_UP, FlowStats, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN, parse::Parsed,
};

/// DNS over UDP and TCP (RFC 1035, RFC 7766); its payload goes to userspace for naming.
pub const DNS_PORT: u16 = 53;
/// DNS over TLS (RFC 7858 §3.1) and DNS over QUIC (RFC 9250 §4.1.1) both listen here: the one
/// port a dns-bypass rule stops (`PORT_BLOCKS`).
pub const ENCRYPTED_DNS_PORT: u16 = 853;

/// One packet as its flow's entry counts it.
#[derive(Clone, Copy, Debug)]
pub struct Count {
    /// Client -> remote.
    pub up: bool,
    /// IP packets it stands for: the segments of a GSO packet, else 1.
    pub packets: u64,
    /// IP bytes, every segment's copy of the headers included.
    pub bytes: u64,
    /// The clock of the flow stamps.
    pub now: u64,
    pub tcp_flags: u8,
    /// It carries transport payload.
    pub payload: bool,
}

impl Count {
    /// `segs` is 1 but for a GSO packet, which the device cuts into `segs` IP packets that each
    /// repeat the IP and transport headers.
    #[inline(always)]
    pub fn of(p: &Parsed, up: bool, segs: u32, now: u64) -> Self {
        Count {
            up,
            packets: segs as u64,
            bytes: p.ip_len as u64 + (segs as u64 - 1) * p.headers_len as u64,
            now,
            tcp_flags: p.tcp_flags,
            payload: p.payload_len() > 0,
        }
    }

    #[inline(always)]
    fn payload_bit(&self) -> u8 {
        if self.up { FLOW_PAYLOAD_UP } else { FLOW_PAYLOAD_DOWN }
    }
}

impl FlowStats {
    /// The entry a flow's first packet creates.
    #[inline(always)]
    pub fn first(c: &Count) -> FlowStats {
        let (up, down) = if c.up { (1, 0) } else { (0, 1) };
        FlowStats {
            packets_up: c.packets * up,
            bytes_up: c.bytes * up,
            packets_down: c.packets * down,
            bytes_down: c.bytes * down,
            first_seen_ns: c.now,
            last_seen_ns: c.now,
            tcp_flags_up: if c.up { c.tcp_flags } else { 0 },
            payload_sent: if c.payload { c.payload_bit() } else { 0 },
            tcp_flags_down: if c.up { 0 } else { c.tcp_flags },
            _pad: [0; 5],
        }
    }

    /// Adds a packet to an existing entry; true when it is the flow's first payload in its
    /// direction, whose event is then due.
    #[inline(always)]
    pub fn add(&mut self, c: &Count) -> bool {
        if c.up {
            self.packets_up += c.packets;
            self.bytes_up += c.bytes;
            self.tcp_flags_up |= c.tcp_flags;
        } else {
            self.packets_down += c.packets;
            self.bytes_down += c.bytes;
            self.tcp_flags_down |= c.tcp_flags;
        }
        // A per-CPU value: another CPU may have created the entry, leaving this copy zeroed.
        if self.first_seen_ns == 0 {
            self.first_seen_ns = c.now;
        }
        self.last_seen_ns = c.now;
        let bit = c.payload_bit();
        if c.payload && self.payload_sent & bit == 0 {
            self.payload_sent |= bit;
            return true;
        }
        false
    }
}

/// A client's bare SYN: it opens a connection, so its flow is almost always new.
#[inline(always)]
pub fn opens(p: &Parsed, up: bool) -> bool {
    up && p.protocol == IPPROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The payload event a counted packet calls for: every DNS message, and a flow direction's
/// first payload (`first_payload`, from [`FlowStats::add`] or a new entry's payload).
#[inline(always)]
pub fn event(p: &Parsed, first_payload: bool) -> Option<EventKind> {
    let dns = (p.protocol == IPPROTO_UDP || p.protocol == IPPROTO_TCP)
        && (p.remote_port == DNS_PORT || p.client_port == DNS_PORT);
    if dns && p.payload_len() > 0 {
        Some(EventKind::Dns)
    } else if first_payload {
        Some(EventKind::FirstPayload)
    } else {
        None
    }
}
