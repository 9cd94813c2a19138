//! Partitioners: which partition a record goes to.
//!
//! Pure functions of the key and the topic's metadata, so every producer (in any language) that
//! implements the same rule agrees, and the same key always lands on the same partition:
//!
//! - [`PartitionerKind::Hash`]: Kafka's default partitioner, `toPositive(murmur2(key)) % n`
//!   with Kafka's seed, so a key lands on the same partition number as it would in Kafka.
//! - [`PartitionerKind::Range`]: sorted split keys cut the key space; N split keys make N+1
//!   partitions and a key goes to the number of split keys `<=` it (bytewise).
//! - [`PartitionerKind::RoundRobin`]: ignores keys.
//!
//! Records without a key under `Hash`, and every record under `RoundRobin`, get
//! [`Route::Sticky`]: the producer fills one partition's batch and moves to the next partition
//! when that batch closes (Kafka's sticky partitioner), so keyless traffic spreads evenly without
//! making many small batches. That state lives with the batches, in the producer's accumulator.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use bytes::Bytes;
use weir_proto::v1;

use crate::ClientError;

/// A topic's rule for mapping records to partitions (topic metadata, so producers agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PartitionerKind {
    /// murmur2 of the key, as Kafka's default partitioner; keyless records go sticky
    /// round-robin.
    #[default]
    Hash,
    /// By key over the topic's sorted split keys; keyless records go to partition 0.
    Range,
    /// Ignores keys; sticky round-robin per batch.
    RoundRobin,
}

impl PartitionerKind {
    /// The name used by the CLI and in messages: `hash`, `range` or `round-robin`.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionerKind::Hash => "hash",
            PartitionerKind::Range => "range",
            PartitionerKind::RoundRobin => "round-robin",
        }
    }

    pub(crate) fn to_proto(self) -> v1::Partitioner {
        match self {
            PartitionerKind::Hash => v1::Partitioner::Hash,
            PartitionerKind::Range => v1::Partitioner::Range,
            PartitionerKind::RoundRobin => v1::Partitioner::RoundRobin,
        }
    }

    /// The kind for a proto enum value; an unknown value (from a newer broker) is an error
    /// rather than a silent guess, since guessing would put keys on the wrong partitions.
    pub(crate) fn from_proto(value: i32) -> Result<Self, ClientError> {
        match v1::Partitioner::try_from(value) {
            Ok(v1::Partitioner::Hash) => Ok(PartitionerKind::Hash),
            Ok(v1::Partitioner::Range) => Ok(PartitionerKind::Range),
            Ok(v1::Partitioner::RoundRobin) => Ok(PartitionerKind::RoundRobin),
            Err(_) => Err(ClientError::InvalidArgument(format!(
                "the broker reports partitioner {value}, which this client does not know; upgrade the client"
            ))),
        }
    }
}

impl fmt::Display for PartitionerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PartitionerKind {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, ClientError> {
        match s {
            "hash" => Ok(PartitionerKind::Hash),
            "range" => Ok(PartitionerKind::Range),
            "round-robin" => Ok(PartitionerKind::RoundRobin),
            _ => Err(ClientError::InvalidArgument(format!(
                "unknown partitioner {s:?}; use hash, range or round-robin"
            ))),
        }
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), as a signed 32-bit value
/// like Java's.
pub fn murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32
}

/// The partition Kafka's default partitioner picks for `key`:
/// `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn hash_partition(key: &[u8], partitions: NonZeroU32) -> u32 {
    (murmur2(key) as u32 & 0x7fff_ffff) % partitions.get()
}

/// The partition `key` falls in over sorted `split_keys`: the number of split keys `<= key`
/// (bytewise), so partition `i` holds keys in `[split_keys[i-1], split_keys[i])`.
pub fn range_partition(split_keys: &[Bytes], key: &[u8]) -> u32 {
    // Split keys are strictly increasing (the broker enforces it), so this is a binary search.
    split_keys.partition_point(|split| split.as_ref() <= key) as u32
}

/// Where one record goes, as decided by a [`Partitioner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This partition.
    Partition(u32),
    /// Whichever partition the producer is currently filling for this topic (sticky
    /// round-robin).
    Sticky,
}

/// A topic's partitioner with what it needs: the partition count and the split keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioner {
    kind: PartitionerKind,
    partitions: NonZeroU32,
    split_keys: Vec<Bytes>,
}

impl Partitioner {
    /// A partitioner over `partitions` partitions. `split_keys` matter for `Range` only.
    /// Fails for zero partitions.
    pub fn new(
        kind: PartitionerKind,
        partitions: u32,
        split_keys: Vec<Bytes>,
    ) -> Result<Self, ClientError> {
        let partitions = NonZeroU32::new(partitions).ok_or_else(|| {
            ClientError::InvalidArgument("a topic has at least one partition".into())
        })?;
        Ok(Partitioner {
            kind,
            partitions,
            split_keys,
        })
    }

    /// The rule.
    pub fn kind(&self) -> PartitionerKind {
        self.kind
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions.get()
    }

    /// Where a record with `key` goes.
    pub fn route(&self, key: Option<&[u8]>) -> Route {
        self.route_as(self.kind, key)
    }

    /// Where a record with `key` goes under rule `kind` over this topic's partitions and split
    /// keys: a producer's partitioner override, without building (and allocating) another
    /// partitioner per record.
    pub(crate) fn route_as(&self, kind: PartitionerKind, key: Option<&[u8]>) -> Route {
        match (kind, key) {
            (PartitionerKind::Hash, Some(key)) => {
                Route::Partition(hash_partition(key, self.partitions))
            }
            (PartitionerKind::Range, Some(key)) => {
                // A producer may override a hash topic's partitioner with range and no split
                // keys; the cap keeps any split-key list within the topic.
                let partition = range_partition(&self.split_keys, key);
                Route::Partition(partition.min(self.partitions.get() - 1))
            }
            (PartitionerKind::Range, None) => Route::Partition(0),
            (PartitionerKind::Hash, None) | (PartitionerKind::RoundRobin, _) => Route::Sticky,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(partitions: u32) -> NonZeroU32 {
        NonZeroU32::new(partitions).unwrap()
    }

    /// Kafka's `UtilsTest.testMurmur2` vectors (clients/src/test/java/org/apache/kafka/common/
    /// utils/UtilsTest.java).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), *want, "{}", String::from_utf8_lossy(key));
        }
    }

    /// `Utils.toPositive(Utils.murmur2(key)) % numPartitions`, computed by hand from the
    /// vectors above: toPositive clears the sign bit (it is not `abs`).
    #[test]
    fn hash_partition_is_kafkas_default_partitioner() {
        let to_positive = |h: i32| (h & 0x7fff_ffff) as u32;
        assert_eq!(to_positive(-973_932_308), 1_173_551_340);
        assert_eq!(hash_partition(b"21", n(3)), 1_173_551_340 % 3);
        assert_eq!(hash_partition(b"abc", n(7)), 479_470_107 % 7);
        for (key, hash) in [
            (&b"foobar"[..], -790_332_482),
            (b"a-little-bit-longer-string", -1_486_304_829),
        ] {
            for partitions in [1, 2, 3, 8, 10, 64, 1000] {
                assert_eq!(
                    hash_partition(key, n(partitions)),
                    to_positive(hash) % partitions
                );
            }
        }
    }

    #[test]
    fn range_counts_split_keys_at_or_below_the_key() {
        let splits: Vec<Bytes> = [&b"g"[..], b"n", b"t"].map(Bytes::from_static).to_vec();
        assert_eq!(range_partition(&splits, b""), 0);
        assert_eq!(range_partition(&splits, b"apple"), 0);
        assert_eq!(range_partition(&splits, b"g"), 1);
        assert_eq!(range_partition(&splits, b"melon"), 1);
        assert_eq!(range_partition(&splits, b"n"), 2);
        assert_eq!(range_partition(&splits, b"t"), 3);
        assert_eq!(range_partition(&splits, b"zebra"), 3);
        // Bytewise, not by Unicode collation: uppercase sorts before lowercase.
        assert_eq!(range_partition(&splits, b"Zebra"), 0);
        assert_eq!(range_partition(&[], b"anything"), 0);
    }

    #[test]
    fn routes() {
        let hash = Partitioner::new(PartitionerKind::Hash, 4, vec![]).unwrap();
        assert_eq!(
            hash.route(Some(b"21")),
            Route::Partition(hash_partition(b"21", n(4)))
        );
        assert_eq!(hash.route(None), Route::Sticky);

        let range = Partitioner::new(
            PartitionerKind::Range,
            3,
            vec![Bytes::from_static(b"h"), Bytes::from_static(b"p")],
        )
        .unwrap();
        assert_eq!(range.route(Some(b"a")), Route::Partition(0));
        assert_eq!(range.route(Some(b"q")), Route::Partition(2));
        assert_eq!(range.route(None), Route::Partition(0));

        // More split keys than partitions (a producer override): capped, never out of range.
        let squeezed = Partitioner::new(
            PartitionerKind::Range,
            2,
            vec![Bytes::from_static(b"h"), Bytes::from_static(b"p")],
        )
        .unwrap();
        assert_eq!(squeezed.route(Some(b"z")), Route::Partition(1));

        let round_robin = Partitioner::new(PartitionerKind::RoundRobin, 4, vec![]).unwrap();
        assert_eq!(round_robin.route(Some(b"21")), Route::Sticky);
        assert_eq!(round_robin.route(None), Route::Sticky);

        assert!(Partitioner::new(PartitionerKind::Hash, 0, vec![]).is_err());
    }

    #[test]
    fn names_round_trip() {
        for kind in [
            PartitionerKind::Hash,
            PartitionerKind::Range,
            PartitionerKind::RoundRobin,
        ] {
            assert_eq!(kind.as_str().parse::<PartitionerKind>().unwrap(), kind);
            assert_eq!(
                PartitionerKind::from_proto(kind.to_proto() as i32).unwrap(),
                kind
            );
        }
        assert!("murmur".parse::<PartitionerKind>().is_err());
        assert!(PartitionerKind::from_proto(99).is_err());
    }
}
