//! tracker: watches the flows of the devices behind a WireGuard interface, names them, and blocks
//! hosts in the kernel.
//!
//! Data flows one way, and the modules follow it:
//! packets -> [`kernel`] (programs, maps, ring) -> [`source`] (snapshots and events, with their
//! clock) -> [`pipeline`] (naming, labels, the sweep) -> [`sink`] -> [`store`] (SQLite) ->
//! [`query`] (reports) -> [`cli`] and [`web`] (charts, the HTML page) ([`status`] gathers what
//! `tracker status` shows). [`analysis`] holds the pure logic that parses DNS, TLS and HTTP, decides names and
//! classifies addresses; [`wireguard`] tells which addresses are one device; [`blocking`] turns
//! address rules into kernel map entries and [`rules`] name rules (domains, companies, services,
//! lists); [`change`] is the one rule change the CLI and the dashboard both call; [`daemon`]
//! runs the loop, with the locks and the upkeep that puts back pins or a database removed under
//! it; [`import`] runs a capture file through the same source, pipeline and store; [`timefmt`]
//! the clock conversions and [`text`] the escaping shared by all of them. `fuzzing`, built only
//! for tests and cargo-fuzz, runs each parser on arbitrary bytes and checks its contract (the
//! fuzz targets' bodies).

pub mod analysis;
pub mod blocking;
pub mod change;
pub mod cli;
pub mod daemon;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod import;
pub mod kernel;
pub mod pipeline;
pub mod query;
pub mod rules;
pub mod sink;
pub mod source;
pub mod status;
pub mod store;
pub mod text;
pub mod timefmt;
pub mod web;
pub mod wireguard;
