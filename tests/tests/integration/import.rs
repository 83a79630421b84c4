//! `tracker import-pcap` against the daemon and against tshark, on captures the test records
//! itself in the lab while the daemon watches the same traffic live:
//!
//! - `wg0.pcap`: tcpdump on the VPN host's WireGuard interface (raw IP, LINKTYPE_RAW), where the
//!   daemon's programs are attached;
//! - `vpn1.pcap`: tcpdump on the VPN host's veth to the internet (Ethernet), which carries the
//!   same traffic to and from the internet's hosts (the lab routes, it does not NAT: the phone's
//!   tunnel addresses are on the wire there too), but not the phone's queries to the on-host
//!   resolver.
//!
//! The phone makes a planned set of connections: DNS over UDP and TCP to both resolvers (CNAME
//! chain, NXDOMAIN, a private address, two names on one address), HTTP and TLS with SNI to the
//! lab's real companies' names and zone names, UDP echoes and pings, IPv4 and IPv6. Then:
//!
//! 1. the import of `wg0.pcap` into a fresh database has exactly the live flows: the same
//!    5-tuples, packets and bytes each way, and the same labels (name and how it was found,
//!    CNAME, address class, application protocol and how it was decided, encryption, company,
//!    site, service, served by), and the same DNS log, name counts and report;
//! 2. the same file imported into the live database, under a source of its own, leaves the live
//!    rows as they were and gives the same rows as in the fresh database;
//! 3. the import of `vpn1.pcap` has exactly the live flows that crossed that veth, labels too;
//! 4. each import's TCP and UDP flows equal `tshark -q -z conv,tcp -z conv,udp` of its file:
//!    frames and IP bytes each way, conversation for conversation;
//! 5. `tracker sources` lists each import with tshark's frame count (`capinfos`), and a second
//!    import of the same bytes (same name or another) says so, exits 0 and changes nothing.
//!
//! Offloads: the daemon counts a GSO super-packet on wg0's egress as its segments while tcpdump
//! on a veth records it as one frame, and a veth hands a TSO super-packet from the internet's
//! servers to the VPN host whole. So TSO, GSO and GRO are off on wg0 and on both ends of the
//! veth to the internet: every skb is then one IP packet everywhere, on both captures and in
//! the kernel. (The lab's wireguard-go writes no coalesced packets.) The flows are small
//! besides: tshark's table shows a direction's bytes exactly only below 10,000 (then "kB"), so
//! every conversation stays below that.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::common::{DigQuery, Pinned, Tracker, curl_pinned, dig, ip_eq, run_cli, tracker_with, udp_echoes};
use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use tracker_tests::{
    Lab, Ns,
    cmd::{have_program, run},
    lab::{Capture, ECHO_V4, ECHO_V6, PHONE_V4, PHONE_V6, Resolver, UDP_ECHO_PORT},
    zone::{self, QType},
};

/// The imports' source names.
const WG0_SOURCE: &str = "wg0cap";
const VPN1_SOURCE: &str = "vpn1cap";
/// `wg0.pcap` imported into the live database.
const BESIDE_LIVE_SOURCE: &str = "wg0cap-beside-live";
/// The client side of both captures: the tunnel's subnets, which the daemon reads from wg0's
/// addresses. An import takes its `--client-net`s as the VPN's own subnets too (their addresses
/// are `remote_class` "tunnel"); a fresh database knows no tunnel, so the test names it. An
/// import into the live database needs none: it finds the daemon's subnets there.
const CLIENT_NETS: [&str; 4] = ["--client-net", "10.77.0.0/24", "--client-net", "fd77::/64"];

/// The flow fields an import must give exactly as the daemon did (all of `tracker flows` but
/// the times, which come from two clocks and are compared to within [`CLOCK_TOLERANCE_MS`]).
const COMPARED: [&str; 15] = [
    "packets_up",
    "bytes_up",
    "packets_down",
    "bytes_down",
    "name",
    "name_source",
    "cname",
    "remote_class",
    "app_protocol",
    "app_decided",
    "encrypted",
    "company",
    "site",
    "service",
    "served_by",
];
/// The daemon stamps flows with the kernel's coarse clock, an import with the capture's: the
/// two agree to a few ms; a second apart would be a wrong clock.
const CLOCK_TOLERANCE_MS: i64 = 1000;
/// Ethernet header bytes of each frame on the veth (no VLAN tag there).
const ETHERNET_HEADER: u64 = 14;
/// The TLS server's page (`openssl s_server -www`, about 7.5 kB with the handshake) is the
/// largest download; tshark shows bytes exactly below this.
const TSHARK_EXACT_BELOW: u64 = 10_000;

/// A flow the test made, and what every source must say of it.
#[derive(Clone, Debug)]
struct Planned {
    protocol: &'static str,
    client: IpAddr,
    /// None for ICMP (flows keyed by addresses alone).
    client_port: Option<u16>,
    remote: IpAddr,
    remote_port: u16,
    name: Option<&'static str>,
    company: Option<&'static str>,
    app: &'static str,
    /// Exact (packets_up, bytes_up, packets_down, bytes_down) where arithmetic knows them.
    counts: Option<(u64, u64, u64, u64)>,
    /// Crosses the veth to the internet (everything but the on-host resolver's).
    on_uplink: bool,
}

impl Planned {
    fn matches(&self, f: &Value) -> bool {
        f["protocol"] == self.protocol
            && ip_eq(&f["client"], self.client)
            && ip_eq(&f["remote"], self.remote)
            && f["remote_port"] == self.remote_port
            && self.client_port.is_none_or(|p| f["client_port"] == p)
    }
}

/// What `tracker-user/data/entities.toml` says of the names the test connects to: the company.
fn company(name: &str) -> Option<&'static str> {
    match name {
        zone::WWW_APPLE | zone::ICLOUD_GATEWAY | "images.apple.com" => Some("Apple"),
        zone::WWW_GOOGLE => Some("Google"),
        zone::TWITTER_API => Some("X (Twitter)"),
        zone::WWW_NETFLIX => Some("Netflix"),
        zone::WWW_EXAMPLE | "blog.lab.test" | "tls.lab.test" => None,
        other => panic!("the import test knows no company for {other}"),
    }
}

fn dig_flow(lab: &Lab, resolver: Resolver, v6: bool, name: &str, qtype: QType, tcp: bool) -> Result<Planned> {
    let q = DigQuery::new(resolver.addr(v6), name, qtype.as_str(), tcp);
    let status = dig(lab, &q).with_context(|| format!("asking {name} {} of {}", qtype.as_str(), q.server))?;
    let want = zone::resolve(name, qtype).rcode;
    ensure!(status == want, "dig {name} {} @{}: {status}, the zone says {want}", qtype.as_str(), q.server);
    Ok(Planned {
        protocol: if tcp { "tcp" } else { "udp" },
        client: q.client(),
        client_port: Some(q.port),
        remote: q.server,
        remote_port: 53,
        name: None,
        company: None,
        app: "dns",
        counts: None,
        on_uplink: resolver == Resolver::Upstream,
    })
}

/// One curl from the phone to `name`'s first A (or with `v6` AAAA) address over HTTP or TLS,
/// the address given with `--resolve`: the phone's own dig through the upstream resolver names
/// it. `name: None` for a local peer, which gets no name.
fn curl_flow(lab: &Lab, tls: bool, host: &'static str, v6: bool, name: Option<&'static str>) -> Result<Planned> {
    let Pinned { conn, addr, port, url } = curl_pinned(lab, lab.phone_cmd("curl"), tls, host, v6)?;
    let phone: IpAddr = if v6 { PHONE_V6.into() } else { PHONE_V4.into() };
    ensure!(conn.local == phone && conn.remote == addr, "curl {url} went {conn:?}");
    Ok(Planned {
        protocol: "tcp",
        client: conn.local,
        client_port: Some(conn.local_port),
        remote: addr,
        remote_port: port,
        name,
        company: name.and_then(company),
        app: if tls { "tls" } else { "http" },
        counts: None,
        on_uplink: true,
    })
}

fn udp_flow(lab: &Lab, v6: bool, n: u64, size: u64) -> Result<Planned> {
    let (phone, echo, ip_header): (IpAddr, IpAddr, u64) =
        if v6 { (PHONE_V6.into(), ECHO_V6.into(), 40) } else { (PHONE_V4.into(), ECHO_V4.into(), 20) };
    let port = udp_echoes(lab, phone, echo, 0, n as usize, size as usize)?;
    let bytes = n * (ip_header + 8 + size);
    Ok(Planned {
        protocol: "udp",
        client: phone,
        client_port: Some(port),
        remote: echo,
        remote_port: UDP_ECHO_PORT,
        name: None,
        company: None,
        app: "unknown",
        counts: Some((n, bytes, n, bytes)),
        on_uplink: true,
    })
}

/// `ping -c N` (56 bytes of data) from the phone to the echo host: N requests, N replies.
fn ping_flow(lab: &Lab, v6: bool, n: u64) -> Result<Planned> {
    let (phone, echo, protocol, size): (IpAddr, IpAddr, _, u64) = if v6 {
        (PHONE_V6.into(), ECHO_V6.into(), "icmpv6", 40 + 8 + 56)
    } else {
        (PHONE_V4.into(), ECHO_V4.into(), "icmp", 20 + 8 + 56)
    };
    run(lab.phone_cmd("ping").args(["-n", "-c", &n.to_string(), "-i", "0.2", "-W", "2", &echo.to_string()]))?;
    Ok(Planned {
        protocol,
        client: phone,
        client_port: None,
        remote: echo,
        remote_port: 0,
        name: None,
        company: None,
        app: "unknown",
        counts: Some((n, n * size, n, n * size)),
        on_uplink: true,
    })
}

/// The planned traffic, in order. Names the flows connect to are asked of the upstream
/// resolver, so that both captures see the answers that name them; AAAA over IPv6, since a
/// fresh database knows no devices to tie a phone's two addresses together. The on-host
/// resolver's exchanges (wg0 only) are DNS flows of their own.
fn make_traffic(lab: &Lab) -> Result<Vec<Planned>> {
    use Resolver::{OnHost, Upstream};
    let mut plan = Vec::new();
    // (resolver, over IPv6, name, type, over TCP)
    let questions: [(Resolver, bool, &str, QType, bool); 14] = [
        (Upstream, false, zone::WWW_APPLE, QType::A, false),
        (Upstream, false, zone::ICLOUD_GATEWAY, QType::A, false),
        (Upstream, true, zone::WWW_GOOGLE, QType::Aaaa, false),
        (Upstream, false, zone::AKAMAI_CHAIN[0], QType::A, true),
        (Upstream, false, zone::TWITTER_API, QType::A, false),
        (Upstream, false, zone::WWW_NETFLIX, QType::A, false),
        (Upstream, false, zone::WWW_EXAMPLE, QType::A, false),
        (Upstream, false, zone::SHARED_NAMES[0], QType::A, false),
        (Upstream, false, zone::SHARED_NAMES[1], QType::A, false),
        (Upstream, false, zone::LAN_NAME, QType::A, false),
        (Upstream, true, zone::TLS_NAME, QType::Aaaa, true),
        (OnHost, false, zone::WEB_NAME, QType::A, false),
        (OnHost, true, zone::CHAIN[0], QType::Aaaa, true),
        (OnHost, false, zone::NXDOMAIN_NAMES[0], QType::A, false),
    ];
    for (resolver, v6, name, qtype, tcp) in questions {
        plan.push(dig_flow(lab, resolver, v6, name, qtype, tcp)?);
    }
    // (TLS, host, over IPv6, the flow's name)
    let requests: [(bool, &'static str, bool, Option<&'static str>); 10] = [
        (false, zone::WWW_APPLE, false, Some(zone::WWW_APPLE)),
        (false, zone::WWW_NETFLIX, false, Some(zone::WWW_NETFLIX)),
        (false, zone::WWW_EXAMPLE, false, Some(zone::WWW_EXAMPLE)),
        (false, zone::AKAMAI_CHAIN[0], false, Some(zone::AKAMAI_CHAIN[0])),
        (false, zone::LAN_NAME, false, None),
        (true, zone::WWW_APPLE, false, Some(zone::WWW_APPLE)),
        (true, zone::ICLOUD_GATEWAY, false, Some(zone::ICLOUD_GATEWAY)),
        (true, zone::WWW_GOOGLE, true, Some(zone::WWW_GOOGLE)),
        (true, zone::TWITTER_API, false, Some(zone::TWITTER_API)),
        // Two names on one address: the SNI says which one the phone meant.
        (true, zone::SHARED_NAMES[1], false, Some(zone::SHARED_NAMES[1])),
    ];
    for (tls, host, v6, name) in requests {
        plan.push(curl_flow(lab, tls, host, v6, name).with_context(|| format!("requesting {host}"))?);
    }
    plan.push(curl_flow(lab, true, zone::TLS_NAME, true, Some(zone::TLS_NAME))?);
    plan.push(udp_flow(lab, false, 5, 200)?);
    plan.push(udp_flow(lab, true, 3, 1200)?);
    plan.push(ping_flow(lab, false, 3)?);
    plan.push(ping_flow(lab, true, 2)?);
    Ok(plan)
}

/// A flow's identity: protocol, client, client port, remote, remote port.
type Key = (String, String, u64, String, u64);

fn key(f: &Value) -> Key {
    let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
    let n = |k: &str| f[k].as_u64().unwrap_or(u64::MAX);
    (s("protocol"), s("client"), n("client_port"), s("remote"), n("remote_port"))
}

fn show_key(k: &Key) -> String {
    format!("{} {}:{} -> {}:{}", k.0, k.1, k.2, k.3, k.4)
}

fn by_key<'a>(what: &str, flows: impl IntoIterator<Item = &'a Value>) -> Result<BTreeMap<Key, &'a Value>> {
    let mut out = BTreeMap::new();
    for f in flows {
        if let Some(dup) = out.insert(key(f), f) {
            bail!("{what}: two rows for {}:\n{dup}\n{f}", show_key(&key(f)));
        }
    }
    Ok(out)
}

fn ms_of(v: &Value) -> Option<i64> {
    tracker::timefmt::parse_since(v.as_str()?).ok()
}

/// Every difference between the flows `want` (the daemon's) and `got` (an import's): flows
/// missing or extra, and each [`COMPARED`] field that differs, one line each. Also the largest
/// difference of their times, in ms.
fn flow_differences(want: &BTreeMap<Key, &Value>, got: &BTreeMap<Key, &Value>) -> (Vec<String>, i64) {
    let mut diffs = Vec::new();
    let mut clock = 0i64;
    for (k, w) in want {
        let Some(g) = got.get(k) else {
            diffs.push(format!("missing: {} {w}", show_key(k)));
            continue;
        };
        for field in COMPARED {
            if w[field] != g[field] {
                diffs.push(format!("{}: {field}: live {}, import {}", show_key(k), w[field], g[field]));
            }
        }
        for t in ["first_seen", "last_seen"] {
            match (ms_of(&w[t]), ms_of(&g[t])) {
                (Some(a), Some(b)) => clock = clock.max((a - b).abs()),
                _ => diffs.push(format!("{}: {t}: live {}, import {}", show_key(k), w[t], g[t])),
            }
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            diffs.push(format!("extra: {} {g}", show_key(k)));
        }
    }
    (diffs, clock)
}

/// One direction of a tshark conversation: frames and (frame) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dir {
    frames: u64,
    bytes: u64,
}

/// One line of tshark's conversation table. A is the end that sent the conversation's first
/// frame; "->" counts A to B, "<-" B to A.
#[derive(Clone, Debug)]
struct Conv {
    protocol: &'static str,
    a: (IpAddr, u16),
    b: (IpAddr, u16),
    a_to_b: Dir,
    b_to_a: Dir,
}

/// `ADDR:PORT` as tshark writes it (IPv6 without brackets: the port is after the last colon).
fn endpoint(s: &str) -> Result<(IpAddr, u16)> {
    let (addr, port) = s.rsplit_once(':').with_context(|| format!("tshark endpoint {s:?}"))?;
    Ok((addr.parse().with_context(|| format!("tshark address {addr:?}"))?, port.parse()?))
}

/// `tshark -n -q -z conv,tcp -z conv,udp -r FILE`, parsed. Each table line reads
/// `A <-> B  FRAMES BYTES bytes  FRAMES BYTES bytes  FRAMES BYTES bytes  START DURATION`, the
/// columns `<-` (B to A), `->` (A to B) and the total; tshark writes 10,000 bytes and more
/// rounded ("19 kB"), which cannot be compared exactly, so such a line is an error.
fn tshark_conversations(file: &Path) -> Result<Vec<Conv>> {
    let out = run(Command::new("tshark").args(["-n", "-q", "-z", "conv,tcp", "-z", "conv,udp", "-r"]).arg(file))?;
    let mut protocol = None;
    let mut convs = Vec::new();
    for line in out.lines() {
        if line.starts_with("TCP Conversations") {
            protocol = Some("tcp");
        } else if line.starts_with("UDP Conversations") {
            protocol = Some("udp");
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.get(1) != Some(&"<->") {
            continue;
        }
        let protocol = protocol.with_context(|| format!("tshark: a conversation before its table:\n{out}"))?;
        ensure!(t.len() >= 12, "tshark line {line:?}");
        ensure!(
            [t[5], t[8], t[11]].iter().all(|u| *u == "bytes"),
            "tshark rounded a byte count (flows must stay below {TSHARK_EXACT_BELOW} bytes each way): {line:?}"
        );
        let n = |i: usize| t[i].parse::<u64>().with_context(|| format!("tshark line {line:?}"));
        let (b_to_a, a_to_b) = (Dir { frames: n(3)?, bytes: n(4)? }, Dir { frames: n(6)?, bytes: n(7)? });
        ensure!(
            n(9)? == b_to_a.frames + a_to_b.frames && n(10)? == b_to_a.bytes + a_to_b.bytes,
            "tshark's total is not its two directions: {line:?}"
        );
        convs.push(Conv { protocol, a: endpoint(t[0])?, b: endpoint(t[2])?, a_to_b, b_to_a });
    }
    Ok(convs)
}

/// The imported TCP and UDP flows against tshark's conversations of the same file: one
/// conversation per flow, frames = packets and frame bytes − `l2` per frame = IP bytes, each
/// way. Returns the differences, and how many conversations matched.
fn tshark_differences(imported: &BTreeMap<Key, &Value>, convs: &[Conv], l2: u64) -> (Vec<String>, usize) {
    let mut diffs = Vec::new();
    let mut matched = 0;
    let mut seen = std::collections::BTreeSet::new();
    for c in convs {
        let ends = |(ip, port): (IpAddr, u16)| (ip.to_string(), u64::from(port));
        let (a, b) = (ends(c.a), ends(c.b));
        let forward = (c.protocol.to_owned(), a.0.clone(), a.1, b.0.clone(), b.1);
        let backward = (c.protocol.to_owned(), b.0, b.1, a.0, a.1);
        let (k, up, down) = if imported.contains_key(&forward) {
            (forward, c.a_to_b, c.b_to_a)
        } else if imported.contains_key(&backward) {
            (backward, c.b_to_a, c.a_to_b)
        } else {
            diffs.push(format!("tshark conversation with no imported flow: {c:?}"));
            continue;
        };
        let f = imported[&k];
        let ip_bytes = |d: Dir| d.bytes - l2 * d.frames;
        let want = (up.frames, ip_bytes(up), down.frames, ip_bytes(down));
        let got = (
            f["packets_up"].as_u64().unwrap_or(u64::MAX),
            f["bytes_up"].as_u64().unwrap_or(u64::MAX),
            f["packets_down"].as_u64().unwrap_or(u64::MAX),
            f["bytes_down"].as_u64().unwrap_or(u64::MAX),
        );
        if want == got {
            matched += 1;
        } else {
            diffs.push(format!(
                "{}: (packets_up, bytes_up, packets_down, bytes_down): tshark {want:?}, import {got:?}",
                show_key(&k)
            ));
        }
        seen.insert(k);
    }
    for k in imported.keys().filter(|k| k.0 == "tcp" || k.0 == "udp") {
        if !seen.contains(k) {
            diffs.push(format!("imported flow that tshark has no conversation for: {}", show_key(k)));
        }
    }
    (diffs, matched)
}

/// `capinfos -c -M FILE`: the number of frames, as tshark reads them.
fn capinfos_frames(file: &Path) -> Result<u64> {
    let out = run(Command::new("capinfos").args(["-c", "-M"]).arg(file))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("capinfos printed {out:?}"))
}

/// A tracker command on database `db` that must succeed; its stdout.
fn tracker_on(t: &Tracker, db: &Path, args: &[&str]) -> Result<String> {
    let ran = run_cli(tracker_with(db, &t.pins, args))?;
    ensure!(ran.exited_ok(), "tracker --db {} {args:?}: {}", db.display(), ran.describe());
    Ok(ran.stdout)
}

fn json_on(t: &Tracker, db: &Path, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let out = tracker_on(t, db, &a)?;
    serde_json::from_str(&out).with_context(|| format!("tracker {a:?} printed {out:?}"))
}

fn rows_on(t: &Tracker, db: &Path, args: &[&str]) -> Result<Vec<Value>> {
    json_on(t, db, args)?.as_array().cloned().with_context(|| format!("tracker {args:?} printed no array"))
}

/// `tracker flows` of `source` (None: live) in `db`, every row.
fn flows_on(t: &Tracker, db: &Path, source: Option<&str>) -> Result<Vec<Value>> {
    let mut a = vec!["flows", "--limit", "0"];
    a.extend(source.iter().flat_map(|s| ["--source", s]));
    rows_on(t, db, &a)
}

/// `tracker dns` of `source` (None: live) in `db`, every row, without its time (two clocks),
/// sorted, for comparing as a multiset.
fn dns_on(t: &Tracker, db: &Path, source: Option<&str>, since_ms: Option<i64>) -> Result<Vec<Value>> {
    let mut a = vec!["dns", "--limit", "0"];
    a.extend(source.iter().flat_map(|s| ["--source", s]));
    let mut rows: Vec<Value> = rows_on(t, db, &a)?
        .into_iter()
        .filter(|e| since_ms.is_none_or(|s| ms_of(&e["time"]).is_some_and(|t| t >= s)))
        .map(|mut e| {
            if let Some(o) = e.as_object_mut() {
                o.remove("time");
            }
            e
        })
        .collect();
    rows.sort_by_key(|e| e.to_string());
    Ok(rows)
}

/// `SELECT count(*) FROM TABLE` of database `db`, read-only.
fn count_rows(db: &Path, table: &str) -> Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}

/// `tracker --db DB import-pcap FILE --source NAME EXTRA`: its stdout; it must exit 0.
fn import(t: &Tracker, db: &Path, file: &Path, source: &str, extra: &[&str]) -> Result<String> {
    let file = file.to_str().context("a UTF-8 path")?;
    let mut args = vec!["import-pcap", file, "--source", source];
    args.extend_from_slice(extra);
    tracker_on(t, db, &args)
}

fn assert_none(what: &str, diffs: &[String]) {
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
}

/// Copies the captures to target/test-artifacts (small), to look at after a failure.
fn keep_artifacts(files: &[&Path]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    if std::fs::create_dir_all(&dir).is_ok() {
        for f in files {
            if let Some(name) = f.file_name() {
                let _ = std::fs::copy(f, dir.join(format!("import-{}", name.to_string_lossy())));
            }
        }
    }
}

#[test]
fn imported_captures_equal_the_live_flows_and_tshark() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("ti1")? else {
        return Ok(());
    };
    let started = Instant::now();
    for tool in ["tcpdump", "tshark", "capinfos"] {
        ensure!(have_program(tool), "{tool} is not installed (Debian: tcpdump, tshark)");
    }
    lab.set_offloads(false)?;
    lab.set_offloads_on(Ns::Vpn, &lab.vpn_uplink_iface, false)?;
    lab.set_offloads_on(Ns::Net, &lab.net_uplink_iface, false)?;
    t.start(&lab)?;

    let dir = lab.dir.join("captures");
    std::fs::create_dir_all(&dir)?;
    let (wg0_file, vpn1_file) = (dir.join("wg0.pcap"), dir.join("vpn1.pcap"));
    let wg0 = lab.start_capture(Ns::Vpn, &lab.vpn_iface, &wg0_file)?;
    let vpn1 = lab.start_capture(Ns::Vpn, &lab.vpn_uplink_iface, &vpn1_file)?;
    let listening_ms = wg0.listening_ms.max(vpn1.listening_ms);
    // The kernel's coarse clock may lag the wall clock by a tick: no flow starts this close.
    std::thread::sleep(Duration::from_millis(100));
    let plan = make_traffic(&lab)?;
    // The last ACKs and FINs may trail the clients' exit by a moment.
    std::thread::sleep(Duration::from_secs(1));
    let stop = |c: Capture| -> Result<_> {
        let file = c.file.clone();
        let counts = c.stop()?;
        let frames = capinfos_frames(&file)?;
        assert_eq!(
            (counts.dropped, counts.captured),
            (0, frames),
            "{}: tcpdump's (dropped, captured) against the file's frames",
            file.display()
        );
        Ok(frames)
    };
    let (wg0_frames, vpn1_frames) = (stop(wg0)?, stop(vpn1)?);
    keep_artifacts(&[&wg0_file, &vpn1_file]);
    t.settle();
    // A clean stop writes the last counts.
    t.stop()?;

    // The daemon's flows: what the capture saw began after tcpdump listened.
    let live_all = flows_on(&t, &t.db, None)?;
    let (live_rows, before): (Vec<&Value>, Vec<&Value>) =
        live_all.iter().partition(|f| ms_of(&f["first_seen"]).is_some_and(|ms| ms >= listening_ms));
    if !before.is_empty() {
        println!("note: {} live flows began before the captures and are left out: {before:#?}", before.len());
    }
    let live = by_key("live flows", live_rows)?;
    for p in &plan {
        let rows: Vec<&&Value> = live.values().filter(|f| p.matches(f)).collect();
        assert_eq!(rows.len(), 1, "live flows matching {p:?}: {rows:#?}");
        let f = rows[0];
        let s = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(s.to_owned()));
        assert_eq!(
            (&f["name"], &f["company"], &f["app_protocol"]),
            (&s(p.name), &s(p.company), &s(Some(p.app))),
            "live (name, company, app_protocol) of {p:?}"
        );
        if let Some((pu, bu, pd, bd)) = p.counts {
            let got = (&f["packets_up"], &f["bytes_up"], &f["packets_down"], &f["bytes_down"]);
            assert_eq!(got, (&pu.into(), &bu.into(), &pd.into(), &bd.into()), "live counts of {p:?}");
        }
    }
    assert_eq!(live.len(), plan.len(), "live flows: one per planned connection, no other: {live:#?}");

    // 1. wg0.pcap into a fresh database: the live flows, exactly.
    let fresh = lab.dir.join("imported.db");
    let said = import(&t, &fresh, &wg0_file, WG0_SOURCE, &CLIENT_NETS)?;
    println!("{said}");
    let wg0_rows = flows_on(&t, &fresh, Some(WG0_SOURCE))?;
    let wg0_flows = by_key("wg0.pcap's flows", &wg0_rows)?;
    let (diffs, wg0_clock) = flow_differences(&live, &wg0_flows);
    assert_none("wg0.pcap imported against the live flows", &diffs);
    assert!(wg0_clock <= CLOCK_TOLERANCE_MS, "wg0.pcap's flow times differ from the live ones by {wg0_clock} ms");
    let live_dns = dns_on(&t, &t.db, None, Some(listening_ms))?;
    let wg0_dns = dns_on(&t, &fresh, Some(WG0_SOURCE), None)?;
    assert_eq!(wg0_dns, live_dns, "wg0.pcap's DNS log against the live one (times aside)");
    let names = |db: &Path, source: Option<&str>| -> Result<Vec<Value>> {
        let mut a = vec!["domains", "--limit", "0"];
        a.extend(source.iter().flat_map(|s| ["--source", s]));
        let mut rows: Vec<Value> =
            rows_on(&t, db, &a)?.iter().map(|d| serde_json::json!([d["domain"], d["queries"], d["clients"]])).collect();
        rows.sort_by_key(|d| d.to_string());
        Ok(rows)
    };
    assert_eq!(names(&fresh, Some(WG0_SOURCE))?, names(&t.db, None)?, "tracker domains: (domain, queries, clients)");
    let report = |db: &Path, source: Option<&str>| -> Result<Value> {
        let mut a = vec!["report", "--since", "1h"];
        a.extend(source.iter().flat_map(|s| ["--source", s]));
        let mut r = json_on(&t, db, &a)?;
        // The period is each source's own, and devices are the live interface's WireGuard peers.
        if let Some(o) = r.as_object_mut() {
            for k in ["since", "until", "devices"] {
                o.remove(k);
            }
        }
        Ok(r)
    };
    assert_eq!(report(&fresh, Some(WG0_SOURCE))?, report(&t.db, None)?, "tracker report, periods and devices aside");

    // 2. The same file into the live database, under a source of its own: the live rows stay,
    // and the import's rows are those of the fresh database.
    let live_json = tracker_on(&t, &t.db, &["flows", "--limit", "0", "--format", "json"])?;
    let live_dns_json = tracker_on(&t, &t.db, &["dns", "--limit", "0", "--format", "json"])?;
    import(&t, &t.db, &wg0_file, BESIDE_LIVE_SOURCE, &[])?;
    assert_eq!(tracker_on(&t, &t.db, &["flows", "--limit", "0", "--format", "json"])?, live_json, "live flows");
    assert_eq!(tracker_on(&t, &t.db, &["dns", "--limit", "0", "--format", "json"])?, live_dns_json, "live DNS");
    assert_eq!(flows_on(&t, &t.db, Some(BESIDE_LIVE_SOURCE))?, wg0_rows, "wg0.pcap imported beside the live rows");

    // 3. vpn1.pcap: the live flows that crossed the veth to the internet.
    println!("{}", import(&t, &fresh, &vpn1_file, VPN1_SOURCE, &CLIENT_NETS)?);
    let vpn1_rows = flows_on(&t, &fresh, Some(VPN1_SOURCE))?;
    let vpn1_all = by_key("vpn1.pcap's flows", &vpn1_rows)?;
    let phone = |f: &Value| ip_eq(&f["client"], PHONE_V4.into()) || ip_eq(&f["client"], PHONE_V6.into());
    let vpn1_phone: BTreeMap<Key, &Value> =
        vpn1_all.iter().filter(|(_, f)| phone(f)).map(|(k, f)| (k.clone(), *f)).collect();
    let crossed: BTreeMap<Key, &Value> = live
        .iter()
        .filter(|(_, f)| plan.iter().any(|p| p.on_uplink && p.matches(f)))
        .map(|(k, f)| (k.clone(), *f))
        .collect();
    let (diffs, vpn1_clock) = flow_differences(&crossed, &vpn1_phone);
    assert_none("vpn1.pcap imported against the live flows that crossed it", &diffs);
    assert!(vpn1_clock <= CLOCK_TOLERANCE_MS, "vpn1.pcap's flow times differ from the live ones by {vpn1_clock} ms");
    let upstream = |e: &Value| {
        ip_eq(&e["resolver"], Resolver::Upstream.v4().into()) || ip_eq(&e["resolver"], Resolver::Upstream.v6().into())
    };
    let live_upstream: Vec<Value> = live_dns.iter().filter(|e| upstream(e)).cloned().collect();
    assert_eq!(
        dns_on(&t, &fresh, Some(VPN1_SOURCE), None)?,
        live_upstream,
        "vpn1.pcap's DNS log: the upstream resolver's"
    );

    // 4. tshark's conversations of each file.
    let mut matched = Vec::new();
    for (file, flows, l2) in [(&wg0_file, &wg0_flows, 0), (&vpn1_file, &vpn1_all, ETHERNET_HEADER)] {
        let convs = tshark_conversations(file)?;
        let (diffs, n) = tshark_differences(flows, &convs, l2);
        assert_none(&format!("{} imported against tshark", file.display()), &diffs);
        matched.push(n);
    }
    let tcp_udp = |m: &BTreeMap<Key, &Value>| m.keys().filter(|k| k.0 == "tcp" || k.0 == "udp").count();
    assert_eq!(matched, [tcp_udp(&wg0_flows), tcp_udp(&vpn1_all)], "tshark conversations matched per file");

    // 5. The imports as `tracker sources` lists them, and a second import of the same bytes.
    let sources = rows_on(&t, &fresh, &["sources"])?;
    let listed: Vec<(Value, Value, Value, Value)> = sources
        .iter()
        .map(|s| (s["source"].clone(), s["packets"].clone(), s["bytes"].clone(), s["state"].clone()))
        .collect();
    let size = |f: &Path| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
    let want: Vec<(Value, Value, Value, Value)> =
        [(WG0_SOURCE, wg0_frames, &wg0_file), (VPN1_SOURCE, vpn1_frames, &vpn1_file)]
            .into_iter()
            .map(|(s, n, f)| (s.into(), n.into(), size(f).into(), "complete".into()))
            .collect();
    assert_eq!(listed, want, "tracker sources: (source, packets, bytes, state), packets from capinfos");
    let copy = dir.join("wg0-copy.pcap");
    std::fs::copy(&wg0_file, &copy)?;
    let fresh_flows =
        |source| tracker_on(&t, &fresh, &["flows", "--limit", "0", "--source", source, "--format", "json"]);
    let state = || -> Result<(String, String, i64, i64, String)> {
        Ok((
            fresh_flows(WG0_SOURCE)?,
            fresh_flows(VPN1_SOURCE)?,
            count_rows(&fresh, "dns_queries")?,
            count_rows(&fresh, "flows")?,
            tracker_on(&t, &fresh, &["sources", "--format", "json"])?,
        ))
    };
    let before = state()?;
    for (file, source) in [(&wg0_file, WG0_SOURCE), (&copy, "another-name")] {
        let said = import(&t, &fresh, file, source, &CLIENT_NETS)?;
        assert!(
            said.contains("already imported") && said.contains(&format!("as source {WG0_SOURCE}")),
            "importing {} again as {source}: {said}",
            file.display()
        );
        assert!(state()? == before, "importing {} again as {source} changed the database", file.display());
    }
    // What was compared, for the log (`-- --nocapture`).
    for (k, f) in &live {
        let n = |k: &str| f[k].as_u64().unwrap_or_default();
        let s = |k: &str| f[k].as_str().unwrap_or("-").to_owned();
        println!(
            "{:<52} up {:>3} {:>5} down {:>3} {:>5}  {} ({}) {} {}{}",
            show_key(k),
            n("packets_up"),
            n("bytes_up"),
            n("packets_down"),
            n("bytes_down"),
            s("name"),
            s("name_source"),
            s("company"),
            s("app_protocol"),
            if vpn1_phone.contains_key(k) { ", also on the veth" } else { "" }
        );
    }
    println!("flow times: wg0.pcap within {wg0_clock} ms of the daemon's, vpn1.pcap within {vpn1_clock} ms");
    println!(
        "{} planned flows; wg0.pcap: {wg0_frames} frames, {} flows ({} TCP/UDP against tshark); vpn1.pcap: \
         {vpn1_frames} frames, {} flows ({} of the phone, {} TCP/UDP against tshark); {} DNS exchanges; {:.1} s",
        plan.len(),
        wg0_flows.len(),
        matched[0],
        vpn1_all.len(),
        vpn1_phone.len(),
        matched[1],
        live_dns.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
