//! The fuzz targets' seed corpora: payloads taken from the shared captures in
//! `../shared/testdata/pcaps` (read in place, never copied into the project) and a few inputs
//! built here, one directory per target under `target/fuzz-corpus/seeds/`.
//!
//! DNS seeds are UDP and TCP payloads to or from port 53; TLS and HTTP seeds the first payload
//! of each TCP flow direction that starts like a handshake record or a request; QUIC seeds the
//! UDP datagrams that start with a long header; capture seeds the files whole; blocklist seeds
//! the captures' DNS question names as a plain list and as a hosts file.

use anyhow::{Context, Result};
use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::fuzz::ALL;

const DNS_PORT: u16 = 53;
/// TLS record type of a handshake (RFC 8446 §5.1): what a ClientHello starts with.
const TLS_HANDSHAKE: u8 = 0x16;
/// Header form and fixed bits of a QUIC long header (RFC 9000 §17.2).
const QUIC_LONG_HEADER: u8 = 0xc0;
/// The quic_initial target's first byte for "the rest is an Initial's plaintext frames"
/// (`tracker::fuzzing::QUIC_FRAMES`).
const QUIC_FRAMES: u8 = 0x01;
/// Link types (pcap header or pcapng interface) whose frames start with Ethernet, or with IP.
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: [u32; 5] = [12, 14, 101, 228, 229];
/// The DNS header's length, and the top bits of a compression pointer (RFC 1035 §4.1).
const DNS_HEADER: usize = 12;
const DNS_POINTER: u8 = 0xc0;

/// Seeds per target, by target name.
#[derive(Default)]
struct Seeds {
    dns: Vec<Vec<u8>>,
    tls: Vec<Vec<u8>>,
    http: Vec<Vec<u8>>,
    quic: Vec<Vec<u8>>,
    capture: Vec<Vec<u8>>,
    blocklist: Vec<Vec<u8>>,
    entities: Vec<Vec<u8>>,
    config: Vec<Vec<u8>>,
    none: Vec<Vec<u8>>,
}

/// Writes every target's seeds under `dir` (replacing what an earlier run wrote there) and
/// prints how many each has.
pub fn write(repo: &Path, dir: &Path) -> Result<()> {
    let mut seeds = built_in(repo)?;
    match pcaps_dir(repo) {
        Some(pcaps) => from_captures(&pcaps, &mut seeds)?,
        None => println!("seeds: ../shared/testdata/pcaps not found: skipped the captures, built-in seeds only"),
    }
    let mut counts = Vec::new();
    for target in ALL {
        let name = target.name();
        let list = match name {
            "dns" => &seeds.dns,
            "tls_client_hello" => &seeds.tls,
            "http_host" => &seeds.http,
            "quic_initial" => &seeds.quic,
            "capture" => &seeds.capture,
            "blocklist" => &seeds.blocklist,
            "config" => &seeds.config,
            // Packed days have no seeds here (xtask does not link tracker): libFuzzer starts
            // from nothing, and the mutation tests start from real blobs.
            "packed" => &seeds.none,
            _ => &seeds.entities,
        };
        let out = dir.join(name);
        if out.exists() {
            fs::remove_dir_all(&out).with_context(|| format!("cannot empty {}", out.display()))?;
        }
        fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut written = HashSet::new();
        for seed in list {
            // Named by content, so repeats collapse into one file.
            let mut h = DefaultHasher::new();
            seed.hash(&mut h);
            let hash = h.finish();
            if written.insert(hash) {
                fs::write(out.join(format!("{hash:016x}")), seed)?;
            }
        }
        counts.push(format!("{name} {}", written.len()));
    }
    println!("seeds in {}: {}", dir.display(), counts.join(", "));
    Ok(())
}

/// `TRACKER_PCAPS`, else `shared/testdata/pcaps` beside the repository, as the tests find it.
fn pcaps_dir(repo: &Path) -> Option<PathBuf> {
    let dir = std::env::var_os("TRACKER_PCAPS").map_or_else(|| repo.join("../shared/testdata/pcaps"), PathBuf::from);
    dir.is_dir().then_some(dir)
}

/// Seeds that do not depend on the captures: a ClientHello naming a host (and its handshake in
/// a QUIC CRYPTO frame), an HTTP request, a hosts file, tracker's own entity table and an
/// override of it.
fn built_in(repo: &Path) -> Result<Seeds> {
    let mut seeds = Seeds::default();
    let hello = client_hello(b"www.example.com");
    let handshake = &hello[5..];
    let mut frames = vec![QUIC_FRAMES, 0x06, 0x00];
    frames.extend_from_slice(&(0x4000 | handshake.len() as u16).to_be_bytes());
    frames.extend_from_slice(handshake);
    seeds.quic.push(frames);
    seeds.tls.push(hello);
    seeds.http.push(b"GET /index.html HTTP/1.1\r\nHost: www.example.com:8080\r\nAccept: */*\r\n\r\n".to_vec());
    seeds.blocklist.push(
        b"# hosts\n127.0.0.1 localhost\n0.0.0.0 ads.example.com tracker.example.net\n::1 ip6-localhost\n\
          metrics.example.org\n"
            .to_vec(),
    );
    let table = repo.join("tracker-user/data/entities.toml");
    seeds.entities.push(fs::read(&table).with_context(|| format!("cannot read {}", table.display()))?);
    seeds.entities.push(
        b"[[company]]\nname = \"Example\"\ncategory = \"cdn\"\ndomains = [\"example.net\", \"apple.com\"]\n\n\
          [[service]]\nname = \"Ex\"\ncompany = \"Example\"\ndomains = [\"api.example.net\"]\n"
            .to_vec(),
    );
    // The configuration file as README shows it, and one with every kind of value.
    seeds.config.push(CONFIG_SEED.as_bytes().to_vec());
    seeds.config.push(
        b"db = \"/var/lib/tracker/tracker.db\"\nlog = \"info\"\n[run]\niface = \"wg0\"\nkeep-attached = true\n\
          sweep-interval = 2\nlocal-net = [\"192.0.2.0/24\", \"2001:db8::/32\"]\nno-dashboard = false\n"
            .to_vec(),
    );
    Ok(seeds)
}

/// A configuration file a user would write (README's settings-file section).
const CONFIG_SEED: &str = "# /etc/tracker/tracker.toml\ndb = \"/srv/tracker/tracker.db\"\n\n[run]\n\
                           iface = \"wg1\"\nkeep-raw = \"90d\"\ndashboard-port = 8722\n";

/// A TLS 1.3 ClientHello record with one extension, server_name (RFC 6066 §3) for `host`.
fn client_hello(host: &[u8]) -> Vec<u8> {
    let be16 = |n: usize| (n as u16).to_be_bytes();
    let mut sni = [&be16(host.len() + 3)[..], &[0], &be16(host.len()), host].concat();
    sni.splice(0..0, [&[0, 0][..], &be16(sni.len())].concat());
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no legacy session id
    hello.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]); // one suite, null compression
    hello.extend_from_slice(&be16(sni.len()));
    hello.extend_from_slice(&sni);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&be16(hello.len()));
    handshake.extend_from_slice(&hello);
    [&[TLS_HANDSHAKE, 0x03, 0x01][..], &be16(handshake.len()), &handshake].concat()
}

/// Adds the payloads of every capture in `dir`, and the files themselves.
fn from_captures(dir: &Path, seeds: &mut Seeds) -> Result<()> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.retain(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"));
    paths.sort();
    let mut first_seen = HashSet::new();
    let mut names = Vec::new();
    for path in &paths {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        for (link, frame) in frames(&bytes) {
            add_frame(link, &frame, seeds, &mut first_seen);
        }
        seeds.capture.push(bytes);
    }
    for message in &seeds.dns {
        names.extend(first_question(message));
    }
    if !names.is_empty() {
        let plain: String = names.iter().map(|n| format!("{n}\n")).collect();
        let hosts: String = names.iter().map(|n| format!("0.0.0.0 {n}\n")).collect();
        seeds.blocklist.extend([plain.into_bytes(), hosts.into_bytes()]);
    }
    Ok(())
}

/// A capture's frames with their link types, up to its first damage (pcap or pcapng, from the
/// magic number).
fn frames(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let Ok(mut reader) = PcapNgReader::new(bytes) else { return out };
        let mut links = Vec::new();
        while let Some(Ok(block)) = reader.next_block() {
            match block {
                Block::SectionHeader(_) => links.clear(),
                Block::InterfaceDescription(idb) => links.push(u32::from(idb.linktype)),
                Block::EnhancedPacket(p) => {
                    if let Some(&link) = links.get(p.interface_id as usize) {
                        out.push((link, p.data.into_owned()));
                    }
                }
                _ => {}
            }
        }
    } else if let Ok(mut reader) = PcapReader::new(bytes) {
        let link = u32::from(reader.header().datalink);
        while let Some(Ok(packet)) = reader.next_packet() {
            out.push((link, packet.data.into_owned()));
        }
    }
    out
}

/// Sorts one frame's L4 payload into the seeds it can serve.
fn add_frame(link: u32, frame: &[u8], seeds: &mut Seeds, first_seen: &mut HashSet<Vec<u8>>) {
    let packet = match link {
        LINKTYPE_ETHERNET => LaxSlicedPacket::from_ethernet(frame).ok(),
        l if LINKTYPE_RAW.contains(&l) => LaxSlicedPacket::from_ip(frame).ok(),
        _ => None,
    };
    let Some(packet) = packet else { return };
    let (tcp, sport, dport, payload) = match &packet.transport {
        Some(TransportSlice::Udp(u)) => (false, u.source_port(), u.destination_port(), u.payload()),
        Some(TransportSlice::Tcp(t)) => (true, t.source_port(), t.destination_port(), t.payload()),
        _ => return,
    };
    if payload.is_empty() {
        return;
    }
    if sport == DNS_PORT || dport == DNS_PORT {
        seeds.dns.push(payload.to_vec());
        return;
    }
    // The first payload of each flow direction, as the kernel reports it.
    let addrs = match &packet.net {
        Some(LaxNetSlice::Ipv4(v4)) => [v4.header().source(), v4.header().destination()].concat(),
        Some(LaxNetSlice::Ipv6(v6)) => [v6.header().source(), v6.header().destination()].concat(),
        None => return,
    };
    let key = [&addrs[..], &[u8::from(tcp)], &sport.to_be_bytes(), &dport.to_be_bytes()].concat();
    if !first_seen.insert(key) {
        return;
    }
    match (tcp, payload[0]) {
        (true, TLS_HANDSHAKE) => seeds.tls.push(payload.to_vec()),
        (true, b'A'..=b'Z') => seeds.http.push(payload.to_vec()),
        (false, b) if b & QUIC_LONG_HEADER == QUIC_LONG_HEADER => seeds.quic.push(payload.to_vec()),
        _ => {}
    }
}

/// The first question's name of a DNS message over UDP, in dotted form, when it is plain
/// (no pointer, printable labels).
fn first_question(message: &[u8]) -> Option<String> {
    let mut at = DNS_HEADER;
    let mut labels = Vec::new();
    loop {
        let len = *message.get(at)? as usize;
        if len == 0 {
            break;
        }
        if len as u8 & DNS_POINTER != 0 {
            return None;
        }
        let label = message.get(at + 1..at + 1 + len)?;
        labels.push(std::str::from_utf8(label).ok().filter(|l| l.bytes().all(|b| b.is_ascii_graphic()))?);
        at += 1 + len;
    }
    (!labels.is_empty()).then(|| labels.join("."))
}
