//! Who a request is made by: [`Principal`], anonymous or a named user.
//!
//! Invariants:
//! - A user name obeys the topic name rule (ASCII letters, digits, `.`, `_`, `-`; not `.` or
//!   `..`), but at most [`MAX_USER_NAME_LEN`] characters, so it fits in a token
//!   (`weir_<user>_<secret>`, see [`super::tokens`]) and in a log line.
//! - The written form is Kafka's: `User:alice`; the anonymous principal is `User:ANONYMOUS`,
//!   a name no user can be created with (it is reserved).

use std::fmt;

/// The longest user name.
pub const MAX_USER_NAME_LEN: usize = 64;

/// The name the anonymous principal is written with (reserved: no user may have it).
pub const ANONYMOUS: &str = "ANONYMOUS";

/// Who a request is made by.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum Principal {
    /// No credentials were presented (allowed only on a listener with `authentication =
    /// "none"`).
    Anonymous,
    /// A user of the controller's metadata (a token), or the principal of a client certificate.
    User(String),
}

/// Why a user name or a written principal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPrincipal {
    #[error("user name is empty")]
    Empty,
    #[error("user name is {0} characters; the limit is {MAX_USER_NAME_LEN}")]
    TooLong(usize),
    #[error("user name may not be '.' or '..'")]
    Dots,
    #[error("user name contains {0:?}; allowed are ASCII letters, digits, '.', '_' and '-'")]
    BadCharacter(char),
    #[error("user name {ANONYMOUS:?} is reserved for unauthenticated clients")]
    Reserved,
    #[error("principal {0:?} is not of the form User:NAME")]
    NotAUser(String),
}

/// Checks a user name (see the module docs).
pub fn validate_user_name(name: &str) -> Result<(), InvalidPrincipal> {
    if name.is_empty() {
        return Err(InvalidPrincipal::Empty);
    }
    if name.len() > MAX_USER_NAME_LEN {
        return Err(InvalidPrincipal::TooLong(name.chars().count()));
    }
    if name == "." || name == ".." {
        return Err(InvalidPrincipal::Dots);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvalidPrincipal::BadCharacter(c));
    }
    if name == ANONYMOUS {
        return Err(InvalidPrincipal::Reserved);
    }
    Ok(())
}

impl Principal {
    /// A named user, its name checked.
    pub fn user(name: &str) -> Result<Principal, InvalidPrincipal> {
        validate_user_name(name)?;
        Ok(Principal::User(name.to_owned()))
    }

    /// Parses the written form: `User:NAME` or `User:ANONYMOUS` (a bare `NAME` is taken as a
    /// user too).
    pub fn parse(s: &str) -> Result<Principal, InvalidPrincipal> {
        let name = match s.split_once(':') {
            Some(("User", name)) => name,
            Some(_) => return Err(InvalidPrincipal::NotAUser(s.to_owned())),
            None => s,
        };
        if name == ANONYMOUS {
            return Ok(Principal::Anonymous);
        }
        Principal::user(name)
    }

    /// The user's name; `None` for the anonymous principal.
    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User(name) => Some(name),
        }
    }
}

impl TryFrom<String> for Principal {
    type Error = InvalidPrincipal;
    fn try_from(s: String) -> Result<Self, InvalidPrincipal> {
        Principal::parse(&s)
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.to_string()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => write!(f, "User:{ANONYMOUS}"),
            Principal::User(name) => write!(f, "User:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_form_round_trips() {
        for s in ["User:alice", "User:ANONYMOUS", "User:svc.orders-1_a"] {
            assert_eq!(Principal::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Principal::parse("bob").unwrap(),
            Principal::User("bob".into())
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(Principal::parse("User:"), Err(InvalidPrincipal::Empty));
        assert_eq!(Principal::parse("User:.."), Err(InvalidPrincipal::Dots));
        assert_eq!(
            Principal::parse("User:a b"),
            Err(InvalidPrincipal::BadCharacter(' '))
        );
        assert!(matches!(
            Principal::parse("Group:x"),
            Err(InvalidPrincipal::NotAUser(_))
        ));
        assert_eq!(
            Principal::user(&"a".repeat(65)),
            Err(InvalidPrincipal::TooLong(65))
        );
        assert_eq!(Principal::user(ANONYMOUS), Err(InvalidPrincipal::Reserved));
    }
}
