//! The interface's WireGuard peers, read with `wg show IFACE allowed-ips`: which tunnel
//! addresses belong to one device (a phone's IPv4 and IPv6 addresses are one peer).

use std::{net::IpAddr, process::Command};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;

/// A WireGuard peer: one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its public key, base64 as `wg` shows it: the device's identity.
    pub public_key: String,
    pub allowed_ips: Vec<IpNet>,
}

/// The interface's peers, or `None` when `iface` is not a WireGuard interface or `wg` (from
/// wireguard-tools) is missing: then every address is a device of its own.
pub fn peers(iface: &str) -> Result<Option<Vec<Peer>>> {
    let out = match Command::new("wg").args(["show", iface, "allowed-ips"]).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("running wg show"),
    };
    if !out.status.success() {
        // "Unable to access interface: Protocol not supported" and the like: not WireGuard.
        return Ok(None);
    }
    let text = String::from_utf8(out.stdout).context("wg show printed non-UTF-8")?;
    parse_peers(&text).map(Some)
}

/// Each peer's allowed IPs ([`parse_peers`]), peers without any left out.
pub fn parse_allowed_ips(text: &str) -> Result<Vec<Vec<IpNet>>> {
    Ok(allowed_ips(&parse_peers(text)?))
}

/// Each peer's allowed IPs, peers without any left out: what [`Devices`] is built from.
pub fn allowed_ips(peers: &[Peer]) -> Vec<Vec<IpNet>> {
    peers.iter().map(|p| p.allowed_ips.clone()).filter(|ips| !ips.is_empty()).collect()
}

/// Parses `wg show IFACE allowed-ips`: one line per peer, its public key, a tab, then its
/// allowed IPs separated by spaces, or `(none)`.
pub fn parse_peers(text: &str) -> Result<Vec<Peer>> {
    let mut peers = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((key, ips)) = line.split_once('\t') else {
            bail!("unexpected line from wg show: {line:?}");
        };
        let nets = ips
            .split_whitespace()
            .filter(|s| *s != "(none)")
            .map(|s| s.parse::<IpNet>().with_context(|| format!("allowed IP {s:?} from wg show")))
            .collect::<Result<Vec<_>>>()?;
        peers.push(Peer { public_key: key.trim().to_owned(), allowed_ips: nets });
    }
    Ok(peers)
}

/// Maps a client address to its device: the first allowed IP of the peer whose allowed IPs
/// hold it most specifically; addresses outside every peer are their own device.
#[derive(Clone, Debug, Default)]
pub struct Devices {
    /// (allowed IP, the peer's representative address), most specific first.
    nets: Vec<(IpNet, IpAddr)>,
}

impl Devices {
    pub fn new(peers: &[Vec<IpNet>]) -> Self {
        let mut nets: Vec<(IpNet, IpAddr)> = peers
            .iter()
            .filter_map(|p| Some((p, p.first()?.addr())))
            .flat_map(|(p, rep)| p.iter().map(move |n| (n.trunc(), rep)))
            .collect();
        nets.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        Self { nets }
    }

    pub fn device(&self, ip: IpAddr) -> IpAddr {
        let ip = ip.to_canonical();
        self.nets.iter().find(|(n, _)| n.contains(&ip)).map_or(ip, |(_, rep)| *rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\t10.77.0.2/32 fd77::2/128\n\
                        TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=\t10.77.0.3/32\n\
                        HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\t(none)\n\
                        gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA=\t192.168.5.0/24\n";

    #[test]
    fn parses_peers_and_skips_peers_without_addresses() {
        let peers = parse_allowed_ips(SHOW).unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[0], ["10.77.0.2/32".parse().unwrap(), "fd77::2/128".parse().unwrap()]);
        assert!(parse_allowed_ips("garbage without a tab").is_err());
        assert!(parse_allowed_ips("key\tnot-an-ip").is_err());
    }

    #[test]
    fn a_peers_addresses_are_one_device() {
        let d = Devices::new(&parse_allowed_ips(SHOW).unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(d.device(ip("fd77::2")), ip("10.77.0.2"));
        assert_eq!(d.device(ip("10.77.0.2")), ip("10.77.0.2"));
        assert_eq!(d.device(ip("10.77.0.3")), ip("10.77.0.3"));
        assert_eq!(d.device(ip("192.168.5.77")), ip("192.168.5.0"));
        assert_eq!(d.device(ip("10.77.0.9")), ip("10.77.0.9"), "outside every peer");
        assert_eq!(Devices::default().device(ip("fd77::2")), ip("fd77::2"));
    }
}
