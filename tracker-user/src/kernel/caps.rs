//! The capabilities tracker needs, checked from the process's effective set rather than its
//! user id: the daemon may run as root or, under its systemd unit, with only these.

use anyhow::{Context as _, Result, bail};

/// A capability (numbers from `linux/capability.h`), with what tracker uses it for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Cap {
    NetAdmin = 12,
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl Cap {
    pub fn name(self) -> &'static str {
        match self {
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Perfmon => "CAP_PERFMON",
            Cap::Bpf => "CAP_BPF",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Cap::NetAdmin => "to attach the programs to the interface (XDP, TC) and read its WireGuard peers",
            Cap::SysAdmin => "to mount the BPF filesystem at /sys/fs/bpf (mount it once beforehand instead)",
            // The verifier allows the programs' pointer arithmetic on packet and map memory and
            // the ring buffer only with CAP_PERFMON (kernel/bpf/syscall.c, bpf_token_capable).
            Cap::Perfmon => "for the kernel to accept the programs (their packet and map pointers, the ring buffer)",
            Cap::Bpf => "to load the programs and create, pin and update their maps",
        }
    }
}

/// What `tracker run` needs, and what a command that changes the kernel's maps needs.
pub const DAEMON: [Cap; 3] = [Cap::Bpf, Cap::Perfmon, Cap::NetAdmin];
pub const MAPS: [Cap; 1] = [Cap::Bpf];

/// The effective capability set, from `/proc/self/status` (`CapEff`, hex).
pub fn effective() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let hex = text.lines().find_map(|l| l.strip_prefix("CapEff:")).context("no CapEff in /proc/self/status")?;
    u64::from_str_radix(hex.trim(), 16).context("CapEff is not hex")
}

/// Whether every capability of `caps` is effective.
pub fn has(caps: &[Cap]) -> bool {
    effective().is_ok_and(|eff| missing(eff, caps).is_empty())
}

fn missing(eff: u64, caps: &[Cap]) -> Vec<Cap> {
    caps.iter().copied().filter(|c| eff & (1u64 << *c as u8) == 0).collect()
}

/// Fails, naming each missing capability and what it is for, unless all of `caps` are
/// effective.
pub fn require(what: &str, caps: &[Cap]) -> Result<()> {
    let gone = missing(effective()?, caps);
    if gone.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = gone.iter().map(|c| format!("{} ({})", c.name(), c.why())).collect();
    bail!(
        "{what} lacks {}: run it as root (sudo), or give it {} (the systemd unit does)",
        list.join(", "),
        caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named_with_their_use() {
        let all = (1u64 << 12) | (1u64 << 38) | (1u64 << 39);
        assert!(missing(all, &DAEMON).is_empty());
        assert_eq!(missing(all & !(1u64 << 38), &DAEMON), [Cap::Perfmon]);
        assert_eq!(missing(0, &MAPS), [Cap::Bpf]);
    }
}
