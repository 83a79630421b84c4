//! The report as one self-contained HTML page: inline CSS and SVG charts, nothing fetched, so it
//! opens offline and from a file, and every name from the network escaped.

use std::fmt::Write as _;

use super::svg::{self, Item, escape};
use crate::query::report::{CompanyLine, Excluding, Report, Share};

/// Lines a chart shows before the rest are added up as "others".
const CHART_LINES: usize = 12;

/// How a company line reads to a person: local and unnamed lines say what they are.
pub fn company_label(line: &CompanyLine) -> String {
    match line.kind {
        "local" => "Local network".into(),
        "unnamed" => "No name (address only)".into(),
        _ => line.name.clone(),
    }
}

/// `value` bytes as a person reads them (powers of 1000, as network tools count).
pub fn human_bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = value as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{value} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Up to [`CHART_LINES`] `(label, value, note)` lines, the rest summed as one "others" line.
fn top(lines: Vec<(String, u64, String)>) -> Vec<(String, u64, String)> {
    if lines.len() <= CHART_LINES {
        return lines;
    }
    let (head, rest) = lines.split_at(CHART_LINES - 1);
    let others: u64 = rest.iter().map(|(_, v, _)| v).sum();
    let mut out = head.to_vec();
    out.push((format!("{} others", rest.len()), others, String::new()));
    out
}

fn items(lines: &[(String, u64, String)]) -> Vec<Item<'_>> {
    lines.iter().map(|(label, value, note)| Item { label, value: *value, note }).collect()
}

fn pct_note(p: f64) -> String {
    format!("{p:.1} %")
}

fn share_lines<'a>(lines: impl Iterator<Item = (String, &'a Share)>) -> Vec<(String, u64, String)> {
    top(lines.map(|(label, s)| (label, s.connections, pct_note(s.connections_pct))).collect())
}

/// A section of the report: its anchor, heading and what it shows, the same on the page and on
/// the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heading {
    pub id: &'static str,
    pub title: &'static str,
    pub explain: &'static str,
}

pub const DOMAINS: Heading =
    Heading { id: "domains", title: "Names looked up", explain: "How often each name was queried in DNS." };
pub const COMPANIES: Heading = Heading {
    id: "companies",
    title: "Companies",
    explain: "Who owns the names the devices connected to; a name no entry knows counts for its domain.",
};
pub const SERVED_BY: Heading = Heading {
    id: "served-by",
    title: "Served by",
    explain: "CDNs and clouds that carried other companies' names (their connections also count above).",
};
pub const SERVICES: Heading =
    Heading { id: "services", title: "Apps and services", explain: "The apps, sites and SDKs behind the names." };
pub const ENCRYPTION: Heading = Heading {
    id: "encryption",
    title: "Encrypted or not",
    explain: "Whether each connection's protocol encrypts what it carries.",
};
pub const PROTOCOLS: Heading = Heading {
    id: "protocols",
    title: "Protocols",
    explain: "Application protocols from each flow's first bytes (or, failing that, its port), and transports.",
};
pub const DEVICES: Heading = Heading { id: "devices", title: "Devices", explain: "One line per WireGuard peer." };

fn section(out: &mut String, heading: Heading, explain: &str, charts: &[String]) {
    let _ = write!(out, "<section id=\"{}\"><h2>{}</h2><p>{}</p>", heading.id, escape(heading.title), escape(explain));
    for c in charts {
        out.push_str("<figure>");
        out.push_str(c);
        out.push_str("</figure>");
    }
    out.push_str("</section>\n");
}

/// The names queried, most first.
pub fn domains_chart(report: &Report) -> String {
    let domains = top(report.domains.iter().map(|d| (d.domain.clone(), d.queries, String::new())).collect());
    svg::bar_chart("DNS queries per name", &items(&domains))
}

/// The share of connections per company, of every connection.
pub fn companies_chart(report: &Report) -> String {
    let companies = share_lines(report.companies.iter().map(|c| (company_label(c), &c.share)));
    svg::share_chart("Share of connections per company", &items(&companies))
}

/// The same without the companies `ex` names, shares of what is left.
pub fn companies_excluding_chart(ex: &Excluding) -> String {
    let rest = share_lines(ex.rows.iter().map(|c| (company_label(c), &c.share)));
    svg::share_chart(&format!("Without {}", ex.excluded.join(", ")), &items(&rest))
}

/// The CDNs and clouds behind other companies' names; `None` when there were none.
pub fn served_by_chart(report: &Report) -> Option<String> {
    let served: Vec<(String, u64, String)> =
        top(report.served_by.iter().map(|s| (s.name.clone(), s.connections, String::new())).collect());
    (!served.is_empty()).then(|| svg::bar_chart("Connections carried per CDN or cloud", &items(&served)))
}

pub fn services_chart(report: &Report) -> String {
    let services = share_lines(report.services.iter().map(|s| (s.name.clone(), &s.share)));
    svg::bar_chart("Connections per service", &items(&services))
}

/// Which protocols each encryption class counted, as the section says it.
pub fn encryption_explain(report: &Report) -> String {
    let counted: Vec<String> =
        report.encryption.iter().map(|e| format!("{}: {}", e.class, e.protocols.join(", "))).collect();
    format!("By protocol: {}.", counted.join("; "))
}

/// Connections, then bytes, encrypted or not.
pub fn encryption_charts(report: &Report) -> [String; 2] {
    let enc_conn = share_lines(report.encryption.iter().map(|e| (e.class.to_owned(), &e.share)));
    let enc_bytes: Vec<(String, u64, String)> =
        report.encryption.iter().map(|e| (e.class.to_owned(), e.share.bytes, pct_note(e.share.bytes_pct))).collect();
    [
        svg::share_chart("Connections, encrypted or not", &items(&enc_conn)),
        svg::share_chart("Bytes, encrypted or not", &items(&enc_bytes)),
    ]
}

/// Application protocols, then transports.
pub fn protocol_charts(report: &Report) -> [String; 2] {
    let apps = share_lines(report.app_protocols.iter().map(|p| (p.name.clone(), &p.share)));
    let transports = share_lines(report.transports.iter().map(|p| (p.name.clone(), &p.share)));
    [
        svg::bar_chart("Connections per application protocol", &items(&apps)),
        svg::share_chart("Connections per transport", &items(&transports)),
    ]
}

pub fn devices_chart(report: &Report) -> String {
    let devices: Vec<(String, u64, String)> =
        top(report.devices.iter().map(|d| (d.device.clone(), d.connections, human_bytes(d.bytes))).collect());
    svg::bar_chart("Connections per device", &items(&devices))
}

/// The page for `report`.
pub fn render(report: &Report) -> String {
    let mut body = String::new();
    let period = format!("{} to {}", report.since, report.until);
    let who = report.client.as_deref().map_or_else(|| "all devices".to_owned(), |c| format!("device {c}"));
    let _ = writeln!(
        body,
        "<header><h1>What your devices talked to</h1><p>{} · {} · {} connections, {}</p></header>",
        escape(&period),
        escape(&who),
        report.totals.connections,
        escape(&human_bytes(report.totals.bytes)),
    );
    section(&mut body, DOMAINS, DOMAINS.explain, &[domains_chart(report)]);
    let mut charts = vec![companies_chart(report)];
    charts.extend(report.companies_excluding.as_ref().map(companies_excluding_chart));
    section(&mut body, COMPANIES, COMPANIES.explain, &charts);
    if let Some(chart) = served_by_chart(report) {
        section(&mut body, SERVED_BY, SERVED_BY.explain, &[chart]);
    }
    section(&mut body, SERVICES, SERVICES.explain, &[services_chart(report)]);
    section(&mut body, ENCRYPTION, &encryption_explain(report), &encryption_charts(report));
    section(&mut body, PROTOCOLS, PROTOCOLS.explain, &protocol_charts(report));
    section(&mut body, DEVICES, DEVICES.explain, &[devices_chart(report)]);

    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>tracker report</title><style>{STYLE}</style></head>\n<body>\n{body}\
<footer><p>Made by tracker from its own database; this page loads nothing from anywhere.</p></footer>\n\
</body></html>\n"
    )
}

/// The page's whole style: readable on a phone, charts no wider than a column of text.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:42rem;\
color:#1a1a1a;background:#fff;line-height:1.4}h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}\
figure{margin:0.5rem 0}header p,section p,footer p{color:#444;font-size:0.9rem}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::report::{CompanyLine, DomainLine, Totals};

    fn report() -> Report {
        let share = Share { connections: 3, connections_pct: 75.0, bytes: 3000, bytes_pct: 75.0 };
        Report {
            since: "2026-12-01T00:00:00Z".into(),
            until: "2026-12-06T00:00:00Z".into(),
            client: Some("<b>phone</b>".into()),
            totals: Totals { connections: 4, bytes: 4000 },
            domains: vec![DomainLine { domain: "<script>alert(1)</script>.example".into(), queries: 9, clients: 1 }],
            companies: vec![
                CompanyLine {
                    name: "Ev\"il & <Co>".into(),
                    kind: "company",
                    category: Some("other"),
                    share: share.clone(),
                },
                CompanyLine { name: String::new(), kind: "local", category: None, share },
            ],
            companies_excluding: None,
            served_by: vec![],
            services: vec![],
            encryption: vec![],
            transports: vec![],
            app_protocols: vec![],
            devices: vec![],
        }
    }

    #[test]
    fn the_page_refers_to_nothing_outside_and_escapes_every_name() {
        let page = render(&report());
        let lower = page.to_ascii_lowercase();
        for banned in ["<script", "href", "src=", "url(", "http:", "https:", "@import", "<link", "<img", "<iframe"] {
            assert!(!lower.contains(banned), "{banned} in the page");
        }
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.example"));
        assert!(page.contains("&lt;b&gt;phone&lt;/b&gt;"));
        assert!(page.contains("Local network"));
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
    }

    #[test]
    fn long_lists_end_in_others() {
        let lines: Vec<(String, u64, String)> = (0..20).map(|i| (format!("n{i}"), 20 - i, String::new())).collect();
        let t = top(lines);
        assert_eq!(t.len(), CHART_LINES);
        assert_eq!(t[CHART_LINES - 1].0, "9 others");
        assert_eq!(t[CHART_LINES - 1].1, (1..=9).sum::<u64>());
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
