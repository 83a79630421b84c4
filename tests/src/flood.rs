//! A paced UDP flood from the lab's phone: N new flows, one distinct 5-tuple each, at a chosen
//! rate, through the WireGuard tunnel. Owns the flow plan (which destination and port flow `i`
//! gets, so the expected set can be rebuilt from the plan alone), the pacing and the report of
//! what was actually sent. Used by `cargo xtask bench lab` (its flood section) and meant for
//! end-to-end tests that check tracker against exact arithmetic ([`compare`]).
//!
//! Flow `i` goes from one socket (the phone's address, one source port) to destination
//! `dsts[i % dsts.len()]`, port `first_port + i / dsts.len()`: walking the destinations first
//! spreads consecutive flows over the hosts. The lab's internet hosts answer UDP only on
//! [`UDP_ECHO_PORT`] and [`DNS_PORT`], so a port range that avoids both (checked) gets no reply
//! but the ICMP port-unreachable errors of the internet namespace (rate-limited by its kernel):
//! every flow is exactly `packets_per_flow` datagrams up and nothing down on UDP.
//!
//! Pacing is a token bucket on the monotonic clock, counted in flows: tokens accrue at `rate`
//! per second up to `burst`; a flow takes one token and sends its datagrams back to back. A
//! sender that falls behind (a descheduled vCPU) therefore catches up by at most `burst` flows
//! at once instead of bursting everything it missed, and the report says what rate it achieved.
//! The run is bounded in count (`flows`) and in time (`max_time`): past the deadline it stops
//! and reports the flows it sent (`complete == false`).

use crate::lab::{self, DNS_PORT, Lab, Ns, PHONE_V4, UDP_ECHO_PORT};
use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Default first destination port: above the well-known ports, below the lab's echo server and
/// the kernel's ephemeral range, so 100,000 flows over three hosts (33,334 ports) fit below
/// 65,536 without touching [`UDP_ECHO_PORT`] or [`DNS_PORT`].
pub const DEFAULT_FIRST_PORT: u16 = 10_000;
/// Default UDP payload: small, as a scan or a burst of new connections is; the first payload of
/// each flow still goes through tracker's event ring.
pub const DEFAULT_PAYLOAD: usize = 64;
/// The default bucket holds this much time's worth of flows: enough to absorb the wake-up
/// latency of a sleep (tens to hundreds of microseconds in a VM), small enough that a stall is
/// not followed by a flood far above the rate.
pub const DEFAULT_BURST_WINDOW: Duration = Duration::from_millis(5);
/// The default time bound is this many times the nominal duration, plus [`DEFAULT_SLACK`].
pub const DEFAULT_TIME_FACTOR: u32 = 2;
pub const DEFAULT_SLACK: Duration = Duration::from_secs(10);
/// A datagram refused for lack of buffer space (ENOBUFS, EAGAIN) is retried after this pause:
/// the datagram must go out, since the flow plan promises it.
const RETRY_PAUSE: Duration = Duration::from_micros(200);
/// The longest single sleep while waiting for a token, so the deadline is checked regularly.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// Bytes below UDP's payload: the UDP header and the IP header (no options, no extensions).
const UDP_HEADER: u64 = 8;
const IPV4_HEADER: u64 = 20;
const IPV6_HEADER: u64 = 40;

/// What to send. [`Flood::new`] fills in defaults; the fields are public to change any of them.
#[derive(Clone, Debug)]
pub struct Flood {
    /// Distinct flows (5-tuples) to create.
    pub flows: u32,
    /// New flows per second.
    pub rate: f64,
    /// Datagrams per flow, sent back to back.
    pub packets_per_flow: u32,
    /// UDP payload bytes of every datagram.
    pub payload: usize,
    /// Destination addresses, walked first (all of the source's family).
    pub dsts: Vec<IpAddr>,
    /// Destination port of the first flow to each destination.
    pub first_port: u16,
    /// Where the one socket binds in the phone namespace (port 0: the kernel picks one).
    pub src: SocketAddr,
    /// Token bucket capacity, in flows.
    pub burst: u32,
    /// The whole run stops after this long, sent or not.
    pub max_time: Duration,
}

impl Flood {
    /// `flows` flows at `rate` per second, one [`DEFAULT_PAYLOAD`]-byte datagram each, from the
    /// phone's IPv4 tunnel address to the lab's IPv4 internet hosts ([`lab::INTERNET_V4`]).
    pub fn new(flows: u32, rate: f64) -> Self {
        let burst = (rate * DEFAULT_BURST_WINDOW.as_secs_f64()).ceil().max(1.0) as u32;
        let nominal = Duration::from_secs_f64(f64::from(flows) / rate.max(1.0));
        Self {
            flows,
            rate,
            packets_per_flow: 1,
            payload: DEFAULT_PAYLOAD,
            dsts: lab::INTERNET_V4.iter().map(|&a| IpAddr::V4(a)).collect(),
            first_port: DEFAULT_FIRST_PORT,
            src: SocketAddr::new(IpAddr::V4(PHONE_V4), 0),
            burst,
            max_time: nominal * DEFAULT_TIME_FACTOR + DEFAULT_SLACK,
        }
    }

    /// The nominal duration: flows / rate.
    pub fn nominal(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.flows) / self.rate)
    }

    /// Destination of flow `i` (any `i < flows`).
    pub fn flow_dst(&self, i: u32) -> SocketAddr {
        let n = self.dsts.len() as u32;
        let port = u32::from(self.first_port) + i / n;
        SocketAddr::new(self.dsts[(i % n) as usize], port as u16)
    }

    /// The last destination port any flow uses.
    pub fn last_port(&self) -> u32 {
        let n = self.dsts.len().max(1) as u32;
        u32::from(self.first_port) + self.flows.saturating_sub(1) / n
    }

    /// IP bytes of one datagram, as tracker counts them.
    pub fn ip_bytes_per_packet(&self) -> u64 {
        let ip = if self.src.is_ipv6() { IPV6_HEADER } else { IPV4_HEADER };
        self.payload as u64 + UDP_HEADER + ip
    }

    fn check(&self) -> Result<()> {
        ensure!(self.flows > 0, "a flood needs at least one flow");
        ensure!(self.rate.is_finite() && self.rate > 0.0, "flood rate {} is not positive", self.rate);
        ensure!(self.packets_per_flow > 0, "a flow needs at least one datagram");
        ensure!(self.burst > 0, "the token bucket needs a capacity of at least one flow");
        ensure!(!self.dsts.is_empty(), "a flood needs at least one destination");
        ensure!(
            self.dsts.iter().all(|d| d.is_ipv6() == self.src.is_ipv6()),
            "destinations {:?} are not all of the family of the source {}",
            self.dsts,
            self.src
        );
        let mut seen = self.dsts.clone();
        seen.sort();
        seen.dedup();
        ensure!(seen.len() == self.dsts.len(), "duplicate destinations would repeat 5-tuples");
        ensure!(
            self.first_port > 0 && self.last_port() <= u32::from(u16::MAX),
            "{} flows over {} destinations need ports {}..={}: past 65535",
            self.flows,
            self.dsts.len(),
            self.first_port,
            self.last_port()
        );
        let range = u32::from(self.first_port)..=self.last_port();
        for port in [UDP_ECHO_PORT, DNS_PORT] {
            ensure!(
                !range.contains(&u32::from(port)),
                "ports {range:?} include {port}, where the lab answers: its flows would count \
                 packets down too"
            );
        }
        Ok(())
    }
}

/// One flow the flood sent: its 5-tuple (UDP), datagrams and IP bytes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SentFlow {
    pub client: SocketAddr,
    pub remote: SocketAddr,
    pub packets: u32,
    pub ip_bytes: u64,
}

/// What a flood did.
#[derive(Clone, Debug)]
pub struct FloodReport {
    /// The plan it followed.
    pub plan: Flood,
    /// The socket's actual address (the source port the kernel chose).
    pub client: SocketAddr,
    /// Flows sent completely: flows `0..flows_sent` of the plan.
    pub flows_sent: u32,
    pub datagrams_sent: u64,
    /// Datagrams the kernel refused for lack of buffer space and that were sent again.
    pub retries: u64,
    /// From the first datagram to the last.
    pub elapsed: Duration,
    /// Whether every flow of the plan went out before `max_time`.
    pub complete: bool,
}

impl FloodReport {
    /// Achieved rate, new flows per second.
    pub fn rate(&self) -> f64 {
        f64::from(self.flows_sent) / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Every flow sent, in order: what tracker should have recorded.
    pub fn expected(&self) -> impl Iterator<Item = SentFlow> + '_ {
        let bytes = u64::from(self.plan.packets_per_flow) * self.plan.ip_bytes_per_packet();
        (0..self.flows_sent).map(move |i| SentFlow {
            client: self.client,
            remote: self.plan.flow_dst(i),
            packets: self.plan.packets_per_flow,
            ip_bytes: bytes,
        })
    }
}

/// Sends the flood `plan` from the phone namespace of `lab` (one socket, `send_to` per
/// datagram) and reports what went out. Fails on a bad plan or a socket error other than a
/// transient lack of buffer space; hitting `max_time` is not an error (see
/// [`FloodReport::complete`]).
pub fn run(lab: &Lab, plan: &Flood) -> Result<FloodReport> {
    plan.check()?;
    let plan = plan.clone();
    lab.run_in(Ns::Phone, move || send(plan))?
}

fn send(plan: Flood) -> Result<FloodReport> {
    let sock = UdpSocket::bind(plan.src).with_context(|| format!("binding {} in the phone namespace", plan.src))?;
    let client = sock.local_addr().context("the flood socket's address")?;
    let mut datagram = vec![0u8; plan.payload];
    let (rate, burst) = (plan.rate, f64::from(plan.burst));
    let start = Instant::now();
    let deadline = start + plan.max_time;
    // Starts with one token, so the first flow goes at once and the rate counts from there.
    let (mut tokens, mut last) = (1.0_f64, start);
    let (mut flows_sent, mut datagrams_sent, mut retries) = (0u32, 0u64, 0u64);
    let mut complete = true;
    'flows: for i in 0..plan.flows {
        // Bounded by the deadline: every pass either returns a token or sleeps toward it.
        loop {
            let now = Instant::now();
            tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
            last = now;
            if tokens >= 1.0 {
                break;
            }
            if now >= deadline {
                complete = false;
                break 'flows;
            }
            std::thread::sleep(Duration::from_secs_f64((1.0 - tokens) / rate).min(MAX_SLEEP));
        }
        tokens -= 1.0;
        let to = plan.flow_dst(i);
        // The flow index in the payload, so a capture can tell datagrams apart.
        let tag = i.to_be_bytes();
        let n = tag.len().min(datagram.len());
        datagram[..n].copy_from_slice(&tag[..n]);
        for _ in 0..plan.packets_per_flow {
            loop {
                match sock.send_to(&datagram, to) {
                    Ok(_) => break,
                    Err(e) if is_transient(&e) && Instant::now() < deadline => {
                        retries += 1;
                        std::thread::sleep(RETRY_PAUSE);
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("sending flood datagram {datagrams_sent} to {to}"));
                    }
                }
            }
            datagrams_sent += 1;
        }
        flows_sent += 1;
    }
    Ok(FloodReport { plan, client, flows_sent, datagrams_sent, retries, elapsed: start.elapsed(), complete })
}

/// How the flows in SQLite compare with what the flood sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Flood flows with exactly one row.
    pub once: u64,
    /// Flood flows with more than one row.
    pub duplicated: u64,
    /// Flood flows with no row.
    pub missing: u64,
    /// Flood flows (one row) with the exact packets and bytes up, and nothing down.
    pub exact: u64,
    /// Of those with one row: fewer or more packets up than sent.
    pub fewer_packets: u64,
    pub more_packets: u64,
    /// Rows that are not the flood's (ICMP errors from the internet, anything else).
    pub other_rows: u64,
}

/// Matches `tracker flows --format json` rows (`flows`) against what the flood sent. Fails
/// when a row from the flood's socket goes where the flood never sent.
pub fn compare(report: &FloodReport, flows: &[Value]) -> Result<Found> {
    let client = report.client;
    // (remote, remote port) -> rows of UDP flows from the flood's socket.
    let mut rows: HashMap<SocketAddr, Vec<&Value>> = HashMap::new();
    let mut other_rows = 0;
    for f in flows {
        let addr = |k: &str| f[k].as_str().and_then(|s| s.parse::<IpAddr>().ok());
        let port = |k: &str| f[k].as_u64().and_then(|p| u16::try_from(p).ok());
        let ours =
            f["protocol"] == "udp" && addr("client") == Some(client.ip()) && port("client_port") == Some(client.port());
        match (ours, addr("remote"), port("remote_port")) {
            (true, Some(ip), Some(p)) => rows.entry(SocketAddr::new(ip, p)).or_default().push(f),
            _ => other_rows += 1,
        }
    }
    let mut found = Found { other_rows, ..Found::default() };
    let mut expected = 0;
    for sent in report.expected() {
        expected += 1;
        match rows.remove(&sent.remote).as_deref() {
            None | Some([]) => found.missing += 1,
            Some([row]) => {
                found.once += 1;
                let n = |k: &str| row[k].as_u64().unwrap_or(u64::MAX);
                let packets = n("packets_up");
                if packets < u64::from(sent.packets) {
                    found.fewer_packets += 1;
                } else if packets > u64::from(sent.packets) {
                    found.more_packets += 1;
                } else if n("bytes_up") == sent.ip_bytes && n("packets_down") == 0 {
                    found.exact += 1;
                }
            }
            Some(_) => found.duplicated += 1,
        }
    }
    // Rows from the flood's socket to a tuple it never sent to: nothing should be left.
    let strays: usize = rows.values().map(Vec::len).sum();
    ensure!(strays == 0, "{strays} UDP flows from the flood's socket {client} go where it never sent");
    ensure!(expected == u64::from(report.flows_sent), "the flood's plan does not rebuild its own flows");
    Ok(found)
}

/// Errors that mean "no room right now": a full socket buffer or device queue.
fn is_transient(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_walks_destinations_first_and_never_repeats_a_tuple() {
        let plan = Flood::new(100_000, 10_000.0);
        plan.check().unwrap();
        assert_eq!(plan.flow_dst(0).port(), DEFAULT_FIRST_PORT);
        assert_eq!(plan.flow_dst(3).port(), DEFAULT_FIRST_PORT + 1);
        assert_ne!(plan.flow_dst(0).ip(), plan.flow_dst(1).ip());
        let all: std::collections::HashSet<_> = (0..plan.flows).map(|i| plan.flow_dst(i)).collect();
        assert_eq!(all.len(), 100_000);
        assert_eq!(plan.ip_bytes_per_packet(), 64 + 28);
    }

    #[test]
    fn plan_refuses_ports_where_the_lab_answers() {
        let mut plan = Flood::new(10, 10.0);
        plan.first_port = UDP_ECHO_PORT - 1;
        assert!(plan.check().is_err());
        plan.first_port = 65_534;
        assert!(plan.check().is_err(), "10 flows over 3 hosts need 4 ports");
    }
}
