//! Queries over the store that answer the user's questions, one layer for the CLI, the HTML
//! page and the dashboard: [`report`] (domains, companies, services, encryption, protocols,
//! devices over a period), [`timeline`] (its connections per hour or day), [`blocked`] (what
//! the rules refused), [`entities`] (the entity table against the names observed),
//! [`experiment`] (what a block stopped, beside the time before it), [`detail`] (one domain,
//! company, service or device), [`listing`] (the query log and connections, paged) and [`sql`]
//! (the user's own read-only SQL).

pub mod blocked;
pub mod detail;
pub mod entities;
pub mod experiment;
pub mod listing;
pub mod preview;
pub mod report;
pub mod sql;
pub mod timeline;
