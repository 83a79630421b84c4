//! The lab's DNS data, zone `lab.test`: the one source of truth for both the lab's resolvers
//! (their zone file is generated from [`RECORDS`] by [`zonefile`]) and the tests' ground truth
//! ([`resolve`] answers exactly as the resolvers do).
//!
//! | name | data | for |
//! |---|---|---|
//! | `web.lab.test` | A [`WEB_V4`], AAAA [`WEB_V6`] | a plain name |
//! | `www.lab.test` | CNAME `edge.cdn.lab.test` → CNAME `e1.cdn.lab.test` → A/AAAA [`CDN_V4`]/[`CDN_V6`] | a 3-level chain |
//! | `deep.lab.test` | CNAME `d1` → `d2` → `d3.cdn` → `e2.cdn.lab.test` → A/AAAA [`DEEP_V4`]/[`DEEP_V6`] | a 5-level chain |
//! | `many.lab.test` | 8 A ([`MANY_V4`]) and 8 AAAA ([`MANY_V6`]) | many answers |
//! | `shop.lab.test`, `blog.lab.test` | both A [`SHARED_V4`], AAAA [`SHARED_V6`] | one address, two names |
//! | `tls.lab.test` | A [`TLS_V4`], AAAA [`TLS_V6`] | the TLS server (SNI) |
//! | `nas.lab.test` | A [`LAN_V4`] (RFC 1918), AAAA [`LAN_V6`] (ULA) | private addresses: `local` |
//! | `ns.lab.test` | A [`VPN_TUN_V4`], AAAA [`VPN_TUN_V6`] | the on-host resolver (tunnel addresses) |
//! | anything else under `lab.test` | NXDOMAIN (e.g. [`NXDOMAIN_NAMES`]) | |
//!
//! Every public address above is an internet host of the lab: it serves HTTP on port 80 (and
//! TLS on 443, see [`crate::lab::TLS_PORT`]), so a client may connect to whichever address an
//! answer gives it. [`LAN_V4`]/[`LAN_V6`] are served too (a LAN behind the VPN host, which the
//! lab puts in the internet namespace for simplicity). The TTLs differ per name so that tests
//! can check which TTL a log reports.
//!
//! **The real world** ([`world`]): names of real companies (`www.apple.com`, `api.twitter.com`, a
//! CNAME chain from `images.apple.com` through Akamai's `edgekey.net` to `akamaiedge.net`, ...) and
//! one name no company owns (`www.example.org`), every one pointing at documentation addresses
//! that the lab's internet namespace serves ([`world_addrs`]). The resolvers serve them from a
//! root zone of their own ([`world_zonefile`]); the names' registrable domains
//! ([`WORLD_DOMAINS`]) are the only ones outside `lab.test` they answer for. No packet for these
//! names ever leaves the lab: the companies appear only in names, never as traffic targets.
//!
//! | name | data |
//! |---|---|
//! | `www.apple.com`, `gateway.icloud.com`, `www.google.com`, `api.twitter.com`, `graph.facebook.com`, `sdk.iad-01.braze.com`, `api.mparticle.com`, `www.netflix.com`, `www.example.org` | one A (198.51.100.61 to .68, and .70) and one AAAA (2001:db8:5::61 to ::68, and ::70) each |
//! | `images.apple.com` | CNAME `images.apple.com.edgekey.net` → CNAME `e1234.a.akamaiedge.net` → A/AAAA [`AKAMAI_V4`]/[`AKAMAI_V6`] |
//!
//! Every other name is refused by the lab's resolvers (they never recurse); a missing name under
//! one of [`WORLD_DOMAINS`] is NXDOMAIN.

use crate::lab::{VPN_TUN_V4, VPN_TUN_V6, WEB_V4, WEB_V6};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The zone's apex.
pub const ZONE: &str = "lab.test";
/// TTL of the SOA and NS records, and the negative-caching TTL (SOA minimum): the TTL of the
/// SOA record in an NXDOMAIN answer is the smaller of the two, i.e. this.
pub const SOA_TTL: u32 = 3600;
pub const NEGATIVE_TTL: u32 = 60;

/// A plain A + AAAA name for the lab's web server ([`WEB_V4`], [`WEB_V6`]).
pub const WEB_NAME: &str = "web.lab.test";

/// `www.lab.test` → `edge.cdn.lab.test` → `e1.cdn.lab.test` → [`CDN_V4`] / [`CDN_V6`].
pub const CHAIN: [&str; 3] = ["www.lab.test", "edge.cdn.lab.test", "e1.cdn.lab.test"];
pub const CDN_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 31);
pub const CDN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x31);

/// A longer chain: `deep.lab.test` through four CNAMEs to [`DEEP_V4`] / [`DEEP_V6`].
pub const DEEP_CHAIN: [&str; 5] = ["deep.lab.test", "d1.lab.test", "d2.lab.test", "d3.cdn.lab.test", "e2.cdn.lab.test"];
pub const DEEP_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 32);
pub const DEEP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x32);

/// A name with eight A and eight AAAA records.
pub const MANY_NAME: &str = "many.lab.test";
pub const MANY_V4: [Ipv4Addr; 8] = [
    Ipv4Addr::new(203, 0, 113, 101),
    Ipv4Addr::new(203, 0, 113, 102),
    Ipv4Addr::new(203, 0, 113, 103),
    Ipv4Addr::new(203, 0, 113, 104),
    Ipv4Addr::new(203, 0, 113, 105),
    Ipv4Addr::new(203, 0, 113, 106),
    Ipv4Addr::new(203, 0, 113, 107),
    Ipv4Addr::new(203, 0, 113, 108),
];
pub const MANY_V6: [Ipv6Addr; 8] = [
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x101),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x102),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x103),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x104),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x105),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x106),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x107),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x108),
];

/// Two names with the same addresses (shared hosting): only the HTTP Host header or the TLS
/// SNI tells which one a connection is for.
pub const SHARED_NAMES: [&str; 2] = ["shop.lab.test", "blog.lab.test"];
pub const SHARED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 40);
pub const SHARED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x40);

/// The TLS server's name (the CN and SAN of the lab's certificate) and addresses.
pub const TLS_NAME: &str = "tls.lab.test";
pub const TLS_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 43);
pub const TLS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x43);

/// A host on a private LAN behind the VPN host: whatever DNS says, flows to it are `local`.
pub const LAN_NAME: &str = "nas.lab.test";
pub const LAN_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
pub const LAN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x10);

/// The zone's name server, i.e. the on-host resolver on the VPN host's tunnel addresses.
pub const NS_NAME: &str = "ns.lab.test";

/// Names the zone does not have: the resolvers answer NXDOMAIN. (`cdn.lab.test`, by contrast,
/// exists as an empty non-terminal and answers NOERROR with no records.)
pub const NXDOMAIN_NAMES: [&str; 3] = ["nope.lab.test", "missing.cdn.lab.test", "x.y.z.lab.test"];

/// Record data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// The target, a name in this zone (lower case, no trailing dot).
    Cname(&'static str),
}

impl Data {
    /// The record type's mnemonic: "A", "AAAA", "CNAME".
    pub fn rtype(self) -> &'static str {
        match self {
            Data::A(_) => "A",
            Data::Aaaa(_) => "AAAA",
            Data::Cname(_) => "CNAME",
        }
    }

    /// The data in presentation form, as `tracker dns` prints it: the address, or the target
    /// name without the trailing dot.
    pub fn text(self) -> String {
        match self {
            Data::A(a) => a.to_string(),
            Data::Aaaa(a) => a.to_string(),
            Data::Cname(t) => t.to_owned(),
        }
    }

    pub fn address(self) -> Option<IpAddr> {
        match self {
            Data::A(a) => Some(a.into()),
            Data::Aaaa(a) => Some(a.into()),
            Data::Cname(_) => None,
        }
    }
}

/// One resource record (class IN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lower case, no trailing dot.
    pub name: &'static str,
    pub ttl: u32,
    pub data: Data,
}

const fn rec(name: &'static str, ttl: u32, data: Data) -> Record {
    Record { name, ttl, data }
}

/// TTLs, one per kind of name, all different.
pub const WEB_TTL: u32 = 300;
pub const CNAME_TTL: u32 = 600;
pub const CDN_TTL: u32 = 120;
pub const DEEP_TTL: u32 = 90;
pub const MANY_TTL: u32 = 60;
pub const SHARED_TTL: u32 = 240;
pub const TLS_TTL: u32 = 180;
pub const LAN_TTL: u32 = 900;
pub const NS_TTL: u32 = 3600;

/// Every record of the zone except the apex SOA and NS (see [`zonefile`]).
pub const RECORDS: &[Record] = &[
    rec(NS_NAME, NS_TTL, Data::A(VPN_TUN_V4)),
    rec(NS_NAME, NS_TTL, Data::Aaaa(VPN_TUN_V6)),
    rec(WEB_NAME, WEB_TTL, Data::A(WEB_V4)),
    rec(WEB_NAME, WEB_TTL, Data::Aaaa(WEB_V6)),
    rec(CHAIN[0], CNAME_TTL, Data::Cname(CHAIN[1])),
    rec(CHAIN[1], CNAME_TTL, Data::Cname(CHAIN[2])),
    rec(CHAIN[2], CDN_TTL, Data::A(CDN_V4)),
    rec(CHAIN[2], CDN_TTL, Data::Aaaa(CDN_V6)),
    rec(DEEP_CHAIN[0], CNAME_TTL, Data::Cname(DEEP_CHAIN[1])),
    rec(DEEP_CHAIN[1], CNAME_TTL, Data::Cname(DEEP_CHAIN[2])),
    rec(DEEP_CHAIN[2], CNAME_TTL, Data::Cname(DEEP_CHAIN[3])),
    rec(DEEP_CHAIN[3], CNAME_TTL, Data::Cname(DEEP_CHAIN[4])),
    rec(DEEP_CHAIN[4], DEEP_TTL, Data::A(DEEP_V4)),
    rec(DEEP_CHAIN[4], DEEP_TTL, Data::Aaaa(DEEP_V6)),
    rec(MANY_NAME, MANY_TTL, Data::A(MANY_V4[0])),
    rec(MANY_NAME, MANY_TTL, Data::A(MANY_V4[1])),
    rec(MANY_NAME, MANY_TTL, Data::A(MANY_V4[2])),
    rec(MANY_NAME, MANY_TTL, Data::A(MANY_V4[3])),
    rec(MANY_NAME, MANY_TTL, Data::A(MANY_V4[4])),
    rec(MANY_NAME, MANY_TTL, Data::A(MANY_V4[5])),
    rec(MANY_NAME, MANY_TTL, Data::A(MANY_V4[6])),
    rec(MANY_NAME, MANY_TTL, Data::A(MANY_V4[7])),
    rec(MANY_NAME, MANY_TTL, Data::Aaaa(MANY_V6[0])),
    rec(MANY_NAME, MANY_TTL, Data::Aaaa(MANY_V6[1])),
    rec(MANY_NAME, MANY_TTL, Data::Aaaa(MANY_V6[2])),
    rec(MANY_NAME, MANY_TTL, Data::Aaaa(MANY_V6[3])),
    rec(MANY_NAME, MANY_TTL, Data::Aaaa(MANY_V6[4])),
    rec(MANY_NAME, MANY_TTL, Data::Aaaa(MANY_V6[5])),
    rec(MANY_NAME, MANY_TTL, Data::Aaaa(MANY_V6[6])),
    rec(MANY_NAME, MANY_TTL, Data::Aaaa(MANY_V6[7])),
    rec(SHARED_NAMES[0], SHARED_TTL, Data::A(SHARED_V4)),
    rec(SHARED_NAMES[0], SHARED_TTL, Data::Aaaa(SHARED_V6)),
    rec(SHARED_NAMES[1], SHARED_TTL, Data::A(SHARED_V4)),
    rec(SHARED_NAMES[1], SHARED_TTL, Data::Aaaa(SHARED_V6)),
    rec(TLS_NAME, TLS_TTL, Data::A(TLS_V4)),
    rec(TLS_NAME, TLS_TTL, Data::Aaaa(TLS_V6)),
    rec(LAN_NAME, LAN_TTL, Data::A(LAN_V4)),
    rec(LAN_NAME, LAN_TTL, Data::Aaaa(LAN_V6)),
];

/// The real world's names a client connects to, each with one A and one AAAA record of its own.
pub const WWW_APPLE: &str = "www.apple.com";
pub const ICLOUD_GATEWAY: &str = "gateway.icloud.com";
pub const WWW_GOOGLE: &str = "www.google.com";
pub const TWITTER_API: &str = "api.twitter.com";
pub const FACEBOOK_GRAPH: &str = "graph.facebook.com";
pub const BRAZE_SDK: &str = "sdk.iad-01.braze.com";
pub const MPARTICLE_API: &str = "api.mparticle.com";
pub const WWW_NETFLIX: &str = "www.netflix.com";
/// A name no company of tracker's entity table owns: reported by its registrable domain.
pub const WWW_EXAMPLE: &str = "www.example.org";
/// A company name served by a CDN: `images.apple.com` → `images.apple.com.edgekey.net` →
/// `e1234.a.akamaiedge.net` → [`AKAMAI_V4`] / [`AKAMAI_V6`].
pub const AKAMAI_CHAIN: [&str; 3] = ["images.apple.com", "images.apple.com.edgekey.net", "e1234.a.akamaiedge.net"];
pub const AKAMAI_V4: Ipv4Addr = world_v4(69);
pub const AKAMAI_V6: Ipv6Addr = world_v6(0x69);

/// The names above with their own addresses, in [`world`] order.
pub const WORLD_HOSTS: [(&str, Ipv4Addr, Ipv6Addr); 9] = [
    (WWW_APPLE, world_v4(61), world_v6(0x61)),
    (ICLOUD_GATEWAY, world_v4(62), world_v6(0x62)),
    (WWW_GOOGLE, world_v4(63), world_v6(0x63)),
    (TWITTER_API, world_v4(64), world_v6(0x64)),
    (FACEBOOK_GRAPH, world_v4(65), world_v6(0x65)),
    (BRAZE_SDK, world_v4(66), world_v6(0x66)),
    (MPARTICLE_API, world_v4(67), world_v6(0x67)),
    (WWW_NETFLIX, world_v4(68), world_v6(0x68)),
    (WWW_EXAMPLE, world_v4(70), world_v6(0x70)),
];

/// `198.51.100.N`: the real world's IPv4 addresses (the IPv6 ones end in the same digits).
const fn world_v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

/// `2001:db8:5::N`: the real world's IPv6 addresses.
const fn world_v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, last)
}

/// A public resolver's DNS-over-HTTPS and DNS-over-TLS name (Google's), on addresses of its own
/// whose port 853 the lab serves once a test starts it ([`crate::Lab::start_dot`]): what
/// `tracker block-dns-bypass` refuses and stops. Not among [`WORLD_HOSTS`], which tests connect
/// to as ordinary web hosts.
pub const DNS_GOOGLE: &str = "dns.google";
pub const DNS_GOOGLE_V4: Ipv4Addr = world_v4(71);
pub const DNS_GOOGLE_V6: Ipv6Addr = world_v6(0x71);

/// TTLs of the real world: company names, CNAMEs into the CDN, the CDN's edge name.
pub const WORLD_TTL: u32 = 300;
pub const WORLD_CNAME_TTL: u32 = 3600;
pub const EDGE_TTL: u32 = 20;

/// The registrable domains the real world's names are in: the resolvers answer for these (and
/// `lab.test`) and refuse every other name.
pub const WORLD_DOMAINS: [&str; 12] = [
    "apple.com",
    "icloud.com",
    "google.com",
    "twitter.com",
    "facebook.com",
    "braze.com",
    "mparticle.com",
    "netflix.com",
    "example.org",
    "edgekey.net",
    "akamaiedge.net",
    DNS_GOOGLE,
];

/// Every record of the real world (see the module doc), in order: each host's A and AAAA, then
/// the CDN chain. The one table the resolvers' root zone ([`world_zonefile`]) and the tests'
/// expectations ([`resolve`]) come from.
pub fn world() -> Vec<Record> {
    let mut out = Vec::new();
    for (name, v4, v6) in WORLD_HOSTS {
        out.extend([rec(name, WORLD_TTL, Data::A(v4)), rec(name, WORLD_TTL, Data::Aaaa(v6))]);
    }
    out.extend([
        rec(AKAMAI_CHAIN[0], WORLD_CNAME_TTL, Data::Cname(AKAMAI_CHAIN[1])),
        rec(AKAMAI_CHAIN[1], WORLD_CNAME_TTL, Data::Cname(AKAMAI_CHAIN[2])),
        rec(AKAMAI_CHAIN[2], EDGE_TTL, Data::A(AKAMAI_V4)),
        rec(AKAMAI_CHAIN[2], EDGE_TTL, Data::Aaaa(AKAMAI_V6)),
        rec(DNS_GOOGLE, WORLD_TTL, Data::A(DNS_GOOGLE_V4)),
        rec(DNS_GOOGLE, WORLD_TTL, Data::Aaaa(DNS_GOOGLE_V6)),
    ]);
    out
}

/// The real world's names a client asks for: the hosts and the head of the CDN chain (not the
/// chain's inner names, which only CNAMEs lead to).
pub fn world_client_names() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = WORLD_HOSTS.iter().map(|h| h.0).collect();
    out.push(AKAMAI_CHAIN[0]);
    out
}

/// The real world's addresses, each once: the internet namespace serves them all.
pub fn world_addrs() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for a in world().iter().filter_map(|r| r.data.address()) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The root zone the resolvers serve the real world from: in one zone, unbound chases the CNAME
/// chain from `apple.com` through `edgekey.net` to `akamaiedge.net` as a recursive resolver
/// would (its `local-data` would answer the first CNAME alone).
pub fn world_zonefile() -> String {
    let mut z = String::new();
    let _ = writeln!(z, "; generated from tracker-tests' zone.rs (world); do not edit");
    let _ = writeln!(z, ". {SOA_TTL} IN SOA {NS_NAME}. hostmaster.{ZONE}. 1 3600 600 86400 {NEGATIVE_TTL}");
    let _ = writeln!(z, ". {SOA_TTL} IN NS {NS_NAME}.");
    write_records(&mut z, &world());
    z
}

/// The registrable domain of [`WORLD_DOMAINS`] that `name` (lower case) is in, if any.
pub fn world_domain_of(name: &str) -> Option<&'static str> {
    WORLD_DOMAINS.iter().copied().find(|d| name == *d || name.ends_with(&format!(".{d}")))
}

/// The names that have data of their own (not counting CNAME owners' targets twice), in zone
/// order without duplicates: what a test can query and expect NOERROR for.
pub fn names() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RECORDS {
        if !out.contains(&r.name) {
            out.push(r.name);
        }
    }
    out
}

/// The names a client would connect to by name (every name whose chain ends in addresses),
/// excluding the name server.
pub fn client_names() -> Vec<&'static str> {
    names().into_iter().filter(|&n| n != NS_NAME && !resolve(n, QType::A).addresses.is_empty()).collect()
}

/// Addresses of the zone that the lab must serve (HTTP on 80, TLS on 443) in its internet
/// namespace: every A/AAAA except the VPN host's tunnel addresses, each once.
pub fn server_addrs() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for r in RECORDS {
        if let Some(a) = r.data.address()
            && a != IpAddr::V4(VPN_TUN_V4)
            && a != IpAddr::V6(VPN_TUN_V6)
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// The zone file the lab's resolvers load (RFC 1035 master format, absolute names).
pub fn zonefile() -> String {
    let mut z = String::new();
    let _ = writeln!(z, "; generated from tracker-tests' zone.rs; do not edit");
    let _ = writeln!(z, "$ORIGIN {ZONE}.");
    let _ = writeln!(z, "{ZONE}. {SOA_TTL} IN SOA {NS_NAME}. hostmaster.{ZONE}. 1 3600 600 86400 {NEGATIVE_TTL}");
    let _ = writeln!(z, "{ZONE}. {SOA_TTL} IN NS {NS_NAME}.");
    write_records(&mut z, RECORDS);
    z
}

fn write_records(z: &mut String, records: &[Record]) {
    for r in records {
        let data = match r.data {
            Data::Cname(t) => format!("{t}."),
            d => d.text(),
        };
        let _ = writeln!(z, "{}. {} IN {} {}", r.name, r.ttl, r.data.rtype(), data);
    }
}

/// Query types the tests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    A,
    Aaaa,
}

impl QType {
    /// As `dig` takes it and `tracker dns` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
        }
    }

    fn matches(self, d: Data) -> bool {
        matches!((self, d), (QType::A, Data::A(_)) | (QType::Aaaa, Data::Aaaa(_)))
    }
}

/// One record of an answer section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub rtype: &'static str,
    pub ttl: u32,
    pub data: String,
}

/// What the lab's resolvers answer for a question, in `tracker dns`'s terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// "NOERROR", "NXDOMAIN", or "REFUSED" for a name outside `lab.test` and [`WORLD_DOMAINS`].
    pub rcode: &'static str,
    /// The answer section, in order: the CNAMEs of the chain, then the address records.
    pub answers: Vec<Answer>,
    /// CNAME targets from the question name, in order.
    pub cname_chain: Vec<String>,
    /// The A/AAAA addresses at the end of the chain, in zone order.
    pub addresses: Vec<IpAddr>,
    /// Smallest TTL among the address records.
    pub ttl: Option<u32>,
}

/// Whether `name` (lower case, no trailing dot) is in the tree of `records`: an owner of records,
/// the apex, or an empty non-terminal above an owner.
fn exists(records: &[Record], name: &str) -> bool {
    name == ZONE || records.iter().any(|r| r.name == name || r.name.ends_with(&format!(".{name}")))
}

/// The resolvers' answer for `name` (any case, optional trailing dot) and `qtype`, chasing
/// CNAMEs inside the zone (or inside the real world, [`world`]) as the resolvers do. A name
/// outside `lab.test` and [`WORLD_DOMAINS`] is REFUSED, with no answers.
pub fn resolve(name: &str, qtype: QType) -> Resolution {
    let mut current = name.trim_end_matches('.').to_ascii_lowercase();
    let mut res =
        Resolution { rcode: "NOERROR", answers: Vec::new(), cname_chain: Vec::new(), addresses: Vec::new(), ttl: None };
    let world = world();
    let records: &[Record] = if current == ZONE || current.ends_with(&format!(".{ZONE}")) {
        RECORDS
    } else if world_domain_of(&current).is_some() {
        &world
    } else {
        res.rcode = "REFUSED";
        return res;
    };
    // A chain longer than the zone cannot be, but a bound keeps a mistake in the table finite.
    for _ in 0..=records.len() {
        if !exists(records, &current) {
            res.rcode = "NXDOMAIN";
            return res;
        }
        let here: Vec<&Record> = records.iter().filter(|r| r.name == current).collect();
        if let Some(cname) = here.iter().find_map(|r| match r.data {
            Data::Cname(t) => Some((r, t)),
            _ => None,
        }) {
            let (r, target) = cname;
            res.answers.push(Answer { name: current.clone(), rtype: "CNAME", ttl: r.ttl, data: target.to_owned() });
            res.cname_chain.push(target.to_owned());
            current = target.to_owned();
            continue;
        }
        for r in here.into_iter().filter(|r| qtype.matches(r.data)) {
            res.answers.push(Answer { name: current.clone(), rtype: r.data.rtype(), ttl: r.ttl, data: r.data.text() });
            res.addresses.extend(r.data.address());
            res.ttl = Some(res.ttl.map_or(r.ttl, |t| t.min(r.ttl)));
        }
        return res;
    }
    panic!("CNAME loop in the lab's DNS data at {current}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_resolve_to_their_addresses() {
        let r = resolve("WWW.lab.test.", QType::A);
        assert_eq!(r.rcode, "NOERROR");
        assert_eq!(r.cname_chain, ["edge.cdn.lab.test", "e1.cdn.lab.test"]);
        assert_eq!(r.addresses, [IpAddr::V4(CDN_V4)]);
        assert_eq!(r.ttl, Some(CDN_TTL));
        assert_eq!(r.answers.len(), 3);
        let d = resolve(DEEP_CHAIN[0], QType::Aaaa);
        assert_eq!(d.cname_chain, DEEP_CHAIN[1..]);
        assert_eq!(d.addresses, [IpAddr::V6(DEEP_V6)]);
    }

    #[test]
    fn nxdomain_and_empty_non_terminals() {
        for n in NXDOMAIN_NAMES {
            assert_eq!(resolve(n, QType::A).rcode, "NXDOMAIN", "{n}");
        }
        let ent = resolve("cdn.lab.test", QType::A);
        assert_eq!((ent.rcode, ent.answers.len()), ("NOERROR", 0));
        assert_eq!(resolve(LAN_NAME, QType::A).addresses, [IpAddr::V4(LAN_V4)]);
    }

    #[test]
    fn many_has_eight_of_each() {
        assert_eq!(resolve(MANY_NAME, QType::A).addresses.len(), 8);
        assert_eq!(resolve(MANY_NAME, QType::Aaaa).addresses.len(), 8);
    }

    #[test]
    fn zonefile_has_every_record() {
        let z = zonefile();
        assert_eq!(z.lines().filter(|l| l.contains(" IN ")).count(), RECORDS.len() + 2);
        assert!(z.contains("www.lab.test. 600 IN CNAME edge.cdn.lab.test.\n"));
    }

    #[test]
    fn the_real_world_resolves_through_the_cdn_chain() {
        let r = resolve("Images.Apple.com.", QType::Aaaa);
        assert_eq!(r.rcode, "NOERROR");
        assert_eq!(r.cname_chain, AKAMAI_CHAIN[1..]);
        assert_eq!(r.addresses, [IpAddr::V6(AKAMAI_V6)]);
        assert_eq!(r.ttl, Some(EDGE_TTL));
        assert_eq!(r.answers.len(), 3);
        for (name, v4, v6) in WORLD_HOSTS {
            assert_eq!(resolve(name, QType::A).addresses, [IpAddr::V4(v4)], "{name}");
            assert_eq!(resolve(name, QType::Aaaa).addresses, [IpAddr::V6(v6)], "{name}");
            assert!(world_domain_of(name).is_some(), "{name} is in no world domain");
        }
        assert_eq!(resolve("nope.apple.com", QType::A).rcode, "NXDOMAIN");
        assert_eq!(resolve("apple.com", QType::A).answers, []);
        assert_eq!(resolve("www.evilapple.com", QType::A).rcode, "REFUSED");
        assert_eq!(resolve("com", QType::A).rcode, "REFUSED");
        // Every world address is new: none is the zone's, and none repeats.
        let w = world_addrs();
        // One A and one AAAA for each name the clients use, and for dns.google (the DoH resolver).
        assert_eq!(w.len(), 2 * (world_client_names().len() + 1));
        assert!(w.iter().all(|a| !server_addrs().contains(a)));
        assert!(world_zonefile().contains("images.apple.com.edgekey.net. 3600 IN CNAME e1234.a.akamaiedge.net.\n"));
        assert_eq!(world_client_names().len(), 10);
    }

    #[test]
    fn server_addrs_are_unique_and_exclude_the_tunnel() {
        let a = server_addrs();
        assert!(!a.contains(&IpAddr::V4(VPN_TUN_V4)));
        let mut d = a.clone();
        d.sort();
        d.dedup();
        assert_eq!(a.len(), d.len());
        // web, cdn, deep, 16 many, shared, tls, lan: two families each except many.
        assert_eq!(a.len(), 2 * 6 + 16);
    }
}
