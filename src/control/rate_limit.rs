//! Per-caller token buckets for `/v1/channel`, the demo's join and WebSocket upgrades: governor's
//! keyed limiter (GCRA, which admits what a token bucket of the same rate and burst admits).

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often callers whose buckets have refilled are forgotten. A refilled bucket is what a new
/// caller gets, so forgetting it changes no answer; it only bounds the memory a caller spraying
/// addresses can take to those it used within about this long.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The caller's address. A caller a proxy names without one (`unknown`, an obfuscated name) is
/// `None`: such callers cannot be told apart, so they share one bucket.
type Caller = Option<IpAddr>;

type Buckets<C> = governor::RateLimiter<Caller, DashMapStateStore<Caller>, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct RateLimiter<C: Clock = DefaultClock> {
    /// `None` when limiting is off.
    buckets: Option<Buckets<C>>,
    created: Instant,
    /// When the next sweep is due, in milliseconds after `created`.
    next_sweep: AtomicU64,
}

impl RateLimiter {
    /// `per_second == 0` disables limiting.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock> RateLimiter<C> {
    fn with_clock(per_second: u32, burst: u32, clock: C) -> RateLimiter<C> {
        let buckets = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            governor::RateLimiter::dashmap_with_clock(Quota::per_second(rate).allow_burst(burst), clock)
        });
        RateLimiter { buckets, created: Instant::now(), next_sweep: AtomicU64::new(SWEEP_EVERY.as_millis() as u64) }
    }

    /// Takes one token for `caller` (as `ProxyTrust::remote_address` names it); `false` when it
    /// has none left. The buckets keep governor's time; `now` only paces the sweep of idle callers.
    pub fn allow(&self, caller: &str, now: Instant) -> bool {
        let Some(buckets) = &self.buckets else { return true };
        self.sweep_if_due(buckets, now);
        buckets.check_key(&caller.parse().ok()).is_ok()
    }

    fn sweep_if_due(&self, buckets: &Buckets<C>, now: Instant) {
        let elapsed = now.saturating_duration_since(self.created).as_millis() as u64;
        let due = self.next_sweep.load(Ordering::Relaxed);
        if elapsed < due {
            return;
        }
        let next = elapsed + SWEEP_EVERY.as_millis() as u64;
        // Of the requests that find the sweep due, only the one that moves the due time sweeps.
        if self.next_sweep.compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn burst_then_refill_per_address() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(10, 3, clock.clone());
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow("192.0.2.1", t0)));
        assert!(!limiter.allow("192.0.2.1", t0));
        assert!(limiter.allow("192.0.2.2", t0), "addresses have their own buckets");
        assert!(limiter.allow("2001:db8::1", t0), "IPv6 addresses too");
        clock.advance(Duration::from_millis(100));
        assert!(limiter.allow("192.0.2.1", t0), "10/s refills one token in 100 ms");
        assert!(!limiter.allow("192.0.2.1", t0));
        assert!(RateLimiter::new(0, 1).allow("192.0.2.1", t0), "0/s is off");
    }

    #[test]
    fn callers_without_an_address_share_one_bucket() {
        let limiter = RateLimiter::with_clock(1, 2, FakeRelativeClock::default());
        let t0 = Instant::now();
        assert!(limiter.allow("unknown", t0));
        assert!(limiter.allow("_hidden", t0));
        assert!(!limiter.allow("unknown", t0));
        assert!(limiter.allow("192.0.2.1", t0));
    }

    #[test]
    fn the_sweep_forgets_refilled_buckets_and_keeps_spent_ones() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(1, 2, clock.clone());
        let buckets = limiter.buckets.as_ref().unwrap();
        let t0 = Instant::now();
        assert!(limiter.allow("192.0.2.1", t0));
        clock.advance(Duration::from_secs(3));
        assert!(limiter.allow("192.0.2.2", t0) && limiter.allow("192.0.2.2", t0));
        assert_eq!(buckets.len(), 2, "no sweep before it is due");

        assert!(limiter.allow("192.0.2.3", t0 + SWEEP_EVERY));
        assert_eq!(buckets.len(), 2, ".1 (refilled) is forgotten; .2 (spent) and .3 are kept");
        assert!(!limiter.allow("192.0.2.2", t0 + SWEEP_EVERY), "the spent bucket is still spent");
        assert!(limiter.allow("192.0.2.1", t0 + SWEEP_EVERY) && limiter.allow("192.0.2.1", t0 + SWEEP_EVERY));
        assert!(!limiter.allow("192.0.2.1", t0 + SWEEP_EVERY), "a forgotten caller starts with a full burst");
    }
}
