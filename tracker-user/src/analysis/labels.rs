//! A named flow's labels: its application protocol (and so whether it is encrypted), and the
//! company, site, service and CDN behind its name, as the reports group flows.

use std::sync::Arc;

use super::{
    addr::AddrClass,
    domain,
    entity::EntityTable,
    names::FlowName,
    protocol::{Classification, Encryption},
};

/// Who a flow's connections count for in the companies report. Local peers and flows without
/// a name are lines of their own, never merged into a company.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    /// A company of the entity table owns the name.
    Company,
    /// No entry knows the name: its registrable domain stands for the owner.
    Domain,
    /// A local peer (the VPN's subnets, private ranges, ...): no owner.
    Local,
    /// A public peer the flow has no name for.
    Unnamed,
}

impl OwnerKind {
    /// Every kind with its stable name, in one table.
    const NAMES: [(OwnerKind, &str); 4] =
        [(Self::Company, "company"), (Self::Domain, "domain"), (Self::Local, "local"), (Self::Unnamed, "unnamed")];

    /// Stable lower-case name, for storage and output.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(k, _)| *k == self).map_or("unnamed", |(_, n)| n)
    }

    /// The kind stored under `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }
}

/// What the reports group a flow by, decided when it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowLabels {
    pub app: Classification,
    pub owner_kind: OwnerKind,
    /// The company's name ([`OwnerKind::Company`]) or the registrable domain
    /// ([`OwnerKind::Domain`]); `None` for local and unnamed flows.
    pub owner: Option<String>,
    /// The entity table's company for the name.
    pub company: Option<String>,
    /// The name's registrable domain (`www.example.co.uk` -> `example.co.uk`).
    pub site: Option<String>,
    /// The app or SDK the name belongs to.
    pub service: Option<String>,
    /// A CDN or cloud company the name's CNAME chain led to, when it is not the owner: the
    /// flow counts for its owner, and "served by" answers who carried it.
    pub served_by: Option<String>,
}

impl FlowLabels {
    /// Labels of a flow that has no name: its protocol only.
    pub fn unnamed(app: Classification) -> Self {
        Self {
            app,
            owner_kind: OwnerKind::Unnamed,
            owner: None,
            company: None,
            site: None,
            service: None,
            served_by: None,
        }
    }

    pub fn encryption(&self) -> Encryption {
        self.app.protocol.encryption()
    }
}

/// Labels flows from the entity table in use.
#[derive(Clone, Debug)]
pub struct Labeler {
    entities: Arc<EntityTable>,
}

impl Default for Labeler {
    fn default() -> Self {
        Self::new(Arc::new(EntityTable::builtin()))
    }
}

impl Labeler {
    pub fn new(entities: Arc<EntityTable>) -> Self {
        Self { entities }
    }

    pub fn entities(&self) -> &EntityTable {
        &self.entities
    }

    /// The labels of a flow with `name` to a peer of `class`, classified as `app`.
    pub fn label(&self, name: &FlowName, class: AddrClass, app: Classification) -> FlowLabels {
        if class.is_local() {
            return FlowLabels { owner_kind: OwnerKind::Local, ..FlowLabels::unnamed(app) };
        }
        let Some(name_text) = name.name.as_deref() else { return FlowLabels::unnamed(app) };
        let company = self.entities.company_of(name_text).map(|m| m.entry);
        let site = domain::registrable(name_text);
        let service = self.entities.service_of(name_text).map(|m| m.entry.name.clone());
        let served_by = name
            .cname
            .as_deref()
            .and_then(|c| self.entities.company_of(c))
            .map(|m| m.entry)
            .filter(|cdn| cdn.category.serves_others() && company.is_none_or(|owner| owner.name != cdn.name))
            .map(|cdn| cdn.name.clone());
        let (owner_kind, owner) = match (company, &site) {
            (Some(c), _) => (OwnerKind::Company, c.name.clone()),
            (None, Some(site)) => (OwnerKind::Domain, site.clone()),
            // A name with no registrable domain (`localhost`, a bare label) stands for itself.
            (None, None) => (OwnerKind::Domain, name_text.to_owned()),
        };
        FlowLabels {
            app,
            owner_kind,
            owner: Some(owner),
            company: company.map(|c| c.name.clone()),
            site,
            service,
            served_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{
        names::NameSource,
        protocol::{AppProtocol, Decided},
    };

    const TLS: Classification = Classification { protocol: AppProtocol::Tls, decided: Decided::Payload };

    fn dns(name: &str, cname: Option<&str>) -> FlowName {
        FlowName { name: Some(name.into()), source: Some(NameSource::Dns), cname: cname.map(Into::into) }
    }

    #[test]
    fn a_company_s_name_through_a_cdn_counts_for_the_company_served_by_the_cdn() {
        let l = Labeler::default();
        let f = l.label(&dns("images.apple.com", Some("e1234.a.akamaiedge.net")), AddrClass::Public, TLS);
        assert_eq!((f.owner_kind, f.owner.as_deref()), (OwnerKind::Company, Some("Apple")));
        assert_eq!(f.company.as_deref(), Some("Apple"));
        assert_eq!(f.site.as_deref(), Some("apple.com"));
        assert_eq!(f.served_by.as_deref(), Some("Akamai"));
        assert_eq!(f.encryption(), Encryption::Encrypted);
        // A CDN's own name is the CDN's, served by nobody else.
        let f = l.label(&dns("e1234.a.akamaiedge.net", None), AddrClass::Public, TLS);
        assert_eq!((f.owner.as_deref(), f.served_by), (Some("Akamai"), None));
    }

    #[test]
    fn unknown_names_fall_back_to_their_registrable_domain() {
        let l = Labeler::default();
        let f = l.label(&dns("a.b.unknown-shop.co.uk", None), AddrClass::Public, TLS);
        assert_eq!(
            (f.owner_kind, f.owner.as_deref(), f.company),
            (OwnerKind::Domain, Some("unknown-shop.co.uk"), None)
        );
        let f = l.label(&dns("evilapple.com", None), AddrClass::Public, TLS);
        assert_eq!((f.owner_kind, f.owner.as_deref()), (OwnerKind::Domain, Some("evilapple.com")));
    }

    #[test]
    fn local_and_unnamed_peers_are_lines_of_their_own() {
        let l = Labeler::default();
        let f = l.label(&dns("www.apple.com", None), AddrClass::Private, TLS);
        assert_eq!((f.owner_kind, f.owner, f.company), (OwnerKind::Local, None, None), "local whatever DNS said");
        let f = l.label(&FlowName::default(), AddrClass::Public, TLS);
        assert_eq!((f.owner_kind, f.owner), (OwnerKind::Unnamed, None));
        for k in [OwnerKind::Company, OwnerKind::Domain, OwnerKind::Local, OwnerKind::Unnamed] {
            assert_eq!(OwnerKind::from_name(k.as_str()), Some(k));
        }
    }

    #[test]
    fn services_come_from_the_most_specific_entry() {
        let l = Labeler::default();
        let f = l.label(&dns("firebaseinstallations.googleapis.com", None), AddrClass::Public, TLS);
        assert_eq!((f.company.as_deref(), f.service.as_deref()), (Some("Google"), Some("Firebase")));
    }
}
