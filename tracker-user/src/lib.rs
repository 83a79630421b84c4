//! tracker: watches the flows of the devices behind a WireGuard interface, names them, and blocks
//! hosts in the kernel.
//!
//! Data flows one way, and the modules follow it:
//! packets -> [`kernel`] (programs, maps, ring) -> [`drain`] (with [`naming`]) -> [`store`]
//! (SQLite) -> queries -> [`cli`]. [`blocking`] turns block rules into kernel map entries;
//! [`analysis`] holds the pure logic that parses DNS, TLS and HTTP and decides names, [`naming`]
//! the daemon's state built from it, with [`wireguard`] telling which addresses are one device;
//! [`timefmt`] the clock conversions shared by all of them; [`daemon`] the daemon's locks and the
//! upkeep that puts back pins or a database removed under it.

pub mod analysis;
pub mod blocking;
pub mod cli;
pub mod daemon;
pub mod drain;
pub mod kernel;
pub mod naming;
pub mod store;
pub mod text;
pub mod timefmt;
pub mod wireguard;
