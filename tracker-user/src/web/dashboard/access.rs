//! Who may use the dashboard: the interface's WireGuard peers (a source address within a peer's
//! allowed IPs, re-read as peers change) and the host itself (loopback), and which `Host` a
//! request may name (only the dashboard's own addresses, against DNS rebinding).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use ipnet::IpNet;

use crate::wireguard;

/// HTTP's default port, which a `Host` header leaves out.
const HTTP_PORT: u16 = 80;

/// How often the peers are read again while nobody knocks: a peer removed with `wg set` loses
/// access within this time.
pub const PEER_REFRESH: Duration = Duration::from_secs(10);
/// A connection from an unknown address reads the peers again at most this often: a phone
/// added a moment ago gets in at once, and a stranger knocking in a loop costs one `wg show`
/// a second, not one per connection.
const UNKNOWN_REFRESH: Duration = Duration::from_secs(1);
/// `wg show` normally answers in milliseconds; past this the last known peers stay in force.
const WG_TIMEOUT: Duration = Duration::from_secs(3);

/// The addresses allowed in: loopback always; the peers' allowed IPs as last read.
#[derive(Debug)]
pub struct Gate {
    iface: String,
    peers: RwLock<Arc<Vec<IpNet>>>,
    /// When the peers were last read (`None`: never).
    read_at: Mutex<Option<Instant>>,
}

impl Gate {
    /// A gate for `iface`'s peers; none are known until [`Gate::refresh`].
    pub fn new(iface: &str) -> Self {
        Self { iface: iface.to_owned(), peers: RwLock::new(Arc::new(Vec::new())), read_at: Mutex::new(None) }
    }

    /// Whether `ip` may connect, by what is known now.
    pub fn allows_now(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || self.peers.read().unwrap_or_else(|p| p.into_inner()).iter().any(|n| n.contains(&ip))
    }

    /// Whether `ip` may connect; an address no known peer holds reads the peers again first
    /// (at most once per [`UNKNOWN_REFRESH`]).
    pub async fn allows(&self, ip: IpAddr) -> bool {
        if self.allows_now(ip) {
            return true;
        }
        let stale =
            self.read_at.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|t| t.elapsed() >= UNKNOWN_REFRESH);
        if stale {
            self.refresh().await;
        }
        self.allows_now(ip)
    }

    /// Reads the peers with `wg show` (off the async threads). A failure keeps the last known
    /// peers: a hiccup of `wg` must not lock the owner out, nor let anyone new in.
    pub async fn refresh(&self) {
        *self.read_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let iface = self.iface.clone();
        let read =
            tokio::time::timeout(WG_TIMEOUT, tokio::task::spawn_blocking(move || wireguard::peers(&iface))).await;
        match read {
            Ok(Ok(read)) => {
                // A refusal is said once for the daemon and the dashboard together, not at
                // every knock of a phone it keeps out.
                wireguard::log_once(&self.iface, &read);
                if let Ok(peers) = read {
                    self.set_peers(peer_nets(peers.as_deref()));
                }
            }
            Ok(Err(e)) => tracing::warn!("dashboard: reading the WireGuard peers: {e}"),
            Err(_) => tracing::warn!(iface = %self.iface, "dashboard: `wg show` did not answer in {WG_TIMEOUT:?}"),
        }
    }

    fn set_peers(&self, nets: Vec<IpNet>) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if **peers != nets {
            tracing::debug!(allowed = ?nets, "dashboard: WireGuard peers");
            *peers = Arc::new(nets);
        }
    }
}

/// The networks a peer list lets in: every allowed IP of every peer. Without WireGuard (`None`:
/// not a WireGuard interface, or `wg` missing) nobody but the host itself.
fn peer_nets(peers: Option<&[wireguard::Peer]>) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> =
        peers.unwrap_or_default().iter().flat_map(|p| p.allowed_ips.iter().map(IpNet::trunc)).collect();
    nets.sort();
    nets.dedup();
    nets
}

/// The `Host` values a request may carry: the addresses the dashboard listens on, with their
/// port, and `localhost`. A page from another site that a browser was tricked into sending here
/// (DNS rebinding: evil.example resolving to the tunnel address) names its own host and is
/// refused, so it can never read the dashboard with the phone's address.
#[derive(Clone, Debug, Default)]
pub struct Hosts(Vec<String>);

impl Hosts {
    pub fn new(listening: &[SocketAddr]) -> Self {
        let mut hosts: Vec<String> = listening.iter().map(ToString::to_string).collect();
        for addr in listening {
            hosts.push(format!("localhost:{}", addr.port()));
            // A browser leaves out the default port.
            if addr.port() == HTTP_PORT {
                hosts.push(match addr.ip() {
                    IpAddr::V4(ip) => ip.to_string(),
                    IpAddr::V6(ip) => format!("[{ip}]"),
                });
                hosts.push("localhost".into());
            }
        }
        hosts.sort();
        hosts.dedup();
        Self(hosts)
    }

    /// Whether a request's `Host` header names this dashboard (ASCII case ignored).
    pub fn allows(&self, host: &[u8]) -> bool {
        self.0.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn peers_and_loopback_get_in_and_nobody_else() {
        let gate = Gate::new("wg-test");
        let peers = wireguard::parse_peers("k1\t10.77.0.2/32 fd77::2/128\nk2\t192.168.5.0/24\nk3\t(none)\n").unwrap();
        gate.set_peers(peer_nets(Some(&peers)));
        for ok in ["10.77.0.2", "fd77::2", "::ffff:10.77.0.2", "192.168.5.77", "127.0.0.1", "127.8.9.1", "::1"] {
            assert!(gate.allows_now(ip(ok)), "{ok}");
        }
        for no in ["10.77.0.3", "10.77.0.1", "fd77::3", "203.0.113.10", "192.0.2.2", "::"] {
            assert!(!gate.allows_now(ip(no)), "{no}");
        }
        gate.set_peers(peer_nets(None));
        assert!(!gate.allows_now(ip("10.77.0.2")), "a removed peer is out");
        assert!(gate.allows_now(ip("::1")));
    }

    #[test]
    fn only_the_dashboards_own_hosts_are_served() {
        let hosts = Hosts::new(&["10.77.0.1:8722".parse().unwrap(), "[fd77::1]:8722".parse().unwrap()]);
        for ok in ["10.77.0.1:8722", "[fd77::1]:8722", "[FD77::1]:8722", "localhost:8722", "LocalHost:8722"] {
            assert!(hosts.allows(ok.as_bytes()), "{ok}");
        }
        for no in ["evil.example:8722", "10.77.0.1", "10.77.0.1:80", "localhost", "", "10.77.0.1:8722 "] {
            assert!(!hosts.allows(no.as_bytes()), "{no}");
        }
        let on_80 = Hosts::new(&["[fd77::1]:80".parse().unwrap()]);
        for ok in ["[fd77::1]", "[fd77::1]:80", "localhost"] {
            assert!(on_80.allows(ok.as_bytes()), "{ok}");
        }
    }
}
