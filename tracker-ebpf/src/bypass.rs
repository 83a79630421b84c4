//! Stopping a device's encrypted DNS at XDP ingress (a dns-bypass rule's port part): its
//! packets to port 853, DNS over TLS (TCP, RFC 7858) and DNS over QUIC (UDP, RFC 9250), when a
//! rule in `PORT_BLOCKS` holds for the device or for every device. Its DoH names are ordinary
//! name rules ([`crate::refuse`]).
//!
//! TCP is answered with a reset, UDP dropped. A dropped SYN is sent again and again before
//! connect() gives up (Linux's default `tcp_syn_retries` of 6 is about two minutes), and an
//! app that would fall back to plain DNS waits that long, or its own timeout; a reset fails
//! the connect at once (ECONNREFUSED), so Android's Private DNS in its automatic mode, and any
//! client that tries DoT first, goes on with plain DNS right away. For UDP the answer that
//! fails a socket at once would be an ICMP port unreachable, which has to quote the datagram's
//! headers (the frame grown at its head and checksummed again), and Linux hands it to an
//! unconnected UDP socket only when that socket asked for errors (`IP_RECVERR`; see
//! `__udp4_lib_err` in net/ipv4/udp.c): a QUIC client reading from an unconnected socket would
//! wait all the same. So a DoQ client falls back after its handshake timeout.

use aya_ebpf::programs::XdpContext;
use tracker_common::{BlockValue, Counter, IPPROTO_TCP, PortKey, parse::Parsed};

use crate::{DNS_SCRATCH, PORT_BLOCKS, Verdict, count, on_block, refuse};

/// Stops `p`, a device's packet to the encrypted DNS port, if a port rule holds for it now:
/// `None` lets it through. `frame_len` as in [`refuse::query`].
#[inline(always)]
pub fn stop(ctx: &XdpContext, p: &Parsed, frame_len: u32, now: u64) -> Option<Verdict> {
    let rule = matching_rule(p, now)?;
    on_block(rule, p, true, now);
    if p.protocol == IPPROTO_TCP
        && let Some(scratch) = DNS_SCRATCH.get_ptr_mut(0)
        // SAFETY: a per-CPU map value, ours until the program returns.
        && refuse::reset_tcp(ctx, p, frame_len, unsafe { &mut (*scratch).reply })
    {
        // The segment never reaches the resolver: a drop, whose reply goes back to the device.
        count(Counter::Dropped, 1);
        return Some(Verdict::Answered);
    }
    // UDP, a segment that is itself a reset, or headers a reset is not built for (IP options,
    // extension headers).
    Some(Verdict::Drop)
}

/// The device's own rule if it holds now, else the rule for every device if it does.
#[inline(always)]
fn matching_rule(p: &Parsed, now: u64) -> Option<*mut BlockValue> {
    // SAFETY: two words are sixteen bytes, in memory order, as FlowKey::client holds them.
    let client = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(p.client) };
    for client in [client, [0; 16]] {
        let key = PortKey { client, port: p.remote_port, protocol: p.protocol, _pad: [0; 5] };
        if let Some(v) = PORT_BLOCKS.get_ptr_mut(&key)
            && unsafe { &*v }.holds(now)
        {
            return Some(v);
        }
    }
    None
}
