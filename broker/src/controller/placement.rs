//! Placement: which broker owns each partition of a new topic. Chosen once, at creation, over
//! the brokers alive then; a partition never moves afterwards (its data lives on its broker).
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
