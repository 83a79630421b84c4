//! What a page shows, as its query string says it (period, device, "hide the big players"):
//! parsed strictly, and written back as the links that change one choice at a time.

use serde::Deserialize;

use crate::query::timeline::Span;

/// The periods a page offers: the last 24 hours by the hour, the last 7 and 30 days by the day.
/// Rolling rather than calendar days: the server knows UTC, not the phone's time zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Period {
    #[default]
    Day,
    Week,
    Month,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    /// Its value in a query string.
    pub fn key(self) -> &'static str {
        match self {
            Self::Day => "24h",
            Self::Week => "7d",
            Self::Month => "30d",
        }
    }

    /// As a link says it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Day => "24 hours",
            Self::Week => "7 days",
            Self::Month => "30 days",
        }
    }

    pub fn ms(self) -> i64 {
        const DAY_MS: i64 = crate::store::rollup::DAY_MS;
        match self {
            Self::Day => DAY_MS,
            Self::Week => 7 * DAY_MS,
            Self::Month => 30 * DAY_MS,
        }
    }

    /// The timeline's buckets.
    pub fn span(self) -> Span {
        match self {
            Self::Day => Span::Hour,
            Self::Week | Self::Month => Span::Day,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.key() == s)
    }
}

/// The query string as sent; every field optional, anything else ignored.
#[derive(Debug, Default, Deserialize)]
pub struct RawView {
    period: Option<String>,
    device: Option<String>,
    hide: Option<String>,
}

/// The value of `hide` that leaves the big players out of the company chart.
const HIDE_BIG: &str = "big";

/// A query string value that names no choice: answered 400, without echoing it.
#[derive(Debug, PartialEq, Eq)]
pub struct BadParam(pub &'static str);

/// What a page shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub period: Period,
    /// A device as `--client` takes it (here: its public key, or an address).
    pub device: Option<String>,
    /// The company chart without [`crate::query::report::BIG_PLAYERS`].
    pub hide_big: bool,
}

impl View {
    pub fn parse(raw: RawView) -> Result<Self, BadParam> {
        let RawView { period, device, hide } = raw;
        let period = match period.as_deref() {
            None => Period::default(),
            Some(p) => Period::parse(p).ok_or(BadParam("period"))?,
        };
        let hide_big = match hide.as_deref() {
            None => false,
            Some(HIDE_BIG) => true,
            Some(_) => return Err(BadParam("hide")),
        };
        Ok(Self { period, device: device.filter(|d| !d.is_empty()), hide_big })
    }

    /// The first page's link for this view; choices at their default are left out.
    pub fn href(&self) -> String {
        self.href_at("/")
    }

    /// The link to the page at `path` (already encoded) for this view.
    pub fn href_at(&self, path: &str) -> String {
        let mut parts = Vec::new();
        if self.period != Period::default() {
            parts.push(format!("period={}", self.period.key()));
        }
        if let Some(d) = &self.device {
            parts.push(format!("device={}", encode(d)));
        }
        if self.hide_big {
            parts.push(format!("hide={HIDE_BIG}"));
        }
        if parts.is_empty() { path.to_owned() } else { format!("{path}?{}", parts.join("&")) }
    }

    pub fn with_period(&self, period: Period) -> Self {
        Self { period, ..self.clone() }
    }

    pub fn with_device(&self, device: Option<&str>) -> Self {
        Self { device: device.map(str::to_owned), ..self.clone() }
    }

    pub fn with_hide_big(&self, hide_big: bool) -> Self {
        Self { hide_big, ..self.clone() }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: a WireGuard key's `+`, `/`
/// and `=` stay data in a query string or a path segment.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(period: Option<&str>, device: Option<&str>, hide: Option<&str>) -> RawView {
        RawView { period: period.map(Into::into), device: device.map(Into::into), hide: hide.map(Into::into) }
    }

    #[test]
    fn views_parse_strictly_and_link_back_to_themselves() {
        assert_eq!(View::parse(RawView::default()).unwrap(), View::default());
        assert_eq!(View::default().href(), "/");
        let key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        let v = View::parse(raw(Some("30d"), Some(key), Some("big"))).unwrap();
        assert_eq!(v, View { period: Period::Month, device: Some(key.into()), hide_big: true });
        assert_eq!(v.href(), "/?period=30d&device=xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg%3D&hide=big");
        assert_eq!(v.with_period(Period::Day).with_device(None).with_hide_big(false).href(), "/");
        assert_eq!(View::parse(raw(Some("1y"), None, None)), Err(BadParam("period")));
        assert_eq!(View::parse(raw(None, None, Some("<b>"))), Err(BadParam("hide")));
        assert_eq!(View::parse(raw(None, Some(""), None)).unwrap().device, None);
        assert_eq!(encode("a+b/c= <é>"), "a%2Bb%2Fc%3D%20%3C%C3%A9%3E");
    }
}
