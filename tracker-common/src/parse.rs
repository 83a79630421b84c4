//! Bounds-checked header parsing, the one parser of both sides: from the first byte of a frame
//! to a flow key, the transport payload's offset and the header length (needed to count GSO
//! segments' bytes). The kernel programs run it on packet memory; the capture importer runs the
//! same code on a file's frames ([`parse_frame`]), so both count a packet alike.
//!
//! Every header field is read with one load of the width it has on the wire (see [`Window`]),
//! and addresses travel as words: this path runs for every packet.

#[cfg(target_arch = "bpf")]
use core::arch::asm;
use core::{marker::PhantomData, mem::offset_of, mem::size_of};

use crate::{FAMILY_V4, FAMILY_V6, FlowKey, FlowKeyV4, IPPROTO_TCP, IPPROTO_UDP};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// VLAN tags walked: QinQ (802.1ad) stacks two; a constant bound, as the verifier needs.
const MAX_VLAN_TAGS: usize = 2;

/// IPv6 extension headers that sit between the fixed header and the transport header.
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
/// Bound on extension headers walked; the verifier needs a constant loop bound, and real traffic
/// carries at most two or three.
const IPV6_MAX_EXT_HEADERS: usize = 6;
/// IPv4 `frag_off`: offset bits (the MF and DF flags are the top three bits).
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// IPv6 fragment header: offset lives in the top 13 bits of this field.
const IPV6_FRAG_OFFSET_MASK: u16 = 0xfff8;

// The header layouts below document the wire format and give every field's offset
// (`offset_of!`); their fields are never read through a reference.

#[repr(C)]
struct EthHdr {
    _dst: [u8; 6],
    _src: [u8; 6],
    ether_type: [u8; 2],
}

#[repr(C)]
struct VlanHdr {
    _tci: [u8; 2],
    ether_type: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    /// With `tos` and `tot_len`: the first word.
    version_ihl: u8,
    _tos: u8,
    _tot_len: [u8; 2],
    /// With `frag_off`: the second word.
    _id: [u8; 2],
    _frag_off: [u8; 2],
    /// With `protocol` and `check`: the third word.
    ttl: u8,
    _protocol: u8,
    _check: [u8; 2],
    /// With `daddr`: one 8-byte load.
    saddr: [u8; 4],
    _daddr: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    _vtc_flow: [u8; 4],
    /// With `next_header` and `hop_limit`: one word.
    payload_len: [u8; 2],
    _next_header: u8,
    _hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// The generic shape shared by hop-by-hop, routing and destination-options headers
/// (RFC 8200 §4.3-4.6): length in 8-octet units, not counting the first 8.
#[repr(C)]
struct Ipv6ExtHdr {
    /// With `hdr_ext_len`: one half-word.
    next_header: u8,
    _hdr_ext_len: u8,
    _rest: [u8; 6],
}

#[repr(C)]
struct Ipv6FragHdr {
    /// With `reserved` and `frag_off`: one word.
    next_header: u8,
    _reserved: u8,
    _frag_off: [u8; 2],
    _id: [u8; 4],
}

#[repr(C)]
struct TcpHdr {
    /// With `dest`: one word.
    source: [u8; 2],
    _dest: [u8; 2],
    _seq: [u8; 4],
    _ack: [u8; 4],
    /// Data offset in the high nibble (32-bit words); with `flags`: one half-word.
    doff_reserved: u8,
    _flags: u8,
    _window: [u8; 2],
    _check: [u8; 2],
    _urg: [u8; 2],
}

#[repr(C)]
struct UdpHdr {
    /// With `dest`: one word.
    source: [u8; 2],
    _dest: [u8; 2],
    _len: [u8; 2],
    _check: [u8; 2],
}

/// A packet parsed as far as the flow table needs, oriented by the direction given to
/// [`parse`]: on ingress the sender is the client.
#[derive(Clone, Copy, Debug)]
pub struct Parsed {
    pub family: u8,
    /// IP protocol number (the transport header found after IPv6 extension headers).
    pub protocol: u8,
    /// Addresses as their bytes lie in memory, in two words; an IPv4 address is the low four
    /// bytes of the first word and the rest is zero, as in [`FlowKey`]. Kept as words rather
    /// than byte arrays so that LLVM keeps them in registers instead of splitting them into
    /// sixteen byte-sized values.
    pub client: [u64; 2],
    pub remote: [u64; 2],
    /// Host byte order; zero without ports.
    pub client_port: u16,
    pub remote_port: u16,
    /// IP length from the IP header (total length), clamped to what the frame holds.
    pub ip_len: u32,
    /// Bytes from the IP header to the start of the transport payload. With `ip_len` this gives
    /// the payload length, and it is the header cost repeated in every GSO segment.
    pub headers_len: u32,
    /// Offset of the transport payload from the start of the frame; 0 if there is none to read
    /// (no TCP/UDP header, or a non-first fragment).
    pub payload_off: u32,
    pub tcp_flags: u8,
    pub fragment: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the headers it announces, or inconsistent fields.
    Malformed,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
}

/// A `T`-sized stretch of packet memory that a bounds check has proven to be inside the packet.
///
/// Fields are read with inline assembly, one `BPF_LDX` each, because LLVM assumes BPF cannot
/// load from a misaligned address: a Rust read of a `u32` it cannot prove aligned (and a header
/// behind an Ethernet header or IP options never is) becomes four byte loads and three shifts.
/// The kernel does allow misaligned packet loads: `check_pkt_ptr_alignment` (verifier.c) only
/// insists on alignment under BPF_F_STRICT_ALIGNMENT or on architectures without efficient
/// unaligned access. The assembly is not `pure`, so it is never hoisted above the bounds check
/// that made this window, and the verifier sees each load at a constant offset from that check.
struct Window<T> {
    addr: usize,
    _header: PhantomData<T>,
}

// Not derived: the derive would require `T: Copy`, and a window is an address whatever `T` is.
impl<T> Clone for Window<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Window<T> {}

macro_rules! loads {
    ($($name:ident: $ty:ty = $size:literal;)*) => {$(
        /// The bytes at `OFF`, in the order they are on the wire: on a little-endian machine
        /// (bpfel, x86-64) a little-endian value of network-order bytes, so use `from_be` for a
        /// number, or store it as is.
        #[inline(always)]
        fn $name<const OFF: usize>(self) -> $ty {
            const { assert!(OFF + size_of::<$ty>() <= size_of::<T>(), "load outside the header") };
            #[cfg(target_arch = "bpf")]
            let v: u64 = {
                let v: u64;
                // SAFETY: `addr..addr + size_of::<T>()` is inside the packet (`window`), and the
                // load reads within it.
                unsafe {
                    asm!(
                        concat!("{v} = *(", $size, " *)({p} + {off})"),
                        p = in(reg) self.addr,
                        off = const OFF,
                        v = lateout(reg) v,
                        options(readonly, nostack, preserves_flags),
                    );
                }
                v
            };
            // Userspace has no alignment trouble to work around: an unaligned read is one load.
            #[cfg(not(target_arch = "bpf"))]
            // SAFETY: as above; `parse`'s caller vouches for `[start, end)`.
            let v: u64 = unsafe { core::ptr::read_unaligned((self.addr + OFF) as *const $ty) } as u64;
            v as $ty
        }
    )*};
}

impl<T> Window<T> {
    loads! {
        u16_at: u16 = "u16";
        u32_at: u32 = "u32";
        u64_at: u64 = "u64";
    }
}

/// The `T` at `off` bytes into `[start, end)`, if all of it is inside.
#[inline(always)]
fn window<T>(start: usize, end: usize, off: usize) -> Result<Window<T>, ParseError> {
    if start + off + size_of::<T>() > end {
        return Err(ParseError::Malformed);
    }
    Ok(Window { addr: start + off, _header: PhantomData })
}

/// The number in a big-endian 16-bit field that a [`Window`] load left in the low half.
#[inline(always)]
fn be16(raw: u32) -> u16 {
    u16::from_be(raw as u16)
}

/// Parses the frame held in the bytes `data`; `frame_len` is the packet's full length, more than
/// `data.len()` when a capture kept only the start of it (its snap length). See [`parse`].
#[cfg(not(target_arch = "bpf"))]
pub fn parse_frame(data: &[u8], frame_len: u32, l2_len: u32, up: bool) -> Result<Parsed, ParseError> {
    let start = data.as_ptr() as usize;
    // SAFETY: a slice's bytes are readable for its whole length while it is borrowed.
    unsafe { parse(start, start + data.len(), l2_len, frame_len, up) }
}

/// Parses a frame in `[start, end)`. `l2_len` is 0 for raw-IP links (WireGuard/TUN) and 14 for
/// Ethernet. `frame_len` is the packet's full length (larger than `end - start` when an skb is
/// non-linear). `up` orients the key: on ingress the sender is the client.
///
/// # Safety
/// `[start, end)` must be readable memory for the whole call: the kernel guarantees it for a
/// program's `data..data_end`, a borrowed slice for its bytes ([`parse_frame`]).
#[inline(always)]
pub unsafe fn parse(start: usize, end: usize, l2_len: u32, frame_len: u32, up: bool) -> Result<Parsed, ParseError> {
    let mut l3 = 0usize;
    let mut ether_type = 0u16;
    if l2_len == crate::L2_LEN_ETHERNET {
        let eth = window::<EthHdr>(start, end, 0)?;
        ether_type = be16(eth.u16_at::<{ offset_of!(EthHdr, ether_type) }>().into());
        l3 = size_of::<EthHdr>();
        // 802.1Q and 802.1ad tags: a trunk port's one, or QinQ's outer and inner.
        for _ in 0..MAX_VLAN_TAGS {
            if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
                break;
            }
            let vlan = window::<VlanHdr>(start, end, l3)?;
            ether_type = be16(vlan.u16_at::<{ offset_of!(VlanHdr, ether_type) }>().into());
            l3 += size_of::<VlanHdr>();
        }
        if ether_type != ETH_P_IP && ether_type != ETH_P_IPV6 {
            return Err(ParseError::NotIp);
        }
    }
    // A raw-IP frame has no ethertype: the version nibble decides. The window is an IPv4
    // header's 20 bytes, which every IPv4 or IPv6 packet has, and the version is read as part of
    // a word: a lone 1-byte load at packet offset 0 is rejected by the verifier on this kernel.
    let first = window::<Ipv4Hdr>(start, end, l3)?;
    let word0 = first.u32_at::<{ offset_of!(Ipv4Hdr, version_ihl) }>();
    let version = (word0 as u8) >> 4;
    let frame_l3_len = frame_len.saturating_sub(l3 as u32);
    match (version, ether_type) {
        (4, 0 | ETH_P_IP) => parse_v4(first, word0, start, end, l3, frame_l3_len, up),
        (6, 0 | ETH_P_IPV6) => parse_v6(start, end, l3, frame_l3_len, up),
        (4 | 6, _) => Err(ParseError::Malformed),
        _ => Err(ParseError::NotIp),
    }
}

#[inline(always)]
fn parse_v4(
    ip: Window<Ipv4Hdr>,
    word0: u32,
    start: usize,
    end: usize,
    l3: usize,
    frame_l3_len: u32,
    up: bool,
) -> Result<Parsed, ParseError> {
    let ihl = ((word0 & 0x0f) as usize) * 4;
    if ihl < size_of::<Ipv4Hdr>() {
        return Err(ParseError::Malformed);
    }
    let tot_len = be16(word0 >> 16);
    let frag_off = be16(ip.u32_at::<{ offset_of!(Ipv4Hdr, _id) }>() >> 16);
    let protocol = (ip.u16_at::<{ offset_of!(Ipv4Hdr, ttl) }>() >> 8) as u8;
    let addrs = ip.u64_at::<{ offset_of!(Ipv4Hdr, saddr) }>();
    let (src, dst) = ([addrs & 0xffff_ffff, 0], [addrs >> 32, 0]);
    let (client, remote) = if up { (src, dst) } else { (dst, src) };
    let mut p = Parsed {
        family: FAMILY_V4,
        protocol,
        client,
        remote,
        client_port: 0,
        remote_port: 0,
        ip_len: clamp_len(tot_len.into(), frame_l3_len),
        headers_len: ihl as u32,
        payload_off: 0,
        tcp_flags: 0,
        fragment: frag_off & IPV4_FRAG_OFFSET_MASK != 0,
    };
    if !p.fragment {
        parse_l4(&mut p, start, end, l3 + ihl, up)?;
    }
    Ok(p)
}

#[inline(always)]
fn parse_v6(start: usize, end: usize, l3: usize, frame_l3_len: u32, up: bool) -> Result<Parsed, ParseError> {
    let ip = window::<Ipv6Hdr>(start, end, l3)?;
    let lens = ip.u32_at::<{ offset_of!(Ipv6Hdr, payload_len) }>();
    let declared = be16(lens) as u32 + size_of::<Ipv6Hdr>() as u32;
    let src = [ip.u64_at::<{ offset_of!(Ipv6Hdr, saddr) }>(), ip.u64_at::<{ offset_of!(Ipv6Hdr, saddr) + 8 }>()];
    let dst = [ip.u64_at::<{ offset_of!(Ipv6Hdr, daddr) }>(), ip.u64_at::<{ offset_of!(Ipv6Hdr, daddr) + 8 }>()];
    let (client, remote) = if up { (src, dst) } else { (dst, src) };
    let mut p = Parsed {
        family: FAMILY_V6,
        protocol: (lens >> 16) as u8,
        client,
        remote,
        client_port: 0,
        remote_port: 0,
        ip_len: clamp_len(declared, frame_l3_len),
        headers_len: size_of::<Ipv6Hdr>() as u32,
        payload_off: 0,
        tcp_flags: 0,
        fragment: false,
    };
    let mut off = l3 + size_of::<Ipv6Hdr>();
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        match p.protocol {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let ext = window::<Ipv6ExtHdr>(start, end, off)?;
                let w = ext.u16_at::<{ offset_of!(Ipv6ExtHdr, next_header) }>();
                p.protocol = w as u8;
                off += ((w >> 8) as usize + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let frag = window::<Ipv6FragHdr>(start, end, off)?;
                let w = frag.u32_at::<{ offset_of!(Ipv6FragHdr, next_header) }>();
                p.protocol = w as u8;
                off += size_of::<Ipv6FragHdr>();
                if be16(w >> 16) & IPV6_FRAG_OFFSET_MASK != 0 {
                    // A non-first fragment: the transport header is in the first one.
                    p.fragment = true;
                    p.headers_len = (off - l3) as u32;
                    return Ok(p);
                }
            }
            _ => break,
        }
    }
    p.headers_len = (off - l3) as u32;
    parse_l4(&mut p, start, end, off, up)?;
    Ok(p)
}

/// A header length that claims more than the frame has is clamped; zero (IPv6 jumbograms, TSO
/// packets whose length the stack left for the driver) means "the whole frame".
#[inline(always)]
fn clamp_len(declared: u32, frame: u32) -> u32 {
    if declared == 0 || declared > frame { frame } else { declared }
}

#[inline(always)]
fn parse_l4(p: &mut Parsed, start: usize, end: usize, l4: usize, up: bool) -> Result<(), ParseError> {
    let l3_start = l4 - p.headers_len as usize;
    let ports = match p.protocol {
        IPPROTO_TCP => {
            let tcp = window::<TcpHdr>(start, end, l4)?;
            let w = tcp.u16_at::<{ offset_of!(TcpHdr, doff_reserved) }>();
            let doff = ((w as u8 >> 4) as usize) * 4;
            if doff < size_of::<TcpHdr>() {
                return Err(ParseError::Malformed);
            }
            p.tcp_flags = (w >> 8) as u8;
            p.payload_off = (l4 + doff) as u32;
            tcp.u32_at::<{ offset_of!(TcpHdr, source) }>()
        }
        IPPROTO_UDP => {
            let udp = window::<UdpHdr>(start, end, l4)?;
            p.payload_off = (l4 + size_of::<UdpHdr>()) as u32;
            udp.u32_at::<{ offset_of!(UdpHdr, source) }>()
        }
        // ICMP, ICMPv6 and everything else are keyed by protocol number alone.
        _ => return Ok(()),
    };
    let (src_port, dst_port) = (be16(ports), be16(ports >> 16));
    (p.client_port, p.remote_port) = if up { (src_port, dst_port) } else { (dst_port, src_port) };
    p.headers_len = p.payload_off - l3_start as u32;
    if p.headers_len > p.ip_len {
        return Err(ParseError::Malformed);
    }
    Ok(())
}

impl Parsed {
    /// The same packet seen from the other side: client and remote swapped. The capture
    /// importer parses a packet sender-first and turns it when the sender is the remote end.
    pub fn flipped(self) -> Parsed {
        Parsed {
            client: self.remote,
            remote: self.client,
            client_port: self.remote_port,
            remote_port: self.client_port,
            ..self
        }
    }

    /// Bytes of transport payload in this packet (all segments, for a GSO packet).
    #[inline(always)]
    pub fn payload_len(&self) -> u32 {
        if self.payload_off == 0 { 0 } else { self.ip_len - self.headers_len }
    }

    // Both keys are built from whole words, not field by field. The kernel hashes a key with
    // word loads right after it is written, and a word load over byte and half-word stores
    // cannot be forwarded from them (a store-forwarding stall on x86): built from words, an
    // existing flow's packet cost 28 ns instead of 33 (`cargo xtask bench`'s packet).

    /// The last word of [`FlowKey`] and the second of [`FlowKeyV4`]: ports, protocol and, for
    /// the former, the family, at their offsets (asserted below).
    #[inline(always)]
    fn tail_word(&self, family: u8) -> u64 {
        self.client_port as u64 | (self.remote_port as u64) << 16 | (self.protocol as u64) << 32 | (family as u64) << 40
    }

    /// The flow's key in events and in the IPv6 table.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        let [c0, c1] = self.client;
        let [r0, r1] = self.remote;
        // SAFETY: FlowKey is 40 bytes of plain integers, laid out as these words (asserted).
        unsafe { core::mem::transmute::<[u64; 5], FlowKey>([c0, c1, r0, r1, self.tail_word(self.family)]) }
    }

    /// The flow's key in the IPv4 table.
    #[inline(always)]
    pub fn key_v4(&self) -> FlowKeyV4 {
        let addrs = self.client[0] | self.remote[0] << 32;
        // SAFETY: FlowKeyV4 is 16 bytes of plain integers, laid out as these words (asserted);
        // the family byte lands in its padding, which must be zero.
        unsafe { core::mem::transmute::<[u64; 2], FlowKeyV4>([addrs, self.tail_word(0)]) }
    }

    /// The remote address as the IPv4 block trie's key data.
    #[inline(always)]
    pub fn remote_v4(&self) -> [u8; 4] {
        (self.remote[0] as u32).to_ne_bytes()
    }

    /// The remote address as the IPv6 block trie's key data.
    #[inline(always)]
    pub fn remote_v6(&self) -> [u8; 16] {
        // SAFETY: two words are sixteen bytes, in memory order.
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(self.remote) }
    }
}

const _: () = assert!(size_of::<Ipv4Hdr>() == 20 && size_of::<Ipv6Hdr>() == 40 && size_of::<TcpHdr>() == 20);
// The word layouts `Parsed::key` and `Parsed::key_v4` build (little-endian words: bpfel, and
// the capture importer on x86-64 or arm64).
const _: () = assert!(
    cfg!(target_endian = "little")
        && offset_of!(FlowKey, client) == 0
        && offset_of!(FlowKey, remote) == 16
        && offset_of!(FlowKey, client_port) == 32
        && offset_of!(FlowKey, remote_port) == 34
        && offset_of!(FlowKey, protocol) == 36
        && offset_of!(FlowKey, family) == 37
        && size_of::<FlowKey>() == 40
        && offset_of!(FlowKeyV4, client) == 0
        && offset_of!(FlowKeyV4, remote) == 4
        && offset_of!(FlowKeyV4, client_port) == 8
        && offset_of!(FlowKeyV4, remote_port) == 10
        && offset_of!(FlowKeyV4, protocol) == 12
        && size_of::<FlowKeyV4>() == 16
);
