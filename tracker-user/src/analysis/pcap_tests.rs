//! Tests of the parsers against the shared third-party captures (read in place, never copied).
//!
//! Exact figures below were checked with tshark 4.0 (`tshark -r FILE -V -Y dns`, counting the
//! Answers section only, with its IP reassembly on), not taken from the MANIFEST.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use anyhow::Result;
use etherparse::{IpNumber, Ipv6ExtensionSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use super::dns::{self, AnswerData, DnsMessage, Transport};
use super::protocol::{self, AppProtocol, Decided};
use super::{http, tls};
use crate::source::capture::file::tests::pcaps_or_skip;
use crate::source::capture::file::{CaptureReader, L3, Link, l3};

/// One captured frame with its link type (pcapng files may mix interfaces).
struct Frame {
    /// 1-based, as tshark numbers frames.
    number: usize,
    link: Link,
    data: Vec<u8>,
}

/// Every frame of a pcap or pcapng file, copied out of the capture reader.
fn read_frames(path: &Path) -> Result<Vec<Frame>> {
    let mut reader = CaptureReader::open(path)?;
    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame()? {
        frames.push(Frame { number: usize::try_from(frame.number)?, link: frame.link, data: frame.data.to_vec() });
    }
    Ok(frames)
}

/// How a payload was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// An unfragmented packet (possibly cut by the capture's snaplen).
    Whole,
    /// The first fragment of a fragmented datagram: what the XDP program sees.
    FirstFragment,
    /// A datagram reassembled from its fragments: what tshark dissects.
    Reassembled,
}

struct L4Payload {
    frame: usize,
    transport: Transport,
    src_port: u16,
    dst_port: u16,
    origin: Origin,
    data: Vec<u8>,
}

impl L4Payload {
    fn is_dns(&self) -> bool {
        (self.src_port == 53 || self.dst_port == 53) && !self.data.is_empty()
    }
}

/// UDP/TCP header and payload from the start of an IP payload (used for fragments, which
/// etherparse leaves unparsed).
fn split_l4(ip_number: IpNumber, segment: &[u8]) -> Option<(Transport, u16, u16, &[u8])> {
    let ports = segment.get(..4)?;
    let src = u16::from_be_bytes([ports[0], ports[1]]);
    let dst = u16::from_be_bytes([ports[2], ports[3]]);
    match ip_number {
        IpNumber::UDP => Some((Transport::Udp, src, dst, segment.get(8..)?)),
        IpNumber::TCP => {
            let offset = usize::from(segment.get(12)? >> 4) * 4;
            (offset >= 20).then_some(())?;
            Some((Transport::Tcp, src, dst, segment.get(offset..)?))
        }
        _ => None,
    }
}

fn slice(frame: &Frame) -> Option<LaxSlicedPacket<'_>> {
    match l3(frame.link, &frame.data) {
        L3::Ethernet(data) => LaxSlicedPacket::from_ethernet(data).ok(),
        L3::Ip(data) => LaxSlicedPacket::from_ip(data).ok(),
        L3::NotIp | L3::Short => None,
    }
}

/// Identifies a datagram being reassembled: source and destination addresses, identification
/// and upper protocol.
type DatagramKey = (Vec<u8>, u32, IpNumber);

/// One IP fragment: which datagram it belongs to, where it goes, and its bytes.
struct Fragment<'a> {
    key: DatagramKey,
    /// Byte offset in the reassembled payload.
    offset: usize,
    more: bool,
    ip_number: IpNumber,
    data: &'a [u8],
}

/// The fragment fields of a fragmented packet.
///
/// IPv6 fragment headers are decoded here from their bytes (RFC 8200 §4.5: offset = top 13 bits
/// of bytes 2-3, M = bit 0) because etherparse 0.16 gets both wrong (etherparse issue #150, fixed
/// in 0.20): it reads M from the top bit of byte 3 and the offset's low bits from the bottom, so
/// it calls a first fragment (offset 0, M=1) "offset 1" and its defragmenter never completes.
fn fragment<'a>(net: &LaxNetSlice<'a>) -> Option<Fragment<'a>> {
    match net {
        LaxNetSlice::Ipv4(v4) => {
            let payload = v4.payload();
            let h = v4.header();
            payload.fragmented.then_some(())?;
            let mut addrs = h.source().to_vec();
            addrs.extend_from_slice(&h.destination());
            Some(Fragment {
                key: (addrs, u32::from(h.identification()), payload.ip_number),
                offset: usize::from(h.fragments_offset().value()) * 8,
                more: h.more_fragments(),
                ip_number: payload.ip_number,
                data: payload.payload,
            })
        }
        LaxNetSlice::Ipv6(v6) => {
            let payload = v6.payload();
            payload.fragmented.then_some(())?;
            let raw = v6.extensions().clone().into_iter().find_map(|ext| match ext {
                Ipv6ExtensionSlice::Fragment(f) => Some(f.slice()),
                _ => None,
            })?;
            let [_, _, b2, b3, i0, i1, i2, i3, ..] = *raw else {
                return None;
            };
            let word = u16::from_be_bytes([b2, b3]);
            let mut addrs = v6.header().source().to_vec();
            addrs.extend_from_slice(&v6.header().destination());
            Some(Fragment {
                key: (addrs, u32::from_be_bytes([i0, i1, i2, i3]), payload.ip_number),
                offset: usize::from(word >> 3) * 8,
                more: word & 1 == 1,
                ip_number: payload.ip_number,
                data: payload.payload,
            })
        }
    }
}

/// Minimal reassembly for test captures: a datagram is complete when its fragments cover
/// 0..end without a gap and the last one has M=0. Overlaps are resolved first-come.
#[derive(Default)]
struct Reassembler {
    /// Per datagram: (byte offset, more fragments, data) of each fragment seen.
    pending: HashMap<DatagramKey, Vec<(usize, bool, Vec<u8>)>>,
}

impl Reassembler {
    fn add(&mut self, frag: &Fragment<'_>) -> Option<Vec<u8>> {
        let parts = self.pending.entry(frag.key.clone()).or_default();
        parts.push((frag.offset, frag.more, frag.data.to_vec()));
        parts.sort_by_key(|(offset, _, _)| *offset);
        let mut datagram = Vec::new();
        for (offset, more, data) in parts.iter() {
            if *offset > datagram.len() {
                return None; // gap
            }
            let skip = datagram.len() - offset;
            datagram.extend_from_slice(data.get(skip..).unwrap_or_default());
            if !more {
                self.pending.remove(&frag.key);
                return Some(datagram);
            }
        }
        None
    }
}

/// Every UDP and TCP payload in a capture: whole packets, first fragments, and datagrams
/// reassembled from fragments.
fn l4_payloads(path: &Path) -> Result<Vec<L4Payload>> {
    let mut out = Vec::new();
    let mut reassembler = Reassembler::default();
    for frame in read_frames(path)? {
        let Some(packet) = slice(&frame) else {
            continue;
        };
        let mut push = |origin, ip_number, segment: &[u8]| {
            if let Some((transport, src_port, dst_port, data)) = split_l4(ip_number, segment) {
                out.push(L4Payload { frame: frame.number, transport, src_port, dst_port, origin, data: data.to_vec() });
            }
        };
        if let Some(frag) = packet.net.as_ref().and_then(fragment) {
            if frag.offset == 0 {
                push(Origin::FirstFragment, frag.ip_number, frag.data);
            }
            if let Some(datagram) = reassembler.add(&frag) {
                push(Origin::Reassembled, frag.ip_number, &datagram);
            }
            continue;
        }
        match &packet.transport {
            Some(TransportSlice::Udp(udp)) => push(Origin::Whole, IpNumber::UDP, udp.slice()),
            Some(TransportSlice::Tcp(tcp)) => push(Origin::Whole, IpNumber::TCP, tcp.slice()),
            _ => {}
        }
    }
    Ok(out)
}

/// Aggregate figures over the DNS messages of one capture.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    ok: usize,
    err: usize,
    queries: usize,
    responses: usize,
    partial: usize,
    truncated: usize,
    edns: usize,
    rcodes: BTreeMap<String, usize>,
    /// Answer-section records by type.
    answers: BTreeMap<String, usize>,
    /// Responses whose first question has a non-empty CNAME chain, and the longest chain.
    with_chain: usize,
    longest_chain: usize,
    /// Sum over responses of `addresses_for(first question)`.
    named_addresses: usize,
}

fn stats<'a>(messages: impl IntoIterator<Item = &'a Result<DnsMessage>>) -> Stats {
    let mut s = Stats::default();
    for msg in messages {
        let Ok(msg) = msg else {
            s.err += 1;
            continue;
        };
        s.ok += 1;
        if msg.is_response {
            s.responses += 1;
            *s.rcodes.entry(msg.rcode.clone()).or_default() += 1;
        } else {
            s.queries += 1;
        }
        s.partial += usize::from(msg.partial);
        s.truncated += usize::from(msg.truncated);
        s.edns += usize::from(msg.edns);
        for answer in &msg.answers {
            *s.answers.entry(answer.rtype.clone()).or_default() += 1;
        }
        if let (true, Some(q)) = (msg.is_response, msg.questions.first()) {
            let chain = msg.cname_chain(&q.name);
            s.with_chain += usize::from(!chain.is_empty());
            s.longest_chain = s.longest_chain.max(chain.len());
            s.named_addresses += msg.addresses_for(&q.name).len();
        }
    }
    s
}

fn parse_payload(p: &L4Payload) -> Result<DnsMessage> {
    dns::parse(&p.data, p.transport)
}

/// DNS payloads of one capture, parsed, keeping only the given origins.
fn dns_messages(path: &Path, origins: &[Origin]) -> Vec<(usize, Result<DnsMessage>)> {
    l4_payloads(path)
        .expect("capture reads")
        .iter()
        .filter(|p| p.is_dns() && origins.contains(&p.origin))
        .map(|p| (p.frame, parse_payload(p)))
        .collect()
}

/// What tshark dissects: whole packets and reassembled datagrams, not the first fragments.
const AS_TSHARK: &[Origin] = &[Origin::Whole, Origin::Reassembled];

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn every_payload_in_every_capture_is_parsed_without_panic() {
    let dir = pcaps_or_skip!();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list pcaps")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "expected the shared captures in {}", dir.display());
    let mut panics = Vec::new();
    let misclassified = std::sync::Mutex::new(Vec::new());
    let mut dns_payloads = 0;
    for path in &files {
        let payloads = l4_payloads(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        for p in &payloads {
            let result = catch_unwind(AssertUnwindSafe(|| {
                // Port 53 through the DNS parser with its real framing; every other payload
                // through it too (both framings), as free fuzz input for all four parsers.
                let dns = parse_payload(p);
                let _ = dns::parse(&p.data, Transport::Udp);
                let _ = dns::parse(&p.data, Transport::Tcp);
                let _ = tls::client_hello_sni(&p.data);
                let _ = tls::looks_like_tls(&p.data);
                let _ = http::http_host(&p.data);
                let _ = http::looks_like_http(&p.data);
                if let Ok(msg) = &dns {
                    check_invariants(msg);
                }
                // The classifier on both ends' view; a UDP query to port 53 that parses as DNS
                // must be classified DNS by its payload.
                let ip_proto = match p.transport {
                    Transport::Udp => tracker_common::IPPROTO_UDP,
                    Transport::Tcp => tracker_common::IPPROTO_TCP,
                };
                let c = protocol::classify(ip_proto, p.dst_port, Some(&p.data), Some(&p.data));
                let query =
                    p.transport == Transport::Udp && p.dst_port == 53 && dns::parse(&p.data, Transport::Udp).is_ok();
                if query && (c.protocol, c.decided) != (AppProtocol::Dns, Decided::Payload) {
                    misclassified.lock().unwrap().push(format!("{} frame {}: {c:?}", path.display(), p.frame));
                }
            }));
            dns_payloads += usize::from(p.is_dns());
            if result.is_err() {
                panics.push(format!("{} frame {}", path.display(), p.frame));
            }
        }
    }
    assert!(panics.is_empty(), "parsers panicked on: {panics:?}");
    let misclassified = misclassified.into_inner().unwrap();
    assert!(misclassified.is_empty(), "DNS queries not classified as DNS: {misclassified:?}");
    assert!(dns_payloads >= 480, "only {dns_payloads} DNS payloads found");
}

/// What must hold for any message the parser accepts, however odd its input.
fn check_invariants(msg: &DnsMessage) {
    let names = msg.questions.iter().map(|q| &q.name).chain(msg.answers.iter().map(|a| &a.name)).chain(
        msg.answers.iter().filter_map(|a| match &a.data {
            AnswerData::Cname(target) => Some(target),
            _ => None,
        }),
    );
    for name in names {
        assert!(!name.is_empty());
        // 253 wire bytes, each escaped to at most 4 characters.
        assert!(name.len() <= 4 * 253, "{name}");
        assert!(name.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{name}");
        assert!(name == "." || !name.ends_with('.') || name.ends_with("\\."), "{name}");
        assert_eq!(*name, name.to_ascii_lowercase());
    }
    for answer in &msg.answers {
        if let AnswerData::Other(text) = &answer.data {
            assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{text}");
        }
    }
    for q in &msg.questions {
        for (_, _, chain) in msg.addresses_for(&q.name) {
            assert!(chain.len() <= dns::MAX_CNAME_CHAIN);
        }
    }
}

#[test]
fn ambiguous_names_exact_counts_and_chains() {
    let dir = pcaps_or_skip!();
    let messages = dns_messages(&file(&dir, "ndpi__dns_ambiguous_names.pcap"), AS_TSHARK);
    let s = stats(messages.iter().map(|(_, m)| m));
    assert_eq!(s.err, 0);
    assert_eq!(s.queries, 10);
    assert_eq!(s.responses, 10);
    assert_eq!(s.rcodes, counts(&[("NOERROR", 9), ("NXDOMAIN", 1)]));
    assert_eq!(s.answers, counts(&[("A", 32), ("CNAME", 9)]));
    assert_eq!(s.with_chain, 6);
    assert_eq!(s.longest_chain, 3);
    // Every A answer is reachable from its question through the chain.
    assert_eq!(s.named_addresses, 32);
    assert_eq!(s.partial, 0);

    let response = |qname: &str| {
        messages
            .iter()
            .filter_map(|(_, m)| m.as_ref().ok())
            .find(|m| m.is_response && m.questions[0].name == qname)
            .unwrap_or_else(|| panic!("response for {qname}"))
    };
    let teams = response("api.teams.skype.com");
    let addrs = teams.addresses_for("api.teams.skype.com");
    let expected_chain =
        ["teams-afd.trafficmanager.net", "teams-afd-trafficmanager-net.s-0004.s-msedge.net", "s-0004.s-msedge.net"];
    assert_eq!(addrs, vec![(ip("52.113.194.131"), 141, expected_chain.map(String::from).to_vec())]);

    let courier = response("41-courier.push.apple.com").addresses_for("41-courier.push.apple.com");
    assert_eq!(courier.len(), 8);
    assert!(courier.iter().all(|(_, ttl, chain)| *ttl == 17
        && chain == &["41.courier-push-apple.com.akadns.net", "eu-north-courier-4.push-apple.com.akadns.net"]));

    let android = response("android.clients.google.com");
    assert_eq!(android.cname_chain("android.clients.google.com"), ["android.l.google.com"]);
    assert_eq!(android.addresses_for("android.clients.google.com").len(), 16);

    let nx = response("*.teams.microsoft.com");
    assert_eq!(nx.rcode, "NXDOMAIN");
    assert!(nx.answers.is_empty());

    let direct = response("short.weixin.qq.com").addresses_for("short.weixin.qq.com");
    assert_eq!(direct, vec![(ip("203.205.254.77"), 599, vec![]), (ip("203.205.254.220"), 599, vec![])]);
}

#[test]
fn pointer_loops_in_malformed_dns_are_rejected() {
    let dir = pcaps_or_skip!();
    let messages = dns_messages(&file(&dir, "ndpi__malformed_dns.pcap"), AS_TSHARK);
    assert_eq!(messages.len(), 6);
    for (frame, msg) in &messages {
        match frame {
            // The two queries for www.xt.com are fine.
            1 | 4 => {
                let msg = msg.as_ref().expect("query parses");
                assert_eq!(msg.questions[0].name, "www.xt.com");
                assert!(!msg.is_response);
            }
            // The responses' second question name is a compression-pointer loop (tshark: "Name
            // too long"), and so is a CNAME target: the whole message is refused.
            _ => assert!(msg.is_err(), "frame {frame} must be rejected"),
        }
    }
}

#[test]
fn fragmented_dns_matches_tshark_after_reassembly() {
    let dir = pcaps_or_skip!();
    let path = file(&dir, "ndpi__dns_fragmented.pcap");
    let messages = dns_messages(&path, AS_TSHARK);
    let s = stats(messages.iter().map(|(_, m)| m));
    assert_eq!(s.err, 0);
    assert_eq!(s.queries, 22);
    assert_eq!(s.responses, 21);
    assert_eq!(s.rcodes, counts(&[("NOERROR", 20), ("SERVFAIL", 1)]));
    assert_eq!(s.answers, counts(&[("A", 5), ("AAAA", 8), ("DNSKEY", 12), ("RRSIG", 15)]));
    assert_eq!(s.partial, 0);
    assert_eq!(s.edns, 42);

    // Over TCP (frames 48-62) the same messages arrive with the length prefix.
    let tcp: Vec<_> = l4_payloads(&path)
        .expect("reads")
        .into_iter()
        .filter(|p| p.is_dns() && p.transport == Transport::Tcp)
        .collect();
    assert_eq!(tcp.len(), 4);
    for p in &tcp {
        let msg = parse_payload(p).expect("TCP DNS parses");
        assert_eq!(msg.questions[0].name, "weberlab.de");
        assert_eq!(msg.questions[0].qtype, "DNSKEY");
    }

    // What the kernel sees of a fragmented response is its first fragment: header, question
    // and the leading records, flagged partial.
    let first: Vec<_> = dns_messages(&path, &[Origin::FirstFragment]);
    assert_eq!(first.len(), 7);
    for (frame, msg) in &first {
        let msg = msg.as_ref().unwrap_or_else(|e| panic!("frame {frame}: {e:#}"));
        assert!(msg.partial, "frame {frame}");
        assert!(msg.is_response);
    }
}

#[test]
fn dns_over_ipv6_in_pcapng_with_several_interfaces() {
    let dir = pcaps_or_skip!();
    let messages = dns_messages(&file(&dir, "ndpi__dns-google-nsid.pcapng"), AS_TSHARK);
    let s = stats(messages.iter().map(|(_, m)| m));
    assert_eq!(s.err, 0);
    assert_eq!((s.queries, s.responses), (7, 7));
    assert_eq!(s.answers, counts(&[("A", 16), ("CNAME", 6), ("NS", 13)]));
    assert_eq!(s.edns, 14);
    let wikipedia = messages
        .iter()
        .filter_map(|(_, m)| m.as_ref().ok())
        .filter(|m| m.is_response && m.questions[0].name == "www.wikipedia.it")
        .collect::<Vec<_>>();
    assert_eq!(wikipedia.len(), 2);
    for m in wikipedia {
        let addrs = m.addresses_for("www.wikipedia.it");
        assert_eq!(addrs.len(), 4);
        assert!(addrs.iter().all(|(_, _, chain)| chain == &["b7fd7b.yepa.com", "d2x2r9xi9rd3sc.cloudfront.net"]));
    }
    let root = messages
        .iter()
        .filter_map(|(_, m)| m.as_ref().ok())
        .find(|m| m.is_response && m.questions[0].qtype == "NS")
        .expect("root NS response");
    assert_eq!(root.questions[0].name, ".");
}

#[test]
fn https_records_with_ech_over_raw_ipv6() {
    let dir = pcaps_or_skip!();
    let messages = dns_messages(&file(&dir, "zeek__dns__ech.pcap"), AS_TSHARK);
    let s = stats(messages.iter().map(|(_, m)| m));
    assert_eq!(s.err, 0);
    assert_eq!((s.queries, s.responses), (2, 2));
    assert_eq!(s.answers, counts(&[("HTTPS", 2)]));
    let names: Vec<_> = messages
        .iter()
        .filter_map(|(_, m)| m.as_ref().ok())
        .filter(|m| m.is_response)
        .map(|m| {
            assert!(matches!(m.answers[0].data, AnswerData::Other(_)));
            assert!(m.addresses_for(&m.questions[0].name).is_empty());
            m.questions[0].name.clone()
        })
        .collect();
    assert_eq!(names, ["defo.ie", "cloudflare-ech.com"]);
}

#[test]
fn ipv6_fragmented_txt_response() {
    let dir = pcaps_or_skip!();
    let path = file(&dir, "zeek__ipv6-fragmented-dns.pcap");
    let s = stats(dns_messages(&path, AS_TSHARK).iter().map(|(_, m)| m));
    assert_eq!(s.err, 0);
    assert_eq!((s.queries, s.responses), (3, 2));
    assert_eq!(s.answers, counts(&[("TXT", 2)]));
    // The big response's first fragment alone is a partial message.
    let first = dns_messages(&path, &[Origin::FirstFragment]);
    assert_eq!(first.len(), 1);
    assert!(first[0].1.as_ref().is_ok_and(|m| m.partial && m.answers.is_empty()));
}

#[test]
fn forward_pointer_monster_is_rejected() {
    let dir = pcaps_or_skip!();
    let payloads = l4_payloads(&file(&dir, "tcpdump__dns_fwdptr.pcap")).expect("reads");
    let dns: Vec<_> = payloads.iter().filter(|p| p.is_dns()).collect();
    assert_eq!(dns.len(), 1);
    assert!(dns[0].data.len() > 60_000);
    let started = std::time::Instant::now();
    let err = parse_payload(dns[0]).expect_err("must be rejected");
    assert!(format!("{err:#}").contains("question 1"), "{err:#}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn orphan_first_fragments_are_partial() {
    let dir = pcaps_or_skip!();
    let all = [Origin::Whole, Origin::FirstFragment, Origin::Reassembled];
    let messages = dns_messages(&file(&dir, "ndpi__badpackets.pcap"), &all);
    // 93 first fragments of large responses whose later fragments were never captured; some
    // are also cut by the snaplen.
    assert_eq!(messages.len(), 93);
    let s = stats(messages.iter().map(|(_, m)| m));
    assert_eq!(s.queries, 0);
    assert_eq!(s.responses, 83);
    assert_eq!(s.partial, 83, "every accepted message must be flagged partial");
    // 10 are cut inside the header (5) or the question (5): nothing usable, so errors.
    assert_eq!(s.err, 10);
    for (frame, msg) in &messages {
        if let Err(e) = msg {
            let text = format!("{e:#}");
            assert!(text.contains("header") || text.contains("question 1"), "{frame}: {text}");
        }
    }
}

#[test]
fn fuzzed_capture_is_survived() {
    let dir = pcaps_or_skip!();
    let all = [Origin::Whole, Origin::FirstFragment, Origin::Reassembled];
    let messages = dns_messages(&file(&dir, "ndpi__fuzz-2006-06-26-2594.pcap"), &all);
    let s = stats(messages.iter().map(|(_, m)| m));
    // Pinned figures (regression guard, reviewed by hand against tshark): tshark flags 83 frames
    // as malformed; we refuse 59 and flag 25 partial (84). Differences: 9 questions whose first
    // label byte is 0x40-0x7f (the retired "extended label" type) we refuse while tshark only
    // shows "<Unknown extended label>"; and 8 frames tshark flags for a bogus UDP length or for
    // record data we never interpret (a PTR with an over-long label, an A6 in the authority
    // section), which we accept because their A/AAAA/CNAME content is sound.
    assert_eq!(messages.len(), 299);
    assert_eq!((s.ok, s.err, s.partial, s.truncated), (240, 59, 25, 1));
    assert_eq!((s.queries, s.responses), (205, 35));
    assert_eq!(s.answers, counts(&[("A", 6), ("PTR", 28)]));
    for (frame, msg) in &messages {
        if let Ok(msg) = msg {
            check_invariants(msg);
        } else if *frame == 25 {
            let text = format!("{:#}", msg.as_ref().expect_err("refused"));
            assert!(text.contains("unrecognized label code"), "{text}");
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}
