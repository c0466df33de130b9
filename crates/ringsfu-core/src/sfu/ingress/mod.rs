//! The publishers' side of a receiving transport, without str0m's receive path.
//!
//! On an AES-GCM transport (`OWN_INGRESS`, on by default) a publisher's RTP is opened by
//! ringsfu: the header is read once (`demux::peek_rtp`), the sealed payload is copied into its
//! layer's payload ring and opened there (`srtp::SrtpReceiver`), the stream's receive state
//! refuses replays and keeps the statistics, and the packet goes to the fan-out. What str0m
//! answered the publisher with is written here: transport-wide feedback (`twcc`; Chrome's send
//! rate and so its simulcast layers live on it), NACKs for lost video (`nack`; the
//! retransmissions arrive on the RTX stream and are unwrapped here), receiver reports,
//! keyframe requests and REMB (`rtcp_out`), sealed with our half of the keys. str0m keeps ICE,
//! DTLS and the transports of other SRTP profiles.

pub mod nack;
pub mod payloads;
pub mod receive;
pub mod rtcp_out;
pub mod twcc;

use super::counters::DropReason;
use super::demux;
use super::forward::Received;
use super::producer::ProducerKey;
use super::shard::{Shard, Timer};
use super::srtp::{Exported, SrtpReceiver, SrtpSender};
use super::transport::TransportKey;
use receive::{Accepted, ReceiveStream};
use rtcp_out::ReportBlock;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::media::MediaKind;
use twcc::TwccReceiver;

/// How often a publisher gets receiver reports about its streams.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The round trip NACKs are repeated after. ringsfu sends the publisher no media, so it has no
/// report to measure it from; a LAN or metro path is below this, and repeating a little late
/// costs less than repeating too early (each repeat is a retransmission).
const ASSUMED_RTT: Duration = Duration::from_millis(50);
/// Feedback packets one timer writes at most (a burst beyond it waits for the next).
const MAX_FEEDBACK_PER_TIMEOUT: usize = 8;

/// What a receiving transport needs to open and answer its publisher's packets itself.
pub struct Ingress {
    srtp: SrtpReceiver,
    /// Seals ringsfu's RTCP to the publisher (our half of the keys).
    rtcp: SrtpSender,
    rtcp_index: u32,
    /// The SSRC ringsfu's RTCP to this publisher comes from.
    ssrc: u32,
    /// Made at the first packet with a transport-wide sequence number.
    twcc: Option<Box<TwccReceiver>>,
    /// The media SSRC the last packet came on (transport-wide feedback names one).
    media_ssrc: u32,
    next_report: Instant,
    /// The deadline armed in the shard's timer table.
    armed: Option<Instant>,
}

impl Ingress {
    /// `None` for an SRTP profile ringsfu does not open itself (str0m keeps those).
    pub fn new(keys: &Exported, ssrc: u32, now: Instant) -> Option<Ingress> {
        Some(Ingress {
            srtp: SrtpReceiver::new(keys)?,
            rtcp: SrtpSender::new(keys)?,
            rtcp_index: 0,
            ssrc,
            twcc: None,
            media_ssrc: 0,
            next_report: now + REPORT_INTERVAL,
            armed: None,
        })
    }

    /// Writes a receiver report carrying `blocks` (up to 31; none before feedback) and whatever
    /// `write` adds after it, and seals the compound packet.
    fn seal(
        &mut self,
        buf: &mut Vec<u8>,
        blocks: &[ReportBlock],
        write: impl FnOnce(&mut Vec<u8>, u32) -> bool,
    ) -> bool {
        buf.clear();
        // RFC 3550 §6.1: a compound packet starts with a report (RFC 5506's reduced size is
        // not negotiated by mediasoup-client).
        rtcp_out::receiver_report(buf, self.ssrc, blocks);
        if !write(buf, self.ssrc) {
            return false;
        }
        let index = self.rtcp_index;
        self.rtcp_index = (self.rtcp_index + 1) & 0x7fff_ffff;
        self.rtcp.seal_rtcp(buf, index)
    }
}

impl Shard {
    /// A publisher's RTP on a receiving transport with ringsfu's own ingress.
    pub(crate) fn receive_media(&mut self, now: Instant, key: TransportKey, data: &[u8]) {
        let Some(t) = self.transports.get(key) else { return };
        let Some(peek) = demux::peek_rtp(data, t.peek) else {
            self.out.counters.drop(DropReason::Rejected);
            return;
        };
        // An SSRC seen for the first time is bound to its layer only once its packet proved
        // authentic: otherwise anyone who can send from the publisher's address could re-point
        // the layer's stream with a forged header.
        let (route, new_ssrc) = match t.ssrcs.get(&peek.ssrc) {
            Some(route) => (*route, false),
            None => match self.resolve_ssrc(key, &peek) {
                Some(route) => (route, true),
                None => {
                    self.out.counters.drop(DropReason::UnknownStream);
                    return;
                }
            },
        };
        let Shard { transports, producers, out, .. } = self;
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
            self.bind_ssrc(key, route.producer, route.layer, peek.ssrc, route.rtx);
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
        self.forward(now, route, &received);
    }

    /// The ingress timer of receiving transport `key`: due feedback, NACKs and reports.
    pub(crate) fn ingress_timeout(&mut self, now: Instant, key: TransportKey) {
        let Some(t) = self.transports.get_mut(key) else { return };
        let Some(ingress) = t.ingress.as_mut() else { return };
        ingress.armed = None;
        let Some(dest) = t.media_dest else { return };
        let Some(session) = self.sessions.get(&t.session) else { return };
        let Shard { producers, out, .. } = self;

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
            self.request_keyframe(now, pk, layer);
        }
    }

    /// Sends an RTCP packet to the publisher of receiving transport `key` (after an empty
    /// receiver report): a keyframe request, a REMB. Returns false where ringsfu's own ingress
    /// does not serve that transport.
    pub(crate) fn send_to_publisher(&mut self, key: TransportKey, write: impl FnOnce(&mut Vec<u8>, u32)) -> bool {
        let Some(t) = self.transports.get_mut(key) else { return false };
        let (Some(ingress), Some(dest)) = (t.ingress.as_mut(), t.media_dest) else {
            return t.ingress.is_some();
        };
        self.out.transmit_with(dest, |buf| {
            ingress.seal(buf, &[], |buf, ssrc| {
                write(buf, ssrc);
                true
            })
        });
        true
    }

    /// A publisher's sender report (RTCP on a receiving transport with ringsfu's own ingress):
    /// remembered for the report blocks' LSR and DLSR.
    pub(crate) fn publisher_sender_report(&mut self, now: Instant, key: TransportKey, packet: &[u8]) {
        let (Some(ssrc), Some(ntp)) = (read_u32(packet, 4), read_u32(packet, 10)) else { return };
        let Some(route) = self.transports.get(key).and_then(|t| t.ssrcs.get(&ssrc)).copied() else { return };
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

/// RFC 3550 §5.1: the payload's last byte counts the padding, itself included. The length
/// without it, or `None` when the count is 0 or larger than the payload (an empty payload
/// included: an authentic packet from a misbehaving publisher must not reach past it).
fn without_padding(payload: &[u8]) -> Option<usize> {
    let padding = usize::from(*payload.last()?);
    (padding != 0 && padding <= payload.len()).then(|| payload.len() - padding)
}

fn read_u32(packet: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(at..at + 4)?.try_into().ok()?))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The ingress timer's next deadline: feedback, a NACK, or the next report.
fn next_due(ingress: &Ingress, nack: Option<Instant>) -> Instant {
    let feedback = ingress.twcc.as_ref().and_then(|t| t.next_due());
    earliest(earliest(feedback, nack), Some(ingress.next_report)).expect("the report is always due some time")
}

#[cfg(test)]
mod tests {
    use super::without_padding;

    #[test]
    fn padding_is_counted_by_the_last_byte_and_never_reaches_past_the_payload() {
        assert_eq!(without_padding(&[7, 7, 7, 0, 0, 3]), Some(3));
        assert_eq!(without_padding(&[3, 3, 3]), Some(0));
        assert_eq!(without_padding(&[1]), Some(0));
        assert_eq!(without_padding(&[9, 9, 0]), None);
        assert_eq!(without_padding(&[9, 4]), None);
        assert_eq!(without_padding(&[]), None);
    }
}
