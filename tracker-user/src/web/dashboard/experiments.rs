//! `GET /experiments`: the timed blocks, running (with their countdown and an end-now button)
//! and past; and `GET /experiments/{id}`: one rule's page, what broke while it was on beside
//! the same length of time before it, from the query `tracker experiment --report` prints.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
};

use super::{App, assets::CSS_PATH, changes::message, clock};
use crate::{
    analysis::entity::EntityTable,
    query::experiment::{self, BlockWindow},
    rules::cover::stored_device_label,
    store::{
        Store,
        blocks::{BlockFilter, BlockRow},
    },
    timefmt,
    web::svg::grouped,
};

/// Timed blocks the list shows, newest first.
const LISTED: usize = 50;
/// Lines per table of a report.
const REPORT_LINES: usize = 25;

/// A rule as the pages list it.
pub struct RuleLine {
    pub id: u32,
    pub title: String,
    /// `ends in 28 min (at 14:05 UTC)`, `ended (expired) 2026-12-07 13:05 UTC`, `until removed`.
    pub state: String,
    pub running: bool,
    /// A running timed block's end, for the page to show ticking (else `state` says it all).
    pub ends: Option<clock::Ends>,
}

impl RuleLine {
    fn of(r: &BlockRow, now_ms: i64) -> Self {
        let mut title = format!("{} {}", r.kind, r.rule);
        if r.device != "all" {
            title.push_str(&format!(" (for {})", r.device));
        }
        let running = r.ended.is_none() && r.expires_ms.is_none_or(|e| e > now_ms);
        let state = match (&r.ended, &r.end_reason, r.expires_ms) {
            (Some(at), why, _) => format!("ended ({}) {}", why.as_deref().unwrap_or("ended"), minute(at)),
            (None, _, Some(e)) if e <= now_ms => format!("ended (expired) {}", minute(&timefmt::rfc3339(e))),
            (None, _, Some(e)) => format!("ends in {} (at {})", clock::countdown(e - now_ms), clock::time_of_day(e)),
            (None, _, None) => "until removed".into(),
        };
        let ends = r.expires_ms.filter(|_| running).map(|e| clock::Ends::new(r.id, e, now_ms));
        Self { id: r.id, title, state, running, ends }
    }
}

/// `2026-12-07 13:05 UTC` from an RFC 3339 time.
fn minute(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => rfc3339.to_owned(),
    }
}

/// Every rule's row (ended ones too), as `tracker blocks --expired` lists them.
fn rows(store: &Store, now_ms: i64) -> anyhow::Result<Vec<BlockRow>> {
    let devices = store.devices()?;
    let label = |stored: &str| stored_device_label(&devices, stored);
    store.block_rows(BlockFilter { ended: true, kind: None }, now_ms, &|_| None, &label)
}

#[derive(Template)]
#[template(path = "dashboard/experiments.html")]
pub struct ExperimentsPage {
    pub css: &'static str,
    pub running: Vec<RuleLine>,
    pub past: Vec<RuleLine>,
    pub csrf: Option<String>,
}

/// `GET /experiments`.
pub async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let csrf = app.sessions.of(&headers).map(|(_, s)| s.csrf);
    let read = app
        .db
        .read(|store| {
            let now = timefmt::now_ms();
            let mut timed: Vec<RuleLine> =
                rows(store, now)?.iter().filter(|r| r.expires_ms.is_some()).map(|r| RuleLine::of(r, now)).collect();
            timed.reverse();
            timed.truncate(LISTED);
            Ok(timed)
        })
        .await;
    match read {
        Ok(timed) => {
            let (running, past) = timed.into_iter().partition(|r| r.running);
            render(ExperimentsPage { css: CSS_PATH, running, past, csrf })
        }
        Err(e) => super::unavailable(&e),
    }
}

/// A row of a report table: a name and its figures, in the table's column order.
pub struct Row {
    pub name: String,
    pub cells: Vec<String>,
}

/// A report table.
pub struct Table {
    pub id: &'static str,
    pub title: &'static str,
    pub columns: &'static [&'static str],
    pub rows: Vec<Row>,
    pub more: usize,
}

#[derive(Template)]
#[template(path = "dashboard/experiment.html")]
pub struct ExperimentPage {
    pub css: &'static str,
    pub rule: RuleLine,
    pub during: String,
    pub before: String,
    pub totals: Vec<Total>,
    pub tables: Vec<Table>,
    pub csrf: Option<String>,
}

/// `GET /experiments/{id}`.
pub async fn report(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u32>() else {
        return message(StatusCode::NOT_FOUND, "No such rule", "Rules are numbered: /experiments/12.");
    };
    let csrf = app.sessions.of(&headers).map(|(_, s)| s.csrf);
    let entities = Arc::clone(&app.entities);
    let read = app.db.read(move |store| build(store, &entities, id, timefmt::now_ms())).await;
    match read {
        Ok(Some(mut page)) => {
            page.csrf = csrf;
            render(page)
        }
        Ok(None) => message(StatusCode::NOT_FOUND, "No such rule", &format!("No rule has the id {id}.")),
        Err(e) => super::unavailable(&e),
    }
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("dashboard: rendering an experiments page: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn build(store: &Store, entities: &EntityTable, id: u32, now_ms: i64) -> anyhow::Result<Option<ExperimentPage>> {
    let Some(row) = rows(store, now_ms)?.into_iter().find(|r| r.id == id) else { return Ok(None) };
    let w = experiment::block_window(store, entities, id, now_ms)?;
    let so_far = if w.running { " so far" } else { "" };
    Ok(Some(ExperimentPage {
        css: CSS_PATH,
        rule: RuleLine::of(&row, now_ms),
        during: format!(
            "{} to {} ({:.0} min{so_far})",
            minute(&timefmt::rfc3339(w.during.start)),
            minute(&timefmt::rfc3339(w.during.end)),
            w.minutes
        ),
        before: format!("{} to {}", minute(&timefmt::rfc3339(w.before.start)), minute(&timefmt::rfc3339(w.before.end))),
        totals: totals(&w),
        tables: tables(&w),
        csrf: None,
    }))
}

/// A headline figure of a report: `value` for machines, `text` for people.
pub struct Total {
    pub id: &'static str,
    pub value: u64,
    pub text: String,
    pub what: &'static str,
}

fn totals(w: &BlockWindow) -> Vec<Total> {
    let t = &w.totals;
    [
        ("queries-refused", "DNS queries refused", t.queries_refused),
        ("names-refused", "names refused", t.names_refused),
        ("devices-affected", "devices affected", t.devices_affected),
        ("queries-before", "queries for its names before it", t.queries_before),
        ("attempts-before", "connections to it before", t.attempts_before),
        ("attempts-during", "connections to it during", t.attempts_during),
        ("failed-during", "of those failed", t.failed_during),
        ("packets-dropped", "packets dropped", t.packets_dropped),
    ]
    .into_iter()
    .map(|(id, what, value)| Total { id, value, text: grouped(value), what })
    .collect()
}

fn table<T>(
    id: &'static str,
    title: &'static str,
    columns: &'static [&'static str],
    lines: &[T],
    row: impl Fn(&T) -> Row,
) -> Table {
    Table {
        id,
        title,
        columns,
        rows: lines.iter().take(REPORT_LINES).map(row).collect(),
        more: lines.len().saturating_sub(REPORT_LINES),
    }
}

fn tables(w: &BlockWindow) -> Vec<Table> {
    let n = |v: u64| grouped(v);
    vec![
        table(
            "names",
            "Names asked for while it was on",
            &["name", "refused", "devices", "retries a minute", "asked before"],
            &w.names,
            |l| Row {
                name: l.name.clone(),
                cells: vec![n(l.refused), n(l.devices), format!("{:.1}", l.retries_per_min), n(l.queries_before)],
            },
        ),
        table(
            "entities",
            "Companies and services of those names",
            &["company / service", "names", "refused", "devices"],
            &w.entities,
            |e| Row {
                name: [e.company.as_deref(), e.service.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" / "),
                cells: vec![n(e.names), n(e.refused), n(e.devices)],
            },
        ),
        table(
            "attempts",
            "Connections to its names or addresses (failed: nothing came back)",
            &["to", "before", "failed before", "during", "failed during"],
            &w.attempts,
            |a| Row {
                name: a.target.clone(),
                cells: vec![n(a.flows_before), n(a.failed_before), n(a.flows_during), n(a.failed_during)],
            },
        ),
        table(
            "devices",
            "Devices: everything each did, before and during",
            &["device", "refused", "connections before", "during", "failed during"],
            &w.devices,
            |d| Row {
                name: d.device.clone(),
                cells: vec![n(d.refused), n(d.flows_before), n(d.flows_during), n(d.failed_during)],
            },
        ),
    ]
}
