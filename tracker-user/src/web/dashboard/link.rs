//! One-time login links: `tracker dashboard --login-link` makes a random token, stores only its
//! SHA-256 with an expiry in the database's `meta` table (the CLI and the daemon are separate
//! processes; the database is what both hold), and prints a URL holding it; `GET /link/{token}`
//! in the dashboard checks it, deletes it and starts the same session a password login does.
//! A token works once, for [`LIFETIME`] by default, and a newer link replaces an unused one.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use axum::{
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use ring::{digest, rand::SystemRandom};
use rusqlite::OptionalExtension as _;

use super::{
    App,
    assets::CSS_PATH,
    changes::message,
    login::{self, LoginPage},
    password,
    session::{self, hex, random_hex, same_secret},
};
use crate::{store::Store, timefmt};

/// Key of the `meta` row with the unused link: `SHA256_HEX EXPIRES_MS`. One row, so printing
/// a new link ends the one before it: at most one way in by link is open at any time.
const META_DASHBOARD_LINK: &str = "dashboard_link";
/// How long a link works unless told otherwise: time to scan the QR code and open it, short
/// enough that a link seen on a screen or left in a terminal's scrollback is soon worthless.
pub const LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The longest `--valid-for` takes: a link is for opening now, not for keeping.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Random bytes of a token: 128 bits cannot be guessed within a link's life (nor ever), and a
/// short URL makes a QR code a phone's camera reads easily.
const TOKEN_BYTES: usize = 16;
/// The path the links start with (`/link/TOKEN`).
pub const PATH: &str = "/link/";

/// The link waiting to be used, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    sha256: String,
    expires_ms: i64,
}

impl Stored {
    fn text(&self) -> String {
        format!("{} {}", self.sha256, self.expires_ms)
    }

    fn parse(text: &str) -> Option<Self> {
        let (sha256, expires) = text.split_once(' ')?;
        Some(Self { sha256: sha256.to_owned(), expires_ms: expires.parse().ok()? })
    }
}

/// What a token given to the dashboard is worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The stored link's token, still within its time.
    Valid,
    /// The stored link's token, too late.
    Expired,
    /// Not the stored link's: used already, replaced by a newer link, mistyped or made up.
    Unknown,
}

/// The hex SHA-256 of a token.
fn sha256(token: &str) -> String {
    hex(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

/// Whether `token` has a token's shape (lower-case hex of [`TOKEN_BYTES`]): anything else is
/// refused before the database is read.
fn well_formed(token: &str) -> bool {
    token.len() == 2 * TOKEN_BYTES && token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new link's token, valid for `lifetime` from `now_ms`: its hash stored in place of any
/// earlier link's. The token itself is returned, never stored.
pub fn issue(store: &Store, lifetime: Duration, now_ms: i64) -> Result<String> {
    let token = random_hex::<TOKEN_BYTES>(&SystemRandom::new())
        .context("the system's random source failed; no link was made")?;
    let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
    let stored = Stored { sha256: sha256(&token), expires_ms: now_ms.saturating_add(lifetime_ms) };
    store
        .conn()
        .execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [META_DASHBOARD_LINK, stored.text().as_str()],
        )
        .context("storing the login link")?;
    Ok(token)
}

/// The link waiting to be used, if any (a row that does not parse counts as none).
pub fn load(store: &Store) -> Result<Option<Stored>> {
    let text: Option<String> = store
        .conn()
        .query_row("SELECT value FROM meta WHERE key = ?1", [META_DASHBOARD_LINK], |r| r.get(0))
        .optional()
        .context("reading the login link")?;
    Ok(text.as_deref().and_then(Stored::parse))
}

/// What `token` is worth against the `stored` link at `now_ms`.
pub fn judge(stored: Option<&Stored>, token: &str, now_ms: i64) -> Verdict {
    let Some(stored) = stored.filter(|_| well_formed(token)) else { return Verdict::Unknown };
    if !same_secret(stored.sha256.as_bytes(), sha256(token).as_bytes()) {
        Verdict::Unknown
    } else if now_ms >= stored.expires_ms {
        Verdict::Expired
    } else {
        Verdict::Valid
    }
}

/// Deletes the `stored` link if it is still the one in the database: `true` for the one caller
/// that deleted it (two browsers opening the same link at once: one gets in).
pub fn take(store: &Store, stored: &Stored) -> Result<bool> {
    let deleted = store
        .conn()
        .execute("DELETE FROM meta WHERE key = ?1 AND value = ?2", [META_DASHBOARD_LINK, stored.text().as_str()])
        .context("using up the login link")?;
    Ok(deleted == 1)
}

/// `GET /link/{token}`: a session for a valid token, used up at once; a clear refusal (403,
/// no session) for any other. A GET, not a form: the link is opened from a QR code or a
/// message, where there is no page to post from. Login CSRF needs no guard here: a token that
/// works can only come from someone with root on the VPN host.
pub async fn open(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let now = timefmt::now_ms();
    let read = app.db.read(|store| Ok((load(store)?, password::load(store)?))).await;
    let (stored, password) = match read {
        Ok(found) => found,
        Err(e) => return super::unavailable(&e),
    };
    let verdict = judge(stored.as_ref(), &token, now);
    let taken = match (verdict, stored) {
        (Verdict::Valid | Verdict::Expired, Some(stored)) => {
            let db = app.db_path.clone();
            match tokio::task::spawn_blocking(move || take(&Store::open(&db)?, &stored)).await {
                Ok(Ok(taken)) => taken,
                Ok(Err(e)) => {
                    tracing::warn!("dashboard: using up a login link: {e:#}");
                    let why = "The link could not be checked; try again.";
                    return message(StatusCode::SERVICE_UNAVAILABLE, "Not logged in", why);
                }
                Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        _ => false,
    };
    let again = "On the VPN host, run `tracker dashboard --login-link` for a new one, or log in with the password.";
    let refused = match (verdict, taken) {
        (Verdict::Valid, true) => None,
        (Verdict::Expired, _) => Some(format!(
            "This login link has expired (a link works for {} unless made with --valid-for). {again}",
            say(LIFETIME)
        )),
        _ => Some(format!(
            "This login link does not work: it was used already (a link works once), a newer link replaced it, \
             or it was not copied whole. {again}"
        )),
    };
    if let Some(why) = refused {
        tracing::info!("dashboard: a login link refused ({verdict:?})");
        return no_store(message(StatusCode::FORBIDDEN, "Not logged in", &why));
    }
    let Some((cookie, s)) = app.sessions.create(password.as_deref()) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    tracing::info!("dashboard: a browser logged in with a one-time link");
    // The page itself, not a redirect: a redirect after a link opened from another site's page
    // would not carry the new SameSite=Strict cookie, and the browser would look logged out.
    let page = LoginPage {
        css: CSS_PATH,
        next: "/".into(),
        error: None,
        notice: Some("This browser is now logged in with the one-time link, which no longer works.".into()),
        logged_in: Some(s.csrf),
    };
    let mut response = no_store(login::render(StatusCode::OK, page));
    response.headers_mut().insert(header::SET_COOKIE, session::set_cookie(&cookie));
    response
}

/// A page that holds a token's fate: never kept by a cache.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A link's lifetime as people say it: `10 min`, `30 s`, `24 h`.
pub fn say(lifetime: Duration) -> String {
    super::clock::countdown(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX))
}

/// The link's path for `token` under a dashboard URL (`http://10.77.0.1:8722/`).
pub fn url(base: &str, token: &str) -> String {
    format!("{}{}{token}", base.trim_end_matches('/'), PATH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_db;

    #[test]
    fn a_link_is_stored_hashed_works_once_and_expires() {
        let path = temp_db("dashboard-link");
        let store = Store::open(&path).unwrap();
        let now = 1_700_000_000_000;
        assert_eq!(load(&store).unwrap(), None);
        assert_eq!(judge(None, &"0".repeat(32), now), Verdict::Unknown);

        let token = issue(&store, LIFETIME, now).unwrap();
        assert!(well_formed(&token), "{token}");
        let stored = load(&store).unwrap().unwrap();
        let raw: String =
            store.conn().query_row("SELECT value FROM meta WHERE key = 'dashboard_link'", [], |r| r.get(0)).unwrap();
        assert!(!raw.contains(&token), "the token itself is never stored: {raw}");
        assert_eq!(stored.sha256.len(), 64);
        assert_eq!(stored.expires_ms, now + 600_000);

        assert_eq!(judge(Some(&stored), &token, now), Verdict::Valid);
        assert_eq!(judge(Some(&stored), &token, now + 599_999), Verdict::Valid);
        assert_eq!(judge(Some(&stored), &token, now + 600_000), Verdict::Expired);
        let mut forged = token.clone();
        forged.replace_range(31.., if token.ends_with('0') { "1" } else { "0" });
        assert_eq!(judge(Some(&stored), &forged, now), Verdict::Unknown);
        for malformed in ["", "zz", &token.to_uppercase(), &format!("{token}0"), &token[..31]] {
            assert_eq!(judge(Some(&stored), malformed, now), Verdict::Unknown, "{malformed:?}");
        }
        // Used once: the row is gone, the second use finds nothing.
        assert!(take(&Store::open(&path).unwrap(), &stored).unwrap());
        assert!(!take(&store, &stored).unwrap(), "a second take");
        assert_eq!(load(&store).unwrap(), None);
        assert_eq!(judge(load(&store).unwrap().as_ref(), &token, now), Verdict::Unknown);

        // A newer link replaces an unused one.
        let first = issue(&store, Duration::from_secs(5), now).unwrap();
        let second = issue(&store, LIFETIME, now).unwrap();
        assert_ne!(first, second);
        let stored = load(&Store::open_reader(&path).unwrap()).unwrap().unwrap();
        assert_eq!(judge(Some(&stored), &first, now), Verdict::Unknown);
        assert_eq!(judge(Some(&stored), &second, now), Verdict::Valid);
        // A row that does not parse is no link.
        store.conn().execute("UPDATE meta SET value = 'garbage' WHERE key = 'dashboard_link'", []).unwrap();
        assert_eq!(load(&store).unwrap(), None);
        assert_eq!(url("http://10.77.0.1:8722/", "ab"), "http://10.77.0.1:8722/link/ab");
    }
}
