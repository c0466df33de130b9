//! When to probe and how high (libwebrtc's ProbeController, reduced to what an SFU's egress
//! needs). Probing is worth it only while the consumers could use more than the estimate:
//! - at the start, two clusters at 3× and 6× the initial estimate;
//! - when the wish rises notably, one cluster at 3× the estimate;
//! - after a cluster that measured at least 70% of its target, the next at twice what it
//!   measured (exponential probing), until a cluster is capped by the wish;
//! - when the acknowledged rate leaves the link capacity seen before, upward (the path
//!   improved), one at 2× the estimate;
//! - otherwise periodically at 2× the estimate while the link looks fine, every 5 s, doubling
//!   to 60 s while probes find nothing more.
//!
//! Every target is capped by the wish. One chain of clusters is in flight at a time.

use std::time::{Duration, Instant};

const INITIAL_SCALES: [f64; 2] = [3.0, 6.0];
const RAISE_SCALE: f64 = 3.0;
const FURTHER_SCALE: f64 = 2.0;
const FURTHER_MIN_FRACTION: f64 = 0.7;
const PERIODIC_SCALE: f64 = 2.0;
/// A wish this much above the last one is a raise worth probing for at once.
const NOTABLE_RAISE: f64 = 1.1;
const MIN_INTERVAL: Duration = Duration::from_secs(5);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// A chain raised the estimate if it ended this much above where it started.
const RAISED: f64 = 1.05;
/// Probes triggered by the capacity follow each other no faster than this.
const TRIGGERED_GAP: Duration = Duration::from_secs(2);
/// A chain whose verdict never came is forgotten after this.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Cluster targets to send, ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    targets: [u64; 2],
    len: usize,
    /// The highest target was capped by the wish: no further probing after it.
    pub capped: bool,
}

impl Plan {
    pub fn targets(&self) -> &[u64] {
        &self.targets[..self.len]
    }
}

#[derive(Debug, Clone, Copy)]
struct Chain {
    top_cluster: u32,
    top_target: u64,
    capped: bool,
    start_estimate: u64,
    since: Instant,
}

#[derive(Debug)]
pub struct ProbeController {
    desired: u64,
    started: bool,
    chain: Option<Chain>,
    /// The estimate a continued chain started from.
    continuing_from: Option<u64>,
    next_periodic: Option<Instant>,
    interval: Duration,
    last_probe: Option<Instant>,
}

impl Default for ProbeController {
    fn default() -> ProbeController {
        ProbeController {
            desired: 0,
            started: false,
            chain: None,
            continuing_from: None,
            next_periodic: None,
            interval: MIN_INTERVAL,
            last_probe: None,
        }
    }
}

impl ProbeController {
    pub fn next_timeout(&self) -> Option<Instant> {
        self.next_periodic
    }

    pub fn on_desired(&mut self, desired: u64, estimate: u64, now: Instant) -> Option<Plan> {
        let previous = std::mem::replace(&mut self.desired, desired);
        if desired > estimate && self.next_periodic.is_none() {
            self.next_periodic = Some(now + self.interval);
        }
        if desired <= estimate || self.chain.is_some() {
            return None;
        }
        if !self.started {
            self.started = true;
            return self.plan(estimate, &INITIAL_SCALES);
        }
        if desired as f64 > previous as f64 * NOTABLE_RAISE {
            self.interval = MIN_INTERVAL;
            self.next_periodic = Some(now + self.interval);
            return self.plan(estimate, &[RAISE_SCALE]);
        }
        None
    }

    /// The clusters of `plan` were queued; the highest is `top_cluster`.
    pub fn on_queued(&mut self, top_cluster: u32, plan: &Plan, estimate: u64, now: Instant) {
        let Some(&top_target) = plan.targets().last() else { return };
        let start_estimate = self.continuing_from.take().unwrap_or(estimate);
        self.chain = Some(Chain { top_cluster, top_target, capped: plan.capped, start_estimate, since: now });
        self.last_probe = Some(now);
    }

    /// A cluster's verdict; `estimate` is the estimate after it was applied.
    pub fn on_outcome(&mut self, cluster: u32, measured: Option<f64>, estimate: u64, now: Instant) -> Option<Plan> {
        let chain = self.chain.filter(|c| c.top_cluster == cluster)?;
        self.chain = None;
        if let Some(m) = measured
            && m >= FURTHER_MIN_FRACTION * chain.top_target as f64
            && !chain.capped
            && estimate < self.desired
        {
            let plan = self.plan(m as u64, &[FURTHER_SCALE]);
            if plan.is_some() {
                self.continuing_from = Some(chain.start_estimate);
                return plan;
            }
        }
        self.interval = if estimate as f64 > chain.start_estimate as f64 * RAISED {
            MIN_INTERVAL
        } else {
            (self.interval * 2).min(MAX_INTERVAL)
        };
        self.next_periodic = Some(now + self.interval);
        None
    }

    /// The acknowledged rate rose past the link capacity seen before.
    pub fn on_capacity_exceeded(&mut self, estimate: u64, now: Instant) -> Option<Plan> {
        let recent = self.last_probe.is_some_and(|t| now.saturating_duration_since(t) < TRIGGERED_GAP);
        if !self.started || self.chain.is_some() || recent || estimate >= self.desired {
            return None;
        }
        self.plan(estimate, &[PERIODIC_SCALE])
    }

    /// The periodic check. `link_fine`: no overuse, no recent decrease, no loss bound.
    pub fn on_timeout(&mut self, estimate: u64, link_fine: bool, now: Instant) -> Option<Plan> {
        if self.chain.is_some_and(|c| now.saturating_duration_since(c.since) >= CHAIN_TIMEOUT) {
            self.chain = None;
        }
        if self.next_periodic.is_none_or(|at| at > now) {
            return None;
        }
        self.next_periodic = Some(now + self.interval);
        if self.chain.is_some() || !link_fine || estimate >= self.desired {
            return None;
        }
        self.plan(estimate, &[PERIODIC_SCALE])
    }

    /// Targets at `base` × each scale, capped by the wish; none that would not exceed `base`.
    fn plan(&mut self, base: u64, scales: &[f64]) -> Option<Plan> {
        let mut plan = Plan { targets: [0; 2], len: 0, capped: false };
        for scale in scales.iter().take(2) {
            let wanted = (base as f64 * scale) as u64;
            let target = wanted.min(self.desired);
            if target <= base || plan.targets().last().is_some_and(|t| *t >= target) {
                continue;
            }
            plan.targets[plan.len] = target;
            plan.len += 1;
            plan.capped = target < wanted;
        }
        (plan.len > 0).then_some(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(plan: Option<Plan>) -> Vec<u64> {
        plan.map(|p| p.targets().to_vec()).unwrap_or_default()
    }

    #[test]
    fn starts_at_three_and_six_times_capped_by_the_wish() {
        let t0 = Instant::now();
        let mut c = ProbeController::default();
        assert_eq!(targets(c.on_desired(3_000_000, 600_000, t0)), vec![1_800_000, 3_000_000]);
        let mut c = ProbeController::default();
        let plan = c.on_desired(10_000_000, 600_000, t0).unwrap();
        assert_eq!((plan.targets(), plan.capped), (&[1_800_000, 3_600_000][..], false));
        let mut c = ProbeController::default();
        let plan = c.on_desired(1_000_000, 600_000, t0).unwrap();
        assert_eq!((plan.targets(), plan.capped), (&[1_000_000][..], true));
        // A wish the estimate already covers: nothing.
        let mut c = ProbeController::default();
        assert_eq!(c.on_desired(500_000, 600_000, t0), None);
    }

    #[test]
    fn continues_exponentially_while_clusters_measure_most_of_their_target() {
        let t0 = Instant::now();
        let mut c = ProbeController::default();
        let plan = c.on_desired(20_000_000, 600_000, t0).unwrap();
        c.on_queued(2, &plan, 600_000, t0);
        // A result for the lower cluster says nothing about going further.
        assert_eq!(c.on_outcome(1, Some(1_800_000.0), 1_800_000, t0), None);
        assert_eq!(targets(c.on_outcome(2, Some(3_000_000.0), 3_000_000, t0)), vec![6_000_000]);
        let plan = Plan { targets: [6_000_000, 0], len: 1, capped: false };
        c.on_queued(3, &plan, 3_000_000, t0);
        // Measured under 70% of its target: the link is found; the chain ends.
        assert_eq!(c.on_outcome(3, Some(4_000_000.0), 4_000_000, t0), None);
        assert_eq!(c.interval, MIN_INTERVAL, "the chain raised the estimate");
    }

    #[test]
    fn periodic_probes_back_off_while_they_find_nothing() {
        let t0 = Instant::now();
        let mut c = ProbeController::default();
        c.on_desired(1_000_000, 600_000, t0);
        c.chain = None;
        let mut at = t0;
        let mut intervals = Vec::new();
        for cluster in 10..16 {
            let due = c.next_timeout().unwrap();
            assert_eq!(c.on_timeout(600_000, true, due - Duration::from_millis(1)), None);
            let plan = c.on_timeout(600_000, true, due).expect("a periodic probe");
            assert_eq!(plan.targets(), &[1_000_000]);
            intervals.push((due - at).as_secs());
            at = due;
            c.on_queued(cluster, &plan, 600_000, due);
            c.on_outcome(cluster, Some(550_000.0), 600_000, due);
        }
        assert_eq!(intervals, vec![5, 10, 20, 40, 60, 60]);
        // Not while the link looks congested.
        let due = c.next_timeout().unwrap();
        assert_eq!(c.on_timeout(600_000, false, due), None);
    }

    #[test]
    fn a_notable_raise_of_the_wish_probes_at_once() {
        let t0 = Instant::now();
        let mut c = ProbeController::default();
        assert_eq!(c.on_desired(150_000, 600_000, t0), None);
        assert_eq!(targets(c.on_desired(1_500_000, 600_000, t0)), vec![1_500_000]);
        c.chain = None;
        assert_eq!(c.on_desired(1_550_000, 600_000, t0), None, "a small rise waits for the periodic probe");
        assert_eq!(targets(c.on_desired(1_800_000, 600_000, t0)), vec![1_800_000]);
    }
}
