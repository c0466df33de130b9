//! The packets a video consumer sent recently, so that the ones its subscriber reports lost
//! (RTCP generic NACK) can be sent again on the RTX stream (RFC 4588).
//!
//! One fixed ring per consumer, indexed by the outgoing sequence number: storing a packet is a
//! reference count on the received payload (shared with every other subscriber) and a few
//! numbers, no copy and no allocation after the ring is made.

use crate::sfu::ingress::payloads::Payload;
use std::time::{Duration, Instant};

/// Packets kept per consumer: about 1 s of a 720p layer (~250 packets/s). A NACK names packets
/// lost a round trip ago, so older ones are rarely asked for, and by then a keyframe request
/// is the better repair. (Each kept packet also holds a buffer of its layer's payload ring: 512
/// made a 10-person meeting's shard hold 3.6 MB per session in payload rings alone.)
pub const RTX_BUFFER_PACKETS: usize = 256;
/// A packet is not resent again within this time: a subscriber repeats its NACK until the
/// retransmission arrives, and on a long round trip the repeats would each cost a copy.
pub const RESEND_HOLD_OFF: Duration = Duration::from_millis(40);
/// Retransmissions one consumer may send per `RESEND_WINDOW`: about 2.4 Mbit/s of 1,200-byte
/// packets, ten times what 5 % loss of a 720p layer asks for. A subscriber that NACKs everything
/// it ever received cannot make the shard resend its whole ring every hold-off.
pub const MAX_RESENDS_PER_WINDOW: u32 = 25;
pub const RESEND_WINDOW: Duration = Duration::from_millis(100);

/// One sent packet as it can be repeated.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Extended outgoing sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub video_orientation: Option<u8>,
    pub vp8: Option<(u16, Option<u8>)>,
    pub payload: Payload,
    pub resent_at: Option<Instant>,
}

#[derive(Debug)]
pub struct RtxBuffer {
    slots: Box<[Option<Sent>]>,
    /// The current resend window's start and the resends in it.
    window: Option<(Instant, u32)>,
}

impl Default for RtxBuffer {
    fn default() -> Self {
        RtxBuffer::new()
    }
}

impl RtxBuffer {
    pub fn new() -> RtxBuffer {
        RtxBuffer { slots: (0..RTX_BUFFER_PACKETS).map(|_| None).collect(), window: None }
    }

    fn slot(seq: u64) -> usize {
        seq as usize % RTX_BUFFER_PACKETS
    }

    pub fn store(&mut self, sent: Sent) {
        let i = Self::slot(sent.seq);
        self.slots[i] = Some(sent);
    }

    /// The packet whose sequence number ends in `seq`, if kept, not resent within the hold-off
    /// and within the consumer's resend budget; marks it resent now.
    pub fn take_for_resend(&mut self, seq: u16, now: Instant) -> Option<&Sent> {
        // The ring's size divides 2^16, so the 16 bits on the wire name the slot.
        let slot = self.slots[seq as usize % RTX_BUFFER_PACKETS].as_mut()?;
        if slot.seq as u16 != seq {
            return None;
        }
        if slot.resent_at.is_some_and(|at| now.saturating_duration_since(at) < RESEND_HOLD_OFF) {
            return None;
        }
        let window = match self.window {
            Some((start, count)) if now.saturating_duration_since(start) < RESEND_WINDOW => (start, count),
            _ => (now, 0),
        };
        if window.1 >= MAX_RESENDS_PER_WINDOW {
            return None;
        }
        self.window = Some((window.0, window.1 + 1));
        slot.resent_at = Some(now);
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seq: u64) -> Sent {
        Sent {
            seq,
            timestamp: 1,
            payload_type: 96,
            marker: false,
            video_orientation: None,
            vp8: None,
            payload: std::sync::Arc::new(vec![1u8, 2, 3]),
            resent_at: None,
        }
    }

    #[test]
    fn a_kept_packet_is_resent_once_per_hold_off_and_overwritten_ones_are_gone() {
        let mut b = RtxBuffer::new();
        let now = Instant::now();
        for seq in 0x1_fff0..0x2_0010u64 {
            b.store(sent(seq));
        }
        // Across the 16-bit wrap.
        assert_eq!(b.take_for_resend(0xfff5, now).map(|s| s.seq), Some(0x1_fff5));
        assert_eq!(b.take_for_resend(0x0005, now).map(|s| s.seq), Some(0x2_0005));
        assert!(b.take_for_resend(0x0005, now + Duration::from_millis(10)).is_none(), "held off");
        assert!(b.take_for_resend(0x0005, now + RESEND_HOLD_OFF).is_some());
        // Never stored, and overwritten by a newer packet in the same slot.
        assert!(b.take_for_resend(0x0100, now).is_none());
        b.store(sent(0x2_0005 + RTX_BUFFER_PACKETS as u64));
        assert!(b.take_for_resend(0x0005, now + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_subscriber_that_nacks_everything_gets_a_bounded_number_of_resends() {
        let mut b = RtxBuffer::new();
        let now = Instant::now();
        for seq in 0..RTX_BUFFER_PACKETS as u64 {
            b.store(sent(seq));
        }
        let resent = |b: &mut RtxBuffer, at: Instant| {
            (0..RTX_BUFFER_PACKETS as u16).filter(|s| b.take_for_resend(*s, at).is_some()).count()
        };
        assert_eq!(resent(&mut b, now), MAX_RESENDS_PER_WINDOW as usize);
        // The next window allows as many again, no more.
        assert_eq!(resent(&mut b, now + RESEND_WINDOW), MAX_RESENDS_PER_WINDOW as usize);
    }
}
