//! The dashboard's changes (issue 13) in the lab, from the phone through the WireGuard tunnel:
//! the password set with `tracker dashboard --set-password`, a login in Chromium (driven over
//! [`crate::webdriver`]), a block's preview with exactly the traffic the test made, a block
//! and an unblock by button that the kernel obeys at once (dig refused, curl fails, then
//! resolves again), a 30-minute block's countdown, a `--for 3s` block that the page shows
//! ended by itself, and every forged change refused (403) without changing the rule table or
//! the kernel maps: no session, no CSRF token, a wrong one, another origin. Wrong passwords are
//! refused, then limited.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use tracker::{
    blocking::{KernelBlocks, KernelNames},
    kernel::PinDir,
    web::dashboard,
};
use tracker_tests::{
    Lab, Ns,
    cmd::{run, run_with_input},
    lab::{SMALL_TXT, VPN_TUN_V4},
    zone,
};

use crate::{
    common::{Checks, DigQuery, Tracker, curl_pinned, dig},
    webdriver::Browser,
};

const PORT: u16 = dashboard::DEFAULT_PORT;
const PASSWORD: &str = "correct horse battery";
/// Blocked and unblocked from the page.
const NAME: &str = zone::WEB_NAME;
/// Blocked with `--for 3s` by the CLI, to see its end on the page.
const TIMED: &str = zone::SHARED_NAMES[1];
/// The rule the forged requests try to end.
const GUARDED: &str = zone::SHARED_NAMES[0];
/// The name the forged requests try to block.
const FORGED: &str = zone::TLS_NAME;
/// How long the daemon gets to store the test's traffic, or to end a rule.
const WAIT: Duration = Duration::from_secs(30);
/// A page's load or a button's effect.
const PAGE_WAIT: Duration = Duration::from_secs(20);

fn base() -> String {
    format!("http://{VPN_TUN_V4}:{PORT}")
}

/// An HTTP answer as curl saw it.
struct Fetched {
    code: u16,
    headers: String,
    body: String,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// curl from the phone: `path` of the dashboard, with a session `cookie`, an `Origin`, and
/// a urlencoded `form` (a POST) when given.
fn request(
    lab: &Lab,
    path: &str,
    form: Option<&[(&str, &str)]>,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Result<Fetched> {
    let mut c = lab.cmd(Ns::Phone, "curl");
    c.args(["-sS", "-i", "--max-time", "20"]);
    if let Some(cookie) = cookie {
        c.arg("-H").arg(format!("Cookie: {cookie}"));
    }
    if let Some(origin) = origin {
        c.arg("-H").arg(format!("Origin: {origin}"));
    }
    for (k, v) in form.unwrap_or_default() {
        c.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let url = format!("{}{path}", base());
    let out = run(c.arg(&url)).with_context(|| format!("curl {url}"))?;
    let (head, body) = out.split_once("\r\n\r\n").with_context(|| format!("{url}: no header end in {out:?}"))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("{url}: {head}"))?;
    Ok(Fetched { code, headers: head.to_owned(), body: body.to_owned() })
}

/// Logs in with curl; the session cookie (`tracker_session=...`).
fn login_cookie(lab: &Lab) -> Result<String> {
    let r = request(lab, "/login", Some(&[("password", PASSWORD), ("next", "/")]), None, Some(&base()))?;
    ensure!(r.code == 303, "curl login: HTTP {} {}", r.code, r.body);
    let set = r.header("set-cookie").context("the login set no cookie")?;
    ensure!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "the session cookie: {set}");
    Ok(set.split(';').next().unwrap_or_default().to_owned())
}

/// The CSRF token of a page's first change form.
fn csrf_of(body: &str) -> Option<String> {
    let at = body.find("name=\"csrf\" value=\"")? + 19;
    Some(body[at..at + body[at..].find('"')?].to_owned())
}

/// What a change must not touch: the rule table (every rule, ended ones too, without the
/// counters that move by themselves) and the kernel's name and address maps (key and rule).
fn state(t: &Tracker) -> Result<(Vec<String>, Vec<String>)> {
    let rules = t.try_json(&["blocks", "--expired"])?;
    let mut table: Vec<String> = rules
        .as_array()
        .context("blocks is not a list")?
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {} {}",
                r["id"], r["kind"], r["rule"], r["device"], r["expires"], r["ended"], r["end_reason"]
            )
        })
        .collect();
    table.sort();
    let pins = PinDir(t.pins.clone());
    let mut kernel: Vec<String> = Vec::new();
    if let Some(names) = KernelNames::open_pinned(&pins)? {
        kernel.extend(
            names.entries()?.into_iter().map(|(k, v)| format!("name {k:?} rule {} flags {}", v.rule_id, v.flags)),
        );
    }
    if let Some(blocks) = KernelBlocks::open_pinned(&pins)? {
        kernel.extend(blocks.entries()?.into_iter().map(|(net, r)| format!("address {net} rule {}", r.rule_id)));
    }
    kernel.sort();
    Ok((table, kernel))
}

/// A forged change: what it lacks, its path, its form, its cookie and its `Origin`.
type Forged<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Option<&'a str>, Option<&'a str>);

/// A block form for [`FORGED`] with CSRF token `csrf`.
fn block_form(csrf: &str) -> Vec<(&str, &str)> {
    vec![("kind", "domain"), ("target", FORGED), ("for", ""), ("csrf", csrf)]
}

/// An unblock form for rule `rule` with CSRF token `csrf`.
fn unblock_form<'a>(rule: &'a str, csrf: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("rule", rule), ("csrf", csrf)]
}

/// dig's status for `name` from the phone, through the VPN host's resolver.
fn lookup(lab: &Lab, name: &str) -> Result<String> {
    dig(lab, &DigQuery::new(VPN_TUN_V4.into(), name, "A", false))
}

/// The active rule of `name` in `tracker blocks`, if any: its JSON.
fn active(t: &Tracker, name: &str) -> Result<Option<Value>> {
    let rules = t.try_json(&["blocks"])?;
    Ok(rules.as_array().into_iter().flatten().find(|r| r["rule"] == name).cloned())
}

/// Clicks the element `id` in the browser and waits for the next page's path to start with
/// `path`; that path.
fn click_to(b: &Browser, id: &str, path: &str) -> Result<String> {
    // A mark on the old page: the wait below ends on a page loaded after the click.
    let clicked = b.eval(
        "const e = document.getElementById(arguments[0]); if (!e) return false; window.trackerOld = 1; e.click(); \
         return true;",
        &[json!(id)],
    )?;
    ensure!(clicked == json!(true), "no #{id} to click on {}", b.eval("return location.href", &[])?);
    let at = b.wait_for(
        "return !window.trackerOld && document.readyState === 'complete' && location.pathname.startsWith(arguments[0]) \
         ? location.pathname : null;",
        &[json!(path)],
        PAGE_WAIT,
    )?;
    at.as_str().map(str::to_owned).with_context(|| {
        format!("after #{id}, not on {path}: {}", b.eval("return location.href", &[]).unwrap_or_default())
    })
}

/// The text of element `id`, or null.
const TEXT_OF: &str = "const e = document.getElementById(arguments[0]); return e ? e.textContent.trim() : null;";
/// The `value` of the `<data>` inside element `id`, as a number, or null.
const VALUE_OF: &str =
    "const d = document.querySelector('#' + arguments[0] + ' data'); return d ? Number(d.value) : null;";

#[test]
fn changes_need_the_password_and_the_pages_token_and_take_effect_in_the_kernel_at_once() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tc1")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let mut c = Checks::new();

    // Before any password: the login says how to set one.
    let none = request(&lab, "/login", Some(&[("password", PASSWORD)]), None, Some(&base()))?;
    c.check(
        none.code == 409 && none.body.contains("tracker dashboard --set-password"),
        format!("login without a password: HTTP {}", none.code),
    );
    let hint = "set its password once: `tracker dashboard --set-password`";
    c.check(t.ok(&["dashboard", "--no-qr"]).contains(hint), "tracker dashboard says how to set a password");
    // Too short: refused, nothing set.
    let short = run_with_input(&mut t.cli(&["dashboard", "--set-password"]), b"short\n");
    c.check(
        short.as_ref().is_err_and(|e| format!("{e:#}").contains("at least 8 characters")),
        format!("a short password: {short:?}"),
    );
    let set = run_with_input(&mut t.cli(&["dashboard", "--set-password"]), format!("{PASSWORD}\n").as_bytes())?;
    c.check(set.contains("password is set"), format!("--set-password: {set}"));
    c.check(!t.ok(&["dashboard", "--no-qr"]).contains(hint), "tracker dashboard still asks for a password once set");
    let help = t.ok(&["dashboard", "--help"]);
    c.check(
        help.contains("--set-password") && help.contains("without echo"),
        "dashboard --help teaches --set-password",
    );

    // The phone's traffic to NAME: three lookups, two connections.
    for _ in 0..3 {
        ensure!(lookup(&lab, NAME)? == "NOERROR", "{NAME} did not resolve");
    }
    for _ in 0..2 {
        curl_pinned(&lab, lab.phone_cmd("curl"), false, NAME, false)?;
    }
    let mut said = String::new();
    let stored = t.wait_for(WAIT, |t| {
        said = t.output(&["block-domain", NAME, "--dry-run"]).stdout.iter().map(|b| char::from(*b)).collect();
        said.contains("would have stopped 3 DNS queries and 2 connections")
    });
    ensure!(stored, "the CLI's dry run never saw the test's 3 queries and 2 connections: {said}");

    let Some(b) = Browser::start(&lab, Ns::Phone, &lab.names().dir.join("webdriver-changes"), "390,844")? else {
        return Ok(());
    };
    let preview = format!("/block?kind=domain&target={NAME}");
    // Looking needs no login, and offers no button.
    b.goto(&format!("{}{preview}", base()))?;
    c.check(b.eval(VALUE_OF, &[json!("would-queries")])? == json!(3), "the preview's queries before login");
    c.check(b.eval(TEXT_OF, &[json!("block-always")])?.is_null(), "no block button before login");
    let before_login = state(&t)?;

    // A wrong password, in the browser: refused, nothing changes.
    b.goto(&format!("{}/login?next={}", base(), preview.replace('?', "%3F").replace('&', "%26").replace('=', "%3D")))?;
    b.eval("document.getElementById('password').value = arguments[0]; return true;", &[json!("not the password")])?;
    click_to(&b, "login-button", "/login")?;
    let error = b.eval(TEXT_OF, &[json!("error")])?;
    c.check(error == json!("Wrong password."), format!("a wrong password: {error}"));
    c.check(state(&t)? == before_login, "a wrong password changed the rules or the kernel");

    // The password: back on the preview, now with its buttons.
    b.eval("document.getElementById('password').value = arguments[0]; return true;", &[json!(PASSWORD)])?;
    click_to(&b, "login-button", "/block")?;
    for (id, want) in [("would-queries", 3), ("would-connections", 2), ("would-devices", 1)] {
        let shown = b.eval(VALUE_OF, &[json!(id)])?;
        c.check(shown == json!(want), format!("preview {id}: expected {want}, measured {shown}"));
    }
    let summary = b.eval(TEXT_OF, &[json!("summary")])?;
    c.check(
        summary == json!("In the last 7 days this would have stopped 3 DNS queries and 2 connections from 1 device."),
        format!("the preview's sentence: {summary}"),
    );
    let tomorrow = b.eval(TEXT_OF, &[json!("block-tomorrow")])?;
    c.check(
        tomorrow.as_str().is_some_and(|s| s.contains("midnight (") && s.contains("the VPN host's clock")),
        format!("the midnight button names its zone: {tomorrow}"),
    );

    let artifacts = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    std::fs::write(artifacts.join("dashboard-block-phone.png"), b.screenshot()?)?;

    // Block: the kernel refuses the name at once, and curl cannot reach it by name.
    let page = click_to(&b, "block-always", "/experiments/")?;
    let id: u32 = page.trim_start_matches("/experiments/").parse().with_context(|| format!("rule page {page}"))?;
    let rule = active(&t, NAME)?;
    c.check(
        rule.as_ref().is_some_and(|r| r["id"] == id && r["kind"] == "domain" && r["expires"].is_null()),
        format!("rule {id} in tracker blocks: {rule:?}"),
    );
    c.check(lookup(&lab, NAME)? == "NXDOMAIN", format!("{NAME} after the block: not refused"));
    let mut by_name = lab.phone_cmd_resolving(VPN_TUN_V4.into(), "curl")?;
    by_name.args(["-sS", "-o", "/dev/null", "--max-time", "10", &format!("http://{NAME}/{SMALL_TXT}")]);
    c.check(run(&mut by_name).is_err(), format!("curl http://{NAME}/ after the block succeeded"));
    let state_text = b.eval(TEXT_OF, &[json!("state")])?;
    c.check(state_text == json!("On: until removed"), format!("the rule's page: {state_text}"));

    // Unblock by its button: it resolves again.
    click_to(&b, "unblock", &format!("/experiments/{id}"))?;
    let state_text = b.eval(TEXT_OF, &[json!("state")])?;
    c.check(
        state_text.as_str().is_some_and(|s| s.starts_with("Off: ended (unblocked)")),
        format!("after unblock: {state_text}"),
    );
    c.check(active(&t, NAME)?.is_none(), "the rule is still active after unblock");
    c.check(lookup(&lab, NAME)? == "NOERROR", format!("{NAME} after the unblock: still refused"));

    // For 30 minutes: the countdown, server-side.
    b.goto(&format!("{}{preview}", base()))?;
    let page = click_to(&b, "block-30m", "/experiments/")?;
    let timed_id: u32 = page.trim_start_matches("/experiments/").parse()?;
    let state_text = b.eval(TEXT_OF, &[json!("state")])?;
    c.check(
        state_text.as_str().is_some_and(|s| s.starts_with("On: ends in 30 min (at ")),
        format!("30 minutes: {state_text}"),
    );
    let rule = active(&t, NAME)?;
    c.check(
        rule.as_ref().is_some_and(|r| {
            r["id"] == timed_id && r["time_left"].as_str().is_some_and(|l| l == "30m" || l.starts_with("29m"))
        }),
        format!("tracker blocks of the 30-minute rule: {rule:?}"),
    );
    c.check(lookup(&lab, NAME)? == "NXDOMAIN", "the 30-minute block refuses");
    // The experiments page lists it as running; "End now" ends it.
    b.goto(&format!("{}/experiments", base()))?;
    let running = b.eval("const e = document.querySelector('#running #rule-' + arguments[0] + ' .countdown'); return e ? e.textContent : null;", &[json!(timed_id)])?;
    c.check(
        running.as_str().is_some_and(|s| s.starts_with("ends in ")),
        format!("the experiments page's running list: {running}"),
    );
    b.eval("window.trackerOld = 1; document.querySelector('#running #rule-' + arguments[0] + ' button').click(); return true;", &[json!(timed_id)])?;
    b.wait_for(
        "return !window.trackerOld && location.pathname === arguments[0] && document.readyState === 'complete';",
        &[json!(format!("/experiments/{timed_id}"))],
        PAGE_WAIT,
    )?;
    c.check(active(&t, NAME)?.is_none(), "End now left the 30-minute rule on");

    // A block of 3 s made by the CLI ends by itself, and the page says so.
    t.ok(&["block-domain", TIMED, "--for", "3s"]);
    let timed = active(&t, TIMED)?.context("the 3 s rule is not listed")?;
    let short_id = timed["id"].as_u64().context("rule id")?;
    c.check(lookup(&lab, TIMED)? == "NXDOMAIN", "the 3 s rule refuses at first");
    let ended = t.wait_for(WAIT, |t| {
        t.try_json(&["blocks", "--expired"])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|r| r["id"] == short_id && r["end_reason"] == "expired")
    });
    c.check(ended, "the daemon never marked the 3 s rule expired");
    b.goto(&format!("{}/experiments/{short_id}", base()))?;
    let state_text = b.eval(TEXT_OF, &[json!("state")])?;
    c.check(
        state_text.as_str().is_some_and(|s| s.starts_with("Off: ended (expired)")),
        format!("the 3 s rule's page: {state_text}"),
    );
    b.goto(&format!("{}/experiments", base()))?;
    let past = b.eval("return document.querySelector('#past #rule-' + arguments[0]) !== null;", &[json!(short_id)])?;
    c.check(past == json!(true), "the 3 s rule among the ended experiments");
    c.check(lookup(&lab, TIMED)? == "NOERROR", "the kernel still refuses after the 3 s rule ended");
    std::fs::write(artifacts.join("dashboard-experiments-phone.png"), b.screenshot()?)?;
    drop(b);

    // Forged changes: a rule to protect, and one to try to add.
    t.ok(&["block-domain", GUARDED]);
    let guarded = active(&t, GUARDED)?.context("the guarded rule")?["id"].to_string();
    let cookie = login_cookie(&lab)?;
    let page = request(&lab, &format!("/block?kind=domain&target={FORGED}"), None, Some(cookie.as_str()), None)?;
    let token = csrf_of(&page.body).context("no CSRF token on the logged-in preview")?;
    let before = state(&t)?;
    let own = base();
    let own = own.as_str();
    let evil = "http://evil.example";
    let cookie = cookie.as_str();
    let block = block_form;
    let zeros = "0".repeat(64);
    let unblock = |csrf| unblock_form(&guarded, csrf);
    let cases: Vec<Forged<'_>> = vec![
        ("block without a session", "/block", block(&token), None, Some(own)),
        (
            "block without a token",
            "/block",
            vec![("kind", "domain"), ("target", FORGED), ("for", "")],
            Some(cookie),
            Some(own),
        ),
        ("block with a wrong token", "/block", block(&zeros), Some(cookie), Some(own)),
        ("block from another origin", "/block", block(&token), Some(cookie), Some(evil)),
        ("unblock without a session", "/unblock", unblock(&token), None, Some(own)),
        ("unblock without a token", "/unblock", vec![("rule", guarded.as_str())], Some(cookie), Some(own)),
        ("unblock with a wrong token", "/unblock", unblock("x"), Some(cookie), Some(own)),
        ("unblock from another origin", "/unblock", unblock(&token), Some(cookie), Some(evil)),
    ];
    for (what, path, form, cookie, origin) in &cases {
        let r = request(&lab, path, Some(form), *cookie, *origin)?;
        c.check(r.code == 403 && r.body.contains("Nothing was changed."), format!("{what}: HTTP {}", r.code));
    }
    let after = state(&t)?;
    c.check(after == before, format!("forged changes changed something:\nbefore {before:#?}\nafter {after:#?}"));
    c.check(
        lookup(&lab, FORGED)? == "NOERROR" && lookup(&lab, GUARDED)? == "NXDOMAIN",
        "the kernel after the forged changes",
    );
    // The same requests, right: they do change (so the refusals above were the checks').
    let r = request(&lab, "/unblock", Some(&unblock(&token)), Some(cookie), Some(own))?;
    c.check(r.code == 303, format!("a right unblock by curl: HTTP {}", r.code));
    c.check(lookup(&lab, GUARDED)? == "NOERROR", "the right unblock took effect");

    // Wrong passwords: refused, then limited, even the right one, for a minute.
    let wrong = request(&lab, "/login", Some(&[("password", "guess-guess")]), None, Some(own))?;
    c.check(
        wrong.code == 403 && wrong.header("set-cookie").is_none(),
        format!("a wrong password by curl: HTTP {}", wrong.code),
    );
    // The browser's one and this one make two; three more reach the limit.
    for _ in 0..3 {
        request(&lab, "/login", Some(&[("password", "guess-guess")]), None, Some(own))?;
    }
    let limited = request(&lab, "/login", Some(&[("password", PASSWORD)]), None, Some(own))?;
    c.check(
        limited.code == 429 && limited.body.contains("Too many wrong passwords"),
        format!("after five wrong passwords: HTTP {}", limited.code),
    );
    c.finish();
    t.stop()?;
    Ok(())
}
