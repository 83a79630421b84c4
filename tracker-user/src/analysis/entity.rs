//! The entity table: which company owns a name and which service (app or SDK) it belongs to,
//! from tracker's data file (`data/entities.toml`) and the user's overrides.
//!
//! A name matches an entry's domain when it is that domain or a subdomain of it at a label
//! boundary, and the most specific domain wins: the lookup walks the name's suffixes from the
//! whole name down, one label at a time, so it costs one hash lookup per label.

use std::{
    collections::{HashMap, HashSet},
    fmt,
};

use serde::Deserialize;

/// The table tracker ships, compiled in so a user needs no file to get names of companies.
pub const BUILTIN: &str = include_str!("../../data/entities.toml");

/// What kind of business a company is, as the reports group them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Platform,
    Cdn,
    Cloud,
    Advertising,
    Analytics,
    Social,
    Streaming,
    Messaging,
    Other,
}

impl Category {
    /// Stable lower-case name, for storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::Cdn => "cdn",
            Self::Cloud => "cloud",
            Self::Advertising => "advertising",
            Self::Analytics => "analytics",
            Self::Social => "social",
            Self::Streaming => "streaming",
            Self::Messaging => "messaging",
            Self::Other => "other",
        }
    }

    /// Companies of these categories serve other companies' names (a CNAME into them), and
    /// are reported as "served by" rather than as the owner.
    pub fn serves_others(self) -> bool {
        matches!(self, Self::Cdn | Self::Cloud)
    }
}

/// A company and the domains it owns or operates.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Company {
    pub name: String,
    pub category: Category,
    pub domains: Vec<String>,
}

/// A service (an app, a site, an SDK) and the domains it uses; `company` is its owner's name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub company: String,
    pub domains: Vec<String>,
}

/// The file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    company: Vec<Company>,
    #[serde(default)]
    service: Vec<Service>,
}

/// Why an entity file was refused. Nothing of a refused file is used.
#[derive(Debug)]
pub enum EntityError {
    /// Not TOML of the table's shape (the message names the line).
    Syntax(String),
    /// A domain that is not a lower-case DNS name of at least two labels.
    BadDomain { entry: String, domain: String },
    /// One domain in two entries of one kind: which one owns it would be a guess.
    Claimed { domain: String, first: String, second: String },
    /// A service whose company is in no company entry.
    UnknownCompany { service: String, company: String },
    /// Two entries of one kind with one name in the same file.
    DuplicateName(String),
}

impl fmt::Display for EntityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(e) => write!(f, "not an entity table: {e}"),
            Self::BadDomain { entry, domain } => {
                write!(f, "{entry}: {domain:?} is not a domain (lower case, labels joined by dots, no dot at the ends)")
            }
            Self::Claimed { domain, first, second } => write!(f, "{domain} is listed by both {first} and {second}"),
            Self::UnknownCompany { service, company } => {
                write!(f, "service {service}: no company entry is named {company:?}")
            }
            Self::DuplicateName(name) => write!(f, "two entries are named {name}"),
        }
    }
}

impl std::error::Error for EntityError {}

/// What a name matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched<'a, T> {
    pub entry: &'a T,
    /// The entry's domain the name fell under.
    pub domain: &'a str,
}

/// Companies and services with their domains indexed for lookup.
#[derive(Clone, Debug)]
pub struct EntityTable {
    companies: Vec<Company>,
    services: Vec<Service>,
    company_by_domain: HashMap<String, usize>,
    service_by_domain: HashMap<String, usize>,
}

impl EntityTable {
    /// The table tracker ships.
    pub fn builtin() -> Self {
        // The shipped file is checked by a unit test; failing here would be a build defect.
        Self::parse(BUILTIN).unwrap_or_else(|e| panic!("tracker's own entity table is invalid: {e}"))
    }

    /// A table from one file's text.
    pub fn parse(text: &str) -> Result<Self, EntityError> {
        let file = read(text)?;
        Self::build(file.company, file.service)
    }

    /// This table with `text`'s entries added; an entry named like one of this table's replaces
    /// it whole (its domains too), and a domain an added entry lists is taken from whichever
    /// base entry of its kind had it.
    pub fn with_overrides(&self, text: &str) -> Result<Self, EntityError> {
        let extra = read(text)?;
        Self::build(overlay(&self.companies, extra.company), overlay(&self.services, extra.service))
    }

    fn build(companies: Vec<Company>, services: Vec<Service>) -> Result<Self, EntityError> {
        let company_by_domain = index(&companies)?;
        let service_by_domain = index(&services)?;
        for s in &services {
            if !companies.iter().any(|c| c.name == s.company) {
                return Err(EntityError::UnknownCompany { service: s.name.clone(), company: s.company.clone() });
            }
        }
        Ok(Self { companies, services, company_by_domain, service_by_domain })
    }

    pub fn companies(&self) -> &[Company] {
        &self.companies
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The company that owns `name` (canonical form: lower case, no trailing dot). A service's
    /// domain that no company lists still names the service's company.
    pub fn company_of<'a>(&'a self, name: &str) -> Option<Matched<'a, Company>> {
        if let Some((i, domain)) = most_specific(&self.company_by_domain, name) {
            return Some(Matched { entry: &self.companies[i], domain });
        }
        let service = self.service_of(name)?;
        let company = self.companies.iter().find(|c| c.name == service.entry.company)?;
        Some(Matched { entry: company, domain: service.domain })
    }

    /// The service `name` belongs to.
    pub fn service_of<'a>(&'a self, name: &str) -> Option<Matched<'a, Service>> {
        most_specific(&self.service_by_domain, name).map(|(i, domain)| Matched { entry: &self.services[i], domain })
    }
}

fn read(text: &str) -> Result<File, EntityError> {
    toml::from_str(text).map_err(|e| EntityError::Syntax(e.to_string()))
}

/// What companies and services have alike: a name and the domains it is matched by.
trait Entry: Clone {
    fn name(&self) -> &str;
    fn domains(&self) -> &[String];
    fn domains_mut(&mut self) -> &mut Vec<String>;
}

impl Entry for Company {
    fn name(&self) -> &str {
        &self.name
    }
    fn domains(&self) -> &[String] {
        &self.domains
    }
    fn domains_mut(&mut self) -> &mut Vec<String> {
        &mut self.domains
    }
}

impl Entry for Service {
    fn name(&self) -> &str {
        &self.name
    }
    fn domains(&self) -> &[String] {
        &self.domains
    }
    fn domains_mut(&mut self) -> &mut Vec<String> {
        &mut self.domains
    }
}

/// `base` without the entries `extra` replaces (same name) and without the domains `extra`
/// lists, then `extra`.
fn overlay<T: Entry>(base: &[T], extra: Vec<T>) -> Vec<T> {
    let claimed: HashSet<&str> = extra.iter().flat_map(|e| e.domains().iter().map(String::as_str)).collect();
    let mut out: Vec<T> = base.iter().filter(|b| !extra.iter().any(|e| e.name() == b.name())).cloned().collect();
    for e in &mut out {
        e.domains_mut().retain(|d| !claimed.contains(d.as_str()));
    }
    out.extend(extra);
    out
}

/// Domain -> entry index, refusing bad domains, a domain in two entries and repeated names.
fn index<T: Entry>(entries: &[T]) -> Result<HashMap<String, usize>, EntityError> {
    let mut by_domain: HashMap<String, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let name = e.name();
        if entries[..i].iter().any(|earlier| earlier.name() == name) {
            return Err(EntityError::DuplicateName(name.to_owned()));
        }
        for d in e.domains() {
            if !is_domain(d) {
                return Err(EntityError::BadDomain { entry: name.to_owned(), domain: d.clone() });
            }
            match by_domain.get(d) {
                Some(&j) if j != i => {
                    return Err(EntityError::Claimed {
                        domain: d.clone(),
                        first: entries[j].name().to_owned(),
                        second: name.to_owned(),
                    });
                }
                _ => {
                    by_domain.insert(d.clone(), i);
                }
            }
        }
    }
    Ok(by_domain)
}

/// A lower-case name of at least two non-empty labels of letters, digits, `-` and `_`, that is
/// not itself one of the public suffix list's ICANN suffixes (`co.uk` belongs to nobody). A
/// private-section suffix is fine: `cloudfront.net` is one, and it is Amazon's.
fn is_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    let well_formed = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    let icann_suffix =
        psl::suffix(d.as_bytes()).is_some_and(|s| s.as_bytes() == d.as_bytes() && s.typ() == Some(psl::Type::Icann));
    well_formed && !icann_suffix
}

/// The entry of the longest suffix of `name`, at label boundaries, that `by_domain` holds.
fn most_specific<'a>(by_domain: &'a HashMap<String, usize>, name: &str) -> Option<(usize, &'a str)> {
    let mut rest = name;
    loop {
        if let Some((domain, &i)) = by_domain.get_key_value(rest) {
            return Some((i, domain.as_str()));
        }
        rest = rest.split_once('.')?.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn company(t: &EntityTable, name: &str) -> Option<String> {
        t.company_of(name).map(|m| m.entry.name.clone())
    }

    fn service(t: &EntityTable, name: &str) -> Option<String> {
        t.service_of(name).map(|m| m.entry.name.clone())
    }

    #[test]
    fn the_shipped_table_is_valid_and_names_the_story_s_companies() {
        let t = EntityTable::parse(BUILTIN).unwrap();
        for (name, owner) in [
            ("gateway.icloud.com", "Apple"),
            ("www.google.com", "Google"),
            ("api.twitter.com", "X (Twitter)"),
            ("e1234.a.akamaiedge.net", "Akamai"),
            ("s3.amazonaws.com", "Amazon"),
            ("sdk.iad-01.braze.com", "Braze"),
            ("sdk.appboy.com", "Braze"),
            ("nativesdks.mparticle.com", "mParticle"),
            ("graph.instagram.com", "Meta"),
        ] {
            assert_eq!(company(&t, name).as_deref(), Some(owner), "{name}");
        }
        assert!(t.companies().iter().any(|c| c.category == Category::Cdn && c.name == "Akamai"));
    }

    #[test]
    fn subdomains_match_at_label_boundaries_only() {
        let t = EntityTable::builtin();
        assert_eq!(company(&t, "apple.com").as_deref(), Some("Apple"));
        assert_eq!(company(&t, "a.b.c.apple.com").as_deref(), Some("Apple"));
        assert_eq!(company(&t, "evilapple.com"), None, "a suffix of the text is not a subdomain");
        assert_eq!(company(&t, "apple.com.evil.example"), None);
        assert_eq!(company(&t, "com"), None);
        assert_eq!(company(&t, "unknown.example"), None);
        assert_eq!(company(&t, ""), None);
    }

    #[test]
    fn the_most_specific_domain_wins() {
        let t = EntityTable::builtin();
        let m = t.service_of("firebaseinstallations.googleapis.com").unwrap();
        assert_eq!((m.entry.name.as_str(), m.domain), ("Firebase", "firebaseinstallations.googleapis.com"));
        assert_eq!(service(&t, "www.googleapis.com"), None, "googleapis.com alone is no service");
        assert_eq!(company(&t, "www.googleapis.com").as_deref(), Some("Google"));
        assert_eq!(service(&t, "rr3---sn-abc.googlevideo.com").as_deref(), Some("YouTube"));
        assert_eq!(service(&t, "www.apple.com"), None);
        assert_eq!(service(&t, "1-courier.push.apple.com").as_deref(), Some("Apple Push"));
    }

    #[test]
    fn co_uk_style_suffixes() {
        let t = EntityTable::parse(
            r#"
            [[company]]
            name = "Example UK"
            category = "other"
            domains = ["example.co.uk"]
            "#,
        )
        .unwrap();
        assert_eq!(company(&t, "www.example.co.uk").as_deref(), Some("Example UK"));
        assert_eq!(company(&t, "other.co.uk"), None, "the public suffix itself matches nothing");
        assert_eq!(company(&t, "co.uk"), None);
    }

    #[test]
    fn a_service_s_domain_names_its_company() {
        let t = EntityTable::parse(
            r#"
            [[company]]
            name = "Acme"
            category = "other"
            domains = ["acme.example"]
            [[service]]
            name = "Acme Chat"
            company = "Acme"
            domains = ["chat-cdn.example"]
            "#,
        )
        .unwrap();
        assert_eq!(company(&t, "x.chat-cdn.example").as_deref(), Some("Acme"));
    }

    #[test]
    fn overrides_add_and_replace_entries() {
        let base = EntityTable::builtin();
        let t = base
            .with_overrides(
                r#"
                [[company]]
                name = "Family NAS"
                category = "other"
                domains = ["nas.example"]
                [[company]]
                name = "Braze"
                category = "advertising"
                domains = ["braze.com"]
                "#,
            )
            .unwrap();
        assert_eq!(company(&t, "files.nas.example").as_deref(), Some("Family NAS"));
        let braze = t.company_of("sdk.braze.com").unwrap().entry;
        assert_eq!(braze.category, Category::Advertising);
        assert_eq!(braze.domains, ["braze.com"], "the override replaced Braze whole");
        // Taking a domain from another company is how a user corrects an owner.
        let t = base
            .with_overrides("[[company]]\nname = \"Mine\"\ncategory = \"other\"\ndomains = [\"gstatic.com\"]\n")
            .unwrap();
        assert_eq!(company(&t, "fonts.gstatic.com").as_deref(), Some("Mine"));
        assert_eq!(company(&t, "www.google.com").as_deref(), Some("Google"));
        assert_eq!(company(&base, "fonts.gstatic.com").as_deref(), Some("Google"), "the base is unchanged");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let err = |text: &str| EntityTable::parse(text).unwrap_err().to_string();
        assert!(err("[[company]]\nname = \"A\"\n").contains("not an entity table"), "missing fields");
        assert!(err("[[company]]\nname = \"A\"\ncategory = \"bank\"\ndomains = []\n").contains("not an entity table"));
        assert!(err("[[compnay]]\nname = \"A\"\n").contains("not an entity table"), "unknown table");
        let bad = err("[[company]]\nname = \"A\"\ncategory = \"other\"\ndomains = [\"Apple.com\"]\n");
        assert!(bad.contains("\"Apple.com\" is not a domain"), "{bad}");
        for suffix in ["com", "co.uk"] {
            let bad = err(&format!("[[company]]\nname = \"A\"\ncategory = \"other\"\ndomains = [\"{suffix}\"]\n"));
            assert!(bad.contains("is not a domain"), "{bad}");
        }
        let two = "[[company]]\nname = \"A\"\ncategory = \"other\"\ndomains = [\"a.example\"]\n\
                   [[company]]\nname = \"B\"\ncategory = \"other\"\ndomains = [\"a.example\"]\n";
        assert_eq!(err(two), "a.example is listed by both A and B");
        let orphan = "[[service]]\nname = \"S\"\ncompany = \"Nobody\"\ndomains = [\"s.example\"]\n";
        assert_eq!(err(orphan), "service S: no company entry is named \"Nobody\"");
        let dup = "[[company]]\nname = \"A\"\ncategory = \"other\"\ndomains = [\"a.example\"]\n\
                   [[company]]\nname = \"A\"\ncategory = \"other\"\ndomains = [\"b.example\"]\n";
        assert_eq!(err(dup), "two entries are named A");
        // An override is checked the same way and leaves the base untouched.
        let base = EntityTable::builtin();
        assert!(base.with_overrides(orphan).is_err());
        assert_eq!(company(&base, "www.google.com").as_deref(), Some("Google"));
    }
}
