//! Transport-wide congestion control feedback (RTCP PT 205, FMT 15) read in place, without
//! allocating: `parse` checks the whole packet once, so that a refused packet changes nothing,
//! then `Feedback::packets` walks its statuses again.
//!
//! Wire format: draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1. After the RTCP header
//! and the two SSRCs: base sequence number (16), packet status count (16), reference time
//! (24, in 64 ms units, wrapping), feedback packet count (8); then 16-bit status chunks (run
//! length, or a vector of 14 one-bit or 7 two-bit symbols) covering exactly `status count`
//! packets; then one receive delta per received packet (1 byte unsigned for a "small" symbol,
//! 2 bytes signed for a "large" one, in 250 µs units, each relative to the previous arrival,
//! the first to the reference time); then zero bytes up to a 32-bit boundary.

use super::FeedbackError;

use crate::sfu::rtcp::{FMT_TRANSPORT_CC as FORMAT, RTPFB as PACKET_TYPE};

const VERSION: u8 = 2;
/// RTCP header, sender and media SSRCs, and the fixed FCI fields.
const FIXED_LEN: usize = 20;
/// Receive deltas count in 250 µs.
pub const DELTA_UNIT_US: i64 = 250;
/// The reference time counts in 64 ms.
pub const REFERENCE_UNIT_US: i64 = 64_000;

const NOT_RECEIVED: u8 = 0;
const SMALL_DELTA: u8 = 1;
const LARGE_DELTA: u8 = 2;

/// A checked feedback packet; its statuses are read by `packets`.
#[derive(Debug, Clone, Copy)]
pub struct Feedback<'a> {
    pub base_seq: u16,
    pub status_count: u16,
    /// 24 bits, in `REFERENCE_UNIT_US`, wrapping.
    pub reference_time: u32,
    pub feedback_count: u8,
    chunks: &'a [u8],
    deltas: &'a [u8],
}

/// One packet's status: its transport-wide sequence number and, if it arrived, when, in µs
/// after the feedback's reference time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub seq: u16,
    pub arrival_offset_us: Option<i64>,
}

/// Checks a whole feedback packet, from its RTCP header to its end.
pub fn parse(packet: &[u8]) -> Result<Feedback<'_>, FeedbackError> {
    let [first, packet_type, len_hi, len_lo, ..] = *packet else { return Err(FeedbackError::Truncated) };
    if first >> 6 != VERSION || first & 0x1f != FORMAT || packet_type != PACKET_TYPE {
        return Err(FeedbackError::Malformed);
    }
    let declared = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
    let mut body = packet.get(..declared).ok_or(FeedbackError::Truncated)?;
    if first & 0x20 != 0 {
        // RFC 3550 padding: its last byte counts the padding bytes, itself included.
        let padding = usize::from(body[declared - 1]);
        if padding == 0 || padding > declared - 4 {
            return Err(FeedbackError::Malformed);
        }
        body = &body[..declared - padding];
    }
    if body.len() < FIXED_LEN {
        return Err(FeedbackError::Truncated);
    }
    let base_seq = u16::from_be_bytes([body[12], body[13]]);
    let status_count = u16::from_be_bytes([body[14], body[15]]);
    let reference_time = u32::from_be_bytes([0, body[16], body[17], body[18]]);
    let feedback_count = body[19];
    if status_count == 0 {
        return Err(FeedbackError::Malformed);
    }

    // The chunks: how many, and how many delta bytes their symbols announce.
    let mut at = FIXED_LEN;
    let mut covered: usize = 0;
    let mut delta_bytes: usize = 0;
    while covered < usize::from(status_count) {
        let word = body.get(at..at + 2).ok_or(FeedbackError::Truncated)?;
        let chunk = Chunk::decode(u16::from_be_bytes([word[0], word[1]]));
        let symbols = usize::from(chunk.len()).min(usize::from(status_count) - covered);
        match chunk {
            Chunk::Run { symbol, length } => {
                if length == 0 {
                    return Err(FeedbackError::Malformed);
                }
                delta_bytes += symbols * delta_len(symbol)?;
            }
            _ => {
                for i in 0..symbols {
                    delta_bytes += delta_len(chunk.symbol(i as u16))?;
                }
            }
        }
        covered += symbols;
        at += 2;
    }
    let deltas_end = at + delta_bytes;
    if deltas_end > body.len() {
        return Err(FeedbackError::Truncated);
    }
    // Only the zero padding to a 32-bit boundary may follow.
    if body.len() - deltas_end > 3 {
        return Err(FeedbackError::Malformed);
    }
    Ok(Feedback {
        base_seq,
        status_count,
        reference_time,
        feedback_count,
        chunks: &body[FIXED_LEN..at],
        deltas: &body[at..deltas_end],
    })
}

impl<'a> Feedback<'a> {
    /// Every status, in sequence order from `base_seq`.
    pub fn packets(&self) -> Packets<'a> {
        Packets {
            chunks: self.chunks,
            deltas: self.deltas,
            chunk: Chunk::Run { symbol: NOT_RECEIVED, length: 0 },
            in_chunk: 0,
            chunk_len: 0,
            remaining: self.status_count,
            seq: self.base_seq,
            arrival_us: 0,
        }
    }
}

/// Bytes of receive delta a symbol announces.
fn delta_len(symbol: u8) -> Result<usize, FeedbackError> {
    match symbol {
        NOT_RECEIVED => Ok(0),
        SMALL_DELTA => Ok(1),
        LARGE_DELTA => Ok(2),
        _ => Err(FeedbackError::Malformed),
    }
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    Run { symbol: u8, length: u16 },
    OneBit(u16),
    TwoBit(u16),
}

impl Chunk {
    fn decode(word: u16) -> Chunk {
        if word & 0x8000 == 0 {
            Chunk::Run { symbol: ((word >> 13) & 0x3) as u8, length: word & 0x1fff }
        } else if word & 0x4000 == 0 {
            Chunk::OneBit(word)
        } else {
            Chunk::TwoBit(word)
        }
    }

    fn len(self) -> u16 {
        match self {
            Chunk::Run { length, .. } => length,
            Chunk::OneBit(_) => 14,
            Chunk::TwoBit(_) => 7,
        }
    }

    /// The `i`th symbol, most significant bits first.
    fn symbol(self, i: u16) -> u8 {
        match self {
            Chunk::Run { symbol, .. } => symbol,
            Chunk::OneBit(word) => ((word >> (13 - i)) & 0x1) as u8,
            Chunk::TwoBit(word) => ((word >> (12 - 2 * i)) & 0x3) as u8,
        }
    }
}

/// The statuses of a checked packet.
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    chunks: &'a [u8],
    deltas: &'a [u8],
    chunk: Chunk,
    in_chunk: u16,
    chunk_len: u16,
    remaining: u16,
    seq: u16,
    arrival_us: i64,
}

impl Iterator for Packets<'_> {
    type Item = Reported;

    fn next(&mut self) -> Option<Reported> {
        if self.remaining == 0 {
            return None;
        }
        if self.in_chunk == self.chunk_len {
            let (word, rest) = self.chunks.split_first_chunk::<2>()?;
            self.chunks = rest;
            self.chunk = Chunk::decode(u16::from_be_bytes(*word));
            self.chunk_len = self.chunk.len().min(self.remaining);
            self.in_chunk = 0;
        }
        let symbol = self.chunk.symbol(self.in_chunk);
        self.in_chunk += 1;
        self.remaining -= 1;
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        let delta = match symbol {
            SMALL_DELTA => {
                let (byte, rest) = self.deltas.split_first()?;
                self.deltas = rest;
                i64::from(*byte)
            }
            LARGE_DELTA => {
                let (bytes, rest) = self.deltas.split_first_chunk::<2>()?;
                self.deltas = rest;
                i64::from(i16::from_be_bytes(*bytes))
            }
            _ => return Some(Reported { seq, arrival_offset_us: None }),
        };
        self.arrival_us += delta * DELTA_UNIT_US;
        Some(Reported { seq, arrival_offset_us: Some(self.arrival_us) })
    }
}

/// Builds feedback packets, for the tests of this module and of the estimator.
#[cfg(test)]
pub mod build {
    use super::*;

    /// A feedback packet reporting `statuses` (consecutive sequence numbers from `base_seq`;
    /// arrival in µs of the receiver's clock, or `None` when lost). Chunks are chosen greedily:
    /// a run length chunk for 7 or more equal symbols, else a one-bit vector when the next 14
    /// fit in it, else a two-bit vector.
    pub fn feedback(base_seq: u16, feedback_count: u8, statuses: &[Option<i64>]) -> Vec<u8> {
        let first_arrival = statuses.iter().flatten().copied().next().unwrap_or(0);
        let reference = first_arrival.div_euclid(REFERENCE_UNIT_US);
        let mut ticks = reference * REFERENCE_UNIT_US / DELTA_UNIT_US;
        let mut symbols = Vec::new();
        let mut deltas = Vec::new();
        for status in statuses {
            let Some(arrival) = status else {
                symbols.push(NOT_RECEIVED);
                continue;
            };
            let now = (arrival + DELTA_UNIT_US / 2).div_euclid(DELTA_UNIT_US);
            let delta = now - ticks;
            ticks = now;
            if (0..=255).contains(&delta) {
                symbols.push(SMALL_DELTA);
                deltas.push(delta as u8);
            } else {
                let delta = i16::try_from(delta).expect("a delta the format can carry");
                symbols.push(LARGE_DELTA);
                deltas.extend_from_slice(&delta.to_be_bytes());
            }
        }
        let mut chunks = Vec::new();
        let mut i = 0;
        while i < symbols.len() {
            let run = symbols[i..].iter().take_while(|s| **s == symbols[i]).count().min(0x1fff);
            let word = if run >= 7 {
                let word = (u16::from(symbols[i]) << 13) | run as u16;
                i += run;
                word
            } else if symbols[i..].iter().take(14).all(|s| *s <= SMALL_DELTA) && symbols.len() - i >= 14 {
                let mut word = 0x8000;
                for (k, s) in symbols[i..i + 14].iter().enumerate() {
                    word |= u16::from(*s) << (13 - k);
                }
                i += 14;
                word
            } else {
                let mut word = 0xc000;
                for (k, s) in symbols[i..].iter().take(7).enumerate() {
                    word |= u16::from(*s) << (12 - 2 * k);
                }
                i += 7;
                word
            };
            chunks.extend_from_slice(&u16::to_be_bytes(word));
        }
        let mut fci = Vec::new();
        fci.extend_from_slice(&base_seq.to_be_bytes());
        fci.extend_from_slice(&(statuses.len() as u16).to_be_bytes());
        fci.extend_from_slice(&(reference.rem_euclid(1 << 24) as u32).to_be_bytes()[1..]);
        fci.push(feedback_count);
        fci.extend_from_slice(&chunks);
        fci.extend_from_slice(&deltas);
        while fci.len() % 4 != 0 {
            fci.push(0);
        }
        wrap(&fci, 0)
    }

    /// An RTCP transport feedback packet around `fci`, with `padding` bytes of RTCP padding
    /// (a multiple of 4; 0 for none).
    pub fn wrap(fci: &[u8], padding: usize) -> Vec<u8> {
        let len = 12 + fci.len() + padding;
        let mut packet = vec![0x80 | FORMAT, PACKET_TYPE];
        packet.extend_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
        packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        packet.extend_from_slice(&0x9abc_def0u32.to_be_bytes());
        packet.extend_from_slice(fci);
        if padding > 0 {
            packet[0] |= 0x20;
            packet.resize(len - 1, 0);
            packet.push(padding as u8);
        }
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::build::{feedback, wrap};
    use super::*;

    fn statuses(packet: &[u8]) -> Vec<(u16, Option<i64>)> {
        let fb = parse(packet).expect("a valid packet");
        let reference = i64::from(fb.reference_time) * REFERENCE_UNIT_US;
        fb.packets().map(|r| (r.seq, r.arrival_offset_us.map(|a| a + reference))).collect()
    }

    fn fci(base: u16, count: u16, reference: u32, fb_count: u8, rest: &[u8]) -> Vec<u8> {
        let mut fci = Vec::new();
        fci.extend_from_slice(&base.to_be_bytes());
        fci.extend_from_slice(&count.to_be_bytes());
        fci.extend_from_slice(&reference.to_be_bytes()[1..]);
        fci.push(fb_count);
        fci.extend_from_slice(rest);
        fci
    }

    #[test]
    fn reads_a_run_length_chunk() {
        // 3 packets received with small deltas 4, 8, 0 (x 250 µs) after reference 10 (x 64 ms).
        let packet = wrap(&fci(100, 3, 10, 7, &[0x20, 0x03, 4, 8, 0, 0, 0, 0]), 0);
        let fb = parse(&packet).unwrap();
        assert_eq!((fb.base_seq, fb.status_count, fb.reference_time, fb.feedback_count), (100, 3, 10, 7));
        assert_eq!(statuses(&packet), vec![(100, Some(641_000)), (101, Some(643_000)), (102, Some(643_000))]);
    }

    #[test]
    fn reads_one_bit_and_two_bit_vectors_with_negative_and_large_deltas() {
        // One-bit vector: received, lost, received, then 11 lost; two-bit vector: large delta
        // -4 (-1 ms), small 2, lost, large 1000 (250 ms), the rest cut by the status count.
        let chunks = [0xa8, 0x00, 0xe4, 0x80];
        let deltas = [1, 2, 0xff, 0xfc, 2, 0x03, 0xe8];
        let mut rest = chunks.to_vec();
        rest.extend_from_slice(&deltas);
        rest.push(0);
        let packet = wrap(&fci(65530, 18, 0, 0, &rest), 0);
        let got = statuses(&packet);
        let mut want: Vec<(u16, Option<i64>)> = Vec::new();
        want.push((65530, Some(250)));
        want.push((65531, None));
        want.push((65532, Some(750)));
        for s in 65533..=65535 {
            want.push((s, None));
        }
        for s in 0..8 {
            want.push((s, None));
        }
        want.push((8, Some(-250)));
        want.push((9, Some(250)));
        want.push((10, None));
        want.push((11, Some(250_250)));
        assert_eq!(got, want);
    }

    #[test]
    fn strips_rtcp_padding() {
        let packet = wrap(&fci(1, 1, 0, 0, &[0x20, 0x01, 40, 0]), 8);
        assert_eq!(packet.len() % 4, 0);
        assert_eq!(statuses(&packet), vec![(1, Some(10_000))]);
    }

    #[test]
    fn builder_and_parser_agree() {
        let mut input: Vec<Option<i64>> = Vec::new();
        let mut t = 5 * 64_000 + 1_000;
        for i in 0..300i64 {
            // Runs of losses, runs of small deltas, mixes, a reordering, a long gap.
            let arrival = match i {
                20..=40 => None,
                50..=52 => Some(t - 3_000),
                60 => Some(t + 300_000),
                _ if i % 5 == 0 => None,
                _ => Some(t),
            };
            t += 1_000;
            input.push(arrival);
        }
        let packet = feedback(65500, 3, &input);
        let got = statuses(&packet);
        let want: Vec<(u16, Option<i64>)> =
            input.iter().enumerate().map(|(i, a)| (65500u16.wrapping_add(i as u16), *a)).collect();
        assert_eq!(got, want);
        // And the other way: what the parser read builds the same bytes again.
        let again: Vec<Option<i64>> = got.iter().map(|(_, a)| *a).collect();
        assert_eq!(feedback(65500, 3, &again), packet);
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        let good = feedback(10, 1, &[Some(1_000), None, Some(2_000), Some(400_000)]);
        assert!(parse(&good).is_ok());
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_type = good.clone();
        wrong_type[1] = 206;
        assert_eq!(parse(&wrong_type).err(), Some(FeedbackError::Malformed));
        let mut wrong_fmt = good.clone();
        wrong_fmt[0] = 0x81;
        assert_eq!(parse(&wrong_fmt).err(), Some(FeedbackError::Malformed));
        let mut zero_count = good.clone();
        zero_count[14..16].copy_from_slice(&[0, 0]);
        assert_eq!(parse(&zero_count).err(), Some(FeedbackError::Malformed));
        // Reserved two-bit symbol.
        let reserved = wrap(&fci(0, 1, 0, 0, &[0xf0, 0x00, 0, 0]), 0);
        assert_eq!(parse(&reserved).err(), Some(FeedbackError::Malformed));
        // An empty run length.
        let empty_run = wrap(&fci(0, 1, 0, 0, &[0x00, 0x00, 0x20, 0x01, 1, 0, 0, 0]), 0);
        assert_eq!(parse(&empty_run).err(), Some(FeedbackError::Malformed));
        // More statuses announced than chunks carry.
        let short = wrap(&fci(0, 20, 0, 0, &[0x20, 0x03, 1, 1, 1, 0]), 0);
        assert_eq!(parse(&short).err(), Some(FeedbackError::Truncated));
        // Trailing words that are not padding.
        let trailing = wrap(&fci(0, 1, 0, 0, &[0x20, 0x01, 1, 0, 0, 0, 0, 0]), 0);
        assert_eq!(parse(&trailing).err(), Some(FeedbackError::Malformed));
        // Padding count larger than the packet.
        let mut bad_padding = wrap(&fci(1, 1, 0, 0, &[0x20, 0x01, 40, 0]), 4);
        *bad_padding.last_mut().unwrap() = 200;
        assert_eq!(parse(&bad_padding).err(), Some(FeedbackError::Malformed));
        // A run of 8191 received packets whose deltas are missing.
        let huge = wrap(&fci(0, 0x1fff, 0, 0, &[0x3f, 0xff, 0, 0]), 0);
        assert_eq!(parse(&huge).err(), Some(FeedbackError::Truncated));
    }
}
