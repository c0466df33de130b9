//! Failed WebSocket authentications are an attacker's to produce: each one is logged at debug,
//! and at warn only one summary line per window, so nobody outside sets the log volume.

use super::credentials::AuthError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warn line per this.
pub const SUMMARY_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct AuthFailureLog(Mutex<Window>);

#[derive(Default)]
struct Window {
    /// When the last warn line was written.
    last_summary: Option<Instant>,
    /// Failures since then.
    unreported: u64,
}

impl AuthFailureLog {
    pub fn record(&self, remote: &str, error: &AuthError) {
        tracing::debug!(%remote, %error, "WebSocket authentication failed");
        if let Some(since) = self.due(Instant::now()) {
            tracing::warn!(
                %remote,
                %error,
                failures = since,
                "WebSocket authentications failed ({since} since the last summary; each one is logged at debug)"
            );
        }
    }

    /// Counts a failure; `Some(count)` when a summary is due.
    fn due(&self, now: Instant) -> Option<u64> {
        let mut w = self.0.lock().expect("never poisoned: no panics under the lock");
        w.unreported += 1;
        if w.last_summary.is_some_and(|at| now.saturating_duration_since(at) < SUMMARY_WINDOW) {
            return None;
        }
        w.last_summary = Some(now);
        Some(std::mem::take(&mut w.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_summary_per_window_counting_what_it_stood_for() {
        let log = AuthFailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.due(t0), Some(1));
        for _ in 0..99 {
            assert_eq!(log.due(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(log.due(t0 + SUMMARY_WINDOW), Some(100));
    }
}
