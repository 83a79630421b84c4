//! Pure logic that names and classifies flows: DNS, TLS SNI, HTTP Host, address classes, the
//! application protocol, the companies and services behind names, and the labels a flow is
//! reported by.
//!
//! Nothing here does I/O or keeps global state: the daemon feeds packet payloads and timestamps
//! in and stores what comes out. Every parser takes untrusted bytes, never panics on them, and
//! renders names in one canonical form (lower case, no trailing dot, odd bytes escaped as `\DDD`
//! by [`domain::display_escaped`]) so that DNS, SNI and HTTP names compare equal.

pub mod addr;
pub mod dns;
pub mod domain;
pub mod entity;
pub mod http;
pub mod labels;
pub mod names;
pub mod protocol;
pub mod quic;
pub mod tls;

#[cfg(test)]
mod pcap_tests;
