//! Hostile DNS: raw DNS messages a careless parser chokes on, and a rogue resolver in the lab's
//! internet namespace that answers the phone's queries with them.
//!
//! The messages are built byte by byte here (no DNS library would write them): a
//! compression-pointer loop in the question or in an answer name, a name of the maximum length
//! (255 octets on the wire), labels full of binary bytes and presentation-format specials,
//! random garbage, and a header cut short. The rogue resolver ([`udp_exchange`],
//! [`tcp_exchange`]) binds port 53 of an internet host, so its replies cross the VPN host's
//! WireGuard interface towards the phone, where tracker sees them as DNS responses.
//!
//! [`presentation`] renders a name the way tracker promises to (lower case, no trailing dot,
//! `\DDD` for bytes outside printable ASCII, `\` before `.`, `\` and `"();@$` inside labels),
//! so tests can say exactly which name a log entry must carry.

use crate::lab::{Lab, Ns};
use anyhow::{Context, Result, bail, ensure};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// The domain every hostile name ends in (`.example` is reserved, RFC 2606).
pub const HOSTILE_DOMAIN: [&[u8]; 2] = [b"hostile", b"example"];
/// The address the rogue resolver's answers carry in their A records.
pub const HOSTILE_ANSWER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
/// TTL of those A records.
pub const HOSTILE_TTL: u32 = 77;
/// How long the rogue resolver and the phone wait for each other.
const WAIT: Duration = Duration::from_secs(3);

pub const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// QR (response), RD, RA; opcode QUERY, rcode NOERROR.
const RESPONSE_FLAGS: u16 = 0x8180;
/// RD only: a standard recursive query.
const QUERY_FLAGS: u16 = 0x0100;

/// A name as its labels (without the root label).
pub type Labels = Vec<Vec<u8>>;

fn labels(parts: &[&[u8]]) -> Labels {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// `first.hostile.example`.
pub fn hostile_name(first: &str) -> Labels {
    let mut l = vec![first.as_bytes().to_vec()];
    l.extend(labels(&HOSTILE_DOMAIN));
    l
}

/// A name of exactly 255 octets on the wire (the RFC 1035 maximum), ending in
/// `hostile.example`: three 63-byte labels and one of 45 bytes before it. Its presentation form
/// is 253 characters.
pub fn max_length_name() -> Labels {
    let mut l = vec![vec![b'a'; 63], vec![b'b'; 63], vec![b'c'; 63], vec![b'd'; 45]];
    l.extend(labels(&HOSTILE_DOMAIN));
    debug_assert_eq!(wire_name(&l).len(), 255);
    l
}

/// A name whose labels hold NUL, BEL, 0xff, a dot, a backslash, a space, upper case and HTML:
/// legal on the wire (a label is any 1..=63 bytes), dangerous in a terminal or a web page.
pub fn binary_name() -> Labels {
    let parts: [&[u8]; 5] = [b"\x00\x07\xff", b"dot.in.label", b"back\\slash", b"sp ace", b"<SCRIPT>alert(1)</SCRIPT>"];
    let mut l = labels(&parts);
    l.extend(labels(&HOSTILE_DOMAIN));
    l
}

/// `labels` in tracker's canonical presentation form (see the module docs).
pub fn presentation(labels: &[Vec<u8>]) -> String {
    if labels.is_empty() {
        return ".".to_owned();
    }
    let render = |label: &Vec<u8>| {
        let mut out = String::new();
        for &b in &label.to_ascii_lowercase() {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out
    };
    labels.iter().map(render).collect::<Vec<_>>().join(".")
}

/// `labels` on the wire, uncompressed, with the root label.
pub fn wire_name(labels: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in labels {
        assert!((1..=63).contains(&l.len()), "label of {} bytes", l.len());
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out
}

fn header(id: u16, flags: u16, qd: u16, an: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    for v in [id, flags, qd, an, 0, 0] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h
}

fn question(out: &mut Vec<u8>, name: &[Vec<u8>], qtype: u16) {
    out.extend(wire_name(name));
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
}

/// An A record's type, class, TTL, length and address (after its owner name).
fn a_rdata(out: &mut Vec<u8>, addr: Ipv4Addr) {
    out.extend_from_slice(&TYPE_A.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&HOSTILE_TTL.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&addr.octets());
}

/// A standard query (RD set) for `name`, type `qtype`.
pub fn query(id: u16, name: &[Vec<u8>], qtype: u16) -> Vec<u8> {
    let mut m = header(id, QUERY_FLAGS, 1, 0);
    question(&mut m, name, qtype);
    m
}

/// `name` (`a.example`) as its labels.
pub fn labels_of(name: &str) -> Vec<Vec<u8>> {
    name.split('.').map(|l| l.as_bytes().to_vec()).collect()
}

/// A question section for `name`: its wire form, type and class IN.
pub fn question_for(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    question(&mut q, &labels_of(name), qtype);
    q
}

/// A standard query for `name` (`a.example`), as [`query`] builds it.
pub fn query_for(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    query(id, &labels_of(name), qtype)
}

/// `query` with the EDNS OPT record a stub resolver such as dig adds (UDP size 1232, no
/// options): the record a reply must not echo blindly.
pub fn with_edns(mut query: Vec<u8>) -> Vec<u8> {
    let ar = u16::from_be_bytes([query[10], query[11]]) + 1;
    query[10..12].copy_from_slice(&ar.to_be_bytes());
    query.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    query
}

/// The DNS id of a message (0 when it is shorter than 2 bytes).
pub fn id_of(message: &[u8]) -> u16 {
    match message {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// A well-formed response: the question `name` and one A record [`HOSTILE_ANSWER_V4`] whose
/// owner is a compression pointer to the question name.
pub fn a_response(id: u16, name: &[Vec<u8>]) -> Vec<u8> {
    let mut m = header(id, RESPONSE_FLAGS, 1, 1);
    question(&mut m, name, TYPE_A);
    m.extend_from_slice(&[0xc0, 12]);
    a_rdata(&mut m, HOSTILE_ANSWER_V4);
    m
}

/// A response whose question name is label `a` followed by a pointer back to itself: followed
/// naively it is `a.a.a.a...` forever.
pub fn pointer_loop_in_question(id: u16) -> Vec<u8> {
    let mut m = header(id, RESPONSE_FLAGS, 1, 1);
    m.extend_from_slice(&[1, b'a', 0xc0, 12]);
    m.extend_from_slice(&TYPE_A.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m.extend_from_slice(&[0xc0, 12]);
    a_rdata(&mut m, HOSTILE_ANSWER_V4);
    m
}

/// A response with a valid question `name` and an A record whose owner name is label `x` then
/// a pointer to that same label: a loop that starts after a valid question.
pub fn pointer_loop_in_answer(id: u16, name: &[Vec<u8>]) -> Vec<u8> {
    let mut m = header(id, RESPONSE_FLAGS, 1, 1);
    question(&mut m, name, TYPE_A);
    let at = u16::try_from(m.len()).expect("small message");
    m.extend_from_slice(&[1, b'x']);
    m.extend_from_slice(&(0xc000 | at).to_be_bytes());
    a_rdata(&mut m, HOSTILE_ANSWER_V4);
    m
}

/// `len` (at least 12) bytes that cannot be a DNS message: a response header claiming 65535
/// questions and 65535 answers (each needs at least 5 bytes), then pseudo-random bytes from
/// `seed`. The id is `id` so a pairing parser gets as far as possible.
pub fn garbage(id: u16, seed: u64, len: usize) -> Vec<u8> {
    let mut m = header(id, RESPONSE_FLAGS, 0xffff, 0xffff);
    let mut x = seed | 1;
    while m.len() < len.max(12) {
        // xorshift64: deterministic, no dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push((x >> 24) as u8);
    }
    m
}

/// The first 7 bytes of a response header: shorter than any DNS message can be.
pub fn truncated_header(id: u16) -> Vec<u8> {
    header(id, RESPONSE_FLAGS, 1, 1)[..7].to_vec()
}

/// One exchange with the rogue resolver over UDP: the phone sends `query` from `phone` (port
/// chosen by the kernel) to `server` (an internet host's address, port 53), the rogue resolver
/// bound there in the internet namespace answers with `respond(query as received)`, and the
/// phone waits for it. Returns (the phone's port, what the phone received).
pub fn udp_exchange(
    lab: &Lab,
    phone: IpAddr,
    server: SocketAddr,
    query: &[u8],
    respond: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<(u16, Vec<u8>)> {
    let rogue = lab
        .run_in(Ns::Net, || UdpSocket::bind(server))?
        .with_context(|| format!("rogue resolver cannot bind {server}"))?;
    rogue.set_read_timeout(Some(WAIT))?;
    let client = lab.run_in(Ns::Phone, || UdpSocket::bind(SocketAddr::new(phone, 0)))??;
    client.set_read_timeout(Some(WAIT))?;
    let port = client.local_addr()?.port();
    client.send_to(query, server)?;
    let mut buf = vec![0u8; 65535];
    let (n, peer) =
        rogue.recv_from(&mut buf).with_context(|| format!("the query never reached the rogue resolver at {server}"))?;
    ensure!(peer == SocketAddr::new(phone, port), "rogue resolver got a query from {peer}");
    let reply = respond(&buf[..n]);
    rogue.send_to(&reply, peer)?;
    let (n, from) = client.recv_from(&mut buf).with_context(|| format!("the phone got no reply from {server}"))?;
    ensure!(from == server, "the phone got a reply from {from}");
    Ok((port, buf[..n].to_vec()))
}

/// One exchange over TCP (DNS messages framed by a 2-byte length, RFC 1035 §4.2.2): the phone
/// connects to `server` port 53, sends `query` framed, the rogue resolver reads it and writes
/// `respond(query)` as is (the caller frames it, see [`tcp_frame`], or lies about the length),
/// then closes. Returns (the phone's port, every byte the phone read until the close).
pub fn tcp_exchange(
    lab: &Lab,
    server: SocketAddr,
    query: &[u8],
    respond: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<(u16, Vec<u8>)> {
    let listener = lab
        .run_in(Ns::Net, || TcpListener::bind(server))?
        .with_context(|| format!("rogue resolver cannot listen on {server}"))?;
    // The handshake completes in the kernel's backlog, so one thread can play both sides.
    let mut client = lab
        .run_in(Ns::Phone, || TcpStream::connect_timeout(&server, WAIT))?
        .with_context(|| format!("the phone cannot connect to {server}"))?;
    client.set_read_timeout(Some(WAIT))?;
    let port = client.local_addr()?.port();
    client.write_all(&tcp_frame(query))?;
    let (mut conn, _) = accept_timeout(&listener, WAIT)?;
    conn.set_read_timeout(Some(WAIT))?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len)?;
    let mut received = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.read_exact(&mut received)?;
    conn.write_all(&respond(&received))?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut got = Vec::new();
    client.read_to_end(&mut got).with_context(|| format!("reading the reply from {server}"))?;
    drop(conn);
    Ok((port, got))
}

/// `message` with its 2-byte length prefix, as DNS over TCP sends it.
pub fn tcp_frame(message: &[u8]) -> Vec<u8> {
    let len = u16::try_from(message.len()).expect("DNS messages are at most 65535 bytes");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

fn accept_timeout(listener: &TcpListener, wait: Duration) -> Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false)?;
                return Ok((s, peer));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    bail!("no connection to the rogue resolver within {wait:?}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
}

/// Sends `bytes` as one UDP datagram from `from` (an internet host's address, typically port
/// 53) to `to` (the phone), unasked: what an off-path attacker or a confused server does. The
/// phone's kernel answers with an ICMP port unreachable unless something listens there.
pub fn send_unsolicited(lab: &Lab, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> Result<()> {
    let sock = lab.run_in(Ns::Net, || UdpSocket::bind(from))?.with_context(|| format!("cannot bind {from}"))?;
    sock.send_to(bytes, to).with_context(|| format!("cannot send from {from} to {to}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_length_name_is_255_on_the_wire_and_253_shown() {
        let n = max_length_name();
        assert_eq!(wire_name(&n).len(), 255);
        assert_eq!(presentation(&n).len(), 253);
    }

    #[test]
    fn binary_name_is_escaped() {
        assert_eq!(
            presentation(&binary_name()),
            "\\000\\007\\255.dot\\.in\\.label.back\\\\slash.sp\\032ace.<script>alert\\(1\\)</script>.hostile.example"
        );
    }

    #[test]
    fn messages_have_the_promised_shape() {
        let name = hostile_name("ok");
        let r = a_response(0x1234, &name);
        assert_eq!(id_of(&r), 0x1234);
        assert_eq!(&r[r.len() - 4..], &HOSTILE_ANSWER_V4.octets());
        let q = query(7, &name, TYPE_A);
        assert_eq!(q.len(), 12 + wire_name(&name).len() + 4);
        assert_eq!(truncated_header(1).len(), 7);
        assert_eq!(garbage(1, 42, 64).len(), 64);
        let l = pointer_loop_in_answer(9, &name);
        let at = 12 + wire_name(&name).len() + 4;
        assert_eq!(&l[at..at + 4], &[1, b'x', 0xc0, at as u8]);
        assert_eq!(&pointer_loop_in_question(3)[12..16], &[1, b'a', 0xc0, 12]);
    }
}
