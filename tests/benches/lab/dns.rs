//! The lab benchmark's **dns** section: a DNS query for a blocked name, answered by tracker's
//! XDP program on the VPN host's `wg0`, beside the same query answered by the lab's resolver
//! (unbound on the VPN host, and the "public" resolver on the lab's internet, the answer in
//! their caches), all from the phone through the real WireGuard tunnel. Issue 12 asks for the kernel's answer to be far faster; the figures are
//! printed, nothing about timing is asserted. Each query's answer is checked: NOERROR with the
//! zone's address from the resolver, NXDOMAIN from the kernel, the question echoed.
//!
//! The rule goes straight into the daemon's pinned DOMAINS map and out again between phases,
//! so the two phases differ in that alone.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use tracker::{
    analysis::dns::{self, Transport},
    blocking::{KernelNames, name_key},
    kernel::PinDir,
};
use tracker_common::name::domain_hash;
use tracker_tests::{
    Lab, Ns,
    lab::{UPSTREAM_DNS_V4, VPN_TUN_V4},
    median,
};

use super::{Daemon, Pins};

/// The name asked in both phases: a plain A record of the lab zone.
const NAME: &str = "web.lab.test";
/// Queries per phase, and phases of each kind (alternating, resolver first).
const QUERIES: usize = 300;
const PHASES: usize = 3;
/// One query's answer must come within this; a lost one fails the section.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const RULE_ID: u32 = 1;

/// A query with id `id` for NAME, type A, RD set.
fn query(id: u16) -> Vec<u8> {
    tracker_tests::hostile_dns::query_for(id, NAME, 1)
}

/// QUERIES round trips from the phone to `server`; the median in µs. Every answer must have the
/// query's id and the rcode `want`.
fn round_trips(lab: &Lab, server: Ipv4Addr, want: &'static str) -> Result<f64> {
    lab.run_in(Ns::Phone, move || -> Result<f64> {
        let sock = UdpSocket::bind("10.77.0.2:0").context("binding in the phone namespace")?;
        sock.set_read_timeout(Some(QUERY_TIMEOUT))?;
        sock.connect(SocketAddr::from((server, 53)))?;
        let mut buf = [0u8; 1500];
        let mut rtts = Vec::with_capacity(QUERIES);
        for i in 0..QUERIES {
            let id = i as u16;
            let t = Instant::now();
            sock.send(&query(id))?;
            let n = sock.recv(&mut buf).with_context(|| format!("query {i} got no answer in {QUERY_TIMEOUT:?}"))?;
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
            let msg = dns::parse(&buf[..n], Transport::Udp)?;
            ensure!(msg.id == id && msg.is_response, "answer {i} is not the response to query {i}");
            ensure!(msg.rcode == want, "answer {i}: {}, expected {want}", msg.rcode);
            ensure!(msg.questions.first().is_some_and(|q| q.name == NAME), "answer {i} lost the question");
        }
        Ok(median(&rtts))
    })?
}

pub fn section(lab: &Lab) -> Result<()> {
    let dir = lab.names().dir.join("bench-dns");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pins = Pins::new("dns")?;
    let _daemon = Daemon::start(lab, &dir.join("tracker.db"), &pins.0, &dir.join("daemon.log"))?;
    let mut names = KernelNames::open_pinned(&PinDir(pins.0.clone()))?.context("the daemon pinned no DOMAINS map")?;
    let key = name_key(domain_hash(NAME).expect("a valid name"), None);
    let servers = [(VPN_TUN_V4, "unbound on the VPN host"), (UPSTREAM_DNS_V4, "the lab internet's resolver")];
    let mut rows = Vec::new();
    for (server, what) in servers {
        // Warms the resolver's cache and the flow, so its phases measure a cached answer.
        round_trips(lab, server, "NOERROR")?;
        let (mut resolver, mut kernel) = (Vec::new(), Vec::new());
        for _ in 0..PHASES {
            resolver.push(round_trips(lab, server, "NOERROR")?);
            names.insert(&key, RULE_ID, 0)?;
            let blocked = round_trips(lab, server, "NXDOMAIN");
            names.remove(&key)?;
            kernel.push(blocked?);
        }
        rows.push((server, what, resolver, kernel));
    }
    println!();
    println!(
        "DNS query for {NAME} from the phone through the tunnel: median round trip of {QUERIES} queries, \
         median of {PHASES} phases (µs):"
    );
    println!("| asked | answered by the resolver (cached) | answered by tracker's XDP program (NXDOMAIN) | ratio |");
    println!("|---|---:|---:|---:|");
    for (server, what, resolver, kernel) in &rows {
        let (r, k) = (median(resolver), median(kernel));
        println!("| {server} ({what}) | {r:.0} | {k:.0} | {:.2} |", k / r);
        eprintln!("phases: resolver {resolver:.0?}, kernel {kernel:.0?}");
    }
    Ok(())
}
