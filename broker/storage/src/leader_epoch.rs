//! The leader-epoch file: a partition's epoch history (epoch -> start offset, Kafka's
//! `leader-epoch-checkpoint`, KIP-101) kept beside its segments, so a follower that restarts
//! still knows where each epoch of its log began and can find its divergence from the leader.
//!
//! File: `{partition dir}/leader-epoch`, replaced atomically and durably (tmp, fdatasync,
//! rename, fsync of the directory: [`atomic_write`]). Layout, big-endian (`segments-format.md`,
//! section 7, "`leader-epoch`"):
//!
//! | field | size | meaning |
//! |---|---|---|
//! | magic | 4 | `WLE1` (the `1` is the version) |
//! | crc | 4 | CRC-32 (ISO-HDLC, as every weir file) of everything after this field |
//! | count | 4 | number of entries (u32) |
//! | entries | 12 each | leader epoch (u32), start offset (u64), oldest first |
//!
//! Owns the encoding, the strict decoding, loading (a missing file is an empty history: a
//! partition written before the file existed) and storing, and [`fit_to_log`], the one rule
//! that makes a history describe a log whose ends moved (retention, recovery, truncation).
//!
//! Invariants: a file is accepted only if its CRC matches, its length is exactly what its count
//! says, and its entries keep [`EpochHistory`]'s invariants (epochs strictly increase, start
//! offsets strictly increase, every start at most `i64::MAX`); anything else is
//! [`StorageError::Corrupt`] naming the path, and the partition does not open (unlike a
//! derived-state snapshot, this file cannot be rebuilt from the log: the batches carry no
//! epoch).

use std::path::Path;

use weir_replication::{EpochHistory, LeaderEpoch, Offset};

use crate::error::{Result, StorageError};
use crate::fs::{SyncMode, atomic_write};
use crate::sys;

pub const FILE_NAME: &str = "leader-epoch";
const MAGIC: &[u8; 4] = b"WLE1";
const HEADER_LEN: usize = 12;
const ENTRY_LEN: usize = 12;
/// What a corrupt file is called in [`StorageError::Corrupt`].
const WHAT: &str = "leader-epoch file";

/// The file's bytes for `history`.
pub fn encode(history: &EpochHistory) -> Vec<u8> {
    let entries = history.entries();
    let mut body = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
    // An epoch history has one entry per leadership change: never near u32::MAX entries.
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for &(LeaderEpoch(epoch), start) in entries {
        body.extend_from_slice(&epoch.to_be_bytes());
        body.extend_from_slice(&start.to_be_bytes());
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes the file's bytes, refusing anything `segments-format.md` says a reader must refuse;
/// the error says what is wrong.
pub fn decode(bytes: &[u8]) -> std::result::Result<EpochHistory, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..4] != MAGIC {
        return Err(format!("bad magic {:02x?} (expected WLE1)", &bytes[..4]));
    }
    let crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let body = &bytes[8..];
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(format!(
            "CRC mismatch: stored {crc:#010x}, computed {actual:#010x}"
        ));
    }
    let count = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let entries = &body[4..];
    if Some(entries.len()) != count.checked_mul(ENTRY_LEN) {
        return Err(format!(
            "{} entry bytes for {count} entries of {ENTRY_LEN} bytes",
            entries.len()
        ));
    }
    let mut history = EpochHistory::new();
    let mut previous: Option<(u32, u64)> = None;
    for entry in entries.chunks_exact(ENTRY_LEN) {
        let mut epoch = [0u8; 4];
        let mut start = [0u8; 8];
        epoch.copy_from_slice(&entry[..4]);
        start.copy_from_slice(&entry[4..]);
        let (epoch, start) = (u32::from_be_bytes(epoch), u64::from_be_bytes(start));
        if start > i64::MAX as u64 {
            return Err(format!("epoch {epoch} starts at {start}, past i64::MAX"));
        }
        // Stricter than `assign`, which would silently replace an entry with the same start: a
        // file written by `encode` never has two, so one that does is damaged.
        if let Some((e, s)) = previous
            && (epoch <= e || start <= s)
        {
            return Err(format!(
                "entry (epoch {epoch}, start {start}) does not follow (epoch {e}, start {s})"
            ));
        }
        history
            .assign(LeaderEpoch(epoch), start)
            .map_err(|e| format!("entry (epoch {epoch}, start {start}): {e:?}"))?;
        previous = Some((epoch, start));
    }
    Ok(history)
}

/// The history stored in `dir`: empty if there is no file (a partition written before epochs
/// were kept, or one no leader has written to); [`StorageError::Corrupt`] naming the file if it
/// does not decode.
pub fn load(dir: &Path) -> Result<EpochHistory> {
    let path = dir.join(FILE_NAME);
    match sys::read(&path) {
        Ok(bytes) => decode(&bytes).map_err(|detail| StorageError::Corrupt {
            what: WHAT,
            path,
            detail,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EpochHistory::new()),
        Err(e) => Err(StorageError::io("reading leader-epoch file", path, e)),
    }
}

/// Replaces the file in `dir` with `history`, durably, before returning.
pub fn store(dir: &Path, history: &EpochHistory) -> Result<()> {
    atomic_write(&dir.join(FILE_NAME), &encode(history), SyncMode::Now)
}

/// `history` made to describe the log `[log_start, log_end)`:
/// - entries wholly below `log_start` collapse into the last one starting at or below it, its
///   start raised to `log_start` (what Kafka's `truncateFromStart` does after retention);
/// - then entries starting at or past `log_end` own no record and are dropped
///   ([`EpochHistory::truncate_from_end`]): after a truncation, or after recovery cut a tail
///   (or after a crash between a truncation's cut and its history write, which is why the log
///   is cut first). In this order, so an empty log (`log_start == log_end`) keeps no entry.
///
/// Idempotent; the result keeps [`EpochHistory`]'s invariants, and with `log_start <= log_end`
/// every start lies in `[log_start, log_end)`. Retention passes `u64::MAX` as the end (it
/// moves only the start).
pub fn fit_to_log(history: &EpochHistory, log_start: Offset, log_end: Offset) -> EpochHistory {
    let entries = history.entries();
    // Index of the last entry starting at or below the log start: everything before it is
    // wholly below the log start.
    let keep_from = entries
        .partition_point(|&(_, start)| start <= log_start)
        .saturating_sub(1);
    let mut fitted = if keep_from == 0 && entries.first().is_none_or(|&(_, s)| s >= log_start) {
        history.clone()
    } else {
        let mut collapsed = EpochHistory::new();
        for (k, &(epoch, start)) in entries.iter().enumerate().skip(keep_from) {
            let start = if k == keep_from {
                start.max(log_start)
            } else {
                start
            };
            // Epochs still increase and starts after the first stay above `log_start`, so
            // this cannot refuse; if it ever did, dropping the entry is the conservative answer.
            let _ = collapsed.assign(epoch, start);
        }
        collapsed
    };
    fitted.truncate_from_end(log_end);
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(entries: &[(u32, u64)]) -> EpochHistory {
        let mut history = EpochHistory::new();
        for &(e, s) in entries {
            history.assign(LeaderEpoch(e), s).unwrap();
        }
        history
    }

    fn pairs(history: &EpochHistory) -> Vec<(u32, u64)> {
        history.entries().iter().map(|&(e, s)| (e.0, s)).collect()
    }

    #[test]
    fn a_history_round_trips_and_every_damage_is_refused() {
        let history = h(&[(1, 0), (3, 17), (7, 1842)]);
        let bytes = encode(&history);
        assert_eq!(bytes.len(), HEADER_LEN + 3 * ENTRY_LEN);
        assert_eq!(&bytes[..4], b"WLE1");
        // Count, then the second entry's epoch and start, big-endian.
        assert_eq!(&bytes[8..12], &[0, 0, 0, 3]);
        assert_eq!(&bytes[24..36], &[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 17]);
        assert_eq!(decode(&bytes).unwrap(), history);
        assert_eq!(
            decode(&encode(&EpochHistory::new())).unwrap(),
            EpochHistory::new()
        );
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(
                decode(&damaged).is_err(),
                "a flip at byte {i} went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "a file cut to {len} bytes was accepted"
            );
        }
    }

    /// A file whose CRC matches but whose entries break the history's invariants (written by
    /// something else, or a bug) is refused too, not silently "repaired" by `assign`.
    #[test]
    fn entries_out_of_order_are_refused_even_with_a_good_crc() {
        let forge = |entries: &[(u32, u64)]| {
            let mut body = (entries.len() as u32).to_be_bytes().to_vec();
            for &(e, s) in entries {
                body.extend_from_slice(&e.to_be_bytes());
                body.extend_from_slice(&s.to_be_bytes());
            }
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
            out.extend_from_slice(&body);
            out
        };
        assert!(decode(&forge(&[(1, 0), (2, 5)])).is_ok());
        for bad in [
            &[(2, 0), (1, 5)][..],
            &[(1, 0), (1, 5)],
            &[(1, 5), (2, 5)],
            &[(1, 5), (2, 4)],
            &[(1, u64::MAX)],
        ] {
            assert!(decode(&forge(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn fit_to_log_drops_the_tail_and_collapses_the_head() {
        let history = h(&[(1, 0), (3, 10), (4, 20), (6, 30)]);
        assert_eq!(
            pairs(&fit_to_log(&history, 0, 40)),
            [(1, 0), (3, 10), (4, 20), (6, 30)]
        );
        // An epoch starting at the log end owns no record.
        assert_eq!(
            pairs(&fit_to_log(&history, 0, 30)),
            [(1, 0), (3, 10), (4, 20)]
        );
        assert_eq!(
            pairs(&fit_to_log(&history, 0, 25)),
            [(1, 0), (3, 10), (4, 20)]
        );
        // Retention: the last epoch starting at or below the log start keeps it as its start.
        assert_eq!(
            pairs(&fit_to_log(&history, 15, 40)),
            [(3, 15), (4, 20), (6, 30)]
        );
        assert_eq!(pairs(&fit_to_log(&history, 20, 40)), [(4, 20), (6, 30)]);
        assert_eq!(pairs(&fit_to_log(&history, 35, 40)), [(6, 35)]);
        // Entries all above the log start (a history that begins later than the log) stay.
        let late = h(&[(5, 12), (6, 30)]);
        assert_eq!(pairs(&fit_to_log(&late, 10, 40)), [(5, 12), (6, 30)]);
        // Both ends at once, and idempotence.
        let fitted = fit_to_log(&history, 12, 30);
        assert_eq!(pairs(&fitted), [(3, 12), (4, 20)]);
        assert_eq!(fit_to_log(&fitted, 12, 30), fitted);
        assert!(fit_to_log(&history, 0, 0).entries().is_empty());
        // Retention deleted everything but an empty active segment: nothing is left to own.
        assert!(fit_to_log(&history, 40, 40).entries().is_empty());
        assert_eq!(pairs(&fit_to_log(&history, 40, u64::MAX)), [(6, 40)]);
    }
}
