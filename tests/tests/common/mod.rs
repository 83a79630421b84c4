//! The tracker daemon and CLI as the end-to-end tests drive them: the real binary, a database
//! and a pin directory of the test's own, the daemon in the lab's VPN namespace.

#![allow(dead_code, reason = "each test file uses a different part of this harness")]

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use tracker_tests::{ChildGuard, Lab, cmd, tracker_bin};

/// Lab tests run one at a time: each brings up wireguard-go tunnels and measures latencies
/// (a block must bite on the next request), which parallel labs on two cores would distort.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A lab test's start: the serial lock, lab `prefix` up and a tracker for it (not started), or
/// `None` when the test must skip (not root; see `root_or_skip`). Bind all three in this order,
/// `let Some((_serial, lab, t)) = ...`: locals drop in reverse, so the daemon stops before the
/// lab goes down, and the next lab test waits until both are gone.
pub fn lab_with_tracker(prefix: &str) -> Result<Option<(std::sync::MutexGuard<'static, ()>, Lab, Tracker)>> {
    if !tracker_tests::root_or_skip() {
        return Ok(None);
    }
    let serial = serial();
    let lab = Lab::up(prefix)?;
    let tracker = Tracker::new(&lab);
    Ok(Some((serial, lab, tracker)))
}

/// How often the test daemon sweeps flows into SQLite: short, so tests wait little.
pub const SWEEP: &str = "300ms";

pub struct Tracker {
    pub db: PathBuf,
    pub pins: PathBuf,
    pub iface: String,
    daemon: Option<ChildGuard>,
    log: PathBuf,
}

impl Tracker {
    /// A tracker whose database and pins belong to lab `lab`.
    pub fn new(lab: &Lab) -> Self {
        let names = lab.names();
        let dir = names.dir.join("tracker");
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            db: dir.join("tracker.db"),
            pins: PathBuf::from(format!("/sys/fs/bpf/tracker-test-{}", names.prefix)),
            iface: names.vpn_iface.clone(),
            daemon: None,
            log: dir.join("daemon.log"),
        }
    }

    /// `tracker --db .. --pin-dir .. ARGS` (in the host namespace: the CLI needs only the pins).
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tracker_bin());
        c.arg("--db").arg(&self.db).arg("--pin-dir").arg(&self.pins).args(args);
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cli(args).output().expect("run tracker")
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "tracker {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("JSON output")
    }

    /// Starts `tracker run` in the VPN namespace and waits until both programs are attached.
    pub fn start(&mut self, lab: &Lab) -> Result<()> {
        ensure!(self.daemon.is_none(), "daemon already running");
        let mut c = lab.vpn_cmd(tracker_bin());
        c.arg("--db").arg(&self.db).arg("--pin-dir").arg(&self.pins);
        c.args(["run", "--iface", &self.iface, "--sweep-interval", SWEEP, "--log", "debug"]);
        let log = std::fs::File::options().create(true).append(true).open(&self.log)?;
        c.stdout(log.try_clone()?).stderr(log);
        self.daemon = Some(lab.spawn(c)?);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(d) = self.daemon.as_mut()
                && !d.is_running()
            {
                bail!("tracker run exited early:\n{}", self.log_text());
            }
            let s = self.json(&["status"]);
            // After a crash the old links are still pinned: wait for this daemon's own mark.
            let pid = self.daemon.as_ref().map(|d| d.pid().to_string());
            if s["xdp_attached"] == true
                && s["tc_egress_attached"] == true
                && s["attached_pid"].as_str() == pid.as_deref()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("tracker run did not attach within 20 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon with SIGTERM (clean stop: final flush, detach) and checks it exited 0.
    pub fn stop(&mut self) -> Result<()> {
        let d = self.daemon.take().context("no daemon")?;
        let status = d.stop()?;
        ensure!(status.success(), "tracker run exited with {status}:\n{}", self.log_text());
        Ok(())
    }

    /// Kills the daemon without letting it clean up (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        let mut d = self.daemon.take().context("no daemon")?;
        d.signal(libc::SIGKILL)?;
        d.wait_timeout(Duration::from_secs(5))?;
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for two sweeps so what the kernel counted is in SQLite.
    pub fn settle(&self) {
        let sweep = cli_duration(SWEEP);
        std::thread::sleep(sweep * 3);
    }

    /// Flows as JSON objects, all of them.
    pub fn flows(&self) -> Vec<Value> {
        self.json(&["flows", "--limit", "0"]).as_array().unwrap().clone()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.stop();
        }
        // Pins keep maps (and any attached program) alive: remove them with the test.
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

fn cli_duration(s: &str) -> Duration {
    let ms: u64 = s.trim_end_matches("ms").parse().unwrap();
    Duration::from_millis(ms)
}

/// Runs `curl` in the phone namespace; Ok(bytes downloaded) or Err on failure or timeout.
pub fn curl(lab: &Lab, url: &str, timeout_s: u32) -> Result<u64> {
    let out = cmd::run(
        lab.phone_cmd("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time"])
            .arg(timeout_s.to_string())
            .arg(url),
    )?;
    out.trim().parse().with_context(|| format!("curl printed {out:?}"))
}

/// The one flow in `flows` matching remote address, protocol and remote port.
pub fn find_flow<'a>(flows: &'a [Value], remote: &str, protocol: &str, remote_port: u16) -> Vec<&'a Value> {
    flows
        .iter()
        .filter(|f| f["remote"] == remote && f["protocol"] == protocol && f["remote_port"] == remote_port)
        .collect()
}

// ---- DNS and naming (names.rs) ----

impl Tracker {
    /// Whether the daemon this harness started is still running.
    pub fn daemon_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(|d| d.is_running())
    }

    /// `tracker dns --limit 0 ARGS --format json`: every logged exchange matching ARGS.
    pub fn dns(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["dns", "--limit", "0"];
        a.extend_from_slice(args);
        self.json(&a).as_array().expect("tracker dns prints an array").clone()
    }

    /// `tracker domains --limit 0 ARGS --format json`.
    pub fn domains(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["domains", "--limit", "0"];
        a.extend_from_slice(args);
        self.json(&a).as_array().expect("tracker domains prints an array").clone()
    }

    /// `dns_messages` and `dns_malformed` from `tracker status`, once the daemon has published
    /// them.
    pub fn dns_counters(&self) -> Option<(u64, u64)> {
        let s = self.json(&["status"]);
        Some((s["dns_messages"].as_u64()?, s["dns_malformed"].as_u64()?))
    }

    /// Polls `ready` (every 250 ms, at most `timeout`) until it returns true; false on timeout.
    /// For data the daemon writes at its next sweeps: never a blind sleep.
    pub fn wait_for(&self, timeout: Duration, mut ready: impl FnMut(&Tracker) -> bool) -> bool {
        cmd::wait_until("tracker data", timeout, Duration::from_millis(250), || Ok(ready(self))).is_ok()
    }

    /// Stderr of the daemon so far, for failure messages (the last few KB).
    pub fn log_tail(&self) -> String {
        let log = self.log_text();
        let start = log.len().saturating_sub(6000);
        let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
        log[start..].to_owned()
    }
}

/// Source ports for the tests' own DNS clients, unique within this test process, so each
/// exchange can be told apart in `tracker dns` by its client port (and TCP never meets a
/// TIME_WAIT of an earlier exchange). Outside the kernel's ephemeral range's busy start.
pub fn next_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(43_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One DNS question a test asks from the phone with `dig`.
#[derive(Clone, Debug)]
pub struct DigQuery {
    pub server: std::net::IpAddr,
    pub name: String,
    pub qtype: &'static str,
    pub tcp: bool,
    /// The phone's source port (dig's `-b ADDR#PORT`).
    pub port: u16,
}

impl DigQuery {
    /// A query over the family of `server`, from a fresh source port.
    pub fn new(server: std::net::IpAddr, name: &str, qtype: &'static str, tcp: bool) -> Self {
        Self { server, name: name.to_owned(), qtype, tcp, port: next_port() }
    }

    /// The phone's address this query leaves from.
    pub fn client(&self) -> std::net::IpAddr {
        use tracker_tests::lab::{PHONE_V4, PHONE_V6};
        if self.server.is_ipv6() { PHONE_V6.into() } else { PHONE_V4.into() }
    }

    /// The name as `tracker dns` shows it: lower case, no trailing dot.
    pub fn logged_name(&self) -> String {
        self.name.trim_end_matches('.').to_ascii_lowercase()
    }

    pub fn transport(&self) -> &'static str {
        if self.tcp { "tcp" } else { "udp" }
    }
}

/// Runs `q` with dig in the phone namespace (one try, no retransmission, so the exchange is
/// exactly one query and one response); returns the status dig saw (NOERROR, NXDOMAIN, ...).
pub fn dig(lab: &Lab, q: &DigQuery) -> Result<String> {
    let mut c = lab.phone_cmd("dig");
    c.args(["+tries=1", "+time=5", "+noall", "+comments"])
        .arg("-b")
        .arg(format!("{}#{}", q.client(), q.port))
        .arg(format!("@{}", q.server));
    if q.tcp {
        c.arg("+tcp");
    }
    let out = cmd::run(c.args([q.name.as_str(), q.qtype]))?;
    out.lines()
        .find_map(|l| l.split_once("status: "))
        .and_then(|(_, rest)| rest.split(',').next())
        .map(str::to_owned)
        .with_context(|| format!("dig {q:?} printed no status:\n{out}"))
}

/// The `tracker dns` entries of exchange `q` (client, client port, transport and question).
pub fn dns_entries_of<'a>(log: &'a [Value], q: &DigQuery) -> Vec<&'a Value> {
    log.iter()
        .filter(|e| {
            ip_eq(&e["client"], q.client())
                && e["client_port"] == q.port
                && e["transport"] == q.transport()
                && e["name"] == q.logged_name().as_str()
                && e["type"] == q.qtype
        })
        .collect()
}

/// Whether JSON string `v` is the address `ip` (compared as addresses, not text).
pub fn ip_eq(v: &Value, ip: std::net::IpAddr) -> bool {
    v.as_str().and_then(|s| s.parse::<std::net::IpAddr>().ok()) == Some(ip)
}

/// One TCP connection a client made, as curl reports it (`-w`): the flow's 5-tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    pub local: std::net::IpAddr,
    pub local_port: u16,
    pub remote: std::net::IpAddr,
    pub remote_port: u16,
    pub http_code: u16,
}

/// Runs curl (`cmd` is a phone command for program `curl`, e.g. from `lab.phone_cmd` or
/// `lab.phone_cmd_resolving`) with `args`, body discarded, and returns the connection it used.
/// Fails unless the HTTP status is 200.
pub fn curl_conn(mut c: Command, args: &[&str]) -> Result<Conn> {
    c.args(["-sS", "-o", "/dev/null", "--max-time", "10", "-w"])
        .arg("%{local_ip} %{local_port} %{remote_ip} %{remote_port} %{http_code}")
        .args(args);
    let line = cmd::describe(&c);
    let out = cmd::run(&mut c)?;
    let f: Vec<&str> = out.split_whitespace().collect();
    anyhow::ensure!(f.len() == 5, "`{line}` printed {out:?}");
    let conn = Conn {
        local: f[0].parse().with_context(|| format!("`{line}`: {out:?}"))?,
        local_port: f[1].parse()?,
        remote: f[2].parse()?,
        remote_port: f[3].parse()?,
        http_code: f[4].parse()?,
    };
    anyhow::ensure!(conn.http_code == 200, "`{line}`: HTTP {}", conn.http_code);
    Ok(conn)
}

/// The flow of connection `c` in `flows` (TCP, matched on both addresses and ports).
pub fn flow_of<'a>(flows: &'a [Value], c: &Conn) -> Option<&'a Value> {
    flows.iter().find(|f| {
        f["protocol"] == "tcp"
            && ip_eq(&f["client"], c.local)
            && f["client_port"] == c.local_port
            && ip_eq(&f["remote"], c.remote)
            && f["remote_port"] == c.remote_port
    })
}
