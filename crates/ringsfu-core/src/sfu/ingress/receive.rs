//! What ringsfu knows about one incoming RTP stream: extended sequence numbers, loss, jitter.
//!
//! The extended sequence number is the SRTP packet index (RFC 3711 §3.3.1): `ROC << 16 | seq`,
//! with the rollover counter 0 for the first packet received. The lead derives the ROC for
//! decryption from it, so the two can never disagree. Statistics follow RFC 3550 appendix A.3
//! (loss) and A.8 (jitter), in integer arithmetic.

use super::rtcp_out::ReportBlock;
use std::time::Instant;

/// Packets behind the highest one whose arrival is remembered, to refuse duplicates
/// (an SRTP replay list, RFC 3711 §3.3.2). Older packets cannot be told from duplicates.
pub const REPLAY_WINDOW: u64 = 128;
/// The 24-bit signed range of the cumulative loss field (RFC 3550 §6.4.1).
const MAX_LOST: i64 = (1 << 23) - 1;
const MIN_LOST: i64 = -(1 << 23);

/// What `ReceiveStream::accept` made of a packet.
#[must_use = "a duplicate or too old packet is to be dropped"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// First time seen: forward it.
    New,
    /// Seen before (a replay or a network duplicate): drop it.
    Duplicate,
    /// Older than the replay window, so it cannot be told from a replay: drop it.
    TooOld,
}

/// One incoming SSRC: RFC 3550 receive statistics and the SRTP replay window.
#[derive(Debug)]
pub struct ReceiveStream {
    ssrc: u32,
    clock_rate: u32,
    /// Everything below needs a first packet.
    state: Option<Received>,
    /// The last sender report's NTP middle 32 bits and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

#[derive(Debug)]
struct Received {
    /// Lowest and highest extended sequence numbers accepted.
    base: u64,
    highest: u64,
    /// Bit `i` set: `highest - i` was accepted.
    seen: u128,
    /// Every packet accepted, duplicates and late ones included (RFC 3550 A.3: the
    /// cumulative loss can therefore go negative).
    received: u64,
    /// Expected and received at the previous report block, for its fraction lost.
    expected_prior: u64,
    received_prior: u64,
    /// Arrival time origin for the RTP-unit arrival clock of the jitter estimate.
    first_arrival: Instant,
    /// Relative transit time of the previous new packet, in RTP units.
    transit: u32,
    /// Interarrival jitter × 16 (RFC 3550 A.8's fixed point form).
    jitter16: u64,
}

impl ReceiveStream {
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        ReceiveStream { ssrc, clock_rate, state: None, last_sr: None }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The highest extended sequence number accepted, if any.
    pub fn highest(&self) -> Option<u64> {
        self.state.as_ref().map(|s| s.highest)
    }

    /// Packets accepted so far (duplicates included).
    pub fn received(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.received)
    }

    /// The extended sequence number a packet carrying `seq` most likely has: the one nearest
    /// the highest accepted (the first packet's is `seq` itself, ROC 0). Changes nothing, as
    /// the packet is not yet authenticated.
    ///
    /// A rollover counter is never negative: a packet that would belong to the cycle before
    /// the first packet's is read in cycle 0, where its authentication fails unless the
    /// sender really sent it there. Such packets are thus refused; libwebrtc starts its
    /// sequence numbers below 2^15 so that this does not happen.
    pub fn extend(&self, seq: u16) -> u64 {
        let Some(s) = &self.state else { return u64::from(seq) };
        // Within half the sequence space either way.
        let delta = i64::from(seq.wrapping_sub(s.highest as u16) as i16);
        s.highest.checked_add_signed(delta).unwrap_or(u64::from(seq))
    }

    /// A packet that passed decryption, with its extended sequence number from `extend`.
    /// Every call counts as received (RFC 3550 A.3), the dropped ones too; only new packets
    /// feed the jitter. The first packet accepted fixes the cycle `extend` reads from: if its
    /// authentication fails the stream stays without one.
    pub fn accept(&mut self, extended: u64, rtp_timestamp: u32, arrival: Instant) -> Accepted {
        self.record(extended, Some(rtp_timestamp), arrival)
    }

    /// A retransmission (unwrapped from the RTX stream) of a packet of this stream: counted and
    /// checked like any packet, but not fed to the jitter, which measures the network's variation
    /// and not the round trip a repair took.
    pub fn accept_repair(&mut self, extended: u64, arrival: Instant) -> Accepted {
        self.record(extended, None, arrival)
    }

    fn record(&mut self, extended: u64, rtp_timestamp: Option<u32>, arrival: Instant) -> Accepted {
        let clock_rate = self.clock_rate;
        let Some(s) = &mut self.state else {
            self.state = Some(Received {
                base: extended,
                highest: extended,
                seen: 1,
                received: 1,
                expected_prior: 0,
                received_prior: 0,
                first_arrival: arrival,
                transit: rtp_timestamp.unwrap_or(0).wrapping_neg(),
                jitter16: 0,
            });
            return Accepted::New;
        };
        s.received += 1;
        if extended > s.highest {
            let ahead = extended - s.highest;
            s.seen = if ahead >= REPLAY_WINDOW { 1 } else { (s.seen << ahead) | 1 };
            s.highest = extended;
        } else {
            let behind = s.highest - extended;
            if behind >= REPLAY_WINDOW {
                s.base = s.base.min(extended);
                return Accepted::TooOld;
            }
            let bit = 1u128 << behind;
            if s.seen & bit != 0 {
                return Accepted::Duplicate;
            }
            s.seen |= bit;
            s.base = s.base.min(extended);
        }
        if let Some(rtp_timestamp) = rtp_timestamp {
            s.update_jitter(clock_rate, rtp_timestamp, arrival);
        }
        Accepted::New
    }

    /// A sender report about this stream arrived: `ntp_middle32` is the middle 32 bits of its
    /// NTP timestamp, echoed with the delay since in the next report block (RFC 3550 §6.4.1).
    pub fn on_sender_report(&mut self, ntp_middle32: u32, arrival: Instant) {
        self.last_sr = Some((ntp_middle32, arrival));
    }

    /// The report block for an RTCP receiver report sent at `now`; starts the next interval
    /// of the fraction lost. None before the first packet.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let s = self.state.as_mut()?;
        let expected = s.highest - s.base + 1;
        let expected_interval = expected.saturating_sub(s.expected_prior);
        let received_interval = s.received.saturating_sub(s.received_prior);
        s.expected_prior = expected;
        s.received_prior = s.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        // Nothing expected in the interval: nothing lost.
        let fraction_lost = (lost_interval << 8).checked_div(expected_interval).unwrap_or(0).min(255);
        let lost = (expected as i64).saturating_sub(s.received as i64).clamp(MIN_LOST, MAX_LOST);
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((ntp, at)) => {
                // 1/65536 s units, saturating at about 18 hours.
                let delay = (now.saturating_duration_since(at).as_nanos() << 16) / 1_000_000_000;
                (ntp, u32::try_from(delay).unwrap_or(u32::MAX))
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost: fraction_lost as u8,
            cumulative_lost: lost as i32,
            // The low 32 bits: cycles << 16 | highest sequence number.
            highest_seq: s.highest as u32,
            jitter: (s.jitter16 >> 4) as u32,
            last_sr,
            delay_since_last_sr,
        })
    }
}

impl Received {
    /// RFC 3550 A.8: J += (|D| - J) / 16, with D the change of relative transit time.
    fn update_jitter(&mut self, clock_rate: u32, rtp_timestamp: u32, arrival: Instant) {
        let elapsed = arrival.saturating_duration_since(self.first_arrival).as_nanos();
        // RTP timestamps wrap at 32 bits; so does this clock, and the difference is modular.
        let arrival_rtp = (elapsed * u128::from(clock_rate) / 1_000_000_000) as u32;
        let transit = arrival_rtp.wrapping_sub(rtp_timestamp);
        let d = u64::from((transit.wrapping_sub(self.transit) as i32).unsigned_abs());
        self.transit = transit;
        self.jitter16 = self.jitter16 + d - ((self.jitter16 + 8) >> 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Accepts `seq` as extended by the stream, at `at`, with an RTP timestamp of 0.
    fn take(s: &mut ReceiveStream, seq: u16, at: Instant) -> (u64, Accepted) {
        let ext = s.extend(seq);
        (ext, s.accept(ext, 0, at))
    }

    #[test]
    fn extend_follows_wraps_forward_and_backward() {
        let now = Instant::now();
        let mut s = ReceiveStream::new(1, 90_000);
        // First packet: ROC 0.
        assert_eq!(s.extend(65_530), 65_530);
        assert_eq!(take(&mut s, 65_530, now), (65_530, Accepted::New));
        // Forward across the wrap: ROC 1.
        assert_eq!(s.extend(3), 65_536 + 3);
        assert_eq!(take(&mut s, 3, now).1, Accepted::New);
        // A late packet from before the wrap stays in ROC 0.
        assert_eq!(s.extend(65_533), 65_533);
        // Nearest to the highest either way, up to half the space.
        assert_eq!(s.extend(3 + 32_767), 65_536 + 32_770);
        assert_eq!(s.extend(3u16.wrapping_sub(32_768)), 65_536 + 3 - 32_768);
        // extend changes nothing.
        assert_eq!(s.highest(), Some(65_539));
        // The next wrap, and back again.
        let mut s = ReceiveStream::new(1, 90_000);
        for seq in [65_000u16, 20_000, 50_000, 65_535, 0, 10] {
            let ext = s.extend(seq);
            let _ = s.accept(ext, 0, now);
        }
        assert_eq!(s.highest(), Some(2 * 65_536 + 10));
        assert_eq!(s.extend(65_535), 65_536 + 65_535);
    }

    #[test]
    fn a_packet_from_before_the_first_cycle_is_read_in_cycle_zero() {
        let now = Instant::now();
        let mut s = ReceiveStream::new(1, 90_000);
        let _ = take(&mut s, 2, now);
        // Nearest would be ROC -1, which SRTP cannot express.
        assert_eq!(s.extend(65_534), 65_534);
        // Just before the first packet, without a wrap: fine.
        let mut s = ReceiveStream::new(1, 90_000);
        let _ = take(&mut s, 100, now);
        assert_eq!(s.extend(98), 98);
        assert_eq!(take(&mut s, 98, now).1, Accepted::New);
    }

    #[test]
    fn duplicates_are_refused_within_the_window_and_old_packets_beyond_it() {
        let now = Instant::now();
        let mut s = ReceiveStream::new(1, 90_000);
        assert_eq!(take(&mut s, 1000, now).1, Accepted::New);
        assert_eq!(take(&mut s, 1000, now).1, Accepted::Duplicate);
        assert_eq!(take(&mut s, 1002, now).1, Accepted::New);
        assert_eq!(take(&mut s, 1001, now).1, Accepted::New);
        assert_eq!(take(&mut s, 1001, now).1, Accepted::Duplicate);
        assert_eq!(take(&mut s, 1000, now).1, Accepted::Duplicate);
        // Move 127 ahead: 1002 is at the window's edge, 1001 beyond it.
        assert_eq!(take(&mut s, 1129, now).1, Accepted::New);
        assert_eq!(take(&mut s, 1002, now).1, Accepted::Duplicate);
        assert_eq!(take(&mut s, 1001, now).1, Accepted::TooOld);
        // A jump beyond the window forgets everything but the new highest.
        assert_eq!(take(&mut s, 1500, now).1, Accepted::New);
        assert_eq!(take(&mut s, 1500, now).1, Accepted::Duplicate);
        assert_eq!(take(&mut s, 1499, now).1, Accepted::New);
    }

    #[test]
    fn no_report_before_the_first_packet() {
        let mut s = ReceiveStream::new(7, 48_000);
        assert_eq!(s.report_block(Instant::now()), None);
    }

    #[test]
    fn report_counts_loss_reorder_duplicates_and_the_wrap() {
        let now = Instant::now();
        let mut s = ReceiveStream::new(0xabc, 90_000);
        // 65533..=65535, 0..=6 expected (10 packets): 65535 and 2 lost, 4 and 3 reordered,
        // 1 duplicated.
        for seq in [65_533u16, 65_534, 0, 1, 1, 4, 3, 5, 6] {
            let _ = take(&mut s, seq, now);
        }
        let block = s.report_block(now).unwrap();
        assert_eq!(block.ssrc, 0xabc);
        // Expected 10, received 9 (the duplicate counts): lost 1 = 25/256.
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.fraction_lost, 25);
        assert_eq!(block.highest_seq, 0x1_0006);
        // Next interval: 7 and 9 arrive (9 twice), then 65535 and 2 late.
        for seq in [7u16, 9, 9, 65_535, 2] {
            let _ = take(&mut s, seq, now);
        }
        let block = s.report_block(now).unwrap();
        // Expected 10 → 13 (3 more), received 9 → 14 (5 more): no loss in this interval, and
        // more received than expected in all.
        assert_eq!(block.fraction_lost, 0);
        assert_eq!(block.cumulative_lost, -1);
        assert_eq!(block.highest_seq, 0x1_0009);
        // Next: 10..=13 expected, only 13 arrives: 3 of 4 lost = 192/256.
        let _ = take(&mut s, 13, now);
        let block = s.report_block(now).unwrap();
        assert_eq!(block.fraction_lost, 192);
        assert_eq!(block.cumulative_lost, 2);
        // Nothing new: nothing lost in the interval.
        assert_eq!(s.report_block(now).unwrap().fraction_lost, 0);
    }

    #[test]
    fn a_packet_older_than_the_first_lowers_the_base() {
        let now = Instant::now();
        let mut s = ReceiveStream::new(1, 90_000);
        for seq in [10u16, 11, 8] {
            let _ = take(&mut s, seq, now);
        }
        // 8..=11 expected, 9 lost.
        let block = s.report_block(now).unwrap();
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.fraction_lost, 64);
    }

    #[test]
    fn cumulative_loss_is_clamped_to_24_bits() {
        let now = Instant::now();
        let mut s = ReceiveStream::new(1, 90_000);
        let _ = s.accept(0, 0, now);
        let _ = s.accept(1 << 24, 0, now);
        assert_eq!(s.report_block(now).unwrap().cumulative_lost, (1 << 23) - 1);
        let mut s = ReceiveStream::new(1, 90_000);
        let _ = s.accept(5, 0, now);
        for _ in 0..(1 << 23) + 10 {
            let _ = s.accept(5, 0, now);
        }
        assert_eq!(s.report_block(now).unwrap().cumulative_lost, -(1 << 23));
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        let t0 = Instant::now();
        let mut s = ReceiveStream::new(1, 90_000);
        // 20 ms frames (1800 ticks at 90 kHz).
        let _ = s.accept(1, 0, t0);
        // On time: D = 0.
        let _ = s.accept(2, 1800, t0 + ms(20));
        assert_eq!(s.report_block(t0).unwrap().jitter, 0);
        // 10 ms late (900 ticks): J = 900/16 = 56.25.
        let _ = s.accept(3, 3600, t0 + ms(50));
        assert_eq!(s.report_block(t0).unwrap().jitter, 56);
        // Back on time: D = 900 again; 16J = 900 + 900 - round(900/16) = 1744, J = 109 (the
        // real-valued form gives 108.98).
        let _ = s.accept(4, 5400, t0 + ms(60));
        assert_eq!(s.report_block(t0).unwrap().jitter, 109);
        // A duplicate leaves the jitter alone.
        let _ = s.accept(4, 5400, t0 + ms(500));
        assert_eq!(s.report_block(t0).unwrap().jitter, 109);
    }

    #[test]
    fn jitter_survives_the_timestamp_wrap() {
        let t0 = Instant::now();
        let mut s = ReceiveStream::new(1, 48_000);
        let start = u32::MAX - 480;
        let _ = s.accept(1, start, t0);
        let _ = s.accept(2, start.wrapping_add(960), t0 + ms(20));
        let _ = s.accept(3, start.wrapping_add(1920), t0 + ms(40));
        assert_eq!(s.report_block(t0).unwrap().jitter, 0);
    }

    #[test]
    fn report_echoes_the_last_sender_report_with_its_delay() {
        let t0 = Instant::now();
        let mut s = ReceiveStream::new(1, 90_000);
        let _ = s.accept(1, 0, t0);
        let block = s.report_block(t0).unwrap();
        assert_eq!((block.last_sr, block.delay_since_last_sr), (0, 0));
        s.on_sender_report(0x1234_5678, t0);
        let block = s.report_block(t0 + ms(1500)).unwrap();
        assert_eq!(block.last_sr, 0x1234_5678);
        assert_eq!(block.delay_since_last_sr, 65_536 + 32_768);
    }

    #[test]
    fn repairs_count_as_received_but_leave_the_jitter_alone() {
        let t0 = Instant::now();
        let mut s = ReceiveStream::new(1, 90_000);
        // Packets 0..10 every 10 ms with matching timestamps: no jitter.
        for seq in (0..10u16).filter(|seq| *seq != 5) {
            let ext = s.extend(seq);
            assert_eq!(s.accept(ext, u32::from(seq) * 900, t0 + ms(u64::from(seq) * 10)), Accepted::New);
        }
        let jitter = s.report_block(t0 + ms(100)).unwrap().jitter;
        // Packet 5 repaired 300 ms late: counted, not a duplicate, jitter unchanged.
        let ext = s.extend(5);
        assert_eq!(s.accept_repair(ext, t0 + ms(400)), Accepted::New);
        assert_eq!(s.accept_repair(ext, t0 + ms(410)), Accepted::Duplicate);
        let block = s.report_block(t0 + ms(420)).unwrap();
        assert_eq!(block.jitter, jitter);
        assert_eq!(block.cumulative_lost, -1, "the duplicate repair counts as received (RFC 3550 A.3)");
    }
}
