//! Refusing DNS queries for blocked names at XDP ingress: the query's name against the name
//! rules in `DOMAINS`, and, on a match, the query turned in place into its NXDOMAIN reply and
//! sent back to the device (`XDP_TX`), so apps fail at once instead of timing out, whichever
//! resolver they asked and whether or not the daemon runs.
//!
//! NXDOMAIN rather than REFUSED: a stub resolver treats REFUSED as "this server will not help"
//! and asks the next one in its list (glibc, Android's resolver), which may answer; NXDOMAIN
//! says the name does not exist, and clients stop there. The reply carries no SOA, so no one
//! caches the negative answer (RFC 2308 §5) and unblocking takes effect at the next query.
//!
//! A query over TCP is answered with a reset: the name is in the first segment, and a reset
//! fails the lookup at once where a dropped segment would be retransmitted for seconds.

use aya_ebpf::{
    helpers::generated::{bpf_csum_diff, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use tracker_common::{
    BlockValue, Counter, DomainKey, EventKind, FAMILY_V4, IPPROTO_TCP, IPPROTO_UDP, L2_LEN_ETHERNET, TCP_FIN,
    account::DNS_PORT,
    name::{self, MAX_NAME, NAME_BUF, NameScratch, SUFFIX_RING, Scanned},
    parse::Parsed,
};

use crate::{DNS_SCRATCH, DOMAINS, count, emit_payload, l2_len};

/// DNS header (RFC 1035 §4.1.1).
const DNS_HDR: u32 = 12;
/// QTYPE and QCLASS after the name.
const QUESTION_TAIL: u32 = 4;
/// A question's largest size: the longest name and its type and class.
const MAX_QUESTION: u32 = MAX_NAME as u32 + QUESTION_TAIL;
/// TCP carries a DNS message behind a two-byte length (RFC 1035 §4.2.2).
const TCP_LEN_PREFIX: u32 = 2;
/// Plain headers only: an IPv4 header without options and an IPv6 header without extension
/// headers, so the reply's headers have the query's sizes and the question stays where it is.
const IPV4_HDR: u32 = 20;
const IPV6_HDR: u32 = 40;
const UDP_HDR: u32 = 8;
const TCP_HDR: u32 = 20;
const RCODE_NXDOMAIN: u8 = 3;
const REPLY_TTL: u8 = 64;
const ETH_ADDRS: u32 = 12;

/// Header flag bits (RFC 1035 §4.1.1): byte 2 holds QR, the opcode, AA, TC and RD; byte 3 RA,
/// Z, AD, CD and the RCODE.
const FLAG_QR: u8 = 0x80;
const QR_OPCODE_MASK: u8 = 0xf8;
const FLAG_RD: u8 = 0x01;
const FLAG_RA: u8 = 0x80;
const FLAG_CD: u8 = 0x10;

/// Bytes of [`Reply::question`]: room for the largest question rounded up to whole 32-bit
/// words (the unit `bpf_csum_diff` sums in), and a power of two, so that a masked index is in
/// bounds.
const QUESTION_BUF: usize = 512;
/// Bytes of the header areas of [`Reply`]: the largest, IPv6 with UDP and DNS, is 60.
const HEADERS_BUF: usize = 64;

/// Where a reply (a DNS answer, or a reset: [`reset_tcp`]) is assembled before it is written
/// into the packet.
#[repr(C)]
pub struct Reply {
    /// The question, copied from the query and zero-padded to a word.
    question: [u8; QUESTION_BUF],
    /// The checksum's pseudo-header (RFC 768, RFC 8200 §8.1) followed by the transport header
    /// and, for UDP, the DNS header: summed in one call.
    pseudo: [u8; HEADERS_BUF],
    /// The reply's IP header, transport header and DNS header, as written into the packet.
    headers: [u8; HEADERS_BUF],
}

/// Per-CPU working memory of a refusal, one map value (the BPF stack has 512 bytes in all).
#[repr(C)]
pub struct DnsScratch {
    name: NameScratch,
    pub reply: Reply,
    /// [`Scanned`] on its way between the two halves of the scan (see [`name::find_labels`]).
    scanned: [u32; 2],
    /// The parse result on its way to the DNS path ([`forget_parse`]).
    parsed: Parsed,
}

/// What became of a query.
pub enum Refusal {
    /// Not a query for a blocked name: let it through.
    No,
    /// Answered in place: send the packet back (`XDP_TX`).
    Answered,
    /// Refused but not answerable here (IP options, extension headers): drop it.
    Dropped,
}

/// Refuses `p` if it is a device's DNS query for a blocked name. `frame_len` is the frame's
/// length as XDP sees it (generic XDP's skb is linear).
#[inline(always)]
pub fn query(ctx: &XdpContext, p: &Parsed, frame_len: u32, now: u64) -> Refusal {
    if p.remote_port != DNS_PORT || p.payload_off == 0 || p.fragment {
        return Refusal::No;
    }
    let prefix = match p.protocol {
        IPPROTO_UDP => 0,
        IPPROTO_TCP => TCP_LEN_PREFIX,
        _ => return Refusal::No,
    };
    let payload = p.payload_len();
    if payload < prefix + DNS_HDR + 1 + QUESTION_TAIL {
        return Refusal::No;
    }
    let dns_off = p.payload_off + prefix;
    let dns_len = payload - prefix;
    let mut hdr = [0u8; DNS_HDR as usize];
    if !load(ctx, dns_off, hdr.as_mut_ptr(), DNS_HDR) || !is_plain_query(&hdr) {
        return Refusal::No;
    }
    let Some(scratch) = DNS_SCRATCH.get_ptr_mut(0) else { return Refusal::No };
    // SAFETY: a per-CPU map value, ours until the program returns.
    let scratch = unsafe { &mut *scratch };
    let Some(found) = find_labels(ctx, &mut scratch.name, dns_off + DNS_HDR, dns_len - DNS_HDR) else {
        return Refusal::No;
    };
    let Some(found) = forget_where_it_ended(&mut scratch.scanned, found) else { return Refusal::No };
    name::hash_suffixes(&mut scratch.name, found.len);
    // Again: the hashing loop ends at a different byte for each length.
    let Some(scanned) = forget_where_it_ended(&mut scratch.scanned, found) else { return Refusal::No };
    if scanned.len + QUESTION_TAIL > dns_len - DNS_HDR {
        return Refusal::No;
    }
    let Some(rule) = matching_rule(&scratch.name, &scanned, p, now) else { return Refusal::No };
    let rule_id = unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*rule).packets_dropped, 1);
        (*rule).last_hit_ns = now;
        (*rule).rule_id
    };
    count(Counter::DnsRefused, 1);
    // Before the packet is rewritten: the record carries the query as the device sent it.
    emit_payload(ctx, EventKind::DnsRefused, p, true, now, rule_id);
    let reply = &mut scratch.reply;
    let answered = if prefix == 0 {
        answer_udp(ctx, p, &hdr, dns_off, scanned.len + QUESTION_TAIL, frame_len, reply)
    } else {
        reset_tcp(ctx, p, frame_len, reply)
    };
    if answered { Refusal::Answered } else { Refusal::Dropped }
}

/// A standard query (QR = 0, opcode QUERY) with one question and no answers: what a stub
/// resolver sends. Anything else is not ours to answer.
#[inline(always)]
fn is_plain_query(h: &[u8; DNS_HDR as usize]) -> bool {
    h[2] & QR_OPCODE_MASK == 0 && h[4] == 0 && h[5] == 1 && h[6] | h[7] | h[8] | h[9] == 0
}

#[inline(always)]
fn load(ctx: &XdpContext, off: u32, dst: *mut u8, len: u32) -> bool {
    unsafe { bpf_xdp_load_bytes(ctx.ctx, off, dst.cast(), len) == 0 }
}

#[inline(always)]
fn store(ctx: &XdpContext, off: u32, src: *const u8, len: u32) -> bool {
    unsafe { bpf_xdp_store_bytes(ctx.ctx, off, src as *mut _, len) == 0 }
}

/// `len` clamped to `1..=max` in a form the verifier can see: the load helpers need a length
/// it can prove is in range. The black_box keeps LLVM from folding the clamp into a shape the
/// verifier cannot connect to the length ("invalid zero-sized read").
#[inline(always)]
fn clamp_len(len: u32, max: u32) -> u32 {
    let mut last = len - 1;
    if last > max - 1 {
        last = max - 1;
    }
    core::hint::black_box(last) + 1
}

/// Copies the name (or as much of the message as there is, up to the longest name) into the
/// scratch and finds its labels.
#[inline(always)]
fn find_labels(ctx: &XdpContext, s: &mut NameScratch, off: u32, avail: u32) -> Option<Scanned> {
    let n = clamp_len(avail, MAX_NAME as u32);
    if !load(ctx, off, s.buf.as_mut_ptr(), n) {
        return None;
    }
    const _: () = assert!(MAX_NAME <= NAME_BUF);
    name::find_labels(s, n)
}

/// `p`, read back from map memory: see [`forget_where_it_ended`]. What the rest of the program
/// does with it needs no bounds the parser proved: packet bytes are read with the load helpers,
/// which check offsets at run time.
#[inline(always)]
pub fn forget_parse(p: &Parsed) -> Option<Parsed> {
    let slot = DNS_SCRATCH.get_ptr_mut(0)?;
    unsafe {
        let slot = &raw mut (*slot).parsed;
        core::ptr::write_volatile(slot, *p);
        Some(core::ptr::read_volatile(slot))
    }
}

/// `found`, read back from map memory. The verifier tracks values on the stack and in
/// registers but not in map values, so what it reads back is an unknown number, the same
/// whichever iteration a loop ended at: the rest of the program is verified once instead of
/// once per name length or label count (which ran past the verifier's million-instruction
/// budget). The bounds are checked again for it.
#[inline(always)]
fn forget_where_it_ended(slot: &mut [u32; 2], found: Scanned) -> Option<Scanned> {
    unsafe {
        core::ptr::write_volatile(&raw mut slot[0], found.len);
        core::ptr::write_volatile(&raw mut slot[1], found.labels);
        let (len, labels) =
            (core::ptr::read_volatile(&raw const slot[0]), core::ptr::read_volatile(&raw const slot[1]));
        (len as usize <= MAX_NAME && labels < len).then_some(Scanned { len, labels })
    }
}

/// The most specific rule for the name that holds now: the longest suffix first, and for each
/// the device's own rule before the one for every device.
#[inline(always)]
fn matching_rule(s: &NameScratch, sc: &Scanned, p: &Parsed, now: u64) -> Option<*mut BlockValue> {
    // SAFETY: two words are sixteen bytes, in memory order, as FlowKey::client holds them.
    let client = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(p.client) };
    let first = sc.first_suffix();
    for j in 0..SUFFIX_RING as u32 {
        let label = first + j;
        if label >= sc.labels {
            break;
        }
        let hash = sc.suffix_hash(s, label);
        for key in [DomainKey { hash, client }, DomainKey { hash, client: [0; 16] }] {
            if let Some(v) = DOMAINS.get_ptr_mut(&key)
                && unsafe { &*v }.holds(now)
            {
                return Some(v);
            }
        }
    }
    None
}

/// Writes a big-endian u16.
#[inline(always)]
fn put16(b: &mut [u8], at: usize, v: u16) {
    let [hi, lo] = v.to_be_bytes();
    b[at] = hi;
    b[at + 1] = lo;
}

/// The ones'-complement sum of `len` bytes (a multiple of 4) at `ptr`, added to `seed`.
#[inline(always)]
fn sum(ptr: *const u8, len: u32, seed: u32) -> u32 {
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, ptr as *mut _, len, seed) };
    s as u32
}

/// Folds a 32-bit sum into the 16-bit checksum field's bytes (memory order, as summed).
#[inline(always)]
fn fold(s: u32) -> [u8; 2] {
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    (!(s as u16)).to_ne_bytes()
}

/// The reply's IP header in `h[..]` (source and destination swapped) and the matching
/// pseudo-header in `ps`; returns the IP header length.
#[inline(always)]
fn ip_headers(p: &Parsed, h: &mut [u8; HEADERS_BUF], ps: &mut [u8; HEADERS_BUF], proto: u8, l4_len: u32) -> u32 {
    // SAFETY: two words are sixteen bytes, in memory order.
    let (remote, client) = unsafe {
        (core::mem::transmute::<[u64; 2], [u8; 16]>(p.remote), core::mem::transmute::<[u64; 2], [u8; 16]>(p.client))
    };
    if p.family == FAMILY_V4 {
        h[0] = 0x45;
        h[1] = 0;
        put16(h, 2, (IPV4_HDR + l4_len) as u16);
        put16(h, 4, 0);
        put16(h, 6, 0x4000); // DF
        h[8] = REPLY_TTL;
        h[9] = proto;
        put16(h, 10, 0);
        for i in 0..4 {
            h[12 + i] = remote[i];
            h[16 + i] = client[i];
            ps[i] = remote[i];
            ps[4 + i] = client[i];
        }
        ps[8] = 0;
        ps[9] = proto;
        put16(ps, 10, l4_len as u16);
        let [a, b] = fold(sum(h.as_ptr(), IPV4_HDR, 0));
        h[10] = a;
        h[11] = b;
        IPV4_HDR
    } else {
        h[0] = 0x60;
        h[1] = 0;
        h[2] = 0;
        h[3] = 0;
        put16(h, 4, l4_len as u16);
        h[6] = proto;
        h[7] = REPLY_TTL;
        for i in 0..16 {
            h[8 + i] = remote[i];
            h[24 + i] = client[i];
            ps[i] = remote[i];
            ps[16 + i] = client[i];
        }
        put16(ps, 32, 0);
        put16(ps, 34, l4_len as u16);
        put16(ps, 36, 0);
        ps[38] = 0;
        ps[39] = proto;
        IPV6_HDR
    }
}

/// Whether the headers are the plain ones the reply is built for.
#[inline(always)]
fn plain_headers(p: &Parsed, l4_hdr: u32) -> bool {
    let ip = if p.family == FAMILY_V4 { IPV4_HDR } else { IPV6_HDR };
    p.headers_len == ip + l4_hdr
}

/// Cuts the frame to `new_len` bytes.
#[inline(always)]
fn truncate(ctx: &XdpContext, frame_len: u32, new_len: u32) -> bool {
    let delta = new_len as i32 - frame_len as i32;
    delta == 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) == 0 }
}

/// An Ethernet frame goes back with its addresses swapped; a raw-IP frame has none.
#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> bool {
    if l2_len() != L2_LEN_ETHERNET {
        return true;
    }
    let mut macs = [0u8; ETH_ADDRS as usize];
    if !load(ctx, 0, macs.as_mut_ptr(), ETH_ADDRS) {
        return false;
    }
    let mut swapped = [0u8; ETH_ADDRS as usize];
    for i in 0..6 {
        swapped[i] = macs[6 + i];
        swapped[6 + i] = macs[i];
    }
    store(ctx, 0, swapped.as_ptr(), ETH_ADDRS)
}

/// Turns the UDP query into its NXDOMAIN reply: the header and the question, nothing after
/// (the query's EDNS record is not echoed: a reply may carry only what the server supports).
#[inline(always)]
fn answer_udp(
    ctx: &XdpContext,
    p: &Parsed,
    query_hdr: &[u8; DNS_HDR as usize],
    dns_off: u32,
    question_len: u32,
    frame_len: u32,
    r: &mut Reply,
) -> bool {
    if !plain_headers(p, UDP_HDR) {
        return false;
    }
    let qn = clamp_len(question_len, MAX_QUESTION);
    if !load(ctx, dns_off + DNS_HDR, r.question.as_mut_ptr(), qn) {
        return false;
    }
    // Zero the bytes up to the next word: they are summed but are not part of the message.
    let padded = (qn + 3) & !3;
    for i in 0..3u32 {
        r.question[((qn + i) as usize) & (QUESTION_BUF - 1)] = 0;
    }
    let udp_len = UDP_HDR + DNS_HDR + qn;
    let ip_len = ip_headers(p, &mut r.headers, &mut r.pseudo, IPPROTO_UDP, udp_len);
    let ps_len = if p.family == FAMILY_V4 { 12usize } else { 40usize };
    let h = ip_len as usize;
    // UDP header, then the DNS header, in both the headers and (for the sum) the pseudo area.
    let mut l4 = [0u8; (UDP_HDR + DNS_HDR) as usize];
    put16(&mut l4, 0, DNS_PORT);
    put16(&mut l4, 2, p.client_port);
    put16(&mut l4, 4, udp_len as u16);
    l4[8] = query_hdr[0];
    l4[9] = query_hdr[1];
    l4[10] = FLAG_QR | (query_hdr[2] & FLAG_RD);
    l4[11] = FLAG_RA | (query_hdr[3] & FLAG_CD) | RCODE_NXDOMAIN;
    l4[13] = 1; // QDCOUNT; the other counts stay zero
    for i in 0..l4.len() {
        r.pseudo[(ps_len + i) & (HEADERS_BUF - 1)] = l4[i];
    }
    let s = sum(r.pseudo.as_ptr(), ps_len as u32 + UDP_HDR + DNS_HDR, 0);
    let s = sum(r.question.as_ptr(), padded.min(QUESTION_BUF as u32), s);
    let mut check = fold(s);
    // An all-zero UDP checksum means "none" (RFC 768); the same sum is sent as all ones.
    if check == [0, 0] {
        check = [0xff, 0xff];
    }
    l4[6] = check[0];
    l4[7] = check[1];
    for i in 0..l4.len() {
        r.headers[(h + i) & (HEADERS_BUF - 1)] = l4[i];
    }
    let l3 = p.payload_off - p.headers_len;
    if !truncate(ctx, frame_len, l3 + ip_len + udp_len) || !swap_macs(ctx) {
        return false;
    }
    store(ctx, l3, r.headers.as_ptr(), clamp_len(ip_len + UDP_HDR + DNS_HDR, HEADERS_BUF as u32))
}

/// Turns the TCP segment into a reset from its remote end: RST+ACK acknowledging the segment
/// (its SYN and FIN count as one byte each, RFC 9293 §3.4), no payload. Its sequence number is
/// the one the segment acknowledged, which is what the device expects next: a reset there is
/// accepted at once (RFC 5961 §3.2); for a SYN, which acknowledges nothing, the reset is
/// accepted because it acknowledges the SYN (RFC 9293 §3.10.7.3) and connect() fails with
/// ECONNREFUSED. A segment that is itself a reset is never answered (RFC 9293 §3.10.7.1):
/// false, and the caller drops it.
#[inline(always)]
pub fn reset_tcp(ctx: &XdpContext, p: &Parsed, frame_len: u32, r: &mut Reply) -> bool {
    if p.tcp_flags & tracker_common::TCP_RST != 0 {
        return false;
    }
    // The segment's own TCP header may carry options (Linux clients send timestamps: 32
    // bytes), so the header length alone cannot tell TCP options from IP options: the IP
    // header is read to see that it is plain. The reset has a 20-byte header, at the same place.
    let l3 = p.payload_off - p.headers_len;
    let mut ip = [0u8; 8];
    if !load(ctx, l3, ip.as_mut_ptr(), 8) {
        return false;
    }
    let (plain, ip_hdr) = if p.family == FAMILY_V4 {
        (ip[0] & 0x0f == (IPV4_HDR / 4) as u8, IPV4_HDR)
    } else {
        (ip[6] == IPPROTO_TCP, IPV6_HDR)
    };
    if !plain || p.headers_len < ip_hdr + TCP_HDR {
        return false;
    }
    let mut q = [0u8; TCP_HDR as usize];
    if !load(ctx, l3 + ip_hdr, q.as_mut_ptr(), TCP_HDR) {
        return false;
    }
    let seq = u32::from_be_bytes([q[4], q[5], q[6], q[7]]);
    let ack = u32::from_be_bytes([q[8], q[9], q[10], q[11]]);
    let ip_len = ip_headers(p, &mut r.headers, &mut r.pseudo, IPPROTO_TCP, TCP_HDR);
    let ps_len = if p.family == FAMILY_V4 { 12usize } else { 40usize };
    let mut t = [0u8; TCP_HDR as usize];
    put16(&mut t, 0, p.remote_port);
    put16(&mut t, 2, p.client_port);
    t[4..8].copy_from_slice(&ack.to_be_bytes());
    let flags = p.tcp_flags;
    let takes = p.payload_len() + u32::from(flags & tracker_common::TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
    t[8..12].copy_from_slice(&seq.wrapping_add(takes).to_be_bytes());
    t[12] = ((TCP_HDR / 4) as u8) << 4;
    t[13] = tracker_common::TCP_RST | tracker_common::TCP_ACK;
    for i in 0..t.len() {
        r.pseudo[(ps_len + i) & (HEADERS_BUF - 1)] = t[i];
    }
    let check = fold(sum(r.pseudo.as_ptr(), ps_len as u32 + TCP_HDR, 0));
    t[16] = check[0];
    t[17] = check[1];
    let h = ip_len as usize;
    for i in 0..t.len() {
        r.headers[(h + i) & (HEADERS_BUF - 1)] = t[i];
    }
    if !truncate(ctx, frame_len, l3 + ip_len + TCP_HDR) || !swap_macs(ctx) {
        return false;
    }
    store(ctx, l3, r.headers.as_ptr(), clamp_len(ip_len + TCP_HDR, HEADERS_BUF as u32))
}
