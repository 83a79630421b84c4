//! The report's HTML page in a real browser: `tracker report --html` on a database with hostile
//! names, opened from a file by Debian's headless Chromium, which must render every chart,
//! fetch nothing and log no console error. The screenshot is kept in target/test-artifacts.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, ensure};
use tracker::{
    analysis::{
        addr::AddrClass,
        dns::Transport,
        labels::Labeler,
        names::{FlowName, NameSource},
        protocol::{AppProtocol, Classification, Decided},
    },
    store::{DnsRecord, FlowRecord, Store},
    timefmt,
};
use tracker_tests::{cmd, tracker_bin};

/// A name a hostile resolver or SNI could hand over: markup, quotes and an escape sequence.
const HOSTILE: &str = "<script>alert(1)</script>\"'&\u{1b}[2J.evil.example";

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists())
}

fn flow(n: u64, name: &str, app: AppProtocol, bytes: u64) -> FlowRecord {
    let now = timefmt::now_ms();
    let name = FlowName { name: Some(name.into()), source: Some(NameSource::Dns), cname: None };
    let app = Classification { protocol: app, decided: Decided::Payload };
    FlowRecord {
        kernel_first_ns: n,
        client: "10.77.0.2".parse().unwrap(),
        remote: "203.0.113.10".parse().unwrap(),
        protocol: 6,
        client_port: 40_000 + n as u16,
        remote_port: 443,
        packets_up: 3,
        bytes_up: bytes,
        packets_down: 2,
        bytes_down: bytes / 2,
        tcp_flags: 0x12,
        first_seen_ms: now - 60_000 + n as i64,
        last_seen_ms: now,
        labels: Labeler::default().label(&name, AddrClass::Documentation, app),
        name,
        remote_class: AddrClass::Documentation,
    }
}

#[test]
fn the_report_page_renders_offline_in_chromium_with_names_escaped() -> Result<()> {
    let Some(browser) = chromium() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "chromium is missing; `cargo xtask setup` installs it");
        println!("skipped: chromium is not installed (cargo xtask setup installs it)");
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("tracker-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("t.db");
    let mut store = Store::open(&db)?;
    let flows = [
        flow(1, "gateway.icloud.com", AppProtocol::Tls, 50_000),
        flow(2, "www.google.com", AppProtocol::Quic, 20_000),
        flow(3, "sdk.iad-01.braze.com", AppProtocol::Tls, 3_000),
        flow(4, HOSTILE, AppProtocol::Http, 1_000),
    ];
    store.upsert_flows("boot", &flows)?;
    // Names reach the page through the DNS log's domains section, as queried.
    let query = DnsRecord {
        ts_ms: timefmt::now_ms() - 30_000,
        answered_ms: None,
        client: "10.77.0.2".parse()?,
        client_port: 40_000,
        resolver: "10.77.0.1".parse()?,
        resolver_port: 53,
        transport: Transport::Udp,
        dns_id: 1,
        qname: HOSTILE.into(),
        qtype: "A".into(),
        rcode: None,
        truncated: false,
        answers: vec![],
        blocked_by: None,
    };
    store.insert_dns(&[query])?;
    drop(store);

    let page = dir.join("report.html");
    let out = Command::new(tracker_bin())
        .arg("--db")
        .arg(&db)
        .args(["report", "--since", "1h", "--format", "json", "--html"])
        .arg(&page)
        .output()
        .context("running tracker report --html")?;
    ensure!(out.status.success(), "tracker report --html failed: {}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page)?;
    let lower = html.to_ascii_lowercase();
    for outside in ["<script", "src=", "href", "url(", "@import", "<link", "http://", "https://", "//"] {
        assert!(!lower.contains(outside), "the page refers to something outside: {outside}");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"), "the hostile name, escaped");
    assert!(!html.contains('\u{1b}'), "no raw escape character");
    let charts = html.matches("<svg").count();
    assert!(
        charts >= 9,
        "{charts} charts: domains, two company shares, services, two encryption, protocols x2, devices"
    );

    // Rendered from the file, with every network name unresolvable: whatever the page tried to
    // fetch would be logged as a failed load.
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/report-page.png");
    std::fs::create_dir_all(shot.parent().unwrap())?;
    let _ = std::fs::remove_file(&shot);
    let base_args = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=390,3000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()));
    };
    let mut dom = Command::new(&browser);
    base_args(&mut dom);
    dom.arg("--dump-dom").arg(format!("file://{}", page.display()));
    let dumped = dom.output().context("running chromium --dump-dom")?;
    ensure!(dumped.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&dumped.stderr));
    let rendered = String::from_utf8_lossy(&dumped.stdout);
    let log = String::from_utf8_lossy(&dumped.stderr);
    assert_eq!(rendered.matches("<svg").count(), charts, "every chart is in the rendered page");
    assert!(!rendered.contains("<script"), "no script element came out of a name");
    for bad in ["CONSOLE", "net::ERR", "Failed to load", "Refused to"] {
        assert!(!log.contains(bad), "chromium logged {bad}: {log}");
    }
    let mut snap = Command::new(&browser);
    base_args(&mut snap);
    snap.arg(format!("--screenshot={}", shot.display())).arg(format!("file://{}", page.display()));
    cmd::run(&mut snap).context("taking the screenshot")?;
    let png = std::fs::read(&shot).context("reading the screenshot")?;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    println!("screenshot: {} ({} bytes)", shot.display(), png.len());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
