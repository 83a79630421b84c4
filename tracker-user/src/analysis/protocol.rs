//! Application-protocol classification of a flow from its first payload bytes and its ports,
//! with how it was decided and whether the protocol encrypts what it carries.
//!
//! The kernel hands over each flow's first payload in each direction (up to 1280 bytes); the
//! first bytes of most protocols are fixed by their specifications (a TLS record header, a QUIC
//! long header's version, an SSH banner, STUN's magic cookie), so a payload decides the protocol
//! where it can. Where no payload decides, the server's well-known port does, and the result
//! says so ([`Decided::Port`]): a port is a convention, not evidence.

use std::fmt;

use tracker_common::{IPPROTO_TCP, IPPROTO_UDP};

use super::{dns, http, tls};

/// The application protocols tracker tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppProtocol {
    Tls,
    Quic,
    Http,
    Dns,
    /// DNS over TLS (RFC 7858): TLS on port 853.
    Dot,
    /// DNS over QUIC (RFC 9250): QUIC on port 853.
    Doq,
    Ssh,
    Ntp,
    Stun,
    WireGuard,
    OpenVpn,
    /// IPsec's key exchange (IKEv2, RFC 7296) and its NAT-traversal port.
    Ike,
    Dtls,
    Unknown,
}

/// Whether a protocol hides what it carries from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encryption {
    Encrypted,
    Unencrypted,
    /// The protocol is not known, so neither is this.
    Unknown,
}

/// What decided a flow's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decided {
    /// The first payload's bytes matched the protocol's fixed header.
    Payload,
    /// No payload decided; the server's well-known port did.
    Port,
    /// Neither: the protocol is unknown.
    Nothing,
}

/// A flow's classification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    pub protocol: AppProtocol,
    pub decided: Decided,
}

/// Every protocol with its stable name, its encryption and its well-known ports, in one table.
const PROTOCOLS: [(AppProtocol, &str, Encryption); 14] = [
    (AppProtocol::Tls, "tls", Encryption::Encrypted),
    (AppProtocol::Quic, "quic", Encryption::Encrypted),
    (AppProtocol::Http, "http", Encryption::Unencrypted),
    (AppProtocol::Dns, "dns", Encryption::Unencrypted),
    (AppProtocol::Dot, "dot", Encryption::Encrypted),
    (AppProtocol::Doq, "doq", Encryption::Encrypted),
    (AppProtocol::Ssh, "ssh", Encryption::Encrypted),
    (AppProtocol::Ntp, "ntp", Encryption::Unencrypted),
    // STUN's messages (addresses, transaction ids) travel in clear; the media they set up may
    // be encrypted, but that is another flow.
    (AppProtocol::Stun, "stun", Encryption::Unencrypted),
    (AppProtocol::WireGuard, "wireguard", Encryption::Encrypted),
    (AppProtocol::OpenVpn, "openvpn", Encryption::Encrypted),
    (AppProtocol::Ike, "ike", Encryption::Encrypted),
    (AppProtocol::Dtls, "dtls", Encryption::Encrypted),
    (AppProtocol::Unknown, "unknown", Encryption::Unknown),
];

/// Server ports that decide a protocol when no payload does: (transport, port, protocol).
/// Only IANA assignments that nearly every use follows.
const WELL_KNOWN_PORTS: [(u8, u16, AppProtocol); 16] = [
    (IPPROTO_TCP, 443, AppProtocol::Tls),
    (IPPROTO_UDP, 443, AppProtocol::Quic),
    (IPPROTO_TCP, 80, AppProtocol::Http),
    (IPPROTO_UDP, 53, AppProtocol::Dns),
    (IPPROTO_TCP, 53, AppProtocol::Dns),
    (IPPROTO_TCP, 853, AppProtocol::Dot),
    (IPPROTO_UDP, 853, AppProtocol::Doq),
    (IPPROTO_TCP, 22, AppProtocol::Ssh),
    (IPPROTO_UDP, 123, AppProtocol::Ntp),
    (IPPROTO_UDP, 3478, AppProtocol::Stun),
    (IPPROTO_TCP, 3478, AppProtocol::Stun),
    (IPPROTO_UDP, 51820, AppProtocol::WireGuard),
    (IPPROTO_UDP, 1194, AppProtocol::OpenVpn),
    (IPPROTO_TCP, 1194, AppProtocol::OpenVpn),
    (IPPROTO_UDP, 500, AppProtocol::Ike),
    (IPPROTO_UDP, 4500, AppProtocol::Ike),
];

/// The port DoT and DoQ share (RFC 7858, RFC 9250).
const DNS_OVER_SECURE_PORT: u16 = 853;
/// The ports of the protocols whose payloads only confirm their port (see [`from_payload`]).
const DNS_PORT: u16 = 53;
const NTP_PORT: u16 = 123;
const OPENVPN_PORT: u16 = 1194;

/// STUN's magic cookie, bytes 4..8 of every RFC 5389 message.
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// STUN's fixed header length.
const STUN_HEADER_LEN: usize = 20;

/// QUIC versions whose long headers tracker recognises: v1 (RFC 9000), v2 (RFC 9369), and the
/// IETF drafts (0xff0000xx), which some stacks still offer.
const QUIC_V1: u32 = 0x0000_0001;
const QUIC_V2: u32 = 0x6b33_43cf;
const QUIC_DRAFT_PREFIX: u32 = 0xff00_0000;

/// WireGuard message types and their exact lengths (the protocol's whitepaper, §5.4): a
/// handshake initiation, response and cookie reply have one fixed size; transport data is at
/// least its 16-byte header plus a 16-byte tag.
const WIREGUARD_FIXED: [(u8, usize); 3] = [(1, 148), (2, 92), (3, 64)];
const WIREGUARD_DATA: u8 = 4;
const WIREGUARD_DATA_MIN: usize = 32;

/// OpenVPN's hard-reset opcodes (v2: 7 from the client, 8 from the server), in the top five
/// bits of the first byte of a UDP packet (no length prefix on UDP).
const OPENVPN_HARD_RESET: [u8; 2] = [7, 8];

/// NTP's mode field values for a client request and a server reply (RFC 5905 §7.3), and the
/// versions in use.
const NTP_MODES: [u8; 2] = [3, 4];
const NTP_VERSIONS: [u8; 2] = [3, 4];
const NTP_PACKET_LEN: usize = 48;

/// SSH's identification string (RFC 4253 §4.2).
const SSH_BANNER: &[u8] = b"SSH-";

impl AppProtocol {
    fn entry(self) -> &'static (AppProtocol, &'static str, Encryption) {
        // Every variant has exactly one row (a unit test checks).
        PROTOCOLS.iter().find(|(p, ..)| *p == self).unwrap_or(&PROTOCOLS[PROTOCOLS.len() - 1])
    }

    /// Stable lower-case name, for storage and output.
    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    /// Whether this protocol encrypts what it carries.
    pub fn encryption(self) -> Encryption {
        self.entry().2
    }

    /// The protocol stored under `name` (from [`AppProtocol::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        PROTOCOLS.iter().find(|(_, n, _)| *n == name).map(|(p, ..)| *p)
    }

    /// Every protocol, in table order.
    pub fn all() -> impl Iterator<Item = AppProtocol> {
        PROTOCOLS.iter().map(|(p, ..)| *p)
    }
}

impl fmt::Display for AppProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Encryption {
    /// Stable lower-case name, for storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Encrypted => "encrypted",
            Self::Unencrypted => "unencrypted",
            Self::Unknown => "unknown",
        }
    }
}

impl Decided {
    /// Stable lower-case name, for storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payload => "payload",
            Self::Port => "port",
            Self::Nothing => "nothing",
        }
    }
}

/// Classifies a flow of IP protocol `transport` to server port `remote_port` from its first
/// payload up (`first_up`, the client's) and down (`first_down`, the server's), whichever
/// decide; the client's first, since it speaks first in nearly every protocol here.
pub fn classify(transport: u8, remote_port: u16, first_up: Option<&[u8]>, first_down: Option<&[u8]>) -> Classification {
    let up = first_up.and_then(|p| from_payload(transport, remote_port, p));
    let down = first_down.and_then(|p| from_payload(transport, remote_port, p));
    decide(transport, remote_port, up, down)
}

/// The protocol one payload of a flow of IP protocol `transport` to server port `remote_port`
/// shows, if any: what the daemon keeps of a first payload, so it never holds the bytes.
pub fn payload_protocol(transport: u8, remote_port: u16, payload: &[u8]) -> Option<AppProtocol> {
    from_payload(transport, remote_port, payload)
}

/// A flow's classification from what its first payloads showed ([`payload_protocol`]) up and
/// down, the client's first; failing both, from the server's well-known port.
pub fn decide(transport: u8, remote_port: u16, up: Option<AppProtocol>, down: Option<AppProtocol>) -> Classification {
    if let Some(protocol) = up.or(down) {
        return Classification { protocol: on_port(protocol, remote_port), decided: Decided::Payload };
    }
    match WELL_KNOWN_PORTS.iter().find(|(t, port, _)| *t == transport && *port == remote_port) {
        Some(&(.., protocol)) => Classification { protocol, decided: Decided::Port },
        None => Classification { protocol: AppProtocol::Unknown, decided: Decided::Nothing },
    }
}

/// TLS and QUIC to the DNS-over-secure-transport port are DoT and DoQ.
fn on_port(protocol: AppProtocol, remote_port: u16) -> AppProtocol {
    match (protocol, remote_port) {
        (AppProtocol::Tls, DNS_OVER_SECURE_PORT) => AppProtocol::Dot,
        (AppProtocol::Quic, DNS_OVER_SECURE_PORT) => AppProtocol::Doq,
        (p, _) => p,
    }
}

/// The protocol one payload's bytes show, if any. Signatures with a magic number or a fixed
/// layout (TLS, HTTP, SSH, STUN, DTLS, QUIC, WireGuard) count on any port; those with none (a
/// DNS header, NTP's first byte, OpenVPN's opcode) only confirm their own port, since many
/// short binary payloads would pass them: in the robustness captures, DNS queries to port 53
/// passed the NTP and OpenVPN tests. On port 53 DNS is tried first, for the same reason.
fn from_payload(transport: u8, remote_port: u16, p: &[u8]) -> Option<AppProtocol> {
    match transport {
        IPPROTO_TCP => {
            if remote_port == DNS_PORT && is_dns_over_tcp(p) {
                Some(AppProtocol::Dns)
            } else if tls::looks_like_tls(p) {
                Some(AppProtocol::Tls)
            } else if http::looks_like_http(p) {
                Some(AppProtocol::Http)
            } else if p.starts_with(SSH_BANNER) {
                Some(AppProtocol::Ssh)
            } else if is_stun(p) {
                Some(AppProtocol::Stun)
            } else {
                None
            }
        }
        IPPROTO_UDP => {
            if remote_port == DNS_PORT && dns::parse(p, dns::Transport::Udp).is_ok() {
                Some(AppProtocol::Dns)
            } else if is_stun(p) {
                Some(AppProtocol::Stun)
            } else if is_dtls(p) {
                Some(AppProtocol::Dtls)
            } else if is_quic_long_header(p) {
                Some(AppProtocol::Quic)
            } else if is_wireguard(p) {
                Some(AppProtocol::WireGuard)
            } else if remote_port == NTP_PORT && is_ntp(p) {
                Some(AppProtocol::Ntp)
            } else if remote_port == OPENVPN_PORT && is_openvpn(p) {
                Some(AppProtocol::OpenVpn)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// RFC 5389 §6: the two top bits zero, the magic cookie, and a length that is the rest of the
/// message in 4-byte units.
fn is_stun(p: &[u8]) -> bool {
    match p {
        [t0, _, l0, l1, c0, c1, c2, c3, ..] if p.len() >= STUN_HEADER_LEN => {
            let len = usize::from(u16::from_be_bytes([*l0, *l1]));
            t0 & 0xc0 == 0
                && [*c0, *c1, *c2, *c3] == STUN_MAGIC_COOKIE
                && len.is_multiple_of(4)
                && len == p.len() - STUN_HEADER_LEN
        }
        _ => false,
    }
}

/// A DTLS record (RFC 9147 §4, RFC 6347 §4.1): handshake content type and a DTLS version
/// (1.0 = 0xfeff, 1.2 = 0xfefd; 1.3 keeps 1.2's on the wire).
fn is_dtls(p: &[u8]) -> bool {
    matches!(p, [0x16, 0xfe, 0xff | 0xfd, ..]) && p.len() >= 13
}

/// A QUIC long header (RFC 8999 §5.1, RFC 9000 §17.2): header form and fixed bit set, then a
/// known version. A version-negotiation packet (version 0) is QUIC too.
fn is_quic_long_header(p: &[u8]) -> bool {
    let [first, v0, v1, v2, v3, ..] = p else { return false };
    let version = u32::from_be_bytes([*v0, *v1, *v2, *v3]);
    let known = version == QUIC_V1 || version == QUIC_V2 || version & 0xffff_ff00 == QUIC_DRAFT_PREFIX || version == 0;
    first & 0x80 != 0 && (first & 0x40 != 0 || version == 0) && known
}

/// A WireGuard message: its type byte, three zero reserved bytes, and the type's length.
fn is_wireguard(p: &[u8]) -> bool {
    let [kind, 0, 0, 0, ..] = p else { return false };
    WIREGUARD_FIXED.iter().any(|&(k, len)| *kind == k && p.len() == len)
        || (*kind == WIREGUARD_DATA && p.len() >= WIREGUARD_DATA_MIN && p.len().is_multiple_of(16))
}

/// An NTP packet: version 3 or 4, client or server mode, at least the 48-byte header.
fn is_ntp(p: &[u8]) -> bool {
    let Some(&first) = p.first() else { return false };
    p.len() >= NTP_PACKET_LEN && NTP_VERSIONS.contains(&(first >> 3 & 0x07)) && NTP_MODES.contains(&(first & 0x07))
}

/// An OpenVPN UDP hard reset: the opcode, key id 0, and the 8-byte session id after it.
fn is_openvpn(p: &[u8]) -> bool {
    let Some(&first) = p.first() else { return false };
    OPENVPN_HARD_RESET.contains(&(first >> 3)) && first & 0x07 == 0 && p.len() >= 14
}

/// DNS over TCP (RFC 1035 §4.2.2): a 2-byte length equal to the rest, then a message that
/// parses.
fn is_dns_over_tcp(p: &[u8]) -> bool {
    let [l0, l1, rest @ ..] = p else { return false };
    usize::from(u16::from_be_bytes([*l0, *l1])) == rest.len() && dns::parse(p, dns::Transport::Tcp).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(port: u16, p: &[u8]) -> Classification {
        classify(IPPROTO_UDP, port, Some(p), None)
    }

    fn tcp(port: u16, p: &[u8]) -> Classification {
        classify(IPPROTO_TCP, port, Some(p), None)
    }

    const fn by_payload(protocol: AppProtocol) -> Classification {
        Classification { protocol, decided: Decided::Payload }
    }

    #[test]
    fn every_protocol_has_one_row_and_names_round_trip() {
        let all: Vec<_> = AppProtocol::all().collect();
        assert_eq!(all.len(), PROTOCOLS.len());
        for p in all {
            assert_eq!(PROTOCOLS.iter().filter(|(q, ..)| *q == p).count(), 1, "{p:?}");
            assert_eq!(AppProtocol::from_name(p.as_str()), Some(p));
        }
        assert_eq!(AppProtocol::from_name("gopher"), None);
    }

    #[test]
    fn tls_and_dot_by_the_record_header() {
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00];
        assert_eq!(tcp(443, &hello), by_payload(AppProtocol::Tls));
        assert_eq!(tcp(8443, &hello), by_payload(AppProtocol::Tls), "TLS on any port");
        assert_eq!(tcp(853, &hello), by_payload(AppProtocol::Dot));
        assert_eq!(AppProtocol::Tls.encryption(), Encryption::Encrypted);
    }

    #[test]
    fn quic_v1_v2_drafts_and_doq() {
        let mut initial = vec![0xc3, 0, 0, 0, 1, 8];
        initial.resize(1200, 0);
        assert_eq!(udp(443, &initial), by_payload(AppProtocol::Quic));
        assert_eq!(udp(853, &initial), by_payload(AppProtocol::Doq));
        initial[1..5].copy_from_slice(&QUIC_V2.to_be_bytes());
        assert_eq!(udp(443, &initial), by_payload(AppProtocol::Quic));
        initial[1..5].copy_from_slice(&0xff00_001d_u32.to_be_bytes());
        assert_eq!(udp(4433, &initial), by_payload(AppProtocol::Quic));
        // An unknown version is not taken for QUIC on payload; port 443 still says QUIC, as a
        // port.
        initial[1..5].copy_from_slice(&0x1234_5678_u32.to_be_bytes());
        assert_eq!(udp(443, &initial), Classification { protocol: AppProtocol::Quic, decided: Decided::Port });
        assert_eq!(udp(4433, &initial).protocol, AppProtocol::Unknown);
    }

    #[test]
    fn http_ssh_and_clear_text() {
        assert_eq!(tcp(8080, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), by_payload(AppProtocol::Http));
        assert_eq!(tcp(2222, b"SSH-2.0-OpenSSH_9.6\r\n"), by_payload(AppProtocol::Ssh));
        assert_eq!(AppProtocol::Http.encryption(), Encryption::Unencrypted);
        assert_eq!(AppProtocol::Ssh.encryption(), Encryption::Encrypted);
    }

    #[test]
    fn stun_needs_the_cookie_and_a_consistent_length() {
        let mut binding = vec![0x00, 0x01, 0x00, 0x00];
        binding.extend(STUN_MAGIC_COOKIE);
        binding.extend([7u8; 12]);
        assert_eq!(udp(19302, &binding), by_payload(AppProtocol::Stun));
        let mut wrong_len = binding.clone();
        wrong_len[3] = 4;
        assert_eq!(udp(19302, &wrong_len).protocol, AppProtocol::Unknown);
    }

    #[test]
    fn wireguard_by_type_and_exact_length() {
        let mut init = vec![1, 0, 0, 0];
        init.resize(148, 0xaa);
        assert_eq!(udp(51821, &init), by_payload(AppProtocol::WireGuard));
        init.push(0);
        assert_eq!(udp(51821, &init).protocol, AppProtocol::Unknown, "149 bytes is no initiation");
        let mut data = vec![4, 0, 0, 0];
        data.resize(64, 0x55);
        assert_eq!(udp(51821, &data), by_payload(AppProtocol::WireGuard));
    }

    #[test]
    fn ntp_dtls_openvpn_and_dns() {
        let mut ntp = vec![0x23]; // version 4, mode 3 (client)
        ntp.resize(48, 0);
        assert_eq!(udp(123, &ntp), by_payload(AppProtocol::Ntp));
        assert_eq!(udp(9999, &ntp).protocol, AppProtocol::Unknown, "NTP's first byte is no evidence elsewhere");
        let dtls = [0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20];
        assert_eq!(udp(5684, &dtls), by_payload(AppProtocol::Dtls));
        let mut reset = vec![7 << 3];
        reset.resize(14, 1);
        assert_eq!(udp(1194, &reset), by_payload(AppProtocol::OpenVpn));
        assert_eq!(udp(9999, &reset).protocol, AppProtocol::Unknown);
        // A query for example.com A.
        let query = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o',
            b'm', 0, 0, 1, 0, 1,
        ];
        assert_eq!(udp(53, &query), by_payload(AppProtocol::Dns));
        assert_eq!(udp(7000, &query).protocol, AppProtocol::Unknown, "DNS only on its port");
        let mut tcp_query = (query.len() as u16).to_be_bytes().to_vec();
        tcp_query.extend(query);
        assert_eq!(tcp(53, &tcp_query), by_payload(AppProtocol::Dns));
    }

    #[test]
    fn ports_decide_only_without_a_deciding_payload_and_say_so() {
        assert_eq!(
            classify(IPPROTO_TCP, 443, None, None),
            Classification { protocol: AppProtocol::Tls, decided: Decided::Port }
        );
        assert_eq!(classify(IPPROTO_UDP, 123, Some(b"xx"), None).decided, Decided::Port);
        // The server's first payload decides when the client's does not (SSH servers speak first).
        assert_eq!(
            classify(IPPROTO_TCP, 2222, Some(b"\x00\x01"), Some(b"SSH-2.0-x\r\n")),
            by_payload(AppProtocol::Ssh)
        );
        // Plain HTTP on 443 is HTTP: the payload outranks the port.
        assert_eq!(tcp(443, b"GET / HTTP/1.1\r\n\r\n"), by_payload(AppProtocol::Http));
        let unknown = classify(IPPROTO_TCP, 4000, Some(b"hello"), None);
        assert_eq!(unknown, Classification { protocol: AppProtocol::Unknown, decided: Decided::Nothing });
        assert_eq!(unknown.protocol.encryption(), Encryption::Unknown);
        // ICMP and other transports have no application protocol here.
        assert_eq!(classify(1, 0, Some(b"ping"), None).protocol, AppProtocol::Unknown);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..300 {
            let p: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for t in [IPPROTO_TCP, IPPROTO_UDP, 1] {
                let _ = classify(t, 443, Some(&p), Some(&p));
            }
        }
    }
}
