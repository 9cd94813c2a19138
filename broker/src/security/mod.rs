//! Who is on the other end of a connection, and what they may do: TLS on the listeners, the
//! principal a request is made by, and the ACLs that decide what that principal may do.
//!
//! This module is the seam between the transport (which learns the peer's address and, under
//! mutual TLS, its certificate) and the request handlers (which authenticate a token and
//! authorize an operation). The transport fills in a [`PeerIdentity`] once per connection; every
//! gRPC request carries it in its extensions and every data-port connection holds it.

pub mod acl;
pub mod authn;
pub mod authorizer;
pub mod config;
pub mod guard;
pub mod principal;
pub mod tls;
pub mod tokens;
pub mod wire;

use std::net::SocketAddr;

/// What the transport knows of a connection's peer, fixed when the connection is accepted.
///
/// It is the gRPC listeners' connect info (`request.extensions().get::<PeerIdentity>()`), so
/// handlers see it on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's socket address (the in-flight limits are per peer).
    pub remote_addr: Option<SocketAddr>,
    /// The principal mapped from a verified client certificate, under mutual TLS; `None` on a
    /// plaintext connection or one without a client certificate.
    pub certificate_principal: Option<String>,
}
