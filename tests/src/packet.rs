//! Packets built byte by byte for the kernel tests and the packet generator: IPv4 and IPv6
//! (extension and fragment headers), TCP, UDP, ICMP, Ethernet with VLAN tags, ARP, DNS messages.

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const ETH_IP: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_8021Q: u16 = 0x8100;
pub const ETH_8021AD: u16 = 0x88a8;
pub const ETH_LLDP: u16 = 0x88cc;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub const HOPOPTS: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DSTOPTS: u8 = 60;

pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet; `frag` is the flags-and-offset field (0x2000 = MF, offset in 8-byte units).
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_options(src, dst, proto, id, frag, &[], payload)
}

/// An IPv4 packet with `options` (padded with zeroes, end of list, to whole words; at most 40
/// bytes fit the header length's four bits).
pub fn ipv4_options(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + options.len().div_ceil(4) * 4;
    assert!(hlen <= 60, "{} bytes of IPv4 options", options.len());
    let mut h = vec![0x40 | (hlen / 4) as u8, 0];
    h.extend_from_slice(&((hlen + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    h.resize(hlen, 0);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet whose first next-header is `next`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A hop-by-hop, routing or destination-options header of `len8 + 1` 8-byte units.
pub fn ext(next: u8, len8: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, len8];
    h.extend_from_slice(rest);
    h.resize((usize::from(len8) + 1) * 8, 0);
    h
}

/// An IPv6 fragment header: offset in 8-byte units, more fragments or not.
pub fn frag6(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// A TCP segment; `options` is padded to whole words.
pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let opts = options.len().div_ceil(4) * 4;
    let mut h = Vec::with_capacity(20 + opts + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&(if flags & ACK != 0 { 1000u32 } else { 0 }).to_be_bytes());
    h.extend_from_slice(&[(((20 + opts) / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(options);
    h.resize(20 + opts, 1);
    h.extend_from_slice(payload);
    h
}

/// A SYN's options: MSS 1460, SACK permitted, window scale 7.
pub const SYN_OPTIONS: [u8; 12] = [2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7, 1, 1];

pub fn v4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4(src, dst, IPPROTO_UDP, 7, 0x4000, &udp(sport, dport, payload))
}

pub fn v4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let options: &[u8] = if flags & SYN != 0 { &SYN_OPTIONS } else { &[] };
    ipv4(src, dst, IPPROTO_TCP, 8, 0x4000, &tcp(sport, dport, 1, flags, options, payload))
}

pub fn v6_udp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv6(src, dst, IPPROTO_UDP, &udp(sport, dport, payload))
}

pub fn v6_tcp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let options: &[u8] = if flags & SYN != 0 { &SYN_OPTIONS } else { &[] };
    ipv6(src, dst, IPPROTO_TCP, &tcp(sport, dport, 1, flags, options, payload))
}

pub fn icmp_echo(reply: bool, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![if reply { 0 } else { 8 }, 0, 0, 0, 0, 1, 0, 1];
    m.extend_from_slice(payload);
    m
}

/// An Ethernet frame.
pub fn eth(ether_type: u16, body: &[u8]) -> Vec<u8> {
    vlan(&[], ether_type, body)
}

/// An Ethernet frame with VLAN tags, outermost first: (TPID, VLAN id).
pub fn vlan(tags: &[(u16, u16)], ether_type: u16, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(body);
    // The minimum frame (without FCS): the padding is not part of the IP packet.
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// An ARP request (28 bytes), or reply.
pub fn arp(reply: bool) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, if reply { 2 } else { 1 }];
    a.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 10, 77, 0, 1]);
    a.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 77, 0, 2]);
    a
}

pub fn dns_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&dns_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

/// A response with `answers` A records (16 bytes each).
pub fn dns_response(id: u16, name: &str, answers: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x81, 0x80, 0, 1]);
    m.extend_from_slice(&answers.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&dns_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    for i in 0..answers {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 203, 0, 113]);
        m.push(i as u8);
    }
    m
}

/// DNS over TCP: the message behind its two-byte length.
pub fn dns_tcp(msg: &[u8]) -> Vec<u8> {
    let mut m = (msg.len() as u16).to_be_bytes().to_vec();
    m.extend_from_slice(msg);
    m
}

/// A first payload: a TLS record header and `len - 5` bytes of pattern.
pub fn hello(len: usize) -> Vec<u8> {
    let mut m = vec![0x16, 0x03, 0x01];
    m.extend_from_slice(&((len - 5) as u16).to_be_bytes());
    m.extend((0..len - 5).map(|i| (i * 7 + 3) as u8));
    m
}
