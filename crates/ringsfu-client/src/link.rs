//! A constrained network path for tests: loss, and a bottleneck that queues (delay grows) and
//! drops when its queue is full, like a real slow link, so bandwidth estimators react as they
//! would in the field.

use std::time::{Duration, Instant};

/// A downlink condition applied to datagrams towards one participant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    /// Fraction of datagrams dropped (deterministically, by a counter).
    pub loss: f64,
    /// A bottleneck of this many bits per second: datagrams queue behind each other (delay
    /// grows, as on a real constrained link) and are dropped when the queue holds more than
    /// `MAX_QUEUE` of traffic.
    pub rate_bps: Option<u64>,
}

/// Longest a datagram may wait in a bottleneck's queue before it is dropped.
pub const MAX_QUEUE: Duration = Duration::from_millis(200);

pub struct Bottleneck {
    link: Link,
    busy_until: Option<Instant>,
    loss_acc: f64,
}

impl Bottleneck {
    pub fn new(link: Link) -> Bottleneck {
        Bottleneck { link, busy_until: None, loss_acc: 0.0 }
    }

    /// When the datagram leaves the bottleneck, or `None` if it is lost.
    pub fn admit(&mut self, now: Instant, bytes: usize) -> Option<Instant> {
        self.loss_acc += self.link.loss;
        if self.loss_acc >= 1.0 {
            self.loss_acc -= 1.0;
            return None;
        }
        let Some(rate) = self.link.rate_bps else { return Some(now) };
        let start = self.busy_until.map_or(now, |b| b.max(now));
        if start.saturating_duration_since(now) > MAX_QUEUE {
            return None;
        }
        let sending = Duration::from_nanos(bytes as u64 * 8 * 1_000_000_000 / rate.max(1));
        self.busy_until = Some(start + sending);
        Some(start + sending)
    }
}
