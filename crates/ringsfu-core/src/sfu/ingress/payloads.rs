//! Where a received packet's payload lives while subscribers may still ask for it again.
//!
//! Each producer layer has a ring of shared buffers. A packet's payload is copied (or opened)
//! into the next one, every consumer's retransmission ring keeps a reference to it, and once no
//! consumer holds it any more the ring writes the next packet into the same memory. In a steady
//! stream nothing is allocated: consumers keep fewer packets (`RTX_BUFFER_PACKETS`) than the ring
//! has slots, so by the time a slot comes round again its last reference is gone. A consumer
//! that keeps a buffer longer (paused, or switched to another layer) costs one new buffer.

use std::sync::Arc;

/// A received payload, shared by the consumers that forwarded it.
pub type Payload = Arc<Vec<u8>>;

/// Slots of a video layer's ring: a consumer's retransmission ring and half as many again, so
/// that a slot's buffer is free again when its turn comes (a consumer that forwards the layer
/// let go of it 128 packets earlier; reordering and retransmissions are far fewer).
pub const VIDEO_SLOTS: usize = crate::sfu::forward::rtx::RTX_BUFFER_PACKETS * 3 / 2;
/// Audio is not retransmitted: a buffer is free again as soon as the fan-out is done.
pub const AUDIO_SLOTS: usize = 2;
/// Capacity of a new buffer: any payload that fits in a datagram.
const BUFFER_CAPACITY: usize = 1500;

#[derive(Debug)]
pub struct PayloadRing {
    slots: Vec<Payload>,
    len: usize,
    next: usize,
}

impl PayloadRing {
    /// An empty ring of `len` slots; buffers are made as packets arrive.
    pub fn new(len: usize) -> PayloadRing {
        PayloadRing { slots: Vec::new(), len: len.max(1), next: 0 }
    }

    /// An empty buffer for the next payload, to fill through [`Arc::get_mut`] (it is not
    /// shared yet); it stays in the ring.
    pub fn next_buffer(&mut self) -> &mut Payload {
        let i = self.next;
        self.next = (self.next + 1) % self.len;
        if i == self.slots.len() {
            self.slots.push(Arc::new(Vec::with_capacity(BUFFER_CAPACITY)));
        }
        let slot = &mut self.slots[i];
        match Arc::get_mut(slot) {
            Some(buf) => buf.clear(),
            // Still held by a consumer: that one keeps it, the ring takes a new buffer.
            None => *slot = Arc::new(Vec::with_capacity(BUFFER_CAPACITY)),
        }
        slot
    }

    /// A copy of `bytes` in the next buffer.
    pub fn store(&mut self, bytes: &[u8]) -> &Payload {
        let slot = self.next_buffer();
        Arc::get_mut(slot).expect("next_buffer hands out an unshared buffer").extend_from_slice(bytes);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_round_again_unless_someone_still_holds_them() {
        let mut ring = PayloadRing::new(3);
        let first = Arc::as_ptr(ring.store(b"one"));
        let held = ring.store(b"two").clone();
        ring.store(b"three");
        // Slot 0 is free again: the same memory, the new bytes.
        let again = ring.store(b"four");
        assert_eq!(Arc::as_ptr(again), first);
        assert_eq!(again.as_slice(), b"four");
        // Slot 1 is still held: a new buffer, and the holder keeps its bytes.
        let other = ring.store(b"five");
        assert_ne!(Arc::as_ptr(other), Arc::as_ptr(&held));
        assert_eq!(held.as_slice(), b"two");
        assert_eq!(other.as_slice(), b"five");
    }
}
