//! Streams ringsfu sends itself: the RTP header is written into a send buffer and the payload
//! sealed behind it in one pass (see `sfu::srtp`), without str0m's send path (its queue, pacer
//! and per-packet timeout). Used for every consumer on a GCM transport. What str0m did for
//! these streams is here: the header (with the transport-wide sequence number the bandwidth
//! estimate needs, for video), the encryption, the sender reports, and for video the
//! retransmissions a subscriber asks for (`forward::rtx`) and the padding that probes its
//! downlink.

use super::rtx::{RtxBuffer, Sent};
use crate::sfu::ingress::payloads::Payload;
use crate::sfu::srtp::SrtpSender;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often each stream sends a sender report (after its first packet): the receiver needs
/// two to map RTP time to wall-clock time for lip sync; mediasoup's audio interval is 5 s at most.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Room for the header extensions we write: mid (up to 16 bytes), transport-wide sequence
/// number, audio level, video orientation.
const MAX_EXTENSIONS: usize = 28;
/// Padding bytes one padding packet carries (RFC 3550: the count is one byte).
pub const MAX_PADDING: usize = 255;

/// Header extension ids of the consumer's `rtpParameters` that the stream writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectExtensions {
    /// The mid extension id and the consumer's mid (as mediasoup does, on every packet).
    pub mid: Option<u8>,
    pub audio_level: Option<u8>,
    /// Transport-wide sequence number (video: what the subscriber's feedback reports on).
    pub twcc: Option<u8>,
    pub video_orientation: Option<u8>,
}

/// The consumer's retransmission stream (RFC 4588): its SSRC, the RTX payload type of each
/// media payload type, its own sequence numbers, and the packets it can repeat.
#[derive(Debug)]
pub struct RtxStream {
    pub ssrc: u32,
    pub payload_types: smallvec::SmallVec<[(u8, u8); 2]>,
    seq: u64,
    pub buffer: RtxBuffer,
}

impl RtxStream {
    pub fn new(ssrc: u32, payload_types: smallvec::SmallVec<[(u8, u8); 2]>, first_seq: u16) -> RtxStream {
        RtxStream { ssrc, payload_types, seq: u64::from(first_seq), buffer: RtxBuffer::new() }
    }
}

/// The header fields of one packet as written.
struct Header {
    ssrc: u32,
    payload_type: u8,
    seq: u64,
    timestamp: u32,
    marker: bool,
    padding: bool,
    twcc: Option<u16>,
    audio_level: Option<(u8, bool)>,
    video_orientation: Option<u8>,
}

#[derive(Debug)]
pub struct DirectStream {
    ssrc: u32,
    mid: smallvec::SmallVec<[u8; 16]>,
    extensions: DirectExtensions,
    clock_rate: u32,
    packets: u32,
    octets: u32,
    /// The RTP timestamp of the last packet and when it left: the sender report's clock.
    last: Option<(u32, Instant)>,
    srtcp_index: u32,
    next_report: Option<Instant>,
    pub rtx: Option<RtxStream>,
}

/// What varies per packet.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Extended sequence number (the high bits are the SRTP rollover counter).
    pub seq: u64,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// RFC 6464: level in -dBov and the voice activity flag.
    pub audio_level: Option<(u8, bool)>,
    /// The coordination of video orientation byte (3GPP TS 26.114), as the publisher sent it.
    pub video_orientation: Option<u8>,
    /// VP8 picture id and TL0PICIDX written over the payload's (continuity across layer switches).
    pub vp8: Option<(u16, Option<u8>)>,
    pub payload: &'a [u8],
}

impl DirectStream {
    pub fn new(ssrc: u32, mid: &str, extensions: DirectExtensions, clock_rate: u32) -> DirectStream {
        let mid = mid.as_bytes().iter().copied().take(16).collect();
        DirectStream {
            ssrc,
            mid,
            extensions,
            clock_rate,
            packets: 0,
            octets: 0,
            last: None,
            srtcp_index: 0,
            next_report: None,
            rtx: None,
        }
    }

    /// Whether packets of this stream carry a transport-wide sequence number.
    pub fn has_twcc(&self) -> bool {
        self.extensions.twcc.is_some()
    }

    /// Writes the header into `buf` (cleared first); returns its length.
    fn write_header(&self, buf: &mut Vec<u8>, h: &Header) -> usize {
        // Put together on the stack and copied once.
        let mut header = [0u8; 16 + MAX_EXTENSIONS];
        header[1] = (u8::from(h.marker) << 7) | (h.payload_type & 0x7f);
        header[2..4].copy_from_slice(&(h.seq as u16).to_be_bytes());
        header[4..8].copy_from_slice(&h.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
        let mut at = 16;
        if let Some(id) = self.extensions.mid.filter(|_| !self.mid.is_empty()) {
            header[at] = (id << 4) | (self.mid.len() as u8 - 1);
            header[at + 1..at + 1 + self.mid.len()].copy_from_slice(&self.mid);
            at += 1 + self.mid.len();
        }
        if let (Some(id), Some(seq)) = (self.extensions.twcc, h.twcc) {
            header[at] = (id << 4) | 1;
            header[at + 1..at + 3].copy_from_slice(&seq.to_be_bytes());
            at += 3;
        }
        if let (Some(id), Some((level, voice))) = (self.extensions.audio_level, h.audio_level) {
            header[at] = id << 4;
            header[at + 1] = (u8::from(voice) << 7) | level.min(127);
            at += 2;
        }
        if let (Some(id), Some(orientation)) = (self.extensions.video_orientation, h.video_orientation) {
            header[at] = id << 4;
            header[at + 1] = orientation;
            at += 2;
        }
        let words = (at - 16).div_ceil(4);
        let padding = u8::from(h.padding) << 5;
        let header_len = if words == 0 {
            header[0] = 0x80 | padding;
            12
        } else {
            // One-byte header extensions (RFC 8285), zero-padded to a whole word.
            header[0] = 0x90 | padding;
            header[12..14].copy_from_slice(&[0xbe, 0xde]);
            header[14..16].copy_from_slice(&(words as u16).to_be_bytes());
            16 + 4 * words
        };
        buf.clear();
        buf.extend_from_slice(&header[..header_len]);
        header_len
    }

    /// Writes and seals one packet into `buf` (cleared first); `false` if it could not be sealed.
    /// `twcc`: the transport-wide sequence number, for streams that carry one.
    pub fn write_rtp(
        &mut self,
        srtp: &mut SrtpSender,
        buf: &mut Vec<u8>,
        now: Instant,
        p: &Outgoing,
        twcc: Option<u16>,
    ) -> bool {
        let header = Header {
            ssrc: self.ssrc,
            payload_type: p.payload_type,
            seq: p.seq,
            timestamp: p.timestamp,
            marker: p.marker,
            padding: false,
            twcc,
            audio_level: p.audio_level,
            video_orientation: p.video_orientation,
        };
        let header_len = self.write_header(buf, &header);
        // The one copy of the payload; it is rewritten and encrypted where it lands.
        buf.extend_from_slice(p.payload);
        if let Some((picture_id, tl0)) = p.vp8 {
            super::vp8::write_numbers(&mut buf[header_len..], picture_id, tl0);
        }
        if !srtp.seal_rtp(buf, header_len, self.ssrc, p.seq) {
            return false;
        }
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(p.payload.len() as u32);
        self.last = Some((p.timestamp, now));
        if self.next_report.is_none() {
            // The first report soon after the first packet: lip sync starts with it.
            self.next_report = Some(now + Duration::from_millis(200));
        }
        true
    }

    /// Keeps a sent packet for retransmission (streams with RTX only).
    pub fn remember(&mut self, p: &Outgoing, payload: &Payload) {
        if let Some(rtx) = self.rtx.as_mut() {
            rtx.buffer.store(Sent {
                seq: p.seq,
                timestamp: p.timestamp,
                payload_type: p.payload_type,
                marker: p.marker,
                video_orientation: p.video_orientation,
                vp8: p.vp8,
                payload: payload.clone(),
                resent_at: None,
            });
        }
    }

    /// Writes and seals the retransmission of packet `lost` (its 16-bit sequence number, as a
    /// NACK names it) on the RTX stream; `false` if it is not kept, was just resent, or this
    /// stream has no RTX.
    pub fn write_rtx(
        &mut self,
        srtp: &mut SrtpSender,
        buf: &mut Vec<u8>,
        now: Instant,
        lost: u16,
        twcc: Option<u16>,
    ) -> bool {
        let Some(rtx) = self.rtx.as_mut() else { return false };
        let (ssrc, seq) = (rtx.ssrc, rtx.seq);
        let Some(sent) = rtx.buffer.take_for_resend(lost, now) else { return false };
        let Some(&(_, payload_type)) = rtx.payload_types.iter().find(|(m, _)| *m == sent.payload_type) else {
            return false;
        };
        let header = Header {
            ssrc,
            payload_type,
            seq,
            timestamp: sent.timestamp,
            marker: sent.marker,
            padding: false,
            twcc,
            audio_level: None,
            video_orientation: sent.video_orientation,
        };
        let (vp8, payload) = (sent.vp8, sent.payload.clone());
        let header_len = self.write_header(buf, &header);
        // RFC 4588: the original sequence number, then the original payload.
        buf.extend_from_slice(&lost.to_be_bytes());
        buf.extend_from_slice(&payload);
        if let Some((picture_id, tl0)) = vp8 {
            super::vp8::write_numbers(&mut buf[header_len + 2..], picture_id, tl0);
        }
        if !srtp.seal_rtp(buf, header_len, ssrc, seq) {
            return false;
        }
        if let Some(rtx) = self.rtx.as_mut() {
            rtx.seq += 1;
        }
        true
    }

    /// Writes and seals a padding-only packet of `padding` bytes (at most `MAX_PADDING`) on the
    /// RTX stream, to probe the downlink; `false` without RTX or before the first packet.
    pub fn write_padding(&mut self, srtp: &mut SrtpSender, buf: &mut Vec<u8>, padding: usize, twcc: u16) -> bool {
        let (Some(rtx), Some((timestamp, _))) = (self.rtx.as_ref(), self.last) else { return false };
        let Some(&(_, payload_type)) = rtx.payload_types.first() else { return false };
        let padding = padding.clamp(1, MAX_PADDING);
        let header = Header {
            ssrc: rtx.ssrc,
            payload_type,
            seq: rtx.seq,
            timestamp,
            marker: false,
            padding: true,
            twcc: Some(twcc),
            audio_level: None,
            video_orientation: None,
        };
        let (ssrc, seq) = (rtx.ssrc, rtx.seq);
        let header_len = self.write_header(buf, &header);
        // RFC 3550 §5.1: zeros, the last byte counting the padding (itself included).
        buf.resize(header_len + padding, 0);
        buf[header_len + padding - 1] = padding as u8;
        if !srtp.seal_rtp(buf, header_len, ssrc, seq) {
            return false;
        }
        if let Some(rtx) = self.rtx.as_mut() {
            rtx.seq += 1;
        }
        true
    }

    /// Writes and seals a sender report into `buf` if one is due; `wallclock` is `now` on the
    /// system clock.
    pub fn sender_report(
        &mut self,
        srtp: &mut SrtpSender,
        buf: &mut Vec<u8>,
        now: Instant,
        wallclock: SystemTime,
    ) -> bool {
        let (Some(due), Some((timestamp, at))) = (self.next_report, self.last) else { return false };
        if now < due {
            return false;
        }
        self.next_report = Some(now + REPORT_INTERVAL);
        let elapsed = now.saturating_duration_since(at);
        let rtp_now = timestamp.wrapping_add((elapsed.as_secs_f64() * self.clock_rate as f64) as u32);
        let since_unix = wallclock.duration_since(UNIX_EPOCH).unwrap_or_default();
        let ntp_seconds = (since_unix.as_secs() + NTP_UNIX_OFFSET) as u32;
        let ntp_fraction = ((u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        buf.clear();
        // V=2, no padding, no report blocks; PT 200 (SR); length 6 (words - 1).
        buf.extend_from_slice(&[0x80, 200, 0, 6]);
        buf.extend_from_slice(&self.ssrc.to_be_bytes());
        buf.extend_from_slice(&ntp_seconds.to_be_bytes());
        buf.extend_from_slice(&ntp_fraction.to_be_bytes());
        buf.extend_from_slice(&rtp_now.to_be_bytes());
        buf.extend_from_slice(&self.packets.to_be_bytes());
        buf.extend_from_slice(&self.octets.to_be_bytes());
        let index = self.srtcp_index;
        self.srtcp_index = (self.srtcp_index + 1) & 0x7fff_ffff;
        srtp.seal_rtcp(buf, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::srtp::{Exported, SRTCP_INDEX_LEN, TAG_LEN};
    use str0m::crypto::dtls::SrtpProfile;

    fn sender() -> SrtpSender {
        SrtpSender::new(&Exported {
            material: (0..88).collect(),
            profile: SrtpProfile::AEAD_AES_256_GCM,
            active: false,
        })
        .unwrap()
    }

    #[test]
    fn header_carries_the_rewritten_numbers_and_the_extensions() {
        let mut srtp = sender();
        let ext = DirectExtensions { mid: Some(1), audio_level: Some(6), ..Default::default() };
        let mut s = DirectStream::new(0xdead_beef, "3", ext, 48_000);
        let mut buf = Vec::new();
        let now = Instant::now();
        let payload = [9u8; 80];
        let p = Outgoing {
            seq: 0x1_0005,
            timestamp: 960,
            payload_type: 100,
            marker: true,
            audio_level: Some((30, true)),
            video_orientation: None,
            vp8: None,
            payload: &payload,
        };
        assert!(s.write_rtp(&mut srtp, &mut buf, now, &p, None));
        assert_eq!(&buf[..12], &[0x90, 0x80 | 100, 0, 5, 0, 0, 3, 0xc0, 0xde, 0xad, 0xbe, 0xef]);
        // One-byte extensions: mid "3", audio level 30 with voice: one word.
        assert_eq!(&buf[12..20], &[0xbe, 0xde, 0, 1, 0x10, b'3', 0x60, 0x80 | 30]);
        assert_eq!(buf.len(), 20 + 80 + TAG_LEN);

        // No report before its time, then one that says what was sent.
        let wallclock = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(!s.sender_report(&mut srtp, &mut buf, now, wallclock));
        let later = now + Duration::from_millis(500);
        assert!(s.sender_report(&mut srtp, &mut buf, later, wallclock));
        assert_eq!(buf.len(), 28 + TAG_LEN + SRTCP_INDEX_LEN);
        assert_eq!(&buf[..8], &[0x80, 200, 0, 6, 0xde, 0xad, 0xbe, 0xef]);
        assert!(!s.sender_report(&mut srtp, &mut buf, later + Duration::from_secs(1), wallclock));
    }

    #[test]
    fn without_extensions_the_header_is_twelve_bytes() {
        let mut srtp = sender();
        let mut s = DirectStream::new(7, "0", DirectExtensions::default(), 48_000);
        let mut buf = Vec::new();
        let payload = [1u8; 10];
        let p = Outgoing {
            seq: 1,
            timestamp: 0,
            payload_type: 0,
            marker: false,
            audio_level: None,
            video_orientation: None,
            vp8: None,
            payload: &payload,
        };
        assert!(s.write_rtp(&mut srtp, &mut buf, Instant::now(), &p, None));
        assert_eq!(buf[0], 0x80);
        assert_eq!(buf.len(), 12 + 10 + TAG_LEN);
    }
}
