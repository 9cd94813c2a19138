//! `TopicPartition`: a partition's identity, and its directory name `{topic}-{partition}`.

use std::fmt;

use weir_proto::topic::validate_topic_name;

use super::error::Result;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    /// A partition of a topic whose name passes the topic name rule.
    pub fn new(topic: impl Into<String>, partition: u32) -> Result<Self> {
        let topic = topic.into();
        validate_topic_name(&topic)?;
        Ok(TopicPartition { topic, partition })
    }

    /// The partition's directory name inside a data dir.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
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
        TopicPartition::new(topic, partition.parse().ok()?).ok()
    }
}

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
    fn dir_names_roundtrip() {
        let tp = TopicPartition::new("orders-eu", 12).unwrap();
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
        assert!(TopicPartition::new("..", 0).is_err());
    }
}
