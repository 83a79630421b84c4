//! Issue 10 end to end: who the devices talked to, by company, service, protocol and device
//! (`tracker report`, `tracker devices`, `tracker name-device`, the new `tracker flows` fields),
//! from real clients in the lab: two phones (two WireGuard peers), curl over HTTP and TLS to
//! real companies' names (the lab's [`zone::world`], documentation addresses), a CNAME chain
//! through Akamai, a name no company owns, ssh to dropbear, STUN to stund, and the DNS lookups
//! themselves through the on-host and the upstream resolver.
//!
//! Every connection is planned ([`Expect`]): the test knows its 5-tuple (curl's and dig's source
//! ports, the STUN client's fixed port, the one ssh connection per phone and server), which
//! company, site, service, protocol and encryption it is (from `tracker-user/data/entities.toml`,
//! see [`entity`]), and checks that `tracker flows` holds exactly these flows. Counts are then
//! exact from the plan; bytes are those of the matching `tracker flows` rows (bytes_up +
//! bytes_down), so every byte figure of the report must be the sum over its rows.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

mod expect;

use crate::common::{Checks, Pinned, Tracker, curl_pinned, ip_eq, next_port};
use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use tracker_tests::{
    Lab, Ns,
    cmd::run,
    lab::{self, PHONE_V4, PHONE_V6, PHONE2_V4, PHONE2_V6, Resolver},
    zone::{self, QType},
};

/// How long the daemon gets to store, name and classify every planned flow.
const WAIT: Duration = Duration::from_secs(30);
/// Percentages may be rounded for output; at most to one decimal.
const PCT_TOLERANCE: f64 = 0.05;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phone {
    One,
    Two,
}

impl Phone {
    fn ns(self) -> Ns {
        if self == Phone::One { Ns::Phone } else { Ns::Phone2 }
    }
    fn v4(self) -> Ipv4Addr {
        if self == Phone::One { PHONE_V4 } else { PHONE2_V4 }
    }
    fn v6(self) -> Ipv6Addr {
        if self == Phone::One { PHONE_V6 } else { PHONE2_V6 }
    }
    /// The name the test gives it with `tracker name-device`.
    fn device_name(self) -> &'static str {
        if self == Phone::One { "alice-phone" } else { "bob-tablet" }
    }
}

/// What tracker-user/data/entities.toml says of a name: (company, category, site, service).
/// A name no company has: no company, no category, its registrable domain.
fn entity(name: &str) -> (Option<&'static str>, Option<&'static str>, &'static str, Option<&'static str>) {
    match name {
        zone::WWW_APPLE => (Some("Apple"), Some("platform"), "apple.com", None),
        "images.apple.com" => (Some("Apple"), Some("platform"), "apple.com", None),
        zone::ICLOUD_GATEWAY => (Some("Apple"), Some("platform"), "icloud.com", Some("iCloud")),
        zone::WWW_GOOGLE => (Some("Google"), Some("platform"), "google.com", None),
        zone::TWITTER_API => (Some("X (Twitter)"), Some("social"), "twitter.com", Some("X (Twitter)")),
        zone::FACEBOOK_GRAPH => (Some("Meta"), Some("social"), "facebook.com", Some("Facebook")),
        zone::BRAZE_SDK => (Some("Braze"), Some("analytics"), "braze.com", Some("Braze")),
        zone::MPARTICLE_API => (Some("mParticle"), Some("analytics"), "mparticle.com", Some("mParticle")),
        zone::WWW_NETFLIX => (Some("Netflix"), Some("streaming"), "netflix.com", Some("Netflix")),
        zone::WWW_EXAMPLE => (None, None, "example.org", None),
        other => panic!("the report test knows no entity for {other}"),
    }
}

/// One planned flow and everything the report must say about it.
#[derive(Clone, Debug)]
struct Expect {
    phone: Phone,
    protocol: &'static str,
    client: IpAddr,
    /// None where the client picks its port and the flow is still unique (one ssh per server).
    client_port: Option<u16>,
    remote: IpAddr,
    remote_port: u16,
    /// The DNS name the flow must carry (None: local or unnamed).
    name: Option<&'static str>,
    /// The report's `companies` line: kind and name ("" for local and unnamed, whose line name
    /// the contract leaves open).
    kind: &'static str,
    line: &'static str,
    company: Option<&'static str>,
    category: Option<&'static str>,
    site: Option<&'static str>,
    service: Option<&'static str>,
    served_by: Option<&'static str>,
    app: &'static str,
    decided: &'static str,
    encrypted: &'static str,
}

impl Expect {
    fn matches(&self, f: &Value) -> bool {
        f["protocol"] == self.protocol
            && ip_eq(&f["client"], self.client)
            && ip_eq(&f["remote"], self.remote)
            && f["remote_port"] == self.remote_port
            && self.client_port.is_none_or(|p| f["client_port"] == p)
    }
}

fn plain(
    phone: Phone,
    protocol: &'static str,
    client: IpAddr,
    port: Option<u16>,
    remote: IpAddr,
    rport: u16,
) -> Expect {
    Expect {
        phone,
        protocol,
        client,
        client_port: port,
        remote,
        remote_port: rport,
        name: None,
        kind: "unnamed",
        line: "",
        company: None,
        category: None,
        site: None,
        service: None,
        served_by: None,
        app: "unknown",
        decided: "nothing",
        encrypted: "unknown",
    }
}

/// One DNS question from `phone`'s IPv4 address (a fresh source port, one try) to `resolver`'s
/// IPv4 address; it must be answered NOERROR. Its flow: DNS, local for the on-host resolver,
/// unnamed for the upstream one.
fn dig(lab: &Lab, phone: Phone, resolver: Resolver, name: &str, qtype: QType) -> Result<Expect> {
    let port = next_port();
    let server = resolver.v4();
    let mut c = lab.cmd(phone.ns(), "dig");
    c.args(["+tries=1", "+time=5", "+noall", "+comments", "-b", &format!("{}#{port}", phone.v4())]);
    let out = run(c.arg(format!("@{server}")).args([name, qtype.as_str()]))?;
    ensure!(out.contains("status: NOERROR"), "dig {name} {} @{server} from {phone:?}:\n{out}", qtype.as_str());
    let mut e = plain(phone, "udp", phone.v4().into(), Some(port), server.into(), 53);
    if resolver == Resolver::OnHost {
        (e.kind, e.line) = ("local", "");
    }
    (e.app, e.decided, e.encrypted) = ("dns", "payload", "unencrypted");
    Ok(e)
}

/// One curl from `phone` to `name` (its A, or with `v6` its AAAA address) over HTTP or TLS,
/// without DNS (`--resolve`): the phone's own earlier dig names it.
fn curl(lab: &Lab, phone: Phone, tls: bool, name: &'static str, v6: bool) -> Result<Expect> {
    let Pinned { conn, addr, port, url } = curl_pinned(lab, lab.cmd(phone.ns(), "curl"), tls, name, v6)?;
    let want_local: IpAddr = if v6 { phone.v6().into() } else { phone.v4().into() };
    ensure!(conn.local == want_local, "curl {url} from {phone:?} left from {}", conn.local);
    let mut e = plain(phone, "tcp", conn.local, Some(conn.local_port), addr, port);
    let (company, category, site, service) = entity(name);
    e.name = Some(name);
    (e.company, e.category, e.site, e.service) = (company, category, Some(site), service);
    (e.kind, e.line) = if let Some(c) = company { ("company", c) } else { ("domain", site) };
    e.served_by = (name == zone::AKAMAI_CHAIN[0]).then_some("Akamai");
    (e.app, e.decided, e.encrypted) =
        if tls { ("tls", "payload", "encrypted") } else { ("http", "payload", "unencrypted") };
    Ok(e)
}

fn ssh(lab: &Lab, phone: Phone, server: IpAddr, host_key: &str) -> Result<Expect> {
    let a = lab::ssh_attempt(lab, phone.ns(), server, host_key)?;
    ensure!(a.refused && a.server_version.starts_with("dropbear"), "ssh from {phone:?} to {server}:\n{}", a.log);
    let client: IpAddr = if server.is_ipv6() { phone.v6().into() } else { phone.v4().into() };
    let mut e = plain(phone, "tcp", client, None, server, lab::SSH_PORT);
    (e.app, e.decided, e.encrypted) = ("ssh", "payload", "encrypted");
    Ok(e)
}

/// stund speaks RFC 3489 (no magic cookie): only its port says STUN.
fn stun(lab: &Lab, phone: Phone, port: u16) -> Result<Expect> {
    let a = lab::stun_binding(lab, phone.ns(), port)?;
    ensure!(a.mapped.ip() == IpAddr::V4(phone.v4()), "STUN from {phone:?} mapped to {}", a.mapped);
    let mut e = plain(phone, "udp", phone.v4().into(), Some(port), lab::STUN_V4.into(), lab::STUN_PORT);
    (e.app, e.decided, e.encrypted) = ("stun", "port", "unencrypted");
    Ok(e)
}

/// The DNS questions a plan asked, as (phone, name).
type Asked = Vec<(Phone, &'static str)>;

/// The whole plan: the flows, and the DNS questions asked.
fn make_traffic(lab: &Lab, host_key: &str) -> Result<(Vec<Expect>, Asked)> {
    use Phone::{One, Two};
    use Resolver::{OnHost, Upstream};
    let questions: [(Phone, Resolver, &'static str, QType); 15] = [
        (One, OnHost, zone::WWW_APPLE, QType::A),
        (One, OnHost, zone::WWW_APPLE, QType::A),
        (One, OnHost, zone::AKAMAI_CHAIN[0], QType::A),
        (One, OnHost, zone::WWW_EXAMPLE, QType::A),
        (One, OnHost, zone::ICLOUD_GATEWAY, QType::A),
        (One, OnHost, zone::WWW_GOOGLE, QType::A),
        (One, OnHost, zone::WWW_GOOGLE, QType::Aaaa),
        (One, OnHost, zone::TWITTER_API, QType::A),
        (One, OnHost, zone::FACEBOOK_GRAPH, QType::Aaaa),
        (One, OnHost, zone::BRAZE_SDK, QType::A),
        (One, OnHost, zone::MPARTICLE_API, QType::A),
        (One, Upstream, zone::WWW_NETFLIX, QType::A),
        (Two, OnHost, zone::WWW_APPLE, QType::A),
        (Two, OnHost, zone::WWW_GOOGLE, QType::Aaaa),
        (Two, Upstream, zone::TWITTER_API, QType::A),
    ];
    let mut plan = Vec::new();
    for (phone, resolver, name, qtype) in questions {
        plan.push(dig(lab, phone, resolver, name, qtype).with_context(|| format!("asking {name} from {phone:?}"))?);
    }
    // (phone, TLS, name, IPv6)
    let requests: [(Phone, bool, &'static str, bool); 16] = [
        (One, false, zone::WWW_APPLE, false),
        (One, false, zone::WWW_APPLE, false),
        (One, true, zone::WWW_APPLE, false),
        (One, true, zone::ICLOUD_GATEWAY, false),
        (One, false, zone::AKAMAI_CHAIN[0], false),
        (One, true, zone::WWW_GOOGLE, false),
        (One, true, zone::WWW_GOOGLE, true),
        (One, true, zone::TWITTER_API, false),
        (One, true, zone::FACEBOOK_GRAPH, true),
        (One, true, zone::BRAZE_SDK, false),
        (One, true, zone::MPARTICLE_API, false),
        (One, false, zone::WWW_NETFLIX, false),
        (One, false, zone::WWW_EXAMPLE, false),
        (Two, true, zone::WWW_APPLE, false),
        (Two, false, zone::WWW_GOOGLE, true),
        (Two, true, zone::TWITTER_API, false),
    ];
    for (phone, tls, name, v6) in requests {
        plan.push(curl(lab, phone, tls, name, v6).with_context(|| format!("requesting {name} from {phone:?}"))?);
    }
    plan.push(ssh(lab, One, lab::SSH_V4.into(), host_key)?);
    plan.push(ssh(lab, Two, lab::SSH_V6.into(), host_key)?);
    plan.push(stun(lab, One, 47_101)?);
    plan.push(stun(lab, Two, 47_102)?);
    let asked = questions.iter().map(|q| (q.0, q.2)).collect();
    Ok((plan, asked))
}

/// Waits until every planned flow is stored, classified and (where planned) named, and no
/// other flow exists; returns the flows and, per plan entry, its row.
fn settled(t: &Tracker, plan: &[Expect]) -> Result<(Vec<Value>, Vec<Value>)> {
    let ready = |flows: &[Value]| {
        flows.len() == plan.len()
            && plan.iter().all(|e| {
                let rows: Vec<&Value> = flows.iter().filter(|f| e.matches(f)).collect();
                rows.len() == 1
                    && !rows[0]["app_protocol"].is_null()
                    && (e.name.is_none() || !rows[0]["name"].is_null())
            })
    };
    let ok = t.wait_for(WAIT, |t| t.try_flows().is_ok_and(|f| ready(&f)));
    let flows = t.try_flows()?;
    if !ok {
        let missing: Vec<&Expect> =
            plan.iter().filter(|e| flows.iter().filter(|f| e.matches(f)).count() != 1).collect();
        let extra: Vec<&Value> = flows.iter().filter(|f| !plan.iter().any(|e| e.matches(f))).collect();
        let undecided: Vec<&Value> = flows
            .iter()
            .filter(|f| {
                plan.iter()
                    .any(|e| e.matches(f) && (f["app_protocol"].is_null() || (e.name.is_some() && f["name"].is_null())))
            })
            .collect();
        anyhow::bail!(
            "after {WAIT:?}, {} flows for a plan of {}\nplanned flows not stored exactly once: {missing:#?}\n\
             flows nobody planned: {extra:#?}\nplanned flows still without app_protocol (or their name): {undecided:#?}\n{}",
            flows.len(),
            plan.len(),
            t.log_tail()
        );
    }
    let rows = plan.iter().map(|e| flows.iter().find(|f| e.matches(f)).cloned().unwrap()).collect();
    Ok((flows, rows))
}

fn bytes(f: &Value) -> u64 {
    f["bytes_up"].as_u64().unwrap_or(0) + f["bytes_down"].as_u64().unwrap_or(0)
}

/// The flows' new fields, each planned flow exactly.
fn check_flow_fields(c: &mut Checks, plan: &[Expect], rows: &[Value]) {
    for (e, f) in plan.iter().zip(rows) {
        let s = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(s.to_owned()));
        let want = [
            ("name", s(e.name)),
            ("company", s(e.company)),
            ("site", s(e.site)),
            ("service", s(e.service)),
            ("served_by", s(e.served_by)),
            ("app_protocol", s(Some(e.app))),
            ("app_decided", s(Some(e.decided))),
            ("encrypted", s(Some(e.encrypted))),
        ];
        for (field, want) in want {
            let got = &f[field];
            c.check(*got == want, format!("flow {e:?}: {field}: expected {want}, measured {got}"));
        }
    }
}

#[test]
fn report_by_company_service_protocol_and_device() -> Result<()> {
    let Some((_serial, mut lab, mut t)) = crate::common::lab_with_tracker("tr1")? else {
        return Ok(());
    };
    lab.add_second_phone().context("adding the second phone")?;
    let host_key = lab.start_ssh().context("starting the SSH server")?;
    lab.start_stun().context("starting the STUN server")?;
    t.start(&lab)?;
    let (plan, asked) = make_traffic(&lab, &host_key)?;
    let (flows, rows) = settled(&t, &plan)?;
    let planned: Vec<(Expect, u64)> = plan.iter().cloned().zip(rows.iter().map(bytes)).collect();

    let mut c = Checks::new();
    check_flow_fields(&mut c, &plan, &rows);
    let keys = [lab.phone_public_key(Ns::Phone)?, lab.phone_public_key(Ns::Phone2)?];
    expect::check_devices(&mut c, &t, &planned, &keys, false)?;
    // One device named by its public key, the other by a tunnel address.
    run(&mut t.cli(&["name-device", &keys[0], Phone::One.device_name()]))?;
    run(&mut t.cli(&["name-device", &PHONE2_V4.to_string(), Phone::Two.device_name()]))?;
    expect::check_devices(&mut c, &t, &planned, &keys, true)?;

    let report = t.try_json(&["report", "--since", "1h"])?;
    expect::check_report(&mut c, &report, &planned, &asked, None, &keys, "whole");
    expect::check_against_flows(&mut c, &report, &flows);
    let excluding = t.try_json(&["report", "--since", "1h", "--exclude", "Apple,Google"])?;
    expect::check_report(&mut c, &excluding, &planned, &asked, None, &keys, "--exclude Apple,Google");
    expect::check_excluding(&mut c, &excluding, &planned, &["Apple", "Google"]);
    let none = &report["companies_excluding"];
    c.check(none.is_null(), format!("companies_excluding without --exclude: expected null, measured {none}"));
    for (phone, given) in [
        (Phone::One, Phone::One.device_name().to_owned()),
        (Phone::Two, PHONE2_V4.to_string()),
        (Phone::Two, keys[1].clone()),
    ] {
        let r = t.try_json(&["report", "--since", "1h", "--client", &given])?;
        let what = format!("--client {given}");
        c.check(r["client"] == given.as_str(), format!("{what}: client: expected {given:?}, measured {}", r["client"]));
        expect::check_report(&mut c, &r, &planned, &asked, Some(phone), &keys, &what);
    }
    c.finish();
    t.stop()?;
    Ok(())
}
