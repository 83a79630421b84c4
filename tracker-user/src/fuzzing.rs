//! Every parser of untrusted bytes run on arbitrary input with its documented contract checked:
//! the bodies of the cargo-fuzz targets (`fuzz/`) and of the mutation tests, so both check the
//! same things. Each function panics when a contract is broken; a parser's own panic is the
//! other kind of finding. Built only under test and with `--cfg fuzzing` (cargo-fuzz sets it).

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::sync::OnceLock;

use tracker_common::PAYLOAD_CAP;
use tracker_common::user::Event;

use crate::analysis::dns::{self, AnswerData, DnsMessage, MAX_CNAME_CHAIN, Transport};
use crate::analysis::domain::{MAX_LABEL_LEN, MAX_NAME_LEN, display_name};
use crate::analysis::entity::EntityTable;
use crate::analysis::http::is_address;
use crate::analysis::{http, quic, tls};
use crate::cli::Cli;
use crate::cli::config::{self, BadConfig};
use crate::rules::{blocklist, canonical_domain};
use crate::source::capture::file::{CaptureError, CaptureReader, MAX_RECORD};
use crate::source::capture::{CaptureSource, Counted};
use crate::source::{Source, Timeouts};

/// A name on the wire is at most 255 octets: length bytes, labels and the root (RFC 1035 §2.3.4).
const MAX_WIRE_NAME: usize = 255;
/// Bytes a DNS header takes (RFC 1035 §4.1.1).
const DNS_HEADER: usize = 12;
/// What [`dns`] appends to display text it cuts at its bound.
const ELLIPSIS: &str = "...";
/// The Destination Connection ID of the Initials built by [`quic_initial`]: RFC 9001 §A.1's.
const QUIC_DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
/// Longest frame sequence [`quic::protect_v1`] can protect (its Length is a 2-byte varint).
const QUIC_MAX_FRAMES: usize = 16_363;
/// First byte of a [`quic_initial`] input whose rest is a packet's plaintext frames; any other
/// first byte means the rest is a datagram as captured.
pub const QUIC_FRAMES: u8 = 0x01;
/// Chunk sizes [`capture`] reads the same bytes in, to check that buffering never changes what
/// the reader finds: a record split over reads, the buffer compacted or grown.
const CAPTURE_CHUNKS: [usize; 2] = [7, 4096];

/// The DNS parser on `data` as a UDP payload and as a TCP one (length prefix first). What it
/// accepts holds only canonical names, the header's own id and flags, no more records than the
/// header announced, bounded display text and CNAME chains.
pub fn dns(data: &[u8]) {
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Ok(msg) = dns::parse(data, transport) {
            let message = match transport {
                Transport::Udp => data,
                Transport::Tcp => &data[2..],
            };
            check_dns(&msg, message);
        }
    }
}

fn check_dns(msg: &DnsMessage, message: &[u8]) {
    let header = message.get(..DNS_HEADER).expect("a message was parsed from fewer than 12 bytes");
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    assert_eq!(msg.id, u16::from_be_bytes([header[0], header[1]]), "id");
    assert_eq!(msg.is_response, header[2] & 0x80 != 0, "QR bit");
    assert_eq!(msg.truncated, header[2] & 0x02 != 0, "TC bit");
    assert_eq!(msg.questions.len(), count(4), "every question is read or the message refused");
    assert!(msg.answers.len() <= count(6), "{} answers, {} announced", msg.answers.len(), count(6));
    assert!(!msg.rcode.is_empty() && msg.rcode.bytes().all(|b| b.is_ascii_alphanumeric()), "rcode {:?}", msg.rcode);
    for q in &msg.questions {
        check_dns_name(&q.name);
        check_type(&q.qtype);
    }
    for a in &msg.answers {
        check_dns_name(&a.name);
        check_type(&a.rtype);
        match &a.data {
            AnswerData::Addr(ip) => assert!(matches!(a.rtype.as_str(), "A" | "AAAA"), "{ip} in a {} record", a.rtype),
            AnswerData::Cname(target) => {
                assert_eq!(a.rtype, "CNAME");
                check_dns_name(target);
            }
            AnswerData::Other(text) => {
                assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)), "unprintable record text {text:?}");
                assert!(text.len() <= dns::MAX_OTHER_LEN + ELLIPSIS.len(), "record text of {} bytes", text.len());
            }
        }
    }
    for q in &msg.questions {
        let chain = msg.cname_chain(&q.name);
        assert!(chain.len() <= MAX_CNAME_CHAIN, "a chain of {}", chain.len());
        assert_eq!(chain.iter().collect::<HashSet<_>>().len(), chain.len(), "a name twice in {chain:?}");
        assert!(!chain.contains(&q.name), "the chain {chain:?} leads back to {}", q.name);
        for (ip, _, via) in msg.addresses_for(&q.name) {
            assert!(chain.starts_with(&via), "{ip} reached through {via:?}, not a prefix of {chain:?}");
        }
    }
}

/// A DNS name: canonical, and at most 255 octets in wire form.
fn check_dns_name(name: &str) {
    let labels = check_canonical_name(name);
    let wire: usize = labels.iter().map(|l| 1 + l.len()).sum::<usize>() + 1;
    assert!(wire <= MAX_WIRE_NAME, "{name:?} takes {wire} octets on the wire");
}

/// A record type: a mnemonic (`A`, `HTTPS`, `NSEC3PARAM`) or the generic `TYPEnnn`.
fn check_type(rtype: &str) {
    assert!(
        !rtype.is_empty() && rtype.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "record type {rtype:?}"
    );
}

/// Decodes a name in tracker's canonical form ([`display_name`]) back to its raw labels,
/// checking that it is that form: printable ASCII, labels of 1 to 63 bytes joined by dots, the
/// odd bytes escaped as `\DDD` and the specials with a backslash, no upper case, and exactly
/// what `display_name` renders for those labels. The root is `"."`. Panics otherwise.
pub fn check_canonical_name(name: &str) -> Vec<Vec<u8>> {
    canonical_labels(name).unwrap_or_else(|why| panic!("{name:?}: {why}"))
}

/// [`check_canonical_name`]'s decoding, with the reason a name is not canonical as an error.
fn canonical_labels(name: &str) -> Result<Vec<Vec<u8>>, String> {
    if name == "." {
        return Ok(Vec::new());
    }
    let mut labels = vec![Vec::new()];
    let mut bytes = name.bytes();
    while let Some(b) = bytes.next() {
        let label = labels.last_mut().ok_or("no label")?;
        match b {
            b'\\' => match bytes.next() {
                Some(d @ b'0'..=b'9') => {
                    let digits = [d, bytes.next().unwrap_or(0), bytes.next().unwrap_or(0)];
                    if !digits.iter().all(u8::is_ascii_digit) {
                        return Err("a cut \\DDD escape".into());
                    }
                    let value = digits.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
                    label.push(u8::try_from(value).map_err(|_| format!("\\{value} is no byte"))?);
                }
                Some(special) => label.push(special),
                None => return Err("a backslash at the end".into()),
            },
            b'.' => labels.push(Vec::new()),
            0x21..=0x7e => label.push(b),
            _ => return Err(format!("byte {b:#04x}")),
        }
    }
    if let Some(label) = labels.iter().find(|l| !(1..=MAX_LABEL_LEN).contains(&l.len())) {
        return Err(format!("a label of {} bytes", label.len()));
    }
    if labels.iter().flatten().any(u8::is_ascii_uppercase) {
        return Err("upper case".into());
    }
    if display_name(labels.iter().map(Vec::as_slice)) != name {
        return Err("not as display_name renders its labels".into());
    }
    Ok(labels)
}

/// A host name taken from a text protocol (SNI, Host): canonical, at most 253 bytes, and not an
/// address. Returns its raw bytes, labels joined by dots.
fn check_host_name(name: &str) -> Vec<u8> {
    let raw = check_canonical_name(name).join(&b'.');
    assert!((1..=MAX_NAME_LEN).contains(&raw.len()), "{name:?} is {} bytes", raw.len());
    assert!(!is_address(name), "{name:?} is an address");
    raw
}

/// The ClientHello reader: a server name it finds is a canonical host name.
pub fn tls_client_hello(data: &[u8]) {
    if let Some(name) = tls::client_hello_sni(data) {
        check_host_name(&name);
    }
    let _ = tls::looks_like_tls(data);
}

/// The HTTP request reader: a Host it finds is a canonical host name of RFC 3986 reg-name
/// characters, in a payload that looks like HTTP, and was in the payload as it reads (modulo
/// case and one trailing dot).
pub fn http_host(data: &[u8]) {
    let looks = http::looks_like_http(data);
    let Some(name) = http::http_host(data) else {
        return;
    };
    let raw = check_host_name(&name);
    assert!(looks, "a Host ({name:?}) in a payload that does not look like HTTP");
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    assert!(raw.iter().all(allowed), "{name:?} holds a byte outside RFC 3986's reg-name");
    let lower = data.to_ascii_lowercase();
    assert!(lower.windows(raw.len()).any(|w| w == raw), "{name:?} is not in the request");
}

/// The QUIC Initial reader. An input starting with [`QUIC_FRAMES`] is the plaintext of an
/// Initial, protected here as a client would (RFC 9001 §5) so that it reaches the frame and
/// ClientHello readers behind the AEAD check; any other is a datagram as captured. A server
/// name it finds is a canonical host name, as from TLS, made of printable ASCII only.
pub fn quic_initial(data: &[u8]) {
    let packet;
    let datagram = match data.split_first() {
        Some((&QUIC_FRAMES, frames)) => {
            packet = quic::protect_v1(&QUIC_DCID, &frames[..frames.len().min(QUIC_MAX_FRAMES)]);
            &packet
        }
        _ => data,
    };
    if let Some(name) = quic::initial_sni(datagram) {
        let raw = check_host_name(&name);
        assert!(raw.iter().all(u8::is_ascii_graphic), "{name:?} came from a name with a space or control byte");
    }
}

/// The capture reader on a file's bytes, and every frame counted as `import-pcap` counts it,
/// with the payload events it keeps run through the parsers above. Reading the same bytes in
/// small and large chunks finds the same frames and stops at the same place; a file read to
/// its end is consumed whole; numbers and offsets only go up; the counts add up.
pub fn capture(data: &[u8]) {
    let whole = read_capture(data, data.len().max(1), true);
    for chunk in CAPTURE_CHUNKS {
        assert_eq!(read_capture(data, chunk, false), whole, "read {chunk} bytes at a time");
    }
}

/// What a reader found in a file: each frame's number, offset, time, lengths and bytes, and how
/// it ended (`None` at the end of the file, else the error's packet, offset and text).
type CaptureRead = (Vec<(u64, u64, u64, u32, Vec<u8>)>, Option<(Option<u64>, u64, String)>);

fn read_capture(data: &[u8], chunk: usize, count: bool) -> CaptureRead {
    let src = Chunked { data, chunk };
    let mut reader = match CaptureReader::new("fuzz", src) {
        Ok(reader) => reader,
        Err(e) => return (Vec::new(), Some(ended(&e, data))),
    };
    let mut source = CaptureSource::new("fuzz".into(), Vec::new(), Timeouts::default());
    let mut frames = Vec::new();
    let mut last_offset = None;
    let end = loop {
        let frame = match reader.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(e) => break Some(ended(&e, data)),
        };
        assert_eq!(frame.number, frames.len() as u64 + 1, "frame numbers");
        assert!(last_offset < Some(frame.offset), "frame {} at byte {}", frame.number, frame.offset);
        assert!(frame.offset + frame.data.len() as u64 <= data.len() as u64, "frame {} past the end", frame.number);
        assert!(frame.data.len() <= MAX_RECORD);
        last_offset = Some(frame.offset);
        if count {
            let before = source.counts;
            let counted = source.count(&frame);
            let after = source.counts;
            let frames_counted = u64::from(counted != Counted::Stale);
            assert_eq!(after.frames, before.frames + frames_counted, "{counted:?}");
            assert_eq!(after.ip_packets + after.not_ip + after.malformed, after.frames, "{after:?}");
            assert!(after.fragments <= after.ip_packets && source.live() as u64 <= after.flows_created);
            drain(&mut source);
        }
        frames.push((frame.number, frame.offset, frame.ts_ns, frame.orig_len, frame.data.to_vec()));
    };
    if end.is_none() {
        assert_eq!(reader.bytes_read(), data.len() as u64, "a file read to its end is consumed whole");
    }
    (frames, end)
}

fn ended(e: &CaptureError, data: &[u8]) -> (Option<u64>, u64, String) {
    assert!(e.offset <= data.len() as u64, "an error at byte {} of {}", e.offset, data.len());
    (e.packet, e.offset, e.to_string())
}

/// The events a capture's frames left, through the parsers the pipeline gives them to.
fn drain(source: &mut CaptureSource) {
    source.drain_events(&mut |event| {
        let payload = match event.expect("the capture source's own events decode") {
            Event::Dns(p) | Event::FirstPayload(p) | Event::DnsRefused(p) => p,
            Event::BlockHit(_) => return,
        };
        assert!(payload.data.len() <= PAYLOAD_CAP.min(payload.len as usize), "{} bytes kept", payload.data.len());
        dns(payload.data);
        tls_client_hello(payload.data);
        http_host(payload.data);
        quic_initial(payload.data);
    });
}

/// A reader that hands out at most `chunk` bytes a call, as a pipe or a slow disk may.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The blocklist reader: lines counted as the file has them, every malformed line numbered
/// within them and in order, each line accounted for, and the domains unique, canonical and
/// taken from the file.
pub fn blocklist(data: &[u8]) {
    let parsed = blocklist::parse(data);
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let lines = if data.is_empty() { 0 } else { body.iter().filter(|&&b| b == b'\n').count() + 1 };
    assert_eq!(parsed.lines, lines, "lines");
    let numbers: Vec<usize> = parsed.malformed.iter().map(|m| m.line).collect();
    assert!(numbers.iter().all(|n| (1..=lines).contains(n)), "malformed lines {numbers:?} of {lines}");
    assert!(numbers.is_sorted(), "malformed lines out of order: {numbers:?}");
    let bad_lines = numbers.iter().collect::<HashSet<_>>().len();
    assert!(parsed.comments + bad_lines <= lines, "{} comments, {bad_lines} bad of {lines} lines", parsed.comments);
    // Every other line gives at least one domain, repeat, local name or complaint.
    let accounted = parsed.domains.len() + parsed.duplicates + parsed.local + parsed.malformed.len();
    assert!(accounted + parsed.comments >= lines, "{parsed:?}");
    assert_eq!(parsed.domains.iter().collect::<HashSet<_>>().len(), parsed.domains.len(), "a domain twice");
    // The words of the text lines, before any comment, split as the reader splits them (at
    // Unicode white space): each domain is one of them, lower-cased, one final dot dropped.
    let words: HashSet<String> = body
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .flat_map(|line| line.split('#').next().unwrap_or_default().split_whitespace())
        .map(str::to_ascii_lowercase)
        .collect();
    for d in &parsed.domains {
        assert_eq!(canonical_domain(d, false).as_ref(), Ok(d), "not canonical");
        assert!(words.contains(d) || words.contains(&format!("{d}.")), "{d} is not a word of the file");
    }
}

/// The entity-table loader (`--entities FILE`, the nearest thing to a configuration file the
/// daemon reads so far), alone and over the built-in table. A table it builds has unique names,
/// valid domains, each matched by its own entry, and services whose company exists.
pub fn entities(data: &[u8]) {
    // The CLI reads the file as UTF-8 text and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    static BUILTIN: OnceLock<EntityTable> = OnceLock::new();
    let builtin = BUILTIN.get_or_init(EntityTable::builtin);
    for table in [EntityTable::parse(text), builtin.with_overrides(text)] {
        match table {
            Ok(t) => check_entities(&t),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// The configuration file's reader (`tracker.toml`), for `tracker run` and for another
/// command, with a setting also given on the command line and with a `--`: the file is refused
/// with its name and "nothing was run", or the user's words stay where they were, every word
/// added is `--key` or `--key=value` of a setting the file gave (and where it gave it: a line of
/// the file), none the command line already had; and clap takes the result without a panic.
pub fn config(data: &[u8]) {
    const FILE: &str = "tracker.toml";
    // `tracker` reads the file as UTF-8 text (`read_to_string`) and refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    let commands: [&[&str]; 3] =
        [&["tracker", "run"], &["tracker", "flows"], &["tracker", "--db", "given.db", "run", "--", "--iface"]];
    for argv in commands {
        let args: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let (out, origins) = match config::with_text(args.clone(), &|_| None, text, FILE) {
            Ok(done) => done,
            Err(BadConfig(why)) => {
                assert!(why.starts_with(FILE) && why.ends_with("nothing was run"), "{why}");
                continue;
            }
        };
        let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
        let tail = args.len() - split;
        assert!(out.len() >= args.len(), "{out:?}");
        assert_eq!(out[..split], args[..split], "the user's options moved");
        assert_eq!(out[out.len() - tail..], args[split..], "the words after -- moved");
        let mut keys = HashSet::new();
        for word in &out[split..out.len() - tail] {
            let word = word.to_str().expect("the file's words are its UTF-8 text");
            let key = word.split_once('=').map_or(word, |(k, _)| k);
            assert!(key.starts_with("--"), "{word:?} is not an option");
            assert!(!argv[..split].contains(&key), "{key} was on the command line");
            keys.insert(key.to_owned());
        }
        assert_eq!(keys, origins.keys().cloned().collect(), "options without a place in the file");
        for at in origins.values() {
            let line = at.strip_prefix(&format!("{FILE}:")).and_then(|l| l.parse::<usize>().ok());
            assert!(line.is_some_and(|l| (1..=lines).contains(&l)), "{at} of {lines} lines");
        }
        if let Err(e) = <Cli as clap::Parser>::try_parse_from(&out) {
            let _ = config::explain(&e, &origins);
        }
    }
}

fn check_entities(t: &EntityTable) {
    let companies: HashSet<&str> = t.companies().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(companies.len(), t.companies().len(), "two companies of one name");
    let services: HashSet<&str> = t.services().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(services.len(), t.services().len(), "two services of one name");
    for c in t.companies() {
        for d in &c.domains {
            check_entity_domain(d);
            let m = t.company_of(d).unwrap_or_else(|| panic!("{d} of {} matches no company", c.name));
            assert_eq!((m.entry.name.as_str(), m.domain), (c.name.as_str(), d.as_str()));
        }
    }
    for s in t.services() {
        assert!(companies.contains(s.company.as_str()), "service {} of an unknown company", s.name);
        for d in &s.domains {
            check_entity_domain(d);
            let m = t.service_of(d).unwrap_or_else(|| panic!("{d} of {} matches no service", s.name));
            assert_eq!((m.entry.name.as_str(), m.domain), (s.name.as_str(), d.as_str()));
        }
    }
}

/// An entity's domain: two labels or more of lower-case letters, digits, `-` and `_`.
fn check_entity_domain(d: &str) {
    let labels: Vec<&str> = d.split('.').collect();
    assert!(labels.len() >= 2, "{d:?} has one label");
    for l in labels {
        assert!((1..=MAX_LABEL_LEN).contains(&l.len()), "{d:?}");
        assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'), "{d:?}");
    }
}

/// The packed days' decoders (roll-up groups and names, raw flows, the DNS log with answers):
/// on any bytes they return rows or an error, never panic nor allocate beyond the input's
/// worth, and what they return packs again into a blob that reads back the same rows.
pub fn packed(data: &[u8]) {
    use crate::store::{packed, packed_dns, packed_flows};
    if let Ok(groups) = packed::unpack_flows(data) {
        assert_eq!(packed::unpack_flows(&packed::pack_flows(&groups)).ok(), Some(groups), "roll-up groups");
    }
    if let Ok(names) = packed::unpack_dns(data) {
        assert_eq!(packed::unpack_dns(&packed::pack_dns(&names)).ok(), Some(names), "roll-up names");
    }
    if let Ok(mut rows) = packed_flows::unpack(data) {
        rows.sort();
        if let Ok(blob) = packed_flows::pack(&mut rows.clone()) {
            let mut again = packed_flows::unpack(&blob).expect("a packed day reads back");
            again.sort();
            assert_eq!(again, rows, "flows");
        }
    }
    if let Ok((mut queries, mut answers)) = packed_dns::unpack(data) {
        queries.sort();
        answers.sort();
        if let Ok(blob) = packed_dns::pack(&mut queries.clone(), &mut answers.clone()) {
            let (mut q, mut a) = packed_dns::unpack(&blob).expect("a packed day reads back");
            q.sort();
            a.sort();
            assert_eq!((q, a), (queries, answers), "queries and answers");
        }
    }
}

#[cfg(test)]
#[path = "fuzzing_tests.rs"]
mod tests;
