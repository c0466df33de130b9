//! What subscribers say about the streams ringsfu sends itself: their SRTCP is opened here
//! (not by str0m, which does not know those streams) and each report acted on. A NACK gets the
//! lost packets again on the RTX stream, a PLI or FIR asks the publisher for a keyframe, and
//! transport-wide feedback feeds the transport's bandwidth estimator, whose estimate re-plans
//! the subscriber's layers and whose probes go out here as padding.

use super::Router;
use crate::sfu::congestion::SendSideEstimator;
use crate::sfu::consumer::{ConsumerKey, Egress};
use crate::sfu::context::Context;
use crate::sfu::counters::DropReason;
use crate::sfu::forward::direct::MAX_PADDING;
use crate::sfu::outputs::Timer;
use crate::sfu::timer::Timers;
use crate::sfu::transport::TransportKey;
use std::net::SocketAddr;
use std::time::Instant;

// RFC 4585 / RFC 5104 feedback: (packet type, format).
use crate::sfu::rtcp::{FMT_FIR, FMT_NACK, FMT_PLI, FMT_TRANSPORT_CC, PSFB, RTPFB, SR};
/// Padding packets one probe step may send (bounds the work of one timer).
const MAX_PADDING_PACKETS_PER_STEP: usize = 64;

impl Router {
    /// SRTCP from the subscriber of a sending transport whose packets ringsfu seals itself,
    /// from `source` (an address that passed ICE). Returns whether str0m must see the datagram
    /// too (it still sends some streams there).
    pub(crate) fn receive_rtcp(
        &mut self,
        cx: &mut Context,
        now: Instant,
        key: TransportKey,
        source: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(t) = cx.transports.get_mut(key) else { return false };
        let str0m_too = t.str0m_streams > 0;
        let Some(rtcp_in) = t.rtcp_in.as_mut() else { return true };
        let mut plain = std::mem::take(&mut cx.rtcp_scratch);
        plain.clear();
        plain.extend_from_slice(data);
        match rtcp_in.open(&mut plain) {
            Ok(opened) => {
                let len = opened.len();
                plain.truncate(len);
                // Authenticated, from a checked address: the subscriber is there now (a NAT
                // rebinding or a network change moves it; str0m, which sends nothing on this
                // transport, would not tell).
                t.media_dest = Some(source);
            }
            Err(e) => {
                tracing::trace!(transport = %t.id, error = ?e, "SRTCP refused");
                cx.rtcp_scratch = plain;
                if !str0m_too {
                    cx.out.counters.drop(DropReason::Rejected);
                }
                return str0m_too;
            }
        }
        let mut rest = &plain[..];
        while rest.len() >= 4 {
            let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
            let Some(packet) = rest.get(..len) else { break };
            match (packet[1], packet[0] & 0x1f) {
                (RTPFB, FMT_NACK) => self.on_nack(cx, now, key, packet),
                (RTPFB, FMT_TRANSPORT_CC) => self.on_transport_feedback(cx, now, key, packet),
                (PSFB, FMT_PLI) => {
                    if let Some(ssrc) = ssrc_at(packet, 8) {
                        self.on_picture_loss(cx, now, key, ssrc);
                    }
                }
                (PSFB, FMT_FIR) => {
                    // RFC 5104 §4.3.1: entries of SSRC, sequence number and 3 reserved bytes.
                    for entry in packet.get(12..).unwrap_or_default().chunks_exact(8) {
                        if let Some(ssrc) = ssrc_at(entry, 0) {
                            self.on_picture_loss(cx, now, key, ssrc);
                        }
                    }
                }
                // A publisher's sender report (on a receiving transport).
                (SR, _) => self.publisher_sender_report(cx, now, key, packet),
                // Receiver reports, SDES, BYE, REMB: nothing the own egress acts on.
                _ => {}
            }
            rest = &rest[len..];
        }
        cx.rtcp_scratch = plain;
        str0m_too
    }

    /// The consumer of sending transport `key` whose media SSRC is `ssrc`.
    fn consumer_by_ssrc(&self, cx: &Context, key: TransportKey, ssrc: u32) -> Option<ConsumerKey> {
        let t = cx.transports.get(key)?;
        t.consumers_by_mid.values().copied().find(|ck| self.consumers.get(*ck).is_some_and(|c| c.ssrc == ssrc))
    }

    /// RFC 4585 §6.2.1 generic NACK: each FCI names a lost packet and a bitmask of the 16 after it.
    fn on_nack(&mut self, cx: &mut Context, now: Instant, key: TransportKey, packet: &[u8]) {
        let Some(ck) = ssrc_at(packet, 8).and_then(|ssrc| self.consumer_by_ssrc(cx, key, ssrc)) else { return };
        for fci in packet.get(12..).unwrap_or_default().chunks_exact(4) {
            let pid = u16::from_be_bytes([fci[0], fci[1]]);
            let mut mask = u16::from_be_bytes([fci[2], fci[3]]);
            self.resend(cx, now, key, ck, pid);
            while mask != 0 {
                let bit = mask.trailing_zeros() as u16;
                mask &= mask - 1;
                self.resend(cx, now, key, ck, pid.wrapping_add(bit + 1));
            }
        }
    }

    fn resend(&mut self, cx: &mut Context, now: Instant, key: TransportKey, ck: ConsumerKey, lost: u16) {
        let Router { consumers, .. } = self;
        let Context { transports, out, .. } = cx;
        let (Some(c), Some(t)) = (consumers.get_mut(ck), transports.get_mut(key)) else { return };
        let Egress::Direct(stream) = &mut c.egress else { return };
        let (Some(srtp), Some(dest)) = (t.srtp.as_mut(), t.media_dest) else { return };
        let twcc = stream.has_twcc().then_some(t.twcc_next);
        let mut size = 0;
        let sent = out.transmit_with(dest, |buf| {
            let written = stream.write_rtx(srtp, buf, now, lost, twcc);
            size = buf.len();
            written
        });
        if sent {
            out.counters.rtp_retransmitted += 1;
            if let Some(seq) = twcc {
                t.sent_twcc(seq, size, None, now);
            }
        }
    }

    fn on_picture_loss(&mut self, cx: &mut Context, now: Instant, key: TransportKey, ssrc: u32) {
        if let Some(ck) = self.consumer_by_ssrc(cx, key, ssrc) {
            self.subscriber_lost_picture(cx, now, ck);
        }
    }

    /// A subscriber lost its picture: ask the publisher of that consumer's layer for a keyframe.
    pub(crate) fn subscriber_lost_picture(&mut self, cx: &mut Context, now: Instant, ck: ConsumerKey) {
        let Some(c) = self.consumers.get(ck) else { return };
        let Some(layer) = c.current.or(c.target) else { return };
        let producer = c.producer;
        self.request_keyframe(cx, now, producer, layer);
    }

    fn on_transport_feedback(&mut self, cx: &mut Context, now: Instant, key: TransportKey, packet: &[u8]) {
        let Some(estimator) = cx.transports.get_mut(key).and_then(|t| t.estimator.as_mut()) else { return };
        if let Err(e) = estimator.on_feedback(packet, now) {
            tracing::trace!(error = ?e, "transport-wide feedback refused");
            return;
        }
        self.estimator_changed(cx, now, key);
    }

    /// The estimator's timer: its periodic work, and the probe padding due now.
    pub(crate) fn congestion_timeout(&mut self, cx: &mut Context, now: Instant, key: TransportKey) {
        let Some(estimator) = cx.transports.get_mut(key).and_then(|t| t.estimator.as_mut()) else { return };
        estimator.handle_timeout(now);
        self.send_probes(cx, now, key);
        self.estimator_changed(cx, now, key);
    }

    /// Sends the padding the estimator's probe asks for, on the RTX stream of a video consumer
    /// that is sending (padding needs an RTX SSRC the subscriber knows and a timestamp).
    fn send_probes(&mut self, cx: &mut Context, now: Instant, key: TransportKey) {
        let Router { consumers, .. } = self;
        let Context { transports, out, .. } = cx;
        let Some(t) = transports.get_mut(key) else { return };
        let source = t.consumers_by_mid.values().copied().find(|ck| {
            consumers.get(*ck).is_some_and(|c| {
                c.current.is_some() && matches!(&c.egress, Egress::Direct(s) if s.rtx.is_some() && s.has_twcc())
            })
        });
        for _ in 0..MAX_PADDING_PACKETS_PER_STEP {
            let Some(probe) = t.estimator.as_mut().and_then(|e| e.poll_probe(now)) else { return };
            let (Some(ck), Some(dest)) = (source, t.media_dest) else { continue };
            let Egress::Direct(stream) = &mut consumers[ck].egress else { return };
            let mut remaining = probe.bytes;
            let mut packets = 0;
            while remaining > 0 && packets < MAX_PADDING_PACKETS_PER_STEP {
                let Some(srtp) = t.srtp.as_mut() else { return };
                let padding = remaining.min(MAX_PADDING);
                let seq = t.twcc_next;
                let mut size = 0;
                let sent = out.transmit_with(dest, |buf| {
                    let written = stream.write_padding(srtp, buf, padding, seq);
                    size = buf.len();
                    written
                });
                if !sent {
                    break;
                }
                out.counters.padding_packets += 1;
                t.sent_twcc(seq, size, Some(probe.cluster), now);
                remaining = remaining.saturating_sub(size);
                packets += 1;
            }
        }
    }

    /// After the estimator changed: a new estimate re-plans the subscriber; its next deadline
    /// is armed.
    pub(crate) fn estimator_changed(&mut self, cx: &mut Context, now: Instant, key: TransportKey) {
        let Some(t) = cx.transports.get_mut(key) else { return };
        let Some(estimator) = t.estimator.as_mut() else { return };
        let estimate = estimator.poll_estimate();
        arm_estimator(&mut cx.out.timers, key, estimator, now);
        if let Some(bps) = estimate {
            t.estimate = Some(bps);
            self.allocate(cx, now, key);
        }
    }
}

/// An RTCP packet (RFC 5761 §4: the second byte is a packet type 192–223).
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

fn ssrc_at(packet: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(at..at + 4)?.try_into().ok()?))
}

/// Arms a transport's estimator timer at the estimator's next deadline (none: disarmed).
pub(crate) fn arm_estimator(
    timers: &mut Timers<Timer>,
    key: TransportKey,
    estimator: &SendSideEstimator,
    now: Instant,
) {
    match estimator.next_timeout() {
        Some(at) => timers.schedule(at.max(now), Timer::Congestion(key)),
        None => timers.cancel(Timer::Congestion(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtcp_is_told_from_rtp_by_its_packet_type() {
        assert!(is_rtcp(&[0x81, 205, 0, 3, 0, 0, 0, 1]));
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        // RTP with payload type 96 (second byte 96 or 96 | marker).
        assert!(!is_rtcp(&[0x80, 96, 0, 1, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0x80 | 96, 0, 1, 0, 0, 0, 1]));
        // STUN, DTLS, too short.
        assert!(!is_rtcp(&[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42]));
        assert!(!is_rtcp(&[22, 254, 253, 0, 0, 0, 0, 0]));
        assert!(!is_rtcp(&[0x81, 205, 0]));
    }
}
