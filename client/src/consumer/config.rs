//! [`ConsumerConfig`]: how a consumer fetches.

use std::time::Duration;

pub use crate::transport::Transport;

/// How a [`Consumer`](super::Consumer) fetches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Data port or gRPC. Default [`Transport::Auto`]. Both return the same bytes.
    pub transport: Transport,
    /// `true` (the default): streams stay open and yield new records as they are appended.
    /// `false`: each partition stops at its high watermark as of when the stream started, and
    /// the stream ends once every partition has.
    pub follow: bool,
    /// Soft limit of one fetch response (whole batches are never split). Default 4 MiB; the
    /// broker caps it at 16 MiB.
    pub max_bytes: u32,
    /// While following and no data arrives, the broker sends an empty keep-alive response this
    /// often. Default 30 s.
    pub keep_alive: Duration,
    /// Wait before reconnecting a fetch stream that broke, doubling per failure up to
    /// `reconnect_backoff_max`. Default 100 ms.
    pub reconnect_backoff: Duration,
    /// The longest wait between reconnects. Default 5 s. A consumer keeps reconnecting (and
    /// logging a warning per failure) until the broker is back or the stream is dropped.
    pub reconnect_backoff_max: Duration,
    /// Fetch responses decoded and waiting to be read, across all partitions: with `max_bytes`,
    /// the consumer's memory bound. Default 8.
    pub prefetch: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            transport: Transport::Auto,
            follow: true,
            max_bytes: 4 << 20,
            keep_alive: Duration::from_secs(30),
            reconnect_backoff: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            prefetch: 8,
        }
    }
}

impl ConsumerConfig {
    /// The wait before reconnect number `failures` (1-based).
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        crate::backoff::exponential(self.reconnect_backoff, self.reconnect_backoff_max, failures)
    }
}
