//! `tracker companies` and `tracker services`: the entity table in use beside the names the
//! devices used, so a user sees which entries matched and which names no entry knows.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    analysis::{domain, entity::EntityTable},
    store::Store,
};

/// A company of the table with what it matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CompanyRow {
    pub name: String,
    pub category: &'static str,
    /// Its domains, space-separated.
    pub domains: String,
    /// Distinct observed names it matched.
    pub names: u64,
    /// Connections to those names.
    pub connections: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceRow {
    pub name: String,
    pub company: String,
    pub domains: String,
    pub names: u64,
    pub connections: u64,
}

/// A name no entry matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnmatchedRow {
    pub name: String,
    /// Its registrable domain: what an entry would list.
    pub site: Option<String>,
    pub connections: u64,
}

/// The names flows were given since `since_ms` (local peers left out), with their connections.
fn observed(store: &Store, since_ms: i64) -> Result<Vec<(String, u64)>> {
    let mut stmt = store.conn().prepare_cached(
        "SELECT name, count(*) FROM flows
         WHERE last_seen >= ?1 AND name IS NOT NULL AND name_source != 'local'
         GROUP BY name",
    )?;
    let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect::<rusqlite::Result<_>>().context("reading the names flows were given")
}

/// Per entry `entry_of` finds for the observed names: how many names, how many connections.
fn tally<'a>(observed: Vec<(String, u64)>, entry_of: impl Fn(&str) -> Option<&'a str>) -> HashMap<&'a str, (u64, u64)> {
    let mut hits: HashMap<&str, (u64, u64)> = HashMap::new();
    for (name, n) in observed {
        if let Some(entry) = entry_of(&name) {
            let e = hits.entry(entry).or_default();
            e.0 += 1;
            e.1 += n;
        }
    }
    hits
}

/// Every company of `table`, the most matched first, then by name.
pub fn companies(store: &Store, table: &EntityTable, since_ms: i64) -> Result<Vec<CompanyRow>> {
    let hits = tally(observed(store, since_ms)?, |name| table.company_of(name).map(|m| m.entry.name.as_str()));
    let mut rows: Vec<CompanyRow> = table
        .companies()
        .iter()
        .map(|c| {
            let (names, connections) = hits.get(c.name.as_str()).copied().unwrap_or_default();
            CompanyRow {
                name: c.name.clone(),
                category: c.category.as_str(),
                domains: c.domains.join(" "),
                names,
                connections,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.connections.cmp(&a.connections).then(a.name.cmp(&b.name)));
    Ok(rows)
}

/// Every service of `table`, the most matched first, then by name.
pub fn services(store: &Store, table: &EntityTable, since_ms: i64) -> Result<Vec<ServiceRow>> {
    let hits = tally(observed(store, since_ms)?, |name| table.service_of(name).map(|m| m.entry.name.as_str()));
    let mut rows: Vec<ServiceRow> = table
        .services()
        .iter()
        .map(|s| {
            let (names, connections) = hits.get(s.name.as_str()).copied().unwrap_or_default();
            ServiceRow {
                name: s.name.clone(),
                company: s.company.clone(),
                domains: s.domains.join(" "),
                names,
                connections,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.connections.cmp(&a.connections).then(a.name.cmp(&b.name)));
    Ok(rows)
}

/// The names no company (for `services == false`) or no service matches, most connections
/// first.
pub fn unmatched(store: &Store, table: &EntityTable, since_ms: i64, services: bool) -> Result<Vec<UnmatchedRow>> {
    let mut rows: Vec<UnmatchedRow> = observed(store, since_ms)?
        .into_iter()
        .filter(|(name, _)| if services { table.service_of(name).is_none() } else { table.company_of(name).is_none() })
        .map(|(name, connections)| UnmatchedRow { site: domain::registrable(&name), name, connections })
        .collect();
    rows.sort_by(|a, b| b.connections.cmp(&a.connections).then(a.name.cmp(&b.name)));
    Ok(rows)
}
