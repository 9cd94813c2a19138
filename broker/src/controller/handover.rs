//! The revocation barrier: a partition goes to its new group member only once the old one has
//! let go of it, so two members of a group never read the same partition at once (Kafka's
//! KIP-848 rebalancing works the same way).
//!
//! The assignor computes each member's *target*, journaled with the group. What a member is
//! *given* in a join or heartbeat answer is its target less every partition another member may
//! still hold. Every heartbeat reports the partitions the member holds at that moment (the
//! client applies an answer before it sends its next heartbeat), so what a member may hold is
//! exactly its last report plus what it was given since. A member that leaves or is evicted
//! holds nothing.
//!
//! Invariant (checked by the tests below): a slot given to one member is not in what any other
//! member may hold, unless the member held it already (giving it again grants nothing new).
//!
//! A restarted controller does not know what its recovered members hold: each is *unknown*
//! until its first heartbeat, and while any member of a group is unknown nothing new is given
//! in that group (members keep what they report holding).

use std::collections::{BTreeSet, HashMap};

use super::assignor::Slot;

/// What each group member may be reading.
#[derive(Debug, Default)]
pub struct Holdings {
    /// group -> member -> its holding.
    groups: HashMap<String, HashMap<String, Holding>>,
}

#[derive(Debug, Default)]
struct Holding {
    /// What it reported holding, plus everything given since.
    may_hold: BTreeSet<Slot>,
    /// Recovered after a controller restart and not heard from since, or a member that does
    /// not report: it may hold anything.
    unknown: bool,
    /// The newest report's sequence number.
    last_report: u64,
}

impl Holdings {
    /// A member the controller recovered from its journal (or one whose client does not
    /// report): it may hold anything until it reports.
    pub fn recover(&mut self, group: &str, member: &str) {
        self.holding(group, member).unknown = true;
    }

    /// `member` heartbeated holding exactly `held`; `seq` orders its reports, and one older
    /// than the newest seen is ignored (it describes a past the member has left).
    pub fn report(
        &mut self,
        group: &str,
        member: &str,
        seq: u64,
        held: impl IntoIterator<Item = Slot>,
    ) {
        let holding = self.holding(group, member);
        if seq < holding.last_report {
            return;
        }
        holding.last_report = seq;
        holding.may_hold = held.into_iter().collect();
        holding.unknown = false;
    }

    /// The part of `target` to give `member` now: what it may hold already, and what no other
    /// member of `group` may still hold, in `target`'s order. Remembered as given. The `bool`
    /// is true when that is all of `target`.
    pub fn give(&mut self, group: &str, member: &str, target: &[Slot]) -> (Vec<Slot>, bool) {
        let members = self.groups.entry(group.to_owned()).or_default();
        let others = || members.iter().filter(|(m, _)| m.as_str() != member);
        let any_unknown = others().any(|(_, h)| h.unknown);
        let held_elsewhere: BTreeSet<&Slot> = others().flat_map(|(_, h)| &h.may_hold).collect();
        let own = members.get(member);
        let given: Vec<Slot> = target
            .iter()
            .filter(|slot| {
                own.is_some_and(|h| h.may_hold.contains(*slot))
                    || (!any_unknown && !held_elsewhere.contains(slot))
            })
            .cloned()
            .collect();
        let complete = given.len() == target.len();
        self.holding(group, member)
            .may_hold
            .extend(given.iter().cloned());
        (given, complete)
    }

    /// `member` left `group` or was evicted: it holds nothing.
    pub fn release(&mut self, group: &str, member: &str) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(member);
            if members.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    fn holding(&mut self, group: &str, member: &str) -> &mut Holding {
        self.groups
            .entry(group.to_owned())
            .or_default()
            .entry(member.to_owned())
            .or_default()
    }
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
        // a alone owns 0..4 and has applied it.
        let all = slots(&[0, 1, 2, 3]);
        assert_eq!(h.give("g", "a", &all), (all.clone(), true));
        h.report("g", "a", 1, all.clone());

        // b joins; its target is 2, 3, still held by a.
        assert_eq!(h.give("g", "b", &slots(&[2, 3])), (vec![], false));
        // a has not applied the rebalance yet: it still reports all four.
        h.report("g", "a", 2, all.clone());
        assert_eq!(h.give("g", "a", &slots(&[0, 1])), (slots(&[0, 1]), true));
        assert_eq!(h.give("g", "b", &slots(&[2, 3])), (vec![], false));
        // a applied the answer and reports only its half: 2 and 3 are free.
        h.report("g", "a", 3, slots(&[0, 1]));
        assert_eq!(h.give("g", "b", &slots(&[2, 3])), (slots(&[2, 3]), true));

        // b dies and is evicted: a gets everything at once.
        h.release("g", "b");
        assert_eq!(h.give("g", "a", &all), (all, true));
    }

    #[test]
    fn after_a_controller_restart_members_keep_theirs_and_get_nothing_new_until_all_report() {
        let mut h = Holdings::default();
        h.recover("g", "a");
        h.recover("g", "b");
        // b reports 2, 3; a (maybe mid-rebalance, holding anything) has not reported.
        h.report("g", "b", 4, slots(&[2, 3]));
        assert_eq!(
            h.give("g", "b", &slots(&[1, 2, 3])),
            (slots(&[2, 3]), false),
            "b keeps what it holds; 1 may be a's"
        );
        h.report("g", "a", 5, slots(&[0, 1]));
        assert_eq!(h.give("g", "a", &slots(&[0])), (slots(&[0]), true));
        h.report("g", "a", 6, slots(&[0]));
        assert_eq!(
            h.give("g", "b", &slots(&[1, 2, 3])),
            (slots(&[1, 2, 3]), true)
        );
    }

    #[test]
    fn a_report_delayed_in_flight_is_ignored() {
        let mut h = Holdings::default();
        h.give("g", "a", &slots(&[0, 1]));
        h.report("g", "a", 2, slots(&[0]));
        // Heartbeat 1 (from before a let go of 1... or before it got 1) arrives late.
        h.report("g", "a", 1, Vec::new());
        assert_eq!(
            h.give("g", "b", &slots(&[0])),
            (vec![], false),
            "a still holds 0"
        );
    }

    #[test]
    fn groups_do_not_block_each_other() {
        let mut h = Holdings::default();
        h.give("g1", "a", &slots(&[0, 1]));
        assert_eq!(h.give("g2", "b", &slots(&[0, 1])), (slots(&[0, 1]), true));
    }

    proptest::proptest! {
        /// Whatever the order of targets, reports (a member applying some answer), restarts and
        /// departures, nothing newly given to one member is in what another may hold.
        #[test]
        fn no_slot_is_given_to_two_members(
            steps in proptest::collection::vec(
                (0u8..4, 0u8..3, proptest::collection::btree_set(0u32..6, 0..6)),
                1..60,
            )
        ) {
            let mut h = Holdings::default();
            let members = ["a", "b", "c"];
            // What each member was last given: a report is a member applying its last answer.
            let mut last_given: HashMap<&str, Vec<Slot>> = HashMap::new();
            let mut seq = 0;
            for (action, who, target) in steps {
                let member = members[who as usize];
                match action {
                    0 => {
                        let target = slots(&target.into_iter().collect::<Vec<_>>());
                        let before: BTreeSet<Slot> = h
                            .groups
                            .get("g")
                            .and_then(|g| g.get(member))
                            .map(|m| m.may_hold.clone())
                            .unwrap_or_default();
                        let (given, _) = h.give("g", member, &target);
                        for other in members.iter().filter(|&&m| m != member) {
                            let Some(holding) = h.groups.get("g").and_then(|g| g.get(*other)) else {
                                continue;
                            };
                            proptest::prop_assert!(!holding.unknown || given.iter().all(|s| before.contains(s)));
                            for slot in given.iter().filter(|s| !before.contains(*s)) {
                                proptest::prop_assert!(!holding.may_hold.contains(slot));
                            }
                        }
                        last_given.insert(member, given);
                    }
                    1 => {
                        seq += 1;
                        h.report("g", member, seq, last_given.get(member).cloned().unwrap_or_default());
                    }
                    2 => h.recover("g", member),
                    _ => {
                        h.release("g", member);
                        last_given.remove(member);
                    }
                }
            }
        }
    }
}
