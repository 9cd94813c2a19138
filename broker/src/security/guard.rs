//! The broker's one gate: who a request is (authentication) and whether it may do what it
//! asks (authorization), decided locally from this node's copy of the metadata.
//!
//! Every gRPC handler and every data-port request goes through [`Guard::authenticate`] and
//! [`Guard::authorize`] (the service's `authorize` helper combines them) before it does
//! anything; a refusal is UNAUTHENTICATED or PERMISSION_DENIED in the project's error
//! layout ([`weir_proto::status`]) and changes nothing.
//!
//! Invariants:
//! - The users and ACLs are the metadata's (journaled by the controller, learned with every
//!   heartbeat answer); the [`Policy`] built from them is rebuilt whenever the metadata
//!   version changes, so a revoked user or a removed ACL stops working on this node as soon
//!   as the node has the new metadata. No request waits for the controller.
//! - The configuration (modes, super users, authorization on or off) is fixed per process.

use std::sync::{Arc, RwLock};

use weir_proto::status;
use weir_proto::v1::{ClusterMetadata, Error, ErrorCode};

use super::PeerIdentity;
use super::acl::{Operation, Permission, Resource, ResourcePattern};
use super::authn::{self, Authentication, UserTable};
use super::authorizer::Authorizer;
use super::config::SecurityConfig;
use super::principal::Principal;
use super::wire;

/// The gRPC metadata key a token travels in (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Internal,
    External,
    DataPort,
}

/// What a connection or a request presented: checked again for every request of a long-lived
/// connection (a produce stream, a data-port connection), so a revoked token stops working
/// there too, not only on new connections.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub door: Door,
    pub peer: PeerIdentity,
    pub token: Option<String>,
}

impl Credentials {
    /// What a gRPC `request` on `door` presented: its bearer token and its connection's
    /// identity (the listener's connect info).
    pub fn of_request<T>(request: &tonic::Request<T>, door: Door) -> Result<Credentials, Error> {
        Ok(Credentials {
            door,
            peer: request
                .extensions()
                .get::<PeerIdentity>()
                .cloned()
                .unwrap_or_default(),
            token: bearer(request.metadata())?.map(str::to_owned),
        })
    }
}

/// The users and the authorizer of one metadata version.
#[derive(Debug, Default)]
pub struct Policy {
    pub version: u64,
    pub users: UserTable,
    pub authorizer: Authorizer,
}

/// The gate (see the module docs).
pub struct Guard {
    config: SecurityConfig,
    policy: RwLock<Arc<Policy>>,
}

impl Guard {
    pub fn new(config: SecurityConfig) -> Guard {
        let authorizer = Authorizer::new(config.authorization, config.super_users.clone(), vec![]);
        Guard {
            config,
            policy: RwLock::new(Arc::new(Policy {
                version: 0,
                users: UserTable::default(),
                authorizer,
            })),
        }
    }

    pub fn config(&self) -> &SecurityConfig {
        &self.config
    }

    /// What `door` requires.
    pub fn mode(&self, door: Door) -> Authentication {
        match door {
            Door::Internal => self.config.authentication,
            Door::External => self.config.external(),
            Door::DataPort => self.config.data(),
        }
    }

    /// The policy of `metadata` (rebuilt when its version is not the cached one's).
    pub fn policy(&self, metadata: &ClusterMetadata) -> Arc<Policy> {
        {
            let current = self.policy.read().unwrap_or_else(|e| e.into_inner());
            if current.version == metadata.version {
                return Arc::clone(&current);
            }
        }
        let users = UserTable::new(
            metadata
                .users
                .iter()
                .map(|u| (u.name.clone(), u.token_hash.clone())),
        );
        // Entries the controller checked; one that does not parse (a newer controller's) is
        // left out, which can only deny more.
        let entries = metadata
            .acls
            .iter()
            .filter_map(|b| wire::entry_from_wire(b).ok())
            .collect();
        let policy = Arc::new(Policy {
            version: metadata.version,
            users,
            authorizer: Authorizer::new(
                self.config.authorization,
                self.config.super_users.clone(),
                entries,
            ),
        });
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&policy);
        policy
    }

    /// The principal of a request on `door` that presented `token` (see [`authn`]).
    pub fn authenticate(
        &self,
        policy: &Policy,
        door: Door,
        peer: &PeerIdentity,
        token: Option<&str>,
    ) -> Result<Principal, Error> {
        authn::authenticate(self.mode(door), peer, token, &policy.users)
            .map_err(|e| status::error(ErrorCode::Unauthenticated, e.to_string()))
    }

    /// [`Guard::authenticate`] of `credentials` under the current `metadata`, then
    /// [`Guard::authorize`]: the check of one request on a long-lived connection.
    pub fn check(
        &self,
        metadata: &ClusterMetadata,
        credentials: &Credentials,
        operation: Operation,
        resource: Resource<'_>,
    ) -> Result<Principal, Error> {
        let policy = self.policy(metadata);
        let principal = self.authenticate(
            &policy,
            credentials.door,
            &credentials.peer,
            credentials.token.as_deref(),
        )?;
        Guard::authorize(&policy, &principal, operation, resource)?;
        Ok(principal)
    }

    /// [`Guard::authenticate`] of `credentials` under the current `metadata`, then
    /// [`Guard::authorize_cluster_action`]: the check of a broker's request (a controller RPC,
    /// a replica fetch).
    pub fn check_cluster_action(
        &self,
        metadata: &ClusterMetadata,
        credentials: &Credentials,
    ) -> Result<Principal, Error> {
        let policy = self.policy(metadata);
        let principal = self.authenticate(
            &policy,
            credentials.door,
            &credentials.peer,
            credentials.token.as_deref(),
        )?;
        self.authorize_cluster_action(&policy, credentials.door, &principal)?;
        Ok(principal)
    }

    /// Whether `principal` may do `operation` on `resource`.
    pub fn authorize(
        policy: &Policy,
        principal: &Principal,
        operation: Operation,
        resource: Resource<'_>,
    ) -> Result<(), Error> {
        policy
            .authorizer
            .check(principal, operation, &resource)
            .map_err(|denied| status::error(ErrorCode::PermissionDenied, denied.to_string()))
    }

    /// A broker's action on the cluster (controller RPCs, replica fetches): `alter` on the
    /// cluster. Where the listener requires credentials but ACLs are off, only a super user
    /// may: otherwise any application's token could register a broker or replicate.
    pub fn authorize_cluster_action(
        &self,
        policy: &Policy,
        door: Door,
        principal: &Principal,
    ) -> Result<(), Error> {
        if !policy.authorizer.enabled()
            && self.mode(door) != Authentication::None
            && !policy.authorizer.is_super_user(principal)
        {
            return Err(status::error(
                ErrorCode::PermissionDenied,
                format!(
                    "{principal} may not act as a broker: only security.super_users may (set security.broker_token to a super user's token)"
                ),
            ));
        }
        Guard::authorize(policy, principal, Operation::Alter, Resource::Cluster)
    }

    /// Kafka's KIP-679 rule for an idempotent producer's id: write on the cluster, or an allow
    /// entry for write (or all) on some topic pattern.
    pub fn may_init_producer(policy: &Policy, principal: &Principal) -> Result<(), Error> {
        if Guard::authorize(policy, principal, Operation::Write, Resource::Cluster).is_ok() {
            return Ok(());
        }
        let any_topic_write = policy.authorizer.entries().iter().any(|e| {
            e.principal == *principal
                && e.permission == Permission::Allow
                && matches!(e.operation, Operation::Write | Operation::All)
                && matches!(e.pattern, ResourcePattern::Topic { .. })
        });
        if any_topic_write {
            Ok(())
        } else {
            Err(status::error(
                ErrorCode::PermissionDenied,
                format!(
                    "{principal} may not get a producer id: it needs write on some topic (`weir acl add --principal {principal} --operation write --topic NAME`)"
                ),
            ))
        }
    }
}

/// The token of `authorization: Bearer <token>` metadata; `Err` for a malformed header.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<Option<&str>, Error> {
    let Some(value) = metadata.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        status::error(
            ErrorCode::Unauthenticated,
            "the authorization metadata must be `Bearer <token>`",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(malformed)?;
    Ok(Some(token.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tokens;

    #[test]
    fn the_policy_follows_the_metadata_version() {
        let guard = Guard::new(SecurityConfig {
            authentication: Authentication::Token,
            authorization: true,
            ..SecurityConfig::default()
        });
        let alice = tokens::generate("alice").unwrap();
        let mut metadata = ClusterMetadata {
            version: 7,
            users: vec![weir_proto::v1::UserCredential {
                name: "alice".into(),
                token_hash: alice.hash.clone(),
            }],
            ..ClusterMetadata::default()
        };
        let policy = guard.policy(&metadata);
        let peer = PeerIdentity::default();
        let who = guard
            .authenticate(&policy, Door::Internal, &peer, Some(&alice.token))
            .unwrap();
        let denied =
            Guard::authorize(&policy, &who, Operation::Read, Resource::Topic("t")).unwrap_err();
        assert_eq!(denied.code, ErrorCode::PermissionDenied as i32);
        let missing = guard
            .authenticate(&policy, Door::DataPort, &peer, None)
            .unwrap_err();
        assert_eq!(missing.code, ErrorCode::Unauthenticated as i32);
        // Revoked: the next version has no alice.
        metadata.version = 8;
        metadata.users.clear();
        let policy = guard.policy(&metadata);
        let revoked = guard
            .authenticate(&policy, Door::Internal, &peer, Some(&alice.token))
            .unwrap_err();
        assert_eq!(revoked.code, ErrorCode::Unauthenticated as i32);
    }

    #[test]
    fn without_acls_only_super_users_act_as_brokers_where_credentials_are_required() {
        let config = SecurityConfig {
            authentication: Authentication::Token,
            super_users: vec!["admin".into()],
            ..SecurityConfig::default()
        };
        let guard = Guard::new(config);
        let policy = guard.policy(&ClusterMetadata::default());
        let alice = Principal::User("alice".into());
        let admin = Principal::User("admin".into());
        assert!(
            guard
                .authorize_cluster_action(&policy, Door::Internal, &alice)
                .is_err()
        );
        assert!(
            guard
                .authorize_cluster_action(&policy, Door::Internal, &admin)
                .is_ok()
        );
        assert!(Guard::authorize(&policy, &alice, Operation::Read, Resource::Topic("t")).is_ok());
        // No credentials required, no ACLs: as before security existed.
        let open = Guard::new(SecurityConfig::default());
        let policy = open.policy(&ClusterMetadata::default());
        assert!(
            open.authorize_cluster_action(&policy, Door::Internal, &Principal::Anonymous)
                .is_ok()
        );
    }

    #[test]
    fn bearer_metadata_is_parsed_strictly() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&m), Ok(None));
        m.insert(AUTHORIZATION, "Bearer weir_a_b".parse().unwrap());
        assert_eq!(bearer(&m), Ok(Some("weir_a_b")));
        m.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert!(bearer(&m).is_err());
    }
}
