//! The tracker daemon and CLI as the end-to-end tests drive them: the real binary, a database
//! and a pin directory of the test's own, the daemon in the lab's VPN namespace.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use tracker_tests::{ChildGuard, Lab, Ns, cmd, lab::UDP_ECHO_PORT, tracker_bin};

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
        self.start_with(lab, &[])
    }

    /// [`Tracker::start`] with more `tracker run` options.
    pub fn start_with(&mut self, lab: &Lab, extra: &[&str]) -> Result<()> {
        ensure!(self.daemon.is_none(), "daemon already running");
        let mut c = lab.vpn_cmd(tracker_bin());
        c.arg("--db").arg(&self.db).arg("--pin-dir").arg(&self.pins);
        c.args(["run", "--iface", &self.iface, "--sweep-interval", SWEEP, "--log", "debug"]).args(extra);
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
            // The daemon may be creating its database at this moment (a reader refuses it until
            // it is migrated): such a status is a "not yet", not a failure.
            let s = self.try_json(&["status"]).unwrap_or(Value::Null);
            // After a crash the old links are still pinned: wait for this daemon's own mark.
            let pid = self.daemon.as_ref().map(|d| d.pid());
            if s["xdp_attached"] == true
                && s["tc_egress_attached"] == true
                && pid.is_some_and(|pid| attached_pid_is(&s, pid))
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

/// Sends `n` datagrams of `size` bytes from the phone to the echo server and waits for each
/// echo. Returns the phone's source port.
pub fn udp_exchange(lab: &Lab, phone: IpAddr, server: IpAddr, n: usize, size: usize) -> Result<u16> {
    lab.run_in(Ns::Phone, move || -> Result<u16> {
        let sock = UdpSocket::bind(SocketAddr::new(phone, 0))?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let to = SocketAddr::new(server, UDP_ECHO_PORT);
        let mut buf = vec![0u8; 2048];
        for i in 0..n {
            let payload = vec![i as u8; size];
            sock.send_to(&payload, to)?;
            let (len, _) = sock.recv_from(&mut buf).with_context(|| format!("echo {i} not received"))?;
            anyhow::ensure!(len == size, "echo {i} was {len} bytes");
        }
        Ok(sock.local_addr()?.port())
    })?
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

/// curl (`cmd`, a phone's) to `host`'s first A (with `v6` AAAA) address over HTTP or TLS,
/// the address pinned with `--resolve` (no DNS of its own), trusting the lab's certificate.
pub fn curl_pinned(lab: &Lab, cmd: Command, tls: bool, host: &str, v6: bool) -> Result<Pinned> {
    use tracker_tests::{
        lab::{HTTP_PORT, SMALL_TXT, TLS_PORT},
        zone::{self, QType},
    };
    let addr = zone::resolve(host, if v6 { QType::Aaaa } else { QType::A }).addresses[0];
    let (scheme, port, path) = if tls { ("https", TLS_PORT, "") } else { ("http", HTTP_PORT, SMALL_TXT) };
    let pinned = match addr {
        std::net::IpAddr::V4(a) => format!("{host}:{port}:{a}"),
        std::net::IpAddr::V6(a) => format!("{host}:{port}:[{a}]"),
    };
    let cert = lab.tls_cert.display().to_string();
    let url = format!("{scheme}://{host}/{path}");
    let conn = curl_conn(cmd, &["--cacert", &cert, "--resolve", &pinned, &url])?;
    ensure!(conn.remote == addr, "curl {url} went to {}, not {addr}", conn.remote);
    Ok(Pinned { conn, addr, port, url })
}

/// What [`curl_pinned`] did: the connection, the address and port it went to, its URL.
pub struct Pinned {
    pub conn: Conn,
    pub addr: std::net::IpAddr,
    pub port: u16,
    pub url: String,
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

// ---- careless use (careless.rs) ----

/// Soft assertions for the careless-user tests: each check that fails is recorded with what was
/// seen, the test goes on to the next (one setup serves several bugs), and [`Checks::finish`]
/// panics listing every failure. Checks recorded before an early `?` return are printed when
/// the collector is dropped, so nothing seen is lost.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
    passed: usize,
    finished: bool,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `what` as failed unless `ok`; returns `ok`.
    pub fn check(&mut self, ok: bool, what: impl std::fmt::Display) -> bool {
        if ok {
            self.passed += 1;
        } else {
            let msg = what.to_string();
            eprintln!("CHECK FAILED: {msg}");
            self.failures.push(msg);
        }
        ok
    }

    /// Records a failure for an `Err`; returns the value for an `Ok`.
    pub fn ok<T>(&mut self, r: Result<T>, what: &str) -> Option<T> {
        match r {
            Ok(v) => {
                self.passed += 1;
                Some(v)
            }
            Err(e) => {
                self.check(false, format!("{what}: {e:#}"));
                None
            }
        }
    }

    /// Panics if any check failed, listing them all.
    pub fn finish(mut self) {
        self.finished = true;
        if !self.failures.is_empty() {
            let list: Vec<String> = self.failures.iter().enumerate().map(|(i, f)| format!("{}. {f}", i + 1)).collect();
            panic!(
                "{} of {} checks failed:\n{}",
                self.failures.len(),
                self.failures.len() + self.passed,
                list.join("\n")
            );
        }
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        if !self.finished && !self.failures.is_empty() {
            eprintln!("checks failed before the test stopped early:\n{}", self.failures.join("\n"));
        }
    }
}

/// What one run of a tracker command said and how it ended.
#[derive(Debug)]
pub struct Ran {
    /// `None`: still running when the time was up (it was then stopped).
    pub status: Option<std::process::ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn exited_nonzero(&self) -> bool {
        self.status.is_some_and(|s| !s.success())
    }

    pub fn exited_ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Whether stderr contains `needle`, ignoring ASCII case.
    pub fn says(&self, needle: &str) -> bool {
        contains_ci(&self.stderr, needle)
    }

    /// Exit status and output, for failure messages.
    pub fn describe(&self) -> String {
        let status = self.status.map_or_else(|| "still running, stopped".to_owned(), |s| s.to_string());
        format!(
            "[{status} after {:?}] stdout: {:?} stderr: {:?}",
            self.elapsed,
            tail_chars(&self.stdout, 1500),
            tail_chars(&self.stderr, 3000)
        )
    }
}

/// Case-insensitive (ASCII) substring test.
pub fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_ascii_lowercase().contains(&needle.to_ascii_lowercase())
}

fn tail_chars(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[start..]
}

/// Runs `cmd` with its output in files (a daemon that does not stop cannot block on a full
/// pipe), waits at most `limit` for it to exit, and stops it (SIGTERM, then SIGKILL) if it is
/// still running then.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Ran> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("tracker-careless-out-{}-{n}", std::process::id()));
    let (out_path, err_path) = (base.with_extension("stdout"), base.with_extension("stderr"));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?);
    let started = Instant::now();
    let mut child = ChildGuard::spawn(cmd)?;
    let status = child.wait_timeout(limit)?;
    let elapsed = started.elapsed();
    if status.is_none() {
        child.stop()?;
    } else {
        drop(child);
    }
    let ran = Ran {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed,
    };
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    Ok(ran)
}

/// `tracker --db DB --pin-dir PINS ARGS` in the host namespace.
pub fn tracker_with(db: &std::path::Path, pins: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(tracker_bin());
    c.arg("--db").arg(db).arg("--pin-dir").arg(pins).args(args);
    c
}

/// `tracker --db DB --pin-dir PINS run --iface (the lab's) --sweep-interval SWEEP EXTRA` in the
/// lab's VPN namespace, as the harness starts its daemon.
pub fn daemon_cmd(lab: &Lab, db: &std::path::Path, pins: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = lab.vpn_cmd(tracker_bin());
    c.arg("--db").arg(db).arg("--pin-dir").arg(pins);
    c.args(["run", "--iface", &lab.names().vpn_iface, "--sweep-interval", SWEEP]).args(extra);
    c
}

/// A CLI command's time limit: they all answer at once.
pub const CLI_LIMIT: Duration = Duration::from_secs(20);

/// Runs a short tracker command with [`CLI_LIMIT`].
pub fn run_cli(cmd: Command) -> Result<Ran> {
    run_bounded(cmd, CLI_LIMIT)
}

impl Tracker {
    /// This tracker's CLI with another database and/or pin directory.
    pub fn run_with(&self, db: Option<&std::path::Path>, pins: Option<&std::path::Path>, args: &[&str]) -> Result<Ran> {
        run_cli(tracker_with(db.unwrap_or(&self.db), pins.unwrap_or(&self.pins), args))
    }

    /// `ARGS --format json` on this tracker's database and pins, as an error (not a panic) when
    /// the command fails or prints no JSON.
    pub fn try_json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let ran = self.run_with(None, None, &a)?;
        ensure!(ran.exited_ok(), "tracker {a:?}: {}", ran.describe());
        serde_json::from_str(&ran.stdout).with_context(|| format!("tracker {a:?} printed {:?}", ran.stdout))
    }

    /// `tracker blocks` as the list of rules, in order.
    pub fn try_rules(&self) -> Result<Vec<String>> {
        let v = self.try_json(&["blocks"])?;
        let rows = v.as_array().context("blocks prints an array")?;
        Ok(rows.iter().map(|b| b["rule"].as_str().unwrap_or_default().to_owned()).collect())
    }

    /// `tracker flows --limit 0`, as an error when it fails.
    pub fn try_flows(&self) -> Result<Vec<Value>> {
        let v = self.try_json(&["flows", "--limit", "0"])?;
        v.as_array().cloned().context("flows prints an array")
    }

    /// The pid of the daemon this harness started.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|d| d.pid())
    }
}

/// Whether `status`'s `attached_pid` (a string or a number) is `pid`.
pub fn attached_pid_is(status: &Value, pid: u32) -> bool {
    let v = &status["attached_pid"];
    v.as_u64() == Some(u64::from(pid)) || v.as_str().and_then(|s| s.parse::<u32>().ok()) == Some(pid)
}

/// Source ports the careless tests bind their UDP clients to, unique within the process: each
/// flow is then told apart by its port. Below the ephemeral range, so no connect() takes one.
pub fn careless_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(20_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Sends `n` datagrams of `size` bytes from the phone's `port` (0: any) to the UDP echo server
/// on `server` and waits for each echo (2 s each at most). Returns the source port.
pub fn udp_echoes(
    lab: &Lab,
    phone: std::net::IpAddr,
    server: std::net::IpAddr,
    port: u16,
    n: usize,
    size: usize,
) -> Result<u16> {
    use std::net::{SocketAddr, UdpSocket};
    lab.run_in(tracker_tests::Ns::Phone, move || -> Result<u16> {
        let sock = UdpSocket::bind(SocketAddr::new(phone, port))?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let to = SocketAddr::new(server, tracker_tests::lab::UDP_ECHO_PORT);
        let mut buf = vec![0u8; 2048];
        for i in 0..n {
            sock.send_to(&vec![i as u8; size], to)?;
            let (len, _) = sock.recv_from(&mut buf).with_context(|| format!("echo {i} from {server} not received"))?;
            ensure!(len == size, "echo {i} was {len} bytes");
        }
        Ok(sock.local_addr()?.port())
    })?
}

/// One datagram of `size` bytes from each of `ports` (IPv4) to the echo server on `server`,
/// each waiting for its echo: one flow per port, 1 packet each way.
pub fn udp_one_each(lab: &Lab, server: std::net::Ipv4Addr, ports: &[u16], size: usize) -> Result<()> {
    use std::net::{IpAddr, SocketAddr, UdpSocket};
    let ports = ports.to_vec();
    lab.run_in(tracker_tests::Ns::Phone, move || -> Result<()> {
        let to = SocketAddr::new(IpAddr::V4(server), tracker_tests::lab::UDP_ECHO_PORT);
        let mut buf = vec![0u8; 2048];
        for port in ports {
            let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(tracker_tests::lab::PHONE_V4), port))
                .with_context(|| format!("binding the phone's port {port}"))?;
            sock.set_read_timeout(Some(Duration::from_secs(2)))?;
            sock.send_to(&vec![7u8; size], to)?;
            let (len, _) = sock.recv_from(&mut buf).with_context(|| format!("echo to port {port} not received"))?;
            ensure!(len == size, "echo to port {port} was {len} bytes");
        }
        Ok(())
    })?
}

/// Whether the UDP echo server on `server` (IPv4) answers one datagram from the phone within
/// `wait`: a quick reachability probe (every internet host of the lab echoes on port 9000).
pub fn udp_reachable(lab: &Lab, server: std::net::Ipv4Addr, wait: Duration) -> Result<bool> {
    use std::net::{IpAddr, SocketAddr, UdpSocket};
    lab.run_in(tracker_tests::Ns::Phone, move || -> Result<bool> {
        let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(tracker_tests::lab::PHONE_V4), 0))?;
        sock.set_read_timeout(Some(wait))?;
        sock.send_to(b"probe", SocketAddr::new(IpAddr::V4(server), tracker_tests::lab::UDP_ECHO_PORT))?;
        let mut buf = [0u8; 64];
        Ok(sock.recv_from(&mut buf).is_ok())
    })?
}

/// The UDP flows to `remote` (text) port 9000 from client port `port`.
pub fn udp_flows_from<'a>(flows: &'a [Value], remote: &str, port: u16) -> Vec<&'a Value> {
    flows
        .iter()
        .filter(|f| {
            f["protocol"] == "udp"
                && f["remote"] == remote
                && f["client_port"] == port
                && f["remote_port"] == tracker_tests::lab::UDP_ECHO_PORT
        })
        .collect()
}

/// (packets_up, bytes_up, packets_down, bytes_down) of a flow.
pub fn flow_counts(f: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| f[k].as_u64().unwrap_or(u64::MAX);
    (n("packets_up"), n("bytes_up"), n("packets_down"), n("bytes_down"))
}

/// Mount points of every BPF filesystem, from /proc/self/mounts.
pub fn bpf_mounts() -> Result<Vec<String>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    Ok(mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "bpf").then(|| f[1].to_owned())
        })
        .collect())
}

/// A scratch folder `/tmp/tracker-careless-{name}` (0755, so other users may look in: the
/// privacy test needs that), removed when dropped, after unmounting (lazily) whatever is
/// mounted on it or inside it: a tmpfs of the test's, or a bpffs a careless daemon mounted.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("tracker-careless-{name}"));
        let s = Self { dir };
        s.unmount_all();
        let _ = std::fs::remove_dir_all(&s.dir);
        std::fs::create_dir_all(&s.dir)?;
        std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(s)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Mounts a tmpfs of `size` (e.g. "4m") at `rel` inside the folder.
    pub fn tmpfs(&self, rel: &str, size: &str) -> Result<PathBuf> {
        let at = self.path(rel);
        std::fs::create_dir_all(&at)?;
        cmd::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0755"))
                .arg("tmpfs")
                .arg(&at),
        )?;
        Ok(at)
    }

    /// Mount points at or under the folder, deepest first.
    fn mounts_inside(&self) -> Vec<String> {
        let root = self.dir.display().to_string();
        let mut found: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .filter(|m| *m == root || m.starts_with(&format!("{root}/")))
            .collect();
        found.sort_by_key(|m| std::cmp::Reverse(m.len()));
        found
    }

    fn unmount_all(&self) {
        // Bounded: a mount point stacked several times needs one umount per layer.
        for _ in 0..10 {
            let mounts = self.mounts_inside();
            if mounts.is_empty() {
                return;
            }
            for m in mounts {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.unmount_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A pin directory of a test's own that no harness tracker owns, removed when dropped (pins
/// keep maps, and links keep programs attached).
pub struct PinsGuard(pub PathBuf);

impl PinsGuard {
    /// `/sys/fs/bpf/tracker-test-{name}`, absent at first.
    pub fn new(name: &str) -> Self {
        let p = PathBuf::from(format!("/sys/fs/bpf/tracker-test-{name}"));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for PinsGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Entries in a pinned map, counted by bpftool (the kernel's own view of e.g. a block trie).
pub fn map_entries(map: &std::path::Path) -> Result<usize> {
    let out = cmd::run(Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(map))?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("bpftool map dump said {out}"))?;
    Ok(v.as_array().context("bpftool prints an array")?.len())
}

/// The id of the BPF link pinned at `path`.
pub fn pinned_link_id(path: &std::path::Path) -> Result<u64> {
    let out = cmd::run(Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(path))?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("bpftool said {out}"))?;
    v["id"].as_u64().context("link id")
}

/// Ids of every BPF link in the kernel (a link exists while it is attached or referenced).
pub fn link_ids() -> Result<Vec<u64>> {
    let out = cmd::run(Command::new("bpftool").args(["-j", "link", "show"]))?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("bpftool said {out}"))?;
    Ok(v.as_array().context("an array")?.iter().filter_map(|l| l["id"].as_u64()).collect())
}

/// The name of the XDP program attached to the lab's VPN interface, as `ip -d link` shows it.
pub fn xdp_prog_on_vpn(lab: &Lab) -> Result<Option<String>> {
    let out = cmd::run(lab.vpn_cmd("ip").args(["-j", "-d", "link", "show", "dev", &lab.names().vpn_iface]))?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v[0]["xdp"]["prog"]["name"].as_str().map(str::to_owned))
}

/// A result for a failure message: the value, or the error with its causes (no backtrace).
pub fn show<T: std::fmt::Debug>(r: &Result<T>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("error: {e:#}"),
    }
}

impl Tracker {
    /// The daemon log's last lines of level INFO and above, and its final error, for failure
    /// messages.
    pub fn log_brief(&self) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                [" INFO ", " WARN ", " ERROR "].iter().any(|k| l.contains(k))
                    || l.starts_with("tracker:")
                    || l.starts_with("Error")
            })
            .collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }
}

impl Tracker {
    /// [`Tracker::start`] for the careless tests: the same daemon, but `attached_pid` may be a
    /// number or a string, and a `status` that fails while the daemon is still creating its
    /// database is asked again (within the same 20 s).
    pub fn start_careless(&mut self, lab: &Lab) -> Result<()> {
        ensure!(self.daemon.is_none(), "daemon already running");
        let mut c = daemon_cmd(lab, &self.db, &self.pins, &["--log", "debug"]);
        let log = std::fs::File::options().create(true).append(true).open(&self.log)?;
        c.stdout(log.try_clone()?).stderr(log);
        self.daemon = Some(lab.spawn(c)?);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if !self.daemon_running() {
                bail!("tracker run exited early:\n{}", self.log_brief());
            }
            let pid = self.daemon_pid().unwrap_or(0);
            let last = match self.try_json(&["status"]) {
                Ok(s) if s["xdp_attached"] == true && s["tc_egress_attached"] == true && attached_pid_is(&s, pid) => {
                    return Ok(());
                }
                Ok(s) => format!("{s}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("tracker run did not attach within 20 s (last status: {last}):\n{}", self.log_brief());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
