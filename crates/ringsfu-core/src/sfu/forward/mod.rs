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

use super::consumer::{Consumer, Egress};
use super::ingress::payloads::Payload;
use super::shard::Shard;
use super::transport::{SsrcRoute, TransportKey};
use crate::sfu::counters::DropReason;
use std::time::{Duration, Instant};
use str0m::media::MediaKind;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, VideoOrientation};

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

impl Shard {
    /// A producer's packet, opened by str0m, arrived on receiving transport `from`.
    pub(crate) fn forward_rtp(&mut self, now: Instant, from: TransportKey, packet: RtpPacket) {
        let ssrc = *packet.header.ssrc;
        let Some(route) = self.transports.get(from).and_then(|t| t.ssrcs.get(&ssrc)).copied() else {
            self.out.counters.drop(DropReason::UnknownStream);
            return;
        };
        let Some(layer) = self.producers.get_mut(route.producer).and_then(|p| p.layers.get_mut(route.layer as usize))
        else {
            return;
        };
        // Into the layer's ring like the packets ringsfu opens itself: one copy, no allocation
        // once the ring is full (str0m's own `Arc` per packet is allocated before this).
        let payload = layer.payloads.store(&packet.payload).clone();
        let ext = &packet.header.ext_vals;
        let received = Received {
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload_type: *packet.header.payload_type,
            header_len: packet.header.header_len,
            audio_level: ext.audio_level.map(|level| (level.unsigned_abs(), ext.voice_activity.unwrap_or(false))),
            video_orientation: ext.video_orientation.map(|o| o as u8),
            payload: &payload,
        };
        self.forward(now, route, &received);
    }

    /// Fans a producer's packet out to its consumers on this shard.
    pub(crate) fn forward(&mut self, now: Instant, route: SsrcRoute, packet: &Received) {
        let Shard { producers, consumers, transports, out, .. } = self;
        let Some(producer) = producers.get_mut(route.producer) else { return };
        let Some(router_payload_type) = producer.params.router_payload_type(packet.payload_type) else {
            out.counters.drop(DropReason::UnknownStream);
            return;
        };
        let bytes = packet.payload.len() + packet.header_len;
        producer.meter.add(now, bytes);
        let video = producer.kind() == MediaKind::Video;
        let keyframe = !video || keyframe::starts_keyframe(producer.params.codecs[0].mime, packet.payload);
        let Some(layer) = producer.layers.get_mut(route.layer as usize) else { return };
        layer.meter.add(now, bytes);
        let late = layer.highest_seq.is_some_and(|highest| packet.seq < highest);
        if !late {
            layer.highest_seq = Some(packet.seq);
        }
        if keyframe {
            layer.keyframe_pending = false;
        }
        if producer.paused {
            return;
        }
        let incoming = Incoming {
            layer: route.layer,
            seq: packet.seq,
            timestamp: packet.timestamp,
            router_payload_type,
            keyframe,
            late,
            producer_paused: false,
        };
        // Every layer some consumer waits for a keyframe of (bit i: layer i); each is asked for.
        let mut want_keyframes = 0u8;
        for i in 0..producer.forwarding.len() {
            let ck = producer.forwarding[i];
            let Some(c) = consumers.get_mut(ck) else { continue };
            let Some(t) = transports.get_mut(c.transport) else { continue };
            let decision = c.decide(&incoming, t.connected, now);
            if let Some(l) = c.wants_keyframe() {
                want_keyframes |= 1 << l.min(7);
            }
            let Decision::Forward { seq, timestamp, payload_type } = decision else { continue };
            match &mut c.egress {
                Egress::Str0m => {}
                Egress::Direct(stream) => {
                    let (Some(srtp), Some(dest)) = (t.srtp.as_mut(), t.media_dest) else { continue };
                    // Picture ids continue across layer switches: written over the copy.
                    let vp8 = c
                        .vp8
                        .as_mut()
                        .and_then(|v| v.rewritten(packet.payload))
                        .filter(|r| r.patch.is_some())
                        .map(|r| (r.picture_id, r.tl0_pic_idx));
                    let outgoing = direct::Outgoing {
                        seq,
                        timestamp,
                        payload_type,
                        marker: packet.marker,
                        audio_level: packet.audio_level,
                        video_orientation: packet.video_orientation,
                        vp8,
                        payload: packet.payload,
                    };
                    let twcc = stream.has_twcc().then_some(t.twcc_next);
                    let mut size = 0;
                    let sent = out.transmit_with(dest, |buf| {
                        let written = stream.write_rtp(srtp, buf, now, &outgoing, twcc);
                        size = buf.len();
                        written
                    });
                    if sent {
                        out.counters.rtp_forwarded += 1;
                        out.counters.rtp_forwarded_direct += 1;
                        stream.remember(&outgoing, packet.payload);
                        if let Some(seq) = twcc {
                            t.sent_twcc(seq, size, None, now);
                        }
                    }
                    continue;
                }
                Egress::Undecided => continue,
            }
            let Some(rtc) = t.rtc.as_mut() else { continue };
            let mut api = rtc.direct_api();
            let Some(stream) = api.stream_tx(&c.ssrc.into()) else { continue };
            let mut ext = ExtensionValues::default();
            if c.extensions.audio_level
                && let Some((level, voice)) = packet.audio_level
            {
                ext.audio_level = Some(-(level as i8));
                ext.voice_activity = Some(voice);
            }
            if c.extensions.video_orientation {
                ext.video_orientation = packet.video_orientation.map(|o| VideoOrientation::from(o & 3));
            }
            // str0m's send path takes its own shared copy (this fallback allocates per packet).
            let payload: std::sync::Arc<[u8]> = packet.payload.as_slice().into();
            let mut write = RtpWrite::new(payload_type.into(), seq.into(), timestamp, now, payload)
                .marker(packet.marker)
                .nackable(video)
                .ext_vals(ext);
            if let Some(patch) = c.vp8.as_mut().and_then(|v| v.rewrite(packet.payload)) {
                write = write.vp8_patch(patch);
            }
            stream.write_rtp(write);
            out.counters.rtp_forwarded += 1;
            // No poll here: a write only queues; `settle` gives each written `Rtc` one timeout and
            // polls it once for all the packets this wake-up wrote to it.
            out.needs_poke(c.transport, t);
        }
        while want_keyframes != 0 {
            let layer = want_keyframes.trailing_zeros() as u8;
            want_keyframes &= want_keyframes - 1;
            self.request_keyframe(now, route.producer, layer);
        }
    }
}
