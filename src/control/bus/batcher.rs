//! The bus's outgoing batching, as upstream's: the first message of a burst goes out at once,
//! the ones that follow within the window go out together when it ends; after that the next
//! message goes out at once again. Unbatched messages (replies, `INIT_TRANSPORTS`) bypass it.

use std::time::{Duration, Instant};

/// Upstream server's batch window.
pub const BATCH_WINDOW: Duration = Duration::from_millis(300);
/// A batch this large goes out at once, before its window ends: what waits in a window is
/// bounded in bytes, not only in time.
pub const MAX_BATCH_BYTES: usize = 64 << 10;

#[derive(Debug, Default)]
pub struct Batcher {
    /// Serialized envelopes.
    queue: Vec<String>,
    /// Bytes in `queue`.
    bytes: usize,
    window_end: Option<Instant>,
}

impl Batcher {
    /// Envelopes to send now as one frame, if any.
    pub fn push(&mut self, now: Instant, envelope: String, batch: bool) -> Option<Vec<String>> {
        if !batch {
            return Some(vec![envelope]);
        }
        if self.window_end.is_some() {
            self.bytes += envelope.len();
            self.queue.push(envelope);
            if self.bytes >= MAX_BATCH_BYTES {
                self.bytes = 0;
                return Some(std::mem::take(&mut self.queue));
            }
            return None;
        }
        self.window_end = Some(now + BATCH_WINDOW);
        Some(vec![envelope])
    }

    /// When `on_window_end` must be called.
    pub fn deadline(&self) -> Option<Instant> {
        self.window_end
    }

    pub fn on_window_end(&mut self) -> Option<Vec<String>> {
        self.window_end = None;
        self.bytes = 0;
        (!self.queue.is_empty()).then(|| std::mem::take(&mut self.queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(text: &str) -> String {
        text.to_string()
    }

    /// upstream's "Bus does batch messages": 5 sends → 1 now, 4 at the end of the window; the
    /// next burst again starts with one sent at once.
    #[test]
    fn first_of_a_burst_goes_at_once_the_rest_at_window_end() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        assert_eq!(b.push(t0, e("1"), true), Some(vec![e("1")]));
        for i in 2..=5 {
            assert_eq!(b.push(t0, i.to_string(), true), None);
        }
        assert_eq!(b.deadline(), Some(t0 + BATCH_WINDOW));
        // A reply in the middle is not delayed.
        assert_eq!(b.push(t0, e("reply"), false), Some(vec![e("reply")]));
        assert_eq!(b.on_window_end(), Some(vec![e("2"), e("3"), e("4"), e("5")]));
        assert_eq!(b.deadline(), None);
        let t1 = t0 + BATCH_WINDOW;
        assert_eq!(b.push(t1, e("6"), true), Some(vec![e("6")]));
        assert_eq!(b.on_window_end(), None);
    }

    #[test]
    fn a_batch_over_its_byte_bound_goes_out_before_its_window_ends() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        assert!(b.push(t0, e("first"), true).is_some());
        let big = "x".repeat(MAX_BATCH_BYTES / 2);
        assert_eq!(b.push(t0, big.clone(), true), None);
        assert_eq!(b.push(t0, big.clone(), true), Some(vec![big.clone(), big]));
        assert_eq!(b.push(t0, e("later"), true), None, "the window goes on");
        assert_eq!(b.on_window_end(), Some(vec![e("later")]));
    }
}
