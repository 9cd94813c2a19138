//! [`Transport`]: which wire a producer sends and a consumer fetches over, the one choice both
//! share.

/// Which wire a producer sends batches over, and a consumer fetches them over. Both wires carry
/// the same bytes with the same meaning (one produce path and one fetch path in the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The data port when the broker advertises one, gRPC otherwise. The default. Fetches
    /// come with sendfile; batches go as length-prefixed frames, without HTTP/2 framing or an
    /// encode copy.
    #[default]
    Auto,
    /// Always gRPC (`ProduceStream`, `Fetch`).
    Grpc,
    /// Always the data port; a partition whose broker advertises none fails (a consumer's
    /// assignment, a producer's batch).
    DataPort,
}
