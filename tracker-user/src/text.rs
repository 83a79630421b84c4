//! Text a user or the network gave us, shown back safely: long arguments cut in error messages,
//! control characters escaped in tables and messages.

use std::borrow::Cow;

/// Longest part of an argument echoed in an error message: enough to recognise it, short enough
/// that a pasted 5,000-character string does not bury the message.
pub const ECHO_MAX: usize = 60;

/// `s` in backquotes for an error message, cut to [`ECHO_MAX`] characters with a note of how
/// much was left out, control characters escaped as in [`escape_controls`].
pub fn quoted(s: &str) -> String {
    let n = s.chars().count();
    if n <= ECHO_MAX {
        return format!("`{}`", escape_controls(s));
    }
    let head: String = s.chars().take(ECHO_MAX).collect();
    format!("`{}…` ({} more characters)", escape_controls(&head), n - ECHO_MAX)
}

/// `s` with every control character (C0 U+0000-U+001F, DEL U+007F, C1 U+0080-U+009F) replaced
/// by `\DDD`, the decimal value of each of its UTF-8 bytes: ESC is `\027`, U+0085 is
/// `\194\133`. This is the escaping DNS names already carry in the database, so a name reads the
/// same in a table whichever way it arrived. Everything else, including other non-ASCII text, is
/// kept: names and comments are untrusted input and must not move a terminal's cursor, but
/// `café` stays readable.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        if ch.is_control() {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:03}"));
            }
        } else {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_as_decimal_bytes() {
        assert_eq!(escape_controls("plain café"), "plain café");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("evil\x1b[2J"), "evil\\027[2J");
        assert_eq!(escape_controls("a\0b\tc\nd\x7f"), "a\\000b\\009c\\010d\\127");
        assert_eq!(escape_controls("x\u{85}y\u{9f}"), "x\\194\\133y\\194\\159");
        // Just outside the ranges: kept.
        assert_eq!(escape_controls(" ~\u{a0}"), " ~\u{a0}");
    }

    #[test]
    fn short_arguments_are_whole_and_long_ones_cut() {
        assert_eq!(quoted("1.2.3"), "`1.2.3`");
        let long = "x".repeat(5000);
        let q = quoted(&long);
        assert_eq!(q, format!("`{}…` (4940 more characters)", "x".repeat(60)));
        assert_eq!(quoted("a\x1bb"), "`a\\027b`");
    }
}
