//! The decision: may this principal do this operation on this resource?
//!
//! Rules (Kafka's `StandardAuthorizer`, so its users get what they expect):
//! 1. With authorization off, everything is allowed.
//! 2. A super user (named in `security.super_users`) is allowed everything.
//! 3. An entry applies when its principal is the request's, its pattern matches the resource,
//!    and its operation is the request's or `all`. An allow entry for read, write, delete or
//!    alter also allows describe (the implied rule); a deny entry denies only what it names.
//! 4. Any applying deny entry denies, whatever allows it (deny beats allow).
//! 5. Otherwise an applying allow entry allows; nothing applying denies (deny by default).
//!
//! The authorizer is a pure value, rebuilt from the metadata whenever the ACLs change; a
//! check scans the entries (clusters hold few), takes no lock and does no I/O.

use std::collections::BTreeSet;
use std::fmt;

use super::acl::{AclEntry, Operation, Permission, Resource};
use super::principal::Principal;

/// The ACLs in force and who bypasses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizer {
    enabled: bool,
    super_users: BTreeSet<String>,
    entries: Vec<AclEntry>,
}

/// Why a check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No entry allows it.
    NoAllow,
    /// A deny entry names it.
    DenyEntry,
}

/// A refused check: who, what, on what, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Denied {
    pub principal: Principal,
    pub operation: Operation,
    pub resource: String,
    /// The resource as `weir acl add` names it (`--topic NAME`, `--group NAME`, `--cluster`).
    pub flag: String,
    pub reason: DenyReason,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} may not {} {}: ",
            self.principal, self.operation, self.resource
        )?;
        match self.reason {
            DenyReason::NoAllow => write!(
                f,
                "no ACL allows it; an administrator can grant it with `weir acl add --principal {} --operation {} {}`",
                self.principal, self.operation, self.flag
            ),
            DenyReason::DenyEntry => write!(
                f,
                "a deny ACL forbids it (see `weir acl list --principal {}`)",
                self.principal
            ),
        }
    }
}

/// Whether an entry's operation covers the asked one (rule 3).
fn covers(entry: &AclEntry, asked: Operation) -> bool {
    if entry.operation == asked || entry.operation == Operation::All {
        return true;
    }
    entry.permission == Permission::Allow
        && asked == Operation::Describe
        && matches!(
            entry.operation,
            Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
        )
}

impl Authorizer {
    /// An authorizer enforcing `entries` (when `enabled`), with `super_users` bypassing them.
    pub fn new(
        enabled: bool,
        super_users: impl IntoIterator<Item = String>,
        entries: Vec<AclEntry>,
    ) -> Authorizer {
        Authorizer {
            enabled,
            super_users: super_users.into_iter().collect(),
            entries,
        }
    }

    /// Everything allowed (authorization off).
    pub fn allow_all() -> Authorizer {
        Authorizer::default()
    }

    pub fn entries(&self) -> &[AclEntry] {
        &self.entries
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn is_super_user(&self, principal: &Principal) -> bool {
        principal
            .name()
            .is_some_and(|name| self.super_users.contains(name))
    }

    /// The decision (see the module docs).
    pub fn check(
        &self,
        principal: &Principal,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> Result<(), Denied> {
        if !self.enabled || self.is_super_user(principal) {
            return Ok(());
        }
        let mut allowed = false;
        for entry in &self.entries {
            if entry.principal != *principal
                || !entry.pattern.matches(resource)
                || !covers(entry, operation)
            {
                continue;
            }
            match entry.permission {
                Permission::Deny => {
                    return Err(self.denied(principal, operation, resource, DenyReason::DenyEntry));
                }
                Permission::Allow => allowed = true,
            }
        }
        if allowed {
            Ok(())
        } else {
            Err(self.denied(principal, operation, resource, DenyReason::NoAllow))
        }
    }

    fn denied(
        &self,
        principal: &Principal,
        operation: Operation,
        resource: &Resource<'_>,
        reason: DenyReason,
    ) -> Denied {
        Denied {
            principal: principal.clone(),
            operation,
            resource: resource.to_string(),
            flag: match resource {
                Resource::Topic(name) => format!("--topic {name}"),
                Resource::Group(name) => format!("--group {name}"),
                Resource::Cluster => "--cluster".to_owned(),
            },
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::acl::{PatternKind, ResourcePattern};
    use proptest::prelude::*;

    fn user(n: &str) -> Principal {
        Principal::User(n.into())
    }

    fn entry(p: &str, op: Operation, pattern: ResourcePattern, perm: Permission) -> AclEntry {
        AclEntry {
            principal: user(p),
            operation: op,
            pattern,
            permission: perm,
        }
    }

    fn topic(name: &str, kind: PatternKind) -> ResourcePattern {
        ResourcePattern::Topic {
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn the_rules() {
        let a = Authorizer::new(
            true,
            ["admin".to_owned()],
            vec![
                entry(
                    "alice",
                    Operation::Read,
                    topic("orders", PatternKind::Literal),
                    Permission::Allow,
                ),
                entry(
                    "alice",
                    Operation::Write,
                    topic("ord", PatternKind::Prefix),
                    Permission::Allow,
                ),
                entry(
                    "alice",
                    Operation::Write,
                    topic("ordsecret", PatternKind::Literal),
                    Permission::Deny,
                ),
                entry(
                    "bob",
                    Operation::All,
                    ResourcePattern::Cluster,
                    Permission::Allow,
                ),
            ],
        );
        let orders = Resource::Topic("orders");
        assert!(a.check(&user("alice"), Operation::Read, &orders).is_ok());
        assert!(
            a.check(&user("alice"), Operation::Describe, &orders)
                .is_ok(),
            "implied"
        );
        assert!(
            a.check(&user("alice"), Operation::Write, &Resource::Topic("ordx"))
                .is_ok(),
            "prefix"
        );
        let denied = a
            .check(
                &user("alice"),
                Operation::Write,
                &Resource::Topic("ordsecret"),
            )
            .unwrap_err();
        assert_eq!(denied.reason, DenyReason::DenyEntry, "deny beats allow");
        let denied = a
            .check(&user("alice"), Operation::Delete, &orders)
            .unwrap_err();
        assert_eq!(denied.reason, DenyReason::NoAllow);
        assert!(denied.to_string().contains("weir acl add"), "{denied}");
        assert!(
            a.check(&user("carol"), Operation::Read, &orders).is_err(),
            "deny by default"
        );
        assert!(
            a.check(&Principal::Anonymous, Operation::Read, &orders)
                .is_err()
        );
        assert!(
            a.check(&user("admin"), Operation::Delete, &Resource::Cluster)
                .is_ok(),
            "super user"
        );
        assert!(
            a.check(&user("bob"), Operation::Alter, &Resource::Cluster)
                .is_ok(),
            "all"
        );
        assert!(a.check(&user("bob"), Operation::Read, &orders).is_err());
        assert!(
            Authorizer::allow_all()
                .check(&Principal::Anonymous, Operation::Delete, &Resource::Cluster)
                .is_ok()
        );
    }

    // The naive model: the rules written as set comprehensions over every entry.
    fn model(
        enabled: bool,
        supers: &[String],
        entries: &[AclEntry],
        p: &Principal,
        op: Operation,
        r: &Resource<'_>,
    ) -> bool {
        if !enabled {
            return true;
        }
        if let Principal::User(n) = p
            && supers.contains(n)
        {
            return true;
        }
        let applies = |e: &&AclEntry| {
            let name_ok = match (&e.pattern, r) {
                (ResourcePattern::Topic { name, kind }, Resource::Topic(t))
                | (ResourcePattern::Group { name, kind }, Resource::Group(t)) => match kind {
                    PatternKind::Literal => name == t || name == "*",
                    PatternKind::Prefix => t.len() >= name.len() && &t[..name.len()] == name,
                },
                (ResourcePattern::Cluster, Resource::Cluster) => true,
                _ => false,
            };
            &e.principal == p && name_ok
        };
        let denies = entries.iter().filter(applies).any(|e| {
            e.permission == Permission::Deny && (e.operation == op || e.operation == Operation::All)
        });
        if denies {
            return false;
        }
        entries.iter().filter(applies).any(|e| {
            e.permission == Permission::Allow
                && (e.operation == op
                    || e.operation == Operation::All
                    || (op == Operation::Describe
                        && [
                            Operation::Read,
                            Operation::Write,
                            Operation::Delete,
                            Operation::Alter,
                        ]
                        .contains(&e.operation)))
        })
    }

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![Just("*".to_owned()), "[ab]{0,3}"]
    }

    fn arb_pattern() -> impl Strategy<Value = ResourcePattern> {
        let kind = prop_oneof![Just(PatternKind::Literal), Just(PatternKind::Prefix)];
        prop_oneof![
            (arb_name(), kind.clone())
                .prop_map(|(name, kind)| ResourcePattern::Topic { name, kind }),
            (arb_name(), kind).prop_map(|(name, kind)| ResourcePattern::Group { name, kind }),
            Just(ResourcePattern::Cluster),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Operation> {
        proptest::sample::select(Operation::EVERY.to_vec())
    }

    fn arb_principal() -> impl Strategy<Value = Principal> {
        prop_oneof![
            Just(Principal::Anonymous),
            Just(user("u1")),
            Just(user("u2")),
            Just(user("root")),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = AclEntry> {
        (
            arb_principal(),
            arb_op(),
            arb_pattern(),
            prop_oneof![Just(Permission::Allow), Just(Permission::Deny)],
        )
            .prop_map(|(principal, operation, pattern, permission)| AclEntry {
                principal,
                operation,
                pattern,
                permission,
            })
    }

    proptest! {
        #[test]
        fn check_agrees_with_the_naive_model(
            enabled in any::<bool>(),
            with_super in any::<bool>(),
            entries in proptest::collection::vec(arb_entry(), 0..12),
            principal in arb_principal(),
            op in arb_op().prop_filter("requests never ask for all", |o| *o != Operation::All),
            kind in 0..3u8,
            name in "[ab]{1,3}",
        ) {
            let supers: Vec<String> = if with_super { vec!["root".into()] } else { vec![] };
            let resource = match kind {
                0 => Resource::Topic(&name),
                1 => Resource::Group(&name),
                _ => Resource::Cluster,
            };
            let a = Authorizer::new(enabled, supers.clone(), entries.clone());
            prop_assert_eq!(
                a.check(&principal, op, &resource).is_ok(),
                model(enabled, &supers, &entries, &principal, op, &resource)
            );
        }
    }
}
