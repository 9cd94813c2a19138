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
    let mut text = format!("{VERSION}\n{}\n", offsets.len());
    for (tp, offset) in offsets {
        text.push_str(&format!("{} {} {offset}\n", tp.topic, tp.partition));
    }
    atomic_write(path, text.as_bytes(), SyncMode::Now)
}

/// Reads an offset checkpoint. A missing file is empty; a malformed one is reported and
/// treated as empty, which only makes recovery scan more (never less).
pub(crate) fn read_offsets(path: &Path) -> Result<BTreeMap<TopicPartition, u64>> {
    let text = match sys::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(StorageError::io("reading checkpoint", path, e)),
    };
    match parse_offsets(&text) {
        Ok(map) => Ok(map),
        Err(detail) => {
            warn!(path = %path.display(), detail, "ignoring malformed checkpoint; recovery will scan whole logs");
            Ok(BTreeMap::new())
        }
    }
}

fn parse_offsets(text: &str) -> std::result::Result<BTreeMap<TopicPartition, u64>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err("unknown version".into());
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("bad entry count")?;
    let mut map = BTreeMap::new();
    for line in lines {
        let mut fields = line.split(' ');
        let (Some(topic), Some(partition), Some(offset), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("bad line {line:?}"));
        };
        let partition = partition
            .parse()
            .map_err(|_| format!("bad partition in {line:?}"))?;
        let offset = offset
            .parse()
            .map_err(|_| format!("bad offset in {line:?}"))?;
        let tp = TopicPartition::validated(topic, partition).map_err(|e| e.to_string())?;
        map.insert(tp, offset);
    }
    if map.len() != count {
        return Err(format!("{} entries, header says {count}", map.len()));
    }
    Ok(map)
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
}
