//! The broker's data directory, as `--data-dir` holds it (segments-format.md section 2 is the
//! reference): one place for every name in it, and the list of storage-engine data dirs in it
//! that `weir-broker --verify` checks.
//!
//! ```text
//! <data-dir>/
//!   logs/                 the topic partitions: a weir-storage data dir (segments, checkpoints)
//!   topics/<name>.json    each topic's metadata as this node last applied it
//!   producer-ids          the end of the last block of idempotent producer ids handed out
//!   controller/           a controller node only (roles combined and controller):
//!     log/                its metadata journal: a weir-storage data dir of one partition
//!     snapshot.json       its whole state at some journal offset; a restart replays after it
//! ```

use std::path::{Path, PathBuf};

/// The topic partitions' storage-engine data dir.
pub const LOGS_DIR: &str = "logs";
/// Each topic's metadata, one JSON file per topic.
pub const TOPICS_DIR: &str = "topics";
/// The end of the last reserved block of producer ids.
pub const PRODUCER_IDS_FILE: &str = "producer-ids";
/// A controller node's own directory.
pub const CONTROLLER_DIR: &str = "controller";
/// The controller's journal: a storage-engine data dir inside [`CONTROLLER_DIR`].
pub const CONTROLLER_LOG_DIR: &str = "log";
/// The controller's state snapshot, inside [`CONTROLLER_DIR`].
pub const CONTROLLER_SNAPSHOT_FILE: &str = "snapshot.json";

/// The storage-engine data dirs under `data_dir` that exist: the topic logs and, on a
/// controller node, the controller journal.
pub fn storage_dirs(data_dir: &Path) -> Vec<PathBuf> {
    [
        data_dir.join(LOGS_DIR),
        data_dir.join(CONTROLLER_DIR).join(CONTROLLER_LOG_DIR),
    ]
    .into_iter()
    .filter(|d| d.is_dir())
    .collect()
}
