//! Topic names and [`TopicPartition`], the one name of a partition that client, broker and
//! storage engine share.
//!
//! The name rule is what every client and broker applies before a name reaches a file system.
//!
//! Kafka's rule, so names move between the two unchanged: 1 to 249 characters of ASCII letters,
//! digits, `.`, `_` and `-`, and not `.` or `..`. Partition directories are named
//! `{topic}-{partition}`, which this rule keeps unambiguous (split at the last `-`).

use std::fmt;
use std::sync::Arc;

/// The longest topic name (Kafka's limit, which keeps `{topic}-{partition}` under 255 bytes).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTopicName {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is {0} characters; the limit is 249")]
    TooLong(usize),
    #[error("topic name may not be '.' or '..'")]
    Dots,
    #[error("topic name contains {0:?}; allowed are ASCII letters, digits, '.', '_' and '-'")]
    BadCharacter(char),
}

/// Checks `name` against the topic name rule.
pub fn validate_topic_name(name: &str) -> Result<(), InvalidTopicName> {
    if name.is_empty() {
        return Err(InvalidTopicName::Empty);
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(InvalidTopicName::TooLong(name.chars().count()));
    }
    if name == "." || name == ".." {
        return Err(InvalidTopicName::Dots);
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(InvalidTopicName::BadCharacter(c)),
        None => Ok(()),
    }
}

/// One partition of one topic: the unit of ordering, batching, fetching and storage. The topic
/// name is shared (`Arc<str>`), so copies are cheap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: Arc<str>,
    /// The partition number, `0..partition_count`.
    pub partition: u32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`, unchecked (a name that came from a broker, or that a
    /// request will have checked).
    pub fn new(topic: impl Into<Arc<str>>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    /// A partition of a topic whose name passes the topic name rule: what may name a directory.
    pub fn validated(topic: impl Into<Arc<str>>, partition: u32) -> Result<Self, InvalidTopicName> {
        let topic = topic.into();
        validate_topic_name(&topic)?;
        Ok(TopicPartition { topic, partition })
    }

    /// The partition's directory name inside a data dir, `{topic}-{partition}`.
    pub fn dir_name(&self) -> String {
        self.to_string()
    }

    /// Parses a directory name; `None` for anything that is not a partition directory.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (topic, partition) = name.rsplit_once('-')?;
        // Exactly what `dir_name` writes: no sign, no leading zeros (so `t-7` and `t-007`
        // cannot both claim partition 7).
        if partition.is_empty()
            || !partition.bytes().all(|b| b.is_ascii_digit())
            || (partition.len() > 1 && partition.starts_with('0'))
        {
            return None;
        }
        TopicPartition::validated(topic, partition.parse().ok()?).ok()
    }
}

/// `topic-partition`, as Kafka and the broker's directory names write it.
impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

impl From<TopicPartition> for String {
    fn from(tp: TopicPartition) -> String {
        tp.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_rules() {
        assert_eq!(validate_topic_name("orders.v1_eu-west"), Ok(()));
        assert_eq!(validate_topic_name(&"a".repeat(249)), Ok(()));
        assert_eq!(
            validate_topic_name(&"a".repeat(250)),
            Err(InvalidTopicName::TooLong(250))
        );
        assert_eq!(validate_topic_name(""), Err(InvalidTopicName::Empty));
        assert_eq!(validate_topic_name(".."), Err(InvalidTopicName::Dots));
        assert_eq!(
            validate_topic_name("a/b"),
            Err(InvalidTopicName::BadCharacter('/'))
        );
        assert_eq!(
            validate_topic_name("a b"),
            Err(InvalidTopicName::BadCharacter(' '))
        );
        assert_eq!(
            validate_topic_name("é"),
            Err(InvalidTopicName::BadCharacter('é'))
        );
    }

    #[test]
    fn dir_names_roundtrip() {
        let tp = TopicPartition::validated("orders-eu", 12).unwrap();
        assert_eq!(tp.dir_name(), "orders-eu-12");
        assert_eq!(TopicPartition::from_dir_name("orders-eu-12"), Some(tp));
        assert_eq!(TopicPartition::from_dir_name("orders"), None);
        assert_eq!(TopicPartition::from_dir_name("orders-"), None);
        assert_eq!(TopicPartition::from_dir_name("orders-007"), None);
        assert_eq!(
            TopicPartition::from_dir_name("orders-0").map(|t| t.partition),
            Some(0)
        );
        assert_eq!(TopicPartition::from_dir_name("a b-1"), None);
        assert!(TopicPartition::validated("..", 0).is_err());
    }
}
