//! tracker's kernel side: an XDP program for ingress (client -> remote, "up") and a TC classifier
//! for egress (remote -> client, "down") that share one flow table, one pair of block tries and
//! one event ring. The entry points are thin; the work is in fallible `try_` functions.
#![no_std]
#![no_main]
// The BPF target does not advertise 64-bit atomics to `core::sync::atomic`, yet the kernel has
// BPF_ATOMIC add (BPF_XADD) for map values; the intrinsic emits exactly that instruction.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic_xadd is the only way to emit BPF_XADD from Rust")]

use aya_ebpf::{
    bindings::{
        BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE, TC_ACT_SHOT, TC_ACT_UNSPEC,
        xdp_action,
    },
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{TcContext, XdpContext},
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use tracker_common::{
    BlockValue, Counter, DIR_DOWN, DIR_UP, DomainKey, EventHeader, EventKind, FAMILY_V4, FlowKey, FlowKeyV4, FlowStats,
    PAYLOAD_CAP, PayloadEvent, PortKey,
    account::{self, Count, DNS_PORT, ENCRYPTED_DNS_PORT},
    defaults, gate,
    parse::{ParseError, Parsed, parse},
};

/// Link-layer header length in front of IP (`tracker_common::L2_LEN_*`). Set by the loader
/// before the program is verified; being read-only data, the verifier prunes the branch for the
/// other link type.
#[unsafe(no_mangle)]
static L2_LEN: u32 = 0;

// Map names are the statics' names and must match `tracker_common::names` (checked by a test).
// One flow table per family, so IPv4 (most of a phone's traffic) hashes a 16-byte key.
#[map]
static FLOWS_V4: LruPerCpuHashMap<FlowKeyV4, FlowStats> = LruPerCpuHashMap::pinned(defaults::FLOW_ENTRIES, 0);
#[map]
static FLOWS_V6: LruPerCpuHashMap<FlowKey, FlowStats> = LruPerCpuHashMap::pinned(defaults::FLOW_ENTRIES, 0);
/// `BPF_F_NO_PREALLOC` is mandatory for LPM tries.
#[map]
static BLOCK_V4: LpmTrie<[u8; 4], BlockValue> =
    LpmTrie::pinned(defaults::BLOCK_ENTRIES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
#[map]
static BLOCK_V6: LpmTrie<[u8; 16], BlockValue> =
    LpmTrie::pinned(defaults::BLOCK_ENTRIES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
/// Which addresses might have an address rule ([`tracker_common::gate`]).
#[map]
static BLOCK_GATE: Array<u64> = Array::pinned(gate::WORDS, 0);
/// Name rules, by domain hash and device ([`refuse`]); allocated as rules are added.
#[map]
static DOMAINS: HashMap<DomainKey, BlockValue> =
    HashMap::pinned(defaults::DOMAIN_ENTRIES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT, 0);
#[map]
static EVENTS: RingBuf = RingBuf::pinned(defaults::EVENTS_BYTES, 0);
/// A payload record is built here and copied into the ring at its used length
/// (`bpf_ringbuf_output`): `bpf_ringbuf_reserve` takes only a constant size, and reserving the
/// largest record for a 60-byte DNS query filled the ring twenty times faster than needed.
/// Pinned like every map (the pin set is checked whole), though it holds nothing between packets.
#[map]
static SCRATCH: PerCpuArray<PayloadEvent> = PerCpuArray::pinned(1, 0);
#[map]
static DNS_SCRATCH: PerCpuArray<refuse::DnsScratch> = PerCpuArray::pinned(1, 0);
/// Port rules, by device, transport and port ([`bypass`]).
#[map]
static PORT_BLOCKS: HashMap<PortKey, BlockValue> = HashMap::pinned(defaults::PORT_ENTRIES, 0);

mod bypass;
mod refuse;

/// `BPF_NOEXIST`: create only, so a racing CPU's entry is never overwritten.
const BPF_NOEXIST: u64 = 1;
/// How many bytes of headers `tracker_tc_egress` wants in the linear part of the skb.
const TC_PULL_LEN: u32 = 128;

pub(crate) enum Verdict {
    Pass,
    Drop,
    /// The packet was turned into a reply to its sender (XDP only: [`refuse`]).
    Answered,
}

#[xdp]
pub fn tracker_xdp(ctx: XdpContext) -> u32 {
    match try_xdp(&ctx) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Answered => xdp_action::XDP_TX,
    }
}

#[classifier]
pub fn tracker_tc_egress(ctx: TcContext) -> i32 {
    match try_tc_egress(&ctx) {
        // UNSPEC, not OK: let any later classifier (TCX or cls_bpf) still run; with nothing
        // after us the packet continues as with TC_ACT_OK.
        Verdict::Pass | Verdict::Answered => TC_ACT_UNSPEC,
        Verdict::Drop => TC_ACT_SHOT,
    }
}

/// The two attach points differ in how they read packet bytes.
pub(crate) trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    /// Copies `len` (1..=PAYLOAD_CAP) bytes at `off` into `dst`.
    fn load(&self, off: u32, dst: *mut u8, len: u32) -> bool;
    /// Whether the attach point can send a packet back, and so answer a device's DNS query
    /// for a blocked name itself.
    const ANSWERS: bool;
    /// Answers a device's DNS query for a blocked name (only where [`Frame::ANSWERS`]).
    fn refuse(&self, p: &Parsed, now: u64) -> Option<Verdict>;
    /// Stops a device's packet to the encrypted DNS port under a port rule (only where
    /// [`Frame::ANSWERS`]: the reset for TCP goes back the way the segment came).
    fn stop_bypass(&self, p: &Parsed, now: u64) -> Option<Verdict>;
}

impl Frame for XdpContext {
    fn start(&self) -> usize {
        self.data()
    }
    fn end(&self) -> usize {
        self.data_end()
    }
    fn load(&self, off: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_xdp_load_bytes(self.ctx, off, dst.cast(), len) == 0 }
    }
    const ANSWERS: bool = true;
    #[inline(always)]
    fn refuse(&self, p: &Parsed, now: u64) -> Option<Verdict> {
        // Generic XDP hands over a linear skb, and native XDP frames are one page.
        let frame_len = (self.end() - self.start()) as u32;
        match refuse::query(self, p, frame_len, now) {
            refuse::Refusal::No => None,
            refuse::Refusal::Answered => Some(Verdict::Answered),
            refuse::Refusal::Dropped => Some(Verdict::Drop),
        }
    }
    #[inline(always)]
    fn stop_bypass(&self, p: &Parsed, now: u64) -> Option<Verdict> {
        bypass::stop(self, p, (self.end() - self.start()) as u32, now)
    }
}

impl Frame for TcContext {
    fn start(&self) -> usize {
        self.data()
    }
    fn end(&self) -> usize {
        self.data_end()
    }
    fn load(&self, off: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_skb_load_bytes(self.skb.skb.cast(), off, dst.cast(), len) == 0 }
    }
    /// Egress carries replies to the devices, never their queries.
    const ANSWERS: bool = false;
    fn refuse(&self, _: &Parsed, _: u64) -> Option<Verdict> {
        None
    }
    /// Egress carries what comes back; stopping a device's packets going up is enough.
    fn stop_bypass(&self, _: &Parsed, _: u64) -> Option<Verdict> {
        None
    }
}

pub(crate) fn l2_len() -> u32 {
    unsafe { core::ptr::read_volatile(&L2_LEN) }
}

fn try_xdp(ctx: &XdpContext) -> Verdict {
    let len = (ctx.data_end() - ctx.data()) as u32;
    // Generic XDP hands us a linear copy of the whole skb, so a packet that wireguard-go
    // coalesced (GRO) arrives here as one large packet: it is counted as one.
    let verdict = handle(ctx, len, true, 1);
    finish(verdict)
}

fn try_tc_egress(ctx: &TcContext) -> Verdict {
    let skb = ctx.skb.skb;
    let len = ctx.len();
    // Headers of locally generated packets are linear; forwarded ones may not be. Pulling only
    // when the linear part is short keeps the common path free of the helper call.
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < TC_PULL_LEN && len > linear {
        let _ = ctx.pull_data(if len < TC_PULL_LEN { len } else { TC_PULL_LEN });
    }
    // A GSO skb is one super-packet that the device (wireguard-go) cuts into gso_segs IP
    // packets; count what reaches the client: segments, each with its own copy of the headers.
    let segs = unsafe { (*skb).gso_segs };
    let verdict = handle(ctx, len, false, if segs == 0 { 1 } else { segs });
    finish(verdict)
}

fn finish(v: Verdict) -> Verdict {
    match v {
        // An answered query is counted as DnsRefused; it neither passed nor was dropped.
        Verdict::Pass => count(Counter::Passed, 1),
        Verdict::Drop => count(Counter::Dropped, 1),
        Verdict::Answered => {}
    }
    v
}

#[inline(always)]
fn handle<F: Frame>(ctx: &F, frame_len: u32, up: bool, segs: u32) -> Verdict {
    // SAFETY: the kernel keeps `data..data_end` readable while the program runs.
    let p = match unsafe { parse(ctx.start(), ctx.end(), l2_len(), frame_len, up) } {
        Ok(p) => p,
        Err(ParseError::Malformed | ParseError::NotIp) => {
            count(Counter::ParseErrors, 1);
            return Verdict::Pass;
        }
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // A device's DNS query, or its packet to the encrypted DNS port: every other packet pays
    // these two compares of a port the parser holds in a register, and no map is read. Both
    // go on with the parse result read back from map memory: every path through the parser
    // reaches this point with its own verifier state, and the refusal's loops (and the
    // reset) would be verified again for each.
    if F::ANSWERS && up && (p.remote_port == DNS_PORT || p.remote_port == ENCRYPTED_DNS_PORT) {
        let Some(p) = refuse::forget_parse(&p) else { return Verdict::Pass };
        let stopped = if p.remote_port == DNS_PORT { ctx.refuse(&p, now) } else { ctx.stop_bypass(&p, now) };
        if let Some(v) = stopped {
            return v;
        }
        return counted(ctx, &p, up, segs, now);
    }
    counted(ctx, &p, up, segs, now)
}

/// A parsed packet through the address rules and into its flow.
#[inline(always)]
fn counted<F: Frame>(ctx: &F, p: &Parsed, up: bool, segs: u32, now: u64) -> Verdict {
    let p = *p;
    if let Some(rule) = blocked(&p, now) {
        on_block(rule, &p, up, now);
        return Verdict::Drop;
    }
    if p.fragment {
        count(Counter::Fragments, 1);
    }
    if p.family == FAMILY_V4 {
        account(ctx, &FLOWS_V4, &p.key_v4(), &p, up, segs, now);
    } else {
        account(ctx, &FLOWS_V6, &p.key(), &p, up, segs, now);
    }
    Verdict::Pass
}

/// The block rule covering the remote address, if any (longest prefix wins, by the trie) and
/// if it holds now. An expired most specific rule hides a wider one until the daemon removes
/// it: the trie returns only the longest match.
#[inline(always)]
fn blocked(p: &Parsed, now: u64) -> Option<*mut BlockValue> {
    let v4 = p.family == FAMILY_V4;
    let slot = if v4 {
        gate::Slot::of(false, gate::v4_bit(p.remote_v4()))
    } else {
        let r = p.remote_v6();
        gate::Slot::of(true, gate::v6_bit([r[0], r[1], r[2], r[3]]))
    };
    match BLOCK_GATE.get(slot.word) {
        Some(word) if *word & slot.mask != 0 => {}
        _ => return None,
    }
    let value = if v4 { BLOCK_V4.get(Key::new(32, p.remote_v4())) } else { BLOCK_V6.get(Key::new(128, p.remote_v6())) };
    // The trie hands out a shared reference; the value is updated in place with atomics, as the
    // kernel allows for map values.
    value.filter(|v| v.holds(now)).map(|v| v as *const BlockValue as *mut BlockValue)
}

#[inline(always)]
pub(crate) fn on_block(rule: *mut BlockValue, p: &Parsed, up: bool, now: u64) {
    let (rule_id, last_event) = unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*rule).packets_dropped, 1);
        (*rule).last_hit_ns = now;
        ((*rule).rule_id, (*rule).last_event_ns)
    };
    // Rate-limited: a blocked host that an app retries in a tight loop must not flood the ring.
    if now.wrapping_sub(last_event) < defaults::BLOCK_EVENT_INTERVAL_NS {
        return;
    }
    unsafe { (*rule).last_event_ns = now };
    if let Some(mut entry) = EVENTS.reserve::<EventHeader>(0) {
        entry.write(header(EventKind::BlockHit, p, up, rule_id, now));
        entry.submit(wakeup_flags());
    } else {
        count(Counter::RingLost, 1);
    }
}

/// No wakeup per record: the daemon drains the ring on a short timer. Only a ring filling up
/// (past 1/`WAKEUP_FILL_DIVISOR` unread) wakes it at once.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let size = EVENTS.query(BPF_RB_RING_SIZE as u64);
    if unread > size / defaults::WAKEUP_FILL_DIVISOR { BPF_RB_FORCE_WAKEUP as u64 } else { BPF_RB_NO_WAKEUP as u64 }
}

#[inline(always)]
fn header(kind: EventKind, p: &Parsed, up: bool, rule_id: u32, now: u64) -> EventHeader {
    EventHeader {
        kind: kind as u8,
        direction: if up { DIR_UP } else { DIR_DOWN },
        _pad: [0; 2],
        rule_id,
        ts_ns: now,
        key: p.key(),
    }
}

/// Counts the packet against its flow in `flows` (keyed by `map_key`, that table's key for the
/// flow), creating the flow if it is new, and sends the payload event it calls for. A new flow
/// sends no event of its own: the daemon's sweep finds the new entry.
#[inline(always)]
fn account<F: Frame, K>(
    ctx: &F,
    flows: &LruPerCpuHashMap<K, FlowStats>,
    map_key: &K,
    p: &Parsed,
    up: bool,
    segs: u32,
    now: u64,
) {
    let c = Count::of(p, up, segs, now);
    // A client's bare SYN opens a connection, so its flow is almost always new: it goes straight
    // to the create-only insert, which does the bucket walk itself, instead of a lookup that
    // misses first. A retransmitted SYN finds the entry there and is counted as below.
    let existing = if account::opens(p, up) { None } else { flows.get_ptr_mut(map_key) };
    let first_payload = match existing {
        Some(s) => unsafe { &mut *s }.add(&c),
        None => match flows.insert(map_key, &FlowStats::first(&c), BPF_NOEXIST) {
            Ok(()) => {
                count(Counter::FlowsCreated, 1);
                c.payload
            }
            Err(_) => match flows.get_ptr_mut(map_key) {
                // It exists: a retransmitted SYN, or another CPU created it between our lookup
                // and insert.
                Some(s) => unsafe { &mut *s }.add(&c),
                // Created and evicted again in between: this packet is lost to the counters,
                // but it is counted as such.
                None => {
                    count(Counter::FlowUpdateErrors, 1);
                    false
                }
            },
        },
    };
    if let Some(kind) = account::event(p, first_payload) {
        emit_payload(ctx, kind, p, up, now, 0);
    }
}

#[inline(always)]
pub(crate) fn emit_payload<F: Frame>(ctx: &F, kind: EventKind, p: &Parsed, up: bool, now: u64, rule_id: u32) {
    let payload_len = p.payload_len();
    if payload_len == 0 {
        return;
    }
    let Some(ev) = SCRATCH.get_ptr_mut(0) else { return };
    // The load helpers need a length the verifier can prove is in 1..=PAYLOAD_CAP. Clamping
    // the index of the last byte and adding one gives it that range directly; the black_box
    // keeps LLVM from folding this back into `min(len, cap)` with a separate zero test, which
    // the verifier cannot connect to the length ("invalid zero-sized read").
    let mut last = payload_len - 1;
    if last > PAYLOAD_CAP as u32 - 1 {
        last = PAYLOAD_CAP as u32 - 1;
    }
    let n = core::hint::black_box(last) + 1;
    // The payload may continue past the linear data; the load helpers read from the whole
    // packet (skb frags, XDP frags) so the copy is not limited to what direct access sees.
    let copied = ctx.load(p.payload_off, unsafe { (&raw mut (*ev).data).cast() }, n);
    let captured = if copied { n } else { 0 };
    unsafe {
        (&raw mut (*ev).header).write(header(kind, p, up, rule_id, now));
        (&raw mut (*ev).payload_len).write(payload_len);
        (&raw mut (*ev).captured_len).write(captured);
    }
    // SAFETY: the scratch entry is PayloadEvent-sized and record_len(captured) is at most that.
    let record = unsafe { core::slice::from_raw_parts(ev.cast::<u8>(), PayloadEvent::record_len(captured) as usize) };
    if EVENTS.output::<[u8]>(record, wakeup_flags()).is_err() {
        count(Counter::RingLost, 1);
    }
}

#[inline(always)]
pub(crate) fn count(c: Counter, n: u64) {
    if let Some(v) = COUNTERS.get_ptr_mut(c as u32) {
        unsafe { *v += n };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
