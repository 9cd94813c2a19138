//! Placement: which brokers hold each partition of a new topic, and which of them is its
//! preferred leader. Chosen once, at creation, over the brokers alive then; a partition's
//! replicas move afterwards only when a reassignment moves them (`super::reassignment`).
//!
//! [`place`] gives each partition's owner (the preferred leader); [`place_replicas`] extends it
//! to `replication_factor` distinct brokers, the owner first, so a topic with one replica has
//! exactly the layout [`place`] gives (topics and data dirs from before replication stay valid).
//!
//! - `hash`: rendezvous (highest-random-weight) hashing of (topic, partition) over broker ids.
//!   Each partition goes to the broker with the highest score, so adding a broker changes only
//!   the partitions the new broker wins, about 1/N of them: the layout of the others is the one
//!   the smaller cluster would have chosen.
//! - `range`: contiguous blocks of partitions per broker, in broker-id order; the first
//!   `partitions % brokers` blocks hold one extra.
//! - `round-robin`: partition i on the (i mod N)-th broker in broker-id order.
//!
//! The names are [`PlacementKind`], a topic's own kind (`crate::topics`), so the wire
//! translation and the journal name a placement without depending on this module.

use crate::topics::PlacementKind;

/// The owner of each partition `0..partitions` of `topic` over `brokers` (ids, any order; must
/// not be empty).
pub fn place(kind: PlacementKind, topic: &str, partitions: u32, brokers: &[u32]) -> Vec<u32> {
    let mut brokers = brokers.to_vec();
    brokers.sort_unstable();
    brokers.dedup();
    assert!(!brokers.is_empty(), "placement needs at least one broker");
    let n = brokers.len() as u32;
    match kind {
        PlacementKind::Hash => (0..partitions)
            .map(|p| {
                *brokers
                    .iter()
                    .max_by_key(|&&b| (rendezvous_score(topic, p, b), b))
                    .unwrap_or(&brokers[0])
            })
            .collect(),
        PlacementKind::Range => {
            let (base, extra) = (partitions / n, partitions % n);
            let mut owners = Vec::with_capacity(partitions as usize);
            for (i, &b) in brokers.iter().enumerate() {
                let size = base + u32::from((i as u32) < extra);
                owners.extend(std::iter::repeat_n(b, size as usize));
            }
            owners
        }
        PlacementKind::RoundRobin => (0..partitions).map(|p| brokers[(p % n) as usize]).collect(),
    }
}

/// The replicas of each partition `0..partitions` of `topic` over `brokers` (ids, any order;
/// must not be empty, and hold at least `replication_factor` distinct ids, which the caller
/// checked): `replication_factor` distinct brokers, the preferred leader (that of [`place`])
/// first.
///
/// - `hash`: the top `replication_factor` of the rendezvous ranking, so adding a broker still
///   changes only the slots the new broker wins.
/// - `range`, `round-robin`: the owner, then the brokers after it in id order (wrapping), so
///   each broker follows the partitions of its predecessors and replicas spread as evenly as
///   leaders do.
pub fn place_replicas(
    kind: PlacementKind,
    topic: &str,
    partitions: u32,
    brokers: &[u32],
    replication_factor: u32,
) -> Vec<Vec<u32>> {
    let mut brokers = brokers.to_vec();
    brokers.sort_unstable();
    brokers.dedup();
    let rf = (replication_factor as usize).clamp(1, brokers.len().max(1));
    let owners = place(kind, topic, partitions, &brokers);
    let replicas: Vec<Vec<u32>> = match kind {
        PlacementKind::Hash => (0..partitions)
            .map(|p| {
                let mut ranked = brokers.clone();
                // Highest score first; ties (never seen in practice) by the larger id, as in
                // `place`, so the first is always `place`'s owner.
                ranked.sort_unstable_by_key(|&b| {
                    std::cmp::Reverse((rendezvous_score(topic, p, b), b))
                });
                ranked.truncate(rf);
                ranked
            })
            .collect(),
        PlacementKind::Range | PlacementKind::RoundRobin => owners
            .iter()
            .map(|owner| {
                let at = brokers.iter().position(|b| b == owner).unwrap_or(0);
                (0..rf).map(|i| brokers[(at + i) % brokers.len()]).collect()
            })
            .collect(),
    };
    debug_assert!(
        replicas
            .iter()
            .zip(&owners)
            .all(|(r, o)| r.first() == Some(o)),
        "the preferred leader is the owner `place` gives"
    );
    replicas
}

/// A well-mixed 64-bit score of (topic, partition, broker): FNV-1a over the three, then the
/// splitmix64 finalizer (FNV alone mixes the last bytes poorly).
fn rendezvous_score(topic: &str, partition: u32, broker: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = topic
        .as_bytes()
        .iter()
        .copied()
        .chain(partition.to_le_bytes())
        .chain(broker.to_le_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(owners: &[u32]) -> std::collections::BTreeMap<u32, usize> {
        let mut c = std::collections::BTreeMap::new();
        for &o in owners {
            *c.entry(o).or_default() += 1;
        }
        c
    }

    #[test]
    fn range_and_round_robin_are_what_they_say() {
        assert_eq!(
            place(PlacementKind::Range, "t", 7, &[3, 1, 2]),
            [1, 1, 1, 2, 2, 3, 3]
        );
        assert_eq!(
            place(PlacementKind::RoundRobin, "t", 7, &[3, 1, 2]),
            [1, 2, 3, 1, 2, 3, 1]
        );
        assert_eq!(place(PlacementKind::Range, "t", 2, &[1, 2, 3]), [1, 2]);
    }

    #[test]
    fn hash_placement_is_deterministic_and_spread() {
        let a = place(PlacementKind::Hash, "orders", 1200, &[1, 2, 3]);
        assert_eq!(a, place(PlacementKind::Hash, "orders", 1200, &[3, 2, 1]));
        for (_, n) in counts(&a) {
            assert!((300..=500).contains(&n), "{:?}", counts(&a));
        }
    }

    #[test]
    fn one_replica_is_the_unreplicated_layout() {
        for kind in [
            PlacementKind::Hash,
            PlacementKind::Range,
            PlacementKind::RoundRobin,
        ] {
            let owners = place(kind, "orders", 12, &[1, 2, 3]);
            let replicas = place_replicas(kind, "orders", 12, &[1, 2, 3], 1);
            let firsts: Vec<u32> = replicas.iter().map(|r| r[0]).collect();
            assert_eq!(firsts, owners, "{kind:?}");
            assert!(replicas.iter().all(|r| r.len() == 1));
        }
    }

    #[test]
    fn replicas_are_distinct_led_by_the_owner_and_spread() {
        let brokers = [4, 1, 3, 2, 5];
        for kind in [
            PlacementKind::Hash,
            PlacementKind::Range,
            PlacementKind::RoundRobin,
        ] {
            let partitions = 600;
            let replicas = place_replicas(kind, "orders", partitions, &brokers, 3);
            let owners = place(kind, "orders", partitions, &brokers);
            let mut held = std::collections::BTreeMap::new();
            for (r, owner) in replicas.iter().zip(&owners) {
                assert_eq!(r.len(), 3);
                assert_eq!(r[0], *owner, "{kind:?}: preferred leader first");
                let distinct: std::collections::BTreeSet<_> = r.iter().collect();
                assert_eq!(distinct.len(), 3, "{kind:?}: {r:?}");
                for &b in r {
                    *held.entry(b).or_insert(0usize) += 1;
                }
            }
            // Leaders: 120 each on average; replicas: 360 each.
            for (_, n) in counts(&owners) {
                assert!(
                    (90..=150).contains(&n),
                    "{kind:?} leaders {:?}",
                    counts(&owners)
                );
            }
            assert_eq!(held.len(), 5);
            for n in held.values() {
                assert!((300..=420).contains(n), "{kind:?} replicas {held:?}");
            }
        }
        assert_eq!(
            place_replicas(PlacementKind::RoundRobin, "t", 4, &[1, 2, 3], 2),
            [vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 2]]
        );
    }

    #[test]
    fn adding_a_broker_moves_only_what_the_new_broker_wins() {
        let mut moved = 0;
        let mut total = 0;
        for t in 0..100 {
            let topic = format!("topic-{t}");
            let three = place(PlacementKind::Hash, &topic, 12, &[1, 2, 3]);
            let four = place(PlacementKind::Hash, &topic, 12, &[1, 2, 3, 4]);
            for (before, after) in three.iter().zip(&four) {
                total += 1;
                if before != after {
                    assert_eq!(*after, 4, "a partition moved between old brokers");
                    moved += 1;
                }
            }
        }
        let fraction = moved as f64 / total as f64;
        assert!((0.18..=0.32).contains(&fraction), "moved {fraction}");
    }
}
