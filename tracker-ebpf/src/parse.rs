//! Bounds-checked header parsing: from the first byte of a frame to a flow key, the transport
//! payload's offset and the header length (needed to count GSO segments' bytes).

use core::mem::size_of;

use tracker_common::{FAMILY_V4, FAMILY_V6, FlowKey, IPPROTO_TCP, IPPROTO_UDP};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: usize = 4;

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
pub struct Ipv4Hdr {
    version_ihl: u8,
    _tos: u8,
    tot_len: [u8; 2],
    _id: [u8; 2],
    frag_off: [u8; 2],
    _ttl: u8,
    protocol: u8,
    _check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    _vtc_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    _hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// The generic shape shared by hop-by-hop, routing and destination-options headers
/// (RFC 8200 §4.3-4.6): length in 8-octet units, not counting the first 8.
#[repr(C)]
struct Ipv6ExtHdr {
    next_header: u8,
    hdr_ext_len: u8,
    _rest: [u8; 6],
}

#[repr(C)]
struct Ipv6FragHdr {
    next_header: u8,
    _reserved: u8,
    frag_off: [u8; 2],
    _id: [u8; 4],
}

#[repr(C)]
struct TcpHdr {
    source: [u8; 2],
    dest: [u8; 2],
    _seq: [u8; 4],
    _ack: [u8; 4],
    /// Data offset in the high nibble (32-bit words).
    doff_reserved: u8,
    flags: u8,
    _window: [u8; 2],
    _check: [u8; 2],
    _urg: [u8; 2],
}

#[repr(C)]
struct UdpHdr {
    source: [u8; 2],
    dest: [u8; 2],
    _len: [u8; 2],
    _check: [u8; 2],
}

/// A packet parsed as far as the flow table needs. Addresses are oriented by the packet
/// (`src`/`dst`); the caller turns them into client/remote by direction.
pub struct Parsed {
    pub family: u8,
    pub protocol: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
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

pub enum ParseError {
    /// Shorter than the headers it announces, or inconsistent fields.
    Malformed,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
}

/// A pointer to a `T` at `off` bytes into `[start, end)`, if all of it is inside.
#[inline(always)]
fn ptr_at<T>(start: usize, end: usize, off: usize) -> Result<*const T, ParseError> {
    if start + off + size_of::<T>() > end {
        return Err(ParseError::Malformed);
    }
    Ok((start + off) as *const T)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses a frame in `[start, end)`. `l2_len` is 0 for raw-IP links (WireGuard/TUN) and 14 for
/// Ethernet. `frame_len` is the packet's full length (larger than `end - start` when an skb is
/// non-linear).
#[inline(always)]
pub fn parse(start: usize, end: usize, l2_len: u32, frame_len: u32) -> Result<Parsed, ParseError> {
    let mut l3 = 0usize;
    let mut ether_type = 0u16;
    if l2_len == tracker_common::L2_LEN_ETHERNET {
        let eth = ptr_at::<EthHdr>(start, end, 0)?;
        ether_type = be16(unsafe { (*eth).ether_type });
        l3 = size_of::<EthHdr>();
        // One 802.1Q or 802.1ad tag, as found on trunk ports.
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            let vlan = ptr_at::<VlanHdr>(start, end, l3)?;
            ether_type = be16(unsafe { (*vlan).ether_type });
            l3 += VLAN_HLEN;
        }
        if ether_type != ETH_P_IP && ether_type != ETH_P_IPV6 {
            return Err(ParseError::NotIp);
        }
    }
    // A raw-IP frame has no ethertype: the version nibble decides. Read the whole 20-byte IPv4
    // header rather than one byte: a lone 1-byte load at packet offset 0 is rejected by the
    // verifier on this kernel, and every IPv4 or IPv6 packet is at least this long.
    let v4 = ptr_at::<Ipv4Hdr>(start, end, l3)?;
    let version = unsafe { (*v4).version_ihl } >> 4;
    let frame_l3_len = frame_len.saturating_sub(l3 as u32);
    match (version, ether_type) {
        (4, 0 | ETH_P_IP) => parse_v4(start, end, l3, frame_l3_len),
        (6, 0 | ETH_P_IPV6) => parse_v6(start, end, l3, frame_l3_len),
        (4 | 6, _) => Err(ParseError::Malformed),
        _ => Err(ParseError::NotIp),
    }
}

#[inline(always)]
fn parse_v4(start: usize, end: usize, l3: usize, frame_l3_len: u32) -> Result<Parsed, ParseError> {
    let ip = ptr_at::<Ipv4Hdr>(start, end, l3)?;
    let Ipv4Hdr { version_ihl, tot_len, frag_off, protocol, saddr, daddr, .. } = unsafe { ip.read() };
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if ihl < size_of::<Ipv4Hdr>() {
        return Err(ParseError::Malformed);
    }
    let mut p = Parsed {
        family: FAMILY_V4,
        protocol,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        ip_len: clamp_len(be16(tot_len) as u32, frame_l3_len),
        headers_len: ihl as u32,
        payload_off: 0,
        tcp_flags: 0,
        fragment: be16(frag_off) & IPV4_FRAG_OFFSET_MASK != 0,
    };
    p.src[..4].copy_from_slice(&saddr);
    p.dst[..4].copy_from_slice(&daddr);
    if !p.fragment {
        parse_l4(&mut p, start, end, l3 + ihl)?;
    }
    Ok(p)
}

#[inline(always)]
fn parse_v6(start: usize, end: usize, l3: usize, frame_l3_len: u32) -> Result<Parsed, ParseError> {
    let ip = ptr_at::<Ipv6Hdr>(start, end, l3)?;
    let Ipv6Hdr { payload_len, next_header, saddr, daddr, .. } = unsafe { ip.read() };
    let declared = be16(payload_len) as u32 + size_of::<Ipv6Hdr>() as u32;
    let mut p = Parsed {
        family: FAMILY_V6,
        protocol: next_header,
        src: saddr,
        dst: daddr,
        src_port: 0,
        dst_port: 0,
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
                let ext = ptr_at::<Ipv6ExtHdr>(start, end, off)?;
                let Ipv6ExtHdr { next_header, hdr_ext_len, .. } = unsafe { ext.read() };
                p.protocol = next_header;
                off += (hdr_ext_len as usize + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let frag = ptr_at::<Ipv6FragHdr>(start, end, off)?;
                let Ipv6FragHdr { next_header, frag_off, .. } = unsafe { frag.read() };
                p.protocol = next_header;
                off += size_of::<Ipv6FragHdr>();
                if be16(frag_off) & IPV6_FRAG_OFFSET_MASK != 0 {
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
    parse_l4(&mut p, start, end, off)?;
    Ok(p)
}

/// A header length that claims more than the frame has is clamped; zero (IPv6 jumbograms, TSO
/// packets whose length the stack left for the driver) means "the whole frame".
#[inline(always)]
fn clamp_len(declared: u32, frame: u32) -> u32 {
    if declared == 0 || declared > frame { frame } else { declared }
}

#[inline(always)]
fn parse_l4(p: &mut Parsed, start: usize, end: usize, l4: usize) -> Result<(), ParseError> {
    let l3_start = l4 - p.headers_len as usize;
    match p.protocol {
        IPPROTO_TCP => {
            let tcp = ptr_at::<TcpHdr>(start, end, l4)?;
            let TcpHdr { source, dest, doff_reserved, flags, .. } = unsafe { tcp.read() };
            let doff = ((doff_reserved >> 4) as usize) * 4;
            if doff < size_of::<TcpHdr>() {
                return Err(ParseError::Malformed);
            }
            p.src_port = be16(source);
            p.dst_port = be16(dest);
            p.tcp_flags = flags;
            p.payload_off = (l4 + doff) as u32;
        }
        IPPROTO_UDP => {
            let udp = ptr_at::<UdpHdr>(start, end, l4)?;
            let UdpHdr { source, dest, .. } = unsafe { udp.read() };
            p.src_port = be16(source);
            p.dst_port = be16(dest);
            p.payload_off = (l4 + size_of::<UdpHdr>()) as u32;
        }
        // ICMP, ICMPv6 and everything else are keyed by protocol number alone.
        _ => return Ok(()),
    }
    p.headers_len = p.payload_off - l3_start as u32;
    if p.headers_len > p.ip_len {
        return Err(ParseError::Malformed);
    }
    Ok(())
}

impl Parsed {
    /// Bytes of transport payload in this packet (all segments, for a GSO packet).
    #[inline(always)]
    pub fn payload_len(&self) -> u32 {
        if self.payload_off == 0 { 0 } else { self.ip_len - self.headers_len }
    }

    /// Flow key for this packet given its direction: on ingress the sender is the client.
    #[inline(always)]
    pub fn key(&self, up: bool) -> FlowKey {
        let (client, remote, client_port, remote_port) = if up {
            (self.src, self.dst, self.src_port, self.dst_port)
        } else {
            (self.dst, self.src, self.dst_port, self.src_port)
        };
        FlowKey { client, remote, client_port, remote_port, protocol: self.protocol, family: self.family, _pad: [0; 2] }
    }
}

const _: () = assert!(size_of::<Ipv4Hdr>() == 20 && size_of::<Ipv6Hdr>() == 40 && size_of::<TcpHdr>() == 20);
