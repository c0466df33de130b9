//! The health of one SFU as the monitor sees it, from the results of its polls.
//!
//! Unknown until the first poll. A node that has never been healthy becomes healthy on its first
//! success (SFUs started after the gateway must not wait `healthy_threshold` intervals) and
//! unhealthy on its first failure. After that a healthy node turns unhealthy after
//! `unhealthy_threshold` consecutive failures, and an unhealthy one healthy again after
//! `healthy_threshold` consecutive successes, so one lost poll neither removes a serving node nor
//! does one lucky poll bring a broken one back.

use super::selection::Load;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl Default for HealthPolicy {
    fn default() -> HealthPolicy {
        HealthPolicy { unhealthy_threshold: 3, healthy_threshold: 2 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthState {
    pub fn label(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    /// `/v1/load` answered with figures.
    Load(Load),
    /// No `/v1/load` (upstream Node SFU), but `/v1/noop` answered: alive, load unknown.
    Alive,
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
}

#[derive(Debug, Clone)]
pub struct NodeHealth {
    state: HealthState,
    consecutive_failures: u32,
    consecutive_successes: u32,
    /// The figures of the last successful poll; `None` when the node reports no load.
    last_load: Option<Load>,
    response_time: Option<Duration>,
    last_error: Option<String>,
    last_poll: Option<Instant>,
    /// Whether the node was ever healthy: the thresholds guard a node that served, not one coming up.
    ever_healthy: bool,
}

impl Default for NodeHealth {
    fn default() -> NodeHealth {
        NodeHealth::new()
    }
}

impl NodeHealth {
    pub fn new() -> NodeHealth {
        NodeHealth {
            state: HealthState::Unknown,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_load: None,
            response_time: None,
            last_error: None,
            last_poll: None,
            ever_healthy: false,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn is_healthy(&self) -> bool {
        self.state == HealthState::Healthy
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }

    pub fn last_load(&self) -> Option<Load> {
        self.last_load
    }

    pub fn response_time(&self) -> Option<Duration> {
        self.response_time
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn last_poll(&self) -> Option<Instant> {
        self.last_poll
    }

    /// Takes in one poll result; returns the state change it caused, if any.
    pub fn handle_poll(
        &mut self,
        outcome: PollOutcome,
        response_time: Duration,
        now: Instant,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        self.last_poll = Some(now);
        let from = self.state;
        match outcome {
            PollOutcome::Failed(reason) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.consecutive_successes = 0;
                self.last_error = Some(reason);
                let down = match from {
                    HealthState::Unknown => true,
                    HealthState::Healthy => self.consecutive_failures >= policy.unhealthy_threshold,
                    HealthState::Unhealthy => false,
                };
                if down {
                    self.state = HealthState::Unhealthy;
                }
            }
            PollOutcome::Load(_) | PollOutcome::Alive => {
                self.last_load = match outcome {
                    PollOutcome::Load(load) => Some(load),
                    _ => None,
                };
                self.response_time = Some(response_time);
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.consecutive_failures = 0;
                self.last_error = None;
                let up = match from {
                    HealthState::Unknown => true,
                    HealthState::Unhealthy => {
                        !self.ever_healthy || self.consecutive_successes >= policy.healthy_threshold
                    }
                    HealthState::Healthy => false,
                };
                if up {
                    self.state = HealthState::Healthy;
                    self.ever_healthy = true;
                }
            }
        }
        (self.state != from).then_some(Transition { from, to: self.state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(sessions: u64) -> PollOutcome {
        PollOutcome::Load(Load { sessions, cpu: 0.1, memory: 0.2, max_sessions: Some(10), draining: false })
    }

    fn fail() -> PollOutcome {
        PollOutcome::Failed("connection refused".into())
    }

    /// Each row: poll outcomes in order, then the expected state after each.
    #[test]
    fn state_follows_the_thresholds() {
        use HealthState::*;
        let ok = load(1);
        let rows: Vec<(&str, Vec<PollOutcome>, Vec<HealthState>)> = vec![
            ("the first success is enough at start-up", vec![ok.clone()], vec![Healthy]),
            ("the first failure at start-up is unhealthy", vec![fail()], vec![Unhealthy]),
            (
                "healthy survives failures below the threshold",
                vec![ok.clone(), fail(), fail(), ok.clone(), fail(), fail()],
                vec![Healthy; 6],
            ),
            (
                "three consecutive failures make it unhealthy",
                vec![ok.clone(), fail(), fail(), fail()],
                vec![Healthy, Healthy, Healthy, Unhealthy],
            ),
            (
                "two consecutive successes bring a fallen node back",
                vec![ok.clone(), fail(), fail(), fail(), ok.clone(), fail(), ok.clone(), ok.clone()],
                vec![Healthy, Healthy, Healthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy],
            ),
            ("a node without /v1/load is alive all the same", vec![PollOutcome::Alive], vec![Healthy]),
            (
                "a node that never served comes up on its first success",
                vec![fail(), fail(), ok.clone(), fail()],
                vec![Unhealthy, Unhealthy, Healthy, Healthy],
            ),
        ];
        let policy = HealthPolicy { unhealthy_threshold: 3, healthy_threshold: 2 };
        for (story, outcomes, expected) in rows {
            let mut h = NodeHealth::new();
            let now = Instant::now();
            let states: Vec<HealthState> = outcomes
                .into_iter()
                .map(|o| {
                    h.handle_poll(o, Duration::from_millis(3), now, &policy);
                    h.state()
                })
                .collect();
            assert_eq!(states, expected, "{story}");
        }
    }

    #[test]
    fn transitions_are_reported_once() {
        let policy = HealthPolicy::default();
        let now = Instant::now();
        let mut h = NodeHealth::new();
        let t = h.handle_poll(load(0), Duration::ZERO, now, &policy);
        assert_eq!(t, Some(Transition { from: HealthState::Unknown, to: HealthState::Healthy }));
        assert_eq!(h.handle_poll(load(0), Duration::ZERO, now, &policy), None);
    }

    #[test]
    fn polls_record_load_response_time_and_errors() {
        let policy = HealthPolicy::default();
        let now = Instant::now();
        let mut h = NodeHealth::new();
        h.handle_poll(load(7), Duration::from_millis(12), now, &policy);
        assert_eq!(h.last_load().map(|l| l.sessions), Some(7));
        assert_eq!(h.response_time(), Some(Duration::from_millis(12)));
        assert_eq!(h.last_poll(), Some(now));

        // A failure keeps the last figures (they are all we know) and records why.
        h.handle_poll(fail(), Duration::from_secs(1), now, &policy);
        assert_eq!(h.last_load().map(|l| l.sessions), Some(7));
        assert_eq!(h.last_error(), Some("connection refused"));
        assert_eq!((h.consecutive_failures(), h.consecutive_successes()), (1, 0));

        // A node that stops reporting load has an unknown load, not a stale one.
        h.handle_poll(PollOutcome::Alive, Duration::from_millis(2), now, &policy);
        assert_eq!(h.last_load(), None);
        assert_eq!(h.last_error(), None);
    }
}
