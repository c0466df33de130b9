//! The loss-based bound (draft-ietf-rmcat-gcc-02 §6): over a window of reported packets, more
//! than 10% lost lowers the bound by half the loss fraction; under 2% raises it by 8% a second.
//! Unlike the draft's controller, which always bounds the estimate, this one only exists after
//! heavy loss and goes away once it has grown back to the delay-based estimate: random loss of a
//! few percent (wireless) then never holds the estimate down. Between 2% and 10% it creeps up
//! slowly, so that a spurious decrease is not kept for ever on a path with steady loss.
//! Windows hold at least 200 packets, or 20 over a second at low rates: a 5% loss does not
//! reach 10% in such a sample by chance except rarely.

use std::time::{Duration, Instant};

const FULL_WINDOW: u32 = 200;
const MIN_WINDOW: u32 = 20;
const MAX_WINDOW_TIME: Duration = Duration::from_secs(1);
const HIGH_LOSS: f64 = 0.10;
const LOW_LOSS: f64 = 0.02;
const GROWTH_PER_SECOND: f64 = 1.08;
const CREEP_PER_SECOND: f64 = 1.02;
/// Decreases follow one another no faster than this plus the round trip.
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug, Default)]
pub struct LossBound {
    expected: u32,
    lost: u32,
    window_start: Option<Instant>,
    bound: Option<f64>,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl LossBound {
    /// The bound, bit/s, when there is one.
    pub fn bound(&self) -> Option<f64> {
        self.bound
    }

    /// Packets in the current window: (reported, lost).
    #[cfg(test)]
    pub fn window(&self) -> (u32, u32) {
        (self.expected, self.lost)
    }

    /// A probe showed the path carries `bps`: a bound below it is lifted to it (as libwebrtc's
    /// SendSideBandwidthEstimation takes a probe's rate).
    pub fn on_probe(&mut self, bps: f64) {
        if let Some(bound) = self.bound.as_mut() {
            *bound = bound.max(bps);
        }
    }

    /// A packet reported for the first time.
    pub fn on_reported(&mut self, received: bool, now: Instant) {
        self.window_start.get_or_insert(now);
        self.expected += 1;
        if !received {
            self.lost += 1;
        }
    }

    /// A packet reported lost before, received after all.
    pub fn on_late_arrival(&mut self) {
        self.lost = self.lost.saturating_sub(1);
    }

    /// After a feedback: closes the window if it holds enough. `estimate`: the current combined
    /// estimate; `delay_based`: the delay-based one.
    pub fn update(&mut self, now: Instant, estimate: f64, delay_based: f64, rtt: Duration) {
        let Some(start) = self.window_start else { return };
        let enough = self.expected >= FULL_WINDOW
            || (self.expected >= MIN_WINDOW && now.saturating_duration_since(start) >= MAX_WINDOW_TIME);
        if !enough {
            return;
        }
        let fraction = f64::from(self.lost) / f64::from(self.expected);
        let elapsed = now.saturating_duration_since(self.last_update.unwrap_or(start)).min(MAX_WINDOW_TIME * 2);
        self.expected = 0;
        self.lost = 0;
        self.window_start = None;
        self.last_update = Some(now);
        if fraction > HIGH_LOSS {
            let may = self.last_decrease.is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_INTERVAL + rtt);
            if may {
                let base = self.bound.map_or(estimate, |b| b.min(estimate));
                self.bound = Some(base * (1.0 - fraction / 2.0));
                self.last_decrease = Some(now);
            }
            return;
        }
        let Some(bound) = self.bound else { return };
        let rate = if fraction < LOW_LOSS { GROWTH_PER_SECOND } else { CREEP_PER_SECOND };
        let grown = bound * rate.powf(elapsed.as_secs_f64()) + 1_000.0;
        self.bound = (grown < delay_based).then_some(grown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(l: &mut LossBound, now: Instant, packets: u32, lost: u32, estimate: f64) {
        for i in 0..packets {
            l.on_reported(i >= lost, now);
        }
        l.update(now, estimate, estimate, Duration::from_millis(50));
    }

    #[test]
    fn heavy_loss_bounds_the_estimate_until_it_grows_back() {
        let t0 = Instant::now();
        let mut l = LossBound::default();
        window(&mut l, t0, 200, 40, 1_000_000.0);
        assert_eq!(l.bound(), Some(900_000.0));
        // Clean windows: +8% a second until the delay-based estimate is reached.
        window(&mut l, t0 + Duration::from_secs(1), 200, 0, 1_000_000.0);
        assert!(l.bound().is_some_and(|b| (970_000.0..975_000.0).contains(&b)), "{:?}", l.bound());
        window(&mut l, t0 + Duration::from_secs(2), 200, 0, 1_000_000.0);
        assert_eq!(l.bound(), None);
    }

    #[test]
    fn a_probe_lifts_the_bound() {
        let t0 = Instant::now();
        let mut l = LossBound::default();
        l.on_probe(2_000_000.0);
        assert_eq!(l.bound(), None, "no bound, nothing to lift");
        window(&mut l, t0, 200, 40, 1_000_000.0);
        l.on_probe(800_000.0);
        assert_eq!(l.bound(), Some(900_000.0));
        l.on_probe(1_500_000.0);
        assert_eq!(l.bound(), Some(1_500_000.0));
    }

    #[test]
    fn moderate_loss_never_starts_a_bound() {
        let t0 = Instant::now();
        let mut l = LossBound::default();
        for i in 0..50 {
            window(&mut l, t0 + Duration::from_secs(i), 200, 16, 1_000_000.0);
        }
        assert_eq!(l.bound(), None);
    }

    #[test]
    fn small_windows_wait_for_a_second_and_late_arrivals_count_as_received() {
        let t0 = Instant::now();
        let mut l = LossBound::default();
        window(&mut l, t0, 30, 10, 1_000_000.0);
        assert_eq!(l.bound(), None, "30 packets in no time: not a window yet");
        for _ in 0..10 {
            l.on_late_arrival();
        }
        l.update(t0 + Duration::from_secs(1), 1_000_000.0, 1_000_000.0, Duration::ZERO);
        assert_eq!(l.bound(), None);
    }
}
