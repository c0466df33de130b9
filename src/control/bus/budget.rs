//! What one client may send on the bus: envelopes and bytes per second, each a governor bucket. A
//! frame is charged for every envelope in it (not once per frame, which let one frame of 4,000
//! `BROADCAST`s through) before any of them is acted on; a client over its budget is the one
//! closed.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;

/// Envelopes per second, sustained; bursts up to twice that.
pub const ENVELOPES_PER_SECOND: u32 = 200;
/// Frame bytes per second, sustained; bursts up to four times that. Odoo's largest frames (device
/// capabilities, a peer's SDP in a broadcast) are a few KiB to tens of KiB.
pub const BYTES_PER_SECOND: u32 = 256 * 1024;

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct SendBudget<C: Clock = DefaultClock> {
    envelopes: Bucket<C>,
    bytes: Bucket<C>,
}

impl SendBudget {
    pub fn new() -> SendBudget {
        SendBudget::with_clock(DefaultClock::default())
    }
}

impl<C: Clock + Clone> SendBudget<C> {
    fn with_clock(clock: C) -> SendBudget<C> {
        let quota = |per_second: u32, burst: u32| {
            let nonzero = |n: u32| NonZeroU32::new(n).expect("the budget's rates are constants above 0");
            Quota::per_second(nonzero(per_second)).allow_burst(nonzero(burst))
        };
        SendBudget {
            envelopes: RateLimiter::direct_with_clock(
                quota(ENVELOPES_PER_SECOND, 2 * ENVELOPES_PER_SECOND),
                clock.clone(),
            ),
            bytes: RateLimiter::direct_with_clock(quota(BYTES_PER_SECOND, 4 * BYTES_PER_SECOND), clock),
        }
    }

    /// Charges a frame; `false` when the client cannot afford it. The two buckets are charged one
    /// after the other, so a frame refused for its bytes has spent its envelopes: harmless, as a
    /// refused client is closed.
    pub fn charge(&self, envelopes: usize, bytes: usize) -> bool {
        let cells = |n: usize| NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX));
        // A frame with no envelope still costs one: an empty array is a message too.
        let envelopes = cells(envelopes).unwrap_or(NonZeroU32::MIN);
        affords(&self.envelopes, envelopes) && cells(bytes).is_none_or(|bytes| affords(&self.bytes, bytes))
    }
}

/// Takes `n` cells if the bucket has them; more than its burst never fits.
fn affords<C: Clock>(bucket: &Bucket<C>, n: NonZeroU32) -> bool {
    matches!(bucket.check_n(n), Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    #[test]
    fn charges_every_envelope_and_every_byte() {
        let clock = FakeRelativeClock::default();
        let budget = SendBudget::with_clock(clock.clone());
        assert!(!budget.charge(4_000, 100), "one frame of 4,000 envelopes");
        assert!(budget.charge(400, 100), "the refused frame cost nothing");
        assert!(!budget.charge(1, 10));
        assert!(!budget.charge(0, 10), "an empty frame costs an envelope");
        clock.advance(Duration::from_millis(10));
        assert!(budget.charge(2, 10), "200/s refills 2 in 10 ms");

        let clock = FakeRelativeClock::default();
        let budget = SendBudget::with_clock(clock.clone());
        assert!(budget.charge(1, 1 << 20));
        assert!(!budget.charge(1, 1), "1 MiB burst spent");
        clock.advance(Duration::from_secs(1));
        assert!(budget.charge(1, 256 << 10));
        // Not 1 byte: governor counts time in whole nanoseconds, so 256 KiB/s refills a few dozen
        // bytes a second more than that.
        assert!(!budget.charge(1, 1 << 10));
    }
}
