//! The first page: over a period and for every device or one, connections and bytes, the
//! timeline, the names looked up, the companies (with or without the big players), services,
//! encryption, protocols, what the rules blocked, and the devices. Every figure comes from the
//! query layer `tracker report` uses, and every chart from the report page's own code.

use std::sync::Arc;

use anyhow::Result;
use askama::Template;
use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
};

use super::{
    App,
    assets::CSS_PATH,
    clock,
    detail::path,
    params::{Period, RawView, View},
};
use crate::{
    analysis::entity::EntityTable,
    query::{
        blocked::{Blocked, blocked},
        report::{self, BIG_PLAYERS, Report, ReportQuery},
        timeline::{Bucket, Span},
    },
    store::{Store, blocks::listing::BlockRow},
    timefmt,
    web::{
        page::{self, Heading},
        svg::{self, Column, grouped},
    },
};

/// Names the first page lists: the chart's own cut ([`page`]'s "others" line would be wrong
/// over a list that was cut before it).
const DOMAINS_SHOWN: u32 = 12;

/// A link of a row of choices.
#[derive(Debug)]
pub struct Link {
    pub label: String,
    pub href: String,
    pub current: bool,
}

/// A line of a list: a name (escaped by the template) and its figure.
#[derive(Debug)]
pub struct Line {
    pub name: String,
    pub figure: String,
    /// A rule in force: its id, for its unblock button.
    pub rule: Option<u32>,
    /// A timed rule's end, shown ticking after the figure.
    pub ends: Option<clock::Ends>,
}

/// The page. Text fields are escaped by the template; the `*_svg` fields are tracker's own
/// charts, which escape every label themselves and are inserted as they are.
#[derive(Template)]
#[template(path = "dashboard/overview.html")]
pub struct OverviewPage {
    pub css: &'static str,
    pub who: String,
    pub period: &'static str,
    pub since: String,
    pub until: String,
    pub periods: Vec<Link>,
    pub devices: Vec<Link>,
    pub connections: u64,
    pub connections_text: String,
    pub bytes: u64,
    pub bytes_text: String,
    pub encrypted_text: String,
    pub refused: u64,
    pub timeline_svg: String,
    pub domains: Heading,
    pub domains_svg: String,
    pub companies: Heading,
    pub hide: Link,
    pub hidden: Option<String>,
    pub companies_svg: String,
    pub served_by: Heading,
    pub served_by_svg: Option<String>,
    pub services: Heading,
    pub services_svg: String,
    pub encryption: Heading,
    pub encryption_explain: String,
    pub encryption_svg: [String; 2],
    pub protocols: Heading,
    pub protocols_svg: [String; 2],
    pub refused_lines: Vec<Line>,
    pub rules: Vec<Line>,
    /// Whether a rule in force is timed: the page then loads the countdown script.
    pub ticking: bool,
    pub devices_heading: Heading,
    pub devices_svg: String,
    /// The detail pages of the charts' lines, in the charts' order.
    pub details: Details,
    /// The live script's JSON of this view's headline figures.
    pub live: String,
    /// The session's CSRF token when logged in: the rules get unblock buttons.
    pub csrf: Option<String>,
}

/// Links to the detail pages of what a chart shows.
#[derive(Debug, Default)]
pub struct Details {
    pub domains: Vec<Link>,
    pub companies: Vec<Link>,
    pub services: Vec<Link>,
    pub devices: Vec<Link>,
}

/// What a read found: the page, or a device the database does not know.
enum Found {
    Page(Box<OverviewPage>),
    NoSuchDevice,
}

/// `GET /`.
pub async fn handler(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<RawView>, QueryRejection>,
) -> Response {
    let Ok(Query(raw)) = query else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(view) = View::parse(raw) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let entities = Arc::clone(&app.entities);
    let found = app.db.read(move |store| build(store, &entities, &view, timefmt::now_ms())).await;
    match found {
        Ok(Found::Page(mut page)) => {
            page.csrf = app.sessions.of(&headers).map(|(_, s)| s.csrf);
            match page.render() {
                Ok(html) => Html(html).into_response(),
                Err(e) => {
                    tracing::error!("dashboard: rendering the first page: {e}");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
        Ok(Found::NoSuchDevice) => (StatusCode::NOT_FOUND, "No such device.\n").into_response(),
        Err(e) => super::unavailable(&e),
    }
}

/// Reads everything the page shows, for `view` at `now_ms`.
fn build(store: &Store, entities: &EntityTable, view: &View, now_ms: i64) -> Result<Found> {
    let devices = store.devices()?;
    let clients = match &view.device {
        None => None,
        Some(d) => {
            let known = devices.0.iter().any(|k| k.public_key == *d) || d.parse::<std::net::IpAddr>().is_ok();
            if !known {
                return Ok(Found::NoSuchDevice);
            }
            let filter = store.client_filter(d)?;
            Some((filter.label, filter.addresses))
        }
    };
    let since_ms = now_ms - view.period.ms();
    let q = ReportQuery {
        since_ms,
        until_ms: now_ms,
        clients: clients.clone(),
        exclude: BIG_PLAYERS.iter().map(|s| (*s).to_owned()).collect(),
        min_queries: 1,
        domains_limit: Some(DOMAINS_SHOWN),
        source: 0,
    };
    let (r, buckets) = report::report_with_timeline(store, entities, &q, Some(view.period.span()))?;
    let addresses = clients.as_ref().map(|(_, a)| a.as_slice());
    let b = blocked(store, 0, since_ms, addresses, now_ms, &|_| None)?;

    let periods = Period::ALL
        .into_iter()
        .map(|p| Link { label: p.label().into(), href: view.with_period(p).href(), current: p == view.period })
        .collect();
    let mut device_links =
        vec![Link { label: "All devices".into(), href: view.with_device(None).href(), current: view.device.is_none() }];
    device_links.extend(devices.0.iter().map(|d| Link {
        label: d.label(),
        href: view.with_device(Some(&d.public_key)).href(),
        current: view.device.as_deref() == Some(d.public_key.as_str()),
    }));
    let hide = if view.hide_big {
        Link { label: "Show every company".into(), href: view.with_hide_big(false).href(), current: false }
    } else {
        Link { label: "Hide the big players".into(), href: view.with_hide_big(true).href(), current: false }
    };
    let companies_svg = match (&r.companies_excluding, view.hide_big) {
        (Some(ex), true) => page::companies_excluding_chart(ex),
        _ => page::companies_chart(&r),
    };
    let encrypted = r.encryption.iter().find(|e| e.class == "encrypted").map_or(0.0, |e| e.share.connections_pct);
    let [enc_conn, enc_bytes] = page::encryption_charts(&r);
    let [apps, transports] = page::protocol_charts(&r);
    let (refused_lines, rules) = blocked_lines(&b, now_ms);
    Ok(Found::Page(Box::new(OverviewPage {
        css: CSS_PATH,
        who: r.client.clone().unwrap_or_else(|| "All devices".into()),
        period: view.period.label(),
        since: minute(&r.since),
        until: minute(&r.until),
        periods,
        devices: device_links,
        connections: r.totals.connections,
        connections_text: grouped(r.totals.connections),
        bytes: r.totals.bytes,
        bytes_text: page::human_bytes(r.totals.bytes),
        encrypted_text: if r.totals.connections == 0 { "–".into() } else { format!("{encrypted:.0} %") },
        refused: b.queries_refused,
        timeline_svg: timeline_chart(&buckets, view.period),
        domains: page::DOMAINS,
        domains_svg: page::domains_chart(&r),
        companies: page::COMPANIES,
        hide,
        hidden: view.hide_big.then(|| BIG_PLAYERS.join(", ")),
        companies_svg,
        served_by: page::SERVED_BY,
        served_by_svg: page::served_by_chart(&r),
        services: page::SERVICES,
        services_svg: page::services_chart(&r),
        encryption: page::ENCRYPTION,
        encryption_explain: page::encryption_explain(&r),
        encryption_svg: [enc_conn, enc_bytes],
        protocols: page::PROTOCOLS,
        protocols_svg: [apps, transports],
        refused_lines,
        ticking: rules.iter().any(|l| l.ends.is_some()),
        rules,
        devices_heading: page::DEVICES,
        devices_svg: page::devices_chart(&r),
        details: details(&r, view.period),
        live: View { hide_big: false, ..view.clone() }.href_at("/totals"),
        csrf: None,
    })))
}

/// The charts' lines as links to their pages, over the same period: named companies (a name no
/// entry knows is its domain's page), local and unnamed lines left out.
fn details(r: &Report, period: Period) -> Details {
    let link = |label: &str, kind: &str, key: &str| Link {
        label: label.to_owned(),
        href: View::default().with_period(period).href_at(&path(kind, key)),
        current: false,
    };
    let shown = DOMAINS_SHOWN as usize;
    Details {
        domains: r.domains.iter().take(shown).map(|d| link(&d.domain, "domain", &d.domain)).collect(),
        companies: r
            .companies
            .iter()
            .filter_map(|c| match c.kind {
                "company" => Some(link(&c.name, "company", &c.name)),
                "domain" => Some(link(&c.name, "domain", &c.name)),
                _ => None,
            })
            .take(shown)
            .collect(),
        services: r.services.iter().take(shown).map(|s| link(&s.name, "service", &s.name)).collect(),
        devices: r
            .devices
            .iter()
            .map(|d| link(&d.device, "device", d.public_key.as_deref().unwrap_or(&d.device)))
            .collect(),
    }
}

/// The refusals per rule, and the rules in force with what each stopped since it was made.
fn blocked_lines(b: &Blocked, now_ms: i64) -> (Vec<Line>, Vec<Line>) {
    let refused = b
        .refused
        .iter()
        .map(|l| Line {
            name: l.rule.as_ref().map_or_else(|| format!("rule {} (removed)", l.rule_id), |(k, r)| format!("{k} {r}")),
            figure: format!(
                "{} refused, {} device{}",
                grouped(l.queries),
                l.clients,
                if l.clients == 1 { "" } else { "s" }
            ),
            rule: None,
            ends: None,
        })
        .collect();
    let rules = b
        .rules
        .iter()
        .map(|r: &BlockRow| {
            let mut name = format!("{} {}", r.kind, r.rule);
            if r.device != "all" {
                name.push_str(&format!(" (for {})", r.device));
            }
            let figure = format!(
                "queries refused: {} · packets dropped: {}",
                grouped(r.queries_refused),
                grouped(r.packets_dropped)
            );
            let ends = r.expires_ms.filter(|e| *e > now_ms).map(|e| clock::Ends::new(r.id, e, now_ms));
            Line { name, figure, rule: Some(r.id), ends }
        })
        .collect();
    (refused, rules)
}

/// Connections per bucket: hours labelled every six hours, days by their date.
pub(super) fn timeline_chart(buckets: &[Bucket], period: Period) -> String {
    let names: Vec<(String, String)> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let t = timefmt::rfc3339(b.start_ms);
            let (date, hour) = (&t[..10], &t[11..13]);
            match period.span() {
                Span::Hour => {
                    let tick =
                        if b.start_ms % (6 * Span::Hour.ms()) == 0 { format!("{hour}:00") } else { String::new() };
                    (tick, format!("{date} {hour}:00 UTC"))
                }
                Span::Day => {
                    let every = if period == Period::Month { 7 } else { 1 };
                    let tick = if i % every == 0 { date[5..].to_owned() } else { String::new() };
                    (tick, format!("{date} (UTC)"))
                }
            }
        })
        .collect();
    let columns: Vec<Column<'_>> =
        buckets.iter().zip(&names).map(|(b, (tick, name))| Column { tick, name, value: b.connections }).collect();
    let per = match period.span() {
        Span::Hour => "hour",
        Span::Day => "day",
    };
    svg::column_chart(&format!("Connections per {per} (UTC)"), &columns)
}

/// An RFC 3339 time to the minute, as a person reads it: `2026-12-07 14:05 UTC`.
fn minute(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => rfc3339.to_owned(),
    }
}
