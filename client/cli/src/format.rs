//! How `weir consume` and `weir tail` print a record: `raw`, `json` or a template.
//!
//! - `raw`: the value's bytes as they are, then a newline (a null value prints an empty line).
//! - `json`: one object per line: `topic`, `partition`, `offset`, `timestamp` (ms), `key`,
//!   `value`, `headers` (a list of `{"key", "value"}`, since keys may repeat). Bytes that are
//!   valid UTF-8 are JSON strings; other bytes are `{"base64": "..."}` (standard alphabet,
//!   padded), so nothing is lost or mangled; null is `null`.
//! - a template: text with `%t` topic, `%p` partition, `%o` offset, `%k` key, `%v` value,
//!   `%T` timestamp (ms), `%h` headers (`k=v,k2=v2`; a null value prints the key alone), `%%`,
//!   and the escapes `\n`, `\t`, `\r`, `\\`. No newline is added (as kcat's `-f`): end the
//!   template with `\n`. Keys and values print as raw bytes; null prints nothing.

use std::io::{self, Write};
use std::str::FromStr;

use base64::Engine;
use serde::ser::{Serialize, SerializeMap, Serializer};
use weir_client::{ConsumerRecord, Header};

/// One way of printing records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFormat {
    Raw,
    Json,
    Template(Vec<Piece>),
}

/// A part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "raw" => return Ok(OutputFormat::Raw),
            "json" => return Ok(OutputFormat::Json),
            _ => {}
        }
        let pieces = parse_template(text)?;
        if pieces.iter().all(|piece| matches!(piece, Piece::Text(_))) {
            return Err(format!(
                "{text:?} is not a format: use raw, json, or a template with %v (value), %k (key), \
                 %o (offset), %p (partition), %t (topic), %T (timestamp), %h (headers), e.g. '%k=%v\\n'"
            ));
        }
        Ok(OutputFormat::Template(pieces))
    }
}

fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let placeholder = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v') => Piece::Value,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('%') => {
                    literal.push(b'%');
                    continue;
                }
                Some(other) => {
                    return Err(format!(
                        "unknown placeholder %{other} in the template; known: %t %p %o %k %v %T %h %%"
                    ));
                }
                None => {
                    return Err(
                        "the template ends with a lone %; write %% for a percent sign".into(),
                    );
                }
            },
            '\\' => {
                match chars.next() {
                    Some('n') => literal.push(b'\n'),
                    Some('t') => literal.push(b'\t'),
                    Some('r') => literal.push(b'\r'),
                    Some('\\') => literal.push(b'\\'),
                    // Anything else stays as written.
                    Some(other) => {
                        literal.push(b'\\');
                        let mut buf = [0; 4];
                        literal.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => literal.push(b'\\'),
                }
                continue;
            }
            other => {
                let mut buf = [0; 4];
                literal.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(placeholder);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

impl OutputFormat {
    /// Writes one record.
    pub fn write(&self, out: &mut impl Write, record: &ConsumerRecord) -> io::Result<()> {
        match self {
            OutputFormat::Raw => {
                out.write_all(record.value.as_deref().unwrap_or_default())?;
                out.write_all(b"\n")
            }
            OutputFormat::Json => {
                serde_json::to_writer(&mut *out, &JsonRecord(record))?;
                out.write_all(b"\n")
            }
            OutputFormat::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => out.write_all(text)?,
                        Piece::Topic => out.write_all(record.topic.as_bytes())?,
                        Piece::Partition => write!(out, "{}", record.partition)?,
                        Piece::Offset => write!(out, "{}", record.offset)?,
                        Piece::Key => out.write_all(record.key.as_deref().unwrap_or_default())?,
                        Piece::Value => {
                            out.write_all(record.value.as_deref().unwrap_or_default())?
                        }
                        Piece::Timestamp => write!(out, "{}", record.timestamp)?,
                        Piece::Headers => write_headers(out, &record.headers)?,
                    }
                }
                Ok(())
            }
        }
    }
}

fn write_headers(out: &mut impl Write, headers: &[Header]) -> io::Result<()> {
    for (i, header) in headers.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(&header.key)?;
        if let Some(value) = &header.value {
            out.write_all(b"=")?;
            out.write_all(value)?;
        }
    }
    Ok(())
}

/// A record as a JSON object (see the module docs).
struct JsonRecord<'a>(&'a ConsumerRecord);

/// Bytes as a JSON string when UTF-8, else `{"base64": ...}`.
struct JsonBytes<'a>(&'a [u8]);

struct JsonHeaders<'a>(&'a [Header]);

impl Serialize for JsonBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(self.0),
                )?;
                map.end()
            }
        }
    }
}

impl Serialize for JsonHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|header| {
            let mut entry = std::collections::BTreeMap::new();
            entry.insert("key", Some(JsonBytes(&header.key)));
            entry.insert("value", header.value.as_deref().map(JsonBytes));
            entry
        }))
    }
}

impl Serialize for JsonRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0;
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("topic", &*record.topic)?;
        map.serialize_entry("partition", &record.partition)?;
        map.serialize_entry("offset", &record.offset)?;
        map.serialize_entry("timestamp", &record.timestamp)?;
        map.serialize_entry("key", &record.key.as_deref().map(JsonBytes))?;
        map.serialize_entry("value", &record.value.as_deref().map(JsonBytes))?;
        map.serialize_entry("headers", &JsonHeaders(&record.headers))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            timestamp: 1_714_564_800_000,
            key: Some(Bytes::from_static(b"user-1")),
            value: Some(Bytes::from_static(b"paid \"12\"")),
            headers: vec![
                Header {
                    key: Bytes::from_static(b"source"),
                    value: Some(Bytes::from_static(b"web")),
                },
                Header {
                    key: Bytes::from_static(b"trace"),
                    value: None,
                },
            ],
        }
    }

    fn print(format: &str, record: &ConsumerRecord) -> String {
        let mut out = Vec::new();
        format
            .parse::<OutputFormat>()
            .unwrap()
            .write(&mut out, record)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn raw_prints_the_value_and_a_newline() {
        assert_eq!(print("raw", &record()), "paid \"12\"\n");
        let null = ConsumerRecord {
            value: None,
            ..record()
        };
        assert_eq!(print("raw", &null), "\n");
    }

    #[test]
    fn json_is_one_object_per_line() {
        let line = print("json", &record());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "topic": "orders", "partition": 2, "offset": 41, "timestamp": 1_714_564_800_000i64,
                "key": "user-1", "value": "paid \"12\"",
                "headers": [{"key": "source", "value": "web"}, {"key": "trace", "value": null}],
            })
        );
    }

    #[test]
    fn json_keeps_binary_bytes_as_base64() {
        let binary = ConsumerRecord {
            key: None,
            value: Some(Bytes::from_static(&[0xff, 0x00, 0x61])),
            headers: vec![],
            ..record()
        };
        let parsed: serde_json::Value = serde_json::from_str(&print("json", &binary)).unwrap();
        assert_eq!(parsed["key"], serde_json::Value::Null);
        assert_eq!(parsed["value"], serde_json::json!({"base64": "/wBh"}));
    }

    #[test]
    fn templates_substitute_and_unescape() {
        assert_eq!(
            print("%t/%p@%o %k=%v\\n", &record()),
            "orders/2@41 user-1=paid \"12\"\n"
        );
        assert_eq!(
            print("%T\\t%h\\n", &record()),
            "1714564800000\tsource=web,trace\n"
        );
        assert_eq!(print("100%% %v", &record()), "100% paid \"12\"");
        assert_eq!(print("\\x%v\\\\", &record()), "\\xpaid \"12\"\\");
        let keyless = ConsumerRecord {
            key: None,
            ..record()
        };
        assert_eq!(print("[%k]", &keyless), "[]");
    }

    #[test]
    fn bad_formats_are_refused_with_help() {
        for bad in ["jsno", "%x", "%v%", "plain text\\n"] {
            assert!(bad.parse::<OutputFormat>().is_err(), "{bad}");
        }
        let error = "%q".parse::<OutputFormat>().unwrap_err();
        assert!(error.contains("%q"), "{error}");
    }
}
