//! The one backoff rule of the client: the wait before attempt `n` (1-based) after a failure is
//! `base * 2^(n-1)`, capped at `max`. Producer retries and consumer reconnects both use it.

use std::time::Duration;

/// The wait before attempt `attempt` (1-based).
pub(crate) fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<_> = (1..=6)
            .map(|n| exponential(base, max, n).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(exponential(base, max, u32::MAX), max, "no overflow");
    }
}
