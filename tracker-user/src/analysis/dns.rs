//! DNS message parsing (UDP, or TCP with its length prefix) into questions, answers and CNAME chains.
//!
//! The wire decoding — names with compression pointers, pointer-loop and length checks, record
//! data — is hickory-proto's. Only the section walk is ours, for two reasons hickory's
//! `Message::from_vec` cannot serve: captures are cut at 1280 bytes, so a message often ends in
//! the middle of a record and we still want the header, the question and the answers before the
//! cut; and an odd record we never look at (a DNSSEC signature, an SVCB parameter hickory finds
//! out of order) must not throw away the A records next to it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result, ensure};
use hickory_proto::op::{Header, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError, Restrict};

use super::domain::display_name;

/// Longest CNAME chain followed. Resolvers stop around 8-16 hops (Unbound 11, BIND 16); anything
/// longer is broken or hostile.
pub const MAX_CNAME_CHAIN: usize = 16;

/// A DNS message can never be longer: the TCP length prefix is 16 bits and UDP payloads are less.
const MAX_MESSAGE_LEN: usize = 65_535;

/// Bound on the display text of a record we do not interpret, so that a 64 KB TXT record cannot
/// bloat what callers store.
pub(crate) const MAX_OTHER_LEN: usize = 256;

/// How the payload was carried: TCP prepends a 2-byte length to every message (RFC 1035 §4.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// Stable lower-case name, for storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// A parsed DNS message, reduced to what naming needs. All names are in the canonical display
/// form of [`display_name`]: lower case, no trailing dot, odd bytes escaped as `\DDD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    /// QR bit.
    pub is_response: bool,
    /// Mnemonic (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...), or the number when unassigned. Includes
    /// the EDNS extended bits when an OPT record was read.
    pub rcode: String,
    /// TC bit: the sender cut the message (the client will retry over TCP).
    pub truncated: bool,
    /// The payload ended before every record the header announced: cut by the capture (1280
    /// bytes), by IP fragmentation, or a short TCP segment. Header, questions and the records
    /// before the cut are valid; the rest is missing.
    pub partial: bool,
    /// An EDNS OPT record was present (RFC 6891).
    pub edns: bool,
    pub questions: Vec<Question>,
    pub answers: Vec<Answer>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    /// `A`, `AAAA`, `HTTPS`, ... or `TYPE65280` (RFC 3597) for types hickory does not name.
    pub qtype: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Owner name.
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub data: AnswerData,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerData {
    /// A or AAAA.
    Addr(IpAddr),
    /// CNAME target.
    Cname(String),
    /// Any other type, as display text (escaped to printable ASCII and bounded), or as the
    /// RFC 3597 generic form `\# LEN HEX` when hickory cannot decode it.
    Other(String),
}

/// Parses one DNS message from a UDP payload, or from a TCP payload that starts with the 2-byte
/// length prefix (bytes after the announced length, e.g. a pipelined second message, are
/// ignored).
///
/// Returns `Err` when the header or any question is missing or malformed, and when any record
/// structure is malformed (compression-pointer loops and forward pointers, labels over 63 bytes,
/// names over 255, undecodable A/AAAA/CNAME data): such a message is hostile or broken and its
/// answers must not name anything. Running out of bytes after the questions is not an error: the
/// records read so far are returned with [`DnsMessage::partial`] set. Never panics.
pub fn parse(payload: &[u8], transport: Transport) -> Result<DnsMessage> {
    let (msg, mut partial) = match transport {
        Transport::Udp => (payload, false),
        Transport::Tcp => {
            let (len, rest) =
                payload.split_first_chunk::<2>().context("TCP DNS payload shorter than its 2-byte length prefix")?;
            let len = usize::from(u16::from_be_bytes(*len));
            ensure!(len > 0, "TCP DNS length prefix is zero");
            match rest.get(..len) {
                Some(whole) => (whole, false),
                None => (rest, true),
            }
        }
    };
    // Keeps every offset within u16, which hickory's decoder uses for pointers.
    let msg = &msg[..msg.len().min(MAX_MESSAGE_LEN)];

    let mut decoder = BinDecoder::new(msg);
    let Header { metadata, counts } = Header::read(&mut decoder).context("DNS header incomplete (needs 12 bytes)")?;

    let mut questions = Vec::with_capacity(usize::from(counts.queries).min(4));
    for i in 0..counts.queries {
        let query =
            Query::read(&mut decoder).with_context(|| format!("DNS question {} of {}", i + 1, counts.queries))?;
        questions.push(Question { name: name_string(query.name()), qtype: type_name(u16::from(query.query_type())) });
    }

    let mut answers = Vec::new();
    let mut opt_ttl = None;
    let sections = [
        (Section::Answer, counts.answers),
        (Section::Authority, counts.authorities),
        (Section::Additional, counts.additionals),
    ];
    'sections: for (section, count) in sections {
        for i in 0..count {
            let record = read_record(&mut decoder, msg, section == Section::Answer)
                .with_context(|| format!("DNS {section:?} record {} of {count}", i + 1))?;
            let Some(record) = record else {
                partial = true;
                break 'sections;
            };
            match (section, record.data) {
                (Section::Answer, Some(data)) => answers.push(Answer {
                    name: name_string(&record.name),
                    rtype: type_name(record.rtype),
                    ttl: record.ttl,
                    data,
                }),
                (Section::Additional, _)
                    if record.rtype == u16::from(RecordType::OPT) && record.name.is_root() && opt_ttl.is_none() =>
                {
                    opt_ttl = Some(record.ttl);
                }
                _ => {}
            }
        }
    }

    // RFC 6891 §6.1.3: the OPT TTL's top byte holds the upper 8 bits of a 12-bit RCODE.
    let low = u16::from(metadata.response_code) & 0x000f;
    let high = opt_ttl.map_or(0, |ttl| u16::from(ttl.to_be_bytes()[0]));
    Ok(DnsMessage {
        id: metadata.id,
        is_response: metadata.message_type == MessageType::Response,
        rcode: rcode_name(high << 4 | low),
        truncated: metadata.truncation,
        partial,
        edns: opt_ttl.is_some(),
        questions,
        answers,
    })
}

impl DnsMessage {
    /// [`cname_chain`] over this message's answers.
    pub fn cname_chain(&self, qname: &str) -> Vec<String> {
        cname_chain(&self.answers, qname)
    }

    /// [`addresses_for`] over this message's answers.
    pub fn addresses_for(&self, qname: &str) -> Vec<(IpAddr, u32, Vec<String>)> {
        addresses_for(&self.answers, qname)
    }
}

impl AnswerData {
    /// The record data as stored and shown: the address, the CNAME target, or the display text.
    pub fn to_text(&self) -> String {
        match self {
            Self::Addr(ip) => ip.to_string(),
            Self::Cname(target) => target.clone(),
            Self::Other(text) => text.clone(),
        }
    }

    /// Reads back what [`AnswerData::to_text`] wrote for a record of type `rtype`. An A/AAAA
    /// text that is not an address stays text rather than failing: stored data is input too.
    pub fn from_text(rtype: &str, text: &str) -> Self {
        match rtype {
            "A" | "AAAA" => text.parse().map_or_else(|_| Self::Other(text.into()), Self::Addr),
            "CNAME" => Self::Cname(text.into()),
            _ => Self::Other(text.into()),
        }
    }
}

/// The CNAME targets followed from `qname` through `answers`, in order, without `qname` itself:
/// `www.example.com` -> `["www.example.com.cdn.net", "edge7.cdn.net"]`. Stops at
/// [`MAX_CNAME_CHAIN`] hops or when a name repeats (a CNAME loop).
pub fn cname_chain(answers: &[Answer], qname: &str) -> Vec<String> {
    let mut current = canonical(qname);
    let mut seen = HashSet::from([current.clone()]);
    let mut chain = Vec::new();
    while chain.len() < MAX_CNAME_CHAIN {
        let Some(target) = answers.iter().find_map(|a| match &a.data {
            AnswerData::Cname(target) if a.name == current => Some(target),
            _ => None,
        }) else {
            break;
        };
        if !seen.insert(target.clone()) {
            break;
        }
        chain.push(target.clone());
        current = target.clone();
    }
    chain
}

/// The A/AAAA answers a client that asked `qname` would use: those owned by `qname` or by a
/// name on its CNAME chain. Each comes with its TTL and the chain walked to reach it (empty
/// when `qname` owns the address). Addresses for unrelated owner names — which a resolver
/// would also ignore — are left out, so a stray record cannot name a flow.
pub fn addresses_for(answers: &[Answer], qname: &str) -> Vec<(IpAddr, u32, Vec<String>)> {
    let chain = cname_chain(answers, qname);
    let qname = canonical(qname);
    let mut out = Vec::new();
    for answer in answers {
        let AnswerData::Addr(ip) = answer.data else {
            continue;
        };
        let hops =
            if answer.name == qname { Some(0) } else { chain.iter().position(|n| *n == answer.name).map(|i| i + 1) };
        if let Some(hops) = hops {
            out.push((ip, answer.ttl, chain[..hops].to_vec()));
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// One resource record as far as we need it; `data` is decoded for the answer section only.
struct RawRecord {
    name: Name,
    rtype: u16,
    ttl: u32,
    data: Option<AnswerData>,
}

/// Reads one resource record. `Ok(None)` means the bytes ran out (a cut message); `Err` means
/// the record is malformed.
fn read_record(decoder: &mut BinDecoder<'_>, msg: &[u8], decode_data: bool) -> Result<Option<RawRecord>> {
    let name = match Name::read(decoder) {
        Ok(name) => name,
        Err(DecodeError::InsufficientBytes) => return Ok(None),
        Err(e) => return Err(e).context("owner name"),
    };
    // TYPE, CLASS, TTL and RDLENGTH: 10 fixed bytes (RFC 1035 §4.1.3).
    let Ok(fixed) = decoder.read_slice(10) else {
        return Ok(None);
    };
    let [t0, t1, _, _, l0, l1, l2, l3, r0, r1] = *fixed.unverified() else {
        return Ok(None);
    };
    let rtype = u16::from_be_bytes([t0, t1]);
    let ttl = u32::from_be_bytes([l0, l1, l2, l3]);
    let rdlength = usize::from(u16::from_be_bytes([r0, r1]));
    let start = decoder.index();
    let end = start + rdlength;
    if end > msg.len() {
        return Ok(None);
    }
    let data = if decode_data { Some(decode_rdata(msg, start, end, rtype)?) } else { None };
    if decoder.read_slice(rdlength).is_err() {
        return Ok(None);
    }
    Ok(Some(RawRecord { name, rtype, ttl, data }))
}

/// Decodes `msg[start..end]` as record data of type `rtype`. The decoder sees the message up to
/// `end` only (compressed names point backwards, so that is enough) and cannot overrun the
/// record. Addresses and CNAMEs must decode; anything else falls back to the generic form.
fn decode_rdata(msg: &[u8], start: usize, end: usize, rtype: u16) -> Result<AnswerData> {
    let record_type = RecordType::from(rtype);
    let decoded = match (u16::try_from(start), u16::try_from(end - start)) {
        (Ok(start16), Ok(len)) if len > 0 && end <= msg.len() => {
            let mut decoder = BinDecoder::new(&msg[..end]).clone(start16);
            RData::read(&mut decoder, record_type, Restrict::new(len))
        }
        _ => Err(DecodeError::InsufficientBytes),
    };
    match decoded {
        Ok(RData::A(a)) => Ok(AnswerData::Addr(IpAddr::V4(a.0))),
        Ok(RData::AAAA(aaaa)) => Ok(AnswerData::Addr(IpAddr::V6(aaaa.0))),
        Ok(RData::CNAME(cname)) => Ok(AnswerData::Cname(name_string(&cname.0))),
        Err(e) if matches!(record_type, RecordType::A | RecordType::AAAA | RecordType::CNAME) => {
            Err(e).with_context(|| format!("{} record data", type_name(rtype)))
        }
        Ok(other) => {
            let mut text = String::new();
            // Some Display impls (OPT) return fmt::Error; `write!` reports it instead of panicking
            // like `to_string()` would.
            if write!(text, "{other}").is_ok() {
                Ok(AnswerData::Other(printable(&text)))
            } else {
                Ok(AnswerData::Other(generic_rdata(msg.get(start..end).unwrap_or_default())))
            }
        }
        Err(_) => Ok(AnswerData::Other(generic_rdata(msg.get(start..end).unwrap_or_default()))),
    }
}

fn name_string(name: &Name) -> String {
    display_name(name.iter())
}

/// Canonical form of a caller-supplied name, matching what the parser produces for plain names.
fn canonical(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() { ".".to_owned() } else { name.to_ascii_lowercase() }
}

/// RR type mnemonic as hickory names it, or `TYPEnnn` (RFC 3597 §5) for the rest. hickory maps
/// 65305 to ANAME (a draft type without a number) and 0 to ZERO, so those get the generic form.
fn type_name(code: u16) -> String {
    match RecordType::from(code) {
        RecordType::Unknown(_) | RecordType::ANAME | RecordType::ZERO => format!("TYPE{code}"),
        known => <&'static str>::from(known).to_owned(),
    }
}

/// IANA DNS RCODE mnemonics (RFC 6895 §2.3), as dig prints them.
fn rcode_name(code: u16) -> String {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// Escapes everything outside printable ASCII as `\DDD` per UTF-8 byte and bounds the length:
/// record text is as untrusted as names.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_OTHER_LEN));
    for ch in text.chars() {
        let mut piece = String::new();
        if (' '..='~').contains(&ch) {
            piece.push(ch);
        } else {
            let mut buf = [0; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                let _ = write!(piece, "\\{b:03}");
            }
        }
        if out.len() + piece.len() > MAX_OTHER_LEN {
            out.push_str("...");
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// RFC 3597 §5 generic rdata: `\# LEN HEX`, hex bounded.
fn generic_rdata(data: &[u8]) -> String {
    let mut out = format!("\\# {}", data.len());
    if !data.is_empty() {
        out.push(' ');
    }
    for b in data {
        if out.len() + 2 > MAX_OTHER_LEN {
            out.push_str("...");
            break;
        }
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const QR: u16 = 0x8000;
    const TC: u16 = 0x0200;
    const RD: u16 = 0x0100;
    const RA: u16 = 0x0080;
    const A: u16 = 1;
    const NS: u16 = 2;
    const CNAME: u16 = 5;
    const SOA: u16 = 6;
    const TXT: u16 = 16;
    const AAAA: u16 = 28;
    const OPT: u16 = 41;
    const HTTPS: u16 = 65;

    /// A hand-assembled DNS message. Names are passed in wire form so that tests can put any
    /// bytes, pointers and loops in them.
    pub(crate) struct Msg {
        pub(crate) bytes: Vec<u8>,
    }

    impl Msg {
        pub(crate) fn new(id: u16, flags: u16, counts: [u16; 4]) -> Self {
            let mut bytes = id.to_be_bytes().to_vec();
            bytes.extend_from_slice(&flags.to_be_bytes());
            for c in counts {
                bytes.extend_from_slice(&c.to_be_bytes());
            }
            Self { bytes }
        }

        /// Current offset, for compression pointers to what comes next.
        pub(crate) fn here(&self) -> u16 {
            u16::try_from(self.bytes.len()).expect("offset")
        }

        pub(crate) fn question(mut self, name: &[u8], qtype: u16) -> Self {
            self.bytes.extend_from_slice(name);
            self.bytes.extend_from_slice(&qtype.to_be_bytes());
            self.bytes.extend_from_slice(&1u16.to_be_bytes());
            self
        }

        pub(crate) fn rr(mut self, name: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Self {
            self.bytes.extend_from_slice(name);
            self.bytes.extend_from_slice(&rtype.to_be_bytes());
            self.bytes.extend_from_slice(&1u16.to_be_bytes());
            self.bytes.extend_from_slice(&ttl.to_be_bytes());
            self.bytes.extend_from_slice(&u16::try_from(rdata.len()).expect("len").to_be_bytes());
            self.bytes.extend_from_slice(rdata);
            self
        }

        pub(crate) fn parse(&self) -> Result<DnsMessage> {
            parse(&self.bytes, Transport::Udp)
        }
    }

    /// Wire form of a dotted name (no escapes; use raw bytes for odd labels).
    pub(crate) fn wire(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(u8::try_from(label.len()).expect("label"));
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn ptr(offset: u16) -> Vec<u8> {
        (0xc000 | offset).to_be_bytes().to_vec()
    }

    /// Labels followed by a pointer: a name whose tail is compressed.
    fn labels_then_ptr(labels: &str, offset: u16) -> Vec<u8> {
        let mut out = wire(labels);
        out.pop();
        out.extend_from_slice(&ptr(offset));
        out
    }

    fn v4(a: [u8; 4]) -> Vec<u8> {
        a.to_vec()
    }

    fn opt(udp_size: u16, ext_rcode: u8) -> Vec<u8> {
        // OPT: root owner, TYPE 41, CLASS = UDP size, TTL = ext-rcode|version|flags, no options.
        let mut out = vec![0];
        out.extend_from_slice(&OPT.to_be_bytes());
        out.extend_from_slice(&udp_size.to_be_bytes());
        out.extend_from_slice(&[ext_rcode, 0, 0x80, 0]);
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn simple_a_response() {
        let msg = Msg::new(0xbeef, QR | RD | RA, [1, 2, 0, 0])
            .question(&wire("WWW.Example.COM"), A)
            .rr(&ptr(12), A, 300, &v4([93, 184, 216, 34]))
            .rr(&ptr(12), A, 300, &v4([93, 184, 216, 35]))
            .parse()
            .expect("parses");
        assert_eq!(msg.id, 0xbeef);
        assert!(msg.is_response);
        assert_eq!(msg.rcode, "NOERROR");
        assert!(!msg.truncated && !msg.partial && !msg.edns);
        assert_eq!(msg.questions, vec![Question { name: "www.example.com".into(), qtype: "A".into() }]);
        assert_eq!(msg.answers.len(), 2);
        assert_eq!(msg.answers[0].name, "www.example.com");
        assert_eq!(msg.answers[0].rtype, "A");
        assert_eq!(msg.answers[0].ttl, 300);
        assert_eq!(msg.answers[0].data, AnswerData::Addr("93.184.216.34".parse().expect("ip")));
        let addrs = msg.addresses_for("www.example.com");
        assert_eq!(addrs.len(), 2);
        assert!(addrs.iter().all(|(_, ttl, chain)| *ttl == 300 && chain.is_empty()));
        assert_eq!(msg.addresses_for("WWW.EXAMPLE.COM."), addrs);
    }

    #[test]
    fn query_is_not_a_response() {
        let msg = Msg::new(7, RD, [1, 0, 0, 0]).question(&wire("example.org"), AAAA).parse();
        let msg = msg.expect("parses");
        assert!(!msg.is_response);
        assert_eq!(msg.questions[0].qtype, "AAAA");
        assert!(msg.answers.is_empty());
        assert!(msg.addresses_for("example.org").is_empty());
    }

    #[test]
    fn compression_pointer_loops_are_rejected() {
        // A question name that points at itself.
        let msg = Msg::new(1, QR, [1, 0, 0, 0]).question(&ptr(12), A);
        assert!(msg.parse().is_err());
        // A label, then a pointer back to the label: an endless "a.a.a...".
        let msg = Msg::new(1, QR, [1, 0, 0, 0]).question(&labels_then_ptr("a", 12), A);
        assert!(msg.parse().is_err());
        // Two answer names pointing at each other; the question itself is fine. This is a
        // malformation, not a cut, so it is an error rather than a partial message.
        let msg = Msg::new(1, QR, [1, 2, 0, 0]).question(&wire("x.example"), A);
        let first = msg.here();
        let second = first + 2 + 14;
        let msg = msg.rr(&ptr(second), A, 60, &v4([192, 0, 2, 1])).rr(&ptr(first), A, 60, &v4([192, 0, 2, 2]));
        let err = msg.parse().expect_err("loop");
        assert!(format!("{err:#}").contains("record"), "{err:#}");
    }

    #[test]
    fn forward_pointers_are_rejected() {
        let msg = Msg::new(1, QR, [1, 0, 0, 0]).question(&ptr(40), A);
        let mut bytes = msg.bytes;
        bytes.resize(60, 0);
        assert!(parse(&bytes, Transport::Udp).is_err());
    }

    fn long_name(lens: &[usize]) -> (Vec<u8>, String) {
        let mut wire = Vec::new();
        let mut text = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let label = vec![b'a' + u8::try_from(i).expect("few labels"); len];
            wire.push(u8::try_from(len).expect("label"));
            wire.extend_from_slice(&label);
            text.push(String::from_utf8(label).expect("ascii"));
        }
        wire.push(0);
        (wire, text.join("."))
    }

    #[test]
    fn a_255_byte_name_is_the_limit() {
        let (wire, text) = long_name(&[63, 63, 63, 61]);
        assert_eq!(wire.len(), 255);
        let msg = Msg::new(1, QR, [1, 1, 0, 0])
            .question(&wire, A)
            .rr(&ptr(12), A, 60, &v4([192, 0, 2, 1]))
            .parse()
            .expect("255 bytes is legal");
        assert_eq!(msg.questions[0].name, text);
        assert_eq!(msg.questions[0].name.len(), 253);
        assert_eq!(msg.addresses_for(&text).len(), 1);

        let (wire, _) = long_name(&[63, 63, 63, 62]);
        assert_eq!(wire.len(), 256);
        assert!(Msg::new(1, QR, [1, 0, 0, 0]).question(&wire, A).parse().is_err());

        // Over the limit only through compression: 200 bytes of labels + a pointer to 100 more.
        let (tail, _) = long_name(&[50, 49]);
        let msg = Msg::new(1, QR, [2, 0, 0, 0]).question(&tail, A);
        let mut head = long_name(&[63, 63, 63, 7]).0;
        head.pop();
        head.extend_from_slice(&ptr(12));
        assert!(msg.question(&head, A).parse().is_err());
    }

    #[test]
    fn label_over_63_bytes_is_rejected() {
        let mut name = vec![64];
        name.extend_from_slice(&[b'x'; 64]);
        name.push(0);
        assert!(Msg::new(1, QR, [1, 0, 0, 0]).question(&name, A).parse().is_err());
        // 0x40 and 0x80 are reserved label types (RFC 6891 §5 retired 0x40 "extended labels").
        let name = [0x81, b'x', 0];
        assert!(Msg::new(1, QR, [1, 0, 0, 0]).question(&name, A).parse().is_err());
    }

    #[test]
    fn binary_garbage_in_labels_is_escaped() {
        let mut name = vec![7, 0x00, 0x07, b'.', 0xff, b'A', b' ', b'\\'];
        name.extend_from_slice(&wire("Example.com"));
        let msg = Msg::new(1, QR, [1, 1, 0, 0])
            .question(&name, A)
            .rr(&ptr(12), A, 60, &v4([192, 0, 2, 1]))
            .parse()
            .expect("odd bytes are legal in labels");
        let shown = "\\000\\007\\.\\255a\\032\\\\.example.com";
        assert_eq!(msg.questions[0].name, shown);
        assert_eq!(msg.answers[0].name, shown);
        assert!(shown.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_eq!(msg.addresses_for(shown).len(), 1);
    }

    #[test]
    fn multi_level_cname_chain() {
        let msg = Msg::new(2, QR | RD | RA, [1, 5, 0, 0]).question(&wire("www.shop.example"), A);
        let q = 12;
        let c1 = msg.here() + 12; // rdata of the first answer: after ptr(2) + fixed(10)
        let msg = msg.rr(&ptr(q), CNAME, 3600, &wire("shop.cdn.example.net"));
        let c2 = msg.here() + 12;
        let msg = msg.rr(&ptr(c1), CNAME, 300, &labels_then_ptr("edge", c1 + 5));
        let c3 = msg.here() + 12;
        let msg = msg
            .rr(&ptr(c2), CNAME, 60, &wire("e7.akamai.example"))
            .rr(&ptr(c3), A, 20, &v4([203, 0, 113, 7]))
            .rr(&ptr(c3), AAAA, 20, &"2001:db8::7".parse::<std::net::Ipv6Addr>().expect("v6").octets());
        let msg = msg.parse().expect("parses");
        let chain = ["shop.cdn.example.net", "edge.cdn.example.net", "e7.akamai.example"];
        assert_eq!(msg.cname_chain("www.shop.example"), chain);
        let addrs = msg.addresses_for("www.shop.example");
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0].0, "203.0.113.7".parse::<IpAddr>().expect("ip"));
        assert_eq!(addrs[0].1, 20);
        assert_eq!(addrs[0].2, chain);
        assert_eq!(addrs[1].0, "2001:db8::7".parse::<IpAddr>().expect("ip"));
        // Starting in the middle of the chain gives the rest of it.
        assert_eq!(msg.cname_chain("edge.cdn.example.net"), ["e7.akamai.example"]);
        assert_eq!(msg.addresses_for("e7.akamai.example")[0].2, Vec::<String>::new());
        // A name the message does not mention has neither chain nor addresses.
        assert!(msg.cname_chain("other.example").is_empty());
        assert!(msg.addresses_for("other.example").is_empty());
    }

    #[test]
    fn addresses_of_unrelated_owners_are_ignored() {
        let msg = Msg::new(3, QR, [1, 2, 0, 0])
            .question(&wire("asked.example"), A)
            .rr(&wire("asked.example"), A, 60, &v4([192, 0, 2, 1]))
            .rr(&wire("injected.example"), A, 60, &v4([192, 0, 2, 66]))
            .parse()
            .expect("parses");
        let addrs = msg.addresses_for("asked.example");
        assert_eq!(addrs.len(), 1);
        assert_eq!(addrs[0].0, "192.0.2.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn cname_loops_and_long_chains_are_bounded() {
        let msg = Msg::new(4, QR, [1, 3, 0, 0])
            .question(&wire("a.example"), A)
            .rr(&wire("a.example"), CNAME, 60, &wire("b.example"))
            .rr(&wire("b.example"), CNAME, 60, &wire("c.example"))
            .rr(&wire("c.example"), CNAME, 60, &wire("a.example"))
            .parse()
            .expect("parses");
        assert_eq!(msg.cname_chain("a.example"), ["b.example", "c.example"]);
        assert!(msg.addresses_for("a.example").is_empty());

        let selfloop = Msg::new(4, QR, [1, 1, 0, 0])
            .question(&wire("s.example"), A)
            .rr(&wire("s.example"), CNAME, 60, &wire("s.example"))
            .parse()
            .expect("parses");
        assert!(selfloop.cname_chain("s.example").is_empty());

        let mut msg = Msg::new(5, QR, [1, 31, 0, 0]).question(&wire("n0.example"), A);
        for i in 0..30 {
            msg = msg.rr(&wire(&format!("n{i}.example")), CNAME, 60, &wire(&format!("n{}.example", i + 1)));
        }
        let msg = msg.rr(&wire("n30.example"), A, 60, &v4([192, 0, 2, 30])).parse().expect("parses");
        let chain = msg.cname_chain("n0.example");
        assert_eq!(chain.len(), MAX_CNAME_CHAIN);
        assert_eq!(chain[MAX_CNAME_CHAIN - 1], format!("n{MAX_CNAME_CHAIN}.example"));
        assert!(msg.addresses_for("n0.example").is_empty(), "beyond the bound is not followed");
    }

    #[test]
    fn aaaa_answers() {
        let ip: std::net::Ipv6Addr = "2606:4700:30::6818:6291".parse().expect("v6");
        let msg = Msg::new(6, QR, [1, 1, 0, 0])
            .question(&wire("erfpop.de"), AAAA)
            .rr(&ptr(12), AAAA, 300, &ip.octets())
            .parse()
            .expect("parses");
        assert_eq!(msg.answers[0].rtype, "AAAA");
        assert_eq!(msg.answers[0].data, AnswerData::Addr(IpAddr::V6(ip)));
        assert_eq!(msg.addresses_for("erfpop.de"), vec![(IpAddr::V6(ip), 300, vec![])]);
    }

    #[test]
    fn malformed_address_data_is_an_error() {
        let msg =
            Msg::new(6, QR, [1, 1, 0, 0]).question(&wire("bad.example"), A).rr(&ptr(12), A, 300, &[1, 2, 3, 4, 5]);
        assert!(msg.parse().is_err());
        let msg =
            Msg::new(6, QR, [1, 1, 0, 0]).question(&wire("bad.example"), AAAA).rr(&ptr(12), AAAA, 300, &[1, 2, 3, 4]);
        assert!(msg.parse().is_err());
        let msg = Msg::new(6, QR, [1, 1, 0, 0]).question(&wire("bad.example"), A).rr(&ptr(12), A, 300, &[]);
        assert!(msg.parse().is_err());
        // A CNAME whose target name loops.
        let msg = Msg::new(6, QR, [1, 1, 0, 0]).question(&wire("bad.example"), A);
        let target = msg.here() + 12;
        let msg = msg.rr(&ptr(12), CNAME, 300, &ptr(target));
        assert!(msg.parse().is_err());
    }

    #[test]
    fn nxdomain_with_soa() {
        let mut soa = wire("ns1.example");
        soa.extend_from_slice(&wire("hostmaster.example"));
        for v in [2024_u32, 7200, 3600, 1_209_600, 300] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        let msg = Msg::new(8, QR | RD | RA | 3, [1, 0, 1, 0])
            .question(&wire("nope.example"), A)
            .rr(&wire("example"), SOA, 300, &soa)
            .parse()
            .expect("parses");
        assert_eq!(msg.rcode, "NXDOMAIN");
        assert!(msg.answers.is_empty());
        assert!(!msg.partial);
        assert!(msg.addresses_for("nope.example").is_empty());
    }

    #[test]
    fn edns_opt_record() {
        let msg =
            Msg::new(9, QR, [1, 1, 0, 1]).question(&wire("example.com"), A).rr(&ptr(12), A, 60, &v4([192, 0, 2, 9]));
        let mut bytes = msg.bytes;
        bytes.extend_from_slice(&opt(1232, 0));
        let msg = parse(&bytes, Transport::Udp).expect("parses");
        assert!(msg.edns);
        assert_eq!(msg.rcode, "NOERROR");
        assert_eq!(msg.answers.len(), 1, "the OPT record is not an answer");

        // Extended RCODE: BADVERS is 16, i.e. 1 in the OPT TTL's top byte and 0 in the header.
        let mut bytes = Msg::new(9, QR, [1, 0, 0, 1]).question(&wire("example.com"), A).bytes;
        bytes.extend_from_slice(&opt(1232, 1));
        let msg = parse(&bytes, Transport::Udp).expect("parses");
        assert_eq!(msg.rcode, "BADVERS");

        // A query with EDNS.
        let mut bytes = Msg::new(10, RD, [1, 0, 0, 1]).question(&wire("example.com"), HTTPS).bytes;
        bytes.extend_from_slice(&opt(4096, 0));
        let msg = parse(&bytes, Transport::Udp).expect("parses");
        assert!(msg.edns && !msg.is_response);
        assert_eq!(msg.questions[0].qtype, "HTTPS");
    }

    #[test]
    fn tc_bit_with_question_only() {
        let msg =
            Msg::new(11, QR | TC | RD | RA, [1, 0, 0, 0]).question(&wire("big.example"), TXT).parse().expect("parses");
        assert!(msg.truncated);
        assert!(!msg.partial, "TC says the sender cut it; nothing is missing from this message");
        assert_eq!(msg.questions[0].name, "big.example");
        assert_eq!(msg.questions[0].qtype, "TXT");
    }

    /// A response with `n` A answers, big enough to be cut by a 1280-byte capture.
    fn big_response(n: u16) -> Vec<u8> {
        let mut msg = Msg::new(12, QR | RD | RA, [1, n, 0, 1]).question(&wire("many.example"), A);
        for i in 0..n {
            let [hi, lo] = i.to_be_bytes();
            msg = msg.rr(&ptr(12), A, 60, &v4([198, 51, hi, lo]));
        }
        let mut bytes = msg.bytes;
        bytes.extend_from_slice(&opt(1232, 0));
        bytes
    }

    #[test]
    fn message_cut_by_the_capture_is_partial() {
        let bytes = big_response(100);
        assert!(bytes.len() > 1280);
        let msg = parse(&bytes[..1280], Transport::Udp).expect("partial parse");
        assert!(msg.partial);
        assert!(!msg.edns, "the OPT record was past the cut");
        assert_eq!(msg.questions[0].name, "many.example");
        let header_and_question = 12 + 14 + 4;
        assert_eq!(msg.answers.len(), (1280 - header_and_question) / 16);
        assert_eq!(msg.addresses_for("many.example").len(), msg.answers.len());

        let whole = parse(&bytes, Transport::Udp).expect("parses");
        assert!(!whole.partial && whole.edns);
        assert_eq!(whole.answers.len(), 100);
    }

    #[test]
    fn every_prefix_of_a_message_is_safe() {
        let bytes = big_response(3);
        let question_end = 12 + 14 + 4;
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut], Transport::Udp) {
                Ok(msg) => {
                    assert!(cut >= question_end, "cut {cut} inside the question must fail");
                    assert!(msg.partial, "cut {cut}");
                    assert_eq!(msg.answers.len(), (cut - question_end) / 16);
                }
                Err(_) => assert!(cut < question_end, "cut {cut} after the question must parse"),
            }
        }
        assert!(!parse(&bytes, Transport::Udp).expect("whole").partial);
    }

    #[test]
    fn tcp_length_prefix() {
        let msg =
            Msg::new(13, QR, [1, 1, 0, 0]).question(&wire("tcp.example"), A).rr(&ptr(12), A, 60, &v4([192, 0, 2, 53]));
        let mut framed = u16::try_from(msg.bytes.len()).expect("len").to_be_bytes().to_vec();
        framed.extend_from_slice(&msg.bytes);
        let parsed = parse(&framed, Transport::Tcp).expect("parses");
        assert_eq!(parsed.answers.len(), 1);
        assert!(!parsed.partial);
        // Without the framing flag the length prefix is read as the ID and nothing lines up.
        assert_ne!(parse(&framed, Transport::Udp).ok().map(|m| m.id), Some(13));

        // A pipelined second message after the first is ignored.
        let mut two = framed.clone();
        two.extend_from_slice(&framed);
        assert_eq!(parse(&two, Transport::Tcp).expect("parses"), parsed);

        // A segment shorter than the announced length is partial.
        let cut = parse(&framed[..framed.len() - 2], Transport::Tcp).expect("partial");
        assert!(cut.partial);
        assert!(cut.answers.is_empty());
        // Cut exactly at a record boundary: every record is there but bytes are still missing.
        let mut longer = framed.clone();
        longer[1] += 5;
        assert!(parse(&longer, Transport::Tcp).expect("parses").partial);

        assert!(parse(&[], Transport::Tcp).is_err());
        assert!(parse(&[0], Transport::Tcp).is_err());
        assert!(parse(&[0, 0, 1, 2], Transport::Tcp).is_err());
        assert!(parse(&[0, 40, 1, 2, 3], Transport::Tcp).is_err(), "header cut");
    }

    #[test]
    fn rcodes_and_types_are_named() {
        for (code, name) in [(2, "SERVFAIL"), (5, "REFUSED"), (9, "NOTAUTH"), (13, "13")] {
            let msg = Msg::new(1, QR | code, [0, 0, 0, 0]).parse().expect("parses");
            assert_eq!(msg.rcode, name);
        }
        assert_eq!(type_name(65), "HTTPS");
        assert_eq!(type_name(64), "SVCB");
        assert_eq!(type_name(46), "RRSIG");
        assert_eq!(type_name(65280), "TYPE65280");
        assert_eq!(type_name(65305), "TYPE65305");
        assert_eq!(type_name(0), "TYPE0");
        assert_eq!(rcode_name(3841), "3841");
    }

    #[test]
    fn other_record_types_are_kept_as_safe_text() {
        let text = b"hi\x1b[31m\x00\xff!!";
        let mut txt = vec![u8::try_from(text.len()).expect("len")];
        txt.extend_from_slice(text);
        let msg = Msg::new(14, QR, [1, 4, 0, 0])
            .question(&wire("t.example"), TXT)
            .rr(&ptr(12), TXT, 60, &txt)
            .rr(&ptr(12), NS, 60, &wire("ns.example"))
            .rr(&ptr(12), 0xff00, 60, &[1, 2, 3])
            .rr(&ptr(12), TXT, 60, &vec![255; 300]);
        let msg = msg.parse().expect("parses");
        for answer in &msg.answers {
            let AnswerData::Other(text) = &answer.data else {
                panic!("{answer:?} should be Other");
            };
            assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{text}");
            assert!(text.len() <= MAX_OTHER_LEN + 3);
        }
        assert_eq!(msg.answers[1].data, AnswerData::Other("ns.example.".into()));
        assert_eq!(msg.answers[2].rtype, "TYPE65280");
        assert!(matches!(&msg.answers[3].data, AnswerData::Other(t) if t.ends_with("...")));
    }

    #[test]
    fn undecodable_other_data_falls_back_to_the_generic_form() {
        // An HTTPS record whose rdata is too short for hickory, next to a good A record: the A
        // record must survive.
        let msg = Msg::new(15, QR, [1, 2, 0, 0])
            .question(&wire("svc.example"), A)
            .rr(&ptr(12), HTTPS, 60, &[0, 1, 0xc0])
            .rr(&ptr(12), A, 60, &v4([192, 0, 2, 15]))
            .parse()
            .expect("parses");
        assert_eq!(msg.answers[0].data, AnswerData::Other("\\# 3 0001c0".into()));
        assert_eq!(msg.addresses_for("svc.example").len(), 1);
        // An OPT record in the answer section: no Display in hickory, so generic, no panic.
        let mut rdata = Vec::new();
        rdata.extend_from_slice(&[0, 10, 0, 2, 0xab, 0xcd]);
        let msg = Msg::new(15, QR, [1, 1, 0, 0])
            .question(&wire("svc.example"), A)
            .rr(&[0], OPT, 0, &rdata)
            .parse()
            .expect("parses");
        assert!(matches!(&msg.answers[0].data, AnswerData::Other(_)));
        assert!(!msg.edns, "an OPT outside the additional section is not EDNS");
    }

    #[test]
    fn short_inputs_are_errors_not_panics() {
        for len in 0..12 {
            assert!(parse(&vec![0; len], Transport::Udp).is_err());
        }
        assert!(parse(&[0; 12], Transport::Udp).is_ok(), "an empty message is valid");
        // Huge counts with no data: questions missing is an error.
        let msg = Msg::new(1, QR, [0xffff, 0xffff, 0xffff, 0xffff]);
        assert!(msg.parse().is_err());
        // Huge record counts after a valid question: partial, and fast.
        let msg = Msg::new(1, QR, [1, 0xffff, 0xffff, 0xffff]).question(&wire("x.example"), A);
        assert!(msg.parse().expect("partial").partial);
    }

    #[test]
    fn oversized_payload_is_bounded() {
        let mut bytes = Msg::new(1, QR, [1, 0, 0, 0]).question(&wire("x.example"), A).bytes;
        bytes.resize(100_000, 0);
        assert!(parse(&bytes, Transport::Udp).is_ok());
    }

    #[test]
    fn random_corruption_never_panics() {
        let base = {
            let msg = Msg::new(16, QR | RD | RA, [1, 3, 1, 1]).question(&wire("www.fuzz.example"), A);
            let c1 = msg.here() + 12;
            let mut bytes = msg
                .rr(&ptr(12), CNAME, 60, &labels_then_ptr("edge", 16))
                .rr(&ptr(c1), A, 60, &v4([192, 0, 2, 1]))
                .rr(&ptr(c1), AAAA, 60, &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
                .rr(&ptr(16), NS, 60, &labels_then_ptr("ns", 16))
                .bytes;
            bytes.extend_from_slice(&opt(1232, 0));
            bytes
        };
        assert!(parse(&base, Transport::Udp).is_ok());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..5_000 {
            let mut bytes = base.clone();
            for _ in 0..(1 + round % 6) {
                let pos = usize::try_from(next() % bytes.len() as u64).expect("index");
                bytes[pos] = next().to_be_bytes()[5];
            }
            if round % 3 == 0 {
                let cut = usize::try_from(next() % bytes.len() as u64).expect("index");
                bytes.truncate(cut);
            }
            if let Ok(msg) = parse(&bytes, Transport::Udp) {
                for q in &msg.questions {
                    let _ = msg.addresses_for(&q.name);
                    assert!(q.name.bytes().all(|b| (0x21..=0x7e).contains(&b)));
                }
            }
            let _ = parse(&bytes, Transport::Tcp);
        }
    }
}
