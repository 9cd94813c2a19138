//! The data port's Authenticate request: the first request of a connection to a listener that
//! requires a token (segments-format.md §9, "Authenticate").
//!
//! | offset | size | type | field |
//! |---|---|---|---|
//! | 0 | 4 | u32 | length: `4 + token_len` |
//! | 4 | 1 | u8 | version `1` |
//! | 5 | 1 | u8 | flags `0x40` |
//! | 6 | 2 | u16 | token_len, 1..=[`MAX_TOKEN_LEN`] |
//! | 8 | token_len | bytes | the token, ASCII |
//!
//! The broker answers with a response header of kind `End` (length 0, offsets 0): the
//! connection is the token's user's from then on; or an `Error` frame (UNAUTHENTICATED, or
//! INVALID_REQUEST for a malformed request) after which it closes the connection.
//!
//! Invariant: a length over [`MAX_BODY_LEN`] is refused from the length prefix alone, before
//! any body is read or allocated.

use super::{FrameError, VERSION};

/// Request flag (bit 6): this request is an Authenticate request.
pub const FLAG_AUTHENTICATE: u8 = 0x40;
/// The longest token the request may carry (a weir token is at most 134 bytes).
pub const MAX_TOKEN_LEN: usize = 512;
/// The largest body (after the length prefix) an Authenticate request may have.
pub const MAX_BODY_LEN: usize = 4 + MAX_TOKEN_LEN;

/// An Authenticate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub token: String,
}

impl Authenticate {
    /// The whole request: the length prefix, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let token = self.token.as_bytes();
        let body_len = 4 + token.len();
        let mut out = Vec::with_capacity(4 + body_len);
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
        out.push(VERSION);
        out.push(FLAG_AUTHENTICATE);
        out.extend_from_slice(&(token.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(token);
        out
    }

    /// Checks a length prefix before the body is read.
    pub fn check_len(body_len: u32) -> Result<usize, FrameError> {
        let len = body_len as usize;
        if len > MAX_BODY_LEN {
            return Err(FrameError::TooLong(len));
        }
        if len < 5 {
            return Err(FrameError::TooShort { len, needed: 5 });
        }
        Ok(len)
    }

    /// Decodes a body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        Self::check_len(u32::try_from(body.len()).unwrap_or(u32::MAX))?;
        if body[0] != VERSION {
            return Err(FrameError::Version(body[0]));
        }
        if body[1] != FLAG_AUTHENTICATE {
            return Err(FrameError::Flags(body[1]));
        }
        let token_len = u16::from_be_bytes([body[2], body[3]]) as usize;
        let needed = 4 + token_len;
        if body.len() < needed {
            return Err(FrameError::TooShort {
                len: body.len(),
                needed,
            });
        }
        if body.len() > needed {
            return Err(FrameError::Trailing(body.len() - needed));
        }
        let token = std::str::from_utf8(&body[4..])
            .map_err(|_| FrameError::TokenNotUtf8)?
            .to_owned();
        Ok(Authenticate { token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_lengths() {
        let a = Authenticate {
            token: "weir_alice_00".into(),
        };
        let bytes = a.encode();
        assert_eq!(&bytes[..4], &(4 + 13u32).to_be_bytes());
        assert_eq!(Authenticate::decode(&bytes[4..]), Ok(a));
        assert_eq!(
            Authenticate::check_len(1 << 20),
            Err(FrameError::TooLong(1 << 20))
        );
        let mut bad = bytes[4..].to_vec();
        bad.push(0);
        assert_eq!(Authenticate::decode(&bad), Err(FrameError::Trailing(1)));
    }
}
