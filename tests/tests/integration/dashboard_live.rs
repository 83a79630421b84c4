//! The dashboard's one-time login link and its live parts (issue 13) in the lab, in Chromium on
//! the phone through the WireGuard tunnel, with no password ever set: `tracker dashboard
//! --login-link` prints a link; an expired one and a forged one are refused and make no
//! session; the right one logs the browser in, a block by button then takes effect in the
//! kernel, and the same link opened again is refused. A `--for 8s` block's countdown on the
//! open experiments page goes down without a reload, then says it ended and loses its button.
//! The first page's connections total and the connections list follow new traffic of the
//! second phone without a reload, exactly. Every request the pages made went to the dashboard.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use tracker::web::dashboard;
use tracker_tests::{Lab, Ns, lab::VPN_TUN_V4, zone};

use crate::{
    common::{Checks, DigQuery, Tracker, curl_pinned, dig},
    dashboard::{fetch, url_requests},
    webdriver::Browser,
};

const PORT: u16 = dashboard::DEFAULT_PORT;
/// Blocked from the page once logged in by the link.
const NAME: &str = zone::WEB_NAME;
/// Blocked for [`TIMED_FOR`] by the CLI, to watch its countdown.
const TIMED: &str = zone::SHARED_NAMES[1];
const TIMED_FOR: &str = "8s";
/// How long the daemon gets to store traffic; a live figure or row to appear.
const WAIT: Duration = Duration::from_secs(30);
/// A page's load or a button's effect.
const PAGE_WAIT: Duration = Duration::from_secs(20);

fn base() -> String {
    format!("http://{VPN_TUN_V4}:{PORT}")
}

/// The phone's link in what `tracker dashboard --login-link` printed.
fn printed_link(out: &str) -> Option<String> {
    let prefix = format!("{}/link/", base());
    out.lines().map(str::trim).find(|l| l.starts_with(&prefix)).map(str::to_owned)
}

/// The text of element `id`, or null.
const TEXT_OF: &str = "const e = document.getElementById(arguments[0]); return e ? e.textContent.trim() : null;";
/// Whether the open page is logged in, as the login page says it: its logout button.
const LOGGED_IN: &str = "return document.getElementById('logout') !== null;";

/// dig's status for `name` from the phone, through the VPN host's resolver.
fn lookup(lab: &Lab, name: &str) -> Result<String> {
    dig(lab, &DigQuery::new(VPN_TUN_V4.into(), name, "A", false))
}

/// The second phone's flows as `tracker flows` lists them.
fn flows_of(t: &Tracker, key: &str) -> Vec<Value> {
    t.try_json(&["flows", "--limit", "0", "--client", key]).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

/// Waits until the second phone has `want` stored flows; they, newest first.
fn stored_flows(t: &Tracker, key: &str, want: usize) -> Result<Vec<Value>> {
    let mut flows = Vec::new();
    let done = t.wait_for(WAIT, |t| {
        flows = flows_of(t, key);
        flows.len() == want
    });
    ensure!(done, "the second phone's flows: expected {want}, stored {}", flows.len());
    Ok(flows)
}

/// Loads `path`, marks the page (a reload wipes the mark) and returns nothing; [`unreloaded`]
/// checks the mark.
fn open_marked(b: &Browser, path: &str) -> Result<()> {
    b.goto(&format!("{}{path}", base()))?;
    b.eval("window.trackerMark = 1; return true;", &[])?;
    Ok(())
}

/// Whether the page is still the one [`open_marked`] loaded.
fn unreloaded(b: &Browser) -> Result<bool> {
    Ok(b.eval("return window.trackerMark === 1;", &[])? == json!(true))
}

#[test]
fn a_one_time_link_logs_in_once_and_countdowns_and_totals_move_without_a_reload() -> Result<()> {
    let Some((_serial, mut lab, mut t)) = crate::common::lab_with_tracker("tl1")? else {
        return Ok(());
    };
    lab.add_second_phone().context("adding the second phone")?;
    t.start(&lab)?;
    let key2 = lab.phone_public_key(Ns::Phone2)?;
    let mut c = Checks::new();

    let help = t.ok(&["dashboard", "--help"]);
    c.check(
        help.contains("--login-link") && help.contains("one-time login link") && help.contains("--valid-for"),
        "dashboard --help teaches --login-link",
    );
    let bad = t.output(&["dashboard", "--login-link", "--valid-for", "2d"]);
    let said = String::from_utf8_lossy(&bad.stderr).into_owned();
    c.check(!bad.status.success() && said.contains("at most 24 h"), format!("--valid-for 2d: {said}"));

    let Some(b) = Browser::start(&lab, Ns::Phone, &lab.names().dir.join("webdriver-live"), "390,844")? else {
        return Ok(());
    };

    // An expired link: refused, no session.
    let expired = t.ok(&["dashboard", "--login-link", "--no-qr", "--valid-for", "1s"]);
    let expired = printed_link(&expired).with_context(|| format!("no link in {expired}"))?;
    std::thread::sleep(Duration::from_secs(2));
    b.goto(&expired)?;
    let text = b.eval(TEXT_OF, &[json!("message")])?;
    c.check(text.as_str().is_some_and(|s| s.contains("has expired")), format!("an expired link: {text}"));
    b.goto(&format!("{}/login", base()))?;
    c.check(b.eval(LOGGED_IN, &[])? == json!(false), "an expired link made a session");

    // The real link, and a forged one beside it: same shape, another token.
    let printed = t.ok(&["dashboard", "--login-link", "--no-qr"]);
    c.check(printed.contains("within 10 min") && printed.contains("works once"), format!("--login-link: {printed}"));
    let link = printed_link(&printed).with_context(|| format!("no link in {printed}"))?;
    let token = link.rsplit('/').next().unwrap_or_default().to_owned();
    ensure!(token.len() == 32, "the token of {link}");
    let forged = format!("{}/link/{}", base(), if token.starts_with('0') { "1" } else { "0" }.repeat(32));
    let r = fetch(&lab, Ns::Phone, &forged, &[])?;
    c.check(
        r.code == 403 && r.header("set-cookie").is_none() && r.body.contains("does not work"),
        format!("a forged link by curl: HTTP {}", r.code),
    );
    b.goto(&forged)?;
    b.goto(&format!("{}/login", base()))?;
    c.check(b.eval(LOGGED_IN, &[])? == json!(false), "a forged link made a session");

    // The link: logged in, and a block by button takes effect in the kernel.
    b.goto(&link)?;
    let notice = b.eval(TEXT_OF, &[json!("notice")])?;
    c.check(
        notice.as_str().is_some_and(|s| s.contains("logged in with the one-time link")),
        format!("the link's page: {notice}"),
    );
    c.check(b.eval(LOGGED_IN, &[])? == json!(true), "the link's page offers to log out");
    ensure!(lookup(&lab, NAME)? == "NOERROR", "{NAME} did not resolve before the block");
    b.goto(&format!("{}/block?kind=domain&target={NAME}", base()))?;
    b.eval("window.trackerOld = 1; document.getElementById('block-always').click(); return true;", &[])?;
    let rule_page = b.wait_for(
        "return !window.trackerOld && document.readyState === 'complete' && location.pathname.startsWith('/experiments/') \
         ? location.pathname : null;",
        &[],
        PAGE_WAIT,
    )?;
    c.check(rule_page.is_string(), format!("the block button led to the rule's page: {rule_page}"));
    c.check(lookup(&lab, NAME)? == "NXDOMAIN", format!("{NAME} after a block by the link's session"));
    // Used up: the same link again is refused, and sets no cookie.
    let again = fetch(&lab, Ns::Phone, &link, &[])?;
    c.check(
        again.code == 403 && again.header("set-cookie").is_none() && again.body.contains("used already"),
        format!("the link a second time, by curl: HTTP {}", again.code),
    );
    b.goto(&link)?;
    let text = b.eval(TEXT_OF, &[json!("message")])?;
    c.check(text.as_str().is_some_and(|s| s.contains("used already")), format!("the link a second time: {text}"));

    countdown(&mut c, &lab, &t, &b)?;
    live_totals(&mut c, &lab, &t, &b, &key2)?;
    live_rows(&mut c, &lab, &t, &b, &key2)?;

    let artifacts = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    std::fs::write(artifacts.join("dashboard-flows-live-phone.png"), b.screenshot()?)?;
    let log = b.quit()?;
    let own = format!("{}/", base());
    let site = format!("http://{VPN_TUN_V4}");
    let requests = url_requests(&log);
    let page: Vec<_> =
        requests.iter().filter(|r| r.isolation_key.contains(&site) || r.initiator.starts_with(&site)).collect();
    let outside: Vec<&str> = page.iter().map(|r| r.url.as_str()).filter(|u| !u.starts_with(&own)).collect();
    c.check(outside.is_empty(), format!("the pages asked for something other than {own}: {outside:?}"));
    for wanted in ["/static/countdown.js", "/totals?", "/flows/new?"] {
        c.check(page.iter().any(|r| r.url.contains(wanted)), format!("the pages requested {wanted}"));
    }
    c.finish();
    t.stop()?;
    Ok(())
}

/// The seconds a countdown text says (`ends in 7 s (at ...)`), if it says seconds.
fn seconds(text: &Value) -> Option<u64> {
    text.as_str()?.strip_prefix("ends in ")?.split(" s ").next()?.parse().ok()
}

/// A `--for 8s` block from the CLI: its countdown on the open experiments page goes down
/// without a reload, then says ended and loses its End-now button; the page's HTML says the
/// time left without the script.
fn countdown(c: &mut Checks, lab: &Lab, t: &Tracker, b: &Browser) -> Result<()> {
    t.ok(&["block-domain", TIMED, "--for", TIMED_FOR]);
    let rules = t.try_json(&["blocks"])?;
    let id = rules
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["rule"] == TIMED)
        .and_then(|r| r["id"].as_u64())
        .context("the timed rule is not listed")?;
    let html = fetch(lab, Ns::Phone, &format!("{}/experiments", base()), &[])?.body;
    c.check(
        html.contains(&format!("data-rule=\"{id}\">ends in <span class=\"left\">")) && html.contains(" s</span> (at "),
        "the experiments page's HTML says the seconds left without the script",
    );
    open_marked(b, "/experiments")?;
    let countdown = "const e = document.querySelector('#running #rule-' + arguments[0] + ' .countdown'); \
                     return e ? e.textContent.trim() : null;";
    let button = "return document.querySelector('#running #rule-' + arguments[0] + ' form button') !== null;";
    let first = b.eval(countdown, &[json!(id)])?;
    c.check(seconds(&first).is_some_and(|s| s <= 8), format!("the countdown at first: {first}"));
    c.check(b.eval(button, &[json!(id)])? == json!(true), "a running block has its End now button");
    let lower = b.wait_for(
        "const e = document.querySelector('#running #rule-' + arguments[0] + ' .countdown'); \
         const m = e && /^ends in (\\d+) s /.exec(e.textContent); \
         return m && Number(m[1]) < arguments[1] ? e.textContent : null;",
        &[json!(id), json!(seconds(&first).unwrap_or(0))],
        PAGE_WAIT,
    )?;
    c.check(
        seconds(&lower).is_some() && unreloaded(b)?,
        format!("the countdown went down from {first} without a reload: {lower}"),
    );
    let ended = b.wait_for(
        "const e = document.querySelector('#running #rule-' + arguments[0] + ' .countdown'); \
         return e && e.textContent === 'ended (expired)' ? e.textContent : null;",
        &[json!(id)],
        PAGE_WAIT,
    )?;
    c.check(ended == json!("ended (expired)") && unreloaded(b)?, format!("the countdown at its end: {ended}"));
    c.check(b.eval(button, &[json!(id)])? == json!(false), "an ended block kept its End now button");
    c.check(lookup(lab, TIMED)? == "NOERROR", format!("{TIMED} still refused after its countdown ended"));
    Ok(())
}

/// The first page of the second phone: its connections total grows by exactly the two new
/// connections, without a reload, to what `tracker flows` lists.
fn live_totals(c: &mut Checks, lab: &Lab, t: &Tracker, b: &Browser, key2: &str) -> Result<()> {
    for _ in 0..2 {
        curl_pinned(lab, lab.cmd(Ns::Phone2, "curl"), false, zone::WWW_APPLE, false)?;
    }
    let before = stored_flows(t, key2, 2)?.len() as u64;
    open_marked(b, &format!("/?device={}", encode(key2)))?;
    let value = "const d = document.querySelector('#connections data'); return d ? Number(d.value) : null;";
    let shown = b.eval(value, &[])?;
    c.check(shown == json!(before), format!("the first page's connections: {shown}, expected {before}"));
    for _ in 0..2 {
        curl_pinned(lab, lab.cmd(Ns::Phone2, "curl"), true, zone::WWW_APPLE, false)?;
    }
    let after = before + 2;
    let moved = b.wait_for(
        "const d = document.querySelector('#connections data'); \
         return d && Number(d.value) === arguments[0] ? d.textContent : null;",
        &[json!(after)],
        WAIT,
    )?;
    c.check(
        moved.is_string() && unreloaded(b)?,
        format!("the connections total went from {before} to {after} without a reload: {moved}"),
    );
    let listed = flows_of(t, key2).len() as u64;
    c.check(listed == after, format!("tracker flows lists {listed}, the page {after}"));
    Ok(())
}

/// The second phone's connections list: a new connection comes in at the top (a row id above
/// every one the page had, its address and port), one row more, without a reload.
fn live_rows(c: &mut Checks, lab: &Lab, t: &Tracker, b: &Browser, key2: &str) -> Result<()> {
    let before = flows_of(t, key2).len();
    open_marked(b, &format!("/flows?device={}", encode(key2)))?;
    let count = "return document.querySelectorAll('#rows li').length;";
    let rows = b.eval(count, &[])?;
    c.check(rows == json!(before), format!("the connections list: {rows} rows, expected {before}"));
    let highest = b.eval(
        "return Math.max(0, ...[...document.querySelectorAll('#rows li')].map(li => Number(li.getAttribute('data-id'))));",
        &[],
    )?;
    let pinned = curl_pinned(lab, lab.cmd(Ns::Phone2, "curl"), true, zone::WWW_NETFLIX, false)?;
    let top = b.wait_for(
        "const li = document.querySelector('#rows li'); \
         return li && li.textContent.startsWith(arguments[0]) && Number(li.getAttribute('data-id')) > arguments[1] \
         ? li.textContent : null;",
        &[json!(zone::WWW_NETFLIX), highest],
        WAIT,
    )?;
    let facts = format!("tcp {}", pinned.port);
    c.check(
        top.as_str().is_some_and(|s| s.contains(&pinned.addr.to_string()) && s.contains(&facts)),
        format!("the new connection to {} port {} at the top: {top}", pinned.addr, pinned.port),
    );
    stored_flows(t, key2, before + 1)?;
    let rows = b.eval(count, &[])?;
    c.check(rows == json!(before + 1) && unreloaded(b)?, format!("one row more without a reload: {rows}"));
    Ok(())
}

/// Percent-encoding of a device key for a query string.
fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
}
