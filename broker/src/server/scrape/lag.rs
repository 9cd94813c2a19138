//! Consumer-group lag, computed by the broker that leads each partition: the controller holds
//! committed offsets, the leader holds the high watermark. A background task copies every
//! group's committed offsets from the controller (ListGroups, then FetchOffsets per group) every
//! [`REFRESH`]; a scrape pairs that copy with the high watermarks of the partitions led here.
//!
//! Invariants: a scrape never waits for the controller (it reads the last copy, which is at
//! most [`REFRESH`] plus a round trip old, and empty until the first refresh); with the
//! controller unreachable the last copy stays (lag then grows as the high watermark moves,
//! which is what an operator should see: commits are not happening); lag is never negative (a
//! commit past the high watermark, possible right after a leader change, reads as 0).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;
use weir_proto::v1::{FetchOffsetsRequest, ListGroupsRequest};

use crate::controller::link::ControllerLink;

/// How often committed offsets are copied from the controller.
pub const REFRESH: Duration = Duration::from_secs(5);

/// (group, topic, partition) -> committed offset.
pub type Commits = BTreeMap<(String, String, u32), u64>;

/// The last copy of every group's committed offsets.
#[derive(Debug, Default, Clone)]
pub struct CommittedOffsets(Arc<Mutex<Arc<Commits>>>);

impl CommittedOffsets {
    /// The last copy.
    pub fn snapshot(&self) -> Arc<Commits> {
        Arc::clone(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace(&self, commits: Commits) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(commits);
    }
}

/// Copies the committed offsets every [`REFRESH`] until `stop` turns true.
pub async fn refresh(
    controller: ControllerLink,
    offsets: CommittedOffsets,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match fetch_all(&controller).await {
            Ok(commits) => offsets.replace(commits),
            Err(e) => {
                debug!(error = %e.message, "could not copy committed offsets for the lag metrics; keeping the last copy")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(REFRESH) => {}
            _ = stop.wait_for(|&stopping| stopping) => return,
        }
    }
}

async fn fetch_all(controller: &ControllerLink) -> Result<Commits, weir_proto::v1::Error> {
    let groups = controller.list_groups(ListGroupsRequest {}).await?.groups;
    let mut commits = Commits::new();
    for group in groups {
        let offsets = controller
            .fetch_offsets(FetchOffsetsRequest {
                group: group.group.clone(),
                topics: Vec::new(),
            })
            .await?
            .offsets;
        for o in offsets {
            commits.insert((group.group.clone(), o.topic, o.partition), o.offset);
        }
    }
    Ok(commits)
}
