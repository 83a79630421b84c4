//! `cargo xtask bench import`: how fast `tracker import-pcap` reads a capture, beside
//! `tshark -q -z conv,ip` (Wireshark's per-address-pair statistics) on the same file.
//!
//! - **generate**: target/bench-import/capture.pcap, about an hour of a household's phones
//!   through a VPN: 20 devices in 10.77.0.0/24 (8 of them also in fd77::/64) talking to hosts
//!   in the documentation ranges only (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
//!   2001:db8::/32). About 20,000 flows: TCP/443 connections (handshake, a TLS ClientHello with
//!   a server name, data both ways, FIN/ACK), QUIC-like UDP/443, DNS over UDP to 10.77.0.1
//!   whose A/AAAA answers are the addresses the next flow then uses, and ICMP echo. Raw IP
//!   (LINKTYPE_RAW), little-endian microsecond pcap, valid IPv4/IPv6 lengths, time stamps
//!   strictly increasing. Deterministic (xorshift seeded per flow), written under a temporary
//!   name, renamed when complete and reused by later runs while [`GENERATOR_VERSION`] holds.
//! - **measure**: `tracker --db FRESH import-pcap FILE --source bench` and
//!   `tshark -q -z conv,ip -r FILE`, each as a whole process, in alternating order for
//!   `TRACKER_IMPORT_ROUNDS` rounds (default 3), after waiting for a quiet machine (1-minute
//!   load average below 0.8, at most 10 minutes or `TRACKER_IMPORT_QUIET_SECS`, then anyway):
//!   wall clock (the figure), the child's user+sys CPU and peak RSS (wait4).
//!
//! Prints the figures and the target (tracker at least 10x tshark's packets per second); asserts
//! nothing about timing. Fails when tracker fails, or when the database it wrote does not hold
//! exactly the generator's flows (distinct 5-tuples) and DNS exchanges.

use std::{
    collections::HashSet,
    fs::{self, File},
    io::{BufWriter, Read as _, Write as _},
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use etherparse::PacketBuilder;
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use rusqlite::{Connection, OpenFlags};
use tracker_tests::{
    median,
    quiet::{self, load_average},
    rng::{Rng, zipf_cdf},
    tracker_bin,
};

/// Bumped whenever the generator's output changes, so a cached capture is never stale.
const GENERATOR_VERSION: u32 = 1;
const SEED: u64 = 0x696d_706f_7274_2031;

/// The capture starts at 2026-11-02T18:00:00Z and flows start over its first 55 minutes; the
/// longest end a few minutes later.
const START_US: u64 = 1_793_642_400 * 1_000_000;
const STARTS_US: u64 = 55 * 60 * 1_000_000;
/// Devices: 10.77.0.10 .. 10.77.0.29; the first V6_CLIENTS also have fd77::a ...
const CLIENTS: usize = 20;
const V6_CLIENTS: usize = 8;
/// The tunnel's resolver, which every lookup goes to.
const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// TCP/443 and QUIC flows, and the share of them that is TCP.
const APP_FLOWS: u64 = 13_000;
const TCP_SHARE: f64 = 0.78;
/// Of an app flow's client with an IPv6 address, the share of its flows over IPv6.
const V6_SHARE: f64 = 0.35;
/// The share of app flows that a DNS lookup precedes (the others reuse an address the phone
/// had from an earlier answer, or have one built in).
const LOOKUP_SHARE: f64 = 0.55;
/// Of those lookups, the share answered through a CNAME.
const CNAME_SHARE: f64 = 0.25;
const ICMP_FLOWS: u64 = 300;
/// Data packets of an app flow after its handshake: log-uniform in this range.
const DATA_PACKETS: (f64, f64) = (2.0, 400.0);
/// How long a TCP connection's data lasts (log-uniform, µs), and a QUIC one's: below the
/// daemon's UDP idle limit, so no pause splits a flow into two.
const TCP_SPAN_US: (f64, f64) = (200_000.0, 180_000_000.0);
const QUIC_SPAN_US: (f64, f64) = (200_000.0, 45_000_000.0);
/// TCP payload of a full segment through a 1420-byte WireGuard MTU.
const MSS: u16 = 1368;
const QUIC_MAX: u16 = 1350;
/// The capture must hold at least this many packets.
const MIN_PACKETS: usize = 1_000_000;
/// The generation stops with an error past this: a bound, not a target.
const GENERATION_LIMIT: Duration = Duration::from_secs(60);

/// Lab-like names beyond the real ones, and the real ones, seen most often.
const LAB_NAMES: usize = 700;
const REAL_NAMES: &str = "i.instagram.com graph.facebook.com gateway.icloud.com www.google.com api.spotify.com \
    mmg.whatsapp.net scontent.cdninstagram.com app-measurement.com init.push.apple.com \
    firebaseinstallations.googleapis.com rr3---sn-4g5e6nsz.googlevideo.com api.x.com www.amazon.com \
    sdk.iad-01.braze.com launches.appsflyer.com www.youtube.com discord.com www.netflix.com \
    inappcheck.itunes.apple.com www.reddit.com";
const LAB_SHAPES: [&str; 6] = [
    "api.example-{}.com",
    "cdn.example-{}.net",
    "img.example-{}.com",
    "app.example-{}.org",
    "t.metrics-{}.io",
    "www.shop-{}.example",
];
const CDN_TARGETS: [&str; 3] = ["edge.cdn-a.example", "lb.cdn-b.example", "static.cdn-c.example"];
/// The Zipf exponent of name and device popularity.
const ZIPF_S: f64 = 1.0;

/// Rounds by default (TRACKER_IMPORT_ROUNDS overrides), and the target.
const ROUNDS: usize = 3;
const RATIO_TARGET: f64 = 10.0;
/// A tool that runs longer than this is killed and the bench fails.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// Measure only on a quiet machine: wait until the 1-minute load average is below QUIET_LOAD,
/// polling every QUIET_POLL, at most QUIET_MAX (TRACKER_IMPORT_QUIET_SECS), then go anyway.
const QUIET_LOAD: f64 = 0.8;
const QUIET_POLL: Duration = Duration::from_secs(15);
const QUIET_MAX: Duration = Duration::from_secs(600);

/// The generator of item `index` of `stream`, under this benchmark's seed.
fn zipf_cdf_s(n: usize) -> Vec<f64> {
    zipf_cdf(n, ZIPF_S)
}

fn item_rng(stream: u64, index: u64) -> Rng {
    Rng::new(SEED, stream, index)
}
// Streams of the per-item generators.
const POOL_STREAM: u64 = 1;
const APP_STREAM: u64 = 2;
const ICMP_STREAM: u64 = 3;
const PORT_STREAM: u64 = 4;

/// Address `i` of the three IPv4 documentation /24s (.1 to .254 of each).
fn doc_v4(i: u64) -> Ipv4Addr {
    let net = [[192, 0, 2], [198, 51, 100], [203, 0, 113]][(i % 3) as usize];
    Ipv4Addr::new(net[0], net[1], net[2], 1 + ((i / 3) % 254) as u8)
}

/// Address `i` of 2001:db8::/32.
fn doc_v6(i: u64) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 0x10)
}

struct PoolName {
    name: String,
    cname: Option<String>,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

/// What a flow is, and what its packets' payloads need.
#[derive(Clone, Copy)]
enum Kind {
    Tls {
        name: u32,
    },
    Quic,
    /// One exchange: the query's name and type, its id, and the address the answer gives.
    Dns {
        name: u32,
        aaaa: bool,
        id: u16,
    },
    Icmp {
        id: u16,
    },
}

struct Flow {
    client: IpAddr,
    remote: IpAddr,
    protocol: u8,
    client_port: u16,
    remote_port: u16,
    kind: Kind,
}

/// A payload, made when the packet is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `len` bytes of noise (TLS application data, QUIC short-header packets, ACK-only: 0).
    Data,
    ClientHello,
    /// A TLS handshake record header, then noise.
    ServerHello,
    QuicInitial,
    QuicShort,
    DnsQuery,
    DnsResponse,
    Echo {
        seq: u16,
    },
}

/// One packet of the plan: 32 bytes, so the whole capture's plan is sorted in memory.
#[derive(Clone, Copy)]
struct Pkt {
    ts_us: u64,
    flow: u32,
    /// TCP sequence and acknowledgement numbers (absolute).
    seq: u32,
    ack: u32,
    /// Payload bytes.
    len: u16,
    flags: u8,
    up: bool,
    body: Body,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

struct Plan {
    pool: Vec<PoolName>,
    flows: Vec<Flow>,
    packets: Vec<Pkt>,
    dns_exchanges: u64,
}

/// A TCP connection's state while its packets are planned.
struct Tcp {
    flow: u32,
    t: u64,
    /// Next sequence number of the client and of the server.
    c: u32,
    s: u32,
    /// What the client last acknowledged: a pure ACK only when the server sent more since.
    acked: u32,
}

impl Tcp {
    fn push(&mut self, out: &mut Vec<Pkt>, dt: u64, up: bool, flags: u8, len: u16, body: Body) {
        self.t += dt.max(1);
        let (seq, ack) = if up { (self.c, self.s) } else { (self.s, self.c) };
        out.push(Pkt { ts_us: self.t, flow: self.flow, seq, ack, len, flags, up, body });
        if up {
            self.acked = ack;
        }
        let adv = u32::from(len) + u32::from(flags & (SYN | FIN) != 0);
        if up {
            self.c = self.c.wrapping_add(adv);
        } else {
            self.s = self.s.wrapping_add(adv);
        }
    }
}

/// Per client, the next free source port: every flow of a client gets its own, so the plan's
/// flows are distinct 5-tuples.
struct Ports(Vec<u16>);

impl Ports {
    fn take(&mut self, client: usize, rng: &mut Rng) -> u16 {
        let p = self.0[client];
        self.0[client] = p.checked_add(1 + rng.below(2) as u16).expect("a client ran out of ports");
        p
    }
}

fn client_v4(c: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + c as u8)
}

fn client_v6(c: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 10 + c as u16)
}

fn plan() -> Result<Plan> {
    let mut rng = item_rng(POOL_STREAM, 0);
    let mut names: Vec<String> = REAL_NAMES.split_whitespace().map(str::to_owned).collect();
    for n in 0..LAB_NAMES {
        names.push(LAB_SHAPES[n % LAB_SHAPES.len()].replace("{}", &(n / LAB_SHAPES.len() + 1).to_string()));
    }
    let pool: Vec<PoolName> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let cname = (rng.unit() < CNAME_SHARE)
                .then(|| format!("e{i}.{}", CDN_TARGETS[rng.below(CDN_TARGETS.len() as u64) as usize]));
            PoolName { name, cname, v4: doc_v4(i as u64), v6: doc_v6(i as u64) }
        })
        .collect();
    let name_cdf = zipf_cdf_s(pool.len());
    let client_cdf = zipf_cdf_s(CLIENTS);
    let mut port_rng = item_rng(PORT_STREAM, 0);
    let mut ports = Ports((0..CLIENTS).map(|_| 49_152 + port_rng.below(1000) as u16).collect());
    let mut flows = Vec::new();
    let mut packets = Vec::new();
    let mut dns_exchanges = 0;

    for i in 0..APP_FLOWS {
        let mut rng = item_rng(APP_STREAM, i);
        let c = rng.zipf(&client_cdf);
        let v6 = c < V6_CLIENTS && rng.unit() < V6_SHARE;
        let name = rng.zipf(&name_cdf);
        let p = &pool[name];
        let (client, remote) =
            if v6 { (client_v6(c).into(), p.v6.into()) } else { (client_v4(c).into(), IpAddr::from(p.v4)) };
        let tcp = rng.unit() < TCP_SHARE;
        let mut t = START_US + rng.below(STARTS_US);
        if rng.unit() < LOOKUP_SHARE {
            // The lookup: a query to the tunnel's resolver, its answer a few ms later, the
            // connection to the answered address right after.
            let flow = flows.len() as u32;
            let id = rng.below(1 << 16) as u16;
            flows.push(Flow {
                client: client_v4(c).into(),
                remote: RESOLVER.into(),
                protocol: 17,
                client_port: ports.take(c, &mut rng),
                remote_port: 53,
                kind: Kind::Dns { name: name as u32, aaaa: v6, id },
            });
            let answered = t + rng.log_uniform(2_000.0, 80_000.0);
            for (ts_us, up, body) in [(t, true, Body::DnsQuery), (answered, false, Body::DnsResponse)] {
                packets.push(Pkt { ts_us, flow, seq: 0, ack: 0, len: 0, flags: 0, up, body });
            }
            t = answered + rng.range(2_000, 40_000);
            dns_exchanges += 1;
        }
        let flow = flows.len() as u32;
        let rtt = rng.log_uniform(15_000.0, 150_000.0);
        let data = rng.log_uniform(DATA_PACKETS.0, DATA_PACKETS.1);
        let client_port = ports.take(c, &mut rng);
        if tcp {
            flows.push(Flow {
                client,
                remote,
                protocol: 6,
                client_port,
                remote_port: 443,
                kind: Kind::Tls { name: name as u32 },
            });
            let mut s = Tcp { flow, t: t - 1, c: rng.next_u64() as u32, s: rng.next_u64() as u32, acked: 0 };
            s.push(&mut packets, 1, true, SYN, 0, Body::Data);
            s.push(&mut packets, rtt, false, SYN | ACK, 0, Body::Data);
            s.push(&mut packets, rng.range(50, 400), true, ACK, 0, Body::Data);
            let hello = client_hello(&p.name).len() as u16;
            s.push(&mut packets, rng.range(50, 400), true, PSH | ACK, hello, Body::ClientHello);
            s.push(&mut packets, rtt, false, ACK, MSS, Body::ServerHello);
            s.push(
                &mut packets,
                rng.range(10, 200),
                false,
                PSH | ACK,
                rng.range(200, u64::from(MSS)) as u16,
                Body::Data,
            );
            let gap = rng.log_uniform(TCP_SPAN_US.0, TCP_SPAN_US.1) / data;
            for _ in 0..data {
                let dt = rng.range(1, 2 * gap.max(1));
                if rng.unit() < 0.6 {
                    let len = if rng.unit() < 0.45 { MSS } else { rng.log_uniform(40.0, f64::from(MSS)) as u16 };
                    s.push(&mut packets, dt, false, ACK | if len < MSS { PSH } else { 0 }, len, Body::Data);
                } else if s.acked != s.s && rng.unit() < 0.7 {
                    s.push(&mut packets, dt, true, ACK, 0, Body::Data);
                } else {
                    let len = rng.log_uniform(30.0, 800.0) as u16;
                    s.push(&mut packets, dt, true, PSH | ACK, len, Body::Data);
                }
            }
            s.push(&mut packets, rng.range(1_000, 2_000_000), true, FIN | ACK, 0, Body::Data);
            s.push(&mut packets, rtt, false, ACK, 0, Body::Data);
            s.push(&mut packets, rng.range(50, 5_000), false, FIN | ACK, 0, Body::Data);
            s.push(&mut packets, rtt, true, ACK, 0, Body::Data);
        } else {
            flows.push(Flow { client, remote, protocol: 17, client_port, remote_port: 443, kind: Kind::Quic });
            let mut push = |t: &mut u64, dt: u64, up: bool, len: u16, body: Body| {
                *t += dt.max(1);
                packets.push(Pkt { ts_us: *t, flow, seq: 0, ack: 0, len, flags: 0, up, body });
            };
            push(&mut t, 0, true, 1200, Body::QuicInitial);
            push(&mut t, rtt, false, 1200, Body::QuicInitial);
            push(&mut t, rng.range(10, 300), false, rng.range(300, u64::from(QUIC_MAX)) as u16, Body::QuicShort);
            let gap = rng.log_uniform(QUIC_SPAN_US.0, QUIC_SPAN_US.1) / data;
            for _ in 0..data {
                let dt = rng.range(1, 2 * gap.max(1));
                if rng.unit() < 0.62 {
                    let len =
                        if rng.unit() < 0.5 { QUIC_MAX } else { rng.log_uniform(40.0, f64::from(QUIC_MAX)) as u16 };
                    push(&mut t, dt, false, len, Body::QuicShort);
                } else {
                    push(&mut t, dt, true, rng.log_uniform(30.0, 600.0) as u16, Body::QuicShort);
                }
            }
        }
    }

    // ICMP echo: each between a client and a remote no other echo flow of that client uses
    // (ICMP flows are keyed by addresses and protocol alone).
    let mut pairs = HashSet::new();
    for j in 0..ICMP_FLOWS {
        let mut rng = item_rng(ICMP_STREAM, j);
        let c = rng.zipf(&client_cdf);
        let v6 = c < V6_CLIENTS && rng.unit() < V6_SHARE;
        let (client, remote, protocol) = loop {
            let r = rng.below(3 * 254);
            let pair = if v6 {
                (client_v6(c).into(), doc_v6(r).into(), 58)
            } else {
                (client_v4(c).into(), doc_v4(r).into(), 1)
            };
            if pairs.insert(pair) {
                break pair;
            }
        };
        let flow = flows.len() as u32;
        let id = rng.below(1 << 16) as u16;
        flows.push(Flow { client, remote, protocol, client_port: 0, remote_port: 0, kind: Kind::Icmp { id } });
        let mut t = START_US + rng.below(STARTS_US);
        let rtt = rng.log_uniform(5_000.0, 120_000.0);
        for seq in 0..rng.range(2, 10) as u16 {
            for (dt, up) in [(if seq == 0 { 0 } else { 1_000_000 - rtt }, true), (rtt, false)] {
                t += dt;
                packets.push(Pkt { ts_us: t, flow, seq: 0, ack: 0, len: 56, flags: 0, up, body: Body::Echo { seq } });
            }
        }
    }

    // Capture order; then strictly increasing time stamps (a packet that shares its
    // microsecond with the one before moves one later).
    packets.sort_by_key(|p| p.ts_us);
    let mut last = 0;
    for p in &mut packets {
        p.ts_us = p.ts_us.max(last + 1);
        last = p.ts_us;
    }
    let tuples: HashSet<_> =
        flows.iter().map(|f| (f.client, f.remote, f.protocol, f.client_port, f.remote_port)).collect();
    ensure!(tuples.len() == flows.len(), "the plan has {} flows but {} distinct 5-tuples", flows.len(), tuples.len());
    ensure!(packets.len() >= MIN_PACKETS, "the plan has {} packets, fewer than {MIN_PACKETS}", packets.len());
    Ok(Plan { pool, flows, packets, dns_exchanges })
}

/// A TLS 1.3-style ClientHello record carrying `name` as its server name.
fn client_hello(name: &str) -> Vec<u8> {
    let n = name.len() as u16;
    let mut ext = Vec::new();
    // server_name: list length, host_name type, name length, name.
    ext.extend_from_slice(&[0x00, 0x00]);
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(name.as_bytes());
    // supported_groups (x25519), ALPN (h2, http/1.1), supported_versions (TLS 1.3).
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);
    ext.extend_from_slice(&[0x00, 0x10, 0x00, 0x0e, 0x00, 0x0c, 2, b'h', b'2', 8]);
    ext.extend_from_slice(b"http/1.1");
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    let mut hello = vec![0x03, 0x03];
    hello.extend((0..32u8).map(|i| i.wrapping_mul(37) ^ n as u8)); // random
    hello.push(32);
    hello.extend((0..32u8).map(|i| i.wrapping_mul(91) ^ 0x5a)); // legacy session id
    hello.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0x01, 0x00]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A DNS name in wire form.
fn wire_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The query (`response` false) or its answer: NOERROR, a CNAME first when the name has one,
/// then the A or AAAA record of the address the flow after it uses.
fn dns_message(out: &mut Vec<u8>, p: &PoolName, aaaa: bool, id: u16, response: bool, ttl: u32) {
    let qtype: u16 = if aaaa { 28 } else { 1 };
    let answers = if response { 1 + u16::from(p.cname.is_some()) } else { 0 };
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(if response { 0x8180u16 } else { 0x0100 }).to_be_bytes());
    for count in [1, answers, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    wire_name(out, &p.name);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    if !response {
        return;
    }
    // The question's name is at offset 12: the answers' owners point at it.
    let mut owner = 0xc00cu16;
    if let Some(cname) = &p.cname {
        out.extend_from_slice(&owner.to_be_bytes());
        out.extend_from_slice(&[0x00, 0x05, 0x00, 0x01]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(cname.len() as u16 + 2).to_be_bytes());
        owner = 0xc000 | out.len() as u16;
        wire_name(out, cname);
    }
    out.extend_from_slice(&owner.to_be_bytes());
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    if aaaa {
        out.extend_from_slice(&16u16.to_be_bytes());
        out.extend_from_slice(&p.v6.octets());
    } else {
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&p.v4.octets());
    }
}

/// Bytes of a packet's payload into `out`.
fn payload(out: &mut Vec<u8>, plan: &Plan, pkt: &Pkt, noise: &[u8]) {
    out.clear();
    let f = &plan.flows[pkt.flow as usize];
    // Noise from a spot that differs between packets.
    let at = (pkt.ts_us as usize).wrapping_mul(2_654_435_761) % (noise.len() - 2048);
    let noise = &noise[at..at + usize::from(pkt.len)];
    match (pkt.body, f.kind) {
        (Body::ClientHello, Kind::Tls { name }) => out.extend_from_slice(&client_hello(&plan.pool[name as usize].name)),
        (Body::ServerHello, _) => {
            // A TLS 1.3 ServerHello (its random and session id from the noise), a
            // ChangeCipherSpec, then application data to the end of the segment.
            let mut hello = vec![0x03, 0x03];
            hello.extend_from_slice(&noise[..32]);
            hello.push(32);
            hello.extend_from_slice(&noise[32..64]);
            hello.extend_from_slice(&[0x13, 0x01, 0x00, 0x00, 0x06, 0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
            out.extend_from_slice(&[0x16, 0x03, 0x03]);
            out.extend_from_slice(&(hello.len() as u16 + 4).to_be_bytes());
            out.extend_from_slice(&[0x02, 0x00]);
            out.extend_from_slice(&(hello.len() as u16).to_be_bytes());
            out.extend_from_slice(&hello);
            out.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
            let rest = usize::from(pkt.len) - out.len();
            out.extend_from_slice(&[0x17, 0x03, 0x03]);
            out.extend_from_slice(&(rest as u16 - 5).to_be_bytes());
            out.extend_from_slice(&noise[out.len()..]);
        }
        (Body::QuicInitial, _) => {
            // Long header, Initial, version 1, an 8-byte destination connection id, no source
            // connection id, no token, then the length and the (noise) rest.
            out.extend_from_slice(&[if pkt.up { 0xc3 } else { 0xc1 }, 0, 0, 0, 1, 8]);
            out.extend_from_slice(&noise[6..14]);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(0x4000u16 | (pkt.len - 18)).to_be_bytes());
            out.extend_from_slice(&noise[18..]);
        }
        (Body::QuicShort, _) => {
            out.push(0x40 | (noise[0] & 0x3f));
            out.extend_from_slice(&noise[1..]);
        }
        (Body::DnsQuery | Body::DnsResponse, Kind::Dns { name, aaaa, id }) => {
            let ttl = 60 + (pkt.ts_us % 240) as u32;
            dns_message(out, &plan.pool[name as usize], aaaa, id, pkt.body == Body::DnsResponse, ttl);
        }
        // TLS: every segment one whole application-data record, so the stream stays well formed.
        (Body::Data, Kind::Tls { .. }) if pkt.len > 0 => {
            out.extend_from_slice(&[0x17, 0x03, 0x03]);
            out.extend_from_slice(&(pkt.len - 5).to_be_bytes());
            out.extend_from_slice(&noise[5..]);
        }
        (Body::Echo { .. } | Body::Data, _) => out.extend_from_slice(noise),
        _ => unreachable!("a body that does not fit its flow"),
    }
    debug_assert!(pkt.body == Body::DnsQuery || pkt.body == Body::DnsResponse || out.len() == usize::from(pkt.len));
}

/// The IP packet of `pkt` into `out` (checksums computed by etherparse).
fn packet(out: &mut Vec<u8>, plan: &Plan, pkt: &Pkt, body: &[u8]) -> Result<()> {
    out.clear();
    let f = &plan.flows[pkt.flow as usize];
    let (src, dst) = if pkt.up { (f.client, f.remote) } else { (f.remote, f.client) };
    let (sport, dport) = if pkt.up { (f.client_port, f.remote_port) } else { (f.remote_port, f.client_port) };
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => bail!("a flow between address families"),
    };
    match (f.protocol, f.kind, pkt.body) {
        (6, ..) => {
            let mut b = ip.tcp(sport, dport, pkt.seq, 65_535);
            if pkt.flags & SYN != 0 {
                b = b.syn();
            }
            if pkt.flags & FIN != 0 {
                b = b.fin();
            }
            if pkt.flags & PSH != 0 {
                b = b.psh();
            }
            if pkt.flags & ACK != 0 {
                b = b.ack(pkt.ack);
            }
            b.write(out, body)?;
        }
        (17, ..) => ip.udp(sport, dport).write(out, body)?,
        (1, Kind::Icmp { id }, Body::Echo { seq }) if pkt.up => ip.icmpv4_echo_request(id, seq).write(out, body)?,
        (1, Kind::Icmp { id }, Body::Echo { seq }) => ip.icmpv4_echo_reply(id, seq).write(out, body)?,
        (58, Kind::Icmp { id }, Body::Echo { seq }) if pkt.up => ip.icmpv6_echo_request(id, seq).write(out, body)?,
        (58, Kind::Icmp { id }, Body::Echo { seq }) => ip.icmpv6_echo_reply(id, seq).write(out, body)?,
        _ => bail!("a packet that does not fit its flow"),
    }
    Ok(())
}

/// The cached capture: generated first when missing or from another generator version. Its
/// companion `.meta` names the version and size; both are written only once the file is whole.
fn capture(plan: &Plan) -> Result<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace")?.join("target/bench-import");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("capture.pcap");
    let meta_path = dir.join("capture.pcap.meta");
    let size = fs::metadata(&path).map(|m| m.len()).ok();
    let meta = |bytes: u64| format!("generator {GENERATOR_VERSION}, {} packets, {bytes} bytes\n", plan.packets.len());
    if let Some(bytes) = size
        && fs::read_to_string(&meta_path).is_ok_and(|m| m == meta(bytes))
    {
        eprintln!("generate: reusing {}", path.display());
        return Ok((path, "cached: generated by an earlier run".into()));
    }
    let _ = fs::remove_file(&meta_path);
    let partial = dir.join("capture.pcap.partial");
    eprintln!("generate: {} packets into {}", plan.packets.len(), partial.display());
    let started = Instant::now();
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 65_535,
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    };
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut w = PcapWriter::with_header(BufWriter::with_capacity(1 << 20, file), header)?;
    let mut noise_rng = item_rng(POOL_STREAM, 1);
    let noise: Vec<u8> = (0..1 << 16).map(|_| noise_rng.next_u64() as u8).collect();
    let (mut body, mut bytes) = (Vec::with_capacity(2048), Vec::with_capacity(2048));
    for (i, pkt) in plan.packets.iter().enumerate() {
        payload(&mut body, plan, pkt, &noise);
        packet(&mut bytes, plan, pkt, &body)?;
        w.write_packet(&PcapPacket::new(Duration::from_micros(pkt.ts_us), bytes.len() as u32, &bytes))?;
        if i % 100_000 == 0 {
            ensure!(started.elapsed() < GENERATION_LIMIT, "generation passed {GENERATION_LIMIT:?} at packet {i}");
        }
    }
    let mut out = w.into_writer();
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&partial, &path)?;
    let bytes = fs::metadata(&path)?.len();
    fs::write(&meta_path, meta(bytes))?;
    let took = started.elapsed();
    let how = format!("generated in {took:.1?} ({:.0} packets/s)", plan.packets.len() as f64 / took.as_secs_f64());
    eprintln!("generate: {how}");
    Ok((path, how))
}

/// One process's cost, as wait4 reports it.
struct Usage {
    wall: Duration,
    /// User + system CPU.
    cpu: Duration,
    max_rss_kib: i64,
}

/// Runs `cmd` (stdout to /dev/null, stderr to `stderr`) and measures it as a whole process:
/// wall clock around spawn and wait4, and wait4's rusage. Fails on a non-zero exit, quoting its
/// stderr; a run past [`RUN_LIMIT`] is killed.
fn measure(mut cmd: Command, stderr: &Path) -> Result<Usage> {
    let line = tracker_tests::cmd::describe(&cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(File::create(stderr)?);
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("cannot start `{line}`"))?;
    let pid = child.id() as libc::pid_t;
    // The child stays unreaped until wait4 below, so its pid cannot be reused meanwhile.
    let (done, watch) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(RUN_LIMIT).is_err() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut status = 0;
    let mut ru = MaybeUninit::<libc::rusage>::zeroed();
    let rc = loop {
        // SAFETY: wait4 writes a status and an rusage into the memory given.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, ru.as_mut_ptr()) };
        if rc == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break rc;
    };
    let wall = start.elapsed();
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    drop(child);
    ensure!(rc == pid, "wait4 for `{line}`: {}", std::io::Error::last_os_error());
    // SAFETY: wait4 succeeded and filled it in.
    let ru = unsafe { ru.assume_init() };
    if killed {
        bail!("`{line}` did not finish within {RUN_LIMIT:?}");
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let said = fs::read_to_string(stderr).unwrap_or_default();
        let how = if libc::WIFEXITED(status) {
            format!("exit status {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        bail!("`{line}` failed ({how}): {}", said.trim());
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Ok(Usage { wall, cpu: tv(ru.ru_utime) + tv(ru.ru_stime), max_rss_kib: ru.ru_maxrss })
}

/// Waits for a quiet machine (at most QUIET_MAX, or TRACKER_IMPORT_QUIET_SECS).
fn wait_for_quiet() -> String {
    let max = std::env::var("TRACKER_IMPORT_QUIET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(QUIET_MAX, Duration::from_secs);
    quiet::wait_for_quiet("import", QUIET_LOAD, QUIET_POLL, max)
}

fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// Rows in `table` of the database tracker wrote.
fn count(db: &Path, table: &str) -> Result<u64> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(n as u64)
}

fn tshark_version() -> String {
    Command::new("tshark")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim_end_matches('.').to_owned()))
        .unwrap_or_else(|| "tshark (version unknown)".into())
}

fn main() -> Result<()> {
    let started = Instant::now();
    let rounds = match std::env::var("TRACKER_IMPORT_ROUNDS") {
        Ok(s) => s.parse::<usize>().ok().filter(|&n| n > 0).context("TRACKER_IMPORT_ROUNDS: a positive count")?,
        Err(_) => ROUNDS,
    };
    let tracker = tracker_bin();
    ensure!(tracker.exists(), "{} not found: run `cargo xtask build` (or set TRACKER_BIN)", tracker.display());
    let tracker = tracker.canonicalize()?;
    ensure!(tracker_tests::cmd::have_program("tshark"), "tshark not found (apt-get install tshark)");

    let planned = Instant::now();
    let plan = plan()?;
    let plan_took = planned.elapsed();
    eprintln!(
        "plan: {} packets, {} flows, {} DNS exchanges in {plan_took:.1?}",
        plan.packets.len(),
        plan.flows.len(),
        plan.dns_exchanges
    );
    let (path, how) = capture(&plan)?;
    let packets = plan.packets.len() as u64;
    let file_bytes = fs::metadata(&path)?.len();
    let (tcp, quic, icmp) = plan.flows.iter().fold((0, 0, 0), |(t, q, i), f| match f.kind {
        Kind::Tls { .. } => (t + 1, q, i),
        Kind::Quic => (t, q + 1, i),
        Kind::Icmp { .. } => (t, q, i + 1),
        Kind::Dns { .. } => (t, q, i),
    });
    let v6 = plan.flows.iter().filter(|f| f.client.is_ipv6()).count();
    let span_s = (plan.packets.last().map_or(0, |p| p.ts_us) - plan.packets[0].ts_us) as f64 / 1e6;

    // The file in the page cache, and both programs' code, before anything is timed.
    let mut sink = vec![0; 1 << 20];
    let mut f = File::open(&path)?;
    while f.read(&mut sink)? > 0 {}
    let scratch = std::env::temp_dir().join(format!("tracker-bench-import-{}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    let result = (|| -> Result<_> {
        let stderr = scratch.join("stderr");
        let mut warm = Command::new("tshark");
        warm.args(["-q", "-c", "1", "-r"]).arg(&path);
        measure(warm, &stderr)?;
        let mut warm = Command::new(&tracker);
        warm.arg("--help");
        measure(warm, &stderr)?;

        let quiet = wait_for_quiet();
        let mut loads = vec![];
        let (mut ours, mut theirs) = (vec![], vec![]);
        for round in 0..rounds {
            loads.push(load_average());
            // Alternate which goes first, so a burst of load hits both alike.
            for which in [round % 2, (round + 1) % 2] {
                if which == 0 {
                    let db = scratch.join(format!("round-{round}.db"));
                    remove_db(&db);
                    let mut c = Command::new(&tracker);
                    c.env_remove("TRACKER_ENTITIES")
                        .arg("--db")
                        .arg(&db)
                        .arg("import-pcap")
                        .arg(&path)
                        .args(["--source", "bench"]);
                    let u = measure(c, &stderr)?;
                    let (flows, dns) = (count(&db, "flows")?, count(&db, "dns_queries")?);
                    remove_db(&db);
                    ensure!(
                        flows == plan.flows.len() as u64 && dns == plan.dns_exchanges,
                        "round {round}: tracker stored {flows} flows and {dns} DNS queries; the capture holds {} \
                         flows (distinct 5-tuples) and {} DNS exchanges",
                        plan.flows.len(),
                        plan.dns_exchanges
                    );
                    eprintln!(
                        "round {round}: tracker {:.2} s ({:.0} packets/s), {flows} flows, {dns} DNS queries",
                        u.wall.as_secs_f64(),
                        packets as f64 / u.wall.as_secs_f64()
                    );
                    ours.push(u);
                } else {
                    let mut c = Command::new("tshark");
                    c.args(["-q", "-z", "conv,ip", "-r"]).arg(&path);
                    let u = measure(c, &stderr)?;
                    eprintln!(
                        "round {round}: tshark {:.2} s ({:.0} packets/s)",
                        u.wall.as_secs_f64(),
                        packets as f64 / u.wall.as_secs_f64()
                    );
                    theirs.push(u);
                }
            }
        }
        loads.push(load_average());
        Ok((quiet, loads, ours, theirs))
    })();
    let _ = fs::remove_dir_all(&scratch);
    let (quiet, loads, ours, theirs) = result?;

    let rate = |u: &Usage| packets as f64 / u.wall.as_secs_f64();
    let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| rate(a) / rate(b)).collect();
    let ratio = median(&ratios);
    println!("\n## Import: `tracker import-pcap` beside `tshark -q -z conv,ip` on the same capture\n\nMethod:");
    println!(
        "- capture {}: {packets} packets, {:.1} MB, {span_s:.0} s of capture time, LINKTYPE_RAW pcap; {how} \
         (plan {plan_took:.1?})",
        path.display(),
        file_bytes as f64 / 1e6,
    );
    println!(
        "- {} flows (distinct 5-tuples; {v6} over IPv6): {tcp} TCP/443 with a TLS ClientHello, {quic} QUIC-like \
         UDP/443, {} DNS exchanges over UDP/53 to {RESOLVER} (query and answer), {icmp} ICMP echo; {CLIENTS} \
         devices, remotes in the documentation ranges only",
        plan.flows.len(),
        plan.dns_exchanges
    );
    println!(
        "- tracker: `{} --db FRESH.db import-pcap FILE --source bench`, a new database each round; tshark: `tshark -q \
         -z conv,ip -r FILE` ({}); stdout to /dev/null for both",
        tracker.display(),
        tshark_version()
    );
    println!(
        "- {rounds} rounds, alternating which runs first, page cache warm; each a whole process: wall clock from \
         spawn to wait4 (the figure), user+sys CPU and peak RSS from wait4's rusage"
    );
    println!(
        "- 1-minute load average before measuring: {quiet}; at each round's start and at the end: [{}]",
        loads.join(", ")
    );
    println!("\nFigures (medians of the rounds; packets/s min-max over the rounds):\n");
    println!(
        "| tool | wall s | packets/s | packets/s min-max | CPU s (user+sys) | peak RSS MiB |\n|---|---:|---:|---|---:|---:|"
    );
    for (tool, runs) in [("tracker import-pcap", &ours), ("tshark -z conv,ip", &theirs)] {
        let walls: Vec<f64> = runs.iter().map(|u| u.wall.as_secs_f64()).collect();
        let rates: Vec<f64> = runs.iter().map(rate).collect();
        let cpus: Vec<f64> = runs.iter().map(|u| u.cpu.as_secs_f64()).collect();
        let rss: Vec<f64> = runs.iter().map(|u| u.max_rss_kib as f64 / 1024.0).collect();
        let (lo, hi) = rates.iter().fold((f64::INFINITY, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
        println!(
            "| {tool} | {:.2} | {:.0} | {lo:.0}-{hi:.0} | {:.2} | {:.0} (max {:.0}) |",
            median(&walls),
            median(&rates),
            median(&cpus),
            median(&rss),
            rss.iter().cloned().fold(0.0, f64::max)
        );
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "\nStored (checked every round): {} flows and {} DNS queries, as generated.",
        plan.flows.len(),
        plan.dns_exchanges
    );
    println!("\nTarget:");
    println!(
        "- tracker's packets/s at least {RATIO_TARGET:.0}x tshark's: {ratio:.1}x (median of the rounds' ratios: {}), \
         target met: {}",
        each.join(" "),
        if ratio >= RATIO_TARGET { "yes" } else { "no" }
    );
    println!("\nimport benchmark done in {:.1?}", started.elapsed());
    Ok(())
}
