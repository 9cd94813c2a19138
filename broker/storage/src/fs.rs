//! File-system primitives with the durability rules the engine relies on.
//!
//! - New files that must survive a crash whole are written as `tmp -> fsync -> rename ->
//!   fsync(dir)` ([`atomic_write`], [`create_preallocated`]): after a crash a reader finds the
//!   old file or the complete new one, never a prefix.
//! - Disk blocks are reserved with `fallocate` ahead of the write position ([`allocate`]):
//!   a full disk is an ENOSPC error when reserving, before any byte of a batch is written, and
//!   extents stay contiguous.
//!
//! The syscalls themselves go through [`super::sys`], the engine's one seam to the file system
//! (and its failpoints).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{Result, StorageError};
use super::sys;

/// File name suffixes of a segment's three files.
pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Suffix of files being written; any found at open time are leftovers of a crash.
pub(crate) const TMP_SUFFIX: &str = "tmp";

/// `dir/{base_offset:020}.{suffix}`: segment files sort by name in offset order.
pub(crate) fn segment_path(dir: &Path, base_offset: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Parses a segment file name back into (base offset, suffix). `None` for anything else.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base: u64 = stem.parse().ok()?;
    // Offsets never pass i64::MAX (the wire's and Kafka's limit), so neither does a base; a
    // larger one would overflow `base + relative offset` in recovery.
    (base <= i64::MAX as u64).then_some((base, suffix))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// fsyncs a directory, making renames and unlinks in it durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    sys::fsync_dir(dir).map_err(|e| StorageError::io("syncing directory", dir, e))
}

/// Whether a write is made durable now, or left to a later `syncfs` of the whole data dir
/// (used by a clean close, which syncs everything once before writing its marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Now,
    Deferred,
}

/// Replaces `path` with `contents` atomically (readers see the old or the new file, never a
/// prefix) and, with [`SyncMode::Now`], durably.
pub fn atomic_write(path: &Path, contents: &[u8], sync: SyncMode) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let f = sys::open(
            &tmp,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        sys::pwrite_all(&f, contents, 0)?;
        if sync == SyncMode::Now {
            sys::fdatasync(&f)?;
        }
        sys::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = sys::unlink(&tmp);
        return Err(StorageError::io("writing file", path, e));
    }
    match sync {
        SyncMode::Now => fsync_dir(path.parent().unwrap_or(Path::new("."))),
        SyncMode::Deferred => Ok(()),
    }
}

/// Reserves disk blocks for `[offset, offset + len)` of `file`, extending its length.
/// Falls back to writing zeros where the file system has no fallocate.
pub(crate) fn allocate(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    let unsupported = |e: &std::io::Error| {
        [rustix::io::Errno::OPNOTSUPP, rustix::io::Errno::NOSYS]
            .iter()
            .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
    };
    match sys::fallocate(file, offset, len) {
        Ok(()) => Ok(()),
        Err(e) if unsupported(&e) => {
            let zeros = vec![0u8; 1 << 20];
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(zeros.len() as u64) as usize;
                sys::pwrite_all(file, &zeros[..n], at)
                    .map_err(|e| StorageError::io("preallocating segment", path, e))?;
                at += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(StorageError::io("preallocating segment", path, e)),
    }
}

/// Creates `path` with `len` bytes allocated, atomically and durably, and opens it read-write.
/// Fails with `DiskFull` (leaving nothing behind) if the blocks cannot be reserved.
pub(crate) fn create_preallocated(path: &Path, len: u64) -> Result<File> {
    let tmp = tmp_path(path);
    let result = (|| {
        let f = sys::open(
            &tmp,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
        .map_err(|e| StorageError::io("creating segment", &tmp, e))?;
        if len > 0 {
            allocate(&f, &tmp, 0, len)?;
        }
        sys::fsync(&f).map_err(|e| StorageError::io("syncing new segment", &tmp, e))?;
        sys::rename(&tmp, path).map_err(|e| StorageError::io("renaming new segment", path, e))?;
        Ok(f)
    })();
    match result {
        Ok(f) => {
            fsync_dir(path.parent().unwrap_or(Path::new(".")))?;
            Ok(f)
        }
        Err(e) => {
            let _ = sys::unlink(&tmp);
            Err(e)
        }
    }
}

/// Flushes every dirty page and metadata change of the file system holding `dir` in one call
/// (cheaper than one fsync per file when closing thousands of partitions).
pub(crate) fn sync_file_system(dir: &Path) -> Result<()> {
    let d = sys::open_read(dir).map_err(|e| StorageError::io("opening data directory", dir, e))?;
    sys::syncfs(&d).map_err(|e| StorageError::io("syncing file system", dir, e))
}

/// True for a leftover of an interrupted [`atomic_write`] or [`create_preallocated`].
pub fn is_tmp_file(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX)
        .is_some_and(|rest| rest.ends_with('.'))
}

/// Removes a file, treating "already gone" as done.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match sys::unlink(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("removing file", path, e)),
    }
}

/// Wall-clock milliseconds since the Unix epoch (record timestamps use the same clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn segment_names_roundtrip_and_sort() {
        let dir = Path::new("/x");
        let p = segment_path(dir, 42, LOG_SUFFIX);
        assert_eq!(p.file_name().unwrap(), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some((42, "log"))
        );
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log.tmp"),
            Some((42, "log.tmp"))
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(
            parse_segment_file_name("09223372036854775807.log"),
            Some((i64::MAX as u64, "log"))
        );
        assert_eq!(parse_segment_file_name("09223372036854775808.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert!(segment_path(dir, 9, LOG_SUFFIX) < segment_path(dir, 10, LOG_SUFFIX));
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"one", SyncMode::Now).unwrap();
        atomic_write(&p, b"two!", SyncMode::Deferred).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two!");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no tmp file left behind"
        );
    }
}
