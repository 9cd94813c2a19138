//! Authentication: from what a request presents (a bearer token, the connection's client
//! certificate) to its [`Principal`], under the listener's [`Authentication`] mode.
//!
//! Invariants:
//! - [`authenticate`] is the only place a principal is made from credentials, for gRPC and
//!   the data port alike.
//! - A presented token is always verified, in every mode: a bad, unknown or revoked token is
//!   refused even on a listener that allows anonymous clients (a client that meant to be
//!   someone learns it is not, rather than silently being nobody).
//! - The user table holds only token hashes ([`super::tokens`]); a revoked user is absent.

use std::collections::HashMap;

use serde::Deserialize;

use super::PeerIdentity;
use super::principal::Principal;
use super::tokens::{self, TokenError};

/// What a listener requires of its clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authentication {
    /// Anonymous clients are served (a presented token or certificate still names the
    /// principal). The default.
    #[default]
    None,
    /// A valid token (`authorization: Bearer weir_...`; the data port's Authenticate frame).
    Token,
    /// A verified client certificate (mutual TLS); its mapped principal is the user.
    Mtls,
    /// Either.
    TokenOrMtls,
}

impl Authentication {
    pub fn as_str(self) -> &'static str {
        match self {
            Authentication::None => "none",
            Authentication::Token => "token",
            Authentication::Mtls => "mtls",
            Authentication::TokenOrMtls => "token-or-mtls",
        }
    }
}

impl std::str::FromStr for Authentication {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Authentication::None),
            "token" => Ok(Authentication::Token),
            "mtls" => Ok(Authentication::Mtls),
            "token-or-mtls" => Ok(Authentication::TokenOrMtls),
            _ => Err(format!(
                "{s:?} is not one of none, token, mtls, token-or-mtls"
            )),
        }
    }
}

/// Users and their token hashes, as the metadata has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserTable {
    hashes: HashMap<String, String>,
}

impl UserTable {
    pub fn new(users: impl IntoIterator<Item = (String, String)>) -> UserTable {
        UserTable {
            hashes: users.into_iter().collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.hashes.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The user `token` belongs to, if it is theirs.
    pub fn verify(&self, token: &str) -> Result<Principal, Unauthenticated> {
        let user = tokens::user_of(token).map_err(Unauthenticated::BadToken)?;
        match self.hashes.get(user) {
            Some(stored) if tokens::verify(token, stored) => Ok(Principal::User(user.to_owned())),
            Some(_) => Err(Unauthenticated::WrongSecret(user.to_owned())),
            None => Err(Unauthenticated::UnknownUser(user.to_owned())),
        }
    }
}

/// Why a request has no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error(
        "this listener requires {}; pass a token with --token or WEIR_TOKEN (create one with `weir user create NAME`)",
        describe(*.0)
    )]
    Missing(Authentication),
    #[error("{0}")]
    BadToken(TokenError),
    #[error(
        "no user {0:?} exists (it may have been deleted): ask an administrator for a new token"
    )]
    UnknownUser(String),
    #[error(
        "the token for user {0:?} is not valid (revoked or mistyped): ask an administrator for a new token"
    )]
    WrongSecret(String),
    #[error("the client certificate's principal {0:?} is not a valid user name")]
    BadCertificatePrincipal(String),
}

fn describe(mode: Authentication) -> &'static str {
    match mode {
        Authentication::None => "nothing",
        Authentication::Token => "a token",
        Authentication::Mtls => "a client certificate (mutual TLS)",
        Authentication::TokenOrMtls => "a token or a client certificate (mutual TLS)",
    }
}

fn certificate(peer: &PeerIdentity) -> Option<Result<Principal, Unauthenticated>> {
    peer.certificate_principal.as_deref().map(|name| {
        Principal::user(name).map_err(|_| Unauthenticated::BadCertificatePrincipal(name.to_owned()))
    })
}

/// The principal of a request (see the module docs): `token` is what it presented, `peer` its
/// connection.
pub fn authenticate(
    mode: Authentication,
    peer: &PeerIdentity,
    token: Option<&str>,
    users: &UserTable,
) -> Result<Principal, Unauthenticated> {
    if mode == Authentication::Mtls {
        return certificate(peer).unwrap_or(Err(Unauthenticated::Missing(mode)));
    }
    if let Some(token) = token {
        return users.verify(token);
    }
    match (mode, certificate(peer)) {
        (_, Some(from_cert)) => from_cert,
        (Authentication::None, None) => Ok(Principal::Anonymous),
        (mode, None) => Err(Unauthenticated::Missing(mode)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(cert: Option<&str>) -> PeerIdentity {
        PeerIdentity {
            remote_addr: None,
            certificate_principal: cert.map(str::to_owned),
        }
    }

    #[test]
    fn every_mode_resolves_as_documented() {
        let alice = tokens::generate("alice").unwrap();
        let users = UserTable::new([("alice".to_owned(), alice.hash.clone())]);
        let tok = Some(alice.token.as_str());
        let a = Principal::User("alice".into());
        let c = Principal::User("cert-user".into());
        use Authentication::*;
        // (mode, cert, token) -> outcome
        assert_eq!(
            authenticate(None, &peer(Option::None), Option::None, &users),
            Ok(Principal::Anonymous)
        );
        assert_eq!(
            authenticate(None, &peer(Option::None), tok, &users),
            Ok(a.clone())
        );
        assert_eq!(
            authenticate(None, &peer(Some("cert-user")), Option::None, &users),
            Ok(c.clone())
        );
        assert_eq!(
            authenticate(Token, &peer(Option::None), tok, &users),
            Ok(a.clone())
        );
        assert_eq!(
            authenticate(Token, &peer(Option::None), Option::None, &users),
            Err(Unauthenticated::Missing(Token))
        );
        assert_eq!(
            authenticate(Mtls, &peer(Some("cert-user")), tok, &users),
            Ok(c.clone())
        );
        assert_eq!(
            authenticate(Mtls, &peer(Option::None), tok, &users),
            Err(Unauthenticated::Missing(Mtls))
        );
        assert_eq!(
            authenticate(Mtls, &peer(Some("CN=x y")), Option::None, &users),
            Err(Unauthenticated::BadCertificatePrincipal("CN=x y".into()))
        );
        assert_eq!(
            authenticate(TokenOrMtls, &peer(Some("cert-user")), Option::None, &users),
            Ok(c)
        );
        assert_eq!(
            authenticate(TokenOrMtls, &peer(Option::None), tok, &users),
            Ok(a)
        );
        assert_eq!(
            authenticate(TokenOrMtls, &peer(Option::None), Option::None, &users),
            Err(Unauthenticated::Missing(TokenOrMtls))
        );
    }

    #[test]
    fn bad_unknown_and_revoked_tokens_are_refused_in_every_mode() {
        let alice = tokens::generate("alice").unwrap();
        let users = UserTable::new([("alice".to_owned(), alice.hash.clone())]);
        for mode in [
            Authentication::None,
            Authentication::Token,
            Authentication::TokenOrMtls,
        ] {
            assert!(matches!(
                authenticate(mode, &peer(None), Some("garbage"), &users),
                Err(Unauthenticated::BadToken(_))
            ));
            let forged = format!("weir_alice_{}", "0".repeat(64));
            assert_eq!(
                authenticate(mode, &peer(None), Some(&forged), &users),
                Err(Unauthenticated::WrongSecret("alice".into()))
            );
            assert_eq!(
                authenticate(mode, &peer(None), Some(&alice.token), &UserTable::default()),
                Err(Unauthenticated::UnknownUser("alice".into())),
                "revoked"
            );
        }
    }
}
