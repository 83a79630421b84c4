//! Blocklist files: hosts format (`0.0.0.0 ads.example.com`, several names to a line allowed)
//! and plain lists (one domain a line), with `#` comments, blank lines and repeats, read into
//! the domains of one list rule. Every line that is not used is accounted for: a malformed one
//! with its line number and why, a hosts file's entries for the host itself (`localhost`) as
//! such. Names are made lower case; a name that is not ASCII is malformed (lists carry the
//! `xn--` form DNS uses).

use std::{collections::HashSet, net::IpAddr};

use super::canonical_domain;

/// A line that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// 1-based.
    pub line: usize,
    /// The line as read (lossily decoded when it is not UTF-8), trimmed.
    pub text: String,
    pub why: String,
}

/// What a list file held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Its domains, in file order, each once.
    pub domains: Vec<String>,
    pub lines: usize,
    /// Comment and blank lines.
    pub comments: usize,
    /// Names given again.
    pub duplicates: usize,
    /// Names of the host itself that hosts files carry (`127.0.0.1 localhost`): not blocked.
    pub local: usize,
    pub malformed: Vec<Malformed>,
}

/// Names a hosts file gives the host itself (the usual preamble): never block rules.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// Whether a hosts line's address means "nothing here" (a block), not a real mapping.
fn blocks(addr: IpAddr) -> bool {
    addr.is_unspecified() || addr.is_loopback()
}

/// Reads a list from its bytes (any mix of hosts and plain lines; CRLF or LF).
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let mut seen: HashSet<String> = HashSet::new();
    if bytes.is_empty() {
        return out;
    }
    // The newline that ends the last line ends it; it does not start another.
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        out.lines += 1;
        let bad = |text: &str, why: String| Malformed { line: number, text: text.trim().to_owned(), why };
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(_) => {
                let text = String::from_utf8_lossy(raw);
                out.malformed.push(bad(&text, "it is not UTF-8 text".into()));
                continue;
            }
        };
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            out.comments += 1;
            continue;
        }
        let words: Vec<&str> = content.split_whitespace().collect();
        // A hosts line: an address (an IPv6 one may carry a zone, fe80::1%lo0), then names.
        let addr = words[0].split('%').next().and_then(|a| a.parse::<IpAddr>().ok());
        let names: &[&str] = match addr {
            Some(_) if words.len() == 1 => {
                out.malformed.push(bad(line, "an address without a name".into()));
                continue;
            }
            Some(_) => &words[1..],
            None if words.len() == 1 => &words[..],
            None => {
                out.malformed.push(bad(
                    line,
                    "several words without an address first (a hosts line is `0.0.0.0 name`, a plain one a \
                     single domain)"
                        .into(),
                ));
                continue;
            }
        };
        for name in names {
            if LOCAL_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
                out.local += 1;
                continue;
            }
            if let Some(a) = addr.filter(|a| !blocks(*a)) {
                out.malformed.push(bad(
                    line,
                    format!("it maps {name} to {a}, which is not a block (0.0.0.0, 127.0.0.1, :: or ::1)"),
                ));
                continue;
            }
            match canonical_domain(name, false) {
                Ok(d) if seen.contains(&d) => out.duplicates += 1,
                Ok(d) => {
                    seen.insert(d.clone());
                    out.domains.push(d);
                }
                // The name is said when the line holds more than it.
                Err(e) if names.len() > 1 || addr.is_some() => {
                    out.malformed.push(bad(line, format!("{}: {e}", crate::text::quoted(name))))
                }
                Err(e) => out.malformed.push(bad(line, e.to_string())),
            }
        }
    }
    out
}

/// A list's default name: its file name without the extension (`hosts`, `ads-and-tracking`).
pub fn default_name(path: &std::path::Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?.trim();
    (!stem.is_empty()).then(|| stem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_plain_lines_comments_and_repeats() {
        let text = "# a list\n\
                    \n\
                    127.0.0.1 localhost\n\
                    ::1 localhost ip6-localhost ip6-loopback\n\
                    255.255.255.255 broadcasthost\n\
                    fe80::1%lo0 localhost\n\
                    0.0.0.0 0.0.0.0\n\
                    0.0.0.0 ads.example.com   # trailing comment\n\
                    127.0.0.1\tTracker.Example.NET.\r\n\
                    :: six.example.org one.example.org\n\
                    plain.example\n\
                    ADS.example.com\n\
                    \t  # indented comment\n";
        let p = parse(text.as_bytes());
        assert_eq!(
            p.domains,
            ["ads.example.com", "tracker.example.net", "six.example.org", "one.example.org", "plain.example"]
        );
        assert_eq!(p.lines, 13);
        assert_eq!(p.comments, 3);
        assert_eq!(p.duplicates, 1, "ADS.example.com is ads.example.com");
        assert_eq!(p.local, 7);
        assert!(p.malformed.is_empty(), "{:?}", p.malformed);
    }

    #[test]
    fn every_malformed_line_is_reported_with_its_number_and_why() {
        let text = "good.example\n\
                    *.wild.example\n\
                    192.168.1.5 nas.example\n\
                    0.0.0.0\n\
                    two words\n\
                    ||adblock.example^\n\
                    bücher.example\n\
                    a..b.example\n\
                    com\n\
                    0.0.0.0 fine.example bad..example\n";
        let mut bytes = text.as_bytes().to_vec();
        bytes.extend_from_slice(b"\xff\xfe.example\n");
        let p = parse(&bytes);
        assert_eq!(p.domains, ["good.example", "fine.example"]);
        let got: Vec<(usize, &str)> = p.malformed.iter().map(|m| (m.line, m.text.as_str())).collect();
        assert_eq!(
            got,
            [
                (2, "*.wild.example"),
                (3, "192.168.1.5 nas.example"),
                (4, "0.0.0.0"),
                (5, "two words"),
                (6, "||adblock.example^"),
                (7, "bücher.example"),
                (8, "a..b.example"),
                (9, "com"),
                (10, "0.0.0.0 fine.example bad..example"),
                (11, "\u{fffd}\u{fffd}.example"),
            ]
        );
        let why: Vec<&str> = p.malformed.iter().map(|m| m.why.as_str()).collect();
        assert!(why[0].contains("wildcard"), "{}", why[0]);
        assert!(why[1].contains("not a block"), "{}", why[1]);
        assert!(why[2].contains("without a name"), "{}", why[2]);
        assert!(why[3].contains("several words"), "{}", why[3]);
        assert!(why[4].contains("adblock"), "{}", why[4]);
        assert!(why[5].contains("xn--"), "{}", why[5]);
        assert!(why[6].contains("empty label"), "{}", why[6]);
        assert!(why[7].contains("every name under it"), "{}", why[7]);
        assert!(why[8].starts_with("`bad..example`"), "{}", why[8]);
        assert!(why[9].contains("not UTF-8"), "{}", why[9]);
        assert_eq!(p.lines, 11);
    }

    #[test]
    fn a_last_line_without_newline_counts_and_an_empty_file_is_empty() {
        let p = parse(b"a.example\nb.example");
        assert_eq!((p.domains.len(), p.lines), (2, 2));
        assert_eq!(parse(b""), Parsed::default());
        assert_eq!(parse(b"\n").lines, 1);
    }

    #[test]
    fn a_list_is_named_after_its_file() {
        assert_eq!(default_name("/tmp/StevenBlack-hosts.txt".as_ref()).as_deref(), Some("StevenBlack-hosts"));
        assert_eq!(default_name("/etc/hosts".as_ref()).as_deref(), Some("hosts"));
        assert_eq!(default_name("/".as_ref()), None);
    }
}
