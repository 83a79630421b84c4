//! HTTP/1.x first-payload inspection: the request's Host header and a "looks like HTTP" test.

use super::domain::{is_ip_literal, normalize_hostname};

/// How far into a payload we look for the end of the headers. The kernel hands us at most 1280
/// bytes; the bound only matters for callers that pass more, and keeps the scan cheap.
const MAX_HEAD: usize = 8 * 1024;

/// Longest method token we accept; real methods are at most 17 bytes (VERSION-CONTROL).
const MAX_METHOD: usize = 24;

/// Methods recognised by [`looks_like_http`] even before the request line is complete (RFC 9110
/// §9 plus PATCH from RFC 5789). Custom methods are still accepted once the whole request line
/// with its `HTTP/1.x` version has been seen.
const KNOWN_METHODS: [&[u8]; 9] =
    [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"];

/// True when `payload` starts like HTTP/1.x: a response status line (`HTTP/1.`), a request with
/// a well-known method followed by a space, or any method token whose complete request line ends
/// in `HTTP/1.x`. Used to classify a flow as clear text from its first payload.
pub fn looks_like_http(payload: &[u8]) -> bool {
    if payload.starts_with(b"HTTP/1.") {
        return true;
    }
    let Some((method, _)) = method_token(payload) else {
        return false;
    };
    KNOWN_METHODS.contains(&method) || request_line_len(payload).is_some()
}

/// The Host header of an HTTP/1.x request at the start of `payload`, normalised like DNS names
/// (lower case, no trailing dot, no port).
///
/// Requires a complete request line (`METHOD target HTTP/1.x`), then reads header lines up to the
/// blank line that ends them. Only complete lines count: a payload cut by the 1280-byte capture
/// inside the Host line must not yield a truncated name. Header names compare case-insensitively
/// (RFC 9110 §5.1) and surrounding blanks are trimmed. Returns `None` when there is no Host
/// header, its value is not a plausible host (RFC 3986 reg-name), or it is an IP address
/// (`curl http://203.0.113.10/`, `[2001:db8::1]:8080`): an address is not a name, and naming the
/// flow by it would only repeat its remote address.
pub fn http_host(payload: &[u8]) -> Option<String> {
    let head = &payload[..payload.len().min(MAX_HEAD)];
    let mut rest = &head[request_line_len(head)?..];
    loop {
        // A line without its newline was cut by the capture: stop, it may be incomplete.
        let end = rest.iter().position(|&b| b == b'\n')?;
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None; // end of headers without a Host
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"host") {
            return host_value(line[colon + 1..].trim_ascii());
        }
    }
}

/// The method token at the start of a request and the bytes after its space.
fn method_token(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = payload.iter().take(MAX_METHOD + 1).position(|&b| b == b' ')?;
    let method = &payload[..space];
    // RFC 9110 tokens allow more, but real methods are upper-case letters and '-'; being strict
    // keeps binary protocols from passing as HTTP.
    let valid = !method.is_empty() && method.iter().all(|&b| b.is_ascii_uppercase() || b == b'-');
    valid.then(|| (method, &payload[space + 1..]))
}

/// Length of a complete request line `METHOD SP target SP HTTP/1.x` including its line end.
fn request_line_len(payload: &[u8]) -> Option<usize> {
    let (_, after_method) = method_token(payload)?;
    let end = payload.iter().position(|&b| b == b'\n')?;
    let line = payload[..end].strip_suffix(b"\r").unwrap_or(&payload[..end]);
    let target_and_version = line.get(payload.len() - after_method.len()..)?;
    let (target, version) = split_last_space(target_and_version)?;
    let version_ok = version.len() == 8 && version.starts_with(b"HTTP/1.") && version[7].is_ascii_digit();
    (version_ok && !target.is_empty() && !target.contains(&b' ')).then_some(end + 1)
}

fn split_last_space(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = bytes.iter().rposition(|&b| b == b' ')?;
    Some((&bytes[..space], &bytes[space + 1..]))
}

/// Validates and normalises a Host header value: `name[:port]`. An IP literal (`v4[:port]`,
/// `[v6][:port]`) is no name and gives `None`.
fn host_value(value: &[u8]) -> Option<String> {
    if value.starts_with(b"[") {
        // Only an IP literal (RFC 3986 §3.2.2) is written in brackets.
        return None;
    }
    let host = match value.iter().rposition(|&b| b == b':') {
        Some(colon) if is_port(&value[colon..]) => &value[..colon],
        Some(_) => return None,
        None => value,
    };
    // RFC 3986 reg-name characters (unreserved, pct-encoded, sub-delims); anything else is not a
    // host, so we refuse it rather than escape it.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
    if !host.iter().copied().all(allowed) {
        return None;
    }
    normalize_hostname(host).filter(|name| !is_address(name))
}

/// True when a normalised host name is an IP address rather than a name: an IPv4 or IPv6
/// literal, or a legacy IPv4 form that clients resolve as an address without DNS (`203.0.113`,
/// `0x7f.1`, `2130706433`): as in the WHATWG URL standard, a host whose last label is a number is
/// an IPv4 address. No top-level domain is numeric, so no real name is lost. Shared by the TLS
/// SNI and HTTP Host readers.
pub(crate) fn is_address(name: &str) -> bool {
    if is_ip_literal(name) {
        return true;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    match hex {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `:` followed by 0-5 digits (an empty port is allowed by RFC 3986 §3.2.3).
fn is_port(bytes: &[u8]) -> bool {
    bytes.strip_prefix(b":").is_some_and(|digits| digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_from_a_simple_request() {
        let req = b"GET /index.html HTTP/1.1\r\nHost: Www.Example.COM\r\nAccept: */*\r\n\r\n";
        assert_eq!(http_host(req).as_deref(), Some("www.example.com"));
        assert!(looks_like_http(req));
    }

    #[test]
    fn header_name_is_case_insensitive_and_blanks_trimmed() {
        let req = b"POST /api HTTP/1.0\r\nUser-Agent: x\r\nhOsT:\t api.example.org. \r\n\r\nbody";
        assert_eq!(http_host(req).as_deref(), Some("api.example.org"));
    }

    #[test]
    fn port_is_stripped_and_literals_kept() {
        let host = |v: &str| http_host(format!("GET / HTTP/1.1\r\nHost: {v}\r\n\r\n").as_bytes());
        assert_eq!(host("example.com:8080").as_deref(), Some("example.com"));
        assert_eq!(host("example.com:").as_deref(), Some("example.com"));
        assert_eq!(host("[not-v6]"), None);
        assert_eq!(host("[::1]junk"), None);
        assert_eq!(host("example.com:http"), None);
        assert_eq!(host("example.com:123456"), None);
        assert_eq!(host(""), None);
        assert_eq!(host("exa mple.com"), None);
        assert_eq!(host("user@example.com"), None);
        assert_eq!(host("example.com/path"), None);
        assert_eq!(host("a..b"), None);
    }

    /// `curl http://203.0.113.10/` sends `Host: 203.0.113.10`: an address, not a name.
    #[test]
    fn an_address_in_host_is_no_name() {
        let host = |v: &str| http_host(format!("GET / HTTP/1.1\r\nHost: {v}\r\n\r\n").as_bytes());
        for v in [
            "203.0.113.10",
            "203.0.113.10:80",
            "203.0.113.10.",
            "192.0.2.1:",
            "[2001:DB8::1]:443",
            "[2001:db8::1]",
            "[::ffff:192.0.2.1]",
        ] {
            assert_eq!(host(v), None, "{v}");
        }
        // Legacy IPv4 forms curl and browsers resolve without DNS are addresses too.
        for v in ["203.0.113", "2130706433", "0x7f.1", "127.1:8080"] {
            assert_eq!(host(v), None, "{v}");
        }
        // Names that merely contain numbers are still names.
        assert_eq!(host("1.2.3.4.example").as_deref(), Some("1.2.3.4.example"));
        assert_eq!(host("203-0-113-10.nip.io").as_deref(), Some("203-0-113-10.nip.io"));
        assert_eq!(host("123.example:80").as_deref(), Some("123.example"));
    }

    #[test]
    fn bare_newlines_are_accepted() {
        let req = b"GET / HTTP/1.1\nHost: lf.example\n\n";
        assert_eq!(http_host(req).as_deref(), Some("lf.example"));
    }

    #[test]
    fn stops_at_the_blank_line() {
        let req = b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\nHost: body.example\r\n";
        assert_eq!(http_host(req), None);
    }

    #[test]
    fn cut_inside_the_host_line_yields_nothing() {
        let req = b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
        // Index of the '\n' ending the Host line.
        let newline = "GET / HTTP/1.1\r\nHost: www.example.com\r".len();
        for cut in 0..=newline {
            assert_eq!(http_host(&req[..cut]), None, "cut at {cut}");
        }
        // Once the line ending is in, the headers need not be complete.
        assert_eq!(http_host(&req[..=newline]).as_deref(), Some("www.example.com"));
    }

    #[test]
    fn host_after_a_long_cookie_within_bounds() {
        let mut req = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        req.extend(std::iter::repeat_n(b'c', 4000));
        req.extend_from_slice(b"\r\nHost: late.example\r\n\r\n");
        assert_eq!(http_host(&req).as_deref(), Some("late.example"));
        // Beyond the scan bound it is not looked for.
        let mut huge = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        huge.extend(std::iter::repeat_n(b'c', MAX_HEAD));
        huge.extend_from_slice(b"\r\nHost: late.example\r\n\r\n");
        assert_eq!(http_host(&huge), None);
    }

    #[test]
    fn not_a_request() {
        assert_eq!(http_host(b""), None);
        assert_eq!(http_host(b"HTTP/1.1 200 OK\r\nHost: x.example\r\n\r\n"), None);
        assert_eq!(http_host(b"get / HTTP/1.1\r\nHost: x.example\r\n\r\n"), None);
        assert_eq!(http_host(b"GET / HTTP/2.0\r\nHost: x.example\r\n\r\n"), None);
        assert_eq!(http_host(b"GET /\r\nHost: x.example\r\n\r\n"), None);
        assert_eq!(http_host(b"GET  HTTP/1.1\r\nHost: x.example\r\n\r\n"), None);
        assert_eq!(http_host(b"\x16\x03\x01\x02\x00\x01"), None);
        assert_eq!(http_host(b"SSH-2.0-OpenSSH_9.2\r\n"), None);
    }

    #[test]
    fn custom_methods_need_a_complete_request_line() {
        let req = b"PROPFIND /dav HTTP/1.1\r\nHost: dav.example\r\n\r\n";
        assert_eq!(http_host(req).as_deref(), Some("dav.example"));
        assert!(looks_like_http(req));
        assert!(!looks_like_http(b"PROPFIND /dav"));
        assert!(looks_like_http(b"GET /very-long-url-cut-by-the-captu"));
    }

    #[test]
    fn http_detection() {
        assert!(looks_like_http(b"HTTP/1.1 200 OK\r\n"));
        assert!(looks_like_http(b"CONNECT example.com:443 HTTP/1.1\r\n"));
        assert!(!looks_like_http(b"GET"));
        assert!(!looks_like_http(b"GETX / HTTP/1.1"));
        assert!(!looks_like_http(b"HTTP/2 200"));
        assert!(!looks_like_http(b"\x16\x03\x01\x02\x00"));
        assert!(!looks_like_http(b"SSH-2.0-OpenSSH_9.2\r\n"));
        assert!(!looks_like_http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!looks_like_http(b""));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let base = b"GET / HTTP/1.1\r\nHost: [::1]:80\r\nX: y\r\n\r\n";
        for cut in 0..=base.len() {
            let _ = http_host(&base[..cut]);
            let _ = looks_like_http(&base[..cut]);
        }
        for b in 0..=255u8 {
            let mut req = base.to_vec();
            req[20] = b;
            let _ = http_host(&req);
        }
    }
}
