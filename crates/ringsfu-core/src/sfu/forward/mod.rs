//! The packet path: an RTP packet of a producer goes to each of its consumers on this shard.
//!
//! Decide, then apply: each consumer first turns the packet into a [`Decision`] (forward with
//! these numbers, or drop for this reason) without touching it; then the packet is written to
//! the subscriber's transport. Nothing here allocates: the payload sits in its layer's ring
//! (`ingress::payloads`) and is shared by reference count, decisions are values, and the
//! consumer lists are walked by index.

pub mod direct;
pub mod keyframe;
pub mod layer;
pub mod munger;
pub mod rtx;
pub mod vp8;

use super::consumer::Consumer;
use super::ingress::payloads::Payload;
use std::time::{Duration, Instant};
use str0m::media::MediaKind;

/// A layer that sent nothing for this long is not arriving (the publisher stopped it).
pub const LAYER_SILENCE: Duration = Duration::from_millis(1000);

/// Why a consumer did not forward a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Paused by either side, or not acknowledged yet.
    Inactive,
    /// Another simulcast layer is forwarded to this subscriber.
    OtherLayer,
    /// The stream (re)starts at a keyframe of the target layer; this is not one.
    WaitingKeyframe,
    /// A late packet from before the current anchor.
    Stale,
    /// The subscriber cannot decode this payload type.
    Codec,
    /// The subscriber's transport has no DTLS yet.
    NotConnected,
}

/// What to do with one packet for one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward { seq: u64, timestamp: u32, payload_type: u8 },
    Skip(Skip),
}

/// A publisher's packet as the fan-out needs it, whichever receive path opened it (ringsfu's
/// own, `ingress`, or str0m's).
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// Extended sequence number of the media stream (a retransmission's original one).
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// The publisher's media payload type (not its RTX one).
    pub payload_type: u8,
    /// Header bytes on the wire (for the rate meters).
    pub header_len: usize,
    /// RFC 6464 level and voice activity.
    pub audio_level: Option<(u8, bool)>,
    pub video_orientation: Option<u8>,
    pub payload: &'a Payload,
}

/// The facts about one incoming packet that every consumer's decision needs.
#[derive(Debug, Clone, Copy)]
pub struct Incoming {
    pub layer: u8,
    pub seq: u64,
    pub timestamp: u32,
    pub router_payload_type: u8,
    /// The packet starts a keyframe (always true for audio: any packet may start it).
    pub keyframe: bool,
    /// Older than a packet of its layer that arrived before it (reordered, or a retransmission
    /// the publisher sent after a NACK).
    pub late: bool,
    pub producer_paused: bool,
}

impl Consumer {
    /// The per-consumer decision for one packet. Switches happen here, at a keyframe of the
    /// target layer; until then the current layer keeps flowing.
    pub fn decide(&mut self, packet: &Incoming, transport_connected: bool, now: Instant) -> Decision {
        if !self.is_active(packet.producer_paused) {
            return Decision::Skip(Skip::Inactive);
        }
        if !transport_connected {
            return Decision::Skip(Skip::NotConnected);
        }
        if self.current != Some(packet.layer) {
            if self.target != Some(packet.layer) {
                return Decision::Skip(if self.current.is_some() { Skip::OtherLayer } else { Skip::WaitingKeyframe });
            }
            // A late keyframe start does not open the switch: the packets after it that already
            // went by were skipped, and anchoring the numbering on it would leave them as a gap
            // the subscriber can never fill.
            if !packet.keyframe || packet.late {
                return Decision::Skip(Skip::WaitingKeyframe);
            }
            // (Re)start on the target layer: continue the outgoing numbering from here.
            self.current = Some(packet.layer);
            self.munger.rebase();
            if let Some(v) = self.vp8.as_mut() {
                v.rebase();
            }
        }
        let Some(payload_type) = self.payload_type_for(packet.router_payload_type) else {
            return Decision::Skip(Skip::Codec);
        };
        match self.munger.munge(packet.seq, packet.timestamp, now, self.clock_rate) {
            Some(m) => Decision::Forward { seq: m.seq, timestamp: m.timestamp, payload_type },
            None => Decision::Skip(Skip::Stale),
        }
    }

    /// The layer this consumer needs a keyframe of, if it waits for one.
    pub fn wants_keyframe(&self) -> Option<u8> {
        match (self.current, self.target) {
            (current, Some(target)) if current != Some(target) && self.kind == MediaKind::Video => Some(target),
            _ => None,
        }
    }
}
