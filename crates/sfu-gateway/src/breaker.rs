//! A circuit breaker per SFU, fed by the outcomes of forwarded requests.
//!
//! Closed → (`failure_threshold` consecutive failures) → Open → (cool-down elapsed) → HalfOpen: one
//! request is let through as a probe → success closes, failure opens again with a longer
//! cool-down (doubled per trip, capped at `max_cooldown`). The trip count is forgotten once the
//! breaker has stayed closed for `max_cooldown`, so an SFU that failed once last week starts again
//! from the short cool-down. Time is an argument; nothing here reads the clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// A probe whose outcome never arrives (the caller went away) frees the slot after this.
    pub probe_timeout: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: 3,
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(120),
            probe_timeout: Duration::from_millis(2500),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed {
        since: Option<Instant>,
    },
    Open {
        until: Instant,
    },
    /// `probe`: when the probe in flight was let through.
    HalfOpen {
        probe: Option<Instant>,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    phase: Phase,
    failures: u32,
    trips: u32,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker::new()
    }
}

impl Breaker {
    pub fn new() -> Breaker {
        Breaker { phase: Phase::Closed { since: None }, failures: 0, trips: 0 }
    }

    /// The state as seen at `now`: an open breaker whose cool-down has passed reads as half-open.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Consecutive failures counted toward the next trip.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How many times the breaker opened since it last stayed closed for long.
    pub fn trips(&self) -> u32 {
        self.trips
    }

    /// When an open breaker lets its probe through.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether a request would be let through at `now` (no state change).
    pub fn allows(&self, now: Instant, policy: &BreakerPolicy) -> bool {
        match self.phase {
            Phase::Closed { .. } => true,
            Phase::Open { until } => now >= until,
            Phase::HalfOpen { probe } => probe_slot_free(probe, now, policy),
        }
    }

    /// Lets a request through if the breaker allows it; in half-open that request is the probe.
    pub fn try_acquire(&mut self, now: Instant, policy: &BreakerPolicy) -> bool {
        match self.phase {
            Phase::Closed { .. } => true,
            Phase::Open { until } if now < until => false,
            Phase::Open { .. } => {
                self.phase = Phase::HalfOpen { probe: Some(now) };
                true
            }
            Phase::HalfOpen { probe } if probe_slot_free(probe, now, policy) => {
                self.phase = Phase::HalfOpen { probe: Some(now) };
                true
            }
            Phase::HalfOpen { .. } => false,
        }
    }

    /// A request let through was answered sanely.
    pub fn on_success(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed { .. } => self.failures = 0,
            Phase::HalfOpen { .. } => {
                self.phase = Phase::Closed { since: Some(now) };
                self.failures = 0;
            }
            // A request that started before the trip: the probe decides, not this.
            Phase::Open { .. } => {}
        }
    }

    /// A request let through failed (timeout, connection error, 5xx). Returns the cool-down when
    /// this failure opened the breaker.
    pub fn on_failure(&mut self, now: Instant, policy: &BreakerPolicy) -> Option<Duration> {
        match self.phase {
            Phase::Closed { since } => {
                self.failures += 1;
                if self.failures < policy.failure_threshold {
                    return None;
                }
                if since.is_some_and(|s| now.saturating_duration_since(s) >= policy.max_cooldown) {
                    self.trips = 0;
                }
                Some(self.trip(now, policy))
            }
            Phase::HalfOpen { .. } => Some(self.trip(now, policy)),
            Phase::Open { .. } => None,
        }
    }

    /// A request let through ended without an outcome (the caller went away): frees the probe slot.
    pub fn on_abandoned(&mut self) {
        if let Phase::HalfOpen { probe: Some(_) } = self.phase {
            self.phase = Phase::HalfOpen { probe: None };
        }
    }

    fn trip(&mut self, now: Instant, policy: &BreakerPolicy) -> Duration {
        let cooldown = cooldown_after(self.trips, policy);
        self.trips = self.trips.saturating_add(1);
        self.failures = 0;
        self.phase = Phase::Open { until: now + cooldown };
        cooldown
    }
}

fn probe_slot_free(probe: Option<Instant>, now: Instant, policy: &BreakerPolicy) -> bool {
    probe.is_none_or(|started| now.saturating_duration_since(started) >= policy.probe_timeout)
}

/// `cooldown · 2^trips`, capped.
fn cooldown_after(trips: u32, policy: &BreakerPolicy) -> Duration {
    let factor = 2u32.saturating_pow(trips.min(20));
    policy.cooldown.saturating_mul(factor).min(policy.max_cooldown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> BreakerPolicy {
        BreakerPolicy { failure_threshold: 3, cooldown: 10 * S, max_cooldown: 60 * S, probe_timeout: 2 * S }
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Fail,
        Succeed,
        /// try_acquire, expecting this answer.
        Acquire(bool),
        Wait(Duration),
        Expect(BreakerState),
    }
    use Step::*;

    fn run(story: &str, steps: &[Step]) {
        let mut now = Instant::now();
        let mut b = Breaker::new();
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Fail => {
                    b.on_failure(now, &policy());
                }
                Succeed => b.on_success(now),
                Acquire(expected) => assert_eq!(b.try_acquire(now, &policy()), expected, "{story}: step {i}"),
                Wait(d) => now += d,
                Expect(state) => assert_eq!(b.state(now), state, "{story}: step {i}"),
            }
        }
    }

    /// Each row is one story of the state machine.
    #[test]
    fn state_machine_stories() {
        let stories: &[(&str, &[Step])] = &[
            ("failures below the threshold keep it closed", &[Fail, Fail, Expect(BreakerState::Closed), Acquire(true)]),
            ("a success resets the count", &[Fail, Fail, Succeed, Fail, Fail, Expect(BreakerState::Closed)]),
            ("the threshold opens it", &[Fail, Fail, Fail, Expect(BreakerState::Open), Acquire(false)]),
            (
                "after the cool-down one probe goes through",
                &[Fail, Fail, Fail, Wait(10 * S), Expect(BreakerState::HalfOpen), Acquire(true), Acquire(false)],
            ),
            (
                "a successful probe closes it",
                &[Fail, Fail, Fail, Wait(10 * S), Acquire(true), Succeed, Expect(BreakerState::Closed), Acquire(true)],
            ),
            (
                "a failed probe opens it for twice as long",
                &[
                    Fail,
                    Fail,
                    Fail,
                    Wait(10 * S),
                    Acquire(true),
                    Fail,
                    Expect(BreakerState::Open),
                    Wait(19 * S),
                    Acquire(false),
                    Wait(S),
                    Acquire(true),
                ],
            ),
            (
                "a probe that never reports frees its slot after the probe timeout",
                &[Fail, Fail, Fail, Wait(10 * S), Acquire(true), Wait(S), Acquire(false), Wait(S), Acquire(true)],
            ),
            (
                "late outcomes of requests from before the trip change nothing",
                &[Fail, Fail, Fail, Succeed, Fail, Expect(BreakerState::Open), Wait(10 * S), Acquire(true)],
            ),
        ];
        for (story, steps) in stories {
            run(story, steps);
        }
    }

    #[test]
    fn the_cool_down_doubles_per_trip_up_to_the_cap() {
        let p = policy();
        let mut now = Instant::now();
        let mut b = Breaker::new();
        let mut cooldowns = Vec::new();
        for _ in 0..3 {
            b.on_failure(now, &p);
        }
        cooldowns.push(b.retry_at().unwrap() - now);
        for _ in 0..4 {
            now = b.retry_at().unwrap();
            assert!(b.try_acquire(now, &p));
            cooldowns.push(b.on_failure(now, &p).unwrap());
        }
        assert_eq!(cooldowns, vec![10 * S, 20 * S, 40 * S, 60 * S, 60 * S]);
        assert_eq!(b.trips(), 5);
    }

    #[test]
    fn trips_are_forgotten_after_staying_closed_long_enough() {
        let p = policy();
        let mut now = Instant::now();
        let mut b = Breaker::new();
        let trip = |b: &mut Breaker, now: Instant| {
            let mut cooldown = None;
            for _ in 0..3 {
                cooldown = b.on_failure(now, &p);
            }
            cooldown.unwrap()
        };
        assert_eq!(trip(&mut b, now), 10 * S);
        now += 10 * S;
        assert!(b.try_acquire(now, &p));
        b.on_success(now);
        now += 30 * S; // closed, but not for long: the next trip is longer
        assert_eq!(trip(&mut b, now), 20 * S);
        now += 20 * S;
        assert!(b.try_acquire(now, &p));
        b.on_success(now);
        now += 60 * S; // stable for max_cooldown: back to the short cool-down
        assert_eq!(trip(&mut b, now), 10 * S);
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot_at_once() {
        let p = policy();
        let now = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..3 {
            b.on_failure(now, &p);
        }
        let later = now + 10 * S;
        assert!(b.try_acquire(later, &p));
        assert!(!b.allows(later, &p));
        b.on_abandoned();
        assert!(b.allows(later, &p));
        assert_eq!(b.state(later), BreakerState::HalfOpen);
    }
}
