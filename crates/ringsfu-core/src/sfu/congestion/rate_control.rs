//! The delay-based estimate: AIMD rate control driven by the overuse detector
//! (draft-ietf-rmcat-gcc-02 §5.5, with libwebrtc's AimdRateControl refinements). Far from the
//! link's capacity the estimate grows by 8% a second; near a capacity where overuse was seen
//! before, by about one packet per response time; on overuse it falls to 0.85 × the
//! acknowledged bitrate, at most once per round trip. It never grows beyond 1.5 × what is
//! actually acknowledged (plus 10 kbit/s): an estimate the path has not carried is a guess,
//! which is what probing is for.

use super::overuse::Usage;
use std::time::{Duration, Instant};

const BETA: f64 = 0.85;
const MULTIPLICATIVE_PER_SECOND: f64 = 1.08;
/// Smallest multiplicative step, bit/s.
const MIN_MULTIPLICATIVE_STEP: f64 = 1_000.0;
/// Additive increase assumes frames at this rate in packets of this size (bits).
const FRAME_RATE: f64 = 30.0;
const PACKET_BITS: f64 = 1_200.0 * 8.0;
const MIN_ADDITIVE_PER_SECOND: f64 = 4_000.0;
/// Added to the round trip to make the response time of the additive increase.
const RESPONSE_EXTRA: Duration = Duration::from_millis(100);
/// Longest step of one increase (the estimate was not updated for a while).
const MAX_INCREASE_STEP: Duration = Duration::from_secs(1);
/// Headroom above the acknowledged bitrate an increase may reach.
const ACKED_HEADROOM: f64 = 1.5;
const ACKED_HEADROOM_EXTRA: f64 = 10_000.0;
/// Decreases follow one another no faster than the round trip, within these bounds.
const MIN_REDUCE_INTERVAL: Duration = Duration::from_millis(10);
const MAX_REDUCE_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hold,
    Increase,
    Decrease,
}

/// Raised when the acknowledged bitrate leaves the link capacity seen at past overuses, upward:
/// the path has changed and the capacity is unknown again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityExceeded;

#[derive(Debug)]
pub struct RateControl {
    estimate: f64,
    state: State,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
    capacity: LinkCapacity,
    rtt: Duration,
    floor: f64,
    cap: f64,
}

impl RateControl {
    pub fn new(initial_bps: u64, floor_bps: u64, cap_bps: u64) -> RateControl {
        RateControl {
            estimate: initial_bps as f64,
            state: State::Hold,
            last_change: None,
            last_decrease: None,
            capacity: LinkCapacity::default(),
            rtt: Duration::from_millis(100),
            floor: floor_bps as f64,
            cap: cap_bps as f64,
        }
    }

    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    pub fn last_decrease(&self) -> Option<Instant> {
        self.last_decrease
    }

    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// A measured rate (a probe's): taken as the estimate.
    pub fn set_estimate(&mut self, bps: f64, now: Instant) {
        self.estimate = bps.clamp(self.floor, self.cap);
        if self.estimate > self.capacity.upper_bound() {
            self.capacity = LinkCapacity::default();
        }
        self.last_change = Some(now);
    }

    /// Lowers the estimate to `bps` (feedback stopped coming).
    pub fn reduce_to(&mut self, bps: f64, now: Instant) {
        self.estimate = bps.clamp(self.floor, self.cap).min(self.estimate);
        self.last_change = Some(now);
        self.last_decrease = Some(now);
        self.state = State::Hold;
    }

    /// One feedback's worth: the detector's verdict and the acknowledged bitrate.
    pub fn update(&mut self, usage: Usage, acked: Option<f64>, now: Instant) -> Option<CapacityExceeded> {
        match usage {
            Usage::Overusing => {
                if self.may_reduce(acked, now) {
                    self.state = State::Decrease;
                }
            }
            Usage::Underusing => self.state = State::Hold,
            Usage::Normal => {
                if self.state == State::Hold {
                    self.state = State::Increase;
                    self.last_change = Some(now);
                }
            }
        }
        match self.state {
            State::Hold => None,
            State::Decrease => {
                self.decrease(acked, now);
                None
            }
            State::Increase => self.increase(acked, now),
        }
    }

    fn may_reduce(&self, acked: Option<f64>, now: Instant) -> bool {
        let Some(last) = self.last_decrease else { return true };
        let interval = self.rtt.clamp(MIN_REDUCE_INTERVAL, MAX_REDUCE_INTERVAL);
        now.saturating_duration_since(last) >= interval || acked.is_some_and(|a| a < self.estimate / 2.0)
    }

    fn decrease(&mut self, acked: Option<f64>, now: Instant) {
        let acked = acked.unwrap_or(self.estimate);
        let mut target = BETA * acked;
        if target > self.estimate
            && let Some(capacity) = self.capacity.estimate
        {
            target = BETA * capacity;
        }
        if acked < self.capacity.lower_bound() {
            // Far below what the link carried before: its capacity has dropped.
            self.capacity = LinkCapacity::default();
        }
        self.capacity.on_overuse(acked);
        if target < self.estimate {
            self.estimate = target.max(self.floor);
        }
        self.state = State::Hold;
        self.last_change = Some(now);
        self.last_decrease = Some(now);
    }

    fn increase(&mut self, acked: Option<f64>, now: Instant) -> Option<CapacityExceeded> {
        let mut exceeded = None;
        if acked.is_some_and(|a| a > self.capacity.upper_bound()) {
            self.capacity = LinkCapacity::default();
            exceeded = Some(CapacityExceeded);
        }
        let step = now.saturating_duration_since(self.last_change.unwrap_or(now)).min(MAX_INCREASE_STEP);
        let increment = if self.capacity.estimate.is_some() {
            self.additive_per_second() * step.as_secs_f64()
        } else {
            (self.estimate * (MULTIPLICATIVE_PER_SECOND.powf(step.as_secs_f64()) - 1.0)).max(MIN_MULTIPLICATIVE_STEP)
        };
        let mut next = self.estimate + increment;
        if let Some(acked) = acked {
            let limit = ACKED_HEADROOM * acked + ACKED_HEADROOM_EXTRA;
            if next > limit {
                next = limit.max(self.estimate);
            }
        }
        self.estimate = next.clamp(self.floor, self.cap);
        self.last_change = Some(now);
        exceeded
    }

    /// About one packet more per response time.
    fn additive_per_second(&self) -> f64 {
        let frame_bits = self.estimate / FRAME_RATE;
        let packets = (frame_bits / PACKET_BITS).ceil().max(1.0);
        let response = (self.rtt + RESPONSE_EXTRA).as_secs_f64();
        (frame_bits / packets / response).max(MIN_ADDITIVE_PER_SECOND)
    }
}

/// The acknowledged bitrate at past overuses: where the link's capacity lies, and how
/// spread those observations are (libwebrtc's LinkCapacityEstimator).
#[derive(Debug, Default)]
struct LinkCapacity {
    /// bit/s
    estimate: Option<f64>,
    /// Variance normalised by the estimate, kbit/s.
    deviation: f64,
}

const CAPACITY_SMOOTHING: f64 = 0.05;
const MIN_DEVIATION: f64 = 0.4;
const MAX_DEVIATION: f64 = 2.5;

impl LinkCapacity {
    fn on_overuse(&mut self, acked: f64) {
        let sample = acked / 1000.0;
        let estimate = match self.estimate {
            None => sample,
            Some(e) => (1.0 - CAPACITY_SMOOTHING) * e / 1000.0 + CAPACITY_SMOOTHING * sample,
        };
        let error = estimate - sample;
        let deviation = if self.estimate.is_none() { MIN_DEVIATION } else { self.deviation };
        self.deviation = ((1.0 - CAPACITY_SMOOTHING) * deviation
            + CAPACITY_SMOOTHING * error * error / estimate.max(1.0))
        .clamp(MIN_DEVIATION, MAX_DEVIATION);
        self.estimate = Some(estimate * 1000.0);
    }

    fn spread(&self, estimate: f64) -> f64 {
        3.0 * (self.deviation * estimate / 1000.0).sqrt() * 1000.0
    }

    fn upper_bound(&self) -> f64 {
        self.estimate.map_or(f64::INFINITY, |e| e + self.spread(e))
    }

    fn lower_bound(&self) -> f64 {
        self.estimate.map_or(0.0, |e| e - self.spread(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn grows_eight_percent_a_second_far_from_capacity() {
        let t0 = Instant::now();
        let mut r = RateControl::new(1_000_000, 100_000, 100_000_000);
        r.update(Usage::Normal, Some(1_000_000.0), t0);
        for i in 1..=10 {
            r.update(Usage::Normal, Some(1_000_000.0), ms(t0, i * 100));
        }
        assert!((1_070_000.0..1_090_000.0).contains(&r.estimate()), "{}", r.estimate());
    }

    #[test]
    fn does_not_grow_beyond_what_is_acknowledged() {
        let t0 = Instant::now();
        let mut r = RateControl::new(600_000, 100_000, 100_000_000);
        for i in 0..100 {
            r.update(Usage::Normal, Some(150_000.0), ms(t0, i * 100));
        }
        assert_eq!(r.estimate(), 600_000.0);
    }

    #[test]
    fn overuse_falls_to_085_of_acked_once_per_round_trip_then_grows_additively() {
        let t0 = Instant::now();
        let mut r = RateControl::new(2_000_000, 100_000, 100_000_000);
        r.set_rtt(Duration::from_millis(50));
        r.update(Usage::Overusing, Some(1_000_000.0), t0);
        assert_eq!(r.estimate(), 850_000.0);
        // Within the round trip: no second decrease.
        r.update(Usage::Overusing, Some(800_000.0), ms(t0, 20));
        assert_eq!(r.estimate(), 850_000.0);
        r.update(Usage::Overusing, Some(800_000.0), ms(t0, 60));
        assert_eq!(r.estimate(), 680_000.0);
        // Near the capacity now known: about a packet per response time (150 ms), not 8%.
        r.update(Usage::Normal, Some(800_000.0), ms(t0, 100));
        r.update(Usage::Normal, Some(800_000.0), ms(t0, 1_100));
        let gained = r.estimate() - 680_000.0;
        assert!((20_000.0..60_000.0).contains(&gained), "{gained}");
    }

    #[test]
    fn acked_above_the_known_capacity_says_so_and_grows_multiplicatively_again() {
        let t0 = Instant::now();
        let mut r = RateControl::new(1_000_000, 100_000, 100_000_000);
        r.update(Usage::Overusing, Some(1_000_000.0), t0);
        r.update(Usage::Normal, Some(850_000.0), ms(t0, 100));
        assert_eq!(r.update(Usage::Normal, Some(900_000.0), ms(t0, 200)), None);
        assert_eq!(r.update(Usage::Normal, Some(1_500_000.0), ms(t0, 300)), Some(CapacityExceeded));
        let before = r.estimate();
        r.update(Usage::Normal, Some(1_500_000.0), ms(t0, 1_300));
        assert!(r.estimate() > before * 1.07, "{before} -> {}", r.estimate());
    }

    #[test]
    fn underuse_holds() {
        let t0 = Instant::now();
        let mut r = RateControl::new(1_000_000, 100_000, 100_000_000);
        r.update(Usage::Underusing, Some(1_000_000.0), t0);
        r.update(Usage::Underusing, Some(1_000_000.0), ms(t0, 1_000));
        assert_eq!(r.estimate(), 1_000_000.0);
    }
}
