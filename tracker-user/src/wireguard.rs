//! The interface's WireGuard peers, read with `wg show IFACE allowed-ips` or, where userspace
//! WireGuard's control socket refuses this process, from the package's root reader
//! ([`PEERS_SOCKET`]): which tunnel addresses belong to one device (a phone's IPv4 and IPv6
//! addresses are one peer), and why they cannot be read when neither works.

use std::{
    collections::BTreeMap,
    fmt,
    io::Read as _,
    net::IpAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;

/// Where userspace WireGuard (wireguard-go, boringtun) serves each interface's control socket,
/// `IFACE.sock`, and where `wg` looks for it before asking the kernel over netlink.
pub const UAPI_DIR: &str = "/var/run/wireguard";
/// Where the package's tracker-wireguard-peers.socket serves `wg show all allowed-ips`, run as
/// root, to the tracker group: the peers of userspace WireGuard, whose control sockets only
/// root may open (and whose owner, mode or ACL cannot be changed: wireguard-go stops when they
/// are).
pub const PEERS_SOCKET: &str = "/run/tracker-wireguard-peers.sock";
/// How long that reader gets to answer; `wg` takes milliseconds.
const PEERS_SOCKET_TIMEOUT: Duration = Duration::from_secs(3);

/// A WireGuard peer: one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its public key, base64 as `wg` shows it: the device's identity.
    pub public_key: String,
    pub allowed_ips: Vec<IpNet>,
}

/// Why the peers could not be read.
#[derive(Debug)]
pub enum PeersError {
    /// The interface's userspace control socket exists but this process may not open it
    /// (wireguard-go makes it root's with mode 0700, and the service runs as its own user),
    /// and the root reader at [`PEERS_SOCKET`] did not answer either, for `reader`'s reason.
    SocketDenied { iface: String, socket: PathBuf, uid: u32, reader: std::io::Error },
    /// `wg` could not be started.
    Wg(std::io::Error),
    /// `wg` printed something that is not a peer list.
    Unreadable(String),
}

impl fmt::Display for PeersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SocketDenied { iface, socket, uid, reader } => write!(
                f,
                "cannot read the WireGuard peers of {iface}: permission denied on {}, userspace WireGuard's \
                 control socket (root's, mode 0700), for this process's uid {uid}, and no reader answered on \
                 {PEERS_SOCKET} ({reader}). Until one does, every address is a device of its own and the \
                 dashboard lets in only this host, not the phones. Start the package's reader: systemctl \
                 enable --now tracker-wireguard-peers.socket",
                socket.display()
            ),
            Self::Wg(e) => write!(f, "running `wg show`: {e}"),
            Self::Unreadable(why) => write!(f, "reading `wg show`'s output: {why}"),
        }
    }
}

impl std::error::Error for PeersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Wg(e) => Some(e),
            _ => None,
        }
    }
}

/// The interface's peers, or `None` when `iface` is not a WireGuard interface or `wg` (from
/// wireguard-tools) is missing: then every address is a device of its own.
pub fn peers(iface: &str) -> Result<Option<Vec<Peer>>, PeersError> {
    let out = match Command::new("wg").args(["show", iface, "allowed-ips"]).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PeersError::Wg(e)),
    };
    if !out.status.success() {
        if let Some(socket) = socket_refusing_us(iface) {
            return peers_from_reader(iface).map(Some).map_err(|reader| match reader {
                ReaderError::Unreachable(reader) => {
                    // SAFETY: geteuid has no preconditions and cannot fail.
                    let uid = unsafe { libc::geteuid() };
                    PeersError::SocketDenied { iface: iface.to_owned(), socket, uid, reader }
                }
                ReaderError::Unreadable(why) => PeersError::Unreadable(why),
            });
        }
        // "Unable to access interface: Protocol not supported" and the like: not WireGuard.
        return Ok(None);
    }
    let text = String::from_utf8(out.stdout).map_err(|_| PeersError::Unreadable("not UTF-8".into()))?;
    parse_peers(&text).map(Some).map_err(|e| PeersError::Unreadable(format!("{e:#}")))
}

/// `iface`'s userspace control socket, `UAPI_DIR/IFACE.sock`.
pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(UAPI_DIR).join(format!("{iface}.sock"))
}

/// `iface`'s userspace control socket when it exists and refuses this process (`wg` says only
/// "Permission denied", not where). Connecting is the test because it is what `wg` does.
fn socket_refusing_us(iface: &str) -> Option<PathBuf> {
    if iface.contains('/') {
        return None; // not a name `wg` would look up as a socket
    }
    let socket = socket_path(iface);
    match UnixStream::connect(&socket) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(socket),
        _ => None,
    }
}

/// Why the root reader gave no peers.
enum ReaderError {
    /// Not listening, or this process may not connect, or no answer in time.
    Unreachable(std::io::Error),
    /// It answered with what is not `wg show all allowed-ips`.
    Unreadable(String),
}

/// `iface`'s peers from the root reader at [`PEERS_SOCKET`]: it writes `wg show all
/// allowed-ips` and closes; nothing is sent to it.
fn peers_from_reader(iface: &str) -> Result<Vec<Peer>, ReaderError> {
    let mut text = String::new();
    let read = UnixStream::connect(PEERS_SOCKET)
        .and_then(|mut s| s.set_read_timeout(Some(PEERS_SOCKET_TIMEOUT)).and_then(|()| s.read_to_string(&mut text)));
    read.map_err(ReaderError::Unreachable)?;
    parse_all_peers(&text, iface).map_err(|e| ReaderError::Unreadable(format!("{e:#}")))
}

/// The peers of `iface` in `wg show all allowed-ips`: lines of the interface name, a tab, then
/// a line as [`parse_peers`] reads it.
pub fn parse_all_peers(text: &str, iface: &str) -> Result<Vec<Peer>> {
    let mut mine = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((name, rest)) = line.split_once('\t') else {
            bail!("unexpected line from wg show all: {line:?}");
        };
        if name == iface {
            mine.push_str(rest);
            mine.push('\n');
        }
    }
    parse_peers(&mine)
}

/// The last failure logged for each interface. The daemon reads the peers every 30 s and the
/// dashboard every 10 s (and when a stranger knocks): a refusal is said when it starts, again
/// only if it changes, and its end is said once, so the log says it once, not every few seconds.
static SAID: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Logs the outcome of a [`peers`] read of `iface` as [`SAID`] describes: a failure as a
/// warning the first time, success once after a failure.
pub fn log_once(iface: &str, read: &Result<Option<Vec<Peer>>, PeersError>) {
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    match news(&mut said, iface, read) {
        Some(News::Failed(text)) => tracing::warn!("{text}"),
        Some(News::Readable(n)) => tracing::info!("the WireGuard peers of {iface} are readable again: {n} peers"),
        None => {}
    }
}

/// What a read changed, as [`log_once`] says it.
#[derive(Debug, PartialEq, Eq)]
enum News {
    Failed(String),
    Readable(usize),
}

/// The news in `read` given what was `said` before (updated): a failure not said yet, or the
/// first success after one.
fn news(
    said: &mut BTreeMap<String, String>,
    iface: &str,
    read: &Result<Option<Vec<Peer>>, PeersError>,
) -> Option<News> {
    match read {
        Err(e) => {
            let text = e.to_string();
            (said.insert(iface.to_owned(), text.clone()).as_ref() != Some(&text)).then_some(News::Failed(text))
        }
        Ok(peers) => said.remove(iface).map(|_| News::Readable(peers.as_ref().map_or(0, Vec::len))),
    }
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
    fn a_refusal_is_news_once_and_so_is_its_end() {
        let mut said = BTreeMap::new();
        let denied = || {
            let reader = std::io::Error::from(std::io::ErrorKind::NotFound);
            Err(PeersError::SocketDenied { iface: "wg0".into(), socket: socket_path("wg0"), uid: 998, reader })
        };
        let Some(News::Failed(text)) = news(&mut said, "wg0", &denied()) else { panic!("a refusal is news") };
        assert!(
            text.contains("permission denied on /var/run/wireguard/wg0.sock") && text.contains("uid 998"),
            "{text}"
        );
        assert!(text.contains("on /run/tracker-wireguard-peers.sock (entity not found)"), "{text}");
        assert!(text.contains("systemctl enable --now tracker-wireguard-peers.socket"), "{text}");
        assert_eq!(news(&mut said, "wg0", &denied()), None, "said once");
        assert!(news(&mut said, "wg1", &denied()).is_some(), "another interface is news");
        let other = Err(PeersError::Unreadable("x".into()));
        assert!(matches!(news(&mut said, "wg0", &other), Some(News::Failed(_))), "another failure is news");
        let two = Ok(Some(parse_peers(SHOW).unwrap()[..2].to_vec()));
        assert_eq!(news(&mut said, "wg0", &two), Some(News::Readable(2)));
        assert_eq!(news(&mut said, "wg0", &two), None, "and working is said once");
        assert_eq!(news(&mut said, "wg2", &Ok(None)), None, "nothing to say of what always worked");
    }

    #[test]
    fn the_readers_list_of_every_interface_gives_ours() {
        let all: String = SHOW.lines().map(|l| format!("wg0\t{l}\nwg1\tk9\t10.9.0.2/32\n")).collect();
        assert_eq!(parse_all_peers(&all, "wg0").unwrap(), parse_peers(SHOW).unwrap());
        assert_eq!(parse_all_peers(&all, "wg1").unwrap().len(), 4);
        assert!(parse_all_peers(&all, "wg2").unwrap().is_empty());
        assert!(parse_all_peers("wg0 no tab", "wg0").is_err());
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
