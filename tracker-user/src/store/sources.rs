//! The sources of rows (the live interface, imported captures) and the record of each import.

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;

use super::{
    Store, Writer,
    schema::{self, LIVE_SOURCE},
};
use crate::timefmt;

/// A source as read commands use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub id: i64,
    pub name: String,
    /// Unix ms of its last row: what a duration in `--since` counts back from for an import.
    /// `None` for the live interface (now) and for an import with nothing stored.
    pub end_ms: Option<i64>,
}

/// One imported file, as `tracker sources` lists it; the field names are its JSON interface.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ImportRow {
    pub source: String,
    pub file: String,
    /// XXH3-128 of the file's bytes, hex.
    pub content: String,
    pub bytes: u64,
    pub packets: u64,
    /// RFC 3339 of its first and last packet.
    pub first_packet: Option<String>,
    pub last_packet: Option<String>,
    pub imported: String,
    /// `complete`, `stopped: REASON` (a damaged file) or `interrupted` (killed before its end).
    pub state: String,
}

/// An earlier import of the same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlierImport {
    pub source: String,
    pub file: String,
    pub started_ms: i64,
    pub packets: u64,
    /// Finished reading (to the end, or to the damage that stopped it).
    pub finished: bool,
    pub error: Option<String>,
}

impl Store {
    /// The source `--source` names (the live interface without it), or an error that lists the
    /// sources there are.
    pub fn source(&self, name: Option<&str>) -> Result<Source> {
        let Some(name) = name else {
            return Ok(Source { id: LIVE_SOURCE, name: "live".into(), end_ms: None });
        };
        let found: Option<(i64, String)> = self
            .conn
            .query_row("SELECT id, name FROM sources WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((id, name)) = found else {
            let names: Vec<String> = self.source_names()?;
            bail!(
                "no source named {} in {}; there are: {} (`tracker sources` lists the imports)",
                crate::text::quoted(name),
                self.path.display(),
                names.join(", ")
            );
        };
        let end_ms = if id == LIVE_SOURCE {
            None
        } else {
            // An import's rows are never packed: the rows' index answers.
            self.conn.query_row("SELECT max(last_seen) FROM main.flows WHERE source = ?1", [id], |r| r.get(0))?
        };
        Ok(Source { id, name, end_ms })
    }

    /// The VPN subnets the daemon last watched; none when no daemon ran on this database.
    pub fn local_nets(&self) -> Result<Vec<IpNet>> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [schema::META_LOCAL_NETS], |r| r.get(0))
            .optional()?;
        Ok(text.unwrap_or_default().split_whitespace().filter_map(|n| n.parse().ok()).collect())
    }

    fn source_names(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT name FROM sources ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>().context("reading the sources")
    }

    /// Every import, oldest first.
    pub fn imports(&self) -> Result<Vec<ImportRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT s.name, i.file, i.content, i.bytes, i.packets, i.first_ts, i.last_ts, i.started, i.finished,
                    i.error
             FROM imports i JOIN sources s ON s.id = i.source ORDER BY i.started, i.file",
        )?;
        let rows = stmt.query_map([], |r| {
            let finished: Option<i64> = r.get(8)?;
            let error: Option<String> = r.get(9)?;
            Ok(ImportRow {
                source: r.get(0)?,
                file: r.get(1)?,
                content: r.get(2)?,
                bytes: r.get::<_, i64>(3)? as u64,
                packets: r.get::<_, i64>(4)? as u64,
                first_packet: r.get::<_, Option<i64>>(5)?.map(timefmt::rfc3339),
                last_packet: r.get::<_, Option<i64>>(6)?.map(timefmt::rfc3339),
                imported: timefmt::rfc3339(r.get(7)?),
                state: match (finished, error) {
                    (Some(_), None) => "complete".into(),
                    (Some(_), Some(e)) => format!("stopped: {e}"),
                    (None, _) => "interrupted".into(),
                },
            })
        })?;
        rows.collect::<rusqlite::Result<_>>().context("reading the imports")
    }

    /// The import of these bytes (their XXH3-128, hex), if they were imported before.
    pub fn earlier_import(&self, content: &str) -> Result<Option<EarlierImport>> {
        Ok(self
            .conn
            .query_row(
                "SELECT s.name, i.file, i.started, i.packets, i.finished IS NOT NULL, i.error
                 FROM imports i JOIN sources s ON s.id = i.source WHERE i.content = ?1",
                [content],
                |r| {
                    Ok(EarlierImport {
                        source: r.get(0)?,
                        file: r.get(1)?,
                        started_ms: r.get(2)?,
                        packets: r.get::<_, i64>(3)? as u64,
                        finished: r.get(4)?,
                        error: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }
}

impl Writer<'_> {
    /// Records the VPN subnets the daemon names flows with ([`schema::META_LOCAL_NETS`]).
    pub fn set_local_nets(&self, nets: &[IpNet]) -> Result<()> {
        let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![schema::META_LOCAL_NETS, text.join(" ")],
        )?;
        Ok(())
    }

    /// The id of the source named `name`, created if new. "live" is the live interface's and
    /// cannot be an import's.
    pub fn import_source(&self, name: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT OR IGNORE INTO sources (name, created) VALUES (?1, ?2)",
            params![name, timefmt::now_ms()],
        )?;
        let id: i64 = self.conn.query_row("SELECT id FROM sources WHERE name = ?1", [name], |r| r.get(0))?;
        if id == LIVE_SOURCE {
            bail!("--source live is the live interface's; give the import another name");
        }
        Ok(id)
    }

    /// Records that an import of `file` (its bytes' hash, `content`) began.
    pub fn import_started(&self, content: &str, source: i64, file: &str, bytes: u64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO imports (content, source, file, bytes, started) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (content) DO UPDATE SET file = excluded.file, started = excluded.started,
                 finished = NULL, error = NULL",
            params![content, source, file, bytes as i64, timefmt::now_ms()],
        )?;
        Ok(())
    }

    /// Records how far an import got: packets read, the capture's time span, and, once it
    /// ended, when and why (`error`: the damage that stopped it).
    pub fn import_progress(
        &self,
        content: &str,
        packets: u64,
        span_ms: Option<(i64, i64)>,
        ended: Option<Option<&str>>,
    ) -> Result<()> {
        let (first, last) = span_ms.unzip();
        let finished = ended.map(|_| timefmt::now_ms());
        let error = ended.flatten();
        self.conn.execute(
            "UPDATE imports SET packets = ?2, first_ts = ?3, last_ts = ?4,
                 finished = coalesce(?5, finished), error = coalesce(?6, error)
             WHERE content = ?1",
            params![content, packets as i64, first, last, finished, error],
        )?;
        Ok(())
    }
}
