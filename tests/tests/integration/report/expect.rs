//! What `tracker report` and `tracker devices` must print for a plan of flows: every figure
//! computed from the plan (connections) and the plan's `tracker flows` rows (bytes), compared
//! line by line. Lines are compared as sets keyed by their name (the contract fixes no order
//! for them), except `domains`, which is most queried first (ties by name); lines with no
//! connections are ignored; percentages may be rounded to one decimal.

use super::{Expect, PCT_TOLERANCE, Phone};
use crate::common::{Checks, Tracker};
use anyhow::{Context as _, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// (connections, bytes) per line name.
type Lines = BTreeMap<String, (u64, u64)>;

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn group(planned: &[&(Expect, u64)], key: impl Fn(&Expect) -> Option<String>) -> Lines {
    let mut lines = Lines::new();
    for (e, b) in planned {
        if let Some(k) = key(e) {
            let l = lines.entry(k).or_default();
            l.0 += 1;
            l.1 += b;
        }
    }
    lines
}

fn totals(planned: &[&(Expect, u64)]) -> (u64, u64) {
    (planned.len() as u64, planned.iter().map(|p| p.1).sum())
}

/// Compares the array `got` with `want`, keyed by `key` of each row; with `total`, also each
/// row's `connections_pct` and `bytes_pct` against 100 × x / total.
fn check_lines(
    c: &mut Checks,
    what: &str,
    got: &Value,
    key: impl Fn(&Value) -> String,
    want: &Lines,
    total: Option<(u64, u64)>,
) {
    let Some(rows) = got.as_array() else {
        c.check(false, format!("{what}: expected an array, measured {got}"));
        return;
    };
    let rows: Vec<&Value> = rows.iter().filter(|r| r["connections"].as_u64() != Some(0)).collect();
    let measured: Lines = rows
        .iter()
        .map(|r| (key(r), (r["connections"].as_u64().unwrap_or(u64::MAX), r["bytes"].as_u64().unwrap_or(u64::MAX))))
        .collect();
    c.check(rows.len() == measured.len(), format!("{what}: a line appears twice: {rows:#?}"));
    c.check(
        &measured == want,
        format!("{what}: (connections, bytes) per line: expected {want:?}, measured {measured:?}"),
    );
    let Some((conns, bytes)) = total else { return };
    for r in rows {
        let k = key(r);
        let Some(&(wc, wb)) = want.get(&k) else { continue };
        for (field, x, of) in [("connections_pct", wc, conns), ("bytes_pct", wb, bytes)] {
            let want_pct = if of == 0 { 0.0 } else { 100.0 * x as f64 / of as f64 };
            let got_pct = r[field].as_f64();
            let ok = got_pct.is_some_and(|g| (g - want_pct).abs() <= PCT_TOLERANCE);
            c.check(ok, format!("{what}: {k}: {field}: expected {want_pct:.4}, measured {}", r[field]));
        }
    }
}

/// The companies lines' key: "kind name", with no name for the local and unnamed lines.
fn company_key(r: &Value) -> String {
    let kind = text(&r["kind"]);
    if kind == "local" || kind == "unnamed" { kind } else { format!("{kind} {}", text(&r["name"])) }
}

fn company_lines(c: &mut Checks, what: &str, got: &Value, planned: &[&(Expect, u64)]) {
    let want =
        group(planned, |e| Some(if e.line.is_empty() { e.kind.to_owned() } else { format!("{} {}", e.kind, e.line) }));
    check_lines(c, what, got, company_key, &want, Some(totals(planned)));
    // Categories: the company's, none for the other kinds.
    let mut want_cat: BTreeMap<String, Value> = BTreeMap::new();
    for (e, _) in planned {
        let k = if e.line.is_empty() { e.kind.to_owned() } else { format!("{} {}", e.kind, e.line) };
        want_cat.insert(k, e.category.map_or(Value::Null, |s| Value::String(s.to_owned())));
    }
    for r in got.as_array().into_iter().flatten() {
        let k = company_key(r);
        if let Some(w) = want_cat.get(&k) {
            c.check(r["category"] == *w, format!("{what}: {k}: category: expected {w}, measured {}", r["category"]));
        }
    }
}

/// The whole report for the plan, or for one phone's part of it (`--client`).
pub(super) fn check_report(
    c: &mut Checks,
    r: &Value,
    planned: &[(Expect, u64)],
    asked: &[(Phone, &'static str)],
    client: Option<Phone>,
    keys: &[String; 2],
    what: &str,
) {
    let planned: Vec<&(Expect, u64)> = planned.iter().filter(|p| client.is_none_or(|ph| p.0.phone == ph)).collect();
    let (since, until) = (r["since"].as_str().unwrap_or(""), r["until"].as_str().unwrap_or(""));
    let rfc3339 = |s: &str| s.len() >= 20 && s.as_bytes()[10] == b'T';
    c.check(
        rfc3339(since) && rfc3339(until) && since < until,
        format!("{what}: since {since:?} before until {until:?}"),
    );
    if client.is_none() {
        c.check(r["client"].is_null(), format!("{what}: client: expected null, measured {}", r["client"]));
    }
    let (conns, bytes) = totals(&planned);
    let got_totals = (r["totals"]["connections"].as_u64(), r["totals"]["bytes"].as_u64());
    c.check(
        got_totals == (Some(conns), Some(bytes)),
        format!("{what}: totals: expected {:?}, measured {}", (conns, bytes), r["totals"]),
    );

    // DNS names asked, most first.
    let mut per_name: BTreeMap<&str, (u64, BTreeSet<Phone>)> = BTreeMap::new();
    for (phone, name) in asked.iter().filter(|(ph, _)| client.is_none_or(|c| c == *ph)) {
        let e = per_name.entry(name).or_default();
        e.0 += 1;
        e.1.insert(*phone);
    }
    let mut want_domains: Vec<(String, u64, u64)> =
        per_name.iter().map(|(n, (q, cl))| ((*n).to_owned(), *q, cl.len() as u64)).collect();
    want_domains.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let got_domains: Vec<(String, u64, u64)> = r["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| (text(&d["domain"]), d["queries"].as_u64().unwrap_or(0), d["clients"].as_u64().unwrap_or(0)))
        .collect();
    c.check(
        got_domains == want_domains,
        format!("{what}: domains: expected {want_domains:?}, measured {got_domains:?}"),
    );

    company_lines(c, &format!("{what}: companies"), &r["companies"], &planned);
    let served = group(&planned, |e| e.served_by.map(str::to_owned));
    check_lines(c, &format!("{what}: served_by"), &r["served_by"], |v| text(&v["name"]), &served, None);
    let services = group(&planned, |e| e.service.map(|s| format!("{s} of {}", e.company.unwrap_or("?"))));
    let service_key = |v: &Value| format!("{} of {}", text(&v["name"]), text(&v["company"]));
    check_lines(c, &format!("{what}: services"), &r["services"], service_key, &services, Some((conns, bytes)));
    let enc = group(&planned, |e| Some(e.encrypted.to_owned()));
    check_lines(c, &format!("{what}: encryption"), &r["encryption"], |v| text(&v["class"]), &enc, Some((conns, bytes)));
    let transports = group(&planned, |e| Some(e.protocol.to_owned()));
    check_lines(
        c,
        &format!("{what}: transports"),
        &r["transports"],
        |v| text(&v["name"]),
        &transports,
        Some((conns, bytes)),
    );
    let apps = group(&planned, |e| Some(format!("{} {}", e.app, e.encrypted)));
    let app_key = |v: &Value| format!("{} {}", text(&v["name"]), text(&v["encryption"]));
    check_lines(c, &format!("{what}: app_protocols"), &r["app_protocols"], app_key, &apps, Some((conns, bytes)));

    // Devices: named by then (the report runs after name-device).
    let mut want_dev = Vec::new();
    for (i, phone) in [Phone::One, Phone::Two].into_iter().enumerate() {
        let mine: Vec<&(Expect, u64)> = planned.iter().copied().filter(|p| p.0.phone == phone).collect();
        if mine.is_empty() {
            continue;
        }
        let (n, b) = totals(&mine);
        want_dev.push((phone.device_name().to_owned(), keys[i].clone(), addresses(phone), n, b));
    }
    want_dev.sort_by(|a, b| a.1.cmp(&b.1));
    let mut got_dev: Vec<(String, String, BTreeSet<IpAddr>, u64, u64)> = r["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                text(&d["device"]),
                text(&d["public_key"]),
                ips(&d["addresses"]),
                d["connections"].as_u64().unwrap_or(u64::MAX),
                d["bytes"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    got_dev.sort_by(|a, b| a.1.cmp(&b.1));
    c.check(got_dev == want_dev, format!("{what}: devices: expected {want_dev:?}, measured {got_dev:?}"));
}

/// `companies_excluding` for `--exclude`: the excluded names, and the remaining connections,
/// bytes and lines, percentages over the remainder.
pub(super) fn check_excluding(c: &mut Checks, r: &Value, planned: &[(Expect, u64)], excluded: &[&str]) {
    let ce = &r["companies_excluding"];
    let names: Vec<String> = ce["excluded"].as_array().into_iter().flatten().map(text).collect();
    c.check(
        names == excluded,
        format!("companies_excluding.excluded: expected {excluded:?}, measured {}", ce["excluded"]),
    );
    let rest: Vec<&(Expect, u64)> =
        planned.iter().filter(|p| !(p.0.kind == "company" && excluded.contains(&p.0.line))).collect();
    let (conns, bytes) = totals(&rest);
    let got = (ce["connections"].as_u64(), ce["bytes"].as_u64());
    c.check(
        got == (Some(conns), Some(bytes)),
        format!("companies_excluding: expected remainder {:?}, measured {got:?}", (conns, bytes)),
    );
    company_lines(c, "companies_excluding.rows", &ce["rows"], &rest);
}

/// `tracker devices`: both peers with their keys, allowed IPs, flows and bytes; names null until
/// `name-device`, then the given ones.
pub(super) fn check_devices(
    c: &mut Checks,
    t: &Tracker,
    planned: &[(Expect, u64)],
    keys: &[String; 2],
    named: bool,
) -> Result<()> {
    let v = t.try_json(&["devices"])?;
    let rows = v.as_array().context("tracker devices prints an array")?;
    c.check(rows.len() == 2, format!("tracker devices: expected 2 devices, measured {}: {v:#}", rows.len()));
    for (i, phone) in [Phone::One, Phone::Two].into_iter().enumerate() {
        let Some(d) = rows.iter().find(|d| d["public_key"] == keys[i].as_str()) else {
            c.check(false, format!("tracker devices: no device with key {} ({phone:?}): {v:#}", keys[i]));
            continue;
        };
        let want_name = if named { Value::String(phone.device_name().to_owned()) } else { Value::Null };
        c.check(
            d["name"] == want_name,
            format!("devices: {phone:?}: name: expected {want_name}, measured {}", d["name"]),
        );
        let mine: Vec<&(Expect, u64)> = planned.iter().filter(|p| p.0.phone == phone).collect();
        let (n, b) = totals(&mine);
        let got = (d["flows"].as_u64(), d["bytes"].as_u64());
        c.check(
            got == (Some(n), Some(b)),
            format!("devices: {phone:?}: (flows, bytes): expected {:?}, measured {got:?}", (n, b)),
        );
        let allowed: BTreeSet<String> = d["allowed_ips"].as_array().into_iter().flatten().map(text).collect();
        let want: BTreeSet<String> = [format!("{}/32", phone.v4()), format!("{}/128", phone.v6())].into();
        c.check(allowed == want, format!("devices: {phone:?}: allowed_ips: expected {want:?}, measured {allowed:?}"));
    }
    Ok(())
}

fn addresses(phone: Phone) -> BTreeSet<IpAddr> {
    [IpAddr::V4(phone.v4()), IpAddr::V6(phone.v6())].into()
}

/// Addresses from an array of "ADDR" or "ADDR/LEN" strings.
fn ips(v: &Value) -> BTreeSet<IpAddr> {
    v.as_array().into_iter().flatten().filter_map(|a| a.as_str()?.split('/').next()?.parse().ok()).collect()
}

/// The report against `tracker flows` itself, whatever the plan says: per app protocol,
/// encryption class and transport, its connections are the flows rows with that value and its
/// bytes their bytes_up + bytes_down.
pub(super) fn check_against_flows(c: &mut Checks, r: &Value, flows: &[Value]) {
    for (section, row_key, flow_key) in [
        ("app_protocols", "name", "app_protocol"),
        ("encryption", "class", "encrypted"),
        ("transports", "name", "protocol"),
    ] {
        let mut want = Lines::new();
        for f in flows {
            let l = want.entry(text(&f[flow_key])).or_default();
            l.0 += 1;
            l.1 += f["bytes_up"].as_u64().unwrap_or(0) + f["bytes_down"].as_u64().unwrap_or(0);
        }
        let what = format!("{section} against tracker flows' {flow_key}");
        check_lines(c, &what, &r[section], |v| text(&v[row_key]), &want, None);
    }
}
