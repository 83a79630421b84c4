//! Name rules as users give them (a domain, a company, a service, a blocklist, encrypted DNS;
//! for one device or all; for a time or until removed): the domains they cover ([`cover`],
//! [`blocklist`], [`bypass`]), and the kernel's `DOMAINS` map kept equal to the active rules
//! ([`kernel`]), with the dns-bypass rule's ports.

pub mod blocklist;
pub mod bypass;
pub mod cover;
pub mod kernel;

use std::net::IpAddr;

use tracker_common::name::{DomainError, domain_hash};

/// Why a text is not a domain a name rule can hold, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadDomain {
    /// The kernel cannot match it ([`DomainError`]).
    Kernel(DomainError),
    /// An address: blocked with `block-ip`.
    Address,
    /// A character a DNS name of a lookup never has (`*`, `|`, `/`, a space...).
    Character(char),
    /// Not ASCII: names go over the wire in their `xn--` form.
    NotAscii,
    /// One label (`com`, `lan`) or a public suffix (`co.uk`): every name under it.
    TooWide,
}

impl std::fmt::Display for BadDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kernel(DomainError::Empty) => f.write_str("it is empty"),
            Self::Kernel(DomainError::EmptyLabel) => {
                f.write_str("it has an empty label (two dots in a row, or a dot first)")
            }
            Self::Kernel(DomainError::LabelTooLong) => {
                f.write_str("a label is longer than 63 characters, which DNS does not allow")
            }
            Self::Kernel(DomainError::NameTooLong) => {
                f.write_str("it is longer than the 253 characters a DNS name can have")
            }
            Self::Kernel(DomainError::TooManyLabels) => write!(
                f,
                "it has more than {} labels, more than the kernel's name rules match; block a shorter parent domain \
                 (it covers every name under it)",
                tracker_common::name::SUFFIX_RING
            ),
            Self::Address => f.write_str("it is an address: block it with `tracker block-ip`"),
            Self::Character('*') => {
                f.write_str("a wildcard: a rule covers every name under its domain already, so write the domain alone")
            }
            Self::Character(c) if "|^$@/:".contains(*c) => write!(
                f,
                "`{c}` is not part of a domain (adblock filter syntax is not read: use the list's hosts or plain \
                 domains version)"
            ),
            Self::Character(c) => write!(f, "{} is not allowed in a domain", crate::text::quoted(&c.to_string())),
            Self::NotAscii => {
                f.write_str("it is not ASCII: write an internationalised name in the xn-- form DNS carries (punycode)")
            }
            Self::TooWide => f.write_str(
                "it is a top-level or public suffix (like `com` or `co.uk`): it would block every name under it",
            ),
        }
    }
}

impl std::error::Error for BadDomain {}

/// A domain in the one form rules are stored and hashed in: trimmed, ASCII lower case, no
/// trailing dot. Letters, digits, `-` and `_` only (names of lookups: `_dmarc`, `xn--...`); at
/// least two labels and not a public suffix unless `wide` allows it (`block-domain --force`).
pub fn canonical_domain(text: &str, wide: bool) -> Result<String, BadDomain> {
    let t = text.trim();
    let t = t.strip_suffix('.').unwrap_or(t);
    if t.is_empty() {
        return Err(BadDomain::Kernel(DomainError::Empty));
    }
    // One final dot is the root's; a second is an empty label. Kept, it passed the one-label
    // test (`lan.` has a dot) and domain_hash drops it, so `lan..` covered all of `lan`.
    if t.ends_with('.') {
        return Err(BadDomain::Kernel(DomainError::EmptyLabel));
    }
    if t.parse::<IpAddr>().is_ok() || t.parse::<ipnet::IpNet>().is_ok() {
        return Err(BadDomain::Address);
    }
    if !t.is_ascii() {
        return Err(BadDomain::NotAscii);
    }
    if let Some(c) = t.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(BadDomain::Character(c));
    }
    let d = t.to_ascii_lowercase();
    domain_hash(&d).map_err(BadDomain::Kernel)?;
    if !wide && is_too_wide(&d) {
        return Err(BadDomain::TooWide);
    }
    Ok(d)
}

/// One label, or exactly a public suffix of the ICANN section (`co.uk`). A private-section
/// suffix (`cloudfront.net`, `github.io`) is one company's, and may be blocked.
fn is_too_wide(d: &str) -> bool {
    !d.contains('.')
        || psl::suffix(d.as_bytes()).is_some_and(|s| s.as_bytes() == d.as_bytes() && s.typ() == Some(psl::Type::Icann))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_stored_in_one_form() {
        assert_eq!(canonical_domain(" Ads.Example.COM. ", false).unwrap(), "ads.example.com");
        assert_eq!(canonical_domain("_dmarc.example.com", false).unwrap(), "_dmarc.example.com");
        assert_eq!(canonical_domain("xn--bcher-kva.example", false).unwrap(), "xn--bcher-kva.example");
        assert_eq!(canonical_domain("s3.amazonaws.com", false).unwrap(), "s3.amazonaws.com");
    }

    #[test]
    fn bad_domains_are_explained_in_words() {
        let why = |s: &str| canonical_domain(s, false).unwrap_err().to_string();
        assert!(why("a..example").contains("empty label"), "{}", why("a..example"));
        assert!(why(".example.com").contains("empty label"));
        // Found by `cargo xtask fuzz` (a blocklist line `0..`): the second of two final dots
        // was kept, and `lan..` passed as a rule covering every name under `lan`.
        assert!(why("lan..").contains("empty label"));
        assert!(why("ads.example.com..").contains("empty label"));
        assert!(why(&format!("{}.com", "a".repeat(64))).contains("longer than 63"));
        assert!(why(&vec!["abcdefghi"; 26].join(".")).contains("253 characters"));
        assert!(why(&vec!["a"; 33].join(".")).contains("more than 32 labels"));
        assert!(why("203.0.113.7").contains("block-ip"));
        assert!(why("198.51.100.0/24").contains("block-ip"));
        assert!(why("*.example.com").contains("wildcard"));
        assert!(why("||example.com^").contains("adblock"));
        assert!(why("bücher.example").contains("xn--"));
        assert!(why("exa mple.com").contains("not allowed"));
        assert!(why("com").contains("every name under it"));
        assert!(why("co.uk").contains("every name under it"));
        assert!(why("").contains("empty"));
        assert_eq!(canonical_domain("lan", true).unwrap(), "lan", "--force");
    }
}
