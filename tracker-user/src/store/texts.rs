//! The `texts` dictionary (schema migration 8): each text the compact rows repeat (addresses,
//! boot ids, names, labels, record types) stored once, and the writers' lookup of its id.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _};

/// Ids of the texts one write has used, so a sweep looks each distinct text up once. Lives for
/// one write only: an id it inserted is gone again if the transaction rolls back.
#[derive(Debug, Default)]
pub(crate) struct TextIds {
    ids: HashMap<String, i64, foldhash::fast::RandomState>,
    /// The same, by id: the texts of ids read back from rows.
    texts: HashMap<i64, String, foldhash::fast::RandomState>,
}

impl TextIds {
    /// The id of `text`, added to the dictionary when new.
    pub(crate) fn id(&mut self, conn: &Connection, text: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.ids.get(text) {
            return Ok(id);
        }
        let found =
            conn.prepare_cached("SELECT id FROM texts WHERE text = ?1")?.query_row([text], |r| r.get(0)).optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached("INSERT INTO texts (text) VALUES (?1)")?.execute([text])?;
                conn.last_insert_rowid()
            }
        };
        self.ids.insert(text.to_owned(), id);
        self.texts.insert(id, text.to_owned());
        Ok(id)
    }

    /// The text of `id`, read from the dictionary the first time.
    pub(crate) fn text(&mut self, conn: &Connection, id: i64) -> rusqlite::Result<String> {
        if let Some(text) = self.texts.get(&id) {
            return Ok(text.clone());
        }
        let text: String =
            conn.prepare_cached("SELECT text FROM texts WHERE id = ?1")?.query_row([id], |r| r.get(0))?;
        self.ids.insert(text.clone(), id);
        self.texts.insert(id, text.clone());
        Ok(text)
    }

    /// The id of `text`, or NULL for none.
    pub(crate) fn opt(&mut self, conn: &Connection, text: Option<&str>) -> rusqlite::Result<Option<i64>> {
        text.map(|t| self.id(conn, t)).transpose()
    }
}
