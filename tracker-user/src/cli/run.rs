//! `tracker run`: preflight checks in the order a user can fix them, then load, reconcile
//! blocks, attach, and hand over to the daemon loop; detach on a clean stop.

use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use clap::Args;

use super::{Global, parse_duration};
use crate::{
    analysis::labels::Labeler,
    blocking,
    daemon::{
        self, DaemonLock, Upkeep,
        engine::{self, LoopOptions},
        follow::{Follower, Listener},
    },
    kernel::{self, PinDir, PinLock, SizeRequest, Tables},
    pipeline::{Namer, naming},
    source::kernel::KernelSource,
    store::{Store, facts::DaemonFacts},
    timefmt,
    web::dashboard,
};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface to watch: WireGuard (wg0), another TUN device, or an Ethernet interface.
    #[arg(long, env = "TRACKER_IFACE", default_value = "wg0")]
    pub iface: String,
    /// How often flows are written to the database.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Flow table size in the kernel, per address family (default 65536); the least recently
    /// used flow is evicted when full. Takes effect only with new pins: once the maps are
    /// pinned, a different size is refused with what to do.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub flow_entries: Option<u32>,
    /// Block rules per address family (default 16384). Like --flow-entries, only with new pins.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub block_entries: Option<u32>,
    /// Event ring buffer size in bytes, a power of two of at least 4096 (default 4 MiB). Like
    /// --flow-entries, only with new pins.
    #[arg(long, value_parser = clap::value_parser!(u32).range(4096..))]
    pub ring_bytes: Option<u32>,
    /// Leave the programs attached when stopping (blocks stay enforced, nothing is counted into
    /// the database until the next start).
    #[arg(long)]
    pub keep_attached: bool,
    /// Do not serve the dashboard.
    #[arg(long, help_heading = DASHBOARD_HEADING)]
    pub no_dashboard: bool,
    /// The dashboard's port. The default, 8722, is unprivileged and outside the ports web
    /// servers and development tools usually take, so it does not collide with a web server on
    /// the VPN host.
    #[arg(long, default_value_t = dashboard::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..),
          help_heading = DASHBOARD_HEADING)]
    pub dashboard_port: u16,
    /// Also serve the dashboard on this address (repeatable), e.g. the VPN host's LAN address.
    /// By default it listens on the interface's own addresses (reachable through the tunnel
    /// only) and on localhost. Wherever it listens, only the WireGuard peers and the host
    /// itself get in.
    #[arg(long = "dashboard-listen", value_name = "ADDR", help_heading = DASHBOARD_HEADING)]
    pub dashboard_listen: Vec<std::net::IpAddr>,
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
    /// How long rows are kept: the daemon prunes older ones every hour (`tracker prune`).
    #[command(flatten)]
    pub keep: super::prune::KeepArgs,
}

/// The `--help` heading of the dashboard's options.
const DASHBOARD_HEADING: &str = "Dashboard";

pub fn run(global: &Global, args: &RunArgs) -> Result<()> {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = parse_log(&args.log)?;
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(output).with(filter).init();
    kernel::caps::require("tracker run", &kernel::caps::DAEMON)?;
    kernel::require_kernel()?;
    let iface = kernel::iface(&args.iface)?;
    // A bad entity file or retention is refused before anything is created or attached.
    let entities = global.entity_table()?;
    let retention = args.keep.retention()?;

    // The pin directory is checked and locked before the database is created or changed: a
    // refusal there must leave everything as it was.
    let pins = PinDir(global.pin_dir.clone());
    pins.ensure_bpffs()?;
    let pin_lock = PinLock::acquire(&pins)?;
    kernel::ensure_links_of_this_netns(&pins)?;
    // An existing database is opened (and migrated) now, for its id; a missing one is created
    // only once the pins are known to allow it.
    let existing = global.db.exists().then(|| Store::open(&global.db)).transpose()?;
    let existing_id = existing.as_ref().map(Store::db_id).transpose()?;
    let lost_db = daemon::check_owner(&pins, &global.db, existing_id.as_deref())?;
    let sizes = SizeRequest { flows: args.flow_entries, blocks: args.block_entries, events_bytes: args.ring_bytes }
        .resolve(&pins)?;

    let mut store = match existing {
        Some(store) => store,
        None => Store::open(&global.db)?,
    };
    let db_lock = DaemonLock::acquire(&global.db)?;

    // Naming state first: once attached, events fill the ring until the loop drains it.
    let mut local_nets = kernel::iface_networks(&iface.name)?;
    local_nets.extend(args.local_nets.iter().map(|n| n.trunc()));
    let mut namer = Namer::new(local_nets.clone(), args.dns_grace);
    let entities = std::sync::Arc::new(entities);
    namer.labels = Labeler::new(std::sync::Arc::clone(&entities));
    // Devices before the reload: answers are filed per device.
    engine::refresh_devices(&mut namer, &mut store, &iface.name);
    let now = std::time::SystemTime::now();
    let since = timefmt::unix_ms(now - naming::RELOAD_WINDOW);
    let stored = store.recent_answers(since, naming::RELOAD_LIMIT)?;
    namer.flows.reload(&stored, now);
    let local: Vec<String> = local_nets.iter().map(ToString::to_string).collect();
    // Kept past this run (unlike the daemon's facts): imports of captures of this interface
    // take them as the tunnel.
    store.write(|w| w.set_local_nets(&local_nets))?;
    tracing::info!(local_nets = ?local, answers_reloaded = stored.len(), "naming ready");

    let mut ebpf = kernel::load(&pins, iface.l2_len, sizes)?;
    let (mut tables, events) = Tables::take(&mut ebpf)?;
    if lost_db {
        // The pins belong to this database's path, but the database there is new: it was
        // deleted while no daemon ran. Reconciling would drop every rule the kernel still
        // enforces, so they are written into the new database first.
        let n = blocking::adopt_kernel_rules(&mut store, &tables.blocks, &Default::default())?;
        tracing::warn!(
            db = %global.db.display(), rules = n,
            "the database these pins belong to was replaced by a new one; the kernel's address \
             rules were written into it (name rules cannot be: the kernel holds only their \
             hashes, so they end; block them again)"
        );
    }
    // Blocks first, so they are enforced from the first packet the programs see. Rules whose
    // time ran out while no daemon ran end first, marked expired at their end.
    for r in store.end_expired_then(timefmt::now_ms(), |_, _| Ok(()))? {
        tracing::info!(id = r.id, kind = %r.kind, rule = %r.rule, "block rule expired while the daemon was stopped");
    }
    let (added, removed) = blocking::reconcile(&mut store, &mut tables.blocks)?;
    tracing::info!(added, removed, "address rules applied to the kernel");
    let devices = store.devices()?;
    let names = store
        .write_rules(|w| crate::rules::kernel::reconcile(w.conn(), &mut tables.names, &devices, timefmt::now_ms()))?;
    tracing::info!(
        added = names.added,
        removed = names.removed,
        replaced = names.replaced,
        entries = names.entries,
        "name rules applied to the kernel"
    );
    let mut follower = Follower::attach(ebpf, &pins, iface.clone())?;
    let mode = follower.mode();
    tracing::info!(
        iface = %iface.name, ifindex = iface.index, link = iface.link_kind(), xdp = mode.as_str(),
        db = %global.db.display(), pins = %pins.0.display(),
        "attached: XDP on ingress, TC on egress"
    );
    let flows_ended_before = flows_ended_before(&store, &tables);
    let mut upkeep = Upkeep::new(&pins, pin_lock, &store, db_lock)?;
    upkeep.claim_pins(&store)?;
    follower.start_listener(|own| start_dashboard(global, args, &iface.name, own, entities));
    upkeep.set_facts(
        &mut store,
        DaemonFacts {
            iface: Some(iface.name.clone()),
            link_type: Some(iface.link_kind().into()),
            xdp_mode: Some(mode.as_str().into()),
            daemon_pin_dir: Some(pins.0.display().to_string()),
            started: Some(timefmt::rfc3339(timefmt::now_ms())),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            attached_pid: Some(std::process::id()),
            dashboard: follower.listener_urls().map(|u| u.join(" ")),
            ..DaemonFacts::default()
        },
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(engine::run_loop(
        &mut KernelSource::new(tables, events)?,
        &mut store,
        &mut namer,
        &mut upkeep,
        &mut follower,
        &LoopOptions {
            sweep_interval: args.sweep_interval,
            iface: iface.name.clone(),
            timeouts: Default::default(),
            flows_ended_before,
            retention,
        },
    ));
    follower.stop_listener();
    if let Err(e) = result {
        // As after a crash: the pinned links keep the programs, and blocking, in place.
        tracing::error!(
            "stopping on an error: {e:#}. The programs stay attached and keep blocking; start \
             tracker again to resume writing to the database"
        );
        return Err(e);
    }
    if args.keep_attached {
        tracing::info!("leaving the programs attached (--keep-attached)");
    } else {
        kernel::detach(&pins)?;
        if let Err(e) = store.set_daemon_facts(&DaemonFacts::default()) {
            tracing::warn!("clearing the daemon's facts in the database: {e:#}");
        }
        tracing::info!(iface = %iface.name, "detached; maps stay pinned for the next start");
    }
    Ok(())
}

/// Starts the dashboard unless `--no-dashboard`, on the interface's addresses `own`; a
/// dashboard that cannot start (its port taken, say) is logged and the daemon runs without it:
/// counting and blocking come first.
fn start_dashboard(
    global: &Global,
    args: &RunArgs,
    iface: &str,
    own: &[IpAddr],
    entities: std::sync::Arc<crate::analysis::entity::EntityTable>,
) -> Option<Box<dyn Listener>> {
    if args.no_dashboard {
        return None;
    }
    let on = DashboardOn { iface: iface.to_owned(), port: args.dashboard_port, extra: args.dashboard_listen.clone() };
    let config = dashboard::Config {
        iface: iface.to_owned(),
        listen: on.listen(own),
        db: global.db.clone(),
        pin_dir: global.pin_dir.clone(),
        entities,
    };
    match dashboard::Dashboard::start(config) {
        Ok(d) => {
            tracing::info!(urls = ?d.urls(), "dashboard: serving (`tracker dashboard` shows how to open it)");
            Some(Box::new((on, d)))
        }
        Err(e) => {
            tracing::error!("dashboard: not started: {e:#}. The daemon runs without it");
            None
        }
    }
}

/// Where the dashboard listens: the interface's addresses (tied to it), loopback, and the
/// addresses of `--dashboard-listen`, on `--dashboard-port`.
struct DashboardOn {
    iface: String,
    port: u16,
    extra: Vec<IpAddr>,
}

impl DashboardOn {
    fn listen(&self, own: &[IpAddr]) -> Vec<dashboard::Listen> {
        dashboard::default_listen(&self.iface, own, self.port, &self.extra)
    }
}

impl Listener for (DashboardOn, dashboard::Dashboard) {
    fn listen_on(&mut self, addresses: &[IpAddr]) {
        let wanted = self.0.listen(addresses);
        self.1.listen_again(wanted);
    }

    fn new_urls(&mut self) -> Option<Vec<String>> {
        self.1.new_urls().map(<[String]>::to_vec)
    }

    fn urls(&self) -> Vec<String> {
        self.1.urls().to_vec()
    }
}

/// Parses `--log`: comma-separated `LEVEL` or `TARGET=LEVEL` directives. Every part must be
/// one of those: `tracing_subscriber`'s own parser takes a bare word as a target name, so a
/// typo such as `--log garbage` would silently switch logging off.
fn parse_log(s: &str) -> Result<tracing_subscriber::filter::Targets> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = || {
        anyhow::anyhow!(
            "--log {}: expected a level ({}) or target=level pairs, as in `tracker=debug,warn`",
            crate::text::quoted(s),
            LEVELS.join(", ")
        )
    };
    for part in s.split(',') {
        let level = part.rsplit_once('=').map_or(part, |(target, level)| if target.is_empty() { "" } else { level });
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(bad());
        }
    }
    s.parse().map_err(|_| bad())
}

/// Flows the previous daemon deleted from these kernel tables, from its last facts; 0 when the
/// tables are newer than that count (created after a reboot: fewer flows created than ended).
fn flows_ended_before(store: &Store, tables: &Tables) -> u64 {
    let ended = store.daemon_facts().ok().and_then(|f| f.flows_ended).unwrap_or(0);
    let created = kernel::read_counters(&tables.counters)
        .ok()
        .and_then(|c| c.into_iter().find(|(c, _)| *c == tracker_common::Counter::FlowsCreated))
        .map_or(0, |(_, v)| v);
    if ended <= created { ended } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_checked_word_by_word() {
        for ok in ["info", "debug", "tracker=debug,warn", "WARN", "off"] {
            assert!(parse_log(ok).is_ok(), "{ok}");
        }
        for bad in ["garbage", "info,garbage", "tracker=loud", "=info", ""] {
            let e = parse_log(bad).unwrap_err().to_string();
            assert!(e.contains("expected a level"), "{bad}: {e}");
        }
    }
}
