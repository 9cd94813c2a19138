//! Data-directory checkpoint files (formats in `segments-format.md`, "Checkpoints"):
//!
//! - `recovery-point-offset-checkpoint`: per partition, the offset below which everything was
//!   synced. After an unclean stop, recovery scans only from the segment holding it.
//! - `log-start-offset-checkpoint`: per partition, the first offset retention kept.
//! - `.clean-shutdown`: an empty marker written last by a clean close and removed first by an
//!   open, so its presence proves the previous process flushed and closed everything.
//!
//! Offset files are Kafka's text format: a version line `0`, an entry-count line, then one
//! `topic partition offset` line per partition. They are replaced atomically.

use std::collections::BTreeMap;
use std::path::Path;

use tracing::warn;

use super::error::{Result, StorageError};
use super::fs::{SyncMode, atomic_write};
use super::sys;
use weir_proto::topic::TopicPartition;

pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
pub(crate) const LOG_START_FILE: &str = "log-start-offset-checkpoint";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const VERSION: &str = "0";

/// Writes an offset checkpoint atomically.
pub(crate) fn write_offsets(path: &Path, offsets: &BTreeMap<TopicPartition, u64>) -> Result<()> {
    atomic_write(path, render_offsets(offsets).as_bytes(), SyncMode::Now)
}

/// The text of an offset checkpoint: version, count, one `topic partition offset` line each.
pub(crate) fn render_offsets(offsets: &BTreeMap<TopicPartition, u64>) -> String {
    let mut text = format!("{VERSION}\n{}\n", offsets.len());
    for (tp, offset) in offsets {
        text.push_str(&format!("{} {} {offset}\n", tp.topic, tp.partition));
    }
    text
}

/// Reads an offset checkpoint. A missing file is empty; a malformed one (including one that
/// is not UTF-8 text) is reported and treated as empty, which only makes recovery scan more
/// (never less).
pub(crate) fn read_offsets(path: &Path) -> Result<BTreeMap<TopicPartition, u64>> {
    let parsed = match sys::read_to_string(path) {
        Ok(text) => parse_offsets(text.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        // Not UTF-8 (read_to_string's only InvalidData): garbled like any other malformed file,
        // not a reason to keep the data directory from opening.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(format!("not text: {e}")),
        Err(e) => return Err(StorageError::io("reading checkpoint", path, e)),
    };
    match parsed {
        Ok(map) => Ok(map),
        Err(detail) => {
            warn!(path = %path.display(), detail, "ignoring malformed checkpoint; recovery will scan whole logs");
            Ok(BTreeMap::new())
        }
    }
}

/// Parses an offset checkpoint's bytes, refusing what `segments-format.md` says a reader must
/// refuse. Strict where Rust's parsers are lenient: lines end in `\n` only (a `\r` stays in
/// its line and fails it), and numbers are ASCII digits only (no sign).
pub(crate) fn parse_offsets(
    bytes: &[u8],
) -> std::result::Result<BTreeMap<TopicPartition, u64>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let mut lines = text.split_terminator('\n');
    if lines.next() != Some(VERSION) {
        return Err("unknown version".into());
    }
    let count: usize = lines.next().and_then(decimal).ok_or("bad entry count")?;
    let mut map = BTreeMap::new();
    for line in lines {
        let mut fields = line.split(' ');
        let (Some(topic), Some(partition), Some(offset), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("bad line {line:?}"));
        };
        let partition = decimal(partition).ok_or_else(|| format!("bad partition in {line:?}"))?;
        let offset = decimal(offset).ok_or_else(|| format!("bad offset in {line:?}"))?;
        let tp = TopicPartition::validated(topic, partition).map_err(|e| e.to_string())?;
        map.insert(tp, offset);
    }
    if map.len() != count {
        return Err(format!("{} entries, header says {count}", map.len()));
    }
    Ok(map)
}

/// A decimal number of ASCII digits (`str::parse` alone also accepts a leading `+`).
fn decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn roundtrip_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECOVERY_POINT_FILE);
        let mut m = BTreeMap::new();
        m.insert(TopicPartition::validated("a", 0).unwrap(), 5);
        m.insert(TopicPartition::validated("b.c", 3).unwrap(), 77);
        write_offsets(&path, &m).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "0\n2\na 0 5\nb.c 3 77\n"
        );
        assert_eq!(read_offsets(&path).unwrap(), m);
        fs::write(&path, "0\n3\na 0 5\n").unwrap();
        assert!(read_offsets(&path).unwrap().is_empty());
        assert!(
            read_offsets(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }

    /// A checkpoint that is not UTF-8 (a garbled sector) is malformed, so empty: not an I/O
    /// error that would keep the data directory from opening.
    #[test]
    fn a_checkpoint_that_is_not_utf8_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECOVERY_POINT_FILE);
        fs::write(&path, b"0\n1\na 0 5\xff\n").unwrap();
        assert!(read_offsets(&path).unwrap().is_empty());
    }

    /// What the spec's reader must refuse, including what `str::parse` and `str::lines` would
    /// let through: signed numbers and CRLF line ends.
    #[test]
    fn the_reader_is_as_strict_as_the_spec() {
        assert_eq!(parse_offsets(b"0\n1\na 0 5\n").unwrap().len(), 1);
        assert_eq!(parse_offsets(b"0\n1\na 0 5").unwrap().len(), 1);
        for bad in [
            &b"0\n+1\na 0 5\n"[..],
            b"0\n1\na +0 5\n",
            b"0\n1\na 0 +5\n",
            b"0\n1\na 0 -5\n",
            b"0\r\n1\r\na 0 5\r\n",
            b"0\n1\na 0 5\r\n",
            b"0\n1\na 0 5\n\n",
            b"0\n1\na  0 5\n",
            b"0\n2\na 0 5\na 0 6\n",
            b"1\n0\n",
            b"0\n1\n.. 0 5\n",
            b"0\n1\na 4294967296 5\n",
        ] {
            assert!(
                parse_offsets(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
