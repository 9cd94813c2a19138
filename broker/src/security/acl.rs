//! Access control entries: who ([`Principal`]) may or may not do what ([`Operation`]) to which
//! resources ([`ResourcePattern`]), and the filters that list and delete them.
//!
//! Kafka's model, so its users recognise it:
//! - resources are topics and consumer groups, each named literally or by a prefix, and the
//!   cluster (broker registration, heartbeats, replication, users and ACLs themselves);
//! - a literal name `*` matches every resource of its type;
//! - operations are read, write, create, delete, describe, alter and `all` (every one).
//!
//! Invariants: an [`AclEntry`] is plain data (checked names, no wildcard principal), so the
//! controller journals it as is and every broker decides the same from the same entries.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::principal::Principal;

/// What a request does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Read,
    Write,
    Create,
    Delete,
    Describe,
    Alter,
    /// Every operation (in an entry; never asked for by a request).
    All,
}

impl Operation {
    pub const EVERY: [Operation; 7] = [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Describe,
        Operation::Alter,
        Operation::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Describe => "describe",
            Operation::Alter => "alter",
            Operation::All => "all",
        }
    }
}

impl std::str::FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Operation::EVERY
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "{s:?} is not an operation: read, write, create, delete, describe, alter or all"
                )
            })
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a pattern's name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    /// The name itself (`*`: every name).
    Literal,
    /// Every name starting with it.
    Prefix,
}

/// The kinds of resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
        })
    }
}

/// The resources an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResourcePattern {
    Topic { name: String, kind: PatternKind },
    Group { name: String, kind: PatternKind },
    Cluster,
}

/// The one resource a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
    Cluster,
}

impl Resource<'_> {
    pub fn resource_type(&self) -> ResourceType {
        match self {
            Resource::Topic(_) => ResourceType::Topic,
            Resource::Group(_) => ResourceType::Group,
            Resource::Cluster => ResourceType::Cluster,
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(name) => write!(f, "topic {name:?}"),
            Resource::Group(name) => write!(f, "group {name:?}"),
            Resource::Cluster => f.write_str("the cluster"),
        }
    }
}

fn name_matches(pattern: &str, kind: PatternKind, name: &str) -> bool {
    match kind {
        PatternKind::Literal => pattern == "*" || pattern == name,
        PatternKind::Prefix => name.starts_with(pattern),
    }
}

impl ResourcePattern {
    /// Whether the pattern covers `resource`.
    pub fn matches(&self, resource: &Resource<'_>) -> bool {
        match (self, resource) {
            (ResourcePattern::Topic { name, kind }, Resource::Topic(t)) => {
                name_matches(name, *kind, t)
            }
            (ResourcePattern::Group { name, kind }, Resource::Group(g)) => {
                name_matches(name, *kind, g)
            }
            (ResourcePattern::Cluster, Resource::Cluster) => true,
            _ => false,
        }
    }

    pub fn resource_type(&self) -> ResourceType {
        match self {
            ResourcePattern::Topic { .. } => ResourceType::Topic,
            ResourcePattern::Group { .. } => ResourceType::Group,
            ResourcePattern::Cluster => ResourceType::Cluster,
        }
    }

    /// The name and how it matches; `None` for the cluster.
    pub fn name(&self) -> Option<(&str, PatternKind)> {
        match self {
            ResourcePattern::Topic { name, kind } | ResourcePattern::Group { name, kind } => {
                Some((name, *kind))
            }
            ResourcePattern::Cluster => None,
        }
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some((name, PatternKind::Literal)) => write!(f, "{} {name:?}", self.resource_type()),
            Some((name, PatternKind::Prefix)) => {
                write!(f, "{}s prefixed {name:?}", self.resource_type())
            }
            None => f.write_str("cluster"),
        }
    }
}

/// Whether an entry allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Deny,
}

/// One access control entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    pub principal: Principal,
    pub operation: Operation,
    pub pattern: ResourcePattern,
    pub permission: Permission,
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.permission {
            Permission::Allow => "allow",
            Permission::Deny => "deny",
        };
        write!(
            f,
            "{verb} {} {} on {}",
            self.principal, self.operation, self.pattern
        )
    }
}

/// Which entries a list or a delete applies to: every field set must match (none set: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    pub principal: Option<Principal>,
    pub operation: Option<Operation>,
    pub resource_type: Option<ResourceType>,
    /// The pattern's name exactly (not a match against it).
    pub name: Option<String>,
    pub kind: Option<PatternKind>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    pub fn matches(&self, entry: &AclEntry) -> bool {
        let name = entry.pattern.name();
        self.principal
            .as_ref()
            .is_none_or(|p| *p == entry.principal)
            && self.operation.is_none_or(|o| o == entry.operation)
            && self
                .resource_type
                .is_none_or(|t| t == entry.pattern.resource_type())
            && self
                .name
                .as_deref()
                .is_none_or(|n| name.is_some_and(|(m, _)| m == n))
            && self
                .kind
                .is_none_or(|k| name.is_some_and(|(_, kind)| kind == k))
            && self.permission.is_none_or(|p| p == entry.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, kind: PatternKind) -> ResourcePattern {
        ResourcePattern::Topic {
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn patterns_match_by_type_name_and_kind() {
        let orders = topic("orders", PatternKind::Literal);
        assert!(orders.matches(&Resource::Topic("orders")));
        assert!(!orders.matches(&Resource::Topic("orders2")));
        assert!(!orders.matches(&Resource::Group("orders")));
        let prefix = topic("ord", PatternKind::Prefix);
        assert!(prefix.matches(&Resource::Topic("orders")));
        assert!(!prefix.matches(&Resource::Topic("or")));
        assert!(topic("*", PatternKind::Literal).matches(&Resource::Topic("x")));
        assert!(!topic("*", PatternKind::Prefix).matches(&Resource::Topic("x")));
        assert!(ResourcePattern::Cluster.matches(&Resource::Cluster));
        assert!(!ResourcePattern::Cluster.matches(&Resource::Topic("x")));
    }

    #[test]
    fn entries_journal_as_json_and_back() {
        let entry = AclEntry {
            principal: Principal::User("alice".into()),
            operation: Operation::Read,
            pattern: topic("orders", PatternKind::Prefix),
            permission: Permission::Deny,
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            json,
            r#"{"principal":"User:alice","operation":"read","pattern":{"type":"topic","name":"orders","kind":"prefix"},"permission":"deny"}"#
        );
        assert_eq!(serde_json::from_str::<AclEntry>(&json).unwrap(), entry);
        assert!(serde_json::from_str::<AclEntry>(&json.replace("alice", "a b")).is_err());
    }

    #[test]
    fn filters_match_every_field_they_set() {
        let entry = AclEntry {
            principal: Principal::User("alice".into()),
            operation: Operation::Write,
            pattern: topic("orders", PatternKind::Literal),
            permission: Permission::Allow,
        };
        assert!(AclFilter::default().matches(&entry));
        let f = AclFilter {
            name: Some("orders".into()),
            resource_type: Some(ResourceType::Topic),
            ..AclFilter::default()
        };
        assert!(f.matches(&entry));
        let f = AclFilter {
            name: Some("ord".into()),
            ..AclFilter::default()
        };
        assert!(!f.matches(&entry), "a filter's name is exact");
        let f = AclFilter {
            permission: Some(Permission::Deny),
            ..AclFilter::default()
        };
        assert!(!f.matches(&entry));
    }
}
