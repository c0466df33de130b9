//! The queue from a shard to one session's WebSocket task, bounded in events and in bytes. The
//! shard never waits on it: when a session's WebSocket falls this far behind, the session is the
//! one dropped (its own slowness costs nobody else memory or time).

use ringsfu_core::sfu::SessionEvent;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// Events a session's WebSocket may lag behind before it is dropped as too slow.
pub const SESSION_QUEUE_EVENTS: usize = 4096;
/// Bytes of JSON (as [`SessionEvent::queued_bytes`] counts them) a session may lag behind: 16
/// of the largest broadcasts, 16× what one sender may burst in a second.
pub const SESSION_QUEUE_BYTES: usize = 4 << 20;

/// The shard's end.
#[derive(Debug)]
pub struct Outbox {
    /// Each event with the bytes it was counted for, given back when it is taken out.
    events: mpsc::Sender<(usize, SessionEvent)>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The WebSocket task's end.
#[derive(Debug)]
pub struct Inbox {
    events: mpsc::Receiver<(usize, SessionEvent)>,
    queued: Arc<AtomicUsize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Over the event or byte bound: the receiver is too slow.
    Full,
    /// The WebSocket task is gone.
    Closed,
}

/// A queue bounded at `max_events` events and `max_bytes` bytes.
pub fn outbox(max_events: usize, max_bytes: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(max_events);
    let queued = Arc::new(AtomicUsize::new(0));
    (Outbox { events: tx, queued: queued.clone(), max_bytes }, Inbox { events: rx, queued })
}

impl Outbox {
    pub fn try_send(&self, event: SessionEvent) -> Result<(), Refused> {
        let size = event.queued_bytes();
        if self.queued.load(Ordering::Relaxed) + size > self.max_bytes {
            return Err(if self.events.is_closed() { Refused::Closed } else { Refused::Full });
        }
        // Counted before the send, so the receiver's subtraction can never come first.
        self.queued.fetch_add(size, Ordering::Relaxed);
        self.events.try_send((size, event)).map_err(|e| {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }
}

impl Inbox {
    /// The next event; `None` once the shard dropped this session's queue.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        let (size, event) = self.events.recv().await?;
        self.queued.fetch_sub(size, Ordering::Relaxed);
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsfu_core::protocol::CloseCode;

    fn broadcast(bytes: usize) -> SessionEvent {
        SessionEvent::Broadcast { payload: "x".repeat(bytes).into() }
    }

    #[tokio::test]
    async fn bounded_in_bytes_and_in_events_and_freed_as_the_receiver_reads() {
        let (tx, mut rx) = outbox(4, 10_000);
        tx.try_send(broadcast(4_000)).unwrap();
        tx.try_send(broadcast(4_000)).unwrap();
        assert_eq!(tx.try_send(broadcast(4_000)), Err(Refused::Full), "12 kB of 10 kB");
        rx.recv().await.unwrap();
        tx.try_send(broadcast(4_000)).unwrap();
        tx.try_send(SessionEvent::Close { code: CloseCode::Error, reason: "".into() }).unwrap();
        tx.try_send(SessionEvent::Close { code: CloseCode::Error, reason: "".into() }).unwrap();
        assert_eq!(
            tx.try_send(SessionEvent::Close { code: CloseCode::Error, reason: "".into() }),
            Err(Refused::Full),
            "five small events of four"
        );
        drop(rx);
        assert_eq!(tx.try_send(broadcast(1)), Err(Refused::Closed));
    }
}
