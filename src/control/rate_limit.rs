//! Per-address token buckets for `/v1/channel` and WebSocket upgrades.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets idle this long are forgotten.
const IDLE: Duration = Duration::from_secs(120);

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second == 0` disables limiting.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter { per_second: per_second as f64, burst: burst.max(1) as f64, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `address`; `false` when it has none left.
    pub fn allow(&self, address: &str, now: Instant) -> bool {
        if self.per_second == 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock().expect("rate limiter lock is never poisoned");
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, last)| now.saturating_duration_since(*last) < IDLE);
        }
        let (tokens, last) = buckets.entry(address.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow("a", t0)));
        assert!(!limiter.allow("a", t0));
        assert!(limiter.allow("b", t0), "addresses have their own buckets");
        assert!(limiter.allow("a", t0 + Duration::from_millis(100)));
        assert!(!limiter.allow("a", t0 + Duration::from_millis(100)));
        assert!(RateLimiter::new(0, 1).allow("x", t0));
    }
}
