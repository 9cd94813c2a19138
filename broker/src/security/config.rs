//! The `[security]` section of the broker's configuration: what each listener requires, whether
//! ACLs are enforced, who bypasses them, and the token this node presents to the controller
//! and to other brokers.
//!
//! Defaults: no authentication on any listener, no authorization, no broker token: a broker
//! started without a `[security]` section behaves as before it existed.

use serde::Deserialize;

use super::authn::Authentication;
use super::tokens;

/// `[security]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// What the internal gRPC listener (`listen`) requires.
    pub authentication: Authentication,
    /// What the external gRPC listener requires; default: `authentication`.
    pub external_authentication: Option<Authentication>,
    /// What the data port requires; default: `authentication`.
    pub data_authentication: Option<Authentication>,
    /// Whether ACLs are enforced (deny by default once on).
    pub authorization: bool,
    /// Users allowed everything, ACLs or not.
    pub super_users: Vec<String>,
    /// The token this node presents to the controller and to the brokers it replicates from
    /// (its user must be a super user). Also `WEIR_BROKER_TOKEN`.
    pub broker_token: Option<String>,
    /// A user the controller creates on start if it does not exist, printing its token once
    /// on stderr (as Redpanda's `RP_BOOTSTRAP_USER`). Usually `WEIR_BOOTSTRAP_USER=admin`.
    pub bootstrap_user: Option<String>,
    /// A whole token (`weir_<user>_<secret>`) whose user the controller creates with it on
    /// start if that user does not exist: for automation that must know the first token.
    /// Usually `WEIR_BOOTSTRAP_TOKEN`.
    pub bootstrap_token: Option<String>,
}

impl SecurityConfig {
    pub fn external(&self) -> Authentication {
        self.external_authentication.unwrap_or(self.authentication)
    }

    pub fn data(&self) -> Authentication {
        self.data_authentication.unwrap_or(self.authentication)
    }

    /// Whether any listener requires credentials.
    pub fn authentication_required(&self) -> bool {
        [self.authentication, self.external(), self.data()]
            .iter()
            .any(|a| *a != Authentication::None)
    }

    /// Checks the combination; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(token) = &self.broker_token {
            let user = tokens::user_of(token).map_err(|e| format!("security.broker_token: {e}"))?;
            if (self.authorization || self.authentication_required())
                && !self.super_users.iter().any(|s| s == user)
            {
                return Err(format!(
                    "security.broker_token is user {user:?}'s, who is not in security.super_users: brokers must be super users to replicate and reach the controller"
                ));
            }
        }
        for name in &self.super_users {
            super::principal::validate_user_name(name)
                .map_err(|e| format!("security.super_users: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    #[test]
    fn the_section_parses_and_defaults_to_off() {
        assert!(!BrokerConfig::default().security.authentication_required());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        let token = format!("weir_broker_{}", "ab".repeat(32));
        std::fs::write(
            &path,
            format!(
                "[security]\nauthentication = \"token\"\ndata_authentication = \"token-or-mtls\"\nauthorization = true\nsuper_users = [\"admin\", \"broker\"]\nbroker_token = \"{token}\"\n"
            ),
        )
        .unwrap();
        let config = BrokerConfig::from_file(&path).unwrap();
        let s = &config.security;
        assert_eq!(s.authentication, Authentication::Token);
        assert_eq!(
            s.external(),
            Authentication::Token,
            "defaults to authentication"
        );
        assert_eq!(s.data(), Authentication::TokenOrMtls);
        assert!(config.log_dir_config().is_ok());
    }

    #[test]
    fn a_broker_token_of_a_user_who_is_not_a_super_user_is_refused() {
        let config = SecurityConfig {
            authentication: Authentication::Token,
            super_users: vec!["admin".into()],
            broker_token: Some(format!("weir_broker_{}", "ab".repeat(32))),
            ..SecurityConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.contains("super_users"), "{err}");
        let bad = SecurityConfig {
            broker_token: Some("nope".into()),
            ..SecurityConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
