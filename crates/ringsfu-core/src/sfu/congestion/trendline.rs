//! The delay trend: the slope of a linear regression over the last 20 groups of the smoothed,
//! accumulated one-way delay variation against arrival time (libwebrtc's TrendlineEstimator,
//! which replaced the Kalman filter of draft-ietf-rmcat-gcc-02 §5.3 in Chrome). A positive slope
//! means a queue is building on the path.

use super::arrival_groups::GroupDelta;

/// Groups in the regression.
const WINDOW: usize = 20;
/// Exponential smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The slope is scaled by this and by the number of deltas seen (up to `MAX_DELTAS`) before
/// it meets the threshold, so that a short history weighs less.
const GAIN: f64 = 4.0;
const MAX_DELTAS: u32 = 60;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Slope of the delay, ms per ms.
    pub slope: f64,
    /// The slope scaled as the threshold expects it.
    pub modified: f64,
    /// The group's send spacing, ms.
    pub send_delta_ms: f64,
    /// When the group finished arriving, µs of the receiver's clock.
    pub arrival_us: i64,
}

#[derive(Debug)]
pub struct Trendline {
    /// (arrival ms since the first group, smoothed delay ms), a ring.
    window: [(f64, f64); WINDOW],
    len: usize,
    next: usize,
    first_arrival_us: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    deltas: u32,
    slope: f64,
}

impl Default for Trendline {
    fn default() -> Trendline {
        Trendline {
            window: [(0.0, 0.0); WINDOW],
            len: 0,
            next: 0,
            first_arrival_us: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            deltas: 0,
            slope: 0.0,
        }
    }
}

impl Trendline {
    pub fn update(&mut self, delta: GroupDelta) -> Trend {
        let variation_ms = (delta.arrival_delta_us - delta.send_delta_us) as f64 / 1000.0;
        self.deltas = (self.deltas + 1).min(MAX_DELTAS);
        self.accumulated_ms += variation_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let first = *self.first_arrival_us.get_or_insert(delta.arrival_us);
        let x = (delta.arrival_us - first) as f64 / 1000.0;
        self.window[self.next] = (x, self.smoothed_ms);
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        if self.len == WINDOW {
            // Until the window is full the last slope stands (0 at first).
            if let Some(slope) = regression_slope(&self.window) {
                self.slope = slope;
            }
        }
        Trend {
            slope: self.slope,
            modified: f64::from(self.deltas) * self.slope * GAIN,
            send_delta_ms: delta.send_delta_us as f64 / 1000.0,
            arrival_us: delta.arrival_us,
        }
    }
}

/// Least-squares slope of y against x; `None` when all x are equal.
fn regression_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut numerator, mut denominator) = (0.0, 0.0);
    for (x, y) in points {
        numerator += (x - mean_x) * (y - mean_y);
        denominator += (x - mean_x) * (x - mean_x);
    }
    (denominator > 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Trendline, groups: usize, send_ms: i64, arrival_ms: i64, start_us: i64) -> (Trend, i64) {
        let mut at = start_us;
        let mut last = None;
        for _ in 0..groups {
            at += arrival_ms * 1000;
            last = Some(t.update(GroupDelta {
                send_delta_us: send_ms * 1000,
                arrival_delta_us: arrival_ms * 1000,
                arrival_us: at,
            }));
        }
        (last.unwrap(), at)
    }

    #[test]
    fn flat_while_groups_arrive_as_sent_and_rising_while_a_queue_builds() {
        let mut t = Trendline::default();
        let (steady, at) = feed(&mut t, 30, 33, 33, 0);
        assert_eq!(steady.slope, 0.0);
        // Each group arrives 3 ms later than it was sent after the one before.
        let (queue, at) = feed(&mut t, 30, 33, 36, at);
        assert!(queue.slope > 0.05, "{queue:?}");
        assert!(queue.modified > 12.5, "{queue:?}");
        // The queue drains: arrival spacing below send spacing.
        let (drain, _) = feed(&mut t, 30, 33, 30, at);
        assert!(drain.slope < -0.05, "{drain:?}");
    }

    #[test]
    fn regression_of_a_line_is_its_slope() {
        let points: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        assert!((regression_slope(&points).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(regression_slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
