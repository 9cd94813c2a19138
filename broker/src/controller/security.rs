//! Users and ACLs at the controller: create and delete users (only their token hashes are
//! journaled), add, list and delete ACL entries, and the bootstrap user.
//!
//! Invariants:
//! - Every change is journaled before it is applied ([`super::Inner::record`]) and bumps the
//!   metadata version, so every broker learns it with its next heartbeat answer; a change
//!   returns once live brokers acknowledged it (bounded by [`super::ACK_WAIT`]): a revoked
//!   token then fails on every broker that is up.
//! - A token is returned once, by [`Controller::create_user`]; it is never journaled.
//! - Entries from the wire are checked whole ([`crate::security::wire`]): a request with one
//!   bad entry adds none.

use std::sync::Arc;

use tracing::info;
use weir_proto::v1::{
    AclFilter, CreateAclsRequest, CreateAclsResponse, CreateUserRequest, CreateUserResponse,
    DeleteUserRequest, DeleteUserResponse, DescribeAclsResponse, ErrorCode, ListUsersRequest,
    ListUsersResponse, UserInfo,
};
use weir_storage::fs::now_ms;

use super::state::{Event, UserRecord};
use super::{Controller, Result, refuse};
use crate::security::principal::validate_user_name;
use crate::security::{tokens, wire};

impl Controller {
    /// A new user with a new token (returned once).
    pub async fn create_user(
        self: &Arc<Self>,
        req: CreateUserRequest,
    ) -> Result<CreateUserResponse> {
        validate_user_name(&req.name).map_err(|e| refuse(ErrorCode::InvalidName, e.to_string()))?;
        let new =
            tokens::generate(&req.name).map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        self.add_user(req.name, new.hash, false).await?;
        let created_ms = now_ms();
        Ok(CreateUserResponse {
            name: tokens::user_of(&new.token)
                .map(str::to_owned)
                .unwrap_or_default(),
            token: new.token,
            created_ms,
        })
    }

    /// Journals a user with `hash` (USER_EXISTS if there is one, unless `if_absent`: then
    /// nothing happens). Returns whether it was added.
    async fn add_user(
        self: &Arc<Self>,
        name: String,
        hash: String,
        if_absent: bool,
    ) -> Result<bool> {
        let version = self
            .change(move |this, inner| {
                if inner.state.users.contains_key(&name) {
                    if if_absent {
                        return Ok(None);
                    }
                    return Err(refuse(
                        ErrorCode::UserExists,
                        format!(
                            "user {name:?} already exists; delete it first to issue a new token"
                        ),
                    ));
                }
                info!(user = %name, "creating user");
                inner.record(vec![Event::UserCreated(UserRecord {
                    name,
                    token_hash: hash,
                    created_ms: now_ms(),
                })])?;
                Ok(Some(this.bump(&mut inner.live)))
            })
            .await?;
        match version {
            Some(version) => {
                self.wait_for_acks(version).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The bootstrap credential (see the README's "Security"): creates the user of `token`
    /// with it, unless that user exists. Returns whether it was created.
    pub async fn bootstrap_token(self: &Arc<Self>, token: &str) -> Result<bool> {
        let user = tokens::user_of(token)
            .map_err(|e| {
                refuse(
                    ErrorCode::InvalidRequest,
                    format!("WEIR_BOOTSTRAP_TOKEN: {e}"),
                )
            })?
            .to_owned();
        self.add_user(user, tokens::hash(token), true).await
    }

    /// The bootstrap user by name: created with a new token (returned) unless it exists.
    pub async fn bootstrap_user(self: &Arc<Self>, name: &str) -> Result<Option<String>> {
        validate_user_name(name)
            .map_err(|e| refuse(ErrorCode::InvalidName, format!("WEIR_BOOTSTRAP_USER: {e}")))?;
        let new = tokens::generate(name).map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        let created = self.add_user(name.to_owned(), new.hash, true).await?;
        Ok(created.then_some(new.token))
    }

    pub async fn delete_user(
        self: &Arc<Self>,
        req: DeleteUserRequest,
    ) -> Result<DeleteUserResponse> {
        let version = self
            .change(move |this, inner| {
                if !inner.state.users.contains_key(&req.name) {
                    return Err(refuse(
                        ErrorCode::UnknownUser,
                        format!("unknown user {:?} (see `weir user list`)", req.name),
                    ));
                }
                info!(user = %req.name, "deleting user");
                inner.record(vec![Event::UserDeleted { name: req.name }])?;
                Ok(this.bump(&mut inner.live))
            })
            .await?;
        self.wait_for_acks(version).await;
        Ok(DeleteUserResponse {})
    }

    pub async fn list_users(&self, _req: ListUsersRequest) -> Result<ListUsersResponse> {
        let inner = self.lock()?;
        Ok(ListUsersResponse {
            users: inner
                .state
                .users
                .values()
                .map(|u| UserInfo {
                    name: u.name.clone(),
                    created_ms: u.created_ms,
                })
                .collect(),
        })
    }

    pub async fn create_acls(
        self: &Arc<Self>,
        req: CreateAclsRequest,
    ) -> Result<CreateAclsResponse> {
        let entries = req
            .acls
            .iter()
            .map(wire::entry_from_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(ErrorCode::InvalidRequest, e))?;
        if entries.is_empty() {
            return Ok(CreateAclsResponse {});
        }
        let version = self
            .change(move |this, inner| {
                info!(entries = entries.len(), "adding ACL entries");
                inner.record(vec![Event::AclsCreated { entries }])?;
                Ok(this.bump(&mut inner.live))
            })
            .await?;
        self.wait_for_acks(version).await;
        Ok(CreateAclsResponse {})
    }

    pub async fn describe_acls(&self, req: AclFilter) -> Result<DescribeAclsResponse> {
        let filter =
            wire::filter_from_wire(&req).map_err(|e| refuse(ErrorCode::InvalidRequest, e))?;
        let inner = self.lock()?;
        Ok(DescribeAclsResponse {
            acls: inner
                .state
                .acls
                .iter()
                .filter(|e| filter.matches(e))
                .map(wire::entry_to_wire)
                .collect(),
        })
    }

    pub async fn delete_acls(self: &Arc<Self>, req: AclFilter) -> Result<DescribeAclsResponse> {
        let filter =
            wire::filter_from_wire(&req).map_err(|e| refuse(ErrorCode::InvalidRequest, e))?;
        let (version, deleted) = self
            .change(move |this, inner| {
                let entries: Vec<_> = inner
                    .state
                    .acls
                    .iter()
                    .filter(|e| filter.matches(e))
                    .cloned()
                    .collect();
                if entries.is_empty() {
                    return Ok((None, entries));
                }
                info!(entries = entries.len(), "deleting ACL entries");
                inner.record(vec![Event::AclsDeleted {
                    entries: entries.clone(),
                }])?;
                Ok((Some(this.bump(&mut inner.live)), entries))
            })
            .await?;
        if let Some(version) = version {
            self.wait_for_acks(version).await;
        }
        Ok(DescribeAclsResponse {
            acls: deleted.iter().map(wire::entry_to_wire).collect(),
        })
    }
}
