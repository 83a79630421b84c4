//! Domain-name helpers shared by the parsers: safe display of untrusted names and registrable domains.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Longest name in presentation form without the trailing dot: 255 wire octets minus the root
/// label and the first length octet (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 253;

/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Renders one DNS label in zone-file presentation form (RFC 1035 §5.1, as BIND prints it).
///
/// Names come from packets a third party wrote, so they may hold control characters, terminal
/// escapes, NULs or bytes that are not UTF-8. Printable ASCII is kept as is; every other byte
/// becomes `\DDD` (decimal), and the characters that mean something in a name (`.` inside a
/// label, `\`, and the zone-file specials `"();@$`) get a backslash, so the rendering is
/// lossless, one line, pure ASCII and never ambiguous about label boundaries.
pub fn display_escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x21..=0x7e => out.push(char::from(b)),
            _ => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out
}

/// Joins labels into the one canonical form used everywhere in tracker: ASCII-lower-cased,
/// escaped with [`display_escaped`], no trailing dot. The root name (no labels) is `"."`.
///
/// Lower-casing happens on the raw bytes before escaping, so only `A`-`Z` change (DNS compares
/// names ASCII-case-insensitively, RFC 4343) and escaped bytes are never altered.
pub fn display_name<'a, I>(labels: I) -> String
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut out = String::new();
    for label in labels {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&display_escaped(&label.to_ascii_lowercase()));
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Normalises a host name taken from a text protocol (TLS SNI, HTTP Host) into the same form as
/// DNS names, so that all three sources compare equal: lower case, one trailing dot dropped,
/// labels escaped. Returns `None` for what cannot be a host name: empty, an empty label
/// (`a..b`), a label over 63 bytes or a name over 253 bytes.
pub fn normalize_hostname(bytes: &[u8]) -> Option<String> {
    let bytes = bytes.strip_suffix(b".").unwrap_or(bytes);
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN {
        return None;
    }
    let labels: Vec<&[u8]> = bytes.split(|&b| b == b'.').collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > MAX_LABEL_LEN) {
        return None;
    }
    Some(display_name(labels))
}

/// True when `name` is an IPv4 or IPv6 literal (optionally in `[...]`), which is never a name.
pub fn is_ip_literal(name: &str) -> bool {
    let name = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    name.parse::<IpAddr>().is_ok()
}

/// The registrable domain ("eTLD+1") of `name` according to the Public Suffix List compiled into
/// the `psl` crate: `a.b.example.co.uk` -> `example.co.uk`.
///
/// Returns `None` for a name that is itself a public suffix (`co.uk`, `com`), for a single label
/// (`localhost`), and for IP literals. The list's private section is applied too (as browsers do
/// for cookies), so `user.github.io` is its own registrable domain: those subdomains belong to
/// different owners. Names not under a listed suffix fall back to the PSL's implicit `*` rule,
/// i.e. the last label is the suffix (`printer.lan` -> `printer.lan`).
pub fn registrable(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || is_ip_literal(name) {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    psl::domain_str(&lower).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keeps_printable_ascii() {
        assert_eq!(display_escaped(b"www-1_a*"), "www-1_a*");
    }

    #[test]
    fn escaped_escapes_binary_and_specials() {
        assert_eq!(display_escaped(b"a.b"), "a\\.b");
        assert_eq!(display_escaped(b"a\\b"), "a\\\\b");
        assert_eq!(display_escaped(b"\x00\x1b[31m"), "\\000\\027[31m");
        assert_eq!(display_escaped(b" "), "\\032");
        assert_eq!(display_escaped(&[0xc3, 0xa9]), "\\195\\169");
        assert_eq!(display_escaped(b"\x7f"), "\\127");
        assert_eq!(display_escaped(b"\"();@$"), "\\\"\\(\\)\\;\\@\\$");
        // Whatever goes in, what comes out is printable ASCII on one line.
        let all: Vec<u8> = (0..=255).collect();
        let shown = display_escaped(&all);
        assert!(shown.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }

    #[test]
    fn display_name_lowercases_and_joins() {
        let labels: [&[u8]; 3] = [b"WWW", b"Example", b"COM"];
        assert_eq!(display_name(labels), "www.example.com");
        assert_eq!(display_name(std::iter::empty()), ".");
        // Only ASCII letters are lower-cased; a non-ASCII byte (0xC1) is escaped unchanged.
        let labels: [&[u8]; 2] = [&[0xc1, b'A'], b"x"];
        assert_eq!(display_name(labels), "\\193a.x");
    }

    #[test]
    fn normalize_hostname_rules() {
        assert_eq!(normalize_hostname(b"WWW.Example.COM.").as_deref(), Some("www.example.com"));
        assert_eq!(normalize_hostname(b""), None);
        assert_eq!(normalize_hostname(b"."), None);
        assert_eq!(normalize_hostname(b"a..b"), None);
        assert_eq!(normalize_hostname(&[b'a'; 64]), None);
        assert!(normalize_hostname(&[b'a'; 63]).is_some());
        let long = [[b'a'; 63].as_slice(); 4].join(&b'.');
        assert_eq!(long.len(), 255);
        assert_eq!(normalize_hostname(&long), None);
        assert_eq!(normalize_hostname(b"bad\x00host").as_deref(), Some("bad\\000host"));
    }

    #[test]
    fn registrable_domains() {
        assert_eq!(registrable("a.b.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(registrable("WWW.Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(registrable("example.com").as_deref(), Some("example.com"));
        assert_eq!(registrable("co.uk"), None);
        assert_eq!(registrable("com"), None);
        assert_eq!(registrable("localhost"), None);
        assert_eq!(registrable(""), None);
        assert_eq!(registrable("."), None);
        assert_eq!(registrable("192.0.2.1"), None);
        assert_eq!(registrable("2001:db8::1"), None);
        assert_eq!(registrable("[2001:db8::1]"), None);
        // Private-section suffixes count: each github.io site is its own registrable domain.
        assert_eq!(registrable("foo.user.github.io").as_deref(), Some("user.github.io"));
        // Unlisted TLDs fall back to the implicit "*" rule.
        assert_eq!(registrable("printer.lan").as_deref(), Some("printer.lan"));
    }

    #[test]
    fn ip_literals() {
        assert!(is_ip_literal("10.0.0.1"));
        assert!(is_ip_literal("::1"));
        assert!(is_ip_literal("[::1]"));
        assert!(!is_ip_literal("example.com"));
        assert!(!is_ip_literal("1.2.3.4.example"));
    }
}
