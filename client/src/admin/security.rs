//! Users and ACLs: [`Admin::create_user`] (its token is returned once), [`Admin::delete_user`],
//! [`Admin::list_users`], [`Admin::create_acls`], [`Admin::describe_acls`],
//! [`Admin::delete_acls`]. These need the cluster's `alter` (changes) or `describe` (lists)
//! once the brokers enforce ACLs.

use std::fmt;

use weir_proto::v1::{
    self, AclOperation as WireOp, AclPatternType, AclPermission, AclResourceType,
};

use super::Admin;
use crate::ClientError;

/// A user created by [`Admin::create_user`].
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The user's name.
    pub name: String,
    /// `weir_<name>_<secret>`: shown only now (the controller keeps only its hash).
    pub token: String,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: i64,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// A user, without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// The user's name.
    pub name: String,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: i64,
}

/// What an ACL entry allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclOperation {
    /// Fetch (topics); join, commit (groups).
    Read,
    /// Produce (topics).
    Write,
    /// Create topics.
    Create,
    /// Delete topics.
    Delete,
    /// Also allowed by an allow entry for read, write, delete or alter.
    Describe,
    /// Reassign partitions, manage users and ACLs (cluster).
    Alter,
    /// Every operation.
    All,
}

const OPERATIONS: [(AclOperation, &str, WireOp); 7] = [
    (AclOperation::Read, "read", WireOp::Read),
    (AclOperation::Write, "write", WireOp::Write),
    (AclOperation::Create, "create", WireOp::Create),
    (AclOperation::Delete, "delete", WireOp::Delete),
    (AclOperation::Describe, "describe", WireOp::Describe),
    (AclOperation::Alter, "alter", WireOp::Alter),
    (AclOperation::All, "all", WireOp::All),
];

impl AclOperation {
    /// The written form: `read`, `write`, ...
    pub fn as_str(self) -> &'static str {
        OPERATIONS
            .iter()
            .find(|o| o.0 == self)
            .map_or("all", |o| o.1)
    }

    fn to_wire(self) -> i32 {
        OPERATIONS
            .iter()
            .find(|o| o.0 == self)
            .map_or(0, |o| o.2 as i32)
    }

    fn from_wire(n: i32) -> Option<Self> {
        OPERATIONS.iter().find(|o| o.2 as i32 == n).map(|o| o.0)
    }
}

impl std::str::FromStr for AclOperation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OPERATIONS
            .iter()
            .find(|o| o.1.eq_ignore_ascii_case(s))
            .map(|o| o.0)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not an operation: read, write, create, delete, describe, alter or all"
                )
            })
    }
}

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which resources an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclResource {
    /// The topic of that name (`*`: every topic).
    Topic(String),
    /// Every topic whose name starts with it.
    TopicPrefix(String),
    /// The group of that name (`*`: every group).
    Group(String),
    /// Every group whose name starts with it.
    GroupPrefix(String),
    /// Broker registration and replication, users and ACLs.
    Cluster,
}

impl AclResource {
    /// `topic`, `group` or `cluster`.
    pub fn type_name(&self) -> &'static str {
        match self {
            AclResource::Topic(_) | AclResource::TopicPrefix(_) => "topic",
            AclResource::Group(_) | AclResource::GroupPrefix(_) => "group",
            AclResource::Cluster => "cluster",
        }
    }

    /// The name (empty for the cluster).
    pub fn name(&self) -> &str {
        match self {
            AclResource::Topic(n)
            | AclResource::TopicPrefix(n)
            | AclResource::Group(n)
            | AclResource::GroupPrefix(n) => n,
            AclResource::Cluster => "",
        }
    }

    /// Whether the name is a prefix.
    pub fn is_prefix(&self) -> bool {
        matches!(
            self,
            AclResource::TopicPrefix(_) | AclResource::GroupPrefix(_)
        )
    }
}

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    /// `User:NAME` (`User:ANONYMOUS`: clients without credentials).
    pub principal: String,
    /// What it allows or denies.
    pub operation: AclOperation,
    /// Which resources.
    pub resource: AclResource,
    /// A deny entry wins over every allow.
    pub deny: bool,
}

impl Acl {
    fn to_wire(&self) -> v1::AclBinding {
        let (resource_type, pattern) = match &self.resource {
            AclResource::Topic(_) => (
                AclResourceType::AclResourceTopic,
                AclPatternType::AclPatternLiteral,
            ),
            AclResource::TopicPrefix(_) => (
                AclResourceType::AclResourceTopic,
                AclPatternType::AclPatternPrefix,
            ),
            AclResource::Group(_) => (
                AclResourceType::AclResourceGroup,
                AclPatternType::AclPatternLiteral,
            ),
            AclResource::GroupPrefix(_) => (
                AclResourceType::AclResourceGroup,
                AclPatternType::AclPatternPrefix,
            ),
            AclResource::Cluster => (
                AclResourceType::AclResourceCluster,
                AclPatternType::AclPatternLiteral,
            ),
        };
        v1::AclBinding {
            principal: principal(&self.principal),
            operation: self.operation.to_wire(),
            resource_type: resource_type as i32,
            resource_name: self.resource.name().to_owned(),
            pattern_type: pattern as i32,
            permission: if self.deny {
                AclPermission::Deny
            } else {
                AclPermission::Allow
            } as i32,
        }
    }

    fn from_wire(b: v1::AclBinding) -> Result<Acl, ClientError> {
        let bad = |what: &str| ClientError::Transport {
            code: tonic::Code::Internal,
            message: format!("the broker sent an ACL entry with {what}"),
        };
        let prefix = b.pattern_type == AclPatternType::AclPatternPrefix as i32;
        let name = b.resource_name;
        let resource = match AclResourceType::try_from(b.resource_type) {
            Ok(AclResourceType::AclResourceTopic) if prefix => AclResource::TopicPrefix(name),
            Ok(AclResourceType::AclResourceTopic) => AclResource::Topic(name),
            Ok(AclResourceType::AclResourceGroup) if prefix => AclResource::GroupPrefix(name),
            Ok(AclResourceType::AclResourceGroup) => AclResource::Group(name),
            Ok(AclResourceType::AclResourceCluster) => AclResource::Cluster,
            _ => return Err(bad("an unknown resource type")),
        };
        Ok(Acl {
            principal: b.principal,
            operation: AclOperation::from_wire(b.operation)
                .ok_or_else(|| bad("an unknown operation"))?,
            resource,
            deny: b.permission == AclPermission::Deny as i32,
        })
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.deny { "deny" } else { "allow" };
        let prefix = if self.resource.is_prefix() {
            " (prefix)"
        } else {
            ""
        };
        write!(
            f,
            "{verb} {} {} {} {:?}{prefix}",
            self.principal,
            self.operation,
            self.resource.type_name(),
            self.resource.name()
        )
    }
}

/// `alice` -> `User:alice`; a written principal as is.
fn principal(p: &str) -> String {
    if p.contains(':') {
        p.to_owned()
    } else {
        format!("User:{p}")
    }
}

/// Which entries [`Admin::describe_acls`] and [`Admin::delete_acls`] apply to: every field set
/// must match (none set: every entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    /// `User:NAME`, or a bare `NAME`.
    pub principal: Option<String>,
    /// The operation the entry names.
    pub operation: Option<AclOperation>,
    /// `topic`, `group` or `cluster`.
    pub resource_type: Option<String>,
    /// The entry's resource name exactly.
    pub name: Option<String>,
    /// Only prefix entries (`Some(true)`) or only literal ones (`Some(false)`).
    pub prefix: Option<bool>,
    /// Only deny entries (`Some(true)`) or only allow ones (`Some(false)`).
    pub deny: Option<bool>,
}

impl AclFilter {
    fn to_wire(&self) -> Result<v1::AclFilter, ClientError> {
        let resource_type = match self.resource_type.as_deref() {
            None => AclResourceType::AclResourceAny,
            Some("topic") => AclResourceType::AclResourceTopic,
            Some("group") => AclResourceType::AclResourceGroup,
            Some("cluster") => AclResourceType::AclResourceCluster,
            Some(other) => {
                return Err(ClientError::InvalidArgument(format!(
                    "{other:?} is not a resource type: topic, group or cluster"
                )));
            }
        };
        Ok(v1::AclFilter {
            principal: self.principal.as_deref().map(principal),
            operation: self.operation.map_or(0, AclOperation::to_wire),
            resource_type: resource_type as i32,
            resource_name: self.name.clone(),
            pattern_type: match self.prefix {
                None => AclPatternType::AclPatternAny,
                Some(true) => AclPatternType::AclPatternPrefix,
                Some(false) => AclPatternType::AclPatternLiteral,
            } as i32,
            permission: match self.deny {
                None => AclPermission::Any,
                Some(true) => AclPermission::Deny,
                Some(false) => AclPermission::Allow,
            } as i32,
        })
    }
}

impl Admin {
    /// Creates a user with a new random token, returned once. `USER_EXISTS`, `INVALID_NAME`.
    pub async fn create_user(&self, name: &str) -> Result<NewUser, ClientError> {
        let created = self
            .grpc
            .clone()
            .create_user(v1::CreateUserRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner();
        Ok(NewUser {
            name: created.name,
            token: created.token,
            created_ms: created.created_ms,
        })
    }

    /// Deletes a user: its token stops working on every broker. `UNKNOWN_USER`.
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.grpc
            .clone()
            .delete_user(v1::DeleteUserRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Every user, by name (no secrets).
    pub async fn list_users(&self) -> Result<Vec<UserSummary>, ClientError> {
        let users = self
            .grpc
            .clone()
            .list_users(v1::ListUsersRequest {})
            .await?
            .into_inner()
            .users;
        Ok(users
            .into_iter()
            .map(|u| UserSummary {
                name: u.name,
                created_ms: u.created_ms,
            })
            .collect())
    }

    /// Adds ACL entries (all or none).
    pub async fn create_acls(&self, acls: &[Acl]) -> Result<(), ClientError> {
        self.grpc
            .clone()
            .create_acls(v1::CreateAclsRequest {
                acls: acls.iter().map(Acl::to_wire).collect(),
            })
            .await?;
        Ok(())
    }

    /// The entries matching `filter`.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>, ClientError> {
        let found = self.grpc.clone().describe_acls(filter.to_wire()?).await?;
        found
            .into_inner()
            .acls
            .into_iter()
            .map(Acl::from_wire)
            .collect()
    }

    /// Deletes the entries matching `filter`; returns them.
    pub async fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>, ClientError> {
        let deleted = self.grpc.clone().delete_acls(filter.to_wire()?).await?;
        deleted
            .into_inner()
            .acls
            .into_iter()
            .map(Acl::from_wire)
            .collect()
    }
}
