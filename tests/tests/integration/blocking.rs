//! End-to-end tests of blocking by name (issue 12): `block-domain`, `block-company`,
//! `block-service`, `import-blocklist`, their `unblock-...` twins, `--client` and `--for`, with
//! the kernel answering the phones' DNS queries itself (NXDOMAIN over UDP, a reset over TCP)
//! through the lab's real WireGuard tunnel, to the on-host resolver and to the upstream one, over
//! both families.
//!
//! Every expectation comes from the lab's zone (`tracker_tests::zone`), the entity table tracker
//! ships (`tracker::analysis::entity`) and the test's own queries, counted as they are made.
//! A name a test expects refused is one the zone resolves (NOERROR), so an NXDOMAIN can only be
//! the kernel's; the kernel's reply also carries no SOA (`AUTHORITY: 0`), where a resolver's
//! NXDOMAIN carries the zone's. Root only; under CI=true they never skip. Run them with
//! `cargo xtask test -- --test integration -- blocking::` (`--nocapture` prints the timings).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::common::{
    CLI_LIMIT, Ran, Tracker, attached_pid_is, daemon_cmd, ip_eq, next_port, run_bounded, run_cli, tracker_with,
    xdp_prog_on_vpn,
};
use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use tracker::analysis::entity::EntityTable;
use tracker_tests::{
    Lab, Ns,
    lab::{PHONE_V4, PHONE_V6, PHONE2_V4, PHONE2_V6, Resolver, SMALL_TXT},
    zone::{self, QType},
};

mod learned;

/// How long the daemon gets to put what the test did into SQLite (it sweeps every 300 ms).
const WAIT: Duration = Duration::from_secs(20);
/// dig's own measure of a refused query (its "Query time"): the kernel answers from the tunnel's
/// ingress, where a timed-out query would take dig's whole `+time=5`.
const REFUSED_QUERY_MS: u64 = 100;
/// A refused lookup's whole run, the client's start (nsenter, the program) included: well under
/// a second.
const REFUSED_WALL: Duration = Duration::from_millis(500);
/// dig's limit per query (`+time`), so an unanswered query is told apart from a refused one.
const DIG_TIME_S: u32 = 5;

/// The phone a query comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phone {
    One,
    Two,
}

impl Phone {
    fn ns(self) -> Ns {
        match self {
            Phone::One => Ns::Phone,
            Phone::Two => Ns::Phone2,
        }
    }

    fn addr(self, v6: bool) -> IpAddr {
        match (self, v6) {
            (Phone::One, false) => PHONE_V4.into(),
            (Phone::One, true) => PHONE_V6.into(),
            (Phone::Two, false) => PHONE2_V4.into(),
            (Phone::Two, true) => PHONE2_V6.into(),
        }
    }
}

/// One DNS question a phone asks with dig, from a source port of its own (so its exchange is
/// found in `tracker dns` by port).
#[derive(Clone, Debug)]
struct Ask {
    phone: Phone,
    server: IpAddr,
    name: String,
    qtype: QType,
    tcp: bool,
    port: u16,
}

impl Ask {
    fn new(phone: Phone, server: IpAddr, name: &str, qtype: QType, tcp: bool) -> Self {
        Self { phone, server, name: name.to_owned(), qtype, tcp, port: next_port() }
    }

    /// The phone's own question of the family of `server`: A to an IPv4 resolver, AAAA to an
    /// IPv6 one (both questions cross the tunnel either way; this varies the types asked).
    fn udp(server: IpAddr, name: &str) -> Self {
        let qtype = if server.is_ipv6() { QType::Aaaa } else { QType::A };
        Self::new(Phone::One, server, name, qtype, false)
    }

    fn client(&self) -> IpAddr {
        self.phone.addr(self.server.is_ipv6())
    }

    fn logged_name(&self) -> String {
        self.name.trim_end_matches('.').to_ascii_lowercase()
    }

    fn transport(&self) -> &'static str {
        if self.tcp { "tcp" } else { "udp" }
    }

    fn zone(&self) -> zone::Resolution {
        zone::resolve(&self.name, self.qtype)
    }
}

/// What dig got.
#[derive(Debug)]
struct Dug {
    /// The response's RCODE; `None`: no response (a reset, a timeout).
    status: Option<String>,
    /// The header's AUTHORITY count.
    authority: Option<u64>,
    /// (name, type, ttl, data) of the answer section.
    answers: Vec<(String, String, u64, String)>,
    /// dig's "Query time".
    query_ms: Option<u64>,
    /// The whole run of dig, from the test's side.
    wall: Duration,
    exit: Option<i32>,
    output: String,
}

/// Asks `a` with dig in its phone's namespace: one try (`+tries=1`), at most [`DIG_TIME_S`].
fn ask(lab: &Lab, a: &Ask) -> Result<Dug> {
    let mut c = lab.cmd(a.phone.ns(), "dig");
    c.args(["+tries=1", "+noall", "+comments", "+answer", "+stats"])
        .arg(format!("+time={DIG_TIME_S}"))
        .arg("-b")
        .arg(format!("{}#{}", a.client(), a.port))
        .arg(format!("@{}", a.server));
    if a.tcp {
        c.arg("+tcp");
    }
    c.args([a.name.as_str(), a.qtype.as_str()]);
    let ran = run_bounded(c, Duration::from_secs(u64::from(DIG_TIME_S) + 10))?;
    ensure!(ran.status.is_some(), "dig {a:?} did not end: {}", ran.describe());
    let out = format!("{}{}", ran.stdout, ran.stderr);
    let field = |key: &str| -> Option<String> {
        out.lines()
            .find_map(|l| l.split_once(key))
            .and_then(|(_, rest)| rest.split([',', ' ']).next())
            .map(str::to_owned)
    };
    let answers = ran
        .stdout
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5).then(|| {
                let data = f[4].trim_end_matches('.');
                let data = data.parse::<IpAddr>().map_or_else(|_| data.to_owned(), |ip| ip.to_string());
                (
                    f[0].trim_end_matches('.').to_ascii_lowercase(),
                    f[3].to_owned(),
                    f[1].parse().unwrap_or(u64::MAX),
                    data,
                )
            })
        })
        .collect();
    Ok(Dug {
        status: field("status: "),
        authority: field("AUTHORITY: ").and_then(|s| s.parse().ok()),
        answers,
        query_ms: field("Query time: ").and_then(|s| s.parse().ok()),
        wall: ran.elapsed,
        exit: ran.status.and_then(|s| s.code()),
        output: out,
    })
}

/// The zone's answer section for `a`, as [`Dug::answers`] holds it.
fn zone_answers(a: &Ask) -> Vec<(String, String, u64, String)> {
    a.zone().answers.iter().map(|x| (x.name.clone(), x.rtype.to_owned(), u64::from(x.ttl), x.data.clone())).collect()
}

/// Asks `a` and checks it got exactly the zone's answer (the status, and the records for
/// NOERROR).
fn assert_resolves(lab: &Lab, a: &Ask) -> Result<Dug> {
    let d = ask(lab, a)?;
    let want = a.zone();
    assert_eq!(d.status.as_deref(), Some(want.rcode), "{a:?} should get the zone's {}: {d:#?}", want.rcode);
    assert_eq!(d.answers, zone_answers(a), "{a:?}: the zone's records: {d:#?}");
    Ok(d)
}

/// Asks `a` (UDP) and checks the kernel refused it: NXDOMAIN with no records and no SOA, in well
/// under a second, for a name the zone resolves.
fn assert_refused(lab: &Lab, a: &Ask) -> Result<Dug> {
    assert_eq!(a.zone().rcode, "NOERROR", "the test's mistake: {a:?} must be a name the zone resolves");
    let d = ask(lab, a)?;
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{a:?} should be refused: {d:#?}");
    assert!(d.answers.is_empty(), "{a:?}: a refusal has no records: {d:#?}");
    assert_eq!(d.authority, Some(0), "{a:?}: the kernel's NXDOMAIN has no SOA (a resolver's has one): {d:#?}");
    let ms = d.query_ms.with_context(|| format!("dig printed no query time: {d:#?}"))?;
    assert!(ms <= REFUSED_QUERY_MS, "{a:?} refused after {ms} ms (dig), not at once: {d:#?}");
    assert!(d.wall <= REFUSED_WALL, "{a:?}: dig ran {:?} for a refused name: {d:#?}", d.wall);
    Ok(d)
}

/// Asks `a` over TCP and checks the kernel reset it: no response, dig says the connection was
/// reset, in well under a second.
fn assert_reset(lab: &Lab, a: &Ask) -> Result<Dug> {
    assert!(a.tcp);
    assert_eq!(a.zone().rcode, "NOERROR", "the test's mistake: {a:?} must be a name the zone resolves");
    let d = ask(lab, a)?;
    assert_eq!(d.status, None, "{a:?} over TCP should get no response, but a reset: {d:#?}");
    assert_ne!(d.exit, Some(0), "{a:?}: dig fails without a response: {d:#?}");
    assert!(d.output.to_ascii_lowercase().contains("reset"), "{a:?}: dig should see a reset: {d:#?}");
    assert!(d.wall <= REFUSED_WALL, "{a:?}: dig ran {:?} for a reset: {d:#?}", d.wall);
    Ok(d)
}

/// The query times of a few answers the resolver gave, for the reader beside the kernel's.
fn print_times(what: &str, dug: &[Dug]) {
    let ms: Vec<String> = dug.iter().map(|d| format!("{}", d.query_ms.unwrap_or(u64::MAX))).collect();
    let wall: Vec<String> = dug.iter().map(|d| format!("{}", d.wall.as_millis())).collect();
    eprintln!("{what}: dig query time [{}] ms, dig's whole run [{}] ms", ms.join(" "), wall.join(" "));
}

/// curl by name from the phone, resolving through `resolver` (glibc): `-4` asks one A question
/// (`-6` asks both A and AAAA).
fn curl_by_name(lab: &Lab, resolver: IpAddr, v6: bool, name: &str) -> Result<Ran> {
    let mut c = lab.phone_cmd_resolving(resolver, "curl")?;
    c.args([if v6 { "-6" } else { "-4" }, "-sS", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_code}"])
        .arg(format!("http://{name}/{SMALL_TXT}"));
    run_bounded(c, Duration::from_secs(20))
}

/// curl's exit status for "could not resolve host".
const CURL_COULDNT_RESOLVE: i32 = 6;

/// `tracker ARGS`, which must succeed, with its output (stdout and stderr) and time.
fn cli(t: &Tracker, args: &[&str]) -> Result<Ran> {
    let ran = run_cli(tracker_with(&t.db, &t.pins, args))?;
    ensure!(ran.exited_ok(), "tracker {args:?}: {}", ran.describe());
    Ok(ran)
}

/// `tracker blocks [--expired]` as JSON.
fn blocks(t: &Tracker, expired: bool) -> Result<Vec<Value>> {
    let args: &[&str] = if expired { &["blocks", "--expired"] } else { &["blocks"] };
    let v = t.try_json(args)?;
    Ok(v.as_array().context("tracker blocks prints an array")?.clone())
}

/// The one row of `rows` with this kind and rule.
fn row_of<'a>(rows: &'a [Value], kind: &str, rule: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = rows.iter().filter(|r| r["kind"] == kind && r["rule"] == rule).collect();
    ensure!(found.len() == 1, "expected one {kind} rule {rule} in tracker blocks, found {}: {rows:#?}", found.len());
    Ok(found[0])
}

fn hits(row: &Value) -> u64 {
    row["hits"].as_u64().unwrap_or(u64::MAX)
}

/// Waits until the rule's `hits` reach `want` (the kernel counts at once; the listing may lag
/// by a sweep), then checks they are exactly `want`.
fn assert_hits(t: &Tracker, kind: &str, rule: &str, want: u64) -> Result<()> {
    let reached = t.wait_for(WAIT, |t| {
        blocks(t, true).ok().and_then(|rows| row_of(&rows, kind, rule).ok().map(hits)).is_some_and(|h| h >= want)
    });
    let rows = blocks(t, true)?;
    let row = row_of(&rows, kind, rule)?;
    assert!(reached, "{kind} {rule}: hits never reached {want} within {WAIT:?}: {row:#}");
    assert_eq!(hits(row), want, "{kind} {rule}: hits should be exactly the {want} queries refused: {row:#}");
    Ok(())
}

/// The `tracker dns` entries of exchange `a`.
fn entries_of<'a>(log: &'a [Value], a: &Ask) -> Vec<&'a Value> {
    log.iter()
        .filter(|e| {
            ip_eq(&e["client"], a.client())
                && e["client_port"] == a.port
                && e["transport"] == a.transport()
                && e["name"] == a.logged_name().as_str()
                && e["type"] == a.qtype.as_str()
        })
        .collect()
}

fn refused_entries(log: &[Value]) -> Vec<&Value> {
    log.iter().filter(|e| !e["blocked_by"].is_null()).collect()
}

/// Whether a DNS log entry's `blocked_by` names rule `row` of `tracker blocks` (by its id).
fn blocked_by_is(e: &Value, row: &Value) -> bool {
    row["id"].is_u64() && e["blocked_by"] == row["id"]
}

/// Waits until `tracker dns` has an entry for every exchange of `refused` and `answered`, then
/// checks each: the refused ones once each, `blocked_by` naming `row`, the answered ones once
/// each, not refused; and that the log holds exactly `total_refused` refused queries.
fn assert_dns_log(t: &Tracker, row: &Value, refused: &[Ask], answered: &[Ask], total_refused: usize) -> Result<()> {
    let complete = |log: &[Value]| {
        refused.iter().chain(answered).all(|a| !entries_of(log, a).is_empty())
            && refused_entries(log).len() >= total_refused
    };
    let ok = t.wait_for(WAIT, |t| complete(&t.dns(&[])));
    let log = t.dns(&[]);
    assert!(ok, "not every exchange reached tracker dns within {WAIT:?}:\n{log:#?}\n{}", t.log_tail());
    for a in refused {
        let e = entries_of(&log, a);
        assert_eq!(e.len(), 1, "one logged exchange for refused {a:?}: {e:#?}");
        assert!(blocked_by_is(e[0], row), "{a:?}: blocked_by should name rule {}: {:#}", row["id"], e[0]);
        // NXDOMAIN over UDP; over TCP the reset is no DNS response at all.
        let rcode = if a.tcp { Value::Null } else { Value::from("NXDOMAIN") };
        assert_eq!(e[0]["rcode"], rcode, "{a:?}: {:#}", e[0]);
        assert_eq!(e[0]["answers"], serde_json::json!([]), "{a:?}: {:#}", e[0]);
        assert!(ip_eq(&e[0]["resolver"], a.server), "{a:?}: {:#}", e[0]);
    }
    for a in answered {
        let e = entries_of(&log, a);
        assert_eq!(e.len(), 1, "one logged exchange for {a:?}: {e:#?}");
        assert!(e[0]["blocked_by"].is_null(), "{a:?} was answered by the resolver, not refused: {:#}", e[0]);
        assert_eq!(e[0]["rcode"], a.zone().rcode, "{a:?}: {:#}", e[0]);
    }
    let all = refused_entries(&log);
    assert_eq!(all.len(), total_refused, "refused queries in tracker dns: {all:#?}");
    assert!(all.iter().all(|e| blocked_by_is(e, row)), "every refusal names rule {}: {all:#?}", row["id"]);
    Ok(())
}

/// The names the lab's resolvers answer for that a test can ask: every owner of the zone and of
/// the real world (the CNAME chains' inner names too), and the real world's registrable domains
/// (each an apex with no records of its own), each once.
fn zone_names() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let owners = zone::names().into_iter().chain(zone::world().into_iter().map(|r| r.name)).chain(zone::WORLD_DOMAINS);
    for n in owners {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_owned());
        }
    }
    out
}

/// Whether `name` is `domain` or under it, at a label boundary.
fn under(name: &str, domain: &str) -> bool {
    name == domain || name.ends_with(&format!(".{domain}"))
}

/// A block-domain rule makes the phone's queries for the name and the names under it get
/// NXDOMAIN from the kernel at once, whichever resolver and family, while siblings and
/// lookalikes get the zone's answers; curl to the name fails at once; `tracker dns` names the
/// rule on each refusal; `tracker blocks` counts exactly the refusals.
#[test]
fn block_domain_refuses_the_name_and_names_under_it_at_once() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tb1")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let rule = zone::world_domain_of(zone::WWW_APPLE).context("www.apple.com is in a world domain")?;
    // The rule itself, a name under it, and a name two labels under it (the head of a CNAME
    // chain that leaves the rule's domain, which the question's name alone decides).
    let blocked: Vec<String> = zone_names().into_iter().filter(|n| under(n, rule)).collect();
    assert!(blocked.len() >= 3, "the zone has {rule} and names under it: {blocked:?}");
    // Siblings: other names of the zone and the world, none under the rule, none whose chain
    // leads into it. Lookalikes: the rule inside a longer name (the CDN's names for Apple's
    // images), and as a suffix that is not a label boundary (refused by the resolvers: no such
    // domain, not the kernel's NXDOMAIN).
    let siblings = [zone::ICLOUD_GATEWAY, zone::AKAMAI_CHAIN[2], zone::CHAIN[0], zone::WEB_NAME];
    let lookalikes = [zone::AKAMAI_CHAIN[1].to_owned(), format!("www.evil{rule}")];
    for l in &lookalikes {
        assert!(l.contains(rule) && !under(l, rule), "{l} is a lookalike of {rule}");
    }
    let servers: Vec<IpAddr> = Resolver::ALL.iter().flat_map(|r| [r.addr(false), r.addr(true)]).collect();

    // Before the rule: every name resolves as the zone says, and curl fetches by name.
    let mut before = Vec::new();
    for &s in &servers {
        for n in &blocked {
            before.push(assert_resolves(&lab, &Ask::udp(s, n))?);
        }
    }
    print_times("answered by the resolvers", &before);
    let ok = curl_by_name(&lab, Resolver::OnHost.addr(false), false, zone::WWW_APPLE)?;
    assert!(ok.exited_ok() && ok.stdout.trim() == "200", "curl before the block: {}", ok.describe());

    cli(&t, &["block-domain", rule])?;
    let mut refused = Vec::new();
    let mut dug = Vec::new();
    for &s in &servers {
        for n in &blocked {
            let a = Ask::udp(s, n);
            dug.push(assert_refused(&lab, &a)?);
            refused.push(a);
        }
    }
    // The question as sent in mixed case (0x20) is the same name.
    let mixed: String =
        zone::WWW_APPLE.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
    let a = Ask::udp(Resolver::Upstream.addr(false), &mixed);
    dug.push(assert_refused(&lab, &a)?);
    refused.push(a);
    print_times("refused by the kernel", &dug);

    let mut answered = Vec::new();
    for &s in &servers {
        for n in siblings.iter().map(|n| n.to_string()).chain(lookalikes.iter().cloned()) {
            let a = Ask::udp(s, &n);
            assert_resolves(&lab, &a)?;
            answered.push(a);
        }
    }

    // curl by name fails at once: the C library's one question (A: curl -4; with -6 glibc asks
    // A and AAAA) is refused, over either family.
    let mut curls = 0;
    for resolver in [Resolver::OnHost.addr(false), Resolver::Upstream.addr(true)] {
        let ran = curl_by_name(&lab, resolver, false, zone::WWW_APPLE)?;
        curls += 1;
        eprintln!("curl http://{}/ via {resolver}: {:?}", zone::WWW_APPLE, ran.elapsed);
        assert_eq!(
            ran.status.and_then(|s| s.code()),
            Some(CURL_COULDNT_RESOLVE),
            "curl to the blocked name should fail to resolve: {}",
            ran.describe()
        );
        assert!(ran.elapsed <= Duration::from_secs(1), "curl failed after {:?}, not at once", ran.elapsed);
    }

    let total = refused.len() + curls;
    let rows = blocks(&t, false)?;
    let row = row_of(&rows, "domain", rule)?.clone();
    assert_eq!(row["device"], "all", "{row:#}");
    assert!(row["expires"].is_null(), "{row:#}");
    assert_dns_log(&t, &row, &refused, &answered, total)?;
    assert_hits(&t, "domain", rule, total as u64)?;
    assert!(t.daemon_running(), "the daemon died:\n{}", t.log_tail());
    t.stop()?;
    Ok(())
}

/// DNS over TCP for a blocked name is reset by the kernel at once, on both resolvers and
/// families, and counted; TCP to a sibling name still gets the zone's answer.
#[test]
fn dns_over_tcp_for_a_blocked_name_is_reset_at_once() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tb2")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let rule = zone::world_domain_of(zone::BRAZE_SDK).context("braze")?;
    cli(&t, &["block-domain", rule])?;
    let mut refused = Vec::new();
    let mut answered = Vec::new();
    let mut dug = Vec::new();
    for r in Resolver::ALL {
        for v6 in [false, true] {
            let qtype = if v6 { QType::Aaaa } else { QType::A };
            let a = Ask::new(Phone::One, r.addr(v6), zone::BRAZE_SDK, qtype, true);
            dug.push(assert_reset(&lab, &a)?);
            refused.push(a);
            let b = Ask::new(Phone::One, r.addr(v6), zone::MPARTICLE_API, qtype, true);
            assert_resolves(&lab, &b)?;
            answered.push(b);
        }
    }
    let walls: Vec<u128> = dug.iter().map(|d| d.wall.as_millis()).collect();
    eprintln!("DNS over TCP reset: dig's whole run {walls:?} ms");
    let rows = blocks(&t, false)?;
    let row = row_of(&rows, "domain", rule)?.clone();
    assert_dns_log(&t, &row, &refused, &answered, refused.len())?;
    assert_hits(&t, "domain", rule, refused.len() as u64)?;
    t.stop()?;
    Ok(())
}

/// Starts `tracker run EXTRA` for `t`'s database and pins outside the harness's own daemon
/// (which takes no extra flags), and waits until it has attached.
fn start_own_daemon(lab: &Lab, t: &Tracker, extra: &[&str]) -> Result<tracker_tests::ChildGuard> {
    let mut c = daemon_cmd(lab, &t.db, &t.pins, extra);
    let log = std::fs::File::options().create(true).append(true).open(lab.names().dir.join("own-daemon.log"))?;
    c.stdout(log.try_clone()?).stderr(log);
    let mut d = lab.spawn(c)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        ensure!(d.is_running(), "tracker run {extra:?} exited early");
        let s = t.try_json(&["status"]).unwrap_or(Value::Null);
        if s["xdp_attached"] == true && attached_pid_is(&s, d.pid()) {
            return Ok(d);
        }
        ensure!(Instant::now() < deadline, "tracker run {extra:?} did not attach within 20 s: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kernel answers for blocked names with no daemon running: after a crash (the pinned links
/// keep the programs attached), after a clean stop with `--keep-attached`, and for a rule
/// added while no daemon runs. Whether a plain clean stop leaves them attached is printed, not
/// asserted: `tracker run` detaches on SIGTERM by design.
#[test]
fn the_kernel_refuses_with_the_daemon_down() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tb3")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let rule = zone::world_domain_of(zone::WWW_APPLE).context("apple")?;
    let later = zone::world_domain_of(zone::BRAZE_SDK).context("braze")?;
    cli(&t, &["block-domain", rule])?;
    let (s4, s6) = (Resolver::OnHost.addr(false), Resolver::Upstream.addr(true));
    let mut refused: BTreeMap<&str, u64> = BTreeMap::new();
    fn refuse(lab: &Lab, refused: &mut BTreeMap<&str, u64>, rule: &'static str, a: Ask) -> Result<()> {
        assert_refused(lab, &a)?;
        *refused.entry(rule).or_default() += 1;
        Ok(())
    }
    refuse(&lab, &mut refused, rule, Ask::udp(s4, zone::WWW_APPLE))?;

    // A crash: SIGKILL leaves the pinned links, so the programs stay attached.
    t.kill()?;
    assert!(xdp_prog_on_vpn(&lab)?.is_some(), "after a crash the XDP program should stay attached");
    for s in [s4, s6] {
        refuse(&lab, &mut refused, rule, Ask::udp(s, zone::WWW_APPLE))?;
        refuse(&lab, &mut refused, rule, Ask::udp(s, zone::AKAMAI_CHAIN[0]))?;
    }
    assert_resolves(&lab, &Ask::udp(s4, zone::BRAZE_SDK))?;
    // A rule added with no daemon: the CLI writes the pinned map itself.
    cli(&t, &["block-domain", later])?;
    for s in [s4, s6] {
        refuse(&lab, &mut refused, later, Ask::udp(s, zone::BRAZE_SDK))?;
    }
    assert_resolves(&lab, &Ask::udp(s4, zone::MPARTICLE_API))?;
    // The counts are the kernel's, readable with no daemon.
    assert_hits(&t, "domain", rule, refused[rule])?;
    assert_hits(&t, "domain", later, refused[later])?;

    // A clean stop that leaves the programs attached.
    let own = start_own_daemon(&lab, &t, &["--keep-attached", "--log", "debug"])?;
    refuse(&lab, &mut refused, rule, Ask::udp(s6, zone::WWW_APPLE))?;
    let status = own.stop()?;
    ensure!(status.success(), "tracker run --keep-attached exited with {status}");
    assert!(xdp_prog_on_vpn(&lab)?.is_some(), "--keep-attached: the XDP program should stay attached");
    refuse(&lab, &mut refused, rule, Ask::udp(s4, zone::WWW_APPLE))?;
    refuse(&lab, &mut refused, later, Ask::udp(s6, zone::BRAZE_SDK))?;
    assert_hits(&t, "domain", rule, refused[rule])?;
    assert_hits(&t, "domain", later, refused[later])?;

    // The harness's clean stop (SIGTERM): say what it leaves.
    t.start(&lab)?;
    refuse(&lab, &mut refused, rule, Ask::udp(s4, zone::WWW_APPLE))?;
    t.stop()?;
    let attached = xdp_prog_on_vpn(&lab)?;
    let after = ask(&lab, &Ask::udp(s4, zone::WWW_APPLE))?;
    eprintln!(
        "FINDING: after Tracker::stop (SIGTERM, no --keep-attached) the XDP program on the VPN interface is {attached:?}; \
         a query for blocked {} then got {:?} (the zone says {})",
        zone::WWW_APPLE,
        after.status,
        zone::resolve(zone::WWW_APPLE, QType::A).rcode
    );
    Ok(())
}

/// unblock-domain: the name resolves again at the very next query, on every resolver; the rule
/// leaves `tracker blocks` and stays in `--expired` as unblocked, with its hits.
#[test]
fn unblock_domain_resolves_again_at_once() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tb4")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let rule = zone::world_domain_of(zone::MPARTICLE_API).context("mparticle")?;
    cli(&t, &["block-domain", rule])?;
    let servers: Vec<IpAddr> = Resolver::ALL.iter().flat_map(|r| [r.addr(false), r.addr(true)]).collect();
    for &s in &servers {
        assert_refused(&lab, &Ask::udp(s, zone::MPARTICLE_API))?;
    }
    cli(&t, &["unblock-domain", rule])?;
    let unblocked_at = Instant::now();
    for &s in &servers {
        assert_resolves(&lab, &Ask::udp(s, zone::MPARTICLE_API))?;
        assert_resolves(&lab, &Ask::udp(s, rule))?;
    }
    eprintln!("resolving again {:?} after unblock-domain returned", unblocked_at.elapsed());
    let active = blocks(&t, false)?;
    assert!(active.iter().all(|r| r["rule"] != rule), "unblocked rule still listed: {active:#?}");
    let history = blocks(&t, true)?;
    let row = row_of(&history, "domain", rule)?;
    assert_eq!(row["end_reason"], "unblocked", "{row:#}");
    assert!(row["ended"].is_string(), "{row:#}");
    // What the rule refused stays its record once it ended.
    assert_hits(&t, "domain", rule, servers.len() as u64).context("hits kept after unblocking")?;
    // Unblocking what is not blocked (any more) is an error, not a silent success.
    let again = run_cli(tracker_with(&t.db, &t.pins, &["unblock-domain", rule]))?;
    assert!(again.exited_nonzero(), "unblock-domain of a rule already removed: {}", again.describe());
    t.stop()?;
    Ok(())
}

/// --client: a rule for the phone refuses the phone's queries (from both of its tunnel
/// addresses: one device) and leaves the second phone resolving; a rule for every device
/// refuses both.
#[test]
fn a_block_for_one_device_leaves_the_other_alone() -> Result<()> {
    let Some((_serial, mut lab, mut t)) = crate::common::lab_with_tracker("tb5")? else {
        return Ok(());
    };
    lab.add_second_phone()?;
    t.start(&lab)?;
    let mine = zone::world_domain_of(zone::BRAZE_SDK).context("braze")?;
    let everyone = zone::world_domain_of(zone::TWITTER_API).context("twitter")?;
    cli(&t, &["block-domain", mine, "--client", &PHONE_V4.to_string()])?;
    cli(&t, &["block-domain", everyone])?;
    let rows = blocks(&t, false)?;
    let row = row_of(&rows, "domain", mine)?;
    assert_ne!(row["device"], "all", "a --client rule holds for one device: {row:#}");
    assert_eq!(row_of(&rows, "domain", everyone)?["device"], "all");

    let (mut phone_refused, mut everyone_refused) = (0, 0);
    for r in Resolver::ALL {
        for v6 in [false, true] {
            let s = r.addr(v6);
            let qtype = if v6 { QType::Aaaa } else { QType::A };
            assert_refused(&lab, &Ask::new(Phone::One, s, zone::BRAZE_SDK, qtype, false))?;
            phone_refused += 1;
            assert_resolves(&lab, &Ask::new(Phone::Two, s, zone::BRAZE_SDK, qtype, false))?;
            for phone in [Phone::One, Phone::Two] {
                assert_refused(&lab, &Ask::new(phone, s, zone::TWITTER_API, qtype, false))?;
                everyone_refused += 1;
            }
        }
    }
    assert_hits(&t, "domain", mine, phone_refused)?;
    assert_hits(&t, "domain", everyone, everyone_refused)?;
    // The second phone's refusals are logged as its own.
    let ok = t.wait_for(WAIT, |t| {
        t.dns(&[]).iter().filter(|e| !e["blocked_by"].is_null()).count() as u64 >= phone_refused + everyone_refused
    });
    let log = t.dns(&[]);
    assert!(ok, "refusals missing from tracker dns: {log:#?}");
    let phone2 = [IpAddr::V4(PHONE2_V4), IpAddr::V6(PHONE2_V6)];
    let by_phone2: Vec<&Value> =
        refused_entries(&log).into_iter().filter(|e| phone2.iter().any(|p| ip_eq(&e["client"], *p))).collect();
    assert_eq!(by_phone2.len() as u64, everyone_refused / 2, "phone2's refusals: {by_phone2:#?}");
    assert!(by_phone2.iter().all(|e| e["name"] == zone::TWITTER_API), "{by_phone2:#?}");
    t.stop()?;
    Ok(())
}

/// Asks every name in `names` (A, on-host resolver over IPv4) and checks those under one of
/// `domains` are refused and the others get the zone's answers; returns how many were refused.
/// Names whose CNAME chain leads into `domains` are left out: that the kernel refuses by the
/// question's name alone is what this checks.
fn assert_covers(lab: &Lab, names: &[String], domains: &[String], what: &str) -> Result<u64> {
    let server = Resolver::OnHost.addr(false);
    let mut refused = 0;
    let mut covered = Vec::new();
    for n in names {
        let a = Ask::udp(server, n);
        if domains.iter().any(|d| under(n, d)) {
            assert_refused(lab, &a).with_context(|| what.to_owned())?;
            refused += 1;
            covered.push(n.as_str());
        } else if a.zone().cname_chain.iter().any(|c| domains.iter().any(|d| under(c, d))) {
            continue;
        } else {
            let d = ask(lab, &a)?;
            assert_eq!(d.status.as_deref(), Some(a.zone().rcode), "{what}: {n} is not covered: {d:#?}");
            assert_eq!(d.answers, zone_answers(&a), "{what}: {n}: {d:#?}");
        }
    }
    eprintln!("{what}: refused {covered:?}");
    Ok(refused)
}

/// block-company and block-service: every name the lab serves under the company's (service's)
/// domains in the entity table tracker ships is refused, every other name answered; each
/// company and service with a name in the lab, one at a time, unblocked before the next.
/// `tracker blocks` shows the rule's origin and how many domains it covers.
#[test]
fn block_company_and_block_service_cover_all_their_domains() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tb6")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let table = EntityTable::builtin();
    let names = zone_names();
    let serves = |domains: &[String]| names.iter().any(|n| domains.iter().any(|d| under(n, d)));
    // CDN and cloud companies are left out: names CNAME into them (images.apple.com into
    // Akamai), and what a block of a CDN does to those (addresses learnt from answers) is not
    // a matter of the question's name.
    // A company's rule covers its own domains and its services' (`tracker block-company --help`).
    let company_domains = |name: &str| -> Vec<String> {
        let c = table.companies().iter().find(|c| c.name == name).expect("a company of the table");
        let own = c.domains.iter().cloned();
        let services = table.services().iter().filter(|s| s.company == name).flat_map(|s| s.domains.iter().cloned());
        own.chain(services).collect::<BTreeSet<String>>().into_iter().collect()
    };
    let companies: Vec<(String, Vec<String>)> = table
        .companies()
        .iter()
        .filter(|c| !c.category.serves_others())
        .map(|c| (c.name.clone(), company_domains(&c.name)))
        .filter(|(_, domains)| serves(domains))
        .collect();
    let services: Vec<(String, Vec<String>)> =
        table.services().iter().filter(|s| serves(&s.domains)).map(|s| (s.name.clone(), s.domains.clone())).collect();
    assert!(companies.len() >= 3 && services.len() >= 3, "companies {companies:?} services {services:?}");
    for (kind, entries) in [("company", &companies), ("service", &services)] {
        for (name, domains) in entries {
            cli(&t, &[&format!("block-{kind}"), name])?;
            let what = format!("block-{kind} {name}");
            let refused = assert_covers(&lab, &names, domains, &what)?;
            assert!(refused > 0);
            let rows = blocks(&t, false)?;
            let row = row_of(&rows, kind, name)?;
            assert_eq!(row["domains"], domains.len() as u64, "{what}: domains covered: {row:#}");
            assert_eq!(row["origin"], format!("{kind} {name}"), "{what}: {row:#}");
            assert_hits(&t, kind, name, refused)?;
            cli(&t, &[&format!("unblock-{kind}"), name])?;
            assert_covers(&lab, &names, &[], &format!("after unblock-{kind} {name}"))?;
        }
    }
    // A name the table does not know is an error, and blocks nothing.
    let unknown = run_cli(tracker_with(&t.db, &t.pins, &["block-company", "No Such Company Inc"]))?;
    assert!(unknown.exited_nonzero(), "block-company of an unknown company: {}", unknown.describe());
    assert!(blocks(&t, false)?.is_empty(), "{:#?}", blocks(&t, false)?);
    t.stop()?;
    Ok(())
}

/// A generated hosts-format block list: what it holds, line by line.
struct Blocklist {
    text: String,
    /// Distinct names it blocks, lower case.
    names: BTreeSet<String>,
    /// 1-based numbers of its malformed lines.
    malformed: Vec<usize>,
    lines: usize,
}

/// `lines` lines: hosts lines (`0.0.0.0 NAME`, `127.0.0.1 NAME`, `:: NAME`, two names on one
/// line, a trailing comment), plain names, mixed case, comments, blank lines, duplicates of
/// earlier names, a few malformed lines, and `must` (names the test asks for) among them.
fn generate_blocklist(lines: usize, must: &[&str]) -> Blocklist {
    let mut rng = tracker_tests::rng::Rng::new(0x12_b10c, 0, 0);
    let mut text = String::with_capacity(lines * 32);
    let mut names = BTreeSet::new();
    let mut malformed = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let bad = [
        "0.0.0.0".to_owned(),
        "bad..double-dot.list.test".to_owned(),
        "http://url.list.test/path".to_owned(),
        format!("0.0.0.0 {}.list.test", "a".repeat(64)),
        "0.0.0.0 bang!.list.test".to_owned(),
    ];
    let every = lines / (bad.len() + 1);
    for i in 1..=lines {
        let line = if i % every == 0 && i / every <= bad.len() {
            malformed.push(i);
            bad[i / every - 1].clone()
        } else if let Some(m) = must.get(i.wrapping_sub(lines / 2)) {
            names.insert((*m).to_owned());
            format!("0.0.0.0 {m}")
        } else {
            match i % 20 {
                0 => format!("# comment {i}"),
                1 => String::new(),
                2 if !order.is_empty() => {
                    let n = order[rng.below(order.len() as u64) as usize].clone();
                    format!("0.0.0.0 {n}")
                }
                3 if !order.is_empty() => order[rng.below(order.len() as u64) as usize].clone(),
                4 => {
                    let (a, b) = (format!("a{i}.ads.list.test"), format!("b{i}.ads.list.test"));
                    names.insert(a.clone());
                    names.insert(b.clone());
                    order.push(a.clone());
                    format!("0.0.0.0 {a} {b} # two names")
                }
                5 => {
                    let n = format!("mixed{i}.list.test");
                    names.insert(n.clone());
                    order.push(n.clone());
                    n.to_ascii_uppercase()
                }
                6..=8 => {
                    let n = format!("plain{i}.list.test");
                    names.insert(n.clone());
                    order.push(n.clone());
                    n
                }
                9 => {
                    let n = format!("t{i}.track.list.test");
                    names.insert(n.clone());
                    order.push(n.clone());
                    format!("127.0.0.1\t{n}")
                }
                10 => {
                    let n = format!("v6-{i}.list.test");
                    names.insert(n.clone());
                    order.push(n.clone());
                    format!(":: {n}")
                }
                _ => {
                    let n = format!("ads{i}.list.test");
                    names.insert(n.clone());
                    order.push(n.clone());
                    format!("0.0.0.0 {n}")
                }
            }
        };
        text.push_str(&line);
        text.push('\n');
    }
    Blocklist { text, names, malformed, lines }
}

/// import-blocklist of a generated 100,000-line hosts file: loads (timed), reports every
/// malformed line by number, refuses a query for one of its names while other names resolve,
/// and unblock-list removes it whole.
#[test]
fn import_blocklist_of_100k_lines_refuses_its_names() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tb7")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let listed = [zone::BRAZE_SDK, zone::WWW_NETFLIX];
    let list = generate_blocklist(100_000, &listed);
    assert_eq!(list.lines, 100_000);
    let file = lab.names().dir.join("blocklist.hosts");
    std::fs::write(&file, &list.text)?;
    let file = file.display().to_string();
    let name = "generated-list";
    let ran = run_bounded(tracker_with(&t.db, &t.pins, &["import-blocklist", &file, "--name", name]), CLI_LIMIT * 3)?;
    eprintln!(
        "import-blocklist: {} lines, {} distinct names, {} malformed, loaded in {:?}",
        list.lines,
        list.names.len(),
        list.malformed.len(),
        ran.elapsed
    );
    ensure!(ran.status.is_some(), "import-blocklist did not end: {}", ran.describe());
    let said = format!("{}\n{}", ran.stdout, ran.stderr);
    for n in &list.malformed {
        assert!(
            said.lines().any(|l| l.split(|c: char| !c.is_ascii_digit()).any(|w| w == n.to_string())),
            "import-blocklist should report malformed line {n}: {}",
            ran.describe()
        );
    }
    let rows = blocks(&t, false)?;
    let row = row_of(&rows, "list", name)?;
    assert_eq!(row["domains"], list.names.len() as u64, "the list's distinct names: {row:#}");

    let server = Resolver::Upstream.addr(false);
    let mut refused = 0;
    for n in listed {
        assert_refused(&lab, &Ask::udp(server, n))?;
        assert_refused(&lab, &Ask::udp(Resolver::OnHost.addr(true), n))?;
        refused += 2;
    }
    for n in [zone::MPARTICLE_API, zone::WWW_APPLE, zone::WEB_NAME] {
        assert_resolves(&lab, &Ask::udp(server, n))?;
    }
    assert_hits(&t, "list", name, refused)?;
    cli(&t, &["unblock-list", name])?;
    for n in listed {
        assert_resolves(&lab, &Ask::udp(server, n))?;
    }
    assert!(blocks(&t, false)?.iter().all(|r| r["rule"] != name), "the list is gone from tracker blocks");
    t.stop()?;
    Ok(())
}

/// Polls `a` every 100 ms until it resolves (at most `limit`); every answer before must be the
/// kernel's refusal. Returns when the query that resolved was sent, and how many were refused.
fn poll_until_resolved(lab: &Lab, a: &Ask, limit: Duration) -> Result<(Instant, u64)> {
    let start = Instant::now();
    let mut refused = 0;
    loop {
        let asked = Instant::now();
        let d = ask(lab, a)?;
        match d.status.as_deref() {
            Some("NXDOMAIN") if d.authority == Some(0) && d.answers.is_empty() => refused += 1,
            Some(s) if s == a.zone().rcode => {
                assert_eq!(d.answers, zone_answers(a), "{a:?}: {d:#?}");
                return Ok((asked, refused));
            }
            _ => bail!("{a:?}: neither refused nor the zone's answer: {d:#?}"),
        }
        ensure!(start.elapsed() < limit, "{a:?} still refused after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How late a timed block may be seen to end: one poll's sleep and dig, on a busy machine.
const EXPIRY_SLACK: Duration = Duration::from_millis(1000);
/// How early: the kernel's coarse clock and the CLI's own rounding.
const EXPIRY_EARLY: Duration = Duration::from_millis(100);

/// --for: a timed block refuses until it expires and the name resolves right after, with the
/// daemon running, when the daemon was restarted during the block, and when it was down at the
/// expiry; `tracker blocks --expired` then shows each as expired, with its hits.
#[test]
fn a_timed_block_ends_on_time_also_across_restarts() -> Result<()> {
    let Some((_serial, lab, mut t)) = crate::common::lab_with_tracker("tb8")? else {
        return Ok(());
    };
    t.start(&lab)?;
    let server = Resolver::OnHost.addr(false);
    let cases = [
        ("running", zone::world_domain_of(zone::BRAZE_SDK).unwrap(), zone::BRAZE_SDK, 3u64),
        ("restarted", zone::world_domain_of(zone::MPARTICLE_API).unwrap(), zone::MPARTICLE_API, 8),
        ("down at expiry", zone::world_domain_of(zone::TWITTER_API).unwrap(), zone::TWITTER_API, 4),
    ];
    let mut hit_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (how, rule, name, secs) in cases {
        let a = Ask::udp(server, name);
        assert_resolves(&lab, &a)?;
        let issued = Instant::now();
        cli(&t, &["block-domain", rule, "--for", &format!("{secs}s")])?;
        let returned = Instant::now();
        let window = Duration::from_secs(secs);
        let rows = blocks(&t, false)?;
        let row = row_of(&rows, "domain", rule)?;
        assert!(row["expires"].is_string() && row["ended"].is_null(), "{how}: {row:#}");
        assert_refused(&lab, &a)?;
        let mut refused = 1;
        match how {
            "restarted" => {
                t.stop()?;
                t.start(&lab)?;
                ensure!(
                    returned.elapsed() + Duration::from_millis(500) < window,
                    "{how}: the restart took too long to test"
                );
                assert_refused(&lab, &a).context("refused after the daemon restarted within the block")?;
                refused += 1;
            }
            "down at expiry" => t.kill()?,
            _ => {}
        }
        let (resolved, polled) = poll_until_resolved(&lab, &a, window + Duration::from_secs(10))?;
        refused += polled;
        let ended_after = resolved.duration_since(issued);
        eprintln!("--for {secs}s ({how}): resolved again {ended_after:?} after block-domain was issued");
        // The rule was made between `issued` and `returned`: it ends no earlier than `issued` +
        // the window (a little slack for the kernel's coarse clock) and no later than `returned`
        // + the window, which one poll later sees.
        assert!(ended_after + EXPIRY_EARLY >= window, "{how}: resolved {ended_after:?} into a block of {window:?}");
        assert!(
            resolved.duration_since(returned) <= window + EXPIRY_SLACK,
            "{how}: still refused {ended_after:?} after a block of {window:?} was issued"
        );
        if how == "down at expiry" {
            t.start(&lab)?;
            assert_resolves(&lab, &a).context("a rule that expired while the daemon was down came back")?;
        }
        hit_counts.insert(rule, refused);
    }
    let active = blocks(&t, false)?;
    assert!(active.is_empty(), "every timed rule ended: {active:#?}");
    let history = blocks(&t, true)?;
    for (how, rule, _, _) in cases {
        let row = row_of(&history, "domain", rule)?;
        assert_eq!(row["end_reason"], "expired", "{how}: {row:#}");
        assert!(row["ended"].is_string() && row["time_left"].is_null(), "{how}: {row:#}");
        assert_eq!(hits(row), hit_counts[rule], "{how}: hits should be exactly the queries refused: {row:#}");
    }
    t.stop()?;
    Ok(())
}
