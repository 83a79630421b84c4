//! End-to-end tests for naming (issue 3): the DNS log (`tracker dns`), query counts (`tracker
//! domains`) and flow names (`tracker flows`: `name`, `name_source`, `cname`, `remote_class`), with
//! the lab's real resolvers (unbound on the VPN host, and upstream through the tunnel), real
//! clients in the phone namespace (dig, curl through glibc, curl --resolve), the lab's TLS
//! server, and hostile DNS answers from a rogue resolver.
//!
//! Every expectation comes from the lab's zone module (`tracker_tests::zone`) and the test's own
//! requests (dig's source port, curl's reported connection), never from hard-coded results.
//! Root only; under CI=true they never skip. Run one at a time (they take the harness's serial
//! lock); `-- --nocapture` shows the naming accuracy the last test measures.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::common::{Conn, DigQuery, Tracker, curl_conn, dig, dns_entries_of, flow_of, ip_eq};
use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use tracker_tests::{
    Lab,
    hostile_dns::{self as hostile, Labels},
    lab::{ECHO_V4, ECHO_V6, HTTP_PORT, PHONE_V4, PHONE_V6, Resolver, SMALL_TXT, TLS_PORT},
    zone::{self, QType},
};

/// How long the daemon gets to put what the test did into SQLite (it sweeps every 300 ms).
const WAIT: Duration = Duration::from_secs(20);
/// Unanswered queries are logged once the daemon gives up waiting for a response (5 s).
const WAIT_UNANSWERED: Duration = Duration::from_secs(30);

fn qtype(s: &str) -> QType {
    match s {
        "A" => QType::A,
        "AAAA" => QType::Aaaa,
        other => panic!("the zone module knows no type {other}"),
    }
}

/// Answers as comparable tuples: (name, type, ttl, data), addresses in canonical text.
fn answer_tuples(v: &Value) -> Vec<(String, String, u64, String)> {
    v.as_array()
        .unwrap_or_else(|| panic!("answers is not an array: {v}"))
        .iter()
        .map(|a| {
            let data = a["data"].as_str().unwrap_or_default();
            let data = data.parse::<IpAddr>().map_or_else(|_| data.to_owned(), |ip| ip.to_string());
            (
                a["name"].as_str().unwrap_or_default().to_owned(),
                a["type"].as_str().unwrap_or_default().to_owned(),
                a["ttl"].as_u64().unwrap_or(u64::MAX),
                data,
            )
        })
        .collect()
}

fn addresses(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .unwrap_or_else(|| panic!("addresses is not an array: {v}"))
        .iter()
        .map(|a| a.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("address {a}")))
        .collect()
}

/// Checks one `tracker dns` entry against what the zone says `q` gets.
fn assert_logged_as_zone_says(e: &Value, q: &DigQuery) {
    let r = zone::resolve(&q.name, qtype(q.qtype));
    let what = format!("{} {} over {} to {}: {e:#}", q.name, q.qtype, q.transport(), q.server);
    assert!(ip_eq(&e["resolver"], q.server), "resolver of {what}");
    assert!(e["time"].as_str().is_some_and(|t| t.len() >= 20), "time of {what}");
    assert_eq!(e["rcode"], r.rcode, "rcode of {what}");
    assert_eq!(e["truncated"], false, "truncated of {what}");
    let want: Vec<(String, String, u64, String)> =
        r.answers.iter().map(|a| (a.name.clone(), a.rtype.to_owned(), u64::from(a.ttl), a.data.clone())).collect();
    assert_eq!(answer_tuples(&e["answers"]), want, "answers of {what}");
    assert_eq!(e["cname_chain"], json!(r.cname_chain), "cname_chain of {what}");
    assert_eq!(addresses(&e["addresses"]), r.addresses, "addresses of {what}");
    assert_eq!(e["ttl"], json!(r.ttl), "ttl of {what}");
}

/// Asks every query of `plan` with dig (checking the status against the zone), then waits until
/// `tracker dns` has logged an answered exchange for each, and checks each exactly. Returns the
/// whole log.
fn ask_and_check(lab: &Lab, t: &Tracker, plan: &[DigQuery]) -> Result<Vec<Value>> {
    for q in plan {
        let status = dig(lab, q)?;
        let want = zone::resolve(&q.name, qtype(q.qtype)).rcode;
        ensure!(status == want, "dig {q:?} said {status}, the zone says {want}");
    }
    let logged = |log: &[Value]| plan.iter().all(|q| dns_entries_of(log, q).iter().any(|e| !e["rcode"].is_null()));
    let ok = t.wait_for(WAIT, |t| logged(&t.dns(&[])));
    let log = t.dns(&[]);
    assert!(ok, "not every query was logged with its response within {WAIT:?}:\n{log:#?}\n{}", t.log_tail());
    for q in plan {
        let entries = dns_entries_of(&log, q);
        assert_eq!(entries.len(), 1, "exactly one exchange for {q:?}: {entries:#?}");
        assert_logged_as_zone_says(entries[0], q);
    }
    Ok(log)
}

fn names_in(v: &[Value], field: &str) -> Vec<String> {
    v.iter().map(|e| e[field].as_str().unwrap_or("?").to_owned()).collect()
}

/// The on-host resolver (unbound on the VPN host's tunnel addresses): A, AAAA, the CNAME chains,
/// many answers, NXDOMAIN, over UDP and TCP and both families, logged exactly; the log's filters;
/// and `tracker domains` with exact counts at every `--min-queries` threshold and grouped by
/// registrable domain.
#[test]
fn dns_log_and_domain_counts_via_the_on_host_resolver() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tn1")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let (s4, s6) = (Resolver::OnHost.addr(false), Resolver::OnHost.addr(true));
    let q = DigQuery::new;
    // Names asked different numbers of times, from both phone addresses, over both transports.
    let plan = vec![
        q(s4, zone::WEB_NAME, "A", false),
        q(s6, zone::WEB_NAME, "AAAA", false),
        q(s4, zone::WEB_NAME, "A", true),
        q(s4, zone::WEB_NAME, "AAAA", false),
        q(s6, zone::WEB_NAME, "A", true),
        q(s4, zone::CHAIN[0], "A", false),
        q(s4, zone::CHAIN[0], "AAAA", true),
        // Mixed case on the wire: logged and counted as the lower-case name.
        q(s6, "WWW.Lab.TEST", "A", false),
        q(s4, zone::CHAIN[0], "A", false),
        q(s6, zone::DEEP_CHAIN[0], "AAAA", true),
        q(s4, zone::DEEP_CHAIN[0], "A", false),
        q(s4, zone::MANY_NAME, "A", false),
        q(s6, zone::MANY_NAME, "AAAA", true),
        q(s4, zone::MANY_NAME, "AAAA", false),
        q(s4, zone::NXDOMAIN_NAMES[0], "A", false),
        q(s6, zone::NXDOMAIN_NAMES[1], "AAAA", true),
        q(s4, zone::NXDOMAIN_NAMES[2], "A", false),
        q(s4, zone::SHARED_NAMES[0], "A", false),
        q(s4, zone::SHARED_NAMES[1], "A", false),
        q(s4, zone::LAN_NAME, "A", false),
        q(s6, zone::LAN_NAME, "AAAA", false),
    ];
    let log = ask_and_check(&lab, &t, &plan)?;

    // Nothing else was logged (no duplicate for a TCP exchange, no phantom), newest first.
    assert_eq!(log.len(), plan.len(), "{log:#?}");
    let times = names_in(&log, "time");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    let newest3: Vec<Value> = log[..3].to_vec();
    assert_eq!(t.json(&["dns", "--limit", "3"]).as_array().unwrap(), &newest3, "--limit 3");
    assert_eq!(t.dns(&["--since", "1h"]).len(), plan.len(), "--since 1h");

    // --client: the device's exchanges. Either tunnel address names the phone, a WireGuard
    // peer whose allowed IPs hold both, so both select its IPv4 and IPv6 exchanges.
    let phone = [IpAddr::V4(PHONE_V4), IpAddr::V6(PHONE_V6)];
    for given in phone {
        let got = t.dns(&["--client", &given.to_string()]);
        let want = plan.iter().filter(|q| phone.contains(&q.client())).count();
        assert_eq!(got.len(), want, "--client {given}: {got:#?}");
        assert!(got.iter().all(|e| phone.iter().any(|p| ip_eq(&e["client"], *p))));
    }
    // --domain: the name and the names under it, by whole labels.
    let in_domain = |d: &str| -> BTreeSet<String> {
        plan.iter().map(DigQuery::logged_name).filter(|n| n == d || n.ends_with(&format!(".{d}"))).collect()
    };
    for d in ["cdn.lab.test", zone::ZONE, zone::WEB_NAME, "ab.test", "lab"] {
        let got: BTreeSet<String> = names_in(&t.dns(&["--domain", d]), "name").into_iter().collect();
        assert_eq!(got, in_domain(d), "--domain {d}");
    }
    let under_zone = t.dns(&["--domain", zone::ZONE]).len();
    assert_eq!(under_zone, plan.len(), "--domain {} counts every exchange", zone::ZONE);

    // tracker domains: per name, queries = exchanges asking it (any type), clients = distinct
    // phone addresses; NXDOMAIN names count like any other question.
    let mut counts: BTreeMap<String, (u64, BTreeSet<IpAddr>)> = BTreeMap::new();
    for q in &plan {
        let c = counts.entry(q.logged_name()).or_default();
        c.0 += 1;
        c.1.insert(q.client());
    }
    let max = counts.values().map(|c| c.0).max().unwrap();
    assert!(max >= 5 && counts.values().any(|c| c.0 == 1), "the plan needs a spread of counts");
    for min in 1..=max + 1 {
        let mut want: Vec<(String, u64, u64)> =
            counts.iter().filter(|(_, c)| c.0 >= min).map(|(n, c)| (n.clone(), c.0, c.1.len() as u64)).collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let got_rows = t.domains(&["--min-queries", &min.to_string()]);
        let got: Vec<(String, u64, u64)> = got_rows
            .iter()
            .map(|d| {
                (
                    d["domain"].as_str().unwrap_or("?").to_owned(),
                    d["queries"].as_u64().unwrap_or(0),
                    d["clients"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(got, want, "tracker domains --min-queries {min}");
        for d in &got_rows {
            let (first, last) = (d["first_seen"].as_str().unwrap_or(""), d["last_seen"].as_str().unwrap_or(""));
            assert!(!first.is_empty() && first <= last, "first_seen/last_seen of {d}");
        }
    }
    // Grouped: every name is under lab.test (not a public suffix: registrable = last two labels).
    let grouped = t.domains(&["--group", "registrable"]);
    assert_eq!(grouped.len(), 1, "{grouped:#?}");
    assert_eq!(grouped[0]["domain"], zone::ZONE);
    assert_eq!(grouped[0]["queries"], plan.len() as u64);
    assert_eq!(grouped[0]["clients"], 2);
    // The phone by its IPv4 address: the device, so its IPv6 queries count too (clients counts
    // addresses).
    let device = t.domains(&["--group", "registrable", "--client", &PHONE_V4.to_string()]);
    assert_eq!(device.len(), 1);
    assert_eq!((device[0]["queries"].as_u64(), device[0]["clients"].as_u64()), (Some(plan.len() as u64), Some(2)));
    let (messages, malformed) = t.dns_counters().context("status has no DNS counters")?;
    assert_eq!(malformed, 0, "real resolvers' messages are not malformed");
    assert_eq!(messages, 2 * plan.len() as u64, "one query and one response per exchange");
    t.stop()?;
    Ok(())
}

/// Waits until each connection's flow is in `tracker flows` with a name source decided (or for
/// local peers, `local`), then returns all flows.
fn wait_for_named(t: &Tracker, conns: &[&Conn]) -> Vec<Value> {
    let ready = |flows: &[Value]| conns.iter().all(|c| flow_of(flows, c).is_some_and(|f| !f["name_source"].is_null()));
    let ok = t.wait_for(WAIT, |t| ready(&t.flows()));
    let flows = t.flows();
    if !ok {
        let missing: Vec<&&Conn> =
            conns.iter().filter(|c| flow_of(&flows, c).is_none_or(|f| f["name_source"].is_null())).collect();
        eprintln!("flows still unnamed after {WAIT:?}: {missing:#?}");
    }
    flows
}

/// Asserts the flow of `c` is named `name` from `source` (any of them), with CNAME `cname`.
fn assert_named(flows: &[Value], c: &Conn, name: Option<&str>, sources: &[&str], cname: Option<&str>, class: &str) {
    let f = flow_of(flows, c).unwrap_or_else(|| panic!("no flow for {c:?} in {flows:#?}"));
    assert_eq!(f["name"], json!(name), "name of {c:?}: {f:#}");
    assert!(sources.iter().any(|s| f["name_source"] == *s), "name_source of {c:?} should be one of {sources:?}: {f:#}");
    assert_eq!(f["cname"], json!(cname), "cname of {c:?}: {f:#}");
    assert_eq!(f["remote_class"], class, "remote_class of {c:?}: {f:#}");
}

/// `NAME:PORT:ADDR` for curl's --resolve (IPv6 bracketed).
fn resolve_arg(name: &str, port: u16, addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{name}:{port}:{a}"),
        IpAddr::V6(a) => format!("{name}:{port}:[{a}]"),
    }
}

fn url(scheme: &str, name: &str) -> String {
    let path = if scheme == "http" { SMALL_TXT } else { "" };
    format!("{scheme}://{name}/{path}")
}

/// curl from the phone resolving through `resolver` (glibc, the lab's resolver), `-4` or `-6`.
fn curl_by_name(lab: &Lab, resolver: IpAddr, v6: bool, scheme: &str, name: &str) -> Result<Conn> {
    let family = if v6 { "-6" } else { "-4" };
    let cert = lab.tls_cert.display().to_string();
    curl_conn(lab.phone_cmd_resolving(resolver, "curl")?, &[family, "--cacert", &cert, &url(scheme, name)])
}

/// curl from the phone to `addr` for `name` without any DNS (`--resolve`): only the Host header
/// or the TLS SNI says which name it is.
fn curl_without_dns(lab: &Lab, scheme: &str, name: &str, addr: IpAddr) -> Result<Conn> {
    let port = if scheme == "http" { HTTP_PORT } else { TLS_PORT };
    let cert = lab.tls_cert.display().to_string();
    curl_conn(
        lab.phone_cmd("curl"),
        &["--cacert", &cert, "--resolve", &resolve_arg(name, port, addr), &url(scheme, name)],
    )
}

/// The resolver on the internet side: the phone's queries cross the tunnel (XDP in, TC out) to
/// an upstream unbound. Logged exactly, and curl resolving through it gets DNS-named flows.
#[test]
fn upstream_resolver_through_the_tunnel() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tn2")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let (u4, u6) = (Resolver::Upstream.addr(false), Resolver::Upstream.addr(true));
    let q = DigQuery::new;
    let plan = vec![
        q(u4, zone::WEB_NAME, "A", false),
        q(u6, zone::CHAIN[0], "AAAA", true),
        q(u4, zone::MANY_NAME, "A", true),
        q(u6, zone::DEEP_CHAIN[0], "A", false),
        q(u6, zone::NXDOMAIN_NAMES[0], "A", false),
    ];
    ask_and_check(&lab, &t, &plan)?;

    let www = curl_by_name(&lab, u4, false, "http", zone::CHAIN[0])?;
    let deep = curl_by_name(&lab, u6, true, "http", zone::DEEP_CHAIN[0])?;
    assert_eq!(www.remote, IpAddr::V4(zone::CDN_V4));
    assert_eq!(deep.remote, IpAddr::V6(zone::DEEP_V6));
    let flows = wait_for_named(&t, &[&www, &deep]);
    assert_named(&flows, &www, Some(zone::CHAIN[0]), &["dns"], Some(zone::CHAIN[2]), "documentation");
    assert_named(&flows, &deep, Some(zone::DEEP_CHAIN[0]), &["dns"], Some(zone::DEEP_CHAIN[4]), "documentation");
    // The resolver itself is an unnamed internet host (nothing in the zone points at it).
    let to_resolver: Vec<&Value> =
        flows.iter().filter(|f| ip_eq(&f["remote"], u4) || ip_eq(&f["remote"], u6)).collect();
    assert!(!to_resolver.is_empty(), "no flow to the upstream resolver: {flows:#?}");
    for f in to_resolver {
        assert_eq!(f["remote_port"], 53, "{f:#}");
        assert_eq!(f["name"], Value::Null, "{f:#}");
        assert_eq!(f["remote_class"], "documentation", "{f:#}");
    }
    // Exchanges glibc made for curl are logged against the upstream resolver too.
    let log = t.dns(&["--domain", zone::DEEP_CHAIN[0]]);
    assert!(log.iter().any(|e| ip_eq(&e["resolver"], u6) && e["type"] == "AAAA"), "{log:#?}");
    t.stop()?;
    Ok(())
}

/// Flows are named from DNS (with the CNAME), from the TLS SNI or the HTTP Host when there was
/// no DNS, disambiguated by SNI/Host when two names share an address, and `local` (unnamed) for
/// private peers whatever DNS or the Host header says.
#[test]
fn flows_are_named_by_dns_sni_http_and_local() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tn3")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let (s4, s6) = (Resolver::OnHost.addr(false), Resolver::OnHost.addr(true));
    let [shop, blog] = zone::SHARED_NAMES;

    // No DNS at all first (nothing has resolved these names yet in this daemon's life).
    let tls_sni = curl_without_dns(&lab, "https", zone::TLS_NAME, zone::TLS_V4.into())?;
    let shop_http = curl_without_dns(&lab, "http", shop, zone::SHARED_V4.into())?;
    let blog_sni_v6 = curl_without_dns(&lab, "https", blog, zone::SHARED_V6.into())?;

    // Through the on-host resolver (glibc in the phone asks it; the answer crosses wg0).
    let www = curl_by_name(&lab, s4, false, "http", zone::CHAIN[0])?;
    let deep = curl_by_name(&lab, s6, true, "http", zone::DEEP_CHAIN[0])?;
    let web = curl_by_name(&lab, s4, false, "http", zone::WEB_NAME)?;
    let tls_dns = curl_by_name(&lab, s6, true, "https", zone::TLS_NAME)?;
    let many = curl_by_name(&lab, s4, false, "http", zone::MANY_NAME)?;
    assert!(zone::MANY_V4.iter().any(|&a| IpAddr::V4(a) == many.remote), "{many:?}");

    // One address, two names: the client's latest answer for the address is the other name;
    // the Host header / SNI says which one this connection is for.
    for (name, ty, server) in [(shop, "A", s4), (blog, "A", s4), (blog, "AAAA", s6), (shop, "AAAA", s6)] {
        dig(&lab, &DigQuery::new(server, name, ty, false))?;
    }
    let shop_shared = curl_without_dns(&lab, "http", shop, zone::SHARED_V4.into())?;
    let blog_shared = curl_without_dns(&lab, "https", blog, zone::SHARED_V6.into())?;

    // Private peers: `local`, never named, whatever DNS or the Host header says.
    let lan4 = curl_by_name(&lab, s4, false, "http", zone::LAN_NAME)?;
    let lan6 = curl_by_name(&lab, s6, true, "http", zone::LAN_NAME)?;
    let lan_host = curl_without_dns(&lab, "http", zone::WEB_NAME, zone::LAN_V4.into())?;
    assert_eq!(lan4.remote, IpAddr::V4(zone::LAN_V4));
    assert_eq!(lan6.remote, IpAddr::V6(zone::LAN_V6));

    // The phone's IPv4 and IPv6 tunnel addresses are one device: an answer it got over IPv4
    // names the IPv6 connection it makes with it.
    let cross = curl_by_name(&lab, s4, true, "http", zone::CHAIN[0])?;

    let all = [
        &tls_sni,
        &shop_http,
        &blog_sni_v6,
        &www,
        &deep,
        &web,
        &tls_dns,
        &many,
        &shop_shared,
        &blog_shared,
        &lan4,
        &lan6,
        &lan_host,
        &cross,
    ];
    let flows = wait_for_named(&t, &all);
    let doc = "documentation";
    assert_named(&flows, &tls_sni, Some(zone::TLS_NAME), &["sni"], None, doc);
    assert_named(&flows, &shop_http, Some(shop), &["http"], None, doc);
    assert_named(&flows, &blog_sni_v6, Some(blog), &["sni"], None, doc);
    assert_named(&flows, &www, Some(zone::CHAIN[0]), &["dns"], Some(zone::CHAIN[2]), doc);
    assert_named(&flows, &deep, Some(zone::DEEP_CHAIN[0]), &["dns"], Some(zone::DEEP_CHAIN[4]), doc);
    assert_named(&flows, &web, Some(zone::WEB_NAME), &["dns"], None, doc);
    assert_named(&flows, &tls_dns, Some(zone::TLS_NAME), &["dns"], None, doc);
    assert_named(&flows, &many, Some(zone::MANY_NAME), &["dns"], None, doc);
    // Which evidence is credited when DNS offers both names and SNI/Host picks one is the
    // daemon's choice; the name must be the one the client used.
    assert_named(&flows, &shop_shared, Some(shop), &["dns", "http"], None, doc);
    assert_named(&flows, &blog_shared, Some(blog), &["dns", "sni"], None, doc);
    assert_named(&flows, &lan4, None, &["local"], None, "private");
    assert_named(&flows, &lan6, None, &["local"], None, "unique_local");
    assert_named(&flows, &lan_host, None, &["local"], None, "private");
    // The phone's DNS traffic to the VPN host's tunnel address: local too.
    let dns_flows: Vec<&Value> = flows.iter().filter(|f| ip_eq(&f["remote"], s4) || ip_eq(&f["remote"], s6)).collect();
    assert!(dns_flows.len() >= 2, "DNS flows to the on-host resolver: {flows:#?}");
    for f in dns_flows {
        assert_eq!(
            (&f["name"], &f["name_source"], &f["remote_class"]),
            (&Value::Null, &json!("local"), &json!("tunnel")),
            "{f:#}"
        );
    }
    // Last, as it is about one device having two addresses rather than about one flow.
    assert_named(&flows, &cross, Some(zone::CHAIN[0]), &["dns"], Some(zone::CHAIN[2]), doc);
    t.stop()?;
    Ok(())
}

/// The name `tracker dns` must log for a hostile case, if it is logged.
struct Case {
    what: &'static str,
    question: Labels,
    /// The reply, from the query the rogue resolver received.
    reply: fn(&[u8], &Labels) -> Vec<u8>,
    tcp: bool,
    v6: bool,
    /// Whether tracker must reject the reply (count it in dns_malformed, name nothing) rather
    /// than log it.
    rejected: bool,
}

/// Hostile answers from a rogue resolver (port 53 of an internet host, through wg0's egress):
/// compression-pointer loops, a maximum-length name, binary labels, garbage, a cut header, over
/// UDP and TCP, plus unasked garbage. The daemon survives, counts exactly the rejected messages
/// as malformed, logs the valid ones with safely escaped names, logs the queries whose replies
/// were rejected as unanswered, and keeps logging normal queries afterwards.
#[test]
fn hostile_dns_is_logged_or_rejected_and_never_crashes_the_daemon() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tn4")? else {
        return Ok(());
    };
    t.start(&lab)?;
    assert!(t.wait_for(WAIT, |t| t.dns_counters().is_some()), "status never showed the DNS counters");
    let (messages0, malformed0) = t.dns_counters().unwrap();

    let ok = |q: &[u8], name: &Labels| hostile::a_response(hostile::id_of(q), name);
    let ok_tcp = |q: &[u8], name: &Labels| hostile::tcp_frame(&hostile::a_response(hostile::id_of(q), name));
    let cases = vec![
        Case {
            what: "maximum-length name",
            question: hostile::max_length_name(),
            reply: ok,
            tcp: false,
            v6: false,
            rejected: false,
        },
        Case {
            what: "maximum-length name over IPv6",
            question: hostile::max_length_name(),
            reply: ok,
            tcp: false,
            v6: true,
            rejected: false,
        },
        Case {
            what: "binary labels",
            question: hostile::binary_name(),
            reply: ok,
            tcp: false,
            v6: false,
            rejected: false,
        },
        Case {
            what: "binary labels over TCP",
            question: hostile::binary_name(),
            reply: ok_tcp,
            tcp: true,
            v6: false,
            rejected: false,
        },
        Case {
            what: "pointer loop in the answer",
            question: hostile::hostile_name("loop-answer"),
            reply: |q, name| hostile::pointer_loop_in_answer(hostile::id_of(q), name),
            tcp: false,
            v6: false,
            rejected: true,
        },
        Case {
            what: "pointer loop in the question",
            question: hostile::hostile_name("loop-question"),
            reply: |q, _| hostile::pointer_loop_in_question(hostile::id_of(q)),
            tcp: false,
            v6: true,
            rejected: true,
        },
        Case {
            what: "garbage",
            question: hostile::hostile_name("garbage"),
            reply: |q, _| hostile::garbage(hostile::id_of(q), 0x5eed, 300),
            tcp: false,
            v6: false,
            rejected: true,
        },
        Case {
            what: "truncated header",
            question: hostile::hostile_name("truncated"),
            reply: |q, _| hostile::truncated_header(hostile::id_of(q)),
            tcp: false,
            v6: false,
            rejected: true,
        },
        Case {
            what: "pointer loop over TCP",
            question: hostile::hostile_name("loop-tcp"),
            reply: |q, name| hostile::tcp_frame(&hostile::pointer_loop_in_answer(hostile::id_of(q), name)),
            tcp: true,
            v6: false,
            rejected: true,
        },
    ];
    let mut ports = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let id = 0x4000 + i as u16;
        let query = hostile::query(id, &case.question, hostile::TYPE_A);
        let (phone, server) = if case.v6 {
            (IpAddr::V6(PHONE_V6), IpAddr::V6(ECHO_V6))
        } else {
            (IpAddr::V4(PHONE_V4), IpAddr::V4(ECHO_V4))
        };
        let server = SocketAddr::new(server, 53);
        let (port, got) = if case.tcp {
            hostile::tcp_exchange(&lab, server, &query, |q| (case.reply)(q, &case.question))
        } else {
            hostile::udp_exchange(&lab, phone, server, &query, |q| (case.reply)(q, &case.question))
        }
        .with_context(|| format!("exchange {}", case.what))?;
        assert!(!got.is_empty(), "{}: the phone got nothing", case.what);
        ports.push(port);
    }
    // Garbage nobody asked for, to a closed port of the phone.
    let unasked = hostile::garbage(0x7777, 0xbad, 120);
    hostile::send_unsolicited(
        &lab,
        SocketAddr::new(ECHO_V4.into(), 53),
        SocketAddr::new(PHONE_V4.into(), 9),
        &unasked,
    )?;
    let rejected = cases.iter().filter(|c| c.rejected).count() as u64 + 1;
    let sent = 2 * cases.len() as u64 + 1;

    let counted = t.wait_for(WAIT, |t| t.dns_counters().is_some_and(|(_, m)| m - malformed0 >= rejected));
    let (messages, malformed) = t.dns_counters().unwrap();
    assert!(counted, "dns_malformed grew by {} of {rejected}:\n{}", malformed - malformed0, t.log_tail());
    assert!(t.daemon_running(), "the daemon died:\n{}", t.log_tail());
    assert_eq!(malformed - malformed0, rejected, "dns_malformed counts exactly the rejected messages");
    // Every message the kernel handed over counts, malformed or not (or, if the daemon counts
    // only the well-formed ones, exactly those).
    let grew = messages - messages0;
    assert!(grew == sent || grew == sent - rejected, "dns_messages grew by {grew}, {sent} messages were sent");

    // The valid ones are logged, names escaped; the rejected replies answered nothing, so their
    // queries are logged unanswered once the daemon stops waiting.
    let hostile_log = |t: &Tracker| t.dns(&["--domain", "hostile.example"]);
    let entry_for = |log: &[Value], case: &Case, port: u16| -> Vec<Value> {
        let name = hostile::presentation(&case.question);
        let client = if case.v6 { IpAddr::V6(PHONE_V6) } else { IpAddr::V4(PHONE_V4) };
        log.iter()
            .filter(|e| e["name"] == name.as_str() && ip_eq(&e["client"], client) && e["client_port"] == port)
            .cloned()
            .collect()
    };
    let all_logged = |t: &Tracker| {
        let log = hostile_log(t);
        cases.iter().zip(&ports).all(|(c, &p)| !entry_for(&log, c, p).is_empty())
    };
    let ok = t.wait_for(WAIT_UNANSWERED, all_logged);
    let log = hostile_log(&t);
    assert!(ok, "not every hostile exchange was logged: {log:#?}\n{}", t.log_tail());
    for (case, &port) in cases.iter().zip(&ports) {
        let entries = entry_for(&log, case, port);
        assert_eq!(entries.len(), 1, "{}: {entries:#?}", case.what);
        let e = &entries[0];
        assert_eq!(e["type"], "A", "{}", case.what);
        assert_eq!(e["transport"], if case.tcp { "tcp" } else { "udp" }, "{}", case.what);
        assert!(ip_eq(&e["resolver"], if case.v6 { ECHO_V6.into() } else { ECHO_V4.into() }), "{}", case.what);
        if case.rejected {
            assert_eq!(e["rcode"], Value::Null, "{}: a rejected reply is no response: {e:#}", case.what);
            assert_eq!(e["answers"], json!([]), "{}", case.what);
            assert_eq!(e["addresses"], json!([]), "{}", case.what);
        } else {
            let name = hostile::presentation(&case.question);
            assert_eq!(e["rcode"], "NOERROR", "{}", case.what);
            assert_eq!(
                answer_tuples(&e["answers"]),
                vec![(name, "A".to_owned(), u64::from(hostile::HOSTILE_TTL), hostile::HOSTILE_ANSWER_V4.to_string())],
                "{}",
                case.what
            );
            assert_eq!(addresses(&e["addresses"]), vec![IpAddr::V4(hostile::HOSTILE_ANSWER_V4)], "{}", case.what);
            assert_eq!(e["ttl"], hostile::HOSTILE_TTL, "{}", case.what);
        }
    }
    assert_eq!(hostile::presentation(&hostile::max_length_name()).len(), 253);

    // Every output format stays one safe line per row: no control bytes, no raw 0xff.
    for format in ["table", "csv", "json"] {
        let out = t.output(&["dns", "--limit", "0", "--format", format]);
        assert!(out.status.success(), "tracker dns --format {format}: {out:?}");
        let bad: Vec<u8> = out.stdout.iter().copied().filter(|&b| !(b == b'\n' || (0x20..0x7f).contains(&b))).collect();
        assert!(bad.is_empty(), "tracker dns --format {format} printed raw bytes {bad:?}");
    }
    let domains = t.domains(&[]);
    assert!(
        domains.iter().any(|d| d["domain"] == hostile::presentation(&hostile::binary_name()).as_str()),
        "{domains:#?}"
    );

    // The daemon goes on: a normal query afterwards is logged.
    let after = DigQuery::new(Resolver::OnHost.addr(false), zone::WEB_NAME, "A", false);
    ask_and_check(&lab, &t, std::slice::from_ref(&after))?;
    assert!(t.daemon_running(), "the daemon died:\n{}", t.log_tail());
    t.stop()?;
    Ok(())
}

/// What the test knows about one request: the connection and the name the client used (None
/// for a private peer, which must be `local` and unnamed).
struct Truth {
    conn: Conn,
    name: Option<&'static str>,
    how: String,
}

/// Naming accuracy: a bounded mix of requests over the zone's names (direct, CNAME chains, many
/// answers, shared addresses with and without DNS, TLS and HTTP, IPv4 and IPv6, both resolvers,
/// private peers). Share of flows to non-local peers named exactly as the client asked: at least
/// 99.5%. Local peers mislabelled: none.
#[test]
fn naming_accuracy_in_the_lab() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tn5")? else {
        return Ok(());
    };
    t.start(&lab)?;
    const ROUNDS: usize = 25;
    const KINDS: usize = 8;
    let mut truths: Vec<Truth> = Vec::new();
    for i in 0..ROUNDS * KINDS {
        let (round, kind) = (i / KINDS, i % KINDS);
        let v6 = round % 2 == 1;
        // Both resolvers; now and then the query goes over the other family than the connection.
        let resolver = if (round / 2) % 2 == 0 { Resolver::OnHost } else { Resolver::Upstream };
        let dns_v6 = if round % 5 == 4 { !v6 } else { v6 };
        let server = resolver.addr(dns_v6);
        let shared = zone::SHARED_NAMES[round % 2];
        let other = zone::SHARED_NAMES[(round + 1) % 2];
        let pick = |v4: IpAddr, v6a: IpAddr| if v6 { v6a } else { v4 };
        let truth = match kind {
            0 => Truth {
                conn: curl_by_name(&lab, server, v6, "http", zone::WEB_NAME)?,
                name: Some(zone::WEB_NAME),
                how: "direct".into(),
            },
            1 => Truth {
                conn: curl_by_name(&lab, server, v6, "http", zone::CHAIN[0])?,
                name: Some(zone::CHAIN[0]),
                how: "cname".into(),
            },
            2 => {
                // Many answers: the phone resolves, then uses one of them (a different one each
                // round), as apps that pick among addresses do.
                let ty = if v6 { "AAAA" } else { "A" };
                dig(&lab, &DigQuery::new(server, zone::MANY_NAME, ty, false))?;
                let addrs = zone::resolve(zone::MANY_NAME, if v6 { QType::Aaaa } else { QType::A }).addresses;
                let addr = addrs[round % addrs.len()];
                Truth {
                    conn: curl_without_dns(&lab, "http", zone::MANY_NAME, addr)?,
                    name: Some(zone::MANY_NAME),
                    how: "many".into(),
                }
            }
            3 => Truth {
                conn: curl_by_name(&lab, server, v6, if round % 3 == 0 { "https" } else { "http" }, shared)?,
                name: Some(shared),
                how: "shared via dns".into(),
            },
            4 => Truth {
                conn: curl_by_name(&lab, server, v6, "http", zone::DEEP_CHAIN[0])?,
                name: Some(zone::DEEP_CHAIN[0]),
                how: "deep cname".into(),
            },
            5 => Truth {
                conn: curl_by_name(&lab, server, v6, "https", zone::TLS_NAME)?,
                name: Some(zone::TLS_NAME),
                how: "tls via dns".into(),
            },
            6 => {
                // Shared address, the latest answer names the other name, no DNS for this one.
                let ty = if v6 { "AAAA" } else { "A" };
                dig(&lab, &DigQuery::new(server, other, ty, false))?;
                let scheme = if round % 2 == 0 { "https" } else { "http" };
                let addr = pick(zone::SHARED_V4.into(), zone::SHARED_V6.into());
                Truth {
                    conn: curl_without_dns(&lab, scheme, shared, addr)?,
                    name: Some(shared),
                    how: "shared, other name resolved last".into(),
                }
            }
            _ => Truth {
                conn: curl_by_name(&lab, server, v6, "http", zone::LAN_NAME)?,
                name: None,
                how: "private".into(),
            },
        };
        let mut truth = truth;
        if dns_v6 != v6 && kind != 6 {
            truth.how.push_str(", DNS over the other family");
        }
        truths.push(truth);
    }
    let conns: Vec<&Conn> = truths.iter().map(|t| &t.conn).collect();
    let flows = wait_for_named(&t, &conns);

    let mut total = 0;
    let mut right = 0;
    let mut wrong: Vec<String> = Vec::new();
    for truth in truths.iter().filter(|t| t.name.is_some()) {
        total += 1;
        let f = flow_of(&flows, &truth.conn);
        if f.is_some_and(|f| f["name"] == truth.name.unwrap()) {
            right += 1;
        } else {
            wrong.push(format!(
                "{} ({}): {:?} -> {}",
                truth.name.unwrap(),
                truth.how,
                truth.conn,
                f.map_or("no flow".into(), |f| f.to_string())
            ));
        }
    }
    // Local mislabels over every flow to a local peer, not only the test's requests (the DNS
    // flows to the on-host resolver count too).
    let local: Vec<&Value> =
        flows.iter().filter(|f| !matches!(f["remote_class"].as_str(), Some("public" | "documentation"))).collect();
    let mislabelled: Vec<&&Value> =
        local.iter().filter(|f| !f["name"].is_null() || f["name_source"] != "local").collect();
    let private_requests = truths.iter().filter(|t| t.name.is_none()).count();
    let accuracy = right as f64 / total as f64;
    eprintln!(
        "naming accuracy: {right}/{total} = {:.2}% of flows to non-local peers named as the client asked; \
         {} of {} flows to local peers ({private_requests} private requests) mislabelled",
        accuracy * 100.0,
        mislabelled.len(),
        local.len()
    );
    for w in &wrong {
        eprintln!("  wrong: {w}");
    }
    // For the reader: which evidence named the flows (SNI/Host also name what DNS missed).
    let mut by_source: BTreeMap<String, usize> = BTreeMap::new();
    for truth in truths.iter().filter(|t| t.name.is_some()) {
        let source = flow_of(&flows, &truth.conn).map_or("no flow".into(), |f| f["name_source"].to_string());
        *by_source.entry(format!("{} by {source}", truth.how)).or_default() += 1;
    }
    for (what, n) in &by_source {
        eprintln!("  {what}: {n}");
    }
    assert!(local.len() >= private_requests, "every private request is a local flow: {local:#?}");
    assert!(mislabelled.is_empty(), "local peers mislabelled: {mislabelled:#?}");
    assert!(accuracy >= 0.995, "naming accuracy {:.2}% < 99.5%: {wrong:#?}", accuracy * 100.0);
    t.stop()?;
    Ok(())
}
