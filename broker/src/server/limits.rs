//! Budgets of request bytes held in memory: one per connection and one for the whole broker.
//!
//! A produce request's bytes count from the moment it is taken off the stream until its
//! response is sent (for acks=durable that includes the wait for the sync). When a budget is
//! spent, the next request waits: a produce stream is simply not read further, which pushes back
//! on the client through HTTP/2 flow control instead of growing the broker's memory or failing
//! requests. One connection cannot take the whole broker's budget.
//!
//! Connections are told apart by their remote address. A connection's budget lives as long as
//! something holds one of its permits, so an idle connection costs nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes in memory, per connection and broker-wide.
pub struct InFlightLimits {
    per_connection: u32,
    global_limit: u32,
    global: Arc<Semaphore>,
    connections: Mutex<HashMap<SocketAddr, Weak<Semaphore>>>,
}

/// Bytes counted against both budgets until dropped.
pub struct InFlight {
    _global: OwnedSemaphorePermit,
    _connection: Option<OwnedSemaphorePermit>,
}

impl InFlightLimits {
    pub fn new(per_connection_bytes: u64, global_bytes: u64) -> Self {
        let clamp = |n: u64| n.clamp(1, u64::from(u32::MAX >> 3)) as u32;
        let global_limit = clamp(global_bytes);
        InFlightLimits {
            per_connection: clamp(per_connection_bytes).min(global_limit),
            global_limit,
            global: Arc::new(Semaphore::new(global_limit as usize)),
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `bytes` fit in the connection's and the broker's budgets. A request larger
    /// than a whole budget takes all of it (it was already admitted by the size limit).
    pub async fn acquire(&self, peer: Option<SocketAddr>, bytes: usize) -> InFlight {
        let connection = match peer {
            Some(peer) => {
                let semaphore = self.connection_budget(peer);
                let n = (bytes as u64).clamp(1, u64::from(self.per_connection)) as u32;
                // The semaphores are never closed, so acquiring cannot fail.
                semaphore.acquire_many_owned(n).await.ok()
            }
            None => None,
        };
        let n = (bytes as u64).clamp(1, u64::from(self.global_limit)) as u32;
        let global = Arc::clone(&self.global)
            .acquire_many_owned(n)
            .await
            .expect("the global in-flight semaphore is never closed");
        InFlight {
            _global: global,
            _connection: connection,
        }
    }

    fn connection_budget(&self, peer: SocketAddr) -> Arc<Semaphore> {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = connections.get(&peer).and_then(Weak::upgrade) {
            return live;
        }
        if connections.len() >= 1024 {
            connections.retain(|_, budget| budget.strong_count() > 0);
        }
        let budget = Arc::new(Semaphore::new(self.per_connection as usize));
        connections.insert(peer, Arc::downgrade(&budget));
        budget
    }

    /// Bytes currently available broker-wide (for tests and metrics).
    pub fn global_available(&self) -> usize {
        self.global.available_permits()
    }

    /// The broker-wide budget.
    pub fn global_limit(&self) -> usize {
        self.global_limit as usize
    }

    /// Bytes counted against the broker-wide budget now.
    pub fn global_in_use(&self) -> usize {
        self.global_limit().saturating_sub(self.global_available())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[tokio::test]
    async fn a_connection_waits_for_its_own_budget_only() {
        let limits = Arc::new(InFlightLimits::new(100, 1000));
        let held = limits.acquire(peer(1), 80).await;
        // The same connection must wait...
        let blocked = tokio::time::timeout(Duration::from_millis(50), limits.acquire(peer(1), 30));
        assert!(blocked.await.is_err());
        // ...another connection must not.
        let other = tokio::time::timeout(Duration::from_millis(50), limits.acquire(peer(2), 30));
        assert!(other.await.is_ok());
        drop(held);
        let after = tokio::time::timeout(Duration::from_millis(50), limits.acquire(peer(1), 30));
        assert!(after.await.is_ok());
        assert_eq!(limits.global_available(), 1000);
    }

    #[tokio::test]
    async fn an_oversized_request_takes_the_whole_budget_instead_of_hanging() {
        let limits = InFlightLimits::new(100, 1000);
        let all = limits.acquire(peer(1), 10_000).await;
        assert_eq!(limits.global_available(), 0);
        drop(all);
        assert_eq!(limits.global_available(), 1000);
    }
}
