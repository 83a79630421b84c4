//! The pipeline between sources and sinks: [`naming`] pairs DNS queries with their answers and
//! names flows from them (and from TLS and HTTP), [`sweep`] turns a source's snapshots into the
//! records a sink stores. Classification joins here next.

pub mod naming;
pub mod sweep;
