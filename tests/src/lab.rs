//! The namespace lab: a phone, a VPN host and "the internet" in three network namespaces, joined
//! by veths, with a real WireGuard tunnel (wireguard-go) from the phone to the VPN host, so
//! tracker can be run and tested on the VPN host's WireGuard interface without a VPN.
//!
//! ```text
//!  {p}-phone                        {p}-vpn                                 {p}-net
//!  {p}ph 10.77.0.2 fd77::2  ==WG==  wg0 ({p}wg) 10.77.0.1 fd77::1
//!  {p}-phone0 10.99.0.2/30 ------- {p}-vpn0 10.99.0.1/30
//!                                   {p}-vpn1 192.0.2.1 2001:db8::1 ------- {p}-net0 192.0.2.2 2001:db8::2
//!                                                                          lo: 203.0.113.10/.20,
//!                                                                          198.51.100.30, 2001:db8:2::10/::20,
//!                                                                          the zone's hosts, 203.0.113.53,
//!                                                                          the real world's hosts
//!                                                                          (198.51.100.61-70, 2001:db8:5::61-70),
//!                                                                          ssh 203.0.113.22 2001:db8:2::22,
//!                                                                          stun 203.0.113.78/.79
//! ```
//!
//! The phone routes everything into the tunnel; the VPN host forwards (no NAT: the internet
//! routes 10.77.0.0/24 and fd77::/64 back to it). Every internet host serves HTTP on port 80
//! (files in [`Lab::www_dir`]) and UDP echo on port 9000 (`labsrv.py`, one Python process);
//! iperf3 listens on [`IPERF_V4`]:5201. All addresses are documentation ranges, except the
//! private LAN host of the zone ([`zone::LAN_V4`], [`zone::LAN_V6`]), which the VPN host routes
//! to the internet namespace too.
//!
//! DNS and TLS, for naming flows (data in [`crate::zone`], the one source of truth):
//!
//! - **On-host resolver**: unbound in the VPN namespace on the tunnel addresses
//!   [`VPN_TUN_V4`]:53 and [`VPN_TUN_V6`]:53 (UDP and TCP), authoritative for `lab.test`
//!   ([`Resolver::OnHost`]). The phone's `ip netns exec` resolver: the lab writes
//!   `/etc/netns/{p}-phone/resolv.conf` naming it, so `ip netns exec {p}-phone curl
//!   http://www.lab.test/` resolves through the tunnel (removed at teardown).
//! - **Upstream resolver**: a second unbound with the same zone in the internet namespace on
//!   [`UPSTREAM_DNS_V4`] and [`UPSTREAM_DNS_V6`] ([`Resolver::Upstream`]): the phone's queries
//!   to it cross the tunnel and the VPN host, as to a public resolver.
//! - Neither recurses: names outside `lab.test` are REFUSED, and unbound may query no address
//!   at all, so no packet leaves the namespaces. [`Lab::phone_cmd_resolving`] runs a phone
//!   command whose `getaddrinfo` (curl, getent) uses the resolver of the test's choice.
//! - **TLS**: `openssl s_server -www` on port [`TLS_PORT`] of every internet host (one process on
//!   the wildcard address, one connection at a time), with a self-signed certificate for
//!   [`zone::TLS_NAME`] and the shared names ([`LabNames::tls_cert`]; curl it with
//!   `--cacert`, or `-k`).
//! - **Hostile DNS**: [`crate::hostile_dns`] answers the phone from port 53 of an internet host
//!   with crafted messages.
//!
//! - **The real world**: both resolvers also answer for real companies' names
//!   ([`zone::world`]: `www.apple.com`, `api.twitter.com`, `images.apple.com` through Akamai, ...)
//!   with documentation addresses that the internet namespace serves like its other hosts, and
//!   refuse every other name.
//!
//! Optional parts, which a test adds when it needs them (in `lab/extras.rs`):
//! [`Lab::add_second_phone`] (a second WireGuard peer, `{p}-phone2`, tunnel addresses
//! [`PHONE2_V4`] and [`PHONE2_V6`]), [`Lab::start_ssh`] (dropbear on [`SSH_V4`]/[`SSH_V6`] port
//! 22) and [`Lab::start_stun`] (stund on [`STUN_V4`]:3478, alternate [`STUN_ALT_V4`]:3479).
//!
//! A [`Lab`] tears everything down when dropped, also while a test panics. Labs with distinct
//! prefixes coexist; interface names embed the prefix because wireguard-go's control socket
//! `/var/run/wireguard/IFACE.sock` is shared by all namespaces.

use crate::cmd::{ChildGuard, have_program, run, succeeds, wait_until};
use crate::procs;
use crate::zone;
use anyhow::{Context, Result, bail, ensure};
pub use extras::*;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod extras;
mod restart;

/// The prefix `cargo xtask lab up` uses; its VPN interface is called `wg0`, like tracker's default.
pub const DEFAULT_PREFIX: &str = "trk";
/// Longest prefix: `{prefix}-phone0` must fit the kernel's 15-character interface names.
pub const MAX_PREFIX_LEN: usize = 8;

/// The phone's tunnel addresses (the VPN client as tracker sees it).
pub const PHONE_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const PHONE_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// The VPN host's tunnel addresses (on [`Lab::vpn_iface`]).
pub const VPN_TUN_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const VPN_TUN_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// Tunnel prefix lengths.
pub const TUN_V4_PREFIX_LEN: u8 = 24;
pub const TUN_V6_PREFIX_LEN: u8 = 64;
/// The underlay between phone and VPN host that carries the encrypted WireGuard packets.
pub const PHONE_UNDERLAY_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const VPN_UNDERLAY_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The link between the VPN host and the internet.
pub const VPN_UPLINK_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const VPN_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const NET_UPLINK_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const NET_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Internet hosts. Each serves HTTP (port 80) and UDP echo (port 9000); the names say which
/// one a test should reach for first so that tests read alike.
pub const WEB_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const WEB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10);
pub const ECHO_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const ECHO_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x20);
/// Also runs the iperf3 server (IPv4 only).
pub const IPERF_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
pub const INTERNET_V4: [Ipv4Addr; 3] = [WEB_V4, ECHO_V4, IPERF_V4];
pub const INTERNET_V6: [Ipv6Addr; 2] = [WEB_V6, ECHO_V6];
/// The upstream resolver ([`Resolver::Upstream`]), an internet host.
pub const UPSTREAM_DNS_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
pub const UPSTREAM_DNS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x53);
/// Server ports.
pub const HTTP_PORT: u16 = 80;
pub const DNS_PORT: u16 = 53;
/// The TLS server's port, on every internet host.
pub const TLS_PORT: u16 = 443;
pub const UDP_ECHO_PORT: u16 = 9000;
pub const IPERF_PORT: u16 = 5201;
/// WireGuard listen ports on the underlay.
pub const VPN_WG_PORT: u16 = 51820;
pub const PHONE_WG_PORT: u16 = 51821;
/// Files served over HTTP, with their sizes. Binary files hold [`blob_byte`]`(i)` at offset i.
pub const SMALL_TXT: &str = "small.txt";
pub const SMALL_TXT_CONTENT: &str = "hello from the tracker lab\n";
pub const FILE_1M: &str = "1m.bin";
pub const FILE_1M_SIZE: u64 = 1 << 20;
pub const FILE_10M: &str = "10m.bin";
pub const FILE_10M_SIZE: u64 = 10 << 20;

/// How long wireguard-go and the servers get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
const SERVER_SCRIPT: &str = include_str!("labsrv.py");

/// The content of the binary files at offset `i`: a pattern with a prime period, so a shifted
/// or truncated copy does not match.
pub fn blob_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// `http://ADDR/PATH` with IPv6 addresses bracketed.
pub fn http_url(addr: impl Into<IpAddr>, path: &str) -> String {
    let path = path.trim_start_matches('/');
    match addr.into() {
        IpAddr::V4(a) => format!("http://{a}/{path}"),
        IpAddr::V6(a) => format!("http://[{a}]/{path}"),
    }
}

/// `https://NAME/PATH`, for use with curl's `--resolve NAME:443:ADDR` or DNS.
pub fn https_url(name: &str, path: &str) -> String {
    format!("https://{name}/{}", path.trim_start_matches('/'))
}

/// Every address the internet namespace carries on its loopback, each once: [`INTERNET_V4`],
/// [`INTERNET_V6`], the hosts of the zone ([`zone::server_addrs`]) and of the real world
/// ([`zone::world_addrs`]), the upstream resolver, and the SSH and STUN servers' addresses.
pub fn internet_hosts() -> Vec<IpAddr> {
    let mut hosts: Vec<IpAddr> = INTERNET_V4.iter().map(|&a| IpAddr::V4(a)).collect();
    hosts.extend(INTERNET_V6.iter().map(|&a| IpAddr::V6(a)));
    hosts.extend(zone::server_addrs());
    hosts.extend(zone::world_addrs());
    hosts.extend([IpAddr::V4(UPSTREAM_DNS_V4), IpAddr::V6(UPSTREAM_DNS_V6)]);
    hosts.extend(extras::server_hosts());
    let mut seen = Vec::with_capacity(hosts.len());
    hosts.retain(|h| {
        let new = !seen.contains(h);
        seen.push(*h);
        new
    });
    hosts
}

/// The internet hosts that serve HTTP on [`HTTP_PORT`] and UDP echo on [`UDP_ECHO_PORT`]
/// (`labsrv.py`): all but the upstream resolver and the SSH and STUN servers.
pub fn http_hosts() -> Vec<IpAddr> {
    let others = extras::server_hosts();
    internet_hosts()
        .into_iter()
        .filter(|&h| h != IpAddr::V4(UPSTREAM_DNS_V4) && h != IpAddr::V6(UPSTREAM_DNS_V6) && !others.contains(&h))
        .collect()
}

/// The lab's two resolvers, both unbound serving [`crate::zone`] authoritatively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resolver {
    /// On the VPN host itself, on its tunnel addresses: the phone's queries end at `wg0`.
    OnHost,
    /// In the internet namespace: the phone's queries cross the tunnel to reach it.
    Upstream,
}

impl Resolver {
    pub const ALL: [Resolver; 2] = [Resolver::OnHost, Resolver::Upstream];

    pub fn v4(self) -> Ipv4Addr {
        match self {
            Resolver::OnHost => VPN_TUN_V4,
            Resolver::Upstream => UPSTREAM_DNS_V4,
        }
    }

    pub fn v6(self) -> Ipv6Addr {
        match self {
            Resolver::OnHost => VPN_TUN_V6,
            Resolver::Upstream => UPSTREAM_DNS_V6,
        }
    }

    /// Its IPv6 or IPv4 address.
    pub fn addr(self, v6: bool) -> IpAddr {
        if v6 { self.v6().into() } else { self.v4().into() }
    }

    /// The namespace it runs in.
    pub fn ns(self) -> Ns {
        match self {
            Resolver::OnHost => Ns::Vpn,
            Resolver::Upstream => Ns::Net,
        }
    }

    /// Used in its file names: `unbound-{tag}.conf`, `.log`, `.pid`.
    pub fn tag(self) -> &'static str {
        match self {
            Resolver::OnHost => "onhost",
            Resolver::Upstream => "upstream",
        }
    }
}

/// One of the lab's namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ns {
    Phone,
    Vpn,
    Net,
    /// The second phone, only after [`Lab::add_second_phone`].
    Phone2,
}

impl Ns {
    /// Every namespace a lab may have (what teardown looks for).
    pub const ALL: [Ns; 4] = [Ns::Phone, Ns::Vpn, Ns::Net, Ns::Phone2];
    /// The namespaces every lab has.
    pub const BASE: [Ns; 3] = [Ns::Phone, Ns::Vpn, Ns::Net];

    fn suffix(self) -> &'static str {
        match self {
            Ns::Phone => "phone",
            Ns::Phone2 => "phone2",
            Ns::Vpn => "vpn",
            Ns::Net => "net",
        }
    }
}

/// The names of everything a lab with a given prefix creates. Pure: building it changes nothing,
/// which is what lets [`Lab::down`] clean up a lab that this process did not create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabNames {
    pub prefix: String,
    /// WireGuard interface in the phone namespace: `{prefix}ph`.
    pub phone_iface: String,
    /// WireGuard interface in the VPN namespace: `wg0` for [`DEFAULT_PREFIX`], else `{prefix}wg`.
    pub vpn_iface: String,
    /// Phone side of the underlay veth.
    pub phone_underlay_iface: String,
    /// VPN side of the underlay veth.
    pub vpn_underlay_iface: String,
    /// VPN side of the veth to the internet.
    pub vpn_uplink_iface: String,
    /// Internet side of that veth.
    pub net_uplink_iface: String,
    /// The second phone's WireGuard interface (`{prefix}ph2`) and its underlay veth's two ends
    /// (`{prefix}-phone2` in its namespace, `{prefix}-vpn2` on the VPN host).
    pub phone2_iface: String,
    pub phone2_underlay_iface: String,
    pub vpn_underlay2_iface: String,
    /// Temporary files: keys, logs, the server script, `www/`.
    pub dir: PathBuf,
    /// Served over HTTP by every internet host; tests may add files.
    pub www_dir: PathBuf,
    /// `/etc/netns/{prefix}-phone`: `ip netns exec` bind-mounts its `resolv.conf` (naming the
    /// on-host resolver) over `/etc/resolv.conf` for commands in the phone namespace.
    pub phone_etc_dir: PathBuf,
    /// `/etc/netns/{prefix}-phone2`, the same for the second phone.
    pub phone2_etc_dir: PathBuf,
    /// The TLS server's self-signed certificate (PEM), for `curl --cacert`, and its key.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

impl LabNames {
    /// Fails unless `prefix` is 1..=[`MAX_PREFIX_LEN`] lowercase letters and digits, starting
    /// with a letter (it becomes part of interface, namespace and file names).
    pub fn new(prefix: &str) -> Result<Self> {
        let valid = (1..=MAX_PREFIX_LEN).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        ensure!(
            valid,
            "invalid lab prefix {prefix:?}: use 1 to {MAX_PREFIX_LEN} lowercase letters and digits, starting with a letter"
        );
        let vpn_iface = if prefix == DEFAULT_PREFIX { "wg0".to_owned() } else { format!("{prefix}wg") };
        let dir = std::env::temp_dir().join(format!("tracker-lab-{prefix}"));
        Ok(Self {
            prefix: prefix.to_owned(),
            phone_iface: format!("{prefix}ph"),
            vpn_iface,
            phone_underlay_iface: format!("{prefix}-phone0"),
            vpn_underlay_iface: format!("{prefix}-vpn0"),
            vpn_uplink_iface: format!("{prefix}-vpn1"),
            net_uplink_iface: format!("{prefix}-net0"),
            phone2_iface: format!("{prefix}ph2"),
            phone2_underlay_iface: format!("{prefix}-phone2"),
            vpn_underlay2_iface: format!("{prefix}-vpn2"),
            www_dir: dir.join("www"),
            phone_etc_dir: Path::new("/etc/netns").join(format!("{prefix}-phone")),
            phone2_etc_dir: Path::new("/etc/netns").join(format!("{prefix}-phone2")),
            tls_cert: dir.join("tls.crt"),
            tls_key: dir.join("tls.key"),
            dir,
        })
    }

    /// The namespace's name, e.g. `trk-vpn`.
    pub fn ns_name(&self, ns: Ns) -> String {
        format!("{}-{}", self.prefix, ns.suffix())
    }

    /// The namespace's bind mount, e.g. `/run/netns/trk-vpn`, for `nsenter --net=`.
    pub fn ns_path(&self, ns: Ns) -> PathBuf {
        Path::new("/run/netns").join(self.ns_name(ns))
    }

    /// wireguard-go's control socket for `iface`.
    pub fn wg_socket(iface: &str) -> PathBuf {
        Path::new("/var/run/wireguard").join(format!("{iface}.sock"))
    }

    /// `nsenter --net=NS program`: runs in the namespace but keeps the host's mount namespace,
    /// unlike `ip netns exec`, which remounts /sys and would hide the bpffs pins in /sys/fs/bpf.
    pub fn cmd(&self, ns: Ns, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns_path(ns).display())).arg(program);
        cmd
    }

    /// Whether any of the lab's namespaces exists.
    pub fn exists(&self) -> bool {
        Ns::ALL.iter().any(|&ns| self.ns_path(ns).exists())
    }

    /// wireguard-go processes serving this lab's interfaces, found by command line. For `wg0`,
    /// which is not lab-specific, only processes outside the host's namespace count, so a real
    /// VPN's wireguard-go on the host is never touched.
    pub fn wireguard_go_procs(&self) -> Result<Vec<procs::Proc>> {
        let host_ns = procs::netns_of(1);
        let ours = |p: &procs::Proc| {
            let iface = p.argv.last().map(String::as_str).unwrap_or_default();
            p.program() == "wireguard-go"
                && (iface == self.phone_iface || iface == self.vpn_iface || iface == self.phone2_iface)
                && (iface != "wg0" || procs::netns_of(p.pid) != host_ns)
        };
        Ok(procs::all()?.into_iter().filter(ours).collect())
    }

    /// Removes everything the lab may have left: processes in its namespaces, its wireguard-go
    /// processes, the namespaces, the control sockets and the temp dir. Returns what it removed.
    pub fn teardown(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let mut victims = self.wireguard_go_procs()?;
        for ns in Ns::ALL {
            for p in procs::in_netns(&self.ns_path(ns))? {
                if !victims.contains(&p) {
                    victims.push(p);
                }
            }
        }
        procs::stop_all(&victims, Duration::from_secs(3))?;
        removed.extend(victims.iter().map(|p| format!("process {} ({})", p.pid, p.cmdline())));
        for ns in Ns::ALL {
            if self.ns_path(ns).exists() {
                run(Command::new("ip").args(["netns", "del", &self.ns_name(ns)]))?;
                removed.push(format!("namespace {}", self.ns_name(ns)));
            }
        }
        for iface in [&self.phone_iface, &self.vpn_iface, &self.phone2_iface] {
            removed.extend(remove_if_exists(&Self::wg_socket(iface))?);
        }
        removed.extend(remove_if_exists(&self.dir)?);
        removed.extend(remove_if_exists(&self.phone_etc_dir)?);
        removed.extend(remove_if_exists(&self.phone2_etc_dir)?);
        // /etc/netns itself only if that leaves it empty (ip netns never needs it).
        if let Some(parent) = self.phone_etc_dir.parent() {
            let _ = fs::remove_dir(parent);
        }
        Ok(removed)
    }
}

fn remove_if_exists(path: &Path) -> Result<Option<String>> {
    let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match removed {
        Ok(()) => Ok(Some(format!("{}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// A running lab. Dereferences to its [`LabNames`] (`lab.vpn_iface`, `lab.ns_path(Ns::Vpn)`).
/// Dropping it stops every process it started and every process still inside its namespaces,
/// then deletes the namespaces and its temp files.
#[derive(Debug)]
pub struct Lab {
    names: LabNames,
    children: Vec<ChildGuard>,
}

impl Deref for Lab {
    type Target = LabNames;
    fn deref(&self) -> &LabNames {
        &self.names
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Our own children first, so they are reaped rather than left as zombies.
        while let Some(child) = self.children.pop() {
            drop(child);
        }
        if let Err(err) = self.names.teardown() {
            eprintln!("warning: tearing down lab {}: {err:#}", self.prefix);
        }
    }
}

impl Lab {
    /// Builds the lab (after removing leftovers of an earlier lab with the same prefix) and
    /// checks that the phone reaches the internet through the tunnel over IPv4 and IPv6.
    pub fn up(prefix: &str) -> Result<Lab> {
        let names = LabNames::new(prefix)?;
        ensure!(crate::is_root(), "the lab needs root (network namespaces, veths, tun devices)");
        check_tools()?;
        names.teardown().with_context(|| format!("cannot clean leftovers of lab {prefix}"))?;
        // From here on, an early return drops `lab`, which undoes whatever was built.
        let mut lab = Lab { names, children: Vec::new() };
        lab.build().with_context(|| format!("cannot bring lab {prefix} up"))?;
        Ok(lab)
    }

    /// Removes lab `prefix` by name, whoever built it: for `cargo xtask lab down` and for
    /// leftovers of a test that was killed. Returns what it removed.
    pub fn down(prefix: &str) -> Result<Vec<String>> {
        LabNames::new(prefix)?.teardown()
    }

    fn build(&mut self) -> Result<()> {
        self.make_namespaces()?;
        self.make_underlay()?;
        self.make_internet()?;
        self.make_wireguard()?;
        self.start_servers()?;
        self.start_resolvers()?;
        self.start_tls()?;
        self.verify()
    }

    /// The lab's names.
    pub fn names(&self) -> &LabNames {
        &self.names
    }

    /// `nsenter --net=/run/netns/{prefix}-phone program`.
    pub fn phone_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.cmd(Ns::Phone, program)
    }

    /// `nsenter --net=/run/netns/{prefix}-vpn program`: where tracker runs.
    pub fn vpn_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.cmd(Ns::Vpn, program)
    }

    /// `nsenter --net=/run/netns/{prefix}-net program`.
    pub fn net_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.cmd(Ns::Net, program)
    }

    /// `program` in the phone namespace with `resolver` as its only name server: for clients
    /// that resolve through the C library (curl, getent), so that a test decides where the
    /// phone's queries go. It runs in a private mount namespace (`unshare --mount`) where a
    /// resolv.conf of the lab's is bind-mounted over `/etc/resolv.conf`; nothing outside that
    /// process changes. Unlike `ip netns exec`, /sys is left alone.
    pub fn phone_cmd_resolving(&self, resolver: IpAddr, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        self.cmd_resolving(Ns::Phone, resolver, program)
    }

    /// [`Lab::phone_cmd_resolving`] in namespace `ns` (e.g. [`Ns::Phone2`]).
    pub fn cmd_resolving(&self, ns: Ns, resolver: IpAddr, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let conf = self.dir.join(format!("resolv-{resolver}.conf"));
        if !conf.exists() {
            fs::write(&conf, resolv_conf(resolver)).with_context(|| format!("cannot write {}", conf.display()))?;
        }
        let mut cmd = self.cmd(ns, "unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(conf)
            .arg(program);
        Ok(cmd)
    }

    /// Runs `f` on a fresh thread that has entered namespace `ns`, so sockets it creates live
    /// there (a socket keeps its namespace for life, so it may be returned and used anywhere).
    /// For tests that need exact control over packets, e.g. one UDP datagram from the phone.
    pub fn run_in<T: Send>(&self, ns: Ns, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = self.ns_path(ns);
        let ns_file = fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                // SAFETY: setns(2) on a valid namespace fd; it changes only this thread's
                // network namespace, and this thread ends with the scope.
                let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns_file), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let err = std::io::Error::last_os_error();
                    return Err(err).with_context(|| format!("cannot enter {}", path.display()));
                }
                Ok(f())
            });
            thread.join().map_err(|_| anyhow::anyhow!("thread in {} panicked", path.display()))?
        })
    }

    /// Starts `cmd` (typically from [`Lab::vpn_cmd`]) as a child that is stopped and reaped
    /// when the returned guard is dropped.
    pub fn spawn(&self, cmd: Command) -> Result<ChildGuard> {
        ChildGuard::spawn(cmd)
    }

    /// Starts `argv` in namespace `ns` as a long-running server owned by the lab (stopped when
    /// the lab is dropped), with its output in `{dir}/server-N.log`. Returns its pid.
    pub fn start_server(&mut self, ns: Ns, argv: &[&str]) -> Result<u32> {
        let (program, args) = argv.split_first().context("start_server needs a command")?;
        let log = self.dir.join(format!("server-{}.log", self.children.len()));
        let mut cmd = self.cmd(ns, program);
        cmd.args(args);
        let guard = spawn_logged(cmd, &log)?;
        let pid = guard.pid();
        self.children.push(guard);
        Ok(pid)
    }

    /// Turns TSO, GSO and GRO on or off on the VPN's WireGuard interface, so tests can count
    /// packets deterministically (off) or see coalesced super-packets (on). Features the device
    /// cannot change are left alone.
    pub fn set_offloads(&self, on: bool) -> Result<()> {
        self.set_offloads_on(Ns::Vpn, &self.vpn_iface, on)
    }

    /// [`Lab::set_offloads`] for any interface of the lab.
    pub fn set_offloads_on(&self, ns: Ns, iface: &str, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        for (short, long) in [
            ("tso", "tcp-segmentation-offload"),
            ("gso", "generic-segmentation-offload"),
            ("gro", "generic-receive-offload"),
        ] {
            // Absent or "[fixed]": the device lacks the feature or cannot toggle it.
            if self.offload(ns, iface, long)?.is_none_or(|s| s.contains("[fixed]")) {
                continue;
            }
            // ethtool exits 1 with "Could not change any device features" when the device
            // refuses, which is how wireguard-go's tun answers "tso on"; the state read back
            // below is what counts, so the exit status is not.
            let mut toggle = self.cmd(ns, "ethtool");
            toggle.args(["-K", iface, short, state]);
            succeeds(&mut toggle)?;
            let now = self.offload(ns, iface, long)?.unwrap_or_default();
            // Off must work (tests count packets); on is best effort.
            ensure!(on || now.starts_with("off"), "cannot turn {short} off on {iface}: it is {now}");
        }
        Ok(())
    }

    /// The state of offload `long_name` as `ethtool -k` shows it ("on", "off [fixed]", ...).
    fn offload(&self, ns: Ns, iface: &str, long_name: &str) -> Result<Option<String>> {
        let shown = run(self.cmd(ns, "ethtool").args(["-k", iface]))?;
        let prefix = format!("{long_name}:");
        Ok(shown.lines().find_map(|l| l.trim_start().strip_prefix(&prefix)).map(|state| state.trim().to_owned()))
    }

    /// The lab's own log files (wireguard-go, servers), concatenated, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return out;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            out.push_str(&format!("--- {}\n{}\n", log.display(), tail(&text, 2000)));
        }
        out
    }

    fn ip(&self, ns: Ns, args: &str) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.ns_name(ns)]).args(args.split_whitespace());
        run(&mut cmd).map(drop)
    }

    fn sysctl(&self, ns: Ns, setting: &str) -> Result<()> {
        run(self.cmd(ns, "sysctl").args(["-qw", setting])).map(drop)
    }

    fn make_namespaces(&mut self) -> Result<()> {
        fs::create_dir_all(&self.www_dir).with_context(|| format!("cannot create {}", self.www_dir.display()))?;
        // Keys live here.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", self.dir.display()))?;
        for ns in Ns::BASE {
            run(Command::new("ip").args(["netns", "add", &self.ns_name(ns)]))?;
            self.ip(ns, "link set lo up")?;
        }
        self.sysctl(Ns::Vpn, "net.ipv4.ip_forward=1")?;
        self.sysctl(Ns::Vpn, "net.ipv6.conf.all.forwarding=1")
    }

    fn make_underlay(&self) -> Result<()> {
        let (phone, vpn) = (&self.phone_underlay_iface, &self.vpn_underlay_iface);
        self.veth(Ns::Phone, phone, Ns::Vpn, vpn)?;
        self.ip(Ns::Phone, &format!("addr add {PHONE_UNDERLAY_V4}/30 dev {phone}"))?;
        self.ip(Ns::Vpn, &format!("addr add {VPN_UNDERLAY_V4}/30 dev {vpn}"))?;
        self.ip(Ns::Phone, &format!("link set {phone} up"))?;
        self.ip(Ns::Vpn, &format!("link set {vpn} up"))
    }

    fn make_internet(&self) -> Result<()> {
        let (vpn, net) = (&self.vpn_uplink_iface, &self.net_uplink_iface);
        self.veth(Ns::Vpn, vpn, Ns::Net, net)?;
        // nodad: IPv6 addresses are usable at once instead of after duplicate address detection.
        let addrs = [
            (Ns::Vpn, format!("{VPN_UPLINK_V4}/24 dev {vpn}")),
            (Ns::Vpn, format!("{VPN_UPLINK_V6}/64 dev {vpn} nodad")),
            (Ns::Net, format!("{NET_UPLINK_V4}/24 dev {net}")),
            (Ns::Net, format!("{NET_UPLINK_V6}/64 dev {net} nodad")),
        ];
        for (ns, addr) in addrs {
            self.ip(ns, &format!("addr add {addr}"))?;
        }
        self.ip(Ns::Vpn, &format!("link set {vpn} up"))?;
        self.ip(Ns::Net, &format!("link set {net} up"))?;
        self.add_internet_hosts()
    }

    /// The hosts' addresses live on the internet namespace's loopback (this kernel has no dummy
    /// interfaces); the VPN host routes to them, and the internet routes the tunnel back.
    fn add_internet_hosts(&self) -> Result<()> {
        for host in internet_hosts() {
            match host {
                IpAddr::V4(host) => {
                    self.ip(Ns::Net, &format!("addr add {host}/32 dev lo"))?;
                    self.ip(Ns::Vpn, &format!("route add {host}/32 via {NET_UPLINK_V4}"))?;
                }
                IpAddr::V6(host) => {
                    self.ip(Ns::Net, &format!("addr add {host}/128 dev lo nodad"))?;
                    self.ip(Ns::Vpn, &format!("route add {host}/128 via {NET_UPLINK_V6}"))?;
                }
            }
        }
        let v4_back = format!("route add 10.77.0.0/{TUN_V4_PREFIX_LEN} via {VPN_UPLINK_V4}");
        let v6_back = format!("route add fd77::/{TUN_V6_PREFIX_LEN} via {VPN_UPLINK_V6}");
        self.ip(Ns::Net, &v4_back)?;
        self.ip(Ns::Net, &v6_back)
    }

    fn veth(&self, a_ns: Ns, a: &str, b_ns: Ns, b: &str) -> Result<()> {
        let (a_ns, b_ns) = (self.ns_name(a_ns), self.ns_name(b_ns));
        run(Command::new("ip")
            .args(["link", "add", a, "netns", &a_ns, "type", "veth", "peer", "name", b, "netns", &b_ns]))
        .map(drop)
    }

    fn make_wireguard(&mut self) -> Result<()> {
        let phone_key = self.private_key("phone.key")?;
        let vpn_key = self.private_key("vpn.key")?;
        let (phone, vpn) = (self.phone_iface.clone(), self.vpn_iface.clone());
        self.start_wireguard_go(Ns::Phone, &phone)?;
        self.start_wireguard_go(Ns::Vpn, &vpn)?;
        self.wg_set(
            Ns::Vpn,
            &vpn,
            &vpn_key,
            VPN_WG_PORT,
            &["peer", &public_key(&phone_key)?, "allowed-ips", &format!("{PHONE_V4}/32,{PHONE_V6}/128")],
        )?;
        self.wg_set(
            Ns::Phone,
            &phone,
            &phone_key,
            PHONE_WG_PORT,
            &[
                "peer",
                &public_key(&vpn_key)?,
                "allowed-ips",
                "0.0.0.0/0,::/0",
                "endpoint",
                &format!("{VPN_UNDERLAY_V4}:{VPN_WG_PORT}"),
            ],
        )?;
        self.tunnel_addresses(Ns::Phone, &phone, PHONE_V4, PHONE_V6)?;
        self.tunnel_addresses(Ns::Vpn, &vpn, VPN_TUN_V4, VPN_TUN_V6)?;
        self.ip(Ns::Phone, &format!("route add default dev {phone}"))?;
        self.ip(Ns::Phone, &format!("-6 route add default dev {phone}"))
    }

    /// Writes a fresh private key (mode 0600) and returns its path.
    fn private_key(&self, file: &str) -> Result<PathBuf> {
        let key = run(Command::new("wg").arg("genkey"))?;
        let path = self.dir.join(file);
        fs::write(&path, key.trim()).with_context(|| format!("cannot write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
        Ok(path)
    }

    /// `wireguard-go -f IFACE` as our child; waits (bounded) for the interface and its socket.
    fn start_wireguard_go(&mut self, ns: Ns, iface: &str) -> Result<()> {
        let mut cmd = self.cmd(ns, "wireguard-go");
        // -f keeps it in the foreground as our child so it can be stopped and reaped. (Never
        // set WG_PROCESS_FOREGROUND to an empty value instead: wireguard-go then fork-loops.)
        cmd.args(["-f", iface]);
        let log = self.dir.join(format!("wireguard-go-{iface}.log"));
        self.children.push(spawn_logged(cmd, &log)?);
        let socket = LabNames::wg_socket(iface);
        let ns_name = self.ns_name(ns);
        let what = format!("wireguard-go to create {iface} in {ns_name} and {}", socket.display());
        let child = self.children.last_mut().expect("just pushed");
        wait_until(&what, START_TIMEOUT, POLL, || {
            if let Some(status) = child.try_status()? {
                bail!("wireguard-go for {iface} exited ({status}): {}", read_tail(&log));
            }
            let link = succeeds(Command::new("ip").args(["-n", &ns_name, "link", "show", iface]))?;
            Ok(link && socket.exists())
        })
    }

    fn wg_set(&self, ns: Ns, iface: &str, key: &Path, port: u16, peer: &[&str]) -> Result<()> {
        let mut cmd = self.cmd(ns, "wg");
        cmd.args(["set", iface, "private-key"]).arg(key);
        cmd.args(["listen-port", &port.to_string()]).args(peer);
        run(&mut cmd).map(drop)
    }

    fn tunnel_addresses(&self, ns: Ns, iface: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
        self.ip(ns, &format!("addr add {v4}/{TUN_V4_PREFIX_LEN} dev {iface}"))?;
        self.ip(ns, &format!("addr add {v6}/{TUN_V6_PREFIX_LEN} dev {iface} nodad"))?;
        self.ip(ns, &format!("link set {iface} up"))
    }

    fn start_servers(&mut self) -> Result<()> {
        self.write_www()?;
        self.start_labsrv()?;
        let iperf = ["iperf3", "-s", "-B", &IPERF_V4.to_string(), "-p", &IPERF_PORT.to_string()];
        self.start_server(Ns::Net, &iperf)?;
        let what = format!("iperf3 to listen on {IPERF_V4}:{IPERF_PORT}");
        let filter = format!("sport = :{IPERF_PORT}");
        wait_until(&what, START_TIMEOUT, POLL, || {
            Ok(!run(self.net_cmd("ss").args(["-Hltn", &filter]))?.trim().is_empty())
        })
    }

    fn write_www(&self) -> Result<()> {
        let write = |name: &str, bytes: &[u8]| {
            let path = self.www_dir.join(name);
            fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
        };
        write(SMALL_TXT, SMALL_TXT_CONTENT.as_bytes())?;
        write(FILE_1M, &blob(FILE_1M_SIZE))?;
        write(FILE_10M, &blob(FILE_10M_SIZE))
    }

    /// The HTTP and UDP echo servers (`labsrv.py`), one process bound to every internet host.
    fn start_labsrv(&mut self) -> Result<()> {
        let script = self.dir.join("labsrv.py");
        fs::write(&script, SERVER_SCRIPT).with_context(|| format!("cannot write {}", script.display()))?;
        let ready = self.dir.join("labsrv.ready");
        let mut argv: Vec<String> = vec![python().into(), script.display().to_string()];
        argv.extend(["--www".into(), self.www_dir.display().to_string()]);
        argv.extend(["--ready".into(), ready.display().to_string()]);
        for host in http_hosts() {
            argv.extend(["--addr".into(), host.to_string()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.start_server(Ns::Net, &argv)?;
        let child = self.children.last_mut().expect("just pushed");
        wait_until("the lab's HTTP and UDP echo servers", START_TIMEOUT, POLL, || {
            if let Some(status) = child.try_status()? {
                bail!("labsrv.py exited ({status})");
            }
            Ok(ready.exists())
        })
        .with_context(|| self.logs())
    }

    /// The two unbound resolvers ([`Resolver`]), each waited for until it answers a query for
    /// [`zone::WEB_NAME`] over IPv4 and IPv6 from inside its own namespace; then the phone's
    /// `/etc/netns` resolv.conf.
    fn start_resolvers(&mut self) -> Result<()> {
        let zonefile = self.dir.join(format!("{}.zone", zone::ZONE));
        fs::write(&zonefile, zone::zonefile()).with_context(|| format!("cannot write {}", zonefile.display()))?;
        let world = self.dir.join("world.zone");
        fs::write(&world, zone::world_zonefile()).with_context(|| format!("cannot write {}", world.display()))?;
        let program = self.unbound_program()?;
        for resolver in Resolver::ALL {
            let conf = self.dir.join(format!("unbound-{}.conf", resolver.tag()));
            fs::write(&conf, unbound_config(&self.dir, resolver, &zonefile, &world))
                .with_context(|| format!("cannot write {}", conf.display()))?;
            let program = program.display().to_string();
            let conf = conf.display().to_string();
            self.start_server(resolver.ns(), &[&program, "-d", "-c", &conf])?;
            let what = format!("unbound ({}) to answer on {} and {}", resolver.tag(), resolver.v4(), resolver.v6());
            self.wait_for_last_server(&what, |names| {
                for v6 in [false, true] {
                    let mut dig = names.cmd(resolver.ns(), "dig");
                    dig.args(["+short", "+tries=1", "+time=1"])
                        .arg(format!("@{}", resolver.addr(v6)))
                        .args([zone::WEB_NAME, "A"]);
                    if probe(&mut dig)?.as_deref().map(str::trim) != Some(&*WEB_V4.to_string()) {
                        return Ok(false);
                    }
                }
                Ok(true)
            })?;
        }
        fs::create_dir_all(&self.phone_etc_dir)
            .with_context(|| format!("cannot create {}", self.phone_etc_dir.display()))?;
        let conf = self.phone_etc_dir.join("resolv.conf");
        fs::write(&conf, resolv_conf(IpAddr::V4(VPN_TUN_V4)))
            .with_context(|| format!("cannot write {}", conf.display()))
    }

    /// The unbound binary to run. Debian confines `/usr/sbin/unbound` with an AppArmor profile
    /// that lets it read only `/etc/unbound` and a few system paths, not the lab's files in its
    /// temp dir; where AppArmor is enabled the lab runs a copy of the binary from its dir, to
    /// which no profile attaches.
    fn unbound_program(&self) -> Result<PathBuf> {
        let system = find_program("unbound").context("unbound is not installed")?;
        let apparmor = fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y");
        if !apparmor {
            return Ok(system);
        }
        let copy = self.dir.join("unbound");
        fs::copy(&system, &copy).with_context(|| format!("cannot copy {} to {}", system.display(), copy.display()))?;
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} executable", copy.display()))?;
        Ok(copy)
    }

    /// A self-signed certificate for the zone's TLS names, then `openssl s_server -www` on
    /// port [`TLS_PORT`] of every internet host (the wildcard address, IPv4 and IPv6).
    fn start_tls(&mut self) -> Result<()> {
        let mut san = format!("subjectAltName=DNS:{}", zone::TLS_NAME);
        for name in zone::SHARED_NAMES.into_iter().chain(zone::world_client_names()) {
            san.push_str(&format!(",DNS:{name}"));
        }
        let mut req = Command::new("openssl");
        req.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "7"])
            .arg("-keyout")
            .arg(&self.tls_key)
            .arg("-out")
            .arg(&self.tls_cert)
            .args(["-subj", &format!("/CN={}", zone::TLS_NAME), "-addext", &san]);
        run(&mut req)?;
        let (cert, key) = (self.tls_cert.display().to_string(), self.tls_key.display().to_string());
        let port = TLS_PORT.to_string();
        self.start_server(Ns::Net, &["openssl", "s_server", "-www", "-accept", &port, "-cert", &cert, "-key", &key])?;
        let filter = format!("sport = :{TLS_PORT}");
        self.wait_for_last_server("openssl s_server to listen on port 443", |names| {
            Ok(!run(names.cmd(Ns::Net, "ss").args(["-Hltn", &filter]))?.trim().is_empty())
        })
    }

    /// Waits until `ready` says the server started last is serving, failing early if it exits.
    fn wait_for_last_server(&mut self, what: &str, mut ready: impl FnMut(&LabNames) -> Result<bool>) -> Result<()> {
        let names = &self.names;
        let child = self.children.last_mut().context("no server was started")?;
        let name = child.name().to_owned();
        let waited = wait_until(what, START_TIMEOUT, POLL, || {
            if let Some(status) = child.try_status()? {
                bail!("`{name}` exited ({status})");
            }
            ready(names)
        });
        waited.with_context(|| self.logs())
    }

    /// Pings the internet from the phone over both families. The first packet also triggers the
    /// WireGuard handshake, so a few attempts are allowed.
    fn verify(&self) -> Result<()> {
        self.verify_from(Ns::Phone)
    }

    /// [`Lab::verify`] from the phone in namespace `ns`.
    fn verify_from(&self, ns: Ns) -> Result<()> {
        for target in [IpAddr::V4(WEB_V4), IpAddr::V6(WEB_V6)] {
            let mut last = None;
            for _ in 0..3 {
                match run(self.cmd(ns, "ping").args(["-c1", "-W2", &target.to_string()])) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(err) = last {
                let wg = run(self.vpn_cmd("wg").arg("show")).unwrap_or_else(|e| format!("{e:#}"));
                bail!(
                    "{} cannot reach {target} through the tunnel: {err:#}\nwg show (vpn):\n{wg}\n{}",
                    self.ns_name(ns),
                    self.logs()
                );
            }
        }
        Ok(())
    }
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Result<ChildGuard> {
    let file = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = file.try_clone().with_context(|| format!("cannot reopen {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(err);
    ChildGuard::spawn(cmd)
}

fn public_key(private_key: &Path) -> Result<String> {
    let key = fs::read(private_key).with_context(|| format!("cannot read {}", private_key.display()))?;
    Ok(crate::cmd::run_with_input(Command::new("wg").arg("pubkey"), &key)?.trim().to_owned())
}

/// Runs a probe command: its stdout when it exits 0, None when it fails (not ready yet).
fn probe(cmd: &mut Command) -> Result<Option<String>> {
    let line = crate::cmd::describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot start `{line}`"))?;
    Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// A resolv.conf naming only `resolver`. No search list, so a name is asked for as written;
/// glibc waits 2 s and tries twice.
fn resolv_conf(resolver: IpAddr) -> String {
    format!("# written by the tracker lab\nnameserver {resolver}\noptions timeout:2 attempts:2\n")
}

/// unbound's configuration for `resolver`: authoritative for the lab zone from `zonefile`, and
/// nothing else.
///
/// - `auth-zone` with `for-downstream: yes` answers from the zone file like an authoritative
///   server, chasing CNAME chains inside the zone (the answer carries the whole chain and the
///   addresses), with NXDOMAIN and the SOA for missing names. `for-upstream: no` keeps the
///   answers out of the cache, so every answer carries the zone's exact TTLs.
/// - No recursion, and no packet to anywhere: `local-zone: "." refuse` answers REFUSED for
///   every name outside `lab.test` (`test.` is one of unbound's built-in empty zones, hence
///   `nodefault` and `transparent` to let `lab.test` through to the auth zone), iterator only
///   (no DNSSEC validator, so no trust-anchor fetches), and `do-not-query-address` for every
///   address in case anything tried.
/// - The real world ([`zone::world`]) is a second auth zone, the root, from `world_zonefile`: one
///   zone, so a CNAME chain across company and CDN domains is chased to its addresses. Each of
///   [`zone::WORLD_DOMAINS`] is a `transparent` local zone, which lets its names through the
///   `.` refusal to the root zone; every other name is still refused.
/// - Only the tunnel's clients and the server itself may ask (`access-control`).
/// - Root, foreground, no chroot, no remote control, logs and pid file in the lab's dir
///   (`unbound-{tag}.log`, shown by [`Lab::logs`]), one thread, every answer logged.
fn unbound_config(dir: &Path, resolver: Resolver, zonefile: &Path, world_zonefile: &Path) -> String {
    let world_zones: String =
        zone::WORLD_DOMAINS.iter().map(|d| format!("    local-zone: \"{d}.\" transparent\n")).collect();
    let tag = resolver.tag();
    let d = dir.display();
    let (v4, v6) = (resolver.v4(), resolver.v6());
    format!(
        r#"# written by the tracker lab ({tag} resolver)
server:
    interface: {v4}
    interface: {v6}
    port: {DNS_PORT}
    do-ip4: yes
    do-ip6: yes
    do-udp: yes
    do-tcp: yes
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound-{tag}.pid"
    use-syslog: no
    logfile: "{d}/unbound-{tag}.log"
    verbosity: 1
    log-replies: yes
    num-threads: 1
    so-reuseport: no
    module-config: "iterator"
    minimal-responses: yes
    rrset-roundrobin: no
    do-not-query-localhost: yes
    do-not-query-address: 0.0.0.0/0
    do-not-query-address: ::/0
    local-zone: "." refuse
    local-zone: "test." nodefault
    local-zone: "{zone}." transparent
{world_zones}    access-control: 0.0.0.0/0 refuse
    access-control: ::/0 refuse
    access-control: 127.0.0.0/8 allow
    access-control: ::1/128 allow
    access-control: 10.77.0.0/{TUN_V4_PREFIX_LEN} allow
    access-control: fd77::/{TUN_V6_PREFIX_LEN} allow
    access-control: {v4}/32 allow
    access-control: {v6}/128 allow
auth-zone:
    name: "{zone}."
    zonefile: "{zonefile}"
    for-downstream: yes
    for-upstream: no
    fallback-enabled: no
auth-zone:
    name: "."
    zonefile: "{world_zonefile}"
    for-downstream: yes
    for-upstream: no
    fallback-enabled: no
remote-control:
    control-enable: no
"#,
        zone = zone::ZONE,
        zonefile = zonefile.display(),
        world_zonefile = world_zonefile.display(),
    )
}

/// `program`'s path in PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn blob(size: u64) -> Vec<u8> {
    // One period repeated: byte-by-byte generation of 10 MiB is slow in debug builds.
    let period: Vec<u8> = (0..251).map(blob_byte).collect();
    let len = usize::try_from(size).expect("blob fits in memory");
    let mut blob = period.repeat(len / period.len() + 1);
    blob.truncate(len);
    blob
}

/// Debian's python3 when present: pyenv shims elsewhere in PATH may pick another interpreter.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

fn check_tools() -> Result<()> {
    let needed = ["ip", "nsenter", "wireguard-go", "wg", "ping", "ss", "iperf3", "unshare", "dig", "openssl", python()];
    let mut missing: Vec<&str> = needed.into_iter().filter(|p| !have_program(p)).collect();
    if find_program("unbound").is_none() {
        missing.push("unbound");
    }
    ensure!(missing.is_empty(), "missing {}: run `cargo xtask setup`", missing.join(", "));
    Ok(())
}

fn read_tail(path: &Path) -> String {
    tail(&fs::read_to_string(path).unwrap_or_default(), 2000).to_owned()
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    &text[start..]
}
