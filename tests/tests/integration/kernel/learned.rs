//! Addresses learned for name rules (`daemon::learned`): a blocked name answered anyway (here
//! through a CNAME chain) or named by a flow's TLS server name gets its addresses blocked in the
//! real kernel tries, an address that also serves an allowed name is left open, the address
//! rules' reconcile keeps learned entries, and they end when due.

use std::time::SystemTime;

use anyhow::Result;
use etherparse::PacketBuilder;
use ipnet::IpNet;
use tracker::{
    blocking::{self, name_key},
    daemon::learned::Learner,
    pipeline::{Namer, naming::DEFAULT_GRACE},
    store::Store,
    timefmt::KernelClock,
};
use tracker_common::{
    BLOCK_LEARNED, DIR_DOWN, DIR_UP, EventHeader, EventKind, FAMILY_V4, FlowKey, IPPROTO_TCP, IPPROTO_UDP, L2_LEN_NONE,
    name::domain_hash,
    user::{Event, Payload},
};

use tracker_tests::hostile_dns::{labels_of, query_for, wire_name};

use super::{Kernel, PHONE4, XDP_DROP, XDP_PASS};

const RESOLVER: [u8; 4] = [10, 77, 0, 1];
const CDN_ADDR: [u8; 4] = [203, 0, 113, 10];
const SHARED_ADDR: [u8; 4] = [203, 0, 113, 30];
const SNI_ADDR: [u8; 4] = [198, 51, 100, 7];
const RULE: u32 = 5;

fn wire(name: &str) -> Vec<u8> {
    wire_name(&labels_of(name))
}

/// A response to an A query for `qname`: a CNAME to `target` (when given), then `target`'s
/// (or `qname`'s) address, TTL 300.
fn response(id: u16, qname: &str, target: Option<&str>, addr: [u8; 4]) -> Vec<u8> {
    let answers = if target.is_some() { 2 } else { 1 };
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, answers, 0, 0, 0, 0]);
    m.extend(wire(qname));
    m.extend_from_slice(&[0, 1, 0, 1]);
    let owner = match target {
        Some(t) => {
            let rdata = wire(t);
            m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 44]);
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend(rdata);
            wire(t)
        }
        None => vec![0xc0, 12],
    };
    m.extend(owner);
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
    m.extend_from_slice(&addr);
    m
}

fn header(protocol: u8, remote: [u8; 4], client_port: u16, remote_port: u16, direction: u8) -> EventHeader {
    let mut key = FlowKey { client_port, remote_port, protocol, family: FAMILY_V4, ..FlowKey::default() };
    key.client[..4].copy_from_slice(&PHONE4);
    key.remote[..4].copy_from_slice(&remote);
    EventHeader { kind: EventKind::Dns as u8, direction, key, ..EventHeader::default() }
}

/// The phone asks `qname` and gets `response`.
fn exchange(namer: &mut Namer, port: u16, id: u16, qname: &str, response: &[u8]) {
    let at = SystemTime::now();
    namer.dns_message(&header(IPPROTO_UDP, RESOLVER, port, 53, DIR_UP), &query_for(id, qname, 1), at);
    namer.dns_message(&header(IPPROTO_UDP, RESOLVER, port, 53, DIR_DOWN), response, at);
}

/// A TLS ClientHello carrying `sni`, as a client's first segment.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1, 0];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

fn syn(dst: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(PHONE4, dst, 64).tcp(40_100, 443, 1, 1000).syn().write(&mut v, &[]).unwrap();
    v
}

#[test]
fn a_blocked_names_addresses_are_learned_kept_by_reconcile_and_ended() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    k.tables().names.insert(&name_key(domain_hash("cdn.lab.test").unwrap(), None), RULE, 0)?;
    let mut namer = Namer::new(vec![], DEFAULT_GRACE);
    namer.sightings = Some(Vec::new());
    let mut learner = Learner::default();

    // An allowed name first, on the address the blocked chain will also use: shared.
    exchange(&mut namer, 5000, 1, "shop.lab.test", &response(1, "shop.lab.test", None, SHARED_ADDR));
    exchange(&mut namer, 5001, 2, "www.lab.test", &response(2, "www.lab.test", Some("e1.cdn.lab.test"), CDN_ADDR));
    exchange(&mut namer, 5002, 3, "blog.lab.test", &response(3, "blog.lab.test", Some("e2.cdn.lab.test"), SHARED_ADDR));
    // The phone names a blocked host in its ClientHello, to an address no answer gave.
    let hello = client_hello("tracking.cdn.lab.test");
    let mut h = header(IPPROTO_TCP, SNI_ADDR, 40_200, 443, DIR_UP);
    h.kind = EventKind::FirstPayload as u8;
    let clock = KernelClock::now();
    namer.event(Ok(Event::FirstPayload(Payload { header: h, len: hello.len() as u32, data: &hello })), clock);

    let tables = &mut k.source.tables;
    let done = learner.learn(&mut namer, &tables.names, &mut tables.blocks)?;
    assert_eq!((done.blocked, done.shared), (2, 1), "the chain's and the SNI's addresses; the shared one left open");
    let learned = tables.blocks.learned()?;
    let mut nets: Vec<IpNet> = learned.iter().map(|(n, _)| *n).collect();
    nets.sort();
    assert_eq!(
        nets,
        vec![IpNet::from(std::net::IpAddr::from(SNI_ADDR)), IpNet::from(std::net::IpAddr::from(CDN_ADDR))]
    );
    assert!(learned.iter().all(|(_, v)| v.rule_id == RULE && v.flags == BLOCK_LEARNED && v.expires_ns > 0));

    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_DROP);
    assert_eq!(k.xdp(&syn(SNI_ADDR))?, XDP_DROP);
    assert_eq!(k.xdp(&syn(SHARED_ADDR))?, XDP_PASS, "an address of an allowed name stays open");

    // The address rules' reconcile (no address rules stored) leaves learned entries alone.
    let dir = std::env::temp_dir().join(format!("tracker-kt-learned-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut store = Store::open(&dir.join("t.db"))?;
    let reconciled = blocking::reconcile(&mut store, &mut k.source.tables.blocks);
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    reconciled?;
    assert_eq!(k.source.tables.blocks.learned()?.len(), 2);
    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_DROP);

    // Nothing is due now while the rule is active; when it goes, its addresses go.
    let now = tracker::timefmt::kernel_ns_now();
    let active: std::collections::HashSet<u32> = [RULE].into();
    assert_eq!(learner.expire(&mut k.source.tables.blocks, now, Some(&active))?, 0);
    assert_eq!(learner.expire(&mut k.source.tables.blocks, now, Some(&Default::default()))?, 2);
    assert!(k.source.tables.blocks.learned()?.is_empty());
    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_PASS);

    // A daemon started later finds learned entries in the tries and ends them in turn.
    let tables = &mut k.source.tables;
    tables.blocks.insert_learned(&IpNet::from(std::net::IpAddr::from(CDN_ADDR)), RULE, 1)?;
    let mut later = Learner::default();
    assert_eq!(later.adopt(&tables.blocks)?, 1);
    assert_eq!(later.expire(&mut tables.blocks, tracker::timefmt::kernel_ns_now(), None)?, 1, "past its end");
    Ok(())
}
