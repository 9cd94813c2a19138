//! [`GroupConsumer`]: a [`Consumer`] whose partitions the controller assigns, as one member of
//! a consumer group, with committed offsets.
//!
//! The controller runs the assignor; this side only follows. A group consumer:
//!
//! - joins (JoinGroup) and assigns itself the partitions it was given, each positioned at the
//!   group's committed offset, or by [`AutoOffsetReset`] where there is none or where it is
//!   out of the log's range (below the log start after retention, or past the end after the
//!   topic was recreated), as Kafka does;
//! - heartbeats every `heartbeat_interval` from inside [`next`](GroupConsumer::next), reporting
//!   the partitions it holds, and when a heartbeat's answer differs from what it holds it
//!   *rebalances*: it stops the record stream, drops the
//!   revoked partitions (uncommitted: their new owner starts from the last commit; the next
//!   heartbeat, sent at once, reports them gone), adds the
//!   new ones from their committed offsets and starts a new stream. Kept partitions carry
//!   their positions over, and the next commit commits them under the new generation. A
//!   rebalance itself commits nothing: only the caller decides when what `next` returned is
//!   done with (the CLI, for one, commits only what it has flushed to stdout);
//! - receives a partition only once its previous owner has reported letting go of it (the
//!   controller's revocation barrier), so two members never read a partition at once; until then the
//!   answer says the member has partitions *pending*, heartbeats come sooner, and `next` does
//!   not report the end of the data;
//! - rejoins with a fresh member id when the controller no longer knows it (`UNKNOWN_MEMBER`,
//!   e.g. after a pause longer than the session timeout);
//! - commits positions (the offset after the last record `next` returned) on
//!   [`commit`](GroupConsumer::commit), on the auto-commit interval if set, at the end of the data
//!   without follow, and on [`close`](GroupConsumer::close), which then leaves the group.
//!
//! Invariants: a partition's committed offset never passes a record `next` has not returned
//! (positions advance as records are yielded); a commit always carries the generation this
//! member last applied, so commits from before a rebalance are refused (`STALE_GENERATION`)
//! rather than overwriting the new owner's; nothing is committed for partitions that did not
//! move (except, once, the start of a partition assigned while its owner was down, which is
//! looked up later).
//!
//! Heartbeats run only while the caller is inside `next` (or calls
//! [`heartbeat`](GroupConsumer::heartbeat)): a caller that spends longer than the session timeout
//! between calls is evicted and rejoins, and records it read in the meantime but did not commit
//! may be read again by the partition's new owner. Delivery is at least once.
//! Dropping a group consumer without `close` leaves it in the group until its session times out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use weir_proto::v1::{self, ErrorCode};

use super::{Consumer, ConsumerConfig, ConsumerRecord, RecordStream, Unresolved};
use crate::admin::{Admin, GroupAssignor, MemberAssignment, OffsetSpec};
use crate::{Client, ClientError, TopicPartition};

/// Where a group consumer starts a partition the group has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// The oldest record still kept. The default: a new group sees everything already in the
    /// topic (nothing is silently skipped), which is what a `weir consume --group` user expects
    /// on a first run. (Kafka defaults to latest; set that for "only new records".)
    #[default]
    Earliest,
    /// The high watermark: only records produced from the join on.
    Latest,
}

/// How a [`GroupConsumer`] joins and commits.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group's name.
    pub group: String,
    /// The topics to subscribe to.
    pub topics: Vec<String>,
    /// The group's assignor; every member must use the same one. Default
    /// [`GroupAssignor::Range`], like Kafka's default.
    pub assignor: GroupAssignor,
    /// The controller evicts a member not heard from for this long. Default 10 s (the
    /// broker's default; it clamps the value to at most 5 minutes). Heartbeats are sent every
    /// third of it.
    pub session_timeout: Duration,
    /// Where to start partitions without a committed offset. Default
    /// [`AutoOffsetReset::Earliest`].
    pub auto_offset_reset: AutoOffsetReset,
    /// Commit positions this often from inside `next`. Default `None`: commits only on
    /// [`GroupConsumer::commit`], at the end of the data and on close.
    pub auto_commit_interval: Option<Duration>,
    /// A label for humans, shown by DescribeGroup. Default empty (the broker says "member").
    pub client_id: String,
    /// How the inner consumer fetches (`follow`, transport, ...).
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    /// Defaults for `group` subscribing to `topics`.
    pub fn new(
        group: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        GroupConfig {
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            assignor: GroupAssignor::default(),
            session_timeout: Duration::from_secs(10),
            auto_offset_reset: AutoOffsetReset::default(),
            auto_commit_interval: None,
            client_id: String::new(),
            consumer: ConsumerConfig::default(),
        }
    }
}

/// One member of a consumer group; see the [module docs](self).
#[derive(Debug)]
pub struct GroupConsumer {
    admin: Admin,
    config: GroupConfig,
    member_id: String,
    generation: u32,
    heartbeat_interval: Duration,
    consumer: Consumer,
    stream: Option<RecordStream>,
    next_heartbeat: Instant,
    next_commit: Option<Instant>,
    /// What this member last committed or started from, per owned partition.
    committed: BTreeMap<TopicPartition, u64>,
    /// The stream ended (no follow): `next` returns `None`.
    finished: bool,
    /// Some partitions of this member's are still with their previous owners (see the
    /// controller's revocation barrier): the data is not all read until they arrive.
    pending: bool,
    /// Numbers this member's heartbeats, so the controller can tell a late one.
    heartbeats_sent: u64,
}

impl GroupConsumer {
    /// Joins `config.group` and positions the assigned partitions. Fails if the group call is
    /// refused (e.g. `INVALID_REQUEST` for no topics or a different assignor than the group's)
    /// or a subscribed topic does not exist.
    pub async fn join(client: &Client, config: GroupConfig) -> Result<GroupConsumer, ClientError> {
        if config.topics.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a group consumer must subscribe to at least one topic".into(),
            ));
        }
        let admin = client.admin();
        let consumer = client.consumer(config.consumer.clone());
        let mut this = GroupConsumer {
            admin,
            config,
            member_id: String::new(),
            generation: 0,
            heartbeat_interval: Duration::from_secs(3),
            consumer,
            stream: None,
            next_heartbeat: Instant::now(),
            next_commit: None,
            committed: BTreeMap::new(),
            finished: false,
            pending: false,
            heartbeats_sent: 0,
        };
        let joined = this.join_group("").await?;
        this.apply(joined).await?;
        this.next_commit = this.config.auto_commit_interval.map(|i| Instant::now() + i);
        Ok(this)
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.config.group
    }

    /// The id the controller gave this member.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The generation this member works in (bumped by every rebalance).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// This member's partitions, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    /// The position (next offset to read) of an owned partition; `None` if it is not owned, or
    /// its start is not known yet (its owner was down when it was assigned).
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.consumer.position(topic, partition)
    }

    /// True if records are fetched and waiting (see [`RecordStream::has_buffered`]).
    pub fn has_buffered(&self) -> bool {
        self.stream.as_ref().is_some_and(RecordStream::has_buffered)
    }

    /// The next record of any owned partition, heartbeating and auto-committing on the way.
    /// `None` once, without follow, every owned partition has reached its high watermark and
    /// none is pending (after a final commit when auto-commit is on); with follow, only if
    /// every partition failed. Cancel-safe: dropping the future (e.g. in `select!`) loses no
    /// record and leaves the group state consistent (an interrupted rebalance is redone at the
    /// next heartbeat). An `Err` from a partition ends that partition until the next
    /// rebalance; an `Err` from a group call is returned as is and the call can be repeated.
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord, ClientError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Err(error) = self.maintain().await {
                return Some(Err(error));
            }
            let deadline = match self.next_commit {
                Some(commit) => commit.min(self.next_heartbeat),
                None => self.next_heartbeat,
            };
            if self.consumer.assignment().is_empty() {
                // Nothing to read until a heartbeat brings partitions; without follow and with
                // none on the way, there is nothing to read at all.
                if !self.config.consumer.follow && !self.pending {
                    self.finished = true;
                    return None;
                }
                tokio::time::sleep_until(deadline).await;
                continue;
            }
            let consumer = &self.consumer;
            let stream = self.stream.get_or_insert_with(|| consumer.stream());
            tokio::select! {
                item = stream.next() => match item {
                    Some(item) => return Some(item),
                    None if self.pending => {
                        // The partitions still on their way have records to read too.
                        self.stream = None;
                        tokio::time::sleep_until(deadline).await;
                    }
                    None => {
                        self.stream = None;
                        self.finished = true;
                        if self.config.auto_commit_interval.is_some()
                            && let Err(error) = self.commit().await
                        {
                            return Some(Err(error));
                        }
                        return None;
                    }
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Heartbeats now and applies a rebalance if the group has moved on (also done by `next`).
    pub async fn heartbeat(&mut self) -> Result<(), ClientError> {
        self.heartbeats_sent += 1;
        let answer = match self
            .admin
            .group_heartbeat(
                &self.config.group,
                &self.member_id,
                self.generation,
                &self.consumer.assignment(),
                self.heartbeats_sent,
            )
            .await
        {
            Ok(answer) => answer,
            Err(error) if error.code() == Some(ErrorCode::UnknownMember) => {
                tracing::warn!(group = %self.config.group, member = %self.member_id,
                    "evicted from the group; rejoining");
                // A new member id; the old one is kept until the join succeeds.
                self.join_group("").await?
            }
            Err(error) => return Err(error),
        };
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
        self.pending = answer.pending;
        let owned: BTreeSet<TopicPartition> = self.consumer.assignment().into_iter().collect();
        if answer.generation != self.generation
            || answer.member_id != self.member_id
            || answer.assignment != owned
        {
            self.apply(answer).await?;
        }
        Ok(())
    }

    /// Commits the positions of owned partitions that moved since the last commit, with the
    /// current generation. After a rebalance (`STALE_GENERATION`) it heartbeats, which applies
    /// the new assignment, and commits the partitions still owned under the new generation.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets = self.moved_positions();
        if offsets.is_empty() {
            return Ok(());
        }
        match self.commit_offsets(&offsets).await {
            Err(error) if error.code() == Some(ErrorCode::StaleGeneration) => {
                // Catch up with the rebalance, then commit what is still ours.
                self.heartbeat().await?;
                let offsets = self.moved_positions();
                if offsets.is_empty() {
                    return Ok(());
                }
                self.commit_offsets(&offsets).await
            }
            other => other,
        }
    }

    /// Commits what was read (if anything moved) and leaves the group, so its partitions are
    /// reassigned at once. The commit's error, if any, is returned after leaving.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.stream = None;
        let committed = self.commit().await;
        let left = self
            .admin
            .leave_group(&self.config.group, &self.member_id)
            .await;
        committed.and(left)
    }

    /// Joins as `member_id` (empty: as a new member).
    async fn join_group(&self, member_id: &str) -> Result<MemberAssignment, ClientError> {
        self.admin
            .join_group(v1::JoinGroupRequest {
                group: self.config.group.clone(),
                member_id: member_id.to_owned(),
                client_id: self.config.client_id.clone(),
                topics: self.config.topics.clone(),
                assignor: self.config.assignor.to_wire() as i32,
                session_timeout_ms: u32::try_from(self.config.session_timeout.as_millis())
                    .unwrap_or(u32::MAX),
            })
            .await
    }

    /// Heartbeat and auto-commit, whichever is due. Retriable failures are logged and retried
    /// at the next interval; others are returned.
    async fn maintain(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        if now >= self.next_heartbeat
            && let Err(error) = self.heartbeat().await
        {
            self.next_heartbeat = Instant::now() + self.heartbeat_interval;
            if !error.is_retriable() {
                return Err(error);
            }
            tracing::warn!(group = %self.config.group, %error, "group heartbeat failed; retrying");
        }
        if let (Some(due), Some(interval)) = (self.next_commit, self.config.auto_commit_interval)
            && now >= due
        {
            self.next_commit = Some(Instant::now() + interval);
            if let Err(error) = self.commit().await {
                if !error.is_retriable() {
                    return Err(error);
                }
                tracing::warn!(group = %self.config.group, %error, "auto-commit failed; retrying");
            }
        }
        Ok(())
    }

    /// Moves to `answer`'s member id, generation and assignment (see the module docs).
    ///
    /// Safe to abandon at any await (a caller's `select!` may drop `next`): revoked partitions
    /// go first, without awaiting; a partition joins the assignment only together with its
    /// start position; and the generation is taken last, so an interrupted rebalance leaves
    /// the old generation, which the next heartbeat sees differ and rebalances again.
    async fn apply(&mut self, answer: MemberAssignment) -> Result<(), ClientError> {
        // Positions are final once the stream is gone.
        self.stream = None;
        self.finished = false;
        self.member_id = answer.member_id.clone();
        self.heartbeat_interval = answer.heartbeat_interval;
        self.pending = answer.pending;
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;

        let owned: BTreeSet<TopicPartition> = self.consumer.assignment().into_iter().collect();
        let mut revoked = false;
        for tp in owned.difference(&answer.assignment) {
            self.consumer.unassign(&tp.topic, tp.partition);
            self.committed.remove(tp);
            revoked = true;
        }
        if revoked {
            // The next heartbeat reports them gone, which frees them for their new owner.
            self.next_heartbeat = Instant::now();
        }
        let added: Vec<&TopicPartition> = answer.assignment.difference(&owned).collect();
        if !added.is_empty() {
            self.add_partitions(&added).await?;
        }
        self.generation = answer.generation;
        tracing::debug!(group = %self.config.group, member = %self.member_id,
            generation = self.generation, partitions = answer.assignment.len(), "assignment applied");
        Ok(())
    }

    /// Assigns `added` to the consumer at the group's committed offsets, else by
    /// `auto_offset_reset`; a committed offset outside the log counts as none. A partition
    /// whose owner is down is assigned all the same: at its committed offset (unchecked), or
    /// unresolved, for its fetch task to look up when the owner is back. Start positions are
    /// decided before a partition is assigned, so none is ever assigned unpositioned.
    async fn add_partitions(&mut self, added: &[&TopicPartition]) -> Result<(), ClientError> {
        let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for tp in added {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let topics: Vec<&str> = by_topic.keys().copied().collect();
        let committed = self
            .admin
            .fetch_committed(&self.config.group, &topics)
            .await?;
        // The log end a partition starts at without a usable commit.
        let reset = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => Unresolved::Earliest,
            AutoOffsetReset::Latest => Unresolved::Latest,
        };
        for (topic, partitions) in by_topic {
            let earliest = self
                .admin
                .list_offsets_each(topic, &partitions, OffsetSpec::Earliest)
                .await?;
            let latest = self
                .admin
                .list_offsets_each(topic, &partitions, OffsetSpec::Latest)
                .await?;
            let mut starts = BTreeMap::new();
            // Committed offsets that could not be checked (an owner down): the fetch checks.
            let mut unchecked = Vec::new();
            for &partition in &partitions {
                let tp = TopicPartition::new(topic, partition);
                let (first, last) = (
                    known_end(&earliest, partition)?,
                    known_end(&latest, partition)?,
                );
                let committed = committed.get(&tp).copied();
                let usable = match (committed, first, last) {
                    (Some(offset), Some(first), Some(last))
                        if !(first..=last).contains(&offset) =>
                    {
                        tracing::warn!(group = %self.config.group, %tp, committed = offset,
                            log_start = first, high_watermark = last,
                            reset = ?self.config.auto_offset_reset,
                            "the committed offset is outside the log; resetting");
                        None
                    }
                    (Some(offset), Some(_), Some(_)) => Some(offset),
                    // Not checkable while the owner is down, or none.
                    (committed, ..) => {
                        if committed.is_some() {
                            unchecked.push(partition);
                        }
                        committed
                    }
                };
                let reset_to = match reset {
                    Unresolved::Earliest => first,
                    Unresolved::Latest => last,
                };
                let start = usable.or(reset_to).unwrap_or(reset.cell_value());
                starts.insert(partition, start);
            }
            self.consumer.assign_at(topic, starts);
            for partition in unchecked {
                self.consumer.mark_unchecked(topic, partition, reset);
            }
            for &partition in &partitions {
                if let Some(position) = self.consumer.position(topic, partition) {
                    self.committed
                        .insert(TopicPartition::new(topic, partition), position);
                }
            }
        }
        Ok(())
    }

    /// Owned partitions whose position differs from what was last committed (or started from).
    fn moved_positions(&self) -> BTreeMap<TopicPartition, u64> {
        self.consumer
            .assignment()
            .into_iter()
            .filter_map(|tp| {
                let position = self.consumer.position(&tp.topic, tp.partition)?;
                (self.committed.get(&tp) != Some(&position)).then_some((tp, position))
            })
            .collect()
    }

    async fn commit_offsets(
        &mut self,
        offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), ClientError> {
        self.admin
            .commit_offsets(
                &self.config.group,
                Some((&self.member_id, self.generation)),
                offsets,
            )
            .await?;
        self.committed
            .extend(offsets.iter().map(|(tp, &o)| (tp.clone(), o)));
        Ok(())
    }
}

/// A log end from a per-partition look-up: `None` while the owner cannot answer (down or
/// unreachable: retriable), the error if the look-up was refused for good.
fn known_end(
    ends: &BTreeMap<u32, Result<u64, ClientError>>,
    partition: u32,
) -> Result<Option<u64>, ClientError> {
    match ends.get(&partition) {
        Some(Ok(offset)) => Ok(Some(*offset)),
        Some(Err(error)) if !error.is_retriable() => Err(error.clone()),
        Some(Err(_)) | None => Ok(None),
    }
}
