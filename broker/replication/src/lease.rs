//! The leader lease and the controller's grace (rule 12, PacificA).
//!
//! Owns: [`LeaseConfig`]. A broker holds a lease from its last heartbeat the controller
//! answered, measured on the broker's monotonic clock from when it *sent* that heartbeat; the
//! controller measures its grace from when it *received* it. Since receipt follows sending, a
//! grace longer than the lease (by more than the clocks' rate difference over one lease) means
//! the broker's lease has lapsed, and it has stopped acknowledging and serving as leader,
//! before the controller may fence it and let another replica pick a new log end.
//!
//! Invariant: a [`LeaseConfig`] built by [`LeaseConfig::new`] has `grace > lease`. The model
//! counts ticks since the heartbeat for each broker; only its rule-off run builds a config with
//! [`LeaseConfig::unchecked`].

use crate::rules::Rules;

/// Lease and grace, in ticks of a monotonic clock (milliseconds in the broker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseConfig {
    lease: u64,
    grace: u64,
}

/// A configuration that would let the controller fence a broker whose lease is still valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraceNotLongerThanLease {
    pub lease: u64,
    pub grace: u64,
}

impl LeaseConfig {
    /// The lease and the grace; refused unless `grace > lease`.
    pub fn new(lease: u64, grace: u64) -> Result<Self, GraceNotLongerThanLease> {
        if grace > lease {
            Ok(LeaseConfig { lease, grace })
        } else {
            Err(GraceNotLongerThanLease { lease, grace })
        }
    }

    /// Any lease and grace, unchecked: only for showing what goes wrong without rule 12.
    pub fn unchecked(lease: u64, grace: u64) -> Self {
        LeaseConfig { lease, grace }
    }

    /// The longest a lease or grace lasts: a clock past it changes nothing more.
    pub fn horizon(&self) -> u64 {
        self.lease.max(self.grace)
    }

    /// At the broker: whether its lease holds `since_sent` ticks after it sent the heartbeat
    /// the controller last answered. Without it the broker neither accepts, acknowledges nor
    /// serves as leader.
    pub fn broker_lease_valid(&self, since_sent: u64) -> bool {
        since_sent < self.lease
    }

    /// At the controller: whether a heartbeat may grant (or renew) a lease, and unfence the
    /// broker. Only if the broker has applied the controller's current metadata
    /// (`applied >= current`, the version each heartbeat carries, KRaft's metadata offset; for one
    /// partition its partition epoch). Otherwise a leader deposed while it was cut off would come
    /// back with a fresh lease, still believing it leads, and serve reads the new leader has
    /// overtaken. The model found this with every other rule on (`COUNTEREXAMPLES.md`).
    /// Without `rules.lease_after_metadata`, any heartbeat grants a lease.
    pub fn may_grant_lease<V: Ord>(&self, applied: Option<V>, current: V, rules: &Rules) -> bool {
        !rules.lease_after_metadata || applied.is_some_and(|a| a >= current)
    }

    /// At the controller: whether it may fence a broker `since_received` ticks after receiving
    /// its last heartbeat (and then elect other leaders for its partitions).
    pub fn controller_may_fence(&self, since_received: u64) -> bool {
        since_received >= self.grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_lapses_before_the_grace() {
        assert!(LeaseConfig::new(2, 2).is_err());
        let c = LeaseConfig::new(1, 2).unwrap();
        for t in 0..=c.horizon() {
            assert!(
                !(c.broker_lease_valid(t) && c.controller_may_fence(t)),
                "tick {t}"
            );
        }
        let bad = LeaseConfig::unchecked(2, 1);
        assert!(bad.broker_lease_valid(1) && bad.controller_may_fence(1));
        assert!(!c.may_grant_lease(Some(2), 3, &Rules::ALL));
        assert!(!c.may_grant_lease(None, 3, &Rules::ALL));
        assert!(c.may_grant_lease(Some(3), 3, &Rules::ALL));
    }
}
