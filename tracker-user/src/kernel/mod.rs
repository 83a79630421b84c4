//! The kernel side as userspace sees it: preflight checks (root, kernel version, the interface
//! and its link type), loading the embedded eBPF object with pinned maps, attaching XDP
//! (ingress) and TC (egress) and pinning those links. The pin directory itself is [`pins`].

use std::ffi::CString;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
    util::KernelVersion,
};
use tracker_common::{L2_LEN_ETHERNET, L2_LEN_NONE, names};

pub mod caps;
pub mod gate;
pub mod maps;
pub mod netlink;
pub mod pins;
mod sys;
pub use maps::{FlowTables, Tables, read_counters};
pub use pins::{DEFAULT_PIN_DIR, Owner, PIN_LINK_TC_EGRESS, PIN_LINK_XDP, PinDir, PinLock, PinSet};

/// The compiled kernel programs, built by build.rs (a nested nightly cargo build) and embedded so the binary is
/// self-contained.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracker-ebpf"));
/// An empty XDP program (returns XDP_PASS), built from tracker-ebpf's `src/bin/baseline.rs`:
/// the benchmarks' baseline, what running any XDP program costs. Not used by tracker itself.
pub static BASELINE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));

/// Oldest kernel with everything the programs use: `bpf_xdp_load_bytes` (5.18) is the newest
/// helper; ring buffers (5.8), BPF links for XDP (5.9) and coarse clock stamps (5.11) come earlier.
pub const MIN_KERNEL: (u8, u8) = (5, 18);
/// Link types from include/uapi/linux/if_arp.h.
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_NONE: u16 = 0xfffe;
/// Fails unless the process may reach the pinned maps ([`caps::MAPS`]), naming what is missing.
pub fn require_maps(what: &str) -> Result<()> {
    caps::require(what, &caps::MAPS)
}

/// Fails on kernels older than [`MIN_KERNEL`], naming what is missing.
pub fn require_kernel() -> Result<()> {
    let v = KernelVersion::current().context("reading the kernel version")?;
    let (maj, min) = MIN_KERNEL;
    if v < KernelVersion::new(maj, min, 0) {
        bail!(
            "kernel {v} is too old: tracker needs Linux {maj}.{min} or newer \
             (bpf_xdp_load_bytes, BPF ring buffers, XDP links)"
        );
    }
    Ok(())
}

/// The interface to watch.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    /// Bytes of link-layer header before IP (`tracker_common::L2_LEN_*`).
    pub l2_len: u32,
}

impl Iface {
    pub fn link_kind(&self) -> &'static str {
        if self.l2_len == L2_LEN_NONE { "raw IP (WireGuard/TUN)" } else { "Ethernet" }
    }
}

/// Looks the interface up in the current network namespace and reads its link type.
pub fn iface(name: &str) -> Result<Iface> {
    let Some(index) = ifindex(name)? else {
        bail!(
            "interface {name} not found in this network namespace; is the VPN up? \
             (`ip link` lists interfaces; pick one with --iface)"
        );
    };
    let l2_len = match link_type(name)? {
        ARPHRD_NONE => L2_LEN_NONE,
        ARPHRD_ETHER => L2_LEN_ETHERNET,
        other => bail!(
            "interface {name} has link type {other}: tracker reads raw-IP (WireGuard, TUN) and \
             Ethernet interfaces"
        ),
    };
    Ok(Iface { name: name.to_owned(), index, l2_len })
}

/// The index of interface `name` in this network namespace, if there is one.
pub fn ifindex(name: &str) -> Result<Option<u32>> {
    let c = CString::new(name).with_context(|| format!("interface name {name:?}"))?;
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    Ok((index != 0).then_some(index))
}

/// The networks of an interface's addresses (e.g. 10.8.0.1/24 gives 10.8.0.0/24): the VPN's
/// own subnets, whose peers are local.
pub fn iface_networks(name: &str) -> Result<Vec<ipnet::IpNet>> {
    Ok(iface_addresses(name)?.into_iter().map(|n| n.trunc()).collect())
}

/// An interface's own addresses with their prefix lengths (10.8.0.1/24): where the dashboard
/// listens. Read with getifaddrs(3), which sees the caller's network namespace.
pub fn iface_addresses(name: &str) -> Result<Vec<ipnet::IpNet>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut nets = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string for every node.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() != name.as_bytes() || ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: non-null sockaddrs of the family they declare.
        let (addr, mask) = unsafe { (sockaddr_ip(ifa.ifa_addr), sockaddr_ip(ifa.ifa_netmask)) };
        if let (Some(addr), Some(mask)) = (addr, mask)
            && let Ok(net) = ipnet::IpNet::with_netmask(addr, mask)
        {
            nets.push(net);
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(nets)
}

/// The address in an AF_INET or AF_INET6 sockaddr.
///
/// # Safety
/// `sa` must point to a valid sockaddr of the size its family implies.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<std::net::IpAddr> {
    // SAFETY: per the contract, the family says which struct this is.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*sa.cast::<libc::sockaddr_in>();
                Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into())
            }
            libc::AF_INET6 => {
                let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into())
            }
            _ => None,
        }
    }
}

/// ARPHRD_* of an interface, via SIOCGIFHWADDR (works in any namespace, unlike /sys, which
/// shows the namespace it was mounted in).
fn link_type(name: &str) -> Result<u16> {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCGIFHWADDR");
    }
    // SAFETY: ifreq is plain data; the name fits (if_nametoindex accepted it, so < IFNAMSIZ).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: fd is a socket, req a valid ifreq.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err).with_context(|| format!("reading the link type of {name}"));
    }
    // SAFETY: SIOCGIFHWADDR fills ifru_hwaddr.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Sizes of the kernel maps, from the daemon's flags.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    pub flows: u32,
    pub blocks: u32,
    pub events_bytes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        use tracker_common::defaults;
        Self { flows: defaults::FLOW_ENTRIES, blocks: defaults::BLOCK_ENTRIES, events_bytes: defaults::EVENTS_BYTES }
    }
}

/// The sizes asked for on the command line; `None` takes what is pinned, or the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SizeRequest {
    pub flows: Option<u32>,
    pub blocks: Option<u32>,
    pub events_bytes: Option<u32>,
}

impl SizeRequest {
    /// The sizes to load with. A map that is already pinned is reused as it is (the loader
    /// takes the pinned map and ignores the size asked for), so a size that differs from a
    /// pinned map's is refused rather than silently ignored.
    pub fn resolve(self, pins: &PinDir) -> Result<MapSizes> {
        let d = MapSizes::default();
        let check = |flag: &str, asked: Option<u32>, default: u32, maps: &[&str]| -> Result<u32> {
            let mut pinned = None;
            for name in maps {
                if let Some(n) = pins.pinned_max_entries(name)? {
                    pinned = Some(n);
                    if let Some(a) = asked.filter(|a| *a != n) {
                        bail!(
                            "{name} is pinned in {} with {n} entries, so {flag} {a} cannot take \
                             effect: sizes change only with new pins. Stop tracker, remove the pins \
                             (`rm -r {}`; blocking stops until the next start) and start again, or \
                             leave out {flag}",
                            pins.0.display(),
                            pins.0.display()
                        );
                    }
                }
            }
            Ok(asked.or(pinned).unwrap_or(default))
        };
        Ok(MapSizes {
            flows: check("--flow-entries", self.flows, d.flows, &[names::FLOWS_V4, names::FLOWS_V6])?,
            blocks: check("--block-entries", self.blocks, d.blocks, &[names::BLOCK_V4, names::BLOCK_V6])?,
            events_bytes: check("--ring-bytes", self.events_bytes, d.events_bytes, &[names::EVENTS])?,
        })
    }
}

/// The single flow table of versions before `FLOWS_V4`/`FLOWS_V6`.
const RETIRED_FLOWS_PIN: &str = "FLOWS";

/// Loads the programs without attaching them. Maps are pinned in (or reused from) `pins`.
pub fn load(pins: &PinDir, l2_len: u32, sizes: MapSizes) -> Result<Ebpf> {
    if !sizes.events_bytes.is_power_of_two() || sizes.events_bytes < 4096 {
        bail!("the ring buffer size must be a power of two of at least 4096 bytes");
    }
    // Before the flow table was split by family it was pinned as `FLOWS`; nothing reads it
    // now, and the pin alone would keep its per-CPU memory allocated.
    let retired = pins.map(RETIRED_FLOWS_PIN);
    if retired.exists() {
        std::fs::remove_file(&retired).with_context(|| format!("removing {}", retired.display()))?;
        tracing::info!(path = %retired.display(), "removed the pin of the retired flow table");
    }
    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(&pins.0)
        .map_max_entries(names::FLOWS_V4, sizes.flows)
        .map_max_entries(names::FLOWS_V6, sizes.flows)
        .map_max_entries(names::BLOCK_V4, sizes.blocks)
        .map_max_entries(names::BLOCK_V6, sizes.blocks)
        .map_max_entries(names::EVENTS, sizes.events_bytes)
        .override_global(names::GLOBAL_L2_LEN, &l2_len, true);
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .with_context(|| format!("loading tracker's eBPF object (maps pinned in {})", pins.0.display()))?;
    prog_xdp(&mut ebpf)?.load().context("verifying the XDP program")?;
    prog_tc(&mut ebpf)?.load().context("verifying the TC egress program")?;
    Ok(ebpf)
}

pub fn prog_xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(names::PROG_XDP)
        .ok_or_else(|| anyhow!("program {} missing from the object", names::PROG_XDP))?
        .try_into()
        .context("XDP program type")
}

pub fn prog_tc(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    ebpf.program_mut(names::PROG_TC_EGRESS)
        .ok_or_else(|| anyhow!("program {} missing from the object", names::PROG_TC_EGRESS))?
        .try_into()
        .context("TC program type")
}

/// How the XDP program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// Driver (native) XDP.
    Driver,
    /// Generic (SKB) XDP: the only kind TUN devices such as wireguard-go's offer.
    Generic,
    /// The link an earlier daemon pinned on this interface, now running this daemon's program
    /// (in whatever mode that link was created).
    Updated,
}

impl AttachedMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Driver => "driver",
            AttachedMode::Generic => "generic (skb)",
            AttachedMode::Updated => "pinned link kept, program replaced",
        }
    }
}

/// Attaches both programs to `iface` and pins the links, so the programs (and the blocking they
/// do) outlive a daemon that dies.
///
/// Links an earlier daemon left pinned on the same interface (after a crash or
/// `--keep-attached`) are kept and get the new program with BPF_LINK_UPDATE, which swaps it
/// atomically: no packet passes the interface unseen (or unblocked) during a restart. Links on
/// another interface, or whose interface is gone, are removed first. The daemon has checked
/// beforehand that they are not another namespace's ([`ensure_links_of_this_netns`]).
pub fn attach(ebpf: &mut Ebpf, pins: &PinDir, iface: &Iface) -> Result<(AttachedMode, HeldLinks)> {
    let mut held = HeldLinks::default();
    let old_xdp = reusable_link(pins, PIN_LINK_XDP, iface.index)?;
    let old_tc = reusable_link(pins, PIN_LINK_TC_EGRESS, iface.index)?;

    let xdp = prog_xdp(ebpf)?;
    let mode = if let Some(link) = old_xdp {
        let link = XdpLink::try_from(link).context("the pinned XDP link is not an XDP link")?;
        xdp.attach_to_link(link).context("replacing the program of the pinned XDP link")?;
        AttachedMode::Updated
    } else {
        // Raw-IP devices (TUN) have no driver XDP; asking for it would fail with EOPNOTSUPP.
        let mode = if iface.l2_len == L2_LEN_NONE {
            xdp.attach(&iface.name, XdpMode::Skb).map(|id| (id, AttachedMode::Generic))
        } else {
            xdp.attach(&iface.name, XdpMode::Driver)
                .map(|id| (id, AttachedMode::Driver))
                .or_else(|_| xdp.attach(&iface.name, XdpMode::Skb).map(|id| (id, AttachedMode::Generic)))
        };
        let (xdp_id, mode) = mode.with_context(|| {
            format!("attaching XDP to {}; is another XDP program attached? (`ip link show {}`)", iface.name, iface.name)
        })?;
        let xdp_link = FdLink::try_from(xdp.take_link(xdp_id)?).context("XDP link is not a BPF link")?;
        let pinned = xdp_link
            .pin(pins.link(PIN_LINK_XDP))
            .with_context(|| format!("pinning the XDP link in {}", pins.0.display()))?;
        held.0.push(pinned);
        mode
    };

    let tc = prog_tc(ebpf)?;
    if let Some(link) = old_tc {
        let link = SchedClassifierLink::try_from(link).context("the pinned TC link is not a TCX link")?;
        tc.attach_to_link(link).context("replacing the program of the pinned TC link")?;
        return Ok((mode, held));
    }
    // TCX (6.6+) gives a BPF link that can be pinned; on older kernels aya falls back to a
    // clsact qdisc with cls_bpf, which lives on the interface until removed.
    if KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0)) {
        let _ = aya::programs::tc::qdisc_add_clsact(&iface.name);
    }
    let tc_id = tc
        .attach(&iface.name, TcAttachType::Egress)
        .with_context(|| format!("attaching the TC egress program to {}", iface.name))?;
    let tc_link = tc.take_link(tc_id)?;
    match FdLink::try_from(tc_link) {
        Ok(link) => {
            let pinned = link
                .pin(pins.link(PIN_LINK_TC_EGRESS))
                .with_context(|| format!("pinning the TC link in {}", pins.0.display()))?;
            held.0.push(pinned);
        }
        Err(_) => tracing::warn!("TC egress is attached through netlink (kernel < 6.6): not pinned"),
    }
    Ok((mode, held))
}

/// The daemon's own references to the links it created and pinned (a link the daemon reused
/// with BPF_LINK_UPDATE is held by its program in the [`Ebpf`] object). Pins alone would let
/// `rm -r` of the pin directory detach the programs; with these the links live as long as the
/// daemon, and [`PinSet::repin`] can pin them again. Dropping them after [`detach`] (or with
/// the pins kept) changes nothing else.
#[derive(Debug, Default)]
#[must_use = "dropping the links' last references detaches them once their pins are removed"]
pub struct HeldLinks(Vec<PinnedLink>);

/// The link pinned as `name`, if it is still attached to interface `ifindex`; otherwise the pin
/// is removed (dropping the last reference detaches the link) and `None` returned.
fn reusable_link(pins: &PinDir, name: &str, ifindex: u32) -> Result<Option<FdLink>> {
    let Some(pinned) = pinned_link(pins, name)? else {
        return Ok(None);
    };
    let link = FdLink::from(pinned);
    if link_ifindex(&link)? == Some(ifindex) {
        return Ok(Some(link));
    }
    let path = pins.link(name);
    std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
    Ok(None)
}

/// The link pinned as `name`, if there is one.
fn pinned_link(pins: &PinDir, name: &str) -> Result<Option<PinnedLink>> {
    let path = pins.link(name);
    if !path.exists() {
        return Ok(None);
    }
    let link = PinnedLink::from_pin(&path).with_context(|| format!("opening the pinned link {}", path.display()))?;
    Ok(Some(link))
}

/// Fails if the pinned links are attached to an interface of another network namespace.
///
/// A link reports only an ifindex, and ifindexes are per network namespace: the wg0 of a second
/// namespace often has the same one. A daemon there, given the same pin directory, would take
/// the first daemon's links for its own and swap its programs into them, or, with another
/// ifindex, unpin them as stale and so detach the first daemon's programs. A TCX query on an
/// interface of this namespace lists the TC egress program of a link only if the link is on
/// that interface. The XDP link, pinned beside it by the same daemon, is not checked on its own
/// (that would take a netlink `IFLA_XDP` query, which aya does not offer).
///
/// Called before the maps are loaded: the maps in the directory are the other daemon's too.
pub fn ensure_links_of_this_netns(pins: &PinDir) -> Result<()> {
    let Some(pinned) = pinned_link(pins, PIN_LINK_TC_EGRESS)? else {
        return Ok(());
    };
    let link = FdLink::from(pinned);
    let Some(index) = link_ifindex(&link)? else {
        return Ok(()); // its interface is gone: a stale pin, removed by `reusable_link`
    };
    let prog = link.info().context("reading the pinned TC link")?.program_id();
    // The index must name an interface here, and the link's program be attached to it.
    let here = ifname_of(index).is_some()
        && sys::tcx_egress_prog_ids(index)
            .with_context(|| format!("querying the TC egress programs of interface {index}"))?
            .contains(&prog);
    if here {
        return Ok(());
    }
    bail!(
        "the programs pinned in {} are attached to an interface (index {index}) of another \
         network namespace: another tracker uses this pin directory. Give this one its own \
         with --pin-dir",
        pins.0.display()
    )
}

/// The name of interface `index` in this network namespace.
fn ifname_of(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname(3) requires.
    let name = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The interface a BPF link is attached to, from the kernel's fdinfo (`ifindex:` is printed for
/// XDP and TCX links); `None` once the interface is gone (the kernel prints 0). aya exposes
/// neither the ifindex nor the link's fd, so the fd is found by the link id, which fdinfo
/// prints too. Not finding out is an error, never "gone": a live link must not be unpinned.
fn link_ifindex(link: &FdLink) -> Result<Option<u32>> {
    let id = link.info().context("reading a pinned link")?.id();
    let (_, info) = pins::own_fd("link_id:", id)?.with_context(|| format!("no fdinfo for BPF link {id}"))?;
    let index = info
        .lines()
        .find_map(|l| l.strip_prefix("ifindex:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .with_context(|| format!("BPF link {id} has no ifindex"))?;
    Ok((index != 0).then_some(index))
}

/// Whether the XDP and the TC program are attached: their links are pinned and still on an
/// interface. A link whose interface was removed (a wireguard-go restart while no daemon ran)
/// stays pinned, attached to nothing. A link this process may not open (no privilege) counts
/// by its pin.
pub fn links_attached(pins: &PinDir) -> (bool, bool) {
    let attached = |name: &str| match pinned_link(pins, name) {
        Ok(Some(link)) => link_ifindex(&FdLink::from(link)).map_or(true, |index| index.is_some()),
        Ok(None) => false,
        Err(_) => pins.link(name).exists(),
    };
    (attached(PIN_LINK_XDP), attached(PIN_LINK_TC_EGRESS))
}

/// Detaches both programs: unpinning drops the last reference to each link.
pub fn detach(pins: &PinDir) -> Result<()> {
    remove_stale_links(pins)
}

fn remove_stale_links(pins: &PinDir) -> Result<()> {
    for name in [PIN_LINK_XDP, PIN_LINK_TC_EGRESS] {
        if let Some(link) = pinned_link(pins, name)? {
            let path = pins.link(name);
            let fd_link = link.unpin().with_context(|| format!("unpinning {}", path.display()))?;
            drop(fd_link);
        }
    }
    Ok(())
}
