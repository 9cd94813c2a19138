//! The revocation barrier: a partition goes to its new group member only once the old one has
//! let go of it, so two members of a group never read the same partition at once (Kafka's
//! cooperative rebalancing, KIP-848, works the same way).
//!
//! The assignor computes each member's *target*, journaled with the group. What a member is
//! *given* in a join or heartbeat answer is its target minus every partition another member
//! may still hold. A member may hold everything it has been given until it heartbeats with the
//! group's current generation: the client applies an answer (revocations first) before it
//! adopts the answer's generation, so that heartbeat proves it holds no more than the last
//! answer it got. A member that leaves or is evicted holds nothing.
//!
//! Invariant (checked by the tests below): a slot given to one member is not in what any other
//! member may hold.
//!
//! Ephemeral: a restarted controller starts with no holdings, so for its first round it trusts
//! targets alone.

use std::collections::{BTreeSet, HashMap};

use super::assignor::Slot;

/// What each group member may be reading.
#[derive(Debug, Default)]
pub struct Holdings {
    /// (group, member) -> its holding.
    members: HashMap<(String, String), Holding>,
}

#[derive(Debug, Default)]
struct Holding {
    /// Everything given since the member last proved what it holds.
    may_hold: BTreeSet<Slot>,
    /// The last answer's partitions.
    last_given: BTreeSet<Slot>,
}

impl Holdings {
    /// `member` heartbeated while working in `generation`; `current` is the group's.
    pub fn acknowledge(&mut self, group: &str, member: &str, generation: u32, current: u32) {
        if generation != current {
            return;
        }
        if let Some(holding) = self.members.get_mut(&key(group, member)) {
            holding.may_hold = holding.last_given.clone();
        }
    }

    /// The part of `target` to give `member` now: what no other member of `group` may still
    /// hold, in `target`'s order. Remembered as given. The `bool` is true when that is all of
    /// `target`.
    pub fn give(&mut self, group: &str, member: &str, target: &[Slot]) -> (Vec<Slot>, bool) {
        let held_elsewhere: BTreeSet<&Slot> = self
            .members
            .iter()
            .filter(|((g, m), _)| g == group && m != member)
            .flat_map(|(_, h)| &h.may_hold)
            .collect();
        let given: Vec<Slot> = target
            .iter()
            .filter(|slot| !held_elsewhere.contains(slot))
            .cloned()
            .collect();
        let complete = given.len() == target.len();
        let holding = self.members.entry(key(group, member)).or_default();
        holding.may_hold.extend(given.iter().cloned());
        holding.last_given = given.iter().cloned().collect();
        (given, complete)
    }

    /// `member` left `group` or was evicted: it holds nothing.
    pub fn release(&mut self, group: &str, member: &str) {
        self.members.remove(&key(group, member));
    }
}

fn key(group: &str, member: &str) -> (String, String) {
    (group.to_owned(), member.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(partitions: &[u32]) -> Vec<Slot> {
        partitions.iter().map(|&p| ("t".to_owned(), p)).collect()
    }

    #[test]
    fn a_partition_moves_only_after_its_old_owner_lets_go() {
        let mut h = Holdings::default();
        // Generation 1: a alone owns 0..4 and has applied it.
        assert_eq!(
            h.give("g", "a", &slots(&[0, 1, 2, 3])),
            (slots(&[0, 1, 2, 3]), true)
        );
        h.acknowledge("g", "a", 1, 1);

        // Generation 2: b joins; its target is 2, 3, still held by a.
        assert_eq!(h.give("g", "b", &slots(&[2, 3])), (vec![], false));
        // a heartbeats from generation 1: it has not applied generation 2 yet.
        h.acknowledge("g", "a", 1, 2);
        assert_eq!(h.give("g", "a", &slots(&[0, 1])), (slots(&[0, 1]), true));
        assert_eq!(h.give("g", "b", &slots(&[2, 3])), (vec![], false));
        // a applied the answer and heartbeats from generation 2: 2 and 3 are free.
        h.acknowledge("g", "a", 2, 2);
        assert_eq!(h.give("g", "b", &slots(&[2, 3])), (slots(&[2, 3]), true));

        // Generation 3: b dies and is evicted: a gets everything at once.
        h.release("g", "b");
        assert_eq!(
            h.give("g", "a", &slots(&[0, 1, 2, 3])),
            (slots(&[0, 1, 2, 3]), true)
        );
    }

    #[test]
    fn groups_do_not_block_each_other() {
        let mut h = Holdings::default();
        h.give("g1", "a", &slots(&[0, 1]));
        assert_eq!(h.give("g2", "b", &slots(&[0, 1])), (slots(&[0, 1]), true));
    }

    proptest::proptest! {
        /// Whatever the order of targets, acknowledgements and departures, nothing given to
        /// one member is in what another may hold.
        #[test]
        fn no_slot_is_given_to_two_members(
            steps in proptest::collection::vec((0u8..3, 0u8..3, proptest::collection::btree_set(0u32..6, 0..6)), 1..60)
        ) {
            let mut h = Holdings::default();
            let members = ["a", "b", "c"];
            let mut generation = 1;
            for (action, who, target) in steps {
                let member = members[who as usize];
                match action {
                    0 => {
                        let target = slots(&target.into_iter().collect::<Vec<_>>());
                        let (given, _) = h.give("g", member, &target);
                        for other in members.iter().filter(|&&m| m != member) {
                            if let Some(holding) = h.members.get(&key("g", other)) {
                                for slot in &given {
                                    proptest::prop_assert!(!holding.may_hold.contains(slot));
                                }
                            }
                        }
                    }
                    1 => {
                        generation += 1;
                        h.acknowledge("g", member, generation, generation);
                    }
                    _ => h.release("g", member),
                }
            }
        }
    }
}
