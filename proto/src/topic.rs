//! Topic names: the rule every client and broker applies before a name reaches a file system.
//!
//! Kafka's rule, so names move between the two unchanged: 1 to 249 characters of ASCII letters,
//! digits, `.`, `_` and `-`, and not `.` or `..`. Partition directories are named
//! `{topic}-{partition}`, which this rule keeps unambiguous (split at the last `-`).

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
}
