//! Rendering of listings: aligned tables for people, JSON and CSV for scripts. Every listing goes
//! through [`render`], so the three formats always carry the same fields under the same names.

use std::io::Write;

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for reading.
    Table,
    /// A JSON array of objects; field names are a stable interface.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Writes `rows` to `out`. `columns` are the field names in display order.
pub fn render<T: Serialize>(out: &mut dyn Write, format: Format, columns: &[&str], rows: &[T]) -> Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, rows).context("writing JSON")?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(columns)?;
            for row in rows {
                let obj = serde_json::to_value(row)?;
                w.write_record(columns.iter().map(|c| cell(&obj[*c])))?;
            }
            w.flush()?;
        }
        Format::Table => table(out, columns, rows)?,
    }
    Ok(())
}

/// A cell exactly as stored: strings bare, numbers and booleans as JSON writes them, null empty.
/// CSV writes this faithfully (the csv crate quotes what needs quoting), like JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A cell for a terminal: [`cell`] with control characters (C0, DEL, C1) as `\DDD`, the
/// escaping DNS names already use (ESC is `\027`): names and comments are untrusted input and
/// must not move a terminal's cursor.
fn table_cell(v: &Value) -> String {
    crate::text::escape_controls(&cell(v)).into_owned()
}

fn table<T: Serialize>(out: &mut dyn Write, columns: &[&str], rows: &[T]) -> Result<()> {
    let cells: Vec<Vec<(String, bool)>> = rows
        .iter()
        .map(|r| {
            let obj = serde_json::to_value(r)?;
            Ok(columns.iter().map(|c| (table_cell(&obj[*c]), obj[*c].is_number())).collect())
        })
        .collect::<Result<_>>()?;
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for row in &cells {
        for (w, (s, _)) in widths.iter_mut().zip(row) {
            *w = (*w).max(s.chars().count());
        }
    }
    // A column of numbers is right-aligned, its header too.
    let numeric: Vec<bool> = (0..columns.len()).map(|i| cells.iter().any(|row| row[i].1)).collect();
    let header: Vec<String> = columns
        .iter()
        .zip(&widths)
        .zip(&numeric)
        .map(|((c, w), num)| {
            let c = c.to_uppercase();
            if *num { format!("{c:>w$}") } else { format!("{c:<w$}") }
        })
        .collect();
    writeln!(out, "{}", header.join("  ").trim_end())?;
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|((s, num), w)| if *num { format!("{s:>w$}") } else { format!("{s:<w$}") })
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    if rows.is_empty() {
        writeln!(out, "(none)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: String,
        n: u64,
        note: Option<String>,
    }

    fn rows() -> Vec<Row> {
        vec![
            Row { name: "a,b".into(), n: 1200, note: None },
            Row { name: "evil\x1b[2J".into(), n: 7, note: Some("x".into()) },
        ]
    }

    fn text(f: Format) -> String {
        let mut out = Vec::new();
        render(&mut out, f, &["name", "n", "note"], &rows()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_aligns_numbers_right_and_escapes_controls() {
        let t = text(Format::Table);
        let lines: Vec<&str> = t.lines().collect();
        // The escaped name (ESC as \027) is 11 characters wide and sets the first column's width.
        assert_eq!(lines[0], format!("NAME{}N  NOTE", " ".repeat(7 + 2 + 3)));
        assert_eq!(lines[1], format!("a,b{}1200", " ".repeat(8 + 2)));
        assert_eq!(lines[2], format!("evil\\027[2J{}7  x", " ".repeat(2 + 3)));
    }

    #[test]
    fn csv_quotes_and_leaves_null_empty() {
        // Faithful, as JSON: the stored text, control characters included.
        assert_eq!(text(Format::Csv), "name,n,note\n\"a,b\",1200,\nevil\x1b[2J,7,x\n");
        let mut out = Vec::new();
        let rows = [Row { name: "two\nlines \"q\"".into(), n: 0, note: Some("\u{85}".into()) }];
        render(&mut out, Format::Csv, &["name", "n", "note"], &rows).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "name,n,note\n\"two\nlines \"\"q\"\"\",0,\u{85}\n");
    }

    #[test]
    fn json_keeps_raw_values() {
        let v: Value = serde_json::from_str(&text(Format::Json)).unwrap();
        assert_eq!(v[0]["name"], "a,b");
        assert_eq!(v[0]["n"], 1200);
        assert_eq!(v[0]["note"], Value::Null);
        assert_eq!(v[1]["name"], "evil\u{1b}[2J");
    }
}
