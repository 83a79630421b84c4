//! What every response carries and every request must name: strict security headers (nothing
//! runs, loads or frames the pages but the dashboard's own stylesheet and script), and a
//! `Host` that is the dashboard's own.

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};

use super::access::Hosts;

/// Nothing but the dashboard's own stylesheet and its script files (live updates and
/// countdowns; no inline script or event handler runs), connections only back to the dashboard itself (the script's
/// event stream and JSON), no image or font from anywhere else, no framing, forms only to
/// itself. The charts are inline SVG drawn with presentation attributes, which CSP does not
/// treat as inline style.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Every response's security headers.
const SECURITY: [(HeaderName, &str); 6] = [
    (header::CONTENT_SECURITY_POLICY, CSP),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    // frame-ancestors for browsers older than CSP 2.
    (header::X_FRAME_OPTIONS, "DENY"),
    (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
];

/// Adds [`SECURITY`] to a response, and `Cache-Control: no-store` unless the handler chose
/// caching (the pages are private and change by the second).
pub async fn secure(response: Response) -> Response {
    let mut response = response;
    let headers = response.headers_mut();
    for (name, value) in SECURITY {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Refuses a request whose `Host` is not one of the dashboard's addresses (403, empty): a page
/// of another site that reaches this address by DNS rebinding names its own host.
pub async fn own_host(State(hosts): State<Hosts>, request: Request, next: Next) -> Response {
    let ok = request.headers().get(header::HOST).is_some_and(|h| hosts.allows(h.as_bytes()));
    if !ok {
        return StatusCode::FORBIDDEN.into_response();
    }
    next.run(request).await
}
