//! The rows of an import file: CSV with a header row (`email`, then one column per
//! property; cells typed as `cells` says) or JSON Lines (`{"email": ..., "properties":
//! {...}}` a line; what `contacts export` writes, whose other fields are ignored).
//! A line that cannot be read as a row is a failed row of its own, never the end of
//! the import.

use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use super::cells;

/// One row as read, with the line it came from (1-based; a CSV header is line 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub email: String,
    pub properties: Map<String, Value>,
}

/// A line that is not a row, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub line: u64,
    pub message: String,
}

pub type Read1 = Result<Row, Unreadable>;

/// Rows of a file, one at a time (the file is never held whole).
pub enum Rows {
    Csv {
        reader: csv::Reader<Box<dyn Read + Send>>,
        columns: Vec<String>,
        email: usize,
        strings: bool,
        record: csv::StringRecord,
    },
    Jsonl {
        input: Box<dyn BufRead + Send>,
        line: u64,
    },
}

/// The longest JSON line read: a row's properties are at most 64 KiB, so a longer
/// line is refused whole rather than held, whatever the file holds.
const MAX_LINE_BYTES: u64 = 1024 * 1024;

impl Rows {
    /// CSV rows; fails when the header row is missing or has no `email` column.
    pub fn csv(input: Box<dyn Read + Send>, strings: bool) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let columns: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
        let email = columns
            .iter()
            .position(|c| c == "email")
            .ok_or_else(|| anyhow::anyhow!("the CSV header row has no `email` column"))?;
        Ok(Self::Csv {
            reader,
            columns,
            email,
            strings,
            record: csv::StringRecord::new(),
        })
    }

    pub fn jsonl(input: Box<dyn BufRead + Send>) -> Self {
        Self::Jsonl { input, line: 0 }
    }
}

impl Iterator for Rows {
    type Item = Read1;

    fn next(&mut self) -> Option<Read1> {
        match self {
            Self::Csv {
                reader,
                columns,
                email,
                strings,
                record,
            } => {
                let line = reader.position().line();
                match reader.read_record(record) {
                    Ok(false) => None,
                    Ok(true) => Some(csv_row(line, record, columns, *email, *strings)),
                    Err(err) => Some(Err(Unreadable {
                        line,
                        message: err.to_string(),
                    })),
                }
            }
            Self::Jsonl { input, line } => loop {
                *line += 1;
                let text = match read_line(input) {
                    Ok(None) => return None,
                    Ok(Some(text)) => text,
                    Err(message) => {
                        return Some(Err(Unreadable {
                            line: *line,
                            message,
                        }));
                    }
                };
                if text.trim().is_empty() {
                    continue;
                }
                return Some(json_row(*line, &text));
            },
        }
    }
}

/// The next line, at most `MAX_LINE_BYTES`; a longer one is skipped to its end and
/// reported, an invalid UTF-8 one reported. `None` at the end of the input.
fn read_line(input: &mut Box<dyn BufRead + Send>) -> Result<Option<String>, String> {
    let mut bytes = Vec::new();
    let read = input
        .by_ref()
        .take(MAX_LINE_BYTES + 1)
        .read_until(b'\n', &mut bytes)
        .map_err(|err| err.to_string())?;
    if read == 0 {
        return Ok(None);
    }
    if bytes.len() as u64 > MAX_LINE_BYTES && bytes.last() != Some(&b'\n') {
        // Drop the rest of the line without keeping it.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = input
                .by_ref()
                .take(64 * 1024)
                .read_until(b'\n', &mut rest)
                .map_err(|err| err.to_string())?;
            if n == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Err(format!("a line longer than {MAX_LINE_BYTES} bytes"));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "not UTF-8".to_owned())
}

fn csv_row(
    line: u64,
    record: &csv::StringRecord,
    columns: &[String],
    email: usize,
    strings: bool,
) -> Read1 {
    if record.len() != columns.len() {
        return Err(Unreadable {
            line,
            message: format!(
                "{} cells where the header has {} columns",
                record.len(),
                columns.len()
            ),
        });
    }
    let mut properties = Map::new();
    for (i, (column, cell)) in columns.iter().zip(record.iter()).enumerate() {
        if i == email {
            continue;
        }
        if let Some(value) = cells::value(cell, strings) {
            properties.insert(column.clone(), value);
        }
    }
    Ok(Row {
        line,
        email: record[email].to_owned(),
        properties,
    })
}

fn json_row(line: u64, text: &str) -> Read1 {
    let unreadable = |message: String| Unreadable { line, message };
    let value: Value =
        serde_json::from_str(text).map_err(|err| unreadable(format!("not JSON: {err}")))?;
    let Value::Object(mut object) = value else {
        return Err(unreadable("not a JSON object".into()));
    };
    let email = match object.remove("email") {
        Some(Value::String(email)) => email,
        _ => return Err(unreadable("no `email` string".into())),
    };
    let properties = match object.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(properties)) => properties,
        Some(_) => return Err(unreadable("`properties` is not an object".into())),
    };
    Ok(Row {
        line,
        email,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn csv_rows(text: &'static str) -> Vec<Read1> {
        Rows::csv(Box::new(text.as_bytes()), false)
            .expect("a header")
            .collect()
    }

    #[test]
    fn csv_rows_take_email_and_one_property_a_column() {
        let rows = csv_rows(
            "plan,email,seats,note\npro,a@example.com,3,\"x, y\"\nfree,b@example.com,,\n\"bad\nrow\",c@example.com\n",
        );
        assert_eq!(rows.len(), 3, "{rows:?}");
        let first = rows[0].clone().expect("a row");
        assert_eq!(first.line, 2);
        assert_eq!(first.email, "a@example.com");
        assert_eq!(
            Value::Object(first.properties),
            json!({"plan": "pro", "seats": 3, "note": "x, y"})
        );
        let second = rows[1].clone().expect("a row");
        assert_eq!(Value::Object(second.properties), json!({"plan": "free"}));
        let third = rows[2].clone().expect_err("too few cells");
        assert_eq!(third.line, 4, "{third:?}");
    }

    #[test]
    fn a_csv_without_an_email_column_is_refused() {
        assert!(Rows::csv(Box::new("name\nx\n".as_bytes()), false).is_err());
    }

    #[test]
    fn an_overlong_json_line_is_refused_and_reading_goes_on() {
        let long = format!(
            "{{\"email\":\"{}@example.com\"}}\n",
            "x".repeat(2 * 1024 * 1024)
        );
        let text = format!("{long}{{\"email\":\"b@example.com\"}}\n");
        let rows: Vec<Read1> = Rows::jsonl(Box::new(std::io::Cursor::new(text))).collect();
        assert_eq!(
            rows.len(),
            2,
            "{:?}",
            rows.iter().map(|r| r.is_ok()).collect::<Vec<_>>()
        );
        assert!(
            rows[0]
                .clone()
                .expect_err("too long")
                .message
                .contains("longer")
        );
        let next = rows[1].clone().expect("the next line is read");
        assert_eq!((next.line, next.email.as_str()), (2, "b@example.com"));
    }

    #[test]
    fn json_lines_are_rows_and_export_lines_read_back() {
        let text = concat!(
            "{\"email\":\"a@example.com\",\"properties\":{\"plan\":\"pro\"}}\n",
            "\n",
            "not json\n",
            "{\"id\":\"con_1\",\"email\":\"b@example.com\",\"properties\":{},\"suppressed\":false}\n",
            "{\"email\":3}\n",
        );
        let rows: Vec<Read1> = Rows::jsonl(Box::new(text.as_bytes())).collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].clone().expect("row").line, 1);
        assert_eq!(rows[1].clone().expect_err("not json").line, 3);
        assert_eq!(
            rows[2].clone().expect("an export line").email,
            "b@example.com"
        );
        assert_eq!(rows[3].clone().expect_err("no email").line, 5);
    }
}
