//! The query log (`GET /log`) and the connections (`GET /flows`): newest first, a name search
//! and a device filter in a plain GET form, an "Older" link carrying the keyset cursor, every
//! page reading a bounded number of rows ([`crate::query::listing`]); and their new rows as
//! JSON for the live script (`GET /log/new`, `/flows/new`).

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{App, assets::CSS_PATH, detail, live::json, params::encode};
use crate::{
    query::listing::{self, Cursor, FlowLine, ListQuery, LogRow, Page},
    store::{Store, devices::DeviceList},
    timefmt,
    web::page::human_bytes,
};

/// The longest search text taken; a longer one is answered 400.
const MAX_SEARCH: usize = 200;

/// Which list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Log,
    Flows,
}

impl List {
    fn path(self) -> &'static str {
        match self {
            Self::Log => "/log",
            Self::Flows => "/flows",
        }
    }
}

/// The query string as sent; anything else is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct RawList {
    q: Option<String>,
    device: Option<String>,
    before: Option<String>,
    after: Option<i64>,
}

/// What a list shows, parsed strictly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Filter {
    search: Option<String>,
    device: Option<String>,
    before: Option<Cursor>,
}

impl Filter {
    fn parse(raw: &RawList) -> Option<Self> {
        let search = raw.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        if search.is_some_and(|q| q.len() > MAX_SEARCH) {
            return None;
        }
        let before = match raw.before.as_deref() {
            None | Some("") => None,
            Some(b) => Some(Cursor::parse(b)?),
        };
        Some(Self { search: search.map(str::to_owned), device: raw.device.clone().filter(|d| !d.is_empty()), before })
    }

    /// The query string of this filter at `before` (none: the newest rows).
    fn query(&self, before: Option<Cursor>) -> String {
        let mut parts = Vec::new();
        if let Some(q) = &self.search {
            parts.push(format!("q={}", encode(q)));
        }
        if let Some(d) = &self.device {
            parts.push(format!("device={}", encode(d)));
        }
        if let Some(c) = before {
            parts.push(format!("before={}", c.to_param()));
        }
        parts.join("&")
    }

    fn href(&self, path: &str, before: Option<Cursor>) -> String {
        let q = self.query(before);
        if q.is_empty() { path.to_owned() } else { format!("{path}?{q}") }
    }
}

/// One row as the page and the live script show it: the name (escaped by the template, set as
/// text by the script), its page, and a line of facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowView {
    pub id: i64,
    pub name: String,
    pub href: Option<String>,
    pub detail: String,
}

/// A device to choose in the form.
#[derive(Debug)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "dashboard/list.html")]
pub struct ListPage {
    pub css: &'static str,
    pub title: &'static str,
    pub explain: &'static str,
    pub action: &'static str,
    pub search: String,
    pub devices: Vec<Choice>,
    pub rows: Vec<RowView>,
    pub older: Option<String>,
    pub newest: Option<String>,
    /// The live script's JSON for rows after `after`; only on the newest page.
    pub live: Option<String>,
    pub after: i64,
    pub note: Option<String>,
}

/// New rows for the live script.
#[derive(Debug, Serialize)]
pub struct NewRows {
    pub rows: Vec<RowView>,
    pub through: i64,
}

type RawQuery = Result<Query<RawList>, QueryRejection>;

pub async fn log(State(app): State<Arc<App>>, query: RawQuery) -> Response {
    page(app, List::Log, query).await
}

pub async fn flows(State(app): State<Arc<App>>, query: RawQuery) -> Response {
    page(app, List::Flows, query).await
}

pub async fn log_new(State(app): State<Arc<App>>, query: RawQuery) -> Response {
    newer(app, List::Log, query).await
}

pub async fn flows_new(State(app): State<Arc<App>>, query: RawQuery) -> Response {
    newer(app, List::Flows, query).await
}

/// A page's rows as shown, with its paging facts, and the devices for the form.
struct Shown {
    rows: Vec<RowView>,
    page: Page<()>,
    devices: DeviceList,
}

/// The rows of `page` as shown, its facts kept.
fn shown<T>(page: Page<T>, devices: DeviceList, view: fn(&T, &DeviceList) -> RowView) -> Shown {
    let rows = page.rows.iter().map(|r| view(r, &devices)).collect();
    let page = Page { rows: Vec::new(), older: page.older, scan_limited: page.scan_limited, newest_id: page.newest_id };
    Shown { rows, page, devices }
}

/// Whether a page's `device` names one: a stored device's public key, or an address (as the
/// first page takes them).
pub(super) fn known_device(store: &Store, device: &str) -> anyhow::Result<bool> {
    Ok(store.devices()?.0.iter().any(|k| k.public_key == device) || device.parse::<std::net::IpAddr>().is_ok())
}

/// The list query of `f`, with the device's addresses; `None` for a device no one knows.
fn list_query(store: &Store, f: &Filter) -> anyhow::Result<Option<ListQuery>> {
    let clients = match &f.device {
        None => None,
        Some(d) if !known_device(store, d)? => return Ok(None),
        Some(d) => Some(store.client_filter(d)?.addresses),
    };
    Ok(Some(ListQuery { before: f.before, search: f.search.clone(), clients, ..ListQuery::default() }))
}

async fn page(app: Arc<App>, list: List, query: RawQuery) -> Response {
    let Some(filter) = query.ok().and_then(|Query(raw)| Filter::parse(&raw)) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let f = filter.clone();
    let read = app
        .db
        .read(move |store| {
            let Some(q) = list_query(store, &f)? else { return Ok(None) };
            let devices = store.devices()?;
            Ok(Some(match list {
                List::Log => shown(listing::log_page(store, &q)?, devices, log_view),
                List::Flows => shown(listing::flows_page(store, &q)?, devices, flow_view),
            }))
        })
        .await;
    let Shown { rows, page, devices } = match read {
        Ok(Some(shown)) => shown,
        Ok(None) => return detail::not_found("Device", filter.device.as_deref().unwrap_or("")),
        Err(e) => return super::unavailable(&e),
    };
    let (title, explain) = match list {
        List::Log => ("Query log", "The names the devices looked up in DNS, newest first."),
        List::Flows => ("Connections", "The connections the devices made, newest first, by when they started."),
    };
    let path = list.path();
    let newest_page = filter.before.is_none();
    let rendered = ListPage {
        css: CSS_PATH,
        title,
        explain,
        action: path,
        search: filter.search.clone().unwrap_or_default(),
        devices: devices
            .0
            .iter()
            .map(|d| Choice {
                value: d.public_key.clone(),
                label: d.label(),
                selected: filter.device.as_deref() == Some(d.public_key.as_str()),
            })
            .collect(),
        rows,
        older: page.older.map(|c| filter.href(path, Some(c))),
        newest: (!newest_page).then(|| filter.href(path, None)),
        live: newest_page.then(|| filter.href(&format!("{path}/new"), None)),
        after: page.newest_id,
        note: page.scan_limited.then(|| {
            format!(
                "This page searched {} rows and stopped there; older rows may match too.",
                crate::web::svg::grouped(listing::SCAN_ROWS as u64)
            )
        }),
    }
    .render();
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("dashboard: rendering {path}: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn newer(app: Arc<App>, list: List, query: RawQuery) -> Response {
    let Some((filter, after)) = query.ok().and_then(|Query(raw)| Some((Filter::parse(&raw)?, raw.after?))) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let read = app
        .db
        .read(move |store| {
            let Some(q) = list_query(store, &filter)? else { return Ok(None) };
            let devices = store.devices()?;
            Ok(Some(match list {
                List::Log => {
                    let n = listing::log_newer(store, after, &q)?;
                    NewRows { rows: n.rows.iter().map(|r| log_view(r, &devices)).collect(), through: n.through }
                }
                List::Flows => {
                    let n = listing::flows_newer(store, after, &q)?;
                    NewRows { rows: n.rows.iter().map(|r| flow_view(r, &devices)).collect(), through: n.through }
                }
            }))
        })
        .await;
    match read {
        Ok(Some(rows)) => json(&rows),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => super::unavailable(&e),
    }
}

/// `2026-12-07 14:05:03 UTC`.
fn second(ms: i64) -> String {
    let t = timefmt::rfc3339(ms);
    match (t.get(..10), t.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => t,
    }
}

fn device_label(devices: &DeviceList, client: &str) -> String {
    client.parse().ok().and_then(|ip| devices.of(ip)).map_or_else(|| client.to_owned(), |d| d.label())
}

fn log_view(r: &LogRow, devices: &DeviceList) -> RowView {
    let outcome = match (r.blocked_by, &r.rcode) {
        (Some(rule), _) => format!("refused by rule {rule}"),
        (None, Some(rcode)) => rcode.clone(),
        (None, None) => "no answer seen".into(),
    };
    RowView {
        id: r.id,
        name: r.name.clone(),
        href: Some(detail::path("domain", &r.name)),
        detail: format!("{} · {} · {} · {outcome}", second(r.ts), device_label(devices, &r.client), r.qtype),
    }
}

fn flow_view(r: &FlowLine, devices: &DeviceList) -> RowView {
    let mut facts = vec![second(r.ts), device_label(devices, &r.client)];
    let port = if r.remote_port == 0 { String::new() } else { format!(" {}", r.remote_port) };
    facts.push(format!("{}{port}", r.protocol));
    if let Some(app) = r.app_protocol.as_deref().filter(|a| *a != "unknown") {
        facts.push(app.to_owned());
    }
    facts.push(human_bytes(r.bytes));
    if let Some(c) = &r.company {
        facts.push(c.clone());
    }
    if r.name.is_some() {
        facts.push(r.remote.clone());
    }
    RowView {
        id: r.id,
        name: r.name.clone().unwrap_or_else(|| r.remote.clone()),
        href: r.name.as_deref().map(|n| detail::path("domain", n)),
        detail: facts.join(" · "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(q: Option<&str>, device: Option<&str>, before: Option<&str>) -> RawList {
        RawList { q: q.map(Into::into), device: device.map(Into::into), before: before.map(Into::into), after: None }
    }

    #[test]
    fn filters_parse_strictly_and_link_back_to_themselves() {
        let key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        let f = Filter::parse(&raw(Some("  a&b "), Some(key), Some("1800000000000.42"))).unwrap();
        assert_eq!(f.search.as_deref(), Some("a&b"));
        assert_eq!(f.before, Some(Cursor { ts: 1_800_000_000_000, id: 42 }));
        let older = f.href("/log", Some(Cursor { ts: 5, id: 6 }));
        assert_eq!(older, "/log?q=a%26b&device=xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg%3D&before=5.6");
        assert_eq!(f.href("/log/new", None), "/log/new?q=a%26b&device=xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg%3D");
        assert_eq!(Filter::parse(&raw(Some(" "), Some(""), Some(""))), Some(Filter::default()));
        assert_eq!(Filter::default().href("/flows", None), "/flows");
        assert_eq!(Filter::parse(&raw(None, None, Some("<b>"))), None, "a bad cursor");
        assert_eq!(Filter::parse(&raw(Some(&"x".repeat(MAX_SEARCH + 1)), None, None)), None, "too long a search");
    }
}
