//! Addresses and names learned for name rules (`daemon::learned`): a blocked name answered
//! anyway (here through a CNAME chain) or named by a flow's TLS server name gets its addresses
//! blocked in the real kernel tries, an address that also serves an allowed name is left open,
//! the name whose chain led to the blocked one is refused by the kernel from then on, an answer
//! held from before a rule is blocked when the rule comes, both reconciles keep learned entries
//! while their rule is active, and they end when due with their counts kept in the rule's
//! history.

use std::time::SystemTime;

use anyhow::Result;
use etherparse::PacketBuilder;
use ipnet::IpNet;
use tracker::{
    blocking::{self, name_key},
    daemon::learned::Learner,
    pipeline::{Namer, naming::DEFAULT_GRACE},
    rules,
    store::blocks::{BlockFilter, RuleKind},
    timefmt::{self, KernelClock},
};
use tracker_common::{
    BLOCK_LEARNED, DIR_DOWN, DIR_UP, EventHeader, EventKind, FAMILY_V4, FlowKey, IPPROTO_TCP, IPPROTO_UDP, L2_LEN_NONE,
    name::domain_hash,
    user::{Event, Payload},
};

use tracker_tests::hostile_dns::{labels_of, query_for, wire_name};

use super::{Kernel, PHONE4, TempStore, XDP_DROP, XDP_PASS, udp4};

const RESOLVER: [u8; 4] = [10, 77, 0, 1];
const CDN_ADDR: [u8; 4] = [203, 0, 113, 10];
const SHARED_ADDR: [u8; 4] = [203, 0, 113, 30];
const SNI_ADDR: [u8; 4] = [198, 51, 100, 7];
const LATE_ADDR: [u8; 4] = [198, 51, 100, 9];
const RULE: u32 = 5;
/// The kernel's verdict for a DNS reply it sent back itself (a refusal).
const XDP_TX: u32 = 3;

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

/// The phone's query for `name` to the resolver.
fn dns_query(name: &str) -> Vec<u8> {
    udp4(PHONE4, RESOLVER, 5100, 53, &query_for(0x4242, name, 1))
}

/// Makes (or ends, `on` false) the rule blocking `domain` for every device.
fn domain_rule(k: &mut Kernel, t: &mut TempStore, domain: &str, on: bool) -> Result<u32> {
    super::name_rule(k, t, RuleKind::Domain, domain, vec![domain.into()], on)
}

/// A namer that saw the phone ask an allowed name, then two names whose chains lead into
/// `cdn.lab.test` (one to the allowed name's address: shared), and name a blocked host in a
/// ClientHello to an address no answer gave.
fn sightings() -> Namer {
    let mut namer = Namer::new(vec![], DEFAULT_GRACE);
    namer.sightings = Some(Vec::new());
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

    namer
}

#[test]
fn a_blocked_names_addresses_and_aliases_are_learned_kept_by_reconcile_and_ended() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    let mut t = TempStore::new("learned")?;
    let rule = domain_rule(&mut k, &mut t, "cdn.lab.test", true)?;
    // A learner that has not looked at the rules since the rule was made learns nothing from it
    // yet: the rule's kind decides what it may teach.
    let tables = &mut k.source.tables;
    let early = Learner::default().learn(&mut sightings(), &mut tables.names, &mut tables.blocks)?;
    assert_eq!(early, Default::default());
    let mut namer = sightings();
    let mut learner = Learner::default();
    learner.set_rules(&[rule].into(), Default::default(), Default::default());
    let tables = &mut k.source.tables;
    let done = learner.learn(&mut namer, &mut tables.names, &mut tables.blocks)?;
    assert_eq!(
        (done.blocked, done.shared, done.aliases),
        (2, 1, 2),
        "the chain's and the SNI's addresses; the shared one left open; both names whose chain led to cdn.lab.test"
    );
    assert_eq!(learner.shared_open_changes(), [(rule, 1)], "one address left open, to be stored");
    assert_eq!(learner.shared_open_changes(), [], "handed out once");
    let learned = tables.blocks.learned()?;
    let mut nets: Vec<IpNet> = learned.iter().map(|(n, _)| *n).collect();
    nets.sort();
    assert_eq!(
        nets,
        vec![IpNet::from(std::net::IpAddr::from(SNI_ADDR)), IpNet::from(std::net::IpAddr::from(CDN_ADDR))]
    );
    assert!(learned.iter().all(|(_, v)| v.rule_id == rule && v.flags == BLOCK_LEARNED && v.expires_ns > 0));
    let mut aliases: Vec<u64> = tables.names.learned()?.iter().map(|(key, _)| key.hash).collect();
    aliases.sort_unstable();
    let mut want = vec![domain_hash("www.lab.test").unwrap(), domain_hash("blog.lab.test").unwrap()];
    want.sort_unstable();
    assert_eq!(aliases, want, "the names asked, global like their rule");

    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_DROP);
    assert_eq!(k.xdp(&syn(SNI_ADDR))?, XDP_DROP);
    assert_eq!(k.xdp(&syn(SHARED_ADDR))?, XDP_PASS, "an address of an allowed name stays open");
    assert_eq!(k.xdp(&dns_query("www.lab.test"))?, XDP_TX, "the alias is refused by the kernel now");
    assert_eq!(k.xdp(&dns_query("shop.lab.test"))?, XDP_PASS);

    // Both reconciles keep learned entries while their rule is active.
    blocking::reconcile(&mut t.store, &mut k.source.tables.blocks)?;
    let devices = t.store.devices()?;
    let names = &mut k.source.tables.names;
    t.store.write_rules(|w| rules::kernel::reconcile(w.conn(), names, &devices, timefmt::now_ms()))?;
    assert_eq!(k.source.tables.blocks.learned()?.len(), 2);
    assert_eq!(k.source.tables.names.learned()?.len(), 2);
    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_DROP);
    assert_eq!(k.xdp(&dns_query("blog.lab.test"))?, XDP_TX);

    // Nothing is due now while the rule is active; when it goes, its entries go, and what they
    // counted (3 packets, 2 queries) is kept in the rule's history.
    let now = timefmt::kernel_ns_now();
    let tables = &mut k.source.tables;
    let active: std::collections::HashSet<u32> = [rule].into();
    let none = learner.expire(&mut tables.names, &mut tables.blocks, now, Some(&active))?;
    assert_eq!((none.addresses, none.aliases), (0, 0));
    let gone = learner.expire(&mut tables.names, &mut tables.blocks, now, Some(&Default::default()))?;
    assert_eq!((gone.addresses, gone.aliases), (2, 2));
    assert_eq!(gone.counted, [(rule, (3, 2))].into());
    assert!(tables.blocks.learned()?.is_empty() && tables.names.learned()?.is_empty());
    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_PASS);
    assert_eq!(k.xdp(&dns_query("www.lab.test"))?, XDP_PASS);
    t.store.write(|w| w.fold_learned(rule, 3, 2))?;
    let rows = t.store.block_rows(BlockFilter::default(), timefmt::now_ms(), &|_| None, &|s: &str| s.to_owned())?;
    let r = rows.iter().find(|r| r.id == rule).expect("the rule is listed");
    assert_eq!((r.packets_dropped, r.queries_refused, r.hits), (3, 2, 5));

    // Learned again, then the rule is unblocked: the names reconcile takes its alias out at
    // once, before the daemon's next look.
    exchange(&mut namer, 5003, 4, "www.lab.test", &response(4, "www.lab.test", Some("e1.cdn.lab.test"), CDN_ADDR));
    let tables = &mut k.source.tables;
    assert_eq!(learner.learn(&mut namer, &mut tables.names, &mut tables.blocks)?.aliases, 1);
    domain_rule(&mut k, &mut t, "cdn.lab.test", false)?;
    assert!(k.source.tables.names.learned()?.is_empty(), "an ended rule's learned names go with it");
    assert_eq!(k.xdp(&dns_query("www.lab.test"))?, XDP_PASS);

    // A daemon started later finds learned entries in the maps and ends them in turn.
    let tables = &mut k.source.tables;
    tables.blocks.insert_learned(&IpNet::from(std::net::IpAddr::from(CDN_ADDR)), RULE, 1)?;
    tables.names.insert_learned(&name_key(domain_hash("www.lab.test").unwrap(), None), RULE, 1)?;
    let mut later = Learner::default();
    assert_eq!(later.adopt(&tables.blocks, &tables.names)?, 2);
    let past = later.expire(&mut tables.names, &mut tables.blocks, timefmt::kernel_ns_now(), None)?;
    assert_eq!((past.addresses, past.aliases), (1, 1), "past their end");
    Ok(())
}

#[test]
fn a_rule_made_after_the_answer_blocks_the_address_the_device_holds() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    let mut t = TempStore::new("review")?;
    let mut namer = Namer::new(vec![], DEFAULT_GRACE);
    namer.sightings = Some(Vec::new());
    let mut learner = Learner::default();
    exchange(&mut namer, 5000, 1, "late.lab.test", &response(1, "late.lab.test", None, LATE_ADDR));
    let tables = &mut k.source.tables;
    assert_eq!(learner.learn(&mut namer, &mut tables.names, &mut tables.blocks)?, Default::default(), "no rule yet");
    assert_eq!(k.xdp(&syn(LATE_ADDR))?, XDP_PASS);

    let rule = domain_rule(&mut k, &mut t, "late.lab.test", true)?;
    let tables = &mut k.source.tables;
    let active: std::collections::HashSet<u32> = [rule].into();
    // A rule that blocks by name only (dns-bypass) teaches nothing.
    let mut by_name = Learner::default();
    by_name.set_rules(&active, Default::default(), active.clone());
    assert_eq!(by_name.review(&namer, &active, &mut tables.names, &mut tables.blocks)?, Default::default());
    learner.set_rules(&active, Default::default(), Default::default());
    let done = learner.review(&namer, &active, &mut tables.names, &mut tables.blocks)?;
    assert_eq!((done.blocked, done.aliases), (1, 0));
    let learned = tables.blocks.learned()?;
    assert_eq!(learned.len(), 1);
    let (net, v) = learned[0];
    assert_eq!((net, v.rule_id), (IpNet::from(std::net::IpAddr::from(LATE_ADDR)), rule));
    // TTL 300 s left of the answer, plus the learner's minute of grace.
    let left_s = v.expires_ns.saturating_sub(timefmt::kernel_ns_now()) / 1_000_000_000;
    assert!((355..=360).contains(&left_s), "{left_s} s left");
    assert_eq!(k.xdp(&syn(LATE_ADDR))?, XDP_DROP);
    // A rule is reviewed once.
    let tables = &mut k.source.tables;
    assert_eq!(learner.review(&namer, &active, &mut tables.names, &mut tables.blocks)?, Default::default());
    Ok(())
}

#[test]
fn block_shared_blocks_the_address_an_allowed_name_also_uses() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    let mut t = TempStore::new("shared")?;
    let rule = domain_rule(&mut k, &mut t, "cdn.lab.test", true)?;
    let mut namer = sightings();
    let mut learner = Learner::default();
    let active: std::collections::HashSet<u32> = [rule].into();
    learner.set_rules(&active, active.clone(), Default::default());
    let tables = &mut k.source.tables;
    let done = learner.learn(&mut namer, &mut tables.names, &mut tables.blocks)?;
    assert_eq!((done.blocked, done.shared, done.aliases), (3, 0, 2), "the shared address too");
    assert_eq!(learner.shared_open_changes(), []);
    assert_eq!(k.xdp(&syn(SHARED_ADDR))?, XDP_DROP, "the allowed name's address is blocked: the user chose it");
    Ok(())
}

#[test]
fn an_address_two_rules_learned_stays_until_neither_wants_it() -> Result<()> {
    if !tracker_tests::root_or_skip() {
        return Ok(());
    }
    let mut k = Kernel::load(L2_LEN_NONE)?;
    let mut t = TempStore::new("claims")?;
    let first = domain_rule(&mut k, &mut t, "cdn.lab.test", true)?;
    let second = domain_rule(&mut k, &mut t, "ads.lab.test", true)?;
    let mut namer = Namer::new(vec![], DEFAULT_GRACE);
    namer.sightings = Some(Vec::new());
    // Two chains, into either rule's domain, end at one address.
    exchange(&mut namer, 5001, 1, "www.lab.test", &response(1, "www.lab.test", Some("e1.cdn.lab.test"), CDN_ADDR));
    exchange(&mut namer, 5002, 2, "pixel.lab.test", &response(2, "pixel.lab.test", Some("x.ads.lab.test"), CDN_ADDR));
    let mut learner = Learner::default();
    learner.set_rules(&[first, second].into(), Default::default(), Default::default());
    let tables = &mut k.source.tables;
    let done = learner.learn(&mut namer, &mut tables.names, &mut tables.blocks)?;
    assert_eq!((done.blocked, done.shared, done.aliases), (2, 0, 2), "both rules claim the address");
    let cdn = IpNet::from(std::net::IpAddr::from(CDN_ADDR));
    let holder = |k: &Kernel| k.source.tables.blocks.get(&cdn).map(|v| (v.rule_id, v.packets_dropped));
    // The claim that ends last holds the entry; the two end together (one batch), and the
    // older rule wins the tie.
    assert_eq!(holder(&k), Some((first, 0)));
    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_DROP);

    // The first rule goes: the entry passes to the second, its one drop kept for the first.
    let now = timefmt::kernel_ns_now();
    let tables = &mut k.source.tables;
    let out = learner.expire(&mut tables.names, &mut tables.blocks, now, Some(&[second].into()))?;
    assert_eq!((out.addresses, out.aliases), (0, 1), "the address stays; the first rule's alias goes");
    assert_eq!(out.counted, [(first, (1, 0))].into());
    assert_eq!(holder(&k), Some((second, 0)));
    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_DROP, "the second rule still wants it");
    assert_eq!(k.xdp(&dns_query("www.lab.test"))?, XDP_PASS);
    assert_eq!(k.xdp(&dns_query("pixel.lab.test"))?, XDP_TX);

    // The second goes too: the address opens.
    let tables = &mut k.source.tables;
    let out = learner.expire(&mut tables.names, &mut tables.blocks, now, Some(&Default::default()))?;
    assert_eq!((out.addresses, out.aliases), (1, 1));
    assert_eq!(out.counted, [(second, (1, 1))].into());
    assert_eq!(holder(&k), None);
    assert_eq!(k.xdp(&syn(CDN_ADDR))?, XDP_PASS);
    Ok(())
}
