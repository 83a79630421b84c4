//! The files the dashboard serves besides its pages, compiled into the binary: nothing is read
//! from disk or fetched from anywhere at run time.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// The one stylesheet: narrow-screen first, dark when the device is.
pub const CSS: &str = include_str!("dashboard.css");
/// Its path; the pages link it, and the CSP allows styles from the dashboard itself only.
pub const CSS_PATH: &str = "/static/dashboard.css";

/// The live updates' script, a few KB written by hand; every page works without it.
pub const LIVE_JS: &str = include_str!("live.js");
/// Its path; the CSP allows scripts from the dashboard itself only, never inline ones.
pub const LIVE_JS_PATH: &str = "/static/live.js";
/// The timed blocks' countdowns, ticking in the page (a separate file: the pages with a
/// countdown are not the pages with live updates, and each loads only what it uses).
pub const COUNTDOWN_JS: &str = include_str!("countdown.js");
pub const COUNTDOWN_JS_PATH: &str = "/static/countdown.js";

pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

pub async fn live_js() -> Response {
    asset(LIVE_JS, "text/javascript; charset=utf-8")
}

pub async fn countdown_js() -> Response {
    asset(COUNTDOWN_JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated each time, so a new binary's file is seen at once; it is a few KB.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Browsers ask for /favicon.ico by themselves: an empty answer instead of a 404 in their log.
pub async fn favicon() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
