//! The fan-out: a producer's packet to each of its consumers on this shard (the decisions
//! themselves are `sfu::forward`'s).

use super::Router;
use crate::sfu::consumer::Egress;
use crate::sfu::context::Context;
use crate::sfu::counters::DropReason;
use crate::sfu::forward::{Decision, Incoming, Received, direct, keyframe};
use crate::sfu::relay::{Relay, RelayMessage, RelayedPacket};
use crate::sfu::transport::{SsrcRoute, TransportKey};
use std::time::Instant;
use str0m::media::MediaKind;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, VideoOrientation};

impl Router {
    /// A producer's packet, opened by str0m, arrived on receiving transport `from`.
    pub(crate) fn forward_rtp(&mut self, cx: &mut Context, now: Instant, from: TransportKey, packet: RtpPacket) {
        let ssrc = *packet.header.ssrc;
        let Some(route) = cx.transports.get(from).and_then(|t| t.ssrcs.get(&ssrc)).copied() else {
            cx.out.counters.drop(DropReason::UnknownStream);
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
        self.forward(cx, now, route, &received);
    }

    /// Fans a producer's packet out to its consumers on this shard.
    pub(crate) fn forward(&mut self, cx: &mut Context, now: Instant, route: SsrcRoute, packet: &Received) {
        let Router { producers, consumers, peers, id: channel, .. } = self;
        let Context { transports, out, .. } = cx;
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
        if producer.transport.is_some() {
            // The other parts of the channel get the packet once each, its payload shared.
            for &peer in peers.iter() {
                let relayed = RelayedPacket::new(producer.id, route.layer, packet);
                out.counters.rtp_relayed_out += 1;
                out.relay.push_back((peer, Relay { channel: *channel, message: RelayMessage::Packet(relayed) }));
            }
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
            self.request_keyframe(cx, now, route.producer, layer);
        }
    }
}
