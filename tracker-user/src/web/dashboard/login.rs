//! `GET /login`, `POST /login` and `POST /logout`: a session from the password `tracker
//! dashboard --set-password` stored, with wrong passwords limited ([`session::Throttle`]) and
//! one Argon2 check at a time, so guessing is slow and cannot take the host's CPU.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::{
        Query, State,
        rejection::{FormRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{App, assets::CSS_PATH, changes::message, password, session};

#[derive(Template)]
#[template(path = "dashboard/login.html")]
pub struct LoginPage {
    pub css: &'static str,
    pub next: String,
    /// Why the last try failed, if it did.
    pub error: Option<String>,
    /// What just happened, when it is worth saying (logged in by a one-time link).
    pub notice: Option<String>,
    /// The session's CSRF token when already logged in (the page offers to log out).
    pub logged_in: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawNext {
    next: Option<String>,
}

/// Where to go after logging in: a path of this dashboard only (`/block?...`), never another
/// site (`//evil.example`, `http://...`), else the first page.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

pub(super) fn render(status: StatusCode, page: LoginPage) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("dashboard: rendering the login page: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET /login`.
pub async fn page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<RawNext>, QueryRejection>,
) -> Response {
    let next = safe_next(query.as_ref().ok().and_then(|q| q.next.as_deref()));
    let logged_in = app.sessions.of(&headers).map(|(_, s)| s.csrf);
    render(StatusCode::OK, LoginPage { css: CSS_PATH, next, error: None, notice: None, logged_in })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`.
pub async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let next = safe_next(Some(&form.next));
    let again = |status, error: String| {
        render(
            status,
            LoginPage { css: CSS_PATH, next: next.clone(), error: Some(error), notice: None, logged_in: None },
        )
    };
    // A page of another site must not log the browser in (login CSRF).
    if !session::same_origin(&headers) {
        return again(StatusCode::FORBIDDEN, "This login did not come from the dashboard's own page.".into());
    }
    if let Some(wait) = app.throttle.wait() {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many wrong passwords: try again in {} seconds.", wait.as_secs().max(1)),
        );
    }
    let phc = match app.db.read(password::load).await {
        Ok(Some(phc)) => phc,
        Ok(None) => {
            return message(
                StatusCode::CONFLICT,
                "No password yet",
                "No dashboard password is set. On the VPN host, run `tracker dashboard --set-password` (as root), \
                 then log in here; or run `tracker dashboard --login-link` and open the one-time link it prints.",
            );
        }
        Err(e) => return super::unavailable(&e),
    };
    // One Argon2 check at a time, off the async thread (each takes tens of milliseconds and
    // 19 MiB).
    let Ok(_turn) = app.logins.acquire().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let (hash, given) = (phc.clone(), form.password);
    let right = tokio::task::spawn_blocking(move || password::verify(&hash, &given)).await.unwrap_or(false);
    if !right {
        app.throttle.wrong();
        tracing::info!("dashboard: a wrong password");
        return again(StatusCode::FORBIDDEN, "Wrong password.".into());
    }
    let Some((token, _)) = app.sessions.create(Some(&phc)) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::set_cookie(&token));
    response
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session (with its CSRF token, so another site cannot log the
/// browser out either).
pub async fn logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Some((token, s)) = app.sessions.of(&headers)
        && session::same_origin(&headers)
        && session::csrf_matches(&s, &csrf)
    {
        app.sessions.end(&token);
    }
    let mut response = Redirect::to("/").into_response();
    if session::same_origin(&headers) {
        response.headers_mut().insert(header::SET_COOKIE, session::clear_cookie());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_login_only_the_dashboards_own_paths() {
        assert_eq!(safe_next(Some("/block?kind=domain&target=a.example")), "/block?kind=domain&target=a.example");
        assert_eq!(safe_next(Some("/")), "/");
        for bad in ["//evil.example/", "http://evil.example/", "/\\evil.example", "evil", "", "/a\nb"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
