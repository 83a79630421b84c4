//! The lab's optional parts, which a test adds when it needs them, so that labs without them
//! pay nothing: a second phone (a second WireGuard peer of the VPN host), an SSH server and a
//! STUN server in the internet namespace.
//!
//! ```text
//!  {p}-phone2                              {p}-vpn
//!  {p}ph2 10.77.0.3 fd77::3    ==WG==      wg0 ({p}wg): a second peer, allowed 10.77.0.3, fd77::3
//!  {p}-phone2 10.99.0.6/30 --------------- {p}-vpn2 10.99.0.5/30
//! ```
//!
//! The SSH server is dropbear (Debian's `dropbear-bin`) with a host key generated for the lab,
//! password logins off: a client gets the banner, the key exchange and a refusal. The STUN
//! server is stund (Debian's `stun-server`, RFC 3489: its messages carry no RFC 5389 magic
//! cookie), answering on [`STUN_V4`]:[`STUN_PORT`] and, for NAT tests, on [`STUN_ALT_V4`] and
//! [`STUN_ALT_PORT`]; `stun` (Debian's `stun-client`) is the client. Both are IPv4-only
//! (stund), or both families (dropbear). All addresses are documentation addresses.
//!
//! A stand-in for a public resolver's encrypted DNS ([`Lab::start_dot`]) listens on port 853 of
//! [`zone::DNS_GOOGLE_V4`] and [`zone::DNS_GOOGLE_V6`].
//!
//! A test may also record what crosses one of the lab's interfaces: [`Lab::start_capture`] runs
//! tcpdump there into a pcap file (raw IP on the WireGuard interface, Ethernet on a veth).

use super::{
    Lab, Ns, POLL, START_TIMEOUT, VPN_TUN_V4, VPN_WG_PORT, find_program, public_key, python, resolv_conf, run,
};
use crate::cmd::{ChildGuard, have_program, wait_until};
use crate::zone;
use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The second phone's tunnel addresses.
pub const PHONE2_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
pub const PHONE2_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
/// The second phone's underlay to the VPN host (a /30 of its own).
pub const PHONE2_UNDERLAY_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 6);
pub const VPN_UNDERLAY2_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 5);
pub const PHONE2_WG_PORT: u16 = 51822;

/// The SSH server (dropbear), both families, port [`SSH_PORT`].
pub const SSH_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 22);
pub const SSH_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x22);
pub const SSH_PORT: u16 = 22;
/// The STUN server (stund): its primary and alternate address and port (IPv4 only).
pub const STUN_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 78);
pub const STUN_ALT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 79);
pub const STUN_PORT: u16 = 3478;
pub const STUN_ALT_PORT: u16 = 3479;
/// DNS over TLS and over QUIC (RFC 7858, RFC 9250): the stand-in's port ([`Lab::start_dot`]).
pub const DOT_PORT: u16 = 853;

/// The SSH and STUN servers' addresses: on the internet namespace's loopback in every lab (an
/// address costs nothing), served only once [`Lab::start_ssh`] / [`Lab::start_stun`] ran.
pub fn server_hosts() -> Vec<IpAddr> {
    vec![SSH_V4.into(), SSH_V6.into(), STUN_V4.into(), STUN_ALT_V4.into()]
}

impl Lab {
    /// Adds the second phone: namespace `{p}-phone2` with its own wireguard-go interface
    /// ([`LabNames::phone2_iface`]), tunnel addresses [`PHONE2_V4`] and [`PHONE2_V6`], a second
    /// peer on the VPN host's interface, everything routed into its tunnel, and its own
    /// `/etc/netns` resolv.conf naming the on-host resolver; then checks that it reaches the
    /// internet over both families. Its wireguard-go is the lab's child, stopped with the lab.
    pub fn add_second_phone(&mut self) -> Result<()> {
        ensure!(!self.ns_path(Ns::Phone2).exists(), "lab {} already has a second phone", self.prefix);
        run(Command::new("ip").args(["netns", "add", &self.ns_name(Ns::Phone2)]))?;
        self.ip(Ns::Phone2, "link set lo up")?;
        let (phone2, vpn) = (self.phone2_underlay_iface.clone(), self.vpn_underlay2_iface.clone());
        self.veth(Ns::Phone2, &phone2, Ns::Vpn, &vpn)?;
        self.ip(Ns::Phone2, &format!("addr add {PHONE2_UNDERLAY_V4}/30 dev {phone2}"))?;
        self.ip(Ns::Vpn, &format!("addr add {VPN_UNDERLAY2_V4}/30 dev {vpn}"))?;
        self.ip(Ns::Phone2, &format!("link set {phone2} up"))?;
        self.ip(Ns::Vpn, &format!("link set {vpn} up"))?;

        let key = self.private_key("phone2.key")?;
        let iface = self.phone2_iface.clone();
        self.start_wireguard_go(Ns::Phone2, &iface)?;
        let allowed = format!("{PHONE2_V4}/32,{PHONE2_V6}/128");
        let vpn_iface = self.vpn_iface.clone();
        run(self.cmd(Ns::Vpn, "wg").args(["set", &vpn_iface, "peer", &public_key(&key)?, "allowed-ips", &allowed]))?;
        let vpn_key = public_key(&self.dir.join("vpn.key"))?;
        self.wg_set(
            Ns::Phone2,
            &iface,
            &key,
            PHONE2_WG_PORT,
            &[
                "peer",
                &vpn_key,
                "allowed-ips",
                "0.0.0.0/0,::/0",
                "endpoint",
                &format!("{VPN_UNDERLAY2_V4}:{VPN_WG_PORT}"),
            ],
        )?;
        self.tunnel_addresses(Ns::Phone2, &iface, PHONE2_V4, PHONE2_V6)?;
        self.ip(Ns::Phone2, &format!("route add default dev {iface}"))?;
        self.ip(Ns::Phone2, &format!("-6 route add default dev {iface}"))?;
        fs::create_dir_all(&self.phone2_etc_dir)
            .with_context(|| format!("cannot create {}", self.phone2_etc_dir.display()))?;
        let conf = self.phone2_etc_dir.join("resolv.conf");
        fs::write(&conf, resolv_conf(IpAddr::V4(VPN_TUN_V4)))
            .with_context(|| format!("cannot write {}", conf.display()))?;
        self.verify_from(Ns::Phone2)
    }

    /// `nsenter --net=/run/netns/{prefix}-phone2 program` (after [`Lab::add_second_phone`]).
    pub fn phone2_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.cmd(Ns::Phone2, program)
    }

    /// The WireGuard public key of the phone in `ns` ([`Ns::Phone`] or [`Ns::Phone2`]), as the
    /// VPN host's `wg show` lists its peer.
    pub fn phone_public_key(&self, ns: Ns) -> Result<String> {
        let file = match ns {
            Ns::Phone => "phone.key",
            Ns::Phone2 => "phone2.key",
            other => bail!("{other:?} is not a phone"),
        };
        public_key(&self.dir.join(file))
    }

    /// Starts dropbear on [`SSH_V4`] and [`SSH_V6`] port [`SSH_PORT`] in the internet namespace,
    /// with an Ed25519 host key generated into the lab's dir, password and root logins off, no
    /// forwarding; waits until it listens. Returns the host key's public line (`ssh-ed25519 ...`).
    pub fn start_ssh(&mut self) -> Result<String> {
        let dropbear = find_program("dropbear").context("dropbear is not installed: run `cargo xtask setup`")?;
        ensure!(have_program("dropbearkey"), "dropbearkey is not installed: run `cargo xtask setup`");
        let key = self.dir.join("ssh_host_ed25519_key");
        run(Command::new("dropbearkey").args(["-t", "ed25519", "-f"]).arg(&key))?;
        let public = run(Command::new("dropbearkey").arg("-y").arg("-f").arg(&key))?;
        let public = public.lines().find(|l| l.starts_with("ssh-ed25519 ")).context("dropbearkey -y printed no key")?;
        let public = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let (key, pid) = (key.display().to_string(), self.dir.join("dropbear.pid").display().to_string());
        let (l4, l6) = (format!("{SSH_V4}:{SSH_PORT}"), format!("[{SSH_V6}]:{SSH_PORT}"));
        let dropbear = dropbear.display().to_string();
        // -F foreground, -E log to stderr, -s no passwords, -w no root, -j -k no forwarding.
        let argv =
            [dropbear.as_str(), "-F", "-E", "-s", "-w", "-j", "-k", "-r", &key, "-P", &pid, "-p", &l4, "-p", &l6];
        self.start_server(Ns::Net, &argv)?;
        let filter = format!("sport = :{SSH_PORT}");
        self.wait_for_last_server("dropbear to listen on port 22 (both families)", |names| {
            Ok(run(names.cmd(Ns::Net, "ss").args(["-Hltn", &filter]))?.lines().count() >= 2)
        })?;
        Ok(public)
    }

    /// Starts the stand-in for a public resolver's DNS over TLS and over QUIC: a second
    /// `labsrv.py` on [`zone::DNS_GOOGLE_V4`] and [`zone::DNS_GOOGLE_V6`] with both its ports at
    /// [`DOT_PORT`]. Its TCP listener (HTTP, which no client here gets far enough to notice)
    /// accepts connections and its UDP socket echoes datagrams: enough to tell a connection or a
    /// datagram that got through from one that was stopped. Waits until it is bound.
    pub fn start_dot(&mut self) -> Result<()> {
        let script = self.dir.join("labsrv.py");
        ensure!(script.exists(), "the lab's server script is written when the lab comes up");
        let ready = self.dir.join("dot.ready");
        let (script, www, ready_arg) =
            (script.display().to_string(), self.www_dir.display().to_string(), ready.display().to_string());
        let (v4, v6, port) = (zone::DNS_GOOGLE_V4.to_string(), zone::DNS_GOOGLE_V6.to_string(), DOT_PORT.to_string());
        let argv = [
            python(),
            &script,
            "--www",
            &www,
            "--ready",
            &ready_arg,
            "--addr",
            &v4,
            "--addr",
            &v6,
            "--http-port",
            &port,
            "--udp-port",
            &port,
        ];
        self.start_server(Ns::Net, &argv)?;
        self.wait_for_last_server("the encrypted DNS stand-in to listen on port 853", |_| Ok(ready.exists()))
    }

    /// Starts stund in the internet namespace on [`STUN_V4`]/[`STUN_ALT_V4`], ports
    /// [`STUN_PORT`]/[`STUN_ALT_PORT`]; waits until it listens.
    pub fn start_stun(&mut self) -> Result<()> {
        let stund = find_program("stund").context("stund is not installed: run `cargo xtask setup`")?;
        let stund = stund.display().to_string();
        let (h, a) = (STUN_V4.to_string(), STUN_ALT_V4.to_string());
        let (p, o) = (STUN_PORT.to_string(), STUN_ALT_PORT.to_string());
        self.start_server(Ns::Net, &[&stund, "-h", &h, "-a", &a, "-p", &p, "-o", &o])?;
        let filter = format!("sport = :{STUN_PORT}");
        self.wait_for_last_server("stund to listen on port 3478", |names| {
            Ok(!run(names.cmd(Ns::Net, "ss").args(["-Hlun", &filter]))?.trim().is_empty())
        })
    }
}

/// What one `stun` client run saw: the address and port the server says it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StunAnswer {
    pub mapped: std::net::SocketAddr,
}

/// One STUN binding request from `ns` (a phone), source port `port`, to [`STUN_V4`] with the
/// `stun` client's test 1 (one request, one response, no change-address tests), and the
/// mapped address the server answered (in the lab, no NAT: the phone's own tunnel address).
pub fn stun_binding(lab: &Lab, ns: Ns, port: u16) -> Result<StunAnswer> {
    ensure!(have_program("stun"), "the stun client is not installed: run `cargo xtask setup`");
    let mut cmd = lab.cmd(ns, "timeout");
    cmd.args(["10", "stun", &STUN_V4.to_string(), "1", "-v", "-p", &port.to_string()]);
    let out = cmd.output().with_context(|| format!("cannot run stun in {}", lab.ns_name(ns)))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mapped = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("MappedAddress = "))
        .with_context(|| format!("stun from {} got no answer ({}):\n{text}", lab.ns_name(ns), out.status))?;
    Ok(StunAnswer { mapped: mapped.trim().parse().with_context(|| format!("stun printed {mapped:?}"))? })
}

/// What one ssh client run saw of the lab's SSH server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshAttempt {
    /// The server's software version from its banner (`dropbear_2022.83`).
    pub server_version: String,
    /// The client's exit status (255: authentication refused).
    pub status: Option<i32>,
    /// Whether the server refused the login ("Permission denied").
    pub refused: bool,
    /// ssh's verbose log, for failure messages.
    pub log: String,
}

/// `ssh -v` from `ns` to `server` port [`SSH_PORT`] as user `nobody`, in batch mode with no
/// keys, agent or config: the banner exchange and key exchange happen, the login is refused.
/// The host key is checked against `host_key` (from [`Lab::start_ssh`]).
pub fn ssh_attempt(lab: &Lab, ns: Ns, server: IpAddr, host_key: &str) -> Result<SshAttempt> {
    let known = lab.dir.join("ssh_known_hosts");
    fs::write(&known, format!("{server} {host_key}\n")).with_context(|| format!("cannot write {}", known.display()))?;
    let mut cmd = lab.cmd(ns, "ssh");
    cmd.args(["-v", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null"])
        .args(["-o", "IdentityAgent=none", "-o", "ConnectionAttempts=1"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-p", &SSH_PORT.to_string(), "-l", "nobody", &server.to_string(), "true"]);
    let out = cmd.stdin(std::process::Stdio::null()).output().context("cannot run ssh")?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let server_version = log
        .lines()
        .find_map(|l| l.split_once("remote software version ").map(|(_, v)| v.trim().to_owned()))
        .with_context(|| format!("ssh to {server} saw no server banner ({}):\n{log}", out.status))?;
    let refused = log.contains("Permission denied");
    Ok(SshAttempt { server_version, status: out.status.code(), refused, log })
}

/// A packet capture in the lab: tcpdump on one interface writing a pcap file, started by
/// [`Lab::start_capture`]. Dropping it stops tcpdump (SIGTERM); [`Capture::stop`] stops it the
/// way a person does (SIGINT), so the file is complete, and reads tcpdump's own counts.
#[derive(Debug)]
pub struct Capture {
    child: ChildGuard,
    /// The pcap file being written.
    pub file: PathBuf,
    /// tcpdump's stdout and stderr.
    pub log: PathBuf,
    /// Unix ms at which tcpdump had said `listening on`: every packet from then on is in the file.
    pub listening_ms: i64,
}

/// What tcpdump said when it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureCounts {
    /// Packets written to the file.
    pub captured: u64,
    /// Packets the kernel handed over.
    pub received: u64,
    /// Packets the kernel dropped because tcpdump did not keep up (then the file is not the
    /// traffic).
    pub dropped: u64,
}

/// How long tcpdump gets to finish its file and exit on SIGINT.
const CAPTURE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Lab {
    /// Starts `tcpdump -i IFACE -w FILE` in namespace `ns` and waits (bounded) until it says it is
    /// listening. Whole packets (`-s 0`), each written as it arrives (`-U`, `--immediate-mode`),
    /// no name lookups; `-Z root` keeps tcpdump from switching to its own user before it opens
    /// the file, which could not write into the lab's private dir. The link type is the
    /// interface's: raw IP on the WireGuard interface, Ethernet on a veth.
    pub fn start_capture(&self, ns: Ns, iface: &str, file: &Path) -> Result<Capture> {
        ensure!(have_program("tcpdump"), "tcpdump is not installed (apt-get install tcpdump)");
        let log = file.with_extension("tcpdump.log");
        let out = fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("cannot reopen {}", log.display()))?;
        let mut cmd = self.cmd(ns, "tcpdump");
        cmd.args(["-i", iface, "-w"])
            .arg(file)
            // A 16 MiB buffer: on a loaded 2-core machine the default 2 MiB lost packets
            // (counted, and then the test fails: the file would not be what the daemon saw).
            .args(["-U", "--immediate-mode", "-B", "16384", "-n", "-s", "0", "-Z", "root"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = ChildGuard::spawn(cmd)?;
        let what = format!("tcpdump to listen on {iface} in {}", self.ns_name(ns));
        wait_until(&what, START_TIMEOUT, POLL, || {
            let said = fs::read_to_string(&log).unwrap_or_default();
            if let Some(status) = child.try_status()? {
                bail!("tcpdump on {iface} exited ({status}): {}", said.trim());
            }
            Ok(said.contains("listening on"))
        })?;
        let listening_ms = SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?.as_millis();
        Ok(Capture { child, file: file.to_owned(), log, listening_ms: i64::try_from(listening_ms)? })
    }
}

impl Capture {
    /// Stops tcpdump with SIGINT, waits for it to exit (bounded) and returns its counts; fails
    /// if it does not exit cleanly or does not print them.
    pub fn stop(mut self) -> Result<CaptureCounts> {
        self.child.signal(libc::SIGINT)?;
        let status = self.child.wait_timeout(CAPTURE_STOP_TIMEOUT)?;
        let said = fs::read_to_string(&self.log).unwrap_or_default();
        let status =
            status.with_context(|| format!("tcpdump did not exit within {CAPTURE_STOP_TIMEOUT:?} of SIGINT"))?;
        ensure!(status.success(), "tcpdump exited with {status}: {}", said.trim());
        let count = |what: &str| -> Result<u64> {
            said.lines()
                .find_map(|l| l.trim().strip_suffix(what)?.trim().parse().ok())
                .with_context(|| format!("tcpdump printed no `N {what}`: {}", said.trim()))
        };
        Ok(CaptureCounts {
            captured: count("packets captured")?,
            received: count("packets received by filter")?,
            dropped: count("packets dropped by kernel")?,
        })
    }
}
