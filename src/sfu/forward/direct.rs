//! Streams ringsfu sends itself: the RTP header is written into a send buffer and the payload
//! sealed behind it in one pass (see `sfu::srtp`), without str0m's send path (its queue, pacer
//! and per-packet timeout). Used for audio consumers on GCM transports: audio needs no
//! retransmission (Opus consumers negotiate no NACK) and carries no transport-wide sequence
//! number (the router offers TWCC for video only), so what str0m did for these streams is the
//! header, the encryption and the sender reports, all here.

use crate::sfu::srtp::SrtpSender;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often each stream sends a sender report (after its first packet): the receiver needs
/// two to map RTP time to wall-clock time for lip sync; mediasoup's audio interval is 5 s at most.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Room for the header extensions we write: mid (up to 16 bytes) and audio level.
const MAX_EXTENSIONS: usize = 24;

/// Header extension ids of the consumer's `rtpParameters` that the stream writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectExtensions {
    /// The mid extension id and the consumer's mid (as mediasoup does, on every packet).
    pub mid: Option<u8>,
    pub audio_level: Option<u8>,
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
    pub audio_level: Option<(i8, bool)>,
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
        }
    }

    /// Writes and seals one packet into `buf` (cleared first); `false` if it could not be sealed.
    pub fn write_rtp(&mut self, srtp: &mut SrtpSender, buf: &mut Vec<u8>, now: Instant, p: &Outgoing) -> bool {
        // The header is put together on the stack and copied once.
        let mut header = [0u8; 16 + MAX_EXTENSIONS];
        header[1] = (u8::from(p.marker) << 7) | (p.payload_type & 0x7f);
        header[2..4].copy_from_slice(&(p.seq as u16).to_be_bytes());
        header[4..8].copy_from_slice(&p.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = 16;
        if let Some(id) = self.extensions.mid.filter(|_| !self.mid.is_empty()) {
            header[at] = (id << 4) | (self.mid.len() as u8 - 1);
            header[at + 1..at + 1 + self.mid.len()].copy_from_slice(&self.mid);
            at += 1 + self.mid.len();
        }
        if let (Some(id), Some((level, voice))) = (self.extensions.audio_level, p.audio_level) {
            header[at] = id << 4;
            header[at + 1] = (u8::from(voice) << 7) | level.unsigned_abs().min(127);
            at += 2;
        }
        let words = (at - 16).div_ceil(4);
        let header_len = if words == 0 {
            header[0] = 0x80;
            12
        } else {
            // One-byte header extensions (RFC 8285), zero-padded to a whole word.
            header[0] = 0x90;
            header[12..14].copy_from_slice(&[0xbe, 0xde]);
            header[14..16].copy_from_slice(&(words as u16).to_be_bytes());
            16 + 4 * words
        };
        buf.clear();
        buf.extend_from_slice(&header[..header_len]);
        // The one copy of the payload; it is encrypted where it lands.
        buf.extend_from_slice(p.payload);
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
        let ext = DirectExtensions { mid: Some(1), audio_level: Some(6) };
        let mut s = DirectStream::new(0xdead_beef, "3", ext, 48_000);
        let mut buf = Vec::new();
        let now = Instant::now();
        let payload = [9u8; 80];
        let p = Outgoing {
            seq: 0x1_0005,
            timestamp: 960,
            payload_type: 100,
            marker: true,
            audio_level: Some((-30, true)),
            payload: &payload,
        };
        assert!(s.write_rtp(&mut srtp, &mut buf, now, &p));
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
        let p = Outgoing { seq: 1, timestamp: 0, payload_type: 0, marker: false, audio_level: None, payload: &payload };
        assert!(s.write_rtp(&mut srtp, &mut buf, Instant::now(), &p));
        assert_eq!(buf[0], 0x80);
        assert_eq!(buf.len(), 12 + 10 + TAG_LEN);
    }
}
