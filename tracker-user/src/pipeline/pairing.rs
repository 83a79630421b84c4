//! DNS query/response pairing: the log rows of the DNS exchanges the devices made, each query
//! matched with its response, retransmissions counted once, unanswered queries logged after a
//! timeout.

use std::{
    collections::{HashMap, VecDeque, hash_map::DefaultHasher},
    hash::{Hash as _, Hasher as _},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use tracker_common::{DIR_UP, EventHeader, FlowKey, IPPROTO_TCP};

use crate::{
    analysis::dns::{self, DnsMessage, Transport},
    store::DnsRecord,
    timefmt,
};

/// A query without a response after this long is logged as unanswered.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Queries awaiting a response, over all clients; beyond this the oldest is logged unanswered.
const MAX_PENDING: usize = 16_384;
/// Counters for `tracker status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    pub messages: u64,
    pub malformed: u64,
}

/// One DNS exchange's identity: a response matches its query on all of these (RFC 5452 §9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Exchange {
    client: IpAddr,
    client_port: u16,
    resolver: IpAddr,
    resolver_port: u16,
    transport: Transport,
    id: u16,
}

impl Exchange {
    /// The log row of this exchange as first seen at `at_ms`, not yet answered.
    fn record(&self, question: &dns::Question, at_ms: i64) -> DnsRecord {
        let Self { client, client_port, resolver, resolver_port, transport, id } = *self;
        DnsRecord {
            ts_ms: at_ms,
            answered_ms: None,
            client,
            client_port,
            resolver,
            resolver_port,
            transport,
            dns_id: id,
            qname: question.name.clone(),
            qtype: question.qtype.clone(),
            rcode: None,
            truncated: false,
            answers: Vec::new(),
            blocked_by: None,
        }
    }
}

/// Which unanswered queries [`DnsPairing::expire`] logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// Those older than [`RESPONSE_TIMEOUT`] at this time.
    TimedOut(SystemTime),
    /// The oldest one: the pending table is full.
    Oldest,
    /// Every one: the final flush.
    All,
}

/// Pairs the DNS messages the kernel hands over into [`DnsRecord`]s.
#[derive(Default)]
pub struct DnsPairing {
    pending: HashMap<Exchange, DnsRecord>,
    /// Pending exchanges in arrival order (entries already answered are skipped when met), so
    /// that timeouts and evicting the oldest cost O(1) per query, not a scan of the table.
    pending_order: VecDeque<Exchange>,
    /// Exchanges answered in the last [`RESPONSE_TIMEOUT`], with the answer's time: a TCP
    /// segment the client or server sends again carries the same message, which is the same
    /// exchange, not a second lookup.
    answered: HashMap<Exchange, i64>,
    /// DNS-over-TCP segments seen in the last [`RESPONSE_TIMEOUT`] (flow, direction, hash of
    /// the bytes), with their time. A segment TCP sends again is the same message: it is not
    /// counted again, well-formed or not (a malformed one has no exchange to match it by).
    tcp_segments: HashMap<(FlowKey, u8, u64), i64>,
    done: Vec<DnsRecord>,
    stats: DnsStats,
}

impl DnsPairing {
    /// Nothing waits for time alone: no query pending its response (whose timeout would log
    /// it) and no exchange logged but not taken.
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.done.is_empty()
    }

    pub fn stats(&self) -> DnsStats {
        self.stats
    }

    /// A DNS message crossed the interface (`h.direction` up: from a client).
    /// Returns the response just logged when its answers are the device's to learn (it answered
    /// the query it claims to, or no query was seen).
    pub fn message(&mut self, h: &EventHeader, data: &[u8], at: SystemTime) -> Option<&DnsRecord> {
        let at_ms = timefmt::unix_ms(at);
        let transport = if h.key.protocol == IPPROTO_TCP { Transport::Tcp } else { Transport::Udp };
        if transport == Transport::Tcp && self.tcp_retransmission(h, data, at_ms) {
            return None;
        }
        self.stats.messages += 1;
        let msg = match dns::parse(data, transport) {
            Ok(msg) if !msg.questions.is_empty() => msg,
            Ok(_) => return self.malformed(h, "no question"),
            Err(e) => return self.malformed(h, &format!("{e:#}")),
        };
        let (client, resolver) = (h.key.client(), h.key.remote());
        let exchange = Exchange {
            client,
            client_port: h.key.client_port,
            resolver,
            resolver_port: h.key.remote_port,
            transport,
            id: msg.id,
        };
        let question = &msg.questions[0];
        let from_client = h.direction == DIR_UP;
        match (from_client, msg.is_response) {
            (true, false) => {
                // A retransmission (same id, same ports) is the same exchange: keep the first.
                if self.pending.contains_key(&exchange) || self.answered_recently(&exchange, at_ms) {
                    return None;
                }
                if self.pending.len() >= MAX_PENDING {
                    self.expire(Expiry::Oldest);
                }
                self.pending.insert(exchange, exchange.record(question, at_ms));
                self.pending_order.push_back(exchange);
                None
            }
            (false, true) => {
                // A response to another question is not this query's answer (spoofed or
                // broken): the query keeps waiting, the response is logged on its own.
                let matches =
                    self.pending.get(&exchange).is_some_and(|q| q.qname == question.name && q.qtype == question.qtype);
                if !matches && self.answered_recently(&exchange, at_ms) {
                    return None; // the response again (a TCP retransmission)
                }
                let query = if matches { self.pending.remove(&exchange) } else { None };
                let spoofed = !matches && self.pending.contains_key(&exchange);
                if !spoofed {
                    self.answered.insert(exchange, at_ms);
                }
                let DnsMessage { rcode, truncated, answers, .. } = msg;
                let record = DnsRecord {
                    answered_ms: Some(at_ms),
                    rcode: Some(rcode),
                    truncated,
                    answers,
                    ..query.unwrap_or_else(|| exchange.record(question, at_ms))
                };
                self.done.push(record);
                self.done.last().filter(|_| !spoofed)
            }
            _ => {
                // A client serving DNS, or a server querying one: not a lookup by a device.
                tracing::debug!(%client, %resolver, "DNS message in an unexpected direction");
                None
            }
        }
    }

    /// A query the kernel answered itself for the block rule `rule_id` (its DnsRefused event
    /// carries the query as the device sent it): logged at once as answered at the same moment,
    /// NXDOMAIN over UDP, no rcode over TCP (the kernel resets the connection), and never
    /// waiting for a response that will not come. Each refused query is logged: the kernel
    /// answered (and counted) each one.
    pub fn refused(&mut self, h: &EventHeader, data: &[u8], at: SystemTime, rule_id: u32) {
        let at_ms = timefmt::unix_ms(at);
        let transport = if h.key.protocol == IPPROTO_TCP { Transport::Tcp } else { Transport::Udp };
        self.stats.messages += 1;
        let msg = match dns::parse(data, transport) {
            Ok(msg) if !msg.questions.is_empty() => msg,
            Ok(_) => {
                self.malformed(h, "no question");
                return;
            }
            Err(e) => {
                self.malformed(h, &format!("{e:#}"));
                return;
            }
        };
        let exchange = Exchange {
            client: h.key.client(),
            client_port: h.key.client_port,
            resolver: h.key.remote(),
            resolver_port: h.key.remote_port,
            transport,
            id: msg.id,
        };
        let mut record = exchange.record(&msg.questions[0], at_ms);
        record.answered_ms = Some(at_ms);
        record.rcode = (transport == Transport::Udp).then(|| "NXDOMAIN".to_owned());
        record.blocked_by = Some(rule_id);
        self.done.push(record);
    }

    /// Whether the same bytes crossed in the same direction of the same TCP flow within
    /// [`RESPONSE_TIMEOUT`]; remembers them otherwise.
    fn tcp_retransmission(&mut self, h: &EventHeader, data: &[u8], at_ms: i64) -> bool {
        // Nothing captured (the copy failed) identifies nothing; and past the cap (a flood of
        // distinct segments between two sweeps) segments are counted rather than remembered.
        if data.is_empty() || self.tcp_segments.len() >= MAX_PENDING {
            return false;
        }
        let mut hasher = DefaultHasher::new();
        data.hash(&mut hasher);
        let seen = (h.key, h.direction, hasher.finish());
        let window = RESPONSE_TIMEOUT.as_millis() as i64;
        matches!(self.tcp_segments.insert(seen, at_ms), Some(t) if at_ms - t < window)
    }

    fn answered_recently(&self, exchange: &Exchange, at_ms: i64) -> bool {
        self.answered.get(exchange).is_some_and(|&t| at_ms - t < RESPONSE_TIMEOUT.as_millis() as i64)
    }

    fn malformed(&mut self, h: &EventHeader, why: &str) -> Option<&DnsRecord> {
        self.stats.malformed += 1;
        let (client, remote) = (h.key.client(), h.key.remote());
        tracing::debug!(%client, %remote, why, "DNS message ignored");
        None
    }

    /// Exchanges ready for the database: the answered ones, plus queries left unanswered past
    /// [`RESPONSE_TIMEOUT`] (or all pending ones, at `now = None`: the final flush).
    pub fn take_records(&mut self, now: Option<SystemTime>) -> Vec<DnsRecord> {
        self.expire(now.map_or(Expiry::All, Expiry::TimedOut));
        std::mem::take(&mut self.done)
    }

    /// Moves unanswered queries to `done`, oldest first.
    fn expire(&mut self, which: Expiry) {
        let cutoff = match which {
            Expiry::TimedOut(now) => timefmt::unix_ms(now) - RESPONSE_TIMEOUT.as_millis() as i64,
            Expiry::Oldest | Expiry::All => i64::MAX,
        };
        if which != Expiry::Oldest {
            self.answered.retain(|_, t| *t > cutoff);
            self.tcp_segments.retain(|_, t| *t > cutoff);
        }
        while let Some(exchange) = self.pending_order.front().copied() {
            let Some(record) = self.pending.get(&exchange) else {
                self.pending_order.pop_front(); // answered meanwhile
                continue;
            };
            if record.ts_ms > cutoff {
                break;
            }
            self.pending_order.pop_front();
            if let Some(record) = self.pending.remove(&exchange) {
                self.done.push(record);
            }
            if which == Expiry::Oldest {
                break;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::IpAddr;

    use tracker_common::{DIR_DOWN, EventKind, FAMILY_V4, IPPROTO_UDP};

    use super::*;
    use crate::analysis::dns::tests::{Msg, wire};

    pub(crate) const PHONE: [u8; 4] = [10, 77, 0, 2];
    pub(crate) const RESOLVER: [u8; 4] = [10, 77, 0, 1];

    pub(crate) fn key(remote: [u8; 4], protocol: u8, client_port: u16, remote_port: u16) -> FlowKey {
        let mut k = FlowKey { protocol, family: FAMILY_V4, client_port, remote_port, ..FlowKey::default() };
        k.client[..4].copy_from_slice(&PHONE);
        k.remote[..4].copy_from_slice(&remote);
        k
    }

    pub(crate) fn header(kind: EventKind, direction: u8, key: FlowKey) -> EventHeader {
        EventHeader { kind: kind as u8, direction, _pad: [0; 2], rule_id: 0, ts_ns: 0, key }
    }

    pub(crate) fn t(ms: i64) -> SystemTime {
        timefmt::time_of_ms(1_700_000_000_000 + ms)
    }

    /// A DNS message with the parser's own test builder: answers are (owner, address or CNAME
    /// target).
    pub(crate) fn message(id: u16, response: bool, qname: &str, answers: &[(&str, &str)]) -> Vec<u8> {
        let flags = if response { 0x8180 } else { 0x0100 };
        let counts = [1, u16::try_from(answers.len()).unwrap(), 0, 0];
        let mut m = Msg::new(id, flags, counts).question(&wire(qname), 1);
        for (owner, data) in answers {
            m = match data.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => m.rr(&wire(owner), 1, 300, &ip.octets()),
                Ok(IpAddr::V6(ip)) => m.rr(&wire(owner), 28, 300, &ip.octets()),
                Err(_) => m.rr(&wire(owner), 5, 300, &wire(data)),
            };
        }
        m.bytes
    }

    #[test]
    fn a_refused_query_is_logged_at_once_as_answered_by_its_rule() {
        let mut n = DnsPairing::default();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        let q = message(9, false, "ads.example.com", &[]);
        n.refused(&header(EventKind::DnsRefused, DIR_UP, k), &q, t(10), 7);
        assert!(!n.is_settled(), "the next sweep writes it");
        let r = n.take_records(Some(t(11)));
        assert_eq!(r.len(), 1, "without waiting for the response timeout");
        assert_eq!((r[0].ts_ms, r[0].answered_ms), (r[0].ts_ms, Some(r[0].ts_ms)));
        assert_eq!(r[0].ts_ms, timefmt::unix_ms(t(10)));
        assert_eq!(r[0].rcode.as_deref(), Some("NXDOMAIN"));
        assert_eq!(r[0].blocked_by, Some(7));
        assert_eq!((r[0].qname.as_str(), r[0].qtype.as_str(), r[0].dns_id), ("ads.example.com", "A", 9));
        assert!(r[0].answers.is_empty());
        // Over TCP the kernel resets the connection: no DNS answer, so no rcode.
        let k = key(RESOLVER, IPPROTO_TCP, 43000, 53);
        let framed = [u16::try_from(q.len()).unwrap().to_be_bytes().to_vec(), q].concat();
        n.refused(&header(EventKind::DnsRefused, DIR_UP, k), &framed, t(20), 7);
        let r = n.take_records(Some(t(21)));
        assert_eq!((r[0].rcode.as_deref(), r[0].blocked_by, r[0].transport), (None, Some(7), Transport::Tcp));
        // A query that does not parse is counted as malformed and logs nothing.
        n.refused(&header(EventKind::DnsRefused, DIR_UP, k), &[0xde, 0xad], t(30), 7);
        assert!(n.take_records(None).is_empty());
        assert_eq!(n.stats(), DnsStats { messages: 3, malformed: 1 });
    }

    #[test]
    fn unanswered_queries_wait_for_the_timeout_then_are_logged() {
        let mut n = DnsPairing::default();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        n.message(&header(EventKind::Dns, DIR_UP, k), &message(1, false, "lost.example", &[]), t(0));
        n.message(&header(EventKind::Dns, DIR_UP, k), &message(1, false, "lost.example", &[]), t(1000));
        assert!(n.take_records(Some(t(4_999))).is_empty());
        let r = n.take_records(Some(t(5_000)));
        assert_eq!(r.len(), 1, "a retransmission is the same exchange");
        assert_eq!(r[0].rcode, None);
        n.message(&header(EventKind::Dns, DIR_UP, k), &message(2, false, "x.example", &[]), t(6_000));
        assert_eq!(n.take_records(None).len(), 1, "the final flush takes everything");
    }

    #[test]
    fn a_full_pending_table_logs_its_oldest_and_the_final_flush_takes_all() {
        let mut n = DnsPairing::default();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        let query = message(0, false, "flood.example", &[]);
        for i in 0..=MAX_PENDING {
            let mut q = query.clone();
            q[..2].copy_from_slice(&u16::try_from(i % 65_536).unwrap().to_be_bytes());
            n.message(&header(EventKind::Dns, DIR_UP, k), &q, t(i as i64));
        }
        assert_eq!(n.done.len(), 1, "the oldest made room");
        assert_eq!(n.done[0].dns_id, 0);
        assert_eq!(n.take_records(None).len(), MAX_PENDING + 1);
        assert!(n.pending.is_empty());
    }

    #[test]
    fn a_retransmitted_tcp_exchange_is_logged_once() {
        let mut n = DnsPairing::default();
        let k = key(RESOLVER, IPPROTO_TCP, 43009, 53);
        let framed = |m: Vec<u8>| [u16::try_from(m.len()).unwrap().to_be_bytes().to_vec(), m].concat();
        let q = framed(message(5, false, "deep.example", &[]));
        let r = framed(message(5, true, "deep.example", &[("deep.example", "192.0.2.5")]));
        for at in [0, 376] {
            n.message(&header(EventKind::Dns, DIR_UP, k), &q, t(at));
            n.message(&header(EventKind::Dns, DIR_DOWN, k), &r, t(at + 2));
        }
        assert_eq!(n.take_records(Some(t(1_000))).len(), 1);
        // Once the timeout has passed, the same id and ports are a new lookup.
        n.message(&header(EventKind::Dns, DIR_UP, k), &q, t(6_000));
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &r, t(6_002));
        assert_eq!(n.take_records(Some(t(6_100))).len(), 1);
        // The segments sent again are not messages of their own.
        assert_eq!(n.stats(), DnsStats { messages: 4, malformed: 0 });
    }

    #[test]
    fn a_tcp_segment_sent_again_is_counted_once() {
        let mut n = DnsPairing::default();
        let k = key(RESOLVER, IPPROTO_TCP, 40053, 53);
        let garbage = [0x00, 0x04, 0xde, 0xad, 0xbe, 0xef];
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &garbage, t(0));
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &garbage, t(1));
        assert_eq!(n.stats(), DnsStats { messages: 1, malformed: 1 }, "a retransmission");
        // Other bytes, or the same bytes once the window has passed, are another message.
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &garbage[..5], t(2));
        let later = t(0) + RESPONSE_TIMEOUT + Duration::from_secs(1);
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &garbage, later);
        assert_eq!(n.stats(), DnsStats { messages: 3, malformed: 3 });
        // UDP has no retransmission: a datagram sent twice was sent twice.
        let u = key(RESOLVER, IPPROTO_UDP, 40053, 53);
        n.message(&header(EventKind::Dns, DIR_DOWN, u), &garbage[2..], t(3));
        n.message(&header(EventKind::Dns, DIR_DOWN, u), &garbage[2..], t(3));
        assert_eq!(n.stats(), DnsStats { messages: 5, malformed: 5 });
        // Nothing captured is no identity: two such events are two messages.
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &[], t(4));
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &[], t(4));
        assert_eq!(n.stats(), DnsStats { messages: 7, malformed: 7 });
    }

    #[test]
    fn malformed_messages_are_counted_and_name_nothing() {
        let mut n = DnsPairing::default();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &[0xde, 0xad], t(0));
        let mut loop_msg = message(3, true, "loop.example", &[]);
        // Point the question name at itself: a compression-pointer loop.
        loop_msg[12] = 0xc0;
        loop_msg[13] = 12;
        n.message(&header(EventKind::Dns, DIR_DOWN, k), &loop_msg, t(1));
        assert_eq!(n.stats(), DnsStats { messages: 2, malformed: 2 });
        assert!(n.take_records(None).is_empty());
    }
}
