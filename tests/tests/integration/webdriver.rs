//! A real browser the tests can watch and drive: Debian's chromedriver and headless Chromium,
//! both in a lab namespace (so every request the page makes goes through the tunnel), spoken
//! to over the W3C WebDriver protocol. The protocol is JSON over HTTP, so curl in the same
//! namespace carries it and no client crate is needed; Chromium's own net log records every
//! request the pages made.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};
use tracker_tests::{ChildGuard, Lab, Ns, cmd::run_with_input};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's Chromium headless, and quiet: its own background traffic (its clock, updates,
/// accounts, safe browsing) is not the page's, so it is off and the network log holds the
/// page's requests.
pub const CHROMIUM_FLAGS: [&str; 15] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    "--no-pings",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--allow-browser-signin=false",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,\
AutofillServerCommunication,CertificateTransparencyComponentUpdater",
];
/// chromedriver's port on the namespace's loopback: the lab's namespaces are the test's own.
const PORT: u16 = 9515;
/// How long chromedriver gets to listen, and one command to answer.
const START_WAIT: Duration = Duration::from_secs(20);
const CALL_LIMIT: u32 = 60;
/// How often [`Browser::wait_for`] asks again.
const POLL: Duration = Duration::from_millis(200);

/// A browser session; quit (and chromedriver stopped) when dropped.
pub struct Browser<'a> {
    lab: &'a Lab,
    ns: Ns,
    session: String,
    net_log: PathBuf,
    _driver: ChildGuard,
}

impl<'a> Browser<'a> {
    /// A session in namespace `ns`, a window of `size` (`"390,844"`), Chromium's profile and net
    /// log under `dir`. `None` when chromedriver is not installed (outside CI only).
    pub fn start(lab: &'a Lab, ns: Ns, dir: &Path, size: &str) -> Result<Option<Self>> {
        if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "chromedriver is missing; `cargo xtask setup` installs it"
            );
            println!("skipped the browser: chromedriver or chromium is not installed");
            return Ok(None);
        }
        std::fs::create_dir_all(dir)?;
        let net_log = dir.join("net-log.json");
        let _ = std::fs::remove_file(&net_log);
        let mut driver = lab.cmd(ns, CHROMEDRIVER);
        driver.arg(format!("--port={PORT}"));
        driver.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let driver = ChildGuard::spawn(driver)?;
        let started = Instant::now();
        let mut browser = Self { lab, ns, session: String::new(), net_log: net_log.clone(), _driver: driver };
        while browser.call("GET", "/status", None).is_err() {
            ensure!(started.elapsed() < START_WAIT, "chromedriver did not answer within {START_WAIT:?}");
            std::thread::sleep(POLL);
        }
        let args = CHROMIUM_FLAGS
            .map(String::from)
            .into_iter()
            .chain([
                format!("--window-size={size}"),
                format!("--user-data-dir={}", dir.join("profile").display()),
                format!("--log-net-log={}", net_log.display()),
            ])
            .collect::<Vec<_>>();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
        }}});
        let created = browser.call("POST", "/session", Some(&caps))?;
        browser.session = created["sessionId"].as_str().context("no session id from chromedriver")?.to_owned();
        Ok(Some(browser))
    }

    /// One WebDriver command; its `value`, or an error with chromedriver's message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut c = self.lab.cmd(self.ns, "curl");
        c.args(["-sS", "--max-time", &CALL_LIMIT.to_string(), "-X", method]);
        // Commands other than GET carry a JSON body (an empty object when they need none).
        let input = match method {
            "GET" => String::new(),
            _ => {
                c.args(["-H", "Content-Type: application/json", "--data-binary", "@-"]);
                body.map_or_else(|| "{}".to_owned(), Value::to_string)
            }
        };
        c.arg(format!("http://127.0.0.1:{PORT}{path}"));
        let out = run_with_input(&mut c, input.as_bytes()).with_context(|| format!("WebDriver {method} {path}"))?;
        let v: Value = serde_json::from_str(&out).with_context(|| format!("WebDriver {method} {path}: {out}"))?;
        if let Some(e) = v["value"]["error"].as_str() {
            bail!("WebDriver {method} {path}: {e}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Loads `url` and waits for it.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", Some(&json!({ "url": url })))?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; its return value.
    pub fn eval(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.session_call("POST", "/execute/sync", Some(&json!({ "script": script, "args": args })))
    }

    /// [`Browser::eval`] again until it returns something other than null or false, for at most
    /// `limit`; the last value either way.
    pub fn wait_for(&self, script: &str, args: &[Value], limit: Duration) -> Result<Value> {
        let started = Instant::now();
        loop {
            let v = self.eval(script, args)?;
            if !(v.is_null() || v == Value::Bool(false)) || started.elapsed() > limit {
                return Ok(v);
            }
            std::thread::sleep(POLL);
        }
    }

    /// The page as a PNG.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.session_call("GET", "/screenshot", None)?;
        let b64 = v.as_str().context("no screenshot data")?;
        decode_base64(b64)
    }

    /// Ends the session (Chromium writes its net log out then) and returns the log.
    pub fn quit(mut self) -> Result<Value> {
        self.session_call("DELETE", "", None)?;
        self.session.clear();
        let text = std::fs::read_to_string(&self.net_log).context("reading chromium's net log")?;
        // A browser that is killed leaves the log's closing brackets out; a quit one does not.
        serde_json::from_str(&text).context("chromium's net log is not JSON")
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.session_call("DELETE", "", None);
        }
    }
}

/// Standard base64 (RFC 4648, with padding), as WebDriver sends screenshots.
fn decode_base64(s: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = ALPHABET.iter().position(|a| *a == c).context("not base64")? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
