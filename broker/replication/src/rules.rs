//! The protocol's rules as switches, so the model can turn one off and show what it prevents.
//!
//! Owns: [`Rules`]. Production code (the broker, the controller) uses [`Rules::ALL`] and nothing
//! else; a field set to `false` is a known-unsafe variant kept only for the model checker's
//! counterexamples (`tests/model.rs`, `COUNTEREXAMPLES.md`). Every function of this crate that
//! a rule changes takes `&Rules` and documents which field it reads.

/// Which of the protocol's rules are in force. Numbers are DESIGN.md's "Replication" rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rules {
    /// Rule 1: the controller applies an ISR change only if it quotes the current partition
    /// epoch (compare-and-set). Off: any request from the current leader is applied.
    pub cas_partition_epoch: bool,
    /// Rule 4: the leader's high watermark counts the maximal ISR (the ISR plus members being
    /// added, and members being removed until the controller confirms). Off: the leader acts on
    /// its own proposal at once.
    pub maximal_isr: bool,
    /// Rule 5 (KIP-966 strict min ISR): the high watermark advances only while the ISR has at
    /// least `min_insync_replicas` members. Off: it advances with any ISR.
    pub strict_min_isr: bool,
    /// Rule 6 (KIP-903): an ISR addition carries the follower's broker epoch from its fetch, and
    /// the controller refuses it unless that epoch is the broker's current one. Off: the
    /// controller checks only that the broker is alive.
    pub broker_epoch_on_expand: bool,
    /// Rule 7: a broker that registers after an unclean stop (a new broker epoch) leaves every
    /// ISR, even as the last member. Off: it is treated like a fenced broker (KIP-841: removed,
    /// except as the last member).
    pub unclean_restart_leaves_isr: bool,
    /// Rule 8 (KIP-101, KIP-279): a follower truncates to the divergence point it learns from
    /// the leader's epoch history. Off: it truncates to its own high watermark when the leader
    /// epoch changes (Kafka before KIP-101).
    pub truncate_by_epoch: bool,
    /// Rule 9: a new leader's high watermark is not final until it reaches the start offset of
    /// the leader's epoch: until then it serves no reads and expands no ISR. Off: it serves and
    /// expands with whatever high watermark it carried over.
    pub hw_final_at_epoch_start: bool,
    /// Rule 12 (PacificA): the controller's grace exceeds the leader's lease, so a leader has
    /// stopped acknowledging and serving before the controller may fence it. Off: the model runs
    /// with a grace shorter than the lease ([`crate::lease::LeaseConfig::unchecked`]).
    pub fence_after_lease: bool,
    /// Rule 12, second half (found by the model): a heartbeat grants a lease only to a broker
    /// that has applied the current metadata, so a deposed leader's lease is never renewed while
    /// it still believes it leads ([`crate::lease::LeaseConfig::may_grant_lease`]). Off: any
    /// heartbeat of a registered broker grants one.
    pub lease_after_metadata: bool,
    /// Rule 2, its client half (KIP-320): a consumer quotes the leader epoch it last read in,
    /// and a leader of an older epoch refuses it
    /// ([`crate::leader::check_consumer_epoch`]). Off: any leader serves any consumer.
    pub consumer_epochs: bool,
    /// Rule 10: a reassignment removes replicas only once every target replica is in the ISR
    /// ([`crate::controller::PartitionState::complete_reassignment`]). Off: it removes them as
    /// soon as it is asked, whatever the target replicas hold.
    pub reassign_waits_for_isr: bool,
}

impl Rules {
    /// Every rule in force: the only value production code uses.
    pub const ALL: Rules = Rules {
        cas_partition_epoch: true,
        maximal_isr: true,
        strict_min_isr: true,
        broker_epoch_on_expand: true,
        unclean_restart_leaves_isr: true,
        truncate_by_epoch: true,
        hw_final_at_epoch_start: true,
        fence_after_lease: true,
        lease_after_metadata: true,
        reassign_waits_for_isr: true,
        consumer_epochs: true,
    };
}

impl Default for Rules {
    fn default() -> Self {
        Rules::ALL
    }
}
