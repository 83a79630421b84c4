//! The ABI shared by tracker's kernel programs and its userspace: map names, keys, values and
//! ring-buffer events, and the per-packet code both sides run ([`parse`], [`account`]), so the
//! capture importer counts a packet exactly as the kernel does. Every layout here is `#[repr(C)]` with explicit padding, because the kernel
//! hashes and compares map keys byte for byte: an uninitialised padding byte would split one flow
//! into many.
#![no_std]
// Packet loads of a field's own width (parse::Window) are written as BPF assembly.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod account;
pub mod gate;
pub mod name;
pub mod parse;

/// Names of the BPF maps and programs. The eBPF crate declares its statics with exactly these
/// names (aya takes the map name from the static's name); userspace looks them up through these
/// constants, and a kernel test checks that every name here exists in the built object.
pub mod names {
    /// `LRU_PERCPU_HASH<FlowKeyV4, FlowStats>`: one entry per IPv4 flow.
    pub const FLOWS_V4: &str = "FLOWS_V4";
    /// `LRU_PERCPU_HASH<FlowKey, FlowStats>`: one entry per IPv6 flow.
    pub const FLOWS_V6: &str = "FLOWS_V6";
    /// `LPM_TRIE<[u8; 4], BlockValue>` (key: prefix length + address): IPv4 block rules.
    pub const BLOCK_V4: &str = "BLOCK_V4";
    /// `LPM_TRIE<[u8; 16], BlockValue>`: IPv6 block rules.
    pub const BLOCK_V6: &str = "BLOCK_V6";
    /// `PERCPU_ARRAY<u64>`, indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// `RINGBUF` carrying events: an [`crate::EventHeader`] with [`crate::EventKind`], and for
    /// payload kinds the bytes of a [`crate::PayloadEvent`] up to its captured length.
    pub const EVENTS: &str = "EVENTS";
    /// `PERCPU_ARRAY<PayloadEvent>` of one entry: where a payload record is assembled before
    /// `bpf_ringbuf_output` copies its used length into the ring.
    pub const SCRATCH: &str = "SCRATCH";
    /// `ARRAY<u64>` of [`crate::gate::WORDS`]: which addresses might have an address rule.
    pub const BLOCK_GATE: &str = "BLOCK_GATE";
    /// `HASH<DomainKey, BlockValue>`: name rules, by the hash of a domain ([`crate::name`]) and
    /// the device they hold for.
    pub const DOMAINS: &str = "DOMAINS";
    /// `PERCPU_ARRAY` of one entry: where a query's name is scanned and its reply assembled.
    pub const DNS_SCRATCH: &str = "DNS_SCRATCH";
    /// `HASH<PortKey, BlockValue>`: port rules (a dns-bypass rule's port 853), by device,
    /// transport and port; looked up only for packets going up to
    /// [`crate::account::ENCRYPTED_DNS_PORT`].
    pub const PORT_BLOCKS: &str = "PORT_BLOCKS";
    /// The XDP program (ingress: traffic from the clients behind the interface).
    pub const PROG_XDP: &str = "tracker_xdp";
    /// The TC classifier attached to egress (traffic to the clients).
    pub const PROG_TC_EGRESS: &str = "tracker_tc_egress";
    /// `ARRAY<u32, OwnerRecord>` of one entry: which database the maps beside it belong to.
    /// Not in the eBPF object (no program reads it): the daemon creates and pins it
    /// (tracker-user's `kernel::pins`).
    pub const OWNER: &str = "OWNER";
    /// Every map of the eBPF object, for pinning and for the kernel test that checks the object.
    pub const ALL_MAPS: [&str; 11] = [
        FLOWS_V4,
        FLOWS_V6,
        BLOCK_V4,
        BLOCK_V6,
        BLOCK_GATE,
        DOMAINS,
        PORT_BLOCKS,
        COUNTERS,
        EVENTS,
        SCRATCH,
        DNS_SCRATCH,
    ];
    /// Read-only globals set by the loader (`EbpfLoader::set_global`).
    pub const GLOBAL_L2_LEN: &str = "L2_LEN";
}

/// Default sizes; the daemon's flags override them at load time.
pub mod defaults {
    /// Flow table entries, per address family. 64 Ki flows cover a household of phones for
    /// hours between sweeps.
    pub const FLOW_ENTRIES: u32 = 65_536;
    /// Block rules per family.
    pub const BLOCK_ENTRIES: u32 = 16_384;
    /// Name rules (one per domain and device). Allocated as used (`BPF_F_NO_PREALLOC`), so a
    /// large limit costs nothing until a big list is imported.
    pub const DOMAIN_ENTRIES: u32 = 262_144;
    /// Port rules: two (TCP and UDP) per device address a dns-bypass rule holds for, or two for
    /// every device. A household needs tens.
    pub const PORT_ENTRIES: u32 = 1024;
    /// Ring buffer size in bytes (a power of two, as the kernel requires).
    pub const EVENTS_BYTES: u32 = 4 << 20;
    /// Minimum gap between two block-hit events for the same rule.
    pub const BLOCK_EVENT_INTERVAL_NS: u64 = 1_000_000_000;
    /// Records are submitted without waking the reader (`BPF_RB_NO_WAKEUP`): a wakeup is an
    /// irq_work, which in a VM is an IPI and a VM exit, microseconds per record. The daemon
    /// drains on a timer instead; past this share of the ring in use (1/`WAKEUP_FILL_DIVISOR`)
    /// a record forces a wakeup, so a burst is drained before the ring fills.
    pub const WAKEUP_FILL_DIVISOR: u64 = 4;
}

/// Address family tags stored in [`FlowKey::family`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers the programs look into.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// TCP header flag bits ([`FlowStats::tcp_flags_up`], RFC 9293).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Length of the link-layer header in front of the IP header, set by the loader from the
/// interface's link type: 0 for WireGuard/TUN (ARPHRD_NONE), 14 for Ethernet.
pub const L2_LEN_NONE: u32 = 0;
pub const L2_LEN_ETHERNET: u32 = 14;

/// Bytes of L4 payload copied into a [`PayloadEvent`]. 1280 holds every DNS message a resolver
/// sends over UDP to a client that advertises the DNS-flag-day EDNS size (1232) and the start of
/// a TLS ClientHello up to and including the server name in practice.
pub const PAYLOAD_CAP: usize = 1280;

/// One flow, as seen from the interface: `client` is the host behind the interface (the phone
/// on `wg0`), `remote` the other end. Ingress packets go client -> remote ("up"), egress packets
/// remote -> client ("down"). It keys the IPv6 flow table, and names the flow in every event;
/// the IPv4 table uses the shorter [`FlowKeyV4`].
///
/// 8-byte aligned (the size stays 40, with the same offsets) so the kernel side can fill and
/// copy it with word stores rather than byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Network byte order; an IPv4 address fills the first 4 bytes, the rest are zero.
    pub client: [u8; 16],
    pub remote: [u8; 16],
    /// Host byte order. Zero for protocols without ports and for non-first fragments.
    pub client_port: u16,
    pub remote_port: u16,
    /// IP protocol number (the transport header found after IPv6 extension headers).
    pub protocol: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Per-CPU counters of one flow. Userspace sums packets and bytes over CPUs, takes the smallest
/// non-zero `first_seen_ns`, the largest `last_seen_ns` and ORs the flag bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowStats {
    pub packets_up: u64,
    pub bytes_up: u64,
    pub packets_down: u64,
    pub bytes_down: u64,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE: the timekeeper's last tick, 1-4 ms
    /// resolution). The precise clocks read the clocksource on every call, which in a KVM guest
    /// made up a third of the per-packet cost (`cargo xtask bench`: 68 -> 45 ns); the database
    /// keeps milliseconds anyway. It stops during suspend, which a VPN host does not do.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// TCP flags (FIN=0x01 .. CWR=0x80) seen going up (client -> remote), ORed.
    pub tcp_flags_up: u8,
    /// [`FLOW_PAYLOAD_UP`] / [`FLOW_PAYLOAD_DOWN`]: a first-payload event was sent.
    pub payload_sent: u8,
    /// TCP flags seen going down. Apart from `tcp_flags_up` because a connection has ended only
    /// when each side has sent its FIN.
    pub tcp_flags_down: u8,
    pub _pad: [u8; 5],
}

/// The IPv4 flow table's key: [`FlowKey`] without the 24 bytes that are always zero for IPv4.
/// The kernel hashes and compares the whole key on every packet, and a 40-byte key made the
/// per-packet lookup cost 12 ns more than this 16-byte one (`cargo xtask bench`), more than
/// everything else the program does to a packet of a known flow.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKeyV4 {
    /// Network byte order.
    pub client: [u8; 4],
    pub remote: [u8; 4],
    /// Host byte order, as in [`FlowKey`].
    pub client_port: u16,
    pub remote_port: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The IPv4 table's key for this flow. Meaningful only for [`FAMILY_V4`] keys.
    #[inline(always)]
    pub fn to_v4(&self) -> FlowKeyV4 {
        let FlowKey { client, remote, client_port, remote_port, protocol, family: _, _pad } = *self;
        FlowKeyV4 {
            client: [client[0], client[1], client[2], client[3]],
            remote: [remote[0], remote[1], remote[2], remote[3]],
            client_port,
            remote_port,
            protocol,
            _pad: [0; 3],
        }
    }
}

impl From<FlowKeyV4> for FlowKey {
    fn from(k: FlowKeyV4) -> Self {
        let FlowKeyV4 { client, remote, client_port, remote_port, protocol, _pad } = k;
        let mut key = FlowKey { client_port, remote_port, protocol, family: FAMILY_V4, ..FlowKey::default() };
        key.client[..4].copy_from_slice(&client);
        key.remote[..4].copy_from_slice(&remote);
        key
    }
}

pub const FLOW_PAYLOAD_UP: u8 = 1;
pub const FLOW_PAYLOAD_DOWN: u8 = 2;

/// Value of a block rule, in the LPM tries (an address rule) and in `DOMAINS` (a name rule).
/// The kernel increments `packets_dropped` atomically (several CPUs may hit one rule at once)
/// and overwrites the timestamps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockValue {
    /// The rule's id in SQLite, reported in block-hit and refusal events.
    pub rule_id: u32,
    /// [`BLOCK_LEARNED`] or 0. The kernel does not read it.
    pub flags: u32,
    /// Packets dropped (an address rule) or DNS queries refused (a name rule).
    pub packets_dropped: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last drop; 0 = never.
    pub last_hit_ns: u64,
    /// Last block-hit event, to rate-limit them to one per rule per interval.
    pub last_event_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` from which the rule no longer holds; 0 = never. The kernel
    /// checks it itself, so a timed block ends on time while the daemon is down.
    pub expires_ns: u64,
}

/// [`BlockValue::flags`]: an address entry the daemon learned for the name rule `rule_id` (the
/// address a blocked name was answered with), not an address rule of its own: the address
/// rules' reconcile leaves it alone, and the daemon removes it when it ends.
pub const BLOCK_LEARNED: u32 = 1;

impl BlockValue {
    /// Whether the rule holds at `now`.
    #[inline(always)]
    pub fn holds(&self, now: u64) -> bool {
        self.expires_ns == 0 || now < self.expires_ns
    }
}

/// Key of a name rule in `DOMAINS`: the hash of the domain's wire form
/// ([`name::domain_hash`]) and the device the rule holds for, all zero for every device.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DomainKey {
    pub hash: u64,
    /// The device's address as in [`FlowKey::client`] (IPv4 in the first 4 bytes).
    pub client: [u8; 16],
}

/// Key of a port rule in `PORT_BLOCKS`: the device it holds for (all zero for every device),
/// the transport and the remote port. The kernel looks these up only for packets going up to
/// one port ([`account::ENCRYPTED_DNS_PORT`]); the key carries the port all the same, so an
/// entry says what it stops.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PortKey {
    /// The device's address as in [`FlowKey::client`] (IPv4 in the first 4 bytes).
    pub client: [u8; 16],
    /// Host byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    pub _pad: [u8; 5],
}

/// Indexes into the `COUNTERS` per-CPU array. Userspace sums over CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the programs ran on. The kernel does not count it (one map update less on
    /// every packet): userspace reports `Passed + Dropped`.
    Seen = 0,
    Passed = 1,
    Dropped = 2,
    /// Packets that were not IPv4/IPv6 or whose headers were truncated or malformed. They pass.
    ParseErrors = 3,
    /// Ring buffer reservations that failed because the ring was full.
    RingLost = 4,
    /// Flow entries created; with the live entry count this gives LRU evictions.
    FlowsCreated = 5,
    /// Packets lost to the flow counters: the create-only insert failed and no entry was there
    /// either (evicted in between). Never expected with an LRU map; counted, not hidden.
    FlowUpdateErrors = 6,
    /// Non-first IP fragments (counted against the flow without ports).
    Fragments = 7,
    /// DNS queries for a blocked name answered by the kernel (NXDOMAIN over UDP, a reset over
    /// TCP).
    DnsRefused = 8,
}

impl Counter {
    pub const COUNT: u32 = 9;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Seen,
        Counter::Passed,
        Counter::Dropped,
        Counter::ParseErrors,
        Counter::RingLost,
        Counter::FlowsCreated,
        Counter::FlowUpdateErrors,
        Counter::Fragments,
        Counter::DnsRefused,
    ];

    /// Stable snake_case name, used in `tracker status --format json`.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Seen => "packets_seen",
            Counter::Passed => "packets_passed",
            Counter::Dropped => "packets_dropped",
            Counter::ParseErrors => "parse_errors",
            Counter::RingLost => "ring_lost",
            Counter::FlowsCreated => "flows_created",
            Counter::FlowUpdateErrors => "flow_update_errors",
            Counter::Fragments => "fragments",
            Counter::DnsRefused => "dns_refused",
        }
    }
}

/// Kinds of ring-buffer events, stored in [`EventHeader::kind`] as their `u8`. A flow's creation
/// is not an event: the sweep finds new entries with their first-seen stamp, so a new flow costs
/// no ring record (the new-flow path is the hot one in a flood).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A packet was dropped by a block rule (rate-limited per rule). Header only.
    BlockHit = 2,
    /// A DNS message (UDP or TCP port 53): a [`PayloadEvent`].
    Dns = 3,
    /// The first L4 payload of a flow in one direction (TLS ClientHello, HTTP request, QUIC
    /// Initial): a [`PayloadEvent`].
    FirstPayload = 4,
    /// A DNS query for a blocked name that the kernel answered itself: a [`PayloadEvent`] with
    /// the query, `rule_id` naming the rule. Not rate-limited: the refusals are the record of
    /// what a block stopped.
    DnsRefused = 5,
}

impl EventKind {
    /// The kind a header's byte names; `None` for a byte no kind has (an object newer than the
    /// daemon, say).
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            b if b == Self::BlockHit as u8 => Some(Self::BlockHit),
            b if b == Self::Dns as u8 => Some(Self::Dns),
            b if b == Self::FirstPayload as u8 => Some(Self::FirstPayload),
            b if b == Self::DnsRefused as u8 => Some(Self::DnsRefused),
            _ => None,
        }
    }
}

/// Direction of a packet relative to the client.
pub const DIR_UP: u8 = 0;
pub const DIR_DOWN: u8 = 1;

/// Start of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventHeader {
    /// An [`EventKind`] as `u8`: a byte the kernel wrote is not trusted to be a valid enum.
    pub kind: u8,
    /// [`DIR_UP`] or [`DIR_DOWN`].
    pub direction: u8,
    pub _pad: [u8; 2],
    /// For [`EventKind::BlockHit`] and [`EventKind::DnsRefused`]: the rule; otherwise 0.
    pub rule_id: u32,
    pub ts_ns: u64,
    pub key: FlowKey,
}

/// An event that carries packet bytes. The record in the ring is this struct cut after
/// `captured_len` bytes of `data`: [`PayloadEvent::record_len`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PayloadEvent {
    pub header: EventHeader,
    /// L4 payload length of the packet.
    pub payload_len: u32,
    /// Bytes copied into `data` (at most [`PAYLOAD_CAP`]).
    pub captured_len: u32,
    pub data: [u8; PAYLOAD_CAP],
}

impl PayloadEvent {
    /// Where `data` starts: the length of a record with nothing captured.
    pub const DATA_OFFSET: usize = core::mem::offset_of!(PayloadEvent, data);

    /// Bytes of a record that captured `captured` bytes.
    #[inline(always)]
    pub const fn record_len(captured: u32) -> u32 {
        Self::DATA_OFFSET as u32 + captured
    }
}

#[cfg(feature = "user")]
pub mod user;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and byte arrays, with padding
    // spelled out as fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKeyV4 {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::BlockValue {}
    unsafe impl aya::Pod for super::DomainKey {}
    unsafe impl aya::Pod for super::PortKey {}
}

const _: () = {
    assert!(core::mem::size_of::<FlowKey>() == 40);
    assert!(core::mem::size_of::<FlowKeyV4>() == 16);
    assert!(core::mem::size_of::<FlowStats>() == 56);
    assert!(core::mem::size_of::<BlockValue>() == 40);
    assert!(core::mem::size_of::<DomainKey>() == 24);
    assert!(core::mem::size_of::<PortKey>() == 24);
    assert!(core::mem::size_of::<EventHeader>() == 56);
    assert!(core::mem::size_of::<PayloadEvent>() == 56 + 8 + PAYLOAD_CAP);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_key_narrows_and_widens_without_loss() {
        let mut key = FlowKey {
            client_port: 40_000,
            remote_port: 443,
            protocol: IPPROTO_TCP,
            family: FAMILY_V4,
            ..FlowKey::default()
        };
        key.client[..4].copy_from_slice(&[10, 77, 0, 2]);
        key.remote[..4].copy_from_slice(&[203, 0, 113, 7]);
        let narrow = key.to_v4();
        assert_eq!(narrow.client, [10, 77, 0, 2]);
        assert_eq!(narrow.remote, [203, 0, 113, 7]);
        assert_eq!((narrow.client_port, narrow.remote_port, narrow.protocol), (40_000, 443, IPPROTO_TCP));
        assert_eq!(FlowKey::from(narrow), key);
    }
}
