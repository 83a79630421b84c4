//! The daemon: its loop ([`engine`]), and its hold on what it runs on: the lock beside its
//! database, the record tying the pinned maps to that database, and the upkeep that notices,
//! between sweeps, pins or a database removed under it and puts them back, and the interface
//! it follows when it is made anew ([`follow`]).

pub mod engine;
pub mod follow;
pub mod learned;
pub mod notify;

use std::{
    collections::HashMap,
    fs::File,
    io::{Read as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    blocking::{self, KernelBlocks},
    kernel::{Owner, PinDir, PinLock, PinSet, pins},
    store::{Store, blocks::StoredRule, facts::DaemonFacts},
};

/// An exclusive lock beside the database, held while the daemon runs: two daemons on one
/// database would fight over the rows. The lock dies with the process, so a crash never leaves
/// it stale.
#[derive(Debug)]
pub struct DaemonLock {
    file: File,
    path: PathBuf,
}

fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl DaemonLock {
    pub fn acquire(db: &Path) -> Result<Self> {
        let path = lock_path(db);
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let pid = daemon_pid(db).map_or_else(|| "?".into(), |p| p.to_string());
            bail!("tracker is already running on {} (pid {pid}); stop it first", db.display());
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { file, path })
    }

    /// Whether the lock file at its path is still the one locked (not deleted or replaced).
    fn is_current(&self) -> bool {
        pins::is_same_file(&self.file, &self.path)
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

/// (device, inode) of a path, if it exists.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Refuses pins whose maps belong to another database, before anything is changed. The same
/// path with another (or no) database behind it is the database deleted or replaced while no
/// daemon ran: the kernel's rules are then put into the new one
/// ([`blocking::adopt_kernel_rules`]).
/// Returns whether that recovery is needed.
pub fn check_owner(pins: &PinDir, db: &Path, db_id: Option<&str>) -> Result<bool> {
    let Some(owner) = pins.owner()? else {
        return Ok(false);
    };
    if Some(owner.db_id.as_str()) == db_id {
        return Ok(false);
    }
    if owner.db == db {
        return Ok(true);
    }
    bail!(
        "the kernel maps in {} belong to the database {}, not {}: give this database its own \
         --pin-dir, or use --db {}",
        pins.0.display(),
        owner.db.display(),
        db.display(),
        owner.db.display()
    )
}

/// How often the same write error is logged again while it lasts.
const WRITE_ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the daemon keeps an eye on between sweeps.
pub struct Upkeep {
    pins: PinDir,
    pin_set: PinSet,
    pin_lock: PinLock,
    db: PathBuf,
    /// `meta.db_id` of the database in use: what the pins' owner record says.
    db_id: String,
    db_file: Option<(u64, u64)>,
    db_lock: DaemonLock,
    /// The facts `tracker status` reads, written again after a failed write or a new database.
    facts: DaemonFacts,
    facts_written: bool,
    /// The block rules as last read from the database, to recreate them if it is deleted.
    rules: HashMap<u32, StoredRule>,
    /// When a write error was last logged, and how many sweeps failed since.
    write_error: Option<(Instant, u64)>,
}

/// What [`Upkeep::check`] did that the sweep must know of.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    Unchanged,
    /// A new, empty database is in place: every live flow must be written again.
    NewDatabase,
}

impl Upkeep {
    pub fn new(pins: &PinDir, pin_lock: PinLock, store: &Store, db_lock: DaemonLock) -> Result<Self> {
        Ok(Self {
            pin_set: PinSet::record(pins)?,
            pins: pins.clone(),
            pin_lock,
            db: store.path().to_owned(),
            db_id: String::new(),
            db_file: file_id(store.path()),
            db_lock,
            facts: DaemonFacts::default(),
            facts_written: false,
            rules: HashMap::new(),
            write_error: None,
        })
    }

    /// Records the facts for `tracker status` and writes them; a failure (a full disk) is
    /// logged and retried at the next check.
    pub fn set_facts(&mut self, store: &mut Store, facts: DaemonFacts) {
        self.facts = facts;
        self.write_facts(store);
    }

    fn write_facts(&mut self, store: &mut Store) {
        match store.set_daemon_facts(&self.facts) {
            Ok(()) => self.facts_written = true,
            Err(e) => {
                self.facts_written = false;
                self.write_failed(&e);
            }
        }
    }

    /// Logs a failed database write: the first at once, then once a minute while it lasts.
    pub fn write_failed(&mut self, e: &anyhow::Error) {
        let now = Instant::now();
        let (last, n) = self.write_error.get_or_insert((now - WRITE_ERROR_LOG_EVERY, 0));
        *n += 1;
        if now.duration_since(*last) >= WRITE_ERROR_LOG_EVERY {
            if let Some(hint) = crate::store::damaged_hint(e, &self.db) {
                tracing::error!(db = %self.db.display(), "{hint}");
            }
            tracing::error!(
                db = %self.db.display(), failed_sweeps = *n,
                "cannot write to the database: {e:#}. The kernel keeps counting and blocking; \
                 the daemon retries every sweep and catches up when writing works again"
            );
            *last = now;
        }
    }

    /// A sweep wrote everything: if writes had failed, say that they work again.
    pub fn write_succeeded(&mut self, store: &mut Store) {
        if let Some((_, n)) = self.write_error.take() {
            tracing::info!(db = %self.db.display(), failed_sweeps = n, "the database is writable again; caught up");
        }
        if !self.facts_written {
            self.write_facts(store);
        }
    }

    /// Puts back pins and the database if they were removed, and re-reads the rules. Called
    /// before each sweep; each step that fails is logged and tried again at the next call.
    pub fn check(&mut self, store: &mut Store, blocks: &KernelBlocks) -> Checked {
        if let Err(e) = self.check_pins() {
            tracing::error!(pins = %self.pins.0.display(), "putting the pins back failed: {e:#}");
        }
        match self.check_db(store, blocks) {
            Ok(checked) => checked,
            Err(e) => {
                self.write_failed(&e);
                Checked::Unchanged
            }
        }
    }

    fn check_pins(&mut self) -> Result<()> {
        if !self.pin_set.any_missing() {
            return Ok(());
        }
        tracing::warn!(
            pins = %self.pins.0.display(),
            "pins were removed while the daemon runs; the programs stay attached (the daemon \
             holds them) and are pinned again"
        );
        let n = self.pin_set.repin()?;
        if !self.pin_lock.is_current(&self.pins) {
            self.pin_lock = PinLock::acquire(&self.pins)?;
        }
        self.pins.set_owner(&self.owner_of(&self.db_id))?;
        tracing::info!(pins = %self.pins.0.display(), objects = n, "re-pinned");
        Ok(())
    }

    /// Records the pins as they are now: the links pinned anew for an interface made anew.
    pub fn record_pins(&mut self) -> Result<()> {
        self.pin_set = PinSet::record(&self.pins)?;
        Ok(())
    }

    /// Changes the facts for `tracker status` and writes them.
    pub fn update_facts(&mut self, store: &mut Store, change: impl FnOnce(&mut DaemonFacts)) {
        change(&mut self.facts);
        self.write_facts(store);
    }

    fn owner_of(&self, db_id: &str) -> Owner {
        Owner { db_id: db_id.to_owned(), pid: std::process::id(), db: self.db.clone() }
    }

    /// Records in the pins that their maps belong to `store`.
    pub fn claim_pins(&mut self, store: &Store) -> Result<()> {
        self.db_id = store.db_id()?;
        self.pins.set_owner(&self.owner_of(&self.db_id))
    }

    fn check_db(&mut self, store: &mut Store, blocks: &KernelBlocks) -> Result<Checked> {
        let now = file_id(&self.db);
        if now.is_some() && now == self.db_file {
            self.rules = store.stored_rules()?.into_iter().map(|r| (r.id, r)).collect();
            if !self.facts_written {
                self.write_facts(store);
            }
            return Ok(Checked::Unchanged);
        }
        tracing::warn!(
            db = %self.db.display(),
            "the database was deleted (or replaced) while the daemon runs; starting a new one \
             with the block rules the kernel holds"
        );
        let mut fresh = Store::open(&self.db)?;
        if !self.db_lock.is_current() {
            self.db_lock = DaemonLock::acquire(&self.db)?;
        }
        let n = blocking::adopt_kernel_rules(&mut fresh, blocks, &self.rules)?;
        self.db_file = file_id(&self.db);
        *store = fresh;
        self.claim_pins(store)?;
        self.write_facts(store);
        tracing::info!(db = %self.db.display(), rules = n, "new database in place");
        Ok(Checked::NewDatabase)
    }
}
