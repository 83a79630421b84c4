//! Live updates without a reload: one small read every [`TICK`] of what changed
//! ([`listing::latest`]), made only while a page listens and shared by every open stream
//! through a watch channel; `GET /events` streams each change as a server-sent event, at most
//! [`MAX_STREAMS`] at once. The pages' script (`/static/live.js`) then fetches its own part:
//! the first page's totals (`GET /totals`, here) or a list's new rows ([`super::lists`]).

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{
        IntoResponse as _, Response,
        sse::{Event, Sse},
    },
};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use super::{
    App,
    lists::known_device,
    params::{RawView, View},
    server::stopped,
};
use crate::{
    query::{
        blocked::blocked,
        listing::{self, Latest},
        timeline::{Span, timeline},
    },
    timefmt,
    web::{page::human_bytes, svg::grouped},
};

/// How often the open streams' shared read runs.
pub const TICK: Duration = Duration::from_secs(2);
/// Event streams open at once, over every page and device: a household's phones and a laptop,
/// a few tabs each. A page past it still works; it only stops updating by itself.
pub const MAX_STREAMS: usize = 8;
/// A comment line this often keeps a quiet stream from looking dead to the browser.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long the browser waits before it reconnects a dropped stream.
const RETRY: Duration = Duration::from_secs(5);

/// The shared state of the live updates.
pub struct Hub {
    latest: watch::Sender<Latest>,
    streams: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl Hub {
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        Self { latest: watch::Sender::new(Latest::default()), streams: Arc::new(Semaphore::new(MAX_STREAMS)), stop }
    }
}

/// Reads what changed every [`TICK`] while a stream is open, until the dashboard stops.
pub async fn ticker(app: Arc<App>) {
    let mut stop = app.live.stop.clone();
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopped(&mut stop) => break,
        }
        if app.live.latest.receiver_count() == 0 {
            continue;
        }
        match app.db.read(listing::latest).await {
            Ok(now) => {
                app.live.latest.send_if_modified(|seen| {
                    let changed = *seen != now;
                    *seen = now;
                    changed
                });
            }
            Err(e) => tracing::debug!("dashboard: live read: {e}"),
        }
    }
}

/// `GET /events`: a `change` event at once and then on every change, until the page closes or
/// the dashboard stops.
pub async fn events(State(app): State<Arc<App>>) -> Response {
    let Ok(slot) = Arc::clone(&app.live.streams).try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "Too many pages are following live updates; reload later.\n")
            .into_response();
    };
    let mut changes = app.live.latest.subscribe();
    changes.mark_changed();
    let state = (changes, app.live.stop.clone(), slot);
    let stream = futures_util::stream::unfold(state, |(mut changes, mut stop, slot)| async move {
        let event = tokio::select! {
            changed = changes.changed() => {
                changed.ok()?;
                let latest = *changes.borrow_and_update();
                Event::default().event("change").retry(RETRY).data(serde_json::to_string(&latest).ok()?)
            }
            _ = tokio::time::sleep(KEEP_ALIVE) => Event::default().comment(""),
            _ = stopped(&mut stop) => return None,
        };
        Some((Ok::<_, Infallible>(event), (changes, stop, slot)))
    });
    Sse::new(stream).into_response()
}

/// A headline figure: its exact value and as the page writes it.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub value: u64,
    pub text: String,
}

/// The first page's headline figures, keyed by the ids of their boxes.
#[derive(Debug, Serialize)]
pub struct Totals {
    pub connections: Figure,
    pub bytes: Figure,
    pub refused: Figure,
}

/// `GET /totals?period=&device=`: the first page's headline figures for its view, as JSON,
/// from the queries the page itself uses (the timeline adds up to the report's totals).
pub async fn totals(State(app): State<Arc<App>>, query: Result<Query<RawView>, QueryRejection>) -> Response {
    let Some(view) = query.ok().and_then(|Query(raw)| View::parse(raw).ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let now = timefmt::now_ms();
    let since = now - view.period.ms();
    let read = app
        .db
        .read(move |store| {
            let clients = match &view.device {
                None => None,
                Some(d) if !known_device(store, d)? => return Ok(None),
                Some(d) => Some(store.client_filter(d)?.addresses),
            };
            let buckets = timeline(store, 0, since, now, clients.as_deref(), Span::Day)?;
            let (connections, bytes) = buckets.iter().fold((0, 0), |(c, b), x| (c + x.connections, b + x.bytes));
            let refused = blocked(store, 0, since, clients.as_deref(), now, &|_| None)?.queries_refused;
            Ok(Some(Totals {
                connections: Figure { value: connections, text: grouped(connections) },
                bytes: Figure { value: bytes, text: human_bytes(bytes) },
                refused: Figure { value: refused, text: refused.to_string() },
            }))
        })
        .await;
    match read {
        Ok(Some(t)) => json(&t),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => super::unavailable(&e),
    }
}

/// `value` as a JSON response.
pub fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = body.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
