//! End-to-end: the careless (and a little hostile) user of issue 8. Each test sets up once and
//! tries several careless things against it; every check is recorded, so a failing test lists
//! each bug it still sees (see `crate::common::Checks`). The contract: an error says what to do and
//! changes nothing, nothing the user owns is hidden or taken over, and blocking never switches
//! off while a daemon lives or after it dies.
//!
//! - `careless_setups_without_a_running_daemon_are_refused` (lab tc1): a pin dir not on bpffs
//!   (bug 1), another program's SQLite file (bug 5), unblocking a rule only in the database
//!   (bug 6, first half), `--flow-entries 0` (bug 10, second half).
//! - `a_running_daemon_survives_careless_cli_use_and_a_second_daemon` (tc2): privacy of the
//!   database (bug 11), a closed pipe, the CLI with another `--db` (bug 4) or a `--pin-dir` not on
//!   bpffs (bug 7), unblocking a rule whose kernel entry is gone (bug 6), a second daemon on the
//!   same pins with another database (bug 2).
//! - `a_full_disk_keeps_blocking_and_the_daemon_catches_up` (tc3): bug 3.
//! - `the_daemon_recovers_its_deleted_database_and_pins` (tc4): the database deleted (bug 9),
//!   other map sizes on existing pins (bug 10), the pin directory removed (bug 8).
//!
//! Root only; under CI=true they never skip.

use std::{
    fs,
    io::Write as _,
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    process::Command,
    time::{Duration, Instant},
};

use crate::common::{
    Checks, PinsGuard, Ran, Scratch, attached_pid_is, bpf_mounts, careless_port, contains_ci, curl, daemon_cmd,
    flow_counts, link_ids, map_entries, pinned_link_id, run_bounded, run_cli, show, tracker_with, udp_echoes,
    udp_flows_from, udp_one_each, udp_reachable, xdp_prog_on_vpn,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use tracker_tests::{
    cmd,
    lab::{ECHO_V4, IPERF_V4, PHONE_V4, WEB_V4, http_url},
    tracker_bin,
};

const IPV4_UDP_HEADERS: u64 = 20 + 8;
/// How long a `tracker run` that should be refused may take before the test gives up on it (it
/// is then stopped); the refusal itself must come within [`REFUSED_WITHIN`].
const DAEMON_LIMIT: Duration = Duration::from_secs(8);
const REFUSED_WITHIN: Duration = Duration::from_secs(5);
/// Pin files of the links (tracker::kernel::PIN_LINK_*; spelled out so the test does not move
/// with the code it checks).
const LINK_XDP: &str = "link_xdp";
const LINK_TC: &str = "link_tc_egress";

fn rule_of(ip: std::net::Ipv4Addr) -> String {
    format!("{ip}/32")
}

/// A refused `tracker run`: exited non-zero, soon.
fn check_refused(c: &mut Checks, ran: &Ran, what: &str) {
    c.check(
        ran.exited_nonzero() && ran.elapsed <= REFUSED_WITHIN,
        format!("{what}: want a non-zero exit within {REFUSED_WITHIN:?}, got {}", ran.describe()),
    );
}

/// `status`'s attachment facts, for failure messages.
fn attachment(s: &Value) -> (Value, Value, Value) {
    (s["xdp_attached"].clone(), s["tc_egress_attached"].clone(), s["attached_pid"].clone())
}

fn json_of(ran: &Ran) -> Result<Value> {
    ensure!(ran.exited_ok(), "{}", ran.describe());
    serde_json::from_str(&ran.stdout).with_context(|| ran.describe())
}

/// Bugs 1, 5, 6 (no pins), 10 (`--flow-entries 0`).
#[test]
fn careless_setups_without_a_running_daemon_are_refused() -> Result<()> {
    let Some((_serial, lab, _t)) = crate::common::lab_with_tracker("tc1")? else {
        return Ok(());
    };
    let scratch = Scratch::new("tc1")?;
    let mut c = Checks::new();

    // Bug 1: a pin directory that is not on bpffs. The daemon must refuse with the mount hint,
    // not mount a bpffs over the folder and hide what is in it.
    const SECRET: &str = "precious\n";
    let data = scratch.path("data");
    fs::create_dir_all(&data)?;
    let secret = data.join("secret.txt");
    fs::write(&secret, SECRET)?;
    let mounts_before = bpf_mounts()?;
    let ran = run_bounded(daemon_cmd(&lab, &data.join("t.db"), &data.join("pins"), &[]), DAEMON_LIMIT)?;
    check_refused(&mut c, &ran, "bug 1: run --pin-dir on tmp, not bpffs");
    c.check(ran.says("not on a BPF filesystem"), format!("bug 1: says 'not on a BPF filesystem': {}", ran.describe()));
    c.check(ran.says("mount -t bpf"), format!("bug 1: says how ('mount -t bpf'): {}", ran.describe()));
    let read_back = fs::read_to_string(&secret);
    c.check(
        read_back.as_deref().ok() == Some(SECRET),
        format!("bug 1: secret.txt still readable with its content after the refused start: {read_back:?}"),
    );
    let mounts_after = bpf_mounts()?;
    c.check(
        mounts_after == mounts_before,
        format!("bug 1: no new bpf mount: before {mounts_before:?}, after {mounts_after:?}"),
    );

    // Bug 5: another program's SQLite database is refused by every command, untouched.
    let foreign = scratch.path("customers.db");
    cmd::run(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1])\n\
                 c.execute('create table customers(id integer)')\n\
                 c.execute('insert into customers values (42)')\n\
                 c.commit()\n\
                 c.close()",
            )
            .arg(&foreign),
    )?;
    let original = fs::read(&foreign)?;
    let none_pins = PinsGuard::new("tc1-none");
    let side = |suffix: &str| {
        let mut p = foreign.clone().into_os_string();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    for args in [
        &["flows"][..],
        &["status"],
        &["block-ip", "192.0.2.1"],
        &["blocks"],
        &["dns"],
        &["domains"],
        &["unblock-ip", "192.0.2.1"],
    ] {
        let ran = run_cli(tracker_with(&foreign, &none_pins.0, args))?;
        c.check(
            ran.exited_nonzero(),
            format!("bug 5: {args:?} on another program's database must fail: {}", ran.describe()),
        );
        let now = fs::read(&foreign)?;
        c.check(
            now == original,
            format!("bug 5: {args:?} changed the file ({} bytes, was {})", now.len(), original.len()),
        );
        for s in ["-wal", "-shm", "-journal"] {
            c.check(!side(s).exists(), format!("bug 5: {args:?} created {}", side(s).display()));
        }
    }
    // A read command on a path where there is no database creates neither it nor its folder.
    let nowhere = scratch.path("nowhere");
    let fresh = nowhere.join("fresh.db");
    for args in [&["flows"][..], &["status"], &["blocks"], &["dns"], &["domains"]] {
        let ran = run_cli(tracker_with(&fresh, &none_pins.0, args))?;
        c.check(
            !nowhere.exists(),
            format!("bug 5: {args:?} on a fresh path created {}: {}", nowhere.display(), ran.describe()),
        );
    }

    // Bug 6, first half: no daemon and no pins (a fresh pin dir): a rule that is only in the
    // database is unblocked with success.
    let db6 = scratch.path("b6.db");
    let pins6 = PinsGuard::new("tc1-6a");
    let web = WEB_V4.to_string();
    let ran = run_cli(tracker_with(&db6, &pins6.0, &["block-ip", &web]))?;
    c.check(ran.exited_ok(), format!("bug 6: block-ip with no daemon stores the rule: {}", ran.describe()));
    let ran = run_cli(tracker_with(&db6, &pins6.0, &["unblock-ip", &web]))?;
    c.check(ran.exited_ok(), format!("bug 6: unblock-ip of a rule only in the database exits 0: {}", ran.describe()));
    let blocks = run_cli(tracker_with(&db6, &pins6.0, &["blocks", "--format", "json"]))?;
    let blocks = json_of(&blocks);
    c.check(
        blocks.as_ref().is_ok_and(|b| b.as_array().is_some_and(Vec::is_empty)),
        format!("bug 6: blocks is empty after unblock-ip: {}", show(&blocks)),
    );

    // Bug 10, second half: --flow-entries 0 is an invalid value for clap, said once.
    let pins10 = PinsGuard::new("tc1-fe0");
    let ran =
        run_bounded(daemon_cmd(&lab, &scratch.path("fe0.db"), &pins10.0, &["--flow-entries", "0"]), DAEMON_LIMIT)?;
    check_refused(&mut c, &ran, "bug 10: run --flow-entries 0");
    let said = ran.stderr.to_ascii_lowercase().matches("invalid value").count();
    c.check(said == 1, format!("bug 10: 'invalid value' printed once (got {said} times): {}", ran.describe()));

    c.finish();
    Ok(())
}

/// Bugs 11, the closed pipe, 4, 7, 6 (daemon running, kernel entry gone) and 2, on one running
/// daemon A that blocks WEB_V4. The second daemon comes last: today it breaks A.
#[test]
fn a_running_daemon_survives_careless_cli_use_and_a_second_daemon() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tc2")? else {
        return Ok(());
    };
    let scratch = Scratch::new("tc2")?;
    // A folder that does not exist yet: the daemon creates it, and the database in it.
    let folder = scratch.path("private");
    t.db = folder.join("tracker.db");
    t.start_careless(&lab)?;
    let pid = t.daemon_pid().context("the daemon's pid")?;
    let mut c = Checks::new();
    let (echo, phone) = (ECHO_V4.to_string(), PHONE_V4.to_string());

    // Bug 11: the database and its folder are root's alone.
    let port = careless_port();
    udp_echoes(&lab, IpAddr::V4(PHONE_V4), IpAddr::V4(ECHO_V4), port, 3, 50)?;
    let stored =
        t.wait_for(Duration::from_secs(5), |t| t.try_flows().is_ok_and(|f| udp_flows_from(&f, &echo, port).len() == 1));
    ensure!(stored, "the first flow was not stored: {}", t.log_brief());
    let mode = |p: &std::path::Path| fs::metadata(p).map(|m| m.permissions().mode() & 0o7777);
    let dir_mode = mode(&folder)?;
    c.check(
        dir_mode & 0o077 == 0,
        format!("bug 11: the database folder has mode {dir_mode:o}, want no group/other bits"),
    );
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", t.db.display()));
        let m = mode(&p);
        c.check(
            m.as_ref().is_ok_and(|&m| m == 0o600),
            format!("bug 11: {} has mode {:?}, want 600", p.display(), m.map(|m| format!("{m:o}"))),
        );
    }
    // Precondition: nobody can run tracker and look into the scratch folder, so a refusal below
    // is the database's doing.
    let probe = scratch.path("probe.txt");
    fs::write(&probe, "x")?;
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o644))?;
    cmd::run(Command::new("runuser").args(["-u", "nobody", "--", "cat"]).arg(&probe))
        .context("nobody must see the scratch folder")?;
    cmd::run(Command::new("runuser").args(["-u", "nobody", "--"]).arg(tracker_bin()).arg("--version"))
        .context("nobody must be able to run tracker")?;
    let mut as_nobody = Command::new("runuser");
    as_nobody.args(["-u", "nobody", "--"]).arg(tracker_bin()).arg("--db").arg(&t.db).arg("--pin-dir").arg(&t.pins);
    as_nobody.args(["flows", "--limit", "0", "--format", "json"]);
    let ran = run_cli(as_nobody)?;
    c.check(
        ran.exited_nonzero(),
        format!("bug 11: `runuser -u nobody -- tracker flows` must fail: {}", ran.describe()),
    );
    c.check(
        !ran.stdout.contains(&echo) && !ran.stdout.contains(&phone),
        format!("bug 11: nobody was shown flows: {}", ran.describe()),
    );

    // A closed pipe: `flows | head -1` exits quietly, also with stderr closed (no panic). The
    // listing must be longer than a pipe's buffer (64 KiB) plus what head reads, or tracker
    // would finish writing before head closes the pipe.
    const MANY: usize = 700;
    let ports: Vec<u16> = (0..MANY).map(|_| careless_port()).collect();
    udp_one_each(&lab, ECHO_V4, &ports, 20)?;
    let all_there = t.wait_for(Duration::from_secs(15), |t| t.try_flows().is_ok_and(|f| f.len() > MANY));
    ensure!(all_there, "the {MANY} flows were not stored: {}", t.log_brief());
    for format in [&[][..], &["--format", "json"]] {
        let mut a = vec!["flows", "--limit", "0"];
        a.extend_from_slice(format);
        let full = t.run_with(None, None, &a)?;
        ensure!(
            full.exited_ok() && full.stdout.len() > 100_000,
            "flows {format:?} is too short for the pipe test: {} bytes",
            full.stdout.len()
        );

        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(r#"t="$0" db="$1" p="$2"; shift 2; "$t" --db "$db" --pin-dir "$p" flows --limit 0 "$@" | head -1"#)
            .arg(tracker_bin())
            .arg(&t.db)
            .arg(&t.pins)
            .args(format);
        let ran = run_cli(sh)?;
        c.check(
            !ran.says("broken pipe") && !ran.says("panicked") && ran.stdout.lines().count() == 1,
            format!(
                "closed pipe: `flows {format:?} | head -1` must print one line and nothing on stderr: {}",
                ran.describe()
            ),
        );

        let mut bash = Command::new("bash");
        bash.arg("-c")
            .arg(r#"t="$0" db="$1" p="$2"; shift 2; "$t" --db "$db" --pin-dir "$p" flows --limit 0 "$@" 2>&- | head -1 >/dev/null; echo "${PIPESTATUS[0]}""#)
            .arg(tracker_bin())
            .arg(&t.db)
            .arg(&t.pins)
            .args(format);
        let ran = run_cli(bash)?;
        let status = ran.stdout.trim().to_owned();
        eprintln!("closed pipe: `flows {format:?} 2>&- | head -1`: tracker exited {status}");
        c.check(
            ran.exited_ok() && !status.is_empty() && status != "101",
            format!(
                "closed pipe: `flows {format:?} 2>&- | head -1` must not panic (exit 101): exit {status:?}, {}",
                ran.describe()
            ),
        );
    }

    // A's own block, for what follows.
    let web = WEB_V4.to_string();
    let web_url = http_url(WEB_V4, "small.txt");
    let echo_url = http_url(ECHO_V4, "small.txt");
    let ran = t.run_with(None, None, &["block-ip", &web])?;
    ensure!(ran.exited_ok(), "block-ip {web}: {}", ran.describe());
    ensure!(curl(&lab, &web_url, 1).is_err(), "the blocked host is reachable");
    let block_v4 = t.pins.join("BLOCK_V4");

    // Bug 4: the CLI with another --db and A's pins is refused, and changes nothing.
    let rules_before = t.try_rules()?;
    let kernel_before = map_entries(&block_v4)?;
    let other = scratch.path("other.db");
    let ran = t.run_with(Some(&other), None, &["block-ip", &echo])?;
    c.check(ran.exited_nonzero(), format!("bug 4: block-ip with another --db must fail: {}", ran.describe()));
    c.check(ran.says("belong to"), format!("bug 4: says the maps 'belong to' another database: {}", ran.describe()));
    c.check(!other.exists(), format!("bug 4: {} was created", other.display()));
    c.check(curl(&lab, &echo_url, 5).is_ok(), "bug 4: the host stays reachable");
    let rules = t.try_rules();
    c.check(
        rules.as_ref().ok() == Some(&rules_before),
        format!("bug 4: A's blocks changed: {rules_before:?} -> {}", show(&rules)),
    );
    let kernel = map_entries(&block_v4);
    c.check(
        kernel.as_ref().ok() == Some(&kernel_before),
        format!("bug 4: kernel rules {kernel_before} -> {}", show(&kernel)),
    );

    // Bug 7: a --pin-dir not on bpffs, while the daemon runs elsewhere: refused, naming A's pins.
    let rules_before = t.try_rules()?;
    let not_bpffs = scratch.path("pins-here");
    fs::create_dir_all(&not_bpffs)?;
    let mounts_before = bpf_mounts()?;
    let ran = t.run_with(None, Some(&not_bpffs), &["block-ip", &echo])?;
    c.check(
        ran.exited_nonzero(),
        format!("bug 7: block-ip with a --pin-dir not on bpffs must fail: {}", ran.describe()),
    );
    c.check(ran.says("not on a BPF filesystem"), format!("bug 7: says 'not on a BPF filesystem': {}", ran.describe()));
    let real = t.pins.display().to_string();
    c.check(ran.stderr.contains(&real), format!("bug 7: names the daemon's pin dir {real}: {}", ran.describe()));
    let rules = t.try_rules();
    c.check(
        rules.as_ref().ok() == Some(&rules_before),
        format!("bug 7: the rule was added: {rules_before:?} -> {}", show(&rules)),
    );
    let mounts = bpf_mounts()?;
    c.check(mounts == mounts_before, format!("bug 7: bpf mounts {mounts_before:?} -> {mounts:?}"));

    // Bug 6, second half: the daemon runs, the rule's kernel entry is already gone: unblock-ip
    // reaches its goal, so it succeeds and the rule leaves the database.
    let iperf = IPERF_V4.to_string();
    let ran = t.run_with(None, None, &["block-ip", &iperf])?;
    ensure!(ran.exited_ok(), "block-ip {iperf}: {}", ran.describe());
    let o = IPERF_V4.octets();
    let key: Vec<String> = [32u8, 0, 0, 0, o[0], o[1], o[2], o[3]].iter().map(u8::to_string).collect();
    cmd::run(Command::new("bpftool").args(["map", "delete", "pinned"]).arg(&block_v4).arg("key").args(&key))?;
    let ran = t.run_with(None, None, &["unblock-ip", &iperf])?;
    c.check(ran.exited_ok(), format!("bug 6: unblock-ip of a rule gone from the kernel exits 0: {}", ran.describe()));
    let rules = t.try_rules();
    c.check(
        rules.as_ref().is_ok_and(|r| !r.contains(&rule_of(IPERF_V4)) && r.contains(&rule_of(WEB_V4))),
        format!(
            "bug 6: after unblock-ip, {} is gone and {} stays: {}",
            rule_of(IPERF_V4),
            rule_of(WEB_V4),
            show(&rules)
        ),
    );

    // Bug 2: a second daemon on A's pins with another database is refused, and A goes on.
    let kernel_before = map_entries(&block_v4)?;
    let ran = run_bounded(daemon_cmd(&lab, &scratch.path("second.db"), &t.pins, &[]), DAEMON_LIMIT)?;
    check_refused(&mut c, &ran, "bug 2: a second daemon on the same pins");
    c.check(
        ran.says("is using the pin directory"),
        format!("bug 2: says another daemon 'is using the pin directory': {}", ran.describe()),
    );
    c.check(t.daemon_running(), "bug 2: daemon A still runs");
    let s = t.try_json(&["status"]);
    c.check(
        s.as_ref()
            .is_ok_and(|s| s["xdp_attached"] == true && s["tc_egress_attached"] == true && attached_pid_is(s, pid)),
        format!(
            "bug 2: A still attached (xdp, tc, attached_pid {pid}): {}",
            show(&s.as_ref().map(attachment).map_err(|e| anyhow::anyhow!("{e:#}")))
        ),
    );
    let xdp = xdp_prog_on_vpn(&lab);
    c.check(
        xdp.as_ref().is_ok_and(|x| x.as_deref() == Some("tracker_xdp")),
        format!("bug 2: XDP on the interface: {}", show(&xdp)),
    );
    c.check(curl(&lab, &web_url, 1).is_err(), "bug 2: the host A blocks is reachable");
    let kernel = map_entries(&block_v4);
    c.check(
        kernel.as_ref().ok() == Some(&kernel_before),
        format!("bug 2: kernel rules {kernel_before} -> {}", show(&kernel)),
    );

    c.ok(t.stop(), "daemon A stops cleanly");
    c.finish();
    Ok(())
}

/// Bug 3: the database's disk fills up under a running daemon.
#[test]
fn a_full_disk_keeps_blocking_and_the_daemon_catches_up() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tc3")? else {
        return Ok(());
    };
    lab.set_offloads(false)?;
    let scratch = Scratch::new("tc3")?;
    let disk = scratch.tmpfs("disk", "4m")?;
    t.db = disk.join("tracker.db");
    t.start_careless(&lab)?;
    let mut c = Checks::new();
    let (web, echo) = (WEB_V4.to_string(), ECHO_V4.to_string());
    let web_url = http_url(WEB_V4, "small.txt");
    let ran = t.run_with(None, None, &["block-ip", &web])?;
    ensure!(ran.exited_ok(), "block-ip {web}: {}", ran.describe());
    ensure!(curl(&lab, &web_url, 1).is_err(), "the blocked host is reachable");

    // Fill the tmpfs to the last byte (bounded: twice its size).
    let filler = disk.join("filler");
    let mut file = fs::File::create(&filler)?;
    let chunk = vec![0xa5u8; 64 << 10];
    let mut full = false;
    for _ in 0..(8 << 20) / chunk.len() {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                full = true;
                break;
            }
            Err(e) => return Err(e).context("filling the tmpfs"),
        }
    }
    drop(file);
    ensure!(full, "the 4 MB tmpfs never filled");

    // Traffic while the disk is full: UDP exchanges of known size from a few ports, a curl to
    // a host that is not blocked, and single-datagram flows until the daemon finds it cannot
    // write (a few flows may still fit in pages SQLite already has).
    let mut exchanges: Vec<(u16, u64, u64)> = Vec::new();
    for (n, size) in [(3u64, 100u64), (4, 200), (5, 300)] {
        let port =
            udp_echoes(&lab, IpAddr::V4(PHONE_V4), IpAddr::V4(ECHO_V4), careless_port(), n as usize, size as usize)?;
        exchanges.push((port, n, size));
    }
    c.ok(curl(&lab, &http_url(ECHO_V4, "small.txt"), 5), "a curl while the disk is full");
    let cannot_write = |t: &crate::common::Tracker| contains_ci(&t.log_text(), "cannot write");
    // One batch always, so that catching up is more than one sweep's worth; more while the
    // daemon has not yet found that it cannot write.
    const SINGLE: u64 = 20;
    let mut singles: Vec<u16> = (0..100).map(|_| careless_port()).collect();
    udp_one_each(&lab, ECHO_V4, &singles, SINGLE as usize)?;
    for _ in 0..8 {
        if t.wait_for(Duration::from_secs(2), cannot_write) || !t.daemon_running() {
            break;
        }
        let ports: Vec<u16> = (0..250).map(|_| careless_port()).collect();
        udp_one_each(&lab, ECHO_V4, &ports, SINGLE as usize)?;
        singles.extend(ports);
    }
    eprintln!(
        "full disk: {} single-datagram flows sent before the daemon said it cannot write (100 at least)",
        singles.len()
    );
    c.check(t.daemon_running(), format!("bug 3: the daemon keeps running on a full disk: {}", t.log_brief()));
    c.check(cannot_write(&t), format!("bug 3: the log says it 'cannot write': {}", t.log_brief()));
    c.check(curl(&lab, &web_url, 1).is_err(), "bug 3: the blocked host is reachable while the disk is full");
    c.check(
        !udp_reachable(&lab, WEB_V4, Duration::from_millis(500))?,
        "bug 3: the blocked host echoes while the disk is full",
    );

    // Space comes back: what was counted meanwhile is written, exactly, each flow once.
    fs::remove_file(&filler)?;
    let expected = |flows: &[Value]| -> Vec<String> {
        let mut wrong = Vec::new();
        for &(port, n, size) in &exchanges {
            let found = udp_flows_from(flows, &echo, port);
            let datagram = IPV4_UDP_HEADERS + size;
            let want = (n, n * datagram, n, n * datagram);
            if found.len() != 1 || flow_counts(found[0]) != want {
                wrong.push(format!(
                    "port {port}: want one flow {want:?}, got {:?}",
                    found.iter().map(|f| flow_counts(f)).collect::<Vec<_>>()
                ));
            }
        }
        let datagram = IPV4_UDP_HEADERS + SINGLE;
        let want = (1, datagram, 1, datagram);
        let bad: Vec<u16> = singles
            .iter()
            .copied()
            .filter(|&p| {
                let found = udp_flows_from(flows, &echo, p);
                found.len() != 1 || flow_counts(found[0]) != want
            })
            .collect();
        if !bad.is_empty() {
            wrong.push(format!(
                "{} of {} single-datagram flows missing, doubled or miscounted (ports {:?}...)",
                bad.len(),
                singles.len(),
                &bad[..bad.len().min(5)]
            ));
        }
        let tcp = flows
            .iter()
            .filter(|f| f["protocol"] == "tcp" && f["remote"] == echo.as_str() && f["remote_port"] == 80)
            .count();
        if tcp != 1 {
            wrong.push(format!("want one curl flow to {echo}:80, got {tcp}"));
        }
        wrong
    };
    if t.daemon_running() {
        t.wait_for(Duration::from_secs(10), |t| t.try_flows().is_ok_and(|f| expected(&f).is_empty()));
    }
    match t.try_flows() {
        Ok(flows) => {
            let wrong = expected(&flows);
            c.check(wrong.is_empty(), format!("bug 3: after space returned (10 s): {wrong:?}"));
        }
        Err(e) => {
            c.check(false, format!("bug 3: flows after space returned: {e:#}"));
        }
    }
    c.check(curl(&lab, &web_url, 1).is_err(), "bug 3: the blocked host is reachable after space returned");
    c.ok(t.stop(), "the daemon stops cleanly");
    c.finish();
    Ok(())
}

/// Bugs 9 (database deleted), 10 (other map sizes on existing pins) and 8 (pin dir removed),
/// one after the other on one lab; each starts from a daemon that blocks WEB_V4.
#[test]
fn the_daemon_recovers_its_deleted_database_and_pins() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tc4")? else {
        return Ok(());
    };
    t.start_careless(&lab)?;
    let mut c = Checks::new();
    let (web, echo) = (WEB_V4.to_string(), ECHO_V4.to_string());
    let web_url = http_url(WEB_V4, "small.txt");
    let ran = t.run_with(None, None, &["block-ip", &web])?;
    ensure!(ran.exited_ok(), "block-ip {web}: {}", ran.describe());
    ensure!(curl(&lab, &web_url, 1).is_err(), "the blocked host is reachable");

    // Bug 9: the database deleted under the daemon.
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", t.db.display());
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).context(p),
            _ => {}
        }
    }
    let noticed = t.wait_for(Duration::from_secs(10), |t| contains_ci(&t.log_text(), "was deleted") && t.db.exists());
    c.check(
        noticed,
        format!("bug 9: within 10 s the log says the database 'was deleted' and it exists again: {}", t.log_brief()),
    );
    let listed = t.wait_for(Duration::from_secs(5), |t| t.try_rules().is_ok_and(|r| r.contains(&rule_of(WEB_V4))));
    c.check(listed, format!("bug 9: the new database lists the rule the kernel holds: {}", show(&t.try_rules())));
    let port = careless_port();
    udp_echoes(&lab, IpAddr::V4(PHONE_V4), IpAddr::V4(ECHO_V4), port, 3, 60)?;
    let datagram = IPV4_UDP_HEADERS + 60;
    let counted = t.wait_for(Duration::from_secs(5), |t| {
        t.try_flows().is_ok_and(|f| {
            let found = udp_flows_from(&f, &echo, port);
            found.len() == 1 && flow_counts(found[0]) == (3, 3 * datagram, 3, 3 * datagram)
        })
    });
    c.check(
        counted,
        format!("bug 9: a flow made afterwards is in flows ({} flows listed)", show(&t.try_flows().map(|f| f.len()))),
    );
    c.check(curl(&lab, &web_url, 1).is_err(), "bug 9: the blocked host is reachable");

    // Bug 10: pins of default size from a crashed daemon; a start with other sizes is refused,
    // saying they change only with new pins, and blocking goes on.
    t.kill()?;
    let ran = run_bounded(daemon_cmd(&lab, &t.db, &t.pins, &["--flow-entries", "1024"]), DAEMON_LIMIT)?;
    check_refused(&mut c, &ran, "bug 10: run --flow-entries 1024 on pins of 65536");
    c.check(ran.says("new pins"), format!("bug 10: says sizes change only with 'new pins': {}", ran.describe()));
    c.check(curl(&lab, &web_url, 1).is_err(), "bug 10: the blocked host is reachable after the refused start");

    // Bug 8: `rm -r` of the pin directory under a running daemon: it re-pins within ~3 s, and
    // the programs (and the block) stay in place all along.
    t.start_careless(&lab)?;
    let ran = t.run_with(None, None, &["block-ip", &web])?; // stored already, unless bug 9 lost it
    ensure!(ran.exited_ok(), "block-ip {web}: {}", ran.describe());
    ensure!(curl(&lab, &web_url, 1).is_err(), "the blocked host is reachable");
    let tc_link = pinned_link_id(&t.pins.join(LINK_TC))?;
    fs::remove_dir_all(&t.pins)?;
    let removed = Instant::now();
    let mut repinned: Option<Duration> = None;
    let mut gaps: Vec<String> = Vec::new();
    while removed.elapsed() < Duration::from_secs(5) {
        let at = removed.elapsed();
        let xdp = xdp_prog_on_vpn(&lab)?;
        let links = link_ids()?;
        let pinned_tc = pinned_link_id(&t.pins.join(LINK_TC)).ok();
        let tc_ok = links.contains(&tc_link) || pinned_tc.is_some_and(|id| links.contains(&id));
        let echoed = udp_reachable(&lab, WEB_V4, Duration::from_millis(150))?;
        if xdp.as_deref() != Some("tracker_xdp") || !tc_ok || echoed {
            gaps.push(format!("at {at:?}: xdp {xdp:?}, tc link alive {tc_ok}, blocked host echoed {echoed}"));
        }
        let both = t.pins.join(LINK_XDP).exists() && t.pins.join(LINK_TC).exists();
        if both && repinned.is_none() {
            repinned = Some(removed.elapsed());
        }
        // Watch a little past the re-pin too.
        if repinned.is_some_and(|r| at > r + Duration::from_millis(500)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("pins removed: pinned again after {repinned:?}, {} gaps", gaps.len());
    c.check(
        repinned.is_some_and(|r| r <= Duration::from_secs(3)),
        format!("bug 8: link_xdp and link_tc_egress pinned again within 3 s (after {repinned:?})"),
    );
    c.check(
        gaps.is_empty(),
        format!("bug 8: programs or the block missing after rm -r: {} samples, first {:?}", gaps.len(), gaps.first()),
    );
    c.check(contains_ci(&t.log_text(), "re-pinned"), format!("bug 8: the log says 're-pinned': {}", t.log_brief()));
    let s = t.try_json(&["status"]);
    c.check(
        s.as_ref().is_ok_and(|s| s["xdp_attached"] == true && s["tc_egress_attached"] == true),
        format!(
            "bug 8: status works and shows both programs attached: {}",
            show(&s.as_ref().map(attachment).map_err(|e| anyhow::anyhow!("{e:#}")))
        ),
    );
    c.check(curl(&lab, &web_url, 1).is_err(), "bug 8: the blocked host is reachable after rm -r of the pins");

    c.ok(t.stop(), "the daemon stops cleanly");
    c.finish();
    Ok(())
}
