//! Queries over the store that answer the user's questions, one layer for the CLI, the HTML
//! page and the dashboard: [`report`] (domains, companies, services, encryption, protocols,
//! devices over a period) and [`entities`] (the entity table against the names observed).

pub mod entities;
pub mod report;
