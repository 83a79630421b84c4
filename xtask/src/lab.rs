//! `cargo xtask lab up|down|status`: the namespace lab of `tracker_tests::lab` for people, kept
//! alive between commands.
//!
//! A [`Lab`] lives as long as the value that owns it, so `lab up` starts a detached keeper
//! (`xtask lab hold`) that builds the lab, owns it and reaps its processes, and tears it down on
//! SIGTERM from `lab down`. Without a keeper, wireguard-go would be orphaned to a PID 1 that,
//! on these VMs, never reaps it. The keeper's pid and log are in [`STATE_DIR`].

use crate::setup;
use anyhow::{Context, Result, bail};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tracker_tests::cmd::{run, send_signal, wait_until};
use tracker_tests::lab::{self, Lab, LabNames, Ns};
use tracker_tests::{procs, zone};

/// Where keepers leave `PREFIX.pid` and `PREFIX.log`.
const STATE_DIR: &str = "/run/tracker-lab";
/// What a keeper prints on stdout once its lab is up.
const READY: &str = "ready";
/// Teardown stops a handful of processes with a few seconds' grace each.
const KEEPER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub fn up(prefix: &str) -> Result<()> {
    setup::ensure_root("lab up")?;
    let names = LabNames::new(prefix)?;
    setup::system_packages()?;
    if let Some(pid) = stop_keeper(prefix)? {
        println!("stopped the keeper (pid {pid}) of the earlier lab {prefix}");
    }
    let pid = start_keeper(prefix)?;
    print_summary(&names, pid);
    Ok(())
}

pub fn down(prefix: &str) -> Result<()> {
    setup::ensure_root("lab down")?;
    let keeper = stop_keeper(prefix)?;
    let removed = Lab::down(prefix)?;
    match (keeper, removed.is_empty()) {
        (None, true) => println!("no lab {prefix} was up"),
        (Some(pid), _) => println!("lab {prefix} is down (its keeper, pid {pid}, tore it down)"),
        (None, false) => println!("lab {prefix} is down"),
    }
    for item in removed {
        println!("  removed {item}");
    }
    Ok(())
}

/// Builds the lab and holds it until SIGTERM, SIGINT or SIGHUP, then tears it down.
pub fn hold(prefix: &str) -> Result<()> {
    let mut lab = Lab::up(prefix)?;
    // The optional parts too: a lab for people should show everything tracker reports on.
    lab.add_second_phone().context("cannot add the second phone")?;
    lab.start_ssh().context("cannot start the SSH server")?;
    lab.start_stun().context("cannot start the STUN server")?;
    // Only now: children inherit a blocked mask, and wireguard-go, the servers and iperf3 must
    // stay stoppable with SIGTERM. A `lab down` during `up` kills us outright instead, and then
    // cleans up by name.
    let signals = block_signals()?;
    let pid_file = state_file(prefix, "pid");
    fs::write(&pid_file, std::process::id().to_string())
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    announce_ready()?;
    let signal = wait_for_signal(&signals)?;
    eprintln!("lab {prefix}: got signal {signal}, tearing down");
    drop(lab);
    let _ = fs::remove_file(&pid_file);
    Ok(())
}

pub fn status() -> Result<()> {
    let prefixes = lab_prefixes()?;
    if prefixes.is_empty() {
        println!("no lab is up (start one with `cargo xtask lab up`)");
    }
    for prefix in prefixes {
        print_status(&LabNames::new(&prefix)?)?;
    }
    Ok(())
}

fn start_keeper(prefix: &str) -> Result<u32> {
    fs::create_dir_all(STATE_DIR).with_context(|| format!("cannot create {STATE_DIR}"))?;
    let log = state_file(prefix, "log");
    let log_file = fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find xtask's own executable")?;
    let mut keeper = Command::new(exe)
        .args(["lab", "hold", "--prefix", prefix])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        // Its own process group, so Ctrl-C in this terminal later does not kill the lab.
        .process_group(0)
        .spawn()
        .context("cannot start the lab keeper")?;
    let stdout = keeper.stdout.take().context("keeper has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("cannot read from the lab keeper")?;
    if line.trim() != READY {
        // It exited without a lab; reap it (it is our child) and show why.
        let status = keeper.wait().context("cannot reap the lab keeper")?;
        let why = fs::read_to_string(&log).unwrap_or_default();
        bail!("lab {prefix} did not come up (keeper {status}):\n{}", why.trim());
    }
    Ok(keeper.id())
}

/// Stops the keeper of lab `prefix`, if one runs, and waits for it to finish tearing down.
fn stop_keeper(prefix: &str) -> Result<Option<u32>> {
    let pid_file = state_file(prefix, "pid");
    let Ok(text) = fs::read_to_string(&pid_file) else {
        return Ok(None);
    };
    let _ = fs::remove_file(&pid_file);
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(None);
    };
    // The pid may have been reused since; only signal a process that is this lab's keeper.
    let is_keeper = |p: &procs::Proc| {
        p.pid == pid
            && p.argv.iter().any(|a| a == "hold")
            && p.argv.windows(2).any(|w| w[0] == "--prefix" && w[1] == prefix)
    };
    if !procs::all()?.iter().any(is_keeper) || procs::is_gone(pid) {
        return Ok(None);
    }
    send_signal(pid, libc::SIGTERM)?;
    let what = format!("the lab keeper (pid {pid}) to tear lab {prefix} down");
    wait_until(&what, KEEPER_STOP_TIMEOUT, Duration::from_millis(100), || Ok(procs::is_gone(pid)))?;
    Ok(Some(pid))
}

fn state_file(prefix: &str, ext: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{prefix}.{ext}"))
}

/// Prints READY, then points stdout at /dev/null: `lab up` stops reading and exits, and a
/// later write to the dead pipe would fail.
fn announce_ready() -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{READY}").and_then(|()| stdout.flush()).context("cannot report readiness")?;
    let null = fs::File::options().write(true).open("/dev/null").context("cannot open /dev/null")?;
    // SAFETY: both descriptors are open; dup2 atomically replaces fd 1.
    let rc = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot detach stdout");
    }
    Ok(())
}

fn block_signals() -> Result<libc::sigset_t> {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc)).context("cannot block signals");
        }
        Ok(set)
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> Result<i32> {
    let mut signal = 0;
    // SAFETY: `set` is an initialised signal set and `signal` a valid out pointer.
    let rc = unsafe { libc::sigwait(set, &mut signal) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc)).context("sigwait failed");
    }
    Ok(signal)
}

/// Prefixes of labs that have a namespace or a keeper.
fn lab_prefixes() -> Result<Vec<String>> {
    let mut prefixes = Vec::new();
    let mut scan = |dir: &str, strip: &dyn Fn(&str) -> Option<String>| {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            if let Some(prefix) = strip(&name).filter(|p| LabNames::new(p).is_ok()) {
                prefixes.push(prefix);
            }
        }
    };
    scan("/run/netns", &|name| ["-phone", "-vpn", "-net"].iter().find_map(|s| name.strip_suffix(s)).map(str::to_owned));
    scan(STATE_DIR, &|name| name.strip_suffix(".pid").map(str::to_owned));
    prefixes.sort();
    prefixes.dedup();
    Ok(prefixes)
}

fn print_status(names: &LabNames) -> Result<()> {
    let prefix = &names.prefix;
    let keeper = fs::read_to_string(state_file(prefix, "pid")).ok();
    match keeper.as_deref().map(str::trim).and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) if !procs::is_gone(pid) => {
            println!("lab {prefix}: kept by pid {pid} (log {})", state_file(prefix, "log").display())
        }
        _ => println!("lab {prefix}: no keeper (a test's lab, or leftovers: `cargo xtask lab down --prefix {prefix}`)"),
    }
    for ns in Ns::ALL {
        let path = names.ns_path(ns);
        // The second phone is optional (a test's lab may have none).
        if !path.exists() && ns == Ns::Phone2 {
            continue;
        }
        if !path.exists() {
            println!("  {}: missing", names.ns_name(ns));
            continue;
        }
        let inside: Vec<String> =
            procs::in_netns(&path)?.iter().map(|p| format!("{} ({})", p.program(), p.pid)).collect();
        // Other users' /proc/PID/ns entries are unreadable, so only root sees who is inside.
        let inside = match (inside.is_empty(), tracker_tests::is_root()) {
            (false, _) => inside.join(", "),
            (true, true) => "none".to_owned(),
            (true, false) => "(run as root to see)".to_owned(),
        };
        println!("  {}: processes: {inside}", names.ns_name(ns));
    }
    if names.ns_path(Ns::Vpn).exists() && tracker_tests::is_root() {
        let shown = run(names.cmd(Ns::Vpn, "wg").args(["show", &names.vpn_iface])).unwrap_or_else(|e| format!("{e:#}"));
        for line in shown.lines().filter(|l| !l.trim().is_empty()) {
            println!("    {line}");
        }
    }
    Ok(())
}

fn print_summary(names: &LabNames, keeper: u32) {
    let p = &names.prefix;
    let (phone, vpn, net) = (names.ns_name(Ns::Phone), names.ns_name(Ns::Vpn), names.ns_name(Ns::Net));
    let hosts: Vec<String> = lab::INTERNET_V4
        .iter()
        .map(ToString::to_string)
        .chain(lab::INTERNET_V6.iter().map(ToString::to_string))
        .collect();
    println!("lab {p} is up (kept by pid {keeper}, log {})", state_file(p, "log").display());
    println!(
        "  {phone}: {} {}/24 {}/64 (wireguard-go), all traffic routed into the tunnel",
        names.phone_iface,
        lab::PHONE_V4,
        lab::PHONE_V6
    );
    println!(
        "  {}: {} {}/24 {}/64 (wireguard-go), a second phone (second peer), routed the same way",
        names.ns_name(Ns::Phone2),
        names.phone2_iface,
        lab::PHONE2_V4,
        lab::PHONE2_V6
    );
    println!(
        "  {vpn}: {} {}/24 {}/64 (wireguard-go), forwarding to the internet without NAT",
        names.vpn_iface,
        lab::VPN_TUN_V4,
        lab::VPN_TUN_V6
    );
    println!(
        "      unbound on {}:53 and [{}]:53 (the on-host resolver), authoritative for {}",
        lab::VPN_TUN_V4,
        lab::VPN_TUN_V6,
        zone::ZONE
    );
    println!("  {net}: hosts {} and the hosts of zone {} (tests/src/zone.rs)", hosts.join(" "), zone::ZONE);
    println!(
        "      each serves HTTP on :{} ({}, {}, {}), UDP echo on :{} and TLS on :{}; iperf3 on {}:{}",
        lab::HTTP_PORT,
        lab::SMALL_TXT,
        lab::FILE_1M,
        lab::FILE_10M,
        lab::UDP_ECHO_PORT,
        lab::TLS_PORT,
        lab::IPERF_V4,
        lab::IPERF_PORT
    );
    println!(
        "      unbound on {} and {} (the upstream resolver, same zone); neither resolver recurses",
        lab::UPSTREAM_DNS_V4,
        lab::UPSTREAM_DNS_V6
    );
    println!(
        "      both resolvers also answer {} real companies' names ({}, ...) with documentation addresses",
        zone::world_client_names().len(),
        zone::world_client_names()[..3].join(", ")
    );
    println!(
        "      ssh (dropbear) on {} and [{}]:{}; STUN (stund) on {}:{}",
        lab::SSH_V4,
        lab::SSH_V6,
        lab::SSH_PORT,
        lab::STUN_V4,
        lab::STUN_PORT
    );
    println!();
    println!("Try it:");
    println!("  ip netns exec {phone} curl {}", lab::http_url(lab::WEB_V4, lab::SMALL_TXT));
    println!("  ip netns exec {phone} curl -o /dev/null {}", lab::http_url(lab::WEB_V6, lab::FILE_1M));
    println!("  echo hello | ip netns exec {phone} socat -T2 - UDP:{}:{}", lab::ECHO_V4, lab::UDP_ECHO_PORT);
    println!("  ip netns exec {phone} ping -c3 {}", lab::ECHO_V6);
    println!("  ip netns exec {phone} iperf3 -c {} -t 5", lab::IPERF_V4);
    println!("Try DNS and TLS (the phone's resolv.conf is {}/resolv.conf):", names.phone_etc_dir.display());
    println!("  ip netns exec {phone} dig @{} {}", lab::VPN_TUN_V4, zone::CHAIN[0]);
    println!("  ip netns exec {phone} dig @{} {} AAAA +tcp", lab::UPSTREAM_DNS_V4, zone::MANY_NAME);
    println!("  ip netns exec {phone} curl http://{}/{}", zone::CHAIN[0], lab::SMALL_TXT);
    println!(
        "  ip netns exec {} curl --cacert {} https://{}/",
        names.ns_name(Ns::Phone2),
        names.tls_cert.display(),
        zone::AKAMAI_CHAIN[0]
    );
    println!("  ip netns exec {phone} ssh -o BatchMode=yes nobody@{}   # banner, then refused", lab::SSH_V4);
    println!("  ip netns exec {phone} stun {} 1", lab::STUN_V4);
    println!(
        "  ip netns exec {phone} curl --cacert {} {}",
        names.tls_cert.display(),
        lab::https_url(zone::TLS_NAME, "/")
    );
    // `tracker`, not a path relative to the repository: `cargo xtask build` links it from
    // /usr/local/bin (see link.rs), so these work from any directory.
    println!("Run tracker on the VPN host's {} (`cargo xtask build` puts it on PATH as", names.vpn_iface);
    println!("/usr/local/bin/tracker -> {}):", crate::target_dir().join("release").join("tracker").display());
    println!("  nsenter --net={} tracker run --iface {}", names.ns_path(Ns::Vpn).display(), names.vpn_iface);
    println!("  (nsenter --net, not `ip netns exec`: that remounts /sys and hides the pins in /sys/fs/bpf)");
    println!("In another shell, use the CLI from the root namespace, as README shows: only the");
    println!("daemon runs inside {vpn}; the CLI needs only the pins and the database:");
    println!("  tracker flows");
    println!("  tracker dns --since 10m");
    println!("  tracker block-ip {}      # the first curl above now fails; unblock-ip undoes it", lab::WEB_V4);
    println!("  tracker status");
    println!("Inspect and finish:");
    println!("  cargo xtask lab status");
    let down_prefix = if p == lab::DEFAULT_PREFIX { String::new() } else { format!(" --prefix {p}") };
    println!("  cargo xtask lab down{down_prefix}");
}
