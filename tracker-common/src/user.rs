//! The userspace half of the ABI (feature `user`), kept beside the layouts it reads: addresses
//! of a key, folding per-CPU values, and decoding ring records.

use core::net::IpAddr;

use crate::{EventHeader, EventKind, FAMILY_V4, FlowKey, FlowStats, PAYLOAD_CAP, PayloadEvent, TCP_FIN, TCP_RST};

impl FlowKey {
    fn addr(&self, a: [u8; 16]) -> IpAddr {
        if self.family == FAMILY_V4 { IpAddr::from([a[0], a[1], a[2], a[3]]) } else { IpAddr::from(a) }
    }

    /// The host behind the interface (the phone).
    pub fn client(&self) -> IpAddr {
        self.addr(self.client)
    }

    /// The other end.
    pub fn remote(&self) -> IpAddr {
        self.addr(self.remote)
    }
}

impl FlowStats {
    /// One flow's per-CPU values folded into one: packets and bytes summed, the earliest
    /// non-zero first-seen stamp (a CPU that never saw the flow holds zeros), the latest
    /// last-seen stamp, flags ORed.
    pub fn merge<'a>(per_cpu: impl IntoIterator<Item = &'a FlowStats>) -> FlowStats {
        let mut m = FlowStats::default();
        for v in per_cpu {
            let FlowStats {
                packets_up,
                bytes_up,
                packets_down,
                bytes_down,
                first_seen_ns,
                last_seen_ns,
                tcp_flags_up,
                payload_sent,
                tcp_flags_down,
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
            m.tcp_flags_up |= tcp_flags_up;
            m.tcp_flags_down |= tcp_flags_down;
            m.payload_sent |= payload_sent;
        }
        m
    }

    /// TCP flags seen in either direction.
    pub fn tcp_flags(&self) -> u8 {
        self.tcp_flags_up | self.tcp_flags_down
    }

    /// Whether a TCP connection has ended: each side sent its FIN, or either side a RST.
    pub fn tcp_ended(&self) -> bool {
        self.tcp_flags() & TCP_RST != 0 || self.tcp_flags_up & self.tcp_flags_down & TCP_FIN != 0
    }
}

/// A decoded ring record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    BlockHit(EventHeader),
    /// A DNS message.
    Dns(Payload<'a>),
    /// A flow direction's first payload.
    FirstPayload(Payload<'a>),
    /// A query the kernel refused for the rule in `header.rule_id`.
    DnsRefused(Payload<'a>),
}

/// The packet bytes of a payload event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    pub header: EventHeader,
    /// The L4 payload's length in the packet.
    pub len: u32,
    /// Its first bytes (at most [`PAYLOAD_CAP`]; empty when the copy failed).
    pub data: &'a [u8],
}

/// Why a ring record could not be decoded (never expected from the object built with this
/// crate; a mismatched object would cause it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its kind's fixed part, or than the bytes it says it captured.
    Short { len: usize },
    /// A kind byte no [`EventKind`] has.
    UnknownKind(u8),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Short { len } => write!(f, "ring record of {len} bytes is too short for its kind"),
            Self::UnknownKind(k) => write!(f, "ring record of unknown kind {k}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Decodes one ring record.
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    let short = DecodeError::Short { len: bytes.len() };
    if bytes.len() < size_of::<EventHeader>() {
        return Err(short);
    }
    // SAFETY: length checked; EventHeader is plain integers, valid for any bits; unaligned read
    // because a record's bytes carry no alignment guarantee once copied.
    let header: EventHeader = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::from_u8(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let payload = || -> Result<Payload<'_>, DecodeError> {
        let field = |off: usize| -> Option<u32> { Some(u32::from_ne_bytes(bytes.get(off..off + 4)?.try_into().ok()?)) };
        let len = field(core::mem::offset_of!(PayloadEvent, payload_len)).ok_or(short)?;
        let captured = field(core::mem::offset_of!(PayloadEvent, captured_len)).ok_or(short)?;
        let captured = (captured as usize).min(PAYLOAD_CAP);
        let data_off = PayloadEvent::DATA_OFFSET;
        let data = bytes.get(data_off..data_off + captured).ok_or(short)?;
        Ok(Payload { header, len, data })
    };
    Ok(match kind {
        EventKind::BlockHit => Event::BlockHit(header),
        EventKind::Dns => Event::Dns(payload()?),
        EventKind::FirstPayload => Event::FirstPayload(payload()?),
        EventKind::DnsRefused => Event::DnsRefused(payload()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DIR_UP, IPPROTO_TCP};

    fn record(kind: u8, captured: &[u8]) -> ([u8; size_of::<PayloadEvent>()], usize) {
        let mut ev = PayloadEvent {
            header: EventHeader { kind, direction: DIR_UP, ..EventHeader::default() },
            payload_len: 999,
            captured_len: captured.len() as u32,
            data: [0; PAYLOAD_CAP],
        };
        ev.data[..captured.len()].copy_from_slice(captured);
        ev.header.key.protocol = IPPROTO_TCP;
        // SAFETY: PayloadEvent is plain data without padding bytes.
        let bytes = unsafe { core::mem::transmute::<PayloadEvent, [u8; size_of::<PayloadEvent>()]>(ev) };
        (bytes, PayloadEvent::record_len(captured.len() as u32) as usize)
    }

    #[test]
    fn a_payload_record_is_cut_at_its_captured_length() {
        let (bytes, len) = record(EventKind::Dns as u8, b"hello");
        assert_eq!(len, PayloadEvent::DATA_OFFSET + 5);
        let Ok(Event::Dns(p)) = decode(&bytes[..len]) else { panic!("{:?}", decode(&bytes[..len])) };
        assert_eq!((p.len, p.data), (999, &b"hello"[..]));
        assert_eq!(decode(&bytes[..len - 1]), Err(DecodeError::Short { len: len - 1 }));
    }

    #[test]
    fn unknown_kinds_and_short_headers_are_errors() {
        let (bytes, len) = record(9, b"x");
        assert_eq!(decode(&bytes[..len]), Err(DecodeError::UnknownKind(9)));
        assert_eq!(decode(&bytes[..10]), Err(DecodeError::Short { len: 10 }));
        let (bytes, _) = record(EventKind::BlockHit as u8, b"");
        assert!(matches!(decode(&bytes[..size_of::<EventHeader>()]), Ok(Event::BlockHit(_))));
    }

    #[test]
    fn merge_sums_counts_and_keeps_the_earliest_first_stamp() {
        let a = FlowStats {
            packets_up: 2,
            first_seen_ns: 0,
            last_seen_ns: 9,
            tcp_flags_up: TCP_FIN,
            ..FlowStats::default()
        };
        let b = FlowStats {
            packets_up: 3,
            first_seen_ns: 5,
            last_seen_ns: 7,
            tcp_flags_down: TCP_FIN,
            ..FlowStats::default()
        };
        let m = FlowStats::merge([&a, &b]);
        assert_eq!((m.packets_up, m.first_seen_ns, m.last_seen_ns), (5, 5, 9));
        assert!(m.tcp_ended());
        assert!(!a.tcp_ended() && !b.tcp_ended());
        assert!(FlowStats { tcp_flags_down: TCP_RST, ..FlowStats::default() }.tcp_ended());
    }
}
