//! Segments: a partition's log is a run of segments, each three files named by its base offset
//! (`.log`, `.index`, `.timeindex`; see `segments-format.md`).
//!
//! - [`ActiveSegment`]: the one segment appended to. Its `.log` is mapped read-write at full
//!   capacity (see [`super::mmap`]); its indexes live in memory and are written to files when it
//!   is sealed or the log closes cleanly (after a crash they are rebuilt from the log).
//! - [`SealedSegment`]: immutable. Its files are opened and mapped read-only on first use and
//!   closed after an idle period, so thousands of partitions hold no descriptors or maps while
//!   idle. Open handles are reference-counted: closing or deleting a segment never invalidates
//!   a read in progress; the last reader's drop releases the map and descriptor.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use memmap2::MmapRaw;
use tracing::warn;
use weir_proto::batch::{BatchHeader, HEADER_LEN};

use super::config::LogConfig;
use super::error::{Result, StorageError};
use super::fs::{
    INDEX_SUFFIX, LOG_SUFFIX, SyncMode, TIME_INDEX_SUFFIX, atomic_write, now_ms, remove_if_exists,
    segment_path,
};
use super::index::{self, IndexBuilder};
use super::mmap::{ActiveLogFile, map_read_only, region_slice};
use super::scan::scan_batches;
use super::sys;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a segment lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes of a segment's index, mapped from its file or held in memory.
#[derive(Clone)]
pub(crate) enum IndexBytes {
    Mapped(Arc<MmapRaw>),
    Owned(Arc<Vec<u8>>),
}

impl IndexBytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            IndexBytes::Mapped(m) => region_slice(m, 0, m.len()),
            IndexBytes::Owned(v) => v,
        }
    }
}

/// The open files of a sealed segment, shared by every reader using them.
pub(crate) struct OpenSegment {
    pub file: Arc<File>,
    /// `None` for an empty segment.
    pub map: Option<Arc<MmapRaw>>,
    pub offsets: IndexBytes,
    pub times: IndexBytes,
}

/// An immutable segment.
pub(crate) struct SealedSegment {
    pub base_offset: u64,
    /// The offset after its last batch: the next segment's base offset.
    pub next_offset: u64,
    /// Length of its `.log` in bytes.
    pub size: u64,
    dir: PathBuf,
    index_interval: u32,
    /// Newest record timestamp; `None` until known (read from the time index on first need).
    max_timestamp: Mutex<Option<i64>>,
    /// Set (under the `open` lock) when the segment leaves the log: retention, truncation,
    /// partition deletion or a dropped data dir. A removed segment never opens its path again,
    /// because that path may by then name a different file (a truncated copy, a new partition).
    removed: AtomicBool,
    open: Mutex<Option<Arc<OpenSegment>>>,
    last_used_ms: AtomicI64,
}

impl SealedSegment {
    pub(crate) fn new(
        dir: &Path,
        base_offset: u64,
        next_offset: u64,
        size: u64,
        index_interval: u32,
        max_timestamp: Option<i64>,
    ) -> Self {
        SealedSegment {
            base_offset,
            next_offset,
            size,
            dir: dir.to_owned(),
            index_interval,
            max_timestamp: Mutex::new(max_timestamp),
            removed: AtomicBool::new(false),
            open: Mutex::new(None),
            last_used_ms: AtomicI64::new(now_ms()),
        }
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        segment_path(&self.dir, self.base_offset, LOG_SUFFIX)
    }

    pub(crate) fn is_open(&self) -> bool {
        lock(&self.open).is_some()
    }

    /// The segment's open files, opening (and, if needed, re-indexing) it on first use.
    pub(crate) fn open(&self) -> Result<Arc<OpenSegment>> {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        let mut slot = lock(&self.open);
        if let Some(open) = slot.as_ref() {
            return Ok(Arc::clone(open));
        }
        if self.removed.load(Ordering::Acquire) {
            return Err(StorageError::SegmentRemoved {
                base_offset: self.base_offset,
            });
        }
        let open = Arc::new(self.open_files()?);
        *slot = Some(Arc::clone(&open));
        Ok(open)
    }

    fn open_files(&self) -> Result<OpenSegment> {
        let path = self.log_path();
        let file =
            sys::open_read(&path).map_err(|e| StorageError::io("opening segment", &path, e))?;
        let len =
            sys::file_len(&file).map_err(|e| StorageError::io("reading segment size", &path, e))?;
        if len < self.size {
            return Err(StorageError::Corrupt {
                what: "segment",
                path,
                detail: format!(
                    "file is {len} bytes but {} were written; it was truncated behind the broker's back",
                    self.size
                ),
            });
        }
        let map = map_read_only(&file, &path, self.size)?;
        let log = map
            .as_ref()
            .map(|m| region_slice(m, 0, m.len()))
            .unwrap_or_default();
        let offsets_total = self.next_offset - self.base_offset;
        let loaded = load_index(&self.dir, self.base_offset, INDEX_SUFFIX).and_then(|offsets| {
            let times = load_index(&self.dir, self.base_offset, TIME_INDEX_SUFFIX)?;
            index::check_offset_index(offsets.as_slice(), offsets_total, self.size)
                .map_err(|d| ("index", d))?;
            index::check_time_index(times.as_slice(), offsets_total)
                .map_err(|d| ("time index", d))?;
            check_last_entry_points_at_batch(offsets.as_slice(), log, self.base_offset)
                .map_err(|d| ("index", d))?;
            Ok((offsets, times))
        });
        let (offsets, times) = match loaded {
            Ok(pair) => pair,
            Err((what, detail)) => {
                warn!(segment = %path.display(), what, detail, "rebuilding segment indexes");
                let built = rebuild_indexes(log, self.base_offset, self.index_interval);
                // The rebuilt index serves from memory either way; failing to persist it (a
                // full disk) only means the next open rebuilds it again.
                if let Err(e) =
                    write_index_files(&self.dir, self.base_offset, &built, SyncMode::Now)
                {
                    warn!(segment = %path.display(), error = %e, "could not write rebuilt indexes");
                }
                (
                    IndexBytes::Owned(Arc::new(built.offsets)),
                    IndexBytes::Owned(Arc::new(built.times)),
                )
            }
        };
        let mut max_ts = lock(&self.max_timestamp);
        if max_ts.is_none() {
            let t = times.as_slice();
            *max_ts = Some(
                index::time_entry_count(t)
                    .checked_sub(1)
                    .map_or(i64::MIN, |i| index::time_entry(t, i).timestamp),
            );
        }
        Ok(OpenSegment {
            file: Arc::new(file),
            map,
            offsets,
            times,
        })
    }

    /// Newest record timestamp in the segment (`i64::MIN` if it has none).
    pub(crate) fn max_timestamp(&self) -> Result<i64> {
        if let Some(ts) = *lock(&self.max_timestamp) {
            return Ok(ts);
        }
        self.open()?;
        Ok(lock(&self.max_timestamp).unwrap_or(i64::MIN))
    }

    /// Drops this segment's own handle if unused since `cutoff_ms`; readers keep theirs.
    pub(crate) fn close_if_idle(&self, cutoff_ms: i64) -> bool {
        if self.last_used_ms.load(Ordering::Relaxed) < cutoff_ms {
            return lock(&self.open).take().is_some();
        }
        false
    }

    /// Takes the segment out of the log: it will not open again, and its own handle is
    /// dropped (readers keep theirs). Does not touch the files.
    pub(crate) fn mark_removed(&self) {
        let mut slot = lock(&self.open);
        self.removed.store(true, Ordering::Release);
        slot.take();
    }

    /// Marks the segment removed and unlinks its files. Open maps stay valid until their last
    /// user drops them.
    pub(crate) fn delete_files(&self) -> Result<()> {
        self.mark_removed();
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_exists(&segment_path(&self.dir, self.base_offset, suffix))?;
        }
        Ok(())
    }
}

/// Reads an index file; a missing file is an error the caller answers by rebuilding.
fn load_index(
    dir: &Path,
    base_offset: u64,
    suffix: &str,
) -> Result<IndexBytes, (&'static str, String)> {
    let path = segment_path(dir, base_offset, suffix);
    let what = if suffix == INDEX_SUFFIX {
        "index"
    } else {
        "time index"
    };
    let file = sys::open_read(&path).map_err(|e| (what, format!("cannot open: {e}")))?;
    let len = sys::file_len(&file).map_err(|e| (what, e.to_string()))?;
    match map_read_only(&file, &path, len) {
        Ok(Some(map)) => Ok(IndexBytes::Mapped(map)),
        Ok(None) => Ok(IndexBytes::Owned(Arc::new(Vec::new()))),
        Err(e) => Err((what, e.to_string())),
    }
}

/// Index sanity checks cannot tell a plausible-looking wrong position; checking that the last
/// entry lands on the header of the batch it names catches a stale or garbled index cheaply.
fn check_last_entry_points_at_batch(
    offsets: &[u8],
    log: &[u8],
    base_offset: u64,
) -> Result<(), String> {
    let Some(i) = index::offset_entry_count(offsets).checked_sub(1) else {
        return Ok(());
    };
    let e = index::offset_entry(offsets, i);
    let pos = e.position as usize;
    let header = log
        .get(pos..pos + HEADER_LEN)
        .ok_or("last entry points past the log")?;
    match BatchHeader::parse(header) {
        Ok(h) if h.base_offset == base_offset + u64::from(e.relative_offset) => Ok(()),
        _ => Err(format!(
            "last entry {e:?} does not point at the batch it names"
        )),
    }
}

/// Rebuilds both indexes of a segment by walking its batches (CRC checked).
pub(crate) fn rebuild_indexes(log: &[u8], base_offset: u64, interval: u32) -> IndexBuilder {
    let mut builder = IndexBuilder::new(base_offset, interval);
    scan_batches(log, 0, base_offset, true, Some(&mut builder));
    builder.finish();
    builder
}

/// Writes a segment's index files atomically.
pub(crate) fn write_index_files(
    dir: &Path,
    base_offset: u64,
    built: &IndexBuilder,
    sync: SyncMode,
) -> Result<()> {
    atomic_write(
        &segment_path(dir, base_offset, INDEX_SUFFIX),
        &built.offsets,
        sync,
    )?;
    atomic_write(
        &segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
        &built.times,
        sync,
    )
}

/// The segment being appended to.
pub(crate) struct ActiveSegment {
    pub base_offset: u64,
    pub next_offset: u64,
    /// Bytes written (and published) in its `.log`.
    pub size: u64,
    /// Bytes known to be on disk (synced).
    pub synced_size: u64,
    pub index: IndexBuilder,
    /// When the segment was created or reopened, for roll-by-age.
    pub created_ms: i64,
    dir: PathBuf,
    /// Length of the map (the segment size limit when it was created). Fixed for the
    /// segment's life: raising `segment_bytes` takes effect at the next roll.
    capacity: u64,
    /// The mapped file; `None` while closed for idleness (reopened on the next use).
    writer: Option<ActiveLogFile>,
    pub last_used_ms: i64,
}

impl ActiveSegment {
    /// A new, empty segment at `base_offset` with its file created and blocks reserved.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        capacity: u64,
        initial: u64,
        index_interval: u32,
    ) -> Result<Self> {
        let writer = ActiveLogFile::create(
            &segment_path(dir, base_offset, LOG_SUFFIX),
            capacity,
            initial,
        )?;
        Ok(ActiveSegment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            synced_size: 0,
            index: IndexBuilder::new(base_offset, index_interval),
            created_ms: now_ms(),
            dir: dir.to_owned(),
            capacity,
            writer: Some(writer),
            last_used_ms: now_ms(),
        })
    }

    /// An existing segment whose valid content (`size` bytes up to `next_offset`) and indexes
    /// are already known. The file is opened on first use.
    pub(crate) fn resume(
        dir: &Path,
        base_offset: u64,
        next_offset: u64,
        size: u64,
        index: IndexBuilder,
        capacity: u64,
    ) -> Self {
        ActiveSegment {
            base_offset,
            next_offset,
            size,
            synced_size: size,
            index,
            created_ms: now_ms(),
            dir: dir.to_owned(),
            capacity: capacity.max(size),
            writer: None,
            last_used_ms: now_ms(),
        }
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        segment_path(&self.dir, self.base_offset, LOG_SUFFIX)
    }

    /// The most bytes this segment can hold.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The mapped file, opened if it was closed for idleness.
    pub(crate) fn writer(&mut self) -> Result<&mut ActiveLogFile> {
        self.last_used_ms = now_ms();
        if self.writer.is_none() {
            self.writer = Some(ActiveLogFile::open(&self.log_path(), self.capacity)?);
        }
        self.writer.as_mut().ok_or(StorageError::Closed)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.writer.is_some()
    }

    /// Closes the map and descriptor if unused since `cutoff_ms`. Unsynced bytes stay in the
    /// page cache; a later sync opens a fresh descriptor ([`Self::sync_handle`]).
    pub(crate) fn close_if_idle(&mut self, cutoff_ms: i64) -> bool {
        if self.writer.is_some() && self.last_used_ms < cutoff_ms {
            self.writer = None;
            return true;
        }
        false
    }

    /// A descriptor to fdatasync: the writer's, or a fresh one if it was closed.
    pub(crate) fn sync_handle(&self) -> Result<Arc<File>> {
        match &self.writer {
            Some(w) => Ok(Arc::clone(w.file())),
            None => {
                let path = self.log_path();
                sys::open_read(&path)
                    .map(Arc::new)
                    .map_err(|e| StorageError::io("opening segment to sync", &path, e))
            }
        }
    }

    /// Appends a validated batch (already stamped with `header.base_offset == next_offset`),
    /// reserving disk blocks first, in `config`'s extents and never past its `segment_bytes`
    /// (the map may be larger: it was sized by the settings the segment was opened with). On
    /// error nothing is published.
    pub(crate) fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        config: &LogConfig,
    ) -> Result<()> {
        let position = self.size;
        let end = position + batch.len() as u64;
        debug_assert_eq!(
            header.base_offset, self.next_offset,
            "a batch must be stamped with the segment's next offset (dense offsets)"
        );
        // The caller rolls first; a write past the map's capacity could never be read back.
        debug_assert!(
            end <= self.capacity,
            "append to {end} past the segment's capacity {}",
            self.capacity
        );
        let writer = self.writer()?;
        writer.reserve(
            end,
            config.preallocate_min_bytes,
            config.preallocate_max_bytes,
            config.segment_bytes,
        )?;
        writer.write_batch_at(position, header.base_offset, batch)?;
        self.index.on_batch(header, position, batch.len() as u64);
        self.size = end;
        self.next_offset = header.next_offset();
        Ok(())
    }

    /// Writes the index files and trims the `.log` to its written length: the on-disk state of
    /// a sealed segment, and of the active one after a clean close.
    pub(crate) fn persist_for_close(&mut self, sync: SyncMode) -> Result<()> {
        self.index.finish();
        write_index_files(&self.dir, self.base_offset, &self.index, sync)?;
        let size = self.size;
        self.writer()?.trim(size)
    }

    /// Drops the map and descriptor (readers keep theirs).
    pub(crate) fn close_writer(&mut self) {
        self.writer = None;
    }

    /// The map and descriptor for a reader, opening them if needed.
    pub(crate) fn read_handles(&mut self) -> Result<(Arc<MmapRaw>, Arc<File>)> {
        let w = self.writer()?;
        Ok((Arc::clone(w.map_handle()), Arc::clone(w.file())))
    }
}
