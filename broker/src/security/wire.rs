//! Between the security types and their wire messages (`AclBinding`, `AclFilter`).
//!
//! Invariant: an entry from the wire is checked whole (principal, name, no `any` fields)
//! before it can reach the journal; a refusal says which field is wrong.

use weir_proto::v1::{self, AclOperation, AclPatternType, AclPermission, AclResourceType};

use super::acl::{
    AclEntry, AclFilter, Operation, PatternKind, Permission, ResourcePattern, ResourceType,
};
use super::principal::Principal;

fn op_to_wire(op: Operation) -> AclOperation {
    match op {
        Operation::Read => AclOperation::Read,
        Operation::Write => AclOperation::Write,
        Operation::Create => AclOperation::Create,
        Operation::Delete => AclOperation::Delete,
        Operation::Describe => AclOperation::Describe,
        Operation::Alter => AclOperation::Alter,
        Operation::All => AclOperation::All,
    }
}

fn op_from_wire(n: i32) -> Result<Option<Operation>, String> {
    Ok(Some(match AclOperation::try_from(n) {
        Ok(AclOperation::Any) => return Ok(None),
        Ok(AclOperation::Read) => Operation::Read,
        Ok(AclOperation::Write) => Operation::Write,
        Ok(AclOperation::Create) => Operation::Create,
        Ok(AclOperation::Delete) => Operation::Delete,
        Ok(AclOperation::Describe) => Operation::Describe,
        Ok(AclOperation::Alter) => Operation::Alter,
        Ok(AclOperation::All) => Operation::All,
        Err(_) => return Err(format!("unknown ACL operation {n}")),
    }))
}

fn type_from_wire(n: i32) -> Result<Option<ResourceType>, String> {
    Ok(Some(match AclResourceType::try_from(n) {
        Ok(AclResourceType::AclResourceAny) => return Ok(None),
        Ok(AclResourceType::AclResourceTopic) => ResourceType::Topic,
        Ok(AclResourceType::AclResourceGroup) => ResourceType::Group,
        Ok(AclResourceType::AclResourceCluster) => ResourceType::Cluster,
        Err(_) => return Err(format!("unknown ACL resource type {n}")),
    }))
}

fn kind_from_wire(n: i32) -> Result<Option<PatternKind>, String> {
    Ok(Some(match AclPatternType::try_from(n) {
        Ok(AclPatternType::AclPatternAny) => return Ok(None),
        Ok(AclPatternType::AclPatternLiteral) => PatternKind::Literal,
        Ok(AclPatternType::AclPatternPrefix) => PatternKind::Prefix,
        Err(_) => return Err(format!("unknown ACL pattern type {n}")),
    }))
}

fn permission_from_wire(n: i32) -> Result<Option<Permission>, String> {
    Ok(Some(match AclPermission::try_from(n) {
        Ok(AclPermission::Any) => return Ok(None),
        Ok(AclPermission::Allow) => Permission::Allow,
        Ok(AclPermission::Deny) => Permission::Deny,
        Err(_) => return Err(format!("unknown ACL permission {n}")),
    }))
}

/// An entry as the wire has it.
pub fn entry_to_wire(e: &AclEntry) -> v1::AclBinding {
    let (resource_type, name, kind) = match &e.pattern {
        ResourcePattern::Topic { name, kind } => {
            (AclResourceType::AclResourceTopic, name.clone(), *kind)
        }
        ResourcePattern::Group { name, kind } => {
            (AclResourceType::AclResourceGroup, name.clone(), *kind)
        }
        ResourcePattern::Cluster => (
            AclResourceType::AclResourceCluster,
            String::new(),
            PatternKind::Literal,
        ),
    };
    v1::AclBinding {
        principal: e.principal.to_string(),
        operation: op_to_wire(e.operation) as i32,
        resource_type: resource_type as i32,
        resource_name: name,
        pattern_type: match kind {
            PatternKind::Literal => AclPatternType::AclPatternLiteral,
            PatternKind::Prefix => AclPatternType::AclPatternPrefix,
        } as i32,
        permission: match e.permission {
            Permission::Allow => AclPermission::Allow,
            Permission::Deny => AclPermission::Deny,
        } as i32,
    }
}

/// A wire entry, checked (see the module docs).
pub fn entry_from_wire(b: &v1::AclBinding) -> Result<AclEntry, String> {
    let principal = Principal::parse(&b.principal)
        .map_err(|e| format!("ACL principal {:?}: {e}", b.principal))?;
    let operation = op_from_wire(b.operation)?.ok_or("an ACL entry needs an operation")?;
    let kind = kind_from_wire(b.pattern_type)?.unwrap_or(PatternKind::Literal);
    let name = || -> Result<String, String> {
        if b.resource_name.is_empty() {
            return Err("an ACL entry for a topic or group needs a resource name".into());
        }
        if b.resource_name.len() > 249 {
            return Err("an ACL resource name is at most 249 characters".into());
        }
        Ok(b.resource_name.clone())
    };
    let pattern = match type_from_wire(b.resource_type)? {
        None => return Err("an ACL entry needs a resource type (topic, group or cluster)".into()),
        Some(ResourceType::Topic) => ResourcePattern::Topic {
            name: name()?,
            kind,
        },
        Some(ResourceType::Group) => ResourcePattern::Group {
            name: name()?,
            kind,
        },
        Some(ResourceType::Cluster) => ResourcePattern::Cluster,
    };
    let permission = permission_from_wire(b.permission)?.unwrap_or(Permission::Allow);
    Ok(AclEntry {
        principal,
        operation,
        pattern,
        permission,
    })
}

/// A wire filter, checked.
pub fn filter_from_wire(f: &v1::AclFilter) -> Result<AclFilter, String> {
    let principal = f
        .principal
        .as_deref()
        .map(Principal::parse)
        .transpose()
        .map_err(|e| format!("ACL filter principal: {e}"))?;
    Ok(AclFilter {
        principal,
        operation: op_from_wire(f.operation)?,
        resource_type: type_from_wire(f.resource_type)?,
        name: f.resource_name.clone(),
        kind: kind_from_wire(f.pattern_type)?,
        permission: permission_from_wire(f.permission)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_refused() {
        let e = AclEntry {
            principal: Principal::User("alice".into()),
            operation: Operation::Write,
            pattern: ResourcePattern::Group {
                name: "g".into(),
                kind: PatternKind::Prefix,
            },
            permission: Permission::Deny,
        };
        assert_eq!(entry_from_wire(&entry_to_wire(&e)), Ok(e.clone()));
        let mut b = entry_to_wire(&e);
        b.operation = 0;
        assert!(entry_from_wire(&b).is_err());
        let mut b = entry_to_wire(&e);
        b.resource_name.clear();
        assert!(entry_from_wire(&b).is_err());
        let mut b = entry_to_wire(&e);
        b.principal = "Group:x".into();
        assert!(entry_from_wire(&b).is_err());
    }
}
