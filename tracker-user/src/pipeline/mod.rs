//! The pipeline between sources and sinks: [`pairing`] pairs DNS queries with their answers,
//! [`naming`] names flows from those answers (and from TLS and HTTP) and tells their protocol,
//! [`sweep`] turns a source's snapshots into the records a sink stores, labelled
//! ([`crate::analysis::labels`]) with company and service.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use tracker_common::{
    EventHeader,
    user::{DecodeError, Event},
};

use crate::{analysis::labels::Labeler, timefmt::KernelClock};

pub mod naming;
pub mod pairing;
pub mod sweep;

/// The naming stage: DNS pairing, whose answered exchanges teach the flow namer, and the
/// labels a named flow gets.
pub struct Namer {
    pub dns: pairing::DnsPairing,
    pub flows: naming::FlowNamer,
    pub labels: Labeler,
    /// What the devices were told and said, for the daemon to check against the name rules
    /// ([`Sighting`]); `None` (nothing kept) unless the daemon asks for them.
    pub sightings: Option<Vec<Sighting>>,
}

/// A name seen with addresses: what the daemon needs to block the addresses of a blocked name
/// that was answered anyway (the rule came later, another resolver, a CNAME to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// A DNS response a device received: the question and every name of its CNAME chain, and
    /// the addresses it would use with their TTLs.
    Answer { client: IpAddr, names: Vec<String>, addresses: Vec<(IpAddr, u32)> },
    /// A flow's TLS server name or HTTP Host.
    Spoke { client: IpAddr, remote: IpAddr, name: String },
}

impl Namer {
    /// `local_nets` are the VPN's own subnets; `grace` how long past its TTL an answer names
    /// new flows ([`naming::DEFAULT_GRACE`]).
    pub fn new(local_nets: Vec<IpNet>, grace: Duration) -> Self {
        Self {
            dns: pairing::DnsPairing::default(),
            flows: naming::FlowNamer::new(local_nets, grace),
            labels: Labeler::default(),
            sightings: None,
        }
    }

    /// Hands a source's event to the stage that wants it; `clock` converts its stamp.
    pub fn event(&mut self, ev: Result<Event<'_>, DecodeError>, clock: KernelClock) {
        match ev {
            Ok(Event::BlockHit(h)) => {
                tracing::info!(rule = h.rule_id, client = %h.key.client(), remote = %h.key.remote(), port = h.key.remote_port, "blocked");
            }
            Ok(Event::Dns(p)) => self.dns_message(&p.header, p.data, clock.to_time(p.header.ts_ns)),
            Ok(Event::DnsRefused(p)) => {
                let at = clock.to_time(p.header.ts_ns);
                tracing::debug!(rule = p.header.rule_id, client = %p.header.key.client(), "query refused");
                // Logged as answered by the kernel; nothing to learn (no addresses), but the
                // flow it came in is DNS.
                self.dns.refused(&p.header, p.data, at, p.header.rule_id);
                self.flows.dns_seen(&p.header.key, at);
            }
            Ok(Event::FirstPayload(p)) => {
                tracing::trace!(len = p.len, captured = p.data.len(), "first payload");
                let spoken = self.flows.first_payload(&p.header, p.data, clock.to_time(p.header.ts_ns));
                if let (Some(name), Some(out)) = (spoken, self.sightings.as_mut()) {
                    let (client, remote) = (p.header.key.client(), p.header.key.remote());
                    out.push(Sighting::Spoke { client, remote, name });
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// A DNS message crossed the interface: logged, and its answers learned by the device that
    /// asked.
    pub fn dns_message(&mut self, h: &EventHeader, data: &[u8], at: SystemTime) {
        let malformed = self.dns.stats().malformed;
        if let Some(r) = self.dns.message(h, data, at) {
            self.flows.learn(r.client, &r.qname, &r.answers, at);
            if let Some(out) = self.sightings.as_mut() {
                let found = crate::analysis::dns::addresses_for(&r.answers, &r.qname);
                if !found.is_empty() {
                    let mut names = vec![r.qname.clone()];
                    names.extend(crate::analysis::dns::cname_chain(&r.answers, &r.qname));
                    let addresses = found.iter().map(|(ip, ttl, _)| (*ip, *ttl)).collect();
                    out.push(Sighting::Answer { client: r.client, names, addresses });
                }
            }
        }
        if self.dns.stats().malformed == malformed {
            self.flows.dns_seen(&h.key, at);
        }
    }
}
