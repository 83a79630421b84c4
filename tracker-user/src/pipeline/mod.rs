//! The pipeline between sources and sinks: [`pairing`] pairs DNS queries with their answers,
//! [`naming`] names flows from those answers (and from TLS and HTTP) and tells their protocol,
//! [`sweep`] turns a source's snapshots into the records a sink stores, labelled
//! ([`crate::analysis::labels`]) with company and service.

use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tracker_common::EventHeader;

use crate::analysis::labels::Labeler;

pub mod naming;
pub mod pairing;
pub mod sweep;

/// The naming stage: DNS pairing, whose answered exchanges teach the flow namer, and the
/// labels a named flow gets.
pub struct Namer {
    pub dns: pairing::DnsPairing,
    pub flows: naming::FlowNamer,
    pub labels: Labeler,
}

impl Namer {
    /// `local_nets` are the VPN's own subnets; `grace` how long past its TTL an answer names
    /// new flows ([`naming::DEFAULT_GRACE`]).
    pub fn new(local_nets: Vec<IpNet>, grace: Duration) -> Self {
        Self {
            dns: pairing::DnsPairing::default(),
            flows: naming::FlowNamer::new(local_nets, grace),
            labels: Labeler::default(),
        }
    }

    /// A DNS message crossed the interface: logged, and its answers learned by the device that
    /// asked.
    pub fn dns_message(&mut self, h: &EventHeader, data: &[u8], at: SystemTime) {
        let malformed = self.dns.stats().malformed;
        if let Some(r) = self.dns.message(h, data, at) {
            self.flows.learn(r.client, &r.qname, &r.answers, at);
        }
        if self.dns.stats().malformed == malformed {
            self.flows.dns_seen(&h.key, at);
        }
    }
}
