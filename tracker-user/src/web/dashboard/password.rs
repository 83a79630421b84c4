//! The dashboard's password: checked for length, hashed with Argon2id into a PHC string (salt
//! and cost inside it) and kept in the database's `meta` table, where `tracker dashboard
//! --set-password` writes it and the login reads it. Never stored or logged in clear.

use anyhow::{Context as _, Result};
use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
};
use ring::rand::{SecureRandom as _, SystemRandom};
use rusqlite::OptionalExtension as _;

use crate::store::Store;

/// Key of the `meta` row with the password, as an Argon2id PHC string; absent until one is
/// set. The database, not a file beside it: it is already the one file the daemon owns (0600
/// in a 0700 folder), its copies and backups carry the password with the rules it guards, and
/// the dashboard's readers read it at each login, so a new one needs no restart.
const META_DASHBOARD_PASSWORD: &str = "dashboard_password";

/// Shorter is too easy to guess by trying, even at one try a second.
pub const MIN_CHARS: usize = 8;
/// A bound on the work one login asks of Argon2 and on a form's size.
pub const MAX_BYTES: usize = 1024;
/// Salt bytes: the PHC format's recommended 16.
const SALT_BYTES: usize = 16;

/// Why a password is not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum BadPassword {
    TooShort,
    TooLong,
}

impl std::fmt::Display for BadPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort => write!(f, "the password must have at least {MIN_CHARS} characters"),
            Self::TooLong => write!(f, "the password must have at most {MAX_BYTES} bytes"),
        }
    }
}

impl std::error::Error for BadPassword {}

/// Whether `password` may be set.
pub fn check(password: &str) -> Result<(), BadPassword> {
    if password.len() > MAX_BYTES {
        return Err(BadPassword::TooLong);
    }
    if password.chars().count() < MIN_CHARS {
        return Err(BadPassword::TooShort);
    }
    Ok(())
}

/// `password` as an Argon2id PHC string (RustCrypto's defaults: 19 MiB, 2 passes, one lane,
/// OWASP's recommendation), with a fresh random salt.
pub fn hash(password: &str) -> Result<String> {
    check(password)?;
    let mut salt = [0u8; SALT_BYTES];
    SystemRandom::new().fill(&mut salt).map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("encoding the salt: {e}"))?;
    let phc = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(phc.to_string())
}

/// Whether `password` is the one `phc` was made from (compared in constant time by argon2). A
/// malformed `phc` matches nothing. Costs one Argon2 computation: run off the async threads.
pub fn verify(phc: &str, password: &str) -> bool {
    if password.len() > MAX_BYTES {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// The stored hash, if a password was set.
pub fn load(store: &Store) -> Result<Option<String>> {
    store
        .conn()
        .query_row("SELECT value FROM meta WHERE key = ?1", [META_DASHBOARD_PASSWORD], |r| r.get(0))
        .optional()
        .context("reading the dashboard's password")
}

/// Stores `phc` as the password, replacing the old one (sessions made with the old one end at
/// their next change: see the session's `password`).
pub fn save(store: &Store, phc: &str) -> Result<()> {
    store
        .conn()
        .execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [META_DASHBOARD_PASSWORD, phc],
        )
        .context("storing the dashboard's password")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_db;

    #[test]
    fn passwords_are_stored_hashed_salted_and_checked() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify(&phc, "correct horse"));
        assert!(!verify(&phc, "correct horsE"));
        assert!(!verify(&phc, ""));
        assert!(!verify("not a hash", "correct horse"));
        assert_ne!(hash("correct horse").unwrap(), phc, "a fresh salt each time");
        assert_eq!(check("short"), Err(BadPassword::TooShort));
        assert_eq!(check("ééééééé"), Err(BadPassword::TooShort), "characters, not bytes");
        assert_eq!(check(&"x".repeat(MAX_BYTES + 1)), Err(BadPassword::TooLong));
        assert!(!verify(&phc, &"x".repeat(MAX_BYTES + 1)));

        let path = temp_db("dashboard-password");
        let store = Store::open(&path).unwrap();
        assert_eq!(load(&store).unwrap(), None);
        save(&store, &phc).unwrap();
        let other = hash("another one").unwrap();
        save(&store, &other).unwrap();
        assert_eq!(load(&Store::open_reader(&path).unwrap()).unwrap().as_deref(), Some(other.as_str()));
    }
}
