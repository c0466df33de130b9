//! The acknowledged bitrate: what the path delivered recently, from the arrival times and sizes
//! of the packets feedback reports received (libwebrtc's AcknowledgedBitrateEstimator in role,
//! simpler in form). Bytes are counted in 150 ms windows of arrival time; each window's rate is
//! smoothed, faster downward so that a decrease on overuse lands on the rate the path carries
//! now rather than the one it carried a second ago.

const WINDOW_US: i64 = 150_000;
/// Weight of a new window's rate when it is above the estimate, and when below.
const RISE_GAIN: f64 = 0.3;
const FALL_GAIN: f64 = 0.5;

#[derive(Debug, Default)]
pub struct AckedRate {
    window_start_us: Option<i64>,
    window_bytes: u64,
    estimate: Option<f64>,
}

impl AckedRate {
    /// Bit/s; `None` before the first complete window.
    pub fn estimate(&self) -> Option<f64> {
        self.estimate
    }

    /// A packet feedback reports received (receiver's clock, µs).
    pub fn on_received(&mut self, arrival_us: i64, size: usize) {
        let start = *self.window_start_us.get_or_insert(arrival_us);
        let elapsed = arrival_us - start;
        if elapsed < WINDOW_US {
            // Within the window, or reordered before its start.
            self.window_bytes += size as u64;
            return;
        }
        if elapsed < 2 * WINDOW_US {
            let sample = self.window_bytes as f64 * 8.0 * 1_000_000.0 / WINDOW_US as f64;
            self.estimate = Some(match self.estimate {
                None => sample,
                Some(e) if sample < e => e + FALL_GAIN * (sample - e),
                Some(e) => e + RISE_GAIN * (sample - e),
            });
            self.window_start_us = Some(start + WINDOW_US);
        } else {
            // Nothing arrived for a whole window: the sender paused, which says nothing about
            // the path; start afresh.
            self.window_start_us = Some(arrival_us);
        }
        self.window_bytes = size as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(a: &mut AckedRate, from_ms: i64, to_ms: i64, bps: i64) {
        // 1,000-byte packets evenly spaced.
        let spacing_us = 8_000 * 1_000_000 / bps;
        let mut t = from_ms * 1000;
        while t < to_ms * 1000 {
            a.on_received(t, 1_000);
            t += spacing_us;
        }
    }

    #[test]
    fn measures_a_steady_rate_and_follows_a_drop_within_half_a_second() {
        let mut a = AckedRate::default();
        assert_eq!(a.estimate(), None);
        feed(&mut a, 0, 2_000, 2_000_000);
        let e = a.estimate().unwrap();
        assert!((1_900_000.0..2_100_000.0).contains(&e), "{e}");
        feed(&mut a, 2_000, 2_600, 500_000);
        let e = a.estimate().unwrap();
        assert!(e < 700_000.0, "{e}");
    }

    #[test]
    fn a_pause_is_not_a_zero_rate() {
        let mut a = AckedRate::default();
        feed(&mut a, 0, 1_000, 1_000_000);
        feed(&mut a, 3_000, 3_400, 1_000_000);
        let e = a.estimate().unwrap();
        assert!(e > 900_000.0, "{e}");
    }
}
