//! The dns-bypass rule in the real XDP program: a device's DNS over TLS (TCP to port 853) is
//! reset at once and its DNS over QUIC (UDP to 853) dropped, counted as the rule's drops; a
//! rule for one device leaves the others alone, an ended one lets everything through, other
//! ports are untouched; and the rule as the CLI stores it (`rules::kernel::reconcile`) refuses
//! the DoH names and Firefox's canary domain, and takes its port entries out again when it
//! ends, their drops kept in its history.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use etherparse::{PacketBuilder, TcpHeaderSlice};
use tracker::{blocking::port_key, rules::bypass, store::blocks::RuleKind};
use tracker_common::{Counter, EventKind, IPPROTO_TCP, IPPROTO_UDP, L2_LEN_NONE, account::ENCRYPTED_DNS_PORT as DOT};
use tracker_tests::hostile_dns::{query_for, with_edns};

use super::{
    HOST4, HOST6, Kernel, PHONE4, PHONE6, TC_ACT_UNSPEC, TempStore, XDP_DROP, XDP_PASS, key4,
    refuse::{XDP_TX, check_reply},
    udp4,
};

const OTHER_PHONE4: [u8; 4] = [10, 77, 0, 3];
const RESOLVER: [u8; 4] = [10, 77, 0, 1];
/// The SYN's sequence number, which the reset must acknowledge (plus one).
const ISN: u32 = 0x1000_0000;

fn syn4(src: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, HOST4, 64).tcp(40_853, dport, ISN, 64_240).syn().write(&mut v, &[]).unwrap();
    v
}

fn syn6() -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(PHONE6, HOST6, 64).tcp(40_853, DOT, ISN, 64_240).syn().write(&mut v, &[]).unwrap();
    v
}

/// A DoQ client's first datagram (its content does not matter to the rule).
fn quic4(src: [u8; 4]) -> Vec<u8> {
    udp4(src, HOST4, 40_854, DOT, &[0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0])
}

impl Kernel {
    /// A port rule for `id` over both transports, for one device or every device.
    fn block_ports(&mut self, client: Option<[u8; 4]>, id: u32, expires_ns: u64) -> Result<()> {
        let ports = self.tables().names.ports.as_mut().context("the port map")?;
        for (protocol, port) in bypass::PORTS {
            ports.insert(&port_key(client.map(IpAddr::from), protocol, port), id, expires_ns)?;
        }
        Ok(())
    }

    /// A rule's drops as the kernel counted them (`tracker blocks`' and the sweep's reading).
    fn drops(&self, id: u32) -> Result<u64> {
        Ok(self.source.tables.blocks.counters()?.get(&id).map_or(0, |r| r.packets_dropped))
    }
}

#[test]
fn a_devices_dot_is_reset_and_doq_dropped_as_the_rules_hits() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_ports(None, 21, 0)?;
    let (verdict, out) = k.xdp_out(&syn4(PHONE4, DOT))?;
    assert_eq!(verdict, XDP_TX, "the SYN goes back as a reset");
    let (src, dst, sport, dport, body) = check_reply(&out, 0);
    assert_eq!((src.as_slice(), dst.as_slice(), sport, dport), (&HOST4[..], &PHONE4[..], DOT, 40_853));
    assert!(body.is_empty());
    let tcp = TcpHeaderSlice::from_slice(&out[20..])?;
    assert_eq!((tcp.rst(), tcp.ack(), tcp.syn()), (true, true, false));
    assert_eq!(tcp.acknowledgment_number(), ISN + 1, "it acknowledges the SYN: connect() fails at once");
    let (verdict, out) = k.xdp_out(&syn6())?;
    assert_eq!(verdict, XDP_TX);
    let (src, dst, ..) = check_reply(&out, 0);
    assert_eq!((src.as_slice(), dst.as_slice()), (&HOST6[..], &PHONE6[..]), "IPv6, checksummed");
    assert_eq!(k.xdp(&quic4(PHONE4))?, XDP_DROP, "a DoQ datagram is dropped");
    assert_eq!(k.drops(21)?, 3);
    let rule = k.source.tables.blocks.counters()?[&21];
    assert!(rule.last_hit_ns > 0);
    assert_eq!((k.counter(Counter::Dropped)?, k.counter(Counter::Passed)?), (3, 0), "resets count as drops");
    assert!(k.flows()?.is_empty(), "stopped packets make no flow");
    // Block events are rate-limited per kernel entry: the TCP one's first, then the UDP one's.
    let events: Vec<_> = k.events()?.into_iter().map(|e| (e.0, e.2.protocol, e.2.remote_port, e.3)).collect();
    assert_eq!(events, [(EventKind::BlockHit, IPPROTO_TCP, DOT, 21), (EventKind::BlockHit, IPPROTO_UDP, DOT, 21)]);
    // Port 443, DNS and the way back are untouched.
    assert_eq!(k.xdp(&syn4(PHONE4, 443))?, XDP_PASS);
    assert!(k.flow(&key4(IPPROTO_TCP, 40_853, 443))?.is_some());
    assert_eq!(k.xdp(&udp4(PHONE4, RESOLVER, 5300, 53, &with_edns(query_for(1, "dns.google", 1))))?, XDP_PASS);
    let mut back = Vec::new();
    PacketBuilder::ipv4(HOST4, PHONE4, 64).tcp(DOT, 40_900, 1, 1000).syn().ack(ISN + 1).write(&mut back, &[])?;
    assert_eq!(k.tc(&back, None)?, TC_ACT_UNSPEC, "egress from 853 is not the rule's");
    assert_eq!(k.drops(21)?, 3);
    Ok(())
}

#[test]
fn without_a_rule_dot_and_doq_pass_and_are_counted() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    assert_eq!(k.xdp(&syn4(PHONE4, DOT))?, XDP_PASS);
    assert_eq!(k.xdp(&quic4(PHONE4))?, XDP_PASS);
    assert_eq!(k.flow(&key4(IPPROTO_TCP, 40_853, DOT))?.context("the DoT flow")?.packets_up, 1);
    assert_eq!(k.flow(&key4(IPPROTO_UDP, 40_854, DOT))?.context("the DoQ flow")?.packets_up, 1);
    assert_eq!(k.counter(Counter::Dropped)?, 0);
    Ok(())
}

#[test]
fn a_device_rule_leaves_other_devices_alone_and_ended_rules_let_through() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_ports(Some(PHONE4), 22, 0)?;
    assert_eq!(k.xdp(&syn4(PHONE4, DOT))?, XDP_TX);
    assert_eq!(k.xdp(&syn4(OTHER_PHONE4, DOT))?, XDP_PASS, "another device");
    assert_eq!(k.xdp(&quic4(OTHER_PHONE4))?, XDP_PASS);
    assert_eq!(k.drops(22)?, 1);
    // The device's rule ended (its end in the past): the rule for every device, if any, holds.
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_ports(Some(PHONE4), 23, 1)?;
    assert_eq!(k.xdp(&syn4(PHONE4, DOT))?, XDP_PASS, "an ended rule");
    k.block_ports(None, 24, u64::MAX)?;
    assert_eq!(k.xdp(&quic4(PHONE4))?, XDP_DROP, "the rule for every device, until its far end");
    assert_eq!((k.drops(23)?, k.drops(24)?), (0, 1));
    Ok(())
}

#[test]
fn an_open_connection_is_reset_where_the_device_expects_it_and_resets_are_not_answered() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.block_ports(None, 25, 0)?;
    // A DoT connection opened before the rule: its next segment, a query, gets a reset whose
    // sequence number is the one the device acknowledged (accepted at once, RFC 5961).
    let mut seg = Vec::new();
    PacketBuilder::ipv4(PHONE4, HOST4, 64).tcp(40_855, DOT, 5000, 500).ack(7777).psh().write(&mut seg, &[9; 40])?;
    let (verdict, out) = k.xdp_out(&seg)?;
    assert_eq!(verdict, XDP_TX);
    let tcp = TcpHeaderSlice::from_slice(&out[20..])?;
    assert_eq!((tcp.rst(), tcp.sequence_number(), tcp.acknowledgment_number()), (true, 7777, 5040));
    let mut rst = Vec::new();
    PacketBuilder::ipv4(PHONE4, HOST4, 64).tcp(40_855, DOT, 5040, 0).rst().write(&mut rst, &[])?;
    assert_eq!(k.xdp(&rst)?, XDP_DROP, "a reset is never answered with a reset");
    assert_eq!(k.drops(25)?, 2);
    Ok(())
}

/// Makes (or ends) the dns-bypass rule for every device as `tracker block-dns-bypass` does.
fn bypass_rule(k: &mut Kernel, t: &mut TempStore, on: bool) -> Result<u32> {
    super::name_rule(k, t, RuleKind::DnsBypass, bypass::RULE, bypass::names(), on)
}

/// The rule's kernel verdict for a query of `name` from the phone.
fn query(k: &mut Kernel, name: &str) -> Result<u32> {
    k.xdp(&udp4(PHONE4, RESOLVER, 5301, 53, &with_edns(query_for(0x5151, name, 1))))
}

#[test]
fn the_stored_rule_refuses_doh_names_and_the_canary_and_ends_whole() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    let mut t = TempStore::new("bypass")?;
    let id = bypass_rule(&mut k, &mut t, true)?;
    for name in ["dns.google", "use-application-dns.net", "mozilla.cloudflare-dns.com", "dns.quad9.net"] {
        assert_eq!(query(&mut k, name)?, XDP_TX, "{name} is refused");
    }
    for name in ["www.google.com", "google.com", "example.org"] {
        assert_eq!(query(&mut k, name)?, XDP_PASS, "{name} is not the rule's");
    }
    assert_eq!(k.xdp(&syn4(PHONE4, DOT))?, XDP_TX);
    assert_eq!(k.xdp(&quic4(PHONE4))?, XDP_DROP);
    let entries = k.source.tables.names.ports.as_ref().context("the port map")?.entries()?;
    assert_eq!(entries.len(), 2, "TCP and UDP for every device: {entries:?}");
    assert!(entries.iter().all(|(key, v)| v.rule_id == id && key.client == [0; 16] && key.port == DOT));
    assert_eq!(k.drops(id)?, 2);
    assert_eq!(k.counter(Counter::DnsRefused)?, 4);

    bypass_rule(&mut k, &mut t, false)?;
    assert_eq!(query(&mut k, "dns.google")?, XDP_PASS);
    assert_eq!(query(&mut k, "use-application-dns.net")?, XDP_PASS);
    assert_eq!(k.xdp(&syn4(PHONE4, DOT))?, XDP_PASS);
    assert!(k.source.tables.names.ports.as_ref().context("the port map")?.entries()?.is_empty());
    let counters = t.store.block_counters(id)?.context("the rule's counters")?;
    assert_eq!(counters.dropped_before, 2, "the port entries' drops stay in the rule's history");
    Ok(())
}
