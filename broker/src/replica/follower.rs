//! The follower's fetch loop: one task per partition this broker follows, fetching from the
//! leader's data port (served there with sendfile, so replication costs the leader no copy)
//! and appending the leader's batches byte for byte at the same offsets.
//!
//! Each round sends a replica fetch ([`weir_proto::data_port::ReplicaFetch`]) from the log end,
//! with the follower's last epoch and durable offset; the fetch offset is what the leader
//! counts as this follower's progress. The answer is, in order: `Epoch` frames (epochs this
//! follower lacks, recorded in its epoch history just before the first batch at or past their
//! start), `Data` frames, and `End` (the leader's high watermark, kept capped by the log end;
//! possibly a request to sync before the next round), `Diverging` (the logs differ: cut the
//! log where the epochs say, never to the high watermark, rule 8, then fetch again) or
//! `OutOfRange` (the leader's log starts past anything this follower can keep: empty the log,
//! restart it at the leader's log start and epoch there, then fetch again).
//!
//! Invariants: appends and truncations hold the replica's writer lock (see `replica`); a
//! follower appends only answers to its current fetch in its current epoch (the task is aborted
//! on any role change, and every fetch names the epoch, which the leader checks); a batch is
//! appended only at the follower's log end (`append_replica` refuses anything else).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};
use weir_proto::batch::split_batches;
use weir_proto::data_port::{
    EpochEntry, FetchFrame, FrameKind, RESPONSE_FLAG_SYNC_WANTED, RESPONSE_HEADER_LEN,
    ReplicaFetch, ResponseHeader,
};
use weir_proto::v1::ErrorCode;
use weir_replication::LeaderEpoch;
use weir_replication::follower::truncation_offset;

use super::{Replica, ReplicaManager};

/// The most a follower accepts in one frame (a leader never sends more than a fetch's max
/// bytes plus one batch).
const MAX_FRAME_BYTES: usize = 64 << 20;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A fetch answer may come this much later than the leader's max wait (a busy leader, a large
/// frame on a slow link) before the follower gives up on the connection.
const MIN_SILENCE_MARGIN: Duration = Duration::from_secs(2);

/// Why a round of fetching stopped.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("leader connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the leader refused the fetch ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the leader broke the protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Storage(#[from] weir_storage::StorageError),
    #[error("storage task failed: {0}")]
    Task(String),
}

/// Follows `leader` (its data port at `address`) in `epoch` until aborted.
pub(crate) async fn follow(
    manager: Arc<ReplicaManager>,
    replica: Arc<Replica>,
    leader: u32,
    address: String,
    epoch: LeaderEpoch,
) {
    let mut backoff = MIN_BACKOFF;
    let mut reported = false;
    loop {
        match rounds(&manager, &replica, &address, epoch, &mut backoff).await {
            Ok(()) => {}
            Err(e) => {
                // The leader not (yet, or no longer) leading this epoch is the normal moment
                // of a leadership change: the metadata settles it. So is a closed log: a
                // reassignment removed this replica (its copy is deleted before its role
                // stops), or the broker is closing. Anything else is worth a warning once.
                let transient = matches!(
                    &e,
                    FollowError::Refused {
                        code: ErrorCode::NotLeader
                            | ErrorCode::UnknownLeaderEpoch
                            | ErrorCode::FencedLeaderEpoch,
                        ..
                    } | FollowError::Storage(weir_storage::StorageError::Closed)
                );
                if !reported && !transient {
                    warn!(partition = %format!("{}-{}", replica.topic, replica.index), leader, error = %e, "replication from the leader stopped; retrying");
                    reported = true;
                } else {
                    debug!(partition = %format!("{}-{}", replica.topic, replica.index), leader, error = %e, "replication retry failed");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Fetch rounds over one connection, until it fails.
async fn rounds(
    manager: &ReplicaManager,
    replica: &Replica,
    address: &str,
    epoch: LeaderEpoch,
    backoff: &mut Duration,
) -> Result<(), FollowError> {
    let config = manager.config();
    let mut stream = crate::security::tls::dial(address, config.tls.as_ref()).await?;
    if let Some(token) = &config.token {
        // The broker token first: a leader whose data port requires one refuses the replica
        // fetch of a connection without it.
        let hello = weir_proto::data_port::authenticate::Authenticate {
            token: token.clone(),
        };
        stream.write_all(&hello.encode()).await?;
        let (header, payload) = read_frame(&mut stream).await?;
        if header.kind != FrameKind::End {
            let code =
                ErrorCode::try_from(i32::from(header.error_code)).unwrap_or(ErrorCode::Internal);
            return Err(FollowError::Refused {
                code,
                message: String::from_utf8_lossy(&payload).into_owned(),
            });
        }
    }
    // The leader answers every fetch within its max wait. A connection silent for longer is
    // dead even if it looks open (a partition that swallowed the request or the answer, a
    // leader host gone without a reset): waiting on it would leave this follower stuck, out of
    // the ISR for good, while the leader stays leader. Past the lag limit it is out of the ISR
    // anyway, so reconnecting then costs nothing.
    let silence = config
        .lag_time_max
        .max(config.fetch_max_wait + MIN_SILENCE_MARGIN);
    // Built once per connection; each round sets where it stands.
    let mut frame = FetchFrame {
        topic: replica.topic.to_string(),
        partition: replica.index,
        offset: 0,
        max_bytes: config.fetch_max_bytes,
        max_wait_ms: config.fetch_max_wait.as_millis() as u32,
        follow: false,
        replica: None,
        current_leader_epoch: None,
    };
    loop {
        if let Some(damage) = replica.partition.log.known_damage() {
            cut_damage(replica, damage).await?;
        }
        let log = &replica.partition.log;
        frame.offset = log.high_watermark();
        frame.replica = Some(ReplicaFetch {
            replica_id: manager.node_id(),
            broker_epoch: manager.broker_epoch(),
            leader_epoch: epoch.0,
            last_fetched_epoch: log.latest_epoch().map_or(0, |e| e.0),
            durable_offset: log.recovery_point(),
        });
        stream.write_all(&frame.encode()).await?;
        stream.flush().await?;
        let mut epochs: Vec<EpochEntry> = Vec::new();
        loop {
            let (header, payload) = tokio::time::timeout(silence, read_frame(&mut stream))
                .await
                .map_err(|_| {
                    FollowError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer from the leader within {silence:?}"),
                    ))
                })??;
            match header.kind {
                FrameKind::Epoch => epochs.push(decode_epoch(&payload)?),
                FrameKind::Data if payload.is_empty() => {}
                FrameKind::Data => {
                    append_chunk(replica, payload, &mut epochs).await?;
                    *backoff = MIN_BACKOFF;
                }
                FrameKind::Diverging => {
                    let entry = decode_epoch(&payload)?;
                    truncate_diverging(replica, entry).await?;
                    break;
                }
                FrameKind::OutOfRange => {
                    let entry = decode_epoch(&payload)?;
                    start_over(replica, entry).await?;
                    break;
                }
                FrameKind::End => {
                    replica.partition.set_high_watermark(header.high_watermark);
                    if header.flags & RESPONSE_FLAG_SYNC_WANTED != 0 {
                        let log = Arc::clone(&replica.partition.log);
                        let end = log.high_watermark();
                        blocking(move || log.sync_through(end)).await?;
                    }
                    *backoff = MIN_BACKOFF;
                    break;
                }
                FrameKind::Error => {
                    let code = ErrorCode::try_from(i32::from(header.error_code))
                        .unwrap_or(ErrorCode::Internal);
                    return Err(FollowError::Refused {
                        code,
                        message: String::from_utf8_lossy(&payload).into_owned(),
                    });
                }
            }
        }
    }
}

async fn read_frame(
    stream: &mut Box<dyn crate::security::tls::LinkIo>,
) -> Result<(ResponseHeader, Bytes), FollowError> {
    let mut head = [0u8; RESPONSE_HEADER_LEN];
    stream.read_exact(&mut head).await?;
    let header = ResponseHeader::decode(&head).map_err(|e| FollowError::Protocol(e.to_string()))?;
    let len = header.length as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FollowError::Protocol(format!(
            "a frame of {len} bytes (at most {MAX_FRAME_BYTES} expected)"
        )));
    }
    // Read into spare capacity: zeroing a frame's buffer first cost a follower 7% of its CPU.
    let mut payload = BytesMut::with_capacity(len);
    while payload.len() < len {
        let want = (len - payload.len()) as u64;
        if (&mut *stream).take(want).read_buf(&mut payload).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok((header, payload.freeze()))
}

fn decode_epoch(payload: &[u8]) -> Result<EpochEntry, FollowError> {
    EpochEntry::decode(payload).map_err(|e| FollowError::Protocol(e.to_string()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, weir_storage::StorageError> + Send + 'static,
) -> Result<T, FollowError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(FollowError::Task(e.to_string())),
    }
}

/// Appends the leader's batches, recording each newer epoch just before its first batch.
async fn append_chunk(
    replica: &Replica,
    payload: Bytes,
    epochs: &mut Vec<EpochEntry>,
) -> Result<(), FollowError> {
    let writer = Arc::clone(&replica.writer).lock_owned().await;
    let log = Arc::clone(&replica.partition.log);
    let mut pending = std::mem::take(epochs);
    let rest = blocking(move || {
        let _writer = writer;
        for batch in split_batches(payload) {
            let batch = batch.map_err(weir_storage::StorageError::InvalidBatch)?;
            let base = batch.base_offset();
            while let Some(entry) = pending.first().copied()
                && entry.offset <= base
            {
                log.assign_epoch(LeaderEpoch(entry.epoch), entry.offset)?;
                pending.remove(0);
            }
            log.append_replica(batch.as_bytes())?;
        }
        Ok(pending)
    })
    .await;
    replica.partition.notify_appended();
    *epochs = rest?;
    Ok(())
}

/// Self-healing: the scrub found a damaged batch in this follower's log. The follower cuts the
/// log at it and fetches the range again from the leader (whose copy passed its CRCs when it
/// was sent: a follower validates every batch it appends). Its next fetch, below the high
/// watermark, takes it out of the ISR at once (see `leader`), and it rejoins once caught up.
async fn cut_damage(
    replica: &Replica,
    damage: weir_storage::KnownDamage,
) -> Result<(), FollowError> {
    let writer = Arc::clone(&replica.writer).lock_owned().await;
    let log = Arc::clone(&replica.partition.log);
    let offset = damage.offset;
    let end = blocking(move || {
        let _writer = writer;
        let end = log.high_watermark();
        log.truncate_to(offset)?;
        Ok(end)
    })
    .await?;
    replica.partition.clamp_to_log_end();
    warn!(partition = %format!("{}-{}", replica.topic, replica.index), offset, log_end = end, segment = %damage.segment.display(), reason = ?damage.reason, "damaged batch in this copy (found by the scrub or a check): cut the log there to fetch the rest again from the leader");
    Ok(())
}

/// Cuts the log where the leader's answer says the epochs diverge (KIP-101, KIP-279).
async fn truncate_diverging(replica: &Replica, entry: EpochEntry) -> Result<(), FollowError> {
    let writer = Arc::clone(&replica.writer).lock_owned().await;
    let log = Arc::clone(&replica.partition.log);
    let (from, to) = blocking(move || {
        let _writer = writer;
        let end = log.high_watermark();
        let epoch = (entry.epoch > 0).then_some(LeaderEpoch(entry.epoch));
        let to = truncation_offset(&log.epoch_history(), end, epoch, entry.offset);
        if to < log.log_start_offset() {
            // This copy's own retention went past the cut: nothing it holds is kept.
            log.reset_to(to)?;
        } else {
            // Even when nothing is cut, the history must lose the epochs starting at the cut
            // (an epoch this follower learned but wrote nothing in), or the next fetch
            // diverges again.
            log.truncate_to(to)?;
        }
        Ok((end, to))
    })
    .await?;
    replica.partition.clamp_to_log_end();
    if to < from {
        info!(partition = %format!("{}-{}", replica.topic, replica.index), from, to, leader_epoch = entry.epoch, "truncated a diverging suffix");
    }
    Ok(())
}

/// The leader's log starts past what this follower can keep (`OutOfRange`: retention deleted
/// what it needs next, or the logs diverge below the leader's log start): empty the log, start
/// it at the leader's log start in the leader's epoch there, and fetch on from it (Kafka's
/// truncate-fully-and-start-at). The leader counts nothing of this fetch as progress; the
/// follower rejoins the ISR once it caught up from there.
async fn start_over(replica: &Replica, entry: EpochEntry) -> Result<(), FollowError> {
    let writer = Arc::clone(&replica.writer).lock_owned().await;
    let log = Arc::clone(&replica.partition.log);
    let (end, start) = blocking(move || {
        let _writer = writer;
        let (end, start) = (log.high_watermark(), log.log_start_offset());
        log.reset_to(entry.offset)?;
        // Recorded now, before the first batch: the next fetch names it as its last epoch,
        // which the leader's history has, so the fetch is served from the log start. (A
        // restart before the first batch drops it again, and the leader answers the same.)
        if entry.epoch > 0 {
            log.assign_epoch(LeaderEpoch(entry.epoch), entry.offset)?;
        }
        Ok((end, start))
    })
    .await?;
    replica.partition.clamp_to_log_end();
    warn!(partition = %format!("{}-{}", replica.topic, replica.index), log_start = start, log_end = end, leader_log_start = entry.offset, leader_epoch = entry.epoch, "the leader no longer holds what this follower needs next (its retention deleted it): emptied the log to start over at the leader's log start");
    Ok(())
}
