//! The XDP program's answers to DNS queries for blocked names: the exact reply bytes it sends
//! back (BPF_PROG_TEST_RUN's output packet), which names a rule covers, per-device and timed
//! rules, the reset for DNS over TCP, and what is counted.

use anyhow::{Context as _, Result};
use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use tracker::{
    analysis::dns::{self, Transport},
    blocking::name_key,
    kernel,
};
use tracker_common::{Counter, EventKind, L2_LEN_ETHERNET, L2_LEN_NONE, TCP_ACK, TCP_RST, name::domain_hash};

use tracker_tests::hostile_dns::{query_for, question_for, with_edns};

use super::{HOST4, HOST6, Kernel, MAC_A, MAC_B, PHONE4, PHONE6, XDP_DROP, XDP_PASS, eth, udp4, udp6};

pub(super) const XDP_TX: u32 = 3;
const OTHER_PHONE4: [u8; 4] = [10, 77, 0, 3];

/// A stub resolver's query, as dig sends it: id 0x1234, RD set, one question, an EDNS record.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    with_edns(query_for(0x1234, name, qtype))
}

impl Kernel {
    /// Runs the XDP program and returns its verdict and the packet as it left.
    pub(super) fn xdp_out(&mut self, pkt: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog = kernel::prog_xdp(&mut self.ebpf)?;
        let mut out = vec![0u8; pkt.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.data_out = Some(&mut out);
        let r = prog.test_run(opts).context("BPF_PROG_TEST_RUN of the XDP program")?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    fn block_name(&mut self, domain: &str, client: Option<[u8; 4]>, id: u32, expires_ns: u64) -> Result<()> {
        let key = name_key(domain_hash(domain).unwrap(), client.map(std::net::IpAddr::from));
        self.tables().names.insert(&key, id, expires_ns)
    }

    /// Queries refused per rule, as the kernel counted them.
    fn refused(&self, id: u32) -> u64 {
        let entries = self.source.tables.names.entries().unwrap();
        entries.iter().filter(|(_, v)| v.rule_id == id).map(|(_, v)| v.packets_dropped).sum()
    }
}

/// The ones'-complement sum over `bytes`, as a checksum check adds it up: 0xffff when the
/// checksum inside is right.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut s: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Checks the reply's IP and transport checksums and returns (source, destination, source
/// port, destination port, transport payload).
pub(super) fn check_reply(out: &[u8], l2: usize) -> (Vec<u8>, Vec<u8>, u16, u16, Vec<u8>) {
    let pkt = SlicedPacket::from_ip(&out[l2..]).expect("the reply parses");
    let (src, dst, pseudo_tail): (Vec<u8>, Vec<u8>, Vec<u8>) = match &pkt.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(ones_sum(&[h.slice()]), 0xffff, "IPv4 header checksum");
            assert_eq!(h.total_len() as usize, out.len() - l2, "IPv4 total length");
            assert_eq!(h.ttl(), 64);
            let l4_len = h.total_len() - 20;
            let mut tail = vec![0, h.protocol().0];
            tail.extend_from_slice(&l4_len.to_be_bytes());
            (h.source().to_vec(), h.destination().to_vec(), tail)
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            assert_eq!(h.payload_length() as usize, out.len() - l2 - 40, "IPv6 payload length");
            let mut tail = (u32::from(h.payload_length())).to_be_bytes().to_vec();
            tail.extend_from_slice(&[0, 0, 0, h.next_header().0]);
            (h.source().to_vec(), h.destination().to_vec(), tail)
        }
        other => panic!("not IP: {other:?}"),
    };
    let l4_start = out.len() - pseudo_tail_len(&pseudo_tail);
    let l4 = &out[l4_start..];
    assert_eq!(ones_sum(&[&src, &dst, &pseudo_tail, l4]), 0xffff, "transport checksum");
    let (sport, dport, payload) = match pkt.transport {
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port(), u.payload().to_vec()),
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port(), t.payload().to_vec()),
        other => panic!("no transport: {other:?}"),
    };
    (src, dst, sport, dport, payload)
}

/// The transport segment's length, from the pseudo-header's length field.
fn pseudo_tail_len(tail: &[u8]) -> usize {
    match tail.len() {
        4 => u16::from_be_bytes([tail[2], tail[3]]) as usize,
        _ => u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize,
    }
}

#[test]
fn a_query_for_a_blocked_name_is_answered_nxdomain_in_place() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_name("braze.com", None, 7, 0)?;
    // Mixed case, as resolvers using 0x20 randomisation send it: matched case-insensitively,
    // echoed exactly.
    let q = query("sdk.iad-01.BRAZE.com", 1);
    let (verdict, out) = k.xdp_out(&udp4(PHONE4, HOST4, 40000, 53, &q))?;
    assert_eq!(verdict, XDP_TX);
    let (src, dst, sport, dport, msg) = check_reply(&out, 0);
    assert_eq!((src.as_slice(), dst.as_slice(), sport, dport), (&HOST4[..], &PHONE4[..], 53, 40000));
    let question = question_for("sdk.iad-01.BRAZE.com", 1);
    let mut expected = vec![0x12, 0x34, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(&question);
    assert_eq!(msg, expected, "id kept, QR RD RA, NXDOMAIN, the question alone");
    let parsed = dns::parse(&msg, Transport::Udp)?;
    assert_eq!((parsed.rcode.as_str(), parsed.is_response, parsed.answers.len()), ("NXDOMAIN", true, 0));
    assert_eq!(k.refused(7), 1);
    assert_eq!(k.counter(Counter::DnsRefused)?, 1);
    assert_eq!((k.counter(Counter::Passed)?, k.counter(Counter::Dropped)?), (0, 0));
    assert!(k.flows()?.is_empty(), "an answered query makes no flow");
    let events = k.events()?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].0, events[0].3, events[0].4.as_slice()), (EventKind::DnsRefused, 7, q.as_slice()));
    Ok(())
}

#[test]
fn a_rule_covers_its_name_and_names_under_it_not_lookalikes() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_name("braze.com", None, 1, 0)?;
    k.block_name("ads.example.org", None, 2, 0)?;
    for (name, want) in [
        ("braze.com", XDP_TX),
        ("a.b.c.braze.com", XDP_TX),
        ("evilbraze.com", XDP_PASS),
        ("braze.com.evil.net", XDP_PASS),
        ("com", XDP_PASS),
        ("example.org", XDP_PASS),
        ("www.example.org", XDP_PASS),
        ("x.ads.example.org", XDP_TX),
    ] {
        let (v, _) = k.xdp_out(&udp4(PHONE4, HOST4, 40000, 53, &query(name, 28)))?;
        assert_eq!(v, want, "{name}");
    }
    assert_eq!((k.refused(1), k.refused(2)), (2, 1));
    // Queries that pass are the ordinary DNS events, and count their flow.
    assert_eq!(k.counter(Counter::Passed)?, 5);
    Ok(())
}

#[test]
fn ipv6_queries_get_a_checksummed_ipv6_reply() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_name("tracker.example", None, 3, 0)?;
    for len in 1..=4 {
        // Names of every length modulo 4: the checksum sums whole words and pads the rest.
        let name = format!("{}.tracker.example", "a".repeat(len));
        let (v, out) = k.xdp_out(&udp6(PHONE6, HOST6, 40001, 53, &query(&name, 28)))?;
        assert_eq!(v, XDP_TX, "{name}");
        let (src, dst, sport, dport, msg) = check_reply(&out, 0);
        assert_eq!((src.as_slice(), dst.as_slice(), sport, dport), (&HOST6[..], &PHONE6[..], 53, 40001));
        assert_eq!(dns::parse(&msg, Transport::Udp)?.rcode, "NXDOMAIN");
    }
    Ok(())
}

#[test]
fn a_device_rule_holds_for_that_device_only_and_timed_rules_end() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_name("tiktok.example", Some(PHONE4), 4, 0)?;
    k.block_name("expired.example", None, 5, 1)?;
    k.block_name("later.example", None, 6, u64::MAX)?;
    let q = |name: &str| query(name, 1);
    assert_eq!(k.xdp_out(&udp4(PHONE4, HOST4, 1, 53, &q("www.tiktok.example")))?.0, XDP_TX);
    assert_eq!(k.xdp_out(&udp4(OTHER_PHONE4, HOST4, 1, 53, &q("www.tiktok.example")))?.0, XDP_PASS);
    assert_eq!(k.xdp_out(&udp4(PHONE4, HOST4, 1, 53, &q("expired.example")))?.0, XDP_PASS);
    assert_eq!(k.xdp_out(&udp4(PHONE4, HOST4, 1, 53, &q("later.example")))?.0, XDP_TX);
    assert_eq!((k.refused(4), k.refused(5), k.refused(6)), (1, 0, 1));
    Ok(())
}

#[test]
fn a_query_over_tcp_is_reset() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_name("braze.com", None, 8, 0)?;
    let msg = query("sdk.braze.com", 1);
    let mut payload = (msg.len() as u16).to_be_bytes().to_vec();
    payload.extend_from_slice(&msg);
    let mut pkt = Vec::new();
    // With the timestamp option, as Linux clients send every segment: a 32-byte TCP header.
    use etherparse::TcpOptionElement::{Noop, Timestamp};
    PacketBuilder::ipv4(PHONE4, HOST4, 64)
        .tcp(40002, 53, 1000, 500)
        .ack(77)
        .psh()
        .options(&[Noop, Noop, Timestamp(1, 2)])
        .unwrap()
        .write(&mut pkt, &payload)
        .unwrap();
    assert_eq!(pkt[32] >> 4, 8, "the query's TCP header has 32 bytes");
    let (v, out) = k.xdp_out(&pkt)?;
    assert_eq!(v, XDP_TX);
    let (src, dst, sport, dport, body) = check_reply(&out, 0);
    assert_eq!((src.as_slice(), dst.as_slice(), sport, dport), (&HOST4[..], &PHONE4[..], 53, 40002));
    assert!(body.is_empty());
    let tcp = etherparse::TcpHeaderSlice::from_slice(&out[20..])?;
    assert_eq!((tcp.rst(), tcp.ack(), tcp.syn(), tcp.fin()), (true, true, false, false));
    assert_eq!(tcp.sequence_number(), 77, "the reset takes the sequence number the client acknowledged");
    assert_eq!(tcp.acknowledgment_number(), 1000 + payload.len() as u32, "and acknowledges the segment");
    assert_eq!(out[33] & (TCP_RST | TCP_ACK), TCP_RST | TCP_ACK);
    assert_eq!(k.refused(8), 1);
    Ok(())
}

#[test]
fn ethernet_replies_swap_the_mac_addresses() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_ETHERNET)?;
    k.block_name("braze.com", None, 9, 0)?;
    let (v, out) = k.xdp_out(&eth(&udp4(PHONE4, HOST4, 40003, 53, &query("braze.com", 1)), 0x0800))?;
    assert_eq!(v, XDP_TX);
    assert_eq!((&out[..6], &out[6..12]), (&MAC_A[..], &MAC_B[..]), "back to the sender");
    let (.., msg) = check_reply(&out, 14);
    assert_eq!(dns::parse(&msg, Transport::Udp)?.rcode, "NXDOMAIN");
    Ok(())
}

#[test]
fn only_plain_queries_are_answered() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_name("braze.com", None, 10, 0)?;
    let good = query("braze.com", 1);
    let mut response = good.clone();
    response[2] |= 0x80;
    let mut notify = good.clone();
    notify[2] = 4 << 3;
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let mut pointer = good[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let cut = good[..12 + 5].to_vec();
    for (what, msg) in [
        ("a response", response),
        ("a NOTIFY", notify),
        ("two questions", two_questions),
        ("a compression pointer", pointer),
        ("a cut name", cut),
    ] {
        assert_eq!(k.xdp_out(&udp4(PHONE4, HOST4, 1, 53, &msg))?.0, XDP_PASS, "{what}");
    }
    // To another port than 53, or from the resolver's side: not a device's query.
    assert_eq!(k.xdp_out(&udp4(PHONE4, HOST4, 1, 5353, &good))?.0, XDP_PASS);
    assert_eq!(k.refused(10), 0);
    // IPv4 options: refused all the same, by dropping the query (the reply is built for plain
    // headers only).
    let mut opts = udp4(PHONE4, HOST4, 1, 53, &good);
    opts[0] = 0x46;
    opts.splice(20..20, [1, 1, 1, 1]);
    let total = opts.len() as u16;
    opts[2..4].copy_from_slice(&total.to_be_bytes());
    assert_eq!(k.xdp_out(&opts)?.0, XDP_DROP);
    assert_eq!(k.refused(10), 1);
    Ok(())
}
