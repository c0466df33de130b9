//! Overuse detection: the delay trend against an adaptive threshold (draft-ietf-rmcat-gcc-02
//! §5.4, with the trendline constants of libwebrtc's TrendlineEstimator). Overuse needs the
//! trend above the threshold for more than 10 ms and two samples, and not falling; the threshold
//! follows the trend slowly up and faster down, so that the detector does not starve against
//! loss-based flows and does not fire on the jitter of a noisy path.

use super::trendline::Trend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Normal,
    Overusing,
    Underusing,
}

/// Threshold bounds and start, ms (of the modified trend).
const INITIAL_THRESHOLD: f64 = 12.5;
const MIN_THRESHOLD: f64 = 6.0;
const MAX_THRESHOLD: f64 = 600.0;
/// Adaptation gains per ms: towards a larger trend, towards a smaller one.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// A trend this far above the threshold is a real spike: the threshold does not chase it.
const MAX_ADAPT_OFFSET: f64 = 15.0;
/// Longest step of adaptation, ms.
const MAX_ADAPT_STEP_MS: f64 = 100.0;
/// Overuse must last this long (ms of send time).
const OVERUSE_TIME_MS: f64 = 10.0;

#[derive(Debug)]
pub struct OveruseDetector {
    threshold: f64,
    last_adapt_us: Option<i64>,
    /// ms over the threshold so far; `None` when not over it.
    time_over_ms: Option<f64>,
    over_count: u32,
    previous_slope: f64,
    usage: Usage,
}

impl Default for OveruseDetector {
    fn default() -> OveruseDetector {
        OveruseDetector {
            threshold: INITIAL_THRESHOLD,
            last_adapt_us: None,
            time_over_ms: None,
            over_count: 0,
            previous_slope: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl OveruseDetector {
    pub fn usage(&self) -> Usage {
        self.usage
    }

    pub fn detect(&mut self, trend: Trend) -> Usage {
        let m = trend.modified;
        if m > self.threshold {
            let over = match self.time_over_ms {
                // Half the spacing: the crossing happened somewhere within it.
                None => trend.send_delta_ms / 2.0,
                Some(t) => t + trend.send_delta_ms,
            };
            self.time_over_ms = Some(over);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS && self.over_count > 1 && trend.slope >= self.previous_slope {
                self.time_over_ms = Some(0.0);
                self.over_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if m < -self.threshold {
            self.time_over_ms = None;
            self.over_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.time_over_ms = None;
            self.over_count = 0;
            self.usage = Usage::Normal;
        }
        self.previous_slope = trend.slope;
        self.adapt(m.abs(), trend.arrival_us);
        self.usage
    }

    fn adapt(&mut self, m: f64, now_us: i64) {
        let last = *self.last_adapt_us.get_or_insert(now_us);
        self.last_adapt_us = Some(now_us);
        if m > self.threshold + MAX_ADAPT_OFFSET {
            return;
        }
        let k = if m < self.threshold { K_DOWN } else { K_UP };
        let step_ms = ((now_us - last) as f64 / 1000.0).clamp(0.0, MAX_ADAPT_STEP_MS);
        self.threshold = (self.threshold + k * (m - self.threshold) * step_ms).clamp(MIN_THRESHOLD, MAX_THRESHOLD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trend(slope: f64, modified: f64, arrival_ms: i64) -> Trend {
        Trend { slope, modified, send_delta_ms: 33.0, arrival_us: arrival_ms * 1000 }
    }

    #[test]
    fn overuse_needs_two_rising_samples_above_the_threshold() {
        let mut d = OveruseDetector::default();
        assert_eq!(d.detect(trend(0.0, 0.0, 0)), Usage::Normal);
        assert_eq!(d.detect(trend(0.2, 40.0, 33)), Usage::Normal);
        assert_eq!(d.detect(trend(0.3, 50.0, 66)), Usage::Overusing);
        // Stays overusing while above, back to normal below, underusing far below.
        assert_eq!(d.detect(trend(0.3, 50.0, 99)), Usage::Overusing);
        assert_eq!(d.detect(trend(0.0, 0.0, 132)), Usage::Normal);
        assert_eq!(d.detect(trend(-0.3, -50.0, 165)), Usage::Underusing);
    }

    #[test]
    fn a_falling_trend_is_not_overuse() {
        let mut d = OveruseDetector::default();
        d.detect(trend(0.5, 60.0, 0));
        assert_eq!(d.detect(trend(0.4, 55.0, 33)), Usage::Normal);
    }

    #[test]
    fn the_threshold_follows_a_steady_trend() {
        let mut d = OveruseDetector::default();
        // A trend just above the start threshold, for 10 s: the threshold rises to meet it.
        for i in 0..300 {
            d.detect(trend(0.0, 20.0, i * 33));
        }
        assert!(d.threshold > 19.0, "{}", d.threshold);
        // A calm path lowers it to its floor.
        for i in 300..600 {
            d.detect(trend(0.0, 0.0, i * 33));
        }
        assert_eq!(d.threshold, MIN_THRESHOLD);
    }
}
