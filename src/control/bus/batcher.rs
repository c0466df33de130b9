//! The bus's outgoing batching, as upstream's: the first message of a burst goes out at once,
//! the ones that follow within the window go out together when it ends; after that the next
//! message goes out at once again. Unbatched messages (replies, `INIT_TRANSPORTS`) bypass it.

use serde_json::Value;
use std::time::{Duration, Instant};

/// Upstream server's batch window.
pub const BATCH_WINDOW: Duration = Duration::from_millis(300);

#[derive(Debug, Default)]
pub struct Batcher {
    queue: Vec<Value>,
    window_end: Option<Instant>,
}

impl Batcher {
    /// Envelopes to send now as one frame, if any.
    pub fn push(&mut self, now: Instant, envelope: Value, batch: bool) -> Option<Vec<Value>> {
        if !batch {
            return Some(vec![envelope]);
        }
        if self.window_end.is_some() {
            self.queue.push(envelope);
            return None;
        }
        self.window_end = Some(now + BATCH_WINDOW);
        Some(vec![envelope])
    }

    /// When `on_window_end` must be called.
    pub fn deadline(&self) -> Option<Instant> {
        self.window_end
    }

    pub fn on_window_end(&mut self) -> Option<Vec<Value>> {
        self.window_end = None;
        (!self.queue.is_empty()).then(|| std::mem::take(&mut self.queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// upstream's "Bus does batch messages": 5 sends → 1 now, 4 at the end of the window; the
    /// next burst again starts with one sent at once.
    #[test]
    fn first_of_a_burst_goes_at_once_the_rest_at_window_end() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        assert_eq!(b.push(t0, json!(1), true), Some(vec![json!(1)]));
        for i in 2..=5 {
            assert_eq!(b.push(t0, json!(i), true), None);
        }
        assert_eq!(b.deadline(), Some(t0 + BATCH_WINDOW));
        // A reply in the middle is not delayed.
        assert_eq!(b.push(t0, json!("reply"), false), Some(vec![json!("reply")]));
        assert_eq!(b.on_window_end(), Some(vec![json!(2), json!(3), json!(4), json!(5)]));
        assert_eq!(b.deadline(), None);
        let t1 = t0 + BATCH_WINDOW;
        assert_eq!(b.push(t1, json!(6), true), Some(vec![json!(6)]));
        assert_eq!(b.on_window_end(), None);
    }
}
