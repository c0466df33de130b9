//! A publisher's RTP opened by ringsfu itself (`sfu::ingress` has the parts), and the timer
//! that answers the publisher: transport-wide feedback, NACKs, reports.

use super::Router;
use crate::sfu::context::Context;
use crate::sfu::counters::DropReason;
use crate::sfu::demux;
use crate::sfu::forward::Received;
use crate::sfu::ingress::receive::{Accepted, ReceiveStream};
use crate::sfu::ingress::rtcp_out::ReportBlock;
use crate::sfu::ingress::twcc::TwccReceiver;
use crate::sfu::ingress::{
    ASSUMED_RTT, MAX_FEEDBACK_PER_TIMEOUT, REPORT_INTERVAL, earliest, nack, next_due, read_u32, rtcp_out,
    without_padding,
};
use crate::sfu::outputs::Timer;
use crate::sfu::producer::ProducerKey;
use crate::sfu::transport::TransportKey;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;
use str0m::media::MediaKind;

impl Router {
    /// A publisher's RTP on a receiving transport with ringsfu's own ingress.
    pub(crate) fn receive_media(&mut self, cx: &mut Context, now: Instant, key: TransportKey, data: &[u8]) {
        let Some(t) = cx.transports.get(key) else { return };
        let Some(peek) = demux::peek_rtp(data, t.peek) else {
            cx.out.counters.drop(DropReason::Rejected);
            return;
        };
        // An SSRC seen for the first time is bound to its layer only once its packet proved
        // authentic: otherwise anyone who can send from the publisher's address could re-point
        // the layer's stream with a forged header.
        let (route, new_ssrc) = match t.ssrcs.get(&peek.ssrc) {
            Some(route) => (*route, false),
            None => match self.resolve_ssrc(cx, key, &peek) {
                Some(route) => (route, true),
                None => {
                    cx.out.counters.drop(DropReason::UnknownStream);
                    return;
                }
            },
        };
        let Router { producers, .. } = self;
        let Context { transports, out, .. } = cx;
        let t = &mut transports[key];
        let Some(ingress) = t.ingress.as_mut() else { return };
        let Some(producer) = producers.get_mut(route.producer) else { return };
        let clock_rate = producer.clock_rate;
        let video = producer.kind() == MediaKind::Video;
        let Some(layer) = producer.layers.get_mut(route.layer as usize) else { return };
        let known = if route.rtx { &mut layer.rtx_receive } else { &mut layer.receive };
        // A layer that moves to another SSRC starts a new stream, with its own numbering.
        let mut fresh = None;
        let stream = match known {
            Some(s) if s.ssrc() == peek.ssrc => s,
            _ => fresh.insert(ReceiveStream::new(peek.ssrc, clock_rate)),
        };
        let extended = stream.extend(peek.seq);

        // Opened where it stays: the layer's ring, which consumers keep references into.
        let slot = layer.payloads.next_buffer();
        let buf = Arc::get_mut(slot).expect("the ring hands out unshared buffers");
        buf.extend_from_slice(&data[peek.header_len..]);
        let Ok(mut len) = ingress.srtp.open_rtp(&data[..peek.header_len], buf, peek.ssrc, extended) else {
            buf.clear();
            out.counters.drop(DropReason::Rejected);
            return;
        };
        if peek.padding {
            let Some(unpadded) = without_padding(&buf[..len]) else {
                buf.clear();
                out.counters.drop(DropReason::Rejected);
                return;
            };
            len = unpadded;
        }
        buf.truncate(len);
        if stream.accept(extended, peek.timestamp, now) != Accepted::New {
            buf.clear();
            out.counters.drop(DropReason::Duplicate);
            return;
        }
        if let Some(stream) = fresh {
            if route.rtx {
                layer.rtx_receive = Some(stream);
            } else {
                layer.receive = Some(stream);
                layer.nack = None;
                layer.highest_seq = None;
            }
        }
        out.counters.rtp_received_direct += 1;
        // Authentic and new: it counts for the publisher's bandwidth estimate, padding included
        // (Chrome probes with padding-only packets).
        if let Some(seq) = peek.twcc {
            ingress.twcc.get_or_insert_with(|| Box::new(TwccReceiver::new())).record(seq, now);
        }

        // What to forward, if anything: a retransmission unwrapped into its media stream, or the
        // packet itself; not a padding-only probe, nor a retransmission of what arrived already.
        let forwarded: Option<(u64, u8)> = 'unwrap: {
            let (seq, payload_type) = if route.rtx {
                // RFC 4588: the original sequence number, then the original payload.
                if buf.len() < 2 {
                    break 'unwrap None;
                }
                let original = u16::from_be_bytes([buf[0], buf[1]]);
                buf.copy_within(2.., 0);
                buf.truncate(buf.len() - 2);
                let Some(main) = layer.receive.as_mut() else { break 'unwrap None };
                let extended = main.extend(original);
                if main.accept_repair(extended, now) != Accepted::New {
                    out.counters.drop(DropReason::Duplicate);
                    break 'unwrap None;
                }
                let Some(media) = producer.params.codecs.iter().find(|c| c.rtx_payload_type == Some(peek.payload_type))
                else {
                    out.counters.drop(DropReason::UnknownStream);
                    break 'unwrap None;
                };
                out.counters.rtp_recovered += 1;
                (extended, media.payload_type)
            } else {
                ingress.media_ssrc = peek.ssrc;
                (extended, peek.payload_type)
            };
            if video {
                layer.nack.get_or_insert_with(nack::NackTracker::new).on_packet(seq, now);
            }
            (!buf.is_empty()).then_some((seq, payload_type))
        };
        let due = next_due(ingress, layer.nack.as_ref().and_then(|n| n.next_due()));
        if ingress.armed.is_none_or(|armed| due < armed) {
            ingress.armed = Some(due);
            out.timers.schedule(due, Timer::Ingress(key));
        }
        let payload = slot.clone();
        if new_ssrc {
            self.bind_ssrc(cx, key, route.producer, route.layer, peek.ssrc, route.rtx);
        }
        let Some((seq, payload_type)) = forwarded else { return };
        let received = Received {
            seq,
            timestamp: peek.timestamp,
            marker: peek.marker,
            payload_type,
            header_len: peek.header_len,
            audio_level: peek.audio_level,
            video_orientation: peek.video_orientation,
            payload: &payload,
        };
        self.forward(cx, now, route, &received);
    }

    /// The ingress timer of receiving transport `key`: due feedback, NACKs and reports.
    pub(crate) fn ingress_timeout(&mut self, cx: &mut Context, now: Instant, key: TransportKey) {
        let Some(t) = cx.transports.get_mut(key) else { return };
        let Some(ingress) = t.ingress.as_mut() else { return };
        ingress.armed = None;
        let Some(dest) = t.media_dest else { return };
        let Some(session) = self.sessions.get(&t.session) else { return };
        let Router { producers, .. } = self;
        let Context { out, .. } = cx;

        if let Some(mut twcc) = ingress.twcc.take() {
            let media_ssrc = ingress.media_ssrc;
            for _ in 0..MAX_FEEDBACK_PER_TIMEOUT {
                if twcc.next_due().is_none_or(|due| due > now) {
                    break;
                }
                let sent = out.transmit_with(dest, |buf| {
                    ingress.seal(buf, &[], |buf, ssrc| twcc.write_feedback(ssrc, media_ssrc, now, buf))
                });
                if !sent {
                    break;
                }
            }
            ingress.twcc = Some(twcc);
        }

        let mut keyframes: SmallVec<[(ProducerKey, u8); 4]> = SmallVec::new();
        let mut blocks: SmallVec<[ReportBlock; 16]> = SmallVec::new();
        let report = ingress.next_report <= now;
        let mut nack_due: Option<Instant> = None;
        for pk in session.producers.iter().flatten().copied() {
            let Some(p) = producers.get_mut(pk) else { continue };
            for (i, layer) in p.layers.iter_mut().enumerate() {
                if report && let Some(block) = layer.receive.as_mut().and_then(|r| r.report_block(now)) {
                    blocks.push(block);
                }
                let (Some(nacks), Some(ssrc)) = (layer.nack.as_mut(), layer.ssrc) else { continue };
                let mut seqs: SmallVec<[u16; nack::MAX_MISSING]> = SmallVec::new();
                if nacks.poll(now, ASSUMED_RTT, &mut seqs) > 0 {
                    keyframes.push((pk, i as u8));
                }
                if !seqs.is_empty() {
                    out.counters.nacks_sent += 1;
                    out.transmit_with(dest, |buf| {
                        ingress.seal(buf, &[], |buf, sender| {
                            rtcp_out::generic_nack(buf, sender, ssrc, seqs.iter().copied());
                            true
                        })
                    });
                }
                nack_due = earliest(nack_due, nacks.next_due());
            }
        }
        if report {
            ingress.next_report = now + REPORT_INTERVAL;
            if !blocks.is_empty() {
                // The report itself carries the blocks: nothing follows it.
                out.transmit_with(dest, |buf| ingress.seal(buf, &blocks, |_, _| true));
            }
        }
        let due = next_due(ingress, nack_due);
        ingress.armed = Some(due);
        out.timers.schedule(due.max(now), Timer::Ingress(key));
        for (pk, layer) in keyframes {
            self.request_keyframe(cx, now, pk, layer);
        }
    }

    /// A publisher's sender report (RTCP on a receiving transport with ringsfu's own ingress):
    /// remembered for the report blocks' LSR and DLSR.
    pub(crate) fn publisher_sender_report(&mut self, cx: &mut Context, now: Instant, key: TransportKey, packet: &[u8]) {
        let (Some(ssrc), Some(ntp)) = (read_u32(packet, 4), read_u32(packet, 10)) else { return };
        let Some(route) = cx.transports.get(key).and_then(|t| t.ssrcs.get(&ssrc)).copied() else { return };
        let Some(layer) = self.producers.get_mut(route.producer).and_then(|p| p.layers.get_mut(route.layer as usize))
        else {
            return;
        };
        let stream = if route.rtx { &mut layer.rtx_receive } else { &mut layer.receive };
        if let Some(stream) = stream.as_mut() {
            stream.on_sender_report(ntp, now);
        }
    }
}
