//! Tests of the capture reader: files built here byte by byte, damaged copies of them, and the
//! shared third-party captures compared with tshark.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// `TRACKER_PCAPS`, else `shared/testdata/pcaps` beside the repository (absent in a user's
/// clone, present on the developers' and CI machines).
pub(crate) fn pcaps_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TRACKER_PCAPS")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/pcaps"), PathBuf::from);
    dir.is_dir().then_some(dir)
}

/// The shared captures' directory; returns from the test, with a note, where it is absent.
macro_rules! pcaps_or_skip {
    () => {
        match $crate::source::capture::file::tests::pcaps_dir() {
            Some(dir) => dir,
            None => {
                println!("skipped: ../shared/testdata/pcaps not found");
                return;
            }
        }
    };
}
pub(crate) use pcaps_or_skip;

fn put16(out: &mut Vec<u8>, v: u16, big: bool) {
    out.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}

fn put32(out: &mut Vec<u8>, v: u32, big: bool) {
    out.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}

/// A pcap record: seconds, fraction (µs or ns), original length, captured bytes.
type Record<'a> = (u32, u32, u32, &'a [u8]);

fn pcap(big: bool, nanos: bool, linktype: u32, snaplen: u32, records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    put32(&mut out, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }, big);
    put16(&mut out, 2, big);
    put16(&mut out, 4, big);
    put32(&mut out, 0, big);
    put32(&mut out, 0, big);
    put32(&mut out, snaplen, big);
    put32(&mut out, linktype, big);
    for &(sec, frac, orig, data) in records {
        put32(&mut out, sec, big);
        put32(&mut out, frac, big);
        put32(&mut out, data.len() as u32, big);
        put32(&mut out, orig, big);
        out.extend_from_slice(data);
    }
    out
}

/// A pcapng file being written, in the current section's byte order.
struct Ng {
    big: bool,
    out: Vec<u8>,
}

impl Ng {
    fn new(big: bool) -> Ng {
        let mut ng = Ng { big, out: Vec::new() };
        ng.section(big);
        ng
    }

    /// Appends a block; returns its offset.
    fn block(&mut self, ty: u32, body: &[u8]) -> u64 {
        let at = self.out.len() as u64;
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        put32(&mut self.out, ty, self.big);
        put32(&mut self.out, len, self.big);
        self.out.extend_from_slice(body);
        self.out.resize(self.out.len() + padded - body.len(), 0);
        put32(&mut self.out, len, self.big);
        at
    }

    fn section(&mut self, big: bool) -> u64 {
        self.big = big;
        let mut body = Vec::new();
        put32(&mut body, 0x1a2b_3c4d, big);
        put16(&mut body, 1, big);
        put16(&mut body, 0, big);
        body.extend_from_slice(&[0xff; 8]);
        self.block(0x0a0d_0d0a, &body)
    }

    /// An interface, with options as (code, value).
    fn idb(&mut self, linktype: u16, snaplen: u32, options: &[(u16, Vec<u8>)]) -> u64 {
        let mut body = Vec::new();
        put16(&mut body, linktype, self.big);
        put16(&mut body, 0, self.big);
        put32(&mut body, snaplen, self.big);
        for (code, value) in options {
            put16(&mut body, *code, self.big);
            put16(&mut body, value.len() as u16, self.big);
            body.extend_from_slice(value);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        if !options.is_empty() {
            body.extend_from_slice(&[0; 4]);
        }
        self.block(1, &body)
    }

    fn epb(&mut self, interface: u32, units: u64, orig: u32, data: &[u8]) -> u64 {
        let mut body = Vec::new();
        put32(&mut body, interface, self.big);
        put32(&mut body, (units >> 32) as u32, self.big);
        put32(&mut body, units as u32, self.big);
        put32(&mut body, data.len() as u32, self.big);
        put32(&mut body, orig, self.big);
        body.extend_from_slice(data);
        self.block(6, &body)
    }

    fn spb(&mut self, orig: u32, data: &[u8]) -> u64 {
        let mut body = Vec::new();
        put32(&mut body, orig, self.big);
        body.extend_from_slice(data);
        self.block(3, &body)
    }

    /// An if_tsoffset option's value.
    fn offset(&self, s: i64) -> Vec<u8> {
        if self.big { s.to_be_bytes().to_vec() } else { s.to_le_bytes().to_vec() }
    }
}

/// A frame copied out of the reader.
#[derive(Debug, PartialEq, Eq)]
struct Owned {
    number: u64,
    offset: u64,
    ts_ns: u64,
    orig_len: u32,
    link: Link,
    data: Vec<u8>,
}

/// Every frame up to the end or the first error, from any reader.
fn read_from(r: impl Read) -> (Vec<Owned>, Option<CaptureError>) {
    let mut reader = match CaptureReader::new("test.pcap", r) {
        Ok(reader) => reader,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut frames = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(f)) => frames.push(Owned {
                number: f.number,
                offset: f.offset,
                ts_ns: f.ts_ns,
                orig_len: f.orig_len,
                link: f.link,
                data: f.data.to_vec(),
            }),
            Ok(None) => return (frames, None),
            Err(e) => {
                // A reader that has failed stays done.
                assert!(matches!(reader.next_frame(), Ok(None)));
                return (frames, Some(e));
            }
        }
    }
}

fn read_all(bytes: &[u8]) -> (Vec<Owned>, Option<CaptureError>) {
    read_from(bytes)
}

/// Hands out at most `n` bytes per read, as a pipe might.
struct Trickle<'a> {
    bytes: &'a [u8],
    n: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.n.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The first frame of a two-record file: 60 bytes; the second: 100 of a 1514-byte packet,
/// cut by a 100-byte snap length (pcap-file's own PcapPacket would refuse it).
fn two_records(big: bool, nanos: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (a, b) = (payload(60, 1), payload(100, 2));
    let frac = if nanos { 123_456_789 } else { 123_456 };
    let file = pcap(big, nanos, 1, 100, &[(1_700_000_000, frac, 60, &a), (1_700_000_001, 999_999, 1514, &b)]);
    (file, a, b)
}

#[test]
fn pcap_in_both_byte_orders_and_resolutions() {
    for (big, nanos) in [(false, false), (true, false), (false, true), (true, true)] {
        let (file, a, b) = two_records(big, nanos);
        let mut reader = CaptureReader::new("t", file.as_slice()).unwrap();
        assert_eq!(reader.format(), Format::Pcap { big_endian: big, nanos });
        assert_eq!(reader.bytes_read(), 24);
        let (frames, err) = read_all(&file);
        assert!(err.is_none(), "{err:?}");
        let (ts1, ts2) = if nanos {
            (1_700_000_000_123_456_789, 1_700_000_001_000_999_999)
        } else {
            (1_700_000_000_123_456_000, 1_700_000_001_999_999_000)
        };
        assert_eq!(
            frames,
            [
                Owned { number: 1, offset: 24, ts_ns: ts1, orig_len: 60, link: Link::Ethernet, data: a.clone() },
                Owned { number: 2, offset: 24 + 16 + 60, ts_ns: ts2, orig_len: 1514, link: Link::Ethernet, data: b },
            ]
        );
        while reader.next_frame().unwrap().is_some() {}
        assert_eq!(reader.bytes_read(), file.len() as u64);
        assert!(reader.next_frame().unwrap().is_none());
    }
}

#[test]
fn link_types() {
    for (linktype, link) in [
        (0, Link::Null),
        (1, Link::Ethernet),
        (12, Link::Raw),
        (14, Link::Raw),
        (101, Link::Raw),
        (228, Link::Raw),
        (229, Link::Raw),
        (108, Link::Loop),
        (113, Link::LinuxSll),
        (276, Link::LinuxSll2),
        (147, Link::Other(147)),
        // FCS bits in a pcap header's field.
        (0x1400_0001, Link::Ethernet),
    ] {
        assert_eq!(Link::from_linktype(linktype), link, "{linktype}");
        let file = pcap(true, false, linktype, 65535, &[(1, 0, 4, &[0x45, 0, 0, 0])]);
        assert_eq!(read_all(&file).0[0].link, link);
    }
}

/// Two sections (little- then big-endian), interfaces with different links and timestamp
/// resolutions, blocks to skip, a Simple Packet Block; ends with a packet naming an interface
/// its section lacks. Returns the file and the offsets of its packet blocks.
fn sections() -> (Vec<u8>, Vec<u64>) {
    let mut ng = Ng::new(false);
    let mut at = Vec::new();
    ng.idb(1, 64, &[]);
    ng.idb(101, 0, &[(9, vec![9])]);
    let offset = ng.offset(-100);
    ng.idb(0, 0, &[(9, vec![0x80 | 10]), (14, offset), (2, b"lo0".to_vec())]);
    at.push(ng.epb(0, 1_700_000_000_123_456, 60, &payload(60, 3)));
    // A name resolution block, a statistics block and a custom one: skipped.
    let mut nrb = Vec::new();
    put16(&mut nrb, 1, false);
    put16(&mut nrb, 14, false);
    nrb.extend_from_slice(&[192, 0, 2, 1]);
    nrb.extend_from_slice(b"a.example\0");
    // Padding to 16, then the end of the records.
    nrb.resize(24, 0);
    ng.block(4, &nrb);
    ng.block(5, &[0; 12]);
    ng.block(0x0000_0bad, b"custom");
    at.push(ng.epb(1, 1_700_000_000_123_456_789, 40, &[0x60; 40]));
    at.push(ng.epb(2, 1_700_000_100 * 1024 + 512, 24, &[2, 0, 0, 0, 0x45, 0, 0, 20]));
    at.push(ng.spb(100, &payload(100, 4)));
    ng.section(true);
    ng.idb(108, 0, &[]);
    at.push(ng.epb(0, 1_800_000_000_000_001, 8, &[0, 0, 0, 2, 0x45, 0, 0, 20]));
    at.push(ng.epb(1, 1, 8, &[0; 8]));
    (ng.out, at)
}

#[test]
fn pcapng_sections_interfaces_and_resolutions() {
    let (file, at) = sections();
    assert_eq!(CaptureReader::new("t", file.as_slice()).unwrap().format(), Format::PcapNg);
    let (frames, err) = read_all(&file);
    let summary: Vec<_> =
        frames.iter().map(|f| (f.number, f.offset, f.ts_ns, f.orig_len, f.link, f.data.len())).collect();
    assert_eq!(
        summary,
        [
            (1, at[0], 1_700_000_000_123_456_000, 60, Link::Ethernet, 60),
            (2, at[1], 1_700_000_000_123_456_789, 40, Link::Raw, 40),
            // 1/1024 s units, 100 s taken off by if_tsoffset.
            (3, at[2], 1_700_000_000_500_000_000, 24, Link::Null, 8),
            // No timestamp: the previous frame's; 100 bytes cut to the interface's 64.
            (4, at[3], 1_700_000_000_500_000_000, 100, Link::Ethernet, 64),
            (5, at[4], 1_800_000_000_000_001_000, 8, Link::Loop, 8),
        ]
    );
    assert_eq!(frames[3].data, payload(64, 4));
    let err = err.unwrap();
    assert_eq!((err.packet, err.offset), (Some(6), at[5]));
    assert!(matches!(&err.kind, CaptureErrorKind::Garbage(why) if why.contains("interface 1")), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "test.pcap: packet 6 at byte {}: the file is damaged here: the packet names interface 1, but its section describes 1",
            at[5]
        )
    );
}

/// The error reading `bytes`, after the frames before it.
fn error_of(bytes: &[u8]) -> (usize, CaptureError) {
    let (frames, err) = read_all(bytes);
    (frames.len(), err.expect("an error"))
}

#[test]
fn damaged_pcap_files() {
    use CaptureErrorKind as K;
    let (file, _, _) = two_records(false, false);
    let second = 24 + 16 + 60;

    let (n, e) = error_of(&[]);
    assert!(n == 0 && matches!(e.kind, K::Empty) && e.packet.is_none() && e.offset == 0);
    assert_eq!(e.to_string(), "test.pcap: not a capture file: it is empty");

    let (_, e) = error_of(&file[..10]);
    assert!(matches!(e.kind, K::TruncatedHeader { needed: 24, present: 10 }) && e.packet.is_none() && e.offset == 0);
    assert_eq!(e.to_string(), "test.pcap: the file is cut short: its header needs 24 bytes, the file has 10");

    let (n, e) = error_of(&file[..second + 5]);
    assert!(n == 1 && matches!(e.kind, K::CutHeader { needed: 16, present: 5 }), "{e}");
    assert_eq!((e.packet, e.offset), (Some(2), second as u64));

    let (n, e) = error_of(&file[..second + 16 + 37]);
    assert!(n == 1 && matches!(e.kind, K::CutPacket { announced: 100, present: 37 }), "{e}");
    assert_eq!((e.packet, e.offset), (Some(2), second as u64));
    assert_eq!(
        e.to_string(),
        "test.pcap: packet 2 at byte 100: the packet is cut short: its record announces 100 bytes, the file has 37"
    );

    // A record announcing 4 GiB.
    let mut huge = file.clone();
    huge[second + 8..second + 12].copy_from_slice(&[0xff; 4]);
    let (n, e) = error_of(&huge);
    assert!(n == 1 && matches!(e.kind, K::Oversized { announced: 0xffff_ffff, .. }), "{e}");
    assert_eq!((e.packet, e.offset), (Some(2), second as u64));

    let (_, e) = error_of(b"hello, world, this is text\n");
    assert!(matches!(e.kind, K::UnknownMagic(m) if m == *b"hell") && e.packet.is_none() && e.offset == 0);
    let (_, e) = error_of(&[0, 1]);
    assert!(matches!(e.kind, K::TruncatedHeader { needed: 24, present: 2 }));
}

#[test]
fn damaged_pcapng_files() {
    use CaptureErrorKind as K;
    let (file, at) = sections();
    let first = at[0] as usize;
    let epb_len = 12 + 20 + 60;

    // Cut inside the section header, before and after its minimum size.
    let (_, e) = error_of(&file[..20]);
    assert!(matches!(e.kind, K::TruncatedHeader { needed: 28, present: 20 }), "{e}");
    let mut long_shb = Ng { big: false, out: Vec::new() };
    let mut body = Vec::new();
    put32(&mut body, 0x1a2b_3c4d, false);
    // Version 1.0, section length -1, a comment "test", the end of options.
    body.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0, 4, 0]);
    body.extend_from_slice(b"test\0\0\0\0");
    long_shb.block(0x0a0d_0d0a, &body);
    let (_, e) = error_of(&long_shb.out[..30]);
    assert!(
        matches!(e.kind, K::BlockPastEnd { announced: 40, present: 30 }) && e.packet.is_none() && e.offset == 0,
        "{e}"
    );

    // A packet block whose length points past the end.
    let (n, e) = error_of(&file[..first + 50]);
    assert!(n == 0 && matches!(e.kind, K::BlockPastEnd { announced, present: 50 } if announced == epb_len), "{e}");
    assert_eq!((e.packet, e.offset), (Some(1), at[0]));
    assert_eq!(
        e.to_string(),
        format!(
            "test.pcap: packet 1 at byte {}: the file is cut short: the block announces 92 bytes, the file has 50 from the block's start",
            at[0]
        )
    );

    // Cut inside a block's type and length.
    let (n, e) = error_of(&file[..first + 6]);
    assert!(n == 0 && matches!(e.kind, K::CutHeader { needed: 12, present: 6 }), "{e}");
    assert_eq!((e.packet, e.offset), (Some(1), at[0]));

    // A captured length larger than the block: pcap-file's reason comes through.
    let mut bad = file.clone();
    bad[first + 20..first + 24].copy_from_slice(&200u32.to_le_bytes());
    let (n, e) = error_of(&bad);
    assert!(n == 0 && matches!(&e.kind, K::Garbage(why) if why.contains("captured_len")), "{e}");
    assert_eq!((e.packet, e.offset), (Some(1), at[0]));

    // A length that is not a multiple of 4, and a trailer that disagrees.
    let mut bad = file.clone();
    bad[first + 4] += 1;
    let (_, e) = error_of(&bad);
    assert!(matches!(&e.kind, K::Garbage(why) if why.contains("multiple of 4")), "{e}");
    let mut bad = file.clone();
    bad[first + epb_len as usize - 4] += 4;
    let (_, e) = error_of(&bad);
    assert!(matches!(&e.kind, K::Garbage(_)) && e.offset == at[0], "{e}");

    // An impossible timestamp resolution is reported at its interface, not as a packet.
    let mut ng = Ng::new(false);
    let idb = ng.idb(1, 0, &[(9, vec![40])]);
    ng.epb(0, 1, 4, &[0; 4]);
    let (_, e) = error_of(&ng.out);
    assert!(matches!(&e.kind, K::Garbage(why) if why.contains("resolution")), "{e}");
    assert_eq!((e.packet, e.offset), (None, idb));
    assert!(e.to_string().starts_with(&format!("test.pcap: at byte {idb}: the file is damaged here: ")), "{e}");
}

#[test]
fn messages_read_well() {
    let e = |packet, offset, kind| CaptureError { file: "capture.pcap".into(), packet, offset, kind }.to_string();
    assert_eq!(
        e(Some(1234), 56_789, CaptureErrorKind::CutPacket { announced: 1200, present: 345 }),
        "capture.pcap: packet 1,234 at byte 56,789: the packet is cut short: its record announces 1,200 bytes, the file has 345"
    );
    assert_eq!(
        CaptureError {
            file: "notes.txt".into(),
            packet: None,
            offset: 0,
            kind: CaptureErrorKind::UnknownMagic(*b"hell")
        }
        .to_string(),
        "notes.txt: not a capture file: it starts with 68 65 6c 6c (\"hell\"); pcap starts with d4 c3 b2 a1 or a1 b2 c3 d4, \
         pcapng with 0a 0d 0d 0a"
    );
    assert_eq!(
        e(None, 0, CaptureErrorKind::UnknownMagic([0, 0x0d, b'"', 0xff])),
        "capture.pcap: not a capture file: it starts with 00 0d 22 ff (\"..\\\".\"); pcap starts with d4 c3 b2 a1 or \
         a1 b2 c3 d4, pcapng with 0a 0d 0d 0a"
    );
    assert_eq!(grouped(0), "0");
    assert_eq!(grouped(999), "999");
    assert_eq!(grouped(1000), "1,000");
    assert_eq!(grouped(u64::MAX), "18,446,744,073,709,551,615");
    let missing = CaptureReader::open(Path::new("/nonexistent/x.pcap")).err().unwrap();
    assert!(missing.to_string().starts_with("/nonexistent/x.pcap: the file could not be read: "), "{missing}");
    assert!(std::error::Error::source(&missing).is_some());
}

#[test]
fn small_reads_and_a_record_larger_than_the_buffer() {
    let big = payload(3 << 20, 5);
    let small = payload(1000, 6);
    let file = pcap(false, false, 1, 4 << 20, &[(1, 0, 1000, &small), (2, 0, 3 << 20, &big), (3, 0, 1000, &small)]);
    let (whole, err) = read_all(&file);
    assert!(err.is_none());
    assert_eq!(whole.iter().map(|f| f.data.len()).collect::<Vec<_>>(), [1000, 3 << 20, 1000]);
    assert_eq!(whole[1].data, big);
    for n in [1, 7, 4096] {
        let (frames, err) = read_from(Trickle { bytes: &file, n });
        assert!(err.is_none());
        assert_eq!(frames, whole, "reads of {n} bytes");
    }
    let (file, _) = sections();
    let (whole, _) = read_all(&file);
    for n in [1, 5, 64] {
        assert_eq!(read_from(Trickle { bytes: &file, n }).0, whole, "reads of {n} bytes");
    }
}

#[test]
fn l3_for_each_link() {
    let ipv4 = [0x45, 0, 0, 20];
    let ipv6 = [0x60, 0, 0, 0];
    // Ethernet with an 802.1Q tag: the kernel parser reads the tags, so the whole frame.
    let mut vlan = vec![0xff; 12];
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
    vlan.extend_from_slice(&ipv4);
    assert_eq!(l3(Link::Ethernet, &vlan), L3::Ethernet(&vlan));
    assert_eq!(l3(Link::Ethernet, &vlan[..14]), L3::Short);

    assert_eq!(l3(Link::Raw, &ipv4), L3::Ip(&ipv4));
    assert_eq!(l3(Link::Raw, &ipv6), L3::Ip(&ipv6));
    assert_eq!(l3(Link::Raw, &[0x20, 0]), L3::NotIp);
    assert_eq!(l3(Link::Raw, &[]), L3::Short);

    // SLL: 16 bytes, the protocol at 14.
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x86, 0xdd];
    sll.extend_from_slice(&ipv6);
    assert_eq!(l3(Link::LinuxSll, &sll), L3::Ip(&ipv6));
    sll[14..16].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(l3(Link::LinuxSll, &sll), L3::NotIp);
    assert_eq!(l3(Link::LinuxSll, &sll[..16]), L3::Short);

    // SLL2: 20 bytes, the protocol at 0.
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
    sll2.extend_from_slice(&ipv4);
    assert_eq!(l3(Link::LinuxSll2, &sll2), L3::Ip(&ipv4));
    sll2[..2].copy_from_slice(&[0x88, 0xcc]);
    assert_eq!(l3(Link::LinuxSll2, &sll2), L3::NotIp);
    assert_eq!(l3(Link::LinuxSll2, &sll2[..19]), L3::Short);

    // BSD loopback: the family in the capturing host's order, either.
    for family in [[2, 0, 0, 0], [0, 0, 0, 2], [30, 0, 0, 0], [0, 0, 0, 24], [28, 0, 0, 0], [10, 0, 0, 0]] {
        let frame = [&family[..], &ipv4].concat();
        assert_eq!(l3(Link::Null, &frame), L3::Ip(&ipv4), "{family:?}");
    }
    assert_eq!(l3(Link::Null, &[[7, 0, 0, 0], ipv4].concat()), L3::NotIp);
    assert_eq!(l3(Link::Null, &[2, 0, 0, 0]), L3::Short);
    // OpenBSD loopback: network order only.
    assert_eq!(l3(Link::Loop, &[[0, 0, 0, 24], ipv6].concat()), L3::Ip(&ipv6));
    assert_eq!(l3(Link::Loop, &[[2, 0, 0, 0], ipv4].concat()), L3::NotIp);
    assert_eq!(l3(Link::Loop, &[0, 0]), L3::Short);

    assert_eq!(l3(Link::Other(147), &vlan), L3::NotIp);
}

/// xorshift64: deterministic, no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn damaged_variants_never_panic_and_say_where() {
    let (pcap_le, _, _) = two_records(false, false);
    let (pcap_be, _, _) = two_records(true, true);
    let (ng, _) = sections();
    let bases = [pcap_le, pcap_be, ng];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // How the variants ended, to show the damage reaches past the headers.
    let mut endings = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..2100 {
        let mut bytes = bases[round % bases.len()].clone();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let bit = rng.below(bytes.len() * 8);
                    bytes[bit / 8] ^= 1 << (bit % 8);
                }
            }
            1 => bytes.truncate(rng.below(bytes.len())),
            2 => {
                let at = rng.below(bytes.len());
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                bytes[at..end].iter_mut().for_each(|b| *b = rng.next() as u8);
            }
            _ => {
                // Lengths are where damage hurts most: a random word somewhere.
                let at = rng.below(bytes.len() - 4);
                bytes[at..at + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
            }
        }
        let result = std::panic::catch_unwind(|| (read_all(&bytes), read_from(Trickle { bytes: &bytes, n: 3 })));
        let ((frames, err), (trickled, trickled_err)) =
            result.unwrap_or_else(|_| panic!("round {round}: {bytes:02x?}"));
        assert_eq!(frames, trickled, "round {round}");
        assert_eq!(err.as_ref().map(ToString::to_string), trickled_err.as_ref().map(ToString::to_string));
        let len = bytes.len() as u64;
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.number, i as u64 + 1);
            assert!(f.offset < len && f.offset + f.data.len() as u64 <= len, "round {round}");
        }
        let ending = err.as_ref().map_or("whole".into(), |e| format!("{:?}", e.kind));
        *endings.entry(ending.split([' ', '(']).next().unwrap_or_default().to_string()).or_default() += 1;
        if let Some(e) = err {
            assert!(e.offset <= len, "round {round}: {e}");
            assert!(e.packet.is_none() || e.packet == Some(frames.len() as u64 + 1), "round {round}: {e}");
            assert!(frames.last().is_none_or(|f| f.offset < e.offset), "round {round}: {e}");
        }
    }
    println!("{endings:?}");
    assert!(endings.len() >= 8 && endings["whole"] > 100, "{endings:?}");
}

/// Per frame: number, time in ns, length, captured length.
type Summary = Vec<(u64, u64, u32, u32)>;

/// What tshark says of a file: its frames and its complaints; `None` without tshark.
fn tshark(path: &Path) -> Option<(Summary, String)> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
        ])
        .output()
        .ok()?;
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let (secs, frac) = f[1].split_once('.').unwrap_or((f[1], "0"));
            let ns = secs.parse::<u64>().unwrap() * 1_000_000_000 + format!("{frac:0<9}")[..9].parse::<u64>().unwrap();
            (f[0].parse().unwrap(), ns, f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect();
    let complaints =
        String::from_utf8_lossy(&out.stderr).lines().filter(|l| !l.starts_with("Running as user")).collect();
    Some((frames, complaints))
}

#[test]
fn shared_captures_match_tshark() {
    let dir = pcaps_or_skip!();
    // What tshark 4.0 reads of each, to the end and without complaint, frames included; the
    // files that are fuzzed or malformed are so above the capture layer.
    let expected = [
        ("ndpi__badpackets.pcap", 93),
        ("ndpi__dns-google-nsid.pcapng", 14),
        ("ndpi__dns_ambiguous_names.pcap", 20),
        ("ndpi__dns_fragmented.pcap", 66),
        ("ndpi__fuzz-2006-06-26-2594.pcap", 691),
        ("ndpi__ip_fragmented_garbage.pcap", 1252),
        ("ndpi__malformed_dns.pcap", 6),
        ("ndpi__ssh.pcap", 295),
        ("tcpdump__dns_fwdptr.pcap", 1),
        ("zeek__dns__ech.pcap", 4),
        ("zeek__ipv6-fragmented-dns.pcap", 8),
        ("zeek__quic__quicdoq.pcap", 9),
        ("zeek__trunc__ip6-ext-trunc.pcap", 1),
    ];
    let have_tshark = Command::new("tshark").arg("-v").output().is_ok_and(|o| o.status.success());
    if !have_tshark {
        println!("note: tshark is not on PATH; frame counts only, no comparison of times and lengths");
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let mut reader = CaptureReader::open(&path).unwrap();
        let mut ours = Vec::new();
        let err = loop {
            match reader.next_frame() {
                Ok(Some(f)) => ours.push((f.number, f.ts_ns, f.orig_len, f.data.len() as u32)),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let count = expected.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
        match count {
            Some(count) => {
                assert!(err.is_none(), "{err:?}");
                assert_eq!(ours.len(), count, "{name}");
                assert_eq!(reader.bytes_read(), std::fs::metadata(&path).unwrap().len(), "{name}");
            }
            None => println!("note: {name} has no expectation here; compared with tshark only"),
        }
        let Some((theirs, complaints)) = have_tshark.then(|| tshark(&path)).flatten() else { continue };
        // A file tshark complains about must stop us too, after the same frames.
        assert_eq!(err.is_some(), !complaints.is_empty(), "{name}: ours {err:?}, tshark: {complaints}");
        assert_eq!(ours, theirs, "{name}");
        println!("{name}: {} frames, as tshark", ours.len());
    }
}

/// `cargo test --release -p tracker-user --lib capture::file::tests::speed -- --ignored --nocapture`
#[test]
#[ignore = "writes 2 x 100 MB to the temporary directory"]
fn speed() {
    let mut rng = Rng(1);
    let data = payload(1514, 7);
    let mut records = Vec::new();
    let mut size = 24;
    while size < 100_000_000 {
        let len = [60, 60, 66, 120, 590, 1514, 1514][rng.below(7)];
        records.push((1_700_000_000 + (records.len() / 1000) as u32, 0, len as u32, &data[..len]));
        size += 16 + len;
    }
    let mut ng = Ng::new(false);
    ng.idb(1, 0, &[(2, b"eth0".to_vec())]);
    for &(sec, _, orig, data) in &records {
        ng.epb(0, u64::from(sec) * 1_000_000, orig, data);
    }
    for (format, bytes) in [("pcap", pcap(false, false, 1, 65535, &records)), ("pcapng", ng.out)] {
        let path = std::env::temp_dir().join(format!("tracker-speed-{}.{format}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        for _ in 0..3 {
            let start = std::time::Instant::now();
            let mut reader = CaptureReader::open(&path).unwrap();
            let mut frames = 0u64;
            while reader.next_frame().unwrap().is_some() {
                frames += 1;
            }
            let s = start.elapsed().as_secs_f64();
            let mb = reader.bytes_read() as f64 / 1e6;
            println!(
                "{format}: {frames} frames, {mb:.0} MB in {:.0} ms: {:.1} M frames/s",
                s * 1e3,
                frames as f64 / s / 1e6
            );
            assert_eq!(frames, records.len() as u64);
        }
        std::fs::remove_file(&path).unwrap();
    }
}
