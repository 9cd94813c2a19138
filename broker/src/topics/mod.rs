//! The broker's topics: their metadata (persisted beside the logs) and their partition logs.
//!
//! A data dir holds `logs/` (the storage engine's [`LogDir`]) and `topics/` (one
//! [`TopicMeta`] file per topic, see [`meta`]). [`Topics`] is the one place that creates and
//! deletes topics, so the two never disagree for longer than a crash, and [`Topics::open`]
//! finishes whatever a crash interrupted.
//!
//! Invariants:
//! - A topic is in the map only once its metadata file is durable and all its partition logs
//!   exist; producers and fetchers can never see a half-created topic.
//! - Create and delete are serialized by `admin`; lookups never wait for them.
//! - Partition logs that belong to no topic (a metadata file removed by hand) are left alone and
//!   reported: the broker never deletes data it cannot account for.

pub mod meta;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tracing::{info, warn};
use weir_proto::topic::{InvalidTopicName, validate_topic_name};

use crate::layout;

pub use meta::{FlushKind, PartitionerKind, PlacementKind, TopicMeta, TopicSettings};
use weir_storage::fs::{SyncMode, atomic_write, fsync_dir, is_tmp_file, now_ms};
use weir_storage::{
    LogConfig, LogDir, LogDirConfig, OpenReport, PartitionLog, StorageError, TopicPartition,
};

/// The most partitions one topic may have (each costs a directory and, while active, a
/// preallocated extent).
pub const MAX_PARTITIONS: u32 = 10_000;

const META_SUFFIX: &str = ".json";
const DELETING_SUFFIX: &str = ".deleting";

/// Why a topic operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("unknown topic {0:?}; create it with `weir topic create {0} --partitions N`")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error("partition {partition} of topic {topic:?} is not on this broker")]
    NotLocal { topic: String, partition: u32 },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName {
        name: String,
        reason: InvalidTopicName,
    },
    #[error("invalid topic request: {0}")]
    InvalidRequest(String),
    #[error("corrupt topic metadata {path}: {detail}")]
    CorruptMeta { path: PathBuf, detail: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T, E = TopicError> = std::result::Result<T, E>;

/// One partition as the network layers see it: its log, its high watermark, and the signals
/// fetches wait on instead of polling.
///
/// Two marks, two signals:
/// - the log end (`log.high_watermark()` in the engine's words: the offset the next appended
///   record gets), raised after appends: what a follower replicating the partition reads up to;
/// - the high watermark (committed offset): what consumers read below. Without replication it
///   follows the log end at every append; on a replicated partition the replication layer
///   (`crate::replica`) moves it, once the in-sync replicas hold the records.
///
/// Invariants: `high_watermark() <= log end`, except for the moment between a follower's
/// truncation and [`Partition::clamp_to_log_end`]. While replication owns the high watermark,
/// it is the log's retention limit too (`PartitionLog::set_retention_limit`, set under the
/// same lock as the mark): retention never deletes a record at or above it, on the leader and
/// on a follower alike (Kafka bounds retention by the high watermark); otherwise retention is
/// unbounded, as on any single copy.
pub struct Partition {
    pub log: Arc<PartitionLog>,
    appended: watch::Sender<u64>,
    committed: watch::Sender<u64>,
    /// Whether replication owns the high watermark.
    replicated: AtomicBool,
    /// What produce and fetch moved through this partition since the broker started (the
    /// metrics listener reads it at scrape time; the data paths pay one atomic add each).
    pub traffic: Traffic,
}

/// Bytes and records through one partition since the process started. Relaxed atomics: each
/// counter is monotonic on its own, and a scrape needs no consistency between them.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: std::sync::atomic::AtomicU64,
    pub records_in: std::sync::atomic::AtomicU64,
    /// To consumers (both transports).
    pub bytes_out: std::sync::atomic::AtomicU64,
    pub records_out: std::sync::atomic::AtomicU64,
    /// To followers replicating the partition.
    pub replica_bytes_out: std::sync::atomic::AtomicU64,
}

impl Traffic {
    /// A batch of `records` records, `bytes` long, appended.
    pub fn produced(&self, bytes: usize, records: u64) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.records_in.fetch_add(records, Ordering::Relaxed);
    }

    /// Whole batches sent to a consumer (`records` by their offsets) or to a follower.
    pub fn fetched(&self, bytes: usize, records: u64, by_replica: bool) {
        if by_replica {
            self.replica_bytes_out
                .fetch_add(bytes as u64, Ordering::Relaxed);
        } else {
            self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
            self.records_out.fetch_add(records, Ordering::Relaxed);
        }
    }
}

impl Partition {
    /// A partition over `log`; `replicated` hands its high watermark to replication from the
    /// start (see [`Partition::set_replicated`]): a copy that may be one of several replicas
    /// is not served, and keeps its retention at its log start, until the controller's
    /// metadata says what it is.
    fn new(log: Arc<PartitionLog>, replicated: bool) -> Self {
        let (appended, _) = watch::channel(log.high_watermark());
        let (committed, _) = watch::channel(log.high_watermark());
        let partition = Partition {
            log,
            appended,
            committed,
            replicated: AtomicBool::new(false),
            traffic: Traffic::default(),
        };
        if replicated {
            partition.set_replicated(true);
        }
        partition
    }

    /// The offset consumers read below (see the type's docs).
    pub fn high_watermark(&self) -> u64 {
        *self.committed.borrow()
    }

    /// The offset the next appended record gets.
    pub fn log_end(&self) -> u64 {
        self.log.high_watermark()
    }

    /// Tells fetches the log end moved (and, without replication, the high watermark with
    /// it). Called after every append attempt: a refused or duplicate batch moves nothing and
    /// wakes nobody.
    pub fn notify_appended(&self) {
        let log_end = self.log.high_watermark();
        self.appended.send_if_modified(|seen| {
            let moved = *seen != log_end;
            *seen = log_end;
            moved
        });
        if !self.replicated.load(Ordering::Acquire) {
            self.set_high_watermark(log_end);
        }
    }

    /// Hands the high watermark to replication (`true`) or back to the log end (`false`).
    /// Handed to replication, it starts again from the log start: the high watermark is not
    /// persisted, and the log end may hold records no other replica has (a leader's suffix
    /// before a crash). The leader's first fetch rounds bring it back (rule 9: until then a
    /// new leader serves no reads). Retention follows it (see the type's docs).
    pub fn set_replicated(&self, replicated: bool) {
        self.committed.send_if_modified(|seen| {
            let was = self.replicated.swap(replicated, Ordering::AcqRel);
            let before = *seen;
            if !replicated {
                *seen = self.log.high_watermark();
            } else if !was {
                *seen = self.log.log_start_offset();
            }
            self.bound_retention(*seen);
            *seen != before
        });
    }

    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Acquire)
    }

    /// Sets the high watermark (capped by the log end) and wakes the consumers waiting on it.
    pub fn set_high_watermark(&self, high_watermark: u64) {
        let high_watermark = high_watermark.min(self.log.high_watermark());
        self.committed.send_if_modified(|seen| {
            let moved = *seen != high_watermark;
            *seen = high_watermark;
            self.bound_retention(high_watermark);
            moved
        });
    }

    /// The log's retention limit for a high watermark of `high_watermark`: the mark itself
    /// while replication owns it, none otherwise. Called under the high watermark's lock, so
    /// the limit never lags a change of either.
    fn bound_retention(&self, high_watermark: u64) {
        let limit = if self.replicated.load(Ordering::Acquire) {
            high_watermark
        } else {
            u64::MAX
        };
        self.log.set_retention_limit(limit);
    }

    /// After a truncation: the high watermark never stays above the log end, and fetches
    /// waiting on the log end learn it moved.
    pub fn clamp_to_log_end(&self) {
        let log_end = self.log.high_watermark();
        if self.high_watermark() > log_end {
            self.set_high_watermark(log_end);
        }
        self.appended.send_replace(log_end);
    }

    /// Wakes every fetch: the partition is gone, and their next read says so.
    fn notify_gone(&self) {
        self.appended.send_modify(|_| {});
        self.committed.send_modify(|_| {});
    }

    /// A receiver that wakes when the log end moves after this call (subscribe before reading,
    /// then a `changed()` after an empty read cannot miss an append).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// A receiver that wakes when the high watermark moves after this call.
    pub fn subscribe_committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }
}

/// A topic: its metadata and the partitions this broker holds, in partition order (`None`
/// for a partition another broker owns).
pub struct Topic {
    pub meta: TopicMeta,
    pub partitions: Vec<Option<Arc<Partition>>>,
}

impl Topic {
    pub fn partition(&self, partition: u32) -> Result<&Arc<Partition>> {
        match self.partitions.get(partition as usize) {
            Some(Some(p)) => Ok(p),
            Some(None) => Err(TopicError::NotLocal {
                topic: self.meta.name.clone(),
                partition,
            }),
            None => Err(TopicError::UnknownPartition {
                topic: self.meta.name.clone(),
                partition,
                count: self.meta.partitions,
            }),
        }
    }

    /// The partitions held here, with their numbers.
    pub fn local_partitions(&self) -> impl Iterator<Item = (u32, &Arc<Partition>)> {
        self.partitions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i as u32, p)))
    }
}

/// What a new topic asks for. `settings: None` takes the broker's defaults.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub partitioner: PartitionerKind,
    pub split_keys: Vec<Vec<u8>>,
    pub settings: TopicSettings,
}

/// The registry of topics over one data dir.
pub struct Topics {
    meta_dir: PathBuf,
    defaults: LogConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes create, delete and close; `None` once closed.
    admin: Mutex<Option<LogDir>>,
}

impl Topics {
    /// Opens (creating if needed) the data dir: recovers the logs, loads topic metadata,
    /// finishes interrupted creates and deletes.
    pub fn open(data_dir: &Path, config: LogDirConfig) -> Result<(Topics, OpenReport)> {
        let defaults = config.default_log.clone();
        let (log_dir, report) = LogDir::open(data_dir.join(layout::LOGS_DIR), config)?;
        let meta_dir = data_dir.join(layout::TOPICS_DIR);
        fs::create_dir_all(&meta_dir)
            .map_err(|e| StorageError::io("creating topics directory", &meta_dir, e))?;

        let mut metas = Vec::new();
        let mut deleting = Vec::new();
        let entries = fs::read_dir(&meta_dir)
            .map_err(|e| StorageError::io("listing topics directory", &meta_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("listing topics", &meta_dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if is_tmp_file(&name) {
                let _ = fs::remove_file(&path); // an interrupted metadata write
            } else if let Some(topic) = name.strip_suffix(DELETING_SUFFIX) {
                deleting.push((topic.to_owned(), path));
            } else if let Some(topic) = name.strip_suffix(META_SUFFIX) {
                metas.push(read_meta(&path, topic)?);
            }
        }

        for (name, path) in deleting {
            warn!(topic = %name, "finishing a topic deletion interrupted by a crash");
            delete_partitions(&log_dir, &name)?;
            remove_file(&path)?;
        }
        let mut map = BTreeMap::new();
        for meta in metas {
            // Until the controller's metadata says otherwise, a copy that may be one of several
            // replicas (its topic was created replicated, or the copy took part in replication:
            // it holds leader epochs, as a partition moved onto or off a single copy does) is
            // not served and keeps its retention at its log start: another replica may lead it
            // by now. A single copy is served at once, as before replication existed.
            let replicated_topic = meta.settings.replication_factor > 1;
            let topic = attach(&log_dir, &defaults, meta, true, |_, log| {
                replicated_topic || log.latest_epoch().is_some()
            })?;
            map.insert(topic.meta.name.clone(), topic);
        }
        let known: BTreeSet<_> = map
            .values()
            .flat_map(|t| t.local_partitions().map(|(p, _)| (t.meta.name.clone(), p)))
            .collect();
        for tp in log_dir.partitions() {
            if !known.contains(&(tp.topic.to_string(), tp.partition)) {
                warn!(partition = %tp, "partition log belongs to no topic; left untouched");
            }
        }
        let topics = Topics {
            meta_dir,
            defaults,
            topics: RwLock::new(map),
            admin: Mutex::new(Some(log_dir)),
        };
        Ok((topics, report))
    }

    /// The topic called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::UnknownTopic(name.to_owned()))
    }

    /// One partition of a topic.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        Ok(Arc::clone(self.get(topic)?.partition(partition)?))
    }

    /// All topics, by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Whether the data dir is open (false once [`close`](Topics::close)d).
    pub fn is_open(&self) -> bool {
        self.admin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The broker's default settings for new topics.
    pub fn default_settings(&self) -> TopicSettings {
        TopicSettings::from_log_config(&self.defaults)
    }

    /// Creates a topic with all its partitions on this broker (a single-node layout; brokers
    /// of a cluster [`install`](Topics::install) what the controller placed).
    pub fn create(&self, new: NewTopic) -> Result<Arc<Topic>> {
        let meta = new.into_meta(&self.defaults)?;
        self.install(meta, &[])
    }

    /// Creates a topic this broker holds (some or all of, per `meta.local_partitions`) from
    /// metadata decided elsewhere: writes the metadata durably, then creates its partitions.
    /// The partitions in `replicated` have several replicas: replication owns their high
    /// watermark from the start, so none is served before its replica role says so.
    pub fn install(&self, meta: TopicMeta, replicated: &[u32]) -> Result<Arc<Topic>> {
        validate_topic_name(&meta.name).map_err(|reason| TopicError::InvalidName {
            name: meta.name.clone(),
            reason,
        })?;
        let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let log_dir = admin.as_ref().ok_or(StorageError::Closed)?;
        if self.get(&meta.name).is_ok() {
            return Err(TopicError::TopicExists(meta.name));
        }
        if let Some(tp) = log_dir
            .partitions()
            .into_iter()
            .find(|tp| *tp.topic == *meta.name)
        {
            return Err(TopicError::InvalidRequest(format!(
                "partition log {tp} exists without topic metadata (left by hand?); move it out of {} first",
                log_dir.path().display()
            )));
        }
        let partitions = meta.partitions;
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| TopicError::CorruptMeta {
            path: self.meta_path(&meta.name),
            detail: e.to_string(),
        })?;
        atomic_write(&self.meta_path(&meta.name), &json, SyncMode::Now)?;
        let name = meta.name.clone();
        let topic = match attach(log_dir, &self.defaults, meta, false, |p, _| {
            replicated.contains(&p)
        }) {
            Ok(topic) => topic,
            Err(e) => {
                // Undo, so a failed create (disk full, say) leaves no topic behind; if the undo
                // fails too, the next open finishes the creation instead.
                warn!(topic = %name, error = %e, "topic creation failed; rolling back");
                if let Err(undo) = delete_partitions(log_dir, &name)
                    .and_then(|()| remove_file(&self.meta_path(&name)))
                {
                    warn!(topic = %name, error = %undo, "rolling back the topic creation failed");
                }
                return Err(e);
            }
        };
        info!(topic = %topic.meta.name, partitions, partitioner = ?topic.meta.partitioner, "created topic");
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.meta.name.clone(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Makes this broker hold exactly the partitions `here` of topic `name` (a reassignment
    /// moved replicas onto or off it): partitions no longer here are deleted with their data,
    /// new ones are created empty (a copy of it left over from an earlier replica is deleted
    /// first: a new replica always starts from nothing and fetches the leader's log).
    /// Crash-safe in either order: a removal deletes the log (renamed away first) before it
    /// rewrites the metadata, so a crash between them leaves a listed partition without a log,
    /// which the next open creates empty; an addition writes the metadata before it creates the
    /// log, so a crash between them is the same case. A new replica joins a replicated
    /// partition (it fetches its leader's log): replication owns its high watermark from the
    /// start. Returns whether anything changed.
    pub fn set_local_partitions(&self, name: &str, topic_id: &str, here: &[u32]) -> Result<bool> {
        let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let log_dir = admin.as_ref().ok_or(StorageError::Closed)?;
        let topic = self.get(name)?;
        if topic.meta.id() != topic_id {
            return Err(TopicError::UnknownTopic(name.to_owned()));
        }
        let wanted = |p: u32| here.contains(&p);
        if (0..topic.meta.partitions).all(|p| topic.meta.is_local(p) == wanted(p)) {
            return Ok(false);
        }
        let mut partitions = topic.partitions.clone();
        for (p, held) in topic.local_partitions() {
            if !wanted(p) {
                let tp = TopicPartition::validated(name, p).map_err(StorageError::from)?;
                partitions[p as usize] = None;
                log_dir.delete_partition(&tp)?;
                held.notify_gone();
                info!(partition = %tp, "deleted a replica moved off this broker");
            }
        }
        let mut meta = topic.meta.clone();
        let mut local: Vec<u32> = here
            .iter()
            .copied()
            .filter(|&p| p < meta.partitions)
            .collect();
        local.sort_unstable();
        local.dedup();
        meta.local_partitions = Some(local);
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| TopicError::CorruptMeta {
            path: self.meta_path(name),
            detail: e.to_string(),
        })?;
        atomic_write(&self.meta_path(name), &json, SyncMode::Now)?;
        let config = meta.settings.log_config(&self.defaults);
        for p in 0..meta.partitions {
            if meta.is_local(p) && partitions[p as usize].is_none() {
                let tp = TopicPartition::validated(name, p).map_err(StorageError::from)?;
                if log_dir.partition(&tp).is_some() {
                    warn!(partition = %tp, "deleting a stale copy before taking the partition as a new replica");
                    log_dir.delete_partition(&tp)?;
                }
                let log = log_dir.create_partition(tp.clone(), Some(config.clone()))?;
                partitions[p as usize] = Some(Arc::new(Partition::new(log, true)));
                info!(partition = %tp, "created a replica moved onto this broker");
            }
        }
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), Arc::new(Topic { meta, partitions }));
        Ok(true)
    }

    /// Deletes a topic and all its data: the metadata is marked deleting first, so a crash
    /// midway is finished by the next open.
    pub fn delete(&self, name: &str) -> Result<()> {
        let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let log_dir = admin.as_ref().ok_or(StorageError::Closed)?;
        let topic = self
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| TopicError::UnknownTopic(name.to_owned()))?;
        let deleting = self.meta_dir.join(format!("{name}{DELETING_SUFFIX}"));
        fs::rename(self.meta_path(name), &deleting)
            .map_err(|e| StorageError::io("marking topic deleted", &deleting, e))?;
        fsync_dir(&self.meta_dir)?;
        delete_partitions(log_dir, name)?;
        // Wake followers: their next read fails (the log is closed) and ends their fetch.
        for (_, partition) in topic.local_partitions() {
            partition.notify_gone();
        }
        remove_file(&deleting)?;
        info!(topic = %name, partitions = topic.meta.partitions, "deleted topic");
        Ok(())
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.meta_dir.join(format!("{name}{META_SUFFIX}"))
    }

    /// Clean shutdown of every partition (sync, checkpoint, clean-shutdown marker). Handles
    /// still held elsewhere answer `Closed` from then on. A second call does nothing.
    pub fn close(&self) -> Result<()> {
        let log_dir = self.admin.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        match log_dir {
            Some(log_dir) => Ok(log_dir.close()?),
            None => Ok(()),
        }
    }
}

/// Opens or creates the partition logs of `meta` and applies its settings to them;
/// `replicated` says which partitions open with replication owning their high watermark
/// ([`Partition::new`]).
fn attach(
    log_dir: &LogDir,
    defaults: &LogConfig,
    meta: TopicMeta,
    recovering: bool,
    replicated: impl Fn(u32, &PartitionLog) -> bool,
) -> Result<Arc<Topic>> {
    let config = meta.settings.log_config(defaults);
    let mut partitions = Vec::with_capacity(meta.partitions as usize);
    for p in 0..meta.partitions {
        if !meta.is_local(p) {
            partitions.push(None);
            continue;
        }
        let tp = TopicPartition::validated(meta.name.as_str(), p).map_err(StorageError::from)?;
        let log = match log_dir.partition(&tp) {
            Some(log) => {
                log.set_config(config.clone())?;
                log
            }
            None => {
                if recovering {
                    warn!(partition = %tp, "creating a partition missing after an interrupted topic creation");
                }
                log_dir.create_partition(tp, Some(config.clone()))?
            }
        };
        let replicated = replicated(p, &log);
        partitions.push(Some(Arc::new(Partition::new(log, replicated))));
    }
    Ok(Arc::new(Topic { meta, partitions }))
}

fn delete_partitions(log_dir: &LogDir, name: &str) -> Result<()> {
    for tp in log_dir.partitions() {
        if &*tp.topic == name {
            log_dir.delete_partition(&tp)?;
        }
    }
    Ok(())
}

impl NewTopic {
    /// Checks the request (name, layout, settings over `defaults`) and makes the topic's
    /// metadata, with a fresh identity and every partition local.
    pub fn into_meta(self, defaults: &LogConfig) -> Result<TopicMeta> {
        validate_topic_name(&self.name).map_err(|reason| TopicError::InvalidName {
            name: self.name.clone(),
            reason,
        })?;
        let partitions = validate_layout(&self)?;
        self.settings
            .log_config(defaults)
            .validate()
            .map_err(|e| TopicError::InvalidRequest(e.to_string()))?;
        let created_ms = now_ms();
        Ok(TopicMeta {
            version: meta::META_VERSION,
            topic_id: format!("{}-{created_ms:x}-{:016x}", self.name, random_u64()),
            name: self.name,
            partitions,
            partitioner: self.partitioner,
            split_keys: self.split_keys,
            settings: self.settings,
            created_ms,
            local_partitions: None,
        })
    }
}

/// 64 random bits without a dependency: std's per-process random hash keys over the time.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Checks partition count and split keys; returns the partition count (derived from the split
/// keys for a range topic created with 0 partitions).
fn validate_layout(new: &NewTopic) -> Result<u32> {
    let invalid = |msg: String| Err(TopicError::InvalidRequest(msg));
    let partitions = match (new.partitioner, new.partitions) {
        (PartitionerKind::Range, 0) => new.split_keys.len() as u32 + 1,
        (_, 0) => return invalid("a topic needs at least 1 partition".into()),
        (_, n) => n,
    };
    if partitions > MAX_PARTITIONS {
        return invalid(format!(
            "{partitions} partitions requested; the limit is {MAX_PARTITIONS}"
        ));
    }
    match new.partitioner {
        PartitionerKind::Range => {
            if new.split_keys.len() as u32 + 1 != partitions {
                return invalid(format!(
                    "a range topic with {} split keys has {} partitions, not {partitions}",
                    new.split_keys.len(),
                    new.split_keys.len() + 1
                ));
            }
            if new.split_keys.windows(2).any(|w| w[0] >= w[1]) {
                return invalid("split keys must be strictly increasing".into());
            }
        }
        _ if !new.split_keys.is_empty() => {
            return invalid("split keys are only for the range partitioner".into());
        }
        _ => {}
    }
    Ok(partitions)
}

fn read_meta(path: &Path, file_topic: &str) -> Result<TopicMeta> {
    let corrupt = |detail: String| TopicError::CorruptMeta {
        path: path.to_owned(),
        detail,
    };
    let bytes = fs::read(path).map_err(|e| StorageError::io("reading topic metadata", path, e))?;
    let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if meta.version != meta::META_VERSION {
        return Err(corrupt(format!(
            "version {} is not supported (this broker reads {})",
            meta.version,
            meta::META_VERSION
        )));
    }
    if meta.name != file_topic {
        return Err(corrupt(format!(
            "file names topic {file_topic:?} but holds {:?}",
            meta.name
        )));
    }
    Ok(meta)
}

fn remove_file(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| StorageError::io("removing file", path, e))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_topic(name: &str, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            partitioner: PartitionerKind::Hash,
            split_keys: Vec::new(),
            settings: TopicSettings::from_log_config(&LogConfig::default()),
        }
    }

    fn names(topics: &Topics) -> Vec<String> {
        topics.list().iter().map(|t| t.meta.name.clone()).collect()
    }

    fn reopen(dir: &Path) -> Topics {
        Topics::open(dir, LogDirConfig::default()).unwrap().0
    }

    #[test]
    fn topics_survive_a_reopen_and_deleted_ones_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let topics = reopen(dir.path());
        topics.create(new_topic("a", 3)).unwrap();
        topics.create(new_topic("b", 1)).unwrap();
        assert!(matches!(
            topics.create(new_topic("a", 1)),
            Err(TopicError::TopicExists(_))
        ));
        topics.delete("b").unwrap();
        assert!(matches!(
            topics.delete("b"),
            Err(TopicError::UnknownTopic(_))
        ));
        topics.close().unwrap();
        let topics = reopen(dir.path());
        assert_eq!(names(&topics), ["a"]);
        assert_eq!(topics.get("a").unwrap().partitions.len(), 3);
        assert!(!dir.path().join("logs/b-0").exists());
    }

    #[test]
    fn an_interrupted_delete_is_finished_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let topics = reopen(dir.path());
        topics.create(new_topic("c", 2)).unwrap();
        topics.close().unwrap();
        // The crash came after the mark, before the partitions went.
        fs::rename(
            dir.path().join("topics/c.json"),
            dir.path().join("topics/c.deleting"),
        )
        .unwrap();
        let topics = reopen(dir.path());
        assert!(names(&topics).is_empty());
        assert!(!dir.path().join("logs/c-0").exists());
        assert!(!dir.path().join("topics/c.deleting").exists());
    }

    #[test]
    fn an_interrupted_create_is_finished_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let topics = reopen(dir.path());
        topics.create(new_topic("d", 4)).unwrap();
        topics.close().unwrap();
        // The crash came after the metadata, before the last partitions.
        fs::remove_dir_all(dir.path().join("logs/d-2")).unwrap();
        fs::remove_dir_all(dir.path().join("logs/d-3")).unwrap();
        let topics = reopen(dir.path());
        let d = topics.get("d").unwrap();
        assert_eq!(d.partitions.len(), 4);
        assert_eq!(d.partition(3).unwrap().log.high_watermark(), 0);
    }

    #[test]
    fn unaccounted_partition_logs_are_left_alone_and_block_a_namesake() {
        let dir = tempfile::tempdir().unwrap();
        let topics = reopen(dir.path());
        topics.create(new_topic("orphan", 1)).unwrap();
        topics.close().unwrap();
        fs::remove_file(dir.path().join("topics/orphan.json")).unwrap();
        let topics = reopen(dir.path());
        assert!(names(&topics).is_empty());
        assert!(
            dir.path().join("logs/orphan-0").exists(),
            "data is never deleted unasked"
        );
        assert!(matches!(
            topics.create(new_topic("orphan", 1)),
            Err(TopicError::InvalidRequest(_))
        ));
    }

    #[test]
    fn a_corrupt_metadata_file_stops_the_open_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        reopen(dir.path()).close().unwrap();
        fs::write(dir.path().join("topics/x.json"), b"{not json").unwrap();
        match Topics::open(dir.path(), LogDirConfig::default()) {
            Err(TopicError::CorruptMeta { path, .. }) => assert!(path.ends_with("x.json")),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a corrupt metadata file was accepted"),
        }
    }

    fn one_record() -> bytes::Bytes {
        let mut b = weir_proto::batch::BatchBuilder::new();
        b.push(weir_proto::batch::RecordInput {
            key: None,
            value: Some(b"v"),
            timestamp: 0,
            headers: &[],
        })
        .unwrap();
        b.build().unwrap()
    }

    #[test]
    fn replication_owns_the_high_watermark_and_bounds_retention_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let topics = reopen(dir.path());
        topics.create(new_topic("single", 1)).unwrap();
        topics.create(new_topic("moved", 1)).unwrap();
        for name in ["single", "moved"] {
            let p = topics.partition(name, 0).unwrap();
            for _ in 0..3 {
                p.log.append(&one_record()).unwrap();
                p.notify_appended();
            }
            assert_eq!(p.high_watermark(), 3, "a single copy: the log end");
            assert_eq!(p.log.retention_limit(), u64::MAX, "retention unbounded");
        }
        // A copy that took part in replication holds leader epochs (one that owns a record).
        let moved = topics.partition("moved", 0).unwrap();
        moved
            .log
            .assign_epoch(weir_replication::LeaderEpoch(1), 3)
            .unwrap();
        moved.log.append(&one_record()).unwrap();
        moved.notify_appended();
        drop(moved);
        topics.close().unwrap();

        let topics = reopen(dir.path());
        let single = topics.partition("single", 0).unwrap();
        assert!(!single.is_replicated(), "served at once, as before");
        assert_eq!(single.high_watermark(), 3);
        assert_eq!(single.log.retention_limit(), u64::MAX);
        // Until the controller says what it is, the other one is not served and its
        // retention keeps everything (its high watermark is the log start).
        let moved = topics.partition("moved", 0).unwrap();
        assert!(moved.is_replicated());
        assert_eq!(moved.high_watermark(), 0);
        assert_eq!(moved.log.retention_limit(), 0);
        // Replication moves the high watermark; retention follows it, never past the log end.
        moved.set_high_watermark(2);
        assert_eq!(moved.log.retention_limit(), 2);
        moved.set_high_watermark(10);
        assert_eq!(
            (moved.high_watermark(), moved.log.retention_limit()),
            (4, 4)
        );
        // A single copy after all: its log end, and retention unbounded.
        moved.set_replicated(false);
        assert_eq!(moved.high_watermark(), 4);
        assert_eq!(moved.log.retention_limit(), u64::MAX);
        // Handed to replication again, it starts over from the log start.
        moved.set_replicated(true);
        assert_eq!(
            (moved.high_watermark(), moved.log.retention_limit()),
            (0, 0)
        );
    }

    #[test]
    fn layouts_are_checked() {
        let range = |partitions, keys: &[&str]| NewTopic {
            partitioner: PartitionerKind::Range,
            split_keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            ..new_topic("r", partitions)
        };
        assert_eq!(validate_layout(&range(0, &["g", "p"])).unwrap(), 3);
        assert_eq!(validate_layout(&range(3, &["g", "p"])).unwrap(), 3);
        assert!(validate_layout(&range(2, &["g", "p"])).is_err());
        assert!(validate_layout(&range(0, &["p", "g"])).is_err());
        assert!(validate_layout(&range(0, &["g", "g"])).is_err());
        let hash_with_keys = NewTopic {
            split_keys: vec![b"a".to_vec()],
            ..new_topic("h", 2)
        };
        assert!(validate_layout(&hash_with_keys).is_err());
        assert!(validate_layout(&new_topic("h", 0)).is_err());
        assert!(validate_layout(&new_topic("h", MAX_PARTITIONS + 1)).is_err());
    }
}
