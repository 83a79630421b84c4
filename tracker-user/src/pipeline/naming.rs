//! Flow naming: the answers each device received, and the name of each flow from them (or from
//! the flow's TLS server name or HTTP Host) when it is swept.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use tracker_common::{DIR_UP, EventHeader, FlowKey, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    analysis::{
        addr::{self, AddrClass},
        dns::{self, Answer},
        http,
        names::{self, Evidence, FlowName, NameTable},
        protocol::{self, AppProtocol, Classification},
        quic, tls,
    },
    store::dns::StoredAnswers,
    timefmt::time_of_ms,
    wireguard::Devices,
};

/// How long after its TTL an answer still names new flows: apps keep using addresses past the
/// TTL (connection pools, their own caches, TTL-0 answers used at once).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10 * 60);
/// Answers remembered per client; the oldest go first.
const MAX_ANSWERS_PER_CLIENT: usize = 65_536;
/// How far back a restarted daemon reloads answers from the database.
pub const RELOAD_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// At most this many stored exchanges are reloaded.
pub const RELOAD_LIMIT: u32 = 200_000;

/// What is known about one live flow.
#[derive(Debug)]
struct FlowFacts {
    started: SystemTime,
    evidence: Evidence,
    /// The protocol the flow's first payload up (the client's) and down showed, if any: what is
    /// kept of a payload, never its bytes.
    protocol_up: Option<AppProtocol>,
    protocol_down: Option<AppProtocol>,
}

impl FlowFacts {
    /// A flow that started at `at`, with the DNS names its device had for the remote then.
    fn new(table: &NameTable, devices: &Devices, key: &FlowKey, at: SystemTime) -> Self {
        let (client, remote) = (key.client(), key.remote());
        let dns = table.candidates(devices.device(client), remote, at);
        Self { started: at, evidence: Evidence { dns, ..Evidence::default() }, protocol_up: None, protocol_down: None }
    }

    fn is_empty(&self) -> bool {
        self.evidence.is_empty() && self.protocol_up.is_none() && self.protocol_down.is_none()
    }
}

/// What the namer says of a flow being swept: its name, its peer's class, its protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    pub name: FlowName,
    pub class: AddrClass,
    pub app: Classification,
}

/// Names flows from what their device was told and what the flow itself said.
pub struct FlowNamer {
    table: NameTable,
    local_nets: Vec<IpNet>,
    /// Looked up for every first payload and every flow swept: foldhash rather than SipHash.
    flows: HashMap<FlowKey, FlowFacts, foldhash::fast::RandomState>,
    /// (device, address) pairs answered since the last sweep: flows of that device to that
    /// address without a DNS name may take it now ([`FlowNamer::may_rename`]). Looked up by the
    /// sweep, which walks every live flow anyway, rather than kept as a set of unnamed flows
    /// per address, which in a flood of unnamed flows was the namer's largest part.
    fresh_answers: HashSet<(IpAddr, IpAddr), foldhash::fast::RandomState>,
    /// Which client addresses are one device: answers are learned and looked up per device.
    devices: Devices,
    /// Flows whose evidence changed since they were last swept.
    renamed: HashSet<FlowKey, foldhash::fast::RandomState>,
}

impl FlowNamer {
    /// `local_nets` are the VPN's own subnets (the interface's addresses and `--local-net`):
    /// peers in them are `local`, like private and loopback addresses.
    pub fn new(local_nets: Vec<IpNet>, grace: Duration) -> Self {
        Self {
            table: NameTable::new(grace, MAX_ANSWERS_PER_CLIENT),
            local_nets,
            flows: HashMap::default(),
            fresh_answers: HashSet::default(),
            devices: Devices::default(),
            renamed: HashSet::default(),
        }
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

    /// The first payload of a flow in one direction: it may show the flow's protocol, and
    /// upwards a TLS ClientHello or an HTTP request names it. Returns the name it spoke.
    pub fn first_payload(&mut self, h: &EventHeader, data: &[u8], at: SystemTime) -> Option<String> {
        let key = &h.key;
        if let Some(p) = protocol::payload_protocol(key.protocol, key.remote_port, data) {
            let facts = self.flow_facts(key, at);
            let slot = if h.direction == DIR_UP { &mut facts.protocol_up } else { &mut facts.protocol_down };
            if slot.replace(p) != Some(p) {
                self.renamed.insert(*key);
            }
        }
        if h.direction != DIR_UP {
            return None; // the server's: it names nothing the client asked for
        }
        let (sni, host) = if key.protocol == IPPROTO_UDP {
            // A QUIC client's first Initial carries its ClientHello, encrypted with keys anyone
            // can derive from the connection id (RFC 9001 §5.2).
            (quic::initial_sni(data), None)
        } else if key.protocol != IPPROTO_TCP {
            return None;
        } else if tls::looks_like_tls(data) {
            (tls::client_hello_sni(data), None)
        } else if http::looks_like_http(data) {
            (None, http::http_host(data))
        } else {
            return None;
        };
        let spoken = sni.clone().or_else(|| host.clone())?;
        let facts = self.flow_facts(&h.key, at);
        facts.evidence.sni = sni.or(facts.evidence.sni.take());
        facts.evidence.http = host.or(facts.evidence.http.take());
        self.renamed.insert(h.key);
        Some(spoken)
    }

    /// The names `client`'s device was told resolve to `addr`, still valid at `at`, each with
    /// the end of its CNAME chain: whether a blocked name's address also serves names no rule
    /// blocks.
    pub fn names_for(&self, client: IpAddr, addr: IpAddr, at: SystemTime) -> Vec<(String, Option<String>)> {
        let device = self.devices.device(client);
        self.table.candidates(device, addr, at).into_iter().map(|hit| (hit.name, hit.cname)).collect()
    }

    /// Every answer a device still holds at `at` (by device: its first address).
    pub fn answers(&self, at: SystemTime) -> Vec<names::HeldAnswer> {
        self.table.valid_answers(at)
    }

    /// Remembers what `client`'s device was told, and marks its flows to those addresses that
    /// have no DNS name yet for renaming.
    pub fn learn(&mut self, client: IpAddr, qname: &str, answers: &[Answer], at: SystemTime) {
        let device = self.devices.device(client);
        let addresses = dns::addresses_for(answers, qname);
        for (ip, ttl, chain) in &addresses {
            self.table.record_answer(device, *ip, qname, chain.last().map(String::as_str), *ttl, at);
        }
        self.fresh_answers.extend(addresses.iter().map(|(ip, _, _)| (device, ip.to_canonical())));
    }

    /// No answer or name has arrived since the last sweep that could change a flow's name.
    pub fn is_settled(&self) -> bool {
        self.renamed.is_empty() && self.fresh_answers.is_empty()
    }

    /// Flows whose name may have changed since their last sweep; the sweeper writes them even
    /// if their counters did not move.
    pub fn take_renamed(&mut self) -> HashSet<FlowKey, foldhash::fast::RandomState> {
        std::mem::take(&mut self.renamed)
    }

    /// A DNS message of the flow `key` parsed: its payload shows the protocol.
    pub fn dns_seen(&mut self, key: &FlowKey, at: SystemTime) {
        let facts = self.flow_facts(key, at);
        if facts.protocol_up.replace(AppProtocol::Dns) != Some(AppProtocol::Dns) {
            self.renamed.insert(*key);
        }
    }

    /// The name, class and protocol of a flow being swept. `first_seen` is the kernel's first
    /// packet: the answers the device had then are the ones that may have led to the flow.
    pub fn name_flow(&mut self, key: &FlowKey, first_seen: SystemTime, now: SystemTime) -> Described {
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
        let app = protocol::decide(key.protocol, key.remote_port, facts.protocol_up, facts.protocol_down);
        if remembered || !facts.is_empty() {
            self.flows.insert(*key, facts);
        }
        Described { name, class, app }
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
    use crate::{
        analysis::{names::NameSource, protocol::Decided, tls},
        pipeline::{
            Namer,
            pairing::{
                DnsStats,
                tests::{PHONE, RESOLVER, header, key, message, t},
            },
        },
        timefmt,
    };
    use tracker_common::{DIR_DOWN, EventKind, IPPROTO_UDP};

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
        let records = n.dns.take_records(Some(t(10)));
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.ts_ms, r.answered_ms), (timefmt::unix_ms(t(0)), Some(timefmt::unix_ms(t(3)))));
        assert_eq!((r.qname.as_str(), r.rcode.as_deref()), ("www.example.com", Some("NOERROR")));
        assert_eq!(r.cname().as_deref(), Some("edge.cdn.example"));

        let flow = key([192, 0, 2, 7], IPPROTO_TCP, 40000, 443);
        let _ = n.flows.name_flow(&flow, t(20), t(20));
        let Described { name, class, .. } = n.flows.name_flow(&flow, t(20), t(30));
        assert_eq!(class, AddrClass::Documentation);
        assert_eq!(name.name.as_deref(), Some("www.example.com"));
        assert_eq!(name.cname.as_deref(), Some("edge.cdn.example"));
        assert_eq!(name.source, Some(NameSource::Dns));
        assert_eq!(n.dns.stats(), DnsStats { messages: 2, malformed: 0 });
    }

    #[test]
    fn a_response_for_another_question_is_not_paired() {
        let mut n = namer();
        let k = key(RESOLVER, IPPROTO_UDP, 5353, 53);
        n.dns_message(&header(EventKind::Dns, DIR_UP, k), &message(9, false, "asked.example", &[]), t(0));
        n.dns_message(&header(EventKind::Dns, DIR_DOWN, k), &message(9, true, "spoofed.example", &[]), t(1));
        let mut r = n.dns.take_records(None);
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
        let _ = n.flows.name_flow(&flow, t(2), t(2));
        assert_eq!(n.flows.name_flow(&flow, t(2), t(3)).name, FlowName::default());
    }

    #[test]
    fn a_late_answer_names_a_flow_that_started_unnamed() {
        let mut n = namer();
        let flow = key([192, 0, 2, 8], IPPROTO_TCP, 40001, 443);
        let _ = n.flows.name_flow(&flow, t(0), t(0));
        let _ = n.flows.take_renamed();
        assert_eq!(n.flows.name_flow(&flow, t(0), t(1)).name, FlowName::default());
        ask(&mut n, 4, "late.example", &[("late.example", "192.0.2.8")], 100);
        assert!(n.flows.may_rename(&flow), "the answer marks the flow for rewriting");
        assert_eq!(n.flows.name_flow(&flow, t(0), t(200)).name.name.as_deref(), Some("late.example"));
    }

    #[test]
    fn an_answer_over_ipv4_names_the_same_devices_ipv6_flow() {
        let mut n = namer();
        let peers = crate::wireguard::parse_allowed_ips("k\t10.77.0.2/32 fd77::2/128\n").unwrap();
        n.flows.set_devices(Devices::new(&peers));
        ask(&mut n, 8, "dual.example", &[("dual.example", "2001:db8::11")], 0);
        let flow = FlowKey {
            client: "fd77::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            remote: "2001:db8::11".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            family: tracker_common::FAMILY_V6,
            ..key([0; 4], IPPROTO_TCP, 40005, 443)
        };
        let _ = n.flows.name_flow(&flow, t(10), t(10));
        assert_eq!(n.flows.name_flow(&flow, t(10), t(11)).name.name.as_deref(), Some("dual.example"));
    }

    #[test]
    fn an_answer_handled_late_but_stamped_before_the_flow_still_names_it() {
        let mut n = namer();
        let flow = key([192, 0, 2, 12], IPPROTO_TCP, 40006, 443);
        let _ = n.flows.name_flow(&flow, t(10), t(10));
        let hello = tls::tests::client_hello(&[tls::tests::sni_ext(b"a.example")]);
        n.flows.first_payload(&header(EventKind::FirstPayload, DIR_UP, flow), &hello, t(11));
        assert_eq!(n.flows.name_flow(&flow, t(10), t(12)).name.source, Some(NameSource::Sni));
        let _ = n.flows.take_renamed();
        // Received (kernel stamp) at 3-6 ms, before the flow; handled after it.
        ask(&mut n, 9, "a.example", &[("a.example", "cdn.example"), ("cdn.example", "192.0.2.12")], 3);
        assert!(n.flows.may_rename(&flow));
        let Described { name, .. } = n.flows.name_flow(&flow, t(10), t(20));
        assert_eq!((name.source, name.cname.as_deref()), (Some(NameSource::Dns), Some("cdn.example")));

        // An answer received after a flow named by its SNI did not lead to that flow.
        let old = key([192, 0, 2, 13], IPPROTO_TCP, 40007, 443);
        let _ = n.flows.name_flow(&old, t(0), t(0));
        n.flows.first_payload(&header(EventKind::FirstPayload, DIR_UP, old), &hello, t(1));
        assert_eq!(n.flows.name_flow(&old, t(0), t(2)).name.source, Some(NameSource::Sni));
        ask(&mut n, 10, "b.example", &[("b.example", "192.0.2.13")], 5);
        let Described { name, .. } = n.flows.name_flow(&old, t(0), t(10));
        assert_eq!((name.name.as_deref(), name.source), (Some("a.example"), Some(NameSource::Sni)));
    }

    #[test]
    fn a_quic_initial_names_its_flow_and_first_payloads_decide_protocols() {
        let mut n = namer();
        let flow = key([192, 0, 2, 9], IPPROTO_UDP, 50000, 443);
        let initial = crate::analysis::quic::tests::rfc9001_client_initial();
        n.flows.first_payload(&header(EventKind::FirstPayload, DIR_UP, flow), &initial, t(5));
        let d = n.flows.name_flow(&flow, t(5), t(6));
        assert_eq!((d.name.name.as_deref(), d.name.source), (Some("example.com"), Some(NameSource::Sni)));
        assert_eq!((d.app.protocol, d.app.decided), (AppProtocol::Quic, Decided::Payload));
        // No payload: the port decides, and says so.
        let plain = key([192, 0, 2, 9], IPPROTO_TCP, 50001, 80);
        let d = n.flows.name_flow(&plain, t(5), t(6));
        assert_eq!((d.app.protocol, d.app.decided), (AppProtocol::Http, Decided::Port));
        // The server's first bytes decide when the client's did not: an SSH banner on port 80.
        n.flows.first_payload(&header(EventKind::FirstPayload, DIR_DOWN, plain), b"SSH-2.0-OpenSSH_9.2\r\n", t(7));
        let d = n.flows.name_flow(&plain, t(5), t(8));
        assert_eq!((d.app.protocol, d.app.decided), (AppProtocol::Ssh, Decided::Payload));
    }

    #[test]
    fn local_peers_are_local_whatever_dns_said() {
        let mut n = namer();
        ask(&mut n, 5, "router.example", &[("router.example", "192.168.1.1")], 0);
        ask(&mut n, 6, "vpn.example", &[("vpn.example", "10.77.0.1")], 0);
        for remote in [[192, 168, 1, 1], [10, 77, 0, 1]] {
            let flow = key(remote, IPPROTO_TCP, 40002, 80);
            let _ = n.flows.name_flow(&flow, t(10), t(10));
            let Described { name, class, .. } = n.flows.name_flow(&flow, t(10), t(11));
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
        let _ = n.flows.name_flow(&flow, t(20), t(20));
        let request = b"GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: curl\r\n\r\n";
        n.flows.first_payload(&header(EventKind::FirstPayload, DIR_UP, flow), request, t(21));
        let Described { name, .. } = n.flows.name_flow(&flow, t(20), t(22));
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
        n.flows.reload(&[stored], t(1_000));
        let flow = key([192, 0, 2, 10], IPPROTO_TCP, 40004, 443);
        assert_eq!(n.flows.name_flow(&flow, t(500), t(2_000)).name.name.as_deref(), Some("kept.example"));
        n.flows.retain(|_| false, t(3_000));
        assert!(n.flows.flows.is_empty() && n.flows.fresh_answers.is_empty());
    }
}
