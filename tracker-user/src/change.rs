//! Rule changes, the one implementation the CLI and the dashboard both call: the database and
//! the daemon's pinned kernel maps opened together (checked to belong together before anything
//! is written), a name rule added or ended with the kernel's name map made equal to the rules
//! inside the same database transaction, and an address rule ended the same way. Every change
//! is in force when the call returns, or, with no daemon's maps pinned, at the next start.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{
    analysis::entity::EntityTable,
    blocking::{self, KernelBlocks, KernelNames},
    daemon::daemon_pid,
    kernel::{self, PinDir},
    rules::{
        cover::{self, Coverage, Target},
        kernel::reconcile,
    },
    store::{
        Store,
        blocks::{Added, NewRule, RuleKind, StoredRule, active_rules},
        devices::DeviceList,
    },
    text::quoted,
    timefmt,
};

/// The kernel maps a rule change writes to.
pub struct KernelMaps {
    pub blocks: KernelBlocks,
    /// `None` when the pinned maps are older than name rules: they come with the next start.
    pub names: Option<KernelNames>,
}

/// What a rule change writes to: the database and, when the pins hold this database's maps,
/// the kernel's block maps.
pub struct Changer {
    pub pins: PinDir,
    pub store: Store,
    pub kernel: Option<KernelMaps>,
}

impl Changer {
    /// Opens the database `db` (created if missing) and the maps pinned in `pin_dir`, checked
    /// before anything is written. `what` names the caller in a missing-capability message.
    pub fn open(db: &Path, pin_dir: &Path, what: &str) -> Result<Self> {
        kernel::require_maps(what)?;
        let pins = PinDir(pin_dir.to_owned());
        let target = kernel_target(db, &pins)?;
        let store = Store::open(db)?;
        let kernel = match target {
            Where::Maps => KernelBlocks::open_pinned(&pins)?
                .map(|blocks| Ok::<_, anyhow::Error>(KernelMaps { blocks, names: KernelNames::open_pinned(&pins)? }))
                .transpose()?,
            Where::AtStart => None,
        };
        Ok(Self { pins, store, kernel })
    }

    /// Where a change went: into the kernel now, into the maps with no program attached yet,
    /// or into the database alone.
    pub fn applied(&self, in_kernel: bool) -> Applied {
        match (in_kernel, crate::kernel::links_attached(&self.pins).0) {
            (true, true) => Applied::Kernel,
            (true, false) => Applied::MapsOnly,
            (false, _) => Applied::AtStart,
        }
    }

    fn names(&mut self) -> Option<&mut KernelNames> {
        self.kernel.as_mut().and_then(|k| k.names.as_mut())
    }
}

/// Where a change took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// In the kernel, now.
    Kernel,
    /// In the kernel maps, but no program is attached: when `tracker run` starts.
    MapsOnly,
    /// Saved only: the daemon's maps are not loaded, so when `tracker run` starts.
    AtStart,
}

/// Where a rule change goes besides the database.
enum Where {
    /// The pinned maps, which belong to this database.
    Maps,
    /// Nowhere yet: no maps are pinned (no daemon since boot), so `tracker run` applies the
    /// database's rules when it starts.
    AtStart,
}

/// Checks, before anything is written, that the pin directory is this database's: on a BPF
/// filesystem, the one its running daemon uses, and holding maps recorded as this database's.
/// A command with another database must not write rule ids into another database's maps.
fn kernel_target(db: &Path, pins: &PinDir) -> Result<Where> {
    let p = &pins.0;
    // What the database says of its daemon, if it exists and is readable (a newer or foreign
    // file is refused later by the writer, with its own message).
    let reader = if db.exists() { Store::open_reader(db).ok() } else { None };
    let facts = reader.as_ref().and_then(|s| s.daemon_facts().ok()).unwrap_or_default();
    let daemon = daemon_pid(db);
    let daemon_pins = facts.daemon_pin_dir.filter(|_| daemon.is_some()).map(std::path::PathBuf::from);
    if !pins.on_bpffs() {
        // The default place before bpffs is mounted: the daemon mounts it at its start.
        if pins.mount_point().is_some() && daemon.is_none() {
            return Ok(Where::AtStart);
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
    Ok(if pins.map(tracker_common::names::BLOCK_V4).exists() { Where::Maps } else { Where::AtStart })
}

/// A name rule as asked for: who it holds for, until when, and why.
#[derive(Clone, Debug, Default)]
pub struct NameRule {
    /// A device as `--client` takes it; `None`: every device.
    pub client: Option<String>,
    /// Unix ms; `None`: until removed.
    pub expires: Option<i64>,
    pub comment: Option<String>,
    /// Also block the addresses its names share with names no rule blocks.
    pub block_shared: bool,
}

/// What [`block_name`] did.
#[derive(Clone, Debug)]
pub struct NameBlocked {
    pub coverage: Coverage,
    pub added: Added,
    pub applied: Applied,
}

/// Stores a name rule and makes the kernel's name map equal to the rules in the same
/// transaction: if the kernel refuses, nothing is stored.
pub fn block_name(ch: &mut Changer, table: &EntityTable, target: &Target, rule: &NameRule) -> Result<NameBlocked> {
    if rule.block_shared && rule.client.is_some() {
        bail!(
            "--block-shared with --client: the kernel's address rules hold for every device (their key has no \
             device), so a rule for one device blocks by name only; nothing was changed"
        );
    }
    let devices = ch.store.devices()?;
    let coverage = cover::resolve(table, &devices, target, rule.client.as_deref())?;
    let new = NewRule {
        kind: Some(coverage.kind),
        rule: coverage.rule.clone(),
        client: coverage.device.as_ref().map(|d| d.stored.clone()),
        comment: rule.comment.clone(),
        expires: rule.expires,
        domains: coverage.domains.clone(),
        block_shared: rule.block_shared,
    };
    let in_kernel = ch.names().is_some();
    let added =
        with_repair(ch, &devices, |store, names| store.add_rule_then(&new, |w, _| apply(w.conn(), names, &devices)))?;
    Ok(NameBlocked { applied: ch.applied(in_kernel), coverage, added })
}

/// What an unblock ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unblocked {
    pub id: u32,
    pub kind: RuleKind,
    pub rule: String,
    pub applied: Applied,
}

/// Ends the active name rule of `kind` named `text` (any case) for `client`, and takes its
/// entries out of the kernel (a key another rule also covers goes to that rule). No such rule
/// is an error that says which rule there is instead, if any.
pub fn unblock_name(ch: &mut Changer, kind: RuleKind, text: &str, client: Option<&str>) -> Result<Unblocked> {
    let devices = ch.store.devices()?;
    // The device as stored: resolved as when blocking, or the text itself for one no longer
    // known.
    let stored_client = client.map(|c| cover::device(&devices, c).map_or_else(|_| c.to_owned(), |d| d.stored));
    let active = active_rules(ch.store.conn(), Some(kind), timefmt::now_ms())?;
    let same = |r: &&StoredRule| r.rule.eq_ignore_ascii_case(text.trim());
    let Some(rule) = active.iter().filter(same).find(|r| r.client == stored_client) else {
        let label = |c: &Option<String>| {
            c.as_deref().map_or_else(|| "every device".into(), |s| cover::stored_device_label(&devices, s))
        };
        if let Some(other) = active.iter().find(same) {
            let flag = other
                .client
                .as_deref()
                .map_or_else(String::new, |c| format!(" --client {}", cover::stored_device_label(&devices, c)));
            // The dns-bypass rule has one text, which its command does not take.
            let shown = if kind == RuleKind::DnsBypass { String::new() } else { format!(" {}", other.rule) };
            bail!(
                "no {kind} rule for {} for {}, but there is one for {}: `tracker unblock-{kind}{shown}{flag}` \
                 removes it",
                quoted(text),
                label(&stored_client),
                label(&other.client),
            );
        }
        if kind == RuleKind::Domain
            && let Some(wider) =
                active.iter().find(|r| text.ends_with(&format!(".{}", r.rule)) && r.client == stored_client)
        {
            bail!(
                "no domain rule for {}, but the rule {} covers it: `tracker unblock-domain {}` removes that \
                 (see `tracker blocks`)",
                quoted(text),
                wider.rule,
                wider.rule
            );
        }
        bail!("no {kind} rule for {} for {} (see `tracker blocks`)", quoted(text), label(&stored_client));
    };
    end_rule(ch, &devices, rule.clone())
}

/// Ends the address rule `rule` (as stored: a CIDR's canonical text); the kernel entry goes
/// inside the database transaction, so if removing it fails the rule stays. `Ok(None)`: no
/// active rule has that text.
pub fn unblock_ip(ch: &mut Changer, rule: &str) -> Result<Option<Unblocked>> {
    let Changer { store, kernel, .. } = ch;
    let removed = store.end_rule_then(RuleKind::Ip, rule, None, |w, _| match kernel.as_mut() {
        Some(k) => blocking::reconcile_in(w.conn(), &mut k.blocks).map(|_| ()),
        None => Ok(()),
    })?;
    let in_kernel = ch.kernel.is_some();
    Ok(removed.map(|id| Unblocked { id, kind: RuleKind::Ip, rule: rule.to_owned(), applied: ch.applied(in_kernel) }))
}

/// Ends the active rule with id `id`, of any kind (the dashboard's unblock button names a rule
/// by its id). `Ok(None)`: no active rule has that id (ended meanwhile, or never was).
pub fn unblock_id(ch: &mut Changer, id: u32) -> Result<Option<Unblocked>> {
    let active = active_rules(ch.store.conn(), None, timefmt::now_ms())?;
    let Some(rule) = active.into_iter().find(|r| r.id == id) else { return Ok(None) };
    if rule.kind == RuleKind::Ip {
        return unblock_ip(ch, &rule.rule);
    }
    let devices = ch.store.devices()?;
    end_rule(ch, &devices, rule).map(Some)
}

/// Ends an active name rule as stored, with the kernel's name map made equal to what stays.
fn end_rule(ch: &mut Changer, devices: &DeviceList, rule: StoredRule) -> Result<Unblocked> {
    let in_kernel = ch.names().is_some();
    let StoredRule { id, kind, rule: text, client, .. } = rule;
    with_repair(ch, devices, |store, names| {
        store.end_rule_then(kind, &text, client.as_deref(), |w, _| apply(w.conn(), names, devices))
    })?;
    Ok(Unblocked { id, kind, rule: text, applied: ch.applied(in_kernel) })
}

/// The kernel's name map made equal to the rules as the transaction on `conn` sees them.
fn apply(conn: &rusqlite::Connection, names: Option<&mut KernelNames>, devices: &DeviceList) -> Result<()> {
    match names {
        Some(k) => reconcile(conn, k, devices, timefmt::now_ms()).map(|_| ()),
        None => Ok(()),
    }
}

/// Runs a rule change; if it fails after the kernel map was partly changed (a full map), the
/// map is made equal again to the rules as they stay, and a failure of that too is added to
/// the error.
fn with_repair<T>(
    ch: &mut Changer,
    devices: &DeviceList,
    change: impl FnOnce(&mut Store, Option<&mut KernelNames>) -> Result<T>,
) -> Result<T> {
    let Changer { store, kernel, .. } = ch;
    let mut names = kernel.as_mut().and_then(|k| k.names.as_mut());
    let result = change(store, names.as_deref_mut());
    match result {
        Err(e) if names.is_some() => match store.write_rules(|w| apply(w.conn(), names, devices)) {
            Ok(()) => Err(e),
            Err(again) => Err(e.context(format!("putting the kernel's name rules back failed too: {again:#}"))),
        },
        other => other,
    }
}
