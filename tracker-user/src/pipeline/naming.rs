//! The daemon's naming state: pairs DNS queries with their responses into log rows, learns the
//! answers each client received, and names flows from them (or from the flow's TLS server name or
//! HTTP Host) when they are swept.

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map::DefaultHasher},
    hash::{Hash as _, Hasher as _},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use tracker_common::{DIR_UP, EventHeader, FlowKey, IPPROTO_TCP};

use crate::{
    analysis::{
        addr::{self, AddrClass},
        dns::{self, Answer, DnsMessage, Transport},
        http,
        names::{self, Evidence, FlowName, NameTable},
        tls,
    },
    store::{DnsRecord, dns::StoredAnswers},
    timefmt::{self, time_of_ms},
    wireguard::Devices,
};

/// How long after its TTL an answer still names new flows: apps keep using addresses past the
/// TTL (connection pools, their own caches, TTL-0 answers used at once).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10 * 60);
/// Answers remembered per client; the oldest go first.
const MAX_ANSWERS_PER_CLIENT: usize = 65_536;
/// A query without a response after this long is logged as unanswered.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Queries awaiting a response, over all clients; beyond this the oldest is logged unanswered.
const MAX_PENDING: usize = 16_384;
/// How far back a restarted daemon reloads answers from the database.
pub const RELOAD_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// At most this many stored exchanges are reloaded.
pub const RELOAD_LIMIT: u32 = 200_000;

/// Keys of the counters the daemon publishes in its facts (numbers in `tracker status`).
pub mod facts {
    /// DNS messages the kernel handed over (queries and responses).
    pub const DNS_MESSAGES: &str = "dns_messages";
    /// Messages that did not parse (hostile, broken, or a TCP segment that does not start a
    /// message): logged at debug and otherwise ignored; they name nothing.
    pub const DNS_MALFORMED: &str = "dns_malformed";
    pub const ALL: [&str; 2] = [DNS_MESSAGES, DNS_MALFORMED];
}

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
        }
    }
}

/// Which unanswered queries [`Namer::expire`] logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// Those older than [`RESPONSE_TIMEOUT`] at this time.
    TimedOut(SystemTime),
    /// The oldest one: the pending table is full.
    Oldest,
    /// Every one: the final flush.
    All,
}

/// What is known about one live flow.
#[derive(Debug)]
struct FlowFacts {
    started: SystemTime,
    evidence: Evidence,
}

impl FlowFacts {
    /// A flow that started at `at`, with the DNS names its device had for the remote then.
    fn new(table: &NameTable, devices: &Devices, key: &FlowKey, at: SystemTime) -> Self {
        let (client, remote) = (key.client(), key.remote());
        let dns = table.candidates(devices.device(client), remote, at);
        Self { started: at, evidence: Evidence { dns, ..Evidence::default() } }
    }
}

pub struct Namer {
    table: NameTable,
    local_nets: Vec<IpNet>,
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
    flows: HashMap<FlowKey, FlowFacts>,
    /// (device, address) pairs answered since the last sweep: flows of that device to that
    /// address without a DNS name may take it now ([`Namer::may_rename`]). Looked up by the
    /// sweep, which walks every live flow anyway, rather than kept as a set of unnamed flows
    /// per address, which in a flood of unnamed flows was the namer's largest part.
    fresh_answers: HashSet<(IpAddr, IpAddr)>,
    /// Which client addresses are one device: answers are learned and looked up per device.
    devices: Devices,
    /// Flows whose evidence changed since they were last swept.
    renamed: HashSet<FlowKey>,
    stats: DnsStats,
}

impl Namer {
    /// `local_nets` are the VPN's own subnets (the interface's addresses and `--local-net`):
    /// peers in them are `local`, like private and loopback addresses.
    pub fn new(local_nets: Vec<IpNet>, grace: Duration) -> Self {
        Self {
            table: NameTable::new(grace, MAX_ANSWERS_PER_CLIENT),
            local_nets,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            answered: HashMap::new(),
            tcp_segments: HashMap::new(),
            done: Vec::new(),
            flows: HashMap::new(),
            fresh_answers: HashSet::new(),
            devices: Devices::default(),
            renamed: HashSet::new(),
            stats: DnsStats::default(),
        }
    }

    pub fn stats(&self) -> DnsStats {
        self.stats
    }

    /// Sets the WireGuard peers' addresses: a phone's IPv4 and IPv6 tunnel addresses are one
    /// device, so an A/AAAA answer it received over IPv4 names its IPv6 flows too. Answers
    /// already learned stay under the device they were learned for.
    pub fn set_devices(&mut self, devices: Devices) {
        self.devices = devices;
    }

    /// Relearns answers a previous daemon stored, so flows that start (or are still open) after
    /// a restart are named. Expired ones are dropped at once.
    pub fn reload(&mut self, stored: &[StoredAnswers], now: SystemTime) {
        for StoredAnswers { client, answered_ms, qname, answers } in stored {
            self.learn(*client, qname, answers, time_of_ms(*answered_ms));
        }
        self.table.prune(now);
    }

    /// The first payload a flow carried upwards: a TLS ClientHello or an HTTP request names it.
    pub fn first_payload(&mut self, h: &EventHeader, data: &[u8], at: SystemTime) {
        if h.direction != DIR_UP || h.key.protocol != IPPROTO_TCP {
            // QUIC's server name is inside encrypted Initial packets; downward payloads are the
            // server's.
            return;
        }
        let (sni, host) = if tls::looks_like_tls(data) {
            (tls::client_hello_sni(data), None)
        } else if http::looks_like_http(data) {
            (None, http::http_host(data))
        } else {
            return;
        };
        if sni.is_none() && host.is_none() {
            return;
        }
        let facts = self.flow_facts(&h.key, at);
        facts.evidence.sni = sni.or(facts.evidence.sni.take());
        facts.evidence.http = host.or(facts.evidence.http.take());
        self.renamed.insert(h.key);
    }

    /// A DNS message crossed the interface (`h.direction` up: from a client).
    pub fn dns_message(&mut self, h: &EventHeader, data: &[u8], at: SystemTime) {
        let at_ms = timefmt::unix_ms(at);
        let transport = if h.key.protocol == IPPROTO_TCP { Transport::Tcp } else { Transport::Udp };
        if transport == Transport::Tcp && self.tcp_retransmission(h, data, at_ms) {
            return;
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
                    return;
                }
                if self.pending.len() >= MAX_PENDING {
                    self.expire(Expiry::Oldest);
                }
                self.pending.insert(exchange, exchange.record(question, at_ms));
                self.pending_order.push_back(exchange);
            }
            (false, true) => {
                // A response to another question is not this query's answer (spoofed or
                // broken): the query keeps waiting, the response is logged on its own.
                let matches =
                    self.pending.get(&exchange).is_some_and(|q| q.qname == question.name && q.qtype == question.qtype);
                if !matches && self.answered_recently(&exchange, at_ms) {
                    return; // the response again (a TCP retransmission)
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
                if !spoofed {
                    self.learn(client, &record.qname, &record.answers, at);
                }
                self.done.push(record);
            }
            // A client serving DNS, or a server querying one: not a lookup by a device.
            _ => tracing::debug!(%client, %resolver, "DNS message in an unexpected direction"),
        }
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
        match self.tcp_segments.insert(seen, at_ms) {
            Some(t) if at_ms - t < window => true,
            _ => false,
        }
    }

    fn answered_recently(&self, exchange: &Exchange, at_ms: i64) -> bool {
        self.answered.get(exchange).is_some_and(|&t| at_ms - t < RESPONSE_TIMEOUT.as_millis() as i64)
    }

    fn malformed(&mut self, h: &EventHeader, why: &str) {
        self.stats.malformed += 1;
        let (client, remote) = (h.key.client(), h.key.remote());
        tracing::debug!(%client, %remote, why, "DNS message ignored");
    }

    /// Remembers what `client`'s device was told, and marks its flows to those addresses that
    /// have no DNS name yet for renaming.
    fn learn(&mut self, client: IpAddr, qname: &str, answers: &[Answer], at: SystemTime) {
        let device = self.devices.device(client);
        let addresses = dns::addresses_for(answers, qname);
        for (ip, ttl, chain) in &addresses {
            self.table.record_answer(device, *ip, qname, chain.last().map(String::as_str), *ttl, at);
        }
        self.fresh_answers.extend(addresses.iter().map(|(ip, _, _)| (device, ip.to_canonical())));
    }

    /// Exchanges ready for the database: the answered ones, plus queries left unanswered past
    /// [`RESPONSE_TIMEOUT`] (or all pending ones, at `now = None`: the final flush).
    pub fn take_dns_records(&mut self, now: Option<SystemTime>) -> Vec<DnsRecord> {
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

    /// Flows whose name may have changed since their last sweep; the sweeper writes them even
    /// if their counters did not move.
    pub fn take_renamed(&mut self) -> HashSet<FlowKey> {
        std::mem::take(&mut self.renamed)
    }

    /// The name and class of a flow being swept. `first_seen` is the kernel's first packet,
    /// used when the flow's creation event was not seen (it predates the daemon).
    pub fn name_flow(&mut self, key: &FlowKey, first_seen: SystemTime, now: SystemTime) -> (FlowName, AddrClass) {
        let (client, remote) = (key.client(), key.remote());
        let client = self.devices.device(client);
        let class = addr::classify(remote, &self.local_nets);
        // Facts are kept only for flows that have some: most flows of a flood, or of a port
        // scan, have none, and remembering nothing for them keeps the daemon small. An unnamed
        // flow is looked up again at its first-seen time on each write, which finds the same.
        let table = &self.table;
        let known = self.flows.remove(key);
        let remembered = known.is_some();
        let mut facts = known.unwrap_or_else(|| FlowFacts::new(table, &self.devices, key, first_seen));
        if facts.evidence.dns.is_empty() && !class.is_local() {
            facts.evidence.dns = table.candidates(client, remote, facts.started);
            // Looking again at `started` finds answers stamped before the flow but handled
            // after it. An answer that came later did not lead to this flow: a flow the client
            // named itself (SNI, Host) keeps that name; one with no name at all takes it, which
            // is better than none.
            let spoken = facts.evidence.sni.is_some() || facts.evidence.http.is_some();
            if facts.evidence.dns.is_empty() && !spoken {
                facts.evidence.dns = table.candidates(client, remote, now);
            }
        }
        let name = names::choose(class.is_local(), &facts.evidence);
        if remembered || !facts.evidence.is_empty() {
            self.flows.insert(*key, facts);
        }
        (name, class)
    }

    /// Whether a DNS answer since the last sweep may name this flow, which has no DNS name
    /// yet: the sweep writes it again even if its counters did not move.
    pub fn may_rename(&self, key: &FlowKey) -> bool {
        if self.fresh_answers.is_empty() {
            return false;
        }
        let remote = key.remote().to_canonical();
        self.fresh_answers.contains(&(self.devices.device(key.client()), remote))
            && self.flows.get(key).is_none_or(|f| f.evidence.dns.is_empty())
            && !addr::classify(remote, &self.local_nets).is_local()
    }

    fn flow_facts(&mut self, key: &FlowKey, at: SystemTime) -> &mut FlowFacts {
        let (table, devices) = (&self.table, &self.devices);
        self.flows.entry(*key).or_insert_with(|| FlowFacts::new(table, devices, key, at))
    }

    /// Ends a sweep: forgets flows the sweeper no longer remembers, the answers it has seen
    /// since the last one, and answers past TTL + grace.
    pub fn retain(&mut self, live: impl Fn(&FlowKey) -> bool, now: SystemTime) {
        self.flows.retain(|k, _| live(k));
        self.fresh_answers.clear();
        self.table.prune(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{
        dns::tests::{Msg, wire},
        names::NameSource,
    };
    use tracker_common::{DIR_DOWN, EventKind, FAMILY_V4, IPPROTO_UDP};

    const PHONE: [u8; 4] = [10, 77, 0, 2];
    const RESOLVER: [u8; 4] = [10, 77, 0, 1];

    fn key(remote: [u8; 4], protocol: u8, client_port: u16, remote_port: u16) -> FlowKey {
        let mut k = FlowKey { protocol, family: FAMILY_V4, client_port, remote_port, ..FlowKey::default() };
        k.client[..4].copy_from_slice(&PHONE);
        k.remote[..4].copy_from_slice(&remote);
        k
    }

    fn header(kind: EventKind, direction: u8, key: FlowKey) -> EventHeader {
        EventHeader { kind: kind as u8, direction, _pad: [0; 2], rule_id: 0, ts_ns: 0, key }
    }

    fn t(ms: i64) -> SystemTime {
        time_of_ms(1_700_000_000_000 + ms)
    }

    /// A DNS message with the parser's own test builder: answers are (owner, address or CNAME
    /// target).
    fn message(id: u16, response: bool, qname: &str, answers: &[(&str, &str)]) -> Vec<u8> {
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

    fn namer() -> Namer {
        Namer::new(vec!["10.77.0.0/24".parse().unwrap()], DEFAULT_GRACE)
    }

    fn ask(n: &mut Namer, id: u16, qname: &str, answers: &[(&str, &str)], at: i64) {
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        n.dns_message(&header(EventKind::Dns, DIR_UP, k), &message(id, false, qname, &[]), t(at));
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &message(id, true, qname, answers), t(at + 3));
    }

    #[test]
    fn query_and_response_pair_into_one_record_and_name_the_next_flow() {
        let mut n = namer();
        ask(
            &mut n,
            7,
            "www.example.com",
            &[("www.example.com", "edge.cdn.example"), ("edge.cdn.example", "192.0.2.7")],
            0,
        );
        let records = n.take_dns_records(Some(t(10)));
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.ts_ms, r.answered_ms), (timefmt::unix_ms(t(0)), Some(timefmt::unix_ms(t(3)))));
        assert_eq!((r.qname.as_str(), r.rcode.as_deref()), ("www.example.com", Some("NOERROR")));
        assert_eq!(r.cname().as_deref(), Some("edge.cdn.example"));

        let flow = key([192, 0, 2, 7], IPPROTO_TCP, 40000, 443);
        let _ = n.name_flow(&flow, t(20), t(20));
        let (name, class) = n.name_flow(&flow, t(20), t(30));
        assert_eq!(class, AddrClass::Documentation);
        assert_eq!(name.name.as_deref(), Some("www.example.com"));
        assert_eq!(name.cname.as_deref(), Some("edge.cdn.example"));
        assert_eq!(name.source, Some(NameSource::Dns));
        assert_eq!(n.stats(), DnsStats { messages: 2, malformed: 0 });
    }

    #[test]
    fn unanswered_queries_wait_for_the_timeout_then_are_logged() {
        let mut n = namer();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        n.dns_message(&header(EventKind::Dns, DIR_UP, k), &message(1, false, "lost.example", &[]), t(0));
        n.dns_message(&header(EventKind::Dns, DIR_UP, k), &message(1, false, "lost.example", &[]), t(1000));
        assert!(n.take_dns_records(Some(t(4_999))).is_empty());
        let r = n.take_dns_records(Some(t(5_000)));
        assert_eq!(r.len(), 1, "a retransmission is the same exchange");
        assert_eq!(r[0].rcode, None);
        n.dns_message(&header(EventKind::Dns, DIR_UP, k), &message(2, false, "x.example", &[]), t(6_000));
        assert_eq!(n.take_dns_records(None).len(), 1, "the final flush takes everything");
    }

    #[test]
    fn a_full_pending_table_logs_its_oldest_and_the_final_flush_takes_all() {
        let mut n = namer();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        let query = message(0, false, "flood.example", &[]);
        for i in 0..=MAX_PENDING {
            let mut q = query.clone();
            q[..2].copy_from_slice(&u16::try_from(i % 65_536).unwrap().to_be_bytes());
            n.dns_message(&header(EventKind::Dns, DIR_UP, k), &q, t(i as i64));
        }
        assert_eq!(n.done.len(), 1, "the oldest made room");
        assert_eq!(n.done[0].dns_id, 0);
        assert_eq!(n.take_dns_records(None).len(), MAX_PENDING + 1);
        assert!(n.pending.is_empty());
    }

    #[test]
    fn a_retransmitted_tcp_exchange_is_logged_once() {
        let mut n = namer();
        let k = key(RESOLVER, IPPROTO_TCP, 43009, 53);
        let framed = |m: Vec<u8>| [u16::try_from(m.len()).unwrap().to_be_bytes().to_vec(), m].concat();
        let q = framed(message(5, false, "deep.example", &[]));
        let r = framed(message(5, true, "deep.example", &[("deep.example", "192.0.2.5")]));
        for at in [0, 376] {
            n.dns_message(&header(EventKind::Dns, DIR_UP, k), &q, t(at));
            n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &r, t(at + 2));
        }
        assert_eq!(n.take_dns_records(Some(t(1_000))).len(), 1);
        // Once the timeout has passed, the same id and ports are a new lookup.
        n.dns_message(&header(EventKind::Dns, DIR_UP, k), &q, t(6_000));
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &r, t(6_002));
        assert_eq!(n.take_dns_records(Some(t(6_100))).len(), 1);
        // The segments sent again are not messages of their own.
        assert_eq!(n.stats(), DnsStats { messages: 4, malformed: 0 });
    }

    #[test]
    fn a_response_for_another_question_is_not_paired() {
        let mut n = namer();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        n.dns_message(&header(EventKind::Dns, DIR_UP, k), &message(9, false, "asked.example", &[]), t(0));
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &message(9, true, "spoofed.example", &[]), t(1));
        let mut r = n.take_dns_records(None);
        r.sort_by_key(|r| r.qname.clone());
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].qname.as_str(), r[0].rcode.is_none()), ("asked.example", true));
        assert_eq!((r[1].qname.as_str(), r[1].rcode.is_some()), ("spoofed.example", true));
        // Its answers name nothing either.
        let mut n = namer();
        n.dns_message(&header(EventKind::Dns, DIR_UP, k), &message(9, false, "asked.example", &[]), t(0));
        let forged = message(9, true, "spoofed.example", &[("spoofed.example", "192.0.2.66")]);
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &forged, t(1));
        let flow = key([192, 0, 2, 66], IPPROTO_TCP, 40008, 443);
        let _ = n.name_flow(&flow, t(2), t(2));
        assert_eq!(n.name_flow(&flow, t(2), t(3)).0, FlowName::default());
    }

    #[test]
    fn a_tcp_segment_sent_again_is_counted_once() {
        let mut n = namer();
        let k = key(RESOLVER, IPPROTO_TCP, 40053, 53);
        let garbage = [0x00, 0x04, 0xde, 0xad, 0xbe, 0xef];
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &garbage, t(0));
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &garbage, t(1));
        assert_eq!(n.stats(), DnsStats { messages: 1, malformed: 1 }, "a retransmission");
        // Other bytes, or the same bytes once the window has passed, are another message.
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &garbage[..5], t(2));
        let later = t(0) + RESPONSE_TIMEOUT + Duration::from_secs(1);
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &garbage, later);
        assert_eq!(n.stats(), DnsStats { messages: 3, malformed: 3 });
        // UDP has no retransmission: a datagram sent twice was sent twice.
        let u = key(RESOLVER, IPPROTO_UDP, 40053, 53);
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, u), &garbage[2..], t(3));
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, u), &garbage[2..], t(3));
        assert_eq!(n.stats(), DnsStats { messages: 5, malformed: 5 });
        // Nothing captured is no identity: two such events are two messages.
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &[], t(4));
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &[], t(4));
        assert_eq!(n.stats(), DnsStats { messages: 7, malformed: 7 });
    }

    #[test]
    fn malformed_messages_are_counted_and_name_nothing() {
        let mut n = namer();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &[0xde, 0xad], t(0));
        let mut loop_msg = message(3, true, "loop.example", &[]);
        // Point the question name at itself: a compression-pointer loop.
        loop_msg[12] = 0xc0;
        loop_msg[13] = 12;
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &loop_msg, t(1));
        assert_eq!(n.stats(), DnsStats { messages: 2, malformed: 2 });
        assert!(n.take_dns_records(None).is_empty());
    }

    #[test]
    fn a_late_answer_names_a_flow_that_started_unnamed() {
        let mut n = namer();
        let flow = key([192, 0, 2, 8], IPPROTO_TCP, 40001, 443);
        let _ = n.name_flow(&flow, t(0), t(0));
        let _ = n.take_renamed();
        assert_eq!(n.name_flow(&flow, t(0), t(1)).0, FlowName::default());
        ask(&mut n, 4, "late.example", &[("late.example", "192.0.2.8")], 100);
        assert!(n.may_rename(&flow), "the answer marks the flow for rewriting");
        assert_eq!(n.name_flow(&flow, t(0), t(200)).0.name.as_deref(), Some("late.example"));
    }

    #[test]
    fn an_answer_over_ipv4_names_the_same_devices_ipv6_flow() {
        let mut n = namer();
        let peers = crate::wireguard::parse_allowed_ips("k\t10.77.0.2/32 fd77::2/128\n").unwrap();
        n.set_devices(Devices::new(&peers));
        ask(&mut n, 8, "dual.example", &[("dual.example", "2001:db8::11")], 0);
        let flow = FlowKey {
            client: "fd77::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            remote: "2001:db8::11".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            family: tracker_common::FAMILY_V6,
            ..key([0; 4], IPPROTO_TCP, 40005, 443)
        };
        let _ = n.name_flow(&flow, t(10), t(10));
        assert_eq!(n.name_flow(&flow, t(10), t(11)).0.name.as_deref(), Some("dual.example"));
    }

    #[test]
    fn an_answer_handled_late_but_stamped_before_the_flow_still_names_it() {
        let mut n = namer();
        let flow = key([192, 0, 2, 12], IPPROTO_TCP, 40006, 443);
        let _ = n.name_flow(&flow, t(10), t(10));
        let hello = tls::tests::client_hello(&[tls::tests::sni_ext(b"a.example")]);
        n.first_payload(&header(EventKind::FirstPayload, DIR_UP, flow), &hello, t(11));
        assert_eq!(n.name_flow(&flow, t(10), t(12)).0.source, Some(NameSource::Sni));
        let _ = n.take_renamed();
        // Received (kernel stamp) at 3-6 ms, before the flow; handled after it.
        ask(&mut n, 9, "a.example", &[("a.example", "cdn.example"), ("cdn.example", "192.0.2.12")], 3);
        assert!(n.may_rename(&flow));
        let (name, _) = n.name_flow(&flow, t(10), t(20));
        assert_eq!((name.source, name.cname.as_deref()), (Some(NameSource::Dns), Some("cdn.example")));

        // An answer received after a flow named by its SNI did not lead to that flow.
        let old = key([192, 0, 2, 13], IPPROTO_TCP, 40007, 443);
        let _ = n.name_flow(&old, t(0), t(0));
        n.first_payload(&header(EventKind::FirstPayload, DIR_UP, old), &hello, t(1));
        assert_eq!(n.name_flow(&old, t(0), t(2)).0.source, Some(NameSource::Sni));
        ask(&mut n, 10, "b.example", &[("b.example", "192.0.2.13")], 5);
        let (name, _) = n.name_flow(&old, t(0), t(10));
        assert_eq!((name.name.as_deref(), name.source), (Some("a.example"), Some(NameSource::Sni)));
    }

    #[test]
    fn local_peers_are_local_whatever_dns_said() {
        let mut n = namer();
        ask(&mut n, 5, "router.example", &[("router.example", "192.168.1.1")], 0);
        ask(&mut n, 6, "vpn.example", &[("vpn.example", "10.77.0.1")], 0);
        for remote in [[192, 168, 1, 1], [10, 77, 0, 1]] {
            let flow = key(remote, IPPROTO_TCP, 40002, 80);
            let _ = n.name_flow(&flow, t(10), t(10));
            let (name, class) = n.name_flow(&flow, t(10), t(11));
            assert!(class.is_local(), "{class:?}");
            assert_eq!(name, FlowName { name: None, source: Some(NameSource::Local), cname: None });
        }
    }

    #[test]
    fn the_spoken_name_picks_among_names_sharing_an_address() {
        let mut n = namer();
        ask(&mut n, 1, "a.example", &[("a.example", "192.0.2.9")], 0);
        ask(&mut n, 2, "b.example", &[("b.example", "192.0.2.9")], 10);
        let flow = key([192, 0, 2, 9], IPPROTO_TCP, 40003, 80);
        let _ = n.name_flow(&flow, t(20), t(20));
        let request = b"GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: curl\r\n\r\n";
        n.first_payload(&header(EventKind::FirstPayload, DIR_UP, flow), request, t(21));
        let (name, _) = n.name_flow(&flow, t(20), t(22));
        assert_eq!((name.name.as_deref(), name.source), (Some("a.example"), Some(NameSource::Dns)));
    }

    #[test]
    fn reload_restores_answers_and_retain_forgets_dead_flows() {
        let mut n = namer();
        let stored = StoredAnswers {
            client: IpAddr::from(PHONE),
            answered_ms: timefmt::unix_ms(t(0)),
            qname: "kept.example".into(),
            answers: vec![Answer {
                name: "kept.example".into(),
                rtype: "A".into(),
                ttl: 60,
                data: dns::AnswerData::Addr("192.0.2.10".parse().unwrap()),
            }],
        };
        n.reload(&[stored], t(1_000));
        let flow = key([192, 0, 2, 10], IPPROTO_TCP, 40004, 443);
        assert_eq!(n.name_flow(&flow, t(500), t(2_000)).0.name.as_deref(), Some("kept.example"));
        n.retain(|_| false, t(3_000));
        assert!(n.flows.is_empty() && n.fresh_answers.is_empty());
    }
}
