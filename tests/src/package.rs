//! The Debian package and the source install: which files go where (the unit, settings and
//! maintainer scripts of `packaging/`, the binary, a man page made from its `--help`), and
//! building the `.deb` reproducibly with dpkg-deb. `cargo xtask package` and `cargo xtask
//! install` call this, and the package tests build and install exactly what they do.

use anyhow::{Context as _, Result, ensure};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::cmd::run;

/// The systemd unit: the one statement of how the daemon runs and with which capabilities.
pub const UNIT: &str = include_str!("../../packaging/tracker.service");
/// The socket where a root reader serves the WireGuard peers to the unit's user (wireguard-go
/// keeps them from it), and the service each connection starts.
pub const PEERS_SOCKET_UNIT: &str = include_str!("../../packaging/tracker-wireguard-peers.socket");
pub const PEERS_SERVICE_UNIT: &str = include_str!("../../packaging/tracker-wireguard-peers@.service");
/// The settings file shipped as a conffile.
pub const CONFIG: &str = include_str!("../../packaging/tracker.toml");
/// The system user the unit runs as (systemd-sysusers).
pub const SYSUSERS: &str = include_str!("../../packaging/sysusers.conf");
const POSTINST: &str = include_str!("../../packaging/debian/postinst");
const PRERM: &str = include_str!("../../packaging/debian/prerm");
const POSTRM: &str = include_str!("../../packaging/debian/postrm");

/// Where the package puts each file, relative to the root it is installed in.
pub const BIN_PATH: &str = "usr/bin/tracker";
pub const UNIT_PATH: &str = "usr/lib/systemd/system/tracker.service";
pub const PEERS_SOCKET_UNIT_PATH: &str = "usr/lib/systemd/system/tracker-wireguard-peers.socket";
pub const PEERS_SERVICE_UNIT_PATH: &str = "usr/lib/systemd/system/tracker-wireguard-peers@.service";
pub const CONFIG_PATH: &str = "etc/tracker/tracker.toml";
pub const SYSUSERS_PATH: &str = "usr/lib/sysusers.d/tracker.conf";
pub const MAN_PATH: &str = "usr/share/man/man1/tracker.1.gz";
pub const COPYRIGHT_PATH: &str = "usr/share/doc/tracker/copyright";
/// The database directory the unit's StateDirectory= makes, kept on removal, gone on purge.
pub const STATE_DIR: &str = "var/lib/tracker";
/// The source install's places: /usr/local for the binary and man page, /etc for the unit
/// and the user, as the local administrator's own files.
pub const LOCAL_BIN_PATH: &str = "usr/local/bin/tracker";
pub const LOCAL_UNIT_PATH: &str = "etc/systemd/system/tracker.service";
pub const LOCAL_PEERS_SOCKET_UNIT_PATH: &str = "etc/systemd/system/tracker-wireguard-peers.socket";
pub const LOCAL_PEERS_SERVICE_UNIT_PATH: &str = "etc/systemd/system/tracker-wireguard-peers@.service";
pub const LOCAL_SYSUSERS_PATH: &str = "etc/sysusers.d/tracker.conf";
pub const LOCAL_MAN_PATH: &str = "usr/local/share/man/man1/tracker.1.gz";

/// The unit's binary, as ExecStart names it.
const UNIT_BIN: &str = "/usr/bin/tracker";
/// Shared libraries the binary links (Debian's SQLite, not a bundled one; the versions are at
/// least dpkg-shlibdeps', which the package test checks), what the maintainer scripts call
/// (systemd-sysusers, systemctl).
pub const DEPENDS: &str = "libc6 (>= 2.34), libgcc-s1 (>= 4.2), libsqlite3-0 (>= 3.35), systemd";
/// `wg` reads the interface's peers (the daemon, or tracker-wireguard-peers@.service for
/// wireguard-go), so each phone is one device; without it every address is a device of its own.
pub const RECOMMENDS: &str = "wireguard-tools";
const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: tracker\n\nFiles: *\nCopyright: the tracker developers\nLicense: MIT or Apache-2.0\n";
/// Help text width for the man page: fixed, so the page does not depend on the terminal, and
/// under 80 with man's indent.
const HELP_COLUMNS: &str = "72";

/// One build of the package.
#[derive(Clone, Debug)]
pub struct Package {
    /// The release `tracker` binary to ship.
    pub bin: PathBuf,
    /// Debian version, e.g. `0.1.0-1`.
    pub version: String,
    /// Every timestamp in the package (SOURCE_DATE_EPOCH): the commit's time, so two builds
    /// of one commit are the same bytes.
    pub source_date_epoch: u64,
}

impl Package {
    /// `tracker_VERSION_ARCH.deb` in `out_dir`, built from a staging tree beside it.
    pub fn build(&self, out_dir: &Path) -> Result<PathBuf> {
        let arch = run(Command::new("dpkg").arg("--print-architecture"))?.trim().to_owned();
        let name = format!("tracker_{}_{arch}", self.version);
        let stage = out_dir.join(format!("{name}.root"));
        if stage.exists() {
            fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
        }
        self.stage(&stage, &arch)?;
        let deb = out_dir.join(format!("{name}.deb"));
        // --root-owner-group: files are root's whoever builds; SOURCE_DATE_EPOCH dates the ar
        // members and clamps the tar entries; one xz thread, so the bytes do not depend on the
        // builder's core count.
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--threads-max=1", "--build"])
            .arg(&stage)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string()))?;
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
        Ok(deb)
    }

    fn stage(&self, root: &Path, arch: &str) -> Result<()> {
        let man = man_page(&self.bin, &self.version, self.source_date_epoch)?;
        put(root, BIN_PATH, &shipped_binary(&self.bin)?, 0o755)?;
        put(root, UNIT_PATH, UNIT.as_bytes(), 0o644)?;
        put(root, PEERS_SOCKET_UNIT_PATH, PEERS_SOCKET_UNIT.as_bytes(), 0o644)?;
        put(root, PEERS_SERVICE_UNIT_PATH, PEERS_SERVICE_UNIT.as_bytes(), 0o644)?;
        put(root, CONFIG_PATH, CONFIG.as_bytes(), 0o644)?;
        put(root, SYSUSERS_PATH, SYSUSERS.as_bytes(), 0o644)?;
        put(root, MAN_PATH, &man, 0o644)?;
        put(root, COPYRIGHT_PATH, COPYRIGHT.as_bytes(), 0o644)?;
        let md5sums = run(Command::new("sh")
            .current_dir(root)
            .args(["-c", "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 md5sum"]))?;
        let installed_kib = installed_size_kib(root)?;
        put(root, "DEBIAN/control", self.control(arch, installed_kib).as_bytes(), 0o644)?;
        put(root, "DEBIAN/conffiles", format!("/{CONFIG_PATH}\n").as_bytes(), 0o644)?;
        put(root, "DEBIAN/md5sums", md5sums.as_bytes(), 0o644)?;
        put(root, "DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
        put(root, "DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
        put(root, "DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
        normalize(root, SystemTime::UNIX_EPOCH + Duration::from_secs(self.source_date_epoch))
    }

    fn control(&self, arch: &str, installed_kib: u64) -> String {
        format!(
            "Package: tracker\nVersion: {}\nArchitecture: {arch}\nMaintainer: tracker developers <tracker@localhost>\n\
             Installed-Size: {installed_kib}\nDepends: {DEPENDS}\nRecommends: {RECOMMENDS}\nSection: net\nPriority: optional\n\
             Description: see and block the servers the devices behind a WireGuard VPN talk to\n \
             An XDP program on the VPN host's wg0 counts each flow coming from the devices, a TC\n \
             program counts what goes back, and both drop traffic to and from hosts you block.\n \
             A daemon (the tracker service) names flows from the devices' DNS answers and keeps\n \
             them in a SQLite database; the tracker command and a dashboard read it.\n",
            self.version
        )
    }
}

/// The binary as the package ships it: stripped as Debian's policy (10.1) and dh_strip strip
/// it, of its symbol table, `.comment` and `.note` (a sixth of its size; a backtrace then shows
/// addresses, not names). strip's output depends on its input alone, so the package stays
/// reproducible.
pub fn shipped_binary(bin: &Path) -> Result<Vec<u8>> {
    let out =
        std::env::temp_dir().join(format!("tracker-stripped-{}-{:?}", std::process::id(), std::thread::current().id()));
    run(Command::new("strip")
        .args(["--remove-section=.comment", "--remove-section=.note", "--strip-unneeded", "-o"])
        .arg(&out)
        .arg(bin))
    .with_context(|| format!("stripping {}", bin.display()))?;
    let bytes = fs::read(&out).with_context(|| format!("reading {}", out.display()));
    let _ = fs::remove_file(&out);
    bytes
}

/// What `cargo xtask install` puts under `root` (`/` for real): the binary in /usr/local/bin,
/// the unit in /etc/systemd/system (its ExecStart pointed at that binary), the user's
/// sysusers entry, the man page, and the settings file unless one is there already. Returns
/// the paths written. Users, systemd and the service are the caller's.
pub fn install_from_source(bin: &Path, version: &str, root: &Path) -> Result<Vec<PathBuf>> {
    let local_bin = format!("/{LOCAL_BIN_PATH}");
    ensure!(UNIT.contains(&format!("ExecStart={UNIT_BIN} ")), "the unit's ExecStart does not start {UNIT_BIN}");
    let unit = UNIT.replace(&format!("={UNIT_BIN} "), &format!("={local_bin} "));
    let man = man_page(bin, version, now_epoch())?;
    let mut wrote = Vec::new();
    // The binary is replaced by a rename, never rewritten in place: a running daemon keeps
    // its old file, and /usr/local/bin/tracker is never half written. A symlink there (from
    // `cargo xtask build`) is replaced too.
    let target = root.join(LOCAL_BIN_PATH);
    let tmp = target.with_extension("new");
    fs::create_dir_all(target.parent().context("binary path has a parent")?)?;
    fs::copy(bin, &tmp).with_context(|| format!("copying {} to {}", bin.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &target).with_context(|| format!("installing {}", target.display()))?;
    wrote.push(target);
    for (path, bytes) in [
        (LOCAL_UNIT_PATH, unit.as_bytes()),
        (LOCAL_PEERS_SOCKET_UNIT_PATH, PEERS_SOCKET_UNIT.as_bytes()),
        (LOCAL_PEERS_SERVICE_UNIT_PATH, PEERS_SERVICE_UNIT.as_bytes()),
        (LOCAL_SYSUSERS_PATH, SYSUSERS.as_bytes()),
        (LOCAL_MAN_PATH, &man),
    ] {
        wrote.push(put(root, path, bytes, 0o644)?);
    }
    let config = root.join(CONFIG_PATH);
    if !config.exists() {
        wrote.push(put(root, CONFIG_PATH, CONFIG.as_bytes(), 0o644)?);
    }
    Ok(wrote)
}

/// Every value of `key=` in the unit's lines, split at spaces: `unit_values("AmbientCapabilities")`
/// is `["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]`.
pub fn unit_values(key: &str) -> Vec<&'static str> {
    values_in(UNIT, key)
}

/// Every value of `key=` in `unit`'s lines, split at spaces.
pub fn values_in(unit: &'static str, key: &str) -> Vec<&'static str> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).flat_map(str::split_whitespace).collect()
}

/// `bytes` at `root/rel` with `mode`, parents made as needed; returns the path.
fn put(root: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<PathBuf> {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().context("a file path has a parent")?)?;
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(path)
}

/// Directories 0755 and every entry's modification time `at`, so neither the builder's umask
/// nor the time of the build reaches the package.
fn normalize(root: &Path, at: SystemTime) -> Result<()> {
    let times = fs::FileTimes::new().set_modified(at).set_accessed(at);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path.clone());
            } else {
                fs::File::open(&path)?.set_times(times)?;
            }
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        // After its entries: writing them changed the directory's time.
        fs::File::open(&dir)?.set_times(times).with_context(|| format!("dating {}", dir.display()))?;
    }
    Ok(())
}

/// Installed-Size as dpkg-gencontrol counts it: each file's KiB rounded up, each directory
/// one, DEBIAN/ left out.
fn installed_size_kib(root: &Path) -> Result<u64> {
    let mut kib = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name() == "DEBIAN" && dir == root {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_dir() {
                kib += 1;
                stack.push(entry.path());
            } else {
                kib += meta.len().div_ceil(1024);
            }
        }
    }
    Ok(kib)
}

/// tracker(1), gzipped: the top-level `--help` and each command's, as the binary prints them.
pub fn man_page(bin: &Path, version: &str, epoch: u64) -> Result<Vec<u8>> {
    let help = |args: &[&str]| -> Result<String> {
        run(Command::new(bin).args(args).arg("--help").env("COLUMNS", HELP_COLUMNS).env_remove("TRACKER_CONFIG"))
    };
    let top = help(&[])?;
    let commands = command_names(&top);
    ensure!(commands.len() > 10, "found only {commands:?} in `tracker --help`'s Commands");
    let mut page = format!(
        ".TH TRACKER 1 \"{}\" \"tracker {version}\" \"User Commands\"\n.SH NAME\n\
         tracker \\- see and block the servers the devices behind a WireGuard VPN talk to\n.SH DESCRIPTION\n",
        date(epoch)
    );
    verbatim(&mut page, &top);
    page.push_str(".SH COMMANDS\n");
    for c in &commands {
        let _ = writeln!(page, ".SS tracker {c}");
        verbatim(&mut page, &help(&[c])?);
    }
    page.push_str(
        ".SH FILES\n.TP\n/etc/tracker/tracker.toml\nsettings (see \\fB\\-\\-config\\fR)\n.TP\n/var/lib/tracker/tracker.db\n\
         the database\n.TP\n/sys/fs/bpf/tracker\nthe pinned kernel maps and program links\n\
         .SH SEE ALSO\n\\fBsystemctl\\fR(1): the tracker service runs the daemon\n",
    );
    gzip(page.as_bytes())
}

/// The command names of `tracker --help`'s `Commands:` list (not `help`).
fn command_names(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line starts with two spaces then its name; wrapped text is indented more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// `text` as a no-fill block, escaped for roff.
fn verbatim(page: &mut String, text: &str) {
    page.push_str(".nf\n");
    for line in text.lines() {
        let esc = line.replace('\\', "\\e").replace('-', "\\-");
        // A line starting with . or ' would be a request.
        if esc.starts_with('.') || esc.starts_with('\'') {
            page.push_str("\\&");
        }
        page.push_str(&esc);
        page.push('\n');
    }
    page.push_str(".fi\n");
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    // -n: no name or time in the header, so the bytes are the same each time.
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    // gzip's output is read only after its input is written whole: the pipe must not fill, so
    // the writing happens on a thread of its own.
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("waiting for gzip")?;
    writer.join().map_err(|_| anyhow::anyhow!("the thread writing to gzip panicked"))?.context("writing to gzip")?;
    ensure!(out.status.success() && !out.stdout.is_empty(), "gzip failed: {}", out.status);
    Ok(out.stdout)
}

/// YYYY-MM-DD of a Unix time (UTC), by the days-to-civil algorithm (Howard Hinnant's).
fn date(epoch: u64) -> String {
    let z = (epoch / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn now_epoch() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_796_601_600), "2026-12-07");
    }

    #[test]
    fn command_names_skip_wrapped_lines_and_help() {
        let help = "Usage: x\n\nCommands:\n  run      Run the\n           daemon\n  flows    List\n  help     Print\n\nOptions:\n  --db\n";
        assert_eq!(command_names(help), ["run", "flows"]);
    }

    #[test]
    fn the_unit_grants_the_three_capabilities_the_daemon_checks_for() {
        assert_eq!(unit_values("AmbientCapabilities"), ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]);
        assert_eq!(unit_values("CapabilityBoundingSet"), unit_values("AmbientCapabilities"));
        assert_eq!(unit_values("User"), ["tracker"]);
    }

    #[test]
    fn the_peers_socket_is_for_the_daemons_group_and_started_with_it() {
        assert!(unit_values("Wants").contains(&"tracker-wireguard-peers.socket"));
        assert_eq!(values_in(PEERS_SOCKET_UNIT, "SocketGroup"), unit_values("Group"));
        assert_eq!(values_in(PEERS_SOCKET_UNIT, "SocketMode"), ["0660"]);
        assert_eq!(values_in(PEERS_SOCKET_UNIT, "Accept"), ["yes"]);
        assert_eq!(values_in(PEERS_SERVICE_UNIT, "ExecStart"), ["/usr/bin/wg", "show", "all", "allowed-ips"]);
    }
}
