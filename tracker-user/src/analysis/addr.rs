//! Address classes (loopback, private, tunnel, public, ...) decided before any naming is tried.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// What kind of address a flow's peer is. Decided from the address alone (plus the VPN's own
/// subnets), before any naming, because local peers are never named from public DNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// RFC 6598 shared address space 100.64/10 (carrier-grade NAT).
    Cgnat,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// fc00::/7 (RFC 4193).
    UniqueLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255, the limited broadcast (subnet broadcasts need the netmask, which we lack).
    Broadcast,
    /// 0.0.0.0/8 ("this network", RFC 1122) and ::.
    Unspecified,
    /// TEST-NET-1/2/3 (192.0.2/24, 198.51.100/24, 203.0.113/24, RFC 5737), 2001:db8::/32
    /// (RFC 3849) and 3fff::/20 (RFC 9637).
    Documentation,
    /// One of the VPN's own subnets (configured): the phone itself or the server's tunnel side.
    Tunnel,
    /// Everything else.
    Public,
}

impl AddrClass {
    /// True for addresses that never leave the host, the tunnel or the LAN: everything but
    /// [`AddrClass::Public`] and [`AddrClass::Documentation`].
    ///
    /// Documentation ranges count as public on purpose: the test lab's simulated internet is
    /// numbered from them (they are guaranteed never to collide with real hosts), so treating
    /// them as local would hide every lab flow from naming. On a real network they never appear.
    pub fn is_local(self) -> bool {
        !matches!(self, Self::Public | Self::Documentation)
    }

    /// Stable snake_case name, for storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::Cgnat => "cgnat",
            Self::LinkLocal => "link_local",
            Self::UniqueLocal => "unique_local",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Unspecified => "unspecified",
            Self::Documentation => "documentation",
            Self::Tunnel => "tunnel",
            Self::Public => "public",
        }
    }
}

impl std::fmt::Display for AddrClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies `ip`. `tunnel_nets` are the VPN's own subnets (e.g. 10.8.0.0/24, fd00:8::/64).
///
/// Order matters: the structural classes (unspecified, loopback, multicast, broadcast) win over
/// everything, then the tunnel nets — WireGuard subnets are usually carved out of RFC 1918, CGNAT
/// or ULA space, and "tunnel" is the more specific, configured fact — then the IANA ranges.
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports) is
/// classified as the IPv4 address it carries.
pub fn classify(ip: IpAddr, tunnel_nets: &[IpNet]) -> AddrClass {
    let ip = ip.to_canonical();
    if let IpAddr::V4(v4) = ip {
        if v4.octets()[0] == 0 {
            return AddrClass::Unspecified;
        }
        if v4.is_loopback() {
            return AddrClass::Loopback;
        }
        if v4.is_multicast() {
            return AddrClass::Multicast;
        }
        if v4.is_broadcast() {
            return AddrClass::Broadcast;
        }
    } else if let IpAddr::V6(v6) = ip {
        if v6.is_unspecified() {
            return AddrClass::Unspecified;
        }
        if v6.is_loopback() {
            return AddrClass::Loopback;
        }
        if v6.is_multicast() {
            return AddrClass::Multicast;
        }
    }
    // Compare against the canonical form too, so a mapped address hits a v4 tunnel net.
    if tunnel_nets.iter().any(|net| net.contains(&ip)) {
        return AddrClass::Tunnel;
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(v4: Ipv4Addr) -> AddrClass {
    let [a, b, c, _] = v4.octets();
    if v4.is_link_local() {
        AddrClass::LinkLocal
    } else if v4.is_private() {
        AddrClass::Private
    } else if a == 100 && (b & 0b1100_0000) == 64 {
        // 100.64.0.0/10: the second octet's top two bits are 01.
        AddrClass::Cgnat
    } else if matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113)) {
        AddrClass::Documentation
    } else {
        AddrClass::Public
    }
}

fn classify_v6(v6: Ipv6Addr) -> AddrClass {
    let seg = v6.segments();
    if (seg[0] & 0xffc0) == 0xfe80 {
        AddrClass::LinkLocal
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        AddrClass::UniqueLocal
    } else if (seg[0] == 0x2001 && seg[1] == 0x0db8) || (seg[0] & 0xfff0) == 0x3ff0 {
        AddrClass::Documentation
    } else {
        AddrClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddrClass {
        classify(s.parse().expect("test address"), &[])
    }

    #[test]
    fn ipv4_classes() {
        assert_eq!(c("127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("127.255.0.9"), AddrClass::Loopback);
        assert_eq!(c("10.1.2.3"), AddrClass::Private);
        assert_eq!(c("172.16.0.1"), AddrClass::Private);
        assert_eq!(c("172.31.255.255"), AddrClass::Private);
        assert_eq!(c("172.32.0.1"), AddrClass::Public);
        assert_eq!(c("192.168.1.1"), AddrClass::Private);
        assert_eq!(c("100.64.0.1"), AddrClass::Cgnat);
        assert_eq!(c("100.127.255.255"), AddrClass::Cgnat);
        assert_eq!(c("100.63.255.255"), AddrClass::Public);
        assert_eq!(c("100.128.0.0"), AddrClass::Public);
        assert_eq!(c("169.254.10.1"), AddrClass::LinkLocal);
        assert_eq!(c("224.0.0.251"), AddrClass::Multicast);
        assert_eq!(c("239.255.255.250"), AddrClass::Multicast);
        assert_eq!(c("255.255.255.255"), AddrClass::Broadcast);
        assert_eq!(c("0.0.0.0"), AddrClass::Unspecified);
        assert_eq!(c("0.1.2.3"), AddrClass::Unspecified);
        assert_eq!(c("192.0.2.7"), AddrClass::Documentation);
        assert_eq!(c("198.51.100.7"), AddrClass::Documentation);
        assert_eq!(c("203.0.113.7"), AddrClass::Documentation);
        assert_eq!(c("203.0.114.7"), AddrClass::Public);
        assert_eq!(c("1.1.1.1"), AddrClass::Public);
        assert_eq!(c("17.57.146.139"), AddrClass::Public);
    }

    #[test]
    fn ipv6_classes() {
        assert_eq!(c("::1"), AddrClass::Loopback);
        assert_eq!(c("::"), AddrClass::Unspecified);
        assert_eq!(c("fe80::1"), AddrClass::LinkLocal);
        assert_eq!(c("febf::1"), AddrClass::LinkLocal);
        assert_eq!(c("fec0::1"), AddrClass::Public);
        assert_eq!(c("fc00::1"), AddrClass::UniqueLocal);
        assert_eq!(c("fd12:3456::1"), AddrClass::UniqueLocal);
        assert_eq!(c("ff02::fb"), AddrClass::Multicast);
        assert_eq!(c("2001:db8::1"), AddrClass::Documentation);
        assert_eq!(c("2001:db9::1"), AddrClass::Public);
        assert_eq!(c("3fff:0fff::1"), AddrClass::Documentation);
        assert_eq!(c("2606:4700:30::6818:6291"), AddrClass::Public);
    }

    #[test]
    fn ipv4_mapped_is_classified_as_ipv4() {
        assert_eq!(c("::ffff:10.0.0.1"), AddrClass::Private);
        assert_eq!(c("::ffff:127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("::ffff:192.0.2.1"), AddrClass::Documentation);
        assert_eq!(c("::ffff:8.8.8.8"), AddrClass::Public);
        let tunnel: Vec<IpNet> = vec!["10.8.0.0/24".parse().expect("net")];
        let mapped: IpAddr = "::ffff:10.8.0.2".parse().expect("addr");
        assert_eq!(classify(mapped, &tunnel), AddrClass::Tunnel);
    }

    #[test]
    fn tunnel_nets_win_over_private_ranges() {
        let nets: Vec<IpNet> = vec![
            "10.8.0.0/24".parse().expect("net"),
            "100.96.0.0/12".parse().expect("net"),
            "fd00:8::/64".parse().expect("net"),
        ];
        let cl = |s: &str| classify(s.parse().expect("addr"), &nets);
        assert_eq!(cl("10.8.0.2"), AddrClass::Tunnel);
        assert_eq!(cl("10.9.0.2"), AddrClass::Private);
        assert_eq!(cl("100.100.1.1"), AddrClass::Tunnel);
        assert_eq!(cl("100.64.1.1"), AddrClass::Cgnat);
        assert_eq!(cl("fd00:8::2"), AddrClass::Tunnel);
        assert_eq!(cl("fd00:9::2"), AddrClass::UniqueLocal);
        // Structural classes still win even inside a configured net.
        let wide: Vec<IpNet> = vec!["0.0.0.0/0".parse().expect("net")];
        assert_eq!(classify("127.0.0.1".parse().expect("addr"), &wide), AddrClass::Loopback);
    }

    #[test]
    fn locality() {
        assert!(!AddrClass::Public.is_local());
        assert!(!AddrClass::Documentation.is_local());
        for class in [
            AddrClass::Loopback,
            AddrClass::Private,
            AddrClass::Cgnat,
            AddrClass::LinkLocal,
            AddrClass::UniqueLocal,
            AddrClass::Multicast,
            AddrClass::Broadcast,
            AddrClass::Unspecified,
            AddrClass::Tunnel,
        ] {
            assert!(class.is_local(), "{class} should be local");
        }
    }

    #[test]
    fn names_are_snake_case() {
        assert_eq!(AddrClass::LinkLocal.as_str(), "link_local");
        assert_eq!(AddrClass::UniqueLocal.as_str(), "unique_local");
        assert_eq!(AddrClass::Cgnat.to_string(), "cgnat");
    }
}
