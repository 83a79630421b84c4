//! `GET /block?kind=domain|company|service&target=NAME[&client=DEVICE]`: what a block would
//! cover and would have stopped last week (the dry run's own query, [`preview`]), with the
//! shared addresses it leaves open, and the buttons that make it: for good, for 30 minutes, an
//! hour, or until midnight. The detail pages link here; the change itself is [`super::changes`].

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;

use super::{App, assets::CSS_PATH, changes, clock, params::encode};
use crate::{
    analysis::entity::EntityTable,
    query::preview,
    rules::cover::{self, Target},
    store::{
        Store,
        blocks::{RuleKind, active_rules},
    },
    timefmt,
    web::svg::grouped,
};

/// Names and devices the page lists, most first.
const LISTED: usize = 10;
/// Shared addresses listed, with their other names.
const SHARED_LISTED: usize = 5;

/// What the page blocks: the name rules a person picks from a page (an address or a list is
/// the CLI's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Domain,
    Company,
    Service,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "domain" => Some(Self::Domain),
            "company" => Some(Self::Company),
            "service" => Some(Self::Service),
            _ => None,
        }
    }

    pub fn key(self) -> &'static str {
        self.rule_kind().as_str()
    }

    pub fn rule_kind(self) -> RuleKind {
        match self {
            Self::Domain => RuleKind::Domain,
            Self::Company => RuleKind::Company,
            Self::Service => RuleKind::Service,
        }
    }

    /// What the rules layer resolves: a domain as given (never a public suffix from a page).
    pub fn target(self, text: &str) -> Target {
        match self {
            Self::Domain => Target::Domain { text: text.to_owned(), wide: false },
            Self::Company => Target::Company(text.to_owned()),
            Self::Service => Target::Service(text.to_owned()),
        }
    }
}

/// How long a block from the page lasts: the choices of its buttons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    UntilRemoved,
    HalfHour,
    Hour,
    /// Until the next midnight on the VPN host's clock.
    Tomorrow,
}

impl Length {
    pub const ALL: [Length; 4] = [Self::UntilRemoved, Self::HalfHour, Self::Hour, Self::Tomorrow];

    /// Its value in the form.
    pub fn key(self) -> &'static str {
        match self {
            Self::UntilRemoved => "",
            Self::HalfHour => "30m",
            Self::Hour => "1h",
            Self::Tomorrow => "tomorrow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.key() == s)
    }

    /// The end of a block made at `now_ms`; `Err` only if the host's clock cannot say when
    /// midnight is.
    pub fn expires(self, now_ms: i64) -> Result<Option<i64>, &'static str> {
        const MINUTE: i64 = 60_000;
        match self {
            Self::UntilRemoved => Ok(None),
            Self::HalfHour => Ok(Some(now_ms + 30 * MINUTE)),
            Self::Hour => Ok(Some(now_ms + 60 * MINUTE)),
            Self::Tomorrow => {
                clock::next_midnight(now_ms).map(|(m, _)| Some(m)).ok_or("the VPN host cannot tell its midnight")
            }
        }
    }

    /// The button's words at `now_ms`.
    pub fn label(self, now_ms: i64) -> String {
        match self {
            Self::UntilRemoved => "Block".into(),
            Self::HalfHour => "Block for 30 minutes".into(),
            Self::Hour => "Block for 1 hour".into(),
            Self::Tomorrow => match clock::next_midnight(now_ms) {
                Some((_, zone)) => format!("Block until midnight ({zone}, the VPN host's clock)"),
                None => "Block until midnight".into(),
            },
        }
    }
}

/// The query string as sent.
#[derive(Debug, Default, Deserialize)]
pub struct RawBlock {
    kind: Option<String>,
    target: Option<String>,
    client: Option<String>,
}

/// One of the page's buttons.
pub struct Button {
    pub length: &'static str,
    pub label: String,
}

/// A line of a list: a name and its figure.
pub struct Line {
    pub name: String,
    pub figure: String,
}

#[derive(Template)]
#[template(path = "dashboard/block.html")]
pub struct BlockPage {
    pub css: &'static str,
    pub kind: &'static str,
    /// The rule's text as the rules layer spells it (the entity's name, the domain in lower
    /// case).
    pub rule: String,
    pub client: String,
    pub who: String,
    pub domains: usize,
    pub domains_shown: String,
    pub queries: u64,
    pub queries_text: String,
    pub connections: u64,
    pub connections_text: String,
    pub devices: usize,
    pub per_device: Vec<Line>,
    pub names: Vec<Line>,
    pub names_more: usize,
    pub shared_note: String,
    pub shared: Vec<Line>,
    /// The active rule already doing this, if any: its id, and its end if it is timed.
    pub existing: Option<(u32, Option<clock::Ends>)>,
    /// The CSRF token when logged in; the buttons are shown only then.
    pub csrf: Option<String>,
    pub login_href: String,
    pub buttons: Vec<Button>,
}

/// `GET /block`.
pub async fn page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<RawBlock>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(RawBlock { kind, target, client })) = query else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(kind) = kind.as_deref().and_then(Kind::parse) else {
        return changes::message(
            StatusCode::BAD_REQUEST,
            "Nothing to block",
            "kind must be domain, company or service.",
        );
    };
    let Some(target) = target.filter(|t| !t.trim().is_empty()) else {
        return changes::message(StatusCode::BAD_REQUEST, "Nothing to block", "Say what to block: target=NAME.");
    };
    let client = client.filter(|c| !c.is_empty());
    let csrf = app.sessions.of(&headers).map(|(_, s)| s.csrf);
    let entities = Arc::clone(&app.entities);
    let here = here(kind, &target, client.as_deref());
    let read = {
        let (target, client) = (target.clone(), client.clone());
        move |store: &Store| build(store, &entities, kind, &target, client.as_deref(), timefmt::now_ms())
    };
    match app.db.read(read).await {
        Ok(Ok(mut page)) => {
            page.csrf = csrf;
            page.login_href = format!("/login?next={}", encode(&here));
            match page.render() {
                Ok(html) => Html(html).into_response(),
                Err(e) => {
                    tracing::error!("dashboard: rendering the block page: {e}");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
        Ok(Err(why)) => changes::message(StatusCode::BAD_REQUEST, "Cannot block that", &why),
        Err(e) => super::unavailable(&e),
    }
}

/// This page's own URL, for the login to come back to.
pub fn here(kind: Kind, target: &str, client: Option<&str>) -> String {
    let mut url = format!("/block?kind={}&target={}", kind.key(), encode(target));
    if let Some(c) = client {
        url.push_str(&format!("&client={}", encode(c)));
    }
    url
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", grouped(n), if n == 1 { one } else { many })
}

/// Reads what the page shows. The inner `Err` is a request the rules layer refuses (an unknown
/// company, a device nobody has), said in its own words.
fn build(
    store: &Store,
    entities: &EntityTable,
    kind: Kind,
    target: &str,
    client: Option<&str>,
    now_ms: i64,
) -> anyhow::Result<Result<BlockPage, String>> {
    let devices = store.devices()?;
    let cov = match cover::resolve(entities, &devices, &kind.target(target), client) {
        Ok(cov) => cov,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    let since = preview::since(now_ms);
    let only = cov.device.as_ref().map(|d| d.addresses.clone());
    let p = preview::would_stop(store, &devices, &cov.domains, only.as_deref(), since)?;
    let elsewhere = preview::blocked_elsewhere(store, now_ms)?;
    let shared = preview::shared_addresses(store, &devices, &cov.domains, &elsewhere, only.as_deref(), since)?;
    let stored_client = cov.device.as_ref().map(|d| d.stored.clone());
    let existing = active_rules(store.conn(), Some(cov.kind), now_ms)?
        .into_iter()
        .find(|r| r.rule == cov.rule && r.client == stored_client)
        .map(|r| (r.id, r.expires.map(|e| clock::Ends::new(r.id, e, now_ms))));
    let per_device = p
        .devices
        .iter()
        .map(|d| Line {
            name: d.device.clone(),
            figure: format!(
                "{}, {}",
                plural(d.queries, "DNS query", "DNS queries"),
                plural(d.connections, "connection", "connections")
            ),
        })
        .collect();
    let names =
        p.names.iter().take(LISTED).map(|(n, c)| Line { name: n.clone(), figure: plural(*c, "query", "queries") });
    let shown = cov.domains.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    Ok(Ok(BlockPage {
        css: CSS_PATH,
        kind: kind.key(),
        rule: cov.rule.clone(),
        client: client.unwrap_or_default().to_owned(),
        who: cov.device.as_ref().map_or_else(|| "every device".to_owned(), |d| d.label.clone()),
        domains: cov.domains.len(),
        domains_shown: if cov.domains.len() > LISTED { format!("{shown}, …") } else { shown },
        queries: p.queries,
        queries_text: plural(p.queries, "DNS query", "DNS queries"),
        connections: p.connections,
        connections_text: plural(p.connections, "connection", "connections"),
        devices: p.devices.len(),
        per_device,
        names: names.collect(),
        names_more: p.names.len().saturating_sub(LISTED),
        shared_note: shared_note(&shared, cov.device.is_some()),
        shared: shared
            .shared
            .iter()
            .take(SHARED_LISTED)
            .map(|a| Line { name: a.address.to_string(), figure: format!("also serves {}", a.also_serves.join(", ")) })
            .collect(),
        existing,
        csrf: None,
        login_href: String::new(),
        buttons: Length::ALL.into_iter().map(|l| Button { length: l.key(), label: l.label(now_ms) }).collect(),
    }))
}

/// What becomes of the addresses the names were answered with, as the dry run says it.
fn shared_note(s: &preview::SharedAddresses, one_device: bool) -> String {
    let n = s.answered;
    let addresses = plural(n, "address", "addresses");
    let (are, stay) = if n == 1 { ("is", "stays") } else { ("are", "stay") };
    if n == 0 {
        return format!(
            "No DNS answer of the last {} days gave addresses for these names. Addresses answered later are blocked \
             too while the rule holds, except ones that also serve a name no rule blocks.",
            preview::DAYS
        );
    }
    if one_device {
        return format!(
            "The {addresses} these names were answered with {stay} open: the kernel's address rules hold for \
             every device, so a block for one device works by name only."
        );
    }
    match s.shared.len() {
        0 => format!("The {addresses} these names were answered with {are} blocked too while the rule holds."),
        shared => format!(
            "{shared} of the {addresses} these names were answered with also serve names this block leaves alone \
             (a CDN's or a cloud's): they stay open, so those keep working, and the block holds by name."
        ),
    }
}
