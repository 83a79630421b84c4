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

pub async fn css() -> Response {
    let mut response = CSS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    // Revalidated each time, so a new binary's style is seen at once; it is a few KB.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Browsers ask for /favicon.ico by themselves: an empty answer instead of a 404 in their log.
pub async fn favicon() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
