//! The differential test's captures built in memory, for what the robustness set lacks: VLAN
//! and QinQ tags, fragments, IPv6 extension headers, TCP both ways, DNS over UDP and TCP,
//! truncations, ARP, SLL2, a big-endian pcap, a two-interface pcapng, jumbo frames, idle flows.

use anyhow::{Context as _, Result};
use tracker_common::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use tracker_tests::packet::*;

use super::{compare_all, harness::Summary};

/// Runs one built capture; returns its summary for the test's own checks.
fn check_built(name: &str, bytes: Vec<u8>) -> Result<Option<Summary>> {
    if !tracker_tests::root_or_skip() {
        return Ok(None);
    }
    let mut s = compare_all(&[(name.to_string(), bytes)])?;
    let s = s.pop().context("no summary")?;
    assert!(s.read_error.is_none(), "{name}: {:?}", s.read_error);
    Ok(Some(s))
}

const PHONE4: [u8; 4] = [10, 77, 0, 2];
const PHONE4B: [u8; 4] = [10, 77, 0, 3];
const HOST4: [u8; 4] = [203, 0, 113, 10];
const RESOLVER4: [u8; 4] = [203, 0, 113, 53];
const PUBLIC_A: [u8; 4] = [198, 51, 100, 1];
const PUBLIC_B: [u8; 4] = [203, 0, 113, 20];
const LAN_A: [u8; 4] = [192, 168, 1, 7];
const PHONE6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const HOST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const RESOLVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53];

/// A frame of a built capture: its bytes and its length on the wire (more when cut).
struct Pkt {
    data: Vec<u8>,
    orig: u32,
    /// pcapng interface.
    interface: u32,
    /// Seconds of silence before it (in pcap files).
    delay_s: u32,
}

fn pkt(data: Vec<u8>) -> Pkt {
    let orig = data.len() as u32;
    Pkt { data, orig, interface: 0, delay_s: 0 }
}

/// The first `keep` bytes of a frame, as a snap length cuts it.
fn cut(data: Vec<u8>, keep: usize) -> Pkt {
    Pkt { data: data[..keep.min(data.len())].to_vec(), ..pkt(data) }
}

/// A frame after `delay_s` seconds of silence.
fn after(delay_s: u32, data: Vec<u8>) -> Pkt {
    Pkt { delay_s, ..pkt(data) }
}

fn on(interface: u32, data: Vec<u8>) -> Pkt {
    Pkt { interface, ..pkt(data) }
}

fn put16(out: &mut Vec<u8>, v: u16, big: bool) {
    out.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}

fn put32(out: &mut Vec<u8>, v: u32, big: bool) {
    out.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// A pcap file: microsecond or nanosecond stamps, either byte order; a packet per millisecond
/// but for the silences its packets ask for.
fn pcap(big: bool, nanos: bool, linktype: u32, pkts: &[Pkt]) -> Vec<u8> {
    let mut out = Vec::new();
    put32(&mut out, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }, big);
    put16(&mut out, 2, big);
    put16(&mut out, 4, big);
    put32(&mut out, 0, big);
    put32(&mut out, 0, big);
    put32(&mut out, 65_535, big);
    put32(&mut out, linktype, big);
    let mut silence = 0;
    for (i, p) in pkts.iter().enumerate() {
        let ms = i as u32;
        silence += p.delay_s;
        put32(&mut out, 1_760_000_000 + silence + ms / 1000, big);
        put32(&mut out, (ms % 1000) * if nanos { 1_000_000 } else { 1000 } + 7, big);
        put32(&mut out, p.data.len() as u32, big);
        put32(&mut out, p.orig, big);
        out.extend_from_slice(&p.data);
    }
    out
}

/// A little-endian pcapng file: one section, an interface per link type (nanosecond stamps,
/// `if_tsresol` 9), an enhanced packet block per packet.
fn pcapng_ns(linktypes: &[u16], pkts: &[Pkt]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, ty: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        put32(out, ty, false);
        put32(out, len, false);
        out.extend_from_slice(body);
        out.resize(out.len() + padded - body.len(), 0);
        put32(out, len, false);
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    put32(&mut shb, 0x1a2b_3c4d, false);
    put16(&mut shb, 1, false);
    put16(&mut shb, 0, false);
    shb.extend_from_slice(&[0xff; 8]);
    block(&mut out, 0x0a0d_0d0a, &shb);
    for &lt in linktypes {
        let mut idb = Vec::new();
        put16(&mut idb, lt, false);
        put16(&mut idb, 0, false);
        put32(&mut idb, 0, false);
        // if_tsresol (9) = 9: nanoseconds; then opt_endofopt.
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut out, 1, &idb);
    }
    for (i, p) in pkts.iter().enumerate() {
        let units = 1_760_000_000_000_000_000u64 + i as u64 * 1_000_003;
        let mut epb = Vec::new();
        put32(&mut epb, p.interface, false);
        put32(&mut epb, (units >> 32) as u32, false);
        put32(&mut epb, units as u32, false);
        put32(&mut epb, p.data.len() as u32, false);
        put32(&mut epb, p.orig, false);
        epb.extend_from_slice(&p.data);
        block(&mut out, 6, &epb);
    }
    out
}

/// A Linux SLL2 header in front of `body`: protocol, interface 3, ARPHRD_ETHER, packet type
/// (0 to us, 4 outgoing), a 6-byte address.
fn sll2(protocol: u16, outgoing: bool, body: &[u8]) -> Vec<u8> {
    let mut f = protocol.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, if outgoing { 4 } else { 0 }, 6]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0, 0]);
    f.extend_from_slice(body);
    f
}

/// A whole TCP connection: handshake, a request and a response, both FINs, the last ACK.
/// `ip(up, flags, payload)` builds one segment, from the client when `up`.
fn tcp_connection<F>(ip: F, request: &[u8], response: &[u8]) -> Vec<Vec<u8>>
where
    F: Fn(bool, u8, &[u8]) -> Vec<u8>,
{
    vec![
        ip(true, SYN, b""),
        ip(false, SYN | ACK, b""),
        ip(true, ACK, b""),
        ip(true, PSH | ACK, request),
        ip(false, ACK, b""),
        ip(false, PSH | ACK, response),
        ip(true, ACK, b""),
        ip(true, FIN | ACK, b""),
        ip(false, FIN | ACK, b""),
        ip(true, ACK, b""),
    ]
}

/// IPv4 fragments of `payload` (an IP payload, the transport header first): `size` bytes
/// each (a multiple of 8), MF on all but the last.
fn fragments4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let more = if i + 1 < n { 0x2000 } else { 0 };
            ipv4(src, dst, proto, id, more | (i * size / 8) as u16, c)
        })
        .collect()
}

#[test]
fn ethernet_8021q_tags_agree() -> Result<()> {
    let tag = |body: Vec<u8>, et: u16| vlan(&[(ETH_8021Q, 7)], et, &body);
    let mut pkts = vec![
        pkt(tag(v4_udp(PHONE4, HOST4, 5000, 9000, b"hello"), ETH_IP)),
        pkt(tag(v4_udp(HOST4, PHONE4, 9000, 5000, b"world"), ETH_IP)),
        pkt(tag(v4_udp(PHONE4, HOST4, 5000, 9000, b"again"), ETH_IP)),
        pkt(tag(v6_udp(PHONE6, HOST6, 5001, 9001, b"six"), ETH_IPV6)),
        pkt(tag(v6_udp(HOST6, PHONE6, 9001, 5001, b"xis"), ETH_IPV6)),
        pkt(tag(ipv4(PHONE4, HOST4, IPPROTO_ICMP, 1, 0, &icmp_echo(false, b"ping")), ETH_IP)),
        pkt(tag(ipv4(HOST4, PHONE4, IPPROTO_ICMP, 1, 0, &icmp_echo(true, b"ping")), ETH_IP)),
        // Tagged ARP: not IP.
        pkt(tag(arp(false), ETH_ARP)),
        // An IPv6 EtherType in front of IPv4: malformed.
        pkt(tag(v4_udp(PHONE4, HOST4, 5000, 9000, b"liar"), ETH_IPV6)),
        // Cut inside the tag.
        cut(tag(v4_udp(PHONE4, HOST4, 5000, 9000, b"x"), ETH_IP), 16),
        // An untagged frame between tagged ones.
        pkt(eth(ETH_IP, &v4_udp(PHONE4, HOST4, 5000, 9000, b"plain"))),
    ];
    let conn = tcp_connection(
        |up: bool, flags: u8, p: &[u8]| {
            let ip = if up {
                v4_tcp(PHONE4, HOST4, 40_000, 443, flags, p)
            } else {
                v4_tcp(HOST4, PHONE4, 443, 40_000, flags, p)
            };
            tag(ip, ETH_IP)
        },
        &hello(517),
        &hello(1400),
    );
    pkts.extend(conn.into_iter().map(pkt));
    let s = check_built("eth_8021q.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.xdp > 0 && s.tc > 0 && s.parse_errors >= 3, "{s:?}");
    }
    Ok(())
}

#[test]
fn ethernet_qinq_tags_agree() -> Result<()> {
    let qinq = |body: Vec<u8>, et: u16| vlan(&[(ETH_8021AD, 100), (ETH_8021Q, 7)], et, &body);
    let mut pkts = vec![
        pkt(qinq(v6_udp(PHONE6, RESOLVER6, 5353, 53, &dns_query(1, "www.lab.test")), ETH_IPV6)),
        pkt(qinq(v6_udp(RESOLVER6, PHONE6, 53, 5353, &dns_response(1, "www.lab.test", 3)), ETH_IPV6)),
        pkt(qinq(ipv6(PHONE6, HOST6, IPPROTO_ICMPV6, &[128, 0, 0, 0, 0, 1, 0, 1]), ETH_IPV6)),
        // Three tags: the parser walks two, then finds a third TPID where IP should be.
        pkt(vlan(&[(ETH_8021AD, 1), (ETH_8021Q, 2), (ETH_8021Q, 3)], ETH_IP, &v4_udp(PHONE4, HOST4, 1, 2, b"3"))),
        // Two 802.1Q tags (QinQ as some switches write it).
        pkt(vlan(&[(ETH_8021Q, 1), (ETH_8021Q, 2)], ETH_IP, &v4_udp(PHONE4, HOST4, 1, 2, b"2"))),
        // Cut inside the inner tag.
        cut(qinq(v4_udp(PHONE4, HOST4, 1, 2, b""), ETH_IP), 20),
        pkt(qinq(arp(true), ETH_ARP)),
    ];
    let conn = tcp_connection(
        |up: bool, flags: u8, p: &[u8]| {
            let ip = if up {
                v4_tcp(PHONE4, HOST4, 40_001, 80, flags, p)
            } else {
                v4_tcp(HOST4, PHONE4, 80, 40_001, flags, p)
            };
            qinq(ip, ETH_IP)
        },
        b"GET / HTTP/1.1\r\nHost: web.lab.test\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    pkts.extend(conn.into_iter().map(pkt));
    let s = check_built("eth_qinq.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.xdp > 0 && s.tc > 0 && s.events >= 4, "{s:?}");
    }
    Ok(())
}

#[test]
fn ipv4_fragments_agree() -> Result<()> {
    let mut pkts = Vec::new();
    // A DNS response of 3,000 bytes in three fragments, in order.
    let big = udp(53, 5353, &dns_response(9, "many.lab.test", 180));
    pkts.push(pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 5353, 53, &dns_query(9, "many.lab.test")))));
    pkts.extend(
        fragments4(RESOLVER4, PHONE4, IPPROTO_UDP, 0x1234, &big, 1232).into_iter().map(|f| pkt(eth(ETH_IP, &f))),
    );
    // The same upwards, out of order: the last fragment first.
    let mut up = fragments4(PHONE4, HOST4, IPPROTO_UDP, 0x4321, &udp(7000, 9000, &[5; 2500]), 1480);
    up.reverse();
    pkts.extend(up.into_iter().map(|f| pkt(eth(ETH_IP, &f))));
    // TCP: a first fragment too short for the TCP header, then a later one.
    let seg = tcp(40_002, 443, 1, ACK, &[], &[9; 64]);
    pkts.push(pkt(eth(ETH_IP, &ipv4(PHONE4, HOST4, IPPROTO_TCP, 77, 0x2000, &seg[..8]))));
    pkts.push(pkt(eth(ETH_IP, &ipv4(PHONE4, HOST4, IPPROTO_TCP, 77, 1, &seg[8..]))));
    // A later fragment of a datagram whose first never came, and one with DF and MF both.
    pkts.push(pkt(eth(ETH_IP, &ipv4(HOST4, PHONE4, IPPROTO_UDP, 78, 0x2000 | 100, &[1; 800]))));
    pkts.push(pkt(eth(ETH_IP, &ipv4(PHONE4, HOST4, IPPROTO_UDP, 79, 0x6000, &udp(1, 2, b"df+mf")))));
    // ICMP fragments.
    let echo = icmp_echo(false, &[3; 2000]);
    pkts.extend(fragments4(PHONE4, HOST4, IPPROTO_ICMP, 80, &echo, 1480).into_iter().map(|f| pkt(eth(ETH_IP, &f))));
    let s = check_built("ipv4_fragments.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.fragments >= 5 && s.tc > 0 && s.parse_errors >= 1, "{s:?}");
    }
    Ok(())
}

#[test]
fn ipv6_hop_by_hop_and_fragment_headers_agree() -> Result<()> {
    // Hop-by-hop (router alert), then a fragment header: a DNS response in two fragments.
    let hbh = |next: u8| ext(next, 0, &[5, 2, 0, 0, 1, 0]);
    let msg = udp(53, 5353, &dns_response(3, "many.lab.test", 90));
    let (first, rest) = msg.split_at(1200);
    let mut frag_first = hbh(FRAGMENT);
    frag_first.extend_from_slice(&frag6(IPPROTO_UDP, 0, true, 0xabcd));
    frag_first.extend_from_slice(first);
    let mut frag_rest = hbh(FRAGMENT);
    frag_rest.extend_from_slice(&frag6(IPPROTO_UDP, 150, false, 0xabcd));
    frag_rest.extend_from_slice(rest);
    let mut query = hbh(IPPROTO_UDP);
    query.extend_from_slice(&udp(5353, 53, &dns_query(3, "many.lab.test")));
    // An atomic fragment (offset 0, no more): ports readable.
    let mut atomic = frag6(IPPROTO_TCP, 0, false, 7);
    atomic.extend_from_slice(&tcp(40_003, 443, 1, SYN, &SYN_OPTIONS, b""));
    // Hop-by-hop, destination options, routing, then a fragment header and TCP.
    let mut chain = hbh(DSTOPTS);
    chain.extend_from_slice(&ext(ROUTING, 1, &[4, 0, 0, 0]));
    chain.extend_from_slice(&ext(FRAGMENT, 0, &[0, 0, 0, 0, 0, 0]));
    chain.extend_from_slice(&frag6(IPPROTO_TCP, 0, true, 8));
    chain.extend_from_slice(&tcp(40_003, 443, 2, ACK, &[], &hello(300)));
    // Seven extension headers: more than the parser walks.
    let mut long = Vec::new();
    for _ in 0..6 {
        long.extend_from_slice(&ext(DSTOPTS, 0, &[1, 4, 0, 0, 0, 0]));
    }
    long.extend_from_slice(&ext(IPPROTO_UDP, 0, &[1, 4, 0, 0, 0, 0]));
    long.extend_from_slice(&udp(1, 2, b"deep"));
    // A hop-by-hop header that claims more than the packet has.
    let mut runs_past = ext(IPPROTO_UDP, 200, &[1, 4, 0, 0, 0, 0]);
    runs_past.truncate(16);
    let pkts = vec![
        pkt(ipv6(PHONE6, RESOLVER6, HOPOPTS, &query)),
        pkt(ipv6(RESOLVER6, PHONE6, HOPOPTS, &frag_first)),
        pkt(ipv6(RESOLVER6, PHONE6, HOPOPTS, &frag_rest)),
        pkt(ipv6(PHONE6, HOST6, FRAGMENT, &atomic)),
        pkt(ipv6(HOST6, PHONE6, IPPROTO_TCP, &tcp(443, 40_003, 1, SYN | ACK, &SYN_OPTIONS, b""))),
        pkt(ipv6(PHONE6, HOST6, HOPOPTS, &chain)),
        pkt(ipv6(PHONE6, HOST6, DSTOPTS, &long)),
        pkt(ipv6(PHONE6, HOST6, HOPOPTS, &runs_past)),
        // Cut inside the fragment header.
        cut(ipv6(RESOLVER6, PHONE6, HOPOPTS, &frag_rest), 40 + 8 + 4),
    ];
    let s = check_built("ipv6_hbh_frag.pcap", pcap(false, false, LINKTYPE_RAW, &pkts))?;
    if let Some(s) = s {
        assert!(s.fragments >= 1 && s.tc >= 2 && s.parse_errors >= 2, "{s:?}");
    }
    Ok(())
}

#[test]
fn tcp_connections_both_ways_agree() -> Result<()> {
    let mut pkts = Vec::new();
    // The phone to a server, IPv4 and IPv6, each a whole connection.
    let v4 = |up: bool, flags: u8, p: &[u8]| {
        if up { v4_tcp(PHONE4, HOST4, 41_000, 443, flags, p) } else { v4_tcp(HOST4, PHONE4, 443, 41_000, flags, p) }
    };
    let v6 = |up: bool, flags: u8, p: &[u8]| {
        if up { v6_tcp(PHONE6, HOST6, 41_001, 443, flags, p) } else { v6_tcp(HOST6, PHONE6, 443, 41_001, flags, p) }
    };
    // Interleaved, as on a real link.
    let (a, b) = (tcp_connection(v4, &hello(600), &hello(1300)), tcp_connection(v6, &hello(700), &hello(1400)));
    for (x, y) in a.into_iter().zip(b) {
        pkts.push(pkt(x));
        pkts.push(pkt(y));
    }
    // A retransmitted SYN, then the connection is reset by the server.
    pkts.push(pkt(v4_tcp(PHONE4B, HOST4, 41_002, 8443, SYN, b"")));
    pkts.push(pkt(v4_tcp(PHONE4B, HOST4, 41_002, 8443, SYN, b"")));
    pkts.push(pkt(v4_tcp(HOST4, PHONE4B, 8443, 41_002, RST | ACK, b"")));
    // Two public hosts, the capture starting at the SYN-ACK: its receiver is the client.
    pkts.push(pkt(v4_tcp(PUBLIC_B, PUBLIC_A, 443, 50_000, SYN | ACK, b"")));
    pkts.push(pkt(v4_tcp(PUBLIC_A, PUBLIC_B, 50_000, 443, ACK, &hello(200))));
    pkts.push(pkt(v4_tcp(PUBLIC_B, PUBLIC_A, 443, 50_000, PSH | ACK, &hello(90))));
    // Two public hosts from the SYN: its sender is the client.
    pkts.push(pkt(v4_tcp(PUBLIC_A, PUBLIC_B, 50_001, 22, SYN, b"")));
    pkts.push(pkt(v4_tcp(PUBLIC_B, PUBLIC_A, 22, 50_001, SYN | ACK, b"")));
    pkts.push(pkt(v4_tcp(PUBLIC_B, PUBLIC_A, 22, 50_001, PSH | ACK, b"SSH-2.0-dropbear\r\n")));
    // Two private hosts: both are clients, the first sender wins.
    pkts.push(pkt(v4_tcp(LAN_A, PHONE4, 50_002, 445, SYN, b"")));
    pkts.push(pkt(v4_tcp(PHONE4, LAN_A, 445, 50_002, SYN | ACK, b"")));
    // A data offset under 5 words, and a data offset past the packet.
    let mut doff = v4_tcp(PHONE4, HOST4, 41_003, 443, ACK, b"");
    doff[32] = 0x40;
    pkts.push(pkt(doff));
    let mut past = v4_tcp(PHONE4, HOST4, 41_003, 443, ACK, b"");
    past[32] = 0xf0;
    pkts.push(pkt(past));
    let s = check_built("tcp_connections.pcap", pcap(false, true, LINKTYPE_RAW, &pkts))?;
    if let Some(s) = s {
        assert!(s.tc >= 10 && s.xdp >= 10 && s.parse_errors == 2, "{s:?}");
    }
    Ok(())
}

#[test]
fn dns_over_udp_and_tcp_agree() -> Result<()> {
    let mut pkts = vec![
        pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 40_053, 53, &dns_query(0x1111, "web.lab.test")))),
        pkt(eth(ETH_IP, &v4_udp(RESOLVER4, PHONE4, 53, 40_053, &dns_response(0x1111, "web.lab.test", 1)))),
        // A response larger than PAYLOAD_CAP: the event keeps its first 1,280 bytes.
        pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 40_053, 53, &dns_query(0x2222, "many.lab.test")))),
        pkt(eth(ETH_IP, &v4_udp(RESOLVER4, PHONE4, 53, 40_053, &dns_response(0x2222, "many.lab.test", 90)))),
        pkt(eth(ETH_IPV6, &v6_udp(PHONE6, RESOLVER6, 40_054, 53, &dns_query(0x3333, "web.lab.test")))),
        pkt(eth(ETH_IPV6, &v6_udp(RESOLVER6, PHONE6, 53, 40_054, &dns_response(0x3333, "web.lab.test", 2)))),
        // An empty datagram to port 53: no payload, no event.
        pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 40_055, 53, b""))),
        // mDNS-style: port 53 on neither side but 5353; no DNS event, a first payload.
        pkt(eth(ETH_IP, &v4_udp(PHONE4, [224, 0, 0, 251], 5353, 5353, &dns_query(0, "nas.local")))),
    ];
    // DNS over TCP: a query, the response in two segments.
    let response = dns_tcp(&dns_response(0x4444, "many.lab.test", 60));
    let (r1, r2) = response.split_at(700);
    let t = |up: bool, flags: u8, p: &[u8]| {
        let ip = if up {
            v4_tcp(PHONE4, RESOLVER4, 40_056, 53, flags, p)
        } else {
            v4_tcp(RESOLVER4, PHONE4, 53, 40_056, flags, p)
        };
        pkt(eth(ETH_IP, &ip))
    };
    pkts.extend([
        t(true, SYN, b""),
        t(false, SYN | ACK, b""),
        t(true, ACK, b""),
        t(true, PSH | ACK, &dns_tcp(&dns_query(0x4444, "many.lab.test"))),
        t(false, ACK, r1),
        t(false, PSH | ACK, r2),
        t(true, FIN | ACK, b""),
        t(false, FIN | ACK, b""),
        t(true, ACK, b""),
    ]);
    let s = check_built("dns_udp_tcp.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.events >= 10 && s.tc > 0, "{s:?}");
    }
    Ok(())
}

#[test]
fn truncated_packets_agree() -> Result<()> {
    let seg = eth(ETH_IP, &v4_tcp(PHONE4, HOST4, 42_000, 443, ACK | PSH, &hello(400)));
    let seg6 = eth(ETH_IPV6, &v6_tcp(PHONE6, HOST6, 42_001, 443, ACK | PSH, &hello(400)));
    let pkts = vec![
        pkt(eth(ETH_IP, &v4_tcp(PHONE4, HOST4, 42_000, 443, SYN, b""))),
        // Cut in the middle of the TCP header.
        cut(seg.clone(), 14 + 20 + 10),
        cut(seg6.clone(), 14 + 40 + 13),
        // Cut right after the TCP header: the payload is gone.
        cut(seg.clone(), 14 + 20 + 20),
        // Cut in the payload.
        cut(seg.clone(), 14 + 20 + 20 + 100),
        cut(seg6, 14 + 40 + 20 + 1),
        // Cut in the IP header, at the Ethernet header, and before it ends.
        cut(seg.clone(), 14 + 12),
        cut(seg.clone(), 14),
        cut(seg.clone(), 10),
        // A UDP header cut short.
        cut(eth(ETH_IP, &v4_udp(HOST4, PHONE4, 53, 42_002, &dns_response(1, "web.lab.test", 1))), 14 + 20 + 5),
        pkt(seg),
    ];
    let s = check_built("truncated.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.too_short == 1 && s.parse_errors >= 5, "{s:?}");
    }
    Ok(())
}

#[test]
fn arp_and_other_non_ip_frames_agree() -> Result<()> {
    let pkts = vec![
        pkt(eth(ETH_ARP, &arp(false))),
        pkt(eth(ETH_ARP, &arp(true))),
        pkt(eth(ETH_IP, &v4_udp(PHONE4, HOST4, 6000, 6001, b"between"))),
        pkt(eth(ETH_LLDP, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1, 0, 0])),
        // An 802.3 length field where the EtherType goes.
        pkt(eth(0x0026, &[0x42, 0x42, 0x03, 0, 0, 0])),
        pkt(eth(ETH_IP, &v4_udp(HOST4, PHONE4, 6001, 6000, b"neewteb"))),
        // IPv4 EtherType, version 7.
        pkt(eth(ETH_IP, &{
            let mut p = v4_udp(PHONE4, HOST4, 1, 2, b"v7");
            p[0] = 0x75;
            p
        })),
    ];
    let s = check_built("arp.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.parse_errors == 5 && s.flows == 1, "{s:?}");
    }
    Ok(())
}

#[test]
fn linux_sll2_capture_agrees() -> Result<()> {
    let pkts = vec![
        pkt(sll2(ETH_IP, true, &v4_udp(PHONE4, RESOLVER4, 43_000, 53, &dns_query(5, "web.lab.test")))),
        pkt(sll2(ETH_IP, false, &v4_udp(RESOLVER4, PHONE4, 53, 43_000, &dns_response(5, "web.lab.test", 1)))),
        pkt(sll2(ETH_IPV6, true, &v6_tcp(PHONE6, HOST6, 43_001, 443, SYN, b""))),
        pkt(sll2(ETH_IPV6, false, &v6_tcp(HOST6, PHONE6, 443, 43_001, SYN | ACK, b""))),
        pkt(sll2(ETH_IPV6, true, &v6_tcp(PHONE6, HOST6, 43_001, 443, ACK | PSH, &hello(250)))),
        // Not IP: never the kernel's.
        pkt(sll2(ETH_ARP, false, &arp(false))),
        // The header alone: cut before IP.
        pkt(sll2(ETH_IP, false, b"")),
        // Says IPv4, holds no IP version: the kernel's parser decides.
        pkt(sll2(ETH_IP, false, &[0x55; 40])),
        // Says IPv4, holds IPv6: the version nibble decides, on both sides.
        pkt(sll2(ETH_IP, true, &v6_udp(PHONE6, HOST6, 43_002, 9, b"discard"))),
        // IP cut to 8 bytes: under what a test run takes.
        pkt(sll2(ETH_IP, true, &v4_udp(PHONE4, HOST4, 1, 2, b"")[..8])),
    ];
    let s = check_built("sll2.pcap", pcap(false, false, LINKTYPE_LINUX_SLL2, &pkts))?;
    if let Some(s) = s {
        assert!(s.link_skipped == 2 && s.too_short == 1 && s.tc > 0 && s.parse_errors == 1, "{s:?}");
    }
    Ok(())
}

#[test]
fn big_endian_pcap_agrees() -> Result<()> {
    let pkts = vec![
        pkt(ipv4(PHONE4, HOST4, IPPROTO_ICMP, 1, 0, &icmp_echo(false, b"big-endian"))),
        pkt(ipv4(HOST4, PHONE4, IPPROTO_ICMP, 1, 0, &icmp_echo(true, b"big-endian"))),
        pkt(v4_udp(PHONE4, HOST4, 44_000, 443, &hello(1200))),
        pkt(v4_udp(HOST4, PHONE4, 443, 44_000, &hello(1250))),
        // GRE: keyed by protocol alone.
        pkt(ipv4(PHONE4, HOST4, 47, 2, 0, &[0, 0, 0x08, 0, 1, 2, 3, 4])),
        pkt(ipv6(PHONE6, HOST6, IPPROTO_ICMPV6, &[128, 0, 0, 0, 0, 2, 0, 1])),
        pkt(ipv6(HOST6, PHONE6, IPPROTO_ICMPV6, &[129, 0, 0, 0, 0, 2, 0, 1])),
        // Version 5: not IP, never the kernel's on a raw link.
        pkt(vec![0x50; 30]),
        // Ten bytes of IPv4: under what a test run takes.
        pkt(v4_udp(PHONE4, HOST4, 1, 2, b"")[..10].to_vec()),
        // A total length past the frame, and a zero one: the frame's length counts.
        pkt({
            let mut p = v4_udp(PHONE4, HOST4, 44_001, 4500, b"ike");
            p[2..4].copy_from_slice(&9000u16.to_be_bytes());
            p
        }),
        pkt({
            let mut p = v4_udp(PHONE4, HOST4, 44_001, 4500, b"ike");
            p[2..4].copy_from_slice(&0u16.to_be_bytes());
            p
        }),
        // A total length under the headers.
        pkt({
            let mut p = v4_udp(PHONE4, HOST4, 44_002, 4500, b"ike");
            p[2..4].copy_from_slice(&24u16.to_be_bytes());
            p
        }),
    ];
    let s = check_built("big_endian.pcap", pcap(true, false, LINKTYPE_RAW, &pkts))?;
    if let Some(s) = s {
        assert!(s.link_skipped == 1 && s.too_short == 1 && s.tc > 0, "{s:?}");
    }
    Ok(())
}

#[test]
fn pcapng_with_ethernet_and_raw_ip_interfaces_agrees() -> Result<()> {
    const ETHERNET: u32 = 0;
    const RAW: u32 = 1;
    let pkts = vec![
        // A query on the tunnel (raw IP), its answer seen on the Ethernet side: one flow.
        on(RAW, v4_udp(PHONE4, RESOLVER4, 45_000, 53, &dns_query(7, "tls.lab.test"))),
        on(ETHERNET, eth(ETH_IP, &v4_udp(RESOLVER4, PHONE4, 53, 45_000, &dns_response(7, "tls.lab.test", 1)))),
        on(RAW, v4_tcp(PHONE4, HOST4, 45_001, 443, SYN, b"")),
        on(ETHERNET, eth(ETH_IP, &v4_tcp(HOST4, PHONE4, 443, 45_001, SYN | ACK, b""))),
        on(RAW, v4_tcp(PHONE4, HOST4, 45_001, 443, ACK, &hello(517))),
        on(ETHERNET, eth(ETH_IP, &v4_tcp(PHONE4, HOST4, 45_001, 443, ACK, &hello(517)))),
        on(ETHERNET, eth(ETH_IP, &v4_tcp(HOST4, PHONE4, 443, 45_001, ACK | PSH, &hello(1300)))),
        on(RAW, v6_udp(PHONE6, HOST6, 45_002, 443, &hello(1200))),
        on(ETHERNET, eth(ETH_IPV6, &v6_udp(HOST6, PHONE6, 443, 45_002, &hello(1200)))),
        on(ETHERNET, eth(ETH_ARP, &arp(false))),
        on(RAW, vec![0x00; 24]),
        on(RAW, v6_udp(PHONE6, HOST6, 1, 2, b"")[..30].to_vec()),
    ];
    let s = check_built("two_interfaces_ns.pcapng", pcapng_ns(&[1, LINKTYPE_RAW as u16], &pkts))?;
    if let Some(s) = s {
        assert!(s.link_skipped == 1 && s.tc > 0 && s.xdp > 0 && s.parse_errors == 2, "{s:?}");
    }
    Ok(())
}

#[test]
fn jumbo_frames_agree() -> Result<()> {
    // Larger than a test run takes whole: both sides get them cut to the same length.
    let pkts = vec![
        pkt(eth(ETH_IP, &v4_udp(PHONE4, HOST4, 46_000, 9000, &[1; 8900]))),
        pkt(eth(ETH_IP, &v4_udp(HOST4, PHONE4, 9000, 46_000, &[2; 8900]))),
        pkt(eth(ETH_IPV6, &v6_tcp(HOST6, PHONE6, 443, 46_001, SYN | ACK, b""))),
        pkt(eth(ETH_IPV6, &v6_tcp(HOST6, PHONE6, 443, 46_001, ACK, &[3; 8000]))),
        pkt(eth(ETH_IP, &v4_udp(PHONE4, RESOLVER4, 46_002, 53, &dns_response(1, "many.lab.test", 500)))),
    ];
    let s = check_built("jumbo.pcap", pcap(false, false, LINKTYPE_ETHERNET, &pkts))?;
    if let Some(s) = s {
        assert!(s.cut == 4 && s.tc > 0, "{s:?}");
    }
    Ok(())
}

#[test]
fn flows_ended_idle_agree() -> Result<()> {
    // import-pcap ends a flow when a packet meets its entry idle past its timeout, as the
    // daemon's sweep would have; the entry leaves the kernel's table too, and the packet starts
    // a new flow on both sides.
    let syn = |flags| pkt(v4_tcp(PHONE4, HOST4, 47_000, 443, flags, b""));
    let pkts = vec![
        pkt(v4_udp(PHONE4, HOST4, 47_001, 3478, b"binding request")),
        pkt(v4_udp(HOST4, PHONE4, 3478, 47_001, b"binding response")),
        // Past the UDP timeout, the server speaks first: a new flow, still the phone's.
        after(61, v4_udp(HOST4, PHONE4, 3478, 47_001, b"late")),
        pkt(v4_udp(PHONE4, HOST4, 47_001, 3478, b"late reply")),
        // A connection that ended (both FINs), then its last ACK past the ended-TCP timeout.
        syn(SYN),
        pkt(v4_tcp(HOST4, PHONE4, 443, 47_000, SYN | ACK, b"")),
        pkt(v4_tcp(PHONE4, HOST4, 47_000, 443, ACK | PSH, &hello(300))),
        pkt(v4_tcp(PHONE4, HOST4, 47_000, 443, FIN | ACK, b"")),
        pkt(v4_tcp(HOST4, PHONE4, 443, 47_000, FIN | ACK, b"")),
        after(11, v4_tcp(PHONE4, HOST4, 47_000, 443, ACK, b"")),
        // ICMP past its timeout, IPv6 this time.
        pkt(ipv6(PHONE6, HOST6, IPPROTO_ICMPV6, &[128, 0, 0, 0, 0, 3, 0, 1])),
        after(31, ipv6(HOST6, PHONE6, IPPROTO_ICMPV6, &[129, 0, 0, 0, 0, 3, 0, 1])),
        // An open connection idle for five minutes is still open.
        after(300, v4_tcp(PHONE4, HOST4, 47_000, 443, ACK | PSH, b"still here")),
    ];
    let s = check_built("idle_flows.pcap", pcap(false, false, LINKTYPE_RAW, &pkts))?;
    if let Some(s) = s {
        assert!(s.ended == 3 && s.tc > 0, "{s:?}");
    }
    Ok(())
}
