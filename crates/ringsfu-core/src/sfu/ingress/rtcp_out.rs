//! The RTCP ringsfu writes to a publisher: receiver reports, NACK, PLI, FIR, REMB.
//!
//! Each writer appends one complete RTCP packet to a caller-owned buffer, so several make a
//! compound packet (RFC 3550 §6.1: a receiver report first, with no blocks if there is nothing
//! to report). Nothing is allocated beyond the buffer's growth; sealing is the caller's.

use crate::sfu::rtcp::{FMT_FIR, FMT_NACK, FMT_PLI, FMT_REMB, PSFB as PT_PSFB, RR as PT_RR, RTPFB as PT_RTPFB, V2};

/// The count field is 5 bits.
pub const MAX_REPORT_BLOCKS: usize = 31;
/// REMB's SSRC count is one byte.
pub const MAX_REMB_SSRCS: usize = 255;
/// REMB's mantissa is 18 bits, its exponent 6.
const REMB_MANTISSA_BITS: u32 = 18;

/// One RFC 3550 §6.4.1 report block about an incoming stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// The reported stream.
    pub ssrc: u32,
    /// Lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24 bits on the wire, signed; clamped).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles << 16 | highest).
    pub highest_seq: u32,
    /// Interarrival jitter, in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last sender report received (0 if none).
    pub last_sr: u32,
    /// Delay since that sender report, in 1/65536 s (0 if none).
    pub delay_since_last_sr: u32,
}

/// Starts a packet at the end of `buf` (length filled in by `finish`); returns where it starts.
fn begin(buf: &mut Vec<u8>, count_or_fmt: u8, packet_type: u8, sender_ssrc: u32) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[V2 | count_or_fmt, packet_type, 0, 0]);
    buf.extend_from_slice(&sender_ssrc.to_be_bytes());
    start
}

/// Writes the length of the packet begun at `start`: its 32-bit words less one.
fn finish(buf: &mut [u8], start: usize) {
    let words = (buf.len() - start) / 4 - 1;
    debug_assert!(words <= usize::from(u16::MAX));
    buf[start + 2..start + 4].copy_from_slice(&(words as u16).to_be_bytes());
}

/// RFC 3550 §6.4.2 receiver report with the first `MAX_REPORT_BLOCKS` of `blocks` (none is
/// valid). Returns how many blocks it carries.
pub fn receiver_report(buf: &mut Vec<u8>, sender_ssrc: u32, blocks: &[ReportBlock]) -> usize {
    let blocks = &blocks[..blocks.len().min(MAX_REPORT_BLOCKS)];
    let start = begin(buf, blocks.len() as u8, PT_RR, sender_ssrc);
    for b in blocks {
        // 24-bit two's complement, after the fraction in the top byte.
        let lost = (b.cumulative_lost.clamp(-(1 << 23), (1 << 23) - 1) as u32) & 0x00ff_ffff;
        buf.extend_from_slice(&b.ssrc.to_be_bytes());
        buf.extend_from_slice(&(u32::from(b.fraction_lost) << 24 | lost).to_be_bytes());
        buf.extend_from_slice(&b.highest_seq.to_be_bytes());
        buf.extend_from_slice(&b.jitter.to_be_bytes());
        buf.extend_from_slice(&b.last_sr.to_be_bytes());
        buf.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
    finish(buf, start);
    blocks.len()
}

/// RFC 4585 §6.2.1 generic NACK for `seqs` of `media_ssrc`. Each FCI entry names one packet
/// (PID) and, in a bitmask (BLP), which of the 16 after it are lost too; a sequence number
/// within 16 after the current entry's PID joins it, counting across the wrap, so ascending
/// input packs into the fewest entries. The caller bounds the count (a `NackTracker` yields at
/// most 256, about 1 KiB). Writes nothing for no sequence numbers; returns the entries written.
pub fn generic_nack(buf: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, seqs: impl Iterator<Item = u16>) -> usize {
    let start = begin(buf, FMT_NACK, PT_RTPFB, sender_ssrc);
    buf.extend_from_slice(&media_ssrc.to_be_bytes());
    let mut entries = 0;
    let mut current: Option<(u16, u16)> = None;
    for seq in seqs {
        if let Some((pid, blp)) = &mut current {
            match seq.wrapping_sub(*pid) {
                0 => continue,
                d @ 1..=16 => {
                    *blp |= 1 << (d - 1);
                    let at = buf.len() - 2;
                    buf[at..].copy_from_slice(&blp.to_be_bytes());
                    continue;
                }
                _ => {}
            }
        }
        current = Some((seq, 0));
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        entries += 1;
    }
    if entries == 0 {
        buf.truncate(start);
        return 0;
    }
    finish(buf, start);
    entries
}

/// RFC 4585 §6.3.1 picture loss indication for `media_ssrc`.
pub fn pli(buf: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32) {
    let start = begin(buf, FMT_PLI, PT_PSFB, sender_ssrc);
    buf.extend_from_slice(&media_ssrc.to_be_bytes());
    finish(buf, start);
}

/// RFC 5104 §4.3.1 full intra request for `media_ssrc`; `seq_nr` is the command sequence
/// number, increased by the caller for each new request (repeats of one request keep it).
pub fn fir(buf: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, seq_nr: u8) {
    let start = begin(buf, FMT_FIR, PT_PSFB, sender_ssrc);
    // The header's media SSRC is unused (§4.3.1.2); the FCI names the stream.
    buf.extend_from_slice(&0u32.to_be_bytes());
    buf.extend_from_slice(&media_ssrc.to_be_bytes());
    buf.extend_from_slice(&[seq_nr, 0, 0, 0]);
    finish(buf, start);
}

/// Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb §2.2) for the streams
/// `ssrcs` (the first `MAX_REMB_SSRCS`). The bitrate is written as an 18-bit mantissa and a
/// 6-bit exponent, rounded down.
pub fn remb(buf: &mut Vec<u8>, sender_ssrc: u32, bitrate_bps: u64, ssrcs: &[u32]) {
    let ssrcs = &ssrcs[..ssrcs.len().min(MAX_REMB_SSRCS)];
    let start = begin(buf, FMT_REMB, PT_PSFB, sender_ssrc);
    buf.extend_from_slice(&0u32.to_be_bytes());
    buf.extend_from_slice(b"REMB");
    // At most 64 - 18 = 46 shifts for a u64: the exponent always fits its 6 bits.
    let exp = (u64::BITS - bitrate_bps.leading_zeros()).saturating_sub(REMB_MANTISSA_BITS);
    let mantissa = (bitrate_bps >> exp) as u32;
    let word = (ssrcs.len() as u32) << 24 | exp << REMB_MANTISSA_BITS | mantissa;
    buf.extend_from_slice(&word.to_be_bytes());
    for ssrc in ssrcs {
        buf.extend_from_slice(&ssrc.to_be_bytes());
    }
    finish(buf, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::rtp::SeqNo;
    use str0m::rtp::rtcp::{NackEntry, Rtcp};

    /// str0m's parse of each packet of a compound buffer (str0m's reader is crate-private; its
    /// per-packet `TryFrom<&[u8]>` is public).
    fn parse(buf: &[u8]) -> Vec<Rtcp> {
        let mut rest = buf;
        let mut packets = Vec::new();
        while !rest.is_empty() {
            let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
            assert!(len <= rest.len(), "length field past the end");
            packets.push(Rtcp::try_from(&rest[..len]).expect("str0m parses it"));
            rest = &rest[len..];
        }
        packets
    }

    fn nack_entries(seqs: &[u16]) -> Vec<(u16, u16)> {
        let mut buf = Vec::new();
        let n = generic_nack(&mut buf, 1, 2, seqs.iter().copied());
        let [Rtcp::Nack(nack)] = &parse(&buf)[..] else { panic!("one NACK") };
        assert_eq!((*nack.sender_ssrc, *nack.ssrc), (1, 2));
        let entries: Vec<_> = nack.reports.iter().map(|e| (e.pid, e.blp)).collect();
        assert_eq!(entries.len(), n);
        // str0m's expansion of the entries names the same packets as ours.
        let by_str0m: Vec<u16> = nack
            .reports
            .iter()
            .flat_map(|e| NackEntry::into_iter(*e, SeqNo::from(1 << 20)))
            .map(|s| *s as u16)
            .collect();
        assert_eq!(by_str0m, named(&entries));
        entries
    }

    /// The lost packets a NACK names, read the way `sfu::feedback` reads a subscriber's.
    fn named(entries: &[(u16, u16)]) -> Vec<u16> {
        let mut seqs = Vec::new();
        for &(pid, blp) in entries {
            seqs.push(pid);
            seqs.extend((0..16).filter(|bit| blp & (1 << bit) != 0).map(|bit| pid.wrapping_add(bit + 1)));
        }
        seqs
    }

    #[test]
    fn receiver_report_has_the_rfc3550_layout() {
        let mut buf = vec![0xee];
        let block = ReportBlock {
            ssrc: 0x0102_0304,
            fraction_lost: 0x40,
            cumulative_lost: -2,
            highest_seq: 0x0001_0005,
            jitter: 0x0a0b_0c0d,
            last_sr: 0x1122_3344,
            delay_since_last_sr: 0x5566_7788,
        };
        assert_eq!(receiver_report(&mut buf, 0xaabb_ccdd, &[block]), 1);
        #[rustfmt::skip]
        let expected = [
            0xee, // what was in the buffer stays
            0x81, 201, 0, 7, 0xaa, 0xbb, 0xcc, 0xdd,
            1, 2, 3, 4, 0x40, 0xff, 0xff, 0xfe, 0, 1, 0, 5,
            0x0a, 0x0b, 0x0c, 0x0d, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        ];
        assert_eq!(buf, expected);
    }

    #[test]
    fn receiver_report_round_trips_through_str0m() {
        let blocks: Vec<_> = (0..40u32)
            .map(|i| ReportBlock {
                ssrc: 1000 + i,
                fraction_lost: i as u8,
                cumulative_lost: i as i32 * 1000,
                highest_seq: 70_000 + i,
                jitter: i * 3,
                last_sr: i * 5,
                delay_since_last_sr: i * 7,
            })
            .collect();
        let mut buf = Vec::new();
        // Only 31 fit; then an empty one.
        assert_eq!(receiver_report(&mut buf, 9, &blocks), MAX_REPORT_BLOCKS);
        assert_eq!(receiver_report(&mut buf, 9, &[]), 0);
        assert_eq!(buf.len(), 8 + 31 * 24 + 8);
        let [Rtcp::ReceiverReport(full), Rtcp::ReceiverReport(empty)] = &parse(&buf)[..] else {
            panic!("two receiver reports")
        };
        assert_eq!(*full.sender_ssrc, 9);
        assert_eq!(full.reports.len(), MAX_REPORT_BLOCKS);
        for (r, b) in full.reports.iter().zip(&blocks) {
            assert_eq!(*r.ssrc, b.ssrc);
            assert_eq!(r.fraction_lost, b.fraction_lost);
            assert_eq!(r.packets_lost, b.cumulative_lost as u32);
            assert_eq!(
                (r.max_seq, r.jitter, r.last_sr_time, r.last_sr_delay),
                (b.highest_seq, b.jitter, b.last_sr, b.delay_since_last_sr)
            );
        }
        assert!(empty.reports.is_empty());
        assert_eq!(buf[8 + 31 * 24], 0x80);
    }

    #[test]
    fn cumulative_loss_is_clamped_into_24_bits() {
        let mut buf = Vec::new();
        let block = |lost| ReportBlock { cumulative_lost: lost, fraction_lost: 0x12, ..Default::default() };
        receiver_report(&mut buf, 1, &[block(i32::MIN), block(i32::MAX), block(-1)]);
        let lost = |i: usize| &buf[8 + i * 24 + 4..8 + i * 24 + 8];
        assert_eq!(lost(0), [0x12, 0x80, 0, 0]);
        assert_eq!(lost(1), [0x12, 0x7f, 0xff, 0xff]);
        assert_eq!(lost(2), [0x12, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn nack_packs_neighbours_into_one_entry() {
        let mut buf = Vec::new();
        assert_eq!(generic_nack(&mut buf, 0x0a0b_0c0d, 0x0102_0304, [1u16, 2, 17, 18, 40].into_iter()), 3);
        #[rustfmt::skip]
        let expected = [
            0x81, 205, 0, 5, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4,
            0, 1, 0x80, 0x01, // 1, with 2 (bit 0) and 17 (bit 15)
            0, 18, 0, 0,
            0, 40, 0, 0,
        ];
        assert_eq!(buf, expected);
    }

    #[test]
    fn nack_round_trips_through_str0m() {
        let seqs = [100u16, 101, 103, 116, 117, 200, 215, 217];
        let entries = nack_entries(&seqs);
        assert_eq!(entries, [(100, 0b1000_0000_0000_0101), (117, 0), (200, 1 << 14), (217, 0)]);
        assert_eq!(named(&entries), seqs);
    }

    #[test]
    fn nack_packs_across_the_wrap() {
        let seqs = [65_534u16, 65_535, 0, 5, 14];
        let entries = nack_entries(&seqs);
        assert_eq!(entries, [(65_534, 0b1000_0000_0100_0011)]);
        assert_eq!(named(&entries), seqs);
    }

    #[test]
    fn nack_takes_unsorted_and_repeated_seqs_without_losing_any() {
        let seqs = [50u16, 50, 40, 51, 45];
        let entries = nack_entries(&seqs);
        let mut got = named(&entries);
        got.sort_unstable();
        assert_eq!(got, [40, 45, 50, 51]);
    }

    #[test]
    fn nack_without_seqs_writes_nothing() {
        let mut buf = vec![1, 2, 3];
        assert_eq!(generic_nack(&mut buf, 1, 2, std::iter::empty()), 0);
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn pli_and_fir_have_their_layouts_and_parse() {
        let mut buf = Vec::new();
        pli(&mut buf, 0x0a0b_0c0d, 0x0102_0304);
        fir(&mut buf, 0x0a0b_0c0d, 0x0102_0304, 7);
        #[rustfmt::skip]
        let expected = [
            0x81, 206, 0, 2, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4,
            0x84, 206, 0, 4, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 1, 2, 3, 4, 7, 0, 0, 0,
        ];
        assert_eq!(buf, expected);
        let [Rtcp::Pli(p), Rtcp::Fir(f)] = &parse(&buf)[..] else { panic!("a PLI and a FIR") };
        assert_eq!((*p.sender_ssrc, *p.ssrc), (0x0a0b_0c0d, 0x0102_0304));
        assert_eq!(*f.sender_ssrc, 0x0a0b_0c0d);
        let entries: Vec<_> = f.reports.iter().map(|e| (*e.ssrc, e.seq_no)).collect();
        assert_eq!(entries, [(0x0102_0304, 7)]);
    }

    #[test]
    fn remb_has_its_layout_and_parses() {
        let mut buf = Vec::new();
        // 1,000,000 = 250,000 << 2: mantissa 0x3d090, exponent 2.
        remb(&mut buf, 0x0a0b_0c0d, 1_000_000, &[0x0102_0304, 0x0506_0708]);
        #[rustfmt::skip]
        let expected = [
            0x8f, 206, 0, 6, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, b'R', b'E', b'M', b'B',
            2, 0x0b, 0xd0, 0x90, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(buf, expected);
        let [Rtcp::Remb(r)] = &parse(&buf)[..] else { panic!("a REMB") };
        assert_eq!(*r.sender_ssrc, 0x0a0b_0c0d);
        assert_eq!(r.bitrate, 1_000_000.0);
        assert_eq!(r.ssrcs, [0x0102_0304, 0x0506_0708]);
    }

    #[test]
    fn remb_rounds_down_and_spans_the_u64_range() {
        for (bps, mantissa, exp) in [
            (0u64, 0u64, 0u32),
            (262_143, 262_143, 0),
            (262_144, 131_072, 1),
            (1_000_001, 250_000, 2),
            (u64::MAX, (1 << 18) - 1, 46),
        ] {
            let mut buf = Vec::new();
            remb(&mut buf, 1, bps, &[]);
            let word = u32::from_be_bytes(buf[16..20].try_into().unwrap());
            assert_eq!((u64::from(word & 0x3_ffff), (word >> 18) & 0x3f), (mantissa, exp), "{bps}");
            assert!(mantissa << exp <= bps);
            let [Rtcp::Remb(r)] = &parse(&buf)[..] else { panic!("a REMB") };
            // str0m reads a zero mantissa as 2^23 (its normalisation skips it).
            if bps > 0 {
                assert_eq!(r.bitrate, (mantissa << exp) as f32);
            }
        }
    }

    #[test]
    fn a_compound_packet_is_a_report_then_feedback() {
        let mut buf = Vec::new();
        receiver_report(&mut buf, 1, &[]);
        generic_nack(&mut buf, 1, 2, [7u16, 9].into_iter());
        pli(&mut buf, 1, 2);
        remb(&mut buf, 1, 500_000, &[2]);
        let packets = parse(&buf);
        assert!(matches!(&packets[..], [Rtcp::ReceiverReport(_), Rtcp::Nack(_), Rtcp::Pli(_), Rtcp::Remb(_)]));
    }
}
