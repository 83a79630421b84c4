//! The detail pages: one domain, company, service or device over the period (`GET
//! /domain/{name}`, `/company/{name}`, `/service/{name}`, `/device/{key}`), from
//! [`crate::query::detail`], with a "Block…" link for the first three; a subject tracker never
//! saw is a 404 page that says so.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};

use super::{
    App,
    assets::CSS_PATH,
    overview::{Link, timeline_chart},
    params::{Period, RawView, View, encode},
};
use crate::{
    query::detail::{Detail, Found, LINES, Subject, Tally, Window, detail},
    timefmt,
    web::{page::human_bytes, svg::grouped},
};

/// A longer path segment names nothing tracker stores (a DNS name is at most 1,004 characters
/// in its escaped form): answered 404 without a read.
const MAX_NAME: usize = 1_024;

/// A line of a list: a name (escaped by the template), its page, its figures.
#[derive(Debug)]
pub struct DetailLine {
    pub name: String,
    pub href: Option<String>,
    pub figure: String,
}

/// A list of the page.
#[derive(Debug)]
pub struct ListSection {
    pub id: &'static str,
    pub title: &'static str,
    pub explain: String,
    pub lines: Vec<DetailLine>,
}

/// The page. Text fields are escaped by the template; `timeline_svg` is tracker's own chart,
/// which escapes its labels itself.
#[derive(Template)]
#[template(path = "dashboard/detail.html")]
pub struct DetailPage {
    pub css: &'static str,
    pub kind: &'static str,
    pub title: String,
    pub explain: String,
    pub period: &'static str,
    pub periods: Vec<Link>,
    pub connections: u64,
    pub connections_text: String,
    pub bytes: u64,
    pub bytes_text: String,
    pub queries: u64,
    pub queries_text: String,
    /// The link to the block page, for a domain, company or service.
    pub block: Option<String>,
    pub company: Option<Link>,
    pub timeline_svg: String,
    pub sections: Vec<ListSection>,
}

/// A subject tracker has never seen.
#[derive(Template)]
#[template(path = "dashboard/not_found.html")]
pub struct NotFoundPage {
    pub css: &'static str,
    pub what: String,
}

/// `GET /domain/{name}`.
pub async fn domain(state: State<Arc<App>>, Path(name): Path<String>, query: ViewQuery) -> Response {
    show(state, Subject::Domain(name), query).await
}

/// `GET /company/{name}`.
pub async fn company(state: State<Arc<App>>, Path(name): Path<String>, query: ViewQuery) -> Response {
    show(state, Subject::Company(name), query).await
}

/// `GET /service/{name}`.
pub async fn service(state: State<Arc<App>>, Path(name): Path<String>, query: ViewQuery) -> Response {
    show(state, Subject::Service(name), query).await
}

/// `GET /device/{key}`: a WireGuard public key (percent-encoded), a device's name or address.
pub async fn device(state: State<Arc<App>>, Path(key): Path<String>, query: ViewQuery) -> Response {
    show(state, Subject::Device(key), query).await
}

type ViewQuery = Result<Query<RawView>, QueryRejection>;

/// The parts of a subject a page needs: its kind as said, its path, and the block rule kind.
fn describe(subject: &Subject) -> (&'static str, String, Option<&'static str>) {
    match subject {
        Subject::Domain(n) => ("Domain", path("domain", n), Some("domain")),
        Subject::Company(n) => ("Company", path("company", n), Some("company")),
        Subject::Service(n) => ("Service", path("service", n), Some("service")),
        Subject::Device(k) => ("Device", path("device", k), None),
    }
}

/// The page of `name` under `/{kind}/`.
pub fn path(kind: &str, name: &str) -> String {
    format!("/{kind}/{}", encode(name))
}

async fn show(State(app): State<Arc<App>>, subject: Subject, query: ViewQuery) -> Response {
    let Ok(Query(raw)) = query else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(view) = View::parse(raw) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (kind, here, _) = describe(&subject);
    let name = match &subject {
        Subject::Domain(n) | Subject::Company(n) | Subject::Service(n) | Subject::Device(n) => n.clone(),
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return not_found(kind, &name);
    }
    let now = timefmt::now_ms();
    let window = Window { since_ms: now - view.period.ms(), until_ms: now, span: view.period.span() };
    let entities = Arc::clone(&app.entities);
    let read = {
        let subject = subject.clone();
        app.db.read(move |store| detail(store, &entities, &subject, window)).await
    };
    match read {
        Ok(Found::Detail(d)) => match page(&subject, &d, view.period, &here).render() {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!("dashboard: rendering a detail page: {e}");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        },
        Ok(Found::Unknown) => not_found(kind, &name),
        Err(e) => super::unavailable(&e),
    }
}

/// 404, saying plainly what tracker has not seen.
pub(super) fn not_found(kind: &str, name: &str) -> Response {
    let shown: String = name.chars().take(200).collect();
    let what = match kind {
        "Device" => format!("No device is known as \u{201c}{shown}\u{201d}."),
        _ => format!(
            "tracker has not seen the {} \u{201c}{shown}\u{201d}: no device used it while the database kept its rows.",
            kind.to_ascii_lowercase()
        ),
    };
    match (NotFoundPage { css: CSS_PATH, what }).render() {
        Ok(html) => (StatusCode::NOT_FOUND, Html(html)).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// "3 connections · 1.2 kB · 2 queries", leaving out what a line has none of.
fn figure(connections: u64, bytes: u64, queries: u64) -> String {
    let mut parts = Vec::new();
    if connections > 0 || queries == 0 {
        parts.push(format!("{} connection{}", grouped(connections), if connections == 1 { "" } else { "s" }));
        parts.push(human_bytes(bytes));
    }
    if queries > 0 {
        parts.push(format!("{} quer{}", grouped(queries), if queries == 1 { "y" } else { "ies" }));
    }
    parts.join(" · ")
}

fn lines(tallies: &[Tally], link: Option<&str>) -> Vec<DetailLine> {
    tallies
        .iter()
        .map(|t| DetailLine {
            name: t.name.clone(),
            href: link.map(|kind| path(kind, &t.key)),
            figure: figure(t.connections, t.bytes, t.queries),
        })
        .collect()
}

fn page(subject: &Subject, d: &Detail, period: Period, here: &str) -> DetailPage {
    let (kind, _, block_kind) = describe(subject);
    let cut = format!("The {LINES} with the most connections, then queries.");
    let section = |id, title, explain: String, tallies: &[Tally], link| ListSection {
        id,
        title,
        explain,
        lines: lines(tallies, link),
    };
    let explain = match subject {
        Subject::Domain(n) => format!("The name {n} and every name under it, as a domain rule blocks them."),
        Subject::Company(_) => match d.category {
            Some(c) => {
                format!("A company of tracker's table ({c}), with the domains it lists: {}.", d.listed.join(", "))
            }
            None => "A company named by the flows' labels.".into(),
        },
        Subject::Service(_) => match d.listed.is_empty() {
            false => {
                format!("An app or service of tracker's table, with the domains it lists: {}.", d.listed.join(", "))
            }
            true => "A service named by the flows' labels.".into(),
        },
        Subject::Device(_) => format!("A device of the VPN, at {}.", d.listed.join(", ")),
    };
    let mut sections = vec![
        section(
            "names",
            "Names",
            format!("Names used, with their connections and DNS queries. {cut}"),
            &d.names,
            Some("domain"),
        ),
        section("addresses", "Servers", format!("The addresses at the other end. {cut}"), &d.addresses, None),
    ];
    if let Subject::Device(_) = subject {
        sections.push(section("companies", "Companies", cut.clone(), &d.companies, Some("company")));
        sections.push(section("services", "Apps and services", cut.clone(), &d.services, Some("service")));
    } else {
        sections.push(section(
            "devices",
            "Devices",
            format!("The devices that used it. {cut}"),
            &d.devices,
            Some("device"),
        ));
    }
    DetailPage {
        css: CSS_PATH,
        kind,
        title: d.title.clone(),
        explain,
        period: period.label(),
        periods: Period::ALL
            .into_iter()
            .map(|p| Link {
                label: p.label().into(),
                href: View::default().with_period(p).href_at(here),
                current: p == period,
            })
            .collect(),
        connections: d.totals.connections,
        connections_text: grouped(d.totals.connections),
        bytes: d.totals.bytes,
        bytes_text: human_bytes(d.totals.bytes),
        queries: d.queries,
        queries_text: grouped(d.queries),
        block: block_kind.map(|k| format!("/block?kind={k}&target={}", encode(&d.title))),
        company: d.company.as_ref().map(|c| Link { label: c.clone(), href: path("company", c), current: false }),
        timeline_svg: timeline_chart(&d.timeline, period),
        sections,
    }
}
