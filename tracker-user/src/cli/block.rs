//! `tracker block-ip`, `unblock-ip` and `blocks`: rule changes that keep the database and the
//! kernel maps equal, and the rule listing with live counters.

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::{Global, ListArgs, open_existing, output};
use crate::{
    blocking::{self, KIND_IP, KernelBlocks},
    daemon::daemon_pid,
    kernel::{self, PinDir},
    store::{Store, blocks::Added},
    timefmt,
};

#[derive(Args, Debug)]
pub struct BlockArgs {
    /// IPv4/IPv6 address or CIDR, e.g. 203.0.113.7 or 198.51.100.0/24.
    pub rule: String,
    /// A note to remember why (shown by `tracker blocks`); given again for a rule that exists,
    /// it replaces the old note.
    #[arg(long)]
    pub comment: Option<String>,
    /// Block even a rule that covers every address (0.0.0.0/0, ::/0) or local ones (private,
    /// loopback, CGNAT, link-local, ULA), where the VPN host's own resolver lives.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct UnblockArgs {
    /// The address or CIDR as blocked (see `tracker blocks`), e.g. 203.0.113.7 or
    /// 198.51.100.0/24.
    pub rule: String,
}

pub fn block_ip(global: &Global, args: &BlockArgs) -> Result<()> {
    let net = blocking::parse_rule(&args.rule)?;
    if let Some(why) = blocking::needs_force(&net).filter(|_| !args.force) {
        bail!("{why}. If that is what you want, add --force");
    }
    let (pins, mut store, mut kernel) = open_for_change(global, "tracker block-ip")?;
    let rule = net.to_string();
    let added = store.add_block_then(KIND_IP, &rule, args.comment.as_deref(), |id| match kernel.as_mut() {
        Some(k) => k.insert(&net, id).with_context(|| format!("{rule} was not blocked")),
        None => Ok(()),
    })?;
    let id = match added {
        Added::New(id) => id,
        Added::Exists { id, comment_updated } => {
            let note = if comment_updated { "; its comment is updated" } else { "" };
            println!("{rule} is already blocked (rule {id}){note} (see `tracker blocks`)");
            return Ok(());
        }
    };
    match kernel {
        Some(_) if pins.attached().0 => println!("blocked {rule} in the kernel (rule {id})"),
        Some(_) => println!(
            "blocked {rule} in the kernel maps (rule {id}); no program is attached, so it takes \
             effect when `tracker run` starts"
        ),
        None => println!(
            "saved rule {id} for {rule}; the daemon's kernel maps are not loaded, so it takes \
             effect when `tracker run` starts"
        ),
    }
    Ok(())
}

pub fn unblock_ip(global: &Global, args: &UnblockArgs) -> Result<()> {
    let net = blocking::parse_rule(&args.rule)?;
    let (_, mut store, mut kernel) = open_for_change(global, "tracker unblock-ip")?;
    let rule = net.to_string();
    // The kernel entry goes inside the database transaction: if removing it fails, the rule
    // stays. An entry already absent from the kernel is the goal reached, not an error.
    let removed = store.remove_block_then(KIND_IP, &rule, |_| match kernel.as_mut() {
        Some(k) => k.remove(&net),
        None => Ok(()),
    })?;
    let Some(id) = removed else {
        let covering = blocking::covering_rules(&store.block_rules(KIND_IP)?, &net);
        if let Some(wider) = covering.first() {
            bail!(
                "no block rule for {rule}, but the rule {wider} covers it: `tracker unblock-ip \
                 {wider}` removes that (see `tracker blocks`)"
            );
        }
        bail!("no block rule for {rule} (see `tracker blocks`)");
    };
    match kernel {
        Some(_) => println!("unblocked {rule} (rule {id}) in the kernel"),
        None => println!("removed rule {id} for {rule}; no kernel maps are loaded"),
    }
    Ok(())
}

/// What a rule change writes to: the database (created if missing) and, when the pins hold
/// this database's maps, the kernel's block maps. Checked before anything is written.
fn open_for_change(global: &Global, what: &str) -> Result<(PinDir, Store, Option<KernelBlocks>)> {
    kernel::require_root(what)?;
    let pins = PinDir(global.pin_dir.clone());
    let target = kernel_target(global, &pins)?;
    let store = Store::open(&global.db)?;
    let kernel = match target {
        Target::Maps => KernelBlocks::open_pinned(&pins)?,
        Target::AtStart => None,
    };
    Ok((pins, store, kernel))
}

/// Where a rule change goes besides the database.
enum Target {
    /// The pinned maps, which belong to this database.
    Maps,
    /// Nowhere yet: no maps are pinned (no daemon since boot), so `tracker run` applies the
    /// database's rules when it starts.
    AtStart,
}

/// Checks, before anything is written, that the pin directory is this database's: on a BPF
/// filesystem, the one its running daemon uses, and holding maps recorded as this database's.
/// A command with another database must not write rule ids into another database's maps.
fn kernel_target(global: &Global, pins: &PinDir) -> Result<Target> {
    let (db, p) = (&global.db, &pins.0);
    // What the database says of its daemon, if it exists and is readable (a newer or foreign
    // file is refused later by the writer, with its own message).
    let reader = if db.exists() { Store::open_reader(db).ok() } else { None };
    let facts = reader.as_ref().and_then(|s| s.daemon_facts().ok()).unwrap_or_default();
    let daemon = daemon_pid(db);
    let daemon_pins = facts.daemon_pin_dir.filter(|_| daemon.is_some()).map(std::path::PathBuf::from);
    if !pins.on_bpffs() {
        // The default place before bpffs is mounted: the daemon mounts it at its start.
        if pins.mount_point().is_some() && daemon.is_none() {
            return Ok(Target::AtStart);
        }
        let hint = match &daemon_pins {
            Some(q) => format!(
                "the daemon of {} pins its maps in {}: pass --pin-dir {}",
                db.display(),
                q.display(),
                q.display()
            ),
            None => {
                format!("tracker pins its maps in {} unless `tracker run` was given --pin-dir", kernel::DEFAULT_PIN_DIR)
            }
        };
        bail!("{} is not on a BPF filesystem, so it holds no tracker maps; {hint}", p.display());
    }
    if let (Some(q), Some(pid)) = (&daemon_pins, daemon)
        && q != p
    {
        bail!(
            "the daemon of {} (pid {pid}) pins its maps in {}, not {}: pass --pin-dir {}",
            db.display(),
            q.display(),
            p.display(),
            q.display()
        );
    }
    if let Some(owner) = pins.owner()? {
        let id = reader.as_ref().and_then(|s| s.db_id().ok());
        if id.as_deref() != Some(owner.db_id.as_str()) {
            bail!(
                "the kernel maps in {} belong to the database {}, not {}: pass --db {} (or the \
                 --pin-dir of this database's daemon); nothing was changed",
                p.display(),
                owner.db.display(),
                db.display(),
                owner.db.display()
            );
        }
    }
    Ok(if pins.map(tracker_common::names::BLOCK_V4).exists() { Target::Maps } else { Target::AtStart })
}

pub fn blocks(global: &Global, args: &ListArgs) -> Result<()> {
    let store = open_existing(global)?;
    let pins = PinDir(global.pin_dir.clone());
    // Live counters need root; without them the listing shows the last sweep's numbers.
    let live = match kernel::require_root("") {
        Ok(()) => KernelBlocks::open_pinned(&pins)?.map(|k| k.counters()).transpose()?,
        Err(_) => None,
    };
    let clock = timefmt::KernelClock::now();
    let rows = store.blocks(&|id| {
        let k = live.as_ref()?.get(&id)?;
        Some((k.packets_dropped, (k.last_hit_ns != 0).then(|| clock.to_unix_ms(k.last_hit_ns))))
    })?;
    const COLUMNS: &[&str] = &["rule", "comment", "packets_dropped", "last_hit", "created"];
    output::render(&mut std::io::stdout().lock(), args.format, COLUMNS, &rows)
}
