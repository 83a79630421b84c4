//! The model run's packets: random ones built to be plausible and real frames mutated, each a pure function of (seed, index).
//!
//! A random packet is IPv4 or IPv6 (options, fragments, up to seven extension headers), TCP,
//! UDP, ICMP, ICMPv6 or another protocol, between a few client and remote addresses and ports
//! (53, 853 and 443 among them, so packets meet the flows earlier ones made, both ways), with
//! random TCP flags and options and a payload: a DNS message of random shape on port 53, a TLS
//! record on 443 and 853, bytes otherwise; raw IP or Ethernet with zero to three VLAN tags.
//! A mutated packet is a real frame (or a random packet) with one to three mutations: bit
//! flips, bytes overwritten at header offsets, a truncation, a length field that lies, a
//! corrupted header chain (EtherType, protocol, next header), bytes inserted or appended.

use crate::packet::{
    ACK, DSTOPTS, ETH_8021AD, ETH_8021Q, ETH_IP, ETH_IPV6, FIN, FRAGMENT, HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_TCP, IPPROTO_UDP, PSH, ROUTING, RST, SYN, ext, frag6, ipv4_options, ipv6, tcp, udp, vlan,
};
use crate::rng::Rng;

/// The generator's stream in [`Rng::new`]: its own, so no other user of a seed repeats it.
const STREAM: u64 = 0x6d6f_64656c;
/// Out of 100 packets: random ones, then mutations of real frames; the rest are mutations of
/// random packets.
const RANDOM_PERCENT: u64 = 40;
const MUTATED_REAL_PERCENT: u64 = 40;
/// The most mutations one packet gets.
const MAX_MUTATIONS: u64 = 3;
/// The longest random payload: with headers, an Ethernet frame of about 1,514 bytes.
const MAX_PAYLOAD: f64 = 1400.0;

/// GRE, ESP, SCTP, IPv6-in-IPv4, "no next header": flows keyed by protocol alone.
const OTHER_PROTOCOLS: [u8; 5] = [47, 50, 132, 41, 59];

/// Clients (RFC 1918, CGNAT, ULA and link-local: the importer's client nets) and remotes.
const CLIENTS4: [[u8; 4]; 4] = [[10, 77, 0, 2], [10, 77, 0, 3], [192, 168, 1, 7], [100, 64, 0, 9]];
const REMOTES4: [[u8; 4]; 4] = [[203, 0, 113, 10], [203, 0, 113, 53], [198, 51, 100, 1], [8, 8, 8, 8]];
const CLIENTS6: [[u8; 16]; 3] = [
    [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
];
const REMOTES6: [[u8; 16]; 3] = [
    [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
    [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53],
    [0x26, 0x06, 0x47, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x11],
];
/// Server ports: DNS, DNS over TLS, HTTPS and QUIC, HTTP, mDNS, NTP, STUN, SSH.
const SERVICE_PORTS: [u16; 8] = [53, 853, 443, 80, 5353, 123, 3478, 22];
/// Clients use a handful of ports, so that flows repeat within a batch.
const CLIENT_PORT_BASE: u16 = 40_000;
const CLIENT_PORTS: u64 = 6;
const DNS_PORT: u16 = 53;
/// Flag sets real segments carry; other packets get a random byte.
const COMMON_FLAGS: [u8; 7] = [SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK];

/// Values worth writing over a header byte: zero, one, all ones, IP versions and header lengths,
/// protocol numbers and extension headers, the DNS port.
const INTERESTING: [u8; 16] = [0, 1, 0xff, 0x45, 0x4f, 0x60, 0x7f, 0x80, 6, 17, 58, 44, 43, 60, 53, 0xc0];
/// Protocol numbers and next headers a corrupted chain gets: the parser's branches.
const CHAIN: [u8; 12] = [0, 1, 6, 17, 41, 43, 44, 47, 58, 59, 60, 135];
const ETHER_TYPES: [u16; 6] = [ETH_IP, ETH_IPV6, ETH_8021Q, ETH_8021AD, 0x0806, 0x0000];
/// Header offsets an overwrite aims at, from the IP header: IPv4 version and IHL, total
/// length, flags and fragment offset, protocol; IPv6 payload length and next header.
const IP_FIELDS: [usize; 8] = [0, 2, 3, 6, 7, 9, 4, 6];
/// From the transport header: ports, TCP data offset and flags, UDP length.
const L4_FIELDS: [usize; 7] = [0, 2, 3, 4, 5, 12, 13];

/// A frame to mutate: raw IP, or Ethernet.
#[derive(Clone, Debug)]
pub struct Seed {
    pub ethernet: bool,
    pub data: Vec<u8>,
    /// Where it came from, e.g. `ndpi__ssh.pcap#12`.
    pub origin: String,
}

/// One generated packet.
#[derive(Clone, Debug)]
pub struct Packet {
    /// An Ethernet frame (else it starts at its IP header).
    pub ethernet: bool,
    pub data: Vec<u8>,
    /// How it was made, e.g. `random v6 tcp` or `ndpi__ssh.pcap#12: flip 14.3, cut 40`.
    pub what: String,
}

/// Packets by index, from a seed and the real frames to mutate.
pub struct Generator {
    seed: u64,
    seeds: Vec<Seed>,
}

impl Generator {
    /// Without real frames, mutations start from random packets.
    pub fn new(seed: u64, seeds: Vec<Seed>) -> Self {
        Self { seed, seeds }
    }

    pub fn seeds(&self) -> usize {
        self.seeds.len()
    }

    /// Packet `index`: the same bytes for the same (seed, index, real frames), in any order.
    pub fn packet(&self, index: u64) -> Packet {
        let mut r = Rng::new(self.seed, STREAM, index);
        let pick = r.below(100);
        if pick < RANDOM_PERCENT {
            return random(&mut r);
        }
        let base = if pick < RANDOM_PERCENT + MUTATED_REAL_PERCENT && !self.seeds.is_empty() {
            let s = &self.seeds[r.below(self.seeds.len() as u64) as usize];
            Packet { ethernet: s.ethernet, data: s.data.clone(), what: s.origin.clone() }
        } else {
            random(&mut r)
        };
        mutate(&mut r, base)
    }
}

fn pick<T: Copy>(r: &mut Rng, from: &[T]) -> T {
    from[r.below(from.len() as u64) as usize]
}

/// True with `percent` in 100.
fn chance(r: &mut Rng, percent: u64) -> bool {
    r.below(100) < percent
}

fn bytes(r: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| r.next_u64() as u8).collect()
}

/// Random bytes, as many as a uniform draw in [lo, hi] says.
fn bytes_in(r: &mut Rng, lo: u64, hi: u64) -> Vec<u8> {
    let n = r.range(lo, hi) as usize;
    bytes(r, n)
}

/// Random bytes, as many as a log-uniform draw in [lo, hi] says: mostly few.
fn bytes_log(r: &mut Rng, lo: f64, hi: f64) -> Vec<u8> {
    let n = r.log_uniform(lo, hi) as usize;
    bytes(r, n)
}

/// A random packet built to be plausible.
fn random(r: &mut Rng) -> Packet {
    let v6 = chance(r, 45);
    let protocol = match r.below(100) {
        0..38 => IPPROTO_TCP,
        38..76 => IPPROTO_UDP,
        76..90 => {
            if v6 {
                IPPROTO_ICMPV6
            } else {
                IPPROTO_ICMP
            }
        }
        // The other family's ICMP: a protocol like any other to the parser.
        90..94 => {
            if v6 {
                IPPROTO_ICMP
            } else {
                IPPROTO_ICMPV6
            }
        }
        94..98 => pick(r, &OTHER_PROTOCOLS),
        _ => r.next_u64() as u8,
    };
    // Mostly client to remote, some answers, some between two of a kind.
    let (up, between_clients) = match r.below(10) {
        0..6 => (true, false),
        6..9 => (false, false),
        _ => (chance(r, 50), chance(r, 50)),
    };
    let client_port = CLIENT_PORT_BASE + r.below(CLIENT_PORTS) as u16;
    let server_port = if chance(r, 85) { pick(r, &SERVICE_PORTS) } else { r.next_u64() as u16 };
    let (sport, dport) = if up { (client_port, server_port) } else { (server_port, client_port) };
    let l4 = match protocol {
        IPPROTO_TCP => {
            let flags = if chance(r, 75) { pick(r, &COMMON_FLAGS) } else { r.next_u64() as u8 };
            let options = if chance(r, 25) { bytes_in(r, 0, 40) } else { Vec::new() };
            let payload = payload(r, server_port, true);
            tcp(sport, dport, r.next_u64() as u32, flags, &options, &payload)
        }
        IPPROTO_UDP => udp(sport, dport, &payload(r, server_port, false)),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            // Echo request and reply of either family, unreachable, anything.
            let any = r.next_u64() as u8;
            let ty = pick(r, &[0u8, 8, 3, 11, 128, 129, 1, 135, any]);
            let mut m = vec![ty, r.below(4) as u8, 0, 0];
            m.extend_from_slice(&bytes_log(r, 4.0, MAX_PAYLOAD));
            m
        }
        _ => bytes_in(r, 0, 199),
    };
    let (ip, family) = if v6 {
        let (c, rm) = (pick(r, &CLIENTS6), pick(r, &REMOTES6));
        let other = if between_clients { pick(r, &CLIENTS6) } else { pick(r, &REMOTES6) };
        let (src, dst) = if up { (c, if between_clients { other } else { rm }) } else { (other, c) };
        // Extension headers, a fragment header among them at times; the first one's kind is
        // said by the IPv6 header (at times wrongly: the upper protocol, over the chain).
        let kinds: Vec<u8> = if chance(r, 25) {
            (0..r.range(1, 7)).map(|_| pick(r, &[HOPOPTS, ROUTING, DSTOPTS, FRAGMENT])).collect()
        } else {
            Vec::new()
        };
        let mut chain = Vec::new();
        for (i, &kind) in kinds.iter().enumerate() {
            let next = kinds.get(i + 1).copied().unwrap_or(protocol);
            chain.extend_from_slice(&if kind == FRAGMENT {
                let offset = if chance(r, 50) { 0 } else { r.below(1 << 13) as u16 };
                frag6(next, offset, chance(r, 50), r.next_u64() as u32)
            } else {
                let len8 = r.below(3) as u8;
                ext(next, len8, &bytes(r, usize::from(len8) * 8 + 6))
            });
        }
        let first = match kinds.first() {
            Some(&k) if chance(r, 95) => k,
            _ => protocol,
        };
        chain.extend_from_slice(&l4);
        (ipv6(src, dst, first, &chain), "v6")
    } else {
        let (c, rm) = (pick(r, &CLIENTS4), pick(r, &REMOTES4));
        let other = if between_clients { pick(r, &CLIENTS4) } else { pick(r, &REMOTES4) };
        let (src, dst) = if up { (c, if between_clients { other } else { rm }) } else { (other, c) };
        // Options: no-ops, end of list, router alert, or anything (up to the 40 bytes IHL allows).
        let options = if chance(r, 15) {
            match r.below(3) {
                0 => vec![1; r.range(1, 40) as usize],
                1 => vec![148, 4, 0, 0],
                _ => bytes_in(r, 1, 40),
            }
        } else {
            Vec::new()
        };
        // Fragments: MF, an offset, both, DF.
        let frag = if chance(r, 12) {
            (r.below(4) as u16) << 13 | if chance(r, 50) { 0 } else { r.below(1 << 13) as u16 }
        } else {
            0x4000
        };
        (ipv4_options(src, dst, protocol, r.next_u64() as u16, frag, &options, &l4), "v4")
    };
    let ethernet = chance(r, 50);
    let data = if ethernet {
        let tags: &[(u16, u16)] = match r.below(20) {
            0..14 => &[],
            14..18 => &[(ETH_8021Q, 7)],
            18 => &[(ETH_8021AD, 100), (ETH_8021Q, 7)],
            _ => &[(ETH_8021AD, 1), (ETH_8021Q, 2), (ETH_8021Q, 3)],
        };
        let ether_type = if v6 { ETH_IPV6 } else { ETH_IP };
        vlan(tags, ether_type, &ip)
    } else {
        ip
    };
    let link = if ethernet { " eth" } else { "" };
    Packet { ethernet, data, what: format!("random {family} proto {protocol} {sport}->{dport}{link}") }
}

/// A payload for a segment or datagram to or from `port`.
fn payload(r: &mut Rng, port: u16, tcp: bool) -> Vec<u8> {
    if chance(r, 15) {
        return Vec::new();
    }
    match port {
        DNS_PORT => {
            let m = dns(r);
            if tcp {
                // DNS over TCP: a two-byte length first, at times a wrong one.
                let len = if chance(r, 90) { m.len() as u16 } else { r.next_u64() as u16 };
                let mut t = len.to_be_bytes().to_vec();
                t.extend_from_slice(&m);
                t
            } else {
                m
            }
        }
        443 | 853 if chance(r, 70) => {
            let len = r.log_uniform(5.0, MAX_PAYLOAD) as usize;
            let mut m = vec![0x16, 0x03, 0x01];
            m.extend_from_slice(&((len - 5) as u16).to_be_bytes());
            m.extend_from_slice(&bytes(r, len - 5));
            m
        }
        _ => bytes_log(r, 1.0, MAX_PAYLOAD),
    }
}

/// A DNS message of random shape: query or response or anything, zero to three questions, a
/// name of random labels (empty, long, binary, a compression pointer), answers, an OPT record,
/// at times cut short.
fn dns(r: &mut Rng) -> Vec<u8> {
    let flags: u16 = match r.below(4) {
        0 | 1 => 0x0100,
        2 => 0x8180,
        _ => r.next_u64() as u16,
    };
    let any = r.next_u64() as u16;
    let questions: u16 = pick(r, &[1, 1, 1, 1, 0, 2, 3, any]);
    let answers = r.below(4) as u16;
    let additional = u16::from(chance(r, 30));
    let mut m = (r.next_u64() as u16).to_be_bytes().to_vec();
    for v in [flags, questions, answers, 0, additional] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    let labels = if chance(r, 10) { r.range(10, 60) } else { r.below(6) };
    for _ in 0..labels {
        let len = match r.below(20) {
            0 => 63,
            1 => r.range(64, 255) as usize,
            2 => 0,
            _ => r.range(1, 20) as usize,
        };
        m.push(len as u8);
        if chance(r, 80) {
            const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-ABC";
            m.extend((0..len).map(|_| pick(r, LETTERS)));
        } else {
            m.extend_from_slice(&bytes(r, len));
        }
    }
    if chance(r, 10) {
        // A compression pointer where a question's name ends: anywhere, itself included.
        m.extend_from_slice(&[0xc0, r.next_u64() as u8]);
    } else {
        m.push(0);
    }
    let any = r.next_u64() as u16;
    let qtype: u16 = pick(r, &[1, 28, 65, 255, 12, any]);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    for i in 0..answers {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 203, 0, 113, i as u8]);
    }
    if additional > 0 {
        // EDNS: OPT, a 4,096-byte UDP size, no options.
        m.extend_from_slice(&[0, 0, 0x29, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    }
    if chance(r, 10) {
        m.truncate(r.below(m.len() as u64 + 1) as usize);
    }
    m
}

/// Where the IP header starts: after the Ethernet header and up to two VLAN tags (what the
/// parser walks), or at 0.
fn ip_offset(p: &Packet) -> usize {
    if !p.ethernet {
        return 0;
    }
    let mut at = 12;
    for _ in 0..2 {
        match p.data.get(at..at + 2) {
            Some(&[a, b]) if matches!(u16::from_be_bytes([a, b]), ETH_8021Q | ETH_8021AD) => at += 4,
            _ => break,
        }
    }
    at + 2
}

/// Where the transport header starts, as the IP header says (IPv4's IHL; IPv6 without
/// extension headers); `None` when it is not IP.
fn l4_offset(p: &Packet, ip: usize) -> Option<usize> {
    match p.data.get(ip)? >> 4 {
        4 => Some(ip + usize::from(p.data[ip] & 0xf) * 4),
        6 => Some(ip + 40),
        _ => None,
    }
}

/// An offset more likely in the headers than past them.
fn offset(r: &mut Rng, p: &Packet) -> Option<usize> {
    let len = p.data.len();
    if len == 0 {
        return None;
    }
    let headers = (ip_offset(p) + 80).min(len);
    Some(if chance(r, 75) { r.below(headers as u64) } else { r.below(len as u64) } as usize)
}

fn put16(data: &mut [u8], at: usize, v: u16) -> bool {
    match data.get_mut(at..at + 2) {
        Some(d) => {
            d.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// A length field's lie: off by a little, zero, huge, or anything.
fn lie(r: &mut Rng, truth: u16) -> u16 {
    match r.below(4) {
        0 => truth.wrapping_add(r.range(1, 8) as u16),
        1 => truth.wrapping_sub(r.range(1, 8) as u16),
        2 => pick(r, &[0, 1, 0xffff, 20, 40]),
        _ => r.next_u64() as u16,
    }
}

/// `p` with one to [`MAX_MUTATIONS`] mutations, each named in its description.
fn mutate(r: &mut Rng, mut p: Packet) -> Packet {
    let mut done = Vec::new();
    for _ in 0..r.range(1, MAX_MUTATIONS) {
        let ip = ip_offset(&p);
        let l4 = l4_offset(&p, ip);
        let what = match r.below(6) {
            0 => offset(r, &p).map(|at| {
                let bit = r.below(8);
                p.data[at] ^= 1 << bit;
                format!("flip {at}.{bit}")
            }),
            1 => {
                let at = match l4 {
                    Some(l4) if chance(r, 50) => l4 + pick(r, &L4_FIELDS),
                    _ => ip + pick(r, &IP_FIELDS),
                };
                let v = if chance(r, 70) { pick(r, &INTERESTING) } else { r.next_u64() as u8 };
                p.data.get_mut(at).map(|b| {
                    *b = v;
                    format!("byte {at}={v:#04x}")
                })
            }
            2 => offset(r, &p).map(|at| {
                p.data.truncate(at);
                format!("cut {at}")
            }),
            3 => {
                // IPv4 total length or IPv6 payload length, a UDP length, a TCP data offset, or
                // IPv4's header length.
                let (at, truth) = match (r.below(4), p.data.get(ip).map(|b| b >> 4)) {
                    (0, Some(4)) => (ip + 2, (p.data.len() - ip) as u16),
                    (0, Some(6)) => (ip + 4, p.data.len().saturating_sub(ip + 40) as u16),
                    (1, _) => (l4.unwrap_or(ip) + 4, p.data.len().saturating_sub(l4.unwrap_or(ip)) as u16),
                    (2, _) => (l4.unwrap_or(ip) + 12, 0x5000),
                    _ => (ip, 0x4500),
                };
                let v = lie(r, truth);
                put16(&mut p.data, at, v).then(|| format!("length {at}={v:#06x}"))
            }
            4 => {
                let (at, v) = match (r.below(3), p.data.get(ip).map(|b| b >> 4)) {
                    (0, _) if p.ethernet => {
                        let v = pick(r, &ETHER_TYPES);
                        (ip - 2, v.to_be_bytes())
                    }
                    (_, Some(4)) => (ip + 9, [pick(r, &CHAIN), 0]),
                    (1, Some(6)) => (ip + 6, [pick(r, &CHAIN), 0]),
                    // The first extension header's next header and length.
                    _ => (ip + 40, [pick(r, &CHAIN), r.below(4) as u8]),
                };
                let n = if p.ethernet && at + 2 == ip { 2 } else { 1 + usize::from(at == ip + 40) };
                p.data.get_mut(at..at + n).map(|d| {
                    d.copy_from_slice(&v[..n]);
                    format!("chain {at}={:02x?}", &v[..n])
                })
            }
            _ => {
                let extra = bytes_in(r, 1, 64);
                if chance(r, 50) {
                    p.data.extend_from_slice(&extra);
                    Some(format!("append {}", extra.len()))
                } else {
                    offset(r, &p).map(|at| {
                        p.data.splice(at..at, extra.iter().copied());
                        format!("insert {at}+{}", extra.len())
                    })
                }
            }
        };
        done.extend(what);
    }
    p.what = format!("{}: {}", p.what, done.join(", "));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_its_seed_and_index() {
        let seeds = vec![Seed { ethernet: false, data: vec![0x45; 60], origin: "x#1".into() }];
        let g = Generator::new(7, seeds.clone());
        let h = Generator::new(7, seeds);
        let forwards: Vec<Vec<u8>> = (0..500).map(|i| g.packet(i).data).collect();
        let backwards: Vec<Vec<u8>> = (0..500).rev().map(|i| h.packet(i).data).collect();
        assert!(forwards.iter().eq(backwards.iter().rev()));
        let other = Generator::new(8, Vec::new());
        assert!((0..500).filter(|&i| other.packet(i).data == forwards[i as usize]).count() < 5);
    }
}
