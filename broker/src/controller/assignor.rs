//! Group assignors: which member of a consumer group reads which partition. The controller
//! runs them (members never see each other's subscriptions). Their names, as journaled and
//! on the wire, are [`AssignorKind`] ([`crate::group_strategy`]).
//!
//! Invariants (each assignor, checked by the tests): every partition of every subscribed topic
//! goes to exactly one member subscribed to its topic, and members subscribed to the same topics
//! get counts within one of each other (sticky: after its balancing pass).

use std::collections::{BTreeMap, BTreeSet};

use crate::group_strategy::AssignorKind;

/// A (topic, partition) pair.
pub type Slot = (String, u32);

/// What an assignor works from.
pub struct AssignInput<'a> {
    /// member id -> its subscribed topics.
    pub members: &'a BTreeMap<String, BTreeSet<String>>,
    /// topic -> partition count (subscribed topics that do not exist are absent).
    pub partition_counts: &'a BTreeMap<String, u32>,
    /// member id -> what it had (used by sticky only).
    pub previous: &'a BTreeMap<String, Vec<Slot>>,
}

/// member id -> its partitions, sorted. Every member appears, possibly with none.
pub fn assign(kind: AssignorKind, input: &AssignInput<'_>) -> BTreeMap<String, Vec<Slot>> {
    let mut out: BTreeMap<String, Vec<Slot>> = input
        .members
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect();
    match kind {
        AssignorKind::Range => range(input, &mut out),
        AssignorKind::RoundRobin => round_robin(input, &mut out),
        AssignorKind::Sticky => sticky(input, &mut out),
    }
    for slots in out.values_mut() {
        slots.sort();
    }
    out
}

fn subscribers<'a>(input: &'a AssignInput<'_>, topic: &str) -> Vec<&'a String> {
    input
        .members
        .iter()
        .filter(|(_, topics)| topics.contains(topic))
        .map(|(m, _)| m)
        .collect()
}

/// Every partition any member is subscribed to, sorted.
fn all_slots(input: &AssignInput<'_>) -> Vec<Slot> {
    let wanted: BTreeSet<&String> = input.members.values().flatten().collect();
    wanted
        .into_iter()
        .filter_map(|t| input.partition_counts.get(t).map(|&n| (t, n)))
        .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
        .collect()
}

fn range(input: &AssignInput<'_>, out: &mut BTreeMap<String, Vec<Slot>>) {
    for (topic, &count) in input.partition_counts {
        let members = subscribers(input, topic);
        if members.is_empty() {
            continue;
        }
        let n = members.len() as u32;
        let (base, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in members.into_iter().enumerate() {
            let size = base + u32::from((i as u32) < extra);
            let slots = out.entry(m.clone()).or_default();
            slots.extend((next..next + size).map(|p| (topic.clone(), p)));
            next += size;
        }
    }
}

fn round_robin(input: &AssignInput<'_>, out: &mut BTreeMap<String, Vec<Slot>>) {
    let members: Vec<&String> = input.members.keys().collect();
    let mut turn = 0;
    for slot in all_slots(input) {
        // The next member in turn that subscribes to this topic (one always does).
        for _ in 0..members.len() {
            let m = members[turn % members.len()];
            turn += 1;
            if input.members[m].contains(&slot.0) {
                out.entry(m.clone()).or_default().push(slot);
                break;
            }
        }
    }
}

fn sticky(input: &AssignInput<'_>, out: &mut BTreeMap<String, Vec<Slot>>) {
    let slots = all_slots(input);
    let quota = slots.len().div_ceil(input.members.len().max(1));
    let valid: BTreeSet<&Slot> = slots.iter().collect();
    let mut taken: BTreeSet<Slot> = BTreeSet::new();
    // Keep what each member had, while still valid, unclaimed and within the quota.
    for (m, had) in input.previous {
        let Some(topics) = input.members.get(m) else {
            continue;
        };
        let mine = out.entry(m.clone()).or_default();
        for slot in had {
            if mine.len() < quota
                && valid.contains(slot)
                && topics.contains(&slot.0)
                && taken.insert(slot.clone())
            {
                mine.push(slot.clone());
            }
        }
    }
    // The rest to the eligible member with the fewest.
    for slot in slots.iter().filter(|s| !taken.contains(*s)) {
        let target = input
            .members
            .iter()
            .filter(|(_, topics)| topics.contains(&slot.0))
            .map(|(m, _)| m)
            .min_by_key(|m| (out.get(*m).map_or(0, Vec::len), (*m).clone()));
        if let Some(m) = target {
            out.entry(m.clone()).or_default().push(slot.clone());
        }
    }
    // Balance: move from the fullest to the emptiest while that narrows the gap.
    for _ in 0..slots.len() {
        let (Some(max), Some(min)) = (
            out.iter()
                .max_by_key(|(_, s)| s.len())
                .map(|(m, _)| m.clone()),
            out.iter()
                .min_by_key(|(_, s)| s.len())
                .map(|(m, _)| m.clone()),
        ) else {
            return;
        };
        if out[&max].len() <= out[&min].len() + 1 {
            return;
        }
        let min_topics = &input.members[&min];
        let Some(i) = out[&max].iter().rposition(|s| min_topics.contains(&s.0)) else {
            return;
        };
        let slot = out.get_mut(&max).map(|s| s.remove(i));
        if let (Some(slot), Some(dest)) = (slot, out.get_mut(&min)) {
            dest.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn check_complete(out: &BTreeMap<String, Vec<Slot>>, counts: &BTreeMap<String, u32>) {
        let mut seen = BTreeSet::new();
        for slots in out.values() {
            for s in slots {
                assert!(seen.insert(s.clone()), "{s:?} assigned twice");
            }
        }
        let total: u32 = counts.values().sum();
        assert_eq!(seen.len() as u32, total);
    }

    #[test]
    fn three_members_on_twelve_partitions_get_four_each() {
        let m = members(&["a", "b", "c"], &["orders"]);
        let counts = BTreeMap::from([("orders".to_string(), 12)]);
        let previous = BTreeMap::new();
        for kind in [
            AssignorKind::Range,
            AssignorKind::RoundRobin,
            AssignorKind::Sticky,
        ] {
            let input = AssignInput {
                members: &m,
                partition_counts: &counts,
                previous: &previous,
            };
            let out = assign(kind, &input);
            check_complete(&out, &counts);
            assert!(out.values().all(|s| s.len() == 4), "{kind:?}: {out:?}");
        }
        let range = assign(
            AssignorKind::Range,
            &AssignInput {
                members: &m,
                partition_counts: &counts,
                previous: &previous,
            },
        );
        assert_eq!(
            range["a"].iter().map(|s| s.1).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn sticky_keeps_assignments_when_a_member_leaves_or_joins() {
        let counts = BTreeMap::from([("t".to_string(), 12)]);
        let three = members(&["a", "b", "c"], &["t"]);
        let none = BTreeMap::new();
        let first = assign(
            AssignorKind::Sticky,
            &AssignInput {
                members: &three,
                partition_counts: &counts,
                previous: &none,
            },
        );
        // c leaves: a and b keep all they had and split c's.
        let two = members(&["a", "b"], &["t"]);
        let second = assign(
            AssignorKind::Sticky,
            &AssignInput {
                members: &two,
                partition_counts: &counts,
                previous: &first,
            },
        );
        check_complete(&second, &counts);
        for m in ["a", "b"] {
            assert_eq!(second[m].len(), 6);
            assert!(
                first[m].iter().all(|s| second[m].contains(s)),
                "{m} lost a partition"
            );
        }
        // d joins: a and b give up 2 each, keep 4.
        let again = members(&["a", "b", "d"], &["t"]);
        let third = assign(
            AssignorKind::Sticky,
            &AssignInput {
                members: &again,
                partition_counts: &counts,
                previous: &second,
            },
        );
        check_complete(&third, &counts);
        assert!(third.values().all(|s| s.len() == 4), "{third:?}");
        for m in ["a", "b"] {
            assert!(third[m].iter().all(|s| second[m].contains(s)));
        }
    }

    #[test]
    fn members_only_get_topics_they_subscribe_to() {
        let mut m = members(&["a"], &["x"]);
        m.extend(members(&["b"], &["x", "y"]));
        let counts = BTreeMap::from([("x".to_string(), 3), ("y".to_string(), 3)]);
        let none = BTreeMap::new();
        for kind in [
            AssignorKind::Range,
            AssignorKind::RoundRobin,
            AssignorKind::Sticky,
        ] {
            let out = assign(
                kind,
                &AssignInput {
                    members: &m,
                    partition_counts: &counts,
                    previous: &none,
                },
            );
            check_complete(&out, &counts);
            assert!(out["a"].iter().all(|s| s.0 == "x"), "{kind:?}: {out:?}");
        }
    }
}
