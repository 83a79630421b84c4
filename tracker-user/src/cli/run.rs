//! `tracker run`: preflight checks in the order a user can fix them, then load, reconcile
//! blocks, attach, and hand over to the drain loop; detach on a clean stop.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{Global, parse_duration};
use crate::{
    blocking,
    drain::{self, LoopOptions, Tables},
    kernel::{self, MapSizes, PinDir},
    naming::{self, Namer},
    store::Store,
    timefmt,
};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface to watch: WireGuard (wg0), another TUN device, or an Ethernet interface.
    #[arg(long, env = "TRACKER_IFACE", default_value = "wg0")]
    pub iface: String,
    /// How often flows are written to the database.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Flow table size in the kernel, per address family; the least recently used flow is
    /// evicted when full.
    #[arg(long, default_value_t = tracker_common::defaults::FLOW_ENTRIES)]
    pub flow_entries: u32,
    /// Block rules per address family.
    #[arg(long, default_value_t = tracker_common::defaults::BLOCK_ENTRIES)]
    pub block_entries: u32,
    /// Event ring buffer size in bytes (a power of two).
    #[arg(long, default_value_t = tracker_common::defaults::EVENTS_BYTES)]
    pub ring_bytes: u32,
    /// Leave the programs attached when stopping (blocks stay enforced, nothing is counted into
    /// the database until the next start).
    #[arg(long)]
    pub keep_attached: bool,
    /// Extra networks whose hosts are local, never named (repeatable): a LAN reached through
    /// the VPN with public addresses, say. The interface's own subnets, loopback, RFC 1918,
    /// CGNAT, link-local and ULA addresses are local already.
    #[arg(long = "local-net", value_name = "CIDR")]
    pub local_nets: Vec<ipnet::IpNet>,
    /// How long past its TTL a DNS answer still names new flows to its addresses.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub dns_grace: Duration,
    /// Log level: error, warn, info, debug, trace, or per module, as in `tracker=debug,warn`.
    #[arg(long, env = "TRACKER_LOG", default_value = "info")]
    pub log: String,
}

pub fn run(global: &Global, args: &RunArgs) -> Result<()> {
    use tracing_subscriber::{filter::Targets, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter: Targets = args.log.parse().with_context(|| {
        format!("--log {:?}: expected a level (error, warn, info, debug, trace) or target=level pairs", args.log)
    })?;
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(output).with(filter).init();
    kernel::require_root("tracker run")?;
    kernel::require_kernel()?;
    let iface = kernel::iface(&args.iface)?;
    let mut store = Store::open(&global.db)?;
    let _lock = DaemonLock::acquire(&global.db)?;
    let pins = PinDir(global.pin_dir.clone());
    pins.ensure_bpffs()?;
    kernel::ensure_links_of_this_netns(&pins)?;

    // Naming state first: once attached, events fill the ring until the loop drains it.
    let mut local_nets = kernel::iface_networks(&iface.name)?;
    local_nets.extend(args.local_nets.iter().map(|n| n.trunc()));
    let mut namer = Namer::new(local_nets.clone(), args.dns_grace);
    // Devices before the reload: answers are filed per device.
    drain::refresh_devices(&mut namer, &iface.name);
    let now = std::time::SystemTime::now();
    let since = timefmt::unix_ms(now - naming::RELOAD_WINDOW);
    let stored = store.recent_answers(since, naming::RELOAD_LIMIT)?;
    namer.reload(&stored, now);
    let local: Vec<String> = local_nets.iter().map(ToString::to_string).collect();
    tracing::info!(local_nets = ?local, answers_reloaded = stored.len(), "naming ready");

    let sizes = MapSizes { flows: args.flow_entries, blocks: args.block_entries, events_bytes: args.ring_bytes };
    let mut ebpf = kernel::load(&pins, iface.l2_len, sizes)?;
    let (mut tables, events) = Tables::take(&mut ebpf)?;
    // Blocks first, so they are enforced from the first packet the programs see.
    let (added, removed) = blocking::reconcile(&mut store, &mut tables.blocks)?;
    tracing::info!(added, removed, "block rules applied to the kernel");
    let mode = kernel::attach(&mut ebpf, &pins, &iface)?;
    tracing::info!(
        iface = %iface.name, ifindex = iface.index, link = iface.link_kind(), xdp = mode.as_str(),
        db = %global.db.display(), pins = %pins.0.display(),
        "attached: XDP on ingress, TC on egress"
    );
    store.set_daemon_facts(&[
        ("iface", iface.name.clone()),
        ("link_type", iface.link_kind().into()),
        ("xdp_mode", mode.as_str().into()),
        ("started", timefmt::rfc3339(timefmt::now_ms())),
        ("version", env!("CARGO_PKG_VERSION").into()),
        // Written only once attached: tells a waiting script that *this* daemon is ready, not
        // the links a crashed one left pinned.
        ("attached_pid", std::process::id().to_string()),
    ])?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(drain::run_loop(
        &tables,
        events,
        &mut store,
        &mut namer,
        &LoopOptions { sweep_interval: args.sweep_interval, iface: iface.name.clone() },
    ));
    if args.keep_attached {
        tracing::info!("leaving the programs attached (--keep-attached)");
    } else {
        kernel::detach(&pins)?;
        store.set_daemon_facts(&[])?;
        tracing::info!(iface = %iface.name, "detached; maps stay pinned for the next start");
    }
    result
}

/// An exclusive lock beside the database, held while the daemon runs: two daemons on one
/// database would fight over the interface and the rows. The lock dies with the process, so a
/// crash never leaves it stale.
struct DaemonLock {
    _file: File,
}

fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl DaemonLock {
    fn acquire(db: &Path) -> Result<Self> {
        let path = lock_path(db);
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let pid = daemon_pid(db).map_or_else(|| "?".into(), |p| p.to_string());
            bail!("tracker is already running on {} (pid {pid}); stop it first", db.display());
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

/// The running daemon's pid, if one holds the lock for this database.
pub fn daemon_pid(db: &Path) -> Option<u32> {
    let mut file = File::open(lock_path(db)).ok()?;
    // SAFETY: flock on a file descriptor we own.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if free {
        return None;
    }
    let mut s = String::new();
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}
