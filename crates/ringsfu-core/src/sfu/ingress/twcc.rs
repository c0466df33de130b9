//! Transport-wide congestion control feedback written for the publisher (receive side): which
//! transport-wide sequence numbers arrived, and when, so that the publisher's send-side
//! bandwidth estimate (Chrome's, which decides whether it sends its top simulcast layer) has
//! something to work on.
//!
//! Wire format: draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1, the one
//! `congestion::feedback` reads. Arrivals are kept in 250 µs ticks in a fixed ring indexed by the
//! extended sequence number; `write_feedback` encodes the pending range into one packet of at
//! most `MAX_PACKET_LEN` bytes and leaves what does not fit for the next one.

use std::time::{Duration, Instant};

use crate::sfu::congestion::feedback::DELTA_UNIT_US;
use crate::sfu::rtcp;

/// Feedback goes out every 50 ms while packets arrive: libwebrtc's receiver sends every 50 to
/// 250 ms, the short end at video rates; the short end lets the publisher's estimate follow a
/// congested path quickly, for about 20 small packets a second.
const INTERVAL: Duration = Duration::from_millis(50);
/// Pending statuses that make feedback due at once: 100 statuses take at most 250 bytes
/// (15 chunks, 100 two-byte deltas), so a packet splits only when the caller falls behind.
const EARLY_PENDING: i64 = 100;
/// Like the rest of ringsfu's RTCP: below any path MTU once SRTCP and UDP/IP are added.
const MAX_PACKET_LEN: usize = 1200;
/// Arrival slots, by extended sequence number modulo their count.
const RING: usize = 4096;
/// A sequence number further than this ahead of the newest is a restart (or garbage): it
/// starts a new base instead of a report of a thousand losses. One further behind is stale
/// and ignored: no real reordering goes that deep.
const MAX_JUMP: i64 = 1000;
/// Stale packets in a row that mean the sender restarted below its old numbers.
const STALE_RESTART: u8 = 16;

/// RTCP header, sender and media SSRCs, base sequence, status count, reference time, count.
const HEADER_LEN: usize = 20;
const VERSION_AND_FORMAT: u8 = rtcp::V2 | rtcp::FMT_TRANSPORT_CC;
const PACKET_TYPE: u8 = rtcp::RTPFB;
const NOT_RECEIVED: u8 = 0;
const SMALL_DELTA: u8 = 1;
const LARGE_DELTA: u8 = 2;
const MAX_RUN: usize = 0x1fff;
/// The reference time counts in 64 ms: 256 ticks.
const TICKS_PER_REFERENCE: u32 = 256;

/// What one receiving transport reports back to its publisher.
pub struct TwccReceiver {
    /// The first `record`'s instant: tick 0, reference time 0.
    origin: Option<Instant>,
    /// Arrival in ticks since `origin` (wrapping at 2^32 ticks, exactly where the 24-bit
    /// reference time wraps), or `None`, at extended sequence number modulo `RING`. Valid for
    /// `newest - RING + 1 ..= newest`: slots are cleared as `newest` moves over them.
    arrivals: Box<[Option<u32>]>,
    /// Scratch for the symbols of the packet being written, so that writing never allocates.
    symbols: Box<[u8]>,
    /// The highest extended sequence number recorded; `None` before the first.
    newest: Option<i64>,
    /// The first extended sequence number the next feedback reports (`> newest`: none).
    next_report: i64,
    stale_in_row: u8,
    last_sent: Option<Instant>,
    /// The last feedback left statuses it should have carried: the next is due at once.
    cut: bool,
    feedback_count: u8,
}

impl Default for TwccReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl TwccReceiver {
    pub fn new() -> TwccReceiver {
        TwccReceiver {
            origin: None,
            arrivals: vec![None; RING].into_boxed_slice(),
            symbols: vec![NOT_RECEIVED; RING].into_boxed_slice(),
            newest: None,
            next_report: 0,
            stale_in_row: 0,
            last_sent: None,
            cut: false,
            feedback_count: 0,
        }
    }

    /// A packet carrying transport-wide sequence number `seq` arrived at `arrival`.
    pub fn record(&mut self, seq: u16, arrival: Instant) {
        let origin = *self.origin.get_or_insert(arrival);
        let ticks = ticks_since(origin, arrival);
        let Some(newest) = self.newest else { return self.restart(i64::from(seq), ticks) };
        let ext = newest + i64::from(seq.wrapping_sub(newest as u16) as i16);
        if ext - newest > MAX_JUMP {
            return self.restart(ext, ticks);
        }
        if newest - ext > MAX_JUMP {
            self.stale_in_row += 1;
            if self.stale_in_row >= STALE_RESTART {
                self.restart(ext, ticks);
            }
            return;
        }
        self.stale_in_row = 0;
        if ext > newest {
            for passed in newest + 1..=ext {
                self.arrivals[slot(passed)] = None;
            }
            self.newest = Some(ext);
            // Only when feedback is not being written: the oldest unreported go.
            self.next_report = self.next_report.max(ext - RING as i64 + 1);
        }
        let arrival = &mut self.arrivals[slot(ext)];
        if arrival.is_some() {
            return; // A duplicate: the first arrival counts.
        }
        *arrival = Some(ticks);
        // A packet already reported lost: like libwebrtc's receiver, the next feedback starts
        // again from it, repeating the statuses after it with their same arrival times.
        self.next_report = self.next_report.min(ext);
    }

    /// When the next feedback should go out (None: nothing to report).
    pub fn next_due(&self) -> Option<Instant> {
        let pending = self.newest? - self.next_report + 1;
        if pending <= 0 {
            return None;
        }
        let since = self.last_sent.or(self.origin)?;
        Some(if self.cut || pending >= EARLY_PENDING { since } else { since + INTERVAL })
    }

    /// Appends one feedback packet (a complete RTCP packet: header, sender SSRC, media SSRC,
    /// FCI) to `buf` covering the packets recorded since the last feedback; returns whether it
    /// wrote one. What does not fit in `MAX_PACKET_LEN` bytes is left for the next call, and so is
    /// a packet whose delta to the previous one does not fit 16 bits (±8 s): its own packet
    /// starts with a reference time of its own.
    pub fn write_feedback(&mut self, sender_ssrc: u32, media_ssrc: u32, now: Instant, buf: &mut Vec<u8>) -> bool {
        let Some(newest) = self.newest else { return false };
        let base = self.next_report;
        if base > newest {
            return false;
        }
        let (symbols, reference) = self.collect_symbols(base, newest);
        let start = buf.len();
        buf.extend_from_slice(&[0; HEADER_LEN]);
        let covered = self.write_chunks(symbols, buf);
        self.write_deltas(base, covered, reference, buf);
        buf.resize(start + (buf.len() - start).next_multiple_of(4), 0);

        let words = (buf.len() - start) / 4 - 1;
        let header = &mut buf[start..start + HEADER_LEN];
        header[0] = VERSION_AND_FORMAT;
        header[1] = PACKET_TYPE;
        header[2..4].copy_from_slice(&(words as u16).to_be_bytes());
        header[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
        header[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
        header[12..14].copy_from_slice(&(base as u16).to_be_bytes());
        header[14..16].copy_from_slice(&(covered as u16).to_be_bytes());
        header[16..19].copy_from_slice(&(reference / TICKS_PER_REFERENCE).to_be_bytes()[1..]);
        header[19] = self.feedback_count;

        self.next_report = base + covered as i64;
        self.cut = self.next_report <= newest;
        self.last_sent = Some(now);
        self.feedback_count = self.feedback_count.wrapping_add(1);
        true
    }

    /// Forgets every arrival and starts again at `ext`.
    fn restart(&mut self, ext: i64, ticks: u32) {
        self.arrivals.fill(None);
        self.arrivals[slot(ext)] = Some(ticks);
        self.newest = Some(ext);
        self.next_report = ext;
        self.stale_in_row = 0;
    }

    /// Fills `symbols` from `base` on, up to `newest` or to the first arrival whose delta the
    /// format cannot carry; returns how many, and the reference time in ticks: the first
    /// arrival's, rounded down to 64 ms.
    fn collect_symbols(&mut self, base: i64, newest: i64) -> (usize, u32) {
        let mut reference = None;
        let mut previous = 0;
        let mut count = 0;
        for ext in base..=newest.min(base + RING as i64 - 1) {
            self.symbols[count] = match self.arrivals[slot(ext)] {
                None => NOT_RECEIVED,
                Some(ticks) => {
                    if reference.is_none() {
                        previous = ticks - ticks % TICKS_PER_REFERENCE;
                        reference = Some(previous);
                    }
                    let Some(symbol) = delta_symbol(ticks.wrapping_sub(previous) as i32) else { break };
                    previous = ticks;
                    symbol
                }
            };
            count += 1;
        }
        (count, reference.unwrap_or(0))
    }

    /// Appends the status chunks for the first `count` symbols, as many as fit in the packet
    /// with their deltas; returns how many statuses they cover.
    fn write_chunks(&self, count: usize, buf: &mut Vec<u8>) -> usize {
        let mut len = HEADER_LEN;
        let mut covered = 0;
        while covered < count {
            let symbols = &self.symbols[covered..count];
            let (mut word, mut taken) = chunk(symbols);
            let deltas: usize = symbols[..taken].iter().map(|s| delta_len(*s)).sum();
            let room = MAX_PACKET_LEN - len;
            let full = 2 + deltas > room;
            if full {
                // A run shortens to what fits; a vector (14 bytes of deltas at most) waits.
                let per = delta_len(symbols[0]);
                if word & 0x8000 != 0 || per == 0 || room < 2 + per {
                    break;
                }
                taken = (room - 2) / per;
                word = run_word(symbols[0], taken);
            }
            buf.extend_from_slice(&word.to_be_bytes());
            len += 2 + symbols[..taken].iter().map(|s| delta_len(*s)).sum::<usize>();
            covered += taken;
            if full {
                break;
            }
        }
        covered
    }

    /// Appends the receive deltas of the first `covered` statuses from `base`.
    fn write_deltas(&self, base: i64, covered: usize, reference: u32, buf: &mut Vec<u8>) {
        let mut previous = reference;
        for (ext, symbol) in (base..).zip(&self.symbols[..covered]) {
            let Some(ticks) = self.arrivals[slot(ext)] else { continue };
            let delta = ticks.wrapping_sub(previous) as i32;
            previous = ticks;
            if *symbol == SMALL_DELTA {
                buf.push(delta as u8);
            } else {
                buf.extend_from_slice(&(delta as i16).to_be_bytes());
            }
        }
    }
}

fn slot(ext: i64) -> usize {
    ext.rem_euclid(RING as i64) as usize
}

/// Ticks since `origin`, rounded to the nearest: deltas are differences of ticks, so rounding
/// never accumulates.
fn ticks_since(origin: Instant, arrival: Instant) -> u32 {
    let unit = DELTA_UNIT_US as u128;
    let micros = arrival.saturating_duration_since(origin).as_micros();
    ((micros + unit / 2) / unit) as u32
}

fn delta_symbol(delta: i32) -> Option<u8> {
    match delta {
        0..=255 => Some(SMALL_DELTA),
        _ if i16::try_from(delta).is_ok() => Some(LARGE_DELTA),
        _ => None,
    }
}

/// A symbol's value is the length of its delta: 0, 1 or 2 bytes.
fn delta_len(symbol: u8) -> usize {
    usize::from(symbol)
}

/// The next chunk for `symbols` (not empty), and how many it covers: a run of 7 or more equal
/// symbols, else a one-bit vector of 14 when none is a large delta, else a two-bit vector of 7.
/// A vector at the end may cover fewer; the status count cuts its tail. Large deltas never go
/// in a run: str0m 0.25 reads a run of them with half their bytes (a publisher on str0m would
/// misread the rest), and two-bit vectors add only 2 bytes to every 14 bytes of those deltas.
fn chunk(symbols: &[u8]) -> (u16, usize) {
    let run = symbols.iter().take(MAX_RUN).take_while(|s| **s == symbols[0]).count();
    if run >= 7 && symbols[0] != LARGE_DELTA {
        return (run_word(symbols[0], run), run);
    }
    let one_bit = &symbols[..symbols.len().min(14)];
    if one_bit.iter().all(|s| *s != LARGE_DELTA) {
        let word = one_bit.iter().enumerate().fold(0x8000, |word, (i, s)| word | (u16::from(*s) << (13 - i)));
        return (word, one_bit.len());
    }
    let two_bit = &symbols[..symbols.len().min(7)];
    let word = two_bit.iter().enumerate().fold(0xc000, |word, (i, s)| word | (u16::from(*s) << (12 - 2 * i)));
    (word, two_bit.len())
}

fn run_word(symbol: u8, length: usize) -> u16 {
    (u16::from(symbol) << 13) | length as u16
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use str0m::rtp::rtcp::Rtcp;

    use super::*;
    use crate::sfu::congestion::feedback::{self, REFERENCE_UNIT_US};

    const SENDER: u32 = 0x1111_2222;
    const MEDIA: u32 = 0x3333_4444;
    const MS: i64 = 1_000;

    /// Every status one packet reports: sequence number and arrival in µs after the origin,
    /// read by ringsfu's parser.
    fn statuses(packet: &[u8]) -> Vec<(u16, Option<i64>)> {
        let fb = feedback::parse(packet).expect("a packet ringsfu's parser accepts");
        let reference = i64::from(fb.reference_time) * REFERENCE_UNIT_US;
        fb.packets().map(|r| (r.seq, r.arrival_offset_us.map(|a| a + reference))).collect()
    }

    /// The same, read by str0m's parser.
    fn str0m_statuses(packet: &[u8], origin: Instant) -> Vec<(u16, Option<i64>)> {
        let Ok(Rtcp::Twcc(twcc)) = Rtcp::try_from(packet) else { panic!("str0m reads no TWCC") };
        assert_eq!((*twcc.sender_ssrc, *twcc.ssrc), (SENDER, MEDIA));
        let base = u64::from(twcc.base_seq);
        twcc.into_iter(origin, base.into())
            .map(|(seq, _, arrival)| (*seq as u16, arrival.map(|a| (a - origin).as_micros() as i64)))
            .collect()
    }

    /// Writes one packet into a fresh buffer and checks its framing.
    fn write(rx: &mut TwccReceiver, now: Instant) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        if !rx.write_feedback(SENDER, MEDIA, now, &mut buf) {
            assert!(buf.is_empty());
            return None;
        }
        assert!(buf.len() <= 1200, "{} bytes", buf.len());
        assert_eq!(buf.len() % 4, 0);
        assert_eq!((usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4, buf.len());
        assert_eq!(&buf[..2], &[0x8f, 205]);
        assert_eq!(&buf[4..12], &[0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44]);
        Some(buf)
    }

    /// A publisher's packets arriving at one receiver, feedback written when due, every packet
    /// read back by both parsers.
    struct Sim {
        rx: TwccReceiver,
        start: Instant,
        origin: Option<i64>,
        /// First arrival of each sequence number, in µs after the receiver's origin.
        truth: HashMap<u16, i64>,
        /// The latest status reported for each sequence number.
        reported: HashMap<u16, Option<i64>>,
        packets: Vec<Vec<u8>>,
        late_reports: usize,
        now: i64,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                rx: TwccReceiver::new(),
                start: Instant::now(),
                origin: None,
                truth: HashMap::new(),
                reported: HashMap::new(),
                packets: Vec::new(),
                late_reports: 0,
                now: 0,
            }
        }

        fn at(&self, micros: i64) -> Instant {
            self.start + Duration::from_micros(micros as u64)
        }

        /// Writes what is due by now (all of it when `flush`).
        fn poll(&mut self, flush: bool) {
            for _ in 0..1000 {
                let Some(due) = self.rx.next_due() else { return };
                if !flush && due > self.at(self.now) {
                    return;
                }
                let now = self.at(self.now);
                let packet = write(&mut self.rx, now).expect("due means something to write");
                self.read(&packet);
                self.packets.push(packet);
            }
            panic!("feedback never drained");
        }

        fn read(&mut self, packet: &[u8]) {
            let origin = self.at(self.origin.unwrap());
            let ours: Vec<_> = statuses(packet)
                .into_iter()
                .map(|(seq, arrival)| (seq, arrival.map(|a| a + self.origin.unwrap())))
                .collect();
            let theirs: Vec<_> = str0m_statuses(packet, origin)
                .into_iter()
                .map(|(seq, arrival)| (seq, arrival.map(|a| a + self.origin.unwrap())))
                .collect();
            assert_eq!(ours, theirs, "the two parsers disagree");
            for (seq, arrival) in ours {
                let before = self.reported.insert(seq, arrival.map(|a| a - self.origin.unwrap()));
                match (before, arrival) {
                    (Some(Some(_)), None) => panic!("{seq} reported received, then lost"),
                    (Some(None), Some(_)) => self.late_reports += 1,
                    _ => {}
                }
            }
        }

        /// A packet arrives; feedback due before it is written first if `poll`.
        fn arrive(&mut self, seq: u16, micros: i64, poll: bool) {
            assert!(micros >= self.now);
            self.now = micros;
            if poll {
                self.poll(false);
            }
            let origin = *self.origin.get_or_insert(micros);
            self.truth.entry(seq).or_insert(micros - origin);
            self.rx.record(seq, self.at(micros));
        }

        /// Every packet recorded is reported received at its arrival, within the 250 µs
        /// quantisation; every packet reported lost never arrived.
        fn check(&mut self) {
            self.now += 1_000 * MS;
            self.poll(true);
            assert_eq!(self.rx.next_due(), None);
            for (seq, truth) in &self.truth {
                let reported = self.reported.get(seq).copied().flatten();
                let reported = reported.unwrap_or_else(|| panic!("{seq} never reported received"));
                assert!((reported - truth).abs() <= DELTA_UNIT_US / 2, "{seq}: {reported} vs {truth}");
            }
            for (seq, status) in &self.reported {
                assert!(status.is_some() || !self.truth.contains_key(seq), "{seq} arrived, reported lost");
            }
        }
    }

    #[test]
    fn round_trip_through_both_parsers() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut order: Vec<u16> = Vec::new();
        let mut seq = 63_000u16;
        for i in 0..5_000 {
            seq = seq.wrapping_add(1);
            let lost = matches!(i, 1_000..1_050) || (i > 2_000 && rng.random_bool(0.1));
            if !lost {
                order.push(seq);
            }
        }
        // Reordering: neighbours swapped, and packets held back 80 positions (past a feedback).
        for i in (100..order.len() - 100).step_by(37) {
            order.swap(i, i + 1);
        }
        for i in (150..order.len() - 100).step_by(401) {
            let held = order.remove(i);
            order.insert(i + 80, held);
        }
        let mut sim = Sim::new();
        let mut t = 5 * MS;
        for (i, seq) in order.into_iter().enumerate() {
            t += match i {
                0..500 => MS,                     // long runs of equal deltas
                1_500 => 300 * MS,                // a large delta
                2_500 => 10_000 * MS,             // beyond a 16-bit delta
                _ => rng.random_range(0..3 * MS), // random gaps
            };
            sim.arrive(seq, t, true);
        }
        sim.check();
        assert!(sim.late_reports >= 5, "late arrivals re-reported: {}", sim.late_reports);
        assert!(sim.packets.len() > 100);
    }

    #[test]
    fn no_packet_exceeds_the_size_bound_however_much_is_pending() {
        let start = Instant::now();
        let mut rx = TwccReceiver::new();
        // Pairs swapped 100 ms apart: every delta is ±400 ticks and takes two bytes.
        for i in 0..3_000u16 {
            let seq = i ^ 1;
            rx.record(seq, start + Duration::from_millis(u64::from(i) * 100));
        }
        let now = start + Duration::from_secs(301);
        let mut next_base = 0u16;
        let mut packets = 0;
        while let Some(packet) = write(&mut rx, now) {
            // A run of large deltas would be misread by str0m: there is none.
            assert_eq!(statuses(&packet), str0m_statuses(&packet, start));
            let fb = feedback::parse(&packet).unwrap();
            assert_eq!(fb.base_seq, next_base);
            assert!(fb.packets().all(|r| r.arrival_offset_us.is_some()));
            next_base = next_base.wrapping_add(fb.status_count);
            packets += 1;
            if next_base < 3_000 {
                assert!(rx.next_due().is_some_and(|due| due <= now), "the rest is due at once");
            }
        }
        assert_eq!(next_base, 3_000);
        assert!(packets >= 6, "{packets} packets for 6000 bytes of deltas");
    }

    #[test]
    fn a_huge_jump_restarts_instead_of_reporting_losses() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut rx = TwccReceiver::new();
        for seq in 10..20 {
            rx.record(seq, at(u64::from(seq)));
        }
        assert_eq!(statuses(&write(&mut rx, at(50)).unwrap()).len(), 10);
        rx.record(1_020, at(60));
        rx.record(1_021, at(61));
        let fb = write(&mut rx, at(100)).unwrap();
        let fb = feedback::parse(&fb).unwrap();
        assert_eq!((fb.base_seq, fb.status_count), (1_020, 2));

        // A jump of exactly MAX_JUMP is still losses, carried by one run length chunk.
        let mut rx = TwccReceiver::new();
        rx.record(10, at(0));
        write(&mut rx, at(50)).unwrap();
        rx.record(1_010, at(60));
        let packet = write(&mut rx, at(100)).unwrap();
        let reported = statuses(&packet);
        assert_eq!((reported[0].0, reported.len()), (11, 1_000));
        assert_eq!(reported.iter().filter(|(_, a)| a.is_some()).count(), 1);
        assert!(packet.len() <= 28);

        // One stale packet is ignored; a run of them is a sender that restarted lower.
        let mut rx = TwccReceiver::new();
        for seq in 5_000..5_010 {
            rx.record(seq, at(0));
        }
        write(&mut rx, at(50)).unwrap();
        rx.record(100, at(60));
        rx.record(5_010, at(61));
        let fb = write(&mut rx, at(100)).unwrap();
        assert_eq!(statuses(&fb), vec![(5_010, Some(61_000))]);
        for seq in 200..230 {
            rx.record(seq, at(120));
        }
        let fb = write(&mut rx, at(150)).unwrap();
        let fb = feedback::parse(&fb).unwrap();
        assert_eq!((fb.base_seq, fb.status_count), (200 + u16::from(STALE_RESTART) - 1, 15));
    }

    #[test]
    fn duplicates_keep_the_first_arrival_and_are_not_reported_again() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut rx = TwccReceiver::new();
        rx.record(1, at(0));
        rx.record(2, at(1));
        rx.record(2, at(5));
        rx.record(3, at(2));
        let packet = write(&mut rx, at(50)).unwrap();
        assert_eq!(statuses(&packet), vec![(1, Some(0)), (2, Some(1_000)), (3, Some(2_000))]);
        rx.record(2, at(60));
        assert_eq!(rx.next_due(), None);
        assert!(write(&mut rx, at(100)).is_none());
    }

    #[test]
    fn a_packet_reported_lost_that_arrives_is_reported_again() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut rx = TwccReceiver::new();
        rx.record(1, at(0));
        rx.record(2, at(1));
        rx.record(4, at(3));
        let first = write(&mut rx, at(50)).unwrap();
        assert_eq!(statuses(&first), vec![(1, Some(0)), (2, Some(1_000)), (3, None), (4, Some(3_000))]);
        rx.record(3, at(60));
        // 4 arrived 57 ms before 3: a negative, large delta.
        let again = write(&mut rx, at(100)).unwrap();
        assert_eq!(statuses(&again), vec![(3, Some(60_000)), (4, Some(3_000))]);
        assert_eq!(str0m_statuses(&again, start), vec![(3, Some(60_000)), (4, Some(3_000))]);
    }

    #[test]
    fn feedback_is_due_every_interval_and_early_when_much_is_pending() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut rx = TwccReceiver::new();
        assert_eq!(rx.next_due(), None);
        rx.record(0, at(0));
        assert_eq!(rx.next_due(), Some(at(50)));
        rx.record(1, at(10));
        assert_eq!(rx.next_due(), Some(at(50)));
        write(&mut rx, at(50)).unwrap();
        assert_eq!(rx.next_due(), None);
        rx.record(2, at(70));
        assert_eq!(rx.next_due(), Some(at(100)));
        for seq in 3..101 {
            rx.record(seq, at(71));
        }
        assert_eq!(rx.next_due(), Some(at(100)), "99 pending wait for the interval");
        rx.record(101, at(72));
        assert_eq!(rx.next_due(), Some(at(50)), "100 pending are due at once");
        write(&mut rx, at(72)).unwrap();
        assert_eq!(rx.next_due(), None);
    }

    #[test]
    fn feedback_count_increments_and_wraps() {
        let start = Instant::now();
        let mut rx = TwccReceiver::new();
        for i in 0..300u16 {
            let now = start + Duration::from_millis(u64::from(i) * 50);
            rx.record(i, now);
            let packet = write(&mut rx, now).unwrap();
            assert_eq!(feedback::parse(&packet).unwrap().feedback_count, i as u8);
        }
    }

    #[test]
    fn a_delta_beyond_sixteen_bits_starts_a_new_packet() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut rx = TwccReceiver::new();
        rx.record(1, at(0));
        rx.record(2, at(8_000)); // 32000 ticks: still a large delta
        rx.record(3, at(17_000)); // 36000 ticks: not
        rx.record(4, at(17_001));
        let first = write(&mut rx, at(17_010)).unwrap();
        assert_eq!(statuses(&first), vec![(1, Some(0)), (2, Some(8_000_000))]);
        assert_eq!(rx.next_due(), Some(at(17_010)), "the rest is due at once");
        let second = write(&mut rx, at(17_010)).unwrap();
        assert_eq!(statuses(&second), vec![(3, Some(17_000_000)), (4, Some(17_001_000))]);
        assert_eq!(feedback::parse(&second).unwrap().reference_time, 17_000 / 64);
    }

    #[test]
    fn random_arrival_patterns_are_reported_exactly() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let loss = rng.random_range(0.0..0.5);
            let reorder = rng.random_range(0.0..0.2);
            let duplicate = rng.random_range(0.0..0.1);
            // A driver that polls at every packet, or one that falls behind.
            let poll_every = if rng.random_bool(0.3) { rng.random_range(50..3_000) } else { 1 };
            let count = rng.random_range(1..4_000);
            let first: u16 = rng.random();
            let mut order: Vec<u16> =
                (0..count).map(|i| first.wrapping_add(i)).filter(|_| !rng.random_bool(loss)).collect();
            for i in 0..order.len() {
                if rng.random_bool(reorder) {
                    let to = (i + rng.random_range(1..60)).min(order.len() - 1);
                    order.swap(i, to);
                }
            }
            let mut sim = Sim::new();
            let mut t = 0;
            for (i, seq) in order.iter().enumerate() {
                t += match rng.random_range(0..1_000) {
                    0 => rng.random_range(0..12_000 * MS),
                    1..10 => rng.random_range(0..500 * MS),
                    _ => rng.random_range(0..4 * MS),
                };
                sim.arrive(*seq, t, i % poll_every == 0);
                if rng.random_bool(duplicate) {
                    let again = order[rng.random_range(i.saturating_sub(300)..=i)];
                    sim.rx.record(again, sim.at(t));
                }
            }
            sim.check();
        }
    }
}
