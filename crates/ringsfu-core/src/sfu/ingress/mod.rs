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

use super::srtp::{Exported, SrtpReceiver, SrtpSender};
use rtcp_out::ReportBlock;
use std::time::{Duration, Instant};
use twcc::TwccReceiver;

/// How often a publisher gets receiver reports about its streams.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The round trip NACKs are repeated after. ringsfu sends the publisher no media, so it has no
/// report to measure it from; a LAN or metro path is below this, and repeating a little late
/// costs less than repeating too early (each repeat is a retransmission).
pub(crate) const ASSUMED_RTT: Duration = Duration::from_millis(50);
/// Feedback packets one timer writes at most (a burst beyond it waits for the next).
pub(crate) const MAX_FEEDBACK_PER_TIMEOUT: usize = 8;

/// What a receiving transport needs to open and answer its publisher's packets itself.
pub struct Ingress {
    pub(crate) srtp: SrtpReceiver,
    /// Seals ringsfu's RTCP to the publisher (our half of the keys).
    pub(crate) rtcp: SrtpSender,
    pub(crate) rtcp_index: u32,
    /// The SSRC ringsfu's RTCP to this publisher comes from.
    pub(crate) ssrc: u32,
    /// Made at the first packet with a transport-wide sequence number.
    pub(crate) twcc: Option<Box<TwccReceiver>>,
    /// The media SSRC the last packet came on (transport-wide feedback names one).
    pub(crate) media_ssrc: u32,
    pub(crate) next_report: Instant,
    /// The deadline armed in the shard's timer table.
    pub(crate) armed: Option<Instant>,
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
    pub(crate) fn seal(
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

/// RFC 3550 §5.1: the payload's last byte counts the padding, itself included. The length
/// without it, or `None` when the count is 0 or larger than the payload (an empty payload
/// included: an authentic packet from a misbehaving publisher must not reach past it).
pub(crate) fn without_padding(payload: &[u8]) -> Option<usize> {
    let padding = usize::from(*payload.last()?);
    (padding != 0 && padding <= payload.len()).then(|| payload.len() - padding)
}

pub(crate) fn read_u32(packet: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The ingress timer's next deadline: feedback, a NACK, or the next report.
pub(crate) fn next_due(ingress: &Ingress, nack: Option<Instant>) -> Instant {
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
