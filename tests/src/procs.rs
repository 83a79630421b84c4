//! Finding and stopping processes that are not our children (leftovers of an earlier lab, a
//! daemon a developer started inside a lab namespace) by reading `/proc`. Such processes cannot
//! be reaped by us, so "gone" means vanished or a zombie.

use crate::cmd::{send_signal, wait_until};
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// A process seen in `/proc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    /// argv, split on NULs; empty for kernel threads and processes that vanished meanwhile.
    pub argv: Vec<String>,
}

impl Proc {
    /// The program's file name (argv\[0\] without its directory).
    pub fn program(&self) -> &str {
        self.argv.first().map_or("", |a| a.rsplit('/').next().unwrap_or(a))
    }

    /// The command line joined with spaces, for messages.
    pub fn cmdline(&self) -> String {
        self.argv.join(" ")
    }
}

/// All user-space processes except ourselves. Processes that vanish while we look are skipped.
pub fn all() -> Result<Vec<Proc>> {
    let me = std::process::id();
    let mut procs = Vec::new();
    for entry in fs::read_dir("/proc").context("cannot list /proc")? {
        let Some(pid) = entry.ok().and_then(|e| e.file_name().to_str()?.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> =
            raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !argv.is_empty() {
            procs.push(Proc { pid, argv });
        }
    }
    Ok(procs)
}

/// (device, inode) of a network namespace file such as `/run/netns/NAME` or
/// `/proc/PID/ns/net`; two equal identities are the same namespace.
pub fn netns_id(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The network namespace identity of process `pid`.
pub fn netns_of(pid: u32) -> Option<(u64, u64)> {
    netns_id(Path::new(&format!("/proc/{pid}/ns/net")))
}

/// Processes whose network namespace is the one bind-mounted at `ns_path`.
pub fn in_netns(ns_path: &Path) -> Result<Vec<Proc>> {
    let Some(ns) = netns_id(ns_path) else {
        return Ok(Vec::new());
    };
    Ok(all()?.into_iter().filter(|p| netns_of(p.pid) == Some(ns)).collect())
}

/// Whether `pid` has exited (vanished, or a zombie nobody reaps).
pub fn is_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ") ".
        Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Stops foreign processes: SIGTERM, a grace period, then SIGKILL, waiting (bounded) until each
/// is gone. Returns an error only if one survives SIGKILL.
pub fn stop_all(procs: &[Proc], grace: Duration) -> Result<()> {
    if procs.is_empty() {
        return Ok(());
    }
    for p in procs {
        // It may have exited meanwhile; that is what we want anyway.
        let _ = send_signal(p.pid, libc::SIGTERM);
    }
    let all_gone = || Ok(procs.iter().all(|p| is_gone(p.pid)));
    if wait_until("processes to exit on SIGTERM", grace, Duration::from_millis(50), all_gone).is_ok() {
        return Ok(());
    }
    for p in procs.iter().filter(|p| !is_gone(p.pid)) {
        let _ = send_signal(p.pid, libc::SIGKILL);
    }
    let names: Vec<String> = procs.iter().map(|p| format!("{} ({})", p.pid, p.cmdline())).collect();
    wait_until("processes to die on SIGKILL", Duration::from_secs(5), Duration::from_millis(50), all_gone)
        .with_context(|| format!("processes survived SIGKILL: {}", names.join(", ")))
}
