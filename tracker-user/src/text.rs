//! Text a user or the network gave us, shown back safely: long arguments cut in error messages.

/// Longest part of an argument echoed in an error message: enough to recognise it, short enough
/// that a pasted 5,000-character string does not bury the message.
pub const ECHO_MAX: usize = 60;

/// `s` in backquotes for an error message, cut to [`ECHO_MAX`] characters with a note of how
/// much was left out.
pub fn quoted(s: &str) -> String {
    let n = s.chars().count();
    if n <= ECHO_MAX {
        return format!("`{s}`");
    }
    let head: String = s.chars().take(ECHO_MAX).collect();
    format!("`{head}…` ({} more characters)", n - ECHO_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_arguments_are_whole_and_long_ones_cut() {
        assert_eq!(quoted("1.2.3"), "`1.2.3`");
        let long = "x".repeat(5000);
        let q = quoted(&long);
        assert_eq!(q, format!("`{}…` (4940 more characters)", "x".repeat(60)));
    }
}
