//! The dashboard's read pages (issue 13) in the lab: the second phone makes connections to Apple
//! and Netflix and 61 DNS queries (one with a hostile name) through the tunnel; then, from the
//! first phone, curl and a real Chromium driven over WebDriver read the detail pages of a
//! domain, a company, a service and the device (every figure equal to what `tracker flows` and
//! `tracker dns` list), the query log newest first, its search and its pages (no row missing
//! or twice), the connection list's search, the live event stream and its bound, and a new
//! query appearing in the open log without a reload. Every request the pages made went to the
//! dashboard and nowhere else.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use tracker::web::dashboard;
use tracker_tests::{
    Lab, Ns,
    cmd::{run, wait_until},
    lab::{PHONE2_V4, VPN_TUN_V4},
    zone,
};

use crate::{
    common::{Checks, Tracker, curl_pinned, run_bounded},
    dashboard::{OWN_SCRIPT, fetch, headline, section, timeline_values, url_requests},
    webdriver::Browser,
};

const PORT: u16 = dashboard::DEFAULT_PORT;
/// The queries the test makes: more than one page of the log (50 rows).
const QUERIES: usize = 60;
/// The source port of the first query; each next one the port after.
const FIRST_DIG_PORT: u16 = 41_000;
/// Their names: `q00.pages.lab.test` .. `q59.pages.lab.test`; the on-host resolver answers
/// NXDOMAIN, and the log keeps them all the same.
const ZONE: &str = "pages.lab.test";
/// A question name that is markup.
const HOSTILE: &str = "<img/src=x/onerror=alert(1)>.lab.test";
/// How long the daemon gets to store what the test did; a live row to appear.
const WAIT: Duration = Duration::from_secs(30);
/// The event streams the dashboard serves at once (its `MAX_STREAMS`).
const STREAMS: usize = 8;

fn url(path: &str) -> String {
    format!("http://{VPN_TUN_V4}:{PORT}{path}")
}

/// Percent-encoding of everything but unreserved characters, as the dashboard's links do.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asks for `name` from source port `port`: each query its own UDP flow. Ports the kernel picks
/// can repeat within 61 queries (a birthday chance of some 6 %), and two queries from one port
/// are one flow.
fn dig(lab: &Lab, name: &str, port: u16) -> Result<()> {
    let mut d = lab.cmd(Ns::Phone2, "dig");
    let from = format!("{PHONE2_V4}#{port}");
    d.args(["+tries=1", "+time=5", "-b", &from, &format!("@{VPN_TUN_V4}"), name, "A"]);
    let answer = run(&mut d)?;
    ensure!(answer.contains("status: "), "dig {name}: {answer}");
    Ok(())
}

/// The rows of a list page: `(data-id, name as the page shows it)`, in page order.
fn rows(body: &str) -> Vec<(i64, String)> {
    body.split("<li data-id=\"")
        .skip(1)
        .filter_map(|li| {
            let id = li[..li.find('"')?].parse().ok()?;
            let name = &li[li.find("<span class=\"name\">")? + 19..];
            let name = name.strip_prefix("<a href=\"").map_or(name, |n| &n[n.find("\">").map_or(0, |e| e + 2)..]);
            let end = name.find("</").unwrap_or(name.len());
            Some((id, name[..end].to_owned()))
        })
        .collect()
}

/// The `href` of the link with id `id`, its `&` unescaped.
fn link(body: &str, id: &str) -> Option<String> {
    let at = body.find(&format!("id=\"{id}\" href=\""))? + id.len() + 12;
    Some(body[at..at + body[at..].find('"')?].replace("&#38;", "&"))
}

/// The names `tracker dns --client KEY` lists, newest first.
fn logged_names(t: &Tracker, key: &str) -> Vec<String> {
    t.dns(&["--client", key]).iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect()
}

/// `s` as the pages' templates escape it (askama: numeric references).
fn escape_html(s: &str) -> String {
    s.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

/// Connections and bytes of the flows `keep` picks.
fn count(flows: &[Value], keep: impl Fn(&Value) -> bool) -> (u64, u64) {
    flows.iter().filter(|f| keep(f)).fold((0, 0), |(c, b), f| {
        (c + 1, b + f["bytes_up"].as_u64().unwrap_or(0) + f["bytes_down"].as_u64().unwrap_or(0))
    })
}

#[test]
fn detail_pages_the_log_and_live_updates_show_exactly_what_the_phone_did() -> Result<()> {
    let Some((_serial, mut lab, mut t)) = crate::common::lab_with_tracker("tp1")? else {
        return Ok(());
    };
    lab.add_second_phone().context("adding the second phone")?;
    t.start(&lab)?;
    let key2 = lab.phone_public_key(Ns::Phone2)?;

    // The second phone: HTTP twice and TLS once to Apple, TLS twice to Netflix, 60 queries,
    // then the hostile one.
    for tls in [false, false, true] {
        curl_pinned(&lab, lab.cmd(Ns::Phone2, "curl"), tls, zone::WWW_APPLE, false)?;
    }
    for _ in 0..2 {
        curl_pinned(&lab, lab.cmd(Ns::Phone2, "curl"), true, zone::WWW_NETFLIX, false)?;
    }
    for i in 0..QUERIES {
        dig(&lab, &format!("q{i:02}.{ZONE}"), FIRST_DIG_PORT + i as u16)?;
    }
    dig(&lab, HOSTILE, FIRST_DIG_PORT + QUERIES as u16)?;
    // Every query is one UDP flow to the resolver: 5 + 61 flows, 61 queries.
    let want_flows = 5 + QUERIES + 1;
    let mut flows = Vec::new();
    let stored = t.wait_for(WAIT, |t| {
        flows = t
            .try_json(&["flows", "--limit", "0", "--client", &key2])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        flows.len() == want_flows
            && flows.iter().filter(|f| f["company"] == "Netflix").count() == 2
            && logged_names(t, &key2).len() == QUERIES + 1
    });
    ensure!(
        stored,
        "the second phone's {want_flows} flows and {} queries never appeared: {} flows",
        QUERIES + 1,
        flows.len()
    );
    let names = logged_names(&t, &key2);
    let hostile = names.iter().find(|n| n.contains("onerror")).context("the hostile query is not logged")?.clone();
    ensure!(names.first() == Some(&hostile), "the hostile query is the newest: {names:?}");

    let mut c = Checks::new();
    // Detail pages: each figure equal to the CLI's rows.
    let apple = count(&flows, |f| f["name"] == zone::WWW_APPLE);
    let netflix = count(&flows, |f| f["service"] == "Netflix");
    let device = count(&flows, |_| true);
    c.check((apple.0, netflix.0) == (3, 2), format!("the CLI's Apple and Netflix flows: {apple:?} {netflix:?}"));
    let pages = [
        (
            format!("/domain/{}", zone::WWW_APPLE),
            apple,
            0,
            Some(format!("/block?kind=domain&target={}", zone::WWW_APPLE)),
        ),
        ("/company/Apple".to_owned(), apple, 0, Some("/block?kind=company&target=Apple".to_owned())),
        ("/service/Netflix".to_owned(), netflix, 0, Some("/block?kind=service&target=Netflix".to_owned())),
        (format!("/device/{}", enc(&key2)), device, (QUERIES + 1) as u64, None),
    ];
    for (path, (connections, bytes), queries, block) in &pages {
        let p = fetch(&lab, Ns::Phone, &url(path), &[])?;
        c.check(p.code == 200, format!("{path}: HTTP {}", p.code));
        let measured = (headline(&p.body, "connections"), headline(&p.body, "bytes"), headline(&p.body, "queries"));
        c.check(
            measured == (Some(*connections), Some(*bytes), Some(*queries)),
            format!("{path}: expected {connections} connections, {bytes} B, {queries} queries; measured {measured:?}"),
        );
        let columns = timeline_values(&p.body);
        c.check(columns.iter().sum::<u64>() == *connections, format!("{path}: the timeline adds up: {columns:?}"));
        c.check(link(&p.body, "block") == *block, format!("{path}: block link {:?}", link(&p.body, "block")));
        c.check(p.header("content-security-policy") == Some(dashboard::CSP), format!("{path}: CSP"));
        c.check(!p.body.contains("<script"), format!("{path}: no script"));
        // A week's page is the same traffic, by the day.
        let week = fetch(&lab, Ns::Phone, &url(&format!("{path}?period=7d")), &[])?;
        c.check(headline(&week.body, "connections") == Some(*connections), format!("{path}?period=7d"));
    }
    let domain = fetch(&lab, Ns::Phone, &url(&format!("/domain/{}", zone::WWW_APPLE)), &[])?;
    let devices = section(&domain.body, "devices");
    c.check(
        devices.contains(&format!("<a href=\"/device/{}\">{PHONE2_V4}</a>", enc(&key2)))
            && devices.contains("3 connections"),
        format!("the domain's devices: the second phone, 3 connections: {devices}"),
    );
    c.check(domain.body.contains("Owned by <a href=\"/company/Apple\">Apple</a>"), "the domain's company link");
    let dev = fetch(&lab, Ns::Phone, &url(&format!("/device/{}", enc(&key2))), &[])?;
    let companies = section(&dev.body, "companies");
    c.check(
        companies.contains("<a href=\"/company/Apple\">Apple</a></span><span class=\"num\">3 connections")
            && companies.contains("<a href=\"/company/Netflix\">Netflix</a></span><span class=\"num\">2 connections"),
        format!("the device's companies: {companies}"),
    );
    let zone_page = fetch(&lab, Ns::Phone, &url(&format!("/domain/{ZONE}")), &[])?;
    c.check(
        headline(&zone_page.body, "queries") == Some(QUERIES as u64),
        format!("/domain/{ZONE}: {QUERIES} queries, measured {:?}", headline(&zone_page.body, "queries")),
    );
    let first_page = fetch(&lab, Ns::Phone, &url("/"), &[])?;
    c.check(first_page.body.contains("<a href=\"/company/Apple\">Apple</a>"), "the first page links Apple's page");
    for path in ["/domain/nothing.example", "/company/Nobody%20Inc", "/device/nobody", "/service/x"] {
        let p = fetch(&lab, Ns::Phone, &url(path), &[])?;
        c.check(
            p.code == 404
                && p.body.contains("id=\"not-found\"")
                && p.header("content-security-policy") == Some(dashboard::CSP),
            format!("{path}: HTTP {} {}", p.code, p.body.chars().take(300).collect::<String>()),
        );
    }

    // The query log: newest first, paged without a gap or a repeat, searched exactly.
    let log = format!("/log?device={}", enc(&key2));
    let first = fetch(&lab, Ns::Phone, &url(&log), &[])?;
    let page1 = rows(&first.body);
    let older = link(&first.body, "older");
    let page2 = match &older {
        Some(href) => rows(&fetch(&lab, Ns::Phone, &url(href), &[])?.body),
        None => Vec::new(),
    };
    let shown: Vec<String> = page1.iter().chain(&page2).map(|(_, n)| n.clone()).collect();
    let want: Vec<String> = names.iter().map(|n| escape_html(n)).collect();
    c.check(
        page1.len() == 50 && page2.len() == QUERIES + 1 - 50,
        format!("pages of {} and {} rows", page1.len(), page2.len()),
    );
    c.check(shown == want, format!("the log's two pages equal `tracker dns`, newest first:\n{shown:?}\n{want:?}"));
    let ids: BTreeSet<i64> = page1.iter().chain(&page2).map(|(id, _)| *id).collect();
    c.check(ids.len() == QUERIES + 1, format!("{} distinct rows over the pages", ids.len()));
    c.check(
        first.body.contains(&format!("<a href=\"/domain/{}\">{}</a>", enc(&hostile), escape_html(&hostile)))
            && !first.body.contains("<img"),
        "the hostile name escaped, its link encoded",
    );
    let searched = rows(&fetch(&lab, Ns::Phone, &url(&format!("{log}&q=Q1")), &[])?.body);
    let want: Vec<String> = (10..20).rev().map(|i| format!("q{i}.{ZONE}")).collect();
    let got: Vec<String> = searched.iter().map(|(_, n)| n.clone()).collect();
    c.check(got == want, format!("search q1: {got:?}"));
    let flows_page = rows(&fetch(&lab, Ns::Phone, &url(&format!("/flows?device={}&q=netflix", enc(&key2))), &[])?.body);
    c.check(
        flows_page.len() == 2 && flows_page.iter().all(|(_, n)| n == zone::WWW_NETFLIX),
        format!("the connections searched for netflix: {flows_page:?}"),
    );
    let bad = fetch(&lab, Ns::Phone, &url("/log?before=%3Cb%3E"), &[])?;
    c.check(bad.code == 400 && !bad.body.contains("<b>"), format!("a bad cursor: HTTP {}", bad.code));

    // The script and the event stream.
    let js = fetch(&lab, Ns::Phone, &url("/static/live.js"), &[])?;
    c.check(
        js.code == 200 && js.header("content-type") == Some("text/javascript; charset=utf-8"),
        format!("live.js: {} {:?}", js.code, js.header("content-type")),
    );
    c.check(!js.body.contains("innerHTML") && js.body.contains("textContent"), "live.js sets text only");
    c.check(first.body.contains(OWN_SCRIPT), "the log's first page loads the script");
    streams_are_bounded(&mut c, &lab)?;

    let connections: Vec<(String, u64)> = pages.iter().map(|(path, (n, _), _, _)| (path.clone(), *n)).collect();
    in_browser(&mut c, &lab, &t, &key2, &connections, &hostile)?;
    c.finish();
    t.stop()?;
    Ok(())
}

/// [`STREAMS`] event streams are served together, each with its first event at once; one
/// more is refused with 503. Once they close, a stream is served again.
fn streams_are_bounded(c: &mut Checks, lab: &Lab) -> Result<()> {
    let dir = lab.names().dir.join("streams");
    std::fs::create_dir_all(&dir)?;
    let outputs: Vec<_> = (0..STREAMS).map(|i| dir.join(format!("events-{i}.txt"))).collect();
    let mut held = Vec::new();
    for out in &outputs {
        let mut s = lab.cmd(Ns::Phone, "curl");
        s.args(["-sS", "-N", "--max-time", "30", "-o"]).arg(out).arg(url("/events"));
        s.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        held.push(lab.spawn(s)?);
    }
    let first_event = |out: &std::path::PathBuf| {
        std::fs::read_to_string(out).is_ok_and(|t| t.contains("event: change\n") && t.contains("data: {\"dns\":"))
    };
    let all = wait_until("every stream's first event", WAIT, Duration::from_millis(200), || {
        Ok(outputs.iter().all(first_event))
    });
    c.check(
        all.is_ok(),
        format!(
            "{STREAMS} streams, each with its first event: {:?}",
            outputs.iter().map(first_event).collect::<Vec<_>>()
        ),
    );
    let refused = fetch(lab, Ns::Phone, &url("/events"), &["--max-time", "3"]);
    let code = refused.as_ref().map(|r| r.code).ok();
    c.check(code == Some(503), format!("stream {} of {STREAMS}: {code:?}", STREAMS + 1));
    drop(held);
    // Closed streams give their places back (the browser's stream below needs one).
    let again = wait_until("a stream served again", WAIT, Duration::from_millis(500), || {
        let mut probe = lab.cmd(Ns::Phone, "curl");
        probe.args(["-sS", "-N", "--max-time", "2", &url("/events")]);
        Ok(run_bounded(probe, Duration::from_secs(5))?.stdout.contains("event: change"))
    });
    c.check(again.is_ok(), "a stream is served again once the others closed");
    Ok(())
}

/// Chromium on the first phone: the detail pages' figures (`connections`: each page's count),
/// the hostile name as text, a new query in the open log without a reload, and a network log of
/// the dashboard only.
fn in_browser(
    c: &mut Checks,
    lab: &Lab,
    t: &Tracker,
    key2: &str,
    connections: &[(String, u64)],
    hostile: &str,
) -> Result<()> {
    let dir = lab.names().dir.join("webdriver");
    let Some(browser) = Browser::start(lab, Ns::Phone, &dir, "390,844")? else {
        return Ok(());
    };
    let value_of = "const d = document.querySelector('#' + arguments[0] + ' data'); return d ? Number(d.value) : null;";
    for (path, connections) in connections {
        browser.goto(&url(path))?;
        let shown = browser.eval(value_of, &[json!("connections")])?;
        c.check(shown == json!(connections), format!("chromium {path}: {shown} connections, expected {connections}"));
    }
    let artifacts = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let shot = browser.screenshot()?;
    c.check(shot.starts_with(b"\x89PNG"), "the device page's screenshot is a PNG");
    std::fs::write(artifacts.join("dashboard-device-phone.png"), &shot)?;

    browser.goto(&url(&format!("/log?device={}", enc(key2))))?;
    let as_text = browser.eval(
        "return [...document.querySelectorAll('#rows .name')].some(e => e.textContent === arguments[0])
                && document.querySelectorAll('img').length === 0",
        &[json!(hostile)],
    )?;
    c.check(as_text == json!(true), "the hostile name is text in the DOM, and no element came of it");
    // A mark a reload would wipe; then a query the page has not seen.
    browser.eval("window.trackerMark = 1; return true;", &[])?;
    let live_name = format!("live.{ZONE}");
    let asked = std::time::Instant::now();
    dig(lab, &live_name, FIRST_DIG_PORT + QUERIES as u16 + 1)?;
    let top = browser.wait_for(
        "const li = document.querySelector('#rows li');
         return li && li.textContent.startsWith(arguments[0]) && window.trackerMark === 1 ? li.textContent : null;",
        &[json!(live_name)],
        WAIT,
    )?;
    c.check(top.is_string(), format!("the new query {live_name} at the top of the open log, without a reload: {top}"));
    // Not asserted (no wall-clock checks): the daemon's sweep, the 2 s live read and the fetch.
    println!("the new query was on the open page {:?} after it was asked", asked.elapsed());
    let stored_top = logged_names(t, key2).first().cloned();
    c.check(stored_top.as_deref() == Some(live_name.as_str()), format!("and in `tracker dns`: {stored_top:?}"));
    std::fs::write(artifacts.join("dashboard-log-phone.png"), browser.screenshot()?)?;

    let log = browser.quit()?;
    let _ = std::fs::copy(dir.join("net-log.json"), artifacts.join("dashboard-pages-net-log.json"));
    let own = url("/");
    let site = format!("http://{VPN_TUN_V4}");
    let requests = url_requests(&log);
    let page: Vec<_> =
        requests.iter().filter(|r| r.isolation_key.contains(&site) || r.initiator.starts_with(&site)).collect();
    let outside: Vec<&str> = page.iter().map(|r| r.url.as_str()).filter(|u| !u.starts_with(&own)).collect();
    c.check(outside.is_empty(), format!("the pages asked for something other than {own}: {outside:?}"));
    for wanted in ["/static/live.js", "/events", "/log/new?"] {
        c.check(page.iter().any(|r| r.url.contains(wanted)), format!("the pages requested {wanted}"));
    }
    Ok(())
}
