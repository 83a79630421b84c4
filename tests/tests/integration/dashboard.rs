//! The dashboard (issue 13's first slice) in the lab: the daemon serves it on the VPN host's
//! tunnel addresses. The first page, fetched by curl on one phone through the WireGuard tunnel,
//! shows exactly the traffic the test made on the other phone (connections, bytes, timeline,
//! companies), names from the network (a DNS question, an HTTP Host) escaped, what a rule
//! refused, and the strict headers on every response. A host outside the VPN gets nothing, not
//! even an HTTP status, whether it aims at the tunnel address or at an address the dashboard
//! was told to listen on; a page asked for under another host name (DNS rebinding) is refused.
//! `tracker dashboard` prints the address; `--no-dashboard` turns it off.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use tracker::web::{dashboard, svg::escape};
use tracker_tests::{
    Lab, Ns,
    cmd::run,
    lab::{PHONE2_V4, VPN_TUN_V4, VPN_TUN_V6, VPN_UPLINK_V4, WEB_V4},
    zone,
};

use crate::common::{Checks, DigQuery, Tracker, curl_pinned, dig, run_bounded};
use crate::webdriver::{CHROMIUM, CHROMIUM_FLAGS};

const PORT: u16 = dashboard::DEFAULT_PORT;
/// The only script a page may carry: the dashboard's own live-update file.
pub(crate) const OWN_SCRIPT: &str = "<script src=\"/static/live.js\" defer></script>";
/// An HTTP Host a hostile app could send: quotes, an event handler, an ampersand. It is a
/// valid RFC 3986 host, so tracker names the flow by it, and (a made-up domain) its company
/// line is the name itself.
const HOSTILE_HOST: &str = "a'onmouseover=alert(1)&x.example";
/// A DNS question's first label that is markup; the on-host resolver answers NXDOMAIN.
const HOSTILE_LABEL: &str = "<img/src=x/onerror=alert(1)>";
/// The name the rule refuses, asked by the first phone.
const REFUSED: &str = zone::WWW_NETFLIX;
/// How long the daemon gets to store and name the test's traffic.
const WAIT: Duration = Duration::from_secs(30);

/// An HTTP answer as curl saw it.
pub(crate) struct Fetched {
    pub code: u16,
    /// The header lines, lower-cased names as sent.
    pub headers: String,
    pub body: String,
}

impl Fetched {
    /// The value of header `name` (case ignored), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `curl -i URL` in namespace `ns`, with `extra` options.
pub(crate) fn fetch(lab: &Lab, ns: Ns, url: &str, extra: &[&str]) -> Result<Fetched> {
    let mut c = lab.cmd(ns, "curl");
    c.args(["-sS", "-i", "--max-time", "10"]).args(extra).arg(url);
    let out = run(&mut c).with_context(|| format!("fetching {url} from {ns:?}"))?;
    let (head, body) = out.split_once("\r\n\r\n").with_context(|| format!("{url}: no header end in {out:?}"))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("{url}: {head}"))?;
    Ok(Fetched { code, headers: head.to_owned(), body: body.to_owned() })
}

/// curl from `ns` that must get nothing at all: no HTTP status, not one byte. Returns curl's
/// exit status, for the message.
fn nothing(lab: &Lab, ns: Ns, url: &str) -> Result<String> {
    let mut c = lab.cmd(ns, "curl");
    c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--max-time", "5", url]);
    let ran = run_bounded(c, Duration::from_secs(15))?;
    ensure!(ran.exited_nonzero(), "curl {url} from {ns:?} succeeded: {}", ran.describe());
    ensure!(ran.stdout.trim() == "000 0", "curl {url} from {ns:?} got a response: {}", ran.describe());
    Ok(ran.describe())
}

/// The `value` of the `<data>` in the headline box `id`.
pub(crate) fn headline(body: &str, id: &str) -> Option<u64> {
    let at = body.find(&format!("id=\"{id}\"><data class=\"value\" value=\""))?;
    let rest = &body[at..];
    let rest = &rest[rest.find("value=\"")? + 7..];
    rest[..rest.find('"')?].parse().ok()
}

/// The section `id` of the page.
pub(crate) fn section<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body.find(&format!("<section id=\"{id}\"")).unwrap_or(body.len());
    let end = body[start..].find("</section>").map_or(body.len(), |e| start + e);
    &body[start..end]
}

/// The timeline's columns' values, from each column's title (`... UTC: 1 234`).
pub(crate) fn timeline_values(body: &str) -> Vec<u64> {
    section(body, "timeline")
        .split("<rect class=\"column\"")
        .skip(1)
        .filter_map(|col| {
            let title = &col[col.find("<title>")? + 7..col.find("</title>")?];
            let value: String = title.rsplit(": ").next()?.chars().filter(char::is_ascii_digit).collect();
            value.parse().ok()
        })
        .collect()
}

/// The phone's flows, once `want` of them are stored and the hostile Host named one of them.
fn phone2_flows(t: &Tracker, key: &str, want: usize) -> Result<Vec<Value>> {
    let mut last = Vec::new();
    let done = t.wait_for(WAIT, |t| {
        last = t
            .try_json(&["flows", "--limit", "0", "--client", key])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        last.len() == want && last.iter().any(|f| f["name_source"] == "http" && f["site"].is_string())
    });
    ensure!(done, "the second phone's {want} flows (one named by the hostile Host) never appeared: {last:#?}");
    Ok(last)
}

/// The URL of the first page for the second phone (its key percent-encoded).
fn page_for(key: &str) -> String {
    let key: String = key
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    format!("http://{VPN_TUN_V4}:{PORT}/?device={key}")
}

#[test]
fn the_first_page_through_the_tunnel_shows_what_the_phone_did_and_strangers_get_nothing() -> Result<()> {
    let Some((_serial, mut lab, mut t)) = crate::common::lab_with_tracker("td1")? else {
        return Ok(());
    };
    lab.add_second_phone().context("adding the second phone")?;
    // The uplink address too: reachable from the internet namespace, where the gate must
    // refuse it by itself.
    t.start_with(&lab, &["--dashboard-listen", &VPN_UPLINK_V4.to_string()])?;
    let key2 = lab.phone_public_key(Ns::Phone2)?;
    t.ok(&["block-domain", REFUSED]);

    // The first phone asks for the blocked name: the kernel refuses it.
    let q = DigQuery::new(VPN_TUN_V4.into(), REFUSED, "A", false);
    ensure!(dig(&lab, &q)? == "NXDOMAIN", "{REFUSED} was not refused");

    // The second phone: three HTTP requests to Apple, one TLS to Google, one HTTP request with a
    // hostile Host, one DNS question with a hostile name. Six flows.
    for _ in 0..3 {
        curl_pinned(&lab, lab.cmd(Ns::Phone2, "curl"), false, zone::WWW_APPLE, false)?;
    }
    curl_pinned(&lab, lab.cmd(Ns::Phone2, "curl"), true, zone::WWW_GOOGLE, false)?;
    let hostile_url = format!("http://{WEB_V4}/{}", tracker_tests::lab::SMALL_TXT);
    run(lab
        .cmd(Ns::Phone2, "curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10", "-H"])
        .arg(format!("Host: {HOSTILE_HOST}"))
        .arg(&hostile_url))?;
    let hostile_q = format!("{HOSTILE_LABEL}.lab.test");
    let mut d = lab.cmd(Ns::Phone2, "dig");
    d.args(["+tries=1", "+time=5", "-b", &PHONE2_V4.to_string(), &format!("@{VPN_TUN_V4}"), &hostile_q, "A"]);
    let answer = run(&mut d)?;
    ensure!(answer.contains("status: NXDOMAIN"), "dig {hostile_q}: {answer}");
    let flows = phone2_flows(&t, &key2, 6)?;
    // Names are kept in DNS presentation form (the parentheses escaped), and the company line
    // of a name no entry knows is its registrable domain.
    let hostile_site = flows
        .iter()
        .find(|f| f["name_source"] == "http")
        .and_then(|f| f["site"].as_str())
        .context("the hostile Host's flow has no site")?
        .to_owned();
    ensure!(hostile_site.contains("onmouseover=alert"), "the hostile Host's site: {hostile_site}");
    let bytes: u64 =
        flows.iter().map(|f| f["bytes_up"].as_u64().unwrap_or(0) + f["bytes_down"].as_u64().unwrap_or(0)).sum();
    let logged = t.dns(&["--client", &key2]);
    let hostile_name = logged
        .iter()
        .find_map(|e| e["name"].as_str().filter(|n| n.contains("onerror")))
        .with_context(|| format!("the hostile question is not in the DNS log: {logged:#?}"))?
        .to_owned();

    let mut c = Checks::new();
    // The second phone's page, from the first phone, through the tunnel.
    let page = fetch(&lab, Ns::Phone, &page_for(&key2), &[])?;
    c.check(page.code == 200, format!("first page: HTTP {}", page.code));
    let body = &page.body;
    c.check(
        headline(body, "connections") == Some(6),
        format!("connections: expected 6, measured {:?}", headline(body, "connections")),
    );
    c.check(
        headline(body, "bytes") == Some(bytes),
        format!("bytes: expected {bytes}, measured {:?}", headline(body, "bytes")),
    );
    let columns = timeline_values(body);
    c.check(columns.len() == 24 || columns.len() == 25, format!("24 h of hourly columns: {}", columns.len()));
    c.check(columns.iter().sum::<u64>() == 6, format!("the timeline adds up to 6: {columns:?}"));
    let companies = section(body, "companies");
    c.check(
        companies.contains("<title>Apple: 3 · 50.0 %</title>"),
        format!("Apple 3 of 6 in the company chart: {companies}"),
    );
    c.check(companies.contains("<title>Google: 1 · 16.7 %</title>"), "Google 1 of 6 in the company chart");
    // Names from the network, escaped, and nowhere raw.
    let host_escaped = escape(&hostile_site);
    c.check(
        body.contains(&format!("<title>{host_escaped}: 1 ·")),
        format!("the hostile Host, escaped, as a company line ({host_escaped})"),
    );
    c.check(
        section(body, "domains").contains(&escape(&hostile_name)),
        format!("the hostile question, escaped: {}", escape(&hostile_name)),
    );
    for raw in ["<img", "onerror=alert(1)>", "a'onmouseover"] {
        c.check(!body.contains(raw), format!("{raw:?} raw in the page"));
    }
    c.check(body.contains(&format!("aria-current=\"page\">{PHONE2_V4}</a>")), "the second phone is the chosen device");
    for (name, want) in [
        ("content-security-policy", dashboard::CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("content-type", "text/html; charset=utf-8"),
    ] {
        c.check(
            page.header(name) == Some(want),
            format!("{name}: expected {want:?}, measured {:?}", page.header(name)),
        );
    }
    let csp = dashboard::CSP;
    c.check(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"),
        csp,
    );
    // Nothing the page refers to is elsewhere: the one link is the stylesheet, on this server.
    let lower = body.to_ascii_lowercase();
    for outside in ["http://", "https://", "//", "style=", "<img", "<iframe", "url("] {
        let found = lower.matches(outside).count();
        c.check(found == 0, format!("{outside:?} {found} times in the page"));
    }
    // One script: the dashboard's own file (live updates), no inline one.
    c.check(
        lower.matches("<script").count() == 1 && body.contains(OWN_SCRIPT),
        format!("the one script is {OWN_SCRIPT}"),
    );
    c.check(body.contains("<link rel=\"stylesheet\" href=\"/static/dashboard.css\">"), "the stylesheet link");

    // Every device: the first phone's refused query, by rule, and the rule's own count.
    let all = format!("http://{VPN_TUN_V4}:{PORT}/");
    let mut shown = None;
    let counted = t.wait_for(WAIT, |_| {
        shown = fetch(&lab, Ns::Phone, &all, &[]).ok();
        shown.as_ref().is_some_and(|p| section(&p.body, "blocked").contains("<span class=\"num\">queries refused: 1 ·"))
    });
    let blocked = shown.as_ref().map(|p| section(&p.body, "blocked").to_owned()).unwrap_or_default();
    c.check(counted, format!("the rule's count of 1 refused query: {blocked}"));
    if let Some(p) = &shown {
        c.check(headline(&p.body, "refused") == Some(1), format!("refused: {:?}", headline(&p.body, "refused")));
    }
    c.check(
        blocked.contains(&format!(
            "<span class=\"name\">domain {REFUSED}</span><span class=\"num\">1 refused, 1 device</span>"
        )),
        format!("refusals by rule: {blocked}"),
    );

    // Other doors: IPv6, the stylesheet, localhost on the host, the extra address.
    for (ns, url, what) in [
        (Ns::Phone, format!("http://[{VPN_TUN_V6}]:{PORT}/"), "the tunnel's IPv6 address"),
        (Ns::Vpn, format!("http://127.0.0.1:{PORT}/"), "localhost on the VPN host"),
        (Ns::Phone, format!("http://{VPN_UPLINK_V4}:{PORT}/"), "a peer on the extra address"),
    ] {
        let f = fetch(&lab, ns, &url, &[])?;
        c.check(f.code == 200 && f.body.contains("What your devices talked to"), format!("{what}: HTTP {}", f.code));
    }
    let css = fetch(&lab, Ns::Phone, &format!("http://{VPN_TUN_V4}:{PORT}/static/dashboard.css"), &[])?;
    c.check(
        css.code == 200 && css.header("content-type") == Some("text/css; charset=utf-8"),
        format!("css: {} {:?}", css.code, css.header("content-type")),
    );
    c.check(css.body.contains("prefers-color-scheme: dark"), "the stylesheet has a dark mode");
    c.check(css.header("content-security-policy") == Some(dashboard::CSP), "the stylesheet's CSP");
    let missing = fetch(&lab, Ns::Phone, &format!("http://{VPN_TUN_V4}:{PORT}/nothing-here"), &[])?;
    c.check(
        missing.code == 404 && missing.header("content-security-policy") == Some(dashboard::CSP),
        format!("404 with headers: {}", missing.code),
    );
    let bad = fetch(&lab, Ns::Phone, &format!("http://{VPN_TUN_V4}:{PORT}/?period=%3Cb%3E"), &[])?;
    c.check(bad.code == 400 && !bad.body.contains("<b>"), format!("a bad period: HTTP {} {:?}", bad.code, bad.body));
    // DNS rebinding: the browser names the attacker's host.
    let rebound = fetch(&lab, Ns::Phone, &all, &["-H", &format!("Host: evil.example:{PORT}")])?;
    c.check(
        rebound.code == 403 && rebound.body.is_empty(),
        format!("another Host: HTTP {} {:?}", rebound.code, rebound.body),
    );
    c.check(rebound.header("content-security-policy") == Some(dashboard::CSP), "the 403's CSP");

    // Strangers: the internet host, at the tunnel address (tied to wg0) and at the address the
    // dashboard listens on for everyone: nothing comes back.
    for url in [all.clone(), format!("http://{VPN_UPLINK_V4}:{PORT}/")] {
        if let Err(e) = nothing(&lab, Ns::Net, &url) {
            c.check(false, format!("a stranger at {url}: {e:#}"));
        }
    }

    // A real browser on the phone, through the tunnel.
    in_chromium(&mut c, &lab, &page_for(&key2), &hostile_site)?;

    // `tracker dashboard`, as the user runs it on the VPN host.
    let printed = t.ok(&["dashboard"]);
    c.check(printed.contains(&format!("  http://{VPN_TUN_V4}:{PORT}/\n")), format!("tracker dashboard: {printed}"));
    c.check(
        printed.contains(&format!("(http://{VPN_TUN_V4}:{PORT}/)")) && printed.contains('█'),
        "the QR code of the IPv4 address",
    );
    c.check(printed.contains(&format!("http://127.0.0.1:{PORT}/")), "the host's own address");
    c.finish();

    // Off: nothing listens, and `tracker dashboard` says why.
    t.stop()?;
    t.start_with(&lab, &["--no-dashboard"])?;
    nothing(&lab, Ns::Phone, &all).context("--no-dashboard")?;
    let off = t.output(&["dashboard"]);
    let said = String::from_utf8_lossy(&off.stderr);
    ensure!(!off.status.success() && said.contains("without the dashboard"), "tracker dashboard with it off: {said}");
    t.stop()?;
    Ok(())
}

/// Screen sizes of the screenshots: a 390 px phone, a desktop.
const SCREENS: [(&str, &str); 2] = [("dashboard-phone.png", "390,2600"), ("dashboard-desktop.png", "1280,1800")];

/// Debian's headless Chromium in the first phone's namespace loads `url` through the tunnel:
/// the hostile names are text in its DOM (no element came out of them), its network log holds
/// the dashboard's address only, and phone- and desktop-sized screenshots are kept in
/// target/test-artifacts.
fn in_chromium(c: &mut Checks, lab: &Lab, url: &str, hostile_site: &str) -> Result<()> {
    if !Path::new(CHROMIUM).exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "chromium is missing; `cargo xtask setup` installs it");
        println!("skipped the browser: chromium is not installed");
        return Ok(());
    }
    let dir = lab.names().dir.join("chromium");
    std::fs::create_dir_all(&dir)?;
    let browser = |size: &str| {
        let mut b = lab.cmd(Ns::Phone, CHROMIUM);
        b.args(CHROMIUM_FLAGS)
            .arg(format!("--window-size={size}"))
            .arg(format!("--user-data-dir={}", dir.join("profile").display()));
        b
    };
    let net_log = dir.join("net-log.json");
    let mut dom = browser(SCREENS[0].1);
    dom.arg(format!("--log-net-log={}", net_log.display())).arg("--dump-dom").arg(url);
    let ran = run_bounded(dom, Duration::from_secs(90))?;
    ensure!(ran.exited_ok(), "chromium --dump-dom {url}: {}", ran.describe());
    let rendered = &ran.stdout;
    c.check(rendered.contains("What your devices talked to"), "chromium rendered the first page");
    c.check(
        // The DOM writes the script's `defer` as `defer=""`.
        !rendered.contains("<img")
            && rendered.matches("<script").count() == 1
            && rendered.contains("<script src=\"/static/live.js\""),
        "no element came out of a name in the DOM",
    );
    let as_text = hostile_site.replace('&', "&amp;");
    c.check(rendered.contains(&as_text), format!("the hostile Host as text in the DOM: {as_text}"));
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let _ = std::fs::copy(&net_log, artifacts.join("dashboard-net-log.json"));
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&net_log).context("reading chromium's net log")?)
        .context("chromium's net log is not JSON")?;
    let own = format!("http://{VPN_TUN_V4}:{PORT}/");
    let site = format!("http://{VPN_TUN_V4}");
    let requests = url_requests(&log);
    // The page's requests: those in its site's partition (its network isolation key) or
    // initiated by it. The browser's own background calls (the component updater, an account
    // check: Chromium makes them whatever the flags) are in no page's partition; they are
    // listed, and fail anyway, as the lab has no internet.
    let (page, browser_own): (Vec<&UrlRequest>, Vec<&UrlRequest>) =
        requests.iter().partition(|r| r.isolation_key.contains(&site) || r.initiator.starts_with(&site));
    let outside: Vec<&str> = page.iter().map(|r| r.url.as_str()).filter(|u| !u.starts_with(&own)).collect();
    c.check(
        page.iter().any(|r| r.url.ends_with("/static/dashboard.css")),
        format!("the stylesheet was loaded: {page:?}"),
    );
    c.check(page.iter().any(|r| r.kind == "main frame" && r.url.starts_with(&own)), "the page itself");
    c.check(outside.is_empty(), format!("the page asked for something other than {own}: {outside:?}"));
    println!(
        "chromium's own background requests, outside any page: {:?}",
        browser_own.iter().map(|r| &r.url).collect::<Vec<_>>()
    );

    for (name, size) in SCREENS {
        let shot = artifacts.join(name);
        let _ = std::fs::remove_file(&shot);
        let mut b: Command = browser(size);
        b.arg(format!("--screenshot={}", shot.display())).arg(url);
        let ran = run_bounded(b, Duration::from_secs(90))?;
        ensure!(ran.exited_ok(), "chromium --screenshot: {}", ran.describe());
        let png = std::fs::read(&shot).with_context(|| format!("reading {}", shot.display()))?;
        c.check(png.starts_with(b"\x89PNG"), format!("{name} is a PNG"));
        println!("screenshot: {} ({} bytes)", shot.display(), png.len());
    }
    Ok(())
}

/// A request as chromium's net log starts it (`URL_REQUEST_START_JOB`).
#[derive(Debug)]
pub(crate) struct UrlRequest {
    pub url: String,
    pub initiator: String,
    pub isolation_key: String,
    /// `main frame`, `other`, ...
    pub kind: String,
}

/// Every request the net log started.
pub(crate) fn url_requests(log: &Value) -> Vec<UrlRequest> {
    let Some(start) = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64() else {
        return Vec::new();
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    log["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"].as_u64() == Some(start))
        .map(|e| {
            let p = &e["params"];
            UrlRequest {
                url: text(&p["url"]),
                initiator: text(&p["initiator"]),
                isolation_key: text(&p["network_isolation_key"]),
                kind: text(&p["request_type"]),
            }
        })
        .collect()
}
