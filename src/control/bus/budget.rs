//! What one client may send on the bus: envelopes and bytes per second, each a token bucket. A
//! frame is charged for every envelope in it (not once per frame, which let one frame of 4,000
//! `BROADCAST`s through) before any of them is acted on; a client over its budget is the one
//! closed.

use std::time::Instant;

/// Envelopes per second, sustained; bursts up to twice that.
pub const ENVELOPES_PER_SECOND: f64 = 200.0;
/// Frame bytes per second, sustained; bursts up to four times that. Odoo's largest frames (device
/// capabilities, a peer's SDP in a broadcast) are a few KiB to tens of KiB.
pub const BYTES_PER_SECOND: f64 = 256.0 * 1024.0;

#[derive(Debug)]
pub struct SendBudget {
    envelopes: f64,
    bytes: f64,
    last: Instant,
}

impl SendBudget {
    pub fn new(now: Instant) -> SendBudget {
        SendBudget { envelopes: 2.0 * ENVELOPES_PER_SECOND, bytes: 4.0 * BYTES_PER_SECOND, last: now }
    }

    /// Charges a frame; `false` (nothing charged) when the client cannot afford it.
    pub fn charge(&mut self, now: Instant, envelopes: usize, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.envelopes = (self.envelopes + elapsed * ENVELOPES_PER_SECOND).min(2.0 * ENVELOPES_PER_SECOND);
        self.bytes = (self.bytes + elapsed * BYTES_PER_SECOND).min(4.0 * BYTES_PER_SECOND);
        // A frame with no envelope still costs one: an empty array is a message too.
        let envelopes = envelopes.max(1) as f64;
        let bytes = bytes as f64;
        if envelopes > self.envelopes || bytes > self.bytes {
            return false;
        }
        self.envelopes -= envelopes;
        self.bytes -= bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn charges_every_envelope_and_every_byte() {
        let t0 = Instant::now();
        let mut budget = SendBudget::new(t0);
        assert!(!budget.charge(t0, 4_000, 100), "one frame of 4,000 envelopes");
        assert!(budget.charge(t0, 400, 100), "the refused frame cost nothing");
        assert!(!budget.charge(t0, 1, 10));
        assert!(budget.charge(t0 + Duration::from_millis(10), 2, 10), "200/s refills 2 in 10 ms");

        let mut budget = SendBudget::new(t0);
        assert!(budget.charge(t0, 1, 1 << 20));
        assert!(!budget.charge(t0, 1, 1), "1 MiB burst spent");
        assert!(budget.charge(t0 + Duration::from_secs(1), 1, 256 << 10));
        assert!(!budget.charge(t0 + Duration::from_secs(1), 1, 1));
    }
}
