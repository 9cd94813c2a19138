//! weir's replication protocol as pure decisions: no network, no files, no clock.
//!
//! The broker (`weir-broker`'s `replica` module) and the controller call these functions for
//! every replication decision, and the exhaustive model in `tests/model.rs` calls the same ones,
//! so what the checker proves about them is what the broker runs. The design is Kafka's since KIP-497 and PacificA's:
//! consensus stays out of the data path; one controller is the only writer of each partition's
//! leader, in-sync set (ISR) and epochs; records flow leader -> followers.
//!
//! Modules, by who decides:
//! - [`controller`]: the partition state the controller owns ([`PartitionState`]) and its only
//!   transitions: the ISR compare-and-set from the leader, elections, fencing, controlled
//!   shutdown, restarts, reassignment and the preferred leader's return (rules 1, 2, 3, 6, 7, 10;
//!   KIP-497, KIP-841, KIP-903, KIP-455).
//! - [`leader`]: the high watermark, produce and acknowledgement guards, fetch checks, ISR
//!   proposals and their resolution (rules 2, 4, 5, 6, 9; KIP-966).
//! - [`follower`]: where a follower truncates and which fetch answers it applies (rules 2, 8;
//!   KIP-101, KIP-279, KIP-320).
//! - [`epochs`]: the epoch history, epoch -> start offset, kept beside a replica's log.
//! - [`lease`]: the leader lease and the controller's grace (rule 12, PacificA).
//! - [`rules`]: [`Rules`], the switches that exist so the model can show each rule matters;
//!   production code uses [`Rules::ALL`].
//!
//! Rule numbers are those of the "Replication" section of the design brief (DESIGN.md).
//!
//! Invariants every function here keeps: it decides from its arguments alone (no I/O, no time
//! source, no randomness), so the same inputs always give the same decision; offsets are record
//! offsets, a log end is the offset of the next record; epochs only ever grow.

pub mod controller;
pub mod epochs;
pub mod follower;
pub mod leader;
pub mod lease;
pub mod rules;

pub use controller::{
    AlterError, AlterIsrRequest, IsrMember, LiveBrokers, PartitionState, ReassignError,
};
pub use epochs::EpochHistory;
pub use rules::Rules;

/// A record offset in a partition's log; a log end is the offset the next record gets.
pub type Offset = u64;

/// A broker's id, as registered with the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerId(pub u32);

/// A partition's leader epoch: bumped by every leadership change (rule 2), stamped on every
/// record batch the leader appends, carried by every fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub u32);

/// The version of a partition's whole state at the controller (leader, ISR, epochs); every
/// change bumps it, and the leader's ISR requests compare-and-set on it (rule 1, KIP-497).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionEpoch(pub u32);

/// One start of a broker process, assigned by the controller at registration; a restart gets a
/// new, larger one (rule 7, KIP-903, KIP-380).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerEpoch(pub u64);

impl LeaderEpoch {
    /// The next epoch.
    pub fn next(self) -> Self {
        LeaderEpoch(self.0 + 1)
    }
}

impl PartitionEpoch {
    /// The next version.
    pub fn next(self) -> Self {
        PartitionEpoch(self.0 + 1)
    }
}
