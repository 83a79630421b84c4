//! The dashboard's changes: `POST /block` and `POST /unblock`, each refused (403, nothing
//! changed) unless it comes from the dashboard's own page ([`session::same_origin`]), with a
//! session made with the password in force and that session's CSRF token. The change is
//! [`crate::change`]'s, the very code of `tracker block-domain` and `unblock-...`: the rule
//! stored and the kernel's maps changed in one transaction, in force when the answer comes.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    App,
    assets::CSS_PATH,
    block::{Kind, Length},
    password,
    session::{self, Session},
};
use crate::{
    change::{self, Applied, Changer, NameRule},
    timefmt,
};

/// How the dashboard names itself in a message about missing capabilities.
const WHO: &str = "the dashboard";

/// A page that only says something: an error, a refusal.
#[derive(Template)]
#[template(path = "dashboard/message.html")]
pub struct MessagePage<'a> {
    pub css: &'static str,
    pub title: &'a str,
    pub text: &'a str,
}

/// A message page with `status`.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    match (MessagePage { css: CSS_PATH, title, text }).render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, format!("{title}: {text}\n")).into_response(),
    }
}

/// A refused change: 403, and it says nothing changed.
fn refused(why: &str) -> Response {
    message(StatusCode::FORBIDDEN, "Not changed", &format!("{why} Nothing was changed."))
}

/// The session that may make this change, or the refusal. Checked in this order, before the
/// form is looked at: the page's origin, the session, its CSRF token, and that the password
/// is still the one it logged in with.
pub async fn authorize(app: &App, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    if !session::same_origin(headers) {
        return Err(refused("This request did not come from the dashboard's own page."));
    }
    let Some((token, s)) = app.sessions.of(headers) else {
        return Err(refused("Changes need you to log in first (Log in, at the top of the page)."));
    };
    if !session::csrf_matches(&s, csrf) {
        return Err(refused("The form's security token is missing or wrong: reload the page and try again."));
    }
    match app.db.read(password::load).await {
        Ok(current) if current == s.password => Ok(s),
        Ok(_) => {
            app.sessions.end(&token);
            Err(refused("The password was set anew since you logged in: log in again."))
        }
        Err(e) => Err(super::unavailable(&e)),
    }
}

/// `POST /block`'s form.
#[derive(Debug, Deserialize)]
pub struct BlockForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    client: String,
    /// A [`Length`] key.
    #[serde(default, rename = "for")]
    length: String,
}

/// `POST /block`: makes the block and shows its page (`/experiments/{id}`).
pub async fn block(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<BlockForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return refused("The form could not be read.");
    };
    if let Err(refusal) = authorize(&app, &headers, &form.csrf).await {
        return refusal;
    }
    let (Some(kind), Some(length)) = (Kind::parse(&form.kind), Length::parse(&form.length)) else {
        return message(StatusCode::BAD_REQUEST, "Not changed", "The form asked for no known kind or length.");
    };
    let expires = match length.expires(timefmt::now_ms()) {
        Ok(e) => e,
        Err(why) => return message(StatusCode::INTERNAL_SERVER_ERROR, "Not changed", why),
    };
    let rule = NameRule {
        client: Some(form.client.clone()).filter(|c| !c.is_empty()),
        expires,
        comment: Some(if expires.is_some() { "experiment (dashboard)" } else { "dashboard" }.into()),
        block_shared: false,
    };
    let (db, pins, entities) = (app.db_path.clone(), app.pin_dir.clone(), Arc::clone(&app.entities));
    let target = kind.target(&form.target);
    let made = tokio::task::spawn_blocking(move || {
        let mut ch = Changer::open(&db, &pins, WHO)?;
        change::block_name(&mut ch, &entities, &target, &rule)
    })
    .await;
    match made {
        Ok(Ok(done)) => {
            tracing::info!(rule = done.added.id(), "dashboard: blocked {} {}", done.coverage.kind, done.coverage.rule);
            warn_unapplied(done.applied);
            Redirect::to(&format!("/experiments/{}", done.added.id())).into_response()
        }
        Ok(Err(e)) => message(StatusCode::BAD_REQUEST, "Not blocked", &format!("{e:#}")),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, "Not blocked", &e.to_string()),
    }
}

/// `POST /unblock`'s form.
#[derive(Debug, Deserialize)]
pub struct UnblockForm {
    #[serde(default)]
    csrf: String,
    /// The rule's id.
    #[serde(default)]
    rule: String,
}

/// `POST /unblock`: ends the rule and shows its page.
pub async fn unblock(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<UnblockForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return refused("The form could not be read.");
    };
    if let Err(refusal) = authorize(&app, &headers, &form.csrf).await {
        return refusal;
    }
    let Ok(id) = form.rule.parse::<u32>() else {
        return message(StatusCode::BAD_REQUEST, "Not changed", "The form named no rule.");
    };
    let (db, pins) = (app.db_path.clone(), app.pin_dir.clone());
    let ended = tokio::task::spawn_blocking(move || {
        let mut ch = Changer::open(&db, &pins, WHO)?;
        change::unblock_id(&mut ch, id)
    })
    .await;
    match ended {
        Ok(Ok(Some(done))) => {
            tracing::info!(rule = done.id, "dashboard: unblocked {} {}", done.kind, done.rule);
            warn_unapplied(done.applied);
            Redirect::to(&format!("/experiments/{id}")).into_response()
        }
        Ok(Ok(None)) => message(
            StatusCode::CONFLICT,
            "Not changed",
            &format!("Rule {id} is not in force: it ended already, or never was."),
        ),
        Ok(Err(e)) => message(StatusCode::BAD_REQUEST, "Not unblocked", &format!("{e:#}")),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, "Not unblocked", &e.to_string()),
    }
}

/// The daemon serves the dashboard, so its maps are pinned; a change that reached only the
/// database means something is off, which the log says.
fn warn_unapplied(applied: Applied) {
    if applied != Applied::Kernel {
        tracing::warn!("dashboard: the change is saved but not in the kernel yet ({applied:?})");
    }
}
