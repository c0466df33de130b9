//! Which simulcast layer one subscriber should get, from the bitrate budget the allocator gives
//! it and what each layer of the producer measures. Hysteresis keeps it from flapping: a layer
//! is left for a lower one after a short sustained shortfall, and a higher one is only taken
//! after the budget has covered it for a while, one step at a time, not too often.

use std::time::{Duration, Instant};

/// What is known about one layer of the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerInfo {
    /// Measured bits per second; `None` while the layer has not been measured yet (it has just
    /// started arriving). An unmeasured layer never counts as fitting: taking it on trust would
    /// hand every new subscriber the top layer, only to switch down once its rate is known.
    pub bitrate: Option<u64>,
    /// Packets arrived recently.
    pub active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorConfig {
    /// A shortfall must last this long before switching down.
    pub down_after: Duration,
    /// The budget must cover the next layer this long before switching up.
    pub up_after: Duration,
    /// At most one up-switch per this interval.
    pub min_up_interval: Duration,
    /// The next layer must fit with this margin (per mille above its bitrate).
    pub up_margin_permille: u64,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            down_after: Duration::from_millis(500),
            up_after: Duration::from_secs(2),
            min_up_interval: Duration::from_secs(3),
            up_margin_permille: 100,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LayerSelector {
    target: Option<u8>,
    shortfall_since: Option<Instant>,
    headroom_since: Option<Instant>,
    last_up: Option<Instant>,
    /// Target changes so far.
    pub switches: u64,
}

impl LayerSelector {
    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// The layer to forward under `budget` bit/s, given the layers as they are now.
    pub fn update(&mut self, config: &SelectorConfig, now: Instant, budget: u64, layers: &[LayerInfo]) -> Option<u8> {
        let active: smallvec::SmallVec<[u8; 4]> =
            (0..layers.len() as u8).filter(|l| layers[*l as usize].active).collect();
        if active.is_empty() {
            return self.target;
        }
        let fits =
            |l: u8, margin: u64| layers[l as usize].bitrate.is_some_and(|b| b * (1000 + margin) / 1000 <= budget);
        let best_fitting = || active.iter().rev().copied().find(|l| fits(*l, 0)).unwrap_or(active[0]);

        let Some(target) = self.target.filter(|t| layers.get(*t as usize).is_some_and(|l| l.active)) else {
            // First decision, or the layer stopped arriving (the publisher's uplink shrank): pick
            // at once.
            return self.set(best_fitting(), now, false);
        };

        // Down: the current layer has not fitted for a while.
        if !fits(target, 0) {
            self.headroom_since = None;
            let since = *self.shortfall_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= config.down_after {
                let lower = active.iter().rev().copied().find(|l| *l < target && fits(*l, 0)).unwrap_or(active[0]);
                if lower != target {
                    return self.set(lower, now, false);
                }
            }
            return Some(target);
        }
        self.shortfall_since = None;

        // Up: one step, after the budget covered it for a while, not too often.
        let Some(next) = active.iter().copied().find(|l| *l > target) else {
            self.headroom_since = None;
            return Some(target);
        };
        if !fits(next, config.up_margin_permille) {
            self.headroom_since = None;
            return Some(target);
        }
        let since = *self.headroom_since.get_or_insert(now);
        let covered = now.saturating_duration_since(since) >= config.up_after;
        let rested = self.last_up.is_none_or(|t| now.saturating_duration_since(t) >= config.min_up_interval);
        if covered && rested {
            return self.set(next, now, true);
        }
        Some(target)
    }

    fn set(&mut self, layer: u8, now: Instant, up: bool) -> Option<u8> {
        if self.target.is_some() && self.target != Some(layer) {
            self.switches += 1;
        }
        if up {
            self.last_up = Some(now);
        }
        self.target = Some(layer);
        self.shortfall_since = None;
        self.headroom_since = None;
        self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: [LayerInfo; 3] = [
        LayerInfo { bitrate: Some(150_000), active: true },
        LayerInfo { bitrate: Some(500_000), active: true },
        LayerInfo { bitrate: Some(1_500_000), active: true },
    ];

    /// Feeds a budget trace (one value per 100 ms); returns the target after each step.
    fn run(trace: &[u64], layers: &[LayerInfo]) -> (Vec<Option<u8>>, u64) {
        let config = SelectorConfig::default();
        let t0 = Instant::now();
        let mut s = LayerSelector::default();
        let out = trace
            .iter()
            .enumerate()
            .map(|(i, budget)| s.update(&config, t0 + Duration::from_millis(100 * i as u64), *budget, layers))
            .collect();
        (out, s.switches)
    }

    fn repeat(budget: u64, seconds: u64) -> Vec<u64> {
        vec![budget; (seconds * 10) as usize]
    }

    #[test]
    fn a_steady_budget_gets_the_best_fitting_layer_at_once() {
        for (budget, expected) in [(3_000_000, 2), (1_000_000, 1), (200_000, 0), (50_000, 0)] {
            let (out, switches) = run(&repeat(budget, 10), &LAYERS);
            assert!(out.iter().all(|t| *t == Some(expected)), "budget {budget}: {out:?}");
            assert_eq!(switches, 0);
        }
    }

    #[test]
    fn a_collapse_switches_down_after_a_short_shortfall() {
        let mut trace = repeat(3_000_000, 5);
        trace.extend(repeat(300_000, 5));
        let (out, _) = run(&trace, &LAYERS);
        assert_eq!(out[49], Some(2));
        // 500 ms of shortfall, then straight to the layer that fits (skipping the middle one).
        assert_eq!(out[53], Some(2));
        assert_eq!(out[55], Some(0));
        assert_eq!(out[99], Some(0));
    }

    #[test]
    fn recovery_climbs_one_layer_at_a_time_after_the_budget_held() {
        let mut trace = repeat(300_000, 3);
        trace.extend(repeat(3_000_000, 12));
        let (out, switches) = run(&trace, &LAYERS);
        assert_eq!(out[29], Some(0));
        // Covered for 2 s → layer 1; 3 s after that up-switch → layer 2.
        assert_eq!(out[48], Some(0));
        assert_eq!(out[50], Some(1));
        assert_eq!(out[79], Some(1));
        assert_eq!(out[80], Some(2));
        assert_eq!(switches, 2);
    }

    #[test]
    fn a_flapping_estimate_causes_a_bounded_number_of_switches() {
        // The budget alternates every 300 ms between plenty and too little for 30 s.
        let trace: Vec<u64> = (0..300).map(|i| if (i / 3) % 2 == 0 { 3_000_000 } else { 400_000 }).collect();
        let (_, switches) = run(&trace, &LAYERS);
        // Down-switches need 500 ms of shortfall (never reached: 300 ms each), up-switches 2 s
        // of headroom (never reached either).
        assert!(switches <= 2, "{switches} switches");
        // 2 s phases: it goes down once and never sees 2 s of headroom again (an immediate
        // switcher would switch 14 times).
        let trace: Vec<u64> = (0..300).map(|i| if (i / 20) % 2 == 0 { 3_000_000 } else { 400_000 }).collect();
        let (_, switches) = run(&trace, &LAYERS);
        assert_eq!(switches, 1, "{switches} switches in 30 s");
        // 3 s phases: at most one down and one (single-step) up per cycle.
        let trace: Vec<u64> = (0..300).map(|i| if (i / 30) % 2 == 0 { 3_000_000 } else { 400_000 }).collect();
        let (_, switches) = run(&trace, &LAYERS);
        assert!(switches <= 10, "{switches} switches in 30 s");
    }

    #[test]
    fn a_layer_that_stops_arriving_is_skipped() {
        let mut layers = LAYERS;
        let config = SelectorConfig::default();
        let t0 = Instant::now();
        let mut s = LayerSelector::default();
        assert_eq!(s.update(&config, t0, 3_000_000, &layers), Some(2));
        layers[2].active = false;
        assert_eq!(s.update(&config, t0 + Duration::from_millis(100), 3_000_000, &layers), Some(1));
        layers[1].active = false;
        assert_eq!(s.update(&config, t0 + Duration::from_millis(200), 3_000_000, &layers), Some(0));
        // Nothing arrives at all: keep what we had.
        let none = [LayerInfo::default(); 3];
        assert_eq!(s.update(&config, t0 + Duration::from_millis(300), 3_000_000, &none), Some(0));
    }

    #[test]
    fn a_stream_that_just_started_begins_on_its_lowest_layer_until_measured() {
        let config = SelectorConfig::default();
        let t0 = Instant::now();
        let mut s = LayerSelector::default();
        let unmeasured = [LayerInfo { bitrate: None, active: true }; 3];
        assert_eq!(s.update(&config, t0, 600_000, &unmeasured), Some(0), "not the top layer on trust");
        // Measured now: the usual way up, one step once the budget has covered it for a while.
        let mut t = t0;
        let mut targets = Vec::new();
        for _ in 0..60 {
            t += Duration::from_millis(100);
            targets.push(s.update(&config, t, 3_000_000, &LAYERS));
        }
        assert_eq!(targets.first(), Some(&Some(0)));
        assert_eq!(targets.last(), Some(&Some(2)));
        assert!(targets.windows(2).all(|w| w[1] >= w[0]), "only up: {targets:?}");
    }
}
