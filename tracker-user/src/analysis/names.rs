//! The per-client naming table: which name each client's own DNS answers gave an address.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Where a flow's name came from, strongest evidence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameSource {
    /// A DNS answer the client itself received.
    Dns,
    /// The server name in the flow's TLS ClientHello.
    Sni,
    /// The Host header of the flow's plain HTTP request.
    Http,
    /// A local address, named from configuration rather than traffic.
    Local,
}

impl NameSource {
    /// Stable lower-case name, for storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Sni => "sni",
            Self::Http => "http",
            Self::Local => "local",
        }
    }
}

impl std::fmt::Display for NameSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to [`NameTable::lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameHit {
    /// The name the client asked for (the question name), e.g. `www.example.com`.
    pub name: String,
    /// The last CNAME target on the way to the address, e.g. `example.cdn.net`, if any.
    pub cname: Option<String>,
    pub source: NameSource,
}

/// An answer a device holds: `device` was told `name` (through the CNAME chain ending in
/// `cname`) is at `address`, for `ttl_left` seconds more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldAnswer {
    pub device: IpAddr,
    pub address: IpAddr,
    pub name: String,
    pub cname: Option<String>,
    pub ttl_left: u32,
}

/// One remembered answer: `client` was told that `name` (via `cname`) lives at some address.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    cname: Option<String>,
    answered_at: SystemTime,
    /// TTL plus the table's grace: how long after `answered_at` the entry may still name flows.
    valid_for: Duration,
    /// Insertion counter: breaks ties between answers with the same timestamp (latest wins) and
    /// identifies the entry in the eviction index.
    seq: u64,
}

impl Entry {
    fn valid_at(&self, at: SystemTime) -> bool {
        // `duration_since` fails when `at` is before the answer: an answer the client had not yet
        // received cannot explain a flow.
        at.duration_since(self.answered_at).is_ok_and(|age| age <= self.valid_for)
    }
}

#[derive(Debug, Default)]
struct ClientNames {
    /// Server address -> every live answer that contained it. One address serves many names
    /// (CDNs, shared hosting), so this is a list; it stays short because entries for the same
    /// name are replaced, not added.
    by_addr: HashMap<IpAddr, Vec<Entry>>,
    /// (answered_at, seq) -> (address, name): the eviction order, oldest answer first.
    by_age: BTreeMap<(SystemTime, u64), (IpAddr, String)>,
}

impl ClientNames {
    fn len(&self) -> usize {
        self.by_age.len()
    }

    fn remove(&mut self, addr: IpAddr, seq: u64) {
        if let Some(entries) = self.by_addr.get_mut(&addr) {
            entries.retain(|e| e.seq != seq);
            if entries.is_empty() {
                self.by_addr.remove(&addr);
            }
        }
    }
}

/// Names server addresses per client from the DNS answers that client received.
///
/// Keyed by client first because two phones may get different answers for the same name (geo
/// DNS, different resolvers), and a flow must only be named from what its own client was told.
/// Memory is bounded per client (oldest answers evicted first) and [`NameTable::prune`] drops
/// expired answers; the number of clients is bounded by the VPN's peer list.
#[derive(Debug)]
pub struct NameTable {
    grace: Duration,
    max_entries_per_client: usize,
    clients: HashMap<IpAddr, ClientNames>,
    next_seq: u64,
}

impl NameTable {
    /// `grace` extends every answer's TTL: clients keep using an address after its TTL (open
    /// connections, app-level caches, TTL 0 answers used right away), so a flow that starts a
    /// little after expiry is still named. `max_entries_per_client` bounds memory per client (at
    /// least 1); one entry is one (address, name) pair.
    pub fn new(grace: Duration, max_entries_per_client: usize) -> Self {
        Self { grace, max_entries_per_client: max_entries_per_client.max(1), clients: HashMap::new(), next_seq: 0 }
    }

    /// Remembers that `client` received, at `at`, an answer saying the question `name` (through
    /// the CNAME chain ending in `cname`) is at `addr`, valid for `ttl` seconds.
    ///
    /// A repeated answer for the same (client, address, name) replaces the old entry, so its
    /// time, TTL and CNAME are refreshed. Addresses are canonicalised (`::ffff:a.b.c.d` is
    /// `a.b.c.d`) so a dual-stack socket's view matches an A record. Names should already be in
    /// the canonical form from the DNS parser; they are lower-cased and lose a trailing dot here
    /// anyway, so that callers cannot create near-duplicates.
    pub fn record_answer(
        &mut self,
        client: IpAddr,
        addr: IpAddr,
        name: &str,
        cname: Option<&str>,
        ttl: u32,
        at: SystemTime,
    ) {
        let client = client.to_canonical();
        let addr = addr.to_canonical();
        let name = canonical(name);
        let cname = cname.map(canonical);
        let seq = self.next_seq;
        self.next_seq += 1;
        let valid_for = Duration::from_secs(u64::from(ttl)).saturating_add(self.grace);
        let max = self.max_entries_per_client;
        let names = self.clients.entry(client).or_default();

        let entries = names.by_addr.entry(addr).or_default();
        if let Some(old) = entries.iter_mut().find(|e| e.name == name) {
            names.by_age.remove(&(old.answered_at, old.seq));
            *old = Entry { name: name.clone(), cname, answered_at: at, valid_for, seq };
        } else {
            entries.push(Entry { name: name.clone(), cname, answered_at: at, valid_for, seq });
        }
        names.by_age.insert((at, seq), (addr, name));

        while names.len() > max {
            let Some(((_, old_seq), (old_addr, _))) = names.by_age.pop_first() else {
                break;
            };
            names.remove(old_addr, old_seq);
        }
    }

    /// The name for a flow from `client` to `addr` at time `at`: the client's most recent answer
    /// containing `addr` that was received at or before `at` and is still within TTL + grace.
    /// Never consults another client's answers.
    pub fn lookup(&self, client: IpAddr, addr: IpAddr, at: SystemTime) -> Option<NameHit> {
        self.candidates(client, addr, at).into_iter().next()
    }

    /// Every name `client`'s valid answers (as in [`NameTable::lookup`]) gave `addr`, most recent
    /// first: when one address serves several names, the flow's TLS server name or HTTP Host
    /// can pick the one the client used.
    pub fn candidates(&self, client: IpAddr, addr: IpAddr, at: SystemTime) -> Vec<NameHit> {
        let Some(entries) = self.clients.get(&client.to_canonical()).and_then(|c| c.by_addr.get(&addr.to_canonical()))
        else {
            return Vec::new();
        };
        let mut valid: Vec<&Entry> = entries.iter().filter(|e| e.valid_at(at)).collect();
        valid.sort_by_key(|e| std::cmp::Reverse((e.answered_at, e.seq)));
        valid
            .into_iter()
            .map(|e| NameHit { name: e.name.clone(), cname: e.cname.clone(), source: NameSource::Dns })
            .collect()
    }

    /// Drops every answer that can no longer name a flow at `at` or later (past TTL + grace),
    /// and clients left with none. Returns how many entries were removed. Linear in the table
    /// size; meant to run periodically, not per packet.
    pub fn prune(&mut self, at: SystemTime) -> usize {
        let mut removed = 0;
        self.clients.retain(|_, names| {
            let expired: Vec<((SystemTime, u64), IpAddr)> = names
                .by_addr
                .iter()
                .flat_map(|(addr, entries)| entries.iter().map(move |e| (addr, e)))
                .filter(|(_, e)| at.duration_since(e.answered_at).is_ok_and(|age| age > e.valid_for))
                .map(|(addr, e)| ((e.answered_at, e.seq), *addr))
                .collect();
            for (key, addr) in expired {
                names.by_age.remove(&key);
                names.remove(addr, key.1);
                removed += 1;
            }
            names.len() > 0
        });
        removed
    }

    /// Every answer still valid at `at`, with the part of its TTL left (the grace not counted).
    pub fn valid_answers(&self, at: SystemTime) -> Vec<HeldAnswer> {
        let mut out = Vec::new();
        for (client, names) in &self.clients {
            for (addr, entries) in &names.by_addr {
                for e in entries.iter().filter(|e| e.valid_at(at)) {
                    let age = at.duration_since(e.answered_at).unwrap_or_default();
                    let ttl_left = e.valid_for.saturating_sub(self.grace).saturating_sub(age);
                    out.push(HeldAnswer {
                        device: *client,
                        address: *addr,
                        name: e.name.clone(),
                        cname: e.cname.clone(),
                        ttl_left: u32::try_from(ttl_left.as_secs()).unwrap_or(u32::MAX),
                    });
                }
            }
        }
        out
    }

    /// Number of (client, address, name) entries held.
    pub fn len(&self) -> usize {
        self.clients.values().map(ClientNames::len).sum()
    }

    /// True when no answer is held.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// A flow's name as stored and shown: what the client called the server, and on what evidence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowName {
    pub name: Option<String>,
    pub source: Option<NameSource>,
    /// The last CNAME target behind a [`NameSource::Dns`] name.
    pub cname: Option<String>,
}

/// What is known about one flow, for [`choose`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The client's DNS answers for the remote address, most recent first
    /// ([`NameTable::candidates`]).
    pub dns: Vec<NameHit>,
    /// The server name of the flow's TLS ClientHello.
    pub sni: Option<String>,
    /// The Host header of the flow's first HTTP request.
    pub http: Option<String>,
}

impl Evidence {
    /// Nothing known: no DNS answer, no server name, no Host.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.sni.is_none() && self.http.is_none()
    }
}

/// Decides a flow's name. A local peer is `local` and never named, whatever DNS said (a
/// public name pointing at a private address must not make a LAN host look foreign). Otherwise
/// the client's own words for this very connection (TLS server name, else HTTP Host) pick among
/// the DNS names its answers gave the address; with no DNS name matching them they win, because
/// the client told the server which name it meant (a cached lookup, DoH, HTTP/2 coalescing);
/// without them the most recent DNS answer names the flow.
pub fn choose(local: bool, evidence: &Evidence) -> FlowName {
    if local {
        return FlowName { name: None, source: Some(NameSource::Local), cname: None };
    }
    let Evidence { dns, sni, http } = evidence;
    let spoken = sni.as_deref().map(|n| (n, NameSource::Sni)).or(http.as_deref().map(|n| (n, NameSource::Http)));
    let from_dns = |hit: &NameHit| FlowName {
        name: Some(hit.name.clone()),
        source: Some(NameSource::Dns),
        cname: hit.cname.clone(),
    };
    match (spoken, dns.first()) {
        (Some((said, _)), Some(_)) => {
            let said = canonical(said);
            match dns.iter().find(|h| h.name == said || h.cname.as_deref() == Some(&said)) {
                Some(hit) => from_dns(hit),
                None => FlowName { name: Some(said), source: spoken.map(|(_, s)| s), cname: None },
            }
        }
        (None, Some(latest)) => from_dns(latest),
        (Some((said, source)), None) => FlowName { name: Some(canonical(said)), source: Some(source), cname: None },
        (None, None) => FlowName::default(),
    }
}

fn canonical(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn name_at(table: &NameTable, client: &str, addr: &str, at: u64) -> Option<String> {
        table.lookup(ip(client), ip(addr), t(at)).map(|h| h.name)
    }

    #[test]
    fn source_names() {
        assert_eq!(NameSource::Dns.as_str(), "dns");
        assert_eq!(NameSource::Sni.as_str(), "sni");
        assert_eq!(NameSource::Http.as_str(), "http");
        assert_eq!(NameSource::Local.as_str(), "local");
        assert_eq!(NameSource::Sni.to_string(), "sni");
    }

    #[test]
    fn lookup_returns_the_answer_with_cname() {
        let mut table = NameTable::new(GRACE, 100);
        table.record_answer(
            ip("10.8.0.2"),
            ip("93.184.216.34"),
            "www.example.com",
            Some("edge.cdn.example.net"),
            300,
            t(0),
        );
        let hit = table.lookup(ip("10.8.0.2"), ip("93.184.216.34"), t(10)).expect("hit");
        assert_eq!(hit.name, "www.example.com");
        assert_eq!(hit.cname.as_deref(), Some("edge.cdn.example.net"));
        assert_eq!(hit.source, NameSource::Dns);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn ttl_plus_grace_bounds_validity() {
        let mut table = NameTable::new(GRACE, 100);
        table.record_answer(ip("10.8.0.2"), ip("1.2.3.4"), "a.example", None, 300, t(100));
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 100).as_deref(), Some("a.example"));
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 460).as_deref(), Some("a.example"));
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 461), None);
        // A flow before the answer arrived cannot have used it.
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 99), None);
    }

    #[test]
    fn ttl_zero_is_valid_for_the_grace_period() {
        let mut table = NameTable::new(GRACE, 100);
        table.record_answer(ip("10.8.0.2"), ip("1.2.3.4"), "zero.example", None, 0, t(0));
        assert!(name_at(&table, "10.8.0.2", "1.2.3.4", 60).is_some());
        assert!(name_at(&table, "10.8.0.2", "1.2.3.4", 61).is_none());
    }

    #[test]
    fn most_recent_valid_answer_wins() {
        let mut table = NameTable::new(GRACE, 100);
        let (c, a) = (ip("10.8.0.2"), ip("1.2.3.4"));
        table.record_answer(c, a, "long.example", None, 3600, t(0));
        table.record_answer(c, a, "short.example", None, 10, t(100));
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 50).as_deref(), Some("long.example"));
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 120).as_deref(), Some("short.example"));
        // Once the newer answer expires, the older, still valid one names the flow again.
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 171).as_deref(), Some("long.example"));
    }

    #[test]
    fn same_timestamp_latest_recorded_wins() {
        let mut table = NameTable::new(GRACE, 100);
        let (c, a) = (ip("10.8.0.2"), ip("1.2.3.4"));
        table.record_answer(c, a, "first.example", None, 60, t(0));
        table.record_answer(c, a, "second.example", None, 60, t(0));
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 1).as_deref(), Some("second.example"));
    }

    #[test]
    fn repeated_answer_refreshes_instead_of_duplicating() {
        let mut table = NameTable::new(GRACE, 100);
        let (c, a) = (ip("10.8.0.2"), ip("1.2.3.4"));
        table.record_answer(c, a, "a.example", None, 10, t(0));
        table.record_answer(c, a, "other.example", None, 10, t(5));
        table.record_answer(c, a, "A.Example.", Some("new.cdn"), 10, t(20));
        assert_eq!(table.len(), 2);
        let hit = table.lookup(c, a, t(21)).expect("hit");
        assert_eq!(hit.name, "a.example");
        assert_eq!(hit.cname.as_deref(), Some("new.cdn"));
        // Valid until 20 + 10 + 60 now, not 0 + 10 + 60.
        assert!(table.lookup(c, a, t(90)).is_some());
    }

    #[test]
    fn clients_never_see_each_others_answers() {
        let mut table = NameTable::new(GRACE, 100);
        let a = ip("1.2.3.4");
        table.record_answer(ip("10.8.0.2"), a, "phone.example", None, 300, t(0));
        table.record_answer(ip("10.8.0.3"), a, "laptop.example", None, 300, t(10));
        assert_eq!(name_at(&table, "10.8.0.2", "1.2.3.4", 20).as_deref(), Some("phone.example"));
        assert_eq!(name_at(&table, "10.8.0.3", "1.2.3.4", 20).as_deref(), Some("laptop.example"));
        assert_eq!(name_at(&table, "10.8.0.4", "1.2.3.4", 20), None);
    }

    #[test]
    fn one_answer_many_addresses_and_one_address_many_names() {
        let mut table = NameTable::new(GRACE, 100);
        let c = ip("10.8.0.2");
        for addr in ["1.1.1.1", "1.1.1.2", "2001:db8::1"] {
            table.record_answer(c, ip(addr), "multi.example", None, 300, t(0));
        }
        table.record_answer(c, ip("1.1.1.1"), "shared.example", None, 300, t(1));
        assert_eq!(name_at(&table, "10.8.0.2", "1.1.1.2", 5).as_deref(), Some("multi.example"));
        assert_eq!(name_at(&table, "10.8.0.2", "2001:db8::1", 5).as_deref(), Some("multi.example"));
        assert_eq!(name_at(&table, "10.8.0.2", "1.1.1.1", 5).as_deref(), Some("shared.example"));
        assert_eq!(table.len(), 4);
    }

    fn hit(name: &str, cname: Option<&str>) -> NameHit {
        NameHit { name: name.into(), cname: cname.map(Into::into), source: NameSource::Dns }
    }

    #[test]
    fn candidates_are_most_recent_first_and_only_valid_ones() {
        let mut table = NameTable::new(GRACE, 100);
        let (c, a) = (ip("10.8.0.2"), ip("1.2.3.4"));
        table.record_answer(c, a, "old.example", None, 10, t(0));
        table.record_answer(c, a, "a.example", None, 300, t(100));
        table.record_answer(c, a, "b.example", Some("cdn.example"), 300, t(200));
        let names: Vec<String> = table.candidates(c, a, t(201)).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["b.example", "a.example"]);
        assert!(table.candidates(c, a, t(50)).iter().all(|h| h.name == "old.example"));
        assert!(table.candidates(ip("10.8.0.3"), a, t(201)).is_empty());
    }

    #[test]
    fn choose_local_wins_over_any_evidence() {
        let ev = Evidence { dns: vec![hit("bangkok.example", None)], sni: Some("x.example".into()), http: None };
        let n = choose(true, &ev);
        assert_eq!(n, FlowName { name: None, source: Some(NameSource::Local), cname: None });
    }

    #[test]
    fn choose_picks_the_dns_name_the_client_spoke() {
        let ev = Evidence {
            dns: vec![hit("b.example", None), hit("a.example", Some("edge.cdn.example"))],
            sni: Some("A.Example.".into()),
            http: None,
        };
        let n = choose(false, &ev);
        assert_eq!(n.name.as_deref(), Some("a.example"));
        assert_eq!(n.source, Some(NameSource::Dns));
        assert_eq!(n.cname.as_deref(), Some("edge.cdn.example"));
        // The Host header does the same for plain HTTP, and matches CNAME targets too.
        let ev = Evidence { sni: None, http: Some("edge.cdn.example".into()), ..ev };
        assert_eq!(choose(false, &ev).name.as_deref(), Some("a.example"));
    }

    #[test]
    fn choose_without_spoken_name_takes_the_latest_answer() {
        let ev = Evidence { dns: vec![hit("b.example", None), hit("a.example", None)], ..Default::default() };
        assert_eq!(choose(false, &ev).name.as_deref(), Some("b.example"));
    }

    #[test]
    fn choose_spoken_name_outside_dns_wins_and_says_so() {
        let ev = Evidence { dns: vec![hit("a.example", None)], sni: None, http: Some("other.example".into()) };
        let n = choose(false, &ev);
        assert_eq!(n, FlowName { name: Some("other.example".into()), source: Some(NameSource::Http), cname: None });
        let ev = Evidence { dns: vec![], sni: Some("tls.example".into()), http: Some("h.example".into()) };
        assert_eq!(choose(false, &ev).source, Some(NameSource::Sni));
        assert_eq!(choose(false, &Evidence::default()), FlowName::default());
    }

    #[test]
    fn mapped_addresses_are_canonicalised() {
        let mut table = NameTable::new(GRACE, 100);
        table.record_answer(ip("10.8.0.2"), ip("1.2.3.4"), "v4.example", None, 300, t(0));
        assert_eq!(name_at(&table, "::ffff:10.8.0.2", "::ffff:1.2.3.4", 1).as_deref(), Some("v4.example"));
    }

    #[test]
    fn eviction_drops_the_oldest_answers_first() {
        let mut table = NameTable::new(GRACE, 3);
        let c = ip("10.8.0.2");
        for i in 0..5u8 {
            let addr = IpAddr::from([192, 0, 2, i]);
            table.record_answer(c, addr, &format!("n{i}.example"), None, 3600, t(u64::from(i)));
        }
        assert_eq!(table.len(), 3);
        assert_eq!(name_at(&table, "10.8.0.2", "192.0.2.0", 10), None);
        assert_eq!(name_at(&table, "10.8.0.2", "192.0.2.1", 10), None);
        assert_eq!(name_at(&table, "10.8.0.2", "192.0.2.4", 10).as_deref(), Some("n4.example"));
        // The limit is per client: another client is unaffected.
        table.record_answer(ip("10.8.0.3"), ip("192.0.2.9"), "x.example", None, 60, t(0));
        assert_eq!(table.len(), 4);
        // Refreshing an old entry moves it to the young end.
        table.record_answer(c, ip("192.0.2.2"), "n2.example", None, 3600, t(20));
        table.record_answer(c, ip("192.0.2.5"), "n5.example", None, 3600, t(21));
        assert!(name_at(&table, "10.8.0.2", "192.0.2.2", 22).is_some());
        assert!(name_at(&table, "10.8.0.2", "192.0.2.3", 22).is_none());
    }

    #[test]
    fn zero_limit_still_keeps_the_latest_answer() {
        let mut table = NameTable::new(GRACE, 0);
        let c = ip("10.8.0.2");
        table.record_answer(c, ip("1.1.1.1"), "a.example", None, 60, t(0));
        table.record_answer(c, ip("1.1.1.2"), "b.example", None, 60, t(1));
        assert_eq!(table.len(), 1);
        assert_eq!(name_at(&table, "10.8.0.2", "1.1.1.2", 2).as_deref(), Some("b.example"));
    }

    #[test]
    fn prune_removes_expired_entries_and_empty_clients() {
        let mut table = NameTable::new(GRACE, 100);
        table.record_answer(ip("10.8.0.2"), ip("1.1.1.1"), "short.example", None, 10, t(0));
        table.record_answer(ip("10.8.0.2"), ip("1.1.1.2"), "long.example", None, 1000, t(0));
        table.record_answer(ip("10.8.0.3"), ip("1.1.1.1"), "other.example", None, 10, t(0));
        assert_eq!(table.prune(t(70)), 0);
        assert_eq!(table.prune(t(71)), 2);
        assert_eq!(table.len(), 1);
        assert!(!table.clients.contains_key(&ip("10.8.0.3")));
        assert_eq!(name_at(&table, "10.8.0.2", "1.1.1.2", 71).as_deref(), Some("long.example"));
        assert_eq!(table.prune(t(2000)), 1);
        assert!(table.is_empty());
        // Entries from the future (clock went back) are kept.
        table.record_answer(ip("10.8.0.2"), ip("1.1.1.1"), "later.example", None, 10, t(5000));
        assert_eq!(table.prune(t(4000)), 0);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn huge_ttl_does_not_overflow() {
        let mut table = NameTable::new(Duration::MAX, 10);
        table.record_answer(ip("10.8.0.2"), ip("1.1.1.1"), "max.example", None, u32::MAX, t(0));
        assert!(name_at(&table, "10.8.0.2", "1.1.1.1", 10_000_000_000).is_some());
        assert_eq!(table.prune(t(10_000_000_000)), 0);
    }
}
