//! Bearer tokens: how a user's secret is made, written, stored and checked.
//!
//! A token is `weir_<user>_<secret>`, the secret 64 hex digits of a 256-bit random value from
//! the operating system (getrandom). The user name in the token lets the broker find the one
//! stored hash to compare with (no scan, no oracle over other users).
//!
//! Stored hashed: the controller journals only `sha256(token)` in hex, never the token.
//! SHA-256 rather than argon2id, deliberately: a slow password hash protects *guessable*
//! secrets (human passwords) from an offline search; these secrets are 256 random bits, so an
//! offline search of a leaked hash is 2^256 SHA-256 evaluations whatever the hash's cost, and a
//! fast hash lets every broker verify the token of every gRPC request (a few hundred ns)
//! with no cache of verified tokens to keep coherent with revocation. Revoking a user removes
//! its hash from the metadata; the next request with its token fails.
//!
//! Invariants:
//! - A token longer than [`MAX_TOKEN_LEN`] is refused before it is parsed or hashed (the data
//!   port reads no more than that).
//! - Comparison of digests is constant-time.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::principal::{InvalidPrincipal, MAX_USER_NAME_LEN, validate_user_name};

/// The token prefix.
pub const PREFIX: &str = "weir_";
const SECRET_HEX_LEN: usize = 64;
/// The longest token that can be valid: prefix, name, `_`, secret.
pub const MAX_TOKEN_LEN: usize = PREFIX.len() + MAX_USER_NAME_LEN + 1 + SECRET_HEX_LEN;

/// Why a presented token is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is {0} bytes; a weir token is at most {MAX_TOKEN_LEN}")]
    TooLong(usize),
    #[error(
        "the token is not of the form weir_<user>_<secret> (create one with `weir user create NAME`)"
    )]
    Malformed,
    #[error("the token's user name is invalid: {0}")]
    BadUser(InvalidPrincipal),
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// A new token and what is stored of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Shown to the creator once.
    pub token: String,
    /// `sha256(token)` in hex: what the controller keeps.
    pub hash: String,
}

/// A new random token for `user`.
pub fn generate(user: &str) -> Result<NewToken, TokenError> {
    validate_user_name(user).map_err(TokenError::BadUser)?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| TokenError::Random(e.to_string()))?;
    let token = format!("{PREFIX}{user}_{}", hex(&secret));
    let hash = hash(&token);
    Ok(NewToken { token, hash })
}

/// The stored form of `token`.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The user a token names (checked for form only: verify it with [`verify`]).
pub fn user_of(token: &str) -> Result<&str, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong(token.len()));
    }
    let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (user, secret) = rest.rsplit_once('_').ok_or(TokenError::Malformed)?;
    if secret.len() != SECRET_HEX_LEN || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed);
    }
    validate_user_name(user).map_err(TokenError::BadUser)?;
    Ok(user)
}

/// Whether `token` hashes to `stored` (constant-time in the digest).
pub fn verify(token: &str, stored: &str) -> bool {
    let actual = hash(token);
    actual.len() == stored.len()
        && actual
            .bytes()
            .zip(stored.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_names_its_user_and_verifies_against_its_hash() {
        let t = generate("svc_orders").unwrap();
        assert!(t.token.starts_with("weir_svc_orders_"));
        assert_eq!(t.token.len(), "weir_svc_orders_".len() + 64);
        assert_eq!(user_of(&t.token), Ok("svc_orders"));
        assert!(verify(&t.token, &t.hash));
        assert!(!t.hash.contains(&t.token[16..]), "the secret is not stored");
        let other = generate("svc_orders").unwrap();
        assert_ne!(other.token, t.token);
        assert!(!verify(&other.token, &t.hash));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(user_of("nope"), Err(TokenError::Malformed));
        assert_eq!(user_of("weir_alice_xyz"), Err(TokenError::Malformed));
        let long = format!("weir_alice_{}", "a".repeat(1 << 20));
        assert_eq!(user_of(&long), Err(TokenError::TooLong(long.len())));
        assert!(matches!(
            user_of(&format!("weir_a b_{}", "0".repeat(64))),
            Err(TokenError::BadUser(_))
        ));
    }
}
