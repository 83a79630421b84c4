//! Who may change rules from the dashboard: sessions made by logging in with the password (or
//! with a one-time link, [`super::link`]), each a random token in an HttpOnly, SameSite=Strict cookie with a CSRF token of its own for
//! the change forms; few, expiring, and kept in the daemon's memory only (a restart of the
//! daemon logs every browser out: nothing to steal from the disk). Also the checks every change
//! passes (same origin, session, CSRF token) and the limit on wrong passwords.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, HeaderValue, header};
use ring::rand::{SecureRandom as _, SystemRandom};

/// The cookie's name.
pub const COOKIE: &str = "tracker_session";
/// How long a session lasts after login: a day's use from the phone, then the password again.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once: a household's phones and computers. A new login past this ends the
/// oldest session, so logging in again and again cannot fill the memory.
pub const MAX_SESSIONS: usize = 16;
/// Random bytes of a session or CSRF token (256 bits: not guessable).
const TOKEN_BYTES: usize = 32;
/// Wrong passwords allowed within [`WRONG_WINDOW`]; past that, logins are refused unchecked
/// until the oldest wrong one is out of the window. For every address at once: the peers are
/// few, and an attacker who holds one peer's address must not get more tries by another.
pub const WRONG_PER_WINDOW: usize = 5;
pub const WRONG_WINDOW: Duration = Duration::from_secs(60);

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token its change forms must carry.
    pub csrf: String,
    /// The password hash in force when it was made (`None`: none was set, a one-time link's
    /// session): once the password is set anew, the session no longer makes changes.
    pub password: Option<String>,
    expires: Instant,
}

/// The sessions, by token.
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    lifetime: Duration,
    rng: SystemRandom,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_lifetime(LIFETIME)
    }
}

impl Sessions {
    pub fn with_lifetime(lifetime: Duration) -> Self {
        Self { live: Mutex::new(HashMap::new()), lifetime, rng: SystemRandom::new() }
    }

    /// A new session made while `password` (its hash) was in force: its cookie token and the
    /// session. `None` only if the system's random source failed.
    pub fn create(&self, password: Option<&str>) -> Option<(String, Session)> {
        let token = random_token(&self.rng)?;
        let session = Session {
            csrf: random_token(&self.rng)?,
            password: password.map(str::to_owned),
            expires: Instant::now() + self.lifetime,
        };
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        while live.len() >= MAX_SESSIONS {
            let Some(oldest) = live.iter().min_by_key(|(_, s)| s.expires).map(|(t, _)| t.clone()) else { break };
            live.remove(&oldest);
        }
        live.insert(token.clone(), session.clone());
        Some((token, session))
    }

    /// The session of a cookie token, unless it expired.
    pub fn get(&self, token: &str) -> Option<Session> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get(token) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                live.remove(token);
                None
            }
            None => None,
        }
    }

    /// Logs a browser out.
    pub fn end(&self, token: &str) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
    }

    /// The session a request's cookie names, with its token.
    pub fn of(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let token = cookie_token(headers)?;
        self.get(token).map(|s| (token.to_owned(), s))
    }
}

/// `TOKEN_BYTES` random bytes as lower-case hex.
fn random_token(rng: &SystemRandom) -> Option<String> {
    random_hex::<TOKEN_BYTES>(rng)
}

/// `N` random bytes as lower-case hex; `None` only if the system's random source failed.
pub fn random_hex<const N: usize>(rng: &SystemRandom) -> Option<String> {
    let mut bytes = [0u8; N];
    rng.fill(&mut bytes).ok()?;
    Some(hex(&bytes))
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether two secrets are equal, every byte compared whatever differs first, so the time
/// taken does not tell how much of a guess was right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session token of the request's `Cookie` headers, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` of a new session: not readable by scripts, never sent by a page of another
/// site (SameSite=Strict), gone after [`LIFETIME`]. Not `Secure`: the dashboard is plain HTTP
/// inside the WireGuard tunnel, which encrypts it.
pub fn set_cookie(token: &str) -> HeaderValue {
    let value = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", LIFETIME.as_secs());
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` that removes it (logout).
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("tracker_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Whether a change request comes from the dashboard's own pages, as far as the browser says.
/// `Sec-Fetch-Site`, which every current browser sends, decides when present: it must be
/// `same-origin`. Without it, an `Origin` naming another site is refused; `Origin: null` is
/// what a browser sends for a form posted under the dashboard's `no-referrer` policy, so it
/// says nothing either way. A client that sends neither (curl) still needs the session and
/// the CSRF token, which no other site's page has.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or("\u{0}"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin";
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (None | Some("null"), _) => true,
        (Some(origin), Some(host)) => origin.strip_prefix("http://").is_some_and(|o| o.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

/// Whether the CSRF token a form carried is the session's ([`same_secret`]).
pub fn csrf_matches(session: &Session, given: &str) -> bool {
    same_secret(session.csrf.as_bytes(), given.as_bytes())
}

/// The limit on wrong passwords.
#[derive(Default)]
pub struct Throttle {
    wrong: Mutex<VecDeque<Instant>>,
}

impl Throttle {
    /// How long until a login may be tried again; `None`: now.
    pub fn wait(&self) -> Option<Duration> {
        let mut wrong = self.wrong.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while wrong.front().is_some_and(|t| now.duration_since(*t) >= WRONG_WINDOW) {
            wrong.pop_front();
        }
        (wrong.len() >= WRONG_PER_WINDOW).then(|| wrong.front().map_or(Duration::ZERO, |t| WRONG_WINDOW - (now - *t)))
    }

    /// Counts a wrong password.
    pub fn wrong(&self) {
        let mut wrong = self.wrong.lock().unwrap_or_else(|p| p.into_inner());
        wrong.push_back(Instant::now());
        while wrong.len() > WRONG_PER_WINDOW {
            wrong.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn sessions_are_random_bounded_and_expire() {
        let sessions = Sessions::default();
        let (t1, s1) = sessions.create(Some("$phc1")).unwrap();
        let (t2, s2) = sessions.create(Some("$phc1")).unwrap();
        assert_eq!((t1.len(), s1.csrf.len()), (64, 64));
        assert!(t1 != t2 && s1.csrf != s2.csrf && t1 != s1.csrf);
        assert_eq!(sessions.get(&t1).unwrap().csrf, s1.csrf);
        assert!(sessions.get("0".repeat(64).as_str()).is_none());
        sessions.end(&t1);
        assert!(sessions.get(&t1).is_none() && sessions.get(&t2).is_some());
        // Full: each new login ends the oldest session.
        let made: Vec<String> = (0..MAX_SESSIONS).map(|_| sessions.create(Some("$phc")).unwrap().0).collect();
        assert!(sessions.get(&t2).is_none(), "the oldest went first");
        assert!(made.iter().all(|t| sessions.get(t).is_some()));
        assert_eq!(sessions.live.lock().unwrap().len(), MAX_SESSIONS);

        let short = Sessions::with_lifetime(Duration::from_millis(50));
        let (t, _) = short.create(Some("$phc")).unwrap();
        assert!(short.get(&t).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(short.get(&t).is_none(), "expired");
    }

    #[test]
    fn the_cookie_is_read_and_set_strictly() {
        let h = headers(&[("cookie", "a=1; tracker_session=abc; b=2")]);
        assert_eq!(cookie_token(&h), Some("abc"));
        assert_eq!(cookie_token(&headers(&[("cookie", "tracker_sessionx=abc")])), None);
        assert_eq!(cookie_token(&headers(&[("cookie", "a=1"), ("cookie", "tracker_session=z")])), Some("z"));
        let set = set_cookie("abc");
        let set = set.to_str().unwrap();
        for part in ["tracker_session=abc", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(clear_cookie().to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn changes_must_come_from_the_dashboards_own_pages_with_the_sessions_token() {
        let host = ("host", "10.77.0.1:8722");
        assert!(same_origin(&headers(&[host, ("origin", "http://10.77.0.1:8722"), ("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&headers(&[host])), "no browser headers: the token decides");
        assert!(!same_origin(&headers(&[host, ("origin", "http://evil.example")])));
        // A form posted under `Referrer-Policy: no-referrer` says `Origin: null`.
        assert!(same_origin(&headers(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[host, ("origin", "null"), ("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[host, ("origin", "https://10.77.0.1:8722")])));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "same-site")])));
        let sessions = Sessions::default();
        let (_, s) = sessions.create(Some("$phc")).unwrap();
        assert!(csrf_matches(&s, &s.csrf.clone()));
        assert!(!csrf_matches(&s, ""));
        assert!(!csrf_matches(&s, &s.csrf[..63]));
        let mut wrong = s.csrf.clone();
        wrong.replace_range(63.., if s.csrf.ends_with('0') { "1" } else { "0" });
        assert!(!csrf_matches(&s, &wrong));
    }

    #[test]
    fn wrong_passwords_are_limited() {
        let t = Throttle::default();
        for _ in 0..WRONG_PER_WINDOW - 1 {
            t.wrong();
            assert_eq!(t.wait(), None);
        }
        t.wrong();
        let wait = t.wait().expect("refused after the limit");
        assert!(wait > WRONG_WINDOW - Duration::from_secs(5) && wait <= WRONG_WINDOW, "{wait:?}");
    }
}
