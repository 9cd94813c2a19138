//! `LogDir`: a data directory of partition logs, its checkpoints and its maintenance thread.
//!
//! Layout: `{data_dir}/{topic}-{partition}/` per partition, the checkpoint files and the
//! clean-shutdown marker at the top (see [`super::checkpoint`]), and a `.lock` file held with
//! `flock` so two processes never open the same directory.
//!
//! Opening removes the clean-shutdown marker (durably) before any write is accepted, so a crash
//! at any later point is seen as unclean by the next open. [`LogDir::close`] is the clean path;
//! dropping a `LogDir` without closing it behaves like a crash (nothing more is flushed).
//!
//! One background thread per data dir runs interval flushes, retention, idle-file closing and
//! periodic checkpoints; it holds no lock while a partition syncs. A second one runs the scrub
//! ([`super::scrub`]), so a long segment check never delays an interval flush.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::checkpoint::{
    CLEAN_SHUTDOWN_FILE, LOG_START_FILE, RECOVERY_POINT_FILE, read_offsets, write_offsets,
};
use super::config::{LogConfig, LogDirConfig};
use super::error::{Result, StorageError};
use super::fs::{
    SyncMode, atomic_write, fsync_dir, is_tmp_file, now_ms, remove_if_exists, sync_file_system,
};
use super::partition::PartitionLog;
use super::recovery::{OpenMode, TruncationReport, open_partition};
use super::scrub::{StopSignal, scrub_loop};
use super::sys;
use weir_proto::topic::TopicPartition;

const LOCK_FILE: &str = ".lock";
const DELETE_SUFFIX: &str = ".delete";

/// What opening a data directory found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// The previous process closed the directory cleanly.
    pub clean: bool,
    pub partitions: usize,
    pub truncations: Vec<TruncationReport>,
    pub elapsed: Duration,
}

struct Shared {
    path: PathBuf,
    config: LogDirConfig,
    partitions: RwLock<BTreeMap<TopicPartition, Arc<PartitionLog>>>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Serializes checkpoint writers (maintenance thread vs. explicit calls), and holds the
    /// partitions the checkpoint files on disk may name.
    checkpoint_lock: Mutex<BTreeSet<TopicPartition>>,
}

impl Shared {
    /// The open partitions now (a copy: the map's lock is not held while they are worked on).
    fn partition_logs(&self) -> Vec<Arc<PartitionLog>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// A data directory of partition logs.
pub struct LogDir {
    shared: Arc<Shared>,
    maintenance: Option<JoinHandle<()>>,
    /// The background scrub (`None` when `scrub_bytes_per_sec` is 0).
    scrub: Option<JoinHandle<()>>,
    _lock: File,
}

impl LogDir {
    /// Opens (creating if needed) the data directory, recovering every partition in it.
    pub fn open(path: impl AsRef<Path>, config: LogDirConfig) -> Result<(LogDir, OpenReport)> {
        let started = Instant::now();
        let path = path.as_ref().to_owned();
        config.default_log.validate()?;
        sys::create_dir_all(&path)
            .map_err(|e| StorageError::io("creating data directory", &path, e))?;
        let lock = sys::open(
            &path.join(LOCK_FILE),
            OpenOptions::new().create(true).truncate(false).write(true),
        )
        .map_err(|e| StorageError::io("opening lock file", &path, e))?;
        sys::flock_exclusive(&lock).map_err(|_| StorageError::DirLocked(path.clone()))?;

        let marker = path.join(CLEAN_SHUTDOWN_FILE);
        let clean = sys::exists(&marker);
        let recovery_points = read_offsets(&path.join(RECOVERY_POINT_FILE))?;
        let log_starts = read_offsets(&path.join(LOG_START_FILE))?;

        let mut partitions = BTreeMap::new();
        let mut truncations = Vec::new();
        let entries = sys::read_dir(&path)
            .map_err(|e| StorageError::io("listing data directory", &path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("listing data directory", &path, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                if is_tmp_file(name) {
                    remove_if_exists(&entry.path())?; // an interrupted checkpoint or marker write
                }
                continue;
            }
            if name.ends_with(DELETE_SUFFIX) {
                sys::remove_dir_all(&entry.path())
                    .map_err(|e| StorageError::io("removing deleted partition", entry.path(), e))?;
                continue;
            }
            let Some(tp) = TopicPartition::from_dir_name(name) else {
                warn!(dir = %entry.path().display(), "ignoring directory that is not a partition");
                continue;
            };
            let mode = if clean {
                OpenMode::Clean
            } else {
                OpenMode::Unclean {
                    recovery_point: recovery_points.get(&tp).copied().unwrap_or(0),
                }
            };
            let (log, report) = open_partition(
                &entry.path(),
                tp.clone(),
                config.default_log.clone(),
                mode,
                log_starts.get(&tp).copied(),
            )?;
            truncations.extend(report);
            partitions.insert(tp, Arc::new(log));
        }
        // From here on a crash must be seen as unclean.
        if clean {
            remove_if_exists(&marker)?;
            fsync_dir(&path)?;
        }
        let shared = Arc::new(Shared {
            path,
            config,
            partitions: RwLock::new(partitions),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            checkpoint_lock: Mutex::new(
                recovery_points
                    .keys()
                    .chain(log_starts.keys())
                    .cloned()
                    .collect(),
            ),
        });
        for log in shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            install_checkpoint_hook(&shared, log);
        }
        checkpoint(&shared)?;
        let thread_shared = Arc::clone(&shared);
        let maintenance = std::thread::Builder::new()
            .name("weir-log-maintenance".into())
            .spawn(move || maintenance_loop(&thread_shared))
            .map_err(|e| StorageError::io("starting maintenance thread", &shared.path, e))?;
        let scrub = if shared.config.scrub_bytes_per_sec > 0 {
            let thread_shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name("weir-log-scrub".into())
                .spawn(move || {
                    let shared = &*thread_shared;
                    scrub_loop(
                        || shared.partition_logs(),
                        StopSignal {
                            stop: &shared.stop,
                            wake: &shared.wake,
                        },
                        shared.config.scrub_bytes_per_sec,
                        shared.config.scrub_pass_interval,
                    )
                })
                .map_err(|e| StorageError::io("starting scrub thread", &shared.path, e))?;
            Some(handle)
        } else {
            None
        };
        let report = OpenReport {
            clean,
            partitions: shared.partitions.read().map_or(0, |p| p.len()),
            truncations,
            elapsed: started.elapsed(),
        };
        info!(path = %shared.path.display(), clean, partitions = report.partitions, truncated = report.truncations.len(), elapsed_ms = report.elapsed.as_millis() as u64, "opened data directory");
        Ok((
            LogDir {
                shared,
                maintenance: Some(maintenance),
                scrub,
                _lock: lock,
            },
            report,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Creates a new, empty partition log (`config` defaults to the data dir's default).
    pub fn create_partition(
        &self,
        tp: TopicPartition,
        config: Option<LogConfig>,
    ) -> Result<Arc<PartitionLog>> {
        let config = config.unwrap_or_else(|| self.shared.config.default_log.clone());
        config.validate()?;
        let mut partitions = self
            .shared
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if partitions.contains_key(&tp) {
            return Err(StorageError::PartitionExists(tp.to_string()));
        }
        let dir = self.shared.path.join(tp.dir_name());
        if sys::exists(&dir) {
            return Err(StorageError::PartitionExists(tp.to_string()));
        }
        let (log, _) = open_partition(&dir, tp.clone(), config, OpenMode::Clean, None)?;
        fsync_dir(&self.shared.path)?;
        let log = Arc::new(log);
        install_checkpoint_hook(&self.shared, &log);
        partitions.insert(tp, Arc::clone(&log));
        drop(partitions);
        // Replace any checkpoint entry a deleted namesake left behind, before data arrives
        // (only then: rewriting the checkpoint per creation would make creating N partitions
        // cost O(N^2)).
        let stale = self
            .shared
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(log.topic_partition());
        if stale {
            checkpoint(&self.shared)?;
        }
        Ok(log)
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<PartitionLog>> {
        self.shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tp)
            .cloned()
    }

    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Deletes a partition and its files. The directory is renamed first, so a crash midway
    /// leaves a `.delete` directory that the next open removes, never a half-deleted log.
    pub fn delete_partition(&self, tp: &TopicPartition) -> Result<()> {
        let log = self
            .shared
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tp)
            .ok_or_else(|| StorageError::UnknownPartition(tp.to_string()))?;
        log.retire();
        let doomed = self
            .shared
            .path
            .join(format!("{}{DELETE_SUFFIX}", tp.dir_name()));
        sys::rename(log.dir(), &doomed)
            .map_err(|e| StorageError::io("renaming deleted partition", log.dir(), e))?;
        fsync_dir(&self.shared.path)?;
        sys::remove_dir_all(&doomed)
            .map_err(|e| StorageError::io("deleting partition", &doomed, e))?;
        // A re-created partition of the same name must not inherit these offsets.
        checkpoint(&self.shared)
    }

    /// Writes the recovery-point and log-start checkpoints now.
    pub fn checkpoint(&self) -> Result<()> {
        checkpoint(&self.shared)
    }

    /// One pass of the maintenance work (interval flushes, retention, idle closing), as the
    /// background thread runs it; for tests and tools that want it now.
    pub fn run_maintenance(&self, now_ms: i64) {
        let partitions = self.shared.partition_logs();
        let idle_cutoff = now_ms - self.shared.config.idle_close_after.as_millis() as i64;
        for p in partitions {
            flush_due(&p, now_ms);
            if let Err(e) = p.apply_retention(now_ms)
                && !matches!(e, StorageError::Closed)
            {
                warn!(partition = %p.topic_partition(), error = %e, "retention failed");
            }
            p.close_idle(idle_cutoff);
        }
    }

    /// Clean shutdown: stop maintenance, sync and close every partition, checkpoint, and write
    /// the clean-shutdown marker last.
    pub fn close(mut self) -> Result<()> {
        self.stop_maintenance();
        let partitions = self.shared.partition_logs();
        for p in &partitions {
            // The syncfs below makes the snapshot durable with everything else.
            if let Err(e) = p.snapshot_derived_state(SyncMode::Deferred) {
                warn!(partition = %p.topic_partition(), error = %e, "derived-state snapshot failed; the next start rebuilds from the log");
            }
            p.close_unsynced()?;
        }
        // One sync for every partition's data, indexes and trims; only then may the checkpoint
        // claim them durable and the marker claim the close was clean.
        sync_file_system(&self.shared.path)?;
        checkpoint(&self.shared)?;
        atomic_write(
            &self.shared.path.join(CLEAN_SHUTDOWN_FILE),
            b"",
            SyncMode::Now,
        )?;
        info!(path = %self.shared.path.display(), partitions = partitions.len(), "closed data directory cleanly");
        Ok(())
    }

    fn stop_maintenance(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        for handle in [self.maintenance.take(), self.scrub.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
    }
}

impl Drop for LogDir {
    /// Dropping without `close` is a crash as far as the files are concerned: no marker.
    fn drop(&mut self) {
        self.stop_maintenance();
        // Handles that outlive the data dir must not write to, truncate or reopen its files:
        // another `LogDir` may own them next.
        for log in self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            log.retire();
        }
    }
}

/// Lets `truncate_to` write the checkpoints synchronously. Weak: partitions must not keep the
/// data dir alive.
fn install_checkpoint_hook(shared: &Arc<Shared>, log: &PartitionLog) {
    let weak = Arc::downgrade(shared);
    log.set_checkpoint_hook(Box::new(move || match weak.upgrade() {
        Some(shared) => checkpoint(&shared),
        None => Err(StorageError::Closed),
    }));
}

/// Writes both checkpoint files. Reads each partition's offsets from atomics, never taking a
/// partition lock, so a partition may call it (through its hook) while holding its own.
fn checkpoint(shared: &Shared) -> Result<()> {
    let mut named = shared
        .checkpoint_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let partitions = shared.partitions.read().unwrap_or_else(|e| e.into_inner());
    let recovery: BTreeMap<_, _> = partitions
        .iter()
        .map(|(tp, p)| (tp.clone(), p.recovery_point()))
        .collect();
    let starts: BTreeMap<_, _> = partitions
        .iter()
        .map(|(tp, p)| (tp.clone(), p.log_start_offset()))
        .collect();
    drop(partitions);
    // While the files are being replaced, either may still name what the old set names.
    named.extend(recovery.keys().cloned());
    write_offsets(&shared.path.join(RECOVERY_POINT_FILE), &recovery)?;
    write_offsets(&shared.path.join(LOG_START_FILE), &starts)?;
    *named = recovery.into_keys().collect();
    Ok(())
}

fn flush_due(p: &PartitionLog, now_ms: i64) {
    // `Closed`: a partition deleted since the caller's snapshot; nothing to do.
    if let Err(e) = p.flush_if_due(now_ms)
        && !matches!(e, StorageError::Closed)
    {
        warn!(partition = %p.topic_partition(), error = %e, "interval flush failed");
    }
}

fn maintenance_loop(shared: &Shared) {
    let config = &shared.config;
    let (mut last_retention, mut last_idle, mut last_checkpoint) =
        (Instant::now(), Instant::now(), Instant::now());
    loop {
        {
            let stop = shared.stop.lock().unwrap_or_else(|e| e.into_inner());
            if *stop {
                return;
            }
            let (stop, _) = shared
                .wake
                .wait_timeout(stop, config.tick)
                .unwrap_or_else(|e| e.into_inner());
            if *stop {
                return;
            }
        }
        let partitions = shared.partition_logs();
        let now = now_ms();
        for p in &partitions {
            flush_due(p, now);
        }
        if last_retention.elapsed() >= config.retention_check_interval {
            last_retention = Instant::now();
            for p in &partitions {
                if let Err(e) = p.apply_retention(now)
                    && !matches!(e, StorageError::Closed)
                {
                    warn!(partition = %p.topic_partition(), error = %e, "retention failed");
                }
            }
        }
        if last_idle.elapsed() >= config.idle_close_after / 2 {
            last_idle = Instant::now();
            let cutoff = now - config.idle_close_after.as_millis() as i64;
            for p in &partitions {
                p.close_idle(cutoff);
            }
        }
        if last_checkpoint.elapsed() >= config.checkpoint_interval {
            last_checkpoint = Instant::now();
            if let Err(e) = checkpoint(shared) {
                warn!(error = %e, "checkpoint failed");
            }
            // Bounds what a restart rescans to rebuild producer states and key indexes.
            for p in &partitions {
                if let Err(e) = p.snapshot_derived_state(SyncMode::Now)
                    && !matches!(e, StorageError::Closed)
                {
                    warn!(partition = %p.topic_partition(), error = %e, "derived-state snapshot failed");
                }
            }
        }
    }
}
