//! Bitrate of a stream over the last second, in O(1) per packet and without allocation.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes_in_window: u64,
    /// Bits per second measured over the last complete window; `None` before the first one and
    /// after a silence.
    last_rate: Option<u64>,
    last_packet: Option<Instant>,
}

impl RateMeter {
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            self.last_rate = if elapsed >= 2 * WINDOW {
                // The stream was silent for a while: the old window says nothing about now.
                None
            } else {
                Some(self.bytes_in_window * 8 * 1000 / elapsed.as_millis().max(1) as u64)
            };
            self.window_start = Some(now);
            self.bytes_in_window = 0;
        }
        self.bytes_in_window += bytes as u64;
        self.last_packet = Some(now);
    }

    /// Bits per second; 0 before a complete window and once the stream has been silent for two.
    pub fn rate(&self, now: Instant) -> u64 {
        self.measured_rate(now).unwrap_or(0)
    }

    /// Bits per second, or `None` when there is no current measurement: the stream has not
    /// filled a window yet (since it started or resumed), or has been silent for two.
    pub fn measured_rate(&self, now: Instant) -> Option<u64> {
        match self.last_packet {
            Some(t) if now.saturating_duration_since(t) < 2 * WINDOW => self.last_rate,
            _ => None,
        }
    }

    /// When the last packet arrived.
    pub fn last_packet(&self) -> Option<Instant> {
        self.last_packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_steady_stream_and_forgets_a_silent_one() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        // 100 packets of 1250 bytes per second = 1 Mbit/s.
        for i in 0..300 {
            m.add(t0 + Duration::from_millis(i * 10), 1250);
        }
        let now = t0 + Duration::from_millis(3000);
        let rate = m.rate(now);
        assert!((950_000..=1_050_000).contains(&rate), "{rate}");
        assert_eq!(m.rate(now + Duration::from_secs(2)), 0);
    }

    #[test]
    fn there_is_no_measurement_until_a_window_is_complete() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..40 {
            m.add(t0 + Duration::from_millis(i * 10), 1250);
        }
        assert_eq!(m.measured_rate(t0 + Duration::from_millis(400)), None, "400 ms of a 500 ms window");
        m.add(t0 + Duration::from_millis(500), 1250);
        assert!(m.measured_rate(t0 + Duration::from_millis(500)).is_some());
        // Silent, then back: unmeasured again until its next window closes.
        m.add(t0 + Duration::from_millis(3000), 1250);
        m.add(t0 + Duration::from_millis(3010), 1250);
        assert_eq!(m.measured_rate(t0 + Duration::from_millis(3010)), None);
    }
}
