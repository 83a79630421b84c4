//! The pin directory: where it may live (bpffs, mounted only at its documented place), the
//! running daemon's lock on it, the record of which database its maps belong to, and putting
//! the pins back when someone removes them under a running daemon.

use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsRawFd as _, RawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, Map, MapData, MapInfo};
use tracker_common::names;

use super::sys::{ATTR_BYTES, sys_bpf};

/// Where maps and links are pinned unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tracker";
/// The one place tracker mounts a BPF filesystem itself: the standard mount point, which some
/// systems leave unmounted at boot and `ip netns exec` hides by remounting /sys.
pub const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";
/// `statfs` magic of the BPF filesystem (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
/// File names of the pinned links inside the pin directory.
pub const PIN_LINK_XDP: &str = "link_xdp";
pub const PIN_LINK_TC_EGRESS: &str = "link_tc_egress";

/// The pin directory and the names inside it.
#[derive(Clone, Debug)]
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn map(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub(super) fn link(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Whether the pin directory lies on a mounted BPF filesystem.
    pub fn on_bpffs(&self) -> bool {
        statfs_magic(nearest_existing(&self.0)) == Some(BPF_FS_MAGIC)
    }

    /// Where the daemon would mount a bpffs to hold this directory: [`BPFFS_MOUNT_POINT`], when
    /// the directory lies under it and it is an empty directory with nothing mounted on it.
    /// Anywhere else a mount would hide whatever the folder holds (a user's files, the
    /// database), so it is never done.
    pub fn mount_point(&self) -> Option<&'static Path> {
        let point = Path::new(BPFFS_MOUNT_POINT);
        let empty = std::fs::read_dir(point).is_ok_and(|mut d| d.next().is_none());
        (self.0.starts_with(point) && empty && statfs_magic(point) != Some(BPF_FS_MAGIC)).then_some(point)
    }

    /// Makes sure the pin directory exists on bpffs, mounting one only at
    /// [`BPFFS_MOUNT_POINT`] (see [`PinDir::mount_point`]); anywhere else it refuses and says
    /// how to mount one.
    pub fn ensure_bpffs(&self) -> Result<()> {
        if !self.on_bpffs() {
            let Some(point) = self.mount_point() else {
                bail!(
                    "{} is not on a BPF filesystem; tracker mounts one only at {BPFFS_MOUNT_POINT} \
                     (when nothing is there). Mount one yourself with `mount -t bpf bpf DIR` and \
                     pass a --pin-dir inside it, or use the default --pin-dir {DEFAULT_PIN_DIR}",
                    self.0.display()
                );
            };
            mount_bpffs(point).with_context(|| {
                format!("mounting a BPF filesystem on {} (`mount -t bpf bpf {}`)", point.display(), point.display())
            })?;
            tracing::info!(path = %point.display(), "mounted bpffs");
        }
        std::fs::create_dir_all(&self.0).with_context(|| format!("creating the pin directory {}", self.0.display()))
    }

    /// Opens a pinned map; `Ok(None)` if it is not pinned (no daemon has run since boot).
    pub fn open_map(&self, name: &str) -> Result<Option<Map>> {
        let path = self.map(name);
        if !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(&path).with_context(|| format!("opening the pinned map {}", path.display()))?;
        Ok(Some(Map::from_map_data(data).with_context(|| format!("map {}", path.display()))?))
    }

    /// The `max_entries` of a pinned map, if it is pinned.
    pub fn pinned_max_entries(&self, name: &str) -> Result<Option<u32>> {
        let path = self.map(name);
        if !path.exists() {
            return Ok(None);
        }
        let info = MapInfo::from_pin(&path).with_context(|| format!("reading the pinned map {}", path.display()))?;
        Ok(Some(info.max_entries()))
    }
}

/// `path`, or its nearest ancestor that exists: a directory not made yet lies on its parent's
/// filesystem.
fn nearest_existing(path: &Path) -> &Path {
    let mut probe = path;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    probe
}

fn statfs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out-parameter; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

fn mount_bpffs(at: &Path) -> Result<()> {
    let target = CString::new(at.as_os_str().as_encoded_bytes())?;
    let (src, fstype) = (c"bpf", c"bpf");
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            return Err(e).context(format!(
                "mounting the BPF filesystem at {} needs {}: mount it once beforehand (`mount -t bpf bpf {0}`, or \
                 systemd's sys-fs-bpf.mount)",
                at.display(),
                super::caps::Cap::SysAdmin.name()
            ));
        }
        return Err(e).context("mount -t bpf");
    }
    Ok(())
}

// ---- the daemon's lock ----

/// An exclusive `flock` on the pin directory itself, held while a daemon runs: two daemons on
/// one pin directory would swap each other's programs into the links and rewrite each other's
/// block maps, whatever databases they use. bpffs holds no regular files, but a directory can be
/// locked; the lock dies with the process, so a crash never leaves it stale.
#[derive(Debug)]
pub struct PinLock {
    dir: File,
}

impl PinLock {
    pub fn acquire(pins: &PinDir) -> Result<Self> {
        let dir = File::open(&pins.0).with_context(|| format!("opening the pin directory {}", pins.0.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let who = match pins.owner() {
                Ok(Some(o)) => format!(" (pid {}, database {})", o.pid, o.db.display()),
                _ => String::new(),
            };
            bail!(
                "another tracker daemon{who} is using the pin directory {}; stop it first, or \
                 give this one its own --pin-dir",
                pins.0.display()
            );
        }
        Ok(Self { dir })
    }

    /// Whether the directory at the pin path is still the one locked (not removed and made
    /// again).
    pub fn is_current(&self, pins: &PinDir) -> bool {
        is_same_file(&self.dir, &pins.0)
    }
}

/// Whether `path` still names the file (or directory) `open` has open: false once it was
/// removed, or removed and made again. A lock on the old one no longer guards the path.
pub fn is_same_file(open: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (open.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

// ---- which database the maps belong to ----

/// Pinned as [`names::OWNER`]: which database the block maps beside it belong to. The rule ids
/// in the block maps are that database's row ids, so a command with another database must not
/// write into them. Created by the daemon (it is not in the eBPF object: no program reads it).
#[repr(C)]
#[derive(Clone, Copy)]
struct OwnerRecord {
    /// `meta.db_id` of the database, ASCII hex.
    db_id: [u8; 32],
    /// The daemon that wrote the record last.
    pid: u32,
    /// Bytes of `db_path` in use.
    db_path_len: u32,
    /// The database's path as the daemon was given it (for messages only), cut at the size.
    db_path: [u8; OWNER_PATH_MAX],
}

/// Room for the database path in [`OwnerRecord`].
const OWNER_PATH_MAX: usize = 1024;

// SAFETY: #[repr(C)], only integers and byte arrays with no padding (32 + 4 + 4 + 1024 bytes),
// so every bit pattern is valid.
unsafe impl aya::Pod for OwnerRecord {}

/// The owner of a pin directory's maps, as recorded there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub db_id: String,
    pub pid: u32,
    pub db: PathBuf,
}

impl PinDir {
    /// Which database the maps here belong to; `None` when no owner is recorded (nothing pinned,
    /// or pinned by a tracker from before the record existed).
    pub fn owner(&self) -> Result<Option<Owner>> {
        let Some(map) = self.open_map(names::OWNER)? else {
            return Ok(None);
        };
        let array = Array::<_, OwnerRecord>::try_from(map).context("the pinned owner record")?;
        let r = array.get(&0, 0).context("reading the pinned owner record")?;
        let id = String::from_utf8_lossy(&r.db_id).trim_end_matches('\0').to_owned();
        if id.is_empty() {
            return Ok(None);
        }
        let len = (r.db_path_len as usize).min(OWNER_PATH_MAX);
        let db = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&r.db_path[..len]));
        Ok(Some(Owner { db_id: id, pid: r.pid, db }))
    }

    /// Records `owner` beside the maps, creating the record's map the first time.
    pub fn set_owner(&self, owner: &Owner) -> Result<()> {
        let path = self.map(names::OWNER);
        if !path.exists() {
            let fd = create_array_map(size_of::<OwnerRecord>() as u32, c"tracker_owner")
                .context("creating the owner record map")?;
            let pinned = obj_pin(fd.as_raw_fd(), &path);
            pinned.with_context(|| format!("pinning {}", path.display()))?;
        }
        let map = self.open_map(names::OWNER)?.ok_or_else(|| anyhow!("{} vanished", path.display()))?;
        let mut array = Array::<_, OwnerRecord>::try_from(map).context("the pinned owner record")?;
        let mut r = OwnerRecord { db_id: [0; 32], pid: owner.pid, db_path_len: 0, db_path: [0; OWNER_PATH_MAX] };
        let id = owner.db_id.as_bytes();
        r.db_id[..id.len().min(32)].copy_from_slice(&id[..id.len().min(32)]);
        let p = owner.db.as_os_str().as_encoded_bytes();
        let n = p.len().min(OWNER_PATH_MAX);
        r.db_path[..n].copy_from_slice(&p[..n]);
        r.db_path_len = n as u32;
        array.set(0, r, 0).context("writing the pinned owner record")
    }
}

// ---- putting the pins back ----

/// Everything a running daemon pinned, by kernel object id: if the pin directory is removed
/// under it (`rm -r`), the objects live on (the daemon holds a file descriptor on each), and
/// [`PinSet::repin`] pins them again at the same paths.
#[derive(Debug)]
pub struct PinSet {
    pins: PinDir,
    objects: Vec<(PathBuf, &'static str, u32)>,
}

impl PinSet {
    /// The maps of the eBPF object and both links, as pinned now.
    pub fn record(pins: &PinDir) -> Result<Self> {
        let mut objects = Vec::new();
        for name in names::ALL_MAPS {
            let path = pins.map(name);
            let info = MapInfo::from_pin(&path).with_context(|| format!("reading {}", path.display()))?;
            objects.push((path, "map_id:", info.id()));
        }
        for name in [PIN_LINK_XDP, PIN_LINK_TC_EGRESS] {
            let path = pins.link(name);
            if path.exists() {
                let link = aya::programs::links::PinnedLink::from_pin(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let id = aya::programs::links::FdLink::from(link).info()?.id();
                objects.push((path, "link_id:", id));
            }
        }
        Ok(Self { pins: pins.clone(), objects })
    }

    /// Whether any recorded pin is gone.
    pub fn any_missing(&self) -> bool {
        !self.pins.0.is_dir() || self.objects.iter().any(|(p, _, _)| !p.exists())
    }

    /// Pins every recorded object that is no longer pinned; returns how many. The directory is
    /// made again if it is gone (on the same bpffs).
    pub fn repin(&self) -> Result<usize> {
        std::fs::create_dir_all(&self.pins.0)
            .with_context(|| format!("creating the pin directory {}", self.pins.0.display()))?;
        let mut n = 0;
        for (path, key, id) in &self.objects {
            if path.exists() {
                continue;
            }
            let (fd, _) = own_fd(key, *id)?
                .ok_or_else(|| anyhow!("this daemon holds no file descriptor on {} (id {id})", path.display()))?;
            obj_pin(fd, path).with_context(|| format!("pinning {} again", path.display()))?;
            n += 1;
        }
        Ok(n)
    }
}

// ---- raw bpf(2) calls aya does not offer (the shared ones are in `sys`) ----

/// `BPF_MAP_CREATE`, `BPF_OBJ_PIN` (include/uapi/linux/bpf.h, enum bpf_cmd).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
/// `BPF_MAP_TYPE_ARRAY` (enum bpf_map_type).
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// A one-entry `BPF_MAP_TYPE_ARRAY` with `u32` keys and `value_size`-byte values.
fn create_array_map(value_size: u32, name: &std::ffi::CStr) -> std::io::Result<std::os::fd::OwnedFd> {
    let mut attr = [0u8; ATTR_BYTES];
    // struct { __u32 map_type, key_size, value_size, max_entries, map_flags, inner_map_fd,
    // numa_node; char map_name[16]; ... }
    for (i, v) in [BPF_MAP_TYPE_ARRAY, 4, value_size, 1].into_iter().enumerate() {
        attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let name = name.to_bytes();
    let n = name.len().min(15);
    attr[28..28 + n].copy_from_slice(&name[..n]);
    let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as RawFd) })
}

/// Pins the BPF object behind `fd` at `path` (on bpffs).
pub(super) fn obj_pin(fd: RawFd, path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = [0u8; ATTR_BYTES];
    // struct { __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags; ... }
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    sys_bpf(BPF_OBJ_PIN, &mut attr).map(drop).context("BPF_OBJ_PIN")
}

/// A file descriptor of this process on the BPF object with `id`, found in /proc/self/fdinfo
/// by its `key` line (`link_id:` or `map_id:`).
pub(super) fn own_fd(key: &str, id: u32) -> Result<Option<(RawFd, String)>> {
    let field = |info: &str| -> Option<u32> {
        info.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok())
    };
    let fdinfo = std::fs::read_dir("/proc/self/fdinfo").context("reading /proc/self/fdinfo")?;
    for entry in fdinfo.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
        if field(&info) == Some(id)
            && let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok())
        {
            return Ok(Some((fd, info)));
        }
    }
    Ok(None)
}
