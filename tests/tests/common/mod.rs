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
