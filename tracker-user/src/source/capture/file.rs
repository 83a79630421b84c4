//! Reads pcap and pcapng files as a stream of frames, each with its number and byte offset.
//!
//! pcap-file's slice parsers do the decoding; this module owns the bytes they read, so it knows
//! where every record starts (for error messages a user can act on): the file mapped whole
//! ([`super::mapped`]), its pages given back every 16 MiB, or else a read buffer of about
//! 1 MiB, so its memory stays bounded whatever the file's size. It frames every record itself
//! before handing it to a parser: pcap-file also answers `IncompleteBuffer` for a short field
//! *inside* a whole block, which would otherwise read as "need more bytes" and hide the damage.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;

use pcap_file::PcapError;
use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::{Block, PcapNgParser};

use self::CaptureErrorKind as Kind;
use super::mapped::Mapped;

/// The read buffer's size; it grows only for a record larger than this.
const BUFFER: usize = 1 << 20;
/// No link type carries packets anywhere near this (Wireshark stops at 256 KiB for most): a
/// record announcing more is damage, and buffering it would break the memory bound.
pub const MAX_RECORD: usize = 16 << 20;

const PCAP_HEADER: usize = 24;
const PCAP_RECORD_HEADER: usize = 16;
/// Block type, length, and the trailing length: the smallest pcapng block.
const BLOCK_MIN: usize = 12;
/// A section header block with no options.
const SHB_MIN: usize = 28;
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const PB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;

/// The file's format, as its magic number says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pcap { big_endian: bool, nanos: bool },
    PcapNg,
}

/// What a frame's bytes start with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// An IP header first: LINKTYPE_RAW (101), DLT_RAW as some systems wrote it (12, 14),
    /// LINKTYPE_IPV4 (228) and LINKTYPE_IPV6 (229).
    Raw,
    /// Linux "cooked" capture (`tcpdump -i any`), LINKTYPE_LINUX_SLL (113).
    LinuxSll,
    /// Its second version, LINKTYPE_LINUX_SLL2 (276).
    LinuxSll2,
    /// BSD loopback, LINKTYPE_NULL (0): a 4-byte address family in the capturing host's order.
    Null,
    /// OpenBSD loopback, LINKTYPE_LOOP (108): the family in network order.
    Loop,
    Other(u32),
}

impl Link {
    /// From a pcap header's or pcapng interface's link type.
    pub fn from_linktype(linktype: u32) -> Link {
        // The top bits of a pcap header's field say whether frames carry an FCS (LT_LINKTYPE).
        match linktype & 0x03ff_ffff {
            1 => Link::Ethernet,
            12 | 14 | 101 | 228 | 229 => Link::Raw,
            113 => Link::LinuxSll,
            276 => Link::LinuxSll2,
            0 => Link::Null,
            108 => Link::Loop,
            other => Link::Other(other),
        }
    }
}

/// One packet record of the file.
#[derive(Debug)]
pub struct Frame<'a> {
    /// 1-based, counting packet records only, as tshark numbers frames.
    pub number: u64,
    /// Byte offset of the packet's record (pcap) or block (pcapng) in the file.
    pub offset: u64,
    /// Unix time in nanoseconds. A pcapng Simple Packet Block has no timestamp: it gets the
    /// previous frame's.
    pub ts_ns: u64,
    /// The packet's length on the wire; `data` may be shorter (cut by the snap length).
    pub orig_len: u32,
    pub link: Link,
    pub data: &'a [u8],
}

/// Where a packet record's bytes are, before they are lent out as a [`Frame`].
struct Found {
    offset: u64,
    ts_ns: u64,
    orig_len: u32,
    link: Link,
    data: Range<usize>,
}

/// A pcapng interface, as its description block says.
struct Interface {
    link: Link,
    /// 0 when unlimited.
    snaplen: u32,
    /// Timestamp units per second (if_tsresol, default microseconds).
    units_per_s: u64,
    /// Seconds added to every timestamp (if_tsoffset).
    offset_s: i64,
}

enum Parser {
    Pcap { parser: PcapParser, link: Link, nanos: bool },
    PcapNg { parser: PcapNgParser, interfaces: Vec<Interface> },
}

/// The bytes read ahead of the parsers: `data()[start..end]`, the first at file offset `at`.
/// Either read into `buf`, or the whole file mapped (`end` is then its end).
struct Window<R> {
    src: R,
    buf: Vec<u8>,
    mapped: Option<Mapped>,
    /// The mapping's bytes before this have been given back ([`Mapped::release`]).
    released: usize,
    start: usize,
    end: usize,
    at: u64,
    eof: bool,
}

/// Bytes of a mapped file read between two releases of its pages.
const RELEASE_EVERY: usize = 16 << 20;

impl<R: Read> Window<R> {
    fn read(src: R) -> Self {
        Self { src, buf: vec![0; BUFFER], mapped: None, released: 0, start: 0, end: 0, at: 0, eof: false }
    }

    fn data(&self) -> &[u8] {
        self.mapped.as_ref().map_or(&self.buf, Mapped::bytes)
    }

    /// Makes `n` bytes available from `start` unless the file ends first; returns how many are.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        if self.end - self.start >= n || self.mapped.is_some() {
            return Ok(self.end - self.start);
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n && !self.eof {
            if self.end == self.buf.len() {
                // Doubling rather than growing to `n` at once: a damaged length then costs
                // memory only as far as the file really goes.
                let len = (self.buf.len() * 2).min(self.start + n);
                self.buf.resize(len, 0);
            }
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.start)
    }

    fn fill_or(&mut self, n: usize, packet: Option<u64>) -> Result<usize, CaptureError> {
        self.fill(n).map_err(|e| CaptureError { file: String::new(), packet, offset: self.at, kind: Kind::Io(e) })
    }

    /// The next `n` bytes, or fewer at the end of the file.
    fn get(&self, n: usize) -> &[u8] {
        &self.data()[self.start..self.end.min(self.start + n)]
    }

    /// Moves past `n` bytes. A mapping's pages before the record being consumed are released
    /// now and then: the frame lent out of it is after them.
    fn consume(&mut self, n: usize) {
        if let Some(m) = &self.mapped
            && self.start - self.released >= RELEASE_EVERY
        {
            m.release(self.released..self.start);
            self.released = self.start;
        }
        let n = n.min(self.end - self.start);
        self.start += n;
        self.at += n as u64;
    }
}

/// Reads a capture file frame by frame; see the module's documentation.
pub struct CaptureReader<R> {
    name: String,
    win: Window<R>,
    format: Format,
    parser: Parser,
    /// The pcap file's or the current pcapng section's byte order.
    big_endian: bool,
    frames: u64,
    last_ts: u64,
    /// Set by the end of the file or an error: the reader has nothing more to give.
    done: bool,
}

impl CaptureReader<File> {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let name = path.display().to_string();
        let fail = |e| CaptureError { file: name.clone(), packet: None, offset: 0, kind: Kind::Io(e) };
        let file = File::open(path).map_err(fail)?;
        let win = match Mapped::new(&file) {
            Ok(m) => {
                let end = m.bytes().len();
                Window { src: file, buf: Vec::new(), mapped: Some(m), released: 0, start: 0, end, at: 0, eof: true }
            }
            Err(_) => Window::read(file),
        };
        Self::with_window(name, win)
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file's header; `name` is what error messages call the file. The format comes
    /// from the magic number, never the name (a `.pcap` is often pcapng).
    pub fn new(name: impl Into<String>, src: R) -> Result<Self, CaptureError> {
        Self::with_window(name.into(), Window::read(src))
    }

    fn with_window(name: String, mut win: Window<R>) -> Result<Self, CaptureError> {
        let fail = |kind| CaptureError { file: name.clone(), packet: None, offset: 0, kind };
        let have = win.fill(PCAP_HEADER).map_err(|e| fail(Kind::Io(e)))?;
        let head = win.get(PCAP_HEADER);
        let short = |needed: usize| Kind::TruncatedHeader { needed: needed as u64, present: have as u64 };
        let Some(&[m0, m1, m2, m3]) = head.get(..4) else {
            return Err(fail(if have == 0 { Kind::Empty } else { short(PCAP_HEADER) }));
        };
        let (format, big_endian) = match [m0, m1, m2, m3] {
            [0xa1, 0xb2, 0xc3, 0xd4] => (Format::Pcap { big_endian: true, nanos: false }, true),
            [0xa1, 0xb2, 0x3c, 0x4d] => (Format::Pcap { big_endian: true, nanos: true }, true),
            [0xd4, 0xc3, 0xb2, 0xa1] => (Format::Pcap { big_endian: false, nanos: false }, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (Format::Pcap { big_endian: false, nanos: true }, false),
            [0x0a, 0x0d, 0x0d, 0x0a] => (Format::PcapNg, false),
            magic => return Err(fail(Kind::UnknownMagic(magic))),
        };
        let (parser, big_endian, consumed) = match format {
            Format::Pcap { nanos, .. } => {
                if have < PCAP_HEADER {
                    return Err(fail(short(PCAP_HEADER)));
                }
                let (_, parser) = PcapParser::new(head).map_err(|e| fail(garbage(e)))?;
                let link = Link::from_linktype(word(head, 20, big_endian));
                (Parser::Pcap { parser, link, nanos }, big_endian, PCAP_HEADER)
            }
            Format::PcapNg => {
                let have = win.fill(SHB_MIN).map_err(|e| fail(Kind::Io(e)))?;
                if have < SHB_MIN {
                    return Err(fail(Kind::TruncatedHeader { needed: SHB_MIN as u64, present: have as u64 }));
                }
                let (big_endian, len) = block_head(win.get(BLOCK_MIN), false).map_err(fail)?;
                if win.fill(len).map_err(|e| fail(Kind::Io(e)))? < len {
                    let present = (win.end - win.start) as u64;
                    return Err(fail(Kind::BlockPastEnd { announced: len as u64, present }));
                }
                let (_, parser) = PcapNgParser::new(win.get(len)).map_err(|e| fail(garbage(e)))?;
                (Parser::PcapNg { parser, interfaces: Vec::new() }, big_endian, len)
            }
        };
        win.consume(consumed);
        Ok(Self { name, win, format, parser, big_endian, frames: 0, last_ts: 0, done: false })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes of the file consumed so far (headers, the frames returned and the blocks skipped):
    /// the file's size once `next_frame` has said `None`.
    pub fn bytes_read(&self) -> u64 {
        self.win.at
    }

    /// The next packet; `None` at the end of the file. After an error the reader is done:
    /// records cannot be found again past damage in a pcap file, and a reader that stops at
    /// the first one behaves the same for both formats.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        let found = match &self.parser {
            Parser::Pcap { .. } => self.pcap_record(),
            Parser::PcapNg { .. } => self.pcapng_packet(),
        };
        self.done = !matches!(found, Ok(Some(_)));
        let found = match found {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            // The parts reading records leave the file's name to this one.
            Err(e) => return Err(CaptureError { file: self.name.clone(), ..e }),
        };
        self.frames += 1;
        self.last_ts = found.ts_ns;
        Ok(Some(Frame {
            number: self.frames,
            offset: found.offset,
            ts_ns: found.ts_ns,
            orig_len: found.orig_len,
            link: found.link,
            data: self.win.data().get(found.data).unwrap_or_default(),
        }))
    }

    fn pcap_record(&mut self) -> Result<Option<Found>, CaptureError> {
        let Parser::Pcap { parser, link, nanos } = &self.parser else { return Ok(None) };
        let offset = self.win.at;
        let packet = Some(self.frames + 1);
        let fail = |kind| CaptureError { file: String::new(), packet, offset, kind };
        let have = self.win.fill_or(PCAP_RECORD_HEADER, packet)?;
        if have == 0 {
            return Ok(None);
        }
        if have < PCAP_RECORD_HEADER {
            return Err(fail(Kind::CutHeader { needed: PCAP_RECORD_HEADER as u64, present: have as u64 }));
        }
        let incl_len = word(self.win.get(PCAP_RECORD_HEADER), 8, self.big_endian) as usize;
        if incl_len > MAX_RECORD {
            return Err(fail(Kind::Oversized { announced: incl_len as u64, limit: MAX_RECORD as u64 }));
        }
        let len = PCAP_RECORD_HEADER + incl_len;
        let have = self.win.fill_or(len, packet)?;
        if have < len {
            let present = (have - PCAP_RECORD_HEADER) as u64;
            return Err(fail(Kind::CutPacket { announced: incl_len as u64, present }));
        }
        // The raw record, not PcapPacket: its checks refuse an original length above the snap
        // length, which is what a snap length is for. Lengths and timestamp are taken as
        // written, as tshark does.
        let (_, raw) = parser.next_raw_packet(self.win.get(len)).map_err(|e| fail(garbage(e)))?;
        let frac_ns = if *nanos { u64::from(raw.ts_frac) } else { u64::from(raw.ts_frac) * 1000 };
        let ts_ns = u64::from(raw.ts_sec) * 1_000_000_000 + frac_ns;
        let start = self.win.start + PCAP_RECORD_HEADER;
        let found = Found { offset, ts_ns, orig_len: raw.orig_len, link: *link, data: start..start + incl_len };
        self.win.consume(len);
        Ok(Some(found))
    }

    /// Reads blocks up to the next packet, keeping track of sections and interfaces.
    fn pcapng_packet(&mut self) -> Result<Option<Found>, CaptureError> {
        let Parser::PcapNg { parser, interfaces } = &mut self.parser else { return Ok(None) };
        loop {
            let offset = self.win.at;
            let have = self.win.fill_or(BLOCK_MIN, None)?;
            if have == 0 {
                return Ok(None);
            }
            let head = self.win.get(BLOCK_MIN);
            let ty = word(head, 0, self.big_endian);
            let packet = (head.len() >= 4 && matches!(ty, PB | SPB | EPB)).then_some(self.frames + 1);
            let fail = |kind| CaptureError { file: String::new(), packet, offset, kind };
            let (big_endian, len) = block_head(head, self.big_endian).map_err(fail)?;
            if self.win.fill_or(len, packet)? < len {
                let present = (self.win.end - self.win.start) as u64;
                return Err(fail(Kind::BlockPastEnd { announced: len as u64, present }));
            }
            let block = self.win.get(len);
            if !matches!(ty, SHB | IDB | PB | SPB | EPB) {
                // Framed, never decoded: tracker needs nothing from them, so damage inside a
                // name resolution or statistics block does not stop an import.
                parser.next_raw_block(block).map_err(|e| fail(garbage(e)))?;
                self.win.consume(len);
                continue;
            }
            let (_, parsed) = parser.next_block(block).map_err(|e| fail(garbage(e)))?;
            let found = match parsed {
                Block::SectionHeader(_) => {
                    // Interface numbers start again in each section.
                    interfaces.clear();
                    self.big_endian = big_endian;
                    None
                }
                Block::InterfaceDescription(idb) => {
                    interfaces.push(interface(&idb).map_err(fail)?);
                    None
                }
                parsed => {
                    let (ts_ns, orig_len, link, data) =
                        packet_block(&parsed, block, big_endian, interfaces, self.last_ts).map_err(fail)?;
                    let data = self.win.start + data.start..self.win.start + data.end;
                    Some(Found { offset, ts_ns, orig_len, link, data })
                }
            };
            self.win.consume(len);
            if found.is_some() {
                return Ok(found);
            }
        }
    }
}

/// A pcapng block's byte order (a section header's own, else the section's) and its total
/// length, checked.
fn block_head(head: &[u8], big_endian: bool) -> Result<(bool, usize), Kind> {
    let cut = Kind::CutHeader { needed: BLOCK_MIN as u64, present: head.len() as u64 };
    let big_endian = if word(head, 0, big_endian) == SHB {
        match head.get(8..12) {
            Some([0x1a, 0x2b, 0x3c, 0x4d]) => true,
            Some([0x4d, 0x3c, 0x2b, 0x1a]) => false,
            Some(_) => return Err(damaged("a section header has no byte-order magic")),
            None => return Err(cut),
        }
    } else {
        big_endian
    };
    if head.len() < 8 {
        return Err(cut);
    }
    let len = word(head, 4, big_endian) as usize;
    if len < BLOCK_MIN || !len.is_multiple_of(4) {
        return Err(damaged(format!(
            "the block's length, {len} bytes, is not a multiple of 4 of at least {BLOCK_MIN}"
        )));
    }
    if len > MAX_RECORD {
        return Err(Kind::Oversized { announced: len as u64, limit: MAX_RECORD as u64 });
    }
    if head.len() < BLOCK_MIN {
        return Err(Kind::BlockPastEnd { announced: len as u64, present: head.len() as u64 });
    }
    Ok((big_endian, len))
}

/// A packet block's timestamp, original length, link and data (its range in `block`).
type Packet = (u64, u32, Link, Range<usize>);

fn packet_block(parsed: &Block<'_>, block: &[u8], big: bool, ifs: &[Interface], last_ts: u64) -> Result<Packet, Kind> {
    // An error rather than a skipped packet: tshark refuses the file there too, and frame
    // numbers stay the same as tshark's up to the damage.
    let interface = |id: u32| {
        let n = ifs.len();
        ifs.get(id as usize)
            .ok_or_else(|| damaged(format!("the packet names interface {id}, but its section describes {n}")))
    };
    // pcap-file takes an EPB's timestamp for nanoseconds whatever the interface's resolution
    // (microseconds by default), and a PB's as one 64-bit word (its halves swapped in a
    // little-endian file): both are read here, high then low word at bytes 12..20.
    let units = (u64::from(word(block, 12, big)) << 32) | u64::from(word(block, 16, big));
    // Packet data starts after the block's type and length and the 20 bytes of fields.
    let (interface, ts_ns, orig_len, data) = match parsed {
        Block::EnhancedPacket(p) => {
            let i = interface(p.interface_id)?;
            (i, i.ts_ns(units), p.original_len, 28..28 + p.data.len())
        }
        Block::Packet(p) => {
            let i = interface(u32::from(p.interface_id))?;
            (i, i.ts_ns(units), p.original_len, 28..28 + p.data.len())
        }
        Block::SimplePacket(p) => {
            let i = interface(0)?;
            // An SPB has no captured length: it is the original length cut to the snap
            // length, and pcap-file's data runs on into the padding.
            let cap = if i.snaplen == 0 { p.original_len } else { p.original_len.min(i.snaplen) } as usize;
            if cap > p.data.len() {
                return Err(damaged(format!("the block holds {} bytes of a packet it says has {cap}", p.data.len())));
            }
            (i, last_ts, p.original_len, 12..12 + cap)
        }
        _ => return Err(damaged("not a packet block")),
    };
    Ok((ts_ns, orig_len, interface.link, data))
}

fn interface(idb: &InterfaceDescriptionBlock<'_>) -> Result<Interface, Kind> {
    let link = Link::from_linktype(u32::from(idb.linktype));
    let mut interface = Interface { link, snaplen: idb.snaplen, units_per_s: 1_000_000, offset_s: 0 };
    for option in &idb.options {
        match *option {
            InterfaceDescriptionOption::IfTsResol(resol) => {
                // The top bit chooses a power of 2 over a power of 10; finer than a u64 can
                // count per second is damage.
                let exp = u32::from(resol & 0x7f);
                let per_s = if resol & 0x80 != 0 { 1u64.checked_shl(exp) } else { 10u64.checked_pow(exp) };
                let impossible =
                    || damaged(format!("the interface's timestamp resolution ({resol:#04x}) is impossible"));
                interface.units_per_s = per_s.ok_or_else(impossible)?;
            }
            // Signed in the specification; pcap-file reads it unsigned.
            InterfaceDescriptionOption::IfTsOffset(s) => interface.offset_s = s as i64,
            _ => {}
        }
    }
    Ok(interface)
}

impl Interface {
    /// Whole seconds, then the fraction cut to nanoseconds, as Wireshark computes them.
    fn ts_ns(&self, units: u64) -> u64 {
        let (units, per_s) = (u128::from(units), u128::from(self.units_per_s));
        let secs = (units / per_s) as i128 + i128::from(self.offset_s);
        let ns = secs * 1_000_000_000 + ((units % per_s) * 1_000_000_000 / per_s) as i128;
        // u64 nanoseconds reach the year 2554; a negative offset can reach before 1970.
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }
}

fn word(bytes: &[u8], at: usize, big_endian: bool) -> u32 {
    let b: [u8; 4] = bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).unwrap_or_default();
    if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
}

fn damaged(why: impl Into<String>) -> Kind {
    Kind::Garbage(why.into())
}

fn garbage(e: PcapError) -> Kind {
    damaged(match e {
        // Every block is whole before it is parsed: this is a field running past its end.
        PcapError::IncompleteBuffer => "a field runs past the end of its block".into(),
        PcapError::InvalidField(what) => what.into(),
        PcapError::Utf8Error(_) | PcapError::FromUtf8Error(_) => "a text field is not UTF-8".into(),
        other => other.to_string(),
    })
}

/// What a frame's link layer leaves: where IP starts, or why it is not IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3<'a> {
    /// The whole frame: the shared kernel parser reads Ethernet and VLAN tags itself.
    Ethernet(&'a [u8]),
    /// Starts at the IP header.
    Ip(&'a [u8]),
    /// Another protocol (ARP, ...), or a link type tracker does not read.
    NotIp,
    /// No room for anything after its link-layer header: damaged, or cut by a tiny snap
    /// length. Apart from `NotIp` so that an import can count damage.
    Short,
}

pub fn l3(link: Link, data: &[u8]) -> L3<'_> {
    // What follows a header of `len` bytes, if `proto` is an IP EtherType.
    let after = |len: usize, proto: Option<&[u8]>| match (data.get(len..), proto) {
        (Some(ip), Some([0x08, 0x00] | [0x86, 0xdd])) if !ip.is_empty() => L3::Ip(ip),
        (Some(ip), Some(_)) if !ip.is_empty() => L3::NotIp,
        _ => L3::Short,
    };
    match link {
        Link::Ethernet if data.len() > 14 => L3::Ethernet(data),
        Link::Ethernet => L3::Short,
        // The version nibble, as tshark tells IPv4 from IPv6 on LINKTYPE_RAW.
        Link::Raw => match data.first().map(|b| b >> 4) {
            Some(4 | 6) => L3::Ip(data),
            Some(_) => L3::NotIp,
            None => L3::Short,
        },
        Link::LinuxSll => after(16, data.get(14..16)),
        Link::LinuxSll2 => after(20, data.get(..2)),
        Link::Null | Link::Loop => {
            let (Some(family), Some(ip)) = (data.get(..4), data.get(4..).filter(|ip| !ip.is_empty())) else {
                return L3::Short;
            };
            let be = word(family, 0, true);
            // Null is in the capturing host's order: a family never needs the top 16 bits,
            // so a value that does is the other order (Wireshark's test too).
            let family = if link == Link::Null && be > 0xffff { be.swap_bytes() } else { be };
            // AF_INET everywhere; AF_INET6 is 10 on Linux, 24 on NetBSD and OpenBSD, 28 on
            // FreeBSD, 30 on macOS.
            match family {
                2 | 10 | 24 | 28 | 30 => L3::Ip(ip),
                _ => L3::NotIp,
            }
        }
        Link::Other(_) => L3::NotIp,
    }
}

/// Why a capture file could not be read, and where.
#[derive(Debug)]
pub struct CaptureError {
    /// The file's name as the user gave it.
    pub file: String,
    /// The packet being read, 1-based; `None` for the file's header and other blocks.
    pub packet: Option<u64>,
    /// Byte offset of the record or block being read.
    pub offset: u64,
    pub kind: CaptureErrorKind,
}

/// What went wrong:
/// - `TruncatedHeader`: the file ends inside its header;
/// - `CutHeader`: it ends inside a pcap record's header or a pcapng block's type and length;
/// - `CutPacket`: it ends inside a pcap record's data;
/// - `BlockPastEnd`: a pcapng block's length goes past its end (`present` counts from the
///   block's start);
/// - `Oversized`: a record announces more than [`MAX_RECORD`] bytes;
/// - `Garbage`: a record pcap-file (or this reader) rejects, with the reason.
#[derive(Debug)]
pub enum CaptureErrorKind {
    Io(io::Error),
    Empty,
    UnknownMagic([u8; 4]),
    TruncatedHeader { needed: u64, present: u64 },
    CutHeader { needed: u64, present: u64 },
    CutPacket { announced: u64, present: u64 },
    BlockPastEnd { announced: u64, present: u64 },
    Oversized { announced: u64, limit: u64 },
    Garbage(String),
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CaptureErrorKind as K;
        const FROM: &str = " from the block's start";
        let g = grouped;
        write!(f, "{}: ", self.file)?;
        match self.packet {
            Some(n) => write!(f, "packet {} at byte {}: ", g(n), g(self.offset))?,
            None if self.offset > 0 => write!(f, "at byte {}: ", g(self.offset))?,
            None => {}
        }
        let (lead, a, b, tail) = match &self.kind {
            K::Io(e) => return write!(f, "the file could not be read: {e}"),
            K::Empty => return write!(f, "not a capture file: it is empty"),
            K::UnknownMagic(m) => {
                let text: String =
                    m.iter().map(|&b| if b == b' ' || b.is_ascii_graphic() { b as char } else { '.' }).collect();
                let [m0, m1, m2, m3] = m;
                return write!(
                    f,
                    "not a capture file: it starts with {m0:02x} {m1:02x} {m2:02x} {m3:02x} ({text:?}); pcap starts with \
                     d4 c3 b2 a1 or a1 b2 c3 d4, pcapng with 0a 0d 0d 0a"
                );
            }
            K::Garbage(why) => return write!(f, "the file is damaged here: {why}"),
            K::Oversized { announced, limit } => {
                let (a, l) = (g(*announced), g(*limit));
                return write!(
                    f,
                    "the record announces {a} bytes, more than a packet can have ({l}): the file is damaged here"
                );
            }
            K::TruncatedHeader { needed: n, present: p } => ("the file is cut short: its header needs", n, p, ""),
            K::CutHeader { needed: n, present: p } => ("the file is cut short: a record header needs", n, p, ""),
            K::CutPacket { announced: a, present: p } => ("the packet is cut short: its record announces", a, p, ""),
            K::BlockPastEnd { announced: a, present: p } => ("the file is cut short: the block announces", a, p, FROM),
        };
        write!(f, "{lead} {} bytes, the file has {}{tail}", g(*a), g(*b))
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            CaptureErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// 1234567 as "1,234,567".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[path = "file_tests.rs"]
pub(crate) mod tests;
